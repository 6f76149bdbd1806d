/* agg_acks: the aggregator's acknowledgements (docs/PROTOCOL.md §3.6): ACK frames on a PUB
 * socket bound to [endpoints] acks, one per occasion, to every trainer (each keeps the ids
 * it is waiting for and ignores the rest).
 *
 * "applied" is said only of updates whose ids are below the checkpoint's durability mark
 * (agg_state_durable_seq): agg_acks_commit sends the ids of sequence numbers from the last
 * mark acknowledged up to the new one, read back from the id window, so an update is
 * acknowledged exactly when the checkpoint holding its effect and its id is on disk. A
 * refusal ("lost", "dropped", a rejection reason) is final and sent at once.
 *
 * PUB never blocks: an ACK that cannot be queued (no subscriber, or one at its HWM) is
 * lost, and its trainer resends the update after its timeout; the resend is a duplicate of
 * a durable id and is acknowledged again ("applied"). Counters for stats.json and /metrics.
 *
 * Not thread-safe; one per aggregator. */
#ifndef AGG_ACKS_H
#define AGG_ACKS_H

#include <stddef.h>
#include <stdint.h>

#include "aggregator_idset.h"
#include "fm_err.h"
#include "fm_metrics.h"
#include "fm_sec.h"
#include "fm_wire.h"

#define AGG_ACK_APPLIED "applied" /* durable: in a saved checkpoint */
#define AGG_ACK_LOST "lost"       /* its base version was lost in a crash: train again */
#define AGG_ACK_DROPPED "dropped" /* folded, then its buffer was dropped (not applied) */

typedef struct agg_acks agg_acks_t;

/* A PUB bound to `endpoint` (config key endpoints.acks), secured by `sec` (borrowed, may be
 * NULL: plain), with a new random incarnation id
 * ("boot", non-zero), acknowledging from sequence number `durable_seq` on (ids below it were
 * made durable by an earlier process and are answered only when resent). `metrics` (may be
 * NULL) gets fedmq_acks_total{status=applied|refused}. NULL with *err (-errno of the bind,
 * of getrandom, -ENOMEM) and one line in `e`. Caller owns it: agg_acks_destroy. */
agg_acks_t *agg_acks_new(const char *endpoint, const fm_sec_t *sec, uint64_t durable_seq,
                         fm_metrics_t *metrics, int *err, fm_errmsg_t *e);

/* Close the socket (linger 1 s: the last ACKs get out), free, *p = NULL; idempotent. */
void agg_acks_destroy(agg_acks_t **p);

/* The incarnation id (MODEL "boot", ACK "boot"). */
uint64_t agg_acks_boot(const agg_acks_t *a);

/* A checkpoint of `version` was saved with durability mark `durable_seq`: acknowledge as
 * "applied" the ids of `ids` of sequence numbers [last mark, durable_seq) still in the
 * window, then remember the mark. Ids forgotten by the window meanwhile are not
 * acknowledged (their trainers resend). */
void agg_acks_commit(agg_acks_t *a, const agg_idset_t *ids, uint64_t durable_seq,
                     uint64_t version);

/* Send one ACK with `status` for n ids (ids[16 * n], n >= 1; split in frames of at most
 * FM_WIRE_MAX_ACK_IDS), judged at `version`. Counted as applied or refused. */
void agg_acks_send(agg_acks_t *a, const uint8_t *ids, size_t n, const char *status,
                   uint64_t version);

/* One frame of another kind (the secure-aggregation messages to members) on the same PUB,
 * non-blocking. 0, or -errno (not queued: logged, rate-limited). */
int agg_acks_publish(agg_acks_t *a, const void *frame, size_t len);

/* Ids acknowledged as applied, and answered with a refusal, since the start. */
uint64_t agg_acks_applied(const agg_acks_t *a);
uint64_t agg_acks_refused(const agg_acks_t *a);

#endif
