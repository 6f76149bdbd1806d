#include "aggregator_round.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_rng.h"

#define S_TAG_COHORT 0xc0407c0407000001ULL /* keeps the selection stream apart */

enum { S_OUT = 0, S_SELECTED = 1, S_REPORTED = 2 };

struct agg_round {
    uint32_t num_clients;
    uint8_t *state;   /* num_clients: S_OUT / S_SELECTED / S_REPORTED (open round) */
    uint32_t *cohort; /* ascending ids, count entries */
    uint32_t *pool;   /* scratch: live ids */
    uint32_t count;
    uint32_t reported;
    uint64_t round;
    double deadline;
    int open;
};

agg_round_t *agg_round_new(uint32_t num_clients, int *err)
{
    agg_round_t *r = calloc(1, sizeof *r);
    size_t n = num_clients ? num_clients : 1;
    if (r) {
        r->num_clients = num_clients;
        r->state = calloc(n, 1);
        r->cohort = malloc(n * sizeof *r->cohort);
        r->pool = malloc(n * sizeof *r->pool);
    }
    if (!r || !r->state || !r->cohort || !r->pool) {
        agg_round_destroy(&r);
        *err = -ENOMEM;
        return NULL;
    }
    return r;
}

void agg_round_destroy(agg_round_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->state);
    free((*p)->cohort);
    free((*p)->pool);
    free(*p);
    *p = NULL;
}

uint32_t agg_round_open(agg_round_t *r, uint64_t round, const uint8_t *live, uint32_t per_round,
                        uint64_t seed, double deadline)
{
    agg_round_close(r);
    uint32_t nlive = 0;
    for (uint32_t k = 0; k < r->num_clients; k++)
        if (live[k])
            r->pool[nlive++] = k;
    uint32_t m = per_round < nlive ? per_round : nlive;
    r->round = round;
    if (m == 0)
        return 0;
    /* partial Fisher-Yates: the first m entries of the pool become a uniform sample */
    fm_rng_t rng;
    fm_rng_seed(&rng, seed ^ S_TAG_COHORT, round);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t j = i + (uint32_t)fm_rng_below(&rng, nlive - i);
        uint32_t t = r->pool[i];
        r->pool[i] = r->pool[j];
        r->pool[j] = t;
        r->state[r->pool[i]] = S_SELECTED;
    }
    /* ascending order for the wire and the logs: one pass over the state flags */
    r->count = 0;
    for (uint32_t k = 0; k < r->num_clients && r->count < m; k++)
        if (r->state[k] == S_SELECTED)
            r->cohort[r->count++] = k;
    r->reported = 0;
    r->deadline = deadline;
    r->open = 1;
    return m;
}

void agg_round_close(agg_round_t *r)
{
    for (uint32_t i = 0; i < r->count; i++)
        r->state[r->cohort[i]] = S_OUT;
    r->open = 0;
}

int agg_round_is_open(const agg_round_t *r) { return r->open; }
uint64_t agg_round_number(const agg_round_t *r) { return r->round; }
double agg_round_deadline(const agg_round_t *r) { return r->deadline; }

const uint32_t *agg_round_cohort(const agg_round_t *r, uint32_t *count)
{
    *count = r->open ? r->count : 0;
    return r->cohort;
}

agg_round_verdict_t agg_round_check(const agg_round_t *r, uint64_t round, uint32_t client)
{
    if (!r->open || round != r->round)
        return AGG_ROUND_CLOSED;
    if (client >= r->num_clients || r->state[client] == S_OUT)
        return AGG_ROUND_NOT_SELECTED;
    return r->state[client] == S_REPORTED ? AGG_ROUND_REPEAT : AGG_ROUND_OK;
}

void agg_round_mark(agg_round_t *r, uint32_t client)
{
    if (r->open && client < r->num_clients && r->state[client] == S_SELECTED) {
        r->state[client] = S_REPORTED;
        r->reported++;
    }
}

uint32_t agg_round_reported(const agg_round_t *r) { return r->open ? r->reported : 0; }

int agg_round_complete(const agg_round_t *r) { return r->open && r->reported == r->count; }
