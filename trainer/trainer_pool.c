#include "trainer_pool.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_data.h"
#include "fm_jsonl.h"
#include "fm_le.h"
#include "fm_cfg_model.h"
#include "fm_log.h"
#include "fm_loop.h"
#include "fm_model.h"
#include "fm_parse.h"
#include "fm_random.h"
#include "fm_ratelog.h"
#include "fm_sock.h"
#include "fm_wire.h"
#include "trainer_ctx.h"
#include "trainer_dp.h"
#include "trainer_ef.h"
#include "trainer_latest.h"
#include "trainer_outbox.h"
#include "trainer_secagg.h"
#include "trainer_sim.h"
#include "trainer_worker.h"

#define S_SNAPSHOT_FIRST_S 2.0  /* no model this long after start: SNAPSHOT_REQ */
#define S_SNAPSHOT_MAX_S 10.0   /* back-off cap of repeated SNAPSHOT_REQs */
#define S_MODEL_SILENCE_S 30.0  /* no MODEL this long: ask for a snapshot anyway */
#define S_SUMMARY_S 10.0        /* summary log period */
#define S_DEALER_LINGER_MS 1000 /* BYE gets this long at exit */
/* frames the main thread's PUSH may queue: membership and, with [secagg], the members'
 * keys, shares and unmasking shares, sent in bursts (one per member of each cohort) while
 * the aggregator's PULL is busy with uploads; small frames (at most ~33 KB at K = 256) */
#define S_PUSH_SNDHWM 1000
#define S_DEALER_RCVHWM 4   /* MODEL replies queued from the broker (one per request) */
#define S_RESEND_TICK_S 1.0 /* look for unacknowledged updates due this often */

struct trainer_pool {
    fm_config_t cfg;                /* workers read federation.*: never rewritten whole */
    const fm_daemon_args_t *args;   /* borrowed, for reloads */
    fm_sec_t *sec;                  /* borrowed: keys; under curve its name is the trainer id */
    const trainer_attack_t *attack; /* borrowed: NULL = honest (bench/fedmq_attacker sets it) */
    char trainer_id[FM_WIRE_STR_MAX + 1];
    const char *model_name;
    fm_model_t *layout; /* names and shapes for the wire checks */
    fm_dataset_t *ds;
    fm_partition_t *part;
    trainer_latest_t *latest;
    trainer_ctx_t *ctx;
    trainer_dp_t *dp;     /* [trainer] dp_sgd: the clients' DP-SGD accounts, else NULL */
    trainer_secagg_t *sa; /* [secagg] enabled: the cohort members, else NULL */
    trainer_worker_t **workers;
    int nworkers;
    zsock_t *sub;
    zsock_t *dealer;
    zsock_t *agg_push;        /* PUSH to updates: membership for the aggregator, resends */
    zsock_t *acks_sub;        /* SUB to the aggregator's acks */
    trainer_outbox_t *outbox; /* UPDATEs sent and not yet acknowledged */
    fm_codec_config_t codec;  /* [trainer] encoding, topk_fraction, error_feedback, zstd_level */
    char codec_name[48];      /* its name ("int8", "topk-0.01-fp32-ef+zstd3") */
    trainer_ef_t *ef;         /* the clients' error-feedback residuals, NULL when unused */
    fm_jsonl_t *history;      /* [trainer] history_file, NULL when off */
    uint8_t *found;           /* FM_WIRE_MAX_ACK_IDS flags: which ids of an ACK are ours */
    uint32_t *declined;       /* client_count ids: a Poisson round's DECLINE */
    uint64_t declines_sent, declines_dropped; /* DECLINE messages */
    uint64_t boot;     /* the acknowledging aggregator's incarnation (0: none seen) */
    uint64_t bad_acks; /* ACK frames that did not decode */
    int drop_acks;     /* test hook: ACK frames still to ignore */
    zsock_t *monitor;  /* PAIR: connect events of the DEALER */
    int monitoring;    /* zmq_socket_monitor is on */
    int connects;      /* DEALER connections so far (reconnect = HELLO again) */
    fm_loop_t *loop;
    int hb_timer, snapshot_timer; /* fm_loop timer ids */
    fm_wire_tensors_t *tensors;   /* decode scratch (about 21 KB) */
    fm_wire_buf_t buf;            /* encode buffer of the main thread */
    uint32_t client_first, client_count;
    uint64_t seq; /* membership sequence number */
    uint64_t bad_frames;
    uint64_t models_taken;
    fm_ratelog_t bad_log_sub, bad_log_snapshot; /* bad-frame warnings per socket */
    fm_ratelog_t refused_log;                   /* updates the aggregator refused */
    double last_model; /* monotonic time of the last MODEL taken, 0 = none */
    double snapshot_backoff;
    double status_at; /* monotonic time of the last STATUS= line */
    uint64_t sent_at_status;
    struct { /* /metrics: set from ctx's atomics at each scrape (s_metrics_collect) */
        fm_metric_t *sent, *send_dropped, *dropouts, *abandoned, *errors, *steps, *samples;
        fm_metric_t *wsecs[3]; /* worker seconds: compute, other (busy), idle */
        fm_metric_t *busy, *version, *bytes, *ef_held, *ef_evicted;
        fm_metric_t *acked, *refused, *resent, *evicted, *unacked;
        fm_metric_t *sa_joined, *sa_uploads, *sa_done, *sa_aborted, *sa_invites_refused;
        fm_metric_t *sa_refused[FM_SA_R_NREASONS]; /* by fm_sa_reason_t (0 unused) */
    } met;
};

/* ---- helpers ------------------------------------------------------------------------------ */

/* Count a bad frame from `src` ("model_pub" or "snapshot") and log it (rate-limited). */
static void s_bad_frame(trainer_pool_t *self, const char *src, const char *why)
{
    self->bad_frames++;
    fm_ratelog_t *log = strcmp(src, "model_pub") == 0 ? &self->bad_log_sub
                                                      : &self->bad_log_snapshot;
    fm_ratelog(log, LOG_WARNING, "bad frame on %s dropped: %s (%llu bad so far)", src, why,
               (unsigned long long)self->bad_frames);
}

/* Send one membership message (HELLO, HEARTBEAT, BYE) on the DEALER, never blocking. */
static void s_send_member(trainer_pool_t *self, fm_wire_type_t type)
{
    fm_wire_member_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.trainer, sizeof m.trainer, "%s", self->trainer_id);
    m.pid = (uint32_t)getpid();
    m.client_first = self->client_first;
    m.client_count = self->client_count;
    m.workers = (uint32_t)self->nworkers;
    m.seq = self->seq++;
    m.updates_sent = atomic_load(&self->ctx->sent);
    int busy = atomic_load(&self->ctx->busy_workers);
    m.busy = busy > 0 ? (uint32_t)busy : 0;
    int rc = fm_wire_encode_member(type, &m, &self->buf);
    if (rc != 0) {
        FM_LOG(LOG_WARNING, "%s: encode failed: %s", fm_wire_type_name(type), fm_strerror(rc));
        return;
    }
    if (zmq_send(zsock_resolve(self->dealer), self->buf.data, self->buf.len, ZMQ_DONTWAIT) < 0)
        FM_LOG(LOG_DEBUG, "%s not sent: %s", fm_wire_type_name(type), zmq_strerror(errno));
    /* the aggregator keeps its own table: it picks sync cohorts from live clients */
    if (zmq_send(zsock_resolve(self->agg_push), self->buf.data, self->buf.len, ZMQ_DONTWAIT) < 0)
        FM_LOG(LOG_DEBUG, "%s to the aggregator not sent: %s", fm_wire_type_name(type),
               zmq_strerror(errno));
}

static void s_send_snapshot_req(trainer_pool_t *self)
{
    fm_wire_snapshot_req_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.from, sizeof r.from, "%s", self->trainer_id);
    trainer_model_info_t info;
    r.have = trainer_latest_peek(self->latest, &info) ? info.version : 0;
    int rc = fm_wire_encode_snapshot_req(&r, &self->buf);
    if (rc == 0 &&
        zmq_send(zsock_resolve(self->dealer), self->buf.data, self->buf.len, ZMQ_DONTWAIT) >= 0)
        FM_LOG(LOG_DEBUG, "SNAPSHOT_REQ sent (have v%llu)", (unsigned long long)r.have);
    else
        FM_LOG(LOG_DEBUG, "SNAPSHOT_REQ not sent: %s",
               rc ? fm_strerror(rc) : zmq_strerror(errno));
}

/* A uniform double in [0, 1) from libsodium (trainer_coins_t): 53 random bits. */
static double s_uniform(void *arg)
{
    uint64_t u;
    fm_random_bytes(arg, &u, sizeof u);
    return (double)(u >> 11) * 0x1p-53;
}

/* The DECLINE of a Poisson round's refused clients (self->declined[0..n)) to the aggregator,
 * never blocking; a lost one only makes the round wait for its deadline. */
static void s_send_decline(trainer_pool_t *self, const trainer_model_info_t *info, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) /* little-endian on the wire, in place */
        fm_le_put32((uint8_t *)&self->declined[i], self->declined[i]);
    fm_wire_decline_t d = {.clients = {.present = 1, .ids = self->declined, .count = n},
                           .base = info->version,
                           .round = info->round};
    snprintf(d.trainer, sizeof d.trainer, "%s", self->trainer_id);
    int rc = fm_wire_encode_decline(&d, &self->buf);
    if (rc == 0 && zmq_send(zsock_resolve(self->agg_push), self->buf.data, self->buf.len,
                            ZMQ_DONTWAIT) >= 0) {
        self->declines_sent++;
        return;
    }
    self->declines_dropped++;
    FM_LOG(LOG_WARNING, "DECLINE of %u clients for round %llu not sent: %s", n,
           (unsigned long long)info->round, rc ? fm_strerror(rc) : zmq_strerror(errno));
}

/* trainer_outbox_resend's sender: the main thread's PUSH to the aggregator, never
 * blocking. */
static int s_resend_one(void *arg, const void *frame, size_t len)
{
    trainer_pool_t *self = arg;
    return zmq_send(zsock_resolve(self->agg_push), frame, len, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

/* One frame from the SUB (from_sub) or the DEALER: a MODEL, checked and maybe taken. */
static void s_on_frame(trainer_pool_t *self, const void *data, size_t len, int from_sub)
{
    const char *src = from_sub ? "model_pub" : "snapshot";
    fm_errmsg_t e;
    fm_wire_type_t type;
    char why[400];
    int rc = fm_wire_peek(data, len, &type, &e);
    if (rc != 0) {
        s_bad_frame(self, src, e.msg);
        return;
    }
    if (type != FM_WIRE_MODEL) {
        snprintf(why, sizeof why, "unexpected %s", fm_wire_type_name(type));
        s_bad_frame(self, src, why);
        return;
    }
    fm_wire_model_t hdr;
    if ((rc = fm_wire_decode_model(data, len, &hdr, self->tensors, &e)) != 0) {
        s_bad_frame(self, src, e.msg);
        return;
    }
    if (strcmp(hdr.model, self->model_name) != 0) {
        snprintf(why, sizeof why, "MODEL v%llu is a %s, this trainer runs %s",
                 (unsigned long long)hdr.version, hdr.model, self->model_name);
        s_bad_frame(self, src, why);
        return;
    }
    if ((rc = fm_wire_tensors_check(self->tensors, self->layout, &e)) != 0) {
        s_bad_frame(self, src, e.msg);
        return;
    }
    trainer_model_info_t cur;
    memset(&cur, 0, sizeof cur);
    int have = trainer_latest_peek(self->latest, &cur);
    uint64_t have_v = cur.version;
    if (have) {
        if (hdr.version == cur.version && hdr.created == cur.created && hdr.round == cur.round &&
            hdr.cohort.present == cur.sync && hdr.cohort.count == cur.cohort)
            return; /* the same model twice (PUB + snapshot, or a re-publish) */
        if (!from_sub && hdr.version <= cur.version && hdr.created <= cur.created &&
            hdr.round <= cur.round)
            return; /* a snapshot reply older than what the PUB already gave */
    }
    if (hdr.cohort.present && !(hdr.mu >= 0 && hdr.mu <= 1000)) {
        snprintf(why, sizeof why, "MODEL v%llu round %llu: mu %g out of [0, 1000]",
                 (unsigned long long)hdr.version, (unsigned long long)hdr.round, hdr.mu);
        s_bad_frame(self, src, why);
        return;
    }
    if (hdr.cohort.present && !(hdr.sample_rate >= 0 && hdr.sample_rate <= 1)) {
        snprintf(why, sizeof why, "MODEL v%llu round %llu: q %g out of [0, 1]",
                 (unsigned long long)hdr.version, (unsigned long long)hdr.round, hdr.sample_rate);
        s_bad_frame(self, src, why);
        return;
    }
    float *dst = trainer_latest_scratch(self->latest);
    if ((rc = fm_wire_tensors_copy(self->tensors, self->layout, dst, &e)) != 0) {
        s_bad_frame(self, src, e.msg);
        return;
    }
    trainer_model_info_t info = {.version = hdr.version,
                                 .created = hdr.created,
                                 .sync = hdr.cohort.present,
                                 .round = hdr.round,
                                 .cohort = hdr.cohort.count,
                                 .mu = hdr.mu,
                                 .boot = hdr.boot};
    trainer_latest_publish(self->latest, &info); /* before the jobs: see trainer_worker */
    /* Poisson rounds (0 < q < 1): each client's own coin; its "no" goes out as DECLINE */
    int poisson = info.sync && info.round > 0 && hdr.sample_rate > 0 && hdr.sample_rate < 1;
    trainer_coins_t coins = {.q = hdr.sample_rate, .uniform = s_uniform, .arg = NULL};
    uint32_t ndeclined = 0;
    uint32_t mine = trainer_ctx_set_round_ex(self->ctx, info.sync, info.round, &hdr.cohort,
                                             poisson ? &coins : NULL, self->declined, &ndeclined);
    if (ndeclined)
        s_send_decline(self, &info, ndeclined);
    if (info.sync && (info.round != cur.round || !have)) {
        if (poisson)
            FM_LOG(mine ? LOG_INFO : LOG_DEBUG,
                   "round %llu on v%llu (Poisson, q = %g): %u of this trainer's clients train, "
                   "%u declined",
                   (unsigned long long)info.round, (unsigned long long)info.version,
                   hdr.sample_rate, mine, ndeclined);
        else
            FM_LOG(mine ? LOG_INFO : LOG_DEBUG,
                   "round %llu on v%llu: %u of the %u selected clients "
                   "are served here",
                   (unsigned long long)info.round, (unsigned long long)info.version, mine,
                   hdr.cohort.count);
    }
    if (hdr.boot && self->boot && hdr.boot != self->boot) {
        size_t n = trainer_outbox_resend(self->outbox, fm_daemon_now(), 1, s_resend_one, self);
        FM_LOG(LOG_NOTICE,
               "the aggregator restarted (new incarnation, v%llu): %zu unacknowledged "
               "updates resent",
               (unsigned long long)hdr.version, n);
    }
    if (hdr.boot)
        self->boot = hdr.boot;
    self->models_taken++;
    self->last_model = fm_daemon_now();
    self->snapshot_backoff = S_SNAPSHOT_FIRST_S;
    if (!have)
        FM_LOG(LOG_INFO, "first model: v%llu via %s; training starts",
               (unsigned long long)hdr.version, src);
    else if (hdr.version < have_v)
        FM_LOG(LOG_NOTICE,
               "model version went back from v%llu to v%llu (aggregator restarted "
               "from a checkpoint?)",
               (unsigned long long)have_v, (unsigned long long)hdr.version);
    else
        FM_LOG(LOG_DEBUG, "model v%llu via %s", (unsigned long long)hdr.version, src);
}

/* Receive one message from the SUB or the DEALER; exactly one frame expected. */
static int s_recv(void *arg, zsock_t *sock)
{
    trainer_pool_t *self = arg;
    int from_sub = sock == self->sub;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return 0;
    if (zmsg_size(msg) != 1) {
        char why[64];
        snprintf(why, sizeof why, "%zu frames, expected 1", zmsg_size(msg));
        s_bad_frame(self, from_sub ? "model_pub" : "snapshot", why);
    } else {
        zframe_t *f = zmsg_first(msg);
        s_on_frame(self, zframe_data(f), zframe_size(f), from_sub);
    }
    zmsg_destroy(&msg);
    return 0;
}

/* An ACK from the aggregator (every trainer gets every ACK: the ids not waiting here are
 * someone else's). */
static int s_on_ack(void *arg, zsock_t *sock)
{
    trainer_pool_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return 0;
    zframe_t *f = zmsg_first(msg);
    fm_wire_ack_t ack;
    fm_errmsg_t e = {{0}};
    fm_wire_type_t type = FM_WIRE_NONE;
    if (self->sa && zmsg_size(msg) == 1 &&
        fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) == 0 &&
        trainer_secagg_is_sa(type)) { /* a cohort message (trainer_secagg) */
        if (trainer_secagg_on_frame(self->sa, type, zframe_data(f), zframe_size(f),
                                    fm_daemon_now(), zsock_resolve(self->agg_push), &self->buf,
                                    &e) != 0) {
            self->bad_acks++;
            fm_ratelog(&self->bad_log_sub, LOG_WARNING, "bad frame on acks dropped: %s", e.msg);
        }
        zmsg_destroy(&msg);
        return 0;
    }
    if (zmsg_size(msg) != 1 || fm_wire_decode_ack(zframe_data(f), zframe_size(f), &ack, &e)) {
        self->bad_acks++;
        fm_ratelog(&self->bad_log_sub, LOG_WARNING, "bad frame on acks dropped: %s",
                   e.msg[0] ? e.msg : "not one frame");
        zmsg_destroy(&msg);
        return 0;
    }
#ifdef FM_TEST_HOOKS
    if (self->drop_acks > 0) { /* FEDMQ_TEST_DROP_ACKS: as if lost on the way */
        self->drop_acks--;
        FM_LOG(LOG_NOTICE, "test hook: ACK %s of %u ids ignored", ack.status, ack.count);
        zmsg_destroy(&msg);
        return 0;
    }
#endif
    int applied = strcmp(ack.status, "applied") == 0;
    size_t mine = trainer_outbox_ack(self->outbox, ack.ids, ack.count, applied, self->found);
    for (uint32_t k = 0; self->history && mine && k < ack.count; k++) {
        if (!self->found[k])
            continue;
        json_t *line = json_pack(
            "{s:s, s:o, s:s, s:I, s:f}", "t", "ack", "id",
            fm_jsonl_id((const uint8_t *)ack.ids + (size_t)k * FM_WIRE_ID_LEN), "status",
            ack.status, "mv", (json_int_t)ack.version, "ts", fm_daemon_wallclock());
        int rc = fm_jsonl_put(self->history, line);
        if (rc)
            fm_ratelog(&self->refused_log, LOG_WARNING, "%s: cannot append: %s",
                       fm_jsonl_path(self->history), fm_strerror(rc));
    }
    if (mine && applied)
        FM_LOG(LOG_DEBUG, "%zu updates acknowledged (durable in version %llu)", mine,
               (unsigned long long)ack.version);
    else if (mine && strcmp(ack.status, "lost") == 0)
        fm_ratelog(&self->refused_log, LOG_WARNING,
                   "%zu updates lost: their base version did not survive an aggregator "
                   "crash (the clients train again on the current model)",
                   mine);
    else if (mine)
        fm_ratelog(&self->refused_log, LOG_NOTICE,
                   "%zu updates refused by the aggregator at version %llu: %s", mine,
                   (unsigned long long)ack.version, ack.status);
    zmsg_destroy(&msg);
    return 0;
}

/* {"t":"start"|"stop",...} in the history file (if any): an incarnation's bounds; "stop"
 * (a clean exit) says how many updates were still unacknowledged. */
static void s_history_event(trainer_pool_t *self, const char *what)
{
    if (!self->history)
        return;
    trainer_outbox_stats_t ob;
    trainer_outbox_stats(self->outbox, &ob);
    json_t *line = json_pack("{s:s, s:s, s:i, s:I, s:f}", "t", what, "trainer", self->trainer_id,
                             "pid", (int)getpid(), "unacked", (json_int_t)ob.entries, "ts",
                             fm_daemon_wallclock());
    int rc = fm_jsonl_put(self->history, line);
    if (rc)
        FM_LOG(LOG_WARNING, "%s: cannot append: %s", fm_jsonl_path(self->history),
               fm_strerror(rc));
}

/* Timer: resend the unacknowledged updates that are due. */
static int s_resend_tick(void *arg)
{
    trainer_pool_t *self = arg;
    size_t n = trainer_outbox_resend(self->outbox, fm_daemon_now(), 0, s_resend_one, self);
    if (n)
        FM_LOG(LOG_INFO, "%zu unacknowledged updates resent", n);
    return 0;
}

/* An event of the DEALER's monitor: after a reconnect (the broker restarted, or the
 * network came back) say HELLO again, so the broker knows this trainer at once and
 * replies with its current model. */
static int s_on_monitor(void *arg, zsock_t *sock)
{
    trainer_pool_t *self = arg;
    zmsg_t *msg = zmsg_recv(sock);
    if (!msg)
        return 0;
    zframe_t *f = zmsg_first(msg);
    uint16_t event = 0;
    if (f && zframe_size(f) >= sizeof event)
        memcpy(&event, zframe_data(f), sizeof event);
    zmsg_destroy(&msg);
    if (event == ZMQ_EVENT_DISCONNECTED) {
        FM_LOG(LOG_NOTICE, "disconnected from the broker (%s)", self->cfg.endpoints.snapshot);
    } else if (event == ZMQ_EVENT_CONNECTED) {
        if (self->connects++ == 0) {
            FM_LOG(LOG_INFO, "connected to the broker (%s)", self->cfg.endpoints.snapshot);
            return 0; /* the start-up HELLO was queued for this connection */
        }
        FM_LOG(LOG_NOTICE, "reconnected to the broker (%s): HELLO again",
               self->cfg.endpoints.snapshot);
        s_send_member(self, FM_WIRE_HELLO);
    }
    return 0;
}

/* The workers' seconds so far (summed over workers): [0] local training, [1] the rest of
 * a job (encoding, sending, bookkeeping), [2] waiting for a model or a job. */
static void s_worker_seconds(const trainer_ctx_t *c, double out[3])
{
    out[0] = (double)atomic_load(&c->compute_us) / 1e6;
    out[1] = (double)atomic_load(&c->other_us) / 1e6;
    out[2] = (double)atomic_load(&c->idle_us) / 1e6;
}

static void s_summary(trainer_pool_t *self, const char *what)
{
    trainer_model_info_t info;
    int have = trainer_latest_peek(self->latest, &info);
    uint64_t v = have ? info.version : 0;
    trainer_outbox_stats_t ob;
    trainer_outbox_stats(self->outbox, &ob);
    FM_LOG(LOG_INFO,
           "%s: updates sent %llu (acknowledged %llu, refused %llu, resent %llu, given up "
           "%llu, waiting %zu), dropped %llu, dropouts %llu, abandoned %llu, "
           "errors %llu, bad frames %llu, busy %d/%d, model v%lld, local steps %llu, "
           "samples %llu, bytes sent %llu (%s, %.0f per update)",
           what, (unsigned long long)atomic_load(&self->ctx->sent), (unsigned long long)ob.acked,
           (unsigned long long)ob.refused, (unsigned long long)ob.resent,
           (unsigned long long)ob.evicted, ob.entries,
           (unsigned long long)atomic_load(&self->ctx->send_dropped),
           (unsigned long long)atomic_load(&self->ctx->dropouts),
           (unsigned long long)atomic_load(&self->ctx->abandoned),
           (unsigned long long)atomic_load(&self->ctx->train_errors),
           (unsigned long long)self->bad_frames, atomic_load(&self->ctx->busy_workers),
           self->nworkers, have ? (long long)v : -1LL,
           (unsigned long long)atomic_load(&self->ctx->local_steps),
           (unsigned long long)atomic_load(&self->ctx->samples),
           (unsigned long long)atomic_load(&self->ctx->bytes_sent), self->codec_name,
           atomic_load(&self->ctx->sent) ? (double)atomic_load(&self->ctx->bytes_sent) /
                                               (double)atomic_load(&self->ctx->sent)
                                         : 0.0);
    double ws[3];
    s_worker_seconds(self->ctx, ws);
    FM_LOG(LOG_INFO,
           "%s: worker seconds (%d workers): local training %.1f, encoding/sending/other "
           "%.1f, waiting for a model or a job %.1f",
           what, self->nworkers, ws[0], ws[1], ws[2]);
    if (self->ef) {
        trainer_ef_stats_t es;
        trainer_ef_stats(self->ef, &es);
        FM_LOG(LOG_INFO, "%s: error feedback: %u residuals in memory (%.1f MB), %llu evicted",
               what, es.held, es.bytes / 1048576.0, (unsigned long long)es.evicted);
    }
    if (!self->sa)
        return;
    trainer_secagg_stats_t st;
    trainer_secagg_stats(self->sa, &st);
    FM_LOG(LOG_INFO,
           "%s: secagg: cohorts joined %llu, masked updates sent %llu, members done %llu, "
           "aborted %llu (timed out %llu), invites refused %llu, messages refused %llu, "
           "sends failed %llu, active %u",
           what, (unsigned long long)st.joined, (unsigned long long)st.uploads,
           (unsigned long long)st.done, (unsigned long long)st.aborted,
           (unsigned long long)st.timeouts, (unsigned long long)st.refused,
           (unsigned long long)st.rejected, (unsigned long long)st.send_failed, st.active);
}

/* Timer: abort and free the members whose cohort outlived its deadlines. */
static int s_secagg_tick(void *arg)
{
    trainer_pool_t *self = arg;
    trainer_secagg_tick(self->sa, fm_daemon_now());
    return 0;
}

/* fm_loop status hook (systemd's STATUS=): "model version 12, 234 updates sent (1.5/s), 4/4
 * workers busy, 0 dropped", the rate over the time since the previous line. */
static void s_status(void *arg, char *buf, size_t cap)
{
    trainer_pool_t *self = arg;
    trainer_model_info_t info;
    char model[40] = "no model yet";
    if (trainer_latest_peek(self->latest, &info))
        snprintf(model, sizeof model, "model version %llu", (unsigned long long)info.version);
    uint64_t sent = atomic_load(&self->ctx->sent);
    double now = fm_daemon_now();
    double dt = now - self->status_at;
    double rate = dt > 0 ? (double)(sent - self->sent_at_status) / dt : 0.0;
    self->status_at = now;
    self->sent_at_status = sent;
    snprintf(buf, cap, "%s, %llu updates sent (%.1f/s), %d/%d workers busy, %llu dropped", model,
             (unsigned long long)sent, rate, atomic_load(&self->ctx->busy_workers),
             self->nworkers, (unsigned long long)atomic_load(&self->ctx->send_dropped));
}

/* ---- timers -------------------------------------------------------------------------------- */

static int s_heartbeat(void *arg)
{
    s_send_member(arg, FM_WIRE_HEARTBEAT);
    return 0;
}

/* SNAPSHOT_REQ while there is no model (backing off from S_SNAPSHOT_FIRST_S to
 * S_SNAPSHOT_MAX_S) or when no model came for S_MODEL_SILENCE_S. */
static int s_snapshot(void *arg)
{
    trainer_pool_t *self = arg;
    double now = fm_daemon_now(), next;
    if (self->last_model == 0) {
        s_send_snapshot_req(self);
        self->snapshot_backoff *= 2;
        if (self->snapshot_backoff > S_SNAPSHOT_MAX_S)
            self->snapshot_backoff = S_SNAPSHOT_MAX_S;
        next = self->snapshot_backoff;
    } else if (now - self->last_model >= S_MODEL_SILENCE_S) {
        s_send_snapshot_req(self);
        next = S_MODEL_SILENCE_S;
    } else {
        next = self->last_model + S_MODEL_SILENCE_S - now;
    }
    fm_loop_timer_set(self->loop, self->snapshot_timer, next > 0.001 ? next : 0.001);
    return 0;
}

static int s_summary_tick(void *arg)
{
    s_summary(arg, "summary");
    return 0;
}

/* A reloaded config: the reloadable trainer keys only (workers read federation.* of
 * self->cfg concurrently, so it is never rewritten whole). */
static int s_apply(void *arg, const fm_config_t *fresh, fm_errmsg_t *e)
{
    trainer_pool_t *self = arg;
    if (fresh->trainer.heartbeat_interval_s != self->cfg.trainer.heartbeat_interval_s)
        fm_loop_timer_set(self->loop, self->hb_timer, fresh->trainer.heartbeat_interval_s);
    self->cfg.trainer.heartbeat_interval_s = fresh->trainer.heartbeat_interval_s;
    self->cfg.trainer.slowdown_sigma = fresh->trainer.slowdown_sigma;
    self->cfg.trainer.dropout_prob = fresh->trainer.dropout_prob;
    self->cfg.trainer.log_level = fresh->trainer.log_level;
    self->cfg.trainer.ack_timeout_s = fresh->trainer.ack_timeout_s;
    trainer_outbox_set_timeout(self->outbox, fresh->trainer.ack_timeout_s);
    trainer_ctx_set_sim(self->ctx, fresh->trainer.slowdown_sigma, fresh->trainer.dropout_prob);
    return 0;
}

static void s_reload(void *arg)
{
    trainer_pool_t *self = arg;
    fm_daemon_reload(&self->cfg, self->args, "trainer.log_level", s_apply, self);
}

/* Join every worker (after ctx->stop is set) and free them. */
static void s_workers_destroy(trainer_pool_t *self)
{
    if (self->ctx)
        atomic_store(&self->ctx->stop, 1);
    for (int i = 0; self->workers && i < self->nworkers; i++)
        trainer_worker_destroy(&self->workers[i]);
    free(self->workers);
    self->workers = NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* The main thread's sockets (options before connect: CONFLATE must be) and the loop. */
static int s_sockets_open(trainer_pool_t *self, fm_errmsg_t *e)
{
    const fm_cfg_endpoints_t *ep = &self->cfg.endpoints;
    int64_t maxmsg = (int64_t)(fm_model_nparams(self->layout) * sizeof(float)) + 65536;
    fm_sock_opts_t o_sub = {.maxmsgsize = maxmsg, .conflate = true, .subscribe_all = true};
    fm_sock_opts_t o_dealer = {.linger_ms = S_DEALER_LINGER_MS,
                               .sndhwm = 100,
                               .rcvhwm = S_DEALER_RCVHWM,
                               .sndtimeo_ms = FM_SOCK_NOWAIT,
                               .maxmsgsize = maxmsg};
    fm_sock_opts_t o_push = {.linger_ms = S_DEALER_LINGER_MS, .sndhwm = S_PUSH_SNDHWM};
    /* the largest frame on acks: an ACK of FM_WIRE_MAX_ACK_IDS ids, or a SHARES_FWD at the
     * largest K (u2, from, one box per peer) */
    int64_t max_ack = (int64_t)FM_WIRE_MAX_ACK_IDS * FM_WIRE_ID_LEN + 4096;
    int64_t max_sa = (int64_t)FM_SA_MAX_K * 4 * 2 +
                     (int64_t)(FM_SA_MAX_K - 1) * (FM_SA_BOX_BYTES + 4) + 4096;
    fm_sock_opts_t o_acks = {.maxmsgsize = max_ack > max_sa ? max_ack : max_sa,
                             .subscribe_all = true};
    o_sub.sec = o_dealer.sec = o_push.sec = o_acks.sec = self->sec;
    o_sub.side = o_dealer.side = FM_SEC_TO_BROKER;
    o_push.side = o_acks.side = FM_SEC_TO_AGGREGATOR;
    int rc = 0;
    if (!(self->sub = fm_sock_new(ZMQ_SUB, &o_sub, "model_pub", &rc, e)) ||
        !(self->dealer = fm_sock_new(ZMQ_DEALER, &o_dealer, "snapshot", &rc, e)) ||
        !(self->agg_push = fm_sock_new(ZMQ_PUSH, &o_push, "updates", &rc, e)) ||
        !(self->acks_sub = fm_sock_new(ZMQ_SUB, &o_acks, "acks", &rc, e)) ||
        !(self->monitor = fm_sock_new(ZMQ_PAIR, NULL, "DEALER monitor", &rc, e)))
        return rc;
    /* the monitor before the DEALER connects, so its first connection is seen */
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://trainer-dealer-monitor-%p", (void *)self);
    if (zmq_socket_monitor(zsock_resolve(self->dealer), mon_ep,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
        return fm_errmsg_set(e, -zmq_errno(), "cannot monitor the DEALER: %s",
                             zmq_strerror(zmq_errno()));
    self->monitoring = 1;
    if ((rc = fm_sock_connect(self->monitor, "DEALER monitor", mon_ep, e)) != 0 ||
        (rc = fm_sock_connect(self->sub, "endpoints.model_pub", ep->model_pub, e)) != 0 ||
        (rc = fm_sock_connect(self->agg_push, "endpoints.updates", ep->updates, e)) != 0 ||
        (rc = fm_sock_connect(self->acks_sub, "endpoints.acks", ep->acks, e)) != 0 ||
        (rc = fm_sock_connect(self->dealer, "endpoints.snapshot", ep->snapshot, e)) != 0)
        return rc;
    if (!(self->loop = fm_loop_new(e)))
        return -ENOMEM;
    fm_loop_reader(self->loop, self->sub, s_recv, self);
    fm_loop_reader(self->loop, self->dealer, s_recv, self);
    fm_loop_reader(self->loop, self->monitor, s_on_monitor, self);
    fm_loop_reader(self->loop, self->acks_sub, s_on_ack, self);
    fm_loop_timer(self->loop, S_RESEND_TICK_S, S_RESEND_TICK_S, s_resend_tick, self);
    double hb = self->cfg.trainer.heartbeat_interval_s;
    self->hb_timer = fm_loop_timer(self->loop, hb, hb, s_heartbeat, self);
    self->snapshot_timer = fm_loop_timer(self->loop, S_SNAPSHOT_FIRST_S, S_SNAPSHOT_FIRST_S,
                                         s_snapshot, self);
    fm_loop_timer(self->loop, S_SUMMARY_S, S_SUMMARY_S, s_summary_tick, self);
    if (self->cfg.secagg.enabled)
        fm_loop_timer(self->loop, 1.0, 1.0, s_secagg_tick, self);
    fm_loop_on_reload(self->loop, s_reload, self);
    fm_loop_on_status(self->loop, s_status, self);
    return 0;
}

/* The trainer id into self->trainer_id: under curve its certificate's name (the servers
 * check it against the key; a different [trainer] id is logged and not used), else
 * [trainer] id, else "<host>-<pid>", where a byte of the host name that an id may not hold
 * (fm_wire.h, "Text") becomes '_'. Returns 0 (an int for the start-up chain). */
static int s_name(trainer_pool_t *self)
{
    const char *want = self->cfg.trainer.id;
    if (fm_sec_curve(self->sec)) {
        const char *name = fm_sec_name(self->sec);
        if (want[0] && strcmp(want, name) != 0)
            FM_LOG(LOG_NOTICE,
                   "[trainer] id = %s not used: under security = curve the id is "
                   "the certificate's name, %s",
                   want, name);
        snprintf(self->trainer_id, sizeof self->trainer_id, "%s", name);
        return 0;
    }
    if (want[0]) {
        snprintf(self->trainer_id, sizeof self->trainer_id, "%s", want);
        return 0;
    }
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
        if (fm_wire_text_check(FM_WIRE_TEXT_ID, c, 1) == 0)
            *c = '_';
    snprintf(self->trainer_id, sizeof self->trainer_id, "%s-%d", host, (int)getpid());
    return 0;
}

/* The clients served, the model layout. 0 or an error with `e`. */
static int s_init_range(trainer_pool_t *self, fm_errmsg_t *e)
{
    const fm_config_t *cfg = &self->cfg;
    long first, last;
    int rc = 0;
    if (fm_parse_range("[trainer] clients", cfg->trainer.clients, 0,
                       (long)cfg->federation.num_clients - 1, &first, &last, NULL) != 0)
        return fm_errmsg_set(e, FM_EARG, "[trainer] clients = %s: not a range within [0, %d)",
                             cfg->trainer.clients, cfg->federation.num_clients);
    self->client_first = (uint32_t)first;
    self->client_count = (uint32_t)(last - first + 1);
    fm_sec_peer_t me;
    if (fm_sec_self(self->sec, &me) == 0 &&
        !fm_sec_peer_covers(&me, self->client_first, self->client_count))
        return fm_errmsg_set(e, FM_EARG,
                             "[trainer] clients = %s: the key of '%s' ([security] trainer_cert) "
                             "is enrolled for clients %u-%u only",
                             cfg->trainer.clients, me.name, me.client_first,
                             me.client_first + me.client_count - 1);
    if (!(self->layout = fm_cfg_model_new(cfg, &rc, e))) /* a built-in: checked at new */
        return rc;
    self->model_name = fm_model_name(self->layout);
    return 0;
}

/* A backdoor attacker's clients train on poisoned samples: stamped and relabelled in the
 * pool's own copy of the training set (the partitions are disjoint). 0 or -ENOMEM. */
static int s_poison(trainer_pool_t *self, fm_errmsg_t *e)
{
    if (!self->attack || self->attack->kind != TRAINER_ATTACK_BACKDOOR)
        return 0;
    uint64_t total = 0, poisoned = 0;
    for (uint32_t k = self->client_first; k < self->client_first + self->client_count; k++) {
        uint32_t n = self->part->offsets[k + 1] - self->part->offsets[k], m = 0;
        int rc = trainer_attack_poison_client(
            self->attack, self->ds, self->part->indices + self->part->offsets[k], n, k, &m);
        if (rc)
            return fm_errmsg_set(e, rc, "backdoor: %s", fm_strerror(rc));
        total += n;
        poisoned += m;
    }
    FM_LOG(LOG_NOTICE,
           "backdoor: %llu of the %llu training samples of clients %u-%u carry the trigger "
           "and label %d",
           (unsigned long long)poisoned, (unsigned long long)total, self->client_first,
           self->client_first + self->client_count - 1, self->attack->target);
    return 0;
}

/* The training set and the clients' partition (the held-out slices never train). 0 or an
 * error with `e`. */
static int s_init_data(trainer_pool_t *self, fm_errmsg_t *e)
{
    const fm_config_t *cfg = &self->cfg;
    double t0 = fm_daemon_now();
    fm_errmsg_t why;
    int rc = 0;
    if (!(self->ds = fm_dataset_load_dir(cfg->federation.data_dir, "train", FM_FASHION_MEAN,
                                         FM_FASHION_STD, &rc, &why)))
        return fm_errmsg_set(e, rc, "[federation] data_dir = %s: %s", cfg->federation.data_dir,
                             why.msg);
    fm_partition_t *held = NULL;
    if ((rc = fm_partition_clients(self->ds, cfg->federation.partition,
                                   (uint32_t)cfg->federation.num_clients, cfg->federation.seed,
                                   cfg->federation.holdout, &self->part, &held, &why)) != 0)
        return fm_errmsg_set(e, rc, "[federation] %s", why.msg);
    fm_partition_destroy(&held);
    FM_LOG(LOG_INFO,
           "training set: %u samples from %s, partition %s over %d clients, %.0f%% "
           "of each held out (%.2f s); serving clients %u-%u",
           self->ds->n, cfg->federation.data_dir, cfg->federation.partition,
           cfg->federation.num_clients, 100.0 * cfg->federation.holdout, fm_daemon_now() - t0,
           self->client_first, self->client_first + self->client_count - 1);
    uint32_t empty = 0;
    for (uint32_t k = self->client_first; k < self->client_first + self->client_count; k++)
        empty += self->part->offsets[k + 1] == self->part->offsets[k];
    if (empty)
        FM_LOG(LOG_WARNING,
               "%u of the clients served have no samples under partition %s; "
               "they are skipped",
               empty, cfg->federation.partition);
    return s_poison(self, e);
}

/* Retire, before any training, the clients whose DP-SGD accounts (loaded from
 * [trainer] dp_accounts_file) leave no room for one more training: one NOTICE. */
static void s_retire_spent(trainer_pool_t *self)
{
    char list[200] = "";
    size_t used = 0;
    uint32_t n = 0, retired = 0;
    for (uint32_t k = self->client_first; k < self->client_first + self->client_count; k++) {
        if (!trainer_dp_spent(self->dp, k))
            continue;
        retired = trainer_ctx_retire(self->ctx, k);
        if (n < 16) /* 16 ids of at most 10 digits fit in list */
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%u", n ? ", " : "", k);
        n++;
    }
    if (n == 0)
        return;
    FM_LOG(LOG_NOTICE,
           "%u clients have spent their DP-SGD budget by the accounts file (their next "
           "training would exceed [trainer] dp_target_epsilon %g): retired at start: %s%s",
           n, self->cfg.trainer.dp_target_epsilon, list, n > 16 ? ", ..." : "");
    if (retired == self->client_count)
        FM_LOG(LOG_NOTICE,
               "every client of the pool (%u) has spent its DP-SGD budget: the pool trains no "
               "more",
               retired);
}

/* The shared model slot, the scheduler and the workers. 0 or an error with `e`. */
static int s_init_workers(trainer_pool_t *self, fm_errmsg_t *e)
{
    const fm_config_t *cfg = &self->cfg;
    int rc = 0;
    if (!(self->latest = trainer_latest_new(fm_model_nparams(self->layout), &rc)))
        return fm_errmsg_set(e, rc, "model buffer: %s", fm_strerror(rc));
    if (!(self->ctx = trainer_ctx_new(self->client_first, self->client_count,
                                      cfg->trainer.slowdown_sigma, cfg->trainer.dropout_prob,
                                      &rc)))
        return fm_errmsg_set(e, rc, "scheduler: %s", fm_strerror(rc));
    if (!(self->outbox = trainer_outbox_new((size_t)cfg->trainer.unacked_max_mb << 20,
                                            cfg->trainer.ack_timeout_s, &rc)))
        return fm_errmsg_set(e, rc, "outbox: %s", fm_strerror(rc));
    if (cfg->trainer.dp_sgd &&
        !(self->dp = trainer_dp_new(cfg, self->client_first, self->client_count, &rc, e)))
        return rc;
    if (self->dp)
        s_retire_spent(self);
    if (cfg->secagg.enabled) { /* only invited clients train, each as a cohort member */
        if (!(self->sa = trainer_secagg_new(self->trainer_id, self->ctx, self->client_first,
                                            self->client_count, fm_model_nparams(self->layout),
                                            &rc, e)))
            return rc;
        trainer_ctx_set_secagg(self->ctx, 1);
    }
    const fm_cfg_trainer_t *tc = &cfg->trainer;
    self->codec = (fm_codec_config_t){.dtype = (fm_dtype_t)tc->encoding,
                                      .topk = tc->topk_fraction,
                                      .topk_model = tc->topk_fraction > 0 && tc->topk_scope,
                                      .error_feedback = tc->error_feedback &&
                                                        tc->topk_fraction > 0,
                                      .zstd_level = tc->zstd_level};
    fm_codec_config_name(&self->codec, self->codec_name, sizeof self->codec_name);
    if ((rc = fm_codec_config_check(&self->codec, e)) != 0)
        return rc;
    if (self->codec.error_feedback) {
        size_t one = fm_model_nparams(self->layout) * sizeof(float);
        size_t cap = (size_t)tc->error_feedback_mb << 20;
        if (cap < one * (size_t)tc->workers)
            return fm_errmsg_set(e, FM_EARG,
                                 "[trainer] error_feedback_mb %d holds fewer residuals (%.1f MB "
                                 "each) than the %d workers train at once",
                                 tc->error_feedback_mb, one / 1048576.0, tc->workers);
        if (!(self->ef = trainer_ef_new(self->client_first, self->client_count,
                                        fm_model_nparams(self->layout), cap, &rc)))
            return fm_errmsg_set(e, rc, "error-feedback residuals: %s", fm_strerror(rc));
    }
    if (!fm_codec_config_is_raw(&self->codec))
        FM_LOG(LOG_INFO, "updates encoded as %s (protocol version %d)%s", self->codec_name,
               FM_WIRE_VERSION_MAX,
               self->ef ? "; error-feedback residuals kept per client in memory" : "");
    if (!(self->found = malloc(FM_WIRE_MAX_ACK_IDS)) ||
        !(self->declined = calloc(self->client_count ? self->client_count : 1, sizeof(uint32_t))))
        return fm_errmsg_set(e, -ENOMEM, "out of memory");
    if (fm_random_init() != 0)
        return fm_errmsg_set(e, -EIO,
                             "libsodium cannot start: no random source for the "
                             "Poisson coins of sync rounds");
    if (cfg->trainer.history_file[0] &&
        !(self->history = fm_jsonl_open(cfg->trainer.history_file, &rc, e)))
        return rc;
    self->tensors = malloc(sizeof *self->tensors);
    self->nworkers = cfg->trainer.workers;
    self->workers = calloc((size_t)self->nworkers, sizeof *self->workers);
    if (!self->tensors || !self->workers)
        return fm_errmsg_set(e, -ENOMEM, "out of memory");
    trainer_worker_env_t env = {.cfg = &self->cfg,
                                .model_name = self->model_name,
                                .ds = self->ds,
                                .part = self->part,
                                .latest = self->latest,
                                .ctx = self->ctx,
                                .trainer_id = self->trainer_id,
                                .outbox = self->outbox,
                                .history = self->history,
                                .sec = self->sec,
                                .attack = self->attack,
                                .dp = self->dp,
                                .sa = self->sa,
                                .codec = &self->codec,
                                .ef = self->ef};
    for (int i = 0; i < self->nworkers; i++)
        if (!(self->workers[i] = trainer_worker_new(&env, i, &rc, e)))
            return rc ? rc : FM_EARG;
    return 0;
}

/* Scrape hook (the HTTP thread): the counters are ctx's atomics, the very ones the summary
 * line and HEARTBEATs report; the model slot has its own lock. */
static void s_metrics_collect(void *arg)
{
    trainer_pool_t *self = arg;
    trainer_ctx_t *c = self->ctx;
    fm_metric_set(self->met.sent, (double)atomic_load(&c->sent));
    fm_metric_set(self->met.send_dropped, (double)atomic_load(&c->send_dropped));
    fm_metric_set(self->met.dropouts, (double)atomic_load(&c->dropouts));
    fm_metric_set(self->met.abandoned, (double)atomic_load(&c->abandoned));
    fm_metric_set(self->met.errors, (double)atomic_load(&c->train_errors));
    fm_metric_set(self->met.steps, (double)atomic_load(&c->local_steps));
    fm_metric_set(self->met.samples, (double)atomic_load(&c->samples));
    fm_metric_set(self->met.busy, atomic_load(&c->busy_workers));
    fm_metric_set(self->met.bytes, (double)atomic_load(&c->bytes_sent));
    double ws[3];
    s_worker_seconds(c, ws);
    for (int i = 0; i < 3; i++)
        fm_metric_set(self->met.wsecs[i], ws[i]);
    if (self->ef) {
        trainer_ef_stats_t es;
        trainer_ef_stats(self->ef, &es);
        fm_metric_set(self->met.ef_held, es.held);
        fm_metric_set(self->met.ef_evicted, (double)es.evicted);
    }
    trainer_outbox_stats_t ob;
    trainer_outbox_stats(self->outbox, &ob);
    fm_metric_set(self->met.acked, (double)ob.acked);
    fm_metric_set(self->met.refused, (double)ob.refused);
    fm_metric_set(self->met.resent, (double)ob.resent);
    fm_metric_set(self->met.evicted, (double)ob.evicted);
    fm_metric_set(self->met.unacked, (double)ob.entries);
    if (self->sa) {
        trainer_secagg_stats_t st;
        trainer_secagg_stats(self->sa, &st);
        fm_metric_set(self->met.sa_joined, (double)st.joined);
        fm_metric_set(self->met.sa_uploads, (double)st.uploads);
        fm_metric_set(self->met.sa_done, (double)st.done);
        fm_metric_set(self->met.sa_aborted, (double)st.aborted);
        fm_metric_set(self->met.sa_invites_refused, (double)st.refused);
        for (int r = 1; r < FM_SA_R_NREASONS; r++)
            fm_metric_set(self->met.sa_refused[r], (double)st.by_reason[r]);
    }
    trainer_model_info_t info;
    fm_metric_set(self->met.version,
                  trainer_latest_peek(self->latest, &info) ? (double)info.version : -1.0);
}

/* Register the pool's series in `m` (may be NULL) and the hook that fills them. 0, or
 * -ENOMEM with `e`. */
static int s_metrics_register(trainer_pool_t *self, fm_metrics_t *m, fm_errmsg_t *e)
{
    self->met.sent = fm_metrics_counter(m, "fedmq_updates_sent_total",
                                        "UPDATEs handed to ZeroMQ for the aggregator.", NULL);
    self->met.bytes = fm_metrics_counter(
        m, "fedmq_update_bytes_sent_total",
        "Bytes of the UPDATE frames handed to ZeroMQ, by the pool's [trainer] encoding.",
        (const char *[]){"encoding", self->codec_name, NULL});
    /* 0 without error feedback (top-k), like the secagg series without [secagg] */
    self->met.ef_held = fm_metrics_gauge(
        m, "fedmq_error_feedback_residuals",
        "Clients whose error-feedback residual (top-k) is in memory.", NULL);
    self->met.ef_evicted = fm_metrics_counter(
        m, "fedmq_error_feedback_evicted_total",
        "Residuals dropped to stay within [trainer] error_feedback_mb.", NULL);
    self->met.send_dropped = fm_metrics_counter(
        m, "fedmq_updates_dropped_total",
        "UPDATEs dropped (send timeout, encode error), never sent.", NULL);
    self->met.dropouts = fm_metrics_counter(m, "fedmq_client_dropouts_total",
                                            "Simulated client dropouts (trainer.dropout_prob).",
                                            NULL);
    self->met.abandoned = fm_metrics_counter(m, "fedmq_trainings_abandoned_total",
                                             "Local trainings abandoned on stop.", NULL);
    self->met.errors = fm_metrics_counter(
        m, "fedmq_train_errors_total",
        "Local trainings that failed (non-finite loss) or had no samples.", NULL);
    self->met.steps = fm_metrics_counter(m, "fedmq_local_steps_total",
                                         "Optimiser steps of the local trainings.", NULL);
    self->met.samples = fm_metrics_counter(
        m, "fedmq_train_samples_total",
        "Samples processed by the local trainings (each epoch counts).", NULL);
    self->met.busy = fm_metrics_gauge(m, "fedmq_workers_busy", "Workers training now.", NULL);
    static const char *const states[3] = {"train", "other", "wait"};
    for (int i = 0; i < 3; i++)
        self->met.wsecs[i] = fm_metrics_counter(
            m, "fedmq_worker_seconds_total",
            "Worker time summed over workers: train (local training), other (encoding, "
            "sending, bookkeeping), wait (no model or no job).",
            (const char *[]){"state", states[i], NULL});
    self->met.version = fm_metrics_gauge(
        m, "fedmq_model_version", "Version of the newest model held, -1 = none yet.", NULL);
    self->met.acked = fm_metrics_counter(
        m, "fedmq_updates_acked_total",
        "UPDATEs the aggregator acknowledged as applied (durable in a checkpoint).", NULL);
    self->met.refused = fm_metrics_counter(
        m, "fedmq_updates_refused_total",
        "UPDATEs the aggregator answered with a refusal (lost, dropped, rejected).", NULL);
    self->met.resent = fm_metrics_counter(m, "fedmq_updates_resent_total",
                                          "UPDATEs resent for want of an acknowledgement.", NULL);
    self->met.evicted = fm_metrics_counter(
        m, "fedmq_updates_given_up_total",
        "Unacknowledged UPDATEs given up to stay within [trainer] unacked_max_mb.", NULL);
    self->met.unacked = fm_metrics_gauge(m, "fedmq_updates_unacked",
                                         "UPDATEs sent and not yet acknowledged.", NULL);
    { /* registered also when [secagg] is off (then 0): one set of series per daemon */
        static const char *const done[] = {"result", "done", NULL};
        static const char *const aborted[] = {"result", "aborted", NULL};
        self->met.sa_joined = fm_metrics_counter(
            m, "fedmq_secagg_cohorts_joined_total",
            "Secure-aggregation invites accepted (members made, ADVERTISE_KEYS sent).", NULL);
        self->met.sa_uploads = fm_metrics_counter(m, "fedmq_secagg_uploads_total",
                                                  "MASKED_UPDATEs handed to ZeroMQ.", NULL);
        self->met.sa_done = fm_metrics_counter(
            m, "fedmq_secagg_members_total",
            "Secure-aggregation members ended: done (COHORT_DONE after answering), aborted "
            "(COHORT_ABORT, dropout, a refused message, timeout).",
            done);
        self->met.sa_aborted = fm_metrics_counter(
            m, "fedmq_secagg_members_total",
            "Secure-aggregation members ended: done (COHORT_DONE after answering), aborted "
            "(COHORT_ABORT, dropout, a refused message, timeout).",
            aborted);
        self->met.sa_invites_refused = fm_metrics_counter(
            m, "fedmq_secagg_invites_refused_total",
            "Secure-aggregation invites refused (client already a member, wrong m, bad "
            "params).",
            NULL);
        for (int r = 1; r < FM_SA_R_NREASONS; r++) {
            const char *labels[] = {"reason", fm_sa_reason_name((fm_sa_reason_t)r), NULL};
            self->met.sa_refused[r] = fm_metrics_counter(
                m, "fedmq_secagg_refused_total",
                "Secure-aggregation messages a member refused, by reason (fm_sa_reason_t).",
                labels);
        }
    }
    int rc = fm_metrics_status(m);
    if (rc)
        return fm_errmsg_set(e, rc, "metrics: %s", fm_strerror(rc));
    fm_metrics_on_scrape(m, s_metrics_collect, self, NULL);
    return 0;
}

trainer_pool_t *trainer_pool_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                 fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    return trainer_pool_new_attacked(cfg, args, metrics, sec, NULL, err, e);
}

trainer_pool_t *trainer_pool_new_attacked(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                          fm_metrics_t *metrics, fm_sec_t *sec,
                                          const trainer_attack_t *attack, int *err,
                                          fm_errmsg_t *e)
{
    if (attack && (*err = trainer_attack_check(attack, e)) != 0)
        return NULL;
    if (fm_cfg_model_builtin_only(cfg, TRAINER_POOL_SPEC_REFUSAL, e) != 0) {
        *err = FM_EARG; /* the config names a model this program cannot run: exit 2 */
        return NULL;
    }
    trainer_pool_t *self = calloc(1, sizeof *self);
    if (!self) {
        *err = fm_errmsg_set(e, -ENOMEM, "out of memory");
        return NULL;
    }
    self->attack = attack;
    self->cfg = *cfg;
    self->args = args;
    self->sec = sec;
    self->snapshot_backoff = S_SNAPSHOT_FIRST_S;
    self->status_at = fm_daemon_now();
#ifdef FM_TEST_HOOKS
    const char *drop = getenv("FEDMQ_TEST_DROP_ACKS");
    self->drop_acks = drop ? atoi(drop) : 0;
#endif
    int rc;
    /* sockets before the data: a port problem is reported before a slow load */
    if ((rc = s_name(self)) != 0 || (rc = s_init_range(self, e)) != 0 ||
        (rc = s_sockets_open(self, e)) != 0 || (rc = s_init_data(self, e)) != 0 ||
        (rc = s_init_workers(self, e)) != 0 || (rc = s_metrics_register(self, metrics, e)) != 0) {
        *err = rc;
        trainer_pool_destroy(&self);
        return NULL;
    }
    return self;
}

int trainer_pool_run(trainer_pool_t *self)
{
    const fm_config_t *cfg = &self->cfg;
    FM_LOG(LOG_INFO,
           "trainer %s: model %s, %d workers x %d threads, clients %u-%u, "
           "model_pub %s, snapshot %s, updates %s",
           self->trainer_id, self->model_name, self->nworkers, cfg->trainer.threads_per_worker,
           self->client_first, self->client_first + self->client_count - 1,
           cfg->endpoints.model_pub, cfg->endpoints.snapshot, cfg->endpoints.updates);
    for (int i = 0; i < self->nworkers; i++) {
        int rc = trainer_worker_start(self->workers[i]);
        if (rc != 0) {
            FM_LOG(LOG_ERR, "worker %d: cannot start: %s", i, fm_strerror(rc));
            s_workers_destroy(self);
            return rc;
        }
    }
    s_history_event(self, "start");
    s_send_member(self, FM_WIRE_HELLO);
    int rc = fm_loop_run(self->loop);
    if (rc != 0)
        FM_LOG(LOG_ERR, "polling failed: %s", fm_strerror(rc));
    FM_LOG(LOG_INFO, "stopping: waiting for the workers");
    double t0 = fm_daemon_now();
    s_workers_destroy(self);
    s_send_member(self, FM_WIRE_BYE);
    FM_LOG(LOG_INFO, "workers stopped in %.2f s; BYE sent", fm_daemon_now() - t0);
    s_summary(self, "final");
    trainer_outbox_stats_t ob;
    trainer_outbox_stats(self->outbox, &ob);
    if (ob.entries)
        FM_LOG(LOG_NOTICE,
               "%zu updates sent but not acknowledged at exit: applied only if the "
               "aggregator checkpoints them",
               ob.entries);
    s_history_event(self, "stop");
    return rc;
}

void trainer_pool_destroy(trainer_pool_t **p)
{
    if (!p || !*p)
        return;
    trainer_pool_t *self = *p;
    s_workers_destroy(self);
    fm_loop_destroy(&self->loop);
    zsock_destroy(&self->monitor);
    if (self->monitoring)
        zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->dealer);
    zsock_destroy(&self->agg_push);
    zsock_destroy(&self->acks_sub);
    trainer_ctx_destroy(&self->ctx);
    trainer_dp_destroy(&self->dp);
    trainer_ef_destroy(&self->ef);
    trainer_secagg_destroy(&self->sa);
    trainer_outbox_destroy(&self->outbox);
    fm_jsonl_close(&self->history);
    free(self->found);
    free(self->declined);
    trainer_latest_destroy(&self->latest);
    fm_partition_destroy(&self->part);
    fm_dataset_destroy(&self->ds);
    fm_model_destroy(&self->layout);
    fm_wire_buf_free(&self->buf);
    free(self->tensors);
    free(self);
    *p = NULL;
}
