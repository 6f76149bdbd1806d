"""fedmq_client.evaluate: score() against a numpy computation, the metrics file's record
against the C evaluator's (tests/integration/evaluator_test.c test_jsonl_format), the
Evaluator against a fake broker (newest model only, METRICS repeating the MODEL's counts,
rejections), and fedmq-py-spec on the digits example."""
import json
import math
import os
import threading
import time

import numpy as np
import pytest
import zmq

torch = pytest.importorskip("torch")

from fedmq_client import spec, wire  # noqa: E402
from fedmq_client.evaluate import Evaluator, jsonl_number, jsonl_record, score  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "..", "trainer", "python", "examples", "digits", "model.py")


def _numpy_score(w, b, x, y):
    z = x.astype(np.float64) @ w.T.astype(np.float64) + b.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    pred = z.argmax(1)
    cacc = [float((pred[y == c] == c).mean()) if (y == c).any() else 0.0 for c in range(10)]
    return float((pred == y).mean()), float(-logp[np.arange(len(y)), y].mean()), cacc


def test_score_matches_numpy():
    rng = np.random.default_rng(3)
    net = torch.nn.Linear(5, 10)
    params = {"weight": rng.normal(size=(10, 5)).astype(np.float32),
              "bias": rng.normal(size=10).astype(np.float32)}
    x = rng.normal(size=(103, 5)).astype(np.float32)
    y = rng.integers(0, 9, size=103)  # class 9 has no sample: accuracy 0.0
    y[:40] = (x[:40] @ params["weight"].T + params["bias"]).argmax(1).clip(0, 8)
    net.train()
    acc, loss, cacc, n = score(net, params, x, y, batch=7)  # batches cross class boundaries
    racc, rloss, rcacc = _numpy_score(params["weight"], params["bias"], x, y)
    assert n == 103 and net.training  # the mode is restored
    assert acc == pytest.approx(racc, abs=1e-12) and 0.3 < acc < 1
    assert loss == pytest.approx(rloss, rel=1e-5)
    assert cacc == pytest.approx(rcacc, abs=1e-12) and cacc[9] == 0.0
    assert np.array_equal(net.weight.detach().numpy(), params["weight"])  # loaded
    with pytest.raises(ValueError):
        score(net, None, x, np.full(103, 10))


# the C evaluator's records for the same values (evaluator_test.c, test_jsonl_format)
C_RECORD = ('{"version":42,"model":"a\\"b\\\\c\\n","accuracy":0.10000000000000001,"loss":null,'
            '"class_accuracy":[0.0,0.10000000000000001,0.20000000000000001,'
            '0.29999999999999999,0.40000000000000002,0.5,0.59999999999999998,'
            '0.69999999999999996,0.80000000000000004,0.90000000000000002],'
            '"n":10000,"eval_seconds":0.25,"time":1764000000.5,"created":1763999999.25}')
C_RECORD_POP = ('{"version":42,"model":"cnn","accuracy":0.10000000000000001,"loss":0.5,'
                '"class_accuracy":[0.0,0.10000000000000001,0.20000000000000001,'
                '0.29999999999999999,0.40000000000000002,0.5,0.59999999999999998,'
                '0.69999999999999996,0.80000000000000004,0.90000000000000002],'
                '"n":10000,"eval_seconds":0.25,"time":1764000000.5,"created":1763999999.25,'
                '"population":{"clients":100,"mean":0.8125,"min":0.25,"worst_client":17,'
                '"p10":0.5,"threshold":0.69999999999999996,"below":null}}')


def test_jsonl_record_equals_c_evaluator():
    m = {"mv": 42, "model": 'a"b\\c\n', "acc": 0.1, "loss": math.inf,
         "cacc": [k / 10.0 for k in range(10)], "n": 10000, "secs": 0.25, "ts": 1764000000.5}
    assert jsonl_record(m, 1763999999.25) == C_RECORD
    m.update(model="cnn", loss=0.5, pc=100, pmean=0.8125, pmin=0.25, pworst=17, pp10=0.5,
             pthr=0.7, pbelow=math.nan)
    assert jsonl_record(m, 1763999999.25) == C_RECORD_POP
    # jansson's number format: '.0' added, exponent without '+' or leading zeros
    assert [jsonl_number(v) for v in (0.0, 2.0 ** -17, 2.0 ** 70, -2.0 ** -1000, 3.0, 1e-05)] \
        == ["0.0", "7.62939453125e-6", "1.1805916207174113e21", "-9.3326361850321888e-302",
            "3.0", "1.0000000000000001e-5"]
    # the DP and secagg keys, in evaluator_jsonl.c's order, read back exactly
    m.update(pc=0, eps=1.25, delta=1e-05, sadone=3, saabort=1, sadrop=2)
    rec = jsonl_record(m, 1763999999.25)
    assert rec.endswith('"created":1763999999.25,"epsilon":1.25,"delta":1.0000000000000001e-5,'
                        '"secagg":{"completed":3,"aborted":1,"members_dropped":2}}')
    assert json.loads(rec)["class_accuracy"] == m["cacc"]
    with pytest.raises(ValueError):
        jsonl_record(dict(m, mv=1 << 63), 0.0)


class SlowLinear(torch.nn.Module):
    """A linear model whose forward takes `delay` s and counts its calls."""

    def __init__(self, delay):
        super().__init__()
        self.fc = torch.nn.Linear(4, 10)
        self.delay, self.started = delay, threading.Event()

    def forward(self, x):
        self.started.set()
        time.sleep(self.delay)
        return self.fc(x)


def _params(v):
    rng = np.random.default_rng(v)
    return {"fc.weight": rng.normal(size=(10, 4)).astype(np.float32),
            "fc.bias": rng.normal(size=10).astype(np.float32)}


class FakeBroker:
    """The broker's PUB and ROUTER on loopback ports; the evaluator's PUB endpoint an ipc://
    path in `tmp` (no port that another process could take in between)."""

    def __init__(self, tmp):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.ep = {"metrics_pub": "ipc://%s/metrics.ipc" % tmp}
        for k, s in (("model_pub", self.pub), ("snapshot", self.router)):
            s.setsockopt(zmq.LINGER, 0)
            self.ep[k] = "tcp://127.0.0.1:%d" % s.bind_to_random_port("tcp://127.0.0.1")

    def close(self):
        self.ctx.destroy(linger=0)  # every socket of the context, then term


def test_evaluator_newest_only(tmp_path):
    fb = FakeBroker(tmp_path)
    name = spec.spec_name(_params(0))
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = rng.integers(0, 10, size=50)
    module = SlowLinear(0.3)
    mfile = tmp_path / "metrics.jsonl"
    ev, th, stop = None, None, threading.Event()
    try:
        ev = Evaluator(fb.ep, module, x, y, model=name, metrics_file=str(mfile), batch=1000)
        sub = fb.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(fb.ep["metrics_pub"])
        th = threading.Thread(target=ev.run, kwargs={"stop": stop.is_set}, daemon=True)
        th.start()
        # the evaluator asks for a snapshot at once: answer it with v1 (created at ts1)
        assert fb.router.poll(5000), "no SNAPSHOT_REQ"
        peer, frame = fb.router.recv_multipart()
        t, req = wire.decode(frame)
        assert t == "SNAPSHOT_REQ" and req["have"] == 0
        ts1 = time.time()
        fb.router.send_multipart([peer, wire.encode_model(1, name, ts1, _params(1))])
        assert module.started.wait(5), "v1 not scored"
        # while v1 is scored: v2, v3, then v4 with counts
        for v in (2, 3):
            fb.pub.send(wire.encode_model(v, name, ts1 + v, _params(v)))
        ts4 = ts1 + 4
        v4 = wire.encode_model(4, name, ts4, _params(4), applied=17, ups=2.5, eps=0.75,
                               delta=1e-5, sadone=2, saabort=1, sadrop=3)
        got = {}
        end = time.monotonic() + 10
        while 4 not in got and time.monotonic() < end:
            fb.pub.send(v4)  # repeats of v4 are duplicates, scored once
            if sub.poll(200):
                m = wire.decode_metrics(sub.recv())
                got[m["mv"]] = m
        assert 4 in got, "no METRICS for v4"
        # a MODEL of another model is rejected, never scored
        bad = wire.encode_model(9, "logreg", ts1, {"fc.weight": np.zeros((10, 784), np.float32),
                                                   "fc.bias": np.zeros(10, np.float32)})
        end = time.monotonic() + 5
        while ev.stats["rejected"] == 0 and time.monotonic() < end:
            fb.pub.send(bad)
            time.sleep(0.05)
        # a MODEL whose tensors do not fit the module (another spec) too
        other = {"fc.weight": np.zeros((10, 5), np.float32), "fc.bias": np.zeros(10, np.float32)}
        ev.model_name = None  # accept any name: the module check must refuse it
        end = time.monotonic() + 5
        while ev.stats["rejected"] < 2 and time.monotonic() < end:
            fb.pub.send(wire.encode_model(10, spec.spec_name(other), ts1, other))
            time.sleep(0.05)
        time.sleep(0.5)
        while sub.poll(100):
            m = wire.decode_metrics(sub.recv())
            got[m["mv"]] = m
    finally:
        stop.set()
        if th is not None:
            th.join(10)
        if ev is not None and not (th and th.is_alive()):
            ev.close()
        fb.close()
    assert not th.is_alive()
    recs = [json.loads(line) for line in mfile.read_text().splitlines()]
    assert [r["version"] for r in recs] == [1, 4], recs  # v2, v3 skipped, v4 once
    assert set(got) <= {1, 4} and ev.stats["evaluations"] == 2
    assert ev.stats["rejected"] >= 2 and "the evaluator's module [10, 4]" in ev.last_error
    m4 = got[4]
    # the METRICS: the score of v4's weights, the MODEL's counts repeated
    lin = torch.nn.Linear(4, 10)
    acc, loss, cacc, n = score(lin, {"weight": _params(4)["fc.weight"],
                                     "bias": _params(4)["fc.bias"]}, x, y)
    assert (m4["model"], m4["acc"], m4["n"], m4["cacc"]) == (name, acc, 50, cacc)
    assert m4["loss"] == pytest.approx(loss, rel=1e-6)
    assert (m4["applied"], m4["ups"], m4["eps"], m4["delta"]) == (17, 2.5, 0.75, 1e-5)
    assert (m4["sadone"], m4["saabort"], m4["sadrop"]) == (2, 1, 3)
    assert m4["secs"] >= 0.3 and abs(m4["ts"] - time.time()) < 30
    # the record is the C evaluator's format of the same METRICS, created = the MODEL's ts
    line4 = mfile.read_text().splitlines()[1]
    assert line4 == jsonl_record(m4, ts4)
    assert recs[1]["created"] == ts4 and recs[1]["epsilon"] == 0.75
    assert recs[1]["secagg"] == {"completed": 2, "aborted": 1, "members_dropped": 3}
    assert recs[0]["created"] == ts1 and "epsilon" not in recs[0]


def _digits_module():
    import importlib.util
    s = importlib.util.spec_from_file_location("digits_model", DIGITS)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


def test_spec_cli_digits(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from fedmq_client import spec_cli
    from fedmq_client.torch_utils import state_dict_to_numpy
    out = tmp_path / "init.safetensors"
    assert spec_cli.main([DIGITS, "--out", str(out), "--seed", "5"]) == 0
    name = capsys.readouterr().out.strip()
    tensors, meta = spec.load_safetensors(str(out))
    mod = _digits_module()
    torch.manual_seed(5)
    mine, _ = state_dict_to_numpy(mod.make_model())
    assert name == spec.spec_name(tensors) == spec.spec_name(mine) == meta["fedmq_spec"]
    assert name.startswith("spec-") and list(tensors) == list(mine)
    assert all(np.array_equal(tensors[k], mine[k]) for k in mine)  # the seed's weights
    # the entry is chosen with FILE:entry; a missing one is one line and exit 2
    assert spec_cli.main([DIGITS + ":make_model", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == name
    assert spec_cli.main([DIGITS + ":nope", "--out", str(tmp_path / "x")]) == 2
    assert "no function nope()" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_digits_partition_deterministic():
    pytest.importorskip("sklearn")
    mod = _digits_module()
    for spec_s in ("iid", "dirichlet:0.5"):
        a = mod.partition(6, spec_s, 1)
        mod.partition.cache_clear()
        b = mod.partition(6, spec_s, 1)
        c = mod.partition(6, spec_s, 2)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c))
        allidx = np.concatenate(a)
        assert len(allidx) == len(np.unique(allidx)) == 1400  # disjoint, the whole split
    xt, yt = mod.load_test(None)
    xtr = mod._split()[0]
    assert xt.shape == (397, 1, 8, 8) and len(yt) == 397
    # no test image is a training image
    tr = {r.tobytes() for r in xtr}
    assert sum(r.tobytes() in tr for r in xt) <= 5  # the dataset has a few exact duplicates
