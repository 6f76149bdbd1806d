#include "evaluator_pop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fm_work.h"

#define S_SAMPLE_FLOATS (FM_IMAGE_H * FM_IMAGE_W)
#define S_MAX_THREADS 64

/* One worker: its workspace and, during a call, its thread. */
typedef struct {
    eval_pop_t *self;
    int t;
    fm_work_t *work;
    pthread_t thread;
    int started;
} s_worker_t;

struct eval_pop {
    uint32_t nclients;
    uint32_t *offsets;     /* nclients + 1: client k's samples are [offsets[k], offsets[k+1]) */
    uint32_t nsamples;     /* offsets[nclients] */
    float *x;              /* nsamples * 784 normalised pixels, client by client (owned) */
    uint8_t *y;            /* nsamples labels (owned) */
    uint8_t *hit;          /* nsamples: 1 if the last scored model classified it right */
    uint32_t *correct;     /* nclients: per-client counts of the last score */
    uint32_t *total;       /* nclients: slice sizes */
    double *scratch;       /* nclients doubles for eval_pop_summarize */
    int threads, batch;
    s_worker_t *workers;   /* threads entries */
    const fm_model_t *m;   /* the model of the running call (borrowed) */
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

eval_pop_t *eval_pop_new(const fm_model_t *m, const fm_dataset_t *ds, const fm_partition_t *held,
                         int threads, int batch, int *err)
{
    FM_ASSERT(m && ds && held);
    int rc = -ENOMEM;
    eval_pop_t *self = NULL;
    if (threads < 1 || threads > S_MAX_THREADS || batch < 1) {
        rc = FM_EARG;
        goto cleanup;
    }
    if (!(self = calloc(1, sizeof *self)))
        goto cleanup;
    uint32_t nc = held->nclients, ns = held->offsets[nc];
    self->nclients = nc;
    self->nsamples = ns;
    self->threads = threads;
    self->batch = batch;
    self->offsets = malloc(((size_t)nc + 1) * sizeof *self->offsets);
    self->x = malloc(((size_t)ns + 1) * S_SAMPLE_FLOATS * sizeof(float));
    self->y = malloc((size_t)ns + 1);
    self->hit = calloc((size_t)ns + 1, 1);
    self->correct = calloc((size_t)nc + 1, sizeof *self->correct);
    self->total = calloc((size_t)nc + 1, sizeof *self->total);
    self->scratch = malloc(((size_t)nc + 1) * sizeof *self->scratch);
    self->workers = calloc((size_t)threads, sizeof *self->workers);
    if (!self->offsets || !self->x || !self->y || !self->hit || !self->correct ||
        !self->total || !self->scratch || !self->workers)
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
    for (int t = 0; t < threads; t++) {
        self->workers[t].self = self;
        self->workers[t].t = t;
        if (!(self->workers[t].work = fm_work_new(m, batch, &rc)))
            goto cleanup;
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

eval_pop_t *eval_pop_load(const fm_config_t *cfg, const fm_model_t *m, int threads, int batch,
                          int *err, fm_errmsg_t *e)
{
    const fm_cfg_federation_t *f = &cfg->federation;
    fm_dataset_t *ds = NULL;
    fm_partition_t *part = NULL, *train = NULL, *held = NULL;
    eval_pop_t *self = NULL;
    fm_errmsg_t why = {{0}};
    int rc = fm_dataset_load_dir(&ds, f->data_dir, "train", FM_FASHION_MEAN, FM_FASHION_STD, e);
    if (rc != 0)
        goto cleanup;
    if (ds->rows != FM_IMAGE_H || ds->cols != FM_IMAGE_W) {
        rc = fm_errmsg_set(e, FM_ESHAPE, "%s/train: images of %ux%u, expected 28x28", f->data_dir,
                           ds->rows, ds->cols);
        goto cleanup;
    }
    if ((rc = fm_partition_new(&part, ds, f->partition, (uint32_t)f->num_clients, f->seed,
                               &why)) != 0) {
        fm_errmsg_set(e, rc, "federation.partition %s: %s", f->partition, why.msg);
        goto cleanup;
    }
    if ((rc = fm_partition_holdout(part, f->holdout, f->seed, &train, &held, &why)) != 0) {
        fm_errmsg_set(e, rc, "federation.holdout %g: %s", f->holdout, why.msg);
        goto cleanup;
    }
    if (!(self = eval_pop_new(m, ds, held, threads, batch, &rc))) {
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
    fm_partition_destroy(&part);
    fm_dataset_destroy(&ds);
    return self;
}

void eval_pop_destroy(eval_pop_t **p)
{
    if (!p || !*p)
        return;
    eval_pop_t *self = *p;
    if (self->workers)
        for (int t = 0; t < self->threads; t++)
            fm_work_destroy(&self->workers[t].work);
    free(self->workers);
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

/* Worker t's share: samples [begin, end) of the held-out set, contiguous parts. */
static void s_part(const eval_pop_t *self, int t, uint32_t *begin, uint32_t *end)
{
    uint32_t n = self->nsamples, T = (uint32_t)self->threads;
    uint32_t base = n / T, extra = n % T, ut = (uint32_t)t;
    *begin = ut * base + (ut < extra ? ut : extra);
    *end = *begin + base + (ut < extra ? 1 : 0);
}

/* Score worker w's share: hit[i] = (argmax of the log-probabilities == label). The samples
 * are contiguous, so batches are read in place (no gather). */
static void *s_run(void *arg)
{
    s_worker_t *w = arg;
    eval_pop_t *self = w->self;
    uint32_t begin, end;
    s_part(self, w->t, &begin, &end);
    for (uint32_t b = begin; b < end; b += (uint32_t)self->batch) {
        uint32_t count = end - b < (uint32_t)self->batch ? end - b : (uint32_t)self->batch;
        fm_work_forward(w->work, self->m, self->x + (size_t)b * S_SAMPLE_FLOATS, NULL, (int)count,
                        0, NULL);
        const float *lp = fm_work_logp(w->work);
        for (uint32_t i = 0; i < count; i++) {
            const float *row = lp + (size_t)i * FM_NCLASSES;
            int best = 0;
            for (int c = 1; c < FM_NCLASSES; c++)
                if (row[c] > row[best])
                    best = c;
            self->hit[b + i] = best == self->y[b + i];
        }
    }
    return NULL;
}

void eval_pop_score(eval_pop_t *self, const fm_model_t *m, double threshold,
                    eval_pop_summary_t *out)
{
    self->m = m;
    for (int t = 1; t < self->threads; t++) {
        s_worker_t *w = &self->workers[t];
        w->started = pthread_create(&w->thread, NULL, s_run, w) == 0;
    }
    s_run(&self->workers[0]);
    for (int t = 1; t < self->threads; t++) {
        s_worker_t *w = &self->workers[t];
        if (w->started)
            pthread_join(w->thread, NULL);
        else
            s_run(w); /* no thread: its share runs here */
        w->started = 0;
    }
    self->m = NULL;
    for (uint32_t k = 0; k < self->nclients; k++) {
        uint32_t c = 0;
        for (uint32_t i = self->offsets[k]; i < self->offsets[k + 1]; i++)
            c += self->hit[i];
        self->correct[k] = c;
    }
    eval_pop_summarize(self->correct, self->total, self->nclients, threshold, self->scratch, out);
}
