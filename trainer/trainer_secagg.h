/* trainer_secagg: the trainer's side of cohort secure aggregation ([secagg] enabled;
 * docs/SECAGG.md): one fm_sa_member per (cohort id, member index) this trainer was invited
 * into, the handlers of the aggregator's messages, the member timeouts, and the encode +
 * mask step a worker calls after a member's local training.
 *
 * Transport (the contract with the aggregator): M0 COHORT_INVITE, M2 KEY_LIST, M4
 * SHARES_FWD, M6 UNMASK_REQ and M8 COHORT_DONE / COHORT_ABORT arrive on the trainer's acks
 * SUB (every trainer gets every message); M1 ADVERTISE_KEYS, M3 SHARES, M7 UNMASK_SHARES
 * leave on the main thread's PUSH to endpoints.updates, M5 MASKED_UPDATE on the worker's
 * own PUSH. Nothing is acknowledged or resent: a lost message is a dropped member, which
 * the protocol recovers.
 *
 * - M0: taken only if its "trainer" is this trainer's id and its "client" is in the pool's
 *   range (else silently ignored: someone else's); refused (counted, rate-limited line, no
 *   answer) when the client is already an active member, when "m" is not the model's
 *   parameter count + 1, or when fm_sa_member_new refuses the params. Else a member is
 *   made and M1 sent; it is timed out (aborted, freed) at its arrival + the sum of the
 *   invite's four deadlines + 10 s unless an M8 ended it first.
 * - M2 -> M3 at once; M4 accepted -> the client's training is queued (trainer_ctx, a secagg
 *   job with the invite's cohort, index and "mv"); M6 -> M7 at once; M8 -> freed.
 * - A message for a (cohort, index) not in the table is someone else's: ignored, not counted.
 *   A refusal of a member's handler is counted by reason (one rate-limited line); a member
 *   that aborted itself stays until M8 or its timeout.
 * The table is used by the main thread (handlers, tick) and the workers (upload, drop):
 * one mutex, held while masking. Counters are read with trainer_secagg_stats. */
#ifndef TRAINER_SECAGG_H
#define TRAINER_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_sa_msg.h"
#include "fm_wire.h"
#include "trainer_ctx.h"

#define TRAINER_SECAGG_GRACE_S 10.0 /* a member lives the invite's deadlines + this long */

typedef struct trainer_secagg trainer_secagg_t;

typedef struct {
    uint64_t joined;   /* invites accepted (members made, M1 sent) */
    uint64_t uploads;  /* MASKED_UPDATEs handed to ZeroMQ */
    uint64_t done;     /* members ended by COHORT_DONE in state done */
    uint64_t aborted;  /* members ended otherwise: COHORT_ABORT, self-abort, dropout, timeout */
    uint64_t timeouts; /* of which: timed out */
    uint64_t refused;  /* invites refused (client busy, wrong m, bad params) */
    uint64_t rejected; /* messages a member's handler refused (all reasons) */
    uint64_t by_reason[FM_SA_R_NREASONS]; /* those, per fm_sa_reason_t */
    uint64_t send_failed;                 /* M1/M3/M5/M7 not handed to ZeroMQ */
    uint32_t active;                      /* members in the table now */
} trainer_secagg_stats_t;

/* A member table for trainer `trainer_id` (borrowed, must outlive it) serving clients
 * [first, first + count) of `ctx` (borrowed) with a model of `nparams` parameters (so every
 * cohort's m must be nparams + 1). Calls fm_sa_crypto_init. NULL with *err and `e` (-ENOMEM,
 * -EIO when libsodium cannot start, -errno of pthread_mutex_init). Caller owns it. */
trainer_secagg_t *trainer_secagg_new(const char *trainer_id, trainer_ctx_t *ctx, uint32_t first,
                                     uint32_t count, size_t nparams, int *err, fm_errmsg_t *e);

/* Wipe and free every member, then the table; NULL-safe, sets *p to NULL. Only once no
 * worker uses it. */
void trainer_secagg_destroy(trainer_secagg_t **p);

/* 1 if `type` is one of the secure-aggregation frames (COHORT_INVITE .. COHORT_ABORT). */
int trainer_secagg_is_sa(fm_wire_type_t type);

/* Main thread: one frame of type `type` (fm_wire_peek) from the acks SUB, at monotonic time
 * `now`. Answers go out on `push` (the main thread's PUSH, never blocking) encoded in `buf`.
 * Returns 0, or the fm_wire decode error (the frame is then the caller's bad frame: `e`
 * says why); frames of the member-to-aggregator direction are FM_EFORMAT. */
int trainer_secagg_on_frame(trainer_secagg_t *sa, fm_wire_type_t type, const void *data,
                            size_t len, double now, void *push, fm_wire_buf_t *buf,
                            fm_errmsg_t *e);

/* Main thread: abort and free the members whose time is up at `now`. Returns how many. */
uint32_t trainer_secagg_tick(trainer_secagg_t *sa, double now);

/* Worker: the upload of member (cohort, index) after its training: delta (n = nparams
 * floats, not changed) clipped and encoded (fm_sa_codec_encode with the cohort's K, C and
 * s, weight 1, rounding to nearest) into words (n + 1 uint32, the caller's scratch), masked
 * under the table's lock, encoded into `buf` and sent on `push` (the worker's PUSH; may
 * block up to its send timeout). 0 when sent; -ENOENT (the member is gone: ended, timed out),
 * FM_ESTATE (not in TRAINING: it aborted itself), another fm_sa / fm_wire error, or -EAGAIN
 * (not sent); each is counted and logged (rate-limited). */
int trainer_secagg_upload(trainer_secagg_t *sa, uint64_t cohort, uint32_t index,
                          const float *delta, size_t n, uint32_t *words, fm_wire_buf_t *buf,
                          void *push);

/* Worker: member (cohort, index) will never upload (its client dropped out, failed or was
 * abandoned): it aborts (secrets wiped) and stays in the table, quietly, until M8 or its
 * timeout. No-op when it is gone. */
void trainer_secagg_drop(trainer_secagg_t *sa, uint64_t cohort, uint32_t index);

/* A consistent copy of the counters (any thread). */
void trainer_secagg_stats(trainer_secagg_t *sa, trainer_secagg_stats_t *out);

#endif
