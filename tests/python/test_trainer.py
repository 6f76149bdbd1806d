"""fedmq_client's training side: data (IDX files, normalisation, partition), local training
(against a hand-written numpy computation) and fedmq-py-trainer's refusals."""
import gzip
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from fedmq_client import data

torch = pytest.importorskip("torch")
from fedmq_client import models, train  # noqa: E402  (torch needed)
from fedmq_client.torch_utils import state_dict_to_numpy  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), "..", "..")
CONF = os.path.join(SRC, "configs", "fedmq.conf")


def _idx(path, magic, dims, payload, gz=False):
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    op = gzip.open if gz else open
    with op(path, "wb") as f:
        f.write(head + payload)


def test_idx_and_normalisation(tmp_path):
    px = bytes([0, 255, 128, 1] * 2)          # two 2x2 images
    _idx(tmp_path / "train-images-idx3-ubyte.gz", 0x803, [2, 2, 2], px, gz=True)
    _idx(tmp_path / "train-labels-idx1-ubyte", 0x801, [2], bytes([3, 9]))
    x, y = data.load_fashion(str(tmp_path), "train")
    assert x.shape == (2, 1, 2, 2) and x.dtype == np.float32 and list(y) == [3, 9]
    # fm_data.c: ((float)p / 255.0f - 0.2860f) / 0.3530f, every step in float32
    f32 = np.float32
    for p, got in zip([0, 255, 128, 1], x[0].ravel()):
        want = f32(f32(f32(p) / f32(255.0)) - f32(0.2860)) / f32(0.3530)
        assert got == want
    assert abs(float(x[0, 0, 0, 0]) - (0 - 0.2860) / 0.3530) < 1e-6
    # malformed files: one ValueError naming the file
    _idx(tmp_path / "bad", 0x804, [2], b"\0\0")
    with pytest.raises(ValueError, match="bad: magic 0x00000804"):
        data.read_idx(str(tmp_path / "bad"))
    _idx(tmp_path / "short", 0x801, [5], b"\0\0")
    with pytest.raises(ValueError, match="short: 2 data bytes, the header says 5"):
        data.read_idx(str(tmp_path / "short"))
    _idx(tmp_path / "t10k-images-idx3-ubyte", 0x803, [1, 2, 2], bytes(4))
    _idx(tmp_path / "t10k-labels-idx1-ubyte", 0x801, [1], bytes([10]))
    with pytest.raises(ValueError, match="a label above 9"):
        data.load_fashion(str(tmp_path), "t10k")


def test_partition_is_the_daemons():
    if not os.environ.get("FEDMQ_BIN"):
        pytest.skip("FEDMQ_BIN not set")
    sets = ["federation.num_clients=10", "trainer.clients=0-9", "federation.holdout=0.2"]
    p = data.partition(CONF, sets)
    assert p.num_clients == 10 and p.n_samples == 60000 and p.holdout == 0.2
    every = np.concatenate(p.train + p.held)
    assert every.size == 60000 and np.unique(every).size == 60000  # a partition: disjoint, all
    for k in range(10):
        assert not np.intersect1d(p.train[k], p.held[k]).size   # never train on held-out
        assert p.samples(k) == p.train[k].size
        assert abs(p.held[k].size - round(0.2 * (p.train[k].size + p.held[k].size))) <= 1
    with pytest.raises(ValueError, match="num_clients"):
        data.partition(CONF, ["federation.num_clients=5"])  # [trainer] clients 0-99 too wide


def _logreg(seed=0):
    torch.manual_seed(seed)
    m = models.builtin("logreg")
    return m, state_dict_to_numpy(m)[0]


def _grad(w, b, x, y):
    """Mean NLL of softmax(x w^T + b) and its gradient, in float64 numpy."""
    z = x @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return loss, p.T @ x / n, p.sum(axis=0) / n


def test_local_train_matches_numpy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    m, base = _logreg()
    lr, mu = 0.1, 0.5
    # full batch, no momentum: two plain gradient steps with FedProx's pull to the base
    hyper = train.Hyper(epochs=2, lr=lr, batch=16, momentum=0.0)
    res = train.local_train(m, base, torch.from_numpy(x), torch.from_numpy(y), hyper, mu=mu,
                            generator=torch.Generator().manual_seed(1))
    xf = x.reshape(16, -1).astype(np.float64)
    w0, b0 = base["fc.weight"].astype(np.float64), base["fc.bias"].astype(np.float64)
    w, b = w0.copy(), b0.copy()
    for _ in range(2):
        loss, gw, gb = _grad(w, b, xf, y)
        w, b = w - lr * (gw + mu * (w - w0)), b - lr * (gb + mu * (b - b0))
    assert res.steps == 2
    assert np.allclose(res.params["fc.weight"], w, atol=2e-5)
    assert np.allclose(res.params["fc.bias"], b, atol=2e-5)
    assert abs(res.loss - loss) < 1e-4      # the last epoch's mean loss, before its step
    # the base is not modified; the result has exactly the model's tensors
    assert set(res.params) == set(base) and not np.array_equal(res.params["fc.bias"], base["fc.bias"])


def test_local_train_local_steps():
    """[federation] local_steps: 2 epochs of 16 samples in batches of 4 cut after 3 steps,
    against the same 3 plain SGD steps in numpy on the first 3 batches of the shuffle."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    m, base = _logreg()
    lr = 0.1
    hyper = train.Hyper(epochs=2, lr=lr, batch=4, momentum=0.0, local_steps=3)
    res = train.local_train(m, base, torch.from_numpy(x), torch.from_numpy(y), hyper,
                            generator=torch.Generator().manual_seed(4))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(4)).numpy()
    xf = x.reshape(16, -1).astype(np.float64)
    w, b = base["fc.weight"].astype(np.float64), base["fc.bias"].astype(np.float64)
    losses = []
    for k in range(3):
        i = perm[4 * k:4 * k + 4]
        loss, gw, gb = _grad(w, b, xf[i], y[i])
        losses.append(loss)
        w, b = w - lr * gw, b - lr * gb
    assert res.steps == 3
    assert np.allclose(res.params["fc.weight"], w, atol=2e-5)
    assert np.allclose(res.params["fc.bias"], b, atol=2e-5)
    assert abs(res.loss - np.mean(losses)) < 1e-4   # over the 12 samples the epoch saw
    full = train.local_train(m, base, torch.from_numpy(x), torch.from_numpy(y),
                             replace(hyper, local_steps=0),
                             generator=torch.Generator().manual_seed(4))
    assert full.steps == 8


# (local_steps, local_fraction, epochs, n, batch) -> the cap; the same table as
# tests/unit/train_test.c test_steps_cap (fm_train_steps_cap)
STEPS_CAP_CASES = [(0, 1.0, 1, 600, 32, 0), (9, 1.0, 1, 600, 32, 9), (0, 0.5, 1, 600, 32, 10),
                   (0, 0.1, 1, 960, 32, 3), (0, 0.5, 2, 600, 32, 19), (5, 0.5, 1, 600, 32, 5),
                   (20, 0.5, 1, 600, 32, 10), (0, 1e-6, 1, 10, 32, 1), (0, 0.3, 2, 1000, 32, 20)]


def test_steps_cap():
    for steps, frac, epochs, n, batch, want in STEPS_CAP_CASES:
        h = train.Hyper(epochs=epochs, batch=batch, local_steps=steps, local_fraction=frac)
        assert train.steps_cap(h, n) == want, (steps, frac, epochs, n, batch)


def test_local_train_local_fraction():
    """[federation] local_fraction 0.3 of 2 epochs of 16 samples in batches of 4 (8 steps):
    ceil(2.4) = 3 steps, the same 3 steps as local_steps = 3; read from a config."""
    from fedmq_client import config
    h = train.Hyper.from_config(config.load(CONF, ["federation.local_fraction=0.3"]))
    assert h.local_fraction == 0.3 and train.Hyper.from_config(config.load(CONF)).local_fraction == 1
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(size=(16, 1, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=16))
    base_h = train.Hyper(epochs=2, lr=0.1, batch=4, momentum=0.0)
    m, base = _logreg()
    got = train.local_train(m, base, x, y, replace(base_h, local_fraction=0.3),
                            generator=torch.Generator().manual_seed(4))
    want = train.local_train(m, base, x, y, replace(base_h, local_steps=3),
                             generator=torch.Generator().manual_seed(4))
    assert got.steps == 3 == want.steps
    assert all(np.array_equal(got.params[k], want.params[k]) for k in base)


def test_local_train_batches_and_clip():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(70, 1, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=70))
    m, base = _logreg()
    res = train.local_train(m, base, x, y, train.Hyper(epochs=3, batch=32))
    assert res.steps == 3 * 3            # ceil(70 / 32) batches per epoch
    # clip_norm: every step moves the weights by at most lr * clip (no momentum)
    m2, base2 = _logreg()
    res2 = train.local_train(m2, base2, x * 100, y, train.Hyper(epochs=1, batch=70, lr=1.0,
                                                                momentum=0.0, clip_norm=0.01))
    moved = np.sqrt(sum(((res2.params[k] - base2[k]) ** 2).sum() for k in base2))
    assert res2.steps == 1 and moved <= 0.01 * 1.0001
    with pytest.raises(ValueError, match="0 samples"):
        train.local_train(m, base, x[:0], y[:0], train.Hyper())


def test_hyper_lr_schedule():
    from fedmq_client import config
    # [federation] lr_decay through `fedmq config`, as fedmq-trainer reads it
    h = train.Hyper.from_config(config.load(CONF, ["federation.learning_rate=0.05",
                                                   "federation.lr_decay=0.1"]))
    assert h.lr == 0.05 and h.lr_decay == 0.1
    assert h.at_version(0).lr == 0.05
    assert abs(h.at_version(10).lr - 0.025) < 1e-15     # 0.05 / (1 + 0.1 x 10)
    assert h.at_version(10).momentum == h.momentum and h.lr == 0.05  # a copy
    d = train.Hyper.from_config(config.load(CONF))
    assert d.at_version(50).lr == 0.01 and d.local_steps == 0  # the binaries' defaults
    assert train.Hyper.from_config(
        config.load(CONF, ["federation.local_steps=9"])).local_steps == 9
    # the step of a training from version 10 is the step at lr 0.025
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(16, 1, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=16))
    got, want = [], []
    for hy, out in ((h.at_version(10), got), (replace(h, lr=0.025, lr_decay=0.0), want)):
        m, base = _logreg()
        out.append(train.local_train(m, base, x, y, hy, generator=torch.Generator().manual_seed(1)))
    assert np.array_equal(got[0].params["fc.weight"], want[0].params["fc.weight"])


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fedmq_client.trainer_cli"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def test_trainer_cli_refusals(tmp_path):
    if not os.environ.get("FEDMQ_BIN"):
        pytest.skip("FEDMQ_BIN not set")
    r = _cli("--config", CONF, "--set", "trainer.workers=0")
    assert r.returncode == 2 and "[trainer] workers = 0: out of range" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("--config", CONF, "--model-file", str(tmp_path / "none.py"))
    assert r.returncode == 2 and "none.py: no such file" in r.stderr
    (tmp_path / "broken.py").write_text("import nosuchmodule\n")
    r = _cli("--config", CONF, "--model-file", str(tmp_path / "broken.py"))
    assert r.returncode == 2 and "ModuleNotFoundError" in r.stderr
    (tmp_path / "noentry.py").write_text("x = 1\n")
    r = _cli("--config", CONF, "--model-file", str(tmp_path / "noentry.py"))
    assert r.returncode == 2 and "no function make_model()" in r.stderr
    spec = tmp_path / "m.safetensors"
    from fedmq_client import spec as sp
    sp.save_safetensors(str(spec), {"w": np.zeros((3, 4), np.float32)})
    r = _cli("--config", CONF, "--set", "federation.model=file:%s" % spec)
    assert r.returncode == 2 and "is a custom model: give its PyTorch definition" in r.stderr


def test_module_must_fit_the_model():
    from fedmq_client.trainer_cli import BadInput, check_module_fits
    m, base = _logreg()
    check_module_fits(m, base, "x")
    with pytest.raises(BadInput, match="tensor 'fc.weight' has shape \\[10, 784\\], the "
                                       "federation's model \\[10, 785\\]"):
        check_module_fits(m, {"fc.weight": np.zeros((10, 785), np.float32),
                              "fc.bias": base["fc.bias"]}, "x")
    with pytest.raises(BadInput, match="tensor 'fc.bias' is not in the federation's model"):
        check_module_fits(m, {"fc.weight": base["fc.weight"]}, "x")
    with pytest.raises(BadInput, match="no tensor 'fc2.bias'"):
        check_module_fits(m, dict(base, **{"fc2.bias": np.zeros(3, np.float32)}), "x")
