#!/usr/bin/env python3
"""fedmq_chaos: a federation across network namespaces, with faults on a seeded schedule,
and a check of every update's history afterwards (issue 10; docs/RELIABILITY.md).

Hosts are network namespaces joined by veth pairs to a bridge (in a namespace of its own):
  <p>srv  10.77.0.1   broker, aggregator, evaluator (the server host of docs/OPERATIONS.md)
  <p>t1   10.77.0.11  trainer pools (the first half of them)
  <p>t2   10.77.0.12  trainer pools (the second half)
Faults (each optional, times in seconds from the start, on a schedule drawn from --seed):
  --kill-aggregator N   N kill -9s of the aggregator, spread evenly over the run (or the
                        first --kill-span seconds), each restarted after --restart-after s
  --kill-broker N       the same for the broker
  --kill-evaluator N    the same for the evaluator
  --churn F             every --churn-period seconds, kill -9 a fraction F of the trainer
                        pools (at random) and restart them after --restart-after seconds
  --loss P@A-B          drop P percent of the packets entering every host from A to B
                        (nftables: numgen random mod 100 < P drop)
  --partition H@A+D     drop everything in and out of host H (t1 or t2) from A for D s
Every daemon writes its history file ([aggregator] / [trainer] history_file): which
updates each trainer sent and how each was answered, which updates each aggregator version
holds. The check, afterwards:
  - no update is in two committed versions (applied at most once);
  - every update acknowledged "applied" is in exactly one committed version: the one its
    ACK named, or an earlier one (a resend whose first ACK was lost is acknowledged again
    with the version current then);
  - every committed update was sent by a trainer;
  - no refused update (lost, dropped, a rejection reason) is in a committed version;
  - every update a trainer sent was answered, unless that trainer incarnation was killed
    (it is gone) or it was still in flight when its trainer stopped at the end (bounded).
A version line of the aggregator's history counts as committed unless a later "start"
line of the aggregator resumes below it (it was written before its checkpoint).

Output: one line of JSON (the result) on stdout, progress on stderr; exit 0 if the checks
pass (and --target was reached, if given), 1 if not, 77 if namespaces are unavailable.
Needs root (ip netns, nft). Run from the build directory or give --bin.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77


def log(msg):
    print("[%7.1f] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()


def sh(*cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


# ---- the network --------------------------------------------------------------------------

class Net:
    """Namespaces <p>sw (bridge), <p>srv, <p>t1, <p>t2; nftables table "fmq" in each host."""

    HOSTS = {"srv": "10.77.0.1", "t1": "10.77.0.11", "t2": "10.77.0.12"}

    def __init__(self, prefix):
        self.p = prefix
        self.made = []

    def ns(self, host):
        return self.p + host

    def up(self):
        sw = self.ns("sw")
        sh("ip", "netns", "add", sw)
        self.made.append(sw)
        sh("ip", "netns", "exec", sw, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", sw, "ip", "link", "set", "br0", "up")
        for i, (host, addr) in enumerate(self.HOSTS.items()):
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            a, b = "%sa%d" % (self.p, i), "%sb%d" % (self.p, i)
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", ns)
            sh("ip", "link", "set", b, "netns", sw)
            sh("ip", "netns", "exec", sw, "ip", "link", "set", b, "master", "br0")
            sh("ip", "netns", "exec", sw, "ip", "link", "set", b, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr + "/24", "dev", a)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", a, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            rules = ("add table inet fmq\n"
                     "add chain inet fmq input { type filter hook input priority 0; }\n"
                     "add chain inet fmq output { type filter hook output priority 0; }\n")
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules,
                               text=True, stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError("nft in %s: %s" % (ns, r.stderr.strip()))

    def nft(self, host, *rule):
        sh("ip", "netns", "exec", self.ns(host), "nft", *rule)

    def loss(self, pct):
        for host in self.HOSTS:
            self.nft(host, "add", "rule", "inet", "fmq", "input", "iifname", "!=", "lo",
                     "numgen", "random", "mod", "100", "<", str(pct), "drop")

    def partition(self, host):
        self.nft(host, "add", "rule", "inet", "fmq", "input", "iifname", "!=", "lo", "drop")
        self.nft(host, "add", "rule", "inet", "fmq", "output", "oifname", "!=", "lo", "drop")

    def heal(self, hosts=None):
        for host in hosts or self.HOSTS:
            self.nft(host, "flush", "chain", "inet", "fmq", "input")
            self.nft(host, "flush", "chain", "inet", "fmq", "output")

    def down(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def netns_available():
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("nft"):
        return "ip or nft missing (apt-get install iproute2 nftables)"
    name = "fmqprobe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        return "ip netns add: " + r.stderr.strip()
    r = subprocess.run(["ip", "netns", "exec", name, "nft", "add", "table", "inet", "t"],
                       stderr=subprocess.PIPE, text=True)
    subprocess.run(["ip", "netns", "del", name])
    if r.returncode != 0:
        return "nftables in a namespace: " + r.stderr.strip()
    return None


# ---- the daemons --------------------------------------------------------------------------

class Daemon:
    def __init__(self, name, ns, argv, logpath):
        self.name, self.ns, self.argv, self.logpath = name, ns, argv, logpath
        self.proc = None
        self.kills = 0
        self.starts = 0

    def start(self):
        logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns] + self.argv, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.starts += 1

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def stop(self, timeout=30):
        """SIGTERM, wait; the exit code (None if it had to be killed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill is possible at the very end only
    except FileNotFoundError:
        pass
    return out


# ---- the history check --------------------------------------------------------------------

def check_history(agg_hist, trainer_hists, inflight_max):
    """The checks of the module docstring; returns (ok, report dict)."""
    committed = {}  # version -> list of ids
    for line in read_jsonl(agg_hist):
        if line.get("t") == "start":
            r = line["mv"]
            for v in [v for v in committed if v > r]:
                del committed[v]
        elif line.get("t") == "version":
            committed[line["mv"]] = line.get("ids", [])
    where = {}
    twice = []
    for v, ids in committed.items():
        for i in ids:
            if i in where:
                twice.append(i)
            where[i] = v
    sent, answer = {}, {}
    lost_with_trainer, inflight_end, unanswered = 0, 0, []
    refused = {}
    for path in trainer_hists:
        inc = None
        pending = {}
        incs = []
        for line in read_jsonl(path):
            t = line.get("t")
            if t == "start":
                if inc is not None:
                    incs.append((inc, pending, False))
                inc, pending = line.get("pid"), {}
            elif t == "sent":
                sent[line["id"]] = path
                pending[line["id"]] = True
            elif t == "ack":
                answer[line["id"]] = (line["status"], line["mv"])
                pending.pop(line["id"], None)
                if line["status"] != "applied":
                    refused[line["status"]] = refused.get(line["status"], 0) + 1
            elif t == "stop":
                incs.append((inc, pending, True))
                inc, pending = None, {}
        if inc is not None:
            incs.append((inc, pending, False))  # no "stop": killed (or still running)
        for _, pend, clean in incs:
            if clean:
                inflight_end += len(pend)
                if len(pend) > inflight_max:
                    unanswered.extend(list(pend)[:5])
            else:
                lost_with_trainer += len(pend)
    # "applied" names the version whose commit made it durable, or (a resend of an update
    # whose first ACK was lost) a later one, which contains it too
    acked_not_committed = [i for i, (s, v) in answer.items()
                           if s == "applied" and (i not in where or where[i] > v)]
    refused_committed = [i for i, (s, v) in answer.items() if s != "applied" and i in where]
    never_sent = [i for i in where if i not in sent]
    applied_acked = sum(1 for s, _ in answer.values() if s == "applied")
    report = {
        "versions_committed": len(committed),
        "updates_sent": len(sent),
        "updates_committed": len(where),
        "acked_applied": applied_acked,
        "refused": refused,
        "applied_twice": len(twice),
        "acked_not_committed": len(acked_not_committed),
        "refused_but_committed": len(refused_committed),
        "committed_never_sent": len(never_sent),
        "unacked_of_killed_trainers": lost_with_trainer,
        "unacked_at_clean_stop": inflight_end,
        "unanswered_beyond_inflight": len(unanswered),
    }
    ok = not (twice or acked_not_committed or refused_committed or never_sent or unanswered)
    return ok, report


# ---- the run ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=".", help="directory with the fedmq-* binaries")
    ap.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--out", help="run directory (kept); default a temp dir, removed")
    ap.add_argument("--config", help="base config (default SRC/configs/fedmq.conf)")
    ap.add_argument("--set", action="append", default=[], help="section.key=value")
    ap.add_argument("--pools", type=int, default=2, help="trainer pools (half per host)")
    ap.add_argument("--duration", type=float, default=0,
                    help="run this long (s); 0 = until --target or --time-limit")
    ap.add_argument("--target", type=float, default=0, help="accuracy to reach (stop there)")
    ap.add_argument("--time-limit", type=float, default=900)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-aggregator", type=int, default=0)
    ap.add_argument("--kill-broker", type=int, default=0)
    ap.add_argument("--kill-evaluator", type=int, default=0)
    ap.add_argument("--restart-after", type=float, default=2.0)
    ap.add_argument("--kill-span", type=float, default=0,
                    help="spread the kills over the first S seconds (default: the whole run)")
    ap.add_argument("--churn", type=float, default=0)
    ap.add_argument("--churn-period", type=float, default=15.0)
    ap.add_argument("--loss", help="P@A-B")
    ap.add_argument("--partition", help="HOST@A+D")
    ap.add_argument("--prefix", default="fq%d" % (os.getpid() % 10000))
    a = ap.parse_args()

    why = netns_available()
    if why:
        print(json.dumps({"skipped": why}))
        print("SKIP: network namespaces unavailable: " + why, file=sys.stderr)
        return SKIP
    rng = random.Random(a.seed)
    tmp = None
    out = a.out
    if not out:
        tmp = out = tempfile.mkdtemp(prefix="fedmq-chaos-")
    os.makedirs(out, exist_ok=True)
    binp = os.path.abspath(a.bin)
    conf = a.config or os.path.join(a.src, "configs", "fedmq.conf")
    srv = Net.HOSTS["srv"]
    ep = {"model_pub": 5560, "snapshot": 5561, "updates": 5562, "aggregator_models": 5563,
          "metrics_pub": 5564, "acks": 5565}
    common = ["--config", conf]
    for k, port in ep.items():
        common += ["--set", "endpoints.%s=tcp://%s:%d" % (k, srv, port)]
    common += ["--set", "aggregator.checkpoint_dir=%s/ckpt" % out,
               "--set", "evaluator.metrics_file=%s/metrics.jsonl" % out,
               "--set", "aggregator.history_file=%s/aggregator-history.jsonl" % out,
               "--set", "federation.time_limit_s=0", "--set", "federation.target_accuracy=0"]
    for s in a.set:
        common += ["--set", s]
    ncl = int(next((s.split("=", 1)[1] for s in a.set
                    if s.startswith("federation.num_clients=")), "100"))
    common += ["--set", "trainer.clients=0-%d" % (ncl - 1)]  # every daemon checks the range
    net = Net(a.prefix)
    daemons = {}
    result = {"seed": a.seed, "out": out}
    ok = False
    try:
        net.up()
        log("namespaces up: %s" % ", ".join(net.made))
        d = lambda name, host, extra: Daemon(name, net.ns(host),
                                            [os.path.join(binp, "fedmq-" + name.split("-")[0])]
                                            + common + extra,
                                            os.path.join(out, name + ".log"))
        daemons["broker"] = d("broker", "srv", [])
        daemons["aggregator"] = d("aggregator", "srv", [])
        daemons["evaluator"] = d("evaluator", "srv", [])
        # the clients, split over the pools
        pools = []
        for i in range(a.pools):
            lo, hi = ncl * i // a.pools, ncl * (i + 1) // a.pools - 1
            host = "t1" if i < (a.pools + 1) // 2 else "t2"
            name = "trainer-%d" % i
            daemons[name] = d(name, host, [
                "--set", "trainer.clients=%d-%d" % (lo, hi), "--set", "trainer.workers=1",
                "--set", "trainer.metrics_addr=127.0.0.1:%d" % (9600 + i),
                "--set", "trainer.history_file=%s/%s-history.jsonl" % (out, name)])
            pools.append(name)
        for name in ["broker", "aggregator", "evaluator"] + pools:
            daemons[name].start()
        log("started: %s" % ", ".join(daemons))

        # the schedule: (time, action, arg)
        horizon = a.duration or a.time_limit
        span = a.kill_span or horizon
        events = []
        for what, n in (("aggregator", a.kill_aggregator), ("broker", a.kill_broker),
                        ("evaluator", a.kill_evaluator)):
            for k in range(n):  # evenly spread, jittered by the seed
                t = span * (k + 1) / (n + 1) + rng.uniform(-0.2, 0.2) * span / (n + 1)
                events.append((t, "kill", what))
        if a.churn > 0:
            t = a.churn_period
            while t < horizon:
                k = max(1, round(a.churn * len(pools)))
                for name in rng.sample(pools, k):
                    events.append((t, "kill", name))
                t += a.churn_period
        if a.loss:
            pct, span = a.loss.split("@")
            t0, t1 = (float(x) for x in span.split("-"))
            events += [(t0, "loss", int(pct)), (t1, "heal", None)]
        if a.partition:
            host, span = a.partition.split("@")
            t0, dur = (float(x) for x in span.split("+"))
            events += [(t0, "partition", host), (t0 + dur, "heal", host)]
        events.sort(key=lambda e: e[0])
        restarts = []  # (time, daemon)
        start = time.monotonic()
        acc, best, version = None, None, 0
        reached_at = None
        metrics = os.path.join(out, "metrics.jsonl")
        while True:
            now = time.monotonic() - start
            while events and events[0][0] <= now:
                _, act, arg = events.pop(0)
                if act == "kill" and daemons[arg].alive():
                    daemons[arg].kill9()
                    restarts.append((now + a.restart_after, arg))
                    log("kill -9 %s" % arg)
                elif act == "loss":
                    net.loss(arg)
                    log("loss %d%% on every host" % arg)
                elif act == "partition":
                    net.partition(arg)
                    log("partition %s" % arg)
                elif act == "heal":
                    net.heal([arg] if arg else None)
                    log("healed %s" % (arg or "all"))
            for r in [r for r in restarts if r[0] <= now]:
                restarts.remove(r)
                daemons[r[1]].start()
                log("restarted %s" % r[1])
            recs = read_jsonl(metrics)
            if recs:
                acc, version = recs[-1]["accuracy"], recs[-1]["version"]
                best = max(x["accuracy"] for x in recs)
                if a.target and reached_at is None and best >= a.target:
                    reached_at = now
                    log("target %.3f reached at version %d" % (a.target, version))
            dead = [n for n, x in daemons.items()
                    if not x.alive() and n not in [r[1] for r in restarts]]
            if dead:
                raise RuntimeError("died on their own: %s (see %s)" % (", ".join(dead), out))
            if a.duration and now >= a.duration:
                break
            if not a.duration and (reached_at is not None or now >= a.time_limit):
                break
            time.sleep(0.2)
        net.heal()
        # a clean end: trainers first (they say what is still unacknowledged), then the
        # aggregator (its final checkpoint), then the rest
        codes = {}
        for name in pools + ["aggregator", "evaluator", "broker"]:
            codes[name] = daemons[name].stop()
        recs = read_jsonl(metrics)
        if recs:
            acc, version = recs[-1]["accuracy"], recs[-1]["version"]
            best = max(x["accuracy"] for x in recs)
        hist_ok, report = check_history(
            os.path.join(out, "aggregator-history.jsonl"),
            [os.path.join(out, p + "-history.jsonl") for p in pools],
            inflight_max=64)
        result.update({
            "seconds": round(time.monotonic() - start, 1),
            "final_version": version, "final_accuracy": acc, "best_accuracy": best,
            "target": a.target or None,
            "target_reached_s": round(reached_at, 1) if reached_at is not None else None,
            "kills": {n: x.kills for n, x in daemons.items() if x.kills},
            "exit_codes": codes, "history": report, "history_ok": hist_ok})
        bad_exit = [n for n, c in codes.items() if c not in (0,)]
        ok = hist_ok and not bad_exit and (not a.target or reached_at is not None)
        result["ok"] = ok
        if bad_exit:
            result["bad_exit"] = bad_exit
    except Exception as e:  # one line, then clean up
        result["error"] = str(e)
        log("error: %s" % e)
    finally:
        for x in daemons.values():
            if x.alive():
                x.kill9()
        net.down()
        print(json.dumps(result, sort_keys=True), flush=True)
        if tmp and result.get("ok"):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
