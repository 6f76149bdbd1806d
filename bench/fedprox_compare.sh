#!/usr/bin/env bash
# fedprox_compare.sh: FedAvg vs FedProx on strongly non-IID data, final accuracy of the
# global model and of the clients' held-out slices (population-level validation).
#
#   bench/fedprox_compare.sh [--rounds N] [--alpha A] [--mu MU] [--out FILE] [BUILD_DIR]
#
# Runs, one after the other, `fedmq run configs/fashion-sync.conf` with
#   federation.partition = dirichlet:A (default 0.1), num_rounds = N (default 30),
#   aggregation_strategy = fedavg, then = fedprox with federation.mu = MU (default 0.01),
# everything else as in the config (100 clients, cnn, 10 per round, 1 local epoch, seed 1:
# both runs select the same cohorts and hold out the same 10% of every client). Accuracy
# figures do not depend on machine load (a sync round's content does not depend on timing),
# but the wall times printed do. Reports, from each run's last metrics record: test
# accuracy, test loss, and over the clients' held-out slices mean, worst, 10th percentile
# and the fraction below 0.70; saved to bench/results/fedprox_compare-<date>.md with the
# plot of both runs. Exit 0, 1 if a run produced no metrics, 2 bad input.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="$0 $*"
ROUNDS=30 ALPHA=0.1 MU=0.01 OUT="" BUILD=$REPO/build
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
    --alpha) ALPHA=${2:?--alpha needs a value}; shift 2 ;;
    --mu) MU=${2:?--mu needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fedprox_compare: unknown option $1" >&2; exit 2 ;;
    *) BUILD=$1; shift ;;
  esac
done
[ -x "$BUILD/fedmq" ] || { echo "fedprox_compare: $BUILD/fedmq not built" >&2; exit 2; }
OUT=${OUT:-$REPO/bench/results/fedprox_compare-$(date +%Y%m%d).md}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-fedprox.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
export OPENBLAS_NUM_THREADS=1
common=(--set "federation.partition=dirichlet:$ALPHA" --set "federation.num_rounds=$ROUNDS"
        --set federation.target_accuracy=1 --set federation.time_limit_s=1800)
for algo in fedavg fedprox; do
  extra=(--set "federation.aggregation_strategy=$algo")
  [ "$algo" = fedprox ] && extra+=(--set "federation.mu=$MU")
  echo "[fedprox_compare] $algo: $ROUNDS rounds on dirichlet:$ALPHA"
  "$BUILD/fedmq" run "$REPO/configs/fashion-sync.conf" "${common[@]}" "${extra[@]}" \
      --run-dir "$RUN/$algo" > "$RUN/$algo.out" 2>&1 || true
  tail -12 "$RUN/$algo.out"
  [ -s "$RUN/$algo/metrics.jsonl" ] || { echo "fedprox_compare: $algo produced no metrics" >&2; exit 1; }
done
"$BUILD/fedmq" plot "$RUN/fedavg/metrics.jsonl" "$RUN/fedprox/metrics.jsonl" --label FedAvg \
    --label "FedProx mu=$MU" --title "dirichlet:$ALPHA, 100 clients, cnn, sync, 10 per round" \
    -o "${OUT%.md}.png" || echo "[fedprox_compare] plot not drawn"
python3 - "$RUN" "$OUT" "$ROUNDS" "$ALPHA" "$MU" "${OUT%.md}.png" "$CMDLINE" <<'PY'
import json, sys, os
run, out, rounds, alpha, mu, png, cmd = sys.argv[1:8]
rows = []
for algo in ("fedavg", "fedprox"):
    recs = [json.loads(l) for l in open(os.path.join(run, algo, "metrics.jsonl")) if l.strip()]
    last = recs[-1]
    p = last.get("population", {})
    t = last["time"] - recs[0]["time"]
    rows.append((algo if algo == "fedavg" else f"fedprox (mu={mu})", last["version"],
                 last["accuracy"], last["loss"], p.get("mean"), p.get("min"),
                 p.get("worst_client"), p.get("p10"), p.get("below"), t))
lines = [f"# FedAvg vs FedProx, dirichlet:{alpha}, {rounds} sync rounds", "",
         f"Command: `{cmd}` (configs/fashion-sync.conf: 100 clients, cnn, 10 clients per round,",
         "1 local epoch, lr 0.01, momentum 0.9, batch 32, seed 1, 10% of each client held out).", "",
         "| algorithm | version | test acc | test loss | clients mean | worst client | p10 | below 0.70 | wall s |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.4f} (client {r[6]}) "
                 f"| {r[7]:.4f} | {100*r[8]:.0f}% | {r[9]:.0f} |")
lines += ["", f"Plot: {os.path.basename(png)}", ""]
text = "\n".join(lines)
print(text)
open(out, "w").write(text)
PY
echo "[fedprox_compare] report: $OUT"
