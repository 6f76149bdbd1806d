/* trainer_dp: DP-SGD for a trainer pool's clients ([trainer] dp_sgd = true): the private
 * randomness and each client's own privacy account.
 *
 * - Randomness: Poisson sampling and the noise come from a CSPRNG stream per worker
 *   (fm_random_stream: ChaCha20 keyed from libsodium's randombytes_buf), the normals from
 *   fm_dp_normals over it: the glue between the training core (shared/learn, fm_dpsgd,
 *   which may not see shared/fl or shared/svc) and the accountant and random source, in the
 *   one place that sees all three.
 * - Accounts: every local training of a client is epochs x round(1/q) DP-SGD steps of the
 *   Poisson-subsampled Gaussian mechanism (q, sigma) on the client's examples. The keys are
 *   restart-only, so within this process every step of every client has the same (q, sigma)
 *   and a client's RDP curve is its step count times the one-step curve: the step count
 *   (8 bytes per client) is the whole account, and its epsilon at dp_delta is fm_rdp's
 *   (improved conversion) of that many composed steps. Every step run counts, also when the
 *   update is then not sent (dropout, stop): an upper bound. The accounts are in memory
 *   only: a restarted trainer starts them at zero (docs/PRIVACY.md says so).
 * - Budget: with dp_target_epsilon > 0, a client whose next training would take its epsilon
 *   above the target is refused (one NOTICE) and the caller retires it for good, so its
 *   reported epsilon never exceeds the target.
 *
 * Thread-safe: the workers call it concurrently (one mutex). */
#ifndef TRAINER_DP_H
#define TRAINER_DP_H

#include <stdint.h>

#include "fm_cfg.h"
#include "fm_dpsgd.h"
#include "fm_err.h"
#include "fm_random_stream.h"

typedef struct trainer_dp trainer_dp_t;

/* Accounts for clients [first, first + count) under cfg's [trainer] dp_* keys and
 * [federation] local_epochs; logs the plan (one INFO line: C, sigma, q, steps per training,
 * epsilon after one, trainings within the budget). NULL with *err and `e` set: FM_EARG (a
 * key out of range: cfg must have passed fm_cfg_check), -ENOMEM, -EIO (no secure random
 * source: checked here, before any training). Caller owns it (trainer_dp_destroy). */
trainer_dp_t *trainer_dp_new(const fm_config_t *cfg, uint32_t first, uint32_t count, int *err,
                             fm_errmsg_t *e);

/* Free it and set *p to NULL; idempotent. */
void trainer_dp_destroy(trainer_dp_t **p);

/* The fm_dpsgd config of one local training (seed: its dropout masks). */
void trainer_dp_config(const trainer_dp_t *dp, uint64_t seed, fm_dpsgd_config_t *out);

/* The private randomness of fm_dpsgd over `stream` (one per worker thread, borrowed: it must
 * outlive the training): sampling bytes from it, normals by fm_dp_normals from it. */
fm_dpsgd_rand_t trainer_dp_rand(fm_random_stream_t *stream);

/* DP-SGD steps of one local training: local_epochs x round(1 / q). */
uint64_t trainer_dp_steps_per_training(const trainer_dp_t *dp);

/* May `client` train once more? 1 = yes; 0 = its next training would take its epsilon above
 * dp_target_epsilon (one NOTICE line): the caller must not train it again
 * (trainer_ctx_retire). Always 1 without a target. */
int trainer_dp_admit(trainer_dp_t *dp, uint32_t client);

/* `client` ran `steps` DP-SGD steps: added to its account, one INFO line (client, steps,
 * sigma, q, epsilon at delta). Returns its epsilon now. */
double trainer_dp_spend(trainer_dp_t *dp, uint32_t client, uint64_t steps);

/* The epsilon of `client`'s account (0 before any step; +inf with sigma = 0), its steps in
 * *steps (may be NULL). Clients outside the range: 0 steps. */
double trainer_dp_epsilon(trainer_dp_t *dp, uint32_t client, uint64_t *steps);

/* The epsilon (improved conversion, at dp_delta) of `steps` steps of the pool's mechanism. */
double trainer_dp_epsilon_of(const trainer_dp_t *dp, uint64_t steps);

#endif
