/* Unit tests of fm_cfg: the key table, defaults, the shipped configs/fedmq.conf, every
 * error kind with its exact one-line message, overrides, dump -> load round trips, the
 * digest and the reload rule. */
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
#include <ini.h>

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

/* Write `text` to a new file in the temp dir; its path goes to out. */
static void write_conf(void **state, char *out, size_t cap, const char *text)
{
    ctx_t *c = *state;
    snprintf(out, cap, "%s/c%d.conf", c->dir, c->serial++);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* A config that differs from the defaults, to check that failed loads leave it alone. */
static void sentinel(fm_config_t *c)
{
    fm_cfg_defaults(c);
    assert_int_equal(fm_cfg_set(c, "aggregator.buffer_k", "77", NULL), 0);
    assert_int_equal(fm_cfg_set(c, "federation.partition", "iid", NULL), 0);
}

/* Load `text` expecting `code` and exactly the message `want` (with "%s" for the path);
 * the target struct must be unchanged. */
static void expect_error(void **state, const char *text, int code, const char *want)
{
    char path[512], msg[1024];
    write_conf(state, path, sizeof path, text);
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
        assert_true((k->type == FM_CFG_ENUM) == (k->values != NULL));
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
    assert_int_equal(nseen, 6);
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
    assert_int_equal(c.federation.model, FM_CFG_MODEL_CNN);
    assert_int_equal(c.federation.num_clients, 100);
    assert_int_equal(c.federation.clients_per_round, 10);
    assert_int_equal(c.federation.num_rounds, 0);
    assert_true(c.federation.learning_rate == 0.01);
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
    assert_int_equal(c.aggregator.staleness, FM_CFG_STALENESS_POLYNOMIAL);
    assert_true(c.aggregator.weight_by_samples);
    assert_int_equal(c.aggregator.server_optimizer, FM_CFG_SERVER_OPT_FEDAVG);
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
    assert_string_equal(fm_cfg_enum_name("federation.model", FM_CFG_MODEL_CNN), "cnn");
    assert_string_equal(fm_cfg_enum_name("federation.model", FM_CFG_MODEL_MLP), "mlp");
    assert_string_equal(fm_cfg_enum_name("federation.model", FM_CFG_MODEL_LOGREG), "logreg");
    assert_string_equal(fm_cfg_enum_name("federation.aggregation_strategy",
                                         FM_CFG_STRATEGY_FEDPROX), "fedprox");
    assert_string_equal(fm_cfg_enum_name("federation.mode", FM_CFG_MODE_SYNC), "sync");
    assert_string_equal(fm_cfg_enum_name("aggregator.staleness", FM_CFG_STALENESS_HINGE), "hinge");
    assert_string_equal(fm_cfg_enum_name("aggregator.server_optimizer", FM_CFG_SERVER_OPT_FEDYOGI),
                        "fedyogi");
    assert_string_equal(fm_cfg_enum_name("trainer.log_level", LOG_DEBUG), "debug");
    assert_string_equal(fm_cfg_enum_name("evaluator.log_level", LOG_ERR), "error");
    assert_null(fm_cfg_enum_name("federation.model", 42));
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
                 "%s:2: [federation] model = CNN: not one of cnn|mlp|logreg");
    expect_error(state, "[aggregator]\nweight_by_samples = maybe\n", FM_EARG,
                 "%s:2: [aggregator] weight_by_samples = maybe: not a boolean "
                 "(true|false|yes|no|on|off|1|0)");
    /* string checks */
    expect_error(state, "[federation]\npartition = dirichlet:-1\n", FM_EARG,
                 "%s:2: [federation] partition = dirichlet:-1: not a partition (iid, "
                 "dirichlet:ALPHA with ALPHA > 0, or shards:K with K >= 1)");
    expect_error(state, "[endpoints]\nupdates = tcp://127.0.0.1\n", FM_EARG,
                 "%s:2: [endpoints] updates = tcp://127.0.0.1: not a ZeroMQ endpoint "
                 "(tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
    expect_error(state, "[trainer]\nclients = 9-3\n", FM_EARG,
                 "%s:2: [trainer] clients = 9-3: not a client range (A-B with 0 <= A <= B, or A)");
    expect_error(state, "[aggregator]\ncheckpoint_dir =\n", FM_EARG,
                 "%s:2: [aggregator] checkpoint_dir = : must not be empty");
    /* duplicate key, also across a repeated section */
    expect_error(state, "[aggregator]\nbuffer_k = 5\n\nbuffer_k = 6\n", FM_EARG,
                 "%s:4: [aggregator] buffer_k = 6: duplicate key (first set on line 2)");
    expect_error(state, "[trainer]\nworkers = 2\n[broker]\nlog_level = info\n[trainer]\n"
                        "workers = 3\n", FM_EARG,
                 "%s:6: [trainer] workers = 3: duplicate key (first set on line 2)");
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

    /* a line longer than inih's buffer is an error, not silently split */
    char text[600], want[128];
    snprintf(text, sizeof text, "[aggregator]\ninit = %0300d\n", 0);
    snprintf(want, sizeof want, "%%s:2: line longer than %d bytes", ini_max_line - 3);
    expect_error(state, text, FM_EFORMAT, want);

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
    assert_int_equal(c.aggregator.server_optimizer, FM_CFG_SERVER_OPT_FEDADAM);
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
    assert_int_equal(c.federation.model, FM_CFG_MODEL_LOGREG);
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
                     "override: [federation] model = resnet: not one of cnn|mlp|logreg");
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
    /* the longest string whose "key = value" line fits inih's buffer (197 bytes of text) */
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[186] = '\0';
    fm_config_t t;
    fm_cfg_defaults(&t);
    assert_int_equal(fm_cfg_set(&t, "federation.data_dir", big, &e), 0);
    big[186] = 'x';
    big[187] = '\0';
    assert_int_equal(fm_cfg_set(&t, "federation.data_dir", big, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "xxx...: longer than 186 bytes (a config line holds 197)"));
    big[187] = 'x';
    assert_int_equal(fm_cfg_set(&t, "aggregator.init", big, &e), FM_EARG);
    assert_non_null(strstr(e.msg, ": longer than 190 bytes (a config line holds 197)"));

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
        snprintf(val, sizeof val, "%ld", atol(cur) == (long)k->lo ? (long)k->lo + 1 : (long)k->lo);
        break;
    case FM_CFG_FLOAT:
        snprintf(val, sizeof val, "%.17g", strtod(cur, NULL) == k->lo ? k->hi : k->lo);
        break;
    case FM_CFG_U64:
        snprintf(val, sizeof val, "%llu", strtoull(cur, NULL, 10) + 1);
        break;
    case FM_CFG_BOOL:
        snprintf(val, sizeof val, "%s", strcmp(cur, "true") == 0 ? "false" : "true");
        break;
    case FM_CFG_ENUM:
        snprintf(val, sizeof val, "%s", strcmp(k->values[0].name, cur) == 0 ? k->values[1].name
                                                                              : k->values[0].name);
        break;
    case FM_CFG_STRING: {
        static const char *const cand[] = {"iid", "ipc:///tmp/fedmq-x.sock", "3-4", "other"};
        for (size_t i = 0; i < 4; i++) {
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
    /* mode = sync (changed) needs fedavg|fedprox, mu > 0 (changed) needs fedprox */
    assert_int_equal(fm_cfg_set(&c, "federation.aggregation_strategy", "fedprox", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.min_clients", "2", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.clients_per_round", "3", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.data_dir", "/data/my datasets/fm#1", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "aggregator.init", "", &e), 0);
    assert_int_equal(fm_cfg_set(&c, "federation.seed", "18446744073709551615", &e), 0);
    char longest[187];
    memset(longest, 'd', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    assert_int_equal(fm_cfg_set(&c, "evaluator.metrics_file", longest + 4, &e), 0);
    assert_int_equal(fm_cfg_check(&c, &e), 0);
    dump_load(state, &c, &d);
    assert_true(fm_cfg_equal(&c, &d));
    assert_memory_equal(&c, &d, sizeof c);
    assert_true(d.federation.learning_rate == 0.30000000000000004);
    assert_true(d.aggregator.tau == 1.2345678901234567e-7);
    fm_cfg_digest(&c, dc);
    fm_cfg_digest(&d, dd);
    assert_memory_equal(dc, dd, 32);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_enum_names),
        cmocka_unit_test(test_shipped_config),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_syntax_variants),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_reload_rule),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
