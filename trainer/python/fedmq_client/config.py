"""The federation's settings, as the C daemons resolve them.

fedmq's config file has its own rules (defaults for every key, `--set` overrides, checks
across keys). Rather than re-implementing them, `load` asks the `fedmq` tool for the
resolved configuration (`fedmq config CONFIG [--set ...]`, every key of every section) and
parses that dump, so a Python client reads exactly what the daemons read.
"""
import os
import shutil
import subprocess

__all__ = ["Config", "ConfigError", "load", "find_fedmq"]


class ConfigError(ValueError):
    """A config the daemons would refuse (the message is fedmq's one line)."""


def find_fedmq(fedmq=None):
    """The `fedmq` executable: the argument, $FEDMQ_BIN (the tool, or a directory holding
    it: a build directory), or `fedmq` on PATH (the Debian package installs it)."""
    path = fedmq or os.environ.get("FEDMQ_BIN") or shutil.which("fedmq")
    if path and os.path.isdir(path):
        path = os.path.join(path, "fedmq")
    if not path:
        raise ConfigError("the fedmq tool is not on PATH (install the fedmq package, or set "
                          "FEDMQ_BIN)")
    return path


class Config:
    """Sections of key -> string value, with typed getters that raise ConfigError."""

    def __init__(self, sections, path=None):
        self.sections = sections
        self.path = path

    def get(self, section, key):
        try:
            return self.sections[section][key]
        except KeyError:
            raise ConfigError(f"[{section}] {key}: not a key of this fedmq") from None

    def get_int(self, section, key):
        v = self.get(section, key)
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"[{section}] {key} = {v}: not an integer") from None

    def get_float(self, section, key):
        v = self.get(section, key)
        try:
            return float(v)
        except ValueError:
            raise ConfigError(f"[{section}] {key} = {v}: not a number") from None

    def get_bool(self, section, key):
        v = self.get(section, key)
        if v in ("true", "false"):
            return v == "true"
        raise ConfigError(f"[{section}] {key} = {v}: not true or false")

    def endpoints(self):
        """{key: endpoint} of [endpoints]."""
        return dict(self.sections.get("endpoints", {}))

    def client_range(self):
        """[trainer] clients as (first, count)."""
        v = self.get("trainer", "clients")
        a, _, b = v.partition("-")
        first, last = int(a), int(b or a)
        return first, last - first + 1


def parse_dump(text, path=None):
    """Parse the output of `fedmq config` (INI: [section], key = value, # comments)."""
    sections, cur = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[") and s.endswith("]"):
            cur = sections.setdefault(s[1:-1], {})
            continue
        key, eq, val = s.partition("=")
        if not eq or cur is None:
            raise ConfigError(f"fedmq config output line {n}: not 'key = value': {line!r}")
        cur[key.strip()] = val.strip()
    return Config(sections, path)


def run_fedmq(args, sets=(), fedmq=None, timeout=30, error=None):
    """Run `fedmq ARGS [--set S ...]` and return its stdout; a non-zero exit raises `error`
    (default ConfigError) with the tool's last stderr line (its one-line message)."""
    argv = [find_fedmq(fedmq)] + [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()
        raise (error or ConfigError)(msg[-1] if msg else
                                     "fedmq %s exited %d" % (args[0], r.returncode))
    return r.stdout


def load(path, sets=(), fedmq=None, timeout=30):
    """Resolve config file `path` (None: no file, the defaults) with overrides `sets`
    ("section.key=value" strings) the way the daemons do. Raises ConfigError with fedmq's
    one-line message when they would refuse it, OSError when the tool cannot run."""
    out = run_fedmq(["config", os.devnull if path is None else path], sets, fedmq, timeout)
    return parse_dump(out, path)


def model_setting(cfg):
    """[federation] model as (name, spec_file): a built-in name and None, or (None, path)
    for "file:/path" (the custom model's wire name is its spec fingerprint, known from the
    file: fedmq_client.spec.model_name)."""
    v = cfg.get("federation", "model")
    if v.startswith("file:"):
        return None, v[len("file:"):]
    return v, None


def client_args(cfg):
    """Client keyword arguments from a loaded Config: endpoints, trainer_id ([trainer] id,
    None when empty), clients, workers, model (a built-in name, or the spec's fingerprint),
    heartbeat_s, ack_timeout_s, unacked_max_mb, security (a Curve under mode = curve)."""
    from .certs import Curve
    from . import spec as _spec
    ep = cfg.endpoints()
    name, spec_file = model_setting(cfg)
    if spec_file is not None:
        tensors, _ = _spec.load_safetensors(spec_file)
        name = _spec.spec_name(tensors)
    curve = None
    if cfg.get("security", "mode") == "curve":
        curve = Curve(cfg.get("security", "trainer_cert"), cfg.get("security", "broker_cert"),
                      cfg.get("security", "aggregator_cert"))
    return {
        "endpoints": {k: ep[k] for k in ("model_pub", "snapshot", "updates", "acks")},
        # under curve the id is the certificate's name ([trainer] id is not used)
        "trainer_id": (cfg.get("trainer", "id") or None) if curve is None else None,
        "clients": cfg.client_range(),
        "workers": cfg.get_int("trainer", "workers"),
        "model": name,
        "heartbeat_s": cfg.get_float("trainer", "heartbeat_interval_s"),
        "ack_timeout_s": cfg.get_float("trainer", "ack_timeout_s"),
        "unacked_max_mb": cfg.get_float("trainer", "unacked_max_mb"),
        "security": curve,
    }
