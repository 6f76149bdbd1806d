/* fm_robust: robust aggregation of one buffer of K client updates, which are stored whole.
 *
 * The rules (fm_robust_rule_t; the enum and its names are owned here). fm_fedbuff holds the
 * mean in one streaming accumulator and stays what runs for the mean; this module stores
 * the K deltas and computes the other rules from them:
 *   mean               fm_fedbuff's weighted mean (not computed here)
 *   median             coordinate-wise median (Yin et al. 2018, "Byzantine-Robust
 *                      Distributed Learning: Towards Optimal Statistical Rates")
 *   trimmed_mean       coordinate-wise trimmed mean (Yin et al. 2018): per parameter, drop the
 *                      b = floor(beta K) largest and the b smallest values, average the rest
 *   norm_bounded_mean  clip every update to norm M, then average (Sun et al. 2019, "Can You
 *                      Really Backdoor Federated Learning?"), with M = the median of the
 *                      buffer's update norms: no bound to tune, and the updates at or below
 *                      the median pass unchanged. (A fixed M, Sun et al.'s own setting, is the
 *                      per-update screen of fm_screen with action clip before the mean.)
 *
 * How staleness and sample weights enter. Update i (delta_i, tau_i, screen scale f_i: 1, or
 * the clip factor of fm_screen) is stored as
 *   u_i = (float)(s(tau_i) f_i) * delta_i        (one float multiply per value)
 * i.e. the staleness discount s (fm_fedbuff.h) scales the update before the rule, as it
 * scales it in the mean: a stale update counts with a shorter step. Over the K stored
 * u_1..u_K, per parameter j:
 *   median             delta_bar_j = median_i u_ij (mean of the two middle values, K even)
 *   trimmed_mean       delta_bar_j = mean of u_ij over ranks b..K-b-1, b = floor(beta K)
 *                      (beta = trim_fraction in [0, 0.5): at least one value remains)
 *   norm_bounded_mean  delta_bar_j = (1/K) sum_i min(1, M / ||u_i||) u_ij,
 *                      M = median_i ||u_i|| (norms in double)
 * Sample counts do NOT weight these rules: each update counts once, whatever "n" it
 * reports, so no client can outvote the others by claiming many samples (num_samples is the
 * sender's word). With beta = 0 the trimmed mean is (1/K) sum_i u_i: FedBuff's unweighted
 * mean. K is the number of updates in the buffer when it is taken (a sync round closed at
 * its deadline may hold fewer than the capacity).
 *
 * Precision. Sums and the two-value median average are taken in double and rounded once to
 * float; the median itself is one of the stored floats (K odd). Stored values are whatever
 * the caller folds: screen updates first (finite, norm within FM_SCREEN_NORM_CEILING), so
 * the order of floats is total.
 *
 * Memory: K x nparams floats for the rows (e.g. 10 cnn updates of 1,199,882 parameters:
 * 48 MB; 10 mlp updates of 199,210: 8.0 MB) plus a tile of FM_ROBUST_TILE x K floats, a
 * tile of FM_ROBUST_TILE doubles and 2K doubles (fm_robust_bytes). The whole is allocated by
 * fm_robust_new; pages of rows are touched as updates arrive. Nothing is allocated later.
 * The cost per buffer: the median and the trimmed mean select per parameter (expected O(K)
 * with quickselect over a transposed tile, so rows are read sequentially); the norm-bounded
 * mean reads the rows twice (norms, then the sum). Measured in docs/BENCHMARKS.md.
 *
 * One message, many tensors, as in fm_fedbuff: fm_robust_begin, fm_robust_fold_span per
 * tensor (any alignment), fm_robust_end. A parameter no span covers gets a zero value from
 * that update (the row is cleared at begin). Not thread-safe. */
#ifndef FM_ROBUST_H
#define FM_ROBUST_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_fedbuff.h"

#define FM_ROBUST_TILE 64 /* parameters per transposed tile */

typedef enum {
    FM_ROBUST_MEAN,
    FM_ROBUST_MEDIAN,
    FM_ROBUST_TRIMMED_MEAN,
    FM_ROBUST_NORM_BOUNDED_MEAN
} fm_robust_rule_t;

/* "mean", "median", "trimmed_mean", "norm_bounded_mean" (static string); NULL out of range
 * (the config table's enum names). */
const char *fm_robust_rule_name(int rule);

/* Updates trimmed at each end of every parameter by the trimmed mean of `count` updates:
 * floor(beta count), computed so that beta in [0, 0.5) leaves at least one. */
int fm_robust_trimmed(double beta, int count);

/* Bytes fm_robust_new allocates for k updates of nparams floats (SIZE_MAX on overflow). */
size_t fm_robust_bytes(size_t nparams, int k);

typedef struct fm_robust fm_robust_t;

/* A buffer of up to k (>= 1) updates of nparams floats aggregated by `rule` (not
 * FM_ROBUST_MEAN: that is fm_fedbuff), with staleness function *s (copied) and, for the
 * trimmed mean, beta = trim_fraction in [0, 0.5). NULL with *err (may be NULL) = FM_EARG
 * (rule, k, s or beta) or -ENOMEM (k x nparams does not fit). Caller owns it:
 * fm_robust_destroy. */
fm_robust_t *fm_robust_new(fm_robust_rule_t rule, size_t nparams, int k, const fm_staleness_t *s,
                           double trim_fraction, int *err);

/* Free and NULL *p; idempotent. */
void fm_robust_destroy(fm_robust_t **p);

fm_robust_rule_t fm_robust_rule(const fm_robust_t *r);
int fm_robust_k(const fm_robust_t *r);

/* Updates stored in the current buffer (since new, take or reset); full when it is k. */
int fm_robust_count(const fm_robust_t *r);
int fm_robust_full(const fm_robust_t *r);

/* Start storing one update of staleness tau, scaled by `scale` (the screen's clip factor,
 * finite and > 0; 1 = unchanged). 0, or FM_ERANGE when the buffer holds k updates already or
 * scale is not finite and > 0 (nothing changed). An open update is a programmer error
 * (FM_ASSERT). */
int fm_robust_begin(fm_robust_t *r, uint64_t tau, double scale);

/* Store numel floats of the open update for parameters [offset, offset + numel) (src: any
 * alignment; row[offset + j] = w src[j], w = (float)(s(tau) scale)). 0, or FM_ERANGE
 * (nothing stored) when the span does not fit. Requires an open update (FM_ASSERT). */
int fm_robust_fold_span(fm_robust_t *r, size_t offset, size_t numel, const void *src);

/* The stored row's entries offset + idx[j] = w * vals[j] for j < n, each idx[j] < span (a
 * sparse tensor [offset, offset + span), block by block; the rest of the row stays 0).
 * Returns 0, or FM_ERANGE (nothing stored) as fm_fedbuff_fold_scatter. Requires an open
 * update (FM_ASSERT). */
int fm_robust_fold_scatter(fm_robust_t *r, size_t offset, size_t span, size_t n,
                           const uint32_t *idx, const float *vals);

/* Close the open update: it counts. Requires an open update (FM_ASSERT). */
void fm_robust_end(fm_robust_t *r);

/* begin + one span of nparams floats + end. 0 or FM_ERANGE as fm_robust_begin. */
int fm_robust_add(fm_robust_t *r, const void *delta, uint64_t tau, double scale);

/* Write delta_bar (the rule above, over the updates stored) to out (nparams floats, not
 * overlapping the buffer) and start a new buffer. 0, or FM_ERANGE when it is empty (out
 * untouched). An open update is a programmer error (FM_ASSERT). */
int fm_robust_take(fm_robust_t *r, float *out);

/* Drop the current buffer, including an open update. Statistics are kept. */
void fm_robust_reset(fm_robust_t *r);

/* Statistics since fm_robust_new, as fm_fedbuff's (updates stored, buffers taken,
 * staleness). */
void fm_robust_stats(const fm_robust_t *r, fm_fedbuff_stats_t *out);

#endif
