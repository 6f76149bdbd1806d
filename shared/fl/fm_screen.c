#include "fm_screen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fm_screen {
    fm_screen_config_t c;
    double *ring;    /* the last c.window recorded norms (ring buffer) */
    double *scratch; /* c.window doubles for the median */
    int held;        /* norms in the ring, <= c.window */
    int next;        /* slot of the next record */
};

const char *fm_screen_mode_name(int mode)
{
    switch (mode) {
    case FM_SCREEN_ABSOLUTE: return "absolute";
    case FM_SCREEN_RELATIVE: return "relative";
    }
    return NULL;
}

const char *fm_screen_action_name(int action)
{
    switch (action) {
    case FM_SCREEN_CLIP: return "clip";
    case FM_SCREEN_REJECT: return "reject";
    }
    return NULL;
}

int fm_screen_check(const fm_screen_config_t *c, fm_errmsg_t *e)
{
    if (!fm_screen_mode_name(c->mode) || !fm_screen_action_name(c->action))
        return fm_errmsg_set(e, FM_EARG, "norm bound: unknown mode %d or action %d", (int)c->mode,
                             (int)c->action);
    if (!(c->bound >= 0.0) || !isfinite(c->bound))
        return fm_errmsg_set(e, FM_EARG, "norm bound %g: must be a finite number >= 0", c->bound);
    if (c->mode == FM_SCREEN_RELATIVE && c->bound > 0.0 && c->bound < 1.0)
        return fm_errmsg_set(e, FM_EARG,
                             "norm bound %g: a relative bound is a factor of the median norm "
                             "and must be >= 1 (or 0 = off)",
                             c->bound);
    if (c->window < 1)
        return fm_errmsg_set(e, FM_EARG, "norm window %d: must be >= 1", c->window);
    return 0;
}

fm_screen_t *fm_screen_new(const fm_screen_config_t *c, int *err)
{
    int rc = FM_EARG;
    fm_screen_t *s = NULL;
    if (fm_screen_check(c, NULL) != 0)
        goto fail;
    rc = -ENOMEM;
    if (!(s = calloc(1, sizeof *s)) || !(s->ring = calloc((size_t)c->window, sizeof(double))) ||
        !(s->scratch = calloc((size_t)c->window, sizeof(double))))
        goto fail;
    s->c = *c;
    return s;
fail:
    fm_screen_destroy(&s);
    if (err)
        *err = rc;
    return NULL;
}

void fm_screen_destroy(fm_screen_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->ring);
    free((*p)->scratch);
    free(*p);
    *p = NULL;
}

int fm_screen_set(fm_screen_t *s, const fm_screen_config_t *c)
{
    fm_screen_config_t t = *c;
    t.window = s->c.window; /* the ring keeps its size */
    if (fm_screen_check(&t, NULL) != 0)
        return FM_EARG;
    s->c = t;
    return 0;
}

double fm_screen_sumsq(const void *src, size_t numel)
{
    const unsigned char *p = src;
    double acc[8] = {0};
    size_t i = 0;
    /* eight independent lanes: the compiler vectorises them without reassociating a sum */
    for (; i + 8 <= numel; i += 8) {
        float x[8];
        memcpy(x, p + i * sizeof(float), sizeof x);
        for (int l = 0; l < 8; l++)
            acc[l] += (double)x[l] * (double)x[l];
    }
    double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                 ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < numel; i++) {
        float x;
        memcpy(&x, p + i * sizeof x, sizeof x);
        sum += (double)x * (double)x;
    }
    return sum;
}

/* Partially order a[0..n) so that a[k] is the k-th smallest, a[0..k) <= a[k] <= a(k..n)
 * (Hoare's selection with a median-of-three pivot; expected O(n)). */
static void s_select(double *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi];
        double pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* The median of the window (mean of the two middle values when the count is even). */
static double s_median(const fm_screen_t *s)
{
    size_t n = (size_t)s->held;
    double *a = s->scratch;
    memcpy(a, s->ring, n * sizeof(double));
    s_select(a, n, n / 2);
    double hi = a[n / 2];
    if (n % 2)
        return hi;
    double lo = a[0]; /* the largest of a[0..n/2): the lower middle value */
    for (size_t i = 1; i < n / 2; i++)
        lo = a[i] > lo ? a[i] : lo;
    return 0.5 * (lo + hi);
}

double fm_screen_bound(const fm_screen_t *s)
{
    if (!(s->c.bound > 0.0))
        return 0.0;
    if (s->c.mode == FM_SCREEN_ABSOLUTE)
        return s->c.bound;
    if (s->held < s->c.window)
        return 0.0; /* no reference yet */
    return s->c.bound * s_median(s);
}

int fm_screen_held(const fm_screen_t *s) { return s->held; }

const fm_screen_config_t *fm_screen_config(const fm_screen_t *s) { return &s->c; }

static void s_record(fm_screen_t *s, double norm)
{
    s->ring[s->next] = norm;
    s->next = (s->next + 1) % s->c.window;
    if (s->held < s->c.window)
        s->held++;
}

fm_screen_verdict_t fm_screen_judge(fm_screen_t *s, double norm, double *scale, double *bound)
{
    double b = 0.0, f = 1.0;
    fm_screen_verdict_t v = FM_SCREEN_PASS;
    if (!(norm <= FM_SCREEN_NORM_CEILING)) { /* also NaN */
        v = FM_SCREEN_OVERFLOW;
        goto out;
    }
    b = fm_screen_bound(s);
    if (b > 0.0 && norm > b) {
        v = s->c.action == FM_SCREEN_CLIP ? FM_SCREEN_CLIPPED : FM_SCREEN_REJECTED;
        f = v == FM_SCREEN_CLIPPED ? b / norm : 1.0;
        s_record(s, b);
    } else {
        s_record(s, norm);
    }
out:
    if (scale)
        *scale = f;
    if (bound)
        *bound = b;
    return v;
}
