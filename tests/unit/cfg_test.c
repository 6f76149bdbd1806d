/* Unit tests of fm_cfg: the key table, defaults, the shipped configs/fedmq.conf, every
 * error kind with its exact one-line message, the strict reader (NUL bytes, UTF-8, line,
 * value and file lengths, BOM, CRLF), overrides, dump -> load round trips, text and diff,
 * the digest and the reload rule. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "../support/fm_proc.h"

#include "fm_cfg.h"
#include "fm_err.h"

typedef struct {
    char dir[256]; /* mkdtemp() directory, removed at the end */
    int serial;
} ctx_t;

/* ---- helpers ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    if (fm_proc_tmpdir(c->dir, sizeof c->dir) != 0) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int group_teardown(void **state)
{
    ctx_t *c = *state;
    int rc = fm_proc_rmtree(c->dir);
    free(c);
    return rc;
}

/* Write text[0..len) to a new file in the temp dir; its path goes to out. */
static void write_conf_n(void **state, char *out, size_t cap, const char *text, size_t len)
{
    ctx_t *c = *state;
    snprintf(out, cap, "%s/c%d.conf", c->dir, c->serial++);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_conf(void **state, char *out, size_t cap, const char *text)
{
    write_conf_n(state, out, cap, text, strlen(text));
}

/* A config that differs from the defaults, to check that failed loads leave it alone. */
static void sentinel(fm_config_t *c)
{
    fm_cfg_defaults(c);
    assert_int_equal(fm_cfg_set(c, "aggregator.buffer_k", "77", NULL), 0);
    assert_int_equal(fm_cfg_set(c, "federation.partition", "iid", NULL), 0);
}

/* Load text[0..len) expecting `code` and exactly the message `want` (with "%s" for the
 * path); the target struct must be unchanged. */
static void expect_error_n(void **state, const char *text, size_t len, int code, const char *want)
{
    char path[512], msg[1024];
    write_conf_n(state, path, sizeof path, text, len);
    fm_config_t c, before;
    sentinel(&c);
    before = c;
    fm_errmsg_t e = {{0}};
    int rc = fm_cfg_load(&c, path, &e);
    snprintf(msg, sizeof msg, want, path);
    if (rc != code || strcmp(e.msg, msg) != 0)
        fail_msg("config:\n%s\nwant %d '%s'\ngot  %d '%s'", text, code, msg, rc, e.msg);
    assert_memory_equal(&c, &before, sizeof c);
}

static void expect_error(void **state, const char *text, int code, const char *want)
{
    expect_error_n(state, text, strlen(text), code, want);
}

static void load_ok(const char *path, fm_config_t *c)
{
    fm_errmsg_t e = {{0}};
    int rc = fm_cfg_load(c, path, &e);
    if (rc)
        fail_msg("load %s: %s (%s)", path, e.msg, fm_strerror(rc));
}

static void load_text_ok(void **state, const char *text, fm_config_t *c)
{
    char path[512];
    write_conf(state, path, sizeof path, text);
    load_ok(path, c);
}

static void expect_set_error(const char *key, const char *value, int code, const char *want)
{
    fm_config_t c, before;
    sentinel(&c);
    before = c;
    fm_errmsg_t e = {{0}};
    int rc = fm_cfg_set(&c, key, value, &e);
    if (rc != code || strcmp(e.msg, want) != 0)
        fail_msg("set(%s, %s): want %d '%s', got %d '%s'", key, value ? value : "NULL", code,
                 want, rc, e.msg);
    assert_memory_equal(&c, &before, sizeof c);
}

static void dotted(const fm_cfg_key_t *k, char *out, size_t cap)
{
    snprintf(out, cap, "%s.%s", k->section, k->name);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_table(void **state)
{
    (void)state;
    size_t n = fm_cfg_nkeys();
    assert_true(n >= 50);
    assert_null(fm_cfg_key_at(n));
    for (size_t i = 0; i < n; i++) {
        const fm_cfg_key_t *k = fm_cfg_key_at(i);
        assert_non_null(k->help);
        assert_true(k->help[0] != '\0' && !strchr(k->help, '\n'));
        assert_ptr_equal(fm_cfg_key_find(k->section, k->name), k);
        assert_true(k->lo <= k->hi);
        assert_true((k->type == FM_CFG_ENUM) == (k->enum_name != NULL));
        assert_true(strlen(k->name) < 32); /* fm_cfg.c's S_NAME_MAX: dumps fit a line */
        for (int v = (int)k->lo; k->type == FM_CFG_ENUM && v <= (int)k->hi; v++)
            assert_non_null(k->enum_name(v));
    }
    /* a section's keys are contiguous (one [section] block in dumps) */
    const char *seen[16];
    size_t nseen = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sec = fm_cfg_key_at(i)->section;
        if (nseen && strcmp(seen[nseen - 1], sec) == 0)
            continue;
        for (size_t j = 0; j < nseen; j++)
            if (strcmp(seen[j], sec) == 0)
                fail_msg("keys of [%s] are not contiguous", sec);
        assert_true(nseen < 16);
        seen[nseen++] = sec;
    }
    assert_int_equal(nseen, 9); /* federation ... evaluator, security, privacy, secagg */
    assert_null(fm_cfg_key_find("aggregator", "nope"));
    assert_null(fm_cfg_key_find("nope", "buffer_k"));
}

static void test_defaults(void **state)
{
    (void)state;
    fm_config_t c;
    fm_cfg_defaults(&c);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_check(&c, &e), 0);
    assert_string_equal(c.federation.model, "cnn");
    assert_int_equal(c.federation.num_clients, 100);
    assert_int_equal(c.federation.clients_per_round, 10);
    assert_int_equal(c.federation.num_rounds, 0);
    assert_true(c.federation.learning_rate == 0.01);
    assert_true(c.federation.lr_decay == 0.0);
    assert_int_equal(c.federation.local_steps, 0);
    assert_true(c.federation.local_fraction == 1.0);
    assert_int_equal(c.federation.aggregation_strategy, FM_CFG_STRATEGY_FEDBUFF);
    assert_int_equal(c.federation.mode, FM_CFG_MODE_ASYNC);
    assert_string_equal(c.federation.partition, "dirichlet:0.5");
    assert_int_equal(c.federation.seed, 1);
    assert_string_equal(c.federation.data_dir, "/usr/share/datasets/fashion-mnist");
    assert_true(c.federation.target_accuracy == 0.85);
    assert_string_equal(c.endpoints.model_pub, "tcp://127.0.0.1:5560");
    assert_string_equal(c.endpoints.metrics_pub, "tcp://127.0.0.1:5564");
    assert_int_equal(c.broker.log_level, LOG_INFO);
    assert_string_equal(c.trainer.clients, "0-99");
    assert_int_equal(c.aggregator.buffer_k, 0); /* = clients_per_round */
    assert_int_equal(c.aggregator.staleness, FM_STALENESS_POLYNOMIAL);
    assert_true(c.aggregator.weight_by_samples);
    assert_int_equal(c.aggregator.server_optimizer, FM_SERVER_OPT_FEDAVG);
    assert_true(c.aggregator.server_momentum == 0.9);
    assert_true(c.aggregator.momentum_backoff);
    assert_true(c.aggregator.tau == 1e-3);
    assert_string_equal(c.aggregator.init, "");
    assert_string_equal(c.evaluator.test_split, "t10k");

    /* every default is written in canonical form: get() gives it back verbatim */
    for (size_t i = 0; i < fm_cfg_nkeys(); i++) {
        const fm_cfg_key_t *k = fm_cfg_key_at(i);
        char key[96], val[FM_CFG_STR_MAX];
        dotted(k, key, sizeof key);
        assert_int_equal(fm_cfg_get(&c, key, val, sizeof val, &e), 0);
        assert_string_equal(val, k->def);
    }
    char small[4];
    assert_int_equal(fm_cfg_get(&c, "federation.data_dir", small, sizeof small, &e), -ENOBUFS);
    assert_int_equal(fm_cfg_get(&c, "federation.nope", small, sizeof small, &e), FM_EARG);

    /* defaults zero the padding: two default structs are byte-identical */
    fm_config_t d;
    memset(&d, 0xEE, sizeof d);
    fm_cfg_defaults(&d);
    assert_memory_equal(&c, &d, sizeof c);
    assert_true(fm_cfg_equal(&c, &d));
}

static void test_enum_names(void **state)
{
    (void)state;
    /* the server optimiser: the names of fm_server_opt's enum; federation.model is a string
     * (a built-in name or file:PATH), no enum */
    assert_null(fm_cfg_enum_name("federation.model", FM_ARCH_CNN));
    assert_string_equal(
        fm_cfg_enum_name("federation.aggregation_strategy", FM_CFG_STRATEGY_FEDPROX), "fedprox");
    assert_string_equal(fm_cfg_enum_name("federation.mode", FM_CFG_MODE_SYNC), "sync");
    assert_string_equal(fm_cfg_enum_name("aggregator.staleness", FM_STALENESS_HINGE), "hinge");
    assert_string_equal(fm_cfg_enum_name("aggregator.server_optimizer", FM_SERVER_OPT_FEDYOGI),
                        "fedyogi");
    assert_null(fm_cfg_enum_name("aggregator.server_optimizer", FM_SERVER_OPT_FEDYOGI + 1));
    assert_null(fm_cfg_enum_name("trainer.log_level", LOG_CRIT));
    assert_string_equal(fm_cfg_enum_name("trainer.log_level", LOG_DEBUG), "debug");
    assert_string_equal(fm_cfg_enum_name("evaluator.log_level", LOG_ERR), "error");
    assert_null(fm_cfg_enum_name("federation.num_clients", 0));
    assert_null(fm_cfg_enum_name("nope", 0));
}

static void test_shipped_config(void **state)
{
    (void)state;
    const char *path = FM_SOURCE_DIR "/configs/fedmq.conf";
    fm_config_t c, d;
    sentinel(&c);
    load_ok(path, &c);
    fm_cfg_defaults(&d);
    assert_true(fm_cfg_equal(&c, &d)); /* it documents the defaults */

    /* every key is written out, in its section */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512], section[64] = "";
    size_t seen = 0;
    int *hit = calloc(fm_cfg_nkeys(), sizeof *hit);
    assert_non_null(hit);
    while (fgets(line, sizeof line, f)) {
        char name[64];
        if (sscanf(line, "[%63[^]]]", section) == 1)
            continue;
        if (line[0] == '#' || sscanf(line, "%63[a-z0-9_] =", name) != 1)
            continue;
        const fm_cfg_key_t *k = fm_cfg_key_find(section, name);
        if (!k)
            fail_msg("configs/fedmq.conf: [%s] %s is not a key", section, name);
        size_t i = 0;
        while (fm_cfg_key_at(i) != k)
            i++;
        if (!hit[i]++)
            seen++;
    }
    fclose(f);
    free(hit);
    assert_int_equal(seen, fm_cfg_nkeys());
}

static void test_file_errors(void **state)
{
    /* unknown key, with and without a suggestion */
    expect_error(state, "[aggregator]\nbuffer_k = 5\nbufer_k = 3\n", FM_EARG,
                 "%s:3: [aggregator] bufer_k = 3: unknown key (did you mean buffer_k?)");
    expect_error(state, "[broker]\nworkers = 3\n", FM_EARG,
                 "%s:2: [broker] workers = 3: unknown key (it belongs in [trainer])");
    expect_error(state, "[broker]\nfrobnicate = 1\n", FM_EARG,
                 "%s:2: [broker] frobnicate = 1: unknown key");
    /* unknown section, also when empty */
    expect_error(state, "# comment\n[aggregatr]\nbuffer_k = 5\n", FM_EARG,
                 "%s:2: [aggregatr]: unknown section (did you mean [aggregator]?)");
    expect_error(state, "[federation]\nseed = 3\n[nosuch]\n", FM_EARG,
                 "%s:3: [nosuch]: unknown section");
    /* bad numbers */
    expect_error(state, "[aggregator]\nbuffer_k = ten\n", FM_EARG,
                 "%s:2: [aggregator] buffer_k = ten: not an integer");
    expect_error(state, "[aggregator]\nbuffer_k = 10x\n", FM_EARG,
                 "%s:2: [aggregator] buffer_k = 10x: not an integer");
    expect_error(state, "[aggregator]\nbuffer_k = 99999999999999999999\n", FM_EARG,
                 "%s:2: [aggregator] buffer_k = 99999999999999999999: not an integer");
    expect_error(state, "[aggregator]\nbuffer_k =\n", FM_EARG,
                 "%s:2: [aggregator] buffer_k = : not an integer");
    expect_error(state, "[federation]\nlearning_rate = fast\n", FM_EARG,
                 "%s:2: [federation] learning_rate = fast: not a finite number");
    expect_error(state, "[federation]\nlearning_rate = nan\n", FM_EARG,
                 "%s:2: [federation] learning_rate = nan: not a finite number");
    expect_error(state, "[federation]\nseed = -1\n", FM_EARG,
                 "%s:2: [federation] seed = -1: not a non-negative integer");
    /* out of range */
    expect_error(state, "[aggregator]\nbuffer_k = -1\n", FM_ERANGE,
                 "%s:2: [aggregator] buffer_k = -1: out of range [0, 100000]");
    expect_error(state, "\n\n[federation]\ntarget_accuracy = 1.5\n", FM_ERANGE,
                 "%s:4: [federation] target_accuracy = 1.5: out of range [0, 1]");
    expect_error(state, "[aggregator]\ntau = 0\n", FM_ERANGE,
                 "%s:2: [aggregator] tau = 0: out of range [1e-12, 10]");
    /* bad enum, bad bool */
    expect_error(state, "[aggregator]\nstaleness = linear\n", FM_EARG,
                 "%s:2: [aggregator] staleness = linear: not one of constant|polynomial|hinge");
    expect_error(state, "[federation]\nmodel = CNN\n", FM_EARG,
                 "%s:2: [federation] model = CNN: not a model: logreg, mlp, cnn or "
                 "file:/ABS/PATH.safetensors");
    expect_error(state, "[aggregator]\nweight_by_samples = maybe\n", FM_EARG,
                 "%s:2: [aggregator] weight_by_samples = maybe: not a boolean "
                 "(true|false|yes|no|on|off|1|0)");
    /* string checks */
    expect_error(state, "[federation]\npartition = dirichlet:-1\n", FM_EARG,
                 "%s:2: [federation] partition = dirichlet:-1: not a partition: ALPHA must "
                 "be a positive finite number");
    expect_error(state, "[federation]\npartition = shards:0\n", FM_EARG,
                 "%s:2: [federation] partition = shards:0: not a partition: K must be a "
                 "positive integer");
    expect_error(state, "[federation]\npartition = random\n", FM_EARG,
                 "%s:2: [federation] partition = random: not a partition: unknown (expected "
                 "iid, dirichlet:ALPHA or shards:K)");
    expect_error(state, "[endpoints]\nupdates = tcp://127.0.0.1\n", FM_EARG,
                 "%s:2: [endpoints] updates = tcp://127.0.0.1: not a ZeroMQ endpoint "
                 "(tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
    expect_error(
        state, "[trainer]\nclients = 9-3\n", FM_EARG,
        "%s:2: [trainer] clients = 9-3: not a client range (A-B with 0 <= A <= B, or A)");
    expect_error(state, "[aggregator]\ncheckpoint_dir =\n", FM_EARG,
                 "%s:2: [aggregator] checkpoint_dir = : must not be empty");
    /* duplicate key, also across a repeated section */
    expect_error(state, "[aggregator]\nbuffer_k = 5\n\nbuffer_k = 6\n", FM_EARG,
                 "%s:4: [aggregator] buffer_k = 6: duplicate key (first set on line 2)");
    expect_error(state,
                 "[trainer]\nworkers = 2\n[broker]\nlog_level = info\n[trainer]\n"
                 "workers = 3\n",
                 FM_EARG, "%s:6: [trainer] workers = 3: duplicate key (first set on line 2)");
    /* key outside a section */
    expect_error(state, "buffer_k = 5\n[aggregator]\n", FM_EARG,
                 "%s:1: buffer_k = 5: key outside a section");
    /* syntax */
    expect_error(state, "[aggregator]\nbuffer_k\n", FM_EFORMAT,
                 "%s:2: syntax error (expected [section], key = value or a # comment)");
    expect_error(state, "[aggregator\nbuffer_k = 5\n", FM_EFORMAT,
                 "%s:1: syntax error (expected [section], key = value or a # comment)");
    expect_error(state, "[aggregator]\nbuffer_k = 5\n  checkpoint_keep = 3\n", FM_EFORMAT,
                 "%s:3: indented line (continuation lines are not supported)");
    /* the first error is the one reported */
    expect_error(state, "[aggregator]\nbogus line\nbuffer_k = -1\n", FM_EFORMAT,
                 "%s:2: syntax error (expected [section], key = value or a # comment)");
    expect_error(state, "[aggregator]\nbuffer_k = -1\nbogus line\n", FM_ERANGE,
                 "%s:2: [aggregator] buffer_k = -1: out of range [0, 100000]");
    /* control characters in a value are shown as '?' (the message stays one line) */
    expect_error(state, "[federation]\ndata_dir = a\tb\n", FM_EARG,
                 "%s:2: [federation] data_dir = a?b: contains a control character");
    /* cross-key constraints: at the line of the key, or without a line for a default */
    expect_error(state, "[federation]\nnum_clients = 50\nclients_per_round = 60\n", FM_EARG,
                 "%s:3: [federation] clients_per_round = 60: must be <= [federation] "
                 "num_clients (50)");
    expect_error(state, "[federation]\nnum_clients = 5\n", FM_EARG,
                 "%s: [federation] clients_per_round = 10: must be <= [federation] "
                 "num_clients (5)");
    expect_error(state, "[federation]\nnum_clients = 50\n", FM_EARG,
                 "%s: [trainer] clients = 0-99: client 99 is not below [federation] "
                 "num_clients (50)");
    expect_error(state, "[trainer]\nheartbeat_interval_s = 10\n", FM_EARG,
                 "%s:2: [trainer] heartbeat_interval_s = 10: must be < [broker] "
                 "heartbeat_timeout_s (10)");

    /* a line longer than FM_CFG_LINE_MAX is an error, not silently split */
    char text[1200];
    snprintf(text, sizeof text, "[aggregator]\n# %01100d\n", 0);
    expect_error(state, text, FM_EFORMAT, "%s:2: line longer than 1024 bytes");

    /* a missing file */
    fm_config_t c;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_load(&c, "/nonexistent/fedmq.conf", &e), -ENOENT);
    assert_string_equal(e.msg, "/nonexistent/fedmq.conf: cannot open: No such file or directory");
}

static void test_syntax_variants(void **state)
{
    fm_config_t c;
    /* an empty file gives the defaults */
    fm_config_t d;
    fm_cfg_defaults(&d);
    sentinel(&c);
    load_text_ok(state, "", &c);
    assert_true(fm_cfg_equal(&c, &d));

    /* BOM, CRLF, both comment styles, inline " ;" comment, no spaces around '=',
     * boolean spellings, indented comments, blank lines with spaces */
    load_text_ok(state,
                 "\xEF\xBB\xBF# bom first\r\n"
                 "[aggregator]\r\n"
                 "buffer_k=25\r\n"
                 "; semicolon comment\r\n"
                 "   # indented comment\r\n"
                 "   \r\n"
                 "weight_by_samples = OFF\r\n"
                 "server_optimizer = fedadam ; inline comment\r\n"
                 "[federation]\n"
                 "learning_rate = 2.5e-3\n"
                 "seed = 18446744073709551615\n"
                 "partition = shards:2\n"
                 "[endpoints]\n"
                 "updates = ipc:///tmp/fedmq/updates.sock\n"
                 "snapshot = tcp://*:7000\n",
                 &c);
    assert_int_equal(c.aggregator.buffer_k, 25);
    assert_false(c.aggregator.weight_by_samples);
    assert_int_equal(c.aggregator.server_optimizer, FM_SERVER_OPT_FEDADAM);
    assert_true(c.federation.learning_rate == 2.5e-3);
    assert_true(c.federation.seed == UINT64_MAX);
    assert_string_equal(c.federation.partition, "shards:2");
    assert_string_equal(c.endpoints.updates, "ipc:///tmp/fedmq/updates.sock");
    assert_string_equal(c.endpoints.snapshot, "tcp://*:7000");
    assert_int_equal(c.aggregator.checkpoint_keep, 5); /* untouched keys keep defaults */
}

static void test_overrides(void **state)
{
    (void)state;
    fm_config_t c;
    fm_cfg_defaults(&c);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_set(&c, "aggregator.buffer_k", "20", &e), 0);
    assert_int_equal(c.aggregator.buffer_k, 20);
    assert_int_equal(fm_cfg_set(&c, "aggregator.buffer_k=30", NULL, &e), 0);
    assert_int_equal(c.aggregator.buffer_k, 30);
    assert_int_equal(fm_cfg_set(&c, " aggregator.buffer_k = 40 ", NULL, &e), 0);
    assert_int_equal(c.aggregator.buffer_k, 40);
    assert_int_equal(fm_cfg_set(&c, "federation.model=logreg", NULL, &e), 0);
    assert_string_equal(c.federation.model, "logreg");
    /* a model spec: file: and an absolute path (the file is read by the daemons, not here) */
    assert_int_equal(fm_cfg_set(&c, "federation.model=file:/nonexistent/m.safetensors", NULL, &e),
                     0);
    assert_string_equal(c.federation.model, "file:/nonexistent/m.safetensors");
    assert_int_equal(fm_cfg_set(&c, "federation.model=logreg", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&c, "aggregator.init", "/tmp/init model.safetensors", &e), 0);
    assert_string_equal(c.aggregator.init, "/tmp/init model.safetensors");
    assert_int_equal(fm_cfg_set(&c, "trainer.log_level=debug", NULL, &e), 0);
    assert_int_equal(c.trainer.log_level, LOG_DEBUG);

    expect_set_error("aggregator.buffer_k=-1", NULL, FM_ERANGE,
                     "override: [aggregator] buffer_k = -1: out of range [0, 100000]");
    expect_set_error("aggregator.buffer_k", "ten", FM_EARG,
                     "override: [aggregator] buffer_k = ten: not an integer");
    expect_set_error("aggregator.bufer_k=1", NULL, FM_EARG,
                     "override: [aggregator] bufer_k = 1: unknown key (did you mean buffer_k?)");
    expect_set_error("aggregatr.buffer_k=1", NULL, FM_EARG,
                     "override: [aggregatr]: unknown section (did you mean [aggregator]?)");
    expect_set_error("aggregator.buffer_k", NULL, FM_EARG,
                     "override 'aggregator.buffer_k': expected section.key=value");
    expect_set_error("buffer_k=3", NULL, FM_EARG,
                     "override 'buffer_k': expected section.key=value");
    expect_set_error("federation.model", "resnet", FM_EARG,
                     "override: [federation] model = resnet: not a model: logreg, mlp, cnn or "
                     "file:/ABS/PATH.safetensors");
    expect_set_error("federation.model", "file:rel/m.safetensors", FM_EARG,
                     "override: [federation] model = file:rel/m.safetensors: not a model: "
                     "logreg, mlp, cnn or file:/ABS/PATH.safetensors");
    expect_set_error("federation.model", "file:/", FM_EARG,
                     "override: [federation] model = file:/: not a model: logreg, mlp, cnn or "
                     "file:/ABS/PATH.safetensors");
    expect_set_error("federation.model", "spec", FM_EARG,
                     "override: [federation] model = spec: not a model: logreg, mlp, cnn or "
                     "file:/ABS/PATH.safetensors");
    expect_set_error("aggregator.weight_by_samples", "2", FM_EARG,
                     "override: [aggregator] weight_by_samples = 2: not a boolean "
                     "(true|false|yes|no|on|off|1|0)");
    /* strings the file syntax could not carry back */
    expect_set_error("aggregator.init", "a ;b", FM_EARG,
                     "override: [aggregator] init = a ;b: contains ' ;', which starts a comment "
                     "in the file");
    expect_set_error("aggregator.init", " lead", FM_EARG,
                     "override: [aggregator] init =  lead: starts or ends with a space");
    expect_set_error("aggregator.init", "a\nb", FM_EARG,
                     "override: [aggregator] init = a?b: contains a control character");
    /* the longest string: FM_CFG_STR_MAX - 1 bytes, whatever the key */
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[255] = '\0';
    fm_config_t t;
    fm_cfg_defaults(&t);
    assert_int_equal(fm_cfg_set(&t, "federation.data_dir", big, &e), 0);
    assert_int_equal(strlen(t.federation.data_dir), 255);
    big[255] = 'x';
    big[256] = '\0';
    assert_int_equal(fm_cfg_set(&t, "federation.data_dir", big, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "xxx...: longer than 255 bytes"));
    assert_int_equal(fm_cfg_set(&t, "aggregator.init", big, &e), FM_EARG);
    assert_non_null(strstr(e.msg, ": longer than 255 bytes"));

    /* overrides are checked one by one; cross-key constraints by fm_cfg_check */
    fm_cfg_defaults(&t);
    assert_int_equal(fm_cfg_set(&t, "federation.num_clients=5", NULL, &e), 0);
    assert_int_equal(fm_cfg_check(&t, &e), FM_EARG);
    assert_string_equal(e.msg, "config: [federation] clients_per_round = 10: must be <= "
                               "[federation] num_clients (5)");
    assert_int_equal(fm_cfg_set(&t, "federation.clients_per_round=5", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&t, "trainer.clients=0-4", NULL, &e), 0);
    assert_int_equal(fm_cfg_check(&t, &e), 0);
}

/* A valid value for key k different from its current one in c, applied with fm_cfg_set. */
static void change_key(fm_config_t *c, const fm_cfg_key_t *k)
{
    char key[96], cur[FM_CFG_STR_MAX], val[FM_CFG_STR_MAX];
    dotted(k, key, sizeof key);
    assert_int_equal(fm_cfg_get(c, key, cur, sizeof cur, NULL), 0);
    fm_errmsg_t e = {{0}};
    switch (k->type) {
    case FM_CFG_INT:
        snprintf(val, sizeof val, "%ld",
                 atol(cur) == (long)k->lo ? (long)k->lo + 1 : (long)k->lo);
        break;
    case FM_CFG_FLOAT:
        snprintf(val, sizeof val, "%.17g", strtod(cur, NULL) == k->lo ? k->hi : k->lo);
        break;
    case FM_CFG_U64: snprintf(val, sizeof val, "%llu", strtoull(cur, NULL, 10) + 1); break;
    case FM_CFG_BOOL:
        snprintf(val, sizeof val, "%s", strcmp(cur, "true") == 0 ? "false" : "true");
        break;
    case FM_CFG_ENUM: {
        const char *a = k->enum_name((int)k->lo), *b = k->enum_name((int)k->lo + 1);
        snprintf(val, sizeof val, "%s", strcmp(a, cur) == 0 ? b : a);
        break;
    }
    case FM_CFG_STRING: {
        static const char *const cand[] = {
            "iid", "ipc:///tmp/fedmq-x.sock", "3-4", "other", "off", "127.0.0.1:1", "mlp"};
        for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
            fm_config_t t = *c;
            if (strcmp(cand[i], cur) != 0 && fm_cfg_set(&t, key, cand[i], NULL) == 0) {
                snprintf(val, sizeof val, "%s", cand[i]);
                break;
            }
        }
        break;
    }
    }
    if (fm_cfg_set(c, key, val, &e) != 0)
        fail_msg("change %s to %s: %s", key, val, e.msg);
    char now[FM_CFG_STR_MAX];
    assert_int_equal(fm_cfg_get(c, key, now, sizeof now, NULL), 0);
    if (strcmp(now, cur) == 0)
        fail_msg("%s did not change (%s)", key, cur);
}

static void dump_load(void **state, const fm_config_t *c, fm_config_t *out)
{
    ctx_t *cx = *state;
    char path[512];
    snprintf(path, sizeof path, "%s/dump%d.conf", cx->dir, cx->serial++);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fm_cfg_dump(c, f), 0);
    assert_int_equal(fclose(f), 0);
    sentinel(out);
    load_ok(path, out);
}

static void test_roundtrip(void **state)
{
    fm_config_t c, d;
    uint8_t dc[32], dd[32];
    fm_cfg_defaults(&c);
    dump_load(state, &c, &d);
    assert_true(fm_cfg_equal(&c, &d));
    assert_memory_equal(&c, &d, sizeof c);

    /* every key away from its default, with awkward floats and strings */
    for (size_t i = 0; i < fm_cfg_nkeys(); i++)
        change_key(&c, fm_cfg_key_at(i));
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_set(&c, "federation.num_clients=1000", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.learning_rate", "0.30000000000000004", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "aggregator.tau", "1.2345678901234567e-7", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "trainer.slowdown_sigma", "0.1", &e), 0);
    /* dp_target_epsilon > 0 (changed) needs a noise multiplier > 0; dp_sgd (changed)
     * refuses a local_steps cap and a local_fraction (both changed) */
    assert_int_equal(fm_cfg_set(&c, "federation.local_steps", "0", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.local_fraction", "1", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "trainer.dp_noise_multiplier", "0.5", &e), 0);
    /* mode = sync (changed) needs fedavg|fedprox, mu > 0 (changed) needs fedprox */
    assert_int_equal(fm_cfg_set(&c, "federation.aggregation_strategy", "fedprox", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.min_clients", "2", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.clients_per_round", "3", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.data_dir", "/data/my datasets/fm#1", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "aggregator.init", "", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.seed", "18446744073709551615", &e), 0);
    char longest[FM_CFG_STR_MAX];
    memset(longest, 'd', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    assert_int_equal(fm_cfg_set(&c, "evaluator.metrics_file", longest, &e), 0);
    longest[0] = '/';
    assert_int_equal(fm_cfg_set(&c, "aggregator.checkpoint_dir", longest, &e), 0);
    /* privacy.mode = client refuses the changed mechanism (laplace), rule and norm bound:
     * back to none, and adaptive_clip (changed) needs client: back to false (the other
     * [privacy] keys stay changed; test_privacy_keys loads client) */
    assert_int_equal(fm_cfg_set(&c, "privacy.mode", "none", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "privacy.adaptive_clip", "false", &e), 0);
    /* secagg.enabled (changed) refuses the changed rule and acks: back to false */
    assert_int_equal(fm_cfg_set(&c, "secagg.enabled", "false", &e), 0);
    if (fm_cfg_check(&c, &e) != 0)
        fail_msg("%s", e.msg);
    dump_load(state, &c, &d);
    assert_true(fm_cfg_equal(&c, &d));
    assert_memory_equal(&c, &d, sizeof c);
    assert_true(d.federation.learning_rate == 0.30000000000000004);
    assert_true(d.aggregator.tau == 1.2345678901234567e-7);
    fm_cfg_digest(&c, dc);
    fm_cfg_digest(&d, dd);
    assert_memory_equal(dc, dd, 32);
}

/* The reader checks the bytes itself: a NUL byte anywhere is an error at its line (a C
 * string reader would drop the rest of the line), as is text that is not UTF-8. */
static void test_nul_and_encoding(void **state)
{
    static const char nul_value[] = "[federation]\nmodel = mlp\0garbage\n";
    expect_error_n(state, nul_value, sizeof nul_value - 1, FM_EFORMAT,
                   "%s:2: NUL byte at column 12");
    static const char nul_key[] = "[federation]\nseed = 2\n\0model = mlp\n";
    expect_error_n(state, nul_key, sizeof nul_key - 1, FM_EFORMAT, "%s:3: NUL byte at column 1");
    static const char nul_section[] = "[feder\0ation]\nseed = 2\n";
    expect_error_n(state, nul_section, sizeof nul_section - 1, FM_EFORMAT,
                   "%s:1: NUL byte at column 7");
    static const char nul_comment[] = "# a\0b\n[federation]\n";
    expect_error_n(state, nul_comment, sizeof nul_comment - 1, FM_EFORMAT,
                   "%s:1: NUL byte at column 4");
    static const char nul_last[] = "[federation]\nseed = 2\0"; /* no final newline */
    expect_error_n(state, nul_last, sizeof nul_last - 1, FM_EFORMAT,
                   "%s:2: NUL byte at column 9");
    /* the same from memory */
    fm_config_t c;
    fm_errmsg_t e = {{0}};
    fm_cfg_defaults(&c);
    assert_int_equal(fm_cfg_parse(&c, "mem", nul_value, sizeof nul_value - 1, &e), FM_EFORMAT);
    assert_string_equal(e.msg, "mem:2: NUL byte at column 12");
    assert_string_equal(c.federation.model, "cnn");

    /* not UTF-8: a stray byte, an overlong form, a surrogate, a cut sequence at the end */
    expect_error(state, "[federation]\n# caf\xE9\n", FM_EFORMAT,
                 "%s:2: not UTF-8 text (byte 0xE9 at column 6)");
    expect_error(state, "[federation]\ndata_dir = /a\xC0\xAF\n", FM_EFORMAT,
                 "%s:2: not UTF-8 text (byte 0xC0 at column 14)");
    expect_error(state, "\xED\xA0\x80\n", FM_EFORMAT,
                 "%s:1: not UTF-8 text (byte 0xED at column 1)");
    expect_error(state, "[federation]\ndata_dir = /d\xE2\x82", FM_EFORMAT,
                 "%s:2: not UTF-8 text (byte 0xE2 at column 14)");
    /* UTF-8 is fine in comments and string values */
    load_text_ok(state, "# caf\xC3\xA9 \xF0\x9F\x98\x80\n[federation]\ndata_dir = /d/\xC3\xBC\n",
                 &c);
    assert_string_equal(c.federation.data_dir, "/d/\xC3\xBC");
}

/* Lengths: lines up to FM_CFG_LINE_MAX bytes, string values up to FM_CFG_STR_MAX - 1 bytes
 * (accepted whole, also past inih's old 197-byte line), files up to FM_CFG_FILE_MAX. */
static void test_lengths(void **state)
{
    char text[FM_CFG_LINE_MAX + 64], val[FM_CFG_STR_MAX + 1], want[512];
    fm_config_t c;
    memset(val, 'v', sizeof val);
    val[0] = '/';
    val[FM_CFG_STR_MAX - 1] = '\0';
    snprintf(text, sizeof text, "[federation]\ndata_dir = %s\n", val);
    load_text_ok(state, text, &c);
    assert_string_equal(c.federation.data_dir, val);
    val[FM_CFG_STR_MAX - 1] = 'v';
    val[FM_CFG_STR_MAX] = '\0';
    snprintf(text, sizeof text, "[federation]\ndata_dir = %s\n", val);
    snprintf(want, sizeof want, "%%s:2: [federation] data_dir = %.64s...: longer than 255 bytes",
             val);
    expect_error(state, text, FM_EARG, want);

    /* a comment line of exactly FM_CFG_LINE_MAX bytes (and a CR) is fine, one more is not */
    memset(text, '#', FM_CFG_LINE_MAX);
    memcpy(text + FM_CFG_LINE_MAX, "\r\n[broker]\n", 12);
    load_text_ok(state, text, &c);
    memset(text, '#', FM_CFG_LINE_MAX + 1);
    memcpy(text + FM_CFG_LINE_MAX + 1, "\n", 2);
    expect_error(state, text, FM_EFORMAT, "%s:1: line longer than 1024 bytes");

    /* a file past FM_CFG_FILE_MAX, even of blank lines */
    size_t n = FM_CFG_FILE_MAX + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, '\n', n);
    expect_error_n(state, big, n, FM_EFORMAT, "%s: larger than 1048576 bytes");
    load_text_ok(state, "", &c);
    char path[512];
    write_conf_n(state, path, sizeof path, big, n - 1);
    load_ok(path, &c);
    free(big);

    /* a directory cannot be read */
    ctx_t *cx = *state;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_load(&c, cx->dir, &e), -EISDIR);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", cx->dir);
    assert_string_equal(e.msg, want);
}

/* Line kinds the reader accepts or rejects beyond the common cases. */
static void test_line_kinds(void **state)
{
    fm_config_t c;
    /* a comment after a section header; a ';' in a value not after a space is kept */
    load_text_ok(state,
                 "[aggregator] # the aggregator\ninit = a;b\n[federation] ; x\n"
                 "seed = 7\n",
                 &c);
    assert_string_equal(c.aggregator.init, "a;b");
    assert_int_equal(c.federation.seed, 7);
    /* text after a section header, ':' as a separator, an empty section name */
    expect_error(state, "[aggregator] x\n", FM_EFORMAT,
                 "%s:1: syntax error (expected [section], key = value or a # comment)");
    expect_error(state, "[aggregator]\nbuffer_k: 5\n", FM_EFORMAT,
                 "%s:2: syntax error (expected [section], key = value or a # comment)");
    expect_error(state, "[]\n", FM_EARG, "%s:1: []: unknown section");
    expect_error(state, "  [aggregator]\n", FM_EFORMAT,
                 "%s:1: indented line (continuation lines are not supported)");
    /* a lone CR inside a line is a control character, not a line end */
    expect_error(state, "[aggregator]\r\ninit = a\rb\r\n", FM_EARG,
                 "%s:2: [aggregator] init = a?b: contains a control character");
    /* a BOM only counts at the very start */
    expect_error(state, "[broker]\n\xEF\xBB\xBFlog_level = info\n", FM_EARG,
                 "%s:2: [broker] \xEF\xBB\xBFlog_level = info: unknown key");
}

/* fm_cfg_text is what fm_cfg_dump writes and parses back; fm_cfg_diff names the keys that
 * differ, in table order. */
static void test_text_diff(void **state)
{
    (void)state;
    fm_config_t a, b, c;
    fm_errmsg_t e = {{0}};
    fm_cfg_defaults(&a);
    b = a;
    assert_int_equal(fm_cfg_set(&b, "aggregator.buffer_k=20", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&b, "broker.log_level=debug", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&b, "federation.data_dir=/data/x y", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&b, "federation.model=mlp", NULL, &e), 0);

    char *text = NULL, *dumped = NULL;
    size_t len = 0, dlen = 0;
    assert_int_equal(fm_cfg_text(&b, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    FILE *f = open_memstream(&dumped, &dlen);
    assert_non_null(f);
    assert_int_equal(fm_cfg_dump(&b, f), 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(len, dlen);
    assert_memory_equal(text, dumped, len);
    fm_cfg_defaults(&c);
    assert_int_equal(fm_cfg_parse(&c, "text", text, len, &e), 0);
    assert_true(fm_cfg_equal(&b, &c));
    assert_memory_equal(&b, &c, sizeof b);

    char *d = NULL;
    assert_int_equal(fm_cfg_diff(&a, &b, &d), 4);
    assert_string_equal(d, "[federation] model: cnn -> mlp; [federation] data_dir: "
                           "/usr/share/datasets/fashion-mnist -> /data/x y; [broker] log_level: "
                           "info -> debug; [aggregator] buffer_k: 0 -> 20");
    free(d);
    d = NULL;
    assert_int_equal(fm_cfg_diff(&b, &c, &d), 0);
    assert_string_equal(d, "");
    free(d);
    d = NULL;
    /* floats by their exact value */
    c.federation.learning_rate = nextafter(c.federation.learning_rate, 1.0);
    assert_int_equal(fm_cfg_diff(&b, &c, &d), 1);
    assert_string_equal(d, "[federation] learning_rate: 0.01 -> 0.010000000000000002");
    free(d);
    d = NULL;
    /* every key changed: every key named */
    c = a;
    for (size_t i = 0; i < fm_cfg_nkeys(); i++)
        change_key(&c, fm_cfg_key_at(i));
    assert_int_equal(fm_cfg_diff(&a, &c, &d), (int)fm_cfg_nkeys());
    free(d);
    free(text);
    free(dumped);
}

static void test_digest(void **state)
{
    (void)state;
    size_t n = fm_cfg_nkeys();
    fm_config_t c, d;
    fm_cfg_defaults(&c);
    fm_cfg_defaults(&d);
    uint8_t(*dig)[32] = calloc(n + 1, sizeof *dig);
    assert_non_null(dig);
    fm_cfg_digest(&c, dig[n]);
    fm_cfg_digest(&d, dig[0]);
    assert_memory_equal(dig[0], dig[n], 32); /* deterministic */
    /* the four lanes differ from each other */
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++)
            assert_memory_not_equal(dig[n] + 8 * a, dig[n] + 8 * b, 8);
    /* changing any single key changes the digest, and to a digest no other change gives */
    for (size_t i = 0; i < n; i++) {
        fm_config_t t = c;
        change_key(&t, fm_cfg_key_at(i));
        fm_cfg_digest(&t, dig[i]);
        for (size_t j = 0; j < i; j++)
            assert_memory_not_equal(dig[i], dig[j], 32);
        assert_memory_not_equal(dig[i], dig[n], 32);
    }
    /* a tiny float change is seen too */
    fm_config_t t = c;
    uint8_t x[32];
    t.federation.learning_rate = nextafter(t.federation.learning_rate, 1.0);
    fm_cfg_digest(&t, x);
    assert_memory_not_equal(x, dig[n], 32);
    free(dig);
}

static void test_reload_rule(void **state)
{
    (void)state;
    fm_config_t old, fresh;
    fm_cfg_defaults(&old);
    fresh = old;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_check_reload(&old, &fresh, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.log_level=debug", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.checkpoint_every=3", NULL, &e), 0);
    assert_int_equal(fm_cfg_check_reload(&old, &fresh, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.buffer_k=20", NULL, &e), 0);
    assert_int_equal(fm_cfg_check_reload(&old, &fresh, &e), FM_EARG);
    assert_string_equal(e.msg, "reload: [aggregator] buffer_k changed from 0 to 20, which needs "
                               "a restart");
}

/* [aggregator] aggregation and the norm screen: defaults, names, the cross-key checks, the
 * screen keys reloadable and the rule not. */
static void test_robust_keys(void **state)
{
    fm_config_t c, fresh;
    fm_cfg_defaults(&c);
    assert_int_equal(c.aggregator.aggregation, FM_ROBUST_MEAN);
    assert_true(c.aggregator.trim_fraction == 0.1);
    assert_true(c.aggregator.norm_bound == 0);
    assert_int_equal(c.aggregator.norm_bound_mode, FM_SCREEN_ABSOLUTE);
    assert_int_equal(c.aggregator.norm_action, FM_SCREEN_CLIP);
    assert_int_equal(c.aggregator.norm_window, 50);
    assert_string_equal(fm_cfg_enum_name("aggregator.aggregation", FM_ROBUST_NORM_BOUNDED_MEAN),
                        "norm_bounded_mean");
    assert_string_equal(fm_cfg_enum_name("aggregator.norm_bound_mode", FM_SCREEN_RELATIVE),
                        "relative");
    assert_string_equal(fm_cfg_enum_name("aggregator.norm_action", FM_SCREEN_REJECT), "reject");
    load_text_ok(state,
                 "[aggregator]\naggregation = trimmed_mean\ntrim_fraction = 0.2\n"
                 "norm_bound = 2.5\nnorm_bound_mode = relative\nnorm_action = reject\n"
                 "norm_window = 7\n",
                 &c);
    assert_int_equal(c.aggregator.aggregation, FM_ROBUST_TRIMMED_MEAN);
    assert_true(c.aggregator.norm_bound == 2.5);
    assert_int_equal(c.aggregator.norm_action, FM_SCREEN_REJECT);
    assert_int_equal(c.aggregator.norm_window, 7);
    expect_error(state, "[aggregator]\naggregation = krum\n", FM_EARG,
                 "%s:2: [aggregator] aggregation = krum: not one of "
                 "mean|median|trimmed_mean|norm_bounded_mean");
    expect_error(state, "[aggregator]\nnorm_bound_mode = relative\nnorm_bound = 0.5\n", FM_EARG,
                 "%s:3: [aggregator] norm_bound = 0.5: a relative bound is a factor of the "
                 "median norm: >= 1, or 0");
    expect_error(state, "[aggregator]\nnorm_bound = -1\n", FM_ERANGE,
                 "%s:2: [aggregator] norm_bound = -1: out of range [0, 1e+18]");
    /* K = clients_per_round = 10 by default: 0.05 x 10 trims nothing */
    expect_error(state, "[aggregator]\naggregation = trimmed_mean\ntrim_fraction = 0.05\n",
                 FM_EARG,
                 "%s:3: [aggregator] trim_fraction = 0.05: trims nothing from a buffer of 10 "
                 "updates: use >= 0.1");
    expect_error(state,
                 "[aggregator]\naggregation = trimmed_mean\nbuffer_k = 3\n"
                 "trim_fraction = 0.3\n",
                 FM_EARG,
                 "%s:4: [aggregator] trim_fraction = 0.3: trims nothing from a buffer of 3 "
                 "updates: use >= 0.334");
    expect_error(state, "[aggregator]\naggregation = trimmed_mean\nbuffer_k = 2\n", FM_EARG,
                 "%s: [aggregator] trim_fraction = 0.1: trims nothing: buffers of 2 updates are "
                 "too small");
    /* trim_fraction is only checked with the trimmed mean */
    load_text_ok(state, "[aggregator]\naggregation = median\nbuffer_k = 2\n", &c);

    fm_errmsg_t e = {{0}};
    fm_cfg_defaults(&c);
    fresh = c;
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.norm_bound=3", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.norm_bound_mode=relative", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.norm_action=reject", NULL, &e), 0);
    assert_int_equal(fm_cfg_check_reload(&c, &fresh, &e), 0);
    assert_int_equal(fm_cfg_set(&fresh, "aggregator.aggregation=median", NULL, &e), 0);
    assert_int_equal(fm_cfg_check_reload(&c, &fresh, &e), FM_EARG);
    assert_string_equal(e.msg, "reload: [aggregator] aggregation changed from mean to median, "
                               "which needs a restart");
}

/* [privacy]: the keys, and the combinations a client-level guarantee cannot hold with */
static void test_privacy_keys(void **state)
{
    fm_config_t c;
    load_text_ok(state, "[privacy]\n", &c);
    assert_int_equal(c.privacy.mode, FM_CFG_PRIVACY_NONE);
    assert_true(c.privacy.clip_norm == 1 && c.privacy.noise_multiplier == 1);
    assert_true(c.privacy.target_epsilon == 0 && c.privacy.delta == 1e-5);
    assert_int_equal(c.privacy.conversion, FM_RDP_IMPROVED);
    /* the defaults weigh by samples: fine without privacy, refused with it */
    expect_error(state, "[privacy]\nmode = client\n", FM_EARG,
                 "%s: [aggregator] weight_by_samples = true: must be false with [privacy] mode "
                 "= client: sample counts make one client's weight unbounded");
    load_text_ok(state,
                 "[aggregator]\nweight_by_samples = false\n[privacy]\nmode = client\n"
                 "clip_norm = 0.5\nnoise_multiplier = 1.3\ntarget_epsilon = 3\n"
                 "delta = 1e-6\nconversion = classic\n",
                 &c);
    assert_int_equal(c.privacy.mode, FM_CFG_PRIVACY_CLIENT);
    assert_true(c.privacy.clip_norm == 0.5 && c.privacy.noise_multiplier == 1.3);
    assert_true(c.privacy.target_epsilon == 3 && c.privacy.delta == 1e-6);
    assert_int_equal(c.privacy.conversion, FM_RDP_CLASSIC);
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[privacy]\nmode = client\n"
                 "mechanism = laplace\n",
                 FM_EARG,
                 "%s:5: [privacy] mechanism = laplace: laplace is not supported: the accountant "
                 "covers the Gaussian mechanism; use gaussian");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[privacy]\nmode = client\n"
                 "noise_multiplier = 0\n",
                 FM_EARG,
                 "%s:5: [privacy] noise_multiplier = 0: must be > 0 with [privacy] mode = client "
                 "(0 is no privacy)");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\naggregation = median\n[privacy]\n"
                 "mode = client\n",
                 FM_EARG,
                 "%s:3: [aggregator] aggregation = median: must be mean with [privacy] mode = "
                 "client (the noise is calibrated to a clipped sum)");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\nnorm_bound = 5\n[privacy]\n"
                 "mode = client\n",
                 FM_EARG,
                 "%s:3: [aggregator] norm_bound = 5: must be 0 with [privacy] mode = client: "
                 "[privacy] clip_norm clips every update");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\nsign_threshold = 0.4\n[privacy]\n"
                 "mode = client\n",
                 FM_EARG,
                 "%s:3: [aggregator] sign_threshold = 0.4: must be 0 with [privacy] mode = "
                 "client: one client's update can swing the vote on every parameter, so the "
                 "noise no longer bounds its influence");
    expect_error(state, "[aggregator]\nsign_threshold = 1.5\n", FM_ERANGE,
                 "%s:2: [aggregator] sign_threshold = 1.5: out of range [0, 1]");
    expect_error(state, "[privacy]\ndelta = 0.7\n", FM_ERANGE,
                 "%s:2: [privacy] delta = 0.7: out of range [1e-300, 0.5]");
    expect_error(state, "[privacy]\nmode = local\n", FM_EARG,
                 "%s:2: [privacy] mode = local: not one of none|client");
    /* laplace without privacy on is just an unused value */
    load_text_ok(state, "[privacy]\nmechanism = laplace\n", &c);
}

/* [secagg]: the defaults, the zeros resolved, one refusal line per combination it cannot run */
static void test_secagg_keys(void **state)
{
    fm_config_t c;
    uint32_t k = 0, t = 0;
    double clip = 0;
    load_text_ok(state, "[secagg]\n", &c);
    assert_false(c.secagg.enabled);
    assert_int_equal(c.secagg.cohorts, 2);
    const char *ok = "[aggregator]\nweight_by_samples = false\n[secagg]\nenabled = on\n";
    load_text_ok(state, ok, &c);
    fm_cfg_secagg_params(&c, &k, &t, &clip);
    assert_int_equal(k, 10); /* clients_per_round */
    assert_int_equal(t, 7);  /* ceil(2 x 10 / 3) */
    assert_true(clip == 10);
    load_text_ok(
        state, "[aggregator]\nweight_by_samples = false\nbuffer_k = 5\n[secagg]\nenabled = on\n",
        &c);
    fm_cfg_secagg_params(&c, &k, &t, &clip);
    assert_int_equal(k, 5);
    assert_int_equal(t, 4); /* max(3, ceil(10/3) = 4) */
    load_text_ok(state,
                 "[aggregator]\nweight_by_samples = false\n[secagg]\nenabled = on\n"
                 "cohort_size = 50\nthreshold = 26\n[privacy]\nmode = client\nclip_norm = 0.7\n",
                 &c);
    fm_cfg_secagg_params(&c, &k, &t, &clip);
    assert_true(k == 50 && t == 26 && clip == 0.7);
    expect_error(state, "[secagg]\nenabled = on\n", FM_EARG,
                 "%s: [aggregator] weight_by_samples = true: must be false with [secagg] "
                 "enabled: every member weighs 1 (sample-count weights are not built for secure "
                 "aggregation)");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[secagg]\nenabled = on\n"
                 "threshold = 5\n",
                 FM_EARG,
                 "%s:5: [secagg] threshold = 5: must be 6..10 for K = 10 (t > K/2: no two "
                 "disjoint sets of t members exist)");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[secagg]\nenabled = on\n"
                 "cohort_size = 1\n",
                 FM_EARG,
                 "%s:5: [secagg] cohort_size = 1: makes cohorts of 1 members: K must "
                 "be 2..256");
    expect_error(state,
                 "[federation]\nnum_clients = 8\nclients_per_round = 8\n[trainer]\nclients = "
                 "0-7\n[aggregator]\nweight_by_samples = false\n"
                 "[secagg]\nenabled = on\ncohort_size = 9\nthreshold = 9\n",
                 FM_EARG,
                 "%s:10: [secagg] cohort_size = 9: K = 9: must be <= [federation] "
                 "num_clients (8)");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\nacks = false\n[secagg]\n"
                 "enabled = on\n",
                 FM_EARG,
                 "%s:3: [aggregator] acks = false: must be true with [secagg] enabled: the "
                 "cohort messages travel on endpoints.acks");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\naggregation = median\n[secagg]\n"
                 "enabled = on\n",
                 FM_EARG,
                 "%s:3: [aggregator] aggregation = median: must be mean with [secagg] enabled: "
                 "the aggregator sees only a cohort's sum, never one update");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\nsign_threshold = 0.4\n[secagg]\n"
                 "enabled = on\n",
                 FM_EARG,
                 "%s:3: [aggregator] sign_threshold = 0.4: must be 0 with [secagg] enabled: "
                 "the sign vote needs every update's signs, the aggregator sees only a "
                 "cohort's sum");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\nnorm_bound = 3\n[secagg]\n"
                 "enabled = on\n",
                 FM_EARG,
                 "%s:3: [aggregator] norm_bound = 3: must be 0 with [secagg] enabled: members "
                 "clip to [secagg] clip_norm themselves, the aggregator cannot see one "
                 "update's norm");
    expect_error(state,
                 "[federation]\nmode = sync\nsampling = poisson\naggregation_strategy = fedavg\n"
                 "[aggregator]\n"
                 "weight_by_samples = false\n[secagg]\nenabled = on\n",
                 FM_EARG,
                 "%s:3: [federation] sampling = poisson: must be fixed with [secagg] enabled (a "
                 "cohort is fixed when it forms)");
    expect_error(
        state,
        "[aggregator]\nweight_by_samples = false\n[secagg]\nenabled = on\n"
        "cohort_size = 256\nthreshold = 200\nclip_norm = 1e6\n"
        "[federation]\nnum_clients = 1000\n",
        FM_EARG,
        "%s:7: [secagg] clip_norm = 1000000: K = 256 x C = 1e+06 leaves fewer than 8 bits "
        "of fixed point below 2^31");
    /* members send masked fixed-point words: no tensor encoding */
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[trainer]\nencoding = int8\n"
                 "[secagg]\nenabled = on\n",
                 FM_EARG,
                 "%s:4: [trainer] encoding = int8: must be fp32 dense without zstd with "
                 "[secagg] enabled: members send their masked fixed-point words, not encoded "
                 "tensors");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[trainer]\ntopk_fraction = 0.05\n"
                 "[secagg]\nenabled = on\n",
                 FM_EARG,
                 "%s:4: [trainer] topk_fraction = 0.05: must be fp32 dense without zstd with "
                 "[secagg] enabled: members send their masked fixed-point words, not encoded "
                 "tensors");
    expect_error(state,
                 "[aggregator]\nweight_by_samples = false\n[trainer]\nzstd_level = 3\n"
                 "[secagg]\nenabled = on\n",
                 FM_EARG,
                 "%s:4: [trainer] zstd_level = 3: must be fp32 dense without zstd with "
                 "[secagg] enabled: members send their masked fixed-point words, not encoded "
                 "tensors");
    load_text_ok(state, "[trainer]\nencoding = int8\n[secagg]\nenabled = off\n", &c);
    /* the same keys with enabled = false are unused values */
    load_text_ok(state, "[secagg]\ncohort_size = 1\nthreshold = 200\n", &c);
}

/* [privacy] adaptive clipping: the defaults, and one refusal line per nonsense value */
static void test_adaptive_clip_keys(void **state)
{
    fm_config_t c;
    load_text_ok(state, "[privacy]\n", &c);
    assert_false(c.privacy.adaptive_clip);
    assert_true(c.privacy.target_quantile == 0.5 && c.privacy.clip_learning_rate == 0.2);
    assert_true(c.privacy.clip_count_stddev == 2.5);
#define S_CLIENT "[aggregator]\nweight_by_samples = false\n[privacy]\nmode = client\n"
    load_text_ok(state, S_CLIENT "adaptive_clip = true\n", &c);
    assert_true(c.privacy.adaptive_clip);
    /* the smallest sigma_b above sigma / 2 (sigma 1): accepted */
    load_text_ok(state, S_CLIENT "adaptive_clip = true\nclip_count_stddev = 0.5000001\n", &c);
    expect_error(state, "[privacy]\nadaptive_clip = true\n", FM_EARG,
                 "%s:2: [privacy] adaptive_clip = true: is part of client-level DP: set "
                 "[privacy] mode = client, or false");
    expect_error(state, S_CLIENT "adaptive_clip = true\ntarget_quantile = 0\n", FM_EARG,
                 "%s:6: [privacy] target_quantile = 0: must be strictly between 0 and 1 (the "
                 "fraction left unclipped)");
    expect_error(state, S_CLIENT "adaptive_clip = true\ntarget_quantile = 1\n", FM_EARG,
                 "%s:6: [privacy] target_quantile = 1: must be strictly between 0 and 1 (the "
                 "fraction left unclipped)");
    expect_error(state, "[privacy]\ntarget_quantile = 1.5\n", FM_ERANGE,
                 "%s:2: [privacy] target_quantile = 1.5: out of range [0, 1]");
    expect_error(state, S_CLIENT "adaptive_clip = true\nclip_learning_rate = 0\n", FM_EARG,
                 "%s:6: [privacy] clip_learning_rate = 0: must be > 0 with [privacy] "
                 "adaptive_clip = true (0 never moves the clip)");
    expect_error(state, S_CLIENT "adaptive_clip = true\nclip_count_stddev = 0\n", FM_EARG,
                 "%s:6: [privacy] clip_count_stddev = 0: must be > 0 with [privacy] "
                 "adaptive_clip = true (the count is noised)");
    /* 2 sigma_b = sigma exactly: z_delta undefined (infinite); below it, negative */
    expect_error(state, S_CLIENT "adaptive_clip = true\nclip_count_stddev = 0.5\n", FM_EARG,
                 "%s:6: [privacy] clip_count_stddev = 0.5: must be > [privacy] "
                 "noise_multiplier / 2 = 0.5 (adaptive clipping needs 2 sigma_b > sigma)");
    expect_error(state,
                 S_CLIENT "noise_multiplier = 8\nadaptive_clip = true\nclip_count_stddev = 3\n",
                 FM_EARG,
                 "%s:7: [privacy] clip_count_stddev = 3: must be > [privacy] "
                 "noise_multiplier / 2 = 4 (adaptive clipping needs 2 sigma_b > sigma)");
#undef S_CLIENT
    /* without adaptive clipping its keys are unused values */
    load_text_ok(state, "[privacy]\ntarget_quantile = 0\nclip_count_stddev = 0\n", &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_privacy_keys),
        cmocka_unit_test(test_secagg_keys),
        cmocka_unit_test(test_adaptive_clip_keys),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_enum_names),
        cmocka_unit_test(test_shipped_config),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_syntax_variants),
        cmocka_unit_test(test_nul_and_encoding),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_line_kinds),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_text_diff),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_reload_rule),
        cmocka_unit_test(test_robust_keys),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
