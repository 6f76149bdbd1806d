/* aggregator_secagg_test: the aggregator's cohort manager (aggregator/aggregator_secagg.c)
 * driven end to end in memory: the REAL agg_secagg talks to REAL members (fm_sa_member)
 * over the REAL wire encoding. The `send` callback queues every frame; the test decodes each
 * one (fm_wire_peek, fm_wire_decode_sa_*), routes it to the member it names (cohort id and
 * index; the COHORT_INVITE says which client and trainer), and feeds the members' encoded
 * replies (exact-size copies, so ASan sees any over-read) back into agg_secagg_frame. Each
 * member's update is a float delta of its client, clipped and encoded (fm_sa_codec_encode,
 * w = 1) and masked (fm_sa_member_mask).
 *
 * Checked:
 *   - exact sum: random K, t, C, sync and async: the one sum callback per cohort holds the
 *     survivors' clipped deltas within n/(2S) of a double reference computed here, and the
 *     weight coordinate equals the survivors exactly; later ticks call it no more;
 *   - a dropout at each phase (no keys, no shares, no upload, no unmasking answer) recovered
 *     at the deadlines, dropped[phase] = 1 each, the sum exact over U3;
 *   - below t at each phase: abort, COHORT_ABORT to every member, no sum, the clients free
 *     again (the next tick forms a new cohort with them, which completes);
 *   - the aggregator never holds an update in the clear: every MASKED_UPDATE it accepts
 *     (observer hook) passes a chi-square uniformity test although the deltas are zero or
 *     structured, and an unmasked upload fed on purpose fails it (the test has power);
 *   - replayed, reordered, stray and malformed member messages each refused and counted
 *     once; the cohort completes with the exact sum (a replayed upload is not added twice);
 *     an upload after the training deadline (no tick between) refused, its member in D;
 *   - async: two cohorts in flight with disjoint clients; none formed with fewer than K idle
 *     live clients or when finished; sync: one at a time; agg_secagg_abort_all;
 *   - agg_secagg_stats agrees with the counters;
 *   - [security] mode = curve: a member message sent with another trainer's key is refused
 *     (identity): that member is dropped, the others complete the cohort.
 * Links aggregator_lib (the CMakeLists.txt rule for aggregator_*_test). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "../support/fm_testutil.h"
#include "aggregator_secagg.h"
#include "fm_cfg.h"
#include "fm_members.h"
#include "fm_rng.h"
#include "fm_sa_codec.h"
#include "fm_sa_crypto.h"
#include "fm_sa_member.h"
#include "fm_sec.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_MAXSIM 256
#define S_MAXCOH 16
#define S_DL 10.0               /* every phase deadline, seconds */
#define S_CHI2_CRIT 377.08      /* chi-square 255 dof, upper 1e-6 quantile */
#define S_CLIENTS_PER_TRAINER 2 /* trainer "t-<client / 2>" serves two clients */

/* What a member does. */
typedef enum {
    B_HONEST,
    B_NO_KEYS,   /* never sends ADVERTISE_KEYS */
    B_NO_SHARES, /* keys, then never SHARES */
    B_NO_UPLOAD, /* shares, then never MASKED_UPDATE (lands in D) */
    B_NO_UNMASK, /* uploads, then never answers UNMASK_REQ */
    B_UNMASKED,  /* uploads its encoded x instead of y (the test's power check) */
    B_LATE       /* uploads only when the test calls s_upload (after the deadline) */
} s_behav_t;

/* One member of one cohort, as a trainer would run it. */
typedef struct {
    uint64_t cohort;
    uint32_t index, client, ord; /* ord: the cohort's order of appearance */
    fm_sa_params_t p;
    fm_sa_member_t *m;
    s_behav_t b;
    int got[FM_WIRE_SA_ABORT + 1]; /* frames received, by type */
    int uploaded, answered;
    double chi2; /* of its upload as the aggregator saw it (-1: not observed) */
    uint32_t *x; /* its encoded update */
} s_sim_t;

typedef struct {
    unsigned char *data;
    size_t len;
} s_frame_t;

/* The decoded forms of every secure-aggregation message (large: allocated once). */
typedef struct {
    fm_wire_sa_invite_t inv;
    fm_wire_sa_key_list_t kl;
    fm_wire_sa_shares_fwd_t fwd;
    fm_wire_sa_unmask_req_t ur;
    fm_wire_sa_end_t end;
} s_dec_t;

typedef struct s_h s_h_t;
/* Called after a member sent a frame of `type` (its exact bytes). */
typedef void (*s_after_fn)(s_h_t *h, s_sim_t *s, fm_wire_type_t type, const unsigned char *f,
                           size_t len);

struct s_h {
    fm_config_t cfg;
    uint32_t nclients, m;
    size_t nparams;
    fm_members_t *members;
    uint8_t *live;
    agg_secagg_t *sa;
    double now;
    uint64_t version;
    /* the frames agg_secagg sent, FIFO */
    s_frame_t *q;
    size_t qhead, qn, qcap;
    int sent[FM_WIRE_SA_ABORT + 1];
    /* the members */
    s_sim_t sim[S_MAXSIM];
    uint32_t nsim;
    uint64_t cohorts[S_MAXCOH];
    uint32_t ncohorts;
    s_behav_t plan[S_MAXCOH][FM_SA_MAX_K + 1]; /* by cohort order and index */
    float **delta;                             /* per client, nparams */
    /* the sums */
    int nsums;
    uint64_t sum_cohort[S_MAXCOH];
    uint32_t sum_survivors[S_MAXCOH];
    uint64_t sum_mv[S_MAXCOH];
    double *sum_dec[S_MAXCOH];
    /* observer */
    uint32_t nobs;
    s_sim_t *cur; /* the member whose frame is being fed */
    s_after_fn after;
    void *after_arg;
    fm_wire_buf_t out;
    s_dec_t *d;
    /* curve (test_identity): the keys of trainers t-0.., and a member whose frames carry
     * another trainer's key (index `forge`, 0: none) */
    fm_sec_t *sec;
    char (*pub)[41];
    uint32_t forge;
};

/* The key a member's frames arrive with under curve: its trainer's, or (forged) the next
 * trainer's; NULL without curve. */
static const char *s_uid(const s_h_t *h, const s_sim_t *s)
{
    if (!h->sec)
        return NULL;
    uint32_t tr = s->client / S_CLIENTS_PER_TRAINER;
    if (h->forge && s->index == h->forge)
        tr = (tr + 1) % (h->nclients / S_CLIENTS_PER_TRAINER);
    return h->pub[tr];
}

static int s_setup(void **state)
{
    (void)state;
    return fm_sa_crypto_init() == 0 ? 0 : -1;
}

/* ---- the harness ------------------------------------------------------------------------ */

static void s_send(void *arg, const void *frame, size_t len)
{
    s_h_t *h = arg;
    if (h->qn == h->qcap) {
        h->qcap = h->qcap ? 2 * h->qcap : 64;
        h->q = realloc(h->q, h->qcap * sizeof *h->q);
        assert_non_null(h->q);
    }
    h->q[h->qn++] = (s_frame_t){fm_tu_exact(frame, len), len};
}

static void s_sum(void *arg, const agg_secagg_sum_t *sum)
{
    s_h_t *h = arg;
    assert_true(h->nsums < S_MAXCOH);
    assert_int_equal(sum->m, h->m);
    int i = h->nsums++;
    h->sum_cohort[i] = sum->cohort;
    h->sum_survivors[i] = sum->survivors;
    h->sum_mv[i] = sum->mv;
    h->sum_dec[i] = fm_tu_alloc(sum->m, sizeof(double));
    memcpy(h->sum_dec[i], sum->decoded, sum->m * sizeof(double));
}

/* Chi-square statistic of the byte frequencies of n bytes (255 degrees of freedom). */
static double s_chi2(const void *p, size_t n)
{
    const uint8_t *b = p;
    double count[256] = {0};
    for (size_t i = 0; i < n; i++)
        count[b[i]]++;
    double e = (double)n / 256.0, x = 0;
    for (int i = 0; i < 256; i++)
        x += (count[i] - e) * (count[i] - e) / e;
    return x;
}

static void s_observe(void *arg, const uint32_t *y, uint32_t m)
{
    s_h_t *h = arg;
    assert_int_equal(m, h->m);
    assert_non_null(h->cur); /* only while a member's MASKED_UPDATE is fed */
    h->nobs++;
    h->cur->chi2 = s_chi2(y, (size_t)m * 4);
}

/* A harness: `nclients` clients (all live unless the caller changes h->live), trainers
 * "t-<c/2>" serving two each, K, t, C, mode, cohorts in flight; models of nparams floats.
 * Deltas are zero (the caller fills h->delta). */
static s_h_t *s_new(uint32_t nclients, uint32_t k, uint32_t t, double clip, int mode, int cohorts,
                    size_t nparams, uint32_t nlive)
{
    s_h_t *h = fm_tu_alloc(1, sizeof *h);
    h->d = fm_tu_alloc(1, sizeof *h->d);
    fm_cfg_defaults(&h->cfg);
    h->cfg.federation.mode = mode;
    h->cfg.federation.num_clients = (int)nclients;
    h->cfg.federation.clients_per_round = (int)k;
    h->cfg.federation.min_clients = 1;
    snprintf(h->cfg.trainer.clients, sizeof h->cfg.trainer.clients, "0-%u", nclients - 1);
    if (mode == FM_CFG_MODE_SYNC) {
        h->cfg.federation.aggregation_strategy = FM_CFG_STRATEGY_FEDAVG;
    } else {
        h->cfg.federation.aggregation_strategy = FM_CFG_STRATEGY_FEDBUFF;
        h->cfg.aggregator.buffer_k = (int)k;
    }
    h->cfg.aggregator.weight_by_samples = false;
    h->cfg.secagg.enabled = true;
    h->cfg.secagg.cohort_size = (int)k;
    h->cfg.secagg.threshold = (int)t;
    h->cfg.secagg.clip_norm = clip;
    h->cfg.secagg.cohorts = cohorts;
    h->cfg.secagg.keys_timeout_s = S_DL;
    h->cfg.secagg.shares_timeout_s = S_DL;
    h->cfg.secagg.train_timeout_s = S_DL;
    h->cfg.secagg.unmask_timeout_s = S_DL;
    fm_errmsg_t e = {{0}};
    if (fm_cfg_check(&h->cfg, &e) != 0)
        fail_msg("fm_cfg_check: %s", e.msg);
    h->nclients = nclients;
    h->nparams = nparams;
    h->m = (uint32_t)nparams + 1;
    h->version = 7;
    fm_members_limits_t lim = {.num_clients = nclients, .per_origin = FM_MEMBERS_MAX};
    h->members = fm_members_new(&lim);
    assert_non_null(h->members);
    /* the trainers serving the first nlive clients say HELLO */
    for (uint32_t c = 0; c < nlive; c += S_CLIENTS_PER_TRAINER) {
        fm_wire_member_t mb = {
            .pid = 100 + c,
            .client_first = c,
            .client_count = nlive - c < S_CLIENTS_PER_TRAINER ? nlive - c : S_CLIENTS_PER_TRAINER,
            .workers = 1,
            .seq = 1};
        snprintf(mb.trainer, sizeof mb.trainer, "t-%u", c / S_CLIENTS_PER_TRAINER);
        assert_int_equal(fm_members_apply(h->members, FM_WIRE_HELLO, &mb, NULL, 0, NULL),
                         FM_MEMBER_JOINED);
    }
    h->live = fm_tu_alloc(nclients, 1);
    assert_int_equal(fm_members_live_clients(h->members, nclients, h->live), nlive);
    h->delta = fm_tu_alloc(nclients, sizeof *h->delta);
    for (uint32_t c = 0; c < nclients; c++)
        h->delta[c] = fm_tu_floats(nparams);
    int err = 0;
    h->sa = agg_secagg_new(&h->cfg, nparams, s_send, s_sum, h, &err, &e);
    if (!h->sa)
        fail_msg("agg_secagg_new: %s (%d)", e.msg, err);
    agg_secagg_set_observer(h->sa, s_observe, h);
    return h;
}

static void s_free(s_h_t *h)
{
    agg_secagg_destroy(&h->sa);
    assert_null(h->sa);
    for (size_t i = h->qhead; i < h->qn; i++)
        free(h->q[i].data);
    free(h->q);
    for (uint32_t i = 0; i < h->nsim; i++) {
        fm_sa_member_destroy(&h->sim[i].m);
        free(h->sim[i].x);
    }
    for (uint32_t c = 0; c < h->nclients; c++)
        free(h->delta[c]);
    free(h->delta);
    for (int i = 0; i < h->nsums; i++)
        free(h->sum_dec[i]);
    free(h->live);
    fm_members_destroy(&h->members);
    fm_wire_buf_free(&h->out);
    free(h->d);
    free(h);
}

static const agg_secagg_counters_t *s_n(const s_h_t *h) { return agg_secagg_counters(h->sa); }

static s_sim_t *s_find(s_h_t *h, uint64_t cohort, uint32_t index)
{
    for (uint32_t i = 0; i < h->nsim; i++)
        if (h->sim[i].cohort == cohort && h->sim[i].index == index)
            return &h->sim[i];
    fail_msg("no member %u in cohort %016llx", index, (unsigned long long)cohort);
    return NULL;
}

static uint32_t s_cohort_ord(s_h_t *h, uint64_t cohort)
{
    for (uint32_t i = 0; i < h->ncohorts; i++)
        if (h->cohorts[i] == cohort)
            return i;
    assert_true(h->ncohorts < S_MAXCOH);
    h->cohorts[h->ncohorts] = cohort;
    return h->ncohorts++;
}

/* Feed the frame h->out (sent by member s) to the aggregator as an exact copy. */
static void s_reply(s_h_t *h, s_sim_t *s, fm_wire_type_t type, int rc)
{
    assert_int_equal(rc, 0);
    unsigned char *f = fm_tu_exact(h->out.data, h->out.len);
    size_t len = h->out.len;
    h->cur = s;
    agg_secagg_frame(h->sa, type, f, len, h->sec, s_uid(h, s), h->now);
    h->cur = NULL;
    if (h->after)
        h->after(h, s, type, f, len);
    free(f);
}

/* Feed raw bytes as a member message of `type` (the test's forged frames). */
static void s_feed(s_h_t *h, fm_wire_type_t type, const void *f, size_t len)
{
    unsigned char *c = fm_tu_exact(f, len);
    agg_secagg_frame(h->sa, type, c, len, NULL, NULL, h->now);
    free(c);
}

/* Member s uploads: encode its client's delta (w = 1), mask, send. */
static void s_upload(s_h_t *h, s_sim_t *s)
{
    fm_errmsg_t e = {{0}};
    fm_sa_codec_t codec = {s->p.k, s->p.clip, s->p.scale_bits};
    uint32_t m = s->p.m;
    s->x = fm_tu_alloc(m, sizeof *s->x);
    uint32_t *y = fm_tu_alloc(m, sizeof *y);
    fm_tu_ok(fm_sa_codec_encode(&codec, h->delta[s->client], m - 1, 1.0, NULL, s->x, &e), &e);
    fm_sa_masked_t mk;
    assert_int_equal(fm_sa_member_mask(s->m, s->x, y, m, &mk, &e), FM_SA_OK);
    if (s->b == B_UNMASKED)
        mk.y = s->x;
    s->uploaded = 1;
    s_reply(h, s, FM_WIRE_SA_MASKED, fm_wire_encode_sa_masked(&mk, &h->out));
    free(y);
}

/* One frame the aggregator sent: decode it and let its member act. */
static void s_deliver(s_h_t *h, const unsigned char *f, size_t len)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t type = FM_WIRE_NONE;
    fm_tu_ok(fm_wire_peek(f, len, &type, &e), &e);
    assert_true(type >= FM_WIRE_SA_INVITE && type <= FM_WIRE_SA_ABORT);
    h->sent[type]++;
    s_dec_t *d = h->d;
    s_sim_t *s = NULL;
    switch (type) {
    case FM_WIRE_SA_INVITE: {
        fm_tu_ok(fm_wire_decode_sa_invite(f, len, &d->inv, &e), &e);
        const fm_wire_sa_invite_t *inv = &d->inv;
        assert_true(inv->client < h->nclients);
        assert_true(h->live[inv->client]);
        char want[FM_WIRE_STR_MAX + 1];
        snprintf(want, sizeof want, "t-%u", inv->client / S_CLIENTS_PER_TRAINER);
        assert_string_equal(inv->trainer, want);
        assert_int_equal(inv->version, h->version);
        assert_int_equal(inv->round,
                         h->cfg.federation.mode == FM_CFG_MODE_SYNC ? h->version + 1 : 0);
        assert_int_equal(inv->p.m, h->m);
        assert_true(inv->deadlines.keys == S_DL && inv->deadlines.unmask == S_DL);
        assert_true(h->nsim < S_MAXSIM);
        for (uint32_t i = 0; i < h->nsim; i++) /* one invite per (cohort, index) */
            assert_false(h->sim[i].cohort == inv->p.cohort && h->sim[i].index == inv->index);
        s = &h->sim[h->nsim++];
        memset(s, 0, sizeof *s);
        s->cohort = inv->p.cohort;
        s->index = inv->index;
        s->client = inv->client;
        s->p = inv->p;
        s->chi2 = -1;
        s->ord = s_cohort_ord(h, s->cohort);
        s->b = h->plan[s->ord][s->index];
        s->got[type]++;
        fm_sa_advertise_t adv;
        int err = 0;
        s->m = fm_sa_member_new(&s->p, s->index, &adv, &err, &e);
        assert_non_null(s->m);
        if (s->b != B_NO_KEYS)
            s_reply(h, s, FM_WIRE_SA_KEYS, fm_wire_encode_sa_keys(&adv, &h->out));
        return;
    }
    case FM_WIRE_SA_KEY_LIST: {
        fm_tu_ok(fm_wire_decode_sa_key_list(f, len, &d->kl, &e), &e);
        s = s_find(h, d->kl.msg.cohort, d->kl.to);
        s->got[type]++;
        assert_int_equal(s->got[type], 1);
        assert_true(s->b != B_NO_KEYS); /* only U1 gets the list */
        if (s->b == B_NO_SHARES)
            return;
        fm_sa_shares_t sh;
        assert_int_equal(fm_sa_member_on_key_list(s->m, &d->kl.msg, &sh, &e), FM_SA_OK);
        s_reply(h, s, FM_WIRE_SA_SHARES, fm_wire_encode_sa_shares(&sh, &h->out));
        return;
    }
    case FM_WIRE_SA_SHARES_FWD:
        fm_tu_ok(fm_wire_decode_sa_shares_fwd(f, len, &d->fwd, &e), &e);
        s = s_find(h, d->fwd.msg.cohort, d->fwd.msg.to);
        s->got[type]++;
        assert_int_equal(s->got[type], 1);
        assert_true(s->b != B_NO_KEYS && s->b != B_NO_SHARES); /* only U2 */
        assert_int_equal(fm_sa_member_on_shares_fwd(s->m, &d->fwd.msg, &e), FM_SA_OK);
        if (s->b != B_NO_UPLOAD && s->b != B_LATE)
            s_upload(h, s);
        return;
    case FM_WIRE_SA_UNMASK_REQ: {
        fm_tu_ok(fm_wire_decode_sa_unmask_req(f, len, &d->ur, &e), &e);
        s = s_find(h, d->ur.msg.cohort, d->ur.to);
        s->got[type]++;
        assert_int_equal(s->got[type], 1);
        assert_true(s->uploaded); /* only U3 */
        if (s->b == B_NO_UNMASK)
            return;
        fm_sa_unmask_shares_t us;
        assert_int_equal(fm_sa_member_on_unmask_req(s->m, &d->ur.msg, &us, &e), FM_SA_OK);
        s->answered = 1;
        s_reply(h, s, FM_WIRE_SA_UNMASK_SHARES, fm_wire_encode_sa_unmask_shares(&us, &h->out));
        return;
    }
    case FM_WIRE_SA_DONE:
    case FM_WIRE_SA_ABORT: {
        fm_wire_type_t t2 = FM_WIRE_NONE;
        fm_tu_ok(fm_wire_decode_sa_end(f, len, &t2, &d->end, &e), &e);
        assert_int_equal(t2, type);
        s = s_find(h, d->end.cohort, d->end.to);
        s->got[type]++;
        assert_int_equal(s->got[FM_WIRE_SA_DONE] + s->got[FM_WIRE_SA_ABORT], 1);
        assert_int_equal(fm_sa_member_on_done(s->m, d->end.cohort, type == FM_WIRE_SA_ABORT, &e),
                         FM_SA_OK);
        assert_true(fm_sa_member_wiped(s->m));
        return;
    }
    default: fail_msg("agg_secagg sent a frame of type %s", fm_wire_type_name(type));
    }
}

/* Deliver every queued frame (and whatever they cause) in order. */
static void s_pump(s_h_t *h)
{
    while (h->qhead < h->qn) {
        s_frame_t f = h->q[h->qhead++];
        s_deliver(h, f.data, f.len);
        free(f.data);
    }
    h->qhead = h->qn = 0;
}

/* Tick at h->now (forming cohorts unless `finished`), then deliver. */
static void s_tick(s_h_t *h, int finished)
{
    agg_secagg_tick(h->sa, h->version, finished, h->live, h->members, h->now);
    s_pump(h);
}

/* The reference: sum over the members of `cohort` that uploaded of clip(delta), in double,
 * compared with sum number `which`, within n/(2S) per coordinate; the weight exactly n.
 * Counts clipped and unclipped members into *clipped / *unclipped (may be NULL). */
static void s_check_sum(s_h_t *h, int which, uint64_t cohort, int *clipped, int *unclipped)
{
    assert_true(which < h->nsums);
    assert_true(h->sum_cohort[which] == cohort);
    assert_int_equal(h->sum_mv[which], h->version);
    double *ref = fm_tu_alloc(h->nparams, sizeof(double));
    uint32_t n = 0;
    fm_sa_params_t p = {0};
    for (uint32_t i = 0; i < h->nsim; i++) {
        const s_sim_t *s = &h->sim[i];
        if (s->cohort != cohort || !s->uploaded)
            continue;
        p = s->p;
        n++;
        const float *dl = h->delta[s->client];
        double norm = 0;
        for (size_t j = 0; j < h->nparams; j++)
            norm += (double)dl[j] * dl[j];
        norm = sqrt(norm);
        double f = norm > p.clip ? p.clip / norm : 1.0;
        if (f < 1 && clipped)
            (*clipped)++;
        if (f == 1 && unclipped)
            (*unclipped)++;
        for (size_t j = 0; j < h->nparams; j++)
            ref[j] += f * dl[j];
    }
    assert_int_equal(h->sum_survivors[which], n);
    const double *got = h->sum_dec[which];
    double tol = n / (2.0 * ldexp(1.0, p.scale_bits)) * (1 + 1e-9) + 1e-12, worst = 0;
    for (size_t j = 0; j < h->nparams; j++) {
        double err = fabs(got[j] - ref[j]);
        worst = err > worst ? err : worst;
    }
    FM_TU_ASSERT_LE(worst, tol, "cohort %016llx: decoded sum off the reference\n",
                    (unsigned long long)cohort);
    assert_true(got[h->nparams] == (double)n); /* the weight coordinate: survivors exactly */
    free(ref);
}

/* Gaussian deltas whose norms are spread around C: norm_c in [0.3, 2.5] C. */
static void s_random_deltas(s_h_t *h, fm_rng_t *rng, double clip)
{
    for (uint32_t c = 0; c < h->nclients; c++) {
        double target = clip * (0.3 + 2.2 * fm_rng_uniform(rng));
        fm_tu_normal(rng, h->delta[c], h->nparams, target / sqrt((double)h->nparams));
    }
}

/* ---- 1. exact sum ----------------------------------------------------------------------- */

static void test_exact_sum(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1301, 0);
    int clipped = 0, unclipped = 0;
    for (int it = 0; it < 8; it++) {
        uint32_t k = 2 + (uint32_t)fm_rng_below(&rng, 11); /* 2..12 */
        uint32_t t = k / 2 + 1 + (uint32_t)fm_rng_below(&rng, k - k / 2);
        double clip = 0.5 + 3.5 * fm_rng_uniform(&rng);
        uint32_t nclients = k + (uint32_t)fm_rng_below(&rng, 3);
        int mode = it % 3 == 2 ? FM_CFG_MODE_SYNC : FM_CFG_MODE_ASYNC;
        s_h_t *h = s_new(nclients, k, t, clip, mode, 1, 1000, nclients);
        s_random_deltas(h, &rng, clip);
        h->now = 100;
        s_tick(h, 0);
        assert_int_equal(h->ncohorts, 1);
        assert_int_equal(h->sent[FM_WIRE_SA_INVITE], k);
        assert_int_equal(h->nsums, 1); /* every member honest: done within the pump */
        s_check_sum(h, 0, h->cohorts[0], &clipped, &unclipped);
        /* every member got each message once and ended DONE, wiped */
        for (uint32_t i = 0; i < h->nsim; i++) {
            const s_sim_t *s = &h->sim[i];
            assert_int_equal(s->got[FM_WIRE_SA_KEY_LIST], 1);
            assert_int_equal(s->got[FM_WIRE_SA_SHARES_FWD], 1);
            assert_int_equal(s->got[FM_WIRE_SA_UNMASK_REQ], 1);
            assert_int_equal(s->got[FM_WIRE_SA_DONE], 1);
            assert_int_equal(fm_sa_member_state(s->m), FM_SA_MEMBER_DONE);
        }
        const agg_secagg_counters_t *n = s_n(h);
        assert_int_equal(n->formed, 1);
        assert_int_equal(n->completed, 1);
        assert_int_equal(n->aborted, 0);
        assert_int_equal(n->in_flight, 0);
        assert_int_equal(n->uploads, k);
        assert_int_equal(n->applied_members, k);
        assert_int_equal(n->refused, 0);
        for (int ph = 0; ph < 4; ph++)
            assert_int_equal(n->dropped[ph], 0);
        assert_int_equal(h->nobs, k);
        /* later ticks (past every deadline) never hand the sum over again */
        for (int j = 0; j < 5; j++) {
            h->now += 3 * S_DL;
            s_tick(h, 1);
        }
        assert_int_equal(h->nsums, 1);
        assert_int_equal(s_n(h)->formed, 1);
        s_free(h);
    }
    print_message("exact sum: %d clipped and %d unclipped members\n", clipped, unclipped);
    assert_true(clipped > 0 && unclipped > 0);
}

/* ---- 2. a dropout at every phase -------------------------------------------------------- */

/* K = 10, t = 6: member 2 never advertises, 4 never shares, 6 never uploads, 8 never answers
 * the UNMASK_REQ; the deadlines close each phase. */
static s_h_t *s_run_drops(fm_rng_t *rng)
{
    s_h_t *h = s_new(10, 10, 6, 1.0, FM_CFG_MODE_ASYNC, 1, 1000, 10);
    s_random_deltas(h, rng, 1.0);
    h->plan[0][2] = B_NO_KEYS;
    h->plan[0][4] = B_NO_SHARES;
    h->plan[0][6] = B_NO_UPLOAD;
    h->plan[0][8] = B_NO_UNMASK;
    h->now = 0;
    s_tick(h, 0);
    assert_int_equal(h->ncohorts, 1);
    uint64_t cohort = h->cohorts[0];
    const agg_secagg_counters_t *n = s_n(h);
    uint64_t want[4] = {0, 0, 0, 0};
    for (int ph = 0; ph < 4; ph++) {
        /* each phase waits for its straggler */
        assert_int_equal(h->nsums, 0);
        assert_int_equal(n->in_flight, 1);
        assert_memory_equal(n->dropped, want, sizeof want);
        h->now += S_DL - 1;
        s_tick(h, 1); /* before the deadline: nothing */
        assert_memory_equal(n->dropped, want, sizeof want);
        h->now += 2;
        s_tick(h, 1); /* past it: the phase closes with one member dropped */
        want[ph] = 1;
        assert_memory_equal(n->dropped, want, sizeof want);
    }
    assert_int_equal(h->nsums, 1);
    assert_int_equal(n->completed, 1);
    assert_int_equal(n->in_flight, 0);
    assert_int_equal(n->uploads, 7);
    assert_int_equal(n->applied_members, 7);
    assert_int_equal(h->nobs, 7);
    assert_int_equal(n->refused, 0);
    /* who got what: U1 = all but 2, U2 = all but 2, 4; U3 = all but 2, 4, 6 */
    for (uint32_t i = 1; i <= 10; i++) {
        const s_sim_t *s = s_find(h, cohort, i);
        assert_int_equal(s->got[FM_WIRE_SA_KEY_LIST], i != 2);
        assert_int_equal(s->got[FM_WIRE_SA_SHARES_FWD], i != 2 && i != 4);
        assert_int_equal(s->got[FM_WIRE_SA_UNMASK_REQ], i != 2 && i != 4 && i != 6);
        assert_int_equal(s->got[FM_WIRE_SA_DONE], 1);
        assert_int_equal(s->uploaded, i != 2 && i != 4 && i != 6);
        assert_true(fm_sa_member_wiped(s->m));
    }
    return h;
}

static void test_dropouts(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1302, 0);
    s_h_t *h = s_run_drops(&rng);
    /* the sum over U3 = {1,3,5,7,8,9,10}: member 6's masks (in D) were removed, member 8's
     * update (in U3, silent at unmasking) is in */
    s_check_sum(h, 0, h->cohorts[0], NULL, NULL);
    s_free(h);
}

/* ---- 3. below t: abort, nothing released, clients free again ---------------------------- */

static void test_below_threshold(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1303, 0);
    static const s_behav_t drop[4] = {B_NO_KEYS, B_NO_SHARES, B_NO_UPLOAD, B_NO_UNMASK};
    enum { K = 6, T = 4 };
    for (int ph = 0; ph < 4; ph++) {
        s_h_t *h = s_new(K, K, T, 1.0, FM_CFG_MODE_ASYNC, 2, 200, K);
        s_random_deltas(h, &rng, 1.0);
        for (uint32_t i = 1; i <= K - T + 1; i++) /* K - t + 1 drop: t - 1 remain */
            h->plan[0][2 * i - 1] = drop[ph];     /* members 1, 3, 5 */
        h->now = 0;
        s_tick(h, 0);
        uint64_t first = h->cohorts[0];
        const agg_secagg_counters_t *n = s_n(h);
        /* the phases before ph closed at once (every message in); ph waits for its deadline */
        assert_int_equal(n->aborted, 0);
        h->now += S_DL - 1;
        s_tick(h, 1); /* finished: nothing new forms */
        assert_int_equal(n->aborted, 0);
        h->now += 2;
        s_tick(h, 1);
        /* aborted at phase ph: no sum, ABORT to every member, none DONE */
        assert_int_equal(n->aborted, 1);
        assert_int_equal(n->completed, 0);
        assert_int_equal(n->in_flight, 0);
        assert_int_equal(n->dropped[ph], K - T + 1);
        assert_int_equal(h->nsums, 0);
        assert_int_equal(h->ncohorts, 1);
        assert_int_equal(h->sent[FM_WIRE_SA_ABORT], K);
        assert_int_equal(h->sent[FM_WIRE_SA_DONE], 0);
        for (uint32_t i = 1; i <= K; i++) {
            const s_sim_t *s = s_find(h, first, i);
            assert_int_equal(s->got[FM_WIRE_SA_ABORT], 1);
            assert_int_equal(fm_sa_member_state(s->m), FM_SA_MEMBER_ABORTED);
            assert_true(fm_sa_member_wiped(s->m));
        }
        /* the next tick forms a new cohort of the same (all K) clients; honest, it completes */
        h->now += 1;
        s_tick(h, 0);
        assert_int_equal(n->formed, 2);
        assert_int_equal(h->ncohorts, 2);
        uint8_t seen[K] = {0};
        for (uint32_t i = 1; i <= K; i++)
            seen[s_find(h, h->cohorts[1], i)->client]++;
        for (uint32_t c = 0; c < K; c++)
            assert_int_equal(seen[c], 1);
        assert_int_equal(h->nsums, 1);
        s_check_sum(h, 0, h->cohorts[1], NULL, NULL);
        assert_int_equal(n->completed, 1);
        assert_int_equal(n->aborted, 1);
        s_free(h);
    }
}

/* ---- 4. no individual update in the clear ----------------------------------------------- */

static void test_uploads_masked(void **state)
{
    (void)state;
    enum { K = 5, T = 3, NP = 8191 }; /* m = 8192 words: 32 KiB per upload */
    s_h_t *h = s_new(K, K, T, 1.0, FM_CFG_MODE_ASYNC, 1, NP, K);
    /* cohort 1: every delta zero (an unmasked upload would be all zero bytes but one word) */
    h->now = 0;
    s_tick(h, 0);
    assert_int_equal(h->nsums, 1);
    assert_int_equal(h->nobs, K);
    assert_int_equal(s_n(h)->uploads, K);
    for (uint32_t i = 1; i <= K; i++) {
        const s_sim_t *s = s_find(h, h->cohorts[0], i);
        print_message("cohort 1, member %u (x = 0): chi-square %.1f\n", i, s->chi2);
        assert_true(s->chi2 >= 0 && s->chi2 < S_CHI2_CRIT);
    }
    s_check_sum(h, 0, h->cohorts[0], NULL, NULL);
    for (size_t j = 0; j < NP; j++)
        assert_true(h->sum_dec[0][j] == 0);
    /* cohort 2: structured deltas (a small ramp), member 3 skips its masking */
    for (uint32_t c = 0; c < K; c++)
        for (size_t j = 0; j < NP; j++)
            h->delta[c][j] = (float)((int)(j % 16) - 8) / 4096.0f;
    h->plan[1][3] = B_UNMASKED;
    h->now += 1;
    s_tick(h, 0);
    assert_int_equal(h->ncohorts, 2);
    assert_int_equal(h->nobs, 2 * K);
    for (uint32_t i = 1; i <= K; i++) {
        const s_sim_t *s = s_find(h, h->cohorts[1], i);
        print_message("cohort 2, member %u%s: chi-square %.1f\n", i, i == 3 ? " (unmasked)" : "",
                      s->chi2);
        if (i == 3)
            assert_true(s->chi2 > S_CHI2_CRIT); /* the statistic sees an unmasked upload */
        else
            assert_true(s->chi2 >= 0 && s->chi2 < S_CHI2_CRIT);
    }
    s_free(h);
}

/* ---- 5. replayed, reordered, stray, malformed ------------------------------------------- */

typedef struct {
    int fired_keys, fired_masked, fired_unmask;
    uint64_t refused_before;
} s_stray_t;

static void s_expect_refused(s_h_t *h, uint64_t *before)
{
    assert_int_equal(s_n(h)->refused, *before + 1);
    (*before)++;
}

/* After member 1 of the first cohort acts, throw in the bad messages. */
static void s_after_stray(s_h_t *h, s_sim_t *s, fm_wire_type_t type, const unsigned char *f,
                          size_t len)
{
    s_stray_t *st = h->after_arg;
    fm_wire_buf_t b = FM_WIRE_BUF_INIT;
    if (s->index != 1 || s->ord != 0)
        return;
    if (type == FM_WIRE_SA_KEYS && !st->fired_keys) {
        st->fired_keys = 1;
        st->refused_before = s_n(h)->refused;
        /* a second ADVERTISE_KEYS from the same member */
        s_feed(h, type, f, len);
        s_expect_refused(h, &st->refused_before);
        /* ADVERTISE_KEYS for a cohort not in flight */
        fm_sa_advertise_t adv = {.cohort = s->cohort ^ 0x5a5a, .from = 1};
        memset(adv.c_pk, 7, sizeof adv.c_pk);
        memset(adv.s_pk, 9, sizeof adv.s_pk);
        assert_int_equal(fm_wire_encode_sa_keys(&adv, &b), 0);
        s_feed(h, FM_WIRE_SA_KEYS, b.data, b.len);
        s_expect_refused(h, &st->refused_before);
        /* a MASKED_UPDATE during KEYS (before any SHARES_FWD) */
        uint32_t *y = fm_tu_alloc(h->m, sizeof *y);
        for (uint32_t i = 0; i < h->m; i++)
            y[i] = i * 2654435761u;
        fm_sa_masked_t mk = {.cohort = s->cohort, .from = 1, .m = h->m, .y = y};
        assert_int_equal(fm_wire_encode_sa_masked(&mk, &b), 0);
        s_feed(h, FM_WIRE_SA_MASKED, b.data, b.len);
        s_expect_refused(h, &st->refused_before);
        /* a malformed frame: the keys frame cut short, and bytes that are no msgpack */
        s_feed(h, FM_WIRE_SA_KEYS, f, len - 5);
        s_expect_refused(h, &st->refused_before);
        s_feed(h, FM_WIRE_SA_SHARES, "\xc1\xc1\xc1\xc1", 4);
        s_expect_refused(h, &st->refused_before);
        /* an UNMASK_SHARES before its phase */
        fm_sa_share_entry_t se = {.of = 1, .kind = FM_SA_SHARE_B};
        fm_sa_unmask_shares_t us = {.cohort = s->cohort, .from = 1, .n = 1, .shares = &se};
        assert_int_equal(fm_wire_encode_sa_unmask_shares(&us, &b), 0);
        s_feed(h, FM_WIRE_SA_UNMASK_SHARES, b.data, b.len);
        s_expect_refused(h, &st->refused_before);
        free(y);
    } else if (type == FM_WIRE_SA_MASKED && !st->fired_masked) {
        st->fired_masked = 1;
        /* the accepted upload again: refused, not added twice */
        s_feed(h, type, f, len);
        s_expect_refused(h, &st->refused_before);
        /* an upload of the wrong length, from a member that has not uploaded yet */
        uint32_t *y = fm_tu_alloc(h->m, sizeof *y);
        fm_sa_masked_t mk = {.cohort = s->cohort, .from = 2, .m = h->m - 1, .y = y};
        assert_int_equal(fm_wire_encode_sa_masked(&mk, &b), 0);
        s_feed(h, FM_WIRE_SA_MASKED, b.data, b.len);
        s_expect_refused(h, &st->refused_before);
        /* a sender outside the cohort's K */
        mk.m = h->m;
        mk.from = (uint32_t)h->cfg.secagg.cohort_size + 1;
        assert_int_equal(fm_wire_encode_sa_masked(&mk, &b), 0);
        s_feed(h, FM_WIRE_SA_MASKED, b.data, b.len);
        s_expect_refused(h, &st->refused_before);
        free(y);
    } else if (type == FM_WIRE_SA_UNMASK_SHARES && !st->fired_unmask) {
        st->fired_unmask = 1;
        s_feed(h, type, f, len); /* replayed */
        s_expect_refused(h, &st->refused_before);
    }
    fm_wire_buf_free(&b);
}

static void test_stray_messages(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1305, 0);
    enum { K = 5, T = 3 };
    s_h_t *h = s_new(K, K, T, 1.0, FM_CFG_MODE_ASYNC, 1, 300, K);
    s_random_deltas(h, &rng, 1.0);
    s_stray_t st = {0};
    h->after = s_after_stray;
    h->after_arg = &st;
    h->now = 0;
    s_tick(h, 0);
    assert_true(st.fired_keys && st.fired_masked && st.fired_unmask);
    const agg_secagg_counters_t *n = s_n(h);
    assert_int_equal(n->refused, 10);
    assert_int_equal(n->completed, 1);
    assert_int_equal(n->aborted, 0);
    assert_int_equal(n->uploads, K); /* the replay was not added */
    assert_int_equal(h->nobs, K);
    assert_int_equal(h->nsums, 1);
    s_check_sum(h, 0, h->cohorts[0], NULL, NULL);
    /* after the end: every message of the finished cohort is a stray */
    fm_sa_advertise_t adv = {.cohort = h->cohorts[0], .from = 3};
    fm_wire_buf_t b = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &b), 0);
    s_feed(h, FM_WIRE_SA_KEYS, b.data, b.len);
    assert_int_equal(n->refused, 11);
    assert_int_equal(h->nsums, 1);
    fm_wire_buf_free(&b);
    s_free(h);
}

/* A late upload: member 2's MASKED_UPDATE arrives after the training deadline, with no tick
 * in between. The aggregator applies the deadline first: the upload is refused, member 2 is
 * dropped (in D, its masks removed), the UNMASK_REQ goes to the others only. */
static void test_late_upload(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1306, 0);
    enum { K = 5, T = 3 };
    s_h_t *h = s_new(K, K, T, 1.0, FM_CFG_MODE_ASYNC, 1, 300, K);
    s_random_deltas(h, &rng, 1.0);
    h->plan[0][2] = B_LATE;
    h->now = 0;
    s_tick(h, 0);
    const agg_secagg_counters_t *n = s_n(h);
    assert_int_equal(n->uploads, K - 1);
    s_sim_t *late = s_find(h, h->cohorts[0], 2);
    h->now += S_DL + 1;
    s_upload(h, late); /* no tick before it */
    late->uploaded = 0;
    assert_int_equal(n->refused, 1);
    assert_int_equal(n->uploads, K - 1);
    assert_int_equal(n->dropped[2], 1);
    assert_int_equal(h->nobs, K - 1);
    assert_int_equal(late->chi2, -1); /* never observed */
    s_pump(h);                        /* the UNMASK_REQ, the answers, DONE */
    assert_int_equal(late->got[FM_WIRE_SA_UNMASK_REQ], 0);
    assert_int_equal(h->nsums, 1);
    s_check_sum(h, 0, h->cohorts[0], NULL, NULL);
    assert_int_equal(h->sum_survivors[0], K - 1);
    s_free(h);
}

/* ---- 6. cohorts in flight ---------------------------------------------------------------- */

/* The invites queued since the last pump: their cohorts and clients (without delivering). */
static uint32_t s_queued(const s_h_t *h, fm_wire_type_t want, uint64_t *cohort, uint32_t *client,
                         s_dec_t *d)
{
    uint32_t n = 0;
    for (size_t i = h->qhead; i < h->qn; i++) {
        fm_errmsg_t e = {{0}};
        fm_wire_type_t type = FM_WIRE_NONE;
        fm_tu_ok(fm_wire_peek(h->q[i].data, h->q[i].len, &type, &e), &e);
        if (type != want)
            continue;
        if (type == FM_WIRE_SA_INVITE) {
            fm_tu_ok(fm_wire_decode_sa_invite(h->q[i].data, h->q[i].len, &d->inv, &e), &e);
            cohort[n] = d->inv.p.cohort;
            client[n] = d->inv.client;
        } else {
            fm_wire_type_t t2;
            fm_tu_ok(fm_wire_decode_sa_end(h->q[i].data, h->q[i].len, &t2, &d->end, &e), &e);
            cohort[n] = d->end.cohort;
            client[n] = d->end.to;
        }
        n++;
    }
    return n;
}

static void test_in_flight(void **state)
{
    (void)state;
    enum { K = 3, T = 2 };
    s_dec_t *d = fm_tu_alloc(1, sizeof *d);
    uint64_t co[64];
    uint32_t cl[64];
    /* async, 2 in flight, 2K clients: two cohorts at once, disjoint, covering every client */
    s_h_t *h = s_new(2 * K, K, T, 1.0, FM_CFG_MODE_ASYNC, 2, 50, 2 * K);
    h->now = 0;
    agg_secagg_tick(h->sa, h->version, 0, h->live, h->members, h->now);
    assert_int_equal(s_n(h)->formed, 2);
    assert_int_equal(s_n(h)->in_flight, 2);
    assert_int_equal(s_queued(h, FM_WIRE_SA_INVITE, co, cl, d), 2 * K);
    uint8_t seen[2 * K] = {0};
    uint32_t in_first = 0;
    for (uint32_t i = 0; i < 2 * K; i++) {
        seen[cl[i]]++;
        in_first += co[i] == co[0];
    }
    assert_int_equal(in_first, K);
    for (uint32_t c = 0; c < 2 * K; c++)
        assert_int_equal(seen[c], 1);
    /* a third cannot form: no idle client left; more ticks add nothing */
    agg_secagg_tick(h->sa, h->version, 0, h->live, h->members, h->now + 1);
    assert_int_equal(s_n(h)->formed, 2);
    /* abort both: COHORT_ABORT to each of the 2K members, no sum */
    size_t before = h->qn;
    agg_secagg_abort_all(h->sa, "test shutdown");
    assert_int_equal(s_n(h)->aborted, 2);
    assert_int_equal(s_n(h)->in_flight, 0);
    for (int ph = 0; ph < 4; ph++) /* a shutdown is not a member's drop */
        assert_int_equal(s_n(h)->dropped[ph], 0);
    assert_int_equal(h->qn - before, 2 * K);
    assert_int_equal(s_queued(h, FM_WIRE_SA_ABORT, co, cl, d), 2 * K);
    s_pump(h); /* members join, advertise (to cohorts gone: refused), then get the aborts */
    assert_int_equal(h->nsums, 0);
    assert_int_equal(h->sent[FM_WIRE_SA_ABORT], 2 * K);
    for (uint32_t i = 0; i < h->nsim; i++) {
        assert_int_equal(h->sim[i].got[FM_WIRE_SA_ABORT], 1);
        assert_true(fm_sa_member_wiped(h->sim[i].m));
    }
    assert_int_equal(s_n(h)->refused, 2 * K); /* their keys came after the abort */
    /* finished: nothing forms although every client is idle */
    h->now = 50;
    s_tick(h, 1);
    assert_int_equal(s_n(h)->formed, 2);
    assert_int_equal(h->sent[FM_WIRE_SA_INVITE], 2 * K);
    /* not finished: both form again and complete */
    s_tick(h, 0);
    assert_int_equal(s_n(h)->formed, 4);
    assert_int_equal(s_n(h)->completed, 2);
    assert_int_equal(h->nsums, 2);
    s_free(h);

    /* fewer than K idle live clients: K - 1 live of 2K: nothing forms, nothing sent */
    h = s_new(2 * K, K, T, 1.0, FM_CFG_MODE_ASYNC, 2, 50, K - 1);
    s_tick(h, 0);
    assert_int_equal(s_n(h)->formed, 0);
    assert_int_equal(h->sent[FM_WIRE_SA_INVITE], 0);
    s_free(h);
    /* 2K - 1 live: only one cohort (the second would lack a client) */
    h = s_new(2 * K, K, T, 1.0, FM_CFG_MODE_ASYNC, 2, 50, 2 * K - 1);
    agg_secagg_tick(h->sa, h->version, 0, h->live, h->members, 0);
    assert_int_equal(s_n(h)->formed, 1);
    assert_int_equal(s_queued(h, FM_WIRE_SA_INVITE, co, cl, d), K);
    for (uint32_t i = 0; i < K; i++)
        assert_true(cl[i] < 2 * K - 1); /* only live clients */
    s_free(h);
    /* sync: one cohort at a time (its round = version + 1), even with clients to spare */
    h = s_new(2 * K, K, T, 1.0, FM_CFG_MODE_SYNC, 2, 50, 2 * K);
    agg_secagg_tick(h->sa, h->version, 0, h->live, h->members, 0);
    assert_int_equal(s_n(h)->formed, 1);
    assert_int_equal(s_n(h)->in_flight, 1);
    s_pump(h); /* completes; checks the invites' round */
    assert_int_equal(h->nsums, 1);
    s_free(h);
    free(d);
}

/* ---- 7. stats ----------------------------------------------------------------------------- */

static void test_stats(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 1307, 0);
    s_h_t *h = s_run_drops(&rng); /* one completed, dropped 1 per phase */
    /* a stray; a cohort that aborts at the shares deadline (member 1 silent at keys, 2..5
     * at shares: |U2| = 5 < t = 6); one that completes without 3 unmasking answers; one in
     * flight: dropped keys 1 + 1, shares 1 + 4, train 1, unmask 1 + 3 (all different) */
    fm_sa_advertise_t adv = {.cohort = 42, .from = 1};
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &h->out), 0);
    s_feed(h, FM_WIRE_SA_KEYS, h->out.data, h->out.len);
    h->plan[1][1] = B_NO_KEYS;
    for (uint32_t i = 2; i <= 5; i++)
        h->plan[1][i] = B_NO_SHARES;
    for (uint32_t i = 1; i <= 3; i++)
        h->plan[2][i] = B_NO_UNMASK;
    h->now += 1;
    s_tick(h, 0);
    for (int j = 0; j < 2; j++) {
        h->now += S_DL + 1;
        s_tick(h, 1);
    }
    assert_int_equal(s_n(h)->aborted, 1);
    s_tick(h, 0);
    h->now += S_DL + 1;
    s_tick(h, 1);
    assert_int_equal(h->nsums, 2);
    s_check_sum(h, 1, h->cohorts[2], NULL, NULL);
    h->now += 1;
    agg_secagg_tick(h->sa, h->version, 0, h->live, h->members, h->now);
    const agg_secagg_counters_t *n = s_n(h);
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    agg_secagg_stats(h->sa, &st);
    assert_true(st.secagg);
    assert_int_equal(st.secagg_formed, 4);
    assert_int_equal(st.secagg_completed, 2);
    assert_int_equal(st.secagg_aborted, 1);
    assert_int_equal(st.secagg_in_flight, 1);
    assert_int_equal(st.secagg_dropped_keys, 2);
    assert_int_equal(st.secagg_dropped_shares, 5);
    assert_int_equal(st.secagg_dropped_train, 1);
    assert_int_equal(st.secagg_dropped_unmask, 4);
    assert_int_equal(st.secagg_refused, 1);
    /* the same numbers as the counters */
    assert_int_equal(st.secagg_formed, n->formed);
    assert_int_equal(st.secagg_completed, n->completed);
    assert_int_equal(st.secagg_aborted, n->aborted);
    assert_int_equal(st.secagg_in_flight, n->in_flight);
    assert_int_equal(st.secagg_dropped_keys, n->dropped[0]);
    assert_int_equal(st.secagg_dropped_shares, n->dropped[1]);
    assert_int_equal(st.secagg_dropped_train, n->dropped[2]);
    assert_int_equal(st.secagg_dropped_unmask, n->dropped[3]);
    assert_int_equal(st.secagg_refused, n->refused);
    /* NULL: nothing written */
    fm_stats_t st2;
    memset(&st2, 0, sizeof st2);
    agg_secagg_stats(NULL, &st2);
    assert_false(st2.secagg);
    char line[512];
    agg_secagg_describe(h->sa, line, sizeof line);
    assert_non_null(strstr(line, "K = 10, threshold t = 6"));
    s_free(h);
}

/* [security] mode = curve: member 2's frames arrive with another trainer's key. Its
 * ADVERTISE_KEYS is refused (identity) as if it were silent: it is dropped at the keys
 * deadline and the other three complete the cohort (t = 3) with their exact sum. */
static void test_identity(void **state)
{
    (void)state;
    char dir[128], keys[192], allow[192], from[400], to[400];
    assert_int_equal(fm_proc_tmpdir(dir, sizeof dir), 0);
    snprintf(keys, sizeof keys, "%s/keys", dir);
    snprintf(allow, sizeof allow, "%s/allow", dir);
    assert_int_equal(mkdir(keys, 0700), 0);
    assert_int_equal(mkdir(allow, 0755), 0);
    fm_errmsg_t e = {{0}};
    fm_tu_ok(fm_sec_keygen(keys, "aggregator", "aggregator", NULL, NULL, &e), &e);
    s_h_t *h = s_new(8, 4, 3, 1.0, FM_CFG_MODE_ASYNC, 1, 64, 8);
    h->pub = fm_tu_alloc(4, sizeof *h->pub);
    for (uint32_t tr = 0; tr < 4; tr++) { /* t-<tr> enrolled for its two clients */
        char name[16], clients[32];
        snprintf(name, sizeof name, "t-%u", tr);
        snprintf(clients, sizeof clients, "%u-%u", 2 * tr, 2 * tr + 1);
        fm_tu_ok(fm_sec_keygen(keys, name, "trainer", clients, h->pub[tr], &e), &e);
        snprintf(from, sizeof from, "%s/%s.cert", keys, name);
        snprintf(to, sizeof to, "%s/%s.cert", allow, name);
        assert_int_equal(link(from, to), 0);
    }
    fm_config_t cfg = h->cfg;
    cfg.security.mode = FM_CFG_SECURITY_CURVE;
    snprintf(cfg.security.allow_dir, sizeof cfg.security.allow_dir, "%s", allow);
    snprintf(cfg.security.aggregator_cert, sizeof cfg.security.aggregator_cert,
             "%s/aggregator.cert", keys);
    int err = 0;
    h->sec = fm_sec_new(&cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e);
    if (!h->sec)
        fail_msg("fm_sec_new: %s", e.msg);
    fm_rng_t rng;
    fm_rng_seed(&rng, 77, 0);
    s_random_deltas(h, &rng, 1.0);
    h->forge = 2;
    h->now = 0;
    s_tick(h, 0);
    const agg_secagg_counters_t *n = s_n(h);
    assert_int_equal(n->refused, 1); /* member 2's keys, sent with t-<next>'s key */
    assert_int_equal(h->nsums, 0);
    h->now += S_DL + 1;
    s_tick(h, 1); /* the keys deadline: U1 = {1, 3, 4}, then the rest at once */
    assert_int_equal(h->nsums, 1);
    assert_int_equal(h->sum_survivors[0], 3);
    assert_int_equal(n->dropped[0], 1);
    s_check_sum(h, 0, h->cohorts[0], NULL, NULL);
    assert_int_equal(s_find(h, h->cohorts[0], 2)->got[FM_WIRE_SA_KEY_LIST], 0);
    fm_sec_destroy(&h->sec);
    free(h->pub);
    s_free(h);
    fm_proc_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sum),       cmocka_unit_test(test_dropouts),
        cmocka_unit_test(test_below_threshold), cmocka_unit_test(test_uploads_masked),
        cmocka_unit_test(test_stray_messages),  cmocka_unit_test(test_late_upload),
        cmocka_unit_test(test_in_flight),       cmocka_unit_test(test_stats),
        cmocka_unit_test(test_identity),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
