/* aggregator_ingest_test: the aggregator's ingest step (aggregator/aggregator_ingest.c) and
 * its two policies (aggregator_async.c, aggregator_sync.c), driven by frames built with the
 * fm_wire encoders, without sockets or clocks.
 *
 * Checked: every rejection reason, each produced by one frame and counted exactly once
 * (agg_stats); a valid update folded with the FedBuff weight s(tau) n / sum n, compared
 * with the mean computed here independently in double; duplicate ids refused, also after
 * the buffer was taken; membership and other messages; the async policy's quorum and
 * decisions; the sync policy's rounds: late (other round, older base, closed round),
 * cohort (not selected, repeated), completion, deadlines, finishing; the norm screen (clip
 * with the exact clipped mean, reject, the overflow guard on a 3e38 update and on 2^64
 * sample weights, each update rejected alone) and the robust rules through the same path
 * (median in async with staleness, trimmed mean in a sync round) against naive medians.
 * Links aggregator_lib
 * (the CMakeLists.txt rule for aggregator_*_test). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "aggregator_idset.h"
#include "aggregator_ingest.h"
#include "aggregator_policy.h"
#include "aggregator_stats.h"
#include "fm_cfg.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_wire.h"

#define S_NCLIENTS 6

typedef struct {
    fm_config_t cfg;
    fm_model_t *layout; /* logreg */
    size_t np;
    agg_policy_t *policy;
    agg_idset_t *ids;
    agg_ingest_t *ing;
    agg_stats_t *stats;
    fm_wire_buf_t buf;
    uint8_t live[S_NCLIENTS];
    agg_ingest_ctx_t ctx;
    float *delta;
    uint32_t next_id;
} s_t;

/* A context for `mode` with the config tweaked by the caller before s_open. */
static s_t *s_new(int mode)
{
    s_t *t = fm_tu_alloc(1, sizeof *t);
    fm_cfg_defaults(&t->cfg);
    t->cfg.federation.mode = mode;
    t->cfg.federation.aggregation_strategy = mode == FM_CFG_MODE_SYNC ? FM_CFG_STRATEGY_FEDAVG
                                                                      : FM_CFG_STRATEGY_FEDBUFF;
    t->cfg.federation.num_clients = S_NCLIENTS;
    t->cfg.federation.clients_per_round = 2;
    t->cfg.federation.min_clients = 1;
    t->cfg.aggregator.buffer_k = 3;
    t->cfg.aggregator.round_timeout_s = 10;
    int err = 0;
    t->layout = fm_model_new("logreg", &err);
    assert_non_null(t->layout);
    t->np = fm_model_nparams(t->layout);
    t->delta = fm_tu_floats(t->np);
    for (size_t i = 0; i < t->np; i++)
        t->delta[i] = (float)((int)(i % 7) - 3) * 0.125f;
    memset(t->live, 1, sizeof t->live);
    t->ctx.view = (agg_view_t){.version = 5, .nlive = S_NCLIENTS, .live = t->live};
    t->ctx.max_staleness = 4;
    return t;
}

static void s_open(s_t *t)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    t->policy = agg_policy_new(&t->cfg, &err, &e);
    assert_non_null(t->policy);
    t->ids = agg_idset_new(64, &err);
    assert_non_null(t->ids);
    t->ing = agg_ingest_new(t->layout, t->policy, t->ids, &err, &e);
    assert_non_null(t->ing);
    t->stats = agg_stats_new("/nonexistent", 0, 0, &err, &e);
    assert_non_null(t->stats);
}

static void s_free(s_t **p)
{
    s_t *t = *p;
    agg_ingest_destroy(&t->ing);
    agg_ingest_destroy(&t->ing); /* idempotent */
    agg_idset_destroy(&t->ids);
    agg_policy_destroy(&t->policy);
    agg_policy_destroy(&t->policy);
    agg_stats_destroy(&t->stats);
    fm_wire_buf_free(&t->buf);
    fm_model_destroy(&t->layout);
    free(t->delta);
    free(t);
    *p = NULL;
}

/* Encode an UPDATE into t->buf with a fresh id (returned in id, may be NULL). */
static void s_update_ex(s_t *t, uint64_t base, uint64_t n, uint32_t client, uint64_t round,
                        const float *delta, uint8_t id_out[FM_WIRE_ID_LEN])
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    t->next_id++;
    memcpy(h.id, &t->next_id, sizeof t->next_id);
    h.id[15] = 0xa5;
    if (id_out)
        memcpy(id_out, h.id, FM_WIRE_ID_LEN);
    snprintf(h.trainer, sizeof h.trainer, "unit");
    h.client = client;
    h.base = base;
    h.num_samples = n;
    h.local_steps = 1;
    h.round = round;
    assert_int_equal(fm_wire_encode_update(&h, t->layout, delta ? delta : t->delta, &t->buf), 0);
}

/* Encode an UPDATE into t->buf that reuses `id` (a resend). */
static void s_update_id(s_t *t, uint64_t base, const uint8_t id[FM_WIRE_ID_LEN])
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.id, id, FM_WIRE_ID_LEN);
    snprintf(h.trainer, sizeof h.trainer, "unit");
    h.base = base;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, t->layout, t->delta, &t->buf), 0);
}

static void s_update(s_t *t, uint64_t base, uint64_t n)
{
    s_update_ex(t, base, n, 0, 0, NULL, NULL);
}

static void s_mutate(s_t *t, const char *pat, const char *rep, size_t n)
{
    unsigned char *p = memmem(t->buf.data, t->buf.len, pat, n);
    assert_non_null(p);
    memcpy(p, rep, n);
}

/* Ingest data[0..len) and count a rejection in t->stats. */
static agg_verdict_t s_ingest(s_t *t, const void *data, size_t len)
{
    agg_verdict_t v;
    memset(&v, 0xee, sizeof v); /* every field the kind needs must be set */
    agg_ingest_frame(t->ing, data, len, &t->ctx, &v);
    if (v.kind == AGG_INGEST_REJECTED) {
        assert_true((unsigned)v.reason < AGG_REJ_COUNT);
        assert_true(strlen(v.why) > 0);
        agg_stats_reject(t->stats, v.reason, v.why);
    }
    return v;
}

static agg_verdict_t s_ingest_buf(s_t *t) { return s_ingest(t, t->buf.data, t->buf.len); }

#define S_EXPECT_REJECT(t, want)                                                                 \
    do {                                                                                         \
        agg_verdict_t v_ = s_ingest_buf(t);                                                      \
        if (v_.kind != AGG_INGEST_REJECTED || v_.reason != (want))                               \
            fail_msg("expected rejection '%s', got kind %d reason '%s'", agg_reason_name(want),  \
                     (int)v_.kind,                                                               \
                     v_.kind == AGG_INGEST_REJECTED ? agg_reason_name(v_.reason) : "-");         \
    } while (0)

/* ---- every reason, counted once ------------------------------------------------------------ */

static void test_every_reason_counted(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.federation.min_clients = 3;
    t->cfg.aggregator.norm_bound = 100; /* t->delta's norm: 22.15 */
    t->cfg.aggregator.norm_action = FM_SCREEN_REJECT;
    s_open(t);
    float *bad = fm_tu_floats(t->np);

    s_update(t, 5, 10); /* valid (folded): its id comes back below */
    uint8_t *first = fm_tu_alloc(t->buf.len, 1);
    size_t first_len = t->buf.len;
    memcpy(first, t->buf.data, first_len);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);

    static const char garbage[] = "\x93 not a msgpack map";
    assert_int_equal(s_ingest(t, garbage, sizeof garbage - 1).reason, AGG_REJ_MALFORMED);
    s_update(t, 5, 10);
    assert_int_equal(s_ingest(t, t->buf.data, t->buf.len / 2).reason, AGG_REJ_TRUNCATED);
    s_update(t, 5, 10);
    s_mutate(t, "\xa1v\x01", "\xa1v\x03", 3); /* version 2 is taken: 3 is not */
    S_EXPECT_REJECT(t, AGG_REJ_VERSION);
    fm_wire_snapshot_req_t req = {.have = 0};
    snprintf(req.from, sizeof req.from, "x");
    assert_int_equal(fm_wire_encode_snapshot_req(&req, &t->buf), 0);
    S_EXPECT_REJECT(t, AGG_REJ_UNEXPECTED_TYPE);
    s_update(t, 5, 10);
    s_mutate(t, "\xa6logreg", "\xa6lagreg", 7);
    S_EXPECT_REJECT(t, AGG_REJ_MODEL);
    s_update(t, 5, 10);
    s_mutate(t, "fc.bias", "fc.bixs", 7);
    S_EXPECT_REJECT(t, AGG_REJ_NAME);
    s_update(t, 5, 10);
    s_mutate(t,
             "\xa3"
             "F32",
             "\xa3"
             "F16",
             4);
    S_EXPECT_REJECT(t, AGG_REJ_DTYPE);
    s_update(t, 5, 10); /* version 2: F16 is known, but its data is sized for F32 */
    s_mutate(t, "\xa1v\x01", "\xa1v\x02", 3);
    s_mutate(t,
             "\xa3"
             "F32",
             "\xa3"
             "F16",
             4);
    S_EXPECT_REJECT(t, AGG_REJ_ENCODING);
    s_update(t, 5, 10);
    s_mutate(t, "\xa5shape\x91\x0a", "\xa5shape\x91\x05", 8);
    S_EXPECT_REJECT(t, AGG_REJ_SHAPE);
    memcpy(bad, t->delta, t->np * sizeof *bad);
    bad[t->np - 1] = INFINITY;
    s_update_ex(t, 5, 10, 0, 0, bad, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_NONFINITE);
    s_update(t, 0, 10); /* tau 5 > max_staleness 4 */
    S_EXPECT_REJECT(t, AGG_REJ_STALE);
    s_update(t, 6, 10); /* base 6 > version 5 */
    S_EXPECT_REJECT(t, AGG_REJ_FUTURE);
    assert_int_equal(s_ingest(t, first, first_len).reason, AGG_REJ_DUPLICATE);
    s_update(t, 5, 0);
    S_EXPECT_REJECT(t, AGG_REJ_SAMPLES);
    t->ctx.view.finished = 1;
    s_update(t, 5, 10);
    S_EXPECT_REJECT(t, AGG_REJ_LATE);
    t->ctx.view.finished = 0;
    t->ctx.view.nlive = 2; /* min_clients 3 */
    s_update(t, 5, 10);
    S_EXPECT_REJECT(t, AGG_REJ_QUORUM);
    t->ctx.view.nlive = 3;
    for (size_t i = 0; i < t->np; i++)
        bad[i] = -10.0f * t->delta[i]; /* sign-flipped x10: norm 221.5 > 100 */
    s_update_ex(t, 5, 10, 0, 0, bad, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_NORM);
    bad[7] = 3e38f; /* finite, above the overflow guard */
    s_update_ex(t, 5, 10, 0, 0, bad, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_OVERFLOW);
    assert_int_equal(s_ingest(t, "", 0).reason, AGG_REJ_TRUNCATED);
    /* [secagg] enabled: a plain UPDATE is refused (with its id: it is acknowledged), a member
     * message goes to the cohorts; without it, a member message is an unexpected type */
    t->ctx.secagg = 1;
    s_update(t, 5, 10);
    agg_verdict_t sv = s_ingest_buf(t);
    assert_int_equal(sv.kind, AGG_INGEST_REJECTED);
    assert_int_equal(sv.reason, AGG_REJ_SECAGG);
    assert_true(sv.has_id);
    fm_sa_advertise_t adv = {.cohort = 7, .from = 1};
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &t->buf), 0);
    sv = s_ingest_buf(t);
    assert_int_equal(sv.kind, AGG_INGEST_SECAGG);
    assert_int_equal(sv.type, FM_WIRE_SA_KEYS);
    t->ctx.secagg = 0;
    sv = s_ingest_buf(t);
    assert_int_equal(sv.reason, AGG_REJ_UNEXPECTED_TYPE);

    /* each reason exactly once (truncated twice, cohort: sync only; identity needs
     * [security] mode = curve: security_test, with the check itself in sec_test), nothing
     * else folded */
    const agg_counters_t *c = agg_stats_counters(t->stats);
    for (int r = 0; r < AGG_REJ_COUNT; r++) {
        uint64_t want = r == AGG_REJ_TRUNCATED || r == AGG_REJ_UNEXPECTED_TYPE                ? 2
                        : r == AGG_REJ_COHORT || r == AGG_REJ_IDENTITY || r == AGG_REJ_REPEAT ? 0
                                                                                              : 1;
        if (c->rejected[r] != want)
            fail_msg("rejected.%s = %llu, expected %llu", agg_reason_name(r),
                     (unsigned long long)c->rejected[r], (unsigned long long)want);
    }
    assert_int_equal(c->rejected_total, AGG_REJ_COUNT - 1);
    assert_int_equal(agg_ingest_pending(t->ing), 1);
    s_update(t, 5, 10); /* still folding */
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    assert_int_equal(agg_ingest_pending(t->ing), 2);
    free(first);
    free(bad);
    s_free(&t);
}

/* ---- the fold --------------------------------------------------------------------------------
 */

static void test_fold_weight(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.aggregator.staleness = FM_STALENESS_POLYNOMIAL;
    t->cfg.aggregator.staleness_a = 0.5;
    t->cfg.aggregator.weight_by_samples = true;
    t->ctx.max_staleness = 4;
    s_open(t);
    /* tau 0, 2, 4 (= max_staleness: still accepted) */
    const uint64_t base[3] = {5, 3, 1}, n[3] = {10, 20, 30};
    float *d[3];
    double *want = fm_tu_alloc(t->np, sizeof *want);
    fm_rng_t rng;
    fm_rng_seed(&rng, 11, 0);
    for (int k = 0; k < 3; k++) {
        d[k] = fm_tu_floats(t->np);
        fm_tu_uniform(&rng, d[k], t->np, -1, 1);
        s_update_ex(t, base[k], n[k], (uint32_t)k, 0, d[k], NULL);
        agg_verdict_t v = s_ingest_buf(t);
        assert_int_equal(v.kind, AGG_INGEST_FOLDED);
        assert_int_equal(v.tau, 5 - base[k]);
        assert_int_equal(v.update.num_samples, n[k]);
        assert_int_equal(v.aggregate, k == 2); /* K = 3 */
        double s = pow(1.0 + (double)(5 - base[k]), -0.5);
        for (size_t i = 0; i < t->np; i++)
            want[i] += s * (double)n[k] * d[k][i] / 60.0;
    }
    float *mean = fm_tu_floats(t->np);
    int count = 0;
    double stale_mean = -1;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &stale_mean), 0);
    assert_int_equal(count, 3);
    assert_true(fabs(stale_mean - 2.0) < 1e-12);
    for (size_t i = 0; i < t->np; i++)
        if (!(fabs(mean[i] - want[i]) <= 1e-5 * fabs(want[i]) + 1e-7))
            fail_msg("mean[%zu] = %.9g, expected %.9g", i, mean[i], want[i]);
    assert_int_equal(agg_ingest_pending(t->ing), 0);
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &stale_mean), FM_ERANGE);
    for (int k = 0; k < 3; k++)
        free(d[k]);
    free(want);
    free(mean);
    s_free(&t);
}

static void test_duplicates(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    s_open(t);
    uint8_t id[FM_WIRE_ID_LEN];
    s_update_ex(t, 5, 10, 0, 0, NULL, id);
    assert_false(agg_idset_contains(t->ids, id));
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    assert_true(agg_idset_contains(t->ids, id));
    S_EXPECT_REJECT(t, AGG_REJ_DUPLICATE);
    assert_int_equal(agg_ingest_pending(t->ing), 1);
    float *mean = fm_tu_floats(t->np);
    int count;
    double sm;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    S_EXPECT_REJECT(t, AGG_REJ_DUPLICATE); /* the window outlives the buffer */
    agg_ingest_reset(t->ing);
    S_EXPECT_REJECT(t, AGG_REJ_DUPLICATE);
    s_update(t, 5, 10); /* another id */
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    assert_int_equal(agg_stats_counters(t->stats)->rejected[AGG_REJ_DUPLICATE], 3);
    /* a resend of an applied update arriving when it would also be too stale (or late) is
     * a duplicate first: its sender is told "applied", not "stale" */
    t->ctx.view.version = 5 + 4 + 1; /* tau 5 > max_staleness 4 */
    s_update_ex(t, 5, 10, 0, 0, NULL, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_STALE); /* a new id: stale */
    agg_ingest_reset(t->ing);
    s_update_id(t, 5, id); /* the first id again */
    agg_verdict_t dv = s_ingest_buf(t);
    assert_int_equal(dv.reason, AGG_REJ_DUPLICATE);
    assert_true(dv.has_id && !dv.lost);
    assert_memory_equal(dv.update.id, id, FM_WIRE_ID_LEN);
    /* a frame that does not decode has no id to answer */
    agg_verdict_t bv = s_ingest(t, "\x81\xa1v\x01", 4);
    assert_int_equal(bv.kind, AGG_INGEST_REJECTED);
    assert_false(bv.has_id);
    free(mean);
    s_free(&t);
}

/* Versions lost in a checkpoint fallback (2..4 of a run now at version 5): an update based on
 * one of them is "future" even though its base is below the current version. */
static void test_lost_versions(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    s_open(t);
    t->ctx.lost_first = 2;
    t->ctx.lost_last = 4;
    for (uint64_t base = 2; base <= 4; base++) {
        s_update(t, base, 10);
        agg_verdict_t v = s_ingest_buf(t);
        assert_int_equal(v.kind, AGG_INGEST_REJECTED);
        assert_int_equal(v.reason, AGG_REJ_FUTURE);
        assert_non_null(strstr(v.why, "was lost (versions 2-4"));
        assert_true(v.has_id && v.lost); /* answered "lost" with acks on */
    }
    s_update(t, 6, 10); /* from the future, not lost */
    agg_verdict_t fv = s_ingest_buf(t);
    assert_true(fv.reason == AGG_REJ_FUTURE && fv.has_id && !fv.lost);
    s_update(t, 1, 10); /* before the lost ones: stale by 4, taken */
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    s_update(t, 5, 10);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    t->ctx.lost_first = t->ctx.lost_last = 0; /* none */
    s_update(t, 3, 10);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    s_free(&t);
}

static void test_member_frames(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    s_open(t);
    fm_wire_member_t m = {.pid = 42, .client_first = 2, .client_count = 3, .workers = 1};
    snprintf(m.trainer, sizeof m.trainer, "t7");
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HEARTBEAT, &m, &t->buf), 0);
    agg_verdict_t v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_MEMBER);
    assert_int_equal(v.type, FM_WIRE_HEARTBEAT);
    assert_string_equal(v.member.trainer, "t7");
    assert_int_equal(v.member.client_first, 2);
    assert_int_equal(v.member.client_count, 3);
    assert_int_equal(agg_stats_counters(t->stats)->rejected_total, 0);
    assert_int_equal(s_ingest(t, t->buf.data, t->buf.len - 1).reason, AGG_REJ_TRUNCATED);
    s_free(&t);
}

/* ---- the async policy ---------------------------------------------------------------------- */

static void test_async_policy(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.federation.min_clients = 3;
    s_open(t);
    fm_wire_update_t u;
    memset(&u, 0, sizeof u);
    agg_reason_t r = AGG_REJ_COUNT;
    char why[AGG_WHY_MAX];
    agg_view_t v = {.version = 5, .nlive = 2, .live = t->live};
    assert_int_equal(agg_policy_accept(t->policy, &u, 0, &v, &r, why, sizeof why), 1);
    assert_int_equal(r, AGG_REJ_QUORUM);
    v.nlive = 3;
    assert_int_equal(agg_policy_accept(t->policy, &u, 9, &v, &r, why, sizeof why), 0);
    t->cfg.federation.min_clients = 1; /* the policy reads the (reloadable) config in place */
    v.nlive = 0;
    assert_int_equal(agg_policy_accept(t->policy, &u, 0, &v, &r, why, sizeof why), 0);
    assert_int_equal(agg_policy_folded(t->policy, &u, 0), 0);
    assert_int_equal(agg_policy_folded(t->policy, &u, 1), 1);
    assert_int_equal(agg_policy_closed(t->policy, 1, 3, &v, 0), AGG_ACT_PUBLISH);
    assert_int_equal(agg_policy_closed(t->policy, 0, 3, &v, 0), AGG_ACT_NONE);
    assert_int_equal(agg_policy_tick(t->policy, &v, 1e9), AGG_ACT_NONE);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.cohort.present, 0);
    assert_int_equal(hdr.round, 0);
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    agg_policy_stats(t->policy, &st);
    assert_string_equal(st.mode, "async");
    assert_false(st.round_open);
    s_free(&t);
}

/* ---- the sync policy ------------------------------------------------------------------------
 */

/* A sync context with round 1 open on version 5; cohort into c[2]. */
static s_t *s_sync_open(uint32_t c[2])
{
    s_t *t = s_new(FM_CFG_MODE_SYNC);
    s_open(t);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.cohort.present, 1);
    assert_int_equal(hdr.cohort.count, 0); /* no round yet */
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 100.0), AGG_ACT_RESTART);
    assert_int_equal(agg_policy_round(t->policy), 1);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.round, 1);
    assert_int_equal(hdr.cohort.count, 2);
    c[0] = fm_wire_cohort_at(&hdr.cohort, 0);
    c[1] = fm_wire_cohort_at(&hdr.cohort, 1);
    return t;
}

static uint32_t s_outsider(const uint32_t c[2])
{
    uint32_t k = 0;
    while (k == c[0] || k == c[1])
        k++;
    return k;
}

static void test_sync_accepts_the_round(void **state)
{
    uint32_t c[2];
    s_t *t = s_sync_open(c);
    s_update_ex(t, 5, 10, c[0], 2, NULL, NULL); /* another round */
    S_EXPECT_REJECT(t, AGG_REJ_LATE);
    s_update_ex(t, 4, 10, c[0], 1, NULL, NULL); /* an older base: tau 1 */
    S_EXPECT_REJECT(t, AGG_REJ_LATE);
    s_update_ex(t, 5, 10, s_outsider(c), 1, NULL, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_COHORT);
    s_update_ex(t, 5, 10, c[0], 1, NULL, NULL);
    agg_verdict_t v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_int_equal(v.aggregate, 0);
    s_update_ex(t, 5, 10, c[0], 1, NULL, NULL); /* again, with a new id */
    S_EXPECT_REJECT(t, AGG_REJ_COHORT);
    s_update_ex(t, 5, 30, c[1], 1, NULL, NULL);
    v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_int_equal(v.aggregate, 1); /* every member reported */
    const agg_counters_t *k = agg_stats_counters(t->stats);
    assert_int_equal(k->rejected[AGG_REJ_LATE], 2);
    assert_int_equal(k->rejected[AGG_REJ_COHORT], 2);
    assert_int_equal(k->rejected_total, 4);

    /* aggregated: version 6, round 2 opens; round 1 is now closed */
    t->ctx.view.version = 6;
    assert_int_equal(agg_policy_closed(t->policy, 1, 2, &t->ctx.view, 101.0), AGG_ACT_RESTART);
    agg_ingest_reset(t->ing);
    assert_int_equal(agg_policy_round(t->policy), 2);
    s_update_ex(t, 6, 10, c[0], 1, NULL, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_LATE);
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    agg_policy_stats(t->policy, &st);
    assert_string_equal(st.mode, "sync");
    assert_int_equal(st.round, 2);
    assert_true(st.round_open);
    assert_int_equal(st.cohort_size, 2);
    assert_int_equal(st.rounds_completed, 1);
    assert_int_equal(st.rounds_failed, 0);
    s_free(&t);
}

static void test_sync_deadlines(void **state)
{
    uint32_t c[2];
    s_t *t = s_sync_open(c); /* opened at 100, deadline 110 */
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 109.9), AGG_ACT_NONE);
    /* deadline, nobody reported (min_clients 1): dropped, round 2 with a new cohort */
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 110.0), AGG_ACT_RESTART);
    assert_int_equal(agg_policy_round(t->policy), 2);
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    agg_policy_stats(t->policy, &st);
    assert_int_equal(st.rounds_failed, 1);
    assert_true(st.round_open);
    /* round 2 (deadline 120): one of two reported: aggregate at the deadline */
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    agg_policy_model_meta(t->policy, &hdr);
    s_update_ex(t, 5, 10, fm_wire_cohort_at(&hdr.cohort, 0), 2, NULL, NULL);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 119.0), AGG_ACT_NONE);
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 120.0), AGG_ACT_AGGREGATE);
    /* refused by the server step: failed, next round */
    assert_int_equal(agg_policy_closed(t->policy, 0, 1, &t->ctx.view, 120.0), AGG_ACT_RESTART);
    assert_int_equal(agg_policy_round(t->policy), 3);
    /* finished: the round closes and no other opens; MODELs carry an empty cohort */
    t->ctx.view.version = 6;
    t->ctx.view.finished = 1;
    assert_int_equal(agg_policy_closed(t->policy, 1, 2, &t->ctx.view, 121.0), AGG_ACT_RESTART);
    assert_int_equal(agg_policy_round(t->policy), 3);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.cohort.count, 0);
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 1e6), AGG_ACT_NONE);
    memset(&st, 0, sizeof st);
    agg_policy_stats(t->policy, &st);
    assert_false(st.round_open);
    assert_int_equal(st.rounds_failed, 2);
    assert_int_equal(st.rounds_completed, 1);
    s_free(&t);
}

static void test_sync_waits_for_clients(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_SYNC);
    t->cfg.federation.min_clients = 3;
    s_open(t);
    memset(t->live, 0, sizeof t->live);
    t->live[1] = t->live[4] = 1;
    t->ctx.view.nlive = 2;
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 1.0), AGG_ACT_NONE);
    assert_int_equal(agg_policy_round(t->policy), 0);
    s_update_ex(t, 5, 10, 1, 0, NULL, NULL); /* no round open */
    S_EXPECT_REJECT(t, AGG_REJ_LATE);
    t->live[2] = 1;
    t->ctx.view.nlive = 3;
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 2.0), AGG_ACT_RESTART);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.cohort.count, 2);
    for (uint32_t i = 0; i < hdr.cohort.count; i++) /* only live clients are chosen */
        assert_true(t->live[fm_wire_cohort_at(&hdr.cohort, i)]);
    s_free(&t);
}

/* ---- screening and robust rules ----------------------------------------------------------- */

/* The mean with an absolute clip: a sign-flipped x10 update is folded scaled to the bound
 * (the verdict says so); a 3e38 update among honest ones is rejected alone (overflow) and
 * the buffer's mean is that of the honest ones. */
static void test_clip_and_overflow(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.aggregator.buffer_k = 3;
    t->cfg.aggregator.staleness = FM_STALENESS_CONSTANT;
    t->cfg.aggregator.weight_by_samples = false;
    t->cfg.aggregator.norm_bound = 44.3; /* 2 x t->delta's norm */
    s_open(t);
    float *att = fm_tu_floats(t->np), *mean = fm_tu_floats(t->np);
    double ss = 0;
    for (size_t i = 0; i < t->np; i++) {
        att[i] = -10.0f * t->delta[i];
        ss += (double)att[i] * att[i];
    }
    s_update(t, 5, 10);
    agg_verdict_t v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_false(v.clipped);
    s_update_ex(t, 5, 10, 1, 0, att, NULL);
    v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_true(v.clipped);
    assert_true(fabs(v.norm - sqrt(ss)) <= 1e-9 * sqrt(ss) && v.bound == 44.3);
    att[11] = 3e38f; /* rejected alone: the buffer keeps its two updates */
    s_update_ex(t, 5, 10, 2, 0, att, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_OVERFLOW);
    assert_int_equal(agg_ingest_pending(t->ing), 2);
    att[11] = -10.0f * t->delta[11];
    s_update(t, 5, 10);
    v = s_ingest_buf(t);
    assert_int_equal(v.aggregate, 1);
    int count = 0;
    double sm = 0;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    assert_int_equal(count, 3);
    double f = 44.3 / sqrt(ss); /* the clip factor */
    for (size_t i = 0; i < t->np; i++) {
        double want = (2.0 * t->delta[i] + f * att[i]) / 3.0;
        if (!(fabs(mean[i] - want) <= 1e-6 * (fabs(t->delta[i]) + 1e-3)))
            fail_msg("mean[%zu] = %.9g, expected %.9g", i, mean[i], want);
    }
    fm_fedbuff_stats_t fs;
    agg_ingest_stats(t->ing, &fs);
    assert_int_equal(fs.updates, 3);
    char line[400];
    agg_ingest_describe(t->ing, line, sizeof line);
    assert_non_null(strstr(line, "aggregation mean (streaming"));
    assert_non_null(strstr(line, "norm bound 44.3 (clip)"));
    /* a reload switches the screen: reject, relative 1.5 x median of the last 50 norms
     * (none before 50: the 50 next pass) */
    fm_screen_config_t sc = {
        .bound = 1.5, .mode = FM_SCREEN_RELATIVE, .action = FM_SCREEN_REJECT, .window = 50};
    assert_int_equal(agg_ingest_set_screen(t->ing, &sc), 0);
    agg_ingest_describe(t->ing, line, sizeof line);
    assert_non_null(strstr(line, "1.5 x median of the last 50 norms (reject"));
    sc.bound = 0.5;
    assert_int_equal(agg_ingest_set_screen(t->ing, &sc), FM_EARG);
    free(att);
    free(mean);
    s_free(&t);
}

/* The weighted mean's accumulator guard: clients claiming 2^64 - 1 samples with norms just
 * under the ceiling; the sixth would take the buffer's sum over FLT_MAX / 4. */
static void test_accumulator_guard(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.aggregator.buffer_k = 10;
    t->cfg.aggregator.weight_by_samples = true;
    s_open(t);
    float *d = fm_tu_floats(t->np), *mean = fm_tu_floats(t->np);
    d[0] = 9e17f;
    for (int i = 0; i < 6; i++) {
        s_update_ex(t, 5, UINT64_MAX, (uint32_t)i, 0, d, NULL);
        agg_verdict_t v = s_ingest_buf(t);
        assert_int_equal(v.kind, i < 5 ? AGG_INGEST_FOLDED : AGG_INGEST_REJECTED);
        if (i == 5)
            assert_int_equal(v.reason, AGG_REJ_OVERFLOW);
    }
    int count = 0;
    double sm = 0;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    assert_int_equal(count, 5);
    assert_true(fm_tu_all_finite(mean, t->np));
    free(d);
    free(mean);
    s_free(&t);
}

/* Naive coordinate-wise median of `k` rows u[i][j] (each row already scaled). */
static float s_median_naive(float *v, int k)
{
    for (int a = 1; a < k; a++) /* insertion sort */
        for (int b = a; b > 0 && v[b - 1] > v[b]; b--) {
            float x = v[b];
            v[b] = v[b - 1];
            v[b - 1] = x;
        }
    return k % 2 ? v[k / 2] : (float)(((double)v[k / 2 - 1] + v[k / 2]) / 2);
}

/* Async: the median through the ingest path, staleness applied before the rule and sample
 * counts ignored (a client claiming 10^6 samples weighs as much as one claiming 1). */
static void test_median_async(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.aggregator.buffer_k = 3;
    t->cfg.aggregator.aggregation = FM_ROBUST_MEDIAN;
    t->cfg.aggregator.staleness = FM_STALENESS_POLYNOMIAL;
    t->cfg.aggregator.staleness_a = 0.5;
    s_open(t);
    float *d[3], *mean = fm_tu_floats(t->np), v[3];
    const uint64_t base[3] = {5, 4, 2}, n[3] = {1, 1000000, 7};
    fm_rng_t rng;
    fm_rng_seed(&rng, 4, 0);
    for (int i = 0; i < 3; i++) {
        d[i] = fm_tu_floats(t->np);
        fm_tu_uniform(&rng, d[i], t->np, -1, 1);
        s_update_ex(t, base[i], n[i], (uint32_t)i, 0, d[i], NULL);
        agg_verdict_t vd = s_ingest_buf(t);
        assert_int_equal(vd.kind, AGG_INGEST_FOLDED);
        assert_int_equal(vd.aggregate, i == 2);
    }
    int count = 0;
    double sm = 0;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    for (size_t j = 0; j < t->np; j++) {
        for (int i = 0; i < 3; i++)
            v[i] = (float)pow(1.0 + (double)(5 - base[i]), -0.5) * d[i][j];
        float want = s_median_naive(v, 3);
        if (mean[j] != want)
            fail_msg("median[%zu] = %.9g, naive %.9g", j, mean[j], want);
    }
    char line[400];
    agg_ingest_describe(t->ing, line, sizeof line);
    assert_non_null(strstr(line, "aggregation median over 3 stored updates"));
    for (int i = 0; i < 3; i++)
        free(d[i]);
    free(mean);
    s_free(&t);
}

/* Sync: a round of 3 aggregated by the trimmed mean (trim 1 at each end = the median of
 * three); the attacker's x10 update does not move the result out of the honest range. */
static void test_trimmed_sync(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_SYNC);
    t->cfg.federation.clients_per_round = 3;
    t->cfg.aggregator.aggregation = FM_ROBUST_TRIMMED_MEAN;
    t->cfg.aggregator.trim_fraction = 0.34;
    s_open(t);
    assert_int_equal(agg_policy_tick(t->policy, &t->ctx.view, 100.0), AGG_ACT_RESTART);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    agg_policy_model_meta(t->policy, &hdr);
    assert_int_equal(hdr.cohort.count, 3);
    float *d[3], *mean = fm_tu_floats(t->np), v[3];
    for (int i = 0; i < 3; i++) {
        d[i] = fm_tu_floats(t->np);
        for (size_t j = 0; j < t->np; j++)
            d[i][j] = i < 2 ? t->delta[j] * (1.0f + 0.5f * (float)i) : -10.0f * t->delta[j];
        s_update_ex(t, 5, 100, fm_wire_cohort_at(&hdr.cohort, (uint32_t)i), 1, d[i], NULL);
        agg_verdict_t vd = s_ingest_buf(t);
        assert_int_equal(vd.kind, AGG_INGEST_FOLDED);
        assert_int_equal(vd.aggregate, i == 2);
    }
    int count = 0;
    double sm = 0;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    assert_int_equal(count, 3);
    for (size_t j = 0; j < t->np; j++) {
        for (int i = 0; i < 3; i++)
            v[i] = d[i][j];
        float want = s_median_naive(v, 3);
        if (mean[j] != want)
            fail_msg("trimmed[%zu] = %.9g, naive %.9g", j, mean[j], want);
    }
    for (int i = 0; i < 3; i++)
        free(d[i]);
    free(mean);
    s_free(&t);
}

/* [privacy] mode = client: every update clipped to C (whatever its norm), its weight its
 * staleness discount alone (sample counts ignored), one update per client per buffer
 * ("repeat"); the buffer's sum is checked against one computed here. */
static void test_privacy_clip_and_repeat(void **state)
{
    s_t *t = s_new(FM_CFG_MODE_ASYNC);
    t->cfg.aggregator.buffer_k = 3;
    t->cfg.aggregator.staleness = FM_STALENESS_POLYNOMIAL;
    t->cfg.aggregator.staleness_a = 1.0;
    t->cfg.aggregator.weight_by_samples = false;
    t->cfg.privacy.mode = FM_CFG_PRIVACY_CLIENT;
    t->cfg.privacy.clip_norm = 0.25;
    snprintf(t->cfg.trainer.clients, sizeof t->cfg.trainer.clients, "0-%d", S_NCLIENTS - 1);
    fm_errmsg_t e = {{0}}; /* a config the daemon would accept */
    if (fm_cfg_check(&t->cfg, &e) != 0)
        fail_msg("%s", e.msg);
    s_open(t);
    float *big = fm_tu_floats(t->np), *mean = fm_tu_floats(t->np);
    double nd = 0, nb = 0;
    for (size_t i = 0; i < t->np; i++) {
        big[i] = 1e4f * (float)((int)(i % 5) - 2);
        nd += (double)t->delta[i] * t->delta[i];
        nb += (double)big[i] * big[i];
    }
    nd = sqrt(nd);
    nb = sqrt(nb);
    /* client 0: norm ~22 (base 5, tau 0, n = 10); client 0 again: repeat; client 1: norm ~1e6
     * with n = 2^63 (tau 2: s = 1/3); client 2: the small delta scaled to 0.1 C (unclipped) */
    s_update_ex(t, 5, 10, 0, 0, NULL, NULL);
    agg_verdict_t v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_true(v.clipped);
    s_update_ex(t, 5, 10, 0, 0, NULL, NULL);
    S_EXPECT_REJECT(t, AGG_REJ_REPEAT);
    s_update_ex(t, 3, 1ull << 63, 1, 0, big, NULL);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    float *small = fm_tu_floats(t->np);
    for (size_t i = 0; i < t->np; i++)
        small[i] = (float)(t->delta[i] * (0.025 / nd));
    s_update_ex(t, 5, 1, 2, 0, small, NULL);
    v = s_ingest_buf(t);
    assert_int_equal(v.kind, AGG_INGEST_FOLDED);
    assert_false(v.clipped);
    assert_int_equal(v.aggregate, 1);
    int count = 0;
    double sm = 0;
    assert_int_equal(agg_ingest_take(t->ing, mean, &count, &sm), 0);
    assert_int_equal(count, 3);
    double sum_norm = 0;
    for (size_t i = 0; i < t->np; i++) {
        double want = 0.25 * t->delta[i] / nd + (1.0 / 3.0) * 0.25 * big[i] / nb + small[i];
        double got = 3.0 * mean[i];
        if (!(fabs(got - want) <= 1e-6))
            fail_msg("sum[%zu] = %.9g, expected %.9g", i, got, want);
        sum_norm += got * got;
    }
    assert_true(sqrt(sum_norm) <= 3 * 0.25);
    /* a new buffer: client 0 may send again */
    s_update_ex(t, 5, 10, 0, 0, NULL, NULL);
    assert_int_equal(s_ingest_buf(t).kind, AGG_INGEST_FOLDED);
    assert_int_equal(agg_stats_counters(t->stats)->rejected[AGG_REJ_REPEAT], 1);
    char line[400];
    agg_ingest_describe(t->ing, line, sizeof line);
    assert_non_null(strstr(line, "norm bound 0.25 (clip)"));
    free(big);
    free(small);
    free(mean);
    s_free(&t);
}

int main(void)
{
    fm_log_init("aggregator_ingest_test", LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_privacy_clip_and_repeat),
        cmocka_unit_test(test_every_reason_counted),
        cmocka_unit_test(test_fold_weight),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_lost_versions),
        cmocka_unit_test(test_member_frames),
        cmocka_unit_test(test_async_policy),
        cmocka_unit_test(test_sync_accepts_the_round),
        cmocka_unit_test(test_sync_deadlines),
        cmocka_unit_test(test_sync_waits_for_clients),
        cmocka_unit_test(test_clip_and_overflow),
        cmocka_unit_test(test_accumulator_guard),
        cmocka_unit_test(test_median_async),
        cmocka_unit_test(test_trimmed_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
