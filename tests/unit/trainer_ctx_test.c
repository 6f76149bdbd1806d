/* trainer_ctx_test: the client scheduler of a trainer pool (trainer/trainer_ctx.c), against
 * trainer_ctx.h: async round-robin over [first, first + count) skipping busy clients; sync:
 * each pending cohort member of the current round once, a new round replacing the pending
 * set (stale jobs are dropped); per-client run counters; simulation parameters read at take
 * time; retired clients (DP-SGD budget spent) never scheduled again; Poisson rounds (one
 * kept coin per client and round, refused and retired members declined); and, with several
 * threads, no client handed to two workers at once. Links
 * trainer_lib (the unit-test rule of CMakeLists.txt, by file name). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer_ctx.h"

/* A cohort as the decoder gives it: little-endian uint32 ids in one unaligned bin. */
typedef struct {
    uint8_t bytes[1 + 4 * 64];
    fm_wire_cohort_t c;
} s_cohort_t;

static const fm_wire_cohort_t *s_cohort(s_cohort_t *s, const uint32_t *ids, uint32_t n)
{
    assert_true(n <= 64);
    uint8_t *p = s->bytes + 1; /* unaligned on purpose */
    for (uint32_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++)
            p[4 * i + b] = (uint8_t)(ids[i] >> (8 * b));
    s->c.present = 1;
    s->c.ids = p;
    s->c.count = n;
    return &s->c;
}

/* Take a job that must exist; return its client. */
static uint32_t s_take(trainer_ctx_t *c, trainer_job_t *job)
{
    memset(job, 0xee, sizeof *job);
    assert_int_equal(trainer_ctx_take(c, job), 0);
    return job->client;
}

/* A new context that must be created. */
static trainer_ctx_t *s_new(uint32_t first, uint32_t count, double sigma, double dropout)
{
    int err = 0;
    trainer_ctx_t *c = trainer_ctx_new(first, count, sigma, dropout, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    return c;
}

static void s_none(trainer_ctx_t *c)
{
    trainer_job_t job;
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);
}

static void test_new_destroy(void **state)
{
    trainer_ctx_t *c = s_new(100, 4, 0.5, 0.25);
    assert_int_equal(trainer_ctx_stopping(c), 0);
    atomic_store(&c->stop, 1);
    assert_int_equal(trainer_ctx_stopping(c), 1);
    trainer_ctx_destroy(&c);
    trainer_ctx_destroy(&c); /* idempotent */
    /* an empty range: nothing to take, ever */
    c = s_new(7, 0, 0.0, 0.0);
    s_none(c);
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 0);
    s_none(c);
    uint32_t ids[] = {7};
    s_cohort_t sc;
    assert_int_equal(trainer_ctx_set_round(c, 1, 1, s_cohort(&sc, ids, 1)), 0);
    s_none(c);
    trainer_ctx_release(c, 7); /* out of range: ignored */
    trainer_ctx_destroy(&c);
}

static void test_async_round_robin(void **state)
{
    trainer_ctx_t *c = s_new(100, 4, 0.5, 0.25);
    trainer_job_t job;
    /* a fresh pool is async: 100, 101, 102, 103, each on its first run, then nothing */
    for (uint32_t k = 0; k < 4; k++) {
        assert_int_equal(s_take(c, &job), 100 + k);
        assert_true(job.run == 0);
        assert_int_equal(job.sync, 0);
        assert_true(job.sigma == 0.5 && job.dropout_prob == 0.25);
    }
    s_none(c);
    /* 102 comes back: it is the only idle one, on its second run */
    trainer_ctx_release(c, 102);
    assert_int_equal(s_take(c, &job), 102);
    assert_true(job.run == 1);
    s_none(c);
    /* all idle: round-robin continues after the last client taken (102) -> 103, 100, 101,
     * 102 */
    for (uint32_t k = 100; k < 104; k++)
        trainer_ctx_release(c, k);
    const uint32_t want[4] = {103, 100, 101, 102};
    const uint64_t runs[4] = {1, 1, 1, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s_take(c, &job), want[i]);
        assert_true(job.run == runs[i]);
    }
    /* release out of order: the cursor (after 102) decides, not the release order */
    trainer_ctx_release(c, 101);
    trainer_ctx_release(c, 103);
    trainer_ctx_release(c, 100);
    assert_int_equal(s_take(c, &job), 103);
    assert_int_equal(s_take(c, &job), 100);
    assert_int_equal(s_take(c, &job), 101);
    s_none(c);
    /* releases of ids outside [100, 104) change nothing */
    trainer_ctx_release(c, 99);
    trainer_ctx_release(c, 104);
    trainer_ctx_release(c, UINT32_MAX);
    s_none(c);
    trainer_ctx_destroy(&c);
}

/* Steady state with one worker: take, release, take ... cycles through every client in
 * order, and the run counter of each grows by one per lap. */
static void test_async_laps(void **state)
{
    trainer_ctx_t *c = s_new(0, 5, 0.0, 0.0);
    trainer_job_t job;
    for (uint32_t i = 0; i < 5 * 7; i++) {
        assert_int_equal(s_take(c, &job), i % 5);
        assert_true(job.run == i / 5);
        trainer_ctx_release(c, job.client);
    }
    trainer_ctx_destroy(&c);
}

static void test_sim_params(void **state)
{
    trainer_ctx_t *c = s_new(0, 3, 0.1, 0.2);
    trainer_job_t job;
    s_take(c, &job);
    assert_true(job.sigma == 0.1 && job.dropout_prob == 0.2);
    trainer_ctx_set_sim(c, 1.5, 0.75);
    s_take(c, &job);
    assert_true(job.sigma == 1.5 && job.dropout_prob == 0.75);
    trainer_ctx_destroy(&c);
}

static void test_sync_cohort(void **state)
{
    trainer_ctx_t *c = s_new(10, 6, 0.0, 0.0); /* clients 10..15 */
    trainer_job_t job;
    /* cohort: 3 and 40 are other pools' clients, 12 is listed twice: pending {11, 12, 14} */
    const uint32_t ids[] = {14, 3, 12, 40, 11, 12};
    s_cohort_t sc;
    assert_int_equal(trainer_ctx_set_round(c, 1, 7, s_cohort(&sc, ids, 6)), 3);
    /* each once, in the pool's round-robin order (cursor at 0: 11, 12, 14), for round 7 */
    const uint32_t want[3] = {11, 12, 14};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s_take(c, &job), want[i]);
        assert_int_equal(job.sync, 1);
        assert_true(job.round == 7);
        assert_true(job.run == 0);
    }
    s_none(c);
    /* released, they are idle but no longer pending: still nothing to do */
    trainer_ctx_release(c, 11);
    trainer_ctx_release(c, 12);
    trainer_ctx_release(c, 14);
    s_none(c);

    /* round 8 picks 12 and 15: 12 runs for the second time */
    const uint32_t ids8[] = {15, 12};
    assert_int_equal(trainer_ctx_set_round(c, 1, 8, s_cohort(&sc, ids8, 2)), 2);
    /* the cursor is after 14: 15 first, then 12 */
    assert_int_equal(s_take(c, &job), 15);
    assert_true(job.round == 8 && job.run == 0);
    assert_int_equal(s_take(c, &job), 12);
    assert_true(job.round == 8 && job.run == 1);
    s_none(c);
    trainer_ctx_release(c, 15);
    trainer_ctx_release(c, 12);

    /* empty cohort, or none at all: nobody trains */
    assert_int_equal(trainer_ctx_set_round(c, 1, 9, s_cohort(&sc, ids, 0)), 0);
    s_none(c);
    assert_int_equal(trainer_ctx_set_round(c, 1, 10, NULL), 0);
    s_none(c);
    /* a cohort of other pools' clients only */
    const uint32_t others[] = {0, 9, 16, 1000};
    assert_int_equal(trainer_ctx_set_round(c, 1, 11, s_cohort(&sc, others, 4)), 0);
    s_none(c);

    /* back to async: every idle client may train again, not as sync jobs; set_round
     * returns the pool's size */
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 6);
    uint32_t seen = 0;
    for (int i = 0; i < 6; i++) {
        uint32_t k = s_take(c, &job);
        assert_true(k >= 10 && k < 16);
        assert_int_equal(job.sync, 0);
        seen |= 1u << (k - 10);
    }
    assert_int_equal(seen, 0x3f);
    s_none(c);
    trainer_ctx_destroy(&c);
}

/* A new round replaces the pending set: cohort members of the old round not taken yet are
 * dropped; a busy member of the new cohort waits until it is released, then trains for
 * the new round. */
static void test_sync_new_round_drops_stale(void **state)
{
    trainer_ctx_t *c = s_new(0, 8, 0.0, 0.0);
    trainer_job_t job;
    s_cohort_t sc;
    const uint32_t r1[] = {1, 3, 5, 7};
    assert_int_equal(trainer_ctx_set_round(c, 1, 1, s_cohort(&sc, r1, 4)), 4);
    assert_int_equal(s_take(c, &job), 1);
    assert_int_equal(s_take(c, &job), 3);
    /* 5 and 7 are never taken for round 1: round 2 = {3, 6} replaces them */
    const uint32_t r2[] = {6, 3};
    assert_int_equal(trainer_ctx_set_round(c, 1, 2, s_cohort(&sc, r2, 2)), 2);
    assert_int_equal(s_take(c, &job), 6); /* 3 is still busy with round 1 */
    assert_true(job.round == 2);
    s_none(c);
    trainer_ctx_release(c, 3);
    assert_int_equal(s_take(c, &job), 3);
    assert_true(job.round == 2 && job.run == 1);
    s_none(c);
    trainer_ctx_release(c, 1);
    trainer_ctx_release(c, 3);
    trainer_ctx_release(c, 6);
    s_none(c); /* 5 and 7 stay dropped */
    /* the same round number again with a new cohort also replaces (the caller decides) */
    const uint32_t r3[] = {5};
    assert_int_equal(trainer_ctx_set_round(c, 1, 2, s_cohort(&sc, r3, 1)), 1);
    assert_int_equal(s_take(c, &job), 5);
    s_none(c);
    /* async after sync drops the pending set too: a sync round later starts clean */
    const uint32_t r4[] = {0, 2};
    assert_int_equal(trainer_ctx_set_round(c, 1, 4, s_cohort(&sc, r4, 2)), 2);
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 8);
    for (int i = 0; i < 7; i++) /* all but 5 (busy) */
        trainer_ctx_release(c, s_take(c, &job));
    assert_int_equal(trainer_ctx_set_round(c, 1, 5, NULL), 0);
    s_none(c);
    trainer_ctx_destroy(&c);
}

/* ---- concurrency ----------------------------------------------------------------------- */

enum { S_THREADS = 4, S_ITERS = 2000, S_CLIENTS = 6 };

typedef struct {
    trainer_ctx_t *c;
    atomic_int owner[S_CLIENTS]; /* workers holding client k now (must stay 0 or 1) */
    atomic_int clash;
    atomic_uint_fast64_t taken;
} s_shared_t;

static void *s_worker(void *arg)
{
    s_shared_t *s = arg;
    trainer_job_t job;
    for (int i = 0; i < S_ITERS; i++) {
        if (trainer_ctx_take(s->c, &job) != 0)
            continue;
        uint32_t k = job.client - 50;
        if (atomic_fetch_add(&s->owner[k], 1) != 0)
            atomic_store(&s->clash, 1);
        atomic_fetch_add(&s->taken, 1);
        atomic_fetch_sub(&s->owner[k], 1);
        trainer_ctx_release(s->c, job.client);
    }
    return NULL;
}

/* Workers taking and releasing concurrently never hold the same client twice, and every
 * take is counted in exactly one client's run counter. */
static void test_threads(void **state)
{
    trainer_ctx_t *c = s_new(50, S_CLIENTS, 0.0, 0.0);
    s_shared_t s;
    memset(&s, 0, sizeof s);
    s.c = c;
    pthread_t th[S_THREADS];
    for (int i = 0; i < S_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, s_worker, &s), 0);
    for (int i = 0; i < S_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&s.clash), 0);
    /* all idle again: each client once more, its run number = its takes so far */
    uint64_t runs = 0;
    uint32_t seen = 0;
    trainer_job_t job;
    for (uint32_t k = 0; k < S_CLIENTS; k++) {
        uint32_t client = s_take(c, &job);
        assert_true(client >= 50 && client < 50 + S_CLIENTS);
        seen |= 1u << (client - 50);
        runs += job.run;
    }
    assert_int_equal(seen, (1u << S_CLIENTS) - 1);
    s_none(c);
    assert_true(runs == atomic_load(&s.taken));
    assert_true(atomic_load(&s.taken) > 0);
    trainer_ctx_destroy(&c);
}

/* Retired clients (DP-SGD budget spent) are never scheduled again, async or sync, and are
 * not counted as pending; retiring twice or out of range changes nothing. */
static void test_retire(void **state)
{
    (void)state;
    trainer_ctx_t *c = s_new(10, 3, 0.0, 0.0);
    trainer_job_t job;
    assert_int_equal(trainer_ctx_retire(c, 11), 1);
    assert_int_equal(trainer_ctx_retire(c, 11), 1); /* idempotent */
    assert_int_equal(trainer_ctx_retire(c, 13), 1); /* out of range: ignored */
    assert_int_equal(trainer_ctx_retire(c, 9), 1);
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 2); /* async: the 2 not retired */
    assert_int_equal(s_take(c, &job), 10);
    assert_int_equal(s_take(c, &job), 12);
    s_none(c);
    trainer_ctx_release(c, 10);
    trainer_ctx_release(c, 12);
    assert_int_equal(s_take(c, &job), 10); /* round-robin skips 11 */
    trainer_ctx_release(c, 10);
    /* sync: a cohort naming 11 leaves it out */
    uint32_t ids[] = {11, 12};
    s_cohort_t sc;
    assert_int_equal(trainer_ctx_set_round(c, 1, 4, s_cohort(&sc, ids, 2)), 1);
    assert_int_equal(s_take(c, &job), 12);
    s_none(c);
    trainer_ctx_release(c, 12);
    /* a client retired while pending is dropped from the round */
    assert_int_equal(trainer_ctx_set_round(c, 1, 5, s_cohort(&sc, ids + 1, 1)), 1);
    assert_int_equal(trainer_ctx_retire(c, 12), 2);
    s_none(c);
    assert_int_equal(trainer_ctx_retire(c, 10), 3);
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 0);
    s_none(c);
    trainer_ctx_destroy(&c);
}

/* A scripted coin source: values[i] in turn, and how many were drawn. */
typedef struct {
    const double *values;
    int n, drawn;
} s_coins_t;

static double s_scripted(void *arg)
{
    s_coins_t *k = arg;
    assert_true(k->drawn < k->n); /* no coin beyond those the test expects */
    return k->values[k->drawn++];
}

/* Poisson rounds: a client trains iff its coin < q; refused and retired cohort members are
 * declined once each; the same round delivered again never re-draws a coin (the refused stay
 * refused, the taken are not re-declined); a new round draws again; clients outside the
 * range draw nothing. */
static void test_poisson(void **state)
{
    trainer_ctx_t *c = s_new(10, 5, 0.0, 0.0);
    trainer_job_t job;
    uint32_t declined[5], nd = 99;
    /* clients 10..14 and 99 (not ours), 12 twice; coins for 10, 11, 12, 13, 14 in order */
    uint32_t ids[] = {10, 11, 12, 12, 13, 14, 99};
    static const double v1[] = {0.05, 0.5, 0.29, 0.3, 0.999};
    s_coins_t k = {.values = v1, .n = 5};
    trainer_coins_t coins = {.q = 0.3, .uniform = s_scripted, .arg = &k};
    s_cohort_t sc;
    assert_int_equal(trainer_ctx_retire(c, 14), 1);
    assert_int_equal(
        trainer_ctx_set_round_ex(c, 1, 1, s_cohort(&sc, ids, 7), &coins, declined, &nd), 2);
    assert_int_equal(k.drawn, 5);
    assert_int_equal(nd, 3); /* 11 (0.5), 13 (0.3 is not < 0.3), 14 (retired) */
    assert_int_equal(declined[0], 11);
    assert_int_equal(declined[1], 13);
    assert_int_equal(declined[2], 14);
    assert_int_equal(s_take(c, &job), 10);
    /* the same round again (a snapshot): no coin drawn, 11 and 13 stay refused; 10, taken,
     * is pending again as in fixed rounds (the aggregator refuses a second report) */
    assert_int_equal(
        trainer_ctx_set_round_ex(c, 1, 1, s_cohort(&sc, ids, 7), &coins, declined, &nd), 2);
    assert_int_equal(k.drawn, 5);
    assert_int_equal(nd, 3);
    assert_int_equal(s_take(c, &job), 12);
    trainer_ctx_release(c, 10);
    trainer_ctx_release(c, 12);
    /* a new round draws new coins: now 11 and 13 train */
    static const double v2[] = {0.9, 0.1, 0.9, 0.2, 0.0};
    s_coins_t k2 = {.values = v2, .n = 5};
    coins.arg = &k2;
    assert_int_equal(
        trainer_ctx_set_round_ex(c, 1, 2, s_cohort(&sc, ids, 7), &coins, declined, &nd), 2);
    assert_int_equal(nd, 3);
    assert_true(declined[0] == 10 && declined[1] == 12 && declined[2] == 14);
    uint32_t a = s_take(c, &job), b = s_take(c, &job);
    assert_true((a == 11 && b == 13) || (a == 13 && b == 11));
    s_none(c);
    trainer_ctx_release(c, 11);
    trainer_ctx_release(c, 13);
    /* without coins (q = 1 or a fixed round): every member pending, nothing declined */
    assert_int_equal(
        trainer_ctx_set_round_ex(c, 1, 3, s_cohort(&sc, ids, 7), NULL, declined, &nd), 4);
    assert_int_equal(nd, 0);
    trainer_ctx_destroy(&c);

    /* the coins' rate: q = 0.2 over 4,000 clients with a uniform source: 800 expected, sd 25 */
    c = s_new(0, 4000, 0.0, 0.0);
    uint32_t *all = malloc(4000 * sizeof *all), *dec = malloc(4000 * sizeof *dec);
    uint8_t *bytes = malloc(4 * 4000);
    assert_true(all && dec && bytes);
    for (uint32_t i = 0; i < 4000; i++)
        for (int b2 = 0; b2 < 4; b2++)
            bytes[4 * i + b2] = (uint8_t)(i >> (8 * b2));
    fm_wire_cohort_t big = {.present = 1, .ids = bytes, .count = 4000};
    double *u = malloc(4000 * sizeof *u);
    assert_non_null(u);
    uint64_t x = 88172645463325252ULL; /* xorshift64: a fixed, independent stream */
    for (int i = 0; i < 4000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        u[i] = (double)(x >> 11) * 0x1p-53;
    }
    s_coins_t k3 = {.values = u, .n = 4000};
    trainer_coins_t c3 = {.q = 0.2, .uniform = s_scripted, .arg = &k3};
    uint32_t train = trainer_ctx_set_round_ex(c, 1, 1, &big, &c3, dec, &nd);
    assert_int_equal(train + nd, 4000);
    int want = 0;
    for (int i = 0; i < 4000; i++)
        want += u[i] < 0.2;
    assert_int_equal((int)train, want); /* exactly the coins below q */
    assert_true(train > 800 - 5 * 25 && train < 800 + 5 * 25);
    free(u);
    free(all);
    free(dec);
    free(bytes);
    trainer_ctx_destroy(&c);
}

/* Secure aggregation: only queued jobs train (no async round-robin, no sync cohort); a job
 * carries its cohort, index, model version and deadline; one queued job per client; a
 * cancel for another cohort changes nothing; a busy client waits for its release. */
static void test_secagg(void **state)
{
    (void)state;
    int err = 0;
    trainer_ctx_t *c = trainer_ctx_new(10, 4, 0.0, 0.0, &err);
    assert_non_null(c);
    trainer_ctx_set_secagg(c, 1);
    trainer_job_t job;
    assert_int_equal(trainer_ctx_set_round(c, 0, 0, NULL), 0);
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);
    s_cohort_t sc;
    uint32_t ids[] = {10, 11, 12};
    assert_int_equal(trainer_ctx_set_round(c, 1, 3, s_cohort(&sc, ids, 3)), 0);
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);

    assert_int_equal(trainer_ctx_queue_secagg(c, 9, 7, 1, 5, 100.0), FM_EARG);
    assert_int_equal(trainer_ctx_queue_secagg(c, 14, 7, 1, 5, 100.0), FM_EARG);
    assert_int_equal(trainer_ctx_queue_secagg(c, 12, 7, 3, 5, 100.0), 0);
    assert_int_equal(trainer_ctx_queue_secagg(c, 12, 8, 1, 5, 100.0), -EBUSY);
    assert_int_equal(trainer_ctx_cancel_secagg(c, 12, 8), 0); /* another cohort's */
    assert_int_equal(trainer_ctx_take(c, &job), 0);
    assert_int_equal(job.client, 12);
    assert_int_equal(job.secagg, 1);
    assert_true(job.cohort == 7 && job.index == 3 && job.mv == 5 && job.deadline == 100.0);
    assert_int_equal(job.sync, 0);
    assert_int_equal(job.run, 0);
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);
    assert_int_equal(trainer_ctx_cancel_secagg(c, 12, 7), 0); /* taken already */

    /* queued while busy: taken after the release, with the next run number */
    assert_int_equal(trainer_ctx_queue_secagg(c, 12, 9, 2, 6, 200.0), 0);
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);
    trainer_ctx_release(c, 12);
    assert_int_equal(trainer_ctx_take(c, &job), 0);
    assert_true(job.client == 12 && job.cohort == 9 && job.run == 1);
    trainer_ctx_release(c, 12);

    /* cancelled before a worker took it */
    assert_int_equal(trainer_ctx_queue_secagg(c, 11, 4, 1, 6, 200.0), 0);
    assert_int_equal(trainer_ctx_cancel_secagg(c, 11, 4), 1);
    assert_int_equal(trainer_ctx_take(c, &job), -EAGAIN);

    /* a retired client cannot be queued */
    trainer_ctx_retire(c, 13);
    assert_int_equal(trainer_ctx_queue_secagg(c, 13, 4, 1, 6, 200.0), FM_EARG);
    trainer_ctx_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy), cmocka_unit_test(test_async_round_robin),
        cmocka_unit_test(test_async_laps),  cmocka_unit_test(test_sim_params),
        cmocka_unit_test(test_sync_cohort), cmocka_unit_test(test_sync_new_round_drops_stale),
        cmocka_unit_test(test_threads),     cmocka_unit_test(test_retire),
        cmocka_unit_test(test_poisson),     cmocka_unit_test(test_secagg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
