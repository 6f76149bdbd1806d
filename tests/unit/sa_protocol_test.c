/* End-to-end tests of one secure-aggregation cohort in memory (shared/sa: fm_sa_cohort with
 * K fm_sa_member objects, tests/support/fm_satest.h), the aggregator's side in particular:
 *   - exact sum: 40 random cohorts (K 2..40, t floor(K/2)+1..K, m 1..300, clip, scale, and
 *     random dropouts at every point): the phase they end in is the one the schedule
 *     implies; a DONE cohort's Z_2^32 sum equals the plain uint32 sum of the survivors'
 *     encoded vectors bit for bit, its survivors are exactly the members that uploaded, and
 *     its decoded sum is within n/(2S) (nearest) or n/S (stochastic) of a reference the test
 *     computes in double from the float inputs (its own clipping and weighting);
 *   - dropouts after key sharing, after SHARES_FWD, during unmasking, and all of them at
 *     once, recovered with the sets U1, U2, U3, D as scheduled;
 *   - below t at each phase: ABORTED with the phase named, no result (FM_ESTATE), the share
 *     store and the sum wiped, every member ABORTED and wiped;
 *   - the share store never holds shares of both b_j and r_s,j: an UNMASK_SHARES entry of
 *     the other kind is refused and changes nothing; checked after every message;
 *   - replayed, reordered, late and other-cohort messages are refused with their reason and
 *     change nothing (a late upload is not in the sum);
 *   - the wire tap: with x = 0, every upload's bytes pass a chi-square test of uniformity
 *     (255 degrees of freedom, 32 KiB each, threshold 377.1 = the 1e-6 upper quantile), and
 *     differ from enc(0); the encoding of a real update fails the same test (the test can
 *     see an unmasked vector);
 *   - all 40 members at +C, and all at -C, with the largest scale the codec allows for K 40:
 *     the sum decodes to +-40 C (no wrap);
 *   - misconfigured cohorts (scale that can overflow, t <= K/2) are refused. */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_satest.h"
#include "../support/fm_testutil.h"
#include "fm_err.h"
#include "fm_rng.h"
#include "fm_sa_codec.h"

static int s_setup(void **state)
{
    (void)state;
    return fm_sa_crypto_init() == 0 ? 0 : -1;
}

static sa_run_t *s_run_new(uint32_t k, uint32_t t, uint32_t m, uint64_t cohort)
{
    fm_sa_params_t p = {cohort, k, t, m, 1.0, fm_sa_codec_scale(k, 1.0)};
    sa_run_t *r = fm_tu_alloc(1, sizeof *r);
    sa_run_init(r, &p);
    return r;
}

static void s_run_destroy(sa_run_t *r)
{
    sa_run_free(r);
    free(r);
}

static void s_random_inputs(sa_run_t *r, fm_rng_t *rng)
{
    for (uint32_t j = 1; j <= r->p.k; j++)
        for (uint32_t i = 0; i < r->p.m; i++)
            r->x[j][i] = (uint32_t)fm_rng_u64(rng);
}

/* The result is DONE, holds exactly the members that uploaded, and its sum is theirs. */
static void s_check_exact(const sa_run_t *r)
{
    fm_sa_result_t res;
    assert_int_equal(fm_sa_cohort_result(r->c, &res), 0);
    uint32_t n = 0;
    for (uint32_t j = 1; j <= r->p.k; j++)
        if (r->uploaded[j]) {
            assert_true(n < res.survivors);
            assert_int_equal(res.members[n], j);
            n++;
        }
    assert_int_equal(res.survivors, n);
    assert_int_equal(res.m, r->p.m);
    for (uint32_t i = 0; i < r->p.m; i++) {
        uint32_t want = 0;
        for (uint32_t j = 1; j <= r->p.k; j++)
            if (r->uploaded[j])
                want += r->x[j][i];
        assert_int_equal(res.sum[i], want);
    }
}

static void s_check_members(const sa_run_t *r, fm_sa_member_state_t want)
{
    for (uint32_t j = 1; j <= r->p.k; j++) {
        assert_int_equal(fm_sa_member_state(r->mem[j]), want);
        assert_true(fm_sa_member_wiped(r->mem[j]));
    }
}

static void test_exact_sum_random(void **state)
{
    (void)state;
    fm_rng_t rng, srng;
    fm_rng_seed(&rng, 2017, 0);
    fm_rng_seed(&srng, 2017, 1);
    int done = 0, aborted = 0, with_d = 0, with_m7_drop = 0, with_u2_drop = 0;
    for (int trial = 0; trial < 40; trial++) {
        uint32_t k = 2 + (uint32_t)fm_rng_below(&rng, 39);
        uint32_t t = k / 2 + 1 + (uint32_t)fm_rng_below(&rng, k - k / 2);
        uint32_t m = 1 + (uint32_t)fm_rng_below(&rng, 300);
        double clip = 0.1 + 9.9 * fm_rng_uniform(&rng);
        int stochastic = trial % 2;
        fm_sa_params_t p = {fm_rng_u64(&rng), k, t, m, clip, fm_sa_codec_scale(k, clip)};
        fm_sa_codec_t codec = {k, clip, p.scale_bits};
        double S = ldexp(1.0, p.scale_bits);
        sa_run_t *r = fm_tu_alloc(1, sizeof *r);
        sa_run_init(r, &p);
        double pdrop = 0.35 * fm_rng_uniform(&rng);
        for (uint32_t j = 1; j <= k; j++)
            r->drop[j] = fm_rng_uniform(&rng) < pdrop ? (sa_drop_t)(1 + fm_rng_below(&rng, 4))
                                                      : SA_STAY;
        /* inputs: floats, some beyond the clip; the reference is computed here, in double */
        uint32_t n = m - 1;
        float *delta = fm_tu_floats(n);
        double *ref = fm_tu_alloc(m, sizeof *ref);
        double **mine = fm_tu_alloc(k + 1, sizeof *mine);
        for (uint32_t j = 1; j <= k; j++) {
            double sd = fm_rng_uniform(&rng) < 0.5 ? clip : 0.01 * clip;
            fm_tu_normal(&rng, delta, n, sd / (n ? sqrt((double)n) : 1) * 3);
            double w = 0.01 + 0.99 * fm_rng_uniform(&rng);
            assert_int_equal(
                fm_sa_codec_encode(&codec, delta, n, w, stochastic ? &srng : NULL, r->x[j], NULL),
                0);
            double ss = 0;
            for (uint32_t i = 0; i < n; i++)
                ss += (double)delta[i] * (double)delta[i];
            double f = sqrt(ss) > clip ? clip / sqrt(ss) : 1.0;
            mine[j] = fm_tu_alloc(m, sizeof(double));
            for (uint32_t i = 0; i < n; i++)
                mine[j][i] = (double)delta[i] * f * w;
            mine[j][n] = w;
        }
        fm_sa_phase_t aborted_in = FM_SA_AT_KEYS;
        fm_sa_phase_t want = sa_expected_end(r, &aborted_in);
        fm_sa_phase_t got = sa_run_all(r);
        assert_int_equal(got, want);
        if (got == FM_SA_AT_DONE) {
            s_check_exact(r);
            fm_sa_result_t res;
            assert_int_equal(fm_sa_cohort_result(r->c, &res), 0);
            memset(ref, 0, m * sizeof *ref);
            for (uint32_t j = 1; j <= k; j++)
                if (r->uploaded[j])
                    for (uint32_t i = 0; i < m; i++)
                        ref[i] += mine[j][i];
            double tol = stochastic ? res.survivors / S : res.survivors / (2 * S) * (1 + 1e-9);
            for (uint32_t i = 0; i < m; i++)
                assert_true(fabs(res.decoded[i] - ref[i]) <= tol);
            s_check_members(r, FM_SA_MEMBER_DONE);
            uint32_t nd;
            fm_sa_cohort_set(r->c, FM_SA_SET_D, &nd);
            with_d += nd > 0;
            for (uint32_t j = 1; j <= k; j++) {
                with_m7_drop += r->drop[j] == SA_DROP_BEFORE_M7;
                with_u2_drop += r->drop[j] == SA_DROP_BEFORE_M3;
            }
            done++;
        } else {
            fm_sa_result_t res;
            assert_int_equal(fm_sa_cohort_result(r->c, &res), FM_ESTATE);
            assert_null(res.sum);
            assert_non_null(
                strstr(fm_sa_cohort_abort_reason(r->c), fm_sa_phase_name(aborted_in)));
            s_check_members(r, FM_SA_MEMBER_ABORTED);
            aborted++;
        }
        for (uint32_t j = 1; j <= k; j++)
            free(mine[j]);
        free(mine);
        free(delta);
        free(ref);
        sa_run_free(r);
        free(r);
    }
    /* the seed above exercises every path (if it is changed, these say so) */
    print_message("exact sum: %d done (%d with dropped members D, %d members dropped before "
                  "M3, %d during unmasking), %d aborted\n",
                  done, with_d, with_u2_drop, with_m7_drop, aborted);
    assert_true(done >= 25 && aborted >= 2 && with_d >= 5 && with_m7_drop >= 5 &&
                with_u2_drop >= 5);
}

static void test_dropouts(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 4, 0);
    const struct {
        const char *what;
        uint32_t who[4];
        sa_drop_t when[4];
        uint32_t n_u1, n_u2, n_u3, n_d;
    } cases[] = {
        {"after key sharing", {2, 7}, {SA_DROP_BEFORE_M3, SA_DROP_BEFORE_M3}, 10, 8, 8, 0},
        {"after SHARES_FWD", {3, 9}, {SA_DROP_BEFORE_M5, SA_DROP_BEFORE_M5}, 10, 10, 8, 2},
        {"during unmasking", {1, 10}, {SA_DROP_BEFORE_M7, SA_DROP_BEFORE_M7}, 10, 10, 10, 0},
        {"all at once",
         {4, 5, 6, 8},
         {SA_DROP_BEFORE_M1, SA_DROP_BEFORE_M3, SA_DROP_BEFORE_M5, SA_DROP_BEFORE_M7},
         9,
         8,
         7,
         1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sa_run_t *r = s_run_new(10, 6, 97, 0x5eed0000 + c);
        s_random_inputs(r, &rng);
        for (int i = 0; i < 4 && cases[c].who[i]; i++)
            r->drop[cases[c].who[i]] = cases[c].when[i];
        print_message("dropouts %s\n", cases[c].what);
        assert_int_equal(sa_run_all(r), FM_SA_AT_DONE);
        uint32_t n;
        fm_sa_cohort_set(r->c, FM_SA_SET_U1, &n);
        assert_int_equal(n, cases[c].n_u1);
        fm_sa_cohort_set(r->c, FM_SA_SET_U2, &n);
        assert_int_equal(n, cases[c].n_u2);
        fm_sa_cohort_set(r->c, FM_SA_SET_U3, &n);
        assert_int_equal(n, cases[c].n_u3);
        fm_sa_cohort_set(r->c, FM_SA_SET_D, &n);
        assert_int_equal(n, cases[c].n_d);
        s_check_exact(r);
        s_run_destroy(r);
    }
}

static void test_below_threshold(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 5, 0);
    const sa_drop_t when[] = {SA_DROP_BEFORE_M1, SA_DROP_BEFORE_M3, SA_DROP_BEFORE_M5,
                              SA_DROP_BEFORE_M7};
    const char *phase[] = {"keys", "shares", "training", "unmasking"};
    for (int w = 0; w < 4; w++) {
        sa_run_t *r = s_run_new(10, 6, 33, 0xab0 + (uint64_t)w);
        s_random_inputs(r, &rng);
        for (uint32_t j = 2; j <= 10; j += 2) /* 5 of 10 leave: 5 < t = 6 */
            r->drop[j] = when[w];
        assert_int_equal(sa_run_all(r), FM_SA_AT_ABORTED);
        const char *why = fm_sa_cohort_abort_reason(r->c);
        print_message("aborted: %s\n", why);
        assert_true(strncmp(why, phase[w], strlen(phase[w])) == 0);
        assert_non_null(strstr(why, "threshold 6"));
        fm_sa_result_t res;
        assert_int_equal(fm_sa_cohort_result(r->c, &res), FM_ESTATE);
        assert_null(res.sum);
        assert_null(res.decoded);
        for (uint32_t j = 1; j <= 10; j++) {
            assert_int_equal(fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_B), 0);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_RS), 0);
        }
        fm_sa_unmask_req_t q;
        if (w < 3) /* no UNMASK_REQ was ever made */
            assert_int_equal(fm_sa_cohort_unmask_req(r->c, &q), FM_ESTATE);
        s_check_members(r, FM_SA_MEMBER_ABORTED);
        s_run_destroy(r);
    }
    /* t - 1 members answer at unmasking, after some shares arrived: still nothing released */
    sa_run_t *r = s_run_new(7, 4, 5, 0xab9);
    s_random_inputs(r, &rng);
    for (uint32_t j = 4; j <= 7; j++)
        r->drop[j] = SA_DROP_BEFORE_M7;
    sa_step_keys(r);
    sa_step_shares(r);
    sa_step_fwd(r);
    sa_step_upload(r);
    assert_int_equal(fm_sa_cohort_phase(r->c), FM_SA_AT_UNMASKING);
    sa_step_unmask(r); /* 3 answer, then the deadline */
    assert_int_equal(fm_sa_cohort_phase(r->c), FM_SA_AT_ABORTED);
    assert_non_null(strstr(fm_sa_cohort_abort_reason(r->c), "3 of 7 members of U3"));
    fm_sa_result_t res;
    assert_int_equal(fm_sa_cohort_result(r->c, &res), FM_ESTATE);
    for (uint32_t j = 1; j <= 7; j++)
        assert_int_equal(fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_B), 0);
    s_run_destroy(r);
}

static void s_check_store(const sa_run_t *r)
{
    for (uint32_t j = 1; j <= r->p.k; j++)
        assert_true(fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_B) == 0 ||
                    fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_RS) == 0);
}

static void test_share_store(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 6, 0);
    sa_run_t *r = s_run_new(8, 5, 16, 0x570e);
    s_random_inputs(r, &rng);
    r->drop[2] = r->drop[7] = SA_DROP_BEFORE_M5;
    sa_step_keys(r);
    sa_step_shares(r);
    sa_step_fwd(r);
    sa_step_upload(r);
    fm_sa_unmask_req_t q;
    assert_int_equal(fm_sa_cohort_unmask_req(r->c, &q), 0);
    assert_int_equal(q.n_u3, 6);
    assert_int_equal(q.n_d, 2);
    fm_errmsg_t e = {{0}};
    fm_sa_share_entry_t forged[FM_SA_MAX_K];
    for (uint32_t i = 0; i < q.n_u3; i++) {
        uint32_t j = q.u3[i];
        fm_sa_unmask_shares_t us;
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[j], &q, &us, &e), FM_SA_OK);
        assert_int_equal(us.n, 8);
        /* the same answer with one entry of the other kind: refused, nothing stored */
        for (uint32_t x = 0; x < us.n; x++) {
            memcpy(forged, us.shares, us.n * sizeof *forged);
            forged[x].kind = forged[x].kind == FM_SA_SHARE_B ? FM_SA_SHARE_RS : FM_SA_SHARE_B;
            fm_sa_unmask_shares_t bad = us;
            bad.shares = forged;
            assert_int_equal(fm_sa_cohort_on_unmask_shares(r->c, &bad, r->now, &e),
                             FM_SA_R_UNMASK);
            s_check_store(r);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, forged[x].of, forged[x].kind), 0);
        }
        assert_int_equal(fm_sa_cohort_on_unmask_shares(r->c, &us, r->now, &e), FM_SA_OK);
        if (i + 1 < q.n_u3) { /* the last answer completes the cohort (and wipes the store) */
            s_check_store(r);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, 1, FM_SA_SHARE_B), i + 1);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, 2, FM_SA_SHARE_RS), i + 1);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, 2, FM_SA_SHARE_B), 0);
            assert_int_equal(fm_sa_cohort_shares_held(r->c, 1, FM_SA_SHARE_RS), 0);
        }
    }
    assert_int_equal(fm_sa_cohort_phase(r->c), FM_SA_AT_DONE);
    s_check_exact(r);
    for (uint32_t j = 1; j <= 8; j++) /* wiped once used */
        assert_int_equal(fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_B) +
                             fm_sa_cohort_shares_held(r->c, j, FM_SA_SHARE_RS),
                         0);
    s_run_destroy(r);
}

static void test_rejections(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 7, 0);
    fm_errmsg_t e = {{0}};
    /* K 7, t 4: member 7's keys come late (U1 = 1..6), member 6's shares (U2 = 1..5),
     * member 5's upload (U3 = 1..4, D = {5}) */
    sa_run_t *r = s_run_new(7, 4, 8, 0xc0c0);
    s_random_inputs(r, &rng);
    fm_sa_cohort_t *c = r->c;
    /* KEYS: reordered messages, replays, other cohorts, strangers, a repeated key */
    fm_sa_shares_t early = {r->p.cohort, 1, 0, NULL};
    assert_int_equal(fm_sa_cohort_on_shares(c, &early, r->now, &e), FM_SA_R_PHASE);
    uint32_t y0[8] = {0};
    fm_sa_masked_t early_up = {r->p.cohort, 1, 8, y0};
    assert_int_equal(fm_sa_cohort_on_masked(c, &early_up, r->now, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_cohort_on_keys(c, &r->adv[1], r->now, &e), FM_SA_OK);
    assert_int_equal(fm_sa_cohort_on_keys(c, &r->adv[1], r->now, &e), FM_SA_R_REPLAY);
    fm_sa_advertise_t a = r->adv[2];
    a.cohort ^= 1;
    assert_int_equal(fm_sa_cohort_on_keys(c, &a, r->now, &e), FM_SA_R_COHORT);
    assert_non_null(strstr(e.msg, "cohort"));
    a = r->adv[2];
    a.from = 8;
    assert_int_equal(fm_sa_cohort_on_keys(c, &a, r->now, &e), FM_SA_R_SENDER);
    a.from = 0;
    assert_int_equal(fm_sa_cohort_on_keys(c, &a, r->now, &e), FM_SA_R_SENDER);
    a = r->adv[2];
    memcpy(a.s_pk, r->adv[1].c_pk, 32); /* a key of member 1 again */
    assert_int_equal(fm_sa_cohort_on_keys(c, &a, r->now, &e), FM_SA_R_KEY);
    for (uint32_t j = 2; j <= 6; j++)
        assert_int_equal(fm_sa_cohort_on_keys(c, &r->adv[j], r->now, &e), FM_SA_OK);
    sa_run_expire(r, FM_SA_AT_KEYS);
    assert_int_equal(fm_sa_cohort_phase(c), FM_SA_AT_SHARES);
    assert_int_equal(fm_sa_cohort_on_keys(c, &r->adv[7], r->now, &e), FM_SA_R_PHASE);
    /* SHARES: a box short, a sender not in U1, a replay, then member 6's comes late */
    fm_sa_key_list_t kl;
    assert_int_equal(fm_sa_cohort_key_list(c, &kl), 0);
    assert_int_equal(kl.n, 6);
    fm_sa_shares_t sh[8];
    static fm_sa_box_entry_t copy[8][FM_SA_MAX_K];
    for (uint32_t j = 1; j <= 6; j++) {
        assert_int_equal(fm_sa_member_on_key_list(r->mem[j], &kl, &sh[j], &e), FM_SA_OK);
        memcpy(copy[j], sh[j].boxes, sh[j].n * sizeof copy[j][0]);
        sh[j].boxes = copy[j];
    }
    fm_sa_shares_t short_sh = sh[1];
    short_sh.n--;
    assert_int_equal(fm_sa_cohort_on_shares(c, &short_sh, r->now, &e), FM_SA_R_FORMAT);
    fm_sa_shares_t wrong = sh[1];
    wrong.from = 7;
    assert_int_equal(fm_sa_cohort_on_shares(c, &wrong, r->now, &e), FM_SA_R_SENDER);
    for (uint32_t j = 1; j <= 5; j++)
        assert_int_equal(fm_sa_cohort_on_shares(c, &sh[j], r->now, &e), FM_SA_OK);
    assert_int_equal(fm_sa_cohort_on_shares(c, &sh[4], r->now, &e), FM_SA_R_REPLAY);
    sa_run_expire(r, FM_SA_AT_SHARES);
    assert_int_equal(fm_sa_cohort_on_shares(c, &sh[6], r->now, &e), FM_SA_R_PHASE);
    /* TRAINING: a sender not in U2, a short vector, a replay, another cohort, a late one */
    sa_step_fwd(r);
    fm_sa_masked_t up[6];
    static uint32_t ys[6][8];
    for (uint32_t j = 1; j <= 5; j++)
        assert_int_equal(fm_sa_member_mask(r->mem[j], r->x[j], ys[j], 8, &up[j], &e), FM_SA_OK);
    fm_sa_masked_t not_u2 = up[1];
    not_u2.from = 6;
    assert_int_equal(fm_sa_cohort_on_masked(c, &not_u2, r->now, &e), FM_SA_R_SENDER);
    fm_sa_masked_t short_up = up[1];
    short_up.m = 7;
    assert_int_equal(fm_sa_cohort_on_masked(c, &short_up, r->now, &e), FM_SA_R_FORMAT);
    for (uint32_t j = 1; j <= 4; j++) {
        assert_int_equal(fm_sa_cohort_on_masked(c, &up[j], r->now, &e), FM_SA_OK);
        memcpy(r->y[j], ys[j], sizeof ys[j]);
        r->uploaded[j] = 1;
    }
    assert_int_equal(fm_sa_cohort_on_masked(c, &up[3], r->now, &e), FM_SA_R_REPLAY);
    fm_sa_masked_t other = up[5];
    other.cohort ^= 0xff;
    assert_int_equal(fm_sa_cohort_on_masked(c, &other, r->now, &e), FM_SA_R_COHORT);
    r->now += 11; /* the deadline passes while member 5's upload is on its way */
    assert_int_equal(fm_sa_cohort_on_masked(c, &up[5], r->now, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_cohort_phase(c), FM_SA_AT_UNMASKING);
    assert_non_null(strstr(e.msg, "unmasking"));
    /* UNMASKING: U3 = {1..4}, D = {5} */
    fm_sa_unmask_req_t q;
    assert_int_equal(fm_sa_cohort_unmask_req(c, &q), 0);
    assert_int_equal(q.n_u3, 4);
    assert_int_equal(q.n_d, 1);
    assert_int_equal(q.d[0], 5);
    fm_sa_unmask_shares_t us[5];
    static fm_sa_share_entry_t sc[5][FM_SA_MAX_K];
    for (uint32_t j = 1; j <= 4; j++) {
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[j], &q, &us[j], &e), FM_SA_OK);
        memcpy(sc[j], us[j].shares, us[j].n * sizeof sc[j][0]);
        us[j].shares = sc[j];
    }
    /* member 5 (dropped, masked but never delivered) refuses: it is not in U3 */
    fm_sa_unmask_shares_t none;
    assert_int_equal(fm_sa_member_on_unmask_req(r->mem[5], &q, &none, &e), FM_SA_R_UNMASK);
    fm_sa_unmask_shares_t forged = us[1];
    forged.from = 5;
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &forged, r->now, &e), FM_SA_R_SENDER);
    sc[1][0].of = 2;
    sc[1][1].of = 1;
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &us[1], r->now, &e), FM_SA_R_FORMAT);
    sc[1][0].of = 1;
    sc[1][1].of = 2;
    fm_sa_unmask_shares_t short_us = us[1];
    short_us.n--;
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &short_us, r->now, &e), FM_SA_R_FORMAT);
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &us[1], r->now, &e), FM_SA_OK);
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &us[1], r->now, &e), FM_SA_R_REPLAY);
    for (uint32_t j = 2; j <= 4; j++)
        assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &us[j], r->now, &e), FM_SA_OK);
    assert_int_equal(fm_sa_cohort_phase(c), FM_SA_AT_DONE);
    s_check_exact(r); /* member 5's late upload is not in the sum */
    /* after DONE everything is late */
    assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &us[2], r->now, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_cohort_on_masked(c, &up[5], r->now, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_cohort_on_keys(c, &r->adv[7], r->now, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_cohort_tick(c, r->now + 100), 0);
    assert_int_equal(fm_sa_cohort_phase(c), FM_SA_AT_DONE);
    s_run_destroy(r);
}

/* Chi-square statistic of the byte frequencies of n bytes (255 degrees of freedom). */
static double s_chi2(const void *p, size_t n)
{
    const uint8_t *b = p;
    double count[256] = {0};
    for (size_t i = 0; i < n; i++)
        count[b[i]]++;
    double e = n / 256.0, x = 0;
    for (int i = 0; i < 256; i++)
        x += (count[i] - e) * (count[i] - e) / e;
    return x;
}

static void test_uploads_look_uniform(void **state)
{
    (void)state;
    enum { M = 8192, K = 5 };
    const double crit = 377.08; /* chi-square 255 dof, upper 1e-6 quantile (mpmath) */
    sa_run_t *r = s_run_new(K, 3, M, 0xc41);
    /* x = 0 for everyone (the harness's calloc) */
    assert_int_equal(sa_run_all(r), FM_SA_AT_DONE);
    for (uint32_t j = 1; j <= K; j++) {
        double x2 = s_chi2(r->y[j], M * 4);
        print_message("upload of member %u (x = 0): chi-square %.1f\n", j, x2);
        assert_true(x2 < crit);
        assert_true(memcmp(r->y[j], r->x[j], M * 4) != 0);
        uint32_t zeros = 0;
        for (uint32_t i = 0; i < M; i++)
            zeros += r->y[j][i] == 0;
        assert_true(zeros < 4); /* a word is 0 with probability 2^-32 */
    }
    fm_sa_result_t res;
    assert_int_equal(fm_sa_cohort_result(r->c, &res), 0);
    for (uint32_t i = 0; i < M; i++)
        assert_int_equal(res.sum[i], 0);
    s_run_destroy(r);
    /* the power of the check: a real update's encoding is far from uniform bytes */
    fm_rng_t rng;
    fm_rng_seed(&rng, 8, 0);
    float *delta = fm_tu_floats(M - 1);
    fm_tu_normal(&rng, delta, M - 1, 0.01);
    fm_sa_codec_t codec = {K, 1.0, fm_sa_codec_scale(K, 1.0)};
    uint32_t *enc = fm_tu_alloc(M, sizeof *enc);
    assert_int_equal(fm_sa_codec_encode(&codec, delta, M - 1, 1.0, NULL, enc, NULL), 0);
    double x2 = s_chi2(enc, M * 4);
    print_message("an encoded update, unmasked: chi-square %.1f\n", x2);
    assert_true(x2 > crit);
    free(delta);
    free(enc);
}

/* All K members at +C (then all at -C) with the largest scale the codec allows for this K:
 * the masked protocol sums them without a wrap. */
static void test_extremes(void **state)
{
    (void)state;
    const uint32_t k = 40;
    const double clip = 1.5;
    int s = 30;
    fm_sa_codec_t codec = {k, clip, s};
    while (fm_sa_codec_check(&codec, NULL) != 0)
        codec.s = --s;
    assert_true(fm_sa_codec_kmax(clip, s) >= k && fm_sa_codec_kmax(clip, s + 1) < k);
    double S = ldexp(1.0, s);
    for (int sign = -1; sign <= 1; sign += 2) {
        fm_sa_params_t p = {0xe0 + (uint64_t)(sign + 1), k, 21, 3, clip, s};
        sa_run_t *r = fm_tu_alloc(1, sizeof *r);
        sa_run_init(r, &p);
        float delta[2] = {(float)(sign * clip), 0.0f};
        for (uint32_t j = 1; j <= k; j++)
            assert_int_equal(fm_sa_codec_encode(&codec, delta, 2, 1.0, NULL, r->x[j], NULL), 0);
        assert_int_equal(sa_run_all(r), FM_SA_AT_DONE);
        s_check_exact(r);
        fm_sa_result_t res;
        assert_int_equal(fm_sa_cohort_result(r->c, &res), 0);
        print_message("K %u at %+g with S = 2^%d: decoded %.9f, weights %.9f\n", k, sign * clip,
                      s, res.decoded[0], res.decoded[2]);
        assert_true(fabs(res.decoded[0] - sign * clip * k) <= k / (2 * S));
        assert_true(res.decoded[1] == 0);
        assert_true(fabs(res.decoded[2] - k) <= k / (2 * S));
        s_run_destroy(r);
    }
}

static void test_bad_params(void **state)
{
    (void)state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_sa_deadlines_t dl = {1, 1, 1, 1};
    fm_sa_advertise_t adv;
    fm_sa_params_t p = {1, 40, 21, 10, 4.0, fm_sa_codec_scale(40, 4.0)};
    fm_sa_cohort_t *c = fm_sa_cohort_new(&p, &dl, 0, &err, &e);
    assert_non_null(c);
    fm_sa_cohort_destroy(&c);
    assert_null(c);
    p.scale_bits += 2;
    assert_null(fm_sa_cohort_new(&p, &dl, 0, &err, &e));
    assert_int_equal(err, FM_ERANGE);
    assert_non_null(strstr(e.msg, "could wrap"));
    assert_null(fm_sa_member_new(&p, 1, &adv, &err, &e));
    assert_int_equal(err, FM_ERANGE);
    p.scale_bits -= 2;
    p.t = 20; /* t <= K/2 */
    assert_null(fm_sa_cohort_new(&p, &dl, 0, &err, &e));
    assert_int_equal(err, FM_EARG);
    assert_non_null(strstr(e.msg, "threshold"));
    p.t = 41;
    assert_null(fm_sa_member_new(&p, 1, &adv, &err, &e));
    p.t = 21;
    assert_null(fm_sa_member_new(&p, 41, &adv, &err, &e));
    assert_int_equal(err, FM_EARG);
    dl.train = 0;
    assert_null(fm_sa_cohort_new(&p, &dl, 0, &err, &e));
    assert_int_equal(err, FM_EARG);
    p.k = FM_SA_MAX_K + 1;
    assert_int_equal(fm_sa_params_check(&p, &e), FM_EARG);
    p.k = 1;
    p.t = 1;
    assert_int_equal(fm_sa_params_check(&p, &e), FM_EARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sum_random), cmocka_unit_test(test_dropouts),
        cmocka_unit_test(test_below_threshold),  cmocka_unit_test(test_share_store),
        cmocka_unit_test(test_rejections),       cmocka_unit_test(test_uploads_look_uniform),
        cmocka_unit_test(test_extremes),         cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
