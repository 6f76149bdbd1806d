#include "trainer_sim.h"

#include <math.h>
#include <stdlib.h>

#include "fm_err.h"
#include "fm_rng.h"

/* Stream tags: keep the simulation's random streams apart from the partition's. */
#define S_TAG_SLOWDOWN 0x51d0c0ffee000001ULL
#define S_TAG_DROPOUT 0x51d0c0ffee000002ULL
#define S_TAG_TRAIN 0x51d0c0ffee000003ULL

/* A 64-bit stream id from (client, run): unique per pair for runs < 2^32. */
static uint64_t s_stream(uint32_t client, uint64_t run)
{
    return ((uint64_t)client << 32) ^ (run & 0xffffffffULL);
}

double trainer_sim_slowdown(uint64_t seed, uint32_t client, double sigma)
{
    if (sigma <= 0.0)
        return 1.0;
    fm_rng_t r;
    fm_rng_seed(&r, seed ^ S_TAG_SLOWDOWN, client);
    return exp(sigma * fm_rng_normal(&r));
}

int trainer_sim_dropout(uint64_t seed, uint32_t client, uint64_t run, double prob,
                        double *fraction)
{
    *fraction = 1.0;
    if (prob <= 0.0)
        return 0;
    fm_rng_t r;
    fm_rng_seed(&r, seed ^ S_TAG_DROPOUT, s_stream(client, run));
    double u = fm_rng_uniform(&r);
    double f = fm_rng_uniform(&r);
    if (u >= prob)
        return 0;
    *fraction = f > 0.0 ? f : 0.5;
    return 1;
}

uint64_t trainer_sim_train_seed(uint64_t seed, uint32_t client, uint64_t run)
{
    fm_rng_t r;
    fm_rng_seed(&r, seed ^ S_TAG_TRAIN, s_stream(client, run));
    return fm_rng_u64(&r);
}
