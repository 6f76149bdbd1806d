/* fedmq: the command-line tool.
 *
 *   fedmq train   centralized training (the non-federated baseline)
 *   fedmq eval    score a model file on the test set
 *
 * Exit codes: 0 success, 1 runtime failure, 2 bad input (flags, files). Every error is one
 * line on stderr naming the flag or file and what is wrong. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm_blas.h"
#include "fm_daemon.h"
#include "fm_data.h"
#include "fm_dp.h"
#include "fm_dpsgd.h"
#include "fm_engine.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_parse.h"
#include "fm_random_stream.h"
#include "fm_rdp.h"
#include "fm_safetensors.h"
#include "fm_train.h"
#include "fedmq_cli.h"

/* Options shared by the subcommands. */
typedef struct {
    const char *model;
    const char *data;
    const char *in;
    const char *out;
    long epochs;
    long batch;
    long threads;
    long limit; /* use only the first N training samples (0 = all) */
    uint64_t seed;
    fm_sgd_config_t sgd;
    /* DP-SGD (--dp-clip turns it on) */
    double dp_clip, dp_sigma, dp_q, dp_delta;
    int dp_exact;
} s_opts_t;

static int s_fail(const char *cmd, int code, const char *msg)
{
    fprintf(stderr, "fedmq %s: %s\n", cmd, msg);
    return code;
}

static void s_usage_train(FILE *f)
{
    fprintf(f,
            "usage: fedmq train [options]\n"
            "Centralized training on the training set, then a test-set evaluation.\n"
            "  --model NAME        cnn | mlp | logreg (default cnn)\n"
            "  --epochs N          passes over the training set (default 1)\n"
            "  --batch N           mini-batch size (default 32)\n"
            "  --lr X              learning rate (default 0.01)\n"
            "  --momentum X        SGD momentum (default 0.9)\n"
            "  --weight-decay X    L2 weight decay (default 0)\n"
            "  --clip X            max global gradient norm, 0 = off (default 0)\n"
            "  --seed N            initialisation, shuffling and dropout seed (default 1)\n"
            "  --threads N         worker threads (default: number of CPUs)\n"
            "  --init FILE         start from a safetensors model instead of a seeded init\n"
            "  --out FILE          write the trained model (safetensors, PyTorch names)\n"
            "  --data DIR          MNIST-format dataset dir (default %s)\n"
            "  --limit N           train on the first N samples only (default all)\n"
            "  --log-level L       error | warning | notice | info | debug (default info)\n"
            "DP-SGD (docs/PRIVACY.md), on with --dp-clip:\n"
            "  --dp-clip C         clip each example's gradient to L2 norm C\n"
            "  --dp-noise S        noise multiplier sigma: std sigma*C per step (default 1.1)\n"
            "  --dp-sample-rate Q  Poisson sampling rate; an epoch is round(1/Q) steps\n"
            "                      (default: batch / samples)\n"
            "  --dp-delta D        delta of the epsilon reported (default 1e-5)\n"
            "  --dp-exact          per-example gradients one sample at a time (the reference;\n"
            "                      default: norms from the layer structure)\n"
            "Last line: test_accuracy=0.XXXX test_loss=X.XXXX\n",
            FM_FASHION_DIR);
}

static void s_usage_eval(FILE *f)
{
    fprintf(
        f,
        "usage: fedmq eval --in FILE.safetensors [options]\n"
        "Score a model file on the test set.\n"
        "  --model NAME        cnn | mlp | logreg (default: from the file's metadata, else cnn)\n"
        "  --in FILE           model file (required)\n"
        "  --data DIR          MNIST-format dataset dir (default %s)\n"
        "  --threads N         worker threads (default: number of CPUs)\n"
        "  --log-level L       error | warning | notice | info | debug (default info)\n"
        "Last line: test_accuracy=0.XXXX test_loss=X.XXXX\n",
        FM_FASHION_DIR);
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: fedmq <command> [options]\n"
               "commands:\n"
               "  train   centralized training of a model on Fashion-MNIST (or --data DIR)\n"
               "  eval    score a safetensors model file on the test set\n"
               "  run CONFIG        run broker, aggregator, evaluator and trainers together\n"
               "  checkpoints DIR   list (--verify: check, --reset: accept) an aggregator's\n"
               "                    checkpoints\n"
               "  export  write a checkpointed model as safetensors\n"
               "  watch ENDPOINT    print an evaluator's metrics feed live\n"
               "  plot JSONL -o PNG draw the accuracy curves of metrics files (gnuplot)\n"
               "  partition CONFIG  write the trainers' client partition as JSON\n"
               "  config CONFIG     print every key as the daemons resolve it\n"
               "  keygen NAME       make a CurveZMQ key pair ([security] mode = curve)\n"
               "  privacy           epsilon of a DP plan (--q --sigma --steps), or the sigma\n"
               "                    or steps a --target-epsilon allows\n"
               "Run 'fedmq <command> --help' for the options of a command.\n");
}

enum {
    OPT_LR = 256,
    OPT_MOMENTUM,
    OPT_WD,
    OPT_CLIP,
    OPT_SEED,
    OPT_INIT,
    OPT_LIMIT,
    OPT_LOGLEVEL,
    OPT_DP_CLIP,
    OPT_DP_NOISE,
    OPT_DP_RATE,
    OPT_DP_DELTA,
    OPT_DP_EXACT
};

static const struct option s_train_opts[] = {
    {"model", required_argument, 0, 'm'},
    {"epochs", required_argument, 0, 'e'},
    {"batch", required_argument, 0, 'b'},
    {"threads", required_argument, 0, 't'},
    {"data", required_argument, 0, 'd'},
    {"out", required_argument, 0, 'o'},
    {"help", no_argument, 0, 'h'},
    {"lr", required_argument, 0, OPT_LR},
    {"momentum", required_argument, 0, OPT_MOMENTUM},
    {"weight-decay", required_argument, 0, OPT_WD},
    {"clip", required_argument, 0, OPT_CLIP},
    {"seed", required_argument, 0, OPT_SEED},
    {"init", required_argument, 0, OPT_INIT},
    {"limit", required_argument, 0, OPT_LIMIT},
    {"log-level", required_argument, 0, OPT_LOGLEVEL},
    {"dp-clip", required_argument, 0, OPT_DP_CLIP},
    {"dp-noise", required_argument, 0, OPT_DP_NOISE},
    {"dp-sample-rate", required_argument, 0, OPT_DP_RATE},
    {"dp-delta", required_argument, 0, OPT_DP_DELTA},
    {"dp-exact", no_argument, 0, OPT_DP_EXACT},
    {0, 0, 0, 0}};

static const struct option s_eval_opts[] = {{"model", required_argument, 0, 'm'},
                                            {"in", required_argument, 0, 'i'},
                                            {"data", required_argument, 0, 'd'},
                                            {"threads", required_argument, 0, 't'},
                                            {"help", no_argument, 0, 'h'},
                                            {"log-level", required_argument, 0, OPT_LOGLEVEL},
                                            {0, 0, 0, 0}};

/* Parse argv into opts with the command's option table. Returns 0, 1 for --help
 * (printed), or FM_EXIT_INPUT (one line printed). */
static int s_parse(const char *cmd, int argc, char **argv, s_opts_t *o,
                   const struct option *longopts, void (*usage)(FILE *))
{
    fm_errmsg_t e = {{0}};
    double d;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = ncpu > 0 ? ncpu : 1;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'd': o->data = optarg; break;
        case 'i': o->in = optarg; break;
        case 'o': o->out = optarg; break;
        case 'e': rc = fm_parse_int("--epochs", optarg, 1, 100000, &o->epochs, &e); break;
        case 'b': rc = fm_parse_int("--batch", optarg, 1, 65536, &o->batch, &e); break;
        case 't': rc = fm_parse_int("--threads", optarg, 1, 256, &o->threads, &e); break;
        case OPT_LIMIT: rc = fm_parse_int("--limit", optarg, 1, 1L << 31, &o->limit, &e); break;
        case OPT_SEED: rc = fm_parse_u64("--seed", optarg, &o->seed, &e); break;
        case OPT_INIT: o->in = optarg; break;
        case OPT_LR:
            rc = fm_parse_float("--lr", optarg, 1e-12, 1e3, &d, &e);
            o->sgd.lr = (float)d;
            break;
        case OPT_MOMENTUM:
            rc = fm_parse_float("--momentum", optarg, 0.0, 0.999999, &d, &e);
            o->sgd.momentum = (float)d;
            break;
        case OPT_WD:
            rc = fm_parse_float("--weight-decay", optarg, 0.0, 1e3, &d, &e);
            o->sgd.weight_decay = (float)d;
            break;
        case OPT_CLIP:
            rc = fm_parse_float("--clip", optarg, 0.0, 1e9, &d, &e);
            o->sgd.clip_norm = (float)d;
            break;
        case OPT_DP_CLIP:
            rc = fm_parse_float("--dp-clip", optarg, 1e-6, 1e6, &o->dp_clip, &e);
            break;
        case OPT_DP_NOISE:
            rc = fm_parse_float("--dp-noise", optarg, 0.0, 100.0, &o->dp_sigma, &e);
            break;
        case OPT_DP_RATE:
            rc = fm_parse_float("--dp-sample-rate", optarg, 1e-6, 1.0, &o->dp_q, &e);
            break;
        case OPT_DP_DELTA:
            rc = fm_parse_float("--dp-delta", optarg, 1e-15, 0.5, &o->dp_delta, &e);
            break;
        case OPT_DP_EXACT: o->dp_exact = 1; break;
        case OPT_LOGLEVEL: {
            int level = fm_log_parse_level(optarg);
            if (level < 0)
                rc = fm_errmsg_set(&e, FM_EARG,
                                   "--log-level: '%s' is not one of error, warning, "
                                   "notice, info, debug",
                                   optarg);
            else
                fm_log_init(NULL, level);
            break;
        }
        case 'h': usage(stdout); return 1;
        case ':':
            /* only long options take values, so argv[optind - 1] is the option */
            snprintf(e.msg, sizeof e.msg, "%s: missing value", argv[optind - 1]);
            rc = FM_EARG;
            break;
        default:
            if (optopt)
                snprintf(e.msg, sizeof e.msg, "-%c: unknown option (see fedmq %s --help)", optopt,
                         cmd);
            else
                snprintf(e.msg, sizeof e.msg, "%s: unknown option (see fedmq %s --help)",
                         argv[optind - 1], cmd);
            rc = FM_EARG;
            break;
        }
        if (rc != 0)
            return s_fail(cmd, FM_EXIT_INPUT, e.msg);
    }
    if (optind < argc) {
        snprintf(e.msg, sizeof e.msg, "unexpected argument '%s' (see fedmq %s --help)",
                 argv[optind], cmd);
        return s_fail(cmd, FM_EXIT_INPUT, e.msg);
    }
    return 0;
}

/* Model by name; on an unknown name prints the error and returns NULL. */
static fm_model_t *s_model(const char *cmd, const char *name)
{
    int err = 0;
    fm_model_t *m = fm_model_new(name, &err);
    if (!m) {
        char msg[256];
        if (err == FM_EMODEL)
            snprintf(msg, sizeof msg, "--model: unknown model '%s' (expected cnn, mlp or logreg)",
                     name);
        else
            snprintf(msg, sizeof msg, "model %s: %s", name, fm_strerror(err));
        s_fail(cmd, FM_EXIT_INPUT, msg);
    }
    return m;
}

/* Start-up common to both commands: BLAS report and self-check. */
static int s_start(const char *cmd)
{
    char desc[256];
    fm_errmsg_t e = {{0}};
    FM_LOG(LOG_INFO, "%s", fm_blas_describe(desc, sizeof desc));
    if (fm_blas_selfcheck(&e) != 0)
        return s_fail(cmd, FM_EXIT_RUNTIME, e.msg);
    return 0;
}

typedef struct {
    int epochs;
    uint32_t n;
} s_progress_t;

static int s_on_epoch(void *arg, int epoch, const fm_train_result_t *r)
{
    const s_progress_t *p = arg;
    printf("epoch %d/%d train_loss=%.4f samples/s=%.0f elapsed=%.1fs\n", epoch + 1, p->epochs,
           r->loss, r->samples / (r->seconds > 0 ? r->seconds : 1e-9), r->seconds);
    fflush(stdout);
    return 0;
}

static void s_print_eval(const fm_eval_t *ev)
{
    printf("test_accuracy=%.4f test_loss=%.4f\n", ev->accuracy, ev->loss);
}

static void s_dp_normals(void *ctx, double *out, size_t n)
{
    fm_dp_normals(out, n, fm_random_stream_bytes, ctx);
}

/* DP-SGD instead of fm_train_run: noise and sampling from a CSPRNG stream (as the
 * trainer), the epsilon of the run printed (one line). Returns fm_dpsgd_run's code; a plan
 * or random source it refuses itself is reported here (one line) with *exit_code set. */
static int s_train_dp(const s_opts_t *o, fm_engine_t *eng, fm_optim_t *opt, fm_model_t *m,
                      const fm_dataset_t *train, uint32_t n, s_progress_t *prog,
                      fm_train_result_t *res, int *exit_code)
{
    fm_dpsgd_config_t c = {.clip = o->dp_clip,
                           .sigma = o->dp_sigma,
                           .q = o->dp_q > 0 ? o->dp_q : fmin(1.0, (double)o->batch / n),
                           .epochs = (int)o->epochs,
                           .mode = o->dp_exact ? FM_CLIP_EXACT : FM_CLIP_FAST,
                           .seed = o->seed};
    fm_errmsg_t e = {{0}};
    if (fm_dpsgd_check(&c, &e) != 0) {
        *exit_code = s_fail("train", FM_EXIT_INPUT, e.msg);
        return 0;
    }
    int err = 0;
    fm_random_stream_t *stream = fm_random_stream_new(&err);
    if (!stream) {
        *exit_code = s_fail("train", FM_EXIT_RUNTIME, "DP-SGD: no secure random source");
        return 0;
    }
    FM_LOG(LOG_INFO,
           "DP-SGD: clip %g, noise multiplier %g, sample rate %g (expected batch %.1f), "
           "%llu steps per epoch, %s per-example gradients",
           c.clip, c.sigma, c.q, c.q * n, (unsigned long long)fm_dpsgd_steps_per_epoch(c.q),
           o->dp_exact ? "exact" : "fast");
    fm_dpsgd_rand_t rand = {
        .bytes = fm_random_stream_bytes, .normals = s_dp_normals, .ctx = stream};
    fm_dpsgd_hooks_t hooks = {.on_epoch = s_on_epoch, .epoch_arg = prog};
    fm_dpsgd_result_t dres;
    int rc = fm_dpsgd_run(eng, opt, m, train->x, train->y, NULL, n, &c, &rand, NULL, &hooks,
                          &dres);
    *res = dres.train;
    fm_random_stream_destroy(&stream);
    double eps = fm_rdp_epsilon_of(c.q, c.sigma, dres.train.steps, o->dp_delta, FM_RDP_IMPROVED,
                                   NULL);
    printf("dp: steps=%llu samples=%llu clipped=%.4f sigma=%g q=%g clip=%g epsilon=%.4g "
           "delta=%g\n",
           (unsigned long long)dres.train.steps, (unsigned long long)dres.train.samples,
           dres.train.samples ? (double)dres.clipped / dres.train.samples : 0.0, c.sigma, c.q,
           c.clip, eps, o->dp_delta);
    return rc;
}

static int s_cmd_train(int argc, char **argv)
{
    s_opts_t o = {.model = "cnn",
                  .data = FM_FASHION_DIR,
                  .epochs = 1,
                  .batch = 32,
                  .seed = 1,
                  .sgd = {.lr = 0.01f, .momentum = 0.9f},
                  .dp_sigma = 1.1,
                  .dp_delta = 1e-5};
    int rc = s_parse("train", argc, argv, &o, s_train_opts, s_usage_train);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    fm_model_t *m = NULL;
    fm_dataset_t *train = NULL, *test = NULL;
    fm_engine_t *eng = NULL;
    fm_optim_t *opt = NULL;
    fm_errmsg_t e = {{0}};
    int err = 0;

    if (!(m = s_model("train", o.model))) {
        rc = FM_EXIT_INPUT;
        goto cleanup;
    }
    if (o.in) {
        int irc = fm_safetensors_load_model(m, o.in, &e);
        if (irc != 0) {
            rc = s_fail("train", fm_err_file_exit_code(irc), e.msg);
            goto cleanup;
        }
    } else {
        fm_model_init(m, o.seed);
    }
    if ((rc = s_start("train")) != 0)
        goto cleanup;
    int lrc = 0;
    if (!(train = fm_dataset_load_dir(o.data, "train", FM_FASHION_MEAN, FM_FASHION_STD, &lrc,
                                      &e)) ||
        !(test = fm_dataset_load_dir(o.data, "t10k", FM_FASHION_MEAN, FM_FASHION_STD, &lrc,
                                     &e))) {
        rc = s_fail("train", fm_err_file_exit_code(lrc), e.msg);
        goto cleanup;
    }
    uint32_t n = train->n;
    if (o.limit > 0 && (uint32_t)o.limit < n)
        n = (uint32_t)o.limit;
    if (!(eng = fm_engine_new(m, (int)o.threads, (int)o.batch, &err)) ||
        !(opt = fm_optim_new(fm_model_nparams(m), &o.sgd, &err))) {
        rc = s_fail("train", FM_EXIT_RUNTIME, fm_strerror(err));
        goto cleanup;
    }
    FM_LOG(LOG_INFO,
           "training %s (%zu parameters) on %u samples: epochs=%ld batch=%ld lr=%g "
           "momentum=%g threads=%ld seed=%llu",
           o.model, fm_model_nparams(m), n, o.epochs, o.batch, o.sgd.lr, o.sgd.momentum,
           o.threads, (unsigned long long)o.seed);
    fm_train_config_t tc = {.epochs = (int)o.epochs, .batch = (int)o.batch, .seed = o.seed};
    s_progress_t prog = {.epochs = (int)o.epochs, .n = n};
    fm_train_result_t res;
    double t0 = fm_daemon_now();
    int trc;
    if (o.dp_clip > 0) {
        int refused = 0;
        trc = s_train_dp(&o, eng, opt, m, train, n, &prog, &res, &refused);
        if (refused) {
            rc = refused;
            goto cleanup;
        }
    } else {
        trc = fm_train_run(eng, opt, m, train->x, train->y, NULL, n, &tc, NULL, s_on_epoch, &prog,
                           &res);
    }
    if (trc != 0) {
        rc = s_fail("train", FM_EXIT_RUNTIME,
                    trc == FM_ENONFINITE ? "training diverged: the loss became NaN or "
                                           "infinite (lower --lr or set --clip)"
                                         : fm_strerror(trc));
        goto cleanup;
    }
    double took = fm_daemon_now() - t0;
    FM_LOG(LOG_INFO, "trained in %.1fs (%.0f samples/s)", took, res.samples / took);
    if (o.out && (err = fm_safetensors_save_model(m, o.out, &e)) != 0) {
        /* an unwritable place is the environment; a model too big for the format is not */
        rc = s_fail("train", fm_err_file_exit_code(err), e.msg);
        goto cleanup;
    }
    fm_eval_t ev;
    fm_engine_evaluate(eng, m, test->x, test->y, NULL, test->n, &ev);
    s_print_eval(&ev);
    rc = 0;
cleanup:
    fm_optim_destroy(&opt);
    fm_engine_destroy(&eng);
    fm_dataset_destroy(&train);
    fm_dataset_destroy(&test);
    fm_model_destroy(&m);
    return rc;
}

static int s_cmd_eval(int argc, char **argv)
{
    s_opts_t o = {.model = NULL, .data = FM_FASHION_DIR, .batch = 256};
    int rc = s_parse("eval", argc, argv, &o, s_eval_opts, s_usage_eval);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    fm_model_t *m = NULL;
    fm_dataset_t *test = NULL;
    fm_engine_t *eng = NULL;
    fm_errmsg_t e = {{0}};
    int err = 0;
    if (!o.in) {
        rc = s_fail("eval", FM_EXIT_INPUT,
                    "--in: a model file is required (see fedmq eval --help)");
        goto cleanup;
    }
    const char *name = o.model;
    fm_safetensors_t *f = NULL;
    if (!name) {
        /* default to the architecture recorded in the file by fm_safetensors_save_model */
        f = fm_safetensors_open(o.in, &err, &e);
        if (!f) {
            rc = s_fail("eval", fm_err_file_exit_code(err), e.msg);
            goto cleanup;
        }
        const char *meta = fm_safetensors_meta(f, "fedmq_model");
        name = meta ? meta : "cnn";
    }
    m = s_model("eval", name);
    fm_safetensors_close(&f);
    if (!m) {
        rc = FM_EXIT_INPUT;
        goto cleanup;
    }
    if ((err = fm_safetensors_load_model(m, o.in, &e)) != 0) {
        rc = s_fail("eval", fm_err_file_exit_code(err), e.msg);
        goto cleanup;
    }
    if ((rc = s_start("eval")) != 0)
        goto cleanup;
    if (!(test = fm_dataset_load_dir(o.data, "t10k", FM_FASHION_MEAN, FM_FASHION_STD, &err,
                                     &e))) {
        rc = s_fail("eval", fm_err_file_exit_code(err), e.msg);
        goto cleanup;
    }
    if (!(eng = fm_engine_new(m, (int)o.threads, (int)o.batch, &err))) {
        rc = s_fail("eval", FM_EXIT_RUNTIME, fm_strerror(err));
        goto cleanup;
    }
    fm_eval_t ev;
    fm_engine_evaluate(eng, m, test->x, test->y, NULL, test->n, &ev);
    for (int c = 0; c < FM_NCLASSES; c++)
        FM_LOG(LOG_INFO, "class %d accuracy=%.4f (%u/%u)", c,
               ev.class_total[c] ? (double)ev.class_correct[c] / ev.class_total[c] : 0.0,
               ev.class_correct[c], ev.class_total[c]);
    s_print_eval(&ev);
    rc = 0;
cleanup:
    fm_engine_destroy(&eng);
    fm_dataset_destroy(&test);
    fm_model_destroy(&m);
    return rc;
}

int main(int argc, char **argv)
{
    fm_blas_setup(argv);
    fm_log_init("fedmq", LOG_INFO);
    if (argc < 2) {
        fprintf(stderr, "fedmq: missing command (see fedmq --help)\n");
        return FM_EXIT_INPUT;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0)
        return s_cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return s_cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "checkpoints") == 0)
        return fm_cli_checkpoints(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return fm_cli_export(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return fm_cli_run(argc - 1, argv + 1);
    if (strcmp(cmd, "watch") == 0)
        return fm_cli_watch(argc - 1, argv + 1);
    if (strcmp(cmd, "plot") == 0)
        return fm_cli_plot(argc - 1, argv + 1);
    if (strcmp(cmd, "partition") == 0)
        return fm_cli_partition(argc - 1, argv + 1);
    if (strcmp(cmd, "config") == 0)
        return fm_cli_config(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0)
        return fm_cli_keygen(argc - 1, argv + 1);
    if (strcmp(cmd, "privacy") == 0)
        return fm_cli_privacy(argc - 1, argv + 1);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        s_usage(stdout);
        return 0;
    }
    fprintf(stderr, "fedmq: unknown command '%s' (see fedmq --help)\n", cmd);
    return FM_EXIT_INPUT;
}
