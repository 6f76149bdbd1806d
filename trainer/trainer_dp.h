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
 *   update is then not sent (dropout, stop): an upper bound.
 * - Durable accounts ([trainer] dp_accounts_file, "" = in memory only: a restarted trainer
 *   then starts every client at zero, and says so in a WARNING): the step counts are saved
 *   to that file after every training, by fm_file_replace (temp file, fsync, rename, fsync
 *   of the folder), under the mutex, and loaded by trainer_dp_new. The save comes BEFORE the
 *   update leaves the trainer (the worker's order is run -> trainer_dp_spend (count + save)
 *   -> send): an UPDATE is the only release of a training's noisy result, so a step is
 *   spent the moment its result can be seen; a crash after the save and before the send
 *   over-counts one training (safe), a crash before the save loses steps whose result
 *   nobody saw (nothing released, nothing to count). Had the send come first, a crash
 *   between send and save would let a restarted trainer forget budget already released. A
 *   failed save therefore stops the update (the caller drops it) and the steps stay counted
 *   in memory, saved with the next save that works.
 * - The file (little-endian, 72 + 8 x count bytes):
 *     0  8  magic "FMDPACC1"        8  4  version (1)     12  4  first client
 *    16  4  count of clients       20  4  zero            24  8  sigma (IEEE-754 double)
 *    32  8  q (double)             40 8c  steps per client (uint64)
 *    40+8c 32  BLAKE2b-256 (crypto_generichash) of all the bytes before it
 *   Binary because the counts and (sigma, q) must come back bit-exact (the mismatch check
 *   is an equality) and the size follows from the header, so a truncated file is told from
 *   a whole one before the checksum; the checksum catches a torn or corrupted file.
 *   The step counts are valid only for the (sigma, q) they were run with and for the
 *   clients of that range: a file for another sigma, q or range is refused (FM_EARG) at
 *   start, never reinterpreted. dp_clip, dp_delta, local_epochs and dp_target_epsilon may
 *   change between runs (the epsilon of a step count does not depend on C; delta and the
 *   target only read it). One pool per file (no lock: fm_file_replace's one writer).
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
 * epsilon after one, trainings within the budget). With dp_accounts_file the accounts are
 * loaded from it (missing: all zero, one INFO line; loaded: one INFO line with the steps
 * found); without it one WARNING (restarts forget the spent budget). NULL with *err and `e`
 * set: FM_EARG (a key out of range: cfg must have passed fm_cfg_check; or the file holds
 * steps of another sigma, q or client range: `e` names both and what to do), FM_EMAGIC,
 * FM_EVERSION, FM_ETRUNC, FM_EFORMAT (the file is not a whole accounts file of this
 * version, or its checksum fails: never taken as zero), -errno (the file cannot be read),
 * -ENOMEM, -EIO (no secure random source: checked here, before any training). Caller owns
 * it (trainer_dp_destroy). */
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

/* Like trainer_dp_admit, without logging: 1 if `client`'s next training would exceed the
 * target (the accounts loaded from the file may say so at start), else 0. */
int trainer_dp_spent(trainer_dp_t *dp, uint32_t client);

/* `client` ran `steps` DP-SGD steps: added to its account, one INFO line (client, steps,
 * sigma, q, epsilon at delta), its epsilon now in *eps (may be NULL); then, with
 * dp_accounts_file, every account is saved (durably) before this returns. 0, or -errno /
 * FM_E* when the save failed (one ERROR line, at most one per 10 s with the count of those
 * suppressed): the steps stay counted in memory, but the caller must NOT send this
 * training's update (its spending is not durable; see above). */
int trainer_dp_spend(trainer_dp_t *dp, uint32_t client, uint64_t steps, double *eps);

/* The epsilon of `client`'s account (0 before any step; +inf with sigma = 0), its steps in
 * *steps (may be NULL). Clients outside the range: 0 steps. */
double trainer_dp_epsilon(trainer_dp_t *dp, uint32_t client, uint64_t *steps);

/* The epsilon (improved conversion, at dp_delta) of `steps` steps of the pool's mechanism. */
double trainer_dp_epsilon_of(const trainer_dp_t *dp, uint64_t steps);

#endif
