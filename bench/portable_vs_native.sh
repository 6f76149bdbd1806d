#!/usr/bin/env bash
# portable_vs_native.sh: what the package's portable build costs in training throughput.
# The .deb is built with -DFM_NATIVE=OFF (no -march=native, so it runs on any x86-64 CPU;
# scripts/build-deb.sh); developer builds default to -DFM_NATIVE=ON. This builds train_bench
# both ways and measures them side by side.
#
#   bench/portable_vs_native.sh [--repeat N] [--seconds S] [--warmup W] [--models "mlp cnn"]
#                               [--batches "32 64"] [--threads "1 2"] [--out FILE]
#                               [--variant NAME="CMAKE OPTIONS"]... [--build-only] [--work DIR]
#
# Variants (each a Release build of its own under DIR, default <repo>/build-bench-NAME):
#   native    -DFM_NATIVE=ON
#   portable  -DFM_NATIVE=OFF
#   --variant NAME="OPTS" adds one (e.g. --variant clones="-DFM_NATIVE=OFF -DFM_CLONES=ON"
#   once function multi-versioning exists); ratios are against the first variant (native).
# Every model x batch x threads cell (the grid of run_train_bench.sh: mlp, cnn x batch 32,
# 64 x threads 1, 2; 10 s timed after 2 s warm-up per measurement) runs the variants
# alternately (native, portable, native, ...) so that drift of the machine affects all;
# --repeat N takes the median of N. OPENBLAS_CORETYPE is forced for all (default SkylakeX,
# FM_BENCH_CORE=Haswell etc.) and checked: OpenBLAS picks its kernels at run time whatever
# fedmq was compiled with, so the difference is fedmq's own loops (im2col, element-wise
# layers, optimiser, batch gather).
#   --build-only   build the variants and stop (checks that both compile)
# Run it alone on a quiet machine (each measurement uses up to T cores; ~4 min per repeat
# with the defaults). Prints one markdown report (also to --out FILE, default
# bench/results/portable-<date>.md).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
CMDLINE="$0 $*"
die() { echo "portable_vs_native: $*" >&2; exit 2; }

SECONDS_PER=10 WARMUP=2 REPEAT=1 OUT="" BUILD_ONLY=0 WORK=$REPO
MODELS="mlp cnn" BATCHES="32 64" THREADS="1 2"
VNAMES=(native portable)
VOPTS=("-DFM_NATIVE=ON" "-DFM_NATIVE=OFF")
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_PER=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --repeat) REPEAT=${2:?}; shift ;;
    --models) MODELS=${2:?}; shift ;;
    --batches) BATCHES=${2:?}; shift ;;
    --threads) THREADS=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --work) WORK=${2:?}; shift ;;
    --variant) [[ "${2:-}" == *=* ]] || die "--variant NAME=\"OPTIONS\""
        VNAMES+=("${2%%=*}"); VOPTS+=("${2#*=}"); shift ;;
    --build-only) BUILD_ONLY=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "$1: unknown argument (see --help)" ;;
    esac
    shift
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat: '$REPEAT' is not a positive integer"

# ---- build ----
BENCH=()
for i in "${!VNAMES[@]}"; do
    dir=$WORK/build-bench-${VNAMES[$i]}
    echo "portable_vs_native: building ${VNAMES[$i]} (${VOPTS[$i]}) in $dir" >&2
    # shellcheck disable=SC2086  # the options are words
    cmake -S "$REPO" -B "$dir" -DCMAKE_BUILD_TYPE=Release --no-warn-unused-cli ${VOPTS[$i]} \
        >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    cmake --build "$dir" -j"$(nproc)" --target train_bench >>"$dir.log" 2>&1 ||
        { tail -n 30 "$dir.log" >&2; exit 1; }
    native=no
    grep -q -- '-march=native' "$dir/compile_commands.json" && native=yes
    echo "portable_vs_native:   ${VNAMES[$i]}: $dir/train_bench (-march=native: $native)" >&2
    BENCH+=("$dir/train_bench")
done
[ "$BUILD_ONLY" = 1 ] && exit 0

# ---- measure ----
DATA=/usr/share/datasets/fashion-mnist
[ -e "$DATA/train-images-idx3-ubyte.gz" ] || [ -e "$DATA/train-images-idx3-ubyte" ] ||
    die "Fashion-MNIST not found in $DATA: apt-get install dataset-fashion-mnist"
CORE=${FM_BENCH_CORE:-SkylakeX}
export OPENBLAS_CORETYPE=$CORE FEDMQ_BLAS_AUTOCORE=0
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS GOTO_NUM_THREADS || true
if [ -z "$OUT" ]; then
    mkdir -p "$REPO/bench/results"
    OUT=$REPO/bench/results/portable-$(date +%Y%m%d-%H%M%S).md
fi
RAW=$(mktemp "${TMPDIR:-/tmp}/portable_vs_native.XXXXXX")
trap 'rm -f "$RAW"' EXIT
TIMEOUT=$(awk -v s="$SECONDS_PER" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 180 }')
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
median() {
    sort -g | awk '{v[NR] = $1} END { if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# run VARIANT_INDEX MODEL BATCH THREADS: one measurement, "name line" appended to $RAW
run() {
    local out line
    out=$(timeout "$TIMEOUT" "${BENCH[$1]}" --model "$2" --batch "$3" --threads "$4" \
        --seconds "$SECONDS_PER" --warmup "$WARMUP" 2>&1) ||
        { echo "portable_vs_native: ${VNAMES[$1]} failed:" >&2; echo "$out" >&2; exit 1; }
    line=$(grep -E '^fedmq model=' <<<"$out" | tail -n 1) ||
        { echo "portable_vs_native: ${VNAMES[$1]} printed no result line" >&2; echo "$out" >&2; exit 1; }
    [ "$(field "$line" core | tr '[:upper:]' '[:lower:]')" = "${CORE,,}" ] ||
        { echo "portable_vs_native: ${VNAMES[$1]} ran on core '$(field "$line" core)', not $CORE" >&2; exit 1; }
    echo "${VNAMES[$1]} $line" >>"$RAW"
    echo "  ${VNAMES[$1]} $line" >&2
}
ROWS=()
for model in $MODELS; do
    for batch in $BATCHES; do
        for t in $THREADS; do
            echo "[$model batch=$batch threads=$t]" >&2
            for ((r = 1; r <= REPEAT; r++)); do
                for i in "${!VNAMES[@]}"; do run "$i" "$model" "$batch" "$t"; done
            done
            row="| $model | $batch | $t |"
            base=""
            for i in "${!VNAMES[@]}"; do
                v=$(grep "^${VNAMES[$i]} fedmq model=$model " "$RAW" | grep " batch=$batch " |
                    grep " threads=$t " | while read -r _ l; do field " $l" samples_per_s; done | median)
                [ -z "$base" ] && base=$v
                row="$row $v |"
                [ "$i" -gt 0 ] && row="$row $(awk -v a="$v" -v b="$base" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }') |"
            done
            ROWS+=("$row")
        done
    done
done
head="| model | batch | threads | ${VNAMES[0]} samples/s |"
sep="|---|---:|---:|---:|"
for i in "${!VNAMES[@]}"; do
    [ "$i" -eq 0 ] && continue
    head="$head ${VNAMES[$i]} samples/s | ${VNAMES[$i]}/${VNAMES[0]} |"
    sep="$sep---:|---:|"
done
{
    echo "# fedmq training throughput: portable build vs -march=native"
    echo
    echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z'); command: \`$CMDLINE\`"
    echo "- CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1) ($(nproc) CPUs);" \
         "flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512bw|avx512vl' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- OPENBLAS_CORETYPE=$CORE for every variant (OpenBLAS dispatches at run time either way)"
    for i in "${!VNAMES[@]}"; do echo "- ${VNAMES[$i]}: ${VOPTS[$i]} (${BENCH[$i]})"; done
    echo "- per measurement: ${WARMUP} s warm-up + ${SECONDS_PER} s timed; median of $REPEAT; variants alternate"
    echo "- git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "$head"
    echo "$sep"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "<details><summary>raw result lines</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo "</details>"
} | tee "$OUT"
echo "portable_vs_native: wrote $OUT" >&2
