/* fm_signvote: the robust learning rate of Ozdayi, Kantarcioglu and Gel (AAAI 2021,
 * "Defending against Backdoors in Federated Learning with Robust Learning Rate"): a
 * per-parameter vote on the sign of a buffer's updates that reverses the server's step on the
 * parameters where the updates do not agree.
 *
 * Over the n updates u_1..u_n of one buffer of capacity K, per parameter j:
 *   S_j = sum_i sign(u_ij)                 (sign 0 = 0; a parameter an update leaves out,
 *                                           e.g. by a sparse encoding, votes 0)
 *   step_j = delta_bar_j                   when |S_j| >= theta n (theta n to 1e-9, so
 *                                           0.4 x 10 is 4)
 *   step_j = -delta_bar_j                  otherwise, in a full buffer (n = K)
 *   step_j = 0                             otherwise, in a partial buffer (n < K)
 * with delta_bar the buffer's aggregate (any rule) and theta = the threshold in [0, 1]
 * ([aggregator] sign_threshold; 0 keeps every step). A backdoor is taught by the few updates
 * that push parameters on which the honest updates do not agree, so the step that would
 * learn the trigger is taken backwards. The paper's setting for Fashion-MNIST, theta 4 of 10
 * agents, is threshold 0.4. A partial buffer (the async aggregator's last one at a clean
 * stop, a sync round closed at its deadline) votes with too few signs for the reversal the
 * threshold was set for (3 updates: only unanimity keeps a step, and a reversed step is a
 * whole mean of 3), so there the steps without agreement are dropped, not reversed. The vote
 * counts each update once, whatever its weight (staleness, samples, clip): signs do not
 * change under a positive scale.
 *
 * One message, many tensors, as fm_fedbuff: fm_signvote_fold_span / _fold_scatter per tensor
 * of an update, fm_signvote_end when it is whole; fm_signvote_apply at the aggregation.
 * Memory: one int32 per parameter (cnn 1,199,882 parameters: 4.8 MB), allocated by
 * fm_signvote_new. Not thread-safe. */
#ifndef FM_SIGNVOTE_H
#define FM_SIGNVOTE_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

typedef struct fm_signvote fm_signvote_t;

/* A vote over nparams parameters (>= 1) for buffers of capacity k (>= 1) with threshold in
 * [0, 1]. NULL with *err (may be NULL) = FM_EARG (nparams or k 0, threshold out of range or
 * not finite) or -ENOMEM. Caller owns it: fm_signvote_destroy. */
fm_signvote_t *fm_signvote_new(size_t nparams, int k, double threshold, int *err);

/* Free and NULL *p; idempotent. */
void fm_signvote_destroy(fm_signvote_t **p);

double fm_signvote_threshold(const fm_signvote_t *v);

/* Add the signs of numel floats src (any alignment) for parameters [offset, offset + numel)
 * of the update being folded. 0, or FM_ERANGE (nothing added) when the span does not fit. */
int fm_signvote_fold_span(fm_signvote_t *v, size_t offset, size_t numel, const void *src);

/* The signs of vals[j] at offset + idx[j] for j < n, each idx[j] < span (a sparse tensor
 * [offset, offset + span)). 0, or FM_ERANGE (nothing added) when a span or index does not
 * fit. */
int fm_signvote_fold_scatter(fm_signvote_t *v, size_t offset, size_t span, size_t n,
                             const uint32_t *idx, const float *vals);

/* The update being folded is whole: it counts in K. */
void fm_signvote_end(fm_signvote_t *v);

/* Updates voted since the last apply or reset. */
int fm_signvote_count(const fm_signvote_t *v);

/* Overrule delta[j] (nparams floats) where |S_j| < threshold n, n = the updates voted:
 * reversed when n >= k, set to 0 when n < k; then start a new vote. Returns the number of
 * parameters overruled (0 with nothing voted: delta untouched). */
size_t fm_signvote_apply(fm_signvote_t *v, float *delta);

/* Drop the current vote (a dropped buffer). */
void fm_signvote_reset(fm_signvote_t *v);

#endif
