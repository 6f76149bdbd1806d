"""CZMQ certificate files (the ZPL text `fedmq keygen` writes) for [security] mode = curve.

    metadata
        name = "pool-a"
        role = "trainer"
        clients = "0-9"
    curve
        public-key = "<40 Z85 chars>"
        secret-key = "<40 Z85 chars>"      (NAME.cert_secret only)

As CZMQ's zcert_load, loading NAME.cert takes the secret key from NAME.cert_secret when that
file exists.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass
class Cert:
    path: str
    public: bytes                       # Z85, 40 bytes
    secret: Optional[bytes] = None      # Z85, 40 bytes, or None (a public certificate)
    meta: Dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    def clients(self) -> Optional[Tuple[int, int]]:
        """The enrolled client range (first, last), inclusive, or None."""
        c = self.meta.get("clients")
        if not c:
            return None
        a, _, b = c.partition("-")
        return int(a), int(b or a)


def _parse(path: str) -> Dict[str, Dict[str, str]]:
    sections: Dict[str, Dict[str, str]] = {}
    cur = None
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.rstrip("\n")
            if not s.strip() or s.lstrip().startswith("#"):
                continue
            if not s[0].isspace():
                cur = sections.setdefault(s.strip(), {})
                continue
            if cur is None or "=" not in s:
                raise ValueError("%s:%d: not a CZMQ certificate line" % (path, lineno))
            k, _, v = s.strip().partition("=")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            cur[k.strip()] = v
    return sections


def load_cert(path: str, need_secret: bool = False) -> Cert:
    """Load a certificate (and its _secret file if present, or if path is one). Raises
    ValueError (FileNotFoundError if missing) with the path."""
    secret_path = path if path.endswith("_secret") else path + "_secret"
    src = _parse(path)
    curve = src.get("curve", {})
    pub = curve.get("public-key", "")
    sec = curve.get("secret-key")
    if not sec and os.path.exists(secret_path) and secret_path != path:
        sec = _parse(secret_path).get("curve", {}).get("secret-key")
    if len(pub) != 40:
        raise ValueError("%s: no 40-character public-key: not a CURVE certificate" % path)
    if sec is not None and (len(sec) != 40 or sec == "0" * 40):
        sec = None
    if need_secret and not sec:
        raise ValueError("%s: no secret key (need %s)" % (path, secret_path))
    return Cert(path, pub.encode("ascii"), sec.encode("ascii") if sec else None,
                dict(src.get("metadata", {})))


@dataclass
class Curve:
    """CurveZMQ options of a client: its own key pair (the trainer's certificate; the
    secret comes from <trainer_cert>_secret) and the servers' public certificates: the
    config's [security] trainer_cert, broker_cert, aggregator_cert."""
    trainer_cert: str
    broker_cert: str
    aggregator_cert: str

    def load(self):
        """(own Cert with secret, broker Cert, aggregator Cert)."""
        return (load_cert(self.trainer_cert, need_secret=True), load_cert(self.broker_cert),
                load_cert(self.aggregator_cert))
