/* fm_rng: small, seeded, reproducible random numbers (xoshiro256** seeded by splitmix64).
 *
 * A value type: put an fm_rng_t on the stack or in a struct, seed it, use it from one thread.
 * The same seed gives the same stream on every machine and in every process. */
#ifndef FM_RNG_H
#define FM_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} fm_rng_t;

/* Seed the generator; `stream` selects an independent stream for the same seed
 * (e.g. a client id), so fm_rng_seed(r, seed, k) differs for each k. */
void fm_rng_seed(fm_rng_t *r, uint64_t seed, uint64_t stream);

/* Next 64 random bits. */
uint64_t fm_rng_u64(fm_rng_t *r);

/* Uniform integer in [0, n); n > 0 (unbiased). */
uint64_t fm_rng_below(fm_rng_t *r, uint64_t n);

/* Uniform double in [0, 1) with 53 random bits. */
double fm_rng_uniform(fm_rng_t *r);

/* Standard normal N(0, 1) (Box-Muller, no cached second value so the state stays a value). */
double fm_rng_normal(fm_rng_t *r);

/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang, with the shape < 1 boost). */
double fm_rng_gamma(fm_rng_t *r, double shape);

/* Fisher-Yates shuffle of n uint32 values in place. */
void fm_rng_shuffle_u32(fm_rng_t *r, uint32_t *a, uint32_t n);

#endif
