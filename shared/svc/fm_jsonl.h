/* fm_jsonl: an append-only JSON Lines file (one compact JSON object per line) that several
 * threads may append to: the daemons' history files (which updates a trainer sent and how
 * each was answered; which updates each aggregator version holds).
 *
 * The file is opened with O_APPEND and every line (object + '\n') goes out in ONE write(2),
 * so lines from several threads or processes never interleave and a reader (tail -f, a
 * checker after a kill -9) sees whole lines, except possibly a last line cut by a full disk.
 * Nothing is fsync'ed: a kill -9 loses nothing written, a power loss may lose the tail.
 * Objects are written with jansson (JSON_COMPACT, keys in insertion order). */
#ifndef FM_JSONL_H
#define FM_JSONL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

typedef struct fm_jsonl fm_jsonl_t;

/* Open (create, mode 0644 minus umask) `path` for appending. NULL with *err = -errno and one
 * line naming the file in `e`. Caller owns it: fm_jsonl_close. */
fm_jsonl_t *fm_jsonl_open(const char *path, int *err, fm_errmsg_t *e);

/* Close and NULL *p; idempotent. */
void fm_jsonl_close(fm_jsonl_t **p);

/* Append `obj` (borrowed) as one line. 0, -ENOMEM (not serialisable), or -errno of write(2)
 * (-ENOSPC ...). Thread-safe. */
int fm_jsonl_append(fm_jsonl_t *j, const json_t *obj);

/* fm_jsonl_append, then release `obj` (the reference is taken: pass json_pack's result
 * directly; NULL, a failed json_pack, is -ENOMEM). */
int fm_jsonl_put(fm_jsonl_t *j, json_t *obj);

/* The path (borrowed, lives as long as j). */
const char *fm_jsonl_path(const fm_jsonl_t *j);

/* An update id as 32 lowercase hex digits (a new JSON string; NULL on -ENOMEM). */
json_t *fm_jsonl_id(const uint8_t id[16]);

#endif
