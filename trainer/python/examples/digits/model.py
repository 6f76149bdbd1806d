"""A custom fedmq model that the C trainer cannot run: a small CNN on scikit-learn's bundled
8x8 handwritten digits (1797 images, 10 classes), for fedmq-py-trainer, fedmq-py-evaluator
and fedmq-py-spec (see README.md next to this file).

    make_model()            the torch.nn.Module (its float state_dict is the model spec)
    load_data(client, cfg)  client `client`'s training samples: the training split (1400
                            images) partitioned over [federation] num_clients by
                            [federation] partition ("iid" or "dirichlet:ALPHA") and seed
    load_test(cfg)          the fixed held-out test split (397 images, never trained on)

Pixels (0..16) are scaled to [0, 1] and standardised with the training split's mean and
standard deviation, as float32 [n, 1, 8, 8]; labels int64.
"""
import functools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_TEST = 397          # the held-out test split: the last N_TEST of a fixed permutation
SPLIT_SEED = 20261206  # fixed: the test split never changes with [federation] seed
MEAN, STD = 0.3051, 0.3761  # of the training split's pixels / 16 (rounded; fixed)


class DigitsNet(nn.Module):
    """conv 3x3 (1 -> 16) + ReLU + 2x2 max-pool -> 16x4x4 -> 64 -> 10 logits (17 258 weights)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def make_model():
    return DigitsNet()


@functools.lru_cache(maxsize=1)
def _split():
    """(x_train, y_train, x_test, y_test), the fixed split, normalised."""
    from sklearn.datasets import load_digits
    d = load_digits()
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(d.target))
    x = ((d.data.astype(np.float32) / np.float32(16.0) - np.float32(MEAN)) / np.float32(STD))
    x = x.reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = perm[:-N_TEST], perm[-N_TEST:]
    return x[tr], y[tr], x[te], y[te]


@functools.lru_cache(maxsize=4)
def partition(num_clients, spec, seed):
    """Client -> indices into the training split: "iid" (a seeded shuffle cut into
    num_clients near-equal parts) or "dirichlet:ALPHA" (per class, shares drawn from
    Dirichlet(ALPHA); redrawn until every client has at least 2 samples). Deterministic in
    (num_clients, spec, seed)."""
    y = _split()[1]
    rng = np.random.default_rng(seed)
    if num_clients < 1 or num_clients > len(y) // 2:
        raise ValueError(f"digits: {num_clients} clients for {len(y)} training samples")
    if spec == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), num_clients)]
    if not spec.startswith("dirichlet:"):
        raise ValueError(f"digits: [federation] partition = {spec}: use iid or dirichlet:ALPHA")
    alpha = float(spec.split(":", 1)[1])
    for _ in range(1000):
        parts = [[] for _ in range(num_clients)]
        for c in range(10):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients)) * len(idx)).astype(int)
            for k, p in enumerate(np.split(idx, cuts[:-1])):
                parts[k].extend(p.tolist())
        if min(len(p) for p in parts) >= 2:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"digits: dirichlet:{alpha} leaves a client with fewer than 2 samples")


def load_data(client, cfg):
    x, y, _, _ = _split()
    parts = partition(cfg.get_int("federation", "num_clients"),
                      cfg.get("federation", "partition"), cfg.get_int("federation", "seed"))
    idx = parts[client]
    return x[idx], y[idx]


def load_test(cfg):
    _, _, x, y = _split()
    return x, y
