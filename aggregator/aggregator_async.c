#include "aggregator_async.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    agg_policy_t base;      /* first: the interface */
    const fm_config_t *cfg; /* borrowed */
    uint64_t declines;      /* DECLINEs received (all ignored: no rounds in async) */
} s_async_t;

static int s_accept(const agg_policy_t *p, const fm_wire_update_t *u, uint64_t tau,
                    const agg_view_t *v, agg_reason_t *reason, char *why, size_t cap)
{
    int min_clients = ((const s_async_t *)p)->cfg->federation.min_clients;
    if (min_clients > 1 && v->nlive < (uint32_t)min_clients) {
        *reason = AGG_REJ_QUORUM;
        snprintf(why, cap, "UPDATE from %s: %u live clients, min_clients = %d", u->trainer,
                 v->nlive, min_clients);
        return 1;
    }
    return 0;
}

static int s_folded(agg_policy_t *p, const fm_wire_update_t *u, int buffer_full)
{
    return buffer_full;
}

/* async waits for no one: nothing to mark */
static void s_refused(agg_policy_t *p, const fm_wire_update_t *u)
{
    (void)p;
    (void)u;
}

static int s_decline(agg_policy_t *p, const fm_wire_decline_t *d, uint32_t client, char *why,
                     size_t cap)
{
    ((s_async_t *)p)->declines++;
    snprintf(why, cap, "DECLINE from %s client %u: mode = async has no rounds", d->trainer,
             client);
    return -1;
}

static agg_action_t s_closed(agg_policy_t *p, int ok, int count, const agg_view_t *v, double now)
{
    return ok ? AGG_ACT_PUBLISH : AGG_ACT_NONE;
}

static agg_action_t s_tick(agg_policy_t *p, const agg_view_t *v, double now)
{
    return AGG_ACT_NONE;
}

static void s_model_meta(const agg_policy_t *p, fm_wire_model_t *hdr)
{
    /* async MODELs carry no round: every client may train on them */
}

static void s_stats(const agg_policy_t *p, fm_stats_t *st)
{
    snprintf(st->mode, sizeof st->mode, "async");
    st->round = p->round;
    st->round_open = false;
    st->cohort_size = st->round_reported = 0;
    st->rounds_completed = st->rounds_failed = 0;
    st->round_declined = 0;
    st->declines = 0;
    st->declines_ignored = ((const s_async_t *)p)->declines;
}

static void s_describe(const agg_policy_t *p, char *out, size_t cap)
{
    snprintf(out, cap, "K=%d, staleness %s, max %d", p->buffer_k,
             fm_staleness_name(p->staleness.kind),
             ((const s_async_t *)p)->cfg->aggregator.max_staleness);
}

static void s_free(agg_policy_t *p) { free(p); }

static const agg_policy_ops_t s_ops = {
    .mode = "async",
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

agg_policy_t *agg_async_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e)
{
    const fm_cfg_aggregator_t *ac = &cfg->aggregator;
    fm_staleness_t st = {.kind = ac->staleness, .a = ac->staleness_a, .b = ac->staleness_b};
    int rc = fm_staleness_check(&st, e);
    s_async_t *s = rc ? NULL : calloc(1, sizeof *s);
    if (!s) {
        if (!rc)
            rc = fm_errmsg_set(e, -ENOMEM, "async policy: %s", fm_strerror(-ENOMEM));
        if (err)
            *err = rc;
        return NULL;
    }
    s->cfg = cfg;
    s->base.ops = &s_ops;
    s->base.buffer_k = ac->buffer_k == 0 ? cfg->federation.clients_per_round : ac->buffer_k;
    s->base.staleness = st;
    s->base.weight_by_samples = ac->weight_by_samples;
    return &s->base;
}
