#include "fm_sa_codec.h"

#include <math.h>
#include <stdio.h>

#define S_TWO31 2147483648.0

static double s_cmax(double clip) { return clip > 1.0 ? clip : 1.0; }

int fm_sa_codec_scale(uint32_t k, double clip)
{
    if (k == 0 || !isfinite(clip) || clip <= 0)
        return -1;
    double room = S_TWO31 / ((double)k * s_cmax(clip));
    if (room < 1.0)
        return -1;
    int s = (int)floor(log2(room)) - 1;
    /* log2 of an exact power of two is exact; guard the condition itself anyway */
    while (s >= 0 && (double)k * (s_cmax(clip) * ldexp(1.0, s) + 1.0) > S_TWO31)
        s--;
    return s > 30 ? 30 : s;
}

uint32_t fm_sa_codec_kmax(double clip, int s)
{
    if (!isfinite(clip) || clip <= 0 || s < 0 || s > 30)
        return 0;
    double k = floor(S_TWO31 / (s_cmax(clip) * ldexp(1.0, s) + 1.0));
    return k > 4294967295.0 ? UINT32_MAX : (uint32_t)k;
}

int fm_sa_codec_check(const fm_sa_codec_t *c, fm_errmsg_t *e)
{
    if (c->k == 0)
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: K must be at least 1");
    if (!isfinite(c->clip) || c->clip <= 0)
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: clip C = %g must be finite and > 0",
                             c->clip);
    if (c->s < 0 || c->s > 30)
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: scale 2^%d out of 2^0..2^30", c->s);
    double need = (double)c->k * (s_cmax(c->clip) * ldexp(1.0, c->s) + 1.0);
    if (need > S_TWO31) {
        int best = fm_sa_codec_scale(c->k, c->clip);
        char hint[96];
        if (best >= 0)
            snprintf(hint, sizeof hint, "the scale for this K and C is 2^%d", best);
        else
            snprintf(hint, sizeof hint, "no scale fits this K and C");
        return fm_errmsg_set(e, FM_ERANGE,
                             "secure aggregation: K %u x (max(C,1) %g x S 2^%d + 1) = %.6g > "
                             "2^31: the sum of %u members could wrap; %s",
                             c->k, s_cmax(c->clip), c->s, need, c->k, hint);
    }
    return 0;
}

uint32_t fm_sa_codec_encode_value(const fm_sa_codec_t *c, double x, fm_rng_t *rng)
{
    double v = ldexp(x, c->s);
    FM_ASSERT(fabs(v) < S_TWO31);
    int64_t r;
    if (rng == NULL) {
        r = (int64_t)llround(v);
    } else {
        double f = floor(v);
        r = (int64_t)f + (fm_rng_uniform(rng) < v - f ? 1 : 0);
    }
    return (uint32_t)r; /* conversion to unsigned: reduction mod 2^32 */
}

int fm_sa_codec_encode(const fm_sa_codec_t *c, const float *delta, size_t n, double w,
                       fm_rng_t *rng, uint32_t *out, fm_errmsg_t *e)
{
    int rc = fm_sa_codec_check(c, e);
    if (rc != 0)
        return rc;
    if (!(w > 0 && w <= 1))
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: weight %g out of (0, 1]", w);
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(delta[i]))
            return fm_errmsg_set(e, FM_ENONFINITE,
                                 "secure aggregation: update value %zu is not finite", i);
        ss += (double)delta[i] * delta[i];
    }
    double norm = sqrt(ss);
    double f = norm > c->clip ? c->clip / norm : 1.0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)delta[i] * f * w;
        /* |x| <= C up to rounding of the norm: hold it to C exactly */
        if (x > c->clip)
            x = c->clip;
        else if (x < -c->clip)
            x = -c->clip;
        out[i] = fm_sa_codec_encode_value(c, x, rng);
    }
    out[n] = fm_sa_codec_encode_value(c, w, rng);
    return 0;
}

void fm_sa_codec_decode(const fm_sa_codec_t *c, const uint32_t *sum, size_t m, double *out)
{
    for (size_t i = 0; i < m; i++) {
        int64_t v = sum[i] >= UINT32_C(0x80000000) ? (int64_t)sum[i] - (INT64_C(1) << 32)
                                                   : (int64_t)sum[i];
        out[i] = ldexp((double)v, -c->s);
    }
}
