#!/usr/bin/env bash
# secagg_overhead.sh: what secure aggregation costs (issue 13), measured side by side in one
# invocation on one machine: the default federation (configs/fashion-async.conf and
# fashion-sync.conf: cnn, 100 clients, Dirichlet 0.5) without and with [secagg] enabled.
#
#   bench/secagg_overhead.sh [options] BUILD_DIR
#     --runs "NAME ..."   which runs, in order (default: every one below)
#     --seconds S         time limit of each run (default 900)
#     --target A          the accuracy whose wall time is measured (default 0.85)
#     --dry-run           print the commands only
#
#   runs:  async-plain     fashion-async.conf, weight_by_samples = false (as secagg weighs)
#          async-sa10      fashion-secagg-async.conf (K = 10: cohorts of the FedBuff K)
#          sync-plain      fashion-sync.conf, weight_by_samples = false
#          sync-sa10       fashion-secagg-sync.conf (K = 10: one cohort per round)
#          async-plain50   async-plain with buffer_k = 50
#          async-sa50      fashion-secagg-async.conf with cohort_size = buffer_k = 50
#          async-default   fashion-async.conf as shipped (weight_by_samples = true)
#
# Each run is `fedmq run` until the target or the time limit. Reported per run (markdown on
# stdout): wall time to the target (fedmq run's summary), the versions made then, the best
# test accuracy, the updates applied, the bytes the aggregator received per applied update
# (stats.json bytes_received / updates_applied: every frame on the updates socket, so with
# secure aggregation the keys, shares, masked upload and unmasking shares of each member,
# plus membership), and the CPU seconds of the aggregator and of the trainer process (their
# /metrics process_cpu_seconds_total, scraped every 2 s, the last scrape before the end).
# Wall times need a quiet machine: run nothing else meanwhile.
# Run directories are kept under ${SECAGG_OUT:-/tmp/fedmq-secagg-DATE}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS="async-plain async-sa10 sync-plain sync-sa10 async-plain50 async-sa50"
SECS=900 TARGET=0.85 DRY=0
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
for t in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
OUT=${SECAGG_OUT:-/tmp/fedmq-secagg-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

args_of() { # the fedmq run arguments of run $1
    local plain=(--set aggregator.weight_by_samples=false)
    case $1 in
    async-plain) echo configs/fashion-async.conf "${plain[@]}" ;;
    async-sa10) echo configs/fashion-secagg-async.conf ;;
    sync-plain) echo configs/fashion-sync.conf "${plain[@]}" ;;
    sync-sa10) echo configs/fashion-secagg-sync.conf ;;
    async-plain50) echo configs/fashion-async.conf "${plain[@]}" --set aggregator.buffer_k=50 ;;
    async-sa50) echo configs/fashion-secagg-async.conf --set aggregator.buffer_k=50 \
        --set secagg.cohort_size=50 ;;
    async-default) echo configs/fashion-async.conf ;;
    *) echo "$0: unknown run $1" >&2; return 2 ;;
    esac
}


echo "# secagg_overhead $(date -u +%Y-%m-%dT%H:%MZ) on $(fm_bench_machine)"
echo
echo "| run | time to $TARGET (s) | versions then | best accuracy | updates applied | bytes received per update | aggregator CPU (s) | trainer CPU (s) | cohorts done / aborted |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $RUNS; do
    read -r -a a <<<"$(args_of "$r")"
    dir=$OUT/$r
    cmd=("$B/fedmq" run "${a[@]}" --run-dir "$dir" --set "federation.time_limit_s=$SECS"
         --set "federation.target_accuracy=$TARGET")
    if [ "$DRY" = 1 ]; then echo "${cmd[*]}"; continue; fi
    rm -rf "$dir"
    fm_bench_scrape_cpu 9562 "$OUT/$r.agg_cpu" & s1=$!
    fm_bench_scrape_cpu 9564 "$OUT/$r.trainer_cpu" & s2=$!
    "${cmd[@]}" >"$OUT/$r.out" 2>"$OUT/$r.err" || true
    kill "$s1" "$s2" 2>/dev/null || true
    wait "$s1" "$s2" 2>/dev/null || true
    python3 - "$r" "$dir" "$OUT/$r.out" "$OUT/$r.agg_cpu" "$OUT/$r.trainer_cpu" "$TARGET" <<'PY'
import json, re, sys
name, d, out, acpu, tcpu, target = sys.argv[1:]
st = json.load(open(d + "/checkpoints/stats.json"))
text = open(out).read()
m = re.search(r"time to [0-9.]+ accuracy: ([0-9.]+) s \(model version (\d+)\)", text)
tt, ver = (m.group(1), m.group(2)) if m else ("not reached", "-")
best = 0.0
for l in open(d + "/metrics.jsonl"):
    l = l.strip()
    if l:
        best = max(best, json.loads(l)["accuracy"])
def cpu(f):
    try:
        return "%.0f" % float(open(f).read().strip())
    except Exception:
        return "-"
ap = st.get("updates_applied", 0)
per = "%.0f" % (st.get("bytes_received", 0) / ap) if ap else "-"
sa = "%d / %d" % (st.get("secagg_completed", 0), st.get("secagg_aborted", 0)) if st.get("secagg") else "-"
print("| %s | %s | %s | %.4f | %d | %s | %s | %s | %s |" % (name, tt, ver, best, ap, per, cpu(acpu), cpu(tcpu), sa))
PY
done
