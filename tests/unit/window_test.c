/* Unit tests of fm_window with synthetic times: a steady rate, bursts (the case the
 * interval rate got wrong: it alternated between 0 and the peak), a young window, old events
 * sliding out, a long silence, and a clock that goes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include <cmocka.h>

#include "fm_window.h"

/* |a - b| <= tol (cmocka 1.1 has no double assertion) */
#define S_NEAR(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

/* 5 events/s, one every 0.2 s, for 100 s: the rate is 5 once the window is full. */
static void test_steady(void **state)
{
    (void)state;
    fm_window_t w;
    fm_window_init(&w, 30.0, 1000.0);
    S_NEAR(fm_window_span(&w), 30.0, 1e-12);
    for (int i = 1; i <= 500; i++) {
        double now = 1000.0 + i * 0.2;
        fm_window_add(&w, now, 1);
        if (now > 1040.0)
            S_NEAR(fm_window_rate(&w, now), 5.0, 5.0 * 0.05);
    }
}

/* Bursts of 20 every 4 s (5/s on average), sampled every 2 s like `fedmq run`: always within
 * one burst per window of 5/s, never 0 or 10 as the rate over the last 2 s would be. */
static void test_bursts(void **state)
{
    (void)state;
    fm_window_t w;
    fm_window_init(&w, 30.0, 0.0);
    double lo = 1e9, hi = 0;
    for (int i = 1; i <= 60; i++) {
        double now = i * 2.0;
        if (i % 2 == 0)
            fm_window_add(&w, now, 20);
        double r = fm_window_rate(&w, now + 0.5);
        if (now > 40.0) {
            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
        }
    }
    assert_true(lo > 5.0 - 20.0 / 30.0 - 1e-9);
    assert_true(hi < 5.0 + 20.0 / 30.0 + 1e-9);
}

/* A young window divides by its age, not the span: 10 events in the first 2 s are 5/s. */
static void test_young(void **state)
{
    (void)state;
    fm_window_t w;
    fm_window_init(&w, 30.0, 50.0);
    fm_window_add(&w, 50.5, 4);
    fm_window_add(&w, 51.5, 6);
    S_NEAR(fm_window_rate(&w, 52.0), 5.0, 1e-9);
    /* at least one slot: no division by a tiny age */
    fm_window_t y;
    fm_window_init(&y, 30.0, 0.0);
    fm_window_add(&y, 0.001, 1);
    S_NEAR(fm_window_rate(&y, 0.001), 1.0, 1e-9);
}

/* Events slide out: 30 events at t=1, none after; the rate falls to 0 past the span, and a
 * long silence (many spans) empties everything. */
static void test_slide_out(void **state)
{
    (void)state;
    fm_window_t w;
    fm_window_init(&w, 30.0, 0.0);
    fm_window_add(&w, 1.0, 30);
    assert_true(fm_window_rate(&w, 20.0) > 1.0);
    S_NEAR(fm_window_rate(&w, 31.5), 0.0, 0.0);
    fm_window_add(&w, 10000.0, 3);
    /* at a slot's start the window is the 29 full slots before it */
    S_NEAR(fm_window_rate(&w, 10000.0), 3.0 / 29.0, 1e-9);
    assert_int_equal(w.total, 3);
}

/* A clock that goes back counts into the newest slot (nothing lost, nothing negative). */
static void test_clock_back(void **state)
{
    (void)state;
    fm_window_t w;
    fm_window_init(&w, 30.0, 0.0);
    fm_window_add(&w, 40.0, 2);
    fm_window_add(&w, 35.0, 3);
    assert_int_equal(w.total, 5);
    S_NEAR(fm_window_rate(&w, 40.5), 5.0 / 29.5, 1e-9);
    /* a bad span falls back to 30 s */
    fm_window_t b;
    fm_window_init(&b, -1.0, 0.0);
    S_NEAR(fm_window_span(&b), 30.0, 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady),     cmocka_unit_test(test_bursts),
        cmocka_unit_test(test_young),      cmocka_unit_test(test_slide_out),
        cmocka_unit_test(test_clock_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
