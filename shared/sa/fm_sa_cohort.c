#include "fm_sa_cohort.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_sa_codec.h"
#include "fm_sa_crypto.h"

typedef uint8_t s_key_t[FM_SA_KEY_BYTES];

struct fm_sa_cohort {
    fm_sa_params_t p;
    fm_sa_codec_t codec;
    fm_sa_deadlines_t dl;
    fm_sa_phase_t phase;
    double phase_end; /* the current phase's deadline */
    char why[sizeof(fm_errmsg_t)];
    size_t k1; /* K + 1: per-member arrays are indexed 1..K */
    /* KEYS: one advertisement per member */
    uint8_t *has_keys;
    fm_sa_key_entry_t *keys; /* [j]: member j's keys; keys_list: U1 in order (M2) */
    fm_sa_key_entry_t *key_list;
    uint32_t *u1, n_u1;
    /* SHARES: box [from * k1 + to] */
    uint8_t *has_shares;
    fm_sa_box_entry_t *boxes;
    uint32_t *u2, n_u2;
    fm_sa_box_entry_t *fwd; /* M4 scratch */
    /* TRAINING: the running sum of the uploads */
    uint8_t *uploaded;
    uint32_t *sum;
    uint32_t *u3, n_u3, *d, n_d;
    /* UNMASKING: store [resp * k1 + of] with its kind (0: empty) */
    uint8_t *answered;
    uint8_t *kind;       /* [of]: FM_SA_SHARE_B for U3, FM_SA_SHARE_RS for D */
    uint8_t *store_kind; /* [resp * k1 + of] */
    s_key_t *store;
    uint32_t *resp, n_resp;
    double *decoded;
};

static const char *const S_PHASE[] = {"keys",      "shares", "training",
                                      "unmasking", "done",   "aborted"};

const char *fm_sa_phase_name(fm_sa_phase_t ph)
{
    return (unsigned)ph <= FM_SA_AT_ABORTED ? S_PHASE[ph] : "?";
}

static void s_wipe_secrets(fm_sa_cohort_t *c)
{
    if (c->store)
        fm_sa_wipe(c->store, c->k1 * c->k1 * sizeof *c->store);
    if (c->store_kind)
        memset(c->store_kind, 0, c->k1 * c->k1);
}

static void s_abort(fm_sa_cohort_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_abort(fm_sa_cohort_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    s_wipe_secrets(c);
    if (c->sum)
        fm_sa_wipe(c->sum, (size_t)c->p.m * sizeof *c->sum);
    if (c->decoded)
        fm_sa_wipe(c->decoded, (size_t)c->p.m * sizeof *c->decoded);
    c->phase = FM_SA_AT_ABORTED;
}

fm_sa_cohort_t *fm_sa_cohort_new(const fm_sa_params_t *p, const fm_sa_deadlines_t *d, double now,
                                 int *err, fm_errmsg_t *e)
{
    fm_sa_cohort_t *c = NULL;
    int rc = fm_sa_params_check(p, e);
    if (rc != 0)
        goto cleanup;
    const double dl[] = {d->keys, d->shares, d->train, d->unmask};
    for (int i = 0; i < 4; i++)
        if (!isfinite(dl[i]) || dl[i] <= 0) {
            rc = fm_errmsg_set(e, FM_EARG,
                               "secure aggregation: deadline %d = %g s must be finite and > 0", i,
                               dl[i]);
            goto cleanup;
        }
    c = calloc(1, sizeof *c);
    if (!c) {
        rc = -ENOMEM;
        goto cleanup;
    }
    c->p = *p;
    c->codec = (fm_sa_codec_t){p->k, p->clip, p->scale_bits};
    c->dl = *d;
    c->k1 = (size_t)p->k + 1;
    size_t k1 = c->k1;
    c->has_keys = calloc(k1, 1);
    c->keys = calloc(k1, sizeof *c->keys);
    c->key_list = calloc(k1, sizeof *c->key_list);
    c->u1 = calloc(k1, sizeof *c->u1);
    c->has_shares = calloc(k1, 1);
    c->boxes = calloc(k1 * k1, sizeof *c->boxes);
    c->u2 = calloc(k1, sizeof *c->u2);
    c->fwd = calloc(k1, sizeof *c->fwd);
    c->uploaded = calloc(k1, 1);
    c->sum = calloc(p->m, sizeof *c->sum);
    c->u3 = calloc(k1, sizeof *c->u3);
    c->d = calloc(k1, sizeof *c->d);
    c->answered = calloc(k1, 1);
    c->kind = calloc(k1, 1);
    c->store_kind = calloc(k1 * k1, 1);
    c->store = calloc(k1 * k1, sizeof *c->store);
    c->resp = calloc(k1, sizeof *c->resp);
    c->decoded = calloc(p->m, sizeof *c->decoded);
    if (!c->has_keys || !c->keys || !c->key_list || !c->u1 || !c->has_shares || !c->boxes ||
        !c->u2 || !c->fwd || !c->uploaded || !c->sum || !c->u3 || !c->d || !c->answered ||
        !c->kind || !c->store_kind || !c->store || !c->resp || !c->decoded) {
        rc = fm_errmsg_set(e, -ENOMEM,
                           "secure aggregation: out of memory for a cohort of %u "
                           "members and %u coordinates",
                           p->k, p->m);
        goto cleanup;
    }
    c->phase = FM_SA_AT_KEYS;
    c->phase_end = now + d->keys;
cleanup:
    if (rc != 0)
        fm_sa_cohort_destroy(&c);
    if (err)
        *err = rc;
    return c;
}

void fm_sa_cohort_destroy(fm_sa_cohort_t **pc)
{
    if (!pc || !*pc)
        return;
    fm_sa_cohort_t *c = *pc;
    s_wipe_secrets(c);
    if (c->sum)
        fm_sa_wipe(c->sum, (size_t)c->p.m * sizeof *c->sum);
    free(c->has_keys);
    free(c->keys);
    free(c->key_list);
    free(c->u1);
    free(c->has_shares);
    free(c->boxes);
    free(c->u2);
    free(c->fwd);
    free(c->uploaded);
    free(c->sum);
    free(c->u3);
    free(c->d);
    free(c->answered);
    free(c->kind);
    free(c->store_kind);
    free(c->store);
    free(c->resp);
    free(c->decoded);
    free(c);
    *pc = NULL;
}

fm_sa_phase_t fm_sa_cohort_phase(const fm_sa_cohort_t *c) { return c->phase; }

const char *fm_sa_cohort_abort_reason(const fm_sa_cohort_t *c)
{
    return c->phase == FM_SA_AT_ABORTED ? c->why : "";
}

void fm_sa_cohort_abort(fm_sa_cohort_t *c, const char *why)
{
    if (c->phase != FM_SA_AT_DONE && c->phase != FM_SA_AT_ABORTED)
        s_abort(c, "%s", why);
}

/* ---- closing the phases ------------------------------------------------------------------ */

static void s_close_keys(fm_sa_cohort_t *c, double now)
{
    c->n_u1 = 0;
    for (uint32_t j = 1; j <= c->p.k; j++)
        if (c->has_keys[j]) {
            c->key_list[c->n_u1] = c->keys[j];
            c->u1[c->n_u1++] = j;
        }
    if (c->n_u1 < c->p.t) {
        s_abort(c, "keys: %u of %u members advertised keys, threshold %u", c->n_u1, c->p.k,
                c->p.t);
        return;
    }
    c->phase = FM_SA_AT_SHARES;
    c->phase_end = now + c->dl.shares;
}

static void s_close_shares(fm_sa_cohort_t *c, double now)
{
    c->n_u2 = 0;
    for (uint32_t i = 0; i < c->n_u1; i++)
        if (c->has_shares[c->u1[i]])
            c->u2[c->n_u2++] = c->u1[i];
    if (c->n_u2 < c->p.t) {
        s_abort(c, "shares: %u of %u members of U1 sent their shares, threshold %u", c->n_u2,
                c->n_u1, c->p.t);
        return;
    }
    c->phase = FM_SA_AT_TRAINING;
    c->phase_end = now + c->dl.train;
}

static void s_close_training(fm_sa_cohort_t *c, double now)
{
    c->n_u3 = c->n_d = 0;
    for (uint32_t i = 0; i < c->n_u2; i++) {
        uint32_t j = c->u2[i];
        if (c->uploaded[j]) {
            c->u3[c->n_u3++] = j;
            c->kind[j] = FM_SA_SHARE_B;
        } else {
            c->d[c->n_d++] = j;
            c->kind[j] = FM_SA_SHARE_RS;
        }
    }
    if (c->n_u3 < c->p.t) {
        s_abort(c, "training: %u of %u members of U2 uploaded, threshold %u", c->n_u3, c->n_u2,
                c->p.t);
        return;
    }
    c->phase = FM_SA_AT_UNMASKING;
    c->phase_end = now + c->dl.unmask;
}

/* Reconstruct member j's secret of kind c->kind[j] from the first t responders. */
static int s_reconstruct(fm_sa_cohort_t *c, uint32_t j, uint8_t secret[FM_SA_KEY_BYTES])
{
    uint32_t xs[FM_SA_MAX_K];
    s_key_t ys[FM_SA_MAX_K];
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_resp && n < c->p.t; i++) {
        uint32_t r = c->resp[i];
        size_t at = r * c->k1 + j;
        FM_ASSERT(c->store_kind[at] == c->kind[j]);
        xs[n] = r;
        memcpy(ys[n], c->store[at], FM_SA_KEY_BYTES);
        n++;
    }
    int rc = fm_sa_shamir_combine(secret, xs, (const s_key_t *)ys, n);
    fm_sa_wipe(ys, sizeof ys[0] * n);
    return rc;
}

static void s_finish(fm_sa_cohort_t *c)
{
    uint8_t secret[FM_SA_KEY_BYTES], key[FM_SA_KEY_BYTES], pk[FM_SA_KEY_BYTES],
        sk[FM_SA_KEY_BYTES];
    const uint64_t cohort = c->p.cohort;
    const uint32_t m = c->p.m;
    c->n_resp = 0;
    for (uint32_t i = 0; i < c->n_u3; i++)
        if (c->answered[c->u3[i]])
            c->resp[c->n_resp++] = c->u3[i];
    if (c->n_resp < c->p.t) {
        s_abort(c, "unmasking: %u of %u members of U3 sent their shares, threshold %u", c->n_resp,
                c->n_u3, c->p.t);
        return;
    }
    /* survivors: remove the self-masks */
    for (uint32_t i = 0; i < c->n_u3; i++) {
        uint32_t u = c->u3[i];
        if (s_reconstruct(c, u, secret) != 0) {
            s_abort(c, "unmasking: the self-mask seed of member %u does not reconstruct", u);
            goto cleanup;
        }
        fm_sa_self_key(key, secret);
        fm_sa_prg_add(c->sum, m, key, cohort, -1);
    }
    /* dropped members: re-derive their mask key, remove their masks with every survivor */
    for (uint32_t i = 0; i < c->n_d; i++) {
        uint32_t v = c->d[i];
        if (s_reconstruct(c, v, secret) != 0 || fm_sa_mask_keypair(pk, sk, secret) != 0 ||
            memcmp(pk, c->keys[v].s_pk, FM_SA_KEY_BYTES) != 0) {
            s_abort(c,
                    "unmasking: the reconstructed mask key of dropped member %u is not the one "
                    "it advertised",
                    v);
            goto cleanup;
        }
        for (uint32_t k = 0; k < c->n_u3; k++) {
            uint32_t u = c->u3[k];
            if (fm_sa_pair_seed(key, v, pk, sk, u, c->keys[u].s_pk) != 0) {
                s_abort(c, "unmasking: mask key of member %u refused by crypto_kx", u);
                goto cleanup;
            }
            /* u added sign(u, v) PRG(s_uv): take it out */
            fm_sa_prg_add(c->sum, m, key, cohort, -fm_sa_pair_sign(u, v));
        }
    }
    fm_sa_codec_decode(&c->codec, c->sum, m, c->decoded);
    s_wipe_secrets(c);
    c->phase = FM_SA_AT_DONE;
cleanup:
    fm_sa_wipe(secret, sizeof secret);
    fm_sa_wipe(key, sizeof key);
    fm_sa_wipe(sk, sizeof sk);
}

static void s_close(fm_sa_cohort_t *c, double now)
{
    switch (c->phase) {
    case FM_SA_AT_KEYS: s_close_keys(c, now); break;
    case FM_SA_AT_SHARES: s_close_shares(c, now); break;
    case FM_SA_AT_TRAINING: s_close_training(c, now); break;
    case FM_SA_AT_UNMASKING: s_finish(c); break;
    default: break;
    }
}

int fm_sa_cohort_tick(fm_sa_cohort_t *c, double now)
{
    if (c->phase >= FM_SA_AT_DONE || now < c->phase_end)
        return 0;
    s_close(c, now);
    return 1;
}

/* The checks every handler starts with: deadline, cohort, phase, sender, replay. `set` is
 * the list the sender must be in (NULL: 1..K), `seen` the per-member flags of this phase. */
static fm_sa_reason_t s_gate(fm_sa_cohort_t *c, double now, uint64_t cohort, fm_sa_phase_t want,
                             const char *what, uint32_t from, const uint32_t *set, uint32_t n_set,
                             const uint8_t *seen, fm_errmsg_t *e)
{
    fm_sa_cohort_tick(c, now);
    if (cohort != c->p.cohort) {
        fm_errmsg_set(e, FM_EFORMAT, "%s from member %u for cohort %016llx, this is %016llx",
                      what, from, (unsigned long long)cohort, (unsigned long long)c->p.cohort);
        return FM_SA_R_COHORT;
    }
    if (c->phase != want) {
        fm_errmsg_set(e, FM_EFORMAT, "%s from member %u in phase %s (expected in %s)", what, from,
                      fm_sa_phase_name(c->phase), fm_sa_phase_name(want));
        return FM_SA_R_PHASE;
    }
    if (from < 1 || from > c->p.k || (set && !fm_sa_list_has(set, n_set, from))) {
        fm_errmsg_set(e, FM_EFORMAT, "%s from member %u, who may not send it", what, from);
        return FM_SA_R_SENDER;
    }
    if (seen[from]) {
        fm_errmsg_set(e, FM_EFORMAT, "%s from member %u again", what, from);
        return FM_SA_R_REPLAY;
    }
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_cohort_on_keys(fm_sa_cohort_t *c, const fm_sa_advertise_t *in, double now,
                                    fm_errmsg_t *e)
{
    fm_sa_reason_t r = s_gate(c, now, in->cohort, FM_SA_AT_KEYS, "ADVERTISE_KEYS", in->from, NULL,
                              0, c->has_keys, e);
    if (r != FM_SA_OK)
        return r;
    if (memcmp(in->c_pk, in->s_pk, FM_SA_KEY_BYTES) == 0) {
        fm_errmsg_set(e, FM_EFORMAT, "ADVERTISE_KEYS from member %u: c_pk equals s_pk", in->from);
        return FM_SA_R_KEY;
    }
    for (uint32_t j = 1; j <= c->p.k; j++) {
        if (!c->has_keys[j])
            continue;
        const uint8_t *a[2] = {in->c_pk, in->s_pk}, *b[2] = {c->keys[j].c_pk, c->keys[j].s_pk};
        for (int x = 0; x < 2; x++)
            for (int y = 0; y < 2; y++)
                if (memcmp(a[x], b[y], FM_SA_KEY_BYTES) == 0) {
                    fm_errmsg_set(e, FM_EFORMAT,
                                  "ADVERTISE_KEYS from member %u repeats a key of member %u",
                                  in->from, j);
                    return FM_SA_R_KEY;
                }
    }
    c->has_keys[in->from] = 1;
    c->keys[in->from].index = in->from;
    memcpy(c->keys[in->from].c_pk, in->c_pk, FM_SA_KEY_BYTES);
    memcpy(c->keys[in->from].s_pk, in->s_pk, FM_SA_KEY_BYTES);
    uint32_t n = 0;
    for (uint32_t j = 1; j <= c->p.k; j++)
        n += c->has_keys[j];
    if (n == c->p.k)
        s_close(c, now);
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_cohort_on_shares(fm_sa_cohort_t *c, const fm_sa_shares_t *in, double now,
                                      fm_errmsg_t *e)
{
    fm_sa_reason_t r = s_gate(c, now, in->cohort, FM_SA_AT_SHARES, "SHARES", in->from, c->u1,
                              c->n_u1, c->has_shares, e);
    if (r != FM_SA_OK)
        return r;
    if (in->n != c->n_u1 - 1) {
        fm_errmsg_set(e, FM_EFORMAT, "SHARES from member %u: %u boxes for %u other members of U1",
                      in->from, in->n, c->n_u1 - 1);
        return FM_SA_R_FORMAT;
    }
    for (uint32_t i = 0, b = 0; i < c->n_u1; i++) {
        uint32_t j = c->u1[i];
        if (j == in->from)
            continue;
        if (in->boxes[b].peer != j) {
            fm_errmsg_set(e, FM_EFORMAT,
                          "SHARES from member %u: box %u is to member %u, "
                          "expected %u",
                          in->from, b, in->boxes[b].peer, j);
            return FM_SA_R_FORMAT;
        }
        b++;
    }
    for (uint32_t b = 0; b < in->n; b++)
        c->boxes[in->from * c->k1 + in->boxes[b].peer] = in->boxes[b];
    c->has_shares[in->from] = 1;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_u1; i++)
        n += c->has_shares[c->u1[i]];
    if (n == c->n_u1)
        s_close(c, now);
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_cohort_on_masked(fm_sa_cohort_t *c, const fm_sa_masked_t *in, double now,
                                      fm_errmsg_t *e)
{
    fm_sa_reason_t r = s_gate(c, now, in->cohort, FM_SA_AT_TRAINING, "MASKED_UPDATE", in->from,
                              c->u2, c->n_u2, c->uploaded, e);
    if (r != FM_SA_OK)
        return r;
    if (in->m != c->p.m) {
        fm_errmsg_set(e, FM_EFORMAT,
                      "MASKED_UPDATE from member %u: %u coordinates, the cohort "
                      "has %u",
                      in->from, in->m, c->p.m);
        return FM_SA_R_FORMAT;
    }
    for (uint32_t i = 0; i < c->p.m; i++)
        c->sum[i] += in->y[i];
    c->uploaded[in->from] = 1;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_u2; i++)
        n += c->uploaded[c->u2[i]];
    if (n == c->n_u2)
        s_close(c, now);
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_cohort_on_unmask_shares(fm_sa_cohort_t *c, const fm_sa_unmask_shares_t *in,
                                             double now, fm_errmsg_t *e)
{
    fm_sa_reason_t r = s_gate(c, now, in->cohort, FM_SA_AT_UNMASKING, "UNMASK_SHARES", in->from,
                              c->u3, c->n_u3, c->answered, e);
    if (r != FM_SA_OK)
        return r;
    if (in->n != c->n_u2) {
        fm_errmsg_set(e, FM_EFORMAT,
                      "UNMASK_SHARES from member %u: %u shares for %u members "
                      "of U2",
                      in->from, in->n, c->n_u2);
        return FM_SA_R_FORMAT;
    }
    for (uint32_t i = 0; i < in->n; i++) {
        const fm_sa_share_entry_t *s = &in->shares[i];
        if (s->of != c->u2[i]) {
            fm_errmsg_set(e, FM_EFORMAT,
                          "UNMASK_SHARES from member %u: share %u is of member "
                          "%u, expected %u",
                          in->from, i, s->of, c->u2[i]);
            return FM_SA_R_FORMAT;
        }
        if (s->kind != c->kind[s->of]) {
            fm_errmsg_set(e, FM_EFORMAT,
                          "UNMASK_SHARES from member %u: a %s share of member %u, "
                          "who %s",
                          in->from,
                          s->kind == FM_SA_SHARE_B    ? "b"
                          : s->kind == FM_SA_SHARE_RS ? "r_s"
                                                      : "unknown",
                          s->of,
                          c->kind[s->of] == FM_SA_SHARE_B ? "survived (b only)"
                                                          : "dropped (r_s only)");
            return FM_SA_R_UNMASK;
        }
        if (!fm_sa_scalar_ok(s->share)) {
            fm_errmsg_set(e, FM_EFORMAT,
                          "UNMASK_SHARES from member %u: share of member %u is "
                          "not a scalar",
                          in->from, s->of);
            return FM_SA_R_FORMAT;
        }
    }
    for (uint32_t i = 0; i < in->n; i++) {
        const fm_sa_share_entry_t *s = &in->shares[i];
        /* the invariant: no slot of this member holds a share of the other kind */
        for (uint32_t x = 1; x <= c->p.k; x++) {
            uint8_t k = c->store_kind[x * c->k1 + s->of];
            FM_ASSERT(k == 0 || k == s->kind);
        }
        size_t at = in->from * c->k1 + s->of;
        memcpy(c->store[at], s->share, FM_SA_KEY_BYTES);
        c->store_kind[at] = s->kind;
    }
    c->answered[in->from] = 1;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_u3; i++)
        n += c->answered[c->u3[i]];
    if (n == c->n_u3)
        s_close(c, now);
    return FM_SA_OK;
}

int fm_sa_cohort_key_list(const fm_sa_cohort_t *c, fm_sa_key_list_t *out)
{
    memset(out, 0, sizeof *out);
    if (c->phase == FM_SA_AT_KEYS || c->n_u1 < c->p.t)
        return FM_ESTATE;
    out->cohort = c->p.cohort;
    out->n = c->n_u1;
    out->keys = c->key_list;
    return 0;
}

int fm_sa_cohort_shares_fwd(fm_sa_cohort_t *c, uint32_t to, fm_sa_shares_fwd_t *out)
{
    memset(out, 0, sizeof *out);
    if (c->phase < FM_SA_AT_TRAINING || c->n_u2 < c->p.t)
        return FM_ESTATE;
    if (!fm_sa_list_has(c->u2, c->n_u2, to))
        return FM_EARG;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_u2; i++) {
        uint32_t j = c->u2[i];
        if (j == to)
            continue;
        c->fwd[n] = c->boxes[j * c->k1 + to];
        c->fwd[n].peer = j;
        n++;
    }
    out->cohort = c->p.cohort;
    out->to = to;
    out->n_u2 = c->n_u2;
    out->u2 = c->u2;
    out->n = n;
    out->boxes = c->fwd;
    return 0;
}

int fm_sa_cohort_unmask_req(const fm_sa_cohort_t *c, fm_sa_unmask_req_t *out)
{
    memset(out, 0, sizeof *out);
    if (c->phase < FM_SA_AT_UNMASKING || c->n_u3 < c->p.t)
        return FM_ESTATE;
    out->cohort = c->p.cohort;
    out->n_u3 = c->n_u3;
    out->u3 = c->u3;
    out->n_d = c->n_d;
    out->d = c->d;
    return 0;
}

int fm_sa_cohort_result(const fm_sa_cohort_t *c, fm_sa_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (c->phase != FM_SA_AT_DONE)
        return FM_ESTATE;
    out->sum = c->sum;
    out->decoded = c->decoded;
    out->m = c->p.m;
    out->survivors = c->n_u3;
    out->members = c->u3;
    return 0;
}

const uint32_t *fm_sa_cohort_set(const fm_sa_cohort_t *c, int which, uint32_t *n)
{
    switch (which) {
    case FM_SA_SET_U1: *n = c->n_u1; return c->u1;
    case FM_SA_SET_U2: *n = c->n_u2; return c->u2;
    case FM_SA_SET_U3: *n = c->n_u3; return c->u3;
    case FM_SA_SET_D: *n = c->n_d; return c->d;
    default: *n = 0; return NULL;
    }
}

uint32_t fm_sa_cohort_shares_held(const fm_sa_cohort_t *c, uint32_t of, fm_sa_share_kind_t kind)
{
    uint32_t n = 0;
    if (of < 1 || of > c->p.k)
        return 0;
    for (uint32_t x = 1; x <= c->p.k; x++)
        n += c->store_kind[x * c->k1 + of] == kind;
    return n;
}
