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
 *      bound with reject (the next attacker is counted as "norm");
 *   6. the sign vote (sign_threshold 0.6) behind the mean and behind the median: 4 honest
 *      updates and one that alone pushes the parameters the honest ones leave near zero
 *      (a backdoor's shape); the version is the rule's delta_bar with the step reversed where
 *      fewer than 3 of the 5 agree in sign, counted here, and /metrics reports the overruled
 *      fraction; then 3 updates in the open buffer at a clean stop become the last version
 *      with the steps without agreement dropped (a partial buffer does not reverse).
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

#include "../support/fm_aggtest.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

/* max_j |w1_j - (w0_j + want_j)| */
static double s_err(const float *w0, const float *w1, const double *want, size_t n)
{
    double m = 0;
    for (size_t j = 0; j < n; j++)
        m = fmax(m, fabs((double)w1[j] - ((double)w0[j] + want[j])));
    return m;
}

/* ---- 1. clip ------------------------------------------------------------------------------- */

static void test_sign_flip_clipped(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *d = fm_at_floats(c),
          *att = fm_at_floats(c);
    double *want = calloc(n, sizeof *want), *plain = calloc(n, sizeof *plain);
    assert_non_null(want);
    assert_non_null(plain);
    fm_at_honest(d, n, 0);
    double bound = 2.0 * fm_at_norm(d, n);
    for (size_t j = 0; j < n; j++)
        att[j] = -10.0f * d[j];
    double f = bound / fm_at_norm(att, n); /* 0.2 */
    char set[64];
    snprintf(set, sizeof set, "aggregator.norm_bound=%.17g", bound);
    const char *const extra[] = {set, "aggregator.norm_action=clip", NULL};
    fm_at_start(c, 4, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    for (int i = 0; i < 3; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 0, d);
        for (size_t j = 0; j < n; j++) {
            want[j] += d[j] / 4.0;
            plain[j] += d[j] / 4.0;
        }
    }
    fm_at_send(c, 0, att);
    for (size_t j = 0; j < n; j++) {
        want[j] += f * att[j] / 4.0;
        plain[j] += att[j] / 4.0;
    }
    assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
    double err = s_err(w0, w1, want, n), err_plain = s_err(w0, w1, plain, n);
    print_message("clipped mean: max error %.3g (against the unclipped mean: %.3g)\n", err,
                  err_plain);
    assert_true(err < 1e-6);
    assert_true(err_plain > 1e-3); /* the clip is what made the difference */
    fm_stats_t st = fm_at_stats(c, 4);
    assert_int_equal(st.updates_clipped, 1);
    assert_int_equal(fm_stats_rejected(&st, "norm"), 0);
    assert_int_equal(st.buffers_dropped, 0);
    fm_at_expect_metric(c, "fedmq_updates_clipped_total", 1);
    assert_true(fm_proc_file_contains(c->log, "clipped update: UPDATE from agg-test"));
    assert_true(fm_proc_file_contains(c->log, "aggregation mean (streaming"));
    free(want);
    free(plain);
}

/* ---- 2. reject, relative ----------------------------------------------------------------- */

static void test_sign_flip_rejected_relative(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *w2 = fm_at_floats(c),
          *d = fm_at_floats(c);
    float *att = fm_at_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    const char *const extra[] = {"aggregator.norm_bound=2", "aggregator.norm_bound_mode=relative",
                                 "aggregator.norm_window=3", "aggregator.norm_action=reject",
                                 NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    /* warm-up: the window fills with three honest norms; an unbounded version 1 */
    for (int i = 0; i < 3; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 0, d);
    }
    assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
    /* bound = 2 x median: honest updates pass, the sign-flipped x10 one is rejected */
    for (int i = 3; i < 6; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 1, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
        if (i == 3) {
            for (size_t j = 0; j < n; j++)
                att[j] = -10.0f * d[j];
            fm_at_send(c, 1, att);
        }
    }
    assert_int_equal(fm_at_wait_model(c, 2, w2), 2);
    double err = s_err(w1, w2, want, n);
    print_message("honest mean after the rejection: max error %.3g\n", err);
    assert_true(err < 1e-6);
    fm_stats_t st = fm_at_stats(c, 6);
    assert_int_equal(fm_stats_rejected(&st, "norm"), 1);
    assert_int_equal(st.updates_clipped, 0);
    assert_int_equal(st.updates_applied, 6);
    fm_at_expect_metric(c, "fedmq_updates_rejected_total{reason=\"norm\"}", 1);
    assert_true(fm_proc_file_contains(c->log, "rejected frame (norm): UPDATE from agg-test"));
    free(want);
}

/* ---- 3. a 3e38 update among honest ones ---------------------------------------------------- */

static void test_overflow_rejected_alone(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *d = fm_at_floats(c),
          *big = fm_at_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    fm_at_start(c, 4, NULL); /* the defaults: mean, no norm bound */
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    for (size_t j = 0; j < n; j++) /* finite, and would overflow the float accumulator */
        big[j] = j % 2 ? 3e38f : -3e38f;
    for (int i = 0; i < 4; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 0, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 4.0;
        if (i == 1)
            fm_at_send(c, 0, big); /* in the middle of the buffer */
    }
    assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
    double err = s_err(w0, w1, want, n);
    print_message("honest mean with a 3e38 update rejected: max error %.3g\n", err);
    assert_true(err < 1e-6);
    fm_stats_t st = fm_at_stats(c, 4);
    assert_int_equal(fm_stats_rejected(&st, "overflow"), 1);
    assert_int_equal(fm_stats_rejected(&st, "nonfinite"), 0);
    assert_int_equal(st.buffers_dropped, 0);
    assert_int_equal(st.version, 1);
    fm_at_expect_metric(c, "fedmq_updates_rejected_total{reason=\"overflow\"}", 1);
    fm_at_expect_metric(c, "fedmq_buffers_dropped_total", 0);
    free(want);
}

/* ---- 5. the screen reloaded ------------------------------------------------------------- */

/* Write the config file atomically: [aggregator] with the given lines. */
static void s_write_conf(fm_at_t *c, const char *lines)
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
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *w2 = fm_at_floats(c),
          *d = fm_at_floats(c);
    float *att = fm_at_floats(c);
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    snprintf(c->conf, sizeof c->conf, "%s/fedmq.conf", c->dir);
    s_write_conf(c, "norm_bound = 0\n");
    fm_at_start(c, 3, NULL);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    fm_at_honest(d, n, 0);
    for (size_t j = 0; j < n; j++)
        att[j] = -10.0f * d[j];
    for (int i = 0; i < 2; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 0, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
    }
    fm_at_send(c, 0, att);
    for (size_t j = 0; j < n; j++)
        want[j] += att[j] / 3.0;
    assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
    assert_true(s_err(w0, w1, want, n) < 1e-6); /* the attacker is in the plain mean */

    char lines[160];
    snprintf(lines, sizeof lines, "norm_bound = %.17g\nnorm_action = reject\n",
             3.0 * fm_at_norm(d, n));
    s_write_conf(c, lines);
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    double end = fm_proc_now() + FM_AT_WAIT_S;
    while (!fm_proc_file_contains(c->log, "SIGHUP: config reloaded; changed: [aggregator] "
                                          "norm_bound: 0 -> ") &&
           fm_proc_now() < end)
        fm_proc_sleep(0.02);
    assert_true(fm_proc_file_contains(c->log, "[aggregator] norm_action: clip -> reject"));
    memset(want, 0, n * sizeof *want);
    for (int i = 2; i < 5; i++) {
        fm_at_honest(d, n, i);
        fm_at_send(c, 1, d);
        for (size_t j = 0; j < n; j++)
            want[j] += d[j] / 3.0;
        if (i == 2)
            fm_at_send(c, 1, att);
    }
    assert_int_equal(fm_at_wait_model(c, 2, w2), 2);
    assert_true(s_err(w1, w2, want, n) < 1e-6);
    fm_stats_t st = fm_at_stats(c, 6);
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
        sorted[i] = norm[i] = fm_at_norm(u[i], n);
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
    fm_at_t *c = *state;
    size_t n = c->np;
    static const char *const rules[] = {"median", "trimmed_mean", "norm_bounded_mean"};
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *u[5];
    for (int i = 0; i < 5; i++)
        u[i] = fm_at_floats(c);
    for (int i = 0; i < 4; i++)
        fm_at_honest(u[i], n, i);
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
        fm_at_start(c, 5, extra);
        assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
        for (int i = 0; i < 5; i++)
            fm_at_send(c, 0, u[(i + 2) % 5]); /* the attacker third */
        assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
        s_rule(rules[r], u, n, want);
        double err = s_err(w0, w1, want, n), dist = s_err(w0, w1, hmean, n);
        print_message("%s: max error %.3g, distance to the honest mean %.3g (plain mean: %.3g)\n",
                      rules[r], err, dist, plain);
        assert_true(err < 1e-6);
        assert_true(dist < 0.25 * plain);
        char line[160];
        snprintf(line, sizeof line, "aggregation %s over 5 stored updates", rules[r]);
        assert_true(fm_proc_file_contains(c->log, line));
        assert_int_equal(fm_at_stats(c, 5).updates_applied, 5);
        fm_at_stop(c);
    }
    free(want);
    free(hmean);
}

/* ---- 6. the sign vote -----------------------------------------------------------------------
 */

static void test_sign_vote(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *u[5];
    for (int i = 0; i < 5; i++)
        u[i] = fm_at_floats(c);
    /* honest: fm_at_honest, but the parameters j % 5 == 0 get a tiny value of alternating
     * sign (the honest data leave them alone); the fifth pushes just those, hard */
    for (int i = 0; i < 4; i++) {
        fm_at_honest(u[i], n, i);
        for (size_t j = 0; j < n; j += 5)
            u[i][j] = ((i + (int)(j / 5)) % 2 ? 1e-5f : -1e-5f);
    }
    for (size_t j = 0; j < n; j++)
        u[4][j] = j % 5 == 0 ? 0.05f : 0.0f;
    static const char *const rules[] = {"mean", "median"};
    double *want = calloc(n, sizeof *want);
    assert_non_null(want);
    for (size_t r = 0; r < 2; r++) {
        char set[64];
        snprintf(set, sizeof set, "aggregator.aggregation=%s", rules[r]);
        const char *const extra[] = {set, "aggregator.sign_threshold=0.6", NULL};
        fm_at_start(c, 5, extra);
        assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
        for (int i = 0; i < 5; i++)
            fm_at_send(c, 0, u[(i + 2) % 5]);
        assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
        if (r == 0) /* the plain mean */
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (int i = 0; i < 5; i++)
                    s += u[i][j];
                want[j] = s / 5;
            }
        else
            s_rule("median", u, n, want);
        size_t rev = 0, rev_pushed = 0; /* reversed: |pos - neg| < ceil(0.6 x 5) = 3 */
        for (size_t j = 0; j < n; j++) {
            int pos = 0, neg = 0;
            for (int i = 0; i < 5; i++) {
                pos += u[i][j] > 0;
                neg += u[i][j] < 0;
            }
            if (abs(pos - neg) < 3) {
                want[j] = -want[j];
                rev++;
                rev_pushed += j % 5 == 0;
            }
        }
        double err = s_err(w0, w1, want, n);
        print_message("sign vote behind %s: %zu of %zu steps reversed (%zu of them pushed by "
                      "the fifth update), max error %.3g\n",
                      rules[r], rev, n, rev_pushed, err);
        assert_true(err < 1e-6);
        assert_true(rev_pushed > 0 && rev_pushed == (n + 4) / 5); /* every pushed one */
        assert_true(fm_proc_file_contains(c->log, "robust learning rate"));
        fm_at_expect_metric(c, "fedmq_sign_overruled_ratio", (double)rev / (double)n);
        assert_int_equal(fm_at_stats(c, 5).updates_applied, 5);
        if (r == 1) {
            fm_at_stop(c);
            continue;
        }
        /* a partial buffer: 3 of 5 folded when the aggregator stops become its last version,
         * the steps without agreement (|S| < ceil(0.6 x 3) = 2) dropped, not reversed */
        static const int part[3] = {0, 1, 4};
        float *w2 = fm_at_floats(c);
        for (int i = 0; i < 3; i++)
            fm_at_send(c, 1, u[part[i]]);
        fm_at_expect_metric(c, "fedmq_updates_received_total", 8);
        fm_at_stop(c);
        assert_int_equal(fm_at_wait_model(c, 2, w2), 2);
        size_t dropped = 0, dropped_pushed = 0;
        for (size_t j = 0; j < n; j++) {
            double sum = 0;
            int pos = 0, neg = 0;
            for (int i = 0; i < 3; i++) {
                sum += u[part[i]][j];
                pos += u[part[i]][j] > 0;
                neg += u[part[i]][j] < 0;
            }
            want[j] = abs(pos - neg) >= 2 ? sum / 3 : 0.0;
            dropped += abs(pos - neg) < 2;
            dropped_pushed += abs(pos - neg) < 2 && j % 5 == 0;
        }
        err = s_err(w1, w2, want, n);
        print_message("partial buffer of 3 at the stop: %zu steps dropped (%zu pushed by the "
                      "fifth update), max error %.3g\n",
                      dropped, dropped_pushed, err);
        assert_true(err < 1e-6);
        assert_true(dropped_pushed == (n + 4) / 5 && dropped > dropped_pushed);
        assert_true(fm_proc_file_contains(c->log, "folding the open buffer (3 of 5 updates)"));
    }
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sign_flip_clipped, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_sign_flip_rejected_relative, fm_at_setup,
                                        fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_overflow_rejected_alone, fm_at_setup,
                                        fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_robust_rules, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_screen_reload, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_sign_vote, fm_at_setup, fm_at_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
