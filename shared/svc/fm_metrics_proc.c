/* fm_metrics_proc: process metrics from /proc (see fm_metrics_proc.h). */
#include "fm_metrics_proc.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct {
    fm_metric_t *cpu, *rss, *vsize, *open_fds, *max_fds, *start;
    double boot_time; /* seconds since the epoch, read once (< 0: not known) */
    long ticks;       /* clock ticks per second */
    long page;        /* bytes per page */
} s_proc_t;

int fm_proc_stat_parse(const char *text, fm_proc_stat_t *out)
{
    const char *p = text ? strrchr(text, ')') : NULL;
    if (!p)
        return FM_EFORMAT;
    /* fields after the command name: 3 state, ..., 14 utime, 15 stime, 22 starttime,
     * 23 vsize, 24 rss */
    uint64_t v[25] = {0};
    int64_t rss = 0;
    p++;
    for (int field = 3; field <= 24; field++) {
        while (*p == ' ')
            p++;
        if (!*p || *p == '\n')
            return FM_EFORMAT;
        char *end = NULL;
        if (field == 3) {
            end = (char *)p + 1; /* the state letter */
        } else if (field == 24) {
            errno = 0;
            rss = strtoll(p, &end, 10);
        } else {
            errno = 0;
            v[field] = strtoull(p, &end, 10);
        }
        if (end == p || errno == ERANGE || (*end != ' ' && *end != '\n' && *end != '\0'))
            return FM_EFORMAT;
        p = end;
    }
    out->utime = v[14];
    out->stime = v[15];
    out->starttime = v[22];
    out->vsize = v[23];
    out->rss = rss;
    return 0;
}

/* The whole (small) file at path into buf[0..cap), NUL-terminated. 0 or -1. */
static int s_read(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    int bad = ferror(f);
    fclose(f);
    buf[n] = '\0';
    return bad ? -1 : 0;
}

/* The "btime" line of /proc/stat, or -1. */
static double s_boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -1;
    char line[256];
    double t = -1;
    unsigned long long b;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &b) == 1) {
            t = (double)b;
            break;
        }
    fclose(f);
    return t;
}

static int s_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n - 1; /* not the one opendir holds */
}

static void s_collect(void *arg)
{
    s_proc_t *p = arg;
    char buf[1024];
    fm_proc_stat_t st;
    if (s_read("/proc/self/stat", buf, sizeof buf) == 0 && fm_proc_stat_parse(buf, &st) == 0) {
        fm_metric_set(p->cpu, (double)(st.utime + st.stime) / (double)p->ticks);
        fm_metric_set(p->rss, (double)st.rss * (double)p->page);
        fm_metric_set(p->vsize, (double)st.vsize);
        if (p->boot_time >= 0)
            fm_metric_set(p->start, p->boot_time + (double)st.starttime / (double)p->ticks);
    }
    int fds = s_count_fds();
    if (fds >= 0)
        fm_metric_set(p->open_fds, fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        fm_metric_set(p->max_fds, rl.rlim_cur == RLIM_INFINITY ? -1.0 : (double)rl.rlim_cur);
}

int fm_metrics_proc_register(fm_metrics_t *m)
{
    if (!m)
        return 0;
    s_proc_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->ticks = sysconf(_SC_CLK_TCK);
    p->ticks = p->ticks > 0 ? p->ticks : 100;
    p->page = sysconf(_SC_PAGESIZE);
    p->page = p->page > 0 ? p->page : 4096;
    p->boot_time = s_boot_time();
    p->cpu = fm_metrics_counter(m, "process_cpu_seconds_total",
                                "Total user and system CPU time spent in seconds.", NULL);
    p->open_fds = fm_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.",
                                   NULL);
    p->max_fds = fm_metrics_gauge(m, "process_max_fds",
                                  "Maximum number of open file descriptors.", NULL);
    p->vsize = fm_metrics_gauge(m, "process_virtual_memory_bytes",
                                "Virtual memory size in bytes.", NULL);
    p->rss = fm_metrics_gauge(m, "process_resident_memory_bytes",
                              "Resident memory size in bytes.", NULL);
    p->start = fm_metrics_gauge(m, "process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.", NULL);
    int rc = fm_metrics_status(m);
    if (rc) {
        free(p);
        return rc;
    }
    fm_metrics_on_scrape(m, s_collect, p, free);
    return 0;
}
