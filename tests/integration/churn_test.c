/* Membership under churn (issue 10): 1,000 trainers that join and leave, each on a
 * connection of its own, grow neither the broker's nor the aggregator's file descriptors or
 * memory, and leave no one in the live set; trainers that vanish without a BYE leave it
 * within the heartbeat timeout.
 *
 * Read from each daemon's /metrics (process_open_fds, process_resident_memory_bytes,
 * fedmq_trainers_live, fedmq_clients_live): a baseline after 100 warm-up cycles, then 1,000
 * more. The RSS bound is checked in builds without AddressSanitizer only (its quarantine
 * keeps freed memory resident by design); there, LeakSanitizer at the daemon's exit (exit 0
 * required) is the memory check. */
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
#include "fm_wire.h"

#define S_WAIT_S 30.0
#define S_WARMUP 100
#define S_CYCLES 1000
#define S_RSS_GROWTH_MAX (8.0 * 1024 * 1024) /* bytes, over the 1,000 cycles */
#define BIN(x) FM_BIN_DIR "/fedmq-" x

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

typedef struct {
    char dir[256];
    fm_proc_set_t procs;
    fm_wire_buf_t buf;
} s_ctx_t;

/* The value of `series` on 127.0.0.1:port/metrics, polled until the daemon answers. */
static double s_metric(int port, const char *series)
{
    double end = fm_proc_now() + S_WAIT_S;
    for (;;) {
        fm_http_resp_t r;
        double v = 0;
        int ok = fm_http_request(port, "GET", "/metrics", &r) == 0 && r.status == 200 &&
                 fm_http_sample(r.body, series, &v);
        fm_http_free(&r);
        if (ok)
            return v;
        if (fm_proc_now() > end)
            fail_msg("no %s on 127.0.0.1:%d/metrics within %.0f s", series, port, S_WAIT_S);
        fm_proc_sleep(0.05);
    }
}

/* Poll until `series` <= want (a connection's teardown in libzmq is asynchronous). */
static double s_wait_at_most(int port, const char *series, double want)
{
    double end = fm_proc_now() + S_WAIT_S, v;
    while ((v = s_metric(port, series)) > want && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    return v;
}

/* One trainer's life: a new connection of `type` to `ep`, HELLO, (HEARTBEAT,) BYE unless
 * `vanish`, close. The id and pid are new each time (a new incarnation). */
static void s_trainer(s_ctx_t *c, int type, const char *ep, int i, int vanish)
{
    zsock_t *s = zsock_new(type);
    assert_non_null(s);
    zsock_set_linger(s, 1000); /* what was sent goes out, BYE or not */
    zsock_set_sndtimeo(s, 5000);
    assert_int_equal(zsock_connect(s, "%s", ep), 0);
    fm_wire_member_t m = {
        .pid = (uint32_t)(100000 + i), .client_first = (uint32_t)(i % 10), .client_count = 1};
    m.workers = 1;
    snprintf(m.trainer, sizeof m.trainer, "churn-%d", i);
    static const fm_wire_type_t life[] = {FM_WIRE_HELLO, FM_WIRE_HEARTBEAT, FM_WIRE_BYE};
    for (int k = 0; k < (vanish ? 2 : 3); k++) {
        m.seq = (uint64_t)k;
        assert_int_equal(fm_wire_encode_member(life[k], &m, &c->buf), 0);
        assert_int_equal(zmq_send(zsock_resolve(s), c->buf.data, c->buf.len, 0), (int)c->buf.len);
    }
    zsock_destroy(&s);
    /* let libzmq's reaper close it (linger): a test process has at most ZMQ_MAX_SOCKETS */
    fm_proc_sleep(0.002);
}

/* Start fedmq-<name> with its /metrics on a reserved port (returned). */
static int s_start(s_ctx_t *c, const char *name, char *const *sets, int nsets)
{
    char met[64], log[400], bin[300];
    int port = 0;
    fm_proc_metrics_set(met, sizeof met, name, &port);
    snprintf(log, sizeof log, "%s/%s.log", c->dir, name);
    snprintf(bin, sizeof bin, "%s/fedmq-%s", FM_BIN_DIR, name);
    char *argv[32];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; i < nsets; i++) {
        argv[n++] = "--set";
        argv[n++] = sets[i];
    }
    argv[n++] = "--set";
    argv[n++] = met;
    argv[n] = NULL;
    assert_true(fm_proc_spawn(&c->procs, argv, log) > 0);
    s_metric(port, "process_open_fds"); /* it answers */
    return port;
}

/* The churn against one daemon: `live` is its live-set gauge. */
static void s_churn(s_ctx_t *c, int port, int type, const char *ep, const char *live,
                    const char *who)
{
    for (int i = 0; i < S_WARMUP; i++)
        s_trainer(c, type, ep, i, 0);
    assert_true(s_wait_at_most(port, live, 0) == 0);
    double fd0 = s_metric(port, "process_open_fds");
    double rss0 = s_metric(port, "process_resident_memory_bytes");
    double t0 = fm_proc_now();
    for (int i = S_WARMUP; i < S_WARMUP + S_CYCLES; i++)
        s_trainer(c, type, ep, i, 0);
    double secs = fm_proc_now() - t0;
    assert_true(s_wait_at_most(port, live, 0) == 0);
    double fd1 = s_wait_at_most(port, "process_open_fds", fd0);
    double rss1 = s_metric(port, "process_resident_memory_bytes");
    print_message("%s: %d joins and leaves in %.1f s; open fds %.0f -> %.0f, RSS %.1f -> %.1f "
                  "MiB%s\n",
                  who, S_CYCLES, secs, fd0, fd1, rss0 / 1048576, rss1 / 1048576,
                  S_ASAN ? " (ASan build: RSS not bounded, LeakSanitizer at exit)" : "");
    assert_true(fd1 <= fd0);
    if (!S_ASAN && rss1 - rss0 > S_RSS_GROWTH_MAX)
        fail_msg("%s: RSS grew by %.1f MiB over %d joins and leaves", who,
                 (rss1 - rss0) / 1048576, S_CYCLES);
}

/* Stop with SIGTERM: exit 0 (under ASan also: no leak at exit). */
static void s_stop_all(s_ctx_t *c)
{
    for (int i = 0; i < c->procs.n; i++) {
        if (c->procs.pids[i] <= 0)
            continue;
        int st = fm_proc_stop(c->procs.pids[i], SIGTERM, 15.0);
        assert_true(st != -1 && WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        c->procs.pids[i] = 0;
    }
}

static void test_broker_churn(void **state)
{
    s_ctx_t *c = *state;
    char ep_snap[64], s_snap[100], s_pub[100], s_agg[100];
    snprintf(ep_snap, sizeof ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(s_snap, sizeof s_snap, "endpoints.snapshot=%s", ep_snap);
    snprintf(s_pub, sizeof s_pub, "endpoints.model_pub=tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(s_agg, sizeof s_agg, "endpoints.aggregator_models=tcp://127.0.0.1:%d",
             fm_proc_free_port());
    char *sets[] = {
        "federation.model=logreg",         s_snap, s_pub, s_agg, "broker.heartbeat_timeout_s=1",
        "trainer.heartbeat_interval_s=0.5"};
    int port = s_start(c, "broker", sets, 6);
    s_churn(c, port, ZMQ_DEALER, ep_snap, "fedmq_trainers_live", "broker");

    /* 10 trainers vanish without a BYE: gone from the live set within the timeout (1 s) */
    for (int i = 0; i < 10; i++)
        s_trainer(c, ZMQ_DEALER, ep_snap, 5000 + i, 1);
    double end = fm_proc_now() + S_WAIT_S, t0 = fm_proc_now(), seen = 0;
    while (fm_proc_now() < end && (seen = s_metric(port, "fedmq_trainers_live")) < 10)
        fm_proc_sleep(0.01);
    assert_true(seen == 10);
    double left = s_wait_at_most(port, "fedmq_trainers_live", 0);
    double secs = fm_proc_now() - t0;
    print_message("broker: 10 silent trainers left the live set %.2f s after joining "
                  "(heartbeat_timeout_s 1)\n",
                  secs);
    assert_true(left == 0);
    assert_true(secs < 1.0 + 2.0); /* the timeout + the expiry period + scrape slack */
    s_stop_all(c);
}

static void test_aggregator_churn(void **state)
{
    s_ctx_t *c = *state;
    char ep_up[64], s_up[100], s_models[100], s_dir[400], s_acks[100];
    snprintf(ep_up, sizeof ep_up, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(s_up, sizeof s_up, "endpoints.updates=%s", ep_up);
    snprintf(s_models, sizeof s_models, "endpoints.aggregator_models=tcp://127.0.0.1:%d",
             fm_proc_free_port());
    snprintf(s_dir, sizeof s_dir, "aggregator.checkpoint_dir=%s/ckpt", c->dir);
    snprintf(s_acks, sizeof s_acks, "endpoints.acks=tcp://127.0.0.1:%d", fm_proc_free_port());
    char *sets[] = {"federation.model=logreg",
                    "federation.num_clients=10",
                    "trainer.clients=0-9",
                    s_up,
                    s_models,
                    s_dir,
                    s_acks};
    int port = s_start(c, "aggregator", sets, 7);
    s_churn(c, port, ZMQ_PUSH, ep_up, "fedmq_clients_live", "aggregator");
    s_stop_all(c);
}

static int s_setup(void **state)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    zsys_handler_set(NULL);
    zsys_set_max_sockets(4096); /* before the first socket; closed ones linger a moment */
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "logs kept in %s\n", c->dir);
    else
        fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    free(c);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_broker_churn, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_aggregator_churn, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
