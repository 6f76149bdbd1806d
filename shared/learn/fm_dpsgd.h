/* fm_dpsgd: sample-level differentially private SGD (Abadi et al. 2016), the local training
 * loop of a client that trains with DP-SGD (`fedmq train --dp-*`, trainers with
 * [trainer] dp_sgd = true).
 *
 * One step:
 *   1. Poisson sampling: each of the n examples joins independently with probability q
 *      (uniforms from the caller's random bytes); the realised batch size b varies, its
 *      mean is q n;
 *   2. per-example clipping: each joined example's own gradient g_i, over ALL parameters,
 *      is scaled by min(1, C / ||g_i||) and the results summed (fm_engine_clipped_sum, in
 *      pieces of at most fm_engine_max_batch samples), so one example changes the sum by at
 *      most C;
 *   3. Gaussian noise N(0, sigma^2 C^2) per coordinate added once to the sum (the caller's
 *      normals), in double, rounded to float once;
 *   4. the result divided by the EXPECTED batch size q n (fixed, never the realised b, which
 *      depends on who joined), then the optimiser steps (fm_optim: momentum, weight decay,
 *      FedProx and its global-norm clipping act on the private gradient: post-processing).
 * An epoch is round(1 / q) steps (at least 1), so it processes about n samples; a run is
 * `epochs` epochs. Every step is one application of the Poisson-subsampled Gaussian
 * mechanism with (q, sigma): the caller accounts for them (fm_rdp in shared/fl, which this
 * layer does not see).
 *
 * Randomness: the sampling and the noise protect the examples, so they come from the caller
 * (the trainer: libsodium's CSPRNG through fm_random and fm_dp_normals; tests: a fixed
 * stream); only dropout masks (not private) come from the seeded fm_rng. */
#ifndef FM_DPSGD_H
#define FM_DPSGD_H

#include <stddef.h>
#include <stdint.h>

#include "fm_engine.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_train.h"

/* Fill buf[0..len) with random bytes (must not fail). The signature of fm_dp_bytes_fn. */
typedef void (*fm_dpsgd_bytes_fn)(void *ctx, void *buf, size_t len);
/* n independent N(0, 1) draws into out[0..n) (must not fail). */
typedef void (*fm_dpsgd_normals_fn)(void *ctx, double *out, size_t n);

/* The private randomness, borrowed for the call; ctx is passed to both. */
typedef struct {
    fm_dpsgd_bytes_fn bytes;     /* Poisson sampling */
    fm_dpsgd_normals_fn normals; /* the noise (not called when sigma = 0) */
    void *ctx;
} fm_dpsgd_rand_t;

typedef struct {
    double clip;         /* C: per-example L2 bound, finite, > 0 */
    double sigma;        /* noise multiplier: noise std sigma C; finite, >= 0 (0: no privacy) */
    double q;            /* sampling rate, 0 < q <= 1 */
    int epochs;          /* >= 1; steps = epochs * fm_dpsgd_steps_per_epoch(q) */
    fm_clip_mode_t mode; /* FM_CLIP_FAST (default) or FM_CLIP_EXACT (the reference) */
    uint64_t seed;       /* dropout masks only */
} fm_dpsgd_config_t;

/* What one step did, for tests and progress (borrowed during the callback). */
typedef struct {
    uint64_t step;       /* 0-based, over the run */
    uint32_t batch;      /* realised batch size b */
    uint32_t clipped;    /* examples of the batch scaled down */
    const uint32_t *idx; /* the b examples (sample indices into x) */
    const float *grad;   /* the private gradient (sum + noise) / (q n) the optimiser took;
                          * fm_optim may have modified it in place (prox term, clip_norm) */
} fm_dpsgd_step_t;

/* Called after each optimiser step; return non-zero to stop the run. */
typedef int (*fm_dpsgd_step_fn)(void *arg, const fm_dpsgd_step_t *s);

typedef struct {
    fm_train_epoch_fn on_epoch; /* after each epoch (as fm_train_run), may be NULL */
    void *epoch_arg;
    fm_dpsgd_step_fn on_step; /* after each step, may be NULL */
    void *step_arg;
} fm_dpsgd_hooks_t;

typedef struct {
    fm_train_result_t train; /* loss: mean over the sampled examples of the last epoch;
                              * steps; samples: sum of the realised batch sizes; seconds */
    uint64_t clipped;        /* examples scaled down by the clipping, over the run */
} fm_dpsgd_result_t;

/* Steps per epoch at rate q: round(1 / q), at least 1 (q must be in (0, 1]). */
uint64_t fm_dpsgd_steps_per_epoch(double q);

/* 0 if every field is in range, else FM_EARG with one line in `e` (may be NULL) naming the
 * field, e.g. "DP-SGD clip = 0: must be finite and > 0". */
int fm_dpsgd_check(const fm_dpsgd_config_t *c, fm_errmsg_t *e);

/* Poisson sampling of one step: each of idx[0..n) (NULL: 0..n-1) joins with probability q,
 * independently, from 8 random bytes each (a 53-bit uniform u, joined when u < q). The joined
 * ones go to out[0..b) in order; returns b. */
uint32_t fm_dpsgd_sample(const fm_dpsgd_rand_t *r, double q, const uint32_t *idx, uint32_t n,
                         uint32_t *out);

/* Train `m` in place with DP-SGD on samples idx[0..n) of (x, y) (idx NULL: 0..n-1); the
 * optimiser's momentum is reset first; w_global (may be NULL) is the FedProx anchor. Errors:
 * FM_EARG (bad config, n == 0), -ENOMEM, FM_ENONFINITE (the loss became NaN/inf: training
 * stops). *out holds what was done also on error. */
int fm_dpsgd_run(fm_engine_t *e, fm_optim_t *o, fm_model_t *m, const float *x, const uint8_t *y,
                 const uint32_t *idx, uint32_t n, const fm_dpsgd_config_t *cfg,
                 const fm_dpsgd_rand_t *rand, const float *w_global,
                 const fm_dpsgd_hooks_t *hooks, fm_dpsgd_result_t *out);

#endif
