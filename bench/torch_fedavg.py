#!/usr/bin/python3
"""Synchronous FedAvg in PyTorch, "the classic way": the PyTorch twin of `fedmq run` in sync mode.

    /usr/bin/python3 bench/torch_fedavg.py --partition PART.json --out METRICS.jsonl
        [--rounds 100] [--clients-per-round 10] [--local-epochs 1] [--lr 0.01] [--momentum 0.9]
        [--batch 32] [--seed 1] [--target 0.85] [--time-limit SECONDS] [--threads 1]
        [--data /usr/share/datasets/fashion-mnist]

The algorithm of the seed's FederatedServer.train_round (with a real evaluation instead of the
seed's `0.85 + np.random.normal(0, 0.02)`):

  - one global model on the server: the seed's FederatedNet (tests/fixtures/gen_golden.py, the
    definition fedmq's cnn is checked against), PyTorch default init after torch.manual_seed(seed);
  - every round: select clients_per_round of the partition's clients at random
    (random.Random(seed).sample, as the seed's random.sample), train each selected client in
    turn from the global weights: a copy of the global model, a fresh SGD(lr, momentum)
    optimizer, local_epochs passes over the client's `train` indices, shuffled every epoch, in
    mini-batches of `batch` (the last one may be smaller: DataLoader(shuffle=True)), dropout on,
    F.nll_loss on the log_softmax output (the seed's CrossEntropyLoss on log_softmax outputs is
    the same loss). No gradient clipping (the seed's Client clips to 1.0; fedmq's config has
    clip_norm = 0) and no differential privacy noise;
  - then the seed's FedAvgAggregation: global += sum_k w_k (client_k - global) with
    w_k = n_k / sum n (n_k = the client's number of training samples);
  - after every round: evaluate the global model on the full t10k test set (model.eval(),
    torch.no_grad(), batches of 1000): accuracy, mean NLL loss, per-class accuracy.

Data: the IDX files of --data (gzipped or not), read with numpy, normalised like fedmq:
(p/255 - 0.2860) / 0.3530. Clients own the `train` index lists of a partition file written by
`fedmq partition CONFIG --out PART.json` (the exact partition fedmq's trainers use; the `held`
lists are never trained on).

Output: --out gets one JSON line per evaluated model in the format of fedmq's evaluator
(evaluator/evaluator_jsonl.h), first the initial model (version 0, evaluated before round 1,
so that "time since the first record" is "time since training started"), then one per round:
    {"version":R,"model":"cnn","accuracy":A,"loss":L,"class_accuracy":[...],"n":10000,
     "eval_seconds":S,"time":UNIX_TIME_AT_END_OF_EVAL,"created":UNIX_TIME_MODEL_WAS_MADE}
The file is truncated at start and flushed after every line. stdout gets a header and one
line per round:
    round 3/100 elapsed=27.4s accuracy=0.7412 loss=0.7003 train_s=4.31 eval_s=2.87

Stops after --rounds rounds, when the accuracy reaches --target (after recording that round;
0 = never), or when --time-limit seconds have passed since the start (checked after every
round; 0 = no limit). Exit: 0 target reached (or no target and all rounds done), 1 stopped
by the round or time limit before the target, 2 bad input.

Threads: torch.set_num_threads(--threads); OMP_NUM_THREADS is set to the same value and
OPENBLAS_NUM_THREADS too unless it is already set in the environment (set before torch loads).
"""
import argparse
import copy
import json
import math
import os
import random
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the imported fixtures
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "tests", "fixtures")
PROG = os.path.basename(sys.argv[0])
NCLASSES = 10


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Synchronous FedAvg in PyTorch (the seed's "
                                 "FederatedServer with a real test-set evaluation).")
    ap.add_argument("--partition", required=True, help="JSON from `fedmq partition`")
    ap.add_argument("--out", required=True, help="metrics JSON-lines file (truncated)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.85,
                    help="stop once the test accuracy reaches this (0 = never)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop after this many seconds from the start (0 = no limit)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batch", type=int, default=1000)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args(argv)
    for name in ("rounds", "clients_per_round", "local_epochs", "batch", "threads", "eval_batch"):
        if getattr(a, name) < 1:
            ap.error("--%s: must be >= 1" % name.replace("_", "-"))
    if not (math.isfinite(a.lr) and a.lr > 0):
        ap.error("--lr: must be a finite number > 0")
    if not (0 <= a.momentum < 1):
        ap.error("--momentum: must be in [0, 1)")
    if not (0 <= a.target <= 1):
        ap.error("--target: must be in [0, 1]")
    if not (math.isfinite(a.time_limit) and a.time_limit >= 0):
        ap.error("--time-limit: must be >= 0")
    if a.seed < 0:
        ap.error("--seed: must be >= 0")
    return a


def bad_input(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr)
    sys.exit(2)


def load_partition(path, n_train):
    """The `train` index lists of a `fedmq partition` file, validated; and its header."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as exc:
        bad_input("--partition %s: %s" % (path, exc))
    if not isinstance(d, dict) or not isinstance(d.get("train"), list):
        bad_input("--partition %s: not a `fedmq partition` file (no \"train\" list)" % path)
    parts = d["train"]
    if d.get("num_clients", len(parts)) != len(parts) or not parts:
        bad_input("--partition %s: num_clients %r but %d train lists" % (
            path, d.get("num_clients"), len(parts)))
    if d.get("n_samples", n_train) != n_train:
        bad_input("--partition %s: made for %r training samples, the data set has %d" % (
            path, d.get("n_samples"), n_train))
    for k, p in enumerate(parts):
        if not isinstance(p, list) or not all(type(i) is int and 0 <= i < n_train for i in p):
            bad_input("--partition %s: train[%d] is not a list of sample indices in [0, %d)" % (
                path, k, n_train))
    return parts, {k: v for k, v in d.items() if k not in ("train", "held")}


def main(argv=None):
    args = parse_args(argv)
    # before torch (and with it OpenBLAS and libgomp) is loaded
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    try:
        import numpy as np  # noqa: F401  (check_export needs it; fail with a clear message)
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        bad_input("%s: run it with /usr/bin/python3 (Debian python3-torch); the interpreter %s "
                  "lacks it" % (exc, sys.executable))
    sys.path.insert(0, FIXTURES)
    sys.path.insert(0, HERE)
    from check_export import load_idx  # numpy IDX reader, fedmq's normalisation
    from gen_golden import FederatedNet  # the seed's FederatedNet, as fedmq's cnn
    from torch_train import find_openblas

    torch.set_num_threads(args.threads)
    blas, _ = find_openblas()
    core = blas.openblas_get_corename().decode() if blas is not None else "unknown"
    blas_threads = blas.openblas_get_num_threads() if blas is not None else -1

    try:
        x_train, y_train = load_idx(args.data, "train")
        x_test, y_test = load_idx(args.data, "t10k")
    except (OSError, ValueError) as exc:
        bad_input("--data %s: %s" % (args.data, exc))
    parts, header = load_partition(args.partition, x_train.shape[0])
    nclients = len(parts)
    if args.clients_per_round > nclients:
        bad_input("--clients-per-round %d exceeds the partition's %d clients" % (
            args.clients_per_round, nclients))
    try:
        out = open(args.out, "w")
    except OSError as exc:
        bad_input("--out %s: %s" % (args.out, exc))
    client_idx = [torch.tensor(p, dtype=torch.int64) for p in parts]

    print("# torch %s, OpenBLAS core %s (threads %d), torch threads %d, OPENBLAS_CORETYPE=%s" % (
        torch.__version__, core, blas_threads, torch.get_num_threads(),
        os.environ.get("OPENBLAS_CORETYPE", "(unset)")))
    print("# FedAvg cnn: %d clients (%s, seed %s, holdout %s; %d training samples), %d per "
          "round, %d local epoch(s), SGD lr=%g momentum=%g batch=%d, seed=%d, target=%g, "
          "time limit=%gs -> %s" % (
              nclients, header.get("partition", "?"), header.get("seed", "?"),
              header.get("holdout", "?"), sum(len(p) for p in parts), args.clients_per_round,
              args.local_epochs, args.lr, args.momentum, args.batch, args.seed, args.target,
              args.time_limit, args.out), flush=True)

    torch.manual_seed(args.seed)           # init and dropout
    shuffle = torch.Generator().manual_seed(args.seed)  # per-epoch batch order
    select = random.Random(args.seed)      # client selection (the seed's random.sample)
    global_model = FederatedNet()
    client_model = copy.deepcopy(global_model)
    keys = list(global_model.state_dict().keys())

    @torch.no_grad()
    def evaluate(model):
        model.eval()
        correct = torch.zeros(NCLASSES, dtype=torch.int64)
        total = torch.bincount(y_test, minlength=NCLASSES)
        loss = 0.0
        for i in range(0, x_test.shape[0], args.eval_batch):
            yb = y_test[i:i + args.eval_batch]
            logp = model(x_test[i:i + args.eval_batch])
            loss += F.nll_loss(logp, yb, reduction="sum").double().item()
            hit = logp.argmax(dim=1) == yb
            correct += torch.bincount(yb[hit], minlength=NCLASSES)
        n = x_test.shape[0]
        cls = [(c / t if t else 0.0) for c, t in zip(correct.tolist(), total.tolist())]
        return int(correct.sum()) / n, loss / n, cls

    def finite(v):
        return v if math.isfinite(v) else None

    def record(version, created):
        t0 = time.perf_counter()
        acc, loss, cls = evaluate(global_model)
        es = time.perf_counter() - t0
        rec = {"version": version, "model": "cnn", "accuracy": acc, "loss": finite(loss),
               "class_accuracy": cls, "n": int(x_test.shape[0]), "eval_seconds": es,
               "time": time.time(), "created": created}
        out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        out.flush()
        return acc, loss, es

    def train_client(k):
        """Train client_model from the global weights on client k; returns (state, n, loss)."""
        idx = client_idx[k]
        n = idx.shape[0]
        client_model.load_state_dict(global_model.state_dict())
        client_model.train()
        opt = torch.optim.SGD(client_model.parameters(), lr=args.lr, momentum=args.momentum)
        xk, yk = x_train.index_select(0, idx), y_train.index_select(0, idx)
        total = 0.0
        for _ in range(args.local_epochs):
            perm = torch.randperm(n, generator=shuffle)
            total = 0.0
            for b in range(0, n, args.batch):
                bi = perm[b:b + args.batch]
                opt.zero_grad(set_to_none=True)
                loss = F.nll_loss(client_model(xk.index_select(0, bi)), yk.index_select(0, bi))
                loss.backward()
                opt.step()
                total += loss.item() * bi.shape[0]
        return client_model.state_dict(), n, total / n

    wall0 = time.perf_counter()
    acc, loss, es = record(0, time.time())
    print("round 0/%d elapsed=%.1fs accuracy=%.4f loss=%.4f train_s=0.00 eval_s=%.2f (initial "
          "model)" % (args.rounds, time.perf_counter() - wall0, acc, loss, es), flush=True)
    reached = args.target > 0 and acc >= args.target
    rounds_done = 0
    rc = 1
    for rnd in range(1, args.rounds + 1):
        if reached:
            break
        if args.time_limit > 0 and time.perf_counter() - wall0 >= args.time_limit:
            print("# time limit of %gs reached after %d rounds" % (args.time_limit, rounds_done))
            break
        t0 = time.perf_counter()
        chosen = select.sample(range(nclients), args.clients_per_round)
        gstate = {key: v.clone() for key, v in global_model.state_dict().items()}
        agg = {key: torch.zeros_like(v) for key, v in gstate.items()}
        chosen = [k for k in chosen if client_idx[k].shape[0] > 0]  # empty clients send nothing
        tot = float(sum(client_idx[k].shape[0] for k in chosen))
        weights, losses = [], []
        for k in chosen:
            state, n, closs = train_client(k)
            if not math.isfinite(closs):
                print("%s: client %d diverged in round %d (loss %g); lower --lr" % (
                    PROG, k, rnd, closs), file=sys.stderr)
                return 1
            weights.append(n)
            losses.append(closs)
            # FedAvgAggregation: sum_k (n_k / sum n) * (client_k - global)
            for key in keys:
                agg[key] += (n / tot) * (state[key] - gstate[key])
        if weights:
            for key in keys:
                gstate[key] += agg[key]
            global_model.load_state_dict(gstate)
        created = time.time()
        train_s = time.perf_counter() - t0
        acc, loss, es = record(rnd, created)
        rounds_done = rnd
        print("round %d/%d elapsed=%.1fs accuracy=%.4f loss=%.4f train_s=%.2f eval_s=%.2f "
              "clients=%d samples=%d local_loss=%.4f" % (
                  rnd, args.rounds, time.perf_counter() - wall0, acc, loss, train_s, es,
                  len(weights), sum(weights), sum(losses) / max(len(losses), 1)), flush=True)
        if args.target > 0 and acc >= args.target:
            reached = True
    out.close()
    elapsed = time.perf_counter() - wall0
    if reached:
        print("# target %.4f reached after %d rounds, %.1fs" % (args.target, rounds_done, elapsed))
        rc = 0
    elif args.target == 0 and rounds_done == args.rounds:
        rc = 0
    print("# done: %d rounds, %.1fs, final accuracy %.4f" % (rounds_done, elapsed, acc), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
