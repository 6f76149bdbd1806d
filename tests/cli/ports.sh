# ports.sh: loopback endpoints for the CLI tests that start a whole federation (sourced, not
# run: not a *_test.sh).
#   loopback_ports: six loopback ports free at once (bound together, then released), as
#   "--set endpoints.KEY=tcp://127.0.0.1:PORT" lines, and /metrics off in every daemon (on by
#   default, on fixed ports: parallel tests would race), one --set per line.
loopback_ports() {
    python3 - <<'PYEOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
keys = ["model_pub", "snapshot", "updates", "aggregator_models", "metrics_pub", "acks"]
for k, s in zip(keys, socks):
    print("--set endpoints.%s=tcp://127.0.0.1:%d" % (k, s.getsockname()[1]))
for d in ["broker", "trainer", "aggregator", "evaluator"]:
    print("--set %s.metrics_addr=off" % d)
PYEOF
}
