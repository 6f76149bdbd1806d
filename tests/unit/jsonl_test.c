/* jsonl_test: fm_jsonl, the append-only JSON Lines files of the history: whole lines from
 * concurrent writers (one write(2) per line with O_APPEND), appends across reopenings, the
 * hex form of ids, and one line naming the file when it cannot be opened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "../support/fm_proc.h"
#include "fm_jsonl.h"

#define S_THREADS 4
#define S_LINES 2000

typedef struct {
    fm_jsonl_t *j;
    int t;
} s_arg_t;

static void *s_writer(void *p)
{
    s_arg_t *a = p;
    char pad[300];
    memset(pad, 'a' + a->t, sizeof pad - 1); /* long lines: a torn write would show */
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < S_LINES; i++) {
        json_t *o = json_pack("{s:i, s:i, s:s}", "t", a->t, "i", i, "pad", pad);
        assert_int_equal(fm_jsonl_append(a->j, o), 0);
        json_decref(o);
    }
    return NULL;
}

static void test_concurrent_whole_lines(void **state)
{
    char dir[256], path[300];
    assert_int_equal(fm_proc_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/h.jsonl", dir);
    int err = 0;
    fm_jsonl_t *j = fm_jsonl_open(path, &err, NULL);
    assert_non_null(j);
    assert_string_equal(fm_jsonl_path(j), path);
    pthread_t th[S_THREADS];
    s_arg_t args[S_THREADS];
    for (int t = 0; t < S_THREADS; t++) {
        args[t] = (s_arg_t){j, t};
        assert_int_equal(pthread_create(&th[t], NULL, s_writer, &args[t]), 0);
    }
    for (int t = 0; t < S_THREADS; t++)
        pthread_join(th[t], NULL);
    fm_jsonl_close(&j);
    assert_null(j);
    /* a second opening appends */
    j = fm_jsonl_open(path, &err, NULL);
    assert_non_null(j);
    assert_int_equal(fm_jsonl_put(j, NULL), -ENOMEM); /* a failed json_pack: nothing */
    json_t *o = json_pack("{s:o}", "id",
                          fm_jsonl_id((const uint8_t *)"\x00\x01\xab\xff"
                                                       "0123456789ab"));
    assert_int_equal(fm_jsonl_put(j, o), 0); /* and o is released */
    fm_jsonl_close(&j);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int next[S_THREADS] = {0}, n = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        if (!r)
            fail_msg("line %d is not one JSON object: %s", n + 1, je.text);
        if (n == S_THREADS * S_LINES) {
            assert_string_equal(json_string_value(json_object_get(r, "id")),
                                "0001abff303132333435363738396162");
        } else {
            int t = (int)json_integer_value(json_object_get(r, "t"));
            int i = (int)json_integer_value(json_object_get(r, "i"));
            assert_true(t >= 0 && t < S_THREADS);
            assert_int_equal(i, next[t]); /* each writer's lines in its order */
            next[t]++;
            assert_int_equal(strlen(json_string_value(json_object_get(r, "pad"))), 299);
        }
        json_decref(r);
        n++;
    }
    fclose(f);
    assert_int_equal(n, S_THREADS * S_LINES + 1);
    fm_proc_rmtree(dir);
}

static void test_open_error(void **state)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    assert_null(fm_jsonl_open("/nonexistent-dir/h.jsonl", &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/h.jsonl: cannot open for appending"));
    assert_null(strchr(e.msg, '\n'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_whole_lines),
        cmocka_unit_test(test_open_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
