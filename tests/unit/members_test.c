/* members_test: the table of live trainers (shared/svc/fm_members.c) against the rules of
 * fm_members.h and docs/PROTOCOL.md §3.3: an entry is one incarnation (trainer, pid); a new
 * pid replaces it (restart); for the same incarnation a "seq" not greater than the last one
 * seen is stale and ignored (it refreshes nothing); BYE removes; an entry last seen before
 * now - timeout expires; "sent" and "busy" count only from HEARTBEAT. Every expected value
 * is written out by hand. Entries are observed through the expiry callback, the only place
 * the table shows them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_members.h"

static fm_wire_member_t s_msg(const char *trainer, uint32_t pid, uint64_t seq, uint32_t cfirst,
                              uint32_t ccount)
{
    fm_wire_member_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.trainer, sizeof m.trainer, "%s", trainer);
    m.pid = pid;
    m.seq = seq;
    m.client_first = cfirst;
    m.client_count = ccount;
    m.workers = 2;
    return m;
}

/* What fm_members_expire reported, in call order. */
typedef struct {
    int n;
    fm_member_t e[64];
} s_seen_t;

static void s_collect(void *arg, const fm_member_t *entry)
{
    s_seen_t *seen = arg;
    assert_true(seen->n < 64);
    seen->e[seen->n++] = *entry;
}

/* The entry of `trainer` among the ones collected, or NULL. */
static const fm_member_t *s_find(const s_seen_t *seen, const char *trainer)
{
    for (int i = 0; i < seen->n; i++)
        if (strcmp(seen->e[i].m.trainer, trainer) == 0)
            return &seen->e[i];
    return NULL;
}

/* Expire everything (now far in the future) and collect the entries. */
static void s_drain(fm_members_t *t, s_seen_t *seen)
{
    memset(seen, 0, sizeof *seen);
    int n = fm_members_count(t);
    assert_int_equal(fm_members_expire(t, 1e9, 1.0, s_collect, seen), n);
    assert_int_equal(seen->n, n);
    assert_int_equal(fm_members_count(t), 0);
}

static void test_new_destroy(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    assert_int_equal(fm_members_count(t), 0);
    assert_true(fm_members_clients(t) == 0);
    uint8_t mark[4] = {9, 9, 9, 9};
    assert_int_equal(fm_members_live_clients(t, 4, mark), 0);
    assert_memory_equal(mark, ((uint8_t[4]){0, 0, 0, 0}), 4);
    assert_int_equal(fm_members_expire(t, 100.0, 1.0, s_collect, NULL), 0);
    fm_members_destroy(&t);
    assert_null(t);
    fm_members_destroy(&t); /* idempotent */
    fm_members_destroy(NULL);
}

static void test_join_refresh_stale(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 100, 0, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 1.0, NULL), FM_MEMBER_JOINED);
    /* a HEARTBEAT from an unknown trainer (the receiver restarted) also joins */
    fm_wire_member_t b = s_msg("b", 200, 7, 10, 5);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 2);
    assert_true(fm_members_clients(t) == 15);

    /* same incarnation: seq 1 > 0 refreshes; 1 again, 0, are stale */
    a.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 2.0, NULL), FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 3.0, NULL), FM_MEMBER_STALE);
    a.seq = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 3.0, NULL), FM_MEMBER_STALE);
    /* a gap is fine (messages may be lost): only "greater" matters */
    a.seq = 50;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 4.0, NULL), FM_MEMBER_REFRESHED);
    a.seq = 49;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 5.0, NULL), FM_MEMBER_STALE);
    /* b: seq 7 seen, 7 is stale, 8 refreshes */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, 5.0, NULL), FM_MEMBER_STALE);
    b.seq = 8;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, 5.0, NULL), FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_count(t), 2);

    /* last_seen: a's last accepted message came at 4.0 (stale ones at 5.0 refresh nothing),
     * b's at 5.0; with timeout 1: at now 5.5 a (4.0 < 4.5) expires, b does not */
    s_seen_t seen = {0};
    assert_int_equal(fm_members_expire(t, 5.5, 1.0, s_collect, &seen), 1);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.e[0].m.trainer, "a");
    assert_true(seen.e[0].last_seen == 4.0);
    assert_true(seen.e[0].m.seq == 50);
    s_drain(t, &seen);
    assert_string_equal(seen.e[0].m.trainer, "b");
    assert_true(seen.e[0].last_seen == 5.0);
    assert_true(seen.e[0].m.seq == 8);
    fm_members_destroy(&t);
}

/* A stale message changes nothing in the entry, not even its counters. */
static void test_stale_changes_nothing(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 5, 0, 10);
    a.updates_sent = 30;
    a.busy = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 10.0, NULL), FM_MEMBER_JOINED);
    fm_wire_member_t old = s_msg("a", 1, 4, 50, 99); /* a reordered, older heartbeat */
    old.updates_sent = 3;
    old.busy = 0;
    old.workers = 8;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &old, 20.0, NULL), FM_MEMBER_STALE);
    assert_true(fm_members_clients(t) == 10);
    s_seen_t seen;
    s_drain(t, &seen);
    const fm_member_t *e = &seen.e[0];
    assert_true(e->last_seen == 10.0);
    assert_true(e->m.seq == 5 && e->m.updates_sent == 30 && e->m.busy == 2);
    assert_true(e->m.client_first == 0 && e->m.client_count == 10 && e->m.workers == 2);
    fm_members_destroy(&t);
}

/* HEARTBEAT carries "sent" and "busy"; a later HELLO of the same incarnation (reconnect)
 * does not (PROTOCOL.md: ignored in HELLO/BYE), so the entry keeps the heartbeat's, while
 * the other fields follow the newest message. */
static void test_counters_from_heartbeat(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 1.0, NULL), FM_MEMBER_JOINED);
    a.seq = 1;
    a.updates_sent = 12;
    a.busy = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 2.0, NULL), FM_MEMBER_REFRESHED);
    fm_wire_member_t h = s_msg("a", 1, 2, 20, 30); /* reconnect HELLO, new range */
    h.workers = 4;
    h.updates_sent = 999; /* to be ignored */
    h.busy = 77;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &h, 3.0, NULL), FM_MEMBER_REFRESHED);
    assert_true(fm_members_clients(t) == 30);
    s_seen_t seen;
    s_drain(t, &seen);
    const fm_member_t *e = &seen.e[0];
    assert_true(e->m.updates_sent == 12 && e->m.busy == 2);
    assert_true(e->m.seq == 2 && e->m.client_first == 20 && e->m.client_count == 30);
    assert_true(e->m.workers == 4 && e->last_seen == 3.0);
    fm_members_destroy(&t);
}

static void test_restart(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 100, 40, 0, 10);
    a.updates_sent = 500;
    a.busy = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, 1.0, NULL), FM_MEMBER_JOINED);
    /* the trainer restarts: new pid, seq from 0 again (lower than 40: still accepted) */
    fm_wire_member_t a2 = s_msg("a", 101, 0, 5, 20);
    uint32_t old_pid = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a2, 2.0, &old_pid), FM_MEMBER_RESTARTED);
    assert_int_equal(old_pid, 100);
    assert_int_equal(fm_members_count(t), 1);
    assert_true(fm_members_clients(t) == 20);
    /* the new incarnation's seq rule starts from its own 0 */
    a2.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a2, 3.0, NULL), FM_MEMBER_REFRESHED);
    /* old_pid may be NULL */
    fm_wire_member_t a3 = s_msg("a", 102, 0, 0, 3);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a3, 4.0, NULL), FM_MEMBER_RESTARTED);
    s_seen_t seen;
    s_drain(t, &seen);
    const fm_member_t *e = &seen.e[0];
    assert_int_equal(e->m.pid, 102);
    assert_true(e->m.seq == 0 && e->m.client_count == 3 && e->last_seen == 4.0);
    fm_members_destroy(&t);
}

static void test_bye(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10), b = s_msg("b", 2, 0, 10, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &b, 1.0, NULL), FM_MEMBER_JOINED);

    /* BYE of an unknown trainer, or of another incarnation of a known one */
    fm_wire_member_t x = s_msg("x", 1, 1, 0, 0);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &x, 2.0, NULL), FM_MEMBER_UNKNOWN_BYE);
    fm_wire_member_t a_other = s_msg("a", 9, 5, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &a_other, 2.0, NULL),
                     FM_MEMBER_UNKNOWN_BYE);
    assert_int_equal(fm_members_count(t), 2);
    /* a replayed BYE (seq not newer) is stale: the entry stays */
    fm_wire_member_t bye = a;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, 2.0, NULL), FM_MEMBER_STALE);
    assert_int_equal(fm_members_count(t), 2);
    bye.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, 2.0, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_count(t), 1);
    assert_true(fm_members_clients(t) == 10);
    /* and again: now unknown */
    bye.seq = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, 2.0, NULL), FM_MEMBER_UNKNOWN_BYE);
    /* it may come back (a new HELLO joins) */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 3.0, NULL), FM_MEMBER_JOINED);
    s_seen_t seen;
    s_drain(t, &seen);
    assert_non_null(s_find(&seen, "a"));
    assert_non_null(s_find(&seen, "b"));
    fm_members_destroy(&t);
}

/* "last seen before now - timeout_s" expires; exactly at the limit does not. The times are
 * exact binary fractions, so the arithmetic is exact. */
static void test_expire_boundary(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, 10.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_expire(t, 12.5, 2.5, NULL, NULL), 0); /* 10.0 == 12.5 - 2.5 */
    assert_int_equal(fm_members_count(t), 1);
    assert_int_equal(fm_members_expire(t, 10.0, 0.0, NULL, NULL), 0);  /* heard right now */
    assert_int_equal(fm_members_expire(t, 12.75, 2.5, NULL, NULL), 1); /* callback NULL */
    assert_int_equal(fm_members_count(t), 0);
    assert_int_equal(fm_members_expire(t, 100.0, 2.5, NULL, NULL), 0);
    fm_members_destroy(&t);
}

/* Many entries with interleaved ages: exactly the old ones expire, each reported once with
 * its own fields, and the survivors still answer to their own seq. */
static void test_expire_many(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    /* t00..t19; even ones last seen at 1.0, odd ones at 8.0, plus t05 and t06 refreshed
     * at 9.0: at now 10, timeout 5 (limit 5.0) the even ones but t06 expire */
    char name[16];
    for (uint32_t i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "t%02u", i);
        fm_wire_member_t m = s_msg(name, 1000 + i, 0, i * 10, 10);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, i % 2 ? 8.0 : 1.0, NULL),
                         FM_MEMBER_JOINED);
    }
    fm_wire_member_t m5 = s_msg("t05", 1005, 1, 50, 10), m6 = s_msg("t06", 1006, 1, 60, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m5, 9.0, NULL), FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m6, 9.0, NULL), FM_MEMBER_REFRESHED);
    s_seen_t seen = {0};
    assert_int_equal(fm_members_expire(t, 10.0, 5.0, s_collect, &seen), 9);
    assert_int_equal(seen.n, 9);
    for (uint32_t i = 0; i < 20; i += 2) {
        snprintf(name, sizeof name, "t%02u", i);
        const fm_member_t *e = s_find(&seen, name);
        if (i == 6) {
            assert_null(e);
            continue;
        }
        assert_non_null(e);
        assert_int_equal(e->m.pid, 1000 + i);
        assert_int_equal(e->m.client_first, i * 10);
        assert_true(e->last_seen == 1.0);
    }
    assert_int_equal(fm_members_count(t), 11);
    assert_true(fm_members_clients(t) == 110);
    /* the survivors keep their seq: 0 is stale for t06 (seq 1), new for an odd one (seq 0
     * seen: stale too), 1 refreshes t07 */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m6, 11.0, NULL), FM_MEMBER_STALE);
    fm_wire_member_t m7 = s_msg("t07", 1007, 0, 70, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m7, 11.0, NULL), FM_MEMBER_STALE);
    m7.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m7, 11.0, NULL),
                     FM_MEMBER_REFRESHED);
    /* and the expired ones join afresh */
    fm_wire_member_t m0 = s_msg("t00", 1000, 1, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m0, 11.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 12);
    fm_members_destroy(&t);
}

/* clients: the sum of ccount over live entries (overlaps counted twice); live_clients: the
 * distinct ids below num_clients. */
static void test_clients(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    /* a [0, 4), b [2, 6) (overlaps a on 2, 3), c [10, 13) (beyond num_clients 12 for id 12),
     * d ccount 0 (clients not fixed), e [100, 110) (all beyond) */
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 4), b = s_msg("b", 1, 0, 2, 4),
                     c = s_msg("c", 1, 0, 10, 3), d = s_msg("d", 1, 0, 7, 0),
                     e = s_msg("e", 1, 0, 100, 10);
    fm_members_apply(t, FM_WIRE_HELLO, &a, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &b, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &c, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &d, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &e, 0.0, NULL);
    assert_int_equal(fm_members_count(t), 5);
    assert_true(fm_members_clients(t) == 4 + 4 + 3 + 0 + 10);
    uint8_t mark[12];
    memset(mark, 7, sizeof mark);
    /* ids 0..5 (a and b), 10, 11 (c): 8 distinct */
    assert_int_equal(fm_members_live_clients(t, 12, mark), 8);
    const uint8_t want[12] = {1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1};
    assert_memory_equal(mark, want, 12);
    /* fewer clients than the ranges cover */
    uint8_t mark3[3];
    assert_int_equal(fm_members_live_clients(t, 3, mark3), 3);
    assert_memory_equal(mark3, ((uint8_t[3]){1, 1, 1}), 3);
    assert_int_equal(fm_members_live_clients(t, 0, mark3), 0); /* no client at all */
    /* a range ending at UINT32_MAX must not wrap around to the low ids */
    fm_wire_member_t f = s_msg("f", 1, 0, UINT32_MAX - 1, 5);
    fm_members_apply(t, FM_WIRE_HELLO, &f, 0.0, NULL);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 8);
    assert_memory_equal(mark, want, 12);
    assert_true(fm_members_clients(t) == 21 + 5);
    /* b leaves: 4, 5 are no longer served; the sum drops by 4 */
    b.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &b, 1.0, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 6);
    const uint8_t want2[12] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1};
    assert_memory_equal(mark, want2, 12);
    assert_true(fm_members_clients(t) == 22);
    /* a restart with another range replaces the old one */
    fm_wire_member_t a2 = s_msg("a", 2, 0, 6, 2);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a2, 1.0, NULL), FM_MEMBER_RESTARTED);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 4);
    const uint8_t want3[12] = {0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1};
    assert_memory_equal(mark, want3, 12);
    assert_true(fm_members_clients(t) == 20);
    fm_members_destroy(&t);
}

/* The table holds FM_MEMBERS_MAX trainers; one more is FULL (not registered), known ones
 * still refresh, and a slot freed by BYE or expiry takes a newcomer. */
static void test_full(void **state)
{
    fm_members_t *t = fm_members_new();
    assert_non_null(t);
    char name[32];
    for (int i = 0; i < FM_MEMBERS_MAX; i++) {
        snprintf(name, sizeof name, "trainer-%d", i);
        fm_wire_member_t m = s_msg(name, 1, 0, (uint32_t)i, 1);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, i == 0 ? 0.0 : 5.0, NULL),
                         FM_MEMBER_JOINED);
    }
    assert_int_equal(fm_members_count(t), FM_MEMBERS_MAX);
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX);
    fm_wire_member_t extra = s_msg("extra", 1, 0, 0, 100);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &extra, 5.0, NULL), FM_MEMBER_FULL);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &extra, 5.0, NULL), FM_MEMBER_FULL);
    assert_int_equal(fm_members_count(t), FM_MEMBERS_MAX);
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX);
    /* a BYE of the unregistered one: unknown */
    extra.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &extra, 5.0, NULL), FM_MEMBER_UNKNOWN_BYE);
    /* known trainers refresh and restart while full */
    fm_wire_member_t last = s_msg("trainer-4095", 1, 1, 4095, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &last, 6.0, NULL),
                     FM_MEMBER_REFRESHED);
    last.pid = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &last, 6.0, NULL), FM_MEMBER_RESTARTED);
    /* trainer-0 (last seen 0.0) expires: room for one */
    s_seen_t seen = {0};
    assert_int_equal(fm_members_expire(t, 5.5, 5.0, s_collect, &seen), 1);
    assert_string_equal(seen.e[0].m.trainer, "trainer-0");
    extra.seq = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &extra, 6.0, NULL), FM_MEMBER_JOINED);
    fm_wire_member_t more = s_msg("more", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &more, 6.0, NULL), FM_MEMBER_FULL);
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX - 1 + 100);
    fm_members_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_join_refresh_stale),
        cmocka_unit_test(test_stale_changes_nothing),
        cmocka_unit_test(test_counters_from_heartbeat),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_bye),
        cmocka_unit_test(test_expire_boundary),
        cmocka_unit_test(test_expire_many),
        cmocka_unit_test(test_clients),
        cmocka_unit_test(test_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
