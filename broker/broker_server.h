/* broker_server: the fedmq broker (docs/ARCHITECTURE.md, "The federation").
 *
 * SUB (connect) endpoints.aggregator_models: MODEL frames from the aggregator, each one
 *   validated (framing, type, configured model name, tensors against the layout, finite);
 *   a bad frame is counted and logged (rate-limited), never cached nor forwarded.
 * Last-value cache: the raw bytes of the newest MODEL. A MODEL whose (version, created ts)
 *   differs from the cached one replaces it (the latest wins, even with a lower version:
 *   the aggregator restarted from an older checkpoint) and is republished unchanged on
 *   PUB (bind) endpoints.model_pub; identical repeats are not republished.
 * ROUTER (bind) endpoints.snapshot: [identity][body] (or [identity][empty][body] from REQ).
 *   SNAPSHOT_REQ and HELLO are answered with the cached MODEL at once, or when the first
 *   model arrives (pending requesters, bounded and deduplicated by identity). Bounded per
 *   peer: a peer is offered the same model at most once per BROKER_SNAPSHOT_REPEAT_S
 *   (broker_peers; a newer model goes at once), at most BROKER_ROUTER_SNDHWM replies wait
 *   in its queue (ROUTER_MANDATORY, zero send timeout: a reply to a full queue is refused
 *   at once, never queued), and queued replies share one copy of their model's bytes;
 *   withheld replies are counted by reason;
 *   HELLO/HEARTBEAT/BYE maintain the table of live trainers (broker_members), which
 *   expire after broker.heartbeat_timeout_s.
 * One summary line every BROKER_SUMMARY_S seconds. Single-threaded: one fm_loop with a
 * reader per socket, timers for expiry and the summary, and SIGHUP reloads
 * (fm_daemon_reload: heartbeat_timeout_s, log_level). */
#ifndef BROKER_SERVER_H
#define BROKER_SERVER_H

#include <stdint.h>

#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_metrics.h"

#define BROKER_PENDING_MAX 4096 /* requesters waiting for the first model */
/* The snapshot ROUTER's bounds (memory: docs/OPERATIONS.md, "Queues and memory per socket"):
 * inbound frame cap (membership and SNAPSHOT_REQ frames are under 1 KiB with 255-byte ids; a
 * larger frame drops the connection) and requests queued per peer (x the cap: 2 MiB); MODEL
 * replies queued per peer (a peer that reads needs one; beyond this a reply is refused);
 * peers the repeat rule remembers, and its window (the same model to the same peer at most
 * once per window) */
#define BROKER_ROUTER_MAXMSG (64 << 10)
#define BROKER_ROUTER_RCVHWM 32
#define BROKER_ROUTER_SNDHWM 2
#define BROKER_SNAPSHOT_PEERS_MAX 4096
#define BROKER_SNAPSHOT_REPEAT_S 1.0
#define BROKER_SUB_MAXMSG (256 << 20) /* inbound frame cap on SUB (bytes), at least */
#define BROKER_SUB_SLACK (1 << 20)    /* beyond a model's floats: header, names, shapes */
/* MODELs queued from the aggregator: bounds memory (16 x 4.8 MB for cnn); the aggregator
 * repeats its current model every second */
#define BROKER_SUB_RCVHWM 16
/* model_pub is ZMQ_CONFLATE: each subscriber's queue holds one MODEL, the newest, besides the
 * one being written (no HWM). With an HWM a subscriber slower than the versions (1,000 of them
 * on one host, a cnn every second) kept the old ones queued and lost the newest: it trained on
 * a stale model until the next one, or its 30 s silence rule (bench/fanout --burst). */
/* ZMQ_BACKLOG of model_pub and snapshot: connections waiting to be accepted (the kernel caps
 * it at net.core.somaxconn). libzmq's 100 overflows when 1,000 subscribers (re)connect at
 * once, e.g. after a broker restart: the kernel drops their SYNs and they retry 1, 3, 7 s
 * later (bench/fanout). */
#define BROKER_BACKLOG 4096
#define BROKER_PUB_LINGER_MS 1000 /* a last publish may still leave at shutdown */
#define BROKER_EXPIRY_S 0.1       /* period of the trainer expiry check */
#define BROKER_SUMMARY_S 10.0     /* seconds between summary lines */

typedef struct broker_server broker_server_t;

/* Counters since start (for the summary line and tests). */
typedef struct {
    uint64_t models_received;  /* valid MODEL frames from the aggregator (incl. repeats) */
    uint64_t models_forwarded; /* MODEL frames published on model_pub */
    uint64_t snapshots_served; /* MODEL replies sent on the ROUTER */
    uint64_t rejected_sub;     /* bad frames from the aggregator side */
    uint64_t rejected_router;  /* bad frames on the ROUTER */
    uint64_t pending_dropped;  /* requesters not remembered (pending list full) */
    uint64_t reply_failed;     /* ROUTER sends that failed otherwise (logged) */
    /* MODEL replies withheld (each also a fedmq_snapshots_withheld_total{reason}): */
    uint64_t snapshots_repeat; /* "repeat": that model was offered to that peer less than
                                  BROKER_SNAPSHOT_REPEAT_S ago */
    uint64_t snapshots_full;   /* "queue_full": BROKER_ROUTER_SNDHWM replies wait for that
                                  peer already (it does not read) */
    uint64_t snapshots_gone;   /* "gone": the peer had disconnected */
} broker_stats_t;

/* Create the broker from a checked config: sockets are created, bound and connected.
 * `args` (borrowed, may be NULL) is kept to reload the config on SIGHUP; it must outlive
 * the server. The broker's series are registered in `metrics` (borrowed, may be NULL; it
 * must outlive the server): fedmq_model_version, fedmq_trainers_live,
 * fedmq_models_received_total, fedmq_models_forwarded_total, fedmq_snapshots_served_total,
 * fedmq_snapshots_withheld_total{reason} and fedmq_frames_rejected_total{socket}, each
 * counted where its broker_stats_t twin is.
 * Returns NULL on failure with *err set (-errno of a bind or connect, e.g. -EADDRINUSE,
 * with `e` naming the key and endpoint; -ENOMEM; FM_EMODEL): the caller exits with
 * fm_daemon_exit_code(*err). Caller owns the result: broker_server_destroy(). */
broker_server_t *broker_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                   fm_metrics_t *metrics, fm_sec_t *sec, int *err,
                                   fm_errmsg_t *e);

/* Run the loop until fm_daemon_stopping(). Returns 0 (clean stop) or a negative error
 * (polling failed for good, logged). */
int broker_server_run(broker_server_t *self);

/* Counters so far (borrowed, lives as long as self). */
const broker_stats_t *broker_server_stats(const broker_server_t *self);

/* Close the sockets (PUB with its linger) and free everything; sets *p to NULL;
 * idempotent. */
void broker_server_destroy(broker_server_t **p);

#endif
