/* Unit tests of fm_server_opt: each server optimiser over two consecutive rounds (so momentum
 * and second moments carry over) against values computed by hand, checkpointing the state,
 * the all-or-nothing rejection of non-finite input and results, validation, and one FedBuff
 * buffer -> FedAvgM round trip.
 *
 * Expected values are decimal arithmetic written out in the comments (irrational ones to 10
 * significant digits). The optimiser stores float, so comparisons allow 1e-6 relative, while
 * the mistakes targeted (bias correction, (1 - beta) damping in FedAvgM, v initialised to 0
 * instead of tau^2, tau inside the square root, Adam's v rule in Yogi or a flipped sign, state
 * not carried over) each move some value by more than 2e-5 relative. */
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
#include "fm_server_opt.h"

#define RTOL 1e-6

/* |got[i] - want[i]| <= RTOL |want[i]| for i < 3 (want 0 must be exactly 0). */
static void s_expect3(const float *got, double a, double b, double c, const char *what)
{
    const double want[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (!(fabs(got[i] - want[i]) <= RTOL * fabs(want[i])))
            fail_msg("%s[%d] = %.9g, expected %.10g", what, i, got[i], want[i]);
}

static void s_set(float *v, float a, float b, float c) { v[0] = a, v[1] = b, v[2] = c; }

static fm_server_opt_t *s_new(fm_server_opt_kind_t kind, double eta, double beta1, double beta2,
                              double tau)
{
    fm_server_opt_config_t cfg = {.eta = eta, .beta1 = beta1, .beta2 = beta2, .tau = tau};
    int err = 0;
    fm_server_opt_t *o = fm_server_opt_new(kind, 3, &cfg, &err);
    if (!o)
        fail_msg("fm_server_opt_new(%s): %s", fm_server_opt_kind_name(kind), fm_strerror(err));
    return o;
}

/* All cases: w0 = (1, -2, 0.5), round 1 d1 = (0.1, -0.2, 0.3), round 2 d2 = (-0.3, 0, 0.02). */
static void s_round(fm_server_opt_t *o, float *w, int round)
{
    float d[3];
    if (round == 1)
        s_set(d, 0.1f, -0.2f, 0.3f);
    else
        s_set(d, -0.3f, 0.0f, 0.02f);
    assert_int_equal(fm_server_opt_apply(o, w, d), 0);
}

/* w += eta d, eta 0.5:
 *   w1 = (1 + .05, -2 - .1, .5 + .15) = (1.05, -2.1, 0.65)
 *   w2 = (1.05 - .15, -2.1 + 0, .65 + .01) = (0.9, -2.1, 0.66) */
static void test_fedavg(void **state)
{
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDAVG, 0.5, 0.9, 0.99, 1e-3);
    assert_null(fm_server_opt_state(o));
    float w[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_round(o, w, 1);
    s_expect3(w, 1.05, -2.1, 0.65, "fedavg w1");
    s_round(o, w, 2);
    s_expect3(w, 0.9, -2.1, 0.66, "fedavg w2");
    assert_int_equal(fm_server_opt_kind(o), FM_SERVER_OPT_FEDAVG);
    assert_int_equal(fm_server_opt_nparams(o), 3);
    fm_server_opt_destroy(&o);
    assert_null(o);
    fm_server_opt_destroy(&o); /* idempotent */
    fm_server_opt_destroy(NULL);
}

/* m = beta m + d, w += eta m; eta 0.5, beta 0.9, m0 = 0:
 *   m1 = d1 = (0.1, -0.2, 0.3)                         w1 = (1.05, -2.1, 0.65)
 *   m2 = 0.9 m1 + d2 = (.09 - .3, -.18 + 0, .27 + .02) = (-0.21, -0.18, 0.29)
 *   w2 = w1 + 0.5 m2 = (1.05 - .105, -2.1 - .09, .65 + .145) = (0.945, -2.19, 0.795)
 * (with (1 - beta) damping w1 would be (1.005, -2.01, 0.515)) */
static void test_fedavgm(void **state)
{
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDAVGM, 0.5, 0.9, 0.99, 1e-3);
    float *m = fm_server_opt_state(o);
    assert_non_null(m);
    s_expect3(m, 0.0, 0.0, 0.0, "fedavgm m0");
    float w[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_round(o, w, 1);
    s_expect3(w, 1.05, -2.1, 0.65, "fedavgm w1");
    s_expect3(m, 0.1, -0.2, 0.3, "fedavgm m1");
    s_round(o, w, 2);
    s_expect3(w, 0.945, -2.19, 0.795, "fedavgm w2");
    s_expect3(m, -0.21, -0.18, 0.29, "fedavgm m2");
    fm_server_opt_destroy(&o);
}

/* One step with its own beta1 (fm_server_opt_apply_beta1), then the config's again; FedAvgM
 * eta 0.5, config beta 0.9, round 1 as test_fedavgm (m1 = d1, w1 = (1.05, -2.1, 0.65)):
 *   round 2 with beta 0.3: m2 = 0.3 m1 + d2 = (.03 - .3, -.06 + 0, .09 + .02) = (-0.27, -0.06,
 * 0.11) w2 = w1 + 0.5 m2 = (0.915, -2.13, 0.705) round 3 (d2 again, beta 0.9): m3 = 0.9 m2 + d2 =
 * (-.243 - .3, -.054, .099 + .02) = (-0.543, -0.054, 0.119) w3 = w2 + 0.5 m3 = (0.6435, -2.157,
 * 0.7645) FedAdam's first moment with beta1 0.25 in place of 0.9: m1 = 0.75 d1. A beta1 outside
 * [0, 1) is refused with nothing touched and no rejection counted. */
static void test_apply_beta1(void **state)
{
    (void)state;
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDAVGM, 0.5, 0.9, 0.99, 1e-3);
    assert_true(fm_server_opt_beta1(o) == 0.9);
    float *m = fm_server_opt_state(o);
    float w[3], d2[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(d2, -0.3f, 0.0f, 0.02f);
    s_round(o, w, 1);
    assert_int_equal(fm_server_opt_apply_beta1(o, w, d2, 0.3), 0);
    s_expect3(m, -0.27, -0.06, 0.11, "fedavgm beta 0.3 m2");
    s_expect3(w, 0.915, -2.13, 0.705, "fedavgm beta 0.3 w2");
    const double bad[] = {1.0, -0.1, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fm_server_opt_apply_beta1(o, w, d2, bad[i]), FM_EARG);
        s_expect3(w, 0.915, -2.13, 0.705, "w after a refused beta1");
        s_expect3(m, -0.27, -0.06, 0.11, "m after a refused beta1");
    }
    assert_int_equal(fm_server_opt_rejected(o), 0);
    s_round(o, w, 2);
    s_expect3(m, -0.543, -0.054, 0.119, "fedavgm m3");
    s_expect3(w, 0.6435, -2.157, 0.7645, "fedavgm w3");
    fm_server_opt_destroy(&o);

    /* fedavg: no momentum, beta1 0; any valid beta1 makes the same step */
    o = s_new(FM_SERVER_OPT_FEDAVG, 0.5, 0.9, 0.99, 1e-3);
    assert_true(fm_server_opt_beta1(o) == 0.0);
    float d1[3] = {0.1f, -0.2f, 0.3f};
    s_set(w, 1.0f, -2.0f, 0.5f);
    assert_int_equal(fm_server_opt_apply_beta1(o, w, d1, 0.7), 0);
    s_expect3(w, 1.05, -2.1, 0.65, "fedavg w1");
    fm_server_opt_destroy(&o);

    o = s_new(FM_SERVER_OPT_FEDADAM, 0.1, 0.9, 0.99, 1e-3);
    m = fm_server_opt_state(o);
    s_set(w, 1.0f, -2.0f, 0.5f);
    assert_int_equal(fm_server_opt_apply_beta1(o, w, d1, 0.25), 0);
    s_expect3(m, 0.075, -0.15, 0.225, "fedadam beta1 0.25 m1");
    fm_server_opt_destroy(&o);
}

/* FedAdam, eta 0.1, beta1 0.9, beta2 0.99, tau 1e-3; m0 = 0, v0 = tau^2 = 1e-6; no bias
 * correction.
 * round 1: m1 = 0.1 d1 = (0.01, -0.02, 0.03)
 *          v1 = 0.99e-6 + 0.01 d1^2 = 0.99e-6 + (1e-4, 4e-4, 9e-4)
 *             = (1.0099e-4, 4.0099e-4, 9.0099e-4)
 *          sqrt(v1) = (0.01004937809, 0.02002473470, 0.03001649546)
 *          step = 0.1 m1 / (sqrt(v1) + 1e-3)
 *               = (0.001/0.01104937809, -0.002/0.02102473470, 0.003/0.03101649546)
 *               = (0.09050283119, -0.09512605168, 0.09672272625)
 *          w1 = (1.090502831, -2.095126052, 0.5967227262)
 * round 2: m2 = 0.9 m1 + 0.1 d2 = (.009 - .03, -.018 + 0, .027 + .002) = (-0.021, -0.018, 0.029)
 *          v2 = 0.99 v1 + 0.01 d2^2 = (0.0000999801 + 0.0009, 0.0003969801 + 0,
 *                                      0.0008919801 + 0.000004)
 *             = (0.0009999801, 0.0003969801, 0.0008959801)
 *          sqrt(v2) = (0.03162246195, 0.01992435946, 0.02993292669)
 *          step = (-0.0021/0.03262246195, -0.0018/0.02092435946, 0.0029/0.03093292669)
 *               = (-0.06437282395, -0.08602413867, 0.09375123245)
 *          w2 = (1.026130007, -2.181150190, 0.6904739587)
 * (with bias correction round 1 would step by ~0.1 sign(d) / (1 + 1e-3/|d|): w1[0] 1.0990) */
static void test_fedadam(void **state)
{
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDADAM, 0.1, 0.9, 0.99, 1e-3);
    assert_int_equal(fm_server_opt_state_len(FM_SERVER_OPT_FEDADAM, 3), 6);
    float *m = fm_server_opt_state(o), *v = m + 3;
    s_expect3(m, 0.0, 0.0, 0.0, "fedadam m0");
    s_expect3(v, 1e-6, 1e-6, 1e-6, "fedadam v0 = tau^2");
    float w[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_round(o, w, 1);
    s_expect3(m, 0.01, -0.02, 0.03, "fedadam m1");
    s_expect3(v, 1.0099e-4, 4.0099e-4, 9.0099e-4, "fedadam v1");
    s_expect3(w, 1.090502831, -2.095126052, 0.5967227262, "fedadam w1");
    s_round(o, w, 2);
    s_expect3(m, -0.021, -0.018, 0.029, "fedadam m2");
    s_expect3(v, 0.0009999801, 0.0003969801, 0.0008959801, "fedadam v2");
    s_expect3(w, 1.026130007, -2.181150190, 0.6904739587, "fedadam w2");
    fm_server_opt_destroy(&o);
}

/* FedYogi, same hyper-parameters: v -= 0.01 d^2 sign(v - d^2); m, w as FedAdam.
 * round 1: d1^2 = (0.01, 0.04, 0.09) > v0 = 1e-6 everywhere: sign -1, v grows:
 *          v1 = 1e-6 + 0.01 d1^2 = (1.01e-4, 4.01e-4, 9.01e-4)
 *          sqrt(v1) = (0.01004987562, 0.02002498439, 0.03001666204)
 *          step = (0.001/0.01104987562, -0.002/0.02102498439, 0.003/0.03101666204)
 *               = (0.09049875621, -0.09512492197, 0.09672220680)
 *          w1 = (1.090498756, -2.095124922, 0.5967222068)
 * round 2: d2^2 = (0.09, 0, 0.0004); v1 - d2^2 = (< 0, > 0, > 0): signs (-1, +1, +1):
 *          v2 = (1.01e-4 + 9e-4, 4.01e-4 - 0, 9.01e-4 - 4e-6) = (1.001e-3, 4.01e-4, 8.97e-4)
 *          (Adam's rule would give (0.0009999801, 0.0003969801, 0.0008959801))
 *          m2 = (-0.021, -0.018, 0.029)
 *          sqrt(v2) = (0.03163858404, 0.02002498439, 0.02994995826)
 *          step = (-0.0021/0.03263858404, -0.0018/0.02102498439, 0.0029/0.03094995826)
 *               = (-0.06434102648, -0.08561242978, 0.09369964170)
 *          w2 = (1.026157730, -2.180737352, 0.6904218485) */
static void test_fedyogi(void **state)
{
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDYOGI, 0.1, 0.9, 0.99, 1e-3);
    float *m = fm_server_opt_state(o), *v = m + 3;
    s_expect3(v, 1e-6, 1e-6, 1e-6, "fedyogi v0 = tau^2");
    float w[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_round(o, w, 1);
    s_expect3(m, 0.01, -0.02, 0.03, "fedyogi m1");
    s_expect3(v, 1.01e-4, 4.01e-4, 9.01e-4, "fedyogi v1");
    s_expect3(w, 1.090498756, -2.095124922, 0.5967222068, "fedyogi w1");
    s_round(o, w, 2);
    s_expect3(m, -0.021, -0.018, 0.029, "fedyogi m2");
    s_expect3(v, 1.001e-3, 4.01e-4, 8.97e-4, "fedyogi v2");
    s_expect3(w, 1.026157730, -2.180737352, 0.6904218485, "fedyogi w2");
    fm_server_opt_destroy(&o);
}

/* Save the state after round 1, load it into a fresh optimiser, run round 2 there: the same
 * bits as running both rounds in one optimiser. reset returns to m = 0, v = tau^2. */
static void test_checkpoint_state(void **state)
{
    const fm_server_opt_kind_t kinds[] = {FM_SERVER_OPT_FEDAVGM, FM_SERVER_OPT_FEDADAM,
                                          FM_SERVER_OPT_FEDYOGI};
    for (int k = 0; k < 3; k++) {
        fm_server_opt_t *a = s_new(kinds[k], 0.1, 0.9, 0.99, 1e-3);
        fm_server_opt_t *b = s_new(kinds[k], 0.1, 0.9, 0.99, 1e-3);
        size_t len = fm_server_opt_state_len(kinds[k], 3);
        float wa[3], wb[3], saved[6];
        s_set(wa, 1.0f, -2.0f, 0.5f);
        s_round(a, wa, 1);
        memcpy(saved, fm_server_opt_state(a), len * sizeof(float));
        memcpy(wb, wa, sizeof wa);
        memcpy(fm_server_opt_state(b), saved, len * sizeof(float));
        assert_int_equal(fm_server_opt_state_check(b, NULL), 0);
        s_round(a, wa, 2);
        s_round(b, wb, 2);
        assert_memory_equal(wa, wb, sizeof wa);
        assert_memory_equal(fm_server_opt_state(a), fm_server_opt_state(b), len * sizeof(float));
        fm_server_opt_reset(b);
        const float *sb = fm_server_opt_state(b);
        for (size_t i = 0; i < len; i++)
            assert_true(sb[i] == (i < 3 ? 0.0f : (float)1e-6));
        fm_server_opt_destroy(&a);
        fm_server_opt_destroy(&b);
    }
}

/* Non-finite delta_bar, or finite input whose result overflows: FM_ENONFINITE, w and the
 * state bit-for-bit untouched, the rejection counted; the next valid apply works. */
static void test_nonfinite(void **state)
{
    const fm_server_opt_kind_t kinds[] = {FM_SERVER_OPT_FEDAVG, FM_SERVER_OPT_FEDAVGM,
                                          FM_SERVER_OPT_FEDADAM, FM_SERVER_OPT_FEDYOGI};
    const float bad[4] = {NAN, INFINITY, -INFINITY, FLT_MAX};
    for (int k = 0; k < 4; k++) {
        fm_server_opt_t *o = s_new(kinds[k], 1.0, 0.9, 0.99, 1e-3);
        size_t len = fm_server_opt_state_len(kinds[k], 3);
        float w[3], w_before[3], st_before[6] = {0}, d[3];
        s_set(w, 1.0f, -2.0f, 0.5f);
        s_round(o, w, 1); /* some non-trivial state */
        for (int j = 0; j < 4; j++) {
            memcpy(w_before, w, sizeof w);
            if (len)
                memcpy(st_before, fm_server_opt_state(o), len * sizeof(float));
            s_set(d, 0.1f, 0.1f, 0.1f);
            d[2] = bad[j];
            if (j == 3) {
                /* finite everywhere, but FLT_MAX overflows w (fedavg/fedavgm: w + FLT_MAX
                 * rounds to inf) or v (fedadam/fedyogi: (1 - beta2) FLT_MAX^2) */
                w[2] = FLT_MAX;
                memcpy(w_before, w, sizeof w);
            }
            int rc = fm_server_opt_apply(o, w, d);
            if (rc != FM_ENONFINITE)
                fail_msg("%s, bad value %d: rc %d", fm_server_opt_kind_name(kinds[k]), j, rc);
            assert_memory_equal(w, w_before, sizeof w);
            if (len)
                assert_memory_equal(fm_server_opt_state(o), st_before, len * sizeof(float));
            assert_int_equal(fm_server_opt_rejected(o), (uint64_t)j + 1);
        }
        s_set(w, 1.0f, -2.0f, 0.5f);
        s_round(o, w, 2);
        assert_true(fm_tu_all_finite(w, 3));
        assert_int_equal(fm_server_opt_rejected(o), 4);
        fm_server_opt_destroy(&o);
    }
}

static void test_state_check(void **state)
{
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDYOGI, 0.1, 0.9, 0.99, 1e-3);
    float *st = fm_server_opt_state(o);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_server_opt_state_check(o, &e), 0);
    st[1] = NAN;
    assert_int_equal(fm_server_opt_state_check(o, &e), FM_ENONFINITE);
    assert_non_null(strstr(e.msg, "m[1]"));
    st[1] = 0.0f;
    st[5] = INFINITY;
    assert_int_equal(fm_server_opt_state_check(o, &e), FM_ENONFINITE);
    assert_non_null(strstr(e.msg, "v[2]"));
    st[5] = -1e-3f;
    assert_int_equal(fm_server_opt_state_check(o, &e), FM_ERANGE);
    assert_non_null(strstr(e.msg, "v[2]"));
    st[5] = 0.0f; /* reachable with beta2 = 0 */
    assert_int_equal(fm_server_opt_state_check(o, NULL), 0);
    fm_server_opt_destroy(&o);
    o = s_new(FM_SERVER_OPT_FEDAVG, 1.0, 0.0, 0.0, 1.0);
    assert_int_equal(fm_server_opt_state_check(o, NULL), 0);
    fm_server_opt_destroy(&o);
}

static void test_kinds(void **state)
{
    const char *names[] = {"fedavg", "fedavgm", "fedadam", "fedyogi"};
    const size_t lens[] = {0, 10, 20, 20};
    for (int i = 0; i < 4; i++) {
        fm_server_opt_kind_t k = (fm_server_opt_kind_t)99;
        assert_int_equal(fm_server_opt_parse_kind(names[i], &k, NULL), 0);
        assert_int_equal(k, (fm_server_opt_kind_t)i);
        assert_string_equal(fm_server_opt_kind_name(k), names[i]);
        assert_int_equal(fm_server_opt_state_len(k, 10), lens[i]);
    }
    assert_int_equal(fm_server_opt_state_len(FM_SERVER_OPT_FEDADAM, SIZE_MAX / 2 + 1), SIZE_MAX);
    const char *bad[] = {"FedAvg", "sgd", "", "fedadamw", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_server_opt_kind_t k = FM_SERVER_OPT_FEDYOGI;
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_server_opt_parse_kind(bad[i], &k, &e), FM_EARG);
        assert_int_equal(k, FM_SERVER_OPT_FEDYOGI); /* untouched */
        assert_non_null(strstr(e.msg, "fedavg|fedavgm|fedadam|fedyogi"));
        assert_null(strchr(e.msg, '\n'));
    }
    assert_string_equal(fm_server_opt_kind_name((fm_server_opt_kind_t)7), "?");
}

static void test_config_check(void **state)
{
    const double nan = NAN, inf = INFINITY;
    enum {
        AVG = FM_SERVER_OPT_FEDAVG,
        AVGM = FM_SERVER_OPT_FEDAVGM,
        ADAM = FM_SERVER_OPT_FEDADAM,
        YOGI = FM_SERVER_OPT_FEDYOGI
    };
    struct {
        int kind;
        fm_server_opt_config_t cfg; /* eta, beta1, beta2, tau */
        const char *field;          /* NULL: valid */
    } cases[] = {
        {AVG, {1.0, 0.9, 0.99, 1e-3}, NULL},
        {AVG, {0.5, 5.0, -1.0, -1.0}, NULL}, /* fedavg uses eta only */
        {AVGM, {1.0, 0.0, 7.0, 0.0}, NULL},  /* fedavgm: eta, beta1 */
        {ADAM, {1e-2, 0.0, 0.0, 1e-9}, NULL},
        {YOGI, {1e-2, 0.999, 0.999, 1.0}, NULL},
        {AVG, {0.0, 0.9, 0.99, 1e-3}, "eta"},
        {AVG, {-1.0, 0.9, 0.99, 1e-3}, "eta"},
        {AVGM, {nan, 0.9, 0.99, 1e-3}, "eta"},
        {ADAM, {inf, 0.9, 0.99, 1e-3}, "eta"},
        {AVGM, {1.0, 1.0, 0.99, 1e-3}, "beta1"},
        {AVGM, {1.0, -0.1, 0.99, 1e-3}, "beta1"},
        {ADAM, {1.0, nan, 0.99, 1e-3}, "beta1"},
        {YOGI, {1.0, 0.9, 1.0, 1e-3}, "beta2"},
        {ADAM, {1.0, 0.9, -0.5, 1e-3}, "beta2"},
        {YOGI, {1.0, 0.9, nan, 1e-3}, "beta2"},
        {ADAM, {1.0, 0.9, 0.99, 0.0}, "tau"},
        {YOGI, {1.0, 0.9, 0.99, -1e-3}, "tau"},
        {ADAM, {1.0, 0.9, 0.99, inf}, "tau"},
        {YOGI, {1.0, 0.9, 0.99, nan}, "tau"},
        {42, {1.0, 0.9, 0.99, 1e-3}, "unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_server_opt_kind_t kind = (fm_server_opt_kind_t)cases[i].kind;
        fm_errmsg_t e = {{0}};
        int rc = fm_server_opt_config_check(kind, &cases[i].cfg, &e);
        int rc_null = fm_server_opt_config_check(kind, &cases[i].cfg, NULL);
        int err = 0;
        fm_server_opt_t *o = fm_server_opt_new(kind, 3, &cases[i].cfg, &err);
        if (!cases[i].field) {
            if (rc != 0 || rc_null != 0 || !o)
                fail_msg("case %zu: valid config rejected: rc %d '%s'", i, rc, e.msg);
        } else {
            if (rc != FM_EARG || rc_null != FM_EARG || !strstr(e.msg, cases[i].field) ||
                strchr(e.msg, '\n'))
                fail_msg("case %zu (%s): rc %d, msg '%s'", i, cases[i].field, rc, e.msg);
            if (o || err != FM_EARG)
                fail_msg("case %zu (%s): new %p err %d", i, cases[i].field, (void *)o, err);
        }
        fm_server_opt_destroy(&o);
    }
    /* state too large to allocate */
    fm_server_opt_config_t cfg = FM_SERVER_OPT_CONFIG_DEFAULT;
    int err = 0;
    assert_null(fm_server_opt_new(FM_SERVER_OPT_FEDADAM, SIZE_MAX / 4, &cfg, &err));
    assert_int_equal(err, -ENOMEM);
}

/* FedBuff buffer -> FedAvgM, two rounds. Staleness hinge a = 0.5, b = 2, weighted by samples;
 * FedAvgM eta 0.5, beta 0.9; w0 = (1, -2, 0.5).
 * round 1 (3 updates): d = (1, 2, -1) tau 0 n 10, (0.5, -1, 2) tau 2 n 20, (-2, 0.25, 1) tau 8
 *   n 30; s = 1, 1, 1/4: delta_bar = (10 + 10 - 15, 20 - 20 + 1.875, -10 + 40 + 7.5) / 60
 *   = (0.08333333333, 0.03125, 0.625); m1 = delta_bar;
 *   w1 = w0 + 0.5 m1 = (1.041666667, -1.984375, 0.8125)
 * round 2 (2 updates; the denominator restarts): (2, 0, -4) tau 1 n 10 (s = 1),
 *   (0, 4, 8) tau 4 n 30 (s = 1/(0.5 (4 - 2) + 1) = 1/2):
 *   delta_bar = (10 (2, 0, -4) + 15 (0, 4, 8)) / 40 = (20, 60, 80) / 40 = (0.5, 1.5, 2)
 *   m2 = 0.9 m1 + delta_bar = (0.075 + 0.5, 0.028125 + 1.5, 0.5625 + 2)
 *      = (0.575, 1.528125, 2.5625)
 *   w2 = w1 + 0.5 m2 = (1.041666667 + 0.2875, -1.984375 + 0.7640625, 0.8125 + 1.28125)
 *      = (1.329166667, -1.2203125, 2.09375) */
static void test_fedbuff_to_fedavgm(void **state)
{
    fm_staleness_t s;
    assert_int_equal(fm_staleness_parse(&s, "hinge", 0.5, 2.0, NULL), 0);
    int err = 0;
    fm_fedbuff_t *b = fm_fedbuff_new(3, 3, &s, 1, &err);
    assert_non_null(b);
    fm_server_opt_t *o = s_new(FM_SERVER_OPT_FEDAVGM, 0.5, 0.9, 0.99, 1e-3);
    float w[3], d[3], mean[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(d, 1.0f, 2.0f, -1.0f);
    assert_int_equal(fm_fedbuff_add(b, d, 0, 10), 0);
    s_set(d, 0.5f, -1.0f, 2.0f);
    assert_int_equal(fm_fedbuff_add(b, d, 2, 20), 0);
    s_set(d, -2.0f, 0.25f, 1.0f);
    assert_int_equal(fm_fedbuff_add(b, d, 8, 30), 0);
    assert_true(fm_fedbuff_full(b));
    assert_int_equal(fm_fedbuff_take(b, mean), 0);
    assert_int_equal(fm_server_opt_apply(o, w, mean), 0);
    s_expect3(w, 1.041666667, -1.984375, 0.8125, "fedbuff+fedavgm w1");
    s_set(d, 2.0f, 0.0f, -4.0f);
    assert_int_equal(fm_fedbuff_add(b, d, 1, 10), 0);
    s_set(d, 0.0f, 4.0f, 8.0f);
    assert_int_equal(fm_fedbuff_add(b, d, 4, 30), 0);
    assert_int_equal(fm_fedbuff_take(b, mean), 0);
    s_expect3(mean, 0.5, 1.5, 2.0, "round 2 delta_bar");
    assert_int_equal(fm_server_opt_apply(o, w, mean), 0);
    s_expect3(w, 1.329166667, -1.2203125, 2.09375, "fedbuff+fedavgm w2");
    fm_server_opt_destroy(&o);
    fm_fedbuff_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavg),           cmocka_unit_test(test_fedavgm),
        cmocka_unit_test(test_fedadam),          cmocka_unit_test(test_fedyogi),
        cmocka_unit_test(test_checkpoint_state), cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_state_check),      cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_config_check),     cmocka_unit_test(test_fedbuff_to_fedavgm),
        cmocka_unit_test(test_apply_beta1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
