/* fm_file: small state files (stats.json, the checkpoint store's high-water mark) replaced
 * atomically, and kept current on a full disk.
 *
 * fm_file_replace writes the new bytes to "<path>.tmp.<pid>" in the same folder and renames
 * it over `path`: a reader sees the old file or the new one, never a part of either. With
 * FM_FILE_DURABLE the temp file is fsync'ed before the rename and the folder after it, so
 * the new content survives a crash or a power loss once the call returned 0.
 *
 * With FM_FILE_SPARE a spare file "<path>.spare" of FM_FILE_SPARE_BYTES, allocated on disk,
 * is kept beside `path` (created by the first write that can). When the temp file cannot be
 * written because the disk is full (ENOSPC, EDQUOT), content of at most FM_FILE_SPARE_BYTES
 * is written into the spare's blocks instead (no block to allocate), the spare is renamed
 * over `path`, and the replaced file becomes the next spare (a hard link "<path>.prev"
 * bridges the two renames; a leftover one is removed by the next write). So a small file stays
 * current on a full disk. Caveat, on a full disk only: a reader that opened `path` two
 * replacements ago and reads it only now may see the bytes of the newer one being written.
 *
 * One writer per path at a time (no locking); no global state. */
#ifndef FM_FILE_H
#define FM_FILE_H

#include <stddef.h>

#include "fm_err.h"

#define FM_FILE_DURABLE 1u        /* fsync the file before the rename, the folder after it */
#define FM_FILE_SPARE 2u          /* keep "<path>.spare" for a full disk (see above) */
#define FM_FILE_SPARE_BYTES 4096u /* size of the spare: the largest content it can take */

/* Replace `path` with data[0..len) (see above; data may be NULL when len is 0), file mode
 * 0644 before the umask for a new file (a reused spare keeps its mode). 0, or -errno with
 * one line in `e` (may be NULL) naming the file that failed: "<tmp>: cannot write: ..."
 * (nothing replaced; with FM_FILE_SPARE, -ENOSPC when the spare could not take it either),
 * or "<path>: cannot replace: ..." (the rename; nothing replaced) or "<dir>: cannot sync:
 * ..." (FM_FILE_DURABLE: replaced, but the rename may not survive a power loss). No temp
 * file is left behind on failure. */
int fm_file_replace(const char *path, const void *data, size_t len, unsigned flags,
                    fm_errmsg_t *e);

/* Remove what a writer of `path` killed in the middle of fm_file_replace left behind
 * ("<path>.tmp.<pid>" of processes that are gone, "<path>.prev"). For the one writer of
 * `path`, at its start; best effort (nothing reported). */
void fm_file_clean(const char *path);

/* Read the whole file at `path` (at most `max` bytes) into a new NUL-terminated buffer
 * *out (caller frees) of *len bytes (the NUL not counted). 0, -errno (-ENOENT: no such
 * file) or -EFBIG (larger than max), with one line in `e` naming the path. */
int fm_file_read(const char *path, size_t max, char **out, size_t *len, fm_errmsg_t *e);

#endif
