/* fedmq-aggregator: argv -> config -> agg_server_new -> agg_server_run -> destroy.
 * Exit codes: 0 clean stop (SIGINT/SIGTERM) or --help; 2 bad command line or config;
 * 1 runtime failure (bind, checkpoint, init file). */
#include <malloc.h>
#include <stdio.h>

#include "aggregator_server.h"
#include "fm_daemon.h"

#define S_PROG "fedmq-aggregator"

static void s_usage(FILE *f)
{
    fprintf(f, "usage: " S_PROG " [--config FILE] [--set section.key=value ...] [--log-level L]\n"
               "\n"
               "The fedmq aggregator: binds PULL [endpoints] updates and PUB [endpoints]\n"
               "aggregator_models, screens valid UPDATEs ([aggregator] norm_bound) and folds\n"
               "them into a buffer of [aggregator] buffer_k updates aggregated by\n"
               "[aggregator] aggregation (the FedBuff mean by default), applies the server\n"
               "optimizer and publishes each new MODEL\n"
               "(and the current one every second). Checkpoints and stats.json go to\n"
               "[aggregator] checkpoint_dir; it resumes from the newest checkpoint there.\n"
               "/metrics (Prometheus text format) is served on [aggregator] metrics_addr.\n"
               "\n"
               "  --config FILE        INI config (see configs/fedmq.conf); defaults if absent\n"
               "  --set s.k=v          override one key (repeatable), e.g.\n"
               "                       --set aggregator.buffer_k=4\n"
               "  --log-level L        error|warning|notice|info|debug\n"
               "                       (default: [aggregator] log_level)\n"
               "  --help               this text\n"
               "\n"
               "Signals: SIGINT/SIGTERM checkpoint and exit 0; SIGHUP reloads max_staleness,\n"
               "checkpoint_every, checkpoint_keep, round_timeout_s, norm_bound,\n"
               "norm_bound_mode, norm_action and log_level.\n");
}

/* ZeroMQ allocates every received frame (4.8 MB for a cnn UPDATE) with malloc and frees it
 * after the fold. Above glibc's mmap threshold each one is a fresh mmap whose every page
 * faults in on first write (a tenth of the aggregator's CPU time under load, measured with
 * perf): keep such frames in the heap and the freed memory mapped for reuse. What the
 * process holds is then its peak working set (a bounded number of frames: the PULL queue's
 * byte budget), not a growth. */
static void s_malloc_tune(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

/* Typed wrappers for fm_daemon_main. */
static void *s_new(const fm_config_t *cfg, const fm_daemon_args_t *args, fm_metrics_t *metrics,
                   fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    return agg_server_new(cfg, args, metrics, sec, err, e);
}

static int s_run(void *server) { return agg_server_run(server); }

static void s_destroy(void *server)
{
    agg_server_t *self = server;
    agg_server_destroy(&self);
}

int main(int argc, char **argv)
{
    s_malloc_tune();
    static const fm_daemon_t daemon = {.prog = S_PROG,
                                       .usage = s_usage,
                                       .log_level_key = "aggregator.log_level",
                                       .metrics_key = "aggregator.metrics_addr",
                                       .blas = false,
                                       .sec_role = FM_SEC_ROLE_AGGREGATOR,
                                       .server_new = s_new,
                                       .server_run = s_run,
                                       .server_destroy = s_destroy};
    return fm_daemon_main(&daemon, argc, argv);
}
