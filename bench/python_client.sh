#!/usr/bin/env bash
# python_client.sh: what the C trainer buys over the Python client (issue 14), side by side
# in one invocation on one machine: the same cnn federation (100 IID clients of 540 training
# samples, async, FedBuff K = 10, acks on) trained by fedmq-trainer or by fedmq-py-trainer
# (PyTorch, trainer/python), with one or two cores' worth of trainers.
#
#   bench/python_client.sh [options] BUILD_DIR
#     --runs "NAME ..."   which runs, in order (default: c1 py1 c2 py2)
#     --seconds S         measuring window of each run after its warm-up (default 60)
#     --python PY         the interpreter with fedmq_client installed (default: a venv made
#                         here from trainer/python with Debian's /usr/bin/python3)
#
#   runs:  c1   fedmq-trainer, workers = 1, threads_per_worker = 1
#          py1  one fedmq-py-trainer (one torch thread)
#          c2   fedmq-trainer, workers = 2 (the default pool on 2 cores)
#          py2  two fedmq-py-trainer processes (clients 0-49 and 50-99)
#
# Each run starts a broker and an aggregator (no evaluator: the trainers have the cores),
# then the trainers; after a warm-up (the first version made, then 5 s) it reads the
# aggregator's stats.json, waits S seconds and reads it again. Reported (markdown on stdout):
# updates/s = updates the aggregator took in the window (updates_applied + updates_pending,
# all of them: none refused) / S, samples/s = updates/s x 540 (every client's training set,
# one local epoch), each run's ratio to the C run of the same width, and the trainer
# processes' resident memory at the end of the window (VmRSS, summed).
# Throughput needs a quiet machine: run nothing else meanwhile.
set -euo pipefail

RUNS="c1 py1 c2 py2"
SECS=60 PY=""
# as users run it: fedmq-py-trainer --threads 1 holds its BLAS and OpenMP pools to one thread
# itself (PYENV="env OPENBLAS_NUM_THREADS=2" shows what an unpinned pool costs)
PYENV=${PYENV:-}
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
for t in fedmq fedmq-broker fedmq-aggregator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-pybench.XXXXXX")
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$T"' EXIT
if [ -z "$PY" ]; then
    /usr/bin/python3 -m venv --system-site-packages --without-pip "$T/venv"
    cp -r "$SRC/trainer/python" "$T/pkg"
    /usr/bin/python3 -m pip --python "$T/venv/bin/python" install -q --no-index \
        --no-build-isolation --no-deps "$T/pkg" >/dev/null
    PY=$T/venv/bin/python
fi
. "$SRC/tests/cli/ports.sh" # loopback_ports

taken() { # updates the aggregator took so far: applied + pending
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["updates_applied"]+s["updates_pending"], s["version"], s["updates_rejected"])' "$1"
}

run() { # run NAME: prints "updates/s rejected"
    local name=$1 dir=$T/$1 ports
    mkdir -p "$dir"
    ports=$(loopback_ports)
    # shellcheck disable=SC2206
    local sets=($ports --set federation.model=cnn --set federation.num_clients=100
        --set federation.partition=iid --set federation.holdout=0.1 --set federation.seed=1
        --set aggregator.buffer_k=10 --set aggregator.checkpoint_dir="$dir/ckpt"
        --set aggregator.max_staleness=1000 --set federation.time_limit_s=0)
    "$B/fedmq-broker" --config "$SRC/configs/fedmq.conf" "${sets[@]}" >"$dir/broker.log" 2>&1 &
    PIDS+=($!)
    "$B/fedmq-aggregator" --config "$SRC/configs/fedmq.conf" "${sets[@]}" >"$dir/agg.log" 2>&1 &
    PIDS+=($!)
    case $name in
    c1) "$B/fedmq-trainer" --config "$SRC/configs/fedmq.conf" "${sets[@]}" --set trainer.workers=1 \
            --set trainer.threads_per_worker=1 >"$dir/trainer.log" 2>&1 & PIDS+=($!) ;;
    c2) "$B/fedmq-trainer" --config "$SRC/configs/fedmq.conf" "${sets[@]}" --set trainer.workers=2 \
            --set trainer.threads_per_worker=1 >"$dir/trainer.log" 2>&1 & PIDS+=($!) ;;
    py1) FEDMQ_BIN=$B $PYENV "$PY" -m fedmq_client.trainer_cli --config "$SRC/configs/fedmq.conf" \
            "${sets[@]}" --threads 1 >"$dir/py0.log" 2>&1 & PIDS+=($!) ;;
    py2) for r in 0-49 50-99; do
            FEDMQ_BIN=$B $PYENV "$PY" -m fedmq_client.trainer_cli --config "$SRC/configs/fedmq.conf" \
                "${sets[@]}" --set trainer.clients=$r --set trainer.id=py-$r --threads 1 \
                >"$dir/py-$r.log" 2>&1 &
            PIDS+=($!)
         done ;;
    *) echo "unknown run $name" >&2; exit 2 ;;
    esac
    local st=$dir/ckpt/stats.json end=$((SECONDS + 180))
    until [ -f "$st" ] && [ "$(taken "$st" | cut -d' ' -f2)" -ge 1 ]; do
        [ $SECONDS -lt $end ] || { echo "$name: no version in 180 s" >&2; tail -3 "$dir"/*.log >&2; exit 1; }
        sleep 0.5
    done
    sleep 5
    local a b
    a=$(taken "$st" | cut -d' ' -f1)
    sleep "$SECS"
    read -r b _ rej < <(taken "$st")
    local rss=0 p kb # the trainer processes' resident memory now, MB
    for p in "${PIDS[@]:2}"; do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        rss=$((rss + ${kb:-0}))
    done
    stop_all
    awk -v a="$a" -v b="$b" -v s="$SECS" -v r="$rej" -v m="$rss" \
        'BEGIN { printf "%.3f %d %.0f\n", (b - a) / s, r, m / 1024 }'
}

echo "# python_client.sh: cnn, 100 IID clients (540 training samples each), async K = 10, ${SECS} s per run"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, torch $("$PY" -c 'import torch; print(torch.__version__)')"
echo
echo "| run | trainers | updates/s | samples/s | vs C, same cores | trainer RSS, MB | refused |"
echo "|---|---|---:|---:|---:|---:|---:|"
declare -A UPS
for r in $RUNS; do
    read -r ups rej rss < <(run "$r")
    UPS[$r]=$ups
    base=${UPS[c${r: -1}]:-}
    ratio="—"
    [ -n "$base" ] && [ "$r" != "c${r: -1}" ] && ratio=$(awk -v a="$ups" -v b="$base" 'BEGIN { printf "%.2fx", a / b }')
    case $r in
    c1) who="fedmq-trainer, 1 worker x 1 thread" ;;
    c2) who="fedmq-trainer, 2 workers x 1 thread" ;;
    py1) who="1 fedmq-py-trainer, 1 torch thread" ;;
    py2) who="2 fedmq-py-trainer, 1 torch thread each" ;;
    esac
    printf '| %s | %s | %.2f | %.0f | %s | %s | %s |\n' "$r" "$who" "$ups" "$(awk -v u="$ups" 'BEGIN { print u * 540 }')" "$ratio" "$rss" "$rej"
done
