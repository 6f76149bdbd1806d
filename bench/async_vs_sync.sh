#!/usr/bin/env bash
# async_vs_sync.sh: wall time to a test accuracy, fedmq async (FedBuff) vs fedmq sync
# (FedAvg rounds), on a simulated fleet with heterogeneous device speeds and dropouts.
#
#   bench/async_vs_sync.sh [--sigma 1] [--dropout 0.1] [--target 0.85] [--limit S]
#                          [--round-timeout S] [--workers W] [--out FILE] [BUILD_DIR]
#
# Runs `fedmq run configs/fashion-async.conf` then `configs/fashion-sync.conf` (the two
# differ only in [federation] mode: 100 clients, Dirichlet(0.5), cnn, 9 local steps at lr
# 0.05, FedAvgM 0.5, 10 clients per round = FedBuff K 10, s(tau) = 1/sqrt(1+tau)), both with
# the same overrides:
#   trainer.slowdown_sigma = SIGMA (default 1): client k's device takes f_k = exp(SIGMA*N(0,1))
#       times the real compute (extra wall time after it; f_k is seeded per client, so the
#       same clients are slow in both runs),
#   trainer.dropout_prob = DROPOUT (default 0.1): a training is abandoned part-way,
#   trainer.workers = W (default 10 = clients_per_round): 10 devices train at once in both
#       modes (a device that "sleeps" out its slowdown does not hold a CPU core),
#   aggregator.round_timeout_s = S (default 30, sync only: a round with a dropout waits for
#       it), federation.target_accuracy = TARGET, federation.time_limit_s = LIMIT (1200).
# Reports the wall time (from the initial model's evaluation) to TARGET and to 0.80 for
# each, the ratio async/sync (a bound when sync does not reach it within LIMIT), versions,
# rounds and updates; saved to bench/results/async_vs_sync-<date>.md with the plot.
# Run it alone on a quiet machine. Exit 0 report written, 1 a run produced no metrics.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="$0 $*"
SIGMA=1 DROPOUT=0.1 TARGET=0.85 LIMIT=1200 RTO=30 WORKERS=10 OUT="" BUILD=$REPO/build
while [ $# -gt 0 ]; do
  case "$1" in
    --sigma) SIGMA=${2:?}; shift 2 ;;
    --dropout) DROPOUT=${2:?}; shift 2 ;;
    --target) TARGET=${2:?}; shift 2 ;;
    --limit) LIMIT=${2:?}; shift 2 ;;
    --round-timeout) RTO=${2:?}; shift 2 ;;
    --workers) WORKERS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "async_vs_sync: unknown option $1" >&2; exit 2 ;;
    *) BUILD=$1; shift ;;
  esac
done
[ -x "$BUILD/fedmq" ] || { echo "async_vs_sync: $BUILD/fedmq not built" >&2; exit 2; }
OUT=${OUT:-$REPO/bench/results/async_vs_sync-$(date +%Y%m%d).md}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-avs.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
export OPENBLAS_NUM_THREADS=1
sets=(--set "trainer.slowdown_sigma=$SIGMA" --set "trainer.dropout_prob=$DROPOUT"
      --set "trainer.workers=$WORKERS" --set "aggregator.round_timeout_s=$RTO"
      --set "federation.target_accuracy=$TARGET" --set "federation.time_limit_s=$LIMIT")
echo "[async_vs_sync] load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in async sync; do
  echo "[async_vs_sync] $mode: sigma $SIGMA, dropout $DROPOUT, $WORKERS workers, target $TARGET"
  "$BUILD/fedmq" run "$REPO/configs/fashion-$mode.conf" "${sets[@]}" --run-dir "$RUN/$mode" \
      > "$RUN/$mode.out" 2>&1 || true
  tail -14 "$RUN/$mode.out"
  [ -s "$RUN/$mode/metrics.jsonl" ] || { echo "async_vs_sync: $mode produced no metrics" >&2; exit 1; }
  cp "$RUN/$mode/checkpoints/stats.json" "$RUN/$mode.stats.json" 2>/dev/null || true
done
"$BUILD/fedmq" plot "$RUN/async/metrics.jsonl" "$RUN/sync/metrics.jsonl" --label "async (FedBuff K=10)" \
    --label "sync (FedAvg, 10 per round)" --title "sigma $SIGMA, dropout $DROPOUT, 100 clients, cnn" \
    -o "${OUT%.md}.png" || echo "[async_vs_sync] plot not drawn"
python3 - "$RUN" "$OUT" "$TARGET" "$LIMIT" "$SIGMA" "$DROPOUT" "$RTO" "$WORKERS" "${OUT%.md}.png" "$CMDLINE" <<'PY'
import json, os, sys
run, out, target, limit, sigma, dropout, rto, workers, png, cmd = sys.argv[1:11]
target, limit = float(target), float(limit)
def load(mode):
    recs = [json.loads(l) for l in open(os.path.join(run, mode, "metrics.jsonl")) if l.strip()]
    t0 = recs[0]["time"]
    st = {}
    p = os.path.join(run, mode + ".stats.json")
    if os.path.exists(p):
        st = json.load(open(p))
    return recs, t0, st
def first(recs, t0, thr):
    for r in recs:
        if r["accuracy"] >= thr:
            return r["time"] - t0, r["version"]
    return None, None
res = {m: load(m) for m in ("async", "sync")}
lines = [f"# async (FedBuff) vs sync (FedAvg) with slow devices and dropouts", "",
         f"Command: `{cmd}`", "",
         f"configs/fashion-async.conf vs configs/fashion-sync.conf (differ only in mode), with "
         f"slowdown_sigma {sigma}, dropout_prob {dropout}, {workers} trainer workers, "
         f"round_timeout_s {rto} (sync), time limit {limit:.0f} s.", "",
         "| threshold | async s (version) | sync s (version) | async / sync |", "|---|---|---|---|"]
for thr in (0.80, target):
    a, av = first(res["async"][0], res["async"][1], thr)
    s, sv = first(res["sync"][0], res["sync"][1], thr)
    fa = f"{a:.0f} (v{av})" if a is not None else "not reached"
    fs = f"{s:.0f} (v{sv})" if s is not None else f"not reached in {limit:.0f}"
    if a is not None and s is not None:
        ratio = f"{a/s:.2f}"
    elif a is not None:
        ratio = f"< {a/limit:.2f}"
    else:
        ratio = "n/a"
    lines.append(f"| {thr:.2f} | {fa} | {fs} | {ratio} |")
lines.append("")
for m in ("async", "sync"):
    recs, t0, st = res[m]
    last = recs[-1]
    rej = st.get("rejected", {})
    lines.append(f"- {m}: {len(recs)} evaluations, last v{last['version']} acc {last['accuracy']:.4f} at "
                 f"{last['time']-t0:.0f} s; updates applied {st.get('updates_applied','?')}, rejected "
                 f"{st.get('updates_rejected','?')} (late {rej.get('late','?')}, stale {rej.get('stale','?')}); "
                 f"rounds completed {st.get('rounds_completed','-')}, failed {st.get('rounds_failed','-')}; "
                 f"staleness mean {st.get('staleness_mean','?')}")
lines += ["", f"Plot: {os.path.basename(png)}", ""]
text = "\n".join(lines)
print(text)
open(out, "w").write(text)
PY
echo "[async_vs_sync] report: $OUT"
