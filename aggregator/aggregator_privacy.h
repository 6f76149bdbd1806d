/* agg_privacy: client-level differential privacy of the aggregator's steps ([privacy] mode
 * = client): the noise of each step (fm_dp), the budget spent so far (fm_rdp) and the
 * decision to make no more versions when the next one would exceed privacy.target_epsilon.
 *
 * One step = one buffer (async) or one round (sync) taken through the server optimiser.
 * What the other modules guarantee before a step reaches agg_privacy_step (docs/PRIVACY.md):
 * every update folded was clipped to L2 norm clip_norm (the ingest's screen, set by
 * agg_policy_screen_config), weighted by its staleness discount in (0, 1] only (no sample
 * counts: fm_cfg_check refuses weight_by_samples with privacy), and at most one update per
 * client is in a step (the ingest's `repeat` rejection, the sync cohort). So one client
 * changes a step's sum by at most C, and the step adds N(0, sigma^2 C^2) per coordinate and
 * divides by the fixed K: the Gaussian mechanism of noise multiplier sigma.
 *
 * Accounting. Every step is accounted at sampling rate q = 1 (no amplification by
 * sampling): the bound holds whatever the clients' participation pattern, since any client
 * may be in every step. The one exception is sync rounds with [federation] sampling =
 * poisson (fm_cfg_sample_rate): each client joins a round by its own secret coin of
 * probability q = clients_per_round / num_clients, and every round is a step (even one
 * without updates), so each step is the Poisson-subsampled Gaussian mechanism at q. A step is
 * accounted when its noise is drawn (also when the server step then refuses the result: the noisy
 * sum was computed from the clients' data).
 *
 * Adaptive clipping ([privacy] adaptive_clip; fm_dp.h, Andrew et al. 2021). C is then the
 * current clip, starting at clip_norm: after each step (agg_privacy_step) the caller passes
 * the number of that step's folded updates that were not clipped to agg_privacy_adapt, which
 * releases their centred count with noise N(0, sigma_b^2) and moves C towards the target
 * quantile of the norms; the caller then sets the screen's bound to the new C
 * (agg_privacy_clip). The vector noise is z_delta C with z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2
 * and z = noise_multiplier, so the step (vector and count together) is the Gaussian mechanism
 * of multiplier z: the accountant charges z, as without adaptive clipping.
 *
 * Durable state: the RDP of every order and the step count, as a blob saved in the same
 * checkpoint transaction as the model it describes (agg_state: "agg.privacy"), so a resume
 * never forgets spent budget; with adaptive clipping, C in a second blob of the same
 * transaction ("agg.clip", agg_privacy_save_clip). With privacy on, the server checkpoints
 * every version before publishing it (a version whose cost is not durable is never
 * published).
 *
 * Not thread-safe. */
#ifndef AGG_PRIVACY_H
#define AGG_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "fm_cfg.h"
#include "fm_dp.h"
#include "fm_err.h"
#include "fm_metrics.h"
#include "fm_rdp.h"
#include "fm_stats.h"

/* Bytes of the checkpoint blob (fm_rdp_encode: the rdp per order, steps, delta, conversion). */
#define AGG_PRIVACY_BLOB_LEN FM_RDP_BLOB_LEN
/* Bytes of the adaptive clip's blob: magic "FMCLIP1\0", then C (f64 little-endian). */
#define AGG_PRIVACY_CLIP_LEN 16

typedef struct agg_privacy agg_privacy_t;

/* The privacy of cfg->privacy for steps of `k` updates (the fixed denominator: the buffer
 * size, or the sync cohort), or NULL with *err = 0 when privacy.mode is none. NULL with
 * *err = FM_EARG (parameters out of range), -EIO (libsodium cannot start: no noise source) or
 * -ENOMEM, and one line in `e`. Caller owns it: agg_privacy_destroy. */
agg_privacy_t *agg_privacy_new(const fm_config_t *cfg, int k, int *err, fm_errmsg_t *e);

/* Free and NULL *p; idempotent. */
void agg_privacy_destroy(agg_privacy_t **p);

/* 1 when one more step keeps epsilon within privacy.target_epsilon (always, without a
 * budget); 0 when it would exceed it. *eps_next (may be NULL) = epsilon after that step. */
int agg_privacy_admits(const agg_privacy_t *p, double *eps_next);

/* The step: mean[0..n) holds the buffer's mean of `count` updates (agg_ingest_take); on
 * return the private step (sum + noise) / k (fm_dp_privatize: noise std sigma C, or z_delta C
 * with adaptive clipping, C the current clip), and the step is accounted.
 * 0, or FM_EARG (count < 0; nothing changed). */
int agg_privacy_step(agg_privacy_t *p, float *mean, size_t n, int count);

/* Adaptive clipping, after agg_privacy_step: `unclipped` of the step's `count` folded updates
 * were within C (0 <= unclipped <= count). Draws the count's noise, moves C (fm_dp_adapt_*).
 * *frac (may be NULL) = the noisy unclipped fraction b~ it used. Nothing (and *frac NAN)
 * without adaptive clipping. */
void agg_privacy_adapt(agg_privacy_t *p, int count, int unclipped, double *frac);

/* The current clip C (clip_norm without adaptive clipping). */
double agg_privacy_clip(const agg_privacy_t *p);

/* Epsilon spent so far (at privacy.delta, privacy.conversion); 0 before the first step. */
double agg_privacy_epsilon(const agg_privacy_t *p);

/* Steps accounted so far. */
uint64_t agg_privacy_steps(const agg_privacy_t *p);

/* Account `steps` steps whose record was lost (versions lost to a checkpoint fallback or a
 * reset: they were published, so their cost was spent), at the configured sigma. */
void agg_privacy_charge(agg_privacy_t *p, uint64_t steps);

/* Mark the budget spent (the server made no version because of it): stats and metric. */
void agg_privacy_set_exhausted(agg_privacy_t *p);
int agg_privacy_exhausted(const agg_privacy_t *p);

/* One line for the start-up log (C, sigma, K, delta, target, steps the budget allows). */
void agg_privacy_describe(const agg_privacy_t *p, char *out, size_t cap);

/* The durable state as the checkpoint blob, out[AGG_PRIVACY_BLOB_LEN]. */
void agg_privacy_save(const agg_privacy_t *p, uint8_t out[AGG_PRIVACY_BLOB_LEN]);

/* Take the spent budget of a checkpoint blob (its steps and rdp; delta and conversion are
 * the config's). 0, or FM_EFORMAT (fm_rdp_decode) with one line in `e`: nothing changed. */
int agg_privacy_load(agg_privacy_t *p, const void *blob, size_t len, fm_errmsg_t *e);

/* Adaptive clipping: C as the checkpoint blob "agg.clip" into out[AGG_PRIVACY_CLIP_LEN]; the
 * bytes written, 0 without adaptive clipping (no blob). */
size_t agg_privacy_save_clip(const agg_privacy_t *p, uint8_t out[AGG_PRIVACY_CLIP_LEN]);

/* Adaptive clipping: take C from a checkpoint blob. 0, or FM_EFORMAT (wrong length or magic,
 * C not finite or outside [FM_DP_CLIP_MIN, FM_DP_CLIP_MAX]) with one line in `e`: nothing
 * changed. Without adaptive clipping: 0, nothing changed (C stays clip_norm). */
int agg_privacy_load_clip(agg_privacy_t *p, const void *blob, size_t len, fm_errmsg_t *e);

/* 1 when adaptive clipping is on. */
int agg_privacy_adaptive(const agg_privacy_t *p);

/* stats.json: privacy, privacy_epsilon, privacy_delta, privacy_target_epsilon,
 * privacy_steps, privacy_exhausted, privacy_clip_norm. p may be NULL (privacy off: nothing
 * set). */
void agg_privacy_stats(const agg_privacy_t *p, fm_stats_t *st);

/* Register fedmq_privacy_epsilon, fedmq_privacy_target_epsilon, fedmq_privacy_steps_total,
 * fedmq_privacy_budget_exhausted and fedmq_privacy_clip_norm in `m` (may be NULL: nothing).
 * 0, or -ENOMEM. */
int agg_privacy_metrics(agg_privacy_t *p, fm_metrics_t *m);

#endif
