/* backdoor_eval: how well a model learned a backdoor (bench/poison_compare.sh).
 *
 *   backdoor_eval --in MODEL.safetensors [--target C] [--model NAME] [--data DIR] [--threads N]
 *
 * Loads the model (fedmq export or fedmq train --out writes it; the architecture from the
 * file's metadata unless --model) and the t10k test set as `fedmq eval` does, and prints one
 * line:
 *   clean_accuracy=0.XXXX asr=0.XXXX target=C triggered=N
 * clean_accuracy: the test accuracy of the untouched test set; asr (attack success rate): of
 * the N test images whose true class is not C, the fraction the model classifies as C once
 * the trigger (trainer_attack_stamp: the 4 x 4 white square, bottom-right) is stamped.
 * Exit: 0, 1 runtime failure (unreadable file or data), 2 bad command line or model file. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_blas.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_parse.h"
#include "fm_safetensors.h"
#include "trainer_attack.h"

#define PROG "backdoor_eval"

typedef struct {
    const char *in, *model, *data;
    long target, threads;
} s_opts_t;

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --in FILE.safetensors [--target C] [--model NAME] [--data DIR]\n"
            "                     [--threads N]\n"
            "Clean test accuracy and backdoor attack success rate of a model file.\n"
            "  --in FILE       model (fedmq export / fedmq train --out)\n"
            "  --target C      the backdoor's class (default 0)\n"
            "  --model NAME    cnn | mlp | logreg (default: from the file's metadata)\n"
            "  --data DIR      MNIST-format dataset dir (default %s)\n"
            "  --threads N     worker threads (default: number of CPUs)\n"
            "Output: clean_accuracy=0.XXXX asr=0.XXXX target=C triggered=N\n"
            "asr = of the N test images whose class is not C, the fraction classified as C\n"
            "with the trigger (a %d x %d white square, bottom-right corner) stamped.\n",
            FM_FASHION_DIR, TRAINER_ATTACK_PATCH, TRAINER_ATTACK_PATCH);
}

/* 0, 1 after --help, or FM_EXIT_INPUT after one line on stderr. */
static int s_parse(int argc, char **argv, s_opts_t *o)
{
    static const struct option opts[] = {{"in", required_argument, 0, 'i'},
                                         {"target", required_argument, 0, 'c'},
                                         {"model", required_argument, 0, 'm'},
                                         {"data", required_argument, 0, 'd'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    fm_errmsg_t e = {{0}};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int rc = 0;
        switch (ch) {
        case 'i': o->in = optarg; break;
        case 'm': o->model = optarg; break;
        case 'd': o->data = optarg; break;
        case 'c':
            rc = fm_parse_int("--target", optarg, 0, FM_NCLASSES - 1, &o->target, &e);
            break;
        case 't': rc = fm_parse_int("--threads", optarg, 1, 256, &o->threads, &e); break;
        case 'h': s_usage(stdout); return 1;
        case ':':
            snprintf(e.msg, sizeof e.msg, "%s: missing value", argv[optind - 1]);
            rc = 1;
            break;
        default:
            snprintf(e.msg, sizeof e.msg, "%s: unknown option (see " PROG " --help)",
                     argv[optind - 1]);
            rc = 1;
        }
        if (rc != 0) {
            fprintf(stderr, PROG ": %s\n", e.msg);
            return FM_EXIT_INPUT;
        }
    }
    if (optind < argc || !o->in) {
        fprintf(stderr, PROG ": %s (see " PROG " --help)\n",
                o->in ? "unexpected argument" : "--in FILE is required");
        return FM_EXIT_INPUT;
    }
    return 0;
}

/* The model of file `path` (architecture `name`, or from its metadata, else cnn). NULL with
 * one line in `e` and *err (fm_err_file_exit_code gives the exit status). */
static fm_model_t *s_load(const char *path, const char *name, int *err, fm_errmsg_t *e)
{
    fm_safetensors_t *f = NULL;
    if (!name) {
        if (!(f = fm_safetensors_open(path, err, e)))
            return NULL;
        const char *meta = fm_safetensors_meta(f, "fedmq_model");
        name = meta ? meta : "cnn";
    }
    fm_model_t *m = fm_model_new(name, err);
    if (!m)
        fm_errmsg_set(e, *err, "model '%s': %s", name, fm_strerror(*err));
    fm_safetensors_close(&f);
    if (m && (*err = fm_safetensors_load_model(m, path, e)) != 0)
        fm_model_destroy(&m);
    return m;
}

/* The test images whose label is not `target`, stamped with the trigger, labelled `target`,
 * into trig (x and y allocated here, n set). 0 or -ENOMEM. */
static int s_triggered(const fm_dataset_t *test, int target, fm_dataset_t *trig)
{
    size_t pixels = (size_t)test->rows * test->cols;
    *trig = (fm_dataset_t){.rows = test->rows, .cols = test->cols};
    trig->x = malloc((size_t)test->n * pixels * sizeof(float));
    trig->y = malloc(test->n ? test->n : 1);
    if (!trig->x || !trig->y)
        return -ENOMEM;
    for (uint32_t i = 0; i < test->n; i++) {
        if (test->y[i] == target)
            continue;
        float *img = trig->x + (size_t)trig->n * pixels;
        memcpy(img, test->x + (size_t)i * pixels, pixels * sizeof(float));
        trainer_attack_stamp(img, test->rows, test->cols);
        trig->y[trig->n++] = (uint8_t)target;
    }
    return 0;
}

int main(int argc, char **argv)
{
    fm_blas_setup(argv);
    fm_log_init(PROG, LOG_WARNING);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s_opts_t o = {.data = FM_FASHION_DIR, .threads = ncpu > 0 ? ncpu : 1};
    int rc = s_parse(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    fm_model_t *m = NULL;
    fm_dataset_t *test = NULL;
    fm_dataset_t trig = {0};
    fm_engine_t *eng = NULL;
    fm_errmsg_t e = {{0}};
    int err = 0;
    if (!(m = s_load(o.in, o.model, &err, &e)) ||
        !(test = fm_dataset_load_dir(o.data, "t10k", FM_FASHION_MEAN, FM_FASHION_STD, &err,
                                     &e))) {
        fprintf(stderr, PROG ": %s\n", e.msg);
        rc = fm_err_file_exit_code(err);
        goto cleanup;
    }
    if ((err = s_triggered(test, (int)o.target, &trig)) != 0 ||
        !(eng = fm_engine_new(m, (int)o.threads, 256, &err))) {
        fprintf(stderr, PROG ": %s\n", fm_strerror(err));
        rc = FM_EXIT_RUNTIME;
        goto cleanup;
    }
    fm_eval_t clean, bd = {0};
    fm_engine_evaluate(eng, m, test->x, test->y, NULL, test->n, &clean);
    /* labelled `target`: the accuracy on the triggered set is the attack success rate */
    if (trig.n)
        fm_engine_evaluate(eng, m, trig.x, trig.y, NULL, trig.n, &bd);
    printf("clean_accuracy=%.4f asr=%.4f target=%ld triggered=%u\n", clean.accuracy,
           trig.n ? bd.accuracy : 0.0, o.target, trig.n);
    rc = 0;
cleanup:
    fm_engine_destroy(&eng);
    free(trig.x);
    free(trig.y);
    fm_dataset_destroy(&test);
    fm_model_destroy(&m);
    return rc;
}
