/* fm_window: sliding-window event rate (see fm_window.h). */
#include "fm_window.h"

#include <math.h>
#include <string.h>

void fm_window_init(fm_window_t *w, double span_s, double now)
{
    memset(w, 0, sizeof *w);
    if (!(span_s > 0) || !isfinite(span_s))
        span_s = 30.0;
    w->origin = now;
    w->slot_s = span_s / FM_WINDOW_SLOTS;
}

/* Slide the window so that the slot of `now` is the newest (slots passed over are emptied). */
static void s_advance(fm_window_t *w, double now)
{
    double t = now - w->origin;
    int64_t idx = t > 0 ? (int64_t)(t / w->slot_s) : 0;
    if (idx <= w->cur)
        return;
    if (idx - w->cur >= FM_WINDOW_SLOTS) {
        memset(w->counts, 0, sizeof w->counts);
        w->total = 0;
    } else {
        for (int64_t k = w->cur + 1; k <= idx; k++) {
            uint64_t *c = &w->counts[k % FM_WINDOW_SLOTS];
            w->total -= *c;
            *c = 0;
        }
    }
    w->cur = idx;
}

void fm_window_add(fm_window_t *w, double now, uint64_t n)
{
    s_advance(w, now);
    w->counts[w->cur % FM_WINDOW_SLOTS] += n;
    w->total += n;
}

double fm_window_rate(fm_window_t *w, double now)
{
    s_advance(w, now);
    double t = now - w->origin;
    /* the window: the full slots before the newest, plus the elapsed part of the newest */
    double newest_start = (double)w->cur * w->slot_s;
    double covered = (FM_WINDOW_SLOTS - 1) * w->slot_s + (t - newest_start);
    if (covered > t)
        covered = t;
    if (covered < w->slot_s)
        covered = w->slot_s;
    return (double)w->total / covered;
}

double fm_window_span(const fm_window_t *w) { return w->slot_s * FM_WINDOW_SLOTS; }
