#!/usr/bin/env bash
# [security] mode = curve from the command line (issue 11):
#   - fedmq keygen: writes NAME.cert and NAME.cert_secret (mode 0600, the public file
#     without the secret key), refuses to overwrite a key, a bad name, a trainer key without
#     --clients: exit 2 and one line each;
#   - a daemon whose key file is missing stops at start with one line naming the key;
#     a daemon under mode = none logs one warning at start;
#     a trainer whose [trainer] clients exceed its key's enrolment: exit 2, one line;
#   - the whole federation (fedmq run: broker, aggregator, evaluator, one trainer pool, and
#     fedmq run itself as a monitor of the METRICS feed) under curve reaches a short-run
#     accuracy (mlp, 10 clients: 0.7; sanitizer builds 0.6), every daemon logging the
#     "mode = curve" line and none the "mode = none" warning.
# Usage: bash tests/cli/curve_test.sh <path-to-fedmq> <source-dir>
set -u
FEDMQ=${1:?usage: curve_test.sh <path-to-fedmq> <source-dir>}
SRC=${2:?usage: curve_test.sh <path-to-fedmq> <source-dir>}
BIN=$(dirname "$FEDMQ")
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-curve.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
. "$(dirname "$0")/ports.sh" # loopback_ports
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $1"; }
notok() { FAIL=$((FAIL + 1)); echo "not ok - $1"; shift; for l in "$@"; do echo "#   $l"; done; }

K=$T/keys
A=$T/keys/allow
mkdir -p "$A"

# ---- fedmq keygen ---------------------------------------------------------------------------
for spec in "broker broker" "aggregator aggregator" "evaluator evaluator" "monitor monitor" \
    "pool-a trainer --clients 0-9"; do
    set -- $spec
    name=$1 role=$2
    shift 2
    out=$("$FEDMQ" keygen "$name" --role "$role" --dir "$K" "$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && [ -f "$K/$name.cert" ] && [ -f "$K/$name.cert_secret" ]; then
        ok "keygen $name: writes $name.cert and $name.cert_secret"
    else
        notok "keygen $name" "exit $rc: $out"
    fi
done
mode=$(stat -c %a "$K/pool-a.cert_secret")
[ "$mode" = 600 ] && ok "the secret file is mode 600" || notok "secret file mode" "$mode"
if grep -q secret-key "$K/pool-a.cert"; then
    notok "the public certificate holds no secret key" "$(cat "$K/pool-a.cert")"
else
    ok "the public certificate holds no secret key"
fi
grep -q 'clients = "0-9"' "$K/pool-a.cert" && grep -q 'role = "trainer"' "$K/pool-a.cert" &&
    ok "the certificate names the role and the clients" ||
    notok "certificate metadata" "$(cat "$K/pool-a.cert")"
before=$(md5sum "$K/pool-a.cert_secret")
expect2() { # expect2 DESCRIPTION SUBSTRING -- ARGS...
    local what=$1 sub=$2
    shift 3
    local err
    err=$("$@" 2>&1 >/dev/null)
    local rc=$?
    if [ $rc -eq 2 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] && [[ $err == *"$sub"* ]]; then
        ok "$what: exit 2, one line"
    else
        notok "$what" "exit $rc (want 2), stderr: $err"
    fi
}
expect2 "keygen over an existing key" "not overwriting" -- "$FEDMQ" keygen pool-a --role trainer --clients 0-9 --dir "$K"
[ "$(md5sum "$K/pool-a.cert_secret")" = "$before" ] && ok "the existing key is unchanged" ||
    notok "the existing key was changed"
expect2 "keygen with a bad name" "name must be" -- "$FEDMQ" keygen 'a b' --role trainer --clients 0 --dir "$K"
expect2 "keygen of a trainer without --clients" "needs --clients" -- "$FEDMQ" keygen t2 --role trainer --dir "$K"
expect2 "keygen with an unknown role" "role must be" -- "$FEDMQ" keygen x --role admin --dir "$K"
for n in pool-a broker evaluator monitor; do cp "$K/$n.cert" "$A/"; done

PORTS=$(loopback_ports)
SEC="--set security.mode=curve --set security.allow_dir=$A --set security.broker_cert=$K/broker.cert
 --set security.aggregator_cert=$K/aggregator.cert --set security.evaluator_cert=$K/evaluator.cert
 --set security.trainer_cert=$K/pool-a.cert --set security.monitor_cert=$K/monitor.cert"

# ---- a missing key, an enrolment too small ----------------------------------------------------
err=$("$BIN/fedmq-aggregator" $PORTS $SEC --set security.aggregator_cert=$T/none.cert \
    --set aggregator.checkpoint_dir=$T/ck0 2>&1)
rc=$?
last=$(printf '%s\n' "$err" | grep -v 'mode = none' | tail -n 1)
if [ $rc -ne 0 ] && [[ $last == *"[security] aggregator_cert = $T/none.cert: cannot read"* ]]; then
    ok "a missing key stops the aggregator with one line naming it (exit $rc)"
else
    notok "missing key" "exit $rc: $err"
fi
err=$("$BIN/fedmq-trainer" $PORTS $SEC --set federation.model=mlp --set federation.num_clients=20 \
    --set trainer.clients=0-19 2>&1)
rc=$?
if [ $rc -eq 2 ] && [[ $err == *"enrolled for clients 0-9 only"* ]]; then
    ok "a trainer serving clients its key is not enrolled for: exit 2"
else
    notok "trainer enrolment" "exit $rc: $err"
fi

# ---- mode = none says so at start, once --------------------------------------------------------
out=$(timeout -s TERM 3 "$BIN/fedmq-broker" $PORTS 2>&1)
n=$(grep -c 'WARN \[security\] mode = none: sockets are neither authenticated nor encrypted' <<<"$out")
[ "$n" = 1 ] && ok "mode = none logs one warning at start" || notok "mode = none warning" "$out"

# ---- the federation under curve -------------------------------------------------------------------
target=0.7
[ "${FM_SANITIZED:-0}" = 1 ] && target=0.6
out=$(timeout 300 "$FEDMQ" run "$SRC/configs/fedmq.conf" --run-dir "$T/run" $PORTS $SEC \
    --set federation.model=mlp --set federation.num_clients=10 --set federation.clients_per_round=5 \
    --set trainer.clients=0-9 --set federation.target_accuracy=$target \
    --set federation.time_limit_s=200 2>&1)
rc=$?
if [ $rc -eq 0 ] && [[ $out == *"time to $target accuracy"* ]]; then
    ok "fedmq run under curve reaches $target ($(grep -o 'time to [0-9.]* accuracy: [0-9.]* s' <<<"$out"))"
else
    notok "fedmq run under curve" "exit $rc" "$(tail -n 8 <<<"$out")"
fi
for d in broker aggregator evaluator trainer; do
    log=$(ls "$T/run"/*"$d"*.log 2>/dev/null | head -n 1)
    if [ -n "$log" ] && grep -q "mode = curve: $d key" "$log" && ! grep -q "mode = none" "$log"; then
        ok "$d ran under curve"
    else
        notok "$d under curve" "log: $log" "$(grep -h security "$log" 2>/dev/null | head -n 3)"
    fi
done
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
