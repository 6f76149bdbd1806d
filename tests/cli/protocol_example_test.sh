#!/usr/bin/env bash
# docs/PROTOCOL.md §9 as a test: the Python trainer printed there, extracted from the page
# as it is, joins a real broker and aggregator (logreg, acks on) and gets its update
# applied, in both modes:
#   - async (buffer_k = 1): it prints "applied", the aggregator made version 1 from one
#     applied update by its trainer and client;
#   - sync (one client, clients_per_round = 1): it does not train on the round-0 MODEL,
#     trains on the MODEL that opens round 1 (its client in the cohort), prints "applied";
#     the aggregator logged no `late` refusal.
# A copy of the example with the round rule removed, in a sync federation whose first round
# cannot open (2 clients needed, 1 live), trains on the round-0 MODEL and must be refused
# `late`: the test sees the §3.1 rule matter.
# Endpoints: tcp://127.0.0.1 on ports free a moment before, given to the example through
# its FEDMQ_* environment variables. Needs python3-zmq, python3-msgpack, python3-numpy.
# Usage: bash tests/cli/protocol_example_test.sh <path-to-fedmq> <source-dir>
set -u
FEDMQ=${1:?usage: protocol_example_test.sh <path-to-fedmq> <source-dir>}
SRC=${2:?usage: protocol_example_test.sh <path-to-fedmq> <source-dir>}
BIN=$(dirname "$FEDMQ")
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-protoex.XXXXXX") || exit 1
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
. "$(dirname "$0")/tap.sh"   # PASS, FAIL, ok, notok
. "$(dirname "$0")/ports.sh" # loopback_ports
# Debian's interpreter, with Debian's python3-zmq/-msgpack/-numpy (not a python3 first on
# PATH, e.g. pyenv's)
PY=${FEDMQ_PYTHON:-/usr/bin/python3}

# the first ```python block of section 9, exactly as the page has it
awk '/^## 9\./ {in9 = 1} in9 && /^```python$/ {code = 1; next} code && /^```$/ {exit}
     code {print}' "$SRC/docs/PROTOCOL.md" >"$T/example.py"
if [ "$(grep -c . "$T/example.py")" -gt 50 ] && grep -q 'def main' "$T/example.py"; then
    ok "extracted §9's code ($(wc -l <"$T/example.py") lines)"
else
    notok "extracting §9's code" "$(head -5 "$T/example.py")"
    exit 1
fi
"$PY" -c 'import zmq, msgpack, numpy' 2>/dev/null ||
    { notok "python3-zmq, python3-msgpack and python3-numpy are needed"; exit 1; }

# start_federation NAME MODE [--set k=v ...]: broker + aggregator on fresh ports (one client
# unless overridden); sets the FEDMQ_* variables
start_federation() {
    local name=$1 mode=$2 ports strategy=fedbuff
    shift 2
    [ "$mode" = sync ] && strategy=fedavg
    ports=$(loopback_ports)
    local sets=(--set federation.model=logreg --set federation.num_clients=1
        --set trainer.clients=0 --set federation.aggregation_strategy=$strategy
        --set federation.clients_per_round=1 --set federation.min_clients=1
        --set federation.mode="$mode" --set aggregator.buffer_k=1
        --set aggregator.checkpoint_dir="$T/$name-ckpt" --set broker.heartbeat_timeout_s=5 "$@")
    # shellcheck disable=SC2086
    "$BIN/fedmq-broker" --config "$SRC/configs/fedmq.conf" $ports "${sets[@]}" \
        >"$T/$name-broker.log" 2>&1 &
    PIDS+=($!)
    # shellcheck disable=SC2086
    "$BIN/fedmq-aggregator" --config "$SRC/configs/fedmq.conf" $ports "${sets[@]}" \
        >"$T/$name-aggregator.log" 2>&1 &
    PIDS+=($!)
    local k
    for k in model_pub snapshot updates acks; do
        export "FEDMQ_${k^^}=$(printf '%s\n' "$ports" | sed -n "s/^--set endpoints\.$k=//p")"
    done
    STATS="$T/$name-ckpt/stats.json"
    wait_stat version 0 || { notok "$name: the aggregator did not start" \
        "$(tail -3 "$T/$name-aggregator.log")"; exit 1; }
}

# stat KEY: an integer of the aggregator's stats.json (top level or under "rejected"), or -1
stat() {
    python3 - "$STATS" "$1" <<'EOF' 2>/dev/null || echo -1
import json, sys
s = json.load(open(sys.argv[1]))
k = sys.argv[2]
print(int(s[k] if k in s else s["rejected"][k]))
EOF
}

stop_federation() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}

# wait_stat KEY VALUE: poll (10 s) until stats.json has KEY >= VALUE
wait_stat() {
    local end=$((SECONDS + 10))
    while [ "$(stat "$1")" -lt "$2" ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
    [ "$(stat "$1")" -ge "$2" ]
}

# ---- async ------------------------------------------------------------------------------------
start_federation async async
out=$(FEDMQ_TRAINER=py-ex-async timeout 150 "$PY" "$T/example.py" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [[ $out == applied* ]]; then
    ok "async: the example's update is applied ($out)"
else
    notok "async: the example's update" "exit $rc: $out" "$(tail -5 "$T/async-aggregator.log")"
fi
wait_stat version 1 && [ "$(stat updates_applied)" -eq 1 ] &&
    ok "async: the aggregator made version 1 from 1 applied update" ||
    notok "async: aggregator stats" "$(cat "$STATS" 2>/dev/null | head -c 600)"
grep -q "trainer py-ex-async (clients 0-0) joined" "$T/async-aggregator.log" &&
    ok "async: the aggregator saw the example's HELLO (its trainer id and client range)" ||
    notok "async: HELLO in the aggregator's log" "$(grep -i trainer "$T/async-aggregator.log" | head -3)"
stop_federation

# ---- sync -------------------------------------------------------------------------------------
start_federation sync sync
out=$(FEDMQ_TRAINER=py-ex-sync timeout 150 "$PY" "$T/example.py" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [[ $out == applied* ]]; then
    ok "sync: the example's update for round 1 is applied ($out)"
else
    notok "sync: the example's update" "exit $rc: $out" "$(tail -5 "$T/sync-aggregator.log")"
fi
wait_stat version 1 && [ "$(stat late)" -eq 0 ] &&
    ok "sync: version 1 made, no update refused late" ||
    notok "sync: aggregator stats" "$(cat "$STATS" 2>/dev/null | head -c 600)"
stop_federation

# ---- the round rule matters: trained on the round-0 MODEL, the update is refused late -------
sed 's/^    return msg\["round"\] >= 1 and CLIENT in ids$/    return True/' "$T/example.py" \
    >"$T/no-round-rule.py"
if cmp -s "$T/example.py" "$T/no-round-rule.py"; then
    notok "the round rule line was not found in the example"
else
    # two clients needed, one live: round 1 never opens, every MODEL is round 0
    start_federation norule sync --set federation.num_clients=2 \
        --set federation.clients_per_round=2 --set federation.min_clients=2
    out=$(FEDMQ_TRAINER=py-ex-norule timeout 150 "$PY" "$T/no-round-rule.py" 2>&1)
    rc=$?
    if [ $rc -eq 1 ] && [[ $out == late* ]]; then
        ok "without the §3.1 round rule the update is refused late ($out)"
    else
        notok "without the round rule" "exit $rc (want 1): $out"
    fi
    stop_federation
fi

for f in "$T"/*-broker.log "$T"/*-aggregator.log; do
    if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$f"; then
        notok "sanitizer report in $(basename "$f")" "$(grep -m3 -E 'Sanitizer|runtime error' "$f")"
    fi
done
echo "# $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
