/* aggregator_round_test: the state of a synchronous round (aggregator/aggregator_round.c):
 * cohort selection (size, only live clients, ascending, seeded, uniform enough), the
 * verdicts on updates, reporting and completion, closing. Links aggregator_lib (the
 * CMakeLists.txt rule for aggregator_*_test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aggregator_round.h"

#define S_N 100

static void s_all_live(uint8_t *live, uint32_t n) { memset(live, 1, n); }

static void test_open_selects_live_clients(void **state)
{
    (void)state;
    int err = 0;
    agg_round_t *r = agg_round_new(S_N, &err);
    assert_non_null(r);
    assert_false(agg_round_is_open(r));
    assert_int_equal(agg_round_number(r), 0);
    uint8_t live[S_N];
    memset(live, 0, sizeof live);
    /* nobody live: no round */
    assert_int_equal(agg_round_open(r, 1, live, 10, 7, 5.0), 0);
    assert_false(agg_round_is_open(r));
    /* 4 live clients, 10 wanted: all 4 */
    live[3] = live[17] = live[42] = live[99] = 1;
    assert_int_equal(agg_round_open(r, 1, live, 10, 7, 5.0), 4);
    assert_true(agg_round_is_open(r));
    uint32_t n = 0;
    const uint32_t *c = agg_round_cohort(r, &n);
    assert_int_equal(n, 4);
    assert_int_equal(c[0], 3);
    assert_int_equal(c[1], 17);
    assert_int_equal(c[2], 42);
    assert_int_equal(c[3], 99);
    assert_true(agg_round_deadline(r) == 5.0);
    /* all live, 10 wanted: 10 distinct, ascending, all < S_N */
    s_all_live(live, S_N);
    assert_int_equal(agg_round_open(r, 2, live, 10, 7, 9.0), 10);
    c = agg_round_cohort(r, &n);
    assert_int_equal(n, 10);
    for (uint32_t i = 1; i < n; i++)
        assert_true(c[i - 1] < c[i]);
    assert_true(c[n - 1] < S_N);
    assert_int_equal(agg_round_number(r), 2);
    agg_round_destroy(&r);
    assert_null(r);
    agg_round_destroy(&r); /* idempotent */
}

static void test_seeded(void **state)
{
    (void)state;
    int err = 0;
    agg_round_t *a = agg_round_new(S_N, &err), *b = agg_round_new(S_N, &err);
    assert_non_null(a);
    assert_non_null(b);
    uint8_t live[S_N];
    s_all_live(live, S_N);
    uint32_t na, nb;
    /* same (seed, round, live set): same cohort, in another instance (a restarted aggregator) */
    agg_round_open(a, 5, live, 10, 1, 0);
    agg_round_open(b, 5, live, 10, 1, 0);
    const uint32_t *ca = agg_round_cohort(a, &na), *cb = agg_round_cohort(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ca, cb, na * sizeof *ca);
    /* another round or another seed: another cohort */
    uint32_t first[10];
    memcpy(first, ca, sizeof first);
    agg_round_open(b, 6, live, 10, 1, 0);
    cb = agg_round_cohort(b, &nb);
    assert_memory_not_equal(first, cb, sizeof first);
    agg_round_open(b, 5, live, 10, 2, 0);
    cb = agg_round_cohort(b, &nb);
    assert_memory_not_equal(first, cb, sizeof first);
    agg_round_destroy(&a);
    agg_round_destroy(&b);
}

static void test_uniform_enough(void **state)
{
    (void)state;
    int err = 0;
    agg_round_t *r = agg_round_new(S_N, &err);
    assert_non_null(r);
    uint8_t live[S_N];
    s_all_live(live, S_N);
    unsigned hits[S_N] = {0};
    const int rounds = 4000;
    for (int i = 1; i <= rounds; i++) {
        uint32_t n;
        agg_round_open(r, (uint64_t)i, live, 10, 3, 0);
        const uint32_t *c = agg_round_cohort(r, &n);
        for (uint32_t j = 0; j < n; j++)
            hits[c[j]]++;
    }
    /* each client is chosen with probability 0.1: 400 expected, sd about 19 */
    for (int k = 0; k < S_N; k++)
        assert_true(hits[k] > 300 && hits[k] < 500);
    agg_round_destroy(&r);
}

static void test_verdicts_and_completion(void **state)
{
    (void)state;
    int err = 0;
    agg_round_t *r = agg_round_new(S_N, &err);
    assert_non_null(r);
    uint8_t live[S_N];
    memset(live, 0, sizeof live);
    live[10] = live[20] = live[30] = 1;
    assert_int_equal(agg_round_open(r, 4, live, 3, 1, 0), 3);
    assert_int_equal(agg_round_check(r, 4, 10), AGG_ROUND_OK);
    assert_int_equal(agg_round_check(r, 3, 10), AGG_ROUND_CLOSED); /* another round */
    assert_int_equal(agg_round_check(r, 0, 10), AGG_ROUND_CLOSED); /* no round (async) */
    assert_int_equal(agg_round_check(r, 4, 11), AGG_ROUND_NOT_SELECTED);
    assert_int_equal(agg_round_check(r, 4, 100000), AGG_ROUND_NOT_SELECTED); /* out of range */
    assert_int_equal(agg_round_reported(r), 0);
    agg_round_mark(r, 10);
    assert_int_equal(agg_round_check(r, 4, 10), AGG_ROUND_REPEAT);
    agg_round_mark(r, 10); /* a repeat does not count twice */
    agg_round_mark(r, 11); /* nor a client outside the cohort */
    assert_int_equal(agg_round_reported(r), 1);
    assert_false(agg_round_complete(r));
    agg_round_mark(r, 20);
    agg_round_mark(r, 30);
    assert_int_equal(agg_round_reported(r), 3);
    assert_true(agg_round_complete(r));
    /* closed: everything is late, nothing counts */
    agg_round_close(r);
    assert_false(agg_round_is_open(r));
    assert_false(agg_round_complete(r));
    assert_int_equal(agg_round_reported(r), 0);
    uint32_t n = 99;
    agg_round_cohort(r, &n);
    assert_int_equal(n, 0);
    assert_int_equal(agg_round_check(r, 4, 20), AGG_ROUND_CLOSED);
    assert_int_equal(agg_round_number(r), 4); /* the last round's number stays */
    /* the next round starts clean: last round's reporters may be selected again */
    assert_int_equal(agg_round_open(r, 5, live, 3, 1, 0), 3);
    assert_int_equal(agg_round_check(r, 5, 10), AGG_ROUND_OK);
    assert_int_equal(agg_round_reported(r), 0);
    agg_round_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_selects_live_clients),
        cmocka_unit_test(test_seeded),
        cmocka_unit_test(test_uniform_enough),
        cmocka_unit_test(test_verdicts_and_completion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
