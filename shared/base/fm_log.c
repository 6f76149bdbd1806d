#include "fm_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Process configuration: the name and the format are written by fm_log_init() before any
 * thread starts; the threshold is atomic, as a reload (fm_log_set_level) changes it while
 * other threads log. */
static const char *s_prog = "fedmq";
static int s_journal = 0;
static atomic_int s_level = LOG_INFO;

/* One decimal unsigned number at *p (digits only, no overflow) ending at `stop`; 0 and
 * *p past it, or -1. */
static int s_parse_u64(const char **p, char stop, unsigned long long *out)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return -1;
    char *end = NULL;
    errno = 0;
    *out = strtoull(s, &end, 10);
    if (errno != 0 || *end != stop)
        return -1;
    *p = end;
    return 0;
}

/* 1 if stderr is the stream that JOURNAL_STREAM ("<dev>:<inode>", systemd.exec(5)) names. */
static int s_stderr_is_journal(void)
{
    const char *p = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!p || s_parse_u64(&p, ':', &dev) != 0)
        return 0;
    p++;
    if (s_parse_u64(&p, '\0', &ino) != 0 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void fm_log_init(const char *prog, int level)
{
    if (prog)
        s_prog = prog;
    s_journal = s_stderr_is_journal();
    fm_log_set_level(level);
}

int fm_log_journal(void) { return s_journal; }

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

/* One line, whatever the message holds (fm_log.h): CR and LF become spaces, other control
 * bytes '?'. */
static void s_one_line(char *msg)
{
    for (unsigned char *c = (unsigned char *)msg; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
        else if (*c < 0x20 || *c == 0x7f)
            *c = '?';
}

void fm_log_write(int level, const char *fmt, ...)
{
    static const char *names[] = {"EMERG", "ALERT",  "CRIT", "ERROR",
                                  "WARN",  "NOTICE", "INFO", "DEBUG"};
    if (s_journal) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        s_one_line(msg);
        fprintf(stderr, "<%d>%s %s\n", level & 7, names[level & 7], msg);
        return;
    }
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
    s_one_line(line);
    fprintf(stderr, "%s.%03ldZ %s[%d] %s %s\n", ts, now.tv_nsec / 1000000, s_prog, (int)getpid(),
            names[level & 7], line);
}
