/* trainer_worker: one worker thread of a trainer pool.
 *
 * A worker owns everything a local training needs: an fm_model (the local weights), an
 * fm_engine (threads_per_worker threads), an fm_optim, the base and delta buffers, an
 * encode buffer and its own ZeroMQ PUSH socket to endpoints.updates (ZeroMQ sockets are not
 * thread-safe, so each worker sends its own UPDATEs: a send that times out stalls only that
 * worker). Its loop: take the next idle client (trainer_ctx), copy the newest model
 * (trainer_latest) as the base, train federation.local_epochs on the client's partition,
 * (plain mini-batches, or DP-SGD with the client's budget checked first: trainer_dp),
 * apply the fleet simulation (slowdown sleep, dropout), and PUSH the UPDATE
 * delta = w_local - w_base (an attacker's: see `attack` below) with SNDTIMEO 1 s (on timeout the
 * update is dropped and counted, unless the outbox keeps it: when the model came from an
 * acknowledging aggregator, a copy of every UPDATE goes into the outbox before the send, and the
 * main thread resends it). The socket is created by trainer_worker_new (main thread) and used
 * only by the worker thread once started (pthread_create is the memory barrier ZeroMQ requires).
 */
#ifndef TRAINER_WORKER_H
#define TRAINER_WORKER_H

#include "fm_cfg.h"
#include "fm_data.h"
#include "fm_err.h"
#include "fm_jsonl.h"
#include "fm_sec.h"
#include "trainer_attack.h"
#include "fm_codec.h"
#include "trainer_ctx.h"
#include "trainer_ef.h"
#include "trainer_dp.h"
#include "trainer_latest.h"
#include "trainer_outbox.h"
#include "trainer_secagg.h"

/* What the workers share, borrowed: all of it must outlive the workers. */
typedef struct {
    const fm_config_t *cfg;     /* read-only while workers run */
    const char *model_name;     /* "logreg", "mlp", "cnn" */
    const fm_dataset_t *ds;     /* the training set */
    const fm_partition_t *part; /* federation.num_clients partitions of ds */
    trainer_latest_t *latest;   /* the newest global model */
    trainer_ctx_t *ctx;         /* scheduler, counters, stop flag */
    const char *trainer_id;     /* "trainer" of every UPDATE */
    trainer_outbox_t *outbox;   /* UPDATEs kept until acknowledged (models with a "boot") */
    fm_jsonl_t *history;        /* [trainer] history_file (thread-safe appends), or NULL */
    const fm_sec_t *sec;        /* keys for the PUSH ([security]), or NULL: plain */
    /* NULL: honest (fedmq-trainer). Else every client of the pool attacks: its delta goes
     * through trainer_attack_apply before the UPDATE is encoded (a backdoor's poisoned
     * samples are already in `ds`: trainer_pool_new_attacked). bench/fedmq_attacker only. */
    const trainer_attack_t *attack;
    /* [trainer] dp_sgd: the clients train with DP-SGD, accounted here; NULL: plain SGD */
    trainer_dp_t *dp;
    /* [secagg] enabled: the members; a job with `secagg` set trains on a model of version
     * >= its "mv" (waiting for one until its deadline) and uploads a MASKED_UPDATE through
     * trainer_secagg_upload instead of an UPDATE; a job that sends nothing (dropout, error,
     * stop) drops its member (trainer_secagg_drop). NULL: plain updates */
    trainer_secagg_t *sa;
    /* [trainer] encoding, topk_fraction, error_feedback, zstd_level (checked); NULL or raw:
     * float32 updates of protocol version 1 */
    const fm_codec_config_t *codec;
    /* the clients' error-feedback residuals (codec with error feedback), else NULL */
    trainer_ef_t *ef;
} trainer_worker_env_t;

typedef struct trainer_worker trainer_worker_t;

/* A worker (not started): model, engine, optimiser, buffers, PUSH socket connected to
 * endpoints.updates. NULL with *err and `e` set on failure (-ENOMEM, FM_EARG, -errno).
 * Caller owns it (trainer_worker_destroy). */
trainer_worker_t *trainer_worker_new(const trainer_worker_env_t *env, int index, int *err,
                                     fm_errmsg_t *e);

/* Start the worker thread. 0 or -errno. */
int trainer_worker_start(trainer_worker_t *w);

/* Join the thread if started (set ctx->stop first, or this waits forever), close the
 * socket (linger 1 s: queued UPDATEs get a last chance), free everything, NULL *p.
 * Idempotent. */
void trainer_worker_destroy(trainer_worker_t **p);

#endif
