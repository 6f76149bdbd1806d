#!/usr/bin/env bash
# compare_builds.sh: the same measurements on two builds of fedmq, side by side, alternating
# (A, B, A, B, ...) so that drift of the machine affects both. For a refactoring that must
# leave speed unchanged.
#
#   bench/compare_builds.sh [--runs N] [--skip-run] [--skip-ingest] [--skip-train]
#                           SRC_A BUILD_A SRC_B BUILD_B
#
# SRC_x is the source tree of build x (its configs/fedmq.conf is used), BUILD_x its Release
# build folder. Measured, per build:
#   - time to 0.85: `fedmq run configs/fedmq.conf` (the README's main job: cnn, 100 clients,
#     Dirichlet(0.5), async FedBuff), N runs each (default 2): seconds and model version at
#     0.85 from the run's summary;
#   - aggregator ingest: agg_ingest --model cnn --k 10 --updates 300 and --model mlp --k 10
#     --updates 2000 (updates/s, fraction of the memcpy bound, aggregator vs sink);
#   - training throughput vs PyTorch: bench/run_train_bench.sh --seconds 4 --warmup 1 (the
#     fedmq / PyTorch ratios; needs python3-torch).
# Run it alone on a quiet machine. Prints one markdown report on stdout.
set -euo pipefail
RUNS=2 DO_RUN=1 DO_INGEST=1 DO_TRAIN=1
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --skip-run) DO_RUN=0; shift ;;
    --skip-ingest) DO_INGEST=0; shift ;;
    --skip-train) DO_TRAIN=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) break ;;
    esac
done
[ $# -eq 4 ] || { echo "usage: $0 [options] SRC_A BUILD_A SRC_B BUILD_B" >&2; exit 2; }
SRC=("$1" "$3") BUILD=("$2" "$4") NAME=(A B)
for x in 0 1; do
    [ -x "${BUILD[$x]}/fedmq" ] || { echo "${BUILD[$x]}/fedmq: not built" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# fedmq: build A vs build B ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
for x in 0 1; do
    echo "- ${NAME[$x]}: ${SRC[$x]} ($(git -C "${SRC[$x]}" rev-parse --short HEAD 2>/dev/null || echo '?')), build ${BUILD[$x]}"
done
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo

if [ "$DO_RUN" -eq 1 ]; then
    echo "## Time to 0.85 (fedmq run configs/fedmq.conf)"
    echo
    echo "| run | build | seconds to 0.85 | model version |"
    echo "|---:|---|---:|---:|"
    for r in $(seq 1 "$RUNS"); do
        for x in 0 1; do
            out=$tmp/run-${NAME[$x]}-$r.txt
            (cd "${SRC[$x]}" && "${BUILD[$x]}/fedmq" run configs/fedmq.conf \
                --run-dir "$tmp/rundir-${NAME[$x]}-$r") >"$out" 2>&1 || true
            line=$(grep -m1 "time to 0.85 accuracy" "$out" || echo "")
            secs=$(sed -E 's/.*accuracy: ([0-9.]+) s.*/\1/' <<<"$line")
            ver=$(sed -E 's/.*model version ([0-9]+).*/\1/' <<<"$line")
            [ -n "$line" ] || { secs="not reached"; ver="-"; }
            echo "| $r | ${NAME[$x]} | $secs | $ver |"
            rm -rf "$tmp/rundir-${NAME[$x]}-$r"
        done
    done
    echo
fi

if [ "$DO_INGEST" -eq 1 ]; then
    echo "## Aggregator ingest (agg_ingest)"
    echo
    echo '```'
    for args in "--model cnn --k 10 --updates 300" "--model mlp --k 10 --updates 2000"; do
        for x in 0 1; do
            # shellcheck disable=SC2086
            res=$(cd "${SRC[$x]}" && "${BUILD[$x]}/agg_ingest" $args 2>/dev/null | tr '\n' ' ')
            echo "${NAME[$x]}: $res"
        done
    done
    echo '```'
    echo
fi

if [ "$DO_TRAIN" -eq 1 ]; then
    echo "## Training throughput vs PyTorch (run_train_bench.sh --seconds 4 --warmup 1)"
    echo
    for x in 0 1; do
        echo "### build ${NAME[$x]}"
        echo
        bash "${SRC[1]}/bench/run_train_bench.sh" --seconds 4 --warmup 1 --out "$tmp/train-$x.md" \
            "${BUILD[$x]}" >/dev/null 2>&1 || echo "(run_train_bench failed for ${NAME[$x]})"
        [ -f "$tmp/train-$x.md" ] && cat "$tmp/train-$x.md"
        echo
    done
fi
