"""fedmq-py-trainer: a trainer pool in Python, for any PyTorch model.

    fedmq-py-trainer --config FILE [--set section.key=value ...]
                     [--model-file FILE.py [--entry make_model]] [--max-updates N]
                     [--duration S] [--threads T]

It reads the federation's config as the daemons do (`fedmq config`), joins as one trainer
serving [trainer] clients, and trains them as fedmq-trainer does (docs/PROTOCOL.md §10):
async, round-robin over its clients, each from the newest model; sync, each of its clients
in the open round's cohort once (Poisson rounds: declines by coin). Local training follows
the [federation] keys (local_epochs, learning_rate, batch_size, momentum, weight_decay,
clip_norm, mu). Updates are acknowledged and resent by fedmq_client.Client.

The model: without --model-file, the built-in one the config names (fedmq_client.models),
trained on its Fashion-MNIST partition (`fedmq partition`, held-out samples excluded).
With --model-file, the module's function `--entry` (default make_model) returns a
torch.nn.Module whose floating-point state_dict must match the federation's model (names and
shapes); the file may define
    load_data(client, cfg) -> (x, y)   the client's training samples (default: Fashion-MNIST)
    loss(output, target) -> tensor     (default: F.cross_entropy)
Exit: 0 after a clean stop (SIGTERM, SIGINT, --max-updates, --duration), 1 on a runtime
failure, 2 on bad input (one line on stderr).
"""
import argparse
import os
import sys
import time

import numpy as np

from .cli import (BadInput, EXIT_OK, EXIT_RUNTIME, add_common_args, load_config, model_of,
                  pin_blas_threads, run_main, stop_on_signals)

__all__ = ["main", "check_module_fits", "BadInput"]


def _log(msg):
    print("fedmq-py-trainer: " + msg, file=sys.stderr, flush=True)


def check_module_fits(module, params, what):
    """BadInput naming the first tensor where the module's float state_dict and the
    federation's model (params: name -> ndarray) differ."""
    from .torch_utils import layout_mismatch
    d = layout_mismatch(module, params)
    if d is None:
        return
    kind, k, mine, theirs = d
    if kind == "missing":
        raise BadInput(f"{what}: no tensor '{k}', which the federation's model has")
    if kind == "shape":
        raise BadInput(f"{what}: tensor '{k}' has shape {mine}, the federation's model {theirs}")
    raise BadInput(f"{what}: tensor '{k}' is not in the federation's model")


class FashionData:
    """Client k's Fashion-MNIST training samples (its partition minus its held-out slice)."""

    def __init__(self, cfg_path, sets, cfg):
        import torch
        from . import data
        self.part = data.partition(cfg_path, sets)
        x, y = data.load_fashion(cfg.get("federation", "data_dir"), "train")
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y.astype(np.int64))

    def client(self, k):
        import torch
        idx = torch.from_numpy(self.part.train[k])
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


class UserData:
    def __init__(self, fn, cfg):
        self.fn, self.cfg, self.cache = fn, cfg, {}

    def client(self, k):
        import torch
        if k not in self.cache:
            x, y = self.fn(k, self.cfg)
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            y = torch.as_tensor(np.asarray(y, dtype=np.int64))
            if x.shape[0] != y.shape[0] or x.shape[0] < 1:
                raise BadInput(f"load_data({k}): {x.shape[0]} samples, {y.shape[0]} labels")
            self.cache[k] = (x, y)
        return self.cache[k]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="fedmq-py-trainer", description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--max-updates", type=int, default=0, help="stop after N updates (0: no)")
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: no)")
    ap.add_argument("--model-timeout", type=float, default=60,
                    help="give up when no model came in this many seconds")
    return ap.parse_args(argv)


def run(args):
    import torch
    from . import config
    from .client import Client
    from .train import Hyper, local_train
    torch.set_num_threads(max(1, args.threads))
    cfg = load_config(args)
    hyper = Hyper.from_config(cfg)
    module, name, user = model_of(args, cfg)
    data = UserData(user.load_data, cfg) if user and hasattr(user, "load_data") else None
    loss_fn = getattr(user, "loss", None) if user else None
    if data is None:
        data = FashionData(args.config, args.set, cfg)
    stop = stop_on_signals()

    kw = config.client_args(cfg)
    kw["workers"] = 1
    client = Client(**kw)
    sampler = torch.Generator().manual_seed(cfg.get_int("federation", "seed") ^ os.getpid())
    first, count = client.cfirst, client.ccount
    _log(f"trainer {client.trainer_id}: clients {first}-{first + count - 1}, model "
         f"{kw['model']}, {hyper}")
    t_end = time.time() + args.duration if args.duration > 0 else None
    sent, cursor, checked = 0, 0, False
    done_round = (None, set())   # sync: (round key, clients trained in it)
    declined = set()
    try:
        model = client.wait_model(timeout=args.model_timeout)
        if model is None:
            _log(f"no model within {args.model_timeout:g} s (is the broker at "
                 f"{kw['endpoints']['snapshot']}?)")
            return EXIT_RUNTIME
        while not stop["now"]:
            if t_end and time.time() >= t_end:
                break
            if args.max_updates and sent >= args.max_updates:
                break
            model = client.latest()
            if not checked:
                check_module_fits(module, model.params, args.model_file or f"built-in {name}")
                checked = True
            if model.sync:
                key = (model.mv, model.round)
                if done_round[0] != key:
                    done_round = (key, set())
                if 0 < model.q < 1 and key not in declined:
                    client.decline(model)
                    declined.add(key)
                todo = [c for c in client.clients_to_train(model) if c not in done_round[1]]
            else:
                todo = [first + cursor % count] if count else []
                cursor += 1
            if not todo:
                client.wait_model(timeout=0.5, newer_than=model)
                continue
            k = todo[0]
            x, y = data.client(k)
            client.set_busy(1)
            res = local_train(module, model.params, x, y, hyper.at_version(model.mv),
                              mu=model.mu if model.sync else cfg.get_float("federation", "mu"),
                              generator=sampler, loss_fn=loss_fn)
            client.set_busy(0)
            if model.sync:
                done_round[1].add(k)
            client.send_update(model, k, res.params, n=int(x.shape[0]), steps=res.steps,
                               loss=res.loss, secs=res.secs)
            sent += 1
            print(f"update {sent}: client {k} base v{model.mv}"
                  + (f" round {model.round}" if model.sync else "")
                  + f" n {int(x.shape[0])} steps {res.steps} loss {res.loss:.4f} "
                  f"{res.secs:.2f} s ({int(x.shape[0]) * hyper.epochs / res.secs:.0f} "
                  f"samples/s)", flush=True)
    finally:
        client.close()
    c = client.counters()
    print(f"summary: sent {c['sent']} applied {c['applied']} refused {c['refused']} "
          f"resent {c['resent']} pending {c['pending']} models {c['models']}", flush=True)
    return EXIT_OK


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    pin_blas_threads("fedmq_client.trainer_cli", argv, args.threads)
    return run_main(run, args, _log)


if __name__ == "__main__":
    sys.exit(main())
