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
#include "fm_metrics.h"

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
    fm_members_t *t = fm_members_new(NULL);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 100, 0, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 1.0, NULL), FM_MEMBER_JOINED);
    /* a HEARTBEAT from an unknown trainer (the receiver restarted) also joins */
    fm_wire_member_t b = s_msg("b", 200, 7, 10, 5);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, NULL, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 2);
    assert_true(fm_members_clients(t) == 15);

    /* same incarnation: seq 1 > 0 refreshes; 1 again, 0, are stale */
    a.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 2.0, NULL),
                     FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 3.0, NULL),
                     FM_MEMBER_STALE);
    a.seq = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 3.0, NULL), FM_MEMBER_STALE);
    /* a gap is fine (messages may be lost): only "greater" matters */
    a.seq = 50;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 4.0, NULL),
                     FM_MEMBER_REFRESHED);
    a.seq = 49;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 5.0, NULL),
                     FM_MEMBER_STALE);
    /* b: seq 7 seen, 7 is stale, 8 refreshes */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, NULL, 5.0, NULL),
                     FM_MEMBER_STALE);
    b.seq = 8;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, NULL, 5.0, NULL),
                     FM_MEMBER_REFRESHED);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 5, 0, 10);
    a.updates_sent = 30;
    a.busy = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 10.0, NULL),
                     FM_MEMBER_JOINED);
    fm_wire_member_t old = s_msg("a", 1, 4, 50, 99); /* a reordered, older heartbeat */
    old.updates_sent = 3;
    old.busy = 0;
    old.workers = 8;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &old, NULL, 20.0, NULL),
                     FM_MEMBER_STALE);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 1.0, NULL), FM_MEMBER_JOINED);
    a.seq = 1;
    a.updates_sent = 12;
    a.busy = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 2.0, NULL),
                     FM_MEMBER_REFRESHED);
    fm_wire_member_t h = s_msg("a", 1, 2, 20, 30); /* reconnect HELLO, new range */
    h.workers = 4;
    h.updates_sent = 999; /* to be ignored */
    h.busy = 77;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &h, NULL, 3.0, NULL),
                     FM_MEMBER_REFRESHED);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 100, 40, 0, 10);
    a.updates_sent = 500;
    a.busy = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, NULL, 1.0, NULL),
                     FM_MEMBER_JOINED);
    /* the trainer restarts: new pid, seq from 0 again (lower than 40: still accepted) */
    fm_wire_member_t a2 = s_msg("a", 101, 0, 5, 20);
    uint32_t old_pid = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a2, NULL, 2.0, &old_pid),
                     FM_MEMBER_RESTARTED);
    assert_int_equal(old_pid, 100);
    assert_int_equal(fm_members_count(t), 1);
    assert_true(fm_members_clients(t) == 20);
    /* the new incarnation's seq rule starts from its own 0 */
    a2.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a2, NULL, 3.0, NULL),
                     FM_MEMBER_REFRESHED);
    /* old_pid may be NULL */
    fm_wire_member_t a3 = s_msg("a", 102, 0, 0, 3);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a3, NULL, 4.0, NULL),
                     FM_MEMBER_RESTARTED);
    s_seen_t seen;
    s_drain(t, &seen);
    const fm_member_t *e = &seen.e[0];
    assert_int_equal(e->m.pid, 102);
    assert_true(e->m.seq == 0 && e->m.client_count == 3 && e->last_seen == 4.0);
    fm_members_destroy(&t);
}

static void test_bye(void **state)
{
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10), b = s_msg("b", 2, 0, 10, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &b, NULL, 1.0, NULL), FM_MEMBER_JOINED);

    /* BYE of an unknown trainer, or of another incarnation of a known one */
    fm_wire_member_t x = s_msg("x", 1, 1, 0, 0);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &x, NULL, 2.0, NULL),
                     FM_MEMBER_UNKNOWN_BYE);
    fm_wire_member_t a_other = s_msg("a", 9, 5, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &a_other, NULL, 2.0, NULL),
                     FM_MEMBER_UNKNOWN_BYE);
    assert_int_equal(fm_members_count(t), 2);
    /* a replayed BYE (seq not newer) is stale: the entry stays */
    fm_wire_member_t bye = a;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, NULL, 2.0, NULL), FM_MEMBER_STALE);
    assert_int_equal(fm_members_count(t), 2);
    bye.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, NULL, 2.0, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_count(t), 1);
    assert_true(fm_members_clients(t) == 10);
    /* and again: now unknown */
    bye.seq = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, NULL, 2.0, NULL),
                     FM_MEMBER_UNKNOWN_BYE);
    /* it may come back (a new HELLO joins) */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 3.0, NULL), FM_MEMBER_JOINED);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 10.0, NULL), FM_MEMBER_JOINED);
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
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    /* t00..t19; even ones last seen at 1.0, odd ones at 8.0, plus t05 and t06 refreshed
     * at 9.0: at now 10, timeout 5 (limit 5.0) the even ones but t06 expire */
    char name[16];
    for (uint32_t i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "t%02u", i);
        fm_wire_member_t m = s_msg(name, 1000 + i, 0, i * 10, 10);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, NULL, i % 2 ? 8.0 : 1.0, NULL),
                         FM_MEMBER_JOINED);
    }
    fm_wire_member_t m5 = s_msg("t05", 1005, 1, 50, 10), m6 = s_msg("t06", 1006, 1, 60, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m5, NULL, 9.0, NULL),
                     FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m6, NULL, 9.0, NULL),
                     FM_MEMBER_REFRESHED);
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
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m6, NULL, 11.0, NULL),
                     FM_MEMBER_STALE);
    fm_wire_member_t m7 = s_msg("t07", 1007, 0, 70, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m7, NULL, 11.0, NULL),
                     FM_MEMBER_STALE);
    m7.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m7, NULL, 11.0, NULL),
                     FM_MEMBER_REFRESHED);
    /* and the expired ones join afresh */
    fm_wire_member_t m0 = s_msg("t00", 1000, 1, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m0, NULL, 11.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 12);
    fm_members_destroy(&t);
}

/* clients: the distinct ids of the live entries' ranges (overlaps counted once, ranges cut at
 * 2^32); live_clients: the distinct ids below num_clients. */
static void test_clients(void **state)
{
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    /* a [0, 4), b [2, 6) (overlaps a on 2, 3), c [10, 13) (beyond num_clients 12 for id 12),
     * d ccount 0 (clients not fixed), e [100, 110) (all beyond) */
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 4), b = s_msg("b", 1, 0, 2, 4),
                     c = s_msg("c", 1, 0, 10, 3), d = s_msg("d", 1, 0, 7, 0),
                     e = s_msg("e", 1, 0, 100, 10);
    fm_members_apply(t, FM_WIRE_HELLO, &a, NULL, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &b, NULL, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &c, NULL, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &d, NULL, 0.0, NULL);
    fm_members_apply(t, FM_WIRE_HELLO, &e, NULL, 0.0, NULL);
    assert_int_equal(fm_members_count(t), 5);
    assert_true(fm_members_clients(t) == 6 + 3 + 0 + 10); /* [0, 6), [10, 13), [100, 110) */
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
    fm_members_apply(t, FM_WIRE_HELLO, &f, NULL, 0.0, NULL);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 8);
    assert_memory_equal(mark, want, 12);
    assert_true(fm_members_clients(t) == 19 + 2); /* f: 2^32 - 2 and 2^32 - 1 only */
    /* b leaves: 4, 5 are no longer served */
    b.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &b, NULL, 1.0, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 6);
    const uint8_t want2[12] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1};
    assert_memory_equal(mark, want2, 12);
    assert_true(fm_members_clients(t) == 4 + 3 + 10 + 2);
    /* a restart with another range replaces the old one */
    fm_wire_member_t a2 = s_msg("a", 2, 0, 6, 2);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a2, NULL, 1.0, NULL),
                     FM_MEMBER_RESTARTED);
    assert_int_equal(fm_members_live_clients(t, 12, mark), 4);
    const uint8_t want3[12] = {0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1};
    assert_memory_equal(mark, want3, 12);
    assert_true(fm_members_clients(t) == 2 + 3 + 10 + 2);
    fm_members_destroy(&t);
}

/* The table holds FM_MEMBERS_MAX trainers; one more is FULL (not registered), known ones
 * still refresh, and a slot freed by BYE or expiry takes a newcomer. */
static void test_full(void **state)
{
    fm_members_t *t = fm_members_new(NULL);
    assert_non_null(t);
    char name[32];
    for (int i = 0; i < FM_MEMBERS_MAX; i++) {
        snprintf(name, sizeof name, "trainer-%d", i);
        fm_wire_member_t m = s_msg(name, 1, 0, (uint32_t)i, 1);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &m, NULL, i == 0 ? 0.0 : 5.0, NULL),
                         FM_MEMBER_JOINED);
    }
    assert_int_equal(fm_members_count(t), FM_MEMBERS_MAX);
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX);
    fm_wire_member_t extra = s_msg("extra", 1, 0, 0, 100);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &extra, NULL, 5.0, NULL), FM_MEMBER_FULL);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &extra, NULL, 5.0, NULL),
                     FM_MEMBER_FULL);
    assert_int_equal(fm_members_count(t), FM_MEMBERS_MAX);
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX);
    /* a BYE of the unregistered one: unknown */
    extra.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &extra, NULL, 5.0, NULL),
                     FM_MEMBER_UNKNOWN_BYE);
    /* known trainers refresh and restart while full */
    fm_wire_member_t last = s_msg("trainer-4095", 1, 1, 4095, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &last, NULL, 6.0, NULL),
                     FM_MEMBER_REFRESHED);
    last.pid = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &last, NULL, 6.0, NULL),
                     FM_MEMBER_RESTARTED);
    /* trainer-0 (last seen 0.0) expires: room for one */
    s_seen_t seen = {0};
    assert_int_equal(fm_members_expire(t, 5.5, 5.0, s_collect, &seen), 1);
    assert_string_equal(seen.e[0].m.trainer, "trainer-0");
    extra.seq = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &extra, NULL, 6.0, NULL),
                     FM_MEMBER_JOINED);
    fm_wire_member_t more = s_msg("more", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &more, NULL, 6.0, NULL), FM_MEMBER_FULL);
    /* trainer-1..4095 serve 1..4095, extra [0, 100) adds 0 */
    assert_true(fm_members_clients(t) == FM_MEMBERS_MAX);
    fm_members_destroy(&t);
}

/* ---- bounds: per origin, foreign ids, client ranges (fm_members.h, "Membership comes from
 * anyone") ---------------------------------------------------------------------------------- */

static const fm_member_origin_t s_p1 = {.peer = "10.0.0.1"}, s_p2 = {.peer = "10.0.0.2"};

/* An origin holds at most per_origin entries: newcomers beyond it are refused and counted,
 * its known trainers still refresh and restart, another origin is not blocked, and a slot
 * freed by BYE or expiry (or a raised limit) takes a newcomer again. */
static void test_share(void **state)
{
    fm_members_limits_t lim = {.num_clients = 100, .per_origin = 3};
    fm_members_t *t = fm_members_new(&lim);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10), b = s_msg("b", 1, 0, 10, 10),
                     c = s_msg("c", 1, 0, 20, 10), d = s_msg("d", 1, 0, 30, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, &s_p1, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &b, &s_p1, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &c, &s_p1, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &d, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_SHARE);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &d, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_SHARE);
    assert_int_equal(fm_members_count(t), 3);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_SHARE) == 2);
    /* known ones of the full origin refresh and restart */
    a.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &s_p1, 2.0, NULL),
                     FM_MEMBER_REFRESHED);
    fm_wire_member_t a2 = s_msg("a", 2, 0, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a2, &s_p1, 2.0, NULL),
                     FM_MEMBER_RESTARTED);
    /* another origin is not blocked; a flood of 100 ids from it fills its own share only */
    fm_wire_member_t x = s_msg("x", 1, 0, 40, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &x, &s_p2, 2.0, NULL), FM_MEMBER_JOINED);
    int joined = 0, refused = 0;
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof name, "flood-%d", i);
        fm_wire_member_t f = s_msg(name, 9, 0, (uint32_t)i, 1);
        fm_member_event_t ev = fm_members_apply(t, FM_WIRE_HEARTBEAT, &f, &s_p2, 3.0, NULL);
        joined += ev == FM_MEMBER_JOINED;
        refused += ev == FM_MEMBER_REFUSED_SHARE;
    }
    assert_int_equal(joined, 2);
    assert_int_equal(refused, 98);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_SHARE) == 2 + 98);
    assert_int_equal(fm_members_count(t), 6);
    /* every entry of p1 is still there and still answers to its seq */
    a2.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a2, &s_p1, 4.0, NULL),
                     FM_MEMBER_REFRESHED);
    b.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &b, &s_p1, 4.0, NULL),
                     FM_MEMBER_REFRESHED);
    c.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &c, &s_p1, 4.0, NULL),
                     FM_MEMBER_REFRESHED);
    /* a BYE frees a slot of p1: d joins */
    b.seq = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &b, &s_p1, 5.0, NULL), FM_MEMBER_LEFT);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &d, &s_p1, 5.0, NULL), FM_MEMBER_JOINED);
    /* a lower limit refuses newcomers and evicts nobody; a higher one admits them */
    lim.per_origin = 1;
    fm_members_set_limits(t, &lim);
    fm_wire_member_t e = s_msg("e", 1, 0, 50, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &e, &s_p1, 5.0, NULL),
                     FM_MEMBER_REFUSED_SHARE);
    d.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &d, &s_p1, 5.0, NULL),
                     FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_count(t), 6);
    lim.per_origin = 4;
    fm_members_set_limits(t, &lim);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &e, &s_p1, 5.0, NULL), FM_MEMBER_JOINED);
    /* expiry frees slots: p2's flood entries (last seen 3.0) go, x (2.0) too */
    assert_int_equal(fm_members_expire(t, 4.5, 1.0, NULL, NULL), 3);
    fm_wire_member_t y = s_msg("y", 1, 0, 60, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &y, &s_p2, 6.0, NULL), FM_MEMBER_JOINED);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_SHARE) == 101);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_CLIENTS) == 0);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_FOREIGN) == 0);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_FULL) == 0);
    fm_members_destroy(&t);
}

/* A live entry belongs to its origin: no message from another origin (refresh, restart,
 * BYE) changes it; the id is free for another origin only once the entry is gone. NULL
 * origin, a NULL peer and "" are the same (unknown) origin. */
static void test_foreign(void **state)
{
    fm_members_limits_t lim = {.num_clients = 100, .per_origin = 8};
    fm_members_t *t = fm_members_new(&lim);
    assert_non_null(t);
    fm_wire_member_t a = s_msg("a", 7, 3, 0, 10);
    a.updates_sent = 5;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &s_p1, 1.0, NULL),
                     FM_MEMBER_JOINED);
    fm_wire_member_t fake = s_msg("a", 7, 4, 50, 50); /* newer seq, same pid */
    fake.updates_sent = 999;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &fake, &s_p2, 2.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    fake.pid = 8; /* a "restart" */
    uint32_t old = 0;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &fake, &s_p2, 2.0, &old),
                     FM_MEMBER_REFUSED_FOREIGN);
    assert_int_equal(old, 0);
    fm_wire_member_t bye = s_msg("a", 7, 9, 0, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, &s_p2, 2.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    assert_int_equal(fm_members_apply(t, FM_WIRE_BYE, &bye, NULL, 2.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_FOREIGN) == 4);
    assert_int_equal(fm_members_count(t), 1);
    s_seen_t seen;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(fm_members_expire(t, 1.5, 1.0, s_collect, &seen), 0);
    /* untouched: the first message's fields and time */
    assert_int_equal(fm_members_expire(t, 2.5, 1.0, s_collect, &seen), 1);
    assert_int_equal(seen.e[0].m.pid, 7);
    assert_true(seen.e[0].m.seq == 3 && seen.e[0].m.updates_sent == 5);
    assert_true(seen.e[0].m.client_first == 0 && seen.e[0].last_seen == 1.0);
    /* gone: the id may join from anywhere, e.g. the unknown origin */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &fake, NULL, 3.0, NULL),
                     FM_MEMBER_JOINED);
    fm_member_origin_t nopeer = {.peer = NULL}, empty = {.peer = ""};
    fake.seq = 5;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &fake, &nopeer, 3.0, NULL),
                     FM_MEMBER_REFRESHED);
    fake.seq = 6;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &fake, &empty, 3.0, NULL),
                     FM_MEMBER_REFRESHED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &fake, &s_p1, 3.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    fm_members_destroy(&t);
}

/* With an identity (an authenticated key), the entry is bound to the identity, not to the
 * peer: the same key from another address is the same origin, the same address without
 * the key is another one, and the share counts per identity. */
static void test_identity(void **state)
{
    fm_members_limits_t lim = {.num_clients = 100, .per_origin = 2};
    fm_members_t *t = fm_members_new(&lim);
    assert_non_null(t);
    fm_member_origin_t k1 = {.peer = "10.0.0.1", .identity = "KEY1"},
                       k1_moved = {.peer = "10.0.0.9", .identity = "KEY1"},
                       k2 = {.peer = "10.0.0.1", .identity = "KEY2"},
                       peer_named_key = {.peer = "KEY1"};
    fm_wire_member_t a = s_msg("a", 1, 0, 0, 10), b = s_msg("b", 1, 0, 10, 10),
                     c = s_msg("c", 1, 0, 20, 10);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &a, &k1, 1.0, NULL), FM_MEMBER_JOINED);
    a.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &k1_moved, 1.0, NULL),
                     FM_MEMBER_REFRESHED);
    a.seq = 2;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &k2, 1.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &a, &peer_named_key, 1.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN); /* a peer string is never an identity */
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &b, &k1_moved, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &c, &k1, 1.0, NULL),
                     FM_MEMBER_REFUSED_SHARE);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &c, &k2, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_count(t), 3);
    fm_members_destroy(&t);
}

/* Client ranges: within [0, num_clients) and within an identity's enrolled range, else
 * refused (and the refused message changes nothing, its seq included); ccount 0 always
 * passes; the distinct count never exceeds num_clients however many trainers overlap. */
static void test_client_bounds(void **state)
{
    fm_members_limits_t lim = {.num_clients = 20, .per_origin = FM_MEMBERS_MAX};
    fm_members_t *t = fm_members_new(&lim);
    assert_non_null(t);
    fm_wire_member_t ok1 = s_msg("ok1", 1, 0, 0, 20), ok2 = s_msg("ok2", 1, 0, 19, 1),
                     none = s_msg("none", 1, 0, 4000000000u, 0),
                     over = s_msg("over", 1, 0, 19, 2), far = s_msg("far", 1, 0, 20, 1),
                     wrap = s_msg("wrap", 1, 0, UINT32_MAX, 5),
                     huge = s_msg("huge", 1, 0, 0, 4095000020u);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &ok1, &s_p1, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &ok2, &s_p1, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &none, &s_p1, 1.0, NULL),
                     FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &over, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &far, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &wrap, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &huge, &s_p1, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    /* a known trainer claiming an impossible range: refused, entry unchanged, seq unused */
    fm_wire_member_t bad = s_msg("ok1", 1, 1, 0, 21);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &bad, &s_p1, 2.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    ok1.seq = 1;
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &ok1, &s_p1, 2.0, NULL),
                     FM_MEMBER_REFRESHED);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_CLIENTS) == 5);
    assert_int_equal(fm_members_count(t), 3);
    /* 1,000 more trainers over the same 20 clients: still 20 */
    for (int i = 0; i < 1000; i++) {
        char name[16];
        snprintf(name, sizeof name, "dup-%d", i);
        fm_wire_member_t m = s_msg(name, 1, 0, (uint32_t)(i % 20), (uint32_t)(20 - i % 20));
        assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &m, &s_p2, 1.0, NULL),
                         FM_MEMBER_JOINED);
    }
    assert_true(fm_members_clients(t) == 20);
    uint8_t mark[20];
    assert_int_equal(fm_members_live_clients(t, 20, mark), 20);
    fm_members_destroy(&t);

    /* an enrolled identity: its range must lie within [10, 15) */
    t = fm_members_new(&lim);
    assert_non_null(t);
    fm_member_origin_t k = {
        .identity = "KEY", .has_enrolled = 1, .enrolled_first = 10, .enrolled_count = 5};
    fm_wire_member_t in = s_msg("in", 1, 0, 10, 5), zero = s_msg("zero", 1, 0, 0, 0),
                     low = s_msg("low", 1, 0, 9, 2), high = s_msg("high", 1, 0, 14, 2);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &in, &k, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &zero, &k, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &low, &k, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &high, &k, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS);
    assert_true(fm_members_clients(t) == 5);
    fm_members_destroy(&t);
}

/* The refusal counters on /metrics: one series per reason, from the counts so far, each
 * incremented with its fm_members_refused count. */
static void test_metrics(void **state)
{
    fm_members_limits_t lim = {.num_clients = 10, .per_origin = FM_MEMBERS_MAX};
    fm_members_t *t = fm_members_new(&lim);
    assert_non_null(t);
    fm_wire_member_t over = s_msg("over", 1, 0, 5, 6);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &over, NULL, 1.0, NULL),
                     FM_MEMBER_REFUSED_CLIENTS); /* before the registration: carried over */
    int err = 0;
    fm_metrics_t *m = fm_metrics_new(&err);
    assert_non_null(m);
    assert_int_equal(fm_members_metrics(t, m), 0);
    assert_int_equal(fm_members_metrics(t, NULL), 0); /* no registry: no series */
    assert_int_equal(fm_members_metrics(t, m), 0);    /* the same handles again */
    /* a share of 1: the second id of p2 is refused; then the table fills up */
    lim.per_origin = 1;
    fm_members_set_limits(t, &lim);
    fm_wire_member_t s1 = s_msg("s1", 1, 0, 0, 1), s2 = s_msg("s2", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &s1, &s_p2, 1.0, NULL), FM_MEMBER_JOINED);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HELLO, &s2, &s_p2, 1.0, NULL),
                     FM_MEMBER_REFUSED_SHARE);
    lim.per_origin = FM_MEMBERS_MAX;
    fm_members_set_limits(t, &lim);
    char name[32];
    for (int i = 0; i < FM_MEMBERS_MAX - 1; i++) {
        snprintf(name, sizeof name, "t%d", i);
        fm_wire_member_t x = s_msg(name, 1, 0, 0, 1);
        assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &x, &s_p1, 1.0, NULL),
                         FM_MEMBER_JOINED);
    }
    fm_wire_member_t more = s_msg("more", 1, 0, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &more, &s_p2, 1.0, NULL),
                     FM_MEMBER_FULL);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &more, &s_p1, 1.0, NULL),
                     FM_MEMBER_FULL);
    fm_wire_member_t t0 = s_msg("t0", 1, 5, 0, 1);
    assert_int_equal(fm_members_apply(t, FM_WIRE_HEARTBEAT, &t0, &s_p2, 1.0, NULL),
                     FM_MEMBER_REFUSED_FOREIGN);
    char *text = NULL;
    assert_int_equal(fm_metrics_render(m, &text, NULL), 0);
    static const char *const want[] = {
        "fedmq_members_refused_total{reason=\"clients\"} 1\n",
        "fedmq_members_refused_total{reason=\"foreign\"} 1\n",
        "fedmq_members_refused_total{reason=\"peer_share\"} 1\n",
        "fedmq_members_refused_total{reason=\"full\"} 2\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i]))
            fail_msg("missing from /metrics: %s\n%s", want[i], text);
    free(text);
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_FULL) == 2);
    assert_string_equal(fm_members_refusal_name(FM_MEMBERS_REFUSED_SHARE), "peer_share");
    assert_string_equal(fm_members_refusal_name(FM_MEMBERS_REFUSED_COUNT), "?");
    assert_true(fm_members_refused(t, FM_MEMBERS_REFUSED_COUNT) == 0);
    fm_members_destroy(&t);
    fm_metrics_destroy(&m);
}

/* The origin of a peer: tcp by address, ipc by user id, anything else one "local". */
static void test_peer(void **state)
{
    char out[FM_MEMBERS_ORIGIN_MAX + 1];
    static const struct {
        const char *endpoint, *addr, *want;
    } cases[] = {
        {"tcp://127.0.0.1:5561", "127.0.0.2", "127.0.0.2"},
        {"tcp://*:5561", "::1", "::1"},
        {"tcp://*:5561", "fe80::1:2:3", "fe80::1:2:3"}, /* IPv6 is never read as ipc creds */
        {"ipc:///run/fedmq/snapshot", ":1000:1001:4242", "uid:1000"},
        {"ipc:///run/fedmq/snapshot", "localhost:0:0:17", "uid:0"},
        {"ipc:///run/fedmq/snapshot", "", "local"},
        {"ipc:///run/fedmq/snapshot", "no-credentials", "local"},
        {"ipc:///run/fedmq/snapshot", "a:b:c:d", "local"},
        {"ipc:///run/fedmq/snapshot", NULL, "local"},
        {"inproc://snapshot", "127.0.0.1", "local"},
        {"tcp://127.0.0.1:5561", NULL, "local"},
        {"tcp://127.0.0.1:5561", "", "local"},
        {NULL, "127.0.0.1", "local"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(out, 'x', sizeof out);
        fm_members_peer(cases[i].endpoint, cases[i].addr, out);
        assert_string_equal(out, cases[i].want);
    }
    char longaddr[200];
    memset(longaddr, '1', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    fm_members_peer("tcp://*:1", longaddr, out);
    assert_int_equal(strlen(out), FM_MEMBERS_ORIGIN_MAX);
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
        cmocka_unit_test(test_share),
        cmocka_unit_test(test_foreign),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_client_bounds),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
