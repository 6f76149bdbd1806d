/* agg_idset: the ids of the most recent updates, to drop resent or replayed UPDATEs.
 *
 * A fixed-capacity window: a ring of the last `cap` ids in insertion order plus an
 * open-addressing hash table over them (linear probing, load <= 1/2, backward-shift
 * deletion), so lookups and inserts are O(1) and memory is fixed at creation
 * (about 16 * cap + 8 * cap bytes: 1.5 MiB for the default 65536). When the window is full
 * the oldest id is forgotten: an update resent after `cap` newer ones were recorded is NOT
 * recognised as a duplicate. Ids come from a cryptographic source (docs/PROTOCOL.md §2.2),
 * so the hash is simply their first 8 bytes.
 *
 * Not thread-safe. No allocation after agg_idset_new. */
#ifndef AGG_IDSET_H
#define AGG_IDSET_H

#include <stddef.h>
#include <stdint.h>

#include "fm_wire.h"

#define AGG_IDSET_DEFAULT_CAP 65536

typedef struct agg_idset agg_idset_t;

/* A window of the last `cap` ids (cap >= 1). NULL with *err (may be NULL) = FM_EARG
 * (cap 0 or too large) or -ENOMEM. Caller owns it: agg_idset_destroy. */
agg_idset_t *agg_idset_new(size_t cap, int *err);

/* Free and set *p to NULL; idempotent. */
void agg_idset_destroy(agg_idset_t **p);

/* 1 if id is in the window, else 0. */
int agg_idset_contains(const agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN]);

/* Record id as the newest entry (forgetting the oldest when full). Adding an id that is
 * already present is allowed and records it again (callers check contains first). */
void agg_idset_add(agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN]);

/* Sequence numbers: every id added gets the next one (0, 1, ...), so the window holds the
 * ids of seq [next_seq - count, next_seq), oldest first. The aggregator uses them to tell
 * which ids a checkpoint made durable (those below a mark) and to acknowledge them.
 * 1 with *seq (may be NULL) if id is in the window, else 0. */
int agg_idset_find(const agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN], uint64_t *seq);

/* The sequence number the next id added will get. */
uint64_t agg_idset_next_seq(const agg_idset_t *s);

/* Write the ids of seq [from, to) still in the window, oldest first, into out (room for
 * (to - from) ids) and return how many. Ids already forgotten (seq below next_seq - count)
 * are left out. */
size_t agg_idset_range(const agg_idset_t *s, uint64_t from, uint64_t to, uint8_t *out);

/* Forget the newest n ids (at most count), as if never added: their sequence numbers are
 * given out again. Their ids, oldest first, into out (may be NULL). Returns how many. For
 * updates that were recorded but then not applied (a dropped buffer). */
size_t agg_idset_pop_newest(agg_idset_t *s, size_t n, uint8_t *out);

/* Ids in the window. */
size_t agg_idset_count(const agg_idset_t *s);
size_t agg_idset_cap(const agg_idset_t *s);

/* Write the ids oldest first, leaving out the newest `skip_newest` ones, into
 * out[0 .. FM_WIRE_ID_LEN * n) and return n (out must hold FM_WIRE_ID_LEN * count bytes).
 * This is the blob the aggregator persists in its checkpoint; agg_idset_load reads it. */
size_t agg_idset_dump(const agg_idset_t *s, size_t skip_newest, uint8_t *out);

/* Add the ids of a dump blob of `len` bytes (oldest first). FM_EFORMAT (nothing added)
 * if len is not a multiple of FM_WIRE_ID_LEN; 0 otherwise. */
int agg_idset_load(agg_idset_t *s, const void *blob, size_t len);

#endif
