"""A Python Client in a federation of the real C broker and aggregator (loopback, free
ports, bounded waits): async with acks, one sync round, a refused update, the safetensors
files both ways (the aggregator's [aggregator] init reads ours; we read `fedmq export`)."""
import os
import signal

import numpy as np
import pytest

from fedmq_client import Client, spec
from fedmq_client.wire import WireError

from daemons import Federation

W = 60.0  # every wait is bounded by this (seconds)


def init_params(seed=7):
    rng = np.random.default_rng(seed)
    return {"fc.weight": (0.01 * rng.standard_normal((10, 784))).astype(np.float32),
            "fc.bias": np.zeros(10, np.float32)}


def delta_of(v):
    return {"fc.weight": np.full((10, 784), v, np.float32), "fc.bias": np.full(10, v, np.float32)}


@pytest.fixture
def fed(tmp_path):
    feds = []

    def make(settings):
        f = Federation(tmp_path, settings)
        feds.append(f)
        return f
    yield make
    for f in feds:
        f.close()


def common(tmp_path, mode):
    init = os.path.join(str(tmp_path), "init.safetensors")
    p = init_params()
    spec.save_safetensors(init, p, {"from": "fedmq_client"})
    return p, {"federation.model": "logreg", "federation.num_clients": 10,
               "federation.clients_per_round": 2, "federation.mode": mode,
               "federation.time_limit_s": 0, "aggregator.init": init,
               "aggregator.server_optimizer": "fedavg", "aggregator.server_lr": 1,
               "aggregator.acks": "true", "aggregator.staleness": "constant", "aggregator.round_timeout_s": 30,
               "broker.heartbeat_timeout_s": 10, "trainer.clients": "0-9"}


def wait_model(c, f, newer_than=None):
    """c.wait_model, bounded by W, failing at once (with the logs) if a daemon died."""
    for _ in range(int(W * 2)):
        m = c.wait_model(0.5, newer_than=newer_than)
        if m is not None:
            return m
        dead = [n for n, up in f.alive().items() if not up]
        assert not dead, "%s died: %s" % (dead, f.log(dead[0])[-2000:])
    return None


def client(f, **kw):
    ep = {k: f.ep[k] for k in ("model_pub", "snapshot", "updates", "acks")}
    args = dict(trainer_id="py-it", clients=(0, 10), workers=1, model="logreg",
                heartbeat_s=0.5, ack_timeout_s=5)
    args.update(kw)
    return Client(ep, **args)


def start_async(tmp_path, fed, **extra):
    """An async federation of broker + aggregator (common settings + extra) and a client
    holding its first model: (init params, federation, client, model)."""
    p0, settings = common(tmp_path, "async")
    settings.update(extra)
    f = fed(settings)
    f.start("broker", "aggregator")
    c = client(f)
    m = wait_model(c, f)
    if m is None:
        c.close()
    assert m is not None, f.log("aggregator")[-2000:]
    return p0, f, c, m


def test_async_acks_versions_and_refusal(tmp_path, fed):
    p0, f, c, m = start_async(tmp_path, fed)
    try:
        assert m.mv == 0 and m.boot != 0 and not m.sync
        for k in p0:  # the C reader took our safetensors file as the initial model
            np.testing.assert_array_equal(m.params[k], p0[k])
        # 4 updates of the same delta: 2 versions of K = 2, each the mean of its deltas
        uids = [c.send_update(m, k, delta=delta_of(0.01), n=100, steps=3, loss=0.5, secs=0.1)
                for k in range(4)]
        fates = [c.wait_fate(u, W) for u in uids]
        assert [x.status if x else None for x in fates] == ["applied"] * 4, \
            (c.counters(), f.log("aggregator")[-3000:])
        st = f.wait_stats(lambda s: s.get("version", 0) >= 2, W)
        assert st is not None and st["updates_applied"] >= 4 and st["acked"] >= 4, f.stats()
        # each carried "ts" and "wait": the aggregator's time budget timed every one
        assert st["time"]["updates"] >= 4 and st["time"]["timed"] == st["time"]["updates"], \
            st["time"]
        assert st["time"]["transport_s"] > 0 and st["time"]["wait_s"] >= 0, st["time"]
        m2 = wait_model(c, f, newer_than=1)
        assert m2 is not None and m2.mv >= 2
        np.testing.assert_allclose(m2.params["fc.weight"], p0["fc.weight"] + 0.02, atol=1e-5)
        np.testing.assert_allclose(m2.params["fc.bias"], 0.02, atol=1e-5)
        # from params (the local weights), the delta is computed against the model
        local = {k: v + 0.005 for k, v in m2.params.items()}
        u5 = [c.send_update(m2, k, local, n=10, steps=1, loss=0.4, secs=0.1) for k in (5, 6)]
        assert [c.wait_fate(u, W).status for u in u5] == ["applied"] * 2  # K = 2: one version
        m3 = wait_model(c, f, newer_than=m2.mv)
        np.testing.assert_allclose(m3.params["fc.bias"], m2.params["fc.bias"] + 0.005, atol=1e-6)
        # a wrong shape: refused locally, and by the aggregator when sent unchecked
        bad = delta_of(0.01)
        bad["fc.bias"] = np.zeros(11, np.float32)
        with pytest.raises(WireError) as e:
            c.send_update(m2, 6, delta=bad, n=10, steps=1, loss=0.0, secs=0.1)
        assert e.value.code == "shape"
        ub = c.send_update(m2, 6, delta=bad, n=10, steps=1, loss=0.0, secs=0.1, check=False)
        fb = c.wait_fate(ub, W)
        assert fb is not None and fb.status == "shape", c.fate(ub)
        st = f.wait_stats(lambda s: s.get("rejected", {}).get("shape", 0) >= 1, W)
        assert st is not None, f.stats()
        assert c.counters()["refused"] == 1 and c.counters()["bad_frames"] == 0
        # the aggregator's checkpoint, exported by the C writer, read by ours
        f.stop("aggregator")
        out = os.path.join(str(tmp_path), "export.safetensors")
        r = f.tool("export", "--checkpoint", f.ckpt, "--out", out)
        assert r.returncode == 0, r.stderr
        got, meta = spec.load_safetensors(out)
        assert list(got) == ["fc.weight", "fc.bias"]
        last = c.latest()
        np.testing.assert_array_equal(got["fc.weight"], last.params["fc.weight"])
    finally:
        c.close()
    assert f.alive().get("broker")


def test_sync_round(tmp_path, fed):
    p0, settings = common(tmp_path, "sync")
    settings["federation.aggregation_strategy"] = "fedavg"
    f = fed(settings)
    f.start("broker", "aggregator")
    c = client(f)
    try:
        m = wait_model(c, f)
        while m is not None and m.round < 1:  # round 0: none open yet (we just said HELLO)
            assert not c.should_train(m, 0) and c.clients_to_train(m) == []
            m = wait_model(c, f, newer_than=m)
        assert m is not None and m.sync and m.round >= 1, f.log("aggregator")[-2000:]
        cohort = c.clients_to_train(m)
        assert len(cohort) == 2 and set(cohort) <= set(range(10)), m.cohort
        outside = [k for k in range(10) if k not in m.cohort]
        assert not c.should_train(m, outside[0])
        uids = [c.send_update(m, k, delta=delta_of(0.01), n=50, steps=2, loss=0.3, secs=0.1)
                for k in cohort]
        assert [c.wait_fate(u, W).status for u in uids] == ["applied"] * 2, c.counters()
        nxt = wait_model(c, f, newer_than=m.mv)
        assert nxt is not None and nxt.round == m.round + 1 and nxt.mv == m.mv + 1
        np.testing.assert_allclose(nxt.params["fc.bias"], m.params["fc.bias"] + 0.01, atol=1e-6)
        st = f.wait_stats(lambda s: s.get("rounds_completed", 0) >= 1, W)
        assert st is not None and st["mode"] == "sync", f.stats()
        # a late update (the round it answers is closed) is refused as such
        late = c.send_update(m, cohort[0], delta=delta_of(0.01), n=5, steps=1, loss=0.0,
                             secs=0.0)
        assert c.wait_fate(late, W).status == "late"
    finally:
        c.close()


def test_curve(tmp_path, fed):
    """[security] mode = curve: keys from `fedmq keygen`; the Client loads its certificate
    (trainer id = its name) and the servers' public ones; an unenrolled key gets nothing."""
    from fedmq_client import Curve
    keys, allow = tmp_path / "keys", tmp_path / "keys" / "allow"
    allow.mkdir(parents=True)
    f0 = Federation(tmp_path, {})
    for spec_ in (["broker", "--role", "broker"], ["aggregator", "--role", "aggregator"],
                  ["evaluator", "--role", "evaluator"], ["monitor", "--role", "monitor"],
                  ["py-cur", "--role", "trainer", "--clients", "0-9"],
                  ["py-out", "--role", "trainer", "--clients", "0-9"]):
        r = f0.tool("keygen", *spec_, "--dir", str(keys))
        assert r.returncode == 0, r.stderr
    for n in ("broker", "evaluator", "monitor", "py-cur"):  # py-out is not enrolled
        (allow / (n + ".cert")).write_bytes((keys / (n + ".cert")).read_bytes())
    p0, settings = common(tmp_path, "async")
    settings.update({"security.mode": "curve", "security.allow_dir": str(allow)})
    for n in ("broker", "aggregator", "evaluator", "monitor"):
        settings["security.%s_cert" % n] = str(keys / (n + ".cert"))
    settings["security.trainer_cert"] = str(keys / "py-cur.cert")
    f = fed(settings)
    f.start("broker", "aggregator")
    sec = Curve(str(keys / "py-cur.cert"), str(keys / "broker.cert"), str(keys / "aggregator.cert"))
    ep = {k: f.ep[k] for k in ("model_pub", "snapshot", "updates", "acks")}
    with pytest.raises(ValueError, match="certificate's name"):
        Client(ep, trainer_id="someone-else", clients=(0, 10), security=sec)
    with pytest.raises(ValueError, match="enrolled for clients 0-9 only"):
        Client(ep, clients=(5, 10), security=sec)
    c = Client(ep, clients=(0, 10), model="logreg", security=sec, heartbeat_s=0.5,
               ack_timeout_s=5)
    out = Client(ep, clients=(0, 10), model="logreg", heartbeat_s=0.5,
                 security=Curve(str(keys / "py-out.cert"), str(keys / "broker.cert"),
                                str(keys / "aggregator.cert")))
    try:
        assert c.trainer_id == "py-cur"
        m = wait_model(c, f)
        assert m is not None and m.mv == 0
        uids = [c.send_update(m, k, delta=delta_of(0.01), n=10, steps=1, loss=0.1, secs=0.1)
                for k in (0, 1)]
        assert [c.wait_fate(u, W).status for u in uids] == ["applied"] * 2
        assert out.wait_model(2) is None  # no handshake: no model for an unenrolled key
        assert "mode = curve" in f.log("aggregator")
    finally:
        c.close()
        out.close()


def test_aggregator_restart_resends(tmp_path, fed):
    """An update folded but not yet in a version is lost when the aggregator restarts; its
    new "boot" makes the Client resend it at once (same id), and it is applied then."""
    p0, settings = common(tmp_path, "async")
    f = fed(settings)
    f.start("broker", "aggregator")
    c = client(f, ack_timeout_s=600)  # only the new boot can trigger the resend
    try:
        m = wait_model(c, f)
        u1 = c.send_update(m, 1, delta=delta_of(0.01), n=10, steps=1, loss=0.1, secs=0.1)
        assert c.wait_fate(u1, 1.0) is None  # folded, waiting for a second one (K = 2)
        f.stop("aggregator", signal.SIGKILL)  # a crash: the open buffer is lost
        f.start("aggregator")
        for _ in range(int(W * 10)):  # the MODEL of the new incarnation
            cur = c.latest()
            if cur.boot != m.boot:
                break
            c.wait_model(0.1, newer_than=cur)
        assert c.latest().boot != m.boot, f.log("aggregator")[-2000:]
        u2 = c.send_update(c.latest(), 2, delta=delta_of(0.01), n=10, steps=1, loss=0.1, secs=0.1)
        f1, f2 = c.wait_fate(u1, W), c.wait_fate(u2, W)
        assert f1 is not None and f2 is not None, ("no ACK", c.fate(u1), c.fate(u2), c.counters())
        assert (f1.status, f2.status) == ("applied", "applied"), (f1, f2, c.counters())
        assert f1.resends == 1 and c.counters()["resent"] == 1
    finally:
        c.close()


def test_evaluator_metrics_decode(tmp_path, fed):
    """The C evaluator's METRICS frames (its PUB) decode with wire.decode_metrics."""
    import zmq
    from fedmq_client import wire
    p0, settings = common(tmp_path, "async")
    settings.update({"evaluator.population": "true",
                     "evaluator.metrics_file": os.path.join(str(tmp_path), "metrics.jsonl")})
    f = fed(settings)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f.ep["metrics_pub"])
    try:
        f.start("broker", "aggregator", "evaluator")
        got = None
        for _ in range(int(W * 2)):
            if sub.poll(500):
                got = wire.decode_metrics(sub.recv())
                break
            dead = [n for n, up in f.alive().items() if not up]
            assert not dead, "%s died: %s" % (dead, f.log(dead[0])[-2000:])
        assert got is not None, f.log("evaluator")[-2000:]
        assert got["model"] == "logreg" and got["mv"] == 0 and len(got["cacc"]) == 10
        assert 0 <= got["acc"] <= 1 and got["n"] == 10000 and got["pc"] == 10
        assert 0 <= got["pmin"] <= got["pmean"] <= 1
    finally:
        sub.close(0)
        ctx.term()


@pytest.mark.parametrize("enc,tol", [("fp16", 2.0 ** -11), ("bf16", 2.0 ** -8)])
def test_half_precision_models(tmp_path, fed, enc, tol):
    """[aggregator] model_encoding = fp16 / bf16: the MODELs are protocol version 2 (through
    the C broker, which checks them); the client decodes them within the format's rounding
    of the float32 model, and its float32 updates still apply to the aggregator's float32
    master copy: version 1 of the export is exactly init + delta (the delta applied to the
    unrounded model), while the published model is its rounding."""
    p0, f, c, m = start_async(tmp_path, fed, **{"aggregator.model_encoding": enc})
    try:
        for k in p0:
            np.testing.assert_allclose(m.params[k], p0[k], rtol=tol, atol=1e-7)
        assert not np.array_equal(m.params["fc.weight"], p0["fc.weight"])  # it was rounded
        uids = [c.send_update(m, k, delta=delta_of(0.01), n=100, steps=1, loss=0.5, secs=0.1)
                for k in range(2)]
        assert [c.wait_fate(u, W).status for u in uids] == ["applied"] * 2, f.log("aggregator")
        m1 = wait_model(c, f, newer_than=0)
        assert m1 is not None and m1.mv == 1
        f.stop("aggregator")
        out = os.path.join(str(tmp_path), "export.safetensors")
        r = f.tool("export", "--checkpoint", f.ckpt, "--out", out)
        assert r.returncode == 0, r.stderr
        got, _ = spec.load_safetensors(out)
        np.testing.assert_allclose(got["fc.weight"], p0["fc.weight"] + np.float32(0.01),
                                   rtol=0, atol=1e-7)
        np.testing.assert_allclose(m1.params["fc.weight"], got["fc.weight"], rtol=tol, atol=1e-7)
    finally:
        c.close()
    assert f.alive().get("broker")
