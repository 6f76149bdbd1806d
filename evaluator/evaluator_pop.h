/* evaluator_pop: population-level validation. Besides the global test set, the evaluator
 * scores every client's held-out slice (fm_partition_holdout: federation.holdout of each
 * client's training samples, never trained on) and summarises the per-client accuracies:
 * mean, worst client, 10th percentile, fraction of clients below a threshold.
 *
 * Two parts:
 * - eval_pop_summarize: the statistics, a pure function of per-client (correct, total)
 *   counts;
 * - eval_pop_t: the scorer. It keeps a compact copy of the held-out samples (client by
 *   client, in the held partition's order), scores a model on all of them in one pass of the
 *   evaluator's fm_engine (fm_engine_evaluate_hits: one "right" flag per sample), then
 *   splits the correct counts per client.
 *
 * The split is the trainers' (trainer/trainer_pool.c): fm_partition_clients on the "train"
 * split of federation.data_dir with federation.partition, num_clients, seed and holdout;
 * eval_pop_load builds exactly that. */
#ifndef EVALUATOR_POP_H
#define EVALUATOR_POP_H

#include <stdint.h>

#include "fm_cfg.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_err.h"
#include "fm_model.h"

/* The distribution of client accuracies. Clients with an empty held-out slice (total 0) are
 * not scored and count nowhere; with no client scored every field but threshold is 0. */
typedef struct {
    uint32_t clients; /* clients scored (non-empty held-out slice) */
    double mean;      /* unweighted mean over the scored clients of correct/total */
    double min;       /* the lowest client accuracy */
    uint32_t worst;   /* id of the client with accuracy min; the lowest id on ties */
    double p10;       /* nearest-rank 10th percentile: with the n = clients accuracies sorted
                         ascending, sorted[ceil(n / 10) - 1] (integer ceiling: n = 1..10
                         give sorted[0], n = 11..20 sorted[1], n = 100 sorted[9]) */
    double threshold; /* the threshold of below (as given) */
    double below;     /* fraction of the scored clients with accuracy < threshold (strict) */
} eval_pop_summary_t;

/* Summarise clients 0..nclients-1, client k having correct[k] of total[k] held-out samples
 * right (correct[k] <= total[k]). `scratch` holds nclients doubles (caller-owned, contents
 * overwritten). Pure: no allocation, no I/O, cannot fail. Returns out->clients. */
uint32_t eval_pop_summarize(const uint32_t *correct, const uint32_t *total, uint32_t nclients,
                            double threshold, double *scratch, eval_pop_summary_t *out);

typedef struct eval_pop eval_pop_t;

/* A scorer on the held-out slices `held` of dataset `ds` (held->indices index ds; every
 * index must be < ds->n: a programmer error otherwise). The samples are copied: ds and held
 * may be freed afterwards. Errors (NULL, *err): -ENOMEM. Caller owns the result:
 * eval_pop_destroy(). */
eval_pop_t *eval_pop_new(const fm_dataset_t *ds, const fm_partition_t *held, int *err);

/* Build the trainers' split from the config and a scorer on its held-out part: load the
 * "train" split of federation.data_dir, partition it (federation.partition, num_clients,
 * seed), hold out federation.holdout (seed), then eval_pop_new.
 * The training set is freed before returning (only the held-out samples are kept).
 * Errors (NULL, *err, one line in `e`): the data files' (-ENOENT, FM_EMAGIC, FM_ETRUNC,
 * FM_ESHAPE, FM_EFORMAT), FM_EARG (bad partition spec, holdout out of range), -ENOMEM.
 * Caller owns the result: eval_pop_destroy(). */
eval_pop_t *eval_pop_load(const fm_config_t *cfg, int *err, fm_errmsg_t *e);

/* Free everything and NULL *p; idempotent. */
void eval_pop_destroy(eval_pop_t **p);

/* Clients of the held partition (including those with an empty slice). */
uint32_t eval_pop_nclients(const eval_pop_t *self);

/* Clients with a non-empty held-out slice (those eval_pop_score summarises). */
uint32_t eval_pop_scored_clients(const eval_pop_t *self);

/* Held-out samples over all clients. */
uint32_t eval_pop_samples(const eval_pop_t *self);

/* Score model `m` (borrowed, read-only, not modified by anyone during the call) with
 * `engine` (built for m's architecture; its threads do the work) on every held-out sample,
 * without dropout, and summarise the per-client accuracies with `threshold` into *out.
 * Cannot fail. */
void eval_pop_score(eval_pop_t *self, fm_engine_t *engine, const fm_model_t *m, double threshold,
                    eval_pop_summary_t *out);

/* Client k's counts from the last eval_pop_score (0 and its slice size before any):
 * *correct of *total held-out samples classified right. k < eval_pop_nclients(). */
void eval_pop_client(const eval_pop_t *self, uint32_t k, uint32_t *correct, uint32_t *total);

#endif
