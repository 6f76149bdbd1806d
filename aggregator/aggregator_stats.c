#include "aggregator_stats.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cfg.h"
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
    [AGG_REJ_IDENTITY] = "identity",   [AGG_REJ_NORM] = "norm",
    [AGG_REJ_OVERFLOW] = "overflow",   [AGG_REJ_REPEAT] = "repeat",
    [AGG_REJ_SECAGG] = "secagg",       [AGG_REJ_ENCODING] = "encoding",
};

/* the first FM_CKPT_NREASONS counters go in the checkpoint header, the rest in the record
 * blob "agg.reasons" (aggregator_state.c) */
_Static_assert(AGG_REJ_COUNT <= FM_STATS_REASONS_MAX, "reasons must fit stats.json");

#define S_ENC_UPDATES_HELP "Updates folded, by their encoding."
#define S_ENC_BYTES_HELP "Bytes of the update frames folded, by their encoding."

/* The /metrics series (NULL handles without a registry). */
typedef struct {
    fm_metric_t *received, *applied, *rejected[AGG_REJ_COUNT], *clipped, *bytes, *dropped;
    fm_metric_t *version, *live, *staleness, *aggregation, *checkpoint, *overruled;
    fm_metric_t *checkpoint_failures, *write_failures;
    fm_metric_t *agg_secs[3];    /* fold, version, checkpoint */
    fm_metric_t *update_secs[3]; /* train, wait, transport */
    fm_metrics_t *reg;           /* for the per-encoding series, registered when first seen */
    fm_metric_t *enc_updates[FM_STATS_ENCODINGS_MAX], *enc_bytes[FM_STATS_ENCODINGS_MAX];
} s_metrics_t;

struct agg_stats {
    char path[FM_CFG_STR_MAX + 32];
    s_metrics_t m;
    agg_counters_t c;
    uint64_t bytes_received;
    fm_stats_t enc;        /* only .encodings / .nencodings: updates folded by encoding */
    uint64_t enc_overflow; /* folded updates of encodings past FM_STATS_ENCODINGS_MAX */
    uint64_t buffers_dropped;
    double started; /* wall clock */
    int dirty;
    double last_write_at; /* monotonic */
    fm_ratelog_t log;     /* rate limit of rejection warnings */
    fm_ratelog_t clog;    /* rate limit of clipping notices */
    fm_window_t folded;   /* updates accepted into the buffer: updates/s */
    double rate_written;  /* the updates/s in the file last written */
    fm_stats_t tb;        /* only .time: the time budget of this process */

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

/* The counters of /metrics from the persistent ones (registration, restore). */
static void s_metrics_mirror(agg_stats_t *s)
{
    fm_metric_set(s->m.applied, (double)s->c.applied);
    fm_metric_set(s->m.received, (double)(s->c.applied + s->c.rejected_total));
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        fm_metric_set(s->m.rejected[r], (double)s->c.rejected[r]);
    fm_metric_set(s->m.clipped, (double)s->c.clipped);
    fm_metric_set(s->m.bytes, (double)s->bytes_received);
    fm_metric_set(s->m.dropped, (double)s->buffers_dropped);
}

int agg_stats_metrics(agg_stats_t *s, fm_metrics_t *m)
{
    static const double stale_b[] = {AGG_STATS_STALENESS_BUCKETS};
    static const double secs_b[] = {AGG_STATS_SECONDS_BUCKETS};
    s_metrics_t *x = &s->m;
    x->reg = m;
    x->received = fm_metrics_counter(m, "fedmq_updates_received_total",
                                     "Frames received on the updates socket other than "
                                     "membership messages (each is then folded or rejected).",
                                     NULL);
    x->applied = fm_metrics_counter(m, "fedmq_updates_applied_total",
                                    "Updates folded into a new model version.", NULL);
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        x->rejected[r] = fm_metrics_counter(m, "fedmq_updates_rejected_total",
                                            "Frames rejected, by reason.",
                                            (const char *[]){"reason", s_reason_names[r], NULL});
    x->clipped = fm_metrics_counter(m, "fedmq_updates_clipped_total",
                                    "Updates folded scaled down to the norm bound.", NULL);
    x->bytes = fm_metrics_counter(m, "fedmq_received_bytes_total",
                                  "Bytes of every frame received on the updates socket.", NULL);
    /* the per-encoding series appear with an encoding's first update (agg_stats_encoded);
     * the default one is there from the start, so the families always exist */
    fm_metrics_counter(m, "fedmq_updates_by_encoding_total", S_ENC_UPDATES_HELP,
                       (const char *[]){"encoding", "fp32", NULL});
    fm_metrics_counter(m, "fedmq_update_bytes_total", S_ENC_BYTES_HELP,
                       (const char *[]){"encoding", "fp32", NULL});
    x->dropped = fm_metrics_counter(m, "fedmq_buffers_dropped_total",
                                    "Buffers the server optimiser refused (non-finite result).",
                                    NULL);
    x->version = fm_metrics_gauge(m, "fedmq_model_version", "Current model version.", NULL);
    x->overruled = fm_metrics_gauge(
        m, "fedmq_sign_overruled_ratio",
        "Fraction of the parameters whose step the sign vote ([aggregator] sign_threshold) "
        "overruled in the last version: reversed, or dropped in a partial buffer (0 without "
        "the vote).",
        NULL);
    x->live = fm_metrics_gauge(m, "fedmq_clients_live",
                               "Distinct clients served by live trainers.", NULL);
    x->staleness = fm_metrics_histogram(m, "fedmq_update_staleness",
                                        "Staleness of folded updates, in model versions.", NULL,
                                        stale_b, sizeof stale_b / sizeof stale_b[0]);
    x->aggregation = fm_metrics_histogram(
        m, "fedmq_aggregation_seconds",
        "Time to turn a full buffer into a new model version (mean and server step).", NULL,
        secs_b, sizeof secs_b / sizeof secs_b[0]);
    x->checkpoint = fm_metrics_histogram(
        m, "fedmq_checkpoint_seconds",
        "Time to write a checkpoint (LMDB transaction with the record, then pruning).", NULL,
        secs_b, sizeof secs_b / sizeof secs_b[0]);
    x->checkpoint_failures = fm_metrics_counter(
        m, "fedmq_checkpoint_failures_total",
        "Checkpoints that could not be written (full disk, I/O error).", NULL);
    x->write_failures = fm_metrics_counter(
        m, "fedmq_stats_write_failures_total",
        "stats.json writes that failed (the file is stale until the next success).", NULL);
    static const char *const stages[3] = {"fold", "version", "checkpoint"};
    static const char *const parts[3] = {"train", "wait", "transport"};
    for (int i = 0; i < 3; i++) {
        x->agg_secs[i] = fm_metrics_counter(
            m, "fedmq_aggregator_seconds_total",
            "The aggregator's time: fold (judging and folding UPDATE frames), version (making "
            "versions: mean, server step, publish, checkpoint), checkpoint (writing them).",
            (const char *[]){"stage", stages[i], NULL});
        x->update_secs[i] = fm_metrics_counter(
            m, "fedmq_update_seconds_total",
            "Over the folded updates: their local training (train), their workers' wait "
            "before it (wait), their transport from encoding to arrival (transport).",
            (const char *[]){"part", parts[i], NULL});
    }
    s_metrics_mirror(s);
    return fm_metrics_status(m);
}

const agg_counters_t *agg_stats_counters(const agg_stats_t *s) { return &s->c; }

void agg_stats_restore(agg_stats_t *s, const agg_counters_t *c)
{
    s->c = *c;
    s->dirty = 1;
    s_metrics_mirror(s);
}

void agg_stats_reject(agg_stats_t *s, agg_reason_t r, const char *why)
{
    FM_ASSERT((unsigned)r < AGG_REJ_COUNT);
    s->c.rejected[r]++;
    s->c.rejected_total++;
    s->dirty = 1;
    fm_metric_inc(s->m.rejected[r]);
    fm_metric_inc(s->m.received);
    fm_ratelog(&s->log, LOG_WARNING, "rejected frame (%s): %s", s_reason_names[r], why);
}

void agg_stats_clipped(agg_stats_t *s, int level, const char *why)
{
    s->c.clipped++;
    s->dirty = 1;
    fm_metric_inc(s->m.clipped);
    if (level <= fm_log_level()) /* a debug line costs nothing when off */
        fm_ratelog(&s->clog, level, "clipped update: %s", why);
}

void agg_stats_received(agg_stats_t *s, size_t len)
{
    s->bytes_received += len;
    fm_metric_add(s->m.bytes, (double)len);
}

void agg_stats_encoded(agg_stats_t *s, const char *encoding, size_t len)
{
    fm_stats_t *st = &s->enc;
    int i = 0;
    while (i < st->nencodings && strcmp(st->encodings[i].name, encoding) != 0)
        i++;
    if (fm_stats_add_encoding(st, encoding, 1, len) != 0) {
        s->enc_overflow++; /* cannot be with fm_codec's labels: fewer than the table holds */
        return;
    }
    s_metrics_t *x = &s->m;
    if (x->reg && !x->enc_updates[i]) {
        x->enc_updates[i] = fm_metrics_counter(x->reg, "fedmq_updates_by_encoding_total",
                                               "Updates folded, by their encoding.",
                                               (const char *[]){"encoding", encoding, NULL});
        x->enc_bytes[i] = fm_metrics_counter(
            x->reg, "fedmq_update_bytes_total",
            "Bytes of the update frames folded, by their encoding.",
            (const char *[]){"encoding", encoding, NULL});
    }
    fm_metric_inc(x->enc_updates[i]);
    fm_metric_add(x->enc_bytes[i], (double)len);
    s->dirty = 1;
}

void agg_stats_folded(agg_stats_t *s, uint64_t tau, double now)
{
    s->dirty = 1;
    fm_metric_inc(s->m.received);
    fm_metric_observe(s->m.staleness, (double)tau);
    fm_window_add(&s->folded, now, 1);
}

void agg_stats_applied(agg_stats_t *s, uint64_t count)
{
    s->c.applied += count;
    s->dirty = 1;
    fm_metric_add(s->m.applied, (double)count);
}

double agg_stats_rate(agg_stats_t *s, double now) { return fm_window_rate(&s->folded, now); }

void agg_stats_buffer_dropped(agg_stats_t *s)
{
    s->buffers_dropped++;
    s->dirty = 1;
    fm_metric_inc(s->m.dropped);
}

void agg_stats_version(agg_stats_t *s, uint64_t version)
{
    fm_metric_set(s->m.version, (double)version);
}

void agg_stats_live(agg_stats_t *s, uint32_t n) { fm_metric_set(s->m.live, n); }

void agg_stats_aggregation_time(agg_stats_t *s, double secs)
{
    fm_metric_observe(s->m.aggregation, secs);
}

void agg_stats_overruled(agg_stats_t *s, double ratio) { fm_metric_set(s->m.overruled, ratio); }

void agg_stats_checkpoint_failed(agg_stats_t *s) { fm_metric_inc(s->m.checkpoint_failures); }

void agg_stats_checkpoint_time(agg_stats_t *s, double secs)
{
    fm_metric_observe(s->m.checkpoint, secs);
    s->tb.time.checkpoint_s += secs;
    fm_metric_add(s->m.agg_secs[2], secs);
}

void agg_stats_fold_time(agg_stats_t *s, double secs)
{
    s->tb.time.fold_s += secs;
    fm_metric_add(s->m.agg_secs[0], secs);
}

void agg_stats_version_time(agg_stats_t *s, double secs)
{
    s->tb.time.versions++;
    s->tb.time.version_s += secs;
    fm_metric_add(s->m.agg_secs[1], secs);
}

/* A sender's seconds are believed within [0, S_TIME_MAX_S] only. */
#define S_TIME_MAX_S 86400.0

static int s_secs_ok(double x) { return isfinite(x) && x >= 0.0 && x <= S_TIME_MAX_S; }

void agg_stats_update_time(agg_stats_t *s, const fm_wire_update_t *u, double wallclock)
{
    s->tb.time.updates++;
    if (s_secs_ok(u->train_seconds)) {
        s->tb.time.train_s += u->train_seconds;
        fm_metric_add(s->m.update_secs[0], u->train_seconds);
    }
    double transport = wallclock - u->sent_at;
    if (u->sent_at > 0 && s_secs_ok(transport) && s_secs_ok(u->idle_before)) {
        s->tb.time.timed++;
        s->tb.time.wait_s += u->idle_before;
        s->tb.time.transport_s += transport;
        fm_metric_add(s->m.update_secs[1], u->idle_before);
        fm_metric_add(s->m.update_secs[2], transport);
    }
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
    st->updates_clipped = s->c.clipped;
    st->nreasons = 0;
    for (int r = 0; r < AGG_REJ_COUNT; r++) {
        int bad = fm_stats_set_rejected(st, s_reason_names[r], s->c.rejected[r]);
        FM_ASSERT(bad == 0); /* names are short, the table fits (static asserts) */
    }
    st->bytes_received = s->bytes_received;
    memcpy(st->encodings, s->enc.encodings, sizeof st->encodings);
    st->nencodings = s->enc.nencodings;
    st->buffers_dropped = s->buffers_dropped;
    st->started = s->started;
    st->updated = wallclock;
    st->updates_per_s = fm_window_rate(&s->folded, now);
    st->rate_window_s = fm_window_span(&s->folded);
    st->stats_write_failures = s->write_failures;
    st->time = s->tb.time;
    fm_errmsg_t e = {{0}};
    int rc = fm_stats_write(s->path, st, &e);
    if (rc) {
        s->write_failures++;
        fm_metric_inc(s->m.write_failures);
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
