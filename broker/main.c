/* fedmq-broker: last-value cache of the global model and trainer membership
 * (broker_server.h). Thin: command line -> config -> broker_server_new -> run -> destroy. */
#include <stdio.h>

#include "broker_server.h"
#include "fm_daemon.h"

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
            "  --set section.key=V   override one key (repeatable), e.g. --set "
            "broker.log_level=debug\n"
            "  --log-level L         error, warning, notice, info or debug (default: "
            "broker.log_level)\n"
            "  --help                this text\n"
            "\n"
            "Keys used: [federation] model; [endpoints] aggregator_models (SUB, connect),\n"
            "model_pub (PUB, bind), snapshot (ROUTER, bind); [broker] heartbeat_timeout_s,\n"
            "log_level, metrics_addr (HTTP GET /metrics, Prometheus text format; off = none).\n"
            "SIGINT/SIGTERM stop cleanly (exit 0); SIGHUP reloads reloadable keys.\n"
            "Exit status: 0 clean stop, 1 runtime failure, 2 bad command line or config.\n",
            s_prog);
}

/* Typed wrappers for fm_daemon_main. */
static void *s_new(const fm_config_t *cfg, const fm_daemon_args_t *args, fm_metrics_t *metrics,
                   fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    return broker_server_new(cfg, args, metrics, sec, err, e);
}

static int s_run(void *server) { return broker_server_run(server); }

static void s_destroy(void *server)
{
    broker_server_t *self = server;
    broker_server_destroy(&self);
}

int main(int argc, char **argv)
{
    static const fm_daemon_t daemon = {.prog = s_prog,
                                       .usage = s_usage,
                                       .log_level_key = "broker.log_level",
                                       .metrics_key = "broker.metrics_addr",
                                       .blas = false,
                                       .sec_role = FM_SEC_ROLE_BROKER,
                                       .server_new = s_new,
                                       .server_run = s_run,
                                       .server_destroy = s_destroy};
    return fm_daemon_main(&daemon, argc, argv);
}
