/* fm_screen: the per-update screen before an update is folded: an L2-norm bound (clip or
 * reject, absolute or relative to the running median of recent norms) and the overflow
 * guard. No I/O; the aggregator's ingest calls it once per update that passed every other
 * check.
 *
 * Norms. fm_screen_sumsq sums x^2 over float32 values in double. A finite float squared is at
 * most FLT_MAX^2 ~ 1.2e77, so the sum of any number of them that fits in memory is finite:
 * the sum is finite exactly when every value is, and one pass both checks finiteness and
 * gives the norm ||delta|| = sqrt(sum over all tensors).
 *
 * The overflow guard (always on, whatever the bound). An update with ||delta|| >
 * FM_SCREEN_NORM_CEILING is rejected (FM_SCREEN_OVERFLOW), also with action = clip: such
 * values are no training result, and the ceiling keeps every buffered mean |delta_bar_j| <=
 * max_i ||delta_i|| below sqrt(FLT_MAX) ~ 1.8e19, so the squares that fedadam and fedyogi
 * take stay finite. (The float accumulator's own sum, which sample weights scale, is
 * guarded where it is folded: fm_fedbuff_begin_ex.)
 *
 * The norm bound B (config.bound > 0; 0 = no bound):
 *   absolute   B = config.bound
 *   relative   B = config.bound x median of the window (the last config.window norms
 *              judged, each recorded as min(norm, B it was judged against)); config.bound
 *              is a factor >= 1. Until the window holds config.window norms there is no
 *              reference: updates are not bounded (only the overflow guard applies) and
 *              their norms fill the window as they come.
 * An update with ||delta|| <= B passes unchanged (scale 1). Above B, action clip: it is
 * folded scaled by B / ||delta|| (its norm becomes B); action reject: it is rejected
 * (FM_SCREEN_REJECTED). The median of an even window is the mean of its two middle values.
 *
 * Why min(norm, B) for every judged update (passed, clipped or rejected): clipping or
 * rejecting values above the median at a B >= median leaves the median where it was, so
 * the bound neither drifts down (rejecting the upper tail would lower it step by step) nor
 * up while fewer than half of the recent updates are above it. A sender that supplies more
 * than half of the recent updates can raise B by the factor per window: the breakdown point
 * of the median itself. Updates rejected by the overflow guard are not recorded; the caller
 * judges an update after its other checks, so that only updates it would fold count.
 *
 * Memory: config.window doubles, twice (window and scratch). Not thread-safe. */
#ifndef FM_SCREEN_H
#define FM_SCREEN_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_SCREEN_NORM_CEILING 1e18 /* larger ||delta||: rejected as overflow */

typedef enum { FM_SCREEN_ABSOLUTE, FM_SCREEN_RELATIVE } fm_screen_mode_t;
typedef enum { FM_SCREEN_CLIP, FM_SCREEN_REJECT } fm_screen_action_t;

typedef struct {
    double bound; /* 0 = no bound; absolute: the norm; relative: the factor (>= 1) */
    fm_screen_mode_t mode;
    fm_screen_action_t action;
    int window; /* relative: norms the median is taken over, >= 1 */
} fm_screen_config_t;

/* What the screen says about one update. */
typedef enum {
    FM_SCREEN_PASS,     /* fold it unchanged (scale 1) */
    FM_SCREEN_CLIPPED,  /* fold it scaled by *scale = B / norm (< 1) */
    FM_SCREEN_REJECTED, /* above B with action reject */
    FM_SCREEN_OVERFLOW  /* above FM_SCREEN_NORM_CEILING (or not finite) */
} fm_screen_verdict_t;

/* "absolute" / "relative", "clip" / "reject" (static strings; NULL out of range: the
 * config table's enum names). */
const char *fm_screen_mode_name(int mode);
const char *fm_screen_action_name(int action);

/* Validate a config: 0, or FM_EARG with one line in `e` (may be NULL) naming the field. */
int fm_screen_check(const fm_screen_config_t *c, fm_errmsg_t *e);

typedef struct fm_screen fm_screen_t;

/* A screen with config *c (copied; fm_screen_check must pass). NULL with *err (may be NULL)
 * = FM_EARG or -ENOMEM. Caller owns it: fm_screen_destroy. */
fm_screen_t *fm_screen_new(const fm_screen_config_t *c, int *err);

/* Free and NULL *p; idempotent. */
void fm_screen_destroy(fm_screen_t **p);

/* Take a new bound, mode and action (a reload); the window and its norms are kept (its
 * size stays the one fm_screen_new got). 0, or FM_EARG (nothing changed). */
int fm_screen_set(fm_screen_t *s, const fm_screen_config_t *c);

/* The sum of squares of numel float32 values at src (any alignment), in double, in a fixed
 * order (eight interleaved partial sums, then a tail): finite iff every value is. */
double fm_screen_sumsq(const void *src, size_t numel);

/* The bound B the next update is judged against: > 0, or 0 when none applies (no bound, or
 * relative and the window is not yet full). */
double fm_screen_bound(const fm_screen_t *s);

/* Judge an update of L2 norm `norm` (>= 0; NaN or infinity: overflow) and record it in the
 * window as described above. *scale (may be NULL) = 1, or B / norm when clipped; *bound
 * (may be NULL) = the B it was judged against (0: none). */
fm_screen_verdict_t fm_screen_judge(fm_screen_t *s, double norm, double *scale, double *bound);

/* Norms in the window now (<= window). */
int fm_screen_held(const fm_screen_t *s);

/* The config in use (borrowed). */
const fm_screen_config_t *fm_screen_config(const fm_screen_t *s);

#endif
