/* trainer_attack_test: the poisoning attacks of the benchmark attacker (trainer/trainer_attack.c)
 * against independent computations: the sign flip is exactly -scale x the honest delta; the
 * noise replaces the delta by a vector of L2 norm 100 (norm recomputed here in double), looks
 * Gaussian, and is the same for the same (seed, client, run) and different otherwise; the
 * trigger covers exactly the 4 x 4 bottom-right pixels with the normalised white value
 * (computed here from the Fashion-MNIST constants); poisoning changes exactly
 * round(fraction x n) of the client's samples (patch + target label) and nothing else; the
 * checks of the fields. Links trainer_lib (by file name). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_rng.h"
#include "trainer_attack.h"

static float *s_random(size_t n, uint64_t seed)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    fm_rng_t r;
    fm_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(fm_rng_uniform(&r) * 2 - 1) * 0.01f;
    return v;
}

static double s_norm(const float *v, size_t n)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)v[i] * (double)v[i];
    return sqrt(ss);
}

static void test_signflip_and_boost(void **state)
{
    (void)state;
    const size_t n = 5000;
    float *orig = s_random(n, 7), *d = malloc(n * sizeof *d);
    assert_non_null(d);
    trainer_attack_t a;
    trainer_attack_defaults(&a);
    assert_true(a.scale == 10.0 && a.noise_norm == 100.0 && a.poison_fraction == 0.5);

    memcpy(d, orig, n * sizeof *d);
    trainer_attack_apply(&a, d, n, 3, 0); /* none: untouched */
    assert_memory_equal(d, orig, n * sizeof *d);

    a.kind = TRAINER_ATTACK_SIGNFLIP;
    trainer_attack_apply(&a, d, n, 3, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(d[i] == (float)(-10.0 * (double)orig[i]));
    assert_true(fabs(s_norm(d, n) - 10.0 * s_norm(orig, n)) < 1e-6 * s_norm(d, n));

    a.scale = 2.5;
    memcpy(d, orig, n * sizeof *d);
    trainer_attack_apply(&a, d, n, 3, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(d[i] == (float)(-2.5 * (double)orig[i]));

    a.kind = TRAINER_ATTACK_BACKDOOR; /* boost 1: the (poisoned-data) delta as trained */
    memcpy(d, orig, n * sizeof *d);
    trainer_attack_apply(&a, d, n, 3, 0);
    assert_memory_equal(d, orig, n * sizeof *d);
    a.boost = 4;
    trainer_attack_apply(&a, d, n, 3, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(d[i] == 4.0f * orig[i]);
    free(orig);
    free(d);
}

static void test_noise(void **state)
{
    (void)state;
    const size_t n = 1199882; /* the cnn's parameters */
    float *a1 = s_random(n, 1), *a2 = s_random(n, 2);
    trainer_attack_t a;
    trainer_attack_defaults(&a);
    a.kind = TRAINER_ATTACK_NOISE;
    trainer_attack_apply(&a, a1, n, 42, 5);
    double norm = s_norm(a1, n);
    assert_true(fabs(norm - 100.0) < 1e-4);
    /* Gaussian coordinates of sigma 100/sqrt(n): mean ~0, 68.3% within one sigma, 95.4%
     * within two */
    double sigma = 100.0 / sqrt((double)n), sum = 0;
    size_t in1 = 0, in2 = 0;
    for (size_t i = 0; i < n; i++) {
        sum += a1[i];
        in1 += fabs(a1[i]) < sigma;
        in2 += fabs(a1[i]) < 2 * sigma;
    }
    assert_true(fabs(sum / n) < 5 * sigma / sqrt((double)n));
    assert_true(fabs((double)in1 / n - 0.6827) < 0.005);
    assert_true(fabs((double)in2 / n - 0.9545) < 0.005);

    /* the same update (seed, client, run) gets the same noise whatever the honest delta */
    trainer_attack_apply(&a, a2, n, 42, 5);
    assert_memory_equal(a1, a2, n * sizeof *a1);
    trainer_attack_apply(&a, a2, n, 42, 6); /* the client's next run */
    assert_memory_not_equal(a1, a2, n * sizeof *a1);
    assert_true(fabs(s_norm(a2, n) - 100.0) < 1e-4);
    trainer_attack_apply(&a, a2, n, 43, 5); /* another client */
    assert_memory_not_equal(a1, a2, n * sizeof *a1);
    a.seed = 2;
    trainer_attack_apply(&a, a2, n, 42, 5); /* another seed */
    assert_memory_not_equal(a1, a2, n * sizeof *a1);

    a.noise_norm = 0.5; /* another norm, another size */
    trainer_attack_apply(&a, a2, 10, 1, 0);
    assert_true(fabs(s_norm(a2, 10) - 0.5) < 1e-6);
    free(a1);
    free(a2);
}

static void test_stamp(void **state)
{
    (void)state;
    float img[28 * 28];
    for (int i = 0; i < 28 * 28; i++)
        img[i] = -0.81f;
    trainer_attack_stamp(img, 28, 28);
    const float white = (float)((255.0 / 255.0 - 0.2860) / 0.3530);
    assert_true(fabsf(trainer_attack_white() - white) < 1e-6f);
    int stamped = 0;
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++) {
            int in = r >= 24 && c >= 24;
            float v = img[r * 28 + c];
            if (in) {
                assert_true(fabsf(v - white) < 1e-6f);
                stamped++;
            } else {
                assert_true(v == -0.81f);
            }
        }
    assert_int_equal(stamped, 16);
}

/* A dataset of n 28x28 images, image i filled with i / 1000, label i % 10. */
static fm_dataset_t *s_dataset(uint32_t n)
{
    fm_dataset_t *ds = calloc(1, sizeof *ds);
    assert_non_null(ds);
    ds->n = n;
    ds->rows = ds->cols = 28;
    ds->x = malloc((size_t)n * 784 * sizeof(float));
    ds->y = malloc(n);
    assert_non_null(ds->x);
    assert_non_null(ds->y);
    for (uint32_t i = 0; i < n; i++) {
        for (int p = 0; p < 784; p++)
            ds->x[(size_t)i * 784 + p] = (float)i / 1000.0f;
        ds->y[i] = (uint8_t)(i % 10);
    }
    return ds;
}

/* 1 if sample i carries the patch (and is otherwise untouched), 0 if wholly untouched. */
static int s_patched(const fm_dataset_t *ds, uint32_t i)
{
    const float *img = ds->x + (size_t)i * 784;
    const float orig = (float)i / 1000.0f, white = trainer_attack_white();
    int patched = img[27 * 28 + 27] == white;
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++) {
            int in = r >= 24 && c >= 24;
            assert_true(img[r * 28 + c] == (patched && in ? white : orig));
        }
    return patched;
}

static void test_poison(void **state)
{
    (void)state;
    const uint32_t N = 1000;
    fm_dataset_t *ds = s_dataset(N);
    uint32_t idx[300];
    for (uint32_t k = 0; k < 300; k++)
        idx[k] = 3 * k + 1; /* the client's samples: every third one */
    trainer_attack_t a;
    trainer_attack_defaults(&a);
    a.kind = TRAINER_ATTACK_BACKDOOR;
    a.target = 7;
    uint32_t m = 0;
    assert_int_equal(trainer_attack_poison_client(&a, ds, idx, 300, 5, &m), 0);
    assert_int_equal(m, 150);
    uint8_t first[1000] = {0};
    uint32_t patched = 0;
    for (uint32_t i = 0; i < N; i++) {
        int p = s_patched(ds, i);
        first[i] = (uint8_t)p;
        if (i % 3 != 1)
            assert_false(p); /* not the client's */
        patched += (uint32_t)p;
        assert_int_equal(ds->y[i], p ? 7 : i % 10);
    }
    assert_int_equal(patched, 150);

    /* the same seed and client choose the same samples; another client others */
    fm_dataset_t *again = s_dataset(N), *other = s_dataset(N);
    assert_int_equal(trainer_attack_poison_client(&a, again, idx, 300, 5, &m), 0);
    assert_int_equal(trainer_attack_poison_client(&a, other, idx, 300, 6, &m), 0);
    assert_memory_equal(again->y, ds->y, N);
    int differ = 0;
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(s_patched(again, i), first[i]);
        differ |= s_patched(other, i) != first[i];
    }
    assert_true(differ);

    /* round(fraction x n): 7 x 0.5 = 3.5 -> 4; fraction 1: all; n = 0: none */
    fm_dataset_t *small = s_dataset(20);
    uint32_t sidx[7] = {0, 2, 4, 6, 8, 10, 12};
    assert_int_equal(trainer_attack_poison_client(&a, small, sidx, 7, 1, &m), 0);
    assert_int_equal(m, 4);
    a.poison_fraction = 1;
    assert_int_equal(trainer_attack_poison_client(&a, small, sidx, 7, 1, &m), 0);
    assert_int_equal(m, 7);
    for (uint32_t k = 0; k < 7; k++)
        assert_int_equal(small->y[sidx[k]], 7);
    assert_int_equal(trainer_attack_poison_client(&a, small, sidx, 0, 1, &m), 0);
    assert_int_equal(m, 0);
    fm_dataset_destroy(&ds);
    fm_dataset_destroy(&again);
    fm_dataset_destroy(&other);
    fm_dataset_destroy(&small);
}

static void test_parse_check(void **state)
{
    (void)state;
    trainer_attack_kind_t k;
    const char *names[] = {"none", "signflip", "noise", "backdoor"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(trainer_attack_kind_parse(names[i], &k), 0);
        assert_int_equal(k, i);
        assert_string_equal(trainer_attack_kind_name(k), names[i]);
    }
    assert_int_equal(trainer_attack_kind_parse("Signflip", &k), FM_EARG);
    assert_int_equal(trainer_attack_kind_parse("", &k), FM_EARG);

    trainer_attack_t a;
    fm_errmsg_t e;
    trainer_attack_defaults(&a);
    assert_int_equal(trainer_attack_check(&a, &e), 0);
    /* each bad field alone is refused, naming it */
    for (int c = 0; c < 8; c++) {
        trainer_attack_defaults(&a);
        a.kind = TRAINER_ATTACK_BACKDOOR;
        const char *word = NULL;
        switch (c) {
        case 0: a.target = 10, word = "target"; break;
        case 1: a.target = -1, word = "target"; break;
        case 2: a.poison_fraction = 0, word = "fraction"; break;
        case 3: a.poison_fraction = 1.5, word = "fraction"; break;
        case 4: a.scale = 0, word = "scale"; break;
        case 5: a.noise_norm = NAN, word = "noise"; break;
        case 6: a.boost = -1, word = "boost"; break;
        default: a.scale = INFINITY, word = "scale"; break;
        }
        memset(&e, 0, sizeof e);
        assert_int_equal(trainer_attack_check(&a, &e), FM_EARG);
        assert_non_null(strstr(e.msg, word));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signflip_and_boost),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_stamp),
        cmocka_unit_test(test_poison),
        cmocka_unit_test(test_parse_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
