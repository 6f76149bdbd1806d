/* Unit tests of fm_loop: timers fire periodically and never early, fm_loop_timer_set
 * reschedules from inside a callback (a back-off), readers are called when a message
 * waits and every ready reader is served in the same iteration (no socket starves
 * another), a handler's nonzero return ends the run with that value, argument errors, the
 * SIGHUP hook is called once per signal, and SIGTERM ends the run with 0 within the tick;
 * with NOTIFY_SOCKET (a datagram socket of the test) the loop sends READY=1 with the status
 * hook's line, WATCHDOG=1 at half of WATCHDOG_USEC (never early), RELOADING=1 then READY=1
 * around a SIGHUP, and STOPPING=1 when the run returns.
 * Timing bounds are one-sided (never early; late only within generous limits), so a
 * loaded machine does not make them flaky. The signal cases run last: the stop flag is
 * one-way. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <czmq.h>

#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_loop.h"

#define S_EPS 1e-4 /* clock reading slack, seconds */

typedef struct {
    fm_loop_t *loop;
    int id;
    int n, stop_at;
    double at[16];
    double backoff;
} s_timer_state_t;

static int s_tick(void *arg)
{
    s_timer_state_t *t = arg;
    if (t->n < 16)
        t->at[t->n] = fm_daemon_now();
    t->n++;
    return t->n >= t->stop_at ? 1 : 0;
}

static int s_count(void *arg)
{
    (*(int *)arg)++;
    return 0;
}

/* A 20 ms timer fires 8 times, each at least 20 ms after the previous one; a 50 ms timer
 * beside it fires about elapsed / 50 ms times; the run returns the stopping handler's 1. */
static void test_timers_periodic(void **state)
{
    (void)state;
    fm_errmsg_t e;
    fm_loop_t *loop = fm_loop_new(&e);
    assert_non_null(loop);
    s_timer_state_t t = {.stop_at = 8};
    int slow = 0;
    double t0 = fm_daemon_now();
    assert_int_equal(fm_loop_timer(loop, 0.020, 0.020, s_tick, &t), 0);
    assert_int_equal(fm_loop_timer(loop, 0.050, 0.050, s_count, &slow), 1);
    assert_int_equal(fm_loop_run(loop), 1);
    double elapsed = fm_daemon_now() - t0;
    assert_int_equal(t.n, 8);
    assert_true(t.at[0] - t0 >= 0.020 - S_EPS);
    for (int i = 1; i < 8; i++)
        assert_true(t.at[i] - t.at[i - 1] >= 0.020 - S_EPS);
    assert_true(elapsed >= 0.160 - S_EPS);
    assert_true(elapsed < 5.0);
    assert_true(slow >= 2 && slow <= (int)(elapsed / 0.050) + 1);
    fm_loop_destroy(&loop);
    assert_null(loop);
    fm_loop_destroy(&loop); /* idempotent */
}

/* first_s = 0: the timer fires at the first iteration. */
static void test_timer_first_now(void **state)
{
    (void)state;
    fm_loop_t *loop = fm_loop_new(NULL);
    s_timer_state_t t = {.stop_at = 1};
    double t0 = fm_daemon_now();
    assert_int_equal(fm_loop_timer(loop, 10.0, 0.0, s_tick, &t), 0);
    assert_int_equal(fm_loop_run(loop), 1);
    assert_true(fm_daemon_now() - t0 < 0.5 * 10.0);
    fm_loop_destroy(&loop);
}

/* A back-off: each call doubles the period with fm_loop_timer_set (10, 20, 40, 80 ms). */
static int s_backoff(void *arg)
{
    s_timer_state_t *t = arg;
    s_tick(t);
    if (t->n >= t->stop_at)
        return 1;
    t->backoff *= 2;
    assert_int_equal(fm_loop_timer_set(t->loop, t->id, t->backoff), 0);
    return 0;
}

static void test_timer_set_backoff(void **state)
{
    (void)state;
    fm_loop_t *loop = fm_loop_new(NULL);
    s_timer_state_t t = {.loop = loop, .stop_at = 5, .backoff = 0.010};
    t.id = fm_loop_timer(loop, 0.010, 0.010, s_backoff, &t);
    assert_true(t.id >= 0);
    assert_int_equal(fm_loop_run(loop), 1);
    assert_int_equal(t.n, 5);
    double want = 0.020;
    for (int i = 1; i < 5; i++, want *= 2)
        assert_true(t.at[i] - t.at[i - 1] >= want - S_EPS);
    fm_loop_destroy(&loop);
}

typedef struct {
    int got_a, got_b;
    int b_when_a_done;
    zsock_t *out;
} s_readers_t;

static int s_read_a(void *arg, zsock_t *sock)
{
    s_readers_t *r = arg;
    char *s = zstr_recv(sock);
    zstr_free(&s);
    if (++r->got_a == 5) {
        r->b_when_a_done = r->got_b;
        return r->got_b == 5 ? 2 : 0;
    }
    return 0;
}

static int s_read_b(void *arg, zsock_t *sock)
{
    s_readers_t *r = arg;
    char *s = zstr_recv(sock);
    zstr_free(&s);
    r->got_b++;
    return r->got_a >= 5 && r->got_b >= 5 ? 2 : 0;
}

/* Two sockets with 5 messages each, one read per call: both are served in the same
 * iterations (a loop that serves only the first ready socket would read all of A first). */
static void test_readers_fair(void **state)
{
    (void)state;
    zsock_t *a_in = zsock_new_pull("inproc://loop-test-a");
    zsock_t *a_out = zsock_new_push("inproc://loop-test-a");
    zsock_t *b_in = zsock_new_pull("inproc://loop-test-b");
    zsock_t *b_out = zsock_new_push("inproc://loop-test-b");
    assert_true(a_in && a_out && b_in && b_out);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(zstr_send(a_out, "a"), 0);
        assert_int_equal(zstr_send(b_out, "b"), 0);
    }
    fm_loop_t *loop = fm_loop_new(NULL);
    s_readers_t r = {0};
    assert_int_equal(fm_loop_reader(loop, a_in, s_read_a, &r), 0);
    assert_int_equal(fm_loop_reader(loop, b_in, s_read_b, &r), 0);
    assert_int_equal(fm_loop_run(loop), 2);
    assert_int_equal(r.got_a, 5);
    assert_int_equal(r.got_b, 5);
    assert_true(r.b_when_a_done >= 4);
    fm_loop_destroy(&loop);
    zsock_destroy(&a_out);
    zsock_destroy(&b_out);
    zsock_destroy(&a_in);
    zsock_destroy(&b_in);
}

/* A timer sends after 30 ms; the reader sees it then (not before) and ends the run. */
static int s_send_later(void *arg)
{
    s_readers_t *r = arg;
    zstr_send(r->out, "x");
    return 0;
}

static int s_read_stop(void *arg, zsock_t *sock)
{
    char *s = zstr_recv(sock);
    zstr_free(&s);
    (void)arg;
    return 7;
}

static void test_reader_wakes(void **state)
{
    (void)state;
    zsock_t *in = zsock_new_pull("inproc://loop-test-c");
    zsock_t *out = zsock_new_push("inproc://loop-test-c");
    assert_true(in && out);
    fm_loop_t *loop = fm_loop_new(NULL);
    s_readers_t r = {.out = out};
    assert_int_equal(fm_loop_reader(loop, in, s_read_stop, &r), 0);
    assert_true(fm_loop_timer(loop, 10.0, 0.030, s_send_later, &r) >= 0);
    double t0 = fm_daemon_now();
    assert_int_equal(fm_loop_run(loop), 7);
    double dt = fm_daemon_now() - t0;
    assert_true(dt >= 0.030 - S_EPS && dt < 5.0);
    fm_loop_destroy(&loop);
    zsock_destroy(&out);
    zsock_destroy(&in);
}

static void test_errors(void **state)
{
    (void)state;
    fm_loop_t *loop = fm_loop_new(NULL);
    int n = 0;
    assert_int_equal(fm_loop_timer(loop, 0.0, 0.0, s_count, &n), FM_ERANGE);
    assert_int_equal(fm_loop_timer(loop, -1.0, 0.0, s_count, &n), FM_ERANGE);
    assert_int_equal(fm_loop_timer(loop, 1.0, -1.0, s_count, &n), FM_ERANGE);
    assert_int_equal(fm_loop_timer(loop, NAN, 0.0, s_count, &n), FM_ERANGE);
    for (int i = 0; i < FM_LOOP_TIMERS_MAX; i++)
        assert_int_equal(fm_loop_timer(loop, 1.0, 1.0, s_count, &n), i);
    assert_int_equal(fm_loop_timer(loop, 1.0, 1.0, s_count, &n), -ENOSPC);
    assert_int_equal(fm_loop_timer_set(loop, FM_LOOP_TIMERS_MAX, 1.0), FM_EARG);
    assert_int_equal(fm_loop_timer_set(loop, -1, 1.0), FM_EARG);
    assert_int_equal(fm_loop_timer_set(loop, 0, 0.0), FM_ERANGE);
    zsock_t *s = zsock_new(ZMQ_PULL);
    for (int i = 0; i < FM_LOOP_READERS_MAX; i++)
        assert_int_equal(fm_loop_reader(loop, s, s_read_stop, NULL), 0);
    assert_int_equal(fm_loop_reader(loop, s, s_read_stop, NULL), -ENOSPC);
    zsock_destroy(&s);
    fm_loop_destroy(&loop);
}

/* ---- systemd notifications -------------------------------------------------------------- */

typedef struct {
    int status_calls;
    int hup_sent;
} s_notify_state_t;

static void s_status(void *arg, char *buf, size_t cap)
{
    s_notify_state_t *n = arg;
    snprintf(buf, cap, "status call %d", ++n->status_calls);
}

static int s_hup_once(void *arg)
{
    s_notify_state_t *n = arg;
    if (!n->hup_sent++)
        raise(SIGHUP);
    return 0;
}

static int s_end(void *arg)
{
    (void)arg;
    return 3;
}

/* A datagram socket in the abstract namespace for NOTIFY_SOCKET ("@name"); its fd. */
static int s_notify_socket(char *env, size_t cap)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "fedmq-loop-test-%d", (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, alen), 0);
    snprintf(env, cap, "@%s", a.sun_path + 1);
    return fd;
}

/* The notifications received, with their arrival times: read by a thread as systemd would
 * (a sender blocks once the socket's queue of datagrams is full). */
typedef struct {
    int fd;
    atomic_int stop;
    char msgs[64][256];
    double at[64];
    int n;
} s_listener_t;

static void *s_listen(void *arg)
{
    s_listener_t *l = arg;
    while (!atomic_load(&l->stop) && l->n < 64) {
        struct pollfd p = {l->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        ssize_t len = recv(l->fd, l->msgs[l->n], sizeof l->msgs[0] - 1, 0);
        if (len <= 0)
            continue;
        l->msgs[l->n][len] = '\0';
        l->at[l->n++] = fm_daemon_now();
    }
    return NULL;
}

static int s_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* WATCHDOG_USEC 100 ms: pings every 50 ms (never early), READY=1 with the hook's status
 * first, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP, STOPPING=1 last. */
static void test_notify(void **state)
{
    (void)state;
    fm_daemon_signals();
    char env[108];
    s_listener_t *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->fd = s_notify_socket(env, sizeof env);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, s_listen, l), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
    assert_int_equal(setenv("WATCHDOG_USEC", "100000", 1), 0);
    fm_loop_t *loop = fm_loop_new(NULL);
    s_notify_state_t ns = {0};
    fm_loop_on_status(loop, s_status, &ns);
    assert_true(fm_loop_timer(loop, 10.0, 0.120, s_hup_once, &ns) >= 0);
    assert_true(fm_loop_timer(loop, 10.0, 0.400, s_end, NULL) >= 0);
    assert_int_equal(fm_loop_run(loop), 3);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    fm_loop_destroy(&loop);
    double end = fm_daemon_now() + 5.0; /* the last datagram is read within 5 s */
    while (fm_daemon_now() < end && (l->n == 0 || !s_prefix(l->msgs[l->n - 1], "STOPPING=1")))
        usleep(10000);
    atomic_store(&l->stop, 1);
    pthread_join(th, NULL);
    close(l->fd);

    int n = l->n;
    assert_true(n >= 5);
    assert_string_equal(l->msgs[0], "READY=1\nSTATUS=status call 1");
    assert_string_equal(l->msgs[n - 1], "STOPPING=1\nSTATUS=stopping");
    int pings = 0, reloading = -1, ready_again = -1;
    double last_ping = 0;
    for (int i = 1; i < n - 1; i++) {
        if (strcmp(l->msgs[i], "WATCHDOG=1") == 0) {
            /* never early (the reader's clock: a little slack for its own delay) */
            if (pings++)
                assert_true(l->at[i] - last_ping >= 0.050 - 0.020);
            last_ping = l->at[i];
        } else if (s_prefix(l->msgs[i], "RELOADING=1\nMONOTONIC_USEC=")) {
            reloading = i;
        } else if (s_prefix(l->msgs[i], "READY=1\nSTATUS=status call ")) {
            ready_again = i;
        } else {
            fail_msg("unexpected notification '%s'", l->msgs[i]);
        }
    }
    assert_true(reloading > 0 && ready_again == reloading + 1);
    /* a ping at the start and every 50 ms over 400 ms: 9, late only by a few */
    assert_true(pings >= 4 && pings <= 9);
    free(l);
}

/* ---- signals (last: the stop flag cannot be cleared) ---------------------------------- */

typedef struct {
    int reloads;
    int checks;
} s_sig_t;

static void s_on_reload(void *arg) { ((s_sig_t *)arg)->reloads++; }

static int s_raise_hup(void *arg)
{
    (void)arg;
    raise(SIGHUP);
    return 0;
}

static int s_check_reloads(void *arg)
{
    s_sig_t *s = arg;
    return ++s->checks >= 3 ? 1 : 0;
}

/* One SIGHUP at 10 ms: the hook runs once (the flag is taken), the loop goes on. */
static void test_reload_hook(void **state)
{
    (void)state;
    fm_daemon_signals();
    fm_loop_t *loop = fm_loop_new(NULL);
    s_sig_t s = {0};
    fm_loop_on_reload(loop, s_on_reload, &s);
    assert_true(fm_loop_timer(loop, 10.0, 0.010, s_raise_hup, &s) >= 0);
    assert_true(fm_loop_timer(loop, 0.050, 0.050, s_check_reloads, &s) >= 0);
    assert_int_equal(fm_loop_run(loop), 1);
    assert_int_equal(s.reloads, 1);
    assert_int_equal(s.checks, 3);
    fm_loop_destroy(&loop);
}

static int s_raise_term(void *arg)
{
    (void)arg;
    raise(SIGTERM);
    return 0;
}

/* SIGTERM: the run returns 0, promptly, with a far timer still pending. */
static void test_stop_signal(void **state)
{
    (void)state;
    fm_daemon_signals();
    fm_loop_t *loop = fm_loop_new(NULL);
    int far = 0;
    assert_true(fm_loop_timer(loop, 10.0, 0.020, s_raise_term, NULL) >= 0);
    assert_true(fm_loop_timer(loop, 60.0, 60.0, s_count, &far) >= 0);
    double t0 = fm_daemon_now();
    assert_int_equal(fm_loop_run(loop), 0);
    double dt = fm_daemon_now() - t0;
    assert_true(dt < 0.020 + FM_LOOP_TICK_MS / 1000.0 + 2.0);
    assert_int_equal(far, 0);
    assert_true(fm_daemon_stopping());
    /* a stopped daemon's loop returns at once */
    assert_int_equal(fm_loop_run(loop), 0);
    fm_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_periodic),
        cmocka_unit_test(test_timer_first_now),
        cmocka_unit_test(test_timer_set_backoff),
        cmocka_unit_test(test_readers_fair),
        cmocka_unit_test(test_reader_wakes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_reload_hook),
        cmocka_unit_test(test_stop_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
