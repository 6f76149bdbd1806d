#include "fm_daemon.h"

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fm_blas.h"
#include "fm_log.h"
#include "fm_metrics_http.h"
#include "fm_metrics_proc.h"
#include "fm_notify.h"

/* The only global mutable state of a daemon: written by signal handlers. */
static volatile sig_atomic_t s_stop = 0;
static volatile sig_atomic_t s_reload = 0;

static void s_on_stop(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_on_reload(int sig)
{
    (void)sig;
    s_reload = 1;
}

void fm_daemon_signals(void)
{
    zsys_handler_set(NULL); /* CZMQ must not install its own SIGINT/SIGTERM handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = s_on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = s_on_reload;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

int fm_daemon_follow_parent(fm_errmsg_t *e)
{
    const char *v = getenv(FM_DAEMON_PARENT_ENV);
    if (!v || !*v)
        return 0;
    char *end = NULL;
    errno = 0;
    long pid = strtol(v, &end, 10);
    if (errno || *end || pid <= 1 || pid != (pid_t)pid) {
        fm_errmsg_set(e, FM_EARG, "%s=%.32s: not a process id, ignored", FM_DAEMON_PARENT_ENV, v);
        return -1;
    }
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        fm_errmsg_set(e, FM_EARG, "%s: PR_SET_PDEATHSIG: %s", FM_DAEMON_PARENT_ENV,
                      strerror(errno));
        return -1;
    }
    if (getppid() != (pid_t)pid) /* the parent died before the request: stop now */
        s_stop = 1;
    return 0;
}

int fm_daemon_stopping(void) { return s_stop != 0; }
void fm_daemon_request_stop(void) { s_stop = 1; }

int fm_daemon_take_reload(void)
{
    if (!s_reload)
        return 0;
    s_reload = 0;
    return 1;
}

int fm_daemon_parse_args(const char *prog, int argc, char **argv, fm_daemon_args_t *a,
                         void (*usage)(FILE *f))
{
    static const struct option longopts[] = {{"config", required_argument, 0, 'c'},
                                             {"set", required_argument, 0, 's'},
                                             {"log-level", required_argument, 0, 'l'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->log_level = -1;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":c:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': a->config_path = optarg; break;
        case 's':
            if (a->nsets >= (int)(sizeof a->sets / sizeof a->sets[0])) {
                fprintf(stderr, "%s: --set: too many overrides (at most 64)\n", prog);
                return 2;
            }
            a->sets[a->nsets++] = optarg;
            break;
        case 'l':
            a->log_level = fm_log_parse_level(optarg);
            if (a->log_level < 0) {
                fprintf(stderr,
                        "%s: --log-level: '%s' is not one of error, warning, notice, "
                        "info, debug\n",
                        prog, optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 1;
        case ':': fprintf(stderr, "%s: %s: missing value\n", prog, argv[optind - 1]); return 2;
        default:
            if (optopt)
                fprintf(stderr, "%s: -%c: unknown option (see %s --help)\n", prog, optopt, prog);
            else
                fprintf(stderr, "%s: %s: unknown option (see %s --help)\n", prog,
                        argv[optind - 1], prog);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", prog, argv[optind],
                prog);
        return 2;
    }
    return 0;
}

int fm_daemon_load_config(fm_config_t *cfg, const fm_daemon_args_t *a, fm_errmsg_t *e)
{
    fm_config_t fresh;
    fm_cfg_defaults(&fresh);
    int rc;
    if (a->config_path && (rc = fm_cfg_load(&fresh, a->config_path, e)) != 0)
        return rc;
    for (int i = 0; i < a->nsets; i++)
        if ((rc = fm_cfg_set(&fresh, a->sets[i], NULL, e)) != 0)
            return rc;
    if ((rc = fm_cfg_check(&fresh, e)) != 0)
        return rc;
    *cfg = fresh;
    return 0;
}

int fm_daemon_reload(const fm_config_t *running, const fm_daemon_args_t *args,
                     const char *log_level_key, fm_daemon_apply_fn apply, void *arg)
{
    fm_config_t fresh;
    fm_errmsg_t e = {{0}};
    int rc;
    if (!args) {
        FM_LOG(LOG_NOTICE, "SIGHUP: no command line to reload the config from; ignored");
        return FM_EARG;
    }
    char *changed = NULL;
    if ((rc = fm_daemon_load_config(&fresh, args, &e)) == 0 &&
        (rc = fm_cfg_check_reload(running, &fresh, &e)) == 0) {
        /* before apply overwrites `running` */
        if (fm_cfg_diff(running, &fresh, &changed) < 0)
            rc = fm_errmsg_set(&e, -ENOMEM, "out of memory");
        else if (apply)
            rc = apply(arg, &fresh, &e);
    }
    if (rc != 0) {
        FM_LOG(LOG_ERR, "SIGHUP: config not reloaded, the running one is kept: %s", e.msg);
        free(changed);
        return rc;
    }
    FM_LOG(LOG_NOTICE, "SIGHUP: config reloaded; %s%s",
           changed[0] ? "changed: " : "no key changed", changed);
    free(changed);
    char level[32];
    if (args->log_level < 0 && log_level_key &&
        fm_cfg_get(&fresh, log_level_key, level, sizeof level, NULL) == 0)
        fm_log_set_level(fm_log_parse_level(level));
    return 0;
}

/* /metrics on the address of d->metrics_key, unless it is off: FM_EXIT_OK, or
 * FM_EXIT_RUNTIME after one log line (port in use, ...). */
static int s_metrics_start(const fm_daemon_t *d, const fm_config_t *cfg, fm_metrics_t *metrics,
                           fm_metrics_http_t **http)
{
    char addr[FM_CFG_STR_MAX];
    fm_metrics_addr_t a;
    fm_errmsg_t e = {{0}};
    int err = 0;
    if (!d->metrics_key || fm_cfg_get(cfg, d->metrics_key, addr, sizeof addr, &e) != 0 ||
        fm_metrics_addr_parse(addr, &a, NULL, 0) != 0 || !a.enabled) {
        FM_LOG(LOG_INFO, "metrics: /metrics is off");
        return FM_EXIT_OK;
    }
    if (!(*http = fm_metrics_http_start(metrics, d->metrics_key, addr, &err, &e))) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        return FM_EXIT_RUNTIME;
    }
    FM_LOG(LOG_INFO, "metrics: serving http://%s/metrics", addr);
    return FM_EXIT_OK;
}

/* RLIMIT_NOFILE: raise the soft limit to the hard one (RLIM_INFINITY: FM_DAEMON_NOFILE_WANT),
 * one DEBUG line when raised; one WARNING when it stays below FM_DAEMON_NOFILE_FLOOR. */
static void s_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? FM_DAEMON_NOFILE_WANT : rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit up = {.rlim_cur = want, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            FM_LOG(LOG_DEBUG, "open files: soft limit raised from %llu to %llu",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)want);
            rl.rlim_cur = want;
        } else {
            FM_LOG(LOG_WARNING, "open files: cannot raise the soft limit from %llu to %llu: %s",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)want, strerror(errno));
        }
    } else {
        FM_LOG(LOG_DEBUG, "open files: soft limit %llu", (unsigned long long)rl.rlim_cur);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < FM_DAEMON_NOFILE_FLOOR)
        FM_LOG(LOG_WARNING,
               "open files: the limit is %llu (hard %llu): fewer than that many trainers and "
               "subscribers can connect; raise LimitNOFILE= (or ulimit -Hn) to %d or more",
               (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
               FM_DAEMON_NOFILE_FLOOR);
}

/* Raise this thread's nice value (Linux: per thread, inherited by the threads it starts) to
 * the config key `key`'s; never lowered (an operator's higher value stands). A failure is
 * logged and not fatal: the daemon runs at the priority it was started with. */
static void s_nice(const fm_config_t *cfg, const char *key)
{
    char v[32];
    if (!key || fm_cfg_get(cfg, key, v, sizeof v, NULL) != 0)
        return;
    int want = atoi(v);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, 0);
    if (cur == -1 && errno != 0) {
        FM_LOG(LOG_WARNING, "%s = %d: cannot read the nice value: %s", key, want,
               strerror(errno));
        return;
    }
    if (want <= cur)
        return;
    if (setpriority(PRIO_PROCESS, 0, want) != 0)
        FM_LOG(LOG_WARNING, "%s = %d: not applied: %s", key, want, strerror(errno));
    else
        FM_LOG(LOG_DEBUG, "nice %d (%s)", want, key);
}

int fm_daemon_main(const fm_daemon_t *d, int argc, char **argv)
{
    if (d->blas)
        fm_blas_setup(argv);
    fm_daemon_args_t args;
    int rc = fm_daemon_parse_args(d->prog, argc, argv, &args, d->usage);
    if (rc != 0)
        return rc == 1 ? FM_EXIT_OK : FM_EXIT_INPUT;
    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    char level[32];
    if (fm_daemon_load_config(&cfg, &args, &e) != 0 ||
        fm_cfg_get(&cfg, d->log_level_key, level, sizeof level, &e) != 0) {
        fprintf(stderr, "%s: %s\n", d->prog, e.msg);
        return FM_EXIT_INPUT;
    }
    fm_log_init(d->prog, args.log_level >= 0 ? args.log_level : fm_log_parse_level(level));
    fm_daemon_signals();
    if (fm_daemon_follow_parent(&e) != 0)
        FM_LOG(LOG_WARNING, "%s", e.msg);
    else if (fm_daemon_stopping())
        FM_LOG(LOG_WARNING, "the runner that started this daemon (%s) is gone: stopping",
               FM_DAEMON_PARENT_ENV);
    s_nofile();
    s_nice(&cfg, d->nice_key);
    int err = 0;
    fm_metrics_t *metrics = fm_metrics_new(&err);
    fm_metrics_http_t *http = NULL;
    fm_sec_t *sec = NULL;
    void *server = NULL;
    if (!metrics || (err = fm_metrics_proc_register(metrics)) != 0) {
        FM_LOG(LOG_ERR, "metrics: %s", fm_strerror(err));
        fm_notify_status("cannot start: metrics: %s", fm_strerror(err));
        rc = FM_EXIT_RUNTIME;
        goto cleanup;
    }
    if (!(sec = fm_sec_new(&cfg, d->sec_role, &err, &e))) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        fm_notify_status("cannot start: %s", e.msg);
        rc = fm_daemon_exit_code(err);
        goto cleanup;
    }
    if (!(server = d->server_new(&cfg, &args, metrics, sec, &err, &e))) {
        FM_LOG(LOG_ERR, "%s", e.msg);
        fm_notify_status("cannot start: %s", e.msg);
        rc = fm_daemon_exit_code(err);
        goto cleanup;
    }
    if (!fm_sec_curve(sec))
        FM_LOG(LOG_WARNING, "[security] mode = none: sockets are neither authenticated nor "
                            "encrypted; use it only on a trusted host or network");
    if ((rc = s_metrics_start(d, &cfg, metrics, &http)) != FM_EXIT_OK) {
        fm_notify_status("cannot start: /metrics (see the log)");
        goto cleanup;
    }
    if (d->blas) {
        char desc[256];
        FM_LOG(LOG_INFO, "%s", fm_blas_describe(desc, sizeof desc));
        if (fm_blas_selfcheck(&e) != 0) {
            FM_LOG(LOG_ERR, "BLAS self-check failed, refusing to run: %s", e.msg);
            fm_notify_status("cannot start: BLAS self-check failed: %s", e.msg);
            rc = FM_EXIT_RUNTIME;
            goto cleanup;
        }
    }
    /* READY=1, WATCHDOG=1, STATUS=, RELOADING=1 and STOPPING=1 come from the server's loop
     * (fm_loop.h): READY=1 once its run has set everything up, /metrics included */
    rc = d->server_run(server) == 0 ? FM_EXIT_OK : FM_EXIT_RUNTIME;
cleanup:
    fm_metrics_http_stop(&http); /* no render runs past this: the server may go */
    if (server)
        d->server_destroy(server);
    fm_sec_destroy(&sec); /* after every socket it secured */
    fm_metrics_destroy(&metrics);
    return rc;
}

int fm_daemon_exit_code(int err) { return err == FM_EARG ? FM_EXIT_INPUT : FM_EXIT_RUNTIME; }

double fm_daemon_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

double fm_daemon_wallclock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
