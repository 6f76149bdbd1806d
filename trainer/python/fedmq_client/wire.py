"""fedmq wire protocol v1 (docs/PROTOCOL.md): encoders and strict decoders.

Every message is one msgpack map in one ZeroMQ frame. The decoders check what the C decoder
(shared/svc/fm_wire.c) checks and raise one WireError (a ValueError) naming the type and the
field; the encoders refuse (WireError) what the C decoder would reject, and write the keys
in the C encoder's order, so that their bytes equal fedmq's (docs/PROTOCOL.md §8).
"""
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import msgpack
import numpy as np

VERSION = 1                # what this client sends (raw float32 tensors)
VERSION_MAX = 2            # what it reads: 2 = 1 + tensor encodings (§2.1.2)
PROTOCOL_VERSION = VERSION
MAX_TENSORS = 64
MAX_DIMS = 4
STR_MAX = 255
DTYPE_MAX = 15
STATUS_MAX = 15
MAX_DEPTH = 16
ID_LEN = 16
MAX_COHORT = 1 << 20
MAX_ACK_IDS = 65536
NCLASSES = 10
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

TYPES = ("MODEL", "UPDATE", "HELLO", "HEARTBEAT", "BYE", "SNAPSHOT_REQ", "METRICS", "ACK",
         "DECLINE", "COHORT_INVITE", "ADVERTISE_KEYS", "KEY_LIST", "SHARES", "SHARES_FWD",
         "MASKED_UPDATE", "UNMASK_REQ", "UNMASK_SHARES", "COHORT_DONE", "COHORT_ABORT")
MEMBER_TYPES = ("HELLO", "HEARTBEAT", "BYE")

_ID_EXTRA = set(b"._-:@/")


class WireError(ValueError):
    """A frame (or a message to encode) the C decoder would reject. `code` is the C error:
    'trunc', 'format', 'range', 'version' (decoding), 'arg' (encoding), or 'name', 'dtype',
    'shape', 'encoding', 'nonfinite', 'model' (checks against a model)."""

    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code


# ---- text classes (§2 rule 6) ---------------------------------------------------------------

def _id_byte(c: int) -> bool:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in _ID_EXTRA


def _name_byte(c: int) -> bool:
    return 0x21 <= c <= 0x7E


def text_check(kind: str, s: str) -> Optional[str]:
    """None if s is text of class kind ('id' or 'name'), else why not."""
    for i, ch in enumerate(s):
        c = ord(ch)
        ok = c < 0x80 and (_id_byte(c) if kind == "id" else _name_byte(c))
        if not ok:
            what = ("an id (letters, digits, . _ - : @ /)" if kind == "id"
                    else "a name (printable ASCII, no space)")
            shown = "0x%02x" % c if c < 0x100 else "U+%04X" % c
            return "byte %s at offset %d is not allowed in %s" % (shown, i, what)
    return None


def is_id(s) -> bool:
    """True if s is a valid non-empty id (trainer id, SNAPSHOT_REQ "from")."""
    return isinstance(s, str) and 0 < len(s) <= STR_MAX and text_check("id", s) is None


def is_name(s) -> bool:
    """True if s is a valid non-empty name (model, tensor name)."""
    return isinstance(s, str) and 0 < len(s) <= STR_MAX and text_check("name", s) is None


# ---- encoding ---------------------------------------------------------------------------------

def _arg(what: str, msg: str):
    raise WireError("arg", "%s: %s" % (what, msg))


def _enc_str(what, key, s, kind, nonempty=True, cap=STR_MAX):
    if not isinstance(s, str):
        _arg(what, "%s: expected str, got %s" % (key, type(s).__name__))
    if nonempty and not s:
        _arg(what, "%s: empty string" % key)
    if len(s) > cap:
        _arg(what, "%s: string of %d bytes, at most %d allowed" % (key, len(s), cap))
    why = text_check(kind, s)
    if why:
        _arg(what, "%s: %s" % (key, why))
    return s


def _enc_uint(what, key, v, maxv=U64_MAX):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        _arg(what, "%s: expected an unsigned integer, got %s" % (key, type(v).__name__))
    v = int(v)
    if v < 0 or v > maxv:
        _arg(what, "%s: %d out of [0, %d]" % (key, v, maxv))
    return v


def _enc_float(what, key, v, finite=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        _arg(what, "%s: expected a number, got %s" % (key, type(v).__name__))
    v = float(v)
    if finite and not math.isfinite(v):
        _arg(what, "%s: %r is not finite" % (key, v))
    return v


def _enc_ids_le32(what, key, ids, nonempty):
    ids = [_enc_uint(what, key, c, U32_MAX) for c in ids]
    if nonempty and not ids:
        _arg(what, "%s: at least one client id needed" % key)
    if len(ids) > MAX_COHORT:
        _arg(what, "%s: %d client ids, at most %d allowed" % (key, len(ids), MAX_COHORT))
    return struct.pack("<%dI" % len(ids), *ids)


def _enc_tensors(what, tensors, finite=True):
    """tensors: a sequence of (name, array) or a dict name -> array; float32 LE data."""
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    if len(items) > MAX_TENSORS:
        _arg(what, "tensors: %d tensors, at most %d allowed" % (len(items), MAX_TENSORS))
    out, seen = [], set()
    for i, (name, a) in enumerate(items):
        _enc_str(what, "tensors[%d].name" % i, name, "name")
        if name in seen:
            _arg(what, "tensors[%d].name: '%s' twice" % (i, name))
        seen.add(name)
        a = np.asarray(a)
        if a.ndim > MAX_DIMS:
            _arg(what, "tensors[%d].shape: %d dims, at most %d allowed" % (i, a.ndim, MAX_DIMS))
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            _arg(what, "tensors[%d]: dtype %s is not a number" % (i, a.dtype))
        d = np.ascontiguousarray(a, dtype="<f4")
        if finite and not np.isfinite(d).all():
            bad = int(np.flatnonzero(~np.isfinite(d.reshape(-1)))[0])
            _arg(what, "tensor '%s': non-finite value at element %d" % (name, bad))
        out.append({"name": name, "dtype": "F32", "shape": [int(x) for x in d.shape],
                    "data": d.tobytes()})
    return out


def _pack(msg: dict) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def new_id() -> bytes:
    """A new random update id (§2.2): 16 bytes from the OS's cryptographic source."""
    return os.urandom(ID_LEN)


def encode_member(kind: str, trainer: str, pid: int, cfirst: int, ccount: int, workers: int,
                  seq: int, sent: int = 0, busy: int = 0) -> bytes:
    """HELLO, HEARTBEAT or BYE (§3.3); "sent" and "busy" are written in HEARTBEAT only."""
    if kind not in MEMBER_TYPES:
        _arg(str(kind), "not a membership type (HELLO, HEARTBEAT, BYE)")
    msg = {"v": VERSION, "t": kind,
           "trainer": _enc_str(kind, "trainer", trainer, "id"),
           "pid": _enc_uint(kind, "pid", pid, U32_MAX),
           "cfirst": _enc_uint(kind, "cfirst", cfirst, U32_MAX),
           "ccount": _enc_uint(kind, "ccount", ccount, U32_MAX),
           "workers": _enc_uint(kind, "workers", workers, U32_MAX),
           "seq": _enc_uint(kind, "seq", seq)}
    if kind == "HEARTBEAT":
        msg["sent"] = _enc_uint(kind, "sent", sent)
        msg["busy"] = _enc_uint(kind, "busy", busy, U32_MAX)
    return _pack(msg)


def encode_hello(trainer, pid, cfirst, ccount, workers, seq) -> bytes:
    return encode_member("HELLO", trainer, pid, cfirst, ccount, workers, seq)


def encode_heartbeat(trainer, pid, cfirst, ccount, workers, seq, sent, busy) -> bytes:
    return encode_member("HEARTBEAT", trainer, pid, cfirst, ccount, workers, seq, sent, busy)


def encode_bye(trainer, pid, cfirst, ccount, workers, seq) -> bytes:
    return encode_member("BYE", trainer, pid, cfirst, ccount, workers, seq)


def encode_snapshot_req(frm: str, have: int = 0) -> bytes:
    """SNAPSHOT_REQ (§3.4); "have" is always written, as fedmq does."""
    w = "SNAPSHOT_REQ"
    return _pack({"v": VERSION, "t": w, "from": _enc_str(w, "from", frm, "id"),
                  "have": _enc_uint(w, "have", have)})


def encode_update(id: bytes, trainer: str, client: int, base: int, n: int, steps: int,
                  loss: float, secs: float, tensors, model: str = "", round: int = 0,
                  ts: float = 0.0, wait: float = 0.0) -> bytes:
    """UPDATE (§3.2). tensors: (name, delta) pairs or a dict, in the MODEL's order; the data
    is written as little-endian float32 and must be finite (the aggregator refuses
    `nonfinite`). "model" is written when non-empty, "round" when non-zero, "ts" (Unix time
    of encoding, finite, > 0) and "wait" (the worker's idle seconds before this training,
    finite, >= 0) together when ts is non-zero, as fedmq-trainer does. "loss" may be NaN
    (DP-SGD)."""
    w = "UPDATE"
    if not isinstance(id, (bytes, bytearray)) or len(id) != ID_LEN:
        _arg(w, "id: expected %d bytes" % ID_LEN)
    msg = {"v": VERSION, "t": w, "id": bytes(id),
           "trainer": _enc_str(w, "trainer", trainer, "id"),
           "client": _enc_uint(w, "client", client, U32_MAX),
           "base": _enc_uint(w, "base", base),
           "n": _enc_uint(w, "n", n),
           "steps": _enc_uint(w, "steps", steps),
           "loss": _enc_float(w, "loss", loss),
           "secs": _enc_float(w, "secs", secs)}
    if model:
        msg["model"] = _enc_str(w, "model", model, "name")
    if round:
        msg["round"] = _enc_uint(w, "round", round)
    ts = _enc_float(w, "ts", ts, finite=True)
    if ts != 0:
        if ts < 0:
            _arg(w, "ts: %r, must be > 0 (Unix seconds) or 0 (not sent)" % (ts,))
        wait = _enc_float(w, "wait", wait, finite=True)
        if wait < 0:
            _arg(w, "wait: %r, must be >= 0" % (wait,))
        msg["ts"] = ts
        msg["wait"] = wait
    msg["tensors"] = _enc_tensors(w, tensors)
    return _pack(msg)


def encode_decline(trainer: str, clients: Sequence[int], base: int, round: int) -> bytes:
    """DECLINE (§3.7): at least one client, round >= 1."""
    w = "DECLINE"
    if _enc_uint(w, "round", round) == 0:
        _arg(w, "round: 0, must be non-zero")
    return _pack({"v": VERSION, "t": w, "trainer": _enc_str(w, "trainer", trainer, "id"),
                  "clients": _enc_ids_le32(w, "clients", clients, True),
                  "base": _enc_uint(w, "base", base), "round": int(round)})


def _enc_dp_secagg(w, msg, eps, delta, sadone, saabort, sadrop):
    """The optional keys MODEL and METRICS share, in the C encoders' order: "eps"/"delta"
    when delta > 0, "sadone"/"saabort"/"sadrop" once a cohort has ended."""
    if delta > 0:
        msg["eps"] = _enc_float(w, "eps", eps)
        msg["delta"] = _enc_float(w, "delta", delta)
    if sadone or saabort:
        msg["sadone"] = _enc_uint(w, "sadone", sadone)
        msg["saabort"] = _enc_uint(w, "saabort", saabort)
        msg["sadrop"] = _enc_uint(w, "sadrop", sadrop)


def encode_model(mv: int, model: str, ts: float, tensors, round: Optional[int] = None,
                 cohort: Optional[Sequence[int]] = None, mu: float = 0.0, q: float = 0.0,
                 boot: int = 0, applied: int = 0, ups: float = 0.0, eps: float = 0.0,
                 delta: float = 0.0, sadone: int = 0, saabort: int = 0,
                 sadrop: int = 0) -> bytes:
    """MODEL (§3.1), as the aggregator writes it (for tests and tools). A sync MODEL has a
    cohort (a sequence, maybe empty): then "round", "cohort", "mu" (and "q" if > 0) are
    written; "eps"/"delta" when delta > 0, the secagg counts when sadone or saabort."""
    w = "MODEL"
    msg = {"v": VERSION, "t": w, "mv": _enc_uint(w, "mv", mv),
           "model": _enc_str(w, "model", model, "name"), "ts": _enc_float(w, "ts", ts)}
    if boot:
        msg["boot"] = _enc_uint(w, "boot", boot)
    if applied or ups:
        msg["applied"] = _enc_uint(w, "applied", applied)
        msg["ups"] = _enc_float(w, "ups", ups)
    if cohort is not None:
        msg["round"] = _enc_uint(w, "round", round or 0)
        msg["cohort"] = _enc_ids_le32(w, "cohort", cohort, False)
        msg["mu"] = _enc_float(w, "mu", mu)
        if q > 0:
            msg["q"] = _enc_float(w, "q", q)
    _enc_dp_secagg(w, msg, eps, delta, sadone, saabort, sadrop)
    msg["tensors"] = _enc_tensors(w, tensors)
    return _pack(msg)


def encode_metrics(mv: int, model: str, acc: float, loss: float, cacc: Sequence[float], n: int,
                   secs: float, ts: float, applied: int = 0, ups: float = 0.0,
                   eps: float = 0.0, delta: float = 0.0, sadone: int = 0, saabort: int = 0,
                   sadrop: int = 0, pop: Optional[dict] = None) -> bytes:
    """METRICS (§3.5), keys in the evaluator's order. pop: the population keys ("pc",
    "pmean", "pmin", "pworst", "pp10", "pthr", "pbelow"), written when pop["pc"] > 0."""
    w = "METRICS"
    cacc = list(cacc)
    if len(cacc) != NCLASSES:
        _arg(w, "cacc: %d entries, expected %d" % (len(cacc), NCLASSES))
    msg = {"v": VERSION, "t": w, "mv": _enc_uint(w, "mv", mv),
           "model": _enc_str(w, "model", model, "name"),
           "acc": _enc_float(w, "acc", acc), "loss": _enc_float(w, "loss", loss),
           "cacc": [_enc_float(w, "cacc", x) for x in cacc],
           "n": _enc_uint(w, "n", n), "secs": _enc_float(w, "secs", secs),
           "ts": _enc_float(w, "ts", ts)}
    if applied or ups:
        msg["applied"] = _enc_uint(w, "applied", applied)
        msg["ups"] = _enc_float(w, "ups", ups)
    _enc_dp_secagg(w, msg, eps, delta, sadone, saabort, sadrop)
    if pop and pop.get("pc", 0):
        msg["pc"] = _enc_uint(w, "pc", pop["pc"], U32_MAX)
        for k in ("pmean", "pmin"):
            msg[k] = _enc_float(w, k, pop.get(k, 0.0))
        msg["pworst"] = _enc_uint(w, "pworst", pop.get("pworst", 0), U32_MAX)
        for k in ("pp10", "pthr", "pbelow"):
            msg[k] = _enc_float(w, k, pop.get(k, 0.0))
    return _pack(msg)


def encode_ack(boot: int, mv: int, status: str, ids: Sequence[bytes]) -> bytes:
    """ACK (§3.6), as the aggregator writes it (for tests)."""
    w = "ACK"
    if _enc_uint(w, "boot", boot) == 0:
        _arg(w, "boot: 0, must be non-zero")
    ids = list(ids)
    if not ids or len(ids) > MAX_ACK_IDS or any(len(i) != ID_LEN for i in ids):
        _arg(w, "ids: 1..%d ids of %d bytes expected" % (MAX_ACK_IDS, ID_LEN))
    return _pack({"v": VERSION, "t": w, "boot": int(boot), "mv": _enc_uint(w, "mv", mv),
                  "status": _enc_str(w, "status", status, "name", cap=STATUS_MAX),
                  "ids": b"".join(bytes(i) for i in ids)})


# ---- decoding ---------------------------------------------------------------------------------

class _Map(list):
    """A decoded msgpack map: its (key, value) pairs in order (duplicates kept)."""


def _kind(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (bytes, bytearray)):
        return "bin"
    if isinstance(v, _Map):
        return "map"
    if isinstance(v, list):
        return "array"
    return "ext"


class _Rd:
    def __init__(self, what):
        self.what = what

    def err(self, code, fld, msg):
        where = "%s: %s: " % (self.what, fld) if fld else "%s: " % self.what
        raise WireError(code, where + msg)

    def wrong(self, fld, v, want):
        self.err("format", fld, "expected %s, got %s" % (want, _kind(v)))

    def uint(self, fld, v, maxv=U64_MAX):
        if type(v) is not int:
            self.wrong(fld, v, "an unsigned integer")
        if v < 0:
            self.err("range", fld, "negative value %d" % v)
        if v > maxv:
            self.err("range", fld, "value %d exceeds %d" % (v, maxv))
        return v

    def num(self, fld, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.wrong(fld, v, "a number")
        return float(v)

    def text(self, fld, v, kind, nonempty=True, cap=STR_MAX):
        if not isinstance(v, str):
            self.wrong(fld, v, "a string")
        try:
            raw = v.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = v.encode("utf-8", "replace")
        if len(raw) > cap:
            self.err("range", fld, "string of %d bytes, at most %d allowed" % (len(raw), cap))
        if not raw and nonempty:
            self.err("format", fld, "empty string")
        for i, c in enumerate(raw):
            if c == 0:
                self.err("format", fld, "string contains a NUL byte")
        for i, c in enumerate(raw):
            if not (_id_byte(c) if kind == "id" else _name_byte(c)) or c >= 0x80:
                what = ("an id (letters, digits, . _ - : @ /)" if kind == "id"
                        else "a name (printable ASCII, no space)")
                self.err("format", fld, "byte 0x%02x at offset %d is not allowed in %s"
                         % (c, i, what))
        return v

    def binary(self, fld, v):
        if not isinstance(v, (bytes, bytearray)):
            self.wrong(fld, v, "a bin")
        return bytes(v)


def _depth_ok(v, level, rd):
    """Nesting of v (at `level`, the top map being 1) at most MAX_DEPTH (iterative)."""
    stack = [(v, level)]
    while stack:
        x, lv = stack.pop()
        if lv > MAX_DEPTH:
            rd.err("range", "", "value nested deeper than %d levels" % MAX_DEPTH)
        if isinstance(x, _Map):
            for k, y in x:
                stack.append((k, lv + 1))
                stack.append((y, lv + 1))
        elif isinstance(x, list):
            for y in x:
                stack.append((y, lv + 1))


def _frame(buf: bytes, what: str):
    """Pass 1 (§4 steps 1-3): one map with str keys, nothing after it, nesting <= 16, "v" 1,
    "t" a known type. Returns (type, pairs)."""
    rd = _Rd(what)
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError("a frame is bytes")
    buf = bytes(buf)
    if not buf:
        rd.err("trunc", "", "empty message")
    try:
        top = msgpack.unpackb(buf, raw=False, use_list=True, object_pairs_hook=_Map,
                              strict_map_key=False, unicode_errors="surrogateescape")
    except msgpack.ExtraData as e:
        rd.err("format", "", "%d trailing bytes after the map" % len(e.extra))
    except (msgpack.OutOfData, ValueError) as e:
        if isinstance(e, msgpack.OutOfData) or "incomplete" in str(e).lower():
            rd.err("trunc", "", "a length or count runs past the end of the frame")
        rd.err("format", "", "not well-formed msgpack (%s)" % e)
    except Exception as e:  # msgpack's own errors (FormatError, StackError, ...)
        rd.err("format", "", "not well-formed msgpack (%s: %s)" % (type(e).__name__, e))
    if not isinstance(top, _Map):
        rd.err("format", "", "not a msgpack map (first byte 0x%02x)" % buf[0])
    for i, (k, _) in enumerate(top):
        if not isinstance(k, str):
            rd.err("format", "", "key #%d is not a string (%s)" % (i, _kind(k)))
    for i, (k, v) in enumerate(top):
        _depth_ok(v, 2, rd)
    keys = [k for k, _ in top]
    for k in ("v", "t"):
        if keys.count(k) > 1:
            rd.err("format", k, "duplicate key")
    d = {k: v for k, v in top}
    if "v" not in d:
        rd.err("format", "v", "missing key (protocol version)")
    v = d["v"]
    if type(v) is not int:
        rd.wrong("v", v, "an integer")
    if not VERSION <= v <= VERSION_MAX:
        rd.err("version", "v", "protocol version %d, this client speaks %d and %d"
               % (v, VERSION, VERSION_MAX))
    if "t" not in d:
        rd.err("format", "t", "missing key (message type)")
    t = d["t"]
    if not isinstance(t, str):
        rd.wrong("t", t, "a string")
    if t not in TYPES:
        rd.err("format", "t", "unknown message type '%s'" % t[:64].encode("ascii", "replace")
               .decode())
    return t, top


# field kinds: u32, u64, nz64, f64, name, name0 (may be empty), id, status, uid (16-byte bin),
# ids (ACK), le32 (cohort-like bin), le32nz (non-empty), cacc, tensors
_FIELDS = {
    "MODEL": [("mv", "u64", True), ("model", "name", True), ("ts", "f64", True),
              ("tensors", "tensors", True), ("round", "u64", False), ("cohort", "le32", False),
              ("mu", "f64", False), ("q", "f64", False), ("applied", "u64", False),
              ("ups", "f64", False), ("boot", "u64", False), ("eps", "f64", False),
              ("delta", "f64", False), ("sadone", "u64", False), ("saabort", "u64", False),
              ("sadrop", "u64", False)],
    "UPDATE": [("id", "uid", True), ("trainer", "id", True), ("client", "u32", True),
               ("base", "u64", True), ("n", "u64", True), ("steps", "u64", True),
               ("loss", "f64", True), ("secs", "f64", True), ("model", "name0", False),
               ("tensors", "tensors", True), ("round", "u64", False), ("ts", "f64", False),
               ("wait", "f64", False)],
    "SNAPSHOT_REQ": [("from", "id", True), ("have", "u64", False)],
    "METRICS": [("mv", "u64", True), ("model", "name", True), ("acc", "f64", True),
                ("loss", "f64", True), ("cacc", "cacc", True), ("n", "u64", True),
                ("secs", "f64", True), ("ts", "f64", True), ("pc", "u32", False),
                ("pmean", "f64", False), ("pmin", "f64", False), ("pworst", "u32", False),
                ("pp10", "f64", False), ("pthr", "f64", False), ("pbelow", "f64", False),
                ("applied", "u64", False), ("ups", "f64", False), ("eps", "f64", False),
                ("delta", "f64", False), ("sadone", "u64", False), ("saabort", "u64", False),
                ("sadrop", "u64", False)],
    "ACK": [("boot", "nz64", True), ("mv", "u64", True), ("status", "status", True),
            ("ids", "ids", True)],
    "DECLINE": [("trainer", "id", True), ("clients", "le32nz", True), ("base", "u64", True),
                ("round", "nz64", True)],
}
for _m in MEMBER_TYPES:
    _FIELDS[_m] = [("trainer", "id", True), ("pid", "u32", True), ("cfirst", "u32", True),
                   ("ccount", "u32", True), ("workers", "u32", True), ("seq", "u64", True),
                   ("sent", "u64", _m == "HEARTBEAT"), ("busy", "u32", _m == "HEARTBEAT")]

_DEFAULTS = {"u32": 0, "u64": 0, "nz64": 0, "f64": 0.0, "name0": "", "le32": None}


@dataclass
class Tensor:
    """A decoded tensor map: data is the raw bytes of the values (little-endian, in dtype);
    version 2 (§2.1.2): scale (I8), idx (sparse: uint32 indices), comp ("zstd" or None);
    version is the frame's "v"."""
    name: str
    dtype: str
    shape: Tuple[int, ...]
    data: bytes
    scale: Optional[float] = None
    idx: Optional[bytes] = None
    comp: Optional[str] = None
    version: int = VERSION


_TENSOR_KEYS = ("name", "dtype", "shape", "data", "scale", "idx", "comp")


def _tensor(rd, i, v) -> Tensor:
    path = "tensors[%d]" % i
    if not isinstance(v, _Map):
        rd.wrong(path, v, "a map")
    seen = {}
    for j, (k, x) in enumerate(v):
        if not isinstance(k, str):
            rd.err("format", path, "key #%d is not a string (%s)" % (j, _kind(k)))
        if k not in _TENSOR_KEYS:
            continue
        fld = "%s.%s" % (path, k)
        if k in seen:
            rd.err("format", fld, "duplicate key")
        if k == "name":
            seen[k] = rd.text(fld, x, "name")
        elif k in ("dtype", "comp"):
            seen[k] = rd.text(fld, x, "name", cap=DTYPE_MAX)
            if k == "comp" and seen[k] != "zstd":
                rd.err("format", fld, "'%s': the only compression is zstd" % seen[k])
        elif k == "scale":
            seen[k] = rd.num(fld, x)
        elif k == "shape":
            if not isinstance(x, list) or isinstance(x, _Map):
                rd.wrong(fld, x, "an array")
            if len(x) > MAX_DIMS:
                rd.err("range", fld, "%d dims, at most %d allowed" % (len(x), MAX_DIMS))
            seen[k] = tuple(rd.uint(fld, d) for d in x)
        else:
            seen[k] = rd.binary(fld, x)
    for k in ("name", "dtype", "shape", "data"):
        if k not in seen:
            rd.err("format", path, "missing key '%s'" % k)
    return Tensor(seen["name"], seen["dtype"], seen["shape"], seen["data"],
                  seen.get("scale"), seen.get("idx"), seen.get("comp"))


def _field(rd, key, kind, v):
    if kind == "u32":
        return rd.uint(key, v, U32_MAX)
    if kind in ("u64", "nz64"):
        u = rd.uint(key, v)
        if kind == "nz64" and u == 0:
            rd.err("range", key, "0, must be non-zero")
        return u
    if kind == "f64":
        return rd.num(key, v)
    if kind == "name":
        return rd.text(key, v, "name")
    if kind == "name0":
        return rd.text(key, v, "name", nonempty=False)
    if kind == "id":
        return rd.text(key, v, "id")
    if kind == "status":
        return rd.text(key, v, "name", cap=STATUS_MAX)
    if kind == "uid":
        b = rd.binary(key, v)
        if len(b) != ID_LEN:
            rd.err("format", key, "bin of %d bytes, expected %d" % (len(b), ID_LEN))
        return b
    if kind == "ids":
        b = rd.binary(key, v)
        if not b or len(b) % ID_LEN:
            rd.err("format", key, "bin of %d bytes, not a positive multiple of %d"
                   % (len(b), ID_LEN))
        if len(b) // ID_LEN > MAX_ACK_IDS:
            rd.err("range", key, "%d ids, at most %d allowed" % (len(b) // ID_LEN, MAX_ACK_IDS))
        return [b[i:i + ID_LEN] for i in range(0, len(b), ID_LEN)]
    if kind in ("le32", "le32nz"):
        b = rd.binary(key, v)
        if len(b) % 4:
            rd.err("format", key, "bin of %d bytes, not a multiple of 4" % len(b))
        if len(b) // 4 > MAX_COHORT:
            rd.err("range", key, "%d client ids, at most %d allowed" % (len(b) // 4, MAX_COHORT))
        if kind == "le32nz" and not b:
            rd.err("format", key, "empty: at least one client id")
        return tuple(struct.unpack("<%dI" % (len(b) // 4), b))
    if kind == "cacc":
        if not isinstance(v, list) or isinstance(v, _Map):
            rd.wrong(key, v, "an array")
        if len(v) != NCLASSES:
            rd.err("format", key, "%d entries, expected %d" % (len(v), NCLASSES))
        return [rd.num(key, x) for x in v]
    if kind == "tensors":
        if not isinstance(v, list) or isinstance(v, _Map):
            rd.wrong(key, v, "an array")
        if len(v) > MAX_TENSORS:
            rd.err("range", key, "%d tensors, at most %d allowed" % (len(v), MAX_TENSORS))
        return [_tensor(rd, i, x) for i, x in enumerate(v)]
    raise AssertionError(kind)


def decode(frame: bytes, accept: Optional[Sequence[str]] = None) -> Tuple[str, dict]:
    """Decode a frame of one of the types in `accept` (default: any type with fields known
    here: MODEL, UPDATE, HELLO, HEARTBEAT, BYE, SNAPSHOT_REQ, METRICS, ACK, DECLINE) into
    (type, {key: value}) with every known key (absent optional ones at their default: 0,
    0.0, "" or None for "cohort"). Tensors are Tensor objects (not checked against a model:
    check_tensors). Raises WireError."""
    what = "/".join(accept) if accept else "message"
    t, top = _frame(frame, what)
    if t not in _FIELDS or (accept and t not in accept):
        _Rd(what).err("format", "t", "message type %s, expected %s" % (t, what))
    rd = _Rd(t)
    fields = {k: (kind, req) for k, kind, req in _FIELDS[t]}
    out = {}
    for k, v in top:
        if k not in fields:
            continue
        if k in out:
            rd.err("format", k, "duplicate key")
        out[k] = _field(rd, k, fields[k][0], v)
    for k, (kind, req) in fields.items():
        if k not in out:
            if req:
                rd.err("format", k, "missing key")
            out[k] = _DEFAULTS.get(kind)
    if out.get("tensors"):
        version = dict(top)["v"]
        for x in out["tensors"]:
            x.version = version
    return t, out


def peek(frame: bytes) -> str:
    """The type of a frame, after the checks of pass 1 (framing, "v", "t")."""
    return _frame(frame, "message")[0]


_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I8": "i1"}


def _decode_encoded(what: str, x: Tensor, numel: int) -> np.ndarray:
    """An encoded tensor (§2.1.2) -> float32 values (numel), with the C decoder's checks
    ('encoding' for what does not decode). zstd is not read by this client ('encoding')."""
    name = "%s: tensor '%s'" % (what, x.name)
    if x.comp is not None:
        raise WireError("encoding", "%s: comp %s: this client does not decompress (send the "
                        "MODEL uncompressed)" % (name, x.comp))
    if x.dtype == "I8":
        if x.scale is None:
            raise WireError("format", "%s: dtype I8 without \"scale\"" % name)
        if not (np.isfinite(x.scale) and x.scale >= 0):
            raise WireError("encoding", "%s: scale %g, must be finite and >= 0"
                            % (name, x.scale))
    size = np.dtype(_DTYPES[x.dtype]).itemsize
    k = numel
    if x.idx is not None:
        if len(x.idx) % 4:
            raise WireError("encoding", "%s: idx of %d bytes, not a multiple of 4"
                            % (name, len(x.idx)))
        k = len(x.idx) // 4
        if k > numel:
            raise WireError("encoding", "%s: %d indices for %d entries" % (name, k, numel))
    if len(x.data) != k * size:
        raise WireError("encoding", "%s: %d data bytes, expected %d (%d values of %s)"
                        % (name, len(x.data), k * size, k, x.dtype))
    raw = np.frombuffer(x.data, dtype=_DTYPES[x.dtype])
    if x.dtype == "F16":
        vals = raw.astype(np.float32)
    elif x.dtype == "BF16":
        vals = (raw.astype(np.uint32) << 16).view(np.float32)
    elif x.dtype == "I8":
        vals = raw.astype(np.float32) * np.float32(x.scale)
    else:
        vals = raw.astype(np.float32)
    if x.idx is None:
        return vals
    idx = np.frombuffer(x.idx, dtype="<u4").astype(np.int64)
    if k and (np.any(idx >= numel) or np.any(np.diff(idx) <= 0)):
        bad = int(np.flatnonzero(idx >= numel)[0]) if np.any(idx >= numel) else \
            int(np.flatnonzero(np.diff(idx) <= 0)[0]) + 1
        raise WireError("encoding", "%s: idx[%d] = %d %s" % (
            name, bad, idx[bad], "out of range" if idx[bad] >= numel
            else "not above the one before it (indices strictly increase)"))
    out = np.zeros(numel, dtype=np.float32)
    out[idx] = vals
    return out


def check_tensors(what: str, tensors: List[Tensor],
                  layout: Optional[Sequence[Tuple[str, Tuple[int, ...]]]] = None
                  ) -> Dict[str, np.ndarray]:
    """Tensors -> {name: float32 ndarray (a writable copy)} in frame order, checked as
    fm_wire_tensors_check/_finite do: dtype F32 ('dtype'), a name once ('name'), data of
    numel x 4 bytes ('shape'), every value finite ('nonfinite'); with `layout` ((name,
    shape) pairs) the names and shapes must be exactly those ('name', 'shape')."""
    want = dict((n, tuple(s)) for n, s in layout) if layout is not None else None
    out = {}
    for x in tensors:
        if x.name in out:
            raise WireError("name", "%s: tensor '%s': duplicate" % (what, x.name))
        if want is not None and x.name not in want:
            raise WireError("name", "%s: tensor '%s': unknown in the model" % (what, x.name))
        v1 = x.version < 2
        if x.dtype not in _DTYPES or (v1 and x.dtype != "F32"):
            raise WireError("dtype", "%s: tensor '%s': dtype '%s', expected %s"
                            % (what, x.name, x.dtype,
                               "F32 (protocol version 1)" if v1 else "F32, F16, BF16 or I8"))
        if v1 and (x.idx is not None or x.comp is not None or x.scale is not None):
            raise WireError("format", "%s: tensor '%s': \"%s\" is an encoding of protocol "
                            "version 2, the frame says 1"
                            % (what, x.name, "idx" if x.idx is not None
                               else "comp" if x.comp is not None else "scale"))
        if want is not None and x.shape != want[x.name]:
            raise WireError("shape", "%s: tensor '%s': shape %s, expected %s"
                            % (what, x.name, list(x.shape), list(want[x.name])))
        numel = 1
        for d in x.shape:
            numel *= d
        if x.dtype == "F32" and x.idx is None and x.comp is None:
            if len(x.data) != 4 * numel:
                raise WireError("shape", "%s: tensor '%s': %d data bytes, expected %d (%d "
                                "float32)" % (what, x.name, len(x.data), 4 * numel, numel))
            a = np.frombuffer(x.data, dtype="<f4").reshape(x.shape).astype(np.float32)
        else:
            a = _decode_encoded(what, x, numel).reshape(x.shape)
        if not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0])
            raise WireError("nonfinite", "%s: tensor '%s': non-finite value at element %d"
                            % (what, x.name, bad))
        out[x.name] = a
    if want is not None:
        for n in want:
            if n not in out:
                raise WireError("name", "%s: tensor '%s': missing" % (what, n))
    return out


# ---- the messages a client reads ---------------------------------------------------------------

@dataclass
class Model:
    """A decoded MODEL. cohort is None for an async MODEL (no "cohort" key), else the tuple
    of client ids (maybe empty); round 0 in a sync MODEL: no round open (nobody trains)."""
    mv: int
    model: str
    ts: float
    params: Dict[str, np.ndarray]
    round: int = 0
    cohort: Optional[Tuple[int, ...]] = None
    mu: float = 0.0
    q: float = 0.0
    boot: int = 0
    applied: int = 0
    ups: float = 0.0
    eps: float = 0.0
    delta: float = 0.0
    sadone: int = 0
    saabort: int = 0
    sadrop: int = 0
    serial: int = field(default=0, compare=False)  # set by Client: order of arrival

    @property
    def sync(self) -> bool:
        return self.cohort is not None

    def key(self):
        """What makes two MODELs the same (a repeat, §5.2)."""
        return (self.mv, self.ts, self.round, self.cohort)


def decode_model(frame: bytes, want_model: Optional[str] = None, layout=None) -> Model:
    """A MODEL frame -> Model, with the trainer's checks (§5.2): with want_model, the
    "model" must be it ('model'); the tensors as check_tensors (with `layout`, or the
    built-in layout of a built-in model name, or for a "spec-..." name the tensors must have
    that fingerprint); with a cohort, mu in [0, 1000] and q in [0, 1] (the C trainer's
    bounds)."""
    from . import spec as _spec
    _, m = decode(frame, ("MODEL",))
    if want_model is not None and m["model"] != want_model:
        raise WireError("model", "MODEL v%d is a %s, expected %s"
                        % (m["mv"], m["model"], want_model))
    if layout is None:
        layout = _spec.BUILTIN.get(m["model"])
    params = check_tensors("MODEL", m["tensors"], layout)
    if m["model"].startswith("spec-") and _spec.spec_name(params) != m["model"]:
        raise WireError("shape", "MODEL: tensors do not match the spec fingerprint %s (they "
                        "are %s)" % (m["model"], _spec.spec_name(params)))
    if m["cohort"] is not None:
        if not 0 <= m["mu"] <= 1000:
            raise WireError("range", "MODEL: mu: %g out of [0, 1000]" % m["mu"])
        if not 0 <= m["q"] <= 1:
            raise WireError("range", "MODEL: q: %g out of [0, 1]" % m["q"])
    return Model(mv=m["mv"], model=m["model"], ts=m["ts"], params=params, round=m["round"],
                 cohort=m["cohort"], mu=m["mu"], q=m["q"], boot=m["boot"],
                 applied=m["applied"], ups=m["ups"], eps=m["eps"], delta=m["delta"],
                 sadone=m["sadone"], saabort=m["saabort"], sadrop=m["sadrop"])


@dataclass
class Ack:
    boot: int
    mv: int
    status: str
    ids: List[bytes]


def decode_ack(frame: bytes) -> Ack:
    """An ACK frame (§3.6) -> Ack. Raises WireError."""
    _, m = decode(frame, ("ACK",))
    return Ack(m["boot"], m["mv"], m["status"], m["ids"])


def decode_metrics(frame: bytes) -> dict:
    """A METRICS frame (§3.5) -> {key: value} (every known key; absent optional ones 0)."""
    _, m = decode(frame, ("METRICS",))
    return m
