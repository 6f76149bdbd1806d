#!/usr/bin/python3
"""Independent arbitrary-precision reference for the RDP accountant of fedmq (issue 12).

What it computes
  The Renyi differential privacy (RDP) of the Poisson-subsampled Gaussian mechanism with
  sampling rate q and noise multiplier sigma (sensitivity 1), at order alpha > 1:

      A_alpha  = E_{z ~ mu0} [ (mu(z) / mu0(z))^alpha ]
               = E_{z ~ N(0, sigma^2)} [ ((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha ]
      RDP(alpha) of one step = log(A_alpha) / (alpha - 1)

  with mu0 = N(0, sigma^2), mu = (1 - q) N(0, sigma^2) + q N(1, sigma^2).  q = 1 gives
  alpha / (2 sigma^2) exactly, q = 0 gives 0.  T identical steps cost T * RDP(alpha), different
  steps add.  (eps, delta) follows by minimising over the order set either

      classic  (Mironov 2017, Prop. 3):   eps = RDP - log(delta) / (alpha - 1)
      improved (Balle et al. 2020, Thm 21, as Opacus' get_privacy_spent):
               eps = RDP - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) / alpha)

  over Opacus' RDPAccountant DEFAULT_ALPHAS ([1 + x / 10.0 for x in range(1, 100)] +
  list(range(12, 64)), each double taken exactly).

How, and why it is independent of the C accountant (shared/fl/fm_rdp.c)
  The C code (like Opacus and TF Privacy) evaluates log A_alpha with the log-space series of
  Mironov, Talwar & Zhang 2019 (a binomial sum for integer alpha, two erfc-weighted series for
  fractional alpha).  This file never uses those series.  It integrates the definition above
  numerically with mpmath.quad at mp.dps = 50, in the form

      A_alpha - 1 = integral mu0(z) * (r(z)^alpha - 1 - alpha * (r(z) - 1)) dz,   r = mu / mu0,

  which is the same integral minus alpha * E_mu0[r - 1] = 0 (a likelihood ratio has mean 1).
  The integrand is then non-negative (t^alpha is convex), so A_alpha - 1, which is as small as
  1e-18 for q = 1e-6, comes out without cancellation.  The quadrature (Gauss-Legendre) runs on
  short pieces covering where the integrand actually lives, found by a scan (see _segments).
  Self-checks, each to 1e-20 relative on log(A_alpha), raising ArithmeticError otherwise:
  - integer alpha: the exact finite sum
        A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2))
    (the expectation of the binomial expansion, each term a Gaussian moment), at dps 100,
    must equal the integral; the fixture then carries the sum;
  - fractional alpha: tanh-sinh on pieces half as long must equal Gauss-Legendre;
  - q = 1: the integral must equal alpha (alpha - 1) / (2 sigma^2);
  - per (q, sigma), --write also asserts that RDP(alpha) is non-decreasing and log A_alpha is
    convex in alpha (true of any Renyi divergence).

CLI
  rdp_reference.py --write FILE          generate the fixture (tests/fixtures/rdp_reference.tsv)
  rdp_reference.py --check FILE [--sample N|all]
                                         verify a fixture: see --help
  rdp_reference.py --point Q SIGMA ALPHA print one RDP value (and the integer-order sum)
Run with nice -n 19 when the machine is shared: it is CPU-bound.
"""
import argparse
import datetime
import math
import os
import random
import sys
import time

import mpmath
from mpmath import mp, mpf

DPS = 50  # working precision of the integrals
SUM_DPS = 100  # working precision of the exact integer-order sum
SCAN_DPS = 20  # precision of the scan that locates the integrand's mass
INT_TOL = mpf("1e-20")  # integral vs exact sum, relative, on log(A_alpha)
CHECK_TOL = 1e-12  # --check: fixture vs recomputation, relative
DEFAULT_SAMPLE = 40  # --check default: rdp rows recomputed from the integral
SAMPLE_SEED = 20240612

DEFAULT_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
RDP_QS = [1e-6, 1e-3, 1e-2, 0.04, 0.1, 1.0]
RDP_SIGMAS = [0.3, 0.5, 0.8, 1.1, 1.5, 2.0, 4.0, 100.0]
EPS_QS = [1e-3, 1e-2, 0.1, 1.0]
EPS_SIGMAS = [0.5, 0.8, 1.1, 2.0, 4.0]
EPS_STEPS = [1, 100, 1000, 10000]
DELTA = 1e-5
CONVERSIONS = ("classic", "improved")
# Published points: (q, sigma, steps, delta, conversion, value, source)
OPACUS_POINT = (0.04, 1.5, 2250, 1e-5, "improved", "7.32911117143",
                "Opacus tests/accountants_test.py test_rdp_accountant (assertAlmostEqual, 7 places)")
ABADI_POINT = (0.01, 4.0, 10000, 1e-5, "1.26",
               "Abadi et al. 2016, sec. 3.1: moments accountant, integer lambda <= 32, classic")
HETERO = ((0.01, 1.1, 1000), (0.1, 2.0, 200))


def orders():
    """The order set as (float, mpf) pairs, the mpf equal to the double exactly."""
    return [(float(a), mpf(float(a))) for a in DEFAULT_ALPHAS]


def is_integer_order(a):
    return float(a).is_integer()


# ---------------------------------------------------------------------------------------------
# The integral

def _integrand(q, s2, a, scale=1):
    """z -> mu0(z) * (r^a - 1 - a (r - 1)) / scale, r = 1 - q + q exp((2z - 1) / (2 s2))."""
    norm = 1 / (mpmath.sqrt(2 * mpmath.pi * s2) * scale)

    def f(z):
        u = q * mpmath.expm1((2 * z - 1) / (2 * s2))  # r - 1, > -1
        g = mpmath.expm1(a * mpmath.log1p(u)) - a * u
        return norm * mpmath.exp(-z * z / (2 * s2)) * g

    return f


def _segments(q, sigma, a, split=1):
    """Split points for the quadrature: the runs of a scan where the integrand is non-negligible.

    Facts used: the integrand is >= 0; outside [0, a] it falls at least like a Gaussian of
    standard deviation sigma (log of mu0 r^a has slope <= (a - z) / sigma^2 for z > a and
    >= -z / sigma^2 for z < 0), so nothing lives outside [-16 sigma, a + 16 sigma] at the
    1e-55 level; inside, it is smooth on the scale sigma (a mixture of N(k, sigma^2) bumps), so
    a scan with step sigma / 2 finds every run above max * 1e-70.  Also returns that max: the
    integrand is divided by it, because mpmath.quad's stopping test is on the absolute error.  Each run is cut into pieces
    of length min(2 sigma, pi sigma^2): pi sigma^2 is the distance of the nearest complex
    singularity of r^a (where r = 0) from the real axis, which limits tanh-sinh on long pieces.
    """
    with mp.workdps(SCAN_DPS):
        f = _integrand(mpf(q), mpf(sigma) ** 2, mpf(a))
        step = sigma / 2.0
        lo, hi = -16.0 * sigma, float(a) + 16.0 * sigma
        n = int(math.ceil((hi - lo) / step))
        grid = [lo + i * step for i in range(n + 1)]
        vals = [f(mpf(z)) for z in grid]
        top = max(vals)
        thr = top * mpf("1e-70")
    runs = []
    i = 0
    while i <= n:
        if vals[i] > thr:
            j = i
            while j + 1 <= n and vals[j + 1] > thr:
                j += 1
            a0, b0 = grid[max(i - 1, 0)], grid[min(j + 1, n)]
            if runs and a0 <= runs[-1][1]:
                runs[-1] = (runs[-1][0], b0)
            else:
                runs.append((a0, b0))
            i = j + 1
        else:
            i += 1
    piece = min(2.0 * sigma, math.pi * sigma * sigma) / split
    segs = []
    for a0, b0 in runs:
        k = max(1, int(math.ceil((b0 - a0) / piece)))
        segs.append([mpf(a0) + (mpf(b0) - mpf(a0)) * i / k for i in range(k + 1)])
    return segs, top


def log_a_integral(q, sigma, a, method="gauss-legendre", split=1):
    """log A_alpha by quadrature of the definition (mpf, at DPS).  q, sigma, a: Python floats.
    method: mpmath.quad's rule; split: pieces per piece of _segments (for a second opinion)."""
    if q == 0:
        return mpf(0)
    with mp.workdps(DPS):
        segs, top = _segments(q, sigma, a, split)
        f = _integrand(mpf(q), mpf(sigma) ** 2, mpf(a), top)
        total, err = mpf(0), mpf(0)
        for pts in segs:
            for lo, hi in zip(pts[:-1], pts[1:]):
                # Each piece is mapped onto [-1, 1]: mpmath caches the nodes of every interval it
                # sees (memory grew by gigabytes over the grid); [-1, 1] is always the same one.
                mid, half = (lo + hi) / 2, (hi - lo) / 2
                v, e = mpmath.quad(lambda t: f(mid + half * t), [-1, 1], method=method,
                                   error=True, maxdegree=10)
                total += v * half
                err += e * half
        if not total > 0 or err > total * mpf("1e-30"):
            raise ArithmeticError("quad did not converge: q=%r sigma=%r alpha=%r value=%s err=%s"
                                  % (q, sigma, a, mpmath.nstr(total, 5), mpmath.nstr(err, 5)))
        return mpmath.log1p(total * top)


def log_a_sum(q, sigma, a):
    """log A_alpha by the exact binomial sum; integer a only (mpf, at SUM_DPS)."""
    n = int(a)
    assert n == a and n >= 2
    with mp.workdps(SUM_DPS):
        q, s2 = mpf(q), mpf(sigma) ** 2
        tot = mpf(0)
        for k in range(n + 1):
            tot += mpmath.binomial(n, k) * (1 - q) ** (n - k) * q ** k * mpmath.exp(
                mpf(k * k - k) / (2 * s2))
        return mpmath.log(tot)


def _agree(what, q, sigma, a, x, y):
    if abs(x - y) > INT_TOL * abs(y):
        raise ArithmeticError("%s disagree: q=%r sigma=%r alpha=%r: %s vs %s"
                              % (what, q, sigma, a, mpmath.nstr(x, 25), mpmath.nstr(y, 25)))


def rdp_one(q, sigma, a, selfcheck=True):
    """RDP of one step at order a (mpf); q, sigma, a: Python floats.

    q = 1: a / (2 sigma^2).  Integer a: the exact sum.  Fractional a: the integral (Gauss-Legendre
    on the pieces of _segments).  With selfcheck, a second computation must agree to INT_TOL
    relative on log A_alpha, else ArithmeticError: the integral for q = 1 and integer a; for
    fractional a, tanh-sinh on pieces half as long (other nodes, other split points)."""
    am1 = mpf(a) - 1
    if q == 0:
        return mpf(0)
    if q == 1:
        la = mpf(a) * am1 / (2 * mpf(sigma) ** 2)
        if selfcheck:
            _agree("integral and closed form", q, sigma, a, log_a_integral(q, sigma, a), la)
    elif is_integer_order(a):
        la = log_a_sum(q, sigma, a)
        if selfcheck:
            _agree("integral and exact sum", q, sigma, a, log_a_integral(q, sigma, a), la)
    else:
        la = log_a_integral(q, sigma, a)
        if selfcheck:
            _agree("tanh-sinh and Gauss-Legendre", q, sigma, a,
                   log_a_integral(q, sigma, a, "tanh-sinh", 2), la)
    return la / am1


# ---------------------------------------------------------------------------------------------
# Conversions

def eps_at(rdp_total, a, delta, conversion):
    a, ld = mpf(a), mpmath.log(mpf(delta))
    if rdp_total == mpmath.inf:
        return mpmath.inf
    if conversion == "classic":
        return rdp_total - ld / (a - 1)
    if conversion == "improved":
        return rdp_total - (ld + mpmath.log(a)) / (a - 1) + mpmath.log((a - 1) / a)
    raise ValueError(conversion)


def eps_min(rdp_total_by_order, delta, conversion):
    """(epsilon, best order as float) minimised over the order set; the first order on a tie."""
    best = None
    for af, am in orders():
        e = eps_at(rdp_total_by_order[af], am, delta, conversion)
        if best is None or e < best[0]:
            best = (e, af)
    return best


# ---------------------------------------------------------------------------------------------
# Fixture

def fmt(x):
    if x == mpmath.inf:
        return "inf"
    return mpmath.nstr(x, 20)


def rdp_curve(q, sigma, check=True):
    """{order float: RDP of one step (mpf)} over the default orders, with the curve checks."""
    cur = {af: rdp_one(q, sigma, af) for af, _ in orders()}
    if check:
        check_curve(q, sigma, cur)
    return cur


def check_curve(q, sigma, cur):
    """RDP non-decreasing in alpha; log A_alpha = (alpha - 1) RDP convex in alpha."""
    os_ = orders()
    slack = mpf("1e-30")
    for i in range(1, len(os_)):
        if cur[os_[i][0]] < cur[os_[i - 1][0]] * (1 - slack):
            raise ArithmeticError("RDP decreases at q=%r sigma=%r alpha=%r" % (q, sigma, os_[i][0]))
    la = [(am, (am - 1) * cur[af]) for af, am in os_]
    for i in range(1, len(la) - 1):
        (x0, y0), (x1, y1), (x2, y2) = la[i - 1], la[i], la[i + 1]
        d = (y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)
        if d < -slack * (abs(y2) + abs(y1) + abs(y0) + mpf("1e-40")):
            raise ArithmeticError("log A not convex at q=%r sigma=%r alpha=%r" % (q, sigma, float(x1)))


def eps_rows(curves):
    """The eps and eps2 rows (lists of str) from {(q, sigma): curve}."""
    rows = []
    pts = [(q, s, t) for q in EPS_QS for s in EPS_SIGMAS for t in EPS_STEPS]
    pts += [(OPACUS_POINT[0], OPACUS_POINT[1], OPACUS_POINT[2]),
            (ABADI_POINT[0], ABADI_POINT[1], ABADI_POINT[2])]
    for q, s, t in pts:
        tot = {af: t * v for af, v in curves[(q, s)].items()}
        for conv in CONVERSIONS:
            e, best = eps_min(tot, DELTA, conv)
            rows.append(["eps", repr(q), repr(s), str(t), repr(DELTA), conv, fmt(e), repr(best)])
    (q1, s1, t1), (q2, s2, t2) = HETERO
    tot = {af: t1 * curves[(q1, s1)][af] + t2 * curves[(q2, s2)][af] for af, _ in orders()}
    for conv in CONVERSIONS:
        e, best = eps_min(tot, DELTA, conv)
        rows.append(["eps2", repr(q1), repr(s1), str(t1), repr(q2), repr(s2), str(t2),
                     repr(DELTA), conv, fmt(e), repr(best)])
    return rows


def published_comments(curves):
    out = []
    q, s, t, d, conv, pub, src = OPACUS_POINT
    tot = {af: t * v for af, v in curves[(q, s)].items()}
    e, best = eps_min(tot, d, conv)
    ok = abs(e - mpf(pub)) < mpf("0.5e-7")
    out.append("# published: q=%r sigma=%r steps=%d delta=%r %s: reference %s (alpha %r); %s: %s;"
               % (q, s, t, d, conv, mpmath.nstr(e, 15), best, src, pub))
    last = abs(e - mpf(pub)) < mpf("1e-10")
    out.append("#   %s to the 7 places assertAlmostEqual checks; reference - published = %s (%s "
               "relative)%s"
               % ("agrees" if ok else "DISAGREES", mpmath.nstr(e - mpf(pub), 3),
                  mpmath.nstr((e - mpf(pub)) / mpf(pub), 2),
                  ", i.e. at the last of the 11 decimals published" if last else ""))
    q, s, t, d, pub, src = ABADI_POINT
    tot = {af: t * v for af, v in curves[(q, s)].items()}
    ec, bc = eps_min(tot, d, "classic")
    ei, bi = eps_min(tot, d, "improved")
    # The moments accountant's own order set: integer lambda = alpha - 1 in 1..32, classic.
    ma = min((t * rdp_one(q, s, float(lam + 1), selfcheck=False) - mpmath.log(mpf(d)) / lam, lam)
             for lam in range(1, 33))
    out.append("# published: q=%r sigma=%r steps=%d delta=%r: %s: eps ~ %s;" % (q, s, t, d, src, pub))
    out.append("#   reference classic %s (alpha %r), improved %s (alpha %r);"
               % (mpmath.nstr(ec, 12), bc, mpmath.nstr(ei, 12), bi))
    out.append("#   reference classic over integer alpha 2..33 only (the moments accountant): %s "
               "(lambda %d): %s to the 2 decimals published"
               % (mpmath.nstr(ma[0], 12), ma[1],
                  "agrees" if abs(ma[0] - mpf(pub)) < mpf("0.005") else "does not agree"))
    return out, ok


def _load_partial(path, tag):
    """Curves finished by an earlier, interrupted --write (FILE.partial), if made the same way."""
    done = {}
    try:
        with open(path) as fh:
            if fh.readline().rstrip("\n") != tag:
                return {}, 0.0
            spent = 0.0
            for line in fh:
                f = line.rstrip("\n").split("\t")
                if f[0] == "curve" and len(f) == 4 + len(DEFAULT_ALPHAS):
                    done[(float(f[1]), float(f[2]))] = {
                        float(a): mpf(v) for a, v in zip(DEFAULT_ALPHAS, f[4:])}
                    spent += float(f[3])
    except FileNotFoundError:
        return {}, 0.0
    return done, spent


def _curve_job(qs):
    """Worker: one (q, sigma) curve as 40-digit strings (what FILE.partial keeps), and its time."""
    q, s = qs
    mp.dps = DPS
    t1 = time.time()
    cur = rdp_curve(q, s)
    return q, s, time.time() - t1, [mpmath.nstr(cur[af], 40) for af, _ in orders()]


def _curves_in_parallel(todo, jobs):
    """Yield _curve_job results for todo, in the order they finish, from jobs processes."""
    if jobs <= 1:
        for qs in todo:
            yield _curve_job(qs)
        return
    import multiprocessing
    with multiprocessing.Pool(jobs) as pool:
        for r in pool.imap_unordered(_curve_job, todo):
            yield r


def write_fixture(path, jobs=1):
    """Write the fixture.  Each finished (q, sigma) curve is also appended to FILE.partial (40
    digits), so an interrupted run resumes where it stopped; the file goes when all is written."""
    partial = path + ".partial"
    tag = "# rdp_reference partial: dps %d sum_dps %d tol %s orders %d" % (
        DPS, SUM_DPS, mpmath.nstr(INT_TOL, 3), len(DEFAULT_ALPHAS))
    curves, spent = _load_partial(partial, tag)
    if curves:
        print("resuming: %d curves from %s" % (len(curves), partial), file=sys.stderr)
    else:
        with open(partial, "w") as fh:
            fh.write(tag + "\n")
    todo = [(q, s) for q in RDP_QS for s in RDP_SIGMAS if (q, s) not in curves]
    with open(partial, "a") as fh:
        for q, s, dt, digits in _curves_in_parallel(todo, jobs):
            spent += dt
            curves[(q, s)] = {af: mpf(v) for (af, _), v in zip(orders(), digits)}
            fh.write("\t".join(["curve", repr(q), repr(s), "%.1f" % dt] + digits) + "\n")
            fh.flush()
            print("q=%r sigma=%r: %.1f s" % (q, s, dt), file=sys.stderr, flush=True)
    rdp_lines = []
    for q in RDP_QS:
        for s in RDP_SIGMAS:
            cur = curves[(q, s)]
            for af, _ in orders():
                rdp_lines.append("\t".join(["rdp", repr(q), repr(s), repr(af), fmt(cur[af])]))
    t_rest = time.time()
    erows = eps_rows(curves)
    pub, ok = published_comments(curves)
    if not ok:
        print("warning: the Opacus published point disagrees", file=sys.stderr)
    elapsed = spent + (time.time() - t_rest)  # computing time, summed over curves and resumed runs
    head = [
        "# fedmq RDP accountant reference fixture (issue 12); DO NOT EDIT, regenerate with",
        "#   nice -n 19 python3 tests/privacy/rdp_reference.py --write tests/fixtures/rdp_reference.tsv",
        "# generator: tests/privacy/rdp_reference.py (quadrature of the RDP definition of the",
        "#   Poisson-subsampled Gaussian; exact binomial sum at integer orders, checked against the",
        "#   quadrature to %s relative); python %s, mpmath %s; generated %s, %.0f s of computing"
        % (mpmath.nstr(INT_TOL, 1), sys.version.split()[0], mpmath.__version__,
           datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), elapsed),
        "# mp.dps: %d for the integrals, %d for the integer-order sums; values have 20 significant"
        % (DPS, SUM_DPS),
        "#   digits; q, sigma, alpha, delta are Python repr() of the doubles used",
        "# orders: Opacus RDPAccountant DEFAULT_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] +"
        " list(range(12, 64)) (%d)" % len(DEFAULT_ALPHAS),
        "# rdp grid: q in %s x sigma in %s x every order" % (RDP_QS, RDP_SIGMAS),
        "# eps grid: q in %s x sigma in %s x steps in %s, delta %r, both conversions; then the"
        % (EPS_QS, EPS_SIGMAS, EPS_STEPS, DELTA),
        "#   published points; eps2 = %d steps of (q %r, sigma %r) then %d of (q %r, sigma %r)"
        % (HETERO[0][2], HETERO[0][0], HETERO[0][1], HETERO[1][2], HETERO[1][0], HETERO[1][1]),
        "# conversions: classic eps = R - log(delta)/(a-1) (Mironov 2017); improved eps = R -"
        " (log(delta)+log(a))/(a-1) + log((a-1)/a) (Balle et al. 2020 Thm 21, Opacus); min over a",
        "# rows: rdp q sigma alpha rdp_one_step",
        "#       eps q sigma steps delta conversion epsilon best_alpha",
        "#       eps2 q1 sigma1 steps1 q2 sigma2 steps2 delta conversion epsilon best_alpha",
    ] + pub
    with open(path, "w") as fh:
        fh.write("\n".join(head) + "\n")
        fh.write("\n".join(rdp_lines) + "\n")
        fh.write("\n".join("\t".join(r) for r in erows) + "\n")
    os.remove(partial)
    print("wrote %s: %d rdp rows, %d eps rows in %.0f s" % (path, len(rdp_lines), len(erows), elapsed),
          file=sys.stderr)
    for line in pub:
        print(line, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Check

def _rel_ok(got, want_str):
    if want_str == "inf":
        return got == mpmath.inf
    want = mpf(want_str)
    if got == mpmath.inf:
        return False
    return abs(got - want) <= CHECK_TOL * max(abs(want), mpf("1e-300"))


def check_fixture(path, sample):
    """Recompute rows of a fixture; returns the list of mismatch lines."""
    bad = []
    rdp = {}
    others = []
    with open(path) as fh:
        for ln, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            f = line.split("\t")
            if f[0] == "rdp" and len(f) == 5:
                rdp[(float(f[1]), float(f[2]), float(f[3]))] = (ln, f[4])
            elif f[0] in ("eps", "eps2"):
                others.append((ln, f))
            else:
                bad.append("%s:%d: unknown row %r" % (path, ln, line))
    # Structure: the full rdp grid, every default order, nothing else.
    want_keys = {(q, s, a) for q in RDP_QS for s in RDP_SIGMAS for a in map(float, DEFAULT_ALPHAS)}
    if set(rdp) != want_keys:
        bad.append("%s: rdp rows are not the grid: %d missing, %d extra"
                   % (path, len(want_keys - set(rdp)), len(set(rdp) - want_keys)))
    n_eps = len(EPS_QS) * len(EPS_SIGMAS) * len(EPS_STEPS) * 2 + 4 + 2
    if len(others) != n_eps:
        bad.append("%s: %d eps/eps2 rows, want %d" % (path, len(others), n_eps))
    keys = sorted(rdp)
    if sample is None:
        pick = keys
    else:
        pick = sorted(random.Random(SAMPLE_SEED).sample(keys, min(sample, len(keys))))
    fresh = {}
    for k in pick:
        ln, val = rdp[k]
        got = rdp_one(*k)
        fresh[k] = got
        if not _rel_ok(got, val):
            bad.append("%s:%d: rdp q=%r sigma=%r alpha=%r: file %s, reference %s"
                       % (path, ln, k[0], k[1], k[2], val, fmt(got)))

    # eps rows: from the fresh values when everything was recomputed, else from the file's rdp
    # rows (whose sampled subset was just checked against the integral).
    def curve(q, s):
        out = {}
        for af in map(float, DEFAULT_ALPHAS):
            k = (q, s, af)
            if k in fresh:
                out[af] = fresh[k]
            elif k in rdp:
                out[af] = mpf(rdp[k][1]) if rdp[k][1] != "inf" else mpmath.inf
            else:
                return None
        return out

    with mp.workdps(DPS):
        for q in RDP_QS:
            for s in RDP_SIGMAS:
                c = curve(q, s)
                try:
                    if c is not None:
                        check_curve(q, s, c)
                except ArithmeticError as ex:
                    bad.append("%s: %s" % (path, ex))
        for ln, f in others:
            try:
                if f[0] == "eps":
                    q, s, t, d, conv, e_s, b_s = f[1:]
                    c = curve(float(q), float(s))
                    if c is None:
                        raise ValueError("no rdp rows for q=%s sigma=%s" % (q, s))
                    tot = {af: int(t) * v for af, v in c.items()}
                else:
                    q1, s1, t1, q2, s2, t2, d, conv, e_s, b_s = f[1:]
                    c1, c2 = curve(float(q1), float(s1)), curve(float(q2), float(s2))
                    if c1 is None or c2 is None:
                        raise ValueError("no rdp rows for one of the steps")
                    tot = {af: int(t1) * c1[af] + int(t2) * c2[af] for af in c1}
                e, best = eps_min(tot, float(d), conv)
                if not _rel_ok(e, e_s) or best != float(b_s):
                    bad.append("%s:%d: %s: file eps %s alpha %s, reference eps %s alpha %r"
                               % (path, ln, " ".join(f[1:-2]), e_s, b_s, fmt(e), best))
            except (ValueError, KeyError) as ex:
                bad.append("%s:%d: bad row: %s" % (path, ln, ex))
    return bad, len(pick), len(others)


def main(argv):
    ap = argparse.ArgumentParser(
        description="Independent mpmath reference for the RDP accountant of the Poisson-subsampled "
        "Gaussian (quadrature of the definition; not the Mironov-Talwar-Zhang series).",
        epilog="--check verifies the grid structure, recomputes --sample rdp rows (chosen with a "
        "fixed seed) from the integral (integer orders: exact sum, checked against the integral), "
        "recomputes every eps/eps2 row (conversion and minimum over the orders) from the rdp "
        "values, all to %g relative, and checks every (q, sigma) curve is non-decreasing with "
        "log A convex; exit 1 with one line per mismatch. The default sample (%d "
        "rows) takes well under 60 s on one core, which is what the ctest runs; --sample all "
        "recomputes every rdp row (as long as --write)." % (CHECK_TOL, DEFAULT_SAMPLE))
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="FILE", help="generate the fixture (tens of minutes)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="--write: curves computed by this many processes at once (default 1)")
    g.add_argument("--check", metavar="FILE", help="verify a fixture")
    g.add_argument("--point", nargs=3, type=float, metavar=("Q", "SIGMA", "ALPHA"),
                   help="print RDP of one step at one point")
    ap.add_argument("--sample", default=str(DEFAULT_SAMPLE),
                    help="rdp rows --check recomputes from the integral: N or 'all' (default %d)"
                    % DEFAULT_SAMPLE)
    args = ap.parse_args(argv)
    mp.dps = DPS
    if args.write:
        write_fixture(args.write, max(1, args.jobs))
        return 0
    if args.point:
        q, s, a = args.point
        print("rdp %s" % fmt(rdp_one(q, s, a)))
        if 0 < q < 1:
            print("log A (integral)  %s" % mpmath.nstr(log_a_integral(q, s, a), 30))
            print("log A (tanh-sinh) %s" % mpmath.nstr(log_a_integral(q, s, a, "tanh-sinh", 2), 30))
            if is_integer_order(a) and a >= 2:
                print("log A (sum)       %s" % mpmath.nstr(log_a_sum(q, s, a), 30))
        return 0
    sample = None if args.sample == "all" else int(args.sample)
    t0 = time.time()
    try:
        bad, n_rdp, n_eps = check_fixture(args.check, sample)
    except (OSError, ArithmeticError) as ex:
        print("rdp_reference: %s" % ex)
        return 1
    for line in bad:
        print(line)
    print("rdp_reference: %s: %d rdp rows recomputed, %d eps rows checked, %d mismatches, %.1f s"
          % (args.check, n_rdp, n_eps, len(bad), time.time() - t0), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
