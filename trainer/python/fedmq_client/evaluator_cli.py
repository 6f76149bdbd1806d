"""fedmq-py-evaluator: the federation's evaluator in Python, for any PyTorch model.

    fedmq-py-evaluator --config FILE [--set section.key=value ...]
                       [--model-file FILE.py [--entry make_model]] [--count N] [--duration S]

It reads the federation's config as the daemons do (`fedmq config`), follows the broker's
models ([endpoints] model_pub, snapshot), scores the newest one on the test set and
publishes METRICS on [endpoints] metrics_pub (bound here, as fedmq-evaluator does) and
appends the record to [evaluator] metrics_file (same format), so `fedmq watch` and `fedmq
plot` work unchanged. Population validation is not done.

The model: without --model-file, the built-in one the config names (fedmq_client.models);
with it, the module's function `--entry` returns the torch.nn.Module, and the file may define
    load_test(cfg) -> (x, y)   the test samples (default: Fashion-MNIST's [evaluator]
                               test_split of [federation] data_dir, normalised)
[security] mode = curve: the PUB is a CURVE server with evaluator_cert (+ _secret) admitting
the keys of allow_dir's certificates (ZAP domain "fedmq", enforced); the broker is reached
with evaluator_cert and broker_cert.
Exit: 0 after a clean stop (SIGTERM, SIGINT, --count, --duration), 1 on a runtime failure,
2 on bad input (one line on stderr).
"""
import argparse
import importlib.util
import os
import signal
import sys

__all__ = ["main"]

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT = 0, 1, 2


class BadInput(Exception):
    pass


def _log(msg):
    print("fedmq-py-evaluator: " + msg, file=sys.stderr, flush=True)


def load_module(path, what="--model-file"):
    """Import a user's Python file (BadInput with one line if it does not load)."""
    if not os.path.isfile(path):
        raise BadInput(f"{what} {path}: no such file")
    spec = importlib.util.spec_from_file_location("fedmq_user_model", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # the user's file: report, do not trace
        raise BadInput(f"{what} {path}: {type(e).__name__}: {e}") from None
    return mod


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="fedmq-py-evaluator", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--model-file")
    ap.add_argument("--entry", default="make_model")
    ap.add_argument("--count", type=int, default=0, help="stop after N evaluations (0: no)")
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: no)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return ap.parse_args(argv)


def run(args):
    import numpy as np
    import torch
    import zmq
    from . import config, models, spec
    from .evaluate import Evaluator
    torch.set_num_threads(max(1, args.threads))
    try:
        cfg = config.load(args.config, args.set)
    except config.ConfigError as e:
        raise BadInput(str(e)) from None
    security = None
    if cfg.get("security", "mode") == "curve":
        from .evaluate import EvaluatorCurve
        security = EvaluatorCurve(cfg.get("security", "evaluator_cert"),
                                  cfg.get("security", "broker_cert"),
                                  cfg.get("security", "allow_dir"))
    name, spec_file = config.model_setting(cfg)
    if spec_file is not None:
        try:
            name = spec.spec_name(spec.load_safetensors(spec_file)[0])
        except (OSError, ValueError) as e:
            raise BadInput(f"[federation] model = file:{spec_file}: {e}") from None
    user = load_module(args.model_file) if args.model_file else None
    if user is None and spec_file is not None:
        raise BadInput(f"[federation] model = file:{spec_file} is a custom model: give its "
                       f"PyTorch definition with --model-file")
    if user is not None:
        make = getattr(user, args.entry, None)
        if not callable(make):
            raise BadInput(f"--model-file {args.model_file}: no function {args.entry}()")
        module = make()
        load_test = getattr(user, "load_test", None)
    else:
        module, load_test = models.builtin(name), None
    if load_test is not None:
        x, y = load_test(cfg)
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or x.shape[0] < 1:
            raise BadInput(f"load_test: {x.shape[0]} samples, {y.shape[0]} labels")
    else:
        from . import data
        x, y = data.load_fashion(cfg.get("federation", "data_dir"),
                                 cfg.get("evaluator", "test_split"))
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ep = cfg.endpoints()
    try:
        ev = Evaluator(ep, module, x, y, model=name,
                       metrics_file=cfg.get("evaluator", "metrics_file") or None, log=_log,
                       security=security)
    except zmq.ZMQError as e:
        raise BadInput(f"endpoints.metrics_pub {ep['metrics_pub']}: {e}") from None
    except ValueError as e:
        raise BadInput(str(e)) from None
    _log(f"evaluating {name} on {len(y)} test samples; models from {ep['model_pub']} "
         f"(snapshots {ep['snapshot']}), METRICS on {ep['metrics_pub']}, records to "
         f"{cfg.get('evaluator', 'metrics_file') or '(none)'}")
    try:
        ev.run(count=args.count, duration=args.duration, stop=lambda: stop["now"])
    finally:
        ev.close()
    s = ev.stats
    _log(f"stopping: {s['evaluations']} evaluations, {s['rejected']} frames rejected, "
         f"{s['duplicates']} duplicates, {s['superseded']} superseded, "
         f"{s['snapshot_reqs']} snapshot requests")
    return EXIT_OK


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except BadInput as e:
        _log(str(e))
        return EXIT_INPUT
    except (ValueError, OSError) as e:
        _log(f"{type(e).__name__}: {e}")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
