#include "fm_members.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A client range [first, end) as the union count sees it. */
typedef struct {
    uint64_t first, end;
} s_range_t;

struct fm_members {
    fm_member_t e[FM_MEMBERS_MAX];
    int n; /* entries e[0..n) are live, unordered */
    fm_members_limits_t lim;
    uint64_t refused[FM_MEMBERS_REFUSED_COUNT];
    fm_metric_t *refused_metric[FM_MEMBERS_REFUSED_COUNT]; /* NULL: no /metrics */
    s_range_t scratch[FM_MEMBERS_MAX];                     /* fm_members_clients */
};

static const char *const s_refusal_names[FM_MEMBERS_REFUSED_COUNT] = {
    [FM_MEMBERS_REFUSED_CLIENTS] = "clients",
    [FM_MEMBERS_REFUSED_FOREIGN] = "foreign",
    [FM_MEMBERS_REFUSED_SHARE] = "peer_share",
    [FM_MEMBERS_REFUSED_FULL] = "full",
};

const char *fm_members_refusal_name(fm_members_refusal_t r)
{
    return (unsigned)r < FM_MEMBERS_REFUSED_COUNT ? s_refusal_names[r] : "?";
}

static const fm_members_limits_t s_unbounded = {.num_clients = 0, .per_origin = FM_MEMBERS_MAX};

void fm_members_set_limits(fm_members_t *self, const fm_members_limits_t *lim)
{
    self->lim = lim ? *lim : s_unbounded;
    FM_ASSERT(self->lim.per_origin >= 1 && self->lim.per_origin <= FM_MEMBERS_MAX);
}

fm_members_t *fm_members_new(const fm_members_limits_t *lim)
{
    fm_members_t *self = calloc(1, sizeof(fm_members_t));
    if (self)
        fm_members_set_limits(self, lim);
    return self;
}

void fm_members_destroy(fm_members_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

int fm_members_metrics(fm_members_t *self, fm_metrics_t *m)
{
    for (int r = 0; r < FM_MEMBERS_REFUSED_COUNT; r++) {
        self->refused_metric[r] = fm_metrics_counter(
            m, "fedmq_members_refused_total",
            "Membership messages (HELLO/HEARTBEAT/BYE) refused, by reason.",
            (const char *[]){"reason", s_refusal_names[r], NULL});
        fm_metric_set(self->refused_metric[r], (double)self->refused[r]);
    }
    return fm_metrics_status(m);
}

uint64_t fm_members_refused(const fm_members_t *self, fm_members_refusal_t r)
{
    return (unsigned)r < FM_MEMBERS_REFUSED_COUNT ? self->refused[r] : 0;
}

/* Count a refusal; returns the event for it. */
static fm_member_event_t s_refuse(fm_members_t *self, fm_members_refusal_t r)
{
    static const fm_member_event_t ev[FM_MEMBERS_REFUSED_COUNT] = {
        [FM_MEMBERS_REFUSED_CLIENTS] = FM_MEMBER_REFUSED_CLIENTS,
        [FM_MEMBERS_REFUSED_FOREIGN] = FM_MEMBER_REFUSED_FOREIGN,
        [FM_MEMBERS_REFUSED_SHARE] = FM_MEMBER_REFUSED_SHARE,
        [FM_MEMBERS_REFUSED_FULL] = FM_MEMBER_FULL,
    };
    self->refused[r]++;
    fm_metric_inc(self->refused_metric[r]);
    return ev[r];
}

/* Index of the entry for trainer id `trainer`, or -1. */
static int s_find(const fm_members_t *self, const char *trainer)
{
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->e[i].m.trainer, trainer) == 0)
            return i;
    return -1;
}

/* Entries bound to `origin`. */
static int s_held(const fm_members_t *self, const char *origin)
{
    int k = 0;
    for (int i = 0; i < self->n; i++)
        k += strcmp(self->e[i].origin, origin) == 0;
    return k;
}

/* Remove entry i (the last one moves into its place). */
static void s_remove(fm_members_t *self, int i)
{
    self->e[i] = self->e[self->n - 1];
    self->n--;
}

/* The origin key of `o` into out[FM_MEMBERS_ORIGIN_MAX + 2]: "i" + identity or "p" + peer. */
static void s_origin_key(const fm_member_origin_t *o, char *out)
{
    const char *id = o ? o->identity : NULL;
    const char *peer = o && o->peer ? o->peer : "";
    const char *s = id ? id : peer;
    size_t n = strlen(s);
    FM_ASSERT(n <= FM_MEMBERS_ORIGIN_MAX);
    out[0] = id ? 'i' : 'p';
    memcpy(out + 1, s, n + 1);
}

/* 1 if the member's client range is possible for this table and origin. */
static int s_range_ok(const fm_members_t *self, const fm_wire_member_t *m,
                      const fm_member_origin_t *o)
{
    uint64_t first = m->client_first, end = first + m->client_count;
    if (m->client_count == 0)
        return 1; /* serves no fixed clients: "cfirst" means nothing */
    if (self->lim.num_clients && end > self->lim.num_clients)
        return 0;
    if (o && o->has_enrolled &&
        (first < o->enrolled_first || end > (uint64_t)o->enrolled_first + o->enrolled_count))
        return 0;
    return 1;
}

fm_member_event_t fm_members_apply(fm_members_t *self, fm_wire_type_t type,
                                   const fm_wire_member_t *m, const fm_member_origin_t *origin,
                                   double now, uint32_t *old_pid)
{
    char key[FM_MEMBERS_ORIGIN_MAX + 2];
    s_origin_key(origin, key);
    if (!s_range_ok(self, m, origin))
        return s_refuse(self, FM_MEMBERS_REFUSED_CLIENTS);
    int i = s_find(self, m->trainer);
    if (i >= 0 && strcmp(self->e[i].origin, key) != 0)
        return s_refuse(self, FM_MEMBERS_REFUSED_FOREIGN);
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
            return s_refuse(self, FM_MEMBERS_REFUSED_FULL);
        if (s_held(self, key) >= self->lim.per_origin)
            return s_refuse(self, FM_MEMBERS_REFUSED_SHARE);
        i = self->n++;
        self->e[i].m = *m;
        self->e[i].last_seen = now;
        memcpy(self->e[i].origin, key, strlen(key) + 1);
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

static int s_cmp_range(const void *a, const void *b)
{
    const s_range_t *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

uint64_t fm_members_clients(fm_members_t *self)
{
    int k = 0;
    for (int i = 0; i < self->n; i++) {
        uint64_t first = self->e[i].m.client_first, end = first + self->e[i].m.client_count;
        if (end > (uint64_t)UINT32_MAX + 1)
            end = (uint64_t)UINT32_MAX + 1; /* client ids are u32 */
        if (end > first)
            self->scratch[k++] = (s_range_t){first, end};
    }
    qsort(self->scratch, (size_t)k, sizeof self->scratch[0], s_cmp_range);
    uint64_t sum = 0, covered = 0; /* ids below `covered` are counted */
    for (int i = 0; i < k; i++) {
        uint64_t from = self->scratch[i].first > covered ? self->scratch[i].first : covered;
        if (self->scratch[i].end > from)
            sum += self->scratch[i].end - from;
        if (self->scratch[i].end > covered)
            covered = self->scratch[i].end;
    }
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

int fm_members_owner(const fm_members_t *self, uint32_t client, char *trainer)
{
    for (int i = 0; i < self->n; i++) {
        const fm_wire_member_t *m = &self->e[i].m;
        if (client >= m->client_first &&
            (uint64_t)client < (uint64_t)m->client_first + m->client_count) {
            memcpy(trainer, m->trainer, sizeof m->trainer);
            return 1;
        }
    }
    return 0;
}

void fm_members_peer(const char *endpoint, const char *addr, char *out)
{
    if (addr && *addr && endpoint && strncmp(endpoint, "tcp://", 6) == 0) {
        snprintf(out, FM_MEMBERS_ORIGIN_MAX + 1, "%s", addr);
        return;
    }
    if (addr && endpoint && strncmp(endpoint, "ipc://", 6) == 0) {
        /* "<host>:uid:gid:pid": the uid is the third field from the end */
        const char *p = addr + strlen(addr);
        int colons = 0;
        while (p > addr && colons < 3)
            if (*--p == ':')
                colons++;
        if (colons == 3) {
            char *end = NULL;
            unsigned long uid = strtoul(p + 1, &end, 10);
            if (end != p + 1 && *end == ':') {
                snprintf(out, FM_MEMBERS_ORIGIN_MAX + 1, "uid:%lu", uid);
                return;
            }
        }
    }
    snprintf(out, FM_MEMBERS_ORIGIN_MAX + 1, "local");
}
