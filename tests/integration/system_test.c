/* The whole federation with real processes on loopback (mlp, small, fast). What it proves,
 * each with an exact check:
 *  - progress: versions advance;
 *  - a late joiner gets the current model at once: with the aggregator frozen (SIGSTOP), so
 *    that no version can be produced or re-published in between, a SNAPSHOT_REQ and a HELLO
 *    from a test DEALER are each answered within S_AT_ONCE_S with a MODEL whose version is
 *    the one the broker last forwarded; a trainer started then (real daemon) takes that
 *    same version as its first model;
 *  - a trainer killed with SIGKILL mid-training changes nothing but its missing updates
 *    (versions go on, no update is rejected);
 *  - the aggregator killed with SIGKILL and restarted resumes at exactly the newest version
 *    in its checkpoint store (read with fm_ckpt after the kill): its log, its first
 *    stats.json and the first MODEL the broker forwards all say that version (the trainer
 *    is frozen meanwhile, so nothing newer can exist); afterwards no version observed in
 *    stats.json or on the broker's PUB is lower than it or than one observed before;
 *  - the run converges (the evaluator's metrics pass an accuracy bar);
 *  - every daemon still running stops with exit 0 on SIGTERM.
 * Every wait is a bounded poll; their bounds add up to well under the ctest timeout. */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <czmq.h>

#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define BIN(x) FM_BIN_DIR "/fedmq-" x

/* Bounds (seconds), sized for a loaded 2-core machine with sanitizers (where the whole test
 * takes about 40 s). Every wait below uses one of them once, so the worst case is their sum:
 * 30 + 2*5 + 2*3 + 20 + 30 + 5 + 30 + 5 + 5 + 20 + 30 + 30 + 4*8 = 253 s, under the 300 s
 * ctest timeout. */
#define S_START_S 30.0    /* first versions after the start */
#define S_AT_ONCE_S 3.0   /* a snapshot reply from the broker's cache */
#define S_QUIET_S 1.0     /* no MODEL on the broker's PUB for this long: it is settled */
#define S_SETTLE_S 5.0    /* ... reached within this */
#define S_TRAINER_S 20.0  /* a new trainer loads its data and takes its first model */
#define S_PROGRESS_S 30.0 /* three more versions */
#define S_REAP_S 5.0      /* a SIGKILLed child is reaped */
#define S_RESTART_S 20.0  /* a restarted aggregator has resumed, written stats, published */
#define S_CONVERGE_S 30.0 /* the accuracy bar */
#define S_STOP_S 8.0      /* SIGTERM to exit, per daemon */
#define S_ACC_BAR 0.80
#define MODEL_NAME "mlp"

typedef struct {
    char dir[512];
    char sets[20][800];
    int nsets;
    fm_proc_set_t procs;
    char stats[700], metrics[700], ckpt[700];
    fm_model_t *layout;
    fm_wire_tensors_t *tensors; /* decode scratch */
    fm_wire_buf_t buf;
    zsock_t *bsub; /* the test's SUB on the broker's model_pub */
} sys_t;

/* ---- helpers ------------------------------------------------------------------------- */

static double s_t0;
static sys_t *s_sys; /* for the teardown: children are reaped even when an assert fails */

static void s_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    print_message("[%6.1fs] %s\n", fm_proc_now() - s_t0, line);
}

/* Best accuracy in the evaluator's metrics file so far. */
static double s_best_acc(const char *path)
{
    FILE *f = fopen(path, "r");
    double best = 0;
    if (!f)
        return 0;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *a = strstr(line, "\"accuracy\":");
        if (a && strtod(a + 11, NULL) > best)
            best = strtod(a + 11, NULL);
    }
    fclose(f);
    return best;
}

static pid_t s_start(sys_t *s, const char *bin, const char *log, const char *extra)
{
    char *av[2 + 2 * 18 + 1], met[64];
    int ac = 0;
    av[ac++] = (char *)bin;
    av[ac++] = "--set"; /* /metrics on a reserved port, one per process (two trainers) */
    av[ac++] = fm_proc_metrics_set(met, sizeof met, strrchr(bin, '-') + 1, NULL);
    for (int i = 0; i < s->nsets; i++) {
        av[ac++] = "--set";
        av[ac++] = s->sets[i];
    }
    if (extra) {
        av[ac++] = "--set";
        av[ac++] = (char *)extra;
    }
    av[ac] = NULL;
    char path[700];
    snprintf(path, sizeof path, "%s/%s", s->dir, log);
    return fm_proc_spawn(&s->procs, av, path);
}

/* The aggregator's stats.json, or 0 (with *ok = 0) while it cannot be read. */
static fm_stats_t s_stats_try(const sys_t *s, int *ok)
{
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    *ok = fm_stats_read(s->stats, &st, NULL) == 0;
    return st;
}

/* The aggregator's stats.json; the test fails when it cannot be read. */
static fm_stats_t s_stats(const sys_t *s)
{
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    if (fm_stats_read(s->stats, &st, &e) != 0)
        fail_msg("%s", e.msg);
    return st;
}

typedef struct {
    const sys_t *s;
    uint64_t min;
} s_vcond_t;

static int s_version_at_least(void *arg)
{
    s_vcond_t *c = arg;
    int ok;
    fm_stats_t st = s_stats_try(c->s, &ok);
    return ok && st.version >= c->min;
}

static void s_wait_version(const sys_t *s, uint64_t min, double timeout_s)
{
    s_vcond_t c = {s, min};
    if (!fm_proc_wait_for(s_version_at_least, &c, timeout_s)) {
        int ok;
        fm_stats_t st = s_stats_try(s, &ok);
        fail_msg("stats.json: version %" PRIu64 " not reached within %.0f s (at %" PRIu64 "%s)",
                 min, timeout_s, st.version, ok ? "" : ", unreadable");
    }
}

typedef struct {
    const char *path;
    double min;
} s_acond_t;

static int s_acc_at_least(void *arg)
{
    s_acond_t *c = arg;
    return s_best_acc(c->path) >= c->min;
}

/* The number after `prefix` on the first line of a log that has it. 1 if found. */
static int s_log_number(const char *path, const char *prefix, uint64_t *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, prefix);
        if (p) {
            *out = strtoull(p + strlen(prefix), NULL, 10);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

typedef struct {
    const char *path, *prefix;
    uint64_t value;
} s_lcond_t;

static int s_log_number_cond(void *arg)
{
    s_lcond_t *c = arg;
    return s_log_number(c->path, c->prefix, &c->value);
}

/* The newest valid version in the checkpoint store (and the newest ever saved, which must
 * be the same one: nothing here corrupts a record). Opened and closed again, while no
 * aggregator runs. */
static uint64_t s_ckpt_newest(const sys_t *s)
{
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_ckpt_t *c = fm_ckpt_open(s->ckpt, 0, &err, &e);
    if (!c)
        fail_msg("%s: %s", s->ckpt, e.msg);
    fm_ckpt_info_t info[64];
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(c, info, 64, &n, &e), 0);
    assert_true(n > 0);
    uint64_t newest = 0;
    int found = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        if (info[i].status == 0 && (!found || info[i].version > newest)) {
            newest = info[i].version;
            found = 1;
        }
    assert_true(found);
    uint64_t latest = 0;
    assert_int_equal(fm_ckpt_latest_version(c, &latest, &e), 0);
    assert_int_equal(latest, newest);
    fm_ckpt_close(&c);
    return newest;
}

static zsock_t *s_socket(int type, const char *endpoint)
{
    zsock_t *z = zsock_new(type);
    assert_non_null(z);
    zsock_set_linger(z, 0);
    zsock_set_rcvhwm(z, 4);
    zsock_set_maxmsgsize(z, 8 << 20);
    if (type == ZMQ_SUB) {
        zsock_set_conflate(z, 1); /* only the newest MODEL matters (before connect) */
        zsock_set_subscribe(z, "");
    }
    assert_int_equal(zsock_connect(z, "%s", endpoint), 0);
    return z;
}

/* One MODEL of our layout from z within timeout_s: 1 with its version, 0 on timeout. Any
 * other frame fails the test. */
static int s_recv_model(sys_t *s, zsock_t *z, double timeout_s, uint64_t *version)
{
    zpoller_t *p = zpoller_new(z, NULL);
    assert_non_null(p);
    void *which = zpoller_wait(p, (int)(timeout_s * 1000));
    zpoller_destroy(&p);
    if (which != z)
        return 0;
    zframe_t *f = zframe_recv(z);
    assert_non_null(f);
    fm_wire_model_t hdr;
    fm_errmsg_t e = {{0}};
    if (fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, s->tensors, &e) != 0)
        fail_msg("not a MODEL: %s", e.msg);
    assert_string_equal(hdr.model, MODEL_NAME);
    assert_int_equal(fm_wire_tensors_check(s->tensors, s->layout, &e), 0);
    zframe_destroy(&f);
    *version = hdr.version;
    return 1;
}

/* Read MODELs from the (conflating) SUB until none comes for S_QUIET_S; within S_SETTLE_S.
 * *last is left alone when none came. Returns how many were read. */
static int s_settle(sys_t *s, zsock_t *sub, uint64_t *last)
{
    double end = fm_proc_now() + S_SETTLE_S;
    int n = 0;
    uint64_t v;
    while (s_recv_model(s, sub, S_QUIET_S, &v)) {
        *last = v;
        n++;
        if (fm_proc_now() > end)
            fail_msg("the broker still forwards models after %.0f s", S_SETTLE_S);
    }
    return n;
}

/* A late joiner's request on a new DEALER: the MODEL reply's version, and the seconds from
 * the send to the reply in *secs. Fails if none comes within S_AT_ONCE_S. */
static uint64_t s_ask(sys_t *s, const char *endpoint, fm_wire_type_t type, double *secs)
{
    zsock_t *d = s_socket(ZMQ_DEALER, endpoint);
    if (type == FM_WIRE_SNAPSHOT_REQ) {
        fm_wire_snapshot_req_t r = {.from = "system-test", .have = 0};
        assert_int_equal(fm_wire_encode_snapshot_req(&r, &s->buf), 0);
    } else {
        fm_wire_member_t m = {.pid = (uint32_t)getpid(),
                              .client_first = 0,
                              .client_count = 0,
                              .workers = 1,
                              .seq = 0};
        snprintf(m.trainer, sizeof m.trainer, "system-test");
        assert_int_equal(fm_wire_encode_member(type, &m, &s->buf), 0);
    }
    double t0 = fm_proc_now();
    zframe_t *f = zframe_new(s->buf.data, s->buf.len);
    assert_int_equal(zframe_send(&f, d, 0), 0);
    uint64_t v = 0;
    if (!s_recv_model(s, d, S_AT_ONCE_S, &v))
        fail_msg("no MODEL within %.1f s of a %s", S_AT_ONCE_S, fm_wire_type_name(type));
    *secs = fm_proc_now() - t0;
    if (type == FM_WIRE_HELLO) { /* leave cleanly */
        fm_wire_member_t m = {.pid = (uint32_t)getpid(), .workers = 1, .seq = 1};
        snprintf(m.trainer, sizeof m.trainer, "system-test");
        assert_int_equal(fm_wire_encode_member(FM_WIRE_BYE, &m, &s->buf), 0);
        f = zframe_new(s->buf.data, s->buf.len);
        assert_int_equal(zframe_send(&f, d, 0), 0);
    }
    zsock_destroy(&d);
    return v;
}

static void s_signal(pid_t pid, int sig) { assert_int_equal(kill(pid, sig), 0); }

/* ---- the test ------------------------------------------------------------------------ */

static void test_federation(void **state)
{
    (void)state;
    s_t0 = fm_proc_now();
    sys_t *s = s_sys = calloc(1, sizeof *s);
    assert_non_null(s);
    int err = 0;
    s->layout = fm_model_new(MODEL_NAME, &err);
    s->tensors = calloc(1, sizeof *s->tensors);
    assert_non_null(s->layout);
    assert_non_null(s->tensors);
    assert_int_equal(fm_proc_tmpdir(s->dir, sizeof s->dir), 0);
    int p[6];
    for (int i = 0; i < 6; i++)
        p[i] = fm_proc_free_port();
    char ep_pub[64], ep_snap[64];
    snprintf(ep_pub, sizeof ep_pub, "tcp://127.0.0.1:%d", p[0]);
    snprintf(ep_snap, sizeof ep_snap, "tcp://127.0.0.1:%d", p[1]);
    snprintf(s->sets[s->nsets++], 800, "endpoints.model_pub=%s", ep_pub);
    snprintf(s->sets[s->nsets++], 800, "endpoints.snapshot=%s", ep_snap);
    snprintf(s->sets[s->nsets++], 800, "endpoints.updates=tcp://127.0.0.1:%d", p[2]);
    snprintf(s->sets[s->nsets++], 800, "endpoints.aggregator_models=tcp://127.0.0.1:%d", p[3]);
    snprintf(s->sets[s->nsets++], 800, "endpoints.metrics_pub=tcp://127.0.0.1:%d", p[4]);
    snprintf(s->sets[s->nsets++], 800, "endpoints.acks=tcp://127.0.0.1:%d", p[5]);
    snprintf(s->sets[s->nsets++], 800, "federation.model=" MODEL_NAME);
    snprintf(s->sets[s->nsets++], 800, "federation.num_clients=20");
    snprintf(s->sets[s->nsets++], 800, "federation.partition=iid");
    snprintf(s->sets[s->nsets++], 800, "trainer.clients=0-9");
    snprintf(s->sets[s->nsets++], 800, "trainer.workers=1");
    snprintf(s->sets[s->nsets++], 800, "aggregator.buffer_k=5");
    snprintf(s->sets[s->nsets++], 800, "aggregator.checkpoint_every=1");
    snprintf(s->ckpt, sizeof s->ckpt, "%s/ckpt", s->dir);
    snprintf(s->stats, sizeof s->stats, "%s/ckpt/stats.json", s->dir);
    snprintf(s->metrics, sizeof s->metrics, "%s/metrics.jsonl", s->dir);
    snprintf(s->sets[s->nsets++], 800, "aggregator.checkpoint_dir=%s", s->ckpt);
    snprintf(s->sets[s->nsets++], 800, "evaluator.metrics_file=%s", s->metrics);
    char tlog2[700], alog2[700];
    snprintf(tlog2, sizeof tlog2, "%s/trainer2.log", s->dir);
    snprintf(alog2, sizeof alog2, "%s/aggregator2.log", s->dir);

    /* the test watches what the broker forwards (newest only) from the start */
    zsock_t *bsub = s->bsub = s_socket(ZMQ_SUB, ep_pub);

    pid_t agg = s_start(s, BIN("aggregator"), "aggregator.log", NULL);
    assert_true(agg > 0);
    pid_t broker = s_start(s, BIN("broker"), "broker.log", NULL);
    assert_true(broker > 0);
    pid_t eval = s_start(s, BIN("evaluator"), "evaluator.log", NULL);
    assert_true(eval > 0);
    pid_t tr1 = s_start(s, BIN("trainer"), "trainer1.log", NULL);
    assert_true(tr1 > 0);

    /* progress: versions advance */
    s_wait_version(s, 3, S_START_S);
    s_note("version %" PRIu64 " reached", s_stats(s).version);

    /* a late joiner gets the current model at once. Freeze the aggregator (no new version,
     * no re-publish) and the trainer (no backlog); once the broker's PUB is quiet, the
     * last MODEL it forwarded is the current one, and only its cache can answer. */
    s_signal(agg, SIGSTOP);
    s_signal(tr1, SIGSTOP);
    uint64_t cur = UINT64_MAX;
    s_settle(s, bsub, &cur);
    assert_true(cur != UINT64_MAX);   /* the broker forwarded at least one model */
    uint64_t sv = s_stats(s).version; /* the aggregator writes stats.json after publishing */
    assert_true(sv == cur || sv + 1 == cur);
    double secs_snap = 0, secs_hello = 0;
    assert_int_equal(s_ask(s, ep_snap, FM_WIRE_SNAPSHOT_REQ, &secs_snap), cur);
    assert_int_equal(s_ask(s, ep_snap, FM_WIRE_HELLO, &secs_hello), cur);
    s_note("current version %" PRIu64 ": SNAPSHOT_REQ answered in %.3f s, HELLO in %.3f s", cur,
           secs_snap, secs_hello);
    /* a real trainer joining now takes that version as its first model */
    pid_t tr2 = s_start(s, BIN("trainer"), "trainer2.log", "trainer.clients=10-19");
    assert_true(tr2 > 0);
    s_lcond_t first = {tlog2, "first model: v", 0};
    assert_true(fm_proc_wait_for(s_log_number_cond, &first, S_TRAINER_S));
    assert_int_equal(first.value, cur);
    s_note("late trainer: first model v%" PRIu64, first.value);
    uint64_t none = UINT64_MAX;
    assert_int_equal(s_settle(s, bsub, &none), 0); /* and nothing newer existed meanwhile */
    s_signal(agg, SIGCONT);
    s_signal(tr1, SIGCONT);

    /* SIGKILL a trainer mid-training: the others go on, nothing is rejected */
    fm_stats_t before = s_stats(s);
    s_signal(tr1, SIGKILL);
    assert_true(fm_proc_wait(tr1, S_REAP_S) != -1);
    s_wait_version(s, before.version + 3, S_PROGRESS_S);
    assert_int_equal(s_stats(s).updates_rejected, before.updates_rejected);
    s_note("trainer 1 killed at version %" PRIu64 "; now at %" PRIu64 ", nothing rejected",
           before.version, s_stats(s).version);

    /* SIGKILL the aggregator while the remaining trainer sends updates, then freeze the
     * trainer (so nothing newer than the resumed version can appear), read the checkpoint
     * store, restart the aggregator */
    s_signal(agg, SIGKILL);
    s_signal(tr2, SIGSTOP);
    assert_true(fm_proc_wait(agg, S_REAP_S) != -1);
    uint64_t ck = s_ckpt_newest(s);
    uint64_t killed_stats = s_stats(s).version;
    assert_true(killed_stats <= ck); /* stats.json is written after the checkpoint */
    s_settle(s, bsub, &none);        /* what the old aggregator published is gone */
    assert_int_equal(remove(s->stats), 0);
    agg = s_start(s, BIN("aggregator"), "aggregator2.log", NULL);
    assert_true(agg > 0);
    double restart_end = fm_proc_now() + S_RESTART_S; /* one bound for the three checks */
    s_lcond_t resumed = {alog2, "resumed from checkpoint version ", 0};
    assert_true(fm_proc_wait_for(s_log_number_cond, &resumed, restart_end - fm_proc_now()));
    assert_int_equal(resumed.value, ck);
    s_vcond_t any = {s, 0};
    assert_true(fm_proc_wait_for(s_version_at_least, &any, restart_end - fm_proc_now()));
    assert_int_equal(s_stats(s).version, ck);
    uint64_t fwd = 0; /* re-published every second */
    assert_true(s_recv_model(s, bsub, fmax(restart_end - fm_proc_now(), 0.01), &fwd));
    assert_int_equal(fwd, ck);
    s_note("aggregator killed (checkpoint v%" PRIu64 ", stats v%" PRIu64 "): resumed at v%" PRIu64
           ", stats v%" PRIu64 ", broker forwards v%" PRIu64,
           ck, killed_stats, resumed.value, s_stats(s).version, fwd);

    /* from now on, no version is lower than the checkpoint or than one seen before */
    s_signal(tr2, SIGCONT);
    uint64_t last_st = ck, last_fwd = fwd;
    int nst = 0, nfwd = 0;
    double end = fm_proc_now() + S_PROGRESS_S;
    while (last_st < ck + 3) {
        if (fm_proc_now() > end)
            fail_msg("stats.json: version %" PRIu64 " not reached within %.0f s of the restart "
                     "(at %" PRIu64 ")",
                     ck + 3, S_PROGRESS_S, last_st);
        int ok;
        fm_stats_t st = s_stats_try(s, &ok);
        if (ok) {
            if (st.version < last_st)
                fail_msg("stats.json: version %" PRIu64 " after %" PRIu64 " (checkpoint %" PRIu64
                         ")",
                         st.version, last_st, ck);
            last_st = st.version;
            nst++;
        }
        uint64_t v;
        if (s_recv_model(s, bsub, 0.02, &v)) {
            if (v < last_fwd)
                fail_msg("broker forwarded version %" PRIu64 " after %" PRIu64
                         " (checkpoint %" PRIu64 ")",
                         v, last_fwd, ck);
            last_fwd = v;
            nfwd++;
        }
    }
    s_note("after the restart: %d stats.json reads and %d forwarded models, none below v%" PRIu64
           "; now at v%" PRIu64,
           nst, nfwd, ck, last_st);

    /* and the run converges */
    s_acond_t acc = {s->metrics, S_ACC_BAR};
    if (!fm_proc_wait_for(s_acc_at_least, &acc, S_CONVERGE_S))
        fail_msg("accuracy %.2f not reached within %.0f s (best %.4f)", S_ACC_BAR, S_CONVERGE_S,
                 s_best_acc(s->metrics));
    s_note("best accuracy %.4f", s_best_acc(s->metrics));

    /* clean stop of everyone still running: exit 0 */
    pid_t live[] = {tr2, eval, broker, agg};
    const char *names[] = {"trainer 2", "evaluator", "broker", "aggregator"};
    for (int i = 0; i < 4; i++) {
        int st = fm_proc_stop(live[i], SIGTERM, S_STOP_S);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("%s: wait status 0x%x after SIGTERM, expected exit 0", names[i], st);
    }
    s_note("all stopped");
}

/* Kill and reap every child (a failed assert leaves some running, some SIGSTOPped), remove
 * the temp dir, free. */
static int s_teardown(void **state)
{
    (void)state;
    sys_t *s = s_sys;
    s_sys = NULL;
    if (!s)
        return 0;
    fm_proc_reap_all(&s->procs);
    fm_zdrain_destroy(&s->bsub); /* after the broker: nothing more can arrive */
    if (s->dir[0])
        fm_proc_rmtree(s->dir);
    fm_wire_buf_free(&s->buf);
    free(s->tensors);
    fm_model_destroy(&s->layout);
    free(s);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(test_federation, s_teardown)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
