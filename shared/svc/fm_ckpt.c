/* fm_ckpt: LMDB checkpoints (see fm_ckpt.h for the layout and the rules).
 *
 * Internal convention: LMDB calls return LMDB codes (0, positive errno values, or
 * MDB_* codes in -30799..-30779); everything leaving this file is a fedmq code, made by
 * s_mdb_fail(). Write transactions go through s_write(), which owns the one retry after
 * growing a full map; its callbacks report LMDB's own code through *mrc so that s_write
 * can tell MDB_MAP_FULL from other failures. */
#include "fm_ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <lmdb.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_file.h"
#include "fm_hex.h"
#include "fm_le.h"
#include "fm_log.h"
#include "fm_ratelog.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_ckpt assumes a little-endian host (parameter floats are stored as in memory)"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");
_Static_assert(sizeof(double) == 8, "double must be IEEE-754 binary64");

#define S_MAGIC "FMCK"
#define S_CRC_BYTES 4
#define S_LATEST "latest" /* reserved meta key: highest version ever saved (u64 BE) */
#define S_MAXDBS 4        /* "ckpt", "meta", "rec" and room for one more */
#define S_GROW_ALIGN ((size_t)1 << 20)
#define S_MARK_FILE "high_water.json"
#define S_MARK_FORMAT 1
#define S_MARK_MAX 4096                  /* bytes of a high_water.json we read */
#define S_FULL_SLACK ((uint64_t)1 << 20) /* EIO with less free than need + this: ENOSPC */
#define S_LMDB_MAGIC 0xBEEFC0DEu         /* LMDB's meta page magic (offset 16 of page 0) */

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
    MDB_dbi rec_dbi;  /* "rec": version (u64 BE) + name -> blob kept with that record */
    bool have_ckpt, have_meta, have_rec; /* read-only: a database may not exist yet */
    bool rdonly;
    char *dir;             /* as given to fm_ckpt_open, for messages */
    fm_ckpt_mark_t mark;   /* high_water.json as read at open / written by the last save */
    int mark_rc;           /* 0, -ENOENT (none), FM_EFORMAT or -errno (unreadable) */
    fm_errmsg_t mark_err;  /* why, when mark_rc is an error */
    uint64_t high_water;   /* max(mark.version, meta latest, reserved): numbers used */
    uint64_t lost_below;   /* high_water at open: a save at or below it (not the latest) is
                              refused, the number belonged to a lost model */
    bool have_high_water;  /* something was saved here (a latest marker or a mark) */
    fm_ratelog_t mark_log; /* failed writes of high_water.json */
};

/* ---- big-endian keys (the little-endian fields: fm_le.h) --------------------------------- */

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

/* One line "DIR: OP: mdb_strerror" and the mapped code; a full map says so in words (it is
 * not the disk). */
static int s_mdb_fail(const fm_ckpt_t *c, fm_errmsg_t *e, int mrc, const char *op)
{
    if (mrc == MDB_MAP_FULL) {
        MDB_envinfo info = {0};
        if (c->env)
            mdb_env_info(c->env, &info);
        return fm_errmsg_set(e, -ENOSPC,
                             "%s: %s: LMDB map full at %zu bytes (the map limit, not the disk)",
                             c->dir, op, info.me_mapsize);
    }
    return fm_errmsg_set(e, s_mdb_code(mrc), "%s: %s: %s", c->dir, op, mdb_strerror(mrc));
}

/* Bytes the filesystem of `dir` has free for this process (root may use the reserve);
 * UINT64_MAX if unknown. */
static uint64_t s_fs_free(const char *dir)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0)
        return UINT64_MAX;
    uint64_t blocks = geteuid() == 0 ? (uint64_t)v.f_bfree : (uint64_t)v.f_bavail;
    return blocks * (uint64_t)v.f_frsize;
}

/* A failed commit. LMDB turns a short write (the disk filled up in the middle of it) into
 * EIO: when the filesystem has no room for the `need` bytes of the transaction, say what it
 * is: no space left on device. */
static int s_commit_fail(const fm_ckpt_t *c, fm_errmsg_t *e, int mrc, const char *op, size_t need)
{
    if (mrc == EIO) {
        uint64_t avail = s_fs_free(c->dir);
        if (avail < (uint64_t)need + S_FULL_SLACK)
            return fm_errmsg_set(e, -ENOSPC,
                                 "%s: %s: no space left on device (%llu bytes free, the "
                                 "transaction needs about %zu; LMDB reported a short write "
                                 "as EIO)",
                                 c->dir, op, (unsigned long long)avail, need);
    }
    return s_mdb_fail(c, e, mrc, op);
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
    fm_le_put32(p + S_OFF_FORMAT, FM_CKPT_FORMAT);
    fm_le_put32(p + S_OFF_HDRSIZE, FM_CKPT_HEADER_BYTES);
    memcpy(p + S_OFF_MODEL, info->model, strnlen(info->model, FM_CKPT_MODEL_MAX - 1));
    fm_le_put64(p + S_OFF_NPARAMS, info->nparams);
    fm_le_put64(p + S_OFF_VERSION, info->version);
    fm_le_put_f64(p + S_OFF_CREATED, created);
    fm_le_put64(p + S_OFF_APPLIED, info->updates_applied);
    fm_le_put64(p + S_OFF_REJECTED, info->updates_rejected);
    for (int i = 0; i < FM_CKPT_NREASONS; i++)
        fm_le_put64(p + S_OFF_REASONS + 8 * i, info->rejected_by_reason[i]);
    memcpy(p + S_OFF_DIGEST, info->config_digest, FM_CKPT_DIGEST_BYTES);
    fm_le_put64(p + S_OFF_NOPT, info->nopt);
    fm_le_put_f64(p + S_OFF_SCORE, info->score);
    uint8_t *q = p + FM_CKPT_HEADER_BYTES;
    memcpy(q, params, 4 * (size_t)info->nparams);
    q += 4 * (size_t)info->nparams;
    if (info->nopt)
        memcpy(q, opt, 4 * (size_t)info->nopt);
    fm_le_put32(p + size - S_CRC_BYTES, s_crc(p, size - S_CRC_BYTES));
}

/* Decode the header fields of a record known to hold at least a header. */
static void s_decode_header(const uint8_t *p, fm_ckpt_info_t *h)
{
    memcpy(h->model, p + S_OFF_MODEL, FM_CKPT_MODEL_MAX);
    h->model[FM_CKPT_MODEL_MAX - 1] = '\0';
    h->nparams = fm_le_get64(p + S_OFF_NPARAMS);
    h->version = fm_le_get64(p + S_OFF_VERSION);
    h->created = fm_le_get_f64(p + S_OFF_CREATED);
    h->updates_applied = fm_le_get64(p + S_OFF_APPLIED);
    h->updates_rejected = fm_le_get64(p + S_OFF_REJECTED);
    for (int i = 0; i < FM_CKPT_NREASONS; i++)
        h->rejected_by_reason[i] = fm_le_get64(p + S_OFF_REASONS + 8 * i);
    memcpy(h->config_digest, p + S_OFF_DIGEST, FM_CKPT_DIGEST_BYTES);
    h->nopt = fm_le_get64(p + S_OFF_NOPT);
    h->score = fm_le_get_f64(p + S_OFF_SCORE);
}

int fm_ckpt_record_decode(const void *rec, size_t len, uint64_t version, const char *where,
                          fm_ckpt_info_t *info, float *params, size_t nparams, float *opt_state,
                          size_t nopt, fm_errmsg_t *e)
{
    FM_ASSERT(where && info && (rec || len == 0));
    const uint8_t *p = rec;
    size_t n = len;
    unsigned long long kv = (unsigned long long)version;
    fm_ckpt_info_t *h = info;
    memset(h, 0, sizeof *h);
    h->version = version;
    h->score = NAN;
    if (n < FM_CKPT_HEADER_BYTES + S_CRC_BYTES)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s: checkpoint version %llu: truncated (%zu bytes, "
                             "a record has at least %d)",
                             where, kv, n, FM_CKPT_HEADER_BYTES + S_CRC_BYTES);
    if (memcmp(p + S_OFF_MAGIC, S_MAGIC, 4) != 0)
        return fm_errmsg_set(e, FM_EMAGIC,
                             "%s: checkpoint version %llu: bad magic (not a fedmq "
                             "checkpoint record)",
                             where, kv);
    s_decode_header(p, h);
    h->version = version;
    uint32_t format = fm_le_get32(p + S_OFF_FORMAT);
    if (format != FM_CKPT_FORMAT)
        return fm_errmsg_set(e, FM_EVERSION,
                             "%s: checkpoint version %llu: record format %u "
                             "(this build reads %d)",
                             where, kv, format, FM_CKPT_FORMAT);
    if (fm_le_get32(p + n - S_CRC_BYTES) != s_crc(p, n - S_CRC_BYTES))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: checkpoint version %llu: CRC mismatch", where,
                             kv);
    uint32_t hdr = fm_le_get32(p + S_OFF_HDRSIZE);
    if (hdr != FM_CKPT_HEADER_BYTES)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: header size %u "
                             "(expected %d)",
                             where, kv, hdr, FM_CKPT_HEADER_BYTES);
    uint64_t hv = fm_le_get64(p + S_OFF_VERSION);
    if (hv != version)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: header says version "
                             "%llu",
                             where, kv, (unsigned long long)hv);
    size_t want = s_record_size(h->nparams, h->nopt);
    if (want != n)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: record is %zu bytes "
                             "but nparams=%llu and nopt=%llu need %zu",
                             where, kv, n, (unsigned long long)h->nparams,
                             (unsigned long long)h->nopt, want);
    if (h->nparams == 0 || memchr(p + S_OFF_MODEL, 0, FM_CKPT_MODEL_MAX) == NULL)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: checkpoint version %llu: bad header (model "
                             "name or nparams)",
                             where, kv);
    if (params && h->nparams != nparams)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: checkpoint version %llu: %llu params, expected "
                             "%zu",
                             where, kv, (unsigned long long)h->nparams, nparams);
    if (opt_state && h->nopt != nopt)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: checkpoint version %llu: %llu optimizer state "
                             "floats, expected %zu",
                             where, kv, (unsigned long long)h->nopt, nopt);
    const uint8_t *q = p + FM_CKPT_HEADER_BYTES;
    if (params)
        memcpy(params, q, 4 * nparams);
    if (opt_state && nopt)
        memcpy(opt_state, q + 4 * (size_t)h->nparams, 4 * nopt);
    return 0;
}

/* Validate the record `v` stored under version `kver` (fm_ckpt_record_decode: *h is always
 * reset and gets the header fields whenever the magic is right, for listings). Messages:
 * "DIR: checkpoint version N: reason". */
static int s_validate(const fm_ckpt_t *c, uint64_t kver, const MDB_val *v, fm_ckpt_info_t *h,
                      fm_errmsg_t *e)
{
    return fm_ckpt_record_decode(v->mv_data, v->mv_size, kver, c->dir, h, NULL, 0, NULL, 0, e);
}

/* Validate, check the caller's sizes, copy out. *info is written on success only. */
static int s_copy_out(const fm_ckpt_t *c, uint64_t kver, const MDB_val *v, fm_ckpt_info_t *info,
                      float *params, size_t nparams, float *opt, size_t nopt, fm_errmsg_t *e)
{
    fm_ckpt_info_t h;
    int rc = fm_ckpt_record_decode(v->mv_data, v->mv_size, kver, c->dir, &h, params, nparams, opt,
                                   nopt, e);
    if (rc == 0 && info)
        *info = h;
    return rc;
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
    if (c->rdonly)
        return fm_errmsg_set(e, FM_EARG, "%s: opened read-only", c->dir);
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
                rc = s_commit_fail(c, e, mrc, what, need);
        }
        if (rc == 0 || mrc != MDB_MAP_FULL || attempt > 0)
            return rc;
        rc = s_grow(c, need, e);
        if (rc)
            return rc;
    }
}

/* ---- the high-water mark (high_water.json) ---------------------------------------------- */

static void s_mark_path(char *out, size_t cap, const char *dir)
{
    snprintf(out, cap, "%s/" S_MARK_FILE, dir);
}

/* The integer (>= 0) or number at `key` of the object o. -1 if missing or mistyped. */
static int s_json_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int s_json_num(json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* Read <dir>/high_water.json into *m. 0, -ENOENT (absent), FM_EFORMAT or -errno (unreadable),
 * with one line in e naming the file. */
static int s_mark_read(const char *dir, fm_ckpt_mark_t *m, fm_errmsg_t *e)
{
    char path[PATH_MAX];
    s_mark_path(path, sizeof path, dir);
    memset(m, 0, sizeof *m);
    char *text = NULL;
    size_t len = 0;
    int rc = fm_file_read(path, S_MARK_MAX, &text, &len, e);
    if (rc == -EFBIG)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: larger than %d bytes", path, S_MARK_MAX);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    uint64_t format = 0;
    json_t *dg = NULL;
    if (!o)
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
    else if (!json_is_object(o) || s_json_u64(o, "format", &format) != 0)
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: not a high-water mark (no \"format\")", path);
    else if (format != S_MARK_FORMAT)
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: format %llu (this build reads %d)", path,
                           (unsigned long long)format, S_MARK_FORMAT);
    else if (s_json_u64(o, "version", &m->version) || s_json_u64(o, "store", &m->store) ||
             s_json_num(o, "saved", &m->saved) || s_json_num(o, "reset_at", &m->reset_at) ||
             !json_is_string(dg = json_object_get(o, "config_digest")) ||
             fm_hex_decode(m->config_digest, json_string_value(dg), FM_CKPT_DIGEST_BYTES) != 0)
        rc = fm_errmsg_set(e, FM_EFORMAT,
                           "%s: a key is missing or has the wrong type (version, store, "
                           "config_digest, saved, reset_at)",
                           path);
    else if (m->store > m->version)
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: \"store\" %llu is above \"version\" %llu", path,
                           (unsigned long long)m->store, (unsigned long long)m->version);
    json_decref(o);
    if (rc)
        memset(m, 0, sizeof *m);
    return rc;
}

/* Replace <dir>/high_water.json with *m, atomically and durably. 0 or -errno with e. */
static int s_mark_write(const char *dir, const fm_ckpt_mark_t *m, fm_errmsg_t *e)
{
    char path[PATH_MAX], hex[2 * FM_CKPT_DIGEST_BYTES + 1];
    s_mark_path(path, sizeof path, dir);
    fm_hex_encode(hex, m->config_digest, FM_CKPT_DIGEST_BYTES);
    char text[512];
    int n = snprintf(text, sizeof text,
                     "{\"format\": %d, \"version\": %llu, \"store\": %llu, \"config_digest\": "
                     "\"%s\", \"saved\": %.3f, \"reset_at\": %.3f}\n",
                     S_MARK_FORMAT, (unsigned long long)m->version, (unsigned long long)m->store,
                     hex, m->saved, m->reset_at);
    FM_ASSERT(n > 0 && (size_t)n < sizeof text);
    FM_ASSERT(m->version <= (uint64_t)INT64_MAX); /* JSON integers are int64 (jansson) */
    return fm_file_replace(path, text, (size_t)n, FM_FILE_DURABLE | FM_FILE_SPARE, e);
}

/* ---- opening ----------------------------------------------------------------------------- */

/* The size of <dir>/data.mdb into *size (-1: absent), and whether its first bytes carry
 * LMDB's meta page magic (*lmdb). 0 or -errno with e. */
static int s_data_file(const char *dir, long long *size, bool *lmdb, fm_errmsg_t *e)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    *size = -1;
    *lmdb = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        return fm_errmsg_set(e, rc, "%s: %s", path, strerror(-rc));
    }
    struct stat st;
    uint8_t head[20];
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = fm_errmsg_set(e, -errno, "%s: %s", path, strerror(errno));
    else
        *size = (long long)st.st_size;
    if (rc == 0 && pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head)
        *lmdb = ((uint32_t)head[16] | (uint32_t)head[17] << 8 | (uint32_t)head[18] << 16 |
                 (uint32_t)head[19] << 24) == S_LMDB_MAGIC;
    close(fd);
    return rc;
}

/* Refuse a data.mdb shorter than LMDB's meta page says it is (FM_ETRUNC), before any page
 * of the map is touched: mdb_env_open read the meta pages with read(); mdb_env_info and
 * mdb_env_stat read them from the map, which holds the first two pages (checked by LMDB). */
static int s_check_size(fm_ckpt_t *c, fm_errmsg_t *e)
{
    MDB_envinfo info;
    MDB_stat st;
    int fd = -1, mrc;
    struct stat fs;
    if ((mrc = mdb_env_info(c->env, &info)) != 0 || (mrc = mdb_env_stat(c->env, &st)) != 0 ||
        (mrc = mdb_env_get_fd(c->env, &fd)) != 0)
        return s_mdb_fail(c, e, mrc, "read the environment's size");
    if (fstat(fd, &fs) != 0)
        return fm_errmsg_set(e, -errno, "%s/data.mdb: %s", c->dir, strerror(errno));
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * (uint64_t)st.ms_psize;
    if ((uint64_t)fs.st_size < need)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s/data.mdb: truncated: %lld bytes, but LMDB's meta page says "
                             "it uses %llu pages of %u bytes (%llu bytes); restore a backup "
                             "or move it away (docs/OPERATIONS.md)",
                             c->dir, (long long)fs.st_size,
                             (unsigned long long)info.me_last_pgno + 1, st.ms_psize,
                             (unsigned long long)need);
    return 0;
}

/* Read the mark into c (its state in mark_rc / mark_err). */
static void s_mark_load(fm_ckpt_t *c)
{
    c->mark_rc = s_mark_read(c->dir, &c->mark, &c->mark_err);
}

/* Open the named databases in a read transaction (those that exist) and read "latest". */
static int s_open_dbis(fm_ckpt_t *c, uint64_t *latest, bool *have_latest, fm_errmsg_t *e)
{
    MDB_txn *txn = NULL;
    int mrc = s_txn_begin(c, MDB_RDONLY, &txn), rc = 0;
    *have_latest = false;
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    struct {
        const char *name;
        MDB_dbi *dbi;
        bool *have;
    } dbs[] = {{"ckpt", &c->ckpt_dbi, &c->have_ckpt},
               {"meta", &c->meta_dbi, &c->have_meta},
               {"rec", &c->rec_dbi, &c->have_rec}};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0] && rc == 0; i++) {
        mrc = mdb_dbi_open(txn, dbs[i].name, 0, dbs[i].dbi);
        *dbs[i].have = mrc == 0;
        if (mrc && mrc != MDB_NOTFOUND)
            rc = s_mdb_fail(c, e, mrc, "open databases");
    }
    if (rc == 0 && c->have_meta) {
        MDB_val k = {strlen(S_LATEST), (void *)S_LATEST}, v;
        mrc = mdb_get(txn, c->meta_dbi, &k, &v);
        if (mrc == 0 && v.mv_size == 8) {
            *latest = s_key_decode(&v);
            *have_latest = true;
        } else if (mrc == 0) {
            rc = fm_errmsg_set(e, FM_EFORMAT, "%s: meta latest: %zu bytes, expected 8", c->dir,
                               v.mv_size);
        } else if (mrc != MDB_NOTFOUND) {
            rc = s_mdb_fail(c, e, mrc, "read meta latest");
        }
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    /* committed, not aborted: an abort would close the handles opened in it (mdb_dbi_open) */
    if ((mrc = mdb_txn_commit(txn)) != 0)
        return s_mdb_fail(c, e, mrc, "open databases");
    return 0;
}

/* Create the databases that do not exist yet (read-write handles). */
static int s_create_dbis(fm_ckpt_t *c, fm_errmsg_t *e)
{
    if (c->have_ckpt && c->have_meta && c->have_rec)
        return 0;
    MDB_txn *txn = NULL;
    int mrc = s_txn_begin(c, 0, &txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin write transaction");
    if ((mrc = mdb_dbi_open(txn, "ckpt", MDB_CREATE, &c->ckpt_dbi)) != 0 ||
        (mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta_dbi)) != 0 ||
        (mrc = mdb_dbi_open(txn, "rec", MDB_CREATE, &c->rec_dbi)) != 0) {
        mdb_txn_abort(txn);
        return s_mdb_fail(c, e, mrc, "open databases");
    }
    if ((mrc = mdb_txn_commit(txn)) != 0)
        return s_commit_fail(c, e, mrc, "create databases", 0);
    c->have_ckpt = c->have_meta = c->have_rec = true;
    return 0;
}

/* Both opens: the handle, the file checks, the environment, the databases, "latest". */
static fm_ckpt_t *s_open(const char *dir, size_t map_bytes, bool rdonly, int *err, fm_errmsg_t *e)
{
    int rc = 0, mrc = 0;
    fm_ckpt_t *c = NULL;
    long long size = -1;
    bool lmdb = false, have_latest = false;
    uint64_t latest = 0;
    if (!dir || !*dir) {
        rc = fm_errmsg_set(e, FM_EARG, "fm_ckpt_open: no directory");
        goto cleanup;
    }
    c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", dir);
        goto cleanup;
    }
    c->rdonly = rdonly;
    if (!rdonly && (rc = s_mkdirs(dir, e)) != 0)
        goto cleanup;
    s_mark_load(c);
    if ((rc = s_data_file(dir, &size, &lmdb, e)) != 0)
        goto cleanup;
    long psize = sysconf(_SC_PAGESIZE);
    if (rdonly && size < 0) {
        rc = fm_errmsg_set(e, -ENOENT, "%s: no checkpoints here (no data.mdb)", dir);
        goto cleanup;
    }
    if (rdonly && size == 0) {
        rc = fm_errmsg_set(e, FM_ETRUNC, "%s/data.mdb: empty (0 bytes)", dir);
        goto cleanup;
    }
    if (size > 0 && size < 2 * (long long)psize && lmdb) {
        rc = fm_errmsg_set(e, FM_ETRUNC,
                           "%s/data.mdb: truncated: %lld bytes, less than LMDB's two meta "
                           "pages; restore a backup or move it away (docs/OPERATIONS.md)",
                           dir, size);
        goto cleanup;
    }
    if (!rdonly && c->mark_rc != 0 && c->mark_rc != -ENOENT) {
        rc = fm_errmsg_set(e, c->mark_rc,
                           "%s; check the store with `fedmq checkpoints %s --verify`, then "
                           "rewrite the mark with `fedmq checkpoints %s --reset`",
                           c->mark_err.msg, dir, dir);
        goto cleanup;
    }
    if (!rdonly && size <= 0 && c->mark_rc == 0 && c->mark.store > 0) {
        rc = fm_errmsg_set(e, FM_ERANGE,
                           "%s: data.mdb is %s but high_water.json says checkpoint version "
                           "%llu was saved: restore a backup (mdb_copy) or start over with "
                           "`fedmq checkpoints %s --reset`",
                           dir, size < 0 ? "missing" : "empty (0 bytes)",
                           (unsigned long long)c->mark.store, dir);
        goto cleanup;
    }
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
    if ((mrc = mdb_env_open(c->env, dir, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0600)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "open environment");
        goto cleanup;
    }
    if ((rc = s_check_size(c, e)) != 0)
        goto cleanup;
    int dead = 0;
    if ((mrc = mdb_reader_check(c->env, &dead)) != 0) {
        rc = s_mdb_fail(c, e, mrc, "check readers");
        goto cleanup;
    }
    if (dead > 0)
        FM_LOG(LOG_NOTICE, "ckpt: %s: cleared %d stale reader slot(s)", dir, dead);
    if ((rc = s_open_dbis(c, &latest, &have_latest, e)) != 0)
        goto cleanup;
    if (!rdonly && c->mark_rc == 0 && c->mark.store > (have_latest ? latest : 0)) {
        char held[48] = "no checkpoint";
        if (have_latest)
            snprintf(held, sizeof held, "checkpoints up to version %llu",
                     (unsigned long long)latest);
        rc = fm_errmsg_set(e, FM_ERANGE,
                           "%s: the store holds %s but high_water.json says version %llu was "
                           "saved (data.mdb is an older copy or was damaged): restore the "
                           "newest backup or run `fedmq checkpoints %s --reset`",
                           dir, held, (unsigned long long)c->mark.store, dir);
        goto cleanup;
    }
    if (!rdonly && (rc = s_create_dbis(c, e)) != 0)
        goto cleanup;
    if (!rdonly) {
        char mark[PATH_MAX];
        s_mark_path(mark, sizeof mark, dir);
        fm_file_clean(mark);
    }
    c->high_water = c->mark_rc == 0 && c->mark.version > latest ? c->mark.version : latest;
    c->have_high_water = have_latest || c->mark_rc == 0;
    c->lost_below = c->high_water;

cleanup:
    if (rc)
        fm_ckpt_close(&c);
    if (err)
        *err = rc;
    return c;
}

fm_ckpt_t *fm_ckpt_open(const char *dir, size_t map_bytes, int *err, fm_errmsg_t *e)
{
    return s_open(dir, map_bytes, false, err, e);
}

fm_ckpt_t *fm_ckpt_open_readonly(const char *dir, int *err, fm_errmsg_t *e)
{
    return s_open(dir, 0, true, err, e);
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
    if (!c->have_meta)
        return 0;
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
    if (!c->have_meta)
        return fm_errmsg_set(e, -ENOENT, "%s: no meta key %s", c->dir, key);
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

/* "rec" key of blob `name` of record `version`: 8 bytes big-endian + the name. */
static size_t s_rec_key(uint8_t *out, uint64_t version, const char *name)
{
    size_t n = strlen(name);
    s_key_encode(out, version);
    memcpy(out + 8, name, n);
    return 8 + n;
}

/* Delete the blobs of every record below `below` (when `all_below`) or of record `version`
 * only, in txn. */
static int s_rec_delete(fm_ckpt_t *c, MDB_txn *txn, uint64_t version, bool all_below, int *mrc,
                        fm_errmsg_t *e)
{
    MDB_cursor *cur = NULL;
    int rc = 0;
    if ((*mrc = mdb_cursor_open(txn, c->rec_dbi, &cur)) != 0)
        return s_mdb_fail(c, e, *mrc, "open cursor");
    uint8_t start[8];
    s_key_encode(start, all_below ? 0 : version);
    for (;;) {
        MDB_val k = {sizeof start, start}, v;
        int r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (r == MDB_NOTFOUND)
            break;
        if (r) {
            *mrc = r;
            rc = s_mdb_fail(c, e, r, "read record blobs");
            break;
        }
        uint64_t kv = s_key_decode(&k);
        if (k.mv_size < 8 || (all_below ? kv >= version : kv != version))
            break;
        if ((r = mdb_cursor_del(cur, 0)) != 0) {
            *mrc = r;
            rc = s_mdb_fail(c, e, r, "delete record blobs");
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc;
}

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
    if (c->have_high_water && s->info->version <= c->lost_below &&
        !(have && s->info->version == latest))
        return fm_errmsg_set(e, FM_ERANGE,
                             "%s: checkpoint version %llu: numbers up to %llu were used by "
                             "models that are lost (high_water.json); a new version must be "
                             "above",
                             c->dir, ver, (unsigned long long)c->lost_below);

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
    if ((rc = s_rec_delete(c, txn, s->info->version, false, mrc, e)) != 0)
        return rc; /* a version saved again: its old blobs go */

    for (size_t i = 0; i < s->nextra; i++) {
        const fm_ckpt_extra_t *x = &s->extra[i];
        uint8_t rk[8 + FM_CKPT_META_KEY_MAX];
        MDB_val xk = {strlen(x->key), (void *)x->key}, xv = {x->len, (void *)x->val};
        if (x->record) {
            xk.mv_size = s_rec_key(rk, s->info->version, x->key);
            xk.mv_data = rk;
            *mrc = x->val ? mdb_put(txn, c->rec_dbi, &xk, &xv, 0) : 0;
        } else if (x->val) {
            *mrc = mdb_put(txn, c->meta_dbi, &xk, &xv, 0);
        } else {
            *mrc = mdb_del(txn, c->meta_dbi, &xk, NULL);
            if (*mrc == MDB_NOTFOUND)
                *mrc = 0;
        }
        if (*mrc) {
            snprintf(what, sizeof what, "write %s %s", x->record ? "record blob" : "meta",
                     x->key);
            return s_mdb_fail(c, e, *mrc, what);
        }
    }
    return 0;
}

/* After a committed save of `info`: the new high-water mark, in memory and on disk. */
static void s_mark_saved(fm_ckpt_t *c, const fm_ckpt_info_t *info, double created)
{
    fm_ckpt_mark_t m = c->mark_rc == 0 ? c->mark : (fm_ckpt_mark_t){0};
    if (info->version > m.version)
        m.version = info->version;
    if (c->high_water > m.version)
        m.version = c->high_water;
    m.store = info->version;
    memcpy(m.config_digest, info->config_digest, FM_CKPT_DIGEST_BYTES);
    m.saved = created;
    if (info->version > c->high_water)
        c->high_water = info->version;
    c->have_high_water = true;
    fm_errmsg_t me = {{0}};
    int rc = s_mark_write(c->dir, &m, &me);
    if (rc == 0) {
        c->mark = m;
        c->mark_rc = 0;
        return;
    }
    fm_ratelog(&c->mark_log, LOG_WARNING,
               "ckpt: %s (checkpoint version %llu itself is saved; the high-water mark "
               "catches up with the next save)",
               me.msg, (unsigned long long)info->version);
}

int fm_ckpt_save(fm_ckpt_t *c, const fm_ckpt_info_t *info, const float *params,
                 const float *opt_state, const fm_ckpt_extra_t *extra, size_t nextra,
                 fm_errmsg_t *e)
{
    FM_ASSERT(c && info);
    if (c->rdonly)
        return fm_errmsg_set(e, FM_EARG, "%s: opened read-only", c->dir);
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
    if (info->version > (uint64_t)INT64_MAX)
        return fm_errmsg_set(e, FM_ERANGE, "%s: checkpoint version %llu is too large", c->dir,
                             (unsigned long long)info->version);
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
    int rc = s_write(c, s_save_fn, &s, size + need, "commit checkpoint", e);
    if (rc == 0)
        s_mark_saved(c, info, created);
    return rc;
}

int fm_ckpt_reserve(fm_ckpt_t *c, uint64_t version, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    if (c->rdonly)
        return fm_errmsg_set(e, FM_EARG, "%s: opened read-only", c->dir);
    if (version <= c->high_water && c->have_high_water)
        return 0;
    if (version > (uint64_t)INT64_MAX)
        return fm_errmsg_set(e, FM_ERANGE, "%s: version %llu is too large", c->dir,
                             (unsigned long long)version);
    fm_ckpt_mark_t m = c->mark;
    if (c->mark_rc != 0) { /* no mark yet: the store's latest is what it holds */
        memset(&m, 0, sizeof m);
        uint64_t latest = 0;
        if (fm_ckpt_latest_version(c, &latest, NULL) == 0)
            m.store = latest;
    }
    m.version = version;
    int rc = s_mark_write(c->dir, &m, e);
    if (rc)
        return rc;
    c->mark = m;
    c->mark_rc = 0;
    c->high_water = version;
    c->have_high_water = true;
    return 0;
}

uint64_t fm_ckpt_high_water(const fm_ckpt_t *c)
{
    FM_ASSERT(c);
    return c->high_water;
}

int fm_ckpt_mark(const fm_ckpt_t *c, fm_ckpt_mark_t *m, fm_errmsg_t *e)
{
    FM_ASSERT(c && m);
    *m = c->mark;
    if (c->mark_rc == -ENOENT)
        return fm_errmsg_set(e, -ENOENT, "%s/" S_MARK_FILE ": none", c->dir);
    if (c->mark_rc && e)
        *e = c->mark_err;
    return c->mark_rc;
}

/* ---- load, list, prune ------------------------------------------------------------------ */

int fm_ckpt_load(fm_ckpt_t *c, uint64_t version, fm_ckpt_info_t *info, float *params,
                 size_t nparams, float *opt_state, size_t nopt, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    if (!c->have_ckpt)
        return fm_errmsg_set(e, -ENOENT, "%s: no checkpoint version %llu", c->dir,
                             (unsigned long long)version);
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
    if (!c->have_ckpt)
        return fm_errmsg_set(e, -ENOENT, "%s: no checkpoint", c->dir);
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
    if (!c->have_ckpt) {
        *n = 0;
        return 0;
    }
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
    MDB_val k, v;
    int rc = 0;
    if ((*mrc = mdb_stat(txn, c->ckpt_dbi, &st)) != 0)
        return s_mdb_fail(c, e, *mrc, "count checkpoints");
    if ((*mrc = mdb_cursor_open(txn, c->ckpt_dbi, &cur)) != 0)
        return s_mdb_fail(c, e, *mrc, "open cursor");
    for (size_t i = 0; st.ms_entries > keep && i < st.ms_entries - keep; i++) {
        if ((*mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) != 0 ||
            (*mrc = mdb_cursor_del(cur, 0)) != 0) {
            rc = s_mdb_fail(c, e, *mrc, "delete old checkpoint");
            break;
        }
    }
    /* the blobs of the records gone (and of none: orphans of an older fedmq) */
    if (rc == 0) {
        int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (r == 0)
            rc = s_rec_delete(c, txn, s_key_decode(&k), true, mrc, e);
        else if (r != MDB_NOTFOUND)
            rc = s_mdb_fail(c, e, *mrc = r, "read checkpoints");
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

int fm_ckpt_record_get(fm_ckpt_t *c, uint64_t version, const char *key, void *buf, size_t cap,
                       size_t *len, fm_errmsg_t *e)
{
    FM_ASSERT(c && len);
    int rc = s_check_key(c, key, false, e);
    if (rc)
        return rc;
    if (!c->have_rec)
        return fm_errmsg_set(e, -ENOENT, "%s: checkpoint version %llu: no %s stored with it",
                             c->dir, (unsigned long long)version, key);
    MDB_txn *txn = NULL;
    int mrc = s_txn_begin(c, MDB_RDONLY, &txn);
    if (mrc)
        return s_mdb_fail(c, e, mrc, "begin read transaction");
    uint8_t kb[8 + FM_CKPT_META_KEY_MAX];
    MDB_val k = {s_rec_key(kb, version, key), kb}, v;
    mrc = mdb_get(txn, c->rec_dbi, &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = fm_errmsg_set(e, -ENOENT, "%s: checkpoint version %llu: no %s stored with it",
                           c->dir, (unsigned long long)version, key);
    else if (mrc)
        rc = s_mdb_fail(c, e, mrc, "read record blob");
    else if (buf && cap < v.mv_size)
        rc = fm_errmsg_set(e, -ENOBUFS,
                           "%s: checkpoint version %llu: %s: %zu bytes, buffer holds %zu", c->dir,
                           (unsigned long long)version, key, v.mv_size, cap);
    if (mrc == 0)
        *len = v.mv_size;
    if (rc == 0 && buf && v.mv_size)
        memcpy(buf, v.mv_data, v.mv_size);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- verify and reset ------------------------------------------------------------------- */

static int s_cmp_id(const void *a, const void *b, void *len)
{
    return memcmp(a, b, *(const size_t *)len);
}

/* Report one problem: a line through fn, counted. */
static void s_problem(fm_ckpt_problem_fn fn, void *arg, int *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_problem(fm_ckpt_problem_fn fn, void *arg, int *count, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    (*count)++;
    if (fn)
        fn(arg, line);
}

/* The record blob ids_key of version ver: present, whole ids, no duplicates. */
static void s_verify_ids(fm_ckpt_t *c, MDB_txn *txn, uint64_t ver, const char *ids_key,
                         size_t id_len, fm_ckpt_problem_fn fn, void *arg, int *count)
{
    unsigned long long kv = (unsigned long long)ver;
    uint8_t kb[8 + FM_CKPT_META_KEY_MAX];
    MDB_val k = {s_rec_key(kb, ver, ids_key), kb}, v;
    int mrc = c->have_rec ? mdb_get(txn, c->rec_dbi, &k, &v) : MDB_NOTFOUND;
    if (mrc == MDB_NOTFOUND) {
        s_problem(fn, arg, count,
                  "%s: checkpoint version %llu: no %s stored with it (written by an older "
                  "fedmq? a fallback to it cannot know which updates it holds)",
                  c->dir, kv, ids_key);
        return;
    }
    if (mrc) {
        s_problem(fn, arg, count, "%s: checkpoint version %llu: %s: %s", c->dir, kv, ids_key,
                  mdb_strerror(mrc));
        return;
    }
    if (id_len == 0 || v.mv_size % id_len != 0) {
        s_problem(fn, arg, count,
                  "%s: checkpoint version %llu: %s holds %zu bytes, not a whole number of "
                  "%zu-byte ids",
                  c->dir, kv, ids_key, v.mv_size, id_len);
        return;
    }
    size_t n = v.mv_size / id_len, dups = 0;
    uint8_t *sorted = n ? malloc(v.mv_size) : NULL;
    if (n && !sorted) {
        s_problem(fn, arg, count, "%s: checkpoint version %llu: %s: out of memory", c->dir, kv,
                  ids_key);
        return;
    }
    if (n) {
        memcpy(sorted, v.mv_data, v.mv_size);
        qsort_r(sorted, n, id_len, s_cmp_id, &id_len);
    }
    for (size_t i = 1; i < n; i++)
        dups += memcmp(sorted + (i - 1) * id_len, sorted + i * id_len, id_len) == 0;
    free(sorted);
    if (dups)
        s_problem(fn, arg, count, "%s: checkpoint version %llu: %s holds %zu duplicate id(s)",
                  c->dir, kv, ids_key, dups);
}

int fm_ckpt_verify(fm_ckpt_t *c, const char *ids_key, size_t id_len, fm_ckpt_problem_fn problem,
                   void *arg, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    int count = 0, mrc = 0, rc = 0;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint64_t newest = 0, latest = 0;
    size_t records = 0;
    bool have_latest = false, latest_valid = false;
    fm_ckpt_info_t latest_info;
    memset(&latest_info, 0, sizeof latest_info);
    if (c->have_ckpt) {
        if ((rc = s_read_cursor(c, &txn, &cur, e)) != 0)
            goto cleanup;
        if ((rc = s_get_latest(c, txn, &latest, &have_latest, &mrc, e)) != 0)
            goto cleanup;
        MDB_val k, v;
        for (mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST); mrc == 0;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
            uint64_t ver = s_key_decode(&k);
            fm_ckpt_info_t h;
            fm_errmsg_t why = {{0}};
            if (records++ == 0)
                newest = ver;
            if (s_validate(c, ver, &v, &h, &why) != 0)
                s_problem(problem, arg, &count, "%s", why.msg);
            else if (have_latest && ver == latest) {
                latest_valid = true;
                latest_info = h;
            }
            if (ids_key)
                s_verify_ids(c, txn, ver, ids_key, id_len, problem, arg, &count);
        }
        if (mrc != MDB_NOTFOUND) {
            rc = s_mdb_fail(c, e, mrc, "read checkpoints");
            goto cleanup;
        }
    }
    if (records && !have_latest)
        s_problem(problem, arg, &count, "%s: %zu record(s) but no \"latest\" marker", c->dir,
                  records);
    else if (records && newest != latest)
        s_problem(problem, arg, &count,
                  "%s: the \"latest\" marker says version %llu but the newest record is %llu",
                  c->dir, (unsigned long long)latest, (unsigned long long)newest);
    if (c->mark_rc == -ENOENT && (records || have_latest))
        s_problem(problem, arg, &count,
                  "%s/" S_MARK_FILE ": missing: an emptied or replaced data.mdb would go "
                  "unnoticed (the next checkpoint writes it; `--reset` writes it now)",
                  c->dir);
    else if (c->mark_rc != 0 && c->mark_rc != -ENOENT)
        s_problem(problem, arg, &count, "%s", c->mark_err.msg);
    else if (c->mark_rc == 0 && c->mark.store > (have_latest ? latest : 0))
        s_problem(problem, arg, &count,
                  "%s/" S_MARK_FILE ": version %llu was saved but the store holds %s%llu "
                  "(data.mdb emptied, replaced or damaged): the aggregator refuses to start",
                  c->dir, (unsigned long long)c->mark.store,
                  have_latest ? "checkpoints up to version " : "no checkpoint, latest ",
                  (unsigned long long)latest);
    else if (c->mark_rc == 0 && latest_valid && c->mark.store == latest &&
             memcmp(c->mark.config_digest, latest_info.config_digest, FM_CKPT_DIGEST_BYTES))
        s_problem(problem, arg, &count,
                  "%s/" S_MARK_FILE ": the config digest differs from checkpoint version %llu's "
                  "(data.mdb of another federation?)",
                  c->dir, (unsigned long long)latest);
    rc = count;

cleanup:
    if (cur)
        mdb_cursor_close(cur);
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

int fm_ckpt_reset(const char *dir, fm_ckpt_mark_t *out, fm_errmsg_t *e)
{
    fm_ckpt_mark_t old, m;
    fm_errmsg_t me = {{0}};
    memset(&m, 0, sizeof m);
    int mrc = s_mark_read(dir, &old, &me);
    if (mrc == 0)
        m = old;
    else if (mrc != -ENOENT)
        FM_LOG(LOG_WARNING, "%s (rewritten from the store)", me.msg);
    long long size = -1;
    bool lmdb = false;
    int rc = s_data_file(dir, &size, &lmdb, e);
    if (rc)
        return rc;
    uint64_t latest = 0, newest = 0;
    bool have_latest = false;
    memset(m.config_digest, 0, sizeof m.config_digest);
    if (size > 0) {
        fm_ckpt_t *c = fm_ckpt_open_readonly(dir, &rc, e);
        if (!c) {
            if (e && rc != -ENOMEM) {
                char why[sizeof e->msg];
                snprintf(why, sizeof why, "%s", e->msg);
                fm_errmsg_set(e, rc,
                              "%s; not reset: move data.mdb away or restore a backup first", why);
            }
            return rc;
        }
        MDB_txn *txn = NULL;
        MDB_cursor *cur = NULL;
        int r = 0;
        if ((rc = s_read_cursor(c, &txn, &cur, e)) == 0 &&
            (rc = s_get_latest(c, txn, &latest, &have_latest, &r, e)) == 0) {
            MDB_val k, v;
            if (c->have_ckpt && mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0)
                newest = s_key_decode(&k);
        }
        if (cur)
            mdb_cursor_close(cur);
        if (txn)
            mdb_txn_abort(txn);
        fm_ckpt_info_t h;
        if (rc == 0 && have_latest && fm_ckpt_load(c, latest, &h, NULL, 0, NULL, 0, NULL) == 0)
            memcpy(m.config_digest, h.config_digest, FM_CKPT_DIGEST_BYTES);
        fm_ckpt_close(&c);
        if (rc)
            return rc;
    }
    if (latest > m.version)
        m.version = latest;
    if (newest > m.version)
        m.version = newest;
    m.store = have_latest ? latest : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m.reset_at = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if ((rc = s_mark_write(dir, &m, e)) != 0)
        return rc;
    if (out)
        *out = m;
    return 0;
}
