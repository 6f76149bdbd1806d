/* fm_rdp: the Rényi-DP accountant of the Poisson-subsampled Gaussian mechanism, for
 * client-level DP (DP-FedAvg / DP-FedBuff in the aggregator) and sample-level DP-SGD (the
 * trainer). No I/O, no allocation.
 *
 * The mechanism: each of n records (clients, or examples) joins a step independently with
 * probability q; the sum of the joined records' contributions, each of L2 norm at most C,
 * gets Gaussian noise N(0, sigma^2 C^2) per coordinate. One step is (alpha, rdp(alpha))-RDP
 * at every order alpha > 1 with (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy
 * of the Sampled Gaussian Mechanism", Section 3.3)
 *   rdp(alpha) = log A_alpha / (alpha - 1),
 *   A_alpha    = E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha],
 * computed as their log-space series: the finite binomial sum for integer alpha, the
 * two-sided erfc series for fractional alpha (the algorithm of Opacus' and TF Privacy's RDP
 * accountants); q = 1 is the plain Gaussian, alpha / (2 sigma^2); q = 0 costs nothing;
 * sigma = 0 is no privacy (+inf). Steps compose by adding rdp per order, also across steps
 * of different q or sigma (fm_rdp_compose).
 *
 * Conversion to (epsilon, delta), minimised over the orders:
 *   FM_RDP_CLASSIC   eps = rdp - log(delta) / (alpha - 1)                 (Mironov 2017)
 *   FM_RDP_IMPROVED  eps = rdp - (log(delta) + log(alpha)) / (alpha - 1)
 *                          + log((alpha - 1) / alpha)   (Balle et al. 2020, Theorem 21;
 *                                                         Opacus' get_privacy_spent)
 * Orders: Opacus' RDPAccountant default set, 1.1, 1.2, ..., 10.9 (1 + x / 10.0 for x = 1..99)
 * then 12, 13, ..., 63: FM_RDP_NORDERS of them.
 *
 * Accuracy: every epsilon on the grid q in {1e-3, 1e-2, 0.1, 1}, sigma in {0.5 .. 4},
 * steps 1 .. 10,000 equals an arbitrary-precision reference computed from the definition
 * (tests/privacy/rdp_reference.py) to 1e-9 relative (tests/unit/rdp_test.c). Valid for q in
 * [0, 1] and sigma in [0.3, 100] (the range tested); outside it the result is still an
 * upper bound computed the same way but untested. */
#ifndef FM_RDP_H
#define FM_RDP_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_RDP_NORDERS 151

typedef enum { FM_RDP_IMPROVED, FM_RDP_CLASSIC } fm_rdp_conv_t;

/* Spent budget: the total rdp at every order (fm_rdp_order(i)). Plain data: copy it, store
 * its FM_RDP_NORDERS doubles in a checkpoint, zero it with fm_rdp_init. */
typedef struct {
    double rdp[FM_RDP_NORDERS];
} fm_rdp_t;

/* The i-th order (0 <= i < FM_RDP_NORDERS), ascending. */
double fm_rdp_order(size_t i);

/* "improved" / "classic" into *out: 0, or FM_EARG. */
int fm_rdp_conv_parse(const char *s, fm_rdp_conv_t *out);

/* The name of a conversion (static string). */
const char *fm_rdp_conv_name(fm_rdp_conv_t conv);

/* The rdp of ONE step at order alpha > 1: 0 for q = 0, +inf for sigma = 0; NAN when an
 * argument is out of range (q outside [0, 1], sigma < 0, alpha <= 1, any NaN). */
double fm_rdp_step(double q, double sigma, double alpha);

/* No budget spent: every order's rdp 0. */
void fm_rdp_init(fm_rdp_t *acct);

/* Add `steps` steps of the mechanism (q, sigma) to acct. 0, or FM_EARG (q outside [0, 1],
 * sigma < 0 or not finite; acct unchanged). */
int fm_rdp_compose(fm_rdp_t *acct, double q, double sigma, uint64_t steps);

/* The smallest epsilon over the orders at which the spent budget is (epsilon, delta)-DP,
 * 0 < delta < 1; *best_alpha (may be NULL) = its order. +inf when no order is finite (or
 * delta out of range: then *best_alpha = NAN). */
double fm_rdp_epsilon(const fm_rdp_t *acct, double delta, fm_rdp_conv_t conv, double *best_alpha);

/* Epsilon after `steps` steps of (q, sigma) from nothing: fm_rdp_compose + fm_rdp_epsilon. */
double fm_rdp_epsilon_of(double q, double sigma, uint64_t steps, double delta, fm_rdp_conv_t conv,
                         double *best_alpha);

/* The smallest noise multiplier sigma (to relative 1e-9) at which `steps` steps of rate q
 * stay within target_eps at delta. 0, or FM_EARG (arguments out of range), or FM_ERANGE
 * (even sigma = 1e6 is not enough: target too small for these steps). */
int fm_rdp_sigma_for(double q, uint64_t steps, double delta, double target_eps,
                     fm_rdp_conv_t conv, double *sigma);

/* The largest number of steps of (q, sigma) whose epsilon stays within target_eps at delta,
 * up to `cap` (returned when even cap steps fit). 0, or FM_EARG. */
int fm_rdp_steps_for(double q, double sigma, double delta, double target_eps, fm_rdp_conv_t conv,
                     uint64_t cap, uint64_t *steps);

/* A spent budget as bytes (for checkpoints): magic "FMRDP01\0", steps (u64), delta (f64),
 * conversion (u64), then the FM_RDP_NORDERS rdp values (f64), all little-endian. */
#define FM_RDP_BLOB_LEN (32 + 8 * FM_RDP_NORDERS)

/* Encode acct, the number of steps it holds and the (delta, conv) it is reported at. */
void fm_rdp_encode(const fm_rdp_t *acct, uint64_t steps, double delta, fm_rdp_conv_t conv,
                   uint8_t out[FM_RDP_BLOB_LEN]);

/* Decode blob[0..len) into *acct, *steps, *delta, *conv (each may be NULL but acct). 0, or
 * FM_EFORMAT with one line in `e` (wrong length or magic, an unknown conversion, delta not
 * in (0, 1), an rdp value negative or not finite): nothing written. */
int fm_rdp_decode(const void *blob, size_t len, fm_rdp_t *acct, uint64_t *steps, double *delta,
                  fm_rdp_conv_t *conv, fm_errmsg_t *e);

#endif
