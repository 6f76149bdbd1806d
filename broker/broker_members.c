#include "broker_members.h"

#include <stdlib.h>
#include <string.h>

struct broker_members {
    broker_member_t e[BROKER_MEMBERS_MAX];
    int n; /* entries e[0..n) are live, unordered */
};

broker_members_t *broker_members_new(void)
{
    return calloc(1, sizeof(broker_members_t));
}

void broker_members_destroy(broker_members_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* Index of the entry for trainer id `trainer`, or -1. */
static int s_find(const broker_members_t *self, const char *trainer)
{
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->e[i].m.trainer, trainer) == 0)
            return i;
    return -1;
}

/* Remove entry i (the last one moves into its place). */
static void s_remove(broker_members_t *self, int i)
{
    self->e[i] = self->e[self->n - 1];
    self->n--;
}

broker_member_event_t broker_members_apply(broker_members_t *self, fm_wire_type_t type,
                                           const fm_wire_member_t *m, double now,
                                           uint32_t *old_pid)
{
    int i = s_find(self, m->trainer);
    if (type == FM_WIRE_BYE) {
        if (i < 0 || self->e[i].m.pid != m->pid)
            return BROKER_MEMBER_UNKNOWN_BYE;
        if (m->seq <= self->e[i].m.seq)
            return BROKER_MEMBER_STALE;
        s_remove(self, i);
        return BROKER_MEMBER_LEFT;
    }
    if (i < 0) {
        if (self->n >= BROKER_MEMBERS_MAX)
            return BROKER_MEMBER_FULL;
        i = self->n++;
        self->e[i].m = *m;
        self->e[i].last_seen = now;
        return BROKER_MEMBER_JOINED;
    }
    broker_member_t *ent = &self->e[i];
    if (ent->m.pid != m->pid) {
        if (old_pid)
            *old_pid = ent->m.pid;
        ent->m = *m;
        ent->last_seen = now;
        return BROKER_MEMBER_RESTARTED;
    }
    if (m->seq <= ent->m.seq)
        return BROKER_MEMBER_STALE;
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
    return BROKER_MEMBER_REFRESHED;
}

int broker_members_expire(broker_members_t *self, double now, double timeout_s,
                          void (*on_expired)(void *arg, const broker_member_t *entry),
                          void *arg)
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

int broker_members_count(const broker_members_t *self) { return self->n; }

uint64_t broker_members_clients(const broker_members_t *self)
{
    uint64_t sum = 0;
    for (int i = 0; i < self->n; i++)
        sum += self->e[i].m.client_count;
    return sum;
}
