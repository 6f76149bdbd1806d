/* fm_engine: forward/backward of one model over a batch on T threads.
 *
 * The batch is split into T contiguous parts; each thread gathers its samples, runs its
 * own fm_work_t and writes its own gradient buffer; the buffers are then summed in
 * parallel into one flat gradient (the model's layout). OpenBLAS itself runs on one thread
 * (fm_blas_setup): parallelism is over samples. With T = 1 no thread is started. */
#ifndef FM_ENGINE_H
#define FM_ENGINE_H

#include <stdint.h>

#include "fm_model.h"

typedef struct fm_engine fm_engine_t;

/* Per-class and overall scores of an evaluation. */
typedef struct {
    uint32_t n;       /* samples scored */
    uint32_t correct; /* argmax == label */
    double loss;      /* mean NLL */
    double accuracy;  /* correct / n */
    uint32_t class_total[FM_NCLASSES];
    uint32_t class_correct[FM_NCLASSES];
} fm_eval_t;

/* Engine for models shaped like `m`, `threads` >= 1 workers, batches up to max_batch.
 * NULL and *err = FM_EARG / FM_EMODEL (a spec model: no forward pass) / -ENOMEM / -errno
 * (thread creation) on failure.
 * Caller owns it (fm_engine_destroy joins the threads). */
fm_engine_t *fm_engine_new(const fm_model_t *m, int threads, int max_batch, int *err);
void fm_engine_destroy(fm_engine_t **p);

int fm_engine_threads(const fm_engine_t *e);

/* Gradient of the mean NLL over B samples: sample i is x[idx[i]*784 ..], label y[idx[i]]
 * (idx NULL: samples 0..B-1). With train != 0 dropout is on, seeded from dropout_seed.
 * The gradient lands in fm_engine_grads() (overwritten). Returns the mean loss. */
double fm_engine_gradient(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                          const uint32_t *idx, int B, int train, uint64_t dropout_seed);

/* How fm_engine_clipped_sum gets each sample's gradient. */
typedef enum {
    FM_CLIP_FAST, /* each worker's samples as one batch; per-example norms from the layer
                   * structure (fm_work_example_norms), then one backward with every sample's
                   * loss weighted by its clip factor */
    FM_CLIP_EXACT /* the reference: every sample alone as a batch of one, its whole gradient
                   * formed, its norm taken, scaled and added */
} fm_clip_mode_t;

typedef struct {
    double loss;      /* SUM of the B samples' losses */
    uint32_t clipped; /* samples whose gradient norm exceeded C (scaled down) */
} fm_clip_result_t;

/* The most samples one fm_engine_gradient / fm_engine_clipped_sum call takes (>= max_batch
 * given to fm_engine_new). */
int fm_engine_max_batch(const fm_engine_t *e);

/* DP-SGD's per-example clipping: for each of the B samples (idx as above) the gradient g_i
 * of its own loss (not divided by B), over ALL parameters, scaled by min(1, clip / ||g_i||)
 * and summed: sum_i min(1, C / ||g_i||) g_i lands in fm_engine_grads() (overwritten). Dropout
 * as in fm_engine_gradient (the two modes draw their masks differently; with B = 1 and one
 * thread they draw the same). 0, or FM_EARG (B outside [1, fm_engine_max_batch], clip not
 * finite and > 0, bad mode), -ENOMEM (the per-example buffers are allocated on the first
 * call: FM_CLIP_FAST, cnn, about 75 KB per sample of a thread's part; FM_CLIP_EXACT, one
 * gradient per thread). */
int fm_engine_clipped_sum(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                          const uint32_t *idx, int B, int train, uint64_t dropout_seed,
                          double clip, fm_clip_mode_t mode, fm_clip_result_t *out);

/* The gradient buffer, nparams floats in the model's layout (borrowed; lives with e). */
float *fm_engine_grads(fm_engine_t *e);

/* Score n samples (idx as above; NULL = 0..n-1) without dropout. */
void fm_engine_evaluate(fm_engine_t *e, const fm_model_t *m, const float *x, const uint8_t *y,
                        const uint32_t *idx, uint32_t n, fm_eval_t *out);

/* fm_engine_evaluate, and per sample: hit[i] = 1 if sample i (the i-th of idx, or of x when
 * idx is NULL) is classified right (argmax == label), else 0. hit has n bytes (caller's). */
void fm_engine_evaluate_hits(fm_engine_t *e, const fm_model_t *m, const float *x,
                             const uint8_t *y, const uint32_t *idx, uint32_t n, fm_eval_t *out,
                             uint8_t *hit);

#endif
