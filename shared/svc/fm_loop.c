#include "fm_loop.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "fm_daemon.h"
#include "fm_log.h"
#include "fm_notify.h"
#include "fm_parse.h"

#define S_STATUS_LEN 256

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
    fm_loop_status_fn status;
    void *status_arg;
    /* systemd, from the first run on (all times monotonic seconds; 0 = off) */
    int started;
    double watchdog_interval, watchdog_due;
    double status_due;
    double wedge_at; /* FEDMQ_TEST_WEDGE_AFTER_S (FM_TEST_HOOKS builds only) */
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

void fm_loop_on_status(fm_loop_t *self, fm_loop_status_fn fn, void *arg)
{
    self->status = fn;
    self->status_arg = arg;
}

/* ---- systemd: readiness, status, watchdog (fm_notify) ----------------------------------- */

/* The status hook's line into buf ("" without a hook). */
static void s_status_line(fm_loop_t *self, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (self->status)
        self->status(self->status_arg, buf, cap);
    buf[cap - 1] = '\0';
}

/* READY=1 with the current status; the next STATUS= one period later. */
static void s_ready(fm_loop_t *self, double now)
{
    char line[S_STATUS_LEN];
    s_status_line(self, line, sizeof line);
    fm_notify_ready(line);
    self->status_due = now + FM_LOOP_STATUS_S;
}

#ifdef FM_TEST_HOOKS
/* FEDMQ_TEST_WEDGE_AFTER_S: when the loop wedges (monotonic seconds), 0 = never. */
static double s_wedge_at(double now)
{
    const char *text = getenv("FEDMQ_TEST_WEDGE_AFTER_S");
    double after = 0;
    fm_errmsg_t e = {{0}};
    if (!text)
        return 0;
    if (fm_parse_float("FEDMQ_TEST_WEDGE_AFTER_S", text, 0, 1e6, &after, &e) != 0) {
        FM_LOG(LOG_WARNING, "test hook ignored: %s", e.msg);
        return 0;
    }
    FM_LOG(LOG_WARNING, "test hook: the loop wedges in %g s (FEDMQ_TEST_WEDGE_AFTER_S)", after);
    return now + after;
}

/* Block for good, as a deadlocked loop would: no handler, no ping; SIGKILL ends it. */
static void s_wedge(void)
{
    FM_LOG(LOG_WARNING, "test hook: the loop is wedged now (FEDMQ_TEST_WEDGE_AFTER_S): no "
                        "more watchdog pings");
    for (;;)
        pause();
}
#endif

/* The first run: READY=1, the watchdog period, the test hook. */
static void s_start(fm_loop_t *self, double now)
{
    self->started = 1;
    uint64_t usec = fm_notify_watchdog_usec();
    self->watchdog_interval = usec ? usec / 2e6 : 0;
    self->watchdog_due = now; /* the first ping at the first iteration */
#ifdef FM_TEST_HOOKS
    self->wedge_at = s_wedge_at(now);
#endif
    if (self->watchdog_interval > 0)
        FM_LOG(LOG_INFO, "systemd watchdog: %.3f s, pinged every %.3f s", usec / 1e6,
               self->watchdog_interval);
    s_ready(self, now);
}

/* What is due of the watchdog ping, the STATUS= refresh and the test hook. */
static void s_housekeeping(fm_loop_t *self, double now)
{
#ifdef FM_TEST_HOOKS
    if (self->wedge_at > 0 && now >= self->wedge_at)
        s_wedge();
#endif
    if (self->watchdog_interval > 0 && now >= self->watchdog_due) {
        fm_notify_watchdog();
        self->watchdog_due = now + self->watchdog_interval;
    }
    if (self->status && now >= self->status_due) {
        char line[S_STATUS_LEN];
        s_status_line(self, line, sizeof line);
        fm_notify_status("%s", line);
        self->status_due = now + FM_LOOP_STATUS_S;
    }
}

/* Milliseconds until the next timer, ping or status, rounded up (a timer never fires early),
 * at most FM_LOOP_TICK_MS. */
static long s_timeout_ms(const fm_loop_t *self, double now)
{
    double next = now + FM_LOOP_TICK_MS / 1000.0;
    for (int i = 0; i < self->ntimers; i++)
        if (self->timers[i].due < next)
            next = self->timers[i].due;
    if (self->watchdog_interval > 0 && self->watchdog_due < next)
        next = self->watchdog_due;
    if (self->status && self->status_due < next)
        next = self->status_due;
    if (self->wedge_at > 0 && self->wedge_at < next)
        next = self->wedge_at;
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

/* The loop proper. */
static int s_run(fm_loop_t *self)
{
    while (!fm_daemon_stopping()) {
        if (fm_daemon_take_reload()) {
            fm_notify_reloading();
            if (self->reload)
                self->reload(self->reload_arg);
            s_ready(self, fm_daemon_now()); /* applied or refused: running either way */
        }
        s_housekeeping(self, fm_daemon_now());
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

int fm_loop_run(fm_loop_t *self)
{
    if (!self->started)
        s_start(self, fm_daemon_now());
    int rc = s_run(self);
    fm_notify_stopping();
    return rc;
}
