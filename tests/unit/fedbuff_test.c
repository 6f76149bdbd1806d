/* Unit tests of fm_fedbuff: the staleness functions, the buffered mean against values computed
 * by hand for each staleness function with sample weighting on and off, span folding and
 * unaligned sources against the whole-vector fold (bitwise), the buffer's life cycle and
 * errors, and its memory (nparams floats whatever K is, nothing allocated after new).
 *
 * Expected means are exact decimal arithmetic written out in the comments (irrational ones to
 * 10 significant digits). The fold runs in float, so comparisons allow 1e-6 relative: a few
 * float roundings of ~6e-8 each, while the mistakes targeted (renormalising the staleness
 * discount, ignoring it or the sample weights, a hinge measured from 0 instead of b, a stale
 * denominator after take/reset) all move a value by more than 1e-2 relative. (The hinge is
 * continuous at tau = b, so `<` versus `<=` there is not observable and not tested.) */
#include <errno.h>
#include <float.h>
#include <malloc.h>
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

#define RTOL 1e-6

/* |got[i] - want[i]| <= RTOL |want[i]| for i < n (want 0 must be exactly 0). */
static void s_expect(const float *got, const double *want, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= RTOL * fabs(want[i])))
            fail_msg("%s[%d] = %.9g, expected %.10g", what, i, got[i], want[i]);
}

static void s_expect_d(double got, double want, const char *what)
{
    if (!(fabs(got - want) <= 1e-12 * fabs(want)))
        fail_msg("%s = %.15g, expected %.15g", what, got, want);
}

static fm_staleness_t s_stal(const char *kind, double a, double b)
{
    fm_staleness_t s;
    fm_errmsg_t e = {{0}};
    int rc = fm_staleness_parse(&s, kind, a, b, &e);
    if (rc != 0)
        fail_msg("parse %s: %s", kind, e.msg);
    return s;
}

static fm_fedbuff_t *s_new(size_t n, int k, const fm_staleness_t *s, int wbs)
{
    int err = 0;
    fm_fedbuff_t *b = fm_fedbuff_new(n, k, s, wbs, &err);
    if (!b)
        fail_msg("fm_fedbuff_new: %s", fm_strerror(err));
    return b;
}

/* ---- staleness functions --------------------------------------------------------------- */

static void test_staleness_weight(void **state)
{
    fm_staleness_t c = s_stal("constant", 0.0, 0.0);
    s_expect_d(fm_staleness_weight(&c, 0), 1.0, "constant(0)");
    s_expect_d(fm_staleness_weight(&c, 7), 1.0, "constant(7)");
    s_expect_d(fm_staleness_weight(&c, UINT64_MAX), 1.0, "constant(max)");

    /* (1 + tau)^-0.5: tau 0 -> 1, 3 -> 4^-.5 = 0.5, 8 -> 9^-.5 = 1/3, 99 -> 0.1 */
    fm_staleness_t p = s_stal("polynomial", 0.5, 0.0);
    s_expect_d(fm_staleness_weight(&p, 0), 1.0, "poly(0)");
    s_expect_d(fm_staleness_weight(&p, 3), 0.5, "poly(3)");
    s_expect_d(fm_staleness_weight(&p, 8), 1.0 / 3.0, "poly(8)");
    s_expect_d(fm_staleness_weight(&p, 99), 0.1, "poly(99)");
    /* a = 1: (1 + 4)^-1 = 0.2; a = 2: (1 + 1)^-2 = 0.25 */
    p = s_stal("polynomial", 1.0, 0.0);
    s_expect_d(fm_staleness_weight(&p, 4), 0.2, "poly a=1 (4)");
    p = s_stal("polynomial", 2.0, 0.0);
    s_expect_d(fm_staleness_weight(&p, 1), 0.25, "poly a=2 (1)");
    double far = fm_staleness_weight(&p, UINT64_MAX);
    assert_true(far >= 0.0 && far < 1e-37);

    /* hinge a = 0.5, b = 2: 1 up to and including tau = 2, then 1/(0.5 (tau - 2) + 1):
     * tau 3 -> 1/1.5 = 2/3, tau 8 -> 1/4 */
    fm_staleness_t h = s_stal("hinge", 0.5, 2.0);
    s_expect_d(fm_staleness_weight(&h, 0), 1.0, "hinge(0)");
    s_expect_d(fm_staleness_weight(&h, 1), 1.0, "hinge(1)");
    s_expect_d(fm_staleness_weight(&h, 2), 1.0, "hinge(2) (= b)"); /* either branch: 1/(0+1) */
    s_expect_d(fm_staleness_weight(&h, 3), 2.0 / 3.0, "hinge(3)");
    s_expect_d(fm_staleness_weight(&h, 8), 0.25, "hinge(8)");
    /* hinge a = 10, b = 0: tau 1 -> 1/11; b = 0 means only fresh updates are undiscounted */
    h = s_stal("hinge", 10.0, 0.0);
    s_expect_d(fm_staleness_weight(&h, 0), 1.0, "hinge b=0 (0)");
    s_expect_d(fm_staleness_weight(&h, 1), 1.0 / 11.0, "hinge b=0 (1)");
    /* fractional b: tau 3 > 2.5 -> 1/(10 * 0.5 + 1) = 1/6 */
    h = s_stal("hinge", 10.0, 2.5);
    s_expect_d(fm_staleness_weight(&h, 2), 1.0, "hinge b=2.5 (2)");
    s_expect_d(fm_staleness_weight(&h, 3), 1.0 / 6.0, "hinge b=2.5 (3)");

    assert_string_equal(fm_staleness_name(FM_STALENESS_CONSTANT), "constant");
    assert_string_equal(fm_staleness_name(FM_STALENESS_POLYNOMIAL), "polynomial");
    assert_string_equal(fm_staleness_name(FM_STALENESS_HINGE), "hinge");
}

static void test_staleness_parse(void **state)
{
    const double nan = NAN, inf = INFINITY;
    struct {
        const char *kind;
        double a, b;
        const char *word; /* NULL: valid; else a word the message must contain */
    } cases[] = {
        {"constant", 0.0, 0.0, NULL},
        {"constant", -5.0, nan, NULL}, /* a, b unused by constant: ignored */
        {"polynomial", 0.5, 0.0, NULL},
        {"polynomial", 0.5, -1.0, NULL}, /* b unused by polynomial */
        {"hinge", 10.0, 2.0, NULL},
        {"hinge", 1e-9, 0.0, NULL},
        {"polynomial", 0.0, 0.0, "a = 0"},
        {"polynomial", -0.5, 0.0, "a = -0.5"},
        {"polynomial", nan, 0.0, "a = nan"},
        {"polynomial", inf, 0.0, "a = inf"},
        {"hinge", 0.0, 2.0, "a = 0"},
        {"hinge", 10.0, -1.0, "b = -1"},
        {"hinge", 10.0, nan, "b = nan"},
        {"hinge", 10.0, inf, "b = inf"},
        {"linear", 1.0, 0.0, "linear"},
        {"", 1.0, 0.0, "unknown"},
        {"Polynomial", 0.5, 0.0, "Polynomial"},
        {NULL, 0.5, 0.0, "missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_staleness_t s = {.kind = FM_STALENESS_HINGE, .a = 123.0, .b = 456.0};
        fm_errmsg_t e = {{0}};
        int rc = fm_staleness_parse(&s, cases[i].kind, cases[i].a, cases[i].b, &e);
        int rc_null = fm_staleness_parse(&s, cases[i].kind, cases[i].a, cases[i].b, NULL);
        if (!cases[i].word) {
            if (rc != 0 || rc_null != 0 || strcmp(fm_staleness_name(s.kind), cases[i].kind) != 0)
                fail_msg("case %zu (%s): valid config rejected: rc %d '%s'", i, cases[i].kind, rc,
                         e.msg);
            assert_int_equal(fm_staleness_check(&s, NULL), 0);
        } else {
            if (rc != FM_EARG || rc_null != FM_EARG || !strstr(e.msg, cases[i].word) ||
                strchr(e.msg, '\n'))
                fail_msg("case %zu: rc %d, msg '%s' (want '%s')", i, rc, e.msg, cases[i].word);
            /* *s untouched on failure */
            assert_true(s.kind == FM_STALENESS_HINGE && s.a == 123.0 && s.b == 456.0);
        }
    }
    /* an invalid struct is refused by fm_fedbuff_new */
    fm_staleness_t bad = {.kind = FM_STALENESS_POLYNOMIAL, .a = -1.0};
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_staleness_check(&bad, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "polynomial"));
    int err = 0;
    assert_null(fm_fedbuff_new(3, 3, &bad, 0, &err));
    assert_int_equal(err, FM_EARG);
    bad.kind = (fm_staleness_kind_t)42;
    assert_int_equal(fm_staleness_check(&bad, NULL), FM_EARG);
}

/* ---- the buffered mean, by hand --------------------------------------------------------- *
 * Three updates, n = 3:
 *   d1 = ( 1,    2,    -1)   tau 0   num_samples 10
 *   d2 = ( 0.5, -1,     2)   tau 2   num_samples 20
 *   d3 = (-2,    0.25,  1)   tau 8   num_samples 30
 * s(tau) for (tau 0, 2, 8):
 *   constant              1, 1, 1
 *   polynomial a = 0.5    1, 3^-.5 = 0.5773502692, 9^-.5 = 1/3
 *   hinge a = 0.5, b = 2  1, 1 (tau = b), 1/(0.5 (8 - 2) + 1) = 1/4
 * delta_bar = sum_i s_i c_i d_i / sum_i c_i, c = (1, 1, 1) or (10, 20, 30). */
static const float s_d[3][3] = {{1.0f, 2.0f, -1.0f}, {0.5f, -1.0f, 2.0f}, {-2.0f, 0.25f, 1.0f}};
static const uint64_t s_tau[3] = {0, 2, 8};
static const uint64_t s_ns[3] = {10, 20, 30};

static void s_check_mean(const fm_staleness_t *s, int wbs, const double want[3], const char *what)
{
    fm_fedbuff_t *b = s_new(3, 3, s, wbs);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fm_fedbuff_count(b), i);
        assert_false(fm_fedbuff_full(b));
        assert_int_equal(fm_fedbuff_add(b, s_d[i], s_tau[i], s_ns[i]), 0);
    }
    assert_int_equal(fm_fedbuff_count(b), 3);
    assert_true(fm_fedbuff_full(b));
    float out[3];
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    s_expect(out, want, 3, what);
    assert_int_equal(fm_fedbuff_count(b), 0);
    fm_fedbuff_destroy(&b);
}

static void test_mean_constant(void **state)
{
    fm_staleness_t s = s_stal("constant", 0.0, 0.0);
    /* (d1 + d2 + d3) / 3 = (1 + .5 - 2, 2 - 1 + .25, -1 + 2 + 1) / 3 = (-.5, 1.25, 2) / 3 */
    const double plain[3] = {-0.1666666667, 0.4166666667, 0.6666666667};
    s_check_mean(&s, 0, plain, "constant, unweighted");
    /* (10 d1 + 20 d2 + 30 d3) / 60
     *   = (10 + 10 - 60, 20 - 20 + 7.5, -10 + 40 + 30) / 60 = (-40, 7.5, 60) / 60 */
    const double weighted[3] = {-0.6666666667, 0.125, 1.0};
    s_check_mean(&s, 1, weighted, "constant, by samples");
}

static void test_mean_polynomial(void **state)
{
    fm_staleness_t s = s_stal("polynomial", 0.5, 0.0);
    /* (d1 + 0.5773502692 d2 + d3/3) / 3:
     *   x (1 + 0.2886751346 - 0.6666666667) / 3 = 0.6220084679 / 3
     *   y (2 - 0.5773502692 + 0.0833333333) / 3 = 1.5059830641 / 3
     *   z (-1 + 1.1547005384 + 0.3333333333) / 3 = 0.4880338717 / 3
     * (FedBuff's (1/K) sum s(tau_i) delta_i) */
    const double plain[3] = {0.2073361560, 0.5019943547, 0.1626779572};
    s_check_mean(&s, 0, plain, "polynomial, unweighted");
    /* (10 d1 + 20 * 0.5773502692 d2 + 30/3 d3) / 60, 20 * 0.5773502692 = 11.54700538:
     *   x (10 + 5.773502692 - 20) / 60 = -4.226497308 / 60
     *   y (20 - 11.54700538 + 2.5) / 60 = 10.95299462 / 60
     *   z (-10 + 23.09401077 + 10) / 60 = 23.09401077 / 60
     * (the denominator stays 60: the discount is not renormalised) */
    const double weighted[3] = {-0.07044162180, 0.1825499103, 0.3849001795};
    s_check_mean(&s, 1, weighted, "polynomial, by samples");
}

static void test_mean_hinge(void **state)
{
    fm_staleness_t s = s_stal("hinge", 0.5, 2.0);
    /* (d1 + d2 + d3/4) / 3 = (1 + .5 - .5, 2 - 1 + .0625, -1 + 2 + .25) / 3
     *                      = (1, 1.0625, 1.25) / 3 */
    const double plain[3] = {0.3333333333, 0.3541666667, 0.4166666667};
    s_check_mean(&s, 0, plain, "hinge, unweighted");
    /* (10 d1 + 20 d2 + 30/4 d3) / 60 = (10 + 10 - 15, 20 - 20 + 1.875, -10 + 40 + 7.5) / 60
     *                                = (5, 1.875, 37.5) / 60 */
    const double weighted[3] = {0.08333333333, 0.03125, 0.625};
    s_check_mean(&s, 1, weighted, "hinge, by samples");
}

/* ---- life cycle -------------------------------------------------------------------------- */

/* take on an empty buffer; take and reset clear the accumulator AND the denominator. */
static void test_take_reset(void **state)
{
    fm_staleness_t s = s_stal("constant", 0.0, 0.0);
    fm_fedbuff_t *b = s_new(3, 2, &s, 1);
    float out[3] = {7.0f, 7.0f, 7.0f};
    assert_int_equal(fm_fedbuff_take(b, out), FM_ERANGE);
    assert_true(out[0] == 7.0f && out[1] == 7.0f && out[2] == 7.0f); /* untouched */

    /* 10 d1 + 20 d2, then reset: nothing of it must survive */
    assert_int_equal(fm_fedbuff_add(b, s_d[0], 0, 10), 0);
    assert_int_equal(fm_fedbuff_add(b, s_d[1], 0, 20), 0);
    assert_true(fm_fedbuff_full(b));
    fm_fedbuff_reset(b);
    assert_int_equal(fm_fedbuff_count(b), 0);
    assert_false(fm_fedbuff_full(b));
    assert_int_equal(fm_fedbuff_take(b, out), FM_ERANGE);
    /* d3 alone with 30 samples: mean = 30 d3 / 30 = d3 (a stale denominator 60 would halve it) */
    assert_int_equal(fm_fedbuff_add(b, s_d[2], 0, 30), 0);
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    const double d3[3] = {-2.0, 0.25, 1.0};
    s_expect(out, d3, 3, "after reset");
    assert_int_equal(fm_fedbuff_take(b, out), FM_ERANGE); /* take emptied it */

    /* over-filling past k is allowed (full stays 1); (d1 + d2 + d3) with 10 samples each */
    for (int i = 0; i < 3; i++)
        assert_int_equal(fm_fedbuff_add(b, s_d[i], 0, 10), 0);
    assert_int_equal(fm_fedbuff_count(b), 3);
    assert_true(fm_fedbuff_full(b));
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    const double mean[3] = {-0.1666666667, 0.4166666667, 0.6666666667};
    s_expect(out, mean, 3, "over-filled");

    /* reset drops an open update too */
    assert_int_equal(fm_fedbuff_begin(b, 0, 10), 0);
    assert_int_equal(fm_fedbuff_fold_span(b, 0, 3, s_d[0]), 0);
    fm_fedbuff_reset(b);
    assert_int_equal(fm_fedbuff_add(b, s_d[1], 0, 10), 0);
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    const double d2[3] = {0.5, -1.0, 2.0};
    s_expect(out, d2, 3, "reset of an open update");

    assert_int_equal(fm_fedbuff_nparams(b), 3);
    assert_int_equal(fm_fedbuff_k(b), 2);
    fm_fedbuff_destroy(&b);
    assert_null(b);
    fm_fedbuff_destroy(&b); /* idempotent */
    fm_fedbuff_destroy(NULL);
}

static void test_errors(void **state)
{
    fm_staleness_t s = s_stal("polynomial", 0.5, 0.0);
    int err = 0;
    assert_null(fm_fedbuff_new(3, 0, &s, 0, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_fedbuff_new(3, -1, &s, 0, NULL));
    err = 0;
    assert_null(fm_fedbuff_new(SIZE_MAX / 2, 3, &s, 0, &err));
    assert_int_equal(err, -ENOMEM);

    fm_fedbuff_t *b = s_new(4, 3, &s, 1);
    /* 0 samples with sample weighting: refused, nothing opened */
    assert_int_equal(fm_fedbuff_begin(b, 0, 0), FM_ERANGE);
    assert_int_equal(fm_fedbuff_add(b, s_d[0], 0, 0), FM_ERANGE);
    assert_int_equal(fm_fedbuff_count(b), 0);
    /* spans outside [0, 4): refused, nothing folded */
    const float x[5] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    assert_int_equal(fm_fedbuff_begin(b, 3, 5), 0); /* s = 0.5, c = 5 */
    assert_int_equal(fm_fedbuff_fold_span(b, 0, 5, x), FM_ERANGE);
    assert_int_equal(fm_fedbuff_fold_span(b, 4, 1, x), FM_ERANGE);
    assert_int_equal(fm_fedbuff_fold_span(b, 5, 0, x), FM_ERANGE);
    assert_int_equal(fm_fedbuff_fold_span(b, 1, SIZE_MAX, x), FM_ERANGE);
    assert_int_equal(fm_fedbuff_fold_span(b, SIZE_MAX, 2, x), FM_ERANGE); /* no wrap-around */
    assert_int_equal(fm_fedbuff_fold_span(b, 4, 0, x), 0);                /* empty, at the end */
    assert_int_equal(fm_fedbuff_fold_span(b, 1, 3, x), 0);
    fm_fedbuff_end(b);
    /* only [1, 4) was folded: 0.5 * 5 * 1 / 5 = 0.5 there, 0 at index 0 */
    float out[4];
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    assert_true(out[0] == 0.0f);
    const double want[3] = {0.5, 0.5, 0.5};
    s_expect(out + 1, want, 3, "partial cover");
    /* without sample weighting, num_samples 0 is fine (c = 1) */
    fm_fedbuff_t *b2 = s_new(3, 3, &s, 0);
    assert_int_equal(fm_fedbuff_add(b2, s_d[0], 0, 0), 0);
    fm_fedbuff_destroy(&b2);
    fm_fedbuff_destroy(&b);
}

/* ---- spans and alignment: the same arithmetic per element, so bitwise equal ---------------- */

enum { NBIG = 1000 };

static void test_fold_span_equals_add(void **state)
{
    fm_staleness_t s = s_stal("hinge", 0.5, 1.0);
    fm_rng_t rng;
    fm_rng_seed(&rng, 7, 0);
    float *d = fm_tu_floats(3 * NBIG), *a = fm_tu_floats(NBIG), *c = fm_tu_floats(NBIG);
    fm_tu_normal(&rng, d, 3 * NBIG, 1.0);
    fm_fedbuff_t *whole = s_new(NBIG, 3, &s, 1), *spans = s_new(NBIG, 3, &s, 1);
    /* (offset, numel): spans across the 16-float vector width, one empty, in shuffled order,
     * covering [0, NBIG) exactly once */
    const size_t cut[][2] = {{500, 500}, {0, 1}, {17, 0}, {1, 16}, {17, 483}};
    for (int u = 0; u < 3; u++) {
        uint64_t tau = (uint64_t)u * 2, ns = 100 + (uint64_t)u * 7;
        const float *du = d + (size_t)u * NBIG;
        assert_int_equal(fm_fedbuff_add(whole, du, tau, ns), 0);
        assert_int_equal(fm_fedbuff_begin(spans, tau, ns), 0);
        for (size_t k = 0; k < sizeof cut / sizeof cut[0]; k++)
            assert_int_equal(fm_fedbuff_fold_span(spans, cut[k][0], cut[k][1], du + cut[k][0]),
                             0);
        fm_fedbuff_end(spans);
    }
    assert_int_equal(fm_fedbuff_take(whole, a), 0);
    assert_int_equal(fm_fedbuff_take(spans, c), 0);
    assert_memory_equal(a, c, NBIG * sizeof(float));
    assert_true(fm_tu_max_abs(a, NBIG) > 0.1);
    fm_fedbuff_destroy(&whole);
    fm_fedbuff_destroy(&spans);
    free(d), free(a), free(c);
}

static void test_unaligned_source(void **state)
{
    fm_staleness_t s = s_stal("polynomial", 0.5, 0.0);
    fm_rng_t rng;
    fm_rng_seed(&rng, 8, 0);
    float *d = fm_tu_floats(NBIG), *ref = fm_tu_floats(NBIG), *got = fm_tu_floats(NBIG);
    fm_tu_uniform(&rng, d, NBIG, -1.0, 1.0);
    fm_fedbuff_t *b = s_new(NBIG, 2, &s, 1);
    assert_int_equal(fm_fedbuff_add(b, d, 3, 40), 0);
    assert_int_equal(fm_fedbuff_add(b, d, 0, 10), 0);
    assert_int_equal(fm_fedbuff_take(b, ref), 0);
    unsigned char *raw = fm_tu_alloc(NBIG * sizeof(float) + 8, 1);
    for (int off = 1; off < 4; off++) {
        unsigned char *src = raw + off; /* not float-aligned */
        memcpy(src, d, NBIG * sizeof(float));
        assert_int_equal(fm_fedbuff_add(b, src, 3, 40), 0);
        /* second update in two unaligned spans, the split itself at an odd float */
        assert_int_equal(fm_fedbuff_begin(b, 0, 10), 0);
        assert_int_equal(fm_fedbuff_fold_span(b, 0, 333, src), 0);
        assert_int_equal(fm_fedbuff_fold_span(b, 333, NBIG - 333, src + 333 * sizeof(float)), 0);
        fm_fedbuff_end(b);
        assert_int_equal(fm_fedbuff_take(b, got), 0);
        if (memcmp(ref, got, NBIG * sizeof(float)) != 0)
            fail_msg("offset %d: unaligned fold differs", off);
    }
    /* hand check of element 0: (0.5 * 40 + 1 * 10) d / 50 = 0.6 d */
    const double w0 = 0.6 * d[0];
    s_expect(got, &w0, 1, "unaligned element 0");
    fm_fedbuff_destroy(&b);
    free(raw), free(d), free(ref), free(got);
}

static void test_span_finite(void **state)
{
    float v[40];
    fm_tu_fill(v, 40, 1.0f);
    v[3] = FLT_MAX, v[4] = -FLT_MAX, v[5] = FLT_MIN / 4.0f /* subnormal */, v[6] = -0.0f;
    unsigned char raw[sizeof v + 4];
    unsigned char *src = raw + 1;
    memcpy(src, v, sizeof v);
    assert_int_equal(fm_fedbuff_span_finite(src, 40), 1);
    assert_int_equal(fm_fedbuff_span_finite(src, 0), 1);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++)
        for (int pos = 0; pos < 40; pos += 13) {
            memcpy(src, v, sizeof v);
            memcpy(src + pos * sizeof(float), &bad[k], sizeof(float));
            if (fm_fedbuff_span_finite(src, 40) != 0)
                fail_msg("bad value %d at %d not found", k, pos);
            assert_int_equal(fm_fedbuff_span_finite(src, (size_t)pos), 1); /* before it */
        }
}

/* ---- statistics ---------------------------------------------------------------------------- */

static void test_stats(void **state)
{
    fm_staleness_t s = s_stal("constant", 0.0, 0.0);
    fm_fedbuff_t *b = s_new(3, 2, &s, 0);
    fm_fedbuff_stats_t st;
    fm_fedbuff_stats(b, &st);
    assert_true(st.updates == 0 && st.takes == 0 && st.staleness_sum == 0.0 &&
                st.staleness_max == 0);
    float out[3];
    /* taus 0, 2, 8 in one buffer (taken), then 5 (reset): counted at end, kept across both */
    for (int i = 0; i < 3; i++)
        assert_int_equal(fm_fedbuff_add(b, s_d[i], s_tau[i], 1), 0);
    assert_int_equal(fm_fedbuff_take(b, out), 0);
    assert_int_equal(fm_fedbuff_add(b, s_d[0], 5, 1), 0);
    fm_fedbuff_reset(b);
    assert_int_equal(fm_fedbuff_begin(b, 100, 1), 0); /* never ended: not counted */
    fm_fedbuff_reset(b);
    fm_fedbuff_stats(b, &st);
    assert_int_equal(st.updates, 4);
    assert_int_equal(st.takes, 1);
    assert_true(st.staleness_sum == 15.0); /* 0 + 2 + 8 + 5; mean 3.75 */
    assert_int_equal(st.staleness_max, 8);
    fm_fedbuff_destroy(&b);
}

/* ---- memory: nparams floats whatever K is, nothing allocated by folds --------------------- */

static size_t s_heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd; /* small chunks + mmap'd chunks */
}

static void test_memory_independent_of_k(void **state)
{
    enum { N = 4000 };
    const size_t acc_bytes = N * sizeof(float);
    fm_staleness_t s = s_stal("polynomial", 0.5, 0.0);
    float *d = fm_tu_floats(N), *out = fm_tu_floats(N);
    fm_tu_fill(d, N, 0.25f);

    /* heap growth of new(K) for K = 10, 100 and 1e6 (storing the deltas would take
     * K * 16000 bytes) */
    const int ks[3] = {10, 100, 1000000};
    size_t grew[3];
    for (int i = 0; i < 3; i++) {
        size_t h0 = s_heap_in_use();
        fm_fedbuff_t *b = s_new(N, ks[i], &s, 1);
        grew[i] = s_heap_in_use() - h0;
        fm_fedbuff_destroy(&b);
    }
    print_message("fedbuff memory: K=10 %zu bytes, K=100 %zu, K=1e6 %zu; accumulator %zu\n",
                  grew[0], grew[1], grew[2], acc_bytes);
#ifndef __SANITIZE_ADDRESS__
    /* glibc's counters (ASan's allocator does not feed them, so there they read 0): each is
     * the accumulator plus the struct, give or take where aligned_alloc splits its chunk
     * (tens of bytes, depending on the heap layout, not on K) */
    for (int i = 0; i < 3; i++)
        if (!(grew[i] >= acc_bytes && grew[i] <= acc_bytes + 512))
            fail_msg("K=%d: %zu bytes, expected %zu + at most 512", ks[i], grew[i], acc_bytes);
#endif

    /* folding K = 100 updates and taking the mean allocates nothing */
    fm_fedbuff_t *b100 = s_new(N, 100, &s, 1);
    size_t h1 = s_heap_in_use();
    for (int i = 0; i < 100; i++)
        assert_int_equal(fm_fedbuff_add(b100, d, (uint64_t)i % 7, 10), 0);
    assert_true(fm_fedbuff_full(b100));
    assert_int_equal(fm_fedbuff_take(b100, out), 0);
    assert_true(s_heap_in_use() == h1);
    fm_fedbuff_destroy(&b100);
    free(d), free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_staleness_weight),
        cmocka_unit_test(test_staleness_parse),
        cmocka_unit_test(test_mean_constant),
        cmocka_unit_test(test_mean_polynomial),
        cmocka_unit_test(test_mean_hinge),
        cmocka_unit_test(test_take_reset),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fold_span_equals_add),
        cmocka_unit_test(test_unaligned_source),
        cmocka_unit_test(test_span_finite),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_memory_independent_of_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
