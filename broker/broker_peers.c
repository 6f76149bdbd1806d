#include "broker_peers.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_hex.h"

#define S_KEY_CAP (2 * BROKER_PEERS_ID_MAX + 1) /* a routing id as hex text */

/* What one peer was offered last. */
typedef struct {
    uint64_t gen; /* model generation offered */
    double t;     /* when */
} s_entry_t;

struct broker_peers {
    zhashx_t *map; /* hex routing id -> s_entry_t (owned) */
    size_t cap;
    double repeat_s;
    uint64_t evicted;
};

static void s_entry_free(void **item)
{
    free(*item);
    *item = NULL;
}

/* The hex key of `id` into key[S_KEY_CAP]; false for an id of no or too many bytes. */
static bool s_key(char key[S_KEY_CAP], const void *id, size_t len)
{
    if (len == 0 || len > BROKER_PEERS_ID_MAX)
        return false;
    fm_hex_encode(key, id, len);
    return true;
}

/* Forget the entry offered longest ago. */
static void s_evict_oldest(broker_peers_t *p)
{
    char oldest[S_KEY_CAP] = "";
    double t = 0;
    for (s_entry_t *x = zhashx_first(p->map); x; x = zhashx_next(p->map)) {
        if (!oldest[0] || x->t < t) {
            snprintf(oldest, sizeof oldest, "%s", (const char *)zhashx_cursor(p->map));
            t = x->t;
        }
    }
    if (oldest[0]) {
        zhashx_delete(p->map, oldest);
        p->evicted++;
    }
}

broker_peers_t *broker_peers_new(size_t cap, double repeat_s)
{
    broker_peers_t *p = calloc(1, sizeof *p);
    if (!p || !(p->map = zhashx_new())) {
        free(p);
        return NULL;
    }
    zhashx_set_destructor(p->map, s_entry_free);
    p->cap = cap > 0 ? cap : 1;
    p->repeat_s = repeat_s;
    return p;
}

void broker_peers_destroy(broker_peers_t **p)
{
    if (!p || !*p)
        return;
    zhashx_destroy(&(*p)->map);
    free(*p);
    *p = NULL;
}

bool broker_peers_repeat(broker_peers_t *p, const void *id, size_t len, uint64_t gen, double now)
{
    char key[S_KEY_CAP];
    if (!s_key(key, id, len))
        return false;
    const s_entry_t *x = zhashx_lookup(p->map, key);
    return x && x->gen == gen && now - x->t < p->repeat_s;
}

int broker_peers_mark(broker_peers_t *p, const void *id, size_t len, uint64_t gen, double now)
{
    char key[S_KEY_CAP];
    if (!s_key(key, id, len))
        return -EINVAL;
    s_entry_t *x = zhashx_lookup(p->map, key);
    if (!x) {
        if (!(x = malloc(sizeof *x)))
            return -ENOMEM;
        if (zhashx_size(p->map) >= p->cap)
            s_evict_oldest(p);
        if (zhashx_insert(p->map, key, x) != 0) {
            free(x);
            return -ENOMEM;
        }
    }
    x->gen = gen;
    x->t = now;
    return 0;
}

void broker_peers_forget(broker_peers_t *p, const void *id, size_t len)
{
    char key[S_KEY_CAP];
    if (s_key(key, id, len))
        zhashx_delete(p->map, key);
}

size_t broker_peers_size(const broker_peers_t *p) { return zhashx_size(p->map); }

uint64_t broker_peers_evicted(const broker_peers_t *p) { return p->evicted; }
