#!/usr/bin/env bash
# fedmq run (tools/fedmq_run.c): how a daemon that exits on its own is reported.
#   - a config whose data directory does not exist: the trainer and the evaluator cannot
#     load their data (a runtime failure): exit 1 and exactly one stderr line naming the
#     child, "exit code 1, runtime failure", the missing path and the child's log;
#   - a config that fedmq run accepts but a child rejects (federation.model = mlp over the
#     run directory's cnn checkpoint, which only the aggregator checks): exit 2 and one
#     line naming the aggregator, "exit code 2, bad config or input" and the reason;
#   - fedmq checkpoints --metrics over that run's checkpoint (jansson-read metrics lines);
#   - a bad value that fedmq run's own config check rejects: exit 2, one line, no daemon
#     started.
# Runs take seconds; every endpoint is tcp://127.0.0.1 on ports that were free a moment ago.
#
# Usage: bash tests/cli/run_test.sh <path-to-fedmq> <source-dir>
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits 1 on failure.
set -u

FEDMQ=${1:?usage: run_test.sh <path-to-fedmq> <source-dir>}
SRC=${2:?usage: run_test.sh <path-to-fedmq> <source-dir>}
CONF=$SRC/configs/fashion-async.conf # model = cnn
if [ ! -x "$FEDMQ" ]; then
    echo "not ok - fedmq binary '$FEDMQ' is not executable"
    echo "0 passed, 1 failed"
    exit 1
fi
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "not ok - python3 is needed to pick free ports"
    echo "0 passed, 1 failed"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-run.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
TMO=120
SAN_RE='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error'

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok
. "$(dirname "$0")/ports.sh" # loopback_ports
show() {
    local f=$1 what=$2
    [ -s "$f" ] || { echo "#   $what: (empty)"; return; }
    echo "#   $what ($(wc -l <"$f") lines):"
    head -n 5 "$f" | sed 's/^/#     | /'
}


# expect_run <code> <description> <substring>... -- <fedmq run arguments...>
# Exit <code> and exactly one stderr line starting "fedmq run: " that contains each
# substring (on stdout: the progress and the summary, not checked).
expect_run() {
    local code=$1 desc=$2
    shift 2
    local -a subs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        subs+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    local -a p
    mapfile -t p < <(loopback_ports)
    local out=$T/out err=$T/err rc
    # shellcheck disable=SC2068 # each line of loopback_ports is "--set key=value"
    timeout -k 5 "$TMO" "$FEDMQ" run "$@" ${p[@]} --set federation.time_limit_s=60 \
        >"$out" 2>"$err" </dev/null
    rc=$?
    local -a why=()
    grep -qE "$SAN_RE" "$err" && why+=("sanitizer report on stderr")
    [ "$rc" -eq "$code" ] || why+=("exit status $rc, expected $code")
    local -a lines=()
    mapfile -t lines <"$err"
    if [ "${#lines[@]}" -ne 1 ]; then
        why+=("stderr has ${#lines[@]} lines, expected exactly 1")
    else
        [[ "${lines[0]}" == "fedmq run: "?* ]] || why+=("stderr line does not start with 'fedmq run: '")
        local s
        for s in "${subs[@]}"; do
            [[ "${lines[0]}" == *"$s"* ]] || why+=("stderr line lacks '$s'")
        done
    fi
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
        [ -n "${VERBOSE:-}" ] && echo "#   stderr: ${lines[0]}"
    else
        notok "$desc" "command: fedmq run ${*}" "${why[@]}"
        show "$err" "stderr"
        show "$out" "stdout"
    fi
}

R=$T/run
# (a) no data: trainer and evaluator fail at start; the first one is named with its reason
expect_run 1 "missing data directory: exit 1, one line naming the child and the reason" \
    "exited on its own (exit code 1, runtime failure)" "$T/no-such-data" "$R/" ".log" -- \
    "$CONF" --run-dir "$R" --set "federation.data_dir=$T/no-such-data"
if [[ "$(head -n 1 "$T/err")" =~ ^"fedmq run: "(trainer|evaluator)" exited" ]]; then
    ok "missing data directory: the child named is the trainer or the evaluator"
else
    notok "missing data directory: the child named is the trainer or the evaluator" \
        "stderr: $(head -n 1 "$T/err")"
fi

# (b) the aggregator of (a) checkpointed a cnn in $R/checkpoints; the same run directory
# with model = mlp passes fedmq run's config check, but the aggregator refuses it
if [ -e "$R/checkpoints/data.mdb" ]; then
    expect_run 2 "checkpoint of another model: exit 2, one line naming the aggregator" \
        "aggregator exited on its own (exit code 2, bad config or input)" "'cnn'" "mlp" \
        "$R/aggregator.log" -- "$CONF" --run-dir "$R" --set federation.model=mlp
else
    notok "checkpoint of another model: the first run left no checkpoint in $R/checkpoints"
fi

# fedmq checkpoints --metrics over the run's checkpoint (version 0): the accuracy of the last
# record for version 0, whatever the writer's spacing; a malformed line is skipped, counted
# and named (FILE:LINE) in one warning line; a missing metrics file is bad input
M=$T/metrics.jsonl
printf '%s\n' '{"version":0,"accuracy":0.25,"time":1}' '' '{"version": 1, "accuracy": 0.5}' \
    '{"version" : 0 , "accuracy" : 0.125 , "class_accuracy": [0.1, {"x": null}]}' \
    '{"version": 0, "accuracy": 0.9' '{"version": 0, "accuracy": null}' >"$M"
if [ -e "$R/checkpoints/data.mdb" ]; then
    "$FEDMQ" checkpoints "$R/checkpoints" --metrics "$M" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 0 ] && grep -qE '^0 .* 0\.1250  ok$' "$T/out" &&
        [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "1 malformed line skipped (first: $M:5: " "$T/err"; then
        ok "checkpoints --metrics: accuracy of version 0, one warning for the malformed line"
    else
        notok "checkpoints --metrics: accuracy of version 0, one warning for the malformed line" \
            "exit status $rc"
        show "$T/out" "stdout"
        show "$T/err" "stderr"
    fi
    "$FEDMQ" checkpoints "$R/checkpoints" --metrics "$T/no-such.jsonl" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 2 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "no-such.jsonl" "$T/err"; then
        ok "checkpoints --metrics with a missing file: exit 2, one line"
    else
        notok "checkpoints --metrics with a missing file: exit 2, one line" "exit status $rc"
        show "$T/err" "stderr"
    fi
fi

# (c) rejected by fedmq run's own config check: no daemon starts
expect_run 2 "bad config value: exit 2, one line from fedmq run itself" \
    "num_clients" -- "$CONF" --run-dir "$T/run-c" --set federation.num_clients=-5
if [ -e "$T/run-c" ]; then
    notok "bad config value: no run directory is created" "$T/run-c exists"
else
    ok "bad config value: no run directory is created"
fi

# (d) fedmq run killed by SIGKILL (no chance to stop its children): each daemon gets SIGTERM
# from the kernel (FEDMQ_PARENT_PID, PR_SET_PDEATHSIG) and stops by itself
alive() { [ -e "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
mapfile -t p < <(loopback_ports)
# shellcheck disable=SC2068 # each line of loopback_ports is "--set key=value"
(timeout -k 5 "$TMO" "$FEDMQ" run "$SRC/configs/fedmq.conf" ${p[@]} --run-dir "$T/run-d" \
    --set federation.model=mlp --set federation.time_limit_s=100 >"$T/out-d" 2>"$T/err-d" \
    </dev/null; true) 2>/dev/null & # the subshell, not the test, notes the SIGKILL
spid=$!
kids=()
for _ in $(seq 1 300); do # the runner: the timeout's child; its children: the four daemons
    tpid=$(pgrep -P "$spid" -x timeout | head -n 1)
    rpid=$([ -n "$tpid" ] && pgrep -P "$tpid" -x fedmq | head -n 1)
    [ -n "$rpid" ] && mapfile -t kids < <(pgrep -P "$rpid")
    [ "${#kids[@]}" -eq 4 ] && break
    sleep 0.1
done
if [ "${#kids[@]}" -ne 4 ]; then
    notok "SIGKILL of fedmq run: its four daemons started" "children: ${kids[*]:-none}"
    show "$T/err-d" "stderr"
else
    sleep 1 # let each daemon get past its start (the kernel's request is made there)
    kill -KILL "$rpid"
    left=("${kids[@]}")
    for _ in $(seq 1 300); do
        still=()
        for k in "${left[@]}"; do alive "$k" && still+=("$k"); done
        left=("${still[@]}")
        [ "${#left[@]}" -eq 0 ] && break
        sleep 0.1
    done
    if [ "${#left[@]}" -eq 0 ]; then
        ok "SIGKILL of fedmq run: its four daemons stop by themselves within 30 s"
    else
        notok "SIGKILL of fedmq run: its four daemons stop by themselves within 30 s" \
            "still running after 30 s: $(for k in "${left[@]}"; do cat "/proc/$k/comm"; done | xargs)"
        kill -KILL "${left[@]}" 2>/dev/null
    fi
    if grep -qE "stopping (at version|: folding)" "$T/run-d/aggregator.log" 2>/dev/null; then
        ok "SIGKILL of fedmq run: the aggregator logged a clean stop"
    else
        notok "SIGKILL of fedmq run: the aggregator logged a clean stop"
        show "$T/run-d/aggregator.log" "aggregator.log"
    fi
fi
wait "$spid" 2>/dev/null

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
