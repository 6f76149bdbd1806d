/* fm_ckpt: durable checkpoints in LMDB (one environment directory per aggregator).
 *
 * Layout of the environment (`dir`/data.mdb + `dir`/lock.mdb, two named databases):
 *   "ckpt"  key   = version as 8 bytes big-endian (so keys sort by version);
 *           value = one checkpoint record (below), everything a resume needs.
 *   "meta"  small named blobs. "latest" (reserved, written by fm_ckpt_save) is the highest
 *           version ever saved, 8 bytes big-endian; other keys belong to the caller.
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
 * updates folded into a checkpoint go into "meta" through the `extra` pairs of the SAME
 * fm_ckpt_save call, so the model and the set of applied ids can never disagree after a
 * crash; on restart the aggregator reads them back with fm_ckpt_meta_get.
 *
 * Processes and threads: one writer process per environment (the aggregator). Other
 * processes (the `fedmq checkpoints` / `fedmq export` tools) may open the same directory
 * at the same time to list or load: LMDB readers never block the writer. The environment
 * is opened with MDB_NOTLS, so an fm_ckpt_t may be used from any thread, but calls on one
 * fm_ckpt_t must not overlap (the caller serialises them). Never use an fm_ckpt_t in a
 * child after fork(); never open the same directory twice in one process; never put the
 * directory on a network filesystem (LMDB caveats).
 *
 * Errors (all functions): 0 on success; -errno for system errors (LMDB's errno values,
 * e.g. -EACCES, -ENOMEM); -ENOSPC when the map is full even after growing it once;
 * FM_EFORMAT for other LMDB failures (not an LMDB file, corrupted pages, ...; the message
 * carries mdb_strerror's text) and for records that fail validation; `e` (may be NULL)
 * gets one line naming the directory. */
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

/* One meta key/value pair written by fm_ckpt_save in the checkpoint's transaction.
 * `val` NULL deletes the key (absent keys are fine). Keys: 1..FM_CKPT_META_KEY_MAX
 * bytes, not "latest". */
typedef struct {
    const char *key;
    const void *val;
    size_t len;
} fm_ckpt_extra_t;

typedef struct fm_ckpt fm_ckpt_t;

/* Open (creating if needed) the environment in directory `dir` (created with mode 0700,
 * parents too; files 0600) with a map of `map_bytes` (0 = FM_CKPT_DEFAULT_MAP; an existing
 * larger file keeps its size). Clears reader slots left by crashed processes
 * (mdb_reader_check). Returns NULL and sets *err (may be NULL) on failure: -errno
 * (mkdir, open), FM_EFORMAT (not an LMDB environment). Caller owns the result:
 * fm_ckpt_close(). */
fm_ckpt_t *fm_ckpt_open(const char *dir, size_t map_bytes, int *err, fm_errmsg_t *e);

/* Close and set *p to NULL; idempotent. */
void fm_ckpt_close(fm_ckpt_t **p);

/* The directory given to fm_ckpt_open (borrowed; lives as long as `c`). */
const char *fm_ckpt_dir(const fm_ckpt_t *c);

/* Write checkpoint `info->version` with `info->nparams` params and `info->nopt` optimizer
 * floats (`opt_state` may be NULL when nopt is 0), set meta "latest" to the version and
 * apply the `nextra` pairs of `extra` (may be NULL when nextra is 0), all in one write
 * transaction; returns after the commit. Versions must increase: a version below the
 * latest ever saved is refused with FM_ERANGE; the latest version itself may be written
 * again (the record is replaced). On MDB_MAP_FULL the map is doubled (at least) and the
 * transaction retried once. Nothing is written on error.
 * Errors: FM_EARG (model name empty or too long, nparams 0, NULL params, bad extra key),
 * FM_ERANGE, -ENOSPC, -errno, FM_EFORMAT. */
int fm_ckpt_save(fm_ckpt_t *c, const fm_ckpt_info_t *info, const float *params,
                 const float *opt_state, const fm_ckpt_extra_t *extra, size_t nextra,
                 fm_errmsg_t *e);

/* Load the newest record that validates (magic, format version, sizes, CRC). Newer
 * records that fail validation are skipped: info->skipped counts them and `e` gets
 * "DIR: checkpoint version N: CRC mismatch; loaded version M" (on success!). Copies
 * the params into `params` (nparams floats) and the optimizer state into `opt_state`
 * (nopt floats); either may be NULL to skip copying, in which case its size is not
 * checked (e.g. to read the header first and allocate). `info` may be NULL.
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

/* The headers of the stored records, newest first: out[0 .. min(cap, *n)) is filled and
 * *n is set to the total number of records (out may be NULL when cap is 0, to count).
 * Every record is validated (CRC included): out[i].status is 0 or its FM_E* code; a
 * record whose header cannot be read has only version and status set. Errors: -errno,
 * FM_EFORMAT. */
int fm_ckpt_list(fm_ckpt_t *c, fm_ckpt_info_t *out, size_t cap, size_t *n, fm_errmsg_t *e);

/* Delete all but the newest `keep` records (keep >= 1: the newest is never deleted) in
 * one write transaction. Errors: FM_EARG (keep == 0), -errno, FM_EFORMAT. */
int fm_ckpt_prune(fm_ckpt_t *c, size_t keep, fm_errmsg_t *e);

/* Highest version ever saved (meta "latest"). Errors: -ENOENT (nothing saved yet),
 * FM_EFORMAT (bad marker), -errno. */
int fm_ckpt_latest_version(fm_ckpt_t *c, uint64_t *version, fm_errmsg_t *e);

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
