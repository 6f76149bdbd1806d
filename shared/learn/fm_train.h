/* fm_train: the local training loop (epochs of shuffled mini-batches with the local
 * optimiser) used by `fedmq train` and by trainers on their partition. */
#ifndef FM_TRAIN_H
#define FM_TRAIN_H

#include <stdint.h>

#include "fm_engine.h"
#include "fm_model.h"
#include "fm_optim.h"

typedef struct {
    int epochs;         /* passes over the samples, >= 1 */
    int batch;          /* mini-batch size, >= 1; the last batch of an epoch may be smaller */
    uint64_t seed;      /* shuffling and dropout */
    uint64_t max_steps; /* stop after this many optimiser steps in all, the epoch under way
                         * ending there (its loss over the samples it saw); 0 = no limit */
} fm_train_config_t;

typedef struct {
    double loss;      /* mean training loss of the last (possibly cut) epoch */
    uint64_t steps;   /* optimiser steps taken */
    uint64_t samples; /* samples processed */
    double seconds;   /* wall time */
    int complete;     /* 1: the training ran to its end (every epoch, or cfg->max_steps
                       * steps); 0: a callback stopped it before, or an error did */
} fm_train_result_t;

/* The step cap of a local training (fm_train_config_t.max_steps, 0 = none) from the
 * [federation] keys: `fraction` (local_fraction, in (0, 1]) of the training's epochs x
 * ceil(n / batch) steps, rounded up and at least 1, when fraction < 1, and `local_steps`
 * (> 0: a cap of its own); the smaller of the two caps that are set. The rounding is
 * ceil(fraction x epochs x steps per epoch - 1e-9), so that 0.1 x 30 is 3, not 4: the
 * Python client computes the same. epochs, n and batch >= 1. */
uint64_t fm_train_steps_cap(uint64_t local_steps, double fraction, int epochs, uint64_t n,
                            int batch);

/* Called after each epoch; return non-zero to stop training early. */
typedef int (*fm_train_epoch_fn)(void *arg, int epoch, const fm_train_result_t *so_far);

/* Train `m` in place on samples idx[0..n) of (x, y) (x: n_total x 784 floats, y labels).
 * `w_global` (may be NULL) is the FedProx anchor passed to the optimiser. The optimiser's
 * momentum is reset first. Errors: FM_EARG (bad config, n == 0), FM_ENONFINITE (loss
 * became NaN/inf: training stops, the model holds the last finite step's successor). */
int fm_train_run(fm_engine_t *e, fm_optim_t *o, fm_model_t *m, const float *x, const uint8_t *y,
                 const uint32_t *idx, uint32_t n, const fm_train_config_t *cfg,
                 const float *w_global, fm_train_epoch_fn cb, void *cb_arg,
                 fm_train_result_t *out);

#endif
