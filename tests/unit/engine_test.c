/* Unit tests of fm_engine: the multi-threaded gradient equals the single-workspace one
 * (fm_work on the gathered batch) for every thread count, batch size (including batches not
 * divisible by the thread count and idle workers) and index permutation; evaluation counts
 * match a hand count. */
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
#include "fm_blas.h"
#include "fm_engine.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_work.h"

#define PIX 784

/* Splitting the batch over threads changes only the order of float summation (each worker
 * sums its part in sgemm, then the parts are added) and the sgemm blocking per part, so
 * per-sample results agree to rounding and the sums to ~sqrt(B) ulps of the largest terms:
 * measured <~1e-6 of each view's largest gradient. Tolerance 1e-5 per view; a lost, doubled
 * or mis-scaled sample changes a gradient by ~1/B (> 6%). */
#define TOL_GRAD 1e-5
/* The loss is summed in double from per-sample float losses: 1e-6 relative. */
#define TOL_LOSS 1e-6

typedef struct {
    fm_model_t *m;
    int n;      /* samples available */
    float *x;   /* (n, 784) */
    uint8_t *y; /* (n) */
} data_t;

static void s_data(data_t *d, const char *model, int n, uint64_t seed)
{
    int err = 0;
    d->m = fm_model_new(model, &err);
    assert_non_null(d->m);
    fm_model_init(d->m, seed);
    d->n = n;
    d->x = fm_tu_floats((size_t)n * PIX);
    d->y = fm_tu_alloc((size_t)n, 1);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 9);
    fm_tu_normal(&rng, d->x, (size_t)n * PIX, 1.0);
    for (int i = 0; i < n; i++)
        d->y[i] = (uint8_t)fm_rng_below(&rng, FM_NCLASSES);
}

static void s_data_free(data_t *d)
{
    fm_model_destroy(&d->m);
    free(d->x);
    free(d->y);
}

/* Reference: one fm_work on the gathered batch (x[idx[i]], y[idx[i]]), grads of the mean. */
static double s_reference(const data_t *d, const uint32_t *idx, int B, float *grads)
{
    int err = 0;
    fm_work_t *w = fm_work_new(d->m, B, &err);
    assert_non_null(w);
    float *xb = fm_tu_floats((size_t)B * PIX);
    uint8_t *yb = fm_tu_alloc((size_t)B, 1);
    for (int i = 0; i < B; i++) {
        uint32_t s = idx ? idx[i] : (uint32_t)i;
        memcpy(xb + (size_t)i * PIX, d->x + (size_t)s * PIX, PIX * sizeof(float));
        yb[i] = d->y[s];
    }
    memset(grads, 0, fm_model_nparams(d->m) * sizeof(float));
    double loss = fm_work_forward(w, d->m, xb, yb, B, 0, NULL);
    fm_work_backward(w, d->m, grads, 1.0f / (float)B);
    fm_work_destroy(&w);
    free(xb);
    free(yb);
    return loss / B;
}

/* Worst per-view relative error of a against the reference b. */
static double s_view_err(const fm_model_t *m, const float *a, const float *b, const char **worst)
{
    double e = 0.0;
    for (int v = 0; v < fm_model_nviews(m); v++) {
        const fm_view_t *vw = fm_model_view(m, v);
        assert_true(fm_tu_max_abs(b + vw->offset, vw->numel) > 0.0);
        double ev = fm_tu_rel_err(a + vw->offset, b + vw->offset, vw->numel);
        if (ev > e || ev != ev) {
            e = ev;
            if (worst)
                *worst = vw->name;
        }
    }
    return e;
}

/* Engine gradient with `threads` workers vs the reference, for a batch of B (idx or NULL). */
static void s_check(const data_t *d, int threads, int max_batch, const uint32_t *idx, int B,
                    const char *what)
{
    size_t np = fm_model_nparams(d->m);
    float *ref = fm_tu_floats(np);
    double lref = s_reference(d, idx, B, ref);
    int err = 0;
    fm_engine_t *e = fm_engine_new(d->m, threads, max_batch, &err);
    assert_non_null(e);
    assert_int_equal(fm_engine_threads(e), threads);
    /* a different batch first, so that the checked call must overwrite the buffer */
    fm_engine_gradient(e, d->m, d->x, d->y, NULL, 1, 0, 0);
    double loss = fm_engine_gradient(e, d->m, d->x, d->y, idx, B, 0, 0);
    const char *worst = "?";
    double eg = s_view_err(d->m, fm_engine_grads(e), ref, &worst);
    double el = fabs(loss - lref) / lref;
    print_message("%-4s %-28s threads %d B %2d: grad rel err %.2e (%s), loss rel err %.2e\n",
                  fm_model_name(d->m), what, threads, B, eg, worst, el);
    FM_TU_ASSERT_LE(eg, TOL_GRAD, "%s threads %d B %d gradient (%s)\n", what, threads, B, worst);
    FM_TU_ASSERT_LE(el, TOL_LOSS, "%s threads %d B %d loss\n", what, threads, B);
    /* calling again gives the same (the buffer is overwritten, not accumulated) */
    float *first = fm_tu_floats(np);
    memcpy(first, fm_engine_grads(e), np * sizeof(float));
    double loss2 = fm_engine_gradient(e, d->m, d->x, d->y, idx, B, 0, 0);
    assert_true(loss2 == loss);
    assert_memory_equal(first, fm_engine_grads(e), np * sizeof(float));
    fm_engine_destroy(&e);
    assert_null(e);
    fm_engine_destroy(&e);
    free(ref);
    free(first);
}

static void s_gradients(const char *model, int n, uint64_t seed)
{
    data_t d;
    s_data(&d, model, n, seed);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 10);
    uint32_t *perm = fm_tu_alloc((size_t)n, sizeof(uint32_t));
    for (int i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    fm_rng_shuffle_u32(&rng, perm, (uint32_t)n);
    /* a batch with repeated samples: the engine gathers, it does not assume a permutation */
    uint32_t rep[7] = {3, 3, 0, 5, 3, 1, 0};

    for (int t = 1; t <= 3; t++) {
        s_check(&d, t, 8, NULL, 8, "idx NULL");
        s_check(&d, t, 8, perm, 8, "idx permutation");
        s_check(&d, t, 8, NULL, 7, "B 7");
        s_check(&d, t, 16, perm, 7, "B 7, idx permutation");
        s_check(&d, t, 8, rep, 7, "B 7, repeated indices");
    }
    s_check(&d, 2, 8, NULL, 1, "B 1 (one worker idle)");
    s_check(&d, 3, 8, perm, 2, "B 2 (one worker idle)");
    s_check(&d, 3, 3, perm + 1, 3, "B 3, max_batch 3");

    /* the same samples in another order give the same mean gradient */
    size_t np = fm_model_nparams(d.m);
    int err = 0;
    fm_engine_t *e = fm_engine_new(d.m, 2, n, &err);
    assert_non_null(e);
    float *g1 = fm_tu_floats(np);
    double l1 = fm_engine_gradient(e, d.m, d.x, d.y, NULL, n, 0, 0);
    memcpy(g1, fm_engine_grads(e), np * sizeof(float));
    double l2 = fm_engine_gradient(e, d.m, d.x, d.y, perm, n, 0, 0);
    double eg = s_view_err(d.m, fm_engine_grads(e), g1, NULL);
    print_message("%-4s whole set in shuffled order: grad rel err %.2e, loss %.2e\n", model, eg,
                  fabs(l1 - l2) / l1);
    FM_TU_ASSERT_LE(eg, TOL_GRAD, "%s: order of samples changes the gradient\n", model);
    FM_TU_ASSERT_LE(fabs(l1 - l2) / l1, TOL_LOSS, "%s: order changes the loss\n", model);
    fm_engine_destroy(&e);
    free(g1);
    free(perm);
    s_data_free(&d);
}

static void test_gradients_mlp(void **state) { s_gradients("mlp", 16, 101); }
static void test_gradients_cnn(void **state) { s_gradients("cnn", 8, 102); }
static void test_gradients_logreg(void **state) { s_gradients("logreg", 8, 103); }

/* train = 1 (cnn dropout): deterministic for a seed and a thread count, different for
 * another seed, and different from train = 0. */
static void test_dropout_seeded(void **state)
{
    data_t d;
    s_data(&d, "cnn", 5, 104);
    size_t np = fm_model_nparams(d.m);
    int err = 0;
    fm_engine_t *e = fm_engine_new(d.m, 2, 5, &err);
    assert_non_null(e);
    float *a = fm_tu_floats(np), *b = fm_tu_floats(np);
    double la = fm_engine_gradient(e, d.m, d.x, d.y, NULL, 5, 1, 77);
    memcpy(a, fm_engine_grads(e), np * sizeof(float));
    double lb = fm_engine_gradient(e, d.m, d.x, d.y, NULL, 5, 1, 77);
    assert_true(la == lb);
    assert_memory_equal(a, fm_engine_grads(e), np * sizeof(float));
    double lc = fm_engine_gradient(e, d.m, d.x, d.y, NULL, 5, 1, 78);
    memcpy(b, fm_engine_grads(e), np * sizeof(float));
    assert_true(lc != la);
    assert_true(fm_tu_rel_err(b, a, np) > 1e-3);
    double l0 = fm_engine_gradient(e, d.m, d.x, d.y, NULL, 5, 0, 77);
    assert_true(l0 != la);
    fm_engine_destroy(&e);
    free(a);
    free(b);
    s_data_free(&d);
}

/* ---- evaluation ------------------------------------------------------------------------------
 */

static int s_argmax(const float *lp)
{
    int best = 0;
    for (int c = 1; c < FM_NCLASSES; c++)
        if (lp[c] > lp[best])
            best = c;
    return best;
}

static void s_evaluate(const char *model, uint64_t seed)
{
    const int N = 23;
    data_t d;
    s_data(&d, model, N, seed);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 11);
    uint32_t idx[23];
    for (int i = 0; i < N; i++)
        idx[i] = (uint32_t)i;
    fm_rng_shuffle_u32(&rng, idx, (uint32_t)N);
    const uint32_t n = 19; /* a subset, not a multiple of the batch 8 or thread counts */

    /* predictions of the model on all samples (one forward of the whole set) */
    int err = 0;
    fm_work_t *w = fm_work_new(d.m, N, &err);
    assert_non_null(w);
    fm_work_forward(w, d.m, d.x, NULL, N, 0, NULL);
    int pred[23];
    for (int i = 0; i < N; i++)
        pred[i] = s_argmax(fm_work_logp(w) + (size_t)i * FM_NCLASSES);
    /* labels: the prediction for even samples, random for odd ones -> accuracy ~55%, so
     * both correct and wrong answers are counted */
    for (int i = 0; i < N; i++)
        if (i % 2 == 0)
            d.y[i] = (uint8_t)pred[i];

    /* the hand count over the chosen samples idx[0..n) */
    uint32_t correct = 0, tot[FM_NCLASSES] = {0}, cor[FM_NCLASSES] = {0};
    double loss = 0.0;
    const float *lp = fm_work_logp(w);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t s = idx[k];
        uint8_t label = d.y[s];
        tot[label]++;
        if (pred[s] == label) {
            correct++;
            cor[label]++;
        }
        loss -= lp[(size_t)s * FM_NCLASSES + label];
    }
    loss /= n;
    assert_true(correct > 0 && correct < n);

    for (int t = 1; t <= 3; t++) {
        fm_engine_t *e = fm_engine_new(d.m, t, 8, &err);
        assert_non_null(e);
        fm_eval_t ev;
        memset(&ev, 0xab, sizeof ev);
        fm_engine_evaluate(e, d.m, d.x, d.y, idx, n, &ev);
        print_message(
            "%-4s evaluate threads %d: n %u correct %u (hand %u) loss %.6f (hand %.6f)\n", model,
            t, ev.n, ev.correct, correct, ev.loss, loss);
        assert_int_equal(ev.n, n);
        assert_int_equal(ev.correct, correct);
        assert_true(ev.accuracy == (double)correct / n);
        FM_TU_ASSERT_LE(fabs(ev.loss - loss) / loss, TOL_LOSS, "eval loss threads %d\n", t);
        uint32_t sum_tot = 0, sum_cor = 0;
        for (int c = 0; c < FM_NCLASSES; c++) {
            assert_int_equal(ev.class_total[c], tot[c]);
            assert_int_equal(ev.class_correct[c], cor[c]);
            sum_tot += ev.class_total[c];
            sum_cor += ev.class_correct[c];
        }
        assert_int_equal(sum_tot, n);
        assert_int_equal(sum_cor, ev.correct);

        /* idx NULL = the first n samples */
        fm_engine_evaluate(e, d.m, d.x, d.y, NULL, (uint32_t)N, &ev);
        uint32_t c_all = 0;
        for (int i = 0; i < N; i++)
            c_all += pred[i] == d.y[i];
        assert_int_equal(ev.n, (uint32_t)N);
        assert_int_equal(ev.correct, c_all);

        /* n = 0: all zero */
        memset(&ev, 0xab, sizeof ev);
        fm_engine_evaluate(e, d.m, d.x, d.y, idx, 0, &ev);
        assert_int_equal(ev.n, 0);
        assert_int_equal(ev.correct, 0);
        for (int c = 0; c < FM_NCLASSES; c++)
            assert_int_equal(ev.class_total[c], 0);

        /* n = 1 with 3 threads: idle workers contribute nothing */
        fm_engine_evaluate(e, d.m, d.x, d.y, idx + 4, 1, &ev);
        assert_int_equal(ev.n, 1);
        assert_int_equal(ev.correct, pred[idx[4]] == d.y[idx[4]]);
        assert_int_equal(ev.class_total[d.y[idx[4]]], 1);
        fm_engine_destroy(&e);
    }
    fm_work_destroy(&w);
    s_data_free(&d);
}

static void test_evaluate_mlp(void **state) { s_evaluate("mlp", 201); }
static void test_evaluate_cnn(void **state) { s_evaluate("cnn", 202); }

static void test_engine_args(void **state)
{
    int err = 0;
    fm_model_t *m = fm_model_new("logreg", &err);
    assert_non_null(m);
    err = 0;
    assert_null(fm_engine_new(m, 0, 8, &err));
    assert_int_equal(err, FM_EARG);
    err = 0;
    assert_null(fm_engine_new(m, 257, 8, &err));
    assert_int_equal(err, FM_EARG);
    err = 0;
    assert_null(fm_engine_new(m, 2, 0, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_engine_new(m, -1, 8, NULL));
    /* more threads than samples in a batch */
    fm_engine_t *e = fm_engine_new(m, 4, 2, &err);
    assert_non_null(e);
    assert_int_equal(fm_engine_threads(e), 4);
    fm_engine_destroy(&e);
    fm_engine_destroy(NULL);
    fm_model_destroy(&m);
}

int main(void)
{
    fm_blas_setup(NULL); /* OpenBLAS on one thread: the engine parallelises over samples */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_mlp),    cmocka_unit_test(test_gradients_cnn),
        cmocka_unit_test(test_gradients_logreg), cmocka_unit_test(test_dropout_seeded),
        cmocka_unit_test(test_evaluate_mlp),     cmocka_unit_test(test_evaluate_cnn),
        cmocka_unit_test(test_engine_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
