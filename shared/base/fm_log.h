/* fm_log: one logging function with syslog levels.
 *
 * Lines go to stderr as "<ts> <prog>[pid] <LEVEL> message". When stderr is the journal
 * (systemd sets JOURNAL_STREAM="<dev>:<inode>" of the stream it connects, and fm_log_init
 * finds the same device and inode with fstat(2)) each line is "<N><LEVEL> message" instead:
 * N the syslog priority (sd-daemon(3): journald files the line under it, e.g. <3> for
 * LOG_ERR), no timestamp, program or pid (journald records them). On a terminal, a file or a
 * pipe: the plain line. In both formats a message is one line whatever it holds: newlines
 * and carriage returns in it become spaces, every other control byte (0x00-0x1f, 0x7f: an
 * escape sequence's ESC, a tab) becomes '?', so text from outside (a peer's id, a path)
 * can neither start a forged line nor drive the terminal. Bytes >= 0x80 (UTF-8) stay.
 * The threshold and the format are process configuration set at start (before threads);
 * the threshold is changed only by a reload (fm_log_set_level, safe while other threads
 * log); FM_LOG checks it before formatting. */
#ifndef FM_LOG_H
#define FM_LOG_H

#include <syslog.h>

/* Set the program name shown in each line (borrowed pointer; must outlive logging)
 * and the threshold (LOG_ERR .. LOG_DEBUG), and choose the format: journal when stderr is
 * the stream JOURNAL_STREAM names, else plain (a malformed JOURNAL_STREAM is plain). Call
 * once at start, before threads (a test may call it again after redirecting stderr). */
void fm_log_init(const char *prog, int level);

/* 1 if lines are written in the journal format (decided by fm_log_init), else 0. */
int fm_log_journal(void);

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
