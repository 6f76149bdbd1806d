/* Unit tests of fm_signvote (shared/fl), the robust learning rate's sign vote: the overruled
 * parameters against a naive count written here (per parameter, count the positive and the
 * negative values of n updates; keep the step when |pos - neg| >= ceil(theta n), else reverse
 * it in a full buffer and drop it in a partial one), through dense spans at odd offsets and
 * alignments and through sparse scatters; the threshold's edges (0 keeps every step, 1 keeps
 * only unanimity, theta n exactly on an integer keeps that agreement); zeros vote nothing;
 * a reset or an apply starts a new vote; refusals. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_err.h"
#include "fm_rng.h"
#include "fm_signvote.h"

#define N 1000

/* u[i][j]: values of random sign, about a third of them 0 for parameters j % 3 == 0 */
static void s_fill(float u[][N], int k, uint64_t seed)
{
    fm_rng_t r;
    fm_rng_seed(&r, seed, 0);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < N; j++) {
            double x = fm_rng_uniform(&r) - 0.45; /* a slight positive lean */
            u[i][j] = (j % 3 == 0 && fm_rng_below(&r, 3) == 0) ? 0.0f : (float)x;
        }
}

/* The naive twin: out[j] = delta[j], or -delta[j] (full) / 0 (partial); returns how many
 * were overruled. */
static size_t s_naive(float u[][N], int k, double theta, int full, const float *delta, float *out)
{
    long need = (long)ceil(theta * k - 1e-9);
    size_t rev = 0;
    for (int j = 0; j < N; j++) {
        long pos = 0, neg = 0;
        for (int i = 0; i < k; i++) {
            pos += u[i][j] > 0;
            neg += u[i][j] < 0;
        }
        long a = labs(pos - neg);
        out[j] = a >= need ? delta[j] : full ? -delta[j] : 0.0f;
        rev += a < need;
    }
    return rev;
}

static void s_delta(float *d)
{
    for (int j = 0; j < N; j++)
        d[j] = 0.001f * (float)(j + 1);
}

/* Fold every update in two spans: [0, 37) from a misaligned copy, [37, N) in place. */
static void s_fold_dense(fm_signvote_t *v, float u[][N], int k)
{
    static unsigned char buf[N * sizeof(float) + 1];
    for (int i = 0; i < k; i++) {
        memcpy(buf + 1, u[i], 37 * sizeof(float));
        assert_int_equal(fm_signvote_fold_span(v, 0, 37, buf + 1), 0);
        assert_int_equal(fm_signvote_fold_span(v, 37, N - 37, u[i] + 37), 0);
        fm_signvote_end(v);
    }
}

static void test_dense_against_naive(void **state)
{
    (void)state;
    static float u[10][N];
    float delta[N], want[N];
    static const double thetas[] = {0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0};
    static const int ks[] = {1, 2, 5, 10};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t b = 0; b < sizeof thetas / sizeof thetas[0]; b++)
            for (int full = 0; full < 2; full++) {
                int k = ks[a];
                s_fill(u, k, 7 + a);
                int err = 0;
                /* capacity k (full) or k + 1 (a partial buffer) */
                fm_signvote_t *v = fm_signvote_new(N, full ? k : k + 1, thetas[b], &err);
                assert_non_null(v);
                s_fold_dense(v, u, k);
                assert_int_equal(fm_signvote_count(v), k);
                s_delta(delta);
                size_t rev_want = s_naive(u, k, thetas[b], full, delta, want);
                size_t rev = fm_signvote_apply(v, delta);
                assert_int_equal(rev, rev_want);
                assert_memory_equal(delta, want, sizeof want);
                if (thetas[b] == 0.0)
                    assert_int_equal(rev, 0);
                if (k == 10 && thetas[b] == 0.4)
                    assert_true(rev > 0 && rev < N);       /* a real mix for this data */
                assert_int_equal(fm_signvote_count(v), 0); /* apply starts a new vote */
                fm_signvote_destroy(&v);
                assert_null(v);
            }
}

/* theta K on an integer: 0.4 x 10 = 4 keeps |S| = 4 and reverses |S| = 3; theta 1 keeps
 * only unanimity; a zero votes for neither side. */
static void test_threshold_edges(void **state)
{
    (void)state;
    fm_signvote_t *v = fm_signvote_new(4, 10, 0.4, NULL);
    assert_non_null(v);
    /* parameter 0: 7 up, 3 down (|S| = 4); 1: 6 up, 3 down, 1 zero (|S| = 3);
     * 2: 10 down (|S| = 10); 3: 5 up, 5 down (0) */
    for (int i = 0; i < 10; i++) {
        float x[4] = {i < 7 ? 1.0f : -1.0f, i < 6 ? 2.0f : (i < 9 ? -2.0f : 0.0f), -3.0f,
                      i < 5 ? 4.0f : -4.0f};
        assert_int_equal(fm_signvote_fold_span(v, 0, 4, x), 0);
        fm_signvote_end(v);
    }
    float d[4] = {1, 2, 3, 4};
    assert_int_equal(fm_signvote_apply(v, d), 2);
    assert_true(d[0] == 1 && d[1] == -2 && d[2] == 3 && d[3] == -4);
    fm_signvote_destroy(&v);

    v = fm_signvote_new(2, 3, 1.0, NULL);
    assert_non_null(v);
    float a[2] = {1, 1}, b[2] = {1, -1}, c[2] = {1, 0};
    fm_signvote_fold_span(v, 0, 2, a);
    fm_signvote_end(v);
    fm_signvote_fold_span(v, 0, 2, b);
    fm_signvote_end(v);
    fm_signvote_fold_span(v, 0, 2, c);
    fm_signvote_end(v);
    float e[2] = {5, 6};
    assert_int_equal(fm_signvote_apply(v, e), 1);
    assert_true(e[0] == 5 && e[1] == -6);
    /* nothing voted: untouched */
    assert_int_equal(fm_signvote_apply(v, e), 0);
    assert_true(e[0] == 5 && e[1] == -6);
    fm_signvote_destroy(&v);

    /* a partial buffer (3 of 10): the step without agreement is dropped, not reversed */
    v = fm_signvote_new(2, 10, 0.4, NULL);
    assert_non_null(v);
    for (int i = 0; i < 3; i++) {
        float x[2] = {1.0f, i == 0 ? -1.0f : 1.0f};
        fm_signvote_fold_span(v, 0, 2, x);
        fm_signvote_end(v);
    }
    float p[2] = {7, 8};
    assert_int_equal(fm_signvote_apply(v, p), 1);
    assert_true(p[0] == 7 && p[1] == 0);
    fm_signvote_destroy(&v);
}

/* Sparse updates: a parameter an update leaves out votes 0, as a dense zero would. */
static void test_scatter_equals_dense(void **state)
{
    (void)state;
    static float u[5][N];
    s_fill(u, 5, 99);
    fm_signvote_t *dense = fm_signvote_new(N, 5, 0.6, NULL),
                  *sparse = fm_signvote_new(N, 5, 0.6, NULL);
    assert_non_null(dense);
    assert_non_null(sparse);
    s_fold_dense(dense, u, 5);
    for (int i = 0; i < 5; i++) {
        /* the update as tensor [100, N): its nonzero entries, and [0, 100) dense */
        uint32_t idx[N];
        float vals[N];
        size_t n = 0;
        for (int j = 100; j < N; j++)
            if (u[i][j] != 0.0f) {
                idx[n] = (uint32_t)(j - 100);
                vals[n++] = u[i][j];
            }
        assert_int_equal(fm_signvote_fold_span(sparse, 0, 100, u[i]), 0);
        assert_int_equal(fm_signvote_fold_scatter(sparse, 100, N - 100, n, idx, vals), 0);
        fm_signvote_end(sparse);
    }
    float d1[N], d2[N];
    s_delta(d1);
    s_delta(d2);
    assert_int_equal(fm_signvote_apply(dense, d1), fm_signvote_apply(sparse, d2));
    assert_memory_equal(d1, d2, sizeof d1);
    fm_signvote_destroy(&dense);
    fm_signvote_destroy(&sparse);
}

/* A reset drops the vote; out-of-range spans and indices add nothing; bad arguments. */
static void test_reset_and_refusals(void **state)
{
    (void)state;
    int err = 0;
    assert_null(fm_signvote_new(0, 10, 0.5, &err));
    assert_int_equal(err, FM_EARG);
    err = 0;
    assert_null(fm_signvote_new(10, 0, 0.5, &err));
    assert_int_equal(err, FM_EARG);
    err = 0;
    assert_null(fm_signvote_new(10, 10, 1.5, &err));
    assert_int_equal(err, FM_EARG);
    err = 0;
    assert_null(fm_signvote_new(10, 10, NAN, &err));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_signvote_new(10, 10, -0.1, NULL));

    fm_signvote_t *v = fm_signvote_new(3, 1, 1.0, NULL);
    assert_non_null(v);
    assert_true(fm_signvote_threshold(v) == 1.0);
    float up[3] = {1, 1, 1}, down[3] = {-1, -1, -1};
    assert_int_equal(fm_signvote_fold_span(v, 1, 3, up), FM_ERANGE);
    assert_int_equal(fm_signvote_fold_span(v, 4, 0, up), FM_ERANGE);
    uint32_t bad[2] = {0, 3};
    assert_int_equal(fm_signvote_fold_scatter(v, 0, 3, 2, bad, up), FM_ERANGE);
    assert_int_equal(fm_signvote_fold_scatter(v, 1, 3, 0, NULL, NULL), FM_ERANGE);
    /* a disagreeing vote, dropped by the reset: the next one is unanimous */
    fm_signvote_fold_span(v, 0, 3, down);
    fm_signvote_end(v);
    fm_signvote_fold_span(v, 0, 3, up);
    fm_signvote_end(v);
    fm_signvote_reset(v);
    assert_int_equal(fm_signvote_count(v), 0);
    fm_signvote_fold_span(v, 0, 3, up);
    fm_signvote_end(v);
    float d[3] = {1, 2, 3};
    assert_int_equal(fm_signvote_apply(v, d), 0);
    assert_true(d[0] == 1 && d[1] == 2 && d[2] == 3);
    fm_signvote_destroy(&v);
    fm_signvote_destroy(&v); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_against_naive),
        cmocka_unit_test(test_threshold_edges),
        cmocka_unit_test(test_scatter_equals_dense),
        cmocka_unit_test(test_reset_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
