"""Real fedmq daemons for the integration tests: loopback ports free at once (as
tests/cli/ports.sh picks them), bounded waits, everything killed at the end."""
import json
import os
import signal
import socket
import subprocess
import time

ENDPOINT_KEYS = ["model_pub", "snapshot", "updates", "aggregator_models", "metrics_pub", "acks"]


def bin_dir():
    d = os.environ.get("FEDMQ_BIN")
    if not d:
        import pytest
        pytest.skip("FEDMQ_BIN (the build directory with fedmq-broker) not set")
    return d


def free_endpoints():
    socks = []
    for _ in ENDPOINT_KEYS:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ep = {k: "tcp://127.0.0.1:%d" % s.getsockname()[1] for k, s in zip(ENDPOINT_KEYS, socks)}
    for s in socks:
        s.close()
    return ep


class Federation:
    """A broker and an aggregator (with `settings`: {"section.key": value}) in `tmp`."""

    def __init__(self, tmp, settings):
        self.tmp = str(tmp)
        self.ep = free_endpoints()
        self.ckpt = os.path.join(self.tmp, "ckpt")
        base = {"endpoints.%s" % k: v for k, v in self.ep.items()}
        base.update({"%s.metrics_addr" % d: "off"  # on by default, on fixed ports
                     for d in ("broker", "aggregator", "evaluator", "trainer")})
        base.update({"aggregator.checkpoint_dir": self.ckpt})
        base.update(settings)
        self.args = []
        for k, v in base.items():
            self.args += ["--set", "%s=%s" % (k, v)]
        self.procs = {}

    def start(self, *names):
        for name in names:
            log = open(os.path.join(self.tmp, name + ".log"), "ab")
            self.procs[name] = subprocess.Popen(
                [os.path.join(bin_dir(), "fedmq-" + name)] + self.args,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()

    def log(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stats(self):
        try:
            with open(os.path.join(self.ckpt, "stats.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def wait_stats(self, cond, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.stats()
            if st and cond(st):
                return st
            time.sleep(0.1)
        return None

    def alive(self):
        return {n: p.poll() is None for n, p in self.procs.items()}

    def stop(self, name, sig=signal.SIGTERM, timeout=10.0):
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def close(self):
        for name in list(self.procs):
            self.stop(name)

    def tool(self, *args, timeout=60):
        return subprocess.run([os.path.join(bin_dir(), "fedmq")] + list(args),
                              capture_output=True, text=True, timeout=timeout)
