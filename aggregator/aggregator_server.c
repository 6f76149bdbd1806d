#include "aggregator_server.h"

#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator_acks.h"
#include "aggregator_ingest.h"
#include "aggregator_policy.h"
#include "aggregator_privacy.h"
#include "aggregator_secagg.h"
#include "aggregator_state.h"
#include "aggregator_stats.h"
#include "fm_cfg_model.h"
#include "fm_jsonl.h"
#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_loop.h"
#include "fm_members.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_server_opt.h"
#include "fm_sock.h"
#include "fm_wire.h"

#define S_TICK_S 0.1         /* membership, round deadlines, re-publish, stats this often */
#define S_REPUBLISH_S 1.0    /* re-publish the current MODEL this often */
#define S_DRAIN_MAX 256      /* frames received per poll before timers are checked */
#define S_PUB_LINGER_MS 1000 /* PUB linger at shutdown: let the last MODEL go out */
#define S_PUB_SNDHWM 16      /* subscribers only need the newest model */
/* PULL receive queue per connection (ZeroMQ's HWMs are per peer): this / the MODEL frame,
 * 16-1000 frames (docs/OPERATIONS.md, "Queues and memory per socket") */
#define S_RCV_BYTES_MAX ((size_t)256 << 20)

struct agg_server {
    fm_config_t cfg;
    const fm_daemon_args_t *args; /* borrowed, for SIGHUP; may be NULL */

    fm_model_t *model; /* the global model (params = current version) */
    fm_server_opt_t *opt;
    float *mean;            /* nparams: the buffer's mean delta */
    agg_policy_t *policy;   /* async or sync (borrows cfg) */
    agg_state_t *state;     /* checkpoints, id window */
    agg_stats_t *stats;     /* counters, stats.json, /metrics */
    fm_metrics_t *metrics;  /* borrowed: the daemon's registry (may be NULL) */
    fm_sec_t *sec;          /* borrowed: keys, and who sent a frame (may be NULL: none) */
    agg_ingest_t *ingest;   /* frame -> verdict, the buffer */
    agg_acks_t *acks;       /* ACKs ([aggregator] acks), NULL when off */
    agg_privacy_t *privacy; /* [privacy] mode = client, NULL when off */
    agg_secagg_t *secagg;   /* [secagg] enabled: the cohorts, NULL when off */
    fm_jsonl_t *history;    /* [aggregator] history_file, NULL when off */
    fm_ratelog_t history_log;
    uint8_t *scratch_ids;     /* the ids of one version, for the history */
    fm_members_t *members;    /* live trainers (HELLO/HEARTBEAT/BYE on PULL) */
    fm_ratelog_t refused_log; /* membership messages refused */
    uint8_t *live;            /* num_clients: clients served by live trainers */
    uint32_t nlive;           /* distinct live clients at the last count */

    uint64_t version;
    int finished;        /* num_rounds versions exist, or `stopped` */
    const char *stopped; /* why no more versions are made besides num_rounds (static), NULL */
    double created;      /* wall clock of the current version ("ts") */

    fm_wire_buf_t frame;            /* the encoded MODEL of the current version */
    fm_codec_enc_t *model_enc;      /* [aggregator] model_encoding fp16/bf16, else NULL */
    fm_codec_tensor_t *model_coded; /* its output, one per view */
    double last_publish_at;         /* monotonic */
    zsock_t *pull;
    zsock_t *pub;
    fm_loop_t *loop;
};

static agg_view_t s_view(const agg_server_t *self)
{
    return (agg_view_t){.version = self->version,
                        .finished = self->finished,
                        .nlive = self->nlive,
                        .live = self->live};
}

/* finished: num_rounds (> 0) versions exist, or no more are made (`stopped`). */
static void s_update_finished(agg_server_t *self)
{
    int nr = self->cfg.federation.num_rounds;
    self->finished = (nr > 0 && self->version >= (uint64_t)nr) || self->stopped;
}

/* ---- outputs: MODEL, stats.json, checkpoint ------------------------------------------------ */

/* The MODEL header of the current version: the policy's round fields, the progress. */
static fm_wire_model_t s_model_hdr(agg_server_t *self)
{
    fm_wire_model_t hdr = {.version = self->version,
                           .created = self->created,
                           .applied = agg_stats_counters(self->stats)->applied,
                           .updates_per_s = agg_stats_rate(self->stats, fm_daemon_now()),
                           .boot = self->acks ? agg_acks_boot(self->acks) : 0};
    if (self->privacy) {
        hdr.epsilon = agg_privacy_epsilon(self->privacy);
        hdr.delta = self->cfg.privacy.delta;
    }
    if (self->secagg) {
        const agg_secagg_counters_t *n = agg_secagg_counters(self->secagg);
        hdr.sa_completed = n->completed;
        hdr.sa_aborted = n->aborted;
        hdr.sa_dropped = n->dropped[0] + n->dropped[1] + n->dropped[2] + n->dropped[3];
    }
    agg_policy_model_meta(self->policy, &hdr);
    return hdr;
}

/* The MODEL of the current version with header *hdr into self->frame, its values as
 * [aggregator] model_encoding says (the model itself stays float32). 0 or an encoder error. */
static int s_encode_model(agg_server_t *self, const fm_wire_model_t *hdr)
{
    const float *params = fm_model_params(self->model);
    if (!self->model_enc)
        return fm_wire_encode_model(hdr, self->model, params, &self->frame);
    int rc = fm_codec_enc_run(self->model_enc, params, NULL, NULL, self->model_coded);
    return rc ? rc
              : fm_wire_encode_model_coded(hdr, self->model, NULL, self->model_coded,
                                           &self->frame);
}

/* Publish the current version; encode it first (with the policy's round fields) if asked. */
static void s_publish(agg_server_t *self, int encode)
{
    if (encode) {
        fm_wire_model_t hdr = s_model_hdr(self);
        int rc = s_encode_model(self, &hdr);
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

static void s_write_stats(agg_server_t *self)
{
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    snprintf(st.model, sizeof st.model, "%s", fm_model_name(self->model));
    st.version = self->version;
    agg_policy_stats(self->policy, &st);
    st.finished = self->finished;
    st.live_clients = self->nlive;
    fm_fedbuff_stats_t fb;
    agg_ingest_stats(self->ingest, &fb);
    st.staleness_mean = fb.updates ? fb.staleness_sum / (double)fb.updates : 0.0;
    st.staleness_max = fb.staleness_max;
    st.updates_pending = (uint32_t)agg_ingest_pending(self->ingest);
    agg_state_stats(self->state, &st);
    agg_privacy_stats(self->privacy, &st);
    agg_secagg_stats(self->secagg, &st);
    if (self->acks) {
        st.acked = agg_acks_applied(self->acks);
        st.ack_refused = agg_acks_refused(self->acks);
    }
    agg_stats_write(self->stats, &st, fm_daemon_now(), fm_daemon_wallclock());
}

static int s_checkpoint(agg_server_t *self, const char *why)
{
    agg_record_t rec = {.version = self->version,
                        .round = agg_policy_round(self->policy),
                        .counters = *agg_stats_counters(self->stats)};
    if (self->privacy) { /* the budget spent, with the model it made */
        agg_privacy_save(self->privacy, rec.privacy);
        rec.privacy_len = AGG_PRIVACY_BLOB_LEN;
        rec.clip_len = agg_privacy_save_clip(self->privacy, rec.clip); /* 0: not adaptive */
    }
    double t0 = fm_daemon_now();
    int rc = agg_state_save(self->state, self->model, self->opt, &rec,
                            (size_t)agg_ingest_pending(self->ingest), why);
    if (rc == 0)
        agg_stats_checkpoint_time(self->stats, fm_daemon_now() - t0);
    else
        agg_stats_checkpoint_failed(self->stats);
    if (rc == 0 && self->acks) /* what the saved record holds is durable: say so */
        agg_acks_commit(self->acks, agg_state_ids(self->state),
                        agg_state_durable_seq(self->state), self->version);
    return rc;
}

#ifdef FM_TEST_HOOKS
/* Test hook: FEDMQ_TEST_KILL_BEFORE_COMMIT=N raises SIGKILL just before the N-th checkpoint
 * of a new version (after the fold and the server step, before the commit): the crash
 * between fold and commit that acknowledged delivery must survive. */
static void s_test_kill_before_commit(void)
{
    static int count;
    const char *v = getenv("FEDMQ_TEST_KILL_BEFORE_COMMIT");
    if (v && *v && ++count == atoi(v)) {
        FM_LOG(LOG_WARNING, "test hook: SIGKILL before commit %d", count);
        raise(SIGKILL);
    }
}
#endif

/* The ids of the newest `n` folded updates were not applied (their buffer was dropped): out
 * of the id window (a resend is folded afresh), and told "dropped". */
static void s_unapply(agg_server_t *self, int n)
{
    if (n <= 0)
        return;
    uint8_t *ids = self->acks ? malloc((size_t)n * FM_WIRE_ID_LEN) : NULL;
    size_t k = agg_idset_pop_newest(agg_state_ids(self->state), (size_t)n, ids);
    if (ids)
        agg_acks_send(self->acks, ids, k, AGG_ACK_DROPPED, self->version);
    free(ids);
}

/* ---- aggregation -----------------------------------------------------------------------------
 */

static void s_aggregate(agg_server_t *self);

/* Carry out a policy decision. */
static void s_act(agg_server_t *self, agg_action_t a)
{
    switch (a) {
    case AGG_ACT_NONE: return;
    case AGG_ACT_AGGREGATE: s_aggregate(self); return;
    case AGG_ACT_RESTART:
        s_unapply(self, agg_ingest_pending(self->ingest));
        agg_ingest_reset(self->ingest);
        agg_stats_touch(self->stats);
        s_publish(self, 1);
        return;
    case AGG_ACT_PUBLISH: s_publish(self, 1); return;
    }
}

/* "version N: ..." with the updates/s of stats.json (accepted, over the last 30 s). */
static void s_log_version(agg_server_t *self, int count, double stale_mean)
{
    const agg_counters_t *c = agg_stats_counters(self->stats);
    FM_LOG(LOG_INFO,
           "version %llu: %d updates folded, mean staleness %.2f, applied %llu, "
           "rejected %llu, %.1f updates/s",
           (unsigned long long)self->version, count, stale_mean, (unsigned long long)c->applied,
           (unsigned long long)c->rejected_total, agg_stats_rate(self->stats, fm_daemon_now()));
}

/* The history file (if any): one line, rate-limited warning when it cannot be written. */
static void s_history_put(agg_server_t *self, json_t *line)
{
    int rc = fm_jsonl_put(self->history, line);
    if (rc)
        fm_ratelog(&self->history_log, LOG_WARNING, "%s: cannot append: %s",
                   fm_jsonl_path(self->history), fm_strerror(rc));
}

/* {"t":"version","mv":V,"ids":[...]}: the `count` updates folded into the version just made
 * (the newest ids of the window), written before its checkpoint: a later "start" line with
 * a lower "mv" says it was never committed. */
static void s_history_version(agg_server_t *self, int count)
{
    if (!self->history)
        return;
    agg_idset_t *ids = agg_state_ids(self->state);
    uint64_t next = agg_idset_next_seq(ids);
    size_t n = agg_idset_range(ids, next - (uint64_t)count, next, self->scratch_ids);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, fm_jsonl_id(self->scratch_ids + i * FM_WIRE_ID_LEN));
    s_history_put(self,
                  json_pack("{s:s, s:I, s:f, s:o*}", "t", "version", "mv",
                            (json_int_t)self->version, "ts", fm_daemon_wallclock(), "ids", arr));
}

/* No more versions: `why` (static) says why; the open buffer is dropped ("dropped" to the
 * senders); the current version stays published. */
static void s_stop_versions(agg_server_t *self, const char *why)
{
    int pending = agg_ingest_pending(self->ingest);
    s_unapply(self, pending);
    agg_ingest_reset(self->ingest);
    self->stopped = why;
    s_update_finished(self);
    agg_stats_touch(self->stats);
    s_write_stats(self);
}

/* The norm screen of `cfg`; with [privacy], at the current clip C (adaptive clipping moves
 * it after every step). */
static fm_screen_config_t s_screen_config(const agg_server_t *self, const fm_config_t *cfg)
{
    return self->privacy ? agg_policy_privacy_screen(cfg, agg_privacy_clip(self->privacy))
                         : agg_policy_screen_config(cfg);
}

/* [privacy] adaptive_clip, after the step of `count` updates of which `unclipped` were within
 * C: the noisy count moves C; the next update is screened at the new C. */
static void s_privacy_adapt(agg_server_t *self, int count, int unclipped)
{
    if (!self->privacy || !agg_privacy_adaptive(self->privacy))
        return;
    double was = agg_privacy_clip(self->privacy), frac = NAN;
    agg_privacy_adapt(self->privacy, count, unclipped, &frac);
    fm_screen_config_t sc = s_screen_config(self, &self->cfg);
    int rc = agg_ingest_set_screen(self->ingest, &sc);
    FM_ASSERT(rc == 0); /* C stays in [FM_DP_CLIP_MIN, FM_DP_CLIP_MAX] */
    FM_LOG(LOG_DEBUG,
           "privacy: clip norm %.6g -> %.6g (noisy unclipped fraction %.3f, target %g)", was,
           agg_privacy_clip(self->privacy), frac, self->cfg.privacy.target_quantile);
}

/* [privacy]: 1 if one more step stays within the budget; else stop making versions (one
 * NOTICE, the metric and stats.json say so) and 0. */
static int s_privacy_admits(agg_server_t *self)
{
    double next = 0;
    if (!self->privacy || agg_privacy_admits(self->privacy, &next))
        return 1;
    int pending = agg_ingest_pending(self->ingest);
    agg_privacy_set_exhausted(self->privacy);
    FM_LOG(LOG_NOTICE,
           "privacy budget spent: the next version would reach epsilon %.4g > "
           "[privacy] target_epsilon = %g (delta %g); version %llu (epsilon %.4g, %llu steps) "
           "is the last: finished%s",
           next, self->cfg.privacy.target_epsilon, self->cfg.privacy.delta,
           (unsigned long long)self->version, agg_privacy_epsilon(self->privacy),
           (unsigned long long)agg_privacy_steps(self->privacy),
           pending ? ", the open buffer's updates dropped" : "");
    s_stop_versions(self, "the privacy budget is spent");
    return 0;
}

/* The buffer through the server optimiser: a new version (or the buffer dropped), then what
 * the policy says (publish; sync: the next round), maybe a checkpoint, stats.json. With
 * [privacy], the step is noised and accounted first, and the version is checkpointed before
 * it is published: a version whose privacy cost is not durable is never published. */
static void s_step(agg_server_t *self, int count, int nids, int unclipped, double stale_mean,
                   double t0);

static void s_aggregate(agg_server_t *self)
{
    int count = 0, unclipped = agg_ingest_unclipped(self->ingest); /* take resets it */
    double stale_mean = 0, t0 = fm_daemon_now();
    if (!s_privacy_admits(self))
        return;
    size_t np = fm_model_nparams(self->model);
    if (agg_ingest_take(self->ingest, self->mean, &count, &stale_mean) != 0) {
        if (!self->privacy) /* nothing to average */
            return;
        /* a Poisson round nobody trained in is still a step (the noise alone): skipping it
         * would make the number of steps depend on who took part */
        memset(self->mean, 0, np * sizeof *self->mean);
        count = 0;
    }
    agg_stats_overruled(self->stats, (double)agg_ingest_overruled(self->ingest) / (double)np);
    s_step(self, count, count, unclipped, stale_mean, t0);
}

/* [secagg]: a cohort's unmasked sum is one buffer: mean = s(tau) sum / |U3|, tau = the
 * versions made since the cohort's model (the same for every member). */
static void s_secagg_sum(void *arg, const agg_secagg_sum_t *s)
{
    agg_server_t *self = arg;
    double t0 = fm_daemon_now();
    size_t np = fm_model_nparams(self->model);
    FM_ASSERT(s->m == np + 1 && s->survivors > 0);
    uint64_t tau = self->version >= s->mv ? self->version - s->mv : 0;
    if (self->finished || tau > (uint64_t)self->cfg.aggregator.max_staleness) {
        FM_LOG(LOG_WARNING, "secagg: cohort %016llx: sum of %u updates not applied (%s)",
               (unsigned long long)s->cohort, s->survivors,
               self->finished ? "finished" : "staler than [aggregator] max_staleness");
        return;
    }
    if (!s_privacy_admits(self))
        return;
    double w = fm_staleness_weight(&self->policy->staleness, tau) / (double)s->survivors;
    for (size_t i = 0; i < np; i++)
        self->mean[i] = (float)(w * s->decoded[i]);
    for (uint32_t i = 0; i < s->survivors; i++)
        agg_stats_folded(self->stats, tau, t0);
    s_step(self, (int)s->survivors, 0, (int)s->survivors, (double)tau, t0);
}

/* The step of `count` updates whose mean is in self->mean: privacy noise, the server
 * optimiser, a new version (or the buffer dropped: its `nids` newest ids told "dropped"),
 * then what the policy says (publish; sync: the next round), maybe a checkpoint,
 * stats.json. */
static void s_step(agg_server_t *self, int count, int nids, int unclipped, double stale_mean,
                   double t0)
{
    size_t np = fm_model_nparams(self->model);
    if (self->privacy) {
        int prc = agg_privacy_step(self->privacy, self->mean, np, count);
        FM_ASSERT(prc == 0); /* count >= 0 */
        s_privacy_adapt(self, count, unclipped);
    }
    double beta1 = fm_server_opt_beta1(self->opt);
    if (self->cfg.aggregator.momentum_backoff) /* stale updates already carry momentum */
        beta1 /= 1.0 + (stale_mean > 0.0 ? stale_mean : 0.0);
    int ok = fm_server_opt_apply_beta1(self->opt, fm_model_params(self->model), self->mean,
                                       beta1) == 0;
    if (ok) {
        self->version = agg_state_next_version(self->state, self->version);
        agg_stats_aggregation_time(self->stats, fm_daemon_now() - t0);
        agg_stats_applied(self->stats, (uint64_t)count);
        agg_stats_version(self->stats, self->version);
        self->created = fm_daemon_wallclock();
        s_history_version(self, nids);
    } else {
        s_unapply(self, nids);
        agg_stats_buffer_dropped(self->stats);
        FM_LOG(LOG_ERR,
               "server step refused (non-finite result): buffer of %d updates dropped, "
               "model stays at version %llu",
               count, (unsigned long long)self->version);
    }
    int committed = 0;
    if (ok && (self->acks || self->privacy)) { /* durable before anyone sees it */
#ifdef FM_TEST_HOOKS
        s_test_kill_before_commit();
#endif
        int crc = s_checkpoint(self, "version");
        committed = 1;
        if (crc && self->privacy) {
            FM_LOG(LOG_ERR,
                   "privacy: version %llu is not published: its checkpoint failed, so the "
                   "budget it spent (epsilon %.4g) is not durable; no more versions until a "
                   "restart (which resumes from the last checkpoint)",
                   (unsigned long long)self->version, agg_privacy_epsilon(self->privacy));
            s_stop_versions(self, "a checkpoint failed with privacy on");
            return;
        }
    }
    int was_finished = self->finished;
    if (ok && !self->finished) /* a budget the next version would exceed ends the run now:
                                  no round opens, no trainer works for nothing */
        s_privacy_admits(self);
    s_update_finished(self);
    agg_view_t v = s_view(self);
    if (self->secagg) /* cohorts, not the policy, decide when versions are made */
        s_act(self, ok ? AGG_ACT_PUBLISH : AGG_ACT_NONE);
    else
        s_act(self, agg_policy_closed(self->policy, ok, count, &v, fm_daemon_now()));
    if (self->finished && !was_finished)
        FM_LOG(LOG_NOTICE, "num_rounds = %d reached at version %llu: finished",
               self->cfg.federation.num_rounds, (unsigned long long)self->version);
    if (!ok)
        return;
    s_log_version(self, count, stale_mean);
    if (!committed && self->version % (uint64_t)self->cfg.aggregator.checkpoint_every == 0)
        s_checkpoint(self, "periodic");
    agg_stats_version_time(self->stats, fm_daemon_now() - t0); /* in the file written now */
    s_write_stats(self);
}

/* ---- input ----------------------------------------------------------------------------------
 */

/* The membership bounds of the config. */
static fm_members_limits_t s_members_limits(const fm_config_t *cfg)
{
    return (fm_members_limits_t){.num_clients = (uint32_t)cfg->federation.num_clients,
                                 .per_origin = cfg->broker.trainers_per_peer};
}

/* Recount the distinct live clients (after an expiry or a membership change). */
static void s_recount(agg_server_t *self)
{
    uint32_t n = fm_members_live_clients(self->members,
                                         (uint32_t)self->cfg.federation.num_clients, self->live);
    if (n != self->nlive)
        agg_stats_touch(self->stats);
    self->nlive = n;
    agg_stats_live(self->stats, n);
}

/* A membership message from the peer whose libzmq "Peer-Address" is `addr` (may be NULL),
 * sent under curve with the key `user_id` (else NULL): the share is then per key. */
static void s_on_member(agg_server_t *self, const agg_verdict_t *v, const char *addr,
                        const char *user_id)
{
    const fm_wire_member_t *m = &v->member;
    char peer[FM_MEMBERS_ORIGIN_MAX + 1];
    fm_members_peer(self->cfg.endpoints.updates, addr, peer);
    fm_member_origin_t origin = {.peer = peer, .identity = user_id};
    fm_member_event_t ev = fm_members_apply(self->members, v->type, m, &origin, fm_daemon_now(),
                                            NULL);
    const char *why = NULL;
    char range[48] = "no clients";
    switch (ev) {
    case FM_MEMBER_JOINED:
    case FM_MEMBER_RESTARTED:
    case FM_MEMBER_LEFT:
        if (m->client_count)
            snprintf(range, sizeof range, "clients %u-%u", m->client_first,
                     (unsigned)(m->client_first + m->client_count - 1));
        FM_LOG(LOG_INFO, "trainer %s (%s) %s (peer %s)", m->trainer, range,
               ev == FM_MEMBER_LEFT     ? "left"
               : ev == FM_MEMBER_JOINED ? "joined"
                                        : "restarted",
               peer);
        /* count at once: an UPDATE right behind the HELLO on the same PUSH meets the new
         * count (min_clients, sync cohorts), not the one of the last tick */
        s_recount(self);
        return;
    case FM_MEMBER_FULL: why = "the table is full"; break;
    case FM_MEMBER_REFUSED_CLIENTS: why = "clients beyond [federation] num_clients"; break;
    case FM_MEMBER_REFUSED_FOREIGN: why = "that trainer is live from another peer"; break;
    case FM_MEMBER_REFUSED_SHARE:
        why = "the peer holds [broker] trainers_per_peer live trainers already";
        break;
    default: return;
    }
    fm_ratelog(&self->refused_log, LOG_WARNING, "trainer %s (clients %u+%u, peer %s) refused: %s",
               m->trainer, m->client_first, m->client_count, peer, why);
}

/* Acknowledged delivery: tell the sender of a rejected UPDATE. A duplicate of a durable
 * update is acknowledged as applied again (its first ACK was lost); a duplicate of one not
 * yet durable gets nothing now (its ACK comes with the checkpoint). */
static void s_ack_rejected(agg_server_t *self, const agg_verdict_t *v)
{
    const char *status = agg_reason_name(v->reason);
    if (v->lost)
        status = AGG_ACK_LOST;
    else if (v->reason == AGG_REJ_DUPLICATE) {
        uint64_t seq = 0;
        if (!agg_idset_find(agg_state_ids(self->state), v->update.id, &seq) ||
            seq >= agg_state_durable_seq(self->state))
            return;
        status = AGG_ACK_APPLIED;
    }
    agg_acks_send(self->acks, v->update.id, 1, status, self->version);
}

/* 1 for the reasons that judge an UPDATE's content (its sender will not send another for
 * the same work), not its timing or its place in a round. */
static int s_content_reason(agg_reason_t r)
{
    switch (r) {
    case AGG_REJ_MODEL:
    case AGG_REJ_NAME:
    case AGG_REJ_DTYPE:
    case AGG_REJ_SHAPE:
    case AGG_REJ_NONFINITE:
    case AGG_REJ_SAMPLES:
    case AGG_REJ_NORM:
    case AGG_REJ_OVERFLOW: return 1;
    default: return 0;
    }
}

/* One frame from the PULL socket (untrusted); `msg` is its message (for the peer's
 * address and, under curve, the sender's key: "User-Id"). */
static void s_on_frame(agg_server_t *self, const void *data, size_t len, zmq_msg_t *msg)
{
    const char *user_id = fm_sec_curve(self->sec) ? zmq_msg_gets(msg, "User-Id") : NULL;
    agg_ingest_ctx_t ctx = {.view = s_view(self),
                            .max_staleness = self->cfg.aggregator.max_staleness,
                            .num_rounds = self->cfg.federation.num_rounds,
                            .stopped = self->stopped,
                            .sec = self->sec,
                            .user_id = user_id,
                            .secagg = self->secagg != NULL};
    agg_state_lost(self->state, &ctx.lost_first, &ctx.lost_last);
    agg_verdict_t v;
    agg_stats_received(self->stats, len);
    double t0 = fm_daemon_now();
    agg_ingest_frame(self->ingest, data, len, &ctx, &v);
    if (v.kind == AGG_INGEST_FOLDED || (v.kind == AGG_INGEST_REJECTED && v.has_id))
        agg_stats_fold_time(self->stats, fm_daemon_now() - t0);
    switch (v.kind) {
    case AGG_INGEST_REJECTED:
        agg_stats_reject(self->stats, v.reason, v.why);
        if (v.has_id && s_content_reason(v.reason))
            agg_policy_refused(self->policy, &v.update);
        if (self->acks && v.has_id)
            s_ack_rejected(self, &v);
        return;
    case AGG_INGEST_MEMBER:
        s_on_member(self, &v, zmq_msg_gets(msg, "Peer-Address"), user_id);
        return;
    case AGG_INGEST_SECAGG:
        agg_secagg_frame(self->secagg, v.type, data, len, self->sec, user_id, fm_daemon_now());
        return;
    case AGG_INGEST_DECLINE: {
        char why[AGG_WHY_MAX];
        agg_stats_touch(self->stats);
        for (uint32_t i = 0; i < v.decline.clients.count; i++) {
            uint32_t client = fm_wire_cohort_at(&v.decline.clients, i);
            int now = agg_policy_decline(self->policy, &v.decline, client, why, sizeof why);
            if (now < 0)
                FM_LOG(LOG_DEBUG, "%s: ignored", why);
            else if (now > 0)
                s_aggregate(self);
        }
        return;
    }
    case AGG_INGEST_FOLDED:
        agg_stats_folded(self->stats, v.tau, fm_daemon_now());
        agg_stats_update_time(self->stats, &v.update, fm_daemon_wallclock());
        agg_stats_encoded(self->stats, v.encoding, len);
        if (v.clipped) {
            char why[FM_WIRE_STR_MAX + 96];
            snprintf(why, sizeof why, "UPDATE from %s client %u: L2 norm %.4g scaled to %.4g",
                     v.update.trainer, v.update.client, v.norm, v.bound);
            agg_stats_clipped(self->stats, self->privacy ? LOG_DEBUG : LOG_NOTICE, why);
        }
        FM_LOG(LOG_DEBUG, "folded UPDATE from %s client %u: base %llu, tau %llu, n %llu",
               v.update.trainer, v.update.client, (unsigned long long)v.update.base,
               (unsigned long long)v.tau, (unsigned long long)v.update.num_samples);
        if (v.aggregate)
            s_aggregate(self);
        return;
    }
}

/* fm_loop reader of PULL: receive what is queued, at most S_DRAIN_MAX frames. */
static int s_drain(void *arg, zsock_t *pull)
{
    agg_server_t *self = arg;
    void *sock = zsock_resolve(pull);
    static const unsigned char s_empty[1] = {0};
    for (int i = 0; i < S_DRAIN_MAX && !fm_daemon_stopping(); i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return 0;
        }
        size_t len = zmq_msg_size(&msg);
        s_on_frame(self, len ? zmq_msg_data(&msg) : s_empty, len, &msg);
        zmq_msg_close(&msg);
    }
    return 0;
}

/* fm_loop timer, every S_TICK_S: expire silent trainers, recount the live clients, let the
 * policy act; re-publish the current MODEL every S_REPUBLISH_S; rewrite stats.json when
 * due. */
static int s_tick(void *arg)
{
    agg_server_t *self = arg;
    double now = fm_daemon_now();
    fm_members_expire(self->members, now, self->cfg.broker.heartbeat_timeout_s, NULL, NULL);
    fm_sec_refresh(self->sec); /* a key removed from allow_dir: its frames are refused */
    s_recount(self);
    agg_view_t v = s_view(self);
    if (self->secagg)
        agg_secagg_tick(self->secagg, self->version, self->finished, self->live, self->members,
                        now);
    else
        s_act(self, agg_policy_tick(self->policy, &v, now));
    if (now - self->last_publish_at >= S_REPUBLISH_S)
        s_publish(self, 0);
    if (agg_stats_due(self->stats, now))
        s_write_stats(self);
    return 0;
}

/* A reloaded config (only reloadable keys differ): the state keeps its text for the next
 * checkpoints; the policy reads the config in place. */
static int s_apply(void *arg, const fm_config_t *fresh, fm_errmsg_t *e)
{
    agg_server_t *self = arg;
    fm_screen_config_t sc = s_screen_config(self, fresh);
    int rc = fm_screen_check(&sc, e);
    if (rc)
        return rc;
    if ((rc = agg_state_set_config(self->state, fresh, NULL)) != 0)
        return fm_errmsg_set(e, rc, "config text: %s", fm_strerror(rc));
    agg_ingest_set_screen(self->ingest, &sc); /* checked above: cannot fail */
    self->cfg = *fresh;
    fm_members_limits_t lim = s_members_limits(&self->cfg);
    fm_members_set_limits(self->members, &lim);
    return 0;
}

static void s_reload(void *arg)
{
    agg_server_t *self = arg;
    fm_daemon_reload(&self->cfg, self->args, "aggregator.log_level", s_apply, self);
}

/* fm_loop status hook (systemd's STATUS=): "version 12, 3.4 updates/s, 8 clients live, 2
 * rejected", the updates/s of stats.json (accepted, over the last 30 s). */
static void s_status(void *arg, char *buf, size_t cap)
{
    agg_server_t *self = arg;
    const agg_counters_t *c = agg_stats_counters(self->stats);
    double rate = agg_stats_rate(self->stats, fm_daemon_now());
    char round[48] = "";
    if (self->cfg.federation.mode == FM_CFG_MODE_SYNC)
        snprintf(round, sizeof round, ", round %llu",
                 (unsigned long long)agg_policy_round(self->policy));
    snprintf(buf, cap, "version %llu%s, %.1f updates/s, %u clients live, %llu rejected%s",
             (unsigned long long)self->version, round, rate, self->nlive,
             (unsigned long long)c->rejected_total, self->finished ? ", finished" : "");
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* The model and the server optimiser of the config. */
static int s_init_learning(agg_server_t *self, fm_errmsg_t *e)
{
    const fm_cfg_aggregator_t *ac = &self->cfg.aggregator;
    int rc = 0;
    /* a spec: its layout and (version 0 on a fresh start) its values */
    if (!(self->model = fm_cfg_model_new(&self->cfg, &rc, e)))
        return fm_err_file_exit_code(rc) == FM_EXIT_INPUT ? FM_EARG : rc; /* a bad spec: 2 */
    size_t nparams = fm_model_nparams(self->model);
    fm_server_opt_kind_t kind = ac->server_optimizer;
    const char *oname = fm_server_opt_kind_name(kind);
    fm_server_opt_config_t oc = {.eta = ac->server_lr,
                                 .beta1 = kind == FM_SERVER_OPT_FEDAVGM ? ac->server_momentum
                                                                        : ac->beta1,
                                 .beta2 = ac->beta2,
                                 .tau = ac->tau};
    fm_errmsg_t oe = {{0}};
    if (fm_server_opt_config_check(kind, &oc, &oe) != 0)
        return fm_errmsg_set(e, FM_EARG, "[aggregator] server_optimizer = %s: %s", oname, oe.msg);
    if (!(self->opt = fm_server_opt_new(kind, nparams, &oc, &rc)))
        return rc;
    if (!(self->mean = malloc(nparams * sizeof *self->mean)))
        return -ENOMEM;
    return 0;
}

/* [privacy]: the budget spent, from the resumed record `rec` (NULL: none), plus the versions
 * lost to a fallback or reset (published, so spent). 0, or FM_EFORMAT (an unreadable
 * privacy record: refuse to start rather than forget spent budget). */
static int s_privacy_resume(agg_server_t *self, const agg_record_t *rec, fm_errmsg_t *e)
{
    if (!self->privacy)
        return 0;
    int rc;
    fm_errmsg_t pe = {{0}};
    if (rec && rec->privacy_len &&
        (rc = agg_privacy_load(self->privacy, rec->privacy, rec->privacy_len, &pe)) != 0)
        return fm_errmsg_set(e, rc, "checkpoint version %llu: %s",
                             (unsigned long long)rec->version, pe.msg);
    if (rec && !rec->privacy_len && rec->version > 0)
        FM_LOG(LOG_WARNING,
               "privacy: checkpoint version %llu has no privacy record: versions up to it "
               "were made without client-level DP; epsilon counts the steps from here",
               (unsigned long long)rec->version);
    if (rec && agg_privacy_adaptive(self->privacy)) {
        if (rec->clip_len &&
            (rc = agg_privacy_load_clip(self->privacy, rec->clip, rec->clip_len, &pe)) != 0)
            FM_LOG(LOG_WARNING, "privacy: checkpoint version %llu: %s: C starts at clip_norm %g",
                   (unsigned long long)rec->version, pe.msg, self->cfg.privacy.clip_norm);
        else if (!rec->clip_len && rec->version > 0)
            FM_LOG(LOG_NOTICE,
                   "privacy: checkpoint version %llu has no adaptive clip: C starts at clip_norm "
                   "%g",
                   (unsigned long long)rec->version, self->cfg.privacy.clip_norm);
    }
    uint64_t first = 0, last = 0;
    if (agg_state_lost(self->state, &first, &last)) {
        agg_privacy_charge(self->privacy, last - first + 1);
        FM_LOG(LOG_WARNING,
               "privacy: versions %llu-%llu were lost but published: charged as %llu steps "
               "of noise multiplier %g (epsilon now %.4g)",
               (unsigned long long)first, (unsigned long long)last,
               (unsigned long long)(last - first + 1), self->cfg.privacy.noise_multiplier,
               agg_privacy_epsilon(self->privacy));
    }
    return 0;
}

/* The version to start from: the newest checkpoint, else the init file, else the seed. */
static int s_init_model(agg_server_t *self, fm_errmsg_t *e)
{
    const fm_cfg_aggregator_t *ac = &self->cfg.aggregator;
    agg_record_t rec;
    int rc = agg_state_resume(self->state, self->model, self->opt, &rec, e);
    if (rc == 0) {
        self->version = rec.version;
        agg_stats_restore(self->stats, &rec.counters);
        agg_policy_set_round(self->policy, rec.round);
        return s_privacy_resume(self, &rec, e);
    }
    if (rc != -ENOENT)
        return rc;
    if ((rc = s_privacy_resume(self, NULL, e)) != 0)
        return rc;
    if (ac->init[0]) {
        if ((rc = fm_safetensors_load_model(self->model, ac->init, e)) != 0)
            return rc;
        FM_LOG(LOG_NOTICE, "no checkpoint in %s: version 0 from %s", ac->checkpoint_dir,
               ac->init);
    } else if (fm_model_arch(self->model) == FM_ARCH_SPEC) {
        /* the values fm_cfg_model_new read with the spec */
        FM_LOG(LOG_NOTICE, "no checkpoint in %s: version 0 from the model spec %s (%s)",
               ac->checkpoint_dir, fm_cfg_model_spec_path(&self->cfg),
               fm_model_name(self->model));
    } else {
        fm_model_init(self->model, self->cfg.federation.seed);
        FM_LOG(LOG_NOTICE, "no checkpoint in %s: version 0 from seed %llu", ac->checkpoint_dir,
               (unsigned long long)self->cfg.federation.seed);
    }
    return 0;
}

/* agg_secagg's frames to the members: on the acks PUB (fm_cfg_check requires acks). */
static void s_secagg_send(void *arg, const void *frame, size_t len)
{
    agg_server_t *self = arg;
    agg_acks_publish(self->acks, frame, len);
}

/* Encode the current MODEL (also the size reference for ZMQ_MAXMSGSIZE), create and bind
 * the sockets, log the start-up line. */
static int s_init_sockets(agg_server_t *self, fm_errmsg_t *e)
{
    int rc;
    fm_wire_model_t hdr = s_model_hdr(self);
    /* sizes from the float32 frame, what an update is at most */
    if ((rc = fm_wire_encode_model(&hdr, self->model, fm_model_params(self->model),
                                   &self->frame)) != 0)
        return fm_errmsg_set(e, rc, "encode MODEL: %s", fm_strerror(rc));
    size_t maxmsg = 4 * self->frame.len + 4096;
    if (self->cfg.aggregator.model_encoding != FM_DT_F32) {
        fm_codec_config_t mc = {.dtype = (fm_dtype_t)self->cfg.aggregator.model_encoding};
        self->model_coded = calloc((size_t)fm_model_nviews(self->model),
                                   sizeof *self->model_coded);
        if (!self->model_coded || !(self->model_enc = fm_codec_enc_new(self->model, &mc, &rc)))
            return fm_errmsg_set(e, rc ? rc : -ENOMEM, "MODEL encoder: %s",
                                 fm_strerror(rc ? rc : -ENOMEM));
        if ((rc = s_encode_model(self, &hdr)) != 0)
            return fm_errmsg_set(e, rc, "encode MODEL: %s", fm_strerror(rc));
    }
    size_t hwm = S_RCV_BYTES_MAX / (self->frame.len + 1);
    hwm = hwm < 16 ? 16 : hwm > 1000 ? 1000 : hwm;
    fm_sock_opts_t o_pull = {.rcvhwm = (int)hwm,
                             .maxmsgsize = (int64_t)maxmsg,
                             .sec = self->sec,
                             .side = FM_SEC_SERVE};
    fm_sock_opts_t o_pub = {.linger_ms = S_PUB_LINGER_MS,
                            .sndhwm = S_PUB_SNDHWM,
                            .sec = self->sec,
                            .side = FM_SEC_SERVE};
    if (!(self->pull = fm_sock_new(ZMQ_PULL, &o_pull, "updates", &rc, e)) ||
        (rc = fm_sock_bind(self->pull, "endpoints.updates", self->cfg.endpoints.updates, e)) ||
        !(self->pub = fm_sock_new(ZMQ_PUB, &o_pub, "aggregator_models", &rc, e)) ||
        (rc = fm_sock_bind(self->pub, "endpoints.aggregator_models",
                           self->cfg.endpoints.aggregator_models, e)))
        return rc;
    if (self->cfg.aggregator.acks &&
        !(self->acks = agg_acks_new(self->cfg.endpoints.acks, self->sec,
                                    agg_state_durable_seq(self->state), self->metrics, &rc, e)))
        return rc;
    if (self->cfg.aggregator.history_file[0]) {
        if (!(self->history = fm_jsonl_open(self->cfg.aggregator.history_file, &rc, e)) ||
            !(self->scratch_ids = malloc((size_t)AGG_IDSET_DEFAULT_CAP * FM_WIRE_ID_LEN)))
            return rc ? rc : -ENOMEM;
        char boot[24];
        snprintf(boot, sizeof boot, "%016llx",
                 (unsigned long long)(self->acks ? agg_acks_boot(self->acks) : 0));
        s_history_put(self, json_pack("{s:s, s:I, s:s, s:f}", "t", "start", "mv",
                                      (json_int_t)self->version, "boot", boot, "ts",
                                      fm_daemon_wallclock()));
    }
    if (self->acks) { /* the MODEL carries "boot" now */
        hdr = s_model_hdr(self);
        if ((rc = s_encode_model(self, &hdr)) != 0)
            return fm_errmsg_set(e, rc, "encode MODEL: %s", fm_strerror(rc));
    }
    if (!(self->loop = fm_loop_new(e)))
        return -ENOMEM;
    fm_loop_reader(self->loop, self->pull, s_drain, self);
    fm_loop_timer(self->loop, S_TICK_S, 0, s_tick, self);
    fm_loop_on_reload(self->loop, s_reload, self);
    fm_loop_on_status(self->loop, s_status, self);
    char mode[256];
    agg_policy_describe(self->policy, mode, sizeof mode);
    char acks[320] = "acks off: checkpoint every ";
    if (self->acks)
        snprintf(acks, sizeof acks, "acks on %s: a checkpoint per version",
                 self->cfg.endpoints.acks);
    else
        snprintf(acks + strlen(acks), sizeof acks - strlen(acks), "%d versions",
                 self->cfg.aggregator.checkpoint_every);
    FM_LOG(LOG_NOTICE,
           "model %s (%zu params) at version %llu; %s, optimizer %s%s; PULL %s (max "
           "frame %zu B, hwm %zu), PUB %s; %s",
           fm_model_name(self->model), fm_model_nparams(self->model),
           (unsigned long long)self->version, mode,
           fm_server_opt_kind_name(fm_server_opt_kind(self->opt)),
           self->cfg.aggregator.momentum_backoff && fm_server_opt_beta1(self->opt) > 0.0
               ? " (momentum / (1 + staleness))"
               : "",
           self->cfg.endpoints.updates, maxmsg, hwm, self->cfg.endpoints.aggregator_models, acks);
    char rule[400];
    agg_ingest_describe(self->ingest, rule, sizeof rule);
    FM_LOG(LOG_NOTICE, "%s", rule);
    if (self->privacy) {
        char dp[800];
        agg_privacy_describe(self->privacy, dp, sizeof dp);
        FM_LOG(LOG_NOTICE, "%s", dp);
    }
    if (self->cfg.secagg.enabled &&
        !(self->secagg = agg_secagg_new(&self->cfg, fm_model_nparams(self->model), s_secagg_send,
                                        s_secagg_sum, self, &rc, e)))
        return rc;
    if ((rc = agg_secagg_metrics(self->secagg, self->metrics)) != 0) /* 0 when off */
        return rc;
    if (self->secagg) {
        char sa[400];
        agg_secagg_describe(self->secagg, sa, sizeof sa);
        FM_LOG(LOG_NOTICE, "%s", sa);
    }
    return 0;
}

/* Everything but the sockets: learning, policy, stats, state, ingest, membership, model. */
static int s_init(agg_server_t *self, fm_errmsg_t *e)
{
    int rc = s_init_learning(self, e);
    if (rc)
        return rc;
    if (!(self->policy = agg_policy_new(&self->cfg, &rc, e)))
        return rc;
    self->privacy = agg_privacy_new(&self->cfg, self->policy->buffer_k, &rc, e);
    if (rc || (rc = agg_privacy_metrics(self->privacy, self->metrics)) != 0)
        return rc;
    if (!(self->stats = agg_stats_new(self->cfg.aggregator.checkpoint_dir, fm_daemon_wallclock(),
                                      fm_daemon_now(), &rc, e)) ||
        (rc = agg_stats_metrics(self->stats, self->metrics)) != 0 ||
        !(self->state = agg_state_new(&self->cfg, AGG_IDSET_DEFAULT_CAP, &rc, e)) ||
        !(self->ingest = agg_ingest_new(self->model, self->policy, agg_state_ids(self->state),
                                        &rc, e)))
        return rc;
    fm_members_limits_t lim = s_members_limits(&self->cfg);
    self->members = fm_members_new(&lim);
    self->live = calloc((size_t)self->cfg.federation.num_clients, 1);
    if (!self->members || !self->live)
        return -ENOMEM;
    if ((rc = fm_members_metrics(self->members, self->metrics)) != 0)
        return rc;
    if ((rc = s_init_model(self, e)) != 0)
        return rc;
    fm_screen_config_t sc = s_screen_config(self, &self->cfg); /* a resumed adaptive C */
    if ((rc = agg_ingest_set_screen(self->ingest, &sc)) != 0)
        return fm_errmsg_set(e, rc, "norm screen at clip %g: out of range", sc.bound);
    agg_stats_version(self->stats, self->version);
    self->created = fm_daemon_wallclock();
    return 0;
}

agg_server_t *agg_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                             fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    agg_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        rc = -ENOMEM;
        goto cleanup;
    }
    self->cfg = *cfg;
    self->args = args;
    self->metrics = metrics;
    self->sec = sec;
    if ((rc = s_init(self, e)) != 0 || (rc = s_init_sockets(self, e)) != 0)
        goto cleanup;
    s_update_finished(self);
    if (self->finished)
        FM_LOG(LOG_NOTICE, "version %llu >= num_rounds = %d: finished, no rounds will open",
               (unsigned long long)self->version, self->cfg.federation.num_rounds);
    else
        s_privacy_admits(self); /* a resumed budget may be spent already */
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
    s_publish(self, 0); /* encoded by agg_server_new (sync: empty cohort until a round opens) */
    s_write_stats(self);
    int rc = fm_loop_run(self->loop);
    if (rc)
        FM_LOG(LOG_ERR, "polling failed: %s", fm_strerror(rc));
    /* async: what was accepted is not lost at a clean stop: the open buffer (fewer than K
     * updates) becomes a last version. Sync: an open round is abandoned (it re-opens with a
     * new cohort after the restart; its updates were never acknowledged). */
    int pending = agg_ingest_pending(self->ingest);
    if (pending > 0 && self->cfg.federation.mode != FM_CFG_MODE_SYNC && !self->finished) {
        FM_LOG(LOG_NOTICE, "stopping: folding the open buffer (%d of %d updates)", pending,
               self->policy->buffer_k);
        s_aggregate(self);
    }
    if (self->secagg)
        agg_secagg_abort_all(self->secagg, "the aggregator is stopping");
    FM_LOG(LOG_NOTICE, "stopping at version %llu (%d updates in the open buffer dropped)",
           (unsigned long long)self->version, agg_ingest_pending(self->ingest));
    int crc = s_checkpoint(self, AGG_STATE_SHUTDOWN);
    s_publish(self, 0);
    s_write_stats(self);
    return rc ? rc : crc;
}

void agg_server_destroy(agg_server_t **p)
{
    if (!p || !*p)
        return;
    agg_server_t *self = *p;
    fm_loop_destroy(&self->loop);
    zsock_destroy(&self->pull);
    zsock_destroy(&self->pub); /* linger S_PUB_LINGER_MS: let the last MODEL go out */
    agg_acks_destroy(&self->acks);
    fm_jsonl_close(&self->history);
    free(self->scratch_ids);
    fm_wire_buf_free(&self->frame);
    fm_codec_enc_destroy(&self->model_enc);
    free(self->model_coded);
    agg_ingest_destroy(&self->ingest);
    agg_state_destroy(&self->state);
    agg_stats_destroy(&self->stats);
    agg_policy_destroy(&self->policy);
    agg_privacy_destroy(&self->privacy);
    agg_secagg_destroy(&self->secagg);
    fm_members_destroy(&self->members);
    free(self->live);
    free(self->mean);
    fm_server_opt_destroy(&self->opt);
    fm_model_destroy(&self->model);
    free(self);
    *p = NULL;
}
