#!/usr/bin/env bash
# acks_compare.sh: the cost of acknowledged delivery ([aggregator] acks: a checkpoint per
# version before it is published, ACKs once it committed, trainers keeping and resending)
# against the behaviour before it (acks = false: a checkpoint every checkpoint_every
# versions, updates unacknowledged), measured side by side in one run:
#   - aggregator ingest: agg_ingest --acks both (off then on, same frames) for cnn K=10
#     (300 updates) and mlp K=10 (2000 updates): updates/s and the on/off ratio; with acks
#     on the clock stops when the last "applied" ACK arrived (durable), not when folded.
#     K=1 too: a commit per update writes one parameter-sized record and syncs per update,
#     which is what a per-fold log (the alternative design: each update's delta logged
#     durably before its ACK) would cost at least;
#   - time to 0.85 of the README's main job (fedmq run configs/fedmq.conf), acks off and on
#     alternating, N runs each (default 1): seconds and model version at 0.85.
#
#   bench/acks_compare.sh [--runs N] [--skip-run] [--skip-ingest] BUILD_DIR
#
# Run from the source tree, alone on a quiet machine. Prints one markdown report.
set -euo pipefail
RUNS=1 DO_RUN=1 DO_INGEST=1
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --skip-run) DO_RUN=0; shift ;;
    --skip-ingest) DO_INGEST=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR" >&2; exit 2; }
B=$(cd "$1" && pwd)
[ -x "$B/fedmq" ] && [ -x "$B/agg_ingest" ] || { echo "$B: fedmq or agg_ingest not built" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# fedmq: acknowledged delivery on vs off ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "- source $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $B"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; checkpoints on $(df -T "$tmp" | awk 'NR==2 {print $2}')"
echo

if [ "$DO_INGEST" -eq 1 ]; then
    echo "## Aggregator ingest (agg_ingest --acks both)"
    echo
    echo "| model | K | updates | off: updates/s | on: updates/s (durable + ACK) | on / off |"
    echo "|---|---:|---:|---:|---:|---:|"
    for args in "--model cnn --k 10 --updates 300" "--model mlp --k 10 --updates 2000" \
                "--model cnn --k 1 --updates 100" "--model mlp --k 1 --updates 500"; do
        out=$tmp/ingest.txt
        TMPDIR=$tmp "$B/agg_ingest" $args --acks both >"$out" 2>&1 || true
        line=$(grep -m1 '^acks ' "$out" || echo "")
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
    echo "## Time to 0.85 (fedmq run configs/fedmq.conf, --set aggregator.acks=...)"
    echo
    echo "| run | acks | seconds to 0.85 | model version | updates acknowledged | resent |"
    echo "|---:|---|---:|---:|---:|---:|"
    declare -A sum=([false]=0 [true]=0) cnt=([false]=0 [true]=0)
    for r in $(seq 1 "$RUNS"); do
        for a in false true; do
            out=$tmp/run-$a-$r.txt
            "$B/fedmq" run configs/fedmq.conf --set aggregator.acks=$a \
                --run-dir "$tmp/rundir-$a-$r" >"$out" 2>&1 || true
            line=$(grep -m1 "time to 0.85 accuracy" "$out" || echo "")
            secs=$(sed -E 's/.*accuracy: ([0-9.]+) s.*/\1/' <<<"$line")
            ver=$(sed -E 's/.*model version ([0-9]+).*/\1/' <<<"$line")
            st=$tmp/rundir-$a-$r/checkpoints/stats.json
            acked=$(python3 -c "import json; print(json.load(open('$st')).get('acked', '-'))" 2>/dev/null || echo -)
            resent=$(grep -ho 'resent [0-9]*' "$tmp"/rundir-$a-$r/trainer*.log 2>/dev/null | tail -1 | awk '{print $2}')
            echo "| $r | $a | ${secs:-not reached} | ${ver:--} | $acked | ${resent:--} |"
            if [ -n "$line" ]; then
                sum[$a]=$(python3 -c "print(${sum[$a]} + $secs)")
                cnt[$a]=$((cnt[$a] + 1))
            fi
        done
    done
    if [ "${cnt[false]}" -gt 0 ] && [ "${cnt[true]}" -gt 0 ]; then
        python3 -c "
off = ${sum[false]} / ${cnt[false]}; on = ${sum[true]} / ${cnt[true]}
print(); print('mean time to 0.85: off %.1f s, on %.1f s: on / off **%.2f**' % (off, on, on / off))"
    fi
    echo
fi
