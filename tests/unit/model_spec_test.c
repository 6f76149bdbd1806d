/* Unit tests of custom model specs: fm_model_new_spec (layout, owned names, the fingerprint
 * with its known values, the caps), fm_safetensors_load_spec (every acceptance and refusal
 * with its one-line message naming file and tensor, 64 tensors accepted, 65 refused),
 * fm_cfg_model (built-in or file:, the refusal line of the programs that run built-ins
 * only), fm_engine_new refusing a spec, and the wire: a 64-tensor spec encodes, decodes and
 * passes fm_wire_tensors_check. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fm_cfg.h"
#include "fm_cfg_model.h"
#include "fm_engine.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fm_wire.h"

typedef struct {
    char dir[64];
    char path[128];
} ctx_t;

static int setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/fedmq-spec-XXXXXX");
    if (!c || !mkdtemp(c->dir))
        return -1;
    snprintf(c->path, sizeof c->path, "%s/m.safetensors", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *c = *state;
    unlink(c->path);
    rmdir(c->dir);
    free(c);
    return 0;
}

/* A safetensors file from a JSON header and `ndata` bytes of data (raw: also what the
 * writer would refuse, e.g. 5 dims). */
static void write_raw(const char *path, const char *header, const void *data, size_t ndata)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len[8];
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(n >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, n, f), n);
    if (ndata)
        assert_int_equal(fwrite(data, 1, ndata, f), ndata);
    assert_int_equal(fclose(f), 0);
}

/* Load `path` as a spec expecting failure `code` with exactly the message `want` (a format
 * with one %s for the path). */
static void expect_refused(const char *path, int code, const char *want_fmt)
{
    int err = 0;
    fm_errmsg_t e = {{0}};
    char want[512];
    fm_model_t *m = fm_safetensors_load_spec(path, &err, &e);
    assert_null(m);
    snprintf(want, sizeof want, want_fmt, path);
    if (err != code || strcmp(e.msg, want) != 0)
        fail_msg("want %d '%s'\ngot  %d '%s'", code, want, err, e.msg);
    assert_null(strchr(e.msg, '\n'));
}

/* ---- fm_model_new_spec and the fingerprint --------------------------------------------------
 */

static void test_fingerprints(void **state)
{
    (void)state;
    char fp[FM_SPEC_FP_LEN + 1];
    /* the known values (Python hashlib.blake2b(digest_size=32)); order given does not matter */
    fm_spec_tensor_t wb[] = {{"w", 2, {3, 4}}, {"b", 1, {3}}};
    assert_int_equal(fm_model_spec_fingerprint(wb, 2, fp), 0);
    assert_string_equal(fp, "spec-c436d21991");
    fm_spec_tensor_t bw[] = {{"b", 1, {3}}, {"w", 2, {3, 4}}};
    assert_int_equal(fm_model_spec_fingerprint(bw, 2, fp), 0);
    assert_string_equal(fp, "spec-c436d21991");
    fm_spec_tensor_t mlp[] = {{"fc1.weight", 2, {200, 784}},
                              {"fc1.bias", 1, {200}},
                              {"fc2.weight", 2, {10, 200}},
                              {"fc2.bias", 1, {10}}};
    assert_int_equal(fm_model_spec_fingerprint(mlp, 4, fp), 0);
    assert_string_equal(fp, "spec-1d7bf7f63b");
    assert_int_equal(strlen(fp), 15); /* fits a checkpoint's model name */
    /* one dim changed: another name */
    mlp[2].shape[0] = 11;
    assert_int_equal(fm_model_spec_fingerprint(mlp, 4, fp), 0);
    assert_string_not_equal(fp, "spec-1d7bf7f63b");
    /* bad arguments */
    assert_int_equal(fm_model_spec_fingerprint(wb, 0, fp), FM_EARG);
    fm_spec_tensor_t sp[] = {{"a b", 1, {3}}};
    assert_int_equal(fm_model_spec_fingerprint(sp, 1, fp), FM_EARG);
}

static void test_new_spec(void **state)
{
    (void)state;
    char n0[] = "conv.weight", n1[] = "scale", n2[] = "conv.bias";
    fm_spec_tensor_t t[] = {{n0, 4, {2, 1, 3, 3}}, {n1, 0, {0}}, {n2, 1, {2}}};
    int err = 0;
    fm_model_t *m = fm_model_new_spec(t, 3, &err);
    assert_non_null(m);
    memset(n0, 'x', sizeof n0 - 1); /* names are copied */
    assert_int_equal(fm_model_arch(m), FM_ARCH_SPEC);
    assert_string_equal(fm_arch_name(FM_ARCH_SPEC), "spec");
    assert_int_equal(strncmp(fm_model_name(m), "spec-", 5), 0);
    assert_int_equal(fm_model_nviews(m), 3);
    assert_int_equal(fm_model_nparams(m), 18 + 1 + 2);
    const fm_view_t *v = fm_model_view(m, 0);
    assert_string_equal(v->name, "conv.weight");
    assert_int_equal(v->ndim, 4);
    assert_int_equal(v->offset, 0);
    assert_int_equal(v->numel, 18);
    v = fm_model_view(m, 1);
    assert_string_equal(v->name, "scale");
    assert_int_equal(v->ndim, 0);
    assert_int_equal(v->offset, 18);
    assert_int_equal(v->numel, 1);
    assert_ptr_equal(fm_model_find(m, "conv.bias"), fm_model_view(m, 2));
    assert_int_equal(fm_model_view(m, 2)->offset, 19);
    /* values zeroed; init leaves them; no forward pass */
    float *p = fm_model_params(m);
    for (size_t i = 0; i < fm_model_nparams(m); i++)
        assert_true(p[i] == 0.0f);
    p[3] = 1.5f;
    fm_model_init(m, 7);
    assert_true(p[3] == 1.5f && p[0] == 0.0f);
    assert_true(fm_model_flops_forward(m) == 0.0);
    assert_null(fm_engine_new(m, 1, 8, &err));
    assert_int_equal(err, FM_EMODEL);
    fm_model_destroy(&m);
    assert_null(m);

    /* refusals */
    fm_spec_tensor_t dup[] = {{"a", 1, {2}}, {"a", 1, {3}}};
    assert_null(fm_model_new_spec(dup, 2, &err));
    assert_int_equal(err, FM_EARG);
    fm_spec_tensor_t zero[] = {{"a", 2, {2, 0}}};
    assert_null(fm_model_new_spec(zero, 1, &err));
    assert_int_equal(err, FM_ESHAPE);
    fm_spec_tensor_t rank[] = {{"a", 5, {1, 1, 1, 1}}};
    assert_null(fm_model_new_spec(rank, 1, &err));
    assert_int_equal(err, FM_EARG);
    /* the size cap: 2^28 floats in all */
    fm_spec_tensor_t big[] = {{"a", 2, {1 << 14, 1 << 14}}, {"b", 1, {1}}};
    assert_null(fm_model_new_spec(big, 2, &err));
    assert_int_equal(err, FM_ESHAPE);
    fm_spec_tensor_t huge[] = {{"a", 4, {1 << 20, 1 << 20, 1 << 20, 1 << 20}}};
    assert_null(fm_model_new_spec(huge, 1, &err));
    assert_int_equal(err, FM_ESHAPE);
    assert_null(fm_model_new_spec(dup, 0, &err));
    assert_int_equal(err, FM_EARG);
    /* the built-ins are unchanged */
    assert_non_null(m = fm_model_new("cnn", &err));
    assert_string_equal(fm_model_name(m), "cnn");
    assert_int_equal(fm_model_nviews(m), 8);
    fm_model_destroy(&m);
    assert_null(fm_model_new("spec", &err));
    assert_int_equal(err, FM_EMODEL);
}

/* ---- fm_safetensors_load_spec -----------------------------------------------------------------
 */

static void test_load_accept(void **state)
{
    ctx_t *c = *state;
    /* the file's order (not sorted), one 4-D tensor and a scalar */
    float w[2 * 1 * 2 * 2], s = 0.25f, b[3] = {1, 2, 3};
    for (int i = 0; i < 8; i++)
        w[i] = (float)i - 3.5f;
    fm_tensor_t t[] = {
        {.name = "z.weight", .dtype = "F32", .ndim = 4, .shape = {2, 1, 2, 2}, w, sizeof w},
        {.name = "a.scale", .dtype = "F32", .ndim = 0, .data = &s, .nbytes = 4},
        {.name = "m.bias", .dtype = "F32", .ndim = 1, .shape = {3}, b, sizeof b},
    };
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(c->path, t, 3, NULL, 0, &e), 0);
    int err = 0;
    fm_model_t *m = fm_safetensors_load_spec(c->path, &err, &e);
    assert_non_null(m);
    assert_int_equal(fm_model_nviews(m), 3);
    assert_string_equal(fm_model_view(m, 0)->name, "z.weight");
    assert_string_equal(fm_model_view(m, 1)->name, "a.scale");
    assert_string_equal(fm_model_view(m, 2)->name, "m.bias");
    assert_int_equal(fm_model_nparams(m), 12);
    const float *p = fm_model_params_const(m);
    assert_memory_equal(p, w, sizeof w);
    assert_true(p[8] == 0.25f);
    assert_memory_equal(p + 9, b, sizeof b);
    char fp[FM_SPEC_FP_LEN + 1];
    fm_spec_tensor_t st[] = {
        {"z.weight", 4, {2, 1, 2, 2}}, {"a.scale", 0, {0}}, {"m.bias", 1, {3}}};
    assert_int_equal(fm_model_spec_fingerprint(st, 3, fp), 0);
    assert_string_equal(fm_model_name(m), fp);
    /* a saved spec model loads back as the same spec with the same values */
    char again[160];
    snprintf(again, sizeof again, "%s/again.safetensors", c->dir);
    assert_int_equal(fm_safetensors_save_model(m, again, &e), 0);
    fm_model_t *m2 = fm_safetensors_load_spec(again, &err, &e);
    assert_non_null(m2);
    assert_string_equal(fm_model_name(m2), fm_model_name(m));
    assert_memory_equal(fm_model_params_const(m2), p, 12 * sizeof(float));
    /* and an init file in the spec's layout loads into it (aggregator.init) */
    assert_int_equal(fm_safetensors_load_model(m2, c->path, &e), 0);
    unlink(again);
    fm_model_destroy(&m2);
    fm_model_destroy(&m);
}

static void test_load_refuse(void **state)
{
    ctx_t *c = *state;
    float d[4] = {1, 2, 3, 4};
    /* dtype */
    write_raw(c->path, "{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", d,
              16);
    expect_refused(c->path, FM_EDTYPE, "%s: tensor 'w' has dtype F64, a model spec takes F32");
    /* no tensors */
    write_raw(c->path, "{\"__metadata__\":{\"a\":\"b\"}}", NULL, 0);
    expect_refused(c->path, FM_EARG, "%s: 0 tensors: a model spec has 1..64");
    /* names outside the wire's name class: a space, a control byte, non-ASCII, too long */
    write_raw(c->path, "{\"a b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d,
              4);
    expect_refused(c->path, FM_ENAME,
                   "%s: tensor 'a b': a name must be 1..255 bytes of printable ASCII without "
                   "space (0x21-0x7e)");
    write_raw(c->path, "{\"a\\u0001\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              d, 4);
    expect_refused(c->path, FM_ENAME,
                   "%s: tensor 'a?': a name must be 1..255 bytes of printable ASCII without "
                   "space (0x21-0x7e)");
    write_raw(c->path, "{\"\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              d, 4);
    expect_refused(
        c->path, FM_ENAME,
        "%s: tensor '\xc3\xa9': a name must be 1..255 bytes of printable ASCII without "
        "space (0x21-0x7e)");
    char hdr[1024], longname[300];
    memset(longname, 'n', 256);
    longname[256] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             longname);
    write_raw(c->path, hdr, d, 4);
    expect_refused(
        c->path, FM_ENAME,
        "%s: tensor 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...'"
        ": a name must be 1..255 bytes of printable ASCII without space (0x21-0x7e)");
    longname[255] = '\0'; /* 255 bytes: accepted */
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             longname);
    write_raw(c->path, hdr, d, 4);
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_model_t *m = fm_safetensors_load_spec(c->path, &err, &e);
    assert_non_null(m);
    fm_model_destroy(&m);
    /* more than 4 dims (the reader's check, naming the tensor) */
    write_raw(c->path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
              d, 4);
    expect_refused(c->path, FM_ESHAPE, "%s: tensor 'w' has 5 dimensions, at most 4 supported");
    /* zero-size */
    write_raw(c->path,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]}}",
              d, 4);
    expect_refused(c->path, FM_ESHAPE, "%s: tensor 'w' has shape [3,0]: zero-size tensor");
    /* non-finite */
    float bad[3] = {1, NAN, 2};
    write_raw(c->path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", bad,
              12);
    expect_refused(c->path, FM_ENONFINITE,
                   "%s: tensor 'w' has a non-finite value (nan) at index 1");
    bad[1] = INFINITY;
    write_raw(c->path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", bad,
              12);
    expect_refused(c->path, FM_ENONFINITE,
                   "%s: tensor 'w' has a non-finite value (inf) at index 1");
    /* not a file */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.safetensors", c->dir);
    assert_null(fm_safetensors_load_spec(missing, &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_non_null(strstr(e.msg, missing));
}

/* A spec of n tensors "t00".."tNN", tensor i of shape [i+1] (or [2,2,2,2] for the first),
 * written to path; values i + k/100. */
static void write_n(const char *path, int n)
{
    fm_tensor_t *t = calloc((size_t)n, sizeof *t);
    char(*names)[8] = calloc((size_t)n, 8);
    float *data = calloc((size_t)n * 64, sizeof *data);
    assert_true(t && names && data);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 8, "t%02d", i);
        float *x = data + (size_t)i * 64;
        t[i] = (fm_tensor_t){.name = names[i], .dtype = "F32", .ndim = 1, .data = x};
        t[i].shape[0] = i + 1;
        if (i == 0) {
            t[i].ndim = 4;
            t[i].shape[0] = t[i].shape[1] = t[i].shape[2] = t[i].shape[3] = 2;
        }
        size_t numel = i == 0 ? 16 : (size_t)i + 1;
        t[i].nbytes = 4 * numel;
        for (size_t k = 0; k < numel; k++)
            x[k] = (float)i + (float)k / 100.0f;
    }
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    free(t);
    free(names);
    free(data);
}

static void test_load_64_65(void **state)
{
    ctx_t *c = *state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    write_n(c->path, 64);
    fm_model_t *m = fm_safetensors_load_spec(c->path, &err, &e);
    assert_non_null(m);
    assert_int_equal(fm_model_nviews(m), 64);
    assert_string_equal(fm_model_view(m, 63)->name, "t63");
    assert_true(fm_model_params_const(m)[fm_model_view(m, 63)->offset + 2] == 63.02f);
    /* a 64-view model saves (fm_safetensors_save_model's array holds 64) */
    char again[160];
    snprintf(again, sizeof again, "%s/again.safetensors", c->dir);
    assert_int_equal(fm_safetensors_save_model(m, again, &e), 0);
    unlink(again);
    fm_model_destroy(&m);
    write_n(c->path, 65);
    expect_refused(c->path, FM_EARG, "%s: 65 tensors: a model spec has 1..64");
}

/* ---- the wire with a 64-view spec -------------------------------------------------------------
 */

static void test_wire_64(void **state)
{
    ctx_t *c = *state;
    int err = 0;
    fm_errmsg_t e = {{0}};
    write_n(c->path, 64);
    fm_model_t *m = fm_safetensors_load_spec(c->path, &err, &e);
    assert_non_null(m);
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_wire_update_t hdr = {.trainer = "py/1", .client = 3, .base = 1, .num_samples = 10};
    assert_int_equal(fm_wire_encode_update(&hdr, m, fm_model_params_const(m), &buf), 0);
    fm_wire_update_t back;
    fm_wire_tensors_t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    assert_int_equal(fm_wire_decode_update(buf.data, buf.len, &back, t, &e), 0);
    assert_string_equal(back.model, fm_model_name(m));
    assert_int_equal(t->count, 64);
    if (fm_wire_tensors_check(t, m, &e) != 0)
        fail_msg("tensors_check: %s", e.msg);
    float *dst = calloc(fm_model_nparams(m), sizeof *dst);
    assert_int_equal(fm_wire_tensors_copy(t, m, dst, &e), 0);
    assert_memory_equal(dst, fm_model_params_const(m), 4 * fm_model_nparams(m));
    /* the last view is checked like the first: a wrong shape, a missing and a duplicate */
    t->t[63].shape[0] = 63;
    assert_int_equal(fm_wire_tensors_check(t, m, &e), FM_ESHAPE);
    assert_string_equal(e.msg, "tensor 't63': shape [63], expected [64]");
    t->t[63].shape[0] = 64;
    t->count = 63;
    assert_int_equal(fm_wire_tensors_check(t, m, &e), FM_ENAME);
    char want[96];
    snprintf(want, sizeof want, "tensor 't63': missing (model '%s')", fm_model_name(m));
    assert_string_equal(e.msg, want);
    t->count = 64;
    snprintf(t->t[63].name, sizeof t->t[63].name, "t62");
    assert_int_equal(fm_wire_tensors_check(t, m, &e), FM_ENAME);
    assert_string_equal(e.msg, "tensor 't62': duplicate");
    free(dst);
    free(t);
    fm_wire_buf_free(&buf);
    fm_model_destroy(&m);
}

/* ---- fm_cfg_model
 * ------------------------------------------------------------------------------ */

static void test_cfg_model(void **state)
{
    ctx_t *c = *state;
    fm_config_t cfg;
    fm_cfg_defaults(&cfg);
    int err = 0;
    fm_errmsg_t e = {{0}};
    assert_null(fm_cfg_model_spec_path(&cfg));
    assert_int_equal(fm_cfg_model_builtin_only(&cfg, "why", &e), 0);
    fm_model_t *m = fm_cfg_model_new(&cfg, &err, &e);
    assert_non_null(m);
    assert_string_equal(fm_model_name(m), "cnn");
    fm_model_destroy(&m);

    /* the mlp-like spec of the fingerprint test: 159,010 parameters */
    static float w1[200 * 784], b1[200], w2[10 * 200], b2[10];
    w1[5] = 0.5f;
    b2[9] = -2.0f;
    fm_tensor_t t[] = {
        {.name = "fc1.weight", .dtype = "F32", .ndim = 2, .shape = {200, 784}, w1, sizeof w1},
        {.name = "fc1.bias", .dtype = "F32", .ndim = 1, .shape = {200}, b1, sizeof b1},
        {.name = "fc2.weight", .dtype = "F32", .ndim = 2, .shape = {10, 200}, w2, sizeof w2},
        {.name = "fc2.bias", .dtype = "F32", .ndim = 1, .shape = {10}, b2, sizeof b2},
    };
    assert_int_equal(fm_safetensors_write(c->path, t, 4, NULL, 0, &e), 0);
    char set[200];
    snprintf(set, sizeof set, "federation.model=file:%s", c->path);
    assert_int_equal(fm_cfg_set(&cfg, set, NULL, &e), 0);
    assert_string_equal(fm_cfg_model_spec_path(&cfg), c->path);
    m = fm_cfg_model_new(&cfg, &err, &e);
    assert_non_null(m);
    assert_string_equal(fm_model_name(m), "spec-1d7bf7f63b");
    assert_int_equal(fm_model_nparams(m), 159010);
    assert_true(fm_model_params_const(m)[5] == 0.5f);
    assert_true(fm_model_params_const(m)[159009] == -2.0f);
    fm_model_destroy(&m);
    char want[512];
    snprintf(want, sizeof want,
             "federation.model = file:%s is a custom model spec (spec-1d7bf7f63b, 4 tensors, "
             "159,010 parameters): fedmq-x runs only logreg, mlp and cnn",
             c->path);
    assert_int_equal(fm_cfg_model_builtin_only(&cfg, "fedmq-x runs only logreg, mlp and cnn", &e),
                     FM_EMODEL);
    assert_string_equal(e.msg, want);

    /* a spec file that does not load: the loader's line */
    unlink(c->path);
    assert_null(fm_cfg_model_new(&cfg, &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_int_not_equal(fm_cfg_model_builtin_only(&cfg, "why", &e), 0);
    assert_non_null(strstr(e.msg, c->path));

    char g[32];
    assert_string_equal(fm_cfg_model_grouped(0, g, sizeof g), "0");
    assert_string_equal(fm_cfg_model_grouped(999, g, sizeof g), "999");
    assert_string_equal(fm_cfg_model_grouped(1000, g, sizeof g), "1,000");
    assert_string_equal(fm_cfg_model_grouped(1199882, g, sizeof g), "1,199,882");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprints),
        cmocka_unit_test(test_new_spec),
        cmocka_unit_test_setup_teardown(test_load_accept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_64_65, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_model, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
