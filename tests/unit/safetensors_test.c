/* Unit tests of fm_safetensors: generic read/write, malformed files, model save/load, and
 * the PyTorch-generated golden fixtures in tests/fixtures. */
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

#include "fm_err.h"
#include "fm_model.h"
#include "fm_safetensors.h"

typedef struct {
    char dir[256]; /* mkdtemp() directory, removed at the end */
} ctx_t;

/* ---- helpers ---------------------------------------------------------------------------- */

static void path_in(void **state, char *out, size_t cap, const char *name)
{
    const ctx_t *c = *state;
    snprintf(out, cap, "%s/%s", c->dir, name);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n > 0)
        assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* A file with header length `hlen`, `ntext` bytes of header text and `ndata` data bytes. */
static void write_st(const char *path, uint64_t hlen, const char *text, size_t ntext,
                     const void *data, size_t ndata)
{
    size_t n = 8 + ntext + ndata;
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, text, ntext);
    if (ndata)
        memcpy(buf + 8 + ntext, data, ndata);
    write_bytes(path, buf, n);
    free(buf);
}

/* A well-formed layout: header `json` then `ndata` zero bytes of data. */
static void write_hdr(const char *path, const char *json, size_t ndata)
{
    unsigned char zeros[64] = {0};
    assert_true(ndata <= sizeof zeros);
    write_st(path, strlen(json), json, strlen(json), zeros, ndata);
}

/* The message is set, on one line, and names the file. */
static void assert_msg(const fm_errmsg_t *e, const char *path)
{
    if (e->msg[0] == '\0' || strchr(e->msg, '\n') || !strstr(e->msg, path))
        fail_msg("bad error message for %s: '%s'", path, e->msg);
}

/* Open `path`, expecting failure with `code` and a proper message. */
static void expect_open_error(const char *path, int code)
{
    fm_errmsg_t e = {{0}};
    int err = 12345;
    fm_safetensors_t *f = fm_safetensors_open(path, &err, &e);
    if (f || err != code)
        fail_msg("%s: expected %d (%s), got %d: %s", path, code, fm_strerror(code), err, e.msg);
    assert_msg(&e, path);
}

static fm_safetensors_t *open_ok(const char *path)
{
    fm_errmsg_t e = {{0}};
    int err = 12345;
    fm_safetensors_t *f = fm_safetensors_open(path, &err, &e);
    if (!f || err != 0)
        fail_msg("%s: open failed %d: %s", path, err, e.msg);
    return f;
}

/* 1 if the test directory holds a leftover temp file. */
static int has_temp_files(void **state)
{
    const ctx_t *c = *state;
    DIR *d = opendir(c->dir);
    assert_non_null(d);
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".tmp."))
            found = 1;
    closedir(d);
    return found;
}

static void assert_shape(const fm_tensor_t *t, int ndim, int64_t d0, int64_t d1, int64_t d2,
                         int64_t d3)
{
    const int64_t want[4] = {d0, d1, d2, d3};
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(t->shape[i], want[i]);
}

static int group_setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(c->dir, sizeof c->dir, "%s/fm_safetensors_test.XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(c->dir)) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int group_teardown(void **state)
{
    ctx_t *c = *state;
    DIR *d = opendir(c->dir);
    if (d) {
        struct dirent *de;
        char p[512];
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", c->dir, de->d_name);
            if (unlink(p) != 0)
                rmdir(p);
        }
        closedir(d);
    }
    int rc = rmdir(c->dir);
    free(c);
    return rc;
}

/* ---- generic read/write ----------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "roundtrip.safetensors");
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    double f64[4] = {1.0 / 3.0, -1e300, 2.5, 0.0};
    int64_t i64[8] = {INT64_MIN, -1, 0, 1, 2, 3, 4, INT64_MAX};
    int32_t i32[24];
    for (int i = 0; i < 24; i++)
        i32[i] = i * 1000003 - 7;
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 42.5f;
    const char *names[] = {"layer.weight",
                           "f64",
                           "quote\"back\\slash/sl",
                           "ctl\n\t\x01\x1f\b\f\r",
                           "u8",
                           "utf8 \xc3\xa9 \xe2\x9c\x93",
                           "scalar",
                           "empty"};
    fm_tensor_t t[8] = {
        {names[0], "F32", 2, {2, 3}, f32, sizeof f32},
        {names[1], "F64", 1, {4}, f64, sizeof f64},
        {names[2], "I64", 3, {2, 2, 2}, i64, sizeof i64},
        {names[3], "I32", 4, {1, 2, 3, 4}, i32, sizeof i32},
        {names[4], "U8", 1, {5}, u8, sizeof u8},
        {names[5], "F32", 2, {3, 2}, f32, sizeof f32}, /* after 5 U8 bytes: unaligned */
        {names[6], "F32", 0, {0}, &scalar, sizeof scalar},
        {names[7], "F32", 2, {0, 3}, NULL, 0},
    };
    const char *meta[] = {"format", "pt", "esc \"key\"\\\n", "val\t\xc3\xa9/", "empty", ""};
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(path, t, 8, meta, 3, &e), 0);
    assert_false(has_temp_files(state));

    /* layout: header length a multiple of 8 so the data section is 8-aligned */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char head[24];
    assert_int_equal(fread(head, 1, sizeof head, fp), sizeof head);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)head[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_memory_equal(head + 8, "{\"__metadata__\"", 15);

    fm_safetensors_t *f = open_ok(path);
    assert_int_equal(fm_safetensors_count(f), 8);
    for (int i = 0; i < 8; i++) {
        const fm_tensor_t *r = fm_safetensors_at(f, i);
        assert_non_null(r);
        assert_string_equal(r->name, names[i]);
        assert_string_equal(r->dtype, t[i].dtype);
        assert_int_equal(r->ndim, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            assert_int_equal(r->shape[d], t[i].shape[d]);
        assert_int_equal(r->nbytes, t[i].nbytes);
        if (t[i].nbytes)
            assert_memory_equal(r->data, t[i].data, t[i].nbytes);
        assert_ptr_equal(fm_safetensors_get(f, names[i]), r);
    }
    float s;
    memcpy(&s, fm_safetensors_get(f, "scalar")->data, sizeof s); /* borrowed, maybe unaligned */
    assert_true(s == 42.5f);
    assert_null(fm_safetensors_at(f, -1));
    assert_null(fm_safetensors_at(f, 8));
    assert_null(fm_safetensors_get(f, "nope"));
    assert_null(fm_safetensors_get(f, "layer.weigh"));
    assert_string_equal(fm_safetensors_meta(f, "format"), "pt");
    assert_string_equal(fm_safetensors_meta(f, "esc \"key\"\\\n"), "val\t\xc3\xa9/");
    assert_string_equal(fm_safetensors_meta(f, "empty"), "");
    assert_null(fm_safetensors_meta(f, "missing"));
    assert_null(fm_safetensors_meta(f, "__metadata__"));
    fm_safetensors_close(&f);
    assert_null(f);
    fm_safetensors_close(&f); /* idempotent */

    /* overwrite in place with different content, no metadata */
    assert_int_equal(fm_safetensors_write(path, t + 4, 1, NULL, 0, &e), 0);
    f = open_ok(path);
    assert_int_equal(fm_safetensors_count(f), 1);
    assert_string_equal(fm_safetensors_at(f, 0)->name, "u8");
    assert_null(fm_safetensors_meta(f, "format"));
    fm_safetensors_close(&f);
}

static void test_empty_file_list(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "empty.safetensors");
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(path, NULL, 0, NULL, 0, &e), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 16); /* length + "{}" padded to 8 */
    fm_safetensors_t *f = open_ok(path);
    assert_int_equal(fm_safetensors_count(f), 0);
    assert_null(fm_safetensors_get(f, "x"));
    fm_safetensors_close(&f);
}

/* Hand-written headers the format allows: whitespace anywhere, escapes (non-ASCII ones and
 * surrogate pairs too, as Python's json.dumps writes them), metadata last, unordered and
 * gapped offsets, trailing space padding. */
static void test_lenient_but_valid(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "valid.safetensors");
    const char *json = " \t\r\n{ \"b\" : { \"shape\" : [ 2 ] , \"data_offsets\" : [ 8 , 16 ] ,"
                       " \"dtype\" : \"F32\" } ,\n\"a\\u0041\\/\":{\"dtype\":\"U8\",\"shape\":[],"
                       "\"data_offsets\":[0,1]},\"__metadata__\":{}, \"h\":{\"dtype\":\"F16\","
                       "\"shape\":[0],\"data_offsets\":[16,16]},\"\\u00e9\\ud83d\\ude00\":{"
                       "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}     ";
    write_hdr(path, json, 16);
    fm_safetensors_t *f = open_ok(path);
    assert_int_equal(fm_safetensors_count(f), 4);
    assert_string_equal(fm_safetensors_at(f, 3)->name, "\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(fm_safetensors_at(f, 0)->name, "b");
    assert_string_equal(fm_safetensors_at(f, 1)->name, "aA/");
    assert_int_equal(fm_safetensors_get(f, "aA/")->ndim, 0);
    assert_int_equal(fm_safetensors_get(f, "b")->nbytes, 8);
    assert_string_equal(fm_safetensors_get(f, "h")->dtype, "F16");
    fm_safetensors_close(&f);
}

static void test_header_length(void **state)
{
    char path[512];
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    unsigned char data[4] = {0};
    path_in(state, path, sizeof path, "hlen_big.safetensors");
    write_st(path, 1000, json, strlen(json), data, sizeof data);
    expect_open_error(path, FM_ETRUNC);
    path_in(state, path, sizeof path, "hlen_off_by_one.safetensors");
    write_st(path, strlen(json) + 5, json, strlen(json), data, sizeof data);
    expect_open_error(path, FM_ETRUNC);
    /* absurd lengths are garbage, not truncation */
    path_in(state, path, sizeof path, "hlen_huge.safetensors");
    write_st(path, (uint64_t)1 << 40, json, strlen(json), data, sizeof data);
    expect_open_error(path, FM_EFORMAT);
    write_st(path, UINT64_MAX, json, strlen(json), data, sizeof data);
    expect_open_error(path, FM_EFORMAT);
}

static void test_bad_json(void **state)
{
    static const char *const bad[] = {
        "",
        "   ",
        "garbage!",
        "null",
        "[]",
        "\"a\"",
        "{",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",    /* missing } */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]",     /* missing }} */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", /* trailing */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}",  /* trailing , */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", /* bad numbers */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[+1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}", /* too deep */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":F32,\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{'a':{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":5}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", /* missing field */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
        "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}",
        "{\"__metadata__\":{\"k\":1}}",
        "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}",
        "{\"__metadata__\":{},\"__metadata__\":{}}",
        "{\"__metadata__\":[]}",
        "{\"a\\x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* bad escape */
        "{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* lone */
        "{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* control char */
        "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* bad UTF-8 */
        "{\"a\xc3\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"abc",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\x00", /* NUL padding */
    };
    char path[512];
    unsigned char data[8] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s/bad_json_%zu.safetensors", ((ctx_t *)*state)->dir, i);
        size_t n = strlen(bad[i]) +
                   (i == sizeof bad / sizeof bad[0] - 1); /* last: keep the NUL */
        write_st(path, n, bad[i], n, data, sizeof data);
        expect_open_error(path, FM_EFORMAT);
    }
    /* a header length that cuts a valid header text short: the rest would be "data" */
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    for (size_t cut = 1; cut < strlen(json); cut += 7) {
        snprintf(path, sizeof path, "%s/cut_%zu.safetensors", ((ctx_t *)*state)->dir, cut);
        write_st(path, cut, json, strlen(json), data, 4);
        expect_open_error(path, FM_EFORMAT);
    }
}

static void test_offsets_past_end(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "past_end.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    expect_open_error(path, FM_ETRUNC);
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 8);
    expect_open_error(path, FM_ETRUNC);
    write_hdr(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]}}", 8);
    expect_open_error(path, FM_ETRUNC);
    /* exactly at the end is fine */
    write_hdr(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]}}", 8);
    fm_safetensors_t *f = open_ok(path);
    fm_safetensors_close(&f);
}

static void test_offsets_vs_shape(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "shape.safetensors");
    static const char *const bad[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", /* 5 dims */
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I64\",\"shape\":[1152921504606846976,2],\"data_offsets\":[0,8]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_hdr(path, bad[i], 16);
        expect_open_error(path, FM_ESHAPE);
    }
}

static void test_dtype(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "dtype.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 8);
    expect_open_error(path, FM_EDTYPE);
    write_hdr(path, "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8);
    expect_open_error(path, FM_EDTYPE);
    write_hdr(path, "{\"a\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8);
    expect_open_error(path, FM_EDTYPE);
    /* F16 and BF16 parse (they are only refused when loading a model) */
    write_hdr(path,
              "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]}}",
              6);
    fm_safetensors_t *f = open_ok(path);
    assert_string_equal(fm_safetensors_get(f, "a")->dtype, "F16");
    assert_string_equal(fm_safetensors_get(f, "b")->dtype, "BF16");
    fm_safetensors_close(&f);
}

static void test_duplicate_names(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "dup.safetensors");
    write_hdr(path,
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
              3);
    expect_open_error(path, FM_EFORMAT);
    /* the same name spelled with an escape is still a duplicate */
    write_hdr(path,
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"\\u0061\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
              2);
    expect_open_error(path, FM_EFORMAT);
}

/* Open `path` expecting FM_EFORMAT, and a message free of any control character (parser
 * messages quote the input) that contains `needle` (if not NULL). */
static void expect_format_error(const char *path, const char *needle)
{
    fm_errmsg_t e = {{0}};
    expect_open_error(path, FM_EFORMAT);
    assert_null(fm_safetensors_open(path, NULL, &e));
    for (const char *p = e.msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            fail_msg("control character 0x%02x in '%s'", (unsigned char)*p, e.msg);
    if (needle && !strstr(e.msg, needle))
        fail_msg("message '%s' lacks '%s'", e.msg, needle);
}

/* What the JSON parser must refuse although the rest of the header would pass validation:
 * duplicates where the last one alone is valid, NUL (raw or escaped) where a C string would
 * stop early, integers outside int64, fractions where integers are required, arrays, deep
 * nesting. */
static void test_strict_json(void **state)
{
    /* the length of each literal, which may hold NUL bytes */
#define S_LIT(x)                                                                                 \
    {                                                                                            \
        x, sizeof(x) - 1                                                                         \
    }
    static const struct {
        const char *text;
        size_t len;
    } bad[] = {
        /* duplicates, the last one valid: last-one-wins would accept them */
        S_LIT("{\"a\":{\"dtype\":\"Q8\",\"shape\":[9],\"data_offsets\":[0,9]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[0,8],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"__metadata__\":{\"k\":5,\"k\":\"v\"}}"),
        /* NUL: escaped (a C string would read "F32") or raw, in a key, a value, between tokens */
        S_LIT("{\"a\":{\"dtype\":\"F32\\u0000x\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"__metadata__\":{\"k\":\"v\\u0000w\"}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\x00\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\x00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}\x00}"),
        /* integers: fractions and exponents of whole numbers, outside int64 */
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[-9223372036854775808,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[-9223372036854775809,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[0,18446744073709551620]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551617],"
              "\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\","
              "\"shape\":[1],\"data_offsets\":[4,1e400]}}"),
        /* valid JSON, not an object, or not objects where objects are required */
        S_LIT("[{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}]"),
        S_LIT("{\"a\":[\"F32\",[1],[0,4]]}"),
        S_LIT("{\"a\":{\"dtype\":[\"F32\"],\"shape\":[1],\"data_offsets\":[0,4]}}"),
        S_LIT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}"),
        S_LIT("{\"__metadata__\":\"k\"}"),
        S_LIT("{\"__metadata__\":{\"k\":null}}"),
        /* a terminal escape sequence in the input stays out of the message */
        S_LIT("{\"a\":\x1b[31m}"),
    };
#undef S_LIT
    char path[512];
    unsigned char data[8] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s/strict_%zu.safetensors", ((ctx_t *)*state)->dir, i);
        write_st(path, bad[i].len, bad[i].text, bad[i].len, data, sizeof data);
        expect_format_error(path, NULL);
    }

    /* the largest int64 parses; it then fails validation like any offset past the end */
    path_in(state, path, sizeof path, "int64_max.safetensors");
    write_hdr(path,
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807],"
              "\"data_offsets\":[0,9223372036854775807]}}",
              8);
    expect_open_error(path, FM_ETRUNC);

    /* nesting bombs: deeper than the parser's limit, in a tensor and in the metadata; and
     * nesting the parser accepts but the header's structure does not */
    enum { DEEP = 100000 };
    char *deep = malloc(6 * DEEP + 64);
    assert_non_null(deep);
    const char *const prefix[] = {
        "{\"a\":", "{\"__metadata__\":", "{\"a\":{\"dtype\":\"F32\",\"shape\":"};
    const char opener[] = {'[', '{', '['};
    const size_t depth[] = {DEEP, DEEP, 1000};
    for (int k = 0; k < 3; k++) {
        size_t n = (size_t)sprintf(deep, "%s", prefix[k]);
        for (size_t i = 0; i < depth[k]; i++)
            n += (size_t)sprintf(deep + n, "%s", opener[k] == '[' ? "[" : "{\"k\":");
        n += (size_t)sprintf(deep + n, "%s", opener[k] == '[' ? "" : "1");
        for (size_t i = 0; i < depth[k]; i++)
            deep[n++] = opener[k] == '[' ? ']' : '}';
        n += (size_t)sprintf(deep + n, "%s", k == 2 ? ",\"data_offsets\":[0,4]}}" : "}");
        snprintf(path, sizeof path, "%s/deep_%d.safetensors", ((ctx_t *)*state)->dir, k);
        write_st(path, n, deep, n, data, sizeof data);
        expect_format_error(path, k < 2 ? "malformed header JSON at header byte" : "shape");
    }
    free(deep);
}

/* The writer's header, byte for byte: compact JSON, "__metadata__" first, then the tensors
 * in the order given with contiguous data_offsets and fields in the reference order, then
 * spaces up to a multiple of 8; escapes as JSON requires, UTF-8 as is. */
static void test_writer_format(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "format.safetensors");
    float f32[2] = {1, 2};
    uint8_t u8[3] = {7, 8, 9};
    fm_tensor_t t[3] = {
        {"z.w", "F32", 1, {2}, f32, sizeof f32},
        {"a\"\\\n\x01\xc3\xa9/", "U8", 2, {3, 1}, u8, sizeof u8},
        {"s", "F32", 0, {0}, f32, sizeof(float)},
    };
    const char *meta[] = {"format", "pt", "b", "x\ty"};
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(path, t, 3, meta, 2, &e), 0);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"b\":\"x\\ty\"},"
                       "\"z.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"a\\\"\\\\\\n\\u0001\xc3\xa9/\":{\"dtype\":\"U8\",\"shape\":[3,1],"
                       "\"data_offsets\":[8,11]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[11,15]}}";
    size_t wlen = strlen(want), padded = (wlen + 7) / 8 * 8;
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char buf[512];
    size_t got = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_int_equal(got, 8 + padded + 15);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    assert_int_equal(hlen, padded);
    if (memcmp(buf + 8, want, wlen) != 0)
        fail_msg("header\n  got  %.*s\n  want %s", (int)wlen, buf + 8, want);
    for (size_t i = wlen; i < padded; i++)
        assert_int_equal(buf[8 + i], ' ');
    assert_memory_equal(buf + 8 + padded, f32, 8);
    assert_memory_equal(buf + 8 + padded + 8, u8, 3);

    /* data_offsets are int64 in JSON: a data section past 2^63-1 bytes is refused before
     * anything is written (the data is never read) */
    path_in(state, path, sizeof path, "huge.safetensors");
    fm_tensor_t big[2] = {
        {"a", "U8", 1, {(int64_t)1 << 62}, u8, (size_t)1 << 62},
        {"b", "U8", 1, {(int64_t)1 << 62}, u8, (size_t)1 << 62},
    };
    assert_int_equal(fm_safetensors_write(path, big, 2, NULL, 0, &e), FM_EARG);
    assert_msg(&e, path);
    assert_int_equal(access(path, F_OK), -1);
    assert_false(has_temp_files(state));
}

static void test_short_and_missing_files(void **state)
{
    char path[512];
    path_in(state, path, sizeof path, "zero.safetensors");
    write_bytes(path, "", 0);
    expect_open_error(path, FM_ETRUNC);
    path_in(state, path, sizeof path, "five.safetensors");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_open_error(path, FM_ETRUNC);
    path_in(state, path, sizeof path, "does-not-exist.safetensors");
    expect_open_error(path, -ENOENT);
    expect_open_error(((ctx_t *)*state)->dir, -EISDIR);

    int err = 0;
    assert_null(fm_safetensors_open(NULL, &err, NULL));
    assert_int_equal(err, FM_EARG);
    assert_null(fm_safetensors_open(path, NULL, NULL)); /* err and e may be NULL */
    assert_int_equal(fm_safetensors_count(NULL), 0);
    assert_null(fm_safetensors_get(NULL, "a"));
    assert_null(fm_safetensors_meta(NULL, "a"));
}

static void test_write_errors(void **state)
{
    char path[512];
    fm_errmsg_t e = {{0}};
    float v[2] = {1, 2};
    fm_tensor_t ok = {"a", "F32", 1, {2}, v, sizeof v};

    path_in(state, path, sizeof path, "no/such/dir/x.safetensors");
    assert_int_equal(fm_safetensors_write(path, &ok, 1, NULL, 0, &e), -ENOENT);
    assert_msg(&e, path);

    /* rename onto a directory fails: the temp file must be removed */
    const char *dir = ((ctx_t *)*state)->dir;
    snprintf(path, sizeof path, "%s/subdir", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    int rc = fm_safetensors_write(path, &ok, 1, NULL, 0, &e);
    assert_true(rc == -EISDIR || rc == -EEXIST || rc == -ENOTEMPTY);
    assert_msg(&e, path);
    assert_false(has_temp_files(state));
    assert_int_equal(rmdir(path), 0);

    path_in(state, path, sizeof path, "bad_args.safetensors");
    fm_tensor_t t[2] = {ok, ok};
    fm_tensor_t cases[8];
    for (int i = 0; i < 8; i++)
        cases[i] = ok;
    cases[0].dtype = "Q8";
    cases[1].nbytes = 4;
    cases[2].ndim = 5;
    cases[3].shape[0] = -2;
    cases[4].name = "__metadata__";
    cases[5].name = NULL;
    cases[6].data = NULL;
    cases[7].name = "bad\xffutf8";
    for (int i = 0; i < 8; i++) {
        e.msg[0] = '\0';
        assert_int_equal(fm_safetensors_write(path, &cases[i], 1, NULL, 0, &e), FM_EARG);
        assert_msg(&e, path);
    }
    assert_int_equal(fm_safetensors_write(path, t, 2, NULL, 0, &e), FM_EARG); /* duplicate */
    assert_msg(&e, path);
    const char *meta_dup[] = {"k", "v", "k", "w"};
    assert_int_equal(fm_safetensors_write(path, &ok, 1, meta_dup, 2, &e), FM_EARG);
    const char *meta_null[] = {"k", NULL};
    assert_int_equal(fm_safetensors_write(path, &ok, 1, meta_null, 1, &e), FM_EARG);
    assert_int_equal(fm_safetensors_write(path, NULL, 1, NULL, 0, &e), FM_EARG);
    assert_int_equal(fm_safetensors_write(NULL, &ok, 1, NULL, 0, &e), FM_EARG);
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
    assert_false(has_temp_files(state));
}

/* ---- models ----------------------------------------------------------------------------- */

static fm_model_t *new_model(const char *name, uint64_t seed)
{
    int err = 0;
    fm_model_t *m = fm_model_new(name, &err);
    if (!m)
        fail_msg("fm_model_new(%s): %d %s", name, err, fm_strerror(err));
    if (seed)
        fm_model_init(m, seed);
    return m;
}

/* The model's views as tensors (as fm_safetensors_save_model writes them); returns n. */
static int model_tensors(const fm_model_t *m, fm_tensor_t *t)
{
    int n = fm_model_nviews(m);
    for (int i = 0; i < n; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        t[i] = (fm_tensor_t){v->name,
                             "F32",
                             v->ndim,
                             {0},
                             fm_model_params_const(m) + v->offset,
                             v->numel * sizeof(float)};
        memcpy(t[i].shape, v->shape, sizeof t[i].shape);
    }
    return n;
}

static void test_model_roundtrip(void **state)
{
    static const char *const archs[] = {"cnn", "mlp", "logreg"};
    char path[512];
    for (int a = 0; a < 3; a++) {
        snprintf(path, sizeof path, "%s/model_%s.safetensors", ((ctx_t *)*state)->dir, archs[a]);
        fm_model_t *src = new_model(archs[a], 1234 + (uint64_t)a);
        fm_model_t *dst = new_model(archs[a], 0);
        fm_errmsg_t e = {{0}};
        assert_int_equal(fm_safetensors_save_model(src, path, &e), 0);
        assert_int_equal(fm_safetensors_load_model(dst, path, &e), 0);
        assert_int_equal(fm_model_nparams(src), fm_model_nparams(dst));
        assert_memory_equal(fm_model_params_const(src), fm_model_params_const(dst),
                            fm_model_nparams(src) * sizeof(float));

        fm_safetensors_t *f = open_ok(path);
        assert_int_equal(fm_safetensors_count(f), fm_model_nviews(src));
        assert_string_equal(fm_safetensors_meta(f, "fedmq_model"), archs[a]);
        assert_string_equal(fm_safetensors_meta(f, "format"), "pt");
        for (int i = 0; i < fm_model_nviews(src); i++)
            assert_string_equal(fm_safetensors_at(f, i)->name, fm_model_view(src, i)->name);
        fm_safetensors_close(&f);
        assert_false(has_temp_files(state));
        fm_model_destroy(&src);
        fm_model_destroy(&dst);
    }
}

/* Load `path` into a seeded `arch` model expecting `code`, a message containing `needle`, and the
 * model unchanged. */
static void expect_load_error(const char *arch, const char *path, int code, const char *needle)
{
    fm_model_t *m = new_model(arch, 99);
    size_t nbytes = fm_model_nparams(m) * sizeof(float);
    float *before = malloc(nbytes);
    assert_non_null(before);
    memcpy(before, fm_model_params_const(m), nbytes);
    fm_errmsg_t e = {{0}};
    int rc = fm_safetensors_load_model(m, path, &e);
    if (rc != code)
        fail_msg("%s into %s: expected %d (%s), got %d: %s", path, arch, code, fm_strerror(code),
                 rc, e.msg);
    assert_msg(&e, path);
    if (needle && !strstr(e.msg, needle))
        fail_msg("message '%s' lacks '%s'", e.msg, needle);
    assert_memory_equal(before, fm_model_params_const(m), nbytes);
    free(before);
    fm_model_destroy(&m);
}

static void test_model_load_errors(void **state)
{
    char path[512];
    fm_errmsg_t e = {{0}};
    fm_model_t *cnn = new_model("cnn", 5);
    fm_tensor_t t[FM_MAX_VIEWS + 1];
    int n = model_tensors(cnn, t);
    assert_int_equal(n, 8);

    path_in(state, path, sizeof path, "cnn.safetensors");
    assert_int_equal(fm_safetensors_save_model(cnn, path, &e), 0);
    expect_load_error("mlp", path, FM_ENAME, "for model mlp");
    expect_load_error("logreg", path, FM_ENAME, NULL);

    path_in(state, path, sizeof path, "cnn_missing.safetensors");
    assert_int_equal(fm_safetensors_write(path, t, n - 1, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ENAME, "missing tensor 'fc2.bias' for model cnn");

    path_in(state, path, sizeof path, "cnn_extra.safetensors");
    float one = 1.0f;
    t[n] = (fm_tensor_t){"foo", "F32", 1, {1}, &one, sizeof one};
    assert_int_equal(fm_safetensors_write(path, t, n + 1, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ENAME, "unknown tensor 'foo' for model cnn");
    t[n].name = "evil\nname";
    assert_int_equal(fm_safetensors_write(path, t, n + 1, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ENAME, "unknown tensor 'evil?name'");

    path_in(state, path, sizeof path, "cnn_shape.safetensors");
    fm_tensor_t saved = t[4];
    assert_string_equal(t[4].name, "fc1.weight");
    t[4].shape[1] = 9000;
    t[4].nbytes = 128 * 9000 * sizeof(float);
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ESHAPE,
                      "tensor 'fc1.weight' has shape [128,9000], expected [128,9216]");
    t[4] = saved;
    t[4].ndim = 1;
    t[4].shape[0] = 128 * 9216;
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ESHAPE, "expected [128,9216]");
    t[4] = saved;

    path_in(state, path, sizeof path, "cnn_f64.safetensors");
    double d[288] = {0};
    saved = t[0];
    assert_string_equal(t[0].name, "conv1.weight");
    t[0].dtype = "F64";
    t[0].data = d;
    t[0].nbytes = sizeof d;
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_EDTYPE,
                      "tensor 'conv1.weight' has dtype F64, expected F32");
    uint16_t h[288] = {0};
    t[0].dtype = "F16";
    t[0].data = h;
    t[0].nbytes = sizeof h;
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_EDTYPE, "has dtype F16, expected F32");
    t[0] = saved;

    path_in(state, path, sizeof path, "cnn_nan.safetensors");
    float bias[128];
    memcpy(bias, t[5].data, sizeof bias);
    assert_string_equal(t[5].name, "fc1.bias");
    bias[77] = NAN;
    saved = t[5];
    t[5].data = bias;
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ENONFINITE, "fc1.bias");
    bias[77] = -INFINITY;
    assert_int_equal(fm_safetensors_write(path, t, n, NULL, 0, &e), 0);
    expect_load_error("cnn", path, FM_ENONFINITE, "fc1.bias");
    t[5] = saved;

    /* file-level errors pass through, the model untouched */
    path_in(state, path, sizeof path, "cnn_absent.safetensors");
    expect_load_error("cnn", path, -ENOENT, NULL);
    path_in(state, path, sizeof path, "cnn_garbage.safetensors");
    write_bytes(path, "\x04\0\0\0\0\0\0\0{]}x", 12);
    expect_load_error("cnn", path, FM_EFORMAT, NULL);

    /* tensors in another order (and not contiguous in model order) still load */
    path_in(state, path, sizeof path, "cnn_reversed.safetensors");
    fm_tensor_t r[8];
    for (int i = 0; i < n; i++)
        r[i] = t[n - 1 - i];
    assert_int_equal(fm_safetensors_write(path, r, n, NULL, 0, &e), 0);
    fm_model_t *dst = new_model("cnn", 0);
    assert_int_equal(fm_safetensors_load_model(dst, path, &e), 0);
    assert_memory_equal(fm_model_params_const(cnn), fm_model_params_const(dst),
                        fm_model_nparams(cnn) * sizeof(float));
    fm_model_destroy(&dst);
    fm_model_destroy(&cnn);
}

/* ---- golden fixtures written by tests/fixtures/gen_golden.py (PyTorch) -------------------- */

static void check_fixture(void **state, const char *file, const char *arch, int batch,
                          int with_step1, const char *clip)
{
    char path[512], name[128], tmp[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", FM_SOURCE_DIR, file);
    fm_safetensors_t *f = open_ok(path);
    assert_string_equal(fm_safetensors_meta(f, "model"), arch);
    char b[16];
    snprintf(b, sizeof b, "%d", batch);
    assert_string_equal(fm_safetensors_meta(f, "batch"), b);
    assert_string_equal(fm_safetensors_meta(f, "clip_max_norm"), clip);
    static const char *const keys[] = {"lr", "momentum",      "weight_decay",
                                       "mu", "torch_version", "loss_def"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(fm_safetensors_meta(f, keys[i]));

    const fm_tensor_t *x = fm_safetensors_get(f, "x"), *y = fm_safetensors_get(f, "y"),
                      *loss = fm_safetensors_get(f, "loss");
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(loss);
    assert_string_equal(x->dtype, "F32");
    assert_shape(x, 4, batch, 1, 28, 28);
    assert_string_equal(y->dtype, "I64");
    assert_shape(y, 1, batch, 0, 0, 0);
    for (int i = 0; i < batch; i++) {
        int64_t label;
        memcpy(&label, (const unsigned char *)y->data + 8 * (size_t)i, sizeof label);
        assert_in_range(label, 0, 9);
    }
    assert_string_equal(loss->dtype, "F32");
    assert_shape(loss, 1, 3, 0, 0, 0);
    for (int i = 0; i < 3; i++) {
        float l;
        memcpy(&l, (const unsigned char *)loss->data + 4 * (size_t)i, sizeof l);
        assert_true(isfinite(l) && l > 0.5f && l < 5.0f);
    }

    fm_model_t *m = new_model(arch, 0);
    int nv = fm_model_nviews(m);
    int expected = 3 + nv * (with_step1 ? 4 : 2);
    assert_int_equal(fm_safetensors_count(f), expected);
    static const char *const prefixes[] = {"init.", "step3.", "grad0.", "step1."};
    for (int p = 0; p < (with_step1 ? 4 : 2); p++)
        for (int i = 0; i < nv; i++) {
            const fm_view_t *v = fm_model_view(m, i);
            snprintf(name, sizeof name, "%s%s", prefixes[p], v->name);
            const fm_tensor_t *t = fm_safetensors_get(f, name);
            if (!t)
                fail_msg("%s: no tensor %s", path, name);
            assert_string_equal(t->dtype, "F32");
            assert_int_equal(t->ndim, v->ndim);
            for (int d = 0; d < v->ndim; d++)
                assert_int_equal(t->shape[d], v->shape[d]);
        }

    /* cross-check: the init.* tensors renamed to the model's names load into fm_model */
    fm_tensor_t t[FM_MAX_VIEWS];
    for (int i = 0; i < nv; i++) {
        snprintf(name, sizeof name, "init.%s", fm_model_view(m, i)->name);
        t[i] = *fm_safetensors_get(f, name);
        t[i].name = fm_model_view(m, i)->name;
    }
    snprintf(tmp, sizeof tmp, "%s/init_%s", ((ctx_t *)*state)->dir, file);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_safetensors_write(tmp, t, nv, NULL, 0, &e), 0);
    assert_int_equal(fm_safetensors_load_model(m, tmp, &e), 0);
    for (int i = 0; i < nv; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        assert_memory_equal(fm_model_params_const(m) + v->offset, t[i].data, t[i].nbytes);
        snprintf(name, sizeof name, "step3.%s", v->name);
        const fm_tensor_t *s3 = fm_safetensors_get(f, name);
        assert_int_equal(s3->nbytes, t[i].nbytes);
        assert_true(memcmp(s3->data, t[i].data, t[i].nbytes) != 0); /* training moved it */
    }
    fm_model_destroy(&m);
    fm_safetensors_close(&f);
}

static void test_fixtures(void **state)
{
    check_fixture(state, "golden_mlp_plain.safetensors", "mlp", 16, 1, "0");
    check_fixture(state, "golden_mlp_full.safetensors", "mlp", 16, 1, "1.0");
    check_fixture(state, "golden_cnn_plain.safetensors", "cnn", 8, 0, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),         cmocka_unit_test(test_empty_file_list),
        cmocka_unit_test(test_lenient_but_valid), cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_json),          cmocka_unit_test(test_offsets_past_end),
        cmocka_unit_test(test_offsets_vs_shape),  cmocka_unit_test(test_dtype),
        cmocka_unit_test(test_duplicate_names),   cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_writer_format),     cmocka_unit_test(test_short_and_missing_files),
        cmocka_unit_test(test_write_errors),      cmocka_unit_test(test_model_roundtrip),
        cmocka_unit_test(test_model_load_errors), cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
