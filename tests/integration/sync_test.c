/* sync_test: the real fedmq-aggregator in mode = sync (rounds) on loopback.
 *
 * Tests 1-3 and 5: the test plays the trainers. A PUSH to endpoints.updates sends a HELLO
 * for clients 0-9 (one trainer id, cfirst 0, ccount 10; HEARTBEATs every 2 s while waiting)
 * and crafted UPDATEs (with "client", "round", "base"); a SUB to endpoints.aggregator_models
 * reads the MODEL frames to learn the round, its cohort and the version. Model logreg,
 * fedavg server step with server_lr 1, so a version is exactly w0 + sum n_k d_k / sum n_k.
 * Test 4 runs the real broker and two real trainer processes (mlp) and SIGKILLs one of them
 * during a round.
 *
 * Every wait is bounded; children are reaped and temp dirs removed in the teardown
 * (FM_KEEP_LOGS=1 keeps nothing but prints the logs before removing them). */
#include <czmq.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "aggregator_round.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_wire.h"

#define S_WAIT_S 60.0 /* bounded waits (generous: ASan builds on a loaded machine) */
#define S_NCLIENTS 10 /* tests 1-3: federation.num_clients */
#define S_MAX_COHORT 64
#define S_MAX_SETS 40
#define BIN(x) FM_BIN_DIR "/fedmq-" x

typedef struct {
    uint64_t version;
    uint64_t round;
    int present; /* the MODEL carries round/cohort/mu */
    uint32_t n;  /* cohort size */
    uint32_t ids[S_MAX_COHORT];
} s_round_t;

typedef struct {
    char dir[256]; /* temp dir: checkpoints in dir/ckpt, logs in dir */
    char ckpt[300];
    char log[300];  /* the aggregator's log */
    char conf[300]; /* --config file ("": none) */
    char ep_updates[64];
    char ep_models[64];
    char ep_pub[64]; /* test 4: broker PUB, snapshot ROUTER */
    char ep_snap[64];
    fm_proc_set_t procs;
    pid_t pid; /* the aggregator */
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout; /* the aggregator's model, for encoding/decoding */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;  /* UPDATEs */
    fm_wire_buf_t mbuf; /* HELLO / HEARTBEAT */
    uint64_t seq;       /* membership seq of the fake trainer */
    int member;         /* 1 once the HELLO was sent: keep it alive */
    double next_hb;
    float *floats[4]; /* test buffers (s_floats), freed in the teardown */
    int nfloats;
} s_ctx_t;

/* ---- the aggregator ---------------------------------------------------------------------------
 */

/* Start the aggregator in mode = sync (fedavg, server_lr 1) with --config c->conf if set,
 * `model`, num_clients, clients_per_round, min_clients, round_timeout_s (if > 0; else from
 * the config file) and the NULL-terminated "s.k=v" overrides `extra` (may be NULL);
 * (re)connect SUB/PUSH. */
static void s_start(s_ctx_t *c, const char *model, int nclients, int per_round, int min_clients,
                    double timeout_s, const char *const *extra)
{
    static char sets[12][400];
    int ns = 0;
    snprintf(sets[ns++], 400, "federation.model=%s", model);
    snprintf(sets[ns++], 400, "federation.num_clients=%d", nclients);
    snprintf(sets[ns++], 400, "federation.clients_per_round=%d", per_round);
    snprintf(sets[ns++], 400, "federation.min_clients=%d", min_clients);
    if (timeout_s > 0)
        snprintf(sets[ns++], 400, "aggregator.round_timeout_s=%g", timeout_s);
    snprintf(sets[ns++], 400, "trainer.clients=0-%d", nclients - 1);
    snprintf(sets[ns++], 400, "endpoints.updates=%s", c->ep_updates);
    snprintf(sets[ns++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[ns++], 400, "aggregator.checkpoint_dir=%s", c->ckpt);
    fm_proc_metrics_set(sets[ns++], 400, "aggregator", NULL);
    const char *fixed[] = {"federation.mode=sync",
                           "federation.aggregation_strategy=fedavg",
                           "aggregator.server_optimizer=fedavg",
                           "aggregator.server_lr=1",
                           "aggregator.checkpoint_every=100",
                           "aggregator.acks=false"};
    char *argv[2 * S_MAX_SETS + 8];
    int a = 0;
    argv[a++] = BIN("aggregator");
    if (c->conf[0]) {
        argv[a++] = "--config";
        argv[a++] = c->conf;
    }
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        argv[a++] = "--set";
        argv[a++] = (char *)fixed[i];
    }
    for (int i = 0; i < ns; i++) {
        argv[a++] = "--set";
        argv[a++] = sets[i];
    }
    for (int i = 0; extra && extra[i]; i++) {
        assert_true(a < 2 * S_MAX_SETS);
        argv[a++] = "--set";
        argv[a++] = (char *)extra[i];
    }
    argv[a++] = "--log-level";
    argv[a++] = "info";
    argv[a] = NULL;

    fm_model_destroy(&c->layout);
    int err = 0;
    c->layout = fm_model_new(model, &err);
    assert_non_null(c->layout);
    c->np = fm_model_nparams(c->layout);

    fm_zdrain_destroy(&c->sub); /* the old publisher is gone: before a new one binds */
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "spawned aggregator %d, log %s, %s %s\n", (int)c->pid, c->log,
                c->ep_updates, c->ep_models);
    zsock_destroy(&c->push);
    c->sub = zsock_new(ZMQ_SUB);
    c->push = zsock_new(ZMQ_PUSH);
    assert_non_null(c->sub);
    assert_non_null(c->push);
    zsock_set_linger(c->sub, 0);
    zsock_set_conflate(c->sub, 1);
    zsock_set_subscribe(c->sub, "");
    zsock_set_rcvtimeo(c->sub, 100);
    assert_int_equal(zsock_connect(c->sub, "%s", c->ep_models), 0);
    zsock_set_linger(c->push, 0);
    zsock_set_sndtimeo(c->push, 5000);
    assert_int_equal(zsock_connect(c->push, "%s", c->ep_updates), 0);
}

/* 1 while pid runs: waitpid, not kill(pid, 0), which also succeeds on a crashed child that
 * was not reaped yet (a crash is reaped here and its status printed). */
static int s_running(pid_t pid)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        print_error("process %d ended: %s %d\n", (int)pid, WIFSIGNALED(st) ? "signal" : "exit",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return r == 0;
}

static void s_send(s_ctx_t *c, const void *data, size_t len)
{
    assert_int_equal(zmq_send(zsock_resolve(c->push), data, len, 0), (int)len);
}

/* The fake trainer's HELLO (type HELLO) or HEARTBEAT: clients 0..S_NCLIENTS-1. */
static void s_member(s_ctx_t *c, fm_wire_type_t type)
{
    fm_wire_member_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.trainer, sizeof m.trainer, "sync-test-trainer");
    m.pid = (uint32_t)getpid();
    m.client_first = 0;
    m.client_count = S_NCLIENTS;
    m.workers = 1;
    m.seq = c->seq++;
    assert_int_equal(fm_wire_encode_member(type, &m, &c->mbuf), 0);
    s_send(c, c->mbuf.data, c->mbuf.len);
    c->member = 1;
    c->next_hb = fm_proc_now() + 2.0;
}

/* While waiting: a HEARTBEAT every 2 s once the HELLO went out. */
static void s_keepalive(s_ctx_t *c)
{
    if (c->member && fm_proc_now() >= c->next_hb)
        s_member(c, FM_WIRE_HEARTBEAT);
}

/* One MODEL from the SUB (100 ms receive timeout): 1 and *r filled (params into w if not
 * NULL), or 0. */
static int s_recv_model(s_ctx_t *c, s_round_t *r, float *w)
{
    zframe_t *f = zframe_recv(c->sub);
    if (!f)
        return 0;
    fm_wire_model_t hdr;
    fm_errmsg_t e = {{0}};
    int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e);
    if (rc == 0)
        rc = fm_wire_tensors_check(c->ts, c->layout, &e);
    if (rc != 0)
        fail_msg("bad MODEL frame: %s", e.msg);
    assert_string_equal(hdr.model, fm_model_name(c->layout));
    r->version = hdr.version;
    r->round = hdr.round;
    r->present = hdr.cohort.present;
    assert_true(hdr.cohort.count <= S_MAX_COHORT);
    r->n = hdr.cohort.count;
    for (uint32_t i = 0; i < r->n; i++)
        r->ids[i] = fm_wire_cohort_at(&hdr.cohort, i);
    if (w)
        assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
    zframe_destroy(&f);
    return 1;
}

/* Wait up to timeout_s for a MODEL with round >= min_round, version >= min_version and (if
 * need_cohort) a non-empty cohort. 1 and *r (and w) filled, or 0 on timeout (the last MODEL
 * seen, if any, is in *r). */
static int s_wait_round_t(s_ctx_t *c, uint64_t min_round, uint64_t min_version, int need_cohort,
                          s_round_t *r, float *w, double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    memset(r, 0, sizeof *r);
    while (fm_proc_now() < end) {
        s_keepalive(c);
        s_round_t m;
        if (!s_recv_model(c, &m, w))
            continue;
        *r = m;
        if (m.round >= min_round && m.version >= min_version && (!need_cohort || m.n > 0))
            return 1;
    }
    return 0;
}

static int s_wait_round(s_ctx_t *c, uint64_t min_round, uint64_t min_version, int need_cohort,
                        s_round_t *r, float *w)
{
    return s_wait_round_t(c, min_round, min_version, need_cohort, r, w, S_WAIT_S);
}

/* A sync MODEL's cohort: ascending, distinct, below nclients, of size n. */
static void s_check_cohort(const s_round_t *r, uint32_t n, uint32_t nclients)
{
    assert_true(r->present);
    assert_int_equal(r->n, n);
    for (uint32_t i = 0; i < r->n; i++) {
        assert_true(r->ids[i] < nclients);
        if (i)
            assert_true(r->ids[i] > r->ids[i - 1]);
    }
}

static int s_in_cohort(const s_round_t *r, uint32_t k)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->ids[i] == k)
            return 1;
    return 0;
}

/* Send one UPDATE of delta (np floats, fresh id) for (client, round, base) with n samples. */
static void s_send_update(s_ctx_t *c, uint32_t client, uint64_t round, uint64_t base, uint64_t n,
                          const float *delta)
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "sync-test-trainer");
    h.client = client;
    h.round = round;
    h.base = base;
    h.num_samples = n;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
    s_send(c, c->buf.data, c->buf.len);
}

/* ---- stats.json -------------------------------------------------------------------------------
 */

static long long s_json_u(const char *text, const char *from, const char *key)
{
    const char *p = from ? strstr(text, from) : text;
    if (!p)
        return -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = strstr(p, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    if (strncmp(p, "true", 4) == 0)
        return 1;
    if (strncmp(p, "false", 5) == 0)
        return 0;
    return strtoll(p, NULL, 10);
}

/* A number of stats.json: top-level key (reason NULL) or rejected.<reason>; -1 if absent. */
static long long s_stat(const s_ctx_t *c, const char *key, const char *reason)
{
    char path[400], text[8192];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    if (reason)
        return s_json_u(text, "\"rejected\": {", reason);
    /* a top-level key: blank out "rejected": {...} (its "cohort" is not the top-level one) */
    char *rej = strstr(text, "\"rejected\": {");
    char *close = rej ? strchr(rej, '}') : NULL;
    if (close)
        memset(rej, ' ', (size_t)(close - rej) + 1);
    return s_json_u(text, NULL, key);
}

/* Wait until stats.json's key (or rejected.reason) is >= want; 1, or 0 on timeout. Keeps the
 * fake trainer alive meanwhile. */
static int s_wait_stat_t(s_ctx_t *c, const char *key, const char *reason, long long want,
                         double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    for (;;) {
        s_keepalive(c);
        if (s_stat(c, key, reason) >= want)
            return 1;
        if (fm_proc_now() >= end)
            return 0;
        fm_proc_sleep(0.02);
    }
}

static int s_wait_stat(s_ctx_t *c, const char *key, const char *reason, long long want)
{
    return s_wait_stat_t(c, key, reason, want, S_WAIT_S);
}

#define S_EXPECT_STAT(c, key, reason, want)                                                      \
    do {                                                                                         \
        if (!s_wait_stat((c), (key), (reason), (want)))                                          \
            fail_msg("stats.json: %s%s never reached %lld (now %lld)",                           \
                     (reason) ? "rejected." : "", (reason) ? (const char *)(reason) : (key),     \
                     (long long)(want), s_stat((c), (key), (reason)));                           \
    } while (0)

/* Sleep s seconds, keeping the fake trainer alive. */
static void s_settle(s_ctx_t *c, double s)
{
    double end = fm_proc_now() + s;
    while (fm_proc_now() < end) {
        s_keepalive(c);
        fm_proc_sleep(0.05);
    }
}

/* ---- fixtures ---------------------------------------------------------------------------------
 */

static int s_setup(void **state)
{
    /* temp dirs under the build dir unless TMPDIR says otherwise (as aggregator_test) */
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->dir);
    snprintf(c->log, sizeof c->log, "%s/agg.log", c->dir);
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_models, sizeof c->ep_models, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_pub, sizeof c->ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_snap, sizeof c->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    c->ts = malloc(sizeof *c->ts);
    if (!c->ts)
        return -1;
    *state = c;
    return 0;
}

static void s_dump_logs(const char *dir)
{
    char cmd[1200];
    snprintf(
        cmd, sizeof cmd,
        "ls -la '%s' >&2; for f in '%s'/*.log; do echo \"==== $f\" >&2; cat \"$f\" >&2; done; "
        "cat '%s'/ckpt/stats.json >&2",
        dir, dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "(no logs)\n");
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    fm_zdrain_destroy(&c->sub);
    zsock_destroy(&c->push);
    if (getenv("FM_KEEP_LOGS"))
        s_dump_logs(c->dir);
    fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    fm_wire_buf_free(&c->mbuf);
    for (int i = 0; i < c->nfloats; i++)
        free(c->floats[i]);
    free(c->ts);
    fm_model_destroy(&c->layout);
    free(c);
    return 0;
}

/* n zeroed floats, freed in the teardown (also when an assertion ends the test) */
static float *s_floats(s_ctx_t *c, size_t n)
{
    assert_true(c->nfloats < (int)(sizeof c->floats / sizeof c->floats[0]));
    float *p = calloc(n, sizeof(float));
    assert_non_null(p);
    c->floats[c->nfloats++] = p;
    return p;
}

/* delta i: a deterministic, distinct small pattern */
static void s_delta(float *d, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        d[j] = 1e-3f * (float)((int)((j * 7 + (size_t)i * 13) % 17) - 8) * (float)(i + 1);
}

/* tests 1-3: the fake trainer's membership outlives any pause of the test */
static const char *const s_hb30[] = {"broker.heartbeat_timeout_s=30", NULL};

/* ---- 1. a round waits for its cohort and no one else
 * ------------------------------------------- */

static void test_round_waits_for_cohort(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 60.0, s_hb30);
    s_member(c, FM_WIRE_HELLO);
    float *w0 = s_floats(c, c->np), *w1 = s_floats(c, c->np), *d = s_floats(c, c->np * 3);
    s_round_t r1, r2;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, w0));
    assert_int_equal(r1.version, 0);
    assert_int_equal(r1.round, 1);
    s_check_cohort(&r1, 3, S_NCLIENTS);
    uint32_t outsider = 0;
    while (s_in_cohort(&r1, outsider))
        outsider++;

    const uint64_t n[3] = {10, 25, 40};
    for (int i = 0; i < 3; i++)
        s_delta(d + (size_t)i * c->np, c->np, i);
    /* two of the three members report: the round stays open, the version stays 0 */
    s_send_update(c, r1.ids[0], 1, 0, n[0], d);
    s_send_update(c, r1.ids[1], 1, 0, n[1], d + c->np);
    S_EXPECT_STAT(c, "round_reported", NULL, 2);
    s_settle(c, 1.0);
    assert_int_equal(s_stat(c, "round_reported", NULL), 2);
    assert_int_equal(s_stat(c, "version", NULL), 0);
    assert_int_equal(s_stat(c, "round", NULL), 1);
    assert_int_equal(s_stat(c, "round_open", NULL), 1);
    assert_int_equal(s_stat(c, "cohort_size", NULL), 3);
    assert_int_equal(s_stat(c, "live_clients", NULL), S_NCLIENTS);

    /* a client outside the cohort, and a member reporting twice: "cohort" */
    s_send_update(c, outsider, 1, 0, 50, d + 2 * c->np);
    S_EXPECT_STAT(c, NULL, "cohort", 1);
    s_send_update(c, r1.ids[0], 1, 0, n[0], d + 2 * c->np);
    S_EXPECT_STAT(c, NULL, "cohort", 2);
    assert_int_equal(s_stat(c, "version", NULL), 0);
    assert_int_equal(s_stat(c, "round_reported", NULL), 2);
    assert_int_equal(s_stat(c, NULL, "late"), 0);

    /* the third member: version 1 = w0 + sample-weighted mean of the three deltas */
    s_send_update(c, r1.ids[2], 1, 0, n[2], d + 2 * c->np);
    assert_true(s_wait_round(c, 2, 1, 1, &r2, w1));
    assert_int_equal(r2.version, 1);
    assert_int_equal(r2.round, 2); /* the next round opens at once */
    s_check_cohort(&r2, 3, S_NCLIENTS);
    double ntot = (double)(n[0] + n[1] + n[2]), maxerr = 0;
    for (size_t j = 0; j < c->np; j++) {
        double sum = 0;
        for (int i = 0; i < 3; i++)
            sum += (double)n[i] * d[(size_t)i * c->np + j];
        double err = fabs((double)w1[j] - ((double)w0[j] + sum / ntot));
        if (err > maxerr)
            maxerr = err;
    }
    print_message("round 1 cohort {%u,%u,%u}, round 2 cohort {%u,%u,%u}, max error %.3g\n",
                  r1.ids[0], r1.ids[1], r1.ids[2], r2.ids[0], r2.ids[1], r2.ids[2], maxerr);
    assert_true(maxerr < 1e-6);
    S_EXPECT_STAT(c, "version", NULL, 1);
    S_EXPECT_STAT(c, "round", NULL, 2);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 3);
    assert_int_equal(s_stat(c, "rounds_completed", NULL), 1);
    assert_int_equal(s_stat(c, "rounds_failed", NULL), 0);
    assert_int_equal(s_stat(c, NULL, "cohort"), 2);
    assert_int_equal(s_stat(c, "finished", NULL), 0);
    assert_true(fm_proc_file_contains(c->log, "round 1: 3 of 3 selected clients reported"));
}

/* ---- 2. below min_clients at the deadline: the round is dropped
 * -------------------------------- */

static void test_min_clients_not_met(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, "logreg", S_NCLIENTS, 3, 2, 1.5, s_hb30);
    /* no trainer yet: no round, the aggregator says it is waiting */
    const char *waiting = "waiting for clients: 0 live, min_clients = 2";
    double e0 = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, waiting) && fm_proc_now() < e0)
        fm_proc_sleep(0.05);
    assert_true(fm_proc_file_contains(c->log, waiting));
    assert_int_equal(s_stat(c, "round_open", NULL), 0);
    s_member(c, FM_WIRE_HELLO);
    float *d = s_floats(c, c->np);
    s_delta(d, c->np, 5);
    s_round_t r1, r2;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, NULL));
    assert_int_equal(r1.version, 0);
    s_check_cohort(&r1, 3, S_NCLIENTS);
    double t_open = fm_proc_now();
    s_send_update(c, r1.ids[0], r1.round, 0, 20, d);
    S_EXPECT_STAT(c, "rounds_failed", NULL, 1);
    double waited = fm_proc_now() - t_open;
    /* (the MODEL may reach the SUB up to 1 s after the round opened: its 1 s repeat) */
    print_message("round %llu dropped %.2f s after its MODEL arrived (round_timeout_s 1.5)\n",
                  (unsigned long long)r1.round, waited);
    assert_true(waited < 1.5 + 1.0 + 5.0); /* deadline + stats.json's 1 s lag + slack */
    assert_int_equal(s_stat(c, "version", NULL), 0);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 0);
    assert_int_equal(s_stat(c, "rounds_completed", NULL), 0);
    /* a new round with a new cohort on the same version */
    assert_true(s_wait_round(c, r1.round + 1, 0, 1, &r2, NULL));
    assert_int_equal(r2.version, 0);
    assert_true(r2.round > r1.round);
    s_check_cohort(&r2, 3, S_NCLIENTS);
    assert_true(fm_proc_file_contains(c->log, "not aggregated, retried with a new cohort"));
}

/* ---- 3. late updates are dropped and counted
 * ---------------------------------------------------- */

static void test_late_updates(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 60.0, s_hb30);
    s_member(c, FM_WIRE_HELLO);
    float *d = s_floats(c, c->np);
    s_delta(d, c->np, 2);
    s_round_t r1, r2;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, NULL));
    assert_int_equal(r1.round, 1);
    for (uint32_t i = 0; i < r1.n; i++)
        s_send_update(c, r1.ids[i], 1, 0, 10 + i, d);
    assert_true(s_wait_round(c, 2, 1, 1, &r2, NULL));
    assert_int_equal(r2.version, 1);
    S_EXPECT_STAT(c, "version", NULL, 1);

    /* round 1 from version 0, after round 1 closed */
    s_send_update(c, r1.ids[0], 1, 0, 10, d);
    S_EXPECT_STAT(c, NULL, "late", 1);
    s_settle(c, 0.3);
    assert_int_equal(s_stat(c, NULL, "late"), 1);
    assert_int_equal(s_stat(c, "version", NULL), 1);
    /* async style (no round) on the current version, from a member of the open round */
    s_send_update(c, r2.ids[0], 0, 1, 10, d);
    S_EXPECT_STAT(c, NULL, "late", 2);
    /* the open round's number but an older base */
    s_send_update(c, r2.ids[0], r2.round, 0, 10, d);
    S_EXPECT_STAT(c, NULL, "late", 3);
    s_settle(c, 0.3);
    assert_int_equal(s_stat(c, NULL, "late"), 3);
    assert_int_equal(s_stat(c, NULL, "cohort"), 0);
    assert_int_equal(s_stat(c, "version", NULL), 1);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 3);
    assert_int_equal(s_stat(c, "round_reported", NULL), 0);
    /* none of them counted as the member's report: its valid update is still taken */
    s_send_update(c, r2.ids[0], r2.round, 1, 10, d);
    S_EXPECT_STAT(c, "round_reported", NULL, 1);
    assert_int_equal(s_stat(c, NULL, "late"), 3);
    assert_int_equal(s_stat(c, "version", NULL), 1);
}

/* ---- 4. a trainer killed during a round does not hang it
 * --------------------------------------- */

/* ---- num_rounds ends the run ------------------------------------------------------------------
 */

static void test_num_rounds(void **state)
{
    s_ctx_t *c = *state;
    static const char *const extra[] = {"broker.heartbeat_timeout_s=30",
                                        "federation.num_rounds=1", NULL};
    s_start(c, "logreg", S_NCLIENTS, 3, 1, 60.0, extra);
    s_member(c, FM_WIRE_HELLO);
    float *d = s_floats(c, c->np);
    s_delta(d, c->np, 1);
    s_round_t r1, fin;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, NULL));
    for (uint32_t i = 0; i < r1.n; i++)
        s_send_update(c, r1.ids[i], 1, 0, 10, d);
    /* version 1 is published at once, with an empty cohort: nobody trains any more */
    assert_true(s_wait_round_t(c, 1, 1, 0, &fin, NULL, 5.0));
    assert_int_equal(fin.version, 1);
    assert_true(fin.present);
    assert_int_equal(fin.n, 0);
    S_EXPECT_STAT(c, "version", NULL, 1);
    s_settle(c, 0.5);
    char path[400], text[8192];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    assert_non_null(strstr(text, "\"finished\": true"));
    assert_int_equal(s_stat(c, "round_open", NULL), 0);
    /* an update after the end is late, the version stays */
    s_send_update(c, r1.ids[0], 1, 1, 10, d);
    S_EXPECT_STAT(c, NULL, "late", 1);
    assert_int_equal(s_stat(c, "version", NULL), 1);
}

/* ---- async mode: min_clients is a quorum of live clients -------------------------------------
 */

static void test_async_quorum(void **state)
{
    s_ctx_t *c = *state;
    /* mode = async overrides the fixed sync; K = clients_per_round = 3 (buffer_k 0) */
    static const char *const extra[] = {"broker.heartbeat_timeout_s=30", "federation.mode=async",
                                        NULL};
    s_start(c, "logreg", S_NCLIENTS, 3, 2, 60.0, extra);
    float *d = s_floats(c, c->np);
    s_delta(d, c->np, 3);
    s_round_t m;
    assert_true(s_wait_round(c, 0, 0, 0, &m, NULL)); /* up: its first MODEL */
    assert_false(m.present);                         /* async: no cohort */
    /* nobody has said HELLO: 0 live clients < min_clients 2 */
    s_send_update(c, 0, 0, 0, 10, d);
    S_EXPECT_STAT(c, NULL, "quorum", 1);
    assert_int_equal(s_stat(c, "updates_pending", NULL), 0);
    /* a trainer serving all S_NCLIENTS clients joins: updates are taken, also those sent
     * right behind its HELLO on the same socket (the HELLO counts at once, not at the
     * aggregator's next membership tick) */
    s_member(c, FM_WIRE_HELLO);
    for (int i = 0; i < 3; i++)
        s_send_update(c, (uint32_t)i, 0, 0, 10, d);
    S_EXPECT_STAT(c, "version", NULL, 1);
    assert_int_equal(s_stat(c, "live_clients", NULL), S_NCLIENTS);
    assert_int_equal(s_stat(c, NULL, "quorum"), 1);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 3);
    /* it leaves (BYE): below the quorum again */
    s_member(c, FM_WIRE_BYE);
    c->member = 0;
    double end = fm_proc_now() + S_WAIT_S; /* S_EXPECT_STAT waits for >=: poll for == 0 */
    while (s_stat(c, "live_clients", NULL) != 0 && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    assert_int_equal(s_stat(c, "live_clients", NULL), 0);
    s_send_update(c, 0, 0, 1, 10, d);
    S_EXPECT_STAT(c, NULL, "quorum", 2);
    assert_int_equal(s_stat(c, "updates_pending", NULL), 0);
}

static pid_t s_spawn_daemon(s_ctx_t *c, const char *bin, const char *log, char sets[][400],
                            int nsets)
{
    char *argv[2 * S_MAX_SETS + 4], met[64];
    int a = 0;
    argv[a++] = (char *)bin;
    argv[a++] = "--set"; /* "<BIN_DIR>/fedmq-broker": the daemon's name is after the last - */
    argv[a++] = fm_proc_metrics_set(met, sizeof met, strrchr(bin, '-') + 1, NULL);
    for (int i = 0; i < nsets && i < S_MAX_SETS; i++) {
        argv[a++] = "--set";
        argv[a++] = sets[i];
    }
    argv[a] = NULL;
    char path[400];
    snprintf(path, sizeof path, "%s/%s", c->dir, log);
    pid_t pid = fm_proc_spawn(&c->procs, argv, path);
    assert_true(pid > 0);
    return pid;
}

/* 1 if the cohort has clients of both [0,1] and [2,3] */
static int s_spans_both(const s_round_t *r)
{
    int a = 0, b = 0;
    for (uint32_t i = 0; i < r->n; i++) {
        a |= r->ids[i] <= 1;
        b |= r->ids[i] >= 2 && r->ids[i] <= 3;
    }
    return a && b;
}

static void test_killed_trainer(void **state)
{
    s_ctx_t *c = *state;
    const double timeout = 4.0, hb_timeout = 3.0;
    const int nclients = 20;
    char hb[64];
    snprintf(hb, sizeof hb, "broker.heartbeat_timeout_s=%g", hb_timeout);
    const char *agg_extra[] = {hb, "aggregator.checkpoint_every=1", NULL};
    s_start(c, "mlp", nclients, 4, 1, timeout, agg_extra);

    /* broker and trainers: common settings */
    char common[16][400];
    int nc = 0;
    snprintf(common[nc++], 400, "endpoints.model_pub=%s", c->ep_pub);
    snprintf(common[nc++], 400, "endpoints.snapshot=%s", c->ep_snap);
    snprintf(common[nc++], 400, "endpoints.updates=%s", c->ep_updates);
    snprintf(common[nc++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(common[nc++], 400, "federation.model=mlp");
    snprintf(common[nc++], 400, "federation.num_clients=%d", nclients);
    snprintf(common[nc++], 400, "federation.partition=iid");
    snprintf(common[nc++], 400, "federation.data_dir=%s", FM_DATA_DIR);
    snprintf(common[nc++], 400, "%s", hb);
    snprintf(common[nc++], 400, "trainer.heartbeat_interval_s=0.5");
    snprintf(common[nc++], 400, "trainer.workers=2");
    char sets[S_MAX_SETS][400];
    memcpy(sets, common, sizeof common);
    snprintf(sets[nc], 400, "trainer.clients=0-%d", nclients - 1);
    s_spawn_daemon(c, BIN("broker"), "broker.log", sets, nc + 1);
    /* trainer A (clients 0-1): one quick local epoch */
    snprintf(sets[nc], 400, "trainer.clients=0-1");
    snprintf(sets[nc + 1], 400, "federation.local_epochs=1");
    s_spawn_daemon(c, BIN("trainer"), "trainerA.log", sets, nc + 2);
    /* B only once A is a member: a first round of B's clients alone would only time out */
    double e0 = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, "(clients 0-1) joined") && fm_proc_now() < e0)
        fm_proc_sleep(0.05);
    assert_true(fm_proc_file_contains(c->log, "(clients 0-1) joined"));
    /* trainer B (clients 2-3): 1000 local epochs, still training when it is killed */
    snprintf(sets[nc], 400, "trainer.clients=2-3");
    snprintf(sets[nc + 1], 400, "federation.local_epochs=1000");
    pid_t tb = s_spawn_daemon(c, BIN("trainer"), "trainerB.log", sets, nc + 2);
    char tblog[400];
    snprintf(tblog, sizeof tblog, "%s/trainerB.log", c->dir);

    /* a round with clients of both trainers, and B has it */
    s_round_t r, rk;
    double end = fm_proc_now() + 60.0;
    int found = 0;
    while (!found && fm_proc_now() < end) {
        if (!s_wait_round_t(c, 1, 0, 1, &r, NULL, 1.0) || !s_spans_both(&r))
            continue;
        char needle[64];
        snprintf(needle, sizeof needle, "round %llu on v%llu: 2 of the",
                 (unsigned long long)r.round, (unsigned long long)r.version);
        double e2 = fm_proc_now() + 5.0;
        while (!fm_proc_file_contains(tblog, needle) && fm_proc_now() < e2)
            fm_proc_sleep(0.05);
        found = fm_proc_file_contains(tblog, needle);
    }
    if (!found)
        fail_msg("no round with clients of both trainers reached trainer B (last MODEL: v%llu "
                 "round %llu, %u clients)",
                 (unsigned long long)r.version, (unsigned long long)r.round, r.n);
    rk = r;
    s_check_cohort(&rk, 4, nclients);
    fm_proc_sleep(0.2); /* B's workers have taken the jobs */
    double t_kill = fm_proc_now();
    int st = fm_proc_stop(tb, SIGKILL, 5.0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    print_message("trainer B (clients 2-3) killed in round %llu on version %llu\n",
                  (unsigned long long)rk.round, (unsigned long long)rk.version);

    /* the round closes at its deadline with trainer A's two updates */
    s_round_t nx;
    assert_true(s_wait_round_t(c, rk.round + 1, rk.version + 1, 0, &nx, NULL, timeout + 8.0));
    double took = fm_proc_now() - t_kill;
    print_message("version %llu (round %llu closed) %.2f s after the kill\n",
                  (unsigned long long)nx.version, (unsigned long long)rk.round, took);
    assert_true(took < timeout + 8.0);
    char needle[96];
    snprintf(needle, sizeof needle, "round %llu: deadline, aggregating the 2 of 4 updates",
             (unsigned long long)rk.round);
    double e3 = fm_proc_now() + 2.0;
    while (!fm_proc_file_contains(c->log, needle) && fm_proc_now() < e3)
        fm_proc_sleep(0.05);
    assert_true(fm_proc_file_contains(c->log, needle));

    /* B's clients expire from the aggregator's membership; the rounds keep going, with A's
     * clients only, each complete without waiting for a deadline */
    S_EXPECT_STAT(c, "version", NULL, (long long)rk.version + 4);
    long long live = -1;
    double e4 = fm_proc_now() + S_WAIT_S;
    while ((live = s_stat(c, "live_clients", NULL)) != 2 && fm_proc_now() < e4)
        fm_proc_sleep(0.05);
    assert_int_equal(live, 2);
    s_round_t last;
    assert_true(s_wait_round(c, nx.round + 1, 0, 1, &last, NULL));
    s_check_cohort(&last, 2, nclients);
    assert_true(last.ids[0] == 0 && last.ids[1] == 1);
    s_round_t after;
    assert_true(s_wait_round(c, last.round + 1, last.version + 1, 0, &after, NULL));
    snprintf(needle, sizeof needle, "round %llu: 2 of 2 selected clients reported",
             (unsigned long long)last.round);
    assert_true(fm_proc_file_contains(c->log, needle));
    print_message("%.1f s after the kill: version %lld, round %lld, %lld rounds failed\n",
                  fm_proc_now() - t_kill, s_stat(c, "version", NULL), s_stat(c, "round", NULL),
                  s_stat(c, "rounds_failed", NULL));
    assert_int_equal(s_stat(c, "updates_rejected", NULL), 0);
    assert_true(s_running(c->pid));
}

/* ---- restart: the round number continues from the checkpoint ------------------------------- */

/* The cohort fedmq-aggregator must pick for `round` (seed, all S_NCLIENTS clients live,
 * per_round) by the aggregator's own selection function. */
static void s_expected_cohort(uint64_t seed, uint64_t round, uint32_t per_round, s_round_t *out)
{
    int err = 0;
    agg_round_t *r = agg_round_new(S_NCLIENTS, &err);
    assert_non_null(r);
    uint8_t live[S_NCLIENTS];
    memset(live, 1, sizeof live);
    out->n = agg_round_open(r, round, live, per_round, seed, 0.0);
    uint32_t n = 0;
    const uint32_t *ids = agg_round_cohort(r, &n);
    assert_int_equal(n, out->n);
    memcpy(out->ids, ids, n * sizeof *ids);
    agg_round_destroy(&r);
}

static void s_assert_cohort_is(const s_round_t *got, uint64_t seed, uint32_t per_round)
{
    s_round_t want;
    s_expected_cohort(seed, got->round, per_round, &want);
    assert_int_equal(got->n, want.n);
    if (memcmp(got->ids, want.ids, want.n * sizeof want.ids[0]) != 0)
        fail_msg("round %llu: cohort {%u,%u,%u}, expected {%u,%u,%u}",
                 (unsigned long long)got->round, got->ids[0], got->ids[1], got->ids[2],
                 want.ids[0], want.ids[1], want.ids[2]);
}

/* The "agg.round" blob of the newest record of the (stopped or running) aggregator's
 * checkpoints. */
static uint64_t s_stored_round(const s_ctx_t *c)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *ck = fm_ckpt_open_readonly(c->ckpt, &err, &e);
    if (!ck)
        fail_msg("open %s: %s", c->ckpt, e.msg);
    unsigned char le[8];
    size_t len = 0;
    uint64_t latest = 0;
    assert_int_equal(fm_ckpt_latest_version(ck, &latest, &e), 0);
    assert_int_equal(fm_ckpt_record_get(ck, latest, "agg.round", le, sizeof le, &len, &e), 0);
    assert_int_equal(len, 8);
    fm_ckpt_close(&ck);
    uint64_t r = 0;
    for (int i = 7; i >= 0; i--)
        r = r << 8 | le[i];
    return r;
}

/* Every member of round r reports (n samples) from r's version. */
static void s_complete_round(s_ctx_t *c, const s_round_t *r, const float *d)
{
    for (uint32_t i = 0; i < r->n; i++)
        s_send_update(c, r->ids[i], r->round, r->version, 10 + i, d);
}

static void test_restart_continues_rounds(void **state)
{
    s_ctx_t *c = *state;
    const uint64_t seed = 4242;
    static const char *const extra[] = {"broker.heartbeat_timeout_s=30",
                                        "aggregator.checkpoint_every=1", "federation.seed=4242",
                                        NULL};
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 60.0, extra);
    s_member(c, FM_WIRE_HELLO);
    float *d = s_floats(c, c->np), *w2 = s_floats(c, c->np), *wr = s_floats(c, c->np);
    s_delta(d, c->np, 4);
    s_round_t r[4];
    assert_true(s_wait_round(c, 1, 0, 1, &r[1], NULL));
    assert_int_equal(r[1].round, 1);
    s_assert_cohort_is(&r[1], seed, 3);
    s_complete_round(c, &r[1], d);
    assert_true(s_wait_round(c, 2, 1, 1, &r[2], NULL));
    assert_int_equal(r[2].round, 2);
    s_assert_cohort_is(&r[2], seed, 3);
    s_complete_round(c, &r[2], d);
    /* version 2 opens round 3 (its MODEL), then is checkpointed with it, then stats.json */
    assert_true(s_wait_round(c, 3, 2, 1, &r[3], w2));
    assert_int_equal(r[3].round, 3);
    assert_int_equal(r[3].version, 2);
    s_assert_cohort_is(&r[3], seed, 3);
    S_EXPECT_STAT(c, "version", NULL, 2);

    int st = fm_proc_stop(c->pid, SIGKILL, 5.0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(s_stored_round(c), 3); /* the last round opened before the kill */

    /* restart: version 2, and round 3 (maybe already worked on) is never opened again: the
     * next is 4, with the cohort the same seed picks for round 4 */
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 60.0, extra);
    s_member(c, FM_WIRE_HELLO);
    s_round_t r4, r5;
    assert_true(s_wait_round(c, 1, 0, 1, &r4, wr));
    assert_int_equal(r4.version, 2);
    assert_int_equal(r4.round, 4);
    assert_memory_equal(wr, w2, c->np * sizeof *wr);
    s_assert_cohort_is(&r4, seed, 3);
    assert_true(fm_proc_file_contains(c->log, "resumed from checkpoint version 2, round 3"));
    /* round 3's update after the restart is late, round 4's are taken */
    s_send_update(c, r[3].ids[0], 3, 2, 10, d);
    S_EXPECT_STAT(c, NULL, "late", 1);
    s_complete_round(c, &r4, d);
    assert_true(s_wait_round(c, 5, 3, 1, &r5, NULL));
    assert_int_equal(r5.version, 3);
    assert_int_equal(r5.round, 5);
    s_assert_cohort_is(&r5, seed, 3);
    S_EXPECT_STAT(c, "version", NULL, 3);
    assert_int_equal(s_stat(c, "round", NULL), 5);
    assert_int_equal(s_stat(c, NULL, "late"), 1);
    assert_int_equal(s_stat(c, NULL, "cohort"), 0);
    assert_int_equal(s_stored_round(c), 5);
}

/* ---- SIGHUP: round_timeout_s is reloadable (from the next round on) -------------------------
 */

static void s_write_timeout(s_ctx_t *c, double timeout_s)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->conf);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "[aggregator]\nround_timeout_s = %g\n", timeout_s);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, c->conf), 0);
}

static int s_wait_log(const s_ctx_t *c, const char *needle)
{
    double end = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, needle) && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    return fm_proc_file_contains(c->log, needle);
}

static void test_reload_round_timeout(void **state)
{
    s_ctx_t *c = *state;
    snprintf(c->conf, sizeof c->conf, "%s/agg.conf", c->dir);
    s_write_timeout(c, 600);
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 0, s_hb30); /* round_timeout_s from the file */
    s_member(c, FM_WIRE_HELLO);
    float *d = s_floats(c, c->np);
    s_delta(d, c->np, 6);
    s_round_t r1, r2;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, NULL));
    assert_true(s_wait_log(c, "round 1 on version 0: 3 of 10 live clients selected"));
    assert_true(fm_proc_file_contains(c->log, "deadline 600.0 s"));

    /* 600 -> 2 s; the open round keeps its deadline, the next one gets 2 s */
    s_write_timeout(c, 2);
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    if (!s_wait_log(c,
                    "SIGHUP: config reloaded; changed: [aggregator] round_timeout_s: 600 -> 2"))
        fail_msg("no reload line");
    s_complete_round(c, &r1, d);
    assert_true(s_wait_round(c, 2, 1, 1, &r2, NULL));
    double t_open = fm_proc_now();
    /* nobody reports: round 2 fails at its 2 s deadline, not after 600 s */
    S_EXPECT_STAT(c, "rounds_failed", NULL, 1);
    double waited = fm_proc_now() - t_open;
    assert_true(s_wait_log(c, "round 2 on version 1: 3 of 10 live clients selected"));
    assert_true(fm_proc_file_contains(c->log, "deadline 2.0 s"));
    print_message("round 2 dropped %.2f s after its MODEL arrived (round_timeout_s 600 -> 2)\n",
                  waited);
    assert_true(waited < 2.0 + 1.0 + 10.0);
    assert_int_equal(s_stat(c, "version", NULL), 1);
    assert_true(s_running(c->pid));
}

/* ---- 5. bad sync configs: exit 2, one line on stderr naming the key
 * ------------------------------ */

static void s_bad_config(s_ctx_t *c, const char *name, const char *const *sets, const char *key)
{
    char log[400];
    snprintf(log, sizeof log, "%s/%s.log", c->dir, name);
    char *argv[2 * 8 + 2];
    int a = 0;
    argv[a++] = BIN("aggregator");
    for (int i = 0; sets[i]; i++) {
        argv[a++] = "--set";
        argv[a++] = (char *)sets[i];
    }
    argv[a] = NULL;
    pid_t p = fm_proc_spawn(&c->procs, argv, log);
    assert_true(p > 0);
    int st = fm_proc_wait(p, 10.0);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[1024], first[1024] = "";
    int lines = 0;
    while (fgets(line, sizeof line, f))
        if (lines++ == 0)
            snprintf(first, sizeof first, "%s", line);
    fclose(f);
    if (lines != 1 || !strstr(first, key))
        fail_msg("%s: %d lines on stderr, the first: %s (expected one naming %s)", name, lines,
                 first, key);
}

static void test_bad_config(void **state)
{
    s_ctx_t *c = *state;
    char ck[400];
    snprintf(ck, sizeof ck, "aggregator.checkpoint_dir=%s", c->ckpt);
    const char *fedbuff[] = {"federation.mode=sync", "federation.aggregation_strategy=fedbuff",
                             ck, NULL};
    s_bad_config(c, "bad-fedbuff", fedbuff, "aggregation_strategy");
    const char *quorum[] = {"federation.mode=sync",
                            "federation.aggregation_strategy=fedavg",
                            "federation.clients_per_round=3",
                            "federation.min_clients=4",
                            ck,
                            NULL};
    s_bad_config(c, "bad-min-clients", quorum, "min_clients");
    const char *prox[] = {"federation.mode=sync", "federation.aggregation_strategy=fedprox",
                          "federation.mu=0", ck, NULL};
    s_bad_config(c, "bad-mu", prox, "mu");
    /* nothing was started: no checkpoint environment, no stats */
    assert_int_equal(s_stat(c, "version", NULL), -1);
}

/* ---- robust aggregation of a round -------------------------------------------------------- */

/* aggregation = median in mode = sync: a round of three, one member sign-flipped x10: the
 * version is w0 + the coordinate-wise median (sample counts do not weigh: the attacker claims
 * 10^6 samples), i.e. the honest value in the middle, not the attacker's. */
static void test_robust_round(void **state)
{
    s_ctx_t *c = *state;
    const char *const extra[] = {"broker.heartbeat_timeout_s=30", "aggregator.aggregation=median",
                                 NULL};
    s_start(c, "logreg", S_NCLIENTS, 3, 3, 60.0, extra);
    s_member(c, FM_WIRE_HELLO);
    float *w0 = s_floats(c, c->np), *w1 = s_floats(c, c->np), *d = s_floats(c, c->np * 3);
    s_round_t r1, r2;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, w0));
    s_check_cohort(&r1, 3, S_NCLIENTS);
    s_delta(d, c->np, 0);
    s_delta(d + c->np, c->np, 1);
    for (size_t j = 0; j < c->np; j++)
        d[2 * c->np + j] = -10.0f * d[j];
    const uint64_t n[3] = {10, 20, 1000000};
    for (int i = 0; i < 3; i++)
        s_send_update(c, r1.ids[i], 1, 0, n[i], d + (size_t)i * c->np);
    assert_true(s_wait_round(c, 2, 1, 1, &r2, w1));
    double maxerr = 0;
    for (size_t j = 0; j < c->np; j++) {
        float v[3] = {d[j], d[c->np + j], d[2 * c->np + j]}, t;
        for (int a = 1; a < 3; a++) /* sort three */
            for (int b = a; b > 0 && v[b - 1] > v[b]; b--)
                t = v[b], v[b] = v[b - 1], v[b - 1] = t;
        maxerr = fmax(maxerr, fabs((double)w1[j] - ((double)w0[j] + v[1])));
    }
    print_message("median round: max error %.3g\n", maxerr);
    assert_true(maxerr < 1e-6);
    assert_true(fm_proc_file_contains(c->log, "aggregation median over 3 stored updates"));
    S_EXPECT_STAT(c, "updates_applied", NULL, 3);
}

/* ---- refused members: a cohort member whose update is refused for its content counts as
 * having reported, so the round closes without waiting for its deadline ---------------------- */

static void test_refused_member(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, "logreg", S_NCLIENTS, 3, 2, 60.0, s_hb30);
    s_member(c, FM_WIRE_HELLO);
    float *w1 = s_floats(c, c->np), *d = s_floats(c, c->np), *bad = s_floats(c, c->np);
    s_delta(d, c->np, 1);
    s_delta(bad, c->np, 2);
    bad[7] = NAN;
    s_round_t r1, r2, r3;
    assert_true(s_wait_round(c, 1, 0, 1, &r1, NULL));
    double t0 = fm_proc_now();
    /* round 1: two good updates and one non-finite: aggregated at the next tick, not at the
     * deadline (2 >= min_clients) */
    s_send_update(c, r1.ids[0], r1.round, 0, 10, d);
    s_send_update(c, r1.ids[1], r1.round, 0, 10, d);
    s_send_update(c, r1.ids[2], r1.round, 0, 10, bad); /* the last report is the refused one */
    assert_true(s_wait_round(c, r1.round + 1, 1, 1, &r2, w1));
    double waited = fm_proc_now() - t0;
    print_message("round with a refused member closed after %.2f s (deadline 60 s)\n", waited);
    assert_true(waited < 30.0);
    S_EXPECT_STAT(c, NULL, "nonfinite", 1);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 2);
    assert_true(fm_proc_file_contains(c->log, "every member reported, aggregating the 2 of 3 "
                                              "updates folded (1 refused)"));
    /* round 2: two refused, one good: complete but below min_clients: retried at once */
    t0 = fm_proc_now();
    s_send_update(c, r2.ids[0], r2.round, 1, 10, bad);
    s_send_update(c, r2.ids[1], r2.round, 1, 10, d);
    s_send_update(c, r2.ids[2], r2.round, 1, 10, bad);
    S_EXPECT_STAT(c, "rounds_failed", NULL, 1);
    assert_true(fm_proc_now() - t0 < 30.0);
    assert_true(s_wait_round(c, r2.round + 1, 1, 1, &r3, NULL));
    assert_int_equal(s_stat(c, "version", NULL), 1);
    /* a refused update from outside the cohort marks nobody */
    uint32_t outsider = 0;
    while (s_in_cohort(&r3, outsider))
        outsider++;
    s_send_update(c, outsider, r3.round, 1, 10, bad);
    S_EXPECT_STAT(c, NULL, "nonfinite", 4);
    assert_int_equal(s_stat(c, "round_reported", NULL), 0);
}

int main(void)
{
    zsys_init();
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_waits_for_cohort, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_min_clients_not_met, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_late_updates, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_killed_trainer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_num_rounds, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_async_quorum, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_restart_continues_rounds, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reload_round_timeout, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_robust_round, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refused_member, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
