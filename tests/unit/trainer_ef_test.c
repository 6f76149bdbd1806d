/* trainer_ef_test: the error-feedback residuals of a trainer pool's clients (trainer_ef): a
 * new residual is zero; it persists between take and give for the same client and is never
 * shared; under the memory bound the least recently used residual not in use is dropped
 * (counted), one in use never is, and a take with every held residual in use gets NULL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "trainer_ef.h"

#define NP 5
#define ONE (NP * sizeof(float))

static int s_zero(const float *r)
{
    for (size_t j = 0; j < NP; j++)
        if (r[j] != 0.0f)
            return 0;
    return 1;
}

static void s_fill(float *r, float v)
{
    for (size_t j = 0; j < NP; j++)
        r[j] = v + (float)j;
}

static int s_is(const float *r, float v)
{
    for (size_t j = 0; j < NP; j++)
        if (r[j] != v + (float)j)
            return 0;
    return 1;
}

static void s_expect(trainer_ef_t *ef, uint32_t held, uint64_t evicted)
{
    trainer_ef_stats_t st;
    trainer_ef_stats(ef, &st);
    assert_int_equal(st.held, held);
    assert_int_equal(st.bytes, (uint64_t)held * ONE);
    assert_int_equal(st.evicted, evicted);
}

/* zero when new; kept between takes; one per client */
static void test_persists(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(10, 4, NP, 4 * ONE, &err); /* clients 10..13 */
    assert_non_null(ef);
    s_expect(ef, 0, 0);
    float *a = trainer_ef_take(ef, 10);
    assert_non_null(a);
    assert_true(s_zero(a));
    s_fill(a, 1.0f);
    trainer_ef_give(ef, 10);
    float *b = trainer_ef_take(ef, 13);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_true(s_zero(b)); /* not client 10's */
    s_fill(b, 7.0f);
    trainer_ef_give(ef, 13);
    s_expect(ef, 2, 0);
    for (int round = 0; round < 3; round++) { /* the same residual, its values kept */
        float *again = trainer_ef_take(ef, 10);
        assert_ptr_equal(again, a);
        assert_true(s_is(again, 1.0f + (float)round));
        s_fill(again, 2.0f + (float)round);
        trainer_ef_give(ef, 10);
    }
    assert_true(s_is(trainer_ef_take(ef, 13), 7.0f));
    trainer_ef_give(ef, 13);
    s_expect(ef, 2, 0);
    trainer_ef_destroy(&ef);
    assert_null(ef);
    trainer_ef_destroy(&ef); /* idempotent */
}

/* bound of 2 residuals: the least recently used one not in use goes, counted */
static void test_lru_eviction(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 8, NP, 2 * ONE + ONE / 2, &err);
    assert_non_null(ef);
    s_fill(trainer_ef_take(ef, 0), 10.0f);
    trainer_ef_give(ef, 0);
    s_fill(trainer_ef_take(ef, 1), 20.0f);
    trainer_ef_give(ef, 1);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* 0 is now the most recent */
    trainer_ef_give(ef, 0);
    s_expect(ef, 2, 0);
    float *c = trainer_ef_take(ef, 2); /* evicts 1 (least recently used), not 0 */
    assert_non_null(c);
    assert_true(s_zero(c));
    s_fill(c, 30.0f);
    trainer_ef_give(ef, 2);
    s_expect(ef, 2, 1);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* kept */
    trainer_ef_give(ef, 0);
    float *back = trainer_ef_take(ef, 1); /* dropped: starts again from zero, evicts 2 */
    assert_non_null(back);
    assert_true(s_zero(back));
    trainer_ef_give(ef, 1);
    s_expect(ef, 2, 2);
    assert_true(s_is(trainer_ef_take(ef, 0), 10.0f)); /* 0 survived both evictions */
    trainer_ef_give(ef, 0);
    trainer_ef_destroy(&ef);
}

/* residuals in use are never evicted; with all in use, NULL (and nothing counted) */
static void test_in_use_never_evicted(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 8, NP, 2 * ONE, &err);
    assert_non_null(ef);
    float *a = trainer_ef_take(ef, 3);
    float *b = trainer_ef_take(ef, 4);
    assert_non_null(a);
    assert_non_null(b);
    s_fill(a, 3.0f);
    s_fill(b, 4.0f);
    assert_null(trainer_ef_take(ef, 5)); /* both in use, bound reached */
    assert_null(trainer_ef_take(ef, 6));
    s_expect(ef, 2, 0);
    assert_true(s_is(a, 3.0f)); /* untouched */
    assert_true(s_is(b, 4.0f));
    trainer_ef_give(ef, 4); /* b is free now (and older than a? no: a is older, but in use) */
    float *c = trainer_ef_take(ef, 5);
    assert_non_null(c);
    assert_true(s_zero(c));
    s_expect(ef, 2, 1);
    assert_true(s_is(a, 3.0f)); /* the older one in use stayed */
    trainer_ef_give(ef, 3);
    trainer_ef_give(ef, 5);
    assert_true(s_is(trainer_ef_take(ef, 3), 3.0f));
    trainer_ef_give(ef, 3);
    assert_true(s_zero(trainer_ef_take(ef, 4))); /* 4 was the one dropped */
    trainer_ef_give(ef, 4);
    s_expect(ef, 2, 2);
    trainer_ef_destroy(&ef);
}

/* a bound below one residual: every take is NULL, nothing held */
static void test_no_room(void **state)
{
    (void)state;
    int err = 0;
    trainer_ef_t *ef = trainer_ef_new(0, 2, NP, ONE - 1, &err);
    assert_non_null(ef);
    assert_null(trainer_ef_take(ef, 0));
    assert_null(trainer_ef_take(ef, 1));
    s_expect(ef, 0, 0);
    trainer_ef_destroy(&ef);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_persists),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_in_use_never_evicted),
        cmocka_unit_test(test_no_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
