#include "fm_loop.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "fm_daemon.h"

typedef struct {
    zsock_t *sock;
    fm_loop_reader_fn fn;
    void *arg;
} s_reader_t;

typedef struct {
    double interval; /* seconds */
    double due;      /* monotonic seconds */
    fm_loop_timer_fn fn;
    void *arg;
} s_timer_t;

struct fm_loop {
    s_reader_t readers[FM_LOOP_READERS_MAX];
    zmq_pollitem_t items[FM_LOOP_READERS_MAX];
    int nreaders;
    s_timer_t timers[FM_LOOP_TIMERS_MAX];
    int ntimers;
    fm_loop_reload_fn reload;
    void *reload_arg;
};

fm_loop_t *fm_loop_new(fm_errmsg_t *e)
{
    fm_loop_t *self = calloc(1, sizeof *self);
    if (!self)
        fm_errmsg_set(e, -ENOMEM, "loop: out of memory");
    return self;
}

void fm_loop_destroy(fm_loop_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

int fm_loop_reader(fm_loop_t *self, zsock_t *sock, fm_loop_reader_fn fn, void *arg)
{
    if (self->nreaders >= FM_LOOP_READERS_MAX)
        return -ENOSPC;
    int i = self->nreaders++;
    self->readers[i] = (s_reader_t){sock, fn, arg};
    self->items[i] = (zmq_pollitem_t){zsock_resolve(sock), 0, ZMQ_POLLIN, 0};
    return 0;
}

static int s_valid_interval(double s) { return isfinite(s) && s > 0; }

int fm_loop_timer(fm_loop_t *self, double interval_s, double first_s, fm_loop_timer_fn fn,
                  void *arg)
{
    if (!s_valid_interval(interval_s) || !isfinite(first_s) || first_s < 0)
        return FM_ERANGE;
    if (self->ntimers >= FM_LOOP_TIMERS_MAX)
        return -ENOSPC;
    int id = self->ntimers++;
    self->timers[id] = (s_timer_t){interval_s, fm_daemon_now() + first_s, fn, arg};
    return id;
}

int fm_loop_timer_set(fm_loop_t *self, int id, double interval_s)
{
    if (id < 0 || id >= self->ntimers)
        return FM_EARG;
    if (!s_valid_interval(interval_s))
        return FM_ERANGE;
    self->timers[id].interval = interval_s;
    self->timers[id].due = fm_daemon_now() + interval_s;
    return 0;
}

void fm_loop_on_reload(fm_loop_t *self, fm_loop_reload_fn fn, void *arg)
{
    self->reload = fn;
    self->reload_arg = arg;
}

/* Milliseconds until the next timer, rounded up (a timer never fires early), at most
 * FM_LOOP_TICK_MS. */
static long s_timeout_ms(const fm_loop_t *self, double now)
{
    double next = now + FM_LOOP_TICK_MS / 1000.0;
    for (int i = 0; i < self->ntimers; i++)
        if (self->timers[i].due < next)
            next = self->timers[i].due;
    double ms = ceil((next - now) * 1000.0);
    return ms > 0 ? (long)ms : 0;
}

/* Fire every due timer once. 0, or the first nonzero a callback returned. */
static int s_fire_timers(fm_loop_t *self)
{
    double now = fm_daemon_now();
    for (int i = 0; i < self->ntimers; i++) {
        s_timer_t *t = &self->timers[i];
        if (t->due > now)
            continue;
        t->due = now + t->interval; /* before the call: the callback may reschedule */
        int rc = t->fn(t->arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int fm_loop_run(fm_loop_t *self)
{
    while (!fm_daemon_stopping()) {
        if (fm_daemon_take_reload() && self->reload)
            self->reload(self->reload_arg);
        long timeout = s_timeout_ms(self, fm_daemon_now());
        int n = zmq_poll(self->items, self->nreaders, timeout);
        if (n < 0) {
            int en = zmq_errno();
            if (en == EINTR)
                continue;
            return -en;
        }
        for (int i = 0; n > 0 && i < self->nreaders; i++) {
            if (!(self->items[i].revents & ZMQ_POLLIN))
                continue;
            s_reader_t *r = &self->readers[i];
            int rc = r->fn(r->arg, r->sock);
            if (rc != 0)
                return rc;
        }
        int rc = s_fire_timers(self);
        if (rc != 0)
            return rc;
    }
    return 0;
}
