#include "fm_server_opt.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fm_server_opt {
    fm_server_opt_kind_t kind;
    size_t n;
    fm_server_opt_config_t cfg;
    float *state; /* fm_server_opt_state_len(kind, n) floats (owned), NULL for fedavg */
    float *m;     /* state + 0, or NULL */
    float *v;     /* state + n for fedadam/fedyogi, or NULL */
    uint64_t rejected;
};

static const char *const s_names[] = {
    [FM_SERVER_OPT_FEDAVG] = "fedavg",
    [FM_SERVER_OPT_FEDAVGM] = "fedavgm",
    [FM_SERVER_OPT_FEDADAM] = "fedadam",
    [FM_SERVER_OPT_FEDYOGI] = "fedyogi",
};
#define S_NKINDS ((int)(sizeof s_names / sizeof s_names[0]))

static int s_kind_valid(fm_server_opt_kind_t kind)
{
    return (int)kind >= 0 && (int)kind < S_NKINDS;
}

const char *fm_server_opt_kind_name(fm_server_opt_kind_t kind)
{
    return s_kind_valid(kind) ? s_names[kind] : "?";
}

int fm_server_opt_parse_kind(const char *name, fm_server_opt_kind_t *kind, fm_errmsg_t *e)
{
    for (int i = 0; name && i < S_NKINDS; i++)
        if (strcmp(name, s_names[i]) == 0) {
            *kind = (fm_server_opt_kind_t)i;
            return 0;
        }
    return fm_errmsg_set(e, FM_EARG,
                         "server optimizer '%.64s': unknown "
                         "(fedavg|fedavgm|fedadam|fedyogi)",
                         name ? name : "(null)");
}

static int s_adaptive(fm_server_opt_kind_t kind)
{
    return kind == FM_SERVER_OPT_FEDADAM || kind == FM_SERVER_OPT_FEDYOGI;
}

int fm_server_opt_config_check(fm_server_opt_kind_t kind, const fm_server_opt_config_t *cfg,
                               fm_errmsg_t *e)
{
    if (!s_kind_valid(kind))
        return fm_errmsg_set(e, FM_EARG, "server optimizer kind %d: unknown", (int)kind);
    const char *name = s_names[kind];
    if (!(cfg->eta > 0.0) || !isfinite(cfg->eta))
        return fm_errmsg_set(e, FM_EARG, "%s: eta %g: must be a finite number > 0", name,
                             cfg->eta);
    if (kind != FM_SERVER_OPT_FEDAVG && !(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0))
        return fm_errmsg_set(e, FM_EARG, "%s: beta1 %g: must be in [0, 1)", name, cfg->beta1);
    if (s_adaptive(kind)) {
        if (!(cfg->beta2 >= 0.0 && cfg->beta2 < 1.0))
            return fm_errmsg_set(e, FM_EARG, "%s: beta2 %g: must be in [0, 1)", name, cfg->beta2);
        if (!(cfg->tau > 0.0) || !isfinite(cfg->tau))
            return fm_errmsg_set(e, FM_EARG, "%s: tau %g: must be a finite number > 0", name,
                                 cfg->tau);
    }
    return 0;
}

size_t fm_server_opt_state_len(fm_server_opt_kind_t kind, size_t n)
{
    switch (kind) {
    case FM_SERVER_OPT_FEDAVGM: return n;
    case FM_SERVER_OPT_FEDADAM:
    case FM_SERVER_OPT_FEDYOGI: return n > SIZE_MAX / 2 ? SIZE_MAX : 2 * n;
    case FM_SERVER_OPT_FEDAVG:
    default: return 0;
    }
}

fm_server_opt_t *fm_server_opt_new(fm_server_opt_kind_t kind, size_t n,
                                   const fm_server_opt_config_t *cfg, int *err)
{
    int rc = FM_EARG;
    fm_server_opt_t *o = NULL;
    if (fm_server_opt_config_check(kind, cfg, NULL) != 0)
        goto fail;
    rc = -ENOMEM;
    size_t len = fm_server_opt_state_len(kind, n);
    if (len > SIZE_MAX / sizeof(float))
        goto fail;
    o = calloc(1, sizeof *o);
    if (!o)
        goto fail;
    o->kind = kind;
    o->n = n;
    o->cfg = *cfg;
    if (kind != FM_SERVER_OPT_FEDAVG) {
        o->state = malloc((len ? len : 1) * sizeof(float));
        if (!o->state)
            goto fail;
        o->m = o->state;
        o->v = s_adaptive(kind) ? o->state + n : NULL;
    }
    fm_server_opt_reset(o);
    return o;
fail:
    if (o)
        free(o->state);
    free(o);
    if (err)
        *err = rc;
    return NULL;
}

void fm_server_opt_destroy(fm_server_opt_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->state);
    free(*p);
    *p = NULL;
}

fm_server_opt_kind_t fm_server_opt_kind(const fm_server_opt_t *o) { return o->kind; }
size_t fm_server_opt_nparams(const fm_server_opt_t *o) { return o->n; }
float *fm_server_opt_state(fm_server_opt_t *o) { return o->state; }
uint64_t fm_server_opt_rejected(const fm_server_opt_t *o) { return o->rejected; }

void fm_server_opt_reset(fm_server_opt_t *o)
{
    if (o->m)
        memset(o->m, 0, o->n * sizeof(float));
    if (o->v) {
        float v0 = (float)(o->cfg.tau * o->cfg.tau);
        for (size_t i = 0; i < o->n; i++)
            o->v[i] = v0;
    }
}

int fm_server_opt_state_check(const fm_server_opt_t *o, fm_errmsg_t *e)
{
    const char *name = s_names[o->kind];
    for (size_t i = 0; o->m && i < o->n; i++)
        if (!isfinite(o->m[i]))
            return fm_errmsg_set(e, FM_ENONFINITE, "%s state: m[%zu] = %g: not finite", name, i,
                                 o->m[i]);
    for (size_t i = 0; o->v && i < o->n; i++) {
        if (!isfinite(o->v[i]))
            return fm_errmsg_set(e, FM_ENONFINITE, "%s state: v[%zu] = %g: not finite", name, i,
                                 o->v[i]);
        if (o->v[i] < 0.0f)
            return fm_errmsg_set(e, FM_ERANGE, "%s state: v[%zu] = %g: must be >= 0", name, i,
                                 o->v[i]);
    }
    return 0;
}

/* New values of one element, each computed in double and rounded once to float. */
typedef struct {
    float w, m, v;
} s_elem_t;

static inline __attribute__((always_inline)) s_elem_t s_elem_k(const fm_server_opt_config_t *c,
                                                               fm_server_opt_kind_t kind,
                                                               double beta1, double w, double d,
                                                               double m, double v)
{
    s_elem_t r = {0.0f, 0.0f, 0.0f};
    switch (kind) {
    case FM_SERVER_OPT_FEDAVG: r.w = (float)(w + c->eta * d); break;
    case FM_SERVER_OPT_FEDAVGM:
        r.m = (float)(beta1 * m + d);
        r.w = (float)(w + c->eta * (double)r.m);
        break;
    case FM_SERVER_OPT_FEDADAM:
    case FM_SERVER_OPT_FEDYOGI: {
        double d2 = d * d;
        r.m = (float)(beta1 * m + (1.0 - beta1) * d);
        if (kind == FM_SERVER_OPT_FEDADAM) {
            r.v = (float)(c->beta2 * v + (1.0 - c->beta2) * d2);
        } else {
            double diff = v - d2;
            double sign = (diff > 0.0) - (diff < 0.0);
            r.v = (float)(v - (1.0 - c->beta2) * d2 * sign);
        }
        r.w = (float)(w + c->eta * (double)r.m / (sqrt((double)r.v) + c->tau));
        break;
    }
    }
    return r;
}

/* 1 unless x is NaN or infinite; a comparison, so the loops below vectorise. */
static inline int s_finite(float x) { return fabsf(x) <= FLT_MAX; }

/* The two passes for one kind of optimiser. Inlined with a constant `kind`, so each
 * optimiser gets its own branch-free loops (the kind switch and the m/v tests leave them). */
static inline __attribute__((always_inline)) int s_apply_kind(fm_server_opt_t *o, float *w,
                                                              const float *delta_bar,
                                                              double beta1,
                                                              fm_server_opt_kind_t kind)
{
    size_t n = o->n;
    float *m = o->m, *v = o->v;
    int has_m = kind != FM_SERVER_OPT_FEDAVG, has_v = kind >= FM_SERVER_OPT_FEDADAM;
    FM_ASSERT(o->kind == kind && (!has_m || m) && (!has_v || v));
    /* pass 1: compute everything, write nothing; any non-finite input or result rejects */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        s_elem_t r = s_elem_k(&o->cfg, kind, beta1, w[i], delta_bar[i], has_m ? m[i] : 0.0f,
                              has_v ? v[i] : 0.0f);
        bad |= !s_finite(delta_bar[i]) | !s_finite(r.w) | !s_finite(r.m) | !s_finite(r.v);
    }
    if (bad) {
        o->rejected++;
        return FM_ENONFINITE;
    }
    /* pass 2: the same computation on the same inputs, stored */
    for (size_t i = 0; i < n; i++) {
        s_elem_t r = s_elem_k(&o->cfg, kind, beta1, w[i], delta_bar[i], has_m ? m[i] : 0.0f,
                              has_v ? v[i] : 0.0f);
        w[i] = r.w;
        if (has_m)
            m[i] = r.m;
        if (has_v)
            v[i] = r.v;
    }
    return 0;
}

int fm_server_opt_apply_beta1(fm_server_opt_t *o, float *w, const float *delta_bar, double beta1)
{
    if (!(beta1 >= 0.0 && beta1 < 1.0))
        return FM_EARG;
    switch (o->kind) {
    case FM_SERVER_OPT_FEDAVG: return s_apply_kind(o, w, delta_bar, beta1, FM_SERVER_OPT_FEDAVG);
    case FM_SERVER_OPT_FEDAVGM:
        return s_apply_kind(o, w, delta_bar, beta1, FM_SERVER_OPT_FEDAVGM);
    case FM_SERVER_OPT_FEDADAM:
        return s_apply_kind(o, w, delta_bar, beta1, FM_SERVER_OPT_FEDADAM);
    case FM_SERVER_OPT_FEDYOGI:
        return s_apply_kind(o, w, delta_bar, beta1, FM_SERVER_OPT_FEDYOGI);
    }
    FM_ASSERT(!"unknown server optimiser kind");
    return FM_EARG;
}

/* fedavg has no momentum: its config's beta1 is not checked, so it counts as 0 */
double fm_server_opt_beta1(const fm_server_opt_t *o)
{
    return o->kind == FM_SERVER_OPT_FEDAVG ? 0.0 : o->cfg.beta1;
}

int fm_server_opt_apply(fm_server_opt_t *o, float *w, const float *delta_bar)
{
    return fm_server_opt_apply_beta1(o, w, delta_bar, fm_server_opt_beta1(o));
}
