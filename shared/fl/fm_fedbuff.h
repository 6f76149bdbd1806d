/* fm_fedbuff: the FedBuff buffer of K client updates, folded into one accumulator.
 *
 * FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation"):
 * the aggregator folds client deltas into a buffer as they arrive and, once K of them are in,
 * hands the buffered mean to the server optimiser (fm_server_opt) and starts a new buffer.
 * The K deltas are never stored: each is folded into ONE accumulator of nparams floats as it
 * arrives, so memory is nparams floats whatever K is, and nothing is allocated after
 * fm_fedbuff_new.
 *
 * Staleness. An update trained from model version base_version and folded while the global
 * model is at version current_version has staleness tau = current_version - base_version
 * (>= 0; the caller computes it). Its discount s(tau) is one of
 *   constant     s(tau) = 1
 *   polynomial   s(tau) = (1 + tau)^(-a)                      (FedBuff uses a = 0.5)
 *   hinge        s(tau) = 1                  if tau <= b
 *                         1 / (a (tau - b) + 1)   otherwise   (Xie et al. 2019, FedAsync)
 * Whether tau is too large to be accepted at all (max_staleness) is the aggregator's
 * validation, not this module's: every tau is folded with its discount.
 *
 * The buffered mean. Update i (delta_i, tau_i, num_samples_i) has the sample weight
 *   c_i = num_samples_i   if weight_by_samples
 *         1               otherwise
 * and the fold weight w_i = s(tau_i) * c_i. fm_fedbuff_take returns
 *
 *   delta_bar = ( sum_i s(tau_i) c_i delta_i ) / ( sum_i c_i )
 *
 * i.e. the sample weights are normalised (FedAvg's weighted mean) while the staleness discount
 * is NOT renormalised: stale updates shrink the step instead of only tilting its direction.
 * With weight_by_samples off this is FedBuff's (1/K) sum_i s(tau_i) delta_i exactly (K = the
 * number of updates folded). With every s = 1 it is the FedAvg mean.
 *
 * Precision. s(tau_i) and w_i are computed in double and rounded once to float for the fold
 * acc[j] += w_i * delta_i[j], computed in float (one fused pass, vectorised). The float
 * accumulator keeps the ingest pass at memory bandwidth and the buffer at nparams floats; its
 * error after K folds is bounded by about K * 2^-24 * sum_i |w_i delta_i[j]| per element
 * (~6e-8 K relative when the terms do not cancel). sum_i c_i is kept in double and the
 * division is one double multiply per element, rounded once to float.
 *
 * Non-finite input. The fold does not inspect values: a NaN or infinity folded in poisons the
 * buffer (and a begun update cannot be undone). Check an update first with
 * fm_fedbuff_span_finite if it must be rejected on its own; fm_server_opt_apply refuses a
 * non-finite delta_bar in any case.
 *
 * Overflow. Finite values can still overflow the float accumulator (deltas near FLT_MAX, or
 * huge sample weights). fm_fedbuff_begin_ex takes the update's L2 norm (in double, before
 * any scaling) and keeps the buffer's mass = sum_i w_i ||delta_i||, an upper bound of every
 * |acc_j|; an update that would take it above FM_FEDBUFF_ACC_LIMIT is refused before
 * anything is folded, so one update can never make the buffer non-finite.
 *
 * Clipping. fm_fedbuff_begin_ex also takes a scale f_i in (0, 1] (the per-update norm
 * screen's clip factor, fm_screen): the fold weight becomes w_i = s(tau_i) c_i f_i, computed
 * in double as (s c) f and rounded once, so f = 1 gives exactly fm_fedbuff_begin's weight.
 * The denominator keeps c_i (clipping shortens an update, it does not reweigh it).
 *
 * One message, many tensors. Wire tensors arrive as separate (possibly unaligned) blobs:
 *   fm_fedbuff_begin(b, tau, n);  fm_fedbuff_fold_span(b, off, numel, src) per tensor;
 *   fm_fedbuff_end(b);
 * folds one update without first copying it into a contiguous buffer. Sources are read with
 * memcpy per float (compiled to unaligned vector loads: as fast as an aligned float pointer),
 * so any alignment is fine. A parameter no span covers receives a zero delta from that update.
 * Validate the whole message (shapes, lengths, finiteness) before fm_fedbuff_begin: a fold
 * cannot be rolled back; fm_fedbuff_reset (dropping the whole buffer) is the only way out.
 *
 * Not thread-safe: one buffer is driven by one thread. */
#ifndef FM_FEDBUFF_H
#define FM_FEDBUFF_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

typedef enum {
    FM_STALENESS_CONSTANT,
    FM_STALENESS_POLYNOMIAL,
    FM_STALENESS_HINGE
} fm_staleness_kind_t;

/* A staleness function. a and b as in the formulas above; fields a kind does not use are
 * ignored (constant: a, b; polynomial: b). */
typedef struct {
    fm_staleness_kind_t kind;
    double a; /* polynomial exponent / hinge slope: finite, > 0 */
    double b; /* hinge threshold: finite, >= 0 */
} fm_staleness_t;

/* Fill *s from a kind name ("constant", "polynomial", "hinge") and its parameters, validated
 * as fm_staleness_check does. 0, or FM_EARG with one line in `e` naming the kind or
 * parameter; *s is only written on success. */
int fm_staleness_parse(fm_staleness_t *s, const char *kind, double a, double b, fm_errmsg_t *e);

/* Validate a staleness function: 0, or FM_EARG with one line in `e` (may be NULL). */
int fm_staleness_check(const fm_staleness_t *s, fm_errmsg_t *e);

/* s(tau) in (0, 1] (it may underflow to 0 for astronomically large tau). s must be valid. */
double fm_staleness_weight(const fm_staleness_t *s, uint64_t tau);

/* "constant", "polynomial" or "hinge" (static string). */
const char *fm_staleness_name(fm_staleness_kind_t kind);

/* Running statistics since fm_fedbuff_new, for the summary. An update counts at
 * fm_fedbuff_end, whether its buffer is later taken or reset; take and reset do not clear
 * them. Mean staleness = staleness_sum / updates (when updates > 0). */
typedef struct {
    uint64_t updates;       /* updates folded (fm_fedbuff_end / fm_fedbuff_add) */
    uint64_t takes;         /* buffers taken (fm_fedbuff_take that returned 0) */
    double staleness_sum;   /* sum of tau over those updates (exact up to 2^53) */
    uint64_t staleness_max; /* largest tau folded, 0 if none */
} fm_fedbuff_stats_t;

typedef struct fm_fedbuff fm_fedbuff_t;

/* A buffer for updates of nparams floats that is full after k updates (k >= 1), with
 * staleness function *s (copied) and sample weighting on (weight_by_samples != 0) or off.
 * Memory: one accumulator of nparams floats (64-byte aligned) plus a fixed-size struct,
 * independent of k. NULL with *err (may be NULL) = FM_EARG (k < 1 or an invalid *s),
 * or -ENOMEM. Caller owns it: fm_fedbuff_destroy. */
fm_fedbuff_t *fm_fedbuff_new(size_t nparams, int k, const fm_staleness_t *s,
                             int weight_by_samples, int *err);

/* Free the buffer and set *p to NULL; idempotent (NULL or *p NULL: no-op). */
void fm_fedbuff_destroy(fm_fedbuff_t **p);

size_t fm_fedbuff_nparams(const fm_fedbuff_t *b);
int fm_fedbuff_k(const fm_fedbuff_t *b);

/* Updates folded into the current buffer (since new, take or reset). */
int fm_fedbuff_count(const fm_fedbuff_t *b);

/* 1 if count >= k. Advisory: the buffer accepts more updates when full (the mean formula
 * holds for any count); the aggregator takes it when full. */
int fm_fedbuff_full(const fm_fedbuff_t *b);

/* Start folding one update of staleness tau trained on num_samples samples. Returns 0, or
 * FM_ERANGE (nothing changed) when weight_by_samples is on and num_samples is 0, or when the
 * count would overflow an int. Calling it while an update is open is a programmer error
 * (FM_ASSERT). */
int fm_fedbuff_begin(fm_fedbuff_t *b, uint64_t tau, uint64_t num_samples);

#define FM_FEDBUFF_ACC_LIMIT (0.25 * 3.40282346638528859812e+38) /* FLT_MAX / 4 */

/* fm_fedbuff_begin with the update's delta scaled by `scale` (finite, > 0; 1 = unchanged) and
 * its L2 norm `norm` (>= 0, of the unscaled delta) declared for the overflow guard (above).
 * Returns 0; FM_ERANGE as fm_fedbuff_begin, or when scale is not finite and > 0;
 * FM_ENONFINITE when the fold could overflow the accumulator (mass + w norm >
 * FM_FEDBUFF_ACC_LIMIT, or norm not finite). Nothing changed on error. fm_fedbuff_begin is
 * this with scale 1 and norm 0 (no guard: for input already bounded). */
int fm_fedbuff_begin_ex(fm_fedbuff_t *b, uint64_t tau, uint64_t num_samples, double scale,
                        double norm);

/* Fold numel floats of the open update's delta for parameters [offset, offset + numel):
 * acc[offset + j] += w * src[j]. src is numel native-endian float32 values at any alignment
 * (read with memcpy; it need not be a float object), and must not overlap the accumulator.
 * Returns 0, or FM_ERANGE (nothing folded) when the span does not fit in nparams. Spans may
 * come in any order; a span folded twice counts twice. Requires an open update (FM_ASSERT). */
int fm_fedbuff_fold_span(fm_fedbuff_t *b, size_t offset, size_t numel, const void *src);

/* Fold n entries of the open update's delta given by index: acc[offset + idx[j]] += w *
 * vals[j] for j < n, each idx[j] < span (the tensor [offset, offset + span) they belong to).
 * A sparse (top-k) tensor is folded this way block by block; indices repeated count twice
 * (the wire decoder refuses them). Returns 0, or FM_ERANGE (nothing folded) when the tensor
 * does not fit in nparams or an index is >= span. Requires an open update (FM_ASSERT). */
int fm_fedbuff_fold_scatter(fm_fedbuff_t *b, size_t offset, size_t span, size_t n,
                            const uint32_t *idx, const float *vals);

/* Close the open update: it now counts (count + 1, its c_i joins the denominator, stats).
 * Requires an open update (FM_ASSERT). */
void fm_fedbuff_end(fm_fedbuff_t *b);

/* begin + one span over all nparams floats of delta (any alignment) + end. Returns 0 or
 * FM_ERANGE as fm_fedbuff_begin (nothing changed). */
int fm_fedbuff_add(fm_fedbuff_t *b, const void *delta, uint64_t tau, uint64_t num_samples);

/* Write delta_bar (the formula above) to mean_delta_out (nparams floats, must not overlap
 * anything the buffer owns) and reset the buffer for the next K updates. Returns 0, or
 * FM_ERANGE when no update has been folded since the last take/reset (out untouched).
 * Calling it while an update is open is a programmer error (FM_ASSERT). */
int fm_fedbuff_take(fm_fedbuff_t *b, float *mean_delta_out);

/* Drop the current buffer, including an open update: accumulator zeroed, count 0.
 * The statistics are kept. */
void fm_fedbuff_reset(fm_fedbuff_t *b);

/* Statistics since fm_fedbuff_new (see fm_fedbuff_stats_t). */
void fm_fedbuff_stats(const fm_fedbuff_t *b, fm_fedbuff_stats_t *out);

/* 1 if all numel float32 values at src (any alignment) are finite, else 0. The read-only
 * check an aggregator runs over an update's tensors before fm_fedbuff_begin. */
int fm_fedbuff_span_finite(const void *src, size_t numel);

#endif
