#include "trainer_secagg.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fm_daemon.h"
#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_sa_codec.h"
#include "fm_sa_crypto.h"
#include "fm_sa_member.h"

/* One member: the slot of its client (one active member per client). */
typedef struct {
    int used;
    int dropped; /* the client will never upload: aborted here, waiting for M8 or timeout */
    uint64_t cohort;
    uint32_t index;
    uint32_t client;
    uint64_t mv;     /* the invite's model version */
    double train_by; /* arrival + keys + shares + train deadlines */
    double expires;  /* arrival + all four deadlines + TRAINER_SECAGG_GRACE_S */
    fm_sa_params_t p;
    fm_sa_member_t *m;
} s_member_t;

struct trainer_secagg {
    pthread_mutex_t mu;
    const char *trainer_id;
    trainer_ctx_t *ctx;
    uint32_t first, count;
    size_t nparams;
    s_member_t *members;       /* count slots, by client - first (under mu) */
    trainer_secagg_stats_t st; /* under mu */
    fm_ratelog_t log_refused, log_upload, log_timeout; /* under mu */
    /* decode scratch of the main thread (tens of KB each) */
    fm_wire_sa_key_list_t *kl;
    fm_wire_sa_shares_fwd_t *fwd;
    fm_wire_sa_unmask_req_t *ureq;
};

trainer_secagg_t *trainer_secagg_new(const char *trainer_id, trainer_ctx_t *ctx, uint32_t first,
                                     uint32_t count, size_t nparams, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    trainer_secagg_t *sa = calloc(1, sizeof *sa);
    if (!sa) {
        *err = fm_errmsg_set(e, -ENOMEM, "secagg: out of memory");
        return NULL;
    }
    if (fm_sa_crypto_init() != 0) {
        rc = fm_errmsg_set(e, -EIO, "secagg: libsodium cannot start");
        goto cleanup;
    }
    int mrc = pthread_mutex_init(&sa->mu, NULL);
    if (mrc != 0) {
        rc = fm_errmsg_set(e, -mrc, "secagg: mutex: %s", strerror(mrc));
        goto cleanup;
    }
    sa->trainer_id = trainer_id;
    sa->ctx = ctx;
    sa->first = first;
    sa->count = count;
    sa->nparams = nparams;
    sa->members = calloc(count ? count : 1, sizeof *sa->members);
    sa->kl = malloc(sizeof *sa->kl);
    sa->fwd = malloc(sizeof *sa->fwd);
    sa->ureq = malloc(sizeof *sa->ureq);
    if (!sa->members || !sa->kl || !sa->fwd || !sa->ureq) {
        pthread_mutex_destroy(&sa->mu);
        rc = fm_errmsg_set(e, -ENOMEM, "secagg: out of memory");
        goto cleanup;
    }
    return sa;
cleanup:
    free(sa->members);
    free(sa->kl);
    free(sa->fwd);
    free(sa->ureq);
    free(sa);
    *err = rc;
    return NULL;
}

void trainer_secagg_destroy(trainer_secagg_t **p)
{
    if (!p || !*p)
        return;
    trainer_secagg_t *sa = *p;
    for (uint32_t k = 0; k < sa->count; k++)
        fm_sa_member_destroy(&sa->members[k].m);
    pthread_mutex_destroy(&sa->mu);
    free(sa->members);
    free(sa->kl);
    free(sa->fwd);
    free(sa->ureq);
    free(sa);
    *p = NULL;
}

int trainer_secagg_is_sa(fm_wire_type_t type)
{
    return type >= FM_WIRE_SA_INVITE && type <= FM_WIRE_SA_ABORT;
}

/* The member (cohort, index), or NULL (sa->mu held). */
static s_member_t *s_find(trainer_secagg_t *sa, uint64_t cohort, uint32_t index)
{
    for (uint32_t k = 0; k < sa->count; k++) {
        s_member_t *mb = &sa->members[k];
        if (mb->used && mb->cohort == cohort && mb->index == index)
            return mb;
    }
    return NULL;
}

/* Wipe and free a member's slot, counted as done or aborted (sa->mu held). */
static void s_free(trainer_secagg_t *sa, s_member_t *mb)
{
    trainer_ctx_cancel_secagg(sa->ctx, mb->client, mb->cohort);
    if (fm_sa_member_state(mb->m) == FM_SA_MEMBER_DONE)
        sa->st.done++;
    else
        sa->st.aborted++;
    fm_sa_member_destroy(&mb->m);
    memset(mb, 0, sizeof *mb);
    sa->st.active--;
}

/* A handler refused `what` with reason r (sa->mu held): counted, one rate-limited line. */
static void s_refused(trainer_secagg_t *sa, const s_member_t *mb, const char *what,
                      fm_sa_reason_t r, const char *why)
{
    sa->st.rejected++;
    if (r > 0 && r < FM_SA_R_NREASONS)
        sa->st.by_reason[r]++;
    int aborted = fm_sa_member_state(mb->m) == FM_SA_MEMBER_ABORTED;
    fm_ratelog(&sa->log_refused, LOG_WARNING,
               "secagg: member %u of cohort %016llx (client %u): %s refused (%s): %s%s",
               mb->index, (unsigned long long)mb->cohort, mb->client, what, fm_sa_reason_name(r),
               why, aborted ? "; the member aborted" : "");
}

/* Send buf on the main thread's PUSH, never blocking (sa->mu not needed). */
static void s_send(trainer_secagg_t *sa, void *push, const fm_wire_buf_t *buf, const char *what)
{
    if (zmq_send(push, buf->data, buf->len, ZMQ_DONTWAIT) >= 0)
        return;
    int errnum = errno;
    pthread_mutex_lock(&sa->mu);
    sa->st.send_failed++;
    fm_ratelog(&sa->log_upload, LOG_WARNING, "secagg: %s not sent: %s", what,
               zmq_strerror(errnum));
    pthread_mutex_unlock(&sa->mu);
}

static int s_on_invite(trainer_secagg_t *sa, const void *data, size_t len, double now, void *push,
                       fm_wire_buf_t *buf, fm_errmsg_t *e)
{
    fm_wire_sa_invite_t inv;
    int rc = fm_wire_decode_sa_invite(data, len, &inv, e);
    if (rc)
        return rc;
    if (strcmp(inv.trainer, sa->trainer_id) != 0 || inv.client < sa->first ||
        inv.client - sa->first >= sa->count)
        return 0; /* someone else's */
    fm_sa_advertise_t adv;
    fm_errmsg_t em = {{0}};
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = &sa->members[inv.client - sa->first];
    const char *why = NULL;
    char line[300];
    if (mb->used) {
        snprintf(line, sizeof line, "client %u is already member %u of cohort %016llx",
                 inv.client, mb->index, (unsigned long long)mb->cohort);
        why = line;
    } else if (inv.p.m != sa->nparams + 1) {
        snprintf(line, sizeof line, "m = %u, the model has %zu parameters (+ 1 weight)", inv.p.m,
                 sa->nparams);
        why = line;
    } else if (s_find(sa, inv.p.cohort, inv.index)) {
        snprintf(line, sizeof line, "index %u is already taken here", inv.index);
        why = line;
    } else {
        int err = 0;
        fm_sa_member_t *m = fm_sa_member_new(&inv.p, inv.index, &adv, &err, &em);
        if (!m) {
            why = em.msg[0] ? em.msg : fm_strerror(err);
        } else {
            const fm_sa_deadlines_t *d = &inv.deadlines;
            *mb = (s_member_t){.used = 1,
                               .cohort = inv.p.cohort,
                               .index = inv.index,
                               .client = inv.client,
                               .mv = inv.version,
                               .train_by = now + d->keys + d->shares + d->train,
                               .expires = now + d->keys + d->shares + d->train + d->unmask +
                                          TRAINER_SECAGG_GRACE_S,
                               .p = inv.p,
                               .m = m};
            sa->st.joined++;
            sa->st.active++;
        }
    }
    if (why) {
        sa->st.refused++;
        fm_ratelog(&sa->log_refused, LOG_WARNING,
                   "secagg: invite to cohort %016llx as member %u (client %u) refused: %s",
                   (unsigned long long)inv.p.cohort, inv.index, inv.client, why);
        pthread_mutex_unlock(&sa->mu);
        return 0;
    }
    pthread_mutex_unlock(&sa->mu);
    FM_LOG(LOG_DEBUG, "secagg: client %u joins cohort %016llx as member %u of %u (model v%llu)",
           inv.client, (unsigned long long)inv.p.cohort, inv.index, inv.p.k,
           (unsigned long long)inv.version);
    if ((rc = fm_wire_encode_sa_keys(&adv, buf)) != 0) {
        FM_LOG(LOG_WARNING, "secagg: ADVERTISE_KEYS encode failed: %s", fm_strerror(rc));
        return 0;
    }
    s_send(sa, push, buf, "ADVERTISE_KEYS");
    return 0;
}

static int s_on_key_list(trainer_secagg_t *sa, const void *data, size_t len, void *push,
                         fm_wire_buf_t *buf, fm_errmsg_t *e)
{
    int rc = fm_wire_decode_sa_key_list(data, len, sa->kl, e);
    if (rc)
        return rc;
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, sa->kl->msg.cohort, sa->kl->to);
    int send = 0;
    if (mb && !mb->dropped) {
        fm_sa_shares_t out;
        fm_errmsg_t em = {{0}};
        fm_sa_reason_t r = fm_sa_member_on_key_list(mb->m, &sa->kl->msg, &out, &em);
        if (r != FM_SA_OK)
            s_refused(sa, mb, "KEY_LIST", r, em.msg);
        else if ((rc = fm_wire_encode_sa_shares(&out, buf)) != 0)
            FM_LOG(LOG_WARNING, "secagg: SHARES encode failed: %s", fm_strerror(rc));
        else
            send = 1;
    }
    pthread_mutex_unlock(&sa->mu);
    if (send)
        s_send(sa, push, buf, "SHARES");
    return 0;
}

static int s_on_shares_fwd(trainer_secagg_t *sa, const void *data, size_t len, fm_errmsg_t *e)
{
    int rc = fm_wire_decode_sa_shares_fwd(data, len, sa->fwd, e);
    if (rc)
        return rc;
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, sa->fwd->msg.cohort, sa->fwd->msg.to);
    if (mb && !mb->dropped) {
        fm_errmsg_t em = {{0}};
        fm_sa_reason_t r = fm_sa_member_on_shares_fwd(mb->m, &sa->fwd->msg, &em);
        if (r != FM_SA_OK) {
            s_refused(sa, mb, "SHARES_FWD", r, em.msg);
        } else if ((rc = trainer_ctx_queue_secagg(sa->ctx, mb->client, mb->cohort, mb->index,
                                                  mb->mv, mb->train_by)) != 0) {
            fm_sa_member_abort(mb->m);
            mb->dropped = 1;
            fm_ratelog(&sa->log_refused, LOG_WARNING,
                       "secagg: member %u of cohort %016llx: client %u cannot train (%s): "
                       "the member aborts",
                       mb->index, (unsigned long long)mb->cohort, mb->client,
                       rc == -EBUSY ? "a training of it is already queued" : "retired");
        }
    }
    pthread_mutex_unlock(&sa->mu);
    return 0;
}

static int s_on_unmask_req(trainer_secagg_t *sa, const void *data, size_t len, void *push,
                           fm_wire_buf_t *buf, fm_errmsg_t *e)
{
    int rc = fm_wire_decode_sa_unmask_req(data, len, sa->ureq, e);
    if (rc)
        return rc;
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, sa->ureq->msg.cohort, sa->ureq->to);
    int send = 0;
    if (mb && !mb->dropped) {
        fm_sa_unmask_shares_t out;
        fm_errmsg_t em = {{0}};
        fm_sa_reason_t r = fm_sa_member_on_unmask_req(mb->m, &sa->ureq->msg, &out, &em);
        if (r != FM_SA_OK)
            s_refused(sa, mb, "UNMASK_REQ", r, em.msg);
        else if ((rc = fm_wire_encode_sa_unmask_shares(&out, buf)) != 0)
            FM_LOG(LOG_WARNING, "secagg: UNMASK_SHARES encode failed: %s", fm_strerror(rc));
        else
            send = 1;
    }
    pthread_mutex_unlock(&sa->mu);
    if (send)
        s_send(sa, push, buf, "UNMASK_SHARES");
    return 0;
}

static int s_on_end(trainer_secagg_t *sa, const void *data, size_t len, fm_errmsg_t *e)
{
    fm_wire_type_t type;
    fm_wire_sa_end_t end;
    int rc = fm_wire_decode_sa_end(data, len, &type, &end, e);
    if (rc)
        return rc;
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, end.cohort, end.to);
    if (mb) {
        fm_errmsg_t em = {{0}};
        (void)fm_sa_member_on_done(mb->m, end.cohort, type == FM_WIRE_SA_ABORT, &em);
        FM_LOG(LOG_DEBUG, "secagg: member %u of cohort %016llx (client %u): %s, %s", mb->index,
               (unsigned long long)mb->cohort, mb->client, fm_wire_type_name(type),
               fm_sa_member_state_name(fm_sa_member_state(mb->m)));
        s_free(sa, mb);
    }
    pthread_mutex_unlock(&sa->mu);
    return 0;
}

int trainer_secagg_on_frame(trainer_secagg_t *sa, fm_wire_type_t type, const void *data,
                            size_t len, double now, void *push, fm_wire_buf_t *buf,
                            fm_errmsg_t *e)
{
    switch (type) {
    case FM_WIRE_SA_INVITE: return s_on_invite(sa, data, len, now, push, buf, e);
    case FM_WIRE_SA_KEY_LIST: return s_on_key_list(sa, data, len, push, buf, e);
    case FM_WIRE_SA_SHARES_FWD: return s_on_shares_fwd(sa, data, len, e);
    case FM_WIRE_SA_UNMASK_REQ: return s_on_unmask_req(sa, data, len, push, buf, e);
    case FM_WIRE_SA_DONE:
    case FM_WIRE_SA_ABORT: return s_on_end(sa, data, len, e);
    default: return fm_errmsg_set(e, FM_EFORMAT, "unexpected %s", fm_wire_type_name(type));
    }
}

uint32_t trainer_secagg_tick(trainer_secagg_t *sa, double now)
{
    uint32_t n = 0;
    pthread_mutex_lock(&sa->mu);
    for (uint32_t k = 0; k < sa->count; k++) {
        s_member_t *mb = &sa->members[k];
        if (!mb->used || now < mb->expires)
            continue;
        fm_ratelog(&sa->log_timeout, LOG_NOTICE,
                   "secagg: member %u of cohort %016llx (client %u) timed out in state %s "
                   "(no COHORT_DONE/ABORT): aborted",
                   mb->index, (unsigned long long)mb->cohort, mb->client,
                   fm_sa_member_state_name(fm_sa_member_state(mb->m)));
        fm_sa_member_abort(mb->m);
        sa->st.timeouts++;
        s_free(sa, mb);
        n++;
    }
    pthread_mutex_unlock(&sa->mu);
    return n;
}

/* A failed upload (sa->mu held): counted under send_failed, one rate-limited line. */
static int s_upload_failed(trainer_secagg_t *sa, uint64_t cohort, uint32_t index, int rc,
                           const char *why)
{
    sa->st.send_failed++;
    fm_ratelog(&sa->log_upload, LOG_WARNING,
               "secagg: MASKED_UPDATE of member %u of cohort %016llx not sent: %s", index,
               (unsigned long long)cohort, why);
    return rc;
}

int trainer_secagg_upload(trainer_secagg_t *sa, uint64_t cohort, uint32_t index,
                          const float *delta, size_t n, uint32_t *words, fm_wire_buf_t *buf,
                          void *push)
{
    int rc = 0;
    fm_errmsg_t em = {{0}};
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, cohort, index);
    if (!mb || mb->dropped || fm_sa_member_state(mb->m) != FM_SA_MEMBER_TRAINING) {
        rc = s_upload_failed(sa, cohort, index, mb ? FM_ESTATE : -ENOENT,
                             mb ? "the member is no longer training (aborted)"
                                : "the member is gone (cohort ended or timed out)");
        pthread_mutex_unlock(&sa->mu);
        return rc;
    }
    fm_sa_codec_t codec = {.k = mb->p.k, .clip = mb->p.clip, .s = mb->p.scale_bits};
    pthread_mutex_unlock(&sa->mu);
    /* clip and encode outside the lock: the main thread's handlers need it meanwhile */
    rc = fm_sa_codec_encode(&codec, delta, n, 1.0, NULL, words, &em);
    pthread_mutex_lock(&sa->mu);
    mb = s_find(sa, cohort, index);
    fm_sa_masked_t mk;
    if (rc == 0 && !mb)
        rc = s_upload_failed(sa, cohort, index, -ENOENT, "the member ended while training");
    else if (rc != 0) {
        if (mb) {
            fm_sa_member_abort(mb->m);
            mb->dropped = 1;
        }
        rc = s_upload_failed(sa, cohort, index, rc, em.msg);
    } else {
        fm_sa_reason_t r = fm_sa_member_mask(mb->m, words, words, (uint32_t)(n + 1), &mk, &em);
        if (r != FM_SA_OK)
            rc = s_upload_failed(sa, cohort, index, FM_ESTATE, em.msg);
    }
    pthread_mutex_unlock(&sa->mu);
    if (rc)
        return rc;
    if ((rc = fm_wire_encode_sa_masked(&mk, buf)) != 0 ||
        zmq_send(push, buf->data, buf->len, 0) < 0) {
        int errnum = errno;
        pthread_mutex_lock(&sa->mu);
        rc = s_upload_failed(sa, cohort, index, rc ? rc : -EAGAIN,
                             rc ? fm_strerror(rc) : zmq_strerror(errnum));
        pthread_mutex_unlock(&sa->mu);
        return rc;
    }
    pthread_mutex_lock(&sa->mu);
    sa->st.uploads++;
    pthread_mutex_unlock(&sa->mu);
    return 0;
}

void trainer_secagg_drop(trainer_secagg_t *sa, uint64_t cohort, uint32_t index)
{
    pthread_mutex_lock(&sa->mu);
    s_member_t *mb = s_find(sa, cohort, index);
    if (mb && !mb->dropped) {
        fm_sa_member_abort(mb->m);
        mb->dropped = 1;
    }
    pthread_mutex_unlock(&sa->mu);
}

void trainer_secagg_stats(trainer_secagg_t *sa, trainer_secagg_stats_t *out)
{
    pthread_mutex_lock(&sa->mu);
    *out = sa->st;
    pthread_mutex_unlock(&sa->mu);
}
