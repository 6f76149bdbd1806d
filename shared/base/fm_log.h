/* fm_log: one logging function with syslog levels.
 *
 * Lines go to stderr as "<ts> <prog>[pid] <LEVEL> message". The threshold is process
 * configuration set at start (before threads) and changed only by a reload
 * (fm_log_set_level, safe while other threads log); FM_LOG checks it before formatting. */
#ifndef FM_LOG_H
#define FM_LOG_H

#include <syslog.h>

/* Set the program name shown in each line (borrowed pointer; must outlive logging)
 * and the threshold (LOG_ERR .. LOG_DEBUG). Call once at start. */
void fm_log_init(const char *prog, int level);

/* Change the threshold (LOG_ERR .. LOG_DEBUG; other values are ignored), e.g. on a config
 * reload; other threads see it at their next line. */
void fm_log_set_level(int level);

/* Current threshold. */
int fm_log_level(void);

/* Parse "error|warning|notice|info|debug" into a syslog level; -1 if unknown. */
int fm_log_parse_level(const char *name);

/* Write one line at `level` (use FM_LOG, which skips formatting below the threshold). */
void fm_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define FM_LOG(level, ...)                                                                       \
    do {                                                                                         \
        if ((level) <= fm_log_level())                                                           \
            fm_log_write((level), __VA_ARGS__);                                                  \
    } while (0)

#endif
