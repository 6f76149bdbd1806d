/* agg_async: the policy of mode = async (agg_policy_t, aggregator_policy.h): FedBuff.
 *
 * Every update within max_staleness is folded with the staleness discount of [aggregator]
 * staleness / staleness_a / staleness_b and, if weight_by_samples, its sample count; a full
 * buffer of K = buffer_k updates (clients_per_round when buffer_k is 0) makes a version,
 * which is published at once. With min_clients > 1 updates are refused ("quorum") while
 * fewer clients are live. MODELs carry no round. */
#ifndef AGG_ASYNC_H
#define AGG_ASYNC_H

#include "aggregator_policy.h"

/* The async policy for *cfg (borrowed, must outlive it). NULL with *err = FM_EARG (bad
 * staleness parameters) or -ENOMEM and one line in `e`. Free with agg_policy_destroy. */
agg_policy_t *agg_async_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e);

#endif
