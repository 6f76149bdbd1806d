/* Unit tests of fm_sec (no network): keygen's files and refusals, fm_sec_new's one-line
 * errors (missing key, secret, role mismatch, allow_dir), the enrolled peer by public key,
 * fm_sec_check_trainer's verdicts, and a removed certificate refused after fm_sec_refresh.
 * The certificates are read back with CZMQ's zcert_load, independently of fm_sec. */
#include <czmq.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include "../support/fm_sys.h"
#include "fm_cfg.h"
#include "fm_log.h"
#include "fm_sec.h"

typedef struct {
    char dir[128], keys[160], allow[160];
    char pub_a[41], pub_b[41], pub_broker[41];
    fm_config_t cfg;
} s_ctx_t;

static void s_enrol(s_ctx_t *c, const char *name)
{
    char from[400], to[400];
    snprintf(from, sizeof from, "%s/%s.cert", c->keys, name);
    snprintf(to, sizeof to, "%s/%s.cert", c->allow, name);
    assert_int_equal(link(from, to), 0);
}

static int s_setup(void **state)
{
    s_ctx_t *c = calloc(1, sizeof *c);
    if (!c || fm_proc_tmpdir(c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->keys, sizeof c->keys, "%s/keys", c->dir);
    snprintf(c->allow, sizeof c->allow, "%s/allow", c->dir);
    if (mkdir(c->keys, 0700) != 0 || mkdir(c->allow, 0755) != 0)
        return -1;
    fm_errmsg_t e = {{0}};
    if (fm_sec_keygen(c->keys, "aggregator", "aggregator", NULL, NULL, &e) ||
        fm_sec_keygen(c->keys, "broker", "broker", NULL, c->pub_broker, &e) ||
        fm_sec_keygen(c->keys, "pool-a", "trainer", "0-4", c->pub_a, &e) ||
        fm_sec_keygen(c->keys, "pool-b", "trainer", "5-9", c->pub_b, &e))
        return -1;
    fm_cfg_defaults(&c->cfg);
    fm_cfg_security_t *s = &c->cfg.security;
    s->mode = FM_CFG_SECURITY_CURVE;
    snprintf(s->allow_dir, sizeof s->allow_dir, "%s", c->allow);
    snprintf(s->aggregator_cert, sizeof s->aggregator_cert, "%s/aggregator.cert", c->keys);
    snprintf(s->broker_cert, sizeof s->broker_cert, "%s/broker.cert", c->keys);
    snprintf(s->trainer_cert, sizeof s->trainer_cert, "%s/pool-a.cert", c->keys);
    *state = c;
    return 0;
}

static int s_teardown(void **state)
{
    s_ctx_t *c = *state;
    fm_proc_rmtree(c->dir);
    free(c);
    return 0;
}

static void test_keygen(void **state)
{
    s_ctx_t *c = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/pool-a.cert", c->keys);
    zcert_t *pub = zcert_load(path);
    assert_non_null(pub);
    assert_string_equal(zcert_public_txt(pub), c->pub_a);
    assert_string_equal(zcert_meta(pub, "name"), "pool-a");
    assert_string_equal(zcert_meta(pub, "role"), "trainer");
    assert_string_equal(zcert_meta(pub, "clients"), "0-4");
    zcert_destroy(&pub);
    /* the public file carries no secret key (zcert_load reads the _secret twin beside it) */
    char *text = fm_sys_slurp(path);
    assert_non_null(text);
    assert_null(strstr(text, "secret-key"));
    assert_non_null(strstr(text, "public-key"));
    free(text);
    struct stat st;
    snprintf(path, sizeof path, "%s/pool-a.cert_secret", c->keys);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_sec_keygen(c->keys, "pool-a", "trainer", "0-4", NULL, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "not overwriting"));
    assert_int_equal(fm_sec_keygen(c->keys, "a\nFORGED", "trainer", "0", NULL, &e), FM_EARG);
    assert_int_equal(fm_sec_keygen(c->keys, "t", "trainer", NULL, NULL, &e), FM_EARG);
    assert_int_equal(fm_sec_keygen(c->keys, "t", "trainer", "9-1", NULL, &e), FM_EARG);
    assert_int_equal(fm_sec_keygen(c->keys, "t", "root", NULL, NULL, &e), FM_EARG);
    assert_int_equal(fm_sec_keygen(c->keys, "m", "monitor", "0-1", NULL, &e), FM_EARG);
}

static void test_new_errors(void **state)
{
    s_ctx_t *c = *state;
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_config_t cfg = c->cfg;
    snprintf(cfg.security.aggregator_cert, sizeof cfg.security.aggregator_cert, "%s/no.cert",
             c->keys);
    assert_null(fm_sec_new(&cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_non_null(strstr(e.msg, "[security] aggregator_cert = "));
    assert_non_null(strstr(e.msg, "no.cert: cannot read"));

    /* the public file of another program, without its secret twin */
    cfg = c->cfg;
    char path[200];
    snprintf(path, sizeof path, "%s/pool-b.cert", c->allow);
    snprintf(cfg.security.trainer_cert, sizeof cfg.security.trainer_cert, "%s", path);
    s_enrol(c, "pool-b");
    assert_null(fm_sec_new(&cfg, FM_SEC_ROLE_TRAINER, &err, &e));
    assert_non_null(strstr(e.msg, "pool-b.cert_secret"));

    /* a key of the wrong role */
    cfg = c->cfg;
    snprintf(cfg.security.aggregator_cert, sizeof cfg.security.aggregator_cert, "%s/broker.cert",
             c->keys);
    assert_null(fm_sec_new(&cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e));
    assert_int_equal(err, FM_EARG);
    assert_non_null(strstr(e.msg, "its role is broker, not aggregator"));

    /* no allow-list directory */
    cfg = c->cfg;
    snprintf(cfg.security.allow_dir, sizeof cfg.security.allow_dir, "%s/nodir", c->dir);
    assert_null(fm_sec_new(&cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e));
    assert_non_null(strstr(e.msg, "[security] allow_dir = "));

    /* mode none: an object that secures nothing */
    cfg = c->cfg;
    cfg.security.mode = FM_CFG_SECURITY_NONE;
    fm_sec_t *s = fm_sec_new(&cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e);
    assert_non_null(s);
    assert_false(fm_sec_curve(s));
    char why[160];
    assert_int_equal(fm_sec_check_trainer(s, NULL, "x", 0, 1, why, sizeof why), 0);
    fm_sec_destroy(&s);
    assert_null(s);
}

static void test_identity(void **state)
{
    s_ctx_t *c = *state;
    s_enrol(c, "pool-a");
    s_enrol(c, "pool-b");
    s_enrol(c, "broker");
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_sec_t *s = fm_sec_new(&c->cfg, FM_SEC_ROLE_AGGREGATOR, &err, &e);
    assert_non_null(s);
    assert_true(fm_sec_curve(s));
    assert_string_equal(fm_sec_name(s), "aggregator");

    fm_sec_peer_t p;
    assert_int_equal(fm_sec_peer(s, c->pub_b, &p), 0);
    assert_string_equal(p.name, "pool-b");
    assert_string_equal(p.role, "trainer");
    assert_int_equal(p.client_first, 5);
    assert_int_equal(p.client_count, 5);
    assert_int_equal(fm_sec_peer(s, "short", &p), -ENOENT);
    assert_int_equal(fm_sec_peer(s, NULL, &p), -ENOENT);

    char why[160];
    assert_int_equal(fm_sec_check_trainer(s, c->pub_a, "pool-a", 4, 1, why, sizeof why), 0);
    assert_int_equal(fm_sec_check_trainer(s, c->pub_a, "pool-a", 0, 5, why, sizeof why), 0);
    assert_int_equal(fm_sec_check_trainer(s, c->pub_a, "pool-b", 5, 1, why, sizeof why), 1);
    assert_string_equal(why, "trainer id 'pool-b' sent with the key of 'pool-a'");
    assert_int_equal(fm_sec_check_trainer(s, c->pub_a, "pool-a", 4, 2, why, sizeof why), 1);
    assert_string_equal(why, "clients 4-5; the key of 'pool-a' is enrolled for 0-4");
    assert_int_equal(fm_sec_check_trainer(s, c->pub_broker, "broker", 0, 1, why, sizeof why), 1);
    assert_non_null(strstr(why, "a broker, not a trainer"));
    assert_int_equal(fm_sec_check_trainer(s, NULL, "pool-a", 0, 1, why, sizeof why), 1);

    /* removal: after the directory changes and a refresh, the key is unknown */
    char path[400];
    snprintf(path, sizeof path, "%s/pool-a.cert", c->allow);
    assert_int_equal(unlink(path), 0);
    fm_sec_refresh(s); /* the directory's mtime (ns) moved: the cache is dropped */
    assert_int_equal(fm_sec_check_trainer(s, c->pub_a, "pool-a", 0, 1, why, sizeof why), 1);
    assert_non_null(strstr(why, "not (or no longer) in the allow-list"));
    assert_int_equal(fm_sec_check_trainer(s, c->pub_b, "pool-b", 5, 1, why, sizeof why), 0);
    fm_sec_destroy(&s);
}

static void test_trainer_self(void **state)
{
    s_ctx_t *c = *state;
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_config_t cfg = c->cfg;
    fm_sec_t *s = fm_sec_new(&cfg, FM_SEC_ROLE_TRAINER, &err, &e);
    assert_non_null(s);
    fm_sec_peer_t me;
    assert_int_equal(fm_sec_self(s, &me), 0);
    assert_string_equal(me.name, "pool-a");
    assert_int_equal(me.client_first, 0);
    assert_int_equal(me.client_count, 5);
    /* a trainer serves no CURVE socket and connects to the broker and the aggregator */
    zsock_t *z = zsock_new(ZMQ_PUSH);
    assert_int_equal(fm_sec_apply(s, z, FM_SEC_TO_AGGREGATOR, &e), 0);
    assert_int_equal(zsock_curve_server(z), 0);
    assert_int_equal(fm_sec_apply(s, z, FM_SEC_SERVE, &e), FM_EARG);
    assert_int_equal(fm_sec_apply(s, z, FM_SEC_TO_EVALUATOR, &e), FM_EARG);
    zsock_destroy(&z);
    fm_sec_destroy(&s);
}

int main(void)
{
    fm_log_init("sec_test", LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keygen, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_new_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_identity, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_trainer_self, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
