/* trainer_ef_test: the error-feedback residuals of a trainer pool's clients (trainer_ef): a
 * new residual is zero; it persists between take and give for the same client and is never
 * shared; under the memory bound the least recently used residual not in use is dropped
 * (counted), one in use never is, and a take with every held residual in use gets NULL.
 * Step-ahead error feedback (preview / unpreview around a training, then the real top-k
 * encoder): over steps, what was sent plus the residual is the sum of the local progress,
 * for every step-ahead a, and a > 0 does start the training elsewhere. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_codec.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "trainer_ef.h"

#define NP 5
#define ONE (NP * sizeof(float))

static int s_zero(const float *r)
{
    for (size_t j = 0; j < NP; j++)
        if (r[j] != 0.0f)
            return 0;
    return 1;
}

static void s_fill(float *r, float v)
{
    for (size_t j = 0; j < NP; j++)
        r[j] = v + (float)j;
}

static int s_is(const float *r, float v)
{
    for (size_t j = 0; j < NP; j++)
        if (r[j] != v + (float)j)
            return 0;
    return 1;
}

static void s_expect(trainer_ef_t *ef, uint32_t held, uint64_t evicted)
{
    trainer_ef_stats_t st;
    trainer_ef_stats(ef, &st);
    assert_int_equal(st.held, held);
    assert_int_equal(st.bytes, (uint64_t)held * ONE);
    assert_int_equal(st.evicted, evicted);
}

/* zero when new; kept between takes; one per client */
static void test_persists(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(10, 4, NP, 4 * ONE, &err); /* clients 10..13 */
    assert_non_null(ef);
    s_expect(ef, 0, 0);
    float *a = trainer_ef_take(ef, 10);
    assert_non_null(a);
    assert_true(s_zero(a));
    s_fill(a, 1.0f);
    trainer_ef_give(ef, 10);
    float *b = trainer_ef_take(ef, 13);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_true(s_zero(b)); /* not client 10's */
    s_fill(b, 7.0f);
    trainer_ef_give(ef, 13);
    s_expect(ef, 2, 0);
    for (int round = 0; round < 3; round++) { /* the same residual, its values kept */
        float *again = trainer_ef_take(ef, 10);
        assert_ptr_equal(again, a);
        assert_true(s_is(again, 1.0f + (float)round));
        s_fill(again, 2.0f + (float)round);
        trainer_ef_give(ef, 10);
    }
    assert_true(s_is(trainer_ef_take(ef, 13), 7.0f));
    trainer_ef_give(ef, 13);
    s_expect(ef, 2, 0);
    trainer_ef_destroy(&ef);
    assert_null(ef);
    trainer_ef_destroy(&ef); /* idempotent */
}

/* bound of 2 residuals: the least recently used one not in use goes, counted */
static void test_lru_eviction(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 8, NP, 2 * ONE + ONE / 2, &err);
    assert_non_null(ef);
    s_fill(trainer_ef_take(ef, 0), 10.0f);
    trainer_ef_give(ef, 0);
    s_fill(trainer_ef_take(ef, 1), 20.0f);
    trainer_ef_give(ef, 1);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* 0 is now the most recent */
    trainer_ef_give(ef, 0);
    s_expect(ef, 2, 0);
    float *c = trainer_ef_take(ef, 2); /* evicts 1 (least recently used), not 0 */
    assert_non_null(c);
    assert_true(s_zero(c));
    s_fill(c, 30.0f);
    trainer_ef_give(ef, 2);
    s_expect(ef, 2, 1);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* kept */
    trainer_ef_give(ef, 0);
    float *back = trainer_ef_take(ef, 1); /* dropped: starts again from zero, evicts 2 */
    assert_non_null(back);
    assert_true(s_zero(back));
    trainer_ef_give(ef, 1);
    s_expect(ef, 2, 2);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* 0 survived both evictions */
    trainer_ef_give(ef, 0);
    trainer_ef_destroy(&ef);
}

/* residuals in use are never evicted; with all in use, NULL (and nothing counted) */
static void test_in_use_never_evicted(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 8, NP, 2 * ONE, &err);
    assert_non_null(ef);
    float *a = trainer_ef_take(ef, 3);
    float *b = trainer_ef_take(ef, 4);
    assert_non_null(a);
    assert_non_null(b);
    s_fill(a, 3.0f);
    s_fill(b, 4.0f);
    assert_null(trainer_ef_take(ef, 5)); /* both in use, bound reached */
    assert_null(trainer_ef_take(ef, 6));
    s_expect(ef, 2, 0);
    assert_true(s_is(a, 3.0f)); /* untouched */
    assert_true(s_is(b, 4.0f));
    trainer_ef_give(ef, 4); /* b is free now (and older than a? no: a is older, but in use) */
    float *c = trainer_ef_take(ef, 5);
    assert_non_null(c);
    assert_true(s_zero(c));
    s_expect(ef, 2, 1);
    assert_true(s_is(a, 3.0f)); /* the older one in use stayed */
    trainer_ef_give(ef, 3);
    trainer_ef_give(ef, 5);
    assert_true(s_is(trainer_ef_take(ef, 3), 3.0f));
    trainer_ef_give(ef, 3);
    assert_true(s_zero(trainer_ef_take(ef, 4))); /* 4 was the one dropped */
    trainer_ef_give(ef, 4);
    s_expect(ef, 2, 2);
    trainer_ef_destroy(&ef);
}

/* a bound below one residual: every take is NULL, nothing held */
static void test_no_room(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 2, NP, ONE - 1, &err);
    assert_non_null(ef);
    assert_null(trainer_ef_take(ef, 0));
    assert_null(trainer_ef_take(ef, 1));
    s_expect(ef, 0, 0);
    trainer_ef_destroy(&ef);
}

/* Step-ahead over 30 "trainings": from base x (any: it changes each step), start = x + a e
 * (preview), the training adds progress g, delta = trained - x; unpreview, then top-k 5% over
 * the model with error feedback. Sum of the values sent + the final residual == sum of g, for
 * a = 0 (classic), 0.5 and 1, within the float32 roundings of the sums involved (each step
 * rounds x + a e, + g and - x: a few ulps of |x| ~ 0.1, well below the 1e-5 allowed). The
 * start differs from x by a e when a > 0 (the preview happened). Red if unpreview is skipped
 * (off by a e), if preview is skipped (g + (1 - a) e sent), or if either uses another a. */
static void test_step_ahead(void **state)
{
    (void)state;
    enum { STEPS = 30 };
    static const fm_spec_tensor_t spec[] = {{"w", 2, {40, 50}}, {"b", 1, {16}}};
    int err = 0;
    fm_model_t *layout = fm_model_new_spec(spec, 2, &err);
    assert_non_null(layout);
    size_t np = fm_model_nparams(layout);
    fm_codec_config_t c = {
        .dtype = FM_DT_F32, .topk = 0.05, .topk_model = 1, .error_feedback = 1};
    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
    assert_non_null(enc);
    float *x = calloc(np, sizeof *x), *start = calloc(np, sizeof *start);
    float *delta = calloc(np, sizeof *delta), *res = calloc(np, sizeof *res);
    double *sum_g = calloc(np, sizeof *sum_g), *sum_sent = calloc(np, sizeof *sum_sent);
    fm_codec_tensor_t coded[2];
    assert_true(x && start && delta && res && sum_g && sum_sent);
    static const float as[] = {0.0f, 0.5f, 1.0f};
    for (size_t ai = 0; ai < sizeof as / sizeof *as; ai++) {
        float a = as[ai];
        fm_rng_t rng;
        fm_rng_seed(&rng, 16, ai);
        memset(res, 0, np * sizeof *res);
        memset(sum_g, 0, np * sizeof *sum_g);
        memset(sum_sent, 0, np * sizeof *sum_sent);
        double moved = 0.0;
        for (int step = 0; step < STEPS; step++) {
            for (size_t i = 0; i < np; i++)
                x[i] = (float)(0.1 * fm_rng_normal(&rng));
            memcpy(start, x, np * sizeof *x);
            trainer_ef_preview(res, a, start, np);
            for (size_t i = 0; i < np; i++) {
                moved = fmax(moved, fabs((double)start[i] - (double)x[i]));
                float g = (float)(0.01 * fm_rng_normal(&rng) + (i % 7 == 0 ? 0.004 : 0.0));
                sum_g[i] += (double)g;
                delta[i] = (start[i] + g) - x[i]; /* trained - base */
            }
            trainer_ef_unpreview(res, a, np);
            assert_int_equal(fm_codec_enc_run(enc, delta, res, NULL, coded), 0);
            for (int v = 0; v < 2; v++) {
                const fm_view_t *view = fm_model_view(layout, v);
                size_t k = coded[v].idx_nbytes / 4;
                for (size_t j = 0; j < k; j++) {
                    uint32_t ix;
                    float val;
                    memcpy(&ix, (const unsigned char *)coded[v].idx + 4 * j, 4);
                    memcpy(&val, (const unsigned char *)coded[v].data + 4 * j, 4);
                    sum_sent[view->offset + ix] += (double)val;
                }
            }
        }
        double worst = 0.0;
        for (size_t i = 0; i < np; i++)
            worst = fmax(worst, fabs(sum_sent[i] + (double)res[i] - sum_g[i]));
        if (worst > 1e-5)
            fail_msg("step-ahead %g: sent + residual differs from the progress by %g", (double)a,
                     worst);
        if (a > 0.0f)
            assert_true(moved > 0.01); /* the residual was previewed */
        else
            assert_true(moved == 0.0);
    }
    free(x);
    free(start);
    free(delta);
    free(res);
    free(sum_g);
    free(sum_sent);
    fm_codec_enc_destroy(&enc);
    fm_model_destroy(&layout);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_persists),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_in_use_never_evicted),
        cmocka_unit_test(test_no_room),
        cmocka_unit_test(test_step_ahead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
