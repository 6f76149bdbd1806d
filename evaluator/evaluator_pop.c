#include "evaluator_pop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define S_SAMPLE_FLOATS (FM_IMAGE_H * FM_IMAGE_W)

struct eval_pop {
    uint32_t nclients;
    uint32_t *offsets; /* nclients + 1: client k's samples are [offsets[k], offsets[k+1]) */
    uint32_t nsamples; /* offsets[nclients] */
    float *x;          /* nsamples * 784 normalised pixels, client by client (owned) */
    uint8_t *y;        /* nsamples labels (owned) */
    uint8_t *hit;      /* nsamples: 1 if the last scored model classified it right */
    uint32_t *correct; /* nclients: per-client counts of the last score */
    uint32_t *total;   /* nclients: slice sizes */
    double *scratch;   /* nclients doubles for eval_pop_summarize */
};

/* ---- statistics ------------------------------------------------------------------------- */

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

uint32_t eval_pop_summarize(const uint32_t *correct, const uint32_t *total, uint32_t nclients,
                            double threshold, double *scratch, eval_pop_summary_t *out)
{
    memset(out, 0, sizeof *out);
    out->threshold = threshold;
    uint32_t n = 0, below = 0;
    double sum = 0.0;
    for (uint32_t k = 0; k < nclients; k++) {
        if (total[k] == 0)
            continue;
        FM_ASSERT(correct[k] <= total[k]);
        double acc = (double)correct[k] / total[k];
        if (n == 0 || acc < out->min) { /* strict: the lowest id wins ties */
            out->min = acc;
            out->worst = k;
        }
        sum += acc;
        below += acc < threshold;
        scratch[n++] = acc;
    }
    out->clients = n;
    if (n == 0)
        return 0;
    qsort(scratch, n, sizeof *scratch, s_cmp_double);
    out->mean = sum / n;
    out->p10 = scratch[(n + 9) / 10 - 1];
    out->below = (double)below / n;
    return n;
}

/* ---- the scorer ------------------------------------------------------------------------- */

eval_pop_t *eval_pop_new(const fm_dataset_t *ds, const fm_partition_t *held, int *err)
{
    FM_ASSERT(ds && held);
    int rc = -ENOMEM;
    eval_pop_t *self = calloc(1, sizeof *self);
    if (!self)
        goto cleanup;
    uint32_t nc = held->nclients, ns = held->offsets[nc];
    self->nclients = nc;
    self->nsamples = ns;
    self->offsets = malloc(((size_t)nc + 1) * sizeof *self->offsets);
    self->x = malloc(((size_t)ns + 1) * S_SAMPLE_FLOATS * sizeof(float));
    self->y = malloc((size_t)ns + 1);
    self->hit = calloc((size_t)ns + 1, 1);
    self->correct = calloc((size_t)nc + 1, sizeof *self->correct);
    self->total = calloc((size_t)nc + 1, sizeof *self->total);
    self->scratch = malloc(((size_t)nc + 1) * sizeof *self->scratch);
    if (!self->offsets || !self->x || !self->y || !self->hit || !self->correct || !self->total ||
        !self->scratch)
        goto cleanup;
    memcpy(self->offsets, held->offsets, ((size_t)nc + 1) * sizeof *self->offsets);
    for (uint32_t k = 0; k < nc; k++)
        self->total[k] = held->offsets[k + 1] - held->offsets[k];
    for (uint32_t i = 0; i < ns; i++) {
        uint32_t s = held->indices[i];
        FM_ASSERT(s < ds->n);
        memcpy(self->x + (size_t)i * S_SAMPLE_FLOATS, ds->x + (size_t)s * S_SAMPLE_FLOATS,
               S_SAMPLE_FLOATS * sizeof(float));
        self->y[i] = ds->y[s];
    }
    rc = 0;
cleanup:
    if (rc != 0) {
        if (err)
            *err = rc;
        eval_pop_destroy(&self);
    }
    return self;
}

eval_pop_t *eval_pop_load(const fm_config_t *cfg, int *err, fm_errmsg_t *e)
{
    const fm_cfg_federation_t *f = &cfg->federation;
    fm_dataset_t *ds = NULL;
    fm_partition_t *train = NULL, *held = NULL;
    eval_pop_t *self = NULL;
    fm_errmsg_t why = {{0}};
    int rc = 0;
    ds = fm_dataset_load_dir(f->data_dir, "train", FM_FASHION_MEAN, FM_FASHION_STD, &rc, e);
    if (rc != 0)
        goto cleanup;
    if (ds->rows != FM_IMAGE_H || ds->cols != FM_IMAGE_W) {
        rc = fm_errmsg_set(e, FM_ESHAPE, "%s/train: images of %ux%u, expected 28x28", f->data_dir,
                           ds->rows, ds->cols);
        goto cleanup;
    }
    if ((rc = fm_partition_clients(ds, f->partition, (uint32_t)f->num_clients, f->seed,
                                   f->holdout, &train, &held, &why)) != 0) {
        fm_errmsg_set(e, rc, "federation.%s", why.msg);
        goto cleanup;
    }
    if (!(self = eval_pop_new(ds, held, &rc))) {
        fm_errmsg_set(e, rc, "population scorer (%u held-out samples): %s",
                      held->offsets[held->nclients], fm_strerror(rc));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc != 0 && err)
        *err = rc;
    fm_partition_destroy(&held);
    fm_partition_destroy(&train);
    fm_dataset_destroy(&ds);
    return self;
}

void eval_pop_destroy(eval_pop_t **p)
{
    if (!p || !*p)
        return;
    eval_pop_t *self = *p;
    free(self->offsets);
    free(self->x);
    free(self->y);
    free(self->hit);
    free(self->correct);
    free(self->total);
    free(self->scratch);
    free(self);
    *p = NULL;
}

uint32_t eval_pop_nclients(const eval_pop_t *self) { return self->nclients; }
uint32_t eval_pop_samples(const eval_pop_t *self) { return self->nsamples; }

uint32_t eval_pop_scored_clients(const eval_pop_t *self)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < self->nclients; k++)
        n += self->total[k] > 0;
    return n;
}

void eval_pop_client(const eval_pop_t *self, uint32_t k, uint32_t *correct, uint32_t *total)
{
    FM_ASSERT(k < self->nclients);
    *correct = self->correct[k];
    *total = self->total[k];
}

void eval_pop_score(eval_pop_t *self, fm_engine_t *engine, const fm_model_t *m, double threshold,
                    eval_pop_summary_t *out)
{
    fm_eval_t all;
    fm_engine_evaluate_hits(engine, m, self->x, self->y, NULL, self->nsamples, &all, self->hit);
    for (uint32_t k = 0; k < self->nclients; k++) {
        uint32_t c = 0;
        for (uint32_t i = self->offsets[k]; i < self->offsets[k + 1]; i++)
            c += self->hit[i];
        self->correct[k] = c;
    }
    eval_pop_summarize(self->correct, self->total, self->nclients, threshold, self->scratch, out);
}
