/* Unit tests of a secure-aggregation member (shared/sa/fm_sa_member), fed messages by a test
 * that plays a broken or lying aggregator:
 *   - KEY_LIST: fewer than t members, own keys missing or wrong, a key twice, indices out of
 *     order, an invalid mask key: refused and the member aborts, wiped; another cohort's or
 *     a second KEY_LIST: refused, the member unchanged;
 *   - SHARES_FWD: a box from cohort A replayed in cohort B, a box meant for another member,
 *     a box that opens but names another cohort, recipient or phase (sealed by a peer whose
 *     keys the test holds), |U2| < t, U2 without the member or with a non-member, a box
 *     missing, the wrong addressee: each refused with its reason, the member aborted;
 *   - UNMASK_REQ: U3 and D overlapping, a union other than U2, |U3| < t, the member not in
 *     U3, lists out of order, and a second request (the same or one asking for the other
 *     secret) are refused; after a refusal even a valid request gets nothing;
 *   - the "both secrets" attack: an aggregator sending U3 = all to some members and
 *     D = {v} to the others collects t shares of b_v but fewer than t of r_s,v (t > K/2,
 *     one answer per member), and those reconstruct a key that is not v's;
 *   - masking only in TRAINING with the cohort's m; secrets wiped at done, abort and
 *     destroy (fm_sa_member_wiped), and present before (the hook can fail). */
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
#include "fm_sa_codec.h"

enum { MAXK = 8 };

static int s_setup(void **state)
{
    (void)state;
    return fm_sa_crypto_init() == 0 ? 0 : -1;
}

/* K members of one cohort, without an aggregator: the test forms M2 and M4 itself. */
typedef struct {
    fm_sa_params_t p;
    fm_sa_member_t *mem[MAXK + 1];
    fm_sa_advertise_t adv[MAXK + 1];
    fm_sa_key_entry_t keys[MAXK];
    fm_sa_key_list_t kl;
    fm_sa_box_entry_t box[MAXK + 1][MAXK + 1]; /* [from][to] */
    fm_sa_box_entry_t fwd[MAXK];
    uint32_t u2[MAXK];
} s_bench_t;

static void s_bench_init(s_bench_t *b, uint32_t k, uint32_t t, uint64_t cohort)
{
    memset(b, 0, sizeof *b);
    b->p = (fm_sa_params_t){cohort, k, t, 4, 1.0, fm_sa_codec_scale(k, 1.0)};
    int err = 0;
    for (uint32_t j = 1; j <= k; j++) {
        b->mem[j] = fm_sa_member_new(&b->p, j, &b->adv[j], &err, NULL);
        assert_non_null(b->mem[j]);
        b->keys[j - 1].index = j;
        memcpy(b->keys[j - 1].c_pk, b->adv[j].c_pk, 32);
        memcpy(b->keys[j - 1].s_pk, b->adv[j].s_pk, 32);
    }
    b->kl = (fm_sa_key_list_t){cohort, k, b->keys};
}

/* Every member takes the key list; its boxes are kept by (from, to). */
static void s_bench_shares(s_bench_t *b)
{
    for (uint32_t j = 1; j <= b->p.k; j++) {
        fm_sa_shares_t sh;
        assert_int_equal(fm_sa_member_on_key_list(b->mem[j], &b->kl, &sh, NULL), FM_SA_OK);
        assert_int_equal(sh.n, b->p.k - 1);
        for (uint32_t i = 0; i < sh.n; i++)
            b->box[j][sh.boxes[i].peer] = sh.boxes[i];
    }
}

/* M4 for `to` with U2 = 1..K: the boxes sealed for `to`, each named by its sender. */
static fm_sa_shares_fwd_t s_bench_fwd(s_bench_t *b, uint32_t to)
{
    uint32_t n = 0;
    for (uint32_t j = 1; j <= b->p.k; j++) {
        b->u2[j - 1] = j;
        if (j == to)
            continue;
        assert_int_equal(b->box[j][to].peer, to); /* M3 names the recipient */
        b->fwd[n] = b->box[j][to];
        b->fwd[n++].peer = j; /* M4 names the sender */
    }
    return (fm_sa_shares_fwd_t){b->p.cohort, to, b->p.k, b->u2, n, b->fwd};
}

static void s_bench_free(s_bench_t *b)
{
    for (uint32_t j = 1; j <= b->p.k; j++)
        fm_sa_member_destroy(&b->mem[j]);
}

static void s_expect_aborted(fm_sa_member_t *m)
{
    assert_int_equal(fm_sa_member_state(m), FM_SA_MEMBER_ABORTED);
    assert_true(fm_sa_member_wiped(m));
}

static void test_key_list(void **state)
{
    (void)state;
    s_bench_t *b = fm_tu_alloc(1, sizeof *b);
    fm_sa_shares_t out;
    fm_errmsg_t e = {{0}};
    fm_sa_key_entry_t bad[MAXK];
    struct {
        const char *what;
        fm_sa_reason_t want;
    } cases[] = {
        {"below t", FM_SA_R_THRESHOLD},    {"own keys missing", FM_SA_R_KEY},
        {"own keys wrong", FM_SA_R_KEY},   {"a key twice", FM_SA_R_KEY},
        {"out of order", FM_SA_R_FORMAT},  {"index out of range", FM_SA_R_FORMAT},
        {"invalid mask key", FM_SA_R_KEY},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        s_bench_init(b, 5, 3, 0x1000 + c);
        memcpy(bad, b->keys, sizeof b->keys);
        fm_sa_key_list_t kl = {b->p.cohort, 5, bad};
        switch (c) {
        case 0: kl.n = 2; break;
        case 1:
            kl.keys = bad + 1;
            kl.n = 4;
            break; /* member 1 not listed */
        case 2: bad[0].s_pk[5] ^= 1; break;
        case 3: memcpy(bad[3].c_pk, bad[2].s_pk, 32); break;
        case 4: bad[1] = b->keys[2], bad[2] = b->keys[1]; break;
        case 5: bad[4].index = 6; break;
        case 6: memset(bad[2].s_pk, 0, 32); break; /* low order: crypto_kx refuses it */
        }
        assert_false(fm_sa_member_wiped(b->mem[1])); /* holds its keys before */
        assert_int_equal(fm_sa_member_on_key_list(b->mem[1], &kl, &out, &e), cases[c].want);
        print_message("KEY_LIST %s: %s\n", cases[c].what, e.msg);
        s_expect_aborted(b->mem[1]);
        assert_int_equal(fm_sa_member_on_key_list(b->mem[1], &b->kl, &out, &e), FM_SA_R_PHASE);
        s_bench_free(b);
    }
    /* another cohort's list changes nothing; a second list is refused, nothing changes */
    s_bench_init(b, 5, 3, 0x2000);
    fm_sa_key_list_t other = b->kl;
    other.cohort = 0x2001;
    assert_int_equal(fm_sa_member_on_key_list(b->mem[1], &other, &out, &e), FM_SA_R_COHORT);
    assert_int_equal(fm_sa_member_state(b->mem[1]), FM_SA_MEMBER_KEYS);
    assert_int_equal(fm_sa_member_on_key_list(b->mem[1], &b->kl, &out, &e), FM_SA_OK);
    assert_int_equal(fm_sa_member_on_key_list(b->mem[1], &b->kl, &out, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_member_state(b->mem[1]), FM_SA_MEMBER_SHARES);
    assert_false(fm_sa_member_wiped(b->mem[1]));
    s_bench_free(b);
    free(b);
}

static void test_shares_fwd(void **state)
{
    (void)state;
    s_bench_t *b = fm_tu_alloc(1, sizeof *b), *a = fm_tu_alloc(1, sizeof *a);
    fm_errmsg_t e = {{0}};
    /* the honest case */
    s_bench_init(b, 4, 3, 0xb);
    s_bench_shares(b);
    for (uint32_t j = 1; j <= 4; j++) {
        fm_sa_shares_fwd_t f = s_bench_fwd(b, j);
        assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[j], &f, &e), FM_SA_OK);
        assert_int_equal(fm_sa_member_state(b->mem[j]), FM_SA_MEMBER_TRAINING);
    }
    s_bench_free(b);

    /* a box of cohort A replayed into cohort B (same indices): does not open */
    s_bench_init(a, 4, 3, 0xa);
    s_bench_shares(a);
    s_bench_init(b, 4, 3, 0xb);
    s_bench_shares(b);
    fm_sa_shares_fwd_t f = s_bench_fwd(b, 1);
    memcpy(b->fwd[0].box, a->box[2][1].box, FM_SA_BOX_BYTES);
    assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[1], &f, &e), FM_SA_R_CRYPTO);
    print_message("replayed from cohort A: %s\n", e.msg);
    s_expect_aborted(b->mem[1]);
    /* member 2 gets, as member 1's box, the box member 3 sealed for member 4 */
    f = s_bench_fwd(b, 2);
    memcpy(b->fwd[0].box, b->box[3][4].box, FM_SA_BOX_BYTES);
    assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[2], &f, &e), FM_SA_R_CRYPTO);
    s_expect_aborted(b->mem[2]);
    s_bench_free(a);
    s_bench_free(b);

    /* boxes that open but name the wrong cohort, recipient or phase: member 4 is a peer
     * whose keys the test holds */
    const struct {
        uint32_t to, phase;
        uint64_t cohort;
    } lies[] = {{1, FM_SA_MSG_SHARES, 0xa}, {2, FM_SA_MSG_SHARES, 0xb}, {1, 7, 0xb}};
    for (size_t c = 0; c < sizeof lies / sizeof lies[0]; c++) {
        s_bench_init(b, 4, 3, 0xb);
        fm_sa_keys_t fake;
        fm_sa_keys_new(&fake);
        memcpy(b->keys[3].c_pk, fake.c_pk, 32);
        memcpy(b->keys[3].s_pk, fake.s_pk, 32);
        for (uint32_t j = 1; j <= 3; j++) {
            fm_sa_shares_t sh;
            assert_int_equal(fm_sa_member_on_key_list(b->mem[j], &b->kl, &sh, NULL), FM_SA_OK);
            for (uint32_t i = 0; i < sh.n; i++)
                b->box[j][sh.boxes[i].peer] = sh.boxes[i];
        }
        fm_sa_plain_t pl = {
            .from = 4, .to = lies[c].to, .cohort = lies[c].cohort, .phase = lies[c].phase};
        memcpy(pl.share_rs, fake.r_s, 32);
        memcpy(pl.share_b, fake.b, 32);
        b->box[4][1].peer = 1;
        assert_int_equal(fm_sa_box_seal(b->box[4][1].box, &pl, b->adv[1].c_pk, fake.c_sk), 0);
        f = s_bench_fwd(b, 1);
        assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[1], &f, &e), FM_SA_R_IDS);
        print_message("box with ids to %u, cohort %llx, phase %u: %s\n", lies[c].to,
                      (unsigned long long)lies[c].cohort, lies[c].phase, e.msg);
        s_expect_aborted(b->mem[1]);
        fm_sa_keys_wipe(&fake);
        s_bench_free(b);
    }

    /* the lists: |U2| < t, U2 without the member, with a stranger, a box short, misaddressed */
    for (int c = 0; c < 5; c++) {
        s_bench_init(b, 4, 3, 0xb);
        s_bench_shares(b);
        f = s_bench_fwd(b, 1);
        fm_sa_reason_t want = FM_SA_R_FORMAT;
        uint32_t u2[4];
        switch (c) {
        case 0: /* U2 = {1, 2}: below t = 3 */
            u2[0] = 1, u2[1] = 2;
            f.u2 = u2, f.n_u2 = 2, f.n = 1;
            want = FM_SA_R_THRESHOLD;
            break;
        case 1: /* U2 = {2, 3, 4} */ f.u2 = b->u2 + 1, f.n_u2 = 3; break;
        case 2: /* U2 = {1, 2, 3, 5} */
            memcpy(u2, b->u2, sizeof u2);
            u2[3] = 5;
            f.u2 = u2;
            break;
        case 3: f.n = 2; break;
        case 4:
            f.to = 2;
            want = FM_SA_R_IDS;
            break;
        }
        assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[1], &f, &e), want);
        s_expect_aborted(b->mem[1]);
        s_bench_free(b);
    }

    /* reordered: SHARES_FWD before KEY_LIST, or of another cohort: nothing changes */
    s_bench_init(b, 4, 3, 0xb);
    f = (fm_sa_shares_fwd_t){0xb, 1, 0, NULL, 0, NULL};
    assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[1], &f, &e), FM_SA_R_PHASE);
    assert_int_equal(fm_sa_member_state(b->mem[1]), FM_SA_MEMBER_KEYS);
    s_bench_shares(b);
    f = s_bench_fwd(b, 1);
    f.cohort = 0xc;
    assert_int_equal(fm_sa_member_on_shares_fwd(b->mem[1], &f, &e), FM_SA_R_COHORT);
    assert_int_equal(fm_sa_member_state(b->mem[1]), FM_SA_MEMBER_SHARES);
    s_bench_free(b);
    free(a);
    free(b);
}

/* A cohort of K 5, t 3 run until every member has uploaded (all UPLOADED). */
static sa_run_t *s_uploaded(uint64_t cohort)
{
    fm_sa_params_t p = {cohort, 5, 3, 6, 1.0, fm_sa_codec_scale(5, 1.0)};
    sa_run_t *r = fm_tu_alloc(1, sizeof *r);
    sa_run_init(r, &p);
    sa_step_keys(r);
    sa_step_shares(r);
    sa_step_fwd(r);
    sa_step_upload(r);
    for (uint32_t j = 1; j <= 5; j++)
        assert_int_equal(fm_sa_member_state(r->mem[j]), FM_SA_MEMBER_UPLOADED);
    return r;
}

static void s_free_run(sa_run_t *r)
{
    sa_run_free(r);
    free(r);
}

static void test_unmask_refusals(void **state)
{
    (void)state;
    fm_errmsg_t e = {{0}};
    fm_sa_unmask_shares_t out;
    const struct {
        const char *what;
        uint32_t u3[6], n_u3, d[6], n_d;
        fm_sa_reason_t want;
    } cases[] = {
        {"U3 and D overlap", {1, 2, 3, 4}, 4, {4, 5}, 2, FM_SA_R_UNMASK},
        {"U3 and D overlap, sizes add up", {1, 2, 3, 4}, 4, {4}, 1, FM_SA_R_UNMASK},
        {"U3 + D is not U2", {1, 2, 3}, 3, {4}, 1, FM_SA_R_UNMASK},
        {"|U3| < t", {1, 2}, 2, {3, 4, 5}, 3, FM_SA_R_THRESHOLD},
        {"itself not in U3", {2, 3, 4}, 3, {1, 5}, 2, FM_SA_R_UNMASK},
        {"out of order", {2, 1, 3}, 3, {4, 5}, 2, FM_SA_R_FORMAT},
        {"a stranger in D", {1, 2, 3}, 3, {4, 6}, 2, FM_SA_R_FORMAT},
    };
    const uint32_t all[5] = {1, 2, 3, 4, 5};
    fm_sa_unmask_req_t valid = {0, 5, all, 0, NULL};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sa_run_t *r = s_uploaded(0x3000 + c);
        fm_sa_unmask_req_t q = {r->p.cohort, cases[c].n_u3, cases[c].u3, cases[c].n_d,
                                cases[c].d};
        memset(&out, 0, sizeof out);
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[1], &q, &out, &e), cases[c].want);
        print_message("UNMASK_REQ %s: %s\n", cases[c].what, e.msg);
        assert_int_equal(out.n, 0);
        assert_null(out.shares);
        s_expect_aborted(r->mem[1]);
        valid.cohort = r->p.cohort; /* even a valid request gets nothing now */
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[1], &valid, &out, &e), FM_SA_R_PHASE);
        assert_null(out.shares);
        s_free_run(r);
    }
    /* a second request: the same, or one asking for the other secret of member 2 */
    sa_run_t *r = s_uploaded(0x3100);
    valid.cohort = r->p.cohort;
    assert_int_equal(fm_sa_member_on_unmask_req(r->mem[1], &valid, &out, &e), FM_SA_OK);
    assert_int_equal(out.n, 5);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(out.shares[i].kind, FM_SA_SHARE_B);
    const uint32_t u3[4] = {1, 3, 4, 5}, d[1] = {2};
    fm_sa_unmask_req_t second = {r->p.cohort, 4, u3, 1, d};
    fm_sa_unmask_shares_t out2 = {0};
    assert_int_equal(fm_sa_member_on_unmask_req(r->mem[1], &valid, &out2, &e), FM_SA_R_REPLAY);
    assert_int_equal(fm_sa_member_on_unmask_req(r->mem[1], &second, &out2, &e), FM_SA_R_REPLAY);
    assert_null(out2.shares);
    assert_int_equal(fm_sa_member_state(r->mem[1]), FM_SA_MEMBER_ANSWERED);
    /* another cohort's request: refused, the member unchanged */
    fm_sa_unmask_req_t foreign = valid;
    foreign.cohort ^= 1;
    assert_int_equal(fm_sa_member_on_unmask_req(r->mem[2], &foreign, &out2, &e), FM_SA_R_COHORT);
    assert_int_equal(fm_sa_member_state(r->mem[2]), FM_SA_MEMBER_UPLOADED);
    s_free_run(r);
}

static void test_both_secrets(void **state)
{
    (void)state;
    /* K 5, t 3. The aggregator tells members 1..3 that everyone survived (so they reveal
     * b_2) and members 4, 5 that member 2 dropped (so they reveal r_s,2): every request is
     * consistent on its own, each member answers once. */
    sa_run_t *r = s_uploaded(0x4000);
    fm_errmsg_t e = {{0}};
    const uint32_t all[5] = {1, 2, 3, 4, 5}, u3[4] = {1, 3, 4, 5}, d[1] = {2};
    fm_sa_unmask_req_t q_all = {r->p.cohort, 5, all, 0, NULL};
    fm_sa_unmask_req_t q_d2 = {r->p.cohort, 4, u3, 1, d};
    uint32_t xb[5], xr[5], nb = 0, nr = 0;
    uint8_t yb[5][32], yr[5][32];
    for (uint32_t j = 1; j <= 5; j++) {
        fm_sa_unmask_shares_t out;
        const fm_sa_unmask_req_t *q = j <= 3 ? &q_all : &q_d2;
        assert_int_equal(fm_sa_member_on_unmask_req(r->mem[j], q, &out, &e), FM_SA_OK);
        /* and then the other request: refused */
        fm_sa_unmask_shares_t out2 = {0};
        assert_int_equal(
            fm_sa_member_on_unmask_req(r->mem[j], j <= 3 ? &q_d2 : &q_all, &out2, &e),
            FM_SA_R_REPLAY);
        for (uint32_t i = 0; i < out.n; i++) {
            if (out.shares[i].of != 2)
                continue;
            if (out.shares[i].kind == FM_SA_SHARE_B) {
                xb[nb] = j;
                memcpy(yb[nb++], out.shares[i].share, 32);
            } else {
                xr[nr] = j;
                memcpy(yr[nr++], out.shares[i].share, 32);
            }
        }
    }
    assert_int_equal(nb, 3); /* t shares of b_2 (from members 1, 2, 3) ... */
    assert_true(xb[0] == 1 && xb[1] == 2 && xb[2] == 3);
    assert_int_equal(nr, 2); /* ... and only t - 1 of r_s,2: 2t > K answers would be needed */
    uint8_t rs[32], pk[32], sk[32];
    assert_int_equal(fm_sa_shamir_combine(rs, xr, (const uint8_t(*)[32])yr, nr), 0);
    assert_int_equal(fm_sa_mask_keypair(pk, sk, rs), 0);
    assert_true(memcmp(pk, r->adv[2].s_pk, 32) != 0); /* not member 2's mask key */
    s_free_run(r);
}

static void test_mask_and_wipe(void **state)
{
    (void)state;
    fm_errmsg_t e = {{0}};
    fm_sa_params_t p = {0x5000, 3, 2, 6, 1.0, fm_sa_codec_scale(3, 1.0)};
    sa_run_t *r = fm_tu_alloc(1, sizeof *r);
    sa_run_init(r, &p);
    uint32_t x[6] = {0}, y[6];
    fm_sa_masked_t mk;
    /* not before SHARES_FWD */
    assert_int_equal(fm_sa_member_mask(r->mem[1], x, y, 6, &mk, &e), FM_SA_R_PHASE);
    sa_step_keys(r);
    sa_step_shares(r);
    sa_step_fwd(r);
    assert_int_equal(fm_sa_member_mask(r->mem[1], x, y, 5, &mk, &e), FM_SA_R_FORMAT);
    assert_int_equal(fm_sa_member_state(r->mem[1]), FM_SA_MEMBER_TRAINING);
    assert_false(fm_sa_member_wiped(r->mem[1]));
    /* in place (x == y) works */
    assert_int_equal(fm_sa_member_mask(r->mem[1], r->x[1], r->x[1], 6, &mk, &e), FM_SA_OK);
    assert_ptr_equal(mk.y, r->x[1]);
    assert_int_equal(fm_sa_member_mask(r->mem[1], x, y, 6, &mk, &e), FM_SA_R_PHASE);
    /* a timeout: abort wipes */
    fm_sa_member_abort(r->mem[2]);
    s_expect_aborted(r->mem[2]);
    /* DONE of another cohort changes nothing; the right one wipes */
    assert_false(fm_sa_member_wiped(r->mem[3]));
    assert_int_equal(fm_sa_member_on_done(r->mem[3], 0x5001, 0, &e), FM_SA_R_COHORT);
    assert_false(fm_sa_member_wiped(r->mem[3]));
    assert_int_equal(fm_sa_member_on_done(r->mem[3], 0x5000, 0, &e), FM_SA_OK);
    assert_int_equal(fm_sa_member_state(r->mem[3]), FM_SA_MEMBER_DONE);
    assert_true(fm_sa_member_wiped(r->mem[3]));
    assert_int_equal(fm_sa_member_on_done(r->mem[1], 0x5000, 1, &e), FM_SA_OK);
    s_expect_aborted(r->mem[1]);
    sa_run_free(r);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_list),        cmocka_unit_test(test_shares_fwd),
        cmocka_unit_test(test_unmask_refusals), cmocka_unit_test(test_both_secrets),
        cmocka_unit_test(test_mask_and_wipe),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
