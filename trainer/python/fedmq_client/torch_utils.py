"""PyTorch helpers (torch is imported when a function is called, never at import).

A model's wire tensors are its state_dict's floating-point tensors, as float32, in
state_dict order; integer buffers (e.g. BatchNorm's num_batches_tracked) are not sent and
are reported as skipped.
"""
from typing import Dict, List, Mapping, Tuple

import numpy as np


def state_dict_to_numpy(module_or_state) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """(params, skipped): {name: float32 C-order ndarray copy} of the floating-point tensors
    of a module's state_dict (or a state_dict), in its order, and the names skipped (not
    floating point)."""
    import torch
    sd = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") \
        else module_or_state
    params, skipped = {}, []
    for name, t in sd.items():
        if not torch.is_tensor(t) or not torch.is_floating_point(t):
            skipped.append(name)
            continue
        params[name] = np.ascontiguousarray(
            t.detach().to("cpu", torch.float32).numpy(), dtype=np.float32).copy()
    return params, skipped


def load_params(module, params: Mapping[str, np.ndarray], strict: bool = True) -> List[str]:
    """Copy params (name -> array) into the module's state_dict tensors in place, casting to
    each tensor's dtype and device. strict: every floating tensor of the module must be given
    and every name known, with the same shape (ValueError otherwise). Returns the names of
    the module's floating tensors not given (strict=False)."""
    import torch
    sd = module.state_dict()
    floating = [k for k, t in sd.items() if torch.is_tensor(t) and torch.is_floating_point(t)]
    unknown = [k for k in params if k not in sd]
    missing = [k for k in floating if k not in params]
    if strict and (unknown or missing):
        raise ValueError("load_params: unknown %s, missing %s" % (unknown, missing))
    with torch.no_grad():
        for k, a in params.items():
            if k not in sd:
                continue
            t = sd[k]
            if tuple(t.shape) != tuple(np.shape(a)):
                raise ValueError("load_params: %s: shape %s, module has %s"
                                 % (k, list(np.shape(a)), list(t.shape)))
            t.copy_(torch.from_numpy(np.array(a, dtype=np.float32, copy=True)).to(t.dtype))
    return missing


def delta(local: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """local - base per tensor (float32), in base's order (the UPDATE's "tensors")."""
    return {k: np.asarray(local[k], dtype=np.float32) - np.asarray(v, dtype=np.float32)
            for k, v in base.items()}


def apply_delta(base: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray],
                scale: float = 1.0) -> Dict[str, np.ndarray]:
    """base + scale * d per tensor (float32)."""
    return {k: (np.asarray(v, dtype=np.float32) + np.float32(scale) * d[k]).astype(np.float32)
            for k, v in base.items()}


def layout_mismatch(module, params: Mapping[str, np.ndarray]):
    """The first difference between a module's float state_dict and a model's tensors
    (name -> array), or None: ("missing", name, None, shape) for a model tensor the module
    lacks, ("shape", name, module shape, model shape), ("extra", name, shape, None) for a
    module tensor the model lacks. Shapes are lists."""
    mine, _ = state_dict_to_numpy(module)
    for k, a in params.items():
        if k not in mine:
            return "missing", k, None, list(a.shape)
        if mine[k].shape != a.shape:
            return "shape", k, list(mine[k].shape), list(a.shape)
    extra = [k for k in mine if k not in params]
    return ("extra", extra[0], list(mine[extra[0]].shape), None) if extra else None
