/* metrics_render_test: fm_metrics (registry, values, the text exposition format 0.0.4, written
 * out here by hand) and fm_metrics_proc (the process metrics from /proc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../support/fm_http.h"
#include "fm_metrics.h"
#include "fm_metrics_proc.h"

static char *s_render(fm_metrics_t *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(fm_metrics_render(m, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* Every kind of line, in registration order, against the text written out by hand. */
static void test_exact_text(void **state)
{
    (void)state;
    int err = 0;
    fm_metrics_t *m = fm_metrics_new(&err);
    assert_non_null(m);
    fm_metric_t *rx = fm_metrics_counter(m, "fedmq_updates_received_total", "Frames received.",
                                         NULL);
    fm_metric_t *shape = fm_metrics_counter(m, "fedmq_updates_rejected_total",
                                            "Frames rejected, by reason.",
                                            (const char *[]){"reason", "shape", NULL});
    fm_metric_t *nan = fm_metrics_counter(m, "fedmq_updates_rejected_total",
                                          "Frames rejected, by reason.",
                                          (const char *[]){"reason", "nonfinite", NULL});
    fm_metric_t *ver = fm_metrics_gauge(m, "fedmq_model_version", "Current model version.", NULL);
    static const double b[] = {0, 1, 2.5};
    fm_metric_t *h = fm_metrics_histogram(m, "fedmq_update_staleness",
                                          "Staleness of folded updates.", NULL, b, 3);
    fm_metric_t *esc = fm_metrics_gauge(m, "test_escapes", "back\\slash and\nnewline \"kept\"",
                                        (const char *[]){"path", "a\\b\"c\nd", "z", "", NULL});
    assert_int_equal(fm_metrics_status(m), 0);

    /* the same name and label values: the same series */
    assert_ptr_equal(fm_metrics_counter(m, "fedmq_updates_rejected_total", "ignored",
                                        (const char *[]){"reason", "shape", NULL}),
                     shape);

    fm_metric_inc(rx);
    fm_metric_add(rx, 6);
    fm_metric_inc(shape);
    fm_metric_inc(shape);
    fm_metric_inc(shape);
    fm_metric_set(ver, 42);
    fm_metric_observe(h, 0);
    fm_metric_observe(h, 0);
    fm_metric_observe(h, 1);
    fm_metric_observe(h, 2);
    fm_metric_observe(h, 7);
    fm_metric_set(esc, -0.25);
    (void)nan;

    const char *want = "# HELP fedmq_updates_received_total Frames received.\n"
                       "# TYPE fedmq_updates_received_total counter\n"
                       "fedmq_updates_received_total 7\n"
                       "# HELP fedmq_updates_rejected_total Frames rejected, by reason.\n"
                       "# TYPE fedmq_updates_rejected_total counter\n"
                       "fedmq_updates_rejected_total{reason=\"shape\"} 3\n"
                       "fedmq_updates_rejected_total{reason=\"nonfinite\"} 0\n"
                       "# HELP fedmq_model_version Current model version.\n"
                       "# TYPE fedmq_model_version gauge\n"
                       "fedmq_model_version 42\n"
                       "# HELP fedmq_update_staleness Staleness of folded updates.\n"
                       "# TYPE fedmq_update_staleness histogram\n"
                       "fedmq_update_staleness_bucket{le=\"0\"} 2\n"
                       "fedmq_update_staleness_bucket{le=\"1\"} 3\n"
                       "fedmq_update_staleness_bucket{le=\"2.5\"} 4\n"
                       "fedmq_update_staleness_bucket{le=\"+Inf\"} 5\n"
                       "fedmq_update_staleness_sum 10\n"
                       "fedmq_update_staleness_count 5\n"
                       "# HELP test_escapes back\\\\slash and\\nnewline \"kept\"\n"
                       "# TYPE test_escapes gauge\n"
                       "test_escapes{path=\"a\\\\b\\\"c\\nd\",z=\"\"} -0.25\n";
    char *text = s_render(m);
    assert_string_equal(text, want);
    free(text);
    assert_true(fm_metric_get(h) == 5.0);
    assert_true(fm_metric_get(shape) == 3.0);
    fm_metrics_destroy(&m);
    assert_null(m);
    fm_metrics_destroy(&m); /* idempotent */
}

/* A histogram with labels puts le last; an empty registry renders nothing. */
static void test_histogram_labels_and_empty(void **state)
{
    (void)state;
    fm_metrics_t *m = fm_metrics_new(NULL);
    assert_non_null(m);
    char *text = s_render(m);
    assert_string_equal(text, "");
    free(text);
    static const double b[] = {0.5};
    fm_metric_t *h = fm_metrics_histogram(m, "op_seconds", "Op time.",
                                          (const char *[]){"op", "save", NULL}, b, 1);
    fm_metric_observe(h, 0.25);
    fm_metric_observe(h, NAN); /* +Inf only; the sum becomes NaN */
    text = s_render(m);
    assert_string_equal(text, "# HELP op_seconds Op time.\n"
                              "# TYPE op_seconds histogram\n"
                              "op_seconds_bucket{op=\"save\",le=\"0.5\"} 1\n"
                              "op_seconds_bucket{op=\"save\",le=\"+Inf\"} 2\n"
                              "op_seconds_sum{op=\"save\"} NaN\n"
                              "op_seconds_count{op=\"save\"} 2\n");
    free(text);
    fm_metrics_destroy(&m);
}

/* Values as the format writes them: integers plainly, others shortest round-trip. */
static void test_values(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *s;
    } cases[] = {{0, "0"},
                 {-0.0, "0"},
                 {3, "3"},
                 {-2, "-2"},
                 {0.1, "0.1"},
                 {1.0 / 3, "0.3333333333333333"},
                 {123456789012345.0, "123456789012345"},
                 {1e15, "1e+15"},
                 {1e20, "1e+20"},
                 {1.5e-7, "1.5e-07"},
                 {4096.5, "4096.5"},
                 {1796468089.26, "1796468089.26"}};
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_metrics_format_value(cases[i].v, buf, sizeof buf);
        assert_string_equal(buf, cases[i].s);
        assert_true(strtod(buf, NULL) == cases[i].v);
    }
    fm_metrics_format_value(NAN, buf, sizeof buf);
    assert_string_equal(buf, "NaN");
    fm_metrics_format_value(INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "+Inf");
    fm_metrics_format_value(-INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "-Inf");
}

/* Without a registry: registering gives NULL, updating NULL handles does nothing. */
static void test_null(void **state)
{
    (void)state;
    assert_null(fm_metrics_counter(NULL, "x_total", "x", NULL));
    assert_null(fm_metrics_gauge(NULL, "x", "x", NULL));
    fm_metric_inc(NULL);
    fm_metric_add(NULL, 1);
    fm_metric_set(NULL, 1);
    fm_metric_observe(NULL, 1);
    assert_true(fm_metric_get(NULL) == 0.0);
    assert_int_equal(fm_metrics_status(NULL), 0);
    assert_int_equal(fm_metrics_proc_register(NULL), 0);
    char *text = NULL;
    assert_int_equal(fm_metrics_render(NULL, &text, NULL), 0);
    assert_string_equal(text, "");
    free(text);
}

/* ---- threads: exact totals while another thread renders ------------------------------------ */

#define S_THREADS 4
#define S_ROUNDS 50000

typedef struct {
    fm_metric_t *c, *g, *h;
} s_handles_t;

static void *s_worker(void *arg)
{
    s_handles_t *x = arg;
    for (int i = 0; i < S_ROUNDS; i++) {
        fm_metric_inc(x->c);
        fm_metric_add(x->g, 0.5);
        fm_metric_observe(x->h, i % 3);
    }
    return NULL;
}

static int s_hook_calls;
static void s_hook(void *arg) { fm_metric_set(arg, ++s_hook_calls); }

static void test_threads(void **state)
{
    (void)state;
    fm_metrics_t *m = fm_metrics_new(NULL);
    static const double b[] = {0, 1};
    s_handles_t x = {fm_metrics_counter(m, "steps_total", "Steps.", NULL),
                     fm_metrics_gauge(m, "level", "Level.", NULL),
                     fm_metrics_histogram(m, "obs", "Obs.", NULL, b, 2)};
    fm_metric_t *scrapes = fm_metrics_gauge(m, "scrapes", "Renders.", NULL);
    fm_metrics_on_scrape(m, s_hook, scrapes, NULL);
    pthread_t t[S_THREADS];
    for (int i = 0; i < S_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, s_worker, &x), 0);
    int renders = 0;
    for (; renders < 20; renders++) { /* counts only ever grow, buckets stay consistent */
        char *text = s_render(m);
        double inf = 0, count = -1;
        assert_true(fm_http_sample(text, "obs_bucket{le=\"+Inf\"}", &inf));
        assert_true(fm_http_sample(text, "obs_count", &count));
        assert_true(inf == count);
        free(text);
    }
    for (int i = 0; i < S_THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = s_render(m);
    double v = 0;
    assert_true(fm_http_sample(text, "steps_total", &v) && v == S_THREADS * S_ROUNDS);
    assert_true(fm_http_sample(text, "level", &v) && v == S_THREADS * S_ROUNDS * 0.5);
    assert_true(fm_http_sample(text, "obs_count", &v) && v == S_THREADS * S_ROUNDS);
    /* i % 3: 0, 1, 2 in turn; 0 and 1 fall in their buckets, 2 in +Inf */
    int zeros = (S_ROUNDS + 2) / 3, ones = (S_ROUNDS + 1) / 3;
    assert_true(fm_http_sample(text, "obs_bucket{le=\"0\"}", &v) && v == S_THREADS * zeros);
    assert_true(fm_http_sample(text, "obs_bucket{le=\"1\"}", &v) &&
                v == S_THREADS * (zeros + ones));
    assert_true(fm_http_sample(text, "scrapes", &v) && v == renders + 1);
    free(text);
    fm_metrics_destroy(&m);
}

/* ---- /proc -------------------------------------------------------------------------------- */

static void test_proc_stat_parse(void **state)
{
    (void)state;
    /* a command name with spaces and ")": fields are counted after the last ")" */
    const char *line = "905 (a) b) c) R 903 903 16886 0 -1 4194304 99 0 0 0 17 4 0 0 20 0 1 0 "
                       "1140061 3133440 379 18446744073709551615 94398985105408 0\n";
    fm_proc_stat_t st;
    assert_int_equal(fm_proc_stat_parse(line, &st), 0);
    assert_true(st.utime == 17 && st.stime == 4);
    assert_true(st.starttime == 1140061);
    assert_true(st.vsize == 3133440);
    assert_true(st.rss == 379);
    assert_int_equal(fm_proc_stat_parse("905 (cat) R 1 2 3\n", &st), FM_EFORMAT);
    assert_int_equal(fm_proc_stat_parse("no parenthesis", &st), FM_EFORMAT);
    assert_int_equal(fm_proc_stat_parse(NULL, &st), FM_EFORMAT);
    char bad[256];
    snprintf(bad, sizeof bad, "%s", line);
    memcpy(strstr(bad, "1140061"), "11x0061", 7); /* not a number */
    assert_int_equal(fm_proc_stat_parse(bad, &st), FM_EFORMAT);
}

/* The six process metrics of this very process, within what the system says. */
static void test_process_metrics(void **state)
{
    (void)state;
    fm_metrics_t *m = fm_metrics_new(NULL);
    assert_int_equal(fm_metrics_proc_register(m), 0);
    volatile double burn = 0; /* some CPU time */
    for (int i = 0; i < 20000000; i++)
        burn += i * 1e-9;
    char *text = s_render(m);
    double cpu = 0, rss = 0, vsz = 0, fds = 0, maxfds = 0, start = 0;
    assert_true(fm_http_sample(text, "process_cpu_seconds_total", &cpu));
    assert_true(fm_http_sample(text, "process_resident_memory_bytes", &rss));
    assert_true(fm_http_sample(text, "process_virtual_memory_bytes", &vsz));
    assert_true(fm_http_sample(text, "process_open_fds", &fds));
    assert_true(fm_http_sample(text, "process_max_fds", &maxfds));
    assert_true(fm_http_sample(text, "process_start_time_seconds", &start));
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# TYPE process_start_time_seconds gauge\n"));
    free(text);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double used = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
                  ru.ru_stime.tv_usec * 1e-6;
    assert_true(cpu > 0 && fabs(cpu - used) < 0.1); /* clock ticks vs microseconds */
    assert_true(rss > 1e5 && rss <= vsz);
    assert_true(fds >= 3 && fds < 1000);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(maxfds == (double)rl.rlim_cur);
    double now = (double)time(NULL);
    assert_true(start <= now + 1 && start > now - 600); /* started within the test run */
    fm_metrics_destroy(&m);                             /* frees the hook's state (ASan) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_text),      cmocka_unit_test(test_histogram_labels_and_empty),
        cmocka_unit_test(test_values),          cmocka_unit_test(test_null),
        cmocka_unit_test(test_threads),         cmocka_unit_test(test_proc_stat_parse),
        cmocka_unit_test(test_process_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
