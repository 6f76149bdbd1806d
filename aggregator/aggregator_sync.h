/* agg_sync: the policy of mode = sync (agg_policy_t, aggregator_policy.h): FedAvg / FedProx
 * rounds.
 *
 * A round opens when at least min_clients clients are live: clients_per_round of them are
 * chosen at random (agg_round, seeded by federation.seed and the round number) and the
 * MODEL carries "round", "cohort" and "mu" (FedProx; 0 for fedavg). Only UPDATEs for the
 * open round, from the version it published, from cohort members, once each, are accepted
 * (others: "late" / "cohort"), weighted by samples without staleness discount. A member
 * whose update is refused for its content (non-finite, overflow, norm, shapes, samples)
 * counts as having reported: it will not send another. The round aggregates when every
 * member reported, or at round_timeout_s, with at least min_clients updates folded; below
 * that it is dropped (rounds_failed) and a new round with a new cohort opens on the same
 * version. Once finished (num_rounds versions) no round opens: MODELs carry an
 * empty cohort. "waiting for clients" is logged at most every 10 s while too few are live.
 *
 * [federation] sampling = poisson: the cohort is every live client and the MODEL also
 * carries "q" = clients_per_round / num_clients; each client trains with probability q by
 * its own coin (trainer side) and otherwise sends DECLINE, which counts as its report. The
 * round aggregates when every member has reported or declined (with at least one update),
 * or at round_timeout_s with what came; with [privacy] mode = client every round is
 * aggregated (a round without updates is a step of noise alone: skipping it would make
 * the steps depend on who took part), and the accountant charges q per step. */
#ifndef AGG_SYNC_H
#define AGG_SYNC_H

#include "aggregator_policy.h"

/* The sync policy for *cfg (borrowed, must outlive it). NULL with *err = -ENOMEM (or
 * FM_EARG) and one line in `e`. Free with agg_policy_destroy. */
agg_policy_t *agg_sync_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e);

#endif
