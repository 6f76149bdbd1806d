#include "fm_engine.h"

#include "fm_hot.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fm_work.h"

#define SAMPLE_FLOATS (FM_IMAGE_H * FM_IMAGE_W)

typedef enum { JOB_NONE, JOB_GRAD, JOB_CLIP, JOB_REDUCE, JOB_EVAL, JOB_QUIT } s_job_t;

/* What one worker does and owns. */
typedef struct {
    fm_work_t *work;  /* activations */
    float *grads;     /* private gradient (worker 0: the engine's result buffer) */
    float *xbuf;      /* gathered inputs (max part size x 784) */
    uint8_t *ybuf;    /* gathered labels */
    double loss;      /* result of the last job */
    fm_eval_t eval;   /* result of the last evaluation job */
    pthread_t thread; /* unused for worker 0 */
    /* per-example clipping (JOB_CLIP), allocated on first use */
    double *sqnorm;   /* max part: squared per-example gradient norms */
    float *factor;    /* max part: clip factors */
    float *ex;        /* FM_CLIP_FAST: fm_work_example_floats(max part) */
    float *one;       /* FM_CLIP_EXACT: one sample's gradient (nparams) */
    uint32_t clipped; /* result of the last JOB_CLIP: samples scaled down */
} s_worker_t;

struct fm_engine {
    int threads;         /* workers, including the calling thread */
    int max_part;        /* capacity of one worker's part */
    size_t nparams;      /* gradient length */
    s_worker_t *workers; /* threads entries */
    int started;         /* helper threads running */
    /* the current job, published under lock with a new generation number */
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    _Atomic uint64_t generation; /* bumped (under lock) for every job */
    _Atomic int pending;         /* helper workers still busy with the job */
    s_job_t job;
    const fm_model_t *m;
    const float *x;
    const uint8_t *y;
    const uint32_t *idx;
    uint32_t n;   /* samples in the job */
    uint8_t *hit; /* JOB_EVAL: per-sample "classified right" flags, or NULL */
    int train;
    uint64_t seed;
    double clip;         /* JOB_CLIP: C */
    fm_clip_mode_t mode; /* JOB_CLIP: how per-example gradients are had */
};

/* Samples [begin, end) of the job that worker t handles. */
static void s_part(const fm_engine_t *e, int t, uint32_t n, uint32_t *begin, uint32_t *end)
{
    uint32_t base = n / (uint32_t)e->threads, extra = n % (uint32_t)e->threads;
    *begin = (uint32_t)t * base + ((uint32_t)t < extra ? (uint32_t)t : extra);
    *end = *begin + base + ((uint32_t)t < extra ? 1 : 0);
}

static void s_gather(s_worker_t *w, const fm_engine_t *e, uint32_t begin, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint32_t s = e->idx ? e->idx[begin + i] : begin + i;
        memcpy(w->xbuf + (size_t)i * SAMPLE_FLOATS, e->x + (size_t)s * SAMPLE_FLOATS,
               sizeof(float) * SAMPLE_FLOATS);
        w->ybuf[i] = e->y[s];
    }
}

/* Start worker t's part of a step: its samples [*begin, *end), gradient and loss zeroed,
 * its dropout stream seeded. 0 when the part is empty (nothing more to do). */
static int s_worker_start(fm_engine_t *e, int t, uint32_t *begin, uint32_t *end, fm_rng_t *rng)
{
    s_worker_t *w = &e->workers[t];
    s_part(e, t, e->n, begin, end);
    memset(w->grads, 0, sizeof(float) * e->nparams);
    w->loss = 0.0;
    w->clipped = 0;
    if (*end == *begin)
        return 0;
    fm_rng_seed(rng, e->seed, (uint64_t)t + 1);
    return 1;
}

static void s_do_grad(fm_engine_t *e, int t)
{
    s_worker_t *w = &e->workers[t];
    uint32_t begin, end;
    fm_rng_t rng;
    if (!s_worker_start(e, t, &begin, &end, &rng))
        return;
    s_gather(w, e, begin, end - begin);
    w->loss = fm_work_forward(w->work, e->m, w->xbuf, w->ybuf, (int)(end - begin), e->train,
                              &rng);
    fm_work_backward(w->work, e->m, w->grads, 1.0f / (float)e->n);
}

/* Sum the helper workers' gradients into worker 0's, on slice t of the vector. */
FM_HOT static void s_do_reduce(fm_engine_t *e, int t)
{
    size_t chunk = (e->nparams + (size_t)e->threads - 1) / (size_t)e->threads;
    size_t lo = (size_t)t * chunk, hi = lo + chunk < e->nparams ? lo + chunk : e->nparams;
    float *out = e->workers[0].grads;
    for (int k = 1; k < e->threads; k++) {
        const float *g = e->workers[k].grads;
        for (size_t i = lo; i < hi; i++)
            out[i] += g[i];
    }
}

static void s_do_eval(fm_engine_t *e, int t)
{
    s_worker_t *w = &e->workers[t];
    uint32_t begin, end;
    s_part(e, t, e->n, &begin, &end);
    memset(&w->eval, 0, sizeof w->eval);
    double loss = 0.0;
    for (uint32_t b = begin; b < end; b += (uint32_t)e->max_part) {
        uint32_t count = end - b < (uint32_t)e->max_part ? end - b : (uint32_t)e->max_part;
        s_gather(w, e, b, count);
        loss += fm_work_forward(w->work, e->m, w->xbuf, w->ybuf, (int)count, 0, NULL);
        const float *lp = fm_work_logp(w->work);
        for (uint32_t i = 0; i < count; i++) {
            int best = 0;
            for (int c = 1; c < FM_NCLASSES; c++)
                if (lp[i * FM_NCLASSES + c] > lp[i * FM_NCLASSES + best])
                    best = c;
            uint8_t label = w->ybuf[i];
            if (e->hit)
                e->hit[b + i] = best == label;
            w->eval.class_total[label]++;
            if (best == label) {
                w->eval.class_correct[label]++;
                w->eval.correct++;
            }
        }
    }
    w->eval.n = end - begin;
    w->eval.loss = loss;
}

/* min(1, C / ||g||) from the squared norm (1 for a zero gradient). */
static float s_clip_factor(double sqnorm, double clip)
{
    double norm = sqrt(sqnorm);
    return norm > clip ? (float)(clip / norm) : 1.0f;
}

/* Worker t's part of a clipped sum: sum over its samples of min(1, C/||g_i||) g_i. */
static void s_do_clip(fm_engine_t *e, int t)
{
    s_worker_t *w = &e->workers[t];
    uint32_t begin, end;
    fm_rng_t rng;
    if (!s_worker_start(e, t, &begin, &end, &rng))
        return;
    if (e->mode == FM_CLIP_EXACT) {
        /* the reference: every sample alone through the workspace, its gradient formed */
        for (uint32_t i = begin; i < end; i++) {
            s_gather(w, e, i, 1);
            w->loss += fm_work_forward(w->work, e->m, w->xbuf, w->ybuf, 1, e->train, &rng);
            memset(w->one, 0, sizeof(float) * e->nparams);
            fm_work_backward(w->work, e->m, w->one, 1.0f);
            double sq = 0.0;
            for (size_t j = 0; j < e->nparams; j++)
                sq += (double)w->one[j] * w->one[j];
            float f = s_clip_factor(sq, e->clip);
            w->clipped += f < 1.0f;
            for (size_t j = 0; j < e->nparams; j++)
                w->grads[j] += f * w->one[j];
        }
        return;
    }
    int B = (int)(end - begin);
    s_gather(w, e, begin, (uint32_t)B);
    w->loss = fm_work_forward(w->work, e->m, w->xbuf, w->ybuf, B, e->train, &rng);
    fm_work_example_norms(w->work, e->m, w->sqnorm, w->ex);
    for (int b = 0; b < B; b++) {
        w->factor[b] = s_clip_factor(w->sqnorm[b], e->clip);
        w->clipped += w->factor[b] < 1.0f;
    }
    fm_work_backward_weighted(w->work, e->m, w->grads, w->factor, w->ex);
}

static void s_run_job(fm_engine_t *e, s_job_t job, int t)
{
    switch (job) {
    case JOB_GRAD: s_do_grad(e, t); break;
    case JOB_CLIP: s_do_clip(e, t); break;
    case JOB_REDUCE: s_do_reduce(e, t); break;
    case JOB_EVAL: s_do_eval(e, t); break;
    default: break;
    }
}

typedef struct {
    fm_engine_t *e;
    int t;
} s_arg_t;

/* Spin iterations before a waiter blocks on its condition variable. A step of a small model
 * takes ~100 us; a futex sleep/wake round trip costs tens of us on a VM, twice per step, so
 * waiters first spin for roughly 20-50 us (bounded: an idle engine sleeps). */
#define SPIN_ITERS 20000

static inline void s_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *s_thread_main(void *arg)
{
    s_arg_t a = *(s_arg_t *)arg;
    free(arg);
    fm_engine_t *e = a.e;
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_ITERS && atomic_load(&e->generation) == seen; i++)
            s_cpu_relax();
        if (atomic_load(&e->generation) == seen) {
            pthread_mutex_lock(&e->lock);
            while (atomic_load(&e->generation) == seen)
                pthread_cond_wait(&e->wake, &e->lock);
            pthread_mutex_unlock(&e->lock);
        }
        seen = atomic_load(&e->generation);
        s_job_t job = e->job;
        if (job == JOB_QUIT)
            return NULL;
        s_run_job(e, job, a.t);
        if (atomic_fetch_sub(&e->pending, 1) == 1) {
            pthread_mutex_lock(&e->lock);
            pthread_cond_signal(&e->done);
            pthread_mutex_unlock(&e->lock);
        }
    }
}

/* Run `job` on every worker (the caller is worker 0) and wait for all. The job fields are
 * written before the generation bump (a seq_cst atomic), which publishes them. */
static void s_dispatch(fm_engine_t *e, s_job_t job)
{
    if (e->threads == 1) {
        s_run_job(e, job, 0);
        return;
    }
    e->job = job;
    atomic_store(&e->pending, e->threads - 1);
    pthread_mutex_lock(&e->lock);
    atomic_fetch_add(&e->generation, 1);
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->lock);
    if (job == JOB_QUIT)
        return; /* helpers exit without reporting: fm_engine_destroy joins them */
    s_run_job(e, job, 0);
    for (int i = 0; i < SPIN_ITERS && atomic_load(&e->pending) > 0; i++)
        s_cpu_relax();
    if (atomic_load(&e->pending) > 0) {
        pthread_mutex_lock(&e->lock);
        while (atomic_load(&e->pending) > 0)
            pthread_cond_wait(&e->done, &e->lock);
        pthread_mutex_unlock(&e->lock);
    }
}

fm_engine_t *fm_engine_new(const fm_model_t *m, int threads, int max_batch, int *err)
{
    int rc = -ENOMEM;
    if (threads < 1 || threads > 256 || max_batch < 1) {
        if (err)
            *err = FM_EARG;
        return NULL;
    }
    if (fm_model_arch(m) == FM_ARCH_SPEC) { /* a layout without a forward pass */
        if (err)
            *err = FM_EMODEL;
        return NULL;
    }
    fm_engine_t *e = calloc(1, sizeof *e);
    if (!e)
        goto fail;
    e->threads = threads;
    e->max_part = (max_batch + threads - 1) / threads;
    e->nparams = fm_model_nparams(m);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->done, NULL);
    e->workers = calloc((size_t)threads, sizeof *e->workers);
    if (!e->workers)
        goto fail;
    for (int t = 0; t < threads; t++) {
        s_worker_t *w = &e->workers[t];
        w->work = fm_work_new(m, e->max_part, &rc);
        w->grads = aligned_alloc(64, (e->nparams * sizeof(float) + 63) / 64 * 64);
        w->xbuf = malloc(sizeof(float) * SAMPLE_FLOATS * (size_t)e->max_part);
        w->ybuf = malloc((size_t)e->max_part);
        if (!w->work || !w->grads || !w->xbuf || !w->ybuf) {
            rc = -ENOMEM;
            goto fail;
        }
        memset(w->grads, 0, sizeof(float) * e->nparams);
    }
    for (int t = 1; t < threads; t++) {
        s_arg_t *a = malloc(sizeof *a);
        if (!a)
            goto fail;
        a->e = e;
        a->t = t;
        int prc = pthread_create(&e->workers[t].thread, NULL, s_thread_main, a);
        if (prc != 0) {
            free(a);
            rc = -prc;
            goto fail; /* threads 1..t-1 are running: destroy stops them */
        }
        e->started = t;
    }
    return e;
fail:
    fm_engine_destroy(&e);
    if (err)
        *err = rc;
    return NULL;
}

void fm_engine_destroy(fm_engine_t **p)
{
    if (!p || !*p)
        return;
    fm_engine_t *e = *p;
    if (e->started > 0) {
        int saved = e->threads;
        e->threads = e->started + 1;
        s_dispatch(e, JOB_QUIT);
        for (int t = 1; t <= e->started; t++)
            pthread_join(e->workers[t].thread, NULL);
        e->threads = saved;
    }
    if (e->workers)
        for (int t = 0; t < e->threads; t++) {
            fm_work_destroy(&e->workers[t].work);
            free(e->workers[t].grads);
            free(e->workers[t].xbuf);
            free(e->workers[t].ybuf);
            free(e->workers[t].sqnorm);
            free(e->workers[t].factor);
            free(e->workers[t].ex);
            free(e->workers[t].one);
        }
    free(e->workers);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->done);
    free(e);
    *p = NULL;
}

int fm_engine_threads(const fm_engine_t *e) { return e->threads; }
int fm_engine_max_batch(const fm_engine_t *e) { return e->max_part * e->threads; }
float *fm_engine_grads(fm_engine_t *e) { return e->workers[0].grads; }

double fm_engine_gradient(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                          const uint32_t *idx, int B, int train, uint64_t dropout_seed)
{
    FM_ASSERT(B >= 1 && B <= e->max_part * e->threads);
    e->m = m;
    e->x = x;
    e->y = y;
    e->idx = idx;
    e->n = (uint32_t)B;
    e->train = train;
    e->seed = dropout_seed;
    s_dispatch(e, JOB_GRAD);
    if (e->threads > 1)
        s_dispatch(e, JOB_REDUCE);
    double loss = 0.0;
    for (int t = 0; t < e->threads; t++)
        loss += e->workers[t].loss;
    return loss / B;
}

/* The buffers JOB_CLIP needs in `mode`, allocated once. 0 or -ENOMEM. */
static int s_clip_buffers(fm_engine_t *e, const fm_model_t *m, fm_clip_mode_t mode)
{
    size_t exn = fm_work_example_floats(m, e->max_part);
    for (int t = 0; t < e->threads; t++) {
        s_worker_t *w = &e->workers[t];
        if (!w->sqnorm && !(w->sqnorm = malloc(sizeof(double) * (size_t)e->max_part)))
            return -ENOMEM;
        if (!w->factor && !(w->factor = malloc(sizeof(float) * (size_t)e->max_part)))
            return -ENOMEM;
        if (mode == FM_CLIP_FAST && exn > 0 && !w->ex &&
            !(w->ex = aligned_alloc(64, (exn * sizeof(float) + 63) / 64 * 64)))
            return -ENOMEM;
        if (mode == FM_CLIP_EXACT && !w->one &&
            !(w->one = aligned_alloc(64, (e->nparams * sizeof(float) + 63) / 64 * 64)))
            return -ENOMEM;
    }
    return 0;
}

int fm_engine_clipped_sum(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                          const uint32_t *idx, int B, int train, uint64_t dropout_seed,
                          double clip, fm_clip_mode_t mode, fm_clip_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (B < 1 || B > e->max_part * e->threads || !(clip > 0.0) || isinf(clip) ||
        (mode != FM_CLIP_FAST && mode != FM_CLIP_EXACT))
        return FM_EARG;
    int rc = s_clip_buffers(e, m, mode);
    if (rc != 0)
        return rc;
    e->m = m;
    e->x = x;
    e->y = y;
    e->idx = idx;
    e->n = (uint32_t)B;
    e->train = train;
    e->seed = dropout_seed;
    e->clip = clip;
    e->mode = mode;
    s_dispatch(e, JOB_CLIP);
    if (e->threads > 1)
        s_dispatch(e, JOB_REDUCE);
    for (int t = 0; t < e->threads; t++) {
        out->loss += e->workers[t].loss;
        out->clipped += e->workers[t].clipped;
    }
    return 0;
}

void fm_engine_evaluate(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                        const uint32_t *idx, uint32_t n, fm_eval_t *out)
{
    fm_engine_evaluate_hits(e, m, x, y, idx, n, out, NULL);
}

void fm_engine_evaluate_hits(fm_engine_t *e, const fm_model_t *m, const float *x,
                             const uint8_t *y, const uint32_t *idx, uint32_t n, fm_eval_t *out,
                             uint8_t *hit)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return;
    e->m = m;
    e->x = x;
    e->y = y;
    e->idx = idx;
    e->n = n;
    e->hit = hit;
    s_dispatch(e, JOB_EVAL);
    e->hit = NULL;
    double loss = 0.0;
    for (int t = 0; t < e->threads; t++) {
        const fm_eval_t *w = &e->workers[t].eval;
        out->n += w->n;
        out->correct += w->correct;
        loss += w->loss;
        for (int c = 0; c < FM_NCLASSES; c++) {
            out->class_total[c] += w->class_total[c];
            out->class_correct[c] += w->class_correct[c];
        }
    }
    out->loss = loss / n;
    out->accuracy = (double)out->correct / n;
}
