/* fm_metrics_proc: the standard process metrics of Prometheus' client libraries, read from
 * /proc at every scrape (a scrape hook of fm_metrics):
 *   process_cpu_seconds_total      counter  user + system CPU time (/proc/self/stat)
 *   process_resident_memory_bytes  gauge    resident set size (/proc/self/stat rss x page)
 *   process_virtual_memory_bytes   gauge    virtual memory size (/proc/self/stat vsize)
 *   process_open_fds               gauge    entries of /proc/self/fd
 *   process_max_fds                gauge    the soft RLIMIT_NOFILE
 *   process_start_time_seconds     gauge    start, seconds since the Unix epoch (boot time
 *                                           from /proc/stat + starttime of /proc/self/stat)
 * A value that cannot be read at a scrape keeps its last one (no error is raised: /metrics
 * still answers). Linux only. */
#ifndef FM_METRICS_PROC_H
#define FM_METRICS_PROC_H

#include <stdint.h>

#include "fm_metrics.h"

/* The fields of /proc/<pid>/stat that the metrics use. */
typedef struct {
    uint64_t utime, stime; /* clock ticks */
    uint64_t starttime;    /* clock ticks after boot */
    uint64_t vsize;        /* bytes */
    int64_t rss;           /* pages */
} fm_proc_stat_t;

/* Parse the text of a /proc/<pid>/stat file (the command name in parentheses may hold any
 * byte, spaces and ")" included: the fields are counted after its last ")"). 0, or
 * FM_EFORMAT. */
int fm_proc_stat_parse(const char *text, fm_proc_stat_t *out);

/* Register the six families in `m` and a scrape hook that refreshes them. 0, or -ENOMEM
 * (fm_metrics_status). No-op (0) for a NULL m. */
int fm_metrics_proc_register(fm_metrics_t *m);

#endif
