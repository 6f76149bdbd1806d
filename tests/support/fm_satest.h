/* fm_satest: an in-memory secure-aggregation cohort for the unit tests (header only): one
 * fm_sa_cohort and K fm_sa_member objects, the messages handed from one to the other as the
 * daemons will, with a dropout schedule per member and a clock the harness advances past a
 * phase's deadline when members are missing. Every message the cohort receives goes
 * through here, so r->y[j] is exactly what the aggregator saw of member j (the "wire tap").
 *
 * Include after <cmocka.h>: the steps assert that every honest message is accepted. */
#ifndef FM_SATEST_H
#define FM_SATEST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_sa_cohort.h"
#include "fm_sa_crypto.h"
#include "fm_sa_member.h"
#include "fm_sa_msg.h"

typedef enum {
    SA_STAY = 0,       /* takes part to the end */
    SA_DROP_BEFORE_M1, /* never advertises keys */
    SA_DROP_BEFORE_M3, /* advertises keys, never sends shares (after key sharing) */
    SA_DROP_BEFORE_M5, /* gets SHARES_FWD, never uploads */
    SA_DROP_BEFORE_M7  /* uploads, never answers UNMASK_REQ (drops during unmasking) */
} sa_drop_t;

typedef struct {
    fm_sa_params_t p;
    fm_sa_deadlines_t dl;
    fm_sa_cohort_t *c;
    fm_sa_member_t *mem[FM_SA_MAX_K + 1];
    fm_sa_advertise_t adv[FM_SA_MAX_K + 1];
    sa_drop_t drop[FM_SA_MAX_K + 1];
    uint32_t *x[FM_SA_MAX_K + 1]; /* encoded inputs, m words each (the test fills them) */
    uint32_t *y[FM_SA_MAX_K + 1]; /* what member j uploaded (the wire tap) */
    int uploaded[FM_SA_MAX_K + 1];
    double now;
} sa_run_t;

/* A cohort p at time 0 with deadlines of 10 s per phase, K members with their M1 made. */
static inline void sa_run_init(sa_run_t *r, const fm_sa_params_t *p)
{
    memset(r, 0, sizeof *r);
    r->p = *p;
    r->dl = (fm_sa_deadlines_t){10, 10, 10, 10};
    int err = 0;
    fm_errmsg_t e = {{0}};
    r->c = fm_sa_cohort_new(p, &r->dl, r->now, &err, &e);
    assert_non_null(r->c);
    for (uint32_t j = 1; j <= p->k; j++) {
        r->mem[j] = fm_sa_member_new(p, j, &r->adv[j], &err, &e);
        assert_non_null(r->mem[j]);
        r->x[j] = calloc(p->m, sizeof(uint32_t));
        r->y[j] = calloc(p->m, sizeof(uint32_t));
        assert_non_null(r->x[j]);
        assert_non_null(r->y[j]);
    }
}

static inline void sa_run_free(sa_run_t *r)
{
    fm_sa_cohort_destroy(&r->c);
    for (uint32_t j = 1; j <= r->p.k; j++) {
        fm_sa_member_destroy(&r->mem[j]);
        free(r->x[j]);
        free(r->y[j]);
    }
}

/* If the cohort still waits in `ph`, move the clock past the deadline and tick. */
static inline void sa_run_expire(sa_run_t *r, fm_sa_phase_t ph)
{
    if (fm_sa_cohort_phase(r->c) == ph) {
        r->now += 11;
        assert_int_equal(fm_sa_cohort_tick(r->c, r->now), 1);
        assert_true(fm_sa_cohort_phase(r->c) != ph);
    }
}

static inline void sa_step_keys(sa_run_t *r)
{
    fm_errmsg_t e = {{0}};
    for (uint32_t j = 1; j <= r->p.k; j++)
        if (r->drop[j] != SA_DROP_BEFORE_M1)
            assert_int_equal(fm_sa_cohort_on_keys(r->c, &r->adv[j], r->now, &e), FM_SA_OK);
    sa_run_expire(r, FM_SA_AT_KEYS);
}

static inline void sa_step_shares(sa_run_t *r)
{
    fm_errmsg_t e = {{0}};
    fm_sa_key_list_t kl;
    assert_int_equal(fm_sa_cohort_key_list(r->c, &kl), 0);
    for (uint32_t i = 0; i < kl.n; i++) {
        uint32_t j = kl.keys[i].index;
        if (r->drop[j] == SA_DROP_BEFORE_M3)
            continue;
        fm_sa_shares_t sh;
        assert_int_equal(fm_sa_member_on_key_list(r->mem[j], &kl, &sh, &e), FM_SA_OK);
        assert_int_equal(fm_sa_cohort_on_shares(r->c, &sh, r->now, &e), FM_SA_OK);
    }
    sa_run_expire(r, FM_SA_AT_SHARES);
}

static inline void sa_step_fwd(sa_run_t *r)
{
    fm_errmsg_t e = {{0}};
    uint32_t n;
    const uint32_t *u2 = fm_sa_cohort_set(r->c, FM_SA_SET_U2, &n);
    for (uint32_t i = 0; i < n; i++) {
        fm_sa_shares_fwd_t f;
        assert_int_equal(fm_sa_cohort_shares_fwd(r->c, u2[i], &f), 0);
        assert_int_equal(fm_sa_member_on_shares_fwd(r->mem[u2[i]], &f, &e), FM_SA_OK);
    }
}

static inline void sa_step_upload(sa_run_t *r)
{
    fm_errmsg_t e = {{0}};
    uint32_t n;
    const uint32_t *u2 = fm_sa_cohort_set(r->c, FM_SA_SET_U2, &n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = u2[i];
        if (r->drop[j] == SA_DROP_BEFORE_M5)
            continue;
        fm_sa_masked_t mk;
        assert_int_equal(fm_sa_member_mask(r->mem[j], r->x[j], r->y[j], r->p.m, &mk, &e),
                         FM_SA_OK);
        assert_int_equal(fm_sa_cohort_on_masked(r->c, &mk, r->now, &e), FM_SA_OK);
        r->uploaded[j] = 1;
    }
    sa_run_expire(r, FM_SA_AT_TRAINING);
}

static inline void sa_step_unmask(sa_run_t *r)
{
    fm_errmsg_t e = {{0}};
    fm_sa_unmask_req_t q;
    assert_int_equal(fm_sa_cohort_unmask_req(r->c, &q), 0);
    for (uint32_t i = 0; i < q.n_u3; i++) {
        uint32_t j = q.u3[i];
        if (r->drop[j] == SA_DROP_BEFORE_M7)
            continue;
        fm_sa_unmask_shares_t us;
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[j], &q, &us, &e), FM_SA_OK);
        assert_int_equal(fm_sa_cohort_on_unmask_shares(r->c, &us, r->now, &e), FM_SA_OK);
    }
    sa_run_expire(r, FM_SA_AT_UNMASKING);
}

/* M8 to every member (DONE or ABORT as the cohort ended). */
static inline void sa_step_done(sa_run_t *r)
{
    int aborted = fm_sa_cohort_phase(r->c) == FM_SA_AT_ABORTED;
    for (uint32_t j = 1; j <= r->p.k; j++)
        assert_int_equal(fm_sa_member_on_done(r->mem[j], r->p.cohort, aborted, NULL), FM_SA_OK);
}

/* Every step until DONE or ABORTED, then M8; the final phase. */
static inline fm_sa_phase_t sa_run_all(sa_run_t *r)
{
    sa_step_keys(r);
    if (fm_sa_cohort_phase(r->c) == FM_SA_AT_SHARES)
        sa_step_shares(r);
    if (fm_sa_cohort_phase(r->c) == FM_SA_AT_TRAINING) {
        sa_step_fwd(r);
        sa_step_upload(r);
    }
    if (fm_sa_cohort_phase(r->c) == FM_SA_AT_UNMASKING)
        sa_step_unmask(r);
    sa_step_done(r);
    return fm_sa_cohort_phase(r->c);
}

/* The phase a schedule must end in, counted from the schedule alone: the first of U1, U2,
 * U3 and the responders below t aborts. */
static inline fm_sa_phase_t sa_expected_end(const sa_run_t *r, fm_sa_phase_t *aborted_in)
{
    uint32_t n1 = 0, n2 = 0, n3 = 0, nr = 0;
    for (uint32_t j = 1; j <= r->p.k; j++) {
        sa_drop_t d = r->drop[j];
        n1 += d != SA_DROP_BEFORE_M1;
        n2 += d != SA_DROP_BEFORE_M1 && d != SA_DROP_BEFORE_M3;
        n3 += d == SA_STAY || d == SA_DROP_BEFORE_M7;
        nr += d == SA_STAY;
    }
    const uint32_t n[4] = {n1, n2, n3, nr};
    for (int i = 0; i < 4; i++)
        if (n[i] < r->p.t) {
            *aborted_in = (fm_sa_phase_t)(FM_SA_AT_KEYS + i);
            return FM_SA_AT_ABORTED;
        }
    return FM_SA_AT_DONE;
}

#endif
