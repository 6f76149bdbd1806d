"""The keys of a fedmq config file (configs/fedmq.conf) a Python trainer needs.

The syntax is the daemons' INI: "[section]" lines, "key = value" lines, comment lines
starting with # or ;, " ;" starting a comment after a value; overrides are "section.key=value"
as with --set. Only the syntax is checked here, not the values' ranges (the daemons do).
"""
from typing import Dict, Iterable, Optional

from .certs import Curve

DEFAULTS = {
    "endpoints": {"model_pub": "tcp://127.0.0.1:5560", "snapshot": "tcp://127.0.0.1:5561",
                  "updates": "tcp://127.0.0.1:5562", "acks": "tcp://127.0.0.1:5565"},
    "federation": {"model": "cnn"},
    "trainer": {"clients": "0-99", "workers": "2", "heartbeat_interval_s": "2",
                "ack_timeout_s": "30", "unacked_max_mb": "256"},
    "security": {"mode": "none", "trainer_cert": "/etc/fedmq/keys/trainer.cert",
                 "broker_cert": "/etc/fedmq/keys/broker.cert",
                 "aggregator_cert": "/etc/fedmq/keys/aggregator.cert"},
}


def read(path: Optional[str], overrides: Iterable[str] = ()) -> Dict[str, Dict[str, str]]:
    """{section: {key: value}} of the file (None: none) with the overrides applied over
    DEFAULTS. Raises ValueError naming file and line for a line that does not parse."""
    cfg = {s: dict(kv) for s, kv in DEFAULTS.items()}
    if path is not None:
        sec = None
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                s = line.strip()
                if not s or s[0] in "#;":
                    continue
                if s.startswith("[") and s.endswith("]"):
                    sec = cfg.setdefault(s[1:-1].strip(), {})
                    continue
                if sec is None or "=" not in s:
                    raise ValueError("%s:%d: expected [section] or key = value" % (path, n))
                k, _, v = s.partition("=")
                v = v.split(" ;", 1)[0].strip()
                sec[k.strip()] = v
    for o in overrides:
        k, eq, v = o.partition("=")
        sk, dot, kk = k.partition(".")
        if not eq or not dot:
            raise ValueError("override %r: expected section.key=value" % o)
        cfg.setdefault(sk.strip(), {})[kk.strip()] = v.strip()
    return cfg


def client_args(cfg: Dict[str, Dict[str, str]]) -> dict:
    """Client keyword arguments from a read() config: endpoints, clients, workers, model,
    heartbeat_s ([trainer] heartbeat_interval_s), ack_timeout_s, unacked_max_mb, security
    (a Curve with [security] mode = curve)."""
    ep, tr = cfg["endpoints"], cfg["trainer"]
    a, _, b = tr["clients"].partition("-")
    first, last = int(a), int(b or a)
    if last < first:
        raise ValueError("[trainer] clients = %s: an empty range" % tr["clients"])
    sec = cfg["security"]
    if sec["mode"] not in ("none", "curve"):
        raise ValueError("[security] mode = %s: none or curve" % sec["mode"])
    return {
        "endpoints": {k: ep[k] for k in ("model_pub", "snapshot", "updates", "acks")},
        "clients": (first, last - first + 1),
        "workers": int(tr["workers"]),
        "model": cfg["federation"]["model"],
        "heartbeat_s": float(tr["heartbeat_interval_s"]),
        "ack_timeout_s": float(tr["ack_timeout_s"]),
        "unacked_max_mb": float(tr["unacked_max_mb"]),
        "security": Curve(sec["trainer_cert"], sec["broker_cert"], sec["aggregator_cert"])
        if sec["mode"] == "curve" else None,
    }
