#include "fm_signvote.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fm_signvote {
    size_t nparams;
    double threshold;
    int k;        /* buffer capacity: a vote of fewer drops steps instead of reversing */
    int count;    /* updates voted */
    int32_t *sum; /* S_j; |S_j| <= count */
};

fm_signvote_t *fm_signvote_new(size_t nparams, int k, double threshold, int *err)
{
    int rc = FM_EARG;
    fm_signvote_t *v = NULL;
    if (nparams == 0 || k < 1 || !(threshold >= 0 && threshold <= 1))
        goto cleanup;
    rc = -ENOMEM;
    if (!(v = calloc(1, sizeof *v)) || !(v->sum = calloc(nparams, sizeof *v->sum)))
        goto cleanup;
    v->nparams = nparams;
    v->threshold = threshold;
    v->k = k;
    rc = 0;
cleanup:
    if (rc) {
        fm_signvote_destroy(&v);
        if (err)
            *err = rc;
    }
    return v;
}

void fm_signvote_destroy(fm_signvote_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->sum);
    free(*p);
    *p = NULL;
}

double fm_signvote_threshold(const fm_signvote_t *v) { return v->threshold; }

static inline int32_t s_sign(float x) { return (x > 0.0f) - (x < 0.0f); }

int fm_signvote_fold_span(fm_signvote_t *v, size_t offset, size_t numel, const void *src)
{
    if (offset > v->nparams || numel > v->nparams - offset)
        return FM_ERANGE;
    int32_t *restrict s = v->sum + offset;
    const unsigned char *restrict p = src;
    for (size_t i = 0; i < numel; i++) {
        float x;
        memcpy(&x, p + i * sizeof x, sizeof x);
        s[i] += s_sign(x);
    }
    return 0;
}

int fm_signvote_fold_scatter(fm_signvote_t *v, size_t offset, size_t span, size_t n,
                             const uint32_t *idx, const float *vals)
{
    FM_ASSERT((idx || n == 0) && (vals || n == 0));
    if (offset > v->nparams || span > v->nparams - offset)
        return FM_ERANGE;
    for (size_t j = 0; j < n; j++)
        if (idx[j] >= span)
            return FM_ERANGE;
    int32_t *s = v->sum + offset;
    for (size_t j = 0; j < n; j++)
        s[idx[j]] += s_sign(vals[j]);
    return 0;
}

void fm_signvote_end(fm_signvote_t *v) { v->count++; }

int fm_signvote_count(const fm_signvote_t *v) { return v->count; }

size_t fm_signvote_apply(fm_signvote_t *v, float *delta)
{
    size_t overruled = 0;
    if (v->count == 0)
        return 0;
    /* |S_j| >= theta n, in integers: the smallest agreement that keeps the step */
    double need = ceil(v->threshold * v->count - 1e-9);
    int32_t keep = (int32_t)need;
    int full = v->count >= v->k; /* else dropped, not reversed */
    for (size_t j = 0; j < v->nparams; j++) {
        int32_t a = v->sum[j] < 0 ? -v->sum[j] : v->sum[j];
        if (a < keep) {
            delta[j] = full ? -delta[j] : 0.0f;
            overruled++;
        }
    }
    fm_signvote_reset(v);
    return overruled;
}

void fm_signvote_reset(fm_signvote_t *v)
{
    memset(v->sum, 0, v->nparams * sizeof *v->sum);
    v->count = 0;
}
