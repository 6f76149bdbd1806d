/* agg_secagg: the aggregator's cohorts of secure aggregation ([secagg] enabled;
 * docs/SECAGG.md, "In the daemons").
 *
 * It forms cohorts of K live clients that are in no other cohort, each on the current model
 * version mv: in async mode up to [secagg] cohorts at once (each one FedBuff buffer), in
 * sync mode one at a time (each one round). Each cohort runs the protocol state machine
 * fm_sa_cohort over the real messages: M0 COHORT_INVITE, M2 KEY_LIST, M4 SHARES_FWD, M6
 * UNMASK_REQ and M8 COHORT_DONE / COHORT_ABORT go out through the caller's `send` (the acks
 * PUB: every trainer gets every frame and keeps those addressed to its members), M1, M3, M5
 * and M7 come in through agg_secagg_frame (the updates PULL). A cohort that reaches DONE hands
 * its decoded sum to the caller's `sum` callback (once) and is freed; one that aborts
 * (fewer than t members at some phase) releases nothing. Either way its clients may be
 * invited again.
 *
 * What the aggregator holds of an individual member: its public keys, the boxes it relays
 * (encrypted for another member), its masked upload only while it is added into the
 * cohort's running sum (fm_sa_cohort keeps no upload), and the shares survivors send to
 * unmask the sum. No function here or in fm_sa_cohort decodes anything but a cohort's
 * unmasked sum (tests/structure/secagg_decode_test.sh checks the callers of
 * fm_sa_codec_decode).
 *
 * Under [security] mode = curve, a member message is taken only from the key of the trainer
 * the member was invited as (reason identity otherwise).
 *
 * Counters (agg_secagg_counters, /metrics): cohorts formed, completed, aborted, in flight;
 * members dropped per phase (invited but no keys; keys but no shares; shares but no
 * upload; uploaded but no unmasking shares when the cohort ended); messages refused by
 * reason.
 *
 * Single-threaded (the aggregator's loop); no sockets, the caller's clock. */
#ifndef AGG_SECAGG_H
#define AGG_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_members.h"
#include "fm_metrics.h"
#include "fm_sa_cohort.h"
#include "fm_sec.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define AGG_SECAGG_MAX_COHORTS 64

/* A cohort's unmasked, decoded sum (borrowed for the callback). */
typedef struct {
    uint64_t cohort;
    uint64_t mv;           /* the version its members trained from */
    const double *decoded; /* m values: the sum of the survivors' clipped deltas, then (last)
                              the sum of their weights (each 1: = survivors) */
    uint32_t m;
    uint32_t survivors; /* |U3| */
} agg_secagg_sum_t;

/* One frame to every trainer (the acks PUB); non-blocking: a frame that cannot be queued is
 * lost (its members time out: the protocol treats them as dropped). */
typedef void (*agg_secagg_send_fn)(void *arg, const void *frame, size_t len);
/* A DONE cohort's sum. */
typedef void (*agg_secagg_sum_fn)(void *arg, const agg_secagg_sum_t *sum);
/* Test hook: the words of every MASKED_UPDATE accepted into a cohort's sum, as received. */
typedef void (*agg_secagg_observe_fn)(void *arg, const uint32_t *y, uint32_t m);

typedef struct {
    uint64_t formed, completed, aborted;
    uint32_t in_flight;
    uint64_t dropped[4];      /* members dropped at keys, shares, train, unmask */
    uint64_t refused;         /* member messages refused (any reason) */
    uint64_t uploads;         /* masked updates added into a sum */
    uint64_t applied_members; /* survivors of completed cohorts */
} agg_secagg_counters_t;

typedef struct agg_secagg agg_secagg_t;

/* The cohorts of `cfg` ([secagg], fm_cfg_check passed with it enabled; borrowed, must
 * outlive it) for a model of `nparams` floats (m = nparams + 1 coordinates). `send` and
 * `sum` with `arg` are called from agg_secagg_frame / _tick / _abort_all. NULL with *err
 * (FM_EARG: the cohort parameters fail fm_sa_params_check; -ENOMEM; the libsodium init)
 * and one line in `e`. Caller owns it: agg_secagg_destroy. */
agg_secagg_t *agg_secagg_new(const fm_config_t *cfg, size_t nparams, agg_secagg_send_fn send,
                             agg_secagg_sum_fn sum, void *arg, int *err, fm_errmsg_t *e);

/* Wipe and free every cohort (no messages sent), *p = NULL; idempotent. */
void agg_secagg_destroy(agg_secagg_t **p);

/* Register the fedmq_secagg_* series in `m` (may be NULL: nothing); `sa` NULL ([secagg]
 * off): the series are served at 0, so every daemon serves the same names. 0 or -ENOMEM. */
int agg_secagg_metrics(agg_secagg_t *sa, fm_metrics_t *m);

/* A member message (type ADVERTISE_KEYS, SHARES, MASKED_UPDATE or UNMASK_SHARES, peeked by
 * the caller) from the updates socket: decoded, checked against its cohort, applied. `sec`
 * and `user_id` (may be NULL) identify the sender under curve. Refusals are counted and
 * logged (rate-limited, one line); the daemon never stops on one. */
void agg_secagg_frame(agg_secagg_t *sa, fm_wire_type_t type, const void *data, size_t len,
                      fm_sec_t *sec, const char *user_id, double now);

/* Time passed: apply phase deadlines (sending the next phase's messages), then, unless
 * `finished`, form new cohorts at `version` from the live clients (live[num_clients], 1 =
 * served by a live trainer; `members` names the trainer of each). */
void agg_secagg_tick(agg_secagg_t *sa, uint64_t version, int finished, const uint8_t *live,
                     const fm_members_t *members, double now);

/* Abort every cohort in flight with `why` (shutdown, no more versions): COHORT_ABORT to
 * their members, nothing released. */
void agg_secagg_abort_all(agg_secagg_t *sa, const char *why);

/* Counters so far (borrowed, live). */
const agg_secagg_counters_t *agg_secagg_counters(const agg_secagg_t *sa);

/* The stats.json fields (secagg_*) into *st. */
void agg_secagg_stats(const agg_secagg_t *sa, fm_stats_t *st);

/* One line for the start-up log ("secure aggregation: cohorts of K = 10, t = 7, ..."). */
void agg_secagg_describe(const agg_secagg_t *sa, char *out, size_t cap);

/* Test hook: `fn` sees every accepted MASKED_UPDATE (NULL: none). */
void agg_secagg_set_observer(agg_secagg_t *sa, agg_secagg_observe_fn fn, void *arg);

#endif
