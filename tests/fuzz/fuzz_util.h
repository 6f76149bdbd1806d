/* fuzz_util: what every fedmq libFuzzer target shares (header-only, tests/fuzz only).
 *
 * FUZZ_ASSERT      an always-on check of a property of the code under test; a failure
 *                  prints the condition and aborts, which libFuzzer reports as a crash
 *                  (and saves the input).
 * fuzz_msg_ok      the error contract every fedmq decoder promises: 0, or a negative code
 *                  with a non-empty, one-line message without control characters (it goes
 *                  into log lines as it is).
 * fuzz_seeds_mode  FM_FUZZ_SEEDS=1 in the environment: every input must be VALID (the
 *                  target aborts otherwise). tests/fuzz/run.sh runs the committed seed
 *                  corpus this way first, so a seed that stops decoding is noticed.
 * fuzz_memfd_*     a file in memory, for the readers that take a path (IDX, safetensors):
 *                  its contents are replaced per input and it is opened again by its
 *                  /proc/self/fd path, as the code under test opens any file. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fm_err.h"

#define FUZZ_ASSERT(cond)                                                                        \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz: property failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);   \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* The error contract: rc is 0, or negative with a one-line printable message in e. */
static inline void fuzz_msg_ok(int rc, const fm_errmsg_t *e)
{
    if (rc == 0)
        return;
    if (rc > 0 || e->msg[0] == '\0') {
        fprintf(stderr, "fuzz: error %d with message '%s'\n", rc, e->msg);
        abort();
    }
    for (const unsigned char *p = (const unsigned char *)e->msg; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            fprintf(stderr, "fuzz: control byte 0x%02x in the error message '%s'\n", *p, e->msg);
            abort();
        }
}

/* 1 when FM_FUZZ_SEEDS=1: the inputs are the seed corpus and must all be valid. */
static inline bool fuzz_seeds_mode(void)
{
    const char *v = getenv("FM_FUZZ_SEEDS");
    return v && strcmp(v, "1") == 0;
}

/* In seeds mode, an input that is not valid is a failure: print why and abort. */
static inline void fuzz_seed_valid(bool seeds, int rc, const fm_errmsg_t *e, const char *what)
{
    if (seeds && rc != 0) {
        fprintf(stderr, "fuzz: seed is not a valid %s: %s (%s)\n", what, e->msg, fm_strerror(rc));
        abort();
    }
}

/* A file in memory: fd, and the path by which it is opened. */
typedef struct {
    int fd;
    char path[64];
} fuzz_memfd_t;

/* Create it (aborts on failure: a broken harness, not a finding). */
static inline void fuzz_memfd_init(fuzz_memfd_t *f, const char *name)
{
    f->fd = memfd_create(name, MFD_CLOEXEC);
    FUZZ_ASSERT(f->fd >= 0);
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

/* Replace its contents with p[0..n). */
static inline void fuzz_memfd_set(fuzz_memfd_t *f, const void *p, size_t n)
{
    FUZZ_ASSERT(ftruncate(f->fd, 0) == 0);
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(f->fd, (const char *)p + off, n - off, (off_t)off);
        FUZZ_ASSERT(w > 0);
        off += (size_t)w;
    }
}

#endif
