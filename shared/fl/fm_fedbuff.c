#include "fm_fedbuff.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_ALIGN 64 /* accumulator alignment (a cache line; any vector width) */

struct fm_fedbuff {
    size_t nparams;
    int k;                 /* full at count >= k */
    fm_staleness_t s;      /* staleness function (validated) */
    int weight_by_samples; /* c_i = num_samples_i (1) or 1 (0) */
    float *acc;            /* sum_i w_i delta_i, nparams floats (owned, S_ALIGN-aligned) */
    double sum_c;          /* sum_i c_i over the current buffer */
    int count;             /* updates in the current buffer */
    double mass;           /* sum_i w_i ||delta_i|| over the current buffer (overflow guard) */
    /* the open update (between begin and end) */
    int open;
    float w_open; /* s(tau) * c * scale, rounded to float for the fold */
    double c_open;
    double mass_open; /* w_open * norm */
    uint64_t tau_open;
    fm_fedbuff_stats_t stats;
};

/* ---- staleness ---------------------------------------------------------------------------- */

const char *fm_staleness_name(fm_staleness_kind_t kind)
{
    switch (kind) {
    case FM_STALENESS_CONSTANT: return "constant";
    case FM_STALENESS_POLYNOMIAL: return "polynomial";
    case FM_STALENESS_HINGE: return "hinge";
    }
    return "?";
}

int fm_staleness_check(const fm_staleness_t *s, fm_errmsg_t *e)
{
    switch (s->kind) {
    case FM_STALENESS_CONSTANT: return 0;
    case FM_STALENESS_POLYNOMIAL:
    case FM_STALENESS_HINGE: break;
    default: return fm_errmsg_set(e, FM_EARG, "staleness kind %d: unknown", (int)s->kind);
    }
    const char *name = fm_staleness_name(s->kind);
    if (!(s->a > 0.0) || !isfinite(s->a))
        return fm_errmsg_set(e, FM_EARG, "staleness %s: a = %g: must be a finite number > 0",
                             name, s->a);
    if (s->kind == FM_STALENESS_HINGE && (!(s->b >= 0.0) || !isfinite(s->b)))
        return fm_errmsg_set(e, FM_EARG, "staleness %s: b = %g: must be a finite number >= 0",
                             name, s->b);
    return 0;
}

int fm_staleness_parse(fm_staleness_t *s, const char *kind, double a, double b, fm_errmsg_t *e)
{
    fm_staleness_t t = {.a = a, .b = b};
    if (!kind)
        return fm_errmsg_set(e, FM_EARG, "staleness: missing kind (constant|polynomial|hinge)");
    if (strcmp(kind, "constant") == 0)
        t.kind = FM_STALENESS_CONSTANT;
    else if (strcmp(kind, "polynomial") == 0)
        t.kind = FM_STALENESS_POLYNOMIAL;
    else if (strcmp(kind, "hinge") == 0)
        t.kind = FM_STALENESS_HINGE;
    else
        return fm_errmsg_set(e, FM_EARG, "staleness '%.64s': unknown (constant|polynomial|hinge)",
                             kind);
    int rc = fm_staleness_check(&t, e);
    if (rc != 0)
        return rc;
    *s = t;
    return 0;
}

double fm_staleness_weight(const fm_staleness_t *s, uint64_t tau)
{
    double t = (double)tau;
    switch (s->kind) {
    case FM_STALENESS_POLYNOMIAL: return pow(1.0 + t, -s->a);
    case FM_STALENESS_HINGE: return t <= s->b ? 1.0 : 1.0 / (s->a * (t - s->b) + 1.0);
    case FM_STALENESS_CONSTANT:
    default: return 1.0;
    }
}

/* ---- buffer -------------------------------------------------------------------------------- */

fm_fedbuff_t *fm_fedbuff_new(size_t nparams, int k, const fm_staleness_t *s,
                             int weight_by_samples, int *err)
{
    int rc = FM_EARG;
    fm_fedbuff_t *b = NULL;
    if (k < 1 || fm_staleness_check(s, NULL) != 0)
        goto fail;
    rc = -ENOMEM;
    if (nparams > (SIZE_MAX - S_ALIGN) / sizeof(float))
        goto fail;
    b = calloc(1, sizeof *b);
    if (!b)
        goto fail;
    /* aligned_alloc wants a multiple of the alignment; at least one line for nparams == 0 */
    size_t bytes = (nparams * sizeof(float) + S_ALIGN - 1) / S_ALIGN * S_ALIGN;
    b->acc = aligned_alloc(S_ALIGN, bytes ? bytes : S_ALIGN);
    if (!b->acc)
        goto fail;
    memset(b->acc, 0, bytes);
    b->nparams = nparams;
    b->k = k;
    b->s = *s;
    b->weight_by_samples = weight_by_samples != 0;
    return b;
fail:
    if (b)
        free(b->acc);
    free(b);
    if (err)
        *err = rc;
    return NULL;
}

void fm_fedbuff_destroy(fm_fedbuff_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->acc);
    free(*p);
    *p = NULL;
}

size_t fm_fedbuff_nparams(const fm_fedbuff_t *b) { return b->nparams; }
int fm_fedbuff_k(const fm_fedbuff_t *b) { return b->k; }
int fm_fedbuff_count(const fm_fedbuff_t *b) { return b->count; }
int fm_fedbuff_full(const fm_fedbuff_t *b) { return b->count >= b->k; }

int fm_fedbuff_begin_ex(fm_fedbuff_t *b, uint64_t tau, uint64_t num_samples, double scale,
                        double norm)
{
    FM_ASSERT(!b->open);
    if (b->weight_by_samples && num_samples == 0)
        return FM_ERANGE;
    if (b->count == INT_MAX || !(scale > 0.0) || !isfinite(scale))
        return FM_ERANGE;
    double c = b->weight_by_samples ? (double)num_samples : 1.0;
    float w = (float)(fm_staleness_weight(&b->s, tau) * c * scale);
    double mass = (double)w * norm;
    if (!(norm >= 0.0) || !(b->mass + mass <= FM_FEDBUFF_ACC_LIMIT)) /* also NaN, inf */
        return FM_ENONFINITE;
    b->c_open = c;
    b->w_open = w;
    b->mass_open = mass;
    b->tau_open = tau;
    b->open = 1;
    return 0;
}

int fm_fedbuff_begin(fm_fedbuff_t *b, uint64_t tau, uint64_t num_samples)
{
    return fm_fedbuff_begin_ex(b, tau, num_samples, 1.0, 0.0);
}

/* acc[i] += w * src[i] for src at any alignment. The per-float memcpy compiles to unaligned
 * vector loads (the same code as a `const float *` loop) and is defined for any source bytes. */
static void s_fold(float *restrict acc, const unsigned char *restrict src, float w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, src + i * sizeof x, sizeof x);
        acc[i] += w * x;
    }
}

int fm_fedbuff_fold_span(fm_fedbuff_t *b, size_t offset, size_t numel, const void *src)
{
    FM_ASSERT(b->open);
    if (offset > b->nparams || numel > b->nparams - offset)
        return FM_ERANGE;
    if (numel > 0)
        s_fold(b->acc + offset, src, b->w_open, numel);
    return 0;
}

int fm_fedbuff_fold_scatter(fm_fedbuff_t *b, size_t offset, size_t span, size_t n,
                            const uint32_t *idx, const float *vals)
{
    FM_ASSERT(b->open && (idx || n == 0) && (vals || n == 0));
    if (offset > b->nparams || span > b->nparams - offset)
        return FM_ERANGE;
    for (size_t j = 0; j < n; j++)
        if (idx[j] >= span)
            return FM_ERANGE;
    float *acc = b->acc + offset, w = b->w_open;
    for (size_t j = 0; j < n; j++)
        acc[idx[j]] += w * vals[j];
    return 0;
}

void fm_fedbuff_end(fm_fedbuff_t *b)
{
    FM_ASSERT(b->open);
    b->open = 0;
    b->count++;
    b->sum_c += b->c_open;
    b->mass += b->mass_open;
    b->stats.updates++;
    b->stats.staleness_sum += (double)b->tau_open;
    if (b->tau_open > b->stats.staleness_max)
        b->stats.staleness_max = b->tau_open;
}

int fm_fedbuff_add(fm_fedbuff_t *b, const void *delta, uint64_t tau, uint64_t num_samples)
{
    int rc = fm_fedbuff_begin(b, tau, num_samples);
    if (rc != 0)
        return rc;
    rc = fm_fedbuff_fold_span(b, 0, b->nparams, delta);
    FM_ASSERT(rc == 0); /* the whole vector always fits */
    fm_fedbuff_end(b);
    return 0;
}

void fm_fedbuff_reset(fm_fedbuff_t *b)
{
    memset(b->acc, 0, b->nparams * sizeof(float));
    b->sum_c = 0.0;
    b->mass = 0.0;
    b->count = 0;
    b->open = 0;
}

int fm_fedbuff_take(fm_fedbuff_t *b, float *restrict out)
{
    FM_ASSERT(!b->open);
    if (b->count == 0)
        return FM_ERANGE;
    double inv = 1.0 / b->sum_c; /* sum_c > 0: every c_i >= 1 */
    float *restrict acc = b->acc;
    size_t n = b->nparams;
    /* one pass: write the mean and clear the accumulator for the next buffer */
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)((double)acc[i] * inv);
        acc[i] = 0.0f;
    }
    b->sum_c = 0.0;
    b->mass = 0.0;
    b->count = 0;
    b->stats.takes++;
    return 0;
}

void fm_fedbuff_stats(const fm_fedbuff_t *b, fm_fedbuff_stats_t *out) { *out = b->stats; }

int fm_fedbuff_span_finite(const void *src, size_t numel)
{
    const unsigned char *p = src;
    uint32_t bad = 0;
    /* exponent all ones = infinity or NaN; OR-reduced so that the loop vectorises */
    for (size_t i = 0; i < numel; i++) {
        uint32_t u;
        memcpy(&u, p + i * sizeof u, sizeof u);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return !bad;
}
