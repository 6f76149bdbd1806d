#include "fm_notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#define S_STATUS_MAX 256

/* A newline in a value would start another assignment: make the text one line. */
static void s_one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

void fm_notify_ready(const char *status)
{
    if (!status || !status[0]) {
        sd_notify(0, "READY=1");
        return;
    }
    char line[S_STATUS_MAX];
    snprintf(line, sizeof line, "%s", status);
    s_one_line(line);
    sd_notifyf(0, "READY=1\nSTATUS=%s", line);
}

void fm_notify_status(const char *fmt, ...)
{
    char line[S_STATUS_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s_one_line(line);
    sd_notifyf(0, "STATUS=%s", line);
}

void fm_notify_watchdog(void) { sd_notify(0, "WATCHDOG=1"); }

void fm_notify_stopping(void) { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

void fm_notify_reloading(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    unsigned long long usec = (unsigned long long)t.tv_sec * 1000000ULL +
                              (unsigned long long)t.tv_nsec / 1000ULL;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

uint64_t fm_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
