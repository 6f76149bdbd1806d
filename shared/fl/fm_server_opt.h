/* fm_server_opt: the server optimiser that applies a buffered mean delta to the global model.
 *
 * FedOpt (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2): the mean client
 * delta d = delta_bar (fm_fedbuff_take; delta = w_local - w_base, so it already points
 * downhill: it is a negative pseudo-gradient) is used as the step of a server optimiser over
 * the flat model w. Per element, with state m (first moment / momentum) and v (second moment):
 *
 *   fedavg    w += eta * d
 *   fedavgm   m  = beta1 * m + d                        (Hsu et al. 2019: no (1 - beta1)
 *             w += eta * m                                damping; m = d on the first round)
 *   fedadam   m  = beta1 * m + (1 - beta1) * d
 *             v  = beta2 * v + (1 - beta2) * d^2
 *             w += eta * m / (sqrt(v) + tau)
 *   fedyogi   m  = beta1 * m + (1 - beta1) * d
 *             v  = v - (1 - beta2) * d^2 * sign(v - d^2)      (sign(0) = 0: v unchanged)
 *             w += eta * m / (sqrt(v) + tau)
 *
 * As in the paper there is no bias correction (no 1 - beta^t factors, so no step counter in
 * the state). Initial state: m = 0 and v = tau^2 (the paper requires v_{-1} >= tau^2; we use
 * equality), so the first fedadam/fedyogi step divides by sqrt(beta2 tau^2 + (1-beta2) d^2) +
 * tau, never by ~0. tau is the adaptivity (epsilon) parameter, default 1e-3. fedavgm uses
 * beta1 as its momentum.
 *
 * Each element is computed in double from the float state and rounded once per stored value
 * (w, m, v are float). apply is called once per K folded updates, so it is not on the ingest
 * hot path; it makes two passes (check, then write) so that it is all-or-nothing.
 *
 * State, for checkpoints: one flat float array of fm_server_opt_state_len(kind, n) floats:
 *   fedavg  nothing (0 floats);  fedavgm  m[0..n);  fedadam/fedyogi  m[0..n) then v[0..n).
 *
 * Not thread-safe: one optimiser is driven by one thread. */
#ifndef FM_SERVER_OPT_H
#define FM_SERVER_OPT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

typedef enum {
    FM_SERVER_OPT_FEDAVG,
    FM_SERVER_OPT_FEDAVGM,
    FM_SERVER_OPT_FEDADAM,
    FM_SERVER_OPT_FEDYOGI
} fm_server_opt_kind_t;

typedef struct {
    double eta;   /* server learning rate: finite, > 0 (all kinds) */
    double beta1; /* momentum (fedavgm) / first-moment decay (fedadam, fedyogi): [0, 1) */
    double beta2; /* second-moment decay (fedadam, fedyogi): [0, 1) */
    double tau;   /* adaptivity (fedadam, fedyogi): finite, > 0 */
} fm_server_opt_config_t;

/* eta 1 (plain FedAvg / FedBuff), beta1 0.9, beta2 0.99, tau 1e-3 (Reddi et al.'s defaults
 * for the moments; the adaptive kinds usually want a smaller eta, e.g. 1e-2). */
#define FM_SERVER_OPT_CONFIG_DEFAULT                                                             \
    {                                                                                            \
        .eta = 1.0, .beta1 = 0.9, .beta2 = 0.99, .tau = 1e-3                                     \
    }

typedef struct fm_server_opt fm_server_opt_t;

/* Kind from its name: "fedavg", "fedavgm", "fedadam", "fedyogi". 0, or FM_EARG with one line
 * in `e` (may be NULL); *kind is only written on success. */
int fm_server_opt_parse_kind(const char *name, fm_server_opt_kind_t *kind, fm_errmsg_t *e);

/* The name of a kind (static string; "?" if out of range). */
const char *fm_server_opt_kind_name(fm_server_opt_kind_t kind);

/* Validate the fields `kind` uses (see fm_server_opt_config_t; the others are ignored):
 * 0, or FM_EARG with one line in `e` (may be NULL) naming the field. */
int fm_server_opt_config_check(fm_server_opt_kind_t kind, const fm_server_opt_config_t *cfg,
                               fm_errmsg_t *e);

/* Floats of state for kind over n parameters: 0, n or 2n (SIZE_MAX if 2n overflows). */
size_t fm_server_opt_state_len(fm_server_opt_kind_t kind, size_t n);

/* Optimiser for n parameters with its state initialised (m = 0, v = tau^2). NULL with *err
 * (may be NULL) = FM_EARG (unknown kind or invalid config) or -ENOMEM. Caller owns it:
 * fm_server_opt_destroy. */
fm_server_opt_t *fm_server_opt_new(fm_server_opt_kind_t kind, size_t n,
                                   const fm_server_opt_config_t *cfg, int *err);

/* Free and set *p to NULL; idempotent. */
void fm_server_opt_destroy(fm_server_opt_t **p);

fm_server_opt_kind_t fm_server_opt_kind(const fm_server_opt_t *o);
size_t fm_server_opt_nparams(const fm_server_opt_t *o);

/* The state array (fm_server_opt_state_len floats, layout above), borrowed and writable: live
 * as long as the optimiser. Save it in a checkpoint; to resume, copy a saved state in (then
 * fm_server_opt_state_check). NULL for fedavg (no state). */
float *fm_server_opt_state(fm_server_opt_t *o);

/* Back to the initial state (m = 0, v = tau^2). */
void fm_server_opt_reset(fm_server_opt_t *o);

/* Validate the state (e.g. after loading a checkpoint into it): 0, FM_ENONFINITE if some m or
 * v is not finite, FM_ERANGE if some v is < 0 (v = 0 is reachable with beta2 = 0); one line
 * in `e` (may be NULL) naming the array and index. */
int fm_server_opt_state_check(const fm_server_opt_t *o, fm_errmsg_t *e);

/* One server step: update w (n floats) with delta_bar (n floats, not overlapping w) by the
 * rule of the optimiser's kind. All or nothing: if any delta_bar value or any new w, m or v
 * value would be non-finite (NaN, infinity, float overflow), returns FM_ENONFINITE with w and
 * the state untouched and counts the rejection; otherwise 0. */
int fm_server_opt_apply(fm_server_opt_t *o, float *w, const float *delta_bar);

/* The same step with `beta1` in place of the config's beta1 for this step only (fedavgm's
 * momentum, fedadam/fedyogi's first-moment decay; ignored by fedavg): e.g. a momentum that
 * backs off with the buffer's staleness. FM_EARG (nothing touched, not counted) unless beta1
 * is in [0, 1); otherwise as fm_server_opt_apply. */
int fm_server_opt_apply_beta1(fm_server_opt_t *o, float *w, const float *delta_bar, double beta1);

/* The config's beta1 of a kind that uses it (fedavgm's momentum, fedadam/fedyogi's first-moment
 * decay); 0 for fedavg. */
double fm_server_opt_beta1(const fm_server_opt_t *o);

/* Number of applies rejected with FM_ENONFINITE since fm_server_opt_new. */
uint64_t fm_server_opt_rejected(const fm_server_opt_t *o);

#endif
