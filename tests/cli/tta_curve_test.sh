#!/usr/bin/env bash
# bench/tta_curve.py (the time-to-accuracy sweep's curve reader) on a synthetic metrics file
# whose figures are worked out by hand below: the time and version each threshold is first
# reached at (from version 0's "created"), the window's mean / min / max / count (default
# window = the run's second half, and an explicit one), the last scoring, the last
# population's worst client and 10th percentile; a run directory reads its metrics.jsonl;
# bad input (a non-JSON line, a missing file, a reversed window) gives one stderr line and a
# non-zero exit.
#   usage: tta_curve_test.sh FEDMQ_BINARY SOURCE_DIR   (the binary is not used)
set -u
src=${2:?usage: tta_curve_test.sh FEDMQ_BINARY SOURCE_DIR}
tool=$src/bench/tta_curve.py
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

# versions 0..5 created 0, 10, ..., 50 s after t0 = 1000; accuracies below; populations on v2
# and v4 (the last: worst 0.61, p10 0.72); a blank line and a record without accuracy (a
# monitoring line of another kind) are skipped
mkdir -p "$tmp/run"
cat >"$tmp/run/metrics.jsonl" <<'EOF'
{"version":0,"accuracy":0.50,"created":1000.0,"time":1003.0}
{"version":1,"accuracy":0.76,"created":1010.0,"time":1013.0}

{"version":2,"accuracy":0.79,"created":1020.0,"time":1023.0,"population":{"min":0.40,"p10":0.55}}
{"note":"no accuracy here","created":1025.0,"version":9}
{"version":3,"accuracy":0.80,"created":1030.0,"time":1033.0}
{"version":4,"accuracy":0.86,"created":1040.0,"time":1043.0,"population":{"min":0.61,"p10":0.72}}
{"version":5,"accuracy":0.84,"created":1050.0,"time":1053.0}
EOF

row() { "$py" "$tool" "$@" 2>"$tmp/err" | sed -n 3p; }

# default window: second half of 0-50 s = 25-50 s: v3 0.80 (exactly a threshold: reached), v4
# 0.86, v5 0.84
got=$(row "$tmp/run")
want='| run | 10.0 (v1) | 30.0 (v3) | 40.0 (v4) | 25-50 | 0.8333 | 0.8000 | 0.8600 | 3 | 0.8400 (v5, 50) | 0.610 / 0.720 (v4) | 0.610 / 0.720 (1) |'
[ "$got" = "$want" ] && ok "default thresholds and window: $got" || bad "got '$got' want '$want'"

# an explicit window and thresholds, the file given directly: 0-20 s = v0..v2
got=$(row --thresholds 0.78,0.9 --window 0:20 "$tmp/run/metrics.jsonl")
want='| metrics.jsonl | 20.0 (v2) | - | 0-20 | 0.6833 | 0.5000 | 0.7900 | 3 | 0.8400 (v5, 50) | 0.610 / 0.720 (v4) | 0.400 / 0.550 (1) |'
[ "$got" = "$want" ] && ok "explicit window, unreached threshold: $got" || bad "got '$got' want '$want'"

# the window's populations: both (v2 at 20 s, v4 at 40 s) in 0-50 s: worst (0.40 + 0.61) / 2,
# p10 (0.55 + 0.72) / 2
got=$(row --window 0:50 "$tmp/run" | awk -F' [|] ' '{print $NF}')
want='0.505 / 0.635 (2) |'
[ "$got" = "$want" ] && ok "the window's population tail: $got" || bad "got '$got' want '$want'"

# bad input: one stderr line, non-zero exit
expect_fail() { # CODE WORD ARGS...
    local code=$1 word=$2
    shift 2
    "$py" "$tool" "$@" >/dev/null 2>"$tmp/err"
    local rc=$?
    if [ "$rc" -eq "$code" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$word" "$tmp/err"; then
        ok "$*: exit $rc, $(cat "$tmp/err")"
    else
        bad "$*: exit $rc (want $code), stderr: $(head -c 300 "$tmp/err")"
    fi
}
printf '{"version":0,"accuracy":0.5,"created":1.0}\n{oops\n' >"$tmp/broken.jsonl"
expect_fail 1 "broken.jsonl:2: not JSON" "$tmp/broken.jsonl"
expect_fail 1 "No such file" "$tmp/missing"
printf '{"note":1}\n' >"$tmp/empty.jsonl"
expect_fail 1 "no scored versions" "$tmp/empty.jsonl"
expect_fail 2 "FROM <= TO" --window 40:10 "$tmp/run"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
