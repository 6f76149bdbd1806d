#!/usr/bin/env bash
# Config-error contract of every program that reads a config file (the four daemons,
# fedmq run and fedmq partition): a bad file gives exit code 2, nothing on stdout and
# exactly ONE stderr line "PROGRAM: FILE:LINE: ..." naming the line and the reason. Covers
# the bytes the reader checks itself (NUL before a key, inside a value, in a section header;
# invalid UTF-8; over-long values and lines) and shows that a BOM, CRLF line ends and a
# 255-byte string value still load.
#
# Usage: bash tests/cli/config_errors_test.sh <path-to-fedmq> [<source-dir>]
# (ctest runs it as cli_config_errors_test; the daemons are found next to fedmq).
# Prints "ok - ..." / "not ok - ..." per check and a final "N passed, M failed" line.
set -u

FEDMQ=${1:?usage: config_errors_test.sh <path-to-fedmq> [<source-dir>]}
BIN=$(dirname "$FEDMQ")
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-cfg.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
TMO=30

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok

PROGS=("$BIN/fedmq-broker --config" "$BIN/fedmq-trainer --config"
       "$BIN/fedmq-aggregator --config" "$BIN/fedmq-evaluator --config"
       "$FEDMQ run" "$FEDMQ partition")

# expect_bad NAME LINE-REGEX: every program on $T/NAME.conf exits 2 with one stderr line
# "<prog>: $T/NAME.conf:<LINE-REGEX>" and an empty stdout.
expect_bad() {
    local name=$1 want=$2 conf=$T/$1.conf p
    for p in "${PROGS[@]}"; do
        local prog=${p%% *} cmd=${p#* }
        local label="$(basename "$prog") ${cmd#--config}"
        label="${label% } $name"
        local extra=()
        [ "$cmd" = partition ] && extra=(--out "$T/out.json")
        timeout "$TMO" "$prog" $cmd "$conf" "${extra[@]}" >"$T/out" 2>"$T/err"
        local rc=$? lines
        lines=$(wc -l <"$T/err")
        local line
        line=$(head -n 1 "$T/err")
        if [ "$rc" -ne 2 ]; then
            notok "$label: exit 2" "exit $rc" "stderr: $line"
        elif [ "$lines" -ne 1 ]; then
            notok "$label: one stderr line" "$lines lines:" "$(head -n 5 "$T/err")"
        elif [ -s "$T/out" ]; then
            notok "$label: empty stdout" "stdout: $(head -n 3 "$T/out")"
        elif ! printf '%s\n' "$line" | grep -Eq -- "^[a-z -]+: $conf:$want\$"; then
            notok "$label: message" "want '<prog>: $conf:$want'" "got  '$line'"
        else
            ok "$label: exit 2, one line: ${line#*: }"
        fi
    done
}

# NUL before a key, inside a value, in a section header (a C-string reader would drop the
# rest of the line: "model = mlp\0garbage" would run as mlp, the key after \0 be skipped)
printf '[federation]\nmodel = mlp\0garbage\n' >"$T/nul_value.conf"
expect_bad nul_value '2: NUL byte at column 12'
printf '[federation]\nseed = 2\n\0model = mlp\n' >"$T/nul_key.conf"
expect_bad nul_key '3: NUL byte at column 1'
printf '[feder\0ation]\nseed = 2\n' >"$T/nul_section.conf"
expect_bad nul_section '1: NUL byte at column 7'
# not UTF-8
printf '[federation]\n# caf\xe9\n' >"$T/latin1.conf"
expect_bad latin1 '2: not UTF-8 text \(byte 0xE9 at column 6\)'
# a string value of 256 bytes (the limit is 255), and a 1025-byte line
long=$(printf '/%0255d' 0)
printf '[evaluator]\nmetrics_file = %s\n' "$long" >"$T/long_value.conf"
expect_bad long_value '2: \[evaluator\] metrics_file = /0{63}\.\.\.: longer than 255 bytes'
printf '[evaluator]\n# %01023d\n' 0 >"$T/long_line.conf"
expect_bad long_line '2: line longer than 1024 bytes'
# the usual kinds, for the same contract
printf '[broker]\nfrobnicate = 1\n' >"$T/unknown_key.conf"
expect_bad unknown_key '2: \[broker\] frobnicate = 1: unknown key'
printf '[aggregator]\r\nbuffer_k = -1\r\n' >"$T/range_crlf.conf"
expect_bad range_crlf '2: \[aggregator\] buffer_k = -1: out of range \[0, 100000\]'
# /metrics addresses: numeric HOST:PORT or off, nothing else (no name lookup, no port 0)
printf '[trainer]\nworkers = 1\n[broker]\nmetrics_addr = localhost:9561\n' >"$T/metrics_name.conf"
expect_bad metrics_name '4: \[broker\] metrics_addr = localhost:9561: not HOST:PORT \(an IPv4 address or \[IPv6 address\], a port 1-65535\) or off'
printf '[trainer]\nmetrics_addr = 127.0.0.1:0\n' >"$T/metrics_port.conf"
expect_bad metrics_port '2: \[trainer\] metrics_addr = 127.0.0.1:0: not HOST:PORT \(an IPv4 address or \[IPv6 address\], a port 1-65535\) or off'

# BOM, CRLF and a 255-byte string value load (fedmq partition reads the config with the
# daemons' checks, then partitions the real training set)
good=$T/good.conf
printf '\xef\xbb\xbf# BOM and CRLF\r\n[federation]\r\nnum_clients = 4\r\nclients_per_round = 2\r\n' >"$good"
printf 'partition = iid\r\n[trainer]\r\nclients = 0-3\r\n[evaluator]\r\nmetrics_file = %s\r\n' \
    "${long:0:255}" >>"$good"
if timeout 300 "$FEDMQ" partition "$good" --out "$T/good.json" >"$T/out" 2>"$T/err"; then
    ok "fedmq partition: BOM, CRLF and a 255-byte value load"
else
    notok "fedmq partition: BOM, CRLF and a 255-byte value load" "$(head -n 3 "$T/err")"
fi

# fedmq config: every key as the daemons resolve it (the file, then --set, then the checks);
# the dump reads back to itself; a bad override is one line and exit 2
if "$FEDMQ" config "$good" --set trainer.id=pool-7 >"$T/dump.conf" 2>"$T/err" &&
    grep -qx 'num_clients = 4' "$T/dump.conf" && grep -qx 'id = pool-7' "$T/dump.conf" &&
    grep -qx 'clients_per_round = 2' "$T/dump.conf" && grep -qx 'batch_size = 32' "$T/dump.conf"; then
    ok "fedmq config: the file's values, the --set, the defaults of the rest"
else
    notok "fedmq config" "$(head -n 3 "$T/err")"
fi
if "$FEDMQ" config "$T/dump.conf" | cmp -s - "$T/dump.conf"; then
    ok "fedmq config: its output reads back to itself"
else
    notok "fedmq config: the output does not read back to itself"
fi
err=$("$FEDMQ" config "$good" --set trainer.id='a b' 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 2 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] &&
    [[ $err == *"[trainer] id = a b: byte 0x20 at offset 1 is not allowed in a trainer id"* ]]; then
    ok "fedmq config: a bad trainer id is one line, exit 2"
else
    notok "fedmq config: a bad trainer id" "exit $rc: $err"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
