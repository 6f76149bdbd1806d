#include "fm_sa_member.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_sa_crypto.h"

typedef uint8_t s_key_t[FM_SA_KEY_BYTES];

struct fm_sa_member {
    fm_sa_params_t p;
    uint32_t self;
    fm_sa_member_state_t state;
    fm_sa_keys_t keys; /* secret: wiped piece by piece as the protocol moves on */
    /* U1 (from M2), indexed 1..K */
    uint8_t *in_u1;
    s_key_t *c_pk, *s_pk;
    s_key_t *seed; /* secret: the pairwise seeds s_self,j */
    /* U2 (from M4) */
    uint32_t *u2;
    uint32_t n_u2;
    /* secret: the shares held, [r_s,j]_self and [b_j]_self, indexed by j (own ones too) */
    s_key_t *sh_rs, *sh_b;
    /* outputs */
    fm_sa_box_entry_t *boxes; /* M3: K - 1 */
    fm_sa_share_entry_t *m7;  /* M7: up to K; secret until sent */
    uint32_t n_m7;
};

static const char *const S_STATE[] = {"keys",     "shares", "training", "uploaded",
                                      "answered", "done",   "aborted"};

const char *fm_sa_member_state_name(fm_sa_member_state_t s)
{
    return (unsigned)s <= FM_SA_MEMBER_ABORTED ? S_STATE[s] : "?";
}

static void s_wipe_all(fm_sa_member_t *m)
{
    size_t k1 = (size_t)m->p.k + 1;
    fm_sa_keys_wipe(&m->keys);
    if (m->seed)
        fm_sa_wipe(m->seed, k1 * sizeof *m->seed);
    if (m->sh_rs)
        fm_sa_wipe(m->sh_rs, k1 * sizeof *m->sh_rs);
    if (m->sh_b)
        fm_sa_wipe(m->sh_b, k1 * sizeof *m->sh_b);
    if (m->m7)
        fm_sa_wipe(m->m7, (size_t)m->p.k * sizeof *m->m7);
    m->n_m7 = 0;
}

static int s_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

int fm_sa_member_wiped(const fm_sa_member_t *m)
{
    size_t k1 = (size_t)m->p.k + 1;
    return s_zero(m->keys.r_s, sizeof m->keys.r_s) && s_zero(m->keys.s_sk, sizeof m->keys.s_sk) &&
           s_zero(m->keys.c_sk, sizeof m->keys.c_sk) && s_zero(m->keys.b, sizeof m->keys.b) &&
           s_zero(m->seed, k1 * sizeof *m->seed) && s_zero(m->sh_rs, k1 * sizeof *m->sh_rs) &&
           s_zero(m->sh_b, k1 * sizeof *m->sh_b) && s_zero(m->m7, m->p.k * sizeof *m->m7);
}

/* A failed check of a message of this cohort and phase: abort, wipe, return the reason. */
static fm_sa_reason_t s_fail(fm_sa_member_t *m, fm_sa_reason_t r)
{
    s_wipe_all(m);
    m->state = FM_SA_MEMBER_ABORTED;
    return r;
}

fm_sa_member_t *fm_sa_member_new(const fm_sa_params_t *p, uint32_t self, fm_sa_advertise_t *out,
                                 int *err, fm_errmsg_t *e)
{
    fm_sa_member_t *m = NULL;
    int rc = fm_sa_params_check(p, e);
    if (rc != 0)
        goto cleanup;
    if (self < 1 || self > p->k) {
        rc = fm_errmsg_set(e, FM_EARG, "secure aggregation: member index %u out of 1..%u", self,
                           p->k);
        goto cleanup;
    }
    m = calloc(1, sizeof *m);
    if (!m) {
        rc = -ENOMEM;
        goto cleanup;
    }
    m->p = *p;
    m->self = self;
    size_t k1 = (size_t)p->k + 1;
    m->in_u1 = calloc(k1, 1);
    m->c_pk = calloc(k1, sizeof *m->c_pk);
    m->s_pk = calloc(k1, sizeof *m->s_pk);
    m->seed = calloc(k1, sizeof *m->seed);
    m->u2 = calloc(p->k, sizeof *m->u2);
    m->sh_rs = calloc(k1, sizeof *m->sh_rs);
    m->sh_b = calloc(k1, sizeof *m->sh_b);
    m->boxes = calloc(p->k, sizeof *m->boxes);
    m->m7 = calloc(p->k, sizeof *m->m7);
    if (!m->in_u1 || !m->c_pk || !m->s_pk || !m->seed || !m->u2 || !m->sh_rs || !m->sh_b ||
        !m->boxes || !m->m7) {
        rc = fm_errmsg_set(e, -ENOMEM, "secure aggregation: out of memory for member state");
        goto cleanup;
    }
    fm_sa_keys_new(&m->keys);
    m->state = FM_SA_MEMBER_KEYS;
    out->cohort = p->cohort;
    out->from = self;
    memcpy(out->c_pk, m->keys.c_pk, FM_SA_KEY_BYTES);
    memcpy(out->s_pk, m->keys.s_pk, FM_SA_KEY_BYTES);
cleanup:
    if (rc != 0)
        fm_sa_member_destroy(&m);
    if (err)
        *err = rc;
    return m;
}

void fm_sa_member_destroy(fm_sa_member_t **pm)
{
    if (!pm || !*pm)
        return;
    fm_sa_member_t *m = *pm;
    s_wipe_all(m);
    free(m->in_u1);
    free(m->c_pk);
    free(m->s_pk);
    free(m->seed);
    free(m->u2);
    free(m->sh_rs);
    free(m->sh_b);
    free(m->boxes);
    free(m->m7);
    free(m);
    *pm = NULL;
}

fm_sa_member_state_t fm_sa_member_state(const fm_sa_member_t *m) { return m->state; }

/* The checks every handler starts with: the cohort, then the state. */
static fm_sa_reason_t s_gate(const fm_sa_member_t *m, uint64_t cohort, fm_sa_member_state_t want,
                             const char *what, fm_errmsg_t *e)
{
    if (cohort != m->p.cohort) {
        fm_errmsg_set(e, FM_EFORMAT, "%s for cohort %016llx, member %u is in cohort %016llx",
                      what, (unsigned long long)cohort, m->self, (unsigned long long)m->p.cohort);
        return FM_SA_R_COHORT;
    }
    if (m->state != want) {
        fm_errmsg_set(e, FM_EFORMAT, "%s: member %u is in state %s, not %s", what, m->self,
                      fm_sa_member_state_name(m->state), fm_sa_member_state_name(want));
        return FM_SA_R_PHASE;
    }
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_member_on_key_list(fm_sa_member_t *m, const fm_sa_key_list_t *in,
                                        fm_sa_shares_t *out, fm_errmsg_t *e)
{
    s_key_t sh_rs[FM_SA_MAX_K], sh_b[FM_SA_MAX_K];
    fm_sa_reason_t r = s_gate(m, in->cohort, FM_SA_MEMBER_KEYS, "KEY_LIST", e);
    if (r != FM_SA_OK)
        return r;
    const fm_sa_params_t *p = &m->p;
    uint32_t n = in->n;
    if (n > p->k) {
        fm_errmsg_set(e, FM_EFORMAT, "KEY_LIST: %u entries for K = %u", n, p->k);
        return s_fail(m, FM_SA_R_FORMAT);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t x = in->keys[i].index;
        if (x < 1 || x > p->k || (i > 0 && x <= in->keys[i - 1].index)) {
            fm_errmsg_set(e, FM_EFORMAT,
                          "KEY_LIST: entry %u names index %u (not strictly increasing in 1..%u)",
                          i, x, p->k);
            return s_fail(m, FM_SA_R_FORMAT);
        }
    }
    if (n < p->t) {
        fm_errmsg_set(e, FM_EFORMAT, "KEY_LIST: %u members, threshold %u", n, p->t);
        return s_fail(m, FM_SA_R_THRESHOLD);
    }
    const fm_sa_key_entry_t *me = NULL;
    for (uint32_t i = 0; i < n; i++)
        if (in->keys[i].index == m->self)
            me = &in->keys[i];
    if (!me || memcmp(me->c_pk, m->keys.c_pk, FM_SA_KEY_BYTES) != 0 ||
        memcmp(me->s_pk, m->keys.s_pk, FM_SA_KEY_BYTES) != 0) {
        fm_errmsg_set(e, FM_EFORMAT, "KEY_LIST: member %u's own keys %s", m->self,
                      me ? "are listed wrongly" : "are not listed");
        return s_fail(m, FM_SA_R_KEY);
    }
    /* no public key twice: 2n keys, pairwise */
    for (uint32_t i = 0; i < 2 * n; i++) {
        const uint8_t *a = i < n ? in->keys[i].c_pk : in->keys[i - n].s_pk;
        for (uint32_t j = i + 1; j < 2 * n; j++) {
            const uint8_t *b = j < n ? in->keys[j].c_pk : in->keys[j - n].s_pk;
            if (memcmp(a, b, FM_SA_KEY_BYTES) == 0) {
                fm_errmsg_set(e, FM_EFORMAT, "KEY_LIST: a public key of member %u appears twice",
                              in->keys[i < n ? i : i - n].index);
                return s_fail(m, FM_SA_R_KEY);
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = in->keys[i].index;
        m->in_u1[j] = 1;
        memcpy(m->c_pk[j], in->keys[i].c_pk, FM_SA_KEY_BYTES);
        memcpy(m->s_pk[j], in->keys[i].s_pk, FM_SA_KEY_BYTES);
        if (j != m->self && fm_sa_pair_seed(m->seed[j], m->self, m->keys.s_pk, m->keys.s_sk, j,
                                            m->s_pk[j]) != 0) {
            fm_errmsg_set(e, FM_ECRYPTO, "KEY_LIST: mask key of member %u refused by crypto_kx",
                          j);
            return s_fail(m, FM_SA_R_KEY);
        }
    }
    /* M3: shares of r_s and b at x = 1..K, one box per peer of U1 */
    int rc_rs = fm_sa_shamir_split(sh_rs, m->keys.r_s, p->t, p->k);
    int rc_b = fm_sa_shamir_split(sh_b, m->keys.b, p->t, p->k);
    FM_ASSERT(rc_rs == 0 && rc_b == 0); /* r_s and b are scalars, t and K checked */
    uint32_t nb = 0;
    for (uint32_t i = 0; i < n && r == FM_SA_OK; i++) {
        uint32_t j = in->keys[i].index;
        if (j == m->self)
            continue;
        fm_sa_plain_t pl = {
            .from = m->self, .to = j, .cohort = p->cohort, .phase = FM_SA_MSG_SHARES};
        memcpy(pl.share_rs, sh_rs[j - 1], FM_SA_KEY_BYTES);
        memcpy(pl.share_b, sh_b[j - 1], FM_SA_KEY_BYTES);
        m->boxes[nb].peer = j;
        if (fm_sa_box_seal(m->boxes[nb].box, &pl, m->c_pk[j], m->keys.c_sk) != 0) {
            fm_errmsg_set(e, FM_ECRYPTO, "KEY_LIST: box key of member %u refused by crypto_box",
                          j);
            r = FM_SA_R_KEY;
        }
        fm_sa_wipe(&pl, sizeof pl);
        nb++;
    }
    memcpy(m->sh_rs[m->self], sh_rs[m->self - 1], FM_SA_KEY_BYTES);
    memcpy(m->sh_b[m->self], sh_b[m->self - 1], FM_SA_KEY_BYTES);
    fm_sa_wipe(sh_rs, sizeof sh_rs[0] * p->k);
    fm_sa_wipe(sh_b, sizeof sh_b[0] * p->k);
    if (r != FM_SA_OK)
        return s_fail(m, r);
    m->state = FM_SA_MEMBER_SHARES;
    out->cohort = p->cohort;
    out->from = m->self;
    out->n = nb;
    out->boxes = m->boxes;
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_member_on_shares_fwd(fm_sa_member_t *m, const fm_sa_shares_fwd_t *in,
                                          fm_errmsg_t *e)
{
    fm_sa_reason_t r = s_gate(m, in->cohort, FM_SA_MEMBER_SHARES, "SHARES_FWD", e);
    if (r != FM_SA_OK)
        return r;
    const fm_sa_params_t *p = &m->p;
    if (in->to != m->self) {
        fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD addressed to member %u reached member %u",
                      in->to, m->self);
        return s_fail(m, FM_SA_R_IDS);
    }
    if (in->n_u2 > p->k || fm_sa_list_check(in->u2, in->n_u2, p->k, "SHARES_FWD: U2", e) != 0)
        return s_fail(m, FM_SA_R_FORMAT);
    for (uint32_t i = 0; i < in->n_u2; i++)
        if (!m->in_u1[in->u2[i]]) {
            fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD: U2 holds member %u, not in U1", in->u2[i]);
            return s_fail(m, FM_SA_R_FORMAT);
        }
    if (!fm_sa_list_has(in->u2, in->n_u2, m->self)) {
        fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD: U2 does not hold member %u itself", m->self);
        return s_fail(m, FM_SA_R_FORMAT);
    }
    if (in->n_u2 < p->t) {
        fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD: %u members in U2, threshold %u", in->n_u2,
                      p->t);
        return s_fail(m, FM_SA_R_THRESHOLD);
    }
    if (in->n != in->n_u2 - 1) {
        fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD: %u boxes for %u other members of U2", in->n,
                      in->n_u2 - 1);
        return s_fail(m, FM_SA_R_FORMAT);
    }
    for (uint32_t i = 0, b = 0; i < in->n_u2; i++) {
        uint32_t j = in->u2[i];
        if (j == m->self)
            continue;
        const fm_sa_box_entry_t *be = &in->boxes[b++];
        if (be->peer != j) {
            fm_errmsg_set(e, FM_EFORMAT, "SHARES_FWD: box %u is from member %u, expected %u",
                          b - 1, be->peer, j);
            return s_fail(m, FM_SA_R_FORMAT);
        }
        fm_sa_plain_t pl;
        int rc = fm_sa_box_open(&pl, be->box, m->c_pk[j], m->keys.c_sk, j, m->self, p->cohort, e);
        if (rc == 0 && (!fm_sa_scalar_ok(pl.share_rs) || !fm_sa_scalar_ok(pl.share_b))) {
            rc = fm_errmsg_set(e, FM_EFORMAT, "share box from member %u holds a non-scalar", j);
        }
        if (rc != 0) {
            fm_sa_wipe(&pl, sizeof pl);
            return s_fail(m, rc == FM_ECRYPTO ? FM_SA_R_CRYPTO : FM_SA_R_IDS);
        }
        memcpy(m->sh_rs[j], pl.share_rs, FM_SA_KEY_BYTES);
        memcpy(m->sh_b[j], pl.share_b, FM_SA_KEY_BYTES);
        fm_sa_wipe(&pl, sizeof pl);
    }
    memcpy(m->u2, in->u2, in->n_u2 * sizeof *m->u2);
    m->n_u2 = in->n_u2;
    fm_sa_wipe(m->keys.c_sk, sizeof m->keys.c_sk); /* every box is open */
    m->state = FM_SA_MEMBER_TRAINING;
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_member_mask(fm_sa_member_t *m, const uint32_t *x, uint32_t *y, uint32_t n,
                                 fm_sa_masked_t *out, fm_errmsg_t *e)
{
    uint8_t key[FM_SA_KEY_BYTES];
    fm_sa_reason_t r = s_gate(m, m->p.cohort, FM_SA_MEMBER_TRAINING, "mask", e);
    if (r != FM_SA_OK)
        return r;
    if (n != m->p.m) {
        fm_errmsg_set(e, FM_EARG, "mask: %u coordinates, the cohort has m = %u", n, m->p.m);
        return FM_SA_R_FORMAT;
    }
    if (y != x)
        memcpy(y, x, (size_t)n * sizeof *y);
    fm_sa_self_key(key, m->keys.b);
    fm_sa_prg_add(y, n, key, m->p.cohort, 1);
    fm_sa_wipe(key, sizeof key);
    for (uint32_t i = 0; i < m->n_u2; i++) {
        uint32_t j = m->u2[i];
        if (j != m->self)
            fm_sa_prg_add(y, n, m->seed[j], m->p.cohort, fm_sa_pair_sign(m->self, j));
    }
    /* the mask secrets are in the shares now; this member never needs them again */
    fm_sa_wipe(m->keys.r_s, sizeof m->keys.r_s);
    fm_sa_wipe(m->keys.s_sk, sizeof m->keys.s_sk);
    fm_sa_wipe(m->keys.b, sizeof m->keys.b);
    fm_sa_wipe(m->seed, ((size_t)m->p.k + 1) * sizeof *m->seed);
    m->state = FM_SA_MEMBER_UPLOADED;
    out->cohort = m->p.cohort;
    out->from = m->self;
    out->m = n;
    out->y = y;
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_member_on_unmask_req(fm_sa_member_t *m, const fm_sa_unmask_req_t *in,
                                          fm_sa_unmask_shares_t *out, fm_errmsg_t *e)
{
    if (in->cohort == m->p.cohort && m->state == FM_SA_MEMBER_ANSWERED) {
        fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: member %u answered one already", m->self);
        return FM_SA_R_REPLAY;
    }
    fm_sa_reason_t r = s_gate(m, in->cohort, FM_SA_MEMBER_UPLOADED, "UNMASK_REQ", e);
    if (r != FM_SA_OK)
        return r;
    const fm_sa_params_t *p = &m->p;
    if (in->n_u3 > p->k || in->n_d > p->k ||
        fm_sa_list_check(in->u3, in->n_u3, p->k, "UNMASK_REQ: U3", e) != 0 ||
        fm_sa_list_check(in->d, in->n_d, p->k, "UNMASK_REQ: D", e) != 0)
        return s_fail(m, FM_SA_R_FORMAT);
    for (uint32_t i = 0; i < in->n_u3; i++)
        if (fm_sa_list_has(in->d, in->n_d, in->u3[i])) {
            fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: member %u is in both U3 and D", in->u3[i]);
            return s_fail(m, FM_SA_R_UNMASK);
        }
    /* disjoint subsets of U2 whose sizes add up to |U2|: their union is U2 */
    for (uint32_t i = 0; i < in->n_u3 + in->n_d; i++) {
        uint32_t j = i < in->n_u3 ? in->u3[i] : in->d[i - in->n_u3];
        if (!fm_sa_list_has(m->u2, m->n_u2, j)) {
            fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: member %u is not in U2", j);
            return s_fail(m, FM_SA_R_UNMASK);
        }
    }
    if (in->n_u3 + in->n_d != m->n_u2) {
        fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: U3 and D hold %u members, U2 %u",
                      in->n_u3 + in->n_d, m->n_u2);
        return s_fail(m, FM_SA_R_UNMASK);
    }
    if (in->n_u3 < p->t) {
        fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: %u members in U3, threshold %u", in->n_u3,
                      p->t);
        return s_fail(m, FM_SA_R_THRESHOLD);
    }
    if (!fm_sa_list_has(in->u3, in->n_u3, m->self)) {
        fm_errmsg_set(e, FM_EFORMAT, "UNMASK_REQ: member %u itself is not in U3", m->self);
        return s_fail(m, FM_SA_R_UNMASK);
    }
    /* M7 in increasing `of` order: b shares of U3, r_s shares of D */
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_u2; i++) {
        uint32_t j = m->u2[i];
        int survived = fm_sa_list_has(in->u3, in->n_u3, j);
        m->m7[n].of = j;
        m->m7[n].kind = survived ? FM_SA_SHARE_B : FM_SA_SHARE_RS;
        memcpy(m->m7[n].share, survived ? m->sh_b[j] : m->sh_rs[j], FM_SA_KEY_BYTES);
        n++;
    }
    m->n_m7 = n;
    size_t k1 = (size_t)p->k + 1;
    fm_sa_wipe(m->sh_rs, k1 * sizeof *m->sh_rs);
    fm_sa_wipe(m->sh_b, k1 * sizeof *m->sh_b);
    m->state = FM_SA_MEMBER_ANSWERED;
    out->cohort = p->cohort;
    out->from = m->self;
    out->n = n;
    out->shares = m->m7;
    return FM_SA_OK;
}

fm_sa_reason_t fm_sa_member_on_done(fm_sa_member_t *m, uint64_t cohort, int aborted,
                                    fm_errmsg_t *e)
{
    if (cohort != m->p.cohort) {
        fm_errmsg_set(e, FM_EFORMAT, "DONE for cohort %016llx, member %u is in cohort %016llx",
                      (unsigned long long)cohort, m->self, (unsigned long long)m->p.cohort);
        return FM_SA_R_COHORT;
    }
    s_wipe_all(m);
    if (aborted)
        m->state = FM_SA_MEMBER_ABORTED;
    else if (m->state != FM_SA_MEMBER_ABORTED)
        m->state = FM_SA_MEMBER_DONE;
    return FM_SA_OK;
}

void fm_sa_member_abort(fm_sa_member_t *m)
{
    s_wipe_all(m);
    if (m->state != FM_SA_MEMBER_DONE)
        m->state = FM_SA_MEMBER_ABORTED;
}
