#include "aggregator_idset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"

#define S_EMPTY UINT32_MAX

struct agg_idset {
    size_t cap;      /* ids kept */
    size_t count;    /* ids in the ring */
    size_t head;     /* ring index of the oldest id */
    uint64_t added;  /* sequence number of the next id added (the oldest's: added - count) */
    size_t mask;     /* table size - 1 (table size: power of two >= 2 cap) */
    uint8_t *ring;   /* cap * FM_WIRE_ID_LEN bytes */
    uint32_t *table; /* ring slot of each entry, S_EMPTY if free */
};

static size_t s_hash(const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    h ^= h >> 33; /* ids are random; mix anyway in case a sender is not */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h;
}

static const uint8_t *s_id_at(const agg_idset_t *s, uint32_t slot)
{
    return s->ring + (size_t)slot * FM_WIRE_ID_LEN;
}

/* Table index holding ring slot `slot`'s id, or the free index where `id` would go. */
static size_t s_find(const agg_idset_t *s, const uint8_t *id)
{
    size_t i = s_hash(id) & s->mask;
    while (s->table[i] != S_EMPTY && memcmp(s_id_at(s, s->table[i]), id, FM_WIRE_ID_LEN) != 0)
        i = (i + 1) & s->mask;
    return i;
}

/* Remove table entry i (backward-shift deletion keeps probe chains intact). */
static void s_table_remove(agg_idset_t *s, size_t i)
{
    size_t j = i;
    for (;;) {
        s->table[i] = S_EMPTY;
        for (;;) {
            j = (j + 1) & s->mask;
            if (s->table[j] == S_EMPTY)
                return;
            size_t home = s_hash(s_id_at(s, s->table[j])) & s->mask;
            /* move j back to i unless its home lies cyclically in (i, j] */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        s->table[i] = s->table[j];
        i = j;
    }
}

agg_idset_t *agg_idset_new(size_t cap, int *err)
{
    int rc = 0;
    agg_idset_t *s = NULL;
    if (cap == 0 || cap > (size_t)1 << 30) {
        rc = FM_EARG;
        goto cleanup;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        rc = -ENOMEM;
        goto cleanup;
    }
    size_t tsize = 2;
    while (tsize < 2 * cap)
        tsize <<= 1;
    s->cap = cap;
    s->mask = tsize - 1;
    s->ring = malloc(cap * FM_WIRE_ID_LEN);
    s->table = malloc(tsize * sizeof *s->table);
    if (!s->ring || !s->table) {
        rc = -ENOMEM;
        goto cleanup;
    }
    memset(s->table, 0xff, tsize * sizeof *s->table);
cleanup:
    if (rc) {
        agg_idset_destroy(&s);
        if (err)
            *err = rc;
    }
    return s;
}

void agg_idset_destroy(agg_idset_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->ring);
    free((*p)->table);
    free(*p);
    *p = NULL;
}

int agg_idset_contains(const agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN])
{
    return s->table[s_find(s, id)] != S_EMPTY;
}

void agg_idset_add(agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN])
{
    uint32_t slot;
    if (s->count == s->cap) { /* forget the oldest */
        slot = (uint32_t)s->head;
        size_t i = s_hash(s_id_at(s, slot)) & s->mask;
        while (s->table[i] != slot)
            i = (i + 1) & s->mask;
        s_table_remove(s, i);
        s->head = (s->head + 1) % s->cap;
    } else {
        slot = (uint32_t)((s->head + s->count) % s->cap);
        s->count++;
    }
    s->added++;
    memcpy(s->ring + (size_t)slot * FM_WIRE_ID_LEN, id, FM_WIRE_ID_LEN);
    size_t i = s_hash(id) & s->mask;
    while (s->table[i] != S_EMPTY)
        i = (i + 1) & s->mask;
    s->table[i] = slot;
}

int agg_idset_find(const agg_idset_t *s, const uint8_t id[FM_WIRE_ID_LEN], uint64_t *seq)
{
    uint32_t slot = s->table[s_find(s, id)];
    if (slot == S_EMPTY)
        return 0;
    if (seq)
        *seq = s->added - s->count + (slot + s->cap - s->head) % s->cap;
    return 1;
}

uint64_t agg_idset_next_seq(const agg_idset_t *s) { return s->added; }

size_t agg_idset_range(const agg_idset_t *s, uint64_t from, uint64_t to, uint8_t *out)
{
    uint64_t oldest = s->added - s->count;
    if (from < oldest)
        from = oldest;
    if (to > s->added)
        to = s->added;
    size_t n = 0;
    for (uint64_t q = from; q < to; q++, n++)
        memcpy(out + n * FM_WIRE_ID_LEN,
               s_id_at(s, (uint32_t)((s->head + (size_t)(q - oldest)) % s->cap)), FM_WIRE_ID_LEN);
    return n;
}

size_t agg_idset_pop_newest(agg_idset_t *s, size_t n, uint8_t *out)
{
    if (n > s->count)
        n = s->count;
    for (size_t k = 0; k < n; k++) {
        uint32_t slot = (uint32_t)((s->head + s->count - n + k) % s->cap);
        if (out)
            memcpy(out + k * FM_WIRE_ID_LEN, s_id_at(s, slot), FM_WIRE_ID_LEN);
    }
    for (size_t k = 0; k < n; k++) { /* newest first: the table loses them one by one */
        uint32_t slot = (uint32_t)((s->head + s->count - 1) % s->cap);
        size_t i = s_hash(s_id_at(s, slot)) & s->mask;
        while (s->table[i] != slot)
            i = (i + 1) & s->mask;
        s_table_remove(s, i);
        s->count--;
        s->added--;
    }
    return n;
}

size_t agg_idset_count(const agg_idset_t *s) { return s->count; }
size_t agg_idset_cap(const agg_idset_t *s) { return s->cap; }

size_t agg_idset_dump(const agg_idset_t *s, size_t skip_newest, uint8_t *out)
{
    size_t n = skip_newest >= s->count ? 0 : s->count - skip_newest;
    for (size_t k = 0; k < n; k++)
        memcpy(out + k * FM_WIRE_ID_LEN, s_id_at(s, (uint32_t)((s->head + k) % s->cap)),
               FM_WIRE_ID_LEN);
    return n;
}

int agg_idset_load(agg_idset_t *s, const void *blob, size_t len)
{
    if (len % FM_WIRE_ID_LEN != 0)
        return FM_EFORMAT;
    const uint8_t *p = blob;
    for (size_t k = 0; k < len / FM_WIRE_ID_LEN; k++)
        if (!agg_idset_contains(s, p + k * FM_WIRE_ID_LEN))
            agg_idset_add(s, p + k * FM_WIRE_ID_LEN);
    return 0;
}
