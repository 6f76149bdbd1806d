/* train_test: the local training loop (shared/learn/fm_train.c) on tiny synthetic data.
 *
 * - the bookkeeping the header promises, counted by hand: ceil(n / batch) optimiser steps
 *   per epoch (the last batch partial), n samples per epoch, one callback per epoch in
 *   order, early stop when the callback says so, FM_EARG for a bad config;
 * - each epoch visits every sample of idx exactly once and no other: the samples outside
 *   idx are NaN (reading one would fail the run), and with a negligible learning rate the
 *   epoch's mean loss equals the mean of the per-sample losses scored one by one;
 * - seeded: the same seed gives the same model bit for bit, another seed another model;
 * - the whole loop equals a replay written here from fm_engine, fm_optim and fm_rng alone
 *   (shuffle each epoch, one dropout seed per batch from the same stream, one step per
 *   batch), bit for bit, with momentum, weight decay, clipping and FedProx on, for the
 *   per-epoch losses and the final model; with the cnn, whose dropout uses the seeds.
 * The replay knows one thing the header does not say: the shuffle stream is
 * fm_rng_seed(seed, 0x7121) (fm_train.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_engine.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_rng.h"
#include "fm_train.h"

enum { S_PIXELS = FM_IMAGE_H * FM_IMAGE_W, S_TOTAL = 40, S_MAX_EPOCHS = 8 };

#define S_STREAM 0x7121 /* fm_train.c's RNG stream */

/* S_TOTAL random images (uniform pixels in [-1, 2)) with random labels; the samples not
 * in `keep` (NULL: keep all) are NaN. */
static void s_data(float *x, uint8_t *y, const uint32_t *keep, uint32_t nkeep, uint64_t seed)
{
    fm_rng_t r;
    fm_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < (size_t)S_TOTAL * S_PIXELS; i++)
        x[i] = (float)(fm_rng_uniform(&r) * 3.0 - 1.0);
    for (uint32_t i = 0; i < S_TOTAL; i++)
        y[i] = (uint8_t)fm_rng_below(&r, FM_NCLASSES);
    if (!keep)
        return;
    for (uint32_t i = 0; i < S_TOTAL; i++) {
        int kept = 0;
        for (uint32_t j = 0; j < nkeep; j++)
            kept |= keep[j] == i;
        if (!kept)
            for (int p = 0; p < S_PIXELS; p++)
                x[(size_t)i * S_PIXELS + p] = NAN;
    }
}

/* The data every test trains on: samples 3, 5, 6, ... (10 of them) of S_TOTAL, the others
 * NaN. */
static float s_x[S_TOTAL * S_PIXELS];
static uint8_t s_y[S_TOTAL];
static const uint32_t s_idx[10] = {3, 5, 6, 11, 17, 18, 24, 30, 31, 39};

static int s_setup(void **state)
{
    s_data(s_x, s_y, s_idx, 10, 42);
    return 0;
}

typedef struct {
    int calls;
    int epoch[S_MAX_EPOCHS];
    fm_train_result_t r[S_MAX_EPOCHS];
    int stop_after; /* return 1 at this epoch (-1: never) */
} s_log_t;

static int s_on_epoch(void *arg, int epoch, const fm_train_result_t *so_far)
{
    s_log_t *log = arg;
    assert_true(log->calls < S_MAX_EPOCHS);
    log->epoch[log->calls] = epoch;
    log->r[log->calls] = *so_far;
    log->calls++;
    return epoch == log->stop_after;
}

static fm_model_t *s_model(const char *name, uint64_t seed)
{
    int err = 0;
    fm_model_t *m = fm_model_new(name, &err);
    assert_non_null(m);
    fm_model_init(m, seed);
    return m;
}

static fm_optim_t *s_optim(const fm_model_t *m, const fm_sgd_config_t *sgd)
{
    int err = 0;
    fm_optim_t *o = fm_optim_new(fm_model_nparams(m), sgd, &err);
    assert_non_null(o);
    return o;
}

static fm_engine_t *s_engine(const fm_model_t *m, int max_batch)
{
    int err = 0;
    fm_engine_t *e = fm_engine_new(m, 1, max_batch, &err);
    assert_non_null(e);
    return e;
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The replay: fm_train_run as its header and fm_train.c describe it, from the parts.
 * Fills loss[epoch] (mean over the samples the epoch saw of each batch's mean loss weighted
 * by its size), *epochs_run and *samples, and returns the optimiser steps taken; stops like
 * fm_train_run at a non-finite loss (*nonfinite = 1), when stop_after is reached, or after
 * cfg->max_steps steps (the epoch under way ends there). */
static uint64_t s_replay(fm_engine_t *e, fm_optim_t *o, fm_model_t *m, const uint32_t *idx,
                         uint32_t n, const fm_train_config_t *cfg, const float *w_global,
                         int stop_after, double *loss, int *nonfinite, int *epochs_run,
                         uint64_t *samples)
{
    uint32_t *order = malloc(sizeof(uint32_t) * n), *sorted = malloc(sizeof(uint32_t) * n),
             *want = malloc(sizeof(uint32_t) * n);
    assert_true(order && sorted && want);
    memcpy(want, idx, sizeof(uint32_t) * n);
    qsort(want, n, sizeof(uint32_t), s_cmp_u32);
    fm_rng_t rng;
    fm_rng_seed(&rng, cfg->seed, S_STREAM);
    fm_optim_reset(o);
    uint64_t steps = 0;
    *nonfinite = 0;
    *epochs_run = 0;
    *samples = 0;
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        memcpy(order, idx, sizeof(uint32_t) * n);
        fm_rng_shuffle_u32(&rng, order, n);
        /* the shuffle is a permutation of idx */
        memcpy(sorted, order, sizeof(uint32_t) * n);
        qsort(sorted, n, sizeof(uint32_t), s_cmp_u32);
        assert_memory_equal(sorted, want, sizeof(uint32_t) * n);
        double sum = 0.0;
        uint32_t seen = 0;
        for (uint32_t b = 0; b < n; b += (uint32_t)cfg->batch) {
            if (cfg->max_steps > 0 && steps == cfg->max_steps)
                break;
            uint32_t bs = n - b < (uint32_t)cfg->batch ? n - b : (uint32_t)cfg->batch;
            double l = fm_engine_gradient(e, m, s_x, s_y, order + b, (int)bs, 1,
                                          fm_rng_u64(&rng));
            if (!isfinite(l)) {
                *nonfinite = 1;
                goto done;
            }
            fm_optim_step(o, fm_model_params(m), fm_engine_grads(e), w_global);
            sum += l * bs;
            seen += bs;
            steps++;
        }
        loss[epoch] = sum / seen;
        *epochs_run = epoch + 1;
        *samples += seen;
        if (epoch == stop_after || (cfg->max_steps > 0 && steps == cfg->max_steps))
            break;
    }
done:
    free(order);
    free(sorted);
    free(want);
    return steps;
}

/* ---- bookkeeping ---------------------------------------------------------------------- */

static void test_steps_and_callbacks(void **state)
{
    const fm_sgd_config_t sgd = {.lr = 0.01f, .momentum = 0.9f};
    /* n = 10: batch 4 -> 4 + 4 + 2 (3 steps), 1 -> 10, 3 -> 3 + 3 + 3 + 1 (4), 10 -> 1,
     * 11 (more than n) -> 1, 5 -> 2 */
    const int batch[] = {4, 1, 3, 10, 11, 5};
    const uint64_t per_epoch[] = {3, 10, 4, 1, 1, 2};
    for (int i = 0; i < 6; i++) {
        fm_model_t *m = s_model("logreg", 1);
        fm_optim_t *o = s_optim(m, &sgd);
        fm_engine_t *e = s_engine(m, 16);
        fm_train_config_t cfg = {.epochs = 3, .batch = batch[i], .seed = 9};
        s_log_t log = {.stop_after = -1};
        fm_train_result_t out;
        assert_int_equal(
            fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &cfg, NULL, s_on_epoch, &log, &out), 0);
        assert_int_equal(log.calls, 3);
        for (int ep = 0; ep < 3; ep++) {
            assert_int_equal(log.epoch[ep], ep);
            assert_true(log.r[ep].steps == per_epoch[i] * (uint64_t)(ep + 1));
            assert_true(log.r[ep].samples == 10u * (uint64_t)(ep + 1));
            assert_true(isfinite(log.r[ep].loss) && log.r[ep].loss > 0.0);
            assert_true(log.r[ep].seconds >= 0.0);
            if (ep > 0)
                assert_true(log.r[ep].seconds >= log.r[ep - 1].seconds);
        }
        assert_true(out.steps == 3 * per_epoch[i]);
        assert_true(out.samples == 30);
        assert_true(out.loss == log.r[2].loss); /* the last epoch's */
        fm_engine_destroy(&e);
        fm_optim_destroy(&o);
        fm_model_destroy(&m);
    }
}

static void test_early_stop_and_no_callback(void **state)
{
    const fm_sgd_config_t sgd = {.lr = 0.01f};
    fm_model_t *m = s_model("logreg", 2), *m2 = s_model("logreg", 2);
    fm_optim_t *o = s_optim(m, &sgd);
    fm_engine_t *e = s_engine(m, 16);
    /* 5 epochs asked, the callback stops after the second (epoch 1): 2 x 3 steps */
    fm_train_config_t cfg = {.epochs = 5, .batch = 4, .seed = 3};
    s_log_t log = {.stop_after = 1};
    fm_train_result_t out;
    assert_int_equal(
        fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &cfg, NULL, s_on_epoch, &log, &out), 0);
    assert_int_equal(log.calls, 2);
    assert_true(out.steps == 6 && out.samples == 20);
    assert_int_equal(out.complete, 0); /* stopped before its 5 epochs */
    /* the same as asking for 2 epochs without a callback */
    cfg.epochs = 2;
    fm_train_result_t out2;
    assert_int_equal(fm_train_run(e, o, m2, s_x, s_y, s_idx, 10, &cfg, NULL, NULL, NULL, &out2),
                     0);
    assert_true(out2.steps == 6 && out2.samples == 20 && out2.loss == out.loss);
    assert_int_equal(out2.complete, 1);
    assert_memory_equal(fm_model_params(m), fm_model_params(m2),
                        fm_model_nparams(m) * sizeof(float));
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&m);
    fm_model_destroy(&m2);
}

static void test_bad_config(void **state)
{
    const fm_sgd_config_t sgd = {.lr = 0.01f};
    fm_model_t *m = s_model("logreg", 3), *ref = s_model("logreg", 3);
    fm_optim_t *o = s_optim(m, &sgd);
    fm_engine_t *e = s_engine(m, 16);
    const fm_train_config_t bad[] = {
        {.epochs = 0, .batch = 4, .seed = 1},
        {.epochs = -1, .batch = 4, .seed = 1},
        {.epochs = 1, .batch = 0, .seed = 1},
        {.epochs = 1, .batch = -3, .seed = 1},
    };
    fm_train_result_t out;
    for (int i = 0; i < 4; i++) {
        s_log_t log = {.stop_after = -1};
        assert_int_equal(
            fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &bad[i], NULL, s_on_epoch, &log, &out),
            FM_EARG);
        assert_int_equal(log.calls, 0);
        assert_true(out.steps == 0 && out.samples == 0);
    }
    const fm_train_config_t ok = {.epochs = 1, .batch = 4, .seed = 1};
    assert_int_equal(fm_train_run(e, o, m, s_x, s_y, s_idx, 0, &ok, NULL, NULL, NULL, &out),
                     FM_EARG);
    assert_memory_equal(fm_model_params(m), fm_model_params(ref),
                        fm_model_nparams(m) * sizeof(float));
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&m);
    fm_model_destroy(&ref);
}

/* ---- every sample once per epoch ------------------------------------------------------- */

static void test_each_sample_once(void **state)
{
    /* a learning rate so small that the model does not move: every batch's loss is the
     * initial model's, so the epoch mean is the mean of the 10 per-sample losses */
    const fm_sgd_config_t sgd = {.lr = 1e-30f};
    fm_model_t *m = s_model("logreg", 4);
    fm_optim_t *o = s_optim(m, &sgd);
    fm_engine_t *e = s_engine(m, 16);
    double want = 0.0, lmin = INFINITY, lmax = 0.0;
    for (int i = 0; i < 10; i++) {
        double l = fm_engine_gradient(e, m, s_x, s_y, &s_idx[i], 1, 0, 0);
        want += l / 10;
        lmin = fmin(lmin, l);
        lmax = fmax(lmax, l);
    }
    /* a sample visited twice and another skipped would move the mean by at least
     * (lmax - lmin) / 10 for the extreme pair; the samples' losses are spread */
    assert_true(lmax - lmin > 0.1);
    const int batch[] = {1, 3, 4, 10};
    for (int i = 0; i < 4; i++) {
        fm_train_config_t cfg = {.epochs = 4, .batch = batch[i], .seed = 11 + (uint64_t)i};
        s_log_t log = {.stop_after = -1};
        fm_train_result_t out;
        assert_int_equal(
            fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &cfg, NULL, s_on_epoch, &log, &out),
            0); /* a NaN sample read would fail it */
        for (int ep = 0; ep < 4; ep++)
            if (fabs(log.r[ep].loss - want) > 1e-5 * want)
                fail_msg("batch %d epoch %d: mean loss %.9f, per-sample mean %.9f", batch[i], ep,
                         log.r[ep].loss, want);
    }
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&m);
}

/* ---- seeded ---------------------------------------------------------------------------- */

static void test_seeded(void **state)
{
    const fm_sgd_config_t sgd = {.lr = 0.05f, .momentum = 0.5f};
    fm_model_t *a = s_model("logreg", 5), *b = s_model("logreg", 5), *c = s_model("logreg", 5);
    fm_optim_t *o = s_optim(a, &sgd);
    fm_engine_t *e = s_engine(a, 16);
    fm_train_config_t cfg = {.epochs = 2, .batch = 1, .seed = 77};
    fm_train_result_t ra, rb, rc;
    assert_int_equal(fm_train_run(e, o, a, s_x, s_y, s_idx, 10, &cfg, NULL, NULL, NULL, &ra), 0);
    assert_int_equal(fm_train_run(e, o, b, s_x, s_y, s_idx, 10, &cfg, NULL, NULL, NULL, &rb), 0);
    size_t bytes = fm_model_nparams(a) * sizeof(float);
    assert_memory_equal(fm_model_params(a), fm_model_params(b), bytes);
    assert_true(ra.loss == rb.loss);
    /* batch 1, no clipping: the order of the steps shows in the model */
    cfg.seed = 78;
    assert_int_equal(fm_train_run(e, o, c, s_x, s_y, s_idx, 10, &cfg, NULL, NULL, NULL, &rc), 0);
    assert_memory_not_equal(fm_model_params(a), fm_model_params(c), bytes);
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&a);
    fm_model_destroy(&b);
    fm_model_destroy(&c);
}

/* ---- against the replay ---------------------------------------------------------------- */

/* fm_train_run and the replay from the same model, each with its own optimiser (the one of
 * fm_train_run has stale momentum: the run must reset it) and its own engine. */
static void s_check_replay(const char *model, const fm_sgd_config_t *sgd,
                           const fm_train_config_t *cfg, const uint32_t *idx, uint32_t n,
                           int with_anchor, int stop_after)
{
    fm_model_t *m = s_model(model, 6), *r = s_model(model, 6), *anchor = s_model(model, 60);
    const float *w_global = with_anchor ? fm_model_params(anchor) : NULL;
    fm_optim_t *o = s_optim(m, sgd), *o_r = s_optim(r, sgd);
    fm_engine_t *e = s_engine(m, cfg->batch), *e_r = s_engine(r, cfg->batch);
    size_t np = fm_model_nparams(m);
    /* stale momentum in fm_train_run's optimiser */
    float *junk_w = malloc(np * sizeof(float)), *junk_g = malloc(np * sizeof(float));
    assert_true(junk_w && junk_g);
    for (size_t i = 0; i < np; i++) {
        junk_w[i] = 0.0f;
        junk_g[i] = 1.0f;
    }
    fm_optim_step(o, junk_w, junk_g, NULL);

    s_log_t log = {.stop_after = stop_after};
    fm_train_result_t out;
    int rc = fm_train_run(e, o, m, s_x, s_y, idx, n, cfg, w_global, s_on_epoch, &log, &out);
    double loss[S_MAX_EPOCHS];
    int nonfinite = 0;
    int epochs = 0;
    uint64_t samples = 0;
    uint64_t steps = s_replay(e_r, o_r, r, idx, n, cfg, w_global, stop_after, loss, &nonfinite,
                              &epochs, &samples);
    assert_int_equal(rc, nonfinite ? FM_ENONFINITE : 0);
    assert_true(out.steps == steps);
    if (!nonfinite) {
        assert_int_equal(log.calls, epochs);
        for (int ep = 0; ep < epochs; ep++)
            if (log.r[ep].loss != loss[ep])
                fail_msg("%s epoch %d: loss %.17g, replay %.17g", model, ep, log.r[ep].loss,
                         loss[ep]);
        assert_true(out.samples == samples);
        assert_true(out.loss == loss[epochs - 1]);
    }
    const float *pm = fm_model_params(m), *pr = fm_model_params(r);
    for (size_t i = 0; i < np; i++)
        if (memcmp(&pm[i], &pr[i], sizeof(float)) != 0)
            fail_msg("%s: parameter %zu is %.9g, replay %.9g", model, i, pm[i], pr[i]);
    free(junk_w);
    free(junk_g);
    fm_engine_destroy(&e);
    fm_engine_destroy(&e_r);
    fm_optim_destroy(&o);
    fm_optim_destroy(&o_r);
    fm_model_destroy(&m);
    fm_model_destroy(&r);
    fm_model_destroy(&anchor);
}

static void test_replay_logreg_mlp(void **state)
{
    const fm_sgd_config_t plain = {.lr = 0.05f};
    const fm_sgd_config_t all = {
        .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-3f, .clip_norm = 1.0f, .mu = 0.1f};
    const fm_train_config_t one = {.epochs = 1, .batch = 4, .seed = 123};
    const fm_train_config_t three = {.epochs = 3, .batch = 3, .seed = 124};
    s_check_replay("logreg", &plain, &one, s_idx, 10, 0, -1);
    s_check_replay("logreg", &all, &one, s_idx, 10, 1, -1);
    s_check_replay("logreg", &all, &three, s_idx, 10, 1, -1);
    s_check_replay("logreg", &all, &three, s_idx, 10, 0, 1); /* stopped after epoch 1 */
    s_check_replay("mlp", &all, &three, s_idx, 10, 1, -1);
    /* a subset given in another order: the same permutation rule, from idx's order */
    const uint32_t rev[7] = {39, 31, 24, 17, 11, 6, 3};
    s_check_replay("mlp", &all, &three, rev, 7, 0, -1);
}

/* max_steps: 3 epochs of 10 samples in batches of 3 are 4 steps each (3 + 3 + 3 + 1). A cap
 * inside the second epoch ends it there (its loss over the 6 samples it saw), a cap at an
 * epoch's end stops at that epoch, a cap beyond the run changes nothing; each against the
 * replay, and the counts from the arithmetic above. */
static void test_max_steps(void **state)
{
    const fm_sgd_config_t all = {
        .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-3f, .clip_norm = 1.0f, .mu = 0.1f};
    const struct {
        uint64_t max;
        uint64_t steps, samples;
        int calls;
    } cases[] = {{6, 6, 16, 2}, {4, 4, 10, 1}, {1, 1, 3, 1}, {12, 12, 30, 3}, {100, 12, 30, 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const fm_train_config_t cfg = {
            .epochs = 3, .batch = 3, .seed = 125, .max_steps = cases[i].max};
        s_check_replay("mlp", &all, &cfg, s_idx, 10, 1, -1);
        fm_model_t *m = s_model("mlp", 6);
        fm_optim_t *o = s_optim(m, &all);
        fm_engine_t *e = s_engine(m, 3);
        s_log_t log = {.stop_after = -1};
        fm_train_result_t out;
        assert_int_equal(
            fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &cfg, NULL, s_on_epoch, &log, &out), 0);
        assert_true(out.steps == cases[i].steps);
        assert_true(out.samples == cases[i].samples);
        assert_int_equal(log.calls, cases[i].calls);
        assert_int_equal(out.complete, 1); /* the cap, or every epoch */
        fm_engine_destroy(&e);
        fm_optim_destroy(&o);
        fm_model_destroy(&m);
    }
    /* the cnn (dropout seeds drawn per step) cut after 1 step */
    const fm_sgd_config_t sgd = {.lr = 0.01f, .momentum = 0.9f};
    const fm_train_config_t one = {.epochs = 1, .batch = 2, .seed = 5, .max_steps = 1};
    s_check_replay("cnn", &sgd, &one, s_idx, 6, 0, -1);
}

/* fm_train_steps_cap from [federation] local_steps and local_fraction; the same table is in
 * tests/python/test_trainer.py (test_steps_cap), so both clients cut where the other does.
 * 19 steps per epoch of 600 samples in batches of 32: half of them is 9.5, so 10; 0.1 x 30
 * is 3.0000000000000004 in double, and must still be 3. */
static void test_steps_cap(void **state)
{
    (void)state;
    const struct {
        uint64_t local_steps;
        double fraction;
        int epochs;
        uint64_t n;
        int batch;
        uint64_t want;
    } cases[] = {
        {0, 1.0, 1, 600, 32, 0},   {9, 1.0, 1, 600, 32, 9},  {0, 0.5, 1, 600, 32, 10},
        {0, 0.1, 1, 960, 32, 3},   {0, 0.5, 2, 600, 32, 19}, {5, 0.5, 1, 600, 32, 5},
        {20, 0.5, 1, 600, 32, 10}, {0, 1e-6, 1, 10, 32, 1},  {0, 0.3, 2, 1000, 32, 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = fm_train_steps_cap(cases[i].local_steps, cases[i].fraction,
                                          cases[i].epochs, cases[i].n, cases[i].batch);
        if (got != cases[i].want)
            fail_msg("case %zu: cap %llu, expected %llu", i, (unsigned long long)got,
                     (unsigned long long)cases[i].want);
    }
}

/* The cnn has dropout: the per-batch dropout seeds come from the same stream. */
static void test_replay_cnn(void **state)
{
    const fm_sgd_config_t sgd = {.lr = 0.01f, .momentum = 0.9f};
    const fm_train_config_t cfg = {.epochs = 1, .batch = 4, .seed = 5};
    s_check_replay("cnn", &sgd, &cfg, s_idx, 6, 0, -1);
}

/* A non-finite loss stops training with FM_ENONFINITE; the model holds the steps taken
 * before (the replay's). */
static void test_nonfinite(void **state)
{
    /* sample 5 (the second of idx) poisoned with infinities in a copy of the data */
    float saved[S_PIXELS];
    memcpy(saved, s_x + 5 * S_PIXELS, sizeof saved);
    for (int p = 0; p < S_PIXELS; p++)
        s_x[5 * S_PIXELS + p] = INFINITY;
    const fm_sgd_config_t sgd = {.lr = 0.05f, .momentum = 0.9f};
    const fm_train_config_t cfg = {.epochs = 2, .batch = 2, .seed = 8};
    s_check_replay("logreg", &sgd, &cfg, s_idx, 10, 0, -1);
    /* and the run does report it */
    fm_model_t *m = s_model("logreg", 6);
    fm_optim_t *o = s_optim(m, &sgd);
    fm_engine_t *e = s_engine(m, 2);
    fm_train_result_t out;
    assert_int_equal(fm_train_run(e, o, m, s_x, s_y, s_idx, 10, &cfg, NULL, NULL, NULL, &out),
                     FM_ENONFINITE);
    assert_true(out.steps < 5); /* within the first epoch */
    for (size_t i = 0; i < fm_model_nparams(m); i++)
        assert_true(isfinite(fm_model_params(m)[i]));
    fm_engine_destroy(&e);
    fm_optim_destroy(&o);
    fm_model_destroy(&m);
    memcpy(s_x + 5 * S_PIXELS, saved, sizeof saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_and_callbacks),
        cmocka_unit_test(test_early_stop_and_no_callback),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_each_sample_once),
        cmocka_unit_test(test_seeded),
        cmocka_unit_test(test_replay_logreg_mlp),
        cmocka_unit_test(test_replay_cnn),
        cmocka_unit_test(test_max_steps),
        cmocka_unit_test(test_steps_cap),
        cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
