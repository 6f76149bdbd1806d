/* Unit tests for fm_data: IDX loading (raw and gzipped, every bad-input case), the real
 * Fashion-MNIST files, the iid / dirichlet / shards partitions, and the held-out split
 * (fm_partition_holdout). */
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
#include <zlib.h>

#include <cmocka.h>

#include "fm_data.h"

/* The old out-parameter shape over the CLASS constructors, for the many checks below. */
static int s_load(fm_dataset_t **out, const char *images, const char *labels, float mean,
                  float std, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_dataset_load(images, labels, mean, std, &err, e);
    return *out ? 0 : err;
}

static int s_load_dir(fm_dataset_t **out, const char *dir, const char *split, float mean,
                      float std, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_dataset_load_dir(dir, split, mean, std, &err, e);
    return *out ? 0 : err;
}

static int s_part_new(fm_partition_t **out, const fm_dataset_t *ds, const char *spec,
                      uint32_t nclients, uint64_t seed, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_partition_new(ds, spec, nclients, seed, &err, e);
    return *out ? 0 : err;
}

#define N_SYN 20
#define ROWS 28
#define COLS 28
#define MEAN FM_FASHION_MEAN
#define STD FM_FASHION_STD

/* ---- fixtures: a private temp directory per test ---------------------------------------- */

typedef struct {
    char dir[256];
} fx_t;

static int s_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/fm_data_test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

/* Remove the temp directory's files (flat: tests create no subdirectories) and itself. */
static int s_teardown(void **state)
{
    fx_t *fx = *state;
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *de;
        char p[512];
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", fx->dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    int rc = rmdir(fx->dir);
    free(fx);
    return rc;
}

static const char *s_path(const fx_t *fx, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", fx->dir, name);
    return buf;
}

/* ---- synthetic IDX files ------------------------------------------------------------------ */

static uint8_t s_pixel(uint32_t i, uint32_t r, uint32_t c)
{
    return (uint8_t)(i * 37 + r * 11 + c * 3);
}

static void s_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Write `len` bytes to `path`, gzipped (zlib "wb") or raw. */
static void s_write(const char *path, const uint8_t *buf, size_t len, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (len)
            assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        if (len)
            assert_int_equal(fwrite(buf, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
    }
}

static uint8_t *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    assert_true(sz > 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)sz);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

/* An images file: `magic`, header dims (n, rows, cols), the first `keep` payload bytes
 * (SIZE_MAX: all of them). */
static void s_write_images(const char *path, uint32_t magic, uint32_t n, uint32_t rows,
                           uint32_t cols, size_t keep, int gz)
{
    size_t payload = (size_t)n * rows * cols;
    if (keep > payload)
        keep = payload;
    uint8_t *buf = malloc(16 + keep + 1);
    assert_non_null(buf);
    s_put_be32(buf, magic);
    s_put_be32(buf + 4, n);
    s_put_be32(buf + 8, rows);
    s_put_be32(buf + 12, cols);
    for (size_t k = 0; k < keep; k++) {
        uint32_t i = (uint32_t)(k / ((size_t)rows * cols)),
                 rc = (uint32_t)(k % ((size_t)rows * cols));
        buf[16 + k] = s_pixel(i, rc / cols, rc % cols);
    }
    s_write(path, buf, 16 + keep, gz);
    free(buf);
}

/* A labels file: `magic`, n, labels i % 10 except label `bad` at index `bad_at` (if < n). */
static void s_write_labels(const char *path, uint32_t magic, uint32_t n, uint32_t bad_at,
                           uint8_t bad, int gz)
{
    uint8_t *buf = malloc(8 + (size_t)n);
    assert_non_null(buf);
    s_put_be32(buf, magic);
    s_put_be32(buf + 4, n);
    for (uint32_t i = 0; i < n; i++)
        buf[8 + i] = i == bad_at ? bad : (uint8_t)(i % 10);
    s_write(path, buf, 8 + (size_t)n, gz);
    free(buf);
}

/* A good synthetic pair "<stem>-images" / "<stem>-labels" (N_SYN 28x28 images). */
static void s_write_pair(const fx_t *fx, const char *img, const char *lab, int gz)
{
    char p[512];
    s_write_images(s_path(fx, img, p, sizeof p), 0x803, N_SYN, ROWS, COLS, SIZE_MAX, gz);
    s_write_labels(s_path(fx, lab, p, sizeof p), 0x801, N_SYN, UINT32_MAX, 0, gz);
}

/* The failed load returned `want`, left *out NULL and wrote one line containing `needle`. */
static void s_check_err(int rc, int want, const fm_dataset_t *ds, const fm_errmsg_t *e,
                        const char *needle)
{
    if (rc != want || !strstr(e->msg, needle) || strchr(e->msg, '\n'))
        fail_msg("rc %d (want %d), msg '%s' (want one line naming '%s')", rc, want, e->msg,
                 needle);
    assert_null(ds);
}

static float s_norm(uint8_t p) { return ((float)p / 255.0f - MEAN) / STD; }

/* Every pixel and label of a loaded synthetic pair. */
static void s_check_synthetic(const fm_dataset_t *ds)
{
    assert_int_equal(ds->n, N_SYN);
    assert_int_equal(ds->rows, ROWS);
    assert_int_equal(ds->cols, COLS);
    for (uint32_t i = 0; i < N_SYN; i++) {
        assert_int_equal(ds->y[i], i % 10);
        for (uint32_t r = 0; r < ROWS; r++)
            for (uint32_t c = 0; c < COLS; c++)
                assert_true(ds->x[((size_t)i * ROWS + r) * COLS + c] == s_norm(s_pixel(i, r, c)));
    }
}

/* ---- loading ------------------------------------------------------------------------------ */

static void test_load_raw_and_gz(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512], gi[512], gl[512];
    s_write_pair(fx, "raw-images", "raw-labels", 0);
    s_write_pair(fx, "gz-images.gz", "gz-labels.gz", 1);
    fm_errmsg_t e = {{0}};
    fm_dataset_t *raw = NULL, *gz = NULL, *mixed = NULL;

    assert_int_equal(s_load(&raw, s_path(fx, "raw-images", pi, sizeof pi),
                            s_path(fx, "raw-labels", pl, sizeof pl), MEAN, STD, &e),
                     0);
    assert_int_equal(s_load(&gz, s_path(fx, "gz-images.gz", gi, sizeof gi),
                            s_path(fx, "gz-labels.gz", gl, sizeof gl), MEAN, STD, &e),
                     0);
    assert_int_equal(s_load(&mixed, gi, pl, MEAN, STD, &e), 0);
    s_check_synthetic(raw);
    s_check_synthetic(gz);
    s_check_synthetic(mixed);
    assert_memory_equal(raw->x, gz->x, (size_t)N_SYN * ROWS * COLS * sizeof(float));

    /* Exact values: pixel (0,0,0) is 0 and (0,0,1) is 3; check against the formula in double. */
    assert_int_equal(s_pixel(0, 0, 0), 0);
    assert_true(raw->x[0] == (0.0f - MEAN) / STD);
    assert_true(fabs(raw->x[0] - (0.0 - 0.2860) / 0.3530) < 1e-6);
    assert_true(fabs(raw->x[1] - (3.0 / 255.0 - 0.2860) / 0.3530) < 1e-6);
    /* A different normalisation: mean 0, std 1 gives p / 255. */
    fm_dataset_t *unit = NULL;
    assert_int_equal(s_load(&unit, pi, pl, 0.0f, 1.0f, &e), 0);
    assert_true(unit->x[1] == 3.0f / 255.0f);
    assert_true(unit->x[(size_t)7 * ROWS * COLS] == (float)s_pixel(7, 0, 0) / 255.0f);

    fm_dataset_destroy(&raw);
    fm_dataset_destroy(&gz);
    fm_dataset_destroy(&mixed);
    fm_dataset_destroy(&unit);
    assert_null(raw);
    fm_dataset_destroy(&raw); /* idempotent */
    fm_dataset_destroy(NULL);
}

static void test_load_dir(void **state)
{
    fx_t *fx = *state;
    /* train gzipped, t10k plain: .gz is tried first, then the plain name. */
    s_write_pair(fx, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 1);
    s_write_pair(fx, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 0);
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    assert_int_equal(s_load_dir(&ds, fx->dir, "train", MEAN, STD, &e), 0);
    s_check_synthetic(ds);
    fm_dataset_destroy(&ds);
    assert_int_equal(s_load_dir(&ds, fx->dir, "t10k", MEAN, STD, &e), 0);
    s_check_synthetic(ds);
    fm_dataset_destroy(&ds);

    /* Both names missing: -ENOENT naming the .gz path and the directory. */
    char want[512];
    snprintf(want, sizeof want, "%s/valid-images-idx3-ubyte.gz", fx->dir);
    int rc = s_load_dir(&ds, fx->dir, "valid", MEAN, STD, &e);
    s_check_err(rc, -ENOENT, ds, &e, want);
    snprintf(want, sizeof want, "'%s'", fx->dir);
    s_check_err(rc, -ENOENT, ds, &e, want);

    /* Images present, labels missing. */
    char p[512];
    s_write_images(s_path(fx, "half-images-idx3-ubyte", p, sizeof p), 0x803, N_SYN, ROWS, COLS,
                   SIZE_MAX, 0);
    snprintf(want, sizeof want, "%s/half-labels-idx1-ubyte.gz", fx->dir);
    rc = s_load_dir(&ds, fx->dir, "half", MEAN, STD, &e);
    s_check_err(rc, -ENOENT, ds, &e, want);
}

static void test_wrong_magic(void **state)
{
    fx_t *fx = *state;
    char gi[512], gl[512], bi[512], bl[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_pair(fx, "good-images", "good-labels", 0);
    s_path(fx, "good-images", gi, sizeof gi);
    s_path(fx, "good-labels", gl, sizeof gl);

    /* images file carrying the labels magic (and vice versa), raw and gzipped */
    for (int gz = 0; gz < 2; gz++) {
        s_write_images(s_path(fx, gz ? "bad-images.gz" : "bad-images", bi, sizeof bi), 0x801,
                       N_SYN, ROWS, COLS, SIZE_MAX, gz);
        s_write_labels(s_path(fx, gz ? "bad-labels.gz" : "bad-labels", bl, sizeof bl), 0x803,
                       N_SYN, UINT32_MAX, 0, gz);
        int rc = s_load(&ds, bi, gl, MEAN, STD, &e);
        s_check_err(rc, FM_EMAGIC, ds, &e, bi);
        s_check_err(rc, FM_EMAGIC, ds, &e, "0x00000801");
        s_check_err(rc, FM_EMAGIC, ds, &e, "expected 0x00000803");
        rc = s_load(&ds, gi, bl, MEAN, STD, &e);
        s_check_err(rc, FM_EMAGIC, ds, &e, bl);
        s_check_err(rc, FM_EMAGIC, ds, &e, "expected 0x00000801");
    }
    /* the two files swapped: the images argument is a labels file */
    int rc = s_load(&ds, gl, gi, MEAN, STD, &e);
    s_check_err(rc, FM_EMAGIC, ds, &e, gl);
    /* a text file */
    s_write((const char *)s_path(fx, "text", bi, sizeof bi), (const uint8_t *)"hello world\n", 12,
            0);
    rc = s_load(&ds, bi, gl, MEAN, STD, &e);
    s_check_err(rc, FM_EMAGIC, ds, &e, bi);
}

static void test_truncated(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512], gl[512], p[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_pair(fx, "good-images", "good-labels", 0);
    s_path(fx, "good-labels", gl, sizeof gl);

    /* 19.5 images of 20: raw, and a complete gzip stream holding too few bytes */
    size_t keep = (size_t)N_SYN * ROWS * COLS - ROWS * COLS / 2;
    char promised[32], has[32];
    snprintf(promised, sizeof promised, "promises %u bytes", N_SYN * ROWS * COLS);
    snprintf(has, sizeof has, "file has %zu", keep);
    for (int gz = 0; gz < 2; gz++) {
        s_write_images(s_path(fx, gz ? "short-images.gz" : "short-images", pi, sizeof pi), 0x803,
                       N_SYN, ROWS, COLS, keep, gz);
        int rc = s_load(&ds, pi, gl, MEAN, STD, &e);
        s_check_err(rc, FM_ETRUNC, ds, &e, pi);
        s_check_err(rc, FM_ETRUNC, ds, &e, promised);
        s_check_err(rc, FM_ETRUNC, ds, &e, has);
    }
    /* a header cut short, and an empty file */
    s_write_images(s_path(fx, "good-images", pi, sizeof pi), 0x803, N_SYN, ROWS, COLS, SIZE_MAX,
                   0);
    size_t len = 0;
    uint8_t *buf = s_slurp(pi, &len);
    s_write(s_path(fx, "hdr-images", p, sizeof p), buf, 10, 0);
    int rc = s_load(&ds, p, gl, MEAN, STD, &e);
    s_check_err(rc, FM_ETRUNC, ds, &e, p);
    s_write(s_path(fx, "empty-images", p, sizeof p), buf, 0, 0);
    rc = s_load(&ds, p, gl, MEAN, STD, &e);
    s_check_err(rc, FM_ETRUNC, ds, &e, p);
    free(buf);

    /* labels cut short (header says 20, file has 15) */
    buf = s_slurp(gl, &len);
    s_write(s_path(fx, "short-labels", pl, sizeof pl), buf, 8 + 15, 0);
    free(buf);
    rc = s_load(&ds, pi, pl, MEAN, STD, &e);
    s_check_err(rc, FM_ETRUNC, ds, &e, pl);
    s_check_err(rc, FM_ETRUNC, ds, &e, "promises 20 bytes of labels, file has 15");
}

/* A .gz cut in the middle is FM_ETRUNC (the input ends before the header's byte count;
 * zlib reports "unexpected end of file", not a data error). */
static void test_truncated_gzip(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512], p[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_pair(fx, "images.gz", "labels.gz", 1);
    s_path(fx, "images.gz", pi, sizeof pi);
    s_path(fx, "labels.gz", pl, sizeof pl);
    size_t len = 0;
    uint8_t *buf = s_slurp(pi, &len);
    size_t cuts[] = {len / 2, 12, 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        s_write(s_path(fx, "cut-images.gz", p, sizeof p), buf, cuts[i], 0);
        int rc = s_load(&ds, p, pl, MEAN, STD, &e);
        s_check_err(rc, FM_ETRUNC, ds, &e, p);
    }
    free(buf);
}

/* Bad deflate data or a wrong gzip CRC is FM_EFORMAT with zlib's message. */
static void test_corrupt_gzip(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512], p[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_pair(fx, "images.gz", "labels.gz", 1);
    s_path(fx, "images.gz", pi, sizeof pi);
    s_path(fx, "labels.gz", pl, sizeof pl);
    size_t len = 0;
    uint8_t *buf = s_slurp(pi, &len);
    assert_int_equal(buf[0], 0x1f);
    assert_int_equal(buf[3], 0); /* no optional header fields: deflate data starts at 10 */

    buf[10] = 0xff; /* first deflate block: BTYPE 11, reserved -> "invalid block type" */
    s_write(s_path(fx, "bad-deflate.gz", p, sizeof p), buf, len, 0);
    int rc = s_load(&ds, p, pl, MEAN, STD, &e);
    s_check_err(rc, FM_EFORMAT, ds, &e, p);
    s_check_err(rc, FM_EFORMAT, ds, &e, "corrupt gzip");
    free(buf);

    buf = s_slurp(pi, &len);
    buf[len - 8] ^= 0xff; /* the CRC32 in the trailer */
    s_write(s_path(fx, "bad-crc.gz", p, sizeof p), buf, len, 0);
    rc = s_load(&ds, p, pl, MEAN, STD, &e);
    s_check_err(rc, FM_EFORMAT, ds, &e, p);
    s_check_err(rc, FM_EFORMAT, ds, &e, "incorrect data check");
    free(buf);
}

static void test_count_mismatch_and_labels(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_images(s_path(fx, "images", pi, sizeof pi), 0x803, N_SYN, ROWS, COLS, SIZE_MAX, 0);

    s_write_labels(s_path(fx, "labels19", pl, sizeof pl), 0x801, N_SYN - 1, UINT32_MAX, 0, 0);
    int rc = s_load(&ds, pi, pl, MEAN, STD, &e);
    s_check_err(rc, FM_ESHAPE, ds, &e, pi);
    s_check_err(rc, FM_ESHAPE, ds, &e, pl);

    s_write_labels(s_path(fx, "labels12.gz", pl, sizeof pl), 0x801, N_SYN, 5, 12, 1);
    rc = s_load(&ds, pi, pl, MEAN, STD, &e);
    s_check_err(rc, FM_ESHAPE, ds, &e, pl);
    s_check_err(rc, FM_ESHAPE, ds, &e, "label 12 at index 5");

    s_write_labels(s_path(fx, "labels10", pl, sizeof pl), 0x801, N_SYN, N_SYN - 1, 10, 0);
    rc = s_load(&ds, pi, pl, MEAN, STD, &e);
    s_check_err(rc, FM_ESHAPE, ds, &e, pl);
}

static void test_missing_and_args(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512], p[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_pair(fx, "images", "labels", 0);
    s_path(fx, "images", pi, sizeof pi);
    s_path(fx, "labels", pl, sizeof pl);

    int rc = s_load(&ds, s_path(fx, "nope-images", p, sizeof p), pl, MEAN, STD, &e);
    s_check_err(rc, -ENOENT, ds, &e, p);
    s_check_err(rc, -ENOENT, ds, &e, "No such file");
    rc = s_load(&ds, pi, s_path(fx, "nope-labels", p, sizeof p), MEAN, STD, &e);
    s_check_err(rc, -ENOENT, ds, &e, p);
    rc = s_load(&ds, fx->dir, pl, MEAN, STD, &e);
    s_check_err(rc, -EISDIR, ds, &e, fx->dir);

    /* a path with a newline still gives a one-line message */
    rc = s_load(&ds, s_path(fx, "new\nline", p, sizeof p), pl, MEAN, STD, &e);
    s_check_err(rc, -ENOENT, ds, &e, "new?line");

    /* normalisation arguments */
    rc = s_load(&ds, pi, pl, MEAN, 0.0f, &e);
    s_check_err(rc, FM_EARG, ds, &e, "std");
    rc = s_load(&ds, pi, pl, NAN, STD, &e);
    s_check_err(rc, FM_EARG, ds, &e, "std");
    /* e may be NULL */
    assert_int_equal(s_load(&ds, p, pl, MEAN, STD, NULL), -ENOENT);
    assert_null(ds);
}

/* Implausible header dimensions are FM_EFORMAT before anything big is allocated. */
static void test_bad_dims(void **state)
{
    fx_t *fx = *state;
    char pi[512], pl[512];
    fm_errmsg_t e = {{0}};
    fm_dataset_t *ds = NULL;
    s_write_labels(s_path(fx, "labels", pl, sizeof pl), 0x801, N_SYN, UINT32_MAX, 0, 0);
    const uint32_t dims[][3] = {
        {N_SYN, 0, COLS},          {N_SYN, ROWS, 0},
        {0, ROWS, COLS},           {0xffffffffu, 0xffffffffu, 0xffffffffu},
        {N_SYN, 0x10000, 0x10000}, {3000000, 28, 28},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        s_write_images(s_path(fx, "images", pi, sizeof pi), 0x803, dims[i][0], dims[i][1],
                       dims[i][2], 0, 0);
        int rc = s_load(&ds, pi, pl, MEAN, STD, &e);
        s_check_err(rc, FM_EFORMAT, ds, &e, pi);
    }
    /* a lying header that promises ~1 GB but holds 20 images: FM_ETRUNC, cheaply */
    s_write_images(pi, 0x803, 1300000, ROWS, COLS, (size_t)N_SYN * ROWS * COLS, 0);
    s_write_labels(pl, 0x801, 1300000, UINT32_MAX, 0, 0);
    int rc = s_load(&ds, pi, pl, MEAN, STD, &e);
    s_check_err(rc, FM_ETRUNC, ds, &e, pi);
}

/* ---- the real Fashion-MNIST files --------------------------------------------------------- */

static void s_require_fashion(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", FM_DATA_DIR);
    if (access(p, R_OK) != 0) {
        snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", FM_DATA_DIR);
        if (access(p, R_OK) != 0)
            fail_msg("Fashion-MNIST not found in %s (a declared dependency): "
                     "apt-get install dataset-fashion-mnist",
                     FM_DATA_DIR);
    }
}

static void test_fashion_mnist(void **state)
{
    s_require_fashion();
    fm_errmsg_t e = {{0}};
    fm_dataset_t *train = NULL, *test = NULL;
    if (s_load_dir(&test, FM_DATA_DIR, "t10k", MEAN, STD, &e) != 0)
        fail_msg("t10k: %s", e.msg);
    if (s_load_dir(&train, FM_DATA_DIR, "train", MEAN, STD, &e) != 0)
        fail_msg("train: %s", e.msg);
    assert_int_equal(train->n, 60000);
    assert_int_equal(test->n, 10000);
    assert_int_equal(train->rows, 28);
    assert_int_equal(train->cols, 28);
    assert_int_equal(test->rows, 28);
    assert_int_equal(test->cols, 28);

    uint32_t hist[10] = {0}, htrain[10] = {0};
    for (uint32_t i = 0; i < test->n; i++)
        hist[test->y[i]]++;
    for (uint32_t i = 0; i < train->n; i++)
        htrain[train->y[i]]++;
    for (int c = 0; c < 10; c++) {
        assert_int_equal(hist[c], 1000);
        assert_int_equal(htrain[c], 6000);
    }

    /* With the published constants, normalised train pixels have mean ~0 and std ~1. */
    size_t np = (size_t)train->n * train->rows * train->cols;
    double s = 0.0, s2 = 0.0;
    for (size_t i = 0; i < np; i++) {
        s += train->x[i];
        s2 += (double)train->x[i] * train->x[i];
    }
    double mean = s / (double)np, sd = sqrt(s2 / (double)np - mean * mean);
    if (fabs(mean) > 0.01 || fabs(sd - 1.0) > 0.01)
        fail_msg("normalised train pixels: mean %.4f std %.4f (want ~0 and ~1)", mean, sd);
    fm_dataset_destroy(&train);
    fm_dataset_destroy(&test);
}

/* ---- partitions --------------------------------------------------------------------------- */

/* Invariants of any partition: nclients, monotone offsets, every index exactly once. */
static void s_check_cover(const fm_partition_t *p, uint32_t n, uint32_t nclients)
{
    assert_int_equal(p->nclients, nclients);
    assert_int_equal(p->offsets[0], 0);
    assert_int_equal(p->offsets[nclients], n);
    for (uint32_t k = 0; k < nclients; k++)
        assert_true(p->offsets[k] <= p->offsets[k + 1]);
    uint8_t *seen = calloc((size_t)n + 1, 1);
    assert_non_null(seen);
    for (uint32_t i = 0; i < n; i++) {
        assert_true(p->indices[i] < n);
        assert_int_equal(seen[p->indices[i]], 0);
        seen[p->indices[i]] = 1;
    }
    free(seen);
}

/* Mean over non-empty clients of (largest class count / client size). */
static double s_max_class_frac(const fm_partition_t *p, const uint8_t *y)
{
    double sum = 0.0;
    uint32_t used = 0;
    for (uint32_t k = 0; k < p->nclients; k++) {
        uint32_t h[256] = {0}, mx = 0, sz = p->offsets[k + 1] - p->offsets[k];
        if (sz == 0)
            continue;
        for (uint32_t i = p->offsets[k]; i < p->offsets[k + 1]; i++)
            if (++h[y[p->indices[i]]] > mx)
                mx = h[y[p->indices[i]]];
        sum += (double)mx / sz;
        used++;
    }
    return used ? sum / used : 0.0;
}

static uint32_t s_max_distinct(const fm_partition_t *p, const uint8_t *y)
{
    uint32_t worst = 0;
    for (uint32_t k = 0; k < p->nclients; k++) {
        uint8_t h[256] = {0};
        uint32_t d = 0;
        for (uint32_t i = p->offsets[k]; i < p->offsets[k + 1]; i++) {
            if (!h[y[p->indices[i]]]) {
                h[y[p->indices[i]]] = 1;
                d++;
            }
        }
        if (d > worst)
            worst = d;
    }
    return worst;
}

static fm_partition_t *s_part(const fm_dataset_t *ds, const char *spec, uint32_t nclients,
                              uint64_t seed)
{
    fm_errmsg_t e = {{0}};
    fm_partition_t *p = NULL;
    int rc = s_part_new(&p, ds, spec, nclients, seed, &e);
    if (rc != 0)
        fail_msg("partition %s: rc %d: %s", spec, rc, e.msg);
    s_check_cover(p, ds->n, nclients);
    return p;
}

/* The partition properties every spec must have, plus per-spec shape checks, on `ds`
 * (whose classes must be balanced for the iid check). `tight_shards`: every class size is
 * a multiple of the shard size, so a shard holds one class and a shards:2 client <= 2. */
static void s_check_partitions(const fm_dataset_t *ds, int tight_shards)
{
    const char *specs[] = {"iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"};
    const uint32_t nc = 100;
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        fm_partition_t *a = s_part(ds, specs[s], nc, 42);
        fm_partition_t *b = s_part(ds, specs[s], nc, 42);
        fm_partition_t *c = s_part(ds, specs[s], nc, 43);
        assert_memory_equal(a->offsets, b->offsets, (nc + 1) * sizeof(uint32_t));
        assert_memory_equal(a->indices, b->indices, ds->n * sizeof(uint32_t));
        assert_true(memcmp(a->indices, c->indices, ds->n * sizeof(uint32_t)) != 0);

        double frac = s_max_class_frac(a, ds->y);
        uint32_t smallest = UINT32_MAX, largest = 0;
        for (uint32_t k = 0; k < nc; k++) {
            uint32_t sz = a->offsets[k + 1] - a->offsets[k];
            smallest = sz < smallest ? sz : smallest;
            largest = sz > largest ? sz : largest;
        }
        print_message("    %-14s max-class fraction %.3f, client sizes %u..%u\n", specs[s], frac,
                      smallest, largest);
        if (strcmp(specs[s], "iid") == 0) {
            assert_true(largest - smallest <= 1);
            assert_true(frac < 0.2);
        } else if (strcmp(specs[s], "dirichlet:0.1") == 0) {
            assert_true(frac > 0.5);
        } else if (strcmp(specs[s], "dirichlet:0.5") == 0) {
            assert_true(smallest >= 10); /* the re-draw rule met its minimum */
        } else {
            assert_true(s_max_distinct(a, ds->y) <= (tight_shards ? 2u : 4u));
            assert_true(largest - smallest <= 2); /* 2 shards whose sizes differ by <= 1 */
        }
        fm_partition_destroy(&a);
        fm_partition_destroy(&b);
        fm_partition_destroy(&c);
        assert_null(a);
    }
}

static void test_partitions_synthetic(void **state)
{
    enum { N = 60000 };
    uint8_t *y = malloc(N);
    assert_non_null(y);
    /* balanced classes of 6000, interleaved: shards of 300 hold one class each */
    for (uint32_t i = 0; i < N; i++)
        y[i] = (uint8_t)((i * 7u) % 10u);
    fm_dataset_t ds = {.n = N, .y = y};
    s_check_partitions(&ds, 1);

    /* unequal classes (sizes not multiples of the shard size): <= 2K labels per client */
    uint64_t h = 88172645463325252ull;
    for (uint32_t i = 0; i < N; i++) {
        h ^= h << 13, h ^= h >> 7, h ^= h << 17;
        y[i] = (uint8_t)(h % 10);
    }
    ds.n = 10007;
    fm_partition_t *p = s_part(&ds, "shards:2", 100, 7);
    assert_true(s_max_distinct(p, y) <= 4);
    fm_partition_destroy(&p);
    p = s_part(&ds, "shards:3", 7, 7); /* 21 shards: 10007 = 21*476 + 11 */
    for (uint32_t k = 0; k < 7; k++) {
        uint32_t sz = p->offsets[k + 1] - p->offsets[k];
        assert_true(sz >= 3 * 476 && sz <= 3 * 477);
    }
    fm_partition_destroy(&p);
    p = s_part(&ds, "iid", 3, 1);
    assert_int_equal(p->offsets[1], 3336);
    assert_int_equal(p->offsets[2], 6672);
    fm_partition_destroy(&p);
    free(y);
}

static void test_partitions_edge(void **state)
{
    uint8_t y[] = {0, 1, 2, 3, 4, 200, 255};
    fm_dataset_t ds = {.n = 7, .y = y};
    /* more clients than samples: empty clients are kept, not dropped */
    fm_partition_t *p = s_part(&ds, "iid", 10, 1);
    for (uint32_t k = 0; k < 10; k++)
        assert_int_equal(p->offsets[k + 1] - p->offsets[k], k < 7 ? 1 : 0);
    fm_partition_destroy(&p);
    p = s_part(&ds, "dirichlet:0.3", 10, 1);
    fm_partition_destroy(&p);
    p = s_part(&ds, "shards:1", 7, 1);
    for (uint32_t k = 0; k < 7; k++)
        assert_int_equal(p->offsets[k + 1] - p->offsets[k], 1);
    fm_partition_destroy(&p);
    /* extreme alphas still assign every sample once */
    p = s_part(&ds, "dirichlet:1e-300", 3, 1);
    fm_partition_destroy(&p);
    p = s_part(&ds, "dirichlet:1e300", 3, 1);
    fm_partition_destroy(&p);
    p = s_part(&ds, "dirichlet:2", 1, 1);
    fm_partition_destroy(&p);
    /* an empty dataset */
    fm_dataset_t none = {.n = 0, .y = NULL};
    p = s_part(&none, "iid", 4, 1);
    fm_partition_destroy(&p);
    p = s_part(&none, "dirichlet:1", 4, 1);
    fm_partition_destroy(&p);
    fm_partition_destroy(&p); /* idempotent */
    fm_partition_destroy(NULL);
}

static void test_partition_bad_specs(void **state)
{
    uint8_t y[20];
    for (int i = 0; i < 20; i++)
        y[i] = (uint8_t)(i % 10);
    fm_dataset_t ds = {.n = 20, .y = y};
    const char *bad[] = {
        "",
        "foo",
        "IID",
        "iid ",
        " iid",
        "iid:1",
        "dirichlet",
        "dirichlet:",
        "dirichlet:-1",
        "dirichlet:abc",
        "dirichlet:0",
        "dirichlet:0.0",
        "dirichlet:0.5x",
        "dirichlet: 0.5",
        "dirichlet:nan",
        "dirichlet:inf",
        "dirichlet:1e999",
        "shards",
        "shards:",
        "shards:0",
        "shards:-1",
        "shards:+2",
        "shards:2.5",
        "shards: 2",
        "shards:2x",
        "shards:4294967296",
        "shards:99999999999999999999999",
        "foo\nbar",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_errmsg_t e = {{0}};
        fm_partition_t *p = NULL;
        int rc = s_part_new(&p, &ds, bad[i], 4, 1, &e);
        if (rc != FM_EARG || !e.msg[0] || strchr(e.msg, '\n') || !strstr(e.msg, "partition"))
            fail_msg("spec '%s': rc %d, msg '%s'", bad[i], rc, e.msg);
        assert_null(p);
    }
    fm_errmsg_t e = {{0}};
    fm_partition_t *p = NULL;
    assert_int_equal(s_part_new(&p, &ds, "foo", 4, 1, &e), FM_EARG);
    assert_string_equal(e.msg,
                        "partition 'foo': unknown (expected iid, dirichlet:ALPHA or shards:K)");
    assert_int_equal(s_part_new(&p, &ds, "iid", 0, 1, &e), FM_EARG);
    assert_non_null(strstr(e.msg, "clients"));
    assert_int_equal(s_part_new(&p, &ds, "shards:3", 7, 1, &e), FM_EARG); /* 21 > 20 */
    assert_non_null(strstr(e.msg, "21 shards"));
    assert_int_equal(s_part_new(&p, &ds, "shards:1", 20, 1, &e), 0); /* 20 == 20 is fine */
    fm_partition_destroy(&p);
    assert_int_equal(s_part_new(&p, &ds, NULL, 4, 1, &e), FM_EARG);
    assert_int_equal(s_part_new(&p, NULL, "iid", 4, 1, &e), FM_EARG);
    assert_int_equal(s_part_new(&p, &ds, "bad", 4, 1, NULL), FM_EARG);
    assert_null(p);
}

/* The four specs on the real train labels (classes of exactly 6000 = 20 shards of 300). */
static void test_partitions_fashion(void **state)
{
    s_require_fashion();
    fm_errmsg_t e = {{0}};
    fm_dataset_t *train = NULL;
    if (s_load_dir(&train, FM_DATA_DIR, "train", MEAN, STD, &e) != 0)
        fail_msg("train: %s", e.msg);
    s_check_partitions(train, 1);
    fm_dataset_destroy(&train);
}

/* ---- held-out split ------------------------------------------------------------------------ */

/* The split of `p` by fm_partition_holdout(frac, seed): checked against its contract. */
static void s_check_holdout(const fm_partition_t *p, double frac, uint64_t seed,
                            fm_partition_t **train_out, fm_partition_t **held_out)
{
    fm_errmsg_t e = {{0}};
    fm_partition_t *tr = NULL, *ho = NULL;
    int rc = fm_partition_holdout(p, frac, seed, &tr, &ho, &e);
    if (rc != 0)
        fail_msg("holdout %g: rc %d: %s", frac, rc, e.msg);
    uint32_t nc = p->nclients, total = p->offsets[nc];
    assert_int_equal(tr->nclients, nc);
    assert_int_equal(ho->nclients, nc);
    assert_int_equal(tr->offsets[0], 0);
    assert_int_equal(ho->offsets[0], 0);
    assert_int_equal(tr->offsets[nc] + ho->offsets[nc], total);
    uint32_t maxid = 0;
    for (uint32_t i = 0; i < total; i++)
        maxid = p->indices[i] > maxid ? p->indices[i] : maxid;
    uint8_t *mark = calloc((size_t)maxid + 1, 1);
    assert_non_null(mark);
    for (uint32_t k = 0; k < nc; k++) {
        uint32_t n = p->offsets[k + 1] - p->offsets[k];
        uint32_t nt = tr->offsets[k + 1] - tr->offsets[k];
        uint32_t nh = ho->offsets[k + 1] - ho->offsets[k];
        /* sizes: round(frac * n), at most n - 1 */
        uint32_t want = n == 0 ? 0 : (uint32_t)lround(frac * n);
        if (n > 0 && want > n - 1)
            want = n - 1;
        assert_int_equal(nh, want);
        assert_int_equal(nt + nh, n);
        if (n > 0)
            assert_true(nt >= 1);
        /* disjoint, and the union is the client's indices: mark the client's, then each
         * train/held index must be marked exactly once */
        for (uint32_t i = p->offsets[k]; i < p->offsets[k + 1]; i++)
            mark[p->indices[i]] = 1;
        for (uint32_t i = tr->offsets[k]; i < tr->offsets[k + 1]; i++) {
            assert_int_equal(mark[tr->indices[i]], 1);
            mark[tr->indices[i]] = 2;
        }
        for (uint32_t i = ho->offsets[k]; i < ho->offsets[k + 1]; i++) {
            assert_int_equal(mark[ho->indices[i]], 1);
            mark[ho->indices[i]] = 2;
        }
        for (uint32_t i = p->offsets[k]; i < p->offsets[k + 1]; i++) {
            assert_int_equal(mark[p->indices[i]], 2);
            mark[p->indices[i]] = 0;
        }
        /* the training part keeps p's order: a subsequence of the client's indices */
        uint32_t j = p->offsets[k];
        for (uint32_t i = tr->offsets[k]; i < tr->offsets[k + 1]; i++) {
            while (j < p->offsets[k + 1] && p->indices[j] != tr->indices[i])
                j++;
            assert_true(j < p->offsets[k + 1]);
            j++;
        }
    }
    free(mark);
    *train_out = tr;
    *held_out = ho;
}

static void test_holdout(void **state)
{
    enum { N = 10007 };
    uint8_t *y = malloc(N);
    assert_non_null(y);
    for (uint32_t i = 0; i < N; i++)
        y[i] = (uint8_t)((i * 7u) % 10u);
    fm_dataset_t ds = {.n = N, .y = y};
    /* client sizes from a few to hundreds (and some tiny ones under dirichlet:0.1) */
    const char *specs[] = {"iid", "dirichlet:0.5", "dirichlet:0.1"};
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        fm_partition_t *p = s_part(&ds, specs[s], 100, 3);
        const double fracs[] = {0.1, 0.25, 0.5, 0.9};
        for (size_t f = 0; f < sizeof fracs / sizeof fracs[0]; f++) {
            fm_partition_t *tr = NULL, *ho = NULL, *tr2 = NULL, *ho2 = NULL;
            fm_partition_t *tr3 = NULL, *ho3 = NULL;
            s_check_holdout(p, fracs[f], 42, &tr, &ho);
            /* deterministic: the same inputs give the same split */
            s_check_holdout(p, fracs[f], 42, &tr2, &ho2);
            assert_memory_equal(tr->offsets, tr2->offsets, 101 * sizeof(uint32_t));
            assert_memory_equal(ho->offsets, ho2->offsets, 101 * sizeof(uint32_t));
            assert_memory_equal(tr->indices, tr2->indices, tr->offsets[100] * sizeof(uint32_t));
            assert_memory_equal(ho->indices, ho2->indices, ho->offsets[100] * sizeof(uint32_t));
            /* another seed: same sizes, other samples */
            s_check_holdout(p, fracs[f], 43, &tr3, &ho3);
            assert_memory_equal(ho->offsets, ho3->offsets, 101 * sizeof(uint32_t));
            assert_true(memcmp(ho->indices, ho3->indices, ho->offsets[100] * sizeof(uint32_t)) !=
                        0);
            if (fracs[f] == 0.1 && strcmp(specs[s], "iid") == 0) /* 100 or 101 each: 10 */
                for (uint32_t k = 0; k < 100; k++)
                    assert_int_equal(ho->offsets[k + 1] - ho->offsets[k], 10);
            fm_partition_destroy(&tr);
            fm_partition_destroy(&ho);
            fm_partition_destroy(&tr2);
            fm_partition_destroy(&ho2);
            fm_partition_destroy(&tr3);
            fm_partition_destroy(&ho3);
        }
        /* frac 0: nothing held out, the training part is p itself */
        fm_partition_t *tr = NULL, *ho = NULL;
        s_check_holdout(p, 0.0, 42, &tr, &ho);
        for (uint32_t k = 0; k <= 100; k++)
            assert_int_equal(ho->offsets[k], 0);
        assert_memory_equal(tr->offsets, p->offsets, 101 * sizeof(uint32_t));
        assert_memory_equal(tr->indices, p->indices, N * sizeof(uint32_t));
        fm_partition_destroy(&tr);
        fm_partition_destroy(&ho);
        fm_partition_destroy(&p);
    }
    free(y);
}

static void test_holdout_edge(void **state)
{
    /* iid of 7 samples over 10 clients: 1 sample each for clients 0-6, 3 empty clients */
    uint8_t y[] = {0, 1, 2, 3, 4, 5, 6};
    fm_dataset_t ds = {.n = 7, .y = y};
    fm_partition_t *p = s_part(&ds, "iid", 10, 1);
    fm_partition_t *tr = NULL, *ho = NULL;
    s_check_holdout(p, 0.9, 5, &tr, &ho); /* one sample: none held out */
    for (uint32_t k = 0; k < 10; k++) {
        assert_int_equal(ho->offsets[k + 1] - ho->offsets[k], 0);
        assert_int_equal(tr->offsets[k + 1] - tr->offsets[k], k < 7 ? 1 : 0);
    }
    fm_partition_destroy(&tr);
    fm_partition_destroy(&ho);
    fm_partition_destroy(&p);
    /* two clients of 4 and 3: frac 0.9 holds out n - 1 (rounding would take all), 0.5
     * gives 2 of 4 and round(1.5) = 2 of 3 */
    p = s_part(&ds, "iid", 2, 1);
    assert_int_equal(p->offsets[1], 4);
    s_check_holdout(p, 0.9, 5, &tr, &ho);
    assert_int_equal(ho->offsets[1], 3);
    assert_int_equal(ho->offsets[2], 3 + 2);
    fm_partition_destroy(&tr);
    fm_partition_destroy(&ho);
    s_check_holdout(p, 0.5, 5, &tr, &ho);
    assert_int_equal(ho->offsets[1], 2);
    assert_int_equal(ho->offsets[2], 4);
    fm_partition_destroy(&tr);
    fm_partition_destroy(&ho);

    /* frac out of range: FM_EARG, one line, both outputs NULL */
    const double bad[] = {-0.1, -1e-300, 0.9000001, 1.0, 2.0, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_errmsg_t e = {{0}};
        tr = ho = (fm_partition_t *)p; /* must be overwritten */
        assert_int_equal(fm_partition_holdout(p, bad[i], 5, &tr, &ho, &e), FM_EARG);
        assert_null(tr);
        assert_null(ho);
        assert_true(e.msg[0] && !strchr(e.msg, '\n'));
    }
    fm_partition_destroy(&p);
}

/* fm_partition_clients = fm_partition_new then fm_partition_holdout, with the same seed;
 * errors name the step. */
static void test_partition_clients(void **state)
{
    (void)state;
    enum { N = 3001 };
    uint8_t *y = malloc(N);
    assert_non_null(y);
    for (uint32_t i = 0; i < N; i++)
        y[i] = (uint8_t)((i * 3u) % 10u);
    fm_dataset_t ds = {.n = N, .y = y};
    fm_errmsg_t e = {{0}};
    fm_partition_t *p = s_part(&ds, "dirichlet:0.5", 40, 11), *tr = NULL, *ho = NULL;
    fm_partition_t *tr2 = NULL, *ho2 = NULL;
    assert_int_equal(fm_partition_holdout(p, 0.2, 11, &tr, &ho, &e), 0);
    assert_int_equal(fm_partition_clients(&ds, "dirichlet:0.5", 40, 11, 0.2, &tr2, &ho2, &e), 0);
    assert_memory_equal(tr->offsets, tr2->offsets, 41 * sizeof(uint32_t));
    assert_memory_equal(ho->offsets, ho2->offsets, 41 * sizeof(uint32_t));
    assert_memory_equal(tr->indices, tr2->indices, tr->offsets[40] * sizeof(uint32_t));
    assert_memory_equal(ho->indices, ho2->indices, ho->offsets[40] * sizeof(uint32_t));
    fm_partition_destroy(&tr2);
    fm_partition_destroy(&ho2);
    /* a bad spec, a bad fraction: FM_EARG, outputs NULL, the step named */
    tr2 = ho2 = p;
    assert_int_equal(fm_partition_clients(&ds, "dirichlet:-1", 40, 11, 0.2, &tr2, &ho2, &e),
                     FM_EARG);
    assert_true(!tr2 && !ho2 && strncmp(e.msg, "partition dirichlet:-1: ", 24) == 0);
    tr2 = ho2 = p;
    assert_int_equal(fm_partition_clients(&ds, "iid", 40, 11, 0.95, &tr2, &ho2, &e), FM_EARG);
    assert_true(!tr2 && !ho2 && strncmp(e.msg, "holdout 0.95: ", 14) == 0);
    fm_partition_destroy(&tr);
    fm_partition_destroy(&ho);
    fm_partition_destroy(&p);
    free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_raw_and_gz, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_load_dir, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_magic, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_truncated, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_gzip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_gzip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_count_mismatch_and_labels, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_args, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_dims, s_setup, s_teardown),
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test(test_partitions_synthetic),
        cmocka_unit_test(test_partitions_edge),
        cmocka_unit_test(test_partition_bad_specs),
        cmocka_unit_test(test_partitions_fashion),
        cmocka_unit_test(test_holdout),
        cmocka_unit_test(test_holdout_edge),
        cmocka_unit_test(test_partition_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
