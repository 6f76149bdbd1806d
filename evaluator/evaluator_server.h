/* evaluator_server: the fedmq evaluator daemon's logic (main.c only parses the command line).
 *
 * At start it loads the held-out split (federation.data_dir + evaluator.test_split, with the
 * Fashion-MNIST normalisation), creates the configured model (federation.model), an engine
 * of EVAL_SERVER_THREADS threads, opens evaluator.metrics_file for appending, binds PUB on
 * endpoints.metrics_pub, connects SUB (ZMQ_CONFLATE=1, subscribed to everything) to
 * endpoints.model_pub and DEALER to endpoints.snapshot.
 *
 * Loop (eval_server_run): while it holds no model it sends SNAPSHOT_REQ on the DEALER every
 * EVAL_SERVER_SNAPSHOT_RETRY_S seconds and takes the MODEL reply if it comes before any
 * MODEL on the SUB (afterwards replies are dropped: the SUB is the feed). Every frame is
 * decoded and checked (protocol, "model" name, tensors against the model layout, every value
 * finite); a bad frame is counted by error code and logged (WARNING), never fatal. A valid
 * MODEL whose (version, creation time) differs from the last one evaluated is staged; after
 * draining both sockets the newest staged model is scored on the whole test set, published
 * as METRICS on the PUB and appended as one JSON line to the metrics file (one INFO log line
 * per evaluation). Versions skipped because a newer one arrived first are never scored.
 *
 * Population validation (evaluator_pop.h): with evaluator.population and
 * federation.holdout > 0 it also builds the trainers' held-out split at start (the "train"
 * split, federation.partition over num_clients, federation.holdout, all with
 * federation.seed), scores every client's held-out slice on each version it scores, and adds
 * the summary (clients, mean, worst client, p10, fraction below
 * evaluator.population_threshold, which SIGHUP reloads) to METRICS ("pc", "pmean", ...) and
 * to the JSON record ("population"); the extra seconds are logged per evaluation. With
 * population on and holdout 0 it logs one warning and runs without.
 *
 * One eval_server_t per process; no globals (stop requests come from fm_daemon). */
#ifndef EVALUATOR_SERVER_H
#define EVALUATOR_SERVER_H

#include <stdint.h>

#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_metrics.h"

#define EVAL_SERVER_THREADS 2 /* engine threads for an evaluation (2 cores) */
#define EVAL_SERVER_BATCH 256 /* samples per engine pass (split over threads) */
#define EVAL_SERVER_INTERVAL_TICK_S                                                              \
    0.05 /* a model waiting for min_interval_s: checked this often */
/* The one-line reason the evaluator refuses a custom model spec ([federation] model = file:...;
 * fm_cfg_model_builtin_only): FM_EARG from eval_server_new, so the daemon exits 2. */
#define EVAL_SERVER_SPEC_REFUSAL                                                                 \
    "fedmq-evaluator scores only logreg, mlp and cnn; evaluate it with the Python client "       \
    "(trainer/python)"
#define EVAL_SERVER_MAX_FRAME                                                                    \
    (16 << 20)                           /* ZMQ_MAXMSGSIZE of SUB and DEALER, bytes: above       \
                                            every model's MODEL frame (cnn: 4.8 MB) */
#define EVAL_SERVER_SNAPSHOT_RETRY_S 2.0 /* SNAPSHOT_REQ re-send interval, no model yet */
#define EVAL_SERVER_DRAIN_MAX 64         /* frames read per socket per drain */
#define EVAL_SERVER_PUB_LINGER_MS 1000   /* a stopping evaluator flushes its last METRICS */
#define EVAL_SERVER_PUB_HWM 100          /* METRICS queued per slow subscriber */
#define EVAL_SERVER_DEALER_RCVHWM 4      /* MODEL replies queued from the broker */

typedef struct eval_server eval_server_t;

/* Counters of a running server (for tests and the exit log line). */
typedef struct {
    uint64_t evaluations;   /* METRICS published */
    uint64_t rejected;      /* frames rejected (bad framing, type, model, shape, NaN) */
    uint64_t duplicates;    /* valid MODELs ignored: same version and creation time */
    uint64_t superseded;    /* valid MODELs replaced by a newer one before evaluation */
    uint64_t snapshot_reqs; /* SNAPSHOT_REQ sent */
    int have_evaluated;     /* 1 once a model was scored */
    uint64_t last_version;  /* version of the last model scored */
} eval_server_stats_t;

/* Create the sockets (PUB bound first), load the test set, build the model and engine, open
 * the metrics file.
 * `args` is the command line the config came from (borrowed, must outlive the server; may
 * be NULL): SIGHUP re-reads the config with it (see eval_server_run). The evaluator's
 * series are registered in `metrics` (borrowed, must outlive the server; may be NULL):
 * fedmq_evaluations_total, fedmq_frames_rejected_total, fedmq_models_superseded_total
 * (the counters of eval_server_stats_t), fedmq_model_version, fedmq_eval_accuracy,
 * fedmq_eval_loss (the last METRICS published), fedmq_eval_seconds and, with population
 * validation on, fedmq_population_accuracy{stat="min"|"p10"|"mean"} (worst client,
 * nearest-rank 10th percentile, mean), fedmq_population_below_threshold_ratio and
 * fedmq_population_clients.
 * Returns NULL on failure with *err (the code) and a one-line message in `e`: the data
 * files' errors (-ENOENT, FM_EMAGIC, FM_ETRUNC, FM_ESHAPE, FM_EFORMAT; the test split, and
 * the train split when population validation is on), a bad federation.partition or a custom
 * model spec (FM_EARG: EVAL_SERVER_SPEC_REFUSAL),
 * the metrics file's (-errno), an endpoint that cannot be bound or connected (-errno, with
 * `e` naming the key and endpoint), FM_EMODEL, -ENOMEM. The daemon exits with
 * fm_daemon_exit_code(*err): 2 for FM_EARG, else 1.
 * Caller owns the result: eval_server_destroy(). */
eval_server_t *eval_server_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                               fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e);

/* Serve until fm_daemon_stopping() (an fm_loop: both sockets drained on every wake-up,
 * SNAPSHOT_REQ timer). On SIGHUP the config is re-read (fm_daemon_reload: file and --set
 * overrides of `args`); if it is valid and only reloadable keys changed, the metrics file is
 * reopened (at its new path, or at the same path: after a rotation it is created again) and
 * evaluator.log_level applied unless --log-level was given; otherwise one line is logged
 * and the running config kept. Returns 0, or -errno if polling failed (logged). */
int eval_server_run(eval_server_t *self);

/* Copy the counters into *out. */
void eval_server_stats(const eval_server_t *self, eval_server_stats_t *out);

/* Close the sockets (PUB with EVAL_SERVER_PUB_LINGER_MS linger, the others 0) and the
 * metrics file, free everything and NULL *p; idempotent. */
void eval_server_destroy(eval_server_t **p);

#endif
