/* Unit tests of update screening and robust aggregation (shared/fl): fm_robust's rules
 * against naive computations written here (sort every parameter's K values, take the middle
 * or drop the ends; norms by a plain loop), fm_screen's clip / reject, absolute and relative
 * bounds against a naive model of the documented rule, its overflow guard and sum of
 * squares, and fm_fedbuff_begin_ex (scale 1 bit-identical to fm_fedbuff_begin; clipping;
 * the accumulator's overflow guard).
 *
 * The naive twins store u_ij = (float)(s(tau_i) f_i) * delta_ij exactly as documented, so the
 * median (one stored value, or the double mean of two) must match bit for bit; sums differ
 * only in their order, so the trimmed and norm-bounded means are compared within 1e-6 of the
 * values' magnitude, far below what a wrong rank, a missing staleness factor, a trimmed count
 * off by one or an unclipped update changes. */
#include <errno.h>
#include <float.h>
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
#include "fm_err.h"
#include "fm_fedbuff.h"
#include "fm_rng.h"
#include "fm_robust.h"
#include "fm_screen.h"

/* ---- naive twins --------------------------------------------------------------------------- */

static int s_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* delta_bar of `rule` over the K rows u[i * n + j], computed the slow, obvious way. */
static void s_naive(fm_robust_rule_t rule, const float *u, int k, size_t n, double beta,
                    float *out)
{
    float *v = fm_tu_floats((size_t)k);
    double *norm = fm_tu_alloc((size_t)k, sizeof(double));
    double *sorted = fm_tu_alloc((size_t)k, sizeof(double));
    double m = 0;
    if (rule == FM_ROBUST_NORM_BOUNDED_MEAN) {
        for (int i = 0; i < k; i++) {
            double ss = 0;
            for (size_t j = 0; j < n; j++)
                ss += (double)u[(size_t)i * n + j] * u[(size_t)i * n + j];
            sorted[i] = norm[i] = sqrt(ss);
        }
        qsort(sorted, (size_t)k, sizeof *sorted, s_cmp_double);
        m = k % 2 ? sorted[k / 2] : (sorted[k / 2 - 1] + sorted[k / 2]) / 2;
    }
    int b = (int)floor(beta * k);
    for (size_t j = 0; j < n; j++) {
        for (int i = 0; i < k; i++)
            v[i] = u[(size_t)i * n + j];
        if (rule == FM_ROBUST_NORM_BOUNDED_MEAN) {
            double sum = 0;
            for (int i = 0; i < k; i++)
                sum += (norm[i] > m ? m / norm[i] : 1.0) * v[i];
            out[j] = (float)(sum / k);
            continue;
        }
        qsort(v, (size_t)k, sizeof *v, s_cmp_float);
        if (rule == FM_ROBUST_MEDIAN) {
            out[j] = k % 2 ? v[k / 2] : (float)(((double)v[k / 2 - 1] + v[k / 2]) / 2);
        } else {
            double sum = 0;
            for (int i = b; i < k - b; i++)
                sum += v[i];
            out[j] = (float)(sum / (k - 2 * b));
        }
    }
    free(v);
    free(norm);
    free(sorted);
}

/* Feed update d (n floats) to r in random spans from an unaligned copy. */
static void s_feed(fm_robust_t *r, const float *d, size_t n, uint64_t tau, double scale,
                   fm_rng_t *rng)
{
    unsigned char *raw = fm_tu_alloc(n * sizeof(float) + 1, 1);
    memcpy(raw + 1, d, n * sizeof(float));
    assert_int_equal(fm_robust_begin(r, tau, scale), 0);
    for (size_t at = 0; at < n;) {
        size_t len = 1 + (size_t)(fm_rng_uniform(rng) * 70);
        if (len > n - at)
            len = n - at;
        assert_int_equal(fm_robust_fold_span(r, at, len, raw + 1 + at * sizeof(float)), 0);
        at += len;
    }
    fm_robust_end(r);
    free(raw);
}

/* ---- fm_robust ----------------------------------------------------------------------------- */

/* Every rule against its naive twin over K in 1..37, sizes around the tile, polynomial
 * staleness, clip factors, ties (half the parameters quantised to a few values). */
static void test_rules_match_naive(void **state)
{
    static const int ks[] = {1, 2, 3, 4, 5, 7, 10, 37};
    static const size_t ns[] = {1, 63, 64, 65, 203};
    static const fm_robust_rule_t rules[] = {FM_ROBUST_MEDIAN, FM_ROBUST_TRIMMED_MEAN,
                                             FM_ROBUST_NORM_BOUNDED_MEAN};
    fm_staleness_t st;
    assert_int_equal(fm_staleness_parse(&st, "polynomial", 0.5, 0, NULL), 0);
    fm_rng_t rng;
    fm_rng_seed(&rng, 2024, 0);
    int checked = 0;
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int k = ks[ki];
                size_t n = ns[ni];
                double beta = k >= 5 ? 0.2 : 0.34; /* trims 1 of 3..4, >= 1 of 5+ */
                fm_robust_t *r = fm_robust_new(rules[ri], n, k, &st, beta, NULL);
                assert_non_null(r);
                float *d = fm_tu_floats(n), *u = fm_tu_floats((size_t)k * n);
                float *got = fm_tu_floats(n), *want = fm_tu_floats(n);
                for (int round = 0; round < 2; round++) { /* the second after a take */
                    for (int i = 0; i < k; i++) {
                        fm_tu_normal(&rng, d, n, 1.0);
                        for (size_t j = 0; j < n; j += 2) /* ties */
                            d[j] = (float)((int)(fm_rng_uniform(&rng) * 4)) * 0.25f;
                        if (i == k - 1 && k > 2) /* an attacker: sign-flipped x10 */
                            for (size_t j = 0; j < n; j++)
                                d[j] = -10.0f * d[j];
                        uint64_t tau = (uint64_t)(fm_rng_uniform(&rng) * 5);
                        double scale = i % 3 == 1 ? 0.25 + 0.5 * fm_rng_uniform(&rng) : 1.0;
                        s_feed(r, d, n, tau, scale, &rng);
                        float w = (float)(fm_staleness_weight(&st, tau) * scale);
                        for (size_t j = 0; j < n; j++)
                            u[(size_t)i * n + j] = w * d[j];
                    }
                    assert_int_equal(fm_robust_count(r), k);
                    assert_true(fm_robust_full(r));
                    assert_int_equal(fm_robust_take(r, got), 0);
                    assert_int_equal(fm_robust_count(r), 0);
                    s_naive(rules[ri], u, k, n, beta, want);
                    for (size_t j = 0; j < n; j++) {
                        double mag = 0;
                        for (int i = 0; i < k; i++)
                            mag = fmax(mag, fabs(u[(size_t)i * n + j]));
                        double tol = rules[ri] == FM_ROBUST_MEDIAN ? 0 : 1e-6 * mag;
                        if (!(fabs(got[j] - want[j]) <= tol))
                            fail_msg("%s K=%d n=%zu round %d: [%zu] = %.9g, naive %.9g",
                                     fm_robust_rule_name(rules[ri]), k, n, round, j, got[j],
                                     want[j]);
                    }
                    checked++;
                }
                fm_fedbuff_stats_t fs;
                fm_robust_stats(r, &fs);
                assert_int_equal(fs.updates, 2 * (uint64_t)k);
                assert_int_equal(fs.takes, 2);
                fm_robust_destroy(&r);
                free(d);
                free(u);
                free(got);
                free(want);
            }
    assert_int_equal(checked, 3 * 8 * 5 * 2);
}

/* The attack the rules exist for: 7 honest updates near +1, 3 sign-flipped x10. The mean
 * moves to about -8; the median and the trimmed mean (trimming 3) stay within the honest
 * values; the norm-bounded mean clips the attackers to the median norm. */
static void test_rules_resist_sign_flip(void **state)
{
    const size_t n = 100;
    const int k = 10;
    fm_staleness_t st = {.kind = FM_STALENESS_CONSTANT};
    float *d = fm_tu_floats(n), *out = fm_tu_floats(n);
    static const fm_robust_rule_t rules[] = {FM_ROBUST_MEDIAN, FM_ROBUST_TRIMMED_MEAN,
                                             FM_ROBUST_NORM_BOUNDED_MEAN};
    for (size_t ri = 0; ri < 3; ri++) {
        fm_robust_t *r = fm_robust_new(rules[ri], n, k, &st, 0.3, NULL);
        assert_non_null(r);
        for (int i = 0; i < k; i++) {
            for (size_t j = 0; j < n; j++)
                d[j] = i < 7 ? 0.9f + 0.03f * (float)i : -10.0f;
            assert_int_equal(fm_robust_add(r, d, 0, 1.0), 0);
        }
        assert_int_equal(fm_robust_take(r, out), 0);
        for (size_t j = 0; j < n; j++) {
            /* median, trimmed: inside the honest range [0.9, 1.08]; norm-bounded: M = the
             * median norm 10.35 (honest), so (6.87 + 3 x -1.035) / 10 = 0.38 */
            double lo = rules[ri] == FM_ROBUST_NORM_BOUNDED_MEAN ? 0.3 : 0.9;
            if (!(out[j] >= lo && out[j] <= 1.08f))
                fail_msg("%s: [%zu] = %g", fm_robust_rule_name(rules[ri]), j, out[j]);
        }
        fm_robust_destroy(&r);
    }
    free(d);
    free(out);
}

/* Trimmed mean with beta 0 is the unweighted FedBuff mean (1/K) sum s(tau_i) delta_i. */
static void test_trimmed_zero_is_fedbuff(void **state)
{
    const size_t n = 300;
    const int k = 6;
    fm_staleness_t st;
    assert_int_equal(fm_staleness_parse(&st, "hinge", 0.5, 1, NULL), 0);
    fm_robust_t *r = fm_robust_new(FM_ROBUST_TRIMMED_MEAN, n, k, &st, 0.0, NULL);
    fm_fedbuff_t *b = fm_fedbuff_new(n, k, &st, 0, NULL);
    assert_non_null(r);
    assert_non_null(b);
    fm_rng_t rng;
    fm_rng_seed(&rng, 5, 0);
    float *d = fm_tu_floats(n), *x = fm_tu_floats(n), *y = fm_tu_floats(n);
    for (int i = 0; i < k; i++) {
        fm_tu_normal(&rng, d, n, 1.0);
        assert_int_equal(fm_robust_add(r, d, (uint64_t)i, 1.0), 0);
        assert_int_equal(fm_fedbuff_add(b, d, (uint64_t)i, 7), 0);
    }
    assert_int_equal(fm_robust_take(r, x), 0);
    assert_int_equal(fm_fedbuff_take(b, y), 0);
    FM_TU_ASSERT_LE(fm_tu_rel_err(x, y, n), 1e-6, "trimmed(0) vs fedbuff");
    fm_robust_destroy(&r);
    fm_fedbuff_destroy(&b);
    free(d);
    free(x);
    free(y);
}

static void test_robust_life_cycle(void **state)
{
    fm_staleness_t st = {.kind = FM_STALENESS_CONSTANT};
    int err = 0;
    assert_null(fm_robust_new(FM_ROBUST_MEAN, 10, 3, &st, 0.1, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_robust_new(FM_ROBUST_MEDIAN, 10, 0, &st, 0.1, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_robust_new(FM_ROBUST_TRIMMED_MEAN, 10, 3, &st, 0.5, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_robust_new((fm_robust_rule_t)9, 10, 3, &st, 0.1, &err));
    assert_null(fm_robust_new(FM_ROBUST_MEDIAN, SIZE_MAX / 2, 3, &st, 0.1, &err));
    assert_int_equal(err, -ENOMEM);
    assert_true(fm_robust_bytes(SIZE_MAX / 2, 3) == SIZE_MAX);
    assert_true(fm_robust_bytes(1000, 10) == 10 * 1000 * 4 + 64 * 10 * 4 + 64 * 8 + 2 * 10 * 8);
    assert_null(fm_robust_rule_name(-1));
    assert_string_equal(fm_robust_rule_name(FM_ROBUST_TRIMMED_MEAN), "trimmed_mean");

    /* trimmed counts: floor(beta K), at least one value left */
    assert_int_equal(fm_robust_trimmed(0.1, 10), 1);
    assert_int_equal(fm_robust_trimmed(0.1, 9), 0);
    assert_int_equal(fm_robust_trimmed(0.3, 10), 3);
    assert_int_equal(fm_robust_trimmed(0.49, 3), 1);
    assert_int_equal(fm_robust_trimmed(0.49, 2), 0);
    assert_int_equal(fm_robust_trimmed(0.49, 1), 0);
    assert_int_equal(fm_robust_trimmed(0.9, 4), 1);
    assert_int_equal(fm_robust_trimmed(0.2, 0), 0);

    float d[4] = {1, 2, 3, 4}, out[4] = {-1, -1, -1, -1};
    fm_robust_t *r = fm_robust_new(FM_ROBUST_MEDIAN, 4, 2, &st, 0.1, NULL);
    assert_non_null(r);
    assert_int_equal(fm_robust_take(r, out), FM_ERANGE);
    assert_true(out[0] == -1);
    assert_int_equal(fm_robust_begin(r, 0, 0.0), FM_ERANGE);
    assert_int_equal(fm_robust_begin(r, 0, NAN), FM_ERANGE);
    assert_int_equal(fm_robust_begin(r, 0, 1.0), 0);
    assert_int_equal(fm_robust_fold_span(r, 3, 2, d), FM_ERANGE);
    assert_int_equal(fm_robust_fold_span(r, 1, 2, d), 0); /* params 0 and 3: zero */
    fm_robust_end(r);
    assert_int_equal(fm_robust_add(r, d, 0, 0.5), 0);
    assert_int_equal(fm_robust_add(r, d, 0, 1.0), FM_ERANGE); /* full: k = 2 */
    assert_int_equal(fm_robust_take(r, out), 0);
    /* rows {0,1,2,0} and {0.5,1,1.5,2}: medians of two = their means */
    assert_true(out[0] == 0.25f && out[1] == 1.0f && out[2] == 1.75f && out[3] == 1.0f);
    assert_int_equal(fm_robust_add(r, d, 0, 1.0), 0);
    fm_robust_reset(r);
    assert_int_equal(fm_robust_count(r), 0);
    assert_int_equal(fm_robust_take(r, out), FM_ERANGE);
    assert_int_equal(fm_robust_k(r), 2);
    assert_int_equal(fm_robust_rule(r), FM_ROBUST_MEDIAN);
    fm_robust_destroy(&r);
    fm_robust_destroy(&r);
    assert_null(r);
}

/* ---- fm_screen ----------------------------------------------------------------------------- */

static void test_sumsq(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 9, 0);
    for (size_t n = 0; n < 40; n++) {
        float *a = fm_tu_floats(n + 1);
        fm_tu_normal(&rng, a, n, 3.0);
        unsigned char *raw = fm_tu_alloc(n * sizeof(float) + 3, 1);
        memcpy(raw + 3, a, n * sizeof(float)); /* unaligned */
        double want = 0;
        for (size_t i = 0; i < n; i++)
            want += (double)a[i] * a[i];
        double got = fm_screen_sumsq(raw + 3, n);
        if (!(fabs(got - want) <= 1e-12 * want))
            fail_msg("n=%zu: %.17g, naive %.17g", n, got, want);
        for (size_t bad = 0; bad < n; bad++) { /* any position, incl. the tail */
            float keep = a[bad];
            float nonfinite[3] = {NAN, INFINITY, -INFINITY};
            for (int t = 0; t < 3; t++) {
                memcpy(raw + 3 + bad * sizeof(float), &nonfinite[t], sizeof(float));
                assert_false(isfinite(fm_screen_sumsq(raw + 3, n)));
            }
            memcpy(raw + 3 + bad * sizeof(float), &keep, sizeof(float));
        }
        free(a);
        free(raw);
    }
    /* FLT_MAX everywhere: finite in double */
    float big[1000];
    for (int i = 0; i < 1000; i++)
        big[i] = i % 2 ? FLT_MAX : -FLT_MAX;
    double s = fm_screen_sumsq(big, 1000);
    assert_true(isfinite(s) && s > 1e79);
}

static void test_screen_absolute(void **state)
{
    fm_screen_config_t c = {
        .bound = 2, .mode = FM_SCREEN_ABSOLUTE, .action = FM_SCREEN_CLIP, .window = 3};
    fm_screen_t *s = fm_screen_new(&c, NULL);
    assert_non_null(s);
    double scale = -1, b = -1;
    assert_int_equal(fm_screen_judge(s, 1.5, &scale, &b), FM_SCREEN_PASS);
    assert_true(scale == 1.0 && b == 2.0);
    assert_int_equal(fm_screen_judge(s, 2.0, &scale, &b), FM_SCREEN_PASS); /* at the bound */
    assert_int_equal(fm_screen_judge(s, 8.0, &scale, &b), FM_SCREEN_CLIPPED);
    assert_true(scale == 0.25 && b == 2.0);
    /* overflow: above the ceiling (also with clip), NaN, infinity; not recorded */
    int held = fm_screen_held(s);
    assert_int_equal(fm_screen_judge(s, 2e18, &scale, &b), FM_SCREEN_OVERFLOW);
    assert_true(scale == 1.0);
    assert_int_equal(fm_screen_judge(s, NAN, NULL, NULL), FM_SCREEN_OVERFLOW);
    assert_int_equal(fm_screen_judge(s, INFINITY, NULL, NULL), FM_SCREEN_OVERFLOW);
    assert_int_equal(fm_screen_held(s), held);
    assert_int_equal(fm_screen_judge(s, 1e18, NULL, NULL), FM_SCREEN_CLIPPED); /* = ceiling */
    /* reject */
    c.action = FM_SCREEN_REJECT;
    assert_int_equal(fm_screen_set(s, &c), 0);
    assert_int_equal(fm_screen_judge(s, 8.0, &scale, &b), FM_SCREEN_REJECTED);
    assert_true(b == 2.0);
    assert_int_equal(fm_screen_judge(s, 1.0, &scale, NULL), FM_SCREEN_PASS);
    /* no bound: everything below the ceiling passes */
    c.bound = 0;
    assert_int_equal(fm_screen_set(s, &c), 0);
    assert_int_equal(fm_screen_judge(s, 9e17, &scale, &b), FM_SCREEN_PASS);
    assert_true(b == 0.0 && fm_screen_bound(s) == 0.0);
    assert_int_equal(fm_screen_judge(s, 1.1e18, NULL, NULL), FM_SCREEN_OVERFLOW);
    fm_screen_destroy(&s);
    fm_screen_destroy(&s);
}

/* The relative bound against a naive model of the documented rule: no bound until the
 * window is full, then factor x median (even: mean of the two middle values) of the last W
 * recorded norms, each recorded as min(norm, bound). */
static void test_screen_relative_matches_naive(void **state)
{
    static const int windows[] = {1, 4, 5};
    static const fm_screen_action_t actions[] = {FM_SCREEN_CLIP, FM_SCREEN_REJECT};
    fm_rng_t rng;
    fm_rng_seed(&rng, 77, 0);
    for (size_t wi = 0; wi < 3; wi++)
        for (size_t ai = 0; ai < 2; ai++) {
            int w = windows[wi];
            fm_screen_config_t c = {
                .bound = 1.5, .mode = FM_SCREEN_RELATIVE, .action = actions[ai], .window = w};
            fm_screen_t *s = fm_screen_new(&c, NULL);
            assert_non_null(s);
            double ring[8], sorted[8];
            int held = 0, next = 0, clipped = 0, rejected = 0;
            for (int step = 0; step < 300; step++) {
                double norm = fm_rng_uniform(&rng) < 0.2 ? 10 + 100 * fm_rng_uniform(&rng)
                                                         : 1 + fm_rng_uniform(&rng);
                double want_b = 0;
                if (held == w) {
                    memcpy(sorted, ring, sizeof(double) * (size_t)w);
                    qsort(sorted, (size_t)w, sizeof(double), s_cmp_double);
                    want_b = 1.5 *
                             (w % 2 ? sorted[w / 2] : (sorted[w / 2 - 1] + sorted[w / 2]) / 2);
                }
                assert_true(fm_screen_bound(s) == want_b);
                double scale = 0, b = -1;
                fm_screen_verdict_t v = fm_screen_judge(s, norm, &scale, &b);
                assert_true(b == want_b);
                int over = want_b > 0 && norm > want_b;
                fm_screen_verdict_t want_v = !over                           ? FM_SCREEN_PASS
                                             : actions[ai] == FM_SCREEN_CLIP ? FM_SCREEN_CLIPPED
                                                                             : FM_SCREEN_REJECTED;
                if (v != want_v)
                    fail_msg("window %d %s step %d: norm %g bound %g: verdict %d, want %d", w,
                             fm_screen_action_name(actions[ai]), step, norm, want_b, v, want_v);
                assert_true(scale == (want_v == FM_SCREEN_CLIPPED ? want_b / norm : 1.0));
                clipped += v == FM_SCREEN_CLIPPED;
                rejected += v == FM_SCREEN_REJECTED;
                ring[next] = over ? want_b : norm;
                next = (next + 1) % w;
                held += held < w;
            }
            assert_true(clipped + rejected > 30); /* the large norms were bounded */
            fm_screen_destroy(&s);
        }
}

static void test_screen_config(void **state)
{
    fm_screen_config_t c = {.bound = 0.5, .mode = FM_SCREEN_RELATIVE, .window = 3};
    fm_errmsg_t e = {{0}};
    int err = 0;
    assert_int_equal(fm_screen_check(&c, &e), FM_EARG);
    assert_non_null(strstr(e.msg, ">= 1"));
    assert_null(fm_screen_new(&c, &err));
    assert_int_equal(err, FM_EARG);
    c.bound = -1;
    c.mode = FM_SCREEN_ABSOLUTE;
    assert_int_equal(fm_screen_check(&c, NULL), FM_EARG);
    c.bound = NAN;
    assert_int_equal(fm_screen_check(&c, NULL), FM_EARG);
    c.bound = 0.5; /* absolute: any bound > 0 */
    assert_int_equal(fm_screen_check(&c, NULL), 0);
    c.window = 0;
    assert_int_equal(fm_screen_check(&c, NULL), FM_EARG);
    c.window = 3;
    c.action = (fm_screen_action_t)7;
    assert_int_equal(fm_screen_check(&c, NULL), FM_EARG);
    c.action = FM_SCREEN_REJECT;
    fm_screen_t *s = fm_screen_new(&c, NULL);
    assert_non_null(s);
    /* set keeps the window's size and norms */
    fm_screen_config_t d = {.bound = 2, .mode = FM_SCREEN_RELATIVE, .window = 99};
    for (int i = 0; i < 3; i++)
        fm_screen_judge(s, 0.1 * (i + 1), NULL, NULL);
    assert_int_equal(fm_screen_set(s, &d), 0);
    assert_int_equal(fm_screen_config(s)->window, 3);
    assert_int_equal(fm_screen_held(s), 3);
    assert_true(fabs(fm_screen_bound(s) - 0.4) < 1e-15); /* 2 x median(0.1, 0.2, 0.3) */
    d.bound = 0.9;
    assert_int_equal(fm_screen_set(s, &d), FM_EARG);
    assert_true(fm_screen_config(s)->bound == 2);
    assert_string_equal(fm_screen_mode_name(FM_SCREEN_RELATIVE), "relative");
    assert_null(fm_screen_mode_name(2));
    assert_string_equal(fm_screen_action_name(FM_SCREEN_CLIP), "clip");
    fm_screen_destroy(&s);
}

/* ---- fm_fedbuff_begin_ex ---------------------------------------------------------------------
 */

static void test_fedbuff_begin_ex(void **state)
{
    const size_t n = 257;
    fm_staleness_t st;
    assert_int_equal(fm_staleness_parse(&st, "polynomial", 0.5, 0, NULL), 0);
    fm_fedbuff_t *a = fm_fedbuff_new(n, 3, &st, 1, NULL), *b = fm_fedbuff_new(n, 3, &st, 1, NULL);
    assert_non_null(a);
    assert_non_null(b);
    fm_rng_t rng;
    fm_rng_seed(&rng, 3, 0);
    float *d = fm_tu_floats(n), *x = fm_tu_floats(n), *y = fm_tu_floats(n);
    /* scale 1 (and any declared norm): bit for bit what fm_fedbuff_begin folds */
    for (int i = 0; i < 3; i++) {
        fm_tu_normal(&rng, d, n, 1.0);
        uint64_t tau = (uint64_t)i * 3, ns = 17 + (uint64_t)i * 1000;
        assert_int_equal(fm_fedbuff_begin(a, tau, ns), 0);
        assert_int_equal(fm_fedbuff_fold_span(a, 0, n, d), 0);
        fm_fedbuff_end(a);
        assert_int_equal(fm_fedbuff_begin_ex(b, tau, ns, 1.0, 12.5), 0);
        assert_int_equal(fm_fedbuff_fold_span(b, 0, n, d), 0);
        fm_fedbuff_end(b);
    }
    assert_int_equal(fm_fedbuff_take(a, x), 0);
    assert_int_equal(fm_fedbuff_take(b, y), 0);
    assert_memory_equal(x, y, n * sizeof *x);
    /* a clip factor scales the delta, not the denominator: (0.5 d1 10 + d2 30) / 40 */
    float *d2 = fm_tu_floats(n);
    fm_tu_normal(&rng, d, n, 1.0);
    fm_tu_normal(&rng, d2, n, 1.0);
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 10, 0.5, 1.0), 0);
    assert_int_equal(fm_fedbuff_fold_span(b, 0, n, d), 0);
    fm_fedbuff_end(b);
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 30, 1.0, 1.0), 0);
    assert_int_equal(fm_fedbuff_fold_span(b, 0, n, d2), 0);
    fm_fedbuff_end(b);
    assert_int_equal(fm_fedbuff_take(b, y), 0);
    for (size_t j = 0; j < n; j++) {
        double want = (0.5 * 10 * d[j] + 30.0 * d2[j]) / 40.0;
        if (!(fabs(y[j] - want) <= 1e-6 * (fabs(d[j]) + fabs(d2[j]))))
            fail_msg("clipped mean [%zu] = %g, want %g", j, y[j], want);
    }
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 1, 0.0, 1.0), FM_ERANGE);
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 1, INFINITY, 1.0), FM_ERANGE);
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 1, 1.0, NAN), FM_ENONFINITE);
    assert_int_equal(fm_fedbuff_begin_ex(b, 0, 1, 1.0, -1.0), FM_ENONFINITE);
    fm_fedbuff_destroy(&a);
    fm_fedbuff_destroy(&b);

    /* the accumulator's guard: n ~ 1.8e19 samples x norm 9e17: the sixth update of a buffer
     * would take sum w ||d|| over FLT_MAX / 4 and is refused (nothing changed); the buffer's
     * mean stays finite; after the take the mass is 0 again */
    fm_staleness_t one = {.kind = FM_STALENESS_CONSTANT};
    fm_fedbuff_t *g = fm_fedbuff_new(n, 10, &one, 1, NULL);
    assert_non_null(g);
    fm_tu_fill(d, n, 0);
    d[0] = 9e17f; /* norm 9e17 */
    const uint64_t huge = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fm_fedbuff_begin_ex(g, 0, huge, 1.0, 9e17), 0);
        assert_int_equal(fm_fedbuff_fold_span(g, 0, n, d), 0);
        fm_fedbuff_end(g);
    }
    assert_int_equal(fm_fedbuff_begin_ex(g, 0, huge, 1.0, 9e17), FM_ENONFINITE);
    assert_int_equal(fm_fedbuff_count(g), 5);
    assert_int_equal(fm_fedbuff_begin_ex(g, 0, 1, 1.0, 9e17), 0); /* a small weight fits */
    fm_fedbuff_end(g);
    assert_int_equal(fm_fedbuff_take(g, y), 0);
    assert_true(fm_tu_all_finite(y, n));
    assert_true(fabsf(y[0] - 9e17f) <= 1e-6f * 9e17f);
    assert_int_equal(fm_fedbuff_begin_ex(g, 0, huge, 1.0, 9e17), 0);
    fm_fedbuff_end(g);
    fm_fedbuff_reset(g);
    fm_fedbuff_destroy(&g);
    free(d);
    free(d2);
    free(x);
    free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_match_naive),
        cmocka_unit_test(test_rules_resist_sign_flip),
        cmocka_unit_test(test_trimmed_zero_is_fedbuff),
        cmocka_unit_test(test_robust_life_cycle),
        cmocka_unit_test(test_sumsq),
        cmocka_unit_test(test_screen_absolute),
        cmocka_unit_test(test_screen_relative_matches_naive),
        cmocka_unit_test(test_screen_config),
        cmocka_unit_test(test_fedbuff_begin_ex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
