#include "trainer_worker.h"

#include <czmq.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_daemon.h"
#include "fm_dpsgd.h"
#include "fm_engine.h"
#include "fm_sock.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_train.h"
#include "fm_wire.h"
#include "trainer_sim.h"

#define S_PUSH_HWM 4           /* UPDATEs queued per worker before sends block */
#define S_PUSH_TIMEOUT_MS 1000 /* then a send waits this long before the update is dropped */
#define S_PUSH_LINGER_MS 1000  /* queued UPDATEs get this long at exit */
#define S_IDLE_S 0.02          /* poll period while there is no model or no idle client */
#define S_WARN_EVERY_S 5.0     /* rate limit of repeated warnings */

struct trainer_worker {
    trainer_worker_env_t env;
    int index;
    fm_model_t *model; /* local weights */
    fm_engine_t *engine;
    fm_optim_t *optim;
    float *base;  /* the global model training started from */
    float *delta; /* w_local - w_base */
    size_t nparams;
    fm_wire_buf_t buf;
    zsock_t *push;
    pthread_t thread;
    int started;
    double last_warn;           /* monotonic time of the last rate-limited warning */
    uint64_t warned;            /* warnings suppressed since */
    fm_random_stream_t *stream; /* DP-SGD's private randomness (env.dp), else NULL */
    uint32_t *words;            /* nparams + 1: a member's encoded update (env.sa), else NULL */
    fm_codec_enc_t *enc;        /* env.codec not raw: the update encoder, else NULL */
    fm_codec_tensor_t *coded;   /* one per view: the encoder's output */
    float *spare;               /* error feedback without room for a client's residual */
    float ahead;        /* the step-ahead a applied to this update's start (s_step_ahead) */
    double idle_before; /* seconds waited before the current job (its UPDATE's "wait") */
    double job_compute; /* seconds of local training in the current job */
    fm_rng_t rng;       /* int8's stochastic rounding, seeded per update */
};

/* State of one local training, seen by the epoch callback. */
typedef struct {
    trainer_ctx_t *ctx;
    int epochs_done;
} s_epoch_state_t;

static int s_on_epoch(void *arg, int epoch, const fm_train_result_t *so_far)
{
    (void)so_far;
    s_epoch_state_t *st = arg;
    st->epochs_done = epoch + 1;
    return trainer_ctx_stopping(st->ctx);
}

/* Sleep `s` seconds in short slices; 0 if slept fully, 1 if interrupted by stop. */
static int s_sleep_interruptible(trainer_ctx_t *ctx, double s)
{
    double end = fm_daemon_now() + s;
    for (;;) {
        if (trainer_ctx_stopping(ctx))
            return 1;
        double left = end - fm_daemon_now();
        if (left <= 0)
            return 0;
        double step = left < 0.05 ? left : 0.05;
        struct timespec t = {0, (long)(step * 1e9)};
        nanosleep(&t, NULL);
    }
}

/* Add `secs` (>= 0) to one of ctx's microsecond counters. */
static void s_time_add(atomic_uint_fast64_t *counter, double secs)
{
    if (secs > 0)
        atomic_fetch_add(counter, (uint_fast64_t)(secs * 1e6));
}

static void s_idle(void)
{
    struct timespec t = {0, (long)(S_IDLE_S * 1e9)};
    nanosleep(&t, NULL);
}

/* A warning at most every S_WARN_EVERY_S per worker; the rest are counted. */
static void s_warn(trainer_worker_t *w, const char *what, const char *detail)
{
    double now = fm_daemon_now();
    if (w->last_warn > 0 && now - w->last_warn < S_WARN_EVERY_S) {
        w->warned++;
        return;
    }
    FM_LOG(LOG_WARNING, "worker %d: %s: %s (%llu similar warnings suppressed)", w->index, what,
           detail, (unsigned long long)w->warned);
    w->last_warn = now;
    w->warned = 0;
}

/* Encode w->delta as [trainer] encoding says (raw float32, or fm_codec's encodings with the
 * client's error-feedback residual) into w->buf. `seed`: the stochastic rounding's. */
static int s_encode(trainer_worker_t *w, const fm_wire_update_t *hdr, uint64_t seed)
{
    if (!w->enc)
        return fm_wire_encode_update(hdr, w->model, w->delta, &w->buf);
    float *res = NULL;
    int taken = 0;
    if (w->env.ef) {
        taken = (res = trainer_ef_take(w->env.ef, hdr->client)) != NULL;
        if (!taken) { /* no room: this update goes without the client's residual */
            memset(w->spare, 0, w->nparams * sizeof(float));
            res = w->spare;
        }
    }
    if (taken && w->ahead > 0.0f) /* trained from base + a e: delta holds a e */
        trainer_ef_unpreview(res, w->ahead, w->nparams);
    w->ahead = 0.0f;
    fm_rng_seed(&w->rng, seed, hdr->client);
    int rc = fm_codec_enc_run(w->enc, w->delta, res, &w->rng, w->coded);
    if (taken)
        trainer_ef_give(w->env.ef, hdr->client);
    return rc ? rc : fm_wire_encode_update_coded(hdr, w->model, NULL, w->coded, &w->buf);
}

/* Encode and PUSH one UPDATE; counts it as sent or dropped. With `acked` (the model came
 * from an acknowledging aggregator) a copy goes into the outbox first: a send that fails
 * is then resent later, not dropped. 1 if sent or kept, 0 if dropped. */
static int s_send_update(trainer_worker_t *w, const fm_wire_update_t *hdr, int acked,
                         uint64_t seed)
{
    trainer_ctx_t *ctx = w->env.ctx;
    int rc = s_encode(w, hdr, seed);
    if (rc != 0) {
        atomic_fetch_add(&ctx->send_dropped, 1);
        s_warn(w, "UPDATE encode failed, dropped", fm_strerror(rc));
        return 0;
    }
    int kept = 0;
    if (acked) {
        rc = trainer_outbox_put(w->env.outbox, hdr->id, w->buf.data, w->buf.len, fm_daemon_now());
        kept = rc >= 0;
        if (rc < 0)
            s_warn(w, "UPDATE not kept for resending", fm_strerror(rc));
        else if (rc > 0)
            s_warn(w, "unacknowledged updates given up to stay within [trainer] unacked_max_mb",
                   "the aggregator is not acknowledging (down, or partitioned?)");
    }
    if (zmq_send(zsock_resolve(w->push), w->buf.data, w->buf.len, 0) < 0) {
        if (kept) {
            s_warn(w, "UPDATE not sent now (aggregator unreachable or slow?)",
                   "kept, resent when due");
            return 1;
        }
        atomic_fetch_add(&ctx->send_dropped, 1);
        s_warn(w, "UPDATE not sent (aggregator unreachable or slow?), dropped",
               zmq_strerror(errno));
        return 0;
    }
    atomic_fetch_add(&ctx->sent, 1);
    atomic_fetch_add(&ctx->bytes_sent, w->buf.len);
    return 1;
}

/* {"t":"sent",...} in the history file (if any): an UPDATE handed to ZeroMQ or kept. */
static void s_history_sent(trainer_worker_t *w, const fm_wire_update_t *hdr, uint64_t boot)
{
    if (!w->env.history)
        return;
    char b[24];
    snprintf(b, sizeof b, "%016llx", (unsigned long long)boot);
    json_t *line = json_pack("{s:s, s:o, s:I, s:I, s:s, s:f}", "t", "sent", "id",
                             fm_jsonl_id(hdr->id), "client", (json_int_t)hdr->client, "base",
                             (json_int_t)hdr->base, "boot", b, "ts", fm_daemon_wallclock());
    int rc = fm_jsonl_put(w->env.history, line);
    if (rc)
        s_warn(w, "history file not written", fm_strerror(rc));
}

/* w->base (model info->version) becomes the local model; the optimiser takes the FedProx mu
 * (a sync round's, else the config's; into info->mu) and the learning rate of that version
 * ([federation] lr_decay). 0, or 1 when a value is out of range (the main thread and the
 * config checked both: not expected). */
static int s_use_model(trainer_worker_t *w, trainer_model_info_t *info)
{
    const fm_cfg_federation_t *fed = &w->env.cfg->federation;
    double mu = info->sync ? info->mu : fed->mu;
    double lr = fm_sgd_lr_at(fed->learning_rate, fed->lr_decay, info->version);
    if (fm_optim_set_mu(w->optim, (float)mu) != 0 || fm_optim_set_lr(w->optim, (float)lr) != 0)
        return 1;
    info->mu = mu;
    memcpy(fm_model_params(w->model), w->base, w->nparams * sizeof(float));
    return 0;
}

/* A secagg job's model: the newest one once its version is >= job->mv, waiting for one up to
 * the job's deadline. 0, or 1 (none in time, or stopping). */
static int s_member_model(trainer_worker_t *w, const trainer_job_t *job,
                          trainer_model_info_t *info)
{
    for (;;) {
        if (trainer_latest_get(w->env.latest, w->base, info) == 0 && info->version >= job->mv)
            break;
        if (trainer_ctx_stopping(w->env.ctx) || fm_daemon_now() >= job->deadline) {
            FM_LOG(LOG_INFO,
                   "worker %d: client %u: no model v%llu or newer before the cohort's training "
                   "deadline: member %u drops",
                   w->index, job->client, (unsigned long long)job->mv, job->index);
            return 1;
        }
        s_idle();
    }
    return s_use_model(w, info);
}

/* One local training of job->client, then its UPDATE (or nothing). */
/* The newest model into w->base and w->model for `job`, with its FedProx mu set. 0, or 1
 * when the job must be dropped (no model, or a model of another round or mode). */
static int s_job_model(trainer_worker_t *w, const trainer_job_t *job, trainer_model_info_t *info)
{
    if (job->secagg) /* a member: the newest model, of at least the invite's version */
        return s_member_model(w, job, info);
    if (trainer_latest_get(w->env.latest, w->base, info) != 0)
        return 1;
    /* the main thread publishes a round's model before its jobs, so a newer model here means
     * the job's round has closed meanwhile: its update would only be dropped as late */
    if (job->sync && (!info->sync || info->round != job->round)) {
        FM_LOG(LOG_DEBUG, "worker %d: client %u: round %llu closed before training began",
               w->index, job->client, (unsigned long long)job->round);
        return 1;
    }
    /* the model is published before trainer_ctx_set_round switches the scheduler to sync: an
     * async job taken in between must not train on a sync model (its update would carry no
     * round and only be dropped as late) */
    if (!job->sync && info->sync) {
        FM_LOG(LOG_DEBUG, "worker %d: client %u: async job on a sync model (round %llu) dropped",
               w->index, job->client, (unsigned long long)info->round);
        return 1;
    }
    return s_use_model(w, info);
}

/* Step-ahead error feedback (trainer_ef.h): the local model starts from base + a x the
 * client's residual; w->ahead records the a applied, for s_encode (0: none, e.g. the
 * client has no residual memory). */
static void s_step_ahead(trainer_worker_t *w, uint32_t client)
{
    w->ahead = 0.0f;
    float a = (float)w->env.cfg->trainer.error_feedback_step_ahead;
    float *res;
    if (!w->env.ef || a <= 0.0f || !(res = trainer_ef_take(w->env.ef, client)))
        return;
    trainer_ef_preview(res, a, fm_model_params(w->model), w->nparams);
    trainer_ef_give(w->env.ef, client);
    w->ahead = a;
}

/* One local training of a client's samples idx[0..n) from w->base, as the simulation wants
 * it: a dropout abandons after a fraction of the work, a slow device takes longer. 0 when
 * an update must be sent (*res, *secs filled), else 1 (counted and logged here). */
static int s_local_train(trainer_worker_t *w, const trainer_job_t *job, const uint32_t *idx,
                         uint32_t n, double mu, fm_train_result_t *res, double *secs)
{
    const fm_cfg_federation_t *fed = &w->env.cfg->federation;
    trainer_ctx_t *ctx = w->env.ctx;
    uint32_t client = job->client;
    /* dropout: the client abandons after a random fraction of its work (a prefix of its
     * samples in every epoch), then sends nothing */
    double fraction = 1.0;
    int drop = trainer_sim_dropout(fed->seed, client, job->run, job->dropout_prob, &fraction);
    uint32_t ntrain = n;
    if (drop) {
        ntrain = (uint32_t)(fraction * n);
        ntrain = ntrain ? ntrain : 1;
    }
    fm_train_config_t tcfg = {
        .epochs = fed->local_epochs,
        .batch = fed->batch_size,
        .seed = trainer_sim_train_seed(fed->seed, client, job->run),
        .max_steps = fm_train_steps_cap((uint64_t)fed->local_steps, fed->local_fraction,
                                        fed->local_epochs, n, fed->batch_size)};
    s_epoch_state_t st = {.ctx = ctx, .epochs_done = 0};
    double t0 = fm_daemon_now();
    int rc, unsaved = 0;
    if (w->env.dp) {
        /* DP-SGD: Poisson-sampled steps with per-example clipping and noise; every step run
         * is accounted to the client, whatever happens to the update */
        fm_dpsgd_config_t dcfg;
        trainer_dp_config(w->env.dp, tcfg.seed, &dcfg);
        fm_dpsgd_hooks_t hooks = {.on_epoch = s_on_epoch, .epoch_arg = &st};
        fm_dpsgd_result_t dres;
        fm_dpsgd_rand_t rand = trainer_dp_rand(w->stream);
        rc = fm_dpsgd_run(w->engine, w->optim, w->model, w->env.ds->x, w->env.ds->y, idx, ntrain,
                          &dcfg, &rand, mu > 0 ? w->base : NULL, &hooks, &dres);
        *res = dres.train;
        /* spend -> save -> send: the steps are durable before the update can leave (see
         * trainer_dp.h); a save that failed stops the update below */
        unsaved = trainer_dp_spend(w->env.dp, client, dres.train.steps, NULL) != 0;
    } else {
        rc = fm_train_run(w->engine, w->optim, w->model, w->env.ds->x, w->env.ds->y, idx, ntrain,
                          &tcfg, mu > 0 ? w->base : NULL, s_on_epoch, &st, res);
    }
    double compute = fm_daemon_now() - t0;
    s_time_add(&ctx->compute_us, compute);
    w->job_compute += compute;
    if (rc != 0) {
        atomic_fetch_add(&ctx->train_errors, 1);
        char detail[96];
        snprintf(detail, sizeof detail, "client %u: %s", client, fm_strerror(rc));
        s_warn(w, "local training failed, nothing sent", detail);
        return 1;
    }
    /* the work done, also when the update is abandoned or dropped below */
    atomic_fetch_add(&ctx->local_steps, res->steps);
    atomic_fetch_add(&ctx->samples, res->samples);
    if (!res->complete) {
        atomic_fetch_add(&ctx->abandoned, 1);
        FM_LOG(LOG_DEBUG, "worker %d: client %u abandoned after %d epochs (stopping)", w->index,
               client, st.epochs_done);
        return 1;
    }
    /* device heterogeneity: a slow device takes f_k times the real compute time */
    double f = trainer_sim_slowdown(fed->seed, client, job->sigma);
    if (f > 1.0) {
        double t1 = fm_daemon_now();
        int stopped = s_sleep_interruptible(ctx, (f - 1.0) * compute);
        double extra = fm_daemon_now() - t1; /* the slow device's extra time */
        s_time_add(&ctx->compute_us, extra);
        w->job_compute += extra;
        if (stopped) {
            atomic_fetch_add(&ctx->abandoned, 1);
            return 1;
        }
    }
    *secs = fm_daemon_now() - t0;
    if (drop) {
        atomic_fetch_add(&ctx->dropouts, 1);
        FM_LOG(LOG_DEBUG, "worker %d: client %u dropped out after %.0f%% of its work", w->index,
               client, 100.0 * fraction);
        return 1;
    }
    if (unsaved) { /* its DP-SGD steps are not durable: never sent (trainer_dp logged it) */
        atomic_fetch_add(&ctx->send_dropped, 1);
        return 1;
    }
    return 0;
}

/* delta = trained params - base, sent as one UPDATE for `job` (n: the client's samples). */
static void s_send_delta(trainer_worker_t *w, const trainer_job_t *job,
                         const trainer_model_info_t *info, uint32_t n,
                         const fm_train_result_t *res, double secs)
{
    const float *params = fm_model_params(w->model);
    for (size_t i = 0; i < w->nparams; i++)
        w->delta[i] = params[i] - w->base[i];
    if (w->env.attack)
        trainer_attack_apply(w->env.attack, w->delta, w->nparams, job->client, job->run);
    fm_wire_update_t hdr;
    memset(&hdr, 0, sizeof hdr);
    int rc = fm_wire_id_new(hdr.id);
    if (rc != 0) {
        atomic_fetch_add(&w->env.ctx->send_dropped, 1);
        s_warn(w, "no random update id, dropped", fm_strerror(rc));
        return;
    }
    snprintf(hdr.trainer, sizeof hdr.trainer, "%s", w->env.trainer_id);
    hdr.client = job->client;
    uint64_t base_version = info->version;
    hdr.base = base_version;
    hdr.num_samples = n;
    hdr.local_steps = res->steps;
    /* under DP-SGD the loss, computed on the examples without noise, would leak around the
     * guarantee: not reported */
    hdr.train_loss = w->env.dp ? NAN : res->loss;
    hdr.train_seconds = secs;
    hdr.round = job->sync ? job->round : 0;
    hdr.idle_before = w->idle_before;
    hdr.sent_at = fm_daemon_wallclock();
    uint64_t seed = trainer_sim_train_seed(w->env.cfg->federation.seed, job->client, job->run);
    if (s_send_update(w, &hdr, info->boot != 0, seed ^ 0x656e636f6465ull /* "encode" */))
        s_history_sent(w, &hdr, info->boot);
    FM_LOG(LOG_DEBUG,
           "worker %d: UPDATE client %u base v%llu samples %u loss %.4f steps %llu "
           "%.3f s",
           w->index, job->client, (unsigned long long)base_version, n, hdr.train_loss,
           (unsigned long long)res->steps, secs);
}

/* A member's delta = trained params - base, clipped, encoded, masked and PUSHed as its
 * MASKED_UPDATE (trainer_secagg_upload counts and logs a failure). */
static void s_send_masked(trainer_worker_t *w, const trainer_job_t *job,
                          const trainer_model_info_t *info, double secs)
{
    const float *params = fm_model_params(w->model);
    for (size_t i = 0; i < w->nparams; i++)
        w->delta[i] = params[i] - w->base[i];
    if (w->env.attack)
        trainer_attack_apply(w->env.attack, w->delta, w->nparams, job->client, job->run);
    int rc = trainer_secagg_upload(w->env.sa, job->cohort, job->index, w->delta, w->nparams,
                                   w->words, &w->buf, zsock_resolve(w->push));
    FM_LOG(LOG_DEBUG,
           "worker %d: MASKED_UPDATE client %u member %u of cohort %016llx base v%llu %.3f s%s",
           w->index, job->client, job->index, (unsigned long long)job->cohort,
           (unsigned long long)info->version, secs, rc ? ": not sent" : "");
}

/* One job: the client's local training on the newest model, then its update. */
static void s_train_client(trainer_worker_t *w, const trainer_job_t *job)
{
    const fm_partition_t *part = w->env.part;
    uint32_t client = job->client;
    uint32_t n = part->offsets[client + 1] - part->offsets[client];
    const uint32_t *idx = part->indices + part->offsets[client];
    if (n == 0) {
        atomic_fetch_add(&w->env.ctx->train_errors, 1);
        FM_LOG(LOG_DEBUG, "worker %d: client %u has no samples, skipped", w->index, client);
        if (job->secagg)
            trainer_secagg_drop(w->env.sa, job->cohort, job->index);
        s_idle();
        return;
    }
    if (w->env.dp && !trainer_dp_admit(w->env.dp, client)) {
        if (job->secagg)
            trainer_secagg_drop(w->env.sa, job->cohort, job->index);
        /* its budget would be exceeded: retired for good, nothing trained or sent */
        uint32_t retired = trainer_ctx_retire(w->env.ctx, client);
        if (retired == w->env.ctx->count)
            FM_LOG(LOG_NOTICE,
                   "every client of the pool (%u) has spent its DP-SGD budget: the "
                   "pool trains no more",
                   retired);
        return;
    }
    trainer_model_info_t info;
    fm_train_result_t res;
    double secs = 0;
    w->ahead = 0.0f;
    int failed = s_job_model(w, job, &info) != 0;
    if (!failed && !job->secagg)
        s_step_ahead(w, client);
    if (failed || s_local_train(w, job, idx, n, info.mu, &res, &secs)) {
        if (job->secagg) /* it will never upload: the protocol recovers its masks */
            trainer_secagg_drop(w->env.sa, job->cohort, job->index);
        return;
    }
    if (job->secagg)
        s_send_masked(w, job, &info, secs);
    else
        s_send_delta(w, job, &info, n, &res, secs);
}

static void *s_run(void *arg)
{
    trainer_worker_t *w = arg;
    trainer_ctx_t *ctx = w->env.ctx;
    double idle_from = fm_daemon_now(); /* the end of the last job, or the start */
    while (!trainer_ctx_stopping(ctx)) {
        trainer_model_info_t info;
        if (!trainer_latest_peek(w->env.latest, &info)) {
            s_idle();
            continue;
        }
        trainer_job_t job;
        if (trainer_ctx_take(ctx, &job) != 0) {
            s_idle();
            continue;
        }
        double t0 = fm_daemon_now();
        w->idle_before = t0 - idle_from;
        s_time_add(&ctx->idle_us, w->idle_before);
        w->job_compute = 0.0;
        atomic_fetch_add(&ctx->busy_workers, 1);
        s_train_client(w, &job);
        atomic_fetch_sub(&ctx->busy_workers, 1);
        trainer_ctx_release(ctx, job.client);
        idle_from = fm_daemon_now();
        s_time_add(&ctx->other_us, idle_from - t0 - w->job_compute);
    }
    s_time_add(&ctx->idle_us, fm_daemon_now() - idle_from);
    return NULL;
}

trainer_worker_t *trainer_worker_new(const trainer_worker_env_t *env, int index, int *err,
                                     fm_errmsg_t *e)
{
    const fm_config_t *cfg = env->cfg;
    trainer_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        *err = fm_errmsg_set(e, -ENOMEM, "worker %d: out of memory", index);
        return NULL;
    }
    w->env = *env;
    w->index = index;
    int rc = 0;
    w->model = fm_model_new(env->model_name, &rc);
    if (!w->model) {
        fm_errmsg_set(e, rc, "worker %d: model %s: %s", index, env->model_name, fm_strerror(rc));
        goto cleanup;
    }
    w->nparams = fm_model_nparams(w->model);
    w->engine = fm_engine_new(w->model, cfg->trainer.threads_per_worker,
                              cfg->federation.batch_size, &rc);
    if (!w->engine) {
        fm_errmsg_set(e, rc, "worker %d: engine: %s", index, fm_strerror(rc));
        goto cleanup;
    }
    fm_sgd_config_t sgd = {.lr = (float)cfg->federation.learning_rate,
                           .momentum = (float)cfg->federation.momentum,
                           .weight_decay = (float)cfg->federation.weight_decay,
                           .clip_norm = (float)cfg->federation.clip_norm,
                           .mu = (float)cfg->federation.mu};
    fm_errmsg_t why;
    if ((rc = fm_sgd_config_check(&sgd, &why)) != 0) {
        fm_errmsg_set(e, rc, "worker %d: optimiser: %s", index, why.msg);
        goto cleanup;
    }
    w->optim = fm_optim_new(w->nparams, &sgd, &rc);
    if (!w->optim) {
        fm_errmsg_set(e, rc, "worker %d: optimiser: %s", index, fm_strerror(rc));
        goto cleanup;
    }
    if (env->dp && !(w->stream = fm_random_stream_new(&rc))) {
        fm_errmsg_set(e, rc, "worker %d: DP-SGD random source: %s", index, fm_strerror(rc));
        goto cleanup;
    }
    w->base = malloc(w->nparams * sizeof(float));
    w->delta = malloc(w->nparams * sizeof(float));
    if (env->sa)
        w->words = malloc((w->nparams + 1) * sizeof(uint32_t));
    if (!w->base || !w->delta || (env->sa && !w->words)) {
        rc = fm_errmsg_set(e, -ENOMEM, "worker %d: out of memory", index);
        goto cleanup;
    }
    if (env->codec && !fm_codec_config_is_raw(env->codec)) {
        w->coded = calloc((size_t)fm_model_nviews(w->model), sizeof *w->coded);
        if (!w->coded || !(w->enc = fm_codec_enc_new(w->model, env->codec, &rc)) ||
            (env->ef && !(w->spare = malloc(w->nparams * sizeof(float))))) {
            rc = rc ? rc : -ENOMEM;
            fm_errmsg_set(e, rc, "worker %d: update encoder: %s", index, fm_strerror(rc));
            goto cleanup;
        }
    }
    fm_sock_opts_t o = {.linger_ms = S_PUSH_LINGER_MS,
                        .sndhwm = S_PUSH_HWM,
                        .sndtimeo_ms = S_PUSH_TIMEOUT_MS,
                        .sec = env->sec,
                        .side = FM_SEC_TO_AGGREGATOR};
    if (!(w->push = fm_sock_new(ZMQ_PUSH, &o, "updates", &rc, e)) ||
        (rc = fm_sock_connect(w->push, "endpoints.updates", cfg->endpoints.updates, e)) != 0)
        goto cleanup;
    return w;
cleanup:
    *err = rc ? rc : FM_EARG;
    trainer_worker_destroy(&w);
    return NULL;
}

int trainer_worker_start(trainer_worker_t *w)
{
    int rc = pthread_create(&w->thread, NULL, s_run, w);
    if (rc != 0)
        return -rc;
    w->started = 1;
    return 0;
}

void trainer_worker_destroy(trainer_worker_t **p)
{
    if (!p || !*p)
        return;
    trainer_worker_t *w = *p;
    if (w->started)
        pthread_join(w->thread, NULL);
    zsock_destroy(&w->push);
    fm_wire_buf_free(&w->buf);
    free(w->base);
    free(w->delta);
    fm_codec_enc_destroy(&w->enc);
    free(w->coded);
    free(w->spare);
    free(w->words);
    fm_random_stream_destroy(&w->stream);
    fm_optim_destroy(&w->optim);
    fm_engine_destroy(&w->engine);
    fm_model_destroy(&w->model);
    free(w);
    *p = NULL;
}
