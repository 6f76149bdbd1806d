/* evaluator_pop_test: population-level validation (evaluator/evaluator_pop.c): the summary
 * statistics on hand-computed cases, the scorer against fm_engine_evaluate run client by
 * client (for every thread count and batch size), and eval_pop_load on the real training
 * set. Links evaluator_lib (the unit-test rule of CMakeLists.txt, by file name). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "evaluator_pop.h"
#include "fm_engine.h"
#include "fm_rng.h"

/* The old out-parameter shape over the CLASS constructors, for the many checks below. */
static int s_load_dir(fm_dataset_t **out, const char *dir, const char *split, float mean,
                      float std, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_dataset_load_dir(dir, split, mean, std, &err, e);
    return *out ? 0 : err;
}

static int s_part_new(fm_partition_t **out, const fm_dataset_t *ds, const char *spec,
                      uint32_t nclients, uint64_t seed, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_partition_new(ds, spec, nclients, seed, &err, e);
    return *out ? 0 : err;
}

enum { S_PIXELS = FM_IMAGE_H * FM_IMAGE_W }; /* floats per sample */

/* ---- statistics --------------------------------------------------------------------------- */

static void test_summary_hand(void **state)
{
    /* 12 clients of 10 samples, client 5 empty (skipped); accuracies of the other 11:
     *   0.9 0.7 1.0 0.3 0.8 - 0.5 0.3 0.6 1.0 0.9 0.4
     * sorted: 0.3 0.3 0.4 0.5 0.6 0.7 0.8 0.9 0.9 1.0 1.0
     * mean 7.4/11; min 0.3 at clients 3 and 7 -> 3; p10: ceil(11/10) = 2 -> sorted[1] = 0.3;
     * below 0.7 (strict; 0.7 itself is not below): 0.3 0.5 0.3 0.6 0.4 -> 5/11 */
    const uint32_t correct[12] = {9, 7, 10, 3, 8, 0, 5, 3, 6, 10, 9, 4};
    uint32_t total[12];
    for (int k = 0; k < 12; k++)
        total[k] = 10;
    total[5] = 0;
    double scratch[12];
    eval_pop_summary_t s;
    assert_int_equal(eval_pop_summarize(correct, total, 12, 0.7, scratch, &s), 11);
    assert_int_equal(s.clients, 11);
    assert_true(fabs(s.mean - 7.4 / 11) < 1e-12);
    assert_true(s.min == 0.3);
    assert_int_equal(s.worst, 3);
    assert_true(s.p10 == 0.3);
    assert_true(s.threshold == 0.7);
    assert_true(fabs(s.below - 5.0 / 11) < 1e-12);

    /* the threshold moves "below" only; 0 and 1.0 are the extremes */
    eval_pop_summarize(correct, total, 12, 0.0, scratch, &s);
    assert_true(s.below == 0.0);
    eval_pop_summarize(correct, total, 12, 1.0, scratch, &s);
    assert_true(fabs(s.below - 9.0 / 11) < 1e-12); /* all but the two 1.0 */
    eval_pop_summarize(correct, total, 12, 0.31, scratch, &s);
    assert_true(fabs(s.below - 2.0 / 11) < 1e-12);

    /* ties at the minimum: the lowest id, wherever it sits */
    const uint32_t c2[4] = {5, 2, 2, 9}, t2[4] = {10, 10, 10, 10};
    eval_pop_summarize(c2, t2, 4, 0.5, scratch, &s);
    assert_int_equal(s.worst, 1);
    assert_true(s.min == 0.2 && s.p10 == 0.2);
    assert_true(s.below == 0.5);
    assert_true(fabs(s.mean - 1.8 / 4) < 1e-12);

    /* unequal slice sizes: the mean is over clients, not samples (1/1 and 0/3 -> 0.5) */
    const uint32_t c3[2] = {1, 0}, t3[2] = {1, 3};
    eval_pop_summarize(c3, t3, 2, 0.5, scratch, &s);
    assert_true(s.mean == 0.5 && s.min == 0.0 && s.p10 == 0.0);
    assert_int_equal(s.worst, 1);
    assert_true(s.below == 0.5);

    /* one client */
    const uint32_t c4[1] = {3}, t4[1] = {4};
    eval_pop_summarize(c4, t4, 1, 0.7, scratch, &s);
    assert_int_equal(s.clients, 1);
    assert_true(s.mean == 0.75 && s.min == 0.75 && s.p10 == 0.75 && s.below == 0.0);
    assert_int_equal(s.worst, 0);
}

/* p10 = sorted[ceil(n/10) - 1] for n = 1..250, on distinct accuracies in scrambled order. */
static void test_summary_p10_rank(void **state)
{
    enum { NMAX = 250 };
    uint32_t correct[NMAX], total[NMAX];
    double scratch[NMAX];
    for (uint32_t n = 1; n <= NMAX; n++) {
        /* client k gets (251 k mod n) of 1000 right: 251 is a prime above NMAX, so this is
         * a permutation of 0..n-1, and sorted[i] = i / 1000 */
        for (uint32_t k = 0; k < n; k++) {
            correct[k] = (k * 251u) % n;
            total[k] = 1000;
        }
        eval_pop_summary_t s;
        eval_pop_summarize(correct, total, n, 0.5, scratch, &s);
        uint32_t rank = (n + 9) / 10; /* ceil(n / 10), 1-based */
        assert_true(s.p10 == (double)(rank - 1) / 1000);
        assert_true(s.min == 0.0);
        assert_int_equal(s.worst, 0); /* (0 * 251) mod n = 0 */
        assert_true(s.min <= s.p10 && s.p10 <= s.mean);
    }
    /* the named ranks: n = 10 -> sorted[0], 11 -> [1], 20 -> [1], 21 -> [2], 100 -> [9] */
    const uint32_t ns[] = {10, 11, 20, 21, 100}, want[] = {0, 1, 1, 2, 9};
    for (int i = 0; i < 5; i++) {
        for (uint32_t k = 0; k < ns[i]; k++) {
            correct[k] = ns[i] - 1 - k; /* descending: the sort must reorder */
            total[k] = 1000;
        }
        eval_pop_summary_t s;
        eval_pop_summarize(correct, total, ns[i], 0.5, scratch, &s);
        assert_true(s.p10 == (double)want[i] / 1000);
        assert_int_equal(s.worst, ns[i] - 1);
    }
}

static void test_summary_empty(void **state)
{
    const uint32_t correct[3] = {0, 0, 0}, total[3] = {0, 0, 0};
    double scratch[3];
    eval_pop_summary_t s;
    memset(&s, 0xff, sizeof s);
    assert_int_equal(eval_pop_summarize(correct, total, 3, 0.7, scratch, &s), 0);
    assert_int_equal(s.clients, 0);
    assert_int_equal(s.worst, 0);
    assert_true(s.mean == 0.0 && s.min == 0.0 && s.p10 == 0.0 && s.below == 0.0);
    assert_true(s.threshold == 0.7);
    assert_int_equal(eval_pop_summarize(NULL, NULL, 0, 0.5, NULL, &s), 0);
}

/* ---- the scorer -----------------------------------------------------------------------------
 */

/* n random images (uniform pixels in normalised units) with random labels. */
static fm_dataset_t *s_synthetic(uint32_t n, uint64_t seed)
{
    fm_dataset_t *ds = calloc(1, sizeof *ds);
    assert_non_null(ds);
    ds->n = n;
    ds->rows = FM_IMAGE_H;
    ds->cols = FM_IMAGE_W;
    ds->x = malloc((size_t)n * S_PIXELS * sizeof(float) + 1);
    ds->y = malloc((size_t)n + 1);
    assert_true(ds->x && ds->y);
    fm_rng_t r;
    fm_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < (size_t)n * S_PIXELS; i++)
        ds->x[i] = (float)(fm_rng_uniform(&r) * 3.0 - 1.0);
    for (uint32_t i = 0; i < n; i++)
        ds->y[i] = (uint8_t)(fm_rng_u64(&r) % FM_NCLASSES);
    return ds;
}

/* The scorer's per-client counts (scored with `scorer`) equal fm_engine_evaluate on each
 * client's indices (one thread, batches of 64). */
static void s_check_against_engine(eval_pop_t *pop, fm_engine_t *scorer, const fm_model_t *m,
                                   const fm_dataset_t *ds, const fm_partition_t *held,
                                   double threshold)
{
    int err = 0;
    fm_engine_t *eng = fm_engine_new(m, 1, 64, &err);
    assert_non_null(eng);
    eval_pop_summary_t s;
    eval_pop_score(pop, scorer, m, threshold, &s);
    uint32_t nc = held->nclients, scored = 0;
    uint32_t *correct = calloc(nc + 1, sizeof *correct), *total = calloc(nc + 1, sizeof *total);
    double *scratch = calloc(nc + 1, sizeof *scratch);
    assert_true(correct && total && scratch);
    for (uint32_t k = 0; k < nc; k++) {
        fm_eval_t ev;
        uint32_t n = held->offsets[k + 1] - held->offsets[k];
        fm_engine_evaluate(eng, m, ds->x, ds->y, held->indices + held->offsets[k], n, &ev);
        uint32_t c, t;
        eval_pop_client(pop, k, &c, &t);
        assert_int_equal(t, n);
        assert_int_equal(c, ev.correct);
        correct[k] = c;
        total[k] = t;
        scored += n > 0;
    }
    eval_pop_summary_t want;
    eval_pop_summarize(correct, total, nc, threshold, scratch, &want);
    assert_memory_equal(&s, &want, sizeof s);
    assert_int_equal(s.clients, scored);
    assert_int_equal(eval_pop_scored_clients(pop), scored);
    assert_int_equal(eval_pop_nclients(pop), nc);
    assert_int_equal(eval_pop_samples(pop), held->offsets[nc]);
    free(correct);
    free(total);
    free(scratch);
    fm_engine_destroy(&eng);
}

static void test_score_synthetic(void **state)
{
    fm_dataset_t *ds = s_synthetic(700, 5);
    fm_errmsg_t e = {{0}};
    fm_partition_t *part = NULL, *train = NULL, *held = NULL;
    /* 23 clients, some of them tiny under dirichlet:0.2; 30% held out */
    assert_int_equal(s_part_new(&part, ds, "dirichlet:0.2", 23, 9, &e), 0);
    assert_int_equal(fm_partition_holdout(part, 0.3, 9, &train, &held, &e), 0);
    const char *models[] = {"logreg", "mlp", "cnn"};
    for (int i = 0; i < 3; i++) {
        int err = 0;
        fm_model_t *m = fm_model_new(models[i], &err);
        assert_non_null(m);
        fm_model_init(m, 100 + (uint64_t)i);
        const int threads[] = {1, 2, 3}, batches[] = {1, 7, 64};
        for (int t = 0; t < 3; t++)
            for (int b = 0; b < 3; b++) {
                if (i == 2 && b == 0)
                    continue; /* cnn one sample at a time: slow under ASan, nothing new */
                fm_engine_t *scorer = fm_engine_new(m, threads[t], batches[b], &err);
                assert_non_null(scorer);
                eval_pop_t *pop = eval_pop_new(ds, held, &err);
                assert_non_null(pop);
                s_check_against_engine(pop, scorer, m, ds, held, 0.15);
                fm_engine_destroy(&scorer);
                eval_pop_destroy(&pop);
                assert_null(pop);
                eval_pop_destroy(&pop); /* idempotent */
            }
        fm_model_destroy(&m);
    }
    fm_partition_destroy(&part);
    fm_partition_destroy(&train);
    fm_partition_destroy(&held);
    fm_dataset_destroy(&ds);
}

static void test_score_edge(void **state)
{
    fm_dataset_t *ds = s_synthetic(9, 6);
    int err = 0;
    fm_model_t *m = fm_model_new("logreg", &err);
    assert_non_null(m);
    fm_model_init(m, 1);
    fm_errmsg_t e = {{0}};
    fm_partition_t *part = NULL, *train = NULL, *held = NULL;
    /* 12 clients of 9 samples: 3 empty clients, and single-sample ones hold nothing out */
    assert_int_equal(s_part_new(&part, ds, "iid", 12, 1, &e), 0);
    assert_int_equal(fm_partition_holdout(part, 0.5, 1, &train, &held, &e), 0);
    fm_engine_t *eng = fm_engine_new(m, 3, 4, &err);
    assert_non_null(eng);
    eval_pop_t *pop = eval_pop_new(ds, held, &err);
    assert_non_null(pop);
    eval_pop_summary_t s;
    eval_pop_score(pop, eng, m, 0.7, &s);
    assert_int_equal(s.clients, 0); /* nobody has a held-out sample */
    assert_true(s.threshold == 0.7);
    assert_int_equal(eval_pop_samples(pop), 0);
    eval_pop_destroy(&pop);
    fm_partition_destroy(&train);
    fm_partition_destroy(&held);
    /* holdout 0: no sample at all */
    assert_int_equal(fm_partition_holdout(part, 0.0, 1, &train, &held, &e), 0);
    pop = eval_pop_new(ds, held, &err);
    assert_non_null(pop);
    eval_pop_score(pop, eng, m, 0.7, &s);
    assert_int_equal(s.clients, 0);
    eval_pop_destroy(&pop);
    fm_engine_destroy(&eng);
    fm_partition_destroy(&train);
    fm_partition_destroy(&held);
    fm_partition_destroy(&part);
    fm_model_destroy(&m);
    fm_dataset_destroy(&ds);
}

/* eval_pop_load builds the trainers' split: the same held-out samples fm_partition_holdout
 * gives here, scored like the engine scores them. Skipped without the data set. */
static void test_load_fashion(void **state)
{
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte.gz", FM_DATA_DIR);
    if (access(probe, R_OK) != 0) {
        snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte", FM_DATA_DIR);
        if (access(probe, R_OK) != 0)
            skip();
    }
    fm_config_t cfg;
    fm_cfg_defaults(&cfg);
    snprintf(cfg.federation.data_dir, sizeof cfg.federation.data_dir, "%s", FM_DATA_DIR);
    snprintf(cfg.federation.partition, sizeof cfg.federation.partition, "dirichlet:0.3");
    cfg.federation.num_clients = 50;
    cfg.federation.holdout = 0.1;
    cfg.federation.seed = 77;
    int err = 0;
    fm_model_t *m = fm_model_new("mlp", &err);
    assert_non_null(m);
    fm_model_init(m, 3);
    fm_errmsg_t e = {{0}};
    eval_pop_t *pop = eval_pop_load(&cfg, &err, &e);
    if (!pop)
        fail_msg("eval_pop_load: %s", e.msg);

    /* the reference split, as trainer_pool.c builds it */
    fm_dataset_t *ds = NULL;
    fm_partition_t *part = NULL, *train = NULL, *held = NULL;
    assert_int_equal(s_load_dir(&ds, FM_DATA_DIR, "train", FM_FASHION_MEAN, FM_FASHION_STD, &e),
                     0);
    assert_int_equal(s_part_new(&part, ds, "dirichlet:0.3", 50, 77, &e), 0);
    assert_int_equal(fm_partition_holdout(part, 0.1, 77, &train, &held, &e), 0);
    assert_true(eval_pop_samples(pop) > 5900 && eval_pop_samples(pop) < 6100);
    fm_engine_t *scorer = fm_engine_new(m, 2, 128, &err);
    assert_non_null(scorer);
    s_check_against_engine(pop, scorer, m, ds, held, 0.7);
    eval_pop_summary_t s;
    eval_pop_score(pop, scorer, m, 0.7, &s);
    fm_engine_destroy(&scorer);
    print_message("    mlp (seeded, untrained) on %u held-out samples of %u clients: mean %.3f "
                  "min %.3f (client %u) p10 %.3f below 0.7 %.2f\n",
                  eval_pop_samples(pop), s.clients, s.mean, s.min, s.worst, s.p10, s.below);
    assert_true(0.0 <= s.min && s.min <= s.p10 && s.p10 <= s.mean && s.mean <= 1.0);
    fm_partition_destroy(&part);
    fm_partition_destroy(&train);
    fm_partition_destroy(&held);
    fm_dataset_destroy(&ds);
    eval_pop_destroy(&pop);

    /* config errors: a bad partition spec, a missing data dir */
    snprintf(cfg.federation.partition, sizeof cfg.federation.partition, "shards:100000");
    err = 0;
    assert_null(eval_pop_load(&cfg, &err, &e));
    assert_int_equal(err, FM_EARG);
    assert_non_null(strstr(e.msg, "federation.partition"));
    snprintf(cfg.federation.data_dir, sizeof cfg.federation.data_dir, "/nonexistent/fedmq");
    err = 0;
    assert_null(eval_pop_load(&cfg, &err, &e));
    assert_int_equal(err, -ENOENT);
    fm_model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_hand),  cmocka_unit_test(test_summary_p10_rank),
        cmocka_unit_test(test_summary_empty), cmocka_unit_test(test_score_synthetic),
        cmocka_unit_test(test_score_edge),    cmocka_unit_test(test_load_fashion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
