/* Unit tests of the secure-aggregation fixed-point codec (shared/sa/fm_sa_codec):
 *   - the scale choice (K 32, C 1 gives 2^25, as in the design note) and the no-overflow
 *     condition K (max(C,1) S + 1) <= 2^31: the largest K a scale allows passes, one more
 *     is refused with one line; the recommended scale always passes, one bit more fails;
 *   - overflow: K inputs all at +C, and all at -C, at the largest K the scale allows, sum
 *     in uint32 and decode to K C within K/(2S) (nearest) or K/S (stochastic), with the
 *     right sign; the same K with unclipped inputs at 2C wraps (so the test can see a wrap);
 *   - clip and weight: an update of norm 10 C decodes to norm C times w (within the
 *     rounding), the last coordinate is w; NaN, a weight outside (0, 1] are refused;
 *   - error bounds against a reference computed here in double: round to nearest within
 *     n/(2S) for sums of n random encodings; stochastic rounding within n/S, and unbiased
 *     (the mean over 200,000 roundings of one value within 5 standard errors of it). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "fm_err.h"
#include "fm_rng.h"
#include "fm_sa_codec.h"

static void test_scale(void **state)
{
    (void)state;
    assert_int_equal(fm_sa_codec_scale(32, 1.0), 25);
    assert_int_equal(fm_sa_codec_scale(32, 0.1), 25); /* max(C, 1) */
    assert_int_equal(fm_sa_codec_scale(10, 8.0), 23); /* 2^31 / 80 = 2^24.68 */
    assert_int_equal(fm_sa_codec_scale(0, 1.0), -1);
    assert_int_equal(fm_sa_codec_scale(4, NAN), -1);
    assert_int_equal(fm_sa_codec_scale(UINT32_MAX, 1e6), -1);
    fm_errmsg_t e = {{0}};
    for (uint32_t k = 1; k <= 300; k += 7)
        for (double clip = 0.25; clip < 100; clip *= 2.5) {
            int s = fm_sa_codec_scale(k, clip);
            fm_sa_codec_t c = {k, clip, s};
            assert_int_equal(fm_sa_codec_check(&c, &e), 0);
            c.s = s + 2; /* the margin is one bit: two more always overflow */
            assert_int_equal(fm_sa_codec_check(&c, &e), c.s <= 30 ? FM_ERANGE : FM_EARG);
        }
    /* the largest K of a scale passes, one more is refused with one line */
    assert_int_equal(fm_sa_codec_kmax(1.0, 20), 2047);
    fm_sa_codec_t ok = {2047, 1.0, 20}, over = {2048, 1.0, 20};
    assert_int_equal(fm_sa_codec_check(&ok, &e), 0);
    assert_int_equal(fm_sa_codec_check(&over, &e), FM_ERANGE);
    assert_non_null(strstr(e.msg, "could wrap"));
    assert_null(strchr(e.msg, '\n'));
    fm_sa_codec_t bad[] = {{0, 1.0, 10},      {4, 0.0, 10}, {4, -1, 10},
                           {4, INFINITY, 10}, {4, 1.0, -1}, {4, 1.0, 31}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fm_sa_codec_check(&bad[i], NULL), FM_EARG);
}

/* Sum K encodings of the 1-coordinate update {x} with weight 1 (2 words each). */
static void s_sum_k(const fm_sa_codec_t *c, uint32_t k, float x, fm_rng_t *rng, double out[2])
{
    uint32_t sum[2] = {0, 0}, enc[2];
    for (uint32_t i = 0; i < k; i++) {
        assert_int_equal(fm_sa_codec_encode(c, &x, 1, 1.0, rng, enc, NULL), 0);
        sum[0] += enc[0];
        sum[1] += enc[1];
    }
    fm_sa_codec_decode(c, sum, 2, out);
}

static void test_overflow(void **state)
{
    (void)state;
    fm_rng_t rng;
    fm_rng_seed(&rng, 5, 0);
    const struct {
        double clip;
        int s;
    } cases[] = {{1.0, 20}, {3.7, 24}, {0.5, 27}, {100.0, 12}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double clip = cases[i].clip, S = ldexp(1.0, cases[i].s);
        uint32_t k = fm_sa_codec_kmax(clip, cases[i].s);
        fm_sa_codec_t c = {k, clip, cases[i].s};
        assert_int_equal(fm_sa_codec_check(&c, NULL), 0);
        c.k = k + 1;
        assert_int_equal(fm_sa_codec_check(&c, NULL), FM_ERANGE);
        c.k = k;
        for (int sign = -1; sign <= 1; sign += 2)
            for (int stochastic = 0; stochastic <= 1; stochastic++) {
                double d[2];
                s_sum_k(&c, k, (float)(sign * clip), stochastic ? &rng : NULL, d);
                /* float(3.7) > 3.7: the encoder clips it to C itself */
                double want = sign * fmin((double)(float)clip, clip) * k;
                double tol = stochastic ? k / S : k / (2 * S);
                assert_true(fabs(d[0] - want) <= tol);
                assert_true(fabs(d[1] - k) <= tol); /* the weights */
            }
    }
    /* unclipped values at 2C with the largest K of the scale wrap: the bound is needed */
    fm_sa_codec_t c = {2047, 1.0, 20};
    uint32_t sum = 0;
    for (int i = 0; i < 2047; i++)
        sum += fm_sa_codec_encode_value(&c, 2.0, NULL);
    double d;
    fm_sa_codec_decode(&c, &sum, 1, &d);
    assert_true(d < 0); /* 2047 x 2 = 4094 > 2^11: wrapped to a negative value */
}

static void test_clip_weight(void **state)
{
    (void)state;
    enum { N = 1000 };
    fm_rng_t rng;
    fm_rng_seed(&rng, 9, 0);
    float *delta = fm_tu_floats(N);
    fm_tu_normal(&rng, delta, N, 1.0); /* norm about 31.6 */
    const double clip = 3.0, w = 0.375;
    fm_sa_codec_t c = {8, clip, fm_sa_codec_scale(8, clip)};
    double S = ldexp(1.0, c.s);
    uint32_t *enc = fm_tu_alloc(N + 1, sizeof *enc);
    double *dec = fm_tu_alloc(N + 1, sizeof *dec);
    assert_int_equal(fm_sa_codec_encode(&c, delta, N, w, NULL, enc, NULL), 0);
    fm_sa_codec_decode(&c, enc, N + 1, dec);
    double ss = 0, nd = 0;
    for (int i = 0; i < N; i++)
        nd += (double)delta[i] * delta[i];
    nd = sqrt(nd);
    for (int i = 0; i < N; i++) {
        double want = delta[i] * (clip / nd) * w;
        assert_true(fabs(dec[i] - want) <= 0.5 / S + 1e-15);
        ss += dec[i] * dec[i];
    }
    assert_true(fabs(sqrt(ss) - clip * w) < sqrt((double)N) / S);
    assert_true(dec[N] == w); /* 0.375 is exact */
    /* a small update is not scaled */
    float small[3] = {0.5f, -0.25f, 0.125f};
    assert_int_equal(fm_sa_codec_encode(&c, small, 3, 1.0, NULL, enc, NULL), 0);
    fm_sa_codec_decode(&c, enc, 4, dec);
    assert_true(dec[0] == 0.5 && dec[1] == -0.25 && dec[2] == 0.125 && dec[3] == 1.0);
    assert_true(enc[1] == (uint32_t)(-(int64_t)ldexp(0.25, c.s))); /* two's complement */
    /* refusals leave out untouched */
    uint32_t before[4];
    memcpy(before, enc, sizeof before);
    fm_errmsg_t e = {{0}};
    small[1] = NAN;
    assert_int_equal(fm_sa_codec_encode(&c, small, 3, 1.0, NULL, enc, &e), FM_ENONFINITE);
    small[1] = 0.0f;
    assert_int_equal(fm_sa_codec_encode(&c, small, 3, 0.0, NULL, enc, &e), FM_EARG);
    assert_int_equal(fm_sa_codec_encode(&c, small, 3, 1.5, NULL, enc, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "weight"));
    fm_sa_codec_t over = {8, clip, c.s + 2};
    assert_int_equal(fm_sa_codec_encode(&over, small, 3, 1.0, NULL, enc, &e), FM_ERANGE);
    assert_memory_equal(enc, before, sizeof before);
    free(delta);
    free(enc);
    free(dec);
}

static void test_error_bounds(void **state)
{
    (void)state;
    enum { N = 64, K = 25 };
    fm_rng_t rng, srng;
    fm_rng_seed(&rng, 13, 0);
    fm_rng_seed(&srng, 13, 1);
    const double clip = 2.0;
    fm_sa_codec_t c = {K, clip, fm_sa_codec_scale(K, clip)};
    double S = ldexp(1.0, c.s);
    float *delta = fm_tu_floats(N);
    uint32_t enc[N + 1], sum_n[N + 1], sum_s[N + 1];
    double ref[N + 1], dn[N + 1], ds[N + 1];
    memset(sum_n, 0, sizeof sum_n);
    memset(sum_s, 0, sizeof sum_s);
    memset(ref, 0, sizeof ref);
    for (int u = 0; u < K; u++) {
        fm_tu_normal(&rng, delta, N, u % 3 == 0 ? 1.0 : 0.05); /* some clipped, some not */
        double w = 0.05 + 0.95 * fm_rng_uniform(&rng);
        double nd = 0;
        for (int i = 0; i < N; i++)
            nd += (double)delta[i] * delta[i];
        nd = sqrt(nd);
        double f = nd > clip ? clip / nd : 1.0;
        for (int i = 0; i < N; i++)
            ref[i] += (double)delta[i] * f * w;
        ref[N] += w;
        assert_int_equal(fm_sa_codec_encode(&c, delta, N, w, NULL, enc, NULL), 0);
        for (int i = 0; i <= N; i++)
            sum_n[i] += enc[i];
        assert_int_equal(fm_sa_codec_encode(&c, delta, N, w, &srng, enc, NULL), 0);
        for (int i = 0; i <= N; i++)
            sum_s[i] += enc[i];
    }
    fm_sa_codec_decode(&c, sum_n, N + 1, dn);
    fm_sa_codec_decode(&c, sum_s, N + 1, ds);
    int differ = 0;
    for (int i = 0; i <= N; i++) {
        assert_true(fabs(dn[i] - ref[i]) <= K / (2 * S) * (1 + 1e-9));
        assert_true(fabs(ds[i] - ref[i]) < K / S);
        differ += dn[i] != ds[i];
    }
    assert_true(differ > 0);
    /* stochastic rounding is unbiased: x = (7 + 0.3) / S */
    enum { DRAWS = 200000 };
    double x = 7.3 / S, mean = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint32_t v = fm_sa_codec_encode_value(&c, x, &srng);
        assert_true(v == 7 || v == 8);
        mean += v;
    }
    mean /= DRAWS;
    double se = sqrt(0.3 * 0.7 / DRAWS);
    assert_true(fabs(mean - 7.3) < 5 * se);
    assert_int_equal(fm_sa_codec_encode_value(&c, x, NULL), 7); /* nearest */
    assert_int_equal(fm_sa_codec_encode_value(&c, -x, NULL), (uint32_t)-7);
    free(delta);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_clip_weight),
        cmocka_unit_test(test_error_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
