/* Unit tests of the client-level DP step (shared/fl/fm_dp) with the FedBuff buffer it
 * finishes (shared/fl/fm_fedbuff):
 *   - sensitivity: updates of norm 1e6 with huge sample counts and any staleness, clipped by
 *     fm_dp_clip_factor and folded with weight_by_samples off, change the noiseless sum by at
 *     most C each (neighbouring buffers: with and without one client), and the published
 *     step is that sum over the FIXED K, not over the number that arrived;
 *   - noise: with the sum 0, the published coordinates are N(0, (sigma C / K)^2): empirical
 *     standard deviation within 1% over 400,000 draws (its standard error is 0.11%), mean
 *     within 4 standard errors, Kolmogorov-Smirnov distance to the normal CDF below the 1%
 *     critical value; a different byte stream gives different noise;
 *   - bad configurations are refused and change nothing;
 *   - adaptive clipping (fm_dp_adapt_*): the vector's noise multiplier against hand values
 *     and the identity 1/z_delta^2 + 1/(2 sigma_b)^2 = 1/z^2 (the composite is the Gaussian
 *     mechanism of multiplier z), the noisy fraction and the geometric step against the
 *     paper's formulas, and the rule run over steps settling at the target quantile.
 * The byte source is a seeded xoshiro stream (fm_rng), so every run draws the same numbers;
 * the bounds above hold for any stream with overwhelming probability. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "fm_dp.h"
#include "fm_err.h"
#include "fm_fedbuff.h"
#include "fm_rng.h"

static void s_bytes(void *ctx, void *buf, size_t len)
{
    fm_rng_t *r = ctx;
    unsigned char *p = buf;
    while (len > 0) {
        uint64_t x = fm_rng_u64(r);
        size_t m = len < 8 ? len : 8;
        memcpy(p, &x, m);
        p += m;
        len -= m;
    }
}

static double s_norm(const float *a, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * a[i];
    return sqrt(s);
}

static void test_clip_factor(void **state)
{
    (void)state;
    assert_true(fm_dp_clip_factor(0.0, 1.0) == 1.0);
    assert_true(fm_dp_clip_factor(0.5, 1.0) == 1.0);
    assert_true(fm_dp_clip_factor(1.0, 1.0) == 1.0);
    assert_true(fm_dp_clip_factor(4.0, 1.0) == 0.25);
    assert_true(fabs(fm_dp_clip_factor(1e6, 2.0) * 1e6 - 2.0) < 1e-12);
}

/* Fold the updates u[i] (n floats each; norms any) into a buffer the DP way: weight_by_samples
 * off, each scaled by its clip factor; then take the mean and privatize it with sigma 0. */
static void s_private_step(float *const *u, const uint64_t *tau, const uint64_t *samples, int m,
                           size_t n, double clip, int k, float *out)
{
    fm_staleness_t st = {FM_STALENESS_POLYNOMIAL, 0.5, 0};
    int err = 0;
    fm_fedbuff_t *b = fm_fedbuff_new(n, k, &st, 0, &err);
    assert_non_null(b);
    for (int i = 0; i < m; i++) {
        double norm = s_norm(u[i], n);
        assert_int_equal(
            fm_fedbuff_begin_ex(b, tau[i], samples[i], fm_dp_clip_factor(norm, clip), norm), 0);
        assert_int_equal(fm_fedbuff_fold_span(b, 0, n, u[i]), 0);
        fm_fedbuff_end(b);
    }
    int count = fm_fedbuff_count(b);
    if (count > 0)
        assert_int_equal(fm_fedbuff_take(b, out), 0);
    fm_dp_config_t c = {clip, 0.0, k};
    assert_int_equal(fm_dp_privatize(out, n, count, &c, s_bytes, NULL), 0);
    fm_fedbuff_destroy(&b);
}

static void test_sensitivity(void **state)
{
    (void)state;
    enum { N = 5000, M = 7, K = 10 };
    const double clip = 0.5;
    fm_rng_t rng;
    fm_rng_seed(&rng, 11, 0);
    float *u[M];
    uint64_t tau[M], samples[M];
    for (int i = 0; i < M; i++) {
        u[i] = fm_tu_floats(N);
        fm_tu_normal(&rng, u[i], N, i % 2 ? 1e4 : 1e-3); /* norms ~7e5 and ~0.07 */
        tau[i] = (uint64_t)(i * 3);
        samples[i] = i == 0 ? UINT64_C(1) << 40 : 1; /* a client claiming 10^12 samples */
    }
    float *all = fm_tu_floats(N), *without = fm_tu_floats(N), *diff = fm_tu_floats(N);
    s_private_step(u, tau, samples, M, N, clip, K, all);
    /* the whole step: at most M clipped updates over the fixed K */
    assert_true(s_norm(all, N) <= M * clip / K * (1 + 1e-5));
    /* neighbours: drop any one client; the published step moves by at most C / K */
    for (int drop = 0; drop < M; drop++) {
        float *v[M];
        uint64_t t2[M], s2[M];
        int m = 0;
        for (int i = 0; i < M; i++)
            if (i != drop) {
                v[m] = u[i];
                t2[m] = tau[i];
                s2[m] = samples[i];
                m++;
            }
        s_private_step(v, t2, s2, m, N, clip, K, without);
        for (size_t j = 0; j < N; j++)
            diff[j] = all[j] - without[j];
        double d = s_norm(diff, N);
        assert_true(d <= clip / K * (1 + 1e-5));
        if (drop % 2 == 1) /* a large update: clipped to exactly C, times s(tau) */
            assert_true(d >= clip / K * pow(1.0 + tau[drop], -0.5) * (1 - 1e-4));
    }
    /* the denominator is K whatever arrived: one update of norm <= C gives a step of norm
     * (its norm) / K, not its norm */
    float *one[1] = {u[0]};
    uint64_t t0 = 0, n0 = 1;
    s_private_step(one, &t0, &n0, 1, N, clip, K, without);
    assert_true(fabs(s_norm(without, N) - s_norm(u[0], N) / K) < 1e-6 * s_norm(u[0], N));
    for (int i = 0; i < M; i++)
        free(u[i]);
    free(all);
    free(without);
    free(diff);
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_noise(void **state)
{
    (void)state;
    enum { N = 400000 };
    const fm_dp_config_t c = {2.0, 1.5, 4}; /* noise std on the step: 1.5 x 2 / 4 = 0.75 */
    const double sd = 0.75;
    float *x = fm_tu_floats(N);
    fm_rng_t r;
    fm_rng_seed(&r, 2026, 12);
    assert_int_equal(fm_dp_privatize(x, N, 0, &c, s_bytes, &r), 0);
    double *z = fm_tu_alloc(N, sizeof(double));
    double mean = 0, var = 0;
    for (size_t i = 0; i < N; i++)
        mean += x[i];
    mean /= N;
    for (size_t i = 0; i < N; i++) {
        var += (x[i] - mean) * (x[i] - mean);
        z[i] = x[i] / sd;
    }
    double std = sqrt(var / (N - 1));
    print_message("noise: mean %.5f (SE %.5f), std %.5f (want %.5f)\n", mean, sd / sqrt(N), std,
                  sd);
    assert_true(fabs(mean) < 4 * sd / sqrt(N));
    assert_true(fabs(std / sd - 1) < 0.01);
    qsort(z, N, sizeof z[0], s_cmp);
    double ks = 0;
    for (size_t i = 0; i < N; i++) {
        double f = 0.5 * erfc(-z[i] / M_SQRT2);
        double lo = fabs(f - (double)i / N), hi = fabs((double)(i + 1) / N - f);
        ks = fmax(ks, fmax(lo, hi));
    }
    print_message("Kolmogorov-Smirnov distance %.5f (1%% critical value %.5f)\n", ks,
                  1.628 / sqrt(N));
    assert_true(ks < 1.628 / sqrt(N));
    /* another stream, other noise; the sum is kept: input mean m over count updates */
    float *y = fm_tu_floats(N);
    fm_tu_fill(y, N, 0.25f);
    fm_rng_seed(&r, 2026, 13);
    assert_int_equal(fm_dp_privatize(y, N, 8, &c, s_bytes, &r), 0); /* (8 x 0.25 + z) / 4 */
    double ym = 0, same = 0;
    for (size_t i = 0; i < N; i++) {
        ym += y[i];
        same += y[i] - 0.5f == x[i];
    }
    assert_true(fabs(ym / N - 0.5) < 4 * sd / sqrt(N));
    assert_true(same < N / 100);
    free(x);
    free(y);
    free(z);
}

static void test_bad_config(void **state)
{
    (void)state;
    float a[3] = {1, 2, 3};
    const fm_dp_config_t bad[] = {
        {0.0, 1.0, 1}, {-1.0, 1.0, 1}, {INFINITY, 1.0, 1}, {1.0, -0.5, 1},
        {1.0, NAN, 1}, {1.0, 1.0, 0},  {NAN, 1.0, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_dp_check(&bad[i], &e), FM_EARG);
        assert_non_null(strstr(e.msg, "differential privacy"));
        assert_int_equal(fm_dp_privatize(a, 3, 1, &bad[i], s_bytes, NULL), FM_EARG);
        assert_true(a[0] == 1 && a[1] == 2 && a[2] == 3);
    }
    const fm_dp_config_t ok = {1.0, 0.0, 2};
    assert_int_equal(fm_dp_privatize(a, 3, -1, &ok, s_bytes, NULL), FM_EARG);
    assert_int_equal(fm_dp_privatize(a, 3, 1, &ok, s_bytes, NULL), 0); /* sigma 0: sum / K */
    assert_true(a[0] == 0.5f && a[1] == 1.0f && a[2] == 1.5f);
}

/* ---- adaptive clipping ------------------------------------------------------------------ */

/* The vector's noise multiplier: against values computed by hand, the identity that makes the
 * pair (vector of sensitivity C, centred count of sensitivity 1/2) the Gaussian mechanism of
 * multiplier z (the sum of the two squared sensitivity-to-noise ratios is 1 / z^2), and the
 * refusals. */
static void test_adapt_sigma(void **state)
{
    (void)state;
    /* z 1, sigma_b 2.5: 1 / sqrt(1 - 1/25); z 2, sigma_b 2: 1 / sqrt(1/4 - 1/16) = 4 / sqrt 3 */
    assert_true(fabs(fm_dp_adapt_sigma(1.0, 2.5) - 1.0206207261596576) < 1e-15);
    assert_true(fabs(fm_dp_adapt_sigma(2.0, 2.0) - 4.0 / sqrt(3.0)) < 1e-14);
    fm_rng_t r;
    fm_rng_seed(&r, 7, 1);
    for (int i = 0; i < 1000; i++) {
        double z = 0.3 + 100.0 * fm_rng_uniform(&r);
        double sb = z / 2 * (1.0 + 1e-3 + 50.0 * fm_rng_uniform(&r)), clip = 0.37;
        double zd = fm_dp_adapt_sigma(z, sb);
        assert_true(zd > z);
        double vec = clip / (zd * clip), cnt = 0.5 / sb; /* sensitivity / noise std */
        double got = vec * vec + cnt * cnt, want = 1.0 / (z * z);
        if (!(fabs(got - want) <= 1e-12 * want))
            fail_msg("z %g sigma_b %g: 1/z_delta^2 + 1/(2 sigma_b)^2 = %.17g, 1/z^2 = %.17g", z,
                     sb, got, want);
    }
    assert_true(isnan(fm_dp_adapt_sigma(1.0, 0.5))); /* 2 sigma_b = z: infinite */
    assert_true(isnan(fm_dp_adapt_sigma(1.0, 0.4)));
    assert_true(isnan(fm_dp_adapt_sigma(0.0, 1.0)));
    assert_true(isnan(fm_dp_adapt_sigma(1.0, NAN)));
    assert_true(isnan(fm_dp_adapt_sigma(1e6, 5e5 * (1 + 1e-17)))); /* rounds to 2 sigma_b = z */
    const fm_dp_adapt_t ok = {0.5, 0.2, 2.5};
    assert_int_equal(fm_dp_adapt_check(1.0, &ok, NULL), 0);
    const fm_dp_adapt_t bad[] = {{0.0, 0.2, 2.5}, {1.0, 0.2, 2.5},      {NAN, 0.2, 2.5},
                                 {0.5, 0.0, 2.5}, {0.5, INFINITY, 2.5}, {0.5, 0.2, 0.0},
                                 {0.5, 0.2, 0.5}, {0.5, 0.2, INFINITY}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_dp_adapt_check(1.0, &bad[i], &e), FM_EARG);
        assert_non_null(strstr(e.msg, "adaptive clipping"));
    }
}

/* The noisy fraction and the geometric step, against the paper's formulas written out. */
static void test_adapt_rule(void **state)
{
    (void)state;
    const fm_dp_adapt_t a = {0.5, 0.2, 1.0};
    /* a full step (count = K): (sum b_i + noise) / K, as in the paper */
    for (int u = 0; u <= 10; u++)
        for (double noise = -0.8; noise <= 0.8; noise += 0.4) {
            double want = ((double)u + noise) / 10.0;
            want = want < 0 ? 0 : want > 1 ? 1 : want;
            assert_true(fabs(fm_dp_adapt_fraction(u, 10, 10, noise) - want) < 1e-15);
        }
    /* fewer updates than K: the missing ones count as half (centred count + K / 2) */
    assert_true(fabs(fm_dp_adapt_fraction(3, 4, 10, 0.0) - 0.6) < 1e-15);
    assert_true(fm_dp_adapt_fraction(0, 0, 10, 0.0) == 0.5);
    assert_true(fm_dp_adapt_fraction(0, 10, 10, -3.0) == 0.0); /* clamped */
    assert_true(fm_dp_adapt_fraction(10, 10, 10, 3.0) == 1.0);
    /* C exp(-eta (b - gamma)) */
    for (double f = 0; f <= 1.0; f += 0.125) {
        double want = 3.0 * exp(-0.2 * (f - 0.5));
        assert_true(fabs(fm_dp_adapt_clip(3.0, f, &a) - want) <= 1e-15 * want);
    }
    assert_true(fm_dp_adapt_clip(3.0, 0.5, &a) == 3.0); /* at the quantile: unchanged */
    assert_true(fm_dp_adapt_clip(FM_DP_CLIP_MIN, 1.0, &a) == FM_DP_CLIP_MIN);
    assert_true(fm_dp_adapt_clip(FM_DP_CLIP_MAX, 0.0, &a) == FM_DP_CLIP_MAX);
}

/* The rule run over steps. Norms {2, 4, 8, 16}, gamma 0.5, eta 0.2, no noise: from C = 1 the
 * clip grows (x e^0.1 while all four are clipped, x e^0.05 at one unclipped) until it is in
 * [4, 8), where half are unclipped and it stays; from 100 it falls into the same range; at
 * gamma 0.75 it settles in [8, 16). With noise sigma_b = K / 20 (the paper's choice) drawn from
 * a seeded stream, C stays in [4, 8) most of the time, and the noisy fraction is unbiased with
 * standard deviation sigma_b / K. */
static void test_adapt_converges(void **state)
{
    (void)state;
    static const double norms[4] = {2, 4, 8, 16};
    const double start[3] = {1.0, 100.0, 1.0}, gamma[3] = {0.5, 0.5, 0.75};
    const double lo[3] = {4, 4, 8}, hi[3] = {8, 8, 16};
    for (int s = 0; s < 3; s++) {
        const fm_dp_adapt_t a = {gamma[s], 0.2, 0.2};
        double clip = start[s];
        for (int t = 0; t < 200; t++) {
            int u = 0;
            for (int i = 0; i < 4; i++)
                u += norms[i] <= clip;
            double next = fm_dp_adapt_clip(clip, fm_dp_adapt_fraction(u, 4, 4, 0.0), &a);
            if (t == 0 && s == 0)
                assert_true(fabs(next - exp(0.1)) < 1e-15);
            clip = next;
        }
        if (!(clip >= lo[s] && clip < hi[s]))
            fail_msg("start %g gamma %g: C = %g after 200 steps, want [%g, %g)", start[s],
                     gamma[s], clip, lo[s], hi[s]);
    }
    /* with noise: K = 4, sigma_b = 0.2 */
    enum { T = 20000 };
    const fm_dp_adapt_t a = {0.5, 0.2, 0.2};
    fm_rng_t r;
    fm_rng_seed(&r, 2026, 21);
    double clip = 1.0, fsum = 0, fss = 0;
    int inside = 0, nf = 0;
    for (int t = 0; t < T; t++) {
        int u = 0;
        for (int i = 0; i < 4; i++)
            u += norms[i] <= clip;
        double z;
        fm_dp_normals(&z, 1, s_bytes, &r);
        double f = fm_dp_adapt_fraction(u, 4, 4, a.count_sigma * z);
        if (u == 2) { /* true fraction 0.5: 10 sd from the clamps */
            fsum += f - 0.5;
            fss += (f - 0.5) * (f - 0.5);
            nf++;
        }
        clip = fm_dp_adapt_clip(clip, f, &a);
        inside += t >= 100 && clip >= 4 && clip < 8;
    }
    print_message("noisy adaptation: C in [4, 8) at %d of %d steps\n", inside, T - 100);
    assert_true(inside > 0.9 * (T - 100));
    double n = nf, m = fsum / n, sd = sqrt(fss / n - m * m);
    assert_true(fabs(m) < 5 * 0.05 / sqrt(n));
    assert_true(fabs(sd / 0.05 - 1) < 0.05);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_factor),     cmocka_unit_test(test_sensitivity),
        cmocka_unit_test(test_noise),           cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_adapt_sigma),     cmocka_unit_test(test_adapt_rule),
        cmocka_unit_test(test_adapt_converges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
