"""A mixed federation: C trainers and Python trainers (fedmq-py-trainer, PyTorch) on the
built-in cnn converge as fast as C trainers alone.

Two runs of the same sync federation (cnn, 100 IID clients, 4 per round, 8 rounds; the
aggregator starts after every trainer said HELLO, so every client is live before round 1
opens and both runs draw the same cohorts): C only (one
fedmq-trainer serving clients 0-99) and mixed (fedmq-trainer serving 0-49, fedmq-py-trainer
50-99). The evaluator scores every version on the full test set. Per round the work is
the same; only the local randomness differs (batch order, dropout masks), so the
accuracies must agree within noise: after the last round the mixed run is at most 0.05
below the C-only one, both well above chance, and the Python trainer's updates were
applied (no refusal)."""
import json
import os
import subprocess
import sys
import time

import pytest

from daemons import Federation, bin_dir

pytest.importorskip("torch")

SRC = os.path.join(os.path.dirname(__file__), "..", "..")
CONF = os.path.realpath(os.path.join(SRC, "configs", "fedmq.conf"))
ROUNDS = 8
SETTINGS = {
    "federation.model": "cnn", "federation.num_clients": 100, "federation.partition": "iid",
    "federation.mode": "sync", "federation.aggregation_strategy": "fedavg",
    "federation.clients_per_round": 4, "federation.num_rounds": ROUNDS,
    "federation.min_clients": 4, "federation.holdout": 0, "federation.seed": 5,
    "evaluator.population": "false", "aggregator.round_timeout_s": 120,
    "broker.heartbeat_timeout_s": 10, "trainer.workers": 1,
}


def _accuracies(path):
    acc = {}
    try:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                acc[r["version"]] = r["accuracy"]
    except OSError:
        pass
    return acc


def _contains(path, text):
    try:
        with open(path, errors="replace") as f:
            return text in f.read()
    except OSError:
        return False


def _run(tmp, mixed):
    os.makedirs(str(tmp), exist_ok=True)
    metrics = os.path.join(str(tmp), "metrics.jsonl")
    fed = Federation(tmp, dict(SETTINGS, **{"evaluator.metrics_file": metrics}))
    procs, py_out = [], os.path.join(str(tmp), "py-trainer.log")
    try:
        fed.start("broker")
        c_range = "0-49" if mixed else "0-99"
        log = open(os.path.join(str(tmp), "trainer.log"), "ab")
        procs.append(subprocess.Popen(
            [os.path.join(bin_dir(), "fedmq-trainer"), "--config", CONF] + fed.args +
            ["--set", "trainer.clients=" + c_range], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        if mixed:
            out = open(py_out, "ab")
            sets = []
            for i in range(0, len(fed.args), 2):
                sets += ["--set", fed.args[i + 1]]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fedmq_client.trainer_cli", "--config", CONF] + sets +
                ["--set", "trainer.clients=50-99", "--set", "trainer.id=py-pool"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        # every trainer up (its HELLO queued on its PUSH) before the aggregator starts
        ready = [(os.path.join(str(tmp), "trainer.log"), "trainer ")]
        if mixed:
            ready.append((py_out, "fedmq-py-trainer: trainer py-pool"))
        end = time.monotonic() + 120
        while not all(_contains(f, t) for f, t in ready):
            assert time.monotonic() < end and all(p.poll() is None for p in procs), \
                [open(f).read()[-1000:] for f, _ in ready if os.path.exists(f)]
            time.sleep(0.1)
        fed.start("aggregator", "evaluator")
        end = time.monotonic() + 400
        st = None
        while st is None and time.monotonic() < end:
            assert all(fed.alive().values()) and all(p.poll() is None for p in procs), \
                (fed.alive(), fed.log("aggregator")[-1500:])
            st = fed.wait_stats(lambda s: s.get("version", 0) >= ROUNDS, timeout=1)
        assert st is not None, "no version %d: %s\n%s" % (ROUNDS, fed.stats(),
                                                        fed.log("aggregator")[-2000:])
        end = time.monotonic() + 60  # the evaluator scores the last version
        while ROUNDS not in _accuracies(metrics) and time.monotonic() < end:
            time.sleep(0.2)
        return _accuracies(metrics), st, (open(py_out).read() if mixed else "")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        fed.close()


def test_mixed_converges_like_c_only(tmp_path):
    c_acc, c_st, _ = _run(tmp_path / "c-only", mixed=False)
    m_acc, m_st, py_log = _run(tmp_path / "mixed", mixed=True)
    print("accuracy by version, C only:", [round(c_acc.get(v, -1), 4) for v in range(ROUNDS + 1)])
    print("accuracy by version, mixed: ", [round(m_acc.get(v, -1), 4) for v in range(ROUNDS + 1)])
    assert ROUNDS in c_acc and ROUNDS in m_acc
    assert c_acc[ROUNDS] > 0.5 and m_acc[ROUNDS] > 0.5, (c_acc, m_acc)
    assert m_acc[ROUNDS] >= c_acc[ROUNDS] - 0.05, (c_acc, m_acc)
    # the Python trainer trained cohort members of its range, and nothing was refused
    py_updates = [ln for ln in py_log.splitlines() if ln.startswith("update ")]
    assert py_updates, py_log[-2000:]
    assert all(50 <= int(ln.split("client ")[1].split()[0]) <= 99 for ln in py_updates)
    assert m_st["updates_applied"] == 4 * ROUNDS and m_st["updates_rejected"] == 0, m_st
    assert c_st["updates_applied"] == 4 * ROUNDS
