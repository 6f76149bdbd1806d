"""Local training of one client, as fedmq-trainer does it (docs/PROTOCOL.md §10): from the
MODEL's weights, `epochs` passes over the client's samples in shuffled mini-batches, SGD
with momentum and weight decay, the global gradient norm clipped to `clip_norm` (0: off),
FedProx's proximal term (mu / 2) ||w - w_base||^2 when mu > 0. The loss is
F.cross_entropy of the module's output, which is the mean NLL for modules that return
log-probabilities (log_softmax is idempotent) and the usual loss for logits."""
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .torch_utils import load_params, state_dict_to_numpy

__all__ = ["Hyper", "Result", "local_train", "steps_cap"]


@dataclass
class Hyper:
    """The [federation] keys of local training."""
    epochs: int = 1
    lr: float = 0.01
    batch: int = 32
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    lr_decay: float = 0.0  # the schedule: lr / (1 + lr_decay x model version)
    local_steps: int = 0   # at most this many steps per local training, 0 = no limit
    local_fraction: float = 1.0  # that fraction of `epochs` passes, 1 = whole epochs

    @classmethod
    def from_config(cls, cfg):
        g = lambda k: cfg.get_float("federation", k)  # noqa: E731
        return cls(epochs=cfg.get_int("federation", "local_epochs"), lr=g("learning_rate"),
                   batch=cfg.get_int("federation", "batch_size"), momentum=g("momentum"),
                   weight_decay=g("weight_decay"), clip_norm=g("clip_norm"),
                   lr_decay=g("lr_decay"),
                   local_steps=cfg.get_int("federation", "local_steps"),
                   local_fraction=g("local_fraction"))

    def at_version(self, version):
        """These settings for a local training from model `version`: the learning rate of
        [federation] lr_decay's schedule, as fedmq-trainer computes it."""
        return replace(self, lr=self.lr / (1.0 + self.lr_decay * float(version)))


def steps_cap(hyper, n):
    """The step cap of a local training on n samples (0 = none), as fedmq-trainer computes
    it (fm_train_steps_cap): local_fraction x epochs x ceil(n / batch) steps rounded up (less
    1e-9, so that 0.1 x 30 is 3), at least 1, when local_fraction < 1; the smaller of that
    and local_steps when both are set."""
    cap = hyper.local_steps
    if hyper.local_fraction < 1.0 and n > 0:
        total = max(1, hyper.epochs) * (-(-n // hyper.batch))
        frac = max(1, math.ceil(hyper.local_fraction * total - 1e-9))
        cap = frac if not cap or frac < cap else cap
    return cap


@dataclass
class Result:
    params: dict      # name -> float32 ndarray, the local weights after training
    steps: int
    loss: float       # mean training loss over the last epoch
    secs: float


def local_train(module, base, x, y, hyper, mu=0.0, generator=None, loss_fn=None):
    """Train `module` (a torch.nn.Module whose float state_dict entries are `base`'s names)
    from the weights `base` (name -> ndarray) on samples x (tensor [n, ...]) and labels y
    (int64 tensor [n]). Returns a Result. Raises ValueError for an empty client or weights
    that do not fit the module."""
    n = int(x.shape[0])
    if n < 1 or int(y.shape[0]) != n:
        raise ValueError(f"client data: {n} samples and {int(y.shape[0])} labels")
    t0 = time.perf_counter()
    load_params(module, base)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    anchor = None
    if mu > 0:
        anchor = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=hyper.lr, momentum=hyper.momentum,
                          weight_decay=hyper.weight_decay)
    lossf = loss_fn or F.cross_entropy
    steps, total, seen = 0, 0.0, 0
    cap = steps_cap(hyper, n)
    for _ in range(max(1, hyper.epochs)):
        if cap and steps >= cap:
            break
        perm = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for b in range(0, n, hyper.batch):
            if cap and steps >= cap:
                break  # the epoch under way ends here, as fedmq-trainer's does
            idx = perm[b:b + hyper.batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(module(x.index_select(0, idx)), y.index_select(0, idx))
            obj = loss
            if anchor is not None:
                obj = loss + 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            obj.backward()
            if hyper.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, hyper.clip_norm)
            opt.step()
            steps += 1
            total += float(loss.detach()) * int(idx.shape[0])
            seen += int(idx.shape[0])
    out, _ = state_dict_to_numpy(module)
    out = {k: out[k] for k in base}
    return Result(params=out, steps=steps, loss=total / max(seen, 1),
                  secs=time.perf_counter() - t0)
