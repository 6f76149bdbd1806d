#include "broker_server.h"

#include <czmq.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cfg_model.h"
#include "fm_log.h"
#include "fm_loop.h"
#include "fm_members.h"
#include "fm_model.h"
#include "fm_ratelog.h"
#include "fm_sock.h"
#include "fm_wire.h"

#include "broker_peers.h"

/* Rejected frames of one socket: counted always, logged under the rate limit. */
typedef struct {
    const char *what;    /* "aggregator_models" or "snapshot" (static) */
    uint64_t *count;     /* the stats counter */
    fm_metric_t *metric; /* its /metrics twin, counted at the same point */
    fm_ratelog_t log;
} s_reject_log_t;

/* The /metrics series (docs/OPERATIONS.md, "Metrics"), each counted where the matching
 * broker_stats_t counter is. Handles of the registry; NULL ones do nothing. */
typedef struct {
    fm_metric_t *version, *trainers, *clients;
    fm_metric_t *received, *forwarded, *snapshots;
    fm_metric_t *repeat, *full, *gone; /* fedmq_snapshots_withheld_total{reason} */
} s_metrics_t;

/* A requester waiting for the first model. */
typedef struct {
    zframe_t *identity; /* owned */
    bool delimiter;     /* came from a REQ: reply with an empty delimiter frame */
} s_pending_t;

struct broker_server {
    fm_config_t cfg;
    const fm_daemon_args_t *args; /* borrowed, for SIGHUP reloads; may be NULL */
    fm_model_t *layout;           /* the configured model (tensor check only) */
    fm_sec_t *sec;                /* borrowed: keys, and who a peer is */
    fm_wire_tensors_t *tensors;   /* decode scratch (about 21 KB) */
    zsock_t *sub, *pub, *router;
    fm_loop_t *loop;
    fm_members_t *members;

    zframe_t *cache; /* raw bytes of the newest MODEL, NULL before the first */
    uint64_t cache_version;
    double cache_created;
    uint64_t cache_round;  /* sync rounds: a new round of the same version is new */
    int64_t cache_cohort;  /* cohort size, -1 = no cohort (async) */
    uint64_t cache_gen;    /* +1 per new cache: what broker_peers remembers */
    zmq_msg_t reply;       /* a copy of the cache's bytes that every queued reply shares
                              (zmq_msg_copy counts references); empty if it could not be made */
    broker_peers_t *peers; /* what went to which snapshot peer, for the repeat rule */

    s_pending_t *pending; /* [BROKER_PENDING_MAX] */
    int npending;

    broker_stats_t stats;
    s_reject_log_t rej_sub, rej_router;
    fm_ratelog_t refused_log; /* membership messages refused (fm_members) */
    s_metrics_t met;
};

/* ---- helpers ------------------------------------------------------------------------- */

/* Count a rejected frame and log it (rate-limited per socket). */
static void s_reject(s_reject_log_t *r, int code, const char *why)
{
    (*r->count)++;
    fm_metric_inc(r->metric);
    fm_ratelog(&r->log, LOG_WARNING, "%s: frame rejected (%s): %s", r->what, fm_strerror(code),
               why);
}

/* Count a withheld reply in the stats and its /metrics twin. */
static void s_withheld(uint64_t *count, fm_metric_t *metric)
{
    (*count)++;
    fm_metric_inc(metric);
}

/* Send the cached MODEL to one ROUTER peer: [identity][(empty)][model], unless that model
 * was offered to it less than BROKER_SNAPSHOT_REPEAT_S ago (broker_peers). The model frame
 * is a zmq_msg_copy of self->reply: queued replies share its bytes. The ROUTER is
 * ROUTER_MANDATORY with a zero send timeout, so only the first frame can fail, at once:
 * EAGAIN when BROKER_ROUTER_SNDHWM replies wait for that peer already (the offer is
 * remembered like a send: one attempt per model and window), EHOSTUNREACH when it is
 * gone; each is counted, never queued. */
static void s_reply_model(broker_server_t *self, zframe_t *identity, bool delimiter)
{
    const void *id = zframe_data(identity);
    size_t idlen = zframe_size(identity);
    double now = fm_daemon_now();
    if (broker_peers_repeat(self->peers, id, idlen, self->cache_gen, now)) {
        s_withheld(&self->stats.snapshots_repeat, self->met.repeat);
        return;
    }
    if (zmq_msg_size(&self->reply) == 0) { /* s_reply_set ran out of memory (logged) */
        self->stats.reply_failed++;
        return;
    }
    void *router = zsock_resolve(self->router);
    zmq_msg_t body;
    zmq_msg_init(&body);
    int rc = zmq_msg_copy(&body, &self->reply);
    if (rc == 0)
        rc = zmq_send(router, id, idlen, ZMQ_SNDMORE);
    if (rc >= 0 && delimiter)
        rc = zmq_send(router, NULL, 0, ZMQ_SNDMORE);
    if (rc >= 0)
        rc = zmq_msg_send(&body, router, 0);
    int en = rc < 0 ? zmq_errno() : 0;
    if (rc < 0)
        zmq_msg_close(&body);
    if (rc >= 0) {
        self->stats.snapshots_served++;
        fm_metric_inc(self->met.snapshots);
    } else if (en == EAGAIN) {
        s_withheld(&self->stats.snapshots_full, self->met.full);
    } else if (en == EHOSTUNREACH) {
        s_withheld(&self->stats.snapshots_gone, self->met.gone);
        broker_peers_forget(self->peers, id, idlen);
        return;
    } else {
        self->stats.reply_failed++;
        FM_LOG(LOG_WARNING, "snapshot: reply (model version %llu) could not be sent: %s",
               (unsigned long long)self->cache_version, zmq_strerror(en));
        return;
    }
    /* not remembered without memory: the next request is tried again (the HWM still bounds
     * what waits) */
    (void)broker_peers_mark(self->peers, id, idlen, self->cache_gen, now);
}

/* The reply body of a new cache: a copy of its bytes (a new generation). Without memory
 * the body stays empty and replies fail (counted, logged) until the next model. */
static void s_reply_set(broker_server_t *self)
{
    zmq_msg_close(&self->reply);
    self->cache_gen++;
    size_t len = zframe_size(self->cache);
    if (zmq_msg_init_size(&self->reply, len) != 0) {
        zmq_msg_init(&self->reply);
        FM_LOG(LOG_ERR, "snapshot: no memory for a copy of model version %llu (%zu bytes)",
               (unsigned long long)self->cache_version, len);
        return;
    }
    memcpy(zmq_msg_data(&self->reply), zframe_data(self->cache), len);
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
    return fm_wire_tensors_finite(self->tensors, self->layout, e);
}

/* ---- socket handlers ------------------------------------------------------------------- */

/* One message on the SUB: validate, cache and forward if new. */
static int s_on_sub(void *arg, zsock_t *sock)
{
    broker_server_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    zframe_t *frame = NULL;
    if (!msg)
        return 0; /* interrupted */
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
    fm_metric_inc(self->met.received);
    int64_t cohort = hdr.cohort.present ? (int64_t)hdr.cohort.count : -1;
    if (self->cache && hdr.version == self->cache_version &&
        memcmp(&hdr.created, &self->cache_created, sizeof hdr.created) == 0 &&
        hdr.round == self->cache_round && cohort == self->cache_cohort)
        goto cleanup; /* the aggregator's periodic repeat (bitwise: a NaN ts repeats too) */
    if (!self->cache)
        FM_LOG(LOG_INFO, "model: first model cached: %s version %llu (%zu bytes)", hdr.model,
               (unsigned long long)hdr.version, zframe_size(frame));
    else if (hdr.version < self->cache_version)
        FM_LOG(LOG_NOTICE,
               "model: version went back from %llu to %llu (aggregator restarted "
               "from a checkpoint?): the latest wins",
               (unsigned long long)self->cache_version, (unsigned long long)hdr.version);
    else if (hdr.version == self->cache_version && hdr.round != self->cache_round)
        FM_LOG(LOG_DEBUG, "model: version %llu, round %llu", (unsigned long long)hdr.version,
               (unsigned long long)hdr.round);
    else if (hdr.version == self->cache_version && cohort != self->cache_cohort)
        FM_LOG(LOG_DEBUG, "model: version %llu, round %llu closed",
               (unsigned long long)hdr.version, (unsigned long long)hdr.round);
    else if (hdr.version == self->cache_version)
        FM_LOG(LOG_NOTICE,
               "model: version %llu again with a new creation time (aggregator "
               "restarted?): the latest wins",
               (unsigned long long)hdr.version);
    else
        FM_LOG(LOG_DEBUG, "model: version %llu cached", (unsigned long long)hdr.version);

    zframe_destroy(&self->cache);
    self->cache = frame;
    frame = NULL;
    self->cache_version = hdr.version;
    self->cache_created = hdr.created;
    self->cache_round = hdr.round;
    self->cache_cohort = cohort;
    s_reply_set(self);
    fm_metric_set(self->met.version, (double)hdr.version);

    zframe_t *copy = zframe_dup(self->cache);
    if (copy && zframe_send(&copy, self->pub, 0) == 0) {
        self->stats.models_forwarded++;
        fm_metric_inc(self->met.forwarded);
    } else {
        FM_LOG(LOG_WARNING, "model_pub: publish of version %llu failed: %s",
               (unsigned long long)hdr.version, zmq_strerror(zmq_errno()));
    }
    zframe_destroy(&copy);
    s_pending_flush(self);
cleanup:
    zframe_destroy(&frame);
    zmsg_destroy(&msg);
    return 0;
}

/* The membership gauges from the table: live trainers, and (with `clients`) the distinct
 * clients they serve (a sort of the ranges: done by the expiry timer, not per message). */
static void s_members_gauges(broker_server_t *self, bool clients)
{
    fm_metric_set(self->met.trainers, fm_members_count(self->members));
    if (clients)
        fm_metric_set(self->met.clients, (double)fm_members_clients(self->members));
}

/* The membership bounds of the config. */
static fm_members_limits_t s_members_limits(const fm_config_t *cfg)
{
    return (fm_members_limits_t){.num_clients = (uint32_t)cfg->federation.num_clients,
                                 .per_origin = cfg->broker.trainers_per_peer};
}

/* One membership message (already peeked as HELLO/HEARTBEAT/BYE). Its origin is the peer's
 * address (fm_members_peer); the table bounds entries per origin. */
static void s_on_member(broker_server_t *self, zframe_t *body, zframe_t *identity, bool delimiter)
{
    fm_wire_type_t type = FM_WIRE_NONE;
    fm_wire_member_t m;
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_decode_member(zframe_data(body), zframe_size(body), &type, &m, &e);
    if (rc != 0) {
        s_reject(&self->rej_router, rc, e.msg);
        return;
    }
    char why[160];
    const char *uid = fm_sec_curve(self->sec) ? zframe_meta(body, "User-Id") : NULL;
    if (fm_sec_check_trainer(self->sec, uid, m.trainer, m.client_first, m.client_count, why,
                             sizeof why)) {
        char line[512];
        snprintf(line, sizeof line, "%s from %s: %s", fm_wire_type_name(type), m.trainer, why);
        s_reject(&self->rej_router, FM_EARG, line);
        return;
    }
    char peer[FM_MEMBERS_ORIGIN_MAX + 1];
    fm_members_peer(self->cfg.endpoints.snapshot, zframe_meta(body, "Peer-Address"), peer);
    fm_member_origin_t origin = {.peer = peer, .identity = uid}; /* curve: per key */
    uint32_t old_pid = 0;
    fm_member_event_t ev = fm_members_apply(self->members, type, &m, &origin, fm_daemon_now(),
                                            &old_pid);
    s_members_gauges(self, false);
    switch (ev) {
    case FM_MEMBER_JOINED:
        FM_LOG(LOG_INFO,
               "trainer %s joined (pid %u, clients %u+%u, %u workers, peer %s; %d live)",
               m.trainer, m.pid, m.client_first, m.client_count, m.workers, peer,
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
        fm_ratelog(&self->refused_log, LOG_WARNING,
                   "trainer %s (peer %s) not registered: %d trainers already (the maximum)",
                   m.trainer, peer, FM_MEMBERS_MAX);
        break;
    case FM_MEMBER_REFUSED_CLIENTS:
        fm_ratelog(&self->refused_log, LOG_WARNING,
                   "trainer %s (peer %s) refused: clients %u+%u not within [0, %d)", m.trainer,
                   peer, m.client_first, m.client_count, self->cfg.federation.num_clients);
        break;
    case FM_MEMBER_REFUSED_FOREIGN:
        fm_ratelog(&self->refused_log, LOG_WARNING,
                   "trainer %s (peer %s) refused: that trainer is live from another peer",
                   m.trainer, peer);
        break;
    case FM_MEMBER_REFUSED_SHARE:
        fm_ratelog(&self->refused_log, LOG_WARNING,
                   "trainer %s (peer %s) refused: the peer has %d live trainers already "
                   "([broker] trainers_per_peer)",
                   m.trainer, peer, self->cfg.broker.trainers_per_peer);
        break;
    case FM_MEMBER_STALE:
        FM_LOG(LOG_DEBUG, "trainer %s: stale %s (seq %llu) ignored", m.trainer,
               fm_wire_type_name(type), (unsigned long long)m.seq);
        break;
    case FM_MEMBER_REFRESHED:
    case FM_MEMBER_UNKNOWN_BYE: break;
    }
    if (type == FM_WIRE_HELLO)
        s_serve(self, identity, delimiter);
    else if (type == FM_WIRE_BYE)
        s_pending_remove(self, identity);
}

/* One message on the ROUTER: [identity][body] or [identity][empty][body]. */
static int s_on_router(void *arg, zsock_t *sock)
{
    broker_server_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    zframe_t *identity = NULL, *body = NULL;
    if (!msg)
        return 0;
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
    case FM_WIRE_BYE: s_on_member(self, body, identity, delimiter); break;
    default:
        s_reject(&self->rej_router, FM_EFORMAT, "message type not handled on this socket");
        break;
    }
cleanup:
    zframe_destroy(&body);
    zframe_destroy(&identity);
    zmsg_destroy(&msg);
    return 0;
}

/* ---- periodic work ----------------------------------------------------------------------- */

static void s_on_expired(void *arg, const fm_member_t *ent)
{
    broker_server_t *self = arg;
    FM_LOG(LOG_NOTICE, "trainer %s expired (pid %u, silent for %.1f s > %g s)", ent->m.trainer,
           ent->m.pid, fm_daemon_now() - ent->last_seen, self->cfg.broker.heartbeat_timeout_s);
}

static int s_expire(void *arg)
{
    broker_server_t *self = arg;
    fm_members_expire(self->members, fm_daemon_now(), self->cfg.broker.heartbeat_timeout_s,
                      s_on_expired, self);
    fm_sec_refresh(self->sec); /* a key removed from allow_dir: its HELLOs are refused */
    s_members_gauges(self, true);
    return 0;
}

/* Membership messages refused so far (every reason). */
static uint64_t s_refused(const broker_server_t *self)
{
    uint64_t n = 0;
    for (int r = 0; r < FM_MEMBERS_REFUSED_COUNT; r++)
        n += fm_members_refused(self->members, (fm_members_refusal_t)r);
    return n;
}

static int s_summary(void *arg)
{
    broker_server_t *self = arg;
    char version[32] = "none";
    if (self->cache)
        snprintf(version, sizeof version, "%llu", (unsigned long long)self->cache_version);
    FM_LOG(LOG_INFO,
           "summary: model version %s, %d live trainers serving %llu clients, "
           "%llu models forwarded, %llu snapshots served, %llu frames rejected "
           "(%llu aggregator side, %llu snapshot side), %d waiting, %llu snapshot replies "
           "withheld (%llu repeats, %llu queues full, %llu peers gone), %llu membership "
           "messages refused",
           version, fm_members_count(self->members),
           (unsigned long long)fm_members_clients(self->members),
           (unsigned long long)self->stats.models_forwarded,
           (unsigned long long)self->stats.snapshots_served,
           (unsigned long long)(self->stats.rejected_sub + self->stats.rejected_router),
           (unsigned long long)self->stats.rejected_sub,
           (unsigned long long)self->stats.rejected_router, self->npending,
           (unsigned long long)(self->stats.snapshots_repeat + self->stats.snapshots_full +
                                self->stats.snapshots_gone),
           (unsigned long long)self->stats.snapshots_repeat,
           (unsigned long long)self->stats.snapshots_full,
           (unsigned long long)self->stats.snapshots_gone, (unsigned long long)s_refused(self));
    return 0;
}

/* fm_loop status hook (systemd's STATUS=): "model version 12, 3 trainers live (100 clients),
 * 45 snapshots served, 0 frames rejected". */
static void s_status(void *arg, char *buf, size_t cap)
{
    broker_server_t *self = arg;
    char version[32] = "none";
    if (self->cache)
        snprintf(version, sizeof version, "%llu", (unsigned long long)self->cache_version);
    snprintf(buf, cap,
             "model version %s, %d trainers live (%llu clients), %llu snapshots served, %llu "
             "frames rejected",
             version, fm_members_count(self->members),
             (unsigned long long)fm_members_clients(self->members),
             (unsigned long long)self->stats.snapshots_served,
             (unsigned long long)(self->stats.rejected_sub + self->stats.rejected_router));
}

/* A reloaded config: every reloadable key is read from self->cfg when used. */
static int s_apply(void *arg, const fm_config_t *fresh, fm_errmsg_t *e)
{
    broker_server_t *self = arg;
    self->cfg = *fresh;
    fm_members_limits_t lim = s_members_limits(&self->cfg);
    fm_members_set_limits(self->members, &lim);
    return 0;
}

static void s_reload(void *arg)
{
    broker_server_t *self = arg;
    fm_daemon_reload(&self->cfg, self->args, "broker.log_level", s_apply, self);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

/* Register the broker's series in `m` (may be NULL). 0 or -ENOMEM. */
static int s_metrics_register(broker_server_t *self, fm_metrics_t *m)
{
    s_metrics_t *x = &self->met;
    x->version = fm_metrics_gauge(
        m, "fedmq_model_version",
        "Version of the model cached (last value cache), -1 = none yet.", NULL);
    x->trainers = fm_metrics_gauge(m, "fedmq_trainers_live",
                                   "Trainer pools live (HELLO/HEARTBEAT within the timeout).",
                                   NULL);
    x->clients = fm_metrics_gauge(m, "fedmq_clients_live",
                                  "Distinct clients served by live trainer pools.", NULL);
    x->received = fm_metrics_counter(m, "fedmq_models_received_total",
                                     "Valid MODEL frames received from the aggregator "
                                     "(repeats included).",
                                     NULL);
    x->forwarded = fm_metrics_counter(m, "fedmq_models_forwarded_total",
                                      "MODEL frames published on model_pub.", NULL);
    x->snapshots = fm_metrics_counter(m, "fedmq_snapshots_served_total",
                                      "MODEL replies sent on the snapshot socket.", NULL);
    const char *wh = "MODEL replies not sent on the snapshot socket, by reason: repeat (that "
                     "model went to that peer less than 1 s ago), queue_full (its send "
                     "queue is at the HWM: it does not read), gone (disconnected).";
    x->repeat = fm_metrics_counter(m, "fedmq_snapshots_withheld_total", wh,
                                   (const char *[]){"reason", "repeat", NULL});
    x->full = fm_metrics_counter(m, "fedmq_snapshots_withheld_total", wh,
                                 (const char *[]){"reason", "queue_full", NULL});
    x->gone = fm_metrics_counter(m, "fedmq_snapshots_withheld_total", wh,
                                 (const char *[]){"reason", "gone", NULL});
    fm_metric_set(x->version, -1); /* no model yet */
    const char *help = "Frames rejected, by socket.";
    self->rej_sub.metric = fm_metrics_counter(
        m, "fedmq_frames_rejected_total", help,
        (const char *[]){"socket", "aggregator_models", NULL});
    self->rej_router.metric = fm_metrics_counter(m, "fedmq_frames_rejected_total", help,
                                                 (const char *[]){"socket", "snapshot", NULL});
    return fm_metrics_status(m);
}

broker_server_t *broker_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                   fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    broker_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: out of memory");
        goto cleanup;
    }
    self->cfg = *cfg;
    self->args = args;
    self->sec = sec;
    zmq_msg_init(&self->reply);
    self->rej_sub.what = "aggregator_models";
    self->rej_sub.count = &self->stats.rejected_sub;
    self->rej_router.what = "snapshot";
    self->rej_router.count = &self->stats.rejected_router;
    if ((rc = s_metrics_register(self, metrics)) != 0) {
        fm_errmsg_set(e, rc, "broker: metrics: %s", fm_strerror(rc));
        goto cleanup;
    }

    int merr = 0;
    fm_errmsg_t me = {{0}};
    self->layout = fm_cfg_model_new(cfg, &merr, &me); /* a spec: its layout (values unused) */
    if (!self->layout) {
        merr = merr ? merr : FM_EMODEL;
        rc = fm_errmsg_set(e, fm_err_file_exit_code(merr) == FM_EXIT_INPUT ? FM_EARG : merr,
                           "broker: %s", me.msg); /* a malformed spec exits 2 */
        goto cleanup;
    }
    self->tensors = calloc(1, sizeof *self->tensors);
    self->pending = calloc(BROKER_PENDING_MAX, sizeof *self->pending);
    fm_members_limits_t lim = s_members_limits(cfg);
    self->members = fm_members_new(&lim);
    self->peers = broker_peers_new(BROKER_SNAPSHOT_PEERS_MAX, BROKER_SNAPSHOT_REPEAT_S);
    if (!self->tensors || !self->pending || !self->members || !self->peers ||
        (rc = fm_members_metrics(self->members, metrics)) != 0) {
        rc = fm_errmsg_set(e, -ENOMEM, "broker: out of memory");
        goto cleanup;
    }

    const fm_cfg_endpoints_t *ep = &cfg->endpoints;
    fm_sock_opts_t o_pub = {.linger_ms = BROKER_PUB_LINGER_MS, .conflate = true};
    fm_sock_opts_t o_router = {.sndhwm = BROKER_ROUTER_SNDHWM,
                               .rcvhwm = BROKER_ROUTER_RCVHWM,
                               .sndtimeo_ms = FM_SOCK_NOWAIT,
                               .maxmsgsize = BROKER_ROUTER_MAXMSG};
    /* the MODEL frames on SUB: the fixed cap, or a spec model's size if that is larger */
    int64_t sub_max = (int64_t)(4 * fm_model_nparams(self->layout)) + BROKER_SUB_SLACK;
    fm_sock_opts_t o_sub = {.rcvhwm = BROKER_SUB_RCVHWM,
                            .maxmsgsize = sub_max > BROKER_SUB_MAXMSG ? sub_max
                                                                      : BROKER_SUB_MAXMSG,
                            .subscribe_all = true};
    o_pub.sec = o_router.sec = o_sub.sec = sec;
    o_pub.side = o_router.side = FM_SEC_SERVE;
    o_sub.side = FM_SEC_TO_AGGREGATOR;
    if (!(self->pub = fm_sock_new(ZMQ_PUB, &o_pub, "model_pub", &rc, e)))
        goto cleanup;
    /* before bind: the listen queue of the sockets every subscriber connects to */
    zsock_set_backlog(self->pub, BROKER_BACKLOG);
    if ((rc = fm_sock_bind(self->pub, "endpoints.model_pub", ep->model_pub, e)) != 0 ||
        !(self->router = fm_sock_new(ZMQ_ROUTER, &o_router, "snapshot", &rc, e)))
        goto cleanup;
    /* a send to a full or unknown peer fails (EAGAIN, EHOSTUNREACH) instead of a silent drop */
    zsock_set_router_mandatory(self->router, 1);
    zsock_set_backlog(self->router, BROKER_BACKLOG);
    if ((rc = fm_sock_bind(self->router, "endpoints.snapshot", ep->snapshot, e)) != 0 ||
        !(self->sub = fm_sock_new(ZMQ_SUB, &o_sub, "aggregator_models", &rc, e)) ||
        (rc = fm_sock_connect(self->sub, "endpoints.aggregator_models", ep->aggregator_models,
                              e)) != 0)
        goto cleanup;
    if (!(self->loop = fm_loop_new(e))) {
        rc = -ENOMEM;
        goto cleanup;
    }
    fm_loop_reader(self->loop, self->sub, s_on_sub, self);
    fm_loop_reader(self->loop, self->router, s_on_router, self);
    fm_loop_timer(self->loop, BROKER_EXPIRY_S, BROKER_EXPIRY_S, s_expire, self);
    fm_loop_timer(self->loop, BROKER_SUMMARY_S, BROKER_SUMMARY_S, s_summary, self);
    fm_loop_on_reload(self->loop, s_reload, self);
    fm_loop_on_status(self->loop, s_status, self);
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
    int rc = fm_loop_run(self->loop);
    if (rc != 0)
        FM_LOG(LOG_ERR, "broker: polling failed: %s", fm_strerror(rc));
    FM_LOG(LOG_INFO, "broker: stopping");
    s_summary(self);
    return rc;
}

const broker_stats_t *broker_server_stats(const broker_server_t *self) { return &self->stats; }

void broker_server_destroy(broker_server_t **p)
{
    if (!p || !*p)
        return;
    broker_server_t *self = *p;
    fm_loop_destroy(&self->loop);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->router);
    zsock_destroy(&self->pub); /* linger BROKER_PUB_LINGER_MS */
    zframe_destroy(&self->cache);
    zmq_msg_close(&self->reply);
    broker_peers_destroy(&self->peers);
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
