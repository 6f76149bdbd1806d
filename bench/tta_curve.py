#!/usr/bin/env python3
"""tta_curve.py: the accuracy curve of finished runs, from their evaluator metrics files.

    bench/tta_curve.py [--thresholds 0.75,0.80,0.85] [--window FROM:TO] RUN_DIR|FILE...

RUN_DIR is a `fedmq run` directory (its metrics.jsonl) or a metrics JSON-lines file itself.
Times are seconds from the first model's creation (version 0's "created"), so runs started
at different moments compare. Printed (markdown, one row per run):
  - the time (and version) of the first scored version at or above each threshold ("-" =
    never);
  - over the window [FROM, TO] s (default: the second half of the run): the mean, min and max
    test accuracy of the scorings created in it, and how many there were: an oscillating run
    shows as a low mean or a wide min-max, which a time to a threshold alone does not;
  - the last scoring's accuracy, and the last population scoring's worst client and 10th
    percentile (the population tail);
  - over the same window, the mean of the population scorings' worst client and of their
    10th percentiles, and how many there were: one population's worst client is one
    client's small held-out slice, too noisy alone to compare recipes by.
Used by bench/tta_sweep.sh's runs (TTA_OUT/<setting>-s<seed>/) to compare recipes on runs that
do not reach the target, and on the full length of runs given a target they never reach.
Standard library only.
"""
import argparse
import json
import os
import statistics
import sys


def load(path):
    """The metrics records of a run directory or file, in file order; ValueError if none."""
    f = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    recs = []
    with open(f, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}:{n}: not JSON: {e}") from None
            if "accuracy" in r and "created" in r and "version" in r:
                recs.append(r)
    if not recs:
        raise ValueError(f"{f}: no scored versions")
    return recs


def curve(recs, thresholds, window):
    """A dict of the figures above for one run's records."""
    t0 = min(r["created"] for r in recs)
    pts = [(r["created"] - t0, r["version"], r["accuracy"]) for r in recs]
    out = {"reach": []}
    for th in thresholds:
        hit = next(((t, v) for t, v, a in pts if a >= th), None)
        out["reach"].append(hit)
    end = max(t for t, _, _ in pts)
    lo, hi = window if window else (end / 2, end)
    inw = [a for t, _, a in pts if lo <= t <= hi]
    out["window"] = (lo, hi)
    out["win"] = (statistics.fmean(inw), min(inw), max(inw), len(inw)) if inw else None
    out["last"] = (pts[-1][1], pts[-1][2], pts[-1][0])
    pops = [r for r in recs if isinstance(r.get("population"), dict)]
    out["pop"] = ((pops[-1]["version"], pops[-1]["population"].get("min"),
                   pops[-1]["population"].get("p10")) if pops else None)
    tail = [(r["population"]["min"], r["population"]["p10"]) for r in pops
            if lo <= r["created"] - t0 <= hi and r["population"].get("min") is not None
            and r["population"].get("p10") is not None]
    out["poptail"] = ((statistics.fmean(w for w, _ in tail),
                       statistics.fmean(p for _, p in tail), len(tail)) if tail else None)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--thresholds", default="0.75,0.80,0.85")
    ap.add_argument("--window", help="FROM:TO seconds (default: the run's second half)")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    try:
        ths = [float(x) for x in a.thresholds.split(",")]
        win = tuple(float(x) for x in a.window.split(":")) if a.window else None
        if win is not None and (len(win) != 2 or win[0] > win[1]):
            raise ValueError("--window wants FROM:TO with FROM <= TO")
    except ValueError as e:
        print(f"tta_curve: {e}", file=sys.stderr)
        return 2
    head = ["run"] + [f"to {t:.2f} s (v)" for t in ths]
    head += ["window (s)", "mean", "min", "max", "scorings", "last acc (v, s)",
             "last pop worst / p10 (v)", "window pops: worst / p10 (n)"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    rc = 0
    for path in a.runs:
        try:
            c = curve(load(path), ths, win)
        except (OSError, ValueError) as e:
            print(f"tta_curve: {e}", file=sys.stderr)
            rc = 1
            continue
        row = [os.path.basename(os.path.normpath(path))]
        row += [f"{h[0]:.1f} (v{h[1]})" if h else "-" for h in c["reach"]]
        row.append(f"{c['window'][0]:.0f}-{c['window'][1]:.0f}")
        if c["win"]:
            row += [f"{c['win'][0]:.4f}", f"{c['win'][1]:.4f}", f"{c['win'][2]:.4f}",
                    str(c["win"][3])]
        else:
            row += ["-", "-", "-", "0"]
        row.append(f"{c['last'][1]:.4f} (v{c['last'][0]}, {c['last'][2]:.0f})")
        p = c["pop"]
        row.append(f"{p[1]:.3f} / {p[2]:.3f} (v{p[0]})" if p and p[1] is not None else "-")
        t = c["poptail"]
        row.append(f"{t[0]:.3f} / {t[1]:.3f} ({t[2]})" if t else "-")
        print("| " + " | ".join(row) + " |")
    return rc


if __name__ == "__main__":
    sys.exit(main())
