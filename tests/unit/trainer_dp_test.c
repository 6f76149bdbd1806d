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
 *   per stream, its bits are fair, and the normals over it are N(0, 1);
 * - the accounts file ([trainer] dp_accounts_file): missing = all zero; every spend writes
 *   it, decoded here field by field from the layout trainer_dp.h documents (checksum
 *   recomputed here); a new pool continues from it; a file of another sigma, q or client
 *   range is refused (FM_EARG, the operator told what to do); truncated, torn, corrupt,
 *   foreign or future files are refused (never zero); clients whose budget the file shows
 *   spent are reported so (trainer_dp_spent); a save that fails is reported to the caller
 *   (the worker then does not send) and the steps stay counted. Links trainer_lib. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <unistd.h>

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
    /* DP-SGD's steps are its epochs of Poisson-sampled steps: no local_steps cap */
    s_refused("[federation]\nlocal_steps = 9\n[trainer]\ndp_sgd = true\n", FM_EARG,
              "test.conf:2: [federation] local_steps = 9: DP-SGD runs local_epochs epochs of "
              "Poisson-sampled steps, which its budget accounts: set [federation] local_steps "
              "= 0 with it");
    s_refused("[federation]\nlocal_fraction = 0.4\n[trainer]\ndp_sgd = true\n", FM_EARG,
              "test.conf:2: [federation] local_fraction = 0.4: DP-SGD runs local_epochs epochs "
              "of Poisson-sampled steps, which its budget accounts: set [federation] "
              "local_fraction = 1 with it");
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

/* trainer_dp_spend that must succeed; its epsilon. */
static double s_spend(trainer_dp_t *dp, uint32_t client, uint64_t steps)
{
    double eps = -1;
    assert_int_equal(trainer_dp_spend(dp, client, steps, &eps), 0);
    return eps;
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
    double eps = s_spend(dp, 101, 2250);
    assert_true(fabs(eps - opacus) < 1e-9 * opacus);
    uint64_t steps = 0;
    assert_true(trainer_dp_epsilon(dp, 101, &steps) == eps);
    assert_int_equal(steps, 2250);
    /* the other clients spent nothing; out of range: nothing, and nothing is recorded */
    assert_true(trainer_dp_epsilon(dp, 100, &steps) == 0.0 && steps == 0);
    assert_true(trainer_dp_epsilon(dp, 102, &steps) == 0.0 && steps == 0);
    s_spend(dp, 103, 50);
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
        double got = s_spend(dp, 1, 200);
        assert_int_equal(fm_rdp_compose(&acct, q, sigma, 200), 0);
        double want = fm_rdp_epsilon(&acct, 1e-5, FM_RDP_IMPROVED, NULL);
        assert_true(fabs(got - want) <= 1e-12 * want);
        assert_int_equal(trainer_dp_admit(dp, 1), 1); /* no target: always */
    }
    /* an abandoned training's steps count as run */
    s_spend(dp, 0, 37);
    uint64_t steps;
    double eps = trainer_dp_epsilon(dp, 0, &steps);
    assert_int_equal(steps, 37);
    assert_true(fabs(eps - fm_rdp_epsilon_of(q, sigma, 37, 1e-5, FM_RDP_IMPROVED, NULL)) <=
                1e-12 * eps);
    trainer_dp_destroy(&dp);
    /* sigma = 0: no privacy, infinite epsilon, trainings still admitted without a target */
    dp = s_new(q, 0.0, 1, 0, 0, 1);
    assert_true(isinf(s_spend(dp, 0, 100)));
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
        double eps = s_spend(dp, 6, T);
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

/* ---- the accounts file ---------------------------------------------------------------- */

static char s_dir[64];

/* s_new's pool with dp_accounts_file = path; NULL (err, e set) when refused. */
static trainer_dp_t *s_new_file(double q, double sigma, double target, uint32_t first,
                                uint32_t count, const char *path, int *err, fm_errmsg_t *e)
{
    fm_config_t c;
    fm_cfg_defaults(&c);
    c.trainer.dp_sgd = true;
    c.trainer.dp_sample_rate = q;
    c.trainer.dp_noise_multiplier = sigma;
    c.trainer.dp_target_epsilon = target;
    c.federation.local_epochs = 1;
    snprintf(c.trainer.dp_accounts_file, sizeof c.trainer.dp_accounts_file, "%s", path);
    assert_int_equal(fm_cfg_check(&c, e), 0);
    *err = 0;
    return trainer_dp_new(&c, first, count, err, e);
}

static uint64_t s_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The whole file into buf (cap bytes); its length. */
static size_t s_slurp(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void s_write(const char *path, const uint8_t *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* trainer_dp_new on `path` must fail with `rc` and a message containing `needle`. */
static void s_refused_file(double q, double sigma, uint32_t first, uint32_t count,
                           const char *path, int rc, const char *needle)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    trainer_dp_t *dp = s_new_file(q, sigma, 0, first, count, path, &err, &e);
    if (dp || err != rc || !strstr(e.msg, needle) || strchr(e.msg, '\n'))
        fail_msg("want %d '%s', got %p %d '%s'", rc, needle, (void *)dp, err, e.msg);
    /* the operator is told what to do */
    assert_non_null(strstr(e.msg, "remove"));
}

static void test_accounts_file(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/trainer_dp_test.XXXXXX");
    assert_non_null(mkdtemp(s_dir));
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/accounts", s_dir);
    snprintf(bad, sizeof bad, "%s/bad", s_dir);
    const double q = 0.1, sigma = 1.0;
    int err = 0;
    fm_errmsg_t e = {{0}};
    /* missing: all zero, and no file until the first spend */
    trainer_dp_t *dp = s_new_file(q, sigma, 0, 100, 3, path, &err, &e);
    if (!dp)
        fail_msg("%s", e.msg);
    uint64_t steps = 7;
    assert_true(trainer_dp_epsilon(dp, 101, &steps) == 0.0 && steps == 0);
    assert_int_equal(access(path, F_OK), -1);
    s_spend(dp, 101, 50);
    s_spend(dp, 102, 20);
    double eps101 = s_spend(dp, 101, 10);
    trainer_dp_destroy(&dp);
    /* the file, decoded here from the documented layout */
    uint8_t buf[512];
    size_t n = s_slurp(path, buf, sizeof buf);
    assert_int_equal(n, 72 + 8 * 3);
    assert_memory_equal(buf, "FMDPACC1", 8);
    assert_int_equal(s_le(buf + 8, 4), 1);
    assert_int_equal(s_le(buf + 12, 4), 100);
    assert_int_equal(s_le(buf + 16, 4), 3);
    assert_int_equal(s_le(buf + 20, 4), 0);
    double fsig, fq;
    uint64_t bits = s_le(buf + 24, 8);
    memcpy(&fsig, &bits, 8);
    bits = s_le(buf + 32, 8);
    memcpy(&fq, &bits, 8);
    assert_true(fsig == sigma && fq == q);
    assert_int_equal(s_le(buf + 40, 8), 0);
    assert_int_equal(s_le(buf + 48, 8), 60);
    assert_int_equal(s_le(buf + 56, 8), 20);
    uint8_t sum[32];
    assert_int_equal(sodium_init() >= 0, 1);
    crypto_generichash(sum, 32, buf, n - 32, NULL, 0);
    assert_memory_equal(sum, buf + n - 32, 32);
    /* a new pool continues from it: the same steps and epsilon, and spends on top */
    dp = s_new_file(q, sigma, 0, 100, 3, path, &err, &e);
    if (!dp)
        fail_msg("%s", e.msg);
    assert_true(trainer_dp_epsilon(dp, 101, &steps) == eps101 && steps == 60);
    assert_true(trainer_dp_epsilon(dp, 102, &steps) > 0 && steps == 20);
    assert_true(trainer_dp_epsilon(dp, 100, &steps) == 0 && steps == 0);
    double eps = s_spend(dp, 101, 10);
    assert_true(eps == fm_rdp_epsilon_of(q, sigma, 70, 1e-5, FM_RDP_IMPROVED, NULL));
    trainer_dp_destroy(&dp);
    n = s_slurp(path, buf, sizeof buf);
    assert_int_equal(s_le(buf + 48, 8), 70);

    /* another mechanism or range: refused (exit 2), never reinterpreted */
    s_refused_file(q, 1.1, 100, 3, path, FM_EARG,
                   "under sigma 1, q 0.1 for clients 100-102; the config says sigma 1.1, q 0.1, "
                   "clients 100-102: they cannot be reinterpreted");
    s_refused_file(0.05, sigma, 100, 3, path, FM_EARG, "cannot be reinterpreted");
    s_refused_file(q, nextafter(1.0, 2.0), 100, 3, path, FM_EARG,
                   "config says sigma 1.0000000000000002");
    s_refused_file(q, sigma, 101, 3, path, FM_EARG, "for clients 100-102; the config says");
    s_refused_file(q, sigma, 100, 4, path, FM_EARG, "clients 100-103");
    s_refused_file(q, sigma, 100, 2, path, FM_EARG, "clients 100-101");
    /* and the file is left as it was */
    uint8_t again[512];
    assert_int_equal(s_slurp(path, again, sizeof again), n);
    assert_memory_equal(again, buf, n);

    /* damaged files: refused, never taken as zero */
    s_write(bad, buf, n - 1); /* truncated by one byte */
    s_refused_file(q, sigma, 100, 3, bad, FM_ETRUNC, "truncated or torn (95 bytes, 96");
    s_write(bad, buf, 30); /* torn inside the header */
    s_refused_file(q, sigma, 100, 3, bad, FM_ETRUNC, "truncated or torn (30 bytes");
    s_write(bad, buf, 0); /* empty */
    s_refused_file(q, sigma, 100, 3, bad, FM_ETRUNC, "not a DP-SGD accounts file (0 bytes");
    uint8_t tmp[512];
    memcpy(tmp, buf, n);
    tmp[48] ^= 1; /* one bit of client 101's count */
    s_write(bad, tmp, n);
    s_refused_file(q, sigma, 100, 3, bad, FM_EFORMAT, "corrupt (checksum mismatch)");
    memcpy(tmp, buf, n);
    tmp[n - 1] ^= 0x80; /* the checksum itself */
    s_write(bad, tmp, n);
    s_refused_file(q, sigma, 100, 3, bad, FM_EFORMAT, "corrupt (checksum mismatch)");
    memcpy(tmp, buf, n);
    tmp[0] = 'X';
    s_write(bad, tmp, n);
    s_refused_file(q, sigma, 100, 3, bad, FM_EMAGIC, "bad magic");
    memcpy(tmp, buf, n);
    tmp[8] = 2;
    s_write(bad, tmp, n);
    s_refused_file(q, sigma, 100, 3, bad, FM_EVERSION, "version 2, this trainer reads 1");
    s_write(bad, buf, n); /* control: the same bytes whole load */
    dp = s_new_file(q, sigma, 0, 100, 3, bad, &err, &e);
    assert_non_null(dp);
    trainer_dp_destroy(&dp);

    /* a budget of 3 trainings (10 steps each): the file's 70-step client 101 is over it,
     * 102 (20 steps) has one training left, 100 three */
    double e3 = fm_rdp_epsilon_of(q, sigma, 30, 1e-5, FM_RDP_IMPROVED, NULL),
           e4 = fm_rdp_epsilon_of(q, sigma, 40, 1e-5, FM_RDP_IMPROVED, NULL);
    dp = s_new_file(q, sigma, 0.5 * (e3 + e4), 100, 3, path, &err, &e);
    assert_non_null(dp);
    assert_int_equal(trainer_dp_spent(dp, 101), 1);
    assert_int_equal(trainer_dp_admit(dp, 101), 0);
    assert_int_equal(trainer_dp_spent(dp, 102), 0);
    assert_int_equal(trainer_dp_spent(dp, 100), 0);
    s_spend(dp, 102, 10);
    assert_int_equal(trainer_dp_spent(dp, 102), 1);
    trainer_dp_destroy(&dp);
    /* ... and the next pool knows it */
    dp = s_new_file(q, sigma, 0.5 * (e3 + e4), 100, 3, path, &err, &e);
    assert_non_null(dp);
    assert_int_equal(trainer_dp_spent(dp, 102), 1);
    trainer_dp_destroy(&dp);

    /* a save that fails (no such folder): reported, the steps stay counted in memory */
    char nodir[128];
    snprintf(nodir, sizeof nodir, "%s/nodir/accounts", s_dir);
    dp = s_new_file(q, sigma, 0, 100, 3, nodir, &err, &e);
    assert_non_null(dp);
    assert_true(trainer_dp_spend(dp, 100, 10, NULL) < 0);
    assert_true(trainer_dp_spend(dp, 100, 10, NULL) < 0); /* the second ERROR suppressed */
    assert_true(trainer_dp_epsilon(dp, 100, &steps) > 0 && steps == 20);
    trainer_dp_destroy(&dp);
    assert_int_equal(access(nodir, F_OK), -1);

    /* no file configured: nothing written anywhere, spends succeed */
    dp = s_new_file(q, sigma, 0, 0, 1, "", &err, &e);
    assert_non_null(dp);
    assert_int_equal(trainer_dp_spend(dp, 0, 10, NULL), 0);
    trainer_dp_destroy(&dp);

    unlink(bad);
    unlink(path);
    char spare[160];
    snprintf(spare, sizeof spare, "%s.spare", path);
    unlink(spare);
    snprintf(spare, sizeof spare, "%s/bad.spare", s_dir);
    unlink(spare);
    assert_int_equal(rmdir(s_dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_published),
        cmocka_unit_test(test_composition),   cmocka_unit_test(test_budget),
        cmocka_unit_test(test_randomness),    cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_accounts_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
