#!/usr/bin/env bash
# shellcheck disable=SC2154  # the C_* and T_* variables come from cfg_vars (eval)
# sync_vs_torch.sh: time to test accuracy, fedmq synchronous FedAvg vs the same FedAvg in PyTorch.
#
#   bench/sync_vs_torch.sh [--config FILE] [--set section.key=value ...] [--torch-set k=v ...]
#                          [--target 0.85]
#                          [--thresholds "0.80 0.85"] [--fedmq-limit S] [--torch-limit S]
#                          [--torch-threads T] [--out FILE] [--keep] [BUILD_DIR]
#   bench/sync_vs_torch.sh --parse-only FEDMQ.jsonl TORCH.jsonl [--thresholds "..."] [--out FILE]
#
# Runs, one after the other (run it alone on a quiet machine):
#   1. fedmq:   BUILD_DIR/fedmq run CONFIG --set federation.target_accuracy=TARGET
#                   --set federation.time_limit_s=FEDMQ_LIMIT --run-dir RUN/fedmq
#               (broker, aggregator, evaluator, trainer pool as separate processes; trainer and
#               evaluator settings come from CONFIG; metrics in RUN/fedmq/metrics.jsonl);
#   2. PyTorch: BUILD_DIR/fedmq partition CONFIG --out RUN/partition.json (the exact client
#               partition fedmq's trainers use), then /usr/bin/python3 bench/torch_fedavg.py
#               --partition RUN/partition.json with clients_per_round, local_epochs,
#               learning_rate, momentum, batch_size, seed and num_rounds of CONFIG's
#               [federation], --target TARGET --time-limit TORCH_LIMIT --threads T
#               (metrics in RUN/torch.jsonl, same format).
# Both with OPENBLAS_CORETYPE=SkylakeX (FM_BENCH_CORE overrides) and OPENBLAS_NUM_THREADS=1:
# the same OpenBLAS core on both sides. Then, from both metrics files, the wall time from the
# first record (the initial model's evaluation) to the first record with test accuracy >= each
# threshold, as a markdown table (threshold, fedmq s, PyTorch s, ratio fedmq/PyTorch), printed
# and saved with the raw JSON lines to bench/results/sync_vs_torch-<date>.md (--out FILE to
# change). If `fedmq plot --help` works, both curves are drawn next to it (.png).
#
#   --config FILE      default configs/fashion-sync.conf (mode = sync, fedavg, 10 per round);
#                      to try the script before that file exists:
#                      --config configs/fedmq.conf --set federation.mode=async
#   --set k=v          extra overrides, given to fedmq run, fedmq partition and read for torch
#   --torch-set k=v    overrides for the PyTorch side only, after --set (e.g. the seed design's
#                      recipe against fedmq's default: --torch-set federation.learning_rate=0.01
#                      --torch-set federation.local_fraction=1); the report warns where the two
#                      recipes differ
#   --target X         stop accuracy for both sides (default 0.85)
#   --thresholds "..." accuracies to report (default "0.80 0.85")
#   --fedmq-limit S    fedmq time limit, seconds (default 900)
#   --torch-limit S    PyTorch time limit, seconds (default 750); with the defaults the
#                      whole script ends in under 30 minutes (each side also gets a hard
#                      timeout of its limit + 120 s)
#   --torch-threads T  torch.set_num_threads (default 1)
#   --keep             keep the run directory (fedmq logs, checkpoints; default: deleted,
#                      the metrics are in the report)
#   --parse-only F T   no runs: the table from two existing metrics files
#   BUILD_DIR          holds fedmq and the fedmq-* daemons (default <repo>/build)
# Exit: 0 report written, 1 a run failed to produce metrics, 2 bad input.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
TORCH_PY=/usr/bin/python3
CMDLINE="$0 $*"

die() { echo "sync_vs_torch: $*" >&2; exit 2; }
usage() { sed -n '3,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

CONFIG=$REPO/configs/fashion-sync.conf
SETS=()
TORCH_SETS=()
TARGET=0.85
THRESHOLDS="0.80 0.85"
FEDMQ_LIMIT=900
TORCH_LIMIT=750
TORCH_THREADS=1
OUT=""
KEEP=0
PARSE_ONLY=0
PF="" PT=""
BUILD_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
    --config) [ $# -ge 2 ] || die "--config: missing value"; CONFIG=$2; shift ;;
    --set) [ $# -ge 2 ] || die "--set: missing value"; SETS+=("$2"); shift ;;
    --torch-set) [ $# -ge 2 ] || die "--torch-set: missing value"; TORCH_SETS+=("$2"); shift ;;
    --target) [ $# -ge 2 ] || die "--target: missing value"; TARGET=$2; shift ;;
    --thresholds) [ $# -ge 2 ] || die "--thresholds: missing value"; THRESHOLDS=$2; shift ;;
    --fedmq-limit) [ $# -ge 2 ] || die "--fedmq-limit: missing value"; FEDMQ_LIMIT=$2; shift ;;
    --torch-limit) [ $# -ge 2 ] || die "--torch-limit: missing value"; TORCH_LIMIT=$2; shift ;;
    --torch-threads) [ $# -ge 2 ] || die "--torch-threads: missing value"; TORCH_THREADS=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out: missing value"; OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    --parse-only) [ $# -ge 3 ] || die "--parse-only: needs FEDMQ.jsonl TORCH.jsonl"
        PARSE_ONLY=1; PF=$2; PT=$3; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "$1: unknown option (see --help)" ;;
    *) [ -z "$BUILD_DIR" ] || die "unexpected argument '$1'"; BUILD_DIR=$1 ;;
    esac
    shift
done
NUM_RE='^[0-9]+(\.[0-9]+)?$'
is_acc() { [[ "$1" =~ $NUM_RE ]] && awk -v x="$1" 'BEGIN { exit !(x > 0 && x <= 1) }'; }
is_acc "$TARGET" || die "--target: '$TARGET' is not a number in (0, 1]"
for t in $THRESHOLDS; do
    is_acc "$t" || die "--thresholds: '$t' is not a number in (0, 1]"
done
[ -n "${THRESHOLDS// /}" ] || die "--thresholds: empty"
[[ "$FEDMQ_LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--fedmq-limit: '$FEDMQ_LIMIT' is not a positive integer"
[[ "$TORCH_LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--torch-limit: '$TORCH_LIMIT' is not a positive integer"
[[ "$TORCH_THREADS" =~ ^[1-9][0-9]*$ ]] || die "--torch-threads: '$TORCH_THREADS' is not a positive integer"

# any python3 with the json module parses the metrics; prefer the Debian one
PY=$TORCH_PY
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || die "python3 not found"

STAMP=$(date +%Y%m%d-%H%M%S)
if [ -z "$OUT" ]; then
    mkdir -p "$REPO/bench/results"
    OUT=$REPO/bench/results/sync_vs_torch-$STAMP.md
else
    mkdir -p "$(dirname "$OUT")"
fi
PNG=${OUT%.md}.png

# table FEDMQ.jsonl TORCH.jsonl: the markdown table and one summary line per side
TABLE_PY='
import json, sys
fed_path, torch_path, thresholds = sys.argv[1], sys.argv[2], [float(t) for t in sys.argv[3].split()]

def load(path):
    recs, bad = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                recs.append((float(r["time"]), float(r["accuracy"]), r.get("version")))
            except (ValueError, KeyError, TypeError):
                bad += 1
    if not recs:
        sys.exit("sync_vs_torch: %s: no metrics records" % path)
    return recs, bad

def time_to(recs, thr):
    t0 = recs[0][0]
    hits = [(t - t0, v) for t, a, v in recs if a >= thr]
    return min(hits, key=lambda h: h[0]) if hits else None

def summary(name, path, recs, bad):
    t0 = recs[0][0]
    best = max(recs, key=lambda r: r[1])
    s = "- %s: %d records in %s (%.1f s from the first to the last), best accuracy %.4f " \
        "(version %s at %.1f s), last %.4f" % (name, len(recs), path, recs[-1][0] - t0, best[1],
                                               best[2], best[0] - t0, recs[-1][1])
    if bad:
        s += "; %d malformed line(s) skipped" % bad
    return s

fed, fbad = load(fed_path)
tor, tbad = load(torch_path)
print("| threshold | fedmq s | PyTorch s | ratio fedmq/PyTorch |")
print("|---:|---:|---:|---:|")
for thr in thresholds:
    f, t = time_to(fed, thr), time_to(tor, thr)
    fs = "%.1f (v%s)" % f if f else "not reached"
    ts = "%.1f (round %s)" % t if t else "not reached"
    ratio = "%.2f" % (f[0] / t[0]) if f and t and t[0] > 0 else "n/a"
    print("| %.2f | %s | %s | %s |" % (thr, fs, ts, ratio))
print()
print(summary("fedmq", fed_path, fed, fbad))
print(summary("PyTorch", torch_path, tor, tbad))
'

# report FEDMQ.jsonl TORCH.jsonl [HEADER_FILE]: write $OUT (and print it)
report() {
    local fj=$1 tj=$2 header=${3:-}
    local table
    table=$("$PY" -c "$TABLE_PY" "$fj" "$tj" "$THRESHOLDS") || exit 1
    {
        echo "# fedmq sync FedAvg vs PyTorch FedAvg: wall time to test accuracy"
        echo
        [ -n "$header" ] && cat "$header" && echo
        echo "Seconds from each side's first metrics record (the initial model's evaluation) to"
        echo "the first record with test accuracy (t10k, 10000 images) >= the threshold; fedmq's"
        echo "model version and PyTorch's round in parentheses. Ratio < 1: fedmq is faster."
        echo
        echo "$table"
        if [ -n "${PLOT_NOTE:-}" ]; then
            echo
            echo "$PLOT_NOTE"
        fi
        local f
        for f in "fedmq:$fj" "PyTorch:$tj"; do
            echo
            echo "<details><summary>${f%%:*} metrics ($(grep -c . "${f#*:}") lines, ${f#*:})</summary>"
            echo
            echo '```'
            cat "${f#*:}"
            echo '```'
            echo "</details>"
        done
    } >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
    echo
    echo "$table"
    echo
    echo "sync_vs_torch: wrote $OUT" >&2
}

# plot FEDMQ.jsonl TORCH.jsonl: PLOT_NOTE for the report
plot() {
    PLOT_NOTE=""
    if [ -n "${FEDMQ:-}" ] && "$FEDMQ" plot --help >/dev/null 2>&1; then
        local perr
        if perr=$("$FEDMQ" plot "$1" "$2" --label fedmq --label PyTorch -o "$PNG" 2>&1); then
            PLOT_NOTE="Plot: \`$(basename "$PNG")\` (fedmq plot)."
            echo "sync_vs_torch: plot $PNG" >&2
        else
            echo "sync_vs_torch: fedmq plot failed, no plot: $perr" >&2
        fi
    else
        echo "sync_vs_torch: 'fedmq plot --help' does not work (not built yet?): no plot" >&2
    fi
}

BUILD_DIR=${BUILD_DIR:-$REPO/build}
FEDMQ=$BUILD_DIR/fedmq
[ -x "$FEDMQ" ] || FEDMQ=""

if [ "$PARSE_ONLY" = 1 ]; then
    [ -r "$PF" ] || die "--parse-only: $PF: not readable"
    [ -r "$PT" ] || die "--parse-only: $PT: not readable"
    HDR=$(mktemp "${TMPDIR:-/tmp}/sync_vs_torch_hdr.XXXXXX")
    trap 'rm -f "$HDR"' EXIT
    echo "- tables made with \`$CMDLINE\` on $(date '+%Y-%m-%d %H:%M:%S %Z') from existing files" >"$HDR"
    plot "$PF" "$PT"
    report "$PF" "$PT" "$HDR"
    exit 0
fi

# ---- checks -------------------------------------------------------------------------------
[ -n "$FEDMQ" ] || die "$BUILD_DIR/fedmq not found: build first (bash scripts/build.sh $BUILD_DIR)"
for d in broker aggregator evaluator trainer; do
    [ -x "$BUILD_DIR/fedmq-$d" ] || die "$BUILD_DIR/fedmq-$d not found: build all targets"
done
[ -f "$CONFIG" ] || die "--config $CONFIG: no such file (configs/fashion-sync.conf not written yet? \
try --config configs/fedmq.conf --set federation.mode=async)"
[ -x "$TORCH_PY" ] || die "$TORCH_PY not found (PyTorch runs with the Debian interpreter: apt-get install python3-torch)"
TORCH_VERSION=$("$TORCH_PY" -c 'import numpy, torch; print(torch.__version__)' 2>/dev/null) ||
    die "$TORCH_PY cannot import torch and numpy: apt-get install python3-torch python3-numpy"

# [federation], [aggregator] and [trainer] values of CONFIG after the overrides, as resolved
# by `fedmq config` (every key, the binaries' defaults included), as shell assignments with
# the prefix $1; stdin is the dump
CFG_PY='
import shlex, sys
prefix, sec, want = sys.argv[1], None, ("federation", "aggregator", "trainer")
for line in sys.stdin:
    line = line.strip()
    if not line or line[0] in "#;":
        continue
    if line.startswith("["):
        sec = line.strip("[] ")
    elif "=" in line and sec in want:
        k, v = (x.strip() for x in line.split("=", 1))
        print("%s_%s_%s=%s" % (prefix, sec, k, shlex.quote(v)))
'
SETARGS=()
for s in "${SETS[@]}"; do SETARGS+=(--set "$s"); done
TSETARGS=("${SETARGS[@]}")
for s in "${TORCH_SETS[@]}"; do TSETARGS+=(--set "$s"); done
# cfg_vars PREFIX --set k=v...: PREFIX_section_key for CONFIG with those overrides
cfg_vars() {
    local prefix=$1 vars
    shift
    vars=$("$FEDMQ" config "$CONFIG" "$@" | "$PY" -c "$CFG_PY" "$prefix") && [ -n "$vars" ] ||
        die "fedmq config $CONFIG $*: refused (see above)"
    eval "$vars"
}
cfg_vars C "${SETARGS[@]}"
cfg_vars T "${TSETARGS[@]}"
[ "$T_federation_model" = cnn ] || die "[federation] model = $T_federation_model: torch_fedavg.py trains the cnn only"
for k in weight_decay clip_norm mu local_steps lr_decay; do
    v=T_federation_$k
    awk -v x="${!v}" 'BEGIN { exit !(x + 0 == 0) }' ||
        die "[federation] $k = ${!v}: torch_fedavg.py implements plain SGD with momentum over full local epochs only (needs 0 on its side: --torch-set federation.$k=0)"
done
awk -v x="$T_federation_local_fraction" 'BEGIN { exit !(x + 0 == 1) }' ||
    die "[federation] local_fraction = $T_federation_local_fraction: torch_fedavg.py trains full local epochs only (needs 1 on its side: --torch-set federation.local_fraction=1)"
WARN=()
[ "$C_federation_mode" = sync ] || WARN+=("[federation] mode = $C_federation_mode (not sync): fedmq does not run the same algorithm as PyTorch")
[ "$C_federation_aggregation_strategy" = fedavg ] ||
    WARN+=("[federation] aggregation_strategy = $C_federation_aggregation_strategy (not fedavg)")
if [ "$C_aggregator_server_optimizer" != fedavg ] ||
    ! awk -v x="$C_aggregator_server_lr" 'BEGIN { exit !(x == 1) }'; then
    WARN+=("[aggregator] server_optimizer = $C_aggregator_server_optimizer, server_lr = $C_aggregator_server_lr (PyTorch: plain FedAvg, server lr 1)")
fi
for k in clients_per_round local_epochs local_steps local_fraction learning_rate lr_decay momentum batch_size; do
    c=C_federation_$k t=T_federation_$k
    [ "${!c}" = "${!t}" ] || WARN+=("[federation] $k: fedmq ${!c}, PyTorch ${!t} (--torch-set): not the same recipe")
done
[ "$C_aggregator_weight_by_samples" = true ] ||
    WARN+=("[aggregator] weight_by_samples = $C_aggregator_weight_by_samples (PyTorch weights by samples)")
for w in "${WARN[@]}"; do echo "sync_vs_torch: warning: $w" >&2; done
ROUNDS=$T_federation_num_rounds
[ "$ROUNDS" -gt 0 ] 2>/dev/null || ROUNDS=100000 # unlimited: the time limit and target stop it

CORE=${FM_BENCH_CORE:-SkylakeX}
export OPENBLAS_CORETYPE=$CORE OPENBLAS_NUM_THREADS=1
export FEDMQ_BLAS_AUTOCORE=0 # the core is forced; both sides get the same environment
unset OMP_NUM_THREADS GOTO_NUM_THREADS MKL_NUM_THREADS OMP_WAIT_POLICY GOMP_SPINCOUNT || true

RUN=$(mktemp -d "${TMPDIR:-/tmp}/sync_vs_torch.XXXXXX")
cleanup() { if [ "$KEEP" = 1 ]; then echo "sync_vs_torch: run directory kept: $RUN" >&2; else rm -rf "$RUN"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
FJ=$RUN/fedmq/metrics.jsonl
TJ=$RUN/torch.jsonl
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "sync_vs_torch: warning: load average $LOAD: the machine is not quiet, the times will be off" >&2
fi
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
    GIT_REV="$GIT_REV (with uncommitted changes)"
fi
echo "sync_vs_torch: config $CONFIG ${SETS[*]}; target $TARGET; limits fedmq ${FEDMQ_LIMIT}s, PyTorch ${TORCH_LIMIT}s \
(at most ~$(((FEDMQ_LIMIT + TORCH_LIMIT + 240) / 60)) min); core $CORE; load $LOAD -> $OUT" >&2

# ---- 1. fedmq ---------------------------------------------------------------------------------
echo "[1/2] fedmq run (sync FedAvg), limit ${FEDMQ_LIMIT}s" >&2
FED_START=$(date +%s)
set +e
timeout -k 30 $((FEDMQ_LIMIT + 120)) "$FEDMQ" run "$CONFIG" "${SETARGS[@]}" \
    --set "federation.target_accuracy=$TARGET" --set "federation.time_limit_s=$FEDMQ_LIMIT" \
    --run-dir "$RUN/fedmq" 2>&1 | tee "$RUN/fedmq.out" |
    # progress lines only when the evaluated version changes; everything else as is
    awk '/^\[ *[0-9.]+s\]/ { v = $0; sub(/.*\(v/, "", v); if (v == last) next; last = v }
         { print; fflush() }' >&2
FED_RC=${PIPESTATUS[0]}
set -e
FED_WALL=$(($(date +%s) - FED_START))
[ -s "$FJ" ] || { echo "sync_vs_torch: fedmq run (exit $FED_RC) wrote no metrics ($FJ); its output:" >&2
    tail -n 20 "$RUN/fedmq.out" >&2; KEEP=1; exit 1; }
FED_BLAS=$(grep -ho 'OpenBLAS [^ ]* core [^ ]*' "$RUN/fedmq/trainer.log" "$RUN/fedmq/evaluator.log" 2>/dev/null |
    sort -u | paste -sd ';' - || true)

# ---- 2. PyTorch ------------------------------------------------------------------------------
echo "[2/2] PyTorch FedAvg (torch_fedavg.py), limit ${TORCH_LIMIT}s" >&2
"$FEDMQ" partition "$CONFIG" "${TSETARGS[@]}" --out "$RUN/partition.json" ||
    die "fedmq partition failed"
TORCH_ARGS=(--partition "$RUN/partition.json" --out "$TJ" --rounds "$ROUNDS"
    --clients-per-round "$T_federation_clients_per_round" --local-epochs "$T_federation_local_epochs"
    --lr "$T_federation_learning_rate" --momentum "$T_federation_momentum"
    --batch "$T_federation_batch_size" --seed "$T_federation_seed" --target "$TARGET"
    --time-limit "$TORCH_LIMIT" --threads "$TORCH_THREADS")
TORCH_START=$(date +%s)
set +e
timeout -k 30 $((TORCH_LIMIT + 120)) "$TORCH_PY" "$SCRIPT_DIR/torch_fedavg.py" "${TORCH_ARGS[@]}" \
    2>&1 | tee "$RUN/torch.out" >&2
TORCH_RC=${PIPESTATUS[0]}
set -e
TORCH_WALL=$(($(date +%s) - TORCH_START))
[ -s "$TJ" ] || { echo "sync_vs_torch: torch_fedavg.py (exit $TORCH_RC) wrote no metrics ($TJ)" >&2; KEEP=1; exit 1; }
TORCH_CORE=$(sed -n 's/.*OpenBLAS core \([^ ]*\).*/\1/p' "$RUN/torch.out" | head -n 1)
[ "${TORCH_CORE,,}" = "${CORE,,}" ] ||
    WARN+=("PyTorch's OpenBLAS core is '$TORCH_CORE', expected '$CORE'")
case "$FED_BLAS" in *"core $CORE"*) ;; *) WARN+=("fedmq's OpenBLAS: '$FED_BLAS', expected core $CORE") ;; esac

# ---- report -----------------------------------------------------------------------------------
HDR=$RUN/header.md
{
    echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z'); command: \`$CMDLINE\` (in $(pwd)); git $GIT_REV"
    echo "- CPU: $CPU ($(nproc) CPUs online), load average at start: $LOAD"
    echo "- config: \`$CONFIG\`${SETS[*]:+ with --set ${SETS[*]}}: mode $C_federation_mode, $C_federation_aggregation_strategy, $C_federation_num_clients clients ($C_federation_partition, holdout $C_federation_holdout), $C_federation_clients_per_round per round, $C_federation_local_epochs local epoch(s) of at most $C_federation_local_steps steps (0 = no limit) and fraction $C_federation_local_fraction, SGD lr $C_federation_learning_rate (lr_decay $C_federation_lr_decay) momentum $C_federation_momentum batch $C_federation_batch_size, server $C_aggregator_server_optimizer (server lr $C_aggregator_server_lr, momentum $C_aggregator_server_momentum), seed $C_federation_seed; trainer workers $C_trainer_workers x $C_trainer_threads_per_worker thread(s)"
    [ ${#TORCH_SETS[@]} -eq 0 ] || echo "- PyTorch's side only: --torch-set ${TORCH_SETS[*]} (lr $T_federation_learning_rate, $T_federation_local_epochs local epoch(s), plain FedAvg)"
    echo "- both: OPENBLAS_CORETYPE=$CORE OPENBLAS_NUM_THREADS=1; stop at accuracy $TARGET"
    echo "- fedmq: \`fedmq run\` (broker, aggregator, evaluator, trainers as processes), time limit ${FEDMQ_LIMIT} s; exit $FED_RC after ${FED_WALL} s; ${FED_BLAS:-OpenBLAS core not found in the logs}"
    echo "- PyTorch $TORCH_VERSION: \`bench/torch_fedavg.py ${TORCH_ARGS[*]}\` (partition from \`fedmq partition\`, one process, clients trained in turn, evaluation after every round), time limit ${TORCH_LIMIT} s; exit $TORCH_RC after ${TORCH_WALL} s; OpenBLAS core ${TORCH_CORE:-?}"
    echo "- a seed does not give both programs the same initial weights, client sample or batch order"
    for w in "${WARN[@]}"; do echo "- **warning:** $w"; done
} >"$HDR"
plot "$FJ" "$TJ"
report "$FJ" "$TJ" "$HDR"
