/* agg_server: the fedmq aggregator daemon (docs/ARCHITECTURE.md, "The federation").
 *
 * Binds PULL endpoints.updates (UPDATEs from trainers) and PUB endpoints.aggregator_models
 * (MODEL: on every new version and again every second). Every UPDATE is validated and, if
 * valid, folded into a FedBuff buffer of [aggregator] buffer_k updates (fm_fedbuff); a full
 * buffer goes through the server optimiser (fm_server_opt) and makes a new version.
 * State lives in an LMDB checkpoint environment in [aggregator] checkpoint_dir (fm_ckpt):
 * written every checkpoint_every versions and at a clean stop, resumed at start (never at
 * a version below the newest one saved). <checkpoint_dir>/stats.json is rewritten
 * atomically on every version and at exit.
 *
 * Rejected frames are counted by reason (agg_reason_t, names from agg_reason_name) and
 * logged at LOG_WARNING (at most AGG_LOG_BURST lines per second; counting never stops).
 * Frames over ZMQ_MAXMSGSIZE (4 x the model's UPDATE size) never reach the aggregator:
 * libzmq drops them and disconnects the sender; they are not counted.
 *
 * Duplicates: the ids of the last AGG_IDSET_DEFAULT_CAP folded updates are remembered
 * (aggregator_idset.h); an older id is forgotten. The ids applied to the model are stored
 * in each checkpoint's transaction (meta key "agg.ids") and reloaded at start, so an
 * update is folded at most once across crashes within that window.
 *
 * Limits: updates folded into a buffer that is not full yet when the daemon stops (or
 * crashes) are lost (they are in no checkpoint; their ids are not persisted either, so a
 * resend would be accepted); the ids of a buffer the server optimiser refuses (non-finite
 * step) stay remembered.
 *
 * Membership: trainers send HELLO/HEARTBEAT/BYE on the updates socket too (as to the
 * broker); the aggregator keeps its own table of live trainers (fm_members, expired after
 * [broker] heartbeat_timeout_s) and the clients they serve.
 *
 * mode = sync (aggregation_strategy fedavg | fedprox): rounds instead of a buffer. A round
 * opens when at least min_clients clients are live: clients_per_round of them are chosen at
 * random (agg_round, seeded by federation.seed and the round number) and the MODEL is
 * published with "round", "cohort" and "mu" (FedProx, 0 for fedavg). Only UPDATEs for the
 * open round, from the version it published, from cohort members, once each, are folded
 * (others: "late" / "cohort"), weighted by samples. The round aggregates when every member
 * reported, or at round_timeout_s with at least min_clients updates; below that it is dropped
 * (counted in rounds_failed) and a new round with a new cohort opens on the same version.
 * After num_rounds versions (if > 0) no round opens: the MODEL carries an empty cohort.
 * The last round number is checkpointed (meta key "agg.round").
 * mode = async: a full FedBuff buffer of K makes a version; with min_clients > 1 updates are
 * refused ("quorum") while fewer clients are live. Both modes: once num_rounds (> 0)
 * versions exist, stats.json says "finished": true and every UPDATE is "late".
 *
 * Single-threaded; one agg_server_t per process (it uses the fm_daemon signal flags). */
#ifndef AGG_SERVER_H
#define AGG_SERVER_H

#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_err.h"

#define AGG_LOG_BURST 10 /* warning lines per second about rejected frames */

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
    AGG_REJ_LATE,            /* sync: for a closed round (or no round, or an older base) */
    AGG_REJ_COHORT,          /* sync: client not selected, or already reported this round */
    AGG_REJ_QUORUM,          /* async: fewer than min_clients (> 1) clients live */
    AGG_REJ_COUNT
} agg_reason_t;

/* "malformed", "truncated", ... (static string); "?" out of range. */
const char *agg_reason_name(agg_reason_t r);

typedef struct agg_server agg_server_t;

/* Set up everything from `cfg` (copied): model (resumed from the newest valid checkpoint,
 * else aggregator.init, else fm_model_init(federation.seed)), buffer, optimiser, sockets
 * bound. `args` (borrowed, must outlive the server) is used to re-read the config on
 * SIGHUP; may be NULL (no reload). NULL on failure with *err set (FM_EARG for a bad
 * config combination or an init file/checkpoint that does not fit, -errno, FM_E* from
 * fm_ckpt / fm_safetensors) and one line in `e`. Caller owns it: agg_server_destroy. */
agg_server_t *agg_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args, int *err,
                             fm_errmsg_t *e);

/* Serve until fm_daemon_stopping(): receive, validate, fold, aggregate, publish, checkpoint.
 * On stop: a final checkpoint and stats.json. Returns 0, or the error of the final
 * checkpoint (logged). Errors while running (a failed periodic checkpoint, a refused server
 * step) are logged and do not stop the loop. */
int agg_server_run(agg_server_t *self);

/* Close sockets (PUB linger 1000 ms so the last MODEL goes out), the checkpoint
 * environment and free everything; *p = NULL; idempotent. */
void agg_server_destroy(agg_server_t **p);

#endif
