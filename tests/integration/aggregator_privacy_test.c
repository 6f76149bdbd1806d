/* aggregator_privacy_test: client-level differential privacy ([privacy] mode = client) in the
 * real fedmq-aggregator (async FedBuff) on loopback. The test plays the trainers (PUSH crafted
 * UPDATEs, SUB to the MODELs); logreg, fedavg with server_lr 1, so a version is exactly
 * w0 + (S + noise) / K, and S is computed here independently.
 *
 *   1. sensitivity: updates with L2 norms 1e3-1e6 x C, sample counts from 1 to 2^62 and
 *      staleness 0 and 1 (polynomial, a = 0.5): with sigma tiny, K (w1 - w0) equals
 *      sum_i s(tau_i) C u_i (u_i the unit direction) — each client moves the sum by at most
 *      C whatever it claims, sample counts weigh nothing; a second update from one client
 *      in a buffer is rejected "repeat"; the MODEL's eps and stats.json's privacy_epsilon
 *      equal the accountant's epsilon of 1 and 2 steps at q = 1;
 *   2. noise: sigma = 2, C = 0.5: the residual K (w1 - w0) - S over the 7,850 coordinates has
 *      mean 0 and standard deviation sigma C (4 % tolerance: about 5 standard errors);
 *      noise scaled by 1/K, sqrt(K) or not at all would fail;
 *   3. budget: target_epsilon between the epsilon of 3 and 4 steps: three versions, then the
 *      fourth buffer is dropped, the log says why, stats.json and /metrics say exhausted and
 *      finished, the last MODEL's eps <= target, later updates are rejected "late"; a restart
 *      on the same checkpoints resumes the spent budget (still exhausted), and a restart with
 *      a larger target continues from epsilon(3 steps), not from 0; `fedmq checkpoints`
 *      lists the epsilon of each record;
 *   4. a full disk (a 4 MB tmpfs in a private mount namespace; root only, as in CI): the
 *      version whose checkpoint fails is not published and no more versions are made; after
 *      room is made, a restart resumes the last durable budget and charges the reserved
 *      (lost) version as a step;
 *   5. sync rounds (fixed cohort): the same bound, a 2^62 sample claim weighs nothing;
 *   6. Poisson-sampled sync rounds ([federation] sampling = poisson, q = 1/2): every live
 *      client is asked ("q" in MODEL), a round closes when all updated or declined, the
 *      denominator is K = clients_per_round, a round without updates is still a step (noise
 *      alone), epsilon is the accountant's at q = 1/2 (below q = 1's), stale or repeated
 *      DECLINEs are ignored and counted; without privacy an empty round makes no version;
 *   7. adaptive clipping ([privacy] adaptive_clip): with sigma and sigma_b tiny and every
 *      update of norm 10 from C0 = 1, C grows by e^(eta/2) per step until it passes 10, then
 *      oscillates around it (each step's clip read from the MODEL, C from stats.json and
 *      /metrics, against the rule computed here); a restart resumes C (and a SIGHUP keeps
 *      the screen at it); the vector noise is
 *      z_delta C per coordinate of the sum while epsilon is charged at z; a store without a
 *      clip record resumes at clip_norm.
 * Every wait is bounded; children are reaped and temp dirs removed in the teardown. */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_aggtest.h"
#include "fm_rdp.h"

#define S_DELTA 1e-5

/* The epsilon of `steps` steps of sigma at q = 1 (the aggregator's accounting). */
static double s_eps(double sigma, uint64_t steps)
{
    return fm_rdp_epsilon_of(1.0, sigma, steps, S_DELTA, FM_RDP_IMPROVED, NULL);
}

/* Direction i (not normalised): a pattern of its own per update. */
static void s_dir(float *d, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        d[j] = (float)((int)((j * (size_t)(7 + 2 * i) + (size_t)i) % 19) - 9) + 0.5f;
}

/* want += s * C * d / ||d|| */
static void s_add_clipped(double *want, const float *d, size_t n, double s, double clip)
{
    double f = s * clip / fm_at_norm(d, n);
    for (size_t j = 0; j < n; j++)
        want[j] += f * d[j];
}

static void s_expect_close(double got, double want, double rel, const char *what)
{
    if (!(fabs(got - want) <= rel * fabs(want)))
        fail_msg("%s = %.12g, expected %.12g", what, got, want);
}

/* ---- 1. sensitivity ------------------------------------------------------------------------ */

static void test_sensitivity(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *w2 = fm_at_floats(c);
    float *d[6];
    for (int i = 0; i < 6; i++) {
        d[i] = fm_at_floats(c);
        s_dir(d[i], n, i);
    }
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    const double clip = 1.0, sigma = 1e-6;
    const char *const extra[] = {
        "privacy.mode=client",           "privacy.clip_norm=1",
        "privacy.noise_multiplier=1e-6", "aggregator.staleness=polynomial",
        "aggregator.staleness_a=0.5",    NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    assert_true(fm_proc_wait_file_contains(c->log, "client-level DP: clip 1, noise multiplier",
                                           FM_AT_WAIT_S));
    /* version 1: three clients, norms far above C, absurd sample counts, staleness 0; a
     * second update of client 0 in the same buffer is refused */
    static const float scale[6] = {1e3f, 1e6f, 5e4f, 2e5f, 1e4f, 3e5f};
    static const uint64_t claim[6] = {1, 1ull << 62, 7, 1ull << 40, 1, 1ull << 61};
    for (int i = 0; i < 6; i++)
        for (size_t j = 0; j < n; j++)
            d[i][j] *= scale[i];
    fm_at_send_ex(c, 0, 0, claim[0], d[0]);
    fm_at_send_ex(c, 0, 0, claim[1], d[1]); /* client 0 again: "repeat" */
    fm_at_send_ex(c, 0, 1, claim[1], d[1]);
    fm_at_send_ex(c, 0, 2, claim[2], d[2]);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    assert_int_equal(fm_at_wait_model_hdr(c, 1, w1, &hdr), 1);
    for (int i = 0; i < 3; i++)
        s_add_clipped(want, d[i], n, 1.0, clip);
    double err = 0, norm = 0;
    for (size_t j = 0; j < n; j++) {
        double got = 3.0 * ((double)w1[j] - w0[j]);
        err = fmax(err, fabs(got - want[j]));
        norm += got * got;
    }
    /* noise 1e-6 x 6 sd, float rounding of w ~ 1e-7 relative to |w| <= 1 */
    if (err > 2e-5)
        fail_msg("version 1: max |K dw - S| = %g", err);
    assert_true(sqrt(norm) <= 3.0 * clip * (1 + 1e-4)); /* the sensitivity bound */
    s_expect_close(hdr.epsilon, s_eps(sigma, 1), 1e-12, "MODEL 1 eps");
    assert_true(hdr.delta == S_DELTA);
    fm_stats_t st = fm_at_stats_when(c, "version", 1);
    assert_int_equal(fm_stats_rejected(&st, "repeat"), 1);
    assert_true(st.privacy && !st.privacy_exhausted && st.privacy_steps == 1);
    s_expect_close(st.privacy_epsilon, s_eps(sigma, 1), 1e-12, "stats privacy_epsilon");
    assert_int_equal(st.updates_clipped, 3);
    assert_true(fm_proc_file_contains(c->log, "already has an update in this buffer"));

    /* version 2: staleness 1 (based on version 0): each counts s(1) = 2^-0.5 x C */
    memset(want, 0, n * sizeof *want);
    for (int i = 3; i < 6; i++) {
        fm_at_send_ex(c, 0, (uint32_t)i, claim[i], d[i]);
        s_add_clipped(want, d[i], n, pow(2.0, -0.5), clip);
    }
    assert_int_equal(fm_at_wait_model_hdr(c, 2, w2, &hdr), 2);
    err = 0;
    for (size_t j = 0; j < n; j++)
        err = fmax(err, fabs(3.0 * ((double)w2[j] - w1[j]) - want[j]));
    if (err > 2e-5)
        fail_msg("version 2: max |K dw - S| = %g", err);
    s_expect_close(hdr.epsilon, s_eps(sigma, 2), 1e-12, "MODEL 2 eps");
    char series[64];
    snprintf(series, sizeof series, "fedmq_privacy_steps_total");
    fm_at_expect_metric(c, series, 2);
    fm_at_expect_metric(c, "fedmq_privacy_budget_exhausted", 0);
    fm_at_stop(c);
    free(want);
}

/* One noised step of three updates of norm far above `clip` (clients first..first+2, based
 * on version `base`, directions s_dir 0-2): waits for version base + 1 (params into w1,
 * header into *hdr) and returns the mean and the sd of the residual K (w1 - w0) - S over
 * the coordinates, S computed here. */
static void s_noise_step(fm_at_t *c, uint64_t base, uint32_t first, double clip, const float *w0,
                         float *w1, fm_wire_model_t *hdr, double *mean, double *sd)
{
    size_t n = c->np;
    float *d = malloc(n * sizeof *d);
    double *want = calloc(n, sizeof *want);
    assert_true(d && want);
    for (int i = 0; i < 3; i++) {
        s_dir(d, n, i);
        for (size_t j = 0; j < n; j++)
            d[j] *= 100.0f;
        fm_at_send_ex(c, base, first + (uint32_t)i, 10, d);
        s_add_clipped(want, d, n, 1.0, clip);
    }
    memset(hdr, 0, sizeof *hdr);
    assert_int_equal(fm_at_wait_model_hdr(c, base + 1, w1, hdr), (int64_t)(base + 1));
    double sum = 0, ss = 0;
    for (size_t j = 0; j < n; j++) {
        double r = 3.0 * ((double)w1[j] - w0[j]) - want[j];
        sum += r;
        ss += r * r;
    }
    *mean = sum / (double)n;
    *sd = sqrt(ss / (double)n - *mean * *mean);
    free(d);
    free(want);
}

/* ---- 2. noise ---------------------------------------------------------------------------- */

static void test_noise(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c);
    const double clip = 0.5, sigma = 2.0;
    const char *const extra[] = {"privacy.mode=client", "privacy.clip_norm=0.5",
                                 "privacy.noise_multiplier=2", NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    fm_wire_model_t hdr;
    double mean, sd;
    s_noise_step(c, 0, 10, clip, w0, w1, &hdr, &mean, &sd);
    /* standard error of the mean sigma C / sqrt(n) = 0.0113; of the sd ~ sigma C /
     * sqrt(2 n) = 0.008 (0.8 %): 4 % is 5 standard errors (false alarm ~ 1e-6) */
    if (!(fabs(mean) <= 5.0 * sigma * clip / sqrt((double)n)))
        fail_msg("noise mean %g (n %zu)", mean, n);
    if (!(fabs(sd - sigma * clip) <= 0.04 * sigma * clip))
        fail_msg("noise sd %g, expected sigma C = %g", sd, sigma * clip);
    s_expect_close(hdr.epsilon, s_eps(sigma, 1), 1e-12, "MODEL eps");
    fm_at_stop(c);
}

/* ---- 3. budget ----------------------------------------------------------------------------- */

/* Send K = 2 updates from version `base` (clients 2 base, 2 base + 1). */
static void s_buffer(fm_at_t *c, float *d, uint64_t base)
{
    for (int i = 0; i < 2; i++) {
        s_dir(d, c->np, (int)base + i);
        fm_at_send_ex(c, base, (uint32_t)(2 * base + (uint64_t)i), 5, d);
    }
}

static void test_budget(void **state)
{
    fm_at_t *c = *state;
    float *d = fm_at_floats(c);
    const double sigma = 4.0;
    double e3 = s_eps(sigma, 3), e4 = s_eps(sigma, 4), e5 = s_eps(sigma, 5);
    assert_true(e3 < e4 && e4 < e5);
    char target[64], more[64];
    snprintf(target, sizeof target, "privacy.target_epsilon=%.17g", 0.5 * (e3 + e4));
    snprintf(more, sizeof more, "privacy.target_epsilon=%.17g", 0.5 * (e4 + e5));
    const char *const extra[] = {"privacy.mode=client", "privacy.noise_multiplier=4", target,
                                 NULL};
    fm_at_start(c, 2, extra);
    assert_int_equal(fm_at_wait_model(c, 0, NULL), 0);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    for (uint64_t v = 0; v < 3; v++) {
        s_buffer(c, d, v);
        assert_int_equal(fm_at_wait_model_hdr(c, v + 1, NULL, &hdr), (int64_t)v + 1);
    }
    s_expect_close(hdr.epsilon, e3, 1e-12, "MODEL 3 eps");
    /* the 4th buffer would spend e4 > target: dropped, no version 4, finished */
    s_buffer(c, d, 3);
    assert_true(fm_proc_wait_file_contains(c->log, "privacy budget spent", FM_AT_WAIT_S));
    fm_at_expect_metric(c, "fedmq_privacy_budget_exhausted", 1);
    fm_stats_t st = fm_at_stats(c, 6);
    assert_true(st.privacy_exhausted && st.finished);
    assert_int_equal(st.version, 3);
    assert_int_equal(st.privacy_steps, 3);
    assert_true(st.privacy_epsilon <= st.privacy_target_epsilon);
    s_expect_close(st.privacy_epsilon, e3, 1e-12, "stats privacy_epsilon");
    /* later updates are refused as late, saying why */
    s_buffer(c, d, 3);
    assert_true(fm_proc_wait_file_contains(c->log, "the privacy budget is spent, the run is over",
                                           FM_AT_WAIT_S));
    assert_int_equal(fm_at_wait_model_hdr(c, 3, NULL, &hdr), 3); /* still serving version 3 */
    s_expect_close(hdr.epsilon, e3, 1e-12, "MODEL eps after the stop");
    fm_at_stop(c);
    /* fedmq checkpoints lists the epsilon each record spent */
    char cmd[1024], out[400], e3s[32];
    snprintf(out, sizeof out, "%s/ckpt-list.txt", c->dir);
    snprintf(cmd, sizeof cmd, "'%s/fedmq' checkpoints '%s' > '%s' 2>&1", FM_BIN_DIR, c->ckpt,
             out);
    assert_int_equal(system(cmd), 0);
    snprintf(e3s, sizeof e3s, " %.4g ", e3);
    assert_true(fm_proc_file_contains(out, "   epsilon  status"));
    if (!fm_proc_file_contains(out, e3s))
        fail_msg("fedmq checkpoints does not show epsilon%s for version 3", e3s);

    /* a restart on the same store: the spent budget is resumed, still exhausted */
    c->resume = 1;
    fm_at_start(c, 2, extra);
    assert_true(fm_proc_wait_file_contains(c->log, "privacy budget spent", FM_AT_WAIT_S));
    st = fm_at_stats_when(c, "version", 3);
    assert_true(st.privacy_exhausted && st.finished && st.privacy_steps == 3);
    s_expect_close(st.privacy_epsilon, e3, 1e-12, "resumed privacy_epsilon");
    fm_at_stop(c);

    /* a larger budget: one more version, at epsilon(4 steps), not epsilon(1 step) */
    const char *const extra2[] = {"privacy.mode=client", "privacy.noise_multiplier=4", more,
                                  NULL};
    fm_at_start(c, 2, extra2);
    assert_int_equal(fm_at_wait_model(c, 3, NULL), 3);
    s_buffer(c, d, 3);
    assert_int_equal(fm_at_wait_model_hdr(c, 4, NULL, &hdr), 4);
    s_expect_close(hdr.epsilon, e4, 1e-12, "MODEL 4 eps after the resume");
    fm_at_stop(c);
    c->resume = 0;
}

/* ---- 5. adaptive clipping --------------------------------------------------------------- */

/* The aggregator's /metrics sample `series` (NAN when absent). */
static double s_metric(fm_at_t *c, const char *series)
{
    double v = NAN;
    fm_http_resp_t r;
    if (fm_http_request(c->metrics_port, "GET", "/metrics", &r) == 0) {
        if (!r.body || !fm_http_sample(r.body, series, &v))
            v = NAN;
        fm_http_free(&r);
    }
    return v;
}

/* Send K = 3 updates of norm 10 in direction u (unit) from `base`; wait for version base + 1
 * and return what each update moved the sum by, (K dw . u) / 3: min(C, 10) for the step's C. */
static double s_adaptive_step(fm_at_t *c, const float *u, float *d, float *w0, float *w1,
                              uint64_t base)
{
    for (size_t j = 0; j < c->np; j++)
        d[j] = 10.0f * u[j];
    for (int i = 0; i < 3; i++)
        fm_at_send_ex(c, base, (uint32_t)(3 * base + (uint64_t)i) % 100, 10, d);
    assert_int_equal(fm_at_wait_model(c, base + 1, w1), (int64_t)base + 1);
    double dot = 0;
    for (size_t j = 0; j < c->np; j++)
        dot += 3.0 * ((double)w1[j] - w0[j]) * u[j];
    memcpy(w0, w1, c->np * sizeof *w0);
    return dot / 3.0;
}

/* sigma tiny (1e-6) and sigma_b tiny (1e-5), gamma 0.5, eta 0.2, C0 = 1; every update has
 * norm 10. Expected, computed here step by step: all three clipped while C < 10, so the
 * fraction is 0 and C grows by e^0.1 per step (C_t = e^(0.1 t)) until it passes 10 (t = 24,
 * 11.02), then all unclipped (fraction 1, x e^-0.1) and clipped again: C oscillates
 * between e^2.3 and e^2.4 around the median 10. Each step's min(C, 10) is read from the
 * MODEL (the screen really clipped at C), and C from stats.json and /metrics; a restart
 * resumes C (the start-up line says it) and the next step is clipped at it. */
static void test_adaptive_clip(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *u = fm_at_floats(c), *d = fm_at_floats(c), *w0 = fm_at_floats(c),
          *w1 = fm_at_floats(c);
    s_dir(u, n, 1);
    double un = fm_at_norm(u, n);
    for (size_t j = 0; j < n; j++)
        u[j] = (float)(u[j] / un);
    const char *const extra[] = {"privacy.mode=client",
                                 "privacy.clip_norm=1",
                                 "privacy.noise_multiplier=1e-6",
                                 "privacy.adaptive_clip=true",
                                 "privacy.clip_count_stddev=1e-5",
                                 "privacy.target_quantile=0.5",
                                 "privacy.clip_learning_rate=0.2",
                                 NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    assert_true(fm_proc_wait_file_contains(c->log, "adaptive clipping: C now 1,", FM_AT_WAIT_S));
    enum { T = 31 };   /* odd: C_T = e^2.3 < 10, so the step after the restart is clipped */
    double want = 1.0; /* C before step t + 1 */
    int passed = 0;
    for (uint64_t t = 0; t < T; t++) {
        double used = s_adaptive_step(c, u, d, w0, w1, t), moved = fmin(want, 10.0);
        if (!(fabs(used - moved) <= 1e-4 * moved))
            fail_msg("step %llu moved %.8g per update, expected min(C = %.8g, 10)",
                     (unsigned long long)t + 1, used, want);
        /* the rule, independently: b_i = 1 iff 10 <= C (the screen's bound C (1 - 2^-20)) */
        double frac = 10.0 <= want * (1 - 0x1p-20) ? 1.0 : 0.0;
        want *= exp(-0.2 * (frac - 0.5));
        if (t + 1 <= 24) /* geometric growth at exp(eta / 2) until it passes 10 */
            assert_true(fabs(want - exp(0.1 * (double)(t + 1))) < 1e-9 * want);
        else /* then around 10, within one step of it */
            assert_true(want > 10 * exp(-0.2) && want < 10 * exp(0.2));
        passed += want > 10;
        fm_stats_t st = fm_at_stats_when(c, "version", t + 1);
        if (!(fabs(st.privacy_clip_norm - want) <= 1e-4 * want))
            fail_msg("stats.json privacy_clip_norm %.8g after step %llu, expected %.8g",
                     st.privacy_clip_norm, (unsigned long long)t + 1, want);
    }
    assert_true(passed >= 3); /* it did pass 10 and oscillate */
    fm_stats_t st = fm_at_stats_when(c, "version", T);
    double clip = st.privacy_clip_norm;
    s_expect_close(s_metric(c, "fedmq_privacy_clip_norm"), clip, 1e-9, "/metrics clip norm");
    s_expect_close(st.privacy_epsilon, s_eps(1e-6, T), 1e-12, "epsilon charged at sigma");
    fm_at_stop(c);

    /* a restart resumes C: said in the start-up line, reported, and used by the next step */
    c->resume = 1;
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, T, w0), T);
    char line[96];
    snprintf(line, sizeof line, "adaptive clipping: C now %.6g,", clip);
    assert_true(fm_proc_wait_file_contains(c->log, line, FM_AT_WAIT_S));
    st = fm_at_stats_when(c, "version", T);
    s_expect_close(st.privacy_clip_norm, clip, 1e-12, "resumed privacy_clip_norm");
    assert_true(clip < 10);
    /* a reload (SIGHUP) keeps the screen at C, not at clip_norm */
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    assert_true(fm_proc_wait_file_contains(c->log, "SIGHUP: config reloaded", FM_AT_WAIT_S));
    double used = s_adaptive_step(c, u, d, w0, w1, T);
    s_expect_close(used, clip, 1e-4, "the clip of the first step after the restart");
    fm_at_stop(c);
    c->resume = 0;
}

/* The vector noise with adaptive clipping is z_delta C / K per coordinate, z_delta =
 * (z^-2 - (2 sigma_b)^-2)^-1/2 (z = 2, sigma_b = 2: 2.309, 15 % above z), while the accountant
 * charges z. The store comes from a run without adaptive clipping (no clip record): the
 * resume starts at clip_norm and says so. */
static void test_adaptive_noise(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *d = fm_at_floats(c);
    const double clip = 0.5, z = 2.0, sb = 2.0;
    const double zd = 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4 * sb * sb));
    const char *const fixed[] = {"privacy.mode=client", "privacy.clip_norm=0.5",
                                 "privacy.noise_multiplier=2", NULL};
    fm_at_start(c, 3, fixed);
    assert_int_equal(fm_at_wait_model(c, 0, NULL), 0);
    for (int i = 0; i < 3; i++) {
        s_dir(d, n, i);
        fm_at_send_ex(c, 0, (uint32_t)(10 + i), 10, d);
    }
    assert_int_equal(fm_at_wait_model(c, 1, w0), 1);
    fm_at_stop(c);

    c->resume = 1;
    const char *const extra[] = {"privacy.mode=client",         "privacy.clip_norm=0.5",
                                 "privacy.noise_multiplier=2",  "privacy.adaptive_clip=true",
                                 "privacy.clip_count_stddev=2", NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 1, w0), 1);
    assert_true(fm_proc_wait_file_contains(
        c->log, "has no adaptive clip: C starts at clip_norm 0.5", FM_AT_WAIT_S));
    fm_wire_model_t hdr;
    double mean, sd;
    s_noise_step(c, 1, 20, clip, w0, w1, &hdr, &mean, &sd);
    print_message("adaptive: noise sd %.4f, z_delta C = %.4f (z C = %.4f)\n", sd, zd * clip,
                  z * clip);
    /* 4 %: about 5 standard errors of the sd; z C is 13 % below z_delta C */
    if (!(fabs(mean) <= 5.0 * zd * clip / sqrt((double)n)))
        fail_msg("noise mean %g (n %zu)", mean, n);
    if (!(fabs(sd - zd * clip) <= 0.04 * zd * clip))
        fail_msg("noise sd %g, expected z_delta C = %g (z C = %g)", sd, zd * clip, z * clip);
    s_expect_close(hdr.epsilon, s_eps(z, 2), 1e-12, "MODEL eps (charged at z)");
    /* all three clipped: the noisy fraction is clamp(2 N(0, 1) / 3, 0, 1), so C moved by a
     * factor in [e^-0.1, e^0.1] */
    fm_stats_t st = fm_at_stats_when(c, "version", 2);
    assert_true(st.privacy_clip_norm >= clip * exp(-0.1) * (1 - 1e-12) &&
                st.privacy_clip_norm <= clip * exp(0.1) * (1 + 1e-12));
    fm_at_stop(c);
    c->resume = 0;
}

/* ---- 4. a full disk -------------------------------------------------------------------------
 */

/* ---- 5. sync rounds: the same sensitivity (no sample-count weights) ------------------------ */

static const char *const s_sync_sets[] = {
    "federation.mode=sync", "federation.aggregation_strategy=fedavg", "federation.min_clients=1",
    "aggregator.round_timeout_s=600", "broker.heartbeat_timeout_s=600"};

/* extra = s_sync_sets + more (NULL-terminated) */
static void s_start_sync(fm_at_t *c, const char *const *more)
{
    const char *extra[FM_AT_MAX_SETS + 1];
    int n = 0;
    for (size_t i = 0; i < sizeof s_sync_sets / sizeof s_sync_sets[0]; i++)
        extra[n++] = s_sync_sets[i];
    for (int i = 0; more[i]; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    fm_at_start(c, 1, extra);
}

static void test_sync_sensitivity(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *d[3];
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    static const float scale[3] = {1e3f, 1e6f, 5e4f};
    static const uint64_t claim[3] = {1, 1ull << 62, 7};
    for (int i = 0; i < 3; i++) {
        d[i] = fm_at_floats(c);
        s_dir(d[i], n, i);
        for (size_t j = 0; j < n; j++)
            d[i][j] *= scale[i];
        s_add_clipped(want, d[i], n, 1.0, 1.0);
    }
    const char *const more[] = {"federation.num_clients=3",
                                "trainer.clients=0-2",
                                "federation.clients_per_round=3",
                                "privacy.mode=client",
                                "privacy.clip_norm=1",
                                "privacy.noise_multiplier=1e-6",
                                NULL};
    s_start_sync(c, more);
    fm_wire_model_t hdr;
    fm_at_hello(c, 0, 3);
    assert_int_equal(fm_at_wait_round(c, 1, w0, &hdr), 0);
    assert_int_equal(hdr.cohort.count, 3);
    assert_true(hdr.sample_rate == 0); /* fixed cohorts: no "q" */
    for (int i = 0; i < 3; i++)
        fm_at_send_round(c, 0, hdr.round, (uint32_t)i, claim[i], d[i]);
    assert_int_equal(fm_at_wait_model_hdr(c, 1, w1, &hdr), 1);
    double err = 0;
    for (size_t j = 0; j < n; j++)
        err = fmax(err, fabs(3.0 * ((double)w1[j] - w0[j]) - want[j]));
    /* with sample-count weights the 2^62 claim would make dw ~ C u_1, K dw ~ 3 C u_1 */
    if (err > 2e-5)
        fail_msg("sync round 1: max |K dw - S| = %g", err);
    s_expect_close(hdr.epsilon, s_eps(1e-6, 1), 1e-12, "MODEL 1 eps");
    fm_at_stop(c);
    free(want);
}

/* ---- 6. Poisson-sampled sync rounds ------------------------------------------------------- */

static double s_eps_q(double q, double sigma, uint64_t steps)
{
    return fm_rdp_epsilon_of(q, sigma, steps, S_DELTA, FM_RDP_IMPROVED, NULL);
}

/* sampling = poisson, num_clients 4, clients_per_round 2: q = 1/2, the denominator K = 2.
 * A round closes as soon as every live client updated or declined (the deadline is 600 s);
 * a round nobody trained in is still a version (noise alone) and a step; epsilon is the
 * accountant's at q = 1/2; DECLINEs of closed rounds or of clients that reported are
 * ignored and counted. Without privacy, a round nobody trained in makes no version. */
static void test_poisson(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *w2 = fm_at_floats(c);
    float *d = fm_at_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    s_dir(d, n, 3);
    for (size_t j = 0; j < n; j++)
        d[j] *= 1e3f;
    const char *const more[] = {"federation.num_clients=4",
                                "trainer.clients=0-3",
                                "federation.clients_per_round=2",
                                "federation.sampling=poisson",
                                "privacy.mode=client",
                                "privacy.clip_norm=1",
                                "privacy.noise_multiplier=1e-6",
                                NULL};
    s_start_sync(c, more);
    assert_true(fm_proc_wait_file_contains(c->log, "sampling rate 0.5 (Poisson", FM_AT_WAIT_S));
    fm_wire_model_t hdr;
    fm_at_hello(c, 0, 4);
    assert_int_equal(fm_at_wait_round(c, 1, w0, &hdr), 0);
    assert_int_equal(hdr.cohort.count, 4); /* every live client is asked */
    assert_true(hdr.sample_rate == 0.5);
    uint64_t r1 = hdr.round;
    /* round 1: client 2 trains, 0 1 3 decline; client 2's DECLINE after its update is
     * ignored */
    static const uint32_t no[] = {0, 1, 3}, two[] = {2};
    fm_at_send_round(c, 0, r1, 2, 1ull << 60, d);
    fm_at_decline(c, 0, r1, two, 1);
    fm_at_decline(c, 0, r1, no, 3);
    assert_int_equal(fm_at_wait_model_hdr(c, 1, w1, &hdr), 1);
    s_add_clipped(want, d, n, 1.0, 1.0);
    double err = 0;
    for (size_t j = 0; j < n; j++)
        err = fmax(err, fabs(2.0 * ((double)w1[j] - w0[j]) - want[j])); /* K = 2 */
    if (err > 2e-5)
        fail_msg("Poisson round 1: max |K dw - S| = %g", err);
    s_expect_close(hdr.epsilon, s_eps_q(0.5, 1e-6, 1), 1e-12, "MODEL 1 eps");
    /* round 2: everyone declines: a version of noise alone, a second step */
    assert_int_equal(fm_at_wait_round(c, r1 + 1, NULL, &hdr), 0);
    static const uint32_t all[] = {0, 1, 2, 3};
    fm_at_decline(c, 1, r1 + 1, all, 4);
    fm_at_decline(c, 1, r1, all, 4); /* an old round: ignored */
    assert_int_equal(fm_at_wait_model_hdr(c, 2, w2, &hdr), 2);
    err = 0;
    for (size_t j = 0; j < n; j++)
        err = fmax(err, fabs((double)w2[j] - w1[j]));
    if (err > 1e-5)
        fail_msg("empty Poisson round: max |dw| = %g (noise only expected)", err);
    s_expect_close(hdr.epsilon, s_eps_q(0.5, 1e-6, 2), 1e-12, "MODEL 2 eps");
    fm_stats_t st = fm_at_stats_when(c, "version", 2);
    assert_true(st.privacy_steps == 2 && st.rounds_completed == 2);
    assert_int_equal(st.declines, 7);
    /* ignored: client 2 once, the old round's four (that DECLINE came after version 2) */
    for (double end = fm_proc_now() + FM_AT_WAIT_S; st.declines_ignored < 5;) {
        assert_true(fm_proc_now() < end);
        fm_proc_sleep(0.05);
        st = fm_at_stats_when(c, "version", 2);
    }
    assert_int_equal(st.declines_ignored, 5);
    assert_int_equal(st.declines, 7);
    fm_at_stop(c);

    /* sigma 1: epsilon of two empty rounds is the accountant's at q = 1/2, below q = 1's */
    const char *const more1[] = {"federation.num_clients=4",
                                 "trainer.clients=0-3",
                                 "federation.clients_per_round=2",
                                 "federation.sampling=poisson",
                                 "privacy.mode=client",
                                 "privacy.clip_norm=1",
                                 "privacy.noise_multiplier=1",
                                 NULL};
    s_start_sync(c, more1);
    fm_at_hello(c, 0, 4);
    for (uint64_t v = 1; v <= 2; v++) {
        assert_int_equal(fm_at_wait_round(c, v, NULL, &hdr), 0);
        fm_at_decline(c, v - 1, hdr.round, all, 4);
        assert_int_equal(fm_at_wait_model_hdr(c, v, NULL, &hdr), (int64_t)v);
    }
    s_expect_close(hdr.epsilon, s_eps_q(0.5, 1.0, 2), 1e-12, "sigma 1 eps");
    assert_true(hdr.epsilon < s_eps(1.0, 2) - 1.0); /* 5.38 against 7.08 */
    fm_at_stop(c);

    /* no privacy: a round nobody trained in makes no version and is retried */
    const char *const more2[] = {"federation.num_clients=4", "trainer.clients=0-3",
                                 "federation.clients_per_round=2", "federation.sampling=poisson",
                                 NULL};
    s_start_sync(c, more2);
    fm_at_hello(c, 0, 4);
    assert_int_equal(fm_at_wait_round(c, 1, NULL, &hdr), 0);
    fm_at_decline(c, 0, hdr.round, all, 4);
    assert_true(fm_proc_wait_file_contains(c->log, "no update (4 declined of 4 clients asked)",
                                           FM_AT_WAIT_S));
    st = fm_at_stats_when(c, "version", 0);
    for (double end = fm_proc_now() + FM_AT_WAIT_S; st.rounds_failed < 1;) {
        assert_true(fm_proc_now() < end);
        fm_proc_sleep(0.05);
        st = fm_at_stats_when(c, "version", 0);
    }
    assert_true(st.version == 0 && st.rounds_failed == 1 && st.round >= 2);
    fm_at_stop(c);
    free(want);
}

static int s_private_mounts;

static void test_full_disk(void **state)
{
    fm_at_t *c = *state;
    if (!s_private_mounts) {
        if (geteuid() != 0) {
            print_message("SKIPPED test_full_disk: needs root for a private tmpfs mount\n");
            skip();
        }
        fail_msg("running as root but without a private mount namespace (unshare)");
    }
    char mnt[280], filler[400];
    snprintf(mnt, sizeof mnt, "%.256s/tmpfs", c->dir);
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m") != 0)
        fail_msg("mount tmpfs on %s: %s", mnt, strerror(errno));
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    c->resume = 1; /* keep c->ckpt on the tmpfs */
    float *d = fm_at_floats(c);
    const double sigma = 4.0;
    const char *const extra[] = {"privacy.mode=client", "privacy.noise_multiplier=4",
                                 "aggregator.checkpoint_keep=1000", NULL};
    fm_at_start(c, 2, extra);
    assert_int_equal(fm_at_wait_model(c, 0, NULL), 0);
    s_buffer(c, d, 0);
    assert_int_equal(fm_at_wait_model(c, 1, NULL), 1);
    /* fill the disk: version 2's checkpoint fails, so version 2 is never published */
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char chunk[65536];
    for (size_t sz = sizeof chunk; sz >= 1; sz /= 2)
        while (write(fd, chunk, sz) == (ssize_t)sz)
            ;
    close(fd);
    s_buffer(c, d, 1);
    assert_true(
        fm_proc_wait_file_contains(c->log, "privacy: version 2 is not published", FM_AT_WAIT_S));
    fm_stats_t st = fm_at_stats_when(c, "version", 2);
    assert_true(st.finished && !st.privacy_exhausted && st.privacy_steps == 2);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    assert_int_equal(fm_at_wait_model_hdr(c, 1, NULL, &hdr), 1); /* still version 1 */
    s_expect_close(hdr.epsilon, s_eps(sigma, 1), 1e-12, "MODEL eps while version 2 waits");
    s_buffer(c, d, 1); /* no more versions: late */
    assert_true(
        fm_proc_wait_file_contains(c->log, "a checkpoint failed with privacy on", FM_AT_WAIT_S));
    fm_proc_stop(c->pid, SIGTERM, 30.0); /* its final checkpoint fails too: exit 1 */
    /* room again: resumes version 1's budget, charges the reserved version 2 as a step */
    assert_int_equal(unlink(filler), 0);
    fm_at_start(c, 2, extra);
    assert_int_equal(fm_at_wait_model(c, 1, NULL), 1);
    assert_true(fm_proc_wait_file_contains(
        c->log, "privacy: versions 2-2 were lost but published", FM_AT_WAIT_S));
    st = fm_at_stats_when(c, "version", 1);
    assert_int_equal(st.privacy_steps, 2);
    s_expect_close(st.privacy_epsilon, s_eps(sigma, 2), 1e-12, "epsilon after the charge");
    s_buffer(c, d, 1);
    assert_int_equal(fm_at_wait_model_hdr(c, 3, NULL, &hdr), 3);
    s_expect_close(hdr.epsilon, s_eps(sigma, 3), 1e-12, "MODEL 3 eps");
    fm_at_stop(c);
    c->resume = 0;
    assert_int_equal(umount(mnt), 0);
}

int main(void)
{
    /* a private mount namespace for the tmpfs of test_full_disk, before any thread exists;
     * the daemons started by the test inherit it, and its mounts vanish with it */
    if (geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
        s_private_mounts = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sensitivity, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_noise, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_budget, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_full_disk, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_sync_sensitivity, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_poisson, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_adaptive_clip, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_adaptive_noise, fm_at_setup, fm_at_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
