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
import sys

from .cli import (BadInput, EXIT_OK, add_common_args, load_config, model_of,
                  pin_blas_threads, run_main, stop_on_signals)

__all__ = ["main"]


def _log(msg):
    print("fedmq-py-evaluator: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="fedmq-py-evaluator", description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--count", type=int, default=0, help="stop after N evaluations (0: no)")
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: no)")
    return ap.parse_args(argv)


def run(args):
    import numpy as np
    import torch
    import zmq
    from .evaluate import Evaluator
    torch.set_num_threads(max(1, args.threads))
    cfg = load_config(args)
    security = None
    if cfg.get("security", "mode") == "curve":
        from .evaluate import EvaluatorCurve
        security = EvaluatorCurve(cfg.get("security", "evaluator_cert"),
                                  cfg.get("security", "broker_cert"),
                                  cfg.get("security", "allow_dir"))
    module, name, user = model_of(args, cfg)
    load_test = getattr(user, "load_test", None) if user else None
    if load_test is not None:
        x, y = load_test(cfg)
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or x.shape[0] < 1:
            raise BadInput(f"load_test: {x.shape[0]} samples, {y.shape[0]} labels")
    else:
        from . import data
        x, y = data.load_fashion(cfg.get("federation", "data_dir"),
                                 cfg.get("evaluator", "test_split"))
    stop = stop_on_signals()
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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    pin_blas_threads("fedmq_client.evaluator_cli", argv, args.threads)
    return run_main(run, args, _log)


if __name__ == "__main__":
    sys.exit(main())
