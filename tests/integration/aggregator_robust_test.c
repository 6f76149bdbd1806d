/* aggregator_robust_test: update screening and robust aggregation in the real
 * fedmq-aggregator (async FedBuff) on loopback. The test plays the trainers: PUSH crafted
 * UPDATEs, SUB to the MODELs. Model logreg, constant staleness, unweighted samples, fedavg with
 * server_lr 1, so a version is exactly w0 + delta_bar, and delta_bar is computed here
 * independently (the mean, the clipped mean, a sorted median, a trimmed mean, a norm-bounded
 * mean).
 *
 *   1. a sign-flipped x10 update under an absolute bound with clip: folded scaled to the
 *      bound (updates_clipped, fedmq_updates_clipped_total), the version is the clipped mean;
 *   2. the same attack under a relative bound (2 x median of the last 3 norms) with reject:
 *      counted as "norm", the version is the mean of the honest updates;
 *   3. a finite update near 3e38 among honest ones (no bound configured): rejected alone as
 *      "overflow", the honest ones are applied and the version is published, no buffer
 *      dropped;
 *   4. median, trimmed_mean and norm_bounded_mean: 4 honest updates and a sign-flipped x10
 *      one; each version equals the rule computed here, and stays near the honest updates;
 *   5. the screen reloaded (SIGHUP): no bound at start (the attacker is averaged in), then a
 *      bound with reject (the next attacker is counted as "norm").
 * Every wait is bounded; children are reaped and temp dirs removed in the teardown. */
#include <czmq.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_WAIT_S 60.0 /* bounded waits (generous: ASan builds on a loaded machine) */
#define S_MAX_SETS 16

typedef struct {
    char dir[256]; /* temp dir: checkpoints in dir/ckpt-N, logs in dir/agg-N.log */
    char ckpt[300];
    char log[300];
    char conf[300]; /* --config file of the reload test ("": none) */
    char ep_updates[64];
    char ep_models[64];
    int metrics_port;
    int runs;
    fm_proc_set_t procs;
    pid_t pid;
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout; /* logreg */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
    float *f[8]; /* test buffers, freed in the teardown */
    int nf;
} s_ctx_t;

static float *s_floats(s_ctx_t *c)
{
    assert_true(c->nf < 8);
    float *p = calloc(c->np, sizeof(float));
    assert_non_null(p);
    return c->f[c->nf++] = p;
}

/* Start an aggregator (fresh checkpoint dir and log) with buffer_k = k and the
 * NULL-terminated "s.k=v" overrides `extra`; (re)connect SUB/PUSH. */
static void s_start(s_ctx_t *c, int k, const char *const *extra)
{
    char sets[8][400];
    int ns = 0, run = c->runs++;
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
    char *argv[2 * (S_MAX_SETS + 16) + 6];
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
        assert_true(i < S_MAX_SETS);
        argv[a++] = "--set";
        argv[a++] = (char *)extra[i];
    }
    argv[a++] = "--log-level";
    argv[a++] = "info";
    argv[a] = NULL;
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
    zsock_destroy(&c->sub);
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
static void s_stop(s_ctx_t *c)
{
    int st = fm_proc_stop(c->pid, SIGTERM, 30.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Wait for a MODEL with version >= want, its params into w (may be NULL). The version, or
 * -1 on timeout. */
static int64_t s_wait_model(s_ctx_t *c, uint64_t want, float *w)
{
    double end = fm_proc_now() + S_WAIT_S;
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
            if (w)
                assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
            zframe_destroy(&f);
            return (int64_t)hdr.version;
        }
        zframe_destroy(&f);
    }
    return -1;
}

/* Send one UPDATE of delta from `base` (fresh id, 10 samples). */
static void s_send(s_ctx_t *c, uint64_t base, const float *delta)
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "robust-test");
    h.base = base;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* stats.json, once it says `updates_applied` >= applied; fails on timeout. */
static fm_stats_t s_stats(s_ctx_t *c, uint64_t applied)
{
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    fm_stats_t st;
    double end = fm_proc_now() + S_WAIT_S;
    for (;;) {
        if (fm_stats_read(path, &st, NULL) == 0 && st.updates_applied >= applied)
            return st;
        if (fm_proc_now() > end)
            fail_msg("%s: updates_applied never reached %llu", path, (unsigned long long)applied);
        fm_proc_sleep(0.02);
    }
}

/* The sample `series` of the aggregator's /metrics once it equals want; fails on timeout. */
static void s_expect_metric(s_ctx_t *c, const char *series, double want)
{
    double end = fm_proc_now() + S_WAIT_S, v = NAN;
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
static void s_honest(float *d, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        d[j] = 1e-3f * (float)((int)((j * 7) % 17) - 8) * (1.0f + 0.025f * (float)i) +
               1e-4f * (float)((int)((j * 3 + (size_t)i * 5) % 7) - 3);
}

static double s_norm(const float *d, size_t n)
{
    double ss = 0;
    for (size_t j = 0; j < n; j++)
        ss += (double)d[j] * d[j];
    return sqrt(ss);
}

/* max_j |w1_j - (w0_j + want_j)| */
static double s_err(const float *w0, const float *w1, const double *want, size_t n)
{
    double m = 0;
    for (size_t j = 0; j < n; j++)
        m = fmax(m, fabs((double)w1[j] - ((double)w0[j] + want[j])));
    return m;
}

/* ---- fixtures --------------------------------------------------------------------------------
 */

static int s_setup(void **state)
{
    if (!getenv("TMPDIR")) /* as aggregator_test: temp dirs under the build dir */
        setenv("TMPDIR", FM_BIN_DIR, 0);
    s_ctx_t *c = calloc(1, sizeof *c);
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

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    zsock_destroy(&c->sub);
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

/* ---- 1. clip ------------------------------------------------------------------------------- */

static void test_sign_flip_clipped(void **state)
{
    s_ctx_t *c = *state;
    size_t n = c->np;
    float *w0 = s_floats(c), *w1 = s_floats(c), *d = s_floats(c), *att = s_floats(c);
    double *want = calloc(n, sizeof *want), *plain = calloc(n, sizeof *plain);
    assert_non_null(want);
    assert_non_null(plain);
    s_honest(d, n, 0);
    double bound = 2.0 * s_norm(d, n);
    for (size_t j = 0; j < n; j++)
        att[j] = -10.0f * d[j];
    double f = bound / s_norm(att, n); /* 0.2 */
    char set[64];
    snprintf(set, sizeof set, "aggregator.norm_bound=%.17g", bound);
    const char *const extra[] = {set, "aggregator.norm_action=clip", NULL};
    s_start(c, 4, extra);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    for (int i = 0; i < 3; i++) {
        s_honest(d, n, i);
        s_send(c, 0, d);
        for (size_t j = 0; j < n; j++) {
            want[j] += d[j] / 4.0;
            plain[j] += d[j] / 4.0;
        }
    }
    s_send(c, 0, att);
    for (size_t j = 0; j < n; j++) {
        want[j] += f * att[j] / 4.0;
        plain[j] += att[j] / 4.0;
    }
    assert_int_equal(s_wait_model(c, 1, w1), 1);
    double err = s_err(w0, w1, want, n), err_plain = s_err(w0, w1, plain, n);
    print_message("clipped mean: max error %.3g (against the unclipped mean: %.3g)\n", err,
                  err_plain);
    assert_true(err < 1e-6);
    assert_true(err_plain > 1e-3); /* the clip is what made the difference */
    fm_stats_t st = s_stats(c, 4);
    assert_int_equal(st.updates_clipped, 1);
    assert_int_equal(fm_stats_rejected(&st, "norm"), 0);
    assert_int_equal(st.buffers_dropped, 0);
    s_expect_metric(c, "fedmq_updates_clipped_total", 1);
    assert_true(fm_proc_file_contains(c->log, "clipped update: UPDATE from robust-test"));
    assert_true(fm_proc_file_contains(c->log, "aggregation mean (streaming"));
    free(want);
    free(plain);
}

/* ---- 2. reject, relative ----------------------------------------------------------------- */

static void test_sign_flip_rejected_relative(void **state)
{
    s_ctx_t *c = *state;
    size_t n = c->np;
    float *w0 = s_floats(c), *w1 = s_floats(c), *w2 = s_floats(c), *d = s_floats(c);
    float *att = s_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    const char *const extra[] = {"aggregator.norm_bound=2", "aggregator.norm_bound_mode=relative",
                                 "aggregator.norm_window=3", "aggregator.norm_action=reject",
                                 NULL};
    s_start(c, 3, extra);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    /* warm-up: the window fills with three honest norms; an unbounded version 1 */
    for (int i = 0; i < 3; i++) {
        s_honest(d, n, i);
        s_send(c, 0, d);
    }
    assert_int_equal(s_wait_model(c, 1, w1), 1);
    /* bound = 2 x median: honest updates pass, the sign-flipped x10 one is rejected */
    for (int i = 3; i < 6; i++) {
        s_honest(d, n, i);
        s_send(c, 1, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
        if (i == 3) {
            for (size_t j = 0; j < n; j++)
                att[j] = -10.0f * d[j];
            s_send(c, 1, att);
        }
    }
    assert_int_equal(s_wait_model(c, 2, w2), 2);
    double err = s_err(w1, w2, want, n);
    print_message("honest mean after the rejection: max error %.3g\n", err);
    assert_true(err < 1e-6);
    fm_stats_t st = s_stats(c, 6);
    assert_int_equal(fm_stats_rejected(&st, "norm"), 1);
    assert_int_equal(st.updates_clipped, 0);
    assert_int_equal(st.updates_applied, 6);
    s_expect_metric(c, "fedmq_updates_rejected_total{reason=\"norm\"}", 1);
    assert_true(fm_proc_file_contains(c->log, "rejected frame (norm): UPDATE from robust-test"));
    free(want);
}

/* ---- 3. a 3e38 update among honest ones ---------------------------------------------------- */

static void test_overflow_rejected_alone(void **state)
{
    s_ctx_t *c = *state;
    size_t n = c->np;
    float *w0 = s_floats(c), *w1 = s_floats(c), *d = s_floats(c), *big = s_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    s_start(c, 4, NULL); /* the defaults: mean, no norm bound */
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    for (size_t j = 0; j < n; j++) /* finite, and would overflow the float accumulator */
        big[j] = j % 2 ? 3e38f : -3e38f;
    for (int i = 0; i < 4; i++) {
        s_honest(d, n, i);
        s_send(c, 0, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 4.0;
        if (i == 1)
            s_send(c, 0, big); /* in the middle of the buffer */
    }
    assert_int_equal(s_wait_model(c, 1, w1), 1);
    double err = s_err(w0, w1, want, n);
    print_message("honest mean with a 3e38 update rejected: max error %.3g\n", err);
    assert_true(err < 1e-6);
    fm_stats_t st = s_stats(c, 4);
    assert_int_equal(fm_stats_rejected(&st, "overflow"), 1);
    assert_int_equal(fm_stats_rejected(&st, "nonfinite"), 0);
    assert_int_equal(st.buffers_dropped, 0);
    assert_int_equal(st.version, 1);
    s_expect_metric(c, "fedmq_updates_rejected_total{reason=\"overflow\"}", 1);
    s_expect_metric(c, "fedmq_buffers_dropped_total", 0);
    free(want);
}

/* ---- 5. the screen reloaded ------------------------------------------------------------- */

/* Write the config file atomically: [aggregator] with the given lines. */
static void s_write_conf(s_ctx_t *c, const char *lines)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->conf);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "[aggregator]\n%s", lines);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, c->conf), 0);
}

/* No bound at start: the sign-flipped x10 update is averaged in. SIGHUP with norm_bound and
 * norm_action = reject: the next one is rejected, the version is the honest mean. */
static void test_screen_reload(void **state)
{
    s_ctx_t *c = *state;
    size_t n = c->np;
    float *w0 = s_floats(c), *w1 = s_floats(c), *w2 = s_floats(c), *d = s_floats(c);
    float *att = s_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    snprintf(c->conf, sizeof c->conf, "%s/fedmq.conf", c->dir);
    s_write_conf(c, "norm_bound = 0\n");
    s_start(c, 3, NULL);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    s_honest(d, n, 0);
    for (size_t j = 0; j < n; j++)
        att[j] = -10.0f * d[j];
    for (int i = 0; i < 2; i++) {
        s_honest(d, n, i);
        s_send(c, 0, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
    }
    s_send(c, 0, att);
    for (size_t j = 0; j < n; j++)
        want[j] += att[j] / 3.0;
    assert_int_equal(s_wait_model(c, 1, w1), 1);
    assert_true(s_err(w0, w1, want, n) < 1e-6); /* the attacker is in the plain mean */

    char lines[160];
    snprintf(lines, sizeof lines, "norm_bound = %.17g\nnorm_action = reject\n",
             3.0 * s_norm(d, n));
    s_write_conf(c, lines);
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    double end = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, "SIGHUP: config reloaded; changed: [aggregator] "
                                          "norm_bound: 0 -> ") &&
           fm_proc_now() < end)
        fm_proc_sleep(0.02);
    assert_true(fm_proc_file_contains(c->log, "[aggregator] norm_action: clip -> reject"));
    memset(want, 0, n * sizeof *want);
    for (int i = 2; i < 5; i++) {
        s_honest(d, n, i);
        s_send(c, 1, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
        if (i == 2)
            s_send(c, 1, att);
    }
    assert_int_equal(s_wait_model(c, 2, w2), 2);
    assert_true(s_err(w1, w2, want, n) < 1e-6);
    fm_stats_t st = s_stats(c, 6);
    assert_int_equal(fm_stats_rejected(&st, "norm"), 1);
    free(want);
}

/* ---- 4. the robust rules ------------------------------------------------------------------- */

static int s_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* delta_bar of `rule` over the K = 5 rows u (naive: sort each parameter's values; norms by a
 * plain loop). */
static void s_rule(const char *rule, float *const u[5], size_t n, double *out)
{
    double norm[5], sorted[5], m = 0;
    for (int i = 0; i < 5; i++)
        sorted[i] = norm[i] = s_norm(u[i], n);
    for (int a = 1; a < 5; a++) /* insertion sort of the norms */
        for (int b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
            double t = sorted[b];
            sorted[b] = sorted[b - 1];
            sorted[b - 1] = t;
        }
    m = sorted[2];
    for (size_t j = 0; j < n; j++) {
        float v[5];
        for (int i = 0; i < 5; i++)
            v[i] = u[i][j];
        if (strcmp(rule, "norm_bounded_mean") == 0) {
            double s = 0;
            for (int i = 0; i < 5; i++)
                s += (norm[i] > m ? m / norm[i] : 1.0) * v[i];
            out[j] = s / 5;
            continue;
        }
        qsort(v, 5, sizeof v[0], s_cmp_float);
        out[j] = strcmp(rule, "median") == 0 ? v[2] : ((double)v[1] + v[2] + v[3]) / 3;
    }
}

static void test_robust_rules(void **state)
{
    s_ctx_t *c = *state;
    size_t n = c->np;
    static const char *const rules[] = {"median", "trimmed_mean", "norm_bounded_mean"};
    float *w0 = s_floats(c), *w1 = s_floats(c), *u[5];
    for (int i = 0; i < 5; i++)
        u[i] = s_floats(c);
    for (int i = 0; i < 4; i++)
        s_honest(u[i], n, i);
    for (size_t j = 0; j < n; j++)
        u[4][j] = -10.0f * u[0][j]; /* the attacker */
    double *want = calloc(n, sizeof *want), *hmean = calloc(n, sizeof *hmean);
    assert_non_null(want);
    assert_non_null(hmean);
    for (int i = 0; i < 4; i++)
        for (size_t j = 0; j < n; j++)
            hmean[j] += u[i][j] / 4.0;
    double plain = 0; /* how far the plain mean of the five lands from the honest mean */
    for (size_t j = 0; j < n; j++)
        plain = fmax(plain, fabs((4 * hmean[j] + u[4][j]) / 5 - hmean[j]));
    for (size_t r = 0; r < 3; r++) {
        char set[64];
        snprintf(set, sizeof set, "aggregator.aggregation=%s", rules[r]);
        const char *const extra[] = {set, "aggregator.trim_fraction=0.2", NULL};
        s_start(c, 5, extra);
        assert_int_equal(s_wait_model(c, 0, w0), 0);
        for (int i = 0; i < 5; i++)
            s_send(c, 0, u[(i + 2) % 5]); /* the attacker third */
        assert_int_equal(s_wait_model(c, 1, w1), 1);
        s_rule(rules[r], u, n, want);
        double err = s_err(w0, w1, want, n), dist = s_err(w0, w1, hmean, n);
        print_message("%s: max error %.3g, distance to the honest mean %.3g (plain mean: %.3g)\n",
                      rules[r], err, dist, plain);
        assert_true(err < 1e-6);
        assert_true(dist < 0.25 * plain);
        char line[160];
        snprintf(line, sizeof line, "aggregation %s over 5 stored updates", rules[r]);
        assert_true(fm_proc_file_contains(c->log, line));
        assert_int_equal(s_stats(c, 5).updates_applied, 5);
        s_stop(c);
    }
    free(want);
    free(hmean);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sign_flip_clipped, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sign_flip_rejected_relative, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_overflow_rejected_alone, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_robust_rules, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_screen_reload, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
