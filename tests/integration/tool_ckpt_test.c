/* fedmq checkpoints / fedmq export against a real LMDB checkpoint directory. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_list_and_export)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
