# tap.sh: the TAP-style counters the CLI tests share (sourced, not run: not a *_test.sh).
#   ok "what held"; notok "what failed" "detail line" ...; a test ends on [ "$FAIL" -eq 0 ].
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $1"; }
notok() {
    FAIL=$((FAIL + 1))
    echo "not ok - $1"
    shift
    local l
    for l in "$@"; do echo "#   $l"; done
}
