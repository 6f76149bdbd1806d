/* metrics_http_test: fm_metrics_http: the metrics address grammar (as the config checks it)
 * and the HTTP endpoint on a reserved loopback port: GET /metrics is the registry's render
 * with the exposition Content-Type, HEAD has no body, other paths 404, other methods 405,
 * a port in use is one error line with -EADDRINUSE, and a stopped server has closed its
 * socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "fm_cfg.h"
#include "fm_metrics_http.h"

static void test_addr_grammar(void **state)
{
    (void)state;
    fm_metrics_addr_t a;
    char why[160];
    assert_int_equal(fm_metrics_addr_parse("127.0.0.1:9561", &a, why, sizeof why), 0);
    assert_true(a.enabled && a.port == 9561 && a.sa.ss_family == AF_INET);
    assert_int_equal(fm_metrics_addr_parse("0.0.0.0:1", &a, why, sizeof why), 0);
    assert_true(a.enabled && a.port == 1);
    assert_int_equal(fm_metrics_addr_parse("[::1]:65535", &a, why, sizeof why), 0);
    assert_true(a.enabled && a.port == 65535 && a.sa.ss_family == AF_INET6);
    assert_int_equal(fm_metrics_addr_parse("[::]:9100", &a, why, sizeof why), 0);
    assert_true(a.enabled);
    assert_int_equal(fm_metrics_addr_parse("off", &a, why, sizeof why), 0);
    assert_false(a.enabled);
    assert_int_equal(fm_metrics_addr_parse("", &a, why, sizeof why), 0);
    assert_false(a.enabled);
    static const char *const bad[] = {
        "localhost:9561",  "127.0.0.1",      "127.0.0.1:",  "127.0.0.1:0",
        "127.0.0.1:65536", ":9561",          "127.0.0.1:x", "127.0.0.1: 9561",
        "127.0.0.1:+80",   "127.0.0.1:0x50", "::1:9561",    "[::1]9561",
        "[127.0.0.1]:80",  "[]:80",          "1.2.3:80",    "OFF",
        " 127.0.0.1:1",    "127.0.0.1:1 ",   "*:9561",      "[::1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        if (fm_metrics_addr_parse(bad[i], &a, why, sizeof why) != FM_EARG)
            fail_msg("'%s' was accepted", bad[i]);
        assert_string_equal(why, "not HOST:PORT (an IPv4 address or [IPv6 address], a port "
                                 "1-65535) or off");
    }
}

/* The config keys use the same grammar, with the config's one-line errors. */
static void test_config_keys(void **state)
{
    (void)state;
    fm_config_t c;
    fm_cfg_defaults(&c);
    assert_string_equal(c.broker.metrics_addr, "127.0.0.1:9561");
    assert_string_equal(c.aggregator.metrics_addr, "127.0.0.1:9562");
    assert_string_equal(c.evaluator.metrics_addr, "127.0.0.1:9563");
    assert_string_equal(c.trainer.metrics_addr, "127.0.0.1:9564");
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_cfg_set(&c, "trainer.metrics_addr", "off", &e), 0);
    assert_string_equal(c.trainer.metrics_addr, "off");
    assert_int_equal(fm_cfg_set(&c, "broker.metrics_addr=[::1]:9100", NULL, &e), 0);
    assert_int_equal(fm_cfg_set(&c, "aggregator.metrics_addr", "localhost:9562", &e), FM_EARG);
    assert_string_equal(e.msg, "override: [aggregator] metrics_addr = localhost:9562: not "
                               "HOST:PORT (an IPv4 address or [IPv6 address], a port 1-65535) "
                               "or off");
    /* not reloadable: a new address needs a restart */
    fm_config_t fresh = c;
    assert_int_equal(fm_cfg_set(&fresh, "broker.metrics_addr", "127.0.0.1:9600", &e), 0);
    assert_int_equal(fm_cfg_check_reload(&c, &fresh, &e), FM_EARG);
}

static int s_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_http(void **state)
{
    (void)state;
    fm_metrics_t *m = fm_metrics_new(NULL);
    fm_metric_t *c = fm_metrics_counter(m, "things_total", "Things.",
                                        (const char *[]){"kind", "a", NULL});
    fm_metric_add(c, 3);
    int port = fm_proc_free_port(); /* its block's lock file stays open */
    assert_true(port > 0);
    int fds0 = s_count_fds();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_metrics_http_t *h = fm_metrics_http_start(m, "broker.metrics_addr", addr, &err, &e);
    if (!h)
        fail_msg("start: %s", e.msg);

    fm_http_resp_t r;
    assert_int_equal(fm_http_request(port, "GET", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_true(fm_http_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "text/plain; version=0.0.4; charset=utf-8");
    char *want = NULL;
    assert_int_equal(fm_metrics_render(m, &want, NULL), 0);
    assert_string_equal(r.body, want);
    assert_string_equal(r.body, "# HELP things_total Things.\n# TYPE things_total counter\n"
                                "things_total{kind=\"a\"} 3\n");
    free(want);
    fm_http_free(&r);

    fm_metric_inc(c); /* each GET renders anew */
    assert_int_equal(fm_http_request(port, "GET", "/metrics", &r), 0);
    double v = 0;
    assert_true(fm_http_sample(r.body, "things_total{kind=\"a\"}", &v) && v == 4);
    fm_http_free(&r);

    assert_int_equal(fm_http_request(port, "HEAD", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    fm_http_free(&r);

    static const char *const paths[] = {"/", "/metrics/", "/metricsx", "/index.html", "/x?y"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        assert_int_equal(fm_http_request(port, "GET", paths[i], &r), 0);
        assert_int_equal(r.status, 404);
        fm_http_free(&r);
    }
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        assert_int_equal(fm_http_request(port, methods[i], "/metrics", &r), 0);
        assert_int_equal(r.status, 405);
        char allow[64];
        assert_true(fm_http_header(&r, "Allow", allow, sizeof allow));
        assert_string_equal(allow, "GET, HEAD");
        fm_http_free(&r);
    }

    /* the port is taken: a second server fails with one line, like a ZeroMQ bind */
    fm_metrics_http_t *h2 = fm_metrics_http_start(m, "broker.metrics_addr", addr, &err, &e);
    assert_null(h2);
    assert_int_equal(err, -EADDRINUSE);
    char line[160];
    snprintf(line, sizeof line, "[broker] metrics_addr = %s: cannot bind: Address already in use",
             addr);
    assert_string_equal(e.msg, line);
    /* off or bad: refused */
    assert_null(fm_metrics_http_start(m, "broker.metrics_addr", "off", &err, &e));
    assert_int_equal(err, FM_EARG);
    assert_string_equal(e.msg, "[broker] metrics_addr = off: metrics are off");

    fm_metrics_http_stop(&h);
    assert_null(h);
    fm_metrics_http_stop(&h);              /* idempotent */
    assert_int_equal(s_count_fds(), fds0); /* listening socket and thread's fds closed */
    assert_int_not_equal(fm_http_request(port, "GET", "/metrics", &r), 0); /* refused */
    /* and the port can be served again at once */
    h = fm_metrics_http_start(m, "broker.metrics_addr", addr, &err, &e);
    assert_non_null(h);
    assert_int_equal(fm_http_request(port, "GET", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    fm_http_free(&r);
    fm_metrics_http_stop(&h);
    fm_metrics_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_grammar),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
