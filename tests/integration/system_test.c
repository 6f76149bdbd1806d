/* The whole federation with real processes on loopback (mlp, small, fast):
 *  - the run converges (the evaluator's feed passes an accuracy bar);
 *  - a late-joining trainer gets the current model at once (its first model arrives
 *    within a bound of its start, without waiting for a new version);
 *  - a trainer killed with SIGKILL mid-training changes nothing but its missing updates;
 *  - the aggregator killed with SIGKILL and restarted resumes at its checkpointed version
 *    (never lower) and the run still converges. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "fm_stats.h"

#define BIN(x) FM_BIN_DIR "/fedmq-" x

typedef struct {
    char dir[512];
    char sets[16][600];
    int nsets;
    fm_proc_set_t procs;
} sys_t;

/* Best accuracy in the evaluator's metrics file so far. */
static double s_best_acc(const char *path)
{
    FILE *f = fopen(path, "r");
    double best = 0;
    if (!f)
        return 0;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *a = strstr(line, "\"accuracy\":");
        if (a && strtod(a + 11, NULL) > best)
            best = strtod(a + 11, NULL);
    }
    fclose(f);
    return best;
}

static pid_t s_start(sys_t *s, const char *bin, const char *log, const char *extra)
{
    char *av[2 + 2 * 17 + 1];
    int ac = 0;
    av[ac++] = (char *)bin;
    for (int i = 0; i < s->nsets; i++) {
        av[ac++] = "--set";
        av[ac++] = s->sets[i];
    }
    if (extra) {
        av[ac++] = "--set";
        av[ac++] = (char *)extra;
    }
    av[ac] = NULL;
    char path[700];
    snprintf(path, sizeof path, "%s/%s", s->dir, log);
    return fm_proc_spawn(&s->procs, av, path);
}

typedef struct {
    const char *path;
    double min;
    const char *key;
} s_cond_t;

/* stats.json's "version" (the only key waited on) >= c->min; 0 while it cannot be read. */
static int s_stats_at_least(void *arg)
{
    s_cond_t *c = arg;
    fm_stats_t st;
    return fm_stats_read(c->path, &st, NULL) == 0 && (double)st.version >= c->min;
}

/* The aggregator's stats.json; the test fails when it cannot be read. */
static fm_stats_t s_stats(const char *path)
{
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    if (fm_stats_read(path, &st, &e) != 0)
        fail_msg("%s", e.msg);
    return st;
}

static int s_acc_at_least(void *arg)
{
    s_cond_t *c = arg;
    return s_best_acc(c->path) >= c->min;
}

typedef struct {
    const char *path;
    const char *needle;
} s_grep_t;

static int s_log_has(void *arg)
{
    s_grep_t *g = arg;
    return fm_proc_file_contains(g->path, g->needle);
}

static void test_federation(void **state)
{
    (void)state;
    sys_t s;
    memset(&s, 0, sizeof s);
    const char *tmp = getenv("TMPDIR");
    char base[400];
    snprintf(base, sizeof base, "%s", tmp ? tmp : FM_BIN_DIR);
    snprintf(s.dir, sizeof s.dir, "%s/fedmq-system-XXXXXX", base);
    assert_non_null(mkdtemp(s.dir));
    int p[5];
    for (int i = 0; i < 5; i++)
        p[i] = fm_proc_free_port();
    snprintf(s.sets[s.nsets++], 600, "endpoints.model_pub=tcp://127.0.0.1:%d", p[0]);
    snprintf(s.sets[s.nsets++], 600, "endpoints.snapshot=tcp://127.0.0.1:%d", p[1]);
    snprintf(s.sets[s.nsets++], 600, "endpoints.updates=tcp://127.0.0.1:%d", p[2]);
    snprintf(s.sets[s.nsets++], 600, "endpoints.aggregator_models=tcp://127.0.0.1:%d", p[3]);
    snprintf(s.sets[s.nsets++], 600, "endpoints.metrics_pub=tcp://127.0.0.1:%d", p[4]);
    snprintf(s.sets[s.nsets++], 600, "federation.model=mlp");
    snprintf(s.sets[s.nsets++], 600, "federation.num_clients=20");
    snprintf(s.sets[s.nsets++], 600, "federation.partition=iid");
    snprintf(s.sets[s.nsets++], 600, "trainer.clients=0-9");
    snprintf(s.sets[s.nsets++], 600, "trainer.workers=1");
    snprintf(s.sets[s.nsets++], 600, "aggregator.buffer_k=5");
    snprintf(s.sets[s.nsets++], 600, "aggregator.checkpoint_every=1");
    char dir[512];
    memcpy(dir, s.dir, sizeof dir);
    snprintf(s.sets[s.nsets++], 600, "aggregator.checkpoint_dir=%s/ckpt", dir);
    snprintf(s.sets[s.nsets++], 600, "evaluator.metrics_file=%s/metrics.jsonl", dir);
    char stats[700], metrics[700], tlog2[700];
    snprintf(stats, sizeof stats, "%s/ckpt/stats.json", s.dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", s.dir);
    snprintf(tlog2, sizeof tlog2, "%s/trainer2.log", s.dir);

    pid_t agg = s_start(&s, BIN("aggregator"), "aggregator.log", NULL);
    assert_true(agg > 0);
    assert_true(s_start(&s, BIN("broker"), "broker.log", NULL) > 0);
    assert_true(s_start(&s, BIN("evaluator"), "evaluator.log", NULL) > 0);
    pid_t tr1 = s_start(&s, BIN("trainer"), "trainer1.log", NULL);
    assert_true(tr1 > 0);

    /* progress: versions advance */
    s_cond_t v5 = {stats, 5, "version"};
    assert_true(fm_proc_wait_for(s_stats_at_least, &v5, 60.0));

    /* a late-joining trainer (other clients) gets the current model at once */
    double t0 = fm_proc_now();
    pid_t tr2 = s_start(&s, BIN("trainer"), "trainer2.log", "trainer.clients=10-19");
    assert_true(tr2 > 0);
    s_grep_t first = {tlog2, "first model: v"};
    assert_true(fm_proc_wait_for(s_log_has, &first, 20.0));
    double waited = fm_proc_now() - t0;
    print_message("late trainer had its first model %.2f s after start (incl. data loading)\n", waited);
    assert_false(fm_proc_file_contains(tlog2, "first model: v0 "));

    /* SIGKILL a trainer mid-training: the others go on, nothing is rejected */
    fm_proc_sleep(1.0);
    kill(tr1, SIGKILL);
    double before = (double)s_stats(stats).version;
    s_cond_t more = {stats, before + 3, "version"};
    assert_true(fm_proc_wait_for(s_stats_at_least, &more, 60.0));
    assert_int_equal(s_stats(stats).updates_rejected, 0);

    /* SIGKILL the aggregator; restart it: it resumes at the checkpointed version or later */
    double ck = (double)s_stats(stats).version; /* written after each checkpoint (every version) */
    kill(agg, SIGKILL);
    fm_proc_wait(agg, 5.0);
    agg = s_start(&s, BIN("aggregator"), "aggregator2.log", NULL);
    assert_true(agg > 0);
    char alog2[700];
    snprintf(alog2, sizeof alog2, "%s/aggregator2.log", s.dir);
    s_grep_t resumed = {alog2, "resum"};
    assert_true(fm_proc_wait_for(s_log_has, &resumed, 20.0));
    s_cond_t after = {stats, ck + 2, "version"};
    assert_true(fm_proc_wait_for(s_stats_at_least, &after, 60.0));
    print_message("aggregator killed at version >= %.0f, resumed and reached %.0f\n", ck,
                  (double)s_stats(stats).version);

    /* and the run converges */
    s_cond_t acc = {metrics, 0.80, NULL};
    assert_true(fm_proc_wait_for(s_acc_at_least, &acc, 120.0));
    print_message("best accuracy %.4f\n", s_best_acc(metrics));

    /* clean stop of everyone still running */
    for (int i = 0; i < s.procs.n; i++)
        if (waitpid(s.procs.pids[i], NULL, WNOHANG) == 0)
            kill(s.procs.pids[i], SIGTERM);
    for (int i = 0; i < s.procs.n; i++)
        fm_proc_wait(s.procs.pids[i], 20.0);
    fm_proc_reap_all(&s.procs);
    fm_proc_rmtree(s.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_federation)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
