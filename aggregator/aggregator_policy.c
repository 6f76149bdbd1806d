#include "aggregator_policy.h"

#include "aggregator_async.h"
#include "aggregator_sync.h"

fm_screen_config_t agg_policy_privacy_screen(const fm_config_t *cfg, double clip)
{
    return (fm_screen_config_t){.bound = clip * (1.0 - 0x1p-20), /* the margin for rounding */
                                .mode = FM_SCREEN_ABSOLUTE,
                                .action = FM_SCREEN_CLIP,
                                .window = cfg->aggregator.norm_window};
}

fm_screen_config_t agg_policy_screen_config(const fm_config_t *cfg)
{
    const fm_cfg_aggregator_t *a = &cfg->aggregator;
    if (cfg->privacy.mode == FM_CFG_PRIVACY_CLIENT)
        return agg_policy_privacy_screen(cfg, cfg->privacy.clip_norm);
    return (fm_screen_config_t){.bound = a->norm_bound,
                                .mode = a->norm_bound_mode,
                                .action = a->norm_action,
                                .window = a->norm_window};
}

agg_policy_t *agg_policy_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e)
{
    agg_policy_t *p = cfg->federation.mode == FM_CFG_MODE_SYNC ? agg_sync_new(cfg, err, e)
                                                               : agg_async_new(cfg, err, e);
    if (p) {
        p->rule = cfg->aggregator.aggregation;
        p->trim_fraction = cfg->aggregator.trim_fraction;
        p->sign_threshold = cfg->aggregator.sign_threshold;
        p->screen = agg_policy_screen_config(cfg);
        p->one_per_client = cfg->privacy.mode == FM_CFG_PRIVACY_CLIENT;
    }
    return p;
}

void agg_policy_destroy(agg_policy_t **p)
{
    if (!p || !*p)
        return;
    (*p)->ops->free(*p);
    *p = NULL;
}

int agg_policy_accept(const agg_policy_t *p, const fm_wire_update_t *u, uint64_t tau,
                      const agg_view_t *v, agg_reason_t *reason, char *why, size_t cap)
{
    return p->ops->accept(p, u, tau, v, reason, why, cap);
}

int agg_policy_folded(agg_policy_t *p, const fm_wire_update_t *u, int buffer_full)
{
    return p->ops->folded(p, u, buffer_full);
}

void agg_policy_refused(agg_policy_t *p, const fm_wire_update_t *u) { p->ops->refused(p, u); }

int agg_policy_decline(agg_policy_t *p, const fm_wire_decline_t *d, uint32_t client, char *why,
                       size_t cap)
{
    return p->ops->decline(p, d, client, why, cap);
}

agg_action_t agg_policy_closed(agg_policy_t *p, int ok, int count, const agg_view_t *v,
                               double now)
{
    return p->ops->closed(p, ok, count, v, now);
}

agg_action_t agg_policy_tick(agg_policy_t *p, const agg_view_t *v, double now)
{
    return p->ops->tick(p, v, now);
}

void agg_policy_model_meta(const agg_policy_t *p, fm_wire_model_t *hdr)
{
    p->ops->model_meta(p, hdr);
}

void agg_policy_stats(const agg_policy_t *p, fm_stats_t *st) { p->ops->stats(p, st); }

void agg_policy_describe(const agg_policy_t *p, char *out, size_t cap)
{
    p->ops->describe(p, out, cap);
}

uint64_t agg_policy_round(const agg_policy_t *p) { return p->round; }

void agg_policy_set_round(agg_policy_t *p, uint64_t round) { p->round = round; }
