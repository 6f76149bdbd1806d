/* agg_ingest: one frame from the updates socket -> a verdict, and a valid UPDATE folded
 * into the FedBuff buffer (fm_fedbuff).
 *
 * Pure: no sockets, no clock, no logging; the server passes what it knows (version, live
 * clients, max_staleness) in agg_ingest_ctx_t and acts on the verdict (counts and logs a
 * rejection, applies a membership message, aggregates when told to).
 *
 * An UPDATE is checked in this order, the first failure being its reason (agg_reason_t):
 * decoding (truncated / version / malformed), the model name, the tensors' names, dtypes
 * and shapes, their encodings (encoding: fm_codec's sizes, scales, indices in order and in
 * range, zstd frames; an encoded tensor is decoded block by block, never into a float32
 * copy, once for the norm and once into the rule's accumulator), finiteness, the id seen before
 * (duplicate: the id window of agg_state; before the version checks, so a resent update that was
 * applied is always called a duplicate), base > version or base among the version numbers lost in
 * a checkpoint fallback or reset (future, with `lost` set), num_rounds reached (late), the mode's
 * policy (agg_policy: quorum, or late / cohort), staleness > max_staleness (stale), n == 0
 * (samples), then the screen (fm_screen, [aggregator] norm_*): overflow (L2 norm above
 * FM_SCREEN_NORM_CEILING, or a fold that could overflow the mean's float accumulator:
 * fm_fedbuff_begin_ex), norm (above the bound with norm_action = reject; with clip it is folded
 * scaled down to the bound and the verdict says `clipped`). The L2 norm is computed in double in
 * the same pass as the finiteness check (fm_screen_sumsq), so screening reads the delta no more
 * often than before. A valid one is folded with staleness tau = version - base into the policy's
 * rule: the streaming mean (fm_fedbuff) or a buffer that stores the K updates (fm_robust: median,
 * trimmed_mean, norm_bounded_mean) and, with [aggregator] sign_threshold, into the sign vote
 * (fm_signvote); its id is recorded in the window, and the policy says
 * whether to aggregate now. HELLO / HEARTBEAT / BYE and DECLINE are decoded (and, under
 * curve, checked against the sender's key) and handed back; any other message is
 * "unexpected_type". One update is judged alone: a rejected one has changed
 * nothing in the buffer.
 *
 * Not thread-safe. */
#ifndef AGG_INGEST_H
#define AGG_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "aggregator_idset.h"
#include "aggregator_policy.h"
#include "aggregator_stats.h"
#include "fm_err.h"
#include "fm_fedbuff.h"
#include "fm_model.h"
#include "fm_robust.h"
#include "fm_screen.h"
#include "fm_signvote.h"
#include "fm_sec.h"
#include "fm_wire.h"

#define AGG_WHY_MAX 400 /* bytes of a rejection's explanation */

typedef enum {
    AGG_INGEST_FOLDED,  /* an UPDATE was folded into the buffer */
    AGG_INGEST_MEMBER,  /* a HELLO / HEARTBEAT / BYE, decoded */
    AGG_INGEST_DECLINE, /* a DECLINE (Poisson-sampled sync rounds), decoded, sender checked */
    AGG_INGEST_SECAGG,  /* ctx->secagg: a member message of a cohort (`type`; agg_secagg) */
    AGG_INGEST_REJECTED /* dropped */
} agg_ingest_kind_t;

/* What became of one frame. */
typedef struct {
    agg_ingest_kind_t kind;
    agg_reason_t reason;       /* REJECTED: why */
    char why[AGG_WHY_MAX];     /* REJECTED: one line naming the sender and the value */
    fm_wire_type_t type;       /* MEMBER: FM_WIRE_HELLO / HEARTBEAT / BYE; SECAGG: its type */
    fm_wire_member_t member;   /* MEMBER */
    fm_wire_decline_t decline; /* DECLINE */
    fm_wire_update_t update;   /* FOLDED, and REJECTED with has_id: the header */
    int has_id;                /* the frame was a decodable UPDATE: update.id and .trainer are
                                  valid (for an acknowledgement) */
    int lost;                  /* REJECTED (future): its base version was lost */
    uint64_t tau;              /* FOLDED: its staleness */
    int aggregate;             /* FOLDED: 1 = the policy says aggregate now */
    int clipped;               /* FOLDED: scaled down from `norm` to `bound` (norm_action clip) */
    double norm, bound;        /* FOLDED, REJECTED by norm / overflow: L2 norm, bound (0: none) */
    char encoding[32];         /* FOLDED, and REJECTED after the tensor check: the update's
                                  encoding ("fp32", "int8", "topk-fp32+zstd": fm_codec_label of
                                  its largest tensor), else "" */
} agg_verdict_t;

/* What the server knows when a frame arrives. */
typedef struct {
    agg_view_t view;     /* version, finished, live clients */
    int max_staleness;   /* [aggregator] max_staleness (reloadable) */
    int num_rounds;      /* [federation] num_rounds, for the "late" message */
    const char *stopped; /* why no more versions are made besides num_rounds (NULL: none) */

    /* versions lost in a checkpoint fallback or reset (agg_state_lost); 0 0: none */
    uint64_t lost_first, lost_last;

    /* [security] curve: who sent the frame (the "User-Id" property: its public key, may be
     * NULL) and the allow-list to check it against; sec NULL or mode none: no check */
    fm_sec_t *sec;
    const char *user_id;
    /* [secagg] enabled: member messages (ADVERTISE_KEYS, SHARES, MASKED_UPDATE,
     * UNMASK_SHARES) are AGG_INGEST_SECAGG, a plain UPDATE is refused (secagg) */
    int secagg;
} agg_ingest_ctx_t;

typedef struct agg_ingest agg_ingest_t;

/* An ingest step for updates of `layout` (the model: names, shapes, nparams), with a buffer
 * of policy->buffer_k updates, policy->staleness and policy->weight_by_samples, aggregated by
 * policy->rule (trim_fraction) and screened by policy->screen. `layout`, `policy` and `ids`
 * are borrowed and must outlive it. NULL with *err = FM_EARG (buffer or screen parameters)
 * or -ENOMEM (e.g. K x nparams floats for a robust rule) and one line in `e`. Caller owns
 * it: agg_ingest_destroy. */
agg_ingest_t *agg_ingest_new(const fm_model_t *layout, agg_policy_t *policy, agg_idset_t *ids,
                             int *err, fm_errmsg_t *e);

/* Free and NULL *p; idempotent. */
void agg_ingest_destroy(agg_ingest_t **p);

/* Judge the frame data[0..len) (untrusted; len 0 allowed with data non-NULL) and fold it if
 * it is a valid UPDATE; *out says which (every field of the kind set). */
void agg_ingest_frame(agg_ingest_t *g, const void *data, size_t len, const agg_ingest_ctx_t *ctx,
                      agg_verdict_t *out);

/* Updates in the open buffer. */
int agg_ingest_pending(const agg_ingest_t *g);

/* The buffer's statistics since the start (fm_fedbuff_stats / fm_robust_stats). */
void agg_ingest_stats(const agg_ingest_t *g, fm_fedbuff_stats_t *out);

/* One line describing the rule and the screen, with the memory a robust rule holds (for the
 * start-up log). */
void agg_ingest_describe(const agg_ingest_t *g, char *out, size_t cap);

/* Take a reloaded screen config (bound, mode, action; the window keeps its size and norms).
 * 0, or FM_EARG (unchanged). */
int agg_ingest_set_screen(agg_ingest_t *g, const fm_screen_config_t *c);

/* Take the buffer's delta_bar (the rule's; with [aggregator] sign_threshold, overruled on
 * the parameters whose updates do not agree in sign: fm_signvote) into mean[nparams] and
 * start a new buffer; *count = updates it held, *stale_mean = their mean staleness. 0, or
 * FM_ERANGE when the buffer is empty (nothing written). */
int agg_ingest_take(agg_ingest_t *g, float *mean, int *count, double *stale_mean);

/* Parameters the sign vote overruled at the last agg_ingest_take (0 without a vote). */
size_t agg_ingest_overruled(const agg_ingest_t *g);

/* Updates in the open buffer that were folded unclipped (norm within the screen's bound);
 * 0 after agg_ingest_take and agg_ingest_reset. Adaptive clipping counts them per step. */
int agg_ingest_unclipped(const agg_ingest_t *g);

/* Drop the open buffer (a new sync round). Its ids stay in the window. */
void agg_ingest_reset(agg_ingest_t *g);

#endif
