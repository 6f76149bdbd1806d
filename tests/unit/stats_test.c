/* Unit tests of fm_stats (stats.json): a round trip of every field, files of an older writer
 * (missing keys, integer booleans, the aggregator's own spacing), every kind of malformed
 * file (FM_EFORMAT naming the path and the key), a missing file (-ENOENT), and the atomic
 * write (no temp file left; a failed write keeps the old file and returns -errno). Expected
 * values are written by hand. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "fm_err.h"
#include "fm_stats.h"

typedef struct {
    char root[256]; /* mkdtemp() directory, removed at the end */
    int serial;     /* for fresh sub-directories */
} ctx_t;

/* ---- helpers ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    if (fm_proc_tmpdir(c->root, sizeof c->root) != 0) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int group_teardown(void **state)
{
    ctx_t *c = *state;
    int rc = fm_proc_rmtree(c->root);
    free(c);
    return rc;
}

/* A fresh, existing, empty directory under the root; its stats.json path into path. */
static void fresh(void **state, char *dir, char *path, size_t cap)
{
    ctx_t *c = *state;
    snprintf(dir, cap, "%s/t%d", c->root, c->serial++);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(fm_stats_path(path, cap, dir), 0);
}

static void put_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The whole file at path into buf (NUL-terminated). */
static void get_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Number of entries in dir other than . and .. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Every field set to a distinct hand-picked value. */
static fm_stats_t full_stats(void)
{
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    snprintf(st.model, sizeof st.model, "cnn");
    snprintf(st.mode, sizeof st.mode, "sync");
    st.version = 4242;
    st.updates_applied = 9000000001ULL; /* above 2^32 */
    st.updates_rejected = 17;
    assert_int_equal(fm_stats_set_rejected(&st, "stale", 5), 0);
    assert_int_equal(fm_stats_set_rejected(&st, "late", 11), 0);
    assert_int_equal(fm_stats_set_rejected(&st, "duplicate", 1), 0);
    assert_int_equal(fm_stats_set_rejected(&st, "samples", 0), 0);
    st.round = 77;
    st.round_open = true;
    st.cohort_size = 12;
    st.round_reported = 9;
    st.rounds_completed = 70;
    st.rounds_failed = 6;
    st.round_declined = 5;
    st.declines = 5000000007ULL;
    st.declines_ignored = 3;
    st.finished = true;
    st.live_clients = 31;
    st.staleness_mean = 2.625;
    st.staleness_max = 19;
    st.bytes_received = 123456789012ULL;
    st.updates_pending = 3;
    st.buffers_dropped = 2;
    st.updates_clipped = 41;
    st.checkpoint_version = 4240;
    st.checkpoint_failures = 6;
    st.stats_write_failures = 8;
    st.started = 1700000000.125;
    st.updated = 1700000123.5;
    st.time.versions = 53;
    st.time.updates = 531;
    st.time.timed = 529;
    st.time.fold_s = 4.25;
    st.time.version_s = 1.375;
    st.time.checkpoint_s = 0.625;
    st.time.train_s = 222.75;
    st.time.wait_s = 0.5;
    st.time.transport_s = 11.125;
    return st;
}

/* Read path expecting FM_EFORMAT with a message naming the path and `key`. */
static void expect_format(const char *path, const char *key)
{
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_read(path, &st, &e);
    if (rc != FM_EFORMAT)
        fail_msg("%s: expected FM_EFORMAT, got %d (%s)", path, rc, e.msg);
    if (!strstr(e.msg, path))
        fail_msg("message does not name the file: %s", e.msg);
    if (key && !strstr(e.msg, key))
        fail_msg("message does not name '%s': %s", key, e.msg);
    assert_int_equal(st.version, 0); /* zeroed on failure */
    assert_int_equal(st.nreasons, 0);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    fm_stats_t in = full_stats();
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_write(path, &in, &e), 0);
    fm_stats_t st;
    memset(&st, 0xAB, sizeof st);
    int rc = fm_stats_read(path, &st, &e);
    if (rc)
        fail_msg("read: %s", e.msg);
    assert_string_equal(st.model, "cnn");
    assert_string_equal(st.mode, "sync");
    assert_int_equal(st.version, 4242);
    assert_true(st.updates_applied == 9000000001ULL);
    assert_int_equal(st.updates_rejected, 17);
    assert_int_equal(st.nreasons, 4);
    assert_string_equal(st.rejected[0].name, "stale"); /* file order */
    assert_int_equal(st.rejected[0].count, 5);
    assert_string_equal(st.rejected[1].name, "late");
    assert_int_equal(st.rejected[1].count, 11);
    assert_string_equal(st.rejected[2].name, "duplicate");
    assert_int_equal(st.rejected[2].count, 1);
    assert_string_equal(st.rejected[3].name, "samples");
    assert_int_equal(st.rejected[3].count, 0);
    assert_int_equal(fm_stats_rejected(&st, "late"), 11);
    assert_int_equal(fm_stats_rejected(&st, "no-such-reason"), 0);
    assert_int_equal(st.round, 77);
    assert_true(st.round_open);
    assert_int_equal(st.cohort_size, 12);
    assert_int_equal(st.round_reported, 9);
    assert_int_equal(st.rounds_completed, 70);
    assert_int_equal(st.rounds_failed, 6);
    assert_int_equal(st.round_declined, 5);
    assert_int_equal(st.declines, 5000000007ULL);
    assert_int_equal(st.declines_ignored, 3);
    assert_true(st.finished);
    assert_int_equal(st.live_clients, 31);
    assert_true(st.staleness_mean == 2.625);
    assert_int_equal(st.staleness_max, 19);
    assert_true(st.bytes_received == 123456789012ULL);
    assert_int_equal(st.updates_pending, 3);
    assert_int_equal(st.buffers_dropped, 2);
    assert_int_equal(st.updates_clipped, 41);
    assert_int_equal(st.checkpoint_version, 4240);
    assert_int_equal(st.checkpoint_failures, 6);
    assert_int_equal(st.stats_write_failures, 8);
    assert_true(st.started == 1700000000.125);
    assert_true(st.updated == 1700000123.5);
    assert_true(st.time.versions == 53 && st.time.updates == 531 && st.time.timed == 529);
    assert_true(st.time.fold_s == 4.25 && st.time.version_s == 1.375 &&
                st.time.checkpoint_s == 0.625 && st.time.train_s == 222.75 &&
                st.time.wait_s == 0.5 && st.time.transport_s == 11.125);

    /* false booleans and empty strings survive too */
    in.round_open = false;
    in.finished = false;
    in.mode[0] = '\0';
    assert_int_equal(fm_stats_write(path, &in, &e), 0);
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    assert_false(st.round_open);
    assert_false(st.finished);
    assert_string_equal(st.mode, "");
    assert_string_equal(st.model, "cnn");
}

/* Every key the writer writes is in the file, with the documented names. */
static void test_written_keys(void **state)
{
    char dir[512], path[512], text[8192];
    fresh(state, dir, path, sizeof dir);
    fm_stats_t in = full_stats();
    assert_int_equal(fm_stats_write(path, &in, NULL), 0);
    get_text(path, text, sizeof text);
    static const char *const keys[] = {"\"version\"",
                                       "\"updates_applied\"",
                                       "\"updates_rejected\"",
                                       "\"rejected\"",
                                       "\"mode\"",
                                       "\"round\"",
                                       "\"round_open\"",
                                       "\"cohort_size\"",
                                       "\"round_reported\"",
                                       "\"rounds_completed\"",
                                       "\"rounds_failed\"",
                                       "\"round_declined\"",
                                       "\"declines\"",
                                       "\"declines_ignored\"",
                                       "\"finished\"",
                                       "\"live_clients\"",
                                       "\"staleness_mean\"",
                                       "\"staleness_max\"",
                                       "\"bytes_received\"",
                                       "\"updates_pending\"",
                                       "\"buffers_dropped\"",
                                       "\"updates_clipped\"",
                                       "\"checkpoint_version\"",
                                       "\"checkpoint_failures\"",
                                       "\"stats_write_failures\"",
                                       "\"model\"",
                                       "\"started\"",
                                       "\"updated\"",
                                       "\"time\"",
                                       "\"fold_s\"",
                                       "\"transport_s\"",
                                       "\"late\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strstr(text, keys[i]))
            fail_msg("key %s not written: %s", keys[i], text);
    assert_int_equal(text[strlen(text) - 1], '\n');
}

/* An older writer: keys missing (they read as 0 / empty), integer booleans, its spacing. */
static void test_older_file(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    put_text(path, "{\"version\": 7, \"updates_applied\": 5, \"updates_rejected\": 2, "
                   "\"rejected\": {\"stale\": 0, \"late\": 2}, \"mode\": \"async\", "
                   "\"round\": 0, \"round_open\": 1, \"finished\": false, "
                   "\"staleness_mean\": 1.5, \"model\": \"mlp\", \"started\": 1700000000}\n");
    fm_stats_t st;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_read(path, &st, &e);
    if (rc)
        fail_msg("read: %s", e.msg);
    assert_int_equal(st.version, 7);
    assert_int_equal(st.updates_applied, 5);
    assert_int_equal(st.updates_rejected, 2);
    assert_int_equal(st.nreasons, 2);
    assert_int_equal(fm_stats_rejected(&st, "late"), 2);
    assert_int_equal(fm_stats_rejected(&st, "stale"), 0);
    assert_string_equal(st.mode, "async");
    assert_string_equal(st.model, "mlp");
    assert_true(st.round_open);
    assert_false(st.finished);
    assert_true(st.staleness_mean == 1.5);
    assert_true(st.started == 1700000000.0);
    /* absent keys */
    assert_int_equal(st.cohort_size, 0);
    assert_int_equal(st.round_reported, 0);
    assert_int_equal(st.rounds_completed, 0);
    assert_int_equal(st.rounds_failed, 0);
    assert_int_equal(st.live_clients, 0);
    assert_int_equal(st.staleness_max, 0);
    assert_int_equal(st.bytes_received, 0);
    assert_int_equal(st.updates_pending, 0);
    assert_int_equal(st.buffers_dropped, 0);
    assert_true(st.updated == 0.0);
    assert_true(st.time.versions == 0 && st.time.train_s == 0.0); /* before "time" existed */

    /* the oldest possible file: an empty object; unknown keys are ignored */
    put_text(path, "{\"future_key\": [1, {\"x\": null}]}");
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    assert_int_equal(st.version, 0);
    assert_int_equal(st.nreasons, 0);
    assert_string_equal(st.model, "");
    assert_false(st.finished);
}

static void test_malformed(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    put_text(path, "{\"version\": 3,");
    expect_format(path, NULL);
    put_text(path, "");
    expect_format(path, NULL);
    put_text(path, "{\"version\": 3} trailing");
    expect_format(path, NULL);
    put_text(path, "[1, 2, 3]");
    expect_format(path, "not a JSON object");
    put_text(path, "42"); /* jansson refuses a bare scalar at the top */
    expect_format(path, NULL);
}

static void test_wrong_types(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    put_text(path, "{\"version\": \"7\"}");
    expect_format(path, "\"version\"");
    put_text(path, "{\"version\": 1.5}");
    expect_format(path, "\"version\"");
    put_text(path, "{\"finished\": \"yes\"}");
    expect_format(path, "\"finished\"");
    put_text(path, "{\"staleness_mean\": null}");
    expect_format(path, "\"staleness_mean\"");
    put_text(path, "{\"mode\": 3}");
    expect_format(path, "\"mode\"");
    put_text(path, "{\"model\": \"a-model-name-far-longer-than-31-bytes\"}");
    expect_format(path, "\"model\"");
    put_text(path, "{\"rejected\": [1, 2]}");
    expect_format(path, "\"rejected\"");
    put_text(path, "{\"rejected\": {\"late\": true}}");
    expect_format(path, "\"late\"");
    put_text(path, "{\"live_clients\": 4294967296}"); /* above uint32 */
    expect_format(path, "\"live_clients\"");
    put_text(path, "{\"time\": [1]}");
    expect_format(path, "\"time\"");
    put_text(path, "{\"time\": {\"versions\": 2, \"train_s\": \"1.5\"}}");
    expect_format(path, "\"train_s\"");
    put_text(path, "{\"time\": {\"timed\": -1}}");
    expect_format(path, "\"timed\"");
}

static void test_negative(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    put_text(path, "{\"updates_applied\": -1}");
    expect_format(path, "\"updates_applied\"");
    put_text(path, "{\"cohort_size\": -3}");
    expect_format(path, "\"cohort_size\"");
    put_text(path, "{\"rejected\": {\"stale\": 1, \"late\": -2}}");
    expect_format(path, "\"late\"");
}

static void test_duplicate_keys(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    put_text(path, "{\"version\": 1, \"updates_applied\": 2, \"version\": 3}");
    expect_format(path, "version");
    put_text(path, "{\"rejected\": {\"late\": 1, \"late\": 2}}");
    expect_format(path, "late");
}

static void test_too_many_reasons(void **state)
{
    char dir[512], path[512], text[4096];
    fresh(state, dir, path, sizeof dir);
    size_t off = (size_t)snprintf(text, sizeof text, "{\"rejected\": {");
    for (int i = 0; i <= FM_STATS_REASONS_MAX; i++)
        off += (size_t)snprintf(text + off, sizeof text - off, "%s\"r%d\": %d", i ? ", " : "", i,
                                i);
    snprintf(text + off, sizeof text - off, "}}");
    put_text(path, text);
    expect_format(path, "\"rejected\"");

    /* the setter refuses the same, and a name that does not fit */
    fm_stats_t st;
    memset(&st, 0, sizeof st);
    for (int i = 0; i < FM_STATS_REASONS_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", i);
        assert_int_equal(fm_stats_set_rejected(&st, name, (uint64_t)i), 0);
    }
    assert_int_equal(fm_stats_set_rejected(&st, "one-more", 1), FM_ERANGE);
    assert_int_equal(fm_stats_set_rejected(&st, "r3", 30), 0); /* existing: updated */
    assert_int_equal(fm_stats_rejected(&st, "r3"), 30);
    memset(&st, 0, sizeof st);
    assert_int_equal(fm_stats_set_rejected(&st, "a-reason-name-of-exactly-32-byte", 1),
                     FM_ERANGE);
    assert_int_equal(st.nreasons, 0);
}

static void test_missing_file(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    fm_stats_t st;
    memset(&st, 0xAB, sizeof st);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_read(path, &st, &e), -ENOENT);
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(st.version, 0);
    assert_int_equal(fm_stats_read(path, &st, NULL), -ENOENT); /* e may be NULL */
}

static void test_atomic_write(void **state)
{
    char dir[512], path[512], tmp[600];
    fresh(state, dir, path, sizeof dir);
    fm_stats_t in = full_stats();
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_write(path, &in, &e), 0);
    assert_int_equal(entries(dir), 2); /* stats.json and its spare: the temp file is gone */

    /* the temp file cannot be created (its name is taken by a folder): -errno, the old
     * file is intact, and the message names the temp path */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(mkdir(tmp, 0755), 0);
    fm_stats_t other = in;
    other.version = 9999;
    int rc = fm_stats_write(path, &other, &e);
    assert_int_equal(rc, -EISDIR);
    assert_non_null(strstr(e.msg, tmp));
    fm_stats_t st;
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    assert_int_equal(st.version, 4242);
    assert_int_equal(rmdir(tmp), 0);

    /* the rename fails (stats.json is a non-empty folder): -errno, no temp file left */
    char dir2[512], path2[512], inner[600];
    fresh(state, dir2, path2, sizeof dir2);
    assert_int_equal(mkdir(path2, 0755), 0);
    snprintf(inner, sizeof inner, "%s/keep", path2);
    put_text(inner, "x");
    rc = fm_stats_write(path2, &in, &e);
    assert_true(rc == -EISDIR || rc == -ENOTEMPTY || rc == -EEXIST);
    assert_non_null(strstr(e.msg, path2));
    assert_int_equal(entries(dir2), 1); /* the folder only */

    /* a folder that does not exist */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-dir/stats.json", dir);
    assert_int_equal(fm_stats_write(missing, &in, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no-such-dir"));
}

/* A number JSON cannot hold is refused by name, and the old file stays. */
static void test_nonfinite(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    fm_stats_t in = full_stats();
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_stats_write(path, &in, &e), 0);
    fm_stats_t bad = in;
    bad.version = 1;
    bad.staleness_mean = NAN;
    assert_int_equal(fm_stats_write(path, &bad, &e), FM_ENONFINITE);
    assert_non_null(strstr(e.msg, "staleness_mean"));
    assert_int_equal(entries(dir), 2); /* stats.json and its spare */
    fm_stats_t st;
    assert_int_equal(fm_stats_read(path, &st, &e), 0);
    assert_int_equal(st.version, 4242);
    bad = in;
    bad.time.transport_s = INFINITY;
    assert_int_equal(fm_stats_write(path, &bad, &e), FM_ENONFINITE);
    assert_non_null(strstr(e.msg, "time.transport_s"));
}

static void test_too_large(void **state)
{
    char dir[512], path[512];
    fresh(state, dir, path, sizeof dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"version\": 1, \"pad\": \"", f);
    for (int i = 0; i < (1 << 20); i++)
        fputc('x', f);
    fputs("\"}", f);
    assert_int_equal(fclose(f), 0);
    expect_format(path, "larger than");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_written_keys),
        cmocka_unit_test(test_older_file),     cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_wrong_types),    cmocka_unit_test(test_negative),
        cmocka_unit_test(test_duplicate_keys), cmocka_unit_test(test_too_many_reasons),
        cmocka_unit_test(test_missing_file),   cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_nonfinite),      cmocka_unit_test(test_too_large),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
