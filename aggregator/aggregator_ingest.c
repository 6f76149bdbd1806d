#include "aggregator_ingest.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct agg_ingest {
    const fm_model_t *layout;   /* borrowed */
    agg_policy_t *policy;       /* borrowed */
    agg_idset_t *ids;           /* borrowed */
    fm_fedbuff_t *buf;          /* rule mean: the streaming accumulator */
    fm_robust_t *rob;           /* other rules: the K stored updates (buf is NULL) */
    fm_signvote_t *vote;        /* sign_threshold > 0: the robust learning rate's vote */
    fm_screen_t *screen;        /* the per-update norm screen */
    fm_wire_tensors_t *tensors; /* decode scratch */
    fm_codec_rd_t *rd;          /* reads encoded tensors block by block */
    double stale_sum;           /* staleness of the updates in the open buffer */
    int unclipped;              /* updates of the open buffer folded unclipped (scale 1) */
    double norm;                /* L2 norm of the update being judged */
    uint32_t *clients;          /* one_per_client: the clients of the open buffer's updates */
    size_t overruled;           /* parameters the vote overruled at the last take */
};

agg_ingest_t *agg_ingest_new(const fm_model_t *layout, agg_policy_t *policy, agg_idset_t *ids,
                             int *err, fm_errmsg_t *e)
{
    int rc = -ENOMEM;
    agg_ingest_t *g = calloc(1, sizeof *g);
    if (!g || !(g->tensors = malloc(sizeof *g->tensors)) || !(g->rd = calloc(1, sizeof *g->rd)))
        goto cleanup;
    g->layout = layout;
    g->policy = policy;
    g->ids = ids;
    size_t np = fm_model_nparams(layout);
    if (policy->rule == FM_ROBUST_MEAN)
        g->buf = fm_fedbuff_new(np, policy->buffer_k, &policy->staleness,
                                policy->weight_by_samples, &rc);
    else
        g->rob = fm_robust_new(policy->rule, np, policy->buffer_k, &policy->staleness,
                               policy->trim_fraction, &rc);
    if (!g->buf && !g->rob) {
        fm_errmsg_set(e, rc, "%s buffer of %d updates (%.1f MB): %s",
                      fm_robust_rule_name(policy->rule), policy->buffer_k,
                      policy->rule == FM_ROBUST_MEAN
                          ? np * 4e-6
                          : fm_robust_bytes(np, policy->buffer_k) / 1e6,
                      fm_strerror(rc));
        goto cleanup;
    }
    if (policy->one_per_client &&
        !(g->clients = calloc((size_t)policy->buffer_k, sizeof *g->clients))) {
        rc = -ENOMEM;
        goto cleanup;
    }
    if (policy->sign_threshold > 0 &&
        !(g->vote = fm_signvote_new(np, policy->buffer_k, policy->sign_threshold, &rc))) {
        fm_errmsg_set(e, rc, "sign vote over %zu parameters (%.1f MB): %s", np, np * 4e-6,
                      fm_strerror(rc));
        goto cleanup;
    }
    if ((rc = fm_screen_check(&policy->screen, e)) != 0 ||
        !(g->screen = fm_screen_new(&policy->screen, &rc)))
        goto cleanup;
    rc = 0;
cleanup:
    if (rc) {
        if (e && !e->msg[0])
            fm_errmsg_set(e, rc, "ingest: %s", fm_strerror(rc));
        agg_ingest_destroy(&g);
        if (err)
            *err = rc;
    }
    return g;
}

void agg_ingest_destroy(agg_ingest_t **p)
{
    if (!p || !*p)
        return;
    fm_fedbuff_destroy(&(*p)->buf);
    fm_robust_destroy(&(*p)->rob);
    fm_signvote_destroy(&(*p)->vote);
    fm_screen_destroy(&(*p)->screen);
    free((*p)->clients);
    free((*p)->tensors);
    fm_codec_rd_free((*p)->rd);
    free((*p)->rd);
    free(*p);
    *p = NULL;
}

int agg_ingest_pending(const agg_ingest_t *g)
{
    return g->buf ? fm_fedbuff_count(g->buf) : fm_robust_count(g->rob);
}

void agg_ingest_stats(const agg_ingest_t *g, fm_fedbuff_stats_t *out)
{
    if (g->buf)
        fm_fedbuff_stats(g->buf, out);
    else
        fm_robust_stats(g->rob, out);
}

void agg_ingest_describe(const agg_ingest_t *g, char *out, size_t cap)
{
    const agg_policy_t *p = g->policy;
    char rule[160], screen[160];
    size_t np = fm_model_nparams(g->layout);
    if (g->buf)
        snprintf(rule, sizeof rule, "aggregation mean (streaming, %.1f MB)", np * 4e-6);
    else
        snprintf(rule, sizeof rule, "aggregation %s over %d stored updates (%.1f MB)%s",
                 fm_robust_rule_name(p->rule), p->buffer_k,
                 fm_robust_bytes(np, p->buffer_k) / 1e6,
                 p->rule == FM_ROBUST_TRIMMED_MEAN ? ", trimmed" : "");
    if (p->rule == FM_ROBUST_TRIMMED_MEAN)
        snprintf(rule + strlen(rule), sizeof rule - strlen(rule), " %d at each end",
                 fm_robust_trimmed(p->trim_fraction, p->buffer_k));
    const fm_screen_config_t *c = fm_screen_config(g->screen);
    if (!(c->bound > 0))
        snprintf(screen, sizeof screen, "no norm bound");
    else if (c->mode == FM_SCREEN_ABSOLUTE)
        snprintf(screen, sizeof screen, "norm bound %g (%s)", c->bound,
                 fm_screen_action_name(c->action));
    else
        snprintf(screen, sizeof screen,
                 "norm bound %g x median of the last %d norms (%s; none before %d)", c->bound,
                 c->window, fm_screen_action_name(c->action), c->window);
    char vote[96] = "";
    if (g->vote)
        snprintf(vote, sizeof vote,
                 "; robust learning rate (steps reversed below %g sign agreement)",
                 fm_signvote_threshold(g->vote));
    snprintf(out, cap, "%s%s; %s; overflow guard at norm %g", rule, vote, screen,
             FM_SCREEN_NORM_CEILING);
}

int agg_ingest_set_screen(agg_ingest_t *g, const fm_screen_config_t *c)
{
    return fm_screen_set(g->screen, c);
}

int agg_ingest_take(agg_ingest_t *g, float *mean, int *count, double *stale_mean)
{
    *count = agg_ingest_pending(g);
    *stale_mean = *count ? g->stale_sum / *count : 0.0;
    g->stale_sum = 0;
    g->unclipped = 0;
    g->overruled = 0;
    int rc = g->buf ? fm_fedbuff_take(g->buf, mean) : fm_robust_take(g->rob, mean);
    if (g->vote) {
        if (rc == 0)
            g->overruled = fm_signvote_apply(g->vote, mean);
        else
            fm_signvote_reset(g->vote);
    }
    return rc;
}

size_t agg_ingest_overruled(const agg_ingest_t *g) { return g->overruled; }

void agg_ingest_reset(agg_ingest_t *g)
{
    if (g->buf)
        fm_fedbuff_reset(g->buf);
    else
        fm_robust_reset(g->rob);
    if (g->vote)
        fm_signvote_reset(g->vote);
    g->stale_sum = 0;
    g->unclipped = 0;
}

int agg_ingest_unclipped(const agg_ingest_t *g) { return g->unclipped; }

/* ---- verdicts ------------------------------------------------------------------------------ */

static int s_reject(agg_verdict_t *out, agg_reason_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set *out to a rejection for reason r; returns 1 (for `return s_reject(...)`). */
static int s_reject(agg_verdict_t *out, agg_reason_t r, const char *fmt, ...)
{
    out->kind = AGG_INGEST_REJECTED;
    out->reason = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why, sizeof out->why, fmt, ap);
    va_end(ap);
    return 1;
}

/* Reason for an error of fm_wire_peek / fm_wire_decode_*. */
static agg_reason_t s_decode_reason(int rc)
{
    switch (rc) {
    case FM_ETRUNC: return AGG_REJ_TRUNCATED;
    case FM_EVERSION: return AGG_REJ_VERSION;
    default: return AGG_REJ_MALFORMED;
    }
}

/* The encoding label of the decoded update (its largest tensor's: fm_codec_label). */
static void s_label(const agg_ingest_t *g, char *out, size_t cap)
{
    const fm_wire_tensor_t *big = NULL;
    size_t most = 0;
    for (int i = 0; i < g->tensors->count; i++) {
        const fm_wire_tensor_t *t = &g->tensors->t[i];
        const fm_view_t *v = fm_model_find(g->layout, t->name);
        if (!big || (v && v->numel > most)) {
            big = t;
            most = v ? v->numel : 0;
        }
    }
    if (big)
        fm_codec_label(&big->enc, out, cap);
    else
        snprintf(out, cap, "fp32");
}

/* Sum of squares of the checked tensor t (view v), reading an encoded one block by block
 * (which checks its indices and zstd frames). 0, or an fm_codec error in e. */
static int s_tensor_sumsq(agg_ingest_t *g, const fm_wire_tensor_t *t, const fm_view_t *v,
                          double *sumsq, fm_errmsg_t *e)
{
    if (fm_codec_is_raw(&t->enc)) {
        *sumsq += fm_screen_sumsq(t->data, t->nbytes / sizeof(float));
        return 0;
    }
    char what[FM_WIRE_STR_MAX + 16];
    snprintf(what, sizeof what, "tensor '%s'", v->name);
    fm_codec_block_t b;
    int rc = fm_codec_rd_open(g->rd, &t->enc, v->numel, what, e);
    while (rc == 0 && (rc = fm_codec_rd_next(g->rd, &b, e)) == 1) {
        *sumsq += fm_screen_sumsq(b.vals, b.n);
        rc = 0;
    }
    return rc;
}

/* Model name, tensors and values of a decoded UPDATE. 0 if they fit, else 1 (rejected). */
static int s_check_content(agg_ingest_t *g, const fm_wire_update_t *u, agg_verdict_t *out)
{
    fm_errmsg_t e = {{0}};
    const char *name = fm_model_name(g->layout);
    if (u->model[0] && strcmp(u->model, name) != 0)
        return s_reject(out, AGG_REJ_MODEL,
                        "UPDATE from %s: model '%s', this aggregator runs "
                        "'%s'",
                        u->trainer, u->model, name);
    int rc = fm_wire_tensors_check(g->tensors, g->layout, &e);
    if (rc) {
        agg_reason_t r = rc == FM_ENAME    ? AGG_REJ_NAME
                         : rc == FM_EDTYPE ? AGG_REJ_DTYPE
                         : rc == FM_ESHAPE ? AGG_REJ_SHAPE
                                           : AGG_REJ_ENCODING;
        return s_reject(out, r, "UPDATE from %s: %s", u->trainer, e.msg);
    }
    s_label(g, out->encoding, sizeof out->encoding);
    /* one pass: the norm, finite exactly when every value is (fm_screen.h); encoded tensors
     * are decoded here in blocks, which checks their indices and frames before any fold */
    double sumsq = 0.0;
    for (int i = 0; i < g->tensors->count; i++) {
        const fm_wire_tensor_t *t = &g->tensors->t[i];
        if ((rc = s_tensor_sumsq(g, t, fm_model_find(g->layout, t->name), &sumsq, &e)) != 0)
            return s_reject(out, AGG_REJ_ENCODING, "UPDATE from %s: %s", u->trainer, e.msg);
    }
    if (!isfinite(sumsq)) {
        const char *bad = "?";
        for (int i = 0; i < g->tensors->count; i++) {
            double one = 0.0;
            const fm_wire_tensor_t *t = &g->tensors->t[i];
            s_tensor_sumsq(g, t, fm_model_find(g->layout, t->name), &one, &e);
            if (!isfinite(one)) {
                bad = t->name;
                break;
            }
        }
        return s_reject(out, AGG_REJ_NONFINITE, "UPDATE from %s: tensor '%s': non-finite value",
                        u->trainer, bad);
    }
    g->norm = sqrt(sumsq);
    return 0;
}

/* Version, policy, staleness, id and weight of an UPDATE whose content fits. 0 with *tau
 * set if it may be folded, else 1 (rejected). */
static int s_check_fold(agg_ingest_t *g, const fm_wire_update_t *u, const agg_ingest_ctx_t *ctx,
                        uint64_t *tau, agg_verdict_t *out)
{
    uint64_t version = ctx->view.version;
    if (agg_idset_contains(g->ids, u->id))
        return s_reject(out, AGG_REJ_DUPLICATE,
                        "UPDATE from %s: id %02x%02x%02x%02x... seen "
                        "before",
                        u->trainer, u->id[0], u->id[1], u->id[2], u->id[3]);
    if (u->base > version)
        return s_reject(out, AGG_REJ_FUTURE, "UPDATE from %s: base version %llu > current %llu",
                        u->trainer, (unsigned long long)u->base, (unsigned long long)version);
    if (ctx->lost_last && u->base >= ctx->lost_first && u->base <= ctx->lost_last) {
        out->lost = 1;
        return s_reject(out, AGG_REJ_FUTURE,
                        "UPDATE from %s: base version %llu was lost (versions %llu-%llu: "
                        "checkpoints unreadable or reset)",
                        u->trainer, (unsigned long long)u->base,
                        (unsigned long long)ctx->lost_first, (unsigned long long)ctx->lost_last);
    }
    *tau = version - u->base;
    if (ctx->view.finished && ctx->stopped)
        return s_reject(out, AGG_REJ_LATE, "UPDATE from %s: %s, the run is over", u->trainer,
                        ctx->stopped);
    if (ctx->view.finished)
        return s_reject(out, AGG_REJ_LATE,
                        "UPDATE from %s: num_rounds = %d reached, the run "
                        "is over",
                        u->trainer, ctx->num_rounds);
    if (agg_policy_accept(g->policy, u, *tau, &ctx->view, &out->reason, out->why,
                          sizeof out->why)) {
        out->kind = AGG_INGEST_REJECTED;
        return 1;
    }
    if (*tau > (uint64_t)ctx->max_staleness)
        return s_reject(out, AGG_REJ_STALE, "UPDATE from %s: staleness %llu > max_staleness %d",
                        u->trainer, (unsigned long long)*tau, ctx->max_staleness);
    if (u->num_samples == 0)
        return s_reject(out, AGG_REJ_SAMPLES, "UPDATE from %s: n = 0 samples", u->trainer);
    int pending = agg_ingest_pending(g);
    for (int i = 0; g->clients && i < pending; i++)
        if (g->clients[i] == u->client)
            return s_reject(out, AGG_REJ_REPEAT,
                            "UPDATE from %s: client %u already has an update in this buffer "
                            "(privacy: one per client per step)",
                            u->trainer, u->client);
    return 0;
}

/* The norm screen of an update that may be folded: 0 with *scale (1, or the clip factor),
 * or 1 (rejected: overflow or norm). */
static int s_screen(agg_ingest_t *g, const fm_wire_update_t *u, double *scale, agg_verdict_t *out)
{
    out->norm = g->norm;
    fm_screen_verdict_t sv = fm_screen_judge(g->screen, g->norm, scale, &out->bound);
    if (sv == FM_SCREEN_OVERFLOW)
        return s_reject(out, AGG_REJ_OVERFLOW,
                        "UPDATE from %s: L2 norm %.4g > %g (overflow guard)", u->trainer, g->norm,
                        FM_SCREEN_NORM_CEILING);
    if (sv == FM_SCREEN_REJECTED)
        return s_reject(out, AGG_REJ_NORM, "UPDATE from %s: L2 norm %.4g > bound %.4g",
                        u->trainer, g->norm, out->bound);
    out->clipped = sv == FM_SCREEN_CLIPPED;
    return 0;
}

/* Fold the checked, screened update (tensors in g->tensors) with staleness tau and screen
 * factor `scale`. 0, or 1 (rejected: the buffer cannot weight it, or it could overflow the
 * mean's accumulator). */
static int s_fold(agg_ingest_t *g, const fm_wire_update_t *u, uint64_t tau, double scale,
                  agg_verdict_t *out)
{
    int rc = g->buf ? fm_fedbuff_begin_ex(g->buf, tau, u->num_samples, scale, g->norm)
                    : fm_robust_begin(g->rob, tau, scale);
    if (rc == FM_ENONFINITE)
        return s_reject(out, AGG_REJ_OVERFLOW,
                        "UPDATE from %s: n = %llu x L2 norm %.4g could overflow the buffer "
                        "(overflow guard)",
                        u->trainer, (unsigned long long)u->num_samples, g->norm);
    if (rc)
        return s_reject(out, AGG_REJ_SAMPLES, "UPDATE from %s: cannot be weighted (%s)",
                        u->trainer, fm_strerror(rc));
    for (int i = 0; i < g->tensors->count; i++) {
        const fm_wire_tensor_t *t = &g->tensors->t[i];
        const fm_view_t *v = fm_model_find(g->layout, t->name);
        FM_ASSERT(v); /* fm_wire_tensors_check passed */
        if (fm_codec_is_raw(&t->enc)) {
            FM_ASSERT(t->nbytes == 4 * v->numel);
            int frc = g->buf ? fm_fedbuff_fold_span(g->buf, v->offset, v->numel, t->data)
                             : fm_robust_fold_span(g->rob, v->offset, v->numel, t->data);
            if (g->vote)
                frc |= fm_signvote_fold_span(g->vote, v->offset, v->numel, t->data);
            FM_ASSERT(frc == 0);
            continue;
        }
        /* decoded straight into the accumulator, a block at a time: read once already
         * (s_check_content), so the frames and indices are known good */
        fm_errmsg_t e = {{0}};
        fm_codec_block_t b;
        int rc2 = fm_codec_rd_open(g->rd, &t->enc, v->numel, v->name, &e);
        while (rc2 == 0 && (rc2 = fm_codec_rd_next(g->rd, &b, &e)) == 1) {
            int frc;
            if (b.idx) {
                frc = g->buf ? fm_fedbuff_fold_scatter(g->buf, v->offset, v->numel, b.n, b.idx,
                                                       b.vals)
                             : fm_robust_fold_scatter(g->rob, v->offset, v->numel, b.n, b.idx,
                                                      b.vals);
                if (g->vote)
                    frc |= fm_signvote_fold_scatter(g->vote, v->offset, v->numel, b.n, b.idx,
                                                    b.vals);
            } else {
                frc = g->buf ? fm_fedbuff_fold_span(g->buf, v->offset + b.first, b.n, b.vals)
                             : fm_robust_fold_span(g->rob, v->offset + b.first, b.n, b.vals);
                if (g->vote)
                    frc |= fm_signvote_fold_span(g->vote, v->offset + b.first, b.n, b.vals);
            }
            FM_ASSERT(frc == 0);
            rc2 = 0;
        }
        FM_ASSERT(rc2 == 0); /* the same bytes decoded without error a moment ago */
    }
    int pending = agg_ingest_pending(g); /* before the end */
    if (g->clients && pending < g->policy->buffer_k)
        g->clients[pending] = u->client;
    if (g->buf)
        fm_fedbuff_end(g->buf);
    else
        fm_robust_end(g->rob);
    if (g->vote)
        fm_signvote_end(g->vote);
    agg_idset_add(g->ids, u->id);
    g->stale_sum += (double)tau;
    g->unclipped += !out->clipped;
    return 0;
}

/* An UPDATE frame (type peeked). */
static void s_update(agg_ingest_t *g, const void *data, size_t len, const agg_ingest_ctx_t *ctx,
                     agg_verdict_t *out)
{
    fm_errmsg_t e = {{0}};
    fm_wire_update_t *u = &out->update;
    int rc = fm_wire_decode_update(data, len, u, g->tensors, &e);
    if (rc) {
        s_reject(out, s_decode_reason(rc), "%s", e.msg);
        return;
    }
    out->has_id = 1;
    uint64_t tau = 0;
    char why[160];
    if (fm_sec_check_trainer(ctx->sec, ctx->user_id, u->trainer, u->client, 1, why, sizeof why)) {
        out->has_id = 0; /* not acknowledged: the sender may not speak for that trainer */
        s_reject(out, AGG_REJ_IDENTITY, "UPDATE from %s: %s", u->trainer, why);
        return;
    }
    if (ctx->secagg) {
        s_reject(out, AGG_REJ_SECAGG,
                 "UPDATE from %s client %u: [secagg] is enabled, updates are taken masked in "
                 "cohorts only (is that trainer's [secagg] enabled?)",
                 u->trainer, u->client);
        return;
    }
    double scale = 1.0;
    if (s_check_content(g, u, out) || s_check_fold(g, u, ctx, &tau, out) ||
        s_screen(g, u, &scale, out) || s_fold(g, u, tau, scale, out))
        return;
    out->kind = AGG_INGEST_FOLDED;
    out->tau = tau;
    out->aggregate = agg_policy_folded(g->policy, u,
                                       g->buf ? fm_fedbuff_full(g->buf) : fm_robust_full(g->rob));
}

void agg_ingest_frame(agg_ingest_t *g, const void *data, size_t len, const agg_ingest_ctx_t *ctx,
                      agg_verdict_t *out)
{
    fm_errmsg_t e = {{0}};
    fm_wire_type_t type = FM_WIRE_NONE;
    out->aggregate = 0;
    out->has_id = 0;
    out->lost = 0;
    out->clipped = 0;
    out->norm = out->bound = 0.0;
    out->encoding[0] = '\0';
    int rc = fm_wire_peek(data, len, &type, &e);
    if (rc) {
        s_reject(out, s_decode_reason(rc), "%s", e.msg);
        return;
    }
    if (type == FM_WIRE_HELLO || type == FM_WIRE_HEARTBEAT || type == FM_WIRE_BYE) {
        if ((rc = fm_wire_decode_member(data, len, &out->type, &out->member, &e)) != 0) {
            s_reject(out, s_decode_reason(rc), "%s", e.msg);
            return;
        }
        char why[160];
        const fm_wire_member_t *m = &out->member;
        if (fm_sec_check_trainer(ctx->sec, ctx->user_id, m->trainer, m->client_first,
                                 m->client_count, why, sizeof why)) {
            s_reject(out, AGG_REJ_IDENTITY, "%s from %s: %s", fm_wire_type_name(out->type),
                     m->trainer, why);
            return;
        }
        out->kind = AGG_INGEST_MEMBER;
        return;
    }
    if (type == FM_WIRE_DECLINE) {
        if ((rc = fm_wire_decode_decline(data, len, &out->decline, &e)) != 0) {
            s_reject(out, s_decode_reason(rc), "%s", e.msg);
            return;
        }
        char why[160];
        const fm_wire_decline_t *d = &out->decline;
        for (uint32_t i = 0; i < d->clients.count; i++)
            if (fm_sec_check_trainer(ctx->sec, ctx->user_id, d->trainer,
                                     fm_wire_cohort_at(&d->clients, i), 1, why, sizeof why)) {
                s_reject(out, AGG_REJ_IDENTITY, "DECLINE from %s: %s", d->trainer, why);
                return;
            }
        out->kind = AGG_INGEST_DECLINE;
        return;
    }
    if (ctx->secagg && (type == FM_WIRE_SA_KEYS || type == FM_WIRE_SA_SHARES ||
                        type == FM_WIRE_SA_MASKED || type == FM_WIRE_SA_UNMASK_SHARES)) {
        out->kind = AGG_INGEST_SECAGG;
        out->type = type;
        return;
    }
    if (type != FM_WIRE_UPDATE) {
        s_reject(out, AGG_REJ_UNEXPECTED_TYPE, "%s message on the updates socket",
                 fm_wire_type_name(type));
        return;
    }
    s_update(g, data, len, ctx, out);
}
