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
