/* parse_test: strict number parsing (shared/base/fm_parse.c). The rules of fm_parse.h: the
 * whole string is the number, decimal only for integers, inclusive [lo, hi] ranges, finite
 * floats, no wrap-around on overflow; a failure returns FM_EARG, leaves *out alone and puts
 * one line in `e` naming the flag or key. Expected values are the literals themselves. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fm_parse.h"

#define S_UNTOUCHED 0x5a5a

/* fm_parse_int(text) in [lo, hi] fails with FM_EARG, *out untouched, and the message names
 * `--what` and a one-line reason. */
static void s_int_bad(const char *text, long lo, long hi)
{
    long v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    if (fm_parse_int("--what", text, lo, hi, &v, &e) != FM_EARG)
        fail_msg("fm_parse_int accepted '%s'", text ? text : "(null)");
    assert_int_equal(v, S_UNTOUCHED);
    assert_non_null(strstr(e.msg, "--what"));
    assert_null(strchr(e.msg, '\n')); /* one line, whatever the text */
}

static long s_int_ok(const char *text, long lo, long hi)
{
    long v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    int rc = fm_parse_int("--what", text, lo, hi, &v, &e);
    if (rc != 0)
        fail_msg("fm_parse_int rejected '%s': %s", text, e.msg);
    return v;
}

static void s_u64_bad(const char *text)
{
    uint64_t v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    if (fm_parse_u64("--what", text, &v, &e) != FM_EARG)
        fail_msg("fm_parse_u64 accepted '%s' (as %llu)", text ? text : "(null)",
                 (unsigned long long)v);
    assert_true(v == S_UNTOUCHED);
    assert_non_null(strstr(e.msg, "--what"));
    assert_null(strchr(e.msg, '\n')); /* one line, whatever the text */
}

static uint64_t s_u64_ok(const char *text)
{
    uint64_t v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    if (fm_parse_u64("--what", text, &v, &e) != 0)
        fail_msg("fm_parse_u64 rejected '%s': %s", text, e.msg);
    return v;
}

static void s_float_bad(const char *text, double lo, double hi)
{
    double v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    if (fm_parse_float("--what", text, lo, hi, &v, &e) != FM_EARG)
        fail_msg("fm_parse_float accepted '%s' (as %g)", text ? text : "(null)", v);
    assert_true(v == S_UNTOUCHED);
    assert_non_null(strstr(e.msg, "--what"));
    assert_null(strchr(e.msg, '\n')); /* one line, whatever the text */
}

static double s_float_ok(const char *text, double lo, double hi)
{
    double v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    if (fm_parse_float("--what", text, lo, hi, &v, &e) != 0)
        fail_msg("fm_parse_float rejected '%s': %s", text, e.msg);
    return v;
}

/* ---- strictness shared by all three ------------------------------------------------------- */

static void test_strict_forms(void **state)
{
    /* leading white space (strto* would skip it), hex, and the message stays one line */
    const char *bad[] = {" 42", "\t42", "\n42", "0x10", "0X10", "42\n", "4\r2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_int_bad(bad[i], LONG_MIN, LONG_MAX);
        s_u64_bad(bad[i]);
        s_float_bad(bad[i], -HUGE_VAL, HUGE_VAL);
    }
    s_float_bad("0x1p3", -HUGE_VAL, HUGE_VAL); /* hex float */
    s_int_bad("1.0", LONG_MIN, LONG_MAX);
    s_u64_bad("1.0");
    /* a float that underflows is its nearest value, not an error */
    assert_true(s_float_ok("1e-310", 0, 1) > 0 && s_float_ok("1e-310", 0, 1) < 1e-300);
    assert_true(s_float_ok("-1e-400", -1, 1) == 0);
    assert_true(s_float_ok(".5", 0, 1) == 0.5);
    /* a long text is cut in the message */
    char longtext[300];
    memset(longtext, '7', sizeof longtext - 2);
    longtext[sizeof longtext - 2] = 'x';
    longtext[sizeof longtext - 1] = '\0';
    fm_errmsg_t e = {{0}};
    long v;
    assert_int_equal(fm_parse_int("--what", longtext, 0, 1, &v, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "..."));
    assert_true(strlen(e.msg) < 120);
}

/* ---- fm_parse_int ------------------------------------------------------------------------- */

static void test_int_valid(void **state)
{
    assert_int_equal(s_int_ok("0", -10, 10), 0);
    assert_int_equal(s_int_ok("7", -10, 10), 7);
    assert_int_equal(s_int_ok("-7", -10, 10), -7);
    assert_int_equal(s_int_ok("+7", -10, 10), 7);
    assert_int_equal(s_int_ok("-0", -10, 10), 0);
    assert_int_equal(s_int_ok("007", -10, 10), 7); /* decimal, not octal */
    assert_int_equal(s_int_ok("010", 0, 100), 10);
    assert_int_equal(s_int_ok("123456789", 0, LONG_MAX), 123456789);
    /* the extremes of long */
    char buf[64];
    snprintf(buf, sizeof buf, "%ld", LONG_MAX);
    assert_true(s_int_ok(buf, LONG_MIN, LONG_MAX) == LONG_MAX);
    snprintf(buf, sizeof buf, "%ld", LONG_MIN);
    assert_true(s_int_ok(buf, LONG_MIN, LONG_MAX) == LONG_MIN);
}

static void test_int_range(void **state)
{
    /* inclusive at both ends */
    assert_int_equal(s_int_ok("1", 1, 10), 1);
    assert_int_equal(s_int_ok("10", 1, 10), 10);
    s_int_bad("0", 1, 10);
    s_int_bad("11", 1, 10);
    s_int_bad("-1", 1, 10);
    assert_int_equal(s_int_ok("5", 5, 5), 5);
    s_int_bad("4", 5, 5);
    s_int_bad("6", 5, 5);
    /* the out-of-range message names the value and the range */
    long v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_parse_int("--epochs", "100001", 1, 100000, &v, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "--epochs"));
    assert_non_null(strstr(e.msg, "100001"));
    assert_non_null(strstr(e.msg, "[1, 100000]"));
    /* e may be NULL */
    assert_int_equal(fm_parse_int("--epochs", "0", 1, 100000, &v, NULL), FM_EARG);
    assert_int_equal(v, S_UNTOUCHED);
}

static void test_int_malformed(void **state)
{
    const char *bad[] = {
        "", /* empty */
        " ",
        "\t", /* whitespace only */
        "12 ",
        "12\n",
        "12\t", /* trailing whitespace: the whole string must be consumed */
        "12abc",
        "1.5",
        "1e3",
        "1,000",
        "1_000",
        "12-",
        "abc",
        "-",
        "+",
        "--1",
        "+-1",
        "-+1",
        "0x10",
        "0X1f",
        "0b1", /* decimal only */
        "1 2",
        "9223372036854775808",  /* LONG_MAX + 1: overflow, not wrapped */
        "-9223372036854775809", /* LONG_MIN - 1 */
        "99999999999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        s_int_bad(bad[i], LONG_MIN, LONG_MAX);
    s_int_bad(NULL, LONG_MIN, LONG_MAX);
    /* the message names the text */
    long v;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_parse_int("batch", "12abc", 1, 10, &v, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "batch"));
    assert_non_null(strstr(e.msg, "12abc"));
}

/* ---- fm_parse_u64 ------------------------------------------------------------------------- */

static void test_u64_valid(void **state)
{
    assert_true(s_u64_ok("0") == 0);
    assert_true(s_u64_ok("42") == 42);
    assert_true(s_u64_ok("+42") == 42);
    assert_true(s_u64_ok("0042") == 42);
    assert_true(s_u64_ok("4294967296") == 4294967296ull); /* above 32 bits */
    assert_true(s_u64_ok("18446744073709551615") == UINT64_MAX);
}

static void test_u64_malformed(void **state)
{
    const char *bad[] = {
        "",
        " ",
        "42 ",
        "42x",
        "4.2",
        "1e3",
        "x42",
        "0x10", /* decimal only */
        "-1",
        "-0",
        "--1",
        "+-1",                  /* no sign but '+' */
        "18446744073709551616", /* UINT64_MAX + 1: overflow, not wrapped */
        "99999999999999999999999",
        /* strtoull skips leading white space and then negates a '-': these must not wrap
         * to 2^64 - 1 (or 2^64 - 5) either */
        " -1",
        "\t-5",
        "\n-1",
        "  -18446744073709551615",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        s_u64_bad(bad[i]);
    s_u64_bad(NULL);
    uint64_t v;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_parse_u64("--seed", "-3", &v, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "--seed"));
    assert_non_null(strstr(e.msg, "-3"));
    assert_int_equal(fm_parse_u64("--seed", "", &v, NULL), FM_EARG);
}

/* ---- fm_parse_float ----------------------------------------------------------------------- */

static void test_float_valid(void **state)
{
    assert_true(s_float_ok("0.5", 0.0, 1.0) == 0.5);
    assert_true(s_float_ok(".5", 0.0, 1.0) == 0.5);
    assert_true(s_float_ok("5.", 0.0, 10.0) == 5.0);
    assert_true(s_float_ok("3", 0.0, 10.0) == 3.0);
    assert_true(s_float_ok("+2.25", 0.0, 10.0) == 2.25);
    assert_true(s_float_ok("-2.25", -10.0, 10.0) == -2.25);
    assert_true(s_float_ok("1e-3", 0.0, 1.0) == 1e-3);
    assert_true(s_float_ok("2.5E2", 0.0, 1e3) == 250.0);
    assert_true(s_float_ok("1e308", 0.0, DBL_MAX) == 1e308);
    assert_true(s_float_ok("-1e308", -DBL_MAX, 0.0) == -1e308);
    /* "-0" is zero: inside [0, 1] */
    double z = s_float_ok("-0", 0.0, 1.0);
    assert_true(z == 0.0);
}

static void test_float_range(void **state)
{
    /* inclusive at both ends */
    assert_true(s_float_ok("0", 0.0, 1.0) == 0.0);
    assert_true(s_float_ok("1", 0.0, 1.0) == 1.0);
    assert_true(s_float_ok("1.0", 0.0, 1.0) == 1.0);
    assert_true(s_float_ok("0.999999", 0.0, 0.999999) == 0.999999);
    s_float_bad("1.0000001", 0.0, 1.0);
    s_float_bad("-0.0000001", 0.0, 1.0);
    s_float_bad("1e-13", 1e-12, 1e3);
    s_float_bad("1001", 1e-12, 1e3);
    /* an unbounded range still rejects what is not finite (fm_cfg passes +-HUGE_VAL) */
    assert_true(s_float_ok("-12.5", -HUGE_VAL, HUGE_VAL) == -12.5);
    double v = S_UNTOUCHED;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_parse_float("--lr", "2000", 1e-12, 1e3, &v, &e), FM_EARG);
    assert_true(v == S_UNTOUCHED);
    assert_non_null(strstr(e.msg, "--lr"));
    assert_non_null(strstr(e.msg, "2000"));
    assert_non_null(strstr(e.msg, "1000"));
}

static void test_float_malformed(void **state)
{
    const char *bad[] = {
        "", " ", "0.5 ", "0.5\n", "0.5x", "0,5", "1e", "1e+", "e3", ".", "-", "+", "1..2",
        "0.5.1", "--1", "1 2",
        /* not finite, whatever the range */
        "nan", "NaN", "-nan", "nan(123)", "inf", "-inf", "Infinity", "INF", "1e309", "-1e309",
        "1e99999", /* overflow to infinity */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        s_float_bad(bad[i], -HUGE_VAL, HUGE_VAL);
    s_float_bad(NULL, -HUGE_VAL, HUGE_VAL);
    double v;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_parse_float("sim.dropout", "nan", 0.0, 1.0, &v, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "sim.dropout"));
    assert_non_null(strstr(e.msg, "nan"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict_forms),    cmocka_unit_test(test_int_valid),
        cmocka_unit_test(test_int_range),       cmocka_unit_test(test_int_malformed),
        cmocka_unit_test(test_u64_valid),       cmocka_unit_test(test_u64_malformed),
        cmocka_unit_test(test_float_valid),     cmocka_unit_test(test_float_range),
        cmocka_unit_test(test_float_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
