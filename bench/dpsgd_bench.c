/* dpsgd_bench: the cost of sample-level DP-SGD in samples/s, against plain training.
 *
 *   dpsgd_bench --model mlp|cnn|logreg [--batch B] [--samples N] [--threads T]
 *               [--seconds S] [--warmup W] [--sigma X] [--modes LIST] [--data DIR]
 *
 * On the first N training samples of Fashion-MNIST (a client's partition; default 6000),
 * for each mode of LIST (default plain,clip,dp,exact), W seconds of warm-up then S timed
 * seconds of training steps:
 *   plain  shuffled mini-batches of B: fm_engine_gradient + fm_optim_step (as `fedmq train`)
 *   clip   fm_dpsgd_run, Poisson rate q = B / N, per-example clipping (FM_CLIP_FAST), no noise
 *   dp     the same with noise multiplier X (default 1.1): what a trainer with dp_sgd runs,
 *          randomness from fm_random_stream and fm_dp_normals as in the trainer
 *   exact  dp with FM_CLIP_EXACT (every example alone: the reference path)
 * SGD lr 0.01, momentum 0.9, dropout on. samples/s counts the samples whose gradients were
 * computed (DP: the realised Poisson batches). One line per mode on stdout:
 *
 *   dpsgd model=mlp mode=dp batch=64 samples=6000 threads=1 sigma=1.1 samples_per_s=1234.5
 *         steps=... seconds=... noise_s_per_step=...
 *
 * noise_s_per_step (dp and exact) is the time to draw one step's normals (nparams of them),
 * measured separately, so the share of the noise in a step can be read off.
 * Exit codes: 0 success, 1 runtime failure, 2 bad input. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_blas.h"
#include "fm_data.h"
#include "fm_dp.h"
#include "fm_dpsgd.h"
#include "fm_engine.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_parse.h"
#include "fm_random_stream.h"
#include "fm_rng.h"

static double s_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int s_bad(const char *msg)
{
    fprintf(stderr, "dpsgd_bench: %s\n", msg);
    return 2;
}

static void s_normals(void *ctx, double *out, size_t n)
{
    fm_dp_normals(out, n, fm_random_stream_bytes, ctx);
}

/* The timing of one mode: warm-up until t_warm, then count until t_end. */
typedef struct {
    double t_warm, t_end, t_start;
    uint64_t steps, samples;
} s_clock_t;

static int s_on_step(void *arg, const fm_dpsgd_step_t *st)
{
    s_clock_t *c = arg;
    double now = s_now();
    if (now < c->t_warm)
        return 0;
    if (c->t_start == 0.0) {
        c->t_start = now; /* the first step after the warm-up starts the clock */
        return 0;
    }
    c->steps++;
    c->samples += st->batch;
    return now >= c->t_end;
}

int main(int argc, char **argv)
{
    fm_blas_setup(argv);
    fm_log_init("dpsgd_bench", LOG_WARNING);
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"batch", required_argument, 0, 'b'},
                                             {"samples", required_argument, 0, 'n'},
                                             {"threads", required_argument, 0, 't'},
                                             {"seconds", required_argument, 0, 's'},
                                             {"warmup", required_argument, 0, 'w'},
                                             {"sigma", required_argument, 0, 'x'},
                                             {"modes", required_argument, 0, 'M'},
                                             {"data", required_argument, 0, 'd'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *model = NULL, *data = FM_FASHION_DIR, *modes = "plain,clip,dp,exact";
    long batch = 64, nsamples = 6000, threads = 1;
    double seconds = 10.0, warmup = 1.0, sigma = 1.1;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'b': rc = fm_parse_int("--batch", optarg, 1, 65536, &batch, &e); break;
        case 'n': rc = fm_parse_int("--samples", optarg, 1, 60000, &nsamples, &e); break;
        case 't': rc = fm_parse_int("--threads", optarg, 1, 256, &threads, &e); break;
        case 's': rc = fm_parse_float("--seconds", optarg, 0.01, 86400, &seconds, &e); break;
        case 'w': rc = fm_parse_float("--warmup", optarg, 0.0, 86400, &warmup, &e); break;
        case 'x': rc = fm_parse_float("--sigma", optarg, 0.0, 100, &sigma, &e); break;
        case 'M': modes = optarg; break;
        case 'd': data = optarg; break;
        case 'h':
            printf("usage: dpsgd_bench --model mlp|cnn|logreg [--batch B] [--samples N] "
                   "[--threads T] [--seconds S] [--warmup W] [--sigma X] "
                   "[--modes plain,clip,dp,exact] [--data DIR]\n");
            return 0;
        default:
            snprintf(e.msg, sizeof e.msg, "%s: unknown option or missing value",
                     argv[optind - 1]);
            rc = FM_EARG;
        }
        if (rc != 0)
            return s_bad(e.msg);
    }
    if (!model)
        return s_bad("--model: required (mlp, cnn or logreg)");
    if (batch > nsamples)
        return s_bad("--batch: larger than --samples");

    int rc = 1, err = 0;
    fm_model_t *m = NULL;
    fm_dataset_t *train = NULL;
    fm_engine_t *eng = NULL;
    fm_optim_t *opt = NULL;
    fm_random_stream_t *stream = NULL;
    uint32_t *order = NULL;
    double *z = NULL;
    if (!(m = fm_model_new(model, &err))) {
        rc = s_bad("--model: unknown model");
        goto cleanup;
    }
    fm_model_init(m, 1);
    if (fm_blas_selfcheck(&e) != 0 ||
        !(train = fm_dataset_load_dir(data, "train", FM_FASHION_MEAN, FM_FASHION_STD, NULL,
                                      &e))) {
        fprintf(stderr, "dpsgd_bench: %s\n", e.msg);
        goto cleanup;
    }
    uint32_t n = (uint32_t)nsamples < train->n ? (uint32_t)nsamples : train->n;
    fm_sgd_config_t sgd = {.lr = 0.01f, .momentum = 0.9f};
    size_t np = fm_model_nparams(m);
    if (!(eng = fm_engine_new(m, (int)threads, (int)batch, &err)) ||
        !(opt = fm_optim_new(np, &sgd, &err)) || !(stream = fm_random_stream_new(&err)) ||
        !(order = malloc(sizeof(uint32_t) * n)) || !(z = malloc(sizeof(double) * np))) {
        fprintf(stderr, "dpsgd_bench: %s\n", fm_strerror(err ? err : -ENOMEM));
        goto cleanup;
    }
    /* one step's noise alone */
    double t0 = s_now();
    int reps = 0;
    do {
        s_normals(stream, z, np);
        reps++;
    } while (s_now() - t0 < 0.5);
    double noise_s = (s_now() - t0) / reps;

    char list[256];
    snprintf(list, sizeof list, "%s", modes);
    for (char *save = NULL, *mode = strtok_r(list, ",", &save); mode;
         mode = strtok_r(NULL, ",", &save)) {
        fm_model_init(m, 1);
        fm_optim_reset(opt);
        s_clock_t clk = {.t_warm = s_now() + warmup};
        clk.t_end = clk.t_warm + seconds;
        if (strcmp(mode, "plain") == 0) {
            fm_rng_t rng;
            fm_rng_seed(&rng, 1, 0x7121);
            uint32_t pos = n;
            float *params = fm_model_params(m);
            fm_dpsgd_step_t st = {.batch = (uint32_t)batch};
            for (;;) {
                if (pos + (uint32_t)batch > n) {
                    for (uint32_t i = 0; i < n; i++)
                        order[i] = i;
                    fm_rng_shuffle_u32(&rng, order, n);
                    pos = 0;
                }
                fm_engine_gradient(eng, m, train->x, train->y, order + pos, (int)batch, 1,
                                   fm_rng_u64(&rng));
                fm_optim_step(opt, params, fm_engine_grads(eng), NULL);
                pos += (uint32_t)batch;
                if (s_on_step(&clk, &st))
                    break;
            }
        } else if (strcmp(mode, "clip") == 0 || strcmp(mode, "dp") == 0 ||
                   strcmp(mode, "exact") == 0) {
            fm_dpsgd_config_t dc = {.clip = 1.0,
                                    .sigma = strcmp(mode, "clip") == 0 ? 0.0 : sigma,
                                    .q = (double)batch / n,
                                    .epochs = 1000000,
                                    .mode = strcmp(mode, "exact") == 0 ? FM_CLIP_EXACT
                                                                       : FM_CLIP_FAST,
                                    .seed = 1};
            fm_dpsgd_rand_t rand = {
                .bytes = fm_random_stream_bytes, .normals = s_normals, .ctx = stream};
            fm_dpsgd_hooks_t hooks = {.on_step = s_on_step, .step_arg = &clk};
            fm_dpsgd_result_t res;
            if ((err = fm_dpsgd_run(eng, opt, m, train->x, train->y, NULL, n, &dc, &rand, NULL,
                                    &hooks, &res)) != 0) {
                fprintf(stderr, "dpsgd_bench: %s: %s\n", mode, fm_strerror(err));
                goto cleanup;
            }
        } else {
            rc = s_bad("--modes: each of plain, clip, dp, exact");
            goto cleanup;
        }
        double secs = s_now() - clk.t_start;
        printf("dpsgd model=%s mode=%s batch=%ld samples=%u threads=%ld sigma=%g "
               "samples_per_s=%.1f steps=%llu seconds=%.2f noise_s_per_step=%.4f\n",
               model, mode, batch, n, threads,
               strcmp(mode, "dp") == 0 || strcmp(mode, "exact") == 0 ? sigma : 0.0,
               clk.samples / secs, (unsigned long long)clk.steps, secs,
               strcmp(mode, "dp") == 0 || strcmp(mode, "exact") == 0 ? noise_s : 0.0);
        fflush(stdout);
    }
    rc = 0;
cleanup:
    free(z);
    free(order);
    fm_random_stream_destroy(&stream);
    fm_optim_destroy(&opt);
    fm_engine_destroy(&eng);
    fm_dataset_destroy(&train);
    fm_model_destroy(&m);
    return rc;
}
