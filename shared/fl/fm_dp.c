/* fm_dp: see fm_dp.h. */
#include "fm_dp.h"

#include <math.h>
#include <stdio.h>

#define S_CHUNK 1024 /* normals drawn per call of the byte source */

int fm_dp_check(const fm_dp_config_t *c, fm_errmsg_t *e)
{
    const char *what = NULL;
    if (!(c->clip > 0.0) || isinf(c->clip))
        what = "clip norm must be finite and > 0";
    else if (!(c->sigma >= 0.0) || isinf(c->sigma))
        what = "noise multiplier must be finite and >= 0";
    else if (c->k < 1)
        what = "the fixed denominator must be >= 1";
    if (!what)
        return 0;
    if (e)
        snprintf(e->msg, sizeof e->msg, "differential privacy: %s", what);
    return FM_EARG;
}

double fm_dp_clip_factor(double norm, double clip) { return norm > clip ? clip / norm : 1.0; }

/* A double in (0, 1) from 64 random bits (53 of them; never 0, so its log is finite). */
static double s_open01(uint64_t x) { return ((double)(x >> 11) + 0.5) * 0x1.0p-53; }

void fm_dp_normals(double *out, size_t n, fm_dp_bytes_fn bytes, void *ctx)
{
    uint64_t u[2 * S_CHUNK]; /* S_CHUNK is even: whole groups of 4 uniforms per 2 normals */
    for (size_t done = 0; done < n;) {
        size_t m = n - done < S_CHUNK ? n - done : S_CHUNK;
        size_t mm = (m + 1) & ~(size_t)1; /* draw for an even count, keep m */
        bytes(ctx, u, 2 * mm * sizeof u[0]);
        for (size_t i = 0; i < mm; i += 2) {
            /* two Box-Muller pairs (a1, b1), (a2, b2) of independent N(0, 1); each output is
             * the mean of two independent draws rescaled to variance 1 */
            double r1 = sqrt(-2.0 * log(s_open01(u[2 * i]))),
                   t1 = 2.0 * M_PI * s_open01(u[2 * i + 1]);
            double r2 = sqrt(-2.0 * log(s_open01(u[2 * i + 2]))),
                   t2 = 2.0 * M_PI * s_open01(u[2 * i + 3]);
            out[done + i] = (r1 * cos(t1) + r2 * cos(t2)) * M_SQRT1_2;
            if (i + 1 < m)
                out[done + i + 1] = (r1 * sin(t1) + r2 * sin(t2)) * M_SQRT1_2;
        }
        done += m;
    }
}

int fm_dp_privatize(float *mean, size_t n, int count, const fm_dp_config_t *c,
                    fm_dp_bytes_fn bytes, void *ctx)
{
    if (fm_dp_check(c, NULL) != 0 || count < 0)
        return FM_EARG;
    double sd = c->sigma * c->clip, inv_k = 1.0 / c->k;
    double z[S_CHUNK];
    for (size_t done = 0; done < n;) {
        size_t m = n - done < S_CHUNK ? n - done : S_CHUNK;
        if (sd > 0.0)
            fm_dp_normals(z, m, bytes, ctx);
        for (size_t i = 0; i < m; i++) {
            double s = count > 0 ? (double)mean[done + i] * count : 0.0; /* back to the sum */
            mean[done + i] = (float)((s + (sd > 0.0 ? sd * z[i] : 0.0)) * inv_k);
        }
        done += m;
    }
    return 0;
}

/* ---- adaptive clipping ----------------------------------------------------------------------
 */

double fm_dp_adapt_sigma(double z, double count_sigma)
{
    if (!(z > 0.0) || !isfinite(z) || !(2.0 * count_sigma > z) || !isfinite(count_sigma))
        return NAN;
    double b = 2.0 * count_sigma, r = 1.0 / (z * z) - 1.0 / (b * b);
    double zd = r > 0.0 ? 1.0 / sqrt(r) : NAN;
    return isfinite(zd) ? zd : NAN;
}

int fm_dp_adapt_check(double z, const fm_dp_adapt_t *a, fm_errmsg_t *e)
{
    const char *what = NULL;
    if (!(a->quantile > 0.0 && a->quantile < 1.0))
        what = "adaptive clipping: the target quantile must be in (0, 1)";
    else if (!(a->lr > 0.0) || isinf(a->lr))
        what = "adaptive clipping: the clip learning rate must be finite and > 0";
    else if (!(a->count_sigma > 0.0) || isinf(a->count_sigma))
        what = "adaptive clipping: the count noise must be finite and > 0";
    else if (isnan(fm_dp_adapt_sigma(z, a->count_sigma)))
        what = "adaptive clipping: the count noise must exceed half the noise multiplier";
    if (!what)
        return 0;
    if (e)
        snprintf(e->msg, sizeof e->msg, "%s", what);
    return FM_EARG;
}

double fm_dp_adapt_fraction(int unclipped, int count, int k, double noise)
{
    double f = ((double)unclipped - 0.5 * count + noise) / (double)k + 0.5;
    return f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : isnan(f) ? 0.5 : f;
}

double fm_dp_adapt_clip(double clip, double frac, const fm_dp_adapt_t *a)
{
    double c = clip * exp(-a->lr * (frac - a->quantile));
    return c < FM_DP_CLIP_MIN ? FM_DP_CLIP_MIN : c > FM_DP_CLIP_MAX ? FM_DP_CLIP_MAX : c;
}
