#include "fm_codec.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define S_F16_MAX 65504.0f
#define S_I8_MAX 127

static const char *const s_dtype_names[FM_DT_COUNT] = {"F32", "F16", "BF16", "I8"};
static const size_t s_dtype_sizes[FM_DT_COUNT] = {4, 2, 2, 1};

const char *fm_dtype_name(fm_dtype_t d)
{
    return (unsigned)d < FM_DT_COUNT ? s_dtype_names[d] : "?";
}

int fm_dtype_parse(const char *s, fm_dtype_t *out)
{
    for (int d = 0; d < FM_DT_COUNT; d++)
        if (strcmp(s, s_dtype_names[d]) == 0) {
            *out = (fm_dtype_t)d;
            return 0;
        }
    return FM_EDTYPE;
}

size_t fm_dtype_size(fm_dtype_t d)
{
    FM_ASSERT((unsigned)d < FM_DT_COUNT);
    return s_dtype_sizes[d];
}

/* ==== scalar conversions ==================================================================== */

static uint32_t s_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float s_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t fm_codec_f16_from_f32(float x)
{
    uint32_t u = s_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: subnormal half (or zero) */
        /* value = a as float; the half subnormal unit is 2^-24: q = round(x * 2^24) */
        float f = s_float(a) * 16777216.0f; /* exact: scaling by a power of two */
        uint32_t q = (uint32_t)f;
        float rem = f - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1u)))
            q++;
        return (uint16_t)(sign | q); /* q == 0x400 is the smallest normal: still right */
    }
    /* normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even */
    uint32_t h = ((a - 0x38000000u) >> 13);
    uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent: still the right rounding */
    return (uint16_t)(sign | h);
}

float fm_codec_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) /* zero or subnormal: m x 2^-24, exact in float */
        return s_float(sign | s_bits((float)m * 0x1p-24f));
    if (e == 31)
        return s_float(sign | 0x7f800000u | (m << 13));
    return s_float(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t fm_codec_bf16_from_f32(float x)
{
    uint32_t u = s_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even (overflow gives infinity) */
    return (uint16_t)(u >> 16);
}

float fm_codec_bf16_to_f32(uint16_t h) { return s_float((uint32_t)h << 16); }

/* ==== descriptions ========================================================================== */

int fm_codec_is_raw(const fm_codec_tensor_t *t)
{
    return t->dtype == FM_DT_F32 && !t->sparse && !t->zstd;
}

static const char *s_short(fm_dtype_t d)
{
    switch (d) {
    case FM_DT_F32: return "fp32";
    case FM_DT_F16: return "fp16";
    case FM_DT_BF16: return "bf16";
    case FM_DT_I8: return "int8";
    default: return "?";
    }
}

const char *fm_codec_value_name(fm_dtype_t d) { return s_short(d); }

void fm_codec_label(const fm_codec_tensor_t *t, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", t->sparse ? "topk-" : "", s_short(t->dtype),
             t->zstd ? "+zstd" : "");
}

int fm_codec_config_check(const fm_codec_config_t *c, fm_errmsg_t *e)
{
    if ((unsigned)c->dtype >= FM_DT_COUNT)
        return fm_errmsg_set(e, FM_EARG, "encoding: unknown value type %d", (int)c->dtype);
    if (!(c->topk >= 0.0 && c->topk <= 1.0))
        return fm_errmsg_set(e, FM_EARG, "topk_fraction %g: must be in [0, 1] (0 = dense)",
                             c->topk);
    if (c->topk_model && c->topk == 0.0)
        return fm_errmsg_set(e, FM_EARG, "topk_scope = model needs top-k (topk_fraction > 0)");
    if (c->error_feedback && c->topk == 0.0)
        return fm_errmsg_set(e, FM_EARG,
                             "error_feedback needs top-k (topk_fraction > 0): dense encodings "
                             "keep no residual");
    if (c->zstd_level < 0 || c->zstd_level > 19)
        return fm_errmsg_set(e, FM_EARG, "zstd_level %d: must be 0 (off) .. 19", c->zstd_level);
    return 0;
}

int fm_codec_config_is_raw(const fm_codec_config_t *c)
{
    return c->dtype == FM_DT_F32 && c->topk == 0.0 && c->zstd_level == 0;
}

void fm_codec_config_name(const fm_codec_config_t *c, char *out, size_t cap)
{
    char z[16] = "";
    if (c->zstd_level)
        snprintf(z, sizeof z, "+zstd%d", c->zstd_level);
    if (c->topk > 0)
        snprintf(out, cap, "topk-%g-%s%s%s%s", c->topk, c->topk_model ? "" : "tensor-",
                 s_short(c->dtype), c->error_feedback ? "-ef" : "", z);
    else
        snprintf(out, cap, "%s%s", s_short(c->dtype), z);
}

/* ==== encoder =============================================================================== */

struct fm_codec_enc {
    const fm_model_t *layout;
    fm_codec_config_t c;
    size_t maxn;           /* largest tensor, entries (the whole model's with topk_model) */
    float *vals;           /* maxn: gathered values (sparse) */
    uint32_t *idx;         /* maxn: selected indices (sparse) */
    unsigned char *packed; /* values in their dtype, per tensor, one after another */
    unsigned char *zout;   /* zstd output of every tensor, one after another */
    size_t zout_cap;
    ZSTD_CCtx *cctx;
};

fm_codec_enc_t *fm_codec_enc_new(const fm_model_t *layout, const fm_codec_config_t *c, int *err)
{
    FM_ASSERT(layout && c);
    int rc = fm_codec_config_check(c, NULL);
    fm_codec_enc_t *enc = NULL;
    if (rc)
        goto cleanup;
    rc = -ENOMEM;
    if (!(enc = calloc(1, sizeof *enc)))
        goto cleanup;
    enc->layout = layout;
    enc->c = *c;
    size_t total = 0, ztotal = 0;
    for (int i = 0; i < fm_model_nviews(layout); i++) {
        size_t n = fm_model_view(layout, i)->numel;
        if (n > enc->maxn)
            enc->maxn = n;
        total += 4 * n;
        ztotal += ZSTD_compressBound(4 * n) * 2;
    }
    if (c->topk_model) /* one selection over the flat buffer (views are contiguous) */
        enc->maxn = fm_model_nparams(layout);
    /* every tensor's values (at worst F32: an F16 tensor out of range goes F32), and with
     * top-k their indices after them (4 bytes each) */
    size_t packed = c->topk > 0 ? 2 * total : total;
    if (!(enc->packed = malloc(packed ? packed : 1)))
        goto cleanup;
    if (c->topk > 0 &&
        (!(enc->vals = malloc(4 * enc->maxn + 4)) || !(enc->idx = malloc(4 * enc->maxn + 4))))
        goto cleanup;
    if (c->zstd_level) {
        enc->zout_cap = ztotal;
        if (!(enc->zout = malloc(ztotal)) || !(enc->cctx = ZSTD_createCCtx()))
            goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc) {
        fm_codec_enc_destroy(&enc);
        if (err)
            *err = rc;
    }
    return enc;
}

void fm_codec_enc_destroy(fm_codec_enc_t **p)
{
    if (!p || !*p)
        return;
    fm_codec_enc_t *enc = *p;
    free(enc->vals);
    free(enc->idx);
    free(enc->packed);
    free(enc->zout);
    ZSTD_freeCCtx(enc->cctx);
    free(enc);
    *p = NULL;
}

/* Radix select: idx[0..k) = the indices of the k entries of x[0..n) of largest magnitude
 * (ties: the lower index first), in increasing order. Keys are the magnitude's bit pattern,
 * which orders non-negative floats (and puts NaN above infinity). 1 <= k <= n. */
static void s_topk(const float *x, size_t n, size_t k, uint32_t *idx)
{
    static const int shift[3] = {20, 10, 0};
    static const uint32_t width[3] = {2048, 1024, 1024};
    uint32_t hist[2048];
    uint32_t prefix = 0; /* the key bits fixed so far */
    size_t need = k;     /* entries still to take among keys with that prefix */
    for (int p = 0; p < 3; p++) {
        memset(hist, 0, sizeof hist);
        uint32_t hi_mask = p == 0 ? 0 : ~((1u << (shift[p - 1])) - 1u);
        for (size_t i = 0; i < n; i++) {
            uint32_t key = s_bits(x[i]) & 0x7fffffffu;
            if ((key & hi_mask) == prefix)
                hist[(key >> shift[p]) & (width[p] - 1)]++;
        }
        uint32_t b = width[p];
        while (b-- > 0) {
            if (hist[b] >= need)
                break;
            need -= hist[b];
        }
        prefix |= b << shift[p];
    }
    /* prefix is the threshold key T: take all keys > T, then the first `need` keys == T */
    size_t j = 0;
    for (size_t i = 0; i < n && j < k; i++) {
        uint32_t key = s_bits(x[i]) & 0x7fffffffu;
        if (key > prefix || (key == prefix && need > 0)) {
            if (key == prefix)
                need--;
            idx[j++] = (uint32_t)i;
        }
    }
    FM_ASSERT(j == k);
}

/* Encode x[0..n) as dtype into dst; returns the dtype used (F16 falls back to F32 when a
 * value is beyond its range), *scale for I8. dst has room for 4 n bytes. */
static fm_dtype_t s_pack(fm_dtype_t dtype, const float *x, size_t n, fm_rng_t *rng,
                         unsigned char *dst, double *scale)
{
    *scale = 0.0;
    if (dtype == FM_DT_F16) {
        for (size_t i = 0; i < n; i++)
            if (!(fabsf(x[i]) <= S_F16_MAX))
                dtype = FM_DT_F32; /* beyond F16 (or NaN: sent as is, refused there) */
    }
    switch (dtype) {
    case FM_DT_F32: memcpy(dst, x, 4 * n); break;
    case FM_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = fm_codec_f16_from_f32(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        break;
    case FM_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = fm_codec_bf16_from_f32(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        break;
    case FM_DT_I8: {
        float amax = 0.0f;
        for (size_t i = 0; i < n; i++)
            if (fabsf(x[i]) > amax || x[i] != x[i])
                amax = x[i] != x[i] ? INFINITY : fabsf(x[i]);
        double s = (double)amax / S_I8_MAX;
        if (!isfinite(s)) { /* a non-finite delta: send it F32, the receiver refuses it */
            memcpy(dst, x, 4 * n);
            return FM_DT_F32;
        }
        *scale = s;
        /* in double: 1 / s overflows float32 when max|x| < 127 / FLT_MAX (then x * inv was
         * +-inf, or NaN for a zero), and u < 1 stays below 1 */
        double inv = s > 0 ? 1.0 / s : 0.0;
        for (size_t i = 0; i < n; i++) {
            double q = floor((double)x[i] * inv + fm_rng_uniform(rng));
            q = q > S_I8_MAX ? S_I8_MAX : q < -S_I8_MAX ? -S_I8_MAX : q;
            dst[i] = (unsigned char)(int8_t)q;
        }
        break;
    }
    default: FM_ASSERT(0);
    }
    return dtype;
}

/* The value of entry i of packed values (dtype, scale), as the receiver decodes it. */
static float s_unpack1(fm_dtype_t dtype, double scale, const unsigned char *src, size_t i)
{
    uint16_t h;
    float f;
    switch (dtype) {
    case FM_DT_F32: memcpy(&f, src + 4 * i, 4); return f;
    case FM_DT_F16: memcpy(&h, src + 2 * i, 2); return fm_codec_f16_to_f32(h);
    case FM_DT_BF16: memcpy(&h, src + 2 * i, 2); return fm_codec_bf16_to_f32(h);
    case FM_DT_I8: return (float)(int8_t)src[i] * (float)scale;
    default: FM_ASSERT(0); return 0;
    }
}

/* Compress [src, src + n) into *zp (advanced); the frame in out, out_n. */
static int s_zstd(fm_codec_enc_t *enc, const void *src, size_t n, unsigned char **zp,
                  const void **out, size_t *out_n)
{
    size_t room = enc->zout_cap - (size_t)(*zp - enc->zout);
    size_t z = ZSTD_compressCCtx(enc->cctx, *zp, room, src, n, enc->c.zstd_level);
    if (ZSTD_isError(z))
        return -ENOMEM; /* the bound was reserved: only allocation can fail */
    *out = *zp;
    *out_n = z;
    *zp += z;
    return 0;
}

/* The k = clamp(ceil(frac x n), 1, n) entries of x[0..n) of largest magnitude into idx
 * (increasing); returns k (0 when n is 0). */
static size_t s_topk_frac(const float *x, size_t n, double frac, uint32_t *idx)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(frac * (double)n);
    k = k < 1 ? 1 : k > n ? n : k;
    s_topk(x, n, k, idx);
    return k;
}

/* Model scope: add delta into the residual (error feedback), select the top
 * ceil(topk x nparams) entries of the whole model into enc->idx (flat indices, increasing).
 * Returns how many. */
static size_t s_topk_model(fm_codec_enc_t *enc, const float *delta, float *residual)
{
    size_t n = fm_model_nparams(enc->layout);
    const float *acc = delta;
    if (residual) {
        for (size_t i = 0; i < n; i++)
            residual[i] += delta[i];
        acc = residual;
    }
    return s_topk_frac(acc, n, enc->c.topk, enc->idx);
}

int fm_codec_enc_run(fm_codec_enc_t *enc, const float *delta, float *residual, fm_rng_t *rng,
                     fm_codec_tensor_t *out)
{
    FM_ASSERT(enc && delta && out);
    FM_ASSERT(!enc->c.error_feedback == !residual);
    FM_ASSERT(enc->c.dtype != FM_DT_I8 || rng);
    const fm_codec_config_t *c = &enc->c;
    unsigned char *pk = enc->packed, *zp = enc->zout;
    size_t gk = c->topk_model ? s_topk_model(enc, delta, residual) : 0, gj = 0;
    for (int v = 0; v < fm_model_nviews(enc->layout); v++) {
        const fm_view_t *view = fm_model_view(enc->layout, v);
        size_t n = view->numel;
        const float *x = delta + view->offset;
        fm_codec_tensor_t *t = &out[v];
        memset(t, 0, sizeof *t);
        if (c->topk > 0) {
            float *acc = (float *)x;
            if (residual) { /* x + e, kept in the residual */
                acc = residual + view->offset;
                if (!c->topk_model) /* (model scope: added already) */
                    for (size_t i = 0; i < n; i++)
                        acc[i] += x[i];
            }
            size_t k;
            uint32_t *sel;
            if (c->topk_model) { /* this view's share of the model's selection, made local */
                sel = enc->idx + gj;
                for (k = 0; gj + k < gk && enc->idx[gj + k] < view->offset + n; k++)
                    sel[k] -= (uint32_t)view->offset;
                gj += k;
            } else {
                sel = enc->idx;
                k = s_topk_frac(acc, n, c->topk, sel);
            }
            for (size_t j = 0; j < k; j++)
                enc->vals[j] = acc[sel[j]];
            t->sparse = 1;
            t->dtype = s_pack(c->dtype, enc->vals, k, rng, pk, &t->scale);
            t->data = pk;
            t->nbytes = k * fm_dtype_size(t->dtype);
            pk += t->nbytes;
            memcpy(pk, sel, 4 * k);
            t->idx = pk;
            t->idx_nbytes = 4 * k;
            pk += 4 * k;
            if (residual) /* e' = (x + e) - what the receiver decodes */
                for (size_t j = 0; j < k; j++)
                    acc[sel[j]] -= s_unpack1(t->dtype, t->scale, t->data, j);
        } else {
            t->dtype = s_pack(c->dtype, x, n, rng, pk, &t->scale);
            t->data = pk;
            t->nbytes = n * fm_dtype_size(t->dtype);
            pk += t->nbytes;
        }
        if (c->zstd_level) {
            int rc = s_zstd(enc, t->data, t->nbytes, &zp, &t->data, &t->nbytes);
            if (rc == 0 && t->sparse)
                rc = s_zstd(enc, t->idx, t->idx_nbytes, &zp, &t->idx, &t->idx_nbytes);
            if (rc)
                return rc;
            t->zstd = 1;
        }
    }
    FM_ASSERT(gj == gk);
    return 0;
}

/* ==== decoder =============================================================================== */

int fm_codec_check(const fm_codec_tensor_t *t, size_t numel, const char *what, fm_errmsg_t *e)
{
    if ((unsigned)t->dtype >= FM_DT_COUNT)
        return fm_errmsg_set(e, FM_EDTYPE, "%s: unknown dtype", what);
    if (t->dtype == FM_DT_I8 && !(isfinite(t->scale) && t->scale >= 0.0))
        return fm_errmsg_set(e, FM_ERANGE, "%s: scale %g, must be finite and >= 0", what,
                             t->scale);
    if (t->zstd)
        return 0; /* sizes are checked against the frames' declared content (open) */
    size_t es = fm_dtype_size(t->dtype);
    if (!t->sparse) {
        if (t->nbytes != numel * es)
            return fm_errmsg_set(e, FM_EFORMAT,
                                 "%s: %zu data bytes, expected %zu (%zu values of %s)", what,
                                 t->nbytes, numel * es, numel, fm_dtype_name(t->dtype));
        return 0;
    }
    if (t->idx_nbytes % 4 != 0)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: idx of %zu bytes, not a multiple of 4", what,
                             t->idx_nbytes);
    size_t k = t->idx_nbytes / 4;
    if (k > numel)
        return fm_errmsg_set(e, FM_ERANGE, "%s: %zu indices for %zu entries", what, k, numel);
    if (t->nbytes != k * es)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: %zu data bytes for %zu indices, expected %zu (%s values)", what,
                             t->nbytes, k, k * es, fm_dtype_name(t->dtype));
    return 0;
}

void fm_codec_rd_free(fm_codec_rd_t *r)
{
    if (!r)
        return;
    ZSTD_freeDStream(r->zv);
    ZSTD_freeDStream(r->zi);
    r->zv = r->zi = NULL;
}

/* Open source s over [p, p + n): raw, or (zstd) one frame of exactly `want` content bytes
 * (want SIZE_MAX: any multiple of 4 up to 4 x r->numel, returned in *got). */
static int s_src_open(fm_codec_rd_t *r, struct fm_codec_src *s, void **zslot, const void *p,
                      size_t n, int zstd, size_t want, size_t *got, const char *field,
                      fm_errmsg_t *e)
{
    memset(s, 0, sizeof *s);
    s->p = p;
    s->n = n;
    if (!zstd) {
        *got = n;
        return 0;
    }
    size_t fsz = ZSTD_findFrameCompressedSize(p, n);
    if (ZSTD_isError(fsz) || fsz != n)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: %s is not exactly one zstd frame", r->what,
                             field);
    unsigned long long cs = ZSTD_getFrameContentSize(p, n);
    if (cs == ZSTD_CONTENTSIZE_UNKNOWN || cs == ZSTD_CONTENTSIZE_ERROR)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd frame without a content size", r->what,
                             field);
    if (want == SIZE_MAX) {
        if (cs % 4 != 0 || cs / 4 > r->numel)
            return fm_errmsg_set(e, cs % 4 ? FM_EFORMAT : FM_ERANGE,
                                 "%s: %s: %llu bytes, not a multiple of 4 up to %zu indices",
                                 r->what, field, cs, r->numel);
    } else if (cs != want)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd content of %llu bytes, expected %zu",
                             r->what, field, cs, want);
    if (!*zslot && !(*zslot = ZSTD_createDStream()))
        return fm_errmsg_set(e, -ENOMEM, "%s: out of memory", r->what);
    ZSTD_DCtx_reset(*zslot, ZSTD_reset_session_only);
    ZSTD_DCtx_setParameter(*zslot, ZSTD_d_windowLogMax, 27);
    s->z = *zslot;
    *got = (size_t)cs;
    return 0;
}

/* Read exactly n bytes of s into dst. */
static int s_src_read(fm_codec_rd_t *r, struct fm_codec_src *s, void *dst, size_t n,
                      const char *field, fm_errmsg_t *e)
{
    if (!s->z) {
        FM_ASSERT(s->pos + n <= s->n); /* fm_codec_check */
        memcpy(dst, s->p + s->pos, n);
        s->pos += n;
        return 0;
    }
    ZSTD_outBuffer out = {dst, n, 0};
    ZSTD_inBuffer in = {s->p, s->n, s->pos};
    while (out.pos < out.size) {
        size_t before_in = in.pos, before_out = out.pos;
        size_t ret = ZSTD_decompressStream(s->z, &out, &in);
        if (ZSTD_isError(ret))
            return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd: %s", r->what, field,
                                 ZSTD_getErrorName(ret));
        if (ret == 0 && out.pos < out.size)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd frame ends early", r->what, field);
        if (in.pos == before_in && out.pos == before_out)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd frame truncated", r->what, field);
        s->ended = ret == 0;
    }
    s->pos = in.pos;
    return 0;
}

/* A zstd source whose content was read entirely: its frame must end there. */
static int s_src_finish(fm_codec_rd_t *r, struct fm_codec_src *s, const char *field,
                        fm_errmsg_t *e)
{
    if (!s->z)
        return 0;
    unsigned char extra;
    ZSTD_inBuffer in = {s->p, s->n, s->pos};
    while (!s->ended) {
        ZSTD_outBuffer out = {&extra, 1, 0};
        size_t before = in.pos;
        size_t ret = ZSTD_decompressStream(s->z, &out, &in);
        if (ZSTD_isError(ret) || out.pos != 0)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd frame longer than declared",
                                 r->what, field);
        s->ended = ret == 0;
        if (!s->ended && in.pos == before)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: zstd frame truncated", r->what, field);
    }
    return 0;
}

int fm_codec_rd_open(fm_codec_rd_t *r, const fm_codec_tensor_t *t, size_t numel, const char *what,
                     fm_errmsg_t *e)
{
    FM_ASSERT(r && t && what);
    r->t = t;
    r->numel = numel;
    r->done = 0;
    r->last = -1;
    r->what = what;
    size_t es = fm_dtype_size(t->dtype), got = 0;
    int rc;
    if (!t->sparse) {
        r->k = numel;
        memset(&r->si, 0, sizeof r->si);
        return s_src_open(r, &r->sv, &r->zv, t->data, t->nbytes, t->zstd, numel * es, &got,
                          "data", e);
    }
    if ((rc = s_src_open(r, &r->si, &r->zi, t->idx, t->idx_nbytes, t->zstd, SIZE_MAX, &got, "idx",
                         e)) != 0)
        return rc;
    r->k = got / 4;
    return s_src_open(r, &r->sv, &r->zv, t->data, t->nbytes, t->zstd, r->k * es, &got, "data", e);
}

int fm_codec_rd_next(fm_codec_rd_t *r, fm_codec_block_t *b, fm_errmsg_t *e)
{
    FM_ASSERT(r && r->t && b);
    const fm_codec_tensor_t *t = r->t;
    size_t n = r->k - r->done;
    int rc;
    if (n == 0) {
        if ((rc = s_src_finish(r, &r->sv, "data", e)) != 0 ||
            (t->sparse && (rc = s_src_finish(r, &r->si, "idx", e)) != 0))
            return rc;
        return 0;
    }
    if (n > FM_CODEC_BLOCK)
        n = FM_CODEC_BLOCK;
    if (t->sparse) {
        if ((rc = s_src_read(r, &r->si, r->idx, 4 * n, "idx", e)) != 0)
            return rc;
        for (size_t j = 0; j < n; j++) {
            long long ix = r->idx[j];
            if (ix <= r->last || (size_t)ix >= r->numel)
                return fm_errmsg_set(e, FM_EFORMAT, "%s: idx[%zu] = %lld %s", r->what,
                                     r->done + j, ix,
                                     (size_t)ix >= r->numel ? "out of range"
                                                            : "not above the one before it "
                                                              "(indices strictly increase)");
            r->last = ix;
        }
    }
    size_t es = fm_dtype_size(t->dtype);
    void *dst = t->dtype == FM_DT_F32 ? (void *)r->vals : (void *)r->raw;
    if ((rc = s_src_read(r, &r->sv, dst, es * n, "data", e)) != 0)
        return rc;
    switch (t->dtype) {
    case FM_DT_F32: break;
    case FM_DT_F16:
        for (size_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, r->raw + 2 * j, 2);
            r->vals[j] = fm_codec_f16_to_f32(h);
        }
        break;
    case FM_DT_BF16:
        for (size_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, r->raw + 2 * j, 2);
            r->vals[j] = fm_codec_bf16_to_f32(h);
        }
        break;
    case FM_DT_I8: {
        float s = (float)t->scale;
        for (size_t j = 0; j < n; j++)
            r->vals[j] = (float)(int8_t)r->raw[j] * s;
        break;
    }
    default: FM_ASSERT(0);
    }
    b->n = n;
    b->first = t->sparse ? 0 : r->done;
    b->idx = t->sparse ? r->idx : NULL;
    b->vals = r->vals;
    r->done += n;
    return 1;
}

int fm_codec_decode(fm_codec_rd_t *r, const fm_codec_tensor_t *t, size_t numel, const char *what,
                    float *dst, fm_errmsg_t *e)
{
    int rc = fm_codec_rd_open(r, t, numel, what, e);
    if (rc)
        return rc;
    if (t->sparse)
        memset(dst, 0, numel * sizeof *dst);
    fm_codec_block_t b = {0};
    while ((rc = fm_codec_rd_next(r, &b, e)) == 1) {
        if (b.idx)
            for (size_t j = 0; j < b.n; j++)
                dst[b.idx[j]] = b.vals[j];
        else
            memcpy(dst + b.first, b.vals, b.n * sizeof *dst);
    }
    return rc;
}
