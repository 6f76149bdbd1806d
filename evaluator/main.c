/* fedmq-evaluator: scores every model version it receives on the test set and publishes
 * the results (METRICS on endpoints.metrics_pub, JSON lines in evaluator.metrics_file).
 * The logic is in evaluator_server.[ch]; this file is the command line.
 * Signals: SIGINT/SIGTERM stop it cleanly; SIGHUP re-reads the config and reopens the
 * metrics file (log rotation).
 *
 * Exit codes: 0 after SIGINT/SIGTERM, 1 runtime failure (port in use, missing data,
 * unwritable metrics file, BLAS self-check, out of memory), 2 bad flags or config; each a
 * one-line error. */
#include <stdio.h>

#include "evaluator_server.h"
#include "fm_daemon.h"

#define PROG "fedmq-evaluator"

static void s_usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --config FILE [--set section.key=value ...] [--log-level L]\n"
               "Scores every model version published on endpoints.model_pub on the test set.\n"
               "  --config FILE        fedmq config file (default: built-in defaults)\n"
               "  --set S.K=V          override one config key (repeatable)\n"
               "  --log-level L        error | warning | notice | info | debug\n"
               "                       (default: evaluator.log_level)\n"
               "  --help               this text\n"
               "Config keys used: federation.model, federation.data_dir, evaluator.test_split,\n"
               "evaluator.metrics_file, evaluator.log_level, endpoints.model_pub (SUB),\n"
               "endpoints.snapshot (DEALER), endpoints.metrics_pub (PUB, bound),\n"
               "evaluator.metrics_addr (HTTP GET /metrics, Prometheus text format; off = none).\n"
               "Signals: SIGINT/SIGTERM stop (exit 0); SIGHUP re-reads the config and reopens\n"
               "evaluator.metrics_file (log rotation).\n");
}

/* Typed wrappers for fm_daemon_main. */
static void *s_new(const fm_config_t *cfg, const fm_daemon_args_t *args, fm_metrics_t *metrics,
                   fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    return eval_server_new(cfg, args, metrics, sec, err, e);
}

static int s_run(void *server) { return eval_server_run(server); }

static void s_destroy(void *server)
{
    eval_server_t *self = server;
    eval_server_destroy(&self);
}

int main(int argc, char **argv)
{
    static const fm_daemon_t daemon = {.prog = PROG,
                                       .usage = s_usage,
                                       .log_level_key = "evaluator.log_level",
                                       .metrics_key = "evaluator.metrics_addr",
                                       .nice_key = "evaluator.nice",
                                       .blas = true,
                                       .sec_role = FM_SEC_ROLE_EVALUATOR,
                                       .server_new = s_new,
                                       .server_run = s_run,
                                       .server_destroy = s_destroy};
    return fm_daemon_main(&daemon, argc, argv);
}
