#include "aggregator_server.h"

#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aggregator_idset.h"
#include "aggregator_round.h"
#include "fm_ckpt.h"
#include "fm_fedbuff.h"
#include "fm_log.h"
#include "fm_members.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_server_opt.h"
#include "fm_wire.h"

#define S_PROG "fedmq-aggregator"
#define S_IDS_KEY "agg.ids"     /* checkpoint meta key: ids applied to the model */
#define S_ROUND_KEY "agg.round" /* checkpoint meta key: last sync round opened (u64 LE) */
#define S_TICK_S 0.1            /* sync mode: round deadlines are checked this often */
#define S_WAIT_LOG_S 10.0       /* sync mode: "waiting for clients" at most this often */
#define S_REPUBLISH_S 1.0       /* re-publish the current MODEL this often */
#define S_STATS_MIN_S 1.0       /* rewrite stats.json for new rejections at most this often */
#define S_DRAIN_MAX 256         /* frames received per poll before timers are checked */
#define S_PUB_LINGER_MS 1000    /* PUB linger at shutdown: let the last MODEL go out */
#define S_PUB_SNDHWM 16         /* subscribers only need the newest model */
#define S_RCV_BYTES_MAX ((size_t)256 << 20) /* budget of the PULL receive queue */

static const char *const s_reason_names[AGG_REJ_COUNT] = {
    [AGG_REJ_MALFORMED] = "malformed",
    [AGG_REJ_TRUNCATED] = "truncated",
    [AGG_REJ_VERSION] = "version",
    [AGG_REJ_UNEXPECTED_TYPE] = "unexpected_type",
    [AGG_REJ_MODEL] = "model",
    [AGG_REJ_NAME] = "name",
    [AGG_REJ_DTYPE] = "dtype",
    [AGG_REJ_SHAPE] = "shape",
    [AGG_REJ_NONFINITE] = "nonfinite",
    [AGG_REJ_STALE] = "stale",
    [AGG_REJ_FUTURE] = "future",
    [AGG_REJ_DUPLICATE] = "duplicate",
    [AGG_REJ_SAMPLES] = "samples",
    [AGG_REJ_LATE] = "late",
    [AGG_REJ_COHORT] = "cohort",
    [AGG_REJ_QUORUM] = "quorum",
};

_Static_assert(AGG_REJ_COUNT <= FM_CKPT_NREASONS, "reasons must fit the checkpoint counters");
_Static_assert(FM_CFG_DIGEST_BYTES == FM_CKPT_DIGEST_BYTES, "digest sizes");

struct agg_server {
    fm_config_t cfg;
    const fm_daemon_args_t *args;   /* borrowed, for SIGHUP; may be NULL */

    fm_model_t *model;              /* the global model (params = current version) */
    size_t nparams;
    fm_fedbuff_t *buf;
    fm_server_opt_t *opt;
    size_t nopt;
    float *mean;                    /* nparams: the buffer's mean delta */
    fm_ckpt_t *ckpt;
    agg_idset_t *ids;
    uint8_t *ids_blob;              /* cap * FM_WIRE_ID_LEN: checkpoint scratch */
    fm_wire_tensors_t *tensors;     /* decode scratch */
    fm_wire_buf_t frame;            /* the encoded MODEL of the current version */

    zsock_t *pull;
    zsock_t *pub;
    zpoller_t *poller;

    fm_members_t *members;          /* live trainers (HELLO/HEARTBEAT/BYE on PULL) */
    uint8_t *live;                  /* num_clients: clients served by live trainers */
    uint32_t nlive;                 /* distinct live clients at the last count */
    int sync;                       /* mode = sync */
    double mu;                      /* FedProx mu sent with each round (0 = fedavg) */
    agg_round_t *round;             /* sync: the open round (NULL in async mode) */
    uint64_t round_no;              /* sync: number of the last round opened (persisted) */
    uint64_t rounds_done;           /* sync: rounds aggregated (this process) */
    uint64_t rounds_failed;         /* sync: rounds closed below min_clients */
    int finished;                   /* sync: num_rounds reached, no more rounds */
    double last_wait_log;           /* monotonic */

    uint64_t version;
    double created;                 /* wall clock of the current version ("ts") */
    uint64_t applied;               /* updates folded into versions (incl. resumed) */
    uint64_t rejected_total;
    uint64_t rejected[AGG_REJ_COUNT];
    uint64_t bytes_received;
    uint64_t dropped_buffers;       /* buffers the server optimiser refused */
    double started;                 /* wall clock */

    double buf_stale_sum;           /* staleness of the updates in the open buffer */
    double last_version_at;         /* monotonic */
    uint64_t applied_at_last;       /* updates folded when the last version was made */
    double last_publish_at;         /* monotonic */
    double last_stats_at;           /* monotonic */
    int stats_dirty;

    double log_window_at;           /* rate limit of rejection warnings */
    int log_lines;
    uint64_t log_suppressed;
};

const char *agg_reason_name(agg_reason_t r)
{
    return (unsigned)r < AGG_REJ_COUNT ? s_reason_names[r] : "?";
}

/* ---- counting and logging rejections --------------------------------------------------- */

static void s_reject(agg_server_t *self, agg_reason_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_reject(agg_server_t *self, agg_reason_t r, const char *fmt, ...)
{
    self->rejected[r]++;
    self->rejected_total++;
    self->stats_dirty = 1;
    double now = fm_daemon_now();
    if (now - self->log_window_at >= 1.0) {
        if (self->log_suppressed)
            FM_LOG(LOG_WARNING, "%llu more rejected frames not logged (rate limit)",
                   (unsigned long long)self->log_suppressed);
        self->log_window_at = now;
        self->log_lines = 0;
        self->log_suppressed = 0;
    }
    if (self->log_lines >= AGG_LOG_BURST) {
        self->log_suppressed++;
        return;
    }
    self->log_lines++;
    if (LOG_WARNING > fm_log_level())
        return;
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fm_log_write(LOG_WARNING, "rejected frame (%s): %s", s_reason_names[r], what);
}

/* Reason for an error of fm_wire_peek / fm_wire_decode_update. */
static agg_reason_t s_decode_reason(int rc)
{
    switch (rc) {
    case FM_ETRUNC: return AGG_REJ_TRUNCATED;
    case FM_EVERSION: return AGG_REJ_VERSION;
    default: return AGG_REJ_MALFORMED;
    }
}

/* ---- stats.json ------------------------------------------------------------------------- */

/* Rewrite <checkpoint_dir>/stats.json atomically (temp file + rename). 0 or -errno. */
static int s_write_stats(agg_server_t *self)
{
    char path[FM_CFG_STR_MAX + 32], tmp[FM_CFG_STR_MAX + 48];
    snprintf(path, sizeof path, "%s/stats.json", self->cfg.aggregator.checkpoint_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    fm_fedbuff_stats_t st;
    fm_fedbuff_stats(self->buf, &st);
    int rc = 0;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        rc = -errno;
        goto cleanup;
    }
    fprintf(f, "{\"version\": %llu, \"updates_applied\": %llu, \"updates_rejected\": %llu, "
            "\"rejected\": {", (unsigned long long)self->version,
            (unsigned long long)self->applied, (unsigned long long)self->rejected_total);
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        fprintf(f, "%s\"%s\": %llu", r ? ", " : "", s_reason_names[r],
                (unsigned long long)self->rejected[r]);
    uint32_t cohort = 0;
    if (self->round)
        agg_round_cohort(self->round, &cohort);
    fprintf(f, "}, \"mode\": \"%s\", \"round\": %llu, \"round_open\": %d, \"cohort_size\": %u, "
            "\"round_reported\": %u, \"rounds_completed\": %llu, \"rounds_failed\": %llu, "
            "\"finished\": %s, \"live_clients\": %u", self->sync ? "sync" : "async",
            (unsigned long long)self->round_no,
            self->round ? agg_round_is_open(self->round) : 0, cohort,
            self->round ? agg_round_reported(self->round) : 0,
            (unsigned long long)self->rounds_done, (unsigned long long)self->rounds_failed,
            self->finished ? "true" : "false", self->nlive);
    fprintf(f, ", \"staleness_mean\": %.6g, \"staleness_max\": %llu, \"bytes_received\": %llu, "
            "\"updates_pending\": %d, \"buffers_dropped\": %llu, \"model\": \"%s\", "
            "\"started\": %.3f, \"updated\": %.3f}\n",
            st.updates ? st.staleness_sum / (double)st.updates : 0.0,
            (unsigned long long)st.staleness_max, (unsigned long long)self->bytes_received,
            fm_fedbuff_count(self->buf), (unsigned long long)self->dropped_buffers,
            fm_model_name(self->model), self->started, fm_daemon_wallclock());
    if (fflush(f) != 0 || ferror(f))
        rc = -errno;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    f = NULL;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
cleanup:
    if (rc) {
        unlink(tmp);
        FM_LOG(LOG_ERR, "%s: cannot write: %s", path, fm_strerror(rc));
    } else {
        self->stats_dirty = 0;
        self->last_stats_at = fm_daemon_now();
    }
    return rc;
}

/* ---- model, checkpoints ------------------------------------------------------------------ */

/* Encode the current version into self->frame and publish it. */
static void s_publish(agg_server_t *self, int encode)
{
    if (encode) {
        fm_wire_model_t hdr = {.version = self->version, .created = self->created};
        if (self->sync) {
            /* a closed round (waiting for clients, finished) publishes an empty cohort */
            hdr.round = self->round_no;
            hdr.cohort.present = 1;
            hdr.cohort.ids = agg_round_cohort(self->round, &hdr.cohort.count);
            hdr.mu = self->mu;
        }
        int rc = fm_wire_encode_model(&hdr, self->model, fm_model_params(self->model),
                                      &self->frame);
        if (rc) {
            FM_LOG(LOG_ERR, "encode MODEL version %llu: %s", (unsigned long long)self->version,
                   fm_strerror(rc));
            return;
        }
    }
    if (self->frame.len == 0)
        return;
    /* PUB never blocks: a subscriber at its HWM just misses this copy */
    if (zmq_send(zsock_resolve(self->pub), self->frame.data, self->frame.len, ZMQ_DONTWAIT) < 0)
        FM_LOG(LOG_DEBUG, "publish MODEL: %s", zmq_strerror(zmq_errno()));
    self->last_publish_at = fm_daemon_now();
}

/* Save the current version with the optimiser state, counters, config digest and the ids
 * folded into it (the open buffer's ids are not in the model: left out), then prune. */
static int s_checkpoint(agg_server_t *self, const char *why)
{
    fm_ckpt_info_t info;
    memset(&info, 0, sizeof info);
    snprintf(info.model, sizeof info.model, "%s", fm_model_name(self->model));
    info.nparams = self->nparams;
    info.version = self->version;
    info.created = 0;
    info.updates_applied = self->applied;
    info.updates_rejected = self->rejected_total;
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        info.rejected_by_reason[r] = self->rejected[r];
    fm_cfg_digest(&self->cfg, info.config_digest);
    info.nopt = self->nopt;
    info.score = NAN;
    size_t nids = agg_idset_dump(self->ids, (size_t)fm_fedbuff_count(self->buf), self->ids_blob);
    unsigned char round_le[8];
    for (int i = 0; i < 8; i++)
        round_le[i] = (unsigned char)(self->round_no >> (8 * i));
    fm_ckpt_extra_t extra[2] = {{S_IDS_KEY, self->ids_blob, nids * FM_WIRE_ID_LEN},
                                {S_ROUND_KEY, round_le, sizeof round_le}};
    fm_errmsg_t e = {{0}};
    double t0 = fm_daemon_now();
    int rc = fm_ckpt_save(self->ckpt, &info, fm_model_params(self->model),
                          self->nopt ? fm_server_opt_state(self->opt) : NULL, extra, 2, &e);
    if (rc) {
        FM_LOG(LOG_ERR, "checkpoint version %llu (%s): %s", (unsigned long long)self->version,
               why, e.msg[0] ? e.msg : fm_strerror(rc));
        return rc;
    }
    FM_LOG(LOG_INFO, "checkpoint version %llu saved (%s, %zu ids, %.0f ms)",
           (unsigned long long)self->version, why, nids, (fm_daemon_now() - t0) * 1e3);
    if ((rc = fm_ckpt_prune(self->ckpt, (size_t)self->cfg.aggregator.checkpoint_keep, &e)) != 0)
        FM_LOG(LOG_ERR, "prune checkpoints: %s", e.msg[0] ? e.msg : fm_strerror(rc));
    return 0;
}

/* Resume from the newest valid checkpoint. 0 (resumed), -ENOENT (none), or an error. */
static int s_resume(agg_server_t *self, fm_errmsg_t *e)
{
    fm_ckpt_info_t info;
    fm_errmsg_t note = {{0}};
    int rc = fm_ckpt_load_latest(self->ckpt, &info, NULL, 0, NULL, 0, &note);
    if (rc == -ENOENT)
        return rc;
    if (rc)
        return fm_errmsg_set(e, rc, "%s", note.msg[0] ? note.msg : fm_strerror(rc));
    if (note.msg[0])
        FM_LOG(LOG_WARNING, "%s", note.msg);
    const char *name = fm_model_name(self->model);
    if (strcmp(info.model, name) != 0 || info.nparams != self->nparams)
        return fm_errmsg_set(e, FM_EARG,
                             "%s: checkpoint version %llu is model '%s' (%llu params); the "
                             "config says '%s': use another checkpoint_dir",
                             self->cfg.aggregator.checkpoint_dir,
                             (unsigned long long)info.version, info.model,
                             (unsigned long long)info.nparams, name);
    int with_opt = info.nopt == self->nopt && self->nopt > 0;
    if (info.nopt != self->nopt)
        FM_LOG(LOG_WARNING, "checkpoint version %llu has %llu optimizer floats, %s needs %zu: "
               "server optimizer state reset", (unsigned long long)info.version,
               (unsigned long long)info.nopt,
               fm_server_opt_kind_name(fm_server_opt_kind(self->opt)), self->nopt);
    rc = fm_ckpt_load(self->ckpt, info.version, &info, fm_model_params(self->model),
                      self->nparams, with_opt ? fm_server_opt_state(self->opt) : NULL,
                      with_opt ? self->nopt : 0, e);
    if (rc)
        return rc;
    if (!fm_model_all_finite(self->model))
        return fm_errmsg_set(e, FM_ENONFINITE, "%s: checkpoint version %llu: non-finite params",
                             self->cfg.aggregator.checkpoint_dir,
                             (unsigned long long)info.version);
    if (with_opt && (rc = fm_server_opt_state_check(self->opt, e)) != 0)
        return rc;
    self->version = info.version;
    self->applied = info.updates_applied;
    self->rejected_total = info.updates_rejected;
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        self->rejected[r] = info.rejected_by_reason[r];
    uint8_t digest[FM_CFG_DIGEST_BYTES];
    fm_cfg_digest(&self->cfg, digest);
    if (memcmp(digest, info.config_digest, sizeof digest) != 0)
        FM_LOG(LOG_NOTICE, "the config differs from the one checkpoint version %llu was "
               "written with", (unsigned long long)info.version);
    /* never go below the newest version ever saved (its record may be the invalid one) */
    uint64_t latest = 0;
    if (fm_ckpt_latest_version(self->ckpt, &latest, NULL) == 0 && latest > self->version) {
        FM_LOG(LOG_WARNING, "newest checkpoint version %llu is unreadable: continuing from "
               "the params of version %llu as version %llu", (unsigned long long)latest,
               (unsigned long long)self->version, (unsigned long long)latest);
        self->version = latest;
    }
    size_t len = 0;
    size_t cap = agg_idset_cap(self->ids) * FM_WIRE_ID_LEN;
    rc = fm_ckpt_meta_get(self->ckpt, S_IDS_KEY, self->ids_blob, cap, &len, &note);
    if (rc == 0)
        rc = agg_idset_load(self->ids, self->ids_blob, len);
    if (rc && rc != -ENOENT)
        FM_LOG(LOG_WARNING, "checkpoint ids not reloaded (%s): duplicates of updates folded "
               "before the restart will not be recognised", fm_strerror(rc));
    unsigned char round_le[8];
    rc = fm_ckpt_meta_get(self->ckpt, S_ROUND_KEY, round_le, sizeof round_le, &len, &note);
    if (rc == 0 && len == sizeof round_le) {
        self->round_no = 0;
        for (int i = 7; i >= 0; i--)
            self->round_no = self->round_no << 8 | round_le[i];
    }
    FM_LOG(LOG_NOTICE, "resumed from checkpoint version %llu, round %llu (%llu updates applied, "
           "%zu ids remembered)", (unsigned long long)self->version,
           (unsigned long long)self->round_no, (unsigned long long)self->applied,
           agg_idset_count(self->ids));
    return 0;
}

/* ---- ingest -------------------------------------------------------------------------------- */

static void s_round_next(agg_server_t *self);

/* A full buffer (async) or a closing round (sync): server step, new version, publish (sync:
 * the next round), maybe checkpoint, stats. */
static void s_aggregate(agg_server_t *self)
{
    int count = fm_fedbuff_count(self->buf);
    double stale_mean = count ? self->buf_stale_sum / count : 0.0;
    self->buf_stale_sum = 0;
    if (fm_fedbuff_take(self->buf, self->mean) != 0)
        return;
    if (fm_server_opt_apply(self->opt, fm_model_params(self->model), self->mean) != 0) {
        self->dropped_buffers++;
        self->stats_dirty = 1;
        FM_LOG(LOG_ERR, "server step refused (non-finite result): buffer of %d updates dropped, "
               "model stays at version %llu", count, (unsigned long long)self->version);
        if (self->sync) {
            agg_round_close(self->round);
            self->rounds_failed++;
            s_round_next(self);
        }
        return;
    }
    self->version++;
    self->applied += (uint64_t)count;
    self->created = fm_daemon_wallclock();
    if (self->sync) {
        uint32_t cohort;
        agg_round_cohort(self->round, &cohort);
        FM_LOG(LOG_INFO, "round %llu: %d of %u selected clients reported",
               (unsigned long long)self->round_no, count, cohort);
        agg_round_close(self->round);
        self->rounds_done++;
    }
    int nr = self->cfg.federation.num_rounds;
    if (nr > 0 && self->version >= (uint64_t)nr && !self->finished) {
        self->finished = 1;
        FM_LOG(LOG_NOTICE, "num_rounds = %d reached at version %llu: no more %s", nr,
               (unsigned long long)self->version, self->sync ? "rounds" : "versions");
    }
    if (self->sync) {
        s_round_next(self); /* publishes the new version, with the next cohort */
    } else {
        s_publish(self, 1);
    }
    double now = fm_daemon_now();
    double dt = now - self->last_version_at;
    double rate = dt > 0 ? (double)(self->applied - self->applied_at_last) / dt : 0.0;
    self->last_version_at = now;
    self->applied_at_last = self->applied;
    FM_LOG(LOG_INFO, "version %llu: %d updates folded, mean staleness %.2f, applied %llu, "
           "rejected %llu, %.1f updates/s", (unsigned long long)self->version, count,
           stale_mean, (unsigned long long)self->applied,
           (unsigned long long)self->rejected_total, rate);
    if (self->version % (uint64_t)self->cfg.aggregator.checkpoint_every == 0)
        s_checkpoint(self, "periodic");
    s_write_stats(self);
}

/* One frame from the PULL socket (untrusted). */
static void s_on_frame(agg_server_t *self, const void *data, size_t len)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t type = FM_WIRE_NONE;
    self->bytes_received += len;
    int rc = fm_wire_peek(data, len, &type, &e);
    if (rc) {
        s_reject(self, s_decode_reason(rc), "%s", e.msg);
        return;
    }
    if (type == FM_WIRE_HELLO || type == FM_WIRE_HEARTBEAT || type == FM_WIRE_BYE) {
        fm_wire_member_t m;
        if ((rc = fm_wire_decode_member(data, len, &type, &m, &e)) != 0) {
            s_reject(self, s_decode_reason(rc), "%s", e.msg);
            return;
        }
        fm_member_event_t ev = fm_members_apply(self->members, type, &m, fm_daemon_now(), NULL);
        if (ev == FM_MEMBER_JOINED || ev == FM_MEMBER_RESTARTED || ev == FM_MEMBER_LEFT)
            FM_LOG(LOG_INFO, "trainer %s (clients %u-%u) %s", m.trainer, m.client_first,
                   m.client_first + m.client_count - (m.client_count ? 1 : 0),
                   ev == FM_MEMBER_LEFT ? "left" : ev == FM_MEMBER_JOINED ? "joined" : "restarted");
        if (ev == FM_MEMBER_FULL)
            FM_LOG(LOG_WARNING, "trainer %s not registered: %d trainers already", m.trainer,
                   FM_MEMBERS_MAX);
        return;
    }
    if (type != FM_WIRE_UPDATE) {
        s_reject(self, AGG_REJ_UNEXPECTED_TYPE, "%s message on the updates socket",
                 fm_wire_type_name(type));
        return;
    }
    fm_wire_update_t hdr;
    if ((rc = fm_wire_decode_update(data, len, &hdr, self->tensors, &e)) != 0) {
        s_reject(self, s_decode_reason(rc), "%s", e.msg);
        return;
    }
    const char *name = fm_model_name(self->model);
    if (hdr.model[0] && strcmp(hdr.model, name) != 0) {
        s_reject(self, AGG_REJ_MODEL, "UPDATE from %s: model '%s', this aggregator runs '%s'",
                 hdr.trainer, hdr.model, name);
        return;
    }
    if ((rc = fm_wire_tensors_check(self->tensors, self->model, &e)) != 0) {
        agg_reason_t r = rc == FM_ENAME    ? AGG_REJ_NAME
                         : rc == FM_EDTYPE ? AGG_REJ_DTYPE
                         : rc == FM_ESHAPE ? AGG_REJ_SHAPE
                                           : AGG_REJ_MALFORMED;
        s_reject(self, r, "UPDATE from %s: %s", hdr.trainer, e.msg);
        return;
    }
    if ((rc = fm_wire_tensors_finite(self->tensors, &e)) != 0) {
        s_reject(self, AGG_REJ_NONFINITE, "UPDATE from %s: %s", hdr.trainer, e.msg);
        return;
    }
    if (hdr.base > self->version) {
        s_reject(self, AGG_REJ_FUTURE, "UPDATE from %s: base version %llu > current %llu",
                 hdr.trainer, (unsigned long long)hdr.base, (unsigned long long)self->version);
        return;
    }
    uint64_t tau = self->version - hdr.base;
    if (self->finished) {
        s_reject(self, AGG_REJ_LATE, "UPDATE from %s: num_rounds = %d reached, the run is over",
                 hdr.trainer, self->cfg.federation.num_rounds);
        return;
    }
    if (self->sync) {
        /* a round's updates start from the round's model: anything else is late */
        agg_round_verdict_t v = agg_round_check(self->round, hdr.round, hdr.client);
        if (v == AGG_ROUND_CLOSED || tau != 0) {
            s_reject(self, AGG_REJ_LATE, "UPDATE from %s client %u: round %llu base %llu, the "
                     "open round is %llu%s on version %llu", hdr.trainer, hdr.client,
                     (unsigned long long)hdr.round, (unsigned long long)hdr.base,
                     (unsigned long long)self->round_no,
                     agg_round_is_open(self->round) ? "" : " (closed)",
                     (unsigned long long)self->version);
            return;
        }
        if (v != AGG_ROUND_OK) {
            s_reject(self, AGG_REJ_COHORT, "UPDATE from %s: client %u %s round %llu", hdr.trainer,
                     hdr.client, v == AGG_ROUND_REPEAT ? "already reported in" : "is not selected in",
                     (unsigned long long)hdr.round);
            return;
        }
    } else if (self->cfg.federation.min_clients > 1 &&
               self->nlive < (uint32_t)self->cfg.federation.min_clients) {
        s_reject(self, AGG_REJ_QUORUM, "UPDATE from %s: %u live clients, min_clients = %d",
                 hdr.trainer, self->nlive, self->cfg.federation.min_clients);
        return;
    }
    if (tau > (uint64_t)self->cfg.aggregator.max_staleness) {
        s_reject(self, AGG_REJ_STALE, "UPDATE from %s: staleness %llu > max_staleness %d",
                 hdr.trainer, (unsigned long long)tau, self->cfg.aggregator.max_staleness);
        return;
    }
    if (agg_idset_contains(self->ids, hdr.id)) {
        s_reject(self, AGG_REJ_DUPLICATE, "UPDATE from %s: id %02x%02x%02x%02x... seen before",
                 hdr.trainer, hdr.id[0], hdr.id[1], hdr.id[2], hdr.id[3]);
        return;
    }
    if (hdr.num_samples == 0) {
        s_reject(self, AGG_REJ_SAMPLES, "UPDATE from %s: n = 0 samples", hdr.trainer);
        return;
    }
    if ((rc = fm_fedbuff_begin(self->buf, tau, hdr.num_samples)) != 0) {
        s_reject(self, AGG_REJ_SAMPLES, "UPDATE from %s: cannot be weighted (%s)", hdr.trainer,
                 fm_strerror(rc));
        return;
    }
    for (int i = 0; i < self->tensors->count; i++) {
        const fm_wire_tensor_t *t = &self->tensors->t[i];
        const fm_view_t *v = fm_model_find(self->model, t->name);
        FM_ASSERT(v && t->nbytes == 4 * v->numel); /* fm_wire_tensors_check passed */
        int frc = fm_fedbuff_fold_span(self->buf, v->offset, v->numel, t->data);
        FM_ASSERT(frc == 0);
    }
    fm_fedbuff_end(self->buf);
    agg_idset_add(self->ids, hdr.id);
    self->buf_stale_sum += (double)tau;
    self->stats_dirty = 1;
    FM_LOG(LOG_DEBUG, "folded UPDATE from %s client %u: base %llu, tau %llu, n %llu",
           hdr.trainer, hdr.client, (unsigned long long)hdr.base, (unsigned long long)tau,
           (unsigned long long)hdr.num_samples);
    if (self->sync) {
        agg_round_mark(self->round, hdr.client);
        if (agg_round_complete(self->round))
            s_aggregate(self);
    } else if (fm_fedbuff_full(self->buf)) {
        s_aggregate(self);
    }
}

/* ---- membership and sync rounds ------------------------------------------------------------ */

/* Expire silent trainers and recount the live clients. */
static void s_members_tick(agg_server_t *self, double now)
{
    fm_members_expire(self->members, now, self->cfg.broker.heartbeat_timeout_s, NULL, NULL);
    uint32_t n = fm_members_live_clients(self->members,
                                         (uint32_t)self->cfg.federation.num_clients, self->live);
    if (n != self->nlive)
        self->stats_dirty = 1;
    self->nlive = n;
}

/* Sync, no round open and too few clients live: say so, at most every S_WAIT_LOG_S. */
static void s_round_wait_log(agg_server_t *self, double now)
{
    if (self->finished || now - self->last_wait_log < S_WAIT_LOG_S)
        return;
    FM_LOG(LOG_NOTICE, "waiting for clients: %u live, min_clients = %d", self->nlive,
           self->cfg.federation.min_clients);
    self->last_wait_log = now;
}

/* Sync: open the next round if enough clients are live (else wait), then publish the
 * current version with its cohort (empty while waiting or when finished). */
static void s_round_next(agg_server_t *self)
{
    const fm_cfg_federation_t *f = &self->cfg.federation;
    double now = fm_daemon_now();
    fm_fedbuff_reset(self->buf);
    self->buf_stale_sum = 0;
    if (!self->finished && self->nlive >= (uint32_t)f->min_clients) {
        uint64_t no = self->round_no + 1;
        uint32_t m = agg_round_open(self->round, no, self->live, (uint32_t)f->clients_per_round,
                                    f->seed, now + self->cfg.aggregator.round_timeout_s);
        if (m > 0) {
            self->round_no = no;
            uint32_t cnt;
            const uint32_t *ids = agg_round_cohort(self->round, &cnt);
            char list[160];
            size_t at = 0;
            list[0] = '\0';
            for (uint32_t i = 0; i < cnt && at < sizeof list - 16; i++)
                at += (size_t)snprintf(list + at, sizeof list - at, "%s%u", i ? "," : "", ids[i]);
            FM_LOG(LOG_INFO, "round %llu on version %llu: %u of %u live clients selected (%s%s), "
                   "deadline %.1f s", (unsigned long long)no, (unsigned long long)self->version,
                   cnt, self->nlive, list, at >= sizeof list - 16 ? ",..." : "",
                   self->cfg.aggregator.round_timeout_s);
        }
    } else {
        s_round_wait_log(self, now);
    }
    self->stats_dirty = 1;
    s_publish(self, 1);
}

/* Sync, every tick: close a round past its deadline (aggregate what came if at least
 * min_clients reported, else drop it), open one when none is open. */
static void s_round_tick(agg_server_t *self, double now)
{
    if (agg_round_is_open(self->round)) {
        if (now < agg_round_deadline(self->round))
            return;
        uint32_t got = agg_round_reported(self->round), cohort;
        agg_round_cohort(self->round, &cohort);
        if (got >= (uint32_t)self->cfg.federation.min_clients) {
            FM_LOG(LOG_NOTICE, "round %llu: deadline, aggregating the %u of %u updates that came",
                   (unsigned long long)self->round_no, got, cohort);
            s_aggregate(self);
            return;
        }
        FM_LOG(LOG_WARNING, "round %llu: deadline with %u of %u updates, min_clients = %d: not "
               "aggregated, retried with a new cohort", (unsigned long long)self->round_no, got,
               cohort, self->cfg.federation.min_clients);
        agg_round_close(self->round);
        self->rounds_failed++;
        s_round_next(self);
        return;
    }
    if (self->finished)
        return;
    if (self->nlive >= (uint32_t)self->cfg.federation.min_clients)
        s_round_next(self);
    else
        s_round_wait_log(self, now); /* the published MODEL (empty cohort) stays as it is */
}

/* Receive what is queued on PULL, at most S_DRAIN_MAX frames. */
static void s_drain(agg_server_t *self)
{
    void *sock = zsock_resolve(self->pull);
    static const unsigned char s_empty[1] = {0};
    for (int i = 0; i < S_DRAIN_MAX && !fm_daemon_stopping(); i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        size_t len = zmq_msg_size(&msg);
        s_on_frame(self, len ? zmq_msg_data(&msg) : s_empty, len);
        zmq_msg_close(&msg);
    }
}

/* SIGHUP: re-read the config; take it if only reloadable keys changed. */
static void s_reload(agg_server_t *self)
{
    if (!self->args) {
        FM_LOG(LOG_NOTICE, "SIGHUP: no config to reload");
        return;
    }
    fm_config_t fresh;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&fresh, self->args, &e) != 0 ||
        fm_cfg_check_reload(&self->cfg, &fresh, &e) != 0) {
        FM_LOG(LOG_WARNING, "SIGHUP: config not reloaded: %s", e.msg);
        return;
    }
    self->cfg = fresh;
    if (self->args->log_level < 0)
        fm_log_init(S_PROG, fresh.aggregator.log_level);
    FM_LOG(LOG_NOTICE, "SIGHUP: config reloaded (max_staleness %d, checkpoint_every %d, "
           "checkpoint_keep %d)", fresh.aggregator.max_staleness,
           fresh.aggregator.checkpoint_every, fresh.aggregator.checkpoint_keep);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int s_bind(zsock_t *sock, const char *endpoint, const char *what, fm_errmsg_t *e)
{
    if (zsock_bind(sock, "%s", endpoint) < 0) {
        int err = zmq_errno();
        return fm_errmsg_set(e, err ? -err : -EINVAL, "bind %s %s: %s", what, endpoint,
                             zmq_strerror(err));
    }
    return 0;
}

agg_server_t *agg_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args, int *err,
                             fm_errmsg_t *e)
{
    int rc = 0;
    agg_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        rc = -ENOMEM;
        goto cleanup;
    }
    self->cfg = *cfg;
    self->args = args;
    const fm_cfg_aggregator_t *ac = &self->cfg.aggregator;

    /* model, buffer, optimiser */
    const char *mname = fm_arch_name(self->cfg.federation.model);
    self->model = fm_model_new(mname ? mname : "?", &rc);
    if (!self->model) {
        fm_errmsg_set(e, rc, "[federation] model = %s: %s", mname ? mname : "?", fm_strerror(rc));
        goto cleanup;
    }
    self->nparams = fm_model_nparams(self->model);
    const fm_cfg_federation_t *fc = &self->cfg.federation;
    self->sync = fc->mode == FM_CFG_MODE_SYNC;
    self->mu = fc->aggregation_strategy == FM_CFG_STRATEGY_FEDPROX ? fc->mu : 0.0;
    fm_staleness_t st;
    const char *sname = self->sync ? "constant"
                                   : fm_cfg_enum_name("aggregator.staleness", ac->staleness);
    if ((rc = fm_staleness_parse(&st, sname ? sname : "?", ac->staleness_a, ac->staleness_b,
                                 e)) != 0)
        goto cleanup;
    /* sync rounds: FedAvg's weights n_k / sum n, staleness 0; async: FedBuff's K */
    int k = self->sync || ac->buffer_k == 0 ? fc->clients_per_round : ac->buffer_k;
    self->buf = fm_fedbuff_new(self->nparams, k, &st, self->sync ? true : ac->weight_by_samples,
                               &rc);
    if (!self->buf) {
        fm_errmsg_set(e, rc, "buffer of %d updates: %s", k, fm_strerror(rc));
        goto cleanup;
    }
    fm_server_opt_kind_t kind = ac->server_optimizer;
    const char *oname = fm_server_opt_kind_name(kind);
    fm_server_opt_config_t oc = {.eta = ac->server_lr,
                                 .beta1 = kind == FM_SERVER_OPT_FEDAVGM ? ac->server_momentum
                                                                        : ac->beta1,
                                 .beta2 = ac->beta2,
                                 .tau = ac->tau};
    fm_errmsg_t oe = {{0}};
    if ((rc = fm_server_opt_config_check(kind, &oc, &oe)) != 0) {
        fm_errmsg_set(e, FM_EARG, "[aggregator] server_optimizer = %s: %s", oname, oe.msg);
        goto cleanup;
    }
    self->opt = fm_server_opt_new(kind, self->nparams, &oc, &rc);
    if (!self->opt)
        goto cleanup;
    self->nopt = fm_server_opt_state_len(kind, self->nparams);
    self->mean = malloc(self->nparams * sizeof *self->mean);
    self->tensors = malloc(sizeof *self->tensors);
    self->ids = agg_idset_new(AGG_IDSET_DEFAULT_CAP, &rc);
    self->ids_blob = malloc((size_t)AGG_IDSET_DEFAULT_CAP * FM_WIRE_ID_LEN);
    self->members = fm_members_new();
    self->live = calloc((size_t)fc->num_clients, 1);
    if (self->sync && !(self->round = agg_round_new((uint32_t)fc->num_clients, &rc)))
        goto cleanup;
    if (!self->mean || !self->tensors || !self->ids || !self->ids_blob || !self->members ||
        !self->live) {
        rc = -ENOMEM;
        goto cleanup;
    }

    /* state: checkpoint, else init file, else seeded init */
    self->ckpt = fm_ckpt_open(ac->checkpoint_dir, 0, &rc, e);
    if (!self->ckpt)
        goto cleanup;
    rc = s_resume(self, e);
    if (rc == -ENOENT) {
        rc = 0;
        if (ac->init[0]) {
            if ((rc = fm_safetensors_load_model(self->model, ac->init, e)) != 0)
                goto cleanup;
            FM_LOG(LOG_NOTICE, "no checkpoint in %s: version 0 from %s", ac->checkpoint_dir,
                   ac->init);
        } else {
            fm_model_init(self->model, self->cfg.federation.seed);
            FM_LOG(LOG_NOTICE, "no checkpoint in %s: version 0 from seed %llu",
                   ac->checkpoint_dir, (unsigned long long)self->cfg.federation.seed);
        }
    }
    if (rc)
        goto cleanup;
    self->started = self->created = fm_daemon_wallclock();
    self->last_version_at = fm_daemon_now();
    self->applied_at_last = self->applied;

    /* the current MODEL frame, also the size reference for ZMQ_MAXMSGSIZE */
    fm_wire_model_t hdr = {.version = self->version, .created = self->created};
    if ((rc = fm_wire_encode_model(&hdr, self->model, fm_model_params(self->model),
                                   &self->frame)) != 0) {
        fm_errmsg_set(e, rc, "encode MODEL: %s", fm_strerror(rc));
        goto cleanup;
    }
    size_t maxmsg = 4 * self->frame.len + 4096;
    size_t hwm = S_RCV_BYTES_MAX / (self->frame.len + 1);
    hwm = hwm < 16 ? 16 : hwm > 1000 ? 1000 : hwm;

    /* sockets */
    self->pull = zsock_new(ZMQ_PULL);
    self->pub = zsock_new(ZMQ_PUB);
    if (!self->pull || !self->pub) {
        rc = -ENOMEM;
        fm_errmsg_set(e, rc, "cannot create ZeroMQ sockets");
        goto cleanup;
    }
    zsock_set_linger(self->pull, 0);
    zsock_set_rcvhwm(self->pull, (int)hwm);
    zsock_set_maxmsgsize(self->pull, maxmsg > INT_MAX ? INT_MAX : (int)maxmsg);
    zsock_set_linger(self->pub, 0); /* S_PUB_LINGER_MS at shutdown */
    zsock_set_sndhwm(self->pub, S_PUB_SNDHWM);
    if ((rc = s_bind(self->pull, self->cfg.endpoints.updates, "updates", e)) != 0 ||
        (rc = s_bind(self->pub, self->cfg.endpoints.aggregator_models, "aggregator_models",
                     e)) != 0)
        goto cleanup;
    self->poller = zpoller_new(self->pull, NULL);
    if (!self->poller) {
        rc = -ENOMEM;
        goto cleanup;
    }
    if (self->sync)
        FM_LOG(LOG_NOTICE, "model %s (%zu params) at version %llu; sync rounds: %d clients per "
               "round, min_clients %d, round_timeout_s %g, num_rounds %d, %s%s, optimizer %s; "
               "PULL %s (max frame %zu B, hwm %zu), PUB %s", mname, self->nparams,
               (unsigned long long)self->version, fc->clients_per_round, fc->min_clients,
               ac->round_timeout_s, fc->num_rounds, self->mu > 0 ? "fedprox mu " : "fedavg",
               self->mu > 0 ? "set" : "", oname, self->cfg.endpoints.updates, maxmsg, hwm,
               self->cfg.endpoints.aggregator_models);
    else
        FM_LOG(LOG_NOTICE, "model %s (%zu params) at version %llu; K=%d, staleness %s, max %d, "
               "optimizer %s; PULL %s (max frame %zu B, hwm %zu), PUB %s", mname, self->nparams,
               (unsigned long long)self->version, k, sname, ac->max_staleness, oname,
               self->cfg.endpoints.updates, maxmsg, hwm, self->cfg.endpoints.aggregator_models);
    if (fc->num_rounds > 0 && self->version >= (uint64_t)fc->num_rounds) {
        self->finished = 1;
        FM_LOG(LOG_NOTICE, "version %llu >= num_rounds = %d: finished, no rounds will open",
               (unsigned long long)self->version, fc->num_rounds);
    }
cleanup:
    if (rc) {
        if (e && !e->msg[0])
            fm_errmsg_set(e, rc, "aggregator: %s", fm_strerror(rc));
        agg_server_destroy(&self);
        if (err)
            *err = rc;
    }
    return self;
}

int agg_server_run(agg_server_t *self)
{
    if (self->sync)
        s_publish(self, 1); /* version with an empty cohort until a round opens */
    else
        s_publish(self, 0);
    s_write_stats(self);
    double next_tick = 0;
    while (!fm_daemon_stopping()) {
        double now = fm_daemon_now();
        double wait = self->last_publish_at + S_REPUBLISH_S - now;
        if (wait > next_tick - now)
            wait = next_tick - now;
        int timeout_ms = wait <= 0 ? 0 : wait >= S_REPUBLISH_S ? 1000 : (int)(wait * 1e3) + 1;
        void *which = zpoller_wait(self->poller, timeout_ms);
        if (which == self->pull)
            s_drain(self);
        if (fm_daemon_take_reload())
            s_reload(self);
        now = fm_daemon_now();
        if (now >= next_tick) {
            s_members_tick(self, now);
            if (self->sync)
                s_round_tick(self, now);
            next_tick = now + S_TICK_S;
        }
        if (now - self->last_publish_at >= S_REPUBLISH_S)
            s_publish(self, 0);
        if (self->stats_dirty && now - self->last_stats_at >= S_STATS_MIN_S)
            s_write_stats(self);
    }
    FM_LOG(LOG_NOTICE, "stopping at version %llu (%d updates in the open buffer dropped)",
           (unsigned long long)self->version, fm_fedbuff_count(self->buf));
    int rc = s_checkpoint(self, "shutdown");
    s_publish(self, 0);
    s_write_stats(self);
    return rc;
}

void agg_server_destroy(agg_server_t **p)
{
    if (!p || !*p)
        return;
    agg_server_t *self = *p;
    zpoller_destroy(&self->poller);
    zsock_destroy(&self->pull);
    if (self->pub) {
        zsock_set_linger(self->pub, S_PUB_LINGER_MS);
        zsock_destroy(&self->pub);
    }
    fm_ckpt_close(&self->ckpt);
    fm_wire_buf_free(&self->frame);
    fm_members_destroy(&self->members);
    free(self->live);
    agg_round_destroy(&self->round);
    agg_idset_destroy(&self->ids);
    free(self->ids_blob);
    free(self->tensors);
    free(self->mean);
    fm_server_opt_destroy(&self->opt);
    fm_fedbuff_destroy(&self->buf);
    fm_model_destroy(&self->model);
    free(self);
    *p = NULL;
}
