"""A fedmq trainer client: the sockets and the protocol around local training.

One background thread owns every ZeroMQ socket (they are not thread-safe): the SUB to the
broker's model_pub (CONFLATE), the DEALER to its snapshot ROUTER, the PUSH to the
aggregator's updates and the SUB to its acks. The caller's thread(s) talk to it through a
queue (woken by a pipe) and read what it decoded under a lock. See trainer/python/README.md.
"""
import collections
import math
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import zmq

from . import wire
from .certs import Curve
from .wire import Model, WireError

SNAPSHOT_FIRST_S = 1.0    # no model this long after start: SNAPSHOT_REQ (HELLO asks too)
SNAPSHOT_MAX_S = 10.0     # back-off cap of repeated SNAPSHOT_REQs while there is no model
MODEL_SILENCE_S = 30.0    # no MODEL this long: SNAPSHOT_REQ anyway
BACKOFF_MAX = 8           # resend waits double up to this many ack timeouts
FATES_MAX = 100000        # fates remembered (the oldest final ones are forgotten first)
RETRY_S = 0.1             # a send refused by a full queue is tried again after this

COUNTERS = ("sent", "resent", "applied", "refused", "given_up", "untracked", "models",
            "bad_frames", "bad_acks", "heartbeats", "snapshot_reqs", "declines", "reconnects")

# fates that are not an ACK's status
PENDING = "pending"       # kept, waiting for its ACK (resent after ack_timeout_s)
UNTRACKED = "untracked"   # sent on a MODEL without "boot" (or without acks): no ACK will come
GIVEN_UP = "given_up"     # dropped from memory (unacked_max_mb) before an ACK came
UNSENT = "unsent"         # the client closed before it could be sent


@dataclass
class Fate:
    """What happened to one UPDATE: status is PENDING, UNTRACKED, GIVEN_UP, UNSENT or the
    ACK's status ("applied", "lost", "dropped", or a rejection reason such as "shape")."""
    id: bytes
    client: int
    base: int
    round: int
    status: str
    sent_at: float
    resends: int = 0
    mv: Optional[int] = None       # the ACK's "mv"
    acked_at: Optional[float] = None

    @property
    def final(self) -> bool:
        return self.status != PENDING


def default_trainer_id() -> str:
    """"<host>-<pid>" with the bytes an id may not hold as '_' (as fedmq-trainer does)."""
    host = "".join(c if wire.is_id(c) else "_" for c in socket.gethostname()) or "host"
    return ("%s-%d" % (host, os.getpid()))[-wire.STR_MAX:]


class Client:
    """A trainer pool of `clients` = (cfirst, ccount) client ids, `workers` slots.

    endpoints: {"model_pub", "snapshot", "updates", "acks"} as in [endpoints] of
    configs/fedmq.conf ("acks" may be None: then nothing is kept for resending and every
    update's fate is "untracked"). model: the expected model name (None: the first MODEL's
    name is taken). security: None (mode = none) or a certs.Curve; then trainer_id
    defaults to (and must equal) the certificate's name, and the clients must lie within
    its enrolment. heartbeat_s: [trainer] heartbeat_interval_s; ack_timeout_s,
    unacked_max_mb: the [trainer] keys. Raises ValueError for bad arguments, zmq.ZMQError
    for bad endpoints.
    """

    def __init__(self, endpoints: Mapping[str, Optional[str]], trainer_id: Optional[str] = None,
                 clients: Tuple[int, int] = (0, 0), workers: int = 1,
                 model: Optional[str] = None, security: Optional[Curve] = None,
                 heartbeat_s: float = 2.0, ack_timeout_s: float = 30.0,
                 unacked_max_mb: float = 256, max_model_bytes: int = 64 << 20,
                 linger_ms: int = 1000):
        for k in ("model_pub", "snapshot", "updates"):
            if not endpoints.get(k):
                raise ValueError("endpoints: %r missing" % k)
        self._ep = dict(endpoints)
        cfirst, ccount = (int(clients[0]), int(clients[1]))
        if not (0 <= cfirst <= wire.U32_MAX and 0 <= ccount <= wire.U32_MAX
                and cfirst + ccount - 1 <= wire.U32_MAX):
            raise ValueError("clients: (%d, %d) out of range" % (cfirst, ccount))
        self._own = self._servers = None
        if security is not None:
            own, broker, agg = security.load()
            if trainer_id is None:
                trainer_id = own.name
            if trainer_id != own.name:
                raise ValueError("trainer_id %r: under curve it must be the certificate's name "
                                 "%r (%s)" % (trainer_id, own.name, own.path))
            rng = own.clients()
            if rng is None or (ccount and not (rng[0] <= cfirst and cfirst + ccount - 1 <= rng[1])):
                raise ValueError("clients %d-%d: %s is enrolled for clients %s only"
                                 % (cfirst, cfirst + ccount - 1, own.path,
                                    own.meta.get("clients", "none")))
            self._own, self._servers = own, {"broker": broker.public, "aggregator": agg.public}
        if trainer_id is None:
            trainer_id = default_trainer_id()
        if not wire.is_id(trainer_id):
            raise ValueError("trainer_id %r: %s" % (trainer_id, wire.text_check("id", str(
                trainer_id)) or "must be 1-255 bytes"))
        if not heartbeat_s > 0 or not ack_timeout_s > 0 or not unacked_max_mb > 0:
            raise ValueError("heartbeat_s, ack_timeout_s and unacked_max_mb must be > 0")
        self.trainer_id = trainer_id
        self.cfirst, self.ccount, self.workers = cfirst, ccount, int(workers)
        self.model_name = model
        self.pid = os.getpid()
        self._hb_s, self._ack_s = float(heartbeat_s), float(ack_timeout_s)
        self._max_bytes = int(unacked_max_mb * 1024 * 1024)
        self._max_model = int(max_model_bytes)
        self._linger = int(linger_ms)
        self._rand = random.SystemRandom()  # Poisson coins nobody can predict (§3.7)

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._model: Optional[Model] = None
        self._serial = 0
        self._boot = 0
        self._fates: "collections.OrderedDict[bytes, Fate]" = collections.OrderedDict()
        self._coins: Dict[int, Dict[int, bool]] = {}
        self._busy = 0
        self._counts = collections.Counter({k: 0 for k in COUNTERS})
        self.last_bad_frame = ""
        # I/O thread state (touched by it only)
        self._outbox: "collections.OrderedDict[bytes, list]" = collections.OrderedDict()
        self._outbox_bytes = 0
        self._backlog: collections.deque = collections.deque()
        self._seq = 0

        self._cmds: "queue.Queue" = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._ctx = zmq.Context()
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._closed = False
        self._last_update_at = time.time()  # the previous update sent (the next wait's start)
        self._thread = threading.Thread(target=self._run, name="fedmq-client", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._release()
            raise self._start_error

    @classmethod
    def from_config(cls, path: Optional[str], overrides: Iterable[str] = (), **kw) -> "Client":
        """A Client configured as fedmq-trainer would be by the config file `path` and the
        "section.key=value" overrides ([endpoints], [trainer] clients, workers,
        heartbeat_interval_s, ack_timeout_s, unacked_max_mb, [federation] model, [security]);
        keyword arguments (e.g. trainer_id) win over the file."""
        from . import config
        args = config.client_args(config.load(path, overrides))
        args.update(kw)
        return cls(**args)

    # ---- the caller's side -------------------------------------------------------------------

    def latest(self) -> Optional[Model]:
        """The newest MODEL taken, or None."""
        with self._lock:
            return self._model

    def wait_model(self, timeout: Optional[float] = None, newer_than=None) -> Optional[Model]:
        """The current model, waiting up to `timeout` s (None: forever) for one. newer_than:
        a Model (wait for any MODEL taken after it, even with a lower "mv": an aggregator
        restart) or an int (wait for "mv" > it). None on timeout."""
        def ready():
            m = self._model
            if m is None:
                return False
            if newer_than is None:
                return True
            if isinstance(newer_than, Model):
                return m.serial > newer_than.serial
            return m.mv > int(newer_than)
        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                return None
            return self._model

    def in_range(self, client: int) -> bool:
        """True if `client` is one of this pool's clients (any client when ccount is 0)."""
        return self.ccount == 0 or self.cfirst <= client < self.cfirst + self.ccount

    def _coin(self, model: Model, client: int) -> bool:
        """Client's coin of a Poisson round: drawn once per (round, client)."""
        with self._lock:
            rnd = self._coins.setdefault(model.round, {})
            while len(self._coins) > 4:
                del self._coins[min(self._coins)]
            if client not in rnd:
                rnd[client] = self._rand.random() < model.q
            return rnd[client]

    def should_train(self, model: Model, client: int) -> bool:
        """Whether `client` trains on `model`: async, yes; sync, if a round is open (round
        >= 1), the client is in the cohort and, in a Poisson round (0 < q < 1), its own coin
        (drawn once per round) says yes (else decline() it)."""
        if not model.sync:
            return True
        if model.round < 1 or client not in model.cohort:
            return False
        if 0 < model.q < 1:
            return self._coin(model, client)
        return True

    def clients_to_train(self, model: Model) -> List[int]:
        """This pool's clients that train on `model` (sync: those of the cohort whose coin
        said yes; async: every client of the range, or [] when ccount is 0)."""
        if not model.sync:
            return list(range(self.cfirst, self.cfirst + self.ccount))
        return [c for c in sorted(set(model.cohort)) if self.in_range(c)
                and self.should_train(model, c)]

    def send_update(self, model: Model, client: int, params: Optional[Mapping] = None, *,
                    delta: Optional[Mapping] = None, n: int, steps: int, loss: float,
                    secs: float, check: bool = True, wait: Optional[float] = None) -> bytes:
        """Send the UPDATE of `client` trained on `model`: params (the local weights after
        training; the delta params - model.params is sent) or delta, name -> array. The
        tensors go in the MODEL's order; sync: "round" = model.round. The aggregator's time
        budget gets "ts" (now) and "wait": the seconds this worker was idle before the
        training (`secs` long) began; by default the time from the previous send_update
        (or from the client's start) to that beginning, which is right for one worker
        sending in a loop; with several threads sending, pass each one's own. Returns the
        update's id (fate(id) tells what became of it). Raises ValueError (WireError) for what the
        aggregator would refuse: n < 1, a non-finite value, and with check (the default) a
        name or shape other than the model's ('name', 'shape'), a client outside this
        pool's range or (sync) outside the open round's cohort."""
        if (params is None) == (delta is None):
            raise ValueError("send_update: give params or delta, not both")
        src = params if params is not None else delta
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise WireError("range", "UPDATE: n: %r, must be >= 1 (the aggregator refuses "
                            "'samples')" % (n,))
        if check:
            if not self.in_range(client):
                raise ValueError("client %d: not one of this pool's (%d-%d)"
                                 % (client, self.cfirst, self.cfirst + self.ccount - 1))
            if model.sync and (model.round < 1 or client not in model.cohort):
                raise ValueError("client %d: not in the cohort of round %d" % (client, model.round))
            extra = [k for k in src if k not in model.params]
            if extra:
                raise WireError("name", "UPDATE: tensor '%s': unknown in model '%s'"
                                % (extra[0], model.model))
        names = [k for k in model.params if k in src] + [k for k in src if k not in model.params]
        tensors = []
        for k in names:
            a = np.asarray(src[k])
            if check:
                if k not in src:
                    raise WireError("name", "UPDATE: tensor '%s': missing" % k)
                if a.shape != model.params[k].shape:
                    raise WireError("shape", "UPDATE: tensor '%s': shape %s, expected %s"
                                    % (k, list(a.shape), list(model.params[k].shape)))
            if params is not None:
                a = np.asarray(a, dtype=np.float32) - model.params[k]
            tensors.append((k, a))
        if check:
            for k in model.params:
                if k not in src:
                    raise WireError("name", "UPDATE: tensor '%s': missing" % k)
        uid = wire.new_id()
        now = time.time()
        idle = wait
        if idle is None:  # a bad `secs` is the encoder's to refuse, not this estimate's
            began = now - secs if isinstance(secs, (int, float, np.number)) else now
            idle = max(0.0, began - self._last_update_at) if math.isfinite(began) else 0.0
        frame = wire.encode_update(uid, self.trainer_id, client, model.mv, n, steps, loss, secs,
                                   tensors, model=model.model,
                                   round=model.round if model.sync else 0, ts=now, wait=idle)
        keep = bool(model.boot) and bool(self._ep.get("acks"))
        with self._lock:
            if self._closed:
                raise RuntimeError("send_update: the client is closed")
            self._last_update_at = now  # a sent update ends the wait (a refused one does not)
            self._fate_put(Fate(uid, int(client), model.mv, model.round if model.sync else 0,
                                PENDING if keep else UNTRACKED, time.time()))
        self._cmd(("update", uid, frame, keep))
        return uid

    def decline(self, model: Model, clients: Optional[Iterable[int]] = None) -> List[int]:
        """Send the DECLINE of a Poisson round (§3.7): `clients`, or by default every
        client of this pool in the cohort whose coin said no. Returns the clients declined
        ([]: nothing sent). Re-declining a round re-sends the same DECLINE."""
        if not model.sync or model.round < 1:
            raise ValueError("decline: MODEL v%d opens no round" % model.mv)
        if clients is None:
            clients = [c for c in sorted(set(model.cohort)) if self.in_range(c)
                       and 0 < model.q < 1 and not self._coin(model, c)]
        clients = sorted(set(int(c) for c in clients))
        if not clients:
            return []
        frame = wire.encode_decline(self.trainer_id, clients, model.mv, model.round)
        self._cmd(("send", frame))
        with self._lock:
            self._counts["declines"] += 1
        return clients

    def set_busy(self, busy: int) -> None:
        """Workers training right now (HEARTBEAT "busy")."""
        with self._lock:
            self._busy = max(0, min(int(busy), self.workers))

    def fate(self, uid: bytes) -> Optional[Fate]:
        with self._lock:
            f = self._fates.get(uid)
            return replace(f) if f else None

    def fates(self) -> Dict[bytes, Fate]:
        """Every remembered update's fate (a copy), in send order."""
        with self._lock:
            return {k: replace(f) for k, f in self._fates.items()}

    def wait_fate(self, uid: bytes, timeout: Optional[float] = None) -> Optional[Fate]:
        """The final fate of update uid, waiting up to timeout s; None if still pending."""
        with self._cond:
            self._cond.wait_for(lambda: uid not in self._fates or self._fates[uid].final,
                                timeout)
            f = self._fates.get(uid)
            return replace(f) if f and f.final else None

    def counters(self) -> Dict[str, int]:
        """The COUNTERS since the start (sent, resent, applied, refused, given_up, untracked,
        models, bad_frames, bad_acks, heartbeats, snapshot_reqs, declines, reconnects: HELLOs
        said again to a broker reconnected) and "pending"
        (updates waiting for an ACK now)."""
        with self._lock:
            c = dict(self._counts)
            c["pending"] = sum(1 for f in self._fates.values() if f.status == PENDING)
            return c

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, then BYE; close the sockets (linger) and stop the thread.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cmd(("close",))
        self._thread.join(timeout + self._linger / 1000.0)
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- shared helpers ---------------------------------------------------------------------

    def _cmd(self, c) -> None:
        self._cmds.put(c)
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the thread is being woken anyway

    def _release(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        try:
            self._ctx.term()
        except zmq.ZMQError:
            pass

    def _fate_put(self, f: Fate) -> None:  # under the lock
        self._fates[f.id] = f
        if len(self._fates) > FATES_MAX:
            for k in list(self._fates):
                if len(self._fates) <= FATES_MAX:
                    break
                if self._fates[k].final:
                    del self._fates[k]

    def _fate_set(self, uid: bytes, status: str, mv: Optional[int] = None) -> None:
        with self._cond:
            f = self._fates.get(uid)
            if f is not None and f.status == PENDING:
                f.status, f.mv, f.acked_at = status, mv, time.time()
                self._cond.notify_all()

    # ---- the I/O thread ---------------------------------------------------------------------

    def _socket(self, kind, server: Optional[str]):
        s = self._ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if self._own is not None and server is not None:
            s.curve_secretkey = self._own.secret
            s.curve_publickey = self._own.public
            s.curve_serverkey = self._servers[server]
        return s

    def _open(self) -> None:
        ep = self._ep
        self._sub = self._socket(zmq.SUB, "broker")
        self._sub.setsockopt(zmq.CONFLATE, 1)  # before connect
        self._sub.setsockopt(zmq.MAXMSGSIZE, self._max_model)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._dealer = self._socket(zmq.DEALER, "broker")
        self._dealer.setsockopt(zmq.SNDHWM, 100)
        self._dealer.setsockopt(zmq.RCVHWM, 4)
        self._dealer.setsockopt(zmq.MAXMSGSIZE, self._max_model)
        self._push = self._socket(zmq.PUSH, "aggregator")
        self._acks = None
        if ep.get("acks"):
            self._acks = self._socket(zmq.SUB, "aggregator")
            self._acks.setsockopt(zmq.MAXMSGSIZE, wire.MAX_ACK_IDS * wire.ID_LEN + 4096)
            self._acks.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(ep["model_pub"])
        self._push.connect(ep["updates"])
        if self._acks is not None:
            self._acks.connect(ep["acks"])
        # a reconnection to the broker (restarted, or the network came back) says HELLO
        # again, as fedmq-trainer does: the monitor's PAIR belongs to this thread too
        self._monitor = self._dealer.get_monitor_socket(zmq.EVENT_CONNECTED)
        self._connects = 0
        self._dealer.connect(ep["snapshot"])

    def _on_monitor(self) -> None:
        try:
            from zmq.utils.monitor import recv_monitor_message
            ev = recv_monitor_message(self._monitor, zmq.DONTWAIT)
        except zmq.Again:
            return
        if ev.get("event") == zmq.EVENT_CONNECTED:
            self._connects += 1
            if self._connects > 1:  # the first HELLO was queued for the first connection
                with self._lock:
                    self._counts["reconnects"] += 1
                self._member("HELLO")

    def _close_sockets(self) -> None:
        if getattr(self, "_monitor", None) is not None:
            try:
                self._dealer.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        for name in ("_sub", "_dealer", "_push", "_acks"):
            s = getattr(self, name, None)
            if s is not None:
                s.close(self._linger if name in ("_dealer", "_push") else 0)
                setattr(self, name, None)

    def _send(self, sock, frame: bytes) -> bool:
        try:
            sock.send(frame, zmq.DONTWAIT)
            return True
        except zmq.Again:
            return False

    def _member(self, kind: str) -> None:
        with self._lock:
            sent, busy = self._counts["sent"], self._busy
        frame = wire.encode_member(kind, self.trainer_id, self.pid, self.cfirst, self.ccount,
                                   self.workers, self._seq, sent, busy)
        self._seq += 1
        self._send(self._dealer, frame)  # the broker's table
        self._send(self._push, frame)    # the aggregator's (sync cohorts come from it)
        if kind == "HEARTBEAT":
            with self._lock:
                self._counts["heartbeats"] += 1

    def _snapshot_req(self) -> None:
        m = self._model
        self._send(self._dealer, wire.encode_snapshot_req(self.trainer_id, m.mv if m else 0))
        with self._lock:
            self._counts["snapshot_reqs"] += 1

    def _on_model(self, frame: bytes, from_sub: bool, now: float) -> None:
        try:
            m = wire.decode_model(frame, self.model_name)
        except WireError as e:
            with self._lock:
                self._counts["bad_frames"] += 1
                self.last_bad_frame = "%s: %s" % ("model_pub" if from_sub else "snapshot", e)
            return
        cur = self._model
        if cur is not None:
            if m.key() == cur.key():
                self._last_model = now
                return  # a repeat (PUB + snapshot, a re-publish)
            if not from_sub and m.mv <= cur.mv and m.ts <= cur.ts and m.round <= cur.round:
                return  # a snapshot reply older than what the PUB gave
        if m.boot and self._boot and m.boot != self._boot:
            self._resend(now, everything=True)  # the aggregator restarted
        if m.boot:
            self._boot = m.boot
        with self._cond:
            if self.model_name is None:
                self.model_name = m.model
            self._serial += 1
            m.serial = self._serial
            self._model = m
            self._counts["models"] += 1
            self._cond.notify_all()
        self._last_model = now
        self._snap_backoff = SNAPSHOT_FIRST_S

    def _on_ack(self, frame: bytes) -> None:
        try:
            ack = wire.decode_ack(frame)
        except WireError as e:
            with self._lock:
                self._counts["bad_acks"] += 1
                self.last_bad_frame = "acks: %s" % e
            return
        for uid in ack.ids:
            ent = self._outbox.pop(uid, None)
            if ent is None:
                continue  # another trainer's, or answered already
            self._outbox_bytes -= len(ent[0])
            with self._lock:
                self._counts["applied" if ack.status == "applied" else "refused"] += 1
            self._fate_set(uid, ack.status, ack.mv)

    def _keep(self, uid: bytes, frame: bytes, now: float) -> None:
        while self._outbox and self._outbox_bytes + len(frame) > self._max_bytes:
            old, ent = self._outbox.popitem(last=False)
            self._outbox_bytes -= len(ent[0])
            with self._lock:
                self._counts["given_up"] += 1
            self._fate_set(old, GIVEN_UP)
        if len(frame) > self._max_bytes:
            with self._lock:
                self._counts["given_up"] += 1
            self._fate_set(uid, GIVEN_UP)
            return
        self._outbox[uid] = [frame, now + self._ack_s, 0]
        self._outbox_bytes += len(frame)

    def _resend(self, now: float, everything: bool = False) -> None:
        for uid, ent in list(self._outbox.items()):
            if not everything and ent[1] > now:
                continue
            if not self._send(self._push, ent[0]):
                ent[1] = now + RETRY_S
                continue
            ent[2] += 1
            ent[1] = now + self._ack_s * min(2 ** ent[2], BACKOFF_MAX)
            with self._cond:
                self._counts["resent"] += 1
                f = self._fates.get(uid)
                if f is not None:
                    f.resends += 1

    def _on_cmd(self, c, now: float) -> bool:
        """Handle one command; False on "close"."""
        if c[0] == "close":
            return False
        if c[0] == "send":
            if not self._send(self._push, c[1]):
                self._backlog.append(c)
            return True
        _, uid, frame, keep = c
        if not self._send(self._push, frame):
            self._backlog.append(c)
            return True
        with self._lock:
            self._counts["sent"] += 1
            if not keep:
                self._counts["untracked"] += 1
        if keep:
            self._keep(uid, frame, now)
        return True

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as e:  # reported by the constructor
            self._start_error = e
            self._close_sockets()
            self._started.set()
            return
        self._started.set()
        now = time.monotonic()
        self._last_model = now
        self._snap_backoff = SNAPSHOT_FIRST_S
        next_snap, next_hb = now + SNAPSHOT_FIRST_S, now + self._hb_s
        poller = zmq.Poller()
        socks = [(self._sub, True), (self._dealer, False)]
        for s, _ in socks:
            poller.register(s, zmq.POLLIN)
        if self._acks is not None:
            poller.register(self._acks, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        self._member("HELLO")
        running = True
        try:
            while running:
                now = time.monotonic()
                due = min(next_snap, next_hb)
                if self._outbox:
                    due = min(due, min(e[1] for e in self._outbox.values()))
                if self._backlog:
                    due = min(due, now + RETRY_S)
                events = dict(poller.poll(max(0, int((due - now) * 1000)) + 1))
                now = time.monotonic()
                for s, from_sub in socks:
                    if s in events:
                        for _ in range(64):
                            try:
                                self._on_model(s.recv(zmq.DONTWAIT), from_sub, now)
                            except zmq.Again:
                                break
                if self._acks is not None and self._acks in events:
                    for _ in range(1024):
                        try:
                            self._on_ack(self._acks.recv(zmq.DONTWAIT))
                        except zmq.Again:
                            break
                if self._monitor in events:
                    for _ in range(16):
                        if not self._monitor.poll(0):
                            break
                        self._on_monitor()
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                for _ in range(len(self._backlog)):
                    running = self._on_cmd(self._backlog.popleft(), now) and running
                while running:
                    try:
                        c = self._cmds.get_nowait()
                    except queue.Empty:
                        break
                    running = self._on_cmd(c, now)
                if now >= next_hb:
                    self._member("HEARTBEAT")
                    next_hb = now + self._hb_s
                if now >= next_snap:
                    if self._model is None:
                        self._snapshot_req()
                        next_snap = now + self._snap_backoff
                        self._snap_backoff = min(self._snap_backoff * 2, SNAPSHOT_MAX_S)
                    elif now - self._last_model >= MODEL_SILENCE_S:
                        self._snapshot_req()
                        next_snap = now + MODEL_SILENCE_S
                    else:
                        next_snap = self._last_model + MODEL_SILENCE_S
                if self._outbox:
                    self._resend(now)
            # closing: what the caller queued before close() still goes out, then BYE
            while True:
                try:
                    c = self._cmds.get_nowait()
                except queue.Empty:
                    break
                if c[0] != "close":
                    self._on_cmd(c, now)
            for c in self._backlog:
                if c[0] == "update":
                    self._fate_set(c[1], UNSENT)
            self._member("BYE")
        finally:
            self._close_sockets()
