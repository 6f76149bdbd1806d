#include "trainer_ef.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"

struct trainer_ef {
    pthread_mutex_t mu;
    uint32_t first, count;
    size_t nparams, max_held;
    float **res;    /* count: the residual, or NULL */
    uint64_t *used; /* count: the tick of its last take (LRU) */
    uint8_t *inuse; /* count */
    uint64_t tick;
    uint32_t held;
    uint64_t evicted;
};

trainer_ef_t *trainer_ef_new(uint32_t first, uint32_t count, size_t nparams, size_t max_bytes,
                             int *err)
{
    trainer_ef_t *ef = calloc(1, sizeof *ef);
    if (!ef || pthread_mutex_init(&ef->mu, NULL) != 0) {
        free(ef);
        if (err)
            *err = -ENOMEM;
        return NULL;
    }
    ef->first = first;
    ef->count = count;
    ef->nparams = nparams;
    ef->max_held = nparams ? max_bytes / (nparams * sizeof(float)) : count;
    ef->res = calloc(count ? count : 1, sizeof *ef->res);
    ef->used = calloc(count ? count : 1, sizeof *ef->used);
    ef->inuse = calloc(count ? count : 1, 1);
    if (!ef->res || !ef->used || !ef->inuse) {
        trainer_ef_destroy(&ef);
        if (err)
            *err = -ENOMEM;
    }
    return ef;
}

void trainer_ef_destroy(trainer_ef_t **p)
{
    if (!p || !*p)
        return;
    trainer_ef_t *ef = *p;
    for (uint32_t i = 0; ef->res && i < ef->count; i++)
        free(ef->res[i]);
    free(ef->res);
    free(ef->used);
    free(ef->inuse);
    pthread_mutex_destroy(&ef->mu);
    free(ef);
    *p = NULL;
}

/* Drop the least recently used residual not in use; 0 if one was dropped. Under mu. */
static int s_evict(trainer_ef_t *ef)
{
    uint32_t victim = UINT32_MAX;
    for (uint32_t i = 0; i < ef->count; i++)
        if (ef->res[i] && !ef->inuse[i] &&
            (victim == UINT32_MAX || ef->used[i] < ef->used[victim]))
            victim = i;
    if (victim == UINT32_MAX)
        return -1;
    free(ef->res[victim]);
    ef->res[victim] = NULL;
    ef->held--;
    ef->evicted++;
    return 0;
}

float *trainer_ef_take(trainer_ef_t *ef, uint32_t client)
{
    FM_ASSERT(client >= ef->first && client - ef->first < ef->count);
    uint32_t i = client - ef->first;
    float *r = NULL;
    pthread_mutex_lock(&ef->mu);
    FM_ASSERT(!ef->inuse[i]);
    if (!ef->res[i]) {
        while (ef->held >= ef->max_held && s_evict(ef) == 0)
            ;
        if (ef->held < ef->max_held &&
            (ef->res[i] = calloc(ef->nparams ? ef->nparams : 1, sizeof(float))) != NULL)
            ef->held++;
    }
    if ((r = ef->res[i]) != NULL) {
        ef->inuse[i] = 1;
        ef->used[i] = ++ef->tick;
    }
    pthread_mutex_unlock(&ef->mu);
    return r;
}

void trainer_ef_give(trainer_ef_t *ef, uint32_t client)
{
    FM_ASSERT(client >= ef->first && client - ef->first < ef->count);
    pthread_mutex_lock(&ef->mu);
    ef->inuse[client - ef->first] = 0;
    pthread_mutex_unlock(&ef->mu);
}

void trainer_ef_preview(const float *res, float a, float *params, size_t n)
{
    for (size_t i = 0; i < n; i++)
        params[i] += a * res[i];
}

void trainer_ef_unpreview(float *res, float a, size_t n)
{
    float keep = 1.0f - a;
    for (size_t i = 0; i < n; i++)
        res[i] *= keep;
}

void trainer_ef_stats(trainer_ef_t *ef, trainer_ef_stats_t *out)
{
    pthread_mutex_lock(&ef->mu);
    out->held = ef->held;
    out->bytes = (uint64_t)ef->held * ef->nparams * sizeof(float);
    out->evicted = ef->evicted;
    pthread_mutex_unlock(&ef->mu);
}
