/* agg_policy: what differs between mode = async and mode = sync, as one small interface
 * with two implementations (aggregator_async.c, aggregator_sync.c):
 *
 *   accept      may a decoded, well-formed update of staleness tau be folded now?
 *               (async: the quorum of live clients; sync: the open round and its cohort)
 *   folded      an update was folded: is it time to aggregate?
 *               (async: the buffer is full; sync: every cohort member reported)
 *   decline     a client's DECLINE (sync with [federation] sampling = poisson: its coin said
 *               no): is it time to aggregate? (async: ignored)
 *   closed      an aggregation was tried (the server step accepted or refused it): what next?
 *               (async: publish the new version; sync: close the round, open the next)
 *   tick        time passed (sync: round deadlines, opening rounds when clients come)
 *   model_meta  what a MODEL carries besides the params (sync: round, cohort, mu)
 *   stats       the mode's fields of stats.json
 *
 * The policy decides; the server acts (agg_action_t). Policies use no sockets and no clock
 * (times are the caller's monotonic seconds); the sync policy logs its round events. */
#ifndef AGG_POLICY_H
#define AGG_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "aggregator_stats.h"
#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_fedbuff.h"
#include "fm_robust.h"
#include "fm_screen.h"
#include "fm_stats.h"
#include "fm_wire.h"

/* What the server does after a policy decision. */
typedef enum {
    AGG_ACT_NONE,
    AGG_ACT_AGGREGATE, /* take the buffer through the server optimiser now */
    AGG_ACT_PUBLISH,   /* encode and publish the current version */
    AGG_ACT_RESTART    /* drop the buffer (a new round), then encode and publish */
} agg_action_t;

/* The server's state a policy looks at (borrowed for the call). */
typedef struct {
    uint64_t version;    /* current model version */
    int finished;        /* num_rounds (> 0) versions exist: no more rounds or versions */
    uint32_t nlive;      /* distinct clients served by live trainers */
    const uint8_t *live; /* num_clients bytes, 1 = live */
} agg_view_t;

typedef struct agg_policy agg_policy_t;

/* The interface. Every function is required. */
typedef struct {
    const char *mode; /* "async" | "sync" (stats.json "mode") */
    /* 0 to fold `u` (staleness tau = view version - base), or 1 with *reason and a one-line
     * why[0..cap) to refuse it. Changes no state. */
    int (*accept)(const agg_policy_t *p, const fm_wire_update_t *u, uint64_t tau,
                  const agg_view_t *v, agg_reason_t *reason, char *why, size_t cap);
    /* `u` (accepted) was folded; buffer_full: the buffer holds K updates. 1 = aggregate now. */
    int (*folded)(agg_policy_t *p, const fm_wire_update_t *u, int buffer_full);
    /* A decoded UPDATE refused for its content (model, tensors, non-finite, samples, norm,
     * overflow): sync marks its client as done for the open round when it is a cohort
     * member yet to report (it will not send another), so the round can close without
     * waiting for its deadline; it is closed at the next tick (see agg_sync.h). */
    void (*refused)(agg_policy_t *p, const fm_wire_update_t *u);
    /* `client` of a DECLINE (the sender's identity already checked): 1 = recorded and
     * aggregate now, 0 = recorded, -1 = ignored with a one-line why[0..cap) (no open
     * Poisson round, not this round, not in the cohort, already reported). */
    int (*decline)(agg_policy_t *p, const fm_wire_decline_t *d, uint32_t client, char *why,
                   size_t cap);
    /* An aggregation of `count` updates made a new version (ok) or was refused (!ok);
     * v->version and v->finished are already updated. */
    agg_action_t (*closed)(agg_policy_t *p, int ok, int count, const agg_view_t *v, double now);
    agg_action_t (*tick)(agg_policy_t *p, const agg_view_t *v, double now);
    /* Fill the mode's fields of a MODEL header (round, cohort, mu); the cohort is borrowed
     * until the policy's next call. */
    void (*model_meta)(const agg_policy_t *p, fm_wire_model_t *hdr);
    /* Fill mode, round, round_open, cohort_size, round_reported, rounds_completed/failed. */
    void (*stats)(const agg_policy_t *p, fm_stats_t *st);
    /* One line for the start-up log ("K=4, staleness polynomial, max 8"). */
    void (*describe)(const agg_policy_t *p, char *out, size_t cap);
    void (*free)(agg_policy_t *p);
} agg_policy_ops_t;

/* The part every implementation starts with (implementations embed it first). */
struct agg_policy {
    const agg_policy_ops_t *ops;
    int buffer_k;             /* updates per aggregation (the FedBuff K, or the cohort) */
    fm_staleness_t staleness; /* discount of stale updates */
    int weight_by_samples;    /* FedAvg weights n_k */
    uint64_t round;           /* last sync round opened (checkpointed; 0 in async) */
    /* both modes, set by agg_policy_new: the buffer's rule (fm_robust) and the per-update
     * norm screen (fm_screen), from [aggregator] */
    fm_robust_rule_t rule;
    double trim_fraction;
    double sign_threshold; /* fm_signvote's threshold, 0 = no vote */
    fm_screen_config_t screen;
    /* [privacy] mode = client: at most one update per client in a buffer (`repeat`) */
    int one_per_client;
};

/* The norm screen of [aggregator] norm_bound, norm_bound_mode, norm_action, norm_window; with
 * [privacy] mode = client, every update clipped to privacy.clip_norm instead (absolute, clip:
 * slightly below C so that the float weight's rounding keeps ||w delta|| <= C). */
fm_screen_config_t agg_policy_screen_config(const fm_config_t *cfg);

/* The screen of [privacy] mode = client at clip C (absolute, clip, bound C (1 - 2^-20)):
 * agg_policy_screen_config's at C = privacy.clip_norm; adaptive clipping moves C per step. */
fm_screen_config_t agg_policy_privacy_screen(const fm_config_t *cfg, double clip);

/* The policy of cfg->federation.mode. `cfg` is borrowed and must outlive the policy: a
 * reload may change its reloadable keys in place (round_timeout_s applies to the next
 * round). NULL with *err = FM_EARG (bad staleness parameters), -ENOMEM and one line in `e`.
 * Caller owns it: agg_policy_destroy. */
agg_policy_t *agg_policy_new(const fm_config_t *cfg, int *err, fm_errmsg_t *e);

/* Free and NULL *p; idempotent. */
void agg_policy_destroy(agg_policy_t **p);

/* Dispatch to p->ops (see agg_policy_ops_t). */
int agg_policy_accept(const agg_policy_t *p, const fm_wire_update_t *u, uint64_t tau,
                      const agg_view_t *v, agg_reason_t *reason, char *why, size_t cap);
int agg_policy_folded(agg_policy_t *p, const fm_wire_update_t *u, int buffer_full);
void agg_policy_refused(agg_policy_t *p, const fm_wire_update_t *u);
int agg_policy_decline(agg_policy_t *p, const fm_wire_decline_t *d, uint32_t client, char *why,
                       size_t cap);
agg_action_t agg_policy_closed(agg_policy_t *p, int ok, int count, const agg_view_t *v,
                               double now);
agg_action_t agg_policy_tick(agg_policy_t *p, const agg_view_t *v, double now);
void agg_policy_model_meta(const agg_policy_t *p, fm_wire_model_t *hdr);
void agg_policy_stats(const agg_policy_t *p, fm_stats_t *st);
void agg_policy_describe(const agg_policy_t *p, char *out, size_t cap);

/* The last round opened (checkpointed) and setting it on resume. */
uint64_t agg_policy_round(const agg_policy_t *p);
void agg_policy_set_round(agg_policy_t *p, uint64_t round);

#endif
