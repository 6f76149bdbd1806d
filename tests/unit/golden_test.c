/* The PyTorch golden check: replay the 3 SGD steps recorded by tests/fixtures/gen_golden.py
 * (torch 1.13, float32, one thread, dropout off) with fm_engine + fm_optim and compare the
 * loss at every step, the step-1 gradient and weights (mlp fixtures) and the step-3 weights
 * (all fixtures).
 *
 * Criteria (the "1e-4 relative"), per tensor, b the PyTorch value:
 *   loss:    |a - b| / |b|                                   <= 1e-4 at each step
 *   tensors: max|a - b| / max|b|                             <= 1e-4 (grad0, step1, step3)
 *   update:  max|(w3_c - w0) - (w3_t - w0)| / max|w3_t - w0| <= 1e-3 (and <= 1e-4: see
 *            TOL_UPDATE_TIGHT)
 * The update criterion is the stronger one: the 3-step change is ~1e-3..1e-2 of the weights,
 * so the weight criterion alone would accept a wrong update of up to ~10% of its size.
 * Both sides compute in float32 with different summation orders (sgemm blocking, reduction
 * order), so agreement is expected at ~1e-6 on losses and gradients. Measured (printed on
 * every run): losses <= 1.7e-7, grad0 <= 3.4e-7, step1/step3 weights <= 3e-7 (cnn: 2.4e-7
 * after the near-tie below), updates <= 1.7e-5.
 *
 * Max-pool near-ties (cnn). Where the two largest values of a 2x2 window differ by less than
 * float32 conv rounding (~1e-7 here), two correct float32 implementations may pick different
 * argmaxes; the pooled value is the same to ~1e-8 but the gradient goes to another position,
 * changing conv2.weight (that channel) and conv1.* by up to ~1% at that step. The committed
 * cnn fixture has one: step 3, sample 1, channel 21, window (7,1) holds 0.06372316 at
 * positions 1 and 3, apart by 1.2e-8 in float64 (1.6 float ulps); torch (float32 and float64)
 * takes position 3, fedmq's float32 conv rounds the other way and takes position 1. Rather
 * than loosening the criteria, the test recomputes the cnn gradient with fm_layers (the
 * kernels fm_work runs; checked equal to the engine's gradient at every step), finds the
 * windows whose top-2 gap is <= TIE_GAP and recomputes their four values in double from
 * the float inputs and weights. If the engine's trajectory does not match, it is replayed
 * once more with every near-tie decided by the double values (i.e. as exact arithmetic,
 * and here torch, decides; only the windows where float and double disagree change); that
 * single deterministic replay must match at the full criteria. No search over flips: a
 * search could find false matches (flipping an agreed step-1 near-tie of this fixture
 * moves the update by only 3e-4, within the 1e-3). Every near-tie and every replay
 * is printed. */
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
#include "fm_layers.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_safetensors.h"

#define TOL_LOSS 1e-4
#define TOL_TENSOR 1e-4
#define TOL_UPDATE 1e-3
/* A tighter guard on the update, beyond the criteria: measured agreement is
 * <= 1.7e-5 (float32 rounding through 3 steps, both fixtures kinds), while defects that the
 * 1e-3 bound lets through exist: FedProx mu or weight decay off by a factor 2 in later steps
 * move the mlp_full update by 7e-4. 1e-4 keeps 6x headroom over rounding (other BLAS cores
 * sum in other orders, at the same precision). */
#define TOL_UPDATE_TIGHT 1e-4
/* Near-tie threshold on conv2 outputs (values O(0.01..1)): float32 dot products of 288 terms
 * from two implementations differ by <~1e-7 absolute, so 1e-6 is 10x that. */
#define TIE_GAP 1e-6
/* The manual fm_layers gradient runs the same kernels as the engine on the whole batch:
 * identical with one engine thread (measured 0), rounding-level with the batch split over
 * threads (measured 3.7e-7): 1e-5 per view. */
#define TOL_MANUAL 1e-5
#define MAX_TIES 16

/* ---- the fixture ------------------------------------------------------------------------------
 */

typedef struct {
    const char *name; /* e.g. "golden_cnn_plain" */
    fm_safetensors_t *f;
    const char *model; /* metadata "model" */
    int B;
    float *x;       /* (B,784) */
    uint8_t *y;     /* (B) from I64 */
    float tloss[3]; /* torch's NLL before each step */
    fm_sgd_config_t cfg;
    int has_grad0, has_step1; /* optional tensors (the mlp fixtures have them) */
} fixture_t;

/* The F32 tensor `prefix``view name` with exactly the view's shape (data copied out:
 * safetensors data is not necessarily aligned). */
static void s_get(const fm_safetensors_t *f, const char *prefix, const fm_view_t *v, float *dst)
{
    char key[128];
    snprintf(key, sizeof key, "%s%s", prefix, v->name);
    const fm_tensor_t *t = fm_safetensors_get(f, key);
    if (!t)
        fail_msg("fixture has no tensor '%s'", key);
    assert_string_equal(t->dtype, "F32");
    assert_int_equal(t->ndim, v->ndim);
    for (int d = 0; d < v->ndim; d++)
        assert_int_equal(t->shape[d], v->shape[d]);
    assert_int_equal(t->nbytes, v->numel * sizeof(float));
    memcpy(dst, t->data, t->nbytes);
}

/* All views of `prefix`.* into a model-layout buffer. */
static void s_get_all(const fm_safetensors_t *f, const fm_model_t *m, const char *prefix,
                      float *dst)
{
    for (int i = 0; i < fm_model_nviews(m); i++)
        s_get(f, prefix, fm_model_view(m, i), dst + fm_model_view(m, i)->offset);
}

static double s_meta_num(const fm_safetensors_t *f, const char *key)
{
    const char *s = fm_safetensors_meta(f, key);
    if (!s)
        fail_msg("fixture metadata has no '%s'", key);
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v))
        fail_msg("metadata %s = '%s' is not a number", key, s);
    return v;
}

static void s_fixture_open(fixture_t *fx, const char *name)
{
    memset(fx, 0, sizeof *fx);
    fx->name = name;
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s.safetensors", FM_SOURCE_DIR, name);
    int err = 0;
    fm_errmsg_t em = {{0}};
    fx->f = fm_safetensors_open(path, &err, &em);
    if (!fx->f)
        fail_msg("%s: %s (%s)", path, em.msg, fm_strerror(err));
    fx->model = fm_safetensors_meta(fx->f, "model");
    assert_non_null(fx->model);
    fx->B = (int)s_meta_num(fx->f, "batch");
    assert_true(fx->B >= 1 && fx->B <= 1024);

    /* x [B,1,28,28] F32, y [B] I64 -> uint8, loss [3] F32 */
    const fm_tensor_t *tx = fm_safetensors_get(fx->f, "x"), *ty = fm_safetensors_get(fx->f, "y");
    const fm_tensor_t *tl = fm_safetensors_get(fx->f, "loss");
    assert_non_null(tx);
    assert_non_null(ty);
    assert_non_null(tl);
    assert_string_equal(tx->dtype, "F32");
    assert_int_equal(tx->ndim, 4);
    assert_int_equal(tx->shape[0], fx->B);
    assert_int_equal(tx->nbytes, (size_t)fx->B * 784 * sizeof(float));
    assert_string_equal(ty->dtype, "I64");
    assert_int_equal(ty->ndim, 1);
    assert_int_equal(ty->shape[0], fx->B);
    assert_string_equal(tl->dtype, "F32");
    assert_int_equal(tl->nbytes, 3 * sizeof(float));
    fx->x = fm_tu_floats((size_t)fx->B * 784);
    memcpy(fx->x, tx->data, tx->nbytes);
    memcpy(fx->tloss, tl->data, sizeof fx->tloss);
    fx->y = fm_tu_alloc((size_t)fx->B, 1);
    for (int i = 0; i < fx->B; i++) {
        int64_t v;
        memcpy(&v, (const char *)ty->data + 8 * (size_t)i, 8);
        assert_true(v >= 0 && v < FM_NCLASSES);
        fx->y[i] = (uint8_t)v;
    }
    fx->cfg = (fm_sgd_config_t){
        .lr = (float)s_meta_num(fx->f, "lr"),
        .momentum = (float)s_meta_num(fx->f, "momentum"),
        .weight_decay = (float)s_meta_num(fx->f, "weight_decay"),
        .clip_norm = (float)s_meta_num(fx->f, "clip_max_norm"),
        .mu = (float)s_meta_num(fx->f, "mu"),
    };
    int err2 = 0;
    fm_model_t *m = fm_model_new(fx->model, &err2);
    assert_non_null(m);
    char key[128];
    snprintf(key, sizeof key, "grad0.%s", fm_model_view(m, 0)->name);
    fx->has_grad0 = fm_safetensors_get(fx->f, key) != NULL;
    snprintf(key, sizeof key, "step1.%s", fm_model_view(m, 0)->name);
    fx->has_step1 = fm_safetensors_get(fx->f, key) != NULL;
    if (strcmp(fx->model, "mlp") == 0)
        assert_true(fx->has_grad0 && fx->has_step1); /* as tests/fixtures/README.md says */
    fm_model_destroy(&m);
}

static void s_fixture_close(fixture_t *fx)
{
    fm_safetensors_close(&fx->f);
    free(fx->x);
    free(fx->y);
}

/* ---- the cnn through fm_layers, with near-tie detection
 * ------------------------------------------ */

typedef struct {
    int step;      /* 0-based step at which the tie occurs */
    int n, oh, ow; /* image n = sample * 64 + channel, window (oh, ow) of the 12x12 pool */
    int k_first;   /* the argmax fm_maxpool2_forward chose */
    int k_other;   /* the near-tied runner-up */
    float v_first, v_other;
    int k_exact;             /* the argmax of the window's values computed in double */
    double d_first, d_other; /* the double values at k_first, k_other */
} tie_t;

typedef struct {
    int B;
    float *a1, *a2, *pool, *h, *logits, *logp, *dlogits, *dh, *dd1, *da2, *da1, *scratch;
    uint8_t *am;
} cnn_t;

static void s_cnn_new(cnn_t *c, int B)
{
    c->B = B;
    size_t b = (size_t)B;
    c->a1 = fm_tu_floats(b * 32 * 676), c->a2 = fm_tu_floats(b * 64 * 576);
    c->pool = fm_tu_floats(b * 9216), c->h = fm_tu_floats(b * 128);
    c->logits = fm_tu_floats(b * 10), c->logp = fm_tu_floats(b * 10);
    c->dlogits = fm_tu_floats(b * 10), c->dh = fm_tu_floats(b * 128);
    c->dd1 = fm_tu_floats(b * 9216), c->da2 = fm_tu_floats(b * 64 * 576);
    c->da1 = fm_tu_floats(b * 32 * 676);
    c->scratch = fm_tu_floats(fm_conv2d_scratch(32, 26, 26, 64, 3, 3));
    c->am = fm_tu_alloc(b * 9216, 1);
}

static void s_cnn_free(cnn_t *c)
{
    free(c->a1), free(c->a2), free(c->pool), free(c->h), free(c->logits), free(c->logp);
    free(c->dlogits), free(c->dh), free(c->dd1), free(c->da2), free(c->da1), free(c->scratch);
    free(c->am);
}

/* conv2's raw output (before bias) at window position k of pool image n. */
static float s_win(const cnn_t *c, int n, int oh, int ow, int k)
{
    return c->a2[(size_t)n * 576 + (size_t)(2 * oh + k / 2) * 24 + 2 * ow + k % 2];
}

/* conv2(relu(conv1(x))) + bias (before the relu) at sample b, channel o, position (i, j) of
 * the 24x24 map, all in double from the float inputs and weights P. */
static double s_a2_double(const float *P, const fm_model_t *m, const float *x, int b, int o,
                          int i, int j)
{
    const float *w1 = P + fm_model_view(m, 0)->offset, *b1 = P + fm_model_view(m, 1)->offset;
    const float *w2 = P + fm_model_view(m, 2)->offset, *b2 = P + fm_model_view(m, 3)->offset;
    const float *img = x + (size_t)b * 784;
    double acc = b2[o];
    for (int c = 0; c < 32; c++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                int r = i + kh, q = j + kw; /* position in the 26x26 conv1 map */
                double a = b1[c];
                for (int u = 0; u < 3; u++)
                    for (int v = 0; v < 3; v++)
                        a += (double)w1[c * 9 + u * 3 + v] * img[(r + u) * 28 + q + v];
                a = a > 0.0 ? a : 0.0;
                acc += (double)w2[((size_t)o * 32 + c) * 9 + kh * 3 + kw] * a;
            }
    return acc;
}

/* fm_work's cnn forward (train = 0) and backward, spelled out with the same fm_layers calls
 * (conv2's bias and relu applied after pooling by fm_relu_maxpool2_*). Near-ties (pooled
 * output > 0, top-2 gap of the window <= TIE_GAP) are recorded in found[] (at most
 * MAX_TIES; found may be NULL) with their double-precision decision; with `exact` they are
 * also resolved that way (*nflip counts the windows whose argmax changed). grads (zeroed
 * here) receive the gradient of the mean NLL. Returns the mean loss. */
static double s_cnn_grad(cnn_t *c, const fm_model_t *m, const float *x, const uint8_t *y,
                         float *grads, int step, int exact, tie_t *found, int *nfound, int *nflip)
{
    int B = c->B;
    const float *P = fm_model_params_const(m);
    size_t o[8];
    for (int i = 0; i < 8; i++)
        o[i] = fm_model_view(m, i)->offset;
    fm_conv2d_forward_act(c->a1, x, P + o[0], P + o[1], c->scratch, B, 1, 28, 28, 32, 3, 3, 1);
    fm_conv2d_forward_act(c->a2, c->a1, P + o[2], NULL, c->scratch, B, 32, 26, 26, 64, 3, 3, 0);
    fm_relu_maxpool2_forward(c->pool, c->am, c->a2, P + o[3], B, 64, 24, 24);
    for (int n = 0; n < B * 64; n++) {
        float bias = P[o[3] + n % 64];
        for (int oh = 0; oh < 12; oh++)
            for (int ow = 0; ow < 12; ow++) {
                size_t at = (size_t)n * 144 + oh * 12 + ow;
                int k1 = c->am[at], k2 = -1;
                float v1 = s_win(c, n, oh, ow, k1);
                for (int k = 0; k < 4; k++)
                    if (k != k1 && (k2 < 0 || s_win(c, n, oh, ow, k) > s_win(c, n, oh, ow, k2)))
                        k2 = k;
                float v2 = s_win(c, n, oh, ow, k2);
                if (!(c->pool[at] > 0.0f && v1 - v2 <= TIE_GAP))
                    continue;
                double d[4];
                int ke = 0;
                for (int k = 0; k < 4; k++) {
                    d[k] = s_a2_double(P, m, x, n / 64, n % 64, 2 * oh + k / 2, 2 * ow + k % 2);
                    if (d[k] > d[ke]) /* first maximum wins, as fm_maxpool2 and PyTorch */
                        ke = k;
                }
                if (found && *nfound < MAX_TIES)
                    found[(*nfound)++] = (tie_t){step,      n,         oh, ow,    k1,   k2,
                                                 v1 + bias, v2 + bias, ke, d[k1], d[k2]};
                if (exact && ke != k1) {
                    float v = s_win(c, n, oh, ow, ke) + bias;
                    c->am[at] = (uint8_t)ke;
                    c->pool[at] = v > 0.0f ? v : 0.0f;
                    (*nflip)++;
                }
            }
    }
    fm_dense_forward(c->h, c->pool, P + o[4], P + o[5], B, 9216, 128);
    fm_relu_forward(c->h, c->h, (size_t)B * 128);
    fm_dense_forward(c->logits, c->h, P + o[6], P + o[7], B, 128, 10);
    double loss = fm_logsoftmax_nll_forward(c->logp, c->logits, y, B, 10);

    float *G = grads;
    memset(G, 0, fm_model_nparams(m) * sizeof(float));
    fm_logsoftmax_nll_backward(c->dlogits, c->logp, y, B, 10, 1.0f / (float)B);
    fm_dense_backward(c->dh, G + o[6], G + o[7], c->dlogits, c->h, P + o[6], B, 128, 10);
    fm_relu_backward(c->dh, c->dh, c->h, (size_t)B * 128);
    fm_dense_backward(c->dd1, G + o[4], G + o[5], c->dh, c->pool, P + o[4], B, 9216, 128);
    fm_relu_maxpool2_backward(c->da2, G + o[3], c->dd1, c->pool, c->am, B, 64, 24, 24);
    fm_conv2d_backward_act(c->da1, G + o[2], NULL, c->da2, c->a1, P + o[2], c->scratch, B, 32, 26,
                           26, 64, 3, 3, 1);
    fm_conv2d_backward(NULL, G + o[0], G + o[1], c->da1, x, P + o[0], c->scratch, B, 1, 28, 28,
                       32, 3, 3);
    return loss / B;
}

/* ---- one replay of the 3 steps
 * ------------------------------------------------------------------- */

typedef struct {
    double loss, grad0, step1, step3, update, manual; /* worst relative errors */
    const char *grad0_at, *step1_at, *step3_at, *update_at;
    double norms[3];
    int flips; /* windows decided differently from the float argmax (exact replays) */
    int pass;
} result_t;

static void s_worst(double e, double *w, const char **at, const char *name)
{
    if (e > *w || e != e) {
        *w = e;
        if (at)
            *at = name;
    }
}

/* Worst per-view relative error of a against the fixture's `prefix`.* */
static double s_compare(const fixture_t *fx, const fm_model_t *m, const char *prefix,
                        const float *a, const char **at)
{
    float *b = fm_tu_floats(fm_model_nparams(m));
    s_get_all(fx->f, m, prefix, b);
    double worst = 0.0;
    for (int i = 0; i < fm_model_nviews(m); i++) {
        const fm_view_t *v = fm_model_view(m, i);
        s_worst(fm_tu_rel_err(a + v->offset, b + v->offset, v->numel), &worst, at, v->name);
    }
    free(b);
    return worst;
}

/* Replay the fixture on `threads` engine threads; for the cnn also through fm_layers (to
 * find near-ties and, with `exact`, to take the gradient with near-ties decided in double
 * at the steps where that changes an argmax). */
static void s_replay(const fixture_t *fx, int threads, int exact, tie_t *found, int *nfound,
                     result_t *r)
{
    memset(r, 0, sizeof *r);
    r->grad0 = r->step1 = NAN; /* stay NaN when the fixture has none */
    int err = 0;
    fm_model_t *m = fm_model_new(fx->model, &err);
    assert_non_null(m);
    size_t np = fm_model_nparams(m);
    float *w = fm_model_params(m), *w0 = fm_tu_floats(np), *gm = fm_tu_floats(np);
    s_get_all(fx->f, m, "init.", w);
    memcpy(w0, w, np * sizeof(float));
    fm_optim_t *o = fm_optim_new(np, &fx->cfg, &err);
    assert_non_null(o);
    fm_engine_t *e = fm_engine_new(m, threads, fx->B, &err);
    assert_non_null(e);
    int is_cnn = fm_model_arch(m) == FM_ARCH_CNN;
    cnn_t c;
    if (is_cnn)
        s_cnn_new(&c, fx->B);

    for (int step = 0; step < 3; step++) {
        /* train = 0: dropout off, as the fixture (model.eval()) */
        double loss = fm_engine_gradient(e, m, fx->x, fx->y, NULL, fx->B, 0, 0);
        float *g = fm_engine_grads(e);
        if (is_cnn) {
            int nflip = 0;
            double lm = s_cnn_grad(&c, m, fx->x, fx->y, gm, step, 0, found, nfound, &nflip);
            /* the manual path is the engine's computation (validates the replays below) */
            s_worst(fabs(lm - loss) / loss, &r->manual, NULL, NULL);
            for (int i = 0; i < fm_model_nviews(m); i++) {
                const fm_view_t *v = fm_model_view(m, i);
                s_worst(fm_tu_rel_err(gm + v->offset, g + v->offset, v->numel), &r->manual, NULL,
                        NULL);
            }
            if (exact) {
                double le = s_cnn_grad(&c, m, fx->x, fx->y, gm, step, 1, NULL, NULL, &nflip);
                if (nflip > 0) {
                    r->flips += nflip;
                    loss = le;
                    g = gm;
                }
            }
        }
        s_worst(fabs(loss - fx->tloss[step]) / fabs(fx->tloss[step]), &r->loss, NULL, NULL);
        if (step == 0 && fx->has_grad0) /* before fm_optim_step (prox, clip act in place) */
            r->grad0 = s_compare(fx, m, "grad0.", g, &r->grad0_at);
        r->norms[step] = fm_optim_step(o, w, g, fx->cfg.mu > 0.0f ? w0 : NULL);
        if (step == 0 && fx->has_step1)
            r->step1 = s_compare(fx, m, "step1.", w, &r->step1_at);
    }
    r->step3 = s_compare(fx, m, "step3.", w, &r->step3_at);

    /* the update: (w3 - w0) against (w3_torch - w0), per view */
    float *t3 = fm_tu_floats(np), *dc = fm_tu_floats(np), *dt = fm_tu_floats(np);
    s_get_all(fx->f, m, "step3.", t3);
    for (size_t i = 0; i < np; i++) {
        dc[i] = w[i] - w0[i];
        dt[i] = t3[i] - w0[i];
    }
    for (int i = 0; i < fm_model_nviews(m); i++) {
        const fm_view_t *v = fm_model_view(m, i);
        assert_true(fm_tu_max_abs(dt + v->offset, v->numel) > 0.0); /* torch did move it */
        s_worst(fm_tu_rel_err(dc + v->offset, dt + v->offset, v->numel), &r->update,
                &r->update_at, v->name);
    }
    r->pass = r->loss <= TOL_LOSS && r->step3 <= TOL_TENSOR && r->update <= TOL_UPDATE_TIGHT &&
              (!fx->has_grad0 || r->grad0 <= TOL_TENSOR) &&
              (!fx->has_step1 || r->step1 <= TOL_TENSOR);

    if (is_cnn)
        s_cnn_free(&c);
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&m);
    free(w0), free(gm), free(t3), free(dc), free(dt);
}

static void s_print(const fixture_t *fx, int threads, const char *what, const result_t *r)
{
    print_message("%s (threads %d) %s: worst rel err: loss %.2e | grad0 %.2e (%s) | step1 %.2e "
                  "(%s) | step3 %.2e (%s) | update %.2e (%s) -> %s\n",
                  fx->name, threads, what, r->loss, r->grad0, r->grad0_at ? r->grad0_at : "n/a",
                  r->step1, r->step1_at ? r->step1_at : "n/a", r->step3, r->step3_at, r->update,
                  r->update_at, r->pass ? "match" : "NO MATCH");
}

static void s_golden(const char *name, int threads)
{
    fixture_t fx;
    s_fixture_open(&fx, name);
    tie_t ties[MAX_TIES];
    int nties = 0;
    result_t r;
    s_replay(&fx, threads, 0, ties, &nties, &r);
    print_message("%s (threads %d): lr %g momentum %g wd %g clip %g mu %g; pre-clip norms "
                  "%.4f %.4f %.4f\n",
                  name, threads, fx.cfg.lr, fx.cfg.momentum, fx.cfg.weight_decay,
                  fx.cfg.clip_norm, fx.cfg.mu, r.norms[0], r.norms[1], r.norms[2]);
    s_print(&fx, threads, "engine", &r);
    int disagree = 0;
    if (strcmp(fx.model, "cnn") == 0) {
        print_message("%s: fm_layers replay vs engine: worst rel err %.2e; %d max-pool "
                      "near-tie(s) (gap <= %.0e)\n",
                      name, r.manual, nties, TIE_GAP);
        FM_TU_ASSERT_LE(r.manual, TOL_MANUAL, "%s: fm_layers replay differs from engine\n", name);
        for (int i = 0; i < nties; i++) {
            const tie_t *t = &ties[i];
            disagree += t->k_exact != t->k_first;
            print_message("  near-tie: step %d sample %d channel %d window (%d,%d): float takes "
                          "position %d = %.9g over %d = %.9g; double: %.10f vs %.10f -> %d%s\n",
                          t->step + 1, t->n / 64, t->n % 64, t->oh, t->ow, t->k_first, t->v_first,
                          t->k_other, t->v_other, t->d_first, t->d_other, t->k_exact,
                          t->k_exact != t->k_first ? " (float and double DISAGREE)" : "");
        }
    }
    if (!r.pass && disagree > 0) {
        /* the one alternative: near-ties decided in double (see the top of the file) */
        result_t re;
        s_replay(&fx, threads, 1, NULL, &(int){0}, &re);
        char what[80];
        snprintf(what, sizeof what, "with %d near-tie(s) decided in double", re.flips);
        s_print(&fx, threads, what, &re);
        FM_TU_ASSERT_LE(re.manual, TOL_MANUAL, "%s: fm_layers replay differs\n", name);
        assert_true(re.flips > 0);
        r = re;
    }
    FM_TU_ASSERT_LE(r.loss, TOL_LOSS, "%s: loss\n", name);
    if (fx.has_grad0)
        FM_TU_ASSERT_LE(r.grad0, TOL_TENSOR, "%s: grad0 (%s)\n", name, r.grad0_at);
    if (fx.has_step1)
        FM_TU_ASSERT_LE(r.step1, TOL_TENSOR, "%s: step1 (%s)\n", name, r.step1_at);
    FM_TU_ASSERT_LE(r.step3, TOL_TENSOR, "%s: step3 (%s)\n", name, r.step3_at);
    FM_TU_ASSERT_LE(r.update, TOL_UPDATE, "%s: update (%s)\n", name, r.update_at);
    FM_TU_ASSERT_LE(r.update, TOL_UPDATE_TIGHT, "%s: update beyond rounding (%s)\n", name,
                    r.update_at);
    s_fixture_close(&fx);
}

static void test_golden_mlp_plain(void **state) { s_golden("golden_mlp_plain", 1); }
static void test_golden_mlp_full(void **state) { s_golden("golden_mlp_full", 1); }
static void test_golden_cnn_plain(void **state) { s_golden("golden_cnn_plain", 1); }
/* the same with the batch split over threads (summation order changes, nothing else) */
static void test_golden_mlp_full_threads3(void **state) { s_golden("golden_mlp_full", 3); }
static void test_golden_cnn_plain_threads2(void **state) { s_golden("golden_cnn_plain", 2); }

int main(void)
{
    fm_blas_setup(NULL); /* OpenBLAS on one thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_mlp_plain),
        cmocka_unit_test(test_golden_mlp_full),
        cmocka_unit_test(test_golden_cnn_plain),
        cmocka_unit_test(test_golden_mlp_full_threads3),
        cmocka_unit_test(test_golden_cnn_plain_threads2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
