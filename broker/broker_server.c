#include "broker_server.h"

#include <czmq.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fm_members.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_wire.h"

/* Rejected frames of one socket: counted always, logged at most once a second. */
typedef struct {
    const char *what;      /* "aggregator_models" or "snapshot" (static) */
    uint64_t *count;       /* the stats counter */
    double last_log;       /* monotonic seconds */
    uint64_t suppressed;   /* rejections not logged since last_log */
} s_reject_log_t;

/* A requester waiting for the first model. */
typedef struct {
    zframe_t *identity;    /* owned */
    bool delimiter;        /* came from a REQ: reply with an empty delimiter frame */
} s_pending_t;

struct broker_server {
    fm_config_t cfg;
    const fm_daemon_args_t *args;  /* borrowed, for SIGHUP reloads; may be NULL */
    fm_model_t *layout;            /* the configured model (tensor check only) */
    fm_wire_tensors_t *tensors;    /* decode scratch (about 21 KB) */
    zsock_t *sub, *pub, *router;
    zpoller_t *poller;
    fm_members_t *members;

    zframe_t *cache;               /* raw bytes of the newest MODEL, NULL before the first */
    uint64_t cache_version;
    double cache_created;
    uint64_t cache_round;           /* sync rounds: a new round of the same version is new */
    int64_t cache_cohort;           /* cohort size, -1 = no cohort (async) */

    s_pending_t *pending;          /* [BROKER_PENDING_MAX] */
    int npending;

    broker_stats_t stats;
    s_reject_log_t rej_sub, rej_router;
    double next_summary;
};

/* ---- helpers ------------------------------------------------------------------------- */

/* Count a rejected frame; log it unless another one was logged less than 1 s ago. */
static void s_reject(s_reject_log_t *r, int code, const char *why)
{
    (*r->count)++;
    double now = fm_daemon_now();
    if (now - r->last_log < 1.0) {
        r->suppressed++;
        return;
    }
    if (r->suppressed)
        FM_LOG(LOG_WARNING, "%s: frame rejected (%s): %s (%llu more rejected since the last report)",
               r->what, fm_strerror(code), why, (unsigned long long)r->suppressed);
    else
        FM_LOG(LOG_WARNING, "%s: frame rejected (%s): %s", r->what, fm_strerror(code), why);
    r->last_log = now;
    r->suppressed = 0;
}

/* Send the cached MODEL to one ROUTER peer: [identity][(empty)][model]. The frames are
 * copies; the cache stays. ROUTER_MANDATORY is off, so a vanished peer's reply is dropped
 * by ZeroMQ without an error; only local failures can be counted. */
static void s_reply_model(broker_server_t *self, zframe_t *identity, bool delimiter)
{
    zmsg_t *msg = zmsg_new();
    if (!msg)
        goto fail;
    if (zmsg_addmem(msg, zframe_data(identity), zframe_size(identity)) != 0)
        goto fail;
    if (delimiter && zmsg_addmem(msg, NULL, 0) != 0)
        goto fail;
    if (zmsg_addmem(msg, zframe_data(self->cache), zframe_size(self->cache)) != 0)
        goto fail;
    if (zmsg_send(&msg, self->router) != 0)
        goto fail;
    self->stats.snapshots_served++;
    return;
fail:
    zmsg_destroy(&msg);
    self->stats.reply_failed++;
    FM_LOG(LOG_WARNING, "snapshot: reply (model version %llu) could not be sent: %s",
           (unsigned long long)self->cache_version, zmq_strerror(zmq_errno()));
}

/* Remember a requester until the first model arrives (dedup by identity, bounded). */
static void s_pending_add(broker_server_t *self, zframe_t *identity, bool delimiter)
{
    for (int i = 0; i < self->npending; i++)
        if (zframe_eq(self->pending[i].identity, identity))
            return;
    if (self->npending >= BROKER_PENDING_MAX) {
        self->stats.pending_dropped++;
        return;
    }
    zframe_t *copy = zframe_dup(identity);
    if (!copy) {
        self->stats.pending_dropped++;
        return;
    }
    self->pending[self->npending].identity = copy;
    self->pending[self->npending].delimiter = delimiter;
    self->npending++;
}

/* Forget a pending requester (it said BYE). */
static void s_pending_remove(broker_server_t *self, zframe_t *identity)
{
    for (int i = 0; i < self->npending; i++) {
        if (zframe_eq(self->pending[i].identity, identity)) {
            zframe_destroy(&self->pending[i].identity);
            self->pending[i] = self->pending[--self->npending];
            return;
        }
    }
}

/* Answer every pending requester with the (just cached) model. */
static void s_pending_flush(broker_server_t *self)
{
    if (self->npending)
        FM_LOG(LOG_INFO, "snapshot: answering %d requester(s) that were waiting for a model",
               self->npending);
    for (int i = 0; i < self->npending; i++) {
        s_reply_model(self, self->pending[i].identity, self->pending[i].delimiter);
        zframe_destroy(&self->pending[i].identity);
    }
    self->npending = 0;
}

/* Answer now if a model is cached, else remember the requester. */
static void s_serve(broker_server_t *self, zframe_t *identity, bool delimiter)
{
    if (self->cache)
        s_reply_model(self, identity, delimiter);
    else
        s_pending_add(self, identity, delimiter);
}

/* Validate a MODEL frame from the aggregator into *hdr. 0 or an FM_E* code with `e`. */
static int s_check_model(broker_server_t *self, zframe_t *frame, fm_wire_model_t *hdr,
                         fm_errmsg_t *e)
{
    const void *buf = zframe_data(frame);
    size_t len = zframe_size(frame);
    fm_wire_type_t type = FM_WIRE_NONE;
    int rc = fm_wire_peek(buf, len, &type, e);
    if (rc != 0)
        return rc;
    if (type != FM_WIRE_MODEL)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: not a MODEL", fm_wire_type_name(type));
    if ((rc = fm_wire_decode_model(buf, len, hdr, self->tensors, e)) != 0)
        return rc;
    if (strcmp(hdr->model, fm_model_name(self->layout)) != 0)
        return fm_errmsg_set(e, FM_EMODEL, "MODEL: model: '%s', this broker serves '%s'",
                             hdr->model, fm_model_name(self->layout));
    if ((rc = fm_wire_tensors_check(self->tensors, self->layout, e)) != 0)
        return rc;
    return fm_wire_tensors_finite(self->tensors, e);
}

/* ---- socket handlers ------------------------------------------------------------------- */

/* One message on the SUB: validate, cache and forward if new. */
static void s_on_sub(broker_server_t *self)
{
    zmsg_t *msg = zmsg_recv(self->sub);
    zframe_t *frame = NULL;
    if (!msg)
        return; /* interrupted */
    if (zmsg_size(msg) != 1) {
        s_reject(&self->rej_sub, FM_EFORMAT, "multipart message (a MODEL is one frame)");
        goto cleanup;
    }
    frame = zmsg_pop(msg);
    fm_wire_model_t hdr;
    fm_errmsg_t e = {{0}};
    int rc = s_check_model(self, frame, &hdr, &e);
    if (rc != 0) {
        s_reject(&self->rej_sub, rc, e.msg);
        goto cleanup;
    }
    self->stats.models_received++;
    int64_t cohort = hdr.cohort.present ? (int64_t)hdr.cohort.count : -1;
    if (self->cache && hdr.version == self->cache_version &&
        memcmp(&hdr.created, &self->cache_created, sizeof hdr.created) == 0 &&
        hdr.round == self->cache_round && cohort == self->cache_cohort)
        goto cleanup; /* the aggregator's periodic repeat (bitwise: a NaN ts repeats too) */
    if (!self->cache)
        FM_LOG(LOG_INFO, "model: first model cached: %s version %llu (%zu bytes)", hdr.model,
               (unsigned long long)hdr.version, zframe_size(frame));
    else if (hdr.version < self->cache_version)
        FM_LOG(LOG_NOTICE, "model: version went back from %llu to %llu (aggregator restarted "
               "from a checkpoint?): the latest wins", (unsigned long long)self->cache_version,
               (unsigned long long)hdr.version);
    else if (hdr.version == self->cache_version && hdr.round != self->cache_round)
        FM_LOG(LOG_DEBUG, "model: version %llu, round %llu", (unsigned long long)hdr.version,
               (unsigned long long)hdr.round);
    else if (hdr.version == self->cache_version && cohort != self->cache_cohort)
        FM_LOG(LOG_DEBUG, "model: version %llu, round %llu closed",
               (unsigned long long)hdr.version, (unsigned long long)hdr.round);
    else if (hdr.version == self->cache_version)
        FM_LOG(LOG_NOTICE, "model: version %llu again with a new creation time (aggregator "
               "restarted?): the latest wins", (unsigned long long)hdr.version);
    else
        FM_LOG(LOG_DEBUG, "model: version %llu cached", (unsigned long long)hdr.version);

    zframe_destroy(&self->cache);
    self->cache = frame;
    frame = NULL;
    self->cache_version = hdr.version;
    self->cache_created = hdr.created;
    self->cache_round = hdr.round;
    self->cache_cohort = cohort;

    zframe_t *copy = zframe_dup(self->cache);
    if (copy && zframe_send(&copy, self->pub, 0) == 0)
        self->stats.models_forwarded++;
    else
        FM_LOG(LOG_WARNING, "model_pub: publish of version %llu failed: %s",
               (unsigned long long)hdr.version, zmq_strerror(zmq_errno()));
    zframe_destroy(&copy);
    s_pending_flush(self);
cleanup:
    zframe_destroy(&frame);
    zmsg_destroy(&msg);
}

/* One membership message (already peeked as HELLO/HEARTBEAT/BYE). */
static void s_on_member(broker_server_t *self, zframe_t *body, zframe_t *identity,
                        bool delimiter)
{
    fm_wire_type_t type = FM_WIRE_NONE;
    fm_wire_member_t m;
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_decode_member(zframe_data(body), zframe_size(body), &type, &m, &e);
    if (rc != 0) {
        s_reject(&self->rej_router, rc, e.msg);
        return;
    }
    uint32_t old_pid = 0;
    fm_member_event_t ev =
        fm_members_apply(self->members, type, &m, fm_daemon_now(), &old_pid);
    switch (ev) {
    case FM_MEMBER_JOINED:
        FM_LOG(LOG_INFO, "trainer %s joined (pid %u, clients %u+%u, %u workers; %d live)",
               m.trainer, m.pid, m.client_first, m.client_count, m.workers,
               fm_members_count(self->members));
        break;
    case FM_MEMBER_RESTARTED:
        FM_LOG(LOG_NOTICE, "trainer %s restarted (pid %u -> %u, clients %u+%u, %u workers)",
               m.trainer, old_pid, m.pid, m.client_first, m.client_count, m.workers);
        break;
    case FM_MEMBER_LEFT:
        FM_LOG(LOG_INFO, "trainer %s left (pid %u; %d live)", m.trainer, m.pid,
               fm_members_count(self->members));
        break;
    case FM_MEMBER_FULL:
        FM_LOG(LOG_WARNING, "trainer %s not registered: %d trainers already (the maximum)",
               m.trainer, FM_MEMBERS_MAX);
        break;
    case FM_MEMBER_STALE:
        FM_LOG(LOG_DEBUG, "trainer %s: stale %s (seq %llu) ignored", m.trainer,
               fm_wire_type_name(type), (unsigned long long)m.seq);
        break;
    case FM_MEMBER_REFRESHED:
    case FM_MEMBER_UNKNOWN_BYE:
        break;
    }
    if (type == FM_WIRE_HELLO)
        s_serve(self, identity, delimiter);
    else if (type == FM_WIRE_BYE)
        s_pending_remove(self, identity);
}

/* One message on the ROUTER: [identity][body] or [identity][empty][body]. */
static void s_on_router(broker_server_t *self)
{
    zmsg_t *msg = zmsg_recv(self->router);
    zframe_t *identity = NULL, *body = NULL;
    if (!msg)
        return;
    size_t nframes = zmsg_size(msg);
    identity = zmsg_pop(msg);
    bool delimiter = false;
    if (nframes == 3) {
        zframe_t *empty = zmsg_pop(msg);
        delimiter = zframe_size(empty) == 0;
        zframe_destroy(&empty);
    }
    if (nframes < 2 || nframes > 3 || (nframes == 3 && !delimiter)) {
        s_reject(&self->rej_router, FM_EFORMAT,
                 "expected [identity][body] or [identity][empty][body]");
        goto cleanup;
    }
    body = zmsg_pop(msg);
    fm_wire_type_t type = FM_WIRE_NONE;
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_peek(zframe_data(body), zframe_size(body), &type, &e);
    if (rc != 0) {
        s_reject(&self->rej_router, rc, e.msg);
        goto cleanup;
    }
    switch (type) {
    case FM_WIRE_SNAPSHOT_REQ: {
        fm_wire_snapshot_req_t req;
        rc = fm_wire_decode_snapshot_req(zframe_data(body), zframe_size(body), &req, &e);
        if (rc != 0) {
            s_reject(&self->rej_router, rc, e.msg);
            goto cleanup;
        }
        FM_LOG(LOG_DEBUG, "snapshot: request from %s (has version %llu)", req.from,
               (unsigned long long)req.have);
        s_serve(self, identity, delimiter);
        break;
    }
    case FM_WIRE_HELLO:
    case FM_WIRE_HEARTBEAT:
    case FM_WIRE_BYE:
        s_on_member(self, body, identity, delimiter);
        break;
    default:
        s_reject(&self->rej_router, FM_EFORMAT, "message type not handled on this socket");
        break;
    }
cleanup:
    zframe_destroy(&body);
    zframe_destroy(&identity);
    zmsg_destroy(&msg);
}

/* ---- periodic work ----------------------------------------------------------------------- */

static void s_on_expired(void *arg, const fm_member_t *ent)
{
    broker_server_t *self = arg;
    FM_LOG(LOG_NOTICE, "trainer %s expired (pid %u, silent for %.1f s > %g s)", ent->m.trainer,
           ent->m.pid, fm_daemon_now() - ent->last_seen, self->cfg.broker.heartbeat_timeout_s);
}

static void s_summary(broker_server_t *self)
{
    char version[32] = "none";
    if (self->cache)
        snprintf(version, sizeof version, "%llu", (unsigned long long)self->cache_version);
    FM_LOG(LOG_INFO, "summary: model version %s, %d live trainers serving %llu clients, "
           "%llu models forwarded, %llu snapshots served, %llu frames rejected "
           "(%llu aggregator side, %llu snapshot side), %d waiting",
           version, fm_members_count(self->members),
           (unsigned long long)fm_members_clients(self->members),
           (unsigned long long)self->stats.models_forwarded,
           (unsigned long long)self->stats.snapshots_served,
           (unsigned long long)(self->stats.rejected_sub + self->stats.rejected_router),
           (unsigned long long)self->stats.rejected_sub,
           (unsigned long long)self->stats.rejected_router, self->npending);
}

/* SIGHUP: reload the config; take the reloadable keys if nothing else changed. */
static void s_reload(broker_server_t *self)
{
    fm_config_t fresh;
    fm_errmsg_t e = {{0}};
    if (!self->args) {
        FM_LOG(LOG_NOTICE, "reload: no command line to reload from; ignored");
        return;
    }
    int rc = fm_daemon_load_config(&fresh, self->args, &e);
    if (rc == 0)
        rc = fm_cfg_check_reload(&self->cfg, &fresh, &e);
    if (rc != 0) {
        FM_LOG(LOG_ERR, "reload: %s; keeping the running config", e.msg);
        return;
    }
    self->cfg = fresh;
    if (self->args->log_level < 0)
        fm_log_init(NULL, fresh.broker.log_level);
    FM_LOG(LOG_NOTICE, "reload: config reloaded (heartbeat_timeout_s %g)",
           fresh.broker.heartbeat_timeout_s);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

/* New socket with explicit linger (and the frame cap if maxmsg > 0). */
static zsock_t *s_socket(int type, int linger, int maxmsg)
{
    zsock_t *s = zsock_new(type);
    if (!s)
        return NULL;
    zsock_set_linger(s, linger);
    if (maxmsg > 0)
        zsock_set_maxmsgsize(s, maxmsg);
    return s;
}

/* The error code for a failed bind/connect: FM_EARG for an endpoint that is malformed
 * (a config error), else -errno (e.g. -EADDRINUSE, a runtime failure). */
static int s_endpoint_err(void)
{
    int en = zmq_errno();
    if (en == EINVAL || en == EPROTONOSUPPORT || en == ENOCOMPATPROTO || en == ENODEV)
        return FM_EARG;
    return en > 0 ? -en : FM_EARG;
}

broker_server_t *broker_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                   int *err, fm_errmsg_t *e)
{
    int rc = 0;
    broker_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: out of memory");
        goto cleanup;
    }
    self->cfg = *cfg;
    self->args = args;
    self->rej_sub = (s_reject_log_t){"aggregator_models", &self->stats.rejected_sub, -1e9, 0};
    self->rej_router = (s_reject_log_t){"snapshot", &self->stats.rejected_router, -1e9, 0};

    const char *model = fm_arch_name(cfg->federation.model);
    int merr = 0;
    self->layout = fm_model_new(model ? model : "?", &merr);
    if (!self->layout) {
        rc = fm_errmsg_set(e, merr ? merr : FM_EMODEL, "broker: model '%s': %s",
                           model ? model : "?", fm_strerror(merr));
        goto cleanup;
    }
    self->tensors = calloc(1, sizeof *self->tensors);
    self->pending = calloc(BROKER_PENDING_MAX, sizeof *self->pending);
    self->members = fm_members_new();
    if (!self->tensors || !self->pending || !self->members) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: out of memory");
        goto cleanup;
    }

    self->sub = s_socket(ZMQ_SUB, 0, BROKER_SUB_MAXMSG);
    self->pub = s_socket(ZMQ_PUB, BROKER_PUB_LINGER_MS, 0);
    self->router = s_socket(ZMQ_ROUTER, 0, BROKER_ROUTER_MAXMSG);
    if (!self->sub || !self->pub || !self->router) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: cannot create sockets: %s",
                           zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    zsock_set_subscribe(self->sub, "");
    zsock_set_rcvhwm(self->sub, BROKER_SUB_RCVHWM);
    zsock_set_sndhwm(self->pub, BROKER_PUB_SNDHWM);
    zsock_set_router_mandatory(self->router, 0);

    const fm_cfg_endpoints_t *ep = &cfg->endpoints;
    if (zsock_bind(self->pub, "%s", ep->model_pub) < 0) {
        rc = fm_errmsg_set(e, s_endpoint_err(), "[endpoints] model_pub = %s: cannot bind: %s",
                           ep->model_pub, zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    if (zsock_bind(self->router, "%s", ep->snapshot) < 0) {
        rc = fm_errmsg_set(e, s_endpoint_err(), "[endpoints] snapshot = %s: cannot bind: %s",
                           ep->snapshot, zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    if (zsock_connect(self->sub, "%s", ep->aggregator_models) != 0) {
        rc = fm_errmsg_set(e, s_endpoint_err(), "[endpoints] aggregator_models = %s: cannot connect: %s",
                           ep->aggregator_models, zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    self->poller = zpoller_new(self->sub, self->router, NULL);
    if (!self->poller) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: cannot create the poller");
        goto cleanup;
    }
    self->next_summary = fm_daemon_now() + BROKER_SUMMARY_S;
    FM_LOG(LOG_INFO, "broker: model %s; SUB %s, PUB %s, ROUTER %s; heartbeat timeout %g s",
           fm_model_name(self->layout), ep->aggregator_models, ep->model_pub, ep->snapshot,
           cfg->broker.heartbeat_timeout_s);
cleanup:
    if (rc != 0) {
        broker_server_destroy(&self);
        if (err)
            *err = rc;
    }
    return self;
}

int broker_server_run(broker_server_t *self)
{
    while (!fm_daemon_stopping()) {
        void *which = zpoller_wait(self->poller, BROKER_POLL_MS);
        if (which == self->sub)
            s_on_sub(self);
        else if (which == self->router)
            s_on_router(self);
        if (fm_daemon_take_reload())
            s_reload(self);
        double now = fm_daemon_now();
        fm_members_expire(self->members, now, self->cfg.broker.heartbeat_timeout_s,
                              s_on_expired, self);
        if (now >= self->next_summary) {
            s_summary(self);
            self->next_summary = now + BROKER_SUMMARY_S;
        }
    }
    FM_LOG(LOG_INFO, "broker: stopping");
    s_summary(self);
    return 0;
}

const broker_stats_t *broker_server_stats(const broker_server_t *self) { return &self->stats; }

void broker_server_destroy(broker_server_t **p)
{
    if (!p || !*p)
        return;
    broker_server_t *self = *p;
    zpoller_destroy(&self->poller);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->router);
    zsock_destroy(&self->pub); /* linger BROKER_PUB_LINGER_MS */
    zframe_destroy(&self->cache);
    if (self->pending)
        for (int i = 0; i < self->npending; i++)
            zframe_destroy(&self->pending[i].identity);
    free(self->pending);
    fm_members_destroy(&self->members);
    free(self->tensors);
    fm_model_destroy(&self->layout);
    free(self);
    *p = NULL;
}
