/* fm_cfg: the key table, value parsing, the INI reader on top of inih, dump and digest
 * (see fm_cfg.h).
 *
 * inih calls our reader once per line and our handler for each "key = value" line, right
 * after reading it, so the reader's line count is the handler's line number (the Debian
 * build has no lineno handler). The reader also does the checks inih cannot: line length
 * (inih would split a long line silently), indented lines (inih's continuation lines) and
 * section names (inih never reports an empty section). On the first error the reader
 * returns NULL, which ends inih's loop. */
#include "fm_cfg.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

#include "fm_parse.h"

#define S_SHOWN 64        /* bytes of a value quoted in a message */
#define S_NUM_MAX 64      /* canonical text of a non-string value */
#define S_TEXT_MAX (FM_CFG_STR_MAX > S_NUM_MAX ? FM_CFG_STR_MAX : S_NUM_MAX)
_Static_assert(INI_MAX_LINE - 3 > 64, "inih's line buffer is too small for config lines");

/* ---- the table ---------------------------------------------------------------------------- */

static const fm_cfg_enum_t s_models[] = {
    {"cnn", FM_CFG_MODEL_CNN}, {"mlp", FM_CFG_MODEL_MLP}, {"logreg", FM_CFG_MODEL_LOGREG},
    {NULL, 0}};
static const fm_cfg_enum_t s_strategies[] = {
    {"fedavg", FM_CFG_STRATEGY_FEDAVG}, {"fedprox", FM_CFG_STRATEGY_FEDPROX},
    {"fedbuff", FM_CFG_STRATEGY_FEDBUFF}, {NULL, 0}};
static const fm_cfg_enum_t s_modes[] = {
    {"async", FM_CFG_MODE_ASYNC}, {"sync", FM_CFG_MODE_SYNC}, {NULL, 0}};
static const fm_cfg_enum_t s_staleness[] = {
    {"constant", FM_CFG_STALENESS_CONSTANT}, {"polynomial", FM_CFG_STALENESS_POLYNOMIAL},
    {"hinge", FM_CFG_STALENESS_HINGE}, {NULL, 0}};
static const fm_cfg_enum_t s_server_opts[] = {
    {"fedavg", FM_CFG_SERVER_OPT_FEDAVG}, {"fedavgm", FM_CFG_SERVER_OPT_FEDAVGM},
    {"fedadam", FM_CFG_SERVER_OPT_FEDADAM}, {"fedyogi", FM_CFG_SERVER_OPT_FEDYOGI}, {NULL, 0}};
static const fm_cfg_enum_t s_levels[] = {
    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE}, {"info", LOG_INFO},
    {"debug", LOG_DEBUG}, {NULL, 0}};

static int s_check_partition(const char *v, char *why, size_t cap);
static int s_check_endpoint(const char *v, char *why, size_t cap);
static int s_check_clients(const char *v, char *why, size_t cap);
static int s_check_nonempty(const char *v, char *why, size_t cap);

/* Offset of field sec.name, which must have type T (else: negative array size). */
#define S_FIELD(sec, name, T)                                                                  \
    (offsetof(fm_config_t, sec.name) +                                                         \
     0 * sizeof(char[_Generic(((fm_config_t *)0)->sec.name, T: 1, default: -1)]))
#define S_INT(sec, name, lo, hi, def, rel, help)                                               \
    {#sec, #name, FM_CFG_INT, S_FIELD(sec, name, int), lo, hi, NULL, def, help, rel, NULL}
#define S_U64(sec, name, def, rel, help)                                                       \
    {#sec, #name, FM_CFG_U64, S_FIELD(sec, name, uint64_t), 0, 0, NULL, def, help, rel, NULL}
#define S_FLT(sec, name, lo, hi, def, rel, help)                                               \
    {#sec, #name, FM_CFG_FLOAT, S_FIELD(sec, name, double), lo, hi, NULL, def, help, rel, NULL}
#define S_BOOL(sec, name, def, rel, help)                                                      \
    {#sec, #name, FM_CFG_BOOL, S_FIELD(sec, name, bool), 0, 1, NULL, def, help, rel, NULL}
#define S_STR(sec, name, check, def, rel, help)                                                \
    {#sec, #name, FM_CFG_STRING, S_FIELD(sec, name, char *), 0, 0, NULL, def, help, rel, check}
#define S_ENUM(sec, name, values, def, rel, help)                                              \
    {#sec, #name, FM_CFG_ENUM, S_FIELD(sec, name, int), 0, 0, values, def, help, rel, NULL}

#define S_RELOAD true
#define S_RESTART false

static const fm_cfg_key_t s_keys[] = {
    /* [federation]: the experiment; read by every daemon */
    S_ENUM(federation, model, s_models, "cnn", S_RESTART,
           "model architecture: cnn (the seed's FederatedNet), mlp or logreg"),
    S_INT(federation, num_clients, 1, 1000000, "100", S_RESTART,
          "number of simulated clients (data partitions)"),
    S_INT(federation, clients_per_round, 1, 1000000, "10", S_RESTART,
          "clients whose updates make a version: sync, chosen per round; async, FedBuff's K "
          "unless [aggregator] buffer_k is set"),
    S_INT(federation, num_rounds, 0, 1000000000, "0", S_RESTART,
          "model versions to make (sync: rounds aggregated), then stop; 0 = unlimited"),
    S_INT(federation, local_epochs, 1, 1000, "1", S_RESTART,
          "local epochs per client update"),
    S_FLT(federation, learning_rate, 0, 10, "0.01", S_RESTART, "client SGD learning rate"),
    S_INT(federation, batch_size, 1, 65536, "32", S_RESTART, "client mini-batch size, samples"),
    S_FLT(federation, momentum, 0, 1, "0.9", S_RESTART, "client SGD momentum, 0 = plain SGD"),
    S_FLT(federation, weight_decay, 0, 1, "0", S_RESTART, "client L2 weight decay"),
    S_FLT(federation, clip_norm, 0, 1e9, "0", S_RESTART,
          "clip each client step's global gradient norm to this, 0 = no clipping"),
    S_FLT(federation, mu, 0, 1000, "0", S_RESTART, "FedProx proximal coefficient mu, 0 = off"),
    S_INT(federation, min_clients, 1, 1000000, "1", S_RESTART,
          "live clients needed: sync rounds start with and aggregate at least this many; "
          "async accepts updates only while this many clients are live"),
    S_ENUM(federation, aggregation_strategy, s_strategies, "fedbuff", S_RESTART,
           "fedavg, fedprox (fedavg + proximal term mu) or fedbuff (= fedavg, async only); "
          "async modes buffer K updates (FedBuff)"),
    S_ENUM(federation, mode, s_modes, "async", S_RESTART,
           "async (versions as updates arrive) or sync (rounds with a deadline)"),
    S_STR(federation, partition, s_check_partition, "dirichlet:0.5", S_RESTART,
          "split of the training set over clients: iid, dirichlet:ALPHA or shards:K"),
    S_U64(federation, seed, "1", S_RESTART,
          "seed of every random stream (init, partition, sampling, dropout)"),
    S_STR(federation, data_dir, s_check_nonempty, "/usr/share/datasets/fashion-mnist",
          S_RESTART, "directory with the MNIST-format IDX files (gzipped or not)"),
    S_FLT(federation, target_accuracy, 0, 1, "0.85", S_RELOAD,
          "stop when the evaluator reports this test accuracy, 0..1"),
    S_FLT(federation, time_limit_s, 0, 1e9, "600", S_RELOAD,
          "stop after this many seconds, 0 = no limit"),
    S_FLT(federation, holdout, 0, 0.9, "0.1", S_RESTART,
          "fraction of each client's samples held out (never trained on) for population-"
          "level validation by the evaluator, 0 = none"),

    /* [endpoints]: ZeroMQ endpoints, bound by the first daemon named, connected by others */
    S_STR(endpoints, model_pub, s_check_endpoint, "tcp://127.0.0.1:5560", S_RESTART,
          "broker PUB: each new model version to trainers and the evaluator"),
    S_STR(endpoints, snapshot, s_check_endpoint, "tcp://127.0.0.1:5561", S_RESTART,
          "broker ROUTER: the current model on request (late joiners)"),
    S_STR(endpoints, updates, s_check_endpoint, "tcp://127.0.0.1:5562", S_RESTART,
          "aggregator PULL: client updates pushed by trainers"),
    S_STR(endpoints, aggregator_models, s_check_endpoint, "tcp://127.0.0.1:5563", S_RESTART,
          "broker PULL: new models pushed by the aggregator"),
    S_STR(endpoints, metrics_pub, s_check_endpoint, "tcp://127.0.0.1:5564", S_RESTART,
          "evaluator PUB: the metrics feed"),

    /* [broker] */
    S_FLT(broker, heartbeat_timeout_s, 0.1, 86400, "10", S_RELOAD,
          "a trainer silent for this many seconds is considered gone"),
    S_ENUM(broker, log_level, s_levels, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),

    /* [trainer] */
    S_STR(trainer, clients, s_check_clients, "0-99", S_RESTART,
          "client ids this trainer pool serves: A-B (inclusive) or A"),
    S_INT(trainer, workers, 1, 1024, "2", S_RESTART,
          "worker processes, i.e. client trainings at the same time"),
    S_INT(trainer, threads_per_worker, 1, 256, "1", S_RESTART,
          "threads per client training (batch split over threads)"),
    S_FLT(trainer, heartbeat_interval_s, 0.01, 86400, "2", S_RELOAD,
          "seconds between heartbeats to the broker"),
    S_FLT(trainer, slowdown_sigma, 0, 10, "0", S_RELOAD,
          "per-client slowdown factor ~ lognormal(0, sigma) (device heterogeneity), "
          "0 = homogeneous"),
    S_FLT(trainer, dropout_prob, 0, 1, "0", S_RELOAD,
          "probability that a client drops its update instead of sending it, 0..1"),
    S_ENUM(trainer, log_level, s_levels, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),

    /* [aggregator] */
    S_INT(aggregator, buffer_k, 0, 100000, "0", S_RESTART,
          "async: updates buffered before a new model version (FedBuff K), 0 = [federation] "
          "clients_per_round"),
    S_ENUM(aggregator, staleness, s_staleness, "polynomial", S_RESTART,
           "staleness weight s(tau): constant 1, polynomial (1+tau)^-a, "
           "hinge 1 up to b then 1/(a(tau-b)+1)"),
    S_FLT(aggregator, staleness_a, 0, 100, "0.5", S_RESTART,
          "staleness a: exponent (polynomial) or slope (hinge)"),
    S_FLT(aggregator, staleness_b, 0, 1e6, "4", S_RESTART,
          "staleness b: hinge threshold, versions"),
    S_INT(aggregator, max_staleness, 0, 1000000, "20", S_RELOAD,
          "updates more than this many versions behind are rejected"),
    S_BOOL(aggregator, weight_by_samples, "true", S_RESTART,
           "weight each update by its client's number of samples"),
    S_ENUM(aggregator, server_optimizer, s_server_opts, "fedavg", S_RESTART,
           "server step on the averaged delta: fedavg, fedavgm (momentum), fedadam, fedyogi"),
    S_FLT(aggregator, server_lr, 0, 100, "1", S_RESTART, "server learning rate"),
    S_FLT(aggregator, server_momentum, 0, 1, "0.9", S_RESTART, "fedavgm server momentum"),
    S_FLT(aggregator, beta1, 0, 0.999999, "0.9", S_RESTART,
          "fedadam/fedyogi first-moment decay"),
    S_FLT(aggregator, beta2, 0, 0.999999, "0.99", S_RESTART,
          "fedadam/fedyogi second-moment decay"),
    S_FLT(aggregator, tau, 1e-12, 10, "0.001", S_RESTART,
          "fedadam/fedyogi adaptivity (added to the root of the second moment)"),
    S_STR(aggregator, checkpoint_dir, s_check_nonempty, "/var/lib/fedmq/aggregator",
          S_RESTART, "LMDB checkpoint directory (created with mode 0700)"),
    S_INT(aggregator, checkpoint_every, 1, 1000000, "10", S_RELOAD,
          "write a checkpoint every this many model versions"),
    S_INT(aggregator, checkpoint_keep, 1, 10000, "5", S_RELOAD,
          "checkpoints kept; older ones are pruned"),
    S_STR(aggregator, init, NULL, "", S_RESTART,
          "safetensors file with the initial model, empty = seeded PyTorch-style init"),
    S_FLT(aggregator, round_timeout_s, 0.1, 86400, "60", S_RELOAD,
          "sync mode: close a round after this many seconds"),
    S_ENUM(aggregator, log_level, s_levels, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),

    /* [evaluator] */
    S_STR(evaluator, test_split, s_check_nonempty, "t10k", S_RESTART,
          "IDX file prefix of the test set in data_dir (t10k-images-idx3-ubyte...)"),
    S_STR(evaluator, metrics_file, s_check_nonempty, "fedmq-metrics.jsonl", S_RELOAD,
          "JSON-lines file the evaluator appends one record per model version to"),
    S_BOOL(evaluator, population, "true", S_RESTART,
           "also score every client's held-out slice (needs federation.holdout > 0)"),
    S_FLT(evaluator, population_threshold, 0, 1, "0.7", S_RELOAD,
          "population feed: report the fraction of clients whose accuracy is below this"),
    S_ENUM(evaluator, log_level, s_levels, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),
};

#define S_NKEYS (sizeof s_keys / sizeof s_keys[0])

static const char *const s_sections[] = {"federation", "endpoints", "broker",
                                         "trainer", "aggregator", "evaluator"};
#define S_NSECTIONS (sizeof s_sections / sizeof s_sections[0])

size_t fm_cfg_nkeys(void) { return S_NKEYS; }

const fm_cfg_key_t *fm_cfg_key_at(size_t i) { return i < S_NKEYS ? &s_keys[i] : NULL; }

const fm_cfg_key_t *fm_cfg_key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < S_NKEYS; i++)
        if (section && name && strcmp(s_keys[i].section, section) == 0 &&
            strcmp(s_keys[i].name, name) == 0)
            return &s_keys[i];
    return NULL;
}

static bool s_section_known(const char *section)
{
    for (size_t i = 0; i < S_NSECTIONS; i++)
        if (strcmp(s_sections[i], section) == 0)
            return true;
    return false;
}

/* "section.key" -> row, or NULL. */
static const fm_cfg_key_t *s_find_dotted(const char *key)
{
    const char *dot = key ? strchr(key, '.') : NULL;
    if (!dot || (size_t)(dot - key) >= 32)
        return NULL;
    char sec[32];
    memcpy(sec, key, (size_t)(dot - key));
    sec[dot - key] = '\0';
    return fm_cfg_key_find(sec, dot + 1);
}

static void *s_field(fm_config_t *c, const fm_cfg_key_t *k) { return (char *)c + k->offset; }

static const void *s_cfield(const fm_config_t *c, const fm_cfg_key_t *k)
{
    return (const char *)c + k->offset;
}

/* ---- string validators ---------------------------------------------------------------------- */

static int s_check_nonempty(const char *v, char *why, size_t cap)
{
    if (*v)
        return 0;
    snprintf(why, cap, "must not be empty");
    return 1;
}

/* Same grammar as fm_partition_new: "iid", "dirichlet:A" (A finite > 0), "shards:K". */
static int s_check_partition(const char *v, char *why, size_t cap)
{
    char *end = NULL;
    errno = 0;
    if (strcmp(v, "iid") == 0)
        return 0;
    if (strncmp(v, "dirichlet:", 10) == 0 && v[10] && !isspace((unsigned char)v[10])) {
        double a = strtod(v + 10, &end);
        if (!*end && errno != ERANGE && isfinite(a) && a > 0.0)
            return 0;
    }
    if (strncmp(v, "shards:", 7) == 0 && isdigit((unsigned char)v[7])) {
        unsigned long long k = strtoull(v + 7, &end, 10);
        if (!*end && errno != ERANGE && k > 0 && k <= UINT32_MAX)
            return 0;
    }
    snprintf(why, cap, "not a partition (iid, dirichlet:ALPHA with ALPHA > 0, or shards:K "
                       "with K >= 1)");
    return 1;
}

/* tcp://HOST:PORT (PORT 1..65535 or *), ipc://PATH, inproc://NAME. */
static int s_check_endpoint(const char *v, char *why, size_t cap)
{
    if (strncmp(v, "tcp://", 6) == 0) {
        const char *colon = strrchr(v + 6, ':');
        if (colon && colon > v + 6) {
            const char *port = colon + 1;
            if (strcmp(port, "*") == 0)
                return 0;
            char *end = NULL;
            long p = isdigit((unsigned char)*port) ? strtol(port, &end, 10) : 0;
            if (end && !*end && p >= 1 && p <= 65535)
                return 0;
        }
    } else if ((strncmp(v, "ipc://", 6) == 0 && v[6]) ||
               (strncmp(v, "inproc://", 9) == 0 && v[9])) {
        return 0;
    }
    snprintf(why, cap, "not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
    return 1;
}

/* "A-B" or "A": *lo, *hi. 0 on success. */
static int s_parse_clients(const char *v, long *lo, long *hi)
{
    char *end = NULL;
    if (!isdigit((unsigned char)*v))
        return -1;
    errno = 0;
    *lo = strtol(v, &end, 10);
    *hi = *lo;
    if (*end == '-') {
        const char *b = end + 1;
        if (!isdigit((unsigned char)*b))
            return -1;
        *hi = strtol(b, &end, 10);
    }
    if (*end || errno == ERANGE || *lo > *hi || *hi > INT_MAX)
        return -1;
    return 0;
}

static int s_check_clients(const char *v, char *why, size_t cap)
{
    long lo, hi;
    if (s_parse_clients(v, &lo, &hi) == 0)
        return 0;
    snprintf(why, cap, "not a client range (A-B with 0 <= A <= B, or A)");
    return 1;
}

/* ---- values ------------------------------------------------------------------------------- */

static int s_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* "a|b|c" */
static void s_enum_list(const fm_cfg_enum_t *values, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (const fm_cfg_enum_t *v = values; v->name && k < cap; v++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", v == values ? "" : "|", v->name);
}

/* Integral values below 1e15 as plain integers ("600", not "6e+02"), others as the
 * shortest "%.Ng" that reads back as exactly d. */
static void s_fmt_double(char *buf, size_t cap, double d)
{
    if (d == trunc(d) && fabs(d) < 1e15) {
        snprintf(buf, cap, "%.0f", d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* Parse `text` as the value of key `k` and store it in *c; on failure *c is untouched,
 * the reason goes to why[0..cap) and FM_EARG or FM_ERANGE is returned. */
static int s_apply(fm_config_t *c, const fm_cfg_key_t *k, const char *text, char *why,
                   size_t cap)
{
    switch (k->type) {
    case FM_CFG_INT: {
        long v;
        if (fm_parse_int(k->name, text, LONG_MIN, LONG_MAX, &v, NULL)) {
            snprintf(why, cap, "not an integer");
            return FM_EARG;
        }
        if ((double)v < k->lo || (double)v > k->hi) {
            snprintf(why, cap, "out of range [%ld, %ld]", (long)k->lo, (long)k->hi);
            return FM_ERANGE;
        }
        *(int *)s_field(c, k) = (int)v;
        return 0;
    }
    case FM_CFG_U64: {
        uint64_t v;
        if (fm_parse_u64(k->name, text, &v, NULL)) {
            snprintf(why, cap, "not a non-negative integer");
            return FM_EARG;
        }
        *(uint64_t *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_FLOAT: {
        double v;
        if (fm_parse_float(k->name, text, -HUGE_VAL, HUGE_VAL, &v, NULL)) {
            snprintf(why, cap, "not a finite number");
            return FM_EARG;
        }
        if (v < k->lo || v > k->hi) {
            char lo[S_NUM_MAX], hi[S_NUM_MAX];
            s_fmt_double(lo, sizeof lo, k->lo);
            s_fmt_double(hi, sizeof hi, k->hi);
            snprintf(why, cap, "out of range [%s, %s]", lo, hi);
            return FM_ERANGE;
        }
        *(double *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_BOOL: {
        bool v;
        if (s_parse_bool(text, &v)) {
            snprintf(why, cap, "not a boolean (true|false|yes|no|on|off|1|0)");
            return FM_EARG;
        }
        *(bool *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_ENUM: {
        for (const fm_cfg_enum_t *v = k->values; v->name; v++) {
            if (strcmp(v->name, text) == 0) {
                *(int *)s_field(c, k) = v->value;
                return 0;
            }
        }
        char list[160];
        s_enum_list(k->values, list, sizeof list);
        snprintf(why, cap, "not one of %s", list);
        return FM_EARG;
    }
    case FM_CFG_STRING: {
        /* "name = value" must fit on one line of inih's buffer (INI_MAX_LINE bytes with
         * "\r\n\0"), or fm_cfg_dump would write a file that fm_cfg_load rejects */
        size_t n = strlen(text), line_max = INI_MAX_LINE - 3;
        size_t max = line_max - strlen(k->name) - 3;
        if (max > FM_CFG_STR_MAX - 1)
            max = FM_CFG_STR_MAX - 1;
        if (n > max) {
            snprintf(why, cap, "longer than %zu bytes (a config line holds %zu)", max, line_max);
            return FM_EARG;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)text[i];
            if (ch < 0x20 || ch == 0x7F) {
                snprintf(why, cap, "contains a control character");
                return FM_EARG;
            }
            if (ch == ';' && i > 0 && isspace((unsigned char)text[i - 1])) {
                snprintf(why, cap, "contains ' ;', which starts a comment in the file");
                return FM_EARG;
            }
        }
        if (n && (isspace((unsigned char)text[0]) || isspace((unsigned char)text[n - 1]))) {
            snprintf(why, cap, "starts or ends with a space");
            return FM_EARG;
        }
        if (k->check && k->check(text, why, cap))
            return FM_EARG;
        char *dst = s_field(c, k);
        memset(dst, 0, FM_CFG_STR_MAX);
        memcpy(dst, text, n);
        return 0;
    }
    }
    FM_ASSERT(!"unknown key type");
    return FM_EARG;
}

/* Canonical text of the value of `k` in `c` (the file syntax). */
static void s_format(const fm_config_t *c, const fm_cfg_key_t *k, char *buf, size_t cap)
{
    const void *p = s_cfield(c, k);
    switch (k->type) {
    case FM_CFG_INT:
        snprintf(buf, cap, "%d", *(const int *)p);
        return;
    case FM_CFG_U64:
        snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)p);
        return;
    case FM_CFG_FLOAT:
        s_fmt_double(buf, cap, *(const double *)p);
        return;
    case FM_CFG_BOOL:
        snprintf(buf, cap, "%s", *(const bool *)p ? "true" : "false");
        return;
    case FM_CFG_ENUM:
        for (const fm_cfg_enum_t *v = k->values; v->name; v++) {
            if (v->value == *(const int *)p) {
                snprintf(buf, cap, "%s", v->name);
                return;
            }
        }
        snprintf(buf, cap, "%d", *(const int *)p); /* not a valid name: load rejects it */
        return;
    case FM_CFG_STRING:
        snprintf(buf, cap, "%.*s", (int)strnlen(p, FM_CFG_STR_MAX), (const char *)p);
        return;
    }
}

/* ---- messages --------------------------------------------------------------------------- */

/* At most S_SHOWN bytes of `s`, control characters as '?', so messages stay one line. */
static const char *s_shown(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s), k = 0;
    for (size_t i = 0; i < n && i < S_SHOWN && k + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[k++] = (ch < 0x20 || ch == 0x7F) ? '?' : (char)ch;
    }
    if (n > S_SHOWN && k + 4 <= cap) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
    return dst;
}

/* "WHERE: [SECTION] KEY = VALUE: WHY" */
static int s_key_error(fm_errmsg_t *e, int code, const char *where, const char *section,
                       const char *name, const char *value, const char *why)
{
    char sec[S_SHOWN + 4], key[S_SHOWN + 4], val[S_SHOWN + 4];
    return fm_errmsg_set(e, code, "%s: [%s] %s = %s: %s", where, s_shown(sec, sizeof sec, section),
                         s_shown(key, sizeof key, name), s_shown(val, sizeof val, value), why);
}

static size_t s_min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

/* Levenshtein distance, capped: strings longer than 63 bytes count as far. */
static size_t s_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 63 || nb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            row[j] = s_min3(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1]));
            diag = up;
        }
    }
    return row[nb];
}

/* " (did you mean X?)" for the closest of `n` candidates within distance 2, else "". */
static void s_suggest(char *buf, size_t cap, const char *what, const char *const *cand, size_t n,
                      const char *pre, const char *post)
{
    size_t best = 3, bi = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t d = s_distance(what, cand[i]);
        if (d < best) {
            best = d;
            bi = i;
        }
    }
    if (best <= 2)
        snprintf(buf, cap, " (did you mean %s%s%s?)", pre, cand[bi], post);
}

/* The reason for an unknown key `name` in known `section`. */
static void s_unknown_key_why(char *why, size_t cap, const char *section, const char *name)
{
    const char *cand[S_NKEYS];
    size_t n = 0;
    for (size_t i = 0; i < S_NKEYS; i++)
        if (strcmp(s_keys[i].section, section) == 0)
            cand[n++] = s_keys[i].name;
    char hint[96];
    s_suggest(hint, sizeof hint, name, cand, n, "", "");
    if (!hint[0]) {
        for (size_t i = 0; i < S_NKEYS; i++) {
            if (strcmp(s_keys[i].name, name) == 0) {
                snprintf(hint, sizeof hint, " (it belongs in [%s])", s_keys[i].section);
                break;
            }
        }
    }
    snprintf(why, cap, "unknown key%s", hint);
}

static void s_unknown_section_why(char *why, size_t cap, const char *section)
{
    char hint[96];
    s_suggest(hint, sizeof hint, section, s_sections, S_NSECTIONS, "[", "]");
    snprintf(why, cap, "unknown section%s", hint);
}

/* ---- cross-key checks ------------------------------------------------------------------- */

/* `lines` (may be NULL) gives the line each key was set on (0 = default), to point at. */
static int s_check(const fm_config_t *c, const char *path, const int *lines, fm_errmsg_t *e)
{
    const fm_cfg_federation_t *f = &c->federation;
    const fm_cfg_key_t *k = NULL;
    char why[160], where[PATH_MAX + 16], val[S_TEXT_MAX];
    why[0] = '\0';
    long lo = 0, hi = 0;
    if (f->clients_per_round > f->num_clients) {
        k = fm_cfg_key_find("federation", "clients_per_round");
        snprintf(why, sizeof why, "must be <= [federation] num_clients (%d)", f->num_clients);
    } else if (f->min_clients > f->num_clients) {
        k = fm_cfg_key_find("federation", "min_clients");
        snprintf(why, sizeof why, "must be <= [federation] num_clients (%d)", f->num_clients);
    } else if (f->mode == FM_CFG_MODE_SYNC && f->aggregation_strategy == FM_CFG_STRATEGY_FEDBUFF) {
        k = fm_cfg_key_find("federation", "aggregation_strategy");
        snprintf(why, sizeof why, "fedbuff is asynchronous: use fedavg or fedprox with "
                 "[federation] mode = sync");
    } else if (f->mode == FM_CFG_MODE_SYNC && f->min_clients > f->clients_per_round) {
        k = fm_cfg_key_find("federation", "min_clients");
        snprintf(why, sizeof why, "must be <= [federation] clients_per_round (%d) in mode = "
                 "sync, or no round could aggregate", f->clients_per_round);
    } else if (f->aggregation_strategy == FM_CFG_STRATEGY_FEDPROX && f->mu <= 0) {
        k = fm_cfg_key_find("federation", "mu");
        snprintf(why, sizeof why, "must be > 0 with [federation] aggregation_strategy = fedprox");
    } else if (f->aggregation_strategy != FM_CFG_STRATEGY_FEDPROX && f->mu > 0) {
        k = fm_cfg_key_find("federation", "mu");
        snprintf(why, sizeof why, "is the FedProx coefficient: set [federation] "
                 "aggregation_strategy = fedprox, or mu = 0");
    } else if (s_parse_clients(c->trainer.clients, &lo, &hi) == 0 && hi >= f->num_clients) {
        k = fm_cfg_key_find("trainer", "clients");
        snprintf(why, sizeof why, "client %ld is not below [federation] num_clients (%d)", hi,
                 f->num_clients);
    } else if (c->trainer.heartbeat_interval_s >= c->broker.heartbeat_timeout_s) {
        k = fm_cfg_key_find("trainer", "heartbeat_interval_s");
        char t[S_NUM_MAX];
        s_fmt_double(t, sizeof t, c->broker.heartbeat_timeout_s);
        snprintf(why, sizeof why, "must be < [broker] heartbeat_timeout_s (%s)", t);
    }
    if (!k)
        return 0;
    int line = lines ? lines[k - s_keys] : 0;
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", path, line);
    else
        snprintf(where, sizeof where, "%s", path);
    s_format(c, k, val, sizeof val);
    return s_key_error(e, FM_EARG, where, k->section, k->name, val, why);
}

int fm_cfg_check(const fm_config_t *c, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    return s_check(c, "config", NULL, e);
}

/* ---- defaults, set ------------------------------------------------------------------------ */

void fm_cfg_defaults(fm_config_t *c)
{
    FM_ASSERT(c);
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < S_NKEYS; i++) {
        char why[160];
        int rc = s_apply(c, &s_keys[i], s_keys[i].def, why, sizeof why);
        FM_ASSERT(rc == 0); /* a bad default is a bug in the table (cfg_test checks them) */
    }
}

int fm_cfg_set(fm_config_t *c, const char *key, const char *value, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    char buf[FM_CFG_STR_MAX + 128], sec[S_SHOWN + 1], why[192], shown[S_SHOWN + 4];
    if (!key || strlen(key) >= sizeof buf)
        return fm_errmsg_set(e, FM_EARG, "override: expected section.key=value");
    memcpy(buf, key, strlen(key) + 1);
    char *name = buf;
    const char *val = value;
    if (!value) { /* "section.key=value" */
        char *eq = strchr(buf, '=');
        if (!eq)
            return fm_errmsg_set(e, FM_EARG, "override '%s': expected section.key=value",
                                 s_shown(shown, sizeof shown, key));
        *eq = '\0';
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        for (size_t n = strlen(v); n > 0 && isspace((unsigned char)v[n - 1]); n--)
            v[n - 1] = '\0';
        val = v;
    }
    while (isspace((unsigned char)*name))
        name++;
    for (size_t n = strlen(name); n > 0 && isspace((unsigned char)name[n - 1]); n--)
        name[n - 1] = '\0';
    char *dot = strchr(name, '.');
    if (!dot || dot == name || (size_t)(dot - name) > S_SHOWN)
        return fm_errmsg_set(e, FM_EARG, "override '%s': expected section.key=value",
                             s_shown(shown, sizeof shown, name));
    memcpy(sec, name, (size_t)(dot - name));
    sec[dot - name] = '\0';
    name = dot + 1;
    if (!s_section_known(sec)) {
        s_unknown_section_why(why, sizeof why, sec);
        return fm_errmsg_set(e, FM_EARG, "override: [%s]: %s", s_shown(shown, sizeof shown, sec),
                             why);
    }
    const fm_cfg_key_t *k = fm_cfg_key_find(sec, name);
    if (!k) {
        s_unknown_key_why(why, sizeof why, sec, name);
        return s_key_error(e, FM_EARG, "override", sec, name, val, why);
    }
    int rc = s_apply(c, k, val, why, sizeof why);
    if (rc)
        return s_key_error(e, rc, "override", sec, name, val, why);
    return 0;
}

/* ---- the file ------------------------------------------------------------------------------ */

typedef struct {
    FILE *f;
    const char *path;
    int line;                  /* lines read so far = the line inih is working on */
    char *buf;                 /* getline buffer */
    size_t bufcap;
    fm_config_t cfg;           /* being built; handed over only when all of it is valid */
    int set_line[S_NKEYS];     /* line each key was set on, 0 = not set */
    int err;                   /* first error (0 = none), with its line and message */
    int err_line;
    int read_errno;
    fm_errmsg_t msg;
} s_parse_t;

/* Record the first error at the current line; returns the message to fill. */
static fm_errmsg_t *s_fail(s_parse_t *p, int code)
{
    p->err = code;
    p->err_line = p->line;
    return &p->msg;
}

/* fgets-style reader for inih: one whole line, or NULL at the end or on our error. */
static char *s_reader(char *str, int num, void *stream)
{
    s_parse_t *p = stream;
    if (p->err)
        return NULL;
    errno = 0;
    ssize_t n = getline(&p->buf, &p->bufcap, p->f);
    if (n < 0) {
        if (ferror(p->f))
            p->read_errno = errno ? errno : EIO;
        return NULL;
    }
    p->line++;
    char *s = p->buf;
    if (p->line == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF)
        s += 3; /* inih skips a UTF-8 BOM too */
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    /* inih's buffer holds num - 3 bytes of text plus "\r\n\0" */
    if (num < 4 || len > (size_t)num - 3 || (size_t)n + 1 > (size_t)num) {
        fm_errmsg_set(s_fail(p, FM_EFORMAT), FM_EFORMAT, "%s:%d: line longer than %d bytes",
                      p->path, p->line, num - 3);
        return NULL;
    }
    const char *t = s;
    while (*t == ' ' || *t == '\t')
        t++;
    bool blank = (size_t)(t - s) >= len || *t == '#' || *t == ';';
    if (!blank && t != s) {
        fm_errmsg_set(s_fail(p, FM_EFORMAT), FM_EFORMAT, "%s:%d: indented line (continuation "
                      "lines are not supported)", p->path, p->line);
        return NULL;
    }
    if (*t == '[') {
        const char *close = strchr(t, ']');
        size_t sl = close ? (size_t)(close - t - 1) : 0;
        char sec[S_SHOWN + 1], why[160], shown[S_SHOWN + 4];
        memcpy(sec, t + 1, sl < S_SHOWN ? sl : S_SHOWN);
        sec[sl < S_SHOWN ? sl : S_SHOWN] = '\0';
        if (close && (sl > S_SHOWN || !s_section_known(sec))) {
            s_unknown_section_why(why, sizeof why, sec);
            fm_errmsg_set(s_fail(p, FM_EARG), FM_EARG, "%s:%d: [%s]: %s", p->path, p->line,
                          s_shown(shown, sizeof shown, sec), why);
            return NULL;
        }
    }
    memcpy(str, p->buf, (size_t)n + 1);
    return str;
}

static int s_handler(void *user, const char *section, const char *name, const char *value)
{
    s_parse_t *p = user;
    char where[PATH_MAX + 16], why[192];
    if (p->err)
        return 0;
    snprintf(where, sizeof where, "%s:%d", p->path, p->line);
    if (!value) /* only with ini_allow_no_value, which we never set */
        value = "";
    if (!section[0]) {
        char key[S_SHOWN + 4], val[S_SHOWN + 4];
        fm_errmsg_set(s_fail(p, FM_EARG), FM_EARG, "%s: %s = %s: key outside a section", where,
                      s_shown(key, sizeof key, name), s_shown(val, sizeof val, value));
        return 0;
    }
    const fm_cfg_key_t *k = fm_cfg_key_find(section, name);
    int rc = 0;
    if (!k) {
        if (s_section_known(section))
            s_unknown_key_why(why, sizeof why, section, name);
        else
            s_unknown_section_why(why, sizeof why, section);
        rc = FM_EARG;
    } else if (p->set_line[k - s_keys]) {
        snprintf(why, sizeof why, "duplicate key (first set on line %d)", p->set_line[k - s_keys]);
        rc = FM_EARG;
    } else {
        rc = s_apply(&p->cfg, k, value, why, sizeof why);
    }
    if (rc) {
        s_key_error(s_fail(p, rc), rc, where, section, name, value, why);
        return 0;
    }
    p->set_line[k - s_keys] = p->line;
    return 1;
}

int fm_cfg_load(fm_config_t *c, const char *path, fm_errmsg_t *e)
{
    FM_ASSERT(c && path);
    int rc = 0;
    s_parse_t *p = calloc(1, sizeof *p);
    if (!p)
        return fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
    p->path = path;
    fm_cfg_defaults(&p->cfg);
    p->f = fopen(path, "r");
    if (!p->f) {
        int err = errno;
        rc = fm_errmsg_set(e, -err, "%s: cannot open: %s", path, strerror(err));
        goto cleanup;
    }
    int r = ini_parse_stream(s_reader, p, s_handler, p);
    if (p->read_errno) {
        rc = fm_errmsg_set(e, -p->read_errno, "%s:%d: read error: %s", path, p->line + 1,
                           strerror(p->read_errno));
    } else if (r > 0 && (!p->err || r < p->err_line)) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s:%d: syntax error (expected [section], "
                           "key = value or a # comment)", path, r);
    } else if (p->err) {
        rc = p->err;
        if (e)
            *e = p->msg;
    } else if (r == -2) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
    } else if (r != 0) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: parse error %d", path, r);
    } else {
        rc = s_check(&p->cfg, path, p->set_line, e);
    }
    if (rc == 0)
        *c = p->cfg;

cleanup:
    if (p->f)
        fclose(p->f);
    free(p->buf);
    free(p);
    return rc;
}

/* ---- compare, reload, get ------------------------------------------------------------------ */

static bool s_same(const fm_config_t *a, const fm_config_t *b, const fm_cfg_key_t *k)
{
    char va[S_TEXT_MAX], vb[S_TEXT_MAX];
    if (k->type == FM_CFG_FLOAT) /* exact, and -0 != 0 like the text form */
        return memcmp(s_cfield(a, k), s_cfield(b, k), sizeof(double)) == 0;
    s_format(a, k, va, sizeof va);
    s_format(b, k, vb, sizeof vb);
    return strcmp(va, vb) == 0;
}

int fm_cfg_equal(const fm_config_t *a, const fm_config_t *b)
{
    FM_ASSERT(a && b);
    for (size_t i = 0; i < S_NKEYS; i++)
        if (!s_same(a, b, &s_keys[i]))
            return 0;
    return 1;
}

int fm_cfg_check_reload(const fm_config_t *old, const fm_config_t *fresh, fm_errmsg_t *e)
{
    FM_ASSERT(old && fresh);
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        if (k->reloadable || s_same(old, fresh, k))
            continue;
        char va[S_TEXT_MAX], vb[S_TEXT_MAX], sa[S_SHOWN + 4], sb[S_SHOWN + 4];
        s_format(old, k, va, sizeof va);
        s_format(fresh, k, vb, sizeof vb);
        return fm_errmsg_set(e, FM_EARG, "reload: [%s] %s changed from %s to %s, which needs "
                             "a restart", k->section, k->name, s_shown(sa, sizeof sa, va),
                             s_shown(sb, sizeof sb, vb));
    }
    return 0;
}

int fm_cfg_get(const fm_config_t *c, const char *key, char *buf, size_t cap, fm_errmsg_t *e)
{
    FM_ASSERT(c && buf);
    const fm_cfg_key_t *k = s_find_dotted(key);
    if (!k)
        return fm_errmsg_set(e, FM_EARG, "config: unknown key '%s'", key ? key : "");
    char v[S_TEXT_MAX];
    s_format(c, k, v, sizeof v);
    if (strlen(v) >= cap)
        return fm_errmsg_set(e, -ENOBUFS, "config: %s: value longer than the buffer", key);
    memcpy(buf, v, strlen(v) + 1);
    return 0;
}

const char *fm_cfg_enum_name(const char *key, int value)
{
    const fm_cfg_key_t *k = s_find_dotted(key);
    if (!k || k->type != FM_CFG_ENUM)
        return NULL;
    for (const fm_cfg_enum_t *v = k->values; v->name; v++)
        if (v->value == value)
            return v->name;
    return NULL;
}

/* ---- digest -------------------------------------------------------------------------------- */

#define S_FNV_OFFSET 0xcbf29ce484222325ULL
#define S_FNV_PRIME 0x100000001b3ULL

static uint64_t s_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static void s_fnv(uint64_t h[4], const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int l = 0; l < 4; l++) {
            h[l] ^= (unsigned char)s[i];
            h[l] *= S_FNV_PRIME;
        }
    }
}

void fm_cfg_digest(const fm_config_t *c, uint8_t out[FM_CFG_DIGEST_BYTES])
{
    FM_ASSERT(c && out);
    static const uint64_t lane[4] = {0, 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL,
                                     0x94d049bb133111ebULL};
    uint64_t h[4];
    uint64_t total = 0;
    for (int l = 0; l < 4; l++)
        h[l] = S_FNV_OFFSET ^ lane[l];
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        char v[S_TEXT_MAX], line[S_TEXT_MAX + 96];
        s_format(c, k, v, sizeof v);
        int n = snprintf(line, sizeof line, "%s.%s=%s\n", k->section, k->name, v);
        FM_ASSERT(n > 0 && (size_t)n < sizeof line);
        s_fnv(h, line, (size_t)n);
        total += (uint64_t)n;
    }
    for (int l = 0; l < 4; l++) {
        uint64_t x = s_fmix64(h[l] ^ total);
        for (int b = 0; b < 8; b++)
            out[8 * l + b] = (uint8_t)(x >> (8 * b));
    }
}

/* ---- dump ---------------------------------------------------------------------------------- */

/* "[1, 100000]", "one of a|b", "" ... for the comment above a key. */
static void s_constraint(const fm_cfg_key_t *k, char *buf, size_t cap)
{
    switch (k->type) {
    case FM_CFG_INT:
        snprintf(buf, cap, "integer in [%ld, %ld]", (long)k->lo, (long)k->hi);
        return;
    case FM_CFG_U64:
        snprintf(buf, cap, "integer in [0, 2^64-1]");
        return;
    case FM_CFG_FLOAT: {
        char lo[S_NUM_MAX], hi[S_NUM_MAX];
        s_fmt_double(lo, sizeof lo, k->lo);
        s_fmt_double(hi, sizeof hi, k->hi);
        snprintf(buf, cap, "number in [%s, %s]", lo, hi);
        return;
    }
    case FM_CFG_BOOL:
        snprintf(buf, cap, "true or false");
        return;
    case FM_CFG_ENUM: {
        char list[160];
        s_enum_list(k->values, list, sizeof list);
        snprintf(buf, cap, "one of %s", list);
        return;
    }
    case FM_CFG_STRING:
        snprintf(buf, cap, "string");
        return;
    }
}

int fm_cfg_dump(const fm_config_t *c, FILE *f)
{
    FM_ASSERT(c && f);
    const char *section = NULL;
    fprintf(f, "# fedmq configuration: every key, its meaning, allowed values and default.\n"
               "# \"reloadable\" keys may change in a running daemon (SIGHUP); the others need "
               "a restart.\n");
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        char v[S_TEXT_MAX], cons[192];
        if (!section || strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "\n[%s]\n", section);
        }
        s_format(c, k, v, sizeof v);
        s_constraint(k, cons, sizeof cons);
        fprintf(f, "\n# %s\n# %s, default %s%s%s%s\n%s =%s%s\n", k->help, cons,
                k->def[0] ? "" : "\"", k->def, k->def[0] ? "" : "\"",
                k->reloadable ? ", reloadable" : "", k->name, v[0] ? " " : "", v);
    }
    if (fflush(f) != 0 || ferror(f))
        return -(errno ? errno : EIO);
    return 0;
}
