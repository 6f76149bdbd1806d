/* fm_sa_codec: a member's update as fixed point in Z_2^32, and the cohort sum back to reals
 * (docs/SECAGG.md, "Encoding").
 *
 * A member clips its update delta to L2 norm C (scaled by min(1, C / ||delta||), in double),
 * multiplies it by its FedAvg weight w in (0, 1], and appends w as the last coordinate, so
 * every coordinate x has |x| <= max(C, 1). Each x is encoded as e = round(x S) reduced mod
 * 2^32 (two's complement: a negative value wraps; all ring arithmetic is uint32_t, whose
 * wrap is defined), with S = 2^s. The sum of K encodings decodes exactly, as the signed
 * 32-bit value of the sum divided by S, as long as the true sum of the rounded values lies in
 * [-2^31, 2^31): a rounded |e| is below max(C, 1) S + 1, so the codec requires
 *     K (max(C, 1) S + 1) <= 2^31        (the no-overflow condition; fm_sa_codec_check)
 * i.e. K max(C, 1) S < 2^31 with one unit of rounding per member. Overflow cannot be seen
 * after masking, so it must hold by construction: clip, then encode.
 *
 * Rounding: to nearest (|error| <= 1/(2S) per value, so <= n/(2S) per coordinate of a sum
 * of n), or stochastic (floor or ceil with the probability that makes it unbiased;
 * |error| < 1/S per value) from a local fm_rng the caller seeds, never the mask PRG.
 *
 * No allocation, no I/O. */
#ifndef FM_SA_CODEC_H
#define FM_SA_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_rng.h"

typedef struct {
    uint32_t k;  /* how many encodings are summed (the cohort size K), >= 1 */
    double clip; /* C: L2 bound of an update, finite, > 0 */
    int s;       /* the scale is S = 2^s, 0 <= s <= 30 */
} fm_sa_codec_t;

/* The scale exponent to use for K members and clip C: s = floor(log2(2^31 / (K max(C,1))))
 * - 1 (one bit of margin below the no-overflow condition). -1 when even s = 0 would not
 * fit (K max(C, 1) too large) or the arguments are invalid (k == 0, clip not finite > 0). */
int fm_sa_codec_scale(uint32_t k, double clip);

/* The largest K that clip C and scale 2^s allow: floor(2^31 / (max(C, 1) 2^s + 1)). 0 for
 * invalid arguments. */
uint32_t fm_sa_codec_kmax(double clip, int s);

/* 0 if the fields are in range and the no-overflow condition holds, else FM_EARG (a field
 * out of range) or FM_ERANGE ("K 41 x (max(C,1) 4 x S 2^25 + 1) = ... > 2^31: the sum of
 * 41 members could wrap; the largest scale for this K and C is 2^23") with one line in `e`
 * (may be NULL). */
int fm_sa_codec_check(const fm_sa_codec_t *c, fm_errmsg_t *e);

/* The encoding of one value x: round(x S) mod 2^32, to nearest when rng is NULL, else
 * stochastic from rng. Needs |x| S < 2^31 (FM_ASSERT: the callers clip first); does NOT
 * clip (a test shows the wrap of an unclipped sum with it). */
uint32_t fm_sa_codec_encode_value(const fm_sa_codec_t *c, double x, fm_rng_t *rng);

/* Encode one member's update: out[0..n) = enc(w f delta[i]) with f = min(1, C/||delta||),
 * out[n] = enc(w); out has n + 1 words. rng as in fm_sa_codec_encode_value. 0, or FM_EARG
 * (codec invalid: fm_sa_codec_check; w not in (0, 1]), FM_ENONFINITE (a value of delta is
 * NaN or infinite); out untouched on error. One line in `e` (may be NULL). */
int fm_sa_codec_encode(const fm_sa_codec_t *c, const float *delta, size_t n, double w,
                       fm_rng_t *rng, uint32_t *out, fm_errmsg_t *e);

/* out[i] = signed32(sum[i]) / S for i < m (exact in double). The decoded sum of a cohort:
 * out[0..m-1) is sum_u w_u f_u delta_u, out[m-1] the summed weights. */
void fm_sa_codec_decode(const fm_sa_codec_t *c, const uint32_t *sum, size_t m, double *out);

#endif
