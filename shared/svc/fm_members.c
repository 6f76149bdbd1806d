#include "fm_members.h"

#include <stdlib.h>
#include <string.h>

struct fm_members {
    fm_member_t e[FM_MEMBERS_MAX];
    int n; /* entries e[0..n) are live, unordered */
};

fm_members_t *fm_members_new(void) { return calloc(1, sizeof(fm_members_t)); }

void fm_members_destroy(fm_members_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* Index of the entry for trainer id `trainer`, or -1. */
static int s_find(const fm_members_t *self, const char *trainer)
{
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->e[i].m.trainer, trainer) == 0)
            return i;
    return -1;
}

/* Remove entry i (the last one moves into its place). */
static void s_remove(fm_members_t *self, int i)
{
    self->e[i] = self->e[self->n - 1];
    self->n--;
}

fm_member_event_t fm_members_apply(fm_members_t *self, fm_wire_type_t type,
                                   const fm_wire_member_t *m, double now, uint32_t *old_pid)
{
    int i = s_find(self, m->trainer);
    if (type == FM_WIRE_BYE) {
        if (i < 0 || self->e[i].m.pid != m->pid)
            return FM_MEMBER_UNKNOWN_BYE;
        if (m->seq <= self->e[i].m.seq)
            return FM_MEMBER_STALE;
        s_remove(self, i);
        return FM_MEMBER_LEFT;
    }
    if (i < 0) {
        if (self->n >= FM_MEMBERS_MAX)
            return FM_MEMBER_FULL;
        i = self->n++;
        self->e[i].m = *m;
        self->e[i].last_seen = now;
        return FM_MEMBER_JOINED;
    }
    fm_member_t *ent = &self->e[i];
    if (ent->m.pid != m->pid) {
        if (old_pid)
            *old_pid = ent->m.pid;
        ent->m = *m;
        ent->last_seen = now;
        return FM_MEMBER_RESTARTED;
    }
    if (m->seq <= ent->m.seq)
        return FM_MEMBER_STALE;
    if (type == FM_WIRE_HEARTBEAT) {
        ent->m = *m;
    } else {
        /* a repeated HELLO of the same incarnation: keep the last busy/sent counts */
        uint64_t sent = ent->m.updates_sent;
        uint32_t busy = ent->m.busy;
        ent->m = *m;
        ent->m.updates_sent = sent;
        ent->m.busy = busy;
    }
    ent->last_seen = now;
    return FM_MEMBER_REFRESHED;
}

int fm_members_expire(fm_members_t *self, double now, double timeout_s,
                      void (*on_expired)(void *arg, const fm_member_t *entry), void *arg)
{
    int expired = 0;
    for (int i = 0; i < self->n;) {
        if (self->e[i].last_seen < now - timeout_s) {
            if (on_expired)
                on_expired(arg, &self->e[i]);
            s_remove(self, i);
            expired++;
        } else {
            i++;
        }
    }
    return expired;
}

int fm_members_count(const fm_members_t *self) { return self->n; }

uint64_t fm_members_clients(const fm_members_t *self)
{
    uint64_t sum = 0;
    for (int i = 0; i < self->n; i++)
        sum += self->e[i].m.client_count;
    return sum;
}

uint32_t fm_members_live_clients(const fm_members_t *self, uint32_t num_clients, uint8_t *mark)
{
    memset(mark, 0, num_clients);
    uint32_t live = 0;
    for (int i = 0; i < self->n; i++) {
        uint64_t first = self->e[i].m.client_first;
        uint64_t end = first + self->e[i].m.client_count;
        for (uint64_t k = first; k < end && k < num_clients; k++) {
            live += !mark[k];
            mark[k] = 1;
        }
    }
    return live;
}
