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

#include "../support/fm_proc.h"
#include "aggregator_server.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_wire.h"

#define S_WAIT_S 20.0 /* bounded waits (generous for ASan builds) */

typedef struct {
    char dir[256];         /* temp dir: checkpoints in dir/ckpt, logs in dir/agg.log */
    char ckpt[300];
    char log[300];
    char ep_updates[64];
    char ep_models[64];
    fm_proc_set_t procs;
    pid_t pid;
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout;    /* logreg, for encoding/decoding */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
} s_ctx_t;

/* ---- the daemon ----------------------------------------------------------------------------- */

/* Start the aggregator with K, max_staleness, checkpoint_every and one more "s.k=v"
 * override (extra, may be NULL); (re)connect SUB/PUSH. */
static void s_start_ex(s_ctx_t *c, int k, int max_stale, int ckpt_every, const char *extra)
{
    char sk[64], sm[64], se[64], su[128], sp[128], sd[400];
    snprintf(sk, sizeof sk, "aggregator.buffer_k=%d", k);
    snprintf(sm, sizeof sm, "aggregator.max_staleness=%d", max_stale);
    snprintf(se, sizeof se, "aggregator.checkpoint_every=%d", ckpt_every);
    snprintf(su, sizeof su, "endpoints.updates=%s", c->ep_updates);
    snprintf(sp, sizeof sp, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sd, sizeof sd, "aggregator.checkpoint_dir=%s", c->ckpt);
    char *argv[] = {FM_BIN_DIR "/fedmq-aggregator",
                    "--set", "federation.model=logreg",
                    "--set", "aggregator.staleness=constant",
                    "--set", "aggregator.weight_by_samples=false",
                    "--set", "aggregator.server_optimizer=fedavg",
                    "--set", "aggregator.server_lr=1",
                    "--set", "aggregator.checkpoint_keep=3",
                    "--set", sk, "--set", sm, "--set", se, "--set", su, "--set", sp,
                    "--set", sd, "--log-level", "info", NULL, NULL, NULL};
    if (extra) {
        size_t n = sizeof argv / sizeof argv[0];
        argv[n - 3] = "--set";
        argv[n - 2] = (char *)extra;
    }
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
    if (getenv("FM_KEEP_LOGS"))
        fprintf(stderr, "spawned %d, log %s, %s %s\n", (int)c->pid, c->log, c->ep_updates,
                c->ep_models);
    zsock_destroy(&c->sub);
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

static void s_send(s_ctx_t *c, const void *data, size_t len)
{
    assert_int_equal(zmq_send(zsock_resolve(c->push), data, len, 0), (int)len);
}

/* Encode an UPDATE of delta (np floats) from `base` into c->buf; id is filled if NULL-id. */
static void s_update(s_ctx_t *c, uint64_t base, uint64_t n, const float *delta,
                     uint8_t id[FM_WIRE_ID_LEN])
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.id, id, FM_WIRE_ID_LEN);
    snprintf(h.trainer, sizeof h.trainer, "test-trainer");
    h.base = base;
    h.num_samples = n;
    h.local_steps = 1;
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
    zsock_destroy(&c->sub);
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

/* ---- 1. initial model and one FedAvg step --------------------------------------------------- */

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

    s_update(c, 2, 10, d, (fm_wire_id_new(id), id)); /* protocol version 2 */
    s_mutate(c->buf.data, c->buf.len, "\xa1v\x01", "\xa1v\x02", 3);
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

    const char *reasons[] = {"stale", "future", "samples", "shape", "name", "model", "version",
                             "nonfinite", "truncated", "duplicate", "unexpected_type",
                             "malformed"};
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
    assert_int_equal(kill(c->pid, 0), 0);
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
    assert_int_equal(kill(c->pid, 0), 0);
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
    /* SIGHUP re-reads the config (same values here) and the daemon keeps serving */
    assert_int_equal(kill(c->pid, SIGHUP), 0);
    double end = fm_proc_now() + S_WAIT_S;
    while (!fm_proc_file_contains(c->log, "SIGHUP: config reloaded") && fm_proc_now() < end)
        fm_proc_sleep(0.05);
    assert_true(fm_proc_file_contains(c->log, "SIGHUP: config reloaded"));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
