#include "fm_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Process configuration: the name is written once by fm_log_init() before any thread
 * starts; the threshold is atomic, as a reload (fm_log_set_level) changes it while other
 * threads log. */
static const char *s_prog = "fedmq";
static atomic_int s_level = LOG_INFO;

void fm_log_init(const char *prog, int level)
{
    if (prog)
        s_prog = prog;
    fm_log_set_level(level);
}

void fm_log_set_level(int level)
{
    if (level >= LOG_EMERG && level <= LOG_DEBUG)
        atomic_store_explicit(&s_level, level, memory_order_relaxed);
}

int fm_log_level(void) { return atomic_load_explicit(&s_level, memory_order_relaxed); }

int fm_log_parse_level(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } table[] = {
        {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
        {"info", LOG_INFO}, {"debug", LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (name && strcmp(name, table[i].name) == 0)
            return table[i].level;
    return -1;
}

void fm_log_write(int level, const char *fmt, ...)
{
    static const char *names[] = {"EMERG", "ALERT",  "CRIT", "ERROR",
                                  "WARN",  "NOTICE", "INFO", "DEBUG"};
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);

    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s[%d] %s %s\n", ts, now.tv_nsec / 1000000, s_prog, (int)getpid(),
            names[level & 7], line);
}
