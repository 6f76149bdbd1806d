/* aggregator_test: the real fedmq-aggregator on loopback. The test plays trainer and broker:
 * SUB to aggregator_models (MODEL frames), PUSH to updates (crafted UPDATEs, good and bad).
 * Model logreg, constant staleness, fedavg with server_lr 1 and unweighted samples, so a
 * version is exactly w0 + mean(deltas). Every wait is bounded; children are reaped and
 * temp dirs removed in the teardown. */
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
#include <lmdb.h>

#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "aggregator_server.h"
#include "fm_ckpt.h"
#include "fm_daemon.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_WAIT_S 60.0 /* bounded waits (generous: ASan builds on a loaded machine) */
#define S_MAX_SETS 24

typedef struct {
    char dir[256]; /* temp dir: checkpoints in dir/ckpt, logs in dir/agg.log */
    char ckpt[300];
    char log[300];
    char conf[300]; /* the config file of the reload test ("": none) */
    char ep_updates[64];
    char ep_models[64];
    fm_proc_set_t procs;
    pid_t pid;
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout; /* logreg, for encoding/decoding */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
} s_ctx_t;

/* ---- the daemon -----------------------------------------------------------------------------
 */

/* Start the aggregator: --config c->conf if set, then the fixed "--set"s (logreg, constant
 * staleness, fedavg, server_lr 1, unweighted, checkpoint_keep 3, the endpoints and
 * checkpoint_dir), then K, max_staleness and checkpoint_every (each only if >= 0: else from
 * the config file or the defaults), then the NULL-terminated "s.k=v" overrides `extra` (may
 * be NULL; a later --set wins); (re)connect SUB/PUSH. */
static void s_spawn(s_ctx_t *c, int k, int max_stale, int ckpt_every, const char *const *extra)
{
    static char sets[7][400];
    int ns = 0;
    fm_proc_metrics_set(sets[ns++], 400, "aggregator", NULL);
    snprintf(sets[ns++], 400, "endpoints.updates=%s", c->ep_updates);
    snprintf(sets[ns++], 400, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[ns++], 400, "aggregator.checkpoint_dir=%s", c->ckpt);
    if (k >= 0)
        snprintf(sets[ns++], 400, "aggregator.buffer_k=%d", k);
    if (max_stale >= 0)
        snprintf(sets[ns++], 400, "aggregator.max_staleness=%d", max_stale);
    if (ckpt_every >= 0)
        snprintf(sets[ns++], 400, "aggregator.checkpoint_every=%d", ckpt_every);
    static const char *const fixed[] = {
        "federation.model=logreg", "aggregator.staleness=constant",
        "aggregator.weight_by_samples=false", "aggregator.server_optimizer=fedavg",
        "aggregator.server_lr=1", "aggregator.checkpoint_keep=3",
        /* checkpoint_every as set: the acks = true path
         * (a checkpoint per version) is aggregator_ack_test */
        "aggregator.acks=false"};
    char *argv[2 * (S_MAX_SETS + 1) + 4];
    int a = 0;
    argv[a++] = FM_BIN_DIR "/fedmq-aggregator";
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
    fm_zdrain_destroy(&c->sub); /* the old publisher is gone: before a new one binds */
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "spawned %d, log %s, %s %s\n", (int)c->pid, c->log, c->ep_updates,
                c->ep_models);
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

/* Start with K, max_staleness, checkpoint_every and one more "s.k=v" override (extra, may
 * be NULL). */
static void s_start_ex(s_ctx_t *c, int k, int max_stale, int ckpt_every, const char *extra)
{
    const char *const sets[] = {extra, NULL};
    s_spawn(c, k, max_stale, ckpt_every, sets);
}

static void s_start(s_ctx_t *c, int k, int max_stale, int ckpt_every)
{
    s_start_ex(c, k, max_stale, ckpt_every, NULL);
}

/* Wait for a MODEL with version >= want; copy its params into w (may be NULL). Returns the
 * version, or -1 on timeout. */
static int64_t s_wait_model(s_ctx_t *c, uint64_t want, float *w)
{
    double end = fm_proc_now() + S_WAIT_S;
    while (fm_proc_now() < end) {
        zframe_t *f = zframe_recv(c->sub);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e);
        if (rc == 0)
            rc = fm_wire_tensors_check(c->ts, c->layout, &e);
        assert_int_equal(rc, 0);
        assert_string_equal(hdr.model, "logreg");
        if (hdr.version >= want) {
            if (w)
                assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
            zframe_destroy(&f);
            return (int64_t)hdr.version;
        }
        zframe_destroy(&f);
    }
    return -1;
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

/* The header of the test's UPDATEs: trainer "test-trainer", one step, `base`, `n`, `id`. */
static fm_wire_update_t s_update_hdr(uint64_t base, uint64_t n, const uint8_t id[FM_WIRE_ID_LEN])
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.id, id, FM_WIRE_ID_LEN);
    snprintf(h.trainer, sizeof h.trainer, "test-trainer");
    h.base = base;
    h.num_samples = n;
    h.local_steps = 1;
    return h;
}

/* Encode an UPDATE of delta (np floats) from `base` into c->buf; id is filled if NULL-id. */
static void s_update(s_ctx_t *c, uint64_t base, uint64_t n, const float *delta,
                     uint8_t id[FM_WIRE_ID_LEN])
{
    fm_wire_update_t h = s_update_hdr(base, n, id);
    assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
}

/* Send one fresh valid UPDATE of delta from base. */
static void s_send_valid(s_ctx_t *c, uint64_t base, const float *delta)
{
    uint8_t id[FM_WIRE_ID_LEN];
    assert_int_equal(fm_wire_id_new(id), 0);
    s_update(c, base, 10, delta, id);
    s_send(c, c->buf.data, c->buf.len);
}

/* Replace the first occurrence of pat (plen bytes) in the frame by rep (same length). */
static void s_mutate(unsigned char *f, size_t len, const void *pat, const void *rep, size_t plen)
{
    unsigned char *p = memmem(f, len, pat, plen);
    assert_non_null(p);
    memcpy(p, rep, plen);
}

/* ---- stats.json ---------------------------------------------------------------------------- */

static long long s_json_u(const char *text, const char *from, const char *key)
{
    const char *p = from ? strstr(text, from) : text;
    if (!p)
        return -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = strstr(p, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* A counter of stats.json: top-level key (reason NULL) or rejected.<reason>; -1 if absent. */
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
    return reason ? s_json_u(text, "\"rejected\": {", reason) : s_json_u(text, NULL, key);
}

typedef struct {
    const s_ctx_t *c;
    const char *key, *reason;
    long long want;
} s_statwait_t;

static int s_stat_reached(void *arg)
{
    s_statwait_t *w = arg;
    return s_stat(w->c, w->key, w->reason) >= w->want;
}

static int s_wait_stat(const s_ctx_t *c, const char *key, const char *reason, long long want)
{
    s_statwait_t w = {c, key, reason, want};
    return fm_proc_wait_for(s_stat_reached, &w, S_WAIT_S);
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int s_setup(void **state)
{
    /* temp dirs under the build dir unless TMPDIR says otherwise: /tmp/fedmq-test-* dirs
     * have been seen removed from under running tests by cleanups of parallel runs */
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->dir);
    snprintf(c->log, sizeof c->log, "%s/agg.log", c->dir);
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_models, sizeof c->ep_models, "tcp://127.0.0.1:%d", fm_proc_free_port());
    int err = 0;
    c->layout = fm_model_new("logreg", &err);
    c->ts = malloc(sizeof *c->ts);
    if (!c->layout || !c->ts)
        return -1;
    c->np = fm_model_nparams(c->layout);
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_reap_all(&c->procs);
    fm_zdrain_destroy(&c->sub);
    zsock_destroy(&c->push);
    if (getenv("FM_KEEP_LOGS")) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "ls -la '%s' '%s' >&2; cat '%s' >&2", c->dir, c->ckpt, c->log);
        if (system(cmd) != 0)
            fprintf(stderr, "no log\n");
    }
    fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    free(c->ts);
    fm_model_destroy(&c->layout);
    free(c);
    return 0;
}

static float *s_floats(size_t n) { return calloc(n, sizeof(float)); }

/* delta i: a deterministic, distinct small pattern */
static void s_delta(float *d, size_t n, int i)
{
    for (size_t j = 0; j < n; j++)
        d[j] = 1e-3f * (float)((int)((j * 7 + (size_t)i * 13) % 17) - 8) * (float)(i + 1);
}

/* ---- 1. initial model and one FedAvg step ---------------------------------------------------
 */

static void test_initial_and_fedavg(void **state)
{
    s_ctx_t *c = *state;
    const int k = 3;
    s_start(c, k, 5, 100);
    float *w0 = s_floats(c->np), *w1 = s_floats(c->np), *d = s_floats(c->np * k);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    for (int i = 0; i < k; i++) {
        s_delta(d + (size_t)i * c->np, c->np, i);
        s_send_valid(c, 0, d + (size_t)i * c->np);
    }
    assert_int_equal(s_wait_model(c, 1, w1), 1);
    double maxerr = 0;
    for (size_t j = 0; j < c->np; j++) {
        double want = w0[j];
        double sum = 0;
        for (int i = 0; i < k; i++)
            sum += d[(size_t)i * c->np + j];
        want += sum / k;
        double err = fabs(w1[j] - want);
        if (err > maxerr)
            maxerr = err;
    }
    assert_true(maxerr < 1e-6);
    assert_true(s_wait_stat(c, "updates_applied", NULL, k));
    assert_true(s_wait_stat(c, "version", NULL, 1));
    /* updates/s: the k updates over the daemon's young window (at most its age, >= 1 slot) */
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    print_message("stats.json: updates_per_s %.2f over %.0f s\n", st.updates_per_s,
                  st.rate_window_s);
    assert_true(st.rate_window_s == 30.0);
    assert_true(st.updates_per_s > 0.0 && st.updates_per_s <= k / 1.0 + 1e-9);
    free(w0);
    free(w1);
    free(d);
}

/* ---- 1b. version 0 from aggregator.init (safetensors) -------------------------------------- */

static void test_init_file(void **state)
{
    s_ctx_t *c = *state;
    char path[400], set[500];
    snprintf(path, sizeof path, "%s/init.safetensors", c->dir);
    fm_model_t *m = fm_model_new("logreg", NULL);
    assert_non_null(m);
    fm_model_init(m, 77);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_save_model(m, path, &e), 0);
    snprintf(set, sizeof set, "aggregator.init=%s", path);
    s_start_ex(c, 1, 5, 100, set);
    float *w0 = s_floats(c->np);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    assert_memory_equal(w0, fm_model_params(m), c->np * sizeof *w0);
    free(w0);
    fm_model_destroy(&m);
}

/* ---- 2. every rejection is counted and the daemon keeps going ------------------------------ */

static void test_rejections(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 2, 1, 100);
    float *d = s_floats(c->np);
    s_delta(d, c->np, 1);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    for (uint64_t v = 0; v < 2; v++) { /* to version 2, so that base 0 is stale */
        s_send_valid(c, v, d);
        s_send_valid(c, v, d);
        assert_true(s_wait_model(c, v + 1, NULL) == (int64_t)v + 1);
    }
    uint8_t id[FM_WIRE_ID_LEN];
    unsigned char *f;

    s_update(c, 0, 10, d, (fm_wire_id_new(id), id)); /* stale: tau 2 > 1 */
    s_send(c, c->buf.data, c->buf.len);
    s_update(c, 99, 10, d, (fm_wire_id_new(id), id)); /* future base */
    s_send(c, c->buf.data, c->buf.len);
    s_update(c, 2, 0, d, (fm_wire_id_new(id), id)); /* zero samples */
    s_send(c, c->buf.data, c->buf.len);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* fc.bias shape [10] -> [5] */
    s_mutate(c->buf.data, c->buf.len, "\xa5shape\x91\x0a", "\xa5shape\x91\x05", 8);
    s_send(c, c->buf.data, c->buf.len);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* unknown tensor name */
    s_mutate(c->buf.data, c->buf.len, "fc.bias", "fc.bixs", 7);
    s_send(c, c->buf.data, c->buf.len);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* another model's name */
    s_mutate(c->buf.data, c->buf.len, "\xa6logreg", "\xa6lagreg", 7);
    s_send(c, c->buf.data, c->buf.len);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* protocol version 3 (2 is taken) */
    s_mutate(c->buf.data, c->buf.len, "\xa1v\x01", "\xa1v\x03", 3);
    s_send(c, c->buf.data, c->buf.len);

    float *bad = s_floats(c->np); /* NaN in a tensor */
    memcpy(bad, d, c->np * sizeof *bad);
    bad[c->np - 3] = NAN;
    s_update(c, 2, 10, bad, (fm_wire_id_new(id), id));
    s_send(c, c->buf.data, c->buf.len);
    free(bad);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* truncated: a valid UPDATE cut in half */
    s_send(c, c->buf.data, c->buf.len / 2);

    static const char garbage[] = "\x93 this is not a msgpack map at all";
    s_send(c, garbage, sizeof garbage - 1);
    s_send(c, "", 0);

    fm_wire_member_t hello = {.pid = 1, .workers = 1};
    snprintf(hello.trainer, sizeof hello.trainer, "t1");
    fm_wire_buf_t hb = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_member(FM_WIRE_HELLO, &hello, &hb), 0);
    s_send(c, hb.data, hb.len); /* membership: taken, not rejected */
    fm_wire_snapshot_req_t req = {.have = 0};
    snprintf(req.from, sizeof req.from, "t1");
    assert_int_equal(fm_wire_encode_snapshot_req(&req, &hb), 0);
    s_send(c, hb.data, hb.len); /* not an UPDATE */
    fm_wire_buf_free(&hb);

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* valid, then the same id again */
    f = malloc(c->buf.len);
    memcpy(f, c->buf.data, c->buf.len);
    s_send(c, f, c->buf.len);
    s_send(c, f, c->buf.len);
    free(f);

    const char *reasons[] = {"stale",     "future",    "samples",         "shape",
                             "name",      "model",     "version",         "nonfinite",
                             "truncated", "duplicate", "unexpected_type", "malformed"};
    /* truncated: the half UPDATE and the empty frame */
    const long long counts[] = {1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1};
    for (size_t r = 0; r < sizeof reasons / sizeof reasons[0]; r++) {
        if (!s_wait_stat(c, NULL, reasons[r], counts[r]))
            fail_msg("stats.json: rejected.%s never reached %lld (now %lld)", reasons[r],
                     counts[r], s_stat(c, NULL, reasons[r]));
        assert_int_equal(s_stat(c, NULL, reasons[r]), counts[r]);
    }
    assert_true(s_wait_stat(c, "updates_rejected", NULL, 13));
    assert_int_equal(s_stat(c, "updates_rejected", NULL), 13);

    /* still serving: one more valid update completes the buffer (with the first copy) */
    s_send_valid(c, 2, d);
    assert_int_equal(s_wait_model(c, 3, NULL), 3);
    assert_true(s_wait_stat(c, "updates_applied", NULL, 6));
    assert_true(s_running(c->pid));
    free(d);
}

/* Random byte mutations of valid UPDATEs: never a crash, and the daemon keeps serving. */
static void test_fuzzed_frames(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 2, 1000, 1000);
    float *d = s_floats(c->np);
    s_delta(d, c->np, 4);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    long long sent = 0;
    for (int i = 0; i < 300; i++) {
        uint8_t id[FM_WIRE_ID_LEN];
        assert_int_equal(fm_wire_id_new(id), 0);
        s_update(c, 0, 10, d, id);
        int flips = 1 + i % 4;
        for (int k = 0; k < flips; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            /* mostly the header (first 200 bytes), sometimes anywhere */
            size_t span = (i % 3) ? 200 : c->buf.len;
            c->buf.data[(rng >> 33) % span] ^= (uint8_t)(1u << ((rng >> 20) % 8));
        }
        size_t len = c->buf.len;
        if (i % 7 == 0)
            len = (size_t)((rng >> 40) % len);
        s_send(c, c->buf.data, len);
        sent += (long long)len;
    }
    /* every frame seen (none over ZMQ_MAXMSGSIZE), some rejected */
    assert_true(s_wait_stat(c, "bytes_received", NULL, sent));
    assert_int_equal(s_stat(c, "bytes_received", NULL), sent);
    assert_true(s_stat(c, "updates_rejected", NULL) >= 100);
    int64_t v = s_wait_model(c, 0, NULL);
    assert_true(v >= 0);
    s_send_valid(c, (uint64_t)v, d);
    s_send_valid(c, (uint64_t)v, d);
    assert_true(s_wait_model(c, (uint64_t)v + 1, NULL) >= v + 1);
    assert_true(s_running(c->pid));
    int st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    free(d);
}

/* ---- 3. kill -9 after a checkpoint: resume, never lower ------------------------------------ */

static void test_kill9_resume(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 1, 5, 1);
    float *d = s_floats(c->np), *w2 = s_floats(c->np), *wr = s_floats(c->np);
    s_delta(d, c->np, 2);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    s_send_valid(c, 0, d);
    assert_int_equal(s_wait_model(c, 1, NULL), 1);
    uint8_t id[FM_WIRE_ID_LEN];
    assert_int_equal(fm_wire_id_new(id), 0);
    s_update(c, 1, 10, d, id);
    unsigned char *again = malloc(c->buf.len);
    size_t again_len = c->buf.len;
    memcpy(again, c->buf.data, again_len);
    s_send(c, again, again_len);
    assert_int_equal(s_wait_model(c, 2, w2), 2);
    /* stats.json is written after the version's checkpoint */
    assert_true(s_wait_stat(c, "version", NULL, 2));

    int st = fm_proc_stop(c->pid, SIGKILL, 5.0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    s_start(c, 1, 5, 1);
    int64_t v = s_wait_model(c, 0, wr);
    assert_true(v >= 2);
    assert_int_equal(v, 2);
    assert_memory_equal(wr, w2, c->np * sizeof *wr);
    assert_true(fm_proc_file_contains(c->log, "resumed from checkpoint version 2"));

    /* the update folded before the crash is remembered: its resend is a duplicate */
    s_send(c, again, again_len);
    assert_true(s_wait_stat(c, NULL, "duplicate", 1));
    /* and new work is accepted */
    s_send_valid(c, 2, d);
    assert_int_equal(s_wait_model(c, 3, NULL), 3);
    assert_true(s_wait_stat(c, "updates_applied", NULL, 3));
    free(again);
    free(d);
    free(w2);
    free(wr);
}

/* ---- 4. SIGTERM: final checkpoint, exit 0; bad config: exit 2 ----------------------------- */

static void test_sigterm_and_bad_config(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 1, 5, 100); /* no periodic checkpoint before version 100 */
    float *d = s_floats(c->np);
    s_delta(d, c->np, 3);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    s_send_valid(c, 0, d);
    assert_int_equal(s_wait_model(c, 1, NULL), 1);
    int st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    assert_non_null(ck);
    uint64_t latest = 0;
    assert_int_equal(fm_ckpt_latest_version(ck, &latest, &e), 0);
    assert_int_equal(latest, 1);
    fm_ckpt_info_t info;
    assert_int_equal(fm_ckpt_load_latest(ck, &info, NULL, 0, NULL, 0, &e), 0);
    assert_int_equal(info.version, 1);
    assert_int_equal(info.updates_applied, 1);
    fm_ckpt_close(&ck);
    assert_int_equal(s_stat(c, "version", NULL), 1);

    char *bad[] = {FM_BIN_DIR "/fedmq-aggregator", "--set", "aggregator.buffer_k=-1", NULL};
    pid_t p = fm_proc_spawn(&c->procs, bad, c->log);
    assert_true(p > 0);
    st = fm_proc_wait(p, 10.0);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    char *bad2[] = {FM_BIN_DIR "/fedmq-aggregator", "--no-such-flag", NULL};
    p = fm_proc_spawn(&c->procs, bad2, c->log);
    st = fm_proc_wait(p, 10.0);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    free(d);
}

/* ---- helpers of the tests below --------------------------------------------------------- */

/* Wait until the log has a line containing needle; 1, or 0 on timeout. */
static int s_wait_log(const s_ctx_t *c, const char *needle)
{
    double end = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, needle) && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    return fm_proc_file_contains(c->log, needle);
}

#define S_EXPECT_LOG(c, needle)                                                                  \
    do {                                                                                         \
        if (!s_wait_log((c), (needle)))                                                          \
            fail_msg("the aggregator never logged \"%s\"", (needle));                            \
    } while (0)

/* SIGTERM with an open buffer (async, 3 of K = 4 updates accepted): nothing accepted is
 * lost: the buffer becomes a last version (w0 + the mean of the 3 deltas), checkpointed. */
static void test_sigterm_folds_open_buffer(void **state)
{
    s_ctx_t *c = *state;
    const int k = 4, n = 3;
    s_start(c, k, 5, 100);
    float *w0 = s_floats(c->np), *w1 = s_floats(c->np), *d = s_floats(c->np * n);
    assert_int_equal(s_wait_model(c, 0, w0), 0);
    for (int i = 0; i < n; i++) {
        s_delta(d + (size_t)i * c->np, c->np, i);
        s_send_valid(c, 0, d + (size_t)i * c->np);
    }
    assert_true(s_wait_stat(c, "updates_pending", NULL, n));
    assert_int_equal(s_stat(c, "version", NULL), 0);
    int st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    S_EXPECT_LOG(c, "stopping: folding the open buffer (3 of 4 updates)");
    S_EXPECT_LOG(c, "stopping at version 1 (0 updates in the open buffer dropped)");
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    assert_non_null(ck);
    fm_ckpt_info_t info;
    assert_int_equal(fm_ckpt_load_latest(ck, &info, w1, c->np, NULL, 0, &e), 0);
    fm_ckpt_close(&ck);
    assert_int_equal(info.version, 1);
    assert_int_equal(info.updates_applied, n);
    double maxerr = 0;
    for (size_t j = 0; j < c->np; j++) {
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += d[(size_t)i * c->np + j];
        double err1 = fabs(w1[j] - (w0[j] + sum / n));
        maxerr = err1 > maxerr ? err1 : maxerr;
    }
    print_message("final version 1 = w0 + mean of the 3 buffered deltas, max error %.2g\n",
                  maxerr);
    assert_true(maxerr < 1e-6);
    assert_int_equal(s_stat(c, "version", NULL), 1);
    assert_int_equal(s_stat(c, "updates_applied", NULL), n);
    assert_int_equal(s_stat(c, "updates_pending", NULL), 0);
    free(w0);
    free(w1);
    free(d);
}

/* Lines of the file at path that contain needle. */
static int s_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* (Re)write c->conf: the [aggregator] keys of the reload test. */
static void s_write_conf(s_ctx_t *c, int k, int max_stale, int ckpt_every)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->conf);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f,
            "# written by aggregator_test\n[aggregator]\nbuffer_k = %d\nmax_staleness = %d\n"
            "checkpoint_every = %d\n",
            k, max_stale, ckpt_every);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, c->conf), 0); /* a SIGHUP never reads half a file */
}

/* Send one fresh UPDATE of delta from base with n samples. */
static void s_send_n(s_ctx_t *c, uint64_t base, uint64_t n, const float *delta)
{
    uint8_t id[FM_WIRE_ID_LEN];
    assert_int_equal(fm_wire_id_new(id), 0);
    s_update(c, base, n, delta, id);
    s_send(c, c->buf.data, c->buf.len);
}

/* ---- 5. SIGHUP: a reloadable key takes effect, a restart-only key is refused -------------- */

static void test_sighup_reload(void **state)
{
    s_ctx_t *c = *state;
    snprintf(c->conf, sizeof c->conf, "%s/agg.conf", c->dir);
    s_write_conf(c, 1, 3, 100); /* K 1: one update, one version */
    s_spawn(c, -1, -1, -1, NULL);
    float *d = s_floats(c->np);
    s_delta(d, c->np, 5);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    for (uint64_t v = 0; v < 3; v++) {
        s_send_valid(c, v, d);
        assert_int_equal(s_wait_model(c, v + 1, NULL), (int64_t)v + 1);
    }
    /* max_staleness 3: tau 3 is taken */
    s_send_valid(c, 0, d);
    assert_int_equal(s_wait_model(c, 4, NULL), 4);
    assert_true(s_wait_stat(c, "version", NULL, 4));
    assert_false(fm_proc_file_contains(c->log, "checkpoint version 4 saved"));

    /* reload max_staleness 3 -> 1 and checkpoint_every 100 -> 1 */
    s_write_conf(c, 1, 1, 1);
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    S_EXPECT_LOG(c, "SIGHUP: config reloaded; changed: [aggregator] max_staleness: 3 -> 1; "
                    "[aggregator] checkpoint_every: 100 -> 1");
    s_send_valid(c, 2, d); /* tau 2: taken before, stale now */
    assert_true(s_wait_stat(c, NULL, "stale", 1));
    s_send_valid(c, 3, d); /* tau 1 still fine: version 5, checkpointed at once */
    assert_int_equal(s_wait_model(c, 5, NULL), 5);
    assert_true(s_wait_stat(c, "version", NULL, 5));
    assert_int_equal(s_stat(c, NULL, "stale"), 1);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 5);
    assert_true(fm_proc_file_contains(c->log, "checkpoint version 5 saved (periodic"));

    /* buffer_k needs a restart: the whole reload is refused, max_staleness 3 included */
    s_write_conf(c, 2, 3, 1);
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    S_EXPECT_LOG(c, "SIGHUP: config not reloaded, the running one is kept: reload: "
                    "[aggregator] buffer_k changed from 1 to 2, which needs a restart");
    s_send_valid(c, 3, d); /* tau 2: still stale (max_staleness 1 in force) */
    assert_true(s_wait_stat(c, NULL, "stale", 2));
    s_send_valid(c, 5, d); /* K still 1: one update makes version 6 */
    assert_int_equal(s_wait_model(c, 6, NULL), 6);
    assert_true(s_wait_stat(c, "version", NULL, 6));
    assert_int_equal(s_stat(c, NULL, "stale"), 2);
    assert_int_equal(s_stat(c, "updates_applied", NULL), 6);
    assert_int_equal(s_count_lines(c->log, "config not reloaded"), 1);
    assert_int_equal(s_count_lines(c->log, "config reloaded; "), 1);
    assert_true(fm_proc_file_contains(c->log, "checkpoint version 6 saved (periodic"));
    assert_true(s_running(c->pid));
    free(d);
}

/* ---- 6. checkpoint_keep: only the newest records stay ------------------------------------- */

/* The versions stored in c->ckpt, newest first (at most cap); the count, each valid. */
static size_t s_list_versions(const s_ctx_t *c, uint64_t *out, size_t cap)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    if (!ck)
        fail_msg("open %s: %s", c->ckpt, e.msg);
    fm_ckpt_info_t info[16];
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(ck, info, 16, &n, &e), 0);
    for (size_t i = 0; i < n && i < 16; i++) {
        assert_int_equal(info[i].status, 0);
        if (i < cap)
            out[i] = info[i].version;
    }
    fm_ckpt_close(&ck);
    return n;
}

static void test_checkpoint_keep(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 1, 5, 1); /* a checkpoint per version, checkpoint_keep 3 */
    float *d = s_floats(c->np);
    s_delta(d, c->np, 6);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    for (uint64_t v = 0; v < 6; v++) {
        s_send_valid(c, v, d);
        assert_int_equal(s_wait_model(c, v + 1, NULL), (int64_t)v + 1);
    }
    assert_true(s_wait_stat(c, "version", NULL, 6)); /* after version 6's checkpoint */
    /* read while the aggregator runs (LMDB readers do not block the writer) */
    uint64_t vs[16];
    size_t n = s_list_versions(c, vs, 16);
    assert_int_equal(n, 3);
    assert_int_equal(vs[0], 6);
    assert_int_equal(vs[1], 5);
    assert_int_equal(vs[2], 4);
    /* the shutdown checkpoint rewrites version 6 and prunes again */
    int st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    n = s_list_versions(c, vs, 16);
    assert_int_equal(n, 3);
    assert_int_equal(vs[0], 6);
    assert_int_equal(vs[2], 4);
    free(d);
}

/* ---- 7. a corrupt newest checkpoint: the whole older record, the lost number skipped ----- */

/* Flip one parameter byte of the stored record of `version` through LMDB directly (the
 * aggregator must be stopped): its CRC no longer matches. */
static void s_corrupt_record(const s_ctx_t *c, uint64_t version)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = (uint8_t)(version >> (56 - 8 * i));
    MDB_val k = {8, kb}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, c->ckpt, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "ckpt", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t *buf = malloc(v.mv_size);
    assert_non_null(buf);
    memcpy(buf, v.mv_data, v.mv_size);
    buf[FM_CKPT_HEADER_BYTES + 4 * 100 + 2] ^= 0x40;
    v.mv_data = buf;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(buf);
}

static void test_corrupt_newest_checkpoint(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 1, 5, 1);
    float *d = s_floats(c->np), *w2 = s_floats(c->np), *w3 = s_floats(c->np);
    float *wr = s_floats(c->np), *w4 = s_floats(c->np);
    s_delta(d, c->np, 7);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    for (uint64_t v = 0; v < 3; v++) {
        s_send_valid(c, v, d);
        assert_int_equal(s_wait_model(c, v + 1,
                                      v == 1   ? w2
                                      : v == 2 ? w3
                                               : NULL),
                         (int64_t)v + 1);
    }
    assert_true(s_wait_stat(c, "version", NULL, 3));
    int st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    s_corrupt_record(c, 3);
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    assert_non_null(ck);
    fm_ckpt_info_t info[4];
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(ck, info, 4, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(info[0].version, 3);
    assert_int_equal(info[0].status, FM_EFORMAT); /* the damage is real */
    assert_int_equal(info[1].version, 2);
    assert_int_equal(info[1].status, 0);
    fm_ckpt_close(&ck);

    /* restart: ONE record, version 2's: its number, params and counters; number 3 is lost */
    s_start(c, 1, 5, 1);
    assert_int_equal(s_wait_model(c, 0, wr), 2);
    assert_memory_equal(wr, w2, c->np * sizeof *wr);
    assert_memory_not_equal(wr, w3, c->np * sizeof *wr);
    assert_true(fm_proc_file_contains(c->log, "checkpoint version 3: CRC mismatch; loaded "
                                              "version 2 instead (1 newer record(s) skipped): "
                                              "resumed from checkpoint version 2 with its own "
                                              "params, counters (2 applied)"));
    assert_true(fm_proc_file_contains(c->log, "version 3 lost (updates based on it are "
                                              "rejected as future); the next version is 4"));
    /* one line says it all (beside the start's "[security] mode = none" warning) */
    assert_int_equal(s_count_lines(c->log, " WARN ") - s_count_lines(c->log, "mode = none"), 1);
    assert_true(s_wait_stat(c, "version", NULL, 2));
    assert_int_equal(s_stat(c, "updates_applied", NULL), 2);
    /* an update based on the lost version 3 is future; one based on 2 makes version 4 */
    s_send_valid(c, 3, d);
    assert_true(s_wait_stat(c, NULL, "future", 1));
    s_send_valid(c, 2, d);
    assert_int_equal(s_wait_model(c, 4, w4), 4);
    double maxerr = 0;
    for (size_t j = 0; j < c->np; j++) {
        double err4 = fabs((double)w4[j] - ((double)w2[j] + (double)d[j]));
        maxerr = err4 > maxerr ? err4 : maxerr;
    }
    assert_true(maxerr < 1e-6);
    assert_true(s_wait_stat(c, "version", NULL, 4));
    assert_int_equal(s_stat(c, "updates_applied", NULL), 3);
    st = fm_proc_stop(c->pid, SIGTERM, 15.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* version 4 was saved above the corrupt 3 (numbers only increase) */
    ck = fm_ckpt_open(c->ckpt, 0, &err, &e);
    assert_non_null(ck);
    fm_ckpt_info_t h;
    assert_int_equal(fm_ckpt_load_latest(ck, &h, NULL, 0, NULL, 0, &e), 0);
    assert_int_equal(h.version, 4);
    assert_int_equal(h.skipped, 0);
    assert_int_equal(h.updates_applied, 3);
    fm_ckpt_close(&ck);
    free(d);
    free(w2);
    free(w3);
    free(wr);
    free(w4);
}

/* ---- 8. staleness-weighted folding through FedAdam / FedAvgM ----------------------------- */

/* One configuration of the weighted test: staleness function, server optimiser, eta. */
typedef struct {
    const char *staleness; /* "polynomial" or "hinge" */
    double a, b;           /* staleness_a, staleness_b */
    const char *opt;       /* "fedadam" or "fedavgm" */
    double eta;
    int backoff; /* aggregator.momentum_backoff: beta1 / (1 + the buffer's mean staleness) */
} s_weighted_t;

/* s(tau) as docs and FedBuff/FedAsync define it, computed here on its own */
static double s_weight(const s_weighted_t *p, uint64_t tau)
{
    if (strcmp(p->staleness, "polynomial") == 0)
        return pow(1.0 + (double)tau, -p->a);
    return (double)tau <= p->b ? 1.0 : 1.0 / (p->a * ((double)tau - p->b) + 1.0);
}

#define S_WK 3     /* buffer_k */
#define S_WSTEPS 4 /* versions made */

static void s_run_weighted(s_ctx_t *c, const s_weighted_t *p)
{
    char st[64], sa[64], sb[64], so[64], sl[64];
    snprintf(st, sizeof st, "aggregator.staleness=%s", p->staleness);
    snprintf(sa, sizeof sa, "aggregator.staleness_a=%g", p->a);
    snprintf(sb, sizeof sb, "aggregator.staleness_b=%g", p->b);
    snprintf(so, sizeof so, "aggregator.server_optimizer=%s", p->opt);
    snprintf(sl, sizeof sl, "aggregator.server_lr=%g", p->eta);
    /* beta1, beta2 and tau: the documented defaults; server_momentum 0.9, set */
    const char *sm = "aggregator.server_momentum=0.9", *ws = "aggregator.weight_by_samples=true";
    const char *bo = p->backoff ? "aggregator.momentum_backoff=true"
                                : "aggregator.momentum_backoff=false";
    const char *const extra[] = {st, sa, sb, so, sl, sm, ws, bo, NULL};
    s_spawn(c, S_WK, 10, 100, extra);
    const int adam = strcmp(p->opt, "fedadam") == 0;
    const double beta1 = 0.9, beta2 = 0.99, tau_eps = 1e-3, momentum = 0.9;
    /* bases per step (the current version is step - 1) and sample counts per update */
    static const uint64_t base[S_WSTEPS][S_WK] = {{0, 0, 0}, {1, 0, 1}, {2, 1, 0}, {3, 3, 0}};
    static const uint64_t nsamp[S_WK] = {7, 19, 40};
    size_t np = c->np;
    float *wf = s_floats(np), *d = s_floats(np * S_WK);
    double *w = calloc(np, sizeof *w), *m = calloc(np, sizeof *m), *v = calloc(np, sizeof *v);
    double *prev = calloc(np, sizeof *prev);
    assert_true(w && m && v && prev);
    assert_int_equal(s_wait_model(c, 0, wf), 0);
    for (size_t j = 0; j < np; j++) {
        w[j] = wf[j];
        v[j] = tau_eps * tau_eps; /* FedOpt: v starts at tau^2, m at 0 */
    }
    for (int s = 0; s < S_WSTEPS; s++) {
        double ntot = 0;
        for (int i = 0; i < S_WK; i++) {
            /* distinct deltas per step and update, and large against tau_eps */
            float *di = d + (size_t)i * np;
            s_delta(di, np, 3 * s + i);
            for (size_t j = 0; j < np; j++)
                di[j] *= (float)(1 + ((j + (size_t)s) % 5));
            s_send_n(c, base[s][i], nsamp[(i + s) % S_WK], di);
            ntot += (double)nsamp[(i + s) % S_WK];
        }
        assert_int_equal(s_wait_model(c, (uint64_t)s + 1, wf), s + 1);
        double maxerr = 0, maxstep = 0, unweighted = 0, stale = 0;
        for (int i = 0; i < S_WK; i++)
            stale += (double)((uint64_t)s - base[s][i]) / S_WK;
        const double b1 = (adam ? beta1 : momentum) / (p->backoff ? 1.0 + stale : 1.0);
        for (size_t j = 0; j < np; j++) {
            double dbar = 0, dplain = 0;
            for (int i = 0; i < S_WK; i++) {
                double nd = (double)nsamp[(i + s) % S_WK] * d[(size_t)i * np + j];
                dbar += s_weight(p, (uint64_t)s - base[s][i]) * nd;
                dplain += nd;
            }
            dbar /= ntot;
            dplain /= ntot;
            prev[j] = w[j];
            double step;
            if (adam) {
                m[j] = b1 * m[j] + (1 - b1) * dbar;
                v[j] = beta2 * v[j] + (1 - beta2) * dbar * dbar;
                step = p->eta * m[j] / (sqrt(v[j]) + tau_eps);
            } else {
                m[j] = b1 * m[j] + dbar;
                step = p->eta * m[j];
            }
            w[j] += step;
            maxstep = fmax(maxstep, fabs(step));
            maxerr = fmax(maxerr, fabs((double)wf[j] - w[j]));
            unweighted = fmax(unweighted, fabs(dbar - dplain));
        }
        double rel = maxerr / maxstep;
        print_message("%s + %s, version %d: max |w - expected| %.3g, %.3g of the largest step "
                      "%.3g (staleness changes the mean by up to %.3g)\n",
                      p->staleness, p->opt, s + 1, maxerr, rel, maxstep, unweighted);
        if (!(rel < 1e-5))
            fail_msg("version %d: relative error %.3g", s + 1, rel);
        if (s == S_WSTEPS - 1) /* the check can tell: tau 3 moves the mean */
            assert_true(unweighted > 1e-3 * maxstep);
    }
    assert_true(s_wait_stat(c, "updates_applied", NULL, S_WK * S_WSTEPS));
    assert_int_equal(s_stat(c, "updates_rejected", NULL), 0);
    free(w);
    free(m);
    free(v);
    free(prev);
    free(wf);
    free(d);
}

static void test_weighted_fedadam(void **state)
{
    const s_weighted_t p = {"polynomial", 0.5, 0, "fedadam", 0.01, 0};
    s_run_weighted(*state, &p);
}

static void test_weighted_fedavgm(void **state)
{
    const s_weighted_t p = {"hinge", 0.5, 1, "fedavgm", 0.5, 0};
    s_run_weighted(*state, &p);
}

/* The momentum backing off with staleness (mean staleness 0, 2/3, 4/3, 5/3 per version) */
static void test_weighted_backoff(void **state)
{
    const s_weighted_t p = {"hinge", 0.5, 1, "fedavgm", 0.5, 1};
    s_run_weighted(*state, &p);
}

static void test_weighted_backoff_fedadam(void **state)
{
    const s_weighted_t p = {"polynomial", 0.5, 0, "fedadam", 0.01, 1};
    s_run_weighted(*state, &p);
}

/* ---- 9. the time budget: stats.json "time" from the updates' clocks and the daemon's --- */

/* Send an UPDATE of delta from base 0 with the timing fields given. */
static void s_send_timed(s_ctx_t *c, const float *delta, double secs, double sent_at, double wait)
{
    uint8_t id[FM_WIRE_ID_LEN];
    assert_int_equal(fm_wire_id_new(id), 0);
    fm_wire_update_t h = s_update_hdr(0, 10, id);
    h.train_seconds = secs;
    h.sent_at = sent_at;
    h.idle_before = wait;
    assert_int_equal(fm_wire_encode_update(&h, c->layout, delta, &c->buf), 0);
    s_send(c, c->buf.data, c->buf.len);
}

static void test_time_budget(void **state)
{
    s_ctx_t *c = *state;
    s_start(c, 2, 100, 1); /* K = 2, a checkpoint at every version */
    float *d = s_floats(c->np);
    s_delta(d, c->np, 1);
    assert_int_equal(s_wait_model(c, 0, NULL), 0);
    double sent = fm_daemon_wallclock() - 0.25; /* each took at least 0.25 s to arrive */
    for (int i = 0; i < 4; i++)                 /* timed: secs 1.5 .. 4.5, a wait of 0.125 each */
        s_send_timed(c, d, 1.5 + i, sent, 0.125);
    /* untrusted values are left out: "ts" an hour ahead (a negative transport) with a NaN
     * "secs"; a NaN "wait"; then no "ts" at all */
    s_send_timed(c, d, NAN, fm_daemon_wallclock() + 3600.0, 0.5);
    s_send_timed(c, d, 0.75, sent, NAN);
    s_send_timed(c, d, 0.25, 0.0, 0.0);
    s_send_timed(c, d, -2.0, 0.0, 0.0); /* a negative "secs" */
    assert_true(s_wait_stat(c, "version", NULL, 4));
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    double now = fm_daemon_wallclock();
    print_message("time: versions %llu updates %llu timed %llu fold %.4f version %.4f "
                  "checkpoint %.4f train %.3f wait %.3f transport %.3f\n",
                  (unsigned long long)st.time.versions, (unsigned long long)st.time.updates,
                  (unsigned long long)st.time.timed, st.time.fold_s, st.time.version_s,
                  st.time.checkpoint_s, st.time.train_s, st.time.wait_s, st.time.transport_s);
    assert_int_equal(st.time.versions, 4);
    assert_int_equal(st.time.updates, 8);
    assert_int_equal(st.time.timed, 4);
    assert_true(fabs(st.time.train_s - (1.5 + 2.5 + 3.5 + 4.5 + 0.75 + 0.25)) < 1e-9);
    assert_true(fabs(st.time.wait_s - 4 * 0.125) < 1e-9);
    /* each transport: at least the 0.25 s the ts was set back, at most until now */
    assert_true(st.time.transport_s >= 4 * 0.25 && st.time.transport_s <= 4 * (now - sent));
    /* the daemon's own time: something, and less than its life */
    assert_true(st.time.fold_s > 0 && st.time.fold_s < now - st.started);
    assert_true(st.time.version_s > 0 && st.time.checkpoint_s > 0 &&
                st.time.checkpoint_s <= st.time.version_s);
    free(d);
}

static void test_reason_names(void **state)
{
    assert_string_equal(agg_reason_name(AGG_REJ_MALFORMED), "malformed");
    assert_string_equal(agg_reason_name(AGG_REJ_SAMPLES), "samples");
    assert_string_equal(agg_reason_name(AGG_REJ_COUNT), "?");
}

int main(void)
{
    zsys_init();
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test_setup_teardown(test_initial_and_fedavg, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_init_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_rejections, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fuzzed_frames, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_kill9_resume, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_and_bad_config, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_folds_open_buffer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reload, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_keep, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_newest_checkpoint, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_weighted_fedadam, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_weighted_fedavgm, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_weighted_backoff, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_weighted_backoff_fedadam, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_time_budget, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
