/* trainer_sim: the fleet simulation of a trainer pool, as pure seeded functions.
 *
 * Everything here depends only on (federation.seed, client id, run number), so every
 * process that serves client k sees the same device speed for it and the same dropout
 * decisions, whatever worker or process trains it. No state, no threads. */
#ifndef TRAINER_SIM_H
#define TRAINER_SIM_H

#include <stdint.h>

/* The slowdown factor f_k = exp(sigma * N(0,1)) of client k (lognormal device speed);
 * 1.0 when sigma == 0. Same value in every process for the same seed and k. */
double trainer_sim_slowdown(uint64_t seed, uint32_t client, double sigma);

/* Does run number `run` of client k drop out (probability `prob`)? Returns 1 and the
 * fraction of the local work done before abandoning in *fraction (in (0, 1)), or 0. */
int trainer_sim_dropout(uint64_t seed, uint32_t client, uint64_t run, double prob,
                        double *fraction);

/* Seed of the local training (shuffle, dropout masks) of run `run` of client k. */
uint64_t trainer_sim_train_seed(uint64_t seed, uint32_t client, uint64_t run);

#endif
