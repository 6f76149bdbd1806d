/* fm_daemon: what every fedmq daemon shares: signal flags, the command line
 * (--config FILE, --set section.key=value, --log-level, --help), config loading.
 *
 * Daemons never fork or daemonize (systemd supervises). Signal handlers only set flags:
 * SIGINT/SIGTERM request a clean stop, SIGHUP a reload; SIGPIPE is ignored. These flags
 * are the only global mutable state of a daemon. CZMQ's own signal handling is disabled
 * (fm_daemon_signals calls zsys_handler_set(NULL) before any socket exists).
 *
 * systemd: the server's fm_loop sends READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and
 * STOPPING=1 (fm_loop.h, fm_notify.h); fm_daemon_main sends STATUS= with the reason when the
 * server cannot start. */
#ifndef FM_DAEMON_H
#define FM_DAEMON_H

#include <stdbool.h>
#include <stdio.h>

#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_metrics.h"
#include "fm_sec.h"

/* Open files (RLIMIT_NOFILE): every connection a daemon accepts is a file descriptor, and the
 * usual soft limit (1024) stops a broker near 1,000 subscribers. fm_daemon_main raises the
 * soft limit to the hard one at start (the packaged units of the broker and the aggregator
 * set LimitNOFILE=65536), or to FM_DAEMON_NOFILE_WANT when the hard one is unlimited, and warns
 * when the result is below FM_DAEMON_NOFILE_FLOOR. */
#define FM_DAEMON_NOFILE_WANT 65536
#define FM_DAEMON_NOFILE_FLOOR 4096

/* Install the handlers. Call once at start, before creating sockets or threads. */
void fm_daemon_signals(void);

/* The environment variable through which `fedmq run` names itself to its daemons. */
#define FM_DAEMON_PARENT_ENV "FEDMQ_PARENT_PID"

/* Under a runner: when FM_DAEMON_PARENT_ENV holds a pid, ask the kernel for SIGTERM when the
 * parent dies (PR_SET_PDEATHSIG: a runner killed by SIGKILL leaves no daemon behind; the
 * daemon stops as on any SIGTERM), and request a stop at once when the parent is already
 * gone (getppid differs). Unset or empty: nothing (systemd, a shell). A value that is not a
 * pid > 1: -1 and one line in `e`; the caller logs it and runs on. 0 otherwise. Call after
 * fm_daemon_signals. */
int fm_daemon_follow_parent(fm_errmsg_t *e);

/* 1 once SIGINT or SIGTERM arrived (or fm_daemon_request_stop was called). */
int fm_daemon_stopping(void);

/* Ask the daemon to stop as if signalled (from the daemon's own code, e.g. a limit). */
void fm_daemon_request_stop(void);

/* 1 if SIGHUP arrived since the last call (the flag is cleared). */
int fm_daemon_take_reload(void);

/* The common command line of a daemon. */
typedef struct {
    const char *config_path; /* --config FILE, NULL = defaults only */
    const char *sets[64];    /* --set section.key=value, in order */
    int nsets;
    int log_level; /* --log-level, -1 = from the config */
} fm_daemon_args_t;

/* Parse argv for `prog` (e.g. "fedmq-broker"). Returns 0, 1 after printing help (the
 * caller exits 0), or 2 after printing a one-line error to stderr (the caller exits 2).
 * `usage` prints the daemon's help text (after the common options it may list its own
 * config keys). argv strings are borrowed. */
int fm_daemon_parse_args(const char *prog, int argc, char **argv, fm_daemon_args_t *a,
                         void (*usage)(FILE *f));

/* defaults -> file (if any) -> --set overrides -> cross-key checks. 0, or an error with
 * a one-line message (file, line, key, reason). On error *cfg is unchanged. */
int fm_daemon_load_config(fm_config_t *cfg, const fm_daemon_args_t *a, fm_errmsg_t *e);

/* Takes what a daemon uses of a reloaded config `fresh` (borrowed for the call): usually
 * copies it over the running one, plus side effects (reopen a file, reschedule a timer).
 * 0, or an error with `e` (then the running config stays, and nothing must have changed). */
typedef int (*fm_daemon_apply_fn)(void *arg, const fm_config_t *fresh, fm_errmsg_t *e);

/* SIGHUP: build a fresh config from the same command line (fm_daemon_load_config); refuse
 * it if it is invalid or a non-reloadable key differs from `running` (fm_cfg_check_reload),
 * else call apply(arg, fresh), then set the log threshold from the key `log_level_key`
 * (e.g. "broker.log_level") unless --log-level was given. Logs one line: "SIGHUP: config
 * reloaded; changed: key old -> new, ..." (NOTICE) or "SIGHUP: config not reloaded, the
 * running one is kept: reason" (ERR). `args` NULL: nothing to reload from (logged).
 * 0 if applied, else the error (already logged). */
int fm_daemon_reload(const fm_config_t *running, const fm_daemon_args_t *args,
                     const char *log_level_key, fm_daemon_apply_fn apply, void *arg);

/* The exit code for a failure while a daemon starts (after its config was loaded):
 * FM_EXIT_INPUT for FM_EARG (a value the config checks could not judge alone, e.g. a client
 * range beyond num_clients), FM_EXIT_RUNTIME for everything else (port in use, missing or
 * unreadable data, unwritable file, out of memory). */
int fm_daemon_exit_code(int err);

/* One daemon, as fm_daemon_main runs it. The three functions wrap the daemon's CLASS
 * constructor, run and destroy (typed wrappers: a function pointer cast would be UB). */
typedef struct {
    const char *prog;          /* "fedmq-broker": log tag and the prefix of early errors */
    void (*usage)(FILE *f);    /* --help */
    const char *log_level_key; /* "broker.log_level" (--log-level wins) */
    const char *metrics_key;   /* "broker.metrics_addr": where /metrics is served */
    const char *nice_key;      /* "evaluator.nice": the nice value the process raises itself to
                                  before it starts a thread (never lowers it), NULL = none */
    bool blas;                 /* trains or scores: fm_blas_setup first, self-check after new */
    fm_sec_role_t sec_role;    /* which key of [security] is this daemon's */
    /* The server from the config (cfg, args: borrowed for the process's life). It registers
     * its metrics in `metrics` (borrowed: outlives the server; never NULL here) and updates
     * them from any of its threads. Its sockets are secured by `sec` (borrowed: outlives
     * the server; never NULL here; mode none secures nothing). NULL on failure with *err and
     * a one-line `e` (exit code from fm_daemon_exit_code). */
    void *(*server_new)(const fm_config_t *cfg, const fm_daemon_args_t *args,
                        fm_metrics_t *metrics, fm_sec_t *sec, int *err, fm_errmsg_t *e);
    int (*server_run)(void *server); /* until SIGINT/SIGTERM; 0 after a clean stop */
    void (*server_destroy)(void *server);
} fm_daemon_t;

/* The whole main() of a daemon: [BLAS setup,] command line, config, log, signals, the open
 * files limit (FM_DAEMON_NOFILE_WANT above), [the nice value of `nice_key`: every thread
 * started after it inherits it], the metric registry with the process metrics
 * (fm_metrics_proc), the security ([security]: keys and the ZAP handler, fm_sec; a missing or bad
 * key exits like a bad config), the server, /metrics on the address of `metrics_key` unless it is
 * off (fm_metrics_http: its own thread), [BLAS self-check,] run (its fm_loop talks to systemd:
 * fm_notify), then /metrics stopped, the server destroyed, the registry freed. Returns the exit
 * code: FM_EXIT_OK after --help or a clean stop; FM_EXIT_INPUT after a bad command line or config
 * (one line on stderr: "prog: reason"); FM_EXIT_RUNTIME (or fm_daemon_exit_code of the
 * constructor's error) when the server or /metrics cannot start (e.g. its port is in use) or the
 * server cannot run (one log line). */
int fm_daemon_main(const fm_daemon_t *d, int argc, char **argv);

/* Seconds on the monotonic clock. */
double fm_daemon_now(void);

/* Seconds since the Unix epoch (wall clock, for timestamps in messages). */
double fm_daemon_wallclock(void);

#endif
