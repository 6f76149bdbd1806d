/* run_test: `fedmq run` with the real daemons on loopback (mlp, iid, 20 clients, one trainer),
 * as docs/OPERATIONS.md and `fedmq run --help` describe it:
 *  - target stop: a target the run reaches in seconds -> exit 0, the summary gives the time
 *    to the target and its model version, and metrics.jsonl has that version at or above
 *    the target;
 *  - time-limit stop: an unreachable target (0.999) with time_limit_s = 8 -> "time limit of
 *    8 s reached", "not reached" in the summary, exit 1, after the limit and within it plus
 *    a bounded grace, nothing on stderr;
 *  - ordered shutdown (both runs): the trainer ended (BYE sent, its final line) before the
 *    evaluator stopped, the evaluator before the broker, the broker before the aggregator;
 *    the aggregator's shutdown checkpoint comes after its last aggregation and is of that
 *    version, stats.json is of that version and written after it; and every update the
 *    trainer sent reached the aggregator (applied, rejected or in the open buffer it
 *    dropped at the stop), which it would not if the aggregator went first.
 * Every wait is bounded; children are reaped. */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "../support/fm_sys.h"
#include "fm_stats.h"

#define FEDMQ FM_BIN_DIR "/fedmq"
#define S_RUN_S 90.0   /* a run that reaches its target (sanitizers, loaded machine) */
#define S_GRACE_S 20.0 /* from the time limit to fedmq run's exit: stop children, summary */
#define S_LIMIT_S 8

typedef struct {
    fm_proc_set_t procs;
    char dir[512];
    char run_dir[600], out[600], err[600];
    int status;
    double secs; /* spawn to exit */
} run_t;

static run_t *s_run;

/* fedmq run <config> with the test's overrides plus `extra` (NULL-terminated "k=v"). */
static void s_fedmq_run(run_t *r, const char *const extra[], double timeout_s)
{
    int p[6];
    assert_int_equal(fm_sys_free_ports(p, 6), 0);
    static const char *const keys[6] = {"model_pub",         "snapshot",    "updates",
                                        "aggregator_models", "metrics_pub", "acks"};
    char eps[6][96];
    char *av[64];
    int ac = 0;
    av[ac++] = FEDMQ;
    av[ac++] = "run";
    av[ac++] = FM_SOURCE_DIR "/configs/fedmq.conf";
    av[ac++] = "--run-dir";
    av[ac++] = r->run_dir;
    for (int i = 0; i < 6; i++) {
        snprintf(eps[i], sizeof eps[i], "endpoints.%s=tcp://127.0.0.1:%d", keys[i], p[i]);
        av[ac++] = "--set";
        av[ac++] = eps[i];
    }
    static const char *const daemons[4] = {"broker", "trainer", "aggregator", "evaluator"};
    char mets[4][64];
    for (int i = 0; i < 4; i++) { /* /metrics of each daemon on a reserved port */
        av[ac++] = "--set";
        av[ac++] = fm_proc_metrics_set(mets[i], sizeof mets[i], daemons[i], NULL);
    }
    static const char *const base[] = {"federation.model=mlp",
                                       "federation.num_clients=20",
                                       "federation.partition=iid",
                                       "trainer.clients=0-19",
                                       "trainer.workers=1",
                                       "aggregator.buffer_k=5",
                                       "evaluator.population=false",
                                       "federation.data_dir=" FM_DATA_DIR,
                                       NULL};
    for (int i = 0; base[i]; i++) {
        av[ac++] = "--set";
        av[ac++] = (char *)base[i];
    }
    for (int i = 0; extra[i]; i++) {
        av[ac++] = "--set";
        av[ac++] = (char *)extra[i];
    }
    av[ac] = NULL;
    double t0 = fm_proc_now();
    pid_t pid = fm_sys_spawn(&r->procs, av, r->out, r->err);
    assert_true(pid > 0);
    r->status = fm_proc_wait(pid, timeout_s);
    r->secs = fm_proc_now() - t0;
    if (r->status == -1) {
        kill(pid, SIGTERM); /* fedmq run stops its children in order */
        fm_proc_wait(pid, 60.0);
        fail_msg("fedmq run still running after %.0f s", timeout_s);
    }
    print_message("fedmq run: wait status 0x%x after %.1f s\n", r->status, r->secs);
}

static char *s_file(const run_t *r, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", r->run_dir, name);
    return buf;
}

/* The text of a file (the test fails if it cannot be read); caller frees. */
static char *s_slurp(const char *path)
{
    char *s = fm_sys_slurp(path);
    if (!s)
        fail_msg("%s: cannot read", path);
    return s;
}

static void s_expect_exit(const run_t *r, int code)
{
    if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != code) {
        char *out = fm_sys_slurp(r->out), *err = fm_sys_slurp(r->err);
        print_message("stdout:\n%s\nstderr:\n%s\n", out ? out : "", err ? err : "");
        free(out);
        free(err);
        fail_msg("fedmq run: wait status 0x%x, expected exit %d", r->status, code);
    }
}

/* The accuracy metrics.jsonl records for `version` (the last such record), and the best
 * accuracy of the file in *best. -1 if the version has no record. */
static double s_metrics_acc(const run_t *r, uint64_t version, double *best)
{
    char path[700];
    FILE *f = fopen(s_file(r, "metrics.jsonl", path, sizeof path), "r");
    assert_non_null(f);
    char line[16384];
    double acc = -1;
    int n = 0;
    *best = -1;
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            fail_msg("%s:%d: %s", path, n + 1, je.text);
        n++;
        json_t *v = json_object_get(j, "version"), *a = json_object_get(j, "accuracy");
        assert_true(json_is_integer(v) && json_is_number(a));
        if ((uint64_t)json_integer_value(v) == version)
            acc = json_number_value(a);
        if (json_number_value(a) > *best)
            *best = json_number_value(a);
        json_decref(j);
    }
    fclose(f);
    assert_true(n > 0);
    return acc;
}

/* The checks of an ordered shutdown, from the run directory (see the header). */
static void s_check_shutdown_order(const run_t *r)
{
    char tlog[700], elog[700], blog[700], alog[700], line[4096];
    s_file(r, "trainer.log", tlog, sizeof tlog);
    s_file(r, "evaluator.log", elog, sizeof elog);
    s_file(r, "broker.log", blog, sizeof blog);
    s_file(r, "aggregator.log", alog, sizeof alog);
    double t_tr = 0, t_ev = 0, t_br = 0, t_ag = 0, t_ck = 0, t_ver = 0;
    int l_ck = 0, l_ver = 0;
    assert_true(fm_sys_log_last(tlog, "final: updates sent ", &t_tr, NULL, line, sizeof line));
    uint64_t sent = strtoull(strstr(line, "final: updates sent ") + 20, NULL, 10);
    assert_true(fm_sys_log_last(elog, " stopping", &t_ev, NULL, NULL, 0));
    assert_true(fm_sys_log_last(blog, " stopping", &t_br, NULL, NULL, 0));
    assert_true(fm_sys_log_last(alog, "stopping at version ", &t_ag, NULL, line, sizeof line));
    const char *dropped = strstr(line, " (");
    assert_non_null(dropped);
    uint64_t in_buffer = strtoull(dropped + 2, NULL, 10);
    assert_true(fm_sys_log_last(alog, "saved (shutdown", &t_ck, &l_ck, line, sizeof line));
    uint64_t ck = strtoull(strstr(line, "checkpoint version ") + 19, NULL, 10);
    assert_true(t_tr > 0 && t_ev > 0 && t_br > 0 && t_ag > 0 && t_ck > 0);
    print_message("stop order (s after the trainer's last line): evaluator %+.3f, broker %+.3f, "
                  "aggregator %+.3f, its checkpoint v%" PRIu64 " %+.3f\n",
                  t_ev - t_tr, t_br - t_tr, t_ag - t_tr, ck, t_ck - t_tr);
    if (!(t_tr <= t_ev && t_ev <= t_br && t_br <= t_ag && t_ag <= t_ck))
        fail_msg("stop order: trainer %.3f, evaluator %.3f, broker %.3f, aggregator %.3f, "
                 "checkpoint %.3f",
                 t_tr, t_ev, t_br, t_ag, t_ck);
    /* the shutdown checkpoint follows the last aggregation and is of its version */
    uint64_t last = 0;
    if (fm_sys_log_last(alog, " updates folded, ", &t_ver, &l_ver, line, sizeof line)) {
        const char *v = strstr(line, " version ");
        assert_non_null(v);
        last = strtoull(v + 9, NULL, 10);
        assert_true(l_ver < l_ck);
        assert_true(t_ver <= t_ck);
    }
    assert_int_equal(ck, last);
    /* stats.json: that version, written at or after the shutdown checkpoint */
    char spath[700];
    s_file(r, "checkpoints/stats.json", spath, sizeof spath);
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    if (fm_stats_read(spath, &st, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(st.version, ck);
    struct stat sb;
    assert_int_equal(stat(spath, &sb), 0);
    double mtime = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9;
    /* file times come from the kernel's coarse clock (up to a tick, 4-10 ms, behind the
     * CLOCK_REALTIME of the log line): 20 ms of slack */
    if (mtime + 0.020 < t_ck)
        fail_msg("stats.json written at %.3f, before the shutdown checkpoint (%.3f)", mtime,
                 t_ck);
    /* nothing the trainer sent was lost: the aggregator was still there */
    print_message("trainer sent %" PRIu64 " updates; aggregator: %" PRIu64 " applied, %" PRIu64
                  " rejected, %" PRIu64 " in the open buffer at the stop\n",
                  sent, st.updates_applied, st.updates_rejected, in_buffer);
    assert_int_equal(sent, st.updates_applied + st.updates_rejected + in_buffer);
}

static int s_setup(void **state)
{
    (void)state;
    run_t *r = s_run = calloc(1, sizeof *r);
    assert_non_null(r);
    assert_int_equal(fm_proc_tmpdir(r->dir, sizeof r->dir), 0);
    snprintf(r->run_dir, sizeof r->run_dir, "%s/run", r->dir);
    snprintf(r->out, sizeof r->out, "%s/stdout", r->dir);
    snprintf(r->err, sizeof r->err, "%s/stderr", r->dir);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    run_t *r = s_run;
    s_run = NULL;
    if (!r)
        return 0;
    fm_proc_reap_all(&r->procs);
    fm_proc_rmtree(r->dir);
    free(r);
    return 0;
}

static void test_target_stop(void **state)
{
    (void)state;
    run_t *r = s_run;
    const char *const extra[] = {"federation.target_accuracy=0.70", "federation.time_limit_s=600",
                                 NULL};
    s_fedmq_run(r, extra, S_RUN_S);
    s_expect_exit(r, 0);
    char *out = s_slurp(r->out), *err = s_slurp(r->err);
    assert_string_equal(err, "");
    const char *p = strstr(out, "time to 0.7 accuracy: ");
    if (!p)
        fail_msg("no 'time to 0.7 accuracy' in the summary:\n%s", out);
    const char *mv = strstr(p, "(model version ");
    assert_non_null(mv);
    uint64_t version = strtoull(mv + 15, NULL, 10);
    assert_null(strstr(out, "time limit"));
    double best;
    double acc = s_metrics_acc(r, version, &best);
    print_message("target reached at version %" PRIu64 " (accuracy %.4f, best %.4f)\n", version,
                  acc, best);
    assert_true(acc >= 0.70);
    free(out);
    free(err);
    s_check_shutdown_order(r);
}

/* The time budget (`out`: fedmq run's stdout): the summary's lines, and budget.json against
 * stats.json and the run's own limits: the versions of this aggregator, every update timed
 * by the real trainer (it sends "ts" and "wait"), the local training within one worker's
 * wall time, each daemon's CPU time measured and within the machine's. */
static void s_check_budget(const run_t *r, const char *out)
{
    if (!strstr(out, "time budget: ") || !strstr(out, "    cores ("))
        fail_msg("no time budget in the summary:\n%s", out);
    char bpath[700], spath[700];
    s_file(r, "budget.json", bpath, sizeof bpath);
    s_file(r, "checkpoints/stats.json", spath, sizeof spath);
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    if (fm_stats_read(spath, &st, &e) != 0)
        fail_msg("%s", e.msg);
    json_error_t je;
    json_t *b = json_load_file(bpath, 0, &je);
    if (!b)
        fail_msg("%s: %s", bpath, je.text);
    json_int_t versions = 0, updates = 0, timed = 0, cores = 0;
    double wall = 0, per = 0, train = 0, wait = 0, ag = 0, ev = 0, tr = 0, br = 0;
    if (json_unpack_ex(
            b, &je, 0, "{s:I, s:F, s:F, s:I, s:I, s:F, s:F, s:i, s:{s:F, s:F, s:F, s:F}}",
            "versions", &versions, "wall_s", &wall, "per_version_s", &per, "updates", &updates,
            "timed", &timed, "train_s", &train, "wait_s", &wait, "cores", &cores, "cpu_s",
            "aggregator", &ag, "broker", &br, "evaluator", &ev, "trainer", &tr) != 0)
        fail_msg("%s: %s", bpath, je.text);
    json_decref(b);
    print_message("budget: %lld versions in %.1f s (%.2f s each), %lld updates (%lld timed), "
                  "train %.2f s, wait %.2f s; CPU s: trainer %.2f evaluator %.2f aggregator "
                  "%.2f broker %.2f on %lld cores\n",
                  (long long)versions, wall, per, (long long)updates, (long long)timed, train,
                  wait, tr, ev, ag, br, (long long)cores);
    assert_true(versions >= 1 && (uint64_t)versions == st.time.versions);
    assert_true((uint64_t)versions <= st.version);
    assert_true(fabs(per * (double)versions - wall) < 1e-6 * wall);
    /* K = 5; the last version may be the open buffer folded at the stop */
    assert_true((uint64_t)updates == st.time.updates && updates > 5 * (versions - 1));
    assert_int_equal(timed, updates);
    assert_true(train > 0 && train <= wall && wait >= 0 && train + wait <= wall);
    assert_true(cores >= 1);
    assert_true(tr > 0.1 && ev > 0.1 && ag > 0 && br > 0);
    assert_true(tr + ev + ag + br <= (double)cores * (wall + S_GRACE_S));
}

static void test_time_limit_stop(void **state)
{
    (void)state;
    run_t *r = s_run;
    char limit[64];
    snprintf(limit, sizeof limit, "federation.time_limit_s=%d", S_LIMIT_S);
    const char *const extra[] = {"federation.target_accuracy=0.999", limit, NULL};
    s_fedmq_run(r, extra, S_LIMIT_S + S_GRACE_S + 30.0);
    s_expect_exit(r, 1);
    if (r->secs < S_LIMIT_S || r->secs > S_LIMIT_S + S_GRACE_S)
        fail_msg("fedmq run took %.1f s with time_limit_s = %d (grace %.0f s)", r->secs,
                 S_LIMIT_S, S_GRACE_S);
    char *out = s_slurp(r->out), *err = s_slurp(r->err);
    assert_string_equal(err, ""); /* no daemon failed */
    char want[96];
    snprintf(want, sizeof want, "fedmq run: time limit of %d s reached\n", S_LIMIT_S);
    if (!strstr(out, want) || !strstr(out, "target 0.999 not reached; best accuracy "))
        fail_msg("summary lacks '%s' or 'not reached':\n%s", want, out);
    assert_null(strstr(out, "time to "));
    const char *el = strstr(out, "elapsed: ");
    assert_non_null(el);
    double elapsed = strtod(el + 9, NULL);
    assert_true(elapsed >= S_LIMIT_S && elapsed <= S_LIMIT_S + S_GRACE_S);
    s_check_budget(r, out);
    free(out);
    free(err);
    s_check_shutdown_order(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_target_stop, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_time_limit_stop, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
