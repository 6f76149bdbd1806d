#include "fm_model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_rng.h"

struct fm_model {
    fm_arch_t arch;                /* which network */
    const char *name;              /* "logreg", "mlp", "cnn" (static) */
    int nviews;                    /* entries used in views[] */
    fm_view_t views[FM_MAX_VIEWS]; /* state_dict order */
    size_t nparams;                /* floats in params */
    float *params;                 /* the flat parameter buffer (owned, 64-byte aligned) */
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
    return NULL;
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
    size_t bytes = (m->nparams * sizeof(float) + 63) / 64 * 64;
    m->params = aligned_alloc(64, bytes);
    if (!m->params)
        goto nomem;
    memset(m->params, 0, bytes);
    return m;
nomem:
    free(m);
    if (err)
        *err = -ENOMEM;
    return NULL;
}

void fm_model_destroy(fm_model_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->params);
    free(*p);
    *p = NULL;
}

void fm_model_init(fm_model_t *m, uint64_t seed)
{
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
