#!/usr/bin/env bash
# The seed generator still works: it writes a fresh corpus into WORK_DIR, and every seed of
# it is valid input for its target (each target run once per seed with FM_FUZZ_SEEDS=1,
# where an invalid input aborts). Whether the committed corpus (tests/fuzz/corpus) is still
# byte-identical is reported, not required: a new config key or an optional wire key changes
# the generator's output while the committed seeds stay valid (ctest fuzz_<target> checks
# those).
# usage: check_corpus.sh GEN_BINARY SOURCE_DIR WORK_DIR TARGET_BINARY_DIR
set -euo pipefail
gen=$1 src=$2 work=$3 bindir=$4
rm -rf "$work"
"$gen" "$src" "$work"
total=0
for dir in "$work"/*/; do
    t=$(basename "$dir")
    mapfile -t files < <(find "$dir" -type f | sort)
    [ "${#files[@]}" -gt 0 ] || { echo "FAIL: the generator wrote no seed for $t"; exit 1; }
    if ! FM_FUZZ_SEEDS=1 "$bindir/fuzz_$t" "${files[@]}" >"$work.$t.log" 2>&1; then
        cat "$work.$t.log"
        echo "FAIL: the generator wrote a seed that fuzz_$t does not accept"
        exit 1
    fi
    total=$((total + ${#files[@]}))
done
echo "fuzz corpus: the generator wrote $total valid seeds ($(du -sk "$work" | cut -f1) KiB)"
if diff -rq "$src/tests/fuzz/corpus" "$work" >"$work.diff" 2>&1; then
    echo "fuzz corpus: tests/fuzz/corpus is what the generator writes"
else
    echo "note: tests/fuzz/corpus differs from the generator's output (still valid, see the"
    echo "fuzz_<target> tests); to refresh it: rm -rf tests/fuzz/corpus &&" \
        "$gen . tests/fuzz/corpus"
    head -n 10 "$work.diff"
fi
