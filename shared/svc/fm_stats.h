/* fm_stats: the aggregator's state file, <checkpoint_dir>/stats.json: the one owner of its
 * format. The aggregator writes it (fm_stats_write) on every new version, on new rejections
 * (rate-limited) and at exit; `fedmq run`, `fedmq checkpoints`, the tests and the benchmarks
 * read it (fm_stats_read). Keys and meanings: docs/OPERATIONS.md ("State"). */
#ifndef FM_STATS_H
#define FM_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_STATS_REASONS_MAX 24 /* rejection reasons the file can hold */
#define FM_STATS_NAME_MAX 32    /* longest reason, mode or model name + 1 */

typedef struct {
    char name[FM_STATS_NAME_MAX];
    uint64_t count;
} fm_stats_reason_t;

#define FM_STATS_ENCODINGS_MAX 16 /* update encodings the file can hold */

/* Updates of one encoding (fm_codec_label: "fp32", "int8", "topk-fp32+zstd", ...) folded
 * into the buffer, and the bytes of their frames. */
typedef struct {
    char name[FM_STATS_NAME_MAX];
    uint64_t updates;
    uint64_t bytes;
} fm_stats_encoding_t;

typedef struct {
    char model[FM_STATS_NAME_MAX];                    /* "mlp", "cnn", ... */
    char mode[FM_STATS_NAME_MAX];                     /* "async" or "sync" */
    uint64_t version;                                 /* current global model version */
    uint64_t updates_applied;                         /* updates folded into some version */
    uint64_t updates_rejected;                        /* sum of rejected[] */
    fm_stats_reason_t rejected[FM_STATS_REASONS_MAX]; /* count per reason, in file order */
    int nreasons;
    uint64_t updates_clipped; /* folded scaled down to the norm bound ([aggregator] norm_*) */
    uint64_t round;           /* sync: current round number (0 in async) */
    bool round_open;
    uint32_t cohort_size, round_reported;
    uint64_t rounds_completed, rounds_failed;
    /* sync with [federation] sampling = poisson: DECLINEs of the open round (included in
     * round_reported), DECLINEs taken since the start, and those ignored (no open round, not
     * in the cohort, already reported) */
    uint32_t round_declined;
    uint64_t declines, declines_ignored;
    bool finished; /* num_rounds reached */
    uint32_t live_clients;
    double staleness_mean;
    uint64_t staleness_max;
    uint64_t bytes_received;
    fm_stats_encoding_t encodings[FM_STATS_ENCODINGS_MAX]; /* "encodings", in file order */
    int nencodings;
    uint32_t updates_pending; /* in the FedBuff buffer now */
    uint64_t buffers_dropped;
    double updates_per_s;    /* updates accepted per second over the last rate_window_s */
    double rate_window_s;    /* the window of updates_per_s (seconds) */
    double started, updated; /* Unix time of the daemon's start and of this write */

    /* disk and I/O: the newest checkpoint saved or resumed from (0: none), the checkpoints
     * that failed since the start, the earlier writes of this file that failed */
    uint64_t checkpoint_version, checkpoint_failures, stats_write_failures;

    /* acknowledged delivery ([aggregator] acks): update ids acknowledged as applied (once
     * durable) and ids answered with a refusal ("lost", "dropped", a rejection reason) */
    uint64_t acked, ack_refused;

    /* client-level differential privacy ([privacy] mode = client): on; epsilon spent so far
     * at privacy_delta; the budget (0: none); steps accounted; no more versions because the
     * next would exceed the budget; the current clip norm C (adaptive clipping moves it) */
    bool privacy;
    double privacy_epsilon, privacy_delta, privacy_target_epsilon;
    uint64_t privacy_steps;
    bool privacy_exhausted;
    double privacy_clip_norm;
    /* secure aggregation ([secagg] enabled): on; cohorts formed, completed (their sum
     * applied), aborted (nothing released), in flight now; members dropped per phase (no
     * keys, no shares, no upload, no unmasking shares); member messages refused */
    bool secagg;
    uint64_t secagg_formed, secagg_completed, secagg_aborted;
    uint32_t secagg_in_flight;
    uint64_t secagg_dropped_keys, secagg_dropped_shares, secagg_dropped_train,
        secagg_dropped_unmask, secagg_refused;

    /* the time budget of this aggregator process (since "started"; "time" in the file): the
     * versions it made and the updates it folded; its own seconds judging and folding UPDATE
     * frames (rejected ones too), making versions (mean, server step, publish, checkpoint,
     * this file) and, of those, writing checkpoints; and, over the folded updates, the sums
     * of their local training ("secs"), of their workers' wait before it ("wait") and of
     * their transport (arrival minus "ts": encoding, queues, the network), the last two over
     * the `timed` updates that carried "ts" and "wait" */
    struct {
        uint64_t versions, updates, timed;
        double fold_s, version_s, checkpoint_s, train_s, wait_s, transport_s;
    } time;
} fm_stats_t;

/* Add `updates` and `bytes` to the entry of encoding `name` (created at the end if new).
 * 0, or FM_ERANGE (FM_STATS_ENCODINGS_MAX entries already, or name too long: unchanged). */
int fm_stats_add_encoding(fm_stats_t *st, const char *name, uint64_t updates, uint64_t bytes);

/* "<dir>/stats.json" into out[n]. 0, or -ENAMETOOLONG. */
int fm_stats_path(char *out, size_t n, const char *checkpoint_dir);

/* Write *st to `path` atomically (fm_file_replace with a spare: a temp file in the same
 * folder, then rename; "<path>.spare" is kept so the file stays current on a full disk):
 * readers see the old or the new file, never a part; on failure the old file is left as it
 * was and no temp file remains. 0, -errno, or FM_ENONFINITE when a real-valued field is NaN
 * or infinite; e (may be NULL) names the path (and the field). */
int fm_stats_write(const char *path, const fm_stats_t *st, fm_errmsg_t *e);

/* Read `path` into *st (zeroed first; keys absent from the file stay 0 / empty, so newer
 * readers accept older files). 0; -ENOENT (or another -errno) when it cannot be read;
 * FM_EFORMAT when it is not a JSON object or a known key has the wrong type or range.
 * e (may be NULL) names the path and, for FM_EFORMAT, the key. */
int fm_stats_read(const char *path, fm_stats_t *st, fm_errmsg_t *e);

/* The count for one rejection reason (0 if the file has no such reason). */
uint64_t fm_stats_rejected(const fm_stats_t *st, const char *reason);

/* Set the count of the reason `name` (appended if new). 0, or FM_ERANGE when the table is full
 * or the name too long. For writers building an fm_stats_t. */
int fm_stats_set_rejected(fm_stats_t *st, const char *name, uint64_t count);

#endif
