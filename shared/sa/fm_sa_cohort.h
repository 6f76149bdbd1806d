/* fm_sa_cohort: the aggregator's side of one secure-aggregation cohort (docs/SECAGG.md), as
 * a state machine over the message structs of fm_sa_msg. Pure: no sockets, no logging, no
 * clock (the caller passes `now`, seconds on any monotonic scale, to every call).
 *
 * Phases, each closed when every expected message is in or at its deadline (phase start +
 * its fm_sa_deadlines_t entry), whichever comes first:
 *   KEYS       collect M1 from members 1..K            -> U1; |U1| < t aborts
 *   SHARES     collect M3 from U1 (fm_sa_cohort_key_list is M2)
 *                                                      -> U2; |U2| < t aborts
 *   TRAINING   collect M5 from U2 (fm_sa_cohort_shares_fwd is M4), each added into the
 *              running sum at once (no individual upload is kept)
 *                                                      -> U3, D = U2 - U3; |U3| < t aborts
 *   UNMASKING  collect M7 from U3 (fm_sa_cohort_unmask_req is M6) -> responders R;
 *              |R| < t aborts; else the unmasking below, then DONE
 * The unmasking, from the shares of the first t responders (by index):
 *   sum -= PRG(b_u) for every u in U3 (b_u reconstructed);
 *   for every v in D: r_s,v reconstructed, (s_pk, s_sk) re-derived (fm_sa_mask_keypair; an
 *   s_pk other than v's advertised one aborts), and sum -= sign(u, v) PRG(s_uv) for every u
 *   in U3 (masks between two dropped members never entered the sum);
 * which leaves sum = sum over U3 of the encoded updates (mod 2^32), decoded with the codec
 * of the params (fm_sa_codec_decode).
 *
 * Abort: the phase becomes ABORTED with a one-line reason, and the running sum, the shares
 * and every reconstructed secret are wiped: nothing is released (fm_sa_cohort_result fails).
 *
 * The share store holds, for each member j, shares of b_j (j in U3) or of r_s,j (j in D),
 * never both: the kind is fixed per member when M6 is made, an M7 entry of the other kind is
 * refused, and storing asserts it (fm_sa_cohort_shares_held reads the store).
 *
 * Handlers return FM_SA_OK or the reason a message was refused (one line in `e`, may be
 * NULL); a refused message changes nothing. Every handler first applies the deadline
 * (fm_sa_cohort_tick), so a message arriving after its phase closed is FM_SA_R_PHASE.
 *
 * Not thread-safe; one object per cohort. Memory: K x K share boxes (124 B each), K x K
 * unmask shares (33 B each), m words of sum and m doubles of decoded sum. */
#ifndef FM_SA_COHORT_H
#define FM_SA_COHORT_H

#include <stdint.h>

#include "fm_err.h"
#include "fm_sa_msg.h"

typedef struct fm_sa_cohort fm_sa_cohort_t;

/* How long each phase may last after it started, seconds, finite and > 0. */
typedef struct {
    double keys, shares, train, unmask;
} fm_sa_deadlines_t;

typedef enum {
    FM_SA_AT_KEYS,
    FM_SA_AT_SHARES,
    FM_SA_AT_TRAINING,
    FM_SA_AT_UNMASKING,
    FM_SA_AT_DONE,
    FM_SA_AT_ABORTED
} fm_sa_phase_t;

/* Static name of a phase ("keys", "shares", ...). */
const char *fm_sa_phase_name(fm_sa_phase_t ph);

/* A cohort with params p (fm_sa_params_check) whose KEYS phase starts at `now`. NULL with
 * *err = FM_EARG / FM_ERANGE (one line in `e`) or -ENOMEM. */
fm_sa_cohort_t *fm_sa_cohort_new(const fm_sa_params_t *p, const fm_sa_deadlines_t *d, double now,
                                 int *err, fm_errmsg_t *e);

/* Wipe and free; NULL-safe, sets *c to NULL. */
void fm_sa_cohort_destroy(fm_sa_cohort_t **c);

fm_sa_phase_t fm_sa_cohort_phase(const fm_sa_cohort_t *c);

/* Why the cohort aborted, one line ("" unless ABORTED); lives as long as the cohort. */
const char *fm_sa_cohort_abort_reason(const fm_sa_cohort_t *c);

/* Close the current phase if its deadline has passed at `now`. 1 if the phase changed, else
 * 0. */
int fm_sa_cohort_tick(fm_sa_cohort_t *c, double now);

/* Abort from outside (shutdown, a cancelled round) with reason `why`; no-op when DONE. */
void fm_sa_cohort_abort(fm_sa_cohort_t *c, const char *why);

/* M1 (KEYS): from 1..K (else R_SENDER), once (R_REPLAY), keys not equal to any key already
 * advertised (R_KEY). */
fm_sa_reason_t fm_sa_cohort_on_keys(fm_sa_cohort_t *c, const fm_sa_advertise_t *in, double now,
                                    fm_errmsg_t *e);

/* M3 (SHARES): from U1 (R_SENDER), once (R_REPLAY), exactly one box to each other member of
 * U1 in increasing order (R_FORMAT). */
fm_sa_reason_t fm_sa_cohort_on_shares(fm_sa_cohort_t *c, const fm_sa_shares_t *in, double now,
                                      fm_errmsg_t *e);

/* M5 (TRAINING): from U2 (R_SENDER), once (R_REPLAY), m words (R_FORMAT); added into the
 * sum, the words themselves are not kept. */
fm_sa_reason_t fm_sa_cohort_on_masked(fm_sa_cohort_t *c, const fm_sa_masked_t *in, double now,
                                      fm_errmsg_t *e);

/* M7 (UNMASKING): from U3 (R_SENDER), once (R_REPLAY), one canonical share for each member
 * of U2 in increasing order (R_FORMAT), of kind b for U3 and r_s for D (R_UNMASK). */
fm_sa_reason_t fm_sa_cohort_on_unmask_shares(fm_sa_cohort_t *c, const fm_sa_unmask_shares_t *in,
                                             double now, fm_errmsg_t *e);

/* M2, once KEYS has closed (any later phase but ABORTED before SHARES): out->keys points
 * into the cohort (lives as long as it). 0 or FM_ESTATE. */
int fm_sa_cohort_key_list(const fm_sa_cohort_t *c, fm_sa_key_list_t *out);

/* M4 for member `to` (in U2), once SHARES has closed: out->u2 and out->boxes point into the
 * cohort (valid until the next call of this function or destroy). 0, FM_ESTATE, or FM_EARG
 * (`to` not in U2). */
int fm_sa_cohort_shares_fwd(fm_sa_cohort_t *c, uint32_t to, fm_sa_shares_fwd_t *out);

/* M6, once TRAINING has closed: out's lists point into the cohort. 0 or FM_ESTATE. */
int fm_sa_cohort_unmask_req(const fm_sa_cohort_t *c, fm_sa_unmask_req_t *out);

/* What a DONE cohort hands over; every pointer lives as long as the cohort. */
typedef struct {
    const uint32_t *sum;   /* m words: sum over U3 of the encoded updates, mod 2^32 */
    const double *decoded; /* m values: fm_sa_codec_decode(sum); the last is sum of weights */
    uint32_t m;
    uint32_t survivors;      /* |U3| */
    const uint32_t *members; /* U3, increasing */
} fm_sa_result_t;

/* The result of a DONE cohort. 0, or FM_ESTATE (not DONE: running or ABORTED; *out zeroed,
 * nothing released). */
int fm_sa_cohort_result(const fm_sa_cohort_t *c, fm_sa_result_t *out);

/* The sets so far (borrowed; n = 0 before the phase that makes them closed). */
const uint32_t *fm_sa_cohort_set(const fm_sa_cohort_t *c, int which, uint32_t *n);
enum { FM_SA_SET_U1 = 1, FM_SA_SET_U2, FM_SA_SET_U3, FM_SA_SET_D };

/* How many shares of `kind` of member `of`'s secret the store holds now (0 after DONE or
 * ABORTED: wiped). */
uint32_t fm_sa_cohort_shares_held(const fm_sa_cohort_t *c, uint32_t of, fm_sa_share_kind_t kind);

#endif
