#include "aggregator_privacy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_le.h"
#include "fm_random.h"

struct agg_privacy {
    fm_dp_config_t dp; /* C (the current clip), sigma (accounted), the fixed K */
    int adaptive;      /* [privacy] adaptive_clip */
    fm_dp_adapt_t adapt;
    double vec_sigma; /* the vector noise multiplier: sigma, or z_delta when adaptive */
    double delta, target;
    double q; /* sampling rate of a step (fm_cfg_sample_rate: 1 unless Poisson sync) */
    fm_rdp_conv_t conv;
    fm_rdp_t spent; /* the rdp of every step accounted */
    uint64_t steps;
    double eps; /* fm_rdp_epsilon(spent), kept current */
    int exhausted;
    fm_metric_t *m_eps, *m_target, *m_steps, *m_exhausted, *m_clip;
};

static double s_epsilon(const agg_privacy_t *p, const fm_rdp_t *acct, uint64_t steps)
{
    return steps == 0 ? 0.0 : fm_rdp_epsilon(acct, p->delta, p->conv, NULL);
}

agg_privacy_t *agg_privacy_new(const fm_config_t *cfg, int k, int *err, fm_errmsg_t *e)
{
    const fm_cfg_privacy_t *c = &cfg->privacy;
    int rc = 0;
    agg_privacy_t *p = NULL;
    if (c->mode == FM_CFG_PRIVACY_NONE)
        goto cleanup;
    fm_dp_config_t dp = {.clip = c->clip_norm, .sigma = c->noise_multiplier, .k = k};
    if ((rc = fm_dp_check(&dp, e)) != 0)
        goto cleanup;
    if (!(c->delta > 0 && c->delta < 1) || !(c->target_epsilon >= 0) ||
        c->mechanism != FM_CFG_MECHANISM_GAUSSIAN || !(c->noise_multiplier > 0)) {
        rc = fm_errmsg_set(e, FM_EARG,
                           "privacy: delta %g, target_epsilon %g, sigma %g: out of range",
                           c->delta, c->target_epsilon, c->noise_multiplier);
        goto cleanup;
    }
    fm_dp_adapt_t adapt = {.quantile = c->target_quantile,
                           .lr = c->clip_learning_rate,
                           .count_sigma = c->clip_count_stddev};
    if (c->adaptive_clip && (rc = fm_dp_adapt_check(c->noise_multiplier, &adapt, e)) != 0)
        goto cleanup;
    if (fm_random_init() != 0) {
        rc = fm_errmsg_set(e, -EIO,
                           "privacy: libsodium cannot start: no random source for noise");
        goto cleanup;
    }
    if (!(p = calloc(1, sizeof *p))) {
        rc = fm_errmsg_set(e, -ENOMEM, "privacy: %s", fm_strerror(-ENOMEM));
        goto cleanup;
    }
    p->dp = dp;
    p->adaptive = c->adaptive_clip;
    p->adapt = adapt;
    p->vec_sigma = p->adaptive ? fm_dp_adapt_sigma(dp.sigma, adapt.count_sigma) : dp.sigma;
    p->delta = c->delta;
    p->target = c->target_epsilon;
    p->q = fm_cfg_sample_rate(cfg);
    p->conv = c->conversion;
    fm_rdp_init(&p->spent);
cleanup:
    if (err)
        *err = rc;
    return p;
}

void agg_privacy_destroy(agg_privacy_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

int agg_privacy_admits(const agg_privacy_t *p, double *eps_next)
{
    fm_rdp_t next = p->spent;
    int rc = fm_rdp_compose(&next, p->q, p->dp.sigma, 1);
    FM_ASSERT(rc == 0); /* sigma checked at creation */
    double eps = s_epsilon(p, &next, p->steps + 1);
    if (eps_next)
        *eps_next = eps;
    return p->target <= 0 || eps <= p->target;
}

static void s_publish_metrics(const agg_privacy_t *p)
{
    fm_metric_set(p->m_eps, p->eps);
    fm_metric_set(p->m_target, p->target);
    fm_metric_set(p->m_steps, (double)p->steps);
    fm_metric_set(p->m_exhausted, p->exhausted ? 1.0 : 0.0);
    fm_metric_set(p->m_clip, p->dp.clip);
}

int agg_privacy_step(agg_privacy_t *p, float *mean, size_t n, int count)
{
    fm_dp_config_t vec = p->dp; /* the accountant charges dp.sigma; the vector gets vec_sigma */
    vec.sigma = p->vec_sigma;
    int rc = fm_dp_privatize(mean, n, count, &vec, fm_random_bytes, NULL);
    if (rc)
        return rc;
    rc = fm_rdp_compose(&p->spent, p->q, p->dp.sigma, 1);
    FM_ASSERT(rc == 0);
    p->steps++;
    p->eps = s_epsilon(p, &p->spent, p->steps);
    s_publish_metrics(p);
    return 0;
}

void agg_privacy_charge(agg_privacy_t *p, uint64_t steps)
{
    if (steps == 0)
        return;
    int rc = fm_rdp_compose(&p->spent, p->q, p->dp.sigma, steps);
    FM_ASSERT(rc == 0);
    p->steps += steps;
    p->eps = s_epsilon(p, &p->spent, p->steps);
    s_publish_metrics(p);
}

void agg_privacy_adapt(agg_privacy_t *p, int count, int unclipped, double *frac)
{
    if (frac)
        *frac = NAN;
    if (!p->adaptive)
        return;
    double z = 0;
    fm_dp_normals(&z, 1, fm_random_bytes, NULL); /* the CSPRNG of the vector's noise */
    double f = fm_dp_adapt_fraction(unclipped, count, p->dp.k, p->adapt.count_sigma * z);
    p->dp.clip = fm_dp_adapt_clip(p->dp.clip, f, &p->adapt);
    if (frac)
        *frac = f;
    s_publish_metrics(p);
}

double agg_privacy_clip(const agg_privacy_t *p) { return p->dp.clip; }

int agg_privacy_adaptive(const agg_privacy_t *p) { return p->adaptive; }

double agg_privacy_epsilon(const agg_privacy_t *p) { return p->eps; }

uint64_t agg_privacy_steps(const agg_privacy_t *p) { return p->steps; }

void agg_privacy_set_exhausted(agg_privacy_t *p)
{
    p->exhausted = 1;
    s_publish_metrics(p);
}

int agg_privacy_exhausted(const agg_privacy_t *p) { return p->exhausted; }

void agg_privacy_describe(const agg_privacy_t *p, char *out, size_t cap)
{
    char budget[160] = "no budget (epsilon reported only)";
    if (p->target > 0) {
        uint64_t more = 0;
        /* steps from the start within the target, less those spent */
        fm_rdp_steps_for(p->q, p->dp.sigma, p->delta, p->target, p->conv, 100000000, &more);
        snprintf(budget, sizeof budget, "target epsilon %g: %llu steps in all", p->target,
                 (unsigned long long)more);
    }
    char adapt[320] = "";
    if (p->adaptive)
        snprintf(adapt, sizeof adapt,
                 "; adaptive clipping: C now %.6g, target quantile %g, learning rate %g, count "
                 "noise %g (fraction std %.3g), update noise multiplier %.6g (std %.6g now; "
                 "%g is accounted)",
                 p->dp.clip, p->adapt.quantile, p->adapt.lr, p->adapt.count_sigma,
                 p->adapt.count_sigma / p->dp.k, p->vec_sigma, p->vec_sigma * p->dp.clip,
                 p->dp.sigma);
    snprintf(out, cap,
             "client-level DP: clip %g, noise multiplier %g (std %g), denominator K = %d, "
             "delta %g, %s conversion, sampling rate %g%s; %s; spent so far: "
             "epsilon %.4g over %llu steps%s",
             p->dp.clip, p->dp.sigma, p->vec_sigma * p->dp.clip, p->dp.k, p->delta,
             fm_rdp_conv_name(p->conv), p->q,
             p->q < 1 ? " (Poisson: each client's own coin)" : " (no amplification)", budget,
             p->eps, (unsigned long long)p->steps, adapt);
}

/* ---- checkpoint blob ------------------------------------------------------------------------
 */

void agg_privacy_save(const agg_privacy_t *p, uint8_t out[AGG_PRIVACY_BLOB_LEN])
{
    fm_rdp_encode(&p->spent, p->steps, p->delta, p->conv, out);
}

int agg_privacy_load(agg_privacy_t *p, const void *blob, size_t len, fm_errmsg_t *e)
{
    fm_rdp_t acct;
    uint64_t steps = 0;
    int rc = fm_rdp_decode(blob, len, &acct, &steps, NULL, NULL, e);
    if (rc)
        return rc;
    p->spent = acct;
    p->steps = steps;
    p->eps = s_epsilon(p, &p->spent, p->steps);
    s_publish_metrics(p);
    return 0;
}

static const char s_clip_magic[8] = "FMCLIP1";

size_t agg_privacy_save_clip(const agg_privacy_t *p, uint8_t out[AGG_PRIVACY_CLIP_LEN])
{
    if (!p->adaptive)
        return 0;
    memcpy(out, s_clip_magic, 8);
    fm_le_put_f64(out + 8, p->dp.clip);
    return AGG_PRIVACY_CLIP_LEN;
}

int agg_privacy_load_clip(agg_privacy_t *p, const void *blob, size_t len, fm_errmsg_t *e)
{
    if (!p->adaptive)
        return 0;
    const uint8_t *b = blob;
    if (len != AGG_PRIVACY_CLIP_LEN || memcmp(b, s_clip_magic, 8) != 0)
        return fm_errmsg_set(e, FM_EFORMAT, "adaptive clip blob: %zu bytes, not a clip record",
                             len);
    double c = fm_le_get_f64(b + 8);
    if (!(c >= FM_DP_CLIP_MIN && c <= FM_DP_CLIP_MAX))
        return fm_errmsg_set(e, FM_EFORMAT, "adaptive clip blob: C = %g out of range", c);
    p->dp.clip = c;
    s_publish_metrics(p);
    return 0;
}

/* ---- stats, metrics --------------------------------------------------------------------------
 */

void agg_privacy_stats(const agg_privacy_t *p, fm_stats_t *st)
{
    if (!p)
        return;
    st->privacy = true;
    st->privacy_epsilon = isfinite(p->eps) ? p->eps : 1e308;
    st->privacy_delta = p->delta;
    st->privacy_target_epsilon = p->target;
    st->privacy_steps = p->steps;
    st->privacy_exhausted = p->exhausted != 0;
    st->privacy_clip_norm = p->dp.clip;
}

int agg_privacy_metrics(agg_privacy_t *p, fm_metrics_t *m)
{
    if (!p || !m)
        return 0;
    p->m_eps = fm_metrics_gauge(m, "fedmq_privacy_epsilon",
                                "Client-level epsilon spent so far, at privacy.delta", NULL);
    p->m_target = fm_metrics_gauge(m, "fedmq_privacy_target_epsilon",
                                   "privacy.target_epsilon (0: no budget)", NULL);
    p->m_steps = fm_metrics_counter(m, "fedmq_privacy_steps_total",
                                    "Noised aggregation steps accounted", NULL);
    p->m_exhausted = fm_metrics_gauge(
        m, "fedmq_privacy_budget_exhausted",
        "1 when no more versions are made because the next would exceed the budget", NULL);
    p->m_clip = fm_metrics_gauge(m, "fedmq_privacy_clip_norm",
                                 "Current clip norm C of client-level DP (adaptive clipping "
                                 "moves it; else privacy.clip_norm)",
                                 NULL);
    if (!p->m_eps || !p->m_target || !p->m_steps || !p->m_exhausted || !p->m_clip)
        return -ENOMEM;
    s_publish_metrics(p);
    return 0;
}
