/* snapshot_flood_test (issue 11): hostile clients on the broker's snapshot socket, against
 * the real fedmq-broker on loopback; the test plays the aggregator (PUB bound on
 * aggregator_models) and the clients (DEALERs on snapshot).
 *
 * 1. The flood: three DEALERs send 1,500 SNAPSHOT_REQs each and never read, while a new mlp
 *    MODEL is published every 100 ms. The broker's peak RSS (VmHWM) stays within the bound
 *    docs/OPERATIONS.md gives for it ("Queues and memory per socket"), computed here from
 *    broker_server.h's constants; every request is accounted for in /metrics (served or
 *    withheld by reason); a well-behaved late joiner that asks in the middle of the flood
 *    gets a model of the flood at once; the summary line reports the same counts.
 * 2. The rules one by one: a request before any model from a peer that then disconnects is
 *    counted "gone"; a repeat within BROKER_SNAPSHOT_REPEAT_S is withheld; a newer model goes
 *    at once; the same model goes again once the window has passed.
 * Every wait is bounded; the broker is stopped with SIGTERM (exit 0 asserted) and reaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "broker_server.h"
#include "fm_model.h"
#include "fm_wire.h"

#if defined(__SANITIZE_ADDRESS__)
#define S_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_ASAN 1
#endif
#endif
#ifndef S_ASAN
#define S_ASAN 0
#endif

#define S_WAIT_S 10.0
#define S_FLOODERS 3
#define S_FLOOD_REQS 1500                  /* per flooder */
#define S_BURST 10                         /* requests per flooder per round */
#define S_ROUND_S 0.02                     /* pace of the rounds */
#define S_PUBLISH_EVERY_S 0.1              /* a new model version this often during the flood */
#define S_LATE_MAX_S 1.0                   /* the late joiner's reply within this */
#define S_SLACK_BYTES (16.0 * 1024 * 1024) /* allocator and libzmq buffers beyond the bound */
/* ASan builds: the broker's quarantine of freed memory (set below, for the broker only) and
 * shadow memory (1/8 of what is allocated) come on top */
#define S_ASAN_QUARANTINE_MB 8

typedef struct {
    fm_proc_set_t procs;
    char dir[512], log[600];
    char ep_agg[64], ep_pub[64], ep_snap[64];
    int metrics_port;
    pid_t pid;
    zsock_t *agg; /* the test's "aggregator" PUB */
    fm_model_t *layout;
    fm_wire_buf_t buf;          /* MODEL frames */
    fm_wire_buf_t req;          /* one SNAPSHOT_REQ */
    fm_wire_tensors_t *tensors; /* decode scratch */
    uint64_t requests;          /* SNAPSHOT_REQs sent since the first model was cached */
    zsock_t *socks[8];          /* the DEALERs, closed in the teardown (also after a failure) */
    int nsocks;
} fx_t;

/* ---- helpers --------------------------------------------------------------------------- */

/* The value of `series` on the broker's /metrics, polled until it answers. */
static double s_metric(fx_t *fx, const char *series)
{
    double end = fm_proc_now() + S_WAIT_S;
    for (;;) {
        fm_http_resp_t r;
        double v = 0;
        int ok = fm_http_request(fx->metrics_port, "GET", "/metrics", &r) == 0 &&
                 r.status == 200 && fm_http_sample(r.body, series, &v);
        fm_http_free(&r);
        if (ok)
            return v;
        if (fm_proc_now() > end)
            fail_msg("no %s on the broker's /metrics within %.0f s", series, S_WAIT_S);
        fm_proc_sleep(0.05);
    }
}

#define S_SERVED "fedmq_snapshots_served_total"
#define S_REPEAT "fedmq_snapshots_withheld_total{reason=\"repeat\"}"
#define S_FULL "fedmq_snapshots_withheld_total{reason=\"queue_full\"}"
#define S_GONE "fedmq_snapshots_withheld_total{reason=\"gone\"}"

/* Requests the broker has answered or withheld so far. */
static double s_accounted(fx_t *fx)
{
    return s_metric(fx, S_SERVED) + s_metric(fx, S_REPEAT) + s_metric(fx, S_FULL) +
           s_metric(fx, S_GONE);
}

/* Poll until every request sent is accounted for; returns the count seen. */
static double s_wait_accounted(fx_t *fx, double want)
{
    double end = fm_proc_now() + S_WAIT_S, v;
    while ((v = s_accounted(fx)) < want && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    return v;
}

typedef struct {
    const char *path, *needle;
} s_grep_t;

static int s_grep_cond(void *arg)
{
    s_grep_t *g = arg;
    return fm_proc_file_contains(g->path, g->needle);
}

/* A field ("VmRSS:", "VmHWM:") of /proc/<pid>/status in bytes, or -1. */
static double s_proc_bytes(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    double v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0)
            v = strtod(line + n, NULL) * 1024.0;
    fclose(f);
    return v;
}

/* The aggregator publishes MODEL (version, ts) once. */
static void s_publish(fx_t *fx, uint64_t version, double ts)
{
    fm_wire_model_t hdr = {.version = version, .created = ts};
    assert_int_equal(
        fm_wire_encode_model(&hdr, fx->layout, fm_model_params_const(fx->layout), &fx->buf), 0);
    zframe_t *f = zframe_new(fx->buf.data, fx->buf.len);
    assert_non_null(f);
    assert_int_equal(zframe_send(&f, fx->agg, 0), 0);
}

/* Publish `version` until the broker's fedmq_model_version gauge shows it (bounded). */
static void s_publish_until_cached(fx_t *fx, uint64_t version)
{
    double end = fm_proc_now() + S_WAIT_S;
    do {
        s_publish(fx, version, 1000.0 + (double)version);
        if (s_metric(fx, "fedmq_model_version") == (double)version)
            return;
        fm_proc_sleep(0.05);
    } while (fm_proc_now() < end);
    fail_msg("the broker did not cache version %llu within %.0f s", (unsigned long long)version,
             S_WAIT_S);
}

/* Send one SNAPSHOT_REQ on `s` (blocking up to its send timeout) and count it. */
static void s_request(fx_t *fx, zsock_t *s)
{
    int n = zmq_send(zsock_resolve(s), fx->req.data, fx->req.len, 0);
    if (n != (int)fx->req.len)
        fail_msg("SNAPSHOT_REQ not sent: %s", zmq_strerror(zmq_errno()));
    fx->requests++;
}

/* Receive one MODEL on `s` within timeout_s: 1 with its version, or 0. A frame that is not a
 * valid MODEL of the layout fails the test. */
static int s_recv_model(fx_t *fx, zsock_t *s, double timeout_s, uint64_t *version)
{
    zmq_pollitem_t it = {zsock_resolve(s), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, (long)(timeout_s * 1000)) != 1)
        return 0;
    zmsg_t *msg = zmsg_recv(s);
    assert_non_null(msg);
    assert_int_equal(zmsg_size(msg), 1);
    zframe_t *f = zmsg_first(msg);
    fm_wire_model_t hdr;
    fm_errmsg_t e = {{0}};
    if (fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, fx->tensors, &e) != 0 ||
        fm_wire_tensors_check(fx->tensors, fx->layout, &e) != 0)
        fail_msg("the reply is not a MODEL of the layout: %s", e.msg);
    zmsg_destroy(&msg);
    *version = hdr.version;
    return 1;
}

/* A DEALER on the snapshot socket. `hostile`: it will never read; its own queue holds one
 * message and its kernel receive buffer is small, so what the broker sends backs up into
 * the broker, as with a client that stopped reading the TCP connection. */
static zsock_t *s_dealer(fx_t *fx, int hostile)
{
    zsock_t *d = zsock_new(ZMQ_DEALER);
    assert_non_null(d);
    zsock_set_linger(d, 0);
    zsock_set_sndtimeo(d, 5000);
    if (hostile) {
        zsock_set_rcvhwm(d, 1);
        zsock_set_rcvbuf(d, 64 * 1024);
    }
    assert_int_equal(zsock_connect(d, "%s", fx->ep_snap), 0);
    assert_true(fx->nsocks < (int)(sizeof fx->socks / sizeof fx->socks[0]));
    fx->socks[fx->nsocks++] = d;
    return d;
}

/* Close a DEALER of the fixture. */
static void s_close(fx_t *fx, zsock_t **d)
{
    for (int i = 0; i < fx->nsocks; i++)
        if (fx->socks[i] == *d)
            fx->socks[i] = NULL;
    zsock_destroy(d);
}

/* Start the broker serving `model` at `log_level` and wait until /metrics answers. */
static void s_start_broker(fx_t *fx, const char *model, char *log_level)
{
    char set_agg[128], set_pub[128], set_snap[128], set_met[64], set_model[64];
    snprintf(set_agg, sizeof set_agg, "endpoints.aggregator_models=%s", fx->ep_agg);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", fx->ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", fx->ep_snap);
    snprintf(set_model, sizeof set_model, "federation.model=%s", model);
    fm_proc_metrics_set(set_met, sizeof set_met, "broker", &fx->metrics_port);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker",
                    "--set",
                    set_met,
                    "--set",
                    set_model,
                    "--set",
                    set_agg,
                    "--set",
                    set_pub,
                    "--set",
                    set_snap,
                    "--log-level",
                    log_level,
                    NULL};
    if (S_ASAN) { /* for the broker only: a small quarantine, so RSS follows what is live */
        char opts[512];
        const char *old = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=%d", old ? old : "",
                 old && *old ? ":" : "", S_ASAN_QUARANTINE_MB);
        setenv("ASAN_OPTIONS", opts, 1);
    }
    fx->pid = fm_proc_spawn(&fx->procs, argv, fx->log);
    assert_true(fx->pid > 0);
    s_metric(fx, "process_open_fds"); /* it answers */
}

/* SIGTERM: the broker exits 0 (under ASan also: no leak at exit). */
static void s_stop_broker(fx_t *fx)
{
    int st = fm_proc_stop(fx->pid, SIGTERM, 10.0);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fx->pid = -1;
}

static int s_setup(void **state)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->pid = -1;
    assert_int_equal(fm_proc_tmpdir(fx->dir, sizeof fx->dir), 0);
    snprintf(fx->log, sizeof fx->log, "%s/broker.log", fx->dir);
    snprintf(fx->ep_agg, sizeof fx->ep_agg, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(fx->ep_pub, sizeof fx->ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(fx->ep_snap, sizeof fx->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    fx->tensors = calloc(1, sizeof *fx->tensors);
    assert_non_null(fx->tensors);
    fm_wire_snapshot_req_t r = {.from = "flood-test", .have = 0};
    assert_int_equal(fm_wire_encode_snapshot_req(&r, &fx->req), 0);
    fx->agg = zsock_new(ZMQ_PUB);
    assert_non_null(fx->agg);
    zsock_set_linger(fx->agg, 0);
    assert_true(zsock_bind(fx->agg, "%s", fx->ep_agg) > 0);
    *state = fx;
    return 0;
}

static int s_teardown(void **state)
{
    fx_t *fx = *state;
    fm_proc_reap_all(&fx->procs);
    for (int i = 0; i < fx->nsocks; i++)
        zsock_destroy(&fx->socks[i]);
    zsock_destroy(&fx->agg);
    fm_wire_buf_free(&fx->buf);
    fm_wire_buf_free(&fx->req);
    free(fx->tensors);
    fm_model_destroy(&fx->layout);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "broker log kept: %s\n", fx->log);
    else
        fm_proc_rmtree(fx->dir);
    free(fx);
    return 0;
}

static void s_layout(fx_t *fx, const char *model)
{
    int err = 0;
    fx->layout = fm_model_new(model, &err);
    assert_non_null(fx->layout);
    fm_model_init(fx->layout, 7);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_flood(void **state)
{
    fx_t *fx = *state;
    s_layout(fx, "mlp");
    s_start_broker(fx, "mlp", "info");
    /* warm-up: a few versions through the broker, each asked for by a reading client */
    zsock_t *probe = s_dealer(fx, 0);
    uint64_t version = 0, got = 0;
    while (version < 5) {
        s_publish_until_cached(fx, ++version);
        s_request(fx, probe);
        assert_true(s_recv_model(fx, probe, S_WAIT_S, &got));
        assert_int_equal(got, version);
    }
    s_close(fx, &probe);
    double model_bytes = (double)fx->buf.len;
    double rss0 = s_proc_bytes(fx->pid, "VmRSS:");
    assert_true(rss0 > 0);
    /* the bound of docs/OPERATIONS.md for this broker: per peer that does not read, its
     * queued replies (BROKER_ROUTER_SNDHWM) and the one being written, each a model version
     * at worst; the SUB's queue; the cache and its reply copy */
    double bound = (S_FLOODERS * (BROKER_ROUTER_SNDHWM + 1) + BROKER_SUB_RCVHWM + 2) *
                   model_bytes;
    double allowed = bound + S_SLACK_BYTES;
    if (S_ASAN)
        allowed += S_ASAN_QUARANTINE_MB * 1048576.0 + (rss0 + bound) / 8;

    zsock_t *flooder[S_FLOODERS];
    for (int i = 0; i < S_FLOODERS; i++)
        flooder[i] = s_dealer(fx, 1);
    zsock_t *late = NULL;
    double t_late = 0, late_dt = -1, rss_max = rss0;
    uint64_t first_flood_version = version + 1, late_version = 0, version_at_late = 0;
    int sent = 0, aborted = 0, rounds = S_FLOOD_REQS / S_BURST;
    double t0 = fm_proc_now(), t_pub = t0;
    for (int round = 0; round < rounds && !aborted; round++) {
        for (int i = 0; i < S_FLOODERS; i++)
            for (int k = 0; k < S_BURST; k++)
                s_request(fx, flooder[i]);
        sent += S_FLOODERS * S_BURST;
        if (fm_proc_now() - t_pub >= S_PUBLISH_EVERY_S) {
            version++;
            s_publish(fx, version, 1000.0 + (double)version);
            t_pub = fm_proc_now();
        }
        if (round == rounds / 2) { /* a late joiner, in the middle of the flood */
            late = s_dealer(fx, 0);
            version_at_late = version;
            t_late = fm_proc_now();
            s_request(fx, late);
        }
        if (late && late_dt < 0 && s_recv_model(fx, late, 0, &late_version))
            late_dt = fm_proc_now() - t_late;
        double rss = s_proc_bytes(fx->pid, "VmRSS:");
        rss_max = rss > rss_max ? rss : rss_max;
        aborted = rss - rss0 > allowed + 64.0 * 1048576; /* clearly unbounded: stop here */
        fm_proc_sleep(S_ROUND_S);
    }
    double flood_s = fm_proc_now() - t0;
    uint64_t versions = version - first_flood_version + 1;
    if (late && late_dt < 0 && s_recv_model(fx, late, S_LATE_MAX_S, &late_version))
        late_dt = fm_proc_now() - t_late;

    double hwm = s_proc_bytes(fx->pid, "VmHWM:");
    double accounted = s_wait_accounted(fx, (double)fx->requests);
    double served = s_metric(fx, S_SERVED), repeat = s_metric(fx, S_REPEAT);
    double full = s_metric(fx, S_FULL), gone = s_metric(fx, S_GONE);
    print_message("flood: %d x %d SNAPSHOT_REQs in %.1f s, %llu %s versions (%.0f bytes) "
                  "published; broker RSS %.1f MiB before, peak %.1f MiB (polled max %.1f), "
                  "bound + slack %.1f MiB; served %.0f, withheld %.0f repeats, %.0f queues "
                  "full, %.0f gone; late joiner: version %llu after %.3f s%s\n",
                  S_FLOODERS, sent / S_FLOODERS, flood_s, (unsigned long long)versions,
                  fm_model_name(fx->layout), model_bytes, rss0 / 1048576, hwm / 1048576,
                  rss_max / 1048576, (rss0 + allowed) / 1048576, served, repeat, full, gone,
                  (unsigned long long)late_version, late_dt, S_ASAN ? " (ASan build)" : "");
    if (aborted || hwm - rss0 > allowed)
        fail_msg("the broker's RSS grew by %.1f MiB under the flood (allowed: %.1f MiB)",
                 (hwm - rss0) / 1048576, allowed / 1048576);
    assert_int_equal(sent, S_FLOODERS * S_FLOOD_REQS);
    /* every request answered or withheld, none lost or queued */
    assert_true(accounted == (double)fx->requests);
    /* a flooder is sent a model at most once per new version and once per repeat window;
     * the rest are repeats; some replies found a full queue */
    double attempts_max = S_FLOODERS *
                          ((double)versions + 1 + flood_s / BROKER_SNAPSHOT_REPEAT_S + 1);
    assert_true(served - 5 - 1 + full <= attempts_max);
    assert_true(repeat >= S_FLOODERS * S_FLOOD_REQS - attempts_max);
    assert_true(full >= 1);
    /* the late joiner got the current model at once: at most 5 publications (0.5 s) behind
     * the newest one when it asked */
    assert_non_null(late);
    if (late_dt < 0 || late_dt > S_LATE_MAX_S)
        fail_msg("the late joiner had no model within %.1f s of its request", S_LATE_MAX_S);
    assert_true(late_version + 5 >= version_at_late && late_version <= version);

    for (int i = 0; i < S_FLOODERS; i++)
        s_close(fx, &flooder[i]);
    s_close(fx, &late);
    s_stop_broker(fx);
    char want[256];
    snprintf(want, sizeof want,
             "%.0f snapshot replies withheld (%.0f repeats, %.0f queues full, %.0f peers gone)",
             repeat + full + gone, repeat, full, gone);
    if (!fm_proc_file_contains(fx->log, want))
        fail_msg("no summary line with \"%s\" in %s", want, fx->log);
}

static void test_rules(void **state)
{
    fx_t *fx = *state;
    s_layout(fx, "logreg");
    s_start_broker(fx, "logreg", "debug");
    uint64_t v = 0;

    /* a request before any model, from a peer that is gone when the first model arrives */
    double fds0 = s_metric(fx, "process_open_fds");
    zsock_t *early = s_dealer(fx, 0);
    s_request(fx, early);
    s_grep_t g = {fx->log, "DEBUG snapshot: request from flood-test"};
    assert_true(fm_proc_wait_for(s_grep_cond, &g, S_WAIT_S)); /* it waits for a model */
    s_close(fx, &early);
    double end = fm_proc_now() + S_WAIT_S;
    while (s_metric(fx, "process_open_fds") > fds0 && fm_proc_now() < end)
        fm_proc_sleep(0.02); /* its connection is closed */
    s_publish_until_cached(fx, 1);
    end = fm_proc_now() + S_WAIT_S;
    while (s_metric(fx, S_GONE) < 1 && fm_proc_now() < end)
        fm_proc_sleep(0.02);
    assert_true(s_metric(fx, S_GONE) == 1);
    assert_true(s_metric(fx, S_SERVED) == 0);
    fx->requests = 0;
    double base = s_accounted(fx);

    /* a client reads v1; asking again at once is a repeat */
    zsock_t *a = s_dealer(fx, 0);
    s_request(fx, a);
    assert_true(s_recv_model(fx, a, 0.5, &v));
    assert_int_equal(v, 1);
    s_request(fx, a);
    assert_false(s_recv_model(fx, a, 0.3, &v));
    assert_true(s_wait_accounted(fx, base + fx->requests) == base + fx->requests);
    assert_true(s_metric(fx, S_REPEAT) == 1);

    /* a newer model goes at once */
    s_publish_until_cached(fx, 2);
    double t_v2 = fm_proc_now();
    s_request(fx, a);
    assert_true(s_recv_model(fx, a, 0.5, &v));
    assert_int_equal(v, 2);

    /* the same model again: withheld until BROKER_SNAPSHOT_REPEAT_S has passed, then sent */
    double dt = -1;
    end = fm_proc_now() + BROKER_SNAPSHOT_REPEAT_S + S_WAIT_S;
    while (dt < 0 && fm_proc_now() < end) {
        s_request(fx, a);
        if (s_recv_model(fx, a, 0.1, &v))
            dt = fm_proc_now() - t_v2;
    }
    print_message("rules: the same model went again %.2f s after the last (window %.1f s)\n", dt,
                  BROKER_SNAPSHOT_REPEAT_S);
    assert_int_equal(v, 2);
    assert_true(dt >= BROKER_SNAPSHOT_REPEAT_S - 0.05 && dt <= BROKER_SNAPSHOT_REPEAT_S + 1.0);
    assert_true(s_wait_accounted(fx, base + fx->requests) == base + fx->requests);
    assert_true(s_metric(fx, S_SERVED) == 3);
    assert_true(s_metric(fx, S_REPEAT) == (double)fx->requests - 3);
    assert_true(s_metric(fx, S_FULL) == 0);
    s_close(fx, &a);
    s_stop_broker(fx);
}

int main(void)
{
    zsys_init();
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flood, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_rules, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
