/* broker_members: the broker's table of live trainers (HELLO / HEARTBEAT / BYE).
 *
 * A bounded table (at most BROKER_MEMBERS_MAX entries) keyed by trainer id. An entry is one
 * incarnation (trainer id, pid): a message with a new pid for a known trainer replaces the
 * entry (the trainer restarted); for the same incarnation a message whose "seq" is not
 * greater than the last one seen is stale and ignored (docs/PROTOCOL.md §3.3). Entries not
 * heard from for the timeout expire. Times are the caller's monotonic seconds. No sockets,
 * no logging: the caller logs from the results. */
#ifndef BROKER_MEMBERS_H
#define BROKER_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_wire.h"

#define BROKER_MEMBERS_MAX 4096

/* One live trainer incarnation. */
typedef struct {
    fm_wire_member_t m;   /* the last accepted membership message */
    double last_seen;     /* monotonic seconds */
} broker_member_t;

typedef struct broker_members broker_members_t;

/* What broker_members_apply did with a message. */
typedef enum {
    BROKER_MEMBER_JOINED,    /* new trainer (HELLO or HEARTBEAT from an unknown trainer) */
    BROKER_MEMBER_RESTARTED, /* known trainer id, new pid: entry replaced */
    BROKER_MEMBER_REFRESHED, /* known incarnation, newer seq */
    BROKER_MEMBER_STALE,     /* known incarnation, seq not newer: ignored */
    BROKER_MEMBER_LEFT,      /* BYE of a known incarnation: removed */
    BROKER_MEMBER_UNKNOWN_BYE, /* BYE of a trainer not in the table: nothing to do */
    BROKER_MEMBER_FULL       /* table full: not registered */
} broker_member_event_t;

/* New empty table. NULL on -ENOMEM. Caller owns it: broker_members_destroy(). */
broker_members_t *broker_members_new(void);

/* Free the table and set *p to NULL; idempotent. */
void broker_members_destroy(broker_members_t **p);

/* Apply one decoded membership message (type HELLO, HEARTBEAT or BYE) received at `now`.
 * Returns what happened; a RESTARTED event leaves the previous pid in *old_pid (may be
 * NULL). */
broker_member_event_t broker_members_apply(broker_members_t *self, fm_wire_type_t type,
                                           const fm_wire_member_t *m, double now,
                                           uint32_t *old_pid);

/* Remove every entry last seen before now - timeout_s; for each one removed, call
 * on_expired(arg, entry) first (may be NULL). Returns how many expired. */
int broker_members_expire(broker_members_t *self, double now, double timeout_s,
                          void (*on_expired)(void *arg, const broker_member_t *entry),
                          void *arg);

/* Live entries. */
int broker_members_count(const broker_members_t *self);

/* Sum of "ccount" (clients served) over live entries. */
uint64_t broker_members_clients(const broker_members_t *self);

#endif
