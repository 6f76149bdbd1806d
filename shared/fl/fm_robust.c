#include "fm_robust.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_screen.h"

struct fm_robust {
    fm_robust_rule_t rule;
    size_t nparams;
    int k;
    fm_staleness_t s;
    double beta;   /* trimmed mean: fraction trimmed at each end */
    float *rows;   /* k x nparams: the stored u_i, row i at rows + i * nparams */
    float *tile;   /* FM_ROBUST_TILE x k: one parameter's K values per line */
    double *acc;   /* FM_ROBUST_TILE sums */
    double *norms; /* k: ||u_i|| (norm-bounded mean) */
    double *sorted;
    int count; /* updates in the current buffer */
    /* the open update */
    int open;
    float w_open;
    uint64_t tau_open;
    fm_fedbuff_stats_t stats;
};

const char *fm_robust_rule_name(int rule)
{
    switch (rule) {
    case FM_ROBUST_MEAN: return "mean";
    case FM_ROBUST_MEDIAN: return "median";
    case FM_ROBUST_TRIMMED_MEAN: return "trimmed_mean";
    case FM_ROBUST_NORM_BOUNDED_MEAN: return "norm_bounded_mean";
    }
    return NULL;
}

int fm_robust_trimmed(double beta, int count)
{
    if (count < 1 || !(beta > 0.0))
        return 0;
    int b = (int)floor(beta * (double)count);
    if (2 * b >= count) /* beta < 0.5 never gets here; keep one value whatever beta is */
        b = (count - 1) / 2;
    return b;
}

size_t fm_robust_bytes(size_t nparams, int k)
{
    if (k < 1 || nparams > SIZE_MAX / sizeof(float) / (size_t)k)
        return SIZE_MAX;
    return (size_t)k * nparams * sizeof(float) +
           (size_t)FM_ROBUST_TILE * (size_t)k * sizeof(float) + FM_ROBUST_TILE * sizeof(double) +
           2 * (size_t)k * sizeof(double);
}

fm_robust_t *fm_robust_new(fm_robust_rule_t rule, size_t nparams, int k, const fm_staleness_t *s,
                           double trim_fraction, int *err)
{
    int rc = FM_EARG;
    fm_robust_t *r = NULL;
    if (rule == FM_ROBUST_MEAN || !fm_robust_rule_name(rule) || k < 1 ||
        fm_staleness_check(s, NULL) != 0 || !(trim_fraction >= 0.0 && trim_fraction < 0.5))
        goto fail;
    rc = -ENOMEM;
    if (fm_robust_bytes(nparams, k) == SIZE_MAX || !(r = calloc(1, sizeof *r)))
        goto fail;
    /* rows: malloc, not calloc: each row is cleared when an update begins */
    r->rows = malloc(nparams ? (size_t)k * nparams * sizeof(float) : 1);
    r->tile = malloc((size_t)FM_ROBUST_TILE * (size_t)k * sizeof(float));
    r->acc = malloc(FM_ROBUST_TILE * sizeof(double));
    r->norms = malloc((size_t)k * sizeof(double));
    r->sorted = malloc((size_t)k * sizeof(double));
    if (!r->rows || !r->tile || !r->acc || !r->norms || !r->sorted)
        goto fail;
    r->rule = rule;
    r->nparams = nparams;
    r->k = k;
    r->s = *s;
    r->beta = trim_fraction;
    return r;
fail:
    fm_robust_destroy(&r);
    if (err)
        *err = rc;
    return NULL;
}

void fm_robust_destroy(fm_robust_t **p)
{
    if (!p || !*p)
        return;
    fm_robust_t *r = *p;
    free(r->rows);
    free(r->tile);
    free(r->acc);
    free(r->norms);
    free(r->sorted);
    free(r);
    *p = NULL;
}

fm_robust_rule_t fm_robust_rule(const fm_robust_t *r) { return r->rule; }
int fm_robust_k(const fm_robust_t *r) { return r->k; }
int fm_robust_count(const fm_robust_t *r) { return r->count; }
int fm_robust_full(const fm_robust_t *r) { return r->count >= r->k; }

static float *s_row(const fm_robust_t *r, int i) { return r->rows + (size_t)i * r->nparams; }

int fm_robust_begin(fm_robust_t *r, uint64_t tau, double scale)
{
    FM_ASSERT(!r->open);
    if (r->count >= r->k || !(scale > 0.0) || !isfinite(scale))
        return FM_ERANGE;
    r->w_open = (float)(fm_staleness_weight(&r->s, tau) * scale);
    r->tau_open = tau;
    r->open = 1;
    memset(s_row(r, r->count), 0, r->nparams * sizeof(float));
    return 0;
}

int fm_robust_fold_span(fm_robust_t *r, size_t offset, size_t numel, const void *src)
{
    FM_ASSERT(r->open);
    if (offset > r->nparams || numel > r->nparams - offset)
        return FM_ERANGE;
    float *restrict dst = s_row(r, r->count) + offset;
    const unsigned char *restrict p = src;
    float w = r->w_open;
    for (size_t i = 0; i < numel; i++) {
        float x;
        memcpy(&x, p + i * sizeof x, sizeof x);
        dst[i] = w * x;
    }
    return 0;
}

int fm_robust_fold_scatter(fm_robust_t *r, size_t offset, size_t span, size_t n,
                           const uint32_t *idx, const float *vals)
{
    FM_ASSERT(r->open && (idx || n == 0) && (vals || n == 0));
    if (offset > r->nparams || span > r->nparams - offset)
        return FM_ERANGE;
    for (size_t j = 0; j < n; j++)
        if (idx[j] >= span)
            return FM_ERANGE;
    float *dst = s_row(r, r->count) + offset, w = r->w_open;
    for (size_t j = 0; j < n; j++)
        dst[idx[j]] = w * vals[j]; /* the row was zeroed at begin */
    return 0;
}

void fm_robust_end(fm_robust_t *r)
{
    FM_ASSERT(r->open);
    r->open = 0;
    r->count++;
    r->stats.updates++;
    r->stats.staleness_sum += (double)r->tau_open;
    if (r->tau_open > r->stats.staleness_max)
        r->stats.staleness_max = r->tau_open;
}

int fm_robust_add(fm_robust_t *r, const void *delta, uint64_t tau, double scale)
{
    int rc = fm_robust_begin(r, tau, scale);
    if (rc != 0)
        return rc;
    rc = fm_robust_fold_span(r, 0, r->nparams, delta);
    FM_ASSERT(rc == 0); /* the whole vector always fits */
    fm_robust_end(r);
    return 0;
}

void fm_robust_reset(fm_robust_t *r)
{
    r->count = 0;
    r->open = 0;
}

void fm_robust_stats(const fm_robust_t *r, fm_fedbuff_stats_t *out) { *out = r->stats; }

/* ---- the rules ----------------------------------------------------------------------------- */

/* Partially order a[0..n) (n >= 1) so that a[k] is the k-th smallest, a[0..k) <= a[k] <=
 * a(k..n) (Hoare's selection, median-of-three pivot; expected O(n)). */
static void s_select(float *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        float pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                float t = a[i];
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

static float s_median(float *a, size_t n)
{
    s_select(a, n, n / 2);
    float hi = a[n / 2];
    if (n % 2)
        return hi;
    float lo = a[0]; /* the largest of a[0..n/2): the lower middle value */
    for (size_t i = 1; i < n / 2; i++)
        lo = a[i] > lo ? a[i] : lo;
    return (float)(0.5 * ((double)lo + (double)hi));
}

/* The mean of the values of ranks b..n-b-1 (2b < n). */
static float s_trimmed(float *a, size_t n, size_t b)
{
    if (b > 0) {
        s_select(a, n, b);                 /* a[0..b): the b smallest */
        s_select(a + b, n - b, n - 2 * b); /* a[b..n-b): ranks b..n-b-1 */
    }
    double sum = 0.0;
    for (size_t i = b; i < n - b; i++)
        sum += (double)a[i];
    return (float)(sum / (double)(n - 2 * b));
}

/* median / trimmed_mean: per tile of parameters, transpose the K rows' values into lines of
 * K (rows read sequentially), then select per line. */
static void s_take_coordinatewise(fm_robust_t *r, float *restrict out)
{
    size_t n = r->nparams, cnt = (size_t)r->count;
    size_t b = (size_t)fm_robust_trimmed(r->beta, r->count);
    for (size_t j0 = 0; j0 < n; j0 += FM_ROBUST_TILE) {
        size_t nb = n - j0 < FM_ROBUST_TILE ? n - j0 : FM_ROBUST_TILE;
        for (size_t i = 0; i < cnt; i++) {
            const float *row = s_row(r, (int)i) + j0;
            for (size_t t = 0; t < nb; t++)
                r->tile[t * cnt + i] = row[t];
        }
        for (size_t t = 0; t < nb; t++) {
            float *line = r->tile + t * cnt;
            out[j0 + t] = r->rule == FM_ROBUST_MEDIAN ? s_median(line, cnt)
                                                      : s_trimmed(line, cnt, b);
        }
    }
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* norm_bounded_mean: M = the median norm; (1/K) sum_i min(1, M / ||u_i||) u_i. */
static void s_take_norm_bounded(fm_robust_t *r, float *restrict out)
{
    size_t n = r->nparams, cnt = (size_t)r->count;
    for (size_t i = 0; i < cnt; i++)
        r->sorted[i] = r->norms[i] = sqrt(fm_screen_sumsq(s_row(r, (int)i), n));
    qsort(r->sorted, cnt, sizeof(double), s_cmp_double);
    double m = cnt % 2 ? r->sorted[cnt / 2] : 0.5 * (r->sorted[cnt / 2 - 1] + r->sorted[cnt / 2]);
    for (size_t i = 0; i < cnt; i++) /* the factors, in place of the norms */
        r->norms[i] = r->norms[i] > m ? m / r->norms[i] : 1.0;
    double inv = 1.0 / (double)cnt;
    for (size_t j0 = 0; j0 < n; j0 += FM_ROBUST_TILE) {
        size_t nb = n - j0 < FM_ROBUST_TILE ? n - j0 : FM_ROBUST_TILE;
        memset(r->acc, 0, nb * sizeof(double));
        for (size_t i = 0; i < cnt; i++) {
            const float *row = s_row(r, (int)i) + j0;
            double f = r->norms[i];
            for (size_t t = 0; t < nb; t++)
                r->acc[t] += f * (double)row[t];
        }
        for (size_t t = 0; t < nb; t++)
            out[j0 + t] = (float)(r->acc[t] * inv);
    }
}

int fm_robust_take(fm_robust_t *r, float *out)
{
    FM_ASSERT(!r->open);
    if (r->count == 0)
        return FM_ERANGE;
    if (r->rule == FM_ROBUST_NORM_BOUNDED_MEAN)
        s_take_norm_bounded(r, out);
    else
        s_take_coordinatewise(r, out);
    r->count = 0;
    r->stats.takes++;
    return 0;
}
