#include "trainer_latest.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct trainer_latest {
    pthread_rwlock_t lock;
    size_t nparams;
    float *current;            /* the newest model (under lock) */
    float *scratch;            /* the writer's next model (main thread only) */
    int have;                  /* under lock */
    trainer_model_info_t info; /* under lock */
};

trainer_latest_t *trainer_latest_new(size_t nparams, int *err)
{
    trainer_latest_t *l = calloc(1, sizeof *l);
    if (!l) {
        *err = -ENOMEM;
        return NULL;
    }
    l->nparams = nparams;
    l->current = calloc(nparams ? nparams : 1, sizeof(float));
    l->scratch = calloc(nparams ? nparams : 1, sizeof(float));
    int rc = pthread_rwlock_init(&l->lock, NULL);
    if (rc != 0 || !l->current || !l->scratch) {
        if (rc == 0)
            pthread_rwlock_destroy(&l->lock);
        free(l->current);
        free(l->scratch);
        free(l);
        *err = rc ? -rc : -ENOMEM;
        return NULL;
    }
    return l;
}

void trainer_latest_destroy(trainer_latest_t **p)
{
    if (!p || !*p)
        return;
    trainer_latest_t *l = *p;
    pthread_rwlock_destroy(&l->lock);
    free(l->current);
    free(l->scratch);
    free(l);
    *p = NULL;
}

float *trainer_latest_scratch(trainer_latest_t *l) { return l->scratch; }

void trainer_latest_publish(trainer_latest_t *l, const trainer_model_info_t *info)
{
    pthread_rwlock_wrlock(&l->lock);
    float *t = l->current;
    l->current = l->scratch;
    l->scratch = t;
    l->have = 1;
    l->info = *info;
    pthread_rwlock_unlock(&l->lock);
}

int trainer_latest_get(trainer_latest_t *l, float *dst, trainer_model_info_t *info)
{
    int rc = -EAGAIN;
    pthread_rwlock_rdlock(&l->lock);
    if (l->have) {
        memcpy(dst, l->current, l->nparams * sizeof(float));
        *info = l->info;
        rc = 0;
    }
    pthread_rwlock_unlock(&l->lock);
    return rc;
}

int trainer_latest_peek(trainer_latest_t *l, trainer_model_info_t *info)
{
    pthread_rwlock_rdlock(&l->lock);
    int have = l->have;
    if (have) {
        *info = l->info;
    }
    pthread_rwlock_unlock(&l->lock);
    return have;
}
