#!/usr/bin/env bash
# Run one libFuzzer target the way CI does (ctest fuzz_<target> in a -DFM_FUZZ=ON build):
#   1. the committed seeds, each once, with FM_FUZZ_SEEDS=1: every seed must be VALID input
#      (the target aborts on one that is not), so a seed that stops decoding is noticed;
#   2. fuzzing for FM_FUZZ_SECONDS (default 30; 0: skipped) from a fresh COPY of the seeds in
#      WORK_DIR/corpus (new inputs go there, never into the repository), ASan leak checks
#      on, at most 1 GiB of RSS and 10 s per input; a crash, leak, timeout or OOM input is
#      written to WORK_DIR/artifacts/ and fails the test, with the command that replays it.
# usage: run.sh TARGET_BINARY SEED_DIR WORK_DIR [extra libFuzzer flags...]
set -euo pipefail
bin=$1 seeds=$2 work=$3
shift 3
secs=${FM_FUZZ_SECONDS:-30}
name=$(basename "$bin")
[ -x "$bin" ] || { echo "FAIL: $bin is not built"; exit 1; }
[ -d "$seeds" ] || { echo "FAIL: no seed corpus $seeds"; exit 1; }
mapfile -t files < <(find "$seeds" -type f | sort)
[ "${#files[@]}" -gt 0 ] || { echo "FAIL: $seeds is empty"; exit 1; }

mkdir -p "$(dirname "$work")"
echo "[$name] ${#files[@]} seeds from $seeds, each must be valid"
if ! FM_FUZZ_SEEDS=1 "$bin" "${files[@]}" >"$work.seeds.log" 2>&1; then
    cat "$work.seeds.log"
    echo "FAIL: running the seeds of $seeds: a seed that is not valid input (regenerate:"
    echo "tests/fuzz/README.md) or a crash, leak or UB report on one (above)"
    exit 1
fi

if [ "$secs" = 0 ]; then # -max_total_time=0 would mean "no limit"
    echo "[$name] FM_FUZZ_SECONDS=0: the seeds only"
    exit 0
fi
rm -rf "$work"
mkdir -p "$work/artifacts"
cp -r "$seeds" "$work/corpus"
echo "[$name] fuzzing for $secs s from a copy of the seeds in $work/corpus"
set +e
timeout --kill-after=10 $((secs + 300)) "$bin" -max_total_time="$secs" -rss_limit_mb=1024 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@" \
    "$work/corpus" >"$work/fuzz.log" 2>&1
rc=$?
set -e
grep -E '^(INFO: -max_len|#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' \
    "$work/fuzz.log" || true
if [ "$rc" -ne 0 ]; then
    tail -n 60 "$work/fuzz.log"
    echo "FAIL: $name exited $rc; full log $work/fuzz.log"
    for a in "$work"/artifacts/*; do
        [ -e "$a" ] && echo "  finding: $a   (replay: $bin $a)"
    done
    exit 1
fi
echo "[$name] no finding in $secs s ($(find "$work/corpus" -type f | wc -l) inputs in the corpus)"
