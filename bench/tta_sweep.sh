#!/usr/bin/env bash
# tta_sweep.sh: time to accuracy of training recipes (issue 16): each setting, each seed, one
# `fedmq run` of a config (default the README's main job, configs/fedmq.conf) until the
# target accuracy or the time limit, one run after the other on one machine.
#
#   bench/tta_sweep.sh [options] BUILD_DIR SETTING...
#     SETTING            NAME or NAME:KEY=VALUE,KEY=VALUE... (section.key overrides of the
#                        run; NAME alone = the config as it is)
#     --config FILE      the config (default configs/fedmq.conf)
#     --seeds "1 2 3"    federation.seed of the runs (default "1 2 3")
#     --limit S          federation.time_limit_s of each run (default 240)
#     --target A         federation.target_accuracy (default 0.85)
#     --set KEY=VALUE    one more override for every run (repeatable)
#     --dry-run          print the commands only
#
#   e.g. bench/tta_sweep.sh build default fedavgm:aggregator.server_optimizer=fedavgm
#
# Reported (markdown on stdout): per setting, the time to the target of each seed (`fedmq
# run`'s "time to A accuracy", from its start: data loading and the first model's scoring
# included; "-" = not reached within the limit), their median (a run that did not reach it
# counts as the limit), the version it was reached at, the seconds per version, and the
# test accuracy of the last scored version. Plus the per-version time budget of each run
# (<run-dir>/budget.json: training, evaluation and the cores' shares). Needs a quiet
# machine: run nothing else. Run directories stay under ${TTA_OUT:-/tmp/fedmq-tta-DATE}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONFIG=configs/fedmq.conf SEEDS="1 2 3" LIMIT=240 TARGET=0.85 DRY=0
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --config) CONFIG=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --limit) LIMIT=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "usage: $0 [options] BUILD_DIR SETTING... (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
shift
for t in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
[ -f "$CONFIG" ] || { echo "$0: $CONFIG: no such config" >&2; exit 2; }

# every setting's overrides are checked by `fedmq config` before the first run
sets_of() { # the --set arguments of setting $1
    local over=${1#*:}
    [ "$over" = "$1" ] && return 0
    local IFS=,
    for kv in $over; do printf -- '--set\n%s\n' "$kv"; done
}
for s in "$@"; do
    mapfile -t a < <(sets_of "$s")
    "$B/fedmq" config "$CONFIG" "${a[@]}" "${EXTRA[@]}" >/dev/null ||
        { echo "$0: setting '$s' is not a valid config" >&2; exit 2; }
done

OUT=${TTA_OUT:-/tmp/fedmq-tta-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
echo "# time to $TARGET, $(date -u +%Y-%m-%dT%H:%MZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(fm_bench_machine)"
echo
echo "config $CONFIG, seeds $SEEDS, limit $LIMIT s per run${EXTRA[*]:+, overrides: ${EXTRA[*]}}"
echo
echo "| setting | time to $TARGET per seed (s) | median (s) | version reached | s per version | last accuracy | evaluator CPU | trainer CPU |"
echo "|---|---|---:|---|---:|---|---:|---:|"
for s in "$@"; do
    name=${s%%:*}
    mapfile -t a < <(sets_of "$s")
    times=() vers=() pers=() lasts=() evs=() trs=()
    for seed in $SEEDS; do
        dir=$OUT/$name-s$seed
        cmd=("$B/fedmq" run "$CONFIG" --run-dir "$dir" --set "federation.seed=$seed"
             --set "federation.time_limit_s=$LIMIT" --set "federation.target_accuracy=$TARGET"
             "${a[@]}" "${EXTRA[@]}")
        if [ "$DRY" = 1 ]; then echo "${cmd[*]}"; continue; fi
        rm -rf "$dir"
        "${cmd[@]}" >"$dir.out" 2>&1 || true
        read -r t v < <(sed -n 's/^  time to .* accuracy: \([0-9.]*\) s (model version \([0-9]*\)).*/\1 \2/p' "$dir.out"; echo "- -")
        times+=("$t") vers+=("$v")
        /usr/bin/python3 - "$dir" >"$dir.row" <<'EOF'
import json, sys
d = sys.argv[1]
try:
    b = json.load(open(d + "/budget.json"))
    per = b["per_version_s"]
    cores = b["cores"] * b["wall_s"]
    ev = 100.0 * b["cpu_s"].get("evaluator", 0) / cores
    tr = 100.0 * b["cpu_s"].get("trainer", 0) / cores
except (OSError, ValueError, KeyError, ZeroDivisionError):
    per, ev, tr = float("nan"), float("nan"), float("nan")
last = float("nan")
try:
    for line in open(d + "/metrics.jsonl"):
        last = json.loads(line)["accuracy"]
except (OSError, ValueError, KeyError):
    pass
print("%.2f %.4f %.0f %.0f" % (per, last, ev, tr))
EOF
        read -r per last ev tr <"$dir.row"
        pers+=("$per") lasts+=("$last") evs+=("$ev%") trs+=("$tr%")
        echo "  $name seed $seed: ${t} s (v$v), $per s/version, last $last" >&2
    done
    [ "$DRY" = 1 ] && continue
    med=$(printf '%s\n' "${times[@]}" | sed "s/^-$/$LIMIT/" | sort -g |
          awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.1f", m}')
    reached=$(printf '%s\n' "${times[@]}" | grep -vc '^-$' || true)
    [ "$reached" -lt $(( (${#times[@]} + 1) / 2 )) ] && med="> $LIMIT"
    echo "| $s | ${times[*]} | $med | ${vers[*]} | ${pers[*]} | ${lasts[*]} | ${evs[*]} | ${trs[*]} |"
done
