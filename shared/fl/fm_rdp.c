/* fm_rdp: see fm_rdp.h. Log-space arithmetic throughout: A_alpha reaches e^20000 at
 * sigma = 0.3 and order 63, and terms of the fractional series reach below e^-700. */
#include "fm_rdp.h"

#include <math.h>
#include <string.h>

#include "fm_le.h"

/* log(e^a + e^b); -inf is 0. */
static double s_log_add(double a, double b)
{
    double lo = a < b ? a : b, hi = a < b ? b : a;
    if (lo == -INFINITY)
        return hi;
    return log1p(exp(lo - hi)) + hi;
}

/* log(e^a - e^b) for a >= b; NAN when a < b (the series lost its precision). */
static double s_log_sub(double a, double b)
{
    if (a < b)
        return NAN;
    if (b == -INFINITY)
        return a;
    if (a == b)
        return -INFINITY;
    double d = a - b;
    if (d > 700.0) /* e^d - 1 = e^d to double precision */
        return a;
    return log(expm1(d)) + b;
}

/* log(erfc(x)), accurate where erfc(x) underflows: past x = 26, the asymptotic series
 * erfc(x) = e^-x^2 / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + 105/(16x^8)),
 * whose next term is below 3e-13 relative there. */
static double s_log_erfc(double x)
{
    if (x < 26.0)
        return log(erfc(x));
    double r = 1.0 / (2.0 * x * x), s = 1.0, t = 1.0;
    for (int k = 1; k <= 4; k++) {
        t *= -(2.0 * k - 1.0) * r;
        s += t;
    }
    return -x * x - log(x) - 0.5 * log(M_PI) + log(s);
}

/* log A_alpha for an integer alpha >= 2, 0 < q < 1: the binomial sum
 * sum_k C(alpha, k) (1-q)^(alpha-k) q^k e^((k^2 - k) / (2 sigma^2)). */
static double s_log_a_int(double q, double sigma, int alpha)
{
    double log_a = -INFINITY, lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    double log_binom = 0.0; /* log C(alpha, k) */
    for (int k = 0; k <= alpha; k++) {
        if (k > 0)
            log_binom += log((double)(alpha - k + 1)) - log((double)k);
        double t = log_binom + k * lq + (alpha - k) * l1q + ((double)k * k - k) / s2;
        log_a = s_log_add(log_a, t);
    }
    return log_a;
}

/* log A_alpha for a fractional alpha > 1, 0 < q < 1: the two halves of the integral,
 * split at z0 where the two Gaussians' mixture ratio crosses, each a series over the
 * generalised binomial coefficients C(alpha, i) (alternating in sign past i > alpha), summed
 * until both halves' terms fall below e^-30. */
static double s_log_a_frac(double q, double sigma, double alpha)
{
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma, rs = M_SQRT2 * sigma;
    double z0 = sigma * sigma * log(1.0 / q - 1.0) + 0.5;
    double log_coef = 0.0; /* log |C(alpha, i)| */
    int sign = 1;          /* sign of C(alpha, i) */
    for (int i = 0;; i++) {
        if (i > 0) {
            double f = (alpha - (i - 1)) / i; /* C(alpha, i) / C(alpha, i - 1) */
            if (f < 0)
                sign = -sign;
            log_coef += log(fabs(f));
        }
        double j = alpha - i;
        double log_t0 = log_coef + i * lq + j * l1q;
        double log_t1 = log_coef + j * lq + i * l1q;
        double log_e0 = log(0.5) + s_log_erfc((i - z0) / rs);
        double log_e1 = log(0.5) + s_log_erfc((z0 - j) / rs);
        double log_s0 = log_t0 + ((double)i * i - i) / s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
        if (sign > 0) {
            log_a0 = s_log_add(log_a0, log_s0);
            log_a1 = s_log_add(log_a1, log_s1);
        } else {
            log_a0 = s_log_sub(log_a0, log_s0);
            log_a1 = s_log_sub(log_a1, log_s1);
        }
        if (isnan(log_a0) || isnan(log_a1))
            return NAN;
        if (fmax(log_s0, log_s1) < -30.0)
            break;
        if (i > 1000000) /* not reached for sigma >= 0.3; no endless loop on odd input */
            return NAN;
    }
    return s_log_add(log_a0, log_a1);
}

double fm_rdp_order(size_t i)
{
    if (i < 99)
        return 1.0 + (double)(i + 1) / 10.0;
    return (double)(12 + (i - 99));
}

int fm_rdp_conv_parse(const char *s, fm_rdp_conv_t *out)
{
    if (strcmp(s, "improved") == 0)
        *out = FM_RDP_IMPROVED;
    else if (strcmp(s, "classic") == 0)
        *out = FM_RDP_CLASSIC;
    else
        return FM_EARG;
    return 0;
}

const char *fm_rdp_conv_name(fm_rdp_conv_t conv)
{
    return conv == FM_RDP_CLASSIC ? "classic" : "improved";
}

double fm_rdp_step(double q, double sigma, double alpha)
{
    if (!(q >= 0.0 && q <= 1.0) || !(sigma >= 0.0) || !(alpha > 1.0))
        return NAN;
    if (q == 0.0)
        return 0.0;
    if (sigma == 0.0 || isinf(alpha))
        return INFINITY;
    if (isinf(sigma))
        return 0.0;
    if (q == 1.0)
        return alpha / (2.0 * sigma * sigma);
    double log_a = alpha == floor(alpha) && alpha <= 1e6 ? s_log_a_int(q, sigma, (int)alpha)
                                                         : s_log_a_frac(q, sigma, alpha);
    return log_a / (alpha - 1.0);
}

void fm_rdp_init(fm_rdp_t *acct)
{
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        acct->rdp[i] = 0.0;
}

int fm_rdp_compose(fm_rdp_t *acct, double q, double sigma, uint64_t steps)
{
    if (!(q >= 0.0 && q <= 1.0) || !(sigma >= 0.0) || isnan(sigma))
        return FM_EARG;
    if (steps == 0)
        return 0;
    double add[FM_RDP_NORDERS];
    for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
        double r = fm_rdp_step(q, sigma, fm_rdp_order(i));
        /* an order whose series lost its precision gives no bound: treat it as spent */
        add[i] = isnan(r) ? INFINITY : r * (double)steps;
    }
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        acct->rdp[i] += add[i];
    return 0;
}

double fm_rdp_epsilon(const fm_rdp_t *acct, double delta, fm_rdp_conv_t conv, double *best_alpha)
{
    if (best_alpha)
        *best_alpha = NAN;
    if (!(delta > 0.0 && delta < 1.0))
        return INFINITY;
    double best = INFINITY, ld = log(delta);
    for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
        double a = fm_rdp_order(i), r = acct->rdp[i], eps;
        if (conv == FM_RDP_CLASSIC)
            eps = r - ld / (a - 1.0);
        else
            eps = r - (ld + log(a)) / (a - 1.0) + log((a - 1.0) / a);
        if (eps < best) { /* NaN never compares below: skipped, as Opacus' nanargmin */
            best = eps;
            if (best_alpha)
                *best_alpha = a;
        }
    }
    return best;
}

double fm_rdp_epsilon_of(double q, double sigma, uint64_t steps, double delta, fm_rdp_conv_t conv,
                         double *best_alpha)
{
    fm_rdp_t acct;
    fm_rdp_init(&acct);
    if (fm_rdp_compose(&acct, q, sigma, steps) != 0) {
        if (best_alpha)
            *best_alpha = NAN;
        return NAN;
    }
    return fm_rdp_epsilon(&acct, delta, conv, best_alpha);
}

int fm_rdp_sigma_for(double q, uint64_t steps, double delta, double target_eps,
                     fm_rdp_conv_t conv, double *sigma)
{
    if (!(q > 0.0 && q <= 1.0) || steps == 0 || !(delta > 0.0 && delta < 1.0) ||
        !(target_eps > 0.0) || isinf(target_eps))
        return FM_EARG;
    double hi = 1.0;
    while (!(fm_rdp_epsilon_of(q, hi, steps, delta, conv, NULL) <= target_eps)) {
        hi *= 2.0;
        if (hi > 1e6)
            return FM_ERANGE;
    }
    double lo = hi / 2.0;
    if (hi == 1.0) { /* the answer may be below 1: walk down */
        lo = 0.0;
        for (double s = 0.5; s >= 1e-3; s /= 2.0) {
            if (fm_rdp_epsilon_of(q, s, steps, delta, conv, NULL) <= target_eps) {
                hi = s;
            } else {
                lo = s;
                break;
            }
        }
    }
    /* invariant: eps(hi) <= target < eps(lo) (lo = 0: no noise, infinite) */
    while (hi - lo > 1e-9 * hi) {
        double mid = 0.5 * (lo + hi);
        if (fm_rdp_epsilon_of(q, mid, steps, delta, conv, NULL) <= target_eps)
            hi = mid;
        else
            lo = mid;
    }
    *sigma = hi;
    return 0;
}

int fm_rdp_steps_for(double q, double sigma, double delta, double target_eps, fm_rdp_conv_t conv,
                     uint64_t cap, uint64_t *steps)
{
    if (!(q >= 0.0 && q <= 1.0) || !(sigma >= 0.0) || isnan(sigma) ||
        !(delta > 0.0 && delta < 1.0) || !(target_eps > 0.0))
        return FM_EARG;
    fm_rdp_t one;
    fm_rdp_init(&one);
    fm_rdp_compose(&one, q, sigma, 1);
    /* epsilon grows with the steps: largest T in [0, cap] with eps(T) <= target */
    uint64_t lo = 0, hi = cap;
    fm_rdp_t t;
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        t.rdp[i] = one.rdp[i] * (double)hi;
    if (fm_rdp_epsilon(&t, delta, conv, NULL) <= target_eps) {
        *steps = cap;
        return 0;
    }
    while (hi - lo > 1) { /* eps(lo) <= target < eps(hi); eps(0) = the conversion's floor */
        uint64_t mid = lo + (hi - lo) / 2;
        for (size_t i = 0; i < FM_RDP_NORDERS; i++)
            t.rdp[i] = one.rdp[i] * (double)mid;
        if (fm_rdp_epsilon(&t, delta, conv, NULL) <= target_eps)
            lo = mid;
        else
            hi = mid;
    }
    *steps = lo;
    return 0;
}

/* ---- bytes ----------------------------------------------------------------------------------
 */

static const uint8_t s_magic[8] = {'F', 'M', 'R', 'D', 'P', '0', '1', '\0'};

void fm_rdp_encode(const fm_rdp_t *acct, uint64_t steps, double delta, fm_rdp_conv_t conv,
                   uint8_t out[FM_RDP_BLOB_LEN])
{
    memcpy(out, s_magic, 8);
    fm_le_put64(out + 8, steps);
    fm_le_put_f64(out + 16, delta);
    fm_le_put64(out + 24, (uint64_t)conv);
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        fm_le_put_f64(out + 32 + 8 * i, acct->rdp[i]);
}

int fm_rdp_decode(const void *blob, size_t len, fm_rdp_t *acct, uint64_t *steps, double *delta,
                  fm_rdp_conv_t *conv, fm_errmsg_t *e)
{
    const uint8_t *b = blob;
    if (len != FM_RDP_BLOB_LEN || memcmp(b, s_magic, 8) != 0)
        return fm_errmsg_set(e, FM_EFORMAT, "privacy budget: %zu bytes, not an RDP record (%d)",
                             len, FM_RDP_BLOB_LEN);
    uint64_t c = fm_le_get64(b + 24);
    double d = fm_le_get_f64(b + 16);
    if (c > FM_RDP_CLASSIC || !(d > 0 && d < 1))
        return fm_errmsg_set(e, FM_EFORMAT, "privacy budget: conversion %llu, delta %g",
                             (unsigned long long)c, d);
    fm_rdp_t a;
    for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
        a.rdp[i] = fm_le_get_f64(b + 32 + 8 * i);
        if (!(a.rdp[i] >= 0) || !isfinite(a.rdp[i]))
            return fm_errmsg_set(e, FM_EFORMAT, "privacy budget: rdp at order %g is %g",
                                 fm_rdp_order(i), a.rdp[i]);
    }
    *acct = a;
    if (steps)
        *steps = fm_le_get64(b + 8);
    if (delta)
        *delta = d;
    if (conv)
        *conv = (fm_rdp_conv_t)c;
    return 0;
}
