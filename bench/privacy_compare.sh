#!/usr/bin/env bash
# privacy_compare.sh: test accuracy against the client-level privacy budget (issue 12).
#
#   bench/privacy_compare.sh [options] BUILD_DIR
#     --config FILE      federation config (default configs/fashion-sync.conf: cnn, 100
#                        clients, dirichlet:0.5)
#     --mode M           sync | async (default: the config's)
#     --model M          [federation] model (default: the config's)
#     --clients N        [federation] num_clients (default 100)
#     --k K              updates per step: sync clients_per_round, async buffer_k
#                        (default: every client, N); with --sampling poisson the expected
#                        updates per round (q = K / N)
#     --sampling S       sync: fixed (default: K clients chosen per round, accounted at
#                        q = 1) or poisson (each client's own coin, accounted at q = K / N)
#     --steps T          versions each run may make (default 30): sigma is planned so that
#                        T steps spend exactly epsilon (fedmq privacy --q Q --steps T
#                        --target-epsilon E), and target_epsilon = E stops the run there
#     --eps "E ..."      budgets, each a run (default "1 3 8"); "none" = the non-private
#                        run (same config, clipping and noise off, num_rounds = T)
#     --clip C           [privacy] clip_norm (default 1)
#     --seconds S        time limit of each run (default 1800)
#     --set k=v          extra override for every daemon (repeatable)
#     --dry-run          print the commands only
#
# Every run is `fedmq run CONFIG` with weight_by_samples = false (so the private and the
# non-private runs weigh updates alike), target_accuracy 1 (never stops early), and for the
# private runs [privacy] mode = client with the planned sigma and target_epsilon = E: the
# aggregator stops by itself when the next version would exceed E. The report (stdout,
# markdown): per run the versions made, epsilon of the last version (METRICS), the final
# test accuracy, the best, and the mean of the last 5 evaluations. Accuracy depends on the
# steps, not on the speed, so the figures hold on a busy machine; wall times do not.
# Run directories are kept under ${PRIVACY_OUT:-/tmp/fedmq-privacy-DATE}.
set -euo pipefail

CONFIG=configs/fashion-sync.conf
MODE="" MODEL="" CLIENTS=100 K="" STEPS=30 EPS="none 1 3 8" CLIP=1 SECS=1800 DRY=0 SAMPLING=fixed
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --config) CONFIG=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --k) K=$2; shift 2 ;;
    --sampling) SAMPLING=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --eps) EPS=$2; shift 2 ;;
    --clip) CLIP=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
for t in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
[ -f "$CONFIG" ] || { echo "$CONFIG: no such config" >&2; exit 2; }
K=${K:-$CLIENTS}
OUT=${PRIVACY_OUT:-/tmp/fedmq-privacy-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

COMMON=(--set "federation.num_clients=$CLIENTS" --set "trainer.clients=0-$((CLIENTS - 1))"
        --set federation.target_accuracy=1 --set "federation.time_limit_s=$SECS"
        --set aggregator.weight_by_samples=false --set aggregator.round_timeout_s=600
        --set trainer.ack_timeout_s=600)
# ack_timeout_s: a sync round of 100 cnn clients can outlast the default 30 s before its
# checkpoint acknowledges the first update, and every trainer then resends (duplicates)
[ -n "$MODE" ] && COMMON+=(--set "federation.mode=$MODE")
[ -n "$MODEL" ] && COMMON+=(--set "federation.model=$MODEL")
mode=${MODE:-$(sed -n 's/^mode *= *//p' "$CONFIG" | head -1)}
Q=1
if [ "$SAMPLING" = poisson ]; then
    [ "$mode" = sync ] || { echo "$0: --sampling poisson needs mode sync" >&2; exit 2; }
    Q=$(python3 -c "print($K / $CLIENTS)")
    COMMON+=(--set federation.sampling=poisson)
fi
if [ "$mode" = sync ]; then
    COMMON+=(--set "federation.clients_per_round=$K" --set "federation.min_clients=$((K / 2 > 0 ? K / 2 : 1))")
else
    COMMON+=(--set "aggregator.buffer_k=$K")
    [ "$K" -le 2 ] || COMMON+=(--set aggregator.staleness=polynomial)
fi

# summary.py RUN_DIR: versions, last epsilon, final, best, mean of the last 5 accuracies
summary() {
    python3 - "$1" <<'EOF'
import json, sys
rows = []
with open(sys.argv[1] + "/metrics.jsonl") as f:
    for line in f:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
if not rows:
    print("| - | - | - | - | - |")
    sys.exit(0)
last = rows[-1]
acc = [r["accuracy"] for r in rows]
tail = acc[-5:]
eps = last.get("epsilon")
print("| %d | %s | %.4f | %.4f | %.4f |" % (last["version"], "-" if eps is None else "%.3f" % eps,
      last["accuracy"], max(acc), sum(tail) / len(tail)))
EOF
}

echo "# privacy_compare: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -n), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo
echo "config $CONFIG, mode $mode, ${MODEL:-model of the config}, $CLIENTS clients, K = $K per step, $STEPS steps, C = $CLIP, delta 1e-5, $([ "$Q" = 1 ] && echo "q = 1 (no amplification)" || echo "Poisson sampling q = $Q (each client's own coin)")"
echo
echo "| epsilon | sigma | versions | epsilon of the last version | final accuracy | best | mean of last 5 |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for e in $EPS; do
    dir="$OUT/eps-$e"
    rm -rf "$dir"
    if [ "$e" = none ]; then
        sigma="-"
        args=(--set "federation.num_rounds=$STEPS")
    else
        sigma=$("$B/fedmq" privacy --q "$Q" --steps "$STEPS" --delta 1e-5 --target-epsilon "$e" |
                sed -n 's/.* sigma=\([^ ]*\) .*/\1/p')
        # the planned sigma is rounded up, so T steps stay within E
        sigma=$(python3 -c "import math; print(math.ceil($sigma * 1e4) / 1e4)")
        args=(--set privacy.mode=client --set "privacy.clip_norm=$CLIP"
              --set "privacy.noise_multiplier=$sigma" --set "privacy.target_epsilon=$e"
              --set aggregator.norm_bound=0 --set aggregator.aggregation=mean)
    fi
    cmd=("$B/fedmq" run "$CONFIG" --run-dir "$dir" "${COMMON[@]}" "${args[@]}" "${EXTRA[@]}")
    if [ "$DRY" -eq 1 ]; then
        echo "${cmd[*]}"
        continue
    fi
    "${cmd[@]}" > "$OUT/eps-$e.out" 2>&1 || true
    printf '| %s | %s ' "$e" "$sigma"
    summary "$dir"
done
echo
echo "run directories: $OUT"
