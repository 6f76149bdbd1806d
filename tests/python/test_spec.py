"""fedmq_client.spec: the model-spec fingerprint and safetensors files."""
import hashlib
import json
import struct

import numpy as np
import pytest

from fedmq_client import spec

# A known tensor set for cross-checking the C side: names deliberately out of order, a
# scalar, an upper-case name that sorts before lower case (bytewise), 4 dims.
KNOWN = {
    "fc.weight": np.zeros((10, 784), np.float32),
    "fc.bias": np.zeros(10, np.float32),
    "Scale": np.zeros((), np.float32),
    "conv.weight": np.zeros((8, 1, 3, 3), np.float32),
}
KNOWN_TEXT = (b"Scale\tF32\t\n"
              b"conv.weight\tF32\t8,1,3,3\n"
              b"fc.bias\tF32\t10\n"
              b"fc.weight\tF32\t10,784\n")
KNOWN_NAME = "spec-d08bf9e41f"       # pinned: the C implementation must give the same
LOGREG_NAME = "spec-8e5e440c7a"      # the logreg's tensors, as a custom model


def test_spec_text_and_name():
    shapes = {k: v.shape for k, v in KNOWN.items()}
    assert spec.spec_text(shapes) == KNOWN_TEXT
    want = "spec-" + hashlib.blake2b(KNOWN_TEXT, digest_size=32).hexdigest()[:10]
    assert spec.spec_name(KNOWN) == want == KNOWN_NAME
    logreg = {"fc.weight": np.zeros((10, 784)), "fc.bias": np.zeros(10)}
    assert spec.spec_name(logreg) == LOGREG_NAME


def test_spec_name_depends_on_shapes_and_names_only():
    a = spec.spec_name(KNOWN)
    assert spec.spec_name({k: np.ones(v.shape, np.float64) for k, v in KNOWN.items()}) == a
    assert spec.spec_name(dict(reversed(list(KNOWN.items())))) == a
    assert spec.spec_name(dict(KNOWN, Scale=np.zeros(1))) != a
    assert spec.spec_name(dict(KNOWN, extra=np.zeros(1))) != a
    with pytest.raises(ValueError):
        spec.spec_name({"a b": np.zeros(1)})


def test_builtin_names():
    for name, layout in spec.BUILTIN.items():
        assert spec.model_name({n: np.zeros(s) for n, s in layout}) == name
    assert spec.model_name(KNOWN) == KNOWN_NAME


def test_safetensors_round_trip(tmp_path):
    p = tmp_path / "m.safetensors"
    rng = np.random.default_rng(3)
    t = {"b": rng.standard_normal(5).astype(np.float32),
         "a": rng.standard_normal((2, 3)).astype(np.float32), "s": np.float32(2.5)}
    spec.save_safetensors(str(p), t, {"model": "x", "note": "é"})
    got, meta = spec.load_safetensors(str(p))
    assert list(got) == ["b", "a", "s"] and meta == {"model": "x", "note": "é"}
    for k in t:
        np.testing.assert_array_equal(got[k], t[k])
        assert got[k].dtype == np.float32
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0  # data 8-byte aligned
    hdr = json.loads(raw[8:8 + n])
    assert hdr["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [20, 44]}


def _write(path, header, data):
    hb = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)


@pytest.mark.parametrize("header,data,text", [
    ({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), "only F32"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), "do not hold"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4), "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "gap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8), "cover"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"k": 1}},
     bytes(4), "strings"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), "bad shape"),
    ([1, 2], b"", "not a JSON object"),
])
def test_safetensors_rejections(tmp_path, header, data, text):
    p = tmp_path / "bad.safetensors"
    _write(p, header, data)
    with pytest.raises(ValueError, match=text):
        spec.load_safetensors(str(p))


def test_safetensors_truncated(tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="does not fit"):
        spec.load_safetensors(str(p))
    p.write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a safetensors"):
        spec.load_safetensors(str(p))
