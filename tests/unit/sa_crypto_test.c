/* Unit tests of the secure-aggregation building blocks (shared/sa/fm_sa_crypto):
 *   - PRG known answers: the mask words of fm_sa_prg_add for fixed (key, cohort) equal
 *     ChaCha20 (DJB, 64-bit nonce) keystream words read little-endian, pinned from an
 *     independent implementation (OpenSSL's ChaCha20 through python3-cryptography 38, IV =
 *     counter 0 || cohort as 8 LE bytes): the all-zero vector of RFC 7539 A.1 #1, a key with
 *     its last byte 1, cohort id 1 (nonce byte order), and words 1024..1027 and 1099 of a
 *     non-trivial key/nonce (across the 4 KiB chunks the PRG is made in); adding with -1
 *     undoes +1 exactly; a wrong sign is refused;
 *   - crypto_kx: the pairwise seed is the same from both ends, differs per pair, and equals
 *     the one re-derived from the shared secret r_s (fm_sa_mask_keypair), as the aggregator
 *     computes it for a dropped member; an invalid peer key is refused;
 *   - Shamir over Z_L: random t-of-K round trips from random subsets of >= t shares (and
 *     all K), t - 1 shares give a wrong secret, bad inputs are refused;
 *   - share boxes: round trip; a flipped byte, the wrong recipient key, and a box of
 *     another cohort, recipient or phase are refused (FM_ECRYPTO / FM_EFORMAT). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "fm_err.h"
#include "fm_rng.h"
#include "fm_sa_crypto.h"

static int s_setup(void **state)
{
    (void)state;
    return fm_sa_crypto_init() == 0 ? 0 : -1;
}

/* Words of the mask for (key, cohort) at v = 0, sign +1. */
static void s_words(uint32_t *w, size_t m, const uint8_t key[32], uint64_t cohort)
{
    memset(w, 0, m * sizeof *w);
    assert_int_equal(fm_sa_prg_add(w, m, key, cohort, 1), 0);
}

static void test_prg_kat(void **state)
{
    (void)state;
    uint8_t key[32] = {0};
    uint32_t w[1100];
    const uint32_t zero_kat[8] = {0xade0b876, 0x903df1a0, 0xe56a5d40, 0x28bd8653,
                                  0xb819d2bd, 0x1aed8da0, 0xccef36a8, 0xc70d778b};
    s_words(w, 8, key, 0);
    assert_memory_equal(w, zero_kat, sizeof zero_kat);

    key[31] = 1;
    const uint32_t key1_kat[8] = {0x5af04045, 0x96b21f9f, 0x7b6e73d7, 0x963c8e20,
                                  0x83e14feb, 0x60d28846, 0x5209454f, 0x412d43ed};
    s_words(w, 8, key, 0);
    assert_memory_equal(w, key1_kat, sizeof key1_kat);

    key[31] = 0;
    const uint32_t nonce1_kat[8] = {0xd6df3fef, 0xfb7815c6, 0xbd35cff5, 0x803bd33d,
                                    0x34166309, 0xac421ed2, 0xd10b9633, 0x320de538};
    s_words(w, 8, key, 1); /* cohort 1 = nonce 01 00 00 00 00 00 00 00 */
    assert_memory_equal(w, nonce1_kat, sizeof nonce1_kat);

    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    s_words(w, 1100, key, UINT64_C(0x0123456789abcdef));
    const uint32_t head[4] = {0xc141f42e, 0x930922f0, 0xc8563029, 0x5390c59f};
    const uint32_t mid[4] = {0xa4f425be, 0x46851792, 0xcf0dae3a, 0x0391ddb4};
    assert_memory_equal(w, head, sizeof head);
    assert_memory_equal(w + 1024, mid, sizeof mid);
    assert_int_equal(w[1099], 0xa42d7fe2);

    /* a prefix is the same stream (m does not change the words) */
    uint32_t w2[1030];
    s_words(w2, 1030, key, UINT64_C(0x0123456789abcdef));
    assert_memory_equal(w2, w, sizeof w2);
}

static void test_prg_add_sub(void **state)
{
    (void)state;
    enum { M = 5000 };
    uint8_t key[32];
    fm_rng_t rng;
    fm_rng_seed(&rng, 3, 0);
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)fm_rng_below(&rng, 256);
    uint32_t *v = fm_tu_alloc(M, sizeof *v), *orig = fm_tu_alloc(M, sizeof *v),
             *w = fm_tu_alloc(M, sizeof *v);
    for (int i = 0; i < M; i++)
        orig[i] = v[i] = (uint32_t)fm_rng_u64(&rng);
    s_words(w, M, key, 42);
    assert_int_equal(fm_sa_prg_add(v, M, key, 42, 1), 0);
    for (int i = 0; i < M; i++)
        assert_true(v[i] == (uint32_t)(orig[i] + w[i])); /* wraps mod 2^32 */
    assert_int_equal(fm_sa_prg_add(v, M, key, 42, -1), 0);
    assert_memory_equal(v, orig, M * sizeof *v);
    /* another cohort (nonce) gives another stream */
    uint32_t *w43 = fm_tu_alloc(M, sizeof *v);
    s_words(w43, M, key, 43);
    assert_true(memcmp(w, w43, M * sizeof *w) != 0);
    assert_int_equal(fm_sa_prg_add(v, M, key, 42, 0), FM_EARG);
    assert_int_equal(fm_sa_prg_add(v, M, key, 42, 2), FM_EARG);
    assert_memory_equal(v, orig, M * sizeof *v);
    free(v);
    free(orig);
    free(w);
    free(w43);
}

static void test_kx_symmetry(void **state)
{
    (void)state;
    enum { N = 6 };
    fm_sa_keys_t k[N + 1];
    for (int i = 1; i <= N; i++)
        fm_sa_keys_new(&k[i]);
    uint8_t s[N + 1][N + 1][32];
    for (uint32_t u = 1; u <= N; u++)
        for (uint32_t v = 1; v <= N; v++)
            if (u != v)
                assert_int_equal(fm_sa_pair_seed(s[u][v], u, k[u].s_pk, k[u].s_sk, v, k[v].s_pk),
                                 0);
    for (uint32_t u = 1; u <= N; u++)
        for (uint32_t v = 1; v <= N; v++) {
            if (u == v)
                continue;
            assert_memory_equal(s[u][v], s[v][u], 32); /* both ends agree */
            for (uint32_t x = 1; x <= N; x++)
                for (uint32_t y = x + 1; y <= N; y++)
                    if ((x != u || y != v) && (x != v || y != u))
                        assert_true(memcmp(s[u][v], s[x][y], 32) != 0);
        }
    /* the aggregator's view of a dropped member 2: r_s re-derives the same key pair */
    uint8_t pk[32], sk[32], seed[32];
    assert_int_equal(fm_sa_mask_keypair(pk, sk, k[2].r_s), 0);
    assert_memory_equal(pk, k[2].s_pk, 32);
    assert_memory_equal(sk, k[2].s_sk, 32);
    assert_int_equal(fm_sa_pair_seed(seed, 2, pk, sk, 5, k[5].s_pk), 0);
    assert_memory_equal(seed, s[5][2], 32);
    assert_int_equal(fm_sa_pair_sign(2, 5), 1);
    assert_int_equal(fm_sa_pair_sign(5, 2), -1);
    /* an all-zero public key (low order) is refused, the seed zeroed */
    uint8_t bad[32] = {0};
    memset(seed, 0xaa, 32);
    assert_int_equal(fm_sa_pair_seed(seed, 1, k[1].s_pk, k[1].s_sk, 2, bad), FM_ECRYPTO);
    assert_memory_equal(seed, bad, 32);
    assert_int_equal(fm_sa_pair_seed(seed, 1, k[1].s_pk, k[1].s_sk, 1, k[2].s_pk), FM_EARG);
    /* r_s >= L is not a scalar */
    uint8_t big[32];
    memset(big, 0xff, 32);
    assert_int_equal(fm_sa_mask_keypair(pk, sk, big), FM_EARG);
    for (int i = 1; i <= N; i++)
        fm_sa_keys_wipe(&k[i]);
}

static void test_shamir(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 7, 0);
    static uint8_t shares[FM_SA_MAX_K][32], ys[FM_SA_MAX_K][32];
    uint32_t xs[FM_SA_MAX_K], order[FM_SA_MAX_K];
    uint8_t secret[32], got[32];
    for (int trial = 0; trial < 60; trial++) {
        uint32_t k = 1 + (uint32_t)fm_rng_below(&rng, trial < 50 ? 40 : FM_SA_MAX_K);
        uint32_t t = 1 + (uint32_t)fm_rng_below(&rng, k);
        fm_sa_keys_t keys;
        fm_sa_keys_new(&keys);
        memcpy(secret, keys.b, 32);
        assert_int_equal(fm_sa_shamir_split(shares, secret, t, k), 0);
        for (uint32_t i = 0; i < k; i++) {
            assert_true(fm_sa_scalar_ok(shares[i]));
            order[i] = i + 1;
        }
        fm_rng_shuffle_u32(&rng, order, k);
        /* any n >= t of them, in any order */
        uint32_t n = t + (uint32_t)fm_rng_below(&rng, k - t + 1);
        for (uint32_t i = 0; i < n; i++) {
            xs[i] = order[i];
            memcpy(ys[i], shares[order[i] - 1], 32);
        }
        assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, n), 0);
        assert_memory_equal(got, secret, 32);
        /* t - 1 of them: a wrong secret */
        if (t > 1) {
            assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, t - 1), 0);
            assert_true(memcmp(got, secret, 32) != 0);
        }
        fm_sa_keys_wipe(&keys);
    }
    /* refusals */
    uint8_t big[32];
    memset(big, 0xff, 32);
    assert_int_equal(fm_sa_shamir_split(shares, big, 2, 3), FM_EARG);
    assert_int_equal(fm_sa_shamir_split(shares, secret, 0, 3), FM_EARG);
    assert_int_equal(fm_sa_shamir_split(shares, secret, 4, 3), FM_EARG);
    assert_int_equal(fm_sa_shamir_split(shares, secret, 2, FM_SA_MAX_K + 1), FM_EARG);
    assert_int_equal(fm_sa_shamir_split(shares, secret, 2, 3), 0);
    xs[0] = 1;
    xs[1] = 1;
    memcpy(ys[0], shares[0], 32);
    memcpy(ys[1], shares[1], 32);
    assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, 2), FM_EARG);
    xs[1] = 0;
    assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, 2), FM_EARG);
    xs[1] = 2;
    memcpy(ys[1], big, 32);
    assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, 2), FM_EARG);
    assert_int_equal(fm_sa_shamir_combine(got, xs, (const uint8_t(*)[32])ys, 0), FM_EARG);
}

static void test_box(void **state)
{
    (void)state;
    fm_sa_keys_t a, b, c;
    fm_sa_keys_new(&a);
    fm_sa_keys_new(&b);
    fm_sa_keys_new(&c);
    fm_sa_plain_t p = {.from = 3, .to = 7, .cohort = 0xfeed, .phase = FM_SA_MSG_SHARES}, q;
    memcpy(p.share_rs, a.r_s, 32);
    memcpy(p.share_b, a.b, 32);
    uint8_t box[FM_SA_BOX_BYTES], bad[FM_SA_BOX_BYTES];
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_sa_box_seal(box, &p, b.c_pk, a.c_sk), 0);
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, b.c_sk, 3, 7, 0xfeed, &e), 0);
    assert_memory_equal(&q, &p, sizeof p);
    /* the shares are not in the box in the clear */
    assert_null(memmem(box, sizeof box, a.r_s, 8));
    /* every flipped byte (nonce, MAC, ciphertext) is refused */
    for (size_t i = 0; i < sizeof box; i++) {
        memcpy(bad, box, sizeof box);
        bad[i] ^= 0x01;
        assert_int_equal(fm_sa_box_open(&q, bad, a.c_pk, b.c_sk, 3, 7, 0xfeed, &e), FM_ECRYPTO);
    }
    assert_non_null(strstr(e.msg, "does not open"));
    /* a third party's key, or the wrong sender's */
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, c.c_sk, 3, 7, 0xfeed, NULL), FM_ECRYPTO);
    assert_int_equal(fm_sa_box_open(&q, box, c.c_pk, b.c_sk, 3, 7, 0xfeed, NULL), FM_ECRYPTO);
    /* opens, but the ids inside are checked: another cohort, recipient, sender, phase */
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, b.c_sk, 3, 7, 0xbeef, &e), FM_EFORMAT);
    assert_non_null(strstr(e.msg, "cohort"));
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, b.c_sk, 3, 8, 0xfeed, NULL), FM_EFORMAT);
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, b.c_sk, 4, 7, 0xfeed, NULL), FM_EFORMAT);
    uint8_t zero[sizeof q];
    memset(zero, 0, sizeof zero);
    assert_memory_equal(&q, zero, sizeof q); /* nothing handed out on failure */
    p.phase = FM_SA_MSG_UNMASK_SHARES;
    assert_int_equal(fm_sa_box_seal(box, &p, b.c_pk, a.c_sk), 0);
    assert_int_equal(fm_sa_box_open(&q, box, a.c_pk, b.c_sk, 3, 7, 0xfeed, &e), FM_EFORMAT);
    assert_non_null(strstr(e.msg, "phase"));
    /* an invalid recipient key */
    uint8_t zpk[32] = {0};
    assert_int_equal(fm_sa_box_seal(box, &p, zpk, a.c_sk), FM_ECRYPTO);
    fm_sa_keys_wipe(&a);
    fm_sa_keys_wipe(&b);
    fm_sa_keys_wipe(&c);
    uint8_t z[sizeof a];
    memset(z, 0, sizeof z);
    assert_memory_equal(&a, z, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prg_kat),     cmocka_unit_test(test_prg_add_sub),
        cmocka_unit_test(test_kx_symmetry), cmocka_unit_test(test_shamir),
        cmocka_unit_test(test_box),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
