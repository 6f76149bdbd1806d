#!/usr/bin/env bash
# run_train_bench.sh: fedmq vs PyTorch training throughput, one markdown table.
#
#   bench/run_train_bench.sh [--quick] [--repeat N] [--seconds S] [--warmup W] [--out FILE]
#                            [--models "mlp cnn"] [--batches "32 64"] [--threads "1 2"]
#                            [--no-omp-passive] [BUILD_DIR]
#
# For every model x batch x threads cell it runs bench/train_bench (fedmq) and
# bench/torch_train.py (PyTorch 1.13, /usr/bin/python3) alternately -- the fedmq row, then the
# PyTorch row(s) -- so that drift of the machine affects both. For threads T > 1 PyTorch is
# measured with T threads, with T threads and OMP_WAIT_POLICY=PASSIVE (Debian's torch mixes
# libgomp with a pthreads OpenBLAS, and spinning OpenMP threads can starve on a 2-core box;
# --no-omp-passive skips this setting) and with 1 thread, and the row compares fedmq against
# PyTorch's best setting (the table says which, and lists the others). With --repeat N each measurement is repeated N times
# (the whole alternating group is repeated) and the median is reported.
#
# Both programs run on the same OpenBLAS core: OPENBLAS_CORETYPE is exported for both
# (default SkylakeX, override with FM_BENCH_CORE=Haswell etc.) and the core each program
# actually loaded is checked against it. (PyTorch's convolutions use oneDNN, which does not
# depend on OPENBLAS_CORETYPE; its linear layers use OpenBLAS.)
#
#   BUILD_DIR   CMake build dir holding train_bench (default: <repo>/build)
#   --quick     2 s per measurement, 1 s warm-up (a smoke test; the numbers are noisy)
#   --seconds S timed seconds per measurement (default 10)
#   --warmup W  warm-up seconds per measurement (default 2)
#   --repeat N  median of N runs per cell (default 1)
#   --out FILE  also write the report here (default bench/results/train-<date>.md)
#
# GFLOP/s (fedmq column) = samples/s * 3 * forward FLOPs per sample / 1e9 (forward + backward
# counted as 3x forward, multiply-add = 2), as printed by train_bench.
# Run it alone on a quiet machine: each measurement uses up to T cores.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
PY=/usr/bin/python3
CMDLINE="$0 $*"

die() { echo "run_train_bench: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

SECONDS_PER=10
WARMUP=2
REPEAT=1
QUICK=0
OMP_PASSIVE=1
OUT=""
MODELS="mlp cnn"
BATCHES="32 64"
THREADS="1 2"
BUILD_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1; SECONDS_PER=2; WARMUP=1 ;;
    --no-omp-passive) OMP_PASSIVE=0 ;;
    --seconds) [ $# -ge 2 ] || die "--seconds: missing value"; SECONDS_PER=$2; shift ;;
    --warmup) [ $# -ge 2 ] || die "--warmup: missing value"; WARMUP=$2; shift ;;
    --repeat) [ $# -ge 2 ] || die "--repeat: missing value"; REPEAT=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out: missing value"; OUT=$2; shift ;;
    --models) [ $# -ge 2 ] || die "--models: missing value"; MODELS=$2; shift ;;
    --batches) [ $# -ge 2 ] || die "--batches: missing value"; BATCHES=$2; shift ;;
    --threads) [ $# -ge 2 ] || die "--threads: missing value"; THREADS=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "$1: unknown option (see --help)" ;;
    *) [ -z "$BUILD_DIR" ] || die "unexpected argument '$1'"; BUILD_DIR=$1 ;;
    esac
    shift
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat: '$REPEAT' is not a positive integer"
[[ "$SECONDS_PER" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--seconds: '$SECONDS_PER' is not a number"
[[ "$WARMUP" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--warmup: '$WARMUP' is not a number"
for m in $MODELS; do case "$m" in mlp|cnn|logreg) ;; *) die "--models: unknown model '$m'" ;; esac; done
for b in $BATCHES; do [[ "$b" =~ ^[1-9][0-9]*$ ]] || die "--batches: '$b' is not a positive integer"; done
for t in $THREADS; do [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "--threads: '$t' is not a positive integer"; done

BUILD_DIR=${BUILD_DIR:-$REPO/build}
BENCH=""
for c in "$BUILD_DIR/train_bench" "$BUILD_DIR/bench/train_bench"; do
    [ -x "$c" ] && { BENCH=$c; break; }
done
[ -n "$BENCH" ] || die "no train_bench in $BUILD_DIR: build it first:
  cmake -S $REPO -B $BUILD_DIR && cmake --build $BUILD_DIR --target train_bench"
TORCH_SCRIPT=$SCRIPT_DIR/torch_train.py
[ -x "$PY" ] || die "$PY not found (PyTorch runs with the Debian interpreter: apt-get install python3-torch)"
TORCH_VERSION=$("$PY" -c 'import numpy, torch; print(torch.__version__)' 2>/dev/null) ||
    die "$PY cannot import torch and numpy: apt-get install python3-torch python3-numpy"
DATA=/usr/share/datasets/fashion-mnist
[ -e "$DATA/train-images-idx3-ubyte.gz" ] || [ -e "$DATA/train-images-idx3-ubyte" ] ||
    die "Fashion-MNIST not found in $DATA: apt-get install dataset-fashion-mnist"

CORE=${FM_BENCH_CORE:-SkylakeX}
export OPENBLAS_CORETYPE=$CORE
# fedmq's auto re-exec is not needed (the core is forced) and both sides get the same env
export FEDMQ_BLAS_AUTOCORE=0
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS GOTO_NUM_THREADS MKL_NUM_THREADS OMP_WAIT_POLICY \
    GOMP_SPINCOUNT || true

STAMP=$(date +%Y%m%d-%H%M%S)
if [ -z "$OUT" ]; then
    mkdir -p "$REPO/bench/results"
    OUT=$REPO/bench/results/train-$STAMP.md
else
    mkdir -p "$(dirname "$OUT")"
fi
RAW=$(mktemp "${TMPDIR:-/tmp}/run_train_bench.XXXXXX")
ERR=$(mktemp "${TMPDIR:-/tmp}/run_train_bench_err.XXXXXX")
trap 'rm -f "$RAW" "$ERR"' EXIT

# key=value from a result line
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

# median of the numbers on stdin
median() {
    sort -g | awk '{v[NR] = $1} END { if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

TIMEOUT=$(awk -v s="$SECONDS_PER" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 180 }')

# run_one LABEL CMD...: run, check the core, append the result line to $RAW, print it
run_one() {
    local label=$1; shift
    local out
    if ! out=$(timeout "$TIMEOUT" "$@" 2>"$ERR"); then
        echo "run_train_bench: $label failed: $*" >&2
        cat "$ERR" >&2
        [ -n "$out" ] && echo "$out" >&2
        exit 1
    fi
    local line
    line=$(grep -E '^(fedmq|torch) model=' <<<"$out" | tail -n 1) ||
        { echo "run_train_bench: $label printed no result line: $*" >&2; echo "$out" >&2; exit 1; }
    local core
    core=$(field "$line" core)
    if [ "${core,,}" != "${CORE,,}" ]; then
        echo "run_train_bench: $label ran on OpenBLAS core '$core', expected '$CORE'" >&2
        exit 1
    fi
    echo "$line" >>"$RAW"
    echo "  $line" >&2
}

CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
NCPU=$(nproc)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
BLAS_LINE=$("$BENCH" --peak 2>&1) || die "train_bench --peak failed: $BLAS_LINE"
BLAS_DESC=$(sed -n 's/^# //p' <<<"$BLAS_LINE" | head -n 1)
PEAK=$(sed -n 's/^sgemm_peak_gflops=\([^ ]*\).*/\1/p' <<<"$BLAS_LINE")
OPENBLAS_VERSION=$(sed -n 's/^\(OpenBLAS [^ ]*\).*/\1/p' <<<"$BLAS_DESC")
if command -v dpkg-query >/dev/null 2>&1; then
    OPENBLAS_PKG=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || true)
    [ -n "$OPENBLAS_PKG" ] && OPENBLAS_VERSION="$OPENBLAS_VERSION (Debian libopenblas0-pthread $OPENBLAS_PKG)"
fi
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
    GIT_REV="$GIT_REV (with uncommitted changes)"
fi

echo "run_train_bench: S=${SECONDS_PER}s warm-up=${WARMUP}s repeat=$REPEAT core=$CORE load=$LOAD -> $OUT" >&2
# shellcheck disable=SC2001  # indent every line
sed 's/^/  /' <<<"$BLAS_LINE" >&2

# PyTorch settings measured for a row with T threads: "label|torch_train.py args"
torch_settings() {
    local t=$1
    echo "threads=$t|--threads $t"
    if [ "$t" -gt 1 ]; then
        [ "$OMP_PASSIVE" = 1 ] && echo "threads=$t OMP_WAIT_POLICY=PASSIVE|--threads $t --omp-wait passive"
        echo "threads=1|--threads 1"
    fi
}

ROWS=()
for model in $MODELS; do
    for batch in $BATCHES; do
        for t in $THREADS; do
            mapfile -t SETTINGS < <(torch_settings "$t")
            declare -A TV=()
            FED=()
            for ((r = 1; r <= REPEAT; r++)); do
                echo "[$model batch=$batch threads=$t run $r/$REPEAT]" >&2
                run_one fedmq "$BENCH" --model "$model" --batch "$batch" --threads "$t" \
                    --seconds "$SECONDS_PER" --warmup "$WARMUP"
                FED+=("$(tail -n 1 "$RAW")")
                for s in "${SETTINGS[@]}"; do
                    # shellcheck disable=SC2086  # the args are words
                    run_one torch "$PY" "$TORCH_SCRIPT" --model "$model" --batch "$batch" ${s#*|} \
                        --seconds "$SECONDS_PER" --warmup "$WARMUP"
                    TV[${s%%|*}]+="$(field "$(tail -n 1 "$RAW")" samples_per_s) "
                done
            done
            fed_sps=$(for l in "${FED[@]}"; do field "$l" samples_per_s; done | median)
            fed_gf=$(for l in "${FED[@]}"; do field "$l" gflops; done | median)
            best="" best_label="" others=""
            for s in "${SETTINGS[@]}"; do
                label=${s%%|*}
                v=$(tr ' ' '\n' <<<"${TV[$label]}" | grep . | median)
                if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a > b) }'; then
                    [ -n "$best" ] && others="$others; $best_label: $best"
                    best=$v best_label=$label
                else
                    others="$others; $label: $v"
                fi
            done
            unset TV
            ratio=$(awk -v a="$fed_sps" -v b="$best" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            ROWS+=("| $model | $batch | $t | $fed_sps | $best ($best_label$others) | $ratio | $fed_gf |")
        done
    done
done

{
    echo "# fedmq vs PyTorch training throughput"
    echo
    if [ "$QUICK" = 1 ]; then
        echo "**Quick run (--quick, ${SECONDS_PER} s per measurement): a smoke test, the numbers are noisy.**"
        echo
    fi
    echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo "- command: \`$CMDLINE\` (in $(pwd))"
    echo "- CPU: $CPU ($NCPU CPUs online), load average at start: $LOAD"
    echo "- OpenBLAS: $OPENBLAS_VERSION, OPENBLAS_CORETYPE=$CORE for both programs"
    echo "- fedmq: $BLAS_DESC; train_bench $BENCH; git $GIT_REV"
    echo "- PyTorch: $TORCH_VERSION ($PY), convolutions via oneDNN, linear layers via OpenBLAS"
    echo "- sgemm_peak_gflops=$PEAK (fedmq's OpenBLAS, 1 thread, 1024^3 sgemm)"
    echo "- per measurement: ${WARMUP} s warm-up + ${SECONDS_PER} s timed; median of $REPEAT run(s); fedmq and PyTorch alternate"
    echo "- training step on both sides: forward + NLL + backward + SGD(lr 0.01, momentum 0.9), dropout on, shuffled real Fashion-MNIST batches"
    echo "- PyTorch column: its best setting for the row, named, the other settings after ';' (threads > 1: T threads, T threads with OMP_WAIT_POLICY=PASSIVE unless --no-omp-passive, and 1 thread)"
    echo "- GFLOP/s = samples/s x 3 x forward FLOPs/sample / 1e9 (forward + backward = 3x forward)"
    echo
    echo "| model | batch | threads | fedmq samples/s | PyTorch samples/s (best setting) | ratio fedmq/PyTorch | fedmq GFLOP/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "<details><summary>raw result lines ($(wc -l <"$RAW") runs, in order)</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo "</details>"
} | tee "$OUT"
echo "run_train_bench: wrote $OUT" >&2
