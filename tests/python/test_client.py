"""fedmq_client.Client against fake servers (Python sockets in the daemons' places): the
membership messages, snapshot requests, ACK bookkeeping, resends (timeout, doubling, a new
"boot"), the memory bound, Poisson rounds and the local checks of send_update."""
import time

import numpy as np
import pytest
import zmq

from fakes import FakeServers
from fedmq_client import Client, wire
from fedmq_client.wire import WireError

BOOT1, BOOT2 = 0x1111, 0x2222


def logreg(v=0.0):
    return {"fc.weight": np.full((10, 784), v, np.float32), "fc.bias": np.full(10, v, np.float32)}


class Fake(FakeServers):
    """The broker's PUB and ROUTER, the aggregator's PULL and acks PUB, on loopback."""

    def recv(self, sock, timeout=5.0):
        """(type, fields, frame) of the next frame on sock, or None."""
        if not sock.poll(int(timeout * 1000)):
            return None
        if sock is self.router:
            self.peer, frame = sock.recv_multipart()
        else:
            frame = sock.recv()
        t, m = wire.decode(frame)
        return t, m, frame

    def expect(self, sock, types, timeout=5.0):
        """The next frame of one of `types`, skipping others (heartbeats); None at timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.recv(sock, end - time.monotonic())
            if r and r[0] in types:
                return r
        return None

    def publish_until(self, frame, cond, sock=None, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            (sock or self.pub).send(frame)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.1:
                if cond():
                    return True
                time.sleep(0.01)
        return False



@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.close()


def mk(fake, **kw):
    args = dict(trainer_id="py-t1", clients=(0, 10), workers=2, model="logreg",
                heartbeat_s=0.2, ack_timeout_s=0.4)
    args.update(kw)
    return Client(fake.ep, **args)


def test_membership_snapshot_and_model(fake):
    c = mk(fake)
    try:
        t, hello, _ = fake.expect(fake.pull, ["HELLO"])
        assert hello == {"trainer": "py-t1", "pid": c.pid, "cfirst": 0, "ccount": 10,
                         "workers": 2, "seq": 0, "sent": 0, "busy": 0}
        assert fake.expect(fake.router, ["HELLO"])[1]["seq"] == 0
        t, req, _ = fake.expect(fake.router, ["SNAPSHOT_REQ"], 3)  # no model yet
        assert req == {"from": "py-t1", "have": 0}
        fake.router.send_multipart([fake.peer, wire.encode_model(4, "logreg", 1.0, logreg(1),
                                                                 boot=BOOT1)])
        m = c.wait_model(5)
        assert m is not None and m.mv == 4 and m.boot == BOOT1 and not m.sync
        np.testing.assert_array_equal(m.params["fc.bias"], np.ones(10, np.float32))
        assert c.wait_model(0.3, newer_than=m) is None
        assert fake.publish_until(wire.encode_model(3, "logreg", 2.0, logreg(2), boot=BOOT1),
                                  lambda: c.latest().serial > m.serial)
        assert c.latest().mv == 3  # a lower version from the PUB replaces it (a restart)
        c.set_busy(1)
        seqs = []
        end = time.monotonic() + 3
        while len(seqs) < 3 and time.monotonic() < end:
            r = fake.expect(fake.pull, ["HEARTBEAT"], 1)
            if r:
                seqs.append(r[1]["seq"])
                assert r[1]["busy"] in (0, 1)
        assert len(seqs) == 3 and seqs == sorted(seqs) and seqs[0] >= 1
        # a bad frame is counted, not taken
        fake.pub.send(b"\x81\xa1v\x02")
        time.sleep(0.3)
        assert c.counters()["bad_frames"] >= 1 and c.latest().mv == 3
    finally:
        c.close()
    r = fake.expect(fake.pull, ["BYE"], 3)
    assert r is not None and r[1]["seq"] > seqs[-1]


def _model(fake, c, frame):
    assert fake.publish_until(frame, lambda: c.latest() is not None and
                              c.latest().key() == wire.decode_model(frame).key())
    return c.latest()


def test_resend_until_acked(fake):
    c = mk(fake, ack_timeout_s=0.3)
    try:
        m = _model(fake, c, wire.encode_model(1, "logreg", 1.0, logreg(), boot=BOOT1))
        uid = c.send_update(m, 3, logreg(0.5), n=10, steps=2, loss=0.1, secs=0.2)
        t, u, first = fake.expect(fake.pull, ["UPDATE"])
        assert u["id"] == uid and u["client"] == 3 and u["base"] == 1 and u["trainer"] == "py-t1"
        np.testing.assert_array_equal(
            wire.check_tensors("UPDATE", u["tensors"])["fc.weight"], np.full((10, 784), 0.5))
        assert c.fate(uid).status == "pending"
        times, t0 = [], time.monotonic()
        while len(times) < 2:
            r = fake.expect(fake.pull, ["UPDATE"], 3)
            assert r is not None, "no resend"
            assert r[2] == first  # the same frame, the same id
            times.append(time.monotonic() - t0)
        # first resend after the timeout, the next after twice that
        assert 0.2 < times[0] < 0.9 and times[1] - times[0] > 0.45, times
        ack = wire.encode_ack(BOOT1, 2, "applied", [bytes(16), uid])
        assert fake.publish_until(ack, lambda: c.fate(uid).final, sock=fake.acks)
        f = c.wait_fate(uid, 1)
        assert f.status == "applied" and f.mv == 2 and f.resends >= 2
        cnt = c.counters()
        assert cnt["applied"] == 1 and cnt["pending"] == 0 and cnt["resent"] >= 2
        while fake.recv(fake.pull, 0.1):
            pass
        assert fake.expect(fake.pull, ["UPDATE"], 1.5) is None  # nothing resent any more
        # a refusal is final too
        uid2 = c.send_update(m, 4, delta=logreg(0.1), n=1, steps=1, loss=0.0, secs=0.0)
        assert fake.publish_until(wire.encode_ack(BOOT1, 2, "stale", [uid2]),
                                  lambda: c.fate(uid2).final, sock=fake.acks)
        assert c.fate(uid2).status == "stale" and c.counters()["refused"] == 1
    finally:
        c.close()


def test_new_boot_resends_at_once(fake):
    c = mk(fake, ack_timeout_s=60)
    try:
        m = _model(fake, c, wire.encode_model(1, "logreg", 1.0, logreg(), boot=BOOT1))
        uids = [c.send_update(m, k, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
                for k in (1, 2)]
        got = [fake.expect(fake.pull, ["UPDATE"])[1]["id"] for _ in uids]
        assert got == uids
        _model(fake, c, wire.encode_model(1, "logreg", 5.0, logreg(), boot=BOOT2))
        again = [fake.expect(fake.pull, ["UPDATE"], 2) for _ in uids]
        assert all(again) and [r[1]["id"] for r in again] == uids
        assert all(c.fate(u).status == "pending" for u in uids)
        # a MODEL without "boot" (no acks): nothing is kept
        m0 = _model(fake, c, wire.encode_model(2, "logreg", 6.0, logreg()))
        u0 = c.send_update(m0, 1, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        assert c.fate(u0).status == "untracked" and c.fate(u0).final
    finally:
        c.close()


def test_memory_bound_gives_up_the_oldest(fake):
    c = mk(fake, unacked_max_mb=0.05, ack_timeout_s=60)  # 52 KB: one logreg UPDATE
    try:
        m = _model(fake, c, wire.encode_model(1, "logreg", 1.0, logreg(), boot=BOOT1))
        a = c.send_update(m, 1, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        b = c.send_update(m, 2, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        assert c.wait_fate(a, 3).status == "given_up"
        assert c.fate(b).status == "pending" and c.counters()["given_up"] == 1
    finally:
        c.close()


def test_sync_rounds_poisson_and_local_checks(fake):
    c = mk(fake)
    try:
        m = _model(fake, c, wire.encode_model(5, "logreg", 1.0, logreg(), boot=BOOT1, round=0,
                                              cohort=[]))
        assert m.sync and not c.should_train(m, 1) and c.clients_to_train(m) == []
        m = _model(fake, c, wire.encode_model(5, "logreg", 2.0, logreg(), boot=BOOT1, round=3,
                                              cohort=[1, 3, 12], mu=0.01))
        assert c.clients_to_train(m) == [1, 3] and not c.should_train(m, 2)
        uid = c.send_update(m, 3, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        u = fake.expect(fake.pull, ["UPDATE"])[1]
        assert u["id"] == uid and u["round"] == 3 and u["base"] == 5
        with pytest.raises(ValueError, match="not in the cohort"):
            c.send_update(m, 2, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        with pytest.raises(ValueError, match="not one of this pool"):
            c.send_update(m, 12, delta=logreg(0.01), n=5, steps=1, loss=0.0, secs=0.0)
        bad = logreg(0.01)
        bad["fc.bias"] = np.zeros(11, np.float32)
        with pytest.raises(WireError) as e:
            c.send_update(m, 1, delta=bad, n=5, steps=1, loss=0.0, secs=0.0)
        assert e.value.code == "shape"
        with pytest.raises(WireError) as e:
            c.send_update(m, 1, delta={"fc.weight": bad["fc.weight"]}, n=5, steps=1, loss=0.0,
                          secs=0.0)
        assert e.value.code == "name"
        with pytest.raises(WireError):
            c.send_update(m, 1, delta=logreg(np.nan), n=5, steps=1, loss=0.0, secs=0.0)
        with pytest.raises(WireError, match="samples"):
            c.send_update(m, 1, delta=logreg(0.0), n=0, steps=1, loss=0.0, secs=0.0)
        # Poisson: coins drawn once per (round, client); the "no"s go out as one DECLINE
        cohort = list(range(10))
        p = _model(fake, c, wire.encode_model(6, "logreg", 3.0, logreg(), boot=BOOT1, round=4,
                                              cohort=cohort, q=0.5))
        train = c.clients_to_train(p)
        for _ in range(3):
            assert c.clients_to_train(p) == train
        declined = c.decline(p)
        assert sorted(train + declined) == cohort
        if declined:
            d = fake.expect(fake.pull, ["DECLINE"])[1]
            assert d == {"trainer": "py-t1", "clients": tuple(declined), "base": 6, "round": 4}
    finally:
        c.close()


def test_bad_arguments(fake):
    with pytest.raises(ValueError):
        Client(fake.ep, trainer_id="bad id")
    with pytest.raises(ValueError):
        Client({"model_pub": fake.ep["model_pub"]})
    with pytest.raises(zmq.ZMQError):
        Client(dict(fake.ep, updates="nope://x"), trainer_id="t")


def test_reconnect_says_hello_again(fake):
    c = mk(fake, heartbeat_s=5)
    try:
        assert fake.expect(fake.router, ["HELLO"]) is not None
        fake.router.close(0)  # the broker restarts on the same endpoint
        time.sleep(0.2)
        fake.router = fake.ctx.socket(zmq.ROUTER)
        fake.router.setsockopt(zmq.LINGER, 0)
        fake.router.bind(fake.ep["snapshot"])
        r = fake.expect(fake.router, ["HELLO"], 10)
        assert r is not None and r[1]["seq"] >= 1
        assert c.counters()["reconnects"] == 1
    finally:
        c.close()


def test_from_config(fake, tmp_path):
    import os
    src = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "fedmq.conf")
    from fedmq_client import config
    cfg = config.load(src)  # resolved by `fedmq config`, as the daemons resolve it
    args = config.client_args(cfg)
    assert args["heartbeat_s"] == 2.0 and args["ack_timeout_s"] == 30.0  # fedmq.conf defaults
    assert args["clients"] == (0, 100) and args["model"] == "cnn" and args["security"] is None
    assert args["endpoints"]["acks"] == "tcp://127.0.0.1:5565"
    assert args["trainer_id"] is None  # [trainer] id empty: <host>-<pid>
    conf = tmp_path / "t.conf"
    conf.write_text("[federation]\nmodel = logreg\n[trainer]\nclients = 20-29\n"
                    "heartbeat_interval_s = 0.2\nid = py-conf\n")
    sets = ["endpoints.%s=%s" % (k, v) for k, v in fake.ep.items()]
    c = Client.from_config(str(conf), sets)
    try:
        assert (c.cfirst, c.ccount, c.model_name) == (20, 10, "logreg")
        hello = fake.expect(fake.pull, ["HELLO"])[1]
        assert (hello["cfirst"], hello["ccount"], hello["trainer"]) == (20, 10, "py-conf")
        assert fake.expect(fake.pull, ["HEARTBEAT"], 2) is not None  # every 0.2 s
    finally:
        c.close()
    # what the daemons refuse, refused with their one line
    (tmp_path / "t2.conf").write_text("oops\n")
    with pytest.raises(config.ConfigError, match="t2.conf:1"):
        config.load(str(tmp_path / "t2.conf"))
    with pytest.raises(config.ConfigError, match="heartbeat_interval_s"):
        config.load(str(conf), ["broker.heartbeat_timeout_s=0.1"])