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
#include <stdlib.h>

#include "evaluator_server.h"
#include "fm_blas.h"
#include "fm_daemon.h"
#include "fm_log.h"

#define PROG "fedmq-evaluator"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --config FILE [--set section.key=value ...] [--log-level L]\n"
            "Scores every model version published on endpoints.model_pub on the test set.\n"
            "  --config FILE        fedmq config file (default: built-in defaults)\n"
            "  --set S.K=V          override one config key (repeatable)\n"
            "  --log-level L        error | warning | notice | info | debug\n"
            "                       (default: evaluator.log_level)\n"
            "  --help               this text\n"
            "Config keys used: federation.model, federation.data_dir, evaluator.test_split,\n"
            "evaluator.metrics_file, evaluator.log_level, endpoints.model_pub (SUB),\n"
            "endpoints.snapshot (DEALER), endpoints.metrics_pub (PUB, bound).\n"
            "Signals: SIGINT/SIGTERM stop (exit 0); SIGHUP re-reads the config and reopens\n"
            "evaluator.metrics_file (log rotation).\n");
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
    fm_log_init(PROG, args.log_level >= 0 ? args.log_level : cfg.evaluator.log_level);
    fm_daemon_signals();

    int err = 0;
    eval_server_t *server = eval_server_new(&cfg, &args, &err, &e);
    if (!server) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        return fm_daemon_exit_code(err);
    }
    char desc[256];
    FM_LOG(LOG_INFO, "%s", fm_blas_describe(desc, sizeof desc));
    if (fm_blas_selfcheck(&e) != 0) {
        FM_LOG(LOG_ERR, "BLAS self-check failed, refusing to run: %s", e.msg);
        eval_server_destroy(&server);
        return FM_EXIT_RUNTIME;
    }
    rc = eval_server_run(server);
    eval_server_destroy(&server);
    return rc == 0 ? FM_EXIT_OK : FM_EXIT_RUNTIME;
}
