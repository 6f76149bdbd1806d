/* fm_members: a table of live trainers (broker, aggregator) (HELLO / HEARTBEAT / BYE).
 *
 * A bounded table (at most FM_MEMBERS_MAX entries) keyed by trainer id. An entry is one
 * incarnation (trainer id, pid): a message with a new pid for a known trainer replaces the
 * entry (the trainer restarted); for the same incarnation a message whose "seq" is not
 * greater than the last one seen is stale and ignored (docs/PROTOCOL.md §3.3). Entries not
 * heard from for the timeout expire. Times are the caller's monotonic seconds. No sockets,
 * no logging: the caller logs from the results.
 *
 * Membership comes from anyone who can reach the socket, so the table is bounded per
 * sender (docs/PROTOCOL.md §3.3, "Bounds"). Every message is applied with its origin: the
 * peer it came from (fm_members_peer: for TCP the IP address) and, when the socket
 * authenticates its peers, the identity the peer proved (e.g. a CurveZMQ key). An entry
 * belongs to the origin that created it:
 *   - an origin holds at most `per_origin` entries: a new trainer id beyond that is
 *     refused (FM_MEMBER_REFUSED_SHARE), so a flood of ids from one peer fills its own
 *     share and never the table;
 *   - a live entry is never evicted or changed by a message from another origin (refused,
 *     FM_MEMBER_REFUSED_FOREIGN), not even a restart or a BYE: a trainer id whose entry was
 *     made elsewhere joins from here only after that entry expired or left;
 *   - a client range must lie within [0, num_clients) and, for an origin with an enrolled
 *     range (an identity enrolled for some clients), within that range (else
 *     FM_MEMBER_REFUSED_CLIENTS), so the clients the table counts are always possible
 *     ("ccount" 0, no fixed clients, always passes).
 * The checks come in this order: clients, foreign, table full, share. Refusals are counted
 * per reason (fm_members_refused, and /metrics with fm_members_metrics). */
#ifndef FM_MEMBERS_H
#define FM_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_metrics.h"
#include "fm_wire.h"

#define FM_MEMBERS_MAX 4096
#define FM_MEMBERS_ORIGIN_MAX 95 /* bytes of an origin's peer or identity string */

/* The table's bounds (plain data). */
typedef struct {
    uint32_t num_clients; /* client ids are [0, num_clients): [federation] num_clients */
    int per_origin;       /* live entries one origin may hold, 1..FM_MEMBERS_MAX */
} fm_members_limits_t;

/* Where a message came from. An entry is bound to `identity` when it is given, else to
 * `peer`. */
typedef struct {
    /* the sender's network origin (fm_members_peer); NULL or "" = unknown: all such
     * messages share one origin */
    const char *peer;
    /* the identity the sender authenticated as (e.g. the CurveZMQ public key of the ZAP
     * handshake), NULL when the socket does not authenticate: then the peer is the
     * origin. With an identity, the share is per identity and the trainer id stays bound
     * to it. At most FM_MEMBERS_ORIGIN_MAX bytes (FM_ASSERT). */
    const char *identity;
    /* the clients the identity is enrolled for, [enrolled_first, enrolled_first +
     * enrolled_count), when has_enrolled: a member's range must lie within it */
    int has_enrolled;
    uint32_t enrolled_first, enrolled_count;
} fm_member_origin_t;

/* One live trainer incarnation. */
typedef struct {
    fm_wire_member_t m; /* the last accepted membership message */
    double last_seen;   /* monotonic seconds */
    /* the origin it is bound to: "i" + identity or "p" + peer */
    char origin[FM_MEMBERS_ORIGIN_MAX + 2];
} fm_member_t;

typedef struct fm_members fm_members_t;

/* What fm_members_apply did with a message. */
typedef enum {
    FM_MEMBER_JOINED,          /* new trainer (HELLO or HEARTBEAT from an unknown trainer) */
    FM_MEMBER_RESTARTED,       /* known trainer id, new pid: entry replaced */
    FM_MEMBER_REFRESHED,       /* known incarnation, newer seq */
    FM_MEMBER_STALE,           /* known incarnation, seq not newer: ignored */
    FM_MEMBER_LEFT,            /* BYE of a known incarnation: removed */
    FM_MEMBER_UNKNOWN_BYE,     /* BYE of a trainer not in the table: nothing to do */
    FM_MEMBER_FULL,            /* table full: not registered (refused) */
    FM_MEMBER_REFUSED_CLIENTS, /* client range beyond num_clients or the enrolled range */
    FM_MEMBER_REFUSED_FOREIGN, /* the trainer id is live under another origin */
    FM_MEMBER_REFUSED_SHARE    /* a new id from an origin that holds per_origin already */
} fm_member_event_t;

/* Refusal reasons, the index of fm_members_refused and the "reason" label of
 * fedmq_members_refused_total. */
typedef enum {
    FM_MEMBERS_REFUSED_CLIENTS, /* "clients" */
    FM_MEMBERS_REFUSED_FOREIGN, /* "foreign" */
    FM_MEMBERS_REFUSED_SHARE,   /* "peer_share" */
    FM_MEMBERS_REFUSED_FULL,    /* "full" */
    FM_MEMBERS_REFUSED_COUNT
} fm_members_refusal_t;

/* New empty table with the bounds `lim` (copied; NULL: no client bound, per_origin =
 * FM_MEMBERS_MAX, for tools and tests). NULL on -ENOMEM. Caller owns it:
 * fm_members_destroy(). */
fm_members_t *fm_members_new(const fm_members_limits_t *lim);

/* Free the table and set *p to NULL; idempotent. */
void fm_members_destroy(fm_members_t **p);

/* New bounds (a config reload): they apply to the next messages; entries already live stay
 * (a lower per_origin refuses newcomers until the origin is below it). */
void fm_members_set_limits(fm_members_t *self, const fm_members_limits_t *lim);

/* Count refusals on `m` from now on as fedmq_members_refused_total{reason} (every reason
 * registered, from the counts so far). m may be NULL (nothing). 0 or -ENOMEM. */
int fm_members_metrics(fm_members_t *self, fm_metrics_t *m);

/* Apply one decoded membership message (type HELLO, HEARTBEAT or BYE) from `origin` (NULL:
 * unknown peer, no identity) received at `now`. Returns what happened; a RESTARTED event
 * leaves the previous pid in *old_pid (may be NULL). A refused message changes no entry. */
fm_member_event_t fm_members_apply(fm_members_t *self, fm_wire_type_t type,
                                   const fm_wire_member_t *m, const fm_member_origin_t *origin,
                                   double now, uint32_t *old_pid);

/* Remove every entry last seen before now - timeout_s; for each one removed, call
 * on_expired(arg, entry) first (may be NULL). Returns how many expired. */
int fm_members_expire(fm_members_t *self, double now, double timeout_s,
                      void (*on_expired)(void *arg, const fm_member_t *entry), void *arg);

/* Live entries. */
int fm_members_count(const fm_members_t *self);

/* Distinct clients served by live entries: the size of the union of their ranges [cfirst,
 * cfirst + ccount), each cut at 2^32 (ranges of several trainers may overlap). With a
 * client bound it is at most num_clients. */
uint64_t fm_members_clients(fm_members_t *self);

/* Mark the client ids served by live entries: mark[k] = 1 for each k < num_clients in some
 * entry's [cfirst, cfirst + ccount), else 0 (mark has num_clients bytes, caller's). Returns
 * the number of distinct clients marked (ranges of several trainers may overlap). */
uint32_t fm_members_live_clients(const fm_members_t *self, uint32_t num_clients, uint8_t *mark);

/* The trainer id of a live entry serving `client` (the first such entry) into
 * trainer[FM_WIRE_STR_MAX + 1]. 1 if one serves it, else 0 (trainer untouched). */
int fm_members_owner(const fm_members_t *self, uint32_t client, char *trainer);

/* Refusals of reason r (< FM_MEMBERS_REFUSED_COUNT) since the table was made. */
uint64_t fm_members_refused(const fm_members_t *self, fm_members_refusal_t r);

/* "clients", "foreign", "peer_share", "full"; "?" out of range. Static string. */
const char *fm_members_refusal_name(fm_members_refusal_t r);

/* The origin string of a message received on a socket bound to `endpoint`, whose libzmq
 * "Peer-Address" property is `addr` (NULL when the message has none), into
 * out[FM_MEMBERS_ORIGIN_MAX + 1]:
 *   tcp://   the peer's IP address as libzmq gives it ("127.0.0.1", "::1"): one origin
 *            per host, whatever its connections and ports;
 *   ipc://   "uid:N", the peer's user id from the credentials libzmq appends to the
 *            address (":uid:gid:pid"): one origin per local user;
 *   other transports (inproc) or no address: "local", one origin for all of them.
 * A longer address is cut to FM_MEMBERS_ORIGIN_MAX bytes. */
void fm_members_peer(const char *endpoint, const char *addr, char *out);

#endif
