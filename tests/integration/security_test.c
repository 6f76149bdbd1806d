/* security_test: CurveZMQ + ZAP allow-list ([security] mode = curve, issue 11) with the real
 * aggregator and broker on loopback. The test's own clients are made with CZMQ directly
 * (zcert_apply, zsock_set_curve_serverkey), not with fm_sec:
 *   1. enrolled vs not: an UPDATE pushed with a key that is not in allow_dir, or with no key
 *      at all (plain ZeroMQ), is never received (the aggregator's received counter and its
 *      version do not move); the same UPDATE with an enrolled key makes version 1;
 *   2. the model: a subscriber and a snapshot requester with a key not on the allow-list, or
 *      plain, get nothing from the broker, while an enrolled one gets the model;
 *   3. one trainer cannot speak for another: the key of 'pool-a' sending as 'pool-b', or for
 *      a client outside its enrolment, is rejected as "identity" (counted), and a HELLO as
 *      another trainer is refused by the broker (its live-trainer gauge stays 0);
 *   4. removal: once pool-b.cert leaves allow_dir, pool-b's next connection gets nowhere;
 *   5. the wire: a relay on loopback records every byte the broker sends to a subscriber;
 *      under curve the model's float bytes (a 64-byte slice of a tensor) are not in it,
 *      under mode none they are (so the search can find them).
 * Every wait is bounded; rejected connections are proven by a later enrolled message
 * getting through first (no plain sleeps as the proof). */
#include <czmq.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "fm_model.h"
#include "fm_sec.h"
#include "fm_wire.h"

#define S_WAIT_S 30.0

typedef struct {
    char dir[256];
    char keys[300];  /* every key pair */
    char allow[300]; /* the allow-list: public certificates */
    char ckpt[320];
    char ep_updates[64], ep_models[64], ep_pub[64], ep_snap[64];
    int agg_port, broker_port; /* /metrics */
    fm_proc_set_t procs;
    fm_model_t *layout; /* logreg */
    fm_wire_buf_t buf;
} s_ctx_t;

/* ---- keys and daemons -------------------------------------------------------------------- */

static void s_key(s_ctx_t *c, const char *name, const char *role, const char *clients, int enrol)
{
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_sec_keygen(c->keys, name, role, clients, NULL, &e), 0);
    if (enrol) {
        char from[400], to[400];
        snprintf(from, sizeof from, "%s/%s.cert", c->keys, name);
        snprintf(to, sizeof to, "%s/%s.cert", c->allow, name);
        assert_int_equal(link(from, to), 0);
    }
}

/* --set values for [security] (curve) into sets[], returns how many. */
static int s_security_sets(const s_ctx_t *c, int curve, char sets[][400])
{
    int n = 0;
    snprintf(sets[n++], 400, "security.mode=%s", curve ? "curve" : "none");
    if (!curve)
        return n;
    snprintf(sets[n++], 400, "security.allow_dir=%s", c->allow);
    snprintf(sets[n++], 400, "security.broker_cert=%s/broker.cert", c->keys);
    snprintf(sets[n++], 400, "security.aggregator_cert=%s/aggregator.cert", c->keys);
    snprintf(sets[n++], 400, "security.evaluator_cert=%s/evaluator.cert", c->keys);
    return n;
}

static pid_t s_spawn(s_ctx_t *c, const char *daemon, char sets[][400], int ns)
{
    char *argv[64], bin[300], log[400];
    int a = 0;
    snprintf(bin, sizeof bin, FM_BIN_DIR "/fedmq-%s", daemon);
    argv[a++] = bin;
    for (int i = 0; i < ns; i++) {
        argv[a++] = "--set";
        argv[a++] = sets[i];
    }
    argv[a++] = "--log-level";
    argv[a++] = "info";
    argv[a] = NULL;
    snprintf(log, sizeof log, "%s/%s.log", c->dir, daemon);
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    return pid;
}

/* Start the aggregator (logreg, K 1, FedAvg lr 1) and the broker, curve or none. */
static void s_start(s_ctx_t *c, int curve)
{
    char sets[24][400];
    int ns = s_security_sets(c, curve, sets);
    fm_proc_metrics_set(sets[ns++], 400, "aggregator", &c->agg_port);
    snprintf(sets[ns++], 400, "endpoints.updates=%s", c->ep_updates);
    snprintf(sets[ns++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[ns++], 400, "endpoints.acks=tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(sets[ns++], 400, "aggregator.checkpoint_dir=%s", c->ckpt);
    static const char *const fixed[] = {"federation.model=logreg",
                                        "aggregator.buffer_k=1",
                                        "aggregator.staleness=constant",
                                        "aggregator.server_optimizer=fedavg",
                                        "aggregator.server_lr=1",
                                        "aggregator.max_staleness=1000",
                                        "aggregator.weight_by_samples=false"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        snprintf(sets[ns++], 400, "%s", fixed[i]);
    s_spawn(c, "aggregator", sets, ns);

    ns = s_security_sets(c, curve, sets);
    fm_proc_metrics_set(sets[ns++], 400, "broker", &c->broker_port);
    snprintf(sets[ns++], 400, "federation.model=logreg");
    snprintf(sets[ns++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[ns++], 400, "endpoints.model_pub=%s", c->ep_pub);
    snprintf(sets[ns++], 400, "endpoints.snapshot=%s", c->ep_snap);
    s_spawn(c, "broker", sets, ns);
}

/* ---- the test's clients ------------------------------------------------------------------ */

/* A socket of `type` connected to `endpoint` as key `name` (NULL: plain) of the test's key
 * dir, trusting server `server`'s public certificate. */
static zsock_t *s_client(const s_ctx_t *c, int type, const char *name, const char *server,
                         const char *endpoint)
{
    zsock_t *s = zsock_new(type);
    assert_non_null(s);
    zsock_set_linger(s, 0);
    if (name) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s.cert", c->keys, name);
        zcert_t *me = zcert_load(path);
        snprintf(path, sizeof path, "%s/%s.cert", c->keys, server);
        zcert_t *srv = zcert_load(path);
        assert_true(me && srv);
        zcert_apply(me, s);
        zsock_set_curve_serverkey(s, zcert_public_txt(srv));
        zcert_destroy(&me);
        zcert_destroy(&srv);
    }
    if (type == ZMQ_SUB)
        zsock_set_subscribe(s, "");
    zsock_set_sndtimeo(s, 200); /* a refused connection: the send fails, never blocks */
    assert_int_equal(zsock_connect(s, "%s", endpoint), 0);
    return s;
}

/* Send an UPDATE (base 0, a small constant delta) as trainer `trainer`, client `client`.
 * Returns zmq's send result (-1 when nothing could be queued). */
static int s_send_update(s_ctx_t *c, zsock_t *push, const char *trainer, uint32_t client)
{
    fm_wire_update_t u;
    memset(&u, 0, sizeof u);
    assert_int_equal(fm_wire_id_new(u.id), 0);
    snprintf(u.trainer, sizeof u.trainer, "%s", trainer);
    u.client = client;
    u.num_samples = 10;
    u.local_steps = 1;
    size_t np = fm_model_nparams(c->layout);
    float *d = calloc(np, sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < np; i++)
        d[i] = 1e-3f;
    assert_int_equal(fm_wire_encode_update(&u, c->layout, d, &c->buf), 0);
    free(d);
    return zmq_send(zsock_resolve(push), c->buf.data, c->buf.len, 0);
}

/* The next MODEL on sub within `wait_s`: 1 with its version, else 0. */
static int s_recv_model(zsock_t *sub, double wait_s, uint64_t *version)
{
    double t0 = fm_proc_now();
    zsock_set_rcvtimeo(sub, 100);
    while (fm_proc_now() - t0 < wait_s) {
        zframe_t *f = zframe_recv(sub);
        if (!f)
            continue;
        fm_wire_type_t type = FM_WIRE_NONE;
        int ok = fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) == 0 &&
                 type == FM_WIRE_MODEL;
        if (ok && version) {
            fm_wire_model_t h;
            fm_wire_tensors_t *ts = calloc(1, sizeof *ts);
            ok = ts && fm_wire_decode_model(zframe_data(f), zframe_size(f), &h, ts, NULL) == 0;
            if (ok)
                *version = h.version;
            free(ts);
        }
        zframe_destroy(&f);
        if (ok)
            return 1;
    }
    return 0;
}

/* Wait until the aggregator publishes version >= want (seen by an enrolled subscriber). */
static uint64_t s_wait_version(s_ctx_t *c, zsock_t *sub, uint64_t want)
{
    uint64_t v = 0;
    double t0 = fm_proc_now();
    while (fm_proc_now() - t0 < S_WAIT_S)
        if (s_recv_model(sub, 1.0, &v) && v >= want)
            return v;
    fail_msg("no version %llu within %.0f s", (unsigned long long)want, S_WAIT_S);
    return v;
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int s_setup(void **state)
{
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->keys, sizeof c->keys, "%s/keys", c->dir);
    snprintf(c->allow, sizeof c->allow, "%s/allow", c->dir);
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->dir);
    if (mkdir(c->keys, 0700) != 0 || mkdir(c->allow, 0755) != 0)
        return -1;
    int p[4];
    for (int i = 0; i < 4; i++)
        if ((p[i] = fm_proc_free_port()) < 0)
            return -1;
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", p[0]);
    snprintf(c->ep_models, sizeof c->ep_models, "tcp://127.0.0.1:%d", p[1]);
    snprintf(c->ep_pub, sizeof c->ep_pub, "tcp://127.0.0.1:%d", p[2]);
    snprintf(c->ep_snap, sizeof c->ep_snap, "tcp://127.0.0.1:%d", p[3]);
    int err = 0;
    if (!(c->layout = fm_model_new("logreg", &err)))
        return -1;
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    fm_model_destroy(&c->layout);
    fm_wire_buf_free(&c->buf);
    fm_proc_rmtree(c->dir);
    free(c);
    return 0;
}

/* The keys of every test: the three servers (broker and evaluator enrolled: they connect
 * upstream), trainers pool-a (clients 0-4) and pool-b (5-9) enrolled, mallory (0-9) not. */
static void s_keys(s_ctx_t *c)
{
    s_key(c, "broker", "broker", NULL, 1);
    s_key(c, "aggregator", "aggregator", NULL, 0);
    s_key(c, "evaluator", "evaluator", NULL, 1);
    s_key(c, "pool-a", "trainer", "0-4", 1);
    s_key(c, "pool-b", "trainer", "5-9", 1);
    s_key(c, "mallory", "trainer", "0-9", 0);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_allow_list(void **state)
{
    s_ctx_t *c = *state;
    s_keys(c);
    s_start(c, 1);
    zsock_t *models = s_client(c, ZMQ_SUB, "pool-a", "aggregator", c->ep_models);
    assert_true(s_recv_model(models, S_WAIT_S, NULL)); /* the aggregator is up */

    /* 1. a key not on the list, and no key at all: nothing arrives */
    zsock_t *rogue = s_client(c, ZMQ_PUSH, "mallory", "aggregator", c->ep_updates);
    zsock_t *plain = s_client(c, ZMQ_PUSH, NULL, NULL, c->ep_updates);
    s_send_update(c, rogue, "mallory", 1); /* queued locally at most: never delivered */
    s_send_update(c, plain, "pool-a", 1);
    zsock_t *a = s_client(c, ZMQ_PUSH, "pool-a", "aggregator", c->ep_updates);
    assert_int_equal(s_send_update(c, a, "pool-a", 1) > 0, 1);
    assert_int_equal(s_wait_version(c, models, 1), 1);
    /* the enrolled update made version 1 alone: nothing else was received */
    assert_true(fm_http_metric(c->agg_port, "fedmq_updates_received_total") == 1.0);
    assert_true(fm_http_metric(c->agg_port, "fedmq_updates_applied_total") == 1.0);

    /* 3. pool-a's key speaking as pool-b, and for a client it is not enrolled for */
    assert_true(s_send_update(c, a, "pool-b", 6) > 0);
    assert_true(s_send_update(c, a, "pool-a", 7) > 0);
    assert_true(s_send_update(c, a, "pool-a", 2) > 0); /* allowed: version 2 */
    assert_int_equal(s_wait_version(c, models, 2), 2);
    assert_true(
        fm_http_metric(c->agg_port, "fedmq_updates_rejected_total{reason=\"identity\"}") == 2.0);
    assert_true(fm_http_metric(c->agg_port, "fedmq_updates_applied_total") == 2.0);

    /* 2. the model from the broker: enrolled yes, not enrolled and plain no. The broker
     * forwards new versions only: make them until the enrolled subscriber has one (its
     * subscription is then in place), then one more, which it must get and the others not */
    zsock_t *sub_ok = s_client(c, ZMQ_SUB, "pool-a", "broker", c->ep_pub);
    zsock_t *sub_rogue = s_client(c, ZMQ_SUB, "mallory", "broker", c->ep_pub);
    zsock_t *sub_plain = s_client(c, ZMQ_SUB, NULL, NULL, c->ep_pub);
    double applied = 2, received = 4;
    uint64_t v = 0;
    int got = 0;
    for (double t0 = fm_proc_now(); !got && fm_proc_now() - t0 < S_WAIT_S;) {
        assert_true(s_send_update(c, a, "pool-a", 2) > 0);
        applied++, received++;
        got = s_recv_model(sub_ok, 1.0, &v);
    }
    assert_true(got);
    assert_true(s_send_update(c, a, "pool-a", 2) > 0);
    applied++, received++;
    assert_int_equal(s_wait_version(c, sub_ok, (uint64_t)applied), (uint64_t)applied);
    assert_false(s_recv_model(sub_rogue, 0.5, NULL));
    assert_false(s_recv_model(sub_plain, 0.5, NULL));
    fm_wire_snapshot_req_t req = {.have = 0};
    snprintf(req.from, sizeof req.from, "test");
    assert_int_equal(fm_wire_encode_snapshot_req(&req, &c->buf), 0);
    zsock_t *d_rogue = s_client(c, ZMQ_DEALER, "mallory", "broker", c->ep_snap);
    zsock_t *d_ok = s_client(c, ZMQ_DEALER, "pool-b", "broker", c->ep_snap);
    zmq_send(zsock_resolve(d_rogue), c->buf.data, c->buf.len, 0);
    assert_true(zmq_send(zsock_resolve(d_ok), c->buf.data, c->buf.len, 0) > 0);
    assert_true(s_recv_model(d_ok, S_WAIT_S, NULL));
    assert_false(s_recv_model(d_rogue, 0.3, NULL));

    /* a HELLO as another trainer: the broker refuses it (no live trainer), its own is
     * accepted */
    fm_wire_member_t m = {.pid = 42, .client_first = 5, .client_count = 5, .workers = 1};
    snprintf(m.trainer, sizeof m.trainer, "pool-b");
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &m, &c->buf), 0);
    zsock_t *d_a = s_client(c, ZMQ_DEALER, "pool-a", "broker", c->ep_snap);
    assert_true(zmq_send(zsock_resolve(d_a), c->buf.data, c->buf.len, 0) > 0);
    snprintf(m.trainer, sizeof m.trainer, "pool-a");
    m.client_first = 0;
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &m, &c->buf), 0);
    assert_true(zmq_send(zsock_resolve(d_a), c->buf.data, c->buf.len, 0) > 0);
    double t0 = fm_proc_now();
    while (fm_http_metric(c->broker_port, "fedmq_trainers_live") < 1 &&
           fm_proc_now() - t0 < S_WAIT_S)
        fm_proc_sleep(0.05);
    assert_true(fm_http_metric(c->broker_port, "fedmq_trainers_live") == 1.0);
    assert_true(fm_http_metric(c->broker_port,
                               "fedmq_frames_rejected_total{socket=\"snapshot\"}") == 1.0);

    /* 4. pool-b leaves the allow-list: its next connection gets nowhere */
    char path[400];
    snprintf(path, sizeof path, "%s/pool-b.cert", c->allow);
    assert_int_equal(unlink(path), 0);
    zsock_t *b = s_client(c, ZMQ_PUSH, "pool-b", "aggregator", c->ep_updates);
    s_send_update(c, b, "pool-b", 6);
    assert_true(s_send_update(c, a, "pool-a", 3) > 0);
    applied++, received++;
    assert_int_equal(s_wait_version(c, models, (uint64_t)applied), (uint64_t)applied);
    assert_true(fm_http_metric(c->agg_port, "fedmq_updates_applied_total") == applied);
    assert_true(fm_http_metric(c->agg_port, "fedmq_updates_received_total") == received);

    zsock_t *all[] = {models,    rogue,   plain, a,   sub_ok, sub_rogue,
                      sub_plain, d_rogue, d_ok,  d_a, b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        zsock_destroy(&all[i]);
}

/* ---- 5. the bytes on the wire ----------------------------------------------------------- */

typedef struct {
    int listen_fd, upstream_port;
    volatile int stop;
    unsigned char *seen; /* bytes the server sent (capped) */
    size_t nseen, cap;
} s_relay_t;

/* Copy between one accepted client and the upstream port until either side closes; keep
 * the server's bytes. */
static void s_relay_one(s_relay_t *r, int cfd)
{
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(r->upstream_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sfd < 0 || connect(sfd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto done; /* the server is not up yet: the client reconnects */
    struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    unsigned char buf[65536];
    while (!r->stop) {
        if (poll(p, 2, 100) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0 || write(p[1 - i].fd, buf, (size_t)n) != n)
                goto done;
            if (i == 1 && r->nseen + (size_t)n <= r->cap) {
                memcpy(r->seen + r->nseen, buf, (size_t)n);
                r->nseen += (size_t)n;
            }
        }
    }
done:
    if (sfd >= 0)
        close(sfd);
    close(cfd);
}

/* Accept clients one after the other and relay each to the upstream port. */
static void *s_relay_run(void *arg)
{
    s_relay_t *r = arg;
    struct pollfd pl = {.fd = r->listen_fd, .events = POLLIN};
    while (!r->stop) {
        if (poll(&pl, 1, 100) <= 0)
            continue;
        int cfd = accept(r->listen_fd, NULL, NULL);
        if (cfd >= 0)
            s_relay_one(r, cfd);
    }
    return NULL;
}

/* Run a federation (curve or none), subscribe to the broker through the relay, take two
 * models; 1 if a 64-byte slice of the second model's "fc.weight" tensor appears in what the
 * relay saw. */
static int s_wire_shows_model(s_ctx_t *c, int curve)
{
    s_start(c, curve);
    zsock_t *a = s_client(c, ZMQ_PUSH, curve ? "pool-a" : NULL, "aggregator", c->ep_updates);
    s_relay_t r = {.cap = 8 << 20};
    r.seen = malloc(r.cap);
    assert_non_null(r.seen);
    r.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = fm_proc_free_port(), one = 1;
    setsockopt(r.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(r.listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(r.listen_fd, 4), 0);
    sscanf(strrchr(c->ep_pub, ':') + 1, "%d", &r.upstream_port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, s_relay_run, &r), 0);
    char via[64];
    snprintf(via, sizeof via, "tcp://127.0.0.1:%d", port);
    zsock_t *sub = s_client(c, ZMQ_SUB, curve ? "pool-a" : NULL, "broker", via);
    /* new versions until the (legitimate) subscriber behind the relay has one: its bytes
     * crossed the relay */
    zsock_set_rcvtimeo(sub, 100);
    fm_wire_tensors_t *ts = calloc(1, sizeof *ts);
    assert_non_null(ts);
    unsigned char slice[64];
    int have = 0;
    double t0 = fm_proc_now(), sent_at = 0;
    while (!have && fm_proc_now() - t0 < S_WAIT_S) {
        if (fm_proc_now() - sent_at > 1.0) {
            s_send_update(c, a, "pool-a", 1);
            sent_at = fm_proc_now();
        }
        zframe_t *f = zframe_recv(sub);
        fm_wire_model_t h;
        if (f && fm_wire_decode_model(zframe_data(f), zframe_size(f), &h, ts, NULL) == 0 &&
            h.version >= 1) {
            for (int i = 0; i < ts->count; i++)
                if (ts->t[i].nbytes >= 1024 && !have) {
                    memcpy(slice, (const unsigned char *)ts->t[i].data + 512, sizeof slice);
                    have = 1;
                }
        }
        zframe_destroy(&f);
    }
    if (!have)
        fail_msg("curve %d: no version >= 1 through the relay within %.0f s (relay carried %zu "
                 "bytes)",
                 curve, S_WAIT_S, r.nseen);
    r.stop = 1;
    pthread_join(th, NULL);
    close(r.listen_fd);
    int found = memmem(r.seen, r.nseen, slice, sizeof slice) != NULL;
    assert_true(r.nseen > 30000); /* the relay did carry at least one whole model */
    free(r.seen);
    free(ts);
    zsock_destroy(&sub);
    zsock_destroy(&a);
    fm_proc_reap_all(&c->procs);
    fm_proc_rmtree(c->ckpt);
    return found;
}

static void test_wire_encrypted(void **state)
{
    s_ctx_t *c = *state;
    s_keys(c);
    assert_true(s_wire_shows_model(c, 0));  /* plain: the search finds the floats */
    assert_false(s_wire_shows_model(c, 1)); /* curve: it does not */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_allow_list, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wire_encrypted, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
