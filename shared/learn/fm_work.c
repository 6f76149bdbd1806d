#include "fm_work.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"
#include "fm_layers.h"

/* Dropout rates of the cnn (the seed's FederatedNet). */
#define CNN_P1 0.25f
#define CNN_P2 0.5f

struct fm_work {
    fm_arch_t arch;   /* architecture this workspace was sized for */
    int max_batch;    /* capacity in samples */
    int B;            /* samples in the last forward */
    int train;        /* last forward ran with dropout */
    const float *x;   /* input of the last forward (borrowed) */
    const uint8_t *y; /* labels of the last forward (borrowed) */
    /* activations (B x per-sample size each) */
    float *a1, *a2;       /* cnn: conv1 output after relu, conv2 product (no bias, no relu);
                             mlp: hidden 1, 2 after relu */
    float *pool;          /* cnn: max-pool output (B,9216) */
    uint8_t *argmax;      /* cnn: max-pool argmax (B,9216) */
    float *drop1, *mask1; /* cnn: dropout1 output and mask */
    float *h;             /* cnn: fc1 output after relu (B,128) */
    float *drop2, *mask2; /* cnn: dropout2 output and mask */
    float *logits, *logp; /* (B,10) */
    /* activation gradients */
    float *dlogits, *dh, *dd1, *da2, *da1;
    float *scratch; /* conv im2col buffer */
};

static float *s_alloc(size_t n, int *ok)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p)
        *ok = 0;
    return p;
}

fm_work_t *fm_work_new(const fm_model_t *m, int max_batch, int *err)
{
    if (max_batch < 1 || fm_model_arch(m) == FM_ARCH_SPEC) {
        if (err)
            *err = max_batch < 1 ? FM_EARG : FM_EMODEL; /* a spec has no forward pass */
        return NULL;
    }
    fm_work_t *w = calloc(1, sizeof *w);
    if (!w)
        goto nomem;
    int ok = 1;
    size_t B = (size_t)max_batch;
    w->arch = fm_model_arch(m);
    w->max_batch = max_batch;
    w->logits = s_alloc(B * 10, &ok);
    w->logp = s_alloc(B * 10, &ok);
    w->dlogits = s_alloc(B * 10, &ok);
    switch (w->arch) {
    case FM_ARCH_SPEC: break; /* refused by fm_work_new */
    case FM_ARCH_LOGREG: break;
    case FM_ARCH_MLP:
        w->a1 = s_alloc(B * 200, &ok);
        w->a2 = s_alloc(B * 200, &ok);
        w->da1 = s_alloc(B * 200, &ok);
        w->da2 = s_alloc(B * 200, &ok);
        break;
    case FM_ARCH_CNN:
        w->a1 = s_alloc(B * 32 * 26 * 26, &ok);
        w->a2 = s_alloc(B * 64 * 24 * 24, &ok);
        w->pool = s_alloc(B * 9216, &ok);
        w->argmax = aligned_alloc(64, (B * 9216 + 63) / 64 * 64);
        ok = ok && w->argmax;
        w->drop1 = s_alloc(B * 9216, &ok);
        w->mask1 = s_alloc(B * 9216, &ok);
        w->h = s_alloc(B * 128, &ok);
        w->drop2 = s_alloc(B * 128, &ok);
        w->mask2 = s_alloc(B * 128, &ok);
        w->dh = s_alloc(B * 128, &ok);
        w->dd1 = s_alloc(B * 9216, &ok);
        w->da2 = s_alloc(B * 64 * 24 * 24, &ok);
        w->da1 = s_alloc(B * 32 * 26 * 26, &ok);
        w->scratch = s_alloc(fm_conv2d_scratch(32, 26, 26, 64, 3, 3), &ok);
        break;
    }
    if (!ok)
        goto nomem;
    return w;
nomem:
    fm_work_destroy(&w);
    if (err)
        *err = -ENOMEM;
    return NULL;
}

void fm_work_destroy(fm_work_t **p)
{
    if (!p || !*p)
        return;
    fm_work_t *w = *p;
    float *bufs[] = {w->a1,    w->a2,    w->pool,   w->drop1,  w->mask1,   w->h,
                     w->drop2, w->mask2, w->logits, w->logp,   w->dlogits, w->dh,
                     w->dd1,   w->da2,   w->da1,    w->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(w->argmax);
    free(w);
    *p = NULL;
}

int fm_work_max_batch(const fm_work_t *w) { return w->max_batch; }
const float *fm_work_logp(const fm_work_t *w) { return w->logp; }

/* Parameter pointer of view i. */
static const float *s_p(const fm_model_t *m, int i)
{
    return fm_model_params_const(m) + fm_model_view(m, i)->offset;
}

static float *s_g(const fm_model_t *m, float *grads, int i)
{
    return grads + fm_model_view(m, i)->offset;
}

double fm_work_forward(fm_work_t *w, const fm_model_t *m, const float *x, const uint8_t *y, int B,
                       int train, fm_rng_t *rng)
{
    FM_ASSERT(B >= 1 && B <= w->max_batch);
    w->B = B;
    w->x = x;
    w->y = y;
    w->train = train;
    switch (w->arch) {
    case FM_ARCH_SPEC: break; /* refused by fm_work_new */
    case FM_ARCH_LOGREG: fm_dense_forward(w->logits, x, s_p(m, 0), s_p(m, 1), B, 784, 10); break;
    case FM_ARCH_MLP:
        fm_dense_forward(w->a1, x, s_p(m, 0), s_p(m, 1), B, 784, 200);
        fm_relu_forward(w->a1, w->a1, (size_t)B * 200);
        fm_dense_forward(w->a2, w->a1, s_p(m, 2), s_p(m, 3), B, 200, 200);
        fm_relu_forward(w->a2, w->a2, (size_t)B * 200);
        fm_dense_forward(w->logits, w->a2, s_p(m, 4), s_p(m, 5), B, 200, 10);
        break;
    case FM_ARCH_CNN: {
        // x (B,1,28,28) -> a1 (B,32,26,26) -> a2 (B,64,24,24) -> pool (B,64,12,12)
        // conv2's bias and relu are applied after pooling (fm_relu_maxpool2_forward): a2
        // holds conv2's raw product without bias
        fm_conv2d_forward_act(w->a1, x, s_p(m, 0), s_p(m, 1), w->scratch, B, 1, 28, 28, 32, 3, 3,
                              1);
        fm_conv2d_forward_act(w->a2, w->a1, s_p(m, 2), NULL, w->scratch, B, 32, 26, 26, 64, 3, 3,
                              0);
        fm_relu_maxpool2_forward(w->pool, w->argmax, w->a2, s_p(m, 3), B, 64, 24, 24);
        const float *f = w->pool;
        if (train) {
            fm_dropout_forward(w->drop1, w->mask1, w->pool, (size_t)B * 9216, CNN_P1, rng);
            f = w->drop1;
        }
        // f (B,9216) -> h (B,128) -> logits (B,10)
        fm_dense_forward(w->h, f, s_p(m, 4), s_p(m, 5), B, 9216, 128);
        fm_relu_forward(w->h, w->h, (size_t)B * 128);
        const float *g = w->h;
        if (train) {
            fm_dropout_forward(w->drop2, w->mask2, w->h, (size_t)B * 128, CNN_P2, rng);
            g = w->drop2;
        }
        fm_dense_forward(w->logits, g, s_p(m, 6), s_p(m, 7), B, 128, 10);
        break;
    }
    }
    return fm_logsoftmax_nll_forward(w->logp, w->logits, y, B, 10);
}

/* The backward of the last forward from w->dlogits (already scaled) into grads. With
 * dense_only (cnn), the convolutions' gradients are not computed (the caller has them). */
static void s_backward(fm_work_t *w, const fm_model_t *m, float *grads, int dense_only)
{
    int B = w->B;
    switch (w->arch) {
    case FM_ARCH_SPEC: break; /* refused by fm_work_new */
    case FM_ARCH_LOGREG:
        fm_dense_backward(NULL, s_g(m, grads, 0), s_g(m, grads, 1), w->dlogits, w->x, s_p(m, 0),
                          B, 784, 10);
        break;
    case FM_ARCH_MLP:
        fm_dense_backward(w->da2, s_g(m, grads, 4), s_g(m, grads, 5), w->dlogits, w->a2,
                          s_p(m, 4), B, 200, 10);
        fm_relu_backward(w->da2, w->da2, w->a2, (size_t)B * 200);
        fm_dense_backward(w->da1, s_g(m, grads, 2), s_g(m, grads, 3), w->da2, w->a1, s_p(m, 2), B,
                          200, 200);
        fm_relu_backward(w->da1, w->da1, w->a1, (size_t)B * 200);
        fm_dense_backward(NULL, s_g(m, grads, 0), s_g(m, grads, 1), w->da1, w->x, s_p(m, 0), B,
                          784, 200);
        break;
    case FM_ARCH_CNN: {
        const float *g = w->train ? w->drop2 : w->h;
        fm_dense_backward(w->dh, s_g(m, grads, 6), s_g(m, grads, 7), w->dlogits, g, s_p(m, 6), B,
                          128, 10);
        if (w->train)
            fm_dropout_backward(w->dh, w->dh, w->mask2, (size_t)B * 128);
        fm_relu_backward(w->dh, w->dh, w->h, (size_t)B * 128);
        const float *f = w->train ? w->drop1 : w->pool;
        fm_dense_backward(dense_only ? NULL : w->dd1, s_g(m, grads, 4), s_g(m, grads, 5), w->dh,
                          f, s_p(m, 4), B, 9216, 128);
        if (dense_only)
            break;
        if (w->train)
            fm_dropout_backward(w->dd1, w->dd1, w->mask1, (size_t)B * 9216);
        fm_relu_maxpool2_backward(w->da2, s_g(m, grads, 3), w->dd1, w->pool, w->argmax, B, 64, 24,
                                  24);
        fm_conv2d_backward_act(w->da1, s_g(m, grads, 2), NULL, w->da2, w->a1, s_p(m, 2),
                               w->scratch, B, 32, 26, 26, 64, 3, 3, 1);
        fm_conv2d_backward(NULL, s_g(m, grads, 0), s_g(m, grads, 1), w->da1, w->x, s_p(m, 0),
                           w->scratch, B, 1, 28, 28, 32, 3, 3);
        break;
    }
    }
}

void fm_work_backward(fm_work_t *w, const fm_model_t *m, float *grads, float scale)
{
    fm_logsoftmax_nll_backward(w->dlogits, w->logp, w->y, w->B, 10, scale);
    s_backward(w, m, grads, 0);
}

/* ---- per-example gradients (DP-SGD) ---------------------------------------------------- */

/* Floats of one sample's gradient that are kept in `ex` (cnn: conv1 and conv2, the views
 * before fc1.weight, contiguous from offset 0), else 0. */
static size_t s_ex_floats(const fm_model_t *m)
{
    return fm_model_arch(m) == FM_ARCH_CNN ? fm_model_view(m, 4)->offset : 0;
}

size_t fm_work_example_floats(const fm_model_t *m, int B) { return s_ex_floats(m) * (size_t)B; }

static double s_sq(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return s;
}

/* A dense layer's gradient for sample b is dout_b inp_b^T (weight) and dout_b (bias), so its
 * squared norm is ||dout_b||^2 (||inp_b||^2 + 1): sqnorm[b] += that, for b < B. */
static void s_dense_norms(double *sqnorm, const float *dout, const float *inp, int B, int IN,
                          int OUT)
{
    for (int b = 0; b < B; b++)
        sqnorm[b] += s_sq(dout + (size_t)b * OUT, (size_t)OUT) *
                     (s_sq(inp + (size_t)b * IN, (size_t)IN) + 1.0);
}

void fm_work_example_norms(fm_work_t *w, const fm_model_t *m, double *sqnorm, float *ex)
{
    int B = w->B;
    fm_logsoftmax_nll_backward(w->dlogits, w->logp, w->y, B, 10, 1.0f);
    for (int b = 0; b < B; b++)
        sqnorm[b] = 0.0;
    switch (w->arch) {
    case FM_ARCH_SPEC: break; /* refused by fm_work_new */
    case FM_ARCH_LOGREG: s_dense_norms(sqnorm, w->dlogits, w->x, B, 784, 10); break;
    case FM_ARCH_MLP:
        s_dense_norms(sqnorm, w->dlogits, w->a2, B, 200, 10);
        fm_dense_backward(w->da2, NULL, NULL, w->dlogits, w->a2, s_p(m, 4), B, 200, 10);
        fm_relu_backward(w->da2, w->da2, w->a2, (size_t)B * 200);
        s_dense_norms(sqnorm, w->da2, w->a1, B, 200, 200);
        fm_dense_backward(w->da1, NULL, NULL, w->da2, w->a1, s_p(m, 2), B, 200, 200);
        fm_relu_backward(w->da1, w->da1, w->a1, (size_t)B * 200);
        s_dense_norms(sqnorm, w->da1, w->x, B, 784, 200);
        break;
    case FM_ARCH_CNN: {
        const float *g = w->train ? w->drop2 : w->h;
        s_dense_norms(sqnorm, w->dlogits, g, B, 128, 10);
        fm_dense_backward(w->dh, NULL, NULL, w->dlogits, g, s_p(m, 6), B, 128, 10);
        if (w->train)
            fm_dropout_backward(w->dh, w->dh, w->mask2, (size_t)B * 128);
        fm_relu_backward(w->dh, w->dh, w->h, (size_t)B * 128);
        const float *f = w->train ? w->drop1 : w->pool;
        s_dense_norms(sqnorm, w->dh, f, B, 9216, 128);
        fm_dense_backward(w->dd1, NULL, NULL, w->dh, f, s_p(m, 4), B, 9216, 128);
        if (w->train)
            fm_dropout_backward(w->dd1, w->dd1, w->mask1, (size_t)B * 9216);
        /* the convolutions share their weights over positions: each sample's gradient is
         * computed (the same per-sample products as the batch backward) and kept */
        size_t P = s_ex_floats(m);
        const size_t o1b = fm_model_view(m, 1)->offset, o2w = fm_model_view(m, 2)->offset,
                     o2b = fm_model_view(m, 3)->offset;
        memset(ex, 0, sizeof(float) * P * (size_t)B);
        for (int b = 0; b < B; b++) {
            float *e = ex + (size_t)b * P;
            float *da2 = w->da2 + (size_t)b * 64 * 24 * 24,
                  *da1 = w->da1 + (size_t)b * 32 * 26 * 26;
            fm_relu_maxpool2_backward(da2, e + o2b, w->dd1 + (size_t)b * 9216,
                                      w->pool + (size_t)b * 9216, w->argmax + (size_t)b * 9216, 1,
                                      64, 24, 24);
            fm_conv2d_backward_act(da1, e + o2w, NULL, da2, w->a1 + (size_t)b * 32 * 26 * 26,
                                   s_p(m, 2), w->scratch, 1, 32, 26, 26, 64, 3, 3, 1);
            fm_conv2d_backward(NULL, e, e + o1b, da1, w->x + (size_t)b * 784, s_p(m, 0),
                               w->scratch, 1, 1, 28, 28, 32, 3, 3);
            sqnorm[b] += s_sq(e, P);
        }
        break;
    }
    }
}

void fm_work_backward_weighted(fm_work_t *w, const fm_model_t *m, float *grads,
                               const float *weight, const float *ex)
{
    int B = w->B;
    fm_logsoftmax_nll_backward(w->dlogits, w->logp, w->y, B, 10, 1.0f);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 10; c++)
            w->dlogits[b * 10 + c] *= weight[b];
    size_t P = s_ex_floats(m);
    if (!ex || P == 0) {
        s_backward(w, m, grads, 0);
        return;
    }
    s_backward(w, m, grads, 1);
    for (int b = 0; b < B; b++) {
        const float *e = ex + (size_t)b * P;
        float f = weight[b];
        for (size_t i = 0; i < P; i++)
            grads[i] += f * e[i];
    }
}
