/* fm_window: the rate of events over a sliding window ("updates/s over the last 30 s").
 *
 * Events are counted in FM_WINDOW_SLOTS slots of span_s / FM_WINDOW_SLOTS seconds each; the
 * rate is the count in the window divided by the time it covers (the whole span once the
 * window is older than that, less before). Versions land in bursts of K updates; a rate over
 * the last interval alternates between 0 and a peak, this one does not. A zeroed struct is
 * not ready: fm_window_init first. Plain data (no allocation, no destroy); not thread-safe.
 * Times are the caller's monotonic seconds and must not go backwards (an earlier `now` is
 * treated as the latest one seen). */
#ifndef FM_WINDOW_H
#define FM_WINDOW_H

#include <stdint.h>

#define FM_WINDOW_SLOTS 30

typedef struct {
    double origin;  /* monotonic time of fm_window_init */
    double slot_s;  /* seconds per slot */
    int64_t cur;    /* absolute index of the newest slot */
    uint64_t total; /* sum of counts[] */
    uint64_t counts[FM_WINDOW_SLOTS];
} fm_window_t;

/* An empty window of span_s seconds (> 0, finite; else 30 s) starting at `now`. */
void fm_window_init(fm_window_t *w, double span_s, double now);

/* Count n events at time `now`. */
void fm_window_add(fm_window_t *w, double now, uint64_t n);

/* Events per second at `now` over the window (over the time since fm_window_init while that
 * is shorter than the span; at least one slot). */
double fm_window_rate(fm_window_t *w, double now);

/* The window's span in seconds. */
double fm_window_span(const fm_window_t *w);

#endif
