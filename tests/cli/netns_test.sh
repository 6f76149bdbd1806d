#!/usr/bin/env bash
# netns_test: a small federation across three network namespaces (the server host and two
# trainer hosts, veth pairs on a bridge: tests/chaos/fedmq_chaos.py), with faults: one
# kill -9 of the aggregator, a 6 s partition of one trainer host, 5% packet loss for 7 s.
# Passes when the run reaches a short-run threshold (mlp, 20 IID clients: 0.80 test
# accuracy) and the history check holds (no update applied twice, every acknowledged
# update applied exactly once, every update answered unless its trainer was killed or it
# was in flight at the end; the chaos harness documents the checks). Skipped (exit 77) with
# one line saying why where network namespaces or nftables are unavailable (not root, a
# container without CAP_NET_ADMIN).
#
# Usage: bash tests/cli/netns_test.sh <path-to-fedmq> <source-dir>
set -u
FEDMQ=${1:?usage: netns_test.sh <path-to-fedmq> <source-dir>}
SRC=${2:?usage: netns_test.sh <path-to-fedmq> <source-dir>}
BIN=$(dirname "$FEDMQ")
PY=$(command -v python3) || { echo "not ok - python3 is needed"; exit 1; }
# a loaded 2-core machine under ASan trains several times slower: more time, same checks
dur=40
[ -n "${FM_SANITIZED:-}" ] && dur=90
OUT=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-netns.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
"$PY" "$SRC/tests/chaos/fedmq_chaos.py" --bin "$BIN" --src "$SRC" --out "$OUT/run" \
    --seed 7 --duration "$dur" --target 0.80 --pools 2 \
    --kill-aggregator 1 --partition "t2@$((dur / 4))+6" --loss "5@$((dur / 2))-$((dur / 2 + 7))" \
    --set federation.model=mlp --set federation.num_clients=20 \
    --set federation.partition=iid --set federation.holdout=0 \
    --set evaluator.population=false --set aggregator.buffer_k=5 \
    --set trainer.ack_timeout_s=3 --set broker.heartbeat_timeout_s=5 \
    >"$OUT/result.json" 2>"$OUT/progress.log"
rc=$?
cat "$OUT/progress.log" | sed 's/^/# /'
cat "$OUT/result.json"
if [ $rc -eq 77 ]; then
    echo "SKIP: $(grep -o '"skipped": "[^"]*"' "$OUT/result.json")"
    exit 77
fi
check() { if "$PY" -c "import json,sys; r=json.load(open('$OUT/result.json')); sys.exit(0 if ($2) else 1)"; then echo "ok - $1"; else echo "not ok - $1"; fail=1; fi; }
fail=0
check "the run finished without error" "'error' not in r"
check "the aggregator was killed once and came back" "r['kills'].get('aggregator') == 1"
check "0.80 test accuracy reached (best $(grep -o '"best_accuracy": [0-9.]*' "$OUT/result.json"))" "r.get('target_reached_s') is not None"
check "no update applied twice" "r['history']['applied_twice'] == 0"
check "every acknowledged update is in the version its ACK named" "r['history']['acked_not_committed'] == 0"
check "no refused update was applied" "r['history']['refused_but_committed'] == 0"
check "every applied update was sent" "r['history']['committed_never_sent'] == 0"
check "updates were acknowledged (> 50)" "r['history']['acked_applied'] > 50"
check "every update answered, except in flight at the end" "r['history']['unanswered_beyond_inflight'] == 0"
check "every daemon exited 0 at the end" "all(c == 0 for c in r['exit_codes'].values())"
if [ $rc -ne 0 ] && [ $fail -eq 0 ]; then echo "not ok - the harness exited $rc"; fail=1; fi
[ $fail -eq 0 ] && echo "netns: all checks passed"
exit $fail
