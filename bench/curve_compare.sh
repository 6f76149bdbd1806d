#!/usr/bin/env bash
# curve_compare.sh: the cost of [security] mode = curve (CurveZMQ on every socket, ZAP
# allow-list, each frame's key checked against its trainer id) against mode = none,
# measured side by side in one run:
#   - aggregator ingest: agg_ingest --curve both (same frames, plain then curve) for cnn
#     K=10 (300 updates) and mlp K=10 (2000 updates), acks on (the default);
#   - time to 0.85 of the README's main job (fedmq run configs/fedmq.conf), curve off and
#     on alternating, N runs each (default 1), keys made with fedmq keygen.
#
#   bench/curve_compare.sh [--runs N] [--skip-run] [--skip-ingest] BUILD_DIR
#
# Run from the source tree, alone on a quiet machine. Prints one markdown report.
set -euo pipefail
RUNS=1 DO_RUN=1 DO_INGEST=1
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --skip-run) DO_RUN=0; shift ;;
    --skip-ingest) DO_INGEST=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR" >&2; exit 2; }
B=$(cd "$1" && pwd)
[ -x "$B/fedmq" ] && [ -x "$B/agg_ingest" ] || { echo "$B: fedmq or agg_ingest not built" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# fedmq: CurveZMQ on vs off ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "- source $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $B"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo

if [ "$DO_INGEST" -eq 1 ]; then
    echo "## Aggregator ingest (agg_ingest --acks on --curve both)"
    echo
    echo "| model | K | updates | none: updates/s | curve: updates/s | curve / none |"
    echo "|---|---:|---:|---:|---:|---:|"
    for args in "--model cnn --k 10 --updates 300" "--model mlp --k 10 --updates 2000"; do
        out=$tmp/ingest.txt
        TMPDIR=$tmp "$B/agg_ingest" $args --acks on --curve both >"$out" 2>&1 || true
        line=$(grep -m1 '^curve ' "$out" || echo "")
        if [ -z "$line" ]; then
            echo "| $args | failed: $(tail -1 "$out") |||||"
            continue
        fi
        get() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$line"; }
        n=$(sed -E 's/.*--updates ([0-9]+).*/\1/' <<<"$args")
        echo "| $(get model) | $(get k) | $n | $(get updates_per_s_off) | $(get updates_per_s_on) | **$(get on_vs_off)** |"
    done
    echo
fi

if [ "$DO_RUN" -eq 1 ]; then
    K=$tmp/keys
    mkdir -p "$K/allow"
    for spec in "broker broker" "aggregator aggregator" "evaluator evaluator" "monitor monitor"; do
        set -- $spec
        "$B/fedmq" keygen "$1" --role "$2" --dir "$K" >/dev/null
    done
    "$B/fedmq" keygen pool --role trainer --clients 0-99 --dir "$K" >/dev/null
    cp "$K/broker.cert" "$K/evaluator.cert" "$K/monitor.cert" "$K/pool.cert" "$K/allow/"
    CURVE="--set security.mode=curve --set security.allow_dir=$K/allow
 --set security.broker_cert=$K/broker.cert --set security.aggregator_cert=$K/aggregator.cert
 --set security.evaluator_cert=$K/evaluator.cert --set security.trainer_cert=$K/pool.cert
 --set security.monitor_cert=$K/monitor.cert"
    echo "## Time to 0.85 (fedmq run configs/fedmq.conf)"
    echo
    echo "| run | security | seconds to 0.85 | model version |"
    echo "|---:|---|---:|---:|"
    declare -A sum=([none]=0 [curve]=0) cnt=([none]=0 [curve]=0)
    for r in $(seq 1 "$RUNS"); do
        for m in none curve; do
            out=$tmp/run-$m-$r.txt
            extra=""
            [ "$m" = curve ] && extra=$CURVE
            "$B/fedmq" run configs/fedmq.conf $extra --run-dir "$tmp/rundir-$m-$r" >"$out" 2>&1 || true
            line=$(grep -m1 "time to 0.85 accuracy" "$out" || echo "")
            secs=$(sed -E 's/.*accuracy: ([0-9.]+) s.*/\1/' <<<"$line")
            ver=$(sed -E 's/.*model version ([0-9]+).*/\1/' <<<"$line")
            echo "| $r | $m | ${secs:-not reached} | ${ver:--} |"
            if [ -n "$line" ]; then
                sum[$m]=$(python3 -c "print(${sum[$m]} + $secs)")
                cnt[$m]=$((cnt[$m] + 1))
            fi
        done
    done
    if [ "${cnt[none]}" -gt 0 ] && [ "${cnt[curve]}" -gt 0 ]; then
        python3 -c "
off = ${sum[none]} / ${cnt[none]}; on = ${sum[curve]} / ${cnt[curve]}
print(); print('mean time to 0.85: none %.1f s, curve %.1f s: curve / none **%.2f**' % (off, on, on / off))"
    fi
    echo
fi
