#include "fm_train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_rng.h"

static double s_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* 1 when the run has taken the steps cfg->max_steps allows. */
static int s_capped(const fm_train_config_t *cfg, const fm_train_result_t *out)
{
    return cfg->max_steps && out->steps >= cfg->max_steps;
}

uint64_t fm_train_steps_cap(uint64_t local_steps, double fraction, int epochs, uint64_t n,
                            int batch)
{
    if (!(fraction < 1.0) || epochs < 1 || batch < 1 || n == 0)
        return local_steps;
    double total = (double)epochs * (double)((n + (uint64_t)batch - 1) / (uint64_t)batch);
    double c = ceil(fraction * total - 1e-9);
    uint64_t cap = c < 1.0 ? 1 : (uint64_t)c;
    return local_steps && local_steps < cap ? local_steps : cap;
}

int fm_train_run(fm_engine_t *e, fm_optim_t *o, fm_model_t *m, const float *x, const uint8_t *y,
                 const uint32_t *idx, uint32_t n, const fm_train_config_t *cfg,
                 const float *w_global, fm_train_epoch_fn cb, void *cb_arg,
                 fm_train_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (cfg->epochs < 1 || cfg->batch < 1 || n == 0)
        return FM_EARG;
    uint32_t *order = malloc(sizeof(uint32_t) * n);
    if (!order)
        return -ENOMEM;
    int rc = 0;
    double t0 = s_now();
    fm_rng_t rng;
    fm_rng_seed(&rng, cfg->seed, 0x7121);
    fm_optim_reset(o);
    float *params = fm_model_params(m);
    int ended = 0; /* epochs run to their last batch */
    for (int epoch = 0; epoch < cfg->epochs && rc == 0; epoch++) {
        for (uint32_t i = 0; i < n; i++)
            order[i] = idx ? idx[i] : i;
        fm_rng_shuffle_u32(&rng, order, n);
        double epoch_loss = 0.0;
        uint64_t epoch_samples = 0;
        for (uint32_t b = 0; b < n && !s_capped(cfg, out); b += (uint32_t)cfg->batch) {
            int bs = (int)(n - b < (uint32_t)cfg->batch ? n - b : (uint32_t)cfg->batch);
            double loss = fm_engine_gradient(e, m, x, y, order + b, bs, 1, fm_rng_u64(&rng));
            if (!isfinite(loss)) {
                rc = FM_ENONFINITE;
                break;
            }
            fm_optim_step(o, params, fm_engine_grads(e), w_global);
            epoch_loss += loss * bs;
            epoch_samples += (uint64_t)bs;
            out->steps++;
            out->samples += (uint64_t)bs;
        }
        out->loss = epoch_samples ? epoch_loss / (double)epoch_samples : 0.0;
        out->seconds = s_now() - t0;
        ended += rc == 0 && epoch_samples == n;
        if (rc == 0 && cb && cb(cb_arg, epoch, out))
            break;
        if (s_capped(cfg, out))
            break;
    }
    out->complete = rc == 0 && (ended == cfg->epochs || s_capped(cfg, out));
    free(order);
    return rc;
}
