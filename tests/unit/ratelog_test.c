/* Unit tests of fm_ratelog: the decision (burst per window, the suppressed count carried to
 * the next written line, window restart, a clock that goes back) with synthetic times, and
 * the written lines themselves (stderr captured in a file): the " (+K suppressed)" suffix,
 * and lines below the log threshold neither written nor counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fm_log.h"
#include "fm_ratelog.h"

/* FM_RATELOG_BURST lines pass in a window, the rest are counted; the next window's first
 * line reports them, and only once. */
static void test_admit_burst_and_window(void **state)
{
    (void)state;
    fm_ratelog_t r = {0};
    for (int i = 0; i < FM_RATELOG_BURST; i++)
        assert_int_equal(fm_ratelog_admit(&r, 100.0 + i * 0.01), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fm_ratelog_admit(&r, 100.5 + i), -1);
    /* still inside the window (it started at 100.0) */
    assert_int_equal(fm_ratelog_admit(&r, 100.0 + FM_RATELOG_WINDOW_S - 0.001), -1);
    /* a new window: the 6 suppressed lines are reported by the first line, then 0 */
    assert_int_equal(fm_ratelog_admit(&r, 100.0 + FM_RATELOG_WINDOW_S), 6);
    assert_int_equal(fm_ratelog_admit(&r, 100.0 + FM_RATELOG_WINDOW_S + 0.1), 0);
}

/* Keys are independent: one flooded key does not silence another. */
static void test_admit_keys_independent(void **state)
{
    (void)state;
    fm_ratelog_t a = {0}, b = {0};
    for (int i = 0; i < FM_RATELOG_BURST + 3; i++)
        fm_ratelog_admit(&a, 50.0);
    assert_int_equal(fm_ratelog_admit(&a, 50.0), -1);
    assert_int_equal(fm_ratelog_admit(&b, 50.0), 0);
}

/* A clock reading before the window's start (a caller mixing clocks) restarts the window
 * instead of suppressing for ever. */
static void test_admit_clock_back(void **state)
{
    (void)state;
    fm_ratelog_t r = {0};
    for (int i = 0; i < FM_RATELOG_BURST + 2; i++)
        fm_ratelog_admit(&r, 1000.0);
    assert_int_equal(fm_ratelog_admit(&r, 1000.0), -1);
    assert_int_equal(fm_ratelog_admit(&r, 10.0), 3);
}

/* Count the lines of `path` and copy the last one into last[0..cap). */
static int s_lines(const char *path, char *last, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[2048];
    int n = 0;
    last[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        n++;
        snprintf(last, cap, "%s", line);
    }
    fclose(f);
    return n;
}

/* The real writer: BURST lines, then silence, then a line with the suffix. */
static void test_write_suffix(void **state)
{
    (void)state;
    char path[] = "/tmp/fedmq-ratelog-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) >= 0);
    fm_log_init("ratelog_test", LOG_INFO);

    fm_ratelog_t r = {0};
    int written = 0;
    for (int i = 0; i < FM_RATELOG_BURST + 4; i++)
        written += fm_ratelog(&r, LOG_WARNING, "frame %d rejected", i);
    /* below the threshold: neither written nor counted */
    fm_log_set_level(LOG_WARNING);
    int quiet = fm_ratelog(&r, LOG_INFO, "an info line");
    uint64_t suppressed = r.suppressed;
    fm_log_set_level(LOG_INFO);
    r.window_start -= FM_RATELOG_WINDOW_S; /* the window is over (plain data) */
    written += fm_ratelog(&r, LOG_WARNING, "frame %d rejected", 99);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char last[2048];
    int n = s_lines(path, last, sizeof last);
    unlink(path);
    assert_int_equal(quiet, 0);
    assert_int_equal(suppressed, 4);
    assert_int_equal(written, FM_RATELOG_BURST + 1);
    assert_int_equal(n, FM_RATELOG_BURST + 1);
    assert_non_null(strstr(last, "frame 99 rejected (+4 suppressed)"));
    assert_non_null(strstr(last, "WARN"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admit_burst_and_window),
        cmocka_unit_test(test_admit_keys_independent),
        cmocka_unit_test(test_admit_clock_back),
        cmocka_unit_test(test_write_suffix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
