#include "fm_ratelog.h"

#include <stdarg.h>
#include <stdio.h>

#include "fm_daemon.h"
#include "fm_log.h"

int64_t fm_ratelog_admit(fm_ratelog_t *r, double now)
{
    if (now - r->window_start >= FM_RATELOG_WINDOW_S || now < r->window_start) {
        r->window_start = now;
        r->in_window = 0;
    }
    if (r->in_window >= FM_RATELOG_BURST) {
        r->suppressed++;
        return -1;
    }
    r->in_window++;
    int64_t n = (int64_t)r->suppressed;
    r->suppressed = 0;
    return n;
}

int fm_ratelog(fm_ratelog_t *r, int level, const char *fmt, ...)
{
    if (level > fm_log_level())
        return 0;
    int64_t suppressed = fm_ratelog_admit(r, fm_daemon_now());
    if (suppressed < 0)
        return 0;
    char line[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (suppressed > 0)
        fm_log_write(level, "%s (+%lld suppressed)", line, (long long)suppressed);
    else
        fm_log_write(level, "%s", line);
    return 1;
}
