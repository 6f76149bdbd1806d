/* fm_ckpt: durable checkpoints in LMDB (one environment directory per aggregator).
 *
 * Layout of the directory:
 *   data.mdb, lock.mdb  the LMDB environment, three named databases:
 *     "ckpt"  key   = version as 8 bytes big-endian (so keys sort by version);
 *             value = one checkpoint record (below), everything a resume needs.
 *     "meta"  small named blobs. "latest" (reserved, written by fm_ckpt_save) is the highest
 *             version ever saved in this file, 8 bytes big-endian; other keys belong to the
 *             caller.
 *     "rec"   the caller's blobs kept WITH one record (fm_ckpt_extra_t.record = 1): key =
 *             version (8 bytes big-endian) + name; replaced when the version is saved again
 *             and deleted when the record is pruned (fm_ckpt_record_get reads them).
 *   high_water.json  the high-water mark (below), outside the file it protects.
 *
 * High-water mark: after every successful save, high_water.json is replaced atomically and
 * durably (temp file, fsync, rename, fsync of the folder; fm_file with a spare, so it is
 * written on a full disk too): {"format": 1, "version": the highest version number ever used
 * (saved, or reserved by fm_ckpt_reserve), "store": the version the last save wrote,
 * "config_digest": hex, "saved": unix time, "reset_at": unix time of the last operator reset
 * or 0}. fm_ckpt_open refuses a store that holds less than the mark says ("latest" below
 * "store": data.mdb missing, emptied, or replaced by an older copy): the promise "never below
 * the highest version ever saved" does not live in the file it protects. fm_ckpt_reset (the
 * operator's `fedmq checkpoints DIR --reset`) accepts the store as it is; the numbers up to
 * "version" are never used again (fm_ckpt_high_water). The mark may lag the store by the last
 * save (a crash between the commit and the rename): that is accepted.
 *
 * Truncation: before any page of data.mdb is touched, fm_ckpt_open compares the file's size
 * with what LMDB's own meta page says it uses ((last page + 1) * page size, mdb_env_info and
 * mdb_env_stat after mdb_env_open, which reads the two meta pages with read(), not the map): a
 * shorter file is FM_ETRUNC naming the file and both sizes, never a SIGBUS. (A file truncated
 * while a process has it open can still fault: LMDB maps it.)
 *
 * Record (format version 1), all integers and floats little-endian:
 *   off  size  field
 *     0     4  magic "FMCK"
 *     4     4  u32 record format version (1)
 *     8     4  u32 header size in bytes (256): params start here
 *    12     4  u32 reserved (0)
 *    16    16  model name, NUL-padded (at most 15 characters)
 *    32     8  u64 nparams
 *    40     8  u64 version (equals the key)
 *    48     8  f64 created, unix time in seconds
 *    56     8  u64 updates_applied
 *    64     8  u64 updates_rejected (total)
 *    72   128  u64 rejected_by_reason[FM_CKPT_NREASONS]
 *   200    32  config digest (opaque here; fm_cfg_digest)
 *   232     8  u64 nopt: optimizer state length in floats (0 = none)
 *   240     8  f64 score (test accuracy; NaN if unknown)
 *   248     8  reserved (0)
 *   256  4*nparams  params (float32)
 *   ...  4*nopt     optimizer state (float32)
 *   end     4  u32 CRC-32 (zlib crc32) of every byte before it
 *
 * Durability: fm_ckpt_save writes the record, the "latest" marker and the caller's extra
 * meta pairs in ONE write transaction and returns only after mdb_txn_commit returned 0,
 * with LMDB's default full sync (no MDB_NOSYNC, no MDB_NOMETASYNC, no MDB_WRITEMAP). A
 * kill -9 at any point leaves either the previous state or the new one; acknowledge work
 * (e.g. tell a trainer its update counts) only after fm_ckpt_save returned 0.
 *
 * Exactly-once update application (design note for the aggregator): the ids of the
 * updates folded into a checkpoint go into "rec" through the `extra` pairs (record = 1) of
 * the SAME fm_ckpt_save call, so the model and the set of applied ids can never disagree
 * after a crash, and a fallback to an older record finds that record's own ids; on restart
 * the aggregator reads them back with fm_ckpt_record_get.
 *
 * Processes and threads: one writer process per environment (the aggregator). Other
 * processes (the `fedmq checkpoints` / `fedmq export` tools) may open the same directory
 * at the same time to list or load (fm_ckpt_open_readonly): LMDB readers never block the
 * writer. The environment is opened with MDB_NOTLS, so an fm_ckpt_t may be used from any
 * thread, but calls on one fm_ckpt_t must not overlap (the caller serialises them). Never use
 * an fm_ckpt_t in a child after fork(); never open the same directory twice in one process;
 * never put the directory on a network filesystem (LMDB caveats). No global state (a handle
 * holds its own rate limit for the mark's write warnings).
 *
 * Errors (all functions): 0 on success; -errno for system errors (LMDB's errno values,
 * e.g. -EACCES, -ENOMEM, -EIO); -ENOSPC when the disk is full (also when LMDB reports a
 * short write as EIO and the filesystem has no room for the transaction: the message says
 * "no space left on device" and how much is free) or when LMDB's map is full even after
 * growing it once (the message says "LMDB map full"); FM_EFORMAT for other LMDB failures (not
 * an LMDB file, corrupted pages, ...; the message carries mdb_strerror's text) and for
 * records that fail validation; FM_ETRUNC for a truncated data.mdb; `e` (may be NULL) gets
 * one line naming the directory or file. */
#ifndef FM_CKPT_H
#define FM_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_CKPT_FORMAT 1     /* record format version written */
#define FM_CKPT_NREASONS 16  /* per-reason rejected counters */
#define FM_CKPT_MODEL_MAX 16 /* model name bytes incl. the NUL */
#define FM_CKPT_DIGEST_BYTES 32
#define FM_CKPT_HEADER_BYTES 256
#define FM_CKPT_DEFAULT_MAP ((size_t)1 << 30) /* 1 GiB (sparse; grows on demand) */
#define FM_CKPT_META_KEY_MAX 255              /* bytes in a meta key */
/* The aggregator's record blob of applied update ids (16 bytes each), which
 * `fedmq checkpoints --verify` checks with fm_ckpt_verify. */
#define FM_CKPT_IDS_KEY "agg.ids"
#define FM_CKPT_ID_BYTES 16

/* The header of one record. Filled by the caller for fm_ckpt_save, by the library for
 * loads and lists. `status` and `skipped` are outputs only (ignored by fm_ckpt_save). */
typedef struct {
    char model[FM_CKPT_MODEL_MAX]; /* NUL-terminated, e.g. "cnn" */
    uint64_t nparams;              /* floats in params */
    uint64_t version;              /* model version (the key) */
    double created;                /* unix time, s; 0 in save = "now" */
    uint64_t updates_applied;
    uint64_t updates_rejected; /* total over all reasons */
    uint64_t rejected_by_reason[FM_CKPT_NREASONS];
    uint8_t config_digest[FM_CKPT_DIGEST_BYTES];
    uint64_t nopt;    /* floats in the optimizer state (0 = none) */
    double score;     /* accuracy in [0, 1], NaN if unknown */
    int status;       /* out (fm_ckpt_list): 0 if the record validates, else its FM_E* code */
    uint32_t skipped; /* out (fm_ckpt_load_latest): newer records skipped as invalid */
} fm_ckpt_info_t;

/* One key/value pair written by fm_ckpt_save in the checkpoint's transaction: a meta key
 * (record 0: `val` NULL deletes the key; absent keys are fine), or a blob kept with this
 * record (record 1: read back with fm_ckpt_record_get, pruned with the record; `val` NULL
 * stores nothing). Keys: 1..FM_CKPT_META_KEY_MAX bytes, not "latest". */
typedef struct {
    const char *key;
    const void *val;
    size_t len;
    int record; /* 1: kept with the record (see above); 0: a meta key */
} fm_ckpt_extra_t;

/* The high-water mark (high_water.json, see above). */
typedef struct {
    uint64_t version; /* highest version number used (saved or reserved): never used again */
    uint64_t store;   /* the store holds at least this version (its "latest" marker) */
    uint8_t config_digest[FM_CKPT_DIGEST_BYTES]; /* of the save that wrote `store` */
    double saved;                                /* unix time of that save (0: unknown) */
    double reset_at; /* unix time of the last fm_ckpt_reset, 0 if never */
} fm_ckpt_mark_t;

/* What fm_ckpt_verify reports: one call per problem, `line` one line naming the file and
 * the version. */
typedef void (*fm_ckpt_problem_fn)(void *arg, const char *line);

typedef struct fm_ckpt fm_ckpt_t;

/* Open (creating if needed) the environment in directory `dir` (created with mode 0700,
 * parents too; files 0600) with a map of `map_bytes` (0 = FM_CKPT_DEFAULT_MAP; an existing
 * larger file keeps its size), for reading and writing. Clears reader slots left by crashed
 * processes (mdb_reader_check). Refuses, before LMDB writes anything: a truncated data.mdb
 * (FM_ETRUNC, also below LMDB's two meta pages); an unreadable
 * high_water.json (FM_EFORMAT); a store below its high-water mark (FM_ERANGE: data.mdb
 * missing, empty or older than the mark's "store"; the message says to restore a backup or
 * run `fedmq checkpoints DIR --reset`). Returns NULL and sets *err (may be NULL) on
 * failure: those, -errno (mkdir, open), FM_EFORMAT (not an LMDB environment). Caller owns
 * the result: fm_ckpt_close(). */
fm_ckpt_t *fm_ckpt_open(const char *dir, size_t map_bytes, int *err, fm_errmsg_t *e);

/* Open an existing environment read-only (for the tools; a writer may run meanwhile):
 * nothing is created or written, and the high-water mark is read but not enforced
 * (fm_ckpt_mark, fm_ckpt_verify report it). Errors: -ENOENT (no data.mdb), FM_ETRUNC
 * (data.mdb empty or truncated: the message names the file and both sizes), -errno,
 * FM_EFORMAT. fm_ckpt_save, fm_ckpt_prune and fm_ckpt_meta_put on it fail with FM_EARG. */
fm_ckpt_t *fm_ckpt_open_readonly(const char *dir, int *err, fm_errmsg_t *e);

/* Close and set *p to NULL; idempotent. */
void fm_ckpt_close(fm_ckpt_t **p);

/* The directory given to fm_ckpt_open (borrowed; lives as long as `c`). */
const char *fm_ckpt_dir(const fm_ckpt_t *c);

/* Write checkpoint `info->version` with `info->nparams` params and `info->nopt` optimizer
 * floats (`opt_state` may be NULL when nopt is 0), set meta "latest" to the version and
 * apply the `nextra` pairs of `extra` (may be NULL when nextra is 0), all in one write
 * transaction; returns after the commit, then replaces high_water.json (a failure there is
 * logged, rate-limited, and does not fail the save: the record is durable; the mark catches
 * up with the next save). Versions must increase: a version below the latest ever saved is
 * refused with FM_ERANGE, and so is a version at or below the high-water mark as the open
 * found it that is not the latest (a number a lost model had; fm_ckpt_reserve by this
 * handle does not count); the latest version itself may be written again (the record and
 * its record blobs are replaced). On MDB_MAP_FULL the map is doubled (at least) and the
 * transaction retried once. Nothing is written on error.
 * Errors: FM_EARG (model name empty or too long, nparams 0, NULL params, bad extra key,
 * read-only handle), FM_ERANGE, -ENOSPC, -errno, FM_EFORMAT. */
int fm_ckpt_save(fm_ckpt_t *c, const fm_ckpt_info_t *info, const float *params,
                 const float *opt_state, const fm_ckpt_extra_t *extra, size_t nextra,
                 fm_errmsg_t *e);

/* Load the newest record that validates (magic, format version, sizes, CRC). Newer
 * records that fail validation are skipped (nothing is logged): info->skipped counts them
 * and `e` gets "DIR: checkpoint version N: CRC mismatch; loaded version M instead (K newer
 * record(s) skipped)" (on success!). Copies the params into `params` (nparams floats) and
 * the optimizer state into `opt_state` (nopt floats); either may be NULL to skip copying,
 * in which case its size is not checked (e.g. to read the header first and allocate).
 * `info` may be NULL.
 * Errors: -ENOENT (no checkpoint), FM_ESHAPE (record's nparams/nopt differ from the
 * caller's), FM_EFORMAT/FM_EMAGIC/FM_ETRUNC/FM_EVERSION (no record validates; the
 * error of the newest one is returned), -errno. */
int fm_ckpt_load_latest(fm_ckpt_t *c, fm_ckpt_info_t *info, float *params, size_t nparams,
                        float *opt_state, size_t nopt, fm_errmsg_t *e);

/* Load the record of `version` (no fallback); arguments as fm_ckpt_load_latest.
 * Errors: -ENOENT (no such version), FM_ESHAPE, FM_EFORMAT ("DIR: checkpoint version N:
 * CRC mismatch"), FM_EMAGIC, FM_ETRUNC, FM_EVERSION, -errno. */
int fm_ckpt_load(fm_ckpt_t *c, uint64_t version, fm_ckpt_info_t *info, float *params,
                 size_t nparams, float *opt_state, size_t nopt, fm_errmsg_t *e);

/* Decode one stored record without LMDB: rec[0..len) is the value stored under key
 * `version` (untrusted bytes, e.g. read from a damaged file). Every load and listing goes
 * through it. Validates the magic, the format version, the CRC, the header size, the
 * header's version against `version`, the record's size against nparams and nopt, the model
 * name (NUL-terminated) and nparams > 0. *info (required) is always reset (version =
 * `version`, score NaN) and gets the header fields whenever the magic is right, even when a
 * later check fails. Then, on a valid record, copies the params into `params` (nparams
 * floats) and the optimizer state into `opt_state` (nopt floats); either may be NULL to skip
 * copying, in which case its size is not checked. Never allocates; `where` (e.g. the
 * directory) starts the message: "WHERE: checkpoint version N: CRC mismatch".
 * Errors: FM_ETRUNC, FM_EMAGIC, FM_EVERSION, FM_EFORMAT, FM_ESHAPE (the record's
 * nparams/nopt differ from the caller's). */
int fm_ckpt_record_decode(const void *rec, size_t len, uint64_t version, const char *where,
                          fm_ckpt_info_t *info, float *params, size_t nparams, float *opt_state,
                          size_t nopt, fm_errmsg_t *e);

/* The headers of the stored records, newest first: out[0 .. min(cap, *n)) is filled and
 * *n is set to the total number of records (out may be NULL when cap is 0, to count).
 * Every record is validated (CRC included): out[i].status is 0 or its FM_E* code; a
 * record whose header cannot be read has only version and status set. Errors: -errno,
 * FM_EFORMAT. */
int fm_ckpt_list(fm_ckpt_t *c, fm_ckpt_info_t *out, size_t cap, size_t *n, fm_errmsg_t *e);

/* Copy the blob `key` kept with record `version` (fm_ckpt_extra_t.record) into buf[0..cap)
 * and set *len to its length; with buf NULL only *len is set. Errors: -ENOENT (no such
 * blob, e.g. a record written by an older fedmq), -ENOBUFS (cap < *len: nothing copied),
 * FM_EARG (bad key), -errno. */
int fm_ckpt_record_get(fm_ckpt_t *c, uint64_t version, const char *key, void *buf, size_t cap,
                       size_t *len, fm_errmsg_t *e);

/* Delete all but the newest `keep` records (and their record blobs) (keep >= 1: the newest
 * is never deleted) in one write transaction. Errors: FM_EARG (keep == 0), -errno,
 * FM_EFORMAT. */
int fm_ckpt_prune(fm_ckpt_t *c, size_t keep, fm_errmsg_t *e);

/* Highest version ever saved in this data.mdb (meta "latest"). Errors: -ENOENT (nothing
 * saved yet), FM_EFORMAT (bad marker), -errno. */
int fm_ckpt_latest_version(fm_ckpt_t *c, uint64_t *version, fm_errmsg_t *e);

/* The highest version number ever used in this directory: the larger of meta "latest", the
 * high-water mark's "version" and what this handle reserved (0 if none). A new model
 * version must be above it, unless it is the latest one saved again. */
uint64_t fm_ckpt_high_water(const fm_ckpt_t *c);

/* Record in high_water.json (durably, through its spare on a full disk) that numbers up to
 * `version` are used, without a checkpoint: e.g. versions published while checkpoints failed,
 * so that a restart from an older record never gives them to other models. Nothing happens
 * when `version` is not above fm_ckpt_high_water. 0, or -errno / FM_EARG (read-only) /
 * FM_ERANGE with e. */
int fm_ckpt_reserve(fm_ckpt_t *c, uint64_t version, fm_errmsg_t *e);

/* The high-water mark read by the open into *m. 0; -ENOENT (no high_water.json: a new
 * directory, or one written by an older fedmq); FM_EFORMAT (unreadable: the reason in e). */
int fm_ckpt_mark(const fm_ckpt_t *c, fm_ckpt_mark_t *m, fm_errmsg_t *e);

/* Check everything in the directory: every record (validation as fm_ckpt_load: CRC, header,
 * sizes), that each has its record blob `ids_key` (may be NULL: not checked) holding a
 * whole number of `id_len`-byte ids without duplicates, meta "latest" against the records,
 * and high_water.json against the store (present, readable, not above the store, digest of
 * its "store" record). Calls problem(arg, line) once per problem. Returns the number of
 * problems (>= 0), or a negative error when the store cannot be read at all (message in e).
 */
int fm_ckpt_verify(fm_ckpt_t *c, const char *ids_key, size_t id_len, fm_ckpt_problem_fn problem,
                   void *arg, fm_errmsg_t *e);

/* The operator's reset of directory `dir` (no process may have it open for writing): accept
 * the store as it is. data.mdb may be missing or empty (the store then starts empty) but
 * not truncated or unreadable (FM_ETRUNC / FM_EFORMAT: move it away or restore a backup
 * first). Rewrites high_water.json with "store" = the store's "latest" (0 if none), "version"
 * = the highest of the old mark's version, "latest" and the records (so those numbers are
 * never reused) and "reset_at" = now; *out (may be NULL) gets the new mark. 0, or -errno /
 * FM_E* with one line in e. */
int fm_ckpt_reset(const char *dir, fm_ckpt_mark_t *out, fm_errmsg_t *e);

/* Store `len` bytes at meta `key` in its own committed write transaction (`val` may be
 * NULL when len is 0). Errors: FM_EARG (key empty, longer than FM_CKPT_META_KEY_MAX or
 * "latest"), -ENOSPC, -errno, FM_EFORMAT. */
int fm_ckpt_meta_put(fm_ckpt_t *c, const char *key, const void *val, size_t len, fm_errmsg_t *e);

/* Copy meta `key` into buf[0..cap) and set *len to its length. With buf NULL only *len
 * is set. Errors: -ENOENT (no such key), -ENOBUFS (cap < *len: nothing copied), FM_EARG
 * (bad key), -errno. */
int fm_ckpt_meta_get(fm_ckpt_t *c, const char *key, void *buf, size_t cap, size_t *len,
                     fm_errmsg_t *e);

#endif
