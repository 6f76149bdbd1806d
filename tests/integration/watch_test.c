/* watch_test: `fedmq watch ENDPOINT --count N --timeout S` (tools/fedmq_watch.c, its --help
 * and docs/OPERATIONS.md, "Monitoring"):
 *  - against a test PUB socket publishing METRICS frames built with fm_wire's encoder (each
 *    after a frame that is not METRICS, which it skips with a line on stderr): exactly N lines
 *    on stdout, each the fields of one frame that was published (version, model, accuracy,
 *    loss, n, eval_s and, for frames with population fields, the "| K clients mean ..."
 *    part), in publishing order, then exit 0;
 *  - with no publisher: exit 1 after the timeout (not before it, and within a bounded
 *    grace), with one line on stderr and nothing on stdout.
 * Every wait is bounded; children are reaped. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <czmq.h>

#include "../support/fm_sys.h"
#include "fm_wire.h"

#define FEDMQ FM_BIN_DIR "/fedmq"
#define S_COUNT 3
#define S_FEED_S 30.0   /* fedmq watch gets its N lines */
#define S_TIMEOUT_S 1.5 /* --timeout of the no-publisher case */
#define S_GRACE_S 10.0  /* ... exit after it within this */

typedef struct {
    fm_proc_set_t procs;
    char dir[512], out[600], err[600];
} fx_t;

static fx_t *s_fx;

static int s_setup(void **state)
{
    (void)state;
    fx_t *fx = s_fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(fm_proc_tmpdir(fx->dir, sizeof fx->dir), 0);
    snprintf(fx->out, sizeof fx->out, "%s/stdout", fx->dir);
    snprintf(fx->err, sizeof fx->err, "%s/stderr", fx->dir);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    fx_t *fx = s_fx;
    s_fx = NULL;
    if (!fx)
        return 0;
    fm_proc_reap_all(&fx->procs);
    fm_proc_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* The METRICS frame number k: distinct values in every field; odd k carry population
 * fields, k not a multiple of 4 the aggregator's progress (absent: printed as 0). */
static fm_wire_metrics_t s_metrics(uint64_t k)
{
    fm_wire_metrics_t m = {.version = 100 + k,
                           .accuracy = 0.5 + 0.01 * (double)k,
                           .loss = 1.25 - 0.01 * (double)k,
                           .num_samples = 10000 + k,
                           .eval_seconds = 0.5 + 0.25 * (double)k,
                           .timestamp = 1.7e9 + k};
    snprintf(m.model, sizeof m.model, "mlp");
    for (int i = 0; i < FM_NCLASSES; i++)
        m.class_acc[i] = 0.5;
    if (k % 4) {
        m.applied = 1000 + 7 * k;
        m.updates_per_s = 2.5 + 0.25 * (double)k;
    }
    if (k % 2) {
        m.pop_clients = 20;
        m.pop_mean = 0.81;
        m.pop_min = 0.42;
        m.pop_worst = 17;
        m.pop_p10 = 0.63;
        m.pop_threshold = 0.7;
        m.pop_below = 0.15;
    }
    return m;
}

/* The line fedmq watch is documented to print for frame k. */
static void s_expected_line(uint64_t k, char *buf, size_t cap)
{
    fm_wire_metrics_t m = s_metrics(k);
    int n = snprintf(buf, cap,
                     "version=%" PRIu64 " model=mlp accuracy=%.4f loss=%.4f n=%" PRIu64
                     " eval_s=%.2f applied=%" PRIu64 " updates_per_s=%.1f",
                     m.version, m.accuracy, m.loss, m.num_samples, m.eval_seconds, m.applied,
                     m.updates_per_s);
    if (m.pop_clients)
        snprintf(buf + n, cap - (size_t)n,
                 " | 20 clients mean 0.81 worst 0.42 (client 17) p10 "
                 "0.63 below0.7 15%%");
}

static pid_t s_watch(fx_t *fx, const char *endpoint, const char *count, const char *timeout)
{
    char *av[] = {FEDMQ,         "watch",     (char *)endpoint, "--count",
                  (char *)count, "--timeout", (char *)timeout,  NULL};
    pid_t pid = fm_sys_spawn(&fx->procs, av, fx->out, fx->err);
    assert_true(pid > 0);
    return pid;
}

static void test_watch_feed(void **state)
{
    (void)state;
    fx_t *fx = s_fx;
    int port = 0;
    assert_int_equal(fm_sys_free_ports(&port, 1), 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    zsock_t *pub = zsock_new(ZMQ_PUB);
    assert_non_null(pub);
    zsock_set_linger(pub, 0);
    assert_int_equal(zsock_bind(pub, "%s", ep), port);
    char count[16];
    snprintf(count, sizeof count, "%d", S_COUNT);
    pid_t pid = s_watch(fx, ep, count, "20");

    /* publish frame k every 100 ms until fedmq watch exits (a PUB drops what is sent before
     * the subscription arrives: the first frames it sees may be any k); a frame that is not
     * METRICS first, once the subscriber is there */
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_wire_snapshot_req_t junk = {.from = "watch-test"};
    double end = fm_proc_now() + S_FEED_S;
    int status = -1;
    uint64_t k = 0;
    while (fm_proc_now() < end) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        status = -1;
        fm_wire_metrics_t m = s_metrics(k);
        { /* junk before every frame */
            assert_int_equal(fm_wire_encode_snapshot_req(&junk, &buf), 0);
            zframe_t *j = zframe_new(buf.data, buf.len);
            assert_int_equal(zframe_send(&j, pub, 0), 0);
        }
        assert_int_equal(fm_wire_encode_metrics(&m, &buf), 0);
        zframe_t *f = zframe_new(buf.data, buf.len);
        assert_int_equal(zframe_send(&f, pub, 0), 0);
        k++;
        fm_proc_sleep(0.1);
    }
    fm_wire_buf_free(&buf);
    zsock_destroy(&pub);
    if (status == -1)
        fail_msg("fedmq watch --count %d still running after %.0f s (%" PRIu64 " frames sent)",
                 S_COUNT, S_FEED_S, k);
    char *out = fm_sys_slurp(fx->out), *err = fm_sys_slurp(fx->err);
    assert_non_null(out);
    assert_non_null(err);
    print_message("%" PRIu64 " frames published; stdout:\n%sstderr:\n%s", k, out, err);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(fm_sys_count_lines(out), S_COUNT);
    /* consecutive frames from the first one it saw */
    uint64_t first = strtoull(out + strlen("version="), NULL, 10) - 100;
    const char *line = out;
    for (uint64_t i = 0; i < S_COUNT; i++) {
        char want[256];
        s_expected_line(first + i, want, sizeof want);
        size_t len = strcspn(line, "\n");
        if (len != strlen(want) || strncmp(line, want, len) != 0)
            fail_msg("line %" PRIu64 ": '%.*s', expected '%s'", i + 1, (int)len, line, want);
        line += len + 1;
    }
    /* the junk frames between them are skipped with a line each on stderr */
    int ignored = 0;
    for (const char *l = err; *l; l += strcspn(l, "\n") + 1, ignored++)
        if (strncmp(l, "fedmq watch: ignored a frame: a ", 32) != 0 ||
            !strstr(l, " message, not METRICS"))
            fail_msg("unexpected stderr line: %.*s", (int)strcspn(l, "\n"), l);
    assert_true(ignored >= S_COUNT - 1);
    free(out);
    free(err);
}

static void test_watch_timeout(void **state)
{
    (void)state;
    fx_t *fx = s_fx;
    int port = 0;
    assert_int_equal(fm_sys_free_ports(&port, 1), 0);
    char ep[64], tmo[32];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(tmo, sizeof tmo, "%.1f", S_TIMEOUT_S);
    double t0 = fm_proc_now();
    pid_t pid = s_watch(fx, ep, "1", tmo);
    int status = fm_proc_wait(pid, S_TIMEOUT_S + S_GRACE_S);
    double secs = fm_proc_now() - t0;
    if (status == -1)
        fail_msg("fedmq watch --timeout %s still running after %.1f s", tmo, secs);
    print_message("exit after %.2f s\n", secs);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1); /* "exit 1 if no METRICS arrives for S seconds" */
    assert_true(secs >= S_TIMEOUT_S);
    char *out = fm_sys_slurp(fx->out), *err = fm_sys_slurp(fx->err);
    assert_string_equal(out, "");
    char want[128];
    snprintf(want, sizeof want, "fedmq watch: %s: no METRICS for %s s\n", ep, tmo);
    assert_string_equal(err, want);
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_watch_feed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_watch_timeout, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
