#!/usr/bin/env bash
# scale.sh: the scaling table of issue 15, as markdown on stdout.
#
#   bench/scale.sh [options] BUILD_DIR
#     --models "M ..."     models (default "cnn mlp")
#     --clients "N ..."    federation sizes (default "10 100 1000")
#     --seconds S          length of each federation run (default 120; the aggregator's
#                          updates_per_s is over its last 30 s)
#     --subscribers L      fanout subscriber counts (default 100,1000)
#     --versions V         fanout versions timed per count (default 5)
#     --updates U          agg_ingest updates per run (default 400)
#     --parts "P ..."      which rows: fed ingest fanout (default all three)
#     --quick              a smoke test: 20 s runs, 2 fanout versions, 100 ingest updates
#
# Rows, per model:
#   1. a real federation per N: fedmq-broker, fedmq-aggregator (async, the default config)
#      and one fedmq-trainer hosting all N clients ([federation] num_clients N, [trainer]
#      clients 0-(N-1), 2 workers), no evaluator, on free loopback ports, for S seconds:
#      the aggregator's stats.json updates_per_s and updates_applied, the aggregator's and
#      the trainer's VmRSS / VmHWM at the end (/proc/PID/status). Each client trains one
#      epoch over its own partition (60,000 x 0.9 / N samples), so updates/s grows with N:
#      the trainer's cost per update shrinks; the trainer's RSS at 100 and 1,000 is the
#      "virtual clients" row;
#   2. the aggregator's cost per update against the clients it knows: bench/agg_ingest
#      --clients N (updates spread over N clients of N/10 trainers, each announced by
#      HELLO) at each N; the last column is the rate relative to the first N (flat: 1.00);
#   3. the broker's fanout: bench/fanout --subscribers L (the time from a new MODEL to the
#      last of N subscribers, median / p90 / max over V versions; broker VmRSS / VmHWM).
# Timings need a quiet machine (2 cores: the trainer takes both); RSS figures do not.
# Run logs are kept under ${SCALE_OUT:-/tmp/fedmq-scale-DATE}.
set -euo pipefail

MODELS="cnn mlp" CLIENTS="10 100 1000" SECS=120 SUBS=100,1000 VERSIONS=5 UPDATES=400
PARTS="fed ingest fanout"
while [ $# -gt 0 ]; do
    case $1 in
    --models) MODELS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    --versions) VERSIONS=$2; shift 2 ;;
    --updates) UPDATES=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --quick) SECS=20 VERSIONS=2 UPDATES=100; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
for t in fedmq-broker fedmq-aggregator fedmq-trainer agg_ingest fanout; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
OUT=${SCALE_OUT:-/tmp/fedmq-scale-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PIDS=()
# stop what this script started: SIGTERM, at most 20 s, then SIGKILL
cleanup() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 100); do
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && break 1; p=""; done
        [ -z "${p:-}" ] && break
        sleep 0.2
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# five loopback ports free at once (bound together, then released)
ports() {
    python3 - <<'PYEOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
}

# "VmRSS VmHWM" of a pid in MB ("- -" when gone)
rss() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 }
         END { if (r == "") print "- -"; else printf "%.1f %.1f\n", r / 1024, h / 1024 }' \
        "/proc/$1/status" 2>/dev/null || echo "- -"
}

# a value of the aggregator's stats.json
jstat() {
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1])).get(sys.argv[2], "-")
print("%.1f" % v if isinstance(v, float) else v)' "$1" "$2" 2>/dev/null || echo -
}

# one federation: model, N -> $OUT/fed-M-N/result: "ups applied agg_rss agg_hwm tr_rss tr_hwm"
federation() {
    local model=$1 n=$2 dir="$OUT/fed-$1-$2" p
    mkdir -p "$dir"
    read -r pub snap upd aggm acks <<<"$(ports)"
    local common=(--set "federation.model=$model" --set "federation.num_clients=$n"
        --set "trainer.clients=0-$((n - 1))" --set "federation.time_limit_s=$((SECS + 600))"
        --set "endpoints.model_pub=tcp://127.0.0.1:$pub"
        --set "endpoints.snapshot=tcp://127.0.0.1:$snap"
        --set "endpoints.updates=tcp://127.0.0.1:$upd"
        --set "endpoints.aggregator_models=tcp://127.0.0.1:$aggm"
        --set "endpoints.acks=tcp://127.0.0.1:$acks"
        --set "aggregator.checkpoint_dir=$dir/ckpt"
        --set broker.metrics_addr=off --set aggregator.metrics_addr=off
        --set trainer.metrics_addr=off)
    "$B/fedmq-broker" "${common[@]}" >"$dir/broker.log" 2>&1 &
    PIDS+=($!)
    "$B/fedmq-aggregator" "${common[@]}" >"$dir/aggregator.log" 2>&1 &
    local agg=$!
    PIDS+=($agg)
    "$B/fedmq-trainer" "${common[@]}" >"$dir/trainer.log" 2>&1 &
    local tr=$!
    PIDS+=($tr)
    sleep "$SECS"
    local a t
    a=$(rss "$agg")
    t=$(rss "$tr")
    for p in "$agg" "$tr"; do kill -0 "$p" 2>/dev/null || echo "scale: $model $n: pid $p died (logs: $dir)" >&2; done
    cleanup
    echo "$(jstat "$dir/ckpt/stats.json" updates_per_s) $(jstat "$dir/ckpt/stats.json" updates_applied) $a $t" >"$dir/result"
}

echo "# fedmq scaling ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${SECS} s runs)"
echo
echo "Command: \`bench/scale.sh --models \"$MODELS\" --clients \"$CLIENTS\" --seconds $SECS --subscribers $SUBS --versions $VERSIONS --updates $UPDATES --parts \"$PARTS\"\`"
for model in $MODELS; do
    echo
    echo "## $model"
    part() { [[ " $PARTS " == *" $1 "* ]]; }
    if part fed; then
    echo
    echo "Federation (broker + aggregator + one trainer of N clients, ${SECS} s):"
    echo
    echo "| clients | updates/s (last 30 s) | updates applied | aggregator RSS / peak MB | trainer RSS / peak MB |"
    echo "|---:|---:|---:|---:|---:|"
    for n in $CLIENTS; do
        federation "$model" "$n"
        read -r ups applied arss ahwm trss thwm <"$OUT/fed-$model-$n/result"
        echo "| $n | $ups | $applied | $arss / $ahwm | $trss / $thwm |"
    done
    fi
    if part ingest; then
    echo
    echo "Aggregator cost per update (bench/agg_ingest --clients N, $UPDATES updates):"
    echo
    echo "| clients | updates/s | aggregator peak MB | vs first |"
    echo "|---:|---:|---:|---:|"
    base=""
    for n in $CLIENTS; do
        line=$("$B/agg_ingest" --model "$model" --updates "$UPDATES" --clients "$n" 2>>"$OUT/agg_ingest.err" | grep '^agg ' || true)
        echo "$line" >>"$OUT/agg_ingest.txt"
        ups=$(sed -n 's/.* updates_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
        peak=$(sed -n 's/.* peak_rss_mb=\([0-9.]*\).*/\1/p' <<<"$line")
        base=${base:-$ups}
        rel=$(awk -v a="$ups" -v b="$base" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }')
        echo "| $n | ${ups:--} | ${peak:--} | $rel |"
    done
    fi
    if part fanout; then
    echo
    echo "Broker fanout (bench/fanout, $VERSIONS versions per count; one process holds the subscribers):"
    echo
    echo "| subscribers | median ms | p90 ms | max ms | broker RSS joined / after MB | broker peak MB |"
    echo "|---:|---:|---:|---:|---:|---:|"
    "$B/fanout" --subscribers "$SUBS" --versions "$VERSIONS" --model "$model" \
        >"$OUT/fanout-$model.txt" 2>"$OUT/fanout-$model.err" || true
    while read -r line; do
        v() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" <<<"$line"; }
        echo "| $(v subscribers) | $(v median_ms) | $(v p90_ms) | $(v max_ms) | $(v broker_rss_mb_joined) / $(v broker_rss_mb_after) | $(v broker_hwm_mb) |"
    done < <(grep '^fanout ' "$OUT/fanout-$model.txt")
    if [ -s "$OUT/fanout-$model.err" ]; then echo; echo "fanout: $(head -1 "$OUT/fanout-$model.err")"; fi
    fi
done
echo
echo "Raw lines and logs: $OUT"
