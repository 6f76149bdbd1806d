/* aggregator_idset_test: the window of recent update ids (aggregator/aggregator_idset.c).
 * Links aggregator_lib (the CMakeLists.txt rule for aggregator_*_test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aggregator_idset.h"

static void s_id(uint8_t id[FM_WIRE_ID_LEN], uint32_t i)
{
    memset(id, 0, FM_WIRE_ID_LEN);
    /* low-entropy ids on purpose: the hash must still spread them */
    memcpy(id + 12, &i, sizeof i);
}

static void test_basic(void **state)
{
    int err = 0;
    assert_null(agg_idset_new(0, &err));
    assert_int_equal(err, FM_EARG);
    agg_idset_t *s = agg_idset_new(4, &err);
    assert_non_null(s);
    uint8_t id[FM_WIRE_ID_LEN];
    for (uint32_t i = 0; i < 4; i++) {
        s_id(id, i);
        assert_false(agg_idset_contains(s, id));
        agg_idset_add(s, id);
        assert_true(agg_idset_contains(s, id));
    }
    assert_int_equal(agg_idset_count(s), 4);
    s_id(id, 4); /* window full: 0 is forgotten */
    agg_idset_add(s, id);
    assert_int_equal(agg_idset_count(s), 4);
    s_id(id, 0);
    assert_false(agg_idset_contains(s, id));
    for (uint32_t i = 1; i <= 4; i++) {
        s_id(id, i);
        assert_true(agg_idset_contains(s, id));
    }
    agg_idset_destroy(&s);
    assert_null(s);
    agg_idset_destroy(&s);
}

/* Many evictions through a table with collisions: exactly the last cap ids are members. */
static void test_window(void **state)
{
    const size_t cap = 1000;
    agg_idset_t *s = agg_idset_new(cap, NULL);
    assert_non_null(s);
    uint8_t id[FM_WIRE_ID_LEN];
    const uint32_t total = 25000;
    for (uint32_t i = 0; i < total; i++) {
        uint8_t r[FM_WIRE_ID_LEN];
        s_id(r, i);
        r[0] = (uint8_t)(i * 37); /* vary the hashed bytes a little */
        agg_idset_add(s, r);
    }
    for (uint32_t i = 0; i < total; i++) {
        s_id(id, i);
        id[0] = (uint8_t)(i * 37);
        assert_int_equal(agg_idset_contains(s, id), i >= total - cap);
    }
    agg_idset_destroy(&s);
}

static void test_dump_load(void **state)
{
    agg_idset_t *s = agg_idset_new(8, NULL), *t = agg_idset_new(8, NULL);
    assert_non_null(s);
    assert_non_null(t);
    uint8_t id[FM_WIRE_ID_LEN], blob[8 * FM_WIRE_ID_LEN];
    for (uint32_t i = 0; i < 11; i++) {
        s_id(id, i);
        agg_idset_add(s, id);
    }
    /* ids 3..10 in the window; leave out the newest 2 (an open buffer) */
    size_t n = agg_idset_dump(s, 2, blob);
    assert_int_equal(n, 6);
    s_id(id, 3);
    assert_memory_equal(blob, id, FM_WIRE_ID_LEN);
    assert_int_equal(agg_idset_load(t, blob, n * FM_WIRE_ID_LEN), 0);
    assert_int_equal(agg_idset_count(t), 6);
    for (uint32_t i = 0; i < 11; i++) {
        s_id(id, i);
        assert_int_equal(agg_idset_contains(t, id), i >= 3 && i <= 8);
    }
    assert_int_equal(agg_idset_load(t, blob, 5), FM_EFORMAT);
    assert_int_equal(agg_idset_dump(s, 100, blob), 0);
    agg_idset_destroy(&s);
    agg_idset_destroy(&t);
}

/* Sequence numbers across wrap-around: find gives each id's seq, range reads back exactly
 * the ids of a seq interval still in the window, pop_newest forgets the newest ids and
 * hands their numbers out again. */
static void test_seq_range_pop(void **state)
{
    agg_idset_t *s = agg_idset_new(8, NULL);
    assert_non_null(s);
    uint8_t id[FM_WIRE_ID_LEN], out[16 * FM_WIRE_ID_LEN];
    uint64_t seq = 99;
    for (uint32_t i = 0; i < 13; i++) { /* ids 0..12 got seq 0..12; the window: 5..12 */
        s_id(id, i);
        assert_int_equal(agg_idset_next_seq(s), i);
        agg_idset_add(s, id);
    }
    assert_int_equal(agg_idset_next_seq(s), 13);
    for (uint32_t i = 0; i < 13; i++) {
        s_id(id, i);
        assert_int_equal(agg_idset_find(s, id, &seq), i >= 5);
        if (i >= 5)
            assert_int_equal(seq, i);
    }
    /* [2, 9): 2..4 forgotten, 5..8 read in order */
    assert_int_equal(agg_idset_range(s, 2, 9, out), 4);
    for (uint32_t k = 0; k < 4; k++) {
        s_id(id, 5 + k);
        assert_memory_equal(out + k * FM_WIRE_ID_LEN, id, FM_WIRE_ID_LEN);
    }
    assert_int_equal(agg_idset_range(s, 11, 100, out), 2);
    assert_int_equal(agg_idset_range(s, 9, 9, out), 0);
    /* the newest 3 (10, 11, 12) were not applied after all */
    assert_int_equal(agg_idset_pop_newest(s, 3, out), 3);
    for (uint32_t k = 0; k < 3; k++) {
        s_id(id, 10 + k);
        assert_memory_equal(out + k * FM_WIRE_ID_LEN, id, FM_WIRE_ID_LEN);
        assert_false(agg_idset_contains(s, id));
    }
    assert_int_equal(agg_idset_count(s), 5);
    assert_int_equal(agg_idset_next_seq(s), 10);
    s_id(id, 9);
    assert_true(agg_idset_find(s, id, &seq));
    assert_int_equal(seq, 9);
    s_id(id, 100); /* takes seq 10 again */
    agg_idset_add(s, id);
    assert_true(agg_idset_find(s, id, &seq));
    assert_int_equal(seq, 10);
    assert_int_equal(agg_idset_pop_newest(s, 100, NULL), 6); /* at most count */
    assert_int_equal(agg_idset_count(s), 0);
    assert_int_equal(agg_idset_next_seq(s), 5);
    for (uint32_t i = 0; i < 20; i++) {
        s_id(id, i);
        assert_false(agg_idset_contains(s, id));
    }
    agg_idset_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_dump_load),
        cmocka_unit_test(test_seq_range_pop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
