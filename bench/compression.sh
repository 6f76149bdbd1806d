#!/usr/bin/env bash
# compression.sh: what each update encoding saves and costs (issue 15), side by side in one
# invocation on one machine: the README's main job (configs/fedmq.conf: cnn, 100 clients,
# Dirichlet 0.5, async FedBuff) with each [trainer] encoding, every run for the same wall time.
#
#   bench/compression.sh [options] BUILD_DIR
#     --runs "NAME ..."   which runs, in order (default: every one below)
#     --seconds S         wall time of each run (default 600)
#     --target A          the accuracy whose time and bytes are measured (default 0.85)
#     --set KEY=VALUE     one more config override for every run (repeatable)
#     --dry-run           print the commands only
#
#   runs:  fp32 fp16 bf16 int8, and topkN[-tensor][-classic][-fp16|-bf16|-int8]; each
#          with +zstd. topkN = topk_fraction N/100 (N may have decimals) with step-ahead
#          error feedback and one k over the whole model (the defaults), float32 values;
#          -tensor: k per tensor; -classic: classic error feedback (step-ahead 0); -int8
#          etc.: the values in that type; +zstd: zstd level 3
#          (default: fp32 fp16 int8 topk10 topk1, each +-zstd, topk1-classic and
#          topk1-tensor-classic)
#
# Each run is `fedmq run` for exactly S seconds (target_accuracy 1.0, so it never stops
# early). Reported per run (markdown on stdout): bytes per update (the aggregator's
# stats.json "encodings": bytes of the update frames folded / their number), the ratio of
# fp32's bytes per update to it, the wall time to the target (the first scored version at or
# above it: its metrics.jsonl "time" minus stats.json "started", the aggregator's start),
# the updates applied by then (its version x the updates per version of the run: K in
# async FedBuff) and the bytes to the target (those updates x bytes per update), the best accuracy and the mean of the last 5 scored versions (final accuracy at
# the same wall time for every run), and the trainer's CPU seconds (its /metrics
# process_cpu_seconds_total, scraped every 2 s). Needs a quiet machine: run nothing else.
# Run directories are kept under ${COMPRESSION_OUT:-/tmp/fedmq-compression-DATE}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS="fp32 fp32+zstd fp16 fp16+zstd int8 int8+zstd topk10 topk10+zstd topk1 topk1+zstd topk1-classic topk1-tensor-classic"
SECS=600 TARGET=0.85 DRY=0
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BUILD_DIR (see --help)" >&2; exit 2; }
B=$(cd "$1" && pwd)
for t in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    [ -x "$B/$t" ] || { echo "$B/$t: not built" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
OUT=${COMPRESSION_OUT:-/tmp/fedmq-compression-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

args_of() { # the [trainer] overrides of run $1
    local base=${1%+zstd} z=() o=() rest pct opt opts
    [ "$base" != "$1" ] && z=(--set trainer.zstd_level=3)
    case $base in
    fp32) ;;
    fp16 | bf16 | int8) o=(--set "trainer.encoding=$base") ;;
    topk*)
        rest=${base#topk} pct=${rest%%-*}
        [[ $pct =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "$0: unknown run $1" >&2; return 2; }
        o=(--set "trainer.topk_fraction=$(awk -v p="$pct" 'BEGIN { print p / 100 }')")
        IFS=- read -r -a opts <<<"${rest#"$pct"}"
        for opt in "${opts[@]}"; do
            case $opt in
            "") ;;
            tensor) o+=(--set trainer.topk_scope=tensor) ;;
            classic) o+=(--set trainer.error_feedback_step_ahead=0) ;;
            fp16 | bf16 | int8) o+=(--set "trainer.encoding=$opt") ;;
            *) echo "$0: unknown run $1" >&2; return 2 ;;
            esac
        done
        ;;
    *) echo "$0: unknown run $1" >&2; return 2 ;;
    esac
    echo "${o[@]}" "${z[@]}"
}


echo "# compression $(date -u +%Y-%m-%dT%H:%MZ) git $(git rev-parse --short HEAD 2>/dev/null || echo -) on $(fm_bench_machine), $SECS s per run"
echo
echo "| run | bytes per update | fp32 / this | time to $TARGET (s) | updates then | bytes to $TARGET (MB) | best accuracy | mean of last 5 | trainer CPU (s) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in $RUNS; do # every name checked before the first run starts
    args_of "$r" >/dev/null || exit 2
done
FP32_BYTES=
for r in $RUNS; do
    read -r -a a <<<"$(args_of "$r")"
    dir=$OUT/$r
    cmd=("$B/fedmq" run configs/fedmq.conf --run-dir "$dir" --set "federation.time_limit_s=$SECS"
         --set federation.target_accuracy=1.0 "${a[@]}" "${EXTRA[@]}")
    if [ "$DRY" = 1 ]; then echo "${cmd[*]}"; continue; fi
    rm -rf "$dir"
    fm_bench_scrape_cpu 9564 "$OUT/$r.trainer_cpu" & s1=$!
    "${cmd[@]}" >"$OUT/$r.out" 2>"$OUT/$r.err" || true
    kill "$s1" 2>/dev/null || true
    wait "$s1" 2>/dev/null || true
    line=$(/usr/bin/python3 - "$r" "$dir" "$OUT/$r.trainer_cpu" "$TARGET" "${FP32_BYTES:-0}" <<'PY'
import json, sys
name, d, tcpu, target, fp32 = sys.argv[1:]
target, fp32 = float(target), float(fp32)
st = json.load(open(d + "/checkpoints/stats.json"))
enc = st.get("encodings", {})
n = sum(e["updates"] for e in enc.values())
per = sum(e["bytes"] for e in enc.values()) / n if n else float("nan")
recs = [json.loads(l) for l in open(d + "/metrics.jsonl") if l.strip()]
hit = next((x for x in recs if x["accuracy"] >= target), None)
tt = "%.1f" % (hit["time"] - st["started"]) if hit else "not reached"
# updates folded per version: K in async FedBuff (every version is one full buffer)
per_version = st["updates_applied"] / st["version"] if st.get("version") else 0
upd = round(hit["version"] * per_version) if hit else None
upd_s = str(upd) if hit else "-"
mb = "%.0f" % (upd * per / 1e6) if hit else "-"
best = max((x["accuracy"] for x in recs), default=0.0)
last5 = [x["accuracy"] for x in recs[-5:]]
mean5 = sum(last5) / len(last5) if last5 else 0.0
try:
    cpu = "%.0f" % float(open(tcpu).read().strip())
except Exception:
    cpu = "-"
ratio = "%.2f" % (fp32 / per) if fp32 > 0 else "1.00" if name == "fp32" else "-"
print("%.0f|| %s | %.0f | %s | %s | %s | %s | %.4f | %.4f | %s |" %
      (per, name, per, ratio, tt, upd_s, mb, best, mean5, cpu))
PY
)
    [ "$r" = fp32 ] && FP32_BYTES=${line%%|*}
    echo "|${line#*||}"
done
