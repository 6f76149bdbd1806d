#!/usr/bin/python3
"""PyTorch reference for fedmq's training benchmarks (run with /usr/bin/python3: torch 1.13).

Throughput (the twin of bench/train_bench.c):
    torch_train.py [--mode throughput] --model mlp|cnn --batch B --threads T --seconds S [--warmup W]
  prints
    # torch 1.13.0a0, OpenBLAS 0.3.21 core SkylakeX (threads 1), oneDNN on, ...
    # steps=... samples=... seconds=... last_loss=...
    torch model=cnn batch=32 threads=1 samples_per_s=1234.5 core=SkylakeX

  Same model definition as fedmq (tests/fixtures/gen_golden.py), SGD(lr=0.01, momentum=0.9),
  model.train() (dropout on), real Fashion-MNIST batches normalised like fedmq
  ((p/255 - 0.2860) / 0.3530). The whole training set is pre-loaded as one tensor and each
  batch is gathered with index_select from a shuffled permutation (no DataLoader in the
  timed loop: PyTorch's best case). Each step: zero_grad(set_to_none) + forward + nll_loss +
  backward + optimiser step, as in fedmq. Warm-up W seconds, then S timed seconds.

  Threads: torch.set_num_threads(T), and OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = T plus
  openblas_set_num_threads(T) (torch 1.13 does not pass its thread count to OpenBLAS, which
  would otherwise use every CPU; --blas-threads N overrides the OpenBLAS count).
  --omp-wait passive sets OMP_WAIT_POLICY=PASSIVE: Debian's torch runs OpenMP (libgomp) and
  a pthreads OpenBLAS side by side, and with T > 1 idle OpenMP threads spin on the cores
  OpenBLAS's threads need; on a busy 2-core machine this was seen to cost 100x. The OpenBLAS core is whatever OPENBLAS_CORETYPE selects at
  load time; it is read back from the loaded library and printed as core=. Convolutions run
  through oneDNN (its own JIT kernels; OPENBLAS_CORETYPE does not affect them), linear layers
  through OpenBLAS sgemm.

Accuracy (side-by-side with `fedmq train`):
    torch_train.py --mode accuracy --model M --epochs E --batch B --lr X --momentum X --seed S
                   [--limit N] [--threads T]
  torch.manual_seed(S), PyTorch default init, E epochs of shuffled mini-batches (a
  DataLoader(shuffle=True, drop_last=False) equivalent: a new permutation every epoch, the
  last batch may be smaller), then a t10k evaluation printed as fedmq prints it:
    epoch 1/E train_loss=... samples/s=... elapsed=...s
    test_accuracy=0.XXXX test_loss=X.XXXX
  --limit N trains on the first N training samples only (fedmq train --limit semantics).
"""
import argparse
import ctypes
import math
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the imported fixtures
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "tests", "fixtures")
PROG = os.path.basename(sys.argv[0])


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PyTorch twin of fedmq's training benchmarks.")
    ap.add_argument("--mode", choices=("throughput", "accuracy"), default="throughput")
    ap.add_argument("--model", choices=("mlp", "cnn", "logreg"), default="cnn")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch/OpenMP/OpenBLAS threads (default: 1 for throughput, all CPUs for "
                    "accuracy)")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds (throughput)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (throughput)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs (accuracy)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0,
                    help="train on the first N training samples only (accuracy; 0 = all)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OpenBLAS threads (default: --threads)")
    ap.add_argument("--omp-wait", choices=("default", "active", "passive"), default="default",
                    help="OMP_WAIT_POLICY for torch's OpenMP threads (default: leave the "
                    "environment as it is); passive stops idle OpenMP threads spinning, which "
                    "otherwise fight OpenBLAS's own threads for the cores")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.mode == "throughput" else (os.cpu_count() or 1)
    if args.blas_threads is None:
        args.blas_threads = args.threads
    if args.blas_threads < 1:
        ap.error("--blas-threads: must be >= 1")
    for name in ("batch", "threads", "epochs"):
        if getattr(args, name) < 1:
            ap.error("--%s: must be >= 1" % name)
    if args.seconds <= 0 or args.warmup < 0:
        ap.error("--seconds must be > 0 and --warmup >= 0")
    if args.limit < 0:
        ap.error("--limit: must be >= 0")
    return args


def find_openblas():
    """The loaded OpenBLAS (ctypes handle, path) or (None, None)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if ".so" in line and "blas" in line})
    except OSError:
        return None, None
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return lib, p
        except (OSError, AttributeError):
            continue
    return None, None


def main(argv=None):
    args = parse_args(argv)
    # before torch (and with it OpenBLAS and libgomp) is loaded
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
    if args.omp_wait != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        sys.exit("%s: %s: run it with /usr/bin/python3 (Debian python3-torch); the interpreter "
                 "%s lacks torch" % (PROG, exc, sys.executable))
    sys.path.insert(0, FIXTURES)
    from check_export import build_model, evaluate, load_idx

    torch.set_num_threads(args.threads)
    blas, blas_path = find_openblas()
    core, blas_ver = "unknown", "OpenBLAS ?"
    if blas is not None:
        blas.openblas_set_num_threads(args.blas_threads)
        core = blas.openblas_get_corename().decode()
        cfg = blas.openblas_get_config().decode().split()
        blas_ver = " ".join(cfg[:2])
        want = os.environ.get("OPENBLAS_CORETYPE")
        if want and want.lower() != core.lower():
            print("%s: warning: OPENBLAS_CORETYPE=%s but OpenBLAS runs core %s" % (PROG, want, core),
                  file=sys.stderr)
    try:
        x, y = load_idx(args.data, "train")
    except (OSError, ValueError) as exc:
        sys.exit("%s: %s" % (PROG, exc))
    print("# torch %s, %s core %s (threads %d, %s), oneDNN %s, torch threads %d, "
          "OMP_WAIT_POLICY=%s" % (
              torch.__version__, blas_ver, core, blas.openblas_get_num_threads() if blas else -1,
              blas_path, "on" if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
              else "off", torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "(unset)")),
          flush=True)
    torch.manual_seed(args.seed)
    model = build_model(args.model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    gen = torch.Generator().manual_seed(args.seed)
    if args.mode == "throughput":
        return throughput(args, torch, F, model, opt, gen, x, y, core)
    return accuracy(args, torch, F, model, opt, gen, x, y, evaluate, load_idx)


def throughput(args, torch, F, model, opt, gen, x, y, core):
    n, B = x.shape[0], args.batch
    if B > n:
        sys.exit("%s: --batch %d exceeds the training set (%d)" % (PROG, B, n))
    model.train()
    state = {"perm": torch.randperm(n, generator=gen), "pos": 0}

    def step():
        if state["pos"] + B > n:  # next pass: reshuffle, keep batches full (as train_bench)
            state["perm"] = torch.randperm(n, generator=gen)
            state["pos"] = 0
        idx = state["perm"][state["pos"]:state["pos"] + B]
        state["pos"] += B
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    loss = None
    steps, elapsed = 0, 0.0
    for limit in (args.warmup, args.seconds):
        if limit <= 0:
            continue
        steps = 0
        t0 = time.perf_counter()
        while True:
            loss = step()
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= limit:
                break
    last = loss.item()
    if not math.isfinite(last):
        sys.exit("%s: training diverged (loss %g)" % (PROG, last))
    sps = steps * B / elapsed
    print("# steps=%d samples=%d seconds=%.3f last_loss=%.4f" % (steps, steps * B, elapsed, last))
    print("torch model=%s batch=%d threads=%d samples_per_s=%.1f core=%s blas_threads=%d omp_wait=%s" % (
        args.model, B, args.threads, sps, core, args.blas_threads, args.omp_wait), flush=True)
    return 0


def accuracy(args, torch, F, model, opt, gen, x, y, evaluate, load_idx):
    n = x.shape[0]
    if args.limit and args.limit < n:
        n = args.limit
        x, y = x[:n], y[:n]
    print("training %s on %d samples: epochs=%d batch=%d lr=%g momentum=%g threads=%d seed=%d" % (
        args.model, n, args.epochs, args.batch, args.lr, args.momentum, args.threads, args.seed),
        flush=True)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(0, n, args.batch):
            idx = perm[b:b + args.batch]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
        if not math.isfinite(total):
            sys.exit("%s: training diverged: the loss became NaN or infinite" % PROG)
        el = time.perf_counter() - t0
        print("epoch %d/%d train_loss=%.4f samples/s=%.0f elapsed=%.1fs" % (
            epoch + 1, args.epochs, total / n, n * (epoch + 1) / el, el), flush=True)
    xt, yt = load_idx(args.data, "t10k")
    acc, tloss = evaluate(model, xt, yt)
    print("test_accuracy=%.4f test_loss=%.4f" % (acc, tloss), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
