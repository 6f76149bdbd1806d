/* trainer_outbox: the UPDATEs a trainer has sent to an acknowledging aggregator and not yet
 * had acknowledged (docs/PROTOCOL.md §3.6), kept as encoded frames for resending.
 *
 * Workers put a copy of each UPDATE frame before sending it; the main thread removes what
 * ACKs name, and resends what is due: ack_timeout_s after the send, the wait doubling per
 * resend up to S_BACKOFF_MAX (8) times the timeout; everything at once when the aggregator
 * restarted (a new "boot"). Memory is bounded by max_bytes: a put that would exceed it
 * gives up the oldest entries first (counted as evicted; the caller logs it), and a frame
 * larger than max_bytes alone is not kept (evicted at once).
 *
 * Entries are kept in send order in one array (an ACK looks ids up linearly: the outbox
 * holds the updates in flight, a few per worker, unless the aggregator is away).
 * Thread-safe (one mutex): any thread may put; ack and resend are the main thread's. */
#ifndef TRAINER_OUTBOX_H
#define TRAINER_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "fm_wire.h"

typedef struct trainer_outbox trainer_outbox_t;

/* Counters since creation (a consistent snapshot). */
typedef struct {
    uint64_t kept;    /* frames put */
    uint64_t acked;   /* acknowledged as applied */
    uint64_t refused; /* answered with a refusal (lost, dropped, a rejection reason) */
    uint64_t resent;  /* resends handed to the socket */
    uint64_t evicted; /* given up for memory (never acknowledged) */
    size_t entries;   /* waiting now */
    size_t bytes;     /* their frames' bytes */
} trainer_outbox_stats_t;

/* An empty outbox of at most max_bytes (>= 1) of frames, resending after `timeout` seconds
 * (> 0). NULL with *err = -ENOMEM / -errno (mutex). Caller owns it: trainer_outbox_destroy. */
trainer_outbox_t *trainer_outbox_new(size_t max_bytes, double timeout, int *err);

/* A new resend timeout (config reload), for the entries put from now on and for the
 * backoff of the next resends. */
void trainer_outbox_set_timeout(trainer_outbox_t *o, double timeout);

/* Free everything, *p = NULL; idempotent. */
void trainer_outbox_destroy(trainer_outbox_t **p);

/* Keep a copy of frame[0..len) (the UPDATE whose id is `id`), sent at monotonic time `now`,
 * first resend due at now + the timeout. Returns the entries given up to make room (0 usually;
 * 1 with the frame itself not kept when len > max_bytes), or -ENOMEM (not kept). */
int trainer_outbox_put(trainer_outbox_t *o, const uint8_t id[FM_WIRE_ID_LEN], const void *frame,
                       size_t len, double now);

/* An ACK for n ids (ids[16 * n], unaligned): remove those waiting here, counting them as
 * acked (applied = 1) or refused; found[k] (found may be NULL) = 1 if id k was here. Returns
 * how many were here. */
size_t trainer_outbox_ack(trainer_outbox_t *o, const void *ids, size_t n, int applied,
                          uint8_t *found);

/* Resend the entries due at `now` (all of them with all = 1) through send(arg, frame, len),
 * which returns 0 when the frame was queued: then the entry's next resend is now + the
 * timeout * 2^resends (at most 8 timeouts); a failed send leaves it due. Called with the lock
 * held: `send` must not block or call back. Returns the frames resent. */
size_t trainer_outbox_resend(trainer_outbox_t *o, double now, int all,
                             int (*send)(void *arg, const void *frame, size_t len), void *arg);

/* The counters. */
void trainer_outbox_stats(trainer_outbox_t *o, trainer_outbox_stats_t *st);

#endif
