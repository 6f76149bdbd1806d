/* Unit tests of the secure-aggregation messages of fm_wire (docs/PROTOCOL.md §3.8): a whole
 * cohort of the real core (fm_sa_member, fm_sa_cohort) run through encode + decode at every
 * hop, with the unmasked sum checked against the plain sum; exact bytes of two messages
 * (written out by hand from the msgpack spec); every size and cap check on frames written
 * with msgpack-c (wrong key size, counts over the caps, boxes, kinds and shares of the
 * wrong length, a masked vector of the wrong length, indices out of range, invite params);
 * what the encoders refuse; cross-type refusals; every truncation; and the frame sizes of
 * docs/PROTOCOL.md at K = 10 and 50 with the mlp's m.
 *
 * Frames handed to the decoder are copied into allocations of exactly their length, so an
 * out-of-bounds read shows up under ASan. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "../support/fm_testutil.h"
#include "fm_err.h"
#include "fm_rng.h"
#include "fm_sa_codec.h"
#include "fm_sa_cohort.h"
#include "fm_sa_crypto.h"
#include "fm_sa_member.h"
#include "fm_wire.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The decoded forms of every secure-aggregation message (about 90 KB: allocated once). */
typedef struct {
    fm_wire_sa_invite_t inv;
    fm_sa_advertise_t adv;
    fm_wire_sa_key_list_t kl;
    fm_wire_sa_shares_t sh;
    fm_wire_sa_shares_fwd_t fwd;
    fm_wire_sa_masked_t mk;
    fm_wire_sa_unmask_req_t ur;
    fm_wire_sa_unmask_shares_t us;
    fm_wire_sa_end_t end;
} dec_t;

static dec_t *s_d;

static const fm_wire_type_t s_sa_types[] = {
    FM_WIRE_SA_INVITE,     FM_WIRE_SA_KEYS,          FM_WIRE_SA_KEY_LIST,
    FM_WIRE_SA_SHARES,     FM_WIRE_SA_SHARES_FWD,    FM_WIRE_SA_MASKED,
    FM_WIRE_SA_UNMASK_REQ, FM_WIRE_SA_UNMASK_SHARES, FM_WIRE_SA_DONE};
#define S_NSA (sizeof s_sa_types / sizeof s_sa_types[0])

/* Decode f[0..n) with the decoder of `type` (DONE: the DONE/ABORT decoder) into s_d. */
static int s_decode(fm_wire_type_t type, const void *f, size_t n, fm_errmsg_t *e)
{
    fm_wire_type_t t = FM_WIRE_NONE;
    switch (type) {
    case FM_WIRE_SA_INVITE: return fm_wire_decode_sa_invite(f, n, &s_d->inv, e);
    case FM_WIRE_SA_KEYS: return fm_wire_decode_sa_keys(f, n, &s_d->adv, e);
    case FM_WIRE_SA_KEY_LIST: return fm_wire_decode_sa_key_list(f, n, &s_d->kl, e);
    case FM_WIRE_SA_SHARES: return fm_wire_decode_sa_shares(f, n, &s_d->sh, e);
    case FM_WIRE_SA_SHARES_FWD: return fm_wire_decode_sa_shares_fwd(f, n, &s_d->fwd, e);
    case FM_WIRE_SA_MASKED: return fm_wire_decode_sa_masked(f, n, &s_d->mk, e);
    case FM_WIRE_SA_UNMASK_REQ: return fm_wire_decode_sa_unmask_req(f, n, &s_d->ur, e);
    case FM_WIRE_SA_UNMASK_SHARES: return fm_wire_decode_sa_unmask_shares(f, n, &s_d->us, e);
    case FM_WIRE_SA_DONE:
    case FM_WIRE_SA_ABORT: return fm_wire_decode_sa_end(f, n, &t, &s_d->end, e);
    default: fail_msg("no decoder for type %d", (int)type);
    }
    return -1;
}

/* The frame s_roundtrip decoded last (a MASKED_UPDATE's y points into it). */
static unsigned char *s_frame;

/* Decode buf as `type` from an exact copy (kept until the next call); peek agrees. */
static void s_roundtrip(fm_wire_type_t type, const fm_wire_buf_t *buf)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t t = FM_WIRE_NONE;
    free(s_frame);
    s_frame = fm_tu_exact(buf->data, buf->len);
    fm_tu_ok(fm_wire_peek(s_frame, buf->len, &t, &e), &e);
    assert_int_equal(t, type);
    fm_tu_ok(s_decode(type, s_frame, buf->len, &e), &e);
}

/* Share entries equal field by field (the struct has padding). */
static void s_same_shares(const fm_sa_share_entry_t *a, const fm_sa_share_entry_t *b, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        assert_int_equal(a[j].of, b[j].of);
        assert_int_equal(a[j].kind, b[j].kind);
        assert_memory_equal(a[j].share, b[j].share, FM_SA_KEY_BYTES);
    }
}

/* ---- a cohort of the real core, every message through the wire ------------------------- */

static void test_sa_cohort_over_wire(void **state)
{
    (void)state;
    enum { K = 5, M = 37 };
    fm_sa_params_t p0 = {0xc0ffee0123456789ull, K, 3, M, 1.0, fm_sa_codec_scale(K, 1.0)};
    fm_sa_deadlines_t dl = {10, 10, 10, 10};
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_sa_cohort_t *c = fm_sa_cohort_new(&p0, &dl, 0, &err, &e);
    assert_non_null(c);
    fm_sa_member_t *mem[K + 1] = {NULL};
    uint32_t x[K + 1][M], y[M], scratch[M];
    fm_rng_t rng;
    fm_rng_seed(&rng, 13, 0);
    for (uint32_t i = 1; i <= K; i++) {
        /* M0: the member takes its params from the decoded invite */
        fm_wire_sa_invite_t inv = {
            .p = p0, .index = i, .version = 7, .round = 3, .client = 100 + i, .deadlines = dl};
        snprintf(inv.trainer, sizeof inv.trainer, "t-%u", i);
        assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), 0);
        s_roundtrip(FM_WIRE_SA_INVITE, &buf);
        fm_wire_sa_invite_t *gi = &s_d->inv;
        assert_true(gi->p.cohort == p0.cohort && gi->p.k == p0.k && gi->p.t == p0.t &&
                    gi->p.m == p0.m && gi->p.clip == p0.clip &&
                    gi->p.scale_bits == p0.scale_bits);
        assert_true(gi->index == i && gi->version == 7 && gi->round == 3 &&
                    gi->client == 100 + i);
        assert_string_equal(gi->trainer, inv.trainer);
        assert_memory_equal(&gi->deadlines, &dl, sizeof dl);
        /* M1 */
        fm_sa_advertise_t adv;
        mem[i] = fm_sa_member_new(&gi->p, gi->index, &adv, &err, &e);
        assert_non_null(mem[i]);
        assert_int_equal(fm_wire_encode_sa_keys(&adv, &buf), 0);
        s_roundtrip(FM_WIRE_SA_KEYS, &buf);
        assert_true(s_d->adv.cohort == adv.cohort && s_d->adv.from == adv.from);
        assert_memory_equal(s_d->adv.c_pk, adv.c_pk, FM_SA_KEY_BYTES);
        assert_memory_equal(s_d->adv.s_pk, adv.s_pk, FM_SA_KEY_BYTES);
        assert_int_equal(fm_sa_cohort_on_keys(c, &s_d->adv, 0, &e), FM_SA_OK);
        for (uint32_t w = 0; w < M; w++)
            x[i][w] = (uint32_t)fm_rng_u64(&rng);
    }
    /* M2 -> M3 */
    fm_sa_key_list_t kl;
    assert_int_equal(fm_sa_cohort_key_list(c, &kl), 0);
    for (uint32_t i = 1; i <= K; i++) {
        assert_int_equal(fm_wire_encode_sa_key_list(&kl, i, &buf), 0);
        s_roundtrip(FM_WIRE_SA_KEY_LIST, &buf);
        assert_int_equal(s_d->kl.to, i);
        assert_true(s_d->kl.msg.cohort == kl.cohort && s_d->kl.msg.n == kl.n);
        assert_memory_equal(s_d->kl.msg.keys, kl.keys, kl.n * sizeof *kl.keys);
        fm_sa_shares_t sh;
        assert_int_equal(fm_sa_member_on_key_list(mem[i], &s_d->kl.msg, &sh, &e), FM_SA_OK);
        assert_int_equal(fm_wire_encode_sa_shares(&sh, &buf), 0);
        s_roundtrip(FM_WIRE_SA_SHARES, &buf);
        assert_true(s_d->sh.msg.from == i && s_d->sh.msg.n == K - 1);
        assert_memory_equal(s_d->sh.msg.boxes, sh.boxes, sh.n * sizeof *sh.boxes);
        assert_int_equal(fm_sa_cohort_on_shares(c, &s_d->sh.msg, 0, &e), FM_SA_OK);
    }
    /* M4, then M5 from all but member K (it drops after the shares) */
    for (uint32_t i = 1; i <= K; i++) {
        fm_sa_shares_fwd_t fwd;
        assert_int_equal(fm_sa_cohort_shares_fwd(c, i, &fwd), 0);
        assert_int_equal(fm_wire_encode_sa_shares_fwd(&fwd, &buf), 0);
        s_roundtrip(FM_WIRE_SA_SHARES_FWD, &buf);
        assert_true(s_d->fwd.msg.to == i && s_d->fwd.msg.n_u2 == K && s_d->fwd.msg.n == K - 1);
        assert_int_equal(fm_sa_member_on_shares_fwd(mem[i], &s_d->fwd.msg, &e), FM_SA_OK);
        if (i == K)
            continue;
        fm_sa_masked_t mk;
        assert_int_equal(fm_sa_member_mask(mem[i], x[i], y, M, &mk, &e), FM_SA_OK);
        assert_int_equal(fm_wire_encode_sa_masked(&mk, &buf), 0);
        s_roundtrip(FM_WIRE_SA_MASKED, &buf);
        fm_sa_masked_t got;
        fm_wire_sa_masked_view(&s_d->mk, scratch, &got);
        assert_true(got.cohort == p0.cohort && got.from == i && got.m == M);
        assert_memory_equal(scratch, y, sizeof y);
        assert_int_equal(fm_sa_cohort_on_masked(c, &got, 0, &e), FM_SA_OK);
    }
    fm_sa_cohort_tick(c, 11); /* the training deadline: U3 = 1..K-1, D = {K} */
    /* M6 -> M7 */
    fm_sa_unmask_req_t ur;
    assert_int_equal(fm_sa_cohort_unmask_req(c, &ur), 0);
    assert_true(ur.n_u3 == K - 1 && ur.n_d == 1);
    for (uint32_t i = 1; i < K; i++) {
        assert_int_equal(fm_wire_encode_sa_unmask_req(&ur, i, &buf), 0);
        s_roundtrip(FM_WIRE_SA_UNMASK_REQ, &buf);
        assert_true(s_d->ur.to == i && s_d->ur.msg.n_u3 == K - 1 && s_d->ur.msg.n_d == 1 &&
                    s_d->ur.msg.d[0] == K);
        fm_sa_unmask_shares_t us;
        assert_int_equal(fm_sa_member_on_unmask_req(mem[i], &s_d->ur.msg, &us, &e), FM_SA_OK);
        assert_int_equal(fm_wire_encode_sa_unmask_shares(&us, &buf), 0);
        s_roundtrip(FM_WIRE_SA_UNMASK_SHARES, &buf);
        assert_true(s_d->us.msg.from == i && s_d->us.msg.n == K);
        s_same_shares(s_d->us.msg.shares, us.shares, us.n);
        assert_int_equal(fm_sa_cohort_on_unmask_shares(c, &s_d->us.msg, 11, &e), FM_SA_OK);
    }
    /* the unmasked sum is the plain sum of the survivors' inputs, mod 2^32 */
    fm_sa_result_t res;
    assert_int_equal(fm_sa_cohort_result(c, &res), 0);
    assert_int_equal(res.survivors, K - 1);
    for (uint32_t w = 0; w < M; w++) {
        uint32_t want = 0;
        for (uint32_t i = 1; i < K; i++)
            want += x[i][w];
        assert_int_equal(res.sum[w], want);
    }
    /* M8: DONE to the survivors, ABORT to the dropped member */
    for (uint32_t i = 1; i <= K; i++) {
        fm_wire_type_t type = i < K ? FM_WIRE_SA_DONE : FM_WIRE_SA_ABORT, got = FM_WIRE_NONE;
        fm_wire_sa_end_t end = {.cohort = p0.cohort, .to = i};
        assert_int_equal(fm_wire_encode_sa_end(type, &end, &buf), 0);
        unsigned char *f = fm_tu_exact(buf.data, buf.len);
        fm_tu_ok(fm_wire_decode_sa_end(f, buf.len, &got, &s_d->end, &e), &e);
        free(f);
        assert_int_equal(got, type);
        assert_true(s_d->end.cohort == p0.cohort && s_d->end.to == i);
        assert_int_equal(
            fm_sa_member_on_done(mem[i], s_d->end.cohort, got == FM_WIRE_SA_ABORT, &e), FM_SA_OK);
        assert_int_equal(fm_sa_member_state(mem[i]),
                         i < K ? FM_SA_MEMBER_DONE : FM_SA_MEMBER_ABORTED);
        fm_sa_member_destroy(&mem[i]);
    }
    fm_sa_cohort_destroy(&c);
    fm_wire_buf_free(&buf);
}

/* ---- exact bytes ----------------------------------------------------------------------------
 */

static void s_same_bytes(const fm_wire_buf_t *got, const unsigned char *want, size_t n)
{
    if (got->len != n)
        fail_msg("encoded %zu bytes, expected %zu", got->len, n);
    for (size_t i = 0; i < n; i++)
        if (got->data[i] != want[i])
            fail_msg("byte %zu: 0x%02x, expected 0x%02x", i, got->data[i], want[i]);
}

/* ADVERTISE_KEYS and UNMASK_REQ, byte for byte as in docs/PROTOCOL.md §3.8; COHORT_ABORT. */
static void test_sa_exact_bytes(void **state)
{
    (void)state;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_sa_advertise_t adv = {.cohort = 0x0102030405060708ull, .from = 3};
    for (int j = 0; j < FM_SA_KEY_BYTES; j++) {
        adv.c_pk[j] = (uint8_t)j;
        adv.s_pk[j] = (uint8_t)(0x40 + j);
    }
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &buf), 0);
    static const unsigned char head[] = {
        0x86, 0xa1, 'v', 0x01, 0xa1, 't',  0xae, 'A',  'D',  'V',  'E',  'R',
        'T',  'I',  'S', 'E',  '_',  'K',  'E',  'Y',  'S',  0xa6, 'c',  'o',
        'h',  'o',  'r', 't',  0xcf, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0xa1, 'i', 0x03, 0xa3, 'c',  'p',  'k',  0xc4, 0x20};
    unsigned char want[sizeof head + 6 + 2 * FM_SA_KEY_BYTES];
    size_t n = 0;
    memcpy(want, head, sizeof head);
    n += sizeof head;
    memcpy(want + n, adv.c_pk, FM_SA_KEY_BYTES);
    n += FM_SA_KEY_BYTES;
    memcpy(want + n, "\xa3spk\xc4\x20", 6);
    n += 6;
    memcpy(want + n, adv.s_pk, FM_SA_KEY_BYTES);
    n += FM_SA_KEY_BYTES;
    assert_int_equal(n, sizeof want);
    s_same_bytes(&buf, want, n);
    assert_int_equal(buf.len, 116);

    static const uint32_t u3[] = {1, 2, 4}, d[] = {3};
    fm_sa_unmask_req_t ur = {.cohort = 0x1234, .n_u3 = 3, .u3 = u3, .n_d = 1, .d = d};
    assert_int_equal(fm_wire_encode_sa_unmask_req(&ur, 1, &buf), 0);
    static const unsigned char want_ur[] = {
        0x86, 0xa1, 'v',  0x01, 0xa1, 't',  0xaa, 'U',  'N',  'M',  'A',  'S',  'K',  '_',
        'R',  'E',  'Q',  0xa6, 'c',  'o',  'h',  'o',  'r',  't',  0xcd, 0x12, 0x34, 0xa1,
        'i',  0x01, 0xa2, 'u',  '3',  0xc4, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x00, 0x00, 0xa1, 'd',  0xc4, 0x04, 0x03, 0x00, 0x00, 0x00};
    s_same_bytes(&buf, want_ur, sizeof want_ur);

    fm_wire_sa_end_t end = {.cohort = 5, .to = 2};
    assert_int_equal(fm_wire_encode_sa_end(FM_WIRE_SA_ABORT, &end, &buf), 0);
    static const unsigned char want_ab[] = {
        0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xac, 'C', 'O', 'H', 'O', 'R',  'T',  '_', 'A',
        'B',  'O',  'R', 'T',  0xa6, 'c', 'o',  'h', 'o', 'r', 't', 0x05, 0xa1, 'i', 0x02};
    s_same_bytes(&buf, want_ab, sizeof want_ab);
    fm_wire_buf_free(&buf);
}

/* ---- hand-made frames (msgpack-c): every size and cap check ------------------------------ */

typedef enum { V_U, V_F, V_S, V_BIN, V_DL, V_ARR, V_DROP } vkind_t;

typedef struct {
    const char *key;
    vkind_t kind;
    uint64_t u;    /* V_U; V_DL, V_ARR: entries */
    double f;      /* V_F; V_DL: every entry but entry 2 */
    const char *s; /* V_S */
    size_t n;      /* V_BIN: bytes */
    int list;      /* V_BIN: 1 = LE indices 1, 2, ... (n / 4 of them, wrapping after 256) */
    uint32_t poke; /* V_BIN list: entry 1 set to this when poked; kind bins: byte 1 */
    int poked;     /* poke applies */
    double f2;     /* V_DL: entry 2 */
} kv_t;

#define KV_MAX 16
static unsigned char s_zero[FM_SA_MAX_K * FM_SA_BOX_BYTES + 64];

static void s_pack_kv(msgpack_packer *pk, const kv_t *kv)
{
    msgpack_pack_str(pk, strlen(kv->key));
    msgpack_pack_str_body(pk, kv->key, strlen(kv->key));
    switch (kv->kind) {
    case V_U: msgpack_pack_uint64(pk, kv->u); break;
    case V_F: msgpack_pack_double(pk, kv->f); break;
    case V_S:
        msgpack_pack_str(pk, strlen(kv->s));
        msgpack_pack_str_body(pk, kv->s, strlen(kv->s));
        break;
    case V_BIN: {
        assert_true(kv->n <= sizeof s_zero);
        unsigned char *b = calloc(1, kv->n + 1);
        assert_non_null(b);
        if (kv->list == 1)
            for (size_t j = 0; j < kv->n / 4; j++) {
                uint32_t x = (uint32_t)(j % FM_SA_MAX_K) + 1;
                if (j == 1 && kv->poked)
                    x = kv->poke;
                memcpy(b + 4 * j, &x, 4);
            }
        if (kv->list == 2) /* share kinds: all b, byte 1 poked */
            for (size_t j = 0; j < kv->n; j++)
                b[j] = (unsigned char)(j == 1 && kv->poked ? kv->poke : FM_SA_SHARE_B);
        msgpack_pack_bin(pk, kv->n);
        msgpack_pack_bin_body(pk, b, kv->n);
        free(b);
        break;
    }
    case V_DL:
        msgpack_pack_array(pk, (size_t)kv->u);
        for (uint64_t j = 0; j < kv->u; j++)
            msgpack_pack_double(pk, j == 2 ? kv->f2 : kv->f);
        break;
    case V_ARR:
        msgpack_pack_array(pk, (size_t)kv->u);
        for (uint64_t j = 0; j < kv->u; j++)
            msgpack_pack_uint64(pk, j + 1);
        break;
    case V_DROP: break;
    }
}

/* The base (valid) message of each type. */
static int s_base(fm_wire_type_t type, kv_t *kv)
{
    int n = 0;
    kv[n++] = (kv_t){"cohort", V_U, .u = 9};
    kv[n++] = (kv_t){"i", V_U, .u = 1};
    switch (type) {
    case FM_WIRE_SA_INVITE:
        kv[1].u = 2;
        kv[n++] = (kv_t){"k", V_U, .u = 5};
        kv[n++] = (kv_t){"thr", V_U, .u = 3};
        kv[n++] = (kv_t){"m", V_U, .u = 10};
        kv[n++] = (kv_t){"clip", V_F, .f = 1.0};
        kv[n++] = (kv_t){"s", V_U, .u = 20};
        kv[n++] = (kv_t){"mv", V_U, .u = 4};
        kv[n++] = (kv_t){"trainer", V_S, .s = "t-1"};
        kv[n++] = (kv_t){"client", V_U, .u = 8};
        kv[n++] = (kv_t){"dl", V_DL, .u = 4, .f = 1.0, .f2 = 2.0};
        break;
    case FM_WIRE_SA_KEYS:
        kv[n++] = (kv_t){"cpk", V_BIN, .n = 32};
        kv[n++] = (kv_t){"spk", V_BIN, .n = 32};
        break;
    case FM_WIRE_SA_KEY_LIST:
        kv[n++] = (kv_t){"u1", V_BIN, .n = 12, .list = 1};
        kv[n++] = (kv_t){"cpk", V_BIN, .n = 96};
        kv[n++] = (kv_t){"spk", V_BIN, .n = 96};
        break;
    case FM_WIRE_SA_SHARES:
        kv[n++] = (kv_t){"to", V_BIN, .n = 8, .list = 1};
        kv[n++] = (kv_t){"boxes", V_BIN, .n = 2 * FM_SA_BOX_BYTES};
        break;
    case FM_WIRE_SA_SHARES_FWD:
        kv[n++] = (kv_t){"u2", V_BIN, .n = 12, .list = 1};
        kv[n++] = (kv_t){"from", V_BIN, .n = 8, .list = 1};
        kv[n++] = (kv_t){"boxes", V_BIN, .n = 2 * FM_SA_BOX_BYTES};
        break;
    case FM_WIRE_SA_MASKED:
        kv[n++] = (kv_t){"m", V_U, .u = 3};
        kv[n++] = (kv_t){"y", V_BIN, .n = 12};
        break;
    case FM_WIRE_SA_UNMASK_REQ:
        kv[n++] = (kv_t){"u3", V_BIN, .n = 8, .list = 1};
        kv[n++] = (kv_t){"d", V_BIN, .n = 4, .list = 1};
        break;
    case FM_WIRE_SA_UNMASK_SHARES:
        kv[n++] = (kv_t){"of", V_BIN, .n = 12, .list = 1};
        kv[n++] = (kv_t){"kind", V_BIN, .n = 3, .list = 2};
        kv[n++] = (kv_t){"shares", V_BIN, .n = 96};
        break;
    case FM_WIRE_SA_DONE:
    case FM_WIRE_SA_ABORT: break;
    default: fail_msg("no base for type %d", (int)type);
    }
    return n;
}

/* Decode the base message of `type` with `change` applied (replacing the key of the same
 * name, or added when the base has none), expecting `code` and `needle`. */
static void s_case(fm_wire_type_t type, kv_t change, int code, const char *needle)
{
    kv_t kv[KV_MAX];
    int n = s_base(type, kv), found = 0, live = 0;
    for (int j = 0; j < n; j++)
        if (strcmp(kv[j].key, change.key) == 0) {
            kv[j] = change;
            found = 1;
        }
    if (!found)
        kv[n++] = change;
    for (int j = 0; j < n; j++)
        live += kv[j].kind != V_DROP;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)live + 2);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "t", 1);
    const char *tn = fm_wire_type_name(type);
    msgpack_pack_str(&pk, strlen(tn));
    msgpack_pack_str_body(&pk, tn, strlen(tn));
    for (int j = 0; j < n; j++)
        if (kv[j].kind != V_DROP)
            s_pack_kv(&pk, &kv[j]);
    unsigned char *f = fm_tu_exact(sb.data, sb.size);
    fm_errmsg_t e = {{0}};
    int rc = s_decode(type, f, sb.size, &e);
    if (rc != code)
        fail_msg("%s with key '%s' changed: expected %d, got %d (%s)", tn, change.key, code, rc,
                 e.msg);
    if (code == 0)
        fm_tu_ok(rc, &e);
    else {
        fm_tu_expect(rc, code, &e, needle);
        if (!strstr(e.msg, tn))
            fail_msg("'%s' does not name the message %s", e.msg, tn);
    }
    free(f);
    msgpack_sbuffer_destroy(&sb);
}

#define BIN(k, bytes) ((kv_t){k, V_BIN, .n = (bytes)})
#define LIST(k, entries) ((kv_t){k, V_BIN, .n = 4 * (size_t)(entries), .list = 1})
#define LISTP(k, entries, x)                                                                     \
    ((kv_t){k, V_BIN, .n = 4 * (size_t)(entries), .list = 1, .poke = (x), .poked = 1})
#define U(k, v) ((kv_t){k, V_U, .u = (v)})
#define DROP(k) ((kv_t){k, V_DROP, .u = 0})

static void test_sa_sizes_and_caps(void **state)
{
    (void)state;
    const uint32_t B = FM_SA_BOX_BYTES;
    /* every base decodes, and so does each with an unknown key */
    for (size_t j = 0; j < S_NSA; j++) {
        s_case(s_sa_types[j], U("cohort", 9), 0, NULL);
        s_case(s_sa_types[j], U("zz", 1), 0, NULL);
        s_case(s_sa_types[j], U("i", 0), FM_ERANGE, "i: index 0 outside 1..256");
        s_case(s_sa_types[j], U("i", 257), FM_ERANGE, "i: index 257");
        s_case(s_sa_types[j], U("i", 1ull << 32), FM_ERANGE, "i: value 4294967296");
        s_case(s_sa_types[j], DROP("i"), FM_EFORMAT, "i: missing key");
        s_case(s_sa_types[j], DROP("cohort"), FM_EFORMAT, "cohort: missing key");
        s_case(s_sa_types[j], (kv_t){"cohort", V_S, .s = "9"}, FM_EFORMAT, "cohort: expected");
    }
    /* ADVERTISE_KEYS: keys of exactly 32 bytes, as bins */
    s_case(FM_WIRE_SA_KEYS, BIN("cpk", 31), FM_EFORMAT, "cpk: bin of 31 bytes, expected 32");
    s_case(FM_WIRE_SA_KEYS, BIN("spk", 33), FM_EFORMAT, "spk: bin of 33 bytes");
    s_case(FM_WIRE_SA_KEYS, BIN("spk", 0), FM_EFORMAT, "spk: bin of 0 bytes");
    s_case(FM_WIRE_SA_KEYS, (kv_t){"cpk", V_S, .s = "k"}, FM_EFORMAT, "cpk: expected a bin");
    s_case(FM_WIRE_SA_KEYS, DROP("spk"), FM_EFORMAT, "spk: missing key");
    /* KEY_LIST: u1's count and entries, keys 32 x |u1| */
    s_case(FM_WIRE_SA_KEY_LIST, LIST("u1", 257), FM_ERANGE, "u1: 257 entries, at most 256");
    s_case(FM_WIRE_SA_KEY_LIST, BIN("u1", 10), FM_EFORMAT, "u1: bin of 10 bytes, not a multiple");
    s_case(FM_WIRE_SA_KEY_LIST, LISTP("u1", 3, 300), FM_ERANGE, "u1[1]: index 300");
    s_case(FM_WIRE_SA_KEY_LIST, LISTP("u1", 3, 0xffffffffu), FM_ERANGE,
           "u1[1]: index 4294967295");
    s_case(FM_WIRE_SA_KEY_LIST, BIN("cpk", 64), FM_EFORMAT,
           "cpk: bin of 64 bytes, expected 32 x 3 entries of u1 = 96");
    s_case(FM_WIRE_SA_KEY_LIST, BIN("spk", 97), FM_EFORMAT, "spk: bin of 97 bytes");
    s_case(FM_WIRE_SA_KEY_LIST, LIST("u1", 2), FM_EFORMAT,
           "cpk: bin of 96 bytes, expected 32 x 2");
    s_case(FM_WIRE_SA_KEY_LIST, (kv_t){"u1", V_ARR, .u = 3}, FM_EFORMAT, "u1: expected a bin");
    /* SHARES: at most 255 peers, boxes 124 x |to| */
    s_case(FM_WIRE_SA_SHARES, LIST("to", 256), FM_ERANGE, "to: 256 entries, at most 255");
    s_case(FM_WIRE_SA_SHARES, BIN("boxes", 2 * B - 1), FM_EFORMAT,
           "boxes: bin of 247 bytes, expected 124 x 2 entries of to = 248");
    s_case(FM_WIRE_SA_SHARES, BIN("boxes", 3 * B), FM_EFORMAT, "boxes: bin of 372 bytes");
    s_case(FM_WIRE_SA_SHARES, LISTP("to", 2, 0), FM_ERANGE, "to[1]: index 0");
    /* SHARES_FWD: u2 at most 256, from at most 255, boxes 124 x |from| */
    s_case(FM_WIRE_SA_SHARES_FWD, LIST("u2", 257), FM_ERANGE, "u2: 257 entries");
    s_case(FM_WIRE_SA_SHARES_FWD, LIST("from", 256), FM_ERANGE, "from: 256 entries, at most 255");
    s_case(FM_WIRE_SA_SHARES_FWD, LIST("from", 3), FM_EFORMAT,
           "boxes: bin of 248 bytes, expected 124 x 3 entries of from");
    s_case(FM_WIRE_SA_SHARES_FWD, (kv_t){"u2", V_ARR, .u = 3}, FM_EFORMAT, "u2: expected a bin");
    /* MASKED_UPDATE: m in 1..FM_SA_MAX_M, y exactly 4 m bytes */
    s_case(FM_WIRE_SA_MASKED, U("m", 0), FM_ERANGE, "m: 0 coordinates");
    s_case(FM_WIRE_SA_MASKED, U("m", FM_SA_MAX_M + 1ull), FM_ERANGE, "m: 268435457 coordinates");
    s_case(FM_WIRE_SA_MASKED, U("m", 1ull << 32), FM_ERANGE, "m: value 4294967296");
    s_case(FM_WIRE_SA_MASKED, BIN("y", 8), FM_EFORMAT, "y: bin of 8 bytes, expected 4 x 3");
    s_case(FM_WIRE_SA_MASKED, BIN("y", 13), FM_EFORMAT, "y: bin of 13 bytes");
    s_case(FM_WIRE_SA_MASKED, U("m", 4), FM_EFORMAT, "y: bin of 12 bytes, expected 4 x 4");
    s_case(FM_WIRE_SA_MASKED, DROP("y"), FM_EFORMAT, "y: missing key");
    /* UNMASK_REQ: at most 256 entries together */
    s_case(FM_WIRE_SA_UNMASK_REQ, LIST("u3", 200), 0, NULL);
    s_case(FM_WIRE_SA_UNMASK_REQ, LIST("d", 56), 0, NULL);
    s_case(FM_WIRE_SA_UNMASK_REQ, LIST("d", 255), FM_ERANGE, "u3, d: 2 + 255 entries");
    s_case(FM_WIRE_SA_UNMASK_REQ, LIST("u3", 257), FM_ERANGE, "u3: 257 entries");
    s_case(FM_WIRE_SA_UNMASK_REQ, BIN("d", 3), FM_EFORMAT, "d: bin of 3 bytes");
    /* UNMASK_SHARES: kinds 1 or 2, one byte each; shares 32 x |of| */
    s_case(FM_WIRE_SA_UNMASK_SHARES,
           (kv_t){"kind", V_BIN, .n = 3, .list = 2, .poke = 3, .poked = 1}, FM_ERANGE,
           "kind[1]: 3, expected 1 (b) or 2 (r_s)");
    s_case(FM_WIRE_SA_UNMASK_SHARES,
           (kv_t){"kind", V_BIN, .n = 3, .list = 2, .poke = 2, .poked = 1}, 0, NULL);
    s_case(FM_WIRE_SA_UNMASK_SHARES, BIN("kind", 2), FM_EFORMAT,
           "kind: bin of 2 bytes, expected 1 x 3");
    s_case(FM_WIRE_SA_UNMASK_SHARES, BIN("shares", 95), FM_EFORMAT, "shares: bin of 95 bytes");
    s_case(FM_WIRE_SA_UNMASK_SHARES, LIST("of", 257), FM_ERANGE, "of: 257 entries");
    /* COHORT_INVITE: the params as fm_sa_params_check takes them */
    s_case(FM_WIRE_SA_INVITE, U("k", 1), FM_ERANGE, "k: 1 members");
    s_case(FM_WIRE_SA_INVITE, U("k", 257), FM_ERANGE, "k: 257 members");
    s_case(FM_WIRE_SA_INVITE, U("i", 6), FM_ERANGE, "i: index 6 above k = 5");
    s_case(FM_WIRE_SA_INVITE, U("thr", 2), FM_ERANGE, "threshold");
    s_case(FM_WIRE_SA_INVITE, U("thr", 6), FM_ERANGE, "threshold");
    s_case(FM_WIRE_SA_INVITE, U("m", 0), FM_ERANGE, "m: 0 coordinates");
    s_case(FM_WIRE_SA_INVITE, U("s", 31), FM_ERANGE, "s: scale exponent 31");
    s_case(FM_WIRE_SA_INVITE, U("s", 29), FM_ERANGE, "could wrap");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"clip", V_F, .f = -1}, FM_ERANGE, "clip: -1");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"clip", V_F, .f = NAN}, FM_ERANGE, "clip: nan");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"dl", V_DL, .u = 3, .f = 1, .f2 = 1}, FM_EFORMAT,
           "dl: 3 entries, expected 4");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"dl", V_DL, .u = 4, .f = 1, .f2 = 0}, FM_ERANGE, "dl[2]: 0");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"dl", V_DL, .u = 4, .f = 1, .f2 = INFINITY}, FM_ERANGE,
           "dl[2]: inf");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"trainer", V_S, .s = "a b"}, FM_EFORMAT,
           "trainer: byte 0x20");
    s_case(FM_WIRE_SA_INVITE, (kv_t){"trainer", V_S, .s = ""}, FM_EFORMAT, "trainer: empty");
    s_case(FM_WIRE_SA_INVITE, DROP("client"), FM_EFORMAT, "client: missing key");
    s_case(FM_WIRE_SA_INVITE, U("round", 12), 0, NULL);
    assert_true(s_d->inv.round == 12 && s_d->inv.deadlines.train == 2.0);
}

/* ---- valid messages of every type, from the encoders ----------------------------------- */

static fm_sa_key_entry_t s_keys[FM_SA_MAX_K];
static fm_sa_box_entry_t s_boxes[FM_SA_MAX_K];
static fm_sa_share_entry_t s_shares[FM_SA_MAX_K];
static uint32_t s_list[FM_SA_MAX_K];

/* A message of `type` for a cohort of k members (boxes from/to k - 1 peers, every list k
 * long, UNMASK_REQ with u3 = 1..k-1 and d = {k}) and m coordinates, into buf. */
static void s_encode(fm_wire_type_t type, uint32_t k, uint32_t m, fm_wire_buf_t *buf)
{
    const uint64_t cohort = 0x9e3779b97f4a7c15ull;
    for (uint32_t j = 0; j < k; j++) {
        s_list[j] = j + 1;
        s_keys[j].index = j + 1;
        memset(s_keys[j].c_pk, (int)j, FM_SA_KEY_BYTES);
        memset(s_keys[j].s_pk, (int)(j + 100), FM_SA_KEY_BYTES);
        s_boxes[j].peer = j + 2;
        memset(s_boxes[j].box, (int)(j ^ 0x5a), FM_SA_BOX_BYTES);
        s_shares[j].of = j + 1;
        s_shares[j].kind = j + 1 == k ? FM_SA_SHARE_RS : FM_SA_SHARE_B;
        memset(s_shares[j].share, (int)(j * 3), FM_SA_KEY_BYTES);
    }
    int rc = -1;
    switch (type) {
    case FM_WIRE_SA_INVITE: {
        fm_wire_sa_invite_t inv = {.p = {cohort, k, k / 2 + 1, m, 1.0, fm_sa_codec_scale(k, 1.0)},
                                   .index = k,
                                   .version = 123456,
                                   .round = 0,
                                   .client = 4321,
                                   .deadlines = {30, 30, 600, 30}};
        snprintf(inv.trainer, sizeof inv.trainer, "host-a-123456");
        rc = fm_wire_encode_sa_invite(&inv, buf);
        break;
    }
    case FM_WIRE_SA_KEYS:
        rc = fm_wire_encode_sa_keys(&(fm_sa_advertise_t){.cohort = cohort, .from = k}, buf);
        break;
    case FM_WIRE_SA_KEY_LIST:
        rc = fm_wire_encode_sa_key_list(&(fm_sa_key_list_t){cohort, k, s_keys}, 1, buf);
        break;
    case FM_WIRE_SA_SHARES:
        rc = fm_wire_encode_sa_shares(&(fm_sa_shares_t){cohort, 1, k - 1, s_boxes}, buf);
        break;
    case FM_WIRE_SA_SHARES_FWD:
        rc = fm_wire_encode_sa_shares_fwd(
            &(fm_sa_shares_fwd_t){cohort, 1, k, s_list, k - 1, s_boxes}, buf);
        break;
    case FM_WIRE_SA_MASKED: {
        uint32_t *y = calloc(m, sizeof *y);
        assert_non_null(y);
        for (uint32_t j = 0; j < m; j++)
            y[j] = j * 2654435761u;
        rc = fm_wire_encode_sa_masked(&(fm_sa_masked_t){cohort, k, m, y}, buf);
        free(y);
        break;
    }
    case FM_WIRE_SA_UNMASK_REQ:
        rc = fm_wire_encode_sa_unmask_req(
            &(fm_sa_unmask_req_t){cohort, k - 1, s_list, 1, &s_list[k - 1]}, 1, buf);
        break;
    case FM_WIRE_SA_UNMASK_SHARES:
        rc = fm_wire_encode_sa_unmask_shares(&(fm_sa_unmask_shares_t){cohort, 1, k, s_shares},
                                             buf);
        break;
    case FM_WIRE_SA_DONE:
    case FM_WIRE_SA_ABORT:
        rc = fm_wire_encode_sa_end(type, &(fm_wire_sa_end_t){cohort, k}, buf);
        break;
    default: fail_msg("no encoder for type %d", (int)type);
    }
    assert_int_equal(rc, 0);
}

/* Round trips of the encoders' lists at the largest K; the encoders refuse what the
 * decoders would. */
static void test_sa_encoders(void **state)
{
    (void)state;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    const uint32_t k = FM_SA_MAX_K;
    s_encode(FM_WIRE_SA_KEY_LIST, k, 1, &buf);
    s_roundtrip(FM_WIRE_SA_KEY_LIST, &buf);
    assert_int_equal(s_d->kl.msg.n, k);
    assert_ptr_equal(s_d->kl.msg.keys, s_d->kl.keys);
    assert_memory_equal(s_d->kl.keys, s_keys, k * sizeof *s_keys);
    s_encode(FM_WIRE_SA_SHARES, k, 1, &buf);
    s_roundtrip(FM_WIRE_SA_SHARES, &buf);
    assert_int_equal(s_d->sh.msg.n, k - 1);
    assert_memory_equal(s_d->sh.boxes, s_boxes, (k - 1) * sizeof *s_boxes);
    s_encode(FM_WIRE_SA_SHARES_FWD, k, 1, &buf);
    s_roundtrip(FM_WIRE_SA_SHARES_FWD, &buf);
    assert_true(s_d->fwd.msg.n_u2 == k && s_d->fwd.msg.n == k - 1);
    assert_memory_equal(s_d->fwd.u2, s_list, k * 4);
    assert_memory_equal(s_d->fwd.boxes, s_boxes, (k - 1) * sizeof *s_boxes);
    s_encode(FM_WIRE_SA_UNMASK_SHARES, k, 1, &buf);
    s_roundtrip(FM_WIRE_SA_UNMASK_SHARES, &buf);
    assert_int_equal(s_d->us.msg.n, k);
    s_same_shares(s_d->us.shares, s_shares, k);
    s_encode(FM_WIRE_SA_UNMASK_REQ, k, 1, &buf);
    s_roundtrip(FM_WIRE_SA_UNMASK_REQ, &buf);
    assert_true(s_d->ur.msg.n_u3 == k - 1 && s_d->ur.msg.n_d == 1 && s_d->ur.d[0] == k);
    s_encode(FM_WIRE_SA_MASKED, 3, 1000, &buf);
    unsigned char *f = fm_tu_exact(buf.data, buf.len);
    fm_errmsg_t e = {{0}};
    fm_tu_ok(fm_wire_decode_sa_masked(f, buf.len, &s_d->mk, &e), &e);
    assert_true(s_d->mk.m == 1000 && (const unsigned char *)s_d->mk.y > f &&
                (const unsigned char *)s_d->mk.y + 4000 == f + buf.len); /* zero-copy, last */
    uint32_t y[1000];
    fm_sa_masked_t view;
    fm_wire_sa_masked_view(&s_d->mk, y, &view);
    assert_true(view.y == y && view.m == 1000 && view.from == 3);
    for (uint32_t j = 0; j < 1000; j++)
        assert_int_equal(y[j], j * 2654435761u);
    free(f);

    /* refusals */
    fm_sa_advertise_t adv = {.cohort = 1, .from = 0};
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &buf), FM_EARG);
    assert_int_equal(buf.len, 0);
    adv.from = FM_SA_MAX_K + 1;
    assert_int_equal(fm_wire_encode_sa_keys(&adv, &buf), FM_EARG);
    fm_sa_key_list_t kl = {1, FM_SA_MAX_K + 1, s_keys};
    assert_int_equal(fm_wire_encode_sa_key_list(&kl, 1, &buf), FM_EARG);
    kl.n = 3;
    assert_int_equal(fm_wire_encode_sa_key_list(&kl, 0, &buf), FM_EARG);
    s_keys[1].index = 0;
    assert_int_equal(fm_wire_encode_sa_key_list(&kl, 1, &buf), FM_EARG);
    s_keys[1].index = 2;
    kl.keys = NULL;
    assert_int_equal(fm_wire_encode_sa_key_list(&kl, 1, &buf), FM_EARG);
    fm_sa_shares_t sh = {1, 1, FM_SA_MAX_K, s_boxes};
    assert_int_equal(fm_wire_encode_sa_shares(&sh, &buf), FM_EARG);
    sh.n = 2;
    s_boxes[0].peer = 300;
    assert_int_equal(fm_wire_encode_sa_shares(&sh, &buf), FM_EARG);
    s_boxes[0].peer = 2;
    assert_int_equal(fm_wire_encode_sa_shares(&sh, &buf), 0);
    fm_sa_shares_fwd_t fwd = {1, 1, FM_SA_MAX_K + 1, s_list, 2, s_boxes};
    assert_int_equal(fm_wire_encode_sa_shares_fwd(&fwd, &buf), FM_EARG);
    fm_sa_masked_t mk = {1, 1, 0, s_list};
    assert_int_equal(fm_wire_encode_sa_masked(&mk, &buf), FM_EARG);
    mk.m = FM_SA_MAX_M + 1;
    assert_int_equal(fm_wire_encode_sa_masked(&mk, &buf), FM_EARG);
    mk.m = 2;
    mk.y = NULL;
    assert_int_equal(fm_wire_encode_sa_masked(&mk, &buf), FM_EARG);
    fm_sa_unmask_req_t ur = {1, 200, s_list, 57, s_list};
    assert_int_equal(fm_wire_encode_sa_unmask_req(&ur, 1, &buf), FM_EARG);
    ur.n_d = 56;
    assert_int_equal(fm_wire_encode_sa_unmask_req(&ur, 1, &buf), 0);
    s_shares[0].kind = 3;
    fm_sa_unmask_shares_t us = {1, 1, 2, s_shares};
    assert_int_equal(fm_wire_encode_sa_unmask_shares(&us, &buf), FM_EARG);
    s_shares[0].kind = FM_SA_SHARE_B;
    fm_wire_sa_end_t end = {1, 1};
    assert_int_equal(fm_wire_encode_sa_end(FM_WIRE_ACK, &end, &buf), FM_EARG);
    end.to = 0;
    assert_int_equal(fm_wire_encode_sa_end(FM_WIRE_SA_DONE, &end, &buf), FM_EARG);
    fm_wire_sa_invite_t inv = {
        .p = {1, 5, 3, 10, 1.0, 20}, .index = 5, .deadlines = {1, 1, 1, 1}};
    strcpy(inv.trainer, "t");
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), 0);
    inv.index = 6;
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), FM_EARG);
    inv.index = 5;
    inv.p.t = 2;
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), FM_EARG);
    inv.p.t = 3;
    inv.deadlines.unmask = 0;
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), FM_EARG);
    inv.deadlines.unmask = 1;
    strcpy(inv.trainer, "");
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &buf), FM_EARG);
    fm_wire_buf_free(&buf);
}

/* A frame of one type is refused by every other decoder (FM_EFORMAT naming its type), and
 * an older type by the new decoders; peek names each type. */
static void test_sa_cross_type(void **state)
{
    (void)state;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_errmsg_t e = {{0}};
    static const char *const names[] = {"COHORT_INVITE", "ADVERTISE_KEYS", "KEY_LIST",
                                        "SHARES",        "SHARES_FWD",     "MASKED_UPDATE",
                                        "UNMASK_REQ",    "UNMASK_SHARES",  "COHORT_DONE"};
    for (size_t a = 0; a < S_NSA; a++) {
        s_encode(s_sa_types[a], 4, 5, &buf);
        unsigned char *f = fm_tu_exact(buf.data, buf.len);
        fm_wire_type_t t = FM_WIRE_NONE;
        fm_tu_ok(fm_wire_peek(f, buf.len, &t, &e), &e);
        assert_int_equal(t, s_sa_types[a]);
        assert_string_equal(fm_wire_type_name(t), names[a]);
        assert_true(strlen(names[a]) <= 15);
        for (size_t b = 0; b < S_NSA; b++) {
            int rc = s_decode(s_sa_types[b], f, buf.len, &e);
            if (a == b)
                fm_tu_ok(rc, &e);
            else
                fm_tu_expect(rc, FM_EFORMAT, &e, names[a]);
        }
        fm_wire_ack_t ack;
        fm_tu_expect(fm_wire_decode_ack(f, buf.len, &ack, &e), FM_EFORMAT, &e, names[a]);
        fm_wire_decline_t dec;
        fm_tu_expect(fm_wire_decode_decline(f, buf.len, &dec, &e), FM_EFORMAT, &e, names[a]);
        free(f);
    }
    /* ABORT: the DONE/ABORT decoder only */
    s_encode(FM_WIRE_SA_ABORT, 4, 5, &buf);
    fm_wire_type_t t = FM_WIRE_NONE;
    fm_tu_ok(fm_wire_decode_sa_end(buf.data, buf.len, &t, &s_d->end, &e), &e);
    assert_int_equal(t, FM_WIRE_SA_ABORT);
    assert_string_equal(fm_wire_type_name(t), "COHORT_ABORT");
    fm_tu_expect(fm_wire_decode_sa_masked(buf.data, buf.len, &s_d->mk, &e), FM_EFORMAT, &e,
                 "COHORT_ABORT");
    /* an ACK is none of them */
    uint8_t ids[FM_WIRE_ID_LEN] = {1};
    fm_wire_ack_t a = {.boot = 1, .ids = ids, .count = 1};
    strcpy(a.status, "applied");
    assert_int_equal(fm_wire_encode_ack(&a, &buf), 0);
    for (size_t b = 0; b < S_NSA; b++)
        fm_tu_expect(s_decode(s_sa_types[b], buf.data, buf.len, &e), FM_EFORMAT, &e, "ACK");
    /* the last type is inside the 32-bit mask: peek and its decoder take it */
    assert_true(FM_WIRE_NTYPES <= 32 && FM_WIRE_SA_ABORT == FM_WIRE_NTYPES - 1);
    fm_wire_buf_free(&buf);
}

/* Every proper prefix of every message is FM_ETRUNC, for peek and the decoder. */
static void test_sa_truncation(void **state)
{
    (void)state;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_errmsg_t e = {{0}};
    for (size_t a = 0; a < S_NSA; a++) {
        s_encode(s_sa_types[a], 3, 4, &buf);
        for (size_t k = 0; k < buf.len; k++) {
            unsigned char *f = fm_tu_exact(buf.data, k);
            fm_wire_type_t t;
            fm_tu_expect(s_decode(s_sa_types[a], f, k, &e), FM_ETRUNC, &e, NULL);
            fm_tu_expect(fm_wire_peek(f, k, &t, &e), FM_ETRUNC, &e, NULL);
            free(f);
        }
        /* and one byte more is trailing garbage */
        unsigned char *f = calloc(1, buf.len + 1);
        assert_non_null(f);
        memcpy(f, buf.data, buf.len);
        fm_tu_expect(s_decode(s_sa_types[a], f, buf.len + 1, &e), FM_EFORMAT, &e, "trailing");
        free(f);
    }
    fm_wire_buf_free(&buf);
}

/* The frame sizes of docs/PROTOCOL.md §3.8 (K = 10 and 50, m = the mlp's 199,210 + 1). */
static void test_sa_frame_sizes(void **state)
{
    (void)state;
    static const size_t want[2][S_NSA] = {
        {151, 116, 733, 1198, 1249, 796897, 85, 431, 37},
        {151, 116, 3453, 6318, 6529, 796897, 245, 1911, 37},
    };
    static const uint32_t ks[2] = {10, 50};
    const uint32_t m = 199210 + 1; /* the mlp's parameters and the weight coordinate */
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    int mismatch = 0;
    for (int r = 0; r < 2; r++)
        for (size_t a = 0; a < S_NSA; a++) {
            s_encode(s_sa_types[a], ks[r], m, &buf);
            s_roundtrip(s_sa_types[a], &buf);
            printf("K=%u %-14s %zu\n", ks[r], fm_wire_type_name(s_sa_types[a]), buf.len);
            mismatch |= buf.len != want[r][a];
        }
    assert_false(mismatch);
    fm_wire_buf_free(&buf);
}

static int s_setup(void **state)
{
    (void)state;
    s_d = calloc(1, sizeof *s_d);
    return s_d && fm_sa_crypto_init() == 0 ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    free(s_d);
    free(s_frame);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sa_cohort_over_wire), cmocka_unit_test(test_sa_exact_bytes),
        cmocka_unit_test(test_sa_sizes_and_caps),   cmocka_unit_test(test_sa_encoders),
        cmocka_unit_test(test_sa_cross_type),       cmocka_unit_test(test_sa_truncation),
        cmocka_unit_test(test_sa_frame_sizes),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
