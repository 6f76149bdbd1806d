#include "trainer_outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define S_BACKOFF_MAX 8.0 /* the wait before a resend grows to this many timeouts */

typedef struct {
    uint8_t id[FM_WIRE_ID_LEN];
    double next; /* monotonic time of the next resend */
    int resends; /* done so far */
    size_t len;
    unsigned char *frame;
} s_entry_t;

struct trainer_outbox {
    pthread_mutex_t mu;
    size_t max_bytes;
    double timeout;
    s_entry_t *e; /* send order, oldest first */
    size_t n, cap;
    trainer_outbox_stats_t st;
};

trainer_outbox_t *trainer_outbox_new(size_t max_bytes, double timeout, int *err)
{
    trainer_outbox_t *o = calloc(1, sizeof *o);
    int rc = o ? pthread_mutex_init(&o->mu, NULL) : ENOMEM;
    if (rc) {
        free(o);
        if (err)
            *err = -rc;
        return NULL;
    }
    o->max_bytes = max_bytes ? max_bytes : 1;
    o->timeout = timeout;
    return o;
}

void trainer_outbox_set_timeout(trainer_outbox_t *o, double timeout)
{
    pthread_mutex_lock(&o->mu);
    o->timeout = timeout;
    pthread_mutex_unlock(&o->mu);
}

void trainer_outbox_destroy(trainer_outbox_t **p)
{
    if (!p || !*p)
        return;
    trainer_outbox_t *o = *p;
    for (size_t i = 0; i < o->n; i++)
        free(o->e[i].frame);
    free(o->e);
    pthread_mutex_destroy(&o->mu);
    free(o);
    *p = NULL;
}

/* Remove entry i (under the lock), keeping the order. */
static void s_remove(trainer_outbox_t *o, size_t i)
{
    o->st.bytes -= o->e[i].len;
    free(o->e[i].frame);
    memmove(&o->e[i], &o->e[i + 1], (o->n - i - 1) * sizeof *o->e);
    o->n--;
    o->st.entries = o->n;
}

int trainer_outbox_put(trainer_outbox_t *o, const uint8_t id[FM_WIRE_ID_LEN], const void *frame,
                       size_t len, double now)
{
    if (len > o->max_bytes) {
        pthread_mutex_lock(&o->mu);
        o->st.evicted++;
        pthread_mutex_unlock(&o->mu);
        return 1;
    }
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, frame, len);
    int evicted = 0;
    pthread_mutex_lock(&o->mu);
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 16;
        s_entry_t *e = realloc(o->e, cap * sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&o->mu);
            free(copy);
            return -ENOMEM;
        }
        o->e = e;
        o->cap = cap;
    }
    while (o->n > 0 && o->st.bytes + len > o->max_bytes) {
        s_remove(o, 0);
        o->st.evicted++;
        evicted++;
    }
    s_entry_t *x = &o->e[o->n++];
    memcpy(x->id, id, FM_WIRE_ID_LEN);
    x->next = now + o->timeout;
    x->resends = 0;
    x->len = len;
    x->frame = copy;
    o->st.bytes += len;
    o->st.entries = o->n;
    o->st.kept++;
    pthread_mutex_unlock(&o->mu);
    return evicted;
}

size_t trainer_outbox_ack(trainer_outbox_t *o, const void *ids, size_t n, int applied,
                          uint8_t *found)
{
    if (found)
        memset(found, 0, n);
    const unsigned char *p = ids;
    size_t nfound = 0;
    pthread_mutex_lock(&o->mu);
    for (size_t k = 0; k < n && o->n > 0; k++) {
        for (size_t i = 0; i < o->n; i++) {
            if (memcmp(o->e[i].id, p + k * FM_WIRE_ID_LEN, FM_WIRE_ID_LEN) == 0) {
                s_remove(o, i);
                nfound++;
                if (found)
                    found[k] = 1;
                break;
            }
        }
    }
    if (applied)
        o->st.acked += nfound;
    else
        o->st.refused += nfound;
    pthread_mutex_unlock(&o->mu);
    return nfound;
}

size_t trainer_outbox_resend(trainer_outbox_t *o, double now, int all,
                             int (*send)(void *arg, const void *frame, size_t len), void *arg)
{
    size_t sent = 0;
    pthread_mutex_lock(&o->mu);
    double timeout = o->timeout;
    for (size_t i = 0; i < o->n; i++) {
        s_entry_t *x = &o->e[i];
        if (!all && x->next > now)
            continue;
        if (send(arg, x->frame, x->len) != 0)
            break; /* the socket is full: the rest stay due */
        x->resends++;
        double wait = timeout;
        for (int r = 0; r < x->resends && wait < S_BACKOFF_MAX * timeout; r++)
            wait *= 2;
        x->next = now + (wait < S_BACKOFF_MAX * timeout ? wait : S_BACKOFF_MAX * timeout);
        sent++;
    }
    o->st.resent += sent;
    pthread_mutex_unlock(&o->mu);
    return sent;
}

void trainer_outbox_stats(trainer_outbox_t *o, trainer_outbox_stats_t *st)
{
    pthread_mutex_lock(&o->mu);
    *st = o->st;
    pthread_mutex_unlock(&o->mu);
}
