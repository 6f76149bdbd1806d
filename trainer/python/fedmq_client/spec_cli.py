"""fedmq-py-spec: write a custom model's spec file (docs/PROTOCOL.md §2.1.1) from its PyTorch
definition.

    fedmq-py-spec FILE.py[:entry] --out init.safetensors [--seed S]

Imports FILE.py, calls `entry()` (default make_model) after torch.manual_seed(S) (default
0), writes the module's floating-point state_dict tensors (float32, state_dict order) with
spec.save_safetensors, and prints the model's wire name (spec.spec_name), which the
aggregator and broker use for `[federation] model = file:/abs/path/init.safetensors`.
Exit: 0, or 2 on bad input (one line on stderr).
"""
import argparse
import os
import sys

__all__ = ["main", "write_spec"]


def _log(msg):
    print("fedmq-py-spec: " + msg, file=sys.stderr, flush=True)


def write_spec(module, out: str) -> str:
    """Write `module`'s float tensors to safetensors file `out`; returns the spec name.
    Raises ValueError (a name that is not a wire name, no float tensor, more than 64, more
    than 4 dims, an empty tensor) before writing anything."""
    from . import spec, wire
    from .torch_utils import state_dict_to_numpy
    params, _ = state_dict_to_numpy(module)
    if not params:
        raise ValueError("the module has no floating-point tensors")
    if len(params) > wire.MAX_TENSORS:
        raise ValueError(f"{len(params)} tensors, at most {wire.MAX_TENSORS}")
    for k, a in params.items():
        if a.ndim > wire.MAX_DIMS or a.size == 0:
            raise ValueError(f"tensor '{k}': shape {list(a.shape)} (at most {wire.MAX_DIMS} "
                             f"dims, not empty)")
    name = spec.spec_name(params)  # checks the names
    tmp = out + ".tmp"
    spec.save_safetensors(tmp, params, {"fedmq_spec": name})
    os.replace(tmp, out)
    return name


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fedmq-py-spec", description=__doc__.split("\n")[0])
    ap.add_argument("model", metavar="FILE.py[:entry]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    from .cli import BadInput, load_module
    path, _, entry = args.model.partition(":")
    entry = entry or "make_model"
    try:
        import torch
        mod = load_module(path, "model file")
        make = getattr(mod, entry, None)
        if not callable(make):
            raise BadInput(f"{path}: no function {entry}()")
        torch.manual_seed(args.seed)
        name = write_spec(make(), args.out)
    except BadInput as e:
        _log(str(e))
        return 2
    except (ValueError, OSError) as e:
        _log(f"{args.out}: {e}")
        return 2
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
