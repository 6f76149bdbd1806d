/* fm_aggtest: the scaffold of the integration tests that play the trainers against one real
 * fedmq-aggregator on loopback (aggregator_robust_test, aggregator_privacy_test): start it
 * with a fresh checkpoint dir and log (model logreg, constant staleness, unweighted samples,
 * fedavg with server_lr 1, so a version is exactly w0 + delta_bar), PUSH crafted UPDATEs,
 * SUB to the MODELs, read stats.json and /metrics, all waits bounded (FM_AT_WAIT_S).
 * Header-only, for one test program each; cmocka and czmq included before it. */
#ifndef FM_AGGTEST_H
#define FM_AGGTEST_H

#include <czmq.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_http.h"
#include "fm_le.h"
#include "fm_proc.h"
#include "fm_zbind.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define FM_AT_WAIT_S 60.0 /* bounded waits (generous: ASan builds on a loaded machine) */
#define FM_AT_MAX_SETS 16

typedef struct {
    char dir[256]; /* temp dir: checkpoints in dir/ckpt-N, logs in dir/agg-N.log */
    char ckpt[300];
    char log[300];
    char conf[300]; /* --config file of the reload test ("": none) */
    char ep_updates[64];
    char ep_models[64];
    int metrics_port;
    int runs;
    int resume; /* 1: the next fm_at_start keeps the checkpoint dir (a restart resumes) */
    fm_proc_set_t procs;
    pid_t pid;
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout; /* logreg */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
    float *f[16]; /* test buffers, freed in the teardown */
    int nf;
} fm_at_t;

static inline float *fm_at_floats(fm_at_t *c)
{
    assert_true(c->nf < 16);
    float *p = calloc(c->np, sizeof(float));
    assert_non_null(p);
    return c->f[c->nf++] = p;
}

/* Start an aggregator (fresh checkpoint dir and log) with buffer_k = k and the
 * NULL-terminated "s.k=v" overrides `extra`; (re)connect SUB/PUSH. */
static inline void fm_at_start(fm_at_t *c, int k, const char *const *extra)
{
    char sets[8][400];
    int ns = 0, run = c->runs++;
    if (!c->resume)
        snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt-%d", c->dir, run);
    snprintf(c->log, sizeof c->log, "%s/agg-%d.log", c->dir, run);
    fm_proc_metrics_set(sets[ns++], 400, "aggregator", &c->metrics_port);
    snprintf(sets[ns++], 400, "endpoints.updates=%s", c->ep_updates);
    snprintf(sets[ns++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[ns++], 400, "aggregator.checkpoint_dir=%s", c->ckpt);
    snprintf(sets[ns++], 400, "aggregator.buffer_k=%d", k);
    static const char *const fixed[] = {"federation.model=logreg",
                                        "aggregator.staleness=constant",
                                        "aggregator.weight_by_samples=false",
                                        "aggregator.server_optimizer=fedavg",
                                        "aggregator.server_lr=1",
                                        "aggregator.acks=false",
                                        "aggregator.checkpoint_every=100",
                                        "aggregator.max_staleness=5"};
    char *argv[2 * (FM_AT_MAX_SETS + 16) + 6];
    int a = 0;
    argv[a++] = FM_BIN_DIR "/fedmq-aggregator";
    if (c->conf[0]) {
        argv[a++] = "--config";
        argv[a++] = c->conf;
    }
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        argv[a++] = "--set";
        argv[a++] = (char *)fixed[i];
    }
    for (int i = 0; i < ns; i++) {
        argv[a++] = "--set";
        argv[a++] = sets[i];
    }
    for (int i = 0; extra && extra[i]; i++) {
        assert_true(i < FM_AT_MAX_SETS);
        argv[a++] = "--set";
        argv[a++] = (char *)extra[i];
    }
    argv[a++] = "--log-level";
    argv[a++] = "info";
    argv[a] = NULL;
    fm_zdrain_destroy(&c->sub); /* the old publisher is gone: before a new one binds */
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
    zsock_destroy(&c->push);
    c->sub = zsock_new(ZMQ_SUB);
    c->push = zsock_new(ZMQ_PUSH);
    assert_non_null(c->sub);
    assert_non_null(c->push);
    zsock_set_linger(c->sub, 0);
    zsock_set_conflate(c->sub, 1);
    zsock_set_subscribe(c->sub, "");
    zsock_set_rcvtimeo(c->sub, 100);
    assert_int_equal(zsock_connect(c->sub, "%s", c->ep_models), 0);
    zsock_set_linger(c->push, 0);
    zsock_set_sndtimeo(c->push, 5000);
    assert_int_equal(zsock_connect(c->push, "%s", c->ep_updates), 0);
}

/* Stop the running aggregator (SIGTERM: it exits 0). */
static inline void fm_at_stop(fm_at_t *c)
{
    int st = fm_proc_stop(c->pid, SIGTERM, 30.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Wait for a MODEL with version >= want, its params into w (may be NULL), its header into
 * *hdr_out (may be NULL). The version, or -1 on timeout. */
static inline int64_t fm_at_wait_model_hdr(fm_at_t *c, uint64_t want, float *w,
                                           fm_wire_model_t *hdr_out)
{
    double end = fm_proc_now() + FM_AT_WAIT_S;
    while (fm_proc_now() < end) {
        zframe_t *f = zframe_recv(c->sub);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e);
        if (rc == 0)
            rc = fm_wire_tensors_check(c->ts, c->layout, &e);
        assert_int_equal(rc, 0);
        if (hdr.version >= want) {
            if (hdr_out)
                *hdr_out = hdr;
            if (w)
                assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
            zframe_destroy(&f);
            return (int64_t)hdr.version;
        }
        zframe_destroy(&f);
    }
    return -1;
}

/* fm_at_wait_model_hdr without the header. */
static inline int64_t fm_at_wait_model(fm_at_t *c, uint64_t want, float *w)
{
    return fm_at_wait_model_hdr(c, want, w, NULL);
}

/* Send one UPDATE of delta from `base` for `client` answering sync round `round` (0: an
 * async update, no "round"), claiming n samples (fresh id). */
static inline void fm_at_send_round(fm_at_t *c, uint64_t base, uint64_t round, uint32_t client,
                                    uint64_t n, const float *delta)
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "agg-test");
    h.client = client;
    h.base = base;
    h.round = round;
    h.num_samples = n;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* HELLO from trainer "agg-test" serving clients [first, first + count) (sync rounds need
 * live clients; start the aggregator with a long broker.heartbeat_timeout_s). */
static inline void fm_at_hello(fm_at_t *c, uint32_t first, uint32_t count)
{
    fm_wire_member_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.trainer, sizeof m.trainer, "agg-test");
    m.pid = (uint32_t)getpid();
    m.client_first = first;
    m.client_count = count;
    m.workers = 1;
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &m, &c->buf), 0);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* DECLINE of clients ids[0..n) for sync round `round` on version `base`. */
static inline void fm_at_decline(fm_at_t *c, uint64_t base, uint64_t round, const uint32_t *ids,
                                 uint32_t n)
{
    uint8_t le[4 * 64];
    assert_true(n >= 1 && n <= 64);
    for (uint32_t i = 0; i < n; i++)
        fm_le_put32(le + 4 * i, ids[i]);
    fm_wire_decline_t d = {
        .clients = {.present = 1, .ids = le, .count = n}, .base = base, .round = round};
    snprintf(d.trainer, sizeof d.trainer, "agg-test");
    assert_int_equal(fm_wire_encode_decline(&d, &c->buf), 0);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* Wait for a MODEL that opens sync round >= `round`; its header (the cohort pointer is not
 * valid after return: only its count) into *hdr, params into w (may be NULL). 0, or -1 on
 * timeout. */
static inline int fm_at_wait_round(fm_at_t *c, uint64_t round, float *w, fm_wire_model_t *hdr)
{
    double end = fm_proc_now() + FM_AT_WAIT_S;
    while (fm_proc_now() < end) {
        zframe_t *f = zframe_recv(c->sub);
        if (!f)
            continue;
        fm_errmsg_t e = {{0}};
        int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), hdr, c->ts, &e);
        assert_int_equal(rc, 0);
        int ok = hdr->round >= round && hdr->cohort.count > 0;
        if (ok && w)
            assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
        zframe_destroy(&f);
        if (ok) {
            hdr->cohort.ids = NULL;
            return 0;
        }
    }
    return -1;
}

/* Send one UPDATE of delta from `base` for `client`, claiming n samples (fresh id). */
static inline void fm_at_send_ex(fm_at_t *c, uint64_t base, uint32_t client, uint64_t n,
                                 const float *delta)
{
    fm_at_send_round(c, base, 0, client, n, delta);
}

/* Send one UPDATE of delta from `base` (client 0, 10 samples, fresh id). */
static inline void fm_at_send(fm_at_t *c, uint64_t base, const float *delta)
{
    fm_at_send_ex(c, base, 0, 10, delta);
}

/* stats.json, once its `field` ("updates_applied" or "version") is >= want; fails on timeout. */
static inline fm_stats_t fm_at_stats_when(fm_at_t *c, const char *field, uint64_t want)
{
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    fm_stats_t st;
    int version = strcmp(field, "version") == 0;
    double end = fm_proc_now() + FM_AT_WAIT_S;
    for (;;) {
        if (fm_stats_read(path, &st, NULL) == 0 &&
            (version ? st.version : st.updates_applied) >= want)
            return st;
        if (fm_proc_now() > end)
            fail_msg("%s: %s never reached %llu", path, field, (unsigned long long)want);
        fm_proc_sleep(0.02);
    }
}

/* stats.json, once it says `updates_applied` >= applied; fails on timeout. */
static inline fm_stats_t fm_at_stats(fm_at_t *c, uint64_t applied)
{
    return fm_at_stats_when(c, "updates_applied", applied);
}

/* The sample `series` of the aggregator's /metrics once it equals want; fails on timeout. */
static inline void fm_at_expect_metric(fm_at_t *c, const char *series, double want)
{
    double end = fm_proc_now() + FM_AT_WAIT_S, v = NAN;
    for (;;) {
        fm_http_resp_t r;
        if (fm_http_request(c->metrics_port, "GET", "/metrics", &r) == 0) {
            int ok = r.body && fm_http_sample(r.body, series, &v) && v == want;
            fm_http_free(&r);
            if (ok)
                return;
        }
        if (fm_proc_now() > end)
            fail_msg("/metrics: %s = %g, want %g", series, v, want);
        fm_proc_sleep(0.05);
    }
}

/* Honest delta i: one common direction, scaled by 1 + 0.025 i, plus a small pattern of its
 * own (honest clients roughly agree); |d_j| < 9e-3. */
static inline void fm_at_honest(float *d, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        d[j] = 1e-3f * (float)((int)((j * 7) % 17) - 8) * (1.0f + 0.025f * (float)i) +
               1e-4f * (float)((int)((j * 3 + (size_t)i * 5) % 7) - 3);
}

static inline double fm_at_norm(const float *d, size_t n)
{
    double ss = 0;
    for (size_t j = 0; j < n; j++)
        ss += (double)d[j] * d[j];
    return sqrt(ss);
}

/* ---- fixtures --------------------------------------------------------------------------------
 */

static inline int fm_at_setup(void **state)
{
    if (!getenv("TMPDIR")) /* as aggregator_test: temp dirs under the build dir */
        setenv("TMPDIR", FM_BIN_DIR, 0);
    fm_at_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_models, sizeof c->ep_models, "tcp://127.0.0.1:%d", fm_proc_free_port());
    c->layout = fm_model_new("logreg", NULL);
    c->ts = malloc(sizeof *c->ts);
    if (!c->layout || !c->ts)
        return -1;
    c->np = fm_model_nparams(c->layout);
    *state = c;
    return 0;
}

static inline int fm_at_teardown(void **state)
{
    fm_at_t *c = *state;
    fm_proc_reap_all(&c->procs);
    fm_zdrain_destroy(&c->sub);
    zsock_destroy(&c->push);
    if (getenv("FM_KEEP_LOGS")) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat '%s'/agg-*.log >&2", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "no log\n");
    }
    fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    for (int i = 0; i < c->nf; i++)
        free(c->f[i]);
    free(c->ts);
    fm_model_destroy(&c->layout);
    free(c);
    return 0;
}

#endif
