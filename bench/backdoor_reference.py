#!/usr/bin/env python3
"""backdoor_reference.py: the poisoning benchmark's backdoor in PyTorch, as a reference for
what aggregation defences can do against it (issue 11).

    bench/backdoor_reference.py [--rule R] [--attackers A] [--rounds N] [--seed S]
                                [--eval-every E] [--similarity] [--data DIR]

The setting of bench/poison_compare.sh's backdoor, in synchronous rounds: the cnn of fedmq
(conv 3x3 32, conv 3x3 64, max-pool 2, fc 128, fc 10), Fashion-MNIST normalised as fm_data
does, 100 clients with a Dirichlet(0.5) split of the training set (drawn here with numpy: the
same kind of split as fedmq's, not the same draw), one local epoch of SGD (lr 0.01, momentum
0.9, batch 32) per update, 10 clients drawn per round (an async FedBuff buffer of K = 10
without staleness). The last A clients attack as bench/fedmq_attacker's backdoor does (its
trainer/trainer_attack.h): half of each one's samples get the 4 x 4 white trigger in the
bottom-right corner and label 0; the update is not boosted. The attack success rate (ASR) is
the share of the test images whose label is not 0 that the model puts in class 0 once stamped.

Rules (--rule), each a function of the round's 10 deltas:
  mean               weighted by sample counts (fedmq's default mean)
  median             coordinate-wise median (mean of the two middle values)
  trimmed_mean       drop the 2 largest and 2 smallest per coordinate (trim_fraction 0.2)
  norm_bounded_mean  clip each delta to the median norm, average (as shared/fl/fm_robust.h)
  screened           fedmq's recommended defence: reject a delta whose norm is above 3 x the
                     median of the last 50 norms, then norm_bounded_mean
  sign_vote          robust learning rate (Ozdayi et al., AAAI 2021): the mean, its step
                     reversed on every coordinate where |sum of signs| < --theta of the 10
                     (default 4, their Fashion-MNIST threshold; fedmq's [aggregator]
                     sign_threshold = theta / 10)
  screened_vote      screened, then the sign vote over the updates that passed the screen
                     (fedmq: screened + sign_threshold)
  foolsgold          FoolsGold (Fung et al., RAID 2020): each client's history (sum of its
                     deltas) of the output layer; per client, 1 - the largest cosine to
                     another client (with their pardoning), logit-scaled to [0, 1]; the
                     round's deltas averaged with those weights
--similarity prints, at each evaluation, how well the largest cosine between clients' whole
histories separates attackers from honest clients, per layer: the mean largest cosine of
each group and the AUC (1.0 = every attacker above every honest client). It is what any
defence that identifies senders by the similarity of their updates over time (FoolsGold,
FLAME-style clustering) would have to work with.

Output: a line per evaluation ("round R acc X asr Y ..."), then one "result" line. Slow:
about 25 s per round on one core of a 2-core VM (a full local epoch for each of the 10
clients). Uses numpy and PyTorch (python3-torch).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer",
                                "python"))
from fedmq_client.data import FASHION_MEAN, FASHION_STD, load_fashion  # noqa: E402

MEAN, STD = FASHION_MEAN, FASHION_STD  # fm_data's Fashion-MNIST normalisation
PATCH = 4                   # trainer_attack.h's TRAINER_ATTACK_PATCH
WHITE = (1.0 - MEAN) / STD  # trainer_attack_white()
TARGET = 0
K = 10
RULES = ("mean", "median", "trimmed_mean", "norm_bounded_mean", "screened", "sign_vote",
         "screened_vote", "foolsgold")


def stamp(x):
    """The trigger on images x[..., rows, cols] (in place), as trainer_attack_stamp."""
    x[..., -PATCH:, -PATCH:] = WHITE
    return x


def dirichlet_split(labels, clients, alpha, rng):
    """Per class, proportions over clients from Dirichlet(alpha): lists of indices."""
    parts = [[] for _ in range(clients)]
    for c in range(int(labels.max()) + 1):
        ids = np.where(labels == c)[0]
        rng.shuffle(ids)
        cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(ids)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(ids, cuts)):
            parts[k].extend(chunk.tolist())
    return parts


# ---- the rules: deltas is a K x P float64 array, n the sample counts -----------------------

def rule_mean(deltas, n):
    w = np.asarray(n, np.float64)
    return (w[:, None] * deltas).sum(0) / w.sum()


def rule_median(deltas, n=None):
    return np.median(deltas, axis=0)


def rule_trimmed_mean(deltas, n=None, beta=0.2):
    b = int(beta * len(deltas))
    s = np.sort(deltas, axis=0)
    return s[b:len(deltas) - b].mean(0)


def rule_norm_bounded_mean(deltas, n=None):
    norms = np.linalg.norm(deltas, axis=1)
    m = np.median(norms)
    f = np.where(norms > m, m / np.maximum(norms, 1e-300), 1.0)
    return (f[:, None] * deltas).mean(0)


def sign_vote(step, deltas, theta=4):
    """Reverse step where |sum_i sign(delta_i)| < theta."""
    agree = np.abs(np.sign(deltas).sum(0))
    return np.where(agree >= theta, step, -step)


def cosines(hist):
    """Pairwise cosines of the rows of hist (C x D), -inf on the diagonal."""
    h = hist / np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12)
    cs = h @ h.T
    np.fill_diagonal(cs, -np.inf)
    return cs


def foolsgold_weights(hist):
    """FoolsGold's weights (Fung et al. 2020, Algorithm 1) of the rows of hist (C x D)."""
    cs = cosines(hist)
    v = cs.max(1)
    c = len(hist)
    for i in range(c):  # pardoning: a client less similar than its neighbour is not punished
        for j in range(c):
            if i != j and v[j] > v[i]:
                cs[i, j] *= v[i] / v[j]
    a = np.clip(1.0 - cs.max(1), 0.0, 1.0)
    if a.max() > 0:
        a = a / a.max()
    a[a == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        a = np.log(a / (1.0 - a)) + 0.5
    return np.clip(np.nan_to_num(a, neginf=0.0), 0.0, 1.0)


def auc(pos, neg):
    """P(a random attacker's value > a random honest one's), ties counted half."""
    if not pos or not neg:
        return float("nan")
    p = np.asarray(pos)[:, None]
    q = np.asarray(neg)[None, :]
    return float(((p > q) + 0.5 * (p == q)).mean())


def max_cosines(hist):
    return cosines(hist).max(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rule", choices=RULES, default="mean")
    ap.add_argument("--attackers", type=int, default=20)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--theta", type=int, default=4, help="sign_vote: agreement kept (of 10)")
    ap.add_argument("--similarity", action="store_true")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=0,
                    help="use only the first N training images (tests)")
    o = ap.parse_args(argv)
    if not 0 <= o.attackers <= o.clients or o.clients < K:
        ap.error("need clients >= 10 and 0 <= attackers <= clients")

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(1)

    xtr, ytr = load_fashion(o.data, "train")  # [N, 1, 28, 28] float32, uint8 labels
    xte, yte = load_fashion(o.data, "t10k")
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    if o.limit:
        xtr, ytr, xte, yte = xtr[:o.limit], ytr[:o.limit], xte[:o.limit], yte[:o.limit]
    rng = np.random.default_rng(o.seed)
    parts = dirichlet_split(ytr, o.clients, 0.5, rng)
    first_attacker = o.clients - o.attackers
    cx, cy = [], []
    for k, idx in enumerate(parts):
        x, y = xtr[idx].copy(), ytr[idx].copy()
        if k >= first_attacker and len(x):
            sel = rng.permutation(len(x))[:int(round(0.5 * len(x)))]
            x[sel] = stamp(x[sel])
            y[sel] = TARGET
        cx.append(torch.from_numpy(x))
        cy.append(torch.from_numpy(y))
    xbd = torch.from_numpy(stamp(xte[yte != TARGET].copy()))
    xte_t, yte_t = torch.from_numpy(xte), torch.from_numpy(yte)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3)
            self.conv2 = nn.Conv2d(32, 64, 3)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    torch.manual_seed(o.seed)
    net = Net()
    spans, at = {}, 0
    for name, p in net.named_parameters():
        spans[name] = (at, at + p.numel())
        at += p.numel()
    layers = {l: [spans[l + ".weight"], spans[l + ".bias"]] for l in ("conv1", "conv2", "fc1", "fc2")}
    cut = lambda v, l: np.concatenate([v[a:b] for a, b in layers[l]])

    def get():
        return torch.cat([p.detach().flatten() for p in net.parameters()]).double().numpy()

    def put(v):
        t = torch.from_numpy(v)
        for name, p in net.named_parameters():
            a, b = spans[name]
            p.data.copy_(t[a:b].view_as(p).float())

    def train(w, k, gen):
        put(w)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        n = len(cy[k])
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            F.cross_entropy(net(cx[k][b]), cy[k][b]).backward()
            opt.step()
        return get() - w

    def evaluate(w):
        put(w)
        with torch.no_grad():
            acc = (net(xte_t).argmax(1) == yte_t).double().mean().item()
            asr = (net(xbd).argmax(1) == TARGET).double().mean().item() if len(xbd) else float("nan")
        return acc, asr

    w = get()
    gen = torch.Generator().manual_seed(o.seed)
    # whole deltas per client, for --similarity and foolsgold only (100 x 1.2M doubles)
    keep_hist = o.similarity or o.rule == "foolsgold"
    hist = np.zeros((o.clients, len(w))) if keep_hist else None
    seen = np.zeros(o.clients, bool)
    recent = []                           # screened: the last 50 norms
    stats = {"rejected_attacker": 0, "rejected_honest": 0, "reversed": 0.0, "w_att": [], "w_hon": []}
    t0 = time.time()
    acc = asr = float("nan")
    for r in range(1, o.rounds + 1):
        pick = rng.choice(o.clients, K, replace=False)
        deltas = np.stack([train(w, int(k), gen) for k in pick])
        n = [len(cy[int(k)]) for k in pick]
        if keep_hist:
            hist[pick] += deltas
        seen[pick] = True
        keep = np.ones(K, bool)
        if o.rule in ("screened", "screened_vote"):
            for i, d in enumerate(deltas):
                norm = float(np.linalg.norm(d))
                if len(recent) >= 50 and norm > 3 * np.median(recent[-50:]):
                    keep[i] = False
                    stats["rejected_attacker" if pick[i] >= first_attacker else "rejected_honest"] += 1
                else:
                    recent.append(norm)
        d, nk = deltas[keep], [x for x, k in zip(n, keep) if k]
        if o.rule == "mean":
            step = rule_mean(d, nk)
        elif o.rule == "median":
            step = rule_median(d)
        elif o.rule == "trimmed_mean":
            step = rule_trimmed_mean(d)
        elif o.rule in ("norm_bounded_mean", "screened"):
            step = rule_norm_bounded_mean(d)
        elif o.rule in ("sign_vote", "screened_vote"):
            base = rule_mean(d, nk) if o.rule == "sign_vote" else rule_norm_bounded_mean(d)
            # fedmq's vote over the n updates that passed: |S| >= ceil(theta/10 x n)
            step = sign_vote(base, d, int(np.ceil(o.theta * len(d) / K - 1e-9)))
            stats["reversed"] += float((step != base).mean()) / o.rounds
        else:  # foolsgold over every client seen so far, output layer
            ids = np.where(seen)[0]
            wts = dict(zip(ids.tolist(), foolsgold_weights(np.stack([cut(h, "fc2") for h in hist[ids]]))))
            a = np.array([wts[int(k)] for k in pick])
            for k, x in zip(pick, a):
                stats["w_att" if k >= first_attacker else "w_hon"].append(float(x))
            step = (a[:, None] * d).sum(0) / a.sum() if a.sum() > 0 else np.zeros_like(w)
        w = w + step
        if r % o.eval_every == 0 or r == o.rounds:
            acc, asr = evaluate(w)
            line = "round %d t %.0f acc %.4f asr %.4f" % (r, time.time() - t0, acc, asr)
            if o.similarity:
                ids = np.where(seen)[0]
                att = ids >= first_attacker
                parts_ = []
                for l in ("conv1", "conv2", "fc1", "fc2"):
                    v = max_cosines(np.stack([cut(h, l) for h in hist[ids]]))
                    parts_.append("%s %.2f/%.2f auc %.2f" % (l, v[att].mean() if att.any() else float("nan"),
                                                             v[~att].mean(), auc(v[att].tolist(), v[~att].tolist())))
                line += " | max cosine attackers/honest: " + ", ".join(parts_)
            print(line, flush=True)
    extra = ""
    if o.rule in ("screened", "screened_vote"):
        extra = " rejected attacker %d honest %d" % (stats["rejected_attacker"], stats["rejected_honest"])
    if o.rule in ("sign_vote", "screened_vote"):
        extra += " theta %d reversed %.3f" % (o.theta, stats["reversed"])
    elif o.rule == "foolsgold":
        extra = " weight attackers %.3f honest %.3f" % (np.mean(stats["w_att"]) if stats["w_att"] else float("nan"),
                                                         np.mean(stats["w_hon"]))
    print("result rule %s attackers %d rounds %d seed %d acc %.4f asr %.4f%s"
          % (o.rule, o.attackers, o.rounds, o.seed, acc, asr, extra), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
