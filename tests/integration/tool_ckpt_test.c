/* fedmq checkpoints / fedmq export against a real LMDB checkpoint directory, healthy and
 * damaged (a corrupt record, a truncated or emptied data.mdb: --verify, --reset, exit codes;
 * never a signal), and with the records of a custom model spec (export --spec). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <lmdb.h>
#include <unistd.h>

#include "../support/fm_proc.h"
#include "../support/fm_sys.h"
#include "fm_ckpt.h"
#include "fm_model.h"
#include "fm_safetensors.h"

#define FEDMQ FM_BIN_DIR "/fedmq"

/* Run the tool with argv, output to log; return its exit code (-1 on a hang or signal). */
static int s_run(char *const argv[], const char *log)
{
    fm_proc_set_t set = {0};
    pid_t pid = fm_proc_spawn(&set, argv, log);
    if (pid < 0)
        return -1;
    int st = fm_proc_wait(pid, 60.0);
    fm_proc_reap_all(&set);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_list_and_export(void **state)
{
    (void)state;
    char dir[512], ckdir[600], log[600], out[600], out2[600];
    assert_int_equal(fm_proc_tmpdir(dir, sizeof dir), 0);
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    snprintf(out, sizeof out, "%s/v3.safetensors", dir);
    snprintf(out2, sizeof out2, "%s/v2.safetensors", dir);

    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_model_t *m = fm_model_new("mlp", &err), *back = fm_model_new("mlp", &err);
    assert_non_null(m);
    assert_non_null(back);
    fm_ckpt_t *c = fm_ckpt_open(ckdir, 0, &err, &e);
    assert_non_null(c);
    float *v2 = malloc(sizeof(float) * fm_model_nparams(m));
    for (uint64_t v = 1; v <= 3; v++) {
        fm_model_init(m, v);
        if (v == 2)
            memcpy(v2, fm_model_params(m), sizeof(float) * fm_model_nparams(m));
        fm_ckpt_info_t info;
        memset(&info, 0, sizeof info);
        snprintf(info.model, sizeof info.model, "mlp");
        info.nparams = fm_model_nparams(m);
        info.version = v;
        info.updates_applied = 10 * v;
        info.score = NAN;
        assert_int_equal(fm_ckpt_save(c, &info, fm_model_params(m), NULL, NULL, 0, &e), 0);
    }
    fm_ckpt_close(&c);

    char *list[] = {FEDMQ, "checkpoints", ckdir, NULL};
    assert_int_equal(s_run(list, log), 0);
    assert_true(fm_proc_file_contains(log, "3        "));
    assert_true(fm_proc_file_contains(log, "mlp"));

    /* newest by default: bit-identical to what was checkpointed (seed 3) */
    char *exp[] = {FEDMQ, "export", "--checkpoint", ckdir, "--out", out, NULL};
    assert_int_equal(s_run(exp, log), 0);
    assert_int_equal(fm_safetensors_load_model(back, out, &e), 0);
    assert_memory_equal(fm_model_params(back), fm_model_params(m),
                        sizeof(float) * fm_model_nparams(m));
    /* a given version */
    char *exp2[] = {FEDMQ, "export", "--checkpoint", ckdir, "--version",
                    "2",   "--out",  out2,           NULL};
    assert_int_equal(s_run(exp2, log), 0);
    assert_int_equal(fm_safetensors_load_model(back, out2, &e), 0);
    assert_memory_equal(fm_model_params(back), v2, sizeof(float) * fm_model_nparams(m));
    /* bad input: a version that does not exist, a directory without checkpoints */
    char *bad1[] = {FEDMQ, "export", "--checkpoint", ckdir, "--version",
                    "9",   "--out",  out2,           NULL};
    assert_int_equal(s_run(bad1, log), 2);
    assert_true(fm_proc_file_contains(log, "no checkpoint of that version"));
    char *bad2[] = {FEDMQ, "checkpoints", dir, NULL};
    assert_int_equal(s_run(bad2, log), 2);
    assert_true(fm_proc_file_contains(log, "no checkpoints here"));

    free(v2);
    fm_model_destroy(&m);
    fm_model_destroy(&back);
    fm_proc_rmtree(dir);
}

/* A custom model spec: records named by its fingerprint. The list needs no layout (the model
 * column widens to the 15-character name); export needs --spec FILE, whose fingerprint must be
 * the record's, and then writes the checkpointed values under the spec's names. */
static void test_spec(void **state)
{
    (void)state;
    char dir[512], ckdir[600], log[600], spec[600], other[600], out[600];
    assert_int_equal(fm_proc_tmpdir(dir, sizeof dir), 0);
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    snprintf(spec, sizeof spec, "%s/spec.safetensors", dir);
    snprintf(other, sizeof other, "%s/other.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    float w[6 * 2 * 1 * 3] = {0}, b[6] = {0};
    fm_tensor_t t[] = {
        {.name = "conv.weight", .dtype = "F32", .ndim = 4, .shape = {6, 2, 1, 3}, w, sizeof w},
        {.name = "conv.bias", .dtype = "F32", .ndim = 1, .shape = {6}, b, sizeof b},
    };
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(spec, t, 2, NULL, 0, &e), 0);
    t[1].shape[0] = 3; /* another spec: conv.bias [3] */
    t[1].nbytes = 12;
    assert_int_equal(fm_safetensors_write(other, t, 2, NULL, 0, &e), 0);
    int err = 0;
    fm_model_t *m = fm_safetensors_load_spec(spec, &err, &e);
    assert_non_null(m);
    float *p = fm_model_params(m);
    for (size_t i = 0; i < fm_model_nparams(m); i++)
        p[i] = (float)i / 8.0f;
    fm_ckpt_t *c = fm_ckpt_open(ckdir, 0, &err, &e);
    assert_non_null(c);
    fm_ckpt_info_t info;
    memset(&info, 0, sizeof info);
    snprintf(info.model, sizeof info.model, "%s", fm_model_name(m));
    info.nparams = fm_model_nparams(m);
    info.version = 4;
    info.score = NAN;
    assert_int_equal(fm_ckpt_save(c, &info, p, NULL, NULL, 0, &e), 0);
    fm_ckpt_close(&c);

    char *list[] = {FEDMQ, "checkpoints", ckdir, NULL};
    assert_int_equal(s_run(list, log), 0);
    char row[64];
    snprintf(row, sizeof row, " %s ", fm_model_name(m)); /* the whole name, not cut */
    assert_true(fm_proc_file_contains(log, row));
    /* export without the layout: one line saying what to give */
    char *bare[] = {FEDMQ, "export", "--checkpoint", ckdir, "--out", out, NULL};
    unlink(log); /* the tool's output is appended */
    assert_int_equal(s_run(bare, log), 2);
    char want[200];
    snprintf(want, sizeof want,
             "checkpoint holds the custom model %s: give its model spec with "
             "--spec FILE",
             fm_model_name(m));
    assert_true(fm_proc_file_contains(log, want));
    assert_int_equal(fm_proc_file_count(log, ""), 1);
    /* the wrong spec: refused by fingerprint */
    char *wrong[] = {FEDMQ, "export", "--checkpoint", ckdir, "--spec", other, "--out", out, NULL};
    assert_int_equal(s_run(wrong, log), 2);
    assert_true(fm_proc_file_contains(log, "; the checkpoint in"));
    assert_int_equal(access(out, F_OK), -1);
    /* the right one: the checkpointed values, loadable as the same spec */
    char *ok[] = {FEDMQ, "export", "--checkpoint", ckdir, "--spec", spec, "--out", out, NULL};
    assert_int_equal(s_run(ok, log), 0);
    fm_model_t *back = fm_safetensors_load_spec(out, &err, &e);
    assert_non_null(back);
    assert_string_equal(fm_model_name(back), fm_model_name(m));
    assert_memory_equal(fm_model_params(back), p, sizeof(float) * fm_model_nparams(m));
    fm_model_destroy(&back);
    fm_model_destroy(&m);
    fm_proc_rmtree(dir);
}

/* Run the tool with argv, stdout to out and stderr to err; its exit code (a hang or a signal
 * fails the test). */
static int s_run2(char *const argv[], const char *out, const char *err)
{
    fm_proc_set_t set = {0};
    pid_t pid = fm_sys_spawn(&set, argv, out, err);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, 60.0);
    fm_proc_reap_all(&set);
    if (st == -1 || !WIFEXITED(st))
        fail_msg("fedmq %s: %s", argv[1], st == -1 ? "hung" : strsignal(WTERMSIG(st)));
    return WEXITSTATUS(st);
}

/* The file has `lines` lines (-1: any number) and one of them contains needle. */
static void s_said(const char *path, int lines, const char *needle)
{
    char *text = fm_sys_slurp(path);
    assert_non_null(text);
    if ((lines >= 0 && fm_sys_count_lines(text) != lines) || !strstr(text, needle))
        fail_msg("%s: expected %d line(s) with \"%s\", got:\n%s", path, lines, needle, text);
    free(text);
}

/* Versions 1..n of an mlp with their applied-id blobs, as the aggregator writes them. */
static void s_make_store(const char *dir, uint64_t n)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_model_t *m = fm_model_new("mlp", &err);
    assert_non_null(m);
    fm_ckpt_t *c = fm_ckpt_open(dir, 0, &err, &e);
    assert_non_null(c);
    uint8_t ids[4 * FM_CKPT_ID_BYTES];
    for (uint64_t v = 1; v <= n; v++) {
        fm_model_init(m, v);
        for (size_t i = 0; i < sizeof ids; i++)
            ids[i] = (uint8_t)(v * 31 + i / FM_CKPT_ID_BYTES);
        fm_ckpt_extra_t x[] = {{FM_CKPT_IDS_KEY, ids, sizeof ids, 1}};
        fm_ckpt_info_t info;
        memset(&info, 0, sizeof info);
        snprintf(info.model, sizeof info.model, "mlp");
        info.nparams = fm_model_nparams(m);
        info.version = v;
        info.score = NAN;
        assert_int_equal(fm_ckpt_save(c, &info, fm_model_params(m), NULL, x, 1, &e), 0);
    }
    fm_ckpt_close(&c);
    fm_model_destroy(&m);
}

/* Flip one parameter byte of record `version` through LMDB (its CRC no longer matches). */
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
    buf[FM_CKPT_HEADER_BYTES + 9] ^= 0x08;
    v.mv_data = buf;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(buf);
}

static void test_damaged_stores(void **state)
{
    (void)state;
    char dir[512], ck[600], out[600], err[600], data[700], model[600];
    assert_int_equal(fm_proc_tmpdir(dir, sizeof dir), 0);
    snprintf(ck, sizeof ck, "%s/ckpt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(err, sizeof err, "%s/err", dir);
    snprintf(data, sizeof data, "%s/data.mdb", ck);
    snprintf(model, sizeof model, "%s/m.safetensors", dir);
    s_make_store(ck, 6);
    char *list[] = {FEDMQ, "checkpoints", ck, NULL};
    char *verify[] = {FEDMQ, "checkpoints", ck, "--verify", NULL};
    char *reset[] = {FEDMQ, "checkpoints", ck, "--reset", NULL};
    char *exp[] = {FEDMQ, "export", "--checkpoint", ck, "--out", model, NULL};

    /* healthy: verify says so; the listing ends with the high-water mark */
    assert_int_equal(s_run2(verify, out, err), 0);
    s_said(out, 1, "6 record(s), high-water mark 6: 0 problems");
    assert_int_equal(s_run2(list, out, err), 0);
    s_said(out, -1, "high-water mark: version 6 ever saved, the store holds 6");
    char *both[] = {FEDMQ, "checkpoints", ck, "--verify", "--reset", NULL};
    assert_int_equal(s_run2(both, out, err), 2);
    s_said(err, 1, "exclusive");

    /* a corrupt newest record: listed with its status, one line from verify, exit 2 */
    s_corrupt(ck, 6);
    assert_int_equal(s_run2(list, out, err), 0);
    s_said(
        out, -1,
        "6        -                    ?                0          0         -  malformed input");
    assert_int_equal(s_run2(verify, out, err), 2);
    s_said(out, 2, "checkpoint version 6: CRC mismatch");
    s_said(out, 2, "1 problem");
    assert_int_equal(s_run2(exp, out, err), 0); /* the newest valid one: 5 */
    s_said(out, 1, "exported mlp version 5");

    /* truncated: one line naming the file, exit 2, never a signal */
    long long size = 0;
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    size = (long long)st.st_size;
    assert_int_equal(truncate(data, size / 2), 0);
    assert_int_equal(s_run2(list, out, err), 2);
    s_said(err, 1, "data.mdb: truncated: ");
    assert_int_equal(s_run2(verify, out, err), 2);
    s_said(err, 1, "data.mdb: truncated: ");
    assert_int_equal(s_run2(exp, out, err), 2);
    s_said(err, 1, "data.mdb: truncated: ");
    assert_int_equal(s_run2(reset, out, err), 2); /* a person moves it away first */
    s_said(err, 1, "not reset: move data.mdb away or restore a backup first");

    /* emptied: exit 2; the reset accepts it, numbers up to 6 stay used */
    assert_int_equal(truncate(data, 0), 0);
    assert_int_equal(s_run2(list, out, err), 2);
    s_said(err, 1, "data.mdb: empty (0 bytes)");
    assert_int_equal(s_run2(verify, out, err), 2);
    assert_int_equal(s_run2(reset, out, err), 0);
    s_said(out, 1, "new versions start at 7");
    int e2 = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *c = fm_ckpt_open(ck, 0, &e2, &e); /* what the aggregator does next */
    assert_non_null(c);
    assert_int_equal(fm_ckpt_high_water(c), 6);
    fm_ckpt_close(&c);
    assert_int_equal(s_run2(verify, out, err), 0);
    fm_proc_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_list_and_export),
                                       cmocka_unit_test(test_spec),
                                       cmocka_unit_test(test_damaged_stores)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
