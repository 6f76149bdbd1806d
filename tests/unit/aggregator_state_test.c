/* aggregator_state_test: the aggregator's checkpoint state (aggregator/aggregator_state.c):
 * the canonical config text (fm_cfg_text, parsed back equal) and the diff with a stored text, a
 * save and a resume in a temp directory (params, counters, also those kept in blobs beyond the
 * record header's slots, round, the id window without the open buffer's ids, the config text
 * in the same transaction), "no checkpoint", and the fallback past
 * a corrupt newest record (version, params, counters, ids and round of ONE record; the lost
 * numbers rejected and never reused). Links aggregator_lib (the CMakeLists.txt rule for
 * aggregator_*_test). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "aggregator_state.h"
#include "fm_ckpt.h"
#include "fm_log.h"

static void test_config_diff(void **state)
{
    fm_config_t was, now;
    fm_cfg_defaults(&was);
    char *text = NULL;
    assert_int_equal(fm_cfg_text(&was, &text, NULL), 0);
    now = was;
    assert_int_equal(agg_state_config_diff(text, &now, "test"), 0);
    now.aggregator.max_staleness = was.aggregator.max_staleness + 1;
    assert_int_equal(agg_state_config_diff(text, &now, "test"), 1);
    now.federation.mu = 0.5;
    now.federation.aggregation_strategy = FM_CFG_STRATEGY_FEDPROX;
    assert_int_equal(agg_state_config_diff(text, &now, "test"), 3);
    /* a text that is no config (another version's keys): an error, not a count */
    assert_true(agg_state_config_diff("[aggregator]\nno_such_key = 1\n", &now, "test") < 0);
    free(text);
}

typedef struct {
    char dir[64];
    fm_config_t cfg;
    fm_model_t *model;
    fm_server_opt_t *opt;
} s_t;

static int s_setup(void **state)
{
    s_t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    snprintf(t->dir, sizeof t->dir, "/tmp/agg_state_test.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    fm_cfg_defaults(&t->cfg);
    snprintf(t->cfg.aggregator.checkpoint_dir, sizeof t->cfg.aggregator.checkpoint_dir, "%s/ckpt",
             t->dir);
    int rc = 0;
    t->model = fm_model_new("logreg", &rc);
    assert_non_null(t->model);
    fm_server_opt_config_t oc = {.eta = 1.0, .beta1 = 0.9, .beta2 = 0.99, .tau = 1e-3};
    t->opt = fm_server_opt_new(FM_SERVER_OPT_FEDADAM, fm_model_nparams(t->model), &oc, &rc);
    assert_non_null(t->opt);
    *state = t;
    return 0;
}

static int s_teardown(void **state)
{
    s_t *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", t->dir);
    fm_server_opt_destroy(&t->opt);
    fm_model_destroy(&t->model);
    free(t);
    return 0;
}

static void s_id(uint8_t id[FM_WIRE_ID_LEN], uint8_t k)
{
    memset(id, 0, FM_WIRE_ID_LEN);
    id[0] = k;
    id[15] = 0x5a;
}

static void test_canonical_text(void **state)
{
    s_t *t = *state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    agg_state_t *s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    const char *text = agg_state_config_text(s);
    fm_config_t back;
    assert_int_equal(fm_cfg_parse(&back, "test", text, strlen(text), NULL), 0);
    assert_true(fm_cfg_equal(&back, &t->cfg));
    fm_config_t other = t->cfg;
    other.aggregator.max_staleness = 3;
    assert_int_equal(agg_state_set_config(s, &other, "test"), 0);
    assert_non_null(strstr(agg_state_config_text(s), "\nmax_staleness = 3\n"));
    agg_state_destroy(&s);
    agg_state_destroy(&s);
}

static void test_save_resume(void **state)
{
    s_t *t = *state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    agg_state_t *s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    agg_record_t rec;
    assert_int_equal(agg_state_resume(s, t->model, t->opt, &rec, &e), -ENOENT);
    fm_model_init(t->model, 5);
    size_t np = fm_model_nparams(t->model);
    float *w = malloc(np * sizeof *w);
    assert_non_null(w);
    memcpy(w, fm_model_params(t->model), np * sizeof *w);
    uint8_t id[FM_WIRE_ID_LEN];
    for (uint8_t k = 1; k <= 3; k++) {
        s_id(id, k);
        agg_idset_add(agg_state_ids(s), id);
    }
    agg_record_t out = {.version = 7, .round = 3};
    out.counters.applied = 12;
    out.counters.rejected[AGG_REJ_STALE] = 2;
    out.counters.rejected[AGG_REJ_NORM] = 3; /* beyond the header's slots: agg.reasons */
    out.counters.rejected[AGG_REJ_OVERFLOW] = 4;
    out.counters.rejected_total = 9;
    out.counters.clipped = 7;                                                  /* agg.clipped */
    assert_int_equal(agg_state_save(s, t->model, t->opt, &out, 1, "test"), 0); /* id 3 open */
    char *saved_text = strdup(agg_state_config_text(s));
    agg_state_destroy(&s);

    /* the config text went into the checkpoint's transaction */
    fm_ckpt_t *c = fm_ckpt_open(t->cfg.aggregator.checkpoint_dir, 0, &err, &e);
    assert_non_null(c);
    char buf[65536];
    size_t len = 0;
    assert_int_equal(fm_ckpt_record_get(c, 7, "agg.config", buf, sizeof buf - 1, &len, &e), 0);
    buf[len] = '\0';
    assert_string_equal(buf, saved_text);
    fm_ckpt_close(&c);

    /* resume with one key changed */
    t->cfg.aggregator.max_staleness = 9;
    fm_model_init(t->model, 6);
    s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    assert_int_equal(agg_state_config_diff(saved_text, &t->cfg, "test"), 1);
    assert_int_equal(agg_state_resume(s, t->model, t->opt, &rec, &e), 0);
    assert_int_equal(rec.version, 7);
    assert_int_equal(rec.round, 3);
    assert_int_equal(rec.counters.applied, 12);
    assert_int_equal(rec.counters.rejected_total, 9);
    assert_int_equal(rec.counters.rejected[AGG_REJ_STALE], 2);
    assert_int_equal(rec.counters.rejected[AGG_REJ_NORM], 3);
    assert_int_equal(rec.counters.rejected[AGG_REJ_OVERFLOW], 4);
    assert_int_equal(rec.counters.clipped, 7);
    assert_memory_equal(fm_model_params(t->model), w, np * sizeof *w);
    s_id(id, 1);
    assert_true(agg_idset_contains(agg_state_ids(s), id));
    s_id(id, 2);
    assert_true(agg_idset_contains(agg_state_ids(s), id));
    s_id(id, 3); /* was in the open buffer: not in the model, not remembered */
    assert_false(agg_idset_contains(agg_state_ids(s), id));
    agg_state_destroy(&s);

    /* another model in the same directory is refused */
    fm_model_t *mlp = fm_model_new("mlp", &err);
    assert_non_null(mlp);
    s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    e.msg[0] = '\0';
    assert_int_equal(agg_state_resume(s, mlp, t->opt, &rec, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "use another checkpoint_dir"));
    agg_state_destroy(&s);
    fm_model_destroy(&mlp);
    free(saved_text);
    free(w);
}

/* Flip a parameter byte of the record of `version` through LMDB directly (CRC mismatch). */
static void s_corrupt(const char *dir, uint64_t version)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = (uint8_t)(version >> (56 - 8 * i));
    MDB_val k = {8, kb}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "ckpt", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t *buf = malloc(v.mv_size);
    assert_non_null(buf);
    memcpy(buf, v.mv_data, v.mv_size);
    buf[FM_CKPT_HEADER_BYTES + 5] ^= 0x20;
    v.mv_data = buf;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(buf);
}

static void test_fallback_one_record(void **state)
{
    s_t *t = *state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    size_t np = fm_model_nparams(t->model);
    float *w[4];
    agg_state_t *s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    uint8_t id[FM_WIRE_ID_LEN];
    /* version v: its own params, 2v ids applied, round 10v */
    for (uint64_t v = 1; v <= 3; v++) {
        fm_model_init(t->model, 100 + v);
        w[v] = malloc(np * sizeof *w[v]);
        assert_non_null(w[v]);
        memcpy(w[v], fm_model_params(t->model), np * sizeof *w[v]);
        for (uint8_t k = (uint8_t)(2 * v - 1); k <= 2 * v; k++) {
            s_id(id, k);
            agg_idset_add(agg_state_ids(s), id);
        }
        agg_record_t rec = {.version = v, .round = 10 * v};
        rec.counters.applied = 2 * v;
        rec.counters.rejected[AGG_REJ_STALE] = v;
        rec.counters.rejected_total = v;
        assert_int_equal(agg_state_save(s, t->model, t->opt, &rec, 0, "test"), 0);
    }
    agg_state_destroy(&s);
    s_corrupt(t->cfg.aggregator.checkpoint_dir, 3);

    /* the resume is record 2, whole: not record 2's params under number 3 with 3's ids */
    fm_model_init(t->model, 7);
    s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    agg_record_t rec;
    assert_int_equal(agg_state_resume(s, t->model, t->opt, &rec, &e), 0);
    assert_int_equal(rec.version, 2);
    assert_int_equal(rec.round, 20);
    assert_int_equal(rec.counters.applied, 4);
    assert_int_equal(rec.counters.rejected_total, 2);
    assert_int_equal(rec.counters.rejected[AGG_REJ_STALE], 2);
    assert_memory_equal(fm_model_params(t->model), w[2], np * sizeof *w[2]);
    assert_int_equal(agg_idset_count(agg_state_ids(s)), 4);
    for (uint8_t k = 1; k <= 6; k++) {
        s_id(id, k);
        assert_int_equal(agg_idset_contains(agg_state_ids(s), id), k <= 4);
    }
    /* number 3 is lost: updates based on it are future, and the next version is 4 */
    uint64_t first = 0, last = 0;
    assert_int_equal(agg_state_lost(s, &first, &last), 1);
    assert_int_equal(first, 3);
    assert_int_equal(last, 3);
    assert_int_equal(agg_state_next_version(s, 2), 4);
    assert_int_equal(agg_state_checkpoint_version(s), 2);
    /* a stop before a new version: version 2 is not written again (it is saved) */
    assert_int_equal(agg_state_save(s, t->model, t->opt, &rec, 0, AGG_STATE_SHUTDOWN), 0);
    assert_int_equal(agg_state_checkpoint_failures(s), 0);
    /* version 4 carries the lost range to the next resume */
    rec.version = agg_state_next_version(s, rec.version);
    rec.counters.applied = 5;
    s_id(id, 9);
    agg_idset_add(agg_state_ids(s), id);
    assert_int_equal(agg_state_save(s, t->model, t->opt, &rec, 0, "test"), 0);
    agg_state_destroy(&s);
    s = agg_state_new(&t->cfg, 16, &err, &e);
    assert_non_null(s);
    assert_int_equal(agg_state_resume(s, t->model, t->opt, &rec, &e), 0);
    assert_int_equal(rec.version, 4);
    assert_int_equal(rec.counters.applied, 5);
    assert_int_equal(agg_idset_count(agg_state_ids(s)), 5);
    assert_int_equal(agg_state_lost(s, &first, &last), 1);
    assert_int_equal(first, 3);
    assert_int_equal(last, 3);
    assert_int_equal(agg_state_next_version(s, 4), 5);
    agg_state_destroy(&s);
    for (int v = 1; v <= 3; v++)
        free(w[v]);
}

int main(void)
{
    fm_log_init("aggregator_state_test", LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_diff),
        cmocka_unit_test_setup_teardown(test_canonical_text, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_save_resume, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fallback_one_record, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
