/* metrics_test: the /metrics endpoint of each real daemon, on reserved loopback ports.
 *
 * For each daemon the test plays its peers (CZMQ sockets, fm_wire frames), causes known
 * events, then fetches /metrics over HTTP and checks that
 *   - `promtool check metrics` accepts the text (promtool from /opt/fedmq-test-tools, where
 *     scripts/install-deps.sh extracts it from Debian's prometheus package, or on PATH; the
 *     test fails without it),
 *   - the counters equal the events caused and the daemon's own records: aggregator (3 UPDATEs
 *     of a wrong shape, 4 good ones with K = 2: rejected{shape} 3, received 7, applied 4,
 *     version 2, staleness and timing histograms, with client-level DP on: 2 privacy steps;
 *     stats.json agrees), broker (a HELLO and 3
 *     SNAPSHOT_REQs from new connections answered: snapshots served 4; a repeat on the
 *     HELLO's connection withheld; one live trainer; its summary line agrees),
 *     evaluator (accuracy, loss and population gauges equal the METRICS it published, bit for
 *     bit), trainer (a sync round of 3 clients: 3 updates sent, local steps and samples equal
 *     the sums of the UPDATEs' "steps" and "n"; its final summary line agrees),
 *   - a port in use makes the daemon exit 1 with one error line,
 *   - docs/prometheus-alerts.yml passes `promtool check rules` and its unit tests
 *     (`promtool test rules docs/prometheus-alerts.test.yml`), docs/grafana-fedmq.json is
 *     JSON, and every fedmq_ metric they and docs/OPERATIONS.md name is one a daemon served.
 * Every wait is bounded; children are reaped and temp dirs removed in the teardown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <czmq.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_WAIT_S 30.0  /* bounded waits (data loads and sanitizer builds are slow) */
#define S_START_S 60.0 /* a daemon that loads a data set answers /metrics */
#define S_PROMTOOL_DIR "/opt/fedmq-test-tools"
#define BIN(x) FM_BIN_DIR "/fedmq-" x

typedef struct {
    char dir[512];
    char promtool[PATH_MAX];
    fm_proc_set_t procs;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
} s_ctx_t;

/* ---- helpers ---------------------------------------------------------------------------- */

/* promtool in S_PROMTOOL_DIR or on PATH into c->promtool; 1 if found. */
static int s_find_promtool(s_ctx_t *c)
{
    snprintf(c->promtool, sizeof c->promtool, "%s/promtool", S_PROMTOOL_DIR);
    if (access(c->promtool, X_OK) == 0)
        return 1;
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(c->promtool, sizeof c->promtool, "%s/promtool", d);
        if (access(c->promtool, X_OK) == 0)
            return 1;
    }
    c->promtool[0] = '\0';
    return 0;
}

/* Run promtool with `args` (shell words); 0 if it exits 0, else its output is printed. */
static int s_promtool(s_ctx_t *c, const char *what, const char *args)
{
    if (!c->promtool[0])
        fail_msg("promtool not found in " S_PROMTOOL_DIR " nor on PATH: run "
                 "scripts/install-deps.sh (it extracts it from Debian's prometheus package)");
    char out[700], cmd[PATH_MAX + 2048];
    snprintf(out, sizeof out, "%s/promtool.out", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", c->promtool, args, out);
    int rc = system(cmd);
    if (rc != 0) {
        FILE *f = fopen(out, "r");
        char line[512];
        print_error("promtool %s (%s): exit status 0x%x\n", args, what, rc);
        while (f && fgets(line, sizeof line, f))
            print_error("  %s", line);
        if (f)
            fclose(f);
    }
    return rc;
}

/* "# TYPE name type" lines of every /metrics text checked so far (test bookkeeping, for
 * test_docs_names). */
/* Unix time now (the clock of the updates' "ts"). */
static double s_wallclock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char s_types[65536];

/* `promtool check metrics` on an exposition text (lint included); its TYPE lines are kept. */
static void s_promtool_metrics(s_ctx_t *c, const char *what, const char *body)
{
    for (const char *p = strstr(body, "# TYPE "); p; p = strstr(p + 1, "# TYPE ")) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p), have = strlen(s_types);
        if (have + n < sizeof s_types) {
            memcpy(s_types + have, p, n);
            s_types[have + n] = '\0';
        }
    }
    char path[700], args[800];
    snprintf(path, sizeof path, "%s/%s.prom", c->dir, what);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(body, f);
    assert_int_equal(fclose(f), 0);
    snprintf(args, sizeof args, "check metrics < '%s'", path);
    if (s_promtool(c, what, args) != 0)
        fail_msg("promtool check metrics rejects the /metrics of the %s (kept in %s)", what,
                 path);
}

/* GET /metrics: the body (caller frees), after checking status and Content-Type. NULL while
 * the daemon does not answer. */
static char *s_get_metrics(int port)
{
    fm_http_resp_t r;
    if (fm_http_request(port, "GET", "/metrics", &r) != 0)
        return NULL;
    char ct[128] = "";
    fm_http_header(&r, "Content-Type", ct, sizeof ct);
    if (r.status != 200 || strcmp(ct, "text/plain; version=0.0.4; charset=utf-8") != 0)
        fail_msg("GET /metrics: status %d, Content-Type '%s'", r.status, ct);
    char *body = r.body;
    r.body = NULL;
    fm_http_free(&r);
    return body;
}

/* The body of /metrics once the daemon answers (within timeout_s; fails otherwise). */
static char *s_wait_metrics(int port, pid_t pid, double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    for (;;) {
        char *body = s_get_metrics(port);
        if (body)
            return body;
        if (waitpid(pid, NULL, WNOHANG) != 0)
            fail_msg("the daemon (pid %d) ended before answering /metrics", (int)pid);
        if (fm_proc_now() > end)
            fail_msg("no answer on 127.0.0.1:%d/metrics within %.0f s", port, timeout_s);
        fm_proc_sleep(0.05);
    }
}

/* The value of `series` in `body`; fails if absent. */
static double s_val(const char *body, const char *series)
{
    double v = 0;
    if (!fm_http_sample(body, series, &v))
        fail_msg("no sample '%s' in:\n%s", series, body);
    return v;
}

/* Poll /metrics until `series` == want (timeout_s); the last body (caller frees). */
static char *s_wait_value(int port, const char *series, double want, double timeout_s)
{
    double end = fm_proc_now() + timeout_s, v = NAN;
    for (;;) {
        char *body = s_get_metrics(port);
        if (body && fm_http_sample(body, series, &v) && v == want)
            return body;
        if (fm_proc_now() > end)
            fail_msg("%s = %g, want %g (after %.0f s)", series, v, want, timeout_s);
        free(body);
        fm_proc_sleep(0.05);
    }
}

static zsock_t *s_sock(int type, const char *verb, const char *ep)
{
    zsock_t *s = zsock_new(type);
    assert_non_null(s);
    zsock_set_linger(s, 0);
    zsock_set_rcvtimeo(s, 100);
    zsock_set_sndtimeo(s, 5000);
    if (type == ZMQ_SUB)
        zsock_set_subscribe(s, "");
    int rc = strcmp(verb, "bind") == 0 ? (zsock_bind(s, "%s", ep) >= 0 ? 0 : -1)
                                       : zsock_connect(s, "%s", ep);
    assert_int_equal(rc, 0);
    return s;
}

static void s_send(zsock_t *s, const void *data, size_t len)
{
    assert_int_equal(zmq_send(zsock_resolve(s), data, len, 0), (int)len);
}

static void s_endpoint(char *buf, size_t cap) /* a reserved loopback port */
{
    snprintf(buf, cap, "tcp://127.0.0.1:%d", fm_proc_free_port());
}

/* Stop `pid` with SIGTERM: it must exit 0 within 15 s. */
static void s_stop(pid_t pid)
{
    int st = fm_proc_stop(pid, SIGTERM, 15.0);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int s_setup(void **state)
{
    if (!getenv("TMPDIR")) /* temp dirs under the build dir, as aggregator_test */
        setenv("TMPDIR", FM_BIN_DIR, 0);
    zsys_handler_set(NULL);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    if (!(c->ts = malloc(sizeof *c->ts)))
        return -1;
    s_find_promtool(c);
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
    free(c->ts);
    free(c);
    return 0;
}

/* ---- promtool and the alert rules ------------------------------------------------------- */

static void test_promtool_and_rules(void **state)
{
    s_ctx_t *c = *state;
    if (!c->promtool[0])
        fail_msg("promtool not found in " S_PROMTOOL_DIR " nor on PATH: run "
                 "scripts/install-deps.sh (it extracts it from Debian's prometheus package)");
    print_message("promtool: %s\n", c->promtool);
    if (s_promtool(c, "rules", "check rules '" FM_SOURCE_DIR "/docs/prometheus-alerts.yml'") != 0)
        fail_msg("promtool check rules rejects docs/prometheus-alerts.yml");
    /* the alerts fire (and stay quiet) on synthetic series as their tests say */
    if (s_promtool(c, "rule tests",
                   "test rules '" FM_SOURCE_DIR "/docs/prometheus-alerts.test.yml'") != 0)
        fail_msg("promtool test rules: docs/prometheus-alerts.test.yml fails");
}

/* ---- aggregator --------------------------------------------------------------------------- */

/* An UPDATE of the logreg layout from `base` with a small delta, a fresh id, into c->buf. */
static void s_update(s_ctx_t *c, fm_model_t *layout, uint64_t base)
{
    size_t np = fm_model_nparams(layout);
    float *d = calloc(np, sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < np; i++)
        d[i] = 1e-3f * (float)(i % 7);
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "metrics-test");
    static uint32_t client; /* a new client each: one update per client per buffer (privacy) */
    h.client = client++ % 100;
    h.base = base;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, layout, d, &c->buf), 0);
    free(d);
}

static int s_stats_reached(void *arg)
{
    const char *path = arg;
    fm_stats_t st;
    return fm_stats_read(path, &st, NULL) == 0 && st.updates_applied >= 4 &&
           fm_stats_rejected(&st, "shape") >= 3;
}

static void test_aggregator(void **state)
{
    s_ctx_t *c = *state;
    char ep_upd[64], ep_models[64], met[64], ckpt[600], log[600], set_ck[700];
    s_endpoint(ep_upd, sizeof ep_upd);
    s_endpoint(ep_models, sizeof ep_models);
    int port = 0;
    fm_proc_metrics_set(met, sizeof met, "aggregator", &port);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", c->dir);
    snprintf(log, sizeof log, "%s/aggregator.log", c->dir);
    snprintf(set_ck, sizeof set_ck, "aggregator.checkpoint_dir=%s", ckpt);
    char set_upd[100], set_models[100], set_acks[100];
    snprintf(set_upd, sizeof set_upd, "endpoints.updates=%s", ep_upd);
    snprintf(set_models, sizeof set_models, "endpoints.aggregator_models=%s", ep_models);
    snprintf(set_acks, sizeof set_acks, "endpoints.acks=tcp://127.0.0.1:%d", fm_proc_free_port());
    char *argv[] = {BIN("aggregator"),
                    "--set",
                    "federation.model=logreg",
                    "--set",
                    "aggregator.buffer_k=2",
                    "--set",
                    "aggregator.checkpoint_every=1",
                    "--set", /* client-level DP on: its five series are served and linted */
                    "privacy.mode=client",
                    "--set",
                    "aggregator.weight_by_samples=false",
                    "--set",
                    set_ck,
                    "--set",
                    set_upd,
                    "--set",
                    set_models,
                    "--set",
                    set_acks,
                    "--set",
                    met,
                    NULL};
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    char *body = s_wait_metrics(port, pid, S_WAIT_S);
    assert_true(s_val(body, "fedmq_model_version") == 0);
    assert_true(s_val(body, "fedmq_updates_received_total") == 0);
    free(body);

    int err = 0;
    fm_model_t *layout = fm_model_new("logreg", &err);
    assert_non_null(layout);
    zsock_t *push = s_sock(ZMQ_PUSH, "connect", ep_upd);
    /* 3 UPDATEs whose fc.bias has shape [5] instead of [10] */
    for (int i = 0; i < 3; i++) {
        s_update(c, layout, 0);
        unsigned char *p = memmem(c->buf.data, c->buf.len, "\xa5shape\x91\x0a", 8);
        assert_non_null(p);
        p[7] = 0x05;
        s_send(push, c->buf.data, c->buf.len);
    }
    /* 4 good ones from base 0: K = 2 makes versions 1 (staleness 0, 0) and 2 (1, 1) */
    for (int i = 0; i < 4; i++) {
        s_update(c, layout, 0);
        s_send(push, c->buf.data, c->buf.len);
    }
    char stats[700];
    snprintf(stats, sizeof stats, "%s/stats.json", ckpt);
    assert_true(fm_proc_wait_for(s_stats_reached, stats, S_WAIT_S));
    body = s_wait_value(port, "fedmq_updates_applied_total", 4, S_WAIT_S);
    s_promtool_metrics(c, "aggregator", body);
    print_message("aggregator /metrics (fedmq_ lines):\n");
    for (const char *p = strstr(body, "# HELP fedmq_"); p && *p;) {
        const char *nl = strchr(p, '\n');
        print_message("  %.*s\n", (int)(nl ? nl - p : (long)strlen(p)), p);
        p = nl ? nl + 1 : NULL;
    }

    assert_true(s_val(body, "fedmq_updates_rejected_total{reason=\"shape\"}") == 3);
    assert_true(s_val(body, "fedmq_privacy_steps_total") == 2);
    assert_true(s_val(body, "fedmq_privacy_budget_exhausted") == 0);
    assert_true(s_val(body, "fedmq_privacy_epsilon") > 0);
    assert_true(s_val(body, "fedmq_privacy_clip_norm") == 1); /* privacy.clip_norm: fixed */
    assert_true(s_val(body, "fedmq_updates_rejected_total{reason=\"nonfinite\"}") == 0);
    assert_true(s_val(body, "fedmq_updates_rejected_total{reason=\"duplicate\"}") == 0);
    assert_true(s_val(body, "fedmq_updates_received_total") == 7);
    assert_true(s_val(body, "fedmq_updates_applied_total") == 4);
    assert_true(s_val(body, "fedmq_model_version") == 2);
    assert_true(s_val(body, "fedmq_clients_live") == 0);
    assert_true(s_val(body, "fedmq_update_staleness_count") == 4);
    assert_true(s_val(body, "fedmq_update_staleness_bucket{le=\"0\"}") == 2);
    assert_true(s_val(body, "fedmq_update_staleness_bucket{le=\"1\"}") == 4);
    assert_true(s_val(body, "fedmq_update_staleness_bucket{le=\"+Inf\"}") == 4);
    assert_true(s_val(body, "fedmq_update_staleness_sum") == 2);
    assert_true(s_val(body, "fedmq_aggregation_seconds_count") == 2);
    assert_true(s_val(body, "fedmq_aggregation_seconds_sum") >= 0);
    /* one checkpoint per version (acks on: before each is published), as the log says */
    assert_true(s_val(body, "fedmq_checkpoint_seconds_count") ==
                fm_proc_file_count(log, "saved (version"));
    /* acknowledged: the 4 applied once their checkpoints committed, the 3 refusals at once
     * (the frames that did not decode have no id to answer) */
    assert_true(s_val(body, "fedmq_acks_total{status=\"applied\"}") == 4);
    assert_true(s_val(body, "fedmq_acks_total{status=\"refused\"}") == 3);
    assert_true(s_val(body, "fedmq_checkpoint_seconds_count") == 2);
    assert_true(s_val(body, "fedmq_received_bytes_total") > 0);
    assert_true(s_val(body, "process_resident_memory_bytes") > 0);
    assert_true(s_val(body, "process_open_fds") > 0);

    /* the same counters as stats.json */
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_read(stats, &st, &e), 0);
    assert_true(s_val(body, "fedmq_updates_applied_total") == (double)st.updates_applied);
    assert_true(s_val(body, "fedmq_model_version") == (double)st.version);
    for (int i = 0; i < st.nreasons; i++) {
        char series[128];
        snprintf(series, sizeof series, "fedmq_updates_rejected_total{reason=\"%s\"}",
                 st.rejected[i].name);
        assert_true(s_val(body, series) == (double)st.rejected[i].count);
    }
    assert_true(s_val(body, "fedmq_received_bytes_total") == (double)st.bytes_received);
    free(body);
    zsock_destroy(&push);
    fm_model_destroy(&layout);
    s_stop(pid);
}

/* ---- broker -----------------------------------------------------------------------------------
 */

/* One reply (a MODEL of `version`) on the DEALER within S_WAIT_S; fails otherwise. */
static void s_expect_model(s_ctx_t *c, zsock_t *dealer, uint64_t version)
{
    double end = fm_proc_now() + S_WAIT_S;
    while (fm_proc_now() < end) {
        zframe_t *f = zframe_recv(dealer);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e),
                         0);
        zframe_destroy(&f);
        assert_true(hdr.version == version);
        return;
    }
    fail_msg("no MODEL reply from the broker within %.0f s", S_WAIT_S);
}

static void test_broker(void **state)
{
    s_ctx_t *c = *state;
    char ep_agg[64], ep_pub[64], ep_snap[64], met[64], log[600];
    s_endpoint(ep_agg, sizeof ep_agg);
    s_endpoint(ep_pub, sizeof ep_pub);
    s_endpoint(ep_snap, sizeof ep_snap);
    int port = 0;
    fm_proc_metrics_set(met, sizeof met, "broker", &port);
    snprintf(log, sizeof log, "%s/broker.log", c->dir);
    zsock_t *agg = s_sock(ZMQ_PUB, "bind", ep_agg); /* the aggregator's side */
    char s_agg[100], s_pub[100], s_snap[100];
    snprintf(s_agg, sizeof s_agg, "endpoints.aggregator_models=%s", ep_agg);
    snprintf(s_pub, sizeof s_pub, "endpoints.model_pub=%s", ep_pub);
    snprintf(s_snap, sizeof s_snap, "endpoints.snapshot=%s", ep_snap);
    char *argv[] = {BIN("broker"), "--set", "federation.model=logreg",
                    "--set",       s_agg,   "--set",
                    s_pub,         "--set", s_snap,
                    "--set",       met,     NULL};
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    char *body = s_wait_metrics(port, pid, S_WAIT_S);
    assert_true(s_val(body, "fedmq_model_version") == -1);
    assert_true(s_val(body, "fedmq_trainers_live") == 0);
    free(body);

    /* MODEL v5 from the aggregator, repeated (as the aggregator does) until it is cached */
    int err = 0;
    fm_model_t *layout = fm_model_new("logreg", &err);
    assert_non_null(layout);
    fm_model_init(layout, 5);
    fm_wire_model_t hdr = {.version = 5, .created = 1.7e9};
    assert_int_equal(fm_wire_encode_model(&hdr, layout, fm_model_params(layout), &c->buf), 0);
    double end = fm_proc_now() + S_WAIT_S, v = 0;
    do {
        s_send(agg, c->buf.data, c->buf.len);
        fm_proc_sleep(0.1);
        body = s_get_metrics(port);
        int cached = body && fm_http_sample(body, "fedmq_model_version", &v) && v == 5;
        free(body);
        if (cached)
            break;
    } while (fm_proc_now() < end);
    assert_true(v == 5);

    /* a HELLO and 3 SNAPSHOT_REQs from new connections: 4 MODEL replies; a SNAPSHOT_REQ
     * right after the HELLO on its connection: a repeat, withheld; one junk frame */
    zsock_t *dealer = s_sock(ZMQ_DEALER, "connect", ep_snap);
    fm_wire_member_t m = {.pid = 77, .client_first = 0, .client_count = 4, .workers = 1};
    snprintf(m.trainer, sizeof m.trainer, "metrics-t1");
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &m, &c->buf), 0);
    s_send(dealer, c->buf.data, c->buf.len);
    s_expect_model(c, dealer, 5);
    fm_wire_snapshot_req_t req = {.have = 0};
    snprintf(req.from, sizeof req.from, "metrics-test");
    assert_int_equal(fm_wire_encode_snapshot_req(&req, &c->buf), 0);
    s_send(dealer, c->buf.data, c->buf.len);
    const char *repeat = "fedmq_snapshots_withheld_total{reason=\"repeat\"}";
    free(s_wait_value(port, repeat, 1, S_WAIT_S));
    for (int i = 0; i < 3; i++) {
        zsock_t *d = s_sock(ZMQ_DEALER, "connect", ep_snap);
        s_send(d, c->buf.data, c->buf.len);
        s_expect_model(c, d, 5);
        zsock_destroy(&d);
    }
    s_send(dealer, "junk", 4);
    body = s_wait_value(port, "fedmq_frames_rejected_total{socket=\"snapshot\"}", 1, S_WAIT_S);
    s_promtool_metrics(c, "broker", body);
    assert_true(s_val(body, "fedmq_snapshots_served_total") == 4);
    assert_true(s_val(body, repeat) == 1);
    assert_true(s_val(body, "fedmq_snapshots_withheld_total{reason=\"queue_full\"}") == 0);
    assert_true(s_val(body, "fedmq_snapshots_withheld_total{reason=\"gone\"}") == 0);
    assert_true(s_val(body, "fedmq_trainers_live") == 1);
    assert_true(s_val(body, "fedmq_models_forwarded_total") == 1); /* repeats are not */
    assert_true(s_val(body, "fedmq_models_received_total") >= 1);
    assert_true(s_val(body, "fedmq_frames_rejected_total{socket=\"aggregator_models\"}") == 0);
    free(body);

    /* BYE: no live trainer */
    m.seq = 1;
    assert_int_equal(fm_wire_encode_member(FM_WIRE_BYE, &m, &c->buf), 0);
    s_send(dealer, c->buf.data, c->buf.len);
    free(s_wait_value(port, "fedmq_trainers_live", 0, S_WAIT_S));
    zsock_destroy(&dealer);
    zsock_destroy(&agg);
    s_stop(pid);
    /* the summary line at exit counts the same */
    assert_true(fm_proc_file_contains(
        log, "1 models forwarded, 4 snapshots served, 1 frames rejected (0 aggregator side, 1 "
             "snapshot side), 0 waiting, 1 snapshot replies withheld (1 repeats, 0 queues full, "
             "0 peers gone)"));
    fm_model_destroy(&layout);
}

/* ---- evaluator --------------------------------------------------------------------------- */

static void test_evaluator(void **state)
{
    s_ctx_t *c = *state;
    char ep_model[64], ep_snap[64], ep_met[64], met[64], log[600];
    s_endpoint(ep_model, sizeof ep_model);
    s_endpoint(ep_snap, sizeof ep_snap); /* nobody answers snapshots: the PUB is the feed */
    s_endpoint(ep_met, sizeof ep_met);
    int port = 0;
    fm_proc_metrics_set(met, sizeof met, "evaluator", &port);
    snprintf(log, sizeof log, "%s/evaluator.log", c->dir);
    zsock_t *pub = s_sock(ZMQ_PUB, "bind", ep_model);
    char s_model[100], s_snap[100], s_met[100], s_file[700], s_data[400];
    snprintf(s_model, sizeof s_model, "endpoints.model_pub=%s", ep_model);
    snprintf(s_snap, sizeof s_snap, "endpoints.snapshot=%s", ep_snap);
    snprintf(s_met, sizeof s_met, "endpoints.metrics_pub=%s", ep_met);
    snprintf(s_file, sizeof s_file, "evaluator.metrics_file=%s/metrics.jsonl", c->dir);
    snprintf(s_data, sizeof s_data, "federation.data_dir=%s", FM_DATA_DIR);
    char *argv[] = {BIN("evaluator"),
                    "--set",
                    "federation.model=mlp",
                    "--set",
                    "federation.num_clients=20",
                    "--set",
                    "trainer.clients=0-19",
                    "--set",
                    "federation.partition=iid",
                    "--set",
                    s_data,
                    "--set",
                    s_model,
                    "--set",
                    s_snap,
                    "--set",
                    s_met,
                    "--set",
                    s_file,
                    "--set",
                    met,
                    NULL};
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    zsock_t *sub = s_sock(ZMQ_SUB, "connect", ep_met);
    char *body = s_wait_metrics(port, pid, S_START_S);
    assert_true(s_val(body, "fedmq_model_version") == -1);
    assert_true(isnan(s_val(body, "fedmq_eval_accuracy"))); /* nothing scored yet */
    free(body);

    /* MODEL v3 on the PUB (repeated: a SUB may join late) until its METRICS arrive */
    int err = 0;
    fm_model_t *layout = fm_model_new("mlp", &err);
    assert_non_null(layout);
    fm_model_init(layout, 3);
    fm_wire_model_t hdr = {.version = 3, .created = 1.7e9 + 3};
    assert_int_equal(fm_wire_encode_model(&hdr, layout, fm_model_params(layout), &c->buf), 0);
    fm_wire_metrics_t mm;
    int got = 0;
    double end = fm_proc_now() + S_START_S;
    while (!got && fm_proc_now() < end) {
        s_send(pub, c->buf.data, c->buf.len);
        zframe_t *f = zframe_recv(sub);
        if (!f)
            continue;
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_wire_decode_metrics(zframe_data(f), zframe_size(f), &mm, &e), 0);
        zframe_destroy(&f);
        got = 1;
    }
    assert_true(got);
    assert_true(mm.version == 3);
    body = s_wait_value(port, "fedmq_evaluations_total", 1, S_WAIT_S);
    s_promtool_metrics(c, "evaluator", body);
    /* the published METRICS, bit for bit (the text is the shortest exact form) */
    assert_true(s_val(body, "fedmq_model_version") == 3);
    assert_true(s_val(body, "fedmq_eval_accuracy") == mm.accuracy);
    assert_true(s_val(body, "fedmq_eval_loss") == mm.loss);
    assert_true(mm.pop_clients == 20);
    assert_true(s_val(body, "fedmq_population_clients") == mm.pop_clients);
    assert_true(s_val(body, "fedmq_population_accuracy{stat=\"min\"}") == mm.pop_min);
    assert_true(s_val(body, "fedmq_population_accuracy{stat=\"p10\"}") == mm.pop_p10);
    assert_true(s_val(body, "fedmq_population_accuracy{stat=\"mean\"}") == mm.pop_mean);
    assert_true(s_val(body, "fedmq_population_below_threshold_ratio") == mm.pop_below);
    assert_true(s_val(body, "fedmq_eval_seconds_count") == 1);
    assert_true(s_val(body, "fedmq_frames_rejected_total") == 0);
    free(body);
    /* the metrics file has the one record */
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->dir);
    assert_int_equal(fm_proc_file_count(path, "\"version\":3,"), 1);
    zsock_destroy(&sub);
    zsock_destroy(&pub);
    fm_model_destroy(&layout);
    s_stop(pid);
}

/* ---- trainer ----------------------------------------------------------------------------------
 */

#define T_CLIENTS 20
#define T_BATCH 32

static void test_trainer(void **state)
{
    s_ctx_t *c = *state;
    char ep_pub[64], ep_snap[64], ep_upd[64], met[64], log[600];
    s_endpoint(ep_pub, sizeof ep_pub);
    s_endpoint(ep_snap, sizeof ep_snap);
    s_endpoint(ep_upd, sizeof ep_upd);
    int port = 0;
    fm_proc_metrics_set(met, sizeof met, "trainer", &port);
    snprintf(log, sizeof log, "%s/trainer.log", c->dir);
    zsock_t *router = s_sock(ZMQ_ROUTER, "bind", ep_snap); /* the broker's side */
    zsock_t *pub = s_sock(ZMQ_PUB, "bind", ep_pub);
    zsock_t *pull = s_sock(ZMQ_PULL, "bind", ep_upd); /* the aggregator's side */

    /* MODEL v7 opening sync round 1 with cohort {0, 1, 2}: each trains once, then nothing */
    int err = 0;
    fm_model_t *layout = fm_model_new("mlp", &err);
    assert_non_null(layout);
    fm_model_init(layout, 7);
    uint8_t ids[12] = {0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}; /* uint32 little-endian */
    fm_wire_model_t hdr = {.version = 7, .created = 1.7e9 + 7, .round = 1, .mu = 0};
    hdr.cohort.present = 1;
    hdr.cohort.ids = ids;
    hdr.cohort.count = 3;
    fm_wire_buf_t model = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_model(&hdr, layout, fm_model_params(layout), &model), 0);

    char s_pub[100], s_snap[100], s_upd[100], s_data[400];
    snprintf(s_pub, sizeof s_pub, "endpoints.model_pub=%s", ep_pub);
    snprintf(s_snap, sizeof s_snap, "endpoints.snapshot=%s", ep_snap);
    snprintf(s_upd, sizeof s_upd, "endpoints.updates=%s", ep_upd);
    snprintf(s_data, sizeof s_data, "federation.data_dir=%s", FM_DATA_DIR);
    char *argv[] = {BIN("trainer"),
                    "--set",
                    "federation.model=mlp",
                    "--set",
                    "federation.num_clients=20",
                    "--set",
                    "federation.partition=iid",
                    "--set",
                    "federation.local_epochs=1",
                    "--set",
                    "federation.batch_size=32",
                    "--set",
                    "trainer.clients=0-3",
                    "--set",
                    "trainer.workers=2",
                    "--set",
                    "trainer.dropout_prob=0",
                    "--set",
                    "trainer.slowdown_sigma=0",
                    "--set",
                    s_data,
                    "--set",
                    s_pub,
                    "--set",
                    s_snap,
                    "--set",
                    s_upd,
                    "--set",
                    met,
                    NULL};
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    free(s_wait_metrics(port, pid, S_START_S));

    /* answer HELLO / SNAPSHOT_REQ with the round's MODEL; collect the UPDATEs */
    zpoller_t *poller = zpoller_new(router, pull, NULL);
    assert_non_null(poller);
    int nupdates = 0;
    uint64_t steps = 0, samples = 0, want_steps = 0;
    double end = fm_proc_now() + S_START_S, quiet_until = 0;
    double secs = 0, waited = 0, wall0 = s_wallclock(); /* the updates' own timing */
    while (fm_proc_now() < end && (nupdates < 3 || fm_proc_now() < quiet_until)) {
        zsock_t *which = zpoller_wait(poller, 50);
        if (which == router) {
            zmsg_t *msg = zmsg_recv(router);
            zframe_t *id = zmsg_pop(msg);
            fm_wire_type_t type = FM_WIRE_NONE;
            zframe_t *body = zmsg_first(msg);
            if (body && fm_wire_peek(zframe_data(body), zframe_size(body), &type, NULL) == 0 &&
                (type == FM_WIRE_HELLO || type == FM_WIRE_SNAPSHOT_REQ)) {
                zmsg_t *reply = zmsg_new();
                zmsg_append(reply, &id);
                zmsg_addmem(reply, model.data, model.len);
                zmsg_send(&reply, router);
            }
            zframe_destroy(&id);
            zmsg_destroy(&msg);
        } else if (which == pull) {
            zframe_t *f = zframe_recv(pull);
            fm_wire_type_t type = FM_WIRE_NONE;
            fm_wire_update_t u;
            fm_errmsg_t e = {{0}};
            if (f && fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) == 0 &&
                type == FM_WIRE_UPDATE) {
                assert_int_equal(
                    fm_wire_decode_update(zframe_data(f), zframe_size(f), &u, c->ts, &e), 0);
                assert_true(u.round == 1 && u.base == 7 && u.client <= 2);
                nupdates++;
                steps += u.local_steps;
                samples += u.num_samples; /* one local epoch */
                want_steps += (u.num_samples + T_BATCH - 1) / T_BATCH;
                secs += u.train_seconds;
                waited += u.idle_before;
                assert_true(u.sent_at >= wall0 && u.sent_at <= s_wallclock());
                assert_true(u.idle_before >= 0 && u.train_seconds > 0);
                if (nupdates == 3)
                    quiet_until = fm_proc_now() + 1.0; /* nothing more may come */
            }
            zframe_destroy(&f);
        }
    }
    zpoller_destroy(&poller);
    assert_int_equal(nupdates, 3);
    assert_true(steps == want_steps); /* batches of 32, the last one smaller */

    char *body = s_get_metrics(port);
    assert_non_null(body);
    s_promtool_metrics(c, "trainer", body);
    assert_true(s_val(body, "fedmq_updates_sent_total") == 3);
    assert_true(s_val(body, "fedmq_local_steps_total") == (double)steps);
    assert_true(s_val(body, "fedmq_train_samples_total") == (double)samples);
    assert_true(s_val(body, "fedmq_updates_dropped_total") == 0);
    assert_true(s_val(body, "fedmq_client_dropouts_total") == 0);
    assert_true(s_val(body, "fedmq_model_version") == 7);
    assert_true(s_val(body, "fedmq_workers_busy") == 0);
    /* the workers' time: their training is the updates' "secs" (the trainings measured
     * inside them), their wait at least the updates' "wait" (it goes on after the last) */
    double w_train = s_val(body, "fedmq_worker_seconds_total{state=\"train\"}");
    double w_wait = s_val(body, "fedmq_worker_seconds_total{state=\"wait\"}");
    double w_other = s_val(body, "fedmq_worker_seconds_total{state=\"other\"}");
    print_message("trainer: 3 updates, %llu local steps, %llu samples; worker seconds train "
                  "%.3f (updates' secs %.3f), wait %.3f (updates' wait %.3f), other %.3f\n",
                  (unsigned long long)steps, (unsigned long long)samples, w_train, secs, w_wait,
                  waited, w_other);
    assert_true(w_train > 0 && fabs(w_train - secs) <= 0.01 + 0.01 * secs);
    assert_true(w_wait >= waited - 1e-3 && waited > 0); /* it waited for the model first */
    assert_true(w_other >= 0 && w_other < 1.0);
    free(body);
    s_stop(pid);
    /* the final summary line counts the same */
    char want[200];
    snprintf(want, sizeof want,
             "final: updates sent 3 (acknowledged 0, refused 0, resent 0, given up 0, waiting "
             "0), dropped 0,"); /* a MODEL without "boot": nothing kept for resending */
    assert_true(fm_proc_file_contains(log, want));
    snprintf(want, sizeof want, "local steps %llu, samples %llu", (unsigned long long)steps,
             (unsigned long long)samples);
    assert_true(fm_proc_file_contains(log, want));
    fm_wire_buf_free(&model);
    zsock_destroy(&router);
    zsock_destroy(&pub);
    zsock_destroy(&pull);
    fm_model_destroy(&layout);
}

/* ---- a port in use; metrics off ------------------------------------------------------------ */

static void test_port_in_use(void **state)
{
    s_ctx_t *c = *state;
    int port = fm_proc_free_port();
    assert_true(port > 0);
    /* the test listens on the port first (SO_REUSEADDR: the port may have been an earlier
     * case's, with connections left in TIME_WAIT; a listener still excludes the daemon's) */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int one = 1;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    char ep_agg[64], ep_pub[64], ep_snap[64], met[64], log[600];
    s_endpoint(ep_agg, sizeof ep_agg);
    s_endpoint(ep_pub, sizeof ep_pub);
    s_endpoint(ep_snap, sizeof ep_snap);
    snprintf(met, sizeof met, "broker.metrics_addr=127.0.0.1:%d", port);
    snprintf(log, sizeof log, "%s/broker-in-use.log", c->dir);
    char s_agg[100], s_pub[100], s_snap[100];
    snprintf(s_agg, sizeof s_agg, "endpoints.aggregator_models=%s", ep_agg);
    snprintf(s_pub, sizeof s_pub, "endpoints.model_pub=%s", ep_pub);
    snprintf(s_snap, sizeof s_snap, "endpoints.snapshot=%s", ep_snap);
    char *argv[] = {BIN("broker"), "--set", s_agg,   "--set", s_pub,
                    "--set",       s_snap,  "--set", met,     NULL};
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, S_WAIT_S);
    close(fd);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    char want[160];
    snprintf(want, sizeof want,
             "ERROR [broker] metrics_addr = 127.0.0.1:%d: cannot bind: Address already in use",
             port);
    assert_true(fm_proc_file_contains(log, want));
    assert_int_equal(fm_proc_file_count(log, " ERROR "), 1);

    /* off: no endpoint, one line saying so, the daemon runs */
    snprintf(log, sizeof log, "%s/broker-off.log", c->dir);
    snprintf(met, sizeof met, "broker.metrics_addr=off");
    pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    double end = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(log, "metrics: /metrics is off") && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    assert_true(fm_proc_file_contains(log, "metrics: /metrics is off"));
    s_stop(pid);
}

/* Every fedmq_ name in `path` (a histogram's _bucket/_sum/_count too) is a family some daemon
 * served above. */
static void s_names_served(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int lineno = 0, names = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        for (char *p = strstr(line, "fedmq_"); p; p = strstr(p + 1, "fedmq_")) {
            if (p > line && (p[-1] == '_' || p[-1] == '-' || p[-1] == '/' || p[-1] == '.' ||
                             (p[-1] >= 'a' && p[-1] <= 'z')))
                continue; /* part of another word (e.g. a file name) */
            if (p[6] < 'a' || p[6] > 'z')
                continue; /* a metric name goes on with a letter (not fedmq_0.1.0-1_amd64.deb) */
            char name[128];
            size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz_0123456789");
            if (n >= sizeof name || n == strlen("fedmq_"))
                continue;
            memcpy(name, p, n);
            name[n] = '\0';
            static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
            char want[160];
            snprintf(want, sizeof want, "# TYPE %s ", name);
            int found = strstr(s_types, want) != NULL;
            for (size_t i = 0; !found && i < 3; i++) {
                size_t k = strlen(suffixes[i]);
                if (n > k && strcmp(name + n - k, suffixes[i]) == 0) {
                    snprintf(want, sizeof want, "# TYPE %.*s histogram", (int)(n - k), name);
                    found = strstr(s_types, want) != NULL;
                }
            }
            if (!found)
                fail_msg("%s:%d: %s is not a metric any daemon serves", path, lineno, name);
            names++;
        }
    }
    fclose(f);
    print_message("%s: %d metric names, all served\n", path, names);
    assert_true(names > 0);
}

/* The docs name only real metrics (run after the daemons' tests, which collect their TYPE
 * lines); the dashboard is JSON. */
static void test_docs_names(void **state)
{
    (void)state;
    if (!strstr(s_types, "# TYPE fedmq_updates_applied_total ") ||
        !strstr(s_types, "# TYPE fedmq_train_samples_total ") ||
        !strstr(s_types, "# TYPE fedmq_eval_accuracy ") ||
        !strstr(s_types, "# TYPE fedmq_snapshots_served_total "))
        fail_msg("the daemons' tests above did not all pass: no metric names to check against");
    json_error_t je;
    json_t *dash = json_load_file(FM_SOURCE_DIR "/docs/grafana-fedmq.json", 0, &je);
    if (!dash)
        fail_msg("docs/grafana-fedmq.json:%d: %s", je.line, je.text);
    assert_true(json_array_size(json_object_get(dash, "panels")) > 0);
    json_decref(dash);
    s_names_served(FM_SOURCE_DIR "/docs/grafana-fedmq.json");
    s_names_served(FM_SOURCE_DIR "/docs/prometheus-alerts.yml");
    s_names_served(FM_SOURCE_DIR "/docs/OPERATIONS.md");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_promtool_and_rules, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_aggregator, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_broker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_evaluator, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_trainer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_port_in_use, s_setup, s_teardown),
        cmocka_unit_test(test_docs_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
