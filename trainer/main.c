/* fedmq-trainer: a pool of simulated federated-learning clients (trainer_pool.h). */
#include <stdio.h>

#include "fm_daemon.h"
#include "trainer_pool.h"

#define PROG "fedmq-trainer"

static void s_usage(FILE *f)
{
    fprintf(
        f, "usage: " PROG " --config FILE [--set section.key=value ...] [--log-level L]\n"
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
    fprintf(f, "/metrics (Prometheus text format) is served on [trainer] metrics_addr.\n");
}

/* Typed wrappers for fm_daemon_main. */
static void *s_new(const fm_config_t *cfg, const fm_daemon_args_t *args, fm_metrics_t *metrics,
                   fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    return trainer_pool_new(cfg, args, metrics, sec, err, e);
}

static int s_run(void *server) { return trainer_pool_run(server); }

static void s_destroy(void *server)
{
    trainer_pool_t *self = server;
    trainer_pool_destroy(&self);
}

int main(int argc, char **argv)
{
    static const fm_daemon_t daemon = {.prog = PROG,
                                       .usage = s_usage,
                                       .log_level_key = "trainer.log_level",
                                       .metrics_key = "trainer.metrics_addr",
                                       .blas = true,
                                       .sec_role = FM_SEC_ROLE_TRAINER,
                                       .server_new = s_new,
                                       .server_run = s_run,
                                       .server_destroy = s_destroy};
    return fm_daemon_main(&daemon, argc, argv);
}
