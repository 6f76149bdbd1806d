/* fm_sa_member: one trainer's side of one secure-aggregation cohort (docs/SECAGG.md), as a
 * state machine over the message structs of fm_sa_msg. Pure: no sockets, no clock (the
 * caller times out a cohort and calls fm_sa_member_abort), no logging.
 *
 *   fm_sa_member_new          KEYS       fresh keys; M1 ADVERTISE_KEYS out
 *   fm_sa_member_on_key_list  -> SHARES  M2 checked; M3 SHARES out (one box per peer)
 *   fm_sa_member_on_shares_fwd -> TRAINING  M4 checked, every box opened
 *   fm_sa_member_mask         -> UPLOADED  M5: y = x + PRG(b) + sum_j +-PRG(s_ij), j in U2
 *   fm_sa_member_on_unmask_req -> ANSWERED  M6 checked; M7 UNMASK_SHARES out
 *   fm_sa_member_on_done / _abort -> DONE / ABORTED  every secret wiped
 *
 * Every handler returns FM_SA_OK or the reason the message was refused, with one line in
 * `e` (may be NULL). Refusals come in two kinds:
 *   - not this member's business now (FM_SA_R_COHORT: another cohort; FM_SA_R_PHASE: not the
 *     message this state waits for; FM_SA_R_REPLAY: a second UNMASK_REQ after answering one):
 *     nothing changes, the member keeps waiting;
 *   - a message of this cohort and phase that fails a check (any other reason): the member
 *     ABORTS at once and wipes its secrets, so a broken or lying aggregator gets nothing
 *     more from it.
 * The checks (§4.4 of the design note):
 *   M2: entries strictly increasing within 1..K; |U1| >= t; its own keys listed exactly; no
 *       public key twice (c or s, across all entries); every peer's s_pk accepted by
 *       crypto_kx and c_pk by crypto_box.
 *   M4: addressed to this member; U2 strictly increasing, a subset of U1 holding itself,
 *       |U2| >= t; exactly one box from each other member of U2; each opens and names
 *       (from, to, cohort, phase).
 *   M6: U3 and D strictly increasing, disjoint, U3 + D = U2, |U3| >= t, itself in U3; and
 *       at most one UNMASK_REQ is ever answered. With t > K/2 the aggregator can never
 *       gather t shares of both b_j and r_s,j of one member j.
 * Secrets are wiped as soon as they are no longer needed: the box key after M4 is opened,
 * the mask secrets (r_s, s_sk, b, the pairwise seeds) after masking, the peers' shares when
 * M7 is produced (what M7 reveals stays in its output until done/abort/destroy).
 *
 * Not thread-safe; one object per cohort. */
#ifndef FM_SA_MEMBER_H
#define FM_SA_MEMBER_H

#include <stdint.h>

#include "fm_err.h"
#include "fm_sa_msg.h"

typedef struct fm_sa_member fm_sa_member_t;

typedef enum {
    FM_SA_MEMBER_KEYS,     /* M1 sent, waiting for M2 */
    FM_SA_MEMBER_SHARES,   /* M3 sent, waiting for M4 */
    FM_SA_MEMBER_TRAINING, /* M4 accepted: may mask its update */
    FM_SA_MEMBER_UPLOADED, /* M5 made, waiting for M6 */
    FM_SA_MEMBER_ANSWERED, /* M7 made, waiting for M8 */
    FM_SA_MEMBER_DONE,
    FM_SA_MEMBER_ABORTED
} fm_sa_member_state_t;

/* Static name of a state ("keys", "shares", ...). */
const char *fm_sa_member_state_name(fm_sa_member_state_t s);

/* Join cohort p (checked: fm_sa_params_check) as member `self` (1..K): fresh keys, and M1
 * into *out. fm_sa_crypto_init() must have succeeded. NULL with *err = FM_EARG / FM_ERANGE
 * (bad params or index; one line in `e`) or -ENOMEM. */
fm_sa_member_t *fm_sa_member_new(const fm_sa_params_t *p, uint32_t self, fm_sa_advertise_t *out,
                                 int *err, fm_errmsg_t *e);

/* Wipe every secret and free; NULL-safe, sets *m to NULL. */
void fm_sa_member_destroy(fm_sa_member_t **m);

fm_sa_member_state_t fm_sa_member_state(const fm_sa_member_t *m);

/* M2 -> M3 into *out. out->boxes points into the member (valid until its next call or
 * destroy). */
fm_sa_reason_t fm_sa_member_on_key_list(fm_sa_member_t *m, const fm_sa_key_list_t *in,
                                        fm_sa_shares_t *out, fm_errmsg_t *e);

/* M4: open and store the shares addressed to this member. */
fm_sa_reason_t fm_sa_member_on_shares_fwd(fm_sa_member_t *m, const fm_sa_shares_fwd_t *in,
                                          fm_errmsg_t *e);

/* M5: y[0..m) = x[0..m) + PRG(b) + sum over j in U2 - {self} of sign(self, j) PRG(s_self,j)
 * (mod 2^32); x is the encoded update (fm_sa_codec_encode) and may be y (in place). Fills
 * *out (out->y = y, borrowed from the caller). Only in TRAINING (else FM_SA_R_PHASE, nothing
 * changed); n must be the cohort's m (else FM_SA_R_FORMAT, nothing changed). */
fm_sa_reason_t fm_sa_member_mask(fm_sa_member_t *m, const uint32_t *x, uint32_t *y, uint32_t n,
                                 fm_sa_masked_t *out, fm_errmsg_t *e);

/* M6 -> M7 into *out. out->shares points into the member (valid until done/abort/destroy). */
fm_sa_reason_t fm_sa_member_on_unmask_req(fm_sa_member_t *m, const fm_sa_unmask_req_t *in,
                                          fm_sa_unmask_shares_t *out, fm_errmsg_t *e);

/* M8 for `cohort`: wipe everything; state DONE, or ABORTED when `aborted` (the cohort's
 * ABORT) or when the member had aborted itself. FM_SA_R_COHORT for another cohort (nothing
 * changed). */
fm_sa_reason_t fm_sa_member_on_done(fm_sa_member_t *m, uint64_t cohort, int aborted,
                                    fm_errmsg_t *e);

/* Give up (the caller's timeout, a CANCEL): wipe everything; state ABORTED unless DONE. */
void fm_sa_member_abort(fm_sa_member_t *m);

/* 1 if every byte of secret material the member holds is zero (after done/abort), else 0:
 * the hook the tests use to check the wiping. */
int fm_sa_member_wiped(const fm_sa_member_t *m);

#endif
