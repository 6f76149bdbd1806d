/* fedmq run CONFIG: the whole federation on this machine, as separate processes.
 *
 * Starts fedmq-aggregator, fedmq-broker, fedmq-evaluator and fedmq-trainer (from the
 * directory of this executable) with the same config and overrides, all state under one
 * run directory; follows the evaluator's METRICS feed and the aggregator's stats.json;
 * prints progress; stops at the target accuracy, the time limit, after num_rounds in sync
 * mode (once the last version is scored), or when a daemon dies; stops the children
 * (trainers first, the aggregator last so it checkpoints), prints a summary and draws
 * <run-dir>/metrics.png from the metrics file (fedmq plot). Exit: 0 target reached, 1 limit
 * or num_rounds reached without the target, or a daemon failed, 2 bad input. */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fedmq_cli.h"
#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_wire.h"

extern char **environ;

#define EXIT_BAD_INPUT 2
#define NDAEMONS 4

typedef struct {
    const char *name;   /* "aggregator", ... */
    pid_t pid;          /* 0 when not running */
    int status;         /* wait status once reaped */
} s_child_t;

/* What the run has seen so far. */
typedef struct {
    double start;               /* monotonic start */
    double start_wall;          /* wall-clock start */
    uint64_t version;           /* from stats.json */
    uint64_t applied, rejected; /* from stats.json */
    double best_acc;            /* best test accuracy seen */
    uint64_t best_version;
    double last_acc;            /* latest METRICS */
    uint64_t last_version;
    double target_time;         /* seconds from start to target, < 0 if not reached */
    uint64_t target_version;
    uint64_t round, rounds_failed; /* sync, from stats.json */
    int finished;               /* sync: num_rounds reached (stats.json) */
    fm_wire_metrics_t last;     /* latest METRICS (population fields) */
} s_progress_t;

/* Value of a numeric key in a small flat JSON text (our own stats.json), NAN if absent. */
static double s_json_num(const char *text, const char *key)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static int s_read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return 0;
}

static pid_t s_spawn(const char *bin, char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

/* Reap children that exited; returns the name of one that died, or NULL. */
static const char *s_reap(s_child_t *kids, int n)
{
    const char *dead = NULL;
    for (int i = 0; i < n; i++) {
        if (kids[i].pid <= 0)
            continue;
        int st;
        if (waitpid(kids[i].pid, &st, WNOHANG) == kids[i].pid) {
            kids[i].status = st;
            kids[i].pid = 0;
            dead = kids[i].name;
        }
    }
    return dead;
}

/* SIGTERM one child and wait up to `grace` seconds, then SIGKILL. */
static void s_stop_child(s_child_t *k, double grace)
{
    if (k->pid <= 0)
        return;
    kill(k->pid, SIGTERM);
    double end = fm_daemon_now() + grace;
    while (fm_daemon_now() < end) {
        if (waitpid(k->pid, &k->status, WNOHANG) == k->pid) {
            k->pid = 0;
            return;
        }
        zclock_sleep(20);
    }
    kill(k->pid, SIGKILL);
    waitpid(k->pid, &k->status, 0);
    k->pid = 0;
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: fedmq run CONFIG [--set section.key=value ...] [--run-dir DIR]\n"
               "Run broker, aggregator, evaluator and a trainer pool on this machine with CONFIG,\n"
               "show progress, stop at [federation] target_accuracy, time_limit_s or (once the\n"
               "last version is scored) num_rounds, print a summary and draw metrics.png.\n"
               "[federation] mode = sync | async picks the algorithm (configs/fashion-sync.conf,\n"
               "configs/fashion-async.conf). State (checkpoints, metrics.jsonl, metrics.png,\n"
               "logs) goes to the run directory (default ./fedmq-run-YYYYmmdd-HHMMSS).\n"
               "Exit: 0 target reached, 1 limit or num_rounds without it / a daemon failed,\n"
               "2 bad input.\n");
}

int fm_cli_run(int argc, char **argv)
{
    static const struct option longopts[] = {{"set", required_argument, 0, 's'},
                                             {"run-dir", required_argument, 0, 'r'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    fm_daemon_args_t args;
    memset(&args, 0, sizeof args);
    args.log_level = -1;
    const char *run_dir_opt = NULL;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (args.nsets >= 48) {
                fprintf(stderr, "fedmq run: --set: too many overrides\n");
                return EXIT_BAD_INPUT;
            }
            args.sets[args.nsets++] = optarg;
            break;
        case 'r': run_dir_opt = optarg; break;
        case 'h': s_usage(stdout); return 0;
        default:
            fprintf(stderr, "fedmq run: %s: %s (see fedmq run --help)\n", argv[optind - 1],
                    ch == ':' ? "missing value" : "unknown option");
            return EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "fedmq run: expected one CONFIG file (see fedmq run --help)\n");
        return EXIT_BAD_INPUT;
    }
    args.config_path = argv[optind];

    /* the run directory and the overrides every daemon gets */
    char run_dir[PATH_MAX], ckdir[PATH_MAX + 32], metrics[PATH_MAX + 32];
    char set_ck[PATH_MAX + 64], set_metrics[PATH_MAX + 64];
    if (run_dir_opt)
        snprintf(run_dir, sizeof run_dir, "%s", run_dir_opt);
    else {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(run_dir, sizeof run_dir, "fedmq-run-%Y%m%d-%H%M%S", &tm);
    }
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run_dir);
    snprintf(set_ck, sizeof set_ck, "aggregator.checkpoint_dir=%s", ckdir);
    snprintf(set_metrics, sizeof set_metrics, "evaluator.metrics_file=%s", metrics);
    args.sets[args.nsets++] = set_ck;
    args.sets[args.nsets++] = set_metrics;

    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, "fedmq run: %s\n", e.msg);
        return EXIT_BAD_INPUT;
    }
    if (mkdir(run_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fedmq run: %s: %s\n", run_dir, strerror(errno));
        return EXIT_BAD_INPUT;
    }

    /* daemon binaries live beside this executable */
    char self[PATH_MAX], bindir[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "fedmq run: cannot find my own executable\n");
        return 1;
    }
    self[len] = 0;
    snprintf(bindir, sizeof bindir, "%s", dirname(self));

    s_child_t kids[NDAEMONS] = {{"aggregator", 0, 0}, {"broker", 0, 0}, {"evaluator", 0, 0},
                                {"trainer", 0, 0}};
    int rc = 1;
    zsock_t *sub = NULL;
    fm_daemon_signals();
    s_progress_t pg = {.start = fm_daemon_now(), .start_wall = fm_daemon_wallclock(),
                       .target_time = -1.0};
    for (int i = 0; i < NDAEMONS; i++) {
        char bin[PATH_MAX + 32], log[PATH_MAX + 32];
        snprintf(bin, sizeof bin, "%s/fedmq-%s", bindir, kids[i].name);
        snprintf(log, sizeof log, "%s/%s.log", run_dir, kids[i].name);
        if (access(bin, X_OK) != 0) {
            fprintf(stderr, "fedmq run: %s: not found (build all targets)\n", bin);
            goto stop;
        }
        char *av[2 + 2 * 64 + 2];
        int ac = 0;
        av[ac++] = bin;
        av[ac++] = "--config";
        av[ac++] = (char *)args.config_path;
        for (int s = 0; s < args.nsets; s++) {
            av[ac++] = "--set";
            av[ac++] = (char *)args.sets[s];
        }
        av[ac] = NULL;
        kids[i].pid = s_spawn(bin, av, log);
        if (kids[i].pid <= 0) {
            fprintf(stderr, "fedmq run: cannot start %s\n", bin);
            kids[i].pid = 0;
            goto stop;
        }
    }
    printf("fedmq run: %s, model %s, %d clients (%s), target accuracy %.2f, limit %.0f s\n",
           args.config_path, fm_arch_name(cfg.federation.model),
           cfg.federation.num_clients, cfg.federation.partition, cfg.federation.target_accuracy,
           cfg.federation.time_limit_s);
    printf("fedmq run: state and logs in %s/\n", run_dir);
    fflush(stdout);

    sub = zsock_new(ZMQ_SUB);
    zsock_set_linger(sub, 0);
    zsock_set_subscribe(sub, "");
    zsock_connect(sub, "%s", cfg.endpoints.metrics_pub);
    zpoller_t *poller = zpoller_new(sub, NULL);
    char stats_path[PATH_MAX + 64], text[65536];
    snprintf(stats_path, sizeof stats_path, "%s/stats.json", ckdir);
    double last_print = 0, last_applied_t = pg.start;
    uint64_t last_applied = 0;
    double rate = 0, finished_at = 0;
    const char *dead = NULL;
    int sync = cfg.federation.mode == FM_CFG_MODE_SYNC;
    while (!fm_daemon_stopping()) {
        void *which = zpoller_wait(poller, 250);
        if (which) {
            zframe_t *f = zframe_recv(sub);
            fm_wire_metrics_t m;
            fm_wire_type_t type;
            if (f && fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) == 0 &&
                type == FM_WIRE_METRICS &&
                fm_wire_decode_metrics(zframe_data(f), zframe_size(f), &m, NULL) == 0) {
                pg.last_acc = m.accuracy;
                pg.last_version = m.version;
                pg.last = m;
                if (m.accuracy > pg.best_acc) {
                    pg.best_acc = m.accuracy;
                    pg.best_version = m.version;
                }
                if (pg.target_time < 0 && m.accuracy >= cfg.federation.target_accuracy) {
                    pg.target_time = fm_daemon_now() - pg.start;
                    pg.target_version = m.version;
                }
            }
            zframe_destroy(&f);
        }
        double now = fm_daemon_now();
        if (now - last_print >= 2.0 || pg.target_time >= 0) {
            if (s_read_file(stats_path, text, sizeof text) == 0) {
                double v = s_json_num(text, "version"), a = s_json_num(text, "updates_applied"),
                       r = s_json_num(text, "updates_rejected");
                double rn = s_json_num(text, "round"), rf = s_json_num(text, "rounds_failed");
                if (v == v) pg.version = (uint64_t)v;
                if (a == a) pg.applied = (uint64_t)a;
                if (r == r) pg.rejected = (uint64_t)r;
                if (rn == rn) pg.round = (uint64_t)rn;
                if (rf == rf) pg.rounds_failed = (uint64_t)rf;
                pg.finished = strstr(text, "\"finished\": true") != NULL;
            }
            if (now > last_applied_t)
                rate = (double)(pg.applied - last_applied) / (now - last_applied_t);
            last_applied = pg.applied;
            last_applied_t = now;
            char extra[160] = "";
            if (sync)
                snprintf(extra, sizeof extra, " round %llu (%llu failed)",
                         (unsigned long long)pg.round, (unsigned long long)pg.rounds_failed);
            if (pg.last.pop_clients)
                snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                         " clients: worst %.3f p10 %.3f", pg.last.pop_min, pg.last.pop_p10);
            printf("[%7.1fs] version %-5llu updates/s %6.1f  applied %-7llu rejected %-5llu "
                   "test_accuracy %.4f (v%llu)%s\n",
                   now - pg.start, (unsigned long long)pg.version, rate,
                   (unsigned long long)pg.applied, (unsigned long long)pg.rejected, pg.last_acc,
                   (unsigned long long)pg.last_version, extra);
            fflush(stdout);
            last_print = now;
        }
        if (pg.target_time >= 0)
            break;
        if (pg.finished && finished_at == 0)
            finished_at = now;
        if (finished_at > 0 && (pg.last_version >= pg.version || now - finished_at >= 60.0)) {
            printf("fedmq run: num_rounds = %d done\n", cfg.federation.num_rounds);
            break;
        }
        if (cfg.federation.time_limit_s > 0 && now - pg.start >= cfg.federation.time_limit_s) {
            printf("fedmq run: time limit of %.0f s reached\n", cfg.federation.time_limit_s);
            break;
        }
        if ((dead = s_reap(kids, NDAEMONS)) != NULL) {
            fprintf(stderr, "fedmq run: %s exited unexpectedly (see %s/%s.log)\n", dead, run_dir, dead);
            break;
        }
    }
    zpoller_destroy(&poller);
    rc = pg.target_time >= 0 && !dead ? 0 : 1;
stop:
    /* trainers first (they send BYE), then evaluator and broker, the aggregator last
     * (it writes its final checkpoint and stats.json) */
    for (int i = NDAEMONS - 1; i >= 0; i--)
        s_stop_child(&kids[i], kids[i].name[0] == 'a' ? 30.0 : 10.0);
    zsock_destroy(&sub);

    if (s_read_file(stats_path, text, sizeof text) == 0) {
        printf("\nsummary (%s)\n", run_dir);
        if (pg.target_time >= 0)
            printf("  time to %.2f accuracy: %.1f s (model version %llu)\n",
                   cfg.federation.target_accuracy, pg.target_time,
                   (unsigned long long)pg.target_version);
        else
            printf("  target %.2f not reached; best accuracy %.4f (version %llu)\n",
                   cfg.federation.target_accuracy, pg.best_acc, (unsigned long long)pg.best_version);
        printf("  elapsed: %.1f s; final version: %.0f; best accuracy %.4f (v%llu)\n",
               fm_daemon_now() - pg.start, s_json_num(text, "version"), pg.best_acc,
               (unsigned long long)pg.best_version);
        printf("  updates applied: %.0f; rejected: %.0f\n", s_json_num(text, "updates_applied"),
               s_json_num(text, "updates_rejected"));
        const char *rej = strstr(text, "\"rejected\":");
        if (rej) {
            const char *end = strchr(rej, '}');
            printf("  rejected by reason: %.*s\n", end ? (int)(end - rej - 10) : 0, rej + 11);
        }
        if (strstr(text, "\"mode\": \"sync\""))
            printf("  rounds: %.0f completed, %.0f failed (below min_clients at the deadline); "
                   "late updates dropped: %.0f\n", s_json_num(text, "rounds_completed"),
                   s_json_num(text, "rounds_failed"), s_json_num(text, "late"));
        else
            printf("  staleness: mean %.2f, max %.0f\n", s_json_num(text, "staleness_mean"),
                   s_json_num(text, "staleness_max"));
        if (pg.last.pop_clients)
            printf("  clients' held-out accuracy (v%llu): mean %.4f, worst %.4f (client %u), "
                   "10th percentile %.4f, %.0f%% below %.2f\n",
                   (unsigned long long)pg.last.version, pg.last.pop_mean, pg.last.pop_min,
                   pg.last.pop_worst, pg.last.pop_p10, 100.0 * pg.last.pop_below,
                   pg.last.pop_threshold);
        printf("  bytes received by the aggregator: %.0f\n", s_json_num(text, "bytes_received"));
    } else {
        printf("\nsummary: no aggregator stats (%s missing)\n", stats_path);
    }
    char png[PATH_MAX + 32], perr[512];
    snprintf(png, sizeof png, "%s/metrics.png", run_dir);
    const char *files[1] = {metrics};
    if (access(metrics, R_OK) == 0) {
        if (fm_plot_files(files, NULL, 1, png, args.config_path, FM_PLOT_X_BOTH, perr,
                          sizeof perr) == 0)
            printf("  plot: %s\n", png);
        else
            printf("  plot not drawn: %s\n", perr);
    }
    for (int i = 0; i < NDAEMONS; i++)
        if (WIFEXITED(kids[i].status) && WEXITSTATUS(kids[i].status) != 0)
            printf("  %s exited with status %d (see %s/%s.log)\n", kids[i].name,
                   WEXITSTATUS(kids[i].status), run_dir, kids[i].name);
    return rc;
}
