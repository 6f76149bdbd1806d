"""End to end with a custom model the C trainer cannot run: the digits example
(trainer/python/examples/digits). fedmq-py-spec writes its spec; the C broker and aggregator
run `federation.model = file:<spec>`; three fedmq-py-trainer processes train it and one
fedmq-py-evaluator scores it: the versions advance, the evaluator's accuracy goes from chance
at version 0 to above 0.8 within 90 s, `fedmq watch` reads its METRICS and `fedmq plot`
(when gnuplot is installed) its metrics file. Everything is killed at the end."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from daemons import Federation, bin_dir

pytest.importorskip("torch")
pytest.importorskip("sklearn")

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "..", "trainer", "python", "examples", "digits", "model.py")
SCRIPTS = os.path.dirname(sys.executable)  # the venv's console scripts


def _records(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except OSError:
        return []


def test_digits_federation(tmp_path):
    env = dict(os.environ, FEDMQ_BIN=bin_dir())
    spec_file = str(tmp_path / "init.safetensors")
    r = subprocess.run([os.path.join(SCRIPTS, "fedmq-py-spec"), DIGITS, "--out", spec_file,
                        "--seed", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    from fedmq_client import spec
    assert name == spec.spec_name(spec.load_safetensors(spec_file)[0])
    metrics = str(tmp_path / "metrics.jsonl")
    f = Federation(tmp_path, {"federation.model": "file:" + spec_file,
                              "federation.num_clients": 6, "federation.clients_per_round": 6,
                              "federation.partition": "iid", "federation.learning_rate": 0.05,
                              "trainer.clients": "0-5", "evaluator.metrics_file": metrics})
    py = []

    def spawn(tag, argv):
        log = open(str(tmp_path / (tag + ".log")), "ab")
        py.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True))
        log.close()
    try:
        f.start("broker", "aggregator")
        # the aggregator took the spec: version 0 of the custom model
        assert f.wait_stats(lambda s: "version" in s, 30) is not None, \
            f.log("aggregator")
        assert "model %s (17258 params) at version 0" % name in f.log("aggregator")
        spawn("evaluator", [os.path.join(SCRIPTS, "fedmq-py-evaluator"), "--config",
                            os.devnull, "--model-file", DIGITS] + f.args)
        end = time.monotonic() + 30
        while not _records(metrics) and time.monotonic() < end:
            assert py[0].poll() is None, (tmp_path / "evaluator.log").read_text()
            time.sleep(0.1)
        first = _records(metrics)
        assert first, "no record for version 0: " + (tmp_path / "evaluator.log").read_text()
        assert first[0]["version"] == 0 and first[0]["model"] == name
        assert first[0]["accuracy"] < 0.3 and first[0]["n"] == 397
        watch = subprocess.Popen([os.path.join(bin_dir(), "fedmq"), "watch",
                                  f.ep["metrics_pub"], "--count", "3", "--timeout", "60"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        py.append(watch)
        t0 = time.monotonic()
        for c in ("0-1", "2-3", "4-5"):
            spawn("trainer-" + c, [os.path.join(SCRIPTS, "fedmq-py-trainer"), "--config",
                                   os.devnull, "--model-file", DIGITS] + f.args
                  + ["--set", "trainer.clients=" + c])
        best = None
        while time.monotonic() - t0 < 90:
            recs = _records(metrics)
            best = max(recs, key=lambda r: r["accuracy"])
            if best["accuracy"] > 0.8:
                break
            for p in py:
                if p is not watch:
                    assert p.poll() is None, "a Python process exited: %s" % p.args
            time.sleep(0.2)
        assert best is not None and best["accuracy"] > 0.8, (best, f.log("aggregator")[-2000:])
        assert best["version"] > 0 and best["model"] == name
        assert f.wait_stats(lambda s: s["version"] >= best["version"] and
                            s["updates_applied"] > 0, 10) is not None
        versions = [r["version"] for r in _records(metrics)]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        out, _ = watch.communicate(timeout=60)
        assert watch.returncode == 0, out
        assert out.count("model=" + name) == 3, out
        if shutil.which("gnuplot"):
            r = f.tool("plot", metrics, "-o", str(tmp_path / "acc.png"))
            assert r.returncode == 0, r.stderr
    finally:
        for p in py:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in py:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        f.close()
    ev_log = (tmp_path / "evaluator.log").read_text()
    assert "stopping:" in ev_log and "0 frames rejected" in ev_log, ev_log[-2000:]


def test_evaluator_curve(tmp_path):
    """[security] mode = curve: the Evaluator gets the model from a CURVE broker with its
    evaluator key, and serves METRICS to an enrolled monitor key (`fedmq watch --cert`);
    a monitor key not in allow_dir gets nothing."""
    import numpy as np
    from fedmq_client import models
    from fedmq_client.evaluate import Evaluator, EvaluatorCurve
    keys, allow = tmp_path / "keys", tmp_path / "keys" / "allow"
    allow.mkdir(parents=True)
    f0 = Federation(tmp_path, {})
    for spec_ in (["broker", "--role", "broker"], ["aggregator", "--role", "aggregator"],
                  ["evaluator", "--role", "evaluator"], ["monitor", "--role", "monitor"],
                  ["stranger", "--role", "monitor"]):
        r = f0.tool("keygen", *spec_, "--dir", str(keys))
        assert r.returncode == 0, r.stderr
    for n in ("broker", "evaluator", "monitor"):  # stranger is not enrolled
        (allow / (n + ".cert")).write_bytes((keys / (n + ".cert")).read_bytes())
    settings = {"federation.model": "logreg", "security.mode": "curve",
                "security.allow_dir": str(allow)}
    for n in ("broker", "aggregator", "evaluator", "monitor"):
        settings["security.%s_cert" % n] = str(keys / (n + ".cert"))
    f = Federation(tmp_path, settings)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 20)
    ev, watches = None, []
    try:
        f.start("broker", "aggregator")
        sec = EvaluatorCurve(str(keys / "evaluator.cert"), str(keys / "broker.cert"), str(allow))
        ev = Evaluator(f.ep, models.builtin("logreg"), x, y, model="logreg", security=sec)
        for who, count, timeout in (("monitor", 2, 30), ("stranger", 1, 4)):
            watches.append(subprocess.Popen(
                [os.path.join(bin_dir(), "fedmq"), "watch", f.ep["metrics_pub"], "--count",
                 str(count), "--timeout", str(timeout), "--cert", str(keys / (who + ".cert")),
                 "--server-cert", str(keys / "evaluator.cert")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        end = time.monotonic() + 30
        while time.monotonic() < end and any(w.poll() is None for w in watches):
            ev.step(0.2)
            if ev.last_model is not None:  # publish again: the watchers may join late
                ev.evaluate(ev.last_model)
        outs = [w.communicate(timeout=10)[0] for w in watches]
        assert ev.last_model is not None and ev.last_model.mv == 0, ev.last_error
        assert watches[0].returncode == 0 and outs[0].count("version=0 model=logreg") == 2, \
            outs[0]
        assert watches[1].returncode != 0 and "version=" not in outs[1], outs[1]
    finally:
        for w in watches:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait(5)
        if ev is not None:
            ev.close()
        f.close()
