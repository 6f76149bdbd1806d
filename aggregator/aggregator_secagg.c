#include "aggregator_secagg.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_sa_codec.h"
#include "fm_sa_crypto.h"

/* One member of a cohort: who was invited as index i. */
typedef struct {
    uint32_t client;
    char trainer[FM_WIRE_STR_MAX + 1];
} s_member_t;

/* One cohort in flight. */
typedef struct {
    fm_sa_cohort_t *c;
    uint64_t id, mv;
    fm_sa_phase_t seen; /* the phase whose opening messages went out last */
    int stopped;        /* aborted from outside (agg_secagg_abort_all): nobody dropped */
    uint32_t in[4];     /* messages accepted per phase: keys, shares, uploads, unmask */
    s_member_t m[FM_SA_MAX_K + 1]; /* 1..K */
} s_cohort_t;

struct agg_secagg {
    const fm_config_t *cfg;
    fm_sa_params_t params; /* cohort id 0: set per cohort */
    fm_sa_deadlines_t dl;
    int sync, max_cohorts;
    uint32_t num_clients;
    s_cohort_t *co[AGG_SECAGG_MAX_COHORTS];
    uint8_t *busy;   /* num_clients: in a cohort in flight */
    uint32_t *cand;  /* num_clients: scratch of the cohort draw */
    uint32_t *words; /* m: scratch of one masked upload (aligned copy) */
    fm_wire_buf_t buf;
    /* decoded messages (large: kept here, not on the stack) */
    fm_wire_sa_shares_t shares;
    fm_wire_sa_unmask_shares_t unmask;
    agg_secagg_send_fn send;
    agg_secagg_sum_fn sum;
    void *arg;
    agg_secagg_observe_fn observe;
    void *observe_arg;
    agg_secagg_counters_t n;
    fm_ratelog_t refused_log, wait_log;
    fm_metric_t *m_cohorts[3], *m_dropped[4], *m_inflight, *m_refused;
};

static const char *const s_phase_drop[4] = {"keys", "shares", "train", "unmask"};

/* ---- sending ------------------------------------------------------------------------------ */

static void s_send_buf(agg_secagg_t *sa, int rc, const char *what)
{
    if (rc) {
        FM_LOG(LOG_ERR, "secagg: encode %s: %s", what, fm_strerror(rc));
        return;
    }
    sa->send(sa->arg, sa->buf.data, sa->buf.len);
}

/* M8 to every invited member. */
static void s_send_end(agg_secagg_t *sa, const s_cohort_t *co, fm_wire_type_t type)
{
    for (uint32_t i = 1; i <= sa->params.k; i++) {
        fm_wire_sa_end_t end = {.cohort = co->id, .to = i};
        s_send_buf(sa, fm_wire_encode_sa_end(type, &end, &sa->buf), "COHORT_DONE/ABORT");
    }
}

/* The opening messages of phase `ph` (just entered). */
static void s_send_phase(agg_secagg_t *sa, s_cohort_t *co, fm_sa_phase_t ph)
{
    uint32_t n = 0;
    if (ph == FM_SA_AT_SHARES) {
        fm_sa_key_list_t kl;
        if (fm_sa_cohort_key_list(co->c, &kl) != 0)
            return;
        const uint32_t *u1 = fm_sa_cohort_set(co->c, FM_SA_SET_U1, &n);
        for (uint32_t j = 0; j < n; j++)
            s_send_buf(sa, fm_wire_encode_sa_key_list(&kl, u1[j], &sa->buf), "KEY_LIST");
    } else if (ph == FM_SA_AT_TRAINING) {
        const uint32_t *u2 = fm_sa_cohort_set(co->c, FM_SA_SET_U2, &n);
        for (uint32_t j = 0; j < n; j++) {
            fm_sa_shares_fwd_t fwd;
            if (fm_sa_cohort_shares_fwd(co->c, u2[j], &fwd) == 0)
                s_send_buf(sa, fm_wire_encode_sa_shares_fwd(&fwd, &sa->buf), "SHARES_FWD");
        }
    } else if (ph == FM_SA_AT_UNMASKING) {
        fm_sa_unmask_req_t req;
        if (fm_sa_cohort_unmask_req(co->c, &req) != 0)
            return;
        const uint32_t *u3 = fm_sa_cohort_set(co->c, FM_SA_SET_U3, &n);
        for (uint32_t j = 0; j < n; j++)
            s_send_buf(sa, fm_wire_encode_sa_unmask_req(&req, u3[j], &sa->buf), "UNMASK_REQ");
    }
}

/* ---- cohort lifecycle --------------------------------------------------------------------- */

static void s_free(agg_secagg_t *sa, int slot)
{
    s_cohort_t *co = sa->co[slot];
    if (!co)
        return;
    for (uint32_t i = 1; i <= sa->params.k; i++)
        if (co->m[i].client < sa->num_clients)
            sa->busy[co->m[i].client] = 0;
    fm_sa_cohort_destroy(&co->c);
    sodium_memzero(co, sizeof *co);
    free(co);
    sa->co[slot] = NULL;
    sa->n.in_flight--;
}

/* Members that did not answer in phase `ph` (0..3) when it closed. */
static void s_count_drops(agg_secagg_t *sa, const s_cohort_t *co, int ph)
{
    uint32_t expected = ph == 0 ? sa->params.k : co->in[ph - 1];
    uint32_t got = co->in[ph];
    if (expected > got)
        sa->n.dropped[ph] += expected - got;
}

/* Send what the cohort's phase changes call for; a cohort that ended is freed. */
static void s_advance(agg_secagg_t *sa, int slot)
{
    s_cohort_t *co = sa->co[slot];
    for (;;) {
        fm_sa_phase_t ph = fm_sa_cohort_phase(co->c);
        if (ph == co->seen)
            return;
        if (ph == FM_SA_AT_ABORTED) {
            if (co->seen <= FM_SA_AT_UNMASKING && !co->stopped)
                s_count_drops(sa, co, (int)co->seen);
            sa->n.aborted++;
            FM_LOG(LOG_WARNING, "secagg: cohort %016llx (version %llu) aborted: %s",
                   (unsigned long long)co->id, (unsigned long long)co->mv,
                   fm_sa_cohort_abort_reason(co->c));
            s_send_end(sa, co, FM_WIRE_SA_ABORT);
            s_free(sa, slot);
            return;
        }
        fm_sa_phase_t next = (fm_sa_phase_t)(co->seen + 1);
        s_count_drops(sa, co, (int)co->seen);
        if (next == FM_SA_AT_DONE) {
            fm_sa_result_t r;
            int rc = fm_sa_cohort_result(co->c, &r);
            FM_ASSERT(rc == 0);
            sa->n.completed++;
            sa->n.applied_members += r.survivors;
            FM_LOG(LOG_INFO,
                   "secagg: cohort %016llx (version %llu) done: %u of %u members in the sum",
                   (unsigned long long)co->id, (unsigned long long)co->mv, r.survivors,
                   sa->params.k);
            agg_secagg_sum_t s = {.cohort = co->id,
                                  .mv = co->mv,
                                  .decoded = r.decoded,
                                  .m = r.m,
                                  .survivors = r.survivors};
            sa->sum(sa->arg, &s);
            s_send_end(sa, co, FM_WIRE_SA_DONE);
            s_free(sa, slot);
            return;
        }
        co->seen = next;
        s_send_phase(sa, co, next);
    }
}

/* Draw K idle live clients served by a live trainer and invite them at `version`. 0, or 1
 * when there are not enough (nothing done). */
static int s_form(agg_secagg_t *sa, uint64_t version, const uint8_t *live,
                  const fm_members_t *members, double now)
{
    uint32_t k = sa->params.k, ncand = 0;
    for (uint32_t c = 0; c < sa->num_clients; c++)
        if (live[c] && !sa->busy[c])
            sa->cand[ncand++] = c;
    if (ncand < k)
        return 1;
    int slot = 0;
    while (slot < AGG_SECAGG_MAX_COHORTS && sa->co[slot])
        slot++;
    FM_ASSERT(slot < AGG_SECAGG_MAX_COHORTS);
    s_cohort_t *co = calloc(1, sizeof *co);
    if (!co) {
        FM_LOG(LOG_ERR, "secagg: no memory for a cohort");
        return 1;
    }
    /* a partial Fisher-Yates draw of K of the candidates, from libsodium */
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + randombytes_uniform(ncand - i);
        uint32_t t = sa->cand[i];
        sa->cand[i] = sa->cand[j];
        sa->cand[j] = t;
        co->m[i + 1].client = sa->cand[i];
        if (!fm_members_owner(members, sa->cand[i], co->m[i + 1].trainer)) {
            free(co); /* live[] and the table disagree: try again at the next tick */
            return 1;
        }
    }
    fm_sa_params_t p = sa->params;
    do
        randombytes_buf(&p.cohort, sizeof p.cohort);
    while (p.cohort == 0);
    int err = 0;
    fm_errmsg_t e = {{0}};
    if (!(co->c = fm_sa_cohort_new(&p, &sa->dl, now, &err, &e))) {
        FM_LOG(LOG_ERR, "secagg: cohort: %s", e.msg[0] ? e.msg : fm_strerror(err));
        free(co);
        return 1;
    }
    co->id = p.cohort;
    co->mv = version;
    co->seen = FM_SA_AT_KEYS;
    sa->co[slot] = co;
    sa->n.in_flight++;
    sa->n.formed++;
    for (uint32_t i = 1; i <= k; i++) {
        sa->busy[co->m[i].client] = 1;
        fm_wire_sa_invite_t inv = {.p = p,
                                   .index = i,
                                   .version = version,
                                   .round = sa->sync ? version + 1 : 0,
                                   .client = co->m[i].client,
                                   .deadlines = sa->dl};
        memcpy(inv.trainer, co->m[i].trainer, sizeof inv.trainer);
        s_send_buf(sa, fm_wire_encode_sa_invite(&inv, &sa->buf), "COHORT_INVITE");
    }
    FM_LOG(LOG_DEBUG, "secagg: cohort %016llx formed at version %llu (%u members)",
           (unsigned long long)co->id, (unsigned long long)version, k);
    return 0;
}

/* ---- input -------------------------------------------------------------------------------- */

static int s_find(const agg_secagg_t *sa, uint64_t cohort)
{
    for (int i = 0; i < AGG_SECAGG_MAX_COHORTS; i++)
        if (sa->co[i] && sa->co[i]->id == cohort)
            return i;
    return -1;
}

static void s_refuse(agg_secagg_t *sa, const char *fmt, const char *name, const char *why)
{
    sa->n.refused++;
    fm_ratelog(&sa->refused_log, LOG_WARNING, fmt, name, why);
}

void agg_secagg_frame(agg_secagg_t *sa, fm_wire_type_t type, const void *data, size_t len,
                      fm_sec_t *sec, const char *user_id, double now)
{
    fm_errmsg_t e = {{0}};
    const char *tname = fm_wire_type_name(type);
    uint64_t cohort = 0;
    uint32_t from = 0;
    int rc = 0, phase = 0;
    fm_sa_advertise_t adv;
    fm_wire_sa_masked_t wm;
    switch (type) {
    case FM_WIRE_SA_KEYS:
        rc = fm_wire_decode_sa_keys(data, len, &adv, &e);
        cohort = adv.cohort, from = adv.from, phase = 0;
        break;
    case FM_WIRE_SA_SHARES:
        rc = fm_wire_decode_sa_shares(data, len, &sa->shares, &e);
        cohort = sa->shares.msg.cohort, from = sa->shares.msg.from, phase = 1;
        break;
    case FM_WIRE_SA_MASKED:
        rc = fm_wire_decode_sa_masked(data, len, &wm, &e);
        cohort = wm.cohort, from = wm.from, phase = 2;
        break;
    case FM_WIRE_SA_UNMASK_SHARES:
        rc = fm_wire_decode_sa_unmask_shares(data, len, &sa->unmask, &e);
        cohort = sa->unmask.msg.cohort, from = sa->unmask.msg.from, phase = 3;
        break;
    default: FM_ASSERT(!"not a member message"); return;
    }
    if (rc) {
        s_refuse(sa, "secagg: %s refused: %s", tname, e.msg);
        return;
    }
    int slot = s_find(sa, cohort);
    if (slot < 0) { /* over, aborted, or never ours: a late or stray message */
        sa->n.refused++;
        FM_LOG(LOG_DEBUG, "secagg: %s for cohort %016llx (not in flight) ignored", tname,
               (unsigned long long)cohort);
        return;
    }
    s_cohort_t *co = sa->co[slot];
    if (from >= 1 && from <= sa->params.k) {
        char why[160];
        const s_member_t *mb = &co->m[from];
        if (fm_sec_check_trainer(sec, user_id, mb->trainer, mb->client, 1, why, sizeof why)) {
            s_refuse(sa, "secagg: %s refused (identity): %s", tname, why);
            return;
        }
    }
    fm_sa_reason_t r = FM_SA_OK;
    switch (type) {
    case FM_WIRE_SA_KEYS: r = fm_sa_cohort_on_keys(co->c, &adv, now, &e); break;
    case FM_WIRE_SA_SHARES: r = fm_sa_cohort_on_shares(co->c, &sa->shares.msg, now, &e); break;
    case FM_WIRE_SA_MASKED: {
        fm_sa_masked_t mk;
        if (wm.m != sa->params.m) {
            r = FM_SA_R_FORMAT;
            snprintf(e.msg, sizeof e.msg, "MASKED_UPDATE of %u words, the cohort has m = %u",
                     wm.m, sa->params.m);
            break;
        }
        fm_wire_sa_masked_view(&wm, sa->words, &mk);
        r = fm_sa_cohort_on_masked(co->c, &mk, now, &e);
        if (r == FM_SA_OK) {
            sa->n.uploads++;
            if (sa->observe)
                sa->observe(sa->observe_arg, sa->words, wm.m);
        }
        sodium_memzero(sa->words, (size_t)sa->params.m * sizeof *sa->words);
        break;
    }
    case FM_WIRE_SA_UNMASK_SHARES:
        r = fm_sa_cohort_on_unmask_shares(co->c, &sa->unmask.msg, now, &e);
        break;
    default: break;
    }
    if (r == FM_SA_OK)
        co->in[phase]++;
    else
        s_refuse(sa, "secagg: %s refused: %s", tname, e.msg);
    s_advance(sa, slot);
}

void agg_secagg_tick(agg_secagg_t *sa, uint64_t version, int finished, const uint8_t *live,
                     const fm_members_t *members, double now)
{
    for (int i = 0; i < AGG_SECAGG_MAX_COHORTS; i++)
        if (sa->co[i]) {
            fm_sa_cohort_tick(sa->co[i]->c, now);
            s_advance(sa, i);
        }
    if (finished)
        return;
    /* sync: one cohort (round) at a time, each on the version the previous one made */
    int want = sa->sync ? 1 : sa->max_cohorts;
    while ((int)sa->n.in_flight < want) {
        if (s_form(sa, version, live, members, now) != 0) {
            if (sa->n.in_flight == 0)
                fm_ratelog(&sa->wait_log, LOG_INFO,
                           "secagg: waiting for %u live clients in no cohort to form one",
                           sa->params.k);
            return;
        }
    }
}

void agg_secagg_abort_all(agg_secagg_t *sa, const char *why)
{
    for (int i = 0; i < AGG_SECAGG_MAX_COHORTS; i++)
        if (sa->co[i]) {
            sa->co[i]->stopped = 1;
            fm_sa_cohort_abort(sa->co[i]->c, why);
            s_advance(sa, i);
        }
}

/* ---- lifecycle, counters ------------------------------------------------------------------- */

static void s_scrape(void *arg)
{
    agg_secagg_t *sa = arg;
    fm_metric_set(sa->m_cohorts[0], (double)sa->n.formed);
    fm_metric_set(sa->m_cohorts[1], (double)sa->n.completed);
    fm_metric_set(sa->m_cohorts[2], (double)sa->n.aborted);
    for (int i = 0; i < 4; i++)
        fm_metric_set(sa->m_dropped[i], (double)sa->n.dropped[i]);
    fm_metric_set(sa->m_inflight, (double)sa->n.in_flight);
    fm_metric_set(sa->m_refused, (double)sa->n.refused);
}

int agg_secagg_metrics(agg_secagg_t *sa, fm_metrics_t *m)
{
    if (!m)
        return 0;
    fm_metric_t *cohorts[3], *dropped[4], *inflight, *refused;
    static const char hc[] = "Secure-aggregation cohorts: formed, completed (sum applied), "
                             "aborted (nothing released).";
    static const char *const res[3] = {"formed", "completed", "aborted"};
    for (int i = 0; i < 3; i++)
        cohorts[i] = fm_metrics_counter(m, "fedmq_secagg_cohorts_total", hc,
                                        (const char *[]){"result", res[i], NULL});
    static const char hd[] = "Secure-aggregation members dropped, by the phase they missed.";
    for (int i = 0; i < 4; i++)
        dropped[i] = fm_metrics_counter(m, "fedmq_secagg_members_dropped_total", hd,
                                        (const char *[]){"phase", s_phase_drop[i], NULL});
    inflight = fm_metrics_gauge(m, "fedmq_secagg_cohorts_in_flight",
                                "Secure-aggregation cohorts in flight.", NULL);
    refused = fm_metrics_counter(m, "fedmq_secagg_messages_refused_total",
                                 "Secure-aggregation member messages the aggregator refused.",
                                 NULL);
    int rc = fm_metrics_status(m);
    if (rc == 0 && sa) {
        memcpy(sa->m_cohorts, cohorts, sizeof cohorts);
        memcpy(sa->m_dropped, dropped, sizeof dropped);
        sa->m_inflight = inflight;
        sa->m_refused = refused;
        fm_metrics_on_scrape(m, s_scrape, sa, NULL);
    }
    return rc;
}

agg_secagg_t *agg_secagg_new(const fm_config_t *cfg, size_t nparams, agg_secagg_send_fn send,
                             agg_secagg_sum_fn sum, void *arg, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    agg_secagg_t *sa = calloc(1, sizeof *sa);
    if (!sa) {
        rc = -ENOMEM;
        goto cleanup;
    }
    if (fm_sa_crypto_init() != 0) {
        rc = fm_errmsg_set(e, FM_ECRYPTO, "secagg: libsodium did not initialise");
        goto cleanup;
    }
    sa->cfg = cfg;
    sa->send = send;
    sa->sum = sum;
    sa->arg = arg;
    sa->sync = cfg->federation.mode == FM_CFG_MODE_SYNC;
    sa->max_cohorts = cfg->secagg.cohorts;
    sa->num_clients = (uint32_t)cfg->federation.num_clients;
    double clip = 0;
    fm_cfg_secagg_params(cfg, &sa->params.k, &sa->params.t, &clip);
    sa->params.clip = clip;
    sa->params.m = (uint32_t)(nparams + 1);
    sa->params.scale_bits = fm_sa_codec_scale(sa->params.k, clip);
    sa->params.cohort = 1; /* checked with a stand-in id */
    fm_errmsg_t pe = {{0}};
    if (fm_sa_params_check(&sa->params, &pe) != 0) {
        rc = fm_errmsg_set(e, FM_EARG, "[secagg]: %s", pe.msg);
        goto cleanup;
    }
    sa->dl = (fm_sa_deadlines_t){.keys = cfg->secagg.keys_timeout_s,
                                 .shares = cfg->secagg.shares_timeout_s,
                                 .train = cfg->secagg.train_timeout_s,
                                 .unmask = cfg->secagg.unmask_timeout_s};
    sa->busy = calloc(sa->num_clients, 1);
    sa->cand = malloc((size_t)sa->num_clients * sizeof *sa->cand);
    sa->words = malloc((size_t)sa->params.m * sizeof *sa->words);
    if (!sa->busy || !sa->cand || !sa->words)
        rc = -ENOMEM;
cleanup:
    if (rc) {
        agg_secagg_destroy(&sa);
        if (err)
            *err = rc;
    }
    return sa;
}

void agg_secagg_destroy(agg_secagg_t **p)
{
    if (!p || !*p)
        return;
    agg_secagg_t *sa = *p;
    for (int i = 0; i < AGG_SECAGG_MAX_COHORTS; i++)
        if (sa->co[i])
            s_free(sa, i);
    free(sa->busy);
    free(sa->cand);
    free(sa->words);
    fm_wire_buf_free(&sa->buf);
    sodium_memzero(sa, sizeof *sa);
    free(sa);
    *p = NULL;
}

const agg_secagg_counters_t *agg_secagg_counters(const agg_secagg_t *sa) { return &sa->n; }

void agg_secagg_stats(const agg_secagg_t *sa, fm_stats_t *st)
{
    if (!sa)
        return;
    st->secagg = true;
    st->secagg_formed = sa->n.formed;
    st->secagg_completed = sa->n.completed;
    st->secagg_aborted = sa->n.aborted;
    st->secagg_in_flight = sa->n.in_flight;
    st->secagg_dropped_keys = sa->n.dropped[0];
    st->secagg_dropped_shares = sa->n.dropped[1];
    st->secagg_dropped_train = sa->n.dropped[2];
    st->secagg_dropped_unmask = sa->n.dropped[3];
    st->secagg_refused = sa->n.refused;
}

void agg_secagg_describe(const agg_secagg_t *sa, char *out, size_t cap)
{
    snprintf(out, cap,
             "secure aggregation: cohorts of K = %u, threshold t = %u, clip C = %g, fixed point "
             "2^%d, %d in flight (%s); deadlines keys %gs, shares %gs, train %gs, unmask %gs",
             sa->params.k, sa->params.t, sa->params.clip, sa->params.scale_bits,
             sa->sync ? 1 : sa->max_cohorts, sa->sync ? "sync: one per round" : "async",
             sa->dl.keys, sa->dl.shares, sa->dl.train, sa->dl.unmask);
}

void agg_secagg_set_observer(agg_secagg_t *sa, agg_secagg_observe_fn fn, void *arg)
{
    sa->observe = fn;
    sa->observe_arg = arg;
}
