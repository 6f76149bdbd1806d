#!/usr/bin/env python3
"""poison_table.py: the poisoning benchmark's results table from its run directories.

    python3 bench/poison_table.py OUT_DIR [--last N] [--clean-rule mean]

OUT_DIR is the directory bench/poison_compare.sh kept its runs in (POISON_OUT): one
subdirectory per run, named clean-RULE or ATTACK-ATTACKERS-RULE, each with summary.txt
(written by poison_compare.sh: final model's clean accuracy, backdoor success rate, model
version, attacker updates sent / acknowledged, honest updates sent) and metrics.jsonl (the
evaluator's feed: one record per evaluated version).

The final model of an asynchronous run is one draw from a noisy trajectory (non-IID clients,
a buffer at a time), so beside it this prints the mean test accuracy of the last N (default 5)
evaluated versions, and compares both to two clean runs: the same rule's (what the attack
costs under that defence) and the undefended federation's (--clean-rule, default mean: what
the attack and the defence cost together, the figure the target is stated against).
"""
import argparse
import json
import os
import re
import sys


def read_summary(path):
    try:
        with open(path) as f:
            parts = f.read().split()
    except OSError:
        return None
    keys = ["acc", "asr", "version", "sent", "acked", "honest"]
    out = {}
    for k, v in zip(keys, parts):
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = None
    return out


def last_mean(path, n):
    accs = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if "accuracy" in rec and "version" in rec:
                    accs.append((rec["version"], rec["accuracy"]))
    except (OSError, ValueError):
        return None, 0
    accs.sort()
    tail = [a for _, a in accs[-n:]]
    return (sum(tail) / len(tail) if tail else None), len(accs)


def fmt(x, spec="{:.4f}"):
    return "-" if x is None else spec.format(x)


def delta(a, b):
    return "-" if a is None or b is None else "{:+.1f}".format(100 * (a - b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--last", type=int, default=5)
    ap.add_argument("--clean-rule", default="mean")
    args = ap.parse_args()
    runs = {}
    for name in sorted(os.listdir(args.out_dir)):
        d = os.path.join(args.out_dir, name)
        m = re.fullmatch(r"clean-(\w+)", name) or re.fullmatch(r"(\w+)-(\d+)-(\w+)", name)
        if not m or not os.path.isdir(d):
            continue
        attack, a, rule = ("none", 0, m.group(1)) if name.startswith("clean-") else (
            m.group(1), int(m.group(2)), m.group(3))
        s = read_summary(os.path.join(d, "summary.txt"))
        if s is None:
            print(f"{name}: no summary.txt (run not finished?)", file=sys.stderr)
            continue
        s["last"], s["nevals"] = last_mean(os.path.join(d, "metrics.jsonl"), args.last)
        runs[(attack, a, rule)] = s
    if not runs:
        sys.exit(f"{args.out_dir}: no run directories with a summary.txt")
    ref = runs.get(("none", 0, args.clean_rule))
    order = {"none": 0, "signflip": 1, "noise": 2, "backdoor": 3}
    print(f"| attack | attackers | rule | final accuracy | vs same rule clean | vs clean "
          f"{args.clean_rule} | mean of last {args.last} evaluations | vs clean {args.clean_rule}"
          f" (last {args.last}) | backdoor ASR | model version | attacker updates sent / acked |"
          f" honest updates sent |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(runs, key=lambda k: (order.get(k[0], 9), k[1], k[2])):
        attack, a, rule = key
        s = runs[key]
        same = runs.get(("none", 0, rule))
        asr = fmt(s["asr"]) if attack == "backdoor" else "-"
        sent = "-" if s["sent"] is None else f"{int(s['sent'])} / {fmt(s['acked'], '{:.0f}')}"
        print(f"| {attack} | {a} | {rule} | {fmt(s['acc'])} | "
              f"{delta(s['acc'], same and same['acc'])} | {delta(s['acc'], ref and ref['acc'])} | "
              f"{fmt(s['last'])} | {delta(s['last'], ref and ref['last'])} | {asr} | "
              f"{fmt(s['version'], '{:.0f}')} | {sent} | {fmt(s['honest'], '{:.0f}')} |")


if __name__ == "__main__":
    main()
