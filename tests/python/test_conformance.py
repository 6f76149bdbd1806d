"""Conformance: fedmq-trainer (C) and fedmq-py-trainer (Python) run the same message
sequences (docs/PROTOCOL.md §3, §10) against the same scripted broker and aggregator.

The test plays the broker (PUB model_pub, ROUTER snapshot) and the aggregator (PULL
updates, PUB acks) itself, records every frame a trainer sends, and runs one scenario on
each implementation (logreg, clients 0-1 of 20, heartbeats every 0.3 s):

  1. start: HELLO with seq 0, the same bytes to the broker and to the aggregator, the
     trainer's client range; the broker answers it with MODEL v0 (async, boot 7);
  2. async: UPDATEs on v0 (base 0, no round, model logreg, a fresh 16-byte id each, n =
     the client's training-set size from `fedmq partition`), ACKed applied;
  3. sync, no round open (MODEL v1 with round 0 and an empty cohort): no UPDATE on it;
  4. round 1 with cohort [1]: exactly one UPDATE, client 1, base 1, round 1; none for
     client 0 (not in the cohort);
  5. the broker restarts (its ROUTER closes and binds again): HELLO again, with the next
     seq, not 0;
  6. SIGTERM: BYE with the next seq to both, exit 0.
Throughout, the membership frames to the aggregator carry seq 0, 1, 2, ... with no gap and
the broker's copies are the same frames."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from daemons import bin_dir
from fakes import FakeServers
from fedmq_client import data, wire

pytest.importorskip("torch")

SRC = os.path.join(os.path.dirname(__file__), "..", "..")
CONF = os.path.realpath(os.path.join(SRC, "configs", "fedmq.conf"))
SETS = ["federation.model=logreg", "federation.num_clients=20", "trainer.clients=0-1",
        "federation.seed=3", "trainer.workers=1", "trainer.heartbeat_interval_s=0.3",
        "trainer.metrics_addr=off", "trainer.ack_timeout_s=60"]
BOOT = 7


class Servers(FakeServers):
    """The broker's and the aggregator's sockets, and every frame the trainer sent."""

    def __init__(self):
        super().__init__()
        self.log = []     # (socket name, type, fields, frame, time)

    def pump(self, seconds, until=None):
        """Record frames for `seconds` or until until() is true; returns until()'s value."""
        end = time.monotonic() + seconds
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        while True:
            if until and until():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return bool(until and until())
            for s, _ in poller.poll(int(min(left, 0.05) * 1000)):
                if s is self.router:
                    self.peer, frame = s.recv_multipart()
                    name = "broker"
                else:
                    frame = s.recv()
                    name = "aggregator"
                t, m = wire.decode(frame)
                self.log.append((name, t, m, frame, time.monotonic()))

    def of(self, name, *types):
        return [e for e in self.log if e[0] == name and e[1] in types]

    def restart_router(self):
        self.router.close(0)
        time.sleep(0.3)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        for _ in range(50):
            try:
                self.router.bind(self.ep["snapshot"])
                return
            except zmq.ZMQError:
                time.sleep(0.1)
        raise AssertionError("cannot bind the snapshot endpoint again")


def _spawn(kind, srv, tmp):
    sets = SETS + ["endpoints.%s=%s" % (k, v) for k, v in srv.ep.items()]
    args = []
    for s in sets:
        args += ["--set", s]
    log = open(os.path.join(str(tmp), kind + ".log"), "ab")
    if kind == "c":
        argv = [os.path.join(bin_dir(), "fedmq-trainer"), "--config", CONF] + args
    else:
        argv = [sys.executable, "-m", "fedmq_client.trainer_cli", "--config", CONF] + args
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _model(mv, ts, cohort=None, rnd=None):
    params = {"fc.weight": np.full((10, 784), 0.001 * (mv + 1), np.float32),
              "fc.bias": np.zeros(10, np.float32)}
    return wire.encode_model(mv, "logreg", ts, params, round=rnd, cohort=cohort, boot=BOOT)


@pytest.mark.parametrize("kind", ["c", "python"])
def test_same_message_sequence(kind, tmp_path):
    part = data.partition(CONF, SETS)
    srv = Servers()
    proc = _spawn(kind, srv, tmp_path)
    try:
        # 1. HELLO, seq 0, the same frame to both
        assert srv.pump(90, lambda: srv.of("broker", "HELLO") and srv.of("aggregator", "HELLO")), \
            open(os.path.join(str(tmp_path), kind + ".log")).read()[-2000:]
        hb, ha = srv.of("broker", "HELLO")[0], srv.of("aggregator", "HELLO")[0]
        assert ha[2]["seq"] == 0 and hb[3] == ha[3]
        assert (ha[2]["cfirst"], ha[2]["ccount"]) == (0, 2)
        trainer = ha[2]["trainer"]
        # the broker answers HELLO with the current model (async, acknowledging aggregator)
        srv.router.send_multipart([srv.peer, _model(0, 100.0)])
        srv.pub.send(_model(0, 100.0))
        # 2. async updates on v0
        assert srv.pump(60, lambda: len(srv.of("aggregator", "UPDATE")) >= 2)
        ups = srv.of("aggregator", "UPDATE")
        for _, _, u, _, _ in ups:
            assert u["base"] == 0 and u["round"] == 0 and u["model"] == "logreg"
            assert u["trainer"] == trainer and u["client"] in (0, 1) and len(u["id"]) == 16
            assert u["n"] == part.samples(u["client"]), (u["client"], u["n"])
        assert len({u[2]["id"] for u in ups}) == len(ups)
        assert {u[2]["client"] for u in ups[:2]} == {0, 1}     # round-robin
        srv.acks.send(wire.encode_ack(BOOT, 1, "applied", [u[2]["id"] for u in ups]))
        # 3. sync, no round open: nobody trains on it
        t_round0 = time.monotonic()
        for _ in range(20):
            srv.pub.send(_model(1, 200.0, cohort=[], rnd=0))
            srv.pump(0.1)
        srv.pump(1.5)
        late = [e for e in srv.of("aggregator", "UPDATE") if e[2]["base"] >= 1]
        assert not late, late[0][2]
        # 4. round 1, cohort [1]: one UPDATE, client 1
        srv.pub.send(_model(1, 300.0, cohort=[1], rnd=1))
        r1 = lambda: [e for e in srv.of("aggregator", "UPDATE") if e[2]["round"] == 1]  # noqa: E731
        for _ in range(300):
            if srv.pump(0.2, lambda: r1()):
                break
            srv.pub.send(_model(1, 300.0, cohort=[1], rnd=1))   # a repeat: no second training
        srv.pump(2.0)
        assert len(r1()) == 1, [e[2]["client"] for e in r1()]
        u = r1()[0][2]
        assert (u["client"], u["base"], u["round"]) == (1, 1, 1)
        assert all(e[4] < t_round0 + 0.5 or e[2]["base"] == 1
                   for e in srv.of("aggregator", "UPDATE"))
        # 5. the broker restarts: HELLO again, the next seq
        before = max(e[2]["seq"] for e in srv.of("aggregator", "HELLO", "HEARTBEAT"))
        srv.restart_router()
        assert srv.pump(30, lambda: len(srv.of("broker", "HELLO")) >= 2)
        again = srv.of("broker", "HELLO")[-1][2]
        assert again["seq"] > before and again["trainer"] == trainer
        # 6. SIGTERM: BYE to both, the next seq, exit 0
        srv.pump(1.0)
        proc.send_signal(signal.SIGTERM)
        assert srv.pump(30, lambda: srv.of("aggregator", "BYE") and srv.of("broker", "BYE"))
        assert proc.wait(30) == 0
        srv.pump(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        srv.close()
    # membership to the aggregator: seq 0, 1, 2, ... without a gap, BYE last; the broker's
    # copies are the same frames (it may miss some while it was down)
    mem = srv.of("aggregator", "HELLO", "HEARTBEAT", "BYE")
    assert [e[2]["seq"] for e in mem] == list(range(len(mem))), [e[2]["seq"] for e in mem]
    assert mem[-1][1] == "BYE" and sum(1 for e in mem if e[1] == "BYE") == 1
    assert sum(1 for e in mem if e[1] == "HELLO") == 2          # start, broker restart
    by_seq = {e[2]["seq"]: e[3] for e in mem}
    for e in srv.of("broker", "HELLO", "HEARTBEAT", "BYE"):
        assert by_seq.get(e[2]["seq"]) == e[3], e[2]
    assert all(e[2]["pid"] == mem[0][2]["pid"] for e in mem)
