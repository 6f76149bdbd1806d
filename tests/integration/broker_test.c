/* broker_test: the real fedmq-broker on loopback. The test plays the aggregator (PUB bound
 * on aggregator_models, publishing logreg MODELs) and trainers (SUB on model_pub, DEALER on
 * snapshot). Every wait is bounded; every broker is stopped with SIGTERM (exit 0 asserted)
 * and reaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>

#include "fm_members.h"
#include "fm_model.h"
#include "../support/fm_proc.h"
#include "fm_wire.h"

#define MODEL_NAME "logreg"
#define HB_TIMEOUT_S 1.0

typedef struct {
    fm_proc_set_t procs;
    char dir[512];
    char log[600];
    char ep_agg[64], ep_pub[64], ep_snap[64];
    pid_t pid;
    zsock_t *agg; /* the test's "aggregator" PUB */
    fm_model_t *layout;
    fm_wire_buf_t buf;
    fm_wire_tensors_t *tensors; /* decode scratch */
} fx_t;

/* ---- helpers --------------------------------------------------------------------------- */

typedef struct {
    const char *path;
    const char *needle;
} s_grep_t;

static int s_grep_cond(void *arg)
{
    s_grep_t *g = arg;
    return fm_proc_file_contains(g->path, g->needle);
}

/* 1 if the broker's log shows `needle` within timeout_s. */
static int s_log_wait(fx_t *fx, const char *needle, double timeout_s)
{
    s_grep_t g = {fx->log, needle};
    return fm_proc_wait_for(s_grep_cond, &g, timeout_s);
}

/* Encode a MODEL of the fixture's layout into fx->buf. */
static void s_encode_model(fx_t *fx, fm_model_t *layout, uint64_t version, double ts)
{
    fm_wire_model_t hdr = {.version = version, .created = ts};
    assert_int_equal(fm_wire_encode_model(&hdr, layout, fm_model_params_const(layout), &fx->buf),
                     0);
}

static void s_send_bytes(zsock_t *s, const void *data, size_t len)
{
    zframe_t *f = zframe_new(data, len);
    assert_non_null(f);
    assert_int_equal(zframe_send(&f, s, 0), 0);
}

/* The aggregator publishes MODEL (version, ts) once. */
static void s_publish(fx_t *fx, uint64_t version, double ts)
{
    s_encode_model(fx, fx->layout, version, ts);
    s_send_bytes(fx->agg, fx->buf.data, fx->buf.len);
}

static void s_send_snapshot_req(fx_t *fx, zsock_t *dealer)
{
    fm_wire_snapshot_req_t r = {.from = "broker-test", .have = 0};
    assert_int_equal(fm_wire_encode_snapshot_req(&r, &fx->buf), 0);
    s_send_bytes(dealer, fx->buf.data, fx->buf.len);
}

static void s_send_member(fx_t *fx, zsock_t *dealer, fm_wire_type_t type, const char *trainer,
                          uint64_t seq)
{
    fm_wire_member_t m = {.pid = 4242,
                          .client_first = 0,
                          .client_count = 10,
                          .workers = 2,
                          .seq = seq,
                          .updates_sent = seq,
                          .busy = 1};
    snprintf(m.trainer, sizeof m.trainer, "%s", trainer);
    assert_int_equal(fm_wire_encode_member(type, &m, &fx->buf), 0);
    s_send_bytes(dealer, fx->buf.data, fx->buf.len);
}

/* Receive one MODEL (one frame) within timeout_s. 1 with version and ts set, or 0 on timeout. A
 * frame that is not a valid MODEL of our layout fails the test. */
static int s_recv_model(fx_t *fx, zsock_t *s, double timeout_s, uint64_t *version, double *ts)
{
    zpoller_t *p = zpoller_new(s, NULL);
    assert_non_null(p);
    void *which = zpoller_wait(p, (int)(timeout_s * 1000));
    zpoller_destroy(&p);
    if (which != s)
        return 0;
    zmsg_t *msg = zmsg_recv(s);
    assert_non_null(msg);
    assert_int_equal(zmsg_size(msg), 1);
    zframe_t *f = zmsg_first(msg);
    fm_wire_model_t hdr;
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, fx->tensors, &e);
    if (rc != 0)
        fail_msg("received frame is not a MODEL: %s", e.msg);
    assert_int_equal(fm_wire_tensors_check(fx->tensors, fx->layout, &e), 0);
    zmsg_destroy(&msg);
    *version = hdr.version;
    *ts = hdr.created;
    return 1;
}

static zsock_t *s_dealer(fx_t *fx)
{
    zsock_t *d = zsock_new(ZMQ_DEALER);
    assert_non_null(d);
    zsock_set_linger(d, 0);
    assert_int_equal(zsock_connect(d, "%s", fx->ep_snap), 0);
    return d;
}

static zsock_t *s_sub(fx_t *fx)
{
    zsock_t *s = zsock_new(ZMQ_SUB);
    assert_non_null(s);
    zsock_set_linger(s, 0);
    zsock_set_subscribe(s, "");
    assert_int_equal(zsock_connect(s, "%s", fx->ep_pub), 0);
    return s;
}

/* Publish (version, ts) until a snapshot request returns it (bounded: 10 s). */
static void s_publish_until_cached(fx_t *fx, uint64_t version, double ts)
{
    zsock_t *probe = s_dealer(fx);
    double end = fm_proc_now() + 10.0;
    int ok = 0;
    while (!ok && fm_proc_now() < end) {
        s_publish(fx, version, ts);
        s_send_snapshot_req(fx, probe);
        uint64_t v;
        double t;
        while (!ok && s_recv_model(fx, probe, 0.1, &v, &t))
            ok = v == version && t == ts;
    }
    zsock_destroy(&probe);
    if (!ok)
        fail_msg("the broker did not cache version %llu within 10 s",
                 (unsigned long long)version);
}

/* Start the broker (heartbeat timeout HB_TIMEOUT_S, debug log) and wait for its start line. */
static void s_start_broker(fx_t *fx)
{
    char set_agg[128], set_pub[128], set_snap[128], set_met[64];
    snprintf(set_agg, sizeof set_agg, "endpoints.aggregator_models=%s", fx->ep_agg);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", fx->ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", fx->ep_snap);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker",
                    "--config",
                    FM_SOURCE_DIR "/configs/fedmq.conf",
                    "--set",
                    fm_proc_metrics_set(set_met, sizeof set_met, "broker", NULL),
                    "--set",
                    "federation.model=" MODEL_NAME,
                    "--set",
                    set_agg,
                    "--set",
                    set_pub,
                    "--set",
                    set_snap,
                    "--set",
                    "broker.heartbeat_timeout_s=1",
                    "--set",
                    "trainer.heartbeat_interval_s=0.2",
                    "--log-level",
                    "debug",
                    NULL};
    fx->pid = fm_proc_spawn(&fx->procs, argv, fx->log);
    assert_true(fx->pid > 0);
    if (!s_log_wait(fx, "broker: model " MODEL_NAME, 10.0))
        fail_msg("fedmq-broker did not start (log: %s)", fx->log);
}

/* SIGTERM: the broker must exit 0 within 3 s. */
static void s_stop_broker(fx_t *fx)
{
    double t0 = fm_proc_now();
    kill(fx->pid, SIGTERM);
    int st = fm_proc_wait(fx->pid, 3.0);
    double dt = fm_proc_now() - t0;
    assert_int_not_equal(st, -1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(dt < 3.0);
    fx->pid = -1;
}

static int s_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->pid = -1;
    assert_int_equal(fm_proc_tmpdir(fx->dir, sizeof fx->dir), 0);
    snprintf(fx->log, sizeof fx->log, "%s/broker.log", fx->dir);
    snprintf(fx->ep_agg, sizeof fx->ep_agg, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(fx->ep_pub, sizeof fx->ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(fx->ep_snap, sizeof fx->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    int err = 0;
    fx->layout = fm_model_new(MODEL_NAME, &err);
    assert_non_null(fx->layout);
    fm_model_init(fx->layout, 7);
    fx->tensors = calloc(1, sizeof *fx->tensors);
    assert_non_null(fx->tensors);
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
    zsock_destroy(&fx->agg);
    fm_wire_buf_free(&fx->buf);
    free(fx->tensors);
    fm_model_destroy(&fx->layout);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "broker log kept: %s\n", fx->log);
    else
        fm_proc_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* 1. A late joiner gets the current model at once (SNAPSHOT_REQ, then HELLO), with no new
 * publish in between. */
static void test_late_joiner(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    s_publish_until_cached(fx, 3, 1000.0);

    for (int hello = 0; hello <= 1; hello++) {
        zsock_t *d = s_dealer(fx);
        double t0 = fm_proc_now();
        if (hello)
            s_send_member(fx, d, FM_WIRE_HELLO, "late-trainer", 0);
        else
            s_send_snapshot_req(fx, d);
        uint64_t v = 0;
        double ts = 0;
        assert_true(s_recv_model(fx, d, 2.0, &v, &ts));
        double dt = fm_proc_now() - t0;
        assert_int_equal(v, 3);
        assert_true(ts == 1000.0);
        if (dt > 0.5)
            fail_msg("%s answered after %.3f s (bound 0.5 s)", hello ? "HELLO" : "SNAPSHOT_REQ",
                     dt);
        zsock_destroy(&d);
    }
    assert_true(s_log_wait(fx, "trainer late-trainer joined", 2.0));

    /* a REQ peer ([identity][empty][body] on the ROUTER) gets its reply too */
    zsock_t *req = zsock_new(ZMQ_REQ);
    assert_non_null(req);
    zsock_set_linger(req, 0);
    assert_int_equal(zsock_connect(req, "%s", fx->ep_snap), 0);
    s_send_snapshot_req(fx, req);
    uint64_t v = 0;
    double ts = 0;
    assert_true(s_recv_model(fx, req, 2.0, &v, &ts));
    assert_int_equal(v, 3);
    zsock_destroy(&req);
    s_stop_broker(fx);
}

/* Connect a SUB to model_pub and publish new versions 1, 2, ... until it receives one;
 * returns the newest version published (everything in flight drained). */
static uint64_t s_sync_subscriber(fx_t *fx, zsock_t *sub)
{
    uint64_t v = 0, got = 0;
    double ts;
    int ok = 0;
    double end = fm_proc_now() + 10.0;
    uint64_t last = 0;
    while (!ok && fm_proc_now() < end) {
        last++;
        s_publish(fx, last, 100.0 + (double)last);
        ok = s_recv_model(fx, sub, 0.1, &got, &ts);
    }
    assert_true(ok);
    while (s_recv_model(fx, sub, 0.3, &v, &ts))
        ;
    return last;
}

/* 2. Each new version reaches a subscriber exactly once (repeats are not republished);
 * 4. a lower version with a new creation time (aggregator restart) replaces the cache. */
static void test_forward_once_and_restart(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    zsock_t *sub = s_sub(fx);
    uint64_t w = s_sync_subscriber(fx, sub);
    uint64_t v4 = w + 1, v5 = w + 2;

    for (int i = 0; i < 5; i++) {
        s_publish(fx, v4, 2000.0);
        fm_proc_sleep(0.05);
    }
    for (int i = 0; i < 5; i++) {
        s_publish(fx, v5, 2001.0);
        fm_proc_sleep(0.05);
    }
    uint64_t got[16];
    int n = 0;
    uint64_t v;
    double ts;
    while (n < 16 && s_recv_model(fx, sub, 1.0, &v, &ts))
        if (v > w) /* (a warm-up version still in flight on a loaded machine is not ours) */
            got[n++] = v;
    assert_int_equal(n, 2);
    assert_int_equal(got[0], v4);
    assert_int_equal(got[1], v5);

    /* aggregator restart from an older checkpoint: version 2, new creation time */
    for (int i = 0; i < 5; i++) {
        s_publish(fx, 2, 3000.0);
        fm_proc_sleep(0.05);
    }
    n = 0;
    while (n < 16 && s_recv_model(fx, sub, 1.0, &v, &ts))
        got[n++] = v;
    assert_int_equal(n, 1);
    assert_int_equal(got[0], 2);
    assert_true(ts == 3000.0);

    zsock_t *d = s_dealer(fx);
    s_send_snapshot_req(fx, d);
    assert_true(s_recv_model(fx, d, 2.0, &v, &ts));
    assert_int_equal(v, 2);
    assert_true(ts == 3000.0);
    assert_true(s_log_wait(fx, "NOTICE model: version went back", 2.0));
    zsock_destroy(&d);
    zsock_destroy(&sub);
    s_stop_broker(fx);
}

/* 3. A request before any model is answered when the first model arrives. */
static void test_request_before_model(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    zsock_t *d = s_dealer(fx);
    zsock_t *h = s_dealer(fx);
    s_send_snapshot_req(fx, d);
    s_send_member(fx, h, FM_WIRE_HELLO, "early-trainer", 0);
    uint64_t v = 99;
    double ts;
    assert_false(s_recv_model(fx, d, 0.3, &v, &ts)); /* nothing cached: no reply yet */
    double end = fm_proc_now() + 10.0;
    int ok = 0;
    while (!ok && fm_proc_now() < end) {
        s_publish(fx, 0, 500.0);
        ok = s_recv_model(fx, d, 0.1, &v, &ts);
    }
    assert_true(ok);
    assert_int_equal(v, 0);
    assert_true(s_recv_model(fx, h, 2.0, &v, &ts));
    assert_int_equal(v, 0);
    /* answered once: repeats of the same model do not answer again */
    assert_false(s_recv_model(fx, d, 0.3, &v, &ts));
    zsock_destroy(&d);
    zsock_destroy(&h);
    s_stop_broker(fx);
}

/* 5. Malformed frames on both sides: counted and logged, never cached, broker keeps
 * serving. */
static void test_malformed_frames(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    s_publish_until_cached(fx, 7, 700.0);

    /* aggregator side */
    static const char garbage[] = "\xde\xad\xbe\xef not msgpack";
    s_send_bytes(fx->agg, garbage, sizeof garbage);
    s_send_bytes(fx->agg, "", 0);
    s_encode_model(fx, fx->layout, 8, 800.0);
    s_send_bytes(fx->agg, fx->buf.data, fx->buf.len / 2); /* truncated */
    unsigned char *vbyte = memmem(fx->buf.data, 8, "\xa1\x76\x01", 3);
    assert_non_null(vbyte);
    vbyte[2] = 3; /* "v": 3 (2 is a protocol version now) */
    s_send_bytes(fx->agg, fx->buf.data, fx->buf.len);
    int err = 0;
    fm_model_t *mlp = fm_model_new("mlp", &err);
    assert_non_null(mlp);
    s_encode_model(fx, mlp, 9, 900.0); /* not the configured model */
    s_send_bytes(fx->agg, fx->buf.data, fx->buf.len);
    fm_model_destroy(&mlp);
    fm_wire_snapshot_req_t r = {.from = "x"};
    assert_int_equal(fm_wire_encode_snapshot_req(&r, &fx->buf), 0); /* wrong type */
    s_send_bytes(fx->agg, fx->buf.data, fx->buf.len);
    s_encode_model(fx, fx->layout, 10, 1000.0); /* valid, but multipart */
    assert_int_equal(zsock_send(fx->agg, "bb", fx->buf.data, fx->buf.len, "x", (size_t)1), 0);

    /* snapshot side */
    zsock_t *bad = s_dealer(fx);
    s_send_bytes(bad, garbage, sizeof garbage);
    s_send_bytes(bad, "", 0);
    s_encode_model(fx, fx->layout, 11, 1100.0); /* a MODEL does not belong here */
    s_send_bytes(bad, fx->buf.data, fx->buf.len);
    fm_wire_snapshot_req_t r2 = {.from = "bad-peer", .have = 3};
    assert_int_equal(fm_wire_encode_snapshot_req(&r2, &fx->buf), 0);
    s_send_bytes(bad, fx->buf.data, fx->buf.len - 3); /* truncated */
    vbyte = memmem(fx->buf.data, 8, "\xa1\x76\x01", 3);
    assert_non_null(vbyte);
    vbyte[2] = 9;
    s_send_bytes(bad, fx->buf.data, fx->buf.len);               /* wrong protocol version */
    assert_int_equal(zsock_send(bad, "sss", "a", "b", "c"), 0); /* too many frames */
    /* over ZMQ_MAXMSGSIZE (1 MiB): ZeroMQ drops the connection */
    zsock_t *huge = s_dealer(fx);
    size_t big = (size_t)2 << 20;
    unsigned char *junk = calloc(1, big);
    assert_non_null(junk);
    s_send_bytes(huge, junk, big);
    free(junk);

    assert_true(s_log_wait(fx, "aggregator_models: frame rejected", 3.0));
    assert_true(s_log_wait(fx, "snapshot: frame rejected", 3.0));
    fm_proc_sleep(0.3);
    assert_int_equal(waitpid(fx->pid, NULL, WNOHANG), 0); /* still running */

    /* still serving, still version 7 */
    zsock_t *d = s_dealer(fx);
    s_send_snapshot_req(fx, d);
    uint64_t v = 0;
    double ts;
    assert_true(s_recv_model(fx, d, 2.0, &v, &ts));
    assert_int_equal(v, 7);
    assert_true(ts == 700.0);
    /* and a good model after all that is taken */
    s_publish_until_cached(fx, 12, 1200.0);

    zsock_destroy(&d);
    zsock_destroy(&huge);
    zsock_destroy(&bad);
    s_stop_broker(fx);
    /* every bad frame counted (the oversized one never reaches the broker: ZeroMQ drops
     * the connection), none forwarded: versions 7 and 12 only */
    assert_true(fm_proc_file_contains(fx->log, "2 models forwarded"));
    assert_true(fm_proc_file_contains(fx->log, "13 frames rejected (7 aggregator side, "
                                               "6 snapshot side)"));
}

/* 6. Membership: a silent trainer expires after heartbeat_timeout_s, one that sends
 * heartbeats does not, BYE logs a leave. */
static void test_membership(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    zsock_t *silent = s_dealer(fx);
    zsock_t *alive = s_dealer(fx);
    zsock_t *leaving = s_dealer(fx);
    s_send_member(fx, silent, FM_WIRE_HELLO, "t-silent", 0);
    s_send_member(fx, alive, FM_WIRE_HELLO, "t-alive", 0);
    s_send_member(fx, leaving, FM_WIRE_HELLO, "t-leaving", 0);
    assert_true(s_log_wait(fx, "trainer t-leaving joined", 3.0));
    s_send_member(fx, leaving, FM_WIRE_BYE, "t-leaving", 1);
    assert_true(s_log_wait(fx, "trainer t-leaving left", 3.0));

    double t0 = fm_proc_now();
    uint64_t seq = 1;
    while (fm_proc_now() - t0 < 2.5 * HB_TIMEOUT_S) {
        s_send_member(fx, alive, FM_WIRE_HEARTBEAT, "t-alive", seq++);
        fm_proc_sleep(0.2);
    }
    assert_true(s_log_wait(fx, "trainer t-silent expired", 3.0 * HB_TIMEOUT_S));
    assert_false(fm_proc_file_contains(fx->log, "trainer t-alive expired"));
    assert_false(fm_proc_file_contains(fx->log, "trainer t-leaving expired"));
    zsock_destroy(&silent);
    zsock_destroy(&alive);
    zsock_destroy(&leaving);
    s_stop_broker(fx);
    /* t-alive is the one live trainer; the HELLOs of t-silent and t-alive still wait for a
     * model (no model was ever published), t-leaving's was dropped with its BYE */
    assert_true(fm_proc_file_contains(fx->log, "1 live trainers serving 10 clients"));
    assert_true(fm_proc_file_contains(fx->log, "2 waiting"));
}

/* 7. SIGTERM with peers connected: exit 0 within the bound; a bad config: exit 2 with one
 * line. */
static void test_sigterm_and_bad_config(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    s_publish_until_cached(fx, 1, 100.0);
    zsock_t *sub = s_sub(fx);
    zsock_t *d = s_dealer(fx);
    s_send_member(fx, d, FM_WIRE_HELLO, "t-term", 0);
    assert_true(s_log_wait(fx, "trainer t-term joined", 3.0));

    /* a second broker on the same endpoints cannot bind: a runtime failure, exit 1 */
    char dup_log[700], set_pub[128], set_snap[128], set_met[64];
    snprintf(dup_log, sizeof dup_log, "%s/dup.log", fx->dir);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", fx->ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", fx->ep_snap);
    char *dup_argv[] = {FM_BIN_DIR "/fedmq-broker",
                        "--set",
                        fm_proc_metrics_set(set_met, sizeof set_met, "broker", NULL),
                        "--set",
                        "federation.model=" MODEL_NAME,
                        "--set",
                        set_pub,
                        "--set",
                        set_snap,
                        NULL};
    pid_t dup = fm_proc_spawn(&fx->procs, dup_argv, dup_log);
    assert_true(dup > 0);
    int dst = fm_proc_wait(dup, 5.0);
    assert_int_not_equal(dst, -1);
    assert_true(WIFEXITED(dst));
    assert_int_equal(WEXITSTATUS(dst), 1);
    assert_int_equal(fm_proc_file_count(dup_log, ""), 1);
    char want[200];
    snprintf(want, sizeof want,
             "ERROR [endpoints] model_pub = %s: cannot bind: Address already "
             "in use",
             fx->ep_pub);
    assert_true(fm_proc_file_contains(dup_log, want));

    s_stop_broker(fx);
    assert_true(s_log_wait(fx, "summary:", 1.0));
    zsock_destroy(&d);
    zsock_destroy(&sub);

    char badlog[700];
    snprintf(badlog, sizeof badlog, "%s/bad.log", fx->dir);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker", "--set", "broker.heartbeat_timeout_s=0", NULL};
    pid_t pid = fm_proc_spawn(&fx->procs, argv, badlog);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, 5.0);
    assert_int_not_equal(st, -1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(fm_proc_file_contains(badlog, "heartbeat_timeout_s"));
}

/* Replace the config file at path with `text`. */
static void s_write_conf(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

typedef struct {
    const char *path, *needle;
    int more_than;
} s_count_t;

static int s_count_cond(void *arg)
{
    s_count_t *c = arg;
    return fm_proc_file_count(c->path, c->needle) > c->more_than;
}

/* Wait until more than `more_than` lines of the broker's log contain `needle`. */
static int s_log_count_wait(fx_t *fx, const char *needle, int more_than, double timeout_s)
{
    s_count_t c = {fx->log, needle, more_than};
    return fm_proc_wait_for(s_count_cond, &c, timeout_s);
}

/* SIGHUP with a changed config file: broker.log_level info -> debug is applied (the DEBUG
 * line of a SNAPSHOT_REQ appears); a change of a non-reloadable key is refused with one line
 * and the running config stays (still DEBUG although the file says info). */
static void test_reload_applied_and_refused(void **state)
{
    fx_t *fx = *state;
    const char *dbg = "snapshot: request from broker-test";
    char conf[700], set_agg[128], set_pub[128], set_snap[128], set_met[64];
    snprintf(conf, sizeof conf, "%s/broker.conf", fx->dir);
    s_write_conf(conf, "[broker]\nlog_level = info\n");
    snprintf(set_agg, sizeof set_agg, "endpoints.aggregator_models=%s", fx->ep_agg);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", fx->ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", fx->ep_snap);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker",
                    "--config",
                    conf,
                    "--set",
                    fm_proc_metrics_set(set_met, sizeof set_met, "broker", NULL),
                    "--set",
                    "federation.model=" MODEL_NAME,
                    "--set",
                    set_agg,
                    "--set",
                    set_pub,
                    "--set",
                    set_snap,
                    NULL};
    fx->pid = fm_proc_spawn(&fx->procs, argv, fx->log);
    assert_true(fx->pid > 0);
    assert_true(s_log_wait(fx, "broker: model " MODEL_NAME, 10.0));
    zsock_t *d = s_dealer(fx);
    /* info: the request is handled (the HELLO after it on the same pipe is logged), silently */
    s_send_snapshot_req(fx, d);
    s_send_member(fx, d, FM_WIRE_HELLO, "t-info", 0);
    assert_true(s_log_wait(fx, "trainer t-info joined", 3.0));
    assert_int_equal(fm_proc_file_count(fx->log, dbg), 0);

    s_write_conf(conf, "[broker]\nlog_level = debug\n");
    assert_int_equal(kill(fx->pid, SIGHUP), 0);
    assert_true(s_log_wait(fx,
                           "SIGHUP: config reloaded; changed: [broker] log_level: info -> "
                           "debug",
                           3.0));
    s_send_snapshot_req(fx, d);
    assert_true(s_log_count_wait(fx, dbg, 0, 3.0));

    s_write_conf(conf, "[broker]\nlog_level = info\n[endpoints]\nupdates = tcp://127.0.0.1:1\n");
    assert_int_equal(kill(fx->pid, SIGHUP), 0);
    assert_true(s_log_wait(fx, "SIGHUP: config not reloaded", 3.0));
    assert_int_equal(fm_proc_file_count(fx->log, "SIGHUP: config not reloaded"), 1);
    assert_int_equal(fm_proc_file_count(fx->log, "[endpoints] updates changed"), 1);
    s_send_snapshot_req(fx, d);
    assert_true(s_log_count_wait(fx, dbg, 1, 3.0));
    assert_int_equal(waitpid(fx->pid, NULL, WNOHANG), 0);
    zsock_destroy(&d);
    s_stop_broker(fx);
}

/* The periodic summary line (every BROKER_SUMMARY_S = 10 s) and a SIGHUP reload. */
static void test_summary_and_reload(void **state)
{
    fx_t *fx = *state;
    s_start_broker(fx);
    s_publish_until_cached(fx, 5, 500.0);
    zsock_t *d = s_dealer(fx);
    s_send_member(fx, d, FM_WIRE_HELLO, "t-sum", 0);
    kill(fx->pid, SIGHUP);
    assert_true(s_log_wait(fx, "SIGHUP: config reloaded", 3.0));
    double t0 = fm_proc_now();
    uint64_t seq = 1;
    int ok = 0;
    while (!ok && fm_proc_now() - t0 < 13.0) {
        s_send_member(fx, d, FM_WIRE_HEARTBEAT, "t-sum", seq++);
        ok = s_log_wait(fx,
                        "summary: model version 5, 1 live trainers serving 10 clients, "
                        "1 models forwarded",
                        0.25);
    }
    assert_true(ok);
    zsock_destroy(&d);
    s_stop_broker(fx);
}

/* fm_members alone (linked from broker_lib): seq rule, restart, BYE, expiry, cap. */
static void test_members_table(void **state)
{
    (void)state;
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t m = {.trainer = "a", .pid = 1, .client_count = 5, .workers = 1, .seq = 0};
    uint32_t old = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, NULL, 0.0, &old), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, NULL, 0.1, &old), FM_MEMBER_STALE);
    m.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m, NULL, 0.5, &old),
                     FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m, NULL, 0.6, &old),
                     FM_MEMBER_STALE);
    m.pid = 2;
    m.seq = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, NULL, 1.0, &old),
                     FM_MEMBER_RESTARTED);
    assert_int_equal(old, 1);
    fm_wire_member_t b = {.trainer = "b", .pid = 7, .client_count = 3, .seq = 0};
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &b, NULL, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 2);
    assert_int_equal(fm_members_clients(t), 5); /* [0, 5) and [0, 3): 5 distinct */
    b.pid = 8;
    b.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &b, NULL, 1.1, NULL),
                     FM_MEMBER_UNKNOWN_BYE); /* another incarnation */
    b.pid = 7;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &b, NULL, 1.1, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_count(t), 1);
    assert_int_equal(fm_members_expire(t, 1.5, 1.0, NULL, NULL), 0);
    assert_int_equal(fm_members_expire(t, 2.5, 1.0, NULL, NULL), 1);
    assert_int_equal(fm_members_count(t), 0);
    for (int i = 0; i < FM_MEMBERS_MAX; i++) {
        fm_wire_member_t x = {.pid = 1};
        snprintf(x.trainer, sizeof x.trainer, "t%d", i);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &x, NULL, 3.0, NULL),
                         FM_MEMBER_JOINED);
    }
    fm_wire_member_t full = {.trainer = "one-too-many", .pid = 1};
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &full, NULL, 3.0, NULL), FM_MEMBER_FULL);
    fm_members_destroy(&t);
    fm_members_destroy(&t);
    assert_null(t);
}

int main(void)
{
    zsys_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_late_joiner, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_forward_once_and_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_request_before_model, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_membership, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_and_bad_config, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_summary_and_reload, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reload_applied_and_refused, s_setup, s_teardown),
        cmocka_unit_test(test_members_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
