/* dpsgd_test: sample-level DP-SGD (shared/learn/fm_dpsgd.c, fm_engine_clipped_sum and the
 * per-example norms of fm_work), on synthetic data, every claim checked against a
 * computation written here from fm_engine_gradient with batches of one:
 *
 * - per-example gradients: the clipped sum sum_i min(1, C/||g_i||) g_i of both modes
 *   (FM_CLIP_FAST: norms from the layer structure; FM_CLIP_EXACT: every sample alone) equals
 *   the one computed here from each sample's own gradient, for logreg, mlp and cnn, 1 and 2
 *   threads, without dropout on batches and with dropout on single samples (the same masks);
 *   the number of clipped samples too;
 * - (a) the clipping bound: with a tiny C, sigma = 0 and crafted samples whose raw gradient
 *   norms are >= 1000 C, no step moves the weights (plain SGD) by more than
 *   lr C b / (q n) (b: that step's batch), for the three models; with identical samples the
 *   change equals that bound, which clipping the batch (instead of each sample) misses by a
 *   factor b;
 * - (b) the noise: with C far above every gradient norm and sigma > 0, the private gradient
 *   times q n minus the noiseless sum (recomputed here per step at the pre-step weights) is
 *   N(0, sigma^2 C^2) per coordinate over 785,000 draws: variance within 6 standard errors
 *   (false alarm about 2e-9 for a correct implementation, over the choice of stream), mean
 *   within 6;
 * - (c) per-example vs per-batch: a batch of one huge sample and seven small ones whose
 *   inputs occupy other pixels: the result equals the per-example reference, the small
 *   samples' weights carry their full contribution, and clipping the batch mean would have
 *   shrunk it more than 10x (so the test fails for that implementation);
 * - (d) Poisson sampling: over 20,000 steps of n = 1000, q = 0.05, the realised batch sizes
 *   have mean q n and variance n q (1 - q) (within 6 standard errors), every sample joins
 *   with frequency q (within 6.5 standard errors each), the fixed-size alternative would
 *   fail; q = 1 takes everyone; a run takes epochs x round(1/q) steps;
 * - (e) bad configurations are refused with one line. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_dp.h"
#include "fm_dpsgd.h"
#include "fm_engine.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_rng.h"

enum { S_PIXELS = FM_IMAGE_H * FM_IMAGE_W };

/* ---- a fixed random stream (the test's stand-in for the CSPRNG) ---------------------------- */

static void s_bytes(void *ctx, void *buf, size_t len)
{
    fm_rng_t *r = ctx;
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t v = fm_rng_u64(r);
        size_t k = len < 8 ? len : 8;
        memcpy(p, &v, k);
        p += k;
        len -= k;
    }
}

static void s_normals(void *ctx, double *out, size_t n) { fm_dp_normals(out, n, s_bytes, ctx); }

static fm_dpsgd_rand_t s_rand(fm_rng_t *r)
{
    return (fm_dpsgd_rand_t){.bytes = s_bytes, .normals = s_normals, .ctx = r};
}

/* ---- helpers ------------------------------------------------------------------------------ */

static fm_model_t *s_model(const char *name, uint64_t seed)
{
    int err = 0;
    fm_model_t *m = fm_model_new(name, &err);
    assert_non_null(m);
    fm_model_init(m, seed);
    return m;
}

static fm_engine_t *s_engine(const fm_model_t *m, int threads, int max_batch)
{
    int err = 0;
    fm_engine_t *e = fm_engine_new(m, threads, max_batch, &err);
    assert_non_null(e);
    return e;
}

static fm_optim_t *s_sgd(size_t n, float lr)
{
    int err = 0;
    fm_sgd_config_t c = {.lr = lr};
    fm_optim_t *o = fm_optim_new(n, &c, &err);
    assert_non_null(o);
    return o;
}

/* n random images (pixels uniform in [lo, hi)), random labels. */
static void s_data(float *x, uint8_t *y, uint32_t n, double lo, double hi, uint64_t seed)
{
    fm_rng_t r;
    fm_rng_seed(&r, seed, 1);
    for (size_t i = 0; i < (size_t)n * S_PIXELS; i++)
        x[i] = (float)(lo + (hi - lo) * fm_rng_uniform(&r));
    for (uint32_t i = 0; i < n; i++)
        y[i] = (uint8_t)fm_rng_below(&r, FM_NCLASSES);
}

static double s_norm2(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

/* Sample `s`'s own gradient (a batch of one through fm_engine_gradient) into g; returns its
 * norm. */
static double s_grad_one(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                         uint32_t s, int train, uint64_t seed, float *g)
{
    fm_engine_gradient(e, m, x, y, &s, 1, train, seed);
    size_t np = fm_model_nparams(m);
    memcpy(g, fm_engine_grads(e), sizeof(float) * np);
    return s_norm2(g, np);
}

/* The reference: ref = sum_i min(1, C/||g_i||) g_i over samples idx[0..B), in double; the
 * count of clipped samples. */
static uint32_t s_reference(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                            const uint32_t *idx, int B, double clip, double *ref)
{
    size_t np = fm_model_nparams(m);
    float *g = malloc(sizeof(float) * np);
    assert_non_null(g);
    memset(ref, 0, sizeof(double) * np);
    uint32_t clipped = 0;
    for (int i = 0; i < B; i++) {
        double norm = s_grad_one(e, m, x, y, idx[i], 0, 0, g);
        double f = fm_dp_clip_factor(norm, clip);
        clipped += f < 1.0;
        for (size_t j = 0; j < np; j++)
            ref[j] += f * g[j];
    }
    free(g);
    return clipped;
}

/* |got - ref| <= tol * max|ref| elementwise (and the norms agree as closely). */
static void s_assert_close(const float *got, const double *ref, size_t n, double tol,
                           const char *what)
{
    double mx = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t j = 0; j < n; j++)
        mx = fabs(ref[j]) > mx ? fabs(ref[j]) : mx;
    for (size_t j = 0; j < n; j++) {
        double d = fabs(got[j] - ref[j]);
        if (d > worst) {
            worst = d;
            at = j;
        }
    }
    if (worst > tol * mx) {
        print_error("%s: element %zu is %.9g, reference %.9g (max |ref| %.6g)\n", what, at,
                    (double)got[at], ref[at], mx);
        fail();
    }
}

/* ---- per-example gradients: both modes against the reference --------------------------- */

static void s_check_modes(const char *name, int threads, int B)
{
    fm_model_t *m = s_model(name, 7);
    size_t np = fm_model_nparams(m);
    float *x = malloc(sizeof(float) * S_PIXELS * (size_t)B);
    uint8_t *y = malloc((size_t)B);
    double *ref = malloc(sizeof(double) * np);
    float *g = malloc(sizeof(float) * np);
    assert_true(x && y && ref && g);
    s_data(x, y, (uint32_t)B, -1.0, 2.0, 11);
    fm_engine_t *one = s_engine(m, 1, 1), *e = s_engine(m, threads, B);
    uint32_t *idx = malloc(sizeof(uint32_t) * (size_t)B);
    assert_non_null(idx);
    for (int i = 0; i < B; i++)
        idx[i] = (uint32_t)(B - 1 - i); /* not the identity: the gather is exercised */
    /* C = the median norm: about half of the samples are clipped */
    double *norms = malloc(sizeof(double) * (size_t)B);
    assert_non_null(norms);
    for (int i = 0; i < B; i++)
        norms[i] = s_grad_one(one, m, x, y, (uint32_t)i, 0, 0, g);
    double clip = 0.0;
    for (int i = 0; i < B; i++) {
        int below = 0;
        for (int j = 0; j < B; j++)
            below += norms[j] < norms[i];
        if (below == B / 2)
            clip = norms[i] * 0.999;
    }
    assert_true(clip > 0.0);
    uint32_t want = s_reference(one, m, x, y, idx, B, clip, ref);
    assert_true(want >= 1 && want < (uint32_t)B);
    fm_clip_mode_t modes[] = {FM_CLIP_FAST, FM_CLIP_EXACT};
    for (int k = 0; k < 2; k++) {
        fm_clip_result_t cr;
        assert_int_equal(fm_engine_clipped_sum(e, m, x, y, idx, B, 0, 0, clip, modes[k], &cr), 0);
        s_assert_close(fm_engine_grads(e), ref, np, 2e-5, name);
        assert_int_equal(cr.clipped, want);
        /* the loss is the sum of the samples' losses */
        double loss = fm_engine_gradient(one, m, x, y, idx, 1, 0, 0);
        assert_true(cr.loss > loss * 0.999); /* a sum over B >= 1 positive losses */
    }
    free(norms);
    free(idx);
    fm_engine_destroy(&one);
    fm_engine_destroy(&e);
    free(x);
    free(y);
    free(ref);
    free(g);
    fm_model_destroy(&m);
}

static void test_modes_logreg(void **state)
{
    (void)state;
    s_check_modes("logreg", 1, 9);
    s_check_modes("logreg", 2, 9);
}

static void test_modes_mlp(void **state)
{
    (void)state;
    s_check_modes("mlp", 1, 9);
    s_check_modes("mlp", 2, 9);
}

static void test_modes_cnn(void **state)
{
    (void)state;
    s_check_modes("cnn", 1, 5);
    s_check_modes("cnn", 2, 5);
}

/* With dropout: single samples draw the same masks in fm_engine_gradient and both modes
 * (one thread), so the cnn's dropout backward in the norm pass is checked too. */
static void test_modes_cnn_dropout(void **state)
{
    (void)state;
    fm_model_t *m = s_model("cnn", 3);
    size_t np = fm_model_nparams(m);
    float x[3 * S_PIXELS], *g = malloc(sizeof(float) * np);
    double *ref = malloc(sizeof(double) * np);
    uint8_t y[3];
    assert_true(g && ref);
    s_data(x, y, 3, -1.0, 2.0, 5);
    fm_engine_t *e = s_engine(m, 1, 4);
    for (uint32_t s = 0; s < 3; s++) {
        uint64_t seed = 100 + s;
        double norm = s_grad_one(e, m, x, y, s, 1, seed, g);
        double clip = s == 1 ? norm * 2.0 : norm * 0.25; /* clipped, not clipped, clipped */
        double f = fm_dp_clip_factor(norm, clip);
        for (size_t j = 0; j < np; j++)
            ref[j] = f * g[j];
        fm_clip_mode_t modes[] = {FM_CLIP_FAST, FM_CLIP_EXACT};
        for (int k = 0; k < 2; k++) {
            fm_clip_result_t cr;
            assert_int_equal(
                fm_engine_clipped_sum(e, m, x, y, &s, 1, 1, seed, clip, modes[k], &cr), 0);
            s_assert_close(fm_engine_grads(e), ref, np, 2e-5, "cnn with dropout");
            assert_int_equal(cr.clipped, s == 1 ? 0 : 1);
        }
    }
    fm_engine_destroy(&e);
    free(g);
    free(ref);
    fm_model_destroy(&m);
}

/* ---- (a) the clipping bound ---------------------------------------------------------------- */

typedef struct {
    fm_model_t *m;
    float *prev; /* the weights before the step */
    double lr, clip, denom;
    int equal;           /* identical samples: the change must EQUAL the bound */
    uint64_t steps, big; /* steps seen, steps with b >= 2 */
    uint64_t samples;
} s_bound_t;

static int s_on_step_bound(void *arg, const fm_dpsgd_step_t *st)
{
    s_bound_t *a = arg;
    size_t np = fm_model_nparams(a->m);
    const float *w = fm_model_params(a->m);
    double d2 = 0.0, slack2 = 0.0;
    for (size_t j = 0; j < np; j++) {
        double d = (double)w[j] - a->prev[j];
        d2 += d * d;
        double ulp = fabs((double)w[j]) * 0x1.0p-23; /* float rounding of w -= lr g */
        slack2 += ulp * ulp;
    }
    double change = sqrt(d2), slack = sqrt(slack2);
    double bound = a->lr * a->clip * st->batch / a->denom;
    if (change > bound * (1.0 + 1e-4) + slack) {
        print_error("step %llu: |dw| = %.9g > lr C b / (q n) = %.9g (b = %u)\n",
                    (unsigned long long)st->step, change, bound, st->batch);
        fail();
    }
    if (a->equal && fabs(change - bound) > 1e-3 * bound + slack) {
        print_error("step %llu: |dw| = %.9g, expected lr C b / (q n) = %.9g (b = %u): not "
                    "every sample clipped to C on its own\n",
                    (unsigned long long)st->step, change, bound, st->batch);
        fail();
    }
    assert_int_equal(st->clipped, st->batch); /* every crafted sample is far above C */
    assert_int_equal(st->step, a->steps);
    a->steps++;
    a->big += st->batch >= 2;
    a->samples += st->batch;
    memcpy(a->prev, w, sizeof(float) * np);
    return 0;
}

static void s_check_bound(const char *name, fm_clip_mode_t mode, int identical)
{
    /* the cnn costs 100x the others per sample: fewer samples and epochs */
    const int cnn = strcmp(name, "cnn") == 0, epochs = cnn ? 2 : 3;
    const uint32_t n = cnn ? 16 : 40;
    fm_model_t *m = s_model(name, 21);
    size_t np = fm_model_nparams(m);
    float *x = malloc(sizeof(float) * S_PIXELS * n), *g = malloc(sizeof(float) * np);
    uint8_t y[40];
    assert_true(x && g);
    /* large inputs, each labelled with the class the model finds least likely: raw
     * gradients far above C (a saturated softmax on its own label would give none) */
    s_data(x, y, n, 5.0, 20.0, 9);
    fm_engine_t *one = s_engine(m, 1, 1);
    for (uint32_t i = 0; i < n; i++) {
        double worst = -1.0;
        uint8_t label = y[i];
        for (uint8_t c = 0; c < FM_NCLASSES; c++) {
            y[i] = c;
            double loss = fm_engine_gradient(one, m, x, y, &i, 1, 0, 0);
            if (loss > worst) {
                worst = loss;
                label = c;
            }
        }
        y[i] = label;
    }
    if (identical)
        for (uint32_t i = 1; i < n; i++) {
            memcpy(x + (size_t)i * S_PIXELS, x, sizeof(float) * S_PIXELS);
            y[i] = y[0];
        }
    const double clip = 1e-2, q = 0.25, lr = 0.5;
    for (uint32_t i = 0; i < n; i++)
        assert_true(s_grad_one(one, m, x, y, i, 0, 0, g) >= 1000.0 * clip);
    fm_engine_destroy(&one);
    fm_engine_t *e = s_engine(m, 2, 4); /* batches above 4 go in pieces */
    fm_optim_t *o = s_sgd(np, (float)lr);
    s_bound_t a = {.m = m, .lr = lr, .clip = clip, .denom = q * n, .equal = identical};
    a.prev = malloc(sizeof(float) * np);
    assert_non_null(a.prev);
    memcpy(a.prev, fm_model_params(m), sizeof(float) * np);
    fm_rng_t r;
    fm_rng_seed(&r, 77, 0);
    fm_dpsgd_rand_t rand = s_rand(&r);
    fm_dpsgd_config_t c = {.clip = clip, .sigma = 0.0, .q = q, .epochs = epochs, .mode = mode};
    fm_dpsgd_hooks_t h = {.on_step = s_on_step_bound, .step_arg = &a};
    fm_dpsgd_result_t res;
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, n, &c, &rand, NULL, &h, &res), 0);
    assert_int_equal(res.train.steps, (uint64_t)epochs * 4); /* epochs x round(1 / q) */
    assert_int_equal(a.steps, res.train.steps);
    assert_int_equal(res.train.samples, a.samples);
    assert_int_equal(res.clipped, a.samples);
    assert_true(a.big >= a.steps / 2); /* the bound was tested on batches of several samples */
    free(a.prev);
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
    free(x);
    free(g);
    fm_model_destroy(&m);
}

static void test_bound(void **state)
{
    (void)state;
    const char *models[] = {"logreg", "mlp", "cnn"};
    for (int k = 0; k < 3; k++) {
        s_check_bound(models[k], FM_CLIP_FAST, 0);
        s_check_bound(models[k], FM_CLIP_EXACT, 0);
    }
}

static void test_bound_identical(void **state)
{
    (void)state;
    const char *models[] = {"logreg", "mlp"}; /* no dropout: identical samples, same gradient */
    for (int k = 0; k < 2; k++) {
        s_check_bound(models[k], FM_CLIP_FAST, 1);
        s_check_bound(models[k], FM_CLIP_EXACT, 1);
    }
}

/* ---- (b) the noise ---------------------------------------------------------------------------
 */

typedef struct {
    fm_model_t *m, *before; /* the trained model; a copy holding the pre-step weights */
    fm_engine_t *e;         /* for the noiseless sum at the pre-step weights */
    const float *x;
    const uint8_t *y;
    double denom;
    double sum, sum2; /* of the noise values */
    uint64_t count, steps, empty;
} s_noise_t;

static int s_on_step_noise(void *arg, const fm_dpsgd_step_t *st)
{
    s_noise_t *a = arg;
    size_t np = fm_model_nparams(a->m);
    assert_int_equal(st->clipped, 0); /* C is far above every gradient: nothing clipped */
    const float *S = NULL;
    if (st->batch > 0) {
        /* the noiseless sum: the batch's mean gradient at the pre-step weights, times b */
        fm_engine_gradient(a->e, a->before, a->x, a->y, st->idx, (int)st->batch, 0, 0);
        S = fm_engine_grads(a->e);
    } else {
        a->empty++;
    }
    for (size_t j = 0; j < np; j++) {
        double noise = (double)st->grad[j] * a->denom - (S ? (double)S[j] * st->batch : 0.0);
        a->sum += noise;
        a->sum2 += noise * noise;
    }
    a->count += np;
    a->steps++;
    memcpy(fm_model_params(a->before), fm_model_params(a->m), sizeof(float) * np);
    return 0;
}

static void test_noise(void **state)
{
    (void)state;
    const uint32_t n = 50;
    const double clip = 50.0, sigma = 0.7, q = 0.2, sd = sigma * clip;
    fm_model_t *m = s_model("logreg", 5), *before = s_model("logreg", 5);
    size_t np = fm_model_nparams(m);
    float *x = malloc(sizeof(float) * S_PIXELS * n);
    uint8_t y[50];
    assert_non_null(x);
    s_data(x, y, n, -0.05, 0.05, 13); /* per-example gradient norms about 2 << C */
    fm_engine_t *e = s_engine(m, 1, 8), *ref = s_engine(m, 1, (int)n);
    fm_optim_t *o = s_sgd(np, 1e-3f);
    s_noise_t a = {.m = m, .before = before, .e = ref, .x = x, .y = y, .denom = q * n};
    fm_rng_t r;
    fm_rng_seed(&r, 2024, 0);
    fm_dpsgd_rand_t rand = s_rand(&r);
    fm_dpsgd_config_t c = {.clip = clip, .sigma = sigma, .q = q, .epochs = 20};
    fm_dpsgd_hooks_t h = {.on_step = s_on_step_noise, .step_arg = &a};
    fm_dpsgd_result_t res;
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, n, &c, &rand, NULL, &h, &res), 0);
    assert_int_equal(a.steps, 100);
    double N = (double)a.count, mean = a.sum / N, var = a.sum2 / N - mean * mean;
    double ratio = var / (sd * sd), se = sqrt(2.0 / N);
    print_message("noise: %llu draws, mean %.4f (sd %.1f), variance / (sigma C)^2 = %.5f "
                  "(standard error %.5f), %llu empty batches\n",
                  (unsigned long long)a.count, mean, sd, ratio, se, (unsigned long long)a.empty);
    /* s^2 / (sigma C)^2 ~ chi^2_N / N: mean 1, sd sqrt(2/N) = 0.0016 here; |z| > 6 has
     * probability 2e-9 for a correct implementation. Noise per example (b times the
     * variance), noise on the mean (1/b^2) or sigma alone (1/C^2) are off by far more. */
    assert_true(fabs(ratio - 1.0) < 6.0 * se);
    assert_true(fabs(mean) < 6.0 * sd / sqrt(N));
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
    fm_engine_destroy(&ref);
    free(x);
    fm_model_destroy(&m);
    fm_model_destroy(&before);
}

/* ---- (c) per-example, not per-batch ------------------------------------------------------- */

typedef struct {
    float *grad; /* copy of the one step's private gradient */
    uint32_t batch;
} s_grab_t;

static int s_on_step_grab(void *arg, const fm_dpsgd_step_t *st)
{
    s_grab_t *a = arg;
    a->batch = st->batch;
    memcpy(a->grad, st->grad, sizeof(float) * FM_NCLASSES * (S_PIXELS + 1));
    return 0;
}

/* One step with q = 1 (everyone joins), sigma = 0: the private gradient is
 * sum_i min(1, C/||g_i||) g_i / n. */
static void s_one_step(fm_model_t *m, const float *x, const uint8_t *y, uint32_t n, double clip,
                       fm_clip_mode_t mode, float *grad)
{
    fm_engine_t *e = s_engine(m, 2, 16);
    fm_optim_t *o = s_sgd(fm_model_nparams(m), 1e-3f);
    fm_rng_t r;
    fm_rng_seed(&r, 1, 0);
    fm_dpsgd_rand_t rand = s_rand(&r);
    s_grab_t a = {.grad = grad};
    fm_dpsgd_config_t c = {.clip = clip, .sigma = 0.0, .q = 1.0, .epochs = 1, .mode = mode};
    fm_dpsgd_hooks_t h = {.on_step = s_on_step_grab, .step_arg = &a};
    fm_dpsgd_result_t res;
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, n, &c, &rand, NULL, &h, &res), 0);
    assert_int_equal(res.train.steps, 1);
    assert_int_equal(a.batch, n);
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
}

static void test_per_example(void **state)
{
    (void)state;
    enum { N = 8, NP = FM_NCLASSES * (S_PIXELS + 1) };
    /* sample 0: huge, pixels 0..99 = 100; samples 1..7: small, pixels 400..499 only */
    static float x[N * S_PIXELS];
    uint8_t y[N] = {3, 0, 1, 2, 4, 5, 6, 7};
    memset(x, 0, sizeof x);
    for (int p = 0; p < 100; p++)
        x[p] = 100.0f;
    for (int i = 1; i < N; i++)
        for (int p = 400; p < 500; p++)
            x[i * S_PIXELS + p] = 0.05f * (1.0f + 0.1f * (float)i);
    const double clip = 3.0;
    fm_clip_mode_t modes[] = {FM_CLIP_FAST, FM_CLIP_EXACT};
    for (int k = 0; k < 2; k++) {
        fm_model_t *m = s_model("logreg", 8);
        assert_int_equal(fm_model_nparams(m), NP);
        fm_engine_t *one = s_engine(m, 1, N);
        static float g[NP], grad[NP], small[NP], mean[NP];
        static double ref[NP];
        uint32_t idx[N];
        for (uint32_t i = 0; i < N; i++)
            idx[i] = i;
        assert_int_equal(s_reference(one, m, x, y, idx, N, clip, ref), 1); /* only the huge */
        /* the small samples' own gradients, unclipped, and the plain batch mean */
        memset(small, 0, sizeof small);
        for (uint32_t i = 1; i < N; i++) {
            assert_true(s_grad_one(one, m, x, y, i, 0, 0, g) < clip);
            for (int j = 0; j < NP; j++)
                small[j] += g[j];
        }
        fm_engine_gradient(one, m, x, y, idx, N, 0, 0);
        memcpy(mean, fm_engine_grads(one), sizeof mean);
        double mean_norm = s_norm2(mean, NP);
        assert_true(mean_norm > 10.0 * clip);
        fm_engine_destroy(&one);

        s_one_step(m, x, y, N, clip, modes[k], grad);
        for (int j = 0; j < NP; j++)
            ref[j] /= N; /* divided by q n = n */
        s_assert_close(grad, ref, NP, 1e-5, "per-example clipped mean");
        /* the small samples' weights (rows of fc.weight, pixels 400..499): their full
         * contribution survives; the batch-clipped mean would hold f * (their sum) / n with
         * f = C / ||mean|| < 0.1 */
        double f_batch = clip / mean_norm, worst = 0.0, biggest = 0.0;
        for (int c = 0; c < FM_NCLASSES; c++)
            for (int p = 400; p < 500; p++) {
                int j = c * S_PIXELS + p;
                double want = small[j] / N;
                worst = fmax(worst, fabs(grad[j] - want));
                biggest = fmax(biggest, fabs(want));
                /* what clipping the batch mean would give, here: far off */
                assert_true(fabs(grad[j] - f_batch * mean[j]) > 0.5 * fabs(want) ||
                            fabs(want) < 1e-6);
            }
        assert_true(biggest > 1e-3);
        assert_true(worst <= 1e-5 * biggest);
        fm_model_destroy(&m);
    }
}

/* ---- (d) Poisson sampling ------------------------------------------------------------------ */

static void test_sampling(void **state)
{
    (void)state;
    enum { N = 1000, T = 20000 };
    const double q = 0.05;
    static uint32_t out[N], hits[N], idx[N];
    for (uint32_t i = 0; i < N; i++)
        idx[i] = 3 * i + 1;
    memset(hits, 0, sizeof hits);
    fm_rng_t r;
    fm_rng_seed(&r, 99, 0);
    fm_dpsgd_rand_t rand = s_rand(&r);
    double sum = 0.0, sum2 = 0.0;
    for (int t = 0; t < T; t++) {
        uint32_t b = fm_dpsgd_sample(&rand, q, idx, N, out);
        sum += b;
        sum2 += (double)b * b;
        for (uint32_t i = 0; i < b; i++) {
            assert_int_equal((out[i] - 1) % 3, 0);
            assert_true(i == 0 || out[i] > out[i - 1]); /* in order, no repeats */
            hits[(out[i] - 1) / 3]++;
        }
    }
    double mean = sum / T, var = (sum2 - sum * sum / T) / (T - 1);
    double mu = q * N, v = N * q * (1 - q);
    print_message("batch size: mean %.3f (q n = %.1f), variance %.3f (n q (1 - q) = %.3f)\n",
                  mean, mu, var, v);
    /* 6 standard errors each: mean sqrt(v / T); the sample variance's is about
     * v sqrt(2 / (T - 1)) (the binomial's excess kurtosis here is 0.02) */
    assert_true(fabs(mean - mu) < 6.0 * sqrt(v / T));
    assert_true(fabs(var - v) < 6.0 * v * sqrt(2.0 / (T - 1)));
    /* every sample joins with frequency q: hits ~ Binomial(T, q) */
    double hsd = sqrt(T * q * (1 - q));
    for (int i = 0; i < N; i++)
        assert_true(fabs(hits[i] - T * q) < 6.5 * hsd);
    /* q = 1: everyone, every step; idx NULL: 0..n-1 */
    assert_int_equal(fm_dpsgd_sample(&rand, 1.0, NULL, N, out), N);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(out[i], i);
    /* steps per epoch */
    assert_int_equal(fm_dpsgd_steps_per_epoch(1.0), 1);
    assert_int_equal(fm_dpsgd_steps_per_epoch(0.25), 4);
    assert_int_equal(fm_dpsgd_steps_per_epoch(0.3), 3);
    assert_int_equal(fm_dpsgd_steps_per_epoch(0.004), 250);
    assert_int_equal(fm_dpsgd_steps_per_epoch(0.9), 1);
}

/* "complete": 2 epochs of 4 steps run to their end (no hooks, or a hook that stops after the
 * last epoch) are complete; stopped after the first epoch, or by a step hook, they are not */
static int s_stop_epoch(void *arg, int epoch, const fm_train_result_t *so_far)
{
    (void)so_far;
    return epoch == *(int *)arg;
}

static int s_stop_step(void *arg, const fm_dpsgd_step_t *st)
{
    return st->step == *(uint64_t *)arg;
}

static void test_complete(void **state)
{
    (void)state;
    enum { N = 20 };
    fm_model_t *m = s_model("logreg", 5);
    float *x = malloc(sizeof(float) * S_PIXELS * N);
    uint8_t y[N];
    assert_non_null(x);
    s_data(x, y, N, 0.0, 1.0, 4);
    fm_engine_t *e = s_engine(m, 1, N);
    fm_optim_t *o = s_sgd(fm_model_nparams(m), 0.01f);
    fm_dpsgd_config_t c = {.clip = 1.0, .sigma = 0.5, .q = 0.25, .epochs = 2};
    int last = 1, first = 0;
    uint64_t step = 5;
    const fm_dpsgd_hooks_t none = {0}, at_last = {.on_epoch = s_stop_epoch, .epoch_arg = &last},
                           at_first = {.on_epoch = s_stop_epoch, .epoch_arg = &first},
                           at_step = {.on_step = s_stop_step, .step_arg = &step};
    const struct {
        const fm_dpsgd_hooks_t *h;
        uint64_t steps;
        int complete;
    } cases[] = {{&none, 8, 1}, {&at_last, 8, 1}, {&at_first, 4, 0}, {&at_step, 6, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_rng_t r;
        fm_rng_seed(&r, 7, 0);
        fm_dpsgd_rand_t rand = s_rand(&r);
        fm_dpsgd_result_t res;
        assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, N, &c, &rand, NULL, cases[i].h, &res),
                         0);
        assert_true(res.train.steps == cases[i].steps);
        assert_int_equal(res.train.complete, cases[i].complete);
    }
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
    fm_model_destroy(&m);
    free(x);
}

/* ---- (e) configuration ------------------------------------------------------------------- */

static void test_bad_config(void **state)
{
    (void)state;
    const fm_dpsgd_config_t ok = {.clip = 1.0, .sigma = 1.0, .q = 0.1, .epochs = 1};
    assert_int_equal(fm_dpsgd_check(&ok, NULL), 0);
    struct {
        fm_dpsgd_config_t c;
        const char *says;
    } bad[] = {
        {{.clip = 0.0, .sigma = 1, .q = 0.1, .epochs = 1}, "clip = 0: must be finite and > 0"},
        {{.clip = -1, .sigma = 1, .q = 0.1, .epochs = 1}, "clip = -1"},
        {{.clip = INFINITY, .sigma = 1, .q = 0.1, .epochs = 1}, "clip = inf"},
        {{.clip = NAN, .sigma = 1, .q = 0.1, .epochs = 1}, "clip = nan"},
        {{.clip = 1, .sigma = -0.5, .q = 0.1, .epochs = 1}, "noise multiplier = -0.5"},
        {{.clip = 1, .sigma = NAN, .q = 0.1, .epochs = 1}, "noise multiplier = nan"},
        {{.clip = 1, .sigma = INFINITY, .q = 0.1, .epochs = 1}, "noise multiplier = inf"},
        {{.clip = 1, .sigma = 1, .q = 0.0, .epochs = 1}, "sample rate = 0: must be in (0, 1]"},
        {{.clip = 1, .sigma = 1, .q = 1.5, .epochs = 1}, "sample rate = 1.5"},
        {{.clip = 1, .sigma = 1, .q = NAN, .epochs = 1}, "sample rate = nan"},
        {{.clip = 1, .sigma = 1, .q = 0.1, .epochs = 0}, "epochs = 0"},
        {{.clip = 1, .sigma = 1, .q = 0.1, .epochs = 1, .mode = (fm_clip_mode_t)7},
         "clipping mode 7"},
    };
    fm_model_t *m = s_model("logreg", 1);
    size_t np = fm_model_nparams(m);
    float *w0 = malloc(sizeof(float) * np), x[2 * S_PIXELS];
    uint8_t y[2];
    assert_non_null(w0);
    memcpy(w0, fm_model_params(m), sizeof(float) * np);
    s_data(x, y, 2, 0, 1, 1);
    fm_engine_t *e = s_engine(m, 1, 2);
    fm_optim_t *o = s_sgd(np, 0.1f);
    fm_rng_t r;
    fm_rng_seed(&r, 1, 0);
    fm_dpsgd_rand_t rand = s_rand(&r);
    fm_dpsgd_result_t res;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_errmsg_t why = {{0}};
        assert_int_equal(fm_dpsgd_check(&bad[i].c, &why), FM_EARG);
        if (!strstr(why.msg, bad[i].says) || strchr(why.msg, '\n')) {
            print_error("case %zu: '%s' does not say '%s' on one line\n", i, why.msg,
                        bad[i].says);
            fail();
        }
        assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, 2, &bad[i].c, &rand, NULL, NULL, &res),
                         FM_EARG);
    }
    /* n = 0, no random source, noise without normals */
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, 0, &ok, &rand, NULL, NULL, &res), FM_EARG);
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, 2, &ok, NULL, NULL, NULL, &res), FM_EARG);
    fm_dpsgd_rand_t nonorm = {.bytes = s_bytes, .ctx = &r};
    assert_int_equal(fm_dpsgd_run(e, o, m, x, y, NULL, 2, &ok, &nonorm, NULL, NULL, &res),
                     FM_EARG);
    assert_memory_equal(fm_model_params(m), w0, sizeof(float) * np); /* nothing trained */
    /* the engine's own checks */
    fm_clip_result_t cr;
    uint32_t idx[3] = {0, 1, 0};
    assert_int_equal(fm_engine_clipped_sum(e, m, x, y, idx, 1, 0, 0, 0.0, FM_CLIP_FAST, &cr),
                     FM_EARG);
    assert_int_equal(fm_engine_clipped_sum(e, m, x, y, idx, 1, 0, 0, INFINITY, FM_CLIP_FAST, &cr),
                     FM_EARG);
    assert_int_equal(fm_engine_clipped_sum(e, m, x, y, idx, 3, 0, 0, 1.0, FM_CLIP_FAST, &cr),
                     FM_EARG); /* above the engine's max batch */
    assert_int_equal(fm_engine_clipped_sum(e, m, x, y, idx, 0, 0, 0, 1.0, FM_CLIP_FAST, &cr),
                     FM_EARG);
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
    free(w0);
    fm_model_destroy(&m);
}

int main(int argc, char **argv)
{
    if (argc > 1) /* a test name or pattern: run only those */
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes_logreg), cmocka_unit_test(test_modes_mlp),
        cmocka_unit_test(test_modes_cnn),    cmocka_unit_test(test_modes_cnn_dropout),
        cmocka_unit_test(test_bound),        cmocka_unit_test(test_bound_identical),
        cmocka_unit_test(test_noise),        cmocka_unit_test(test_per_example),
        cmocka_unit_test(test_sampling),     cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
