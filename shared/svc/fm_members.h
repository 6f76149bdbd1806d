/* fm_members: a table of live trainers (broker, aggregator) (HELLO / HEARTBEAT / BYE).
 *
 * A bounded table (at most FM_MEMBERS_MAX entries) keyed by trainer id. An entry is one
 * incarnation (trainer id, pid): a message with a new pid for a known trainer replaces the
 * entry (the trainer restarted); for the same incarnation a message whose "seq" is not
 * greater than the last one seen is stale and ignored (docs/PROTOCOL.md §3.3). Entries not
 * heard from for the timeout expire. Times are the caller's monotonic seconds. No sockets,
 * no logging: the caller logs from the results. */
#ifndef FM_MEMBERS_H
#define FM_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_wire.h"

#define FM_MEMBERS_MAX 4096

/* One live trainer incarnation. */
typedef struct {
    fm_wire_member_t m; /* the last accepted membership message */
    double last_seen;   /* monotonic seconds */
} fm_member_t;

typedef struct fm_members fm_members_t;

/* What fm_members_apply did with a message. */
typedef enum {
    FM_MEMBER_JOINED,      /* new trainer (HELLO or HEARTBEAT from an unknown trainer) */
    FM_MEMBER_RESTARTED,   /* known trainer id, new pid: entry replaced */
    FM_MEMBER_REFRESHED,   /* known incarnation, newer seq */
    FM_MEMBER_STALE,       /* known incarnation, seq not newer: ignored */
    FM_MEMBER_LEFT,        /* BYE of a known incarnation: removed */
    FM_MEMBER_UNKNOWN_BYE, /* BYE of a trainer not in the table: nothing to do */
    FM_MEMBER_FULL         /* table full: not registered */
} fm_member_event_t;

/* New empty table. NULL on -ENOMEM. Caller owns it: fm_members_destroy(). */
fm_members_t *fm_members_new(void);

/* Free the table and set *p to NULL; idempotent. */
void fm_members_destroy(fm_members_t **p);

/* Apply one decoded membership message (type HELLO, HEARTBEAT or BYE) received at `now`.
 * Returns what happened; a RESTARTED event leaves the previous pid in *old_pid (may be
 * NULL). */
fm_member_event_t fm_members_apply(fm_members_t *self, fm_wire_type_t type,
                                   const fm_wire_member_t *m, double now, uint32_t *old_pid);

/* Remove every entry last seen before now - timeout_s; for each one removed, call
 * on_expired(arg, entry) first (may be NULL). Returns how many expired. */
int fm_members_expire(fm_members_t *self, double now, double timeout_s,
                      void (*on_expired)(void *arg, const fm_member_t *entry), void *arg);

/* Live entries. */
int fm_members_count(const fm_members_t *self);

/* Sum of "ccount" (clients served) over live entries. */
uint64_t fm_members_clients(const fm_members_t *self);

/* Mark the client ids served by live entries: mark[k] = 1 for each k < num_clients in some
 * entry's [cfirst, cfirst + ccount), else 0 (mark has num_clients bytes, caller's). Returns
 * the number of distinct clients marked (ranges of several trainers may overlap). */
uint32_t fm_members_live_clients(const fm_members_t *self, uint32_t num_clients, uint8_t *mark);

#endif
