#!/usr/bin/env bash
# accuracy_compare.sh: test accuracy of fedmq train vs PyTorch on the same recipe.
#
#   bench/accuracy_compare.sh [--quick] [--seeds "1 2 3"] [--models "cnn mlp"]
#                             [--cnn-epochs 1] [--mlp-epochs 5] [--limit N] [--threads T]
#                             [--out FILE] [BUILD_DIR]
#
# For each model and seed runs
#   fedmq train --model M --epochs E --batch 32 --lr 0.01 --momentum 0.9 --seed S
#   /usr/bin/python3 bench/torch_train.py --mode accuracy --model M --epochs E --batch 32 \
#       --lr 0.01 --momentum 0.9 --seed S
# (cnn: 1 epoch, mlp: 5 epochs by default), reads each one's last line
# `test_accuracy=... test_loss=...` (t10k set) and prints a markdown table per seed, the mean
# per model and the difference fedmq - PyTorch in accuracy points. The seeds do not give the
# two programs the same initial weights or batch order (different RNGs): compare the means.
#
#   BUILD_DIR   CMake build dir holding the fedmq tool (default: <repo>/build)
#   --quick     one seed and --limit 6000 (a smoke test: the accuracies are lower and noisy)
#   --limit N   train on the first N training samples only (both programs)
#   --threads T threads for both programs (default: all CPUs)
#   --out FILE  also write the report here (default bench/results/accuracy-<date>.md)
# OPENBLAS_CORETYPE is exported for both (default SkylakeX; FM_BENCH_CORE overrides).
# PyTorch runs with --omp-wait passive (OMP_WAIT_POLICY=PASSIVE): it only affects speed, and
# keeps PyTorch's spinning OpenMP threads from crawling when the machine is shared.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
PY=/usr/bin/python3
CMDLINE="$0 $*"

die() { echo "accuracy_compare: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

SEEDS="1 2 3"
MODELS="cnn mlp"
CNN_EPOCHS=1
MLP_EPOCHS=5
LIMIT=0
THREADS=$(nproc)
QUICK=0
OUT=""
BUILD_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --seeds) [ $# -ge 2 ] || die "--seeds: missing value"; SEEDS=$2; shift ;;
    --models) [ $# -ge 2 ] || die "--models: missing value"; MODELS=$2; shift ;;
    --cnn-epochs) [ $# -ge 2 ] || die "--cnn-epochs: missing value"; CNN_EPOCHS=$2; shift ;;
    --mlp-epochs) [ $# -ge 2 ] || die "--mlp-epochs: missing value"; MLP_EPOCHS=$2; shift ;;
    --limit) [ $# -ge 2 ] || die "--limit: missing value"; LIMIT=$2; shift ;;
    --threads) [ $# -ge 2 ] || die "--threads: missing value"; THREADS=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out: missing value"; OUT=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "$1: unknown option (see --help)" ;;
    *) [ -z "$BUILD_DIR" ] || die "unexpected argument '$1'"; BUILD_DIR=$1 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    SEEDS=${SEEDS%% *}
    [ "$LIMIT" = 0 ] && LIMIT=6000
fi
for s in $SEEDS; do [[ "$s" =~ ^[0-9]+$ ]] || die "--seeds: '$s' is not a non-negative integer"; done
for m in $MODELS; do case "$m" in mlp|cnn|logreg) ;; *) die "--models: unknown model '$m'" ;; esac; done
for v in "$CNN_EPOCHS" "$MLP_EPOCHS" "$THREADS"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "epochs and --threads must be positive integers (got '$v')"
done
[[ "$LIMIT" =~ ^[0-9]+$ ]] || die "--limit: '$LIMIT' is not a non-negative integer"
[ -n "$SEEDS" ] || die "--seeds: empty"

BUILD_DIR=${BUILD_DIR:-$REPO/build}
FEDMQ=$BUILD_DIR/fedmq
[ -x "$FEDMQ" ] || die "no fedmq tool in $BUILD_DIR: build it first:
  cmake -S $REPO -B $BUILD_DIR && cmake --build $BUILD_DIR --target fedmq-cli"
TORCH_SCRIPT=$SCRIPT_DIR/torch_train.py
[ -x "$PY" ] || die "$PY not found (PyTorch runs with the Debian interpreter: apt-get install python3-torch)"
TORCH_VERSION=$("$PY" -c 'import numpy, torch; print(torch.__version__)' 2>/dev/null) ||
    die "$PY cannot import torch and numpy: apt-get install python3-torch python3-numpy"

CORE=${FM_BENCH_CORE:-SkylakeX}
export OPENBLAS_CORETYPE=$CORE
export FEDMQ_BLAS_AUTOCORE=0

STAMP=$(date +%Y%m%d-%H%M%S)
if [ -z "$OUT" ]; then
    mkdir -p "$REPO/bench/results"
    OUT=$REPO/bench/results/accuracy-$STAMP.md
else
    mkdir -p "$(dirname "$OUT")"
fi
LOG=$(mktemp "${TMPDIR:-/tmp}/accuracy_compare.XXXXXX")
trap 'rm -f "$LOG"' EXIT

field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# run_one LABEL CMD...: run, echo its progress to stderr, print its last result line
run_one() {
    local label=$1; shift
    if ! "$@" >"$LOG" 2>&1; then
        echo "accuracy_compare: $label failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    sed 's/^/    /' "$LOG" | grep -E 'epoch|test_accuracy' >&2 || true
    local line
    line=$(grep '^test_accuracy=' "$LOG" | tail -n 1) ||
        { echo "accuracy_compare: $label printed no test_accuracy line: $*" >&2; tail -n 20 "$LOG" >&2; exit 1; }
    echo "$line"
}

LIMIT_ARGS=()
[ "$LIMIT" != 0 ] && LIMIT_ARGS=(--limit "$LIMIT")
ROWS=()
SUMMARY=()
for model in $MODELS; do
    case "$model" in cnn) epochs=$CNN_EPOCHS ;; *) epochs=$MLP_EPOCHS ;; esac
    FA=() TA=()
    for seed in $SEEDS; do
        common=(--model "$model" --epochs "$epochs" --batch 32 --lr 0.01 --momentum 0.9 --seed "$seed"
                --threads "$THREADS" "${LIMIT_ARGS[@]}")
        echo "[$model epochs=$epochs seed=$seed] fedmq" >&2
        f=$(run_one fedmq "$FEDMQ" train "${common[@]}" --log-level warning)
        echo "[$model epochs=$epochs seed=$seed] torch" >&2
        t=$(run_one torch "$PY" "$TORCH_SCRIPT" --mode accuracy "${common[@]}" --omp-wait passive)
        fa=$(field "$f" test_accuracy) fl=$(field "$f" test_loss)
        ta=$(field "$t" test_accuracy) tl=$(field "$t" test_loss)
        FA+=("$fa") TA+=("$ta")
        d=$(awk -v a="$fa" -v b="$ta" 'BEGIN { printf "%+.2f", (a - b) * 100 }')
        ROWS+=("| $model | $epochs | $seed | $fa | $fl | $ta | $tl | $d |")
    done
    fm=$(printf '%s\n' "${FA[@]}" | awk '{ s += $1 } END { printf "%.4f", s / NR }')
    tm=$(printf '%s\n' "${TA[@]}" | awk '{ s += $1 } END { printf "%.4f", s / NR }')
    d=$(awk -v a="$fm" -v b="$tm" 'BEGIN { printf "%+.2f", (a - b) * 100 }')
    ROWS+=("| **$model mean** | $epochs | ${#FA[@]} seeds | **$fm** | | **$tm** | | **$d** |")
    SUMMARY+=("- $model ($epochs epoch(s), ${#FA[@]} seed(s)): fedmq $fm, PyTorch $tm, fedmq - PyTorch = $d points")
done

{
    echo "# fedmq vs PyTorch test accuracy (Fashion-MNIST t10k)"
    echo
    if [ "$QUICK" = 1 ]; then
        echo "**Quick run (--quick: one seed, first $LIMIT training samples): a smoke test, not a comparison.**"
        echo
    fi
    echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo "- command: \`$CMDLINE\` (in $(pwd))"
    echo "- recipe (both): batch 32, SGD lr 0.01 momentum 0.9, dropout on in training, cnn $CNN_EPOCHS epoch(s), mlp $MLP_EPOCHS epoch(s), training samples: $([ "$LIMIT" = 0 ] && echo all || echo "first $LIMIT"), threads $THREADS"
    echo "- fedmq: $FEDMQ ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)); PyTorch $TORCH_VERSION; OPENBLAS_CORETYPE=$CORE"
    echo "- the same seed does not give both programs the same initial weights or batch order: compare means"
    echo
    echo "| model | epochs | seed | fedmq accuracy | fedmq loss | PyTorch accuracy | PyTorch loss | fedmq - PyTorch (points) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf '%s\n' "${SUMMARY[@]}"
} | tee "$OUT"
echo "accuracy_compare: wrote $OUT" >&2
