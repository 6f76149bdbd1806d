/* Hostile clients against real daemons on 127.0.0.1 (issue 11, "Untrusted text is never
 * trusted"). Three cases, each bounded by S_BUDGET_S plus the daemons' stop:
 *
 *  (a) heartbeat flood: a real trainer is live; a client on another source address
 *      (127.0.0.2) sends 5,000 HEARTBEATs of unknown ids to the broker and to the
 *      aggregator (a third of them claiming an impossible client range). Both tables
 *      admit exactly [broker] trainers_per_peer of them and refuse the rest, counted by
 *      reason (exact numbers); the live-trainer and client counts stay possible (<=
 *      num_clients); a newcomer from 127.0.0.1 joins afterwards (not blocked); a second
 *      flood from 127.0.0.1 itself (the trainer's own address) fills what is left of that
 *      share and evicts neither; the trainer joined exactly once on each daemon and was
 *      never replaced, and its updates go on being applied, none rejected.
 *  (b) forged text: HELLO/HEARTBEAT/BYE and SNAPSHOT_REQ with ids holding a newline, a
 *      carriage return, escape sequences and other bytes an id may not hold, and UPDATEs
 *      with such a trainer id, model name, tensor name or dtype, while a real federation
 *      runs: each is rejected and counted (exact numbers), no log or file of the run holds
 *      "FORGED-LINE" or any control byte, and the federation goes on.
 *  (c) 100,000 random and mutated frames to each bound socket that receives (the
 *      aggregator's updates PULL, the broker's snapshot ROUTER), every one of a kind that
 *      must be rejected: the rejection counters equal the number sent, exactly; all
 *      daemons stay up; afterwards a small federation (mlp, 10 clients, one trainer)
 *      reaches S_ACC_BAR.
 * Every daemon is stopped with SIGTERM and must exit 0 (under ASan: no leak at exit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <czmq.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_wire.h"

#define S_BUDGET_S 52.0 /* each case's waits, together */
#define S_STOP_S 8.0    /* SIGTERM to exit, per daemon */
#define S_FLOOD 5000
#define S_SHARE 16 /* [broker] trainers_per_peer in (a) */
#define S_NCLIENTS 20
#define S_FUZZ 100000
#define S_ACC_BAR 0.75
#define S_MAX_SETS 32
#define S_RSS_GROWTH_MAX (16.0 * 1024 * 1024) /* the aggregator's, over (c)'s frames */

#if defined(__SANITIZE_ADDRESS__)
#define S_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_ASAN 1
#endif
#endif
#ifndef S_ASAN
#define S_ASAN 0
#endif

typedef struct {
    char dir[256];
    fm_proc_set_t procs;
    char sets[S_MAX_SETS][320];
    int nsets;
    char ep_snap[64], ep_updates[64];
    double deadline; /* monotonic end of the case's budget */
    double t0;
    fm_wire_buf_t buf;
    zsock_t *socks[8]; /* the hostile clients' sockets (kept until the counts are read:
                          destroying one drops what it has not sent yet) */
    int nsocks;
} s_ctx_t;

/* A started daemon. */
typedef struct {
    pid_t pid;
    int metrics; /* its /metrics port */
    char log[320];
} s_daemon_t;

/* ---- helpers ---------------------------------------------------------------------------- */

static void s_note(const s_ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    print_message("[%5.1fs] %s\n", fm_proc_now() - c->t0, line);
}

static double s_left(const s_ctx_t *c)
{
    double left = c->deadline - fm_proc_now();
    return left > 0 ? left : 0;
}

static void s_set(s_ctx_t *c, const char *fmt, ...)
{
    assert_true(c->nsets < S_MAX_SETS);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->sets[c->nsets++], sizeof c->sets[0], fmt, ap);
    va_end(ap);
}

/* The endpoints (each on a reserved port), the state files and the federation shared by
 * all daemons of a case. */
static void s_common(s_ctx_t *c, const char *model, int num_clients)
{
    snprintf(c->ep_snap, sizeof c->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", fm_proc_free_port());
    s_set(c, "endpoints.snapshot=%s", c->ep_snap);
    s_set(c, "endpoints.updates=%s", c->ep_updates);
    s_set(c, "endpoints.model_pub=tcp://127.0.0.1:%d", fm_proc_free_port());
    s_set(c, "endpoints.aggregator_models=tcp://127.0.0.1:%d", fm_proc_free_port());
    s_set(c, "endpoints.metrics_pub=tcp://127.0.0.1:%d", fm_proc_free_port());
    s_set(c, "endpoints.acks=tcp://127.0.0.1:%d", fm_proc_free_port());
    s_set(c, "federation.model=%s", model);
    s_set(c, "federation.num_clients=%d", num_clients);
    s_set(c, "federation.partition=iid");
    s_set(c, "trainer.clients=0-9");
    s_set(c, "trainer.workers=1");
    s_set(c, "aggregator.checkpoint_dir=%s/ckpt", c->dir);
    s_set(c, "evaluator.metrics_file=%s/metrics.jsonl", c->dir);
}

/* Start fedmq-<name> with the case's settings, `extra` (may be NULL) and /metrics on a
 * reserved port; its log is <dir>/<logname>.log. Waits until /metrics answers. */
static s_daemon_t s_start(s_ctx_t *c, const char *name, const char *logname, const char *extra)
{
    s_daemon_t d;
    char met[64], bin[300];
    fm_proc_metrics_set(met, sizeof met, name, &d.metrics);
    snprintf(d.log, sizeof d.log, "%s/%s.log", c->dir, logname);
    snprintf(bin, sizeof bin, "%s/fedmq-%s", FM_BIN_DIR, name);
    char *argv[2 * S_MAX_SETS + 8];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; i < c->nsets; i++) {
        argv[n++] = "--set";
        argv[n++] = c->sets[i];
    }
    if (extra) {
        argv[n++] = "--set";
        argv[n++] = (char *)extra;
    }
    argv[n++] = "--set";
    argv[n++] = met;
    argv[n] = NULL;
    d.pid = fm_proc_spawn(&c->procs, argv, d.log);
    assert_true(d.pid > 0);
    return d;
}

/* The value of `series` (the exact text before the value) on the daemon's /metrics, or the
 * sum of every series that starts with `series` when it ends in '{' (all label values).
 * 1 with *v, or 0 while the daemon does not answer or has no such series. */
static int s_metric_try(const s_daemon_t *d, const char *series, double *v)
{
    fm_http_resp_t r;
    int ok = fm_http_request(d->metrics, "GET", "/metrics", &r) == 0 && r.status == 200;
    size_t n = strlen(series);
    if (ok && series[n - 1] == '{') {
        double sum = 0;
        int found = 0;
        for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
            if (strncmp(p, series, n) == 0) {
                const char *sp = strchr(p, ' ');
                if (sp) {
                    sum += strtod(sp + 1, NULL);
                    found = 1;
                }
            }
        ok = found;
        *v = sum;
    } else if (ok)
        ok = fm_http_sample(r.body, series, v);
    fm_http_free(&r);
    return ok;
}

/* Poll `series` until it equals `want` (or, with at_least, reaches it) within the budget;
 * returns the last value read (the caller asserts). */
static double s_wait_metric(const s_ctx_t *c, const s_daemon_t *d, const char *series,
                            double want, int at_least)
{
    double v = -1;
    for (;;) {
        int ok = s_metric_try(d, series, &v);
        if (ok && (v == want || (at_least && v >= want)))
            return v;
        if (s_left(c) <= 0)
            return ok ? v : -1;
        fm_proc_sleep(0.05);
    }
}

static void s_expect_metric(const s_ctx_t *c, const s_daemon_t *d, const char *who,
                            const char *series, double want)
{
    double v = s_wait_metric(c, d, series, want, 0);
    if (v != want)
        fail_msg("%s: %s is %.0f, expected %.0f", who, series, v, want);
}

/* The number of lines of the file at `path` that contain `needle`. */
static int s_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* Poll until the file holds a line with `needle`, within the budget. */
static int s_wait_line(const s_ctx_t *c, const char *path, const char *needle)
{
    while (!fm_proc_file_contains(path, needle)) {
        if (s_left(c) <= 0)
            return 0;
        fm_proc_sleep(0.05);
    }
    return 1;
}

/* The trainer id a fedmq-trainer of pid `pid` on this host uses ("<host>-<pid>", the host
 * name's bytes that an id may not hold as '_'). */
static void s_trainer_id(pid_t pid, char *out, size_t cap)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (fm_wire_text_check(FM_WIRE_TEXT_ID, p, 1) == 0)
            *p = '_';
    snprintf(out, cap, "%s-%d", host, (int)pid);
}

/* SIGTERM every daemon still running, in reverse order of start: each must exit 0. */
static void s_stop_all(s_ctx_t *c)
{
    for (int i = c->procs.n - 1; i >= 0; i--) {
        if (c->procs.pids[i] <= 0)
            continue;
        int st = fm_proc_stop(c->procs.pids[i], SIGTERM, S_STOP_S);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("pid %d: wait status 0x%x after SIGTERM, expected exit 0",
                     (int)c->procs.pids[i], st);
        c->procs.pids[i] = 0;
    }
}

/* A socket of `type` connected to `ep` (tcp://127.0.0.1:PORT) from source address `src`
 * (e.g. "127.0.0.2"; NULL: any), owned by the case (closed at its end, linger 0). Sends
 * block at most 10 s. */
static zsock_t *s_connect(s_ctx_t *c, int type, const char *ep, const char *src)
{
    assert_true(c->nsocks < 8);
    zsock_t *z = zsock_new(type);
    assert_non_null(z);
    zsock_set_linger(z, 0);
    zsock_set_sndtimeo(z, 10000);
    zsock_set_sndhwm(z, 2 * S_FUZZ); /* a whole flood fits in the queue */
    int rc = src ? zsock_connect(z, "tcp://%s:0;%s", src, ep + strlen("tcp://"))
                 : zsock_connect(z, "%s", ep);
    assert_int_equal(rc, 0);
    c->socks[c->nsocks++] = z;
    return z;
}

static void s_send(zsock_t *z, const void *p, size_t n)
{
    if (zmq_send(zsock_resolve(z), p, n, 0) != (int)n)
        fail_msg("send of %zu bytes failed: %s", n, zmq_strerror(zmq_errno()));
}

/* ---- (a) heartbeat flood ------------------------------------------------------------------ */

/* n HEARTBEATs of new ids "<prefix>-<i>" to both daemons from source address `src`. With
 * `bad_every` k > 0, every k-th claims 1,000,000 clients (impossible). */
static void s_flood(s_ctx_t *c, const char *src, const char *prefix, int n, int bad_every)
{
    zsock_t *b = s_connect(c, ZMQ_DEALER, c->ep_snap, src);
    zsock_t *a = s_connect(c, ZMQ_PUSH, c->ep_updates, src);
    for (int i = 0; i < n; i++) {
        fm_wire_member_t m = {.pid = (uint32_t)(100000 + i), .workers = 1, .seq = 1};
        snprintf(m.trainer, sizeof m.trainer, "%s-%d", prefix, i);
        if (bad_every && i % bad_every == 0) {
            m.client_first = 0;
            m.client_count = 1000000;
        } else {
            m.client_first = (uint32_t)(i % S_NCLIENTS);
            m.client_count = (uint32_t)(S_NCLIENTS - i % S_NCLIENTS);
        }
        assert_int_equal(fm_wire_encode_member(FM_WIRE_HEARTBEAT, &m, &c->buf), 0);
        s_send(b, c->buf.data, c->buf.len);
        s_send(a, c->buf.data, c->buf.len);
    }
}

/* Both daemons' refusal counters and live counts after a flood. */
static void s_expect_counts(s_ctx_t *c, const s_daemon_t *broker, const s_daemon_t *agg,
                            double clients_refused, double share_refused, double live)
{
    const s_daemon_t *d[2] = {broker, agg};
    const char *who[2] = {"broker", "aggregator"};
    for (int k = 0; k < 2; k++) {
        s_expect_metric(c, d[k], who[k], "fedmq_members_refused_total{reason=\"clients\"}",
                        clients_refused);
        s_expect_metric(c, d[k], who[k], "fedmq_members_refused_total{reason=\"peer_share\"}",
                        share_refused);
        s_expect_metric(c, d[k], who[k], "fedmq_members_refused_total{reason=\"foreign\"}", 0);
        s_expect_metric(c, d[k], who[k], "fedmq_members_refused_total{reason=\"full\"}", 0);
        double clients = -1;
        assert_true(s_metric_try(d[k], "fedmq_clients_live", &clients));
        if (clients < 0 || clients > S_NCLIENTS)
            fail_msg("%s: fedmq_clients_live %.0f, num_clients is %d", who[k], clients,
                     S_NCLIENTS);
    }
    s_expect_metric(c, broker, "broker", "fedmq_trainers_live", live);
}

static void test_heartbeat_flood(void **state)
{
    s_ctx_t *c = *state;
    s_common(c, "logreg", S_NCLIENTS);
    s_set(c, "broker.trainers_per_peer=%d", S_SHARE);
    s_set(c, "broker.heartbeat_timeout_s=120"); /* nobody expires during the case */
    s_set(c, "trainer.heartbeat_interval_s=0.5");
    /* cheap versions (no checkpoint per version): two logreg trainers make ~100 updates/s,
     * which a checkpoint per version would turn into a backlog */
    s_set(c, "aggregator.acks=false");
    s_set(c, "aggregator.checkpoint_every=1000");
    s_set(c, "aggregator.buffer_k=10");
    s_set(c, "aggregator.max_staleness=1000000");
    s_daemon_t agg = s_start(c, "aggregator", "aggregator", NULL);
    s_daemon_t broker = s_start(c, "broker", "broker", NULL);
    s_daemon_t t1 = s_start(c, "trainer", "trainer1", "trainer.clients=0-9");
    char id1[128], line[200];
    s_trainer_id(t1.pid, id1, sizeof id1);

    /* the real trainer is live on both and its updates are applied */
    s_expect_metric(c, &broker, "broker", "fedmq_trainers_live", 1);
    s_expect_metric(c, &agg, "aggregator", "fedmq_clients_live", 10);
    double applied = s_wait_metric(c, &agg, "fedmq_updates_applied_total", 10, 1);
    assert_true(applied >= 10);
    s_note(c, "trainer %s live, %.0f updates applied", id1, applied);

    /* flood 1, from 127.0.0.2: a third claim 1,000,000 clients (refused: clients), of the
     * others S_SHARE join and the rest are refused (peer_share) */
    s_flood(c, "127.0.0.2", "flood", S_FLOOD, 3);
    int bad = (S_FLOOD + 2) / 3, good = S_FLOOD - bad;
    s_expect_counts(c, &broker, &agg, bad, good - S_SHARE, 1 + S_SHARE);
    s_expect_metric(c, &broker, "broker", "fedmq_clients_live", S_NCLIENTS);
    s_expect_metric(c, &agg, "aggregator", "fedmq_clients_live", S_NCLIENTS);
    s_note(c,
           "flood of %d from 127.0.0.2: %d refused (clients), %d refused (peer_share), "
           "%d admitted; %d trainers live",
           S_FLOOD, bad, good - S_SHARE, S_SHARE, 1 + S_SHARE);

    /* the real trainer's updates are still applied */
    applied = s_wait_metric(c, &agg, "fedmq_updates_applied_total", applied + 20, 1);
    s_note(c, "%.0f updates applied after the flood", applied);

    /* a newcomer from 127.0.0.1 (another peer than the flood's) is not blocked */
    fm_wire_member_t late = {.trainer = "late-joiner",
                             .pid = 77,
                             .client_first = 10,
                             .client_count = 10,
                             .workers = 1};
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &late, &c->buf), 0);
    s_send(s_connect(c, ZMQ_DEALER, c->ep_snap, NULL), c->buf.data, c->buf.len);
    s_send(s_connect(c, ZMQ_PUSH, c->ep_updates, NULL), c->buf.data, c->buf.len);
    s_expect_metric(c, &broker, "broker", "fedmq_trainers_live", 2 + S_SHARE);
    assert_true(s_wait_line(c, broker.log, "trainer late-joiner joined"));
    assert_true(s_wait_line(c, agg.log, "trainer late-joiner (clients 10-19) joined"));

    /* flood 2, from 127.0.0.1 (the trainer's own address): the share left (S_SHARE - 2)
     * is filled, the rest refused; neither the trainer nor the newcomer is evicted */
    s_flood(c, NULL, "flood2", S_FLOOD, 0);
    /* live: trainer, newcomer, S_SHARE from 127.0.0.2, (S_SHARE - 2) from 127.0.0.1 */
    s_expect_counts(c, &broker, &agg, bad, (good - S_SHARE) + (S_FLOOD - (S_SHARE - 2)),
                    2 * S_SHARE);
    s_note(c, "flood of %d from 127.0.0.1: %d admitted, %d refused; %d trainers live", S_FLOOD,
           S_SHARE - 2, S_FLOOD - (S_SHARE - 2), 2 * S_SHARE);
    double before = applied;
    applied = s_wait_metric(c, &agg, "fedmq_updates_applied_total", before + 20, 1);
    assert_true(applied >= before + 20);
    double rejected = -1;
    assert_true(s_metric_try(&agg, "fedmq_updates_rejected_total{", &rejected));
    assert_true(rejected == 0);
    s_note(c, "%.0f updates applied, none rejected", applied);

    /* each joined once on each daemon and was never replaced, expired or left */
    const char *ids[2] = {id1, "late-joiner"};
    for (int k = 0; k < 2; k++) {
        snprintf(line, sizeof line, "trainer %s joined", ids[k]);
        assert_int_equal(s_count_lines(broker.log, line), 1);
        snprintf(line, sizeof line, "trainer %s (clients %s) joined", ids[k],
                 k ? "10-19" : "0-9");
        assert_int_equal(s_count_lines(agg.log, line), 1);
        const char *gone[] = {"restarted", "expired", "left"};
        for (int g = 0; g < 3; g++) {
            snprintf(line, sizeof line, "trainer %s %s", ids[k], gone[g]);
            assert_int_equal(s_count_lines(broker.log, line), 0);
            snprintf(line, sizeof line, "trainer %s (clients %s) %s", ids[k], k ? "10-19" : "0-9",
                     gone[g]);
            assert_int_equal(s_count_lines(agg.log, line), 0);
        }
    }
    s_stop_all(c);
    /* the broker's last summary: 2 * S_SHARE trainers serving at most 20 clients */
    snprintf(line, sizeof line, "summary: model version");
    FILE *f = fopen(broker.log, "r");
    assert_non_null(f);
    char buf[4096], last[4096] = "";
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, line))
            snprintf(last, sizeof last, "%s", buf);
    fclose(f);
    const char *p = strstr(last, "live trainers serving ");
    assert_non_null(p);
    long served = strtol(p + strlen("live trainers serving "), NULL, 10);
    assert_true(served >= 0 && served <= S_NCLIENTS);
    s_note(c, "broker's last summary: %.*s", (int)strcspn(p, ","), p);
}

/* ---- (b) forged text ------------------------------------------------------------------------
 */

/* Hostile ids: each holds bytes an id may not (and "FORGED-LINE" after a line break). */
static const char *const s_evil_ids[] = {
    "evil\nFORGED-LINE 2026-01-01T00:00:00.000Z fedmq-broker[1] INFO trainer admin joined",
    "evil\r\nFORGED-LINE crlf",
    "evil\x1b[31mFORGED-LINE-red\x1b[0m",
    "evil\x1b]0;FORGED-LINE-title\x07",
    "evil\x9b"
    "2JFORGED-LINE-c1",
    "evil\tFORGED-LINE-tab\x7f",
    "evil FORGED-LINE space",
    "evil\"},{\"FORGED-LINE\":\"json",
};
#define S_NEVIL ((int)(sizeof s_evil_ids / sizeof s_evil_ids[0]))

/* A membership message with any trainer id (written with msgpack-c: the encoder refuses). */
static void s_pack_member(msgpack_sbuffer *sb, const char *type, const char *trainer)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    bool hb = strcmp(type, "HEARTBEAT") == 0;
    msgpack_pack_map(&pk, hb ? 10 : 8);
#define S_KSTR(k, v)                                                                             \
    do {                                                                                         \
        msgpack_pack_str_with_body(&pk, k, strlen(k));                                           \
        msgpack_pack_str_with_body(&pk, v, strlen(v));                                           \
    } while (0)
#define S_KU(k, v)                                                                               \
    do {                                                                                         \
        msgpack_pack_str_with_body(&pk, k, strlen(k));                                           \
        msgpack_pack_uint64(&pk, v);                                                             \
    } while (0)
    S_KU("v", 1);
    S_KSTR("t", type);
    S_KSTR("trainer", trainer);
    S_KU("pid", 4242);
    S_KU("cfirst", 0);
    S_KU("ccount", 2);
    S_KU("workers", 1);
    S_KU("seq", strcmp(type, "HELLO") == 0 ? 0 : 5);
    if (hb) {
        S_KU("sent", 0);
        S_KU("busy", 0);
    }
}

static void s_pack_snapshot_req(msgpack_sbuffer *sb, const char *from)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    S_KU("v", 1);
    S_KSTR("t", "SNAPSHOT_REQ");
    S_KSTR("from", from);
#undef S_KSTR
#undef S_KU
}

/* A valid logreg UPDATE (zero delta) whose string `field` ("trainer", "model", "name" of
 * the first tensor, "dtype" of the first tensor) holds `evil` of the same length as the
 * placeholder it replaces; into c->buf. */
static void s_evil_update(s_ctx_t *c, const fm_model_t *lr, const float *zero, const char *field,
                          const char *evil)
{
    fm_wire_update_t u = {
        .trainer = "evil-test", .client = 0, .base = 0, .num_samples = 10, .local_steps = 1};
    for (int i = 0; i < FM_WIRE_ID_LEN; i++)
        u.id[i] = (uint8_t)(0x10 + i); /* never mistaken for a placeholder below */
    size_t n = strlen(evil);
    const char *find = NULL;
    if (strcmp(field, "trainer") == 0) {
        assert_true(n <= FM_WIRE_STR_MAX);
        memset(u.trainer, 'Q', n);
        u.trainer[n] = '\0';
        find = u.trainer;
    } else if (strcmp(field, "model") == 0)
        find = "logreg";
    else if (strcmp(field, "name") == 0)
        find = "fc.weight";
    else
        find = "F32";
    assert_int_equal(fm_wire_encode_update(&u, lr, zero, &c->buf), 0);
    unsigned char *p = memmem(c->buf.data, c->buf.len, find, strlen(find));
    assert_non_null(p);
    assert_true(strlen(find) == n);
    memcpy(p, evil, n);
}

/* Every byte of the file is printable ASCII or '\n', and "FORGED-LINE" is nowhere in it.
 * Returns the file's size. */
static size_t s_assert_clean_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open", path);
    size_t n = 0, line = 1;
    int ch, prev[11] = {0};
    char window[12] = {0};
    while ((ch = fgetc(f)) != EOF) {
        n++;
        if (ch == '\n')
            line++;
        else if (ch < 0x20 || ch > 0x7e)
            fail_msg("%s:%zu: byte 0x%02x", path, line, ch);
        memmove(prev, prev + 1, sizeof prev - sizeof prev[0]);
        prev[10] = ch;
        for (int k = 0; k < 11; k++)
            window[k] = (char)prev[k];
        if (strcmp(window, "FORGED-LINE") == 0)
            fail_msg("%s:%zu: \"FORGED-LINE\" in the file", path, line);
    }
    fclose(f);
    return n;
}

static void test_forged_text(void **state)
{
    s_ctx_t *c = *state;
    s_common(c, "logreg", S_NCLIENTS);
    s_set(c, "aggregator.buffer_k=2");
    s_set(c, "aggregator.max_staleness=1000");
    s_set(c, "aggregator.history_file=%s/aggregator-history.jsonl", c->dir);
    s_set(c, "trainer.history_file=%s/trainer-history.jsonl", c->dir);
    s_set(c, "trainer.clients=0-9");
    s_set(c, "broker.log_level=debug"); /* every line that could show an id */
    s_set(c, "aggregator.log_level=debug");
    s_daemon_t agg = s_start(c, "aggregator", "aggregator", NULL);
    s_daemon_t broker = s_start(c, "broker", "broker", NULL);
    s_daemon_t eval = s_start(c, "evaluator", "evaluator", NULL);
    s_daemon_t tr = s_start(c, "trainer", "trainer", NULL);
    double applied = s_wait_metric(c, &agg, "fedmq_updates_applied_total", 2, 1);
    assert_true(applied >= 2);
    s_expect_metric(c, &broker, "broker", "fedmq_trainers_live", 1);

    /* the hostile messages */
    zsock_t *b = s_connect(c, ZMQ_DEALER, c->ep_snap, NULL);
    zsock_t *a = s_connect(c, ZMQ_PUSH, c->ep_updates, NULL);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    static const char *const member_types[] = {"HELLO", "HEARTBEAT", "BYE"};
    int to_broker = 0, to_agg = 0;
    for (int i = 0; i < S_NEVIL; i++) {
        for (int t = 0; t < 3; t++) {
            s_pack_member(&sb, member_types[t], s_evil_ids[i]);
            s_send(b, sb.data, sb.size);
            s_send(a, sb.data, sb.size);
            to_broker++;
            to_agg++;
        }
        s_pack_snapshot_req(&sb, s_evil_ids[i]);
        s_send(b, sb.data, sb.size);
        to_broker++;
    }
    int err = 0;
    fm_model_t *lr = fm_model_new("logreg", &err);
    assert_non_null(lr);
    float *zero = calloc(fm_model_nparams(lr), sizeof *zero);
    assert_non_null(zero);
    for (int i = 0; i < S_NEVIL; i++) {
        s_evil_update(c, lr, zero, "trainer", s_evil_ids[i]);
        s_send(a, c->buf.data, c->buf.len);
        to_agg++;
    }
    static const char *const fields[][2] = {
        {"model", "lo\ngre"},      /* "logreg" */
        {"name", "fc.\x1b[2J\nx"}, /* "fc.weight" */
        {"dtype", "F\r\n"},        /* "F32" */
    };
    for (int i = 0; i < 3; i++) {
        s_evil_update(c, lr, zero, fields[i][0], fields[i][1]);
        s_send(a, c->buf.data, c->buf.len);
        to_agg++;
    }
    msgpack_sbuffer_destroy(&sb);

    /* each one rejected and counted, nothing else refused or rejected as malformed */
    s_expect_metric(c, &broker, "broker", "fedmq_frames_rejected_total{socket=\"snapshot\"}",
                    to_broker);
    s_expect_metric(c, &agg, "aggregator", "fedmq_updates_rejected_total{reason=\"malformed\"}",
                    to_agg);
    s_expect_metric(c, &broker, "broker", "fedmq_members_refused_total{", 0);
    s_expect_metric(c, &agg, "aggregator", "fedmq_members_refused_total{", 0);
    assert_true(s_wait_line(c, broker.log, "is not allowed in an id"));
    assert_true(s_wait_line(c, agg.log, "is not allowed in an id"));
    s_note(c, "%d hostile frames to the broker, %d to the aggregator: all rejected", to_broker,
           to_agg);

    /* the federation goes on: more versions, scored */
    applied = s_wait_metric(c, &agg, "fedmq_updates_applied_total", applied + 4, 1);
    s_expect_metric(c, &broker, "broker", "fedmq_trainers_live", 1);
    assert_true(s_wait_metric(c, &eval, "fedmq_evaluations_total", 2, 1) >= 2);
    s_note(c, "%.0f updates applied", applied);
    s_stop_all(c);
    (void)tr;

    /* no log or file of the run holds a control byte or the forged text */
    const char *files[] = {"aggregator.log",        "broker.log",     "evaluator.log",
                           "trainer.log",           "metrics.jsonl",  "aggregator-history.jsonl",
                           "trainer-history.jsonl", "ckpt/stats.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", c->dir, files[i]);
        size_t n = s_assert_clean_file(path);
        assert_true(n > 0);
        s_note(c, "%s: %zu bytes, clean", files[i], n);
    }
    free(zero);
    fm_model_destroy(&lr);
}

/* ---- (c) random and mutated frames -----------------------------------------------------------
 */

/* The valid frames the mutations start from. */
enum { B_HELLO, B_HEARTBEAT, B_BYE, B_SNAP, B_METRICS, B_ACK, B_UPDATE, B_MODEL, B_N };

typedef struct {
    fm_wire_buf_t b[B_N];
    fm_rng_t rng;
    unsigned char *work; /* a mutation's bytes */
    size_t cap;
} s_corpus_t;

static void s_corpus_init(s_corpus_t *k)
{
    memset(k, 0, sizeof *k);
    fm_rng_seed(&k->rng, 11, 0);
    int err = 0;
    fm_model_t *mlp = fm_model_new("mlp", &err), *lr = fm_model_new("logreg", &err);
    assert_non_null(mlp);
    assert_non_null(lr);
    fm_model_init(mlp, 1);
    fm_model_init(lr, 1);
    fm_wire_member_t m = {.trainer = "fuzz-t", .pid = 9, .client_count = 5, .workers = 1};
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &m, &k->b[B_HELLO]), 0);
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HEARTBEAT, &m, &k->b[B_HEARTBEAT]), 0);
    assert_int_equal(fm_wire_encode_member(FM_WIRE_BYE, &m, &k->b[B_BYE]), 0);
    fm_wire_snapshot_req_t r = {.from = "fuzz-r", .have = 3};
    assert_int_equal(fm_wire_encode_snapshot_req(&r, &k->b[B_SNAP]), 0);
    fm_wire_metrics_t mt = {.version = 1, .model = "mlp", .accuracy = 0.5};
    assert_int_equal(fm_wire_encode_metrics(&mt, &k->b[B_METRICS]), 0);
    uint8_t ids[FM_WIRE_ID_LEN] = {7};
    fm_wire_ack_t ak = {.boot = 1, .status = "applied", .ids = ids, .count = 1};
    assert_int_equal(fm_wire_encode_ack(&ak, &k->b[B_ACK]), 0);
    fm_wire_update_t u = {.trainer = "fuzz-u", .num_samples = 5};
    assert_int_equal(fm_wire_id_new(u.id), 0);
    assert_int_equal(fm_wire_encode_update(&u, mlp, fm_model_params(mlp), &k->b[B_UPDATE]), 0);
    fm_wire_model_t md = {.version = 1};
    assert_int_equal(fm_wire_encode_model(&md, lr, fm_model_params(lr), &k->b[B_MODEL]), 0);
    k->cap = k->b[B_UPDATE].len + 64;
    k->work = malloc(k->cap);
    assert_non_null(k->work);
    fm_model_destroy(&mlp);
    fm_model_destroy(&lr);
}

static void s_corpus_free(s_corpus_t *k)
{
    for (int i = 0; i < B_N; i++)
        fm_wire_buf_free(&k->b[i]);
    free(k->work);
}

static uint64_t s_below(s_corpus_t *k, uint64_t n) { return fm_rng_below(&k->rng, n); }

/* A byte that an id may not hold (the alphabet written out independently of fm_wire). */
static unsigned char s_bad_id_byte(s_corpus_t *k)
{
    static const char ok[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:@/";
    for (;;) {
        unsigned char b = (unsigned char)s_below(k, 256);
        if (b == 0 || !strchr(ok, b))
            return b;
    }
}

/* Crafted frames: huge declared lengths and counts, deep nesting, a non-string key, an
 * invalid byte, a negative version. */
static size_t s_crafted(s_corpus_t *k, int which)
{
    static const unsigned char head[] = {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa6,
                                         'U',  'P',  'D', 'A',  'T',  'E'};
    unsigned char *w = k->work;
    size_t n = 0;
    switch (which % 8) {
    case 0: memcpy(w, "\xdd\xff\xff\xff\xff", 5); return 5; /* array32 of 4 G entries */
    case 1: memcpy(w, "\xdf\xff\xff\xff\xff", 5); return 5; /* map32 of 4 G entries */
    case 2: /* {"v":1,"t":"UPDATE","id": bin32 4 GB} */
        memcpy(w, head, sizeof head);
        n = sizeof head;
        memcpy(w + n, "\xa2id\xc6\xff\xff\xff\xff", 8);
        return n + 8;
    case 3: /* {..., "tensors": array32 of 2^31} */
        memcpy(w, head, sizeof head);
        n = sizeof head;
        memcpy(w + n, "\xa7tensors\xdd\x80\x00\x00\x00", 13);
        return n + 13;
    case 4: /* {..., "x": 1,000 nested arrays} */
        memcpy(w, head, sizeof head);
        n = sizeof head;
        memcpy(w + n, "\xa1x", 2);
        n += 2;
        for (int i = 0; i < 1000; i++)
            w[n++] = 0x91;
        w[n++] = 0x01;
        return n;
    case 5: memcpy(w, "\x81\x01\x01", 3); return 3;                   /* a non-string key */
    case 6: memcpy(w, "\x82\xa1v\x01\xa1t\xc1", 7); return 7;         /* 0xc1 */
    default: memcpy(w, "\x82\xa1v\xff\xa1t\xa5HELLO", 11); return 11; /* "v": -1 */
    }
}

/* Mutation i of the corpus for the broker (`broker`) or the aggregator, into k->work;
 * returns its length. Every mutation is of a kind that must be rejected: a strict prefix of
 * a valid frame, a valid frame with bytes after it, an id with a byte ids may not hold, a
 * version other than 1, a top-level map count off by one, an unknown type name, a valid
 * message of a type the socket does not take, random bytes (valid with negligible
 * probability), a crafted frame. */
static size_t s_mutate(s_corpus_t *k, int i, int broker)
{
    static const int handled_b[] = {B_HELLO, B_HEARTBEAT, B_BYE, B_SNAP};
    static const int handled_a[] = {B_HELLO, B_HEARTBEAT, B_BYE};
    static const int other_b[] = {B_METRICS, B_ACK, B_MODEL};
    static const int other_a[] = {B_SNAP, B_METRICS, B_ACK, B_MODEL};
    int base = broker ? handled_b[s_below(k, 4)] : handled_a[s_below(k, 3)];
    const fm_wire_buf_t *src = &k->b[base];
    unsigned char *w = k->work;
    size_t n = src->len;
    switch (i % 10) {
    case 0: /* a strict prefix (of the big UPDATE too, for the aggregator) */
        if (!broker && s_below(k, 4) == 0)
            src = &k->b[B_UPDATE];
        n = (size_t)s_below(k, src->len < 4096 ? src->len : 4096);
        memcpy(w, src->data, n);
        return n;
    case 1: { /* bytes after the map */
        memcpy(w, src->data, n);
        size_t extra = 1 + (size_t)s_below(k, 8);
        for (size_t j = 0; j < extra; j++)
            w[n++] = (unsigned char)s_below(k, 256);
        return n;
    }
    case 2: { /* the id with a byte ids may not hold */
        memcpy(w, src->data, n);
        const char *id = base == B_SNAP ? "fuzz-r" : "fuzz-t";
        unsigned char *p = memmem(w, n, id, 6);
        assert_non_null(p);
        p[s_below(k, 6)] = s_bad_id_byte(k);
        return n;
    }
    case 3: /* "v" (encoded first, at byte 3) another positive fixint, not a version (1, 2) */
        memcpy(w, src->data, n);
        assert_true(w[1] == 0xa1 && w[2] == 'v' && w[3] == 0x01);
        w[3] = (unsigned char)(s_below(k, 2) ? 0 : 3 + s_below(k, 125));
        return n;
    case 4: /* the top map's count (a fixmap) one more or one less */
        memcpy(w, src->data, n);
        assert_true(w[0] >= 0x81 && w[0] < 0x8f);
        w[0] = (unsigned char)(w[0] + (s_below(k, 2) ? 1 : -1));
        return n;
    case 5: { /* one letter of "t" changed: an unknown type */
        memcpy(w, src->data, n);
        assert_true(w[4] == 0xa1 && w[5] == 't' && (w[6] & 0xe0) == 0xa0);
        size_t len = w[6] & 0x1f, at = 7 + (size_t)s_below(k, len);
        unsigned char was = w[at];
        do
            w[at] = (unsigned char)('A' + s_below(k, 26));
        while (w[at] == was);
        return n;
    }
    case 6: { /* a valid message of a type this socket does not take */
        const fm_wire_buf_t *o = broker ? &k->b[other_b[s_below(k, 3)]]
                                        : &k->b[other_a[s_below(k, 4)]];
        memcpy(w, o->data, o->len);
        return o->len;
    }
    case 7:
    case 8: /* random bytes */
        n = (size_t)s_below(k, 301);
        for (size_t j = 0; j < n; j++)
            w[j] = (unsigned char)s_below(k, 256);
        return n;
    default: return s_crafted(k, i / 10);
    }
}

/* The full-size UPDATE with a bad trainer id, one byte short, or one byte too many. */
static size_t s_mutate_update(s_corpus_t *k, int i)
{
    const fm_wire_buf_t *u = &k->b[B_UPDATE];
    memcpy(k->work, u->data, u->len);
    switch (i % 3) {
    case 0: {
        unsigned char *p = memmem(k->work, u->len, "fuzz-u", 6);
        assert_non_null(p);
        p[s_below(k, 6)] = s_bad_id_byte(k);
        return u->len;
    }
    case 1: return u->len - 1;
    default: k->work[u->len] = 0xc0; return u->len + 1;
    }
}

static void test_fuzz_sockets(void **state)
{
    s_ctx_t *c = *state;
    s_common(c, "mlp", 10);
    s_set(c, "trainer.clients=0-9");
    s_set(c, "aggregator.buffer_k=5");
    s_daemon_t agg = s_start(c, "aggregator", "aggregator", NULL);
    s_daemon_t broker = s_start(c, "broker", "broker", NULL);
    s_daemon_t eval = s_start(c, "evaluator", "evaluator", NULL);
    double rss0 = -1;
    s_wait_metric(c, &agg, "process_resident_memory_bytes", 0, 1);
    assert_true(s_metric_try(&agg, "process_resident_memory_bytes", &rss0));

    s_corpus_t k;
    s_corpus_init(&k);
    double t_send = fm_proc_now();
    /* 100,000 frames to the aggregator's PULL, each one message, and 100,000 messages to the
     * broker's ROUTER, one in 50 of two frames (never valid there), interleaved so that both
     * daemons work at once (the queues hold them all: no send waits for the other daemon) */
    zsock_t *a = s_connect(c, ZMQ_PUSH, c->ep_updates, NULL);
    zsock_t *b = s_connect(c, ZMQ_DEALER, c->ep_snap, NULL);
    int big = 0, multi = 0;
    for (int i = 0; i < S_FUZZ; i++) {
        size_t n = i % 1000 == 999 ? (big++, s_mutate_update(&k, i / 1000)) : s_mutate(&k, i, 0);
        s_send(a, k.work, n);
        n = s_mutate(&k, i, 1);
        if (i % 50 == 49) {
            unsigned char first = (unsigned char)(1 + s_below(&k, 255));
            if (zmq_send(zsock_resolve(b), &first, 1, ZMQ_SNDMORE) != 1)
                fail_msg("send: %s", zmq_strerror(zmq_errno()));
            multi++;
        }
        s_send(b, k.work, n);
    }
    s_note(c,
           "sent %d frames to the aggregator (%d full-size UPDATEs) and %d messages to "
           "the broker (%d of two frames) in %.1f s",
           S_FUZZ, big, S_FUZZ, multi, fm_proc_now() - t_send);

    /* every one rejected and counted, nothing applied, no membership changed */
    s_expect_metric(c, &agg, "aggregator", "fedmq_updates_rejected_total{", S_FUZZ);
    s_expect_metric(c, &broker, "broker", "fedmq_frames_rejected_total{socket=\"snapshot\"}",
                    S_FUZZ);
    s_expect_metric(c, &agg, "aggregator", "fedmq_updates_applied_total", 0);
    s_expect_metric(c, &agg, "aggregator", "fedmq_members_refused_total{", 0);
    s_expect_metric(c, &broker, "broker", "fedmq_trainers_live", 0);
    double rss1 = -1;
    assert_true(s_metric_try(&agg, "process_resident_memory_bytes", &rss1));
    s_note(c, "all rejected (%.1f s after the first send); aggregator RSS %.1f -> %.1f MiB%s",
           fm_proc_now() - t_send, rss0 / 1048576, rss1 / 1048576,
           S_ASAN ? " (ASan build: not bounded, LeakSanitizer at exit)" : "");
    if (!S_ASAN && rss1 - rss0 > S_RSS_GROWTH_MAX)
        fail_msg("aggregator RSS grew by %.1f MiB over the frames", (rss1 - rss0) / 1048576);
    const char *reasons[] = {"malformed", "truncated", "version", "unexpected_type"};
    for (int r = 0; r < 4; r++) {
        char series[96];
        double v = 0;
        snprintf(series, sizeof series, "fedmq_updates_rejected_total{reason=\"%s\"}",
                 reasons[r]);
        assert_true(s_metric_try(&agg, series, &v));
        assert_true(v > 0); /* the corpus reaches each of the decoder's verdicts */
        s_note(c, "  %s: %.0f", reasons[r], v);
    }
    s_corpus_free(&k);

    /* and a federation still converges */
    s_start(c, "trainer", "trainer", NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->dir);
    double best = 0;
    for (;;) {
        FILE *f = fopen(path, "r");
        char line[8192];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "\"accuracy\":");
            if (p && strtod(p + 11, NULL) > best)
                best = strtod(p + 11, NULL);
        }
        if (f)
            fclose(f);
        if (best >= S_ACC_BAR || s_left(c) <= 0)
            break;
        fm_proc_sleep(0.2);
    }
    if (best < S_ACC_BAR)
        fail_msg("accuracy %.2f not reached within the budget (best %.4f)", S_ACC_BAR, best);
    s_note(c, "accuracy %.4f reached", best);
    /* the counters did not move for the honest traffic */
    double rej = -1;
    assert_true(s_metric_try(&broker, "fedmq_frames_rejected_total{socket=\"snapshot\"}", &rej));
    assert_true(rej == S_FUZZ);
    (void)eval;
    s_stop_all(c);
}

/* ---- fixture ---------------------------------------------------------------------------- */

static int s_setup(void **state)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    zsys_handler_set(NULL);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    c->t0 = fm_proc_now();
    c->deadline = c->t0 + S_BUDGET_S;
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    for (int i = 0; i < c->nsocks; i++)
        zsock_destroy(&c->socks[i]);
    fm_proc_reap_all(&c->procs);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "logs kept in %s\n", c->dir);
    else
        fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    free(c);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_heartbeat_flood, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_forged_text, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_sockets, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
