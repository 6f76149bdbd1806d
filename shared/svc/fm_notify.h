/* fm_notify: systemd's service notifications (sd_notify(3), libsystemd), for units of
 * Type=notify with WatchdogSec=. Every function is a no-op when the process was not started
 * with NOTIFY_SOCKET (a terminal, `fedmq run`, the tests) and never fails the daemon: a lost
 * notification is systemd's timeout to report, not ours. NOTIFY_SOCKET is left in the
 * environment (sd_notify's unset_environment = 0), so every call can send.
 *
 * The skeleton sends them, no daemon does (docs/OPERATIONS.md, "systemd notifications"):
 * fm_loop sends READY=1 with the first STATUS= when its first run starts (sockets bound,
 * config checked, state loaded), STATUS= every FM_LOOP_STATUS_S, WATCHDOG=1 at half of
 * WATCHDOG_USEC, RELOADING=1 ... READY=1 around the reload hook, STOPPING=1 when it returns;
 * fm_daemon_main sends STATUS= with the reason when the server cannot start.
 * Thread-safe (each call is one datagram); the daemons call them from the main thread. */
#ifndef FM_NOTIFY_H
#define FM_NOTIFY_H

#include <stdint.h>

/* READY=1, with STATUS=status when `status` is not NULL or empty (one datagram; the status
 * as fm_notify_status writes it). */
void fm_notify_ready(const char *status);

/* STATUS=<printf text> (one line: newlines become spaces; at most 255 bytes). */
void fm_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1: the main loop is alive. */
void fm_notify_watchdog(void);

/* STOPPING=1 (and STATUS=stopping): the drain has started. */
void fm_notify_stopping(void);

/* RELOADING=1 with MONOTONIC_USEC=now (systemd >= 253 wants it for Type=notify-reload; older
 * ones ignore it). Follow with fm_notify_ready once the reload is done or refused. */
void fm_notify_reloading(void);

/* The watchdog interval systemd asked for (WATCHDOG_USEC, for this pid if WATCHDOG_PID is
 * set; sd_watchdog_enabled), in microseconds; 0 when there is no watchdog. Ping at half of
 * it. */
uint64_t fm_notify_watchdog_usec(void);

#endif
