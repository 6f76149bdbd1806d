/* fedmq-trainer: a pool of simulated federated-learning clients (trainer_pool.h). */
#include <stdio.h>
#include <stdlib.h>

#include "fm_blas.h"
#include "fm_daemon.h"
#include "fm_log.h"
#include "trainer_pool.h"

#define PROG "fedmq-trainer"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --config FILE [--set section.key=value ...] [--log-level L]\n"
            "\n"
            "Trains the simulated clients [trainer] clients on their partitions of the\n"
            "training set, starting from the newest model of the broker, and pushes each\n"
            "client's update (delta) to the aggregator.\n"
            "\n"
            "  --config FILE          configuration file (configs/fedmq.conf documents it)\n"
            "  --set section.key=V    override one key (repeatable)\n"
            "  --log-level L          error, warning, notice, info or debug\n"
            "  --help                 this text\n"
            "\n"
            "Keys read: [federation] (model, num_clients, partition, seed, data_dir,\n"
            "local_epochs, batch_size, learning_rate, momentum, weight_decay, clip_norm, mu),\n"
            "[endpoints] model_pub, snapshot, updates, [trainer] (clients, workers,\n"
            "threads_per_worker, heartbeat_interval_s, slowdown_sigma, dropout_prob, log_level).\n"
            "Exit status: 0 after SIGINT/SIGTERM, 1 runtime failure, 2 bad command line or\n"
            "configuration.\n");
}

int main(int argc, char **argv)
{
    fm_blas_setup(argv);
    fm_daemon_args_t args;
    int rc = fm_daemon_parse_args(PROG, argc, argv, &args, s_usage);
    if (rc != 0)
        return rc == 1 ? FM_EXIT_OK : FM_EXIT_INPUT;
    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, PROG ": %s\n", e.msg);
        return FM_EXIT_INPUT;
    }
    fm_log_init(PROG, args.log_level >= 0 ? args.log_level : cfg.trainer.log_level);
    fm_daemon_signals();

    int err = 0;
    trainer_pool_t *pool = trainer_pool_new(&cfg, &args, &err, &e);
    if (!pool) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        return fm_daemon_exit_code(err);
    }
    char desc[256];
    FM_LOG(LOG_INFO, "%s", fm_blas_describe(desc, sizeof desc));
    if (fm_blas_selfcheck(&e) != 0) {
        FM_LOG(LOG_ERR, "BLAS self-check failed, refusing to run: %s", e.msg);
        trainer_pool_destroy(&pool);
        return FM_EXIT_RUNTIME;
    }
    rc = trainer_pool_run(pool);
    trainer_pool_destroy(&pool);
    return rc == 0 ? FM_EXIT_OK : FM_EXIT_RUNTIME;
}
