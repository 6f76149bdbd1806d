/* broker_peers: which model the broker's snapshot socket last offered each peer, and when,
 * keyed by the peer's ZeroMQ routing id (one per connection), so that a peer asking again
 * for the model it was just offered gets no second copy (docs/OPERATIONS.md, "Queues and
 * memory per socket").
 *
 * An entry says "model generation `gen` was offered to this peer at time `t`": sent, or
 * refused because its send queue was full. A request is a repeat while the broker's newest
 * generation is still `gen` and less than `repeat_s` has passed: the reply is withheld, so
 * a peer costs at most one send attempt per generation per window however often it asks. A
 * newer generation is never a repeat, and after `repeat_s` the entry says nothing any more
 * (a peer whose reply was refused, or a client that sets its own routing id and
 * reconnects, is offered the model again after at most repeat_s). The table is bounded: at
 * most `cap` entries; a new peer in a full table takes the place of the one offered a model
 * longest ago (that peer may then get one more copy, which the socket's send HWM still
 * bounds).
 *
 * Not thread-safe: the broker's loop only. */
#ifndef BROKER_PEERS_H
#define BROKER_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BROKER_PEERS_ID_MAX 255 /* bytes of a routing id (ZeroMQ's limit) */

typedef struct broker_peers broker_peers_t;

/* An empty table of at most `cap` (>= 1) peers with the repeat window `repeat_s` (>= 0).
 * NULL when memory ran out. Caller owns it: broker_peers_destroy. */
broker_peers_t *broker_peers_new(size_t cap, double repeat_s);

/* Free the table; sets *p to NULL; idempotent. */
void broker_peers_destroy(broker_peers_t **p);

/* true if generation `gen` was offered to peer `id` (len bytes, borrowed) less than repeat_s
 * before `now`: withhold the reply. An unknown peer, another generation, or an id of 0 or more
 * than BROKER_PEERS_ID_MAX bytes: false. */
bool broker_peers_repeat(broker_peers_t *p, const void *id, size_t len, uint64_t gen, double now);

/* Remember that generation `gen` was offered to peer `id` at `now` (a full table first
 * forgets the entry offered longest ago). 0, -EINVAL (id of 0 or more than
 * BROKER_PEERS_ID_MAX bytes: not kept), -ENOMEM (not kept; the table is unchanged
 * otherwise). */
int broker_peers_mark(broker_peers_t *p, const void *id, size_t len, uint64_t gen, double now);

/* Forget peer `id` (it disconnected); nothing if unknown. */
void broker_peers_forget(broker_peers_t *p, const void *id, size_t len);

/* Peers remembered now (0..cap). */
size_t broker_peers_size(const broker_peers_t *p);

/* Entries given up for a new peer in a full table, since creation. */
uint64_t broker_peers_evicted(const broker_peers_t *p);

#endif
