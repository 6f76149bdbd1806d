"""Client data for the built-in Fashion-MNIST federation (docs/PROTOCOL.md §11).

- `load_fashion(dir, split)`: the IDX files of Debian's dataset-fashion-mnist, normalised
  exactly as the C trainer and evaluator do, (pixel / 255 - 0.2860) / 0.3530 in float32,
  as an array [N, 1, 28, 28] and uint8 labels [N];
- `load_partition(path)`: the JSON that `fedmq partition CONFIG --out FILE` writes: client
  k's training indices `train[k]` and held-out indices `held[k]` (never train on those);
- `partition(config, sets)`: runs `fedmq partition` with the daemons' config and loads it.
"""
import gzip
import json
import os
import tempfile

import numpy as np

from .config import run_fedmq

__all__ = ["FASHION_DIR", "FASHION_MEAN", "FASHION_STD", "Partition", "read_idx",
           "load_fashion", "load_partition", "partition", "normalise"]

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
_IDX_MAX_BYTES = 1 << 30


def read_idx(path):
    """An IDX file (gzipped or not) as a uint8 ndarray: images [N, rows, cols] (magic
    0x00000803) or labels [N] (0x00000801). Raises ValueError naming the file."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=open(path, "rb")) as g:
            raw = g.read(_IDX_MAX_BYTES + 1)
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (0x801, 0x803):
        raise ValueError(f"{path}: magic 0x{magic:08x}, expected 0x00000801 or 0x00000803")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path}: header of {ndim} dims runs past the end")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims, dtype=np.int64))
    if len(raw) - head != n:
        raise ValueError(f"{path}: {len(raw) - head} data bytes, the header says {n}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def normalise(pixels):
    """uint8 images [N, 28, 28] -> float32 [N, 1, 28, 28], (p / 255 - mean) / std in float32
    arithmetic, as fm_data.c computes it."""
    p = pixels.astype(np.float32)
    x = (p / np.float32(255.0) - np.float32(FASHION_MEAN)) / np.float32(FASHION_STD)
    return x.reshape(pixels.shape[0], 1, pixels.shape[1], pixels.shape[2])


def _split_file(data_dir, split, kind):
    base = os.path.join(data_dir, f"{split}-{kind}")
    for name in (base, base + ".gz"):
        if os.path.exists(name):
            return name
    raise FileNotFoundError(f"{base}[.gz]: no such file (is dataset-fashion-mnist installed?)")


def load_fashion(data_dir=FASHION_DIR, split="train"):
    """(x float32 [N, 1, 28, 28] normalised, y uint8 [N]) of split "train" or "t10k"."""
    images = read_idx(_split_file(data_dir, split, "images-idx3-ubyte"))
    labels = read_idx(_split_file(data_dir, split, "labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir} {split}: images {images.shape} and labels "
                         f"{labels.shape} do not match")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{data_dir} {split}: a label above 9")
    return normalise(images), labels


class Partition:
    """Client k's training indices `train[k]` and held-out indices `held[k]` (int64 arrays
    into the train split), as every fedmq process computes them."""

    def __init__(self, doc):
        try:
            self.num_clients = int(doc["num_clients"])
            self.n_samples = int(doc["n_samples"])
            self.spec = doc["partition"]
            self.seed = int(doc["seed"])
            self.holdout = float(doc["holdout"])
            train, held = doc["train"], doc["held"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a fedmq partition document: {e}") from None
        if len(train) != self.num_clients or len(held) != self.num_clients:
            raise ValueError(f"{len(train)} train and {len(held)} held lists for "
                             f"{self.num_clients} clients")
        self.train = [np.asarray(t, dtype=np.int64) for t in train]
        self.held = [np.asarray(h, dtype=np.int64) for h in held]
        for k in range(self.num_clients):
            for a in (self.train[k], self.held[k]):
                if a.size and (a.min() < 0 or a.max() >= self.n_samples):
                    raise ValueError(f"client {k}: an index outside [0, {self.n_samples})")

    def samples(self, k):
        """Client k's training-set size: the "n" of its UPDATEs."""
        return int(self.train[k].size)


def load_partition(path):
    with open(path, "r", encoding="utf-8") as f:
        return Partition(json.load(f))


def partition(config, sets=(), fedmq=None, timeout=300):
    """Run `fedmq partition CONFIG [--set ...]` and load its result (raises ValueError with
    the tool's one line if it refuses the config)."""
    with tempfile.TemporaryDirectory(prefix="fedmq-part-") as d:
        out = os.path.join(d, "partition.json")
        run_fedmq(["partition", config, "--out", out], sets, fedmq, timeout, ValueError)
        return load_partition(out)
