/* fuzz_wire: libFuzzer target of the wire decoders (shared/svc/fm_wire.c), one input = one
 * ZeroMQ frame from the network.
 *
 * Every input goes through fm_wire_peek and through EVERY fm_wire_decode_* (the daemons
 * dispatch on peek's type; a frame of one type given to another decoder must be refused
 * too). Then, as the receivers do: the tensors of a MODEL or UPDATE are checked against
 * the layout the message names (logreg, mlp, cnn or the small encoded layout of
 * fuzz_layout.h; logreg when none) AND against that small layout, and when they pass,
 * every tensor is read through the codec's block reader (fm_codec_rd_t: indices, zstd
 * frames), tested for finiteness (raw tensors) and copied into a flat buffer
 * (fm_wire_tensors_copy decodes encoded ones); cohort and ACK ids are read through.
 * Properties checked on every input (FUZZ_ASSERT):
 *   - every error is the contract's one printable line (fuzz_msg_ok);
 *   - framing is decided once: when peek fails, every decoder fails with the same code;
 *     a decoder succeeds only on a frame whose peeked type is its own;
 *   - tensors that pass fm_wire_tensors_check: the block reader gives blocks of 1 ..
 *     FM_CODEC_BLOCK values, dense ones contiguous, indices strictly increasing and in
 *     range, every value read, then the end; fm_wire_tensors_copy fails with the reader's
 *     first error, else is FM_ENONFINITE exactly when the reader saw a NaN or infinity;
 *     for raw tensors fm_wire_tensors_finite agrees with both;
 *   - HELLO/HEARTBEAT/BYE, SNAPSHOT_REQ, ACK, DECLINE and the secure-aggregation messages
 *     (COHORT_INVITE .. COHORT_DONE/ABORT) survive encode(decode(frame)) unchanged; a decoded
 *     secure-aggregation message's lists are within their caps and its fm_sa struct points
 *     at the decoder's own arrays; a MASKED_UPDATE's vector is read whole.
 * With FM_FUZZ_SEEDS=1 every input must be a valid message of the type it peeks as, and a
 * MODEL/UPDATE that names the small layout must pass its checks and reads. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_codec.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_wire.h"
#include "fuzz_layout.h"
#include "fuzz_util.h"

/* Harness state, made once (reachable until exit: not a leak). */
static fm_model_t *s_models[4]; /* logreg, mlp, cnn, the small layout (fuzz_layout.h) */
static float *s_flat;           /* room for the largest model's parameters */
static fm_codec_rd_t *s_rd;     /* the block reader (its zstd contexts reused) */
static fm_wire_tensors_t *s_ts;
static fm_wire_buf_t s_buf;
static bool s_seeds;
static struct { /* the decoded secure-aggregation messages, and a second copy */
    fm_wire_sa_invite_t inv, inv2;
    fm_sa_advertise_t adv, adv2;
    fm_wire_sa_key_list_t kl, kl2;
    fm_wire_sa_shares_t sh, sh2;
    fm_wire_sa_shares_fwd_t fwd, fwd2;
    fm_wire_sa_masked_t mk, mk2;
    fm_wire_sa_unmask_req_t ur, ur2;
    fm_wire_sa_unmask_shares_t us, us2;
} * s_sa;
static uint32_t *s_words; /* room for a masked vector of any frame (grown as needed) */
static size_t s_nwords;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const names[3] = {"logreg", "mlp", "cnn"};
    size_t most = 0;
    for (int i = 0; i < 4; i++) {
        int err = 0;
        s_models[i] = i < 3 ? fm_model_new(names[i], &err) : fuzz_small_layout(&err);
        FUZZ_ASSERT(s_models[i]);
        if (fm_model_nparams(s_models[i]) > most)
            most = fm_model_nparams(s_models[i]);
    }
    s_flat = malloc(most * sizeof *s_flat);
    s_ts = malloc(sizeof *s_ts);
    s_sa = calloc(1, sizeof *s_sa);
    s_rd = calloc(1, sizeof *s_rd);
    FUZZ_ASSERT(s_flat && s_ts && s_sa && s_rd);
    s_seeds = fuzz_seeds_mode();
    return 0;
}

/* The layout named `model`, logreg when the name is not a model. */
static const fm_model_t *s_layout(const char *model)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(model, fm_model_name(s_models[i])) == 0)
            return s_models[i];
    return s_models[0];
}

/* Read every checked tensor through the block reader, in frame order, checking the blocks;
 * *nonfinite: a value read was NaN or infinite. 0 or the first error (a valid message). */
static int s_read_blocks(const fm_model_t *layout, bool *nonfinite)
{
    *nonfinite = false;
    for (int i = 0; i < s_ts->count; i++) {
        const fm_wire_tensor_t *x = &s_ts->t[i];
        const fm_view_t *v = fm_model_find(layout, x->name);
        FUZZ_ASSERT(v); /* fm_wire_tensors_check passed */
        fm_errmsg_t e = {{0}};
        int rc = fm_codec_rd_open(s_rd, &x->enc, v->numel, x->name, &e);
        fuzz_msg_ok(rc, &e);
        if (rc != 0)
            return rc;
        fm_codec_block_t b;
        size_t read = 0;
        long long last = -1;
        while ((rc = fm_codec_rd_next(s_rd, &b, &e)) == 1) {
            FUZZ_ASSERT(b.n >= 1 && b.n <= FM_CODEC_BLOCK && b.vals);
            if (b.idx) {
                for (size_t j = 0; j < b.n; j++) {
                    FUZZ_ASSERT((long long)b.idx[j] > last && b.idx[j] < v->numel);
                    last = b.idx[j];
                }
            } else
                FUZZ_ASSERT(x->enc.sparse == 0 && b.first == read);
            for (size_t j = 0; j < b.n; j++)
                if (!isfinite(b.vals[j]))
                    *nonfinite = true;
            read += b.n;
        }
        fuzz_msg_ok(rc, &e);
        if (rc != 0)
            return rc;
        FUZZ_ASSERT(read <= v->numel && (x->enc.sparse || read == v->numel));
        FUZZ_ASSERT(fm_codec_rd_next(s_rd, &b, &e) == 0); /* the end stays the end */
    }
    return 0;
}

/* What a receiver does with decoded tensors, against `layout`; returns the check's result
 * (0: they fit it) and *rrc the reader's. */
static int s_tensors_in(const fm_model_t *layout, int *rrc)
{
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_tensors_check(s_ts, layout, &e);
    fuzz_msg_ok(rc, &e);
    *rrc = rc;
    if (rc != 0)
        return rc;
    bool nonfinite = false;
    *rrc = s_read_blocks(layout, &nonfinite);
    FUZZ_ASSERT(*rrc == 0 || *rrc == FM_EFORMAT || *rrc == FM_ERANGE || *rrc == -ENOMEM);
    fm_errmsg_t e2 = {{0}}, e3 = {{0}};
    int crc = fm_wire_tensors_copy(s_ts, layout, s_flat, &e3);
    fuzz_msg_ok(crc, &e3);
    /* the first problem in frame order: a tensor that does not decode, or a non-finite
     * value in one read before it */
    if (*rrc != 0)
        FUZZ_ASSERT(crc == *rrc || (nonfinite && crc == FM_ENONFINITE));
    else
        FUZZ_ASSERT(crc == (nonfinite ? FM_ENONFINITE : 0));
    int frc = fm_wire_tensors_finite(s_ts, layout, &e2);
    fuzz_msg_ok(frc, &e2);
    FUZZ_ASSERT(frc == crc);
    return 0;
}

/* The tensors against the layout the message names and against the small layout; a seed
 * that names the small layout must pass both the check and the reads. */
static void s_tensors(const char *model)
{
    const fm_model_t *layout = s_layout(model), *small = s_models[3];
    int rrc = 0;
    int rc = s_tensors_in(layout, &rrc);
    if (s_seeds && layout == small && (rc != 0 || rrc != 0)) {
        fprintf(stderr, "fuzz: seed of the small layout refused: %s\n",
                fm_strerror(rc ? rc : rrc));
        abort();
    }
    if (layout != small)
        (void)s_tensors_in(small, &rrc);
}

/* Every byte of p[0..n) is read (ASan checks that it lies inside the frame). */
static unsigned s_touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned x = 0;
    for (size_t i = 0; i < n; i++)
        x += b[i];
    return x;
}

/* The result of one decoder against peek's. */
static void s_against_peek(int rc, const fm_errmsg_t *e, int prc, fm_wire_type_t peeked,
                           bool (*is_mine)(fm_wire_type_t))
{
    fuzz_msg_ok(rc, e);
    if (prc != 0)
        FUZZ_ASSERT(rc == prc);
    if (rc == 0)
        FUZZ_ASSERT(prc == 0 && is_mine(peeked));
}

static bool s_is_model(fm_wire_type_t t) { return t == FM_WIRE_MODEL; }
static bool s_is_update(fm_wire_type_t t) { return t == FM_WIRE_UPDATE; }
static bool s_is_member(fm_wire_type_t t)
{
    return t == FM_WIRE_HELLO || t == FM_WIRE_HEARTBEAT || t == FM_WIRE_BYE;
}
static bool s_is_snapshot(fm_wire_type_t t) { return t == FM_WIRE_SNAPSHOT_REQ; }
static bool s_is_metrics(fm_wire_type_t t) { return t == FM_WIRE_METRICS; }
static bool s_is_ack(fm_wire_type_t t) { return t == FM_WIRE_ACK; }
static bool s_is_decline(fm_wire_type_t t) { return t == FM_WIRE_DECLINE; }
static fm_wire_type_t s_want; /* the type s_is_want accepts */
static bool s_is_want(fm_wire_type_t t) { return t == s_want; }
static bool s_is_end(fm_wire_type_t t) { return t == FM_WIRE_SA_DONE || t == FM_WIRE_SA_ABORT; }

/* The secure-aggregation message of type `want`, decoded by `dec` (rc), against peek. Returns
 * 1 when decoded (the caller checks the round trip), and sets *mine. */
static int s_sa_judge(fm_wire_type_t want, int rc, const fm_errmsg_t *e, int prc,
                      fm_wire_type_t peeked, int *mine)
{
    s_want = want;
    s_against_peek(rc, e, prc, peeked, s_is_want);
    if (rc == 0 || peeked == want)
        *mine = rc;
    if (rc != 0 && peeked == want)
        fuzz_seed_valid(s_seeds, rc, e, fm_wire_type_name(want));
    return rc == 0;
}

static bool s_idx(uint32_t x) { return x >= 1 && x <= FM_SA_MAX_K; }

/* The secure-aggregation decoders: caps, pointers, encode(decode(frame)) == decode again. */
static void s_secagg(const uint8_t *data, size_t size, int prc, fm_wire_type_t peeked, int *mine)
{
    fm_errmsg_t e = {{0}};
    if (s_sa_judge(FM_WIRE_SA_INVITE, fm_wire_decode_sa_invite(data, size, &s_sa->inv, &e), &e,
                   prc, peeked, mine)) {
        FUZZ_ASSERT(fm_sa_params_check(&s_sa->inv.p, NULL) == 0);
        FUZZ_ASSERT(s_sa->inv.index >= 1 && s_sa->inv.index <= s_sa->inv.p.k);
        FUZZ_ASSERT(fm_wire_encode_sa_invite(&s_sa->inv, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_invite(s_buf.data, s_buf.len, &s_sa->inv2, NULL) == 0);
        const fm_wire_sa_invite_t *a = &s_sa->inv, *b = &s_sa->inv2; /* field by field: padding */
        FUZZ_ASSERT(a->p.cohort == b->p.cohort && a->p.k == b->p.k && a->p.t == b->p.t &&
                    a->p.m == b->p.m && a->p.clip == b->p.clip &&
                    a->p.scale_bits == b->p.scale_bits && a->index == b->index &&
                    a->version == b->version && a->round == b->round && a->client == b->client &&
                    strcmp(a->trainer, b->trainer) == 0 &&
                    memcmp(&a->deadlines, &b->deadlines, sizeof a->deadlines) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_KEYS, fm_wire_decode_sa_keys(data, size, &s_sa->adv, &e), &e, prc,
                   peeked, mine)) {
        FUZZ_ASSERT(s_idx(s_sa->adv.from));
        FUZZ_ASSERT(fm_wire_encode_sa_keys(&s_sa->adv, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_keys(s_buf.data, s_buf.len, &s_sa->adv2, NULL) == 0);
        FUZZ_ASSERT(memcmp(&s_sa->adv, &s_sa->adv2, sizeof s_sa->adv) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_KEY_LIST, fm_wire_decode_sa_key_list(data, size, &s_sa->kl, &e), &e,
                   prc, peeked, mine)) {
        const fm_wire_sa_key_list_t *a = &s_sa->kl, *b = &s_sa->kl2;
        FUZZ_ASSERT(s_idx(a->to) && a->msg.n <= FM_SA_MAX_K && a->msg.keys == a->keys);
        for (uint32_t j = 0; j < a->msg.n; j++)
            FUZZ_ASSERT(s_idx(a->keys[j].index));
        FUZZ_ASSERT(fm_wire_encode_sa_key_list(&a->msg, a->to, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_key_list(s_buf.data, s_buf.len, &s_sa->kl2, NULL) == 0);
        FUZZ_ASSERT(b->to == a->to && b->msg.cohort == a->msg.cohort && b->msg.n == a->msg.n &&
                    memcmp(a->keys, b->keys, a->msg.n * sizeof *a->keys) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_SHARES, fm_wire_decode_sa_shares(data, size, &s_sa->sh, &e), &e,
                   prc, peeked, mine)) {
        const fm_wire_sa_shares_t *a = &s_sa->sh, *b = &s_sa->sh2;
        FUZZ_ASSERT(s_idx(a->msg.from) && a->msg.n < FM_SA_MAX_K && a->msg.boxes == a->boxes);
        FUZZ_ASSERT(fm_wire_encode_sa_shares(&a->msg, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_shares(s_buf.data, s_buf.len, &s_sa->sh2, NULL) == 0);
        FUZZ_ASSERT(b->msg.from == a->msg.from && b->msg.cohort == a->msg.cohort &&
                    b->msg.n == a->msg.n &&
                    memcmp(a->boxes, b->boxes, a->msg.n * sizeof *a->boxes) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_SHARES_FWD,
                   fm_wire_decode_sa_shares_fwd(data, size, &s_sa->fwd, &e), &e, prc, peeked,
                   mine)) {
        const fm_wire_sa_shares_fwd_t *a = &s_sa->fwd, *b = &s_sa->fwd2;
        FUZZ_ASSERT(s_idx(a->msg.to) && a->msg.n_u2 <= FM_SA_MAX_K && a->msg.n < FM_SA_MAX_K &&
                    a->msg.u2 == a->u2 && a->msg.boxes == a->boxes);
        FUZZ_ASSERT(fm_wire_encode_sa_shares_fwd(&a->msg, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_shares_fwd(s_buf.data, s_buf.len, &s_sa->fwd2, NULL) == 0);
        FUZZ_ASSERT(b->msg.to == a->msg.to && b->msg.cohort == a->msg.cohort &&
                    b->msg.n_u2 == a->msg.n_u2 && b->msg.n == a->msg.n &&
                    memcmp(a->u2, b->u2, a->msg.n_u2 * sizeof *a->u2) == 0 &&
                    memcmp(a->boxes, b->boxes, a->msg.n * sizeof *a->boxes) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_MASKED, fm_wire_decode_sa_masked(data, size, &s_sa->mk, &e), &e,
                   prc, peeked, mine)) {
        const fm_wire_sa_masked_t *a = &s_sa->mk, *b = &s_sa->mk2;
        FUZZ_ASSERT(s_idx(a->from) && a->m >= 1 && a->m <= FM_SA_MAX_M);
        const uint8_t *y = a->y; /* the vector lies in the frame */
        FUZZ_ASSERT(y > data && (size_t)(y - data) <= size &&
                    4 * (size_t)a->m <= size - (size_t)(y - data));
        if (a->m > s_nwords) {
            free(s_words);
            s_words = malloc(4 * (size_t)a->m);
            FUZZ_ASSERT(s_words);
            s_nwords = a->m;
        }
        fm_sa_masked_t view;
        fm_wire_sa_masked_view(a, s_words, &view);
        FUZZ_ASSERT(view.y == s_words && view.m == a->m && view.from == a->from);
        FUZZ_ASSERT(fm_wire_encode_sa_masked(&view, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_masked(s_buf.data, s_buf.len, &s_sa->mk2, NULL) == 0);
        FUZZ_ASSERT(b->from == a->from && b->cohort == a->cohort && b->m == a->m &&
                    memcmp(b->y, a->y, 4 * (size_t)a->m) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_UNMASK_REQ, fm_wire_decode_sa_unmask_req(data, size, &s_sa->ur, &e),
                   &e, prc, peeked, mine)) {
        const fm_wire_sa_unmask_req_t *a = &s_sa->ur, *b = &s_sa->ur2;
        FUZZ_ASSERT(s_idx(a->to) && a->msg.n_u3 + a->msg.n_d <= FM_SA_MAX_K &&
                    a->msg.u3 == a->u3 && a->msg.d == a->d);
        FUZZ_ASSERT(fm_wire_encode_sa_unmask_req(&a->msg, a->to, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_unmask_req(s_buf.data, s_buf.len, &s_sa->ur2, NULL) == 0);
        FUZZ_ASSERT(b->to == a->to && b->msg.cohort == a->msg.cohort &&
                    b->msg.n_u3 == a->msg.n_u3 && b->msg.n_d == a->msg.n_d &&
                    memcmp(a->u3, b->u3, a->msg.n_u3 * sizeof *a->u3) == 0 &&
                    memcmp(a->d, b->d, a->msg.n_d * sizeof *a->d) == 0);
    }
    if (s_sa_judge(FM_WIRE_SA_UNMASK_SHARES,
                   fm_wire_decode_sa_unmask_shares(data, size, &s_sa->us, &e), &e, prc, peeked,
                   mine)) {
        const fm_wire_sa_unmask_shares_t *a = &s_sa->us, *b = &s_sa->us2;
        FUZZ_ASSERT(s_idx(a->msg.from) && a->msg.n <= FM_SA_MAX_K && a->msg.shares == a->shares);
        for (uint32_t j = 0; j < a->msg.n; j++)
            FUZZ_ASSERT(a->shares[j].kind == FM_SA_SHARE_B ||
                        a->shares[j].kind == FM_SA_SHARE_RS);
        FUZZ_ASSERT(fm_wire_encode_sa_unmask_shares(&a->msg, &s_buf) == 0);
        FUZZ_ASSERT(fm_wire_decode_sa_unmask_shares(s_buf.data, s_buf.len, &s_sa->us2, NULL) ==
                    0);
        FUZZ_ASSERT(b->msg.from == a->msg.from && b->msg.cohort == a->msg.cohort &&
                    b->msg.n == a->msg.n &&
                    memcmp(a->shares, b->shares, a->msg.n * sizeof *a->shares) == 0);
    }
    { /* COHORT_DONE / COHORT_ABORT */
        fm_wire_sa_end_t end, again;
        fm_wire_type_t type = FM_WIRE_NONE, type2 = FM_WIRE_NONE;
        fm_errmsg_t ee = {{0}};
        int rc = fm_wire_decode_sa_end(data, size, &type, &end, &ee);
        s_against_peek(rc, &ee, prc, peeked, s_is_end);
        if (rc == 0) {
            *mine = rc;
            FUZZ_ASSERT(type == peeked && s_idx(end.to));
            FUZZ_ASSERT(fm_wire_encode_sa_end(type, &end, &s_buf) == 0);
            FUZZ_ASSERT(fm_wire_decode_sa_end(s_buf.data, s_buf.len, &type2, &again, NULL) == 0);
            FUZZ_ASSERT(type2 == type && end.cohort == again.cohort && end.to == again.to);
        } else if (s_is_end(peeked)) {
            *mine = rc;
            fuzz_seed_valid(s_seeds, rc, &ee, fm_wire_type_name(peeked));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t peeked = FM_WIRE_NONE;
    int prc = fm_wire_peek(data, size, &peeked, &e);
    fuzz_msg_ok(prc, &e);
    fuzz_seed_valid(s_seeds, prc, &e, "frame");
    int mine = -1; /* rc of the decoder of the peeked type */

    { /* MODEL */
        fm_wire_model_t m;
        fm_errmsg_t em = {{0}};
        int rc = fm_wire_decode_model(data, size, &m, s_ts, &em);
        s_against_peek(rc, &em, prc, peeked, s_is_model);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(s_ts->count >= 0 && s_ts->count <= FM_WIRE_MAX_TENSORS);
            unsigned x = 0;
            for (uint32_t i = 0; m.cohort.present && i < m.cohort.count; i++)
                x += fm_wire_cohort_at(&m.cohort, i);
            (void)x;
            s_tensors(m.model);
        } else if (peeked == FM_WIRE_MODEL) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &em, "MODEL");
        }
    }
    { /* UPDATE */
        fm_wire_update_t u;
        fm_errmsg_t eu = {{0}};
        int rc = fm_wire_decode_update(data, size, &u, s_ts, &eu);
        s_against_peek(rc, &eu, prc, peeked, s_is_update);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(u.trainer[0] != '\0');
            s_tensors(u.model);
        } else if (peeked == FM_WIRE_UPDATE) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &eu, "UPDATE");
        }
    }
    { /* HELLO / HEARTBEAT / BYE, and encode(decode(frame)) */
        fm_wire_member_t m, again;
        fm_wire_type_t type = FM_WIRE_NONE, type2 = FM_WIRE_NONE;
        fm_errmsg_t eb = {{0}};
        int rc = fm_wire_decode_member(data, size, &type, &m, &eb);
        s_against_peek(rc, &eb, prc, peeked, s_is_member);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(type == peeked);
            if (type != FM_WIRE_HEARTBEAT) { /* only a HEARTBEAT carries these */
                m.updates_sent = 0;
                m.busy = 0;
            }
            FUZZ_ASSERT(fm_wire_encode_member(type, &m, &s_buf) == 0);
            FUZZ_ASSERT(fm_wire_decode_member(s_buf.data, s_buf.len, &type2, &again, NULL) == 0);
            FUZZ_ASSERT(type2 == type && memcmp(&m, &again, sizeof m) == 0);
        } else if (s_is_member(peeked)) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &eb, fm_wire_type_name(peeked));
        }
    }
    { /* SNAPSHOT_REQ */
        fm_wire_snapshot_req_t r, again;
        fm_errmsg_t es = {{0}};
        int rc = fm_wire_decode_snapshot_req(data, size, &r, &es);
        s_against_peek(rc, &es, prc, peeked, s_is_snapshot);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(fm_wire_encode_snapshot_req(&r, &s_buf) == 0);
            FUZZ_ASSERT(fm_wire_decode_snapshot_req(s_buf.data, s_buf.len, &again, NULL) == 0);
            FUZZ_ASSERT(memcmp(&r, &again, sizeof r) == 0);
        } else if (peeked == FM_WIRE_SNAPSHOT_REQ) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &es, "SNAPSHOT_REQ");
        }
    }
    { /* METRICS */
        fm_wire_metrics_t m;
        fm_errmsg_t et = {{0}};
        int rc = fm_wire_decode_metrics(data, size, &m, &et);
        s_against_peek(rc, &et, prc, peeked, s_is_metrics);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(m.model[0] != '\0');
        } else if (peeked == FM_WIRE_METRICS) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &et, "METRICS");
        }
    }
    { /* ACK */
        fm_wire_ack_t a, again;
        fm_errmsg_t ea = {{0}};
        int rc = fm_wire_decode_ack(data, size, &a, &ea);
        s_against_peek(rc, &ea, prc, peeked, s_is_ack);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(a.boot != 0 && a.count >= 1 && a.count <= FM_WIRE_MAX_ACK_IDS);
            (void)s_touch(a.ids, (size_t)a.count * FM_WIRE_ID_LEN);
            FUZZ_ASSERT(fm_wire_encode_ack(&a, &s_buf) == 0);
            FUZZ_ASSERT(fm_wire_decode_ack(s_buf.data, s_buf.len, &again, NULL) == 0);
            FUZZ_ASSERT(again.count == a.count && again.boot == a.boot &&
                        again.version == a.version && strcmp(again.status, a.status) == 0 &&
                        memcmp(again.ids, a.ids, (size_t)a.count * FM_WIRE_ID_LEN) == 0);
        } else if (peeked == FM_WIRE_ACK) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &ea, "ACK");
        }
    }
    { /* DECLINE, and encode(decode(frame)) */
        fm_wire_decline_t d, again;
        fm_errmsg_t ed = {{0}};
        int rc = fm_wire_decode_decline(data, size, &d, &ed);
        s_against_peek(rc, &ed, prc, peeked, s_is_decline);
        if (rc == 0) {
            mine = rc;
            FUZZ_ASSERT(d.round != 0 && d.clients.count >= 1 &&
                        d.clients.count <= FM_WIRE_MAX_COHORT && d.trainer[0] != '\0');
            (void)s_touch(d.clients.ids, (size_t)d.clients.count * 4);
            FUZZ_ASSERT(fm_wire_encode_decline(&d, &s_buf) == 0);
            FUZZ_ASSERT(fm_wire_decode_decline(s_buf.data, s_buf.len, &again, NULL) == 0);
            FUZZ_ASSERT(
                again.round == d.round && again.base == d.base &&
                again.clients.count == d.clients.count && strcmp(again.trainer, d.trainer) == 0 &&
                memcmp(again.clients.ids, d.clients.ids, (size_t)d.clients.count * 4) == 0);
        } else if (peeked == FM_WIRE_DECLINE) {
            mine = rc;
            fuzz_seed_valid(s_seeds, rc, &ed, "DECLINE");
        }
    }
    s_secagg(data, size, prc, peeked, &mine);
    /* a frame that peeks as a type was judged by that type's decoder */
    FUZZ_ASSERT(prc != 0 || mine != -1);
    return 0;
}
