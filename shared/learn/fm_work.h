/* fm_work: activations and scratch for running one model on up to `max_batch` samples.
 *
 * The model (parameters) is shared and read-only here; each thread owns one fm_work_t.
 * Nothing allocates after fm_work_new(). Inputs are (B,1,28,28) images, labels in [0,10). */
#ifndef FM_WORK_H
#define FM_WORK_H

#include <stdint.h>

#include "fm_model.h"
#include "fm_rng.h"

typedef struct fm_work fm_work_t;

/* Workspace for `m` and batches of up to max_batch samples. NULL and *err = -ENOMEM or
 * FM_EARG (max_batch < 1) on failure. Caller owns it (fm_work_destroy). The workspace
 * must only be used with models of the same architecture. */
fm_work_t *fm_work_new(const fm_model_t *m, int max_batch, int *err);
void fm_work_destroy(fm_work_t **p);

int fm_work_max_batch(const fm_work_t *w);

/* Forward B <= max_batch samples. With train != 0 dropout is active and draws from rng
 * (rng unused otherwise, may be NULL). Returns the SUM over the batch of the NLL loss when
 * y is given, else 0. */
double fm_work_forward(fm_work_t *w, const fm_model_t *m, const float *x, const uint8_t *y, int B,
                       int train, fm_rng_t *rng);

/* Backward of the last forward (which must have had labels): grads (nparams floats, the
 * model's flat layout) += d(scale * sum loss)/d(params). Use scale = 1/total batch size. */
void fm_work_backward(fm_work_t *w, const fm_model_t *m, float *grads, float scale);

/* Per-example gradients, for DP-SGD's per-example clipping (fm_engine_clipped_sum).
 *
 * fm_work_example_floats: floats of the `ex` buffer fm_work_example_norms needs for B samples
 * (caller's): each sample's gradient of the cnn's convolution layers (conv1 and conv2,
 * 18,816 floats per sample); 0 for logreg and mlp.
 *
 * fm_work_example_norms: after a forward with labels, sqnorm[b] (B doubles) = the squared L2
 * norm, over every parameter, of the gradient of sample b's own loss (not divided by the
 * batch size). Dense layers from the layer structure: a dense layer's gradient for sample b
 * is the outer product dout_b inp_b^T plus the bias dout_b, of squared norm
 * ||dout_b||^2 (||inp_b||^2 + 1) (Goodfellow 2015), so no per-sample weight gradient is
 * formed; the cnn's convolutions (weights shared over positions) by computing each sample's
 * gradient into ex. Overwrites the activation gradients.
 *
 * fm_work_backward_weighted: backward of the last forward with sample b's loss weighted by
 * weight[b]: grads += sum_b weight[b] * grad(loss_b). `ex`: the buffer filled by
 * fm_work_example_norms after this same forward (the cnn's convolution gradients are then
 * taken from it, not recomputed), or NULL (a full backward). */
size_t fm_work_example_floats(const fm_model_t *m, int B);
void fm_work_example_norms(fm_work_t *w, const fm_model_t *m, double *sqnorm, float *ex);
void fm_work_backward_weighted(fm_work_t *w, const fm_model_t *m, float *grads,
                               const float *weight, const float *ex);

/* Log-probabilities (B,10) of the last forward (borrowed, valid until the next forward). */
const float *fm_work_logp(const fm_work_t *w);

#endif
