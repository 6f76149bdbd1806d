#include "fm_optim.h"

#include "fm_hot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fm_optim {
    size_t n;            /* parameters */
    fm_sgd_config_t cfg; /* hyper-parameters */
    float *buf;          /* momentum buffer, flat layout (owned) */
    int started;         /* 0 until the first step since new/reset */
};

int fm_sgd_config_check(const fm_sgd_config_t *cfg, fm_errmsg_t *e)
{
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return fm_errmsg_set(e, FM_EARG, "lr %g: must be a finite number > 0", cfg->lr);
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
        return fm_errmsg_set(e, FM_EARG, "momentum %g: must be in [0, 1)", cfg->momentum);
    if (!(cfg->weight_decay >= 0.0f) || !isfinite(cfg->weight_decay))
        return fm_errmsg_set(e, FM_EARG, "weight_decay %g: must be >= 0", cfg->weight_decay);
    if (!(cfg->clip_norm >= 0.0f) || !isfinite(cfg->clip_norm))
        return fm_errmsg_set(e, FM_EARG, "clip %g: must be >= 0 (0 = off)", cfg->clip_norm);
    if (!(cfg->mu >= 0.0f) || !isfinite(cfg->mu))
        return fm_errmsg_set(e, FM_EARG, "mu %g: must be >= 0 (0 = off)", cfg->mu);
    return 0;
}

fm_optim_t *fm_optim_new(size_t n, const fm_sgd_config_t *cfg, int *err)
{
    if (fm_sgd_config_check(cfg, NULL) != 0) {
        if (err)
            *err = FM_EARG;
        return NULL;
    }
    fm_optim_t *o = calloc(1, sizeof *o);
    if (!o)
        goto nomem;
    o->n = n;
    o->cfg = *cfg;
    if (cfg->momentum > 0.0f) {
        o->buf = calloc(n ? n : 1, sizeof(float));
        if (!o->buf)
            goto nomem;
    }
    return o;
nomem:
    free(o);
    if (err)
        *err = -ENOMEM;
    return NULL;
}

void fm_optim_destroy(fm_optim_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->buf);
    free(*p);
    *p = NULL;
}

void fm_optim_reset(fm_optim_t *o) { o->started = 0; }

/* Sum of squares in double with 8 independent partial sums: no serial dependency chain,
 * so the loop vectorises (a single running sum costs ~4 cycles per element). */
FM_HOT static double s_sumsq(const float *g, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)g[i + k] * g[i + k];
    for (; i < n; i++)
        acc[0] += (double)g[i] * g[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Momentum SGD update of w[lo, hi) from g (already prox'd and clipped). */
FM_HOT static void s_update(fm_optim_t *o, float *restrict w, const float *restrict g, size_t lo,
                            size_t hi)
{
    const fm_sgd_config_t *c = &o->cfg;
    float lr = c->lr, wd = c->weight_decay, mom = c->momentum;
    if (mom > 0.0f) {
        float *restrict buf = o->buf;
        if (!o->started) {
            for (size_t i = lo; i < hi; i++) {
                buf[i] = g[i] + wd * w[i];
                w[i] -= lr * buf[i];
            }
        } else {
            for (size_t i = lo; i < hi; i++) {
                buf[i] = mom * buf[i] + (g[i] + wd * w[i]);
                w[i] -= lr * buf[i];
            }
        }
    } else {
        for (size_t i = lo; i < hi; i++)
            w[i] -= lr * (g[i] + wd * w[i]);
    }
}

FM_HOT static void s_prox(float *restrict g, const float *restrict w, const float *restrict wg,
                          float mu, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        g[i] += mu * (w[i] - wg[i]);
}

/* Block of floats processed while it sits in L1 when no global norm is needed first. */
#define BLOCK 2048

double fm_optim_step(fm_optim_t *o, float *w, float *g, const float *w_global)
{
    const fm_sgd_config_t *c = &o->cfg;
    size_t n = o->n;
    int prox = c->mu > 0.0f && w_global;
    double sq = 0.0;
    if (c->clip_norm > 0.0f) {
        /* clipping needs the global norm before any update: two passes */
        if (prox)
            s_prox(g, w, w_global, c->mu, 0, n);
        sq = s_sumsq(g, n);
        double coef = c->clip_norm / (sqrt(sq) + 1e-6);
        if (coef < 1.0) {
            float cf = (float)coef;
            for (size_t i = 0; i < n; i++)
                g[i] *= cf;
        }
        s_update(o, w, g, 0, n);
    } else {
        /* one pass over memory: each block is prox'd, measured and applied while in L1 */
        for (size_t lo = 0; lo < n; lo += BLOCK) {
            size_t hi = lo + BLOCK < n ? lo + BLOCK : n;
            if (prox)
                s_prox(g, w, w_global, c->mu, lo, hi);
            sq += s_sumsq(g + lo, hi - lo);
            s_update(o, w, g, lo, hi);
        }
    }
    o->started = 1;
    return sqrt(sq);
}

int fm_optim_set_lr(fm_optim_t *o, float lr)
{
    if (!(lr > 0.0f) || !isfinite(lr))
        return FM_EARG;
    o->cfg.lr = lr;
    return 0;
}

double fm_sgd_lr_at(double lr, double decay, uint64_t version)
{
    return lr / (1.0 + decay * (double)version);
}

int fm_optim_set_mu(fm_optim_t *o, float mu)
{
    if (!(mu >= 0.0f && mu <= 1e30f))
        return FM_EARG;
    o->cfg.mu = mu;
    return 0;
}
