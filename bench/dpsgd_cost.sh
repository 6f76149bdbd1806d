#!/usr/bin/env bash
# dpsgd_cost.sh: the cost of sample-level DP-SGD in samples/s vs plain training, one
# markdown table (docs/PRIVACY.md, "Sample-level DP-SGD", cost).
#
#   bench/dpsgd_cost.sh [--quick] [--seconds S] [--batch B] [--samples N] [--threads T]
#                       [--models "mlp cnn"] [--out FILE] [BUILD_DIR]
#
# For each model, bench/dpsgd_bench runs (one process, the data loaded once) four modes on
# the first N Fashion-MNIST training samples (a client's partition), S timed seconds each
# after 1 s of warm-up: plain mini-batches of B; DP-SGD at Poisson rate B/N with per-example
# clipping only (sigma 0); DP-SGD with noise (sigma 1.1, what a trainer runs); and the same
# with the exact per-example path (each example alone). The table gives samples/s, the ratio
# to plain, and the time one step's noise takes alone.
#
#   BUILD_DIR   CMake build dir holding bench/dpsgd_bench (default: <repo>/build)
#   --quick     2 s per measurement (a smoke test: about 30 s in all; the numbers are noisy)
#   --seconds S timed seconds per measurement (default 10)
#   --out FILE  also write the report here (default bench/results/dpsgd-<date>.md)
# Run it alone on a quiet machine.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
die() { echo "dpsgd_cost: $*" >&2; exit 2; }
SECS=10 BATCH=64 SAMPLES=6000 THREADS=1 MODELS="mlp cnn" OUT="" BUILD="$REPO/build"
CMDLINE="$0 $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SECS=2; shift ;;
    --seconds) SECS=${2:?}; shift 2 ;;
    --batch) BATCH=${2:?}; shift 2 ;;
    --samples) SAMPLES=${2:?}; shift 2 ;;
    --threads) THREADS=${2:?}; shift 2 ;;
    --models) MODELS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) BUILD=$1; shift ;;
  esac
done
BIN=$BUILD/dpsgd_bench
[ -x "$BIN" ] || die "$BIN not found: cmake --build $BUILD --target dpsgd_bench"
[ -n "$OUT" ] || OUT="$REPO/bench/results/dpsgd-$(date +%Y-%m-%d).md"
mkdir -p "$(dirname "$OUT")"
raw=$(mktemp); trap 'rm -f "$raw"' EXIT
for model in $MODELS; do
  "$BIN" --model "$model" --batch "$BATCH" --samples "$SAMPLES" --threads "$THREADS" \
         --seconds "$SECS" --warmup 1 | tee -a "$raw" >&2
done
{
  echo "# DP-SGD cost: samples/s, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "command: \`$CMDLINE\`; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  echo "batch (plain) / expected batch (DP) $BATCH, $SAMPLES samples, $THREADS thread(s), $SECS s per cell, sigma 1.1, C 1"
  echo
  echo "| model | plain | DP, clipping only | DP, clipping + noise | DP, exact per-example path | noise of one step |"
  echo "|---|---:|---:|---:|---:|---:|"
  for model in $MODELS; do
    get() { awk -v m="$model" -v k="$1" '$2=="model="m && $3=="mode="k {for(i=1;i<=NF;i++) if ($i ~ /^samples_per_s=/) {sub("samples_per_s=","",$i); print $i}}' "$raw"; }
    noise=$(awk -v m="$model" '$2=="model="m && $3=="mode=dp" {for(i=1;i<=NF;i++) if ($i ~ /^noise_s_per_step=/) {sub("noise_s_per_step=","",$i); print $i}}' "$raw")
    p=$(get plain) c=$(get clip) d=$(get dp) x=$(get exact)
    cell() { awk -v v="$1" -v p="$p" 'BEGIN { printf "%.0f (%.2fx)", v, v / p }'; }
    echo "| $model | $(printf '%.0f' "$p") | $(cell "$c") | $(cell "$d") | $(cell "$x") | $(awk -v s="$noise" 'BEGIN{printf "%.1f ms", s*1000}') |"
  done
  echo
  echo "raw:"
  echo '```'
  cat "$raw"
  echo '```'
} | tee "$OUT"
