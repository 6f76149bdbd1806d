/* trainer_pool: the fedmq-trainer daemon (one `self`, no globals).
 *
 * One process hosts a pool of virtual clients (trainer.clients; client k trains on
 * partition k of the training set) run by trainer.workers worker threads
 * (trainer_worker). The main thread owns the membership and model sockets:
 *   SUB    connect endpoints.model_pub, ZMQ_CONFLATE=1 (set before connect): newest MODEL;
 *   DEALER connect endpoints.snapshot: HELLO at start (the broker replies with the current
 *          MODEL), HEARTBEAT every trainer.heartbeat_interval_s, SNAPSHOT_REQ while it has
 *          no model (every 2 s, backing off to 10 s) or has seen none for 30 s, BYE at exit;
 *          a monitor (inproc PAIR) on the DEALER says HELLO again after every reconnect.
 * Every MODEL frame is decoded and checked (model name, fm_wire_tensors_check, finite)
 * into a scratch buffer, then published to the workers (trainer_latest); bad frames are
 * counted and logged (rate-limited), never fatal. Acceptance: a MODEL on the SUB wins
 * whatever its version (the broker's stream is ordered; a lower version means the
 * aggregator restarted from a checkpoint) unless it is the same version and creation time
 * as the one held; a snapshot reply is taken only if its version or its creation time is
 * newer than the held model's (it may race with the PUB; a restarted aggregator gives
 * its checkpointed version a new creation time).
 * Workers each PUSH their own UPDATEs (see trainer_worker.h). A summary is logged every
 * 10 s. The main thread runs an fm_loop (readers: SUB, DEALER, monitor; timers: heartbeat,
 * snapshot requests, summary). SIGHUP reloads the reloadable trainer keys (fm_daemon_reload:
 * heartbeat_interval_s, slowdown_sigma, dropout_prob, log_level). SIGINT/SIGTERM: workers
 * finish or abandon their client, BYE is sent.
 * [secagg] enabled: only invited clients train, each as a cohort member (trainer_secagg):
 * the cohort frames on the acks SUB go to trainer_secagg_on_frame (answers on the main
 * PUSH), a 1 s timer times members out, the summary gets a "secagg:" line. Disabled, a
 * cohort frame on acks is a bad frame, as before. */
#ifndef TRAINER_POOL_H
#define TRAINER_POOL_H

#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_metrics.h"
#include "trainer_attack.h"

typedef struct trainer_pool trainer_pool_t;

/* The one-line reason a pool refuses a custom model spec ([federation] model = file:...;
 * fm_cfg_model_builtin_only): FM_EARG from trainer_pool_new, so the daemon exits 2. */
#define TRAINER_POOL_SPEC_REFUSAL                                                                \
    "fedmq-trainer runs only logreg, mlp and cnn; train it with the Python client "              \
    "(trainer/python)"

/* Create the sockets, load the training set, partition it, create the workers (not
 * started). `args` is borrowed (for reloads) and must outlive the pool. The pool's series
 * are registered in `metrics` (borrowed, may be NULL; it must outlive the pool, and no
 * render may run once the pool is destroyed: a scrape hook reads the pool):
 * fedmq_updates_sent_total, fedmq_updates_dropped_total, fedmq_client_dropouts_total,
 * fedmq_trainings_abandoned_total, fedmq_train_errors_total, fedmq_local_steps_total,
 * fedmq_train_samples_total (trainer_ctx's counters, as the summary line reports them),
 * fedmq_workers_busy, fedmq_model_version, and (0 unless [secagg] enabled: trainer_secagg)
 * fedmq_secagg_cohorts_joined_total, fedmq_secagg_uploads_total,
 * fedmq_secagg_members_total{result="done"|"aborted"}, fedmq_secagg_invites_refused_total,
 * fedmq_secagg_refused_total{reason}. NULL with *err and
 * `e` (one line) on failure: FM_EARG for what the configuration names wrongly (a client
 * range beyond num_clients, a partition that cannot be made, a custom model spec:
 * TRAINER_POOL_SPEC_REFUSAL); the data loader's codes for
 * a data_dir that does not load (-ENOENT, FM_EMAGIC, FM_ETRUNC, ...); -errno of a connect;
 * -ENOMEM, FM_EMODEL. The daemon exits with fm_daemon_exit_code(*err). Caller owns it
 * (trainer_pool_destroy). */
trainer_pool_t *trainer_pool_new(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                 fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e);

/* trainer_pool_new for a pool of attackers (bench/fedmq_attacker; fedmq-trainer never calls
 * it): every client served attacks with `attack` (borrowed, must outlive the pool; checked
 * with trainer_attack_check: FM_EARG). A backdoor poisons the clients' samples of the pool's
 * own training set once at start (trainer_attack_poison_client); the other kinds change each
 * delta in the workers (trainer_worker_env_t.attack). `attack` NULL is trainer_pool_new. */
trainer_pool_t *trainer_pool_new_attacked(const fm_config_t *cfg, const fm_daemon_args_t *args,
                                          fm_metrics_t *metrics, fm_sec_t *sec,
                                          const trainer_attack_t *attack, int *err,
                                          fm_errmsg_t *e);

/* Start the workers and serve until SIGINT/SIGTERM (fm_daemon_stopping); then stop the
 * workers and send BYE. 0, or -errno if the workers could not start or polling failed. */
int trainer_pool_run(trainer_pool_t *self);

/* Stop and join the workers if running, close the sockets, free everything, NULL *p.
 * Idempotent. */
void trainer_pool_destroy(trainer_pool_t **p);

#endif
