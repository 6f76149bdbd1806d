/* fm_metrics: registry, atomic values and the text exposition format (see fm_metrics.h). */
#include "fm_metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

typedef struct s_family s_family_t;

struct fm_metric {
    s_family_t *fam;
    fm_metric_t *next;
    char *labels;             /* the rendered pairs, escaped: `a="x",b="y"`; "" without */
    atomic_uint_least64_t v;  /* a double's bits: counter / gauge value, histogram sum */
    atomic_uint_least64_t *n; /* histogram: nbounds + 1 bucket counts (last: +Inf), not
                                 cumulative */
};

struct s_family {
    s_type_t type;
    char *name;
    char *help;
    size_t nlabels;
    char *label_names[FM_METRICS_LABELS_MAX];
    double *bounds;
    size_t nbounds;
    fm_metric_t *first, *last;
    s_family_t *next;
};

typedef struct {
    void (*fn)(void *arg);
    void *arg;
    void (*drop)(void *arg); /* NULL: arg is borrowed */
} s_hook_t;

struct fm_metrics {
    pthread_mutex_t mu; /* the lists and hooks below; values are atomics */
    s_family_t *first, *last;
    s_hook_t hooks[FM_METRICS_HOOKS_MAX];
    int nhooks;
    int status; /* 0 or -ENOMEM: a registration failed */
};

/* ---- values: doubles in 64-bit atomics ---------------------------------------------------- */

static uint64_t s_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double s_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void s_atomic_add(atomic_uint_least64_t *a, double v)
{
    uint_least64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, s_bits(s_double(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void fm_metric_inc(fm_metric_t *x) { fm_metric_add(x, 1.0); }

void fm_metric_add(fm_metric_t *x, double v)
{
    if (!x)
        return;
    FM_ASSERT(x->fam->type != S_HISTOGRAM);
    FM_ASSERT(x->fam->type == S_GAUGE || v >= 0);
    s_atomic_add(&x->v, v);
}

void fm_metric_set(fm_metric_t *x, double v)
{
    if (!x)
        return;
    FM_ASSERT(x->fam->type != S_HISTOGRAM);
    atomic_store_explicit(&x->v, s_bits(v), memory_order_relaxed);
}

void fm_metric_observe(fm_metric_t *h, double v)
{
    if (!h)
        return;
    const s_family_t *f = h->fam;
    FM_ASSERT(f->type == S_HISTOGRAM);
    size_t b = 0;
    while (b < f->nbounds && !(v <= f->bounds[b]))
        b++;
    atomic_fetch_add_explicit(&h->n[b], 1, memory_order_relaxed);
    s_atomic_add(&h->v, v);
}

static uint64_t s_hist_count(const fm_metric_t *h)
{
    uint64_t n = 0;
    for (size_t b = 0; b <= h->fam->nbounds; b++)
        n += atomic_load_explicit(&h->n[b], memory_order_relaxed);
    return n;
}

double fm_metric_get(const fm_metric_t *x)
{
    if (!x)
        return 0.0;
    if (x->fam->type == S_HISTOGRAM)
        return (double)s_hist_count(x);
    return s_double(atomic_load_explicit(&x->v, memory_order_relaxed));
}

/* ---- names and escaping ------------------------------------------------------------------- */

static int s_name_ok(const char *s, int colon)
{
    if (!s || !*s)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (colon && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Escape s into f: backslash and newline always, the double quote when `quote`. */
static void s_escape(FILE *f, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else if (quote && *s == '"')
            fputs("\\\"", f);
        else
            fputc(*s, f);
    }
}

void fm_metrics_format_value(double v, char *buf, size_t cap)
{
    FM_ASSERT(buf && cap >= 32);
    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    } else if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v == 0 ? 0.0 : v); /* -0 as 0 */
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, cap, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                return;
        }
    }
}

/* ---- registry ------------------------------------------------------------------------------ */

fm_metrics_t *fm_metrics_new(int *err)
{
    fm_metrics_t *m = calloc(1, sizeof *m);
    int rc = m ? -pthread_mutex_init(&m->mu, NULL) : -ENOMEM;
    if (rc) {
        free(m);
        if (err)
            *err = rc;
        return NULL;
    }
    return m;
}

static void s_metric_free(fm_metric_t *x)
{
    free(x->labels);
    free(x->n);
    free(x);
}

static void s_family_free(s_family_t *f)
{
    for (fm_metric_t *x = f->first, *next; x; x = next) {
        next = x->next;
        s_metric_free(x);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
}

void fm_metrics_destroy(fm_metrics_t **p)
{
    if (!p || !*p)
        return;
    fm_metrics_t *m = *p;
    for (s_family_t *f = m->first, *next; f; f = next) {
        next = f->next;
        s_family_free(f);
    }
    for (int i = 0; i < m->nhooks; i++)
        if (m->hooks[i].drop)
            m->hooks[i].drop(m->hooks[i].arg);
    pthread_mutex_destroy(&m->mu);
    free(m);
    *p = NULL;
}

int fm_metrics_status(const fm_metrics_t *m) { return m ? m->status : 0; }

static s_family_t *s_family_find(fm_metrics_t *m, const char *name)
{
    for (s_family_t *f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Labels of a registration call: the number of pairs (checked). */
static size_t s_npairs(const char *const *labels, s_type_t type)
{
    size_t n = 0;
    for (; labels && labels[2 * n]; n++) {
        FM_ASSERT(labels[2 * n + 1] != NULL);
        FM_ASSERT(s_name_ok(labels[2 * n], 0) && strncmp(labels[2 * n], "__", 2) != 0);
        FM_ASSERT(type != S_HISTOGRAM || strcmp(labels[2 * n], "le") != 0);
    }
    FM_ASSERT(n <= FM_METRICS_LABELS_MAX);
    return n;
}

/* A new family (checked names, copied strings); NULL for -ENOMEM. */
static s_family_t *s_family_new(s_type_t type, const char *name, const char *help,
                                const char *const *labels, size_t nlabels, const double *bounds,
                                size_t nbounds)
{
    s_family_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->nlabels = nlabels;
    int ok = f->name && f->help;
    for (size_t i = 0; i < nlabels; i++)
        ok &= (f->label_names[i] = strdup(labels[2 * i])) != NULL;
    if (ok && type == S_HISTOGRAM) {
        f->nbounds = nbounds;
        f->bounds = malloc(nbounds * sizeof *f->bounds);
        ok = f->bounds != NULL;
        if (ok)
            memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
    }
    if (!ok) {
        s_family_free(f);
        return NULL;
    }
    return f;
}

/* The family's registration must match: type, label names, buckets. */
static void s_family_check(const s_family_t *f, s_type_t type, const char *const *labels,
                           size_t nlabels, const double *bounds, size_t nbounds)
{
    FM_ASSERT(f->type == type && f->nlabels == nlabels);
    for (size_t i = 0; i < nlabels; i++)
        FM_ASSERT(strcmp(f->label_names[i], labels[2 * i]) == 0);
    if (type == S_HISTOGRAM) {
        FM_ASSERT(f->nbounds == nbounds);
        for (size_t i = 0; i < nbounds; i++)
            FM_ASSERT(f->bounds[i] == bounds[i]);
    }
}

/* The rendered label pairs of a registration (caller frees), or NULL for -ENOMEM. */
static char *s_labels_text(const char *const *labels, size_t nlabels)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < nlabels; i++) {
        fprintf(f, "%s%s=\"", i ? "," : "", labels[2 * i]);
        s_escape(f, labels[2 * i + 1], 1);
        fputc('"', f);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static fm_metric_t *s_register(fm_metrics_t *m, s_type_t type, const char *name, const char *help,
                               const char *const *labels, const double *bounds, size_t nbounds)
{
    if (!m)
        return NULL;
    FM_ASSERT(s_name_ok(name, 1));
    FM_ASSERT(type != S_COUNTER || s_ends_with(name, "_total"));
    if (type == S_HISTOGRAM) {
        FM_ASSERT(bounds && nbounds >= 1 && nbounds <= FM_METRICS_BUCKETS_MAX);
        for (size_t i = 0; i < nbounds; i++)
            FM_ASSERT(isfinite(bounds[i]) && (i == 0 || bounds[i] > bounds[i - 1]));
    }
    size_t nlabels = s_npairs(labels, type);
    char *text = s_labels_text(labels, nlabels);
    fm_metric_t *x = NULL;
    pthread_mutex_lock(&m->mu);
    s_family_t *f = s_family_find(m, name);
    int fresh = f == NULL;
    if (!text)
        goto cleanup;
    if (f) {
        s_family_check(f, type, labels, nlabels, bounds, nbounds);
        for (fm_metric_t *y = f->first; y; y = y->next) {
            if (strcmp(y->labels, text) == 0) {
                x = y;
                goto cleanup;
            }
        }
    } else if (!(f = s_family_new(type, name, help, labels, nlabels, bounds, nbounds))) {
        goto cleanup;
    }
    x = calloc(1, sizeof *x);
    if (x && type == S_HISTOGRAM && !(x->n = calloc(nbounds + 1, sizeof *x->n))) {
        free(x);
        x = NULL;
    }
    if (!x) {
        if (fresh)
            s_family_free(f);
        goto cleanup;
    }
    x->fam = f;
    x->labels = text;
    text = NULL;
    atomic_init(&x->v, s_bits(0.0));
    for (size_t b = 0; type == S_HISTOGRAM && b <= nbounds; b++)
        atomic_init(&x->n[b], 0);
    if (f->last)
        f->last->next = x;
    else
        f->first = x;
    f->last = x;
    if (fresh) {
        if (m->last)
            m->last->next = f;
        else
            m->first = f;
        m->last = f;
    }
cleanup:
    if (!x)
        m->status = -ENOMEM;
    pthread_mutex_unlock(&m->mu);
    free(text);
    return x;
}

fm_metric_t *fm_metrics_counter(fm_metrics_t *m, const char *name, const char *help,
                                const char *const *labels)
{
    return s_register(m, S_COUNTER, name, help, labels, NULL, 0);
}

fm_metric_t *fm_metrics_gauge(fm_metrics_t *m, const char *name, const char *help,
                              const char *const *labels)
{
    return s_register(m, S_GAUGE, name, help, labels, NULL, 0);
}

fm_metric_t *fm_metrics_histogram(fm_metrics_t *m, const char *name, const char *help,
                                  const char *const *labels, const double *bounds, size_t nbounds)
{
    return s_register(m, S_HISTOGRAM, name, help, labels, bounds, nbounds);
}

void fm_metrics_on_scrape(fm_metrics_t *m, void (*fn)(void *arg), void *arg,
                          void (*drop)(void *arg))
{
    if (!m) {
        if (drop)
            drop(arg);
        return;
    }
    FM_ASSERT(fn);
    pthread_mutex_lock(&m->mu);
    FM_ASSERT(m->nhooks < FM_METRICS_HOOKS_MAX);
    m->hooks[m->nhooks++] = (s_hook_t){fn, arg, drop};
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ----------------------------------------------------------------------------- */

static const char *s_type_name(s_type_t t)
{
    return t == S_COUNTER ? "counter" : t == S_GAUGE ? "gauge" : "histogram";
}

/* "name{labels} value\n"; `suffix` is appended to the name, `extra` (a rendered pair, e.g.
 * le="0.5") to the labels. */
static void s_sample(FILE *f, const char *name, const char *suffix, const char *labels,
                     const char *extra, double v)
{
    char val[64];
    fm_metrics_format_value(v, val, sizeof val);
    int nl = labels[0] != '\0', ne = extra && extra[0];
    fprintf(f, "%s%s%s%s%s%s%s %s\n", name, suffix, nl || ne ? "{" : "", labels,
            nl && ne ? "," : "", ne ? extra : "", nl || ne ? "}" : "", val);
}

static void s_render_family(FILE *f, const s_family_t *fam)
{
    fputs("# HELP ", f);
    fputs(fam->name, f);
    fputc(' ', f);
    s_escape(f, fam->help, 0);
    fprintf(f, "\n# TYPE %s %s\n", fam->name, s_type_name(fam->type));
    for (const fm_metric_t *x = fam->first; x; x = x->next) {
        double v = s_double(atomic_load_explicit(&x->v, memory_order_relaxed));
        if (fam->type != S_HISTOGRAM) {
            s_sample(f, fam->name, "", x->labels, NULL, v);
            continue;
        }
        uint64_t cum = 0;
        char le[64], bound[48];
        for (size_t b = 0; b <= fam->nbounds; b++) {
            cum += atomic_load_explicit(&x->n[b], memory_order_relaxed);
            if (b < fam->nbounds)
                fm_metrics_format_value(fam->bounds[b], bound, sizeof bound);
            snprintf(le, sizeof le, "le=\"%s\"", b < fam->nbounds ? bound : "+Inf");
            s_sample(f, fam->name, "_bucket", x->labels, le, (double)cum);
        }
        s_sample(f, fam->name, "_sum", x->labels, NULL, v);
        s_sample(f, fam->name, "_count", x->labels, NULL, (double)cum);
    }
}

int fm_metrics_render(fm_metrics_t *m, char **out, size_t *len)
{
    FM_ASSERT(out);
    char *buf = NULL;
    size_t n = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return -ENOMEM;
    if (m) {
        pthread_mutex_lock(&m->mu);
        for (int i = 0; i < m->nhooks; i++)
            m->hooks[i].fn(m->hooks[i].arg);
        for (const s_family_t *fam = m->first; fam; fam = fam->next)
            s_render_family(f, fam);
        pthread_mutex_unlock(&m->mu);
    }
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return -ENOMEM; /* a memory stream fails only for want of memory */
    }
    *out = buf;
    if (len)
        *len = n;
    return 0;
}
