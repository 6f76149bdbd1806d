/* Unit tests of fm_log's two formats. stderr is redirected to a temp file; with
 * JOURNAL_STREAM naming that file's device and inode (as systemd names the journal's stream)
 * every line is "<N>LEVEL message" with N the syslog priority and no timestamp; without it,
 * with another inode, or with a malformed value the line is today's plain
 * "<ts> prog[pid] LEVEL message". The threshold applies in both, and so does the one-line
 * rule (control bytes). */
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

#include "fm_log.h"

typedef struct {
    char path[256];
    int saved; /* the test's own stderr */
    int fd;    /* the temp file, now stderr */
} s_ctx_t;

static int s_setup(void **state)
{
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(c->path, sizeof c->path, "%s/fedmq-log-test-XXXXXX", tmp);
    c->fd = mkstemp(c->path);
    c->saved = dup(STDERR_FILENO);
    if (c->fd < 0 || c->saved < 0 || dup2(c->fd, STDERR_FILENO) < 0)
        return -1;
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    close(c->fd);
    unlink(c->path);
    unsetenv("JOURNAL_STREAM");
    fm_log_init("fedmq", LOG_INFO);
    free(c);
    return 0;
}

/* JOURNAL_STREAM = "<dev>:<ino>" of the temp file (+ delta on the inode). */
static void s_set_stream(const s_ctx_t *c, long long ino_delta)
{
    struct stat st;
    assert_int_equal(fstat(c->fd, &st), 0);
    char v[64];
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + (unsigned long long)ino_delta);
    assert_int_equal(setenv("JOURNAL_STREAM", v, 1), 0);
}

/* What was written to stderr (the temp file) since the last call. */
static void s_take(const s_ctx_t *c, char *buf, size_t cap)
{
    fflush(stderr);
    FILE *f = fopen(c->path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_int_equal(ftruncate(c->fd, 0), 0);
    assert_int_equal(lseek(STDERR_FILENO, 0, SEEK_SET), 0);
}

/* Stream matches: "<3>ERROR boom", one line per level with its priority, no timestamp; a
 * newline in the message stays inside the line; the threshold still filters. */
static void test_journal(void **state)
{
    s_ctx_t *c = *state;
    char out[4096];
    s_set_stream(c, 0);
    fm_log_init("log-test", LOG_DEBUG);
    assert_int_equal(fm_log_journal(), 1);
    FM_LOG(LOG_ERR, "boom %d", 42);
    s_take(c, out, sizeof out);
    assert_string_equal(out, "<3>ERROR boom 42\n");
    FM_LOG(LOG_WARNING, "w");
    FM_LOG(LOG_NOTICE, "n");
    FM_LOG(LOG_INFO, "i");
    FM_LOG(LOG_DEBUG, "d");
    FM_LOG(LOG_CRIT, "c");
    s_take(c, out, sizeof out);
    assert_string_equal(out, "<4>WARN w\n<5>NOTICE n\n<6>INFO i\n<7>DEBUG d\n<2>CRIT c\n");
    FM_LOG(LOG_ERR, "two\nlines");
    s_take(c, out, sizeof out);
    assert_string_equal(out, "<3>ERROR two lines\n");
    fm_log_set_level(LOG_WARNING);
    FM_LOG(LOG_INFO, "hidden");
    FM_LOG(LOG_WARNING, "shown");
    s_take(c, out, sizeof out);
    assert_string_equal(out, "<4>WARN shown\n");
}

/* The plain line: "<ts>Z log-test[pid] ERROR boom", no "<N>" prefix. */
static void s_assert_plain(const s_ctx_t *c)
{
    char out[4096], want[128];
    fm_log_init("log-test", LOG_DEBUG);
    assert_int_equal(fm_log_journal(), 0);
    FM_LOG(LOG_ERR, "boom");
    s_take(c, out, sizeof out);
    assert_true(out[0] >= '0' && out[0] <= '9'); /* the year */
    int y, mo, d, h, mi, sec, ms, used = 0;
    assert_int_equal(
        sscanf(out, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %n", &y, &mo, &d, &h, &mi, &sec, &ms, &used),
        7);
    snprintf(want, sizeof want, "log-test[%d] ERROR boom\n", (int)getpid());
    assert_string_equal(out + used, want);
}

static void test_plain_unset(void **state)
{
    unsetenv("JOURNAL_STREAM");
    s_assert_plain(*state);
}

/* JOURNAL_STREAM names another stream (stderr was redirected after systemd set it). */
static void test_plain_other_stream(void **state)
{
    s_set_stream(*state, 1);
    s_assert_plain(*state);
}

static void test_plain_malformed(void **state)
{
    static const char *const bad[] = {
        "", "abc", "1:", ":1", "1", "1:2:3", "-1:2", "1: 2", "99999999999999999999999:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(setenv("JOURNAL_STREAM", bad[i], 1), 0);
        s_assert_plain(*state);
    }
}

/* A message is one line in both formats whatever it holds: CR/LF become spaces, other
 * control bytes (ESC, tab, DEL, 0x01) '?', UTF-8 stays; so text from a peer can neither
 * start a forged line nor reach the terminal as an escape sequence. */
static void test_control_bytes(void **state)
{
    s_ctx_t *c = *state;
    char out[4096], want[256];
    const char *msg = "trainer evil\nFORGED-LINE x\r\x1b[31mred\x1b[0m\ttab\x7f\x01 caf\xc3\xa9";
    const char *clean = "trainer evil FORGED-LINE x ?[31mred?[0m?tab?? caf\xc3\xa9";
    s_set_stream(c, 0);
    fm_log_init("log-test", LOG_DEBUG);
    FM_LOG(LOG_WARNING, "%s", msg);
    s_take(c, out, sizeof out);
    snprintf(want, sizeof want, "<4>WARN %s\n", clean);
    assert_string_equal(out, want);
    unsetenv("JOURNAL_STREAM");
    fm_log_init("log-test", LOG_DEBUG);
    FM_LOG(LOG_WARNING, "%s", msg);
    s_take(c, out, sizeof out);
    snprintf(want, sizeof want, "log-test[%d] WARN %s\n", (int)getpid(), clean);
    const char *line = strstr(out, "log-test[");
    assert_non_null(line);
    assert_string_equal(line, want);
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_journal, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_plain_unset, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_plain_other_stream, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_plain_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_control_bytes, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
