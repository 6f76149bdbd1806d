#include "fm_dpsgd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_rng.h"

#define S_CHUNK 1024 /* uniforms or normals drawn per call of the caller's source */

static double s_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

uint64_t fm_dpsgd_steps_per_epoch(double q)
{
    double s = round(1.0 / q);
    return s < 1.0 ? 1 : (uint64_t)s;
}

int fm_dpsgd_check(const fm_dpsgd_config_t *c, fm_errmsg_t *e)
{
    if (!(c->clip > 0.0) || isinf(c->clip))
        return fm_errmsg_set(e, FM_EARG, "DP-SGD clip = %g: must be finite and > 0", c->clip);
    if (!(c->sigma >= 0.0) || isinf(c->sigma))
        return fm_errmsg_set(e, FM_EARG, "DP-SGD noise multiplier = %g: must be finite and >= 0",
                             c->sigma);
    if (!(c->q > 0.0 && c->q <= 1.0))
        return fm_errmsg_set(e, FM_EARG, "DP-SGD sample rate = %g: must be in (0, 1]", c->q);
    if (c->epochs < 1)
        return fm_errmsg_set(e, FM_EARG, "DP-SGD epochs = %d: must be >= 1", c->epochs);
    if (c->mode != FM_CLIP_FAST && c->mode != FM_CLIP_EXACT)
        return fm_errmsg_set(e, FM_EARG, "DP-SGD clipping mode %d: unknown", (int)c->mode);
    return 0;
}

uint32_t fm_dpsgd_sample(const fm_dpsgd_rand_t *r, double q, const uint32_t *idx, uint32_t n,
                         uint32_t *out)
{
    uint64_t u[S_CHUNK];
    uint32_t b = 0;
    for (uint32_t done = 0; done < n;) {
        uint32_t m = n - done < S_CHUNK ? n - done : S_CHUNK;
        r->bytes(r->ctx, u, sizeof u[0] * m);
        for (uint32_t i = 0; i < m; i++)
            if ((double)(u[i] >> 11) * 0x1.0p-53 < q) /* u in [0, 1): P(u < q) = q */
                out[b++] = idx ? idx[done + i] : done + i;
        done += m;
    }
    return b;
}

/* g = (sum + N(0, sd^2 I)) / denom, in place over n floats. */
static void s_noise(float *g, size_t n, double sd, double denom, const fm_dpsgd_rand_t *r)
{
    double z[S_CHUNK];
    for (size_t done = 0; done < n;) {
        size_t m = n - done < S_CHUNK ? n - done : S_CHUNK;
        if (sd > 0.0)
            r->normals(r->ctx, z, m);
        for (size_t i = 0; i < m; i++)
            g[done + i] = (float)(((double)g[done + i] + (sd > 0.0 ? sd * z[i] : 0.0)) / denom);
        done += m;
    }
}

/* The clipped sum over batch[0..b) into sum (nparams floats), in pieces the engine takes.
 * Adds the pieces' loss sum and clip counts to *loss, *clipped. 0 or an engine error. */
static int s_clipped_sum(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                         const uint32_t *batch, uint32_t b, const fm_dpsgd_config_t *cfg,
                         fm_rng_t *rng, float *sum, double *loss, uint32_t *clipped)
{
    size_t np = fm_model_nparams(m);
    uint32_t cap = (uint32_t)fm_engine_max_batch(e);
    memset(sum, 0, sizeof(float) * np);
    for (uint32_t at = 0; at < b; at += cap) {
        int piece = (int)(b - at < cap ? b - at : cap);
        fm_clip_result_t cr;
        int rc = fm_engine_clipped_sum(e, m, x, y, batch + at, piece, 1, fm_rng_u64(rng),
                                       cfg->clip, cfg->mode, &cr);
        if (rc != 0)
            return rc;
        const float *g = fm_engine_grads(e);
        for (size_t j = 0; j < np; j++)
            sum[j] += g[j];
        *loss += cr.loss;
        *clipped += cr.clipped;
    }
    return 0;
}

int fm_dpsgd_run(fm_engine_t *e, fm_optim_t *o, fm_model_t *m, const float *x, const uint8_t *y,
                 const uint32_t *idx, uint32_t n, const fm_dpsgd_config_t *cfg,
                 const fm_dpsgd_rand_t *rand, const float *w_global,
                 const fm_dpsgd_hooks_t *hooks, fm_dpsgd_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (fm_dpsgd_check(cfg, NULL) != 0 || n == 0 || !rand || !rand->bytes ||
        (cfg->sigma > 0.0 && !rand->normals))
        return FM_EARG;
    size_t np = fm_model_nparams(m);
    uint32_t *batch = malloc(sizeof(uint32_t) * n);
    float *g = malloc(sizeof(float) * np);
    if (!batch || !g) {
        free(batch);
        free(g);
        return -ENOMEM;
    }
    int rc = 0, stop = 0;
    double t0 = s_now();
    fm_rng_t rng; /* dropout masks only */
    fm_rng_seed(&rng, cfg->seed, 0xd95d);
    fm_optim_reset(o);
    float *params = fm_model_params(m);
    uint64_t per_epoch = fm_dpsgd_steps_per_epoch(cfg->q);
    double denom = cfg->q * n, sd = cfg->sigma * cfg->clip;
    int ended = 0; /* epochs run to their last step */
    for (int epoch = 0; epoch < cfg->epochs && rc == 0 && !stop; epoch++) {
        double epoch_loss = 0.0;
        uint64_t epoch_samples = 0;
        for (uint64_t k = 0; k < per_epoch && !stop; k++) {
            uint32_t b = fm_dpsgd_sample(rand, cfg->q, idx, n, batch);
            double loss = 0.0;
            uint32_t clipped = 0;
            if ((rc = s_clipped_sum(e, m, x, y, batch, b, cfg, &rng, g, &loss, &clipped)) != 0)
                break;
            if (!isfinite(loss)) {
                rc = FM_ENONFINITE;
                break;
            }
            s_noise(g, np, sd, denom, rand);
            fm_optim_step(o, params, g, w_global);
            epoch_loss += loss;
            epoch_samples += b;
            out->clipped += clipped;
            out->train.samples += b;
            fm_dpsgd_step_t st = {.step = out->train.steps,
                                  .batch = b,
                                  .clipped = clipped,
                                  .idx = batch,
                                  .grad = g};
            out->train.steps++;
            if (hooks && hooks->on_step && hooks->on_step(hooks->step_arg, &st))
                stop = 1;
        }
        out->train.loss = epoch_samples ? epoch_loss / (double)epoch_samples : 0.0;
        out->train.seconds = s_now() - t0;
        ended += rc == 0 && !stop;
        if (rc == 0 && !stop && hooks && hooks->on_epoch &&
            hooks->on_epoch(hooks->epoch_arg, epoch, &out->train))
            stop = 1;
    }
    out->train.seconds = s_now() - t0;
    out->train.complete = rc == 0 && ended == cfg->epochs;
    free(batch);
    free(g);
    return rc;
}
