/* fedmq partition CONFIG [--set section.key=value ...] --out FILE.json
 *
 * Export the client partition the trainers use, so that other programs (the PyTorch
 * FedAvg twin in bench/torch_fedavg.py) train on exactly the same client data. It loads the
 * config like every daemon (defaults -> file -> --set overrides -> cross-key checks), loads
 * the "train" split of [federation] data_dir and computes, as the trainers and the evaluator
 * do, fm_partition_clients(ds, partition, num_clients, seed, holdout, &train, &held)
 * then writes one JSON object
 *
 *   {"num_clients":N,"partition":"dirichlet:0.5","seed":S,"holdout":0.1,"n_samples":60000,
 *    "train":[[idx,...],...],"held":[[idx,...],...]}
 *
 * on one line (written with jansson; holdout with the fewest digits that read back).
 * train[k] / held[k] are client k's training / held-out sample indices into the train split
 * (0-based, in the partition's order). The file is written to a temp file beside FILE and
 * renamed over it, so readers never see a partial file. The seed must be at most 2^63-1
 * (JSON integers are int64 in jansson).
 * Exit: 0 written, 1 runtime failure (write error), 2 bad input (one line on stderr). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fedmq_cli.h"
#include "fm_cfg.h"
#include "fm_daemon.h"
#include "fm_data.h"

#define MAX_SETS 64

static void s_usage(FILE *f)
{
    fprintf(
        f,
        "usage: fedmq partition CONFIG [--set section.key=value ...] --out FILE.json\n"
        "Write the client partition of CONFIG's [federation] (data_dir's train split,\n"
        "partition, num_clients, seed, holdout) exactly as the trainers compute it:\n"
        "  {\"num_clients\":N,\"partition\":\"...\",\"seed\":S,\"holdout\":H,\"n_samples\":M,\n"
        "   \"train\":[[idx,...],...],\"held\":[[idx,...],...]}\n"
        "train[k] and held[k] are client k's training and held-out sample indices\n"
        "(0-based) into the train split. FILE is replaced atomically.\n"
        "  --set section.key=value   override a config key (repeatable)\n"
        "  -o, --out FILE            the JSON file to write (required)\n");
}

/* The fewest significant digits (1..17) with which x reads back exactly. */
static int s_shortest_precision(double x)
{
    char buf[32];
    for (int prec = 1; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            return prec;
    }
    return 17;
}

/* [[idx,...],...]: each client's indices; NULL when out of memory (append_new takes
 * ownership of its value, NULL included, even when it fails). */
static json_t *s_parts(const fm_partition_t *p)
{
    json_t *all = json_array();
    if (!all)
        return NULL;
    for (uint32_t k = 0; k < p->nclients; k++) {
        json_t *one = json_array();
        if (json_array_append_new(all, one) != 0)
            goto fail;
        for (uint32_t i = p->offsets[k]; i < p->offsets[k + 1]; i++)
            if (json_array_append_new(one, json_integer(p->indices[i])) != 0)
                goto fail;
    }
    return all;
fail:
    json_decref(all);
    return NULL;
}

/* The whole document, keys in the documented order; NULL when out of memory. The seed
 * must fit in a JSON integer (int64; checked by the caller). */
static json_t *s_doc(const fm_config_t *cfg, uint32_t nsamples, const fm_partition_t *train,
                     const fm_partition_t *held)
{
    json_t *doc = json_object();
    if (!doc)
        return NULL;
    if (json_object_set_new(doc, "num_clients", json_integer(cfg->federation.num_clients)) ||
        json_object_set_new(doc, "partition", json_string(cfg->federation.partition)) ||
        json_object_set_new(doc, "seed", json_integer((json_int_t)cfg->federation.seed)) ||
        json_object_set_new(doc, "holdout", json_real(cfg->federation.holdout)) ||
        json_object_set_new(doc, "n_samples", json_integer(nsamples)) ||
        json_object_set_new(doc, "train", s_parts(train)) ||
        json_object_set_new(doc, "held", s_parts(held))) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Write the document (one line) to out via "<out>.tmpXXXXXX" + rename. Returns 0, or an
 * exit code after printing one line. */
static int s_write(const char *out, const fm_config_t *cfg, const json_t *doc)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", out) >= (int)sizeof tmp) {
        fprintf(stderr, "fedmq partition: --out %s: path too long\n", out);
        return FM_EXIT_INPUT;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "fedmq partition: --out %s: cannot create %s: %s\n", out, tmp,
                strerror(errno));
        return FM_EXIT_RUNTIME;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        fprintf(stderr, "fedmq partition: %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return FM_EXIT_RUNTIME;
    }
    /* holdout is the document's only real: written with the fewest digits that read back */
    int prec = s_shortest_precision(cfg->federation.holdout);
    size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(prec);
    int werr = 0;
    errno = 0;
    if (json_dumpf(doc, f, flags) != 0 || fputc('\n', f) == EOF || ferror(f))
        werr = errno ? errno : EIO;
    if (fflush(f) != 0 && !werr)
        werr = errno;
    if (!werr && fsync(fileno(f)) != 0)
        werr = errno;
    if (fclose(f) != 0 && !werr)
        werr = errno;
    if (werr) {
        fprintf(stderr, "fedmq partition: %s: write failed: %s\n", tmp, strerror(werr));
        unlink(tmp);
        return FM_EXIT_RUNTIME;
    }
    /* mkstemp makes it 0600; give it the mode a plain fopen would (best effort) */
    mode_t um = umask(0);
    umask(um);
    (void)chmod(tmp, 0666 & ~um);
    if (rename(tmp, out) != 0) {
        int err = errno;
        fprintf(stderr, "fedmq partition: --out %s: cannot replace it: %s\n", out, strerror(err));
        unlink(tmp);
        return FM_EXIT_RUNTIME;
    }
    return FM_EXIT_OK;
}

int fm_cli_partition(int argc, char **argv)
{
    static const struct option longopts[] = {{"set", required_argument, 0, 's'},
                                             {"out", required_argument, 0, 'o'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    fm_daemon_args_t args;
    memset(&args, 0, sizeof args);
    args.log_level = -1;
    const char *out = NULL;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (args.nsets >= MAX_SETS) {
                fprintf(stderr, "fedmq partition: --set: too many overrides (at most %d)\n",
                        MAX_SETS);
                return FM_EXIT_INPUT;
            }
            args.sets[args.nsets++] = optarg;
            break;
        case 'o': out = optarg; break;
        case 'h': s_usage(stdout); return FM_EXIT_OK;
        case ':':
            fprintf(stderr, "fedmq partition: %s: missing value (see fedmq partition --help)\n",
                    argv[optind - 1]);
            return FM_EXIT_INPUT;
        default:
            if (optopt && optopt != '?')
                fprintf(stderr,
                        "fedmq partition: -%c: unknown option (see fedmq partition "
                        "--help)\n",
                        optopt);
            else
                fprintf(stderr,
                        "fedmq partition: %s: unknown option (see fedmq partition "
                        "--help)\n",
                        argv[optind - 1]);
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr,
                "fedmq partition: expected one CONFIG file (see fedmq partition --help)\n");
        return FM_EXIT_INPUT;
    }
    if (!out || !*out) {
        fprintf(stderr, "fedmq partition: --out: an output file is required (see fedmq "
                        "partition --help)\n");
        return FM_EXIT_INPUT;
    }
    args.config_path = argv[optind];

    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, "fedmq partition: %s\n", e.msg);
        return FM_EXIT_INPUT;
    }
    if (cfg.federation.seed > (uint64_t)INT64_MAX) { /* JSON integers are int64 here */
        fprintf(stderr,
                "fedmq partition: [federation] seed = %llu: above 2^63-1, the largest "
                "integer this tool writes in JSON\n",
                (unsigned long long)cfg.federation.seed);
        return FM_EXIT_INPUT;
    }
    int rc = FM_EXIT_INPUT;
    fm_dataset_t *ds = NULL;
    fm_partition_t *train = NULL, *held = NULL;
    json_t *doc = NULL;
    int lrc = 0;
    if (!(ds = fm_dataset_load_dir(cfg.federation.data_dir, "train", FM_FASHION_MEAN,
                                   FM_FASHION_STD, &lrc, &e))) {
        fprintf(stderr, "fedmq partition: [federation] data_dir = %s: %s\n",
                cfg.federation.data_dir, e.msg);
        rc = fm_err_file_exit_code(lrc);
        goto cleanup;
    }
    /* the trainers' and the evaluator's split (fm_partition_clients) */
    int prc = fm_partition_clients(ds, cfg.federation.partition,
                                   (uint32_t)cfg.federation.num_clients, cfg.federation.seed,
                                   cfg.federation.holdout, &train, &held, &e);
    if (prc != 0) {
        fprintf(stderr, "fedmq partition: [federation] %s\n", e.msg);
        rc = prc == FM_EARG ? FM_EXIT_INPUT : FM_EXIT_RUNTIME;
        goto cleanup;
    }
    if (!(doc = s_doc(&cfg, ds->n, train, held))) {
        fprintf(stderr, "fedmq partition: out of memory building the JSON document\n");
        rc = FM_EXIT_RUNTIME;
        goto cleanup;
    }
    rc = s_write(out, &cfg, doc);
cleanup:
    json_decref(doc);
    fm_partition_destroy(&held);
    fm_partition_destroy(&train);
    fm_dataset_destroy(&ds);
    return rc;
}
