"""fedmq_client.wire: the examples of docs/PROTOCOL.md §8 byte for byte, round trips, and
the rejections of the C decoder (shared/svc/fm_wire.c)."""
import math
import struct

import msgpack
import numpy as np
import pytest

from fedmq_client import wire
from fedmq_client.wire import WireError


def h(s):
    return bytes.fromhex(s.replace("\n", " "))


def F(x):
    return b"\xcb" + struct.pack(">d", x)


# ---- §8, byte for byte ------------------------------------------------------------------------

SNAPSHOT = h("84 a1 76 01 a1 74 ac 53 4e 41 50 53 48 4f 54 5f 52 45 51"
             " a4 66 72 6f 6d a4 74 72 2d 31 a4 68 61 76 65 07")
HELLO = h("88 a1 76 01 a1 74 a5 48 45 4c 4c 4f a7 74 72 61 69 6e 65 72 a2 74 31 a3 70 69 64 cd 04 d2"
          " a6 63 66 69 72 73 74 00 a6 63 63 6f 75 6e 74 0a a7 77 6f 72 6b 65 72 73 02 a3 73 65 71 01")
HEARTBEAT = h("8a a1 76 01 a1 74 a9 48 45 41 52 54 42 45 41 54 a7 74 72 61 69 6e 65 72 a2 74 31"
              " a3 70 69 64 cd 04 d2 a6 63 66 69 72 73 74 00 a6 63 63 6f 75 6e 74 0a"
              " a7 77 6f 72 6b 65 72 73 02 a3 73 65 71 02 a4 73 65 6e 74 2a a4 62 75 73 79 01")
METRICS = (h("8a a1 76 01 a1 74 a7 4d 45 54 52 49 43 53 a2 6d 76 03 a5 6d 6f 64 65 6c a3 6d 6c 70"
             " a3 61 63 63") + F(0.75) + h("a4 6c 6f 73 73") + F(1.5) + h("a4 63 61 63 63 9a")
           + F(0.5) * 5 + F(0.75) * 5 + h("a1 6e cd 27 10 a4 73 65 63 73") + F(0.25)
           + h("a2 74 73") + F(1700000000.0))
ACK = (h("86 a1 76 01 a1 74 a3 41 43 4b a4 62 6f 6f 74 cf 01 02 03 04 05 06 07 08 a2 6d 76 05"
         " a6 73 74 61 74 75 73 a7 61 70 70 6c 69 65 64 a3 69 64 73 c4 20") + bytes(range(32)))


def test_snapshot_req_bytes():
    assert wire.encode_snapshot_req("tr-1", 7) == SNAPSHOT
    assert wire.decode(SNAPSHOT) == ("SNAPSHOT_REQ", {"from": "tr-1", "have": 7})


def test_member_bytes():
    assert wire.encode_hello("t1", 1234, 0, 10, 2, 1) == HELLO
    assert wire.encode_heartbeat("t1", 1234, 0, 10, 2, 2, sent=42, busy=1) == HEARTBEAT
    bye = HELLO[:6] + b"\xa3BYE" + HELLO[12:-1] + b"\x03"
    assert wire.encode_bye("t1", 1234, 0, 10, 2, 3) == bye
    t, m = wire.decode(HEARTBEAT)
    assert t == "HEARTBEAT" and m == {"trainer": "t1", "pid": 1234, "cfirst": 0, "ccount": 10,
                                      "workers": 2, "seq": 2, "sent": 42, "busy": 1}
    assert wire.decode(bye)[0] == "BYE"


def test_metrics_bytes():
    frame = wire.encode_metrics(3, "mlp", 0.75, 1.5, [0.5] * 5 + [0.75] * 5, 10000, 0.25,
                                1700000000.0)
    assert frame == METRICS
    m = wire.decode_metrics(METRICS)
    assert (m["mv"], m["model"], m["acc"], m["loss"], m["n"], m["secs"], m["ts"]) == \
        (3, "mlp", 0.75, 1.5, 10000, 0.25, 1700000000.0)
    assert m["cacc"] == [0.5] * 5 + [0.75] * 5 and m["pc"] == 0 and m["applied"] == 0


def test_ack_bytes():
    a = wire.decode_ack(ACK)
    assert a.boot == 0x0102030405060708 and a.mv == 5 and a.status == "applied"
    assert a.ids == [bytes(range(16)), bytes(range(16, 32))]
    assert wire.encode_ack(a.boot, 5, "applied", a.ids) == ACK


def _logreg(seed=1):
    rng = np.random.default_rng(seed)
    return {"fc.weight": rng.standard_normal((10, 784)).astype(np.float32),
            "fc.bias": rng.standard_normal(10).astype(np.float32)}


def test_model_bytes_and_decode():
    p = _logreg()
    frame = wire.encode_model(3, "logreg", 0.5, p)
    head = h("86 a1 76 01 a1 74 a5 4d 4f 44 45 4c a2 6d 76 03 a5 6d 6f 64 65 6c a6 6c 6f 67 72 65 67"
             " a2 74 73 cb 3f e0 00 00 00 00 00 00 a7 74 65 6e 73 6f 72 73 92"
             " 84 a4 6e 61 6d 65 a9 66 63 2e 77 65 69 67 68 74 a5 64 74 79 70 65 a3 46 33 32"
             " a5 73 68 61 70 65 92 0a cd 03 10 a4 64 61 74 61 c5 7a 80")
    bias = h("84 a4 6e 61 6d 65 a7 66 63 2e 62 69 61 73 a5 64 74 79 70 65 a3 46 33 32"
             " a5 73 68 61 70 65 91 0a a4 64 61 74 61 c4 28")
    w = p["fc.weight"].astype("<f4").tobytes()
    assert frame == head + w + bias + p["fc.bias"].astype("<f4").tobytes()
    assert len(frame) == 31534  # §7
    m = wire.decode_model(frame, "logreg")
    assert (m.mv, m.model, m.ts, m.round, m.cohort, m.boot, m.sync) == \
        (3, "logreg", 0.5, 0, None, 0, False)
    assert list(m.params) == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(m.params["fc.weight"], p["fc.weight"])
    m.params["fc.bias"][0] = 1.0  # writable copies


def test_update_bytes():
    d = _logreg(2)
    frame = wire.encode_update(bytes(range(16)), "t1", 7, 3, 600, 19, 0.5, 1.5,
                               [("fc.weight", d["fc.weight"]), ("fc.bias", d["fc.bias"])],
                               model="logreg")
    head = h("8c a1 76 01 a1 74 a6 55 50 44 41 54 45 a2 69 64 c4 10") + bytes(range(16)) + h(
        "a7 74 72 61 69 6e 65 72 a2 74 31 a6 63 6c 69 65 6e 74 07 a4 62 61 73 65 03"
        " a1 6e cd 02 58 a5 73 74 65 70 73 13 a4 6c 6f 73 73 cb 3f e0 00 00 00 00 00 00"
        " a4 73 65 63 73 cb 3f f8 00 00 00 00 00 00 a5 6d 6f 64 65 6c a6 6c 6f 67 72 65 67"
        " a7 74 65 6e 73 6f 72 73 92")
    assert frame.startswith(head)
    t, u = wire.decode(frame)
    assert t == "UPDATE" and u["client"] == 7 and u["round"] == 0 and u["model"] == "logreg"
    got = wire.check_tensors("UPDATE", u["tensors"], [("fc.weight", (10, 784)), ("fc.bias", (10,))])
    np.testing.assert_array_equal(got["fc.bias"], d["fc.bias"])


def test_update_timing_keys():
    """"ts" and "wait" (the aggregator's time budget) go after "model"/"round", as the C
    encoder writes them, both or neither; absent, they decode as 0."""
    d = _logreg(2)
    args = (bytes(16), "t1", 7, 3, 600, 19, 0.5, 1.5,
            [("fc.weight", d["fc.weight"]), ("fc.bias", d["fc.bias"])])
    f = wire.encode_update(*args, model="logreg", round=2, ts=1700000000.5, wait=0.25)
    assert f[0] == 0x8F  # a map of 15 keys: the 12 of test_update_bytes, "round", "ts", "wait"
    timing = (h("a5 72 6f 75 6e 64 02") + h("a2 74 73 cb") + struct.pack(">d", 1700000000.5)
              + h("a4 77 61 69 74 cb") + struct.pack(">d", 0.25) + h("a7 74 65 6e 73 6f 72 73"))
    assert timing in f
    t, u = wire.decode(f)
    assert (t, u["ts"], u["wait"], u["round"]) == ("UPDATE", 1700000000.5, 0.25, 2)
    t, u = wire.decode(wire.encode_update(*args))
    assert (u["ts"], u["wait"]) == (0, 0) and b"wait" not in wire.encode_update(*args)
    for bad in (dict(ts=float("nan")), dict(ts=-1.0), dict(ts=1.0, wait=-0.5),
                dict(ts=1.0, wait=float("inf")), dict(ts="now")):
        with pytest.raises(WireError) as e:
            wire.encode_update(*args, **bad)
        assert e.value.code == "arg", bad


def test_numpy_scalars_are_plain_on_the_wire():
    a = wire.encode_update(bytes(16), "t1", np.int64(7), np.uint32(3), np.int32(600),
                           np.int64(19), np.float32(0.5), np.float64(1.5),
                           [("b", np.zeros(2, np.float64))], round=np.int64(4))
    b = wire.encode_update(bytes(16), "t1", 7, 3, 600, 19, 0.5, 1.5,
                           [("b", np.zeros(2, np.float32))], round=4)
    assert a == b
    assert wire.encode_hello("t1", np.int64(1234), np.uint8(0), np.int16(10), np.int64(2),
                             np.uint64(1)) == HELLO


# ---- round trips of the optional keys ---------------------------------------------------------

def test_sync_model_round_trip():
    p = _logreg()
    f = wire.encode_model(9, "logreg", 12.25, p, round=4, cohort=[3, 70000, 0], mu=0.01, q=0.5,
                          boot=0xFFFFFFFFFFFFFFFF, applied=77, ups=3.5)
    m = wire.decode_model(f)
    assert (m.mv, m.round, m.cohort, m.mu, m.q, m.boot, m.applied, m.ups) == \
        (9, 4, (3, 70000, 0), 0.01, 0.5, 0xFFFFFFFFFFFFFFFF, 77, 3.5)
    assert m.sync
    empty = wire.decode_model(wire.encode_model(9, "logreg", 1.0, p, round=0, cohort=[]))
    assert empty.cohort == () and empty.sync and empty.round == 0


def test_decline_round_trip():
    # tests/unit/wire_test.c's test_decline, byte for byte
    f = wire.encode_decline("t-1", [7, 4000000000], 5, 300)
    assert f == (b"\x86\xa1v\x01\xa1t\xa7DECLINE\xa7trainer\xa3t-1\xa7clients\xc4\x08"
                 b"\x07\x00\x00\x00\x00\x28\x6b\xee\xa4base\x05\xa5round\xcd\x01\x2c")
    assert len(f) == 59  # §7: 48 bytes + the 3-byte id + 4 per client
    assert wire.decode(f) == ("DECLINE", {"trainer": "t-1", "clients": (7, 4000000000),
                                          "base": 5, "round": 300})


def test_metrics_optional_round_trip():
    pop = {"pc": 90, "pmean": 0.8, "pmin": 0.1, "pworst": 17, "pp10": 0.5, "pthr": 0.7,
           "pbelow": 0.25}
    f = wire.encode_metrics(1, "cnn", 0.5, 2.0, [0.5] * 10, 10, 1.0, 2.0, applied=5, ups=1.5,
                            eps=3.0, delta=1e-5, sadone=2, saabort=1, sadrop=3, pop=pop)
    m = wire.decode_metrics(f)
    for k, v in pop.items():
        assert m[k] == v
    assert (m["applied"], m["ups"], m["eps"], m["delta"], m["sadone"], m["saabort"],
            m["sadrop"]) == (5, 1.5, 3.0, 1e-5, 2, 1, 3)


def test_unknown_keys_ignored():
    frame = msgpack.packb({"v": 1, "t": "ACK", "zz": {"a": [1, {"b": None}]}, "boot": 1, "mv": 0,
                           "status": "stale", "ids": bytes(16), "x": b"\x00"}, use_bin_type=True)
    assert wire.decode_ack(frame).status == "stale"


# ---- rejections -------------------------------------------------------------------------------

def pk(d):
    return msgpack.packb(d, use_bin_type=True)


ACK_OK = {"v": 1, "t": "ACK", "boot": 1, "mv": 0, "status": "applied", "ids": bytes(16)}


def with_(base, **kw):
    d = dict(base)
    for k, v in kw.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return d


@pytest.mark.parametrize("frame,code,text", [
    (b"", "trunc", "empty message"),
    (pk(ACK_OK)[:-3], "trunc", ""),
    (pk(ACK_OK) + b"\x00", "format", "trailing"),
    (pk([1, 2]), "format", "not a msgpack map"),
    (b"\xc1", "format", ""),
    (pk(with_(ACK_OK, v=3)), "version", "protocol version 3"),
    (pk(with_(ACK_OK, v=...)), "format", "v: missing"),
    (pk(with_(ACK_OK, v="1")), "format", "v: expected an integer"),
    (pk(with_(ACK_OK, t=...)), "format", "t: missing"),
    (pk(with_(ACK_OK, t="NOPE")), "format", "unknown message type"),
    (pk(with_(ACK_OK, t="MODEL")), "format", "expected ACK"),
    (pk(with_(ACK_OK, boot=0)), "range", "boot: 0"),
    (pk(with_(ACK_OK, boot=True)), "format", "boot: expected an unsigned integer"),
    (pk(with_(ACK_OK, boot=-1)), "range", "negative"),
    (pk(with_(ACK_OK, mv=1.0)), "format", "mv: expected an unsigned integer"),
    (pk(with_(ACK_OK, ids=bytes(17))), "format", "not a positive multiple of 16"),
    (pk(with_(ACK_OK, ids=b"")), "format", "not a positive multiple of 16"),
    (pk(with_(ACK_OK, ids="x" * 16)), "format", "ids: expected a bin"),
    (pk(with_(ACK_OK, status="app lied")), "format", "byte 0x20 at offset 3"),
    (pk(with_(ACK_OK, status="a" * 16)), "range", "at most 15"),
    (pk(with_(ACK_OK, status="")), "format", "empty string"),
    (pk(with_(ACK_OK, status=b"applied")), "format", "status: expected a string"),
    (pk(with_(ACK_OK, status="appliéd")), "format", "byte 0xc3"),
    (pk(with_(ACK_OK, mv=...)), "format", "mv: missing key"),
    (pk({"v": 1, "t": "ACK", 7: 1}), "format", "is not a string"),
])
def test_rejections(frame, code, text):
    with pytest.raises(WireError) as e:
        wire.decode(frame, ("ACK",))
    assert e.value.code == code, str(e.value)
    assert text in str(e.value)
    assert isinstance(e.value, ValueError)


def test_duplicate_key():
    frame = HELLO[:1] + HELLO[1:]  # fixmap 8 -> 9 with "seq" twice
    frame = b"\x89" + HELLO[1:] + b"\xa3seq\x02"
    with pytest.raises(WireError, match="seq: duplicate key"):
        wire.decode(frame)
    frame = b"\x89" + HELLO[1:] + b"\xa1v\x01"
    with pytest.raises(WireError, match="v: duplicate key"):
        wire.decode(frame)


def test_nesting_limit():
    deep = 0
    for _ in range(14):  # levels 2..15 arrays + the int at 16: allowed
        deep = [deep]
    assert wire.decode(pk(with_(ACK_OK, x=deep)))[0] == "ACK"
    with pytest.raises(WireError, match="nested deeper than 16") as e:
        wire.decode(pk(with_(ACK_OK, x=[deep])))
    assert e.value.code == "range"


def test_id_class():
    for bad, byte in (("t\n1", "0x0a"), ("t 1", "0x20"), ("t#1", "0x23"), ("tü", "0xc3")):
        with pytest.raises(WireError, match=byte + " at offset 1 is not allowed in an id"):
            wire.decode(pk({"v": 1, "t": "SNAPSHOT_REQ", "from": bad}))
        with pytest.raises(WireError) as e:
            wire.encode_snapshot_req(bad)
        assert e.value.code == "arg"
    ok = "host-a/trainer_1.x:y@z"
    assert wire.decode(wire.encode_snapshot_req(ok))[1]["from"] == ok
    with pytest.raises(WireError, match="at most 255"):
        wire.decode(pk({"v": 1, "t": "SNAPSHOT_REQ", "from": "a" * 256}))
    with pytest.raises(WireError, match="at most 255"):
        wire.encode_snapshot_req("a" * 256)
    assert wire.decode(wire.encode_snapshot_req("a" * 255))[0] == "SNAPSHOT_REQ"


def test_u32_range():
    m = {"v": 1, "t": "HELLO", "trainer": "t", "pid": 2 ** 32, "cfirst": 0, "ccount": 0,
         "workers": 1, "seq": 0}
    with pytest.raises(WireError, match="pid: value 4294967296 exceeds 4294967295"):
        wire.decode(pk(m))
    with pytest.raises(WireError):
        wire.encode_hello("t", 2 ** 32, 0, 0, 1, 0)
    m["pid"] = 2 ** 32 - 1
    assert wire.decode(pk(m))[1]["pid"] == 2 ** 32 - 1
    del m["seq"]
    with pytest.raises(WireError, match="seq: missing key"):
        wire.decode(pk(m))


def test_heartbeat_needs_sent_and_busy():
    m = wire.decode(HELLO)[1]
    hb = dict(v=1, t="HEARTBEAT", **{k: v for k, v in m.items() if k not in ("sent", "busy")})
    with pytest.raises(WireError, match="sent: missing key"):
        wire.decode(pk(hb))


def _model_msg(tensors, **kw):
    d = {"v": 1, "t": "MODEL", "mv": 1, "model": "logreg", "ts": 1.0, "tensors": tensors}
    d.update(kw)
    return pk(d)


def _tmap(name="fc.bias", dtype="F32", shape=(10,), data=None):
    if data is None:
        data = np.zeros(int(np.prod(shape)), "<f4").tobytes()
    return {"name": name, "dtype": dtype, "shape": list(shape), "data": data}


W = _tmap("fc.weight", shape=(10, 784))


@pytest.mark.parametrize("tensors,kw,code,text", [
    ([W, _tmap(dtype="F16")], {}, "dtype", "dtype 'F16', expected F32 (protocol version 1)"),
    ([W, _tmap(dtype="F64")], {"v": 2}, "dtype", "dtype 'F64', expected F32, F16, BF16 or I8"),
    ([W, dict(_tmap(), idx=bytes(4))], {}, "format", "\"idx\" is an encoding of protocol"),
    ([W, dict(_tmap(dtype="I8", data=bytes(10)))], {"v": 2}, "format", "I8 without \"scale\""),
    ([W, dict(_tmap(dtype="I8", data=bytes(10)), scale=float("nan"))], {"v": 2}, "encoding",
     "scale nan"),
    ([W, dict(_tmap(dtype="F16", data=bytes(18)))], {"v": 2}, "encoding", "18 data bytes"),
    ([W, dict(_tmap(data=bytes(8)), idx=np.array([3, 3], "<u4").tobytes())], {"v": 2},
     "encoding", "idx[1] = 3 not above"),
    ([W, dict(_tmap(data=bytes(4)), idx=np.array([10], "<u4").tobytes())], {"v": 2},
     "encoding", "idx[0] = 10 out of range"),
    ([W, dict(_tmap(), comp="zstd")], {"v": 2}, "encoding", "does not decompress"),
    ([W, dict(_tmap(), comp="lz4")], {"v": 2}, "format", "the only compression is zstd"),
    ([W, _tmap(dtype="F" * 16)], {}, "range", "dtype: string of 16 bytes"),
    ([W, _tmap(data=bytes(36))], {}, "shape", "36 data bytes, expected 40"),
    ([W, _tmap(shape=(11,), data=bytes(44))], {}, "shape", "shape [11], expected [10]"),
    ([W], {}, "name", "'fc.bias': missing"),
    ([W, _tmap(), _tmap()], {}, "name", "duplicate"),
    ([W, _tmap(), _tmap("x", shape=(1,))], {}, "name", "'x': unknown"),
    ([W, _tmap(data=np.full(10, np.nan, "<f4").tobytes())], {}, "nonfinite", "element 0"),
    ([W, _tmap(data=np.r_[np.zeros(3), np.inf, np.zeros(6)].astype("<f4").tobytes())], {},
     "nonfinite", "element 3"),
    ([W, _tmap(shape=(1, 1, 1, 1, 10))], {}, "range", "5 dims, at most 4"),
    ([W, dict(_tmap(), data="x" * 40)], {}, "format", "data: expected a bin"),
    ([W, {k: v for k, v in _tmap().items() if k != "shape"}], {}, "format", "missing key 'shape'"),
    ([W, _tmap(name="fc bias")], {}, "format", "byte 0x20"),
    ([W, _tmap()], {"cohort": bytes(6), "round": 1, "mu": 0.0}, "format", "not a multiple of 4"),
    ([W, _tmap()], {"cohort": bytes(4), "round": 1, "mu": 2000.0}, "range", "mu"),
    ([W, _tmap()], {"cohort": bytes(4), "round": 1, "mu": 0.0, "q": 1.5}, "range", "q"),
    ([W, _tmap()], {"cohort": "abcd"}, "format", "cohort: expected a bin"),
    ([W, _tmap()] * 33, {}, "range", "66 tensors, at most 64"),
    ([W, _tmap()], {"model": "mlp"}, "model", "is a mlp, expected logreg"),
    ([W, _tmap()], {"model": ""}, "format", "model: empty string"),
    ([W, _tmap()], {"ts": "now"}, "format", "ts: expected a number"),
])
def test_model_rejections(tensors, kw, code, text):
    with pytest.raises(WireError) as e:
        wire.decode_model(_model_msg(tensors, **kw), "logreg")
    assert e.value.code == code, str(e.value)
    assert text in str(e.value), str(e.value)


def test_model_version_2_encodings_decode():
    """§2.1.2 from numpy, independently of the C encoder: F16, BF16 (top half of F32), I8 x
    scale, sparse idx; the values are what the formats say."""
    x = np.linspace(-2, 3, 10).astype(np.float32)
    bf = (x.view("<u4") >> 16).astype("<u2")  # truncation: a valid BF16 of x
    q = np.arange(-5, 5, dtype="i1")
    cases = [
        (_tmap(dtype="F16", data=x.astype("<f2").tobytes()), x.astype(np.float16)),
        (_tmap(dtype="BF16", data=bf.tobytes()), (bf.astype("<u4") << 16).view("<f4")),
        (dict(_tmap(dtype="I8", data=q.tobytes()), scale=0.25), q.astype(np.float32) * 0.25),
        (dict(_tmap(data=np.float32([7, -1]).tobytes()), idx=np.array([2, 9], "<u4").tobytes()),
         np.float32([0, 0, 7, 0, 0, 0, 0, 0, 0, -1])),
    ]
    for t, want in cases:
        m = wire.decode_model(_model_msg([W, t], v=2), "logreg")
        assert m.params["fc.bias"].dtype == np.float32
        np.testing.assert_array_equal(m.params["fc.bias"], want.astype(np.float32))


def test_model_accepts_integer_ts_and_unknown_tensor_keys():
    t = dict(_tmap(), extra={"x": [1, 2]})
    m = wire.decode_model(_model_msg([W, t], ts=5), "logreg")
    assert m.ts == 5.0 and isinstance(m.ts, float)


def test_spec_model_must_match_its_fingerprint():
    from fedmq_client import spec
    p = {"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    name = spec.spec_name(p)
    m = wire.decode_model(wire.encode_model(0, name, 1.0, p), name)
    assert list(m.params) == ["a", "b"]
    q = {"a": np.ones((3, 2), np.float32), "b": np.zeros(4, np.float32)}
    with pytest.raises(WireError, match="fingerprint"):
        wire.decode_model(wire.encode_model(0, name, 1.0, q), name)


def test_encoder_refusals():
    ok = dict(id=bytes(16), trainer="t", client=0, base=0, n=1, steps=1, loss=0.0, secs=0.0,
              tensors=[("x", np.zeros(2))])
    wire.encode_update(**ok)
    for bad in (dict(id=bytes(15)), dict(trainer=""), dict(trainer="t 1"), dict(client=-1),
                dict(client=2 ** 32), dict(base=2 ** 64), dict(steps=1.5), dict(n=True),
                dict(loss="x"), dict(tensors=[("x", np.array([1.0, np.nan]))]),
                dict(tensors=[("x", np.zeros((1, 1, 1, 1, 1)))]),
                dict(tensors=[("x y", np.zeros(1))]),
                dict(tensors=[("x", np.zeros(1)), ("x", np.zeros(1))]),
                dict(tensors=[("t%d" % i, np.zeros(1)) for i in range(65)]),
                dict(tensors=[("x", np.array(["a"]))]), dict(model="lo greg")):
        with pytest.raises(WireError) as e:
            wire.encode_update(**dict(ok, **bad))
        assert e.value.code == "arg", bad
    nan_loss = wire.encode_update(**dict(ok, loss=float("nan")))  # DP-SGD: allowed
    assert math.isnan(wire.decode(nan_loss)[1]["loss"])
    with pytest.raises(WireError):
        wire.encode_decline("t", [], 1, 1)
    with pytest.raises(WireError):
        wire.encode_decline("t", [1], 1, 0)
    with pytest.raises(WireError):
        wire.encode_metrics(1, "m", 0, 0, [0.0] * 9, 1, 0, 0)
    with pytest.raises(WireError):
        wire.encode_member("PING", "t", 1, 0, 0, 1, 0)


def test_metrics_rejections():
    m = msgpack.unpackb(METRICS)
    with pytest.raises(WireError, match="cacc: 9 entries, expected 10"):
        wire.decode_metrics(pk(dict(m, cacc=m["cacc"][:9])))
    with pytest.raises(WireError, match="cacc: expected a number"):
        wire.decode_metrics(pk(dict(m, cacc=[None] * 10)))
    with pytest.raises(WireError, match="pc: value"):
        wire.decode_metrics(pk(dict(m, pc=2 ** 32)))
