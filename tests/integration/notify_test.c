/* notify_test: the systemd notifications of the four real daemons, with the test in systemd's
 * place: it owns a datagram socket (abstract namespace), starts each daemon with
 * NOTIFY_SOCKET naming it and WATCHDOG_USEC = 1 s, and reads what arrives in a thread (as
 * systemd does: a sender blocks once the socket's queue is full), stamping each datagram with
 * its arrival time. What it shows, for every daemon:
 *  - READY=1 arrives, and at that moment (checked by the reading thread as soon as the
 *    datagram is read) every TCP endpoint the daemon binds accepts a connection, and what
 *    the daemon loaded before is there: the aggregator, started on a checkpoint store at
 *    version V, says "version V" in the STATUS= sent with READY=1; the evaluator and the
 *    trainer have logged their data (the evaluator its test set, the trainer its start line);
 *  - WATCHDOG=1 at WATCHDOG_USEC / 2 (0.5 s): the measured intervals stay within
 *    [S_PING_MIN_S, S_PING_MAX_S] and their mean near 0.5 s;
 *  - STATUS= lines with the daemon's counters arrive after READY=1 (every 2 s);
 *  - SIGHUP: RELOADING=1 then READY=1, both when the reload is applied and when it is
 *    refused (a changed non-reloadable key: the log says so, the daemon stays READY);
 *  - SIGTERM: STOPPING=1, then exit 0, well within a TimeoutStopSec of 30 s;
 *  - with FEDMQ_TEST_WEDGE_AFTER_S (FM_TEST_HOOKS builds) the pings stop after the wedge: no
 *    WATCHDOG=1 for more than 3 intervals while the process still runs (and SIGTERM gets
 *    no STOPPING=1): systemd would kill it; the test does (SIGKILL).
 * And the aggregator's drain: SIGTERM mid-run, with a real trainer (through a real broker)
 * sending updates: STOPPING=1, exit 0, the final checkpoint is the version the log and
 * stats.json report (fm_ckpt, fm_stats_read); restarted (the trainer frozen meanwhile), it
 * says that exact version in READY=1's STATUS=, in stats.json and in the first MODEL it
 * publishes, then goes on; the trainer stops with exit 0 after sending BYE.
 * Every wait is a bounded poll; children are reaped and temp dirs removed in the teardown. */
#include <czmq.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define BIN(x) FM_BIN_DIR "/fedmq-" x

/* Bounds, seconds (generous for a loaded 2-core machine with sanitizers). */
#define S_START_S 60.0   /* READY=1 after the start (the trainer and evaluator load data) */
#define S_PINGS 7        /* watchdog pings measured per daemon */
#define S_PING_MIN_S 0.4 /* WATCHDOG_USEC / 2 = 0.5 s, less the reader's jitter */
#define S_PING_MAX_S 0.95
#define S_PINGS_S 15.0   /* S_PINGS pings arrive within this */
#define S_STATUS_S 10.0  /* a STATUS= refresh after READY=1 */
#define S_RELOAD_S 10.0  /* RELOADING=1 and READY=1 after SIGHUP */
#define S_STOP_S 30.0    /* systemd's default TimeoutStopSec */
#define S_STOP_OK_S 10.0 /* what a stop may take here: well within S_STOP_S */
#define S_WEDGE_AFTER "2"
#define S_SILENT_S 2.0   /* > 3 watchdog intervals without a ping: wedged */
#define S_VERSION_S 60.0 /* versions of the mid-run test */
#define S_MODEL_S 10.0   /* a MODEL on the aggregator's PUB */
#define S_NOTES_MAX 1024

/* ---- the test's NOTIFY_SOCKET ------------------------------------------------------------ */

typedef struct {
    char text[256];
    double at; /* monotonic arrival time */
} s_note_t;

typedef struct s_listener s_listener_t;
/* Run by the reading thread on the first READY=1 (its message): "" in err if all holds. */
typedef void (*s_ready_check_fn)(s_listener_t *l, const char *msg, char *err, size_t cap);

struct s_listener {
    int fd;
    char env[108]; /* NOTIFY_SOCKET value */
    pthread_t thread;
    int running;
    atomic_int stop;
    pthread_mutex_t mu;
    s_note_t notes[S_NOTES_MAX];
    int n;
    s_ready_check_fn check; /* may be NULL */
    void *arg;
    atomic_int checked; /* 1 once check ran */
    char check_err[512];
};

static void *s_listen(void *arg)
{
    s_listener_t *l = arg;
    while (!atomic_load(&l->stop)) {
        struct pollfd p = {l->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        char buf[256];
        ssize_t len = recv(l->fd, buf, sizeof buf - 1, 0);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        double at = fm_proc_now();
        if (!atomic_load(&l->checked) && strncmp(buf, "READY=1", 7) == 0) {
            if (l->check)
                l->check(l, buf, l->check_err, sizeof l->check_err);
            atomic_store(&l->checked, 1);
        }
        pthread_mutex_lock(&l->mu);
        if (l->n < S_NOTES_MAX) {
            snprintf(l->notes[l->n].text, sizeof l->notes[0].text, "%s", buf);
            l->notes[l->n].at = at;
            l->n++;
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

/* A fresh socket "@fedmq-notify-test-<pid>-<k>" and its reading thread. */
static void s_listener_start(s_listener_t *l, s_ready_check_fn check, void *arg)
{
    static int k = 0; /* test-process bookkeeping */
    memset(l, 0, sizeof *l);
    l->check = check;
    l->arg = arg;
    pthread_mutex_init(&l->mu, NULL);
    l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(l->fd >= 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "fedmq-notify-test-%d-%d",
                     (int)getpid(), k++);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    assert_int_equal(bind(l->fd, (struct sockaddr *)&a, alen), 0);
    snprintf(l->env, sizeof l->env, "@%s", a.sun_path + 1);
    assert_int_equal(pthread_create(&l->thread, NULL, s_listen, l), 0);
    l->running = 1;
}

static void s_listener_stop(s_listener_t *l)
{
    if (!l->running)
        return;
    atomic_store(&l->stop, 1);
    pthread_join(l->thread, NULL);
    close(l->fd);
    pthread_mutex_destroy(&l->mu);
    l->running = 0;
}

/* 1 if one of the message's lines is `assign` ("READY=1") or starts with it ("STATUS="). */
static int s_has(const char *msg, const char *assign)
{
    size_t n = strlen(assign);
    for (const char *p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, assign, n) == 0)
            return 1;
    return 0;
}

/* A copy of note i (test thread). */
static s_note_t s_note(s_listener_t *l, int i)
{
    pthread_mutex_lock(&l->mu);
    s_note_t n = l->notes[i];
    pthread_mutex_unlock(&l->mu);
    return n;
}

static int s_count_notes(s_listener_t *l)
{
    pthread_mutex_lock(&l->mu);
    int n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* The index of the first note at or after `from` with `assign`, else -1. */
static int s_find(s_listener_t *l, const char *assign, int from)
{
    int n = s_count_notes(l);
    for (int i = from; i < n; i++)
        if (s_has(s_note(l, i).text, assign))
            return i;
    return -1;
}

/* s_find, polled for up to timeout_s. */
static int s_wait_note(s_listener_t *l, const char *assign, int from, double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    int i;
    while ((i = s_find(l, assign, from)) < 0 && fm_proc_now() < end)
        fm_proc_sleep(0.02);
    return i;
}

/* How many notes at or after `from` have `assign`; the indices of the first `cap` of them
 * into idx (may be NULL when cap is 0). */
static int s_all(s_listener_t *l, const char *assign, int from, int *idx, int cap)
{
    int k = 0, n = s_count_notes(l);
    for (int i = from; i < n; i++)
        if (s_has(s_note(l, i).text, assign)) {
            if (k < cap)
                idx[k] = i;
            k++;
        }
    return k;
}

/* The index of the last note at or after `from` with `assign`, else -1. */
static int s_last(s_listener_t *l, const char *assign, int from)
{
    int last = -1, n = s_count_notes(l);
    for (int i = from; i < n; i++)
        if (s_has(s_note(l, i).text, assign))
            last = i;
    return last;
}

/* ---- the daemons --------------------------------------------------------------------------- */

/* What each daemon is and what must hold at its READY=1. */
typedef struct {
    const char *name; /* "broker": binary fedmq-<name>, log <name>.log */
    int bound[4];     /* indices into ports[] of the endpoints it binds (/metrics too) */
    int nbound;
    const char *status; /* every STATUS= starts with this */
    const char *log;    /* the log has this line at READY=1 (NULL: nothing) */
} s_daemon_t;

typedef struct s_ctx s_ctx_t;

/* What the reading thread checks on READY=1 (lives in the context: the thread may still
 * read after a failed assert, until the teardown stops it). */
typedef struct {
    const s_ctx_t *c;
    const s_daemon_t *d;
    char log[512];
    char status[64]; /* the STATUS= of READY=1 starts with it ("": d->status) */
} s_ready_arg_t;

struct s_ctx {
    char dir[256];
    char conf[320], ckpt[320], metrics[320];
    int ports[10]; /* model_pub, snapshot, updates, aggregator_models, metrics_pub, the
                      /metrics of broker, aggregator, evaluator, trainer, and acks */
    fm_proc_set_t procs;
    s_listener_t lis[4];
    s_ready_arg_t ras[4]; /* lis[i]'s check */
    int nlis;
    fm_model_t *layout; /* logreg */
    fm_wire_buf_t buf;
};

enum {
    P_MODEL_PUB,
    P_SNAPSHOT,
    P_UPDATES,
    P_AGG_MODELS,
    P_METRICS,
    P_HTTP_BROKER,
    P_HTTP_AGG,
    P_HTTP_EVAL,
    P_HTTP_TRAINER,
    P_ACKS,
    P_COUNT
};

static const s_daemon_t s_broker = {"broker",
                                    {P_MODEL_PUB, P_SNAPSHOT, P_HTTP_BROKER},
                                    3,
                                    "model version none, 0 trainers live",
                                    NULL};
static const s_daemon_t s_evaluator = {"evaluator",
                                       {P_METRICS, P_HTTP_EVAL},
                                       2,
                                       "waiting for the first model, 0 evaluations",
                                       "evaluating logreg"};
static const s_daemon_t s_trainer = {
    "trainer", {P_HTTP_TRAINER}, 1, "no model yet, 0 updates sent", ": model logreg, 1 workers"};

/* The config file: logreg, 20 clients, buffer_k 5, every version checkpointed; with
 * `num_clients` 21 instead of 20 (a key that cannot be reloaded) when `changed`. */
static void s_write_config(const s_ctx_t *c, int changed)
{
    FILE *f = fopen(c->conf, "w");
    assert_non_null(f);
    fprintf(f,
            "[federation]\nmodel = logreg\nnum_clients = %d\nclients_per_round = 5\n"
            "partition = iid\nseed = 1\ndata_dir = %s\nholdout = 0.1\n"
            "[endpoints]\nmodel_pub = tcp://127.0.0.1:%d\nsnapshot = tcp://127.0.0.1:%d\n"
            "updates = tcp://127.0.0.1:%d\naggregator_models = tcp://127.0.0.1:%d\n"
            "metrics_pub = tcp://127.0.0.1:%d\nacks = tcp://127.0.0.1:%d\n"
            "[broker]\nheartbeat_timeout_s = 5\nmetrics_addr = 127.0.0.1:%d\n"
            "[trainer]\nclients = 0-19\nworkers = 1\nheartbeat_interval_s = 0.5\n"
            "metrics_addr = 127.0.0.1:%d\n"
            "[aggregator]\nbuffer_k = 5\nstaleness = constant\nmax_staleness = 50\n"
            "checkpoint_dir = %s\ncheckpoint_every = 1\ncheckpoint_keep = 3\n"
            "metrics_addr = 127.0.0.1:%d\n"
            "[evaluator]\nmetrics_file = %s\npopulation = false\nmetrics_addr = 127.0.0.1:%d\n",
            changed ? 21 : 20, FM_DATA_DIR, c->ports[0], c->ports[1], c->ports[2], c->ports[3],
            c->ports[4], c->ports[P_ACKS], c->ports[P_HTTP_BROKER], c->ports[P_HTTP_TRAINER],
            c->ckpt, c->ports[P_HTTP_AGG], c->metrics, c->ports[P_HTTP_EVAL]);
    assert_int_equal(fclose(f), 0);
}

static void s_log_path(const s_ctx_t *c, const char *log, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", c->dir, log);
}

/* Start fedmq-<name> --config c->conf with its output in <dir>/<log>; with NOTIFY_SOCKET and
 * WATCHDOG_USEC = 1 s when `l` is given, and FEDMQ_TEST_WEDGE_AFTER_S when `wedge`. */
static pid_t s_spawn(s_ctx_t *c, const char *name, const char *log, s_listener_t *l, int wedge)
{
    char bin[512], path[512];
    snprintf(bin, sizeof bin, FM_BIN_DIR "/fedmq-%s", name);
    s_log_path(c, log, path, sizeof path);
    char *argv[] = {bin, "--config", c->conf, "--log-level", "info", NULL};
    if (l) {
        setenv("NOTIFY_SOCKET", l->env, 1);
        setenv("WATCHDOG_USEC", "1000000", 1);
    }
    if (wedge)
        setenv("FEDMQ_TEST_WEDGE_AFTER_S", S_WEDGE_AFTER, 1);
    pid_t pid = fm_proc_spawn(&c->procs, argv, path);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("FEDMQ_TEST_WEDGE_AFTER_S");
    assert_true(pid > 0);
    return pid;
}

/* 1 if a TCP connection to 127.0.0.1:port is accepted at once. */
static int s_connects(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void s_ready_check(s_listener_t *l, const char *msg, char *err, size_t cap)
{
    s_ready_arg_t *r = l->arg;
    err[0] = '\0';
    for (int i = 0; i < r->d->nbound; i++) {
        int port = r->c->ports[r->d->bound[i]];
        if (!s_connects(port)) {
            snprintf(err, cap, "%s: READY=1 but port %d refuses connections", r->d->name, port);
            return;
        }
    }
    const char *want = r->status;
    const char *st = strstr(msg, "\nSTATUS=");
    if (!st || strncmp(st + 8, want, strlen(want)) != 0) {
        snprintf(err, cap, "%s: READY=1 with '%s', expected STATUS=%s...", r->d->name, msg, want);
        return;
    }
    if (r->d->log && !fm_proc_file_contains(r->log, r->d->log))
        snprintf(err, cap, "%s: READY=1 before the log says '%s'", r->d->name, r->d->log);
}

/* The next listener of the context, with a READY=1 check of daemon `d` (NULL: none) whose
 * log is <dir>/<log> and whose READY=1 STATUS= starts with `status` (NULL: d->status). */
static s_listener_t *s_listener_new(s_ctx_t *c, const s_daemon_t *d, const char *log,
                                    const char *status)
{
    assert_true(c->nlis < 4);
    s_listener_t *l = &c->lis[c->nlis];
    s_ready_arg_t *ra = &c->ras[c->nlis++];
    ra->c = c;
    ra->d = d;
    char path[sizeof ra->log] = ""; /* not straight into ra: gcc sees c->dir overlap it */
    if (log)
        snprintf(path, sizeof path, "%s/%s", c->dir, log);
    memcpy(ra->log, path, sizeof path);
    snprintf(ra->status, sizeof ra->status, "%s", status ? status : d ? d->status : "");
    s_listener_start(l, d ? s_ready_check : NULL, ra);
    return l;
}

/* 1 while pid runs (waitpid: a crashed child is reaped and reported). */
static int s_running(pid_t pid)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        print_error("process %d ended: %s %d\n", (int)pid, WIFSIGNALED(st) ? "signal" : "exit",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return r == 0;
}

/* SIGTERM: STOPPING=1 (if `l`), then exit 0 within S_STOP_OK_S. Returns the seconds taken. */
static double s_term(s_listener_t *l, pid_t pid, const char *name)
{
    int from = l ? s_count_notes(l) : 0;
    double t0 = fm_proc_now();
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st = fm_proc_stop(pid, 0, S_STOP_S);
    double secs = fm_proc_now() - t0;
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("%s: SIGTERM: status 0x%x after %.1f s, expected exit 0", name, st, secs);
    if (secs > S_STOP_OK_S)
        fail_msg("%s: the stop took %.1f s (more than %.0f s)", name, secs, S_STOP_OK_S);
    /* sent before the exit; the reading thread may not have read it yet */
    if (l && s_wait_note(l, "STOPPING=1", from, 5.0) < 0)
        fail_msg("%s: exited without STOPPING=1", name);
    print_message("%s: SIGTERM -> %sexit 0 in %.2f s\n", name, l ? "STOPPING=1, " : "", secs);
    return secs;
}

/* Wait for READY=1 (and the reading thread's check); fail with its reason. Returns its
 * index. */
static int s_wait_ready(s_listener_t *l, pid_t pid, const char *name)
{
    int i = s_wait_note(l, "READY=1", 0, S_START_S);
    if (i < 0)
        fail_msg("%s: no READY=1 within %.0f s (running: %d)", name, S_START_S, s_running(pid));
    while (!atomic_load(&l->checked))
        fm_proc_sleep(0.01);
    if (l->check_err[0])
        fail_msg("%s", l->check_err);
    return i;
}

/* S_PINGS watchdog pings from note `from` on: every interval within bounds; prints them. */
static void s_check_pings(s_listener_t *l, const char *name, int from)
{
    int idx[S_PINGS];
    double end = fm_proc_now() + S_PINGS_S;
    while (s_all(l, "WATCHDOG=1", from, idx, S_PINGS) < S_PINGS && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    int n = s_all(l, "WATCHDOG=1", from, idx, S_PINGS);
    if (n < S_PINGS)
        fail_msg("%s: %d WATCHDOG=1 within %.0f s, expected %d", name, n, S_PINGS_S, S_PINGS);
    n = S_PINGS; /* the first S_PINGS */
    double lo = 1e9, hi = 0, sum = 0;
    char list[256] = "";
    for (int i = 1; i < n; i++) {
        double dt = s_note(l, idx[i]).at - s_note(l, idx[i - 1]).at;
        lo = dt < lo ? dt : lo;
        hi = dt > hi ? dt : hi;
        sum += dt;
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%.3f", i > 1 ? " " : "", dt);
    }
    double mean = sum / (n - 1);
    print_message("%s: WATCHDOG=1 intervals (WATCHDOG_USEC 1 s): %s s; min %.3f mean %.3f max "
                  "%.3f\n",
                  name, list, lo, mean, hi);
    if (lo < S_PING_MIN_S || hi > S_PING_MAX_S || mean < 0.45 || mean > 0.7)
        fail_msg("%s: watchdog intervals out of bounds", name);
}

/* SIGHUP: RELOADING=1, then READY=1 (with STATUS=), and the log line `line`. */
static void s_check_reload(s_ctx_t *c, s_listener_t *l, pid_t pid, const s_daemon_t *d,
                           const char *log, const char *line)
{
    int from = s_count_notes(l);
    int before = fm_proc_file_count(log, line);
    assert_int_equal(kill(pid, SIGHUP), 0);
    int r = s_wait_note(l, "RELOADING=1", from, S_RELOAD_S);
    if (r < 0)
        fail_msg("%s: no RELOADING=1 after SIGHUP", d->name);
    int ready = s_wait_note(l, "READY=1", r + 1, S_RELOAD_S);
    if (ready < 0)
        fail_msg("%s: no READY=1 after RELOADING=1", d->name);
    assert_true(s_has(s_note(l, r).text, "MONOTONIC_USEC="));
    assert_true(s_has(s_note(l, ready).text, "STATUS="));
    double end = fm_proc_now() + S_RELOAD_S;
    while (fm_proc_file_count(log, line) <= before && fm_proc_now() < end)
        fm_proc_sleep(0.02);
    if (fm_proc_file_count(log, line) <= before)
        fail_msg("%s: no '%s' in the log after SIGHUP", d->name, line);
    print_message("%s: SIGHUP -> RELOADING=1, READY=1 (%s)\n", d->name, line);
    (void)c;
}

/* The whole life of one daemon under the test's NOTIFY_SOCKET (see the file comment).
 * `status_prefix`: what READY=1's STATUS= must start with (NULL: d->status). */
static void s_lifecycle(s_ctx_t *c, const s_daemon_t *d, const char *status_prefix)
{
    char logname[64], log[512];
    snprintf(logname, sizeof logname, "%s.log", d->name);
    s_log_path(c, logname, log, sizeof log);
    s_listener_t *l = s_listener_new(c, d, logname, status_prefix);
    s_write_config(c, 0);
    pid_t pid = s_spawn(c, d->name, logname, l, 0);
    int ready = s_wait_ready(l, pid, d->name);
    print_message("%s: READY=1 ('%s'); bound endpoints accepted a connection at once\n", d->name,
                  strchr(s_note(l, ready).text, '\n') + 1);
    s_check_pings(l, d->name, ready + 1);
    int st = s_wait_note(l, "STATUS=", ready + 1, S_STATUS_S);
    if (st < 0)
        fail_msg("%s: no STATUS= refresh within %.0f s of READY=1", d->name, S_STATUS_S);
    const char *text = strstr(s_note(l, st).text, "STATUS=") + 7;
    if (strncmp(text, status_prefix ? status_prefix : d->status,
                strlen(status_prefix ? status_prefix : d->status)) != 0)
        fail_msg("%s: STATUS=%s", d->name, text);
    print_message("%s: STATUS=%s\n", d->name, text);
    s_check_reload(c, l, pid, d, log, "SIGHUP: config reloaded");
    s_write_config(c, 1);
    s_check_reload(c, l, pid, d, log, "SIGHUP: config not reloaded");
    s_write_config(c, 0);
    /* still alive and pinging after the reloads */
    int after = s_count_notes(l);
    assert_true(s_wait_note(l, "WATCHDOG=1", after, 2.0) >= 0);
    assert_true(s_running(pid));
    s_term(l, pid, d->name);
    s_listener_stop(l);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static s_ctx_t *s_current; /* for the teardown */

static int s_setup(void **state)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->conf, sizeof c->conf, "%s/fedmq.conf", c->dir);
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->dir);
    snprintf(c->metrics, sizeof c->metrics, "%s/metrics.jsonl", c->dir);
    for (int i = 0; i < P_COUNT; i++)
        if ((c->ports[i] = fm_proc_free_port()) < 0)
            return -1;
    int err = 0;
    if (!(c->layout = fm_model_new("logreg", &err)))
        return -1;
    s_current = c;
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    for (int i = 0; i < c->nlis; i++)
        s_listener_stop(&c->lis[i]);
    if (getenv("FM_KEEP_LOGS")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "tail -n 30 '%s'/*.log >&2", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "no logs\n");
    }
    fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    fm_model_destroy(&c->layout);
    free(c);
    s_current = NULL;
    return 0;
}

/* ---- the tests ----------------------------------------------------------------------------- */

static void test_broker(void **state) { s_lifecycle(*state, &s_broker, NULL); }
static void test_evaluator(void **state) { s_lifecycle(*state, &s_evaluator, NULL); }
static void test_trainer(void **state) { s_lifecycle(*state, &s_trainer, NULL); }

/* stats.json's version, or -1 while it cannot be read. */
static int64_t s_stats_version(const s_ctx_t *c)
{
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    fm_stats_t st;
    return fm_stats_read(path, &st, NULL) == 0 ? (int64_t)st.version : -1;
}

typedef struct {
    const s_ctx_t *c;
    int64_t want;
} s_vwait_t;

static int s_version_reached(void *arg)
{
    s_vwait_t *w = arg;
    return s_stats_version(w->c) >= w->want;
}

static void s_wait_version(const s_ctx_t *c, int64_t want, double timeout_s)
{
    s_vwait_t w = {c, want};
    if (!fm_proc_wait_for(s_version_reached, &w, timeout_s))
        fail_msg("stats.json: version %" PRId64 " not reached within %.0f s (at %" PRId64 ")",
                 want, timeout_s, s_stats_version(c));
}

/* The highest version in the checkpoint store (the aggregator must not run). */
static uint64_t s_ckpt_latest(const s_ctx_t *c)
{
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_ckpt_t *ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    if (!ck)
        fail_msg("%s: %s", c->ckpt, e.msg);
    uint64_t v = 0;
    assert_int_equal(fm_ckpt_latest_version(ck, &v, &e), 0);
    fm_ckpt_info_t info;
    assert_int_equal(fm_ckpt_load_latest(ck, &info, NULL, 0, NULL, 0, &e), 0);
    assert_int_equal(info.version, v); /* the newest record is valid */
    fm_ckpt_close(&ck);
    return v;
}

/* The aggregator: first a run on an empty store that the test feeds with 10 UPDATEs (two
 * versions of buffer_k 5) and stops with SIGTERM (final checkpoint at version 2); then the
 * whole life on that store: READY=1 says "version 2". */
static void test_aggregator(void **state)
{
    s_ctx_t *c = *state;
    s_write_config(c, 0);
    s_listener_t *l = s_listener_new(c, NULL, NULL, NULL);
    pid_t pid = s_spawn(c, "aggregator", "aggregator0.log", l, 0);
    s_wait_ready(l, pid, "aggregator");
    zsock_t *push = zsock_new(ZMQ_PUSH);
    assert_non_null(push);
    zsock_set_linger(push, 1000);
    zsock_set_sndtimeo(push, 5000);
    assert_int_equal(zsock_connect(push, "tcp://127.0.0.1:%d", c->ports[P_UPDATES]), 0);
    size_t np = fm_model_nparams(c->layout);
    float *delta = calloc(np, sizeof *delta);
    assert_non_null(delta);
    for (int i = 0; i < 10; i++) {
        for (size_t j = 0; j < np; j++)
            delta[j] = 1e-3f * (float)((int)((j * 7 + (size_t)i * 13) % 17) - 8);
        fm_wire_update_t h;
        memset(&h, 0, sizeof h);
        assert_int_equal(fm_wire_id_new(h.id), 0);
        snprintf(h.trainer, sizeof h.trainer, "notify-test");
        h.client = (uint32_t)i;
        h.num_samples = 10;
        h.local_steps = 1;
        assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
        assert_int_equal(zmq_send(zsock_resolve(push), c->buf.data, c->buf.len, 0),
                         (int)c->buf.len);
    }
    free(delta);
    s_wait_version(c, 2, S_VERSION_S);
    zsock_destroy(&push);
    s_term(l, pid, "aggregator (first run)");
    s_listener_stop(l);
    assert_int_equal(s_ckpt_latest(c), 2);
    assert_int_equal(s_stats_version(c), 2);

    static const s_daemon_t agg = {"aggregator",
                                   {P_UPDATES, P_AGG_MODELS, P_HTTP_AGG, P_ACKS},
                                   4,
                                   "version ",
                                   "model logreg (7850 params) at version 2"};
    s_lifecycle(c, &agg, "version 2, ");
}

/* FEDMQ_TEST_WEDGE_AFTER_S: all four at once; each sends READY=1 and pings, then none for
 * more than 3 intervals while it runs; SIGTERM gets no STOPPING=1; SIGKILL ends it. */
static void test_wedge(void **state)
{
#ifndef FM_TEST_HOOKS
    skip(); /* FM_TEST_HOOKS=OFF: the hook is not compiled in */
#endif
    s_ctx_t *c = *state;
    s_write_config(c, 0);
    static const char *const names[] = {"broker", "aggregator", "evaluator", "trainer"};
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        s_listener_new(c, NULL, NULL, NULL);
        char log[64];
        snprintf(log, sizeof log, "%s-wedge.log", names[i]);
        pids[i] = s_spawn(c, names[i], log, &c->lis[i], 1);
    }
    for (int i = 0; i < 4; i++) {
        s_listener_t *l = &c->lis[i];
        int ready = s_wait_ready(l, pids[i], names[i]);
        /* pings, then silence: the last ping is more than S_SILENT_S old, the daemon runs */
        double end = fm_proc_now() + S_START_S;
        int n = 0, last = -1;
        double silent = 0;
        while (fm_proc_now() < end) {
            n = s_all(l, "WATCHDOG=1", ready + 1, NULL, 0);
            last = s_last(l, "WATCHDOG=1", ready + 1);
            silent = last >= 0 ? fm_proc_now() - s_note(l, last).at : 0;
            if (n >= 2 && silent > S_SILENT_S)
                break;
            fm_proc_sleep(0.05);
        }
        if (!(n >= 2 && silent > S_SILENT_S))
            fail_msg("%s: %d pings, the last %.1f s ago: the pings did not stop", names[i], n,
                     silent);
        assert_true(s_running(pids[i]));
        char log[512];
        snprintf(log, sizeof log, "%s/%s-wedge.log", c->dir, names[i]);
        assert_true(fm_proc_file_contains(log, "the loop is wedged now"));
        double span = s_note(l, last).at - s_note(l, ready).at;
        print_message("%s: wedged: %d pings in the %.2f s after READY=1, then none for %.1f s\n",
                      names[i], n, span, silent);
    }
    /* systemd would now kill them (WatchdogSec 1 s); a stop request is not heard either */
    int from[4];
    for (int i = 0; i < 4; i++) {
        from[i] = s_count_notes(&c->lis[i]);
        assert_int_equal(kill(pids[i], SIGTERM), 0);
    }
    fm_proc_sleep(1.0); /* the absence of STOPPING=1 for a second, not a wait for an event */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s_find(&c->lis[i], "STOPPING=1", from[i]), -1);
        assert_int_equal(s_find(&c->lis[i], "WATCHDOG=1", from[i]), -1);
        assert_true(s_running(pids[i]));
        assert_int_equal(kill(pids[i], SIGKILL), 0);
        int st = fm_proc_wait(pids[i], 5.0);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
}

/* One MODEL from the aggregator's PUB within S_MODEL_S: its version, or -1. */
static int64_t s_first_model(zsock_t *sub, fm_model_t *layout)
{
    fm_wire_tensors_t *ts = malloc(sizeof *ts);
    assert_non_null(ts);
    int64_t v = -1;
    double end = fm_proc_now() + S_MODEL_S;
    while (v < 0 && fm_proc_now() < end) {
        zframe_t *f = zframe_recv(sub);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, ts, &e), 0);
        assert_int_equal(fm_wire_tensors_check(ts, layout, &e), 0);
        v = (int64_t)hdr.version;
        zframe_destroy(&f);
    }
    free(ts);
    return v;
}

/* The number after `prefix` on the last log line that has it, or -1. */
static int64_t s_log_number(const char *path, const char *prefix)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[4096];
    int64_t v = -1;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, prefix);
        if (p)
            v = strtoll(p + strlen(prefix), NULL, 10);
    }
    fclose(f);
    return v;
}

/* SIGTERM to the aggregator while a real trainer sends updates through a real broker: the
 * drain, the final checkpoint and an exact resume (see the file comment). */
static void test_aggregator_sigterm_midrun(void **state)
{
    s_ctx_t *c = *state;
    s_write_config(c, 0);
    s_listener_t *l1 = s_listener_new(c, NULL, NULL, NULL);
    pid_t agg = s_spawn(c, "aggregator", "aggregator1.log", l1, 0);
    pid_t broker = s_spawn(c, "broker", "broker.log", NULL, 0);
    pid_t trainer = s_spawn(c, "trainer", "trainer.log", NULL, 0);
    s_wait_ready(l1, agg, "aggregator");
    s_wait_version(c, 3, S_VERSION_S);

    /* mid-run: the trainer is sending */
    double stop1 = s_term(l1, agg, "aggregator (mid-run)");
    s_listener_stop(l1);
    char log1[512], log2[512], tlog[512];
    s_log_path(c, "aggregator1.log", log1, sizeof log1);
    s_log_path(c, "aggregator2.log", log2, sizeof log2);
    s_log_path(c, "trainer.log", tlog, sizeof tlog);
    int64_t v_log = s_log_number(log1, "stopping at version ");
    int64_t v_stats = s_stats_version(c);
    uint64_t v_ckpt = s_ckpt_latest(c);
    print_message("aggregator stopped mid-run in %.2f s: log says version %" PRId64
                  ", stats.json %" PRId64 ", checkpoint store %" PRIu64 "\n",
                  stop1, v_log, v_stats, v_ckpt);
    assert_true(v_log >= 3);
    assert_int_equal(v_stats, v_log);
    assert_int_equal(v_ckpt, (uint64_t)v_log);

    /* restart with the trainer frozen: nothing newer than the checkpoint can appear */
    assert_int_equal(kill(trainer, SIGSTOP), 0);
    static const s_daemon_t agg_d = {
        "aggregator", {P_UPDATES, P_AGG_MODELS, P_HTTP_AGG, P_ACKS}, 4, "version ", NULL};
    char want[64], line[96];
    snprintf(want, sizeof want, "version %" PRIu64 ", ", v_ckpt);
    snprintf(line, sizeof line, "(7850 params) at version %" PRIu64 ";", v_ckpt);
    s_listener_t *l2 = s_listener_new(c, &agg_d, "aggregator2.log", want);
    zsock_t *sub = zsock_new(ZMQ_SUB);
    assert_non_null(sub);
    zsock_set_linger(sub, 0);
    zsock_set_subscribe(sub, "");
    zsock_set_rcvtimeo(sub, 200);
    assert_int_equal(zsock_connect(sub, "tcp://127.0.0.1:%d", c->ports[P_AGG_MODELS]), 0);
    agg = s_spawn(c, "aggregator", "aggregator2.log", l2, 0);
    int ready = s_wait_ready(l2, agg, "aggregator");
    print_message("restarted aggregator: READY=1 with '%s'\n",
                  strchr(s_note(l2, ready).text, '\n') + 1);
    assert_int_equal(s_stats_version(c), (int64_t)v_ckpt);
    int64_t first = s_first_model(sub, c->layout);
    zsock_destroy(&sub);
    assert_int_equal(first, (int64_t)v_ckpt);
    assert_true(fm_proc_file_contains(log2, line));
    assert_int_equal(kill(trainer, SIGCONT), 0);
    s_wait_version(c, (int64_t)v_ckpt + 2, S_VERSION_S);
    print_message("resumed at version %" PRIu64 " exactly (READY=1, stats.json, first MODEL); "
                  "now at %" PRId64 "\n",
                  v_ckpt, s_stats_version(c));

    /* the trainer finishes or abandons its local step and says BYE; then the others */
    s_term(NULL, trainer, "trainer");
    assert_true(fm_proc_file_contains(tlog, "BYE sent"));
    s_term(NULL, broker, "broker");
    s_term(l2, agg, "aggregator");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_broker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_aggregator, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_evaluator, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_trainer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wedge, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_aggregator_sigterm_midrun, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
