/* trainer_latest: the newest global model of a trainer, shared by the main thread (one
 * writer: it receives MODEL frames) and the workers (readers: they copy it as the base of
 * a local training).
 *
 * Double-buffered behind a rwlock: the main thread decodes into a private scratch buffer
 * (trainer_latest_scratch) without holding the lock, then trainer_latest_publish swaps it
 * in under the write lock. Workers copy under the read lock (one memcpy). */
#ifndef TRAINER_LATEST_H
#define TRAINER_LATEST_H

#include <stddef.h>
#include <stdint.h>

typedef struct trainer_latest trainer_latest_t;

/* What came with a model besides its parameters. */
typedef struct {
    uint64_t version;
    double created;
    int sync;        /* 1: a sync round's MODEL (only its cohort trains) */
    uint64_t round;  /* sync round number, 0 in async mode */
    uint32_t cohort; /* sync: cohort size (0: the round is closed, nobody trains) */
    double mu;       /* sync: FedProx mu of the round */
    uint64_t boot;   /* the aggregator's incarnation when it acknowledges updates, else 0 */
} trainer_model_info_t;

/* A holder for models of `nparams` floats, empty. NULL and *err = -ENOMEM / -errno on
 * failure. Caller owns it (trainer_latest_destroy). */
trainer_latest_t *trainer_latest_new(size_t nparams, int *err);

/* Free and NULL *p; idempotent. No thread may use it any more. */
void trainer_latest_destroy(trainer_latest_t **p);

/* The writer's scratch buffer (nparams floats, borrowed; valid until the next publish).
 * Main thread only. */
float *trainer_latest_scratch(trainer_latest_t *l);

/* Make the scratch buffer the newest model (with its info, copied); the old newest
 * becomes the scratch. Main thread only. */
void trainer_latest_publish(trainer_latest_t *l, const trainer_model_info_t *info);

/* Copy the newest model into dst (nparams floats) and its info into *info.
 * 0, or -EAGAIN when no model has arrived yet. Any thread. */
int trainer_latest_get(trainer_latest_t *l, float *dst, trainer_model_info_t *info);

/* 1 and the newest model's info, or 0 when there is none. Any thread. */
int trainer_latest_peek(trainer_latest_t *l, trainer_model_info_t *info);

#endif
