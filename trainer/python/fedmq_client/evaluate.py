"""Evaluation of global models in Python: the role of fedmq-evaluator for any PyTorch model.

- `score(module, params, x, y)`: accuracy, mean NLL loss (F.cross_entropy), per-class
  accuracy and sample count of a module on a test set, with the given weights;
- `jsonl_record(metrics, created)`: the metrics file's line for a METRICS dict, byte for byte
  what the C evaluator writes (evaluator/evaluator_jsonl.h);
- `Evaluator`: subscribes to the broker's models (SUB with CONFLATE, DEALER for snapshots),
  scores the newest model only, publishes METRICS on a PUB it binds at [endpoints]
  metrics_pub and appends the record to [evaluator] metrics_file, so `fedmq watch`, `fedmq
  plot` and the metrics file's readers work as with fedmq-evaluator.

Under [security] mode = curve (EvaluatorCurve) the PUB is a CURVE server whose subscribers a
ZAP handler (pyzmq's ThreadAuthenticator, domain "fedmq", enforced) admits when their key is
in a certificate of allow_dir; the broker is reached as a CURVE client.
Population validation (the "p..." keys) is not done here. torch is imported when needed.
"""
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import zmq

from . import wire
from .wire import Model, WireError

__all__ = ["score", "jsonl_number", "jsonl_record", "metrics_of", "Evaluator",
           "EvaluatorCurve"]

SNAPSHOT_FIRST_S = 1.0   # SNAPSHOT_REQ at start, then after this wait, doubling ...
SNAPSHOT_MAX_S = 10.0    # ... up to this, while no model came
MODEL_SILENCE_S = 30.0   # no MODEL this long: SNAPSHOT_REQ anyway
DRAIN_MAX = 64           # frames read per socket per drain
PUB_HWM = 100            # METRICS queued per slow subscriber
PUB_LINGER_MS = 1000     # a stopping evaluator flushes its last METRICS
MAX_MODEL_BYTES = 64 << 20
ZAP_DOMAIN = "fedmq"     # the daemons' ZAP domain (fm_sec.c), enforced
ZMQ_ZAP_ENFORCE_DOMAIN = getattr(zmq, "ZAP_ENFORCE_DOMAIN", 93)


def score(module, params: Optional[Mapping] = None, x=None, y=None,
          batch: int = 1000) -> Tuple[float, float, List[float], int]:
    """(accuracy, mean loss, per-class accuracy [10], n) of `module` on samples x (array or
    tensor [n, ...]) with labels y (ints in 0..9). params (name -> ndarray, maybe None: the
    module's own weights) are loaded first (torch_utils.load_params, strict). The loss is
    F.cross_entropy (the mean NLL for modules returning log-probabilities), summed in float64
    over batches of `batch`; a class without test samples has accuracy 0.0. Runs under
    no_grad in eval mode (the module's mode is restored). Raises ValueError for an empty or
    mismatched test set, or a label outside 0..9."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from .torch_utils import load_params
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64)) if not torch.is_tensor(y) else y.long()
    n = int(xt.shape[0])
    if n < 1 or int(yt.shape[0]) != n:
        raise ValueError(f"test set: {n} samples and {int(yt.shape[0])} labels")
    if int(yt.min()) < 0 or int(yt.max()) >= wire.NCLASSES:
        raise ValueError(f"test set: a label outside 0..{wire.NCLASSES - 1}")
    if params is not None:
        load_params(module, params)
    was_training = module.training
    module.eval()
    correct = torch.zeros(wire.NCLASSES, dtype=torch.int64)
    total = torch.bincount(yt, minlength=wire.NCLASSES)
    loss_sum = 0.0
    try:
        with torch.no_grad():
            for b in range(0, n, max(1, batch)):
                xb, yb = xt[b:b + batch], yt[b:b + batch]
                out = module(xb)
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum").double())
                hit = out.argmax(1) == yb
                correct += torch.bincount(yb[hit], minlength=wire.NCLASSES)
    finally:
        module.train(was_training)
    cacc = [float(correct[c]) / float(total[c]) if int(total[c]) else 0.0
            for c in range(wire.NCLASSES)]
    return float(correct.sum()) / n, loss_sum / n, cacc, n


# ---- the metrics file ---------------------------------------------------------------------------

def jsonl_number(v) -> str:
    """A real as jansson writes it with JSON_REAL_PRECISION(17): "%.17g", ".0" appended when
    there is neither '.' nor an exponent, the exponent without '+' or leading zeros; null
    when not finite."""
    v = float(v)
    if not math.isfinite(v):
        return "null"
    s = "%.17g" % v
    if "." not in s and "e" not in s:
        s += ".0"
    if "e" in s:
        mant, exp = s.split("e")
        sign = "-" if exp.startswith("-") else ""
        s = mant + "e" + sign + (exp.lstrip("+-").lstrip("0") or "0")
    return s


def _int(v) -> str:
    v = int(v)
    if not 0 <= v <= (1 << 63) - 1:
        raise ValueError(f"{v}: out of the metrics file's int64 range")
    return str(v)


def jsonl_record(m: Mapping, created: float) -> str:
    """The metrics file's record (without the newline) of METRICS `m` (the keys of
    wire.decode_metrics: mv, model, acc, loss, cacc, n, secs, ts, and optionally pc... ,
    eps/delta, sadone/saabort/sadrop; absent ones read as 0) for a model created at
    `created`: keys, order and numbers exactly as evaluator_jsonl.c writes them."""
    g = lambda k, d=0: m.get(k, d)  # noqa: E731
    cacc = list(m["cacc"])
    if len(cacc) != wire.NCLASSES:
        raise ValueError(f"cacc: {len(cacc)} entries, expected {wire.NCLASSES}")
    parts = ['"version":' + _int(m["mv"]),
             '"model":' + json.dumps(str(m["model"]), ensure_ascii=False),
             '"accuracy":' + jsonl_number(m["acc"]), '"loss":' + jsonl_number(m["loss"]),
             '"class_accuracy":[' + ",".join(jsonl_number(c) for c in cacc) + "]",
             '"n":' + _int(m["n"]), '"eval_seconds":' + jsonl_number(m["secs"]),
             '"time":' + jsonl_number(m["ts"]), '"created":' + jsonl_number(created)]
    if g("pc") > 0:
        parts.append('"population":{"clients":%s,"mean":%s,"min":%s,"worst_client":%s,'
                     '"p10":%s,"threshold":%s,"below":%s}'
                     % (_int(g("pc")), jsonl_number(g("pmean")), jsonl_number(g("pmin")),
                        _int(g("pworst")), jsonl_number(g("pp10")), jsonl_number(g("pthr")),
                        jsonl_number(g("pbelow"))))
    if g("delta", 0.0) > 0:
        parts.append('"epsilon":%s,"delta":%s' % (jsonl_number(g("eps", 0.0)),
                                                  jsonl_number(g("delta", 0.0))))
    if g("sadone") or g("saabort"):
        parts.append('"secagg":{"completed":%s,"aborted":%s,"members_dropped":%s}'
                     % (_int(g("sadone")), _int(g("saabort")), _int(g("sadrop"))))
    return "{" + ",".join(parts) + "}"


def metrics_of(model: Model, acc: float, loss: float, cacc: Sequence[float], n: int,
               secs: float, ts: float) -> Dict:
    """The METRICS of `model` scored (acc, loss, cacc, n) in `secs`, finished at `ts`: the
    MODEL's applied/ups/eps/delta/secagg counts repeated, as fedmq-evaluator does."""
    return {"mv": model.mv, "model": model.model, "acc": acc, "loss": loss,
            "cacc": list(cacc), "n": n, "secs": secs, "ts": ts, "applied": model.applied,
            "ups": model.ups, "eps": model.eps, "delta": model.delta, "sadone": model.sadone,
            "saabort": model.saabort, "sadrop": model.sadrop}


def encode(m: Mapping) -> bytes:
    """METRICS frame of a metrics_of() dict."""
    return wire.encode_metrics(m["mv"], m["model"], m["acc"], m["loss"], m["cacc"], m["n"],
                               m["secs"], m["ts"], applied=m["applied"], ups=m["ups"],
                               eps=m["eps"], delta=m["delta"], sadone=m["sadone"],
                               saabort=m["saabort"], sadrop=m["sadrop"])


# ---- the evaluator ------------------------------------------------------------------------------

def _fits(module, params: Mapping) -> Optional[str]:
    """None if the module's float state_dict has exactly params' names and shapes, else why."""
    from .torch_utils import layout_mismatch
    d = layout_mismatch(module, params)
    if d is None:
        return None
    kind, k, mine, theirs = d
    if kind == "missing":
        return f"tensor '{k}' is not in the evaluator's module"
    if kind == "shape":
        return f"tensor '{k}' has shape {theirs}, the evaluator's module {mine}"
    return f"the module's tensor '{k}' is missing"


@dataclass
class EvaluatorCurve:
    """[security] mode = curve for the evaluator: its certificate (the secret key is read from
    <evaluator_cert>_secret), the broker's public certificate, and the allow_dir whose
    certificates' keys may subscribe to its METRICS (a ZAP handler, domain "fedmq", checks
    every connection against the directory as it is when the connection comes)."""
    evaluator_cert: str
    broker_cert: str
    allow_dir: str


def _allowed_keys(allow_dir: str) -> set:
    """The public keys (Z85 bytes) of the certificates in allow_dir (other files skipped)."""
    from .certs import load_cert
    keys = set()
    for n in sorted(os.listdir(allow_dir)):
        path = os.path.join(allow_dir, n)
        if n.endswith("_secret") or not os.path.isfile(path):
            continue
        try:
            keys.add(load_cert(path).public)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return keys


class _AllowDir:
    """pyzmq's CURVE credentials provider: a key is admitted if a certificate of allow_dir
    holds it (the directory is read again when its mtime changes)."""

    def __init__(self, allow_dir: str):
        self.dir, self.mtime, self.keys = allow_dir, None, set()

    def callback(self, domain, key: bytes) -> bool:
        try:
            mt = os.stat(self.dir).st_mtime_ns
            if mt != self.mtime:
                self.keys, self.mtime = _allowed_keys(self.dir), mt
        except OSError:
            return False
        return key in self.keys


class Evaluator:
    """Scores the broker's newest model with `module` on (x, y) and publishes METRICS.

    endpoints: {"model_pub", "snapshot", "metrics_pub"} as in [endpoints] (the PUB binds
    metrics_pub at construction: an endpoint in use raises zmq.ZMQError). model: the model
    name expected in MODELs (None: the first MODEL's); metrics_file: path of the JSON-lines
    file to append to (None or "": none). log: a callable taking one line (default: none).
    Single-threaded: run() (or step()) does the I/O and the scoring in the caller's thread.
    """

    def __init__(self, endpoints: Mapping[str, str], module, x, y, model: Optional[str] = None,
                 metrics_file: Optional[str] = None, batch: int = 1000,
                 evaluator_id: Optional[str] = None, max_model_bytes: int = MAX_MODEL_BYTES,
                 log: Optional[Callable[[str], None]] = None,
                 security: Optional[EvaluatorCurve] = None):
        self.module, self.x, self.y, self.batch = module, x, y, batch
        self.model_name = model
        self.id = evaluator_id or "py-evaluator/%d" % os.getpid()
        self._log = log or (lambda s: None)
        self.stats = {"evaluations": 0, "rejected": 0, "duplicates": 0, "superseded": 0,
                      "snapshot_reqs": 0, "models": 0}
        self.last: Optional[Dict] = None          # the last METRICS published (a dict)
        self.last_model: Optional[Model] = None   # the last model scored
        self.last_error: Optional[str] = None     # why the last frame was rejected
        self._scored_key = None                   # (mv, ts) of the last model scored
        self._staged: Optional[Model] = None      # newest accepted model not yet scored
        self._have_model = False
        self._file = None
        self._ctx = zmq.Context()
        self.pub = self.sub = self.dealer = self._auth = None
        try:
            self.pub = self._ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
            self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
            own = self._curve(security)
            self.pub.bind(endpoints["metrics_pub"])
            self.sub = self._ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.setsockopt(zmq.CONFLATE, 1)  # before connect: the newest MODEL only
            self.sub.setsockopt(zmq.MAXMSGSIZE, max_model_bytes)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"")
            self.dealer = self._ctx.socket(zmq.DEALER)
            self.dealer.setsockopt(zmq.LINGER, 0)
            self.dealer.setsockopt(zmq.SNDHWM, 16)
            self.dealer.setsockopt(zmq.RCVHWM, 4)
            self.dealer.setsockopt(zmq.MAXMSGSIZE, max_model_bytes)
            if own is not None:
                for sock in (self.sub, self.dealer):
                    sock.curve_secretkey, sock.curve_publickey = own
                    sock.curve_serverkey = self._broker_key
            self.sub.connect(endpoints["model_pub"])
            self.dealer.connect(endpoints["snapshot"])
            if metrics_file:
                self._file = open(metrics_file, "a", encoding="utf-8")
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self.sub, zmq.POLLIN)
        self._poller.register(self.dealer, zmq.POLLIN)
        now = time.monotonic()
        self._next_snap, self._backoff, self._last_model = now, SNAPSHOT_FIRST_S, now

    def _curve(self, sec: Optional[EvaluatorCurve]):
        """Make the PUB a CURVE server whose clients a ZAP handler checks against allow_dir;
        returns the own (secret, public) keys, or None without security. Raises ValueError
        (a certificate, allow_dir, or a libzmq that cannot enforce the ZAP domain)."""
        if sec is None:
            return None
        from zmq.auth.thread import ThreadAuthenticator
        from .certs import load_cert
        own = load_cert(sec.evaluator_cert, need_secret=True)
        self._broker_key = load_cert(sec.broker_cert).public
        if not os.path.isdir(sec.allow_dir):
            raise ValueError(f"[security] allow_dir = {sec.allow_dir}: not a directory")
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN,
                                            credentials_provider=_AllowDir(sec.allow_dir))
        self.pub.curve_secretkey, self.pub.curve_publickey = own.secret, own.public
        self.pub.curve_server = True
        self.pub.zap_domain = ZAP_DOMAIN.encode()
        try:
            self.pub.setsockopt(ZMQ_ZAP_ENFORCE_DOMAIN, 1)
        except zmq.ZMQError as e:
            raise ValueError(f"security: libzmq cannot enforce the ZAP domain ({e}): refusing "
                             f"to serve CURVE sockets that might accept any key") from None
        return own.secret, own.public

    # ---- frames ----------------------------------------------------------------------------

    def _reject(self, src: str, why: str) -> None:
        self.stats["rejected"] += 1
        self.last_error = f"{src}: {why}"
        if self.stats["rejected"] <= 10 or self.stats["rejected"] % 100 == 0:
            self._log(f"rejected frame from {src}: {why} (total rejected: "
                      f"{self.stats['rejected']})")

    def _accept(self, frame: bytes, from_sub: bool) -> None:
        """Stage a valid MODEL of our model that is not the one scored or staged (§5.2)."""
        src = "model_pub" if from_sub else "snapshot"
        try:
            m = wire.decode_model(frame, self.model_name)
        except WireError as e:
            self._reject(src, str(e))
            return
        why = _fits(self.module, m.params)
        if why is not None:
            self._reject(src, f"MODEL v{m.mv} ({m.model}): {why}")
            return
        key = (m.mv, m.ts)
        if key == self._scored_key or (self._staged is not None
                                       and key == (self._staged.mv, self._staged.ts)):
            self.stats["duplicates"] += 1
            self._last_model = time.monotonic()
            return
        if self._staged is not None:
            self.stats["superseded"] += 1
        if self.model_name is None:
            self.model_name = m.model
        if not self._have_model:
            self._log(f"first model: {m.model} v{m.mv} from {src}")
        self._have_model = True
        self._staged = m
        self.stats["models"] += 1
        self._last_model = time.monotonic()
        self._backoff = SNAPSHOT_FIRST_S

    def _drain(self) -> None:
        """Read what waits: snapshot replies first, the feed last (its newest model wins);
        snapshot replies are ignored once the feed runs."""
        for sock, from_sub in ((self.dealer, False), (self.sub, True)):
            for _ in range(DRAIN_MAX):
                try:
                    parts = sock.recv_multipart(zmq.DONTWAIT)
                except zmq.Again:
                    break
                while len(parts) > 1 and len(parts[0]) == 0:
                    parts = parts[1:]  # an empty delimiter (REQ-style envelope)
                if len(parts) != 1:
                    self._reject("model_pub" if from_sub else "snapshot",
                                 f"a message of {len(parts)} frames (fedmq messages are one "
                                 f"frame)")
                elif from_sub or not self._have_model:
                    self._accept(parts[0], from_sub)

    def _snapshot(self, now: float) -> None:
        if now < self._next_snap:
            return
        if not self._have_model or now - self._last_model >= MODEL_SILENCE_S:
            have = self._scored_key[0] if self._scored_key else 0
            try:
                self.dealer.send(wire.encode_snapshot_req(self.id, have), zmq.DONTWAIT)
                self.stats["snapshot_reqs"] += 1
            except zmq.Again:
                pass
            if self._have_model:
                self._next_snap = now + MODEL_SILENCE_S
            else:
                self._next_snap = now + self._backoff
                self._backoff = min(self._backoff * 2, SNAPSHOT_MAX_S)
        else:
            self._next_snap = self._last_model + MODEL_SILENCE_S

    # ---- scoring ---------------------------------------------------------------------------

    def evaluate(self, model: Model) -> Dict:
        """Score `model`, publish its METRICS, append its record; returns the METRICS dict."""
        t0 = time.perf_counter()
        acc, loss, cacc, n = score(self.module, model.params, self.x, self.y, self.batch)
        secs = time.perf_counter() - t0
        m = metrics_of(model, acc, loss, cacc, n, secs, time.time())
        self._scored_key = (model.mv, model.ts)
        self.last_model = model
        self.stats["evaluations"] += 1
        self.last = m
        try:
            self.pub.send(encode(m), zmq.DONTWAIT)
        except (zmq.Again, WireError) as e:
            self._log(f"METRICS v{model.mv}: not published: {e}")
        if self._file is not None:
            try:
                self._file.write(jsonl_record(m, model.ts) + "\n")
                self._file.flush()
            except (OSError, ValueError) as e:
                self._log(f"METRICS v{model.mv}: {self._file.name}: write failed: {e}")
        self._log(f"evaluated {m['model']} v{m['mv']}: accuracy={acc:.4f} loss={loss:.4f} on "
                  f"{n} samples in {secs:.3f}s (model created {model.ts:.3f})")
        return m

    def step(self, timeout: float = 0.5) -> Optional[Dict]:
        """Wait up to `timeout` s for frames, then score the newest model staged (models that
        arrived while the previous one was scored are skipped: only the newest is kept).
        Returns the METRICS published, or None."""
        now = time.monotonic()
        self._snapshot(now)
        wait = max(0.0, min(timeout, self._next_snap - now))
        if self._staged is None:
            self._poller.poll(int(wait * 1000) + 1)
        self._drain()
        if self._staged is None:
            return None
        m, self._staged = self._staged, None
        return self.evaluate(m)

    def run(self, count: int = 0, duration: float = 0.0,
            stop: Optional[Callable[[], bool]] = None) -> int:
        """step() until `count` evaluations (0: no limit), `duration` s (0: none) or stop()
        returns True. Returns the number of evaluations made by this call."""
        done = 0
        end = time.monotonic() + duration if duration > 0 else None
        while not (stop and stop()):
            now = time.monotonic()
            if end is not None and now >= end:
                break
            left = 0.5 if end is None else min(0.5, end - now)
            if self.step(left) is not None:
                done += 1
                if count and done >= count:
                    break
        return done

    def close(self) -> None:
        """Close the sockets (the PUB lingers PUB_LINGER_MS for the last METRICS), the file."""
        for name in ("sub", "dealer", "pub"):
            s = getattr(self, name, None)
            if s is not None:
                s.close()
                setattr(self, name, None)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
