/* fm_metrics: a registry of metrics and their rendering in the Prometheus text exposition
 * format, version 0.0.4 (what /metrics serves: fm_metrics_http.h).
 *
 * A metric family has a name, a help line, a type (counter, gauge, histogram with fixed
 * buckets) and up to FM_METRICS_LABELS_MAX label names; each series of a family (one set
 * of label values) is an fm_metric_t handle that the daemon keeps and updates. Naming
 * follows Prometheus' conventions and is checked (a wrong name is a programmer error,
 * FM_ASSERT): metric names [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in "_total", label
 * names [a-zA-Z_][a-zA-Z0-9_]* not starting with "__", histograms have no label "le";
 * values are in base units (seconds, bytes).
 *
 * Rendering (fm_metrics_render): families in the order they were first registered, each
 * as "# HELP name text" (help escaped: \ as \\, newline as \n), "# TYPE name type" and its
 * series in registration order: "name{l1="v1",l2="v2"} value" (label values escaped: \ as
 * \\, " as \", newline as \n; no braces without labels). Histograms: a cumulative
 * "name_bucket{...,le="b"}" line per upper bound and le="+Inf", then "name_sum" and
 * "name_count". Values: integers below 1e15 in plain digits ("3", "-2"), others in the
 * shortest %g form that reads back exactly ("0.25", "1e+20"), "NaN", "+Inf", "-Inf". No
 * timestamps. Every line ends in "\n".
 *
 * Thread safety: every function may be called from any thread. Values are C11 atomics (a
 * double's bits in a 64-bit atomic; adds are compare-and-swap loops), so updating a
 * handle never takes a lock: trainer workers count steps while the HTTP thread renders.
 * One mutex guards the registry's structure (registration, the scrape hooks, a render's
 * walk). Handles stay valid until fm_metrics_destroy. A render sees each value atomically
 * but not all values at one instant: a histogram's _count is the sum of its buckets (so
 * they always agree), its _sum may lag one observation behind.
 *
 * A NULL registry is allowed everywhere (a module used without metrics, unit tests):
 * registering on it returns NULL, and every update of a NULL handle does nothing. */
#ifndef FM_METRICS_H
#define FM_METRICS_H

#include <stddef.h>

#include "fm_err.h"

#define FM_METRICS_LABELS_MAX 4   /* label names of a family */
#define FM_METRICS_BUCKETS_MAX 32 /* upper bounds of a histogram (+Inf is implied) */
#define FM_METRICS_HOOKS_MAX 8    /* scrape hooks of a registry */

/* The Content-Type of the rendered text. */
#define FM_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct fm_metrics fm_metrics_t;
typedef struct fm_metric fm_metric_t;

/* An empty registry. NULL with *err = -ENOMEM (or -errno of pthread_mutex_init). Caller owns
 * it: fm_metrics_destroy, after the last render and update (handles die with it). */
fm_metrics_t *fm_metrics_new(int *err);

/* Free the registry and all its handles; NULL *p; idempotent. */
void fm_metrics_destroy(fm_metrics_t **p);

/* A series of a counter / gauge / histogram family named `name` (static or caller-owned:
 * copied). The family is created on first use with `help`; later calls must give the same
 * type, label names and buckets (else FM_ASSERT). `labels` is NULL (no labels) or a
 * NULL-terminated list of name, value pairs, e.g. (const char *[]){"reason", "shape",
 * NULL}; values are any UTF-8 text (copied). The same label values give the same handle.
 * `bounds[0..nbounds)` (histograms) are strictly increasing finite upper bounds, 1 <=
 * nbounds <= FM_METRICS_BUCKETS_MAX (copied). Returns the handle (owned by the registry),
 * or NULL when `m` is NULL or memory ran out (then fm_metrics_status says -ENOMEM). */
fm_metric_t *fm_metrics_counter(fm_metrics_t *m, const char *name, const char *help,
                                const char *const *labels);
fm_metric_t *fm_metrics_gauge(fm_metrics_t *m, const char *name, const char *help,
                              const char *const *labels);
fm_metric_t *fm_metrics_histogram(fm_metrics_t *m, const char *name, const char *help,
                                  const char *const *labels, const double *bounds,
                                  size_t nbounds);

/* 0, or -ENOMEM if any registration failed (sticky): check it once after registering. */
int fm_metrics_status(const fm_metrics_t *m);

/* Counter or gauge: += 1. */
void fm_metric_inc(fm_metric_t *x);

/* Counter (v >= 0, else FM_ASSERT) or gauge: += v. */
void fm_metric_add(fm_metric_t *x, double v);

/* Gauge: = v. Counter: = v only to mirror a monotonic count kept elsewhere (a scrape hook
 * copying an atomic, a counter restored from a checkpoint). */
void fm_metric_set(fm_metric_t *x, double v);

/* Histogram: one observation (the first bucket with v <= bound, else +Inf; NaN counts in
 * +Inf only and makes the sum NaN, as Prometheus' clients do). */
void fm_metric_observe(fm_metric_t *h, double v);

/* Counter or gauge: the value; histogram: the number of observations. 0 for NULL. */
double fm_metric_get(const fm_metric_t *x);

/* Call fn(arg) at the start of every render, under the registry's mutex: a hook only sets
 * values (fm_metric_set ...), never registers (that would deadlock). `arg` must outlive
 * every render: with `drop` NULL it is borrowed, else the registry owns it and calls
 * drop(arg) in fm_metrics_destroy. At most FM_METRICS_HOOKS_MAX hooks (FM_ASSERT). No-op
 * for NULL m (then `drop`, if any, is called at once). */
void fm_metrics_on_scrape(fm_metrics_t *m, void (*fn)(void *arg), void *arg,
                          void (*drop)(void *arg));

/* Run the scrape hooks, then render every family into *out (NUL-terminated, caller frees)
 * of *len bytes (without the NUL; len may be NULL). 0, or -ENOMEM (*out is NULL then). */
int fm_metrics_render(fm_metrics_t *m, char **out, size_t *len);

/* A sample value as the exposition format writes it (see above) into buf[0..cap), cap >= 32. */
void fm_metrics_format_value(double v, char *buf, size_t cap);

#endif
