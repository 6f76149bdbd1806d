/* trainer_outbox_test: the trainer's store of unacknowledged UPDATEs
 * (trainer/trainer_outbox.c): keep, acknowledge, resend with back-off, all at once after an
 * aggregator restart, the memory bound, and concurrent puts. Links trainer_lib. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "trainer_outbox.h"

static void s_id(uint8_t id[FM_WIRE_ID_LEN], uint32_t i)
{
    memset(id, 0xa5, FM_WIRE_ID_LEN);
    memcpy(id, &i, sizeof i);
}

/* A recording sender: the first byte of each frame resent, or a full socket. */
typedef struct {
    unsigned char got[64];
    int n;
    int fail_after; /* < 0: never */
} s_sink_t;

static int s_send(void *arg, const void *frame, size_t len)
{
    s_sink_t *k = arg;
    if (k->fail_after >= 0 && k->n >= k->fail_after)
        return -1;
    assert_true(len >= 1);
    k->got[k->n++] = *(const unsigned char *)frame;
    return 0;
}

static void test_keep_ack_resend(void **state)
{
    int err = 0;
    trainer_outbox_t *o = trainer_outbox_new(1 << 20, 10.0, &err);
    assert_non_null(o);
    uint8_t id[FM_WIRE_ID_LEN], ids[3 * FM_WIRE_ID_LEN];
    unsigned char frame[100];
    for (uint32_t i = 0; i < 3; i++) { /* frames 'A', 'B', 'C' sent at t = 100 */
        s_id(id, i);
        memset(frame, 'A' + (int)i, sizeof frame);
        assert_int_equal(trainer_outbox_put(o, id, frame, sizeof frame, 100.0), 0);
    }
    trainer_outbox_stats_t st;
    trainer_outbox_stats(o, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.bytes, 300);
    s_sink_t k = {.fail_after = -1};
    /* nothing due before the timeout */
    assert_int_equal(trainer_outbox_resend(o, 109.9, 0, s_send, &k), 0);
    /* B acknowledged, plus an id that is not ours */
    s_id(ids, 1);
    s_id(ids + FM_WIRE_ID_LEN, 77);
    assert_int_equal(trainer_outbox_ack(o, ids, 2, 1, NULL), 1);
    assert_int_equal(trainer_outbox_ack(o, ids, 2, 1, NULL), 0); /* twice: once */
    /* due at 110: A and C, in send order */
    assert_int_equal(trainer_outbox_resend(o, 110.0, 0, s_send, &k), 2);
    assert_int_equal(k.n, 2);
    assert_int_equal(k.got[0], 'A');
    assert_int_equal(k.got[1], 'C');
    /* back-off: the next resend after 20 s, then 40, then 80 (8 timeouts), then 80 again */
    assert_int_equal(trainer_outbox_resend(o, 129.9, 0, s_send, &k), 0);
    assert_int_equal(trainer_outbox_resend(o, 130.0, 0, s_send, &k), 2);
    assert_int_equal(trainer_outbox_resend(o, 169.9, 0, s_send, &k), 0);
    assert_int_equal(trainer_outbox_resend(o, 170.0, 0, s_send, &k), 2);
    assert_int_equal(trainer_outbox_resend(o, 249.9, 0, s_send, &k), 0);
    assert_int_equal(trainer_outbox_resend(o, 250.0, 0, s_send, &k), 2);
    assert_int_equal(trainer_outbox_resend(o, 329.9, 0, s_send, &k), 0);
    assert_int_equal(trainer_outbox_resend(o, 330.0, 0, s_send, &k), 2);
    /* an aggregator restart: everything now, whatever is due */
    assert_int_equal(trainer_outbox_resend(o, 331.0, 1, s_send, &k), 2);
    /* a full socket stops the pass; what is left stays due */
    s_sink_t full = {.fail_after = 0};
    assert_int_equal(trainer_outbox_resend(o, 1000.0, 0, s_send, &full), 0);
    k.n = 0;
    assert_int_equal(trainer_outbox_resend(o, 1000.0, 0, s_send, &k), 2);
    /* A refused: counted apart */
    s_id(ids, 0);
    assert_int_equal(trainer_outbox_ack(o, ids, 1, 0, NULL), 1);
    trainer_outbox_stats(o, &st);
    assert_int_equal(st.kept, 3);
    assert_int_equal(st.acked, 1);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, 100);
    assert_int_equal(st.resent, 2 * 6 + 2);
    assert_int_equal(st.evicted, 0);
    trainer_outbox_destroy(&o);
    assert_null(o);
    trainer_outbox_destroy(&o);
}

/* The memory bound: the oldest go first; a frame larger than the bound is not kept. */
static void test_bound(void **state)
{
    trainer_outbox_t *o = trainer_outbox_new(250, 1.0, NULL);
    assert_non_null(o);
    uint8_t id[FM_WIRE_ID_LEN];
    unsigned char frame[300];
    memset(frame, 'x', sizeof frame);
    for (uint32_t i = 0; i < 2; i++) {
        s_id(id, i);
        assert_int_equal(trainer_outbox_put(o, id, frame, 100, 0.0), 0);
    }
    s_id(id, 2); /* 300 > 250: id 0 goes */
    assert_int_equal(trainer_outbox_put(o, id, frame, 100, 0.0), 1);
    s_id(id, 3); /* larger than the bound alone */
    assert_int_equal(trainer_outbox_put(o, id, frame, 300, 0.0), 1);
    trainer_outbox_stats_t st;
    trainer_outbox_stats(o, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.bytes, 200);
    assert_int_equal(st.evicted, 2);
    uint8_t ids[4 * FM_WIRE_ID_LEN];
    for (uint32_t i = 0; i < 4; i++)
        s_id(ids + i * FM_WIRE_ID_LEN, i);
    uint8_t found[4];
    assert_int_equal(trainer_outbox_ack(o, ids, 4, 1, found), 2); /* only 1 and 2 were kept */
    assert_true(!found[0] && found[1] && found[2] && !found[3]);
    /* a reloaded timeout applies to new entries */
    trainer_outbox_set_timeout(o, 5.0);
    s_id(id, 9);
    assert_int_equal(trainer_outbox_put(o, id, frame, 10, 50.0), 0);
    s_sink_t k = {.fail_after = -1};
    assert_int_equal(trainer_outbox_resend(o, 54.9, 0, s_send, &k), 0);
    assert_int_equal(trainer_outbox_resend(o, 55.0, 0, s_send, &k), 1);
    trainer_outbox_destroy(&o);
}

/* Workers put while the main thread acknowledges: every id ends up acknowledged once. */
typedef struct {
    trainer_outbox_t *o;
    uint32_t first;
} s_worker_t;

static void *s_putter(void *arg)
{
    s_worker_t *w = arg;
    uint8_t id[FM_WIRE_ID_LEN];
    unsigned char frame[64] = {0};
    for (uint32_t i = 0; i < 2000; i++) {
        s_id(id, w->first + i);
        assert_int_equal(trainer_outbox_put(w->o, id, frame, sizeof frame, 0.0), 0);
    }
    return NULL;
}

static void test_threads(void **state)
{
    trainer_outbox_t *o = trainer_outbox_new(64 << 20, 1.0, NULL);
    assert_non_null(o);
    pthread_t t[2];
    s_worker_t w[2] = {{o, 0}, {o, 100000}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, s_putter, &w[i]), 0);
    size_t acked = 0;
    uint8_t id[FM_WIRE_ID_LEN];
    for (int pass = 0; pass < 2 && acked < 4000; pass++)
        for (uint32_t i = 0; i < 2000; i++)
            for (int j = 0; j < 2; j++) {
                s_id(id, w[j].first + i);
                acked += trainer_outbox_ack(o, id, 1, 1, NULL);
            }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (uint32_t i = 0; i < 2000; i++) /* whatever raced ahead of the puts */
        for (int j = 0; j < 2; j++) {
            s_id(id, w[j].first + i);
            acked += trainer_outbox_ack(o, id, 1, 1, NULL);
        }
    assert_int_equal(acked, 4000);
    trainer_outbox_stats_t st;
    trainer_outbox_stats(o, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.acked, 4000);
    trainer_outbox_destroy(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_ack_resend),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
