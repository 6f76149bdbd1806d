/* fedmq-broker: last-value cache of the global model and trainer membership
 * (broker_server.h). Thin: command line -> config -> broker_server_new -> run -> destroy. */
#include <stdio.h>

#include "broker_server.h"
#include "fm_daemon.h"
#include "fm_log.h"

static const char *const s_prog = "fedmq-broker";

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: %s --config FILE [--set section.key=value ...] [--log-level L] [--help]\n"
            "\n"
            "Relays the aggregator's models to trainers and the evaluator (PUB), answers\n"
            "snapshot requests with the newest model (ROUTER) and tracks live trainers.\n"
            "\n"
            "  --config FILE         the fedmq config (configs/fedmq.conf documents every key)\n"
            "  --set section.key=V   override one key (repeatable), e.g. --set broker.log_level=debug\n"
            "  --log-level L         error, warning, notice, info or debug (default: broker.log_level)\n"
            "  --help                this text\n"
            "\n"
            "Keys used: [federation] model; [endpoints] aggregator_models (SUB, connect),\n"
            "model_pub (PUB, bind), snapshot (ROUTER, bind); [broker] heartbeat_timeout_s,\n"
            "log_level. SIGINT/SIGTERM stop cleanly (exit 0); SIGHUP reloads reloadable keys.\n"
            "Exit status: 0 clean stop, 1 runtime failure, 2 bad command line or config.\n",
            s_prog);
}

int main(int argc, char **argv)
{
    fm_daemon_args_t args;
    int rc = fm_daemon_parse_args(s_prog, argc, argv, &args, s_usage);
    if (rc != 0)
        return rc == 1 ? FM_EXIT_OK : FM_EXIT_INPUT;
    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, "%s: %s\n", s_prog, e.msg);
        return FM_EXIT_INPUT;
    }
    fm_log_init(s_prog, args.log_level >= 0 ? args.log_level : cfg.broker.log_level);
    fm_daemon_signals();

    int err = 0;
    broker_server_t *server = broker_server_new(&cfg, &args, &err, &e);
    if (!server) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        return fm_daemon_exit_code(err);
    }
    rc = broker_server_run(server);
    broker_server_destroy(&server);
    return rc == 0 ? FM_EXIT_OK : FM_EXIT_RUNTIME;
}
