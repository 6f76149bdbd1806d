#include "trainer_ctx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"

static void s_free_sa(trainer_ctx_t *c)
{
    free(c->sa_pending);
    free(c->sa_cohort);
    free(c->sa_index);
    free(c->sa_mv);
    free(c->sa_deadline);
}

trainer_ctx_t *trainer_ctx_new(uint32_t first, uint32_t count, double sigma, double dropout_prob,
                               int *err)
{
    int rc = -ENOMEM, mrc = -1;
    trainer_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        goto cleanup;
    c->busy = calloc(count ? count : 1, 1);
    c->runs = calloc(count ? count : 1, sizeof(uint64_t));
    c->pending = calloc(count ? count : 1, 1);
    c->retired = calloc(count ? count : 1, 1);
    c->coin_round = calloc(count ? count : 1, sizeof(uint64_t));
    c->coin_heads = calloc(count ? count : 1, 1);
    c->mark = calloc(count ? count : 1, 1);
    c->sa_pending = calloc(count ? count : 1, 1);
    c->sa_cohort = calloc(count ? count : 1, sizeof(uint64_t));
    c->sa_index = calloc(count ? count : 1, sizeof(uint32_t));
    c->sa_mv = calloc(count ? count : 1, sizeof(uint64_t));
    c->sa_deadline = calloc(count ? count : 1, sizeof(double));
    if (!c->busy || !c->runs || !c->pending || !c->retired || !c->coin_round || !c->coin_heads ||
        !c->mark || !c->sa_pending || !c->sa_cohort || !c->sa_index || !c->sa_mv ||
        !c->sa_deadline)
        goto cleanup;
    if ((mrc = pthread_mutex_init(&c->mu, NULL)) != 0) {
        rc = -mrc;
        goto cleanup;
    }
    c->first = first;
    c->count = count;
    c->slowdown_sigma = sigma;
    c->dropout_prob = dropout_prob;
    atomic_init(&c->sent, 0);
    atomic_init(&c->bytes_sent, 0);
    atomic_init(&c->send_dropped, 0);
    atomic_init(&c->dropouts, 0);
    atomic_init(&c->abandoned, 0);
    atomic_init(&c->train_errors, 0);
    atomic_init(&c->local_steps, 0);
    atomic_init(&c->samples, 0);
    atomic_init(&c->busy_workers, 0);
    atomic_init(&c->stop, 0);
    rc = 0;
cleanup:
    if (rc) {
        if (c) {
            free(c->busy);
            free(c->runs);
            free(c->pending);
            free(c->retired);
            free(c->coin_round);
            free(c->coin_heads);
            s_free_sa(c);
            free(c->mark);
            free(c);
            c = NULL;
        }
        if (err)
            *err = rc;
    }
    return c;
}

void trainer_ctx_destroy(trainer_ctx_t **p)
{
    if (!p || !*p)
        return;
    trainer_ctx_t *c = *p;
    pthread_mutex_destroy(&c->mu);
    free(c->busy);
    free(c->runs);
    free(c->pending);
    free(c->retired);
    free(c->coin_round);
    free(c->coin_heads);
    free(c->mark);
    s_free_sa(c);
    free(c);
    *p = NULL;
}

int trainer_ctx_take(trainer_ctx_t *c, trainer_job_t *job)
{
    int rc = -EAGAIN;
    memset(job, 0, sizeof *job);
    pthread_mutex_lock(&c->mu);
    for (uint32_t i = 0; i < c->count; i++) {
        uint32_t k = (c->cursor + i) % c->count;
        if (c->busy[k] || c->retired[k] || (c->secagg && !c->sa_pending[k]) ||
            (!c->secagg && c->sync && !c->pending[k]))
            continue;
        if (c->secagg) {
            c->sa_pending[k] = 0;
            job->secagg = 1;
            job->cohort = c->sa_cohort[k];
            job->index = c->sa_index[k];
            job->mv = c->sa_mv[k];
            job->deadline = c->sa_deadline[k];
        }
        c->busy[k] = 1;
        c->pending[k] = 0;
        c->cursor = (k + 1) % c->count;
        job->client = c->first + k;
        job->run = c->runs[k]++;
        job->sigma = c->slowdown_sigma;
        job->dropout_prob = c->dropout_prob;
        job->sync = c->secagg ? 0 : c->sync;
        job->round = c->secagg ? 0 : c->round;
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void trainer_ctx_release(trainer_ctx_t *c, uint32_t client)
{
    pthread_mutex_lock(&c->mu);
    if (client >= c->first && client - c->first < c->count)
        c->busy[client - c->first] = 0;
    pthread_mutex_unlock(&c->mu);
}

void trainer_ctx_set_sim(trainer_ctx_t *c, double sigma, double dropout_prob)
{
    pthread_mutex_lock(&c->mu);
    c->slowdown_sigma = sigma;
    c->dropout_prob = dropout_prob;
    pthread_mutex_unlock(&c->mu);
}

int trainer_ctx_stopping(trainer_ctx_t *c) { return atomic_load(&c->stop); }

/* Poisson coins of `round` for the pool's clients in `cohort` (c->mu held): see
 * trainer_ctx_set_round_ex. *unpended = pending clients the coins took out. */
static uint32_t s_poisson(trainer_ctx_t *c, uint64_t round, const fm_wire_cohort_t *cohort,
                          const trainer_coins_t *coins, uint32_t *declined, uint32_t *unpended)
{
    uint32_t nd = 0;
    *unpended = 0;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < cohort->count; i++) {
            uint32_t id = fm_wire_cohort_at(cohort, i);
            if (id < c->first || id - c->first >= c->count)
                continue;
            uint32_t k = id - c->first;
            if (pass == 0) { /* clear the marks: a cohort listing an id twice counts it once */
                c->mark[k] = 0;
                continue;
            }
            if (c->mark[k])
                continue;
            c->mark[k] = 1;
            if (c->coin_round[k] != round) { /* one coin per client and round, kept */
                c->coin_round[k] = round;
                c->coin_heads[k] = coins->uniform(coins->arg) < coins->q;
            }
            if (c->retired[k] || !c->coin_heads[k]) {
                if (c->pending[k]) {
                    c->pending[k] = 0;
                    (*unpended)++;
                }
                declined[nd++] = id;
            }
        }
    return nd;
}

uint32_t trainer_ctx_set_round_ex(trainer_ctx_t *c, int sync, uint64_t round,
                                  const fm_wire_cohort_t *cohort, const trainer_coins_t *coins,
                                  uint32_t *declined, uint32_t *ndeclined)
{
    uint32_t n = 0, nd = 0;
    pthread_mutex_lock(&c->mu);
    c->sync = sync;
    c->round = round;
    memset(c->pending, 0, c->count ? c->count : 1);
    for (uint32_t i = 0; sync && cohort && !c->secagg && i < cohort->count; i++) {
        uint32_t k = fm_wire_cohort_at(cohort, i);
        if (k >= c->first && k - c->first < c->count && !c->pending[k - c->first] &&
            !c->retired[k - c->first]) {
            c->pending[k - c->first] = 1;
            n++;
        }
    }
    if (sync && cohort && coins && declined && !c->secagg) { /* under the same lock: no worker can
                                                  take a client between the cohort and its coin */
        uint32_t unpended = 0;
        nd = s_poisson(c, round, cohort, coins, declined, &unpended);
        n -= unpended;
    }
    uint32_t active = c->secagg ? 0 : c->count - c->nretired;
    pthread_mutex_unlock(&c->mu);
    if (ndeclined)
        *ndeclined = nd;
    return sync ? n : active;
}

uint32_t trainer_ctx_set_round(trainer_ctx_t *c, int sync, uint64_t round,
                               const fm_wire_cohort_t *cohort)
{
    return trainer_ctx_set_round_ex(c, sync, round, cohort, NULL, NULL, NULL);
}

uint32_t trainer_ctx_retire(trainer_ctx_t *c, uint32_t client)
{
    pthread_mutex_lock(&c->mu);
    if (client >= c->first && client - c->first < c->count && !c->retired[client - c->first]) {
        c->retired[client - c->first] = 1;
        c->pending[client - c->first] = 0;
        c->nretired++;
    }
    uint32_t n = c->nretired;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void trainer_ctx_set_secagg(trainer_ctx_t *c, int on)
{
    pthread_mutex_lock(&c->mu);
    c->secagg = on;
    pthread_mutex_unlock(&c->mu);
}

int trainer_ctx_queue_secagg(trainer_ctx_t *c, uint32_t client, uint64_t cohort, uint32_t index,
                             uint64_t mv, double deadline)
{
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    uint32_t k = client - c->first;
    if (client < c->first || k >= c->count || c->retired[k])
        rc = FM_EARG;
    else if (c->sa_pending[k])
        rc = -EBUSY;
    else {
        c->sa_pending[k] = 1;
        c->sa_cohort[k] = cohort;
        c->sa_index[k] = index;
        c->sa_mv[k] = mv;
        c->sa_deadline[k] = deadline;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int trainer_ctx_cancel_secagg(trainer_ctx_t *c, uint32_t client, uint64_t cohort)
{
    int done = 0;
    pthread_mutex_lock(&c->mu);
    uint32_t k = client - c->first;
    if (client >= c->first && k < c->count && c->sa_pending[k] && c->sa_cohort[k] == cohort) {
        c->sa_pending[k] = 0;
        done = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return done;
}
