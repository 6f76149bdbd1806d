/* agg_server: the fedmq aggregator daemon (docs/ARCHITECTURE.md, "The federation").
 *
 * Binds PULL endpoints.updates (UPDATEs from trainers) and PUB endpoints.aggregator_models
 * (MODEL: on every new version and again every second). This file only wires the modules
 * together and owns the sockets, the poll loop, the timers and the reload:
 *   agg_ingest  (aggregator_ingest.h)  frame -> verdict; a valid UPDATE folded (fm_fedbuff)
 *   agg_policy  (aggregator_policy.h)  async (aggregator_async.h) or sync rounds
 *                                      (aggregator_sync.h): what to accept, when to aggregate
 *   agg_state   (aggregator_state.h)   LMDB checkpoints, resume, the applied-id window
 *   agg_stats   (aggregator_stats.h)   counters, rejection warnings, stats.json
 *   agg_secagg  (aggregator_secagg.h)  [secagg] enabled: cohorts of secure aggregation (their
 *                                      messages go out on the acks PUB); each cohort's sum
 *                                      is one buffer; the policy then only says the mode
 * A full buffer (async) or a closing round (sync) goes through the server optimiser
 * (fm_server_opt) and makes a new version. Checkpoints are written every checkpoint_every
 * versions and at a clean stop; stats.json on every version, for new rejections (at most
 * once a second) and at exit.
 *
 * Frames over ZMQ_MAXMSGSIZE (4 x the model's MODEL size) never reach the aggregator:
 * libzmq drops them and disconnects the sender; they are not counted.
 *
 * Limits: at a clean stop (SIGTERM) in async mode, the open buffer (fewer than K updates)
 * is folded into a last version before the final checkpoint; in sync mode an open round is
 * abandoned (it re-opens with a new cohort after a restart). After a crash (kill -9), the
 * updates folded since the last checkpoint are lost (their ids are not persisted either, so
 * a resend would be accepted); the ids of a buffer the server optimiser refuses
 * (non-finite step) stay remembered.
 *
 * Membership: trainers send HELLO/HEARTBEAT/BYE on the updates socket too (as to the
 * broker); the aggregator keeps its own table of live trainers (fm_members, expired after
 * [broker] heartbeat_timeout_s) and the clients they serve. Both modes: once num_rounds
 * (> 0) versions exist, stats.json says "finished": true and every UPDATE is "late".
 *
 * Single-threaded; one agg_server_t per process (it uses the fm_daemon signal flags). */
#ifndef AGG_SERVER_H
#define AGG_SERVER_H

#include "aggregator_stats.h" /* agg_reason_t, agg_reason_name */
#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_metrics.h"

typedef struct agg_server agg_server_t;

/* Set up everything from `cfg` (copied): model (resumed from the newest valid checkpoint,
 * else aggregator.init, else fm_model_init(federation.seed)), buffer, optimiser, sockets
 * bound. `args` (borrowed, must outlive the server) is used to re-read the config on
 * SIGHUP; may be NULL (no reload). The aggregator's series are registered in `metrics`
 * (borrowed, must outlive the server; may be NULL: agg_stats_metrics). NULL on failure
 * with *err set (FM_EARG for a bad config combination or an init file/checkpoint that does
 * not fit, -errno, FM_E* from fm_ckpt / fm_safetensors, -ENOMEM) and one line in `e`.
 * Caller owns it: agg_server_destroy. */
agg_server_t *agg_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                             fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e);

/* Serve until fm_daemon_stopping(): receive, validate, fold, aggregate, publish, checkpoint.
 * On stop: a final checkpoint and stats.json. Returns 0, or the error of the final
 * checkpoint (logged). Errors while running (a failed periodic checkpoint, a refused server
 * step) are logged and do not stop the loop. */
int agg_server_run(agg_server_t *self);

/* Close sockets (PUB linger 1000 ms so the last MODEL goes out), the checkpoint
 * environment and free everything; *p = NULL; idempotent. */
void agg_server_destroy(agg_server_t **p);

#endif
