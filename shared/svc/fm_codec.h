/* fm_codec: the encodings of one tensor's values on the wire (docs/PROTOCOL.md §2.1.2).
 *
 * A tensor of numel float32 values travels
 *   dense   as numel values of element type `dtype`, or
 *   sparse  as k indices (uint32 little-endian, strictly increasing, each < numel) and the k
 *           values at them, in `dtype`; every other entry is 0 (top-k sparsification),
 * with `dtype` one of (all little-endian):
 *   F32   IEEE binary32, exact
 *   F16   IEEE binary16, round to nearest even: |dec - x| <= 2^-11 |x| for |x| >= 2^-14,
 *         <= 2^-25 below; the encoder sends a tensor with any |x| > 65504 (beyond F16) as F32
 *   BF16  the top 16 bits of binary32, round to nearest even: |dec - x| <= 2^-8 |x|
 *   I8    q in -127..127 with one per-tensor `scale` (finite, >= 0): value = (float)q *
 *         (float)scale, one float32 rounding. The encoder takes scale = max|x| / 127 and
 *         rounds stochastically, q = floor(x / scale + u), u ~ U[0,1): E[dec] = x (unbiased)
 *         and |dec - x| < scale (+ the float32 rounding of the product)
 * and, on top of either, optionally zstd: the value bytes (and the index bytes) are each ONE
 * zstd frame that declares its content size, which must be exactly what the tensor needs.
 *
 * Encoding (a trainer): fm_codec_enc_t turns a flat delta into one fm_codec_tensor_t per
 * view of a layout. Top-k keeps, per tensor, the k = ceil(fraction x numel) (at least 1)
 * entries of largest magnitude (ties: the lower index), or (topk_model) the k =
 * ceil(fraction x nparams) largest of the whole flat delta, each tensor sending its share
 * (possibly none); either is found by a radix select over the float bit patterns (3
 * passes, no sort). Error feedback (top-k only): a per-client residual
 * e is added to the delta before selection and keeps what was not sent, e' = (x + e) -
 * dec(sent), so the sum of what was sent over steps plus the residual is the sum of the
 * deltas (tests/unit/codec_test.c proves it over steps).
 *
 * Decoding (an aggregator, a trainer or the evaluator): fm_codec_check validates what can be
 * seen without reading values (dtype, scale, sizes of uncompressed bins); fm_codec_rd_t then
 * reads a tensor in blocks of at most FM_CODEC_BLOCK values, so a receiver folds them into
 * its own accumulator without materialising a float32 copy of the update (zstd is streamed
 * through a small window, never decompressed whole). Index order and range, zstd frames and
 * their sizes are checked as the blocks are read: a receiver reads every tensor once (e.g.
 * for the norm) before it changes anything.
 *
 * Errors (one line in `e` naming the tensor by the caller's `what`): FM_EDTYPE (unknown
 * dtype), FM_EFORMAT (sizes that disagree, indices not increasing or out of range, a zstd
 * frame that is corrupt, not exactly one frame, or of the wrong content size), FM_ERANGE
 * (scale not finite >= 0, more indices than numel), -ENOMEM. */
#ifndef FM_CODEC_H
#define FM_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_model.h"
#include "fm_rng.h"

typedef enum { FM_DT_F32 = 0, FM_DT_F16, FM_DT_BF16, FM_DT_I8, FM_DT_COUNT } fm_dtype_t;

/* "F32", "F16", "BF16", "I8" (static); "?" for anything else. */
const char *fm_dtype_name(fm_dtype_t d);
/* The dtype called `s` into *out: 0, or FM_EDTYPE. */
int fm_dtype_parse(const char *s, fm_dtype_t *out);
/* The config name of a value type: "fp32", "fp16", "bf16", "int8" (static); "?" else. */
const char *fm_codec_value_name(fm_dtype_t d);

/* Bytes per value: 4, 2, 2, 1. */
size_t fm_dtype_size(fm_dtype_t d);

/* Scalar conversions (round to nearest even; NaN stays NaN, overflow gives infinity). */
uint16_t fm_codec_f16_from_f32(float x);
float fm_codec_f16_to_f32(uint16_t h);
uint16_t fm_codec_bf16_from_f32(float x);
float fm_codec_bf16_to_f32(uint16_t h);

/* One encoded tensor as it travels. The pointers are borrowed (the encoder's scratch, or a
 * received frame: unaligned). */
typedef struct {
    fm_dtype_t dtype;  /* element type of the values */
    double scale;      /* I8 only: value = (float)q * (float)scale */
    int sparse;        /* 1: idx/idx_nbytes hold the indices */
    int zstd;          /* 1: data (and idx) are each one zstd frame */
    const void *data;  /* the values (or their zstd frame) */
    size_t nbytes;     /* bytes at data */
    const void *idx;   /* sparse: the indices (or their zstd frame) */
    size_t idx_nbytes; /* bytes at idx */
} fm_codec_tensor_t;

/* 1 if t is dense, uncompressed F32 (data is numel raw floats: read it in place). */
int fm_codec_is_raw(const fm_codec_tensor_t *t);

/* Label of an encoding for counters ("fp32", "fp16", "bf16", "int8", "topk-fp32",
 * "int8+zstd", ...) into out (cap >= 32). */
void fm_codec_label(const fm_codec_tensor_t *t, char *out, size_t cap);

/* ---- encoder ------------------------------------------------------------------------------ */

typedef struct {
    fm_dtype_t dtype;   /* values' type */
    double topk;        /* 0: dense; (0, 1]: sparse, fraction of the entries sent */
    int topk_model;     /* top-k scope: 0 = k per tensor (ceil(topk x its entries), >= 1 each),
                         * 1 = one k over the whole model (ceil(topk x nparams)), shared out
                         * by magnitude: a tensor may then send none */
    int error_feedback; /* top-k: keep and add back what was not sent (a residual) */
    int zstd_level;     /* 0: off; 1..19: compress the bins with zstd at this level */
} fm_codec_config_t;

/* 0 if c is valid, else FM_EARG with one line (dtype out of range, topk not in [0, 1],
 * error_feedback without topk, zstd_level not in 0..19). */
int fm_codec_config_check(const fm_codec_config_t *c, fm_errmsg_t *e);

/* 1 if c sends every tensor dense F32 uncompressed (the protocol version 1 update). */
int fm_codec_config_is_raw(const fm_codec_config_t *c);

/* Short name of c ("fp32", "int8", "topk-0.01-fp32-ef+zstd3" (model scope),
 * "topk-0.01-tensor-fp32" (k per tensor), ...) into out (cap >= 48). */
void fm_codec_config_name(const fm_codec_config_t *c, char *out, size_t cap);

typedef struct fm_codec_enc fm_codec_enc_t;

/* An encoder for deltas of `layout` (borrowed: must outlive it) with config *c (copied).
 * Owns scratch of 4 bytes per parameter (8 with top-k: values and indices), plus zstd's
 * context and output bound; nothing is allocated per call. NULL with *err = FM_EARG (bad config)
 * or -ENOMEM. The caller owns it: fm_codec_enc_destroy. One thread at a time. */
fm_codec_enc_t *fm_codec_enc_new(const fm_model_t *layout, const fm_codec_config_t *c, int *err);

/* Free it and set *p to NULL; idempotent. */
void fm_codec_enc_destroy(fm_codec_enc_t **p);

/* Encode `delta` (fm_model_nparams(layout) floats) into out[i] for view i of the layout.
 * residual: with error feedback, the client's residual (nparams floats, zero for a new
 * client), updated in place as described above; NULL otherwise (required iff the config has
 * error feedback: FM_ASSERT). rng: I8's stochastic rounding (any other dtype: may be NULL).
 * out[] points into the encoder's scratch, valid until the next call or destroy.
 * Errors: -ENOMEM (zstd could not allocate); out is then unusable but residual is unchanged
 * only if the error comes before the first tensor (callers drop the update and may keep the
 * residual: it stays a sum of unsent deltas either way). */
int fm_codec_enc_run(fm_codec_enc_t *enc, const float *delta, float *residual, fm_rng_t *rng,
                     fm_codec_tensor_t *out);

/* ---- decoder ------------------------------------------------------------------------------ */

#define FM_CODEC_BLOCK 2048 /* values per block read */

/* Check what can be checked of t without reading its values, for a tensor of numel entries:
 * the dtype, I8's scale (finite, >= 0; others ignore it), and, when not compressed, that the
 * byte counts agree (dense: numel values; sparse: idx a multiple of 4 bytes, at most numel
 * indices, as many values). `what` names the tensor in the message. */
int fm_codec_check(const fm_codec_tensor_t *t, size_t numel, const char *what, fm_errmsg_t *e);

/* One block: n values; dense: for entries first .. first + n - 1 (idx NULL); sparse: for
 * entries idx[0..n) (increasing, < numel). Pointers into the reader, valid until the next
 * read. */
typedef struct {
    size_t n;
    size_t first;
    const uint32_t *idx;
    const float *vals;
} fm_codec_block_t;

/* A reader. Zero-initialise it (FM_CODEC_RD_INIT); it creates its zstd contexts on first
 * use and keeps them: fm_codec_rd_free. About 24 KB: reuse one. */
typedef struct {
    void *zv, *zi; /* ZSTD_DStream for values and indices, created on demand */
    const fm_codec_tensor_t *t;
    size_t numel, k, done;
    long long last; /* last index read (sparse), -1 at the start */
    const char *what;
    struct fm_codec_src {
        const unsigned char *p;
        size_t n, pos; /* raw: bytes at p, read so far; zstd: compressed input */
        void *z;       /* the stream (zstd), else NULL */
        int ended;     /* zstd: the frame's end (and checksum) was seen */
    } sv, si;
    float vals[FM_CODEC_BLOCK];
    uint32_t idx[FM_CODEC_BLOCK];
    unsigned char raw[4 * FM_CODEC_BLOCK];
} fm_codec_rd_t;

#define FM_CODEC_RD_INIT                                                                         \
    {                                                                                            \
        0                                                                                        \
    }

/* Free the reader's zstd contexts; idempotent. */
void fm_codec_rd_free(fm_codec_rd_t *r);

/* Start reading t (fm_codec_check passed) as a tensor of numel entries; `what` (borrowed)
 * names it in errors. Errors: FM_EFORMAT (a zstd bin that is not one frame declaring the
 * right content size), -ENOMEM. */
int fm_codec_rd_open(fm_codec_rd_t *r, const fm_codec_tensor_t *t, size_t numel, const char *what,
                     fm_errmsg_t *e);

/* Read the next block into *b: 1 (a block), 0 (the end: every value was read and a zstd
 * frame ended exactly there), or an error (FM_EFORMAT: indices not increasing or out of
 * range, a corrupt or short zstd frame). */
int fm_codec_rd_next(fm_codec_rd_t *r, fm_codec_block_t *b, fm_errmsg_t *e);

/* Decode t (fm_codec_check passed) into dst[0..numel): every value (sparse: zeros except at
 * the indices). 0 or an fm_codec_rd_next error (dst then partly written). */
int fm_codec_decode(fm_codec_rd_t *r, const fm_codec_tensor_t *t, size_t numel, const char *what,
                    float *dst, fm_errmsg_t *e);

#endif
