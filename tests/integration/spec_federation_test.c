/* spec_federation_test: a federation whose model is a custom model spec ([federation] model =
 * file:/ABS/PATH.safetensors) on loopback. The test writes the spec (3 tensors, one 4-D),
 * starts the real fedmq-aggregator and fedmq-broker with it and plays the trainer:
 *   - the broker serves a MODEL named by the spec's fingerprint whose tensors are the
 *     file's values (version 0 comes from the spec, not from the seed);
 *   - an UPDATE built for the spec is applied (version 1 = w0 + delta, stats.json);
 *   - an UPDATE with the right model name and one wrong shape is rejected "shape" and the
 *     aggregator keeps running (a later good UPDATE is applied);
 *   - a restart with a changed spec (one shape changed, same parameter count) refuses the
 *     old checkpoint with one line naming both models, exit 2;
 *   - aggregator.init still works with a spec and must match it;
 *   - fedmq-trainer, fedmq-evaluator and fedmq run refuse the spec at start with one line,
 *     exit 2.
 * Every wait is bounded (FM_AT_WAIT_S); every process is reaped. */
#include <czmq.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_aggtest.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_stats.h"
#include "fm_wire.h"

/* The values of the spec file, in file order: a fixed pattern, none zero. */
static float s_value(size_t i) { return (float)((int)(i * 7 % 23) - 11) / 16.0f + 1.0f / 64; }

/* Write the spec: conv.weight [4,1,3,3] (4-D), fc.weight [3,20] (or [20,3] when `changed`:
 * the same parameter count, another fingerprint), fc.bias [3]; values s_value(i). */
static void s_write_spec(const char *path, int changed)
{
    static float w[36 + 60 + 3];
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        w[i] = s_value(i);
    fm_tensor_t t[] = {
        {.name = "conv.weight", .dtype = "F32", .ndim = 4, .shape = {4, 1, 3, 3}, w, 36 * 4},
        {.name = "fc.weight", .dtype = "F32", .ndim = 2, .shape = {3, 20}, w + 36, 60 * 4},
        {.name = "fc.bias", .dtype = "F32", .ndim = 1, .shape = {3}, w + 96, 3 * 4},
    };
    if (changed) {
        t[1].shape[0] = 20;
        t[1].shape[1] = 3;
    }
    fm_errmsg_t e = {{0}};
    if (fm_safetensors_write(path, t, 3, NULL, 0, &e) != 0)
        fail_msg("%s", e.msg);
}

typedef struct {
    fm_at_t *at; /* the aggregator scaffold; its layout is the spec */
    char spec[400], set_model[440];
    const char *extra[8];
    fm_model_t *file; /* the spec as loaded from the file (values = version 0) */
    /* the broker */
    char blog[400], ep_pub[64], ep_snap[64];
    pid_t bpid;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx || fm_at_setup((void **)&fx->at) != 0)
        return -1;
    fm_at_t *c = fx->at;
    snprintf(fx->spec, sizeof fx->spec, "%s/spec.safetensors", c->dir);
    s_write_spec(fx->spec, 0);
    int err = 0;
    fm_errmsg_t e = {{0}};
    if (!(fx->file = fm_safetensors_load_spec(fx->spec, &err, &e)))
        return -1;
    fm_model_destroy(&c->layout); /* the scaffold's logreg: the spec instead */
    if (!(c->layout = fm_safetensors_load_spec(fx->spec, &err, &e)))
        return -1;
    c->np = fm_model_nparams(c->layout);
    snprintf(fx->set_model, sizeof fx->set_model, "federation.model=file:%s", fx->spec);
    fx->extra[0] = fx->set_model;
    fx->extra[1] = "aggregator.checkpoint_every=1";
    fx->extra[2] = NULL;
    snprintf(fx->blog, sizeof fx->blog, "%s/broker.log", c->dir);
    snprintf(fx->ep_pub, sizeof fx->ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(fx->ep_snap, sizeof fx->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (getenv("FM_KEEP_LOGS")) {
        char cmd[500];
        snprintf(cmd, sizeof cmd, "cat '%s' >&2", fx->blog);
        if (system(cmd) != 0)
            fprintf(stderr, "no broker log\n");
    }
    fm_model_destroy(&fx->file);
    fm_at_teardown((void **)&fx->at);
    free(fx);
    return 0;
}

static void s_start_broker(fx_t *fx)
{
    fm_at_t *c = fx->at;
    char set_agg[128], set_pub[128], set_snap[128], set_met[64], want[64];
    snprintf(set_agg, sizeof set_agg, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", fx->ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", fx->ep_snap);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker",
                    "--set",
                    fm_proc_metrics_set(set_met, sizeof set_met, "broker", NULL),
                    "--set",
                    fx->set_model,
                    "--set",
                    set_agg,
                    "--set",
                    set_pub,
                    "--set",
                    set_snap,
                    "--log-level",
                    "debug",
                    NULL};
    fx->bpid = fm_proc_spawn(&c->procs, argv, fx->blog);
    assert_true(fx->bpid > 0);
    snprintf(want, sizeof want, "broker: model %s", fm_model_name(fx->file));
    if (!fm_proc_wait_file_contains(fx->blog, want, FM_AT_WAIT_S))
        fail_msg("fedmq-broker did not start with the spec (log: %s)", fx->blog);
}

/* The broker's MODEL of version >= want by SNAPSHOT_REQ (retried: the broker answers once it
 * has a model); its tensors checked against the spec and copied into w. */
static void s_snapshot(fx_t *fx, uint64_t want, float *w)
{
    fm_at_t *c = fx->at;
    zsock_t *d = zsock_new(ZMQ_DEALER);
    assert_non_null(d);
    zsock_set_linger(d, 0);
    zsock_set_rcvtimeo(d, 200);
    assert_int_equal(zsock_connect(d, "%s", fx->ep_snap), 0);
    fm_wire_buf_t req = FM_WIRE_BUF_INIT;
    double end = fm_proc_now() + FM_AT_WAIT_S;
    for (;;) {
        if (fm_proc_now() > end)
            fail_msg("no MODEL version >= %llu from the broker", (unsigned long long)want);
        fm_wire_snapshot_req_t r = {.from = "spec-test", .have = 0};
        assert_int_equal(fm_wire_encode_snapshot_req(&r, &req), 0);
        assert_int_equal(zmq_send(zsock_resolve(d), req.data, req.len, 0), (int)req.len);
        zframe_t *f = zframe_recv(d);
        if (!f)
            continue;
        fm_wire_model_t hdr;
        fm_errmsg_t e = {{0}};
        int ok = fm_wire_decode_model(zframe_data(f), zframe_size(f), &hdr, c->ts, &e) == 0;
        if (ok && hdr.version >= want) {
            assert_string_equal(hdr.model, fm_model_name(fx->file));
            if (fm_wire_tensors_check(c->ts, c->layout, &e) != 0)
                fail_msg("broker MODEL: %s", e.msg);
            assert_int_equal(fm_wire_tensors_copy(c->ts, c->layout, w, &e), 0);
            zframe_destroy(&f);
            break;
        }
        zframe_destroy(&f);
        fm_proc_sleep(0.1);
    }
    fm_wire_buf_free(&req);
    zsock_destroy(&d);
}

/* An UPDATE whose tensors have the layout `wrong` but the name of the spec: the fingerprint
 * (same length) is replaced in the encoded frame, so the aggregator gets past the name check
 * to the tensors. */
static void s_send_wrong_shape(fx_t *fx, const fm_model_t *wrong, const float *delta)
{
    fm_at_t *c = fx->at;
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "agg-test");
    h.base = 1;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update(&h, wrong, delta, &c->buf), 0);
    const char *from = fm_model_name(wrong), *to = fm_model_name(c->layout);
    assert_int_equal(strlen(from), strlen(to));
    uint8_t *p = c->buf.data;
    int replaced = 0;
    for (size_t i = 0; i + strlen(from) <= c->buf.len; i++)
        if (memcmp(p + i, from, strlen(from)) == 0) {
            memcpy(p + i, to, strlen(to));
            replaced++;
        }
    assert_int_equal(replaced, 1);
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* The line of `path` that contains `needle` (into line[0..cap)), or fail. */
static void s_line_with(const char *path, const char *needle, char *line, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int found = 0;
    while (!found && fgets(line, (int)cap, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    if (!found)
        fail_msg("%s: no line with '%s'", path, needle);
}

static void test_federation(void **state)
{
    fx_t *fx = *state;
    fm_at_t *c = fx->at;
    size_t np = c->np;
    assert_int_equal(np, 99);
    fm_at_start(c, 1, fx->extra);
    s_start_broker(fx);

    /* version 0: the spec's values, named by its fingerprint, through the broker */
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *delta = fm_at_floats(c);
    s_snapshot(fx, 0, w0);
    for (size_t j = 0; j < np; j++) /* the values written, not what a loader made of them */
        assert_true(w0[j] == s_value(j));
    assert_true(fm_proc_file_contains(c->log, "version 0 from the model spec"));

    /* an UPDATE built for the spec is applied: version 1 = w0 + delta */
    for (size_t j = 0; j < np; j++)
        delta[j] = (float)((int)(j % 5) - 2) / 64.0f;
    fm_at_send(c, 0, delta);
    fm_stats_t st = fm_at_stats_when(c, "version", 1);
    assert_int_equal(st.updates_applied, 1);
    assert_string_equal(st.model, fm_model_name(fx->file));
    s_snapshot(fx, 1, w1);
    for (size_t j = 0; j < np; j++)
        assert_float_equal(w1[j], w0[j] + delta[j], 1e-6);

    /* one wrong shape under the right name: rejected "shape"; the aggregator goes on */
    fm_spec_tensor_t bad[] = {
        {"conv.weight", 4, {4, 1, 3, 3}}, {"fc.weight", 2, {3, 20}}, {"fc.bias", 1, {4}}};
    int err = 0;
    fm_model_t *wrong = fm_model_new_spec(bad, 3, &err);
    assert_non_null(wrong);
    float *wd = calloc(fm_model_nparams(wrong), sizeof *wd);
    assert_non_null(wd);
    s_send_wrong_shape(fx, wrong, wd);
    free(wd);
    fm_model_destroy(&wrong);
    double end = fm_proc_now() + FM_AT_WAIT_S;
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    while (fm_stats_read(path, &st, NULL) != 0 || fm_stats_rejected(&st, "shape") < 1) {
        if (fm_proc_now() > end)
            fail_msg("the wrong-shape UPDATE was not rejected 'shape'");
        fm_proc_sleep(0.05);
    }
    assert_int_equal(st.updates_applied, 1);
    fm_at_send(c, 1, delta);
    st = fm_at_stats_when(c, "version", 2);
    assert_int_equal(st.updates_applied, 2);
    fm_at_stop(c);
    int bst = fm_proc_stop(fx->bpid, SIGTERM, 30.0);
    assert_true(WIFEXITED(bst) && WEXITSTATUS(bst) == 0);

    /* restart on the same checkpoints with a changed spec: one line, exit 2 */
    s_write_spec(fx->spec, 1);
    fm_model_t *changed = fm_safetensors_load_spec(fx->spec, &err, NULL);
    assert_non_null(changed);
    assert_int_equal(fm_model_nparams(changed), np);
    assert_string_not_equal(fm_model_name(changed), fm_model_name(fx->file));
    c->resume = 1;
    fm_at_start(c, 1, fx->extra);
    int ast = fm_proc_wait(c->pid, FM_AT_WAIT_S);
    assert_true(ast != -1 && WIFEXITED(ast));
    assert_int_equal(WEXITSTATUS(ast), 2);
    char line[1024], want[256];
    s_line_with(c->log, "use another checkpoint_dir", line, sizeof line);
    snprintf(want, sizeof want, "is model '%s' (%zu params); the config says '%s'",
             fm_model_name(fx->file), np, fm_model_name(changed));
    if (!strstr(line, want))
        fail_msg("refusal line '%s' lacks '%s'", line, want);
    assert_int_equal(fm_proc_file_count(c->log, "use another checkpoint_dir"), 1);
    fm_model_destroy(&changed);
}

/* aggregator.init with a spec: a file of the spec's names and shapes gives version 0; one
 * whose shape differs is refused at start, naming the tensor. */
static void test_init(void **state)
{
    fx_t *fx = *state;
    fm_at_t *c = fx->at;
    char init[440], set_init[460];
    snprintf(init, sizeof init, "%s/init.safetensors", c->dir);
    snprintf(set_init, sizeof set_init, "aggregator.init=%s", init);
    fx->extra[2] = set_init;
    fx->extra[3] = NULL;
    float *w = fm_at_floats(c), *got = fm_at_floats(c);
    for (size_t j = 0; j < c->np; j++)
        w[j] = -s_value(j);
    fm_tensor_t t[3];
    for (int i = 0; i < 3; i++) {
        const fm_view_t *v = fm_model_view(c->layout, i);
        t[i] = (fm_tensor_t){.name = v->name, .dtype = "F32", .ndim = v->ndim};
        memcpy(t[i].shape, v->shape, sizeof t[i].shape);
        t[i].data = w + v->offset;
        t[i].nbytes = 4 * v->numel;
    }
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(init, t, 3, NULL, 0, &e), 0);
    fm_at_start(c, 1, fx->extra);
    assert_int_equal(fm_at_wait_model(c, 0, got), 0);
    assert_memory_equal(got, w, c->np * sizeof(float));
    fm_at_stop(c);

    t[2].shape[0] = 2; /* fc.bias [2]: not the spec's [3] */
    t[2].nbytes = 8;
    assert_int_equal(fm_safetensors_write(init, t, 3, NULL, 0, &e), 0);
    fm_at_start(c, 1, fx->extra);
    int st = fm_proc_wait(c->pid, FM_AT_WAIT_S);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
    char line[1024];
    s_line_with(c->log, "tensor 'fc.bias' has shape [2], expected [3]", line, sizeof line);
}

/* Run argv to its end (bounded), output into log; its exit status. */
static int s_run(fm_at_t *c, char *const argv[], const char *log)
{
    pid_t pid = fm_proc_spawn(&c->procs, argv, log);
    assert_true(pid > 0);
    int st = fm_proc_wait(pid, FM_AT_WAIT_S);
    assert_true(st != -1 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_refused(void **state)
{
    fx_t *fx = *state;
    fm_at_t *c = fx->at;
    char head[512], log[400], line[1024];
    snprintf(head, sizeof head,
             "federation.model = file:%s is a custom model spec (%s, 3 tensors, 99 parameters): ",
             fx->spec, fm_model_name(fx->file));
    static const struct {
        const char *bin, *tail;
    } progs[] = {
        {FM_BIN_DIR "/fedmq-trainer", "fedmq-trainer runs only logreg, mlp and cnn; train it "
                                      "with the Python client (trainer/python)"},
        {FM_BIN_DIR "/fedmq-evaluator", "fedmq-evaluator scores only logreg, mlp and cnn; "
                                        "evaluate it with the Python client (trainer/python)"},
    };
    for (size_t i = 0; i < 2; i++) {
        snprintf(log, sizeof log, "%s/refused-%zu.log", c->dir, i);
        char *argv[] = {(char *)progs[i].bin, "--set", fx->set_model, NULL};
        assert_int_equal(s_run(c, argv, log), 2);
        s_line_with(log, "is a custom model spec", line, sizeof line);
        if (!strstr(line, head) || !strstr(line, progs[i].tail))
            fail_msg("%s: line '%s'", progs[i].bin, line);
        assert_int_equal(fm_proc_file_count(log, "custom model spec"), 1);
    }
    /* fedmq run refuses before it starts anything */
    snprintf(log, sizeof log, "%s/refused-run.log", c->dir);
    char rdir[420];
    snprintf(rdir, sizeof rdir, "%s/run", c->dir);
    char *argv[] = {FM_BIN_DIR "/fedmq", "run", FM_SOURCE_DIR "/configs/fedmq.conf",
                    "--run-dir",         rdir,  "--set",
                    fx->set_model,       NULL};
    assert_int_equal(s_run(c, argv, log), 2);
    s_line_with(log, "is a custom model spec", line, sizeof line);
    if (strncmp(line, "fedmq run: ", 11) != 0 || !strstr(line, head))
        fail_msg("fedmq run: line '%s'", line);
    assert_int_equal(access(rdir, F_OK), -1); /* nothing started, nothing made */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_federation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
