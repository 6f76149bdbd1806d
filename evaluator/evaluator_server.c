#include "evaluator_server.h"

#include <czmq.h>
#include <errno.h>
#include <sys/resource.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator_jsonl.h"
#include "evaluator_pop.h"
#include "fm_daemon.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_cfg_model.h"
#include "fm_log.h"
#include "fm_loop.h"
#include "fm_model.h"
#include "fm_ratelog.h"
#include "fm_sock.h"
#include "fm_wire.h"

/* Rejection counters: one per FM_E* domain code, one for anything else. */
#define S_NREASONS (FM_ELAST - FM_EFIRST + 2)

/* Where a frame came from. */
typedef enum { S_FROM_SUB, S_FROM_SNAPSHOT } s_source_t;

struct eval_server {
    fm_sec_t *sec; /* borrowed: keys */
    fm_config_t cfg;
    const fm_daemon_args_t *args; /* for SIGHUP reloads (borrowed, may be NULL) */
    fm_dataset_t *test;
    fm_model_t *model; /* the weights being scored */
    fm_engine_t *engine;
    eval_pop_t *pop; /* the clients' held-out slices; NULL: population off */
    double pop_at;   /* monotonic time of the last population scoring, < 0: none yet */
    double eval_at;  /* monotonic time the last scoring began, < 0: none yet */
    float *staged;   /* newest accepted model not yet scored (nparams floats) */
    fm_wire_model_t staged_hdr;
    int have_staged;
    int have_model;             /* a valid MODEL was accepted: stop asking for snapshots */
    double evaluated_created;   /* creation time of the last model scored */
    double last_accuracy;       /* of the last model scored (STATUS=) */
    fm_wire_tensors_t *tensors; /* decode scratch (21 KB) */
    fm_wire_buf_t out;          /* encode scratch */
    eval_jsonl_t *jsonl;
    zsock_t *sub, *dealer, *pub;
    fm_loop_t *loop;
    fm_ratelog_t reject_log[2]; /* per source (s_source_t) */
    char id[64];                /* "from" of SNAPSHOT_REQ */
    eval_server_stats_t stats;
    uint64_t rejected_by[S_NREASONS];
    struct { /* /metrics, set where stats and METRICS are (NULL handles: no registry) */
        fm_metric_t *evaluations, *rejected, *superseded, *version, *accuracy, *loss, *secs;
        fm_metric_t *pop_min, *pop_p10, *pop_mean, *pop_below, *pop_clients;
    } met;
};

/* The loop's handlers (defined with the loop, below). */
static int s_on_ready(void *arg, zsock_t *sock);
static int s_snapshot_tick(void *arg);
static int s_interval_tick(void *arg);
static void s_reload(void *arg);
static void s_status(void *arg, char *buf, size_t cap);

static const char *s_source_name(s_source_t src)
{
    return src == S_FROM_SUB ? "model_pub" : "snapshot";
}

static int s_reason_index(int code)
{
    if (code >= FM_EFIRST && code <= FM_ELAST)
        return code - FM_EFIRST;
    return S_NREASONS - 1;
}

/* Count and log one rejected frame (rate-limited per source). */
static void s_reject(eval_server_t *self, s_source_t src, int code, const char *why)
{
    uint64_t n = ++self->stats.rejected;
    fm_metric_inc(self->met.rejected);
    self->rejected_by[s_reason_index(code)]++;
    fm_ratelog(&self->reject_log[src], LOG_WARNING,
               "rejected frame from %s: %s [%s] (total rejected: %llu)", s_source_name(src), why,
               fm_strerror(code), (unsigned long long)n);
}

/* Create the three sockets: PUB bound, SUB and DEALER connected. */
static int s_sockets_open(eval_server_t *self, fm_errmsg_t *e)
{
    const fm_cfg_endpoints_t *ep = &self->cfg.endpoints;
    fm_sock_opts_t o_pub = {.linger_ms = EVAL_SERVER_PUB_LINGER_MS,
                            .sndhwm = EVAL_SERVER_PUB_HWM};
    /* CONFLATE before connect: only the newest MODEL waits in the queue */
    fm_sock_opts_t o_sub = {
        .maxmsgsize = EVAL_SERVER_MAX_FRAME, .conflate = true, .subscribe_all = true};
    fm_sock_opts_t o_dealer = {
        .sndhwm = 16, .rcvhwm = EVAL_SERVER_DEALER_RCVHWM, .maxmsgsize = EVAL_SERVER_MAX_FRAME};
    o_pub.sec = o_sub.sec = o_dealer.sec = self->sec;
    o_pub.side = FM_SEC_SERVE;
    o_sub.side = o_dealer.side = FM_SEC_TO_BROKER;
    int rc = 0;
    if (!(self->pub = fm_sock_new(ZMQ_PUB, &o_pub, "metrics_pub", &rc, e)) ||
        (rc = fm_sock_bind(self->pub, "endpoints.metrics_pub", ep->metrics_pub, e)) != 0 ||
        !(self->sub = fm_sock_new(ZMQ_SUB, &o_sub, "model_pub", &rc, e)) ||
        (rc = fm_sock_connect(self->sub, "endpoints.model_pub", ep->model_pub, e)) != 0 ||
        !(self->dealer = fm_sock_new(ZMQ_DEALER, &o_dealer, "snapshot", &rc, e)) ||
        (rc = fm_sock_connect(self->dealer, "endpoints.snapshot", ep->snapshot, e)) != 0)
        return rc;
    return 0;
}

/* Population validation: with evaluator.population and federation.holdout > 0, build the
 * trainers' held-out split and a scorer on it (self->pop); with holdout 0, one warning and
 * none. Errors: those of eval_pop_load. */
static int s_population_open(eval_server_t *self, fm_errmsg_t *e)
{
    const fm_config_t *cfg = &self->cfg;
    if (!cfg->evaluator.population)
        return 0;
    if (!(cfg->federation.holdout > 0.0)) {
        FM_LOG(LOG_WARNING, "evaluator.population is on but federation.holdout = 0: no client "
                            "holds samples out, population validation is off");
        return 0;
    }
    double t0 = fm_daemon_now();
    int rc = 0;
    if (!(self->pop = eval_pop_load(cfg, &rc, e)))
        return rc;
    uint32_t nc = eval_pop_nclients(self->pop), scored = eval_pop_scored_clients(self->pop);
    FM_LOG(LOG_INFO,
           "population validation: %u held-out samples of %u clients (%u with an "
           "empty slice, skipped), %.0f%% of each client's %s/train samples under partition %s, "
           "seed %llu (%.2f s); threshold %.2f",
           eval_pop_samples(self->pop), nc, nc - scored, 100.0 * cfg->federation.holdout,
           cfg->federation.data_dir, cfg->federation.partition,
           (unsigned long long)cfg->federation.seed, fm_daemon_now() - t0,
           cfg->evaluator.population_threshold);
    return 0;
}

/* Register the evaluator's series in `m` (may be NULL); the population ones only with
 * population validation on. Values not known yet (no model scored) are NaN, the version -1.
 * 0 or -ENOMEM. */
static int s_metrics_register(eval_server_t *self, fm_metrics_t *m)
{
    static const double secs_b[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60};
    self->met.evaluations = fm_metrics_counter(
        m, "fedmq_evaluations_total", "Model versions scored (METRICS published).", NULL);
    self->met.rejected = fm_metrics_counter(m, "fedmq_frames_rejected_total",
                                            "Frames rejected (framing, type, model, shape, "
                                            "non-finite values).",
                                            NULL);
    self->met.superseded = fm_metrics_counter(
        m, "fedmq_models_superseded_total",
        "Model versions never scored: a newer one arrived before their turn.", NULL);
    self->met.version = fm_metrics_gauge(
        m, "fedmq_model_version", "Version of the last model scored, -1 = none yet.", NULL);
    self->met.accuracy = fm_metrics_gauge(m, "fedmq_eval_accuracy",
                                          "Test accuracy of the last model scored (0..1).", NULL);
    self->met.loss = fm_metrics_gauge(m, "fedmq_eval_loss",
                                      "Mean test loss (NLL) of the last model scored.", NULL);
    self->met.secs = fm_metrics_histogram(m, "fedmq_eval_seconds",
                                          "Time to score a model on the test set.", NULL, secs_b,
                                          sizeof secs_b / sizeof secs_b[0]);
    fm_metric_set(self->met.version, -1);
    fm_metric_set(self->met.accuracy, NAN);
    fm_metric_set(self->met.loss, NAN);
    if (self->pop) {
        /* a gauge per statistic: promtool refuses a "quantile" label outside summaries */
        const char *help = "Population validation: the clients' held-out accuracies of the "
                           "last model scored: the worst client (min), the nearest-rank 10th "
                           "percentile (p10), the unweighted mean.";
        self->met.pop_min = fm_metrics_gauge(m, "fedmq_population_accuracy", help,
                                             (const char *[]){"stat", "min", NULL});
        self->met.pop_p10 = fm_metrics_gauge(m, "fedmq_population_accuracy", help,
                                             (const char *[]){"stat", "p10", NULL});
        self->met.pop_mean = fm_metrics_gauge(m, "fedmq_population_accuracy", help,
                                              (const char *[]){"stat", "mean", NULL});
        self->met.pop_below = fm_metrics_gauge(
            m, "fedmq_population_below_threshold_ratio",
            "Population validation: fraction of the clients below "
            "evaluator.population_threshold.",
            NULL);
        self->met.pop_clients = fm_metrics_gauge(m, "fedmq_population_clients",
                                                 "Population validation: clients scored.", NULL);
        fm_metric_set(self->met.pop_min, NAN);
        fm_metric_set(self->met.pop_p10, NAN);
        fm_metric_set(self->met.pop_mean, NAN);
        fm_metric_set(self->met.pop_below, NAN);
    }
    return fm_metrics_status(m);
}

eval_server_t *eval_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                               fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    int rc = -ENOMEM;
    eval_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        fm_errmsg_set(e, rc, "evaluator: out of memory");
        goto cleanup;
    }
    self->pop_at = -1.0;
    self->eval_at = -1.0;
    self->cfg = *cfg;
    self->args = args;
    self->sec = sec;
    snprintf(self->id, sizeof self->id, "evaluator/%ld", (long)getpid());
    if (fm_cfg_model_builtin_only(cfg, EVAL_SERVER_SPEC_REFUSAL, e) != 0) {
        rc = FM_EARG; /* the config names a model this program cannot score: exit 2 */
        goto cleanup;
    }
    if (!(self->model = fm_cfg_model_new(cfg, &rc, e)))
        goto cleanup;
    /* sockets first: a port in use fails at once, before anything is loaded or logged */
    if ((rc = s_sockets_open(self, e)) != 0)
        goto cleanup;
    fm_errmsg_t why = {{0}};
    self->test = fm_dataset_load_dir(cfg->federation.data_dir, cfg->evaluator.test_split,
                                     FM_FASHION_MEAN, FM_FASHION_STD, &rc, &why);
    if (!self->test) {
        fm_errmsg_set(e, rc, "[federation] data_dir = %s: %s", cfg->federation.data_dir, why.msg);
        goto cleanup;
    }
    if (self->test->rows != FM_IMAGE_H || self->test->cols != FM_IMAGE_W || self->test->n == 0) {
        rc = fm_errmsg_set(e, FM_ESHAPE, "%s/%s: %u images of %ux%u, expected 28x28 images",
                           cfg->federation.data_dir, cfg->evaluator.test_split, self->test->n,
                           self->test->rows, self->test->cols);
        goto cleanup;
    }
    size_t nparams = fm_model_nparams(self->model);
    self->staged = malloc(nparams * sizeof(float));
    self->tensors = malloc(sizeof *self->tensors);
    if (!self->staged || !self->tensors) {
        rc = fm_errmsg_set(e, -ENOMEM, "evaluator: out of memory");
        goto cleanup;
    }
    if (!(self->engine = fm_engine_new(self->model, EVAL_SERVER_THREADS, EVAL_SERVER_BATCH,
                                       &rc))) {
        fm_errmsg_set(e, rc, "evaluation engine (%d threads): %s", EVAL_SERVER_THREADS,
                      fm_strerror(rc));
        goto cleanup;
    }
    if ((rc = s_population_open(self, e)) != 0)
        goto cleanup;
    if ((rc = s_metrics_register(self, metrics)) != 0) {
        fm_errmsg_set(e, rc, "metrics: %s", fm_strerror(rc));
        goto cleanup;
    }
    if (!(self->jsonl = eval_jsonl_open(cfg->evaluator.metrics_file, &rc, e)))
        goto cleanup;
    if (!(self->loop = fm_loop_new(e))) {
        rc = -ENOMEM;
        goto cleanup;
    }
    fm_loop_reader(self->loop, self->dealer, s_on_ready, self);
    fm_loop_reader(self->loop, self->sub, s_on_ready, self);
    fm_loop_timer(self->loop, EVAL_SERVER_SNAPSHOT_RETRY_S, 0.0, s_snapshot_tick, self);
    fm_loop_timer(self->loop, EVAL_SERVER_INTERVAL_TICK_S, EVAL_SERVER_INTERVAL_TICK_S,
                  s_interval_tick, self);
    fm_loop_on_reload(self->loop, s_reload, self);
    fm_loop_on_status(self->loop, s_status, self);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0); /* [evaluator] nice, applied by fm_daemon_main */
    FM_LOG(LOG_INFO,
           "evaluating %s (%zu parameters) on %u %s samples from %s with %d threads at nice "
           "%d; models from %s (snapshots %s), METRICS on %s, records to %s",
           fm_model_name(self->model), nparams, self->test->n, cfg->evaluator.test_split,
           cfg->federation.data_dir, EVAL_SERVER_THREADS, errno ? 0 : nice,
           cfg->endpoints.model_pub, cfg->endpoints.snapshot, cfg->endpoints.metrics_pub,
           cfg->evaluator.metrics_file);
    rc = 0;
cleanup:
    if (rc != 0) {
        if (err)
            *err = rc;
        eval_server_destroy(&self);
    }
    return self;
}

void eval_server_destroy(eval_server_t **p)
{
    if (!p || !*p)
        return;
    eval_server_t *self = *p;
    fm_loop_destroy(&self->loop);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->dealer);
    zsock_destroy(&self->pub); /* linger EVAL_SERVER_PUB_LINGER_MS */
    eval_jsonl_close(&self->jsonl);
    fm_engine_destroy(&self->engine);
    eval_pop_destroy(&self->pop);
    fm_dataset_destroy(&self->test);
    fm_model_destroy(&self->model);
    fm_wire_buf_free(&self->out);
    free(self->tensors);
    free(self->staged);
    free(self);
    *p = NULL;
}

void eval_server_stats(const eval_server_t *self, eval_server_stats_t *out)
{
    *out = self->stats;
}

/* Send SNAPSHOT_REQ (never blocks; a full queue just waits for the next retry). */
static void s_snapshot_request(eval_server_t *self)
{
    fm_wire_snapshot_req_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.from, sizeof r.from, "%s", self->id);
    r.have = self->stats.have_evaluated ? self->stats.last_version : 0;
    int rc = fm_wire_encode_snapshot_req(&r, &self->out);
    if (rc != 0) {
        FM_LOG(LOG_ERR, "SNAPSHOT_REQ: cannot encode: %s", fm_strerror(rc));
        return;
    }
    if (zmq_send(zsock_resolve(self->dealer), self->out.data, self->out.len, ZMQ_DONTWAIT) < 0) {
        FM_LOG(LOG_DEBUG, "SNAPSHOT_REQ to %s not queued: %s", self->cfg.endpoints.snapshot,
               zmq_strerror(errno));
        return;
    }
    self->stats.snapshot_reqs++;
    FM_LOG(LOG_DEBUG, "SNAPSHOT_REQ sent to %s", self->cfg.endpoints.snapshot);
}

/* Check one frame; stage it if it is a valid MODEL for our model that is not the one
 * already scored or staged. */
static void s_accept(eval_server_t *self, s_source_t src, const void *buf, size_t len)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t type = FM_WIRE_NONE;
    fm_wire_model_t hdr;
    int rc = fm_wire_peek(buf, len, &type, &e);
    if (rc != 0) {
        s_reject(self, src, rc, e.msg);
        return;
    }
    if (type != FM_WIRE_MODEL) {
        snprintf(e.msg, sizeof e.msg, "%s: unexpected message type (expected MODEL)",
                 fm_wire_type_name(type));
        s_reject(self, src, FM_EFORMAT, e.msg);
        return;
    }
    if ((rc = fm_wire_decode_model(buf, len, &hdr, self->tensors, &e)) != 0) {
        s_reject(self, src, rc, e.msg);
        return;
    }
    const char *want = fm_model_name(self->model);
    if (strcmp(hdr.model, want) != 0) {
        snprintf(e.msg, sizeof e.msg, "MODEL v%llu: model '%.64s', expected '%s'",
                 (unsigned long long)hdr.version, hdr.model, want);
        s_reject(self, src, FM_EMODEL, e.msg);
        return;
    }
    if ((rc = fm_wire_tensors_check(self->tensors, self->model, &e)) != 0 ||
        (rc = fm_wire_tensors_finite(self->tensors, self->model, &e)) != 0) {
        char why[sizeof e.msg + 32];
        snprintf(why, sizeof why, "MODEL v%llu: %s", (unsigned long long)hdr.version, e.msg);
        s_reject(self, src, rc, why);
        return;
    }
    int same_as_scored = self->stats.have_evaluated && hdr.version == self->stats.last_version &&
                         hdr.created == self->evaluated_created;
    int same_as_staged = self->have_staged && hdr.version == self->staged_hdr.version &&
                         hdr.created == self->staged_hdr.created;
    if (same_as_scored || same_as_staged) {
        self->stats.duplicates++;
        FM_LOG(LOG_DEBUG, "MODEL v%llu from %s: already %s, ignored",
               (unsigned long long)hdr.version, s_source_name(src),
               same_as_scored ? "evaluated" : "queued");
        return;
    }
    /* checked and finite above: the copy cannot fail */
    if ((rc = fm_wire_tensors_copy(self->tensors, self->model, self->staged, &e)) != 0) {
        self->have_staged = 0;
        s_reject(self, src, rc, e.msg);
        return;
    }
    if (self->have_staged) {
        self->stats.superseded++;
        fm_metric_inc(self->met.superseded);
        FM_LOG(LOG_DEBUG, "MODEL v%llu skipped: superseded by v%llu before evaluation",
               (unsigned long long)self->staged_hdr.version, (unsigned long long)hdr.version);
    }
    self->staged_hdr = hdr;
    self->have_staged = 1;
    if (!self->have_model)
        FM_LOG(LOG_INFO, "first model: v%llu from %s", (unsigned long long)hdr.version,
               s_source_name(src));
    self->have_model = 1;
}

/* Read one message from `sock` without waiting; 1 if one was handled, 0 if none was
 * waiting. Multipart messages are rejected (every fedmq message is one frame), except that
 * empty delimiter frames before the body (a REQ-style envelope) are skipped. */
static int s_read_one(eval_server_t *self, zsock_t *sock, s_source_t src)
{
    void *h = zsock_resolve(sock);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, h, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return 0;
    }
    int parts = 1;
    while (zmq_msg_more(&msg) && zmq_msg_size(&msg) == 0) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, h, 0) < 0) {
            zmq_msg_close(&msg);
            return 1;
        }
    }
    while (zmq_msg_more(&msg)) { /* discard the rest of a multipart message */
        zmq_msg_t rest;
        zmq_msg_init(&rest);
        int r = zmq_msg_recv(&rest, h, 0);
        parts++;
        int more = r >= 0 && zmq_msg_more(&rest);
        zmq_msg_close(&rest);
        if (!more)
            break;
    }
    if (parts > 1) {
        char why[96];
        snprintf(why, sizeof why, "a message of %d frames (fedmq messages are one frame)", parts);
        s_reject(self, src, FM_EFORMAT, why);
    } else if (src == S_FROM_SNAPSHOT && self->have_model) {
        FM_LOG(LOG_DEBUG, "snapshot reply ignored: the model feed is running");
    } else {
        s_accept(self, src, zmq_msg_data(&msg), zmq_msg_size(&msg));
    }
    zmq_msg_close(&msg);
    return 1;
}

/* Read everything waiting on both sockets (snapshot replies first, the feed last so that
 * its newest model wins), at most EVAL_SERVER_DRAIN_MAX messages per socket. */
static void s_drain(eval_server_t *self)
{
    for (int i = 0; i < EVAL_SERVER_DRAIN_MAX; i++)
        if (!s_read_one(self, self->dealer, S_FROM_SNAPSHOT))
            break;
    for (int i = 0; i < EVAL_SERVER_DRAIN_MAX; i++)
        if (!s_read_one(self, self->sub, S_FROM_SUB))
            break;
}

static void s_evaluate(eval_server_t *self);

/* ---- the loop -------------------------------------------------------------------------- */

/* Score the staged model now if there is one and evaluator.min_interval_s (reloadable) has
 * passed since the last scoring began; else it waits (s_interval_tick), and a newer version
 * arriving meanwhile replaces it. */
/* 1 when something last done at `at` (< 0: never) may be done again at `now`, at most once
 * per `interval` seconds. */
static int s_due(double at, double interval, double now)
{
    return at < 0 || now - at >= interval;
}

static void s_evaluate_due(eval_server_t *self)
{
    if (self->have_staged &&
        s_due(self->eval_at, self->cfg.evaluator.min_interval_s, fm_daemon_now()))
        s_evaluate(self);
}

/* A socket has messages: drain both, score the newest staged model when due. */
static int s_on_ready(void *arg, zsock_t *sock)
{
    eval_server_t *self = arg;
    (void)sock;
    s_drain(self);
    s_evaluate_due(self);
    return 0;
}

/* Every EVAL_SERVER_INTERVAL_TICK_S: a staged model that waited for min_interval_s. */
static int s_interval_tick(void *arg)
{
    s_evaluate_due(arg);
    return 0;
}

/* Every EVAL_SERVER_SNAPSHOT_RETRY_S (the first at once): SNAPSHOT_REQ while no model. */
static int s_snapshot_tick(void *arg)
{
    eval_server_t *self = arg;
    if (!self->have_model)
        s_snapshot_request(self);
    return 0;
}

/* Score the staged model, publish METRICS, append the JSON record. */
static void s_evaluate(eval_server_t *self)
{
    fm_wire_model_t hdr = self->staged_hdr;
    self->have_staged = 0;
    memcpy(fm_model_params(self->model), self->staged,
           fm_model_nparams(self->model) * sizeof(float));
    double t0 = fm_daemon_now();
    self->eval_at = t0;
    fm_eval_t ev;
    fm_engine_evaluate(self->engine, self->model, self->test->x, self->test->y, NULL,
                       self->test->n, &ev);
    double secs = fm_daemon_now() - t0;

    fm_wire_metrics_t m;
    memset(&m, 0, sizeof m);
    m.version = hdr.version;
    snprintf(m.model, sizeof m.model, "%s", fm_model_name(self->model));
    m.accuracy = ev.accuracy;
    m.loss = ev.loss;
    for (int c = 0; c < FM_NCLASSES; c++)
        m.class_acc[c] = ev.class_total[c] ? (double)ev.class_correct[c] / ev.class_total[c]
                                           : 0.0;
    m.num_samples = ev.n;
    m.eval_seconds = secs;
    m.applied = hdr.applied; /* the aggregator's progress, for `fedmq watch` */
    m.updates_per_s = hdr.updates_per_s;
    m.epsilon = hdr.epsilon;           /* client-level DP: the budget this version spent */
    m.sa_completed = hdr.sa_completed; /* [secagg]: the cohorts so far */
    m.sa_aborted = hdr.sa_aborted;
    m.sa_dropped = hdr.sa_dropped;
    m.delta = hdr.delta;

    /* population: every client's held-out slice (the threshold is reloadable) */
    double pop_secs = 0.0;
    eval_pop_summary_t pop;
    memset(&pop, 0, sizeof pop);
    /* population: at most once per population_interval_s (reloadable), the first always */
    double t1 = fm_daemon_now();
    if (self->pop && s_due(self->pop_at, self->cfg.evaluator.population_interval_s, t1)) {
        self->pop_at = t1;
        eval_pop_score(self->pop, self->engine, self->model,
                       self->cfg.evaluator.population_threshold, &pop);
        pop_secs = fm_daemon_now() - t1;
        m.pop_clients = pop.clients;
        m.pop_mean = pop.mean;
        m.pop_min = pop.min;
        m.pop_worst = pop.worst;
        m.pop_p10 = pop.p10;
        m.pop_threshold = pop.threshold;
        m.pop_below = pop.below;
        m.pop_seconds = pop_secs;
    }
    m.timestamp = fm_daemon_wallclock();

    self->stats.evaluations++;
    self->last_accuracy = ev.accuracy;
    fm_metric_inc(self->met.evaluations);
    fm_metric_set(self->met.version, (double)m.version);
    fm_metric_set(self->met.accuracy, m.accuracy);
    fm_metric_set(self->met.loss, m.loss);
    fm_metric_observe(self->met.secs, secs);
    if (pop.clients > 0) {
        fm_metric_set(self->met.pop_min, pop.min);
        fm_metric_set(self->met.pop_p10, pop.p10);
        fm_metric_set(self->met.pop_mean, pop.mean);
        fm_metric_set(self->met.pop_below, pop.below);
    }
    fm_metric_set(self->met.pop_clients, pop.clients);
    self->stats.have_evaluated = 1;
    self->stats.last_version = hdr.version;
    self->evaluated_created = hdr.created;

    fm_errmsg_t e = {{0}};
    int rc = fm_wire_encode_metrics(&m, &self->out);
    if (rc != 0)
        FM_LOG(LOG_ERR, "METRICS v%llu: cannot encode: %s", (unsigned long long)m.version,
               fm_strerror(rc));
    else if (zmq_send(zsock_resolve(self->pub), self->out.data, self->out.len, ZMQ_DONTWAIT) < 0)
        FM_LOG(LOG_ERR, "METRICS v%llu: publish on %s failed: %s", (unsigned long long)m.version,
               self->cfg.endpoints.metrics_pub, zmq_strerror(errno));
    if ((rc = eval_jsonl_append(self->jsonl, &m, hdr.created, &e)) != 0)
        FM_LOG(LOG_ERR, "METRICS v%llu: %s", (unsigned long long)m.version, e.msg);
    FM_LOG(LOG_INFO,
           "evaluated %s v%llu: accuracy=%.4f loss=%.4f on %llu samples in %.3fs "
           "(model created %.3f)",
           m.model, (unsigned long long)m.version, m.accuracy, m.loss,
           (unsigned long long)m.num_samples, secs, hdr.created);
    if (pop.clients > 0)
        FM_LOG(LOG_INFO,
               "population %s v%llu: %u clients mean=%.4f worst=%.4f (client %u) "
               "p10=%.4f below %.2f: %.1f%% on %u held-out samples in %.3fs (extra)",
               m.model, (unsigned long long)m.version, pop.clients, pop.mean, pop.min, pop.worst,
               pop.p10, pop.threshold, 100.0 * pop.below, eval_pop_samples(self->pop), pop_secs);
}

/* A reloaded config: reopen the metrics file (at its new path, or at the same path: after
 * a rotation it is created again), then take the config (population_threshold is read
 * from self->cfg at each evaluation). If the file cannot be opened nothing changes. */
static int s_apply(void *arg, const fm_config_t *fresh, fm_errmsg_t *e)
{
    eval_server_t *self = arg;
    int err = 0;
    eval_jsonl_t *jsonl = eval_jsonl_open(fresh->evaluator.metrics_file, &err, e);
    if (!jsonl)
        return err;
    eval_jsonl_close(&self->jsonl);
    self->jsonl = jsonl;
    self->cfg = *fresh;
    FM_LOG(LOG_INFO, "SIGHUP: metrics file %s reopened", eval_jsonl_path(self->jsonl));
    return 0;
}

static void s_reload(void *arg)
{
    eval_server_t *self = arg;
    fm_daemon_reload(&self->cfg, self->args, "evaluator.log_level", s_apply, self);
}

/* fm_loop status hook (systemd's STATUS=): "version 12: accuracy 0.8123, 15 evaluations, 0
 * frames rejected", or "waiting for the first model, ...". */
static void s_status(void *arg, char *buf, size_t cap)
{
    eval_server_t *self = arg;
    const eval_server_stats_t *s = &self->stats;
    char last[64] = "waiting for the first model";
    if (s->have_evaluated)
        snprintf(last, sizeof last, "version %llu: accuracy %.4f",
                 (unsigned long long)s->last_version, self->last_accuracy);
    snprintf(buf, cap, "%s, %llu evaluations, %llu frames rejected", last,
             (unsigned long long)s->evaluations, (unsigned long long)s->rejected);
}

/* The exit line: counters, and the rejections by reason. */
static void s_log_summary(const eval_server_t *self)
{
    char reasons[512] = "";
    size_t len = 0;
    for (int i = 0; i < S_NREASONS; i++) {
        if (self->rejected_by[i] == 0 || len >= sizeof reasons)
            continue;
        const char *name = i == S_NREASONS - 1 ? "other" : fm_strerror(FM_EFIRST + i);
        int n = snprintf(reasons + len, sizeof reasons - len, "%s%s: %llu", len ? ", " : " (",
                         name, (unsigned long long)self->rejected_by[i]);
        len += n > 0 ? (size_t)n : 0;
    }
    if (len > 0 && len < sizeof reasons - 1)
        strcat(reasons, ")");
    const eval_server_stats_t *s = &self->stats;
    FM_LOG(LOG_INFO,
           "stopping: %llu evaluations, %llu frames rejected%s, %llu duplicates, "
           "%llu superseded, %llu snapshot requests",
           (unsigned long long)s->evaluations, (unsigned long long)s->rejected, reasons,
           (unsigned long long)s->duplicates, (unsigned long long)s->superseded,
           (unsigned long long)s->snapshot_reqs);
}

int eval_server_run(eval_server_t *self)
{
    int rc = fm_loop_run(self->loop);
    if (rc != 0)
        FM_LOG(LOG_ERR, "poll failed: %s", fm_strerror(rc));
    s_log_summary(self);
    return rc;
}
