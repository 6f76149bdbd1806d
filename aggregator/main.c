/* fedmq-aggregator: argv -> config -> agg_server_new -> agg_server_run -> destroy.
 * Exit codes: 0 clean stop (SIGINT/SIGTERM) or --help; 2 bad command line or config;
 * 1 runtime failure (bind, checkpoint, init file). */
#include <malloc.h>
#include <stdio.h>

#include "aggregator_server.h"
#include "fm_daemon.h"
#include "fm_log.h"

#define S_PROG "fedmq-aggregator"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: " S_PROG " [--config FILE] [--set section.key=value ...] [--log-level L]\n"
            "\n"
            "The fedmq aggregator: binds PULL [endpoints] updates and PUB [endpoints]\n"
            "aggregator_models, folds valid UPDATEs into a FedBuff buffer of [aggregator]\n"
            "buffer_k updates, applies the server optimizer and publishes each new MODEL\n"
            "(and the current one every second). Checkpoints and stats.json go to\n"
            "[aggregator] checkpoint_dir; it resumes from the newest checkpoint there.\n"
            "\n"
            "  --config FILE        INI config (see configs/fedmq.conf); defaults if absent\n"
            "  --set s.k=v          override one key (repeatable), e.g.\n"
            "                       --set aggregator.buffer_k=4\n"
            "  --log-level L        error|warning|notice|info|debug\n"
            "                       (default: [aggregator] log_level)\n"
            "  --help               this text\n"
            "\n"
            "Signals: SIGINT/SIGTERM checkpoint and exit 0; SIGHUP reloads max_staleness,\n"
            "checkpoint_every, checkpoint_keep and log_level.\n");
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

int main(int argc, char **argv)
{
    s_malloc_tune();
    fm_daemon_args_t args;
    int rc = fm_daemon_parse_args(S_PROG, argc, argv, &args, s_usage);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return 2;
    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, S_PROG ": %s\n", e.msg);
        return 2;
    }
    fm_log_init(S_PROG, args.log_level >= 0 ? args.log_level : cfg.aggregator.log_level);
    fm_daemon_signals();
    int err = 0;
    agg_server_t *server = agg_server_new(&cfg, &args, &err, &e);
    if (!server) {
        fprintf(stderr, S_PROG ": %s\n", e.msg);
        return err == FM_EARG ? 2 : 1;
    }
    rc = agg_server_run(server);
    agg_server_destroy(&server);
    return rc == 0 ? 0 : 1;
}
