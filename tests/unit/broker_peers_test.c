/* broker_peers_test: the broker's per-peer repeat rule (broker/broker_peers.c): the same
 * model to the same peer is a repeat within the window only, a newer model never is, peers
 * are told apart by every byte of their routing id, and the table stays at its cap by
 * forgetting the peer served longest ago. Links broker_lib. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "broker_peers.h"

static void test_repeat_window(void **state)
{
    (void)state;
    broker_peers_t *p = broker_peers_new(16, 1.0);
    assert_non_null(p);
    const unsigned char a[5] = {0, 0x80, 0, 0x41, 0xa7};        /* a libzmq-style routing id */
    assert_false(broker_peers_repeat(p, a, sizeof a, 1, 10.0)); /* unknown peer */
    assert_int_equal(broker_peers_mark(p, a, sizeof a, 1, 10.0), 0);
    assert_true(broker_peers_repeat(p, a, sizeof a, 1, 10.0));
    assert_true(broker_peers_repeat(p, a, sizeof a, 1, 10.999));
    assert_false(broker_peers_repeat(p, a, sizeof a, 1, 11.0)); /* the window passed */
    assert_false(broker_peers_repeat(p, a, sizeof a, 2, 10.5)); /* a newer model */
    /* sent again later: the window starts over */
    assert_int_equal(broker_peers_mark(p, a, sizeof a, 2, 10.5), 0);
    assert_true(broker_peers_repeat(p, a, sizeof a, 2, 11.4));
    assert_false(broker_peers_repeat(p, a, sizeof a, 1, 11.4)); /* the cache went back */
    assert_int_equal(broker_peers_size(p), 1);
    broker_peers_destroy(&p);
    broker_peers_destroy(&p);
    assert_null(p);
}

static void test_ids(void **state)
{
    (void)state;
    broker_peers_t *p = broker_peers_new(16, 1.0);
    assert_non_null(p);
    unsigned char a[255], b[255];
    memset(a, 0x11, sizeof a);
    memcpy(b, a, sizeof b);
    b[254] = 0x12; /* differs in the last byte only */
    assert_int_equal(broker_peers_mark(p, a, sizeof a, 7, 0.0), 0);
    assert_true(broker_peers_repeat(p, a, sizeof a, 7, 0.1));
    assert_false(broker_peers_repeat(p, b, sizeof b, 7, 0.1));
    assert_false(broker_peers_repeat(p, a, 254, 7, 0.1)); /* a prefix is another id */
    /* no id, or longer than ZeroMQ allows: never kept, never a repeat */
    unsigned char big[256] = {0};
    assert_int_equal(broker_peers_mark(p, a, 0, 7, 0.0), -EINVAL);
    assert_int_equal(broker_peers_mark(p, big, sizeof big, 7, 0.0), -EINVAL);
    assert_false(broker_peers_repeat(p, big, sizeof big, 7, 0.0));
    assert_int_equal(broker_peers_size(p), 1);
    /* forgotten (the peer disconnected): no longer a repeat */
    broker_peers_forget(p, b, sizeof b); /* unknown: nothing */
    assert_int_equal(broker_peers_size(p), 1);
    broker_peers_forget(p, a, sizeof a);
    assert_false(broker_peers_repeat(p, a, sizeof a, 7, 0.1));
    assert_int_equal(broker_peers_size(p), 0);
    broker_peers_destroy(&p);
}

static void test_cap(void **state)
{
    (void)state;
    enum { CAP = 8 };
    broker_peers_t *p = broker_peers_new(CAP, 100.0);
    assert_non_null(p);
    unsigned char id[4] = {0};
    /* peers 0..7 served at t = 10 + i, then peer 0 again (the most recent now) */
    for (uint32_t i = 0; i < CAP; i++) {
        memcpy(id, &i, sizeof id);
        assert_int_equal(broker_peers_mark(p, id, sizeof id, 1, 10.0 + i), 0);
    }
    uint32_t zero = 0;
    memcpy(id, &zero, sizeof id);
    assert_int_equal(broker_peers_mark(p, id, sizeof id, 1, 20.0), 0);
    assert_int_equal(broker_peers_size(p), CAP);
    assert_int_equal(broker_peers_evicted(p), 0);
    /* two new peers take the places of peers 1 and 2 (served longest ago) */
    for (uint32_t i = 100; i < 102; i++) {
        memcpy(id, &i, sizeof id);
        assert_int_equal(broker_peers_mark(p, id, sizeof id, 1, 30.0), 0);
    }
    assert_int_equal(broker_peers_size(p), CAP);
    assert_int_equal(broker_peers_evicted(p), 2);
    for (uint32_t i = 0; i < CAP; i++) {
        memcpy(id, &i, sizeof id);
        int kept = broker_peers_repeat(p, id, sizeof id, 1, 31.0);
        assert_int_equal(kept, i != 1 && i != 2);
    }
    /* many more peers than the cap: the table never grows beyond it */
    for (uint32_t i = 1000; i < 1000 + 50 * CAP; i++) {
        memcpy(id, &i, sizeof id);
        assert_int_equal(broker_peers_mark(p, id, sizeof id, 2, 40.0 + i), 0);
        assert_true(broker_peers_size(p) <= CAP);
    }
    assert_int_equal(broker_peers_evicted(p), 2 + 50 * CAP);
    broker_peers_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeat_window),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
