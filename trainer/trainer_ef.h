/* trainer_ef: the error-feedback residuals of a trainer pool's clients (top-k updates).
 *
 * With [trainer] topk_fraction > 0 and error_feedback on, each client keeps a residual e of
 * nparams floats: what its earlier updates did not send (fm_codec_enc_run adds it to the
 * next delta and keeps what that one does not send). A residual is created (zero) when its
 * client first trains, so only clients that train hold one, and lives in memory only: it is
 * never written to disk or sent, never shared between clients, and a restart starts every
 * client from zero. Memory is bounded by [trainer] error_feedback_mb: when a new residual
 * would exceed it, the least recently used residual of a client not training now is
 * dropped (counted: that client starts again from zero, losing what it had not sent yet).
 *
 * Thread-safe: workers take a client's residual (trainer_ef_take) for the length of one
 * encoding and give it back (trainer_ef_give); a client is trained by one worker at a time
 * (trainer_ctx), so a residual is never used twice at once. */
#ifndef TRAINER_EF_H
#define TRAINER_EF_H

#include <stddef.h>
#include <stdint.h>

typedef struct trainer_ef trainer_ef_t;

/* Residuals for clients [first, first + count) of nparams floats each, at most max_bytes in
 * all (>= one residual per worker: the caller checks). NULL with *err = -ENOMEM. The caller
 * owns it: trainer_ef_destroy. */
trainer_ef_t *trainer_ef_new(uint32_t first, uint32_t count, size_t nparams, size_t max_bytes,
                             int *err);

/* Free every residual and the table, NULL *p; idempotent. */
void trainer_ef_destroy(trainer_ef_t **p);

/* The residual of `client` (in range: FM_ASSERT), created zero if it has none, marked in
 * use. NULL when there is no memory for it (-ENOMEM, or every residual in memory is in use
 * and the bound is reached): the caller then encodes without error feedback. */
float *trainer_ef_take(trainer_ef_t *ef, uint32_t client);

/* Give the residual of `client` back (after trainer_ef_take returned it). */
void trainer_ef_give(trainer_ef_t *ef, uint32_t client);

typedef struct {
    uint32_t held;    /* residuals in memory */
    uint64_t bytes;   /* their bytes */
    uint64_t evicted; /* residuals dropped to stay within the bound, since the start */
} trainer_ef_stats_t;

void trainer_ef_stats(trainer_ef_t *ef, trainer_ef_stats_t *out);

/* Step-ahead error feedback ([trainer] error_feedback_step_ahead = a in (0, 1]): a client's
 * local training starts from base + a x e (its residual e previewed), so it does not learn
 * again what it computed but has not sent. The delta it sends is still trained - base,
 * which then holds a x e besides the local progress g; before encoding, the residual keeps
 * only (1 - a) e, so delta + residual = g + e as in classic error feedback and the sum of
 * what was sent plus the residual stays the sum of the clients' progress
 * (tests/unit/trainer_ef_test.c).
 * trainer_ef_preview: params[i] += a x res[i] (the start of the local training).
 * trainer_ef_unpreview: res[i] *= 1 - a (after that training, before fm_codec_enc_run). */
void trainer_ef_preview(const float *res, float a, float *params, size_t n);
void trainer_ef_unpreview(float *res, float a, size_t n);

#endif
