/* fm_daemon: what every fedmq daemon shares: signal flags, the command line
 * (--config FILE, --set section.key=value, --log-level, --help), config loading.
 *
 * Daemons never fork or daemonize (systemd supervises). Signal handlers only set flags:
 * SIGINT/SIGTERM request a clean stop, SIGHUP a reload; SIGPIPE is ignored. These flags
 * are the only global mutable state of a daemon. CZMQ's own signal handling is disabled
 * (fm_daemon_signals calls zsys_handler_set(NULL) before any socket exists). */
#ifndef FM_DAEMON_H
#define FM_DAEMON_H

#include <stdio.h>

#include "fm_cfg.h"
#include "fm_err.h"

/* Install the handlers. Call once at start, before creating sockets or threads. */
void fm_daemon_signals(void);

/* 1 once SIGINT or SIGTERM arrived (or fm_daemon_request_stop was called). */
int fm_daemon_stopping(void);

/* Ask the daemon to stop as if signalled (from the daemon's own code, e.g. a limit). */
void fm_daemon_request_stop(void);

/* 1 if SIGHUP arrived since the last call (the flag is cleared). */
int fm_daemon_take_reload(void);

/* The common command line of a daemon. */
typedef struct {
    const char *config_path;  /* --config FILE, NULL = defaults only */
    const char *sets[64];     /* --set section.key=value, in order */
    int nsets;
    int log_level;            /* --log-level, -1 = from the config */
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

/* Seconds on the monotonic clock. */
double fm_daemon_now(void);

/* Seconds since the Unix epoch (wall clock, for timestamps in messages). */
double fm_daemon_wallclock(void);

#endif
