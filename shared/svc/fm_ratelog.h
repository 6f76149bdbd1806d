/* fm_ratelog: the one rate limit of repeated log lines (rejected frames, failed sends).
 *
 * One fm_ratelog_t per kind of event (per socket, per peer class: a "key"). Within a window
 * of FM_RATELOG_WINDOW_S seconds, the first FM_RATELOG_BURST lines of a key are written;
 * the rest are counted, and the next line written for the key ends with
 * " (+K suppressed)". Counting the events themselves is the caller's business (stats).
 * A zeroed struct is ready to use; it is plain data (no allocation, no destroy). Not
 * thread-safe: one key belongs to one thread. */
#ifndef FM_RATELOG_H
#define FM_RATELOG_H

#include <stdint.h>

#define FM_RATELOG_BURST 10      /* lines per window and key */
#define FM_RATELOG_WINDOW_S 10.0 /* seconds */

typedef struct {
    double window_start; /* monotonic seconds */
    int in_window;       /* lines written in this window */
    uint64_t suppressed; /* lines not written since the last written one */
} fm_ratelog_t;

/* The decision at monotonic time `now`: -1 if the line must be suppressed (it is counted),
 * else the number of lines suppressed since the last one written (the count restarts). */
int64_t fm_ratelog_admit(fm_ratelog_t *r, double now);

/* Write one log line at `level` (fm_log) for key `r` unless the rate limit suppresses it;
 * a line below the log threshold is neither written nor counted. 1 if written, else 0. */
int fm_ratelog(fm_ratelog_t *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
