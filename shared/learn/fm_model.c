#include "fm_model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fm_rng.h"

struct fm_model {
    fm_arch_t arch;   /* which network */
    const char *name; /* "logreg", "mlp", "cnn" (static), or fp (spec) */
    char fp[FM_SPEC_FP_LEN + 1];
    int nviews;       /* entries in views[] */
    fm_view_t *views; /* state_dict order (owned) */
    char *names;      /* spec: the views' names, back to back (owned), else NULL */
    size_t nparams;   /* floats in params */
    float *params;    /* the flat parameter buffer (owned, 64-byte aligned) */
};

/* A static description of one parameter tensor: name, rank, shape, fan_in for init. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
    int fan_in;
} s_param_t;

static const s_param_t s_logreg[] = {
    {"fc.weight", 2, {10, 784}, 784},
    {"fc.bias", 1, {10}, 784},
};
static const s_param_t s_mlp[] = {
    {"fc1.weight", 2, {200, 784}, 784}, {"fc1.bias", 1, {200}, 784},
    {"fc2.weight", 2, {200, 200}, 200}, {"fc2.bias", 1, {200}, 200},
    {"fc3.weight", 2, {10, 200}, 200},  {"fc3.bias", 1, {10}, 200},
};
static const s_param_t s_cnn[] = {
    {"conv1.weight", 4, {32, 1, 3, 3}, 9},    {"conv1.bias", 1, {32}, 9},
    {"conv2.weight", 4, {64, 32, 3, 3}, 288}, {"conv2.bias", 1, {64}, 288},
    {"fc1.weight", 2, {128, 9216}, 9216},     {"fc1.bias", 1, {128}, 9216},
    {"fc2.weight", 2, {10, 128}, 128},        {"fc2.bias", 1, {10}, 128},
};

static const struct {
    const char *name;
    fm_arch_t arch;
    const s_param_t *params;
    int nparams;
} s_archs[] = {
    {"logreg", FM_ARCH_LOGREG, s_logreg, 2},
    {"mlp", FM_ARCH_MLP, s_mlp, 6},
    {"cnn", FM_ARCH_CNN, s_cnn, 8},
};

const char *fm_arch_name(fm_arch_t arch)
{
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (s_archs[i].arch == arch)
            return s_archs[i].name;
    return arch == FM_ARCH_SPEC ? "spec" : NULL;
}

int fm_arch_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (name && strcmp(name, s_archs[i].name) == 0)
            return 1;
    return 0;
}

/* The flat buffer of `nparams` floats, zeroed: 64-byte aligned, at least 64 bytes. */
static float *s_params_alloc(size_t nparams)
{
    size_t bytes = (nparams * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes);
    return p;
}

fm_model_t *fm_model_new(const char *name, int *err)
{
    int idx = -1;
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (name && strcmp(name, s_archs[i].name) == 0)
            idx = (int)i;
    if (idx < 0) {
        if (err)
            *err = FM_EMODEL;
        return NULL;
    }
    fm_model_t *m = calloc(1, sizeof *m);
    if (!m)
        goto nomem;
    m->arch = s_archs[idx].arch;
    m->name = s_archs[idx].name;
    m->nviews = s_archs[idx].nparams;
    if (!(m->views = calloc((size_t)m->nviews, sizeof *m->views)))
        goto nomem;
    size_t offset = 0;
    for (int i = 0; i < m->nviews; i++) {
        const s_param_t *p = &s_archs[idx].params[i];
        fm_view_t *v = &m->views[i];
        v->name = p->name;
        v->ndim = p->ndim;
        v->numel = 1;
        for (int d = 0; d < p->ndim; d++) {
            v->shape[d] = p->shape[d];
            v->numel *= (size_t)p->shape[d];
        }
        v->offset = offset;
        offset += v->numel;
    }
    m->nparams = offset;
    if (!(m->params = s_params_alloc(m->nparams)))
        goto nomem;
    return m;
nomem:
    fm_model_destroy(&m);
    if (err)
        *err = -ENOMEM;
    return NULL;
}

int fm_spec_name_check(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > FM_SPEC_NAME_MAX)
        return 1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
            return 1;
    return 0;
}

/* Tensors of a spec are checked by s_spec_check: names, ranks, dims, the total. */
static int s_spec_check(const fm_spec_tensor_t *t, int n, size_t *total)
{
    if (!t || n < 1 || n > FM_SPEC_MAX_VIEWS)
        return FM_EARG;
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (fm_spec_name_check(t[i].name) != 0 || t[i].ndim < 0 || t[i].ndim > FM_MAX_DIMS)
            return FM_EARG;
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                return FM_EARG;
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 1 || (uint64_t)t[i].shape[d] > FM_SPEC_MAX_PARAMS)
                return FM_ESHAPE;
            numel *= (size_t)t[i].shape[d]; /* <= 2^28 * 2^28: no overflow before the check */
            if (numel > FM_SPEC_MAX_PARAMS)
                return FM_ESHAPE;
        }
        sum += numel;
        if (sum > FM_SPEC_MAX_PARAMS)
            return FM_ESHAPE;
    }
    if (total)
        *total = sum;
    return 0;
}

/* qsort order of tensor pointers: by name, strcmp ascending. */
static int s_by_name(const void *a, const void *b)
{
    const fm_spec_tensor_t *x = *(const fm_spec_tensor_t *const *)a;
    const fm_spec_tensor_t *y = *(const fm_spec_tensor_t *const *)b;
    return strcmp(x->name, y->name);
}

int fm_model_spec_fingerprint(const fm_spec_tensor_t *t, int n, char out[FM_SPEC_FP_LEN + 1])
{
    /* names and ranks only: sizes are fm_model_new_spec's concern */
    if (!t || n < 1 || n > FM_SPEC_MAX_VIEWS)
        return FM_EARG;
    for (int i = 0; i < n; i++)
        if (fm_spec_name_check(t[i].name) != 0 || t[i].ndim < 0 || t[i].ndim > FM_MAX_DIMS)
            return FM_EARG;
    int rc;
    const fm_spec_tensor_t *sorted[FM_SPEC_MAX_VIEWS];
    size_t cap = 0;
    for (int i = 0; i < n; i++) {
        sorted[i] = &t[i];
        cap += strlen(t[i].name) + 8 + FM_MAX_DIMS * 21;
    }
    qsort(sorted, (size_t)n, sizeof sorted[0], s_by_name);
    char *text = malloc(cap + 1);
    if (!text)
        return -ENOMEM;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(text + k, cap + 1 - k, "%s\tF32\t", sorted[i]->name);
        for (int d = 0; d < sorted[i]->ndim; d++)
            k += (size_t)snprintf(text + k, cap + 1 - k, "%s%" PRId64, d ? "," : "",
                                  sorted[i]->shape[d]);
        text[k++] = '\n';
    }
    unsigned char h[32];
    rc = crypto_generichash(h, sizeof h, (const unsigned char *)text, k, NULL, 0) == 0 ? 0
                                                                                       : FM_EARG;
    free(text);
    if (rc)
        return rc;
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "spec-", 5);
    for (int i = 0; i < 5; i++) {
        out[5 + 2 * i] = hex[h[i] >> 4];
        out[6 + 2 * i] = hex[h[i] & 15];
    }
    out[FM_SPEC_FP_LEN] = '\0';
    return 0;
}

fm_model_t *fm_model_new_spec(const fm_spec_tensor_t *t, int n, int *err)
{
    size_t total = 0, nbytes = 0;
    int rc = s_spec_check(t, n, &total);
    fm_model_t *m = NULL;
    if (rc)
        goto fail;
    rc = -ENOMEM;
    if (!(m = calloc(1, sizeof *m)))
        goto fail;
    m->arch = FM_ARCH_SPEC;
    if ((rc = fm_model_spec_fingerprint(t, n, m->fp)) != 0)
        goto fail;
    m->name = m->fp;
    m->nviews = n;
    for (int i = 0; i < n; i++)
        nbytes += strlen(t[i].name) + 1;
    rc = -ENOMEM;
    if (!(m->views = calloc((size_t)n, sizeof *m->views)) || !(m->names = malloc(nbytes)))
        goto fail;
    size_t offset = 0, at = 0;
    for (int i = 0; i < n; i++) {
        fm_view_t *v = &m->views[i];
        size_t len = strlen(t[i].name) + 1;
        memcpy(m->names + at, t[i].name, len);
        v->name = m->names + at;
        at += len;
        v->ndim = t[i].ndim;
        v->numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            v->shape[d] = t[i].shape[d];
            v->numel *= (size_t)t[i].shape[d];
        }
        v->offset = offset;
        offset += v->numel;
    }
    m->nparams = total;
    if (!(m->params = s_params_alloc(m->nparams)))
        goto fail;
    return m;
fail:
    fm_model_destroy(&m);
    if (err)
        *err = rc;
    return NULL;
}

void fm_model_destroy(fm_model_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->params);
    free((*p)->views);
    free((*p)->names);
    free(*p);
    *p = NULL;
}

void fm_model_init(fm_model_t *m, uint64_t seed)
{
    if (m->arch == FM_ARCH_SPEC)
        return; /* the spec's values are its initial values */
    const s_param_t *table = NULL;
    for (size_t i = 0; i < sizeof s_archs / sizeof s_archs[0]; i++)
        if (s_archs[i].arch == m->arch)
            table = s_archs[i].params;
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 0x1417);
    for (int i = 0; i < m->nviews; i++) {
        /* kaiming_uniform(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in)
         * = 1/sqrt(fan_in); PyTorch's bias bound is the same 1/sqrt(fan_in). */
        double bound = 1.0 / sqrt((double)table[i].fan_in);
        float *w = m->params + m->views[i].offset;
        for (size_t k = 0; k < m->views[i].numel; k++)
            w[k] = (float)((2.0 * fm_rng_uniform(&rng) - 1.0) * bound);
    }
}

const char *fm_model_name(const fm_model_t *m) { return m->name; }
fm_arch_t fm_model_arch(const fm_model_t *m) { return m->arch; }
float *fm_model_params(fm_model_t *m) { return m->params; }
const float *fm_model_params_const(const fm_model_t *m) { return m->params; }
size_t fm_model_nparams(const fm_model_t *m) { return m->nparams; }
int fm_model_nviews(const fm_model_t *m) { return m->nviews; }

const fm_view_t *fm_model_view(const fm_model_t *m, int i)
{
    return i >= 0 && i < m->nviews ? &m->views[i] : NULL;
}

const fm_view_t *fm_model_find(const fm_model_t *m, const char *name)
{
    for (int i = 0; i < m->nviews; i++)
        if (strcmp(m->views[i].name, name) == 0)
            return &m->views[i];
    return NULL;
}

double fm_model_flops_forward(const fm_model_t *m)
{
    switch (m->arch) {
    case FM_ARCH_LOGREG: return 2.0 * 784 * 10;
    case FM_ARCH_MLP: return 2.0 * (784 * 200 + 200 * 200 + 200 * 10);
    case FM_ARCH_CNN:
        return 2.0 * (26.0 * 26 * 32 * 9 + 24.0 * 24 * 64 * 288 + 9216.0 * 128 + 128.0 * 10);
    case FM_ARCH_SPEC: return 0.0;
    }
    return 0.0;
}

int fm_model_all_finite(const fm_model_t *m)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (!isfinite(m->params[i]))
            return 0;
    return 1;
}
