#!/usr/bin/env bash
# fedmq privacy (tools/fedmq_privacy.c), the planning tool over the RDP accountant:
#   - the epsilon it prints for Opacus' published case (q 0.04, sigma 1.5, 2250 steps,
#     delta 1e-5: 7.32911117143, opacus/tests/accountants_test.py) and for a row of the
#     mpmath reference fixture (tests/fixtures/rdp_reference.tsv), classic and improved;
#   - --target-epsilon with --steps gives a sigma whose epsilon is <= the target while 0.1%
#     less noise exceeds it; with --sigma, the most steps: one more exceeds the target;
#   - bad input (missing or malformed flags, out-of-range values, impossible targets) gives
#     exactly one stderr line and exit 2.
# Usage: bash tests/cli/privacy_test.sh <path-to-fedmq> [<source-dir>]
set -u

FEDMQ=${1:?usage: privacy_test.sh <path-to-fedmq> [<source-dir>]}
SRC=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-privacy.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok

# field NAME FILE: NAME=value from the last line of FILE
field() { tail -n 1 "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# close A B REL: |A - B| <= REL |B|
close() { python3 -c "import sys; a,b,r=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=r*abs(b) else 1)" "$@"; }
# le A B: A <= B
le() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(0 if a<=b else 1)" "$@"; }

# ---- known values ---------------------------------------------------------------------
if "$FEDMQ" privacy --q 0.04 --sigma 1.5 --steps 2250 >"$T/o" 2>"$T/e"; then
    eps=$(field epsilon "$T/o")
    if close "$eps" 7.32911117143 1e-9 && [ "$(field conversion "$T/o")" = improved ]; then
        ok "Opacus' published epsilon 7.32911117143 (got $eps)"
    else
        notok "Opacus' published epsilon" "$(cat "$T/o")"
    fi
else
    notok "fedmq privacy --q 0.04 --sigma 1.5 --steps 2250 failed" "$(cat "$T/e")"
fi

fix="$SRC/tests/fixtures/rdp_reference.tsv"
for conv in classic improved; do
    row=$(awk -F'\t' -v c="$conv" '$1 == "eps" && $2 == "0.01" && $3 == "1.1" && $4 == "1000" && $6 == c' "$fix")
    want=$(cut -f7 <<<"$row")
    if [ -z "$want" ]; then
        notok "fixture row eps 0.01 1.1 1000 $conv missing in $fix"
        continue
    fi
    "$FEDMQ" privacy --q 0.01 --sigma 1.1 --steps 1000 --delta 1e-5 --conversion "$conv" >"$T/o" 2>"$T/e"
    got=$(field epsilon "$T/o")
    if [ -n "$got" ] && close "$got" "$want" 1e-9; then
        ok "q 0.01 sigma 1.1 1000 steps, $conv: $got = reference $want"
    else
        notok "q 0.01 sigma 1.1 1000 steps, $conv: got '$got', reference $want" "$(cat "$T/o" "$T/e")"
    fi
done

# ---- inverses ----------------------------------------------------------------------------
if "$FEDMQ" privacy --q 0.01 --steps 5000 --target-epsilon 3 >"$T/o" 2>"$T/e"; then
    s=$(field sigma "$T/o")
    eps=$(field epsilon "$T/o")
    less=$(python3 -c "print(float('$s') * 0.999)")
    "$FEDMQ" privacy --q 0.01 --steps 5000 --sigma "$less" >"$T/o2" 2>&1
    if le "$eps" 3 && ! le "$(field epsilon "$T/o2")" 3; then
        ok "sigma for epsilon 3: $s (epsilon $eps; 0.1% less noise: $(field epsilon "$T/o2"))"
    else
        notok "sigma for epsilon 3" "$(cat "$T/o" "$T/o2")"
    fi
else
    notok "--target-epsilon with --steps failed" "$(cat "$T/e")"
fi
if "$FEDMQ" privacy --q 0.01 --sigma 1.0 --target-epsilon 8 >"$T/o" 2>"$T/e"; then
    n=$(field steps "$T/o")
    "$FEDMQ" privacy --q 0.01 --sigma 1.0 --steps $((n + 1)) >"$T/o2" 2>&1
    if le "$(field epsilon "$T/o")" 8 && ! le "$(field epsilon "$T/o2")" 8; then
        ok "steps within epsilon 8 at sigma 1: $n (one more: $(field epsilon "$T/o2"))"
    else
        notok "steps for epsilon 8" "$(cat "$T/o" "$T/o2")"
    fi
else
    notok "--target-epsilon with --sigma failed" "$(cat "$T/e")"
fi

# ---- bad input: one line on stderr, exit 2 ------------------------------------------------
bad() {
    local what=$1
    shift
    "$FEDMQ" privacy "$@" >"$T/o" 2>"$T/e"
    local rc=$? lines
    lines=$(wc -l <"$T/e")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && [ ! -s "$T/o" ]; then
        ok "$what: exit 2, '$(cat "$T/e")'"
    else
        notok "$what: exit $rc, $lines stderr lines" "$(cat "$T/o" "$T/e")"
    fi
}
bad "no flags"
bad "missing --steps" --q 0.1 --sigma 1
bad "q above 1" --q 1.5 --sigma 1 --steps 10
bad "q not a number" --q abc --sigma 1 --steps 10
bad "negative sigma" --q 0.1 --sigma -1 --steps 10
bad "delta 1" --q 0.1 --sigma 1 --steps 10 --delta 1
bad "unknown conversion" --q 0.1 --sigma 1 --steps 10 --conversion renyi
bad "target with both sigma and steps" --q 0.1 --sigma 1 --steps 10 --target-epsilon 1
bad "unknown flag" --q 0.1 --sigma 1 --steps 10 --epsilon 3
bad "impossible target" --q 1 --steps 1000000 --target-epsilon 0.0001
bad "stray argument" --q 0.1 --sigma 1 --steps 10 extra

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
