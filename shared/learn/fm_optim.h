/* fm_optim: the local optimiser over one flat parameter buffer.
 *
 * SGD with momentum and weight decay exactly as torch.optim.SGD (dampening 0, no
 * Nesterov), preceded by the FedProx proximal gradient mu*(w - w_global) and gradient-norm
 * clipping over all parameters as torch.nn.utils.clip_grad_norm_ does:
 *   g += mu * (w - w_global)                       (if mu > 0 and w_global given)
 *   g *= min(1, clip / (||g|| + 1e-6))             (if clip > 0)
 *   d  = g + weight_decay * w
 *   buf = momentum * buf + d   (buf = d on the first step)
 *   w  -= lr * buf */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

typedef struct {
    float lr;           /* learning rate, > 0 */
    float momentum;     /* [0, 1) */
    float weight_decay; /* >= 0 */
    float clip_norm;    /* max global gradient norm; 0 = no clipping */
    float mu;           /* FedProx proximal weight; 0 = off */
} fm_sgd_config_t;

typedef struct fm_optim fm_optim_t;

/* Optimiser for n parameters. NULL with *err = -ENOMEM, or FM_EARG for an invalid config.
 * Caller owns it (fm_optim_destroy). */
fm_optim_t *fm_optim_new(size_t n, const fm_sgd_config_t *cfg, int *err);
void fm_optim_destroy(fm_optim_t **p);

/* Forget momentum (start of a new local training round). */
void fm_optim_reset(fm_optim_t *o);

/* Change the FedProx weight (e.g. per round, as the aggregator says). 0, or FM_EARG (mu
 * negative or not finite: unchanged). */
int fm_optim_set_mu(fm_optim_t *o, float mu);

/* Change the learning rate (e.g. per model version, fm_sgd_lr_at). 0, or FM_EARG (lr not a
 * finite number > 0: unchanged). */
int fm_optim_set_lr(fm_optim_t *o, float lr);

/* The client learning rate of a local training that starts from model `version` under
 * [federation] lr_decay: lr / (1 + decay x version); decay 0 = lr at every version. Pure. */
double fm_sgd_lr_at(double lr, double decay, uint64_t version);

/* One step: reads and modifies grads (prox and clipping are applied in place), updates w.
 * w_global may be NULL (no proximal term). Returns the gradient norm before clipping. */
double fm_optim_step(fm_optim_t *o, float *w, float *grads, const float *w_global);

/* Validate a config: 0 or FM_EARG with a message naming the bad field. */
int fm_sgd_config_check(const fm_sgd_config_t *cfg, fm_errmsg_t *e);

#endif
