/* fm_sa_msg: the messages of one secure-aggregation cohort (Bonawitz et al. 2017, complete
 * graph; docs/SECAGG.md), as plain structs, and the reasons a message is refused.
 *
 * A cohort has K members with cohort-local indices 1..K (also their Shamir x-coordinates)
 * and a threshold t (floor(K/2) + 1 <= t <= K). The aggregator (fm_sa_cohort) and each
 * member (fm_sa_member) exchange, all through the aggregator:
 *   M1 ADVERTISE_KEYS  member -> aggregator   fm_sa_advertise_t
 *   M2 KEY_LIST        aggregator -> members  fm_sa_key_list_t       (U1: who advertised)
 *   M3 SHARES          member -> aggregator   fm_sa_shares_t         (one box per peer of U1)
 *   M4 SHARES_FWD      aggregator -> member   fm_sa_shares_fwd_t     (U2: whose M3 arrived)
 *   M5 MASKED_UPDATE   member -> aggregator   fm_sa_masked_t         (y in Z_2^32)
 *   M6 UNMASK_REQ      aggregator -> members  fm_sa_unmask_req_t     (U3: uploaded; D = U2 - U3)
 *   M7 UNMASK_SHARES   member -> aggregator   fm_sa_unmask_shares_t
 *   M8 DONE / ABORT    aggregator -> members  (the cohort id; members wipe their secrets)
 * Every message carries the cohort id. Arrays are borrowed pointers with a count: whoever
 * filled a struct owns what it points to (see the producing function's comment).
 *
 * No I/O, no allocation in this module. */
#ifndef FM_SA_MSG_H
#define FM_SA_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_SA_MAX_K 256        /* members of one cohort (the aggregator keeps K x K boxes) */
#define FM_SA_KEY_BYTES 32     /* a public key, a secret key, a scalar, a share, a seed */
#define FM_SA_BOX_PLAIN 84     /* from u32, to u32, cohort u64, phase u32, share r_s, share b */
#define FM_SA_BOX_BYTES 124    /* nonce 24 + MAC 16 + FM_SA_BOX_PLAIN (crypto_box_easy) */
#define FM_SA_MAX_M (1u << 28) /* coordinates of a masked vector (1 GiB of uint32) */

/* The message numbers (M1..M8); FM_SA_MSG_SHARES is the "phase" sealed inside every box. */
enum {
    FM_SA_MSG_ADVERTISE = 1,
    FM_SA_MSG_KEY_LIST = 2,
    FM_SA_MSG_SHARES = 3,
    FM_SA_MSG_SHARES_FWD = 4,
    FM_SA_MSG_MASKED = 5,
    FM_SA_MSG_UNMASK_REQ = 6,
    FM_SA_MSG_UNMASK_SHARES = 7,
    FM_SA_MSG_DONE = 8
};

/* What every party of one cohort agrees on before M1 (the invitation, M0). */
typedef struct {
    uint64_t cohort; /* cohort id: random, chosen by the aggregator; binds nonces and boxes */
    uint32_t k;      /* K: members, 2..FM_SA_MAX_K, indices 1..K */
    uint32_t t;      /* threshold: floor(K/2) + 1 <= t <= K */
    uint32_t m;      /* coordinates of the masked vector (weight coordinate included), >= 1 */
    double clip;     /* C: L2 bound of each member's update (fm_sa_codec) */
    int scale_bits;  /* s: the fixed-point scale is S = 2^s (fm_sa_codec) */
} fm_sa_params_t;

/* 0 if the fields are in range (the codec's no-overflow condition included: fm_sa_codec),
 * else FM_EARG or FM_ERANGE with one line in `e` (may be NULL). */
int fm_sa_params_check(const fm_sa_params_t *p, fm_errmsg_t *e);

/* Why a message was refused (0: accepted). The member's and the cohort's handlers return
 * one of these and write a one-line explanation. */
typedef enum {
    FM_SA_OK = 0,
    FM_SA_R_COHORT,    /* another cohort's message (nothing changed) */
    FM_SA_R_PHASE,     /* not expected now: reordered, late, or the cohort is over (nothing
                        changed) */
    FM_SA_R_REPLAY,    /* a second message of this kind from the same sender (nothing changed) */
    FM_SA_R_SENDER,    /* the sender is not a member, or not in the set that may send it */
    FM_SA_R_FORMAT,    /* inconsistent content: an index out of range or repeated, a list that
                        is not strictly increasing, a count or length that does not fit */
    FM_SA_R_KEY,       /* a public key that is invalid, repeated, or (own) listed wrongly */
    FM_SA_R_CRYPTO,    /* a box that does not open */
    FM_SA_R_IDS,       /* a box that opens but names other ids, another cohort or phase */
    FM_SA_R_THRESHOLD, /* fewer than t members in a set the message names */
    FM_SA_R_UNMASK,    /* an UNMASK_REQ an honest member must refuse (U3 and D overlap, their
                        union is not U2, the member itself not in U3) */
    FM_SA_R_NREASONS
} fm_sa_reason_t;

/* Static name of a reason ("cohort", "phase", ...); "?" for an out-of-range value. */
const char *fm_sa_reason_name(fm_sa_reason_t r);

/* M1. */
typedef struct {
    uint64_t cohort;
    uint32_t from;                 /* the member's index */
    uint8_t c_pk[FM_SA_KEY_BYTES]; /* box key (crypto_box) */
    uint8_t s_pk[FM_SA_KEY_BYTES]; /* mask key (crypto_kx), derived from the shared r_s */
} fm_sa_advertise_t;

typedef struct {
    uint32_t index;
    uint8_t c_pk[FM_SA_KEY_BYTES];
    uint8_t s_pk[FM_SA_KEY_BYTES];
} fm_sa_key_entry_t;

/* M2: U1 in increasing index order. */
typedef struct {
    uint64_t cohort;
    uint32_t n;
    const fm_sa_key_entry_t *keys; /* n entries */
} fm_sa_key_list_t;

/* One sealed share box: to `peer` in M3, from `peer` in M4. */
typedef struct {
    uint32_t peer;
    uint8_t box[FM_SA_BOX_BYTES]; /* nonce || crypto_box_easy(plaintext) */
} fm_sa_box_entry_t;

/* M3: one box for each member of U1 but the sender, in increasing `peer` order. */
typedef struct {
    uint64_t cohort;
    uint32_t from;
    uint32_t n;
    const fm_sa_box_entry_t *boxes; /* n entries */
} fm_sa_shares_t;

/* M4: U2 (increasing) and the boxes addressed to `to`, one from each member of U2 but `to`,
 * in increasing `peer` order. */
typedef struct {
    uint64_t cohort;
    uint32_t to;
    uint32_t n_u2;
    const uint32_t *u2;
    uint32_t n;
    const fm_sa_box_entry_t *boxes;
} fm_sa_shares_fwd_t;

/* M5: y = x + PRG(b) + sum_j +-PRG(s_ij) in Z_2^32. */
typedef struct {
    uint64_t cohort;
    uint32_t from;
    uint32_t m;
    const uint32_t *y; /* m words */
} fm_sa_masked_t;

/* M6: U3 (uploaded) and D = U2 - U3 (dropped), each increasing. */
typedef struct {
    uint64_t cohort;
    uint32_t n_u3;
    const uint32_t *u3;
    uint32_t n_d;
    const uint32_t *d;
} fm_sa_unmask_req_t;

typedef enum {
    FM_SA_SHARE_B = 1, /* a share of the self-mask seed b of a survivor */
    FM_SA_SHARE_RS = 2 /* a share of the mask-key secret r_s of a dropped member */
} fm_sa_share_kind_t;

typedef struct {
    uint32_t of;  /* whose secret */
    uint8_t kind; /* fm_sa_share_kind_t */
    uint8_t share[FM_SA_KEY_BYTES];
} fm_sa_share_entry_t;

/* M7: the sender's share of b_j for every j of U3, of r_s,j for every j of D, in increasing
 * `of` order. The sender's x-coordinate is `from`. */
typedef struct {
    uint64_t cohort;
    uint32_t from;
    uint32_t n;
    const fm_sa_share_entry_t *shares;
} fm_sa_unmask_shares_t;

/* 0 if idx[0..n) is strictly increasing within 1..k, else FM_EFORMAT with one line in `e`
 * naming `what` (may be NULL). */
int fm_sa_list_check(const uint32_t *idx, uint32_t n, uint32_t k, const char *what,
                     fm_errmsg_t *e);

/* 1 if `x` is in the strictly increasing idx[0..n), else 0 (binary search). */
int fm_sa_list_has(const uint32_t *idx, uint32_t n, uint32_t x);

#endif
