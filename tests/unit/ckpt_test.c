/* Unit tests of fm_ckpt: round trips, the pure record decoder (fm_ckpt_record_decode on
 * the raw stored bytes), ordering, pruning, persistence, corrupted records
 * (written through raw LMDB), shape checks, meta/extra pairs and record blobs, map growth,
 * a kill -9 crash-consistency check with a forked writer; the damaged stores of issue 10
 * (a truncated data.mdb opened in a child that must exit, not die of SIGBUS; an emptied,
 * missing or older data.mdb below its high-water mark; the operator's reset; --verify's
 * checks) and a full disk (a small tmpfs in a private mount namespace, as root). */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../support/fm_proc.h"
#include <lmdb.h>
#include <zlib.h>

#include "fm_ckpt.h"
#include "fm_err.h"
#include "fm_file.h"

#define NP 1000 /* params per record */
#define NO 500  /* optimizer floats per record */

typedef struct {
    char root[256]; /* mkdtemp() directory, removed at the end */
    int serial;     /* for fresh sub-directories */
} ctx_t;

/* ---- helpers ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    if (fm_proc_tmpdir(c->root, sizeof c->root) != 0) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int group_teardown(void **state)
{
    ctx_t *c = *state;
    char mnt[512];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", c->root);
    umount2(mnt, MNT_DETACH); /* test_full_disk's, if it failed before unmounting */
    int rc = fm_proc_rmtree(c->root);
    free(c);
    return rc;
}

/* A fresh (not yet existing) directory path under the root, two levels deep so that
 * fm_ckpt_open has parents to create. */
static void fresh_dir(void **state, char *out, size_t cap)
{
    ctx_t *c = *state;
    snprintf(out, cap, "%s/t%d/ckpt", c->root, c->serial++);
}

static fm_ckpt_t *open_ok(const char *dir, size_t map)
{
    fm_errmsg_t e = {{0}};
    int err = 12345;
    fm_ckpt_t *c = fm_ckpt_open(dir, map, &err, &e);
    if (!c || err != 0)
        fail_msg("fm_ckpt_open(%s): %d %s", dir, err, e.msg);
    return c;
}

/* Deterministic content of version v, with special bit patterns (NaN payload, -0,
 * denormal, infinity) that a lossy conversion would change. */
static void fill(float *p, size_t n, uint64_t v, uint32_t salt)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)(v * 2654435761u) ^ (uint32_t)(i * 40503u) ^ salt;
        bits = (bits & 0x807FFFFFu) | ((uint32_t)(100 + (i + v) % 50) << 23); /* finite */
        memcpy(&p[i], &bits, 4);
    }
    if (n > 4) {
        uint32_t nan = 0x7FC01234u, neg0 = 0x80000000u, den = 0x00000001u, inf = 0x7F800000u;
        memcpy(&p[0], &nan, 4);
        memcpy(&p[1], &neg0, 4);
        memcpy(&p[2], &den, 4);
        memcpy(&p[3], &inf, 4);
    }
}

static fm_ckpt_info_t make_info(uint64_t v, uint64_t np, uint64_t no)
{
    fm_ckpt_info_t h;
    memset(&h, 0, sizeof h);
    snprintf(h.model, sizeof h.model, "cnn");
    h.nparams = np;
    h.nopt = no;
    h.version = v;
    h.created = 1700000000.25 + (double)v;
    h.updates_applied = 10 * v;
    h.updates_rejected = v + 3;
    for (int i = 0; i < FM_CKPT_NREASONS; i++)
        h.rejected_by_reason[i] = v * 100 + (uint64_t)i;
    for (int i = 0; i < FM_CKPT_DIGEST_BYTES; i++)
        h.config_digest[i] = (uint8_t)(i * 7 + v);
    h.score = v % 2 ? 0.5 + 0.01 * (double)v : NAN;
    return h;
}

/* Save version v (content from fill) with NP params and NO optimizer floats. */
static void save_v(fm_ckpt_t *c, uint64_t v)
{
    static float p[NP], o[NO];
    fill(p, NP, v, 0);
    fill(o, NO, v, 0x5555);
    fm_ckpt_info_t h = make_info(v, NP, NO);
    fm_errmsg_t e = {{0}};
    int rc = fm_ckpt_save(c, &h, p, o, NULL, 0, &e);
    if (rc)
        fail_msg("save version %llu: %s %s", (unsigned long long)v, fm_strerror(rc), e.msg);
}

static void assert_header(const fm_ckpt_info_t *got, const fm_ckpt_info_t *want)
{
    assert_string_equal(got->model, want->model);
    assert_int_equal(got->nparams, want->nparams);
    assert_int_equal(got->nopt, want->nopt);
    assert_int_equal(got->version, want->version);
    assert_memory_equal(&got->created, &want->created, sizeof got->created);
    assert_int_equal(got->updates_applied, want->updates_applied);
    assert_int_equal(got->updates_rejected, want->updates_rejected);
    assert_memory_equal(got->rejected_by_reason, want->rejected_by_reason,
                        sizeof got->rejected_by_reason);
    assert_memory_equal(got->config_digest, want->config_digest, FM_CKPT_DIGEST_BYTES);
    if (isnan(want->score))
        assert_true(isnan(got->score));
    else
        assert_memory_equal(&got->score, &want->score, sizeof got->score);
}

/* Load version v (or the latest when v == UINT64_MAX) and check it is exactly save_v(v). */
static void check_v(fm_ckpt_t *c, uint64_t load, uint64_t want_v)
{
    static float p[NP], o[NO], wp[NP], wo[NO];
    fm_ckpt_info_t h;
    fm_errmsg_t e = {{0}};
    int rc = load == UINT64_MAX ? fm_ckpt_load_latest(c, &h, p, NP, o, NO, &e)
                                : fm_ckpt_load(c, load, &h, p, NP, o, NO, &e);
    if (rc)
        fail_msg("load: %s %s", fm_strerror(rc), e.msg);
    fm_ckpt_info_t want = make_info(want_v, NP, NO);
    assert_header(&h, &want);
    fill(wp, NP, want_v, 0);
    fill(wo, NO, want_v, 0x5555);
    assert_memory_equal(p, wp, sizeof p);
    assert_memory_equal(o, wo, sizeof o);
}

/* Rewrite the raw value of `version` in "ckpt" through LMDB directly (the handle of the
 * test must be closed): edit(buf, &len) may change bytes and shorten the value. */
static void raw_edit(const char *dir, uint64_t version, void (*edit)(uint8_t *, size_t *))
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = (uint8_t)(version >> (56 - 8 * i));
    MDB_val k = {8, kb}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "ckpt", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    size_t len = v.mv_size;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, v.mv_data, len);
    edit(buf, &len);
    v.mv_size = len;
    v.mv_data = buf;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(buf);
}

static void edit_flip_param(uint8_t *b, size_t *n)
{
    (void)n;
    b[FM_CKPT_HEADER_BYTES + 4 * 10 + 1] ^= 0x10;
}

static void edit_truncate(uint8_t *b, size_t *n)
{
    (void)b;
    *n = 100;
}

static void edit_magic(uint8_t *b, size_t *n)
{
    (void)n;
    b[0] = 'X';
}

/* format version 2 with a correct CRC */
static void edit_format(uint8_t *b, size_t *n)
{
    b[4] = 2;
    uint32_t crc = (uint32_t)crc32_z(0L, b, *n - 4);
    for (int i = 0; i < 4; i++)
        b[*n - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
}

static void assert_msg_has(const fm_errmsg_t *e, const char *what)
{
    if (!strstr(e->msg, what) || strchr(e->msg, '\n'))
        fail_msg("message '%s' lacks '%s' or is not one line", e->msg, what);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    assert_string_equal(fm_ckpt_dir(c), dir);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    save_v(c, 1);
    check_v(c, UINT64_MAX, 1);
    check_v(c, 1, 1);

    /* created == 0 means "now"; a record without optimizer state */
    float p[NP];
    fill(p, NP, 2, 0);
    fm_ckpt_info_t h = make_info(2, NP, 0), got;
    h.created = 0;
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), 0);
    float q[NP];
    assert_int_equal(fm_ckpt_load_latest(c, &got, q, NP, NULL, 0, &e), 0);
    assert_int_equal(got.version, 2);
    assert_int_equal(got.nopt, 0);
    assert_int_equal(got.skipped, 0);
    assert_memory_equal(p, q, sizeof p);
    assert_true(fabs(got.created - (double)time(NULL)) < 60.0);
    /* header only: params NULL skips copying and the size check */
    memset(&got, 0, sizeof got);
    assert_int_equal(fm_ckpt_load(c, 1, &got, NULL, 0, NULL, 0, &e), 0);
    assert_int_equal(got.nparams, NP);
    assert_int_equal(got.nopt, NO);
    fm_ckpt_close(&c);
    assert_null(c);
    fm_ckpt_close(&c); /* idempotent */
}

/* The stored value of `version` in "ckpt", read through LMDB directly (the test's handle
 * must be closed), in a malloc'd buffer of *len bytes. */
static uint8_t *raw_get(const char *dir, uint64_t version, size_t *len)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = (uint8_t)(version >> (56 - 8 * i));
    MDB_val k = {8, kb}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "ckpt", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t *buf = malloc(v.mv_size);
    assert_non_null(buf);
    memcpy(buf, v.mv_data, v.mv_size);
    *len = v.mv_size;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return buf;
}

/* fm_ckpt_record_decode, the pure decoder every load and listing uses (and fuzz_ckpt
 * fuzzes): the bytes fm_ckpt_save stored decode to what was saved, without LMDB; each
 * check fails with its code and one line starting with `where`; the caller's sizes are
 * checked before anything is copied. */
static void test_record_decode(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    save_v(c, 7);
    fm_ckpt_close(&c);
    size_t len = 0;
    uint8_t *rec = raw_get(dir, 7, &len);
    assert_int_equal(len, FM_CKPT_HEADER_BYTES + 4 * (NP + NO) + 4);

    static float p[NP], o[NO], wp[NP], wo[NO];
    fm_ckpt_info_t h, want = make_info(7, NP, NO);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, p, NP, o, NO, &e), 0);
    assert_header(&h, &want);
    fill(wp, NP, 7, 0);
    fill(wo, NO, 7, 0x5555);
    assert_memory_equal(p, wp, sizeof p);
    assert_memory_equal(o, wo, sizeof o);
    /* header only */
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, NULL, 0, NULL, 0, &e), 0);
    assert_header(&h, &want);

    /* the caller's sizes: FM_ESHAPE, nothing copied */
    memset(p, 0, sizeof p);
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, p, NP - 1, NULL, 0, &e),
                     FM_ESHAPE);
    assert_msg_has(&e, "here: checkpoint version 7: 1000 params, expected 999");
    assert_int_equal(p[0], 0.0f);
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, NULL, 0, o, NO + 1, &e),
                     FM_ESHAPE);
    assert_msg_has(&e, "500 optimizer state floats, expected 501");
    /* stored under another key */
    assert_int_equal(fm_ckpt_record_decode(rec, len, 8, "here", &h, NULL, 0, NULL, 0, &e),
                     FM_EFORMAT);
    assert_msg_has(&e, "here: checkpoint version 8: header says version 7");
    assert_int_equal(h.version, 8);
    /* truncated: info reset to the key's version, score NaN */
    assert_int_equal(fm_ckpt_record_decode(rec, 100, 7, "here", &h, NULL, 0, NULL, 0, &e),
                     FM_ETRUNC);
    assert_msg_has(&e, "truncated (100 bytes, a record has at least 260)");
    assert_int_equal(h.version, 7);
    assert_int_equal(h.nparams, 0);
    assert_true(isnan(h.score));
    assert_int_equal(fm_ckpt_record_decode(NULL, 0, 7, "here", &h, NULL, 0, NULL, 0, &e),
                     FM_ETRUNC);
    /* one bit of a parameter: CRC; the header was still decoded (for listings) */
    rec[FM_CKPT_HEADER_BYTES + 3] ^= 0x01;
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, p, NP, NULL, 0, &e),
                     FM_EFORMAT);
    assert_msg_has(&e, "here: checkpoint version 7: CRC mismatch");
    assert_int_equal(h.nparams, NP);
    rec[FM_CKPT_HEADER_BYTES + 3] ^= 0x01;
    /* magic, format version */
    rec[0] = 'X';
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, NULL, 0, NULL, 0, &e),
                     FM_EMAGIC);
    rec[0] = 'F';
    edit_format(rec, &len);
    assert_int_equal(fm_ckpt_record_decode(rec, len, 7, "here", &h, NULL, 0, NULL, 0, &e),
                     FM_EVERSION);
    assert_msg_has(&e, "record format 2 (this build reads 1)");
    free(rec);
}

static void test_empty(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    float p[NP];
    fm_errmsg_t e = {{0}};
    size_t n = 99, len = 0;
    uint64_t v = 0;
    assert_int_equal(fm_ckpt_load_latest(c, NULL, p, NP, NULL, 0, &e), -ENOENT);
    assert_msg_has(&e, dir);
    assert_int_equal(fm_ckpt_load(c, 5, NULL, p, NP, NULL, 0, &e), -ENOENT);
    assert_msg_has(&e, "no checkpoint version 5");
    assert_int_equal(fm_ckpt_list(c, NULL, 0, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fm_ckpt_latest_version(c, &v, &e), -ENOENT);
    assert_int_equal(fm_ckpt_meta_get(c, "ids", NULL, 0, &len, &e), -ENOENT);
    assert_int_equal(fm_ckpt_prune(c, 1, &e), 0);
    fm_ckpt_close(&c);
}

static void test_list_and_latest(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    /* versions need not be consecutive; 0 is a valid version (the initial model) */
    const uint64_t vs[] = {0, 1, 2, 7, 300, 301};
    for (size_t i = 0; i < 6; i++)
        save_v(c, vs[i]);
    fm_ckpt_info_t out[10];
    fm_errmsg_t e = {{0}};
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(c, out, 10, &n, &e), 0);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < 6; i++) {
        fm_ckpt_info_t want = make_info(vs[5 - i], NP, NO);
        assert_int_equal(out[i].status, 0);
        assert_header(&out[i], &want);
    }
    /* a short array: the newest first, *n is the total, nothing written past cap */
    memset(out, 0xAB, sizeof out);
    assert_int_equal(fm_ckpt_list(c, out, 2, &n, &e), 0);
    assert_int_equal(n, 6);
    assert_int_equal(out[0].version, 301);
    assert_int_equal(out[1].version, 300);
    assert_int_equal(out[2].version, 0xABABABABABABABABULL);

    uint64_t v = 0;
    assert_int_equal(fm_ckpt_latest_version(c, &v, &e), 0);
    assert_int_equal(v, 301);
    check_v(c, UINT64_MAX, 301);
    check_v(c, 7, 7);
    check_v(c, 0, 0);
    fm_ckpt_close(&c);
}

static void test_versions_increase(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    save_v(c, 5);
    float p[NP];
    fill(p, NP, 99, 0);
    fm_ckpt_info_t h = make_info(4, NP, 0);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_ERANGE);
    assert_msg_has(&e, "checkpoint version 4 is below the latest saved version 5");
    /* the latest version may be written again: the record is replaced */
    h = make_info(5, NP, 0);
    h.updates_applied = 777;
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), 0);
    float q[NP];
    fm_ckpt_info_t got;
    assert_int_equal(fm_ckpt_load_latest(c, &got, q, NP, NULL, 0, &e), 0);
    assert_int_equal(got.updates_applied, 777);
    assert_int_equal(got.nopt, 0);
    assert_memory_equal(p, q, sizeof p);
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(c, NULL, 0, &n, &e), 0);
    assert_int_equal(n, 1);
    fm_ckpt_close(&c);
}

static void test_prune(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    for (uint64_t v = 1; v <= 6; v++)
        save_v(c, v);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_prune(c, 0, &e), FM_EARG);
    assert_int_equal(fm_ckpt_prune(c, 10, &e), 0); /* fewer than keep: nothing to do */
    assert_int_equal(fm_ckpt_prune(c, 3, &e), 0);
    fm_ckpt_info_t out[8];
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(c, out, 8, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].version, 6);
    assert_int_equal(out[1].version, 5);
    assert_int_equal(out[2].version, 4);
    float p[NP];
    assert_int_equal(fm_ckpt_load(c, 3, NULL, p, NP, NULL, 0, &e), -ENOENT);
    check_v(c, 4, 4);
    /* the "latest" marker survives pruning: versions still must not go back */
    fill(p, NP, 2, 0);
    fm_ckpt_info_t h = make_info(2, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_ERANGE);
    save_v(c, 7);
    assert_int_equal(fm_ckpt_prune(c, 1, &e), 0);
    assert_int_equal(fm_ckpt_list(c, out, 8, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].version, 7);
    fm_ckpt_close(&c);
}

static void test_reopen(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    for (uint64_t v = 1; v <= 3; v++)
        save_v(c, v);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_meta_put(c, "note", "abc", 3, &e), 0);
    fm_ckpt_close(&c);

    c = open_ok(dir, 0);
    check_v(c, UINT64_MAX, 3);
    check_v(c, 1, 1);
    size_t n = 0, len = 0;
    char buf[8];
    assert_int_equal(fm_ckpt_list(c, NULL, 0, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(fm_ckpt_meta_get(c, "note", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "abc", 3);
    save_v(c, 4);
    fm_ckpt_close(&c);
    c = open_ok(dir, 0);
    check_v(c, UINT64_MAX, 4);
    fm_ckpt_close(&c);
}

static void test_corrupt_fallback(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    for (uint64_t v = 1; v <= 3; v++)
        save_v(c, v);
    fm_ckpt_close(&c);
    raw_edit(dir, 3, edit_flip_param);

    c = open_ok(dir, 0);
    float p[NP], o[NO];
    fm_errmsg_t e = {{0}};
    fm_ckpt_info_t h;
    assert_int_equal(fm_ckpt_load(c, 3, NULL, p, NP, o, NO, &e), FM_EFORMAT);
    assert_msg_has(&e, "checkpoint version 3: CRC mismatch");
    assert_msg_has(&e, dir);

    /* the newest is corrupt: the next older valid one is loaded, and it says so */
    memset(&e, 0, sizeof e);
    assert_int_equal(fm_ckpt_load_latest(c, &h, p, NP, o, NO, &e), 0);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.skipped, 1);
    assert_msg_has(&e, "checkpoint version 3: CRC mismatch");
    assert_msg_has(&e, "loaded version 2");
    check_v(c, 2, 2);

    fm_ckpt_info_t out[4];
    size_t n = 0;
    assert_int_equal(fm_ckpt_list(c, out, 4, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].version, 3);
    assert_int_equal(out[0].status, FM_EFORMAT);
    assert_int_equal(out[0].nparams, NP); /* header fields still shown */
    assert_int_equal(out[1].status, 0);
    assert_int_equal(out[2].status, 0);
    fm_ckpt_close(&c);

    /* other kinds of damage, each detected with its own code */
    raw_edit(dir, 2, edit_truncate);
    raw_edit(dir, 1, edit_magic);
    c = open_ok(dir, 0);
    assert_int_equal(fm_ckpt_load(c, 2, NULL, p, NP, NULL, 0, &e), FM_ETRUNC);
    assert_msg_has(&e, "checkpoint version 2: truncated");
    assert_int_equal(fm_ckpt_load(c, 1, NULL, p, NP, NULL, 0, &e), FM_EMAGIC);
    assert_msg_has(&e, "checkpoint version 1: bad magic");
    /* nothing valid left: the newest record's error */
    assert_int_equal(fm_ckpt_load_latest(c, &h, p, NP, o, NO, &e), FM_EFORMAT);
    assert_msg_has(&e, "checkpoint version 3: CRC mismatch");
    assert_msg_has(&e, "no older valid checkpoint");
    /* a newer valid save is found first again */
    save_v(c, 4);
    check_v(c, UINT64_MAX, 4);
    fm_ckpt_close(&c);

    raw_edit(dir, 4, edit_format);
    c = open_ok(dir, 0);
    assert_int_equal(fm_ckpt_load(c, 4, NULL, p, NP, NULL, 0, &e), FM_EVERSION);
    assert_msg_has(&e, "checkpoint version 4: record format 2");
    fm_ckpt_close(&c);
}

static void test_shape(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    save_v(c, 1);
    static float p[NP + 1], o[NO + 1];
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_load_latest(c, NULL, p, NP - 1, NULL, 0, &e), FM_ESHAPE);
    assert_msg_has(&e, "checkpoint version 1: 1000 params, expected 999");
    assert_int_equal(fm_ckpt_load_latest(c, NULL, p, NP + 1, NULL, 0, &e), FM_ESHAPE);
    assert_int_equal(fm_ckpt_load(c, 1, NULL, p, NP, o, NO - 1, &e), FM_ESHAPE);
    assert_msg_has(&e, "optimizer state");
    fm_ckpt_info_t h;
    assert_int_equal(fm_ckpt_load_latest(c, &h, NULL, 0, NULL, 0, &e), 0);
    assert_int_equal(h.nparams, NP);
    assert_int_equal(h.nopt, NO);
    fm_ckpt_close(&c);
}

static void test_bad_save_args(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    float p[4] = {1, 2, 3, 4};
    fm_errmsg_t e = {{0}};
    fm_ckpt_info_t h = make_info(1, 4, 0);
    h.model[0] = '\0';
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_EARG);
    h = make_info(1, 4, 0);
    memset(h.model, 'x', sizeof h.model); /* 16 characters, no NUL */
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_EARG);
    h = make_info(1, 0, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_EARG);
    h = make_info(1, 4, 0);
    assert_int_equal(fm_ckpt_save(c, &h, NULL, NULL, NULL, 0, &e), FM_EARG);
    h = make_info(1, 4, 2);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_EARG);
    h = make_info(1, 4, 0);
    fm_ckpt_extra_t bad[] = {{"latest", "x", 1, 0}};
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, bad, 1, &e), FM_EARG);
    assert_msg_has(&e, "reserved");
    size_t n = 9;
    assert_int_equal(fm_ckpt_list(c, NULL, 0, &n, &e), 0);
    assert_int_equal(n, 0);
    fm_ckpt_close(&c);
}

static void test_extra_and_meta(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    float p[NP];
    fill(p, NP, 1, 0);
    uint64_t ids[3] = {11, 12, 13}, ids2[3] = {21, 22, 23};
    uint8_t rng[32];
    for (int i = 0; i < 32; i++)
        rng[i] = (uint8_t)i;
    fm_ckpt_extra_t x1[] = {{"applied_ids", ids, sizeof ids, 0}, {"rng", rng, sizeof rng, 0}};
    fm_ckpt_info_t h = make_info(1, NP, 0);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x1, 2, &e), 0);

    uint8_t buf[64];
    size_t len = 0;
    assert_int_equal(fm_ckpt_meta_get(c, "applied_ids", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, sizeof ids);
    assert_memory_equal(buf, ids, sizeof ids);
    assert_int_equal(fm_ckpt_meta_get(c, "rng", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, 32);
    assert_memory_equal(buf, rng, 32);

    /* a refused save writes none of its extra pairs (same transaction) */
    fm_ckpt_extra_t x0[] = {{"applied_ids", ids2, sizeof ids2, 0}};
    h = make_info(0, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x0, 1, &e), FM_ERANGE);
    assert_int_equal(fm_ckpt_meta_get(c, "applied_ids", buf, sizeof buf, &len, &e), 0);
    assert_memory_equal(buf, ids, sizeof ids);

    /* NULL value deletes; absent keys are fine to delete */
    fm_ckpt_extra_t x2[] = {
        {"applied_ids", ids2, sizeof ids2, 0}, {"rng", NULL, 0, 0}, {"never_set", NULL, 0, 0}};
    h = make_info(2, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x2, 3, &e), 0);
    assert_int_equal(fm_ckpt_meta_get(c, "applied_ids", buf, sizeof buf, &len, &e), 0);
    assert_memory_equal(buf, ids2, sizeof ids2);
    assert_int_equal(fm_ckpt_meta_get(c, "rng", buf, sizeof buf, &len, &e), -ENOENT);

    /* the meta API on its own */
    assert_int_equal(fm_ckpt_meta_put(c, "empty", NULL, 0, &e), 0);
    assert_int_equal(fm_ckpt_meta_get(c, "empty", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, 0);
    assert_int_equal(fm_ckpt_meta_put(c, "blob", rng, 32, &e), 0);
    len = 0;
    assert_int_equal(fm_ckpt_meta_get(c, "blob", NULL, 0, &len, &e), 0);
    assert_int_equal(len, 32);
    memset(buf, 0, sizeof buf);
    assert_int_equal(fm_ckpt_meta_get(c, "blob", buf, 8, &len, &e), -ENOBUFS);
    assert_int_equal(len, 32);
    assert_int_equal(buf[0], 0); /* nothing copied */
    assert_int_equal(fm_ckpt_meta_put(c, "latest", "x", 1, &e), FM_EARG);
    assert_int_equal(fm_ckpt_meta_put(c, "", "x", 1, &e), FM_EARG);
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(fm_ckpt_meta_put(c, longkey, "x", 1, &e), FM_EARG);
    /* "latest" is readable: 8 bytes big-endian */
    assert_int_equal(fm_ckpt_meta_get(c, "latest", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, 8);
    assert_int_equal(buf[7], 2);
    assert_int_equal(buf[0], 0);
    fm_ckpt_close(&c);
}

static void test_map_grows(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 64 * 1024); /* far smaller than one record */
    enum { BIG = 100000 };
    float *p = calloc(BIG, sizeof *p), *q = calloc(BIG, sizeof *q);
    assert_non_null(p);
    assert_non_null(q);
    fm_errmsg_t e = {{0}};
    for (uint64_t v = 1; v <= 3; v++) {
        fill(p, BIG, v, 0);
        fm_ckpt_info_t h = make_info(v, BIG, 0);
        int rc = fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e);
        if (rc)
            fail_msg("save %llu in a small map: %s", (unsigned long long)v, e.msg);
    }
    fm_ckpt_info_t h;
    assert_int_equal(fm_ckpt_load_latest(c, &h, q, BIG, NULL, 0, &e), 0);
    assert_int_equal(h.version, 3);
    assert_memory_equal(p, q, BIG * sizeof *p);
    fm_ckpt_close(&c);
    /* reopening with the small size keeps the grown file */
    c = open_ok(dir, 64 * 1024);
    assert_int_equal(fm_ckpt_load(c, 2, &h, q, BIG, NULL, 0, &e), 0);
    fm_ckpt_close(&c);
    free(p);
    free(q);
}

static void test_open_errors(void **state)
{
    ctx_t *cx = *state;
    char path[512];
    fm_errmsg_t e = {{0}};
    int err = 0;
    /* a regular file where the directory should be */
    snprintf(path, sizeof path, "%s/plainfile", cx->root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
    assert_null(fm_ckpt_open(path, 0, &err, &e));
    assert_int_equal(err, -ENOTDIR);
    assert_msg_has(&e, path);
    /* a data.mdb that is not an LMDB file */
    char dir[512], data[600];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    fm_ckpt_close(&c);
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 3000; i++)
        fputs("garbage!", f);
    fclose(f);
    assert_null(fm_ckpt_open(dir, 0, &err, &e));
    assert_int_equal(err, FM_EFORMAT);
    assert_msg_has(&e, dir);
    assert_null(fm_ckpt_open("", 0, &err, &e));
    assert_int_equal(err, FM_EARG);
}

/* ---- crash consistency ----------------------------------------------------------------------
 */

/* Child: reopen, continue from the latest version + 1, ack each version on `fd` after
 * fm_ckpt_save returned. Never returns. */
static void crash_child(const char *dir, int fd)
{
    int err = 0;
    fm_ckpt_t *c = fm_ckpt_open(dir, 0, &err, NULL);
    if (!c)
        _exit(3);
    uint64_t v = 0;
    int rc = fm_ckpt_latest_version(c, &v, NULL);
    if (rc == -ENOENT)
        v = 0;
    else if (rc)
        _exit(4);
    static float p[NP], o[NO];
    for (uint64_t k = v + 1; k < v + 100000; k++) {
        fill(p, NP, k, 0);
        fill(o, NO, k, 0x5555);
        fm_ckpt_info_t h = make_info(k, NP, NO);
        if (fm_ckpt_save(c, &h, p, o, NULL, 0, NULL) != 0)
            _exit(5);
        if ((k % 4) == 0 && fm_ckpt_prune(c, 3, NULL) != 0)
            _exit(6);
        if (write(fd, &k, sizeof k) != (ssize_t)sizeof k)
            _exit(7);
    }
    _exit(0);
}

/* Read one ack within 10 s: 1 = got one, 0 = EOF. */
static int read_ack(int fd, uint64_t *v)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, 10000);
    if (r <= 0)
        fail_msg("no ack from the writer within 10 s");
    ssize_t n = read(fd, v, sizeof *v);
    if (n == 0)
        return 0;
    if (n != (ssize_t)sizeof *v)
        fail_msg("short ack read: %zd", n);
    return 1;
}

static void test_crash_consistency(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0); /* create it, then leave it to the children */
    fm_ckpt_close(&c);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    print_message("crash test seed %u\n", seed);
    uint64_t last = 0;
    int unacked = 0, rounds = 30;
    for (int round = 0; round < rounds; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(dir, fds[1]);
        }
        close(fds[1]);
        int want = 2 + rand() % 12;
        uint64_t v = 0;
        for (int i = 0; i < want; i++) {
            if (!read_ack(fds[0], &v))
                fail_msg("writer exited early");
            assert_true(v > last);
            last = v;
        }
        usleep((useconds_t)(rand() % 4000)); /* land anywhere, also inside a commit */
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            fail_msg("writer ended by itself (status %d) instead of SIGKILL", status);
        while (read_ack(fds[0], &v)) { /* acks written before the kill */
            assert_true(v > last);
            last = v;
        }
        close(fds[0]);

        c = open_ok(dir, 0);
        fm_ckpt_info_t h;
        static float p[NP], o[NO];
        fm_errmsg_t e = {{0}};
        int rc = fm_ckpt_load_latest(c, &h, p, NP, o, NO, &e);
        if (rc)
            fail_msg("round %d: load after kill: %s", round, e.msg);
        assert_int_equal(h.skipped, 0);
        /* every acknowledged save survived; at most one more (committed, not yet acked) */
        if (h.version < last || h.version > last + 1)
            fail_msg("round %d: loaded version %llu, last acked %llu", round,
                     (unsigned long long)h.version, (unsigned long long)last);
        check_v(c, UINT64_MAX, h.version);
        unacked += h.version == last + 1;
        fm_ckpt_info_t out[8];
        size_t n = 0;
        assert_int_equal(fm_ckpt_list(c, out, 8, &n, &e), 0);
        for (size_t i = 0; i < n && i < 8; i++)
            assert_int_equal(out[i].status, 0);
        last = h.version;
        fm_ckpt_close(&c);
    }
    print_message("crash test: %d kills, %d between a commit and its ack, last version %llu\n",
                  rounds, unacked, (unsigned long long)last);
}

/* ---- damaged stores, the high-water mark, verify, full disk ------------------------------ */

/* "<dir>/<name>" */
static void in_dir(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* What a child saw opening dir (read-write or read-only) and reading every record. */
typedef struct {
    int status; /* the child's wait status */
    int err;    /* the open's error (0: opened and read) */
    char msg[320];
} open_result_t;

/* Open dir in a forked child and read every record there: a SIGBUS kills the child, not the
 * test, and shows in r->status. */
static open_result_t open_in_child(const char *dir, int rdonly)
{
    open_result_t r;
    memset(&r, 0, sizeof r);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* die of a fault (cmocka's handlers, inherited, would go on running tests here) */
        signal(SIGBUS, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        close(fds[0]);
        fm_errmsg_t e = {{0}};
        int err = 0;
        fm_ckpt_t *c = rdonly ? fm_ckpt_open_readonly(dir, &err, &e)
                              : fm_ckpt_open(dir, 0, &err, &e);
        if (c) {
            fm_ckpt_info_t out[64];
            size_t n = 0;
            err = fm_ckpt_list(c, out, 64, &n, &e);
            fm_ckpt_close(&c);
        }
        if (write(fds[1], &err, sizeof err) != (ssize_t)sizeof err ||
            write(fds[1], e.msg, sizeof e.msg) != (ssize_t)sizeof e.msg)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(waitpid(pid, &r.status, 0), pid);
    if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) {
        assert_int_equal(read(fds[0], &r.err, sizeof r.err), (ssize_t)sizeof r.err);
        assert_int_equal(read(fds[0], r.msg, sizeof r.msg), (ssize_t)sizeof r.msg);
    }
    close(fds[0]);
    if (WIFSIGNALED(r.status))
        fail_msg("opening %s killed the process with signal %d (%s)", dir, WTERMSIG(r.status),
                 strsignal(WTERMSIG(r.status)));
    return r;
}

static void test_truncated(void **state)
{
    char dir[512], data[600];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    for (uint64_t v = 1; v <= 12; v++)
        save_v(c, v);
    fm_ckpt_close(&c);
    in_dir(data, sizeof data, dir, "data.mdb");
    long long size = file_size(data);
    assert_true(size > 16 * 4096);
    /* the operator's measurement: half the file */
    assert_int_equal(truncate(data, size / 2), 0);
    for (int ro = 0; ro <= 1; ro++) {
        open_result_t r = open_in_child(dir, ro);
        assert_int_equal(r.err, FM_ETRUNC);
        if (!strstr(r.msg, "data.mdb: truncated") || !strstr(r.msg, "bytes") ||
            strchr(r.msg, '\n'))
            fail_msg("%s open: unexpected message: %s", ro ? "read-only" : "read-write", r.msg);
        char want[64];
        snprintf(want, sizeof want, "%lld bytes, but", size / 2);
        assert_non_null(strstr(r.msg, want));
    }
    assert_int_equal(file_size(data), size / 2); /* nothing written */
    /* below LMDB's two meta pages */
    assert_int_equal(truncate(data, 5000), 0);
    open_result_t r = open_in_child(dir, 1);
    assert_int_equal(r.err, FM_ETRUNC);
    assert_non_null(strstr(r.msg, "less than LMDB's two meta pages"));
    r = open_in_child(dir, 0);
    assert_int_equal(r.err, FM_ETRUNC);
}

/* The high-water mark of an open handle, which must be readable. */
static fm_ckpt_mark_t mark_of(fm_ckpt_t *c)
{
    fm_ckpt_mark_t m;
    fm_errmsg_t e = {{0}};
    int rc = fm_ckpt_mark(c, &m, &e);
    if (rc)
        fail_msg("mark: %s", e.msg);
    return m;
}

static void test_high_water(void **state)
{
    char dir[512], data[600], old[600], mark[600];
    fresh_dir(state, dir, sizeof dir);
    in_dir(data, sizeof data, dir, "data.mdb");
    in_dir(old, sizeof old, dir, "data.old");
    in_dir(mark, sizeof mark, dir, "high_water.json");
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_ckpt_t *c = open_ok(dir, 0);
    fm_ckpt_mark_t m;
    assert_int_equal(fm_ckpt_mark(c, &m, &e), -ENOENT); /* a new directory */
    assert_int_equal(fm_ckpt_high_water(c), 0);
    save_v(c, 1);
    save_v(c, 2);
    copy_file(data, old); /* an "older backup": versions 1-2 */
    save_v(c, 3);
    m = mark_of(c);
    assert_int_equal(m.version, 3);
    assert_int_equal(m.store, 3);
    fm_ckpt_info_t want = make_info(3, NP, NO);
    assert_memory_equal(m.config_digest, want.config_digest, FM_CKPT_DIGEST_BYTES);
    assert_true(m.reset_at == 0);
    assert_int_equal(fm_ckpt_high_water(c), 3);
    fm_ckpt_close(&c);

    /* data.mdb replaced by the older copy: refused, the message says what to do */
    assert_int_equal(rename(old, data), 0);
    assert_null(fm_ckpt_open(dir, 0, &err, &e));
    assert_int_equal(err, FM_ERANGE);
    assert_msg_has(&e, "the store holds checkpoints up to version 2 but high_water.json says "
                       "version 3 was saved");
    assert_msg_has(&e, "--reset");
    /* the tools still read it, and verify names the problem */
    c = fm_ckpt_open_readonly(dir, &err, &e);
    assert_non_null(c);
    assert_int_equal(fm_ckpt_verify(c, NULL, 0, NULL, NULL, &e), 1);
    fm_ckpt_close(&c);
    /* the operator accepts it: numbers up to 3 stay used */
    assert_int_equal(fm_ckpt_reset(dir, &m, &e), 0);
    assert_int_equal(m.store, 2);
    assert_int_equal(m.version, 3);
    assert_true(m.reset_at > 0);
    c = open_ok(dir, 0);
    assert_int_equal(fm_ckpt_high_water(c), 3);
    check_v(c, UINT64_MAX, 2);
    float p[NP];
    fill(p, NP, 3, 0);
    fm_ckpt_info_t h = make_info(3, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_ERANGE);
    assert_msg_has(&e, "numbers up to 3 were used");
    save_v(c, 2); /* the latest again: allowed */
    save_v(c, 4);
    m = mark_of(c);
    assert_int_equal(m.version, 4);
    assert_int_equal(m.store, 4);
    assert_true(m.reset_at > 0); /* the reset stays on record */
    fm_ckpt_close(&c);

    /* an emptied data.mdb: refused before LMDB writes anything */
    assert_int_equal(truncate(data, 0), 0);
    assert_null(fm_ckpt_open(dir, 0, &err, &e));
    assert_int_equal(err, FM_ERANGE);
    assert_msg_has(&e, "data.mdb is empty (0 bytes) but high_water.json says checkpoint "
                       "version 4 was saved");
    assert_int_equal(file_size(data), 0);
    assert_null(fm_ckpt_open_readonly(dir, &err, &e));
    assert_int_equal(err, FM_ETRUNC);
    assert_msg_has(&e, "empty (0 bytes)");
    /* reset: an empty store, numbers up to 4 used */
    assert_int_equal(fm_ckpt_reset(dir, &m, &e), 0);
    assert_int_equal(m.store, 0);
    assert_int_equal(m.version, 4);
    c = open_ok(dir, 0);
    assert_int_equal(fm_ckpt_high_water(c), 4);
    size_t n = 9;
    assert_int_equal(fm_ckpt_list(c, NULL, 0, &n, &e), 0);
    assert_int_equal(n, 0);
    h = make_info(0, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_ERANGE);
    save_v(c, 5);
    fm_ckpt_close(&c);

    /* a missing data.mdb */
    assert_int_equal(unlink(data), 0);
    assert_null(fm_ckpt_open(dir, 0, &err, &e));
    assert_int_equal(err, FM_ERANGE);
    assert_msg_has(&e, "data.mdb is missing");
    assert_null(fm_ckpt_open_readonly(dir, &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_int_equal(fm_ckpt_reset(dir, &m, &e), 0);
    assert_int_equal(m.version, 5);
    c = open_ok(dir, 0);
    save_v(c, 6);
    fm_ckpt_close(&c);

    /* an unreadable mark: refused, readable by the tools, rewritten by a reset */
    FILE *f = fopen(mark, "w");
    assert_non_null(f);
    fputs("{\"format\": 1, \"version\": \"x\"}", f);
    fclose(f);
    assert_null(fm_ckpt_open(dir, 0, &err, &e));
    assert_int_equal(err, FM_EFORMAT);
    assert_msg_has(&e, "high_water.json");
    assert_msg_has(&e, "--verify");
    c = fm_ckpt_open_readonly(dir, &err, &e);
    assert_non_null(c);
    assert_int_equal(fm_ckpt_mark(c, &m, &e), FM_EFORMAT);
    assert_int_equal(fm_ckpt_high_water(c), 6);
    fm_ckpt_close(&c);
    assert_int_equal(fm_ckpt_reset(dir, &m, &e), 0);
    assert_int_equal(m.version, 6);
    assert_int_equal(m.store, 6);
    c = open_ok(dir, 0);
    check_v(c, UINT64_MAX, 6);
    /* numbers used without a checkpoint (published while saves failed) are reserved: this
     * handle may still save them, a later one may not */
    assert_int_equal(fm_ckpt_reserve(c, 9, &e), 0);
    assert_int_equal(fm_ckpt_high_water(c), 9);
    m = mark_of(c);
    assert_int_equal(m.version, 9);
    assert_int_equal(m.store, 6);
    assert_int_equal(fm_ckpt_reserve(c, 8, &e), 0); /* below: nothing to do */
    save_v(c, 7);
    fm_ckpt_close(&c);
    c = open_ok(dir, 0);
    assert_int_equal(fm_ckpt_high_water(c), 9);
    h = make_info(8, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_ERANGE);
    save_v(c, 10);
    assert_int_equal(mark_of(c).version, 10);
    fm_ckpt_close(&c);
}

static void test_readonly(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_errmsg_t e = {{0}};
    int err = 0;
    struct stat st;
    assert_null(fm_ckpt_open_readonly(dir, &err, &e));
    assert_int_equal(err, -ENOENT);
    assert_int_not_equal(stat(dir, &st), 0); /* nothing created */
    fm_ckpt_t *c = open_ok(dir, 0);
    save_v(c, 1);
    fm_ckpt_close(&c);
    c = fm_ckpt_open_readonly(dir, &err, &e);
    assert_non_null(c);
    check_v(c, UINT64_MAX, 1);
    float p[NP];
    fill(p, NP, 2, 0);
    fm_ckpt_info_t h = make_info(2, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), FM_EARG);
    assert_int_equal(fm_ckpt_meta_put(c, "k", "v", 1, &e), FM_EARG);
    assert_int_equal(fm_ckpt_prune(c, 1, &e), FM_EARG);
    fm_ckpt_close(&c);
}

static void test_record_blobs(void **state)
{
    char dir[512];
    fresh_dir(state, dir, sizeof dir);
    fm_ckpt_t *c = open_ok(dir, 0);
    float p[NP];
    fill(p, NP, 1, 0);
    uint8_t ids1[2 * FM_CKPT_ID_BYTES], ids2[3 * FM_CKPT_ID_BYTES], buf[256];
    for (size_t i = 0; i < sizeof ids1; i++)
        ids1[i] = (uint8_t)(i / FM_CKPT_ID_BYTES + 1);
    for (size_t i = 0; i < sizeof ids2; i++)
        ids2[i] = (uint8_t)(i / FM_CKPT_ID_BYTES + 11);
    fm_errmsg_t e = {{0}};
    size_t len = 0;
    fm_ckpt_extra_t x1[] = {{FM_CKPT_IDS_KEY, ids1, sizeof ids1, 1}, {"x", "a", 1, 1}};
    fm_ckpt_info_t h = make_info(1, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x1, 2, &e), 0);
    fm_ckpt_extra_t x2[] = {{FM_CKPT_IDS_KEY, ids2, sizeof ids2, 1}};
    h = make_info(2, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x2, 1, &e), 0);
    /* each record has its own blobs; they are no meta keys */
    assert_int_equal(fm_ckpt_record_get(c, 1, FM_CKPT_IDS_KEY, buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, sizeof ids1);
    assert_memory_equal(buf, ids1, sizeof ids1);
    assert_int_equal(fm_ckpt_record_get(c, 2, FM_CKPT_IDS_KEY, buf, sizeof buf, &len, &e), 0);
    assert_int_equal(len, sizeof ids2);
    assert_memory_equal(buf, ids2, sizeof ids2);
    assert_int_equal(fm_ckpt_record_get(c, 1, "x", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(fm_ckpt_record_get(c, 2, "x", buf, sizeof buf, &len, &e), -ENOENT);
    assert_msg_has(&e, "checkpoint version 2: no x stored with it");
    assert_int_equal(fm_ckpt_meta_get(c, FM_CKPT_IDS_KEY, buf, sizeof buf, &len, &e), -ENOENT);
    assert_int_equal(fm_ckpt_record_get(c, 2, FM_CKPT_IDS_KEY, buf, 8, &len, &e), -ENOBUFS);
    assert_int_equal(fm_ckpt_record_get(c, 2, FM_CKPT_IDS_KEY, NULL, 0, &len, &e), 0);
    assert_int_equal(len, sizeof ids2);
    /* saving a version again replaces its blobs */
    fm_ckpt_extra_t x3[] = {{"x", "b", 1, 1}};
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x3, 1, &e), 0);
    assert_int_equal(fm_ckpt_record_get(c, 2, FM_CKPT_IDS_KEY, NULL, 0, &len, &e), -ENOENT);
    assert_int_equal(fm_ckpt_record_get(c, 2, "x", buf, sizeof buf, &len, &e), 0);
    assert_int_equal(buf[0], 'b');
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x2, 1, &e), 0);
    /* pruning a record prunes its blobs */
    assert_int_equal(fm_ckpt_prune(c, 1, &e), 0);
    assert_int_equal(fm_ckpt_record_get(c, 1, FM_CKPT_IDS_KEY, NULL, 0, &len, &e), -ENOENT);
    assert_int_equal(fm_ckpt_record_get(c, 1, "x", NULL, 0, &len, &e), -ENOENT);
    assert_int_equal(fm_ckpt_record_get(c, 2, FM_CKPT_IDS_KEY, NULL, 0, &len, &e), 0);
    fm_ckpt_close(&c);
}

/* Problems reported by fm_ckpt_verify, one line each, into a buffer. */
typedef struct {
    char text[4096];
    int n;
} problems_t;

static void collect(void *arg, const char *line)
{
    problems_t *p = arg;
    size_t used = strlen(p->text);
    assert_null(strchr(line, '\n'));
    snprintf(p->text + used, sizeof p->text - used, "%s\n", line);
    p->n++;
}

static int verify(const char *dir, int ids, problems_t *p)
{
    memset(p, 0, sizeof *p);
    int err = 0;
    fm_errmsg_t e = {{0}};
    fm_ckpt_t *c = fm_ckpt_open_readonly(dir, &err, &e);
    if (!c)
        fail_msg("open %s: %s", dir, e.msg);
    int n = fm_ckpt_verify(c, ids ? FM_CKPT_IDS_KEY : NULL, FM_CKPT_ID_BYTES, collect, p, &e);
    fm_ckpt_close(&c);
    assert_int_equal(n, p->n);
    return n;
}

static void test_verify(void **state)
{
    char dir[512], mark[600];
    fresh_dir(state, dir, sizeof dir);
    in_dir(mark, sizeof mark, dir, "high_water.json");
    fm_ckpt_t *c = open_ok(dir, 0);
    float p[NP];
    fill(p, NP, 1, 0);
    uint8_t ids[3 * FM_CKPT_ID_BYTES];
    for (size_t i = 0; i < sizeof ids; i++)
        ids[i] = (uint8_t)(i / FM_CKPT_ID_BYTES + 1);
    fm_errmsg_t e = {{0}};
    for (uint64_t v = 1; v <= 3; v++) {
        fm_ckpt_extra_t x[] = {{FM_CKPT_IDS_KEY, ids, sizeof ids, 1}};
        fm_ckpt_info_t h = make_info(v, NP, 0);
        assert_int_equal(fm_ckpt_save(c, &h, p, NULL, x, 1, &e), 0);
    }
    fm_ckpt_close(&c);
    problems_t pr;
    assert_int_equal(verify(dir, 1, &pr), 0);

    /* a corrupt record, a record without ids, ids of a wrong length, duplicate ids */
    raw_edit(dir, 3, edit_flip_param);
    c = open_ok(dir, 0);
    memcpy(ids + FM_CKPT_ID_BYTES, ids, FM_CKPT_ID_BYTES);
    fm_ckpt_extra_t dup[] = {{FM_CKPT_IDS_KEY, ids, sizeof ids, 1}};
    fm_ckpt_extra_t odd[] = {{FM_CKPT_IDS_KEY, ids, sizeof ids - 1, 1}};
    fm_ckpt_info_t h = make_info(4, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, NULL, 0, &e), 0);
    h = make_info(5, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, odd, 1, &e), 0);
    h = make_info(6, NP, 0);
    assert_int_equal(fm_ckpt_save(c, &h, p, NULL, dup, 1, &e), 0);
    fm_ckpt_close(&c);
    assert_int_equal(verify(dir, 1, &pr), 4);
    assert_non_null(strstr(pr.text, "checkpoint version 3: CRC mismatch"));
    assert_non_null(strstr(pr.text, "checkpoint version 4: no agg.ids stored with it"));
    assert_non_null(strstr(pr.text, "checkpoint version 5: agg.ids holds 47 bytes"));
    assert_non_null(strstr(pr.text, "checkpoint version 6: agg.ids holds 1 duplicate id(s)"));

    /* a missing mark is a problem too (nothing would notice an emptied data.mdb) */
    assert_int_equal(unlink(mark), 0);
    assert_int_equal(verify(dir, 1, &pr), 5);
    assert_non_null(strstr(pr.text, "high_water.json: missing"));
}

/* 1 when this test process has its own mount namespace (main: root only). */
static int s_private_mounts = 0;

/* Fill the filesystem of `path` (a new file) until it is full. */
static void fill_disk(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char chunk[65536];
    for (size_t sz = sizeof chunk; sz >= 1; sz /= 2)
        while (write(fd, chunk, sz) == (ssize_t)sz)
            ;
    close(fd);
}

static void test_full_disk(void **state)
{
    ctx_t *cx = *state;
    if (!s_private_mounts) {
        if (geteuid() != 0) {
            print_message("SKIPPED test_full_disk: needs root for a private tmpfs mount\n");
            skip();
        }
        fail_msg("running as root but no private mount namespace (unshare(CLONE_NEWNS))");
    }
    char mnt[512], dir[600], filler[600], small[600];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", cx->root);
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0)
        fail_msg("mount tmpfs on %s: %s", mnt, strerror(errno));
    snprintf(dir, sizeof dir, "%s/ckpt", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    snprintf(small, sizeof small, "%s/state.json", mnt);
    fm_ckpt_t *c = open_ok(dir, 0);
    save_v(c, 1);
    fm_errmsg_t e = {{0}};
    assert_int_equal(fm_file_replace(small, "{\"v\": 1}\n", 9, FM_FILE_SPARE, &e), 0);

    fill_disk(filler);
    /* a checkpoint on a full disk: no space left on device, never "Input/output error";
     * with one page free, LMDB's write is short and LMDB says EIO: still "no space" */
    float p[NP], o[NO];
    fill(p, NP, 2, 0);
    fill(o, NO, 2, 0x5555);
    int failures = 0;
    for (uint64_t v = 2; v <= 4; v++) {
        if (v == 3)
            assert_int_equal(truncate(filler, file_size(filler) - 4096), 0);
        fm_ckpt_info_t h = make_info(v, NP, NO);
        int rc = fm_ckpt_save(c, &h, p, o, NULL, 0, &e);
        if (rc == 0)
            continue; /* LMDB reused freed pages */
        failures++;
        assert_int_equal(rc, -ENOSPC);
        if (!strstr(e.msg, "o space left on device") || strstr(e.msg, "Input/output"))
            fail_msg("full disk reported as: %s", e.msg);
        print_message("full disk: %s\n", e.msg);
    }
    assert_true(failures > 0);
    /* small state files stay current through their spare */
    char text[64];
    for (int i = 2; i <= 5; i++) {
        int n = snprintf(text, sizeof text, "{\"v\": %d}\n", i);
        int rc = fm_file_replace(small, text, (size_t)n, FM_FILE_SPARE, &e);
        if (rc)
            fail_msg("replace %d on a full disk: %s", i, e.msg);
        char *back = NULL;
        size_t len = 0;
        assert_int_equal(fm_file_read(small, 4096, &back, &len, &e), 0);
        assert_string_equal(back, text);
        free(back);
    }
    char other[700];
    snprintf(other, sizeof other, "%s/other.json", mnt);
    assert_int_equal(fm_file_replace(other, "{}", 2, 0, &e), -ENOSPC); /* no spare */
    /* what was saved is intact; space back: saves work again */
    check_v(c, 1, 1);
    assert_int_equal(unlink(filler), 0);
    save_v(c, 5);
    check_v(c, UINT64_MAX, 5);
    fm_ckpt_close(&c);
    problems_t pr;
    assert_int_equal(verify(dir, 0, &pr), 0);
    assert_int_equal(umount2(mnt, MNT_DETACH), 0);
}

int main(void)
{
    /* a private mount namespace (root only) for the tmpfs of test_full_disk, before any
     * thread exists: its mounts vanish with the process */
    if (geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
        s_private_mounts = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_record_decode),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_list_and_latest),
        cmocka_unit_test(test_versions_increase),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_reopen),
        cmocka_unit_test(test_corrupt_fallback),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_bad_save_args),
        cmocka_unit_test(test_extra_and_meta),
        cmocka_unit_test(test_map_grows),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_crash_consistency),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_high_water),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_record_blobs),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
