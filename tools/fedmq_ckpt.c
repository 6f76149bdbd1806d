/* fedmq checkpoints / fedmq export: read an aggregator's LMDB checkpoints. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fedmq_cli.h"
#include "fm_ckpt.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_parse.h"
#include "fm_safetensors.h"

#define EXIT_BAD_INPUT 2
#define MAX_LIST 4096

/* Open an existing checkpoint directory (never create one at a mistyped path). */
static fm_ckpt_t *s_open_existing(const char *cmd, const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "fedmq %s: %s: not a directory\n", cmd, dir);
        return NULL;
    }
    if (stat(path, &st) != 0) {
        fprintf(stderr, "fedmq %s: %s: no checkpoints here (no data.mdb)\n", cmd, dir);
        return NULL;
    }
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *c = fm_ckpt_open(dir, 0, &err, &e);
    if (!c)
        fprintf(stderr, "fedmq %s: %s\n", cmd, e.msg[0] ? e.msg : fm_strerror(err));
    return c;
}

/* Accuracy reported by the evaluator for `version` in a metrics JSON-lines file, NaN if
 * absent (the last line for that version wins). */
static double s_score(const char *metrics, uint64_t version)
{
    double score = NAN;
    FILE *f = metrics ? fopen(metrics, "r") : NULL;
    if (!f)
        return score;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *v = strstr(line, "\"version\":");
        const char *a = strstr(line, "\"accuracy\":");
        if (v && a && strtoull(v + 10, NULL, 10) == version)
            score = strtod(a + 11, NULL);
    }
    fclose(f);
    return score;
}

int fm_cli_checkpoints(int argc, char **argv)
{
    static const struct option longopts[] = {{"metrics", required_argument, 0, 'm'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *metrics = NULL;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (ch == 'm')
            metrics = optarg;
        else if (ch == 'h') {
            printf("usage: fedmq checkpoints DIR [--metrics FILE.jsonl]\n"
                   "List an aggregator's checkpoints, newest first: version, time, model,\n"
                   "updates applied/rejected, and the evaluator's accuracy for that version\n"
                   "when --metrics names its metrics file.\n");
            return 0;
        } else {
            fprintf(stderr, "fedmq checkpoints: %s: %s (see fedmq checkpoints --help)\n",
                    argv[optind - 1], ch == ':' ? "missing value" : "unknown option");
            return EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "fedmq checkpoints: expected one directory (see fedmq checkpoints --help)\n");
        return EXIT_BAD_INPUT;
    }
    fm_ckpt_t *c = s_open_existing("checkpoints", argv[optind]);
    if (!c)
        return EXIT_BAD_INPUT;
    int rc = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_info_t *list = calloc(MAX_LIST, sizeof *list);
    size_t n = 0;
    if (!list) {
        rc = 1;
        goto cleanup;
    }
    if (fm_ckpt_list(c, list, MAX_LIST, &n, &e) != 0) {
        fprintf(stderr, "fedmq checkpoints: %s\n", e.msg);
        rc = 1;
        goto cleanup;
    }
    printf("%-8s %-20s %-7s %10s %10s %9s  %s\n", "version", "time (UTC)", "model", "applied",
           "rejected", "accuracy", "status");
    for (size_t i = 0; i < n && i < MAX_LIST; i++) {
        const fm_ckpt_info_t *in = &list[i];
        char when[32] = "-";
        if (in->status == 0) {
            time_t t = (time_t)in->created;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        }
        double score = s_score(metrics, in->version);
        char acc[16] = "-";
        if (!isnan(score))
            snprintf(acc, sizeof acc, "%.4f", score);
        printf("%-8llu %-20s %-7s %10llu %10llu %9s  %s\n", (unsigned long long)in->version, when,
               in->status == 0 ? in->model : "?", (unsigned long long)in->updates_applied,
               (unsigned long long)in->updates_rejected, acc,
               in->status == 0 ? "ok" : fm_strerror(in->status));
    }
    if (n == 0)
        printf("(no checkpoints)\n");
cleanup:
    free(list);
    fm_ckpt_close(&c);
    return rc;
}

int fm_cli_export(int argc, char **argv)
{
    static const struct option longopts[] = {{"checkpoint", required_argument, 0, 'c'},
                                             {"version", required_argument, 0, 'v'},
                                             {"out", required_argument, 0, 'o'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *dir = NULL, *out = NULL;
    uint64_t version = 0;
    int have_version = 0;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': dir = optarg; break;
        case 'o': out = optarg; break;
        case 'v':
            if (fm_parse_u64("--version", optarg, &version, &e) != 0) {
                fprintf(stderr, "fedmq export: %s\n", e.msg);
                return EXIT_BAD_INPUT;
            }
            have_version = 1;
            break;
        case 'h':
            printf("usage: fedmq export --checkpoint DIR [--version V] --out FILE.safetensors\n"
                   "Write a checkpointed model (default: the newest valid one) as safetensors\n"
                   "with PyTorch names, loadable by fedmq eval and by PyTorch.\n");
            return 0;
        default:
            fprintf(stderr, "fedmq export: %s: %s (see fedmq export --help)\n", argv[optind - 1],
                    ch == ':' ? "missing value" : "unknown option");
            return EXIT_BAD_INPUT;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fedmq export: unexpected argument '%s'\n", argv[optind]);
        return EXIT_BAD_INPUT;
    }
    if (!dir || !out) {
        fprintf(stderr, "fedmq export: --checkpoint DIR and --out FILE are required\n");
        return EXIT_BAD_INPUT;
    }
    fm_ckpt_t *c = s_open_existing("export", dir);
    if (!c)
        return EXIT_BAD_INPUT;
    int rc = EXIT_BAD_INPUT, err = 0;
    fm_model_t *m = NULL;
    fm_ckpt_info_t info;
    /* read the header first to learn the model, then the parameters */
    err = have_version ? fm_ckpt_load(c, version, &info, NULL, 0, NULL, 0, &e)
                       : fm_ckpt_load_latest(c, &info, NULL, 0, NULL, 0, &e);
    if (err != 0) {
        if (err == -ENOENT)
            fprintf(stderr, "fedmq export: %s: %s\n", dir,
                    have_version ? "no checkpoint of that version" : "no checkpoints");
        else
            fprintf(stderr, "fedmq export: %s\n", e.msg[0] ? e.msg : fm_strerror(err));
        goto cleanup;
    }
    if (!(m = fm_model_new(info.model, &err))) {
        fprintf(stderr, "fedmq export: %s: checkpoint holds unknown model '%s'\n", dir, info.model);
        goto cleanup;
    }
    err = fm_ckpt_load(c, info.version, &info, fm_model_params(m), fm_model_nparams(m), NULL, 0, &e);
    if (err != 0) {
        fprintf(stderr, "fedmq export: %s\n", e.msg[0] ? e.msg : fm_strerror(err));
        goto cleanup;
    }
    if (fm_safetensors_save_model(m, out, &e) != 0) {
        fprintf(stderr, "fedmq export: %s\n", e.msg);
        goto cleanup;
    }
    printf("exported %s version %llu to %s\n", info.model, (unsigned long long)info.version, out);
    rc = 0;
cleanup:
    fm_model_destroy(&m);
    fm_ckpt_close(&c);
    return rc;
}
