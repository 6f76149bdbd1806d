/* Unit tests of fm_optim against values computed by hand (torch.optim.SGD semantics,
 * clip_grad_norm_, FedProx) on 3-element vectors, and of the config validation.
 *
 * Expected values are exact decimal arithmetic written out in the comments; the optimiser
 * computes in float, so comparisons allow 2e-6 absolute (values are O(1): a few float ulps
 * of ~1.2e-7 each, accumulated over at most 3 steps), while every mistake the tests target
 * (missing momentum, wrong first-step buffer, decay or prox on the wrong side of clipping,
 * 1/norm instead of 1/(norm + 1e-6)) is >= 1e-3. */
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
#include "fm_optim.h"

#define TOL 2e-6

static void s_expect3(const float *got, double a, double b, double c, const char *what)
{
    const double want[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (!(fabs(got[i] - want[i]) <= TOL))
            fail_msg("%s[%d] = %.9g, expected %.9g", what, i, got[i], want[i]);
}

static fm_optim_t *s_new(float lr, float momentum, float wd, float clip, float mu)
{
    fm_sgd_config_t cfg = {
        .lr = lr, .momentum = momentum, .weight_decay = wd, .clip_norm = clip, .mu = mu};
    int err = 0;
    fm_optim_t *o = fm_optim_new(3, &cfg, &err);
    assert_non_null(o);
    return o;
}

static void s_set(float *v, float a, float b, float c) { v[0] = a, v[1] = b, v[2] = c; }

/* w -= lr * g */
static void test_sgd_plain(void **state)
{
    fm_optim_t *o = s_new(0.1f, 0.0f, 0.0f, 0.0f, 0.0f);
    float w[3], g[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    double norm = fm_optim_step(o, w, g, NULL);
    assert_true(fabs(norm - sqrt(0.14)) <= 1e-7);
    s_expect3(w, 0.99, -2.02, 0.53, "plain w");
    s_expect3(g, 0.1, 0.2, -0.3, "plain g (untouched)");
    /* no state without momentum: a second step is the same rule again */
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.98, -2.04, 0.56, "plain w step 2");
    fm_optim_destroy(&o);
    assert_null(o);
    fm_optim_destroy(&o); /* idempotent */
    fm_optim_destroy(NULL);
}

/* fm_optim_set_lr: the next step uses the new rate; a rate that is not a finite number > 0
 * is refused and changes nothing. fm_sgd_lr_at: lr / (1 + decay x version). */
static void test_set_lr(void **state)
{
    (void)state;
    fm_optim_t *o = s_new(0.1f, 0.0f, 0.0f, 0.0f, 0.0f);
    float w[3], g[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    assert_int_equal(fm_optim_set_lr(o, 0.5f), 0);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.95, -2.1, 0.65, "lr 0.5");
    assert_int_equal(fm_optim_set_lr(o, 0.0f), FM_EARG);
    assert_int_equal(fm_optim_set_lr(o, -1.0f), FM_EARG);
    assert_int_equal(fm_optim_set_lr(o, NAN), FM_EARG);
    assert_int_equal(fm_optim_set_lr(o, INFINITY), FM_EARG);
    fm_optim_step(o, w, g, NULL); /* still 0.5 */
    s_expect3(w, 0.90, -2.2, 0.80, "lr 0.5 after refusals");
    fm_optim_destroy(&o);

    assert_true(fm_sgd_lr_at(0.05, 0.0, 0) == 0.05);
    assert_true(fm_sgd_lr_at(0.05, 0.0, 1000000) == 0.05);
    assert_true(fm_sgd_lr_at(0.05, 0.1, 0) == 0.05);
    assert_true(fabs(fm_sgd_lr_at(0.05, 0.1, 10) - 0.025) <= 1e-15);
    assert_true(fabs(fm_sgd_lr_at(0.2, 0.05, 60) - 0.05) <= 1e-15);
}

/* momentum 0.9, lr 0.1, w0 = (0, 1, 2):
 *   g1 = ( 1, 0, -1)  buf = g1                       = (1, 0, -1)      w1 = (-0.1, 1, 2.1)
 *   g2 = (.5, 2,  0)  buf = .9(1,0,-1) + g2          = (1.4, 2, -0.9)  w2 = (-0.24, 0.8, 2.19)
 *   g3 = (-1, 1,  1)  buf = .9(1.4,2,-.9) + g3       = (0.26, 2.8, 0.19) w3 = (-0.266,
 * 0.52, 2.171) */
static void test_momentum(void **state)
{
    fm_optim_t *o = s_new(0.1f, 0.9f, 0.0f, 0.0f, 0.0f);
    float w[3], g[3];
    s_set(w, 0.0f, 1.0f, 2.0f);
    s_set(g, 1.0f, 0.0f, -1.0f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, -0.1, 1.0, 2.1, "momentum w1");
    s_set(g, 0.5f, 2.0f, 0.0f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, -0.24, 0.8, 2.19, "momentum w2");
    s_set(g, -1.0f, 1.0f, 1.0f);
    double norm = fm_optim_step(o, w, g, NULL);
    s_expect3(w, -0.266, 0.52, 2.171, "momentum w3");
    assert_true(fabs(norm - sqrt(3.0)) <= 1e-6); /* the raw gradient's norm, not buf's */

    /* reset: the next step starts a fresh buffer (buf = g), from w3:
     *   g = (1, 1, 1): w = (-0.366, 0.42, 2.071); without reset buf would be
     *   .9(0.26,2.8,0.19) + 1 = (1.234, 3.52, 1.171) */
    fm_optim_reset(o);
    s_set(g, 1.0f, 1.0f, 1.0f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, -0.366, 0.42, 2.071, "momentum after reset");
    /* and momentum resumes from that fresh buffer: buf = .9(1,1,1) + (0,0,0) */
    s_set(g, 0.0f, 0.0f, 0.0f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, -0.456, 0.33, 1.981, "momentum after reset, step 2");
    fm_optim_destroy(&o);
}

/* weight decay 0.1, lr 0.1, w = (1, -2, 0.5), g = (0.1, 0.2, -0.3):
 *   d = g + 0.1 w = (0.2, 0, -0.25); w1 = (0.98, -2, 0.525)
 * with momentum 0.9, step 2 with the same g: d2 = g + 0.1 w1 = (0.198, 0, -0.2475),
 *   buf = 0.9 (0.2, 0, -0.25) + d2 = (0.378, 0, -0.4725); w2 = (0.9422, -2, 0.57225) */
static void test_weight_decay(void **state)
{
    fm_optim_t *o = s_new(0.1f, 0.0f, 0.1f, 0.0f, 0.0f);
    float w[3], g[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    double norm = fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.98, -2.0, 0.525, "wd w1");
    s_expect3(g, 0.1, 0.2, -0.3, "wd g (decay is not written into the gradient)");
    assert_true(fabs(norm - sqrt(0.14)) <= 1e-7); /* norm of g, without the decay term */
    fm_optim_destroy(&o);

    o = s_new(0.1f, 0.9f, 0.1f, 0.0f, 0.0f);
    s_set(w, 1.0f, -2.0f, 0.5f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.98, -2.0, 0.525, "wd+momentum w1");
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.9422, -2.0, 0.57225, "wd+momentum w2");
    fm_optim_destroy(&o);
}

/* clip_grad_norm_: g *= clip / (||g|| + 1e-6) when that is < 1; the pre-clip norm is
 * returned. */
static void test_clipping(void **state)
{
    float w[3], g[3];
    /* active: g = (3, 4, 0), norm 5, clip 1 -> g = (0.6, 0.8, 0) * 5/(5 + 1e-6);
     * lr 0.1 from w = 0: w = -(0.06, 0.08, 0) */
    fm_optim_t *o = s_new(0.1f, 0.0f, 0.0f, 1.0f, 0.0f);
    s_set(w, 0.0f, 0.0f, 0.0f);
    s_set(g, 3.0f, 4.0f, 0.0f);
    double norm = fm_optim_step(o, w, g, NULL);
    assert_true(fabs(norm - 5.0) <= 1e-6);
    s_expect3(g, 0.6, 0.8, 0.0, "clipped g (in place)");
    s_expect3(w, -0.06, -0.08, 0.0, "clipped w");
    fm_optim_destroy(&o);

    /* the 1e-6 in the denominator: norm 5e-6, clip 1e-6 -> coef 1/6 (1/5 without it):
     * g = (3e-6, 4e-6, 0) / 6 = (5e-7, 6.667e-7, 0); lr 1 -> w = -g */
    o = s_new(1.0f, 0.0f, 0.0f, 1e-6f, 0.0f);
    s_set(w, 0.0f, 0.0f, 0.0f);
    s_set(g, 3e-6f, 4e-6f, 0.0f);
    norm = fm_optim_step(o, w, g, NULL);
    assert_true(fabs(norm - 5e-6) <= 1e-12);
    for (int i = 0; i < 2; i++) {
        double want = (i == 0 ? 3e-6 : 4e-6) / 6.0;
        if (!(fabs(g[i] - want) <= 1e-5 * want && fabs(w[i] + want) <= 1e-5 * want))
            fail_msg("eps clip [%d]: g %.9g w %.9g, expected g %.9g", i, g[i], w[i], want);
    }
    fm_optim_destroy(&o);

    /* inactive: clip 10 > norm 5: g untouched (exactly), plain step */
    o = s_new(0.1f, 0.0f, 0.0f, 10.0f, 0.0f);
    s_set(w, 0.0f, 0.0f, 0.0f);
    s_set(g, 3.0f, 4.0f, 0.0f);
    norm = fm_optim_step(o, w, g, NULL);
    assert_true(fabs(norm - 5.0) <= 1e-6);
    assert_true(g[0] == 3.0f && g[1] == 4.0f && g[2] == 0.0f);
    s_expect3(w, -0.3, -0.4, 0.0, "unclipped w");
    fm_optim_destroy(&o);

    /* clip == norm: coef = 5/(5 + 1e-6) < 1, so torch scales (by 1 - 2e-7) */
    o = s_new(0.1f, 0.0f, 0.0f, 5.0f, 0.0f);
    s_set(g, 3.0f, 4.0f, 0.0f);
    fm_optim_step(o, w, g, NULL);
    assert_true(g[1] < 4.0f && g[1] > 3.99999f);
    fm_optim_destroy(&o);

    /* clip 0 = off, whatever the norm */
    o = s_new(0.1f, 0.0f, 0.0f, 0.0f, 0.0f);
    s_set(g, 30.0f, 40.0f, 0.0f);
    s_set(w, 0.0f, 0.0f, 0.0f);
    norm = fm_optim_step(o, w, g, NULL);
    assert_true(fabs(norm - 50.0) <= 1e-5);
    s_expect3(w, -3.0, -4.0, 0.0, "clip off");
    fm_optim_destroy(&o);
}

/* FedProx: g += mu (w - w_global). mu 0.5, lr 0.1, w = (1, -2, 0.5), w_global = (0.5, -1, 1),
 * g = (0.1, 0.2, -0.3): g' = (0.35, -0.3, -0.55), w = (0.965, -1.97, 0.555), norm sqrt(.515) */
static void test_fedprox(void **state)
{
    fm_optim_t *o = s_new(0.1f, 0.0f, 0.0f, 0.0f, 0.5f);
    float w[3], g[3], wg[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(wg, 0.5f, -1.0f, 1.0f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    double norm = fm_optim_step(o, w, g, wg);
    assert_true(fabs(norm - sqrt(0.515)) <= 1e-6);
    s_expect3(g, 0.35, -0.3, -0.55, "prox g (in place)");
    s_expect3(w, 0.965, -1.97, 0.555, "prox w");
    s_expect3(wg, 0.5, -1.0, 1.0, "w_global (untouched)");
    /* w_global NULL: no proximal term */
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    fm_optim_step(o, w, g, NULL);
    s_expect3(w, 0.99, -2.02, 0.53, "prox with w_global NULL");
    fm_optim_destroy(&o);
    /* mu 0: w_global is ignored */
    o = s_new(0.1f, 0.0f, 0.0f, 0.0f, 0.0f);
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    fm_optim_step(o, w, g, wg);
    s_expect3(w, 0.99, -2.02, 0.53, "mu 0 with w_global");
    fm_optim_destroy(&o);
}

/* Everything at once fixes the order prox -> clip -> decay -> momentum:
 * mu 0.5, clip 0.5, wd 0.1, momentum 0.9, lr 0.1, w, w_global, g as in test_fedprox.
 *   step 1: g' = (0.35, -0.3, -0.55), norm n1 = sqrt(0.515) (returned), c1 = 0.5/(n1 + 1e-6),
 *           d = c1 g' + 0.1 w, buf = d, w1 = w - 0.1 d
 *   step 2: g = (0.1, 0.2, -0.3) again, g' = g + 0.5 (w1 - w_global), c2 from its norm,
 *           buf = 0.9 buf + c2 g' + 0.1 w1, w2 = w1 - 0.1 buf
 * The expectation is evaluated in double below, term by term as written here. */
static void test_all_terms_order(void **state)
{
    fm_optim_t *o = s_new(0.1f, 0.9f, 0.1f, 0.5f, 0.5f);
    float w[3], g[3], wg[3];
    s_set(w, 1.0f, -2.0f, 0.5f);
    s_set(wg, 0.5f, -1.0f, 1.0f);
    s_set(g, 0.1f, 0.2f, -0.3f);
    const double w0[3] = {1.0, -2.0, 0.5}, wgd[3] = {0.5, -1.0, 1.0}, gd[3] = {0.1, 0.2, -0.3};
    double gp[3], w1[3], buf[3], w2[3], n1 = 0.0, n2 = 0.0;
    for (int i = 0; i < 3; i++) {
        gp[i] = gd[i] + 0.5 * (w0[i] - wgd[i]);
        n1 += gp[i] * gp[i];
    }
    n1 = sqrt(n1);
    double c1 = 0.5 / (n1 + 1e-6);
    for (int i = 0; i < 3; i++) {
        buf[i] = c1 * gp[i] + 0.1 * w0[i];
        w1[i] = w0[i] - 0.1 * buf[i];
    }
    double norm = fm_optim_step(o, w, g, wg);
    assert_true(fabs(norm - n1) <= 1e-6);
    assert_true(c1 < 1.0); /* the case really clips */
    s_expect3(w, w1[0], w1[1], w1[2], "all terms w1");
    for (int i = 0; i < 3; i++) {
        gp[i] = gd[i] + 0.5 * (w1[i] - wgd[i]);
        n2 += gp[i] * gp[i];
    }
    n2 = sqrt(n2);
    double c2 = 0.5 / (n2 + 1e-6);
    for (int i = 0; i < 3; i++) {
        buf[i] = 0.9 * buf[i] + c2 * gp[i] + 0.1 * w1[i];
        w2[i] = w1[i] - 0.1 * buf[i];
    }
    s_set(g, 0.1f, 0.2f, -0.3f);
    norm = fm_optim_step(o, w, g, wg);
    assert_true(fabs(norm - n2) <= 1e-6);
    s_expect3(w, w2[0], w2[1], w2[2], "all terms w2");
    print_message("all terms: w2 = (%.7f, %.7f, %.7f), norms %.6f %.6f\n", w[0], w[1], w[2], n1,
                  n2);
    fm_optim_destroy(&o);
}

static void test_config_check(void **state)
{
    const float nan = NAN, inf = INFINITY;
    struct {
        fm_sgd_config_t cfg;
        const char *field; /* NULL: valid */
    } cases[] = {
        {{0.01f, 0.0f, 0.0f, 0.0f, 0.0f}, NULL},
        {{1e-9f, 0.999f, 0.0f, 0.0f, 0.0f}, NULL},
        {{0.1f, 0.9f, 5e-4f, 1.0f, 0.1f}, NULL},
        {{0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, "lr"},
        {{-0.1f, 0.0f, 0.0f, 0.0f, 0.0f}, "lr"},
        {{nan, 0.0f, 0.0f, 0.0f, 0.0f}, "lr"},
        {{inf, 0.0f, 0.0f, 0.0f, 0.0f}, "lr"},
        {{0.1f, 1.0f, 0.0f, 0.0f, 0.0f}, "momentum"},
        {{0.1f, 1.5f, 0.0f, 0.0f, 0.0f}, "momentum"},
        {{0.1f, -0.1f, 0.0f, 0.0f, 0.0f}, "momentum"},
        {{0.1f, nan, 0.0f, 0.0f, 0.0f}, "momentum"},
        {{0.1f, 0.0f, -1e-3f, 0.0f, 0.0f}, "weight_decay"},
        {{0.1f, 0.0f, nan, 0.0f, 0.0f}, "weight_decay"},
        {{0.1f, 0.0f, inf, 0.0f, 0.0f}, "weight_decay"},
        {{0.1f, 0.0f, 0.0f, -1.0f, 0.0f}, "clip"},
        {{0.1f, 0.0f, 0.0f, nan, 0.0f}, "clip"},
        {{0.1f, 0.0f, 0.0f, inf, 0.0f}, "clip"},
        {{0.1f, 0.0f, 0.0f, 0.0f, -0.1f}, "mu"},
        {{0.1f, 0.0f, 0.0f, 0.0f, nan}, "mu"},
        {{0.1f, 0.0f, 0.0f, 0.0f, inf}, "mu"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_errmsg_t e = {{0}};
        int rc = fm_sgd_config_check(&cases[i].cfg, &e);
        int rc_null = fm_sgd_config_check(&cases[i].cfg, NULL); /* e may be NULL */
        int err = 0;
        fm_optim_t *o = fm_optim_new(3, &cases[i].cfg, &err);
        if (!cases[i].field) {
            if (rc != 0 || rc_null != 0 || !o)
                fail_msg("case %zu: valid config rejected: rc %d, '%s'", i, rc, e.msg);
        } else {
            if (rc != FM_EARG || rc_null != FM_EARG || !strstr(e.msg, cases[i].field) ||
                strchr(e.msg, '\n'))
                fail_msg("case %zu (%s): rc %d, msg '%s'", i, cases[i].field, rc, e.msg);
            if (o || err != FM_EARG)
                fail_msg("case %zu (%s): fm_optim_new %p err %d", i, cases[i].field, (void *)o,
                         err);
        }
        fm_optim_destroy(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),    cmocka_unit_test(test_momentum),
        cmocka_unit_test(test_weight_decay), cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_fedprox),      cmocka_unit_test(test_all_terms_order),
        cmocka_unit_test(test_config_check), cmocka_unit_test(test_set_lr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
