/* trainer_ctx: what the main thread and the workers of a trainer pool share.
 *
 * - the client scheduler, with a run counter per client (seeds, dropout draws):
 *   async: round-robin over the pool's client range, skipping clients a worker is already
 *   training; sync: each client of the current round's cohort (within the range) once;
 *   a retired client (its DP-SGD budget spent: trainer_dp) is never scheduled again;
 * - the reloadable simulation parameters (slowdown sigma, dropout probability);
 * - counters (atomics) for heartbeats and the summary log;
 * - the pool's stop flag: the main thread sets it when it sees SIGINT/SIGTERM (within one
 *   100 ms poll tick); workers read only this atomic, never the signal flag itself (a
 *   volatile sig_atomic_t is only safe to read in the thread the handler runs on).
 * Scheduler and parameters are under one mutex; counters are lock-free. */
#ifndef TRAINER_CTX_H
#define TRAINER_CTX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "fm_wire.h"

typedef struct {
    pthread_mutex_t mu;
    uint32_t first;        /* first client id */
    uint32_t count;        /* clients in the range */
    uint32_t cursor;       /* next client to consider, 0..count-1 (under mu) */
    uint8_t *busy;         /* count flags: client in training (under mu) */
    uint64_t *runs;        /* count run counters (under mu) */
    double slowdown_sigma; /* under mu */
    double dropout_prob;   /* under mu */
    int sync;              /* under mu: 1 = only pending clients of `round` train */
    uint64_t round;        /* under mu */
    uint8_t *pending;      /* count flags: selected this round, not taken yet (under mu) */
    uint8_t *retired;      /* count flags: never scheduled again (DP budget spent; under mu) */
    uint32_t nretired;     /* under mu */
    uint64_t *coin_round;  /* count: the round of the client's last Poisson coin (under mu) */
    uint8_t *coin_heads;   /* count: that coin said train (under mu) */
    uint8_t *mark;         /* count: scratch of trainer_ctx_set_round_ex (under mu) */
    int secagg;            /* under mu: 1 = only queued secure-aggregation jobs train */
    uint8_t *sa_pending;   /* count flags: a secagg job queued, not taken yet (under mu) */
    uint64_t *sa_cohort;   /* count: its cohort id (under mu) */
    uint32_t *sa_index;    /* count: its member index (under mu) */
    uint64_t *sa_mv;       /* count: the model version it must train on, at least (under mu) */
    double *sa_deadline;   /* count: monotonic time its upload is useless after (under mu) */

    atomic_uint_fast64_t sent;         /* UPDATEs handed to ZeroMQ */
    atomic_uint_fast64_t bytes_sent;   /* their bytes (frames as encoded) */
    atomic_uint_fast64_t send_dropped; /* UPDATEs dropped: send timeout / encode error */
    atomic_uint_fast64_t dropouts;     /* simulated client dropouts */
    atomic_uint_fast64_t abandoned;    /* trainings abandoned on stop */
    atomic_uint_fast64_t train_errors; /* fm_train_run failures, empty partitions */
    atomic_uint_fast64_t local_steps;  /* optimiser steps of the local trainings */
    atomic_uint_fast64_t samples;      /* samples they processed (each epoch counts) */
    atomic_int busy_workers;           /* workers training now */
    /* the workers' time, microseconds summed over workers (the time budget): */
    atomic_uint_fast64_t compute_us; /* in local training (a simulated slowdown included) */
    atomic_uint_fast64_t idle_us;    /* waiting for a model or a job */
    atomic_uint_fast64_t other_us;   /* the rest of a job: encoding, sending, bookkeeping */
    atomic_int stop;                 /* 1: workers must finish */
} trainer_ctx_t;

/* A context for clients [first, first + count) and the simulation parameters. NULL on
 * failure with *err (-ENOMEM or -errno of pthread_mutex_init). The caller owns it:
 * trainer_ctx_destroy, once no worker uses it any more. */
trainer_ctx_t *trainer_ctx_new(uint32_t first, uint32_t count, double sigma, double dropout_prob,
                               int *err);

/* Free it and set *p to NULL; idempotent. */
void trainer_ctx_destroy(trainer_ctx_t **p);

/* One local training to do. */
typedef struct {
    uint32_t client;
    uint64_t run; /* the client's run number */
    double sigma; /* simulation parameters at take time */
    double dropout_prob;
    int sync; /* 1: for sync round `round` */
    uint64_t round;
    int secagg;      /* 1: a secure-aggregation member's training (trainer_secagg) */
    uint64_t cohort; /* secagg: the cohort id */
    uint32_t index;  /* secagg: the member index */
    uint64_t mv;     /* secagg: train on a model of at least this version */
    double deadline; /* secagg: monotonic time after which the upload is useless */
} trainer_job_t;

/* Take the next client to train and mark it busy. Async: the next idle client
 * (round-robin); sync: the next pending cohort member of the current round (it is then no
 * longer pending); secagg (trainer_ctx_set_secagg): only the next queued secagg job (job->secagg
 * set). 0, or -EAGAIN when there is nothing to do. */
int trainer_ctx_take(trainer_ctx_t *c, trainer_job_t *job);

/* A new model arrived: async (sync = 0: every client may train), or sync round `round`
 * whose cohort (client ids, any order) replaces the pending set; ids outside the pool's
 * range and retired clients are ignored. Returns how many of the pool's clients are
 * pending (async: every client not retired). */
uint32_t trainer_ctx_set_round(trainer_ctx_t *c, int sync, uint64_t round,
                               const fm_wire_cohort_t *cohort);

/* The coins of Poisson-sampled sync rounds (MODEL "q"): a client trains when
 * uniform(arg) < q. uniform returns values in [0, 1) from a source nobody else can predict
 * (the trainer uses libsodium): amplification by sampling needs the sample secret. */
typedef struct {
    double q;
    double (*uniform)(void *arg);
    void *arg;
} trainer_coins_t;

/* trainer_ctx_set_round, and with `coins` (sync only; NULL: every cohort member trains) a
 * Poisson round: each of the pool's clients in `cohort` trains only if its coin says so. The
 * coin is drawn once per client and round and kept, so a MODEL of the same round delivered
 * again (snapshot, re-publish) never re-draws it; the cohort and the coins are set under one
 * lock, so no worker takes a client its coin refused. Clients whose coin said no, and retired
 * ones, are written to declined[] (room for the pool's client count), each once, *ndeclined
 * their number (the caller sends them in one DECLINE). Returns the pending count. */
uint32_t trainer_ctx_set_round_ex(trainer_ctx_t *c, int sync, uint64_t round,
                                  const fm_wire_cohort_t *cohort, const trainer_coins_t *coins,
                                  uint32_t *declined, uint32_t *ndeclined);

/* Never schedule `client` again (its DP-SGD budget is spent); ids outside the range are
 * ignored. Returns how many of the pool's clients are retired now. */
uint32_t trainer_ctx_retire(trainer_ctx_t *c, uint32_t client);

/* Secure-aggregation mode (on = 1): from now on only jobs queued with trainer_ctx_queue_secagg
 * train; async round-robin and sync cohorts train nobody (trainer_ctx_set_round_ex still
 * records the round and returns 0 pending). Set once before the workers start. */
void trainer_ctx_set_secagg(trainer_ctx_t *c, int on);

/* Queue the training of `client` as member `index` of `cohort`, on a model of version >= mv,
 * useless after `deadline` (monotonic). 0, FM_EARG (client outside the range or retired), or
 * -EBUSY (a job of that client is already queued). */
int trainer_ctx_queue_secagg(trainer_ctx_t *c, uint32_t client, uint64_t cohort, uint32_t index,
                             uint64_t mv, double deadline);

/* Unqueue the job of `client` for `cohort` if it has not been taken yet. 1 if it was
 * unqueued, else 0. */
int trainer_ctx_cancel_secagg(trainer_ctx_t *c, uint32_t client, uint64_t cohort);

/* Mark a client taken with trainer_ctx_take idle again. */
void trainer_ctx_release(trainer_ctx_t *c, uint32_t client);

/* Replace the simulation parameters (config reload). */
void trainer_ctx_set_sim(trainer_ctx_t *c, double sigma, double dropout_prob);

/* 1 once the pool is stopping (ctx->stop set by the main thread). */
int trainer_ctx_stopping(trainer_ctx_t *c);

#endif
