/* fm_sys: more helpers for integration tests that drive whole programs (header-only, next
 * to fm_proc.h): a child with stdout and stderr in separate files, several free ports at
 * once, whole files, and the timestamps of daemon log lines (fm_log's
 * "2026-01-02T03:04:05.678Z prog[pid] LEVEL message"). */
#ifndef FM_SYS_H
#define FM_SYS_H

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fm_proc.h"

/* Start argv[0] with stdout to `out` and stderr to `err` (truncated; either may be NULL:
 * /dev/null). The pid is remembered in `set`. -1 on failure. */
static inline pid_t fm_sys_spawn(fm_proc_set_t *set, char *const argv[], const char *out,
                                 const char *err)
{
    return fm_proc_spawn_io(set, argv, out, err, 1);
}

/* n distinct TCP ports on 127.0.0.1 reserved for this test process (fm_proc_free_port).
 * 0, or -1. */
static inline int fm_sys_free_ports(int *ports, int n)
{
    if (n > FM_PROC_PORT_BLOCK)
        return -1;
    for (int i = 0; i < n; i++)
        if ((ports[i] = fm_proc_free_port()) < 0)
            return -1;
    return 0;
}

/* The whole file, NUL-terminated (caller frees), or NULL. */
static inline char *fm_sys_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* Number of lines (newline-terminated) in a string. */
static inline int fm_sys_count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* The Unix time of an fm_log line ("2026-01-02T03:04:05.678Z ..."), or -1. */
static inline double fm_sys_log_stamp(const char *line)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}

/* The last line of the log at `path` that contains `needle`: its time (fm_sys_log_stamp)
 * in *t, its 1-based line number in *lineno (may be NULL) and a copy in buf (may be NULL).
 * 1 if found. */
static inline int fm_sys_log_last(const char *path, const char *needle, double *t, int *lineno,
                                  char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        if (!strstr(line, needle))
            continue;
        found = 1;
        *t = fm_sys_log_stamp(line);
        if (lineno)
            *lineno = n;
        if (buf)
            snprintf(buf, cap, "%s", line);
    }
    fclose(f);
    return found;
}

#endif
