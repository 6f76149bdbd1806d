/* aggregator_store_test: the real fedmq-aggregator and the fedmq tool on damaged checkpoint
 * stores and a full disk (issue 10, "a checkpoint store that never crashes or silently
 * resets"; docs/RELIABILITY.md):
 *   - a truncated data.mdb: the aggregator exits 1 with one line naming the file and both
 *     sizes (never a SIGBUS); `fedmq checkpoints` / `--verify` / `fedmq export` exit 2; the
 *     copy taken before resumes;
 *   - an emptied data.mdb below its high-water mark: exit 1 with one line saying what to do;
 *     `fedmq checkpoints DIR --reset`, then a start from version 0 whose next version is above
 *     every number used, updates based on the lost ones rejected as future;
 *   - a full disk (a small tmpfs in the test's private mount namespace; root only, as in CI):
 *     the aggregator keeps publishing, stats.json stays current and counts the failed
 *     checkpoints, the failures are "no space left on device" and rate-limited, a clean stop
 *     says in one line that its final checkpoint failed and exits 1, and a restart resumes
 *     from the last good checkpoint without reusing the versions published meanwhile.
 * The test plays a trainer (PUSH of UPDATEs) and the broker (SUB to the MODEL feed). */
#include <czmq.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include <cmocka.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "../support/fm_sys.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_WAIT_S 20.0 /* bounded waits (generous for ASan builds) */
#define FEDMQ FM_BIN_DIR "/fedmq"

static int s_private_mounts = 0; /* main: a mount namespace of our own (root only) */

typedef struct {
    char dir[256]; /* temp dir: checkpoints in dir/ckpt (or on the tmpfs), logs in dir */
    char ckpt[400];
    char log[300];
    char mnt[300]; /* the tmpfs of the full-disk test ("": none) */
    char ep_updates[64];
    char ep_models[64];
    char ep_acks[64];
    int http_port; /* its /metrics */
    fm_proc_set_t procs;
    pid_t pid;
    zsock_t *sub;
    zsock_t *push;
    fm_model_t *layout; /* logreg */
    size_t np;
    fm_wire_tensors_t *ts;
    fm_wire_buf_t buf;
    float *delta;
} s_ctx_t;

/* ---- the daemon and the tool -------------------------------------------------------------- */

/* Start the aggregator on c->ckpt: logreg, K 1 (one update, one version), fedavg with lr 1,
 * a checkpoint per version, `keep` checkpoints kept; (re)connect SUB and PUSH. */
static void s_start(s_ctx_t *c, int keep)
{
    char sets[6][480];
    fm_proc_metrics_set(sets[4], sizeof sets[4], "aggregator", &c->http_port);
    snprintf(sets[0], sizeof sets[0], "endpoints.updates=%s", c->ep_updates);
    snprintf(sets[1], sizeof sets[1], "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(sets[2], sizeof sets[2], "aggregator.checkpoint_dir=%s", c->ckpt);
    snprintf(sets[3], sizeof sets[3], "aggregator.checkpoint_keep=%d", keep);
    snprintf(sets[5], sizeof sets[5], "endpoints.acks=%s", c->ep_acks);
    char *argv[] = {FM_BIN_DIR "/fedmq-aggregator",
                    "--set",
                    "federation.model=logreg",
                    "--set",
                    "aggregator.staleness=constant",
                    "--set",
                    "aggregator.weight_by_samples=false",
                    "--set",
                    "aggregator.server_optimizer=fedavg",
                    "--set",
                    "aggregator.server_lr=1",
                    "--set",
                    "aggregator.buffer_k=1",
                    "--set",
                    "aggregator.max_staleness=50",
                    "--set",
                    "aggregator.checkpoint_every=1",
                    "--set",
                    sets[0],
                    "--set",
                    sets[1],
                    "--set",
                    sets[2],
                    "--set",
                    sets[3],
                    "--set",
                    sets[4],
                    "--set",
                    sets[5],
                    "--log-level",
                    "info",
                    NULL};
    fm_zdrain_destroy(&c->sub); /* the old publisher is gone: before a new one binds */
    c->pid = fm_proc_spawn(&c->procs, argv, c->log);
    assert_true(c->pid > 0);
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

/* Wait for a MODEL with version >= want. Its version, or -1 on timeout. */
static int64_t s_wait_model(s_ctx_t *c, uint64_t want)
{
    double end = fm_proc_now() + S_WAIT_S;
    while (fm_proc_now() < end) {
        zframe_t *f = zframe_recv(c->sub);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        int rc = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e);
        zframe_destroy(&f);
        assert_int_equal(rc, 0);
        if (hdr.version >= want)
            return (int64_t)hdr.version;
    }
    return -1;
}

/* Send one fresh valid UPDATE based on `base`. */
static void s_send(s_ctx_t *c, uint64_t base)
{
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "test-trainer");
    h.base = base;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, c->layout, c->delta, &c->buf), 0);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* From version `from` (the current one) up to `to`: one update each, each MODEL awaited. */
static void s_make_versions(s_ctx_t *c, uint64_t from, uint64_t to)
{
    for (uint64_t v = from; v < to; v++) {
        s_send(c, v);
        if (s_wait_model(c, v + 1) != (int64_t)v + 1)
            fail_msg("no MODEL version %llu", (unsigned long long)v + 1);
    }
}

/* Wait for the aggregator to exit by itself; its exit code (a signal fails the test). */
static int s_wait_exit(s_ctx_t *c)
{
    int st = fm_proc_wait(c->pid, S_WAIT_S);
    if (st == -1)
        fail_msg("the aggregator did not exit within %.0f s", S_WAIT_S);
    if (WIFSIGNALED(st))
        fail_msg("the aggregator died of signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    return WEXITSTATUS(st);
}

/* SIGTERM and the exit code (a signal or a hang fails the test). */
static int s_stop(s_ctx_t *c)
{
    int st = fm_proc_stop(c->pid, SIGTERM, S_WAIT_S);
    if (!WIFEXITED(st))
        fail_msg("the aggregator did not exit after SIGTERM (status %d)", st);
    return WEXITSTATUS(st);
}

/* Run the fedmq tool; stdout into out, stderr into err (files in c->dir). Its exit code; a
 * signal or a hang fails the test. */
static int s_tool(s_ctx_t *c, char *const argv[])
{
    char out[400], err[400];
    snprintf(out, sizeof out, "%s/tool.out", c->dir);
    snprintf(err, sizeof err, "%s/tool.err", c->dir);
    pid_t pid = fm_sys_spawn(&c->procs, argv, out, err);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, S_WAIT_S);
    if (st == -1 || !WIFEXITED(st))
        fail_msg("fedmq %s %s: %s", argv[1], argv[2],
                 st == -1 ? "hung" : strsignal(WTERMSIG(st)));
    return WEXITSTATUS(st);
}

/* The tool's stderr (or stdout) has exactly `lines` lines and one contains needle. */
static void s_tool_said(s_ctx_t *c, const char *which, int lines, const char *needle)
{
    char path[400];
    snprintf(path, sizeof path, "%s/tool.%s", c->dir, which);
    char *text = fm_sys_slurp(path);
    assert_non_null(text);
    if ((lines >= 0 && fm_sys_count_lines(text) != lines) || !strstr(text, needle))
        fail_msg("tool %s: expected %d line(s) with \"%s\", got:\n%s", which, lines, needle,
                 text);
    free(text);
}

static fm_stats_t s_stats(const s_ctx_t *c)
{
    char path[500];
    fm_stats_t st;
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    if (fm_stats_read(path, &st, NULL) != 0)
        memset(&st, 0, sizeof st);
    return st;
}

typedef struct {
    const s_ctx_t *c;
    uint64_t version, failures;
} s_statwait_t;

static int s_stats_reached(void *arg)
{
    s_statwait_t *w = arg;
    fm_stats_t st = s_stats(w->c);
    return st.version >= w->version && st.checkpoint_failures >= w->failures;
}

/* Wait until stats.json shows at least `version` and `failures` failed checkpoints. */
static int s_wait_stats(const s_ctx_t *c, uint64_t version, uint64_t failures)
{
    s_statwait_t w = {c, version, failures};
    return fm_proc_wait_for(s_stats_reached, &w, S_WAIT_S);
}

static void s_copy(const char *from, const char *to)
{
    char *argv[] = {"/bin/cp", (char *)from, (char *)to, NULL};
    pid_t pid = fm_proc_spawn(NULL, argv, NULL);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, 30.0);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static long long s_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int s_setup(void **state)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->dir);
    snprintf(c->log, sizeof c->log, "%s/agg.log", c->dir);
    snprintf(c->ep_updates, sizeof c->ep_updates, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_models, sizeof c->ep_models, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(c->ep_acks, sizeof c->ep_acks, "tcp://127.0.0.1:%d", fm_proc_free_port());
    int err = 0;
    c->layout = fm_model_new("logreg", &err);
    c->ts = malloc(sizeof *c->ts);
    if (!c->layout || !c->ts)
        return -1;
    c->np = fm_model_nparams(c->layout);
    c->delta = calloc(c->np, sizeof *c->delta);
    if (!c->delta)
        return -1;
    for (size_t j = 0; j < c->np; j++)
        c->delta[j] = 1e-3f * (float)((int)(j % 13) - 6);
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
    if (c->mnt[0])
        umount2(c->mnt, MNT_DETACH);
    fm_proc_rmtree(c->dir);
    fm_wire_buf_free(&c->buf);
    free(c->ts);
    free(c->delta);
    fm_model_destroy(&c->layout);
    free(c);
    return 0;
}

/* ---- 1. a truncated data.mdb --------------------------------------------------------------- */

static void test_truncated(void **state)
{
    s_ctx_t *c = *state;
    char data[500], backup[500], out[500];
    snprintf(data, sizeof data, "%s/data.mdb", c->ckpt);
    snprintf(backup, sizeof backup, "%s/data.mdb.backup", c->dir);
    snprintf(out, sizeof out, "%s/model.safetensors", c->dir);
    s_start(c, 10);
    assert_int_equal(s_wait_model(c, 0), 0);
    s_make_versions(c, 0, 8);
    assert_true(s_wait_stats(c, 8, 0));
    assert_int_equal(s_stop(c), 0);
    s_copy(data, backup); /* what `mdb_copy` would give of a stopped store */

    long long size = s_size(data);
    assert_true(size > 0);
    assert_int_equal(truncate(data, size / 2), 0);
    s_start(c, 10);
    assert_int_equal(s_wait_exit(c), 1);
    char want[160];
    snprintf(want, sizeof want, "data.mdb: truncated: %lld bytes, but LMDB's meta page says",
             size / 2);
    assert_true(fm_proc_file_contains(c->log, want));
    assert_int_equal(fm_proc_file_count(c->log, " ERROR "), 1);
    assert_int_equal(s_size(data), size / 2); /* not touched */

    char *list[] = {FEDMQ, "checkpoints", c->ckpt, NULL};
    assert_int_equal(s_tool(c, list), 2);
    s_tool_said(c, "err", 1, "truncated");
    char *verify[] = {FEDMQ, "checkpoints", c->ckpt, "--verify", NULL};
    assert_int_equal(s_tool(c, verify), 2);
    s_tool_said(c, "err", 1, "truncated");
    char *exp[] = {FEDMQ, "export", "--checkpoint", c->ckpt, "--out", out, NULL};
    assert_int_equal(s_tool(c, exp), 2);
    s_tool_said(c, "err", 1, "truncated");

    /* the documented recovery: the backup back in place */
    s_copy(backup, data);
    assert_int_equal(s_tool(c, verify), 0);
    s_start(c, 10);
    assert_int_equal(s_wait_model(c, 0), 8);
    assert_true(fm_proc_file_contains(c->log, "resumed from checkpoint version 8"));
    assert_int_equal(s_stop(c), 0);
}

/* ---- 2. an emptied data.mdb, then the operator's reset ------------------------------------ */

static void test_empty_and_reset(void **state)
{
    s_ctx_t *c = *state;
    char data[500];
    snprintf(data, sizeof data, "%s/data.mdb", c->ckpt);
    s_start(c, 10);
    assert_int_equal(s_wait_model(c, 0), 0);
    s_make_versions(c, 0, 3);
    assert_true(s_wait_stats(c, 3, 0));
    assert_int_equal(s_stop(c), 0);

    assert_int_equal(truncate(data, 0), 0);
    s_start(c, 10);
    assert_int_equal(s_wait_exit(c), 1);
    assert_true(fm_proc_file_contains(c->log, "data.mdb is empty (0 bytes) but "
                                              "high_water.json says checkpoint version 3 was "
                                              "saved: restore a backup (mdb_copy) or start over "
                                              "with `fedmq checkpoints"));
    assert_int_equal(fm_proc_file_count(c->log, " ERROR "), 1);
    assert_int_equal(fm_proc_file_count(c->log, "no checkpoint in"), 1); /* the first start */
    assert_int_equal(s_size(data), 0);

    char *list[] = {FEDMQ, "checkpoints", c->ckpt, NULL};
    assert_int_equal(s_tool(c, list), 2);
    s_tool_said(c, "err", 1, "data.mdb: empty (0 bytes)");
    char *verify[] = {FEDMQ, "checkpoints", c->ckpt, "--verify", NULL};
    assert_int_equal(s_tool(c, verify), 2);
    char *reset[] = {FEDMQ, "checkpoints", c->ckpt, "--reset", NULL};
    assert_int_equal(s_tool(c, reset), 0);
    s_tool_said(c, "out", 1,
                "the store is empty: the aggregator starts from version 0 (init "
                "or seed); new versions start at 4");

    /* version 0 again, but no number is used twice: the next version is 4 */
    s_start(c, 10);
    assert_int_equal(s_wait_model(c, 0), 0);
    assert_true(fm_proc_file_contains(c->log, "the checkpoint store is empty: starting from "
                                              "version 0; versions 1-3 lost (updates based on "
                                              "them are rejected as future); the next version "
                                              "is 4"));
    assert_true(fm_proc_file_contains(c->log, "reset by an operator at"));
    s_send(c, 2); /* trained on the lost version 2 */
    s_send(c, 0);
    assert_int_equal(s_wait_model(c, 1), 4);
    assert_true(s_wait_stats(c, 4, 0));
    fm_stats_t st = s_stats(c);
    assert_int_equal(fm_stats_rejected(&st, "future"), 1);
    assert_int_equal(st.updates_applied, 1);
    assert_int_equal(st.checkpoint_version, 4);
    assert_int_equal(s_stop(c), 0);
    assert_int_equal(s_tool(c, verify), 0);
    s_tool_said(c, "out", 1, "0 problems");
}

/* ---- 3. a full disk --------------------------------------------------------------------------
 */

/* Fill the filesystem of `path` (a new file) to the last byte. */
static void s_fill_disk(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char chunk[65536];
    for (size_t sz = sizeof chunk; sz >= 1; sz /= 2)
        while (write(fd, chunk, sz) == (ssize_t)sz)
            ;
    close(fd);
}

static void test_full_disk(void **state)
{
    s_ctx_t *c = *state;
    if (!s_private_mounts) {
        if (geteuid() != 0) {
            print_message("SKIPPED test_full_disk: needs root for a private tmpfs mount\n");
            skip();
        }
        fail_msg("running as root but without a private mount namespace (unshare)");
    }
    char filler[400];
    snprintf(c->mnt, sizeof c->mnt, "%s/tmpfs", c->dir);
    assert_int_equal(mkdir(c->mnt, 0700), 0);
    if (mount("tmpfs", c->mnt, "tmpfs", 0, "size=4m") != 0)
        fail_msg("mount tmpfs on %s: %s", c->mnt, strerror(errno));
    snprintf(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->mnt);
    snprintf(filler, sizeof filler, "%s/filler", c->mnt);

    /* every checkpoint kept: each needs new pages once the disk is full */
    s_start(c, 1000);
    assert_int_equal(s_wait_model(c, 0), 0);
    s_make_versions(c, 0, 2);
    assert_true(s_wait_stats(c, 2, 0));
    assert_int_equal(s_stats(c).checkpoint_version, 2);

    /* the disk fills up: the aggregator goes on publishing, stats.json stays current */
    s_fill_disk(filler);
    s_make_versions(c, 2, 30);
    assert_true(s_wait_stats(c, 30, 1));
    fm_stats_t st = s_stats(c);
    assert_int_equal(st.version, 30);
    assert_int_equal(st.checkpoint_version, 2);
    assert_int_equal(st.checkpoint_failures, 28); /* one per version 3..30 */
    assert_int_equal(st.stats_write_failures, 0);
    /* /metrics counts the same failures */
    fm_http_resp_t r;
    assert_int_equal(fm_http_request(c->http_port, "GET", "/metrics", &r), 0);
    double nfail = -1;
    assert_int_equal(fm_http_sample(r.body, "fedmq_checkpoint_failures_total", &nfail), 1);
    assert_true(nfail == 28.0);
    assert_int_equal(fm_http_sample(r.body, "fedmq_stats_write_failures_total", &nfail), 1);
    assert_true(nfail == 0.0);
    fm_http_free(&r);
    int failed = fm_proc_file_count(c->log, "o space left on device");
    assert_true(failed >= 1);
    assert_true(failed <= 11); /* rate-limited: 10 lines per 10 s (+1 if a window turned) */
    assert_int_equal(fm_proc_file_count(c->log, "Input/output error"), 0);
    /* a clean stop whose final checkpoint fails: one line, exit 1 */
    assert_int_equal(s_stop(c), 1);
    assert_int_equal(fm_proc_file_count(c->log, "final checkpoint"), 1);
    assert_true(fm_proc_file_contains(c->log, "final checkpoint of version 30 failed: "));
    assert_true(fm_proc_file_contains(c->log, "; the state since checkpoint version 2 is lost"));

    /* full from the start: it serves, it never reuses the numbers published meanwhile */
    s_start(c, 1000);
    assert_int_equal(s_wait_model(c, 0), 2);
    assert_true(fm_proc_file_contains(c->log, "versions up to 30 were published but not "
                                              "checkpointed (high_water.json): resumed from "
                                              "checkpoint version 2 with its own params"));
    assert_true(fm_proc_file_contains(c->log, "versions 3-30 lost"));
    s_send(c, 20); /* based on a version that was never saved */
    s_send(c, 2);
    assert_int_equal(s_wait_model(c, 31), 31);
    assert_true(s_wait_stats(c, 31, 1));
    st = s_stats(c);
    assert_int_equal(fm_stats_rejected(&st, "future"), 1);
    assert_int_equal(st.checkpoint_version, 2);
    assert_int_equal(s_stop(c), 1);
    assert_int_equal(fm_proc_file_count(c->log, "final checkpoint"), 2);

    /* room again: the last good checkpoint, above every number used */
    assert_int_equal(unlink(filler), 0);
    s_start(c, 1000);
    assert_int_equal(s_wait_model(c, 0), 2);
    s_send(c, 2);
    assert_int_equal(s_wait_model(c, 32), 32);
    assert_true(s_wait_stats(c, 32, 0));
    assert_int_equal(s_stats(c).checkpoint_version, 32);
    assert_int_equal(s_stop(c), 0);
    char *verify[] = {FEDMQ, "checkpoints", c->ckpt, "--verify", NULL};
    assert_int_equal(s_tool(c, verify), 0);
}

int main(void)
{
    /* a private mount namespace for the tmpfs of test_full_disk, before any thread exists;
     * the daemons started by the test inherit it, and its mounts vanish with it */
    if (geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
        s_private_mounts = 1;
    zsys_init();
    zsys_handler_set(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_truncated, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_reset, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_full_disk, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
