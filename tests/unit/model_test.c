/* Unit tests of fm_model: the PyTorch state_dict layout of every model (names, shapes,
 * contiguous offsets, sizes), lookup, errors, and the PyTorch-default initialisation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "fm_err.h"
#include "fm_model.h"

/* The expected layout: PyTorch names and shapes in state_dict order, and the fan_in that
 * sets the init bound 1/sqrt(fan_in) (weight's in_features * kernel size; a bias uses its
 * layer's weight fan_in). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
    int fan_in;
} exp_view_t;

static const exp_view_t s_logreg[] = {
    {"fc.weight", 2, {10, 784}, 784},
    {"fc.bias", 1, {10}, 784},
};
static const exp_view_t s_mlp[] = {
    {"fc1.weight", 2, {200, 784}, 784}, {"fc1.bias", 1, {200}, 784},
    {"fc2.weight", 2, {200, 200}, 200}, {"fc2.bias", 1, {200}, 200},
    {"fc3.weight", 2, {10, 200}, 200},  {"fc3.bias", 1, {10}, 200},
};
static const exp_view_t s_cnn[] = {
    {"conv1.weight", 4, {32, 1, 3, 3}, 9},    {"conv1.bias", 1, {32}, 9},
    {"conv2.weight", 4, {64, 32, 3, 3}, 288}, {"conv2.bias", 1, {64}, 288},
    {"fc1.weight", 2, {128, 9216}, 9216},     {"fc1.bias", 1, {128}, 9216},
    {"fc2.weight", 2, {10, 128}, 128},        {"fc2.bias", 1, {10}, 128},
};

typedef struct {
    const char *name;
    fm_arch_t arch;
    const exp_view_t *views;
    int nviews;
    size_t nparams;
} exp_model_t;

static const exp_model_t s_models[] = {
    {"logreg", FM_ARCH_LOGREG, s_logreg, 2, 7850},
    {"mlp", FM_ARCH_MLP, s_mlp, 6, 199210},
    {"cnn", FM_ARCH_CNN, s_cnn, 8, 1199882},
};

static void test_layouts(void **state)
{
    for (size_t k = 0; k < sizeof s_models / sizeof s_models[0]; k++) {
        const exp_model_t *x = &s_models[k];
        int err = 12345;
        fm_model_t *m = fm_model_new(x->name, &err);
        assert_non_null(m);
        assert_string_equal(fm_model_name(m), x->name);
        assert_int_equal(fm_model_arch(m), x->arch);
        assert_int_equal(fm_model_nparams(m), x->nparams);
        assert_int_equal(fm_model_nviews(m), x->nviews);
        size_t off = 0;
        for (int i = 0; i < x->nviews; i++) {
            const fm_view_t *v = fm_model_view(m, i);
            const exp_view_t *e = &x->views[i];
            assert_non_null(v);
            assert_string_equal(v->name, e->name);
            assert_int_equal(v->ndim, e->ndim);
            size_t numel = 1;
            for (int d = 0; d < e->ndim; d++) {
                assert_int_equal(v->shape[d], e->shape[d]);
                numel *= (size_t)e->shape[d];
            }
            assert_int_equal(v->numel, numel);
            assert_int_equal(v->offset, off); /* contiguous, in state_dict order */
            off += numel;
            assert_ptr_equal(fm_model_find(m, e->name), v);
        }
        assert_int_equal(off, x->nparams); /* the views tile the buffer exactly */
        assert_null(fm_model_view(m, -1));
        assert_null(fm_model_view(m, x->nviews));
        assert_null(fm_model_find(m, "nope.weight"));
        assert_null(fm_model_find(m, ""));
        assert_null(fm_model_find(m, "fc1.weigh")); /* prefix of a real name */
        assert_null(fm_model_find(m, "FC1.WEIGHT"));
        /* new models are zeroed and finite */
        const float *p = fm_model_params_const(m);
        assert_ptr_equal(p, fm_model_params(m));
        for (size_t i = 0; i < x->nparams; i++)
            assert_true(p[i] == 0.0f);
        assert_int_equal(fm_model_all_finite(m), 1);
        assert_true(((uintptr_t)p % 64) == 0); /* documented 64-byte alignment */
        fm_model_destroy(&m);
        assert_null(m);
        fm_model_destroy(&m); /* idempotent */
        assert_null(m);
    }
    fm_model_destroy(NULL);
}

static void test_unknown(void **state)
{
    const char *bad[] = {"", "CNN", "mlp ", "resnet", "logreg2", "cn"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int err = 0;
        fm_model_t *m = fm_model_new(bad[i], &err);
        if (m || err != FM_EMODEL)
            fail_msg("model '%s': %p, err %d", bad[i], (void *)m, err);
    }
    int err = 0;
    assert_null(fm_model_new(NULL, &err));
    assert_int_equal(err, FM_EMODEL);
    assert_null(fm_model_new("bogus", NULL)); /* err may be NULL */
}

static void test_flops_finite(void **state)
{
    int err = 0;
    fm_model_t *m = fm_model_new("cnn", &err);
    assert_non_null(m);
    /* multiply-add = 2: conv1 26*26*32*9, conv2 24*24*64*288, fc1 9216*128, fc2 128*10 */
    assert_true(fm_model_flops_forward(m) == 2.0 * (194688.0 + 10616832.0 + 1179648.0 + 1280.0));
    fm_model_params(m)[fm_model_nparams(m) - 1] = NAN;
    assert_int_equal(fm_model_all_finite(m), 0);
    fm_model_params(m)[fm_model_nparams(m) - 1] = INFINITY;
    assert_int_equal(fm_model_all_finite(m), 0);
    fm_model_params(m)[fm_model_nparams(m) - 1] = 0.0f;
    fm_model_params(m)[0] = -INFINITY;
    assert_int_equal(fm_model_all_finite(m), 0);
    fm_model_destroy(&m);
    m = fm_model_new("mlp", &err);
    assert_non_null(m);
    assert_true(fm_model_flops_forward(m) == 2.0 * (156800.0 + 40000.0 + 2000.0));
    fm_model_destroy(&m);
    m = fm_model_new("logreg", &err);
    assert_non_null(m);
    assert_true(fm_model_flops_forward(m) == 2.0 * 7840.0);
    fm_model_destroy(&m);
}

static void test_init_deterministic(void **state)
{
    for (size_t k = 0; k < sizeof s_models / sizeof s_models[0]; k++) {
        int err = 0;
        fm_model_t *a = fm_model_new(s_models[k].name, &err);
        fm_model_t *b = fm_model_new(s_models[k].name, &err);
        fm_model_t *c = fm_model_new(s_models[k].name, &err);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        size_t n = fm_model_nparams(a), bytes = n * sizeof(float);
        fm_model_init(a, 1234);
        fm_model_init(b, 1234);
        fm_model_init(c, 1235);
        assert_memory_equal(fm_model_params(a), fm_model_params(b), bytes);
        /* another seed: (almost) every value differs, not just a few */
        size_t same = 0;
        for (size_t i = 0; i < n; i++)
            same += fm_model_params(a)[i] == fm_model_params(c)[i];
        assert_true(same < n / 1000 + 1);
        /* re-initialising overwrites everything (the previous state does not matter) */
        fm_model_init(c, 1234);
        assert_memory_equal(fm_model_params(a), fm_model_params(c), bytes);
        fm_tu_fill(fm_model_params(c), n, 7.0f);
        fm_model_init(c, 1234);
        assert_memory_equal(fm_model_params(a), fm_model_params(c), bytes);
        /* views are not copies of each other (each draws its own values) */
        const fm_view_t *v0 = fm_model_view(a, 0), *v1 = fm_model_view(a, 1);
        assert_memory_not_equal(fm_model_params(a) + v0->offset, fm_model_params(a) + v1->offset,
                                v1->numel * sizeof(float));
        fm_model_destroy(&a);
        fm_model_destroy(&b);
        fm_model_destroy(&c);
    }
}

/* Every tensor: U(-bound, bound) with bound = 1/sqrt(fan_in). All values within the bound
 * (float rounding of bound*u may reach bound itself, not beyond: allow 1 ulp); for tensors
 * of >= 1000 values the sample mean and variance must match U(-b, b) (mean 0, variance
 * b^2/3) within 6 standard errors: sd(mean) = b/sqrt(3n), sd(var)/(b^2/3) = sqrt(4/5/n)
 * (uniform: E x^4 = b^4/5); for every tensor the largest |value| must come close to b (a
 * too-narrow range, e.g. a bias bound from the wrong fan_in, fails). */
static void test_init_distribution(void **state)
{
    for (size_t k = 0; k < sizeof s_models / sizeof s_models[0]; k++) {
        const exp_model_t *x = &s_models[k];
        int err = 0;
        fm_model_t *m = fm_model_new(x->name, &err);
        assert_non_null(m);
        fm_model_init(m, 42 + k);
        for (int i = 0; i < x->nviews; i++) {
            const fm_view_t *v = fm_model_view(m, i);
            const float *p = fm_model_params(m) + v->offset;
            double b = 1.0 / sqrt((double)x->views[i].fan_in), lim = b * (1.0 + 1.2e-7);
            double s = 0.0, s2 = 0.0, mn = INFINITY, mx = -INFINITY;
            for (size_t j = 0; j < v->numel; j++) {
                double w = p[j];
                if (!(fabs(w) <= lim))
                    fail_msg("%s %s[%zu] = %g outside +-%g", x->name, v->name, j, w, b);
                s += w;
                s2 += w * w;
                mn = w < mn ? w : mn;
                mx = w > mx ? w : mx;
            }
            double n = (double)v->numel, mean = s / n, var = s2 / n - mean * mean;
            if (v->numel >= 1000) {
                double tol_mean = 6.0 * b / sqrt(3.0 * n);
                double tol_var = 6.0 * sqrt(0.8 / n);
                if (fabs(mean) > tol_mean || fabs(var / (b * b / 3.0) - 1.0) > tol_var)
                    fail_msg("%s %s: mean %g (tol %g), var/(b^2/3) %g (tol %g)", x->name, v->name,
                             mean, tol_mean, var / (b * b / 3.0), tol_var);
            }
            /* the largest |w| reaches close to the bound: P(max|w| < q b) = q^n, so with
             * q = 1e-6^(1/n) a correct init fails with probability 1e-6 while a bound from
             * a wrong fan_in (e.g. conv1.bias with fan_in 32 instead of 9: 0.53 b) fails
             * (q = 0.65 for the 32 values of conv1.bias, 0.25 for 10 values, -> 1 - 14/n) */
            double q = pow(1e-6, 1.0 / n), amax = mx > -mn ? mx : -mn;
            if (!(amax >= q * b))
                fail_msg("%s %s: max|w| %g < %g (bound %g, n %zu)", x->name, v->name, amax, q * b,
                         b, v->numel);
            assert_true(mx > 0.0 && mn < 0.0);
        }
        fm_model_destroy(&m);
    }
}

/* The brief's specific check, spelled out: cnn fc1.weight (1179648 values, fan_in 9216,
 * bound 1/96). Tolerances (~10 standard errors): mean within 0.005 b (sd 5.3e-4 b), variance
 * within 1% of b^2/3 (relative sd 8.2e-4). */
static void test_init_cnn_fc1(void **state)
{
    int err = 0;
    fm_model_t *m = fm_model_new("cnn", &err);
    assert_non_null(m);
    fm_model_init(m, 7);
    const fm_view_t *v = fm_model_find(m, "fc1.weight");
    assert_non_null(v);
    assert_int_equal(v->numel, 1179648);
    const float *p = fm_model_params(m) + v->offset;
    double b = 1.0 / 96.0, s = 0.0, s2 = 0.0;
    for (size_t j = 0; j < v->numel; j++) {
        assert_true(fabsf(p[j]) <= (float)b);
        s += p[j];
        s2 += (double)p[j] * p[j];
    }
    double mean = s / v->numel, var = s2 / v->numel - mean * mean;
    print_message("cnn fc1.weight: mean %.3e (bound %.3e), var/(b^2/3) = %.5f\n", mean, b,
                  var / (b * b / 3.0));
    assert_true(fabs(mean) < 0.005 * b);
    assert_true(fabs(var / (b * b / 3.0) - 1.0) < 0.01);
    fm_model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),           cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_flops_finite),      cmocka_unit_test(test_init_deterministic),
        cmocka_unit_test(test_init_distribution), cmocka_unit_test(test_init_cnn_fc1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
