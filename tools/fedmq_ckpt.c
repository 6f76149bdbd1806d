/* fedmq checkpoints / fedmq export: read an aggregator's LMDB checkpoints. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fedmq_cli.h"
#include "fm_ckpt.h"
#include "fm_rdp.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_parse.h"
#include "fm_safetensors.h"

#define MAX_LIST 4096

/* The evaluator's accuracy per version, from a metrics file (JSON lines). */
typedef struct {
    uint64_t *version;
    double *accuracy;
    size_t n, cap;
    long bad;            /* malformed lines skipped */
    char first_bad[256]; /* "FILE:LINE: reason" of the first one */
} s_scores_t;

/* Open an existing checkpoint directory read-only (never create one at a mistyped path,
 * never write to it). NULL after one line on stderr, *code the exit code. */
static fm_ckpt_t *s_open_existing(const char *cmd, const char *dir, int *code)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    *code = FM_EXIT_INPUT;
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
    fm_ckpt_t *c = fm_ckpt_open_readonly(dir, &err, &e);
    if (!c) {
        fprintf(stderr, "fedmq %s: %s\n", cmd, e.msg[0] ? e.msg : fm_strerror(err));
        *code = fm_err_file_exit_code(err);
    }
    return c;
}

static void s_scores_free(s_scores_t *sc)
{
    free(sc->version);
    free(sc->accuracy);
    memset(sc, 0, sizeof *sc);
}

/* Append (version, accuracy). 0 or -ENOMEM. */
static int s_scores_add(s_scores_t *sc, uint64_t version, double accuracy)
{
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? 2 * sc->cap : 256;
        uint64_t *v = realloc(sc->version, cap * sizeof *v);
        if (v)
            sc->version = v;
        double *a = v ? realloc(sc->accuracy, cap * sizeof *a) : NULL;
        if (!a)
            return -ENOMEM;
        sc->accuracy = a;
        sc->cap = cap;
    }
    sc->version[sc->n] = version;
    sc->accuracy[sc->n++] = accuracy;
    return 0;
}

/* One line of a metrics file: a JSON object whose "version" (integer >= 0) and "accuracy"
 * (number) are kept; a blank line, or an object without them (or with a null accuracy), is
 * no record. 0, FM_EFORMAT with the reason in why, or -ENOMEM. */
static int s_scores_line(s_scores_t *sc, const char *line, char *why, size_t cap)
{
    if (!line[strspn(line, " \t\r\n")])
        return 0;
    json_error_t jerr;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        snprintf(why, cap, "%s", jerr.text);
        return FM_EFORMAT;
    }
    int rc = 0;
    json_t *v = json_object_get(o, "version"), *a = json_object_get(o, "accuracy");
    if (!json_is_object(o)) {
        snprintf(why, cap, "not a JSON object");
        rc = FM_EFORMAT;
    } else if (json_is_integer(v) && json_integer_value(v) >= 0 && json_is_number(a)) {
        rc = s_scores_add(sc, (uint64_t)json_integer_value(v), json_number_value(a));
    }
    json_decref(o);
    return rc;
}

/* The metrics file at path into *sc (zeroed first). Malformed lines are skipped and counted
 * (the first one named in sc->first_bad). 0, or -errno / -ENOMEM with a line on stderr. */
static int s_scores_load(const char *path, s_scores_t *sc)
{
    memset(sc, 0, sizeof *sc);
    FILE *f = fopen(path, "r");
    if (!f) {
        int rc = -errno;
        fprintf(stderr, "fedmq checkpoints: %s: %s\n", path, strerror(errno));
        return rc;
    }
    char *line = NULL, why[160];
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    while (rc != -ENOMEM && getline(&line, &cap, f) != -1) {
        lineno++;
        if ((rc = s_scores_line(sc, line, why, sizeof why)) == FM_EFORMAT && sc->bad++ == 0)
            snprintf(sc->first_bad, sizeof sc->first_bad, "%s:%ld: %s", path, lineno, why);
    }
    if (rc == -ENOMEM)
        fprintf(stderr, "fedmq checkpoints: %s: out of memory\n", path);
    else
        rc = 0;
    free(line);
    fclose(f);
    return rc;
}

/* Accuracy reported for `version` (the last record for it wins), NaN if none. */
static double s_score(const s_scores_t *sc, uint64_t version)
{
    for (size_t i = sc->n; i-- > 0;)
        if (sc->version[i] == version)
            return sc->accuracy[i];
    return NAN;
}

/* What `fedmq checkpoints` does. */
typedef enum { S_LIST, S_VERIFY, S_RESET } s_ckpt_cmd_t;

/* `fedmq checkpoints` options: the directory into *dir, --metrics into *metrics, --verify or
 * --reset into *cmd. 0 to go on, -1 after printing help, or FM_EXIT_INPUT after one line on
 * stderr. */
static int s_checkpoints_flags(int argc, char **argv, const char **dir, const char **metrics,
                               s_ckpt_cmd_t *cmd)
{
    static const struct option longopts[] = {{"metrics", required_argument, 0, 'm'},
                                             {"verify", no_argument, 0, 'v'},
                                             {"reset", no_argument, 0, 'r'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (ch == 'm')
            *metrics = optarg;
        else if (ch == 'v' || ch == 'r') {
            s_ckpt_cmd_t want = ch == 'v' ? S_VERIFY : S_RESET;
            if (*cmd != S_LIST && *cmd != want) {
                fprintf(stderr, "fedmq checkpoints: --verify and --reset are exclusive\n");
                return FM_EXIT_INPUT;
            }
            *cmd = want;
        } else if (ch == 'h') {
            printf("usage: fedmq checkpoints DIR [--metrics FILE.jsonl]\n"
                   "       fedmq checkpoints DIR --verify\n"
                   "       fedmq checkpoints DIR --reset\n"
                   "List an aggregator's checkpoints, newest first: version, time, model,\n"
                   "updates applied/rejected, and the evaluator's accuracy for that version\n"
                   "when --metrics names its metrics file; then the high-water mark.\n"
                   "--verify  check every record (CRC, header, its applied-update ids), the\n"
                   "          \"latest\" marker and high_water.json: one line per problem,\n"
                   "          exit 0 if none, 2 if any.\n"
                   "--reset   (stop the aggregator first) accept the store as it is: rewrite\n"
                   "          high_water.json so the aggregator starts from what data.mdb\n"
                   "          holds (nothing if it is missing or empty); version numbers up to\n"
                   "          the highest ever saved are not used again. See\n"
                   "          docs/OPERATIONS.md, \"The aggregator's state\".\n");
            return -1;
        } else {
            fprintf(stderr, "fedmq checkpoints: %s: %s (see fedmq checkpoints --help)\n",
                    argv[optind - 1], ch == ':' ? "missing value" : "unknown option");
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr,
                "fedmq checkpoints: expected one directory (see fedmq checkpoints --help)\n");
        return FM_EXIT_INPUT;
    }
    if (*cmd != S_LIST && *metrics) {
        fprintf(stderr, "fedmq checkpoints: --metrics only goes with the listing\n");
        return FM_EXIT_INPUT;
    }
    *dir = argv[optind];
    return 0;
}

/* "YYYY-MM-DD HH:MM:SS" (UTC) of a unix time into out[32], "-" for 0. */
static void s_utc(char *out, double t)
{
    if (t <= 0) {
        snprintf(out, 32, "-");
        return;
    }
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
}

/* One line about the high-water mark of c. */
static void s_print_mark(const fm_ckpt_t *c)
{
    fm_ckpt_mark_t m;
    fm_errmsg_t e = {{0}};
    int rc = fm_ckpt_mark(c, &m, &e);
    if (rc == -ENOENT) {
        printf("high-water mark: none (high_water.json is written by the next checkpoint)\n");
        return;
    }
    if (rc) {
        printf("high-water mark: unreadable: %s\n", e.msg);
        return;
    }
    char saved[32], reset[32];
    s_utc(saved, m.saved);
    s_utc(reset, m.reset_at);
    printf("high-water mark: version %llu ever saved, the store holds %llu (saved %s UTC%s%s)\n",
           (unsigned long long)m.version, (unsigned long long)m.store, saved,
           m.reset_at > 0 ? "; reset " : "", m.reset_at > 0 ? reset : "");
}

static void s_print_problem(void *arg, const char *line)
{
    (void)arg;
    printf("%s\n", line);
}

/* --verify: one line per problem, then a summary. The exit code. */
static int s_verify(const char *dir)
{
    int code = 0;
    fm_ckpt_t *c = s_open_existing("checkpoints", dir, &code);
    if (!c)
        return code;
    fm_errmsg_t e = {{0}};
    size_t n = 0;
    int problems = fm_ckpt_verify(c, FM_CKPT_IDS_KEY, FM_CKPT_ID_BYTES, s_print_problem, NULL,
                                  &e);
    if (problems < 0) {
        fprintf(stderr, "fedmq checkpoints: %s\n", e.msg[0] ? e.msg : fm_strerror(problems));
        fm_ckpt_close(&c);
        return fm_err_file_exit_code(problems);
    }
    fm_ckpt_list(c, NULL, 0, &n, NULL);
    printf("%s: %zu record(s), high-water mark %llu: %d problem%s\n", dir, n,
           (unsigned long long)fm_ckpt_high_water(c), problems, problems == 1 ? "" : "s");
    fm_ckpt_close(&c);
    return problems ? FM_EXIT_INPUT : FM_EXIT_OK;
}

/* --reset: accept the store as it is. The exit code. */
static int s_reset(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "fedmq checkpoints: %s: not a directory\n", dir);
        return FM_EXIT_INPUT;
    }
    fm_ckpt_mark_t m;
    fm_errmsg_t e = {{0}};
    int rc = fm_ckpt_reset(dir, &m, &e);
    if (rc) {
        fprintf(stderr, "fedmq checkpoints: %s\n", e.msg[0] ? e.msg : fm_strerror(rc));
        return fm_err_file_exit_code(rc);
    }
    if (m.store)
        printf("%s: reset: the aggregator resumes from the store's newest valid checkpoint "
               "(version %llu or below); new versions start at %llu\n",
               dir, (unsigned long long)m.store, (unsigned long long)m.version + 1);
    else
        printf("%s: reset: the store is empty: the aggregator starts from version 0 (init or "
               "seed); new versions start at %llu\n",
               dir, (unsigned long long)m.version + 1);
    return FM_EXIT_OK;
}

/* The epsilon spent by record `version` ([privacy] mode = client: its "agg.privacy" blob,
 * at the delta and conversion stored with it) into out[16]: "-" when it has none, "?" when
 * it cannot be read. 1 if the record has one. */
static int s_epsilon(fm_ckpt_t *c, uint64_t version, char out[16])
{
    uint8_t blob[FM_RDP_BLOB_LEN];
    size_t len = 0;
    snprintf(out, 16, "-");
    int rc = fm_ckpt_record_get(c, version, "agg.privacy", blob, sizeof blob, &len, NULL);
    if (rc == -ENOENT)
        return 0;
    fm_rdp_t acct;
    uint64_t steps = 0;
    double delta = 0;
    fm_rdp_conv_t conv = FM_RDP_IMPROVED;
    if (rc != 0 || fm_rdp_decode(blob, len, &acct, &steps, &delta, &conv, NULL) != 0) {
        snprintf(out, 16, "?");
        return 1;
    }
    snprintf(out, 16, "%.4g", steps ? fm_rdp_epsilon(&acct, delta, conv, NULL) : 0.0);
    return 1;
}

/* The table of n checkpoints, with the accuracy from sc and, when any record has one, the
 * privacy budget spent (epsilon). */
static void s_print_list(fm_ckpt_t *c, const fm_ckpt_info_t *list, size_t n, const s_scores_t *sc)
{
    char eps[16];
    int dp = 0;
    for (size_t i = 0; i < n && !dp; i++)
        dp = list[i].status == 0 && s_epsilon(c, list[i].version, eps);
    int mw = 7; /* the model column: "logreg", or a spec's 15-character fingerprint */
    for (size_t i = 0; i < n; i++)
        if (list[i].status == 0 && (int)strlen(list[i].model) > mw)
            mw = (int)strlen(list[i].model);
    printf("%-8s %-20s %-*s %10s %10s %9s%s  %s\n", "version", "time (UTC)", mw, "model",
           "applied", "rejected", "accuracy", dp ? "   epsilon" : "", "status");
    for (size_t i = 0; i < n; i++) {
        const fm_ckpt_info_t *in = &list[i];
        char when[32] = "-";
        if (in->status == 0) {
            time_t t = (time_t)in->created;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        }
        double score = s_score(sc, in->version);
        char acc[16] = "-";
        if (!isnan(score))
            snprintf(acc, sizeof acc, "%.4f", score);
        char epscol[24] = "";
        if (dp) {
            if (in->status == 0)
                s_epsilon(c, in->version, eps);
            snprintf(epscol, sizeof epscol, " %9s", in->status == 0 ? eps : "?");
        }
        printf("%-8llu %-20s %-*s %10llu %10llu %9s%s  %s\n", (unsigned long long)in->version,
               when, mw, in->status == 0 ? in->model : "?",
               (unsigned long long)in->updates_applied, (unsigned long long)in->updates_rejected,
               acc, epscol, in->status == 0 ? "ok" : fm_strerror(in->status));
    }
    if (n == 0)
        printf("(no checkpoints)\n");
}

int fm_cli_checkpoints(int argc, char **argv)
{
    const char *dir = NULL, *metrics = NULL;
    s_ckpt_cmd_t cmd = S_LIST;
    int rc = s_checkpoints_flags(argc, argv, &dir, &metrics, &cmd);
    if (rc != 0)
        return rc < 0 ? FM_EXIT_OK : rc;
    if (cmd == S_VERIFY)
        return s_verify(dir);
    if (cmd == S_RESET)
        return s_reset(dir);
    s_scores_t sc = {0};
    if (metrics && (rc = s_scores_load(metrics, &sc)) != 0)
        return rc == -ENOMEM ? FM_EXIT_RUNTIME : FM_EXIT_INPUT;
    fm_ckpt_info_t *list = NULL;
    fm_errmsg_t e = {{0}};
    size_t n = 0;
    fm_ckpt_t *c = s_open_existing("checkpoints", dir, &rc);
    if (!c)
        goto cleanup;
    rc = FM_EXIT_RUNTIME;
    if (!(list = calloc(MAX_LIST, sizeof *list))) {
        fprintf(stderr, "fedmq checkpoints: out of memory\n");
        goto cleanup;
    }
    int err = fm_ckpt_list(c, list, MAX_LIST, &n, &e);
    if (err != 0) {
        fprintf(stderr, "fedmq checkpoints: %s\n", e.msg);
        rc = fm_err_file_exit_code(err);
        goto cleanup;
    }
    s_print_list(c, list, n < MAX_LIST ? n : MAX_LIST, &sc);
    s_print_mark(c);
    if (sc.bad)
        fprintf(stderr, "fedmq checkpoints: warning: %ld malformed line%s skipped (first: %s)\n",
                sc.bad, sc.bad == 1 ? "" : "s", sc.first_bad);
    rc = FM_EXIT_OK;
cleanup:
    free(list);
    fm_ckpt_close(&c);
    s_scores_free(&sc);
    return rc;
}

/* `fedmq export` options. 0 to go on, -1 after printing help, or FM_EXIT_INPUT after one
 * line on stderr. *have_version says whether --version was given. */
static int s_export_flags(int argc, char **argv, const char **dir, const char **out,
                          const char **spec, uint64_t *version, int *have_version)
{
    static const struct option longopts[] = {{"checkpoint", required_argument, 0, 'c'},
                                             {"version", required_argument, 0, 'v'},
                                             {"out", required_argument, 0, 'o'},
                                             {"spec", required_argument, 0, 's'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    fm_errmsg_t e = {{0}};
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': *dir = optarg; break;
        case 'o': *out = optarg; break;
        case 's': *spec = optarg; break;
        case 'v':
            if (fm_parse_u64("--version", optarg, version, &e) != 0) {
                fprintf(stderr, "fedmq export: %s\n", e.msg);
                return FM_EXIT_INPUT;
            }
            *have_version = 1;
            break;
        case 'h':
            printf("usage: fedmq export --checkpoint DIR [--version V] [--spec FILE] --out "
                   "FILE.safetensors\n"
                   "Write a checkpointed model (default: the newest valid one) as safetensors\n"
                   "with PyTorch names, loadable by fedmq eval and by PyTorch.\n"
                   "A custom model (a record named spec-...) needs its layout: --spec FILE, the\n"
                   "model spec of [federation] model = file:FILE (its fingerprint must be the\n"
                   "record's model name).\n");
            return -1;
        default:
            fprintf(stderr, "fedmq export: %s: %s (see fedmq export --help)\n", argv[optind - 1],
                    ch == ':' ? "missing value" : "unknown option");
            return FM_EXIT_INPUT;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fedmq export: unexpected argument '%s'\n", argv[optind]);
        return FM_EXIT_INPUT;
    }
    if (!*dir || !*out) {
        fprintf(stderr, "fedmq export: --checkpoint DIR and --out FILE are required\n");
        return FM_EXIT_INPUT;
    }
    return 0;
}

/* The layout of a record's model `name`: a built-in by name, or the spec file `spec` whose
 * fingerprint must be `name`. NULL after one line on stderr. */
static fm_model_t *s_export_layout(const char *dir, const char *name, const char *spec)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_model_t *m = NULL;
    if (!spec) {
        if (!(m = fm_model_new(name, &err)) && strncmp(name, "spec-", 5) == 0)
            fprintf(stderr,
                    "fedmq export: %s: checkpoint holds the custom model %s: give its model "
                    "spec with --spec FILE\n",
                    dir, name);
        else if (!m)
            fprintf(stderr, "fedmq export: %s: checkpoint holds unknown model '%s'\n", dir, name);
        return m;
    }
    if (!(m = fm_safetensors_load_spec(spec, &err, &e))) {
        fprintf(stderr, "fedmq export: --spec %s\n", e.msg);
        return NULL;
    }
    if (strcmp(fm_model_name(m), name) != 0) {
        fprintf(stderr,
                "fedmq export: --spec %s is model %s; the checkpoint in %s holds model %s\n",
                spec, fm_model_name(m), dir, name);
        fm_model_destroy(&m);
    }
    return m;
}

/* The model of checkpoint `version` (the newest valid one if !have_version) in c, a new
 * model the caller destroys (layout: s_export_layout); NULL after one line on stderr. */
static fm_model_t *s_export_load(fm_ckpt_t *c, const char *dir, const char *spec,
                                 uint64_t version, int have_version, fm_ckpt_info_t *info)
{
    fm_errmsg_t e = {{0}};
    fm_model_t *m = NULL;
    /* read the header first to learn the model, then the parameters */
    int err = have_version ? fm_ckpt_load(c, version, info, NULL, 0, NULL, 0, &e)
                           : fm_ckpt_load_latest(c, info, NULL, 0, NULL, 0, &e);
    if (err == -ENOENT) {
        fprintf(stderr, "fedmq export: %s: %s\n", dir,
                have_version ? "no checkpoint of that version" : "no checkpoints");
        return NULL;
    }
    if (err != 0) {
        fprintf(stderr, "fedmq export: %s\n", e.msg[0] ? e.msg : fm_strerror(err));
        return NULL;
    }
    if (!(m = s_export_layout(dir, info->model, spec)))
        return NULL;
    if (info->nparams != fm_model_nparams(m)) {
        fprintf(stderr,
                "fedmq export: %s: checkpoint version %llu has %llu parameters, model "
                "%s %zu\n",
                dir, (unsigned long long)info->version, (unsigned long long)info->nparams,
                fm_model_name(m), fm_model_nparams(m));
        fm_model_destroy(&m);
        return NULL;
    }
    err = fm_ckpt_load(c, info->version, info, fm_model_params(m), fm_model_nparams(m), NULL, 0,
                       &e);
    if (err != 0) {
        fprintf(stderr, "fedmq export: %s\n", e.msg[0] ? e.msg : fm_strerror(err));
        fm_model_destroy(&m);
    }
    return m;
}

int fm_cli_export(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL, *spec = NULL;
    uint64_t version = 0;
    int have_version = 0;
    int rc = s_export_flags(argc, argv, &dir, &out, &spec, &version, &have_version);
    if (rc != 0)
        return rc < 0 ? FM_EXIT_OK : rc;
    fm_ckpt_t *c = s_open_existing("export", dir, &rc);
    if (!c)
        return rc;
    fm_errmsg_t e = {{0}};
    fm_ckpt_info_t info;
    fm_model_t *m = s_export_load(c, dir, spec, version, have_version, &info);
    rc = FM_EXIT_INPUT;
    if (!m)
        goto cleanup;
    rc = FM_EXIT_RUNTIME;
    if (fm_safetensors_save_model(m, out, &e) != 0) {
        fprintf(stderr, "fedmq export: %s\n", e.msg);
        goto cleanup;
    }
    printf("exported %s version %llu to %s\n", info.model, (unsigned long long)info.version, out);
    rc = FM_EXIT_OK;
cleanup:
    fm_model_destroy(&m);
    fm_ckpt_close(&c);
    return rc;
}
