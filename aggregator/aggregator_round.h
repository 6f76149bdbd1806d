/* agg_round: the state of one synchronous round (aggregation_strategy fedavg|fedprox with
 * mode = sync): which clients were selected, which have reported, when it closes.
 *
 * Pure bookkeeping: no sockets, no clock (times are the caller's monotonic seconds), no
 * logging. The cohort is a seeded random sample of the live clients: the same (seed,
 * round number, live set) always selects the same clients, in every process and after a
 * restart, so a round re-opened after a crash asks the same clients for the same work. */
#ifndef AGG_ROUND_H
#define AGG_ROUND_H

#include <stdint.h>

typedef struct agg_round agg_round_t;

/* What agg_round_check says about an UPDATE. */
typedef enum {
    AGG_ROUND_OK,           /* for the open round, from a selected client, first time */
    AGG_ROUND_CLOSED,       /* its round is not the open one (late, or no round at all) */
    AGG_ROUND_NOT_SELECTED, /* the client is not in the open round's cohort */
    AGG_ROUND_REPEAT        /* the client already reported in the open round */
} agg_round_verdict_t;

/* Bookkeeping for client ids [0, num_clients). NULL and *err = -ENOMEM on failure. Caller
 * owns it: agg_round_destroy. No round is open. */
agg_round_t *agg_round_new(uint32_t num_clients, int *err);

/* Free and NULL *p; idempotent. */
void agg_round_destroy(agg_round_t **p);

/* Open round `round` (>= 1) closing at `deadline`: select min(per_round, live) clients at
 * random among those with live[k] != 0 (num_clients bytes), seeded by (seed, round).
 * Returns the cohort size (0 when no client is live: the round is then not open). */
uint32_t agg_round_open(agg_round_t *r, uint64_t round, const uint8_t *live, uint32_t per_round,
                        uint64_t seed, double deadline);

/* Close the open round (no-op when none is open). */
void agg_round_close(agg_round_t *r);

/* 1 if a round is open. */
int agg_round_is_open(const agg_round_t *r);

/* The open (or last) round's number, 0 before the first. */
uint64_t agg_round_number(const agg_round_t *r);

/* The open round's deadline (monotonic seconds). */
double agg_round_deadline(const agg_round_t *r);

/* The cohort, ascending client ids (borrowed, valid until the next open); *count its size. */
const uint32_t *agg_round_cohort(const agg_round_t *r, uint32_t *count);

/* May an UPDATE for `round` from `client` be folded? Does not change the state. */
agg_round_verdict_t agg_round_check(const agg_round_t *r, uint64_t round, uint32_t client);

/* Record that `client` (checked AGG_ROUND_OK) has reported. */
void agg_round_mark(agg_round_t *r, uint32_t client);

/* Clients that have reported in the open round. */
uint32_t agg_round_reported(const agg_round_t *r);

/* 1 when every cohort member has reported. */
int agg_round_complete(const agg_round_t *r);

#endif
