#include "aggregator_sync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator_round.h"
#include "fm_log.h"

#define S_WAIT_LOG_S 10.0 /* "waiting for clients" at most this often */

typedef struct {
    agg_policy_t base;      /* first: the interface */
    const fm_config_t *cfg; /* borrowed */
    agg_round_t *r;         /* the open (or last) round */
    double mu;              /* FedProx mu sent with each round (0 = fedavg) */
    uint64_t done;          /* rounds aggregated (this process) */
    uint64_t failed;        /* rounds closed below min_clients or refused */
    double last_wait_log;   /* monotonic */
    /* [federation] sampling = poisson: every live client is in the cohort and trains with
     * probability q (its own coin) or declines */
    int poisson;
    double q;
    int empty_steps;           /* [privacy] on: every round is a step, even without updates */
    uint32_t updates;          /* folded in the open round */
    uint32_t refused;          /* cohort members whose update was refused for its content */
    uint32_t declined;         /* DECLINEs in the open round */
    uint64_t declines_total;   /* DECLINEs taken (this process) */
    uint64_t declines_ignored; /* DECLINEs ignored */
} s_sync_t;

static int s_accept(const agg_policy_t *p, const fm_wire_update_t *u, uint64_t tau,
                    const agg_view_t *v, agg_reason_t *reason, char *why, size_t cap)
{
    const s_sync_t *s = (const s_sync_t *)p;
    agg_round_verdict_t rv = agg_round_check(s->r, u->round, u->client);
    /* a round's updates start from the round's model: anything else is late */
    if (rv == AGG_ROUND_CLOSED || tau != 0) {
        *reason = AGG_REJ_LATE;
        snprintf(why, cap,
                 "UPDATE from %s client %u: round %llu base %llu, the open round is "
                 "%llu%s on version %llu",
                 u->trainer, u->client, (unsigned long long)u->round, (unsigned long long)u->base,
                 (unsigned long long)p->round, agg_round_is_open(s->r) ? "" : " (closed)",
                 (unsigned long long)v->version);
        return 1;
    }
    if (rv != AGG_ROUND_OK) {
        *reason = AGG_REJ_COHORT;
        snprintf(why, cap, "UPDATE from %s: client %u %s round %llu", u->trainer, u->client,
                 rv == AGG_ROUND_REPEAT ? "already reported in" : "is not selected in",
                 (unsigned long long)u->round);
        return 1;
    }
    return 0;
}

/* 1 when the open round should be aggregated now: every member reported (folded, declined,
 * or refused for its content), and enough updates were folded (fixed: min_clients; Poisson:
 * one, or none with privacy). A complete round that is not done is closed by the next
 * s_tick (retried). */
static int s_round_done(const s_sync_t *s)
{
    if (!agg_round_complete(s->r))
        return 0;
    if (s->poisson)
        return s->updates > 0 || s->empty_steps;
    return s->updates >= (uint32_t)s->cfg->federation.min_clients;
}

static int s_folded(agg_policy_t *p, const fm_wire_update_t *u, int buffer_full)
{
    s_sync_t *s = (s_sync_t *)p;
    agg_round_mark(s->r, u->client);
    s->updates++;
    return s_round_done(s);
}

static void s_refused(agg_policy_t *p, const fm_wire_update_t *u)
{
    s_sync_t *s = (s_sync_t *)p;
    if (agg_round_check(s->r, u->round, u->client) != AGG_ROUND_OK)
        return;
    agg_round_mark(s->r, u->client);
    s->refused++;
}

static int s_decline(agg_policy_t *p, const fm_wire_decline_t *d, uint32_t client, char *why,
                     size_t cap)
{
    s_sync_t *s = (s_sync_t *)p;
    agg_round_verdict_t rv = agg_round_check(s->r, d->round, client);
    const char *what = !s->poisson                    ? "rounds are not Poisson-sampled"
                       : rv == AGG_ROUND_CLOSED       ? "not the open round"
                       : rv == AGG_ROUND_NOT_SELECTED ? "not in the cohort"
                       : rv == AGG_ROUND_REPEAT       ? "already reported"
                                                      : NULL;
    if (what) {
        s->declines_ignored++;
        snprintf(why, cap, "DECLINE from %s client %u for round %llu: %s", d->trainer, client,
                 (unsigned long long)d->round, what);
        return -1;
    }
    agg_round_mark(s->r, client);
    s->declined++;
    s->declines_total++;
    return s_round_done(s);
}

/* No round open and too few clients live: say so, at most every S_WAIT_LOG_S. */
static void s_wait_log(s_sync_t *s, const agg_view_t *v, double now)
{
    if (v->finished || now - s->last_wait_log < S_WAIT_LOG_S)
        return;
    FM_LOG(LOG_NOTICE, "waiting for clients: %u live, min_clients = %d", v->nlive,
           s->cfg->federation.min_clients);
    s->last_wait_log = now;
}

/* Log the cohort of the round just opened. */
static void s_log_open(const s_sync_t *s, const agg_view_t *v)
{
    uint32_t cnt;
    const uint32_t *ids = agg_round_cohort(s->r, &cnt);
    char list[160];
    size_t at = 0;
    list[0] = '\0';
    for (uint32_t i = 0; i < cnt && at < sizeof list - 16; i++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%u", i ? "," : "", ids[i]);
    if (s->poisson) {
        FM_LOG(LOG_INFO,
               "round %llu on version %llu: all %u live clients asked, each trains with "
               "probability q = %g (expected %.1f), deadline %.1f s",
               (unsigned long long)s->base.round, (unsigned long long)v->version, cnt, s->q,
               s->q * cnt, s->cfg->aggregator.round_timeout_s);
        return;
    }
    FM_LOG(LOG_INFO,
           "round %llu on version %llu: %u of %u live clients selected (%s%s), "
           "deadline %.1f s",
           (unsigned long long)s->base.round, (unsigned long long)v->version, cnt, v->nlive, list,
           at >= sizeof list - 16 ? ",..." : "", s->cfg->aggregator.round_timeout_s);
}

/* Open the next round if enough clients are live (else wait); the server then drops the
 * buffer and publishes the version with the new cohort (empty while waiting/finished). */
static agg_action_t s_next(s_sync_t *s, const agg_view_t *v, double now)
{
    const fm_cfg_federation_t *f = &s->cfg->federation;
    if (v->finished || v->nlive < (uint32_t)f->min_clients) {
        s_wait_log(s, v, now);
        return AGG_ACT_RESTART;
    }
    uint64_t no = s->base.round + 1;
    /* Poisson: every live client is asked; each decides by its own coin */
    uint32_t per_round = (uint32_t)(s->poisson ? f->num_clients : f->clients_per_round);
    uint32_t m = agg_round_open(s->r, no, v->live, per_round, f->seed,
                                now + s->cfg->aggregator.round_timeout_s);
    s->updates = s->declined = s->refused = 0;
    if (m > 0) {
        s->base.round = no;
        s_log_open(s, v);
    }
    return AGG_ACT_RESTART;
}

static agg_action_t s_closed(agg_policy_t *p, int ok, int count, const agg_view_t *v, double now)
{
    s_sync_t *s = (s_sync_t *)p;
    if (ok) {
        uint32_t cohort;
        agg_round_cohort(s->r, &cohort);
        if (s->poisson)
            FM_LOG(LOG_INFO, "round %llu: %d updates, %u declined, of %u clients asked",
                   (unsigned long long)p->round, count, s->declined, cohort);
        else
            FM_LOG(LOG_INFO, "round %llu: %d of %u selected clients reported",
                   (unsigned long long)p->round, count, cohort);
        s->done++;
    } else {
        s->failed++;
    }
    agg_round_close(s->r);
    return s_next(s, v, now);
}

/* Close a round past its deadline (aggregate what came if at least min_clients reported,
 * else drop it and open another), open one when none is open. */
static agg_action_t s_tick(agg_policy_t *p, const agg_view_t *v, double now)
{
    s_sync_t *s = (s_sync_t *)p;
    int min_clients = s->cfg->federation.min_clients;
    if (agg_round_is_open(s->r) && s->poisson) {
        /* complete here only when nobody trained and an empty round makes no step */
        if (!agg_round_complete(s->r) && now < agg_round_deadline(s->r))
            return AGG_ACT_NONE;
        uint32_t cohort;
        agg_round_cohort(s->r, &cohort);
        if (s->updates > 0 || s->empty_steps) { /* with privacy: whatever came, even none */
            FM_LOG(LOG_NOTICE,
                   "round %llu: %s, aggregating the %u updates that came (%u declined, %u "
                   "refused, %u clients asked)",
                   (unsigned long long)p->round,
                   agg_round_complete(s->r) ? "every client answered" : "deadline", s->updates,
                   s->declined, s->refused, cohort);
            return AGG_ACT_AGGREGATE;
        }
        FM_LOG(LOG_WARNING,
               "round %llu: no update (%u declined of %u clients asked%s): not aggregated, "
               "retried",
               (unsigned long long)p->round, s->declined, cohort,
               agg_round_complete(s->r) ? "" : ", deadline");
        agg_round_close(s->r);
        s->failed++;
        return s_next(s, v, now);
    }
    if (agg_round_is_open(s->r)) {
        /* complete here only when a refused update was the last report */
        int complete = agg_round_complete(s->r);
        if (!complete && now < agg_round_deadline(s->r))
            return AGG_ACT_NONE;
        uint32_t got = s->updates, cohort;
        agg_round_cohort(s->r, &cohort);
        const char *when = complete ? "every member reported" : "deadline";
        if (got >= (uint32_t)min_clients) {
            FM_LOG(LOG_NOTICE,
                   "round %llu: %s, aggregating the %u of %u updates folded (%u refused)",
                   (unsigned long long)p->round, when, got, cohort, s->refused);
            return AGG_ACT_AGGREGATE;
        }
        FM_LOG(LOG_WARNING,
               "round %llu: %s with %u of %u updates folded (%u refused), min_clients = %d: "
               "not aggregated, retried with a new cohort",
               (unsigned long long)p->round, when, got, cohort, s->refused, min_clients);
        agg_round_close(s->r);
        s->failed++;
        return s_next(s, v, now);
    }
    if (v->finished)
        return AGG_ACT_NONE;
    if (v->nlive >= (uint32_t)min_clients)
        return s_next(s, v, now);
    s_wait_log(s, v, now); /* the published MODEL (empty cohort) stays as it is */
    return AGG_ACT_NONE;
}

static void s_model_meta(const agg_policy_t *p, fm_wire_model_t *hdr)
{
    const s_sync_t *s = (const s_sync_t *)p;
    /* a closed round (waiting for clients, finished) publishes an empty cohort */
    hdr->round = p->round;
    hdr->cohort.present = 1;
    hdr->cohort.ids = agg_round_cohort(s->r, &hdr->cohort.count);
    hdr->mu = s->mu;
    hdr->sample_rate = s->poisson ? s->q : 0.0;
}

static void s_stats(const agg_policy_t *p, fm_stats_t *st)
{
    const s_sync_t *s = (const s_sync_t *)p;
    snprintf(st->mode, sizeof st->mode, "sync");
    st->round = p->round;
    st->round_open = agg_round_is_open(s->r);
    agg_round_cohort(s->r, &st->cohort_size);
    st->round_reported = agg_round_reported(s->r);
    st->rounds_completed = s->done;
    st->rounds_failed = s->failed;
    st->round_declined = s->declined;
    st->declines = s->declines_total;
    st->declines_ignored = s->declines_ignored;
}

static void s_describe(const agg_policy_t *p, char *out, size_t cap)
{
    const s_sync_t *s = (const s_sync_t *)p;
    const fm_cfg_federation_t *f = &s->cfg->federation;
    char who[96];
    if (s->poisson)
        snprintf(who, sizeof who, "Poisson sampling q = %g (%d of %d clients expected)", s->q,
                 f->clients_per_round, f->num_clients);
    else
        snprintf(who, sizeof who, "%d clients per round", f->clients_per_round);
    snprintf(out, cap,
             "sync rounds: %s, min_clients %d, round_timeout_s %g, num_rounds %d, %s mu %g", who,
             f->min_clients, s->cfg->aggregator.round_timeout_s, f->num_rounds,
             s->mu > 0 ? "fedprox" : "fedavg", s->mu);
}

static void s_free(agg_policy_t *p)
{
    s_sync_t *s = (s_sync_t *)p;
    agg_round_destroy(&s->r);
    free(s);
}

static const agg_policy_ops_t s_ops = {
    .mode = "sync",
    .accept = s_accept,
    .folded = s_folded,
    .refused = s_refused,
    .decline = s_decline,
    .closed = s_closed,
    .tick = s_tick,
    .model_meta = s_model_meta,
    .stats = s_stats,
    .describe = s_describe,
    .free = s_free,
};

agg_policy_t *agg_sync_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e)
{
    const fm_cfg_federation_t *f = &cfg->federation;
    int rc = -ENOMEM;
    s_sync_t *s = calloc(1, sizeof *s);
    if (!s || !(s->r = agg_round_new((uint32_t)f->num_clients, &rc)))
        goto cleanup;
    /* FedAvg's weights n_k / sum n; every accepted update has staleness 0 */
    if ((rc = fm_staleness_parse(&s->base.staleness, "constant", cfg->aggregator.staleness_a,
                                 cfg->aggregator.staleness_b, e)) != 0)
        goto cleanup;
    s->cfg = cfg;
    s->base.ops = &s_ops;
    s->base.buffer_k = f->clients_per_round;
    /* FedAvg's n_k weights; with client-level DP none (staleness is 0 in a round): sample
     * counts would make one client's weight, hence the sensitivity, unbounded */
    s->base.weight_by_samples = cfg->privacy.mode != FM_CFG_PRIVACY_CLIENT;
    s->mu = f->aggregation_strategy == FM_CFG_STRATEGY_FEDPROX ? f->mu : 0.0;
    s->poisson = f->sampling == FM_CFG_SAMPLING_POISSON;
    s->q = fm_cfg_sample_rate(cfg);
    s->empty_steps = s->poisson && cfg->privacy.mode == FM_CFG_PRIVACY_CLIENT;
    s->last_wait_log = -1e300;
cleanup:
    if (rc) {
        if (e && !e->msg[0])
            fm_errmsg_set(e, rc, "sync policy: %s", fm_strerror(rc));
        if (s)
            agg_round_destroy(&s->r);
        free(s);
        s = NULL;
        if (err)
            *err = rc;
    }
    return s ? &s->base : NULL;
}
