/* fm_testutil: small helpers shared by the cmocka unit tests (header only, static inline).
 *
 * Include after <cmocka.h> (the allocation helper asserts). */
#ifndef FM_TESTUTIL_H
#define FM_TESTUTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"
#include "fm_rng.h"

/* malloc that fails the test instead of returning NULL (n == 0 allocates 1 element). */
static inline void *fm_tu_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static inline float *fm_tu_floats(size_t n) { return (float *)fm_tu_alloc(n, sizeof(float)); }

/* a[i] = U(lo, hi) from `rng`. */
static inline void fm_tu_uniform(fm_rng_t *rng, float *a, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(lo + (hi - lo) * fm_rng_uniform(rng));
}

/* a[i] = N(0, sd^2) from `rng`. */
static inline void fm_tu_normal(fm_rng_t *rng, float *a, size_t n, double sd)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(sd * fm_rng_normal(rng));
}

static inline void fm_tu_fill(float *a, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        a[i] = v;
}

/* max_i |a_i| (NaN propagates as +inf so that a NaN never passes a comparison). */
static inline double fm_tu_max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i]);
        if (v != v)
            return INFINITY;
        if (v > m)
            m = v;
    }
    return m;
}

/* max_i |a_i - b_i| (NaN -> +inf). */
static inline double fm_tu_max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i] - (double)b[i]);
        if (v != v)
            return INFINITY;
        if (v > m)
            m = v;
    }
    return m;
}

/* The relative error used throughout: max|a - b| / max|b| (b is the reference).
 * A zero reference gives max|a| (absolute) so that "both zero" passes and "a != 0" fails. */
static inline double fm_tu_rel_err(const float *a, const float *b, size_t n)
{
    double d = fm_tu_max_diff(a, b, n), s = fm_tu_max_abs(b, n);
    return s > 0.0 ? d / s : d;
}

/* Same with double arrays. */
static inline double fm_tu_rel_err_d(const double *a, const double *b, size_t n)
{
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs(a[i] - b[i]);
        if (v != v)
            return INFINITY;
        d = v > d ? v : d;
        s = fabs(b[i]) > s ? fabs(b[i]) : s;
    }
    return s > 0.0 ? d / s : d;
}

/* 1 if every element is finite. */
static inline int fm_tu_all_finite(const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return 0;
    return 1;
}

/* Fail with a message unless err <= tol (NaN fails). */
#define FM_TU_ASSERT_LE(err, tol, ...)                                                           \
    do {                                                                                         \
        double fm_tu_e_ = (err), fm_tu_t_ = (tol);                                               \
        if (!(fm_tu_e_ <= fm_tu_t_)) {                                                           \
            print_error(__VA_ARGS__);                                                            \
            fail_msg("error %.3e > tolerance %.3e", fm_tu_e_, fm_tu_t_);                         \
        }                                                                                        \
    } while (0)

/* A heap copy of exactly n bytes (ASan then catches any read past the end). */
static inline unsigned char *fm_tu_exact(const void *p, size_t n)
{
    unsigned char *q = (unsigned char *)malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* The call failed with `code` and wrote one line that contains `needle` (may be NULL). */
static inline void fm_tu_expect(int rc, int code, const fm_errmsg_t *e, const char *needle)
{
    if (rc != code)
        fail_msg("expected %d (%s), got %d (%s): %s", code, fm_strerror(code), rc,
                 fm_strerror(rc), e->msg);
    if (e->msg[0] == '\0' || strchr(e->msg, '\n'))
        fail_msg("bad error message: '%s'", e->msg);
    if (needle && !strstr(e->msg, needle))
        fail_msg("error message '%s' does not mention '%s'", e->msg, needle);
}

/* The call succeeded (else the test fails with its message). */
static inline void fm_tu_ok(int rc, const fm_errmsg_t *e)
{
    if (rc != 0)
        fail_msg("unexpected error %d (%s): %s", rc, fm_strerror(rc), e->msg);
}

#endif
