/* fm_ckpt: LMDB checkpoints (see fm_ckpt.h for the layout and the rules).
 *
 * Internal convention: LMDB calls return LMDB codes (0, positive errno values, or
 * MDB_* codes in -30799..-30779); everything leaving this file is a fedmq code, made by
 * s_mdb_fail(). Write transactions go through s_write(), which owns the one retry after
 * growing a full map; its callbacks report LMDB's own code through *mrc so that s_write
 * can tell MDB_MAP_FULL from other failures. */
#include "fm_ckpt.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "fm_log.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_ckpt assumes a little-endian host (parameter floats are stored as in memory)"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");
_Static_assert(sizeof(double) == 8, "double must be IEEE-754 binary64");

#define S_MAGIC "FMCK"
#define S_CRC_BYTES 4
#define S_LATEST "latest" /* reserved meta key: highest version ever saved (u64 BE) */
#define S_MAXDBS 4        /* "ckpt", "meta" and room for two more */
#define S_GROW_ALIGN ((size_t)1 << 20)

/* Byte offsets of the header fields (fm_ckpt.h has the table). */
enum {
    S_OFF_MAGIC = 0,
    S_OFF_FORMAT = 4,
    S_OFF_HDRSIZE = 8,
    S_OFF_RESERVED0 = 12,
    S_OFF_MODEL = 16,
    S_OFF_NPARAMS = 32,
    S_OFF_VERSION = 40,
    S_OFF_CREATED = 48,
    S_OFF_APPLIED = 56,
    S_OFF_REJECTED = 64,
    S_OFF_REASONS = 72,
    S_OFF_DIGEST = S_OFF_REASONS + 8 * FM_CKPT_NREASONS, /* 200 */
    S_OFF_NOPT = S_OFF_DIGEST + FM_CKPT_DIGEST_BYTES,    /* 232 */
    S_OFF_SCORE = S_OFF_NOPT + 8,                        /* 240 */
    S_OFF_RESERVED1 = S_OFF_SCORE + 8,                   /* 248 */
    S_OFF_END = S_OFF_RESERVED1 + 8                      /* 256 */
};
_Static_assert(S_OFF_END == FM_CKPT_HEADER_BYTES, "header layout and size disagree");

struct fm_ckpt {
    MDB_env *env;     /* the environment (opened with MDB_NOTLS) */
    MDB_dbi ckpt_dbi; /* "ckpt": version (u64 BE) -> record */
    MDB_dbi meta_dbi; /* "meta": name -> blob */
    char *dir;        /* as given to fm_ckpt_open, for messages */
};

/* ---- little-endian fields and big-endian keys ------------------------------------------- */

static void s_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void s_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void s_put_f64(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    s_put_u64(p, v);
}

static uint32_t s_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t s_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static double s_get_f64(const uint8_t *p)
{
    uint64_t v = s_get_u64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static void s_key_encode(uint8_t k[8], uint64_t version)
{
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(version >> (56 - 8 * i));
}

static uint64_t s_key_decode(const MDB_val *k)
{
    uint64_t v = 0;
    const uint8_t *p = k->mv_data;
    for (size_t i = 0; i < 8 && i < k->mv_size; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- errors ------------------------------------------------------------------------------ */

/* LMDB code -> fedmq code. */
static int s_mdb_code(int mrc)
{
    if (mrc > 0)
        return -mrc; /* LMDB passes errno values through */
    if (mrc == MDB_NOTFOUND)
        return -ENOENT;
    if (mrc == MDB_MAP_FULL)
        return -ENOSPC;
    return FM_EFORMAT;
}

/* One line "DIR: OP: mdb_strerror" and the mapped code. */
static int s_mdb_fail(const fm_ckpt_t *c, fm_errmsg_t *e, int mrc, const char *op)
{
    return fm_errmsg_set(e, s_mdb_code(mrc), "%s: %s: %s", c->dir, op, mdb_strerror(mrc));
}

/* ---- records ----------------------------------------------------------------------------- */

static uint32_t s_crc(const uint8_t *p, size_t n) { return (uint32_t)crc32_z(0L, p, n); }

/* Bytes of a record with np params and no optimizer floats; 0 if it would not fit in a
 * size_t. */
static size_t s_record_size(uint64_t np, uint64_t no)
{
    const uint64_t room = ((uint64_t)SIZE_MAX - FM_CKPT_HEADER_BYTES - S_CRC_BYTES) / 4;
    if (np > room || no > room - np)
        return 0;
    return (size_t)(FM_CKPT_HEADER_BYTES + 4 * (np + no) + S_CRC_BYTES);
}

/* Fill the `size` bytes at `p` with the record and its CRC. */
static void s_encode(uint8_t *p, size_t size, const fm_ckpt_info_t *info, double created,
                     const float *params, const float *opt)
{
    memset(p, 0, FM_CKPT_HEADER_BYTES);
    memcpy(p + S_OFF_MAGIC, S_MAGIC, 4);
    s_put_u32(p + S_OFF_FORMAT, FM_CKPT_FORMAT);
    s_put_u32(p + S_OFF_HDRSIZE, FM_CKPT_HEADER_BYTES);
    memcpy(p + S_OFF_MODEL, info->model, strnlen(info->model, FM_CKPT_MODEL_MAX - 1));
    s_put_u64(p + S_OFF_NPARAMS, info->nparams);
    s_put_u64(p + S_OFF_VERSION, info->version);
    s_put_f64(p + S_OFF_CREATED, created);
    s_put_u64(p + S_OFF_APPLIED, info->updates_applied);
    s_put_u64(p + S_OFF_REJECTED, info->updates_rejected);
    for (int i = 0; i < FM_CKPT_NREASONS; i++)
        s_put_u64(p + S_OFF_REASONS + 8 * i, info->rejected_by_reason[i]);
    memcpy(p + S_OFF_DIGEST, info->config_digest, FM_CKPT_DIGEST_BYTES);
    s_put_u64(p + S_OFF_NOPT, info->nopt);
    s_put_f64(p + S_OFF_SCORE, info->score);
    uint8_t *q = p + FM_CKPT_HEADER_BYTES;
    memcpy(q, params, 4 * (size_t)info->nparams);
    q += 4 * (size_t)info->nparams;
    if (info->nopt)
        memcpy(q, opt, 4 * (size_t)info->nopt);
    s_put_u32(p + size - S_CRC_BYTES, s_crc(p, size - S_CRC_BYTES));
}

/* Decode the header fields of a record known to hold at least a header. */
static void s_decode_header(const uint8_t *p, fm_ckpt_info_t *h)
{
    memcpy(h->model, p + S_OFF_MODEL, FM_CKPT_MODEL_MAX);
    h->model[FM_CKPT_MODEL_MAX - 1] = '\0';
    h->nparams = s_get_u64(p + S_OFF_NPARAMS);
    h->version = s_get_u64(p + S_OFF_VERSION);
    h->created = s_get_f64(p + S_OFF_CREATED);
    h->updates_applied = s_get_u64(p + S_OFF_APPLIED);
    h->updates_rejected = s_get_u64(p + S_OFF_REJECTED);
    for (int i = 0; i < FM_CKPT_NREASONS; i++)
        h->rejected_by_reason[i] = s_get_u64(p + S_OFF_REASONS + 8 * i);
    memcpy(h->config_digest, p + S_OFF_DIGEST, FM_CKPT_DIGEST_BYTES);
    h->nopt = s_get_u64(p + S_OFF_NOPT);
    h->score = s_get_f64(p + S_OFF_SCORE);
}

/* Validate the record `v` stored under version `kver`. *h is always reset (version =
 * kver) and gets the header fields whenever the magic is right, even if a later check
 * fails (for listings). Messages: "DIR: checkpoint version N: reason". */
static int s_validate(const fm_ckpt_t *c, uint64_t kver, const MDB_val *v, fm_ckpt_info_t *h,
                      fm_errmsg_t *e)
{
    const uint8_t *p = v->mv_data;
    size_t n = v->mv_size;
    unsigned long long kv = (unsigned long long)kver;
    memset(h, 0, sizeof *h);
    h->version = kver;
    h->score = NAN;
    if (n < FM_CKPT_HEADER_BYTES + S_CRC_BYTES)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s: checkpoint version %llu: truncated (%zu bytes, "
                             "a record has at least %d)",
                             c->dir, kv, n, FM_CKPT_HEADER_BYTES + S_CRC_BYTES);
    if (memcmp(p + S_OFF_MAGIC, S_MAGIC, 4) != 0)
        return fm_errmsg_set(e, FM_EMAGIC,
                             "%s: checkpoint version %llu: bad magic (not a fedmq "
                             "checkpoint record)",
                             c->dir, kv);
    s_decode_header(p, h);
    h->version = kver;
    uint32_t format = s_get_u32(p + S_OFF_FORMAT);
    if (format != FM_CKPT_FORMAT)
        return fm_errmsg_set(e, FM_EVERSION,
                             "%s: checkpoint version %llu: record format %u "
                             "(this build reads %d)",
                             c->dir, kv, format, FM_CKPT_FORMAT);
    if (s_get_u32(p + n - S_CRC_BYTES) != s_crc(p, n - S_CRC_BYTES))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: checkpoint version %llu: CRC mismatch", c->dir,
                             kv);
    uint32_t hdr = s_get_u32(p + S_OFF_HDRSIZE);
    if (hdr != FM_CKPT_HEADER_BYTES)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: header size %u "
                             "(expected %d)",
                             c->dir, kv, hdr, FM_CKPT_HEADER_BYTES);
    uint64_t hv = s_get_u64(p + S_OFF_VERSION);
    if (hv != kver)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: header says version "
                             "%llu",
                             c->dir, kv, (unsigned long long)hv);
    size_t want = s_record_size(h->nparams, h->nopt);
    if (want != n)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: record is %zu bytes "
                             "but nparams=%llu and nopt=%llu need %zu",
                             c->dir, kv, n, (unsigned long long)h->nparams,
                             (unsigned long long)h->nopt, want);
    if (h->nparams == 0 || memchr(p + S_OFF_MODEL, 0, FM_CKPT_MODEL_MAX) == NULL)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: bad header (model "
                             "name or nparams)",
                             c->dir, kv);
    return 0;
}

/* Validate, check the caller's sizes, copy out. *info is written on success only. */
static int s_copy_out(const fm_ckpt_t *c, uint64_t kver, const MDB_val *v, fm_ckpt_info_t *info,
                      float *params, size_t nparams, float *opt, size_t nopt, fm_errmsg_t *e)
{
    fm_ckpt_info_t h;
    int rc = s_validate(c, kver, v, &h, e);
    if (rc)
        return rc;
    if (params && h.nparams != nparams)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: checkpoint version %llu: %llu params, expected "
                             "%zu",
                             c->dir, (unsigned long long)kver, (unsigned long long)h.nparams,
                             nparams);
    if (opt && h.nopt != nopt)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: checkpoint version %llu: %llu optimizer state "
                             "floats, expected %zu",
                             c->dir, (unsigned long long)kver, (unsigned long long)h.nopt, nopt);
    const uint8_t *p = (const uint8_t *)v->mv_data + FM_CKPT_HEADER_BYTES;
    if (params)
        memcpy(params, p, 4 * nparams);
    if (opt && nopt)
        memcpy(opt, p + 4 * (size_t)h.nparams, 4 * nopt);
    if (info)
        *info = h;
    return 0;
}

/* ---- environment and transactions -------------------------------------------------------- */

/* mkdir -p with mode 0700 for each directory created. */
static int s_mkdirs(const char *dir, fm_errmsg_t *e)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n >= sizeof path)
        return fm_errmsg_set(e, -ENAMETOOLONG, "%s: path too long", dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            int err = errno;
            return fm_errmsg_set(e, -err, "%s: cannot create directory %s: %s", dir, path,
                                 strerror(err));
        }
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        int err = errno;
        return fm_errmsg_set(e, -err, "%s: %s", dir, strerror(err));
    }
    if (!S_ISDIR(st.st_mode))
        return fm_errmsg_set(e, -ENOTDIR, "%s: not a directory", dir);
    return 0;
}

/* mdb_txn_begin that adopts a map grown by another process (MDB_MAP_RESIZED). */
static int s_txn_begin(fm_ckpt_t *c, unsigned flags, MDB_txn **txn)
{
    int mrc = mdb_txn_begin(c->env, NULL, flags, txn);
    if (mrc == MDB_MAP_RESIZED) {
        mrc = mdb_env_set_mapsize(c->env, 0);
        if (mrc == 0)
            mrc = mdb_txn_begin(c->env, NULL, flags, txn);
    }
    return mrc;
}

/* Grow the map to at least twice its size and at least `need` bytes more (no transaction
 * of this handle may be open). */
static int s_grow(fm_ckpt_t *c, size_t need, fm_errmsg_t *e)
{
    MDB_envinfo info;
    int mrc = mdb_env_info(c->env, &info);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "read map size");
    size_t cur = info.me_mapsize;
    size_t want = cur > SIZE_MAX / 2 ? SIZE_MAX : 2 * cur;
    if (need > (SIZE_MAX - cur) / 2)
        return fm_errmsg_set(e, -ENOSPC, "%s: map full and cannot grow past %zu bytes", c->dir,
                             cur);
    if (want < cur + 2 * need)
        want = cur + 2 * need;
    if (want <= SIZE_MAX - S_GROW_ALIGN)
        want = (want + S_GROW_ALIGN - 1) / S_GROW_ALIGN * S_GROW_ALIGN;
    mrc = mdb_env_set_mapsize(c->env, want);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "grow map");
    FM_LOG(LOG_NOTICE, "ckpt: %s: map full, grew it from %zu to %zu bytes", c->dir, cur, want);
    return 0;
}

/* A step run inside a write transaction: returns 0 or a fedmq code; an LMDB failure also
 * leaves LMDB's code in *mrc. */
typedef int (*s_write_fn)(fm_ckpt_t *c, MDB_txn *txn, void *arg, int *mrc, fm_errmsg_t *e);

/* Run `fn` in a write transaction and commit it. On MDB_MAP_FULL (in fn or at commit)
 * grow the map (room for `need` more bytes) and run everything again, once. */
static int s_write(fm_ckpt_t *c, s_write_fn fn, void *arg, size_t need, const char *what,
                   fm_errmsg_t *e)
{
    for (int attempt = 0;; attempt++) {
        MDB_txn *txn = NULL;
        int mrc = s_txn_begin(c, 0, &txn);
        if (mrc)
            return s_mdb_fail(c, e, mrc, "begin write transaction");
        mrc = 0;
        int rc = fn(c, txn, arg, &mrc, e);
        if (rc) {
            mdb_txn_abort(txn);
        } else {
            mrc = mdb_txn_commit(txn); /* frees txn, also on failure */
            if (mrc)
                rc = s_mdb_fail(c, e, mrc, what);
        }
        if (rc == 0 || mrc != MDB_MAP_FULL || attempt > 0)
            return rc;
        rc = s_grow(c, need, e);
        if (rc)
            return rc;
    }
}

fm_ckpt_t *fm_ckpt_open(const char *dir, size_t map_bytes, int *err, fm_errmsg_t *e)
{
    int rc = 0, mrc = 0;
    fm_ckpt_t *c = NULL;
    MDB_txn *txn = NULL;
    if (!dir || !*dir) {
        rc = fm_errmsg_set(e, FM_EARG, "fm_ckpt_open: no directory");
        goto cleanup;
    }
    c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", dir);
        goto cleanup;
    }
    rc = s_mkdirs(dir, e);
    if (rc)
        goto cleanup;
    if ((mrc = mdb_env_create(&c->env)) != 0) {
        c->env = NULL;
        rc = s_mdb_fail(c, e, mrc, "create environment");
        goto cleanup;
    }
    if ((mrc = mdb_env_set_maxdbs(c->env, S_MAXDBS)) != 0 ||
        (mrc = mdb_env_set_mapsize(c->env, map_bytes ? map_bytes : FM_CKPT_DEFAULT_MAP)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "configure environment");
        goto cleanup;
    }
    if ((mrc = mdb_env_open(c->env, dir, MDB_NOTLS, 0600)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "open environment");
        goto cleanup;
    }
    int dead = 0;
    if ((mrc = mdb_reader_check(c->env, &dead)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "check readers");
        goto cleanup;
    }
    if (dead > 0)
        FM_LOG(LOG_NOTICE, "ckpt: %s: cleared %d stale reader slot(s)", dir, dead);
    if ((mrc = s_txn_begin(c, 0, &txn)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "begin write transaction");
        goto cleanup;
    }
    if ((mrc = mdb_dbi_open(txn, "ckpt", MDB_CREATE, &c->ckpt_dbi)) != 0 ||
        (mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta_dbi)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "open databases");
        goto cleanup;
    }
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc)
        rc = s_mdb_fail(c, e, mrc, "commit");

cleanup:
    if (txn)
        mdb_txn_abort(txn);
    if (rc)
        fm_ckpt_close(&c);
    if (err)
        *err = rc;
    return c;
}

void fm_ckpt_close(fm_ckpt_t **p)
{
    if (!p || !*p)
        return;
    fm_ckpt_t *c = *p;
    if (c->env)
        mdb_env_close(c->env);
    free(c->dir);
    free(c);
    *p = NULL;
}

const char *fm_ckpt_dir(const fm_ckpt_t *c)
{
    FM_ASSERT(c);
    return c->dir;
}

/* ---- meta -----------------------------------------------------------------------------------
 */

static int s_check_key(const fm_ckpt_t *c, const char *key, bool writing, fm_errmsg_t *e)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > FM_CKPT_META_KEY_MAX)
        return fm_errmsg_set(e, FM_EARG, "%s: meta key must be 1..%d bytes", c->dir,
                             FM_CKPT_META_KEY_MAX);
    if (writing && strcmp(key, S_LATEST) == 0)
        return fm_errmsg_set(e, FM_EARG, "%s: meta key '%s' is reserved", c->dir, key);
    return 0;
}

/* The "latest" marker inside `txn`: *have = false if absent. */
static int s_get_latest(fm_ckpt_t *c, MDB_txn *txn, uint64_t *latest, bool *have, int *mrc,
                        fm_errmsg_t *e)
{
    MDB_val k = {strlen(S_LATEST), (void *)S_LATEST}, v;
    *have = false;
    int r = mdb_get(txn, c->meta_dbi, &k, &v);
    if (r == MDB_NOTFOUND)
        return 0;
    if (r) {
        *mrc = r;
        return s_mdb_fail(c, e, r, "read meta latest");
    }
    if (v.mv_size != 8)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: meta latest: %zu bytes, expected 8", c->dir,
                             v.mv_size);
    *latest = s_key_decode(&v);
    *have = true;
    return 0;
}

typedef struct {
    const char *key;
    const void *val;
    size_t len;
} s_meta_put_t;

static int s_meta_put_fn(fm_ckpt_t *c, MDB_txn *txn, void *arg, int *mrc, fm_errmsg_t *e)
{
    const s_meta_put_t *m = arg;
    MDB_val k = {strlen(m->key), (void *)m->key}, v = {m->len, (void *)m->val};
    char what[FM_CKPT_META_KEY_MAX + 32];
    snprintf(what, sizeof what, "write meta %s", m->key);
    if ((*mrc = mdb_put(txn, c->meta_dbi, &k, &v, 0)) != 0)
        return s_mdb_fail(c, e, *mrc, what);
    return 0;
}

int fm_ckpt_meta_put(fm_ckpt_t *c, const char *key, const void *val, size_t len, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    int rc = s_check_key(c, key, true, e);
    if (rc)
        return rc;
    if (!val && len)
        return fm_errmsg_set(e, FM_EARG, "%s: meta %s: NULL value", c->dir, key);
    s_meta_put_t m = {key, val ? val : "", len};
    return s_write(c, s_meta_put_fn, &m, len + 4096, "commit meta", e);
}

int fm_ckpt_meta_get(fm_ckpt_t *c, const char *key, void *buf, size_t cap, size_t *len,
                     fm_errmsg_t *e)
{
    FM_ASSERT(c && len);
    int rc = s_check_key(c, key, false, e);
    if (rc)
        return rc;
    MDB_txn *txn = NULL;
    int mrc = s_txn_begin(c, MDB_RDONLY, &txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    MDB_val k = {strlen(key), (void *)key}, v;
    mrc = mdb_get(txn, c->meta_dbi, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        rc = fm_errmsg_set(e, -ENOENT, "%s: no meta key %s", c->dir, key);
        goto cleanup;
    }
    if (mrc) {
        rc = s_mdb_fail(c, e, mrc, "read meta");
        goto cleanup;
    }
    *len = v.mv_size;
    if (buf && cap < v.mv_size) {
        rc = fm_errmsg_set(e, -ENOBUFS, "%s: meta %s: %zu bytes, buffer holds %zu", c->dir, key,
                           v.mv_size, cap);
        goto cleanup;
    }
    if (buf && v.mv_size)
        memcpy(buf, v.mv_data, v.mv_size);

cleanup:
    mdb_txn_abort(txn);
    return rc;
}

int fm_ckpt_latest_version(fm_ckpt_t *c, uint64_t *version, fm_errmsg_t *e)
{
    FM_ASSERT(c && version);
    MDB_txn *txn = NULL;
    int mrc = s_txn_begin(c, MDB_RDONLY, &txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    bool have = false;
    int rc = s_get_latest(c, txn, version, &have, &mrc, e);
    mdb_txn_abort(txn);
    if (rc == 0 && !have)
        rc = fm_errmsg_set(e, -ENOENT, "%s: no checkpoint saved yet", c->dir);
    return rc;
}

/* ---- save ------------------------------------------------------------------------------------
 */

typedef struct {
    const fm_ckpt_info_t *info;
    const float *params;
    const float *opt;
    const fm_ckpt_extra_t *extra;
    size_t nextra;
    double created;
    size_t size;
} s_save_t;

static int s_save_fn(fm_ckpt_t *c, MDB_txn *txn, void *arg, int *mrc, fm_errmsg_t *e)
{
    const s_save_t *s = arg;
    unsigned long long ver = (unsigned long long)s->info->version;
    uint64_t latest = 0;
    bool have = false;
    char what[FM_CKPT_META_KEY_MAX + 64];
    int rc = s_get_latest(c, txn, &latest, &have, mrc, e);
    if (rc)
        return rc;
    if (have && s->info->version < latest)
        return fm_errmsg_set(e, FM_ERANGE,
                             "%s: checkpoint version %llu is below the latest "
                             "saved version %llu",
                             c->dir, ver, (unsigned long long)latest);

    uint8_t kb[8];
    s_key_encode(kb, s->info->version);
    MDB_val k = {sizeof kb, kb}, v = {s->size, NULL};
    snprintf(what, sizeof what, "write checkpoint version %llu", ver);
    if ((*mrc = mdb_put(txn, c->ckpt_dbi, &k, &v, MDB_RESERVE)) != 0)
        return s_mdb_fail(c, e, *mrc, what);
    s_encode(v.mv_data, s->size, s->info, s->created, s->params, s->opt);

    MDB_val lk = {strlen(S_LATEST), (void *)S_LATEST}, lv = {sizeof kb, kb};
    if ((*mrc = mdb_put(txn, c->meta_dbi, &lk, &lv, 0)) != 0)
        return s_mdb_fail(c, e, *mrc, "write meta latest");

    for (size_t i = 0; i < s->nextra; i++) {
        const fm_ckpt_extra_t *x = &s->extra[i];
        MDB_val xk = {strlen(x->key), (void *)x->key}, xv = {x->len, (void *)x->val};
        if (x->val) {
            *mrc = mdb_put(txn, c->meta_dbi, &xk, &xv, 0);
        } else {
            *mrc = mdb_del(txn, c->meta_dbi, &xk, NULL);
            if (*mrc == MDB_NOTFOUND)
                *mrc = 0;
        }
        if (*mrc) {
            snprintf(what, sizeof what, "write meta %s", x->key);
            return s_mdb_fail(c, e, *mrc, what);
        }
    }
    return 0;
}

int fm_ckpt_save(fm_ckpt_t *c, const fm_ckpt_info_t *info, const float *params,
                 const float *opt_state, const fm_ckpt_extra_t *extra, size_t nextra,
                 fm_errmsg_t *e)
{
    FM_ASSERT(c && info);
    size_t mlen = strnlen(info->model, FM_CKPT_MODEL_MAX);
    if (mlen == 0 || mlen >= FM_CKPT_MODEL_MAX)
        return fm_errmsg_set(e, FM_EARG, "%s: checkpoint model name must be 1..%d characters",
                             c->dir, FM_CKPT_MODEL_MAX - 1);
    if (info->nparams == 0 || !params)
        return fm_errmsg_set(e, FM_EARG, "%s: checkpoint without parameters", c->dir);
    if (info->nopt && !opt_state)
        return fm_errmsg_set(e, FM_EARG, "%s: checkpoint nopt=%llu but no optimizer state",
                             c->dir, (unsigned long long)info->nopt);
    if (nextra && !extra)
        return fm_errmsg_set(e, FM_EARG, "%s: %zu extra pairs but no array", c->dir, nextra);
    size_t need = 0;
    for (size_t i = 0; i < nextra; i++) {
        int rc = s_check_key(c, extra[i].key, true, e);
        if (rc)
            return rc;
        if (!extra[i].val && extra[i].len)
            return fm_errmsg_set(e, FM_EARG, "%s: extra %s: NULL value with length %zu", c->dir,
                                 extra[i].key, extra[i].len);
        need += extra[i].len;
    }
    size_t size = s_record_size(info->nparams, info->nopt);
    if (size == 0 || need > SIZE_MAX - size)
        return fm_errmsg_set(e, FM_EARG, "%s: checkpoint too large", c->dir);

    double created = info->created;
    if (created == 0.0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        created = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    s_save_t s = {info, params, opt_state, extra, nextra, created, size};
    return s_write(c, s_save_fn, &s, size + need, "commit checkpoint", e);
}

/* ---- load, list, prune ------------------------------------------------------------------ */

int fm_ckpt_load(fm_ckpt_t *c, uint64_t version, fm_ckpt_info_t *info, float *params,
                 size_t nparams, float *opt_state, size_t nopt, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    MDB_txn *txn = NULL;
    int rc = 0, mrc = s_txn_begin(c, MDB_RDONLY, &txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    uint8_t kb[8];
    s_key_encode(kb, version);
    MDB_val k = {sizeof kb, kb}, v;
    mrc = mdb_get(txn, c->ckpt_dbi, &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = fm_errmsg_set(e, -ENOENT, "%s: no checkpoint version %llu", c->dir,
                           (unsigned long long)version);
    else if (mrc)
        rc = s_mdb_fail(c, e, mrc, "read checkpoint");
    else
        rc = s_copy_out(c, version, &v, info, params, nparams, opt_state, nopt, e);
    mdb_txn_abort(txn);
    return rc;
}

/* A read transaction and a cursor over the checkpoint records (the caller closes both).
 * 0, or the fm_ckpt error of the failing step (message in e). */
static int s_read_cursor(fm_ckpt_t *c, MDB_txn **txn, MDB_cursor **cur, fm_errmsg_t *e)
{
    *txn = NULL;
    *cur = NULL;
    int mrc = s_txn_begin(c, MDB_RDONLY, txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    if ((mrc = mdb_cursor_open(*txn, c->ckpt_dbi, cur)) != 0) {
        *cur = NULL;
        return s_mdb_fail(c, e, mrc, "open cursor");
    }
    return 0;
}

int fm_ckpt_load_latest(fm_ckpt_t *c, fm_ckpt_info_t *info, float *params, size_t nparams,
                        float *opt_state, size_t nopt, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    fm_errmsg_t first = {{0}}, mine = {{0}};
    int first_rc = 0, mrc;
    uint32_t skipped = 0;
    int rc = s_read_cursor(c, &txn, &cur, e);
    if (rc)
        goto cleanup;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        uint64_t ver = s_key_decode(&k);
        fm_ckpt_info_t h;
        rc = s_validate(c, ver, &v, &h, &mine);
        if (rc) {
            if (skipped++ == 0) {
                first_rc = rc;
                first = mine;
            }
            FM_LOG(LOG_WARNING, "ckpt: %s", mine.msg);
            continue;
        }
        rc = s_copy_out(c, ver, &v, info, params, nparams, opt_state, nopt, e);
        if (rc)
            goto cleanup;
        if (info)
            info->skipped = skipped;
        if (skipped)
            fm_errmsg_set(e, 0, "%s; loaded version %llu instead (%u newer record(s) skipped)",
                          first.msg, (unsigned long long)ver, skipped);
        goto cleanup;
    }
    if (mrc != MDB_NOTFOUND)
        rc = s_mdb_fail(c, e, mrc, "read checkpoints");
    else if (skipped)
        rc = fm_errmsg_set(e, first_rc, "%s (and no older valid checkpoint)", first.msg);
    else
        rc = fm_errmsg_set(e, -ENOENT, "%s: no checkpoint", c->dir);

cleanup:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int fm_ckpt_list(fm_ckpt_t *c, fm_ckpt_info_t *out, size_t cap, size_t *n, fm_errmsg_t *e)
{
    FM_ASSERT(c && n && (out || cap == 0));
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    size_t count = 0;
    int mrc, rc = s_read_cursor(c, &txn, &cur, e);
    if (rc)
        goto cleanup;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV), count++) {
        if (count < cap)
            out[count].status = s_validate(c, s_key_decode(&k), &v, &out[count], NULL);
    }
    if (mrc != MDB_NOTFOUND)
        rc = s_mdb_fail(c, e, mrc, "read checkpoints");
    else
        *n = count;

cleanup:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

static int s_prune_fn(fm_ckpt_t *c, MDB_txn *txn, void *arg, int *mrc, fm_errmsg_t *e)
{
    size_t keep = *(const size_t *)arg;
    MDB_stat st;
    MDB_cursor *cur = NULL;
    int rc = 0;
    if ((*mrc = mdb_stat(txn, c->ckpt_dbi, &st)) != 0)
        return s_mdb_fail(c, e, *mrc, "count checkpoints");
    if (st.ms_entries <= keep)
        return 0;
    if ((*mrc = mdb_cursor_open(txn, c->ckpt_dbi, &cur)) != 0)
        return s_mdb_fail(c, e, *mrc, "open cursor");
    for (size_t i = 0; i < st.ms_entries - keep; i++) {
        MDB_val k, v;
        if ((*mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) != 0 ||
            (*mrc = mdb_cursor_del(cur, 0)) != 0) {
            rc = s_mdb_fail(c, e, *mrc, "delete old checkpoint");
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc;
}

int fm_ckpt_prune(fm_ckpt_t *c, size_t keep, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    if (keep == 0)
        return fm_errmsg_set(e, FM_EARG, "%s: prune must keep at least one checkpoint", c->dir);
    return s_write(c, s_prune_fn, &keep, 0, "commit prune", e);
}
