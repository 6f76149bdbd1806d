/* trainer_dp_test: a trainer pool's DP-SGD accounts and budget (trainer/trainer_dp.c) and the
 * [trainer] dp_* configuration keys (shared/svc/fm_cfg.c):
 *
 * - bad values are refused with one line naming the file, line, key and reason (ranges,
 *   non-finite numbers, a budget without DP-SGD or without noise);
 * - a client's epsilon after one training equals Opacus' published value (q 0.04, sigma
 *   1.5, 2,250 steps, delta 1e-5: 7.32911117143, opacus/tests/accountants_test.py), and after
 *   k trainings equals fm_rdp's composition of k trainings done here step by step
 *   (fm_rdp_compose k times); clients are accounted separately;
 * - the budget: a client trains exactly as many times as a linear scan of epsilon says fit
 *   under the target, its epsilon never exceeds it, the next training would; without a
 *   target every training is admitted; sigma = 0 is infinite epsilon;
 * - the randomness (fm_random_stream: ChaCha20 keyed by libsodium) differs per request and
 *   per stream, its bits are fair, and the normals over it are N(0, 1). Links
 *   trainer_lib. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_cfg.h"
#include "fm_rdp.h"
#include "trainer_dp.h"

/* fm_cfg_parse of `text` must fail with `rc` and exactly the message `want` (one line). */
static void s_refused(const char *text, int rc, const char *want)
{
    fm_config_t c;
    fm_cfg_defaults(&c);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_parse(&c, "test.conf", text, strlen(text), &e), rc);
    if (strcmp(e.msg, want) != 0) {
        print_error("got  '%s'\nwant '%s'\n", e.msg, want);
        fail();
    }
    assert_null(strchr(e.msg, '\n'));
}

static void test_config_errors(void **state)
{
    (void)state;
    s_refused("[trainer]\ndp_clip = 0\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_clip = 0: out of range [1e-06, 1000000]");
    s_refused("[trainer]\ndp_clip = inf\n", FM_EARG,
              "test.conf:2: [trainer] dp_clip = inf: not a finite number");
    s_refused("[trainer]\ndp_clip = nan\n", FM_EARG,
              "test.conf:2: [trainer] dp_clip = nan: not a finite number");
    s_refused("[trainer]\ndp_noise_multiplier = -0.5\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_noise_multiplier = -0.5: out of range [0, 100]");
    s_refused("[trainer]\ndp_sample_rate = 0\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_sample_rate = 0: out of range [1e-06, 1]");
    s_refused("[trainer]\ndp_sample_rate = 1.5\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_sample_rate = 1.5: out of range [1e-06, 1]");
    s_refused("[trainer]\ndp_delta = 0\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_delta = 0: out of range [1e-15, 0.5]");
    s_refused("[trainer]\ndp_delta = 1\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_delta = 1: out of range [1e-15, 0.5]");
    s_refused("[trainer]\ndp_target_epsilon = -1\n", FM_ERANGE,
              "test.conf:2: [trainer] dp_target_epsilon = -1: out of range [0, 1000000]");
    s_refused("[trainer]\ndp_sgd = maybe\n", FM_EARG,
              "test.conf:2: [trainer] dp_sgd = maybe: not a boolean "
              "(true|false|yes|no|on|off|1|0)");
    /* cross-key: a budget needs DP-SGD, and noise */
    s_refused("[trainer]\ndp_target_epsilon = 3\n", FM_EARG,
              "test.conf:2: [trainer] dp_target_epsilon = 3: is DP-SGD's budget: set [trainer] "
              "dp_sgd = true, or 0");
    s_refused("[trainer]\ndp_sgd = true\ndp_noise_multiplier = 0\ndp_target_epsilon = 3\n",
              FM_EARG,
              "test.conf:3: [trainer] dp_noise_multiplier = 0: gives no privacy (epsilon is "
              "infinite), so no [trainer] dp_target_epsilon can be met: set it > 0, or "
              "dp_target_epsilon = 0");
    /* and the good ones load */
    fm_config_t c;
    fm_cfg_defaults(&c);
    fm_errmsg_t e = {{0}};
    const char *ok = "[trainer]\ndp_sgd = true\ndp_clip = 0.5\ndp_noise_multiplier = 0\n"
                     "dp_sample_rate = 1\ndp_delta = 1e-6\n";
    assert_int_equal(fm_cfg_parse(&c, "ok.conf", ok, strlen(ok), &e), 0);
    assert_true(c.trainer.dp_sgd && c.trainer.dp_clip == 0.5 &&
                c.trainer.dp_noise_multiplier == 0 && c.trainer.dp_sample_rate == 1 &&
                c.trainer.dp_delta == 1e-6 && c.trainer.dp_target_epsilon == 0);
}

/* A pool of clients [first, first + count) with DP-SGD (q, sigma), local_epochs epochs. */
static trainer_dp_t *s_new(double q, double sigma, int epochs, double target, uint32_t first,
                           uint32_t count)
{
    fm_config_t c;
    fm_cfg_defaults(&c);
    c.trainer.dp_sgd = true;
    c.trainer.dp_sample_rate = q;
    c.trainer.dp_noise_multiplier = sigma;
    c.trainer.dp_target_epsilon = target;
    c.federation.local_epochs = epochs;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_check(&c, &e), 0);
    int err = 0;
    trainer_dp_t *dp = trainer_dp_new(&c, first, count, &err, &e);
    if (!dp)
        fail_msg("trainer_dp_new: %s", e.msg);
    return dp;
}

static void test_published(void **state)
{
    (void)state;
    /* q 0.04: 25 steps per epoch; 90 epochs = Opacus' 2,250 steps */
    trainer_dp_t *dp = s_new(0.04, 1.5, 90, 0, 100, 3);
    assert_int_equal(trainer_dp_steps_per_training(dp), 2250);
    const double opacus = 7.32911117143;
    double eps = trainer_dp_spend(dp, 101, 2250);
    assert_true(fabs(eps - opacus) < 1e-9 * opacus);
    uint64_t steps = 0;
    assert_true(trainer_dp_epsilon(dp, 101, &steps) == eps);
    assert_int_equal(steps, 2250);
    /* the other clients spent nothing; out of range: nothing, and nothing is recorded */
    assert_true(trainer_dp_epsilon(dp, 100, &steps) == 0.0 && steps == 0);
    assert_true(trainer_dp_epsilon(dp, 102, &steps) == 0.0 && steps == 0);
    trainer_dp_spend(dp, 103, 50);
    assert_true(trainer_dp_epsilon(dp, 103, &steps) == 0.0 && steps == 0);
    /* the config and randomness handed to fm_dpsgd */
    fm_dpsgd_config_t c;
    trainer_dp_config(dp, 42, &c);
    assert_true(c.clip == 1.0 && c.sigma == 1.5 && c.q == 0.04 && c.epochs == 90 &&
                c.seed == 42 && c.mode == FM_CLIP_FAST);
    trainer_dp_destroy(&dp);
    trainer_dp_destroy(&dp); /* idempotent */
}

static void test_composition(void **state)
{
    (void)state;
    const double q = 0.01, sigma = 0.8;
    trainer_dp_t *dp = s_new(q, sigma, 2, 0, 0, 2); /* 200 steps per training */
    fm_rdp_t acct;
    fm_rdp_init(&acct);
    for (int k = 1; k <= 5; k++) {
        double got = trainer_dp_spend(dp, 1, 200);
        assert_int_equal(fm_rdp_compose(&acct, q, sigma, 200), 0);
        double want = fm_rdp_epsilon(&acct, 1e-5, FM_RDP_IMPROVED, NULL);
        assert_true(fabs(got - want) <= 1e-12 * want);
        assert_int_equal(trainer_dp_admit(dp, 1), 1); /* no target: always */
    }
    /* an abandoned training's steps count as run */
    trainer_dp_spend(dp, 0, 37);
    uint64_t steps;
    double eps = trainer_dp_epsilon(dp, 0, &steps);
    assert_int_equal(steps, 37);
    assert_true(fabs(eps - fm_rdp_epsilon_of(q, sigma, 37, 1e-5, FM_RDP_IMPROVED, NULL)) <=
                1e-12 * eps);
    trainer_dp_destroy(&dp);
    /* sigma = 0: no privacy, infinite epsilon, trainings still admitted without a target */
    dp = s_new(q, 0.0, 1, 0, 0, 1);
    assert_true(isinf(trainer_dp_spend(dp, 0, 100)));
    assert_int_equal(trainer_dp_admit(dp, 0), 1);
    trainer_dp_destroy(&dp);
}

static void test_budget(void **state)
{
    (void)state;
    const double q = 0.1, sigma = 1.0;
    const uint64_t T = 10; /* one epoch of round(1 / 0.1) steps */
    /* a target between 3 and 4 trainings' epsilon */
    double e3 = fm_rdp_epsilon_of(q, sigma, 3 * T, 1e-5, FM_RDP_IMPROVED, NULL),
           e4 = fm_rdp_epsilon_of(q, sigma, 4 * T, 1e-5, FM_RDP_IMPROVED, NULL);
    double target = 0.5 * (e3 + e4);
    /* how many fit, by a linear scan written here */
    uint64_t fit = 0;
    while (fm_rdp_epsilon_of(q, sigma, (fit + 1) * T, 1e-5, FM_RDP_IMPROVED, NULL) <= target)
        fit++;
    assert_int_equal(fit, 3);
    trainer_dp_t *dp = s_new(q, sigma, 1, target, 5, 2);
    uint64_t trained = 0;
    while (trainer_dp_admit(dp, 6) && trained < 100) {
        double eps = trainer_dp_spend(dp, 6, T);
        assert_true(eps <= target);
        trained++;
    }
    assert_int_equal(trained, fit);
    assert_true(trainer_dp_epsilon(dp, 6, NULL) <= target);
    assert_true(trainer_dp_epsilon_of(dp, (trained + 1) * T) > target);
    assert_int_equal(trainer_dp_admit(dp, 6), 0); /* still refused */
    assert_int_equal(trainer_dp_admit(dp, 5), 1); /* the other client has its own budget */
    /* a target below even one training: refused at once */
    trainer_dp_destroy(&dp);
    dp = s_new(q, sigma, 1, 0.5 * fm_rdp_epsilon_of(q, sigma, T, 1e-5, FM_RDP_IMPROVED, NULL), 0,
               1);
    assert_int_equal(trainer_dp_admit(dp, 0), 0);
    trainer_dp_destroy(&dp);
}

static void test_randomness(void **state)
{
    (void)state;
    int err = 0;
    fm_random_stream_t *st1 = fm_random_stream_new(&err), *st2 = fm_random_stream_new(&err);
    assert_true(st1 && st2);
    fm_dpsgd_rand_t rand = trainer_dp_rand(st1), other = trainer_dp_rand(st2);
    const fm_dpsgd_rand_t *r = &rand;
    uint8_t a[32], b[32], c[32];
    r->bytes(r->ctx, a, sizeof a);
    r->bytes(r->ctx, b, sizeof b);
    other.bytes(other.ctx, c, sizeof c);
    /* consecutive requests and streams differ (2^-256 to fail by chance) */
    assert_true(memcmp(a, b, sizeof a) != 0 && memcmp(a, c, sizeof a) != 0);
    /* the bytes are uniform: each bit is set with frequency 1/2 (6 standard errors) */
    enum { NB = 1 << 20 };
    uint8_t *big = malloc(NB);
    assert_non_null(big);
    r->bytes(r->ctx, big, NB);
    uint64_t ones[8] = {0};
    for (int i = 0; i < NB; i++)
        for (int k = 0; k < 8; k++)
            ones[k] += (big[i] >> k) & 1;
    for (int k = 0; k < 8; k++)
        assert_true(fabs((double)ones[k] - NB / 2.0) < 6.0 * sqrt(NB / 4.0));
    free(big);
    enum { N = 200000 };
    double *z = malloc(sizeof(double) * N), s = 0, s2 = 0;
    assert_non_null(z);
    r->normals(r->ctx, z, N);
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(z[i]));
        s += z[i];
        s2 += z[i] * z[i];
    }
    double mean = s / N, var = s2 / N - mean * mean;
    /* 6 standard errors: false alarm about 2e-9 each */
    assert_true(fabs(mean) < 6.0 / sqrt(N));
    assert_true(fabs(var - 1.0) < 6.0 * sqrt(2.0 / N));
    free(z);
    fm_random_stream_destroy(&st1);
    fm_random_stream_destroy(&st2);
    fm_random_stream_destroy(&st2); /* idempotent */
}

static void test_new_errors(void **state)
{
    (void)state;
    fm_config_t c;
    fm_cfg_defaults(&c);
    c.trainer.dp_clip = 0; /* past fm_cfg_check: refused again */
    int err = 0;
    fm_errmsg_t e = {{0}};
    assert_null(trainer_dp_new(&c, 0, 1, &err, &e));
    assert_int_equal(err, FM_EARG);
    assert_string_equal(e.msg, "[trainer] dp_*: DP-SGD clip = 0: must be finite and > 0");
    fm_cfg_defaults(&c);
    c.trainer.dp_delta = 1.0;
    assert_null(trainer_dp_new(&c, 0, 1, &err, &e));
    assert_int_equal(err, FM_EARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_published),
        cmocka_unit_test(test_composition),   cmocka_unit_test(test_budget),
        cmocka_unit_test(test_randomness),    cmocka_unit_test(test_new_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
