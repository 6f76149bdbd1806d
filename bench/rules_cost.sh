#!/usr/bin/env bash
# rules_cost.sh: what each defence of the aggregator costs in ingest rate (updates/s), the
# real fedmq-aggregator fed by agg_ingest (acks off, as the first ingest figures), one rule
# after the other in one run, each as a ratio to the plain mean:
#   mean                 the FedBuff weighted mean (default)
#   norm_bound (clip)    mean + an absolute L2 bound below every update's norm, so every
#                        update is clipped (the bound's worst case; a relative bound costs
#                        the same per update plus a median over norm_window doubles)
#   median, trimmed_mean (trim 0.2), norm_bounded_mean: the buffer's updates are stored
#                        (K x nparams floats) and combined per parameter when it is full
#   screened             norm_bounded_mean behind a relative reject screen (3 x the median
#                        norm): the recommended defence; every update here passes the screen
#   screened_vote        screened + the sign vote (sign_threshold 0.4), against backdoors
#
#   bench/rules_cost.sh [--runs N] [--rules "R ..."] BUILD_DIR
#     N runs per rule (default 1), the rules alternating; --rules: only these (mean, the
#     baseline, always runs)
#
# Run from the source tree, alone on a quiet machine. Prints one markdown report.
set -euo pipefail
RUNS=1 ONLY=""
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --rules) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--runs N] [--rules \"R ...\"] BUILD_DIR" >&2; exit 2; }
B=$(cd "$1" && pwd)
[ -x "$B/agg_ingest" ] || { echo "$B/agg_ingest: not built" >&2; exit 2; }

# name|agg_ingest options; agg_ingest's cnn updates have norm ~0.11, mlp ~0.045
# screened: the recommended defence (docs/OPERATIONS.md), norm_bounded_mean behind a relative
# reject screen at 3 x the median norm (these equal-norm updates all pass it)
SCREENED="--aggregation norm_bounded_mean --norm-bound 3 --set aggregator.norm_bound_mode=relative --set aggregator.norm_action=reject"
RULES_cnn=("mean|--aggregation mean" "norm_bound|--aggregation mean --norm-bound 0.05"
           "median|--aggregation median" "trimmed_mean|--aggregation trimmed_mean --set aggregator.trim_fraction=0.2"
           "norm_bounded_mean|--aggregation norm_bounded_mean" "screened|$SCREENED"
           "screened_vote|$SCREENED --set aggregator.sign_threshold=0.4")
RULES_mlp=("mean|--aggregation mean" "norm_bound|--aggregation mean --norm-bound 0.02"
           "median|--aggregation median" "trimmed_mean|--aggregation trimmed_mean --set aggregator.trim_fraction=0.2"
           "norm_bounded_mean|--aggregation norm_bounded_mean" "screened|$SCREENED"
           "screened_vote|$SCREENED --set aggregator.sign_threshold=0.4")
# only the rules asked for, and mean (every ratio's baseline)
keep() { [ -z "$ONLY" ] || [ "$1" = mean ] || [[ " $ONLY " == *" $1 "* ]]; }

echo "# fedmq: the cost of each aggregation rule ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "- source $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $B"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo
echo "| model | K | rule | updates | updates/s (mean of runs) | vs mean | clipped | peak RSS MB |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
field() { sed -nE "s/.*(^| )$1=([^ ]+).*/\2/p" <<<"$2"; }
for model in cnn mlp; do
    n=300
    [ "$model" = mlp ] && n=2000
    declare -n rules="RULES_$model"
    declare -A sum=() clipped=() rss=()
    for ((r = 1; r <= RUNS; r++)); do
        for spec in "${rules[@]}"; do
            name=${spec%%|*} opts=${spec#*|}
            keep "$name" || continue
            # shellcheck disable=SC2086
            line=$("$B/agg_ingest" --model "$model" --k 10 --updates "$n" --acks off $opts | grep '^agg ')
            rate=$(field updates_per_s "$line")
            sum[$name]=$(awk -v a="${sum[$name]:-0}" -v b="$rate" 'BEGIN { print a + b }')
            clipped[$name]=$(field clipped "$line")
            rss[$name]=$(field peak_rss_mb "$line")
        done
    done
    base=$(awk -v s="${sum[mean]}" -v r="$RUNS" 'BEGIN { print s / r }')
    for spec in "${rules[@]}"; do
        name=${spec%%|*}
        keep "$name" || continue
        m=$(awk -v s="${sum[$name]}" -v r="$RUNS" 'BEGIN { printf "%.1f", s / r }')
        ratio=$(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
        echo "| $model | 10 | $name | $n | $m | $ratio | ${clipped[$name]} | ${rss[$name]} |"
    done
    unset -n rules
    unset sum clipped rss
done
