/* fm_dp: client-level differential privacy of one aggregation step (DP-FedAvg, McMahan et
 * al. 2018; for FedBuff buffers, DP-FedBuff). Maths on flat buffers, no I/O: the caller
 * supplies the random bytes (the aggregator: the operating system's CSPRNG via libsodium;
 * tests: a fixed stream).
 *
 * The mechanism, per step (a buffer, or a sync round):
 *   1. every update's delta is clipped to L2 norm C: it is folded scaled by
 *      f_i = fm_dp_clip_factor(||delta_i||, C) = min(1, C / ||delta_i||), so ||f_i delta_i|| <= C
 *      (the aggregator re-clips; what a trainer declares is never trusted);
 *   2. its weight is its staleness discount s(tau_i) in (0, 1] and nothing else (no sample
 *      counts: with them one client's weight, hence its influence, would be unbounded), so
 *      one client's update changes the sum S = sum_i s(tau_i) f_i delta_i by at most C;
 *      the caller admits at most one update per client per step;
 *   3. Gaussian noise N(0, sigma^2 C^2) per coordinate is added once to S;
 *   4. the result is divided by a FIXED denominator K (the configured buffer size or cohort,
 *      never the number of updates that arrived, which depends on the data of who took
 *      part): delta_bar = (S + noise) / K, then the server optimiser steps as usual.
 * The step is then the Gaussian mechanism with sensitivity C and noise multiplier sigma,
 * accounted by fm_rdp (with the sampling rate q the deployment can honestly claim).
 *
 * Noise. Each N(0, 1) draw is the mean of two Box-Muller normals scaled by sqrt(2) (Opacus'
 * secure mode, after Holohan & Braghin 2021: it blurs the gaps in the set of doubles a
 * single transform can produce), each Box-Muller pair from 2 x 53 random bits. Noise is
 * computed in double and added to the float sum once (the float result is rounded once). */
#ifndef FM_DP_H
#define FM_DP_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

/* A source of random bytes: fill buf[0..len). Must not fail (the aggregator's source,
 * libsodium's randombytes_buf, cannot). */
typedef void (*fm_dp_bytes_fn)(void *ctx, void *buf, size_t len);

typedef struct {
    double clip;  /* C: L2 bound of each update, finite, > 0 */
    double sigma; /* noise multiplier: noise std = sigma * C; finite, >= 0 (0: clipping only) */
    int k;        /* the fixed denominator K >= 1 */
} fm_dp_config_t;

/* 0 if every field is in range, else FM_EARG with one line in `e` (may be NULL). */
int fm_dp_check(const fm_dp_config_t *c, fm_errmsg_t *e);

/* min(1, clip / norm): the scale that bounds an update of L2 norm `norm` by clip; 1 for
 * norm <= clip (including 0). norm must be finite and >= 0. */
double fm_dp_clip_factor(double norm, double clip);

/* Turn the buffer's mean into the private step, in place: mean[0..n) holds
 * S / count (fm_fedbuff_take with weight_by_samples off: the clipped, discounted sum over
 * the `count` >= 0 updates folded, divided by count; ignored when count is 0); on return it
 * holds (S + N(0, sigma^2 clip^2 I)) / k. Random bytes from bytes(ctx, ...). 0, or FM_EARG
 * (invalid config, count < 0; nothing changed). */
int fm_dp_privatize(float *mean, size_t n, int count, const fm_dp_config_t *c,
                    fm_dp_bytes_fn bytes, void *ctx);

/* n standard normal draws (the construction above) into out[0..n). */
void fm_dp_normals(double *out, size_t n, fm_dp_bytes_fn bytes, void *ctx);

/* ---- adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021) -------------------------
 *
 * C follows the gamma-quantile of the update norms. Per step, each folded update i has the bit
 * b_i = 1 when its norm was within C (not clipped); the step also releases the centred count
 * sum_i (b_i - 1/2) + N(0, sigma_b^2) (centred, one client moves it by 1/2: TF Privacy's
 * QuantileEstimatorQuery does the same), whose post-processing
 *   b~ = clamp((sum_i (b_i - 1/2) + N(0, sigma_b^2)) / K + 1/2, 0, 1)
 * estimates the fraction of unclipped updates (with K updates, sum_i b_i / K plus noise), and
 *   C <- C exp(-eta (b~ - gamma))          (geometric update; clamped to [FM_DP_CLIP_MIN,
 *                                            FM_DP_CLIP_MAX])
 * for the next step. Cost: the vector sum (sensitivity C) gets noise multiplier
 *   z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)
 * so that the pair (vector, count) is the Gaussian mechanism of multiplier z, what the
 * accountant charges (the paper's Theorem 1; docs/PRIVACY.md derives it). Needs 2 sigma_b > z. */

#define FM_DP_CLIP_MIN 1e-12 /* the range C stays in (that of [privacy] clip_norm) */
#define FM_DP_CLIP_MAX 1e12

typedef struct {
    double quantile;    /* gamma: the target fraction of unclipped updates, in (0, 1) */
    double lr;          /* eta_C: the geometric learning rate, finite, > 0 */
    double count_sigma; /* sigma_b: noise std of the centred count, finite, > z / 2 */
} fm_dp_adapt_t;

/* 0 if *a is in range for the accounted noise multiplier z > 0 (z_delta finite), else
 * FM_EARG with one line in `e` (may be NULL). */
int fm_dp_adapt_check(double z, const fm_dp_adapt_t *a, fm_errmsg_t *e);

/* z_delta = (z^-2 - (2 count_sigma)^-2)^(-1/2), the vector's noise multiplier; NAN unless
 * z > 0 and 2 count_sigma > z (and the result finite). */
double fm_dp_adapt_sigma(double z, double count_sigma);

/* b~: the noisy fraction of unclipped updates, clamp((unclipped - count / 2 + noise) / k +
 * 1 / 2, 0, 1), with noise = sigma_b x N(0, 1) drawn by the caller; 0 <= unclipped <= count,
 * k >= 1. */
double fm_dp_adapt_fraction(int unclipped, int count, int k, double noise);

/* The next C: clip exp(-lr (frac - quantile)), clamped to [FM_DP_CLIP_MIN, FM_DP_CLIP_MAX]. */
double fm_dp_adapt_clip(double clip, double frac, const fm_dp_adapt_t *a);

#endif
