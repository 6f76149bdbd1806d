#!/usr/bin/env bash
# The C sources stay formatted as .clang-format says (applied to the whole tree once): any
# file clang-format would change fails the test, with the first differences shown.
# usage: format_test.sh SOURCE_DIR
set -euo pipefail
cd "$1"
command -v clang-format >/dev/null || { echo "FAIL: clang-format not installed (apt-get install clang-format)"; exit 1; }
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find shared broker trainer aggregator evaluator tools tests bench -name '*.[ch]')
# one clang-format for the whole tree (fast); the per-file loop only names the culprits
if clang-format --dry-run --Werror "${files[@]}" >/dev/null 2>&1; then
    echo "format: ${#files[@]} files checked, 0 not formatted"
    exit 0
fi
bad=0
for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "FAIL: $f is not formatted (clang-format -i $f):"
        clang-format "$f" | diff -u "$f" - | head -n 12 || true
        bad=$((bad + 1))
    fi
done
echo "format: ${#files[@]} files checked, $bad not formatted"
[ "$bad" -eq 0 ]
