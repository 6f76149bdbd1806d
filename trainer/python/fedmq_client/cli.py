"""What fedmq's Python command-line tools share (fedmq-py-trainer, fedmq-py-evaluator): the
options every one takes, the config read as the daemons read it, the user's model file,
signals, and the exit codes of the C programs (0 ok, 1 runtime failure, 2 bad input with one
line on stderr)."""
import importlib.util
import os
import signal
import sys

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT = 0, 1, 2


class BadInput(Exception):
    """The user's input is wrong (exit 2, the message is the one line)."""


def add_common_args(ap):
    """--config, --set, --model-file, --entry, --threads."""
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--model-file")
    ap.add_argument("--entry", default="make_model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def load_config(args):
    """The config of --config and --set as the daemons resolve it (BadInput if refused)."""
    from . import config
    try:
        return config.load(args.config, args.set)
    except config.ConfigError as e:
        raise BadInput(str(e)) from None


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


def model_of(args, cfg):
    """(module, wire model name, user module or None) for the federation's model: the
    built-in twin the config names, or --model-file's --entry() (required for a custom
    spec, whose wire name is its fingerprint). BadInput for what cannot run."""
    from . import config, models, spec
    name, spec_file = config.model_setting(cfg)
    if spec_file is not None:
        try:
            name = spec.spec_name(spec.load_safetensors(spec_file)[0])
        except (OSError, ValueError) as e:
            raise BadInput(f"[federation] model = file:{spec_file}: {e}") from None
    user = load_module(args.model_file) if args.model_file else None
    if user is None:
        if spec_file is not None:
            raise BadInput(f"[federation] model = file:{spec_file} is a custom model: give "
                           f"its PyTorch definition with --model-file")
        return models.builtin(name), name, None
    make = getattr(user, args.entry, None)
    if not callable(make):
        raise BadInput(f"--model-file {args.model_file}: no function {args.entry}()")
    return make(), name, user


def stop_on_signals():
    """A dict whose "now" turns True at SIGTERM or SIGINT."""
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run_main(run, args, log):
    """run(args) mapped to the exit codes: BadInput -> 2, ValueError/OSError -> 1, one line
    through log()."""
    try:
        return run(args)
    except BadInput as e:
        log(str(e))
        return EXIT_INPUT
    except (ValueError, OSError) as e:
        log(f"{type(e).__name__}: {e}")
        return EXIT_RUNTIME


def pin_blas_threads(module, argv, threads):
    """Re-execute `python -m module argv` once with OPENBLAS_NUM_THREADS and OMP_NUM_THREADS
    set to `threads`, unless the caller set them: torch.set_num_threads does not bound
    OpenBLAS's own pool, which starts with one thread per core at import (before any code of
    ours can change it), so two trainers on two cores would run four BLAS threads (measured:
    2.43 against 3.95 updates/s for two cnn trainers, bench/python_client.sh)."""
    if threads < 1 or "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    os.execve(sys.executable, [sys.executable, "-m", module] + list(argv), env)
