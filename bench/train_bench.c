/* train_bench: fedmq's training throughput on real Fashion-MNIST batches.
 *
 *   train_bench --model mlp|cnn|logreg --batch B --threads T --seconds S [--warmup W]
 *               [--seed N] [--data DIR] [--peak]
 *
 * Runs the real training step loop, exactly what `fedmq train` does per step:
 * fm_engine_gradient(train=1, dropout on) + fm_optim_step (SGD lr 0.01, momentum 0.9) over
 * shuffled mini-batches of the training set (reshuffled at every pass; every batch is full),
 * for W seconds of warm-up and then S timed seconds (the clock is read after every step and
 * the loop stops at the first step ending past S). Prints, on stdout:
 *
 *   # OpenBLAS 0.3.21 core SkylakeX (from OPENBLAS_CORETYPE)       <- fm_blas_describe()
 *   # steps=... samples=... seconds=... mean_loss=... flops_forward_per_sample=...
 *   fedmq model=cnn batch=32 threads=1 samples_per_s=1234.5 gflops=56.7 core=SkylakeX
 *
 * GFLOP/s convention: gflops = samples_per_s * 3 * fm_model_flops_forward(m) / 1e9, i.e. one
 * training step is counted as 3x the forward FLOPs (forward 1x + backward 2x: the gradient
 * w.r.t. the inputs and w.r.t. the weights each cost about one forward). Multiply-add = 2
 * FLOPs. Element-wise work (relu, pooling, dropout, softmax, the optimiser update) is not
 * counted, and the first layer's input gradient, which fedmq does not compute, is counted
 * anyway, so the figure is a conventional "model FLOP/s" rate, comparable across frameworks
 * at equal samples/s, not a count of the instructions executed.
 *
 * --peak prints `sgemm_peak_gflops=X` (fm_blas_peak_gflops(1024, 1.0): a single-threaded
 * 1024^3 sgemm for about one second); with --peak alone (no --model) nothing else runs.
 *
 * Exit codes: 0 success, 1 runtime failure (BLAS self-check, divergence), 2 bad input. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_blas.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_parse.h"
#include "fm_rng.h"

static double s_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: train_bench --model mlp|cnn|logreg --batch B --threads T --seconds S\n"
            "                   [--warmup W] [--seed N] [--data DIR] [--peak]\n"
            "  --model NAME   model to train (required unless --peak is given alone)\n"
            "  --batch B      mini-batch size (default 32)\n"
            "  --threads T    fedmq engine threads (default 1)\n"
            "  --seconds S    timed duration in seconds (default 10)\n"
            "  --warmup W     untimed warm-up in seconds (default 2)\n"
            "  --seed N       initialisation, shuffling and dropout seed (default 1)\n"
            "  --data DIR     MNIST-format dataset dir (default %s)\n"
            "  --peak         also print sgemm_peak_gflops= (single-thread 1024^3 sgemm)\n"
            "Last line: fedmq model=M batch=B threads=T samples_per_s=X gflops=Y core=C\n"
            "(gflops = samples_per_s * 3 * forward FLOPs per sample / 1e9)\n",
            FM_FASHION_DIR);
}

static int s_bad(const char *msg)
{
    fprintf(stderr, "train_bench: %s\n", msg);
    return 2;
}

enum { OPT_WARMUP = 256, OPT_SEED, OPT_PEAK, OPT_DATA };

int main(int argc, char **argv)
{
    fm_blas_setup(argv);
    fm_log_init("train_bench", LOG_WARNING);

    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"batch", required_argument, 0, 'b'},
                                             {"threads", required_argument, 0, 't'},
                                             {"seconds", required_argument, 0, 's'},
                                             {"warmup", required_argument, 0, OPT_WARMUP},
                                             {"seed", required_argument, 0, OPT_SEED},
                                             {"data", required_argument, 0, OPT_DATA},
                                             {"peak", no_argument, 0, OPT_PEAK},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *model = NULL, *data = FM_FASHION_DIR;
    long batch = 32, threads = 1;
    double seconds = 10.0, warmup = 2.0;
    uint64_t seed = 1;
    int peak = 0;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'b': rc = fm_parse_int("--batch", optarg, 1, 65536, &batch, &e); break;
        case 't': rc = fm_parse_int("--threads", optarg, 1, 256, &threads, &e); break;
        case 's': rc = fm_parse_float("--seconds", optarg, 0.01, 86400, &seconds, &e); break;
        case OPT_WARMUP: rc = fm_parse_float("--warmup", optarg, 0.0, 86400, &warmup, &e); break;
        case OPT_SEED: rc = fm_parse_u64("--seed", optarg, &seed, &e); break;
        case OPT_DATA: data = optarg; break;
        case OPT_PEAK: peak = 1; break;
        case 'h': s_usage(stdout); return 0;
        case ':':
            snprintf(e.msg, sizeof e.msg, "%s: missing value", argv[optind - 1]);
            rc = FM_EARG;
            break;
        default:
            snprintf(e.msg, sizeof e.msg, "%s: unknown option (see train_bench --help)",
                     argv[optind - 1]);
            rc = FM_EARG;
            break;
        }
        if (rc != 0)
            return s_bad(e.msg);
    }
    if (optind < argc) {
        snprintf(e.msg, sizeof e.msg, "unexpected argument '%s' (see train_bench --help)",
                 argv[optind]);
        return s_bad(e.msg);
    }
    if (!model && !peak)
        return s_bad("--model: required (mlp, cnn or logreg), or --peak alone");

    int rc = 1, err = 0;
    fm_model_t *m = NULL;
    fm_dataset_t *train = NULL;
    fm_engine_t *eng = NULL;
    fm_optim_t *opt = NULL;
    uint32_t *order = NULL;
    if (model && !(m = fm_model_new(model, &err))) {
        if (err != FM_EMODEL) {
            fprintf(stderr, "train_bench: model %s: %s\n", model, fm_strerror(err));
            return 1;
        }
        snprintf(e.msg, sizeof e.msg, "--model: unknown model '%s' (expected cnn, mlp or logreg)",
                 model);
        return s_bad(e.msg);
    }

    char desc[256];
    printf("# %s\n", fm_blas_describe(desc, sizeof desc));
    fflush(stdout);
    if (fm_blas_selfcheck(&e) != 0) {
        fprintf(stderr, "train_bench: %s\n", e.msg);
        goto cleanup;
    }
    if (peak) {
        printf("sgemm_peak_gflops=%.1f core=%s\n", fm_blas_peak_gflops(1024, 1.0),
               fm_blas_core());
        fflush(stdout);
        if (!model) {
            rc = 0;
            goto cleanup;
        }
    }

    fm_model_init(m, seed);
    if (!(train = fm_dataset_load_dir(data, "train", FM_FASHION_MEAN, FM_FASHION_STD, NULL,
                                      &e))) {
        rc = s_bad(e.msg);
        goto cleanup;
    }
    if ((uint32_t)batch > train->n) {
        rc = s_bad("--batch: larger than the training set");
        goto cleanup;
    }
    fm_sgd_config_t sgd = {.lr = 0.01f, .momentum = 0.9f};
    if (!(eng = fm_engine_new(m, (int)threads, (int)batch, &err)) ||
        !(opt = fm_optim_new(fm_model_nparams(m), &sgd, &err))) {
        fprintf(stderr, "train_bench: %s\n", fm_strerror(err));
        goto cleanup;
    }
    uint32_t n = train->n;
    if (!(order = malloc(sizeof(uint32_t) * n))) {
        fprintf(stderr, "train_bench: out of memory\n");
        goto cleanup;
    }
    for (uint32_t i = 0; i < n; i++)
        order[i] = i;
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 0x7121);
    fm_rng_shuffle_u32(&rng, order, n);
    uint32_t pos = 0;
    float *params = fm_model_params(m);

    /* phase 0: warm-up (untimed), phase 1: timed */
    uint64_t steps = 0;
    double loss_sum = 0.0, elapsed = 0.0;
    for (int phase = 0; phase < 2; phase++) {
        double limit = phase == 0 ? warmup : seconds;
        if (limit <= 0.0)
            continue;
        steps = 0;
        loss_sum = 0.0;
        double t0 = s_now();
        do {
            if (pos + (uint32_t)batch > n) { /* next pass: reshuffle, keep batches full */
                fm_rng_shuffle_u32(&rng, order, n);
                pos = 0;
            }
            double loss = fm_engine_gradient(eng, m, train->x, train->y, order + pos, (int)batch,
                                             1, fm_rng_u64(&rng));
            if (!isfinite(loss)) {
                fprintf(stderr, "train_bench: training diverged (loss %g)\n", loss);
                goto cleanup;
            }
            fm_optim_step(opt, params, fm_engine_grads(eng), NULL);
            pos += (uint32_t)batch;
            loss_sum += loss;
            steps++;
            elapsed = s_now() - t0;
        } while (elapsed < limit);
    }
    double samples = (double)steps * (double)batch;
    double sps = samples / elapsed;
    double fwd = fm_model_flops_forward(m);
    printf(
        "# steps=%llu samples=%.0f seconds=%.3f mean_loss=%.4f flops_forward_per_sample=%.0f\n",
        (unsigned long long)steps, samples, elapsed, steps ? loss_sum / steps : 0.0, fwd);
    printf("fedmq model=%s batch=%ld threads=%ld samples_per_s=%.1f gflops=%.2f core=%s\n",
           fm_model_name(m), batch, threads, sps, sps * 3.0 * fwd / 1e9, fm_blas_core());
    fflush(stdout);
    rc = 0;
cleanup:
    free(order);
    fm_optim_destroy(&opt);
    fm_engine_destroy(&eng);
    fm_dataset_destroy(&train);
    fm_model_destroy(&m);
    return rc;
}
