#include "aggregator_stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cfg.h"
#include "fm_ckpt.h"
#include "fm_file.h"
#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_window.h"

static const char *const s_reason_names[AGG_REJ_COUNT] = {
    [AGG_REJ_MALFORMED] = "malformed", [AGG_REJ_TRUNCATED] = "truncated",
    [AGG_REJ_VERSION] = "version",     [AGG_REJ_UNEXPECTED_TYPE] = "unexpected_type",
    [AGG_REJ_MODEL] = "model",         [AGG_REJ_NAME] = "name",
    [AGG_REJ_DTYPE] = "dtype",         [AGG_REJ_SHAPE] = "shape",
    [AGG_REJ_NONFINITE] = "nonfinite", [AGG_REJ_STALE] = "stale",
    [AGG_REJ_FUTURE] = "future",       [AGG_REJ_DUPLICATE] = "duplicate",
    [AGG_REJ_SAMPLES] = "samples",     [AGG_REJ_LATE] = "late",
    [AGG_REJ_COHORT] = "cohort",       [AGG_REJ_QUORUM] = "quorum",
};

_Static_assert(AGG_REJ_COUNT <= FM_CKPT_NREASONS, "reasons must fit the checkpoint counters");
_Static_assert(AGG_REJ_COUNT <= FM_STATS_REASONS_MAX, "reasons must fit stats.json");

struct agg_stats {
    char path[FM_CFG_STR_MAX + 32];
    agg_counters_t c;
    uint64_t bytes_received;
    uint64_t buffers_dropped;
    double started; /* wall clock */
    int dirty;
    double last_write_at; /* monotonic */
    fm_ratelog_t log;     /* rate limit of rejection warnings */
    fm_window_t folded;   /* updates accepted into the buffer: updates/s */
    double rate_written;  /* the updates/s in the file last written */

    /* failed writes of stats.json, and their rate limit */
    uint64_t write_failures;
    fm_ratelog_t wlog;
};

const char *agg_reason_name(agg_reason_t r)
{
    return (unsigned)r < AGG_REJ_COUNT ? s_reason_names[r] : "?";
}

agg_stats_t *agg_stats_new(const char *checkpoint_dir, double started, double now, int *err,
                           fm_errmsg_t *e)
{
    agg_stats_t *s = calloc(1, sizeof *s);
    int rc = s ? 0 : -ENOMEM;
    if (rc == 0 && (rc = fm_stats_path(s->path, sizeof s->path, checkpoint_dir)) != 0)
        fm_errmsg_set(e, rc, "%s/stats.json: path too long", checkpoint_dir);
    if (rc) {
        if (rc == -ENOMEM)
            fm_errmsg_set(e, rc, "aggregator stats: %s", fm_strerror(rc));
        free(s);
        if (err)
            *err = rc;
        return NULL;
    }
    s->started = started;
    fm_file_clean(s->path); /* temp files of a killed predecessor */
    fm_window_init(&s->folded, AGG_STATS_RATE_SPAN_S, now);
    return s;
}

void agg_stats_destroy(agg_stats_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

const agg_counters_t *agg_stats_counters(const agg_stats_t *s) { return &s->c; }

void agg_stats_restore(agg_stats_t *s, const agg_counters_t *c)
{
    s->c = *c;
    s->dirty = 1;
}

void agg_stats_reject(agg_stats_t *s, agg_reason_t r, const char *why)
{
    FM_ASSERT((unsigned)r < AGG_REJ_COUNT);
    s->c.rejected[r]++;
    s->c.rejected_total++;
    s->dirty = 1;
    fm_ratelog(&s->log, LOG_WARNING, "rejected frame (%s): %s", s_reason_names[r], why);
}

void agg_stats_received(agg_stats_t *s, size_t len) { s->bytes_received += len; }

void agg_stats_applied(agg_stats_t *s, uint64_t count)
{
    s->c.applied += count;
    s->dirty = 1;
}

void agg_stats_folded(agg_stats_t *s, double now) { fm_window_add(&s->folded, now, 1); }

double agg_stats_rate(agg_stats_t *s, double now) { return fm_window_rate(&s->folded, now); }

void agg_stats_buffer_dropped(agg_stats_t *s)
{
    s->buffers_dropped++;
    s->dirty = 1;
}

void agg_stats_touch(agg_stats_t *s) { s->dirty = 1; }

uint64_t agg_stats_write_failures(const agg_stats_t *s) { return s->write_failures; }

int agg_stats_due(const agg_stats_t *s, double now)
{
    /* the rate changes as time passes: rewrite while it is (or was last written) nonzero */
    int changing = s->folded.total > 0 || s->rate_written > 0;
    return (s->dirty || changing) && now - s->last_write_at >= AGG_STATS_MIN_S;
}

int agg_stats_write(agg_stats_t *s, fm_stats_t *st, double now, double wallclock)
{
    st->updates_applied = s->c.applied;
    st->updates_rejected = s->c.rejected_total;
    st->nreasons = 0;
    for (int r = 0; r < AGG_REJ_COUNT; r++) {
        int bad = fm_stats_set_rejected(st, s_reason_names[r], s->c.rejected[r]);
        FM_ASSERT(bad == 0); /* names are short, the table fits (static asserts) */
    }
    st->bytes_received = s->bytes_received;
    st->buffers_dropped = s->buffers_dropped;
    st->started = s->started;
    st->updated = wallclock;
    st->updates_per_s = fm_window_rate(&s->folded, now);
    st->rate_window_s = fm_window_span(&s->folded);
    st->stats_write_failures = s->write_failures;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_write(s->path, st, &e);
    if (rc) {
        s->write_failures++;
        s->last_write_at = now; /* retried when due again, not at every tick */
        fm_ratelog(&s->wlog, LOG_ERR, "%s (stats.json is stale; %llu failed writes so far)",
                   e.msg[0] ? e.msg : fm_strerror(rc), (unsigned long long)s->write_failures);
        return rc;
    }
    s->dirty = 0;
    s->last_write_at = now;
    s->rate_written = st->updates_per_s;
    return 0;
}
