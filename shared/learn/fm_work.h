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

/* Log-probabilities (B,10) of the last forward (borrowed, valid until the next forward). */
const float *fm_work_logp(const fm_work_t *w);

#endif
