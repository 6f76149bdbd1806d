/* agg_stats: the aggregator's counters (updates applied, frames rejected by reason, bytes
 * received, buffers dropped), the rate-limited warnings about rejected frames,
 * <checkpoint_dir>/stats.json (written with fm_stats; keys: docs/OPERATIONS.md, "State"),
 * and the aggregator's /metrics series (agg_stats_metrics; docs/OPERATIONS.md, "Metrics"):
 * each counter of /metrics is counted by the same function call as its stats.json twin, so
 * the two always agree.
 *
 * No sockets, no clock: every function that needs a time takes the caller's monotonic
 * `now` (and the wall clock for the file's "updated"). Logging: one LOG_WARNING line per
 * rejected frame within the daemons' one rate limit (fm_ratelog: the lines over its burst
 * are counted and reported with the next line written); counting never stops. */
#ifndef AGG_STATS_H
#define AGG_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_metrics.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define AGG_STATS_MIN_S 1.0 /* stats.json rewritten for new rejections at most this often */
#define AGG_STATS_RATE_SPAN_S 30.0 /* updates/s: over the last this many seconds */

/* Why a frame was dropped. The order is the index into the checkpoint's
 * rejected_by_reason[] counters: append only. */
typedef enum {
    AGG_REJ_MALFORMED,       /* decode error other than below (FM_EFORMAT, FM_ERANGE) */
    AGG_REJ_TRUNCATED,       /* FM_ETRUNC */
    AGG_REJ_VERSION,         /* FM_EVERSION: protocol version other than 1 */
    AGG_REJ_UNEXPECTED_TYPE, /* a well-formed message that is not an UPDATE */
    AGG_REJ_MODEL,           /* UPDATE "model" names another model */
    AGG_REJ_NAME,            /* FM_ENAME: unknown, duplicate or missing tensor */
    AGG_REJ_DTYPE,           /* FM_EDTYPE */
    AGG_REJ_SHAPE,           /* FM_ESHAPE */
    AGG_REJ_NONFINITE,       /* NaN or infinity in the delta */
    AGG_REJ_STALE,           /* current version - base > max_staleness */
    AGG_REJ_FUTURE,          /* base > current version */
    AGG_REJ_DUPLICATE,       /* update id seen before (within the id window) */
    AGG_REJ_SAMPLES,         /* "n" == 0 */
    AGG_REJ_LATE,            /* sync: for a closed round (or no round, or an older base);
                                both modes: num_rounds reached */
    AGG_REJ_COHORT,          /* sync: client not selected, or already reported this round */
    AGG_REJ_QUORUM,          /* async: fewer than min_clients (> 1) clients live */
    AGG_REJ_IDENTITY,        /* [security] curve: the sender's key is not that trainer's, or
                                not enrolled for that client */
    AGG_REJ_NORM,            /* L2 norm above [aggregator] norm_bound, norm_action = reject */
    AGG_REJ_OVERFLOW,        /* finite, but too large to fold (FM_SCREEN_NORM_CEILING, or
                                weight x norm over the accumulator's limit) */
    AGG_REJ_REPEAT,          /* [privacy] mode = client: the client already has an update in
                                the open buffer (one per client per step) */
    AGG_REJ_SECAGG,          /* [secagg] enabled: a plain UPDATE (updates travel masked, in
                                cohorts only) */
    AGG_REJ_ENCODING,        /* an encoded tensor (fm_codec) that does not decode: sizes that
                                disagree, I8 scale not finite, indices out of range or not
                                increasing, a bad zstd frame */
    AGG_REJ_COUNT
} agg_reason_t;

/* "malformed", "truncated", ... (static string; the key in stats.json); "?" out of range. */
const char *agg_reason_name(agg_reason_t r);

/* The counters a checkpoint keeps (plain data). */
typedef struct {
    uint64_t applied;        /* updates folded into versions */
    uint64_t rejected_total; /* sum of rejected[] */
    uint64_t rejected[AGG_REJ_COUNT];
    uint64_t clipped; /* updates folded scaled down to the norm bound (not rejections) */
} agg_counters_t;

typedef struct agg_stats agg_stats_t;

/* Counters at zero for the file <checkpoint_dir>/stats.json, `started` the wall clock of
 * the daemon's start, `now` its monotonic time (the start of the updates/s window). NULL with
 * *err = -ENAMETOOLONG (path) or -ENOMEM and one line in `e`. Caller owns it: agg_stats_destroy.
 */
agg_stats_t *agg_stats_new(const char *checkpoint_dir, double started, double now, int *err,
                           fm_errmsg_t *e);

/* Free and NULL *p; idempotent. */
void agg_stats_destroy(agg_stats_t **p);

/* Histogram buckets (upper bounds) of fedmq_update_staleness (versions) and of
 * fedmq_aggregation_seconds / fedmq_checkpoint_seconds (seconds). */
#define AGG_STATS_STALENESS_BUCKETS 0, 1, 2, 3, 5, 8, 13, 20, 50, 100
#define AGG_STATS_SECONDS_BUCKETS                                                                \
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10

/* Register the aggregator's series in `m` (borrowed, must outlive `s`; NULL: none) and
 * count them from now on: fedmq_updates_received_total (frames other than membership
 * messages: every one is then folded or rejected), fedmq_updates_applied_total,
 * fedmq_updates_rejected_total{reason} (every reason, from 0), fedmq_updates_clipped_total,
 * fedmq_received_bytes_total,
 * fedmq_buffers_dropped_total, fedmq_model_version, fedmq_clients_live and the histograms
 * fedmq_update_staleness, fedmq_aggregation_seconds, fedmq_checkpoint_seconds. The
 * counters start from the current (restored) ones. 0 or -ENOMEM. */
int agg_stats_metrics(agg_stats_t *s, fm_metrics_t *m);

/* The persistent counters (borrowed, lives as long as `s`); agg_stats_restore sets them
 * (from a checkpoint; /metrics' received counter becomes applied + rejected: the updates
 * folded but not applied before the stop are not known). */
const agg_counters_t *agg_stats_counters(const agg_stats_t *s);
void agg_stats_restore(agg_stats_t *s, const agg_counters_t *c);

/* Count a rejected frame of reason `r` (< AGG_REJ_COUNT) and log "rejected frame (<name>):
 * <why>" within the rate limit (fm_ratelog). */
void agg_stats_reject(agg_stats_t *s, agg_reason_t r, const char *why);

/* A folded update was clipped to the norm bound: counted (stats.json "updates_clipped",
 * fedmq_updates_clipped_total) and logged at `level` within a rate limit (LOG_NOTICE for the
 * robustness screen; LOG_DEBUG under client-level DP, where clipping is the normal case). */
void agg_stats_clipped(agg_stats_t *s, int level, const char *why);

/* A frame of `len` bytes received (valid or not). */
void agg_stats_received(agg_stats_t *s, size_t len);

/* An UPDATE of `len` bytes encoded as `encoding` (agg_verdict_t.encoding) was folded:
 * counted in stats.json "encodings" and /metrics fedmq_updates_by_encoding_total and
 * fedmq_update_bytes_total{encoding} (registered when an encoding is first seen). */
void agg_stats_encoded(agg_stats_t *s, const char *encoding, size_t len);

/* An UPDATE of staleness `tau` was folded into the buffer at monotonic `now` (stats.json is
 * due; counted in the updates/s window). */
void agg_stats_folded(agg_stats_t *s, uint64_t tau, double now);

/* The model is at `version` now (a new one, or the one resumed). */
void agg_stats_version(agg_stats_t *s, uint64_t version);

/* `n` distinct clients are served by live trainers. */
void agg_stats_live(agg_stats_t *s, uint32_t n);

/* A buffer took `secs` seconds to become a new version; a checkpoint `secs` to write (also
 * in the time budget: stats.json "time" checkpoint_s). */
void agg_stats_aggregation_time(agg_stats_t *s, double secs);
void agg_stats_checkpoint_time(agg_stats_t *s, double secs);

/* The sign vote overruled (reversed or dropped) the step on this fraction of the parameters
 * of the last version. */
void agg_stats_overruled(agg_stats_t *s, double ratio);

/* The time budget (stats.json "time", /metrics fedmq_aggregator_seconds_total and
 * fedmq_update_seconds_total): `secs` spent judging (and folding) one UPDATE frame; `secs`
 * spent making one version, from the full buffer to stats.json (publish and checkpoint
 * included); one folded update `u` arrived at Unix time `wallclock`: its "secs" and, when it
 * carries "ts", its "wait" and its transport (wallclock - "ts") are summed. The sender's
 * values are untrusted: one that is not finite or outside [0, 86400] s is left out. */
void agg_stats_fold_time(agg_stats_t *s, double secs);
void agg_stats_version_time(agg_stats_t *s, double secs);
void agg_stats_update_time(agg_stats_t *s, const fm_wire_update_t *u, double wallclock);

/* A checkpoint could not be written (counted on /metrics; agg_state counts it for
 * stats.json). */
void agg_stats_checkpoint_failed(agg_stats_t *s);

/* `count` updates became part of a new version. */
void agg_stats_applied(agg_stats_t *s, uint64_t count);

/* Accepted updates per second over the last AGG_STATS_RATE_SPAN_S seconds (less while the
 * daemon is younger), at `now`: what stats.json's "updates_per_s" and the log say. */
double agg_stats_rate(agg_stats_t *s, double now);

/* The server optimiser refused a buffer. */
void agg_stats_buffer_dropped(agg_stats_t *s);

/* Something stats.json shows changed: the next agg_stats_due says so. */
void agg_stats_touch(agg_stats_t *s);

/* Writes of stats.json that failed since the start (stats.json "stats_write_failures";
 * for /metrics). */
uint64_t agg_stats_write_failures(const agg_stats_t *s);

/* 1 when something changed (or the updates/s is or was nonzero: it changes with time) and
 * the last write is at least AGG_STATS_MIN_S old. */
int agg_stats_due(const agg_stats_t *s, double now);

/* Complete *st (the caller filled model, mode, round fields, finished, live_clients,
 * staleness, updates_pending, checkpoint fields) with the counters, updates/s at `now`,
 * "started", stats_write_failures and updated = `wallclock`, and write stats.json atomically
 * (fm_stats_write: it stays current on a full disk through its spare). 0, or -errno
 * (counted, logged at LOG_ERR within the rate limit, fm_ratelog; the counters stay dirty so
 * the next due time, AGG_STATS_MIN_S later, retries). */
int agg_stats_write(agg_stats_t *s, fm_stats_t *st, double now, double wallclock);

#endif
