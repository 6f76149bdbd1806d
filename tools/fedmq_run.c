/* fedmq run CONFIG: the whole federation on this machine, as separate processes.
 *
 * Starts fedmq-aggregator, fedmq-broker, fedmq-evaluator and fedmq-trainer (from the
 * directory of this executable) with the same config and overrides, all state under one
 * run directory; follows the evaluator's METRICS feed and the aggregator's stats.json
 * (fm_stats); prints progress; stops at the target accuracy, the time limit, after
 * num_rounds in sync mode (once the last version is scored), or when a daemon exits on its
 * own; stops the children (trainers first, the aggregator last so it checkpoints), prints a
 * summary and draws <run-dir>/metrics.png from the metrics file (fedmq plot).
 * Exit: 0 target reached; 1 limit or num_rounds reached without the target, or a runtime
 * failure (of fedmq run, or of a daemon: exit 1 or a signal); 2 bad input (fedmq run's
 * command line or config, or a daemon that exited 2). A daemon that exits on its own is
 * reported in one line: its name, exit code and class, and the last error of its log. */
#include <czmq.h>
#include <jansson.h>
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fedmq_cli.h"
#include "fm_cfg_model.h"
#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_sec.h"
#include "fm_sock.h"
#include "fm_stats.h"
#include "fm_wire.h"

extern char **environ;

#define NDAEMONS 4
#define S_MAX_SETS 48 /* --set overrides from the command line (two more are added) */

typedef struct {
    const char *name; /* "aggregator", ... */
    pid_t pid;        /* 0 when not running */
    int status;       /* wait status once reaped */
    int died;         /* exited on its own (before fedmq run stopped it): 1st, 2nd... */
    double cpu_s;     /* once reaped: its CPU seconds (user + system) */
} s_child_t;

/* One run: its command line, paths, config and children. Heap-allocated by fm_cli_run. */
typedef struct {
    fm_daemon_args_t args;
    const char *run_dir_opt; /* --run-dir, NULL = a dated name */
    char run_dir[PATH_MAX];
    char metrics[PATH_MAX + 32];                            /* <run_dir>/metrics.jsonl */
    char stats_path[PATH_MAX + 64];                         /* <run_dir>/checkpoints/stats.json */
    char set_ck[PATH_MAX + 64], set_metrics[PATH_MAX + 64]; /* the overrides for them */
    char bindir[PATH_MAX];                                  /* where the daemon binaries are */
    fm_config_t cfg;
    s_child_t kids[NDAEMONS];
    int ndied; /* children that exited on their own */
} s_run_t;

/* What the run has seen so far. */
typedef struct {
    double start;               /* monotonic start */
    uint64_t version;           /* from stats.json */
    uint64_t applied, rejected; /* from stats.json */
    double best_acc;            /* best test accuracy seen */
    uint64_t best_version;
    double last_acc; /* latest METRICS */
    uint64_t last_version;
    double target_time; /* seconds from start to target, < 0 if not reached */
    uint64_t target_version;
    uint64_t round, rounds_failed; /* sync, from stats.json */
    int finished;                  /* num_rounds reached, or the privacy budget (stats.json) */
    int privacy_exhausted;         /* the privacy budget stopped the run (stats.json) */
    int secagg;                    /* [secagg]: cohorts completed / aborted (stats.json) */
    uint64_t sa_completed, sa_aborted;
    int stats_warned;       /* an unreadable stats.json was reported once */
    fm_wire_metrics_t last; /* latest METRICS */
    fm_wire_metrics_t pop;  /* latest METRICS with the population fields (pc > 0) */
    double last_print, finished_at;
    double rate; /* stats.json updates_per_s: accepted updates/s over the last 30 s */
    /* the time budget: evaluations seen on the feed and their seconds (test set, population);
     * the machine's CPU time (/proc/stat: all, idle) at the start and when following ended */
    uint64_t evals;
    double eval_s, pop_s;
    double cpu0[2], cpu1[2];
    double followed; /* seconds from start to the end of following */
} s_progress_t;

/* Why the run stopped following progress. */
typedef enum { S_STOP_SIGNAL, S_STOP_TARGET, S_STOP_ROUNDS, S_STOP_LIMIT, S_STOP_DIED } s_stop_t;

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: fedmq run CONFIG [--set section.key=value ...] [--run-dir DIR]\n"
            "Run broker, aggregator, evaluator and a trainer pool on this machine with CONFIG,\n"
            "show progress, stop at [federation] target_accuracy, time_limit_s or (once the\n"
            "last version is scored) num_rounds, print a summary and draw metrics.png.\n"
            "[federation] mode = sync | async picks the algorithm (configs/fashion-sync.conf,\n"
            "configs/fashion-async.conf). State (checkpoints, metrics.jsonl, metrics.png,\n"
            "logs) goes to the run directory (default ./fedmq-run-YYYYmmdd-HHMMSS).\n"
            "Exit: 0 target reached; 1 limit or num_rounds without it, or a runtime failure\n"
            "(also a daemon's: exit 1 or a signal); 2 bad input (also a daemon that exited 2).\n"
            "A daemon that exits on its own is reported in one line with its last error.\n");
}

/* ---- setup ---------------------------------------------------------------------------- */

/* The command line into r->args and r->run_dir_opt (argv is borrowed). 0 to go on, -1 after
 * printing help (exit 0), or FM_EXIT_INPUT after one line on stderr. */
static int s_parse_flags(s_run_t *r, int argc, char **argv)
{
    static const struct option longopts[] = {{"set", required_argument, 0, 's'},
                                             {"run-dir", required_argument, 0, 'r'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    r->args.log_level = -1;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (r->args.nsets >= S_MAX_SETS) {
                fprintf(stderr, "fedmq run: --set: too many overrides\n");
                return FM_EXIT_INPUT;
            }
            r->args.sets[r->args.nsets++] = optarg;
            break;
        case 'r': r->run_dir_opt = optarg; break;
        case 'h': s_usage(stdout); return -1;
        default:
            fprintf(stderr, "fedmq run: %s: %s (see fedmq run --help)\n", argv[optind - 1],
                    ch == ':' ? "missing value" : "unknown option");
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "fedmq run: expected one CONFIG file (see fedmq run --help)\n");
        return FM_EXIT_INPUT;
    }
    r->args.config_path = argv[optind];
    return 0;
}

/* Name the run directory and its files, add the overrides every daemon gets, load and check
 * the config, create the run directory and find the daemon binaries. 0, or an exit code
 * after one line on stderr. */
static int s_prepare(s_run_t *r)
{
    if (r->run_dir_opt) {
        if (snprintf(r->run_dir, sizeof r->run_dir, "%s", r->run_dir_opt) >=
            (int)sizeof r->run_dir) {
            fprintf(stderr, "fedmq run: --run-dir: path too long\n");
            return FM_EXIT_INPUT;
        }
    } else {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(r->run_dir, sizeof r->run_dir, "fedmq-run-%Y%m%d-%H%M%S", &tm);
    }
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", r->run_dir);
    snprintf(r->stats_path, sizeof r->stats_path, "%s/checkpoints/stats.json", r->run_dir);
    snprintf(r->set_ck, sizeof r->set_ck, "aggregator.checkpoint_dir=%s/checkpoints", r->run_dir);
    snprintf(r->set_metrics, sizeof r->set_metrics, "evaluator.metrics_file=%s", r->metrics);
    r->args.sets[r->args.nsets++] = r->set_ck;
    r->args.sets[r->args.nsets++] = r->set_metrics;

    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&r->cfg, &r->args, &e) != 0 ||
        fm_cfg_model_builtin_only(&r->cfg,
                                  "fedmq run starts fedmq-trainer, which runs only logreg, mlp "
                                  "and cnn; train it with the Python client (trainer/python)",
                                  &e) != 0) {
        fprintf(stderr, "fedmq run: %s\n", e.msg);
        return FM_EXIT_INPUT;
    }
    if (mkdir(r->run_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fedmq run: %s: cannot create: %s\n", r->run_dir, strerror(errno));
        return FM_EXIT_RUNTIME;
    }
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "fedmq run: cannot find my own executable\n");
        return FM_EXIT_RUNTIME;
    }
    self[len] = 0;
    snprintf(r->bindir, sizeof r->bindir, "%s", dirname(self));
    return 0;
}

/* ---- children ------------------------------------------------------------------------- */

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

/* Start the four daemons with the run's config and overrides, each logging to
 * <run_dir>/<name>.log. 0, or FM_EXIT_RUNTIME after one line on stderr (the children
 * already started are left running for s_stop_all). */
static int s_start_children(s_run_t *r)
{
    static const char *const names[NDAEMONS] = {"aggregator", "broker", "evaluator", "trainer"};
    /* each daemon stops when this process dies, even by SIGKILL (fm_daemon_follow_parent) */
    char self[32];
    snprintf(self, sizeof self, "%ld", (long)getpid());
    if (setenv(FM_DAEMON_PARENT_ENV, self, 1) != 0) {
        fprintf(stderr, "fedmq run: setenv %s: %s\n", FM_DAEMON_PARENT_ENV, strerror(errno));
        return FM_EXIT_RUNTIME;
    }
    for (int i = 0; i < NDAEMONS; i++) {
        s_child_t *k = &r->kids[i];
        k->name = names[i];
        char bin[PATH_MAX + 32], log[PATH_MAX + 32];
        snprintf(bin, sizeof bin, "%s/fedmq-%s", r->bindir, k->name);
        snprintf(log, sizeof log, "%s/%s.log", r->run_dir, k->name);
        if (access(bin, X_OK) != 0) {
            fprintf(stderr, "fedmq run: %s: not found (build all targets)\n", bin);
            return FM_EXIT_RUNTIME;
        }
        char *av[3 + 2 * (S_MAX_SETS + 2) + 1];
        int ac = 0;
        av[ac++] = bin;
        av[ac++] = "--config";
        av[ac++] = (char *)r->args.config_path;
        for (int s = 0; s < r->args.nsets; s++) {
            av[ac++] = "--set";
            av[ac++] = (char *)r->args.sets[s];
        }
        av[ac] = NULL;
        pid_t pid = s_spawn(bin, av, log);
        if (pid <= 0) {
            fprintf(stderr, "fedmq run: cannot start %s\n", bin);
            return FM_EXIT_RUNTIME;
        }
        k->pid = pid;
    }
    return 0;
}

/* waitpid that also records the child's CPU seconds once it is reaped. */
static pid_t s_wait(s_child_t *k, int options)
{
    struct rusage ru;
    pid_t got = wait4(k->pid, &k->status, options, &ru);
    if (got == k->pid)
        k->cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return got;
}

/* This machine's CPU time in seconds, all and idle (idle + iowait), from /proc/stat's "cpu"
 * line; out[0] < 0 when it cannot be read. */
static void s_machine_cpu(double out[2])
{
    out[0] = out[1] = -1.0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    long tick = sysconf(_SC_CLK_TCK);
    if (n < 5 || tick <= 0)
        return;
    unsigned long long all = 0;
    for (int i = 0; i < n; i++)
        all += v[i];
    out[0] = (double)all / (double)tick;
    out[1] = (double)(v[3] + v[4]) / (double)tick;
}

/* Reap k if it has exited (on its own: k->died numbers it in order). 1 if it had. */
static int s_reap_one(s_run_t *r, s_child_t *k)
{
    if (k->pid <= 0 || s_wait(k, WNOHANG) != k->pid)
        return 0;
    k->pid = 0;
    k->died = ++r->ndied;
    return 1;
}

/* Reap the children that exited on their own. Returns how many did. */
static int s_reap(s_run_t *r)
{
    int dead = 0;
    for (int i = 0; i < NDAEMONS; i++)
        dead += s_reap_one(r, &r->kids[i]);
    return dead;
}

/* SIGTERM one child and wait up to `grace` seconds, then SIGKILL. A child that had already
 * exited is reaped as one that exited on its own. */
static void s_stop_child(s_run_t *r, s_child_t *k, double grace)
{
    if (k->pid <= 0 || s_reap_one(r, k))
        return;
    kill(k->pid, SIGTERM);
    double end = fm_daemon_now() + grace;
    while (fm_daemon_now() < end) {
        if (s_wait(k, WNOHANG) == k->pid) {
            k->pid = 0;
            return;
        }
        zclock_sleep(20);
    }
    kill(k->pid, SIGKILL);
    s_wait(k, 0);
    k->pid = 0;
}

/* Trainers first (they send BYE), then evaluator and broker, the aggregator last (it
 * writes its final checkpoint and stats.json). */
static void s_stop_all(s_run_t *r)
{
    for (int i = NDAEMONS - 1; i >= 0; i--)
        s_stop_child(r, &r->kids[i], strcmp(r->kids[i].name, "aggregator") == 0 ? 30.0 : 10.0);
}

/* The exit code fedmq run takes for a child's wait status, and its class in words. */
static int s_child_class(int status, char *buf, size_t cap)
{
    if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, cap, "killed by signal %d (SIG%s)", WTERMSIG(status),
                 abbrev ? abbrev : "?");
        return FM_EXIT_RUNTIME;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == FM_EXIT_INPUT) {
        snprintf(buf, cap, "exit code 2, bad config or input");
        return FM_EXIT_INPUT;
    }
    if (code == FM_EXIT_RUNTIME)
        snprintf(buf, cap, "exit code 1, runtime failure");
    else
        snprintf(buf, cap, "exit code %d, unexpected", code);
    return FM_EXIT_RUNTIME;
}

/* The message of the last error in a daemon's log into buf: the text after the level of
 * the last EMERG/ALERT/CRIT/ERROR line (fm_log), else the last line naming the daemon
 * ("fedmq-x: ..."), else the last non-empty line; "" when the log is empty or unreadable. */
static void s_last_error(const char *log, const char *name, char *buf, size_t cap)
{
    static const char *const levels[] = {" EMERG ", " ALERT ", " CRIT ", " ERROR "};
    char prog[64], *line = NULL;
    size_t lcap = 0;
    int rank = 0; /* 3 error line, 2 "fedmq-x:" line, 1 any line */
    buf[0] = '\0';
    snprintf(prog, sizeof prog, "fedmq-%s: ", name);
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    while (getline(&line, &lcap, f) != -1) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[strspn(line, " \t")])
            continue;
        const char *msg = NULL;
        for (size_t i = 0; i < sizeof levels / sizeof levels[0] && !msg; i++)
            if ((msg = strstr(line, levels[i])) != NULL)
                msg += strlen(levels[i]);
        if (!msg && strncmp(line, prog, strlen(prog)) == 0)
            msg = line + strlen(prog);
        int here = msg == line + strlen(prog) ? 2 : msg ? 3 : 1;
        if (here >= rank) {
            rank = here;
            snprintf(buf, cap, "%s", msg ? msg : line);
        }
    }
    free(line);
    fclose(f);
}

/* One line on stderr about the children that exited on their own: the first one's name,
 * exit code, class and last logged error, then the others' names and classes. Returns the
 * run's exit code for them: FM_EXIT_INPUT if one exited 2, else FM_EXIT_RUNTIME; 0 if none
 * did. */
static int s_report_deaths(const s_run_t *r)
{
    int rc = FM_EXIT_OK;
    char others[256] = "";
    const s_child_t *first = NULL;
    for (int i = 0; i < NDAEMONS; i++) {
        const s_child_t *k = &r->kids[i];
        char cls[64];
        if (!k->died)
            continue;
        rc = s_child_class(k->status, cls, sizeof cls) == FM_EXIT_INPUT ? FM_EXIT_INPUT
             : rc == FM_EXIT_OK                                         ? FM_EXIT_RUNTIME
                                                                        : rc;
        if (k->died == 1) {
            first = k;
            continue;
        }
        size_t n = strlen(others);
        snprintf(others + n, sizeof others - n, "; %s also exited (%s)", k->name, cls);
    }
    if (!first)
        return rc;
    char cls[64], log[PATH_MAX + 32], why[512];
    s_child_class(first->status, cls, sizeof cls);
    snprintf(log, sizeof log, "%s/%s.log", r->run_dir, first->name);
    s_last_error(log, first->name, why, sizeof why);
    fprintf(stderr, "fedmq run: %s exited on its own (%s): %s (log: %s)%s\n", first->name, cls,
            why[0] ? why : "no message in its log", log, others);
    return rc;
}

/* ---- progress ------------------------------------------------------------------------- */

/* Fold one frame of the METRICS feed into pg (other frames are ignored). */
static void s_on_metrics(const s_run_t *r, s_progress_t *pg, zframe_t *f)
{
    fm_wire_metrics_t m;
    fm_wire_type_t type;
    if (!f || fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) != 0 ||
        type != FM_WIRE_METRICS ||
        fm_wire_decode_metrics(zframe_data(f), zframe_size(f), &m, NULL) != 0)
        return;
    pg->last_acc = m.accuracy;
    pg->last_version = m.version;
    pg->evals++;
    pg->eval_s += m.eval_seconds;
    pg->pop_s += m.pop_seconds;
    pg->last = m;
    if (m.pop_clients)
        pg->pop = m;
    if (m.accuracy > pg->best_acc) {
        pg->best_acc = m.accuracy;
        pg->best_version = m.version;
    }
    if (pg->target_time < 0 && m.accuracy >= r->cfg.federation.target_accuracy) {
        pg->target_time = fm_daemon_now() - pg->start;
        pg->target_version = m.version;
    }
}

/* Refresh pg from stats.json. A missing file (the aggregator has not written it yet) is
 * quiet; any other failure is reported once on stderr and the old values are kept. */
static void s_refresh_stats(const s_run_t *r, s_progress_t *pg)
{
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_read(r->stats_path, &st, &e);
    if (rc != 0) {
        if (rc != -ENOENT && !pg->stats_warned) {
            fprintf(stderr, "fedmq run: warning: %s\n", e.msg);
            pg->stats_warned = 1;
        }
        return;
    }
    pg->version = st.version;
    pg->applied = st.updates_applied;
    pg->rejected = st.updates_rejected;
    pg->round = st.round;
    pg->rounds_failed = st.rounds_failed;
    pg->finished = st.finished;
    pg->privacy_exhausted = st.privacy_exhausted;
    pg->secagg = st.secagg;
    pg->sa_completed = st.secagg_completed;
    pg->sa_aborted = st.secagg_aborted;
    pg->rate = st.updates_per_s;
}

/* One progress line (every 2 s, and when the target is reached). */
static void s_print_progress(const s_run_t *r, s_progress_t *pg, double now)
{
    s_refresh_stats(r, pg);
    char extra[160] = "";
    if (r->cfg.federation.mode == FM_CFG_MODE_SYNC)
        snprintf(extra, sizeof extra, " round %llu (%llu failed)", (unsigned long long)pg->round,
                 (unsigned long long)pg->rounds_failed);
    if (pg->secagg)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " cohorts %llu (%llu aborted)", (unsigned long long)pg->sa_completed,
                 (unsigned long long)pg->sa_aborted);
    if (pg->pop.pop_clients)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " clients (v%llu): worst %.3f p10 %.3f", (unsigned long long)pg->pop.version,
                 pg->pop.pop_min, pg->pop.pop_p10);
    printf("[%7.1fs] version %-5llu updates/s %6.1f  applied %-7llu rejected %-5llu "
           "test_accuracy %.4f (v%llu)%s\n",
           now - pg->start, (unsigned long long)pg->version, pg->rate,
           (unsigned long long)pg->applied, (unsigned long long)pg->rejected, pg->last_acc,
           (unsigned long long)pg->last_version, extra);
    if (pg->last.delta > 0) /* [privacy] mode = client: what the scored version spent */
        printf("           epsilon %.4g (delta %g) at v%llu\n", pg->last.epsilon, pg->last.delta,
               (unsigned long long)pg->last_version);
    fflush(stdout);
    pg->last_print = now;
}

/* Whether to stop now (S_STOP_* other than S_STOP_SIGNAL), or -1 to go on. */
static int s_stop_reason(s_run_t *r, s_progress_t *pg, double now)
{
    const fm_cfg_federation_t *fed = &r->cfg.federation;
    if (pg->target_time >= 0)
        return S_STOP_TARGET;
    if (pg->finished && pg->finished_at == 0)
        pg->finished_at = now;
    if (pg->finished_at > 0 &&
        (pg->last_version >= pg->version || now - pg->finished_at >= 60.0)) {
        if (pg->privacy_exhausted)
            printf("fedmq run: privacy budget spent ([privacy] target_epsilon = %g): no more "
                   "versions\n",
                   r->cfg.privacy.target_epsilon);
        else
            printf("fedmq run: num_rounds = %d done\n", fed->num_rounds);
        return S_STOP_ROUNDS;
    }
    if (fed->time_limit_s > 0 && now - pg->start >= fed->time_limit_s) {
        printf("fedmq run: time limit of %.0f s reached\n", fed->time_limit_s);
        return S_STOP_LIMIT;
    }
    if (s_reap(r) > 0)
        return S_STOP_DIED;
    return -1;
}

/* Follow the METRICS feed and stats.json until a stop reason (or SIGINT/SIGTERM). */
static s_stop_t s_follow(s_run_t *r, s_progress_t *pg)
{
    zpoller_t *poller = NULL;
    zsock_t *sub = NULL;
    s_stop_t why = S_STOP_SIGNAL;
    fm_errmsg_t e = {{0}};
    int err = 0;
    /* under curve, as a monitor: [security] monitor_cert, enrolled in the evaluator's
     * allow_dir */
    fm_sec_t *sec = r->cfg.security.mode == FM_CFG_SECURITY_CURVE
                        ? fm_sec_new(&r->cfg, FM_SEC_ROLE_MONITOR, &err, &e)
                        : NULL;
    fm_sock_opts_t o = {.subscribe_all = true, .sec = sec, .side = FM_SEC_TO_EVALUATOR};
    if ((r->cfg.security.mode == FM_CFG_SECURITY_CURVE && !sec) ||
        !(sub = fm_sock_new(ZMQ_SUB, &o, "metrics_pub", &err, &e)) ||
        fm_sock_connect(sub, "endpoints.metrics_pub", r->cfg.endpoints.metrics_pub, &e) != 0 ||
        !(poller = zpoller_new(sub, NULL))) {
        fprintf(stderr, "fedmq run: cannot subscribe to %s: %s\n", r->cfg.endpoints.metrics_pub,
                e.msg[0] ? e.msg : "out of memory");
        why = S_STOP_DIED; /* treated as a failure; no child is marked dead */
        goto cleanup;
    }
    while (!fm_daemon_stopping()) {
        if (zpoller_wait(poller, 250)) {
            zframe_t *f = zframe_recv(sub);
            s_on_metrics(r, pg, f);
            zframe_destroy(&f);
        }
        double now = fm_daemon_now();
        if (now - pg->last_print >= 2.0 || pg->target_time >= 0)
            s_print_progress(r, pg, now);
        int stop = s_stop_reason(r, pg, now);
        if (stop >= 0) {
            why = (s_stop_t)stop;
            break;
        }
    }
cleanup:
    zpoller_destroy(&poller);
    zsock_destroy(&sub);
    fm_sec_destroy(&sec);
    return why;
}

/* ---- summary -------------------------------------------------------------------------- */

/* The summary lines that come from stats.json (st). */
static void s_summary_stats(const s_run_t *r, const s_progress_t *pg, const fm_stats_t *st)
{
    double target = r->cfg.federation.target_accuracy;
    if (pg->target_time >= 0)
        printf("  time to %g accuracy: %.1f s (model version %llu)\n", target, pg->target_time,
               (unsigned long long)pg->target_version);
    else
        printf("  target %g not reached; best accuracy %.4f (version %llu)\n", target,
               pg->best_acc, (unsigned long long)pg->best_version);
    printf("  elapsed: %.1f s; final version: %llu; best accuracy %.4f (v%llu)\n",
           fm_daemon_now() - pg->start, (unsigned long long)st->version, pg->best_acc,
           (unsigned long long)pg->best_version);
    printf("  updates applied: %llu; rejected: %llu\n", (unsigned long long)st->updates_applied,
           (unsigned long long)st->updates_rejected);
    printf("  rejected by reason: ");
    for (int i = 0; i < st->nreasons; i++)
        printf("%s\"%s\": %llu", i ? ", " : "", st->rejected[i].name,
               (unsigned long long)st->rejected[i].count);
    printf("\n");
    if (strcmp(st->mode, "sync") == 0)
        printf("  rounds: %llu completed, %llu failed (below min_clients at the deadline); "
               "late updates dropped: %llu\n",
               (unsigned long long)st->rounds_completed, (unsigned long long)st->rounds_failed,
               (unsigned long long)fm_stats_rejected(st, "late"));
    else
        printf("  staleness: mean %.2f, max %llu\n", st->staleness_mean,
               (unsigned long long)st->staleness_max);
    if (st->privacy)
        printf("  privacy: epsilon %.4g spent at delta %g over %llu steps (target %g)%s\n",
               st->privacy_epsilon, st->privacy_delta, (unsigned long long)st->privacy_steps,
               st->privacy_target_epsilon,
               st->privacy_exhausted ? "; the budget stopped the run" : "");
    if (st->secagg)
        printf("  secure aggregation: cohorts %llu formed, %llu completed, %llu aborted, %u in "
               "flight at the end; members dropped: %llu before keys, %llu before shares, "
               "%llu before upload, %llu before unmasking; %llu member messages refused\n",
               (unsigned long long)st->secagg_formed, (unsigned long long)st->secagg_completed,
               (unsigned long long)st->secagg_aborted, st->secagg_in_flight,
               (unsigned long long)st->secagg_dropped_keys,
               (unsigned long long)st->secagg_dropped_shares,
               (unsigned long long)st->secagg_dropped_train,
               (unsigned long long)st->secagg_dropped_unmask,
               (unsigned long long)st->secagg_refused);
}

/* Seconds `x` as a share of `of`, in percent (0 when `of` is not positive). */
static double s_pct(double x, double of) { return of > 0 ? 100.0 * x / of : 0.0; }

/* The time budget per version (docs/OPERATIONS.md, "Time budget"): the wall time of the run
 * over the versions this aggregator made; the updates' own clocks (local training, the
 * workers' wait, transport) and the aggregator's (stats.json "time"); the evaluator's
 * seconds (the METRICS feed); how the cores were shared (the children's CPU seconds, the
 * machine's idle time). Printed, and written to <run-dir>/budget.json. */
static void s_summary_budget(const s_run_t *r, const s_progress_t *pg, const fm_stats_t *st)
{
    uint64_t nv = st->time.versions;
    if (nv == 0) {
        printf("  time budget: no version was made\n");
        return;
    }
    double v = (double)nv, wall = pg->followed, per = wall / v;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ncpu = ncpu > 0 ? ncpu : 1;
    double cpu_all = pg->cpu1[0] - pg->cpu0[0], idle = pg->cpu1[1] - pg->cpu0[1];
    int have_cpu = pg->cpu0[0] >= 0 && pg->cpu1[0] >= 0 && cpu_all > 0;
    double kids = 0.0;
    for (int i = 0; i < NDAEMONS; i++)
        kids += r->kids[i].cpu_s;
    double other = have_cpu ? cpu_all - idle - kids : 0.0;
    other = other > 0 ? other : 0.0;
    double cores = (double)ncpu * per; /* core-seconds per version */
    printf("  time budget: %llu versions in %.1f s = %.2f s per version; per version:\n",
           (unsigned long long)nv, wall, per);
    double timed = st->time.timed ? (double)st->time.timed : 1.0;
    double frac = st->time.updates ? (double)st->time.timed / (double)st->time.updates : 0.0;
    printf("    updates: %.1f folded; their local training %.2f s, their workers' wait before "
           "it %.2f s, transport %.3f s (%.1f ms per update; %.0f%% of updates timed)\n",
           (double)st->time.updates / v, st->time.train_s / v, st->time.wait_s / v,
           st->time.transport_s / v, 1e3 * st->time.transport_s / timed, 100.0 * frac);
    printf("    aggregator: folding %.3f s, making the version %.3f s (checkpoints %.3f s)\n",
           st->time.fold_s / v, st->time.version_s / v, st->time.checkpoint_s / v);
    printf("    evaluator: %.2f evaluations; test set %.2f s + population %.2f s each\n",
           (double)pg->evals / v, pg->evals ? pg->eval_s / (double)pg->evals : 0.0,
           pg->evals ? pg->pop_s / (double)pg->evals : 0.0);
    printf("    cores (%ld, %.2f core-s): ", ncpu, cores);
    for (int i = 0; i < NDAEMONS; i++)
        printf("%s %.2f (%.0f%%), ", r->kids[i].name, r->kids[i].cpu_s / v,
               s_pct(r->kids[i].cpu_s / v, cores));
    if (have_cpu)
        printf("other processes %.2f (%.0f%%), idle %.2f (%.0f%%)\n", other / v,
               s_pct(other / v, cores), idle / v, s_pct(idle / v, cores));
    else
        printf("the rest not measured (/proc/stat unreadable)\n");

    json_t *o = json_pack(
        "{s:I, s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:f, s:i}", "versions",
        (json_int_t)nv, "wall_s", wall, "per_version_s", per, "updates",
        (json_int_t)st->time.updates, "timed", (json_int_t)st->time.timed, "train_s",
        st->time.train_s, "wait_s", st->time.wait_s, "transport_s", st->time.transport_s,
        "fold_s", st->time.fold_s, "version_s", st->time.version_s, "checkpoint_s",
        st->time.checkpoint_s, "evaluations", (json_int_t)pg->evals, "eval_s", pg->eval_s,
        "pop_s", pg->pop_s, "cores", (int)ncpu);
    json_t *cpu = json_object();
    int bad = !o || !cpu;
    for (int i = 0; !bad && i < NDAEMONS; i++)
        bad |= json_object_set_new(cpu, r->kids[i].name, json_real(r->kids[i].cpu_s));
    if (!bad && have_cpu) {
        bad |= json_object_set_new(cpu, "other", json_real(other));
        bad |= json_object_set_new(cpu, "idle", json_real(idle));
    }
    if (!bad) {
        bad = json_object_set_new(o, "cpu_s", cpu) != 0; /* takes cpu, also on failure */
        cpu = NULL;
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/budget.json", r->run_dir);
    if (bad || json_dump_file(o, path, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) != 0)
        printf("    (%s not written)\n", path);
    json_decref(cpu);
    json_decref(o);
}

/* The summary: stats.json, the clients' accuracy, metrics.png, children that exited with
 * an error when stopped. */
static void s_summary(const s_run_t *r, const s_progress_t *pg)
{
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_read(r->stats_path, &st, &e);
    if (rc == -ENOENT) {
        printf("\nsummary: no aggregator stats (%s missing)\n", r->stats_path);
    } else if (rc != 0) {
        printf("\nsummary: no aggregator stats (%s)\n", e.msg);
    } else {
        printf("\nsummary (%s)\n", r->run_dir);
        s_summary_stats(r, pg, &st);
        s_summary_budget(r, pg, &st);
        if (pg->pop.pop_clients)
            printf("  clients' held-out accuracy (v%llu): mean %.4f, worst %.4f (client %u), "
                   "10th percentile %.4f, %.0f%% below %.2f\n",
                   (unsigned long long)pg->pop.version, pg->pop.pop_mean, pg->pop.pop_min,
                   pg->pop.pop_worst, pg->pop.pop_p10, 100.0 * pg->pop.pop_below,
                   pg->pop.pop_threshold);
        printf("  bytes received by the aggregator: %llu\n",
               (unsigned long long)st.bytes_received);
        for (int i = 0; i < st.nencodings; i++) {
            const fm_stats_encoding_t *x = &st.encodings[i];
            printf("  updates folded as %s: %llu, %llu bytes (%.0f bytes per update)\n", x->name,
                   (unsigned long long)x->updates, (unsigned long long)x->bytes,
                   x->updates ? (double)x->bytes / (double)x->updates : 0.0);
        }
    }
    char png[PATH_MAX + 32], perr[512];
    snprintf(png, sizeof png, "%s/metrics.png", r->run_dir);
    const char *files[1] = {r->metrics};
    if (access(r->metrics, R_OK) == 0) {
        if (fm_plot_files(files, NULL, 1, png, r->args.config_path, FM_PLOT_X_BOTH, perr,
                          sizeof perr) == 0)
            printf("  plot: %s\n", png);
        else
            printf("  plot not drawn: %s\n", perr);
    }
    for (int i = 0; i < NDAEMONS; i++) {
        const s_child_t *k = &r->kids[i];
        if (!k->died && k->name && WIFEXITED(k->status) && WEXITSTATUS(k->status) != 0)
            printf("  %s exited with status %d when stopped (see %s/%s.log)\n", k->name,
                   WEXITSTATUS(k->status), r->run_dir, k->name);
    }
}

/* ---- the command ---------------------------------------------------------------------- */

int fm_cli_run(int argc, char **argv)
{
    s_run_t *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "fedmq run: out of memory\n");
        return FM_EXIT_RUNTIME;
    }
    int rc = s_parse_flags(r, argc, argv);
    if (rc != 0) {
        rc = rc < 0 ? FM_EXIT_OK : rc;
        goto cleanup;
    }
    if ((rc = s_prepare(r)) != 0)
        goto cleanup;
    fm_daemon_signals();
    s_progress_t pg = {.start = fm_daemon_now(), .target_time = -1.0};
    s_machine_cpu(pg.cpu0);
    if ((rc = s_start_children(r)) != 0) {
        s_stop_all(r);
        goto cleanup;
    }
    const fm_cfg_federation_t *fed = &r->cfg.federation;
    printf("fedmq run: %s, model %s, %d clients (%s), target accuracy %g, limit %.0f s\n",
           r->args.config_path, fed->model, fed->num_clients, fed->partition,
           fed->target_accuracy, fed->time_limit_s);
    printf("fedmq run: state and logs in %s/\n", r->run_dir);
    fflush(stdout);
    s_stop_t why = s_follow(r, &pg);
    pg.followed = fm_daemon_now() - pg.start;
    s_machine_cpu(pg.cpu1);
    s_stop_all(r);
    if ((rc = s_report_deaths(r)) == FM_EXIT_OK)
        rc = why == S_STOP_TARGET ? FM_EXIT_OK : FM_EXIT_RUNTIME;
    s_summary(r, &pg);
cleanup:
    free(r);
    return rc;
}
