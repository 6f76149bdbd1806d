/* fm_loop: the reactor every fedmq daemon runs (docs/ARCHITECTURE.md, "Daemon skeleton").
 *
 * Readers (a callback per socket, called when the socket has a message waiting), periodic
 * timers, and the signal flags of fm_daemon: the loop returns once fm_daemon_stopping() and
 * calls the reload hook after each SIGHUP. One zmq_poll per iteration; its timeout is the
 * time to the next timer, at most FM_LOOP_TICK_MS: a signal normally interrupts the poll
 * (EINTR) and is seen at once, and the tick bounds the delay when the signal was delivered
 * to another thread of the process. Every ready reader is called once per iteration (no
 * socket starves the others), then every timer that is due.
 *
 * Handlers return 0 to go on; any other value ends fm_loop_run, which returns it.
 * Single-threaded: a loop and its callbacks belong to the thread that runs it.
 *
 * systemd (fm_notify; all no-ops without NOTIFY_SOCKET): a daemon's loop is its main loop,
 * so the loop speaks for the daemon. The first fm_loop_run of a loop sends READY=1
 * (everything before it, in the server's constructor and run, is set up: sockets bound,
 * config checked, checkpoint loaded) with the first STATUS= from the status hook; then
 * STATUS= every FM_LOOP_STATUS_S; WATCHDOG=1 at half of WATCHDOG_USEC (read at the first
 * run) from the loop itself, between handlers, so a handler that never returns stops the
 * pings and systemd restarts the daemon (WatchdogSec= must exceed the longest handler:
 * the evaluator scoring one model, the aggregator writing a checkpoint); RELOADING=1 before
 * the reload hook and READY=1 (with a fresh STATUS=) after it, whether the reload was
 * applied or refused; STOPPING=1 when fm_loop_run returns (the daemon's drain follows).
 *
 * Test hook (compiled only with the CMake option FM_TEST_HOOKS, ON by default and OFF in
 * packages): FEDMQ_TEST_WEDGE_AFTER_S=N in the environment wedges the loop N seconds after
 * its first run started: it logs one warning and then blocks for good (pause(), no
 * handler, no watchdog ping, signals only set their flags), as a deadlocked daemon would;
 * only SIGKILL ends it. tests/integration/notify_test.c uses it to show that the watchdog
 * pings stop. A value that is not a number in [0, 1e6] is ignored with a warning. */
#ifndef FM_LOOP_H
#define FM_LOOP_H

#include <czmq.h>

#include "fm_err.h"

#define FM_LOOP_TICK_MS 100 /* longest poll: bounds the reaction to a stop request */
#define FM_LOOP_READERS_MAX 8
#define FM_LOOP_TIMERS_MAX 8
#define FM_LOOP_STATUS_S 2.0 /* STATUS= refresh period (with NOTIFY_SOCKET) */

typedef struct fm_loop fm_loop_t;

/* A socket has a message waiting (read at least one, or it is reported again). */
typedef int (*fm_loop_reader_fn)(void *arg, zsock_t *sock);
/* A timer is due. */
typedef int (*fm_loop_timer_fn)(void *arg);
/* SIGHUP arrived (typically calls fm_daemon_reload). */
typedef void (*fm_loop_reload_fn)(void *arg);
/* The daemon's live counters in one line (NUL-terminated, at most cap bytes), e.g.
 * "version 12, 3.4 updates/s, 8 clients live, 2 rejected": systemd's STATUS=. */
typedef void (*fm_loop_status_fn)(void *arg, char *buf, size_t cap);

/* An empty loop. NULL with -ENOMEM in `e` on failure. Caller owns it: fm_loop_destroy(). */
fm_loop_t *fm_loop_new(fm_errmsg_t *e);

/* Free the loop (not the sockets: readers are borrowed), NULL *p; idempotent. */
void fm_loop_destroy(fm_loop_t **p);

/* Call fn(arg, sock) whenever `sock` (borrowed, must outlive the loop's runs) has a message.
 * Readers are polled in the order they were added. 0, or -ENOSPC (FM_LOOP_READERS_MAX). */
int fm_loop_reader(fm_loop_t *self, zsock_t *sock, fm_loop_reader_fn fn, void *arg);

/* Call fn(arg) every interval_s seconds, the first time first_s seconds after the call (0:
 * at the first iteration). Returns the timer's id (>= 0) for fm_loop_timer_set, or -ENOSPC
 * (FM_LOOP_TIMERS_MAX), FM_ERANGE (interval_s not > 0 or first_s < 0, or not finite). */
int fm_loop_timer(fm_loop_t *self, double interval_s, double first_s, fm_loop_timer_fn fn,
                  void *arg);

/* From now on timer `id` fires every interval_s, the next time interval_s from now (also
 * from inside its own callback: a back-off, or a reloaded period). 0, FM_EARG (no such
 * timer) or FM_ERANGE. */
int fm_loop_timer_set(fm_loop_t *self, int id, double interval_s);

/* Call fn(arg) after each SIGHUP (fm_daemon_take_reload), before the next poll. Without a
 * hook a SIGHUP is taken and ignored. */
void fm_loop_on_reload(fm_loop_t *self, fm_loop_reload_fn fn, void *arg);

/* Call fn(arg, buf, cap) for each STATUS= sent (with READY=1, every FM_LOOP_STATUS_S, after a
 * reload). Without a hook READY=1 goes without STATUS= and none is refreshed. */
void fm_loop_on_status(fm_loop_t *self, fm_loop_status_fn fn, void *arg);

/* Run until fm_daemon_stopping() (returns 0) or a handler returns nonzero (returns that
 * value). -errno if zmq_poll fails for a reason other than a signal (ETERM: the context was
 * terminated). May be called again after it returned (READY=1 is sent by the first run
 * only; STOPPING=1 on every return). */
int fm_loop_run(fm_loop_t *self);

#endif
