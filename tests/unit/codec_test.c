/* Unit tests of fm_codec (tensor encodings, docs/PROTOCOL.md §2.1.2) and of fm_wire's protocol
 * version 2 (issue 15):
 *   - the scalar conversions: every half and bfloat16 pattern round-trips; float -> half and
 *     float -> bfloat16 against independent references (nearest value found in double,
 *     ties to even) on every midpoint, its neighbours and random floats (subnormals, the
 *     65504/65520 edge, signed zeros, infinities);
 *   - every value type, dense and top-k, with and without zstd, through the whole path:
 *     fm_codec_enc_run -> fm_wire_encode_update_coded -> fm_wire_decode_update ->
 *     fm_wire_tensors_check -> fm_wire_tensors_copy and the block reader: within the
 *     header's bounds (F16/BF16 bit-exact to the references), I8 within one scale step and
 *     unbiased over seeds, F16 out of range sent as F32, zstd decoding to the same bytes;
 *   - top-k picks exactly the k largest magnitudes (a sort as reference, ties to the lower
 *     index); error feedback over steps: sum of what was received + residual == sum of the
 *     deltas within the float rounding the residual can have accumulated (bounded per step);
 *   - malformed encodings (hand-packed frames, one defect each) rejected at the documented
 *     stage with the documented code; a zstd byte-flip sweep never crashes (ASan build);
 *   - raw float32 through the coded encoders is version 1, byte for byte.
 * Frames handed to the decoder are copied into allocations of exactly their length. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <zstd.h>

#include "../support/fm_testutil.h"
#include "fm_codec.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_wire.h"

/* ---- helpers ------------------------------------------------------------------------------ */

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

static fm_model_t *s_spec(const fm_spec_tensor_t *t, int n)
{
    int err = 0;
    fm_model_t *m = fm_model_new_spec(t, n, &err);
    assert_non_null(m);
    return m;
}

/* The layout of the round-trip tests: a tensor of three blocks, a small one and a scalar. */
static fm_model_t *s_layout(void)
{
    static const fm_spec_tensor_t t[] = {{"w", 2, {50, 120}}, {"b", 1, {7}}, {"s", 0, {0}}};
    return s_spec(t, 3);
}

/* ---- scalar references ------------------------------------------------------------------- */

/* The value of the non-negative finite half pattern h (0 .. 0x7bff), from the format's
 * definition alone. */
static double s_half_val(unsigned h)
{
    unsigned e = h >> 10, m = h & 0x3ffu;
    return e == 0 ? ldexp((double)m, -24) : ldexp(1024.0 + m, (int)e - 25);
}

/* Reference float -> half: binary search of the largest half <= |x| in double, then the
 * nearer of it and the next one (ties: the even pattern). The pattern after 0x7bff is
 * infinity, standing for 65536 (IEEE: overflow to infinity from 65520 = 65504 + half ulp). */
static uint16_t s_ref_f16(float x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    if (isinf(x))
        return (uint16_t)(sign | 0x7c00u);
    double a = fabs((double)x);
    unsigned lo = 0, hi = 0x7bff;
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (s_half_val(mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double vl = s_half_val(lo), vh = lo == 0x7bff ? 65536.0 : s_half_val(lo + 1);
    double dl = a - vl, dh = vh - a;
    unsigned pick = dl < dh ? lo : dh < dl ? lo + 1 : (lo & 1u) ? lo + 1 : lo;
    return (uint16_t)(sign | pick);
}

/* Reference float -> bfloat16: the two bfloat16 values around x (truncated and one step
 * further from zero), the nearer one in double, ties to the even pattern. */
static uint16_t s_ref_bf16(float x)
{
    uint32_t t = s_bits(x) & 0xffff0000u;
    if (t == s_bits(x))
        return (uint16_t)(t >> 16);
    uint32_t t2 = t + 0x10000u; /* magnitude one step up: maybe infinity (stands for 2^128) */
    double a = fabs((double)x), vl = fabs((double)s_float(t));
    double vh = (t2 & 0x7fffffffu) == 0x7f800000u ? ldexp(1.0, 128) : fabs((double)s_float(t2));
    double dl = a - vl, dh = vh - a;
    uint32_t pick = dl < dh ? t : dh < dl ? t2 : ((t >> 16) & 1u) ? t2 : t;
    return (uint16_t)(pick >> 16);
}

static void s_check_f16(float x)
{
    uint16_t got = fm_codec_f16_from_f32(x), want = s_ref_f16(x);
    if (got != want)
        fail_msg("f16(%a = 0x%08x) = 0x%04x, reference 0x%04x", (double)x, s_bits(x), got, want);
}

static void s_check_bf16(float x)
{
    uint16_t got = fm_codec_bf16_from_f32(x), want = s_ref_bf16(x);
    if (got != want)
        fail_msg("bf16(%a = 0x%08x) = 0x%04x, reference 0x%04x", (double)x, s_bits(x), got, want);
}

/* A float of random bits that is not a NaN. */
static float s_random_float(fm_rng_t *rng)
{
    for (;;) {
        float x = s_float((uint32_t)fm_rng_u64(rng));
        if (!isnan(x))
            return x;
    }
}

/* ---- scalar conversions -------------------------------------------------------------------- */

/* Every half: to float and back is the identity (NaN stays a NaN of the same sign); the
 * float is the format's value. */
static void test_f16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = fm_codec_f16_to_f32((uint16_t)h);
        bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
        if (nan) {
            assert_true(isnan(f));
            uint16_t back = fm_codec_f16_from_f32(f);
            assert_true((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu) != 0);
            assert_int_equal(back & 0x8000u, h & 0x8000u); /* the sign survives */
            continue;
        }
        assert_int_equal(fm_codec_f16_from_f32(f), h);
        double want = (h & 0x7fffu) >= 0x7c00u ? INFINITY : s_half_val(h & 0x7fffu);
        assert_true((double)fabsf(f) == want);
        assert_int_equal(!!signbit(f), !!(h & 0x8000u));
    }
}

/* float -> half against the reference: every midpoint between consecutive halves and its
 * float neighbours (both signs), specials, random bit patterns and random floats in the
 * subnormal range. */
static void test_f16_rounding(void **state)
{
    (void)state;
    for (unsigned h = 0; h <= 0x7bff; h++) {
        double mid = ((h == 0x7bff ? 65536.0 : s_half_val(h + 1)) + s_half_val(h)) / 2;
        float m = (float)mid;
        assert_true((double)m == mid); /* 12 significant bits: exact */
        float xs[] = {m, nextafterf(m, 0), nextafterf(m, INFINITY), (float)s_half_val(h)};
        for (int i = 0; i < 4; i++) {
            s_check_f16(xs[i]);
            s_check_f16(-xs[i]);
        }
    }
    static const float special[] = {
        0.0f,     -0.0f,    65504.0f,   65519.99f,  65520.0f,   65536.0f,  1e5f,         FLT_MAX,
        INFINITY, 0x1p-24f, 0x1p-25f,   0x1.8p-25f, 0x1p-26f,   0x1p-14f,  0x1.ffcp-15f, 1e-45f,
        FLT_MIN,  1.0f,     0x1.002p0f, 0x1.001p0f, 0x1.003p0f, 0x1p-149f, 2048.5f,      4095.0f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
        s_check_f16(special[i]);
        s_check_f16(-special[i]);
    }
    assert_int_equal(fm_codec_f16_from_f32(65519.99f), 0x7bff);
    assert_int_equal(fm_codec_f16_from_f32(65520.0f), 0x7c00);
    assert_int_equal(fm_codec_f16_from_f32(-65520.0f), 0xfc00);
    assert_int_equal(fm_codec_f16_from_f32(-0.0f), 0x8000);
    assert_int_equal(fm_codec_f16_from_f32(0x1p-25f), 0x0000);   /* tie: to even (zero) */
    assert_int_equal(fm_codec_f16_from_f32(0x1.8p-24f), 0x0002); /* tie: to even */
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 1);
    for (int i = 0; i < 1000000; i++)
        s_check_f16(s_random_float(&rng));
    for (int i = 0; i < 300000; i++) { /* the half subnormal range and a bit beyond */
        float x = (float)ldexp(fm_rng_uniform(&rng), -13 - (int)fm_rng_below(&rng, 14));
        s_check_f16(i & 1 ? -x : x);
    }
    for (int i = 0; i < 300000; i++) { /* near the top */
        float x = (float)(65000.0 + 1000.0 * fm_rng_uniform(&rng));
        s_check_f16(i & 1 ? -x : x);
    }
    float q = fm_codec_f16_to_f32(fm_codec_f16_from_f32(NAN));
    assert_true(isnan(q));
}

/* Every bfloat16 round-trips; float -> bfloat16 against the reference on every pattern with
 * the low halves that matter (ties, their neighbours) and random floats; relative error
 * <= 2^-8 for normal floats. */
static void test_bf16(void **state)
{
    (void)state;
    static const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234};
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = fm_codec_bf16_to_f32((uint16_t)h);
        assert_true(s_bits(f) == h << 16);
        if (isnan(f)) {
            uint16_t back = fm_codec_bf16_from_f32(f);
            assert_true(isnan(fm_codec_bf16_to_f32(back)));
            assert_int_equal(back & 0x8000u, h & 0x8000u);
            continue;
        }
        assert_int_equal(fm_codec_bf16_from_f32(f), h);
        for (size_t i = 0; i < sizeof lows / sizeof *lows; i++) {
            float x = s_float((h << 16) | lows[i]);
            if (!isnan(x))
                s_check_bf16(x);
        }
    }
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 2);
    for (int i = 0; i < 1000000; i++) {
        float x = s_random_float(&rng);
        s_check_bf16(x);
        float d = fm_codec_bf16_to_f32(fm_codec_bf16_from_f32(x));
        if (isfinite(d) && fabsf(x) >= FLT_MIN)
            assert_true(fabs((double)d - (double)x) <= ldexp(fabs((double)x), -8));
    }
    assert_int_equal(fm_codec_bf16_from_f32(FLT_MAX), 0x7f80); /* rounds up to infinity */
    assert_int_equal(fm_codec_bf16_from_f32(-0.0f), 0x8000);
}

/* ---- the whole path ------------------------------------------------------------------------ */

static fm_wire_update_t s_hdr(void)
{
    fm_wire_update_t h = {.client = 3, .base = 7, .num_samples = 10, .local_steps = 2};
    for (int i = 0; i < FM_WIRE_ID_LEN; i++)
        h.id[i] = (uint8_t)i;
    strcpy(h.trainer, "trainer-1");
    return h;
}

/* Reads every tensor of checked `ts` with the block reader into a fresh buffer: blocks of at
 * most FM_CODEC_BLOCK values, dense blocks contiguous, indices increasing; then the end (0)
 * twice. Compared with `want` (what fm_wire_tensors_copy wrote). */
static void s_blocks(const fm_wire_tensors_t *ts, const fm_model_t *layout, const float *want)
{
    fm_codec_rd_t *rd = fm_tu_alloc(1, sizeof *rd);
    float *got = fm_tu_floats(fm_model_nparams(layout));
    fm_errmsg_t e = {{0}};
    for (int i = 0; i < ts->count; i++) {
        const fm_wire_tensor_t *x = &ts->t[i];
        const fm_view_t *v = fm_model_find(layout, x->name);
        assert_non_null(v);
        float *dst = got + v->offset;
        fm_tu_ok(fm_codec_rd_open(rd, &x->enc, v->numel, x->name, &e), &e);
        fm_codec_block_t b;
        size_t next = 0;
        long long last = -1;
        int rc;
        while ((rc = fm_codec_rd_next(rd, &b, &e)) == 1) {
            assert_true(b.n >= 1 && b.n <= FM_CODEC_BLOCK);
            if (b.idx) {
                for (size_t j = 0; j < b.n; j++) {
                    assert_true((long long)b.idx[j] > last && b.idx[j] < v->numel);
                    last = b.idx[j];
                    dst[b.idx[j]] = b.vals[j];
                }
            } else {
                assert_int_equal(b.first, next);
                memcpy(dst + b.first, b.vals, b.n * sizeof(float));
                next += b.n;
            }
        }
        fm_tu_ok(rc, &e);
        assert_int_equal(fm_codec_rd_next(rd, &b, &e), 0);
        if (!x->enc.sparse)
            assert_int_equal(next, v->numel);
    }
    assert_memory_equal(got, want, fm_model_nparams(layout) * sizeof(float));
    fm_codec_rd_free(rd);
    fm_codec_rd_free(rd); /* idempotent */
    free(rd);
    free(got);
}

/* coded (one per view) -> UPDATE -> decode -> check -> copy into out; also through the
 * block reader. Returns the frame's version; the decoded tensors are left in *ts, pointing
 * into *frame (the caller frees it). */
static unsigned s_wire_keep(const fm_model_t *layout, const fm_codec_tensor_t *coded, float *out,
                            fm_wire_tensors_t *ts, unsigned char **frame)
{
    fm_wire_update_t h = s_hdr(), got;
    fm_wire_buf_t b = FM_WIRE_BUF_INIT;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_wire_encode_update_coded(&h, layout, NULL, coded, &b), 0);
    unsigned char *f = fm_tu_exact(b.data, b.len);
    fm_tu_ok(fm_wire_decode_update(f, b.len, &got, ts, &e), &e);
    fm_tu_ok(fm_wire_tensors_check(ts, layout, &e), &e);
    memset(out, 0xff, fm_model_nparams(layout) * sizeof(float)); /* NaN: all overwritten */
    fm_tu_ok(fm_wire_tensors_copy(ts, layout, out, &e), &e);
    s_blocks(ts, layout, out);
    for (int i = 0; i < ts->count; i++) /* what was sent is what was received */
        assert_int_equal(ts->t[i].enc.dtype, coded[i].dtype);
    unsigned v = ts->version;
    if (frame) /* ts points into it */
        *frame = f;
    else
        free(f);
    fm_wire_buf_free(&b);
    return v;
}

/* The same, the frame freed (only the copied fields of *ts stay usable). */
static unsigned s_wire(const fm_model_t *layout, const fm_codec_tensor_t *coded, float *out,
                       fm_wire_tensors_t *ts)
{
    return s_wire_keep(layout, coded, out, ts, NULL);
}

/* The header's bound for a value of type d decoded as `dec` from x (I8: scale). */
static void s_bound(fm_dtype_t d, float x, float dec, double scale, size_t i)
{
    double err = fabs((double)dec - (double)x), ax = fabs((double)x);
    switch (d) {
    case FM_DT_F32:
        if (s_bits(dec) != s_bits(x))
            fail_msg("F32 [%zu]: %a != %a", i, (double)dec, (double)x);
        break;
    case FM_DT_F16:
        if (err > (ax >= 0x1p-14 ? ldexp(ax, -11) : 0x1p-25) ||
            s_bits(dec) != s_bits(fm_codec_f16_to_f32(s_ref_f16(x))))
            fail_msg("F16 [%zu]: %a -> %a", i, (double)x, (double)dec);
        break;
    case FM_DT_BF16:
        if (err > ldexp(ax, -8) || s_bits(dec) != s_bits(fm_codec_bf16_to_f32(s_ref_bf16(x))))
            fail_msg("BF16 [%zu]: %a -> %a", i, (double)x, (double)dec);
        break;
    default:
        /* |q - x/s| < 1 in exact arithmetic (the quantiser's double roundings are ~2^-45);
         * the receiver's (float)scale and (float)q * (float)scale add 2^-24 relative each,
         * or, below FLT_MIN, 2^-150 absolute each (times |q| <= 127 for the scale's):
         * 2^-14 relative + 2^-142 absolute of slack, still far below the next step */
        if (!(err < scale * (1.0 + 0x1p-14) + 0x1p-142))
            fail_msg("I8 [%zu]: %a -> %a, scale %a", i, (double)x, (double)dec, scale);
        break;
    }
}

/* Deltas with values every type must cope with: normal of several scales, zeros of both
 * signs, values in the half subnormal range, 65504 and some large ones (< 65504). */
static void s_delta(fm_rng_t *rng, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double sd = (i % 5 == 0) ? 1e-6 : (i % 7 == 0) ? 30.0 : 0.02;
        x[i] = (float)(sd * fm_rng_normal(rng));
    }
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = 65504.0f;
    x[3] = -1000.5f;
    x[4] = 3e-8f;
    x[5] = 0x1p-24f;
}

/* Every value type, dense: within the bounds; with zstd (same seed): the same bytes. */
static void test_dense_each_dtype(void **state)
{
    (void)state;
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np), *outz = fm_tu_floats(np);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 3);
    s_delta(&rng, x, np);
    for (int d = 0; d < FM_DT_COUNT; d++) {
        for (int z = 0; z < 2; z++) {
            fm_codec_config_t c = {.dtype = (fm_dtype_t)d, .zstd_level = z ? 3 : 0};
            int err = 0;
            fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
            assert_non_null(enc);
            fm_rng_t r2;
            fm_rng_seed(&r2, 99, (uint64_t)d);
            assert_int_equal(fm_codec_enc_run(enc, x, NULL, &r2, coded), 0);
            unsigned v = s_wire(layout, coded, z ? outz : out, ts);
            assert_int_equal(v, d == FM_DT_F32 && !z ? 1 : 2);
            for (int i = 0; i < ts->count; i++) {
                const fm_wire_tensor_t *t = &ts->t[i];
                const fm_view_t *view = fm_model_find(layout, t->name);
                assert_int_equal(t->enc.zstd, z);
                assert_false(t->enc.sparse);
                assert_string_equal(t->dtype, fm_dtype_name((fm_dtype_t)d));
                double amax = fm_tu_max_abs(x + view->offset, view->numel);
                if (d == FM_DT_I8)
                    assert_true(t->enc.scale == amax / 127 && t->has_scale);
                for (size_t j = 0; j < view->numel; j++)
                    s_bound((fm_dtype_t)d, x[view->offset + j], out[view->offset + j],
                            t->enc.scale, j);
            }
            if (z) /* zstd is lossless on top: the same values */
                assert_memory_equal(out, outz, np * sizeof(float));
            fm_codec_enc_destroy(&enc);
            fm_codec_enc_destroy(&enc);
        }
    }
    free(ts);
    free(x);
    free(out);
    free(outz);
    fm_model_destroy(&layout);
}

/* F16: a tensor with a value beyond 65504 (or a NaN) goes as F32, exactly; 65504 stays F16.
 * The NaN reaches the receiver, whose copy refuses it. */
static void test_f16_out_of_range(void **state)
{
    (void)state;
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    const fm_view_t *w = fm_model_find(layout, "w"), *b = fm_model_find(layout, "b"),
                    *s = fm_model_find(layout, "s");
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 4);
    fm_tu_normal(&rng, x, np, 0.1);
    x[w->offset + 17] = 65504.5f; /* rounds to 65504 as half: still out of range */
    x[b->offset + 3] = -65504.0f; /* the largest half: b stays F16 */
    x[s->offset] = 1e6f;
    for (int topk = 0; topk < 2; topk++) {
        fm_codec_config_t c = {.dtype = FM_DT_F16, .topk = topk ? 0.5 : 0.0};
        int err = 0;
        fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
        assert_non_null(enc);
        assert_int_equal(fm_codec_enc_run(enc, x, NULL, NULL, coded), 0);
        assert_int_equal(s_wire(layout, coded, out, ts), 2);
        const fm_codec_tensor_t *cw = &coded[0], *cb = &coded[1], *cs = &coded[2];
        assert_int_equal(cw->dtype, FM_DT_F32);
        assert_int_equal(cb->dtype, FM_DT_F16);
        assert_int_equal(cs->dtype, FM_DT_F32);
        assert_int_equal(cw->sparse, topk);
        assert_true(out[w->offset + 17] == 65504.5f && out[s->offset] == 1e6f);
        assert_true(out[b->offset + 3] == -65504.0f);
        if (!topk) /* every value of w exact */
            assert_memory_equal(out + w->offset, x + w->offset, w->numel * sizeof(float));
        fm_codec_enc_destroy(&enc);
    }
    /* a NaN: sent F32 as it is, refused by the receiver's copy */
    x[w->offset + 5] = NAN;
    fm_codec_config_t c = {.dtype = FM_DT_F16};
    int err = 0;
    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
    assert_int_equal(fm_codec_enc_run(enc, x, NULL, NULL, coded), 0);
    assert_int_equal(coded[0].dtype, FM_DT_F32);
    fm_wire_update_t h = s_hdr(), got;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_wire_encode_update_coded(&h, layout, NULL, coded, &buf), 0);
    fm_tu_ok(fm_wire_decode_update(buf.data, buf.len, &got, ts, &e), &e);
    fm_tu_ok(fm_wire_tensors_check(ts, layout, &e), &e);
    fm_tu_expect(fm_wire_tensors_copy(ts, layout, out, &e), FM_ENONFINITE, &e, "'w'");
    fm_wire_buf_free(&buf);
    fm_codec_enc_destroy(&enc);
    free(ts);
    free(x);
    free(out);
    fm_model_destroy(&layout);
}

/* I8: every run within one scale step; over N seeds the mean is x. Each decoded value is x
 * rounded down or up to a multiple of the scale s, so it lies in an interval of width s and
 * Hoeffding gives P(|mean - x| >= t) <= 2 exp(-2 N t^2 / s^2): t = 0.15 s with N = 1000 is
 * 6e-20 per entry (1e-16 over the 6,007 entries). Rounding to nearest or down would be off
 * by up to s/2 (the test then fails on most entries); the float32 roundings inside the
 * quantiser shift the mean by about 2^-16 s. */
static void test_int8_unbiased(void **state)
{
    (void)state;
    enum { N = 1000 };
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np);
    double *sum = fm_tu_alloc(np, sizeof(double));
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 5);
    fm_tu_normal(&rng, x, np, 1.0);
    fm_codec_config_t c = {.dtype = FM_DT_I8};
    int err = 0;
    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
    assert_non_null(enc);
    double scale[3] = {0};
    for (int s = 0; s < N; s++) {
        fm_rng_seed(&rng, 1234, (uint64_t)s);
        assert_int_equal(fm_codec_enc_run(enc, x, NULL, &rng, coded), 0);
        assert_int_equal(s_wire(layout, coded, out, ts), 2);
        for (int v = 0; v < 3; v++) {
            const fm_view_t *view = fm_model_view(layout, v);
            scale[v] = coded[v].scale;
            for (size_t j = 0; j < view->numel; j++) {
                s_bound(FM_DT_I8, x[view->offset + j], out[view->offset + j], scale[v], j);
                sum[view->offset + j] += out[view->offset + j];
            }
        }
    }
    for (int v = 0; v < 3; v++) {
        const fm_view_t *view = fm_model_view(layout, v);
        for (size_t j = 0; j < view->numel; j++) {
            double mean = sum[view->offset + j] / N, xi = x[view->offset + j];
            if (fabs(mean - xi) >= 0.15 * scale[v])
                fail_msg("I8 %s[%zu]: mean %.9g of %d runs, x %.9g, scale %.9g", view->name, j,
                         mean, N, xi, scale[v]);
        }
    }
    fm_codec_enc_destroy(&enc);
    free(ts);
    free(sum);
    free(x);
    free(out);
    fm_model_destroy(&layout);
}

/* I8 of a tensor whose values are all tiny (max |x| below 127 / FLT_MAX, so 1 / scale is
 * beyond float32): still within one scale step of x, and zeros stay exactly 0. */
static void test_int8_tiny(void **state)
{
    (void)state;
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    x[0] = 1e-38f;
    x[1] = -3e-39f;
    x[2] = 1e-45f; /* the smallest subnormal */
    x[3] = 5e-39f;
    const fm_view_t *b = fm_model_find(layout, "b");
    x[b->offset] = 0x1p-149f; /* b: one subnormal, zeros */
    fm_codec_config_t c = {.dtype = FM_DT_I8};
    int err = 0;
    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
    assert_non_null(enc);
    fm_rng_t rng;
    for (int s = 0; s < 50; s++) {
        fm_rng_seed(&rng, 77, (uint64_t)s);
        assert_int_equal(fm_codec_enc_run(enc, x, NULL, &rng, coded), 0);
        assert_int_equal(s_wire(layout, coded, out, ts), 2);
        for (int v = 0; v < 3; v++) {
            const fm_view_t *view = fm_model_view(layout, v);
            for (size_t j = 0; j < view->numel; j++) {
                float xi = x[view->offset + j], d = out[view->offset + j];
                s_bound(FM_DT_I8, xi, d, coded[v].scale, j);
                if (xi == 0.0f && d != 0.0f)
                    fail_msg("I8 %s[%zu]: 0 -> %a (scale %a)", view->name, j, (double)d,
                             coded[v].scale);
            }
        }
    }
    fm_codec_enc_destroy(&enc);
    free(ts);
    free(x);
    free(out);
    fm_model_destroy(&layout);
}

/* ---- top-k --------------------------------------------------------------------------------- */

typedef struct {
    double mag;
    uint32_t i;
} s_entry_t;

/* |x| descending, then index ascending. */
static int s_cmp_mag(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    if (x->mag != y->mag)
        return x->mag > y->mag ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j;
}

/* Values of pattern p: 0 normal, 1 many ties (and both zeros), 2 equal top bits (the radix
 * select's last pass decides), 3 subnormals, zeros and a few large values. */
static void s_pattern(fm_rng_t *rng, int p, float *x, size_t n)
{
    static const float tie[] = {0.0f, -0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 2.0f, -2.0f};
    for (size_t i = 0; i < n; i++) {
        switch (p) {
        case 0: x[i] = (float)fm_rng_normal(rng); break;
        case 1: x[i] = tie[fm_rng_below(rng, 8)]; break;
        case 2:
            x[i] = s_float(0x3f800000u | (uint32_t)fm_rng_below(rng, 1u << 12));
            if (fm_rng_below(rng, 2))
                x[i] = -x[i];
            break;
        default: {
            uint64_t r = fm_rng_below(rng, 10);
            x[i] = r < 4   ? s_float((uint32_t)fm_rng_below(rng, 0x800000u))
                   : r < 8 ? 0.0f
                           : (float)(1e3 * fm_rng_normal(rng));
        }
        }
    }
}

/* The indices top-k sends are exactly the k = clamp(ceil(frac n), 1, n) largest magnitudes
 * (ties: lower index), increasing, with their exact values (F32). */
static void test_topk_selection(void **state)
{
    (void)state;
    static const int64_t sizes[] = {1, 2, 7, 100, 2048, 2049, 5000};
    static const double fracs[] = {1e-9, 0.003, 0.1, 0.5, 0.999, 1.0};
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 6);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        fm_spec_tensor_t t = {"x", 1, {sizes[si]}};
        fm_model_t *layout = s_spec(&t, 1);
        size_t n = (size_t)sizes[si];
        float *x = fm_tu_floats(n);
        uint32_t *ref = fm_tu_alloc(n, sizeof *ref), *got = fm_tu_alloc(n, sizeof *got);
        s_entry_t *ent = fm_tu_alloc(n, sizeof *ent);
        for (size_t fi = 0; fi < sizeof fracs / sizeof *fracs; fi++) {
            fm_codec_config_t c = {.dtype = FM_DT_F32, .topk = fracs[fi]};
            int err = 0;
            fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
            assert_non_null(enc);
            for (int p = 0; p < 4; p++) {
                s_pattern(&rng, p, x, n);
                fm_codec_tensor_t ct;
                assert_int_equal(fm_codec_enc_run(enc, x, NULL, NULL, &ct), 0);
                size_t k = (size_t)ceil(fracs[fi] * (double)n);
                k = k < 1 ? 1 : k > n ? n : k;
                assert_true(ct.sparse && !ct.zstd && ct.dtype == FM_DT_F32);
                assert_int_equal(ct.idx_nbytes, 4 * k);
                assert_int_equal(ct.nbytes, 4 * k);
                for (size_t i = 0; i < n; i++)
                    ent[i] = (s_entry_t){fabs((double)x[i]), (uint32_t)i};
                qsort(ent, n, sizeof *ent, s_cmp_mag);
                for (size_t j = 0; j < k; j++)
                    ref[j] = ent[j].i;
                qsort(ref, k, sizeof *ref, s_cmp_u32);
                memcpy(got, ct.idx, 4 * k);
                for (size_t j = 0; j < k; j++) {
                    if (got[j] != ref[j])
                        fail_msg("n %zu frac %g pattern %d: idx[%zu] = %u, expected %u", n,
                                 fracs[fi], p, j, got[j], ref[j]);
                    float v;
                    memcpy(&v, (const unsigned char *)ct.data + 4 * j, 4);
                    assert_int_equal(s_bits(v), s_bits(x[ref[j]]));
                }
            }
            fm_codec_enc_destroy(&enc);
        }
        free(x);
        free(ref);
        free(got);
        free(ent);
        fm_model_destroy(&layout);
    }
}

/* Top-k of every value type, with and without zstd, through the wire: the entries sent are
 * within the bounds, the others 0; zstd gives the same values. */
static void test_topk_wire(void **state)
{
    (void)state;
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np), *outz = fm_tu_floats(np);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    uint32_t *idx = fm_tu_alloc(np, sizeof *idx);
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 7);
    s_delta(&rng, x, np);
    for (int d = 0; d < FM_DT_COUNT; d++)
        for (int z = 0; z < 2; z++) {
            fm_codec_config_t c = {.dtype = (fm_dtype_t)d, .topk = 0.4, .zstd_level = z ? 5 : 0};
            int err = 0;
            fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
            assert_non_null(enc);
            fm_rng_t r2;
            fm_rng_seed(&r2, 7, (uint64_t)d);
            assert_int_equal(fm_codec_enc_run(enc, x, NULL, &r2, coded), 0);
            float *o = z ? outz : out;
            unsigned char *frame = NULL;
            assert_int_equal(s_wire_keep(layout, coded, o, ts, &frame), 2);
            for (int v = 0; v < 3; v++) {
                const fm_view_t *view = fm_model_view(layout, v);
                const fm_wire_tensor_t *t = &ts->t[v];
                assert_true(t->enc.sparse && t->enc.zstd == z);
                if (!z) {
                    size_t k = t->enc.idx_nbytes / 4;
                    assert_int_equal(k, (size_t)ceil(0.4 * (double)view->numel));
                    memcpy(idx, t->enc.idx, 4 * k);
                    size_t j = 0;
                    for (size_t i = 0; i < view->numel; i++) {
                        float dec = o[view->offset + i];
                        if (j < k && idx[j] == i) {
                            s_bound((fm_dtype_t)d, x[view->offset + i], dec, t->enc.scale, i);
                            j++;
                        } else
                            assert_true(dec == 0.0f && !signbit(dec));
                    }
                }
            }
            if (z)
                assert_memory_equal(out, outz, np * sizeof(float));
            free(frame);
            fm_codec_enc_destroy(&enc);
        }
    free(idx);
    free(ts);
    free(x);
    free(out);
    free(outz);
    fm_model_destroy(&layout);
}

/* Top-k over the whole model (topk_model): the entries sent, read back through the wire
 * (with and without zstd), are exactly the k = clamp(ceil(frac np), 1, np) largest
 * magnitudes of the flat delta (ties: lower flat index), with their exact values, and every
 * other entry is 0; a tensor whose entries are all small sends none (an empty sparse tensor,
 * which the receiver takes). */
static void test_topk_model(void **state)
{
    (void)state;
    static const double fracs[] = {1e-9, 0.001, 0.01, 0.3, 1.0};
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np);
    uint8_t *want = fm_tu_alloc(np, 1);
    s_entry_t *ent = fm_tu_alloc(np, sizeof *ent);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    fm_rng_t rng;
    fm_rng_seed(&rng, 15, 9);
    int empty_seen = 0;
    for (size_t fi = 0; fi < sizeof fracs / sizeof *fracs; fi++)
        for (int p = 0; p < 4; p++)
            for (int small = 0; small < 2; small++)
                for (int z = 0; z < 2; z++) {
                    fm_codec_config_t c = {.dtype = FM_DT_F32,
                                           .topk = fracs[fi],
                                           .topk_model = 1,
                                           .zstd_level = z ? 3 : 0};
                    int err = 0;
                    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
                    assert_non_null(enc);
                    s_pattern(&rng, p, x, np);
                    if (small) /* "b" and "s" (after "w") far below everything in "w" */
                        for (size_t i = 6000; i < np; i++)
                            x[i] = 1e-30f * (float)(i - 5999);
                    size_t k = (size_t)ceil(fracs[fi] * (double)np);
                    k = k < 1 ? 1 : k > np ? np : k;
                    for (size_t i = 0; i < np; i++)
                        ent[i] = (s_entry_t){fabs((double)x[i]), (uint32_t)i};
                    qsort(ent, np, sizeof *ent, s_cmp_mag);
                    memset(want, 0, np);
                    for (size_t j = 0; j < k; j++)
                        want[ent[j].i] = 1;
                    assert_int_equal(fm_codec_enc_run(enc, x, NULL, NULL, coded), 0);
                    assert_int_equal(s_wire(layout, coded, out, ts), 2);
                    size_t sent = 0;
                    for (int v = 0; v < 3; v++) {
                        const fm_view_t *view = fm_model_view(layout, v);
                        size_t kv = 0;
                        for (size_t i = 0; i < view->numel; i++)
                            kv += want[view->offset + i];
                        if (!z)
                            assert_int_equal(ts->t[v].enc.idx_nbytes, 4 * kv);
                        empty_seen += kv == 0;
                        sent += kv;
                    }
                    assert_int_equal(sent, k);
                    for (size_t i = 0; i < np; i++) {
                        if (want[i] && s_bits(out[i]) != s_bits(x[i]))
                            fail_msg("frac %g pattern %d small %d zstd %d: entry %zu = %g, "
                                     "expected %g (sent)",
                                     fracs[fi], p, small, z, i, (double)out[i], (double)x[i]);
                        if (!want[i] && s_bits(out[i]) != 0)
                            fail_msg("frac %g pattern %d small %d zstd %d: entry %zu = %g, "
                                     "not sent",
                                     fracs[fi], p, small, z, i, (double)out[i]);
                    }
                    fm_codec_enc_destroy(&enc);
                }
    assert_true(empty_seen > 0); /* the empty tensor case was exercised */
    free(ts);
    free(ent);
    free(want);
    free(x);
    free(out);
    fm_model_destroy(&layout);
}

/* Error feedback over 40 steps, every value type, k per tensor and over the model: sum of
 * what the receiver decoded + the final residual == sum of the deltas. The encoder does e' =
 * fl(fl(e + x) - dec) for a sent entry and e' = fl(e + x) otherwise: each step adds at most two
 * float32 roundings, of 2^-24 |fl(e + x)| and 2^-24 |e'|, which the test adds up per entry from
 * the values it sees (fl(e + x) computed here the same way). The sums are kept in double (error
 * ~1e-16 relative: a slack of 1e-12 of the sum of magnitudes). */
static void test_error_feedback(void **state)
{
    (void)state;
    enum { STEPS = 40 };
    fm_model_t *layout = s_layout();
    size_t np = fm_model_nparams(layout);
    float *x = fm_tu_floats(np), *out = fm_tu_floats(np), *res = fm_tu_floats(np);
    double *sx = fm_tu_alloc(np, sizeof(double)), *sd = fm_tu_alloc(np, sizeof(double));
    double *tol = fm_tu_alloc(np, sizeof(double)), *mag = fm_tu_alloc(np, sizeof(double));
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_codec_tensor_t coded[3];
    for (int dm = 0; dm < 2 * FM_DT_COUNT; dm++) { /* every value type, each top-k scope */
        int d = dm / 2;
        fm_codec_config_t c = {.dtype = (fm_dtype_t)d,
                               .topk = 0.03,
                               .topk_model = dm % 2,
                               .error_feedback = 1,
                               .zstd_level = d == FM_DT_I8 ? 1 : 0};
        int err = 0;
        fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
        assert_non_null(enc);
        memset(res, 0, np * sizeof *res);
        memset(sx, 0, np * sizeof *sx);
        memset(sd, 0, np * sizeof *sd);
        memset(tol, 0, np * sizeof *tol);
        memset(mag, 0, np * sizeof *mag);
        fm_rng_t rng;
        fm_rng_seed(&rng, 15, 8 + (uint64_t)dm);
        size_t total_sent = 0;
        for (int step = 0; step < STEPS; step++) {
            for (size_t i = 0; i < np; i++) /* deltas of varied size, some entries biased */
                x[i] = (float)(0.01 * fm_rng_normal(&rng) + (i % 11 == 0 ? 0.003 : 0.0));
            float *acc = fm_tu_floats(np);
            for (size_t i = 0; i < np; i++)
                acc[i] = res[i] + x[i];
            assert_int_equal(fm_codec_enc_run(enc, x, res, &rng, coded), 0);
            assert_int_equal(s_wire(layout, coded, out, ts), 2);
            for (size_t i = 0; i < np; i++) {
                sx[i] += x[i];
                sd[i] += out[i];
                mag[i] += fabs((double)x[i]) + fabs((double)out[i]);
                tol[i] += 0x1p-24 * (fabs((double)acc[i]) + fabs((double)res[i]));
                total_sent += out[i] != 0.0f;
                if (out[i] == 0.0f) /* not sent (or sent as 0): the residual kept it all */
                    assert_true(s_bits(res[i]) == s_bits(acc[i]) || res[i] == acc[i]);
            }
            free(acc);
        }
        double worst = 0;
        for (size_t i = 0; i < np; i++) {
            double gap = fabs(sd[i] + (double)res[i] - sx[i]);
            double bound = tol[i] + 1e-12 * (mag[i] + fabs((double)res[i]));
            if (gap > bound)
                fail_msg("%s (scope %s): entry %zu: sent %.12g + residual %.12g != deltas %.12g "
                         "(gap %.3g, bound %.3g)",
                         fm_dtype_name((fm_dtype_t)d), dm % 2 ? "model" : "tensor", i, sd[i],
                         (double)res[i], sx[i], gap, bound);
            if (gap > worst)
                worst = gap;
        }
        assert_true(fm_tu_max_abs(res, np) > 0.0); /* k < n: something was held back */
        assert_true(total_sent > 0);
        fm_codec_enc_destroy(&enc);
    }
    free(ts);
    free(x);
    free(out);
    free(res);
    free(sx);
    free(sd);
    free(tol);
    free(mag);
    fm_model_destroy(&layout);
}

/* ---- raw float32 is version 1 ----------------------------------------------------------------
 */

static void test_raw_is_version1(void **state)
{
    (void)state;
    int err = 0;
    fm_model_t *layout = fm_model_new("mlp", &err);
    assert_non_null(layout);
    fm_model_init(layout, 3);
    size_t np = fm_model_nparams(layout);
    const float *p = fm_model_params_const(layout);
    fm_codec_tensor_t coded[FM_MAX_VIEWS];
    fm_codec_config_t c = {.dtype = FM_DT_F32};
    assert_true(fm_codec_config_is_raw(&c));
    fm_codec_enc_t *enc = fm_codec_enc_new(layout, &c, &err);
    assert_non_null(enc);
    assert_int_equal(fm_codec_enc_run(enc, p, NULL, NULL, coded), 0);
    for (int i = 0; i < fm_model_nviews(layout); i++)
        assert_true(fm_codec_is_raw(&coded[i]));
    fm_wire_update_t h = s_hdr();
    h.round = 5;
    fm_wire_buf_t a = FM_WIRE_BUF_INIT, b = FM_WIRE_BUF_INIT, cc = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_update(&h, layout, p, &a), 0);
    assert_int_equal(fm_wire_encode_update_coded(&h, layout, NULL, coded, &b), 0);
    assert_int_equal(fm_wire_encode_update_coded(&h, layout, p, NULL, &cc), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(a.len, cc.len);
    assert_memory_equal(a.data, cc.data, a.len);
    fm_wire_model_t mh = {.version = 9, .created = 1.5, .boot = 77};
    assert_int_equal(fm_wire_encode_model(&mh, layout, p, &a), 0);
    assert_int_equal(fm_wire_encode_model_coded(&mh, layout, NULL, coded, &b), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    /* and an encoded MODEL is version 2 and decodes within the F16 bound */
    fm_codec_config_t c16 = {.dtype = FM_DT_F16};
    fm_codec_enc_t *e16 = fm_codec_enc_new(layout, &c16, &err);
    assert_non_null(e16);
    assert_int_equal(fm_codec_enc_run(e16, p, NULL, NULL, coded), 0);
    assert_int_equal(fm_wire_encode_model_coded(&mh, layout, NULL, coded, &b), 0);
    fm_wire_model_t got;
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    fm_errmsg_t e = {{0}};
    float *out = fm_tu_floats(np);
    fm_tu_ok(fm_wire_decode_model(b.data, b.len, &got, ts, &e), &e);
    assert_int_equal(ts->version, 2);
    assert_int_equal(got.version, 9);
    fm_tu_ok(fm_wire_tensors_check(ts, layout, &e), &e);
    fm_tu_ok(fm_wire_tensors_copy(ts, layout, out, &e), &e);
    for (size_t i = 0; i < np; i++)
        s_bound(FM_DT_F16, p[i], out[i], 0, i);
    fm_tu_ok(fm_wire_decode_model(a.data, a.len, &got, ts, &e), &e);
    assert_int_equal(ts->version, 1);
    free(out);
    free(ts);
    fm_codec_enc_destroy(&enc);
    fm_codec_enc_destroy(&e16);
    fm_wire_buf_free(&a);
    fm_wire_buf_free(&b);
    fm_wire_buf_free(&cc);
    fm_model_destroy(&layout);
}

/* ---- malformed encodings ------------------------------------------------------------------- */

/* One tensor as a hand-packed frame writes it. */
typedef struct {
    const char *dtype; /* NULL: "F32" */
    const void *data;
    size_t nbytes;
    int scale; /* 0: no "scale"; 1: "scale" = scale_v (float64); 2: a string */
    double scale_v;
    bool idx; /* "idx" = ip[0..in) */
    const void *ip;
    size_t in;
    const char *comp; /* "comp" value, or NULL */
} td_t;

/* The layout of the malformed cases: "a" [4, 5], "b" [3], "c" [5000] (three blocks). */
static fm_model_t *s_mlayout(void)
{
    static const fm_spec_tensor_t t[] = {{"a", 2, {4, 5}}, {"b", 1, {3}}, {"c", 1, {5000}}};
    return s_spec(t, 3);
}

static void s_pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void s_pk_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, n ? p : "", n);
}

/* An UPDATE of protocol version v with tensor i of the layout written from td[i] (NULL:
 * raw F32 zeros); into an exact-size allocation *out (the caller frees it). */
static size_t s_frame(unsigned v, const fm_model_t *layout, const td_t *td, unsigned char **out)
{
    static const float zeros[5000];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 11);
    s_pk_str(&pk, "v");
    msgpack_pack_uint8(&pk, (uint8_t)v);
    s_pk_str(&pk, "t");
    s_pk_str(&pk, "UPDATE");
    s_pk_str(&pk, "id");
    s_pk_bin(&pk, "0123456789abcdef", FM_WIRE_ID_LEN);
    s_pk_str(&pk, "trainer");
    s_pk_str(&pk, "t-1");
    const char *ukeys[] = {"client", "base", "n", "steps", "loss", "secs"};
    for (int i = 0; i < 6; i++) {
        s_pk_str(&pk, ukeys[i]);
        msgpack_pack_uint32(&pk, 1);
    }
    s_pk_str(&pk, "tensors");
    int nv = fm_model_nviews(layout);
    msgpack_pack_array(&pk, (size_t)nv);
    for (int i = 0; i < nv; i++) {
        const fm_view_t *view = fm_model_view(layout, i);
        td_t raw = {.data = zeros, .nbytes = 4 * view->numel};
        const td_t *t = td && td[i].data ? &td[i] : &raw;
        msgpack_pack_map(&pk, 4 + (t->scale != 0) + t->idx + (t->comp != NULL));
        s_pk_str(&pk, "name");
        s_pk_str(&pk, view->name);
        s_pk_str(&pk, "dtype");
        s_pk_str(&pk, t->dtype ? t->dtype : "F32");
        s_pk_str(&pk, "shape");
        msgpack_pack_array(&pk, (size_t)view->ndim);
        for (int d = 0; d < view->ndim; d++)
            msgpack_pack_uint64(&pk, (uint64_t)view->shape[d]);
        s_pk_str(&pk, "data");
        s_pk_bin(&pk, t->data, t->nbytes);
        if (t->scale) {
            s_pk_str(&pk, "scale");
            if (t->scale == 1)
                msgpack_pack_double(&pk, t->scale_v);
            else
                s_pk_str(&pk, "1.0");
        }
        if (t->idx) {
            s_pk_str(&pk, "idx");
            s_pk_bin(&pk, t->ip, t->in);
        }
        if (t->comp) {
            s_pk_str(&pk, "comp");
            s_pk_str(&pk, t->comp);
        }
    }
    size_t n = sb.size;
    *out = fm_tu_exact(sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

enum { AT_DECODE, AT_CHECK, AT_READ, AT_NONE };

/* The frame of (v, td) fails at stage `at` with `code` and a message naming `needle` (AT_NONE:
 * it passes every stage). At AT_READ, fm_wire_tensors_copy and the block reader agree. */
static void s_expect(unsigned v, const td_t *td, int at, int code, const char *needle)
{
    fm_model_t *layout = s_mlayout();
    unsigned char *f = NULL;
    size_t n = s_frame(v, layout, td, &f);
    fm_wire_update_t u;
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    float *dst = fm_tu_floats(fm_model_nparams(layout));
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_decode_update(f, n, &u, ts, &e);
    if (at == AT_DECODE) {
        fm_tu_expect(rc, code, &e, needle);
        goto done;
    }
    fm_tu_ok(rc, &e);
    assert_int_equal(ts->version, v);
    rc = fm_wire_tensors_check(ts, layout, &e);
    if (at == AT_CHECK) {
        fm_tu_expect(rc, code, &e, needle);
        goto done;
    }
    fm_tu_ok(rc, &e);
    rc = fm_wire_tensors_copy(ts, layout, dst, &e);
    /* the block reader, tensor by tensor, finds the same first error */
    fm_codec_rd_t *rd = fm_tu_alloc(1, sizeof *rd);
    fm_errmsg_t e2 = {{0}};
    int rc2 = 0;
    for (int i = 0; i < ts->count && rc2 == 0; i++) {
        const fm_view_t *view = fm_model_find(layout, ts->t[i].name);
        if (fm_codec_is_raw(&ts->t[i].enc))
            continue;
        fm_codec_block_t b;
        rc2 = fm_codec_rd_open(rd, &ts->t[i].enc, view->numel, ts->t[i].name, &e2);
        while (rc2 == 0 && (rc2 = fm_codec_rd_next(rd, &b, &e2)) == 1)
            rc2 = 0;
    }
    fm_codec_rd_free(rd);
    free(rd);
    if (at == AT_READ) {
        fm_tu_expect(rc, code, &e, needle);
        if (code == FM_ENONFINITE) /* the block reader leaves finiteness to its caller */
            fm_tu_ok(rc2, &e2);
        else
            fm_tu_expect(rc2, code, &e2, needle);
    } else {
        fm_tu_ok(rc, &e);
        fm_tu_ok(rc2, &e2);
    }
done:
    free(dst);
    free(ts);
    free(f);
    fm_model_destroy(&layout);
}

/* Tensor "a" (20 entries) described by t, the others raw. */
static void s_expect_a(unsigned v, td_t t, int at, int code, const char *needle)
{
    td_t td[3] = {t, {0}, {0}};
    s_expect(v, td, at, code, needle);
}

static const uint16_t s_h20[32] = {0x3c00, 0x4000, 0xbc00}; /* halves (20 and more) */

/* Sparse F16 "a" with indices ix[0..k) (k values). */
static td_t s_sparse(const uint32_t *ix, size_t k)
{
    return (td_t){
        .dtype = "F16", .data = s_h20, .nbytes = 2 * k, .idx = true, .ip = ix, .in = 4 * k};
}

static void test_malformed_sparse(void **state)
{
    (void)state;
    static const uint32_t ok[] = {0, 3, 19}, range[] = {1, 20}, dup[] = {3, 3}, dec[] = {5, 2},
                          big[] = {0, 0xffffffffu};
    uint32_t all21[21];
    for (uint32_t i = 0; i < 21; i++)
        all21[i] = i;
    s_expect_a(2, s_sparse(ok, 3), AT_NONE, 0, NULL);
    s_expect_a(2, s_sparse(all21, 20), AT_NONE, 0, NULL); /* every entry: fine */
    s_expect_a(2, s_sparse(ok, 0), AT_NONE, 0, NULL);     /* no entry: fine */
    s_expect_a(2, s_sparse(range, 2), AT_READ, FM_EFORMAT, "idx[1] = 20 out of range");
    s_expect_a(2, s_sparse(big, 2), AT_READ, FM_EFORMAT, "out of range");
    s_expect_a(2, s_sparse(dup, 2), AT_READ, FM_EFORMAT, "idx[1] = 3 not above");
    s_expect_a(2, s_sparse(dec, 2), AT_READ, FM_EFORMAT, "idx[1] = 2 not above");
    td_t t = s_sparse(ok, 3);
    t.in = 7; /* not a multiple of 4 */
    s_expect_a(2, t, AT_CHECK, FM_EFORMAT, "not a multiple of 4");
    s_expect_a(2, s_sparse(all21, 21), AT_CHECK, FM_ERANGE, "21 indices for 20 entries");
    t = s_sparse(ok, 3);
    t.nbytes = 4; /* values for 2 of the 3 indices */
    s_expect_a(2, t, AT_CHECK, FM_EFORMAT, "4 data bytes for 3 indices");
    t.nbytes = 8;
    s_expect_a(2, t, AT_CHECK, FM_EFORMAT, "8 data bytes for 3 indices");
    /* dense sizes */
    td_t dn = {.dtype = "F16", .data = s_h20, .nbytes = 40};
    s_expect_a(2, dn, AT_NONE, 0, NULL);
    dn.nbytes = 38;
    s_expect_a(2, dn, AT_CHECK, FM_EFORMAT, "38 data bytes, expected 40");
    dn.nbytes = 40;
    dn.dtype = "BF16";
    s_expect_a(2, dn, AT_NONE, 0, NULL);
    dn.nbytes = 20; /* I8 size, BF16 dtype */
    s_expect_a(2, dn, AT_CHECK, FM_EFORMAT, "20 data bytes, expected 40");
    td_t raw = {.dtype = "F32", .data = s_h20, .nbytes = 40}; /* raw F32 of 10 floats */
    s_expect_a(2, raw, AT_CHECK, FM_ESHAPE, "40 data bytes, expected 80");
    td_t sp32 = {.dtype = "F32", .data = s_h20, .nbytes = 8, .idx = true, .ip = ok, .in = 12};
    s_expect_a(2, sp32, AT_CHECK, FM_EFORMAT, "8 data bytes for 3 indices");
}

/* Indices checked across block boundaries: c has 5000 entries; 2049 indices where
 * idx[2048] repeats idx[2047] (the first index of the second block). */
static void test_malformed_across_blocks(void **state)
{
    (void)state;
    enum { K = 2049 };
    uint32_t *ix = fm_tu_alloc(K, sizeof *ix);
    float *vals = fm_tu_floats(K);
    for (uint32_t i = 0; i < K; i++) {
        ix[i] = 2 * i;
        vals[i] = 1.0f;
    }
    td_t td[3] = {
        {0},
        {0},
        {.dtype = "F32", .data = vals, .nbytes = 4 * K, .idx = true, .ip = ix, .in = 4 * K}};
    s_expect(2, td, AT_NONE, 0, NULL);
    ix[2048] = ix[2047];
    s_expect(2, td, AT_READ, FM_EFORMAT, "idx[2048] = 4094 not above");
    ix[2048] = ix[2047] - 2;
    s_expect(2, td, AT_READ, FM_EFORMAT, "idx[2048] = 4092 not above");
    ix[2048] = 5000;
    s_expect(2, td, AT_READ, FM_EFORMAT, "idx[2048] = 5000 out of range");
    free(ix);
    free(vals);
}

static void test_malformed_scale(void **state)
{
    (void)state;
    static const int8_t q[20] = {1, -2, 3, 127, -127};
    td_t t = {.dtype = "I8", .data = q, .nbytes = 20, .scale = 1, .scale_v = 0.01};
    s_expect_a(2, t, AT_NONE, 0, NULL);
    t.scale_v = 0.0; /* every value 0: allowed */
    s_expect_a(2, t, AT_NONE, 0, NULL);
    t.scale_v = NAN;
    s_expect_a(2, t, AT_CHECK, FM_ERANGE, "scale nan");
    t.scale_v = INFINITY;
    s_expect_a(2, t, AT_CHECK, FM_ERANGE, "scale inf");
    t.scale_v = -INFINITY;
    s_expect_a(2, t, AT_CHECK, FM_ERANGE, "must be finite and >= 0");
    t.scale_v = -0.5;
    s_expect_a(2, t, AT_CHECK, FM_ERANGE, "scale -0.5");
    t.scale = 0;
    s_expect_a(2, t, AT_CHECK, FM_EFORMAT, "I8 without \"scale\"");
    t.scale = 2;
    s_expect_a(2, t, AT_DECODE, FM_EFORMAT, "scale");
    t.scale = 1; /* finite as a double, infinite as the float32 the values are made with */
    t.scale_v = 1e300;
    s_expect_a(2, t, AT_READ, FM_ENONFINITE, "'a'");
    t.scale_v = 0.01;
    t.nbytes = 19;
    s_expect_a(2, t, AT_CHECK, FM_EFORMAT, "19 data bytes, expected 20");
}

/* A zstd frame of src[0..n) into dst (cap), content size declared or not. */
static size_t s_zstd(const void *src, size_t n, unsigned char *dst, size_t cap, int declare)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_non_null(c);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, declare)));
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3)));
    size_t z = ZSTD_compress2(c, dst, cap, src, n);
    assert_false(ZSTD_isError(z));
    ZSTD_freeCCtx(c);
    return z;
}

/* Bytes of a zstd frame's header (magic, descriptor, window, dictionary id, content size:
 * RFC 8878 §3.1.1.1), computed here (ZSTD_frameHeaderSize is in the static-only API). */
static size_t s_zstd_header(const unsigned char *f)
{
    static const size_t did[4] = {0, 1, 2, 4}, fcs[4] = {0, 2, 4, 8};
    unsigned d = f[4];
    int single = (d >> 5) & 1;
    size_t fcs_n = (d >> 6) == 0 ? (size_t)single : fcs[d >> 6];
    return 5 + (size_t)!single + did[d & 3] + fcs_n;
}

static void test_malformed_zstd(void **state)
{
    (void)state;
    uint16_t h21[21];
    for (int i = 0; i < 21; i++)
        h21[i] = (uint16_t)(0x3c00 + i);
    unsigned char z[256], z2[512], zi[256], bad[512];
    size_t zn = s_zstd(h21, 40, z, sizeof z, 1);
    td_t t = {.dtype = "F16", .data = z, .nbytes = zn, .comp = "zstd"};
    s_expect_a(2, t, AT_NONE, 0, NULL);
    /* corrupt: the first block's type set to the reserved value 3 */
    size_t fh = s_zstd_header(z);
    assert_true(fh + 3 <= zn);
    memcpy(bad, z, zn);
    bad[fh] |= 0x06;
    t.data = bad;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "data is not exactly one zstd frame");
    /* corrupt content: a frame with a checksum, one byte of its block changed */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_non_null(cc);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1)));
    t.nbytes = ZSTD_compress2(cc, bad, sizeof bad, h21, 40);
    assert_false(ZSTD_isError(t.nbytes));
    ZSTD_freeCCtx(cc);
    s_expect_a(2, t, AT_NONE, 0, NULL);
    bad[s_zstd_header(bad) + 3 + 5] ^= 0x10;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "data: zstd");
    t.nbytes--; /* the checksum cut short */
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    /* truncated */
    t.data = z;
    t.nbytes = zn - 1;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    t.nbytes = fh + 1;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    /* two frames (20 + 20 bytes: together the right size), trailing garbage */
    size_t n1 = s_zstd(h21, 20, z2, sizeof z2, 1);
    size_t n2 = s_zstd(h21 + 10, 20, z2 + n1, sizeof z2 - n1, 1);
    t.data = z2;
    t.nbytes = n1 + n2;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    memcpy(bad, z, zn);
    memcpy(bad + zn, "xyz", 3);
    t.data = bad;
    t.nbytes = zn + 3;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    /* no content size */
    t.nbytes = s_zstd(h21, 40, bad, sizeof bad, 0);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "without a content size");
    /* content size too small and too large */
    t.nbytes = s_zstd(h21, 38, bad, sizeof bad, 1);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "zstd content of 38 bytes, expected 40");
    t.nbytes = s_zstd(h21, 42, bad, sizeof bad, 1);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "zstd content of 42 bytes, expected 40");
    /* a declared size that lies: 42 bytes in a frame whose header says 40 */
    t.nbytes = s_zstd(h21, 42, bad, sizeof bad, 1);
    unsigned fhd = bad[4];
    assert_true((fhd >> 6) == 0 && (fhd & 0x20) && (fhd & 3) == 0); /* 1-byte size at 5 */
    assert_int_equal(bad[5], 42);
    bad[5] = 40;
    assert_int_equal(ZSTD_getFrameContentSize(bad, t.nbytes), 40);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "data: zstd");
    /* uncompressed bytes where a frame should be */
    t.data = h21;
    t.nbytes = 40;
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "not exactly one zstd frame");
    /* unknown "comp" value */
    t.data = z;
    t.nbytes = zn;
    t.comp = "gzip";
    s_expect_a(2, t, AT_DECODE, FM_EFORMAT, "the only compression is zstd");
    t.comp = "ZSTD";
    s_expect_a(2, t, AT_DECODE, FM_EFORMAT, "the only compression is zstd");
    /* sparse + zstd: idx and data each a frame; idx of the wrong sizes */
    static const uint32_t ix[3] = {1, 4, 9};
    size_t zin = s_zstd(ix, 12, zi, sizeof zi, 1);
    t = (td_t){.dtype = "F16", .data = z, .comp = "zstd", .idx = true, .ip = zi, .in = zin};
    t.nbytes = s_zstd(h21, 6, z, sizeof z, 1);
    s_expect_a(2, t, AT_NONE, 0, NULL);
    t.nbytes = s_zstd(h21, 8, z, sizeof z, 1); /* 4 values for 3 indices */
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "data: zstd content of 8 bytes, expected 6");
    t.nbytes = s_zstd(h21, 6, z, sizeof z, 1);
    t.in = s_zstd(ix, 11, zi, sizeof zi, 1);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "idx: 11 bytes, not a multiple of 4");
    uint32_t many[21] = {0};
    t.in = s_zstd(many, 84, zi, sizeof zi, 1);
    s_expect_a(2, t, AT_READ, FM_ERANGE, "idx: 84 bytes");
    static const uint32_t dupz[3] = {1, 9, 9};
    t.in = s_zstd(dupz, 12, zi, sizeof zi, 1);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "idx[2] = 9 not above");
    t.in = s_zstd(ix, 12, zi, sizeof zi, 0);
    s_expect_a(2, t, AT_READ, FM_EFORMAT, "idx: zstd frame without a content size");
}

/* Flip every byte of a zstd frame in turn (and a sparse one's index frame): never a crash,
 * a leak or an unbounded read (ASan build); the outcome is success or a format error. */
static void test_zstd_flip_sweep(void **state)
{
    (void)state;
    fm_model_t *layout = s_mlayout();
    float *vals = fm_tu_floats(5000), *dst = fm_tu_floats(fm_model_nparams(layout));
    uint32_t *ix = fm_tu_alloc(1000, sizeof *ix);
    for (uint32_t i = 0; i < 1000; i++) {
        vals[i] = (float)(i % 17) * 0.25f;
        ix[i] = 5 * i;
    }
    size_t cap = ZSTD_compressBound(20000);
    unsigned char *zv = fm_tu_alloc(cap, 1), *zi = fm_tu_alloc(cap, 1);
    size_t nv = s_zstd(vals, 4000, zv, cap, 1), ni = s_zstd(ix, 4000, zi, cap, 1);
    fm_wire_tensors_t *ts = fm_tu_alloc(1, sizeof *ts);
    size_t outcomes[3] = {0};
    for (int which = 0; which < 2; which++) {
        unsigned char *p = which ? zi : zv;
        size_t n = which ? ni : nv;
        for (size_t pos = 0; pos < n; pos++) {
            p[pos] ^= 0xa5;
            td_t td[3] = {{0},
                          {0},
                          {.dtype = "F32",
                           .data = zv,
                           .nbytes = nv,
                           .idx = true,
                           .ip = zi,
                           .in = ni,
                           .comp = "zstd"}};
            unsigned char *f = NULL;
            size_t fl = s_frame(2, layout, td, &f);
            fm_wire_update_t u;
            fm_errmsg_t e = {{0}};
            fm_tu_ok(fm_wire_decode_update(f, fl, &u, ts, &e), &e);
            fm_tu_ok(fm_wire_tensors_check(ts, layout, &e), &e);
            int rc = fm_wire_tensors_copy(ts, layout, dst, &e);
            if (rc != 0 && rc != FM_EFORMAT && rc != FM_ERANGE && rc != FM_ENONFINITE)
                fail_msg("flip at %zu: %d %s", pos, rc, e.msg);
            if (rc)
                assert_true(e.msg[0] && !strchr(e.msg, '\n'));
            outcomes[rc == 0 ? 0 : rc == FM_EFORMAT ? 1 : 2]++;
            free(f);
            p[pos] ^= 0xa5;
        }
    }
    assert_true(outcomes[1] > 0); /* most flips are noticed */
    free(ts);
    free(zv);
    free(zi);
    free(ix);
    free(vals);
    free(dst);
    fm_model_destroy(&layout);
}

/* dtype and encoding keys against the frame's version. */
static void test_malformed_version_dtype(void **state)
{
    (void)state;
    static const uint32_t ok[] = {0, 3, 19};
    static const float f20[20] = {1.0f};
    static const int8_t q[20] = {1};
    /* an unknown dtype: version 2 */
    td_t t = {.dtype = "F64", .data = f20, .nbytes = 80};
    s_expect_a(2, t, AT_CHECK, FM_EDTYPE, "dtype 'F64'");
    t.dtype = "f16";
    s_expect_a(2, t, AT_CHECK, FM_EDTYPE, "dtype 'f16'");
    t.dtype = "I4";
    s_expect_a(2, t, AT_CHECK, FM_EDTYPE, "expected F32, F16, BF16 or I8");
    /* version 1: only raw F32 */
    s_expect_a(1, (td_t){.dtype = "F32", .data = f20, .nbytes = 80}, AT_NONE, 0, NULL);
    s_expect_a(1, (td_t){.dtype = "F16", .data = s_h20, .nbytes = 40}, AT_CHECK, FM_EDTYPE,
               "(protocol version 1)");
    s_expect_a(1, (td_t){.dtype = "I8", .data = q, .nbytes = 20, .scale = 1, .scale_v = 1},
               AT_CHECK, FM_EDTYPE, "(protocol version 1)");
    s_expect_a(1,
               (td_t){.dtype = "F32", .data = f20, .nbytes = 12, .idx = true, .ip = ok, .in = 12},
               AT_CHECK, FM_EFORMAT, "\"idx\" is an encoding of protocol version 2");
    s_expect_a(1, (td_t){.dtype = "F32", .data = f20, .nbytes = 80, .comp = "zstd"}, AT_CHECK,
               FM_EFORMAT, "\"comp\" is an encoding of protocol version 2");
    s_expect_a(1, (td_t){.dtype = "F32", .data = f20, .nbytes = 80, .scale = 1, .scale_v = 1},
               AT_CHECK, FM_EFORMAT, "\"scale\" is an encoding of protocol version 2");
    /* the same in version 2: fine ("scale" of a non-I8 tensor is ignored) */
    s_expect_a(2,
               (td_t){.dtype = "F32", .data = f20, .nbytes = 12, .idx = true, .ip = ok, .in = 12},
               AT_NONE, 0, NULL);
    s_expect_a(2, (td_t){.dtype = "F32", .data = f20, .nbytes = 80, .scale = 1, .scale_v = 1},
               AT_NONE, 0, NULL);
    /* versions that do not exist */
    s_expect_a(3, (td_t){.dtype = "F32", .data = f20, .nbytes = 80}, AT_DECODE, FM_EVERSION,
               "protocol version 3");
    s_expect_a(0, (td_t){.dtype = "F32", .data = f20, .nbytes = 80}, AT_DECODE, FM_EVERSION,
               "protocol version 0");
}

/* The config checks and names. */
static void test_config(void **state)
{
    (void)state;
    fm_errmsg_t e = {{0}};
    fm_codec_config_t c = {.dtype = FM_DT_I8, .topk = 0.01, .error_feedback = 1, .zstd_level = 3};
    fm_tu_ok(fm_codec_config_check(&c, &e), &e);
    char name[64];
    fm_codec_config_name(&c, name, sizeof name);
    assert_string_equal(name, "topk-0.01-tensor-int8-ef+zstd3");
    c.topk_model = 1;
    fm_codec_config_name(&c, name, sizeof name);
    assert_string_equal(name, "topk-0.01-int8-ef+zstd3");
    c.topk_model = 0;
    c.topk = 1.5;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "topk_fraction");
    c.topk = NAN;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "topk_fraction");
    c.topk = 0;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "error_feedback");
    c.error_feedback = 0;
    c.topk_model = 1;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "topk_scope");
    c.topk_model = 0;
    c.zstd_level = 20;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "zstd_level");
    c.zstd_level = 0;
    c.dtype = FM_DT_COUNT;
    fm_tu_expect(fm_codec_config_check(&c, &e), FM_EARG, &e, "value type");
    fm_model_t *layout = s_layout();
    int err = 0;
    assert_null(fm_codec_enc_new(layout, &c, &err));
    assert_int_equal(err, FM_EARG);
    fm_dtype_t d;
    assert_int_equal(fm_dtype_parse("BF16", &d), 0);
    assert_int_equal(d, FM_DT_BF16);
    assert_int_equal(fm_dtype_parse("bf16", &d), FM_EDTYPE);
    fm_model_destroy(&layout);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_patterns),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dense_each_dtype),
        cmocka_unit_test(test_f16_out_of_range),
        cmocka_unit_test(test_int8_unbiased),
        cmocka_unit_test(test_int8_tiny),
        cmocka_unit_test(test_topk_selection),
        cmocka_unit_test(test_topk_wire),
        cmocka_unit_test(test_topk_model),
        cmocka_unit_test(test_error_feedback),
        cmocka_unit_test(test_raw_is_version1),
        cmocka_unit_test(test_malformed_sparse),
        cmocka_unit_test(test_malformed_across_blocks),
        cmocka_unit_test(test_malformed_scale),
        cmocka_unit_test(test_malformed_zstd),
        cmocka_unit_test(test_zstd_flip_sweep),
        cmocka_unit_test(test_malformed_version_dtype),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
