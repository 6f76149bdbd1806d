#include "aggregator_acks.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_sock.h"

#define S_LINGER_MS 1000 /* the last ACKs at shutdown get this long */
#define S_SNDHWM 10000   /* ACK frames queued per subscriber (each a few hundred bytes) */

struct agg_acks {
    zsock_t *pub;
    uint64_t boot;
    uint64_t acked_seq; /* ids below this sequence number were acknowledged */
    uint8_t *scratch;   /* FM_WIRE_MAX_ACK_IDS ids */
    fm_wire_buf_t buf;
    uint64_t applied, refused;
    fm_metric_t *m_applied, *m_refused;
    fm_ratelog_t log;
};

agg_acks_t *agg_acks_new(const char *endpoint, const fm_sec_t *sec, uint64_t durable_seq,
                         fm_metrics_t *metrics, int *err, fm_errmsg_t *e)
{
    int rc = -ENOMEM;
    agg_acks_t *a = calloc(1, sizeof *a);
    if (!a || !(a->scratch = malloc((size_t)FM_WIRE_MAX_ACK_IDS * FM_WIRE_ID_LEN))) {
        fm_errmsg_set(e, rc, "acks: %s", fm_strerror(rc));
        goto cleanup;
    }
    uint8_t rnd[FM_WIRE_ID_LEN];
    do {
        if ((rc = fm_wire_id_new(rnd)) != 0) {
            fm_errmsg_set(e, rc, "acks: no random incarnation id: %s", fm_strerror(rc));
            goto cleanup;
        }
        memcpy(&a->boot, rnd, sizeof a->boot);
    } while (a->boot == 0);
    a->acked_seq = durable_seq;
    fm_sock_opts_t o = {
        .linger_ms = S_LINGER_MS, .sndhwm = S_SNDHWM, .sec = sec, .side = FM_SEC_SERVE};
    if (!(a->pub = fm_sock_new(ZMQ_PUB, &o, "acks", &rc, e)) ||
        (rc = fm_sock_bind(a->pub, "endpoints.acks", endpoint, e)) != 0)
        goto cleanup;
    static const char help[] = "Update ids acknowledged: applied (durable in a checkpoint) or "
                               "refused (told why).";
    a->m_applied = fm_metrics_counter(metrics, "fedmq_acks_total", help,
                                      (const char *[]){"status", "applied", NULL});
    a->m_refused = fm_metrics_counter(metrics, "fedmq_acks_total", help,
                                      (const char *[]){"status", "refused", NULL});
    rc = metrics ? fm_metrics_status(metrics) : 0;
cleanup:
    if (rc) {
        agg_acks_destroy(&a);
        if (err)
            *err = rc;
    }
    return a;
}

void agg_acks_destroy(agg_acks_t **p)
{
    if (!p || !*p)
        return;
    zsock_destroy(&(*p)->pub);
    fm_wire_buf_free(&(*p)->buf);
    free((*p)->scratch);
    free(*p);
    *p = NULL;
}

uint64_t agg_acks_boot(const agg_acks_t *a) { return a->boot; }
uint64_t agg_acks_applied(const agg_acks_t *a) { return a->applied; }
uint64_t agg_acks_refused(const agg_acks_t *a) { return a->refused; }

void agg_acks_send(agg_acks_t *a, const uint8_t *ids, size_t n, const char *status,
                   uint64_t version)
{
    int applied = strcmp(status, AGG_ACK_APPLIED) == 0;
    while (n > 0) {
        size_t k = n < FM_WIRE_MAX_ACK_IDS ? n : FM_WIRE_MAX_ACK_IDS;
        fm_wire_ack_t ack = {
            .boot = a->boot, .version = version, .ids = ids, .count = (uint32_t)k};
        snprintf(ack.status, sizeof ack.status, "%s", status);
        int rc = fm_wire_encode_ack(&ack, &a->buf);
        if (rc == 0 && zmq_send(zsock_resolve(a->pub), a->buf.data, a->buf.len, ZMQ_DONTWAIT) < 0)
            rc = -zmq_errno();
        if (rc != 0)
            fm_ratelog(&a->log, LOG_WARNING, "ACK %s of %zu ids not sent: %s", status, k,
                       fm_strerror(rc));
        if (applied) {
            a->applied += k;
            fm_metric_add(a->m_applied, (double)k);
        } else {
            a->refused += k;
            fm_metric_add(a->m_refused, (double)k);
        }
        ids += k * FM_WIRE_ID_LEN;
        n -= k;
    }
}

int agg_acks_publish(agg_acks_t *a, const void *frame, size_t len)
{
    if (zmq_send(zsock_resolve(a->pub), frame, len, ZMQ_DONTWAIT) >= 0)
        return 0;
    int rc = -zmq_errno();
    fm_ratelog(&a->log, LOG_WARNING, "frame of %zu B not sent on acks: %s", len, fm_strerror(rc));
    return rc;
}

void agg_acks_commit(agg_acks_t *a, const agg_idset_t *ids, uint64_t durable_seq,
                     uint64_t version)
{
    while (a->acked_seq < durable_seq) {
        uint64_t to = durable_seq - a->acked_seq > FM_WIRE_MAX_ACK_IDS
                          ? a->acked_seq + FM_WIRE_MAX_ACK_IDS
                          : durable_seq;
        size_t n = agg_idset_range(ids, a->acked_seq, to, a->scratch);
        if (n > 0)
            agg_acks_send(a, a->scratch, n, AGG_ACK_APPLIED, version);
        a->acked_seq = to;
    }
}
