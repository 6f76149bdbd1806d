#!/usr/bin/env bash
# poison_compare.sh: final test accuracy (and backdoor success rate) of a federation with
# poisoning clients, for each defence of the aggregator, against a clean run (issue 11).
#
#   bench/poison_compare.sh [options] BUILD_DIR
#     --config FILE       federation config (default configs/fedmq.conf: cnn, 100 clients,
#                         dirichlet:0.5, async)
#     --model M           [federation] model (default: the config's)
#     --clients N         [federation] num_clients (default 100)
#     --attackers "A ..." attacker counts, each a run (default "10 20")
#     --attacks "K ..."   signflip noise backdoor (default all three)
#     --rules "R ..."     defences, names of RULE_SETS below (default $RULES)
#     --seconds S         wall time of each run (default 600)
#     --target C          backdoor target class (default 0)
#     --per-worker N      clients per trainer worker (default 10), see below
#     --set k=v           extra override for every daemon of every run (repeatable)
#     --skip-clean        no clean runs (the clean column is then -)
#     --dry-run           print the commands only
#
# Every run is `fedmq run CONFIG` for S seconds ([federation] time_limit_s = S,
# target_accuracy = 1 so it never stops early) serving the honest clients 0..N-A-1 with
# its own trainer, plus one bench/fedmq_attacker pool started by this script on the same
# endpoints for the attacker clients N-A..N-1 (all of them attack), stopped as soon as the
# honest trainer starts stopping (else the last versions are the attackers' alone). Then the
# last model is exported (fedmq export) and scored by backdoor_eval (clean test accuracy;
# attack success rate for the backdoor). The clean run of each rule serves all N clients
# honestly.
#
# Workers: in async mode a pool's share of the updates is its share of the workers (each
# worker trains one client after another), not of the clients; so each pool gets
# max(1, clients / per-worker) workers: 9 + 1 for 10 attackers of 100, 8 + 2 for 20. With
# trainer.workers set by --set, that value is used for both pools instead.
#
# Run from the source tree, alone on a quiet machine: by default 5 rules x (1 clean + 3
# attacks x 2 counts) = 35 runs of 600 s, about 6 hours. Prints one markdown report
# (stdout); each run's directory (logs, metrics, checkpoints) is kept under
# ${POISON_OUT:-/tmp/fedmq-poison-DATE}.
set -euo pipefail

# Defences: the --set overrides of each, keys of the aggregator's [aggregator] section
# (docs/OPERATIONS.md, "Robust aggregation"). Edit, or add a name and pass it in --rules.
# plain: no override at all (the build's default aggregator, a plain weighted mean; also
# for builds without the [aggregator] aggregation key). screened: the recommended defence;
# screened_vote: it plus the sign vote against backdoors; sign_vote: the vote over the mean.
declare -A RULE_SETS=(
    [plain]=""
    [mean]="aggregator.aggregation=mean"
    [norm_bound]="aggregator.aggregation=mean aggregator.norm_bound=2 aggregator.norm_bound_mode=relative aggregator.norm_action=clip"
    [median]="aggregator.aggregation=median"
    [trimmed_mean]="aggregator.aggregation=trimmed_mean aggregator.trim_fraction=0.2"
    [norm_bounded_mean]="aggregator.aggregation=norm_bounded_mean"
    [screened]="aggregator.aggregation=norm_bounded_mean aggregator.norm_bound=3 aggregator.norm_bound_mode=relative aggregator.norm_action=reject"
    [sign_vote]="aggregator.sign_threshold=0.4"
    [screened_vote]="aggregator.aggregation=norm_bounded_mean aggregator.norm_bound=3 aggregator.norm_bound_mode=relative aggregator.norm_action=reject aggregator.sign_threshold=0.4"
)
RULES="mean norm_bound median trimmed_mean norm_bounded_mean"
ATTACKS="signflip noise backdoor"
ATTACKERS="10 20"
CONFIG=configs/fedmq.conf
MODEL="" CLIENTS=100 SECONDS_PER_RUN=600 TARGET=0 PER_WORKER=10 DRY=0 CLEAN_RUNS=1
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --config) CONFIG=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --attackers) ATTACKERS=$2; shift 2 ;;
    --attacks) ATTACKS=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --per-worker) PER_WORKER=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --skip-clean) CLEAN_RUNS=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
for t in fedmq fedmq_attacker backdoor_eval fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
[ -f "$CONFIG" ] || { echo "$CONFIG: no such config" >&2; exit 2; }
for r in $RULES; do
    [[ -v RULE_SETS[$r] ]] || { echo "--rules: unknown rule '$r' (RULE_SETS: ${!RULE_SETS[*]})" >&2; exit 2; }
done
OUT=${POISON_OUT:-/tmp/fedmq-poison-$(date -u +%Y%m%d-%H%M%S)}
if [ "$DRY" -eq 0 ]; then
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
fi

COMMON=(--set "federation.num_clients=$CLIENTS" --set "federation.time_limit_s=$SECONDS_PER_RUN"
        --set federation.target_accuracy=1)
[ -n "$MODEL" ] && COMMON+=(--set "federation.model=$MODEL")
user_workers=0
for s in "${EXTRA[@]}"; do [[ $s == trainer.workers=* ]] && user_workers=1; done

workers() { local n=$(($1 / PER_WORKER)); echo $((n > 0 ? n : 1)); }

# field NAME LINE: the value of NAME=... in LINE
field() { sed -nE "s/.*(^| )$1=([^ ]+).*/\2/p" <<<"$2"; }

# sent_field WORD LOG: the number after WORD in the last summary line of a trainer's LOG
# ("updates sent N (acknowledged M, ..."), or -
sent_field() {
    local sum
    sum=$(grep -E 'updates sent [0-9]+' "$2" 2>/dev/null | tail -n 1 || true)
    sed -nE "s/.*$1 ([0-9]+).*/\1/p" <<<"$sum" | grep . || echo -
}

# run NAME RULE ATTACK A: one federation; prints "acc asr version sent acked honest_sent"
# (- when unknown)
run() {
    local name=$1 rule=$2 attack=$3 a=$4 dir=$OUT/$1 apid="" rc=0
    local honest=$((CLIENTS - a))
    local sets=("${COMMON[@]}")
    for s in ${RULE_SETS[$rule]}; do sets+=(--set "$s"); done
    sets+=("${EXTRA[@]}")
    local hw=() aw=()
    if [ "$user_workers" -eq 0 ]; then
        hw=(--set "trainer.workers=$(workers "$honest")")
        aw=(--set "trainer.workers=$(workers "$a")")
    fi
    local acmd=("$B/fedmq_attacker" --attack "$attack" --target "$TARGET" --config "$CONFIG"
                "${sets[@]}" "${aw[@]}" --set "trainer.clients=$honest-$((CLIENTS - 1))"
                --set trainer.metrics_addr=off --log-level info)
    local rcmd=("$B/fedmq" run "$CONFIG" "${sets[@]}" "${hw[@]}"
                --set "trainer.clients=0-$((honest - 1))" --run-dir "$dir")
    if [ "$DRY" -eq 1 ]; then
        [ "$a" -gt 0 ] && echo "# $name: ${acmd[*]} &" >&2
        echo "# $name: ${rcmd[*]}" >&2
        echo "- - - - - -"
        return
    fi
    mkdir -p "$dir"
    local wpid=""
    if [ "$a" -gt 0 ]; then
        "${acmd[@]}" >"$dir/attacker.log" 2>&1 &
        apid=$!
        # The attackers stop when the honest trainer does. `fedmq run` stops its trainer
        # first and the aggregator a few seconds later; an attacker pool still running then
        # fills the last buffers alone, and the final model (the one scored) is theirs.
        (while kill -0 "$apid" 2>/dev/null; do
            if grep -q 'stopping: waiting for the workers' "$dir/trainer.log" 2>/dev/null; then
                kill -TERM "$apid" 2>/dev/null
                break
            fi
            sleep 0.2
        done) &
        wpid=$!
    fi
    "${rcmd[@]}" >"$dir/run.out" 2>&1 || rc=$?
    if [ -n "$apid" ]; then
        kill -TERM "$apid" 2>/dev/null || true
        wait "$apid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
    fi
    local sent acked hsent
    sent=$(sent_field 'updates sent' "$dir/attacker.log")
    acked=$(sent_field 'acknowledged' "$dir/attacker.log")
    hsent=$(sent_field 'updates sent' "$dir/trainer.log")
    local line="" ver=-
    if "$B/fedmq" export --checkpoint "$dir/checkpoints" --out "$dir/final.safetensors" \
        >"$dir/export.out" 2>&1; then
        ver=$(grep -oE 'version [0-9]+' "$dir/export.out" | head -n 1 | cut -d' ' -f2)
        line=$("$B/backdoor_eval" --in "$dir/final.safetensors" --target "$TARGET" 2>>"$dir/export.out" || true)
    fi
    echo "$line" >"$dir/backdoor_eval.out"
    local res
    res="$(field clean_accuracy "$line" | grep . || echo -) $(field asr "$line" | grep . || echo -)"
    res+=" ${ver:--} ${sent:--} ${acked:--} ${hsent:--}"
    echo "$res (fedmq run exit $rc)" >"$dir/summary.txt"
    echo "$res"
}

echo "# fedmq: poisoning benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "- source $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $B, config $CONFIG"
echo "- $CLIENTS clients${MODEL:+, model $MODEL}, $SECONDS_PER_RUN s per run, attackers: $ATTACKERS," \
     "backdoor target class $TARGET (4 x 4 white trigger, bottom-right; half of each attacker's samples)"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "- extra overrides: ${EXTRA[*]:-none}; run directories under $OUT"
echo "- rules: $(for r in $RULES; do printf '%s = `%s`; ' "$r" "${RULE_SETS[$r]}"; done)"
echo
echo "| attack | attackers | rule | final test accuracy | clean (same rule) | vs clean (points) | backdoor ASR | attacker updates sent / acknowledged | honest updates sent | model version |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
declare -A CLEAN
for rule in $RULES; do
    CLEAN[$rule]=-
    [ "$CLEAN_RUNS" -eq 1 ] || continue
    read -r acc asr ver sent acked hsent < <(run "clean-$rule" "$rule" none 0)
    CLEAN[$rule]=$acc
    echo "| none | 0 | $rule | $acc | $acc | 0 | - | - | $hsent | $ver |"
done
for attack in $ATTACKS; do
    for a in $ATTACKERS; do
        for rule in $RULES; do
            read -r acc asr ver sent acked hsent < <(run "$attack-$a-$rule" "$rule" "$attack" "$a")
            clean=${CLEAN[$rule]}
            delta=-
            if [[ $acc =~ ^[0-9.]+$ && $clean =~ ^[0-9.]+$ ]]; then
                delta=$(awk -v a="$acc" -v c="$clean" 'BEGIN { printf "%+.1f", 100 * (a - c) }')
            fi
            [ "$attack" = backdoor ] || asr=-
            echo "| $attack | $a | $rule | $acc | $clean | $delta | $asr | $sent / $acked | $hsent | $ver |"
        done
    done
done
