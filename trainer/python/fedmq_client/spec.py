"""Model specs: safetensors files (numpy only, F32) and the fingerprint naming a custom model.

safetensors: an 8-byte little-endian header length N, N bytes of JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}), then
the data (offsets relative to its start, little-endian, C order).

spec_name: a custom model is named on the wire "spec-" + the first 10 hex digits of
blake2b(text, digest_size=32), text = one line per tensor sorted by name:
name TAB "F32" TAB the shape's dims joined by "," (empty for a scalar) LF, in ASCII.
"""
import hashlib
import json
import struct
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from . import wire

# the built-in models' tensors, in state_dict order (docs/PROTOCOL.md §2.1)
BUILTIN = {
    "logreg": [("fc.weight", (10, 784)), ("fc.bias", (10,))],
    "mlp": [("fc1.weight", (200, 784)), ("fc1.bias", (200,)), ("fc2.weight", (200, 200)),
            ("fc2.bias", (200,)), ("fc3.weight", (10, 200)), ("fc3.bias", (10,))],
    "cnn": [("conv1.weight", (32, 1, 3, 3)), ("conv1.bias", (32,)),
            ("conv2.weight", (64, 32, 3, 3)), ("conv2.bias", (64,)),
            ("fc1.weight", (128, 9216)), ("fc1.bias", (128,)), ("fc2.weight", (10, 128)),
            ("fc2.bias", (10,))],
}

HEADER_MAX = 100 * 1024 * 1024  # bytes of JSON header accepted when reading


def spec_text(shapes: Mapping[str, Tuple[int, ...]]) -> bytes:
    """The fingerprinted text of {name: shape} (see the module comment)."""
    lines = []
    for name in sorted(shapes):
        if not wire.is_name(name):
            raise ValueError("tensor name %r: not a wire name (printable ASCII, no space, "
                             "1-255 bytes)" % (name,))
        lines.append("%s\tF32\t%s\n" % (name, ",".join(str(int(d)) for d in shapes[name])))
    return "".join(lines).encode("ascii")


def spec_name(tensors: Mapping[str, np.ndarray]) -> str:
    """The wire name of a custom model with these tensors (name -> array, only the shapes
    count): "spec-" + 10 hex digits."""
    shapes = {n: tuple(np.shape(a)) for n, a in tensors.items()}
    return "spec-" + hashlib.blake2b(spec_text(shapes), digest_size=32).hexdigest()[:10]


def model_name(tensors: Mapping[str, np.ndarray]) -> str:
    """A built-in model's name if the tensors are exactly its names and shapes, else
    spec_name(tensors)."""
    shapes = {n: tuple(np.shape(a)) for n, a in tensors.items()}
    for name, layout in BUILTIN.items():
        if shapes == dict(layout):
            return name
    return spec_name(tensors)


def save_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                     metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write tensors (name -> array, converted to float32; in the mapping's order) and
    metadata (str -> str) as a safetensors file."""
    header, chunks, off = {}, [], 0
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError("tensor name %r not allowed" % (name,))
        d = np.ascontiguousarray(a, dtype="<f4")
        b = d.tobytes()
        header[name] = {"dtype": "F32", "shape": [int(x) for x in d.shape],
                        "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("__metadata__ holds strings only: %r: %r" % (k, v))
        header["__metadata__"] = dict(metadata)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in chunks:
            f.write(b)


def load_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a safetensors file of F32 tensors: ({name: float32 array} in file order,
    metadata). Raises ValueError for anything else (another dtype, offsets that overlap,
    leave gaps or run past the end, a header that is not a JSON object, ...)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%s: %d bytes, not a safetensors file" % (path, len(raw)))
    (n,) = struct.unpack("<Q", raw[:8])
    if n > HEADER_MAX or 8 + n > len(raw):
        raise ValueError("%s: header of %d bytes does not fit in the file" % (path, n))
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError("%s: header is not JSON: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise ValueError("%s: header is not a JSON object" % path)
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise ValueError("%s: __metadata__ must map strings to strings" % path)
    spans, out = [], {}
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise ValueError("%s: tensor %r: expected dtype, shape, data_offsets" % (path, name))
        if t["dtype"] != "F32":
            raise ValueError("%s: tensor %r: dtype %s, only F32 is supported"
                             % (path, name, t["dtype"]))
        shape, offs = t["shape"], t["data_offsets"]
        if (not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int for o in offs)):
            raise ValueError("%s: tensor %r: bad shape or data_offsets" % (path, name))
        b, e = offs
        numel = int(np.prod(shape, dtype=object)) if shape else 1
        if not 0 <= b <= e <= len(data) or e - b != 4 * numel:
            raise ValueError("%s: tensor %r: data_offsets %s do not hold %d float32 within "
                             "%d data bytes" % (path, name, offs, numel, len(data)))
        spans.append((b, e, name))
        out[name] = np.frombuffer(data, dtype="<f4", count=numel, offset=b).reshape(
            shape).astype(np.float32)
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise ValueError("%s: tensor %r: data at %d, expected %d (gap or overlap)"
                             % (path, name, b, pos))
        pos = e
    if pos != len(data):
        raise ValueError("%s: %d data bytes, the tensors cover %d" % (path, len(data), pos))
    return out, meta
