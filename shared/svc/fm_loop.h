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
 * Single-threaded: a loop and its callbacks belong to the thread that runs it. */
#ifndef FM_LOOP_H
#define FM_LOOP_H

#include <czmq.h>

#include "fm_err.h"

#define FM_LOOP_TICK_MS 100 /* longest poll: bounds the reaction to a stop request */
#define FM_LOOP_READERS_MAX 8
#define FM_LOOP_TIMERS_MAX 8

typedef struct fm_loop fm_loop_t;

/* A socket has a message waiting (read at least one, or it is reported again). */
typedef int (*fm_loop_reader_fn)(void *arg, zsock_t *sock);
/* A timer is due. */
typedef int (*fm_loop_timer_fn)(void *arg);
/* SIGHUP arrived (typically calls fm_daemon_reload). */
typedef void (*fm_loop_reload_fn)(void *arg);

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

/* Run until fm_daemon_stopping() (returns 0) or a handler returns nonzero (returns that
 * value). -errno if zmq_poll fails for a reason other than a signal (ETERM: the context was
 * terminated). May be called again after it returned. */
int fm_loop_run(fm_loop_t *self);

#endif
