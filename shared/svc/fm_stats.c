/* fm_stats: stats.json, written and read with jansson (see fm_stats.h). */
#include "fm_stats.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_file.h"

#define S_MAX_BYTES (1 << 20) /* a stats file is a few hundred bytes; refuse anything huge */

int fm_stats_path(char *out, size_t n, const char *checkpoint_dir)
{
    int w = snprintf(out, n, "%s/stats.json", checkpoint_dir);
    return (w < 0 || (size_t)w >= n) ? -ENAMETOOLONG : 0;
}

uint64_t fm_stats_rejected(const fm_stats_t *st, const char *reason)
{
    for (int i = 0; i < st->nreasons; i++)
        if (strcmp(st->rejected[i].name, reason) == 0)
            return st->rejected[i].count;
    return 0;
}

int fm_stats_set_rejected(fm_stats_t *st, const char *name, uint64_t count)
{
    if (strlen(name) >= FM_STATS_NAME_MAX)
        return FM_ERANGE;
    for (int i = 0; i < st->nreasons; i++)
        if (strcmp(st->rejected[i].name, name) == 0) {
            st->rejected[i].count = count;
            return 0;
        }
    if (st->nreasons >= FM_STATS_REASONS_MAX)
        return FM_ERANGE;
    fm_stats_reason_t *r = &st->rejected[st->nreasons++];
    memcpy(r->name, name, strlen(name) + 1);
    r->count = count;
    return 0;
}

int fm_stats_add_encoding(fm_stats_t *st, const char *name, uint64_t updates, uint64_t bytes)
{
    for (int i = 0; i < st->nencodings; i++)
        if (strcmp(st->encodings[i].name, name) == 0) {
            st->encodings[i].updates += updates;
            st->encodings[i].bytes += bytes;
            return 0;
        }
    if (st->nencodings >= FM_STATS_ENCODINGS_MAX || strlen(name) >= FM_STATS_NAME_MAX)
        return FM_ERANGE;
    fm_stats_encoding_t *x = &st->encodings[st->nencodings++];
    memcpy(x->name, name, strlen(name) + 1);
    x->updates = updates;
    x->bytes = bytes;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* JSON integers are int64 in jansson: counters past INT64_MAX are clamped (never reached). */
static json_t *s_u64(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/* The object in the file's key order. NULL on allocation failure. */
static json_t *s_to_json(const fm_stats_t *st)
{
    json_t *rej = json_object();
    json_t *o = json_object();
    if (!rej || !o)
        goto fail;
    for (int i = 0; i < st->nreasons; i++)
        if (json_object_set_new(rej, st->rejected[i].name, s_u64(st->rejected[i].count)))
            goto fail;
    int bad = 0;
    bad |= json_object_set_new(o, "version", s_u64(st->version));
    bad |= json_object_set_new(o, "updates_applied", s_u64(st->updates_applied));
    bad |= json_object_set_new(o, "updates_rejected", s_u64(st->updates_rejected));
    bad |= json_object_set(o, "rejected", rej);
    bad |= json_object_set_new(o, "updates_clipped", s_u64(st->updates_clipped));
    bad |= json_object_set_new(o, "mode", json_string(st->mode));
    bad |= json_object_set_new(o, "round", s_u64(st->round));
    bad |= json_object_set_new(o, "round_open", json_boolean(st->round_open));
    bad |= json_object_set_new(o, "cohort_size", s_u64(st->cohort_size));
    bad |= json_object_set_new(o, "round_reported", s_u64(st->round_reported));
    bad |= json_object_set_new(o, "rounds_completed", s_u64(st->rounds_completed));
    bad |= json_object_set_new(o, "rounds_failed", s_u64(st->rounds_failed));
    bad |= json_object_set_new(o, "round_declined", s_u64(st->round_declined));
    bad |= json_object_set_new(o, "declines", s_u64(st->declines));
    bad |= json_object_set_new(o, "declines_ignored", s_u64(st->declines_ignored));
    bad |= json_object_set_new(o, "finished", json_boolean(st->finished));
    bad |= json_object_set_new(o, "live_clients", s_u64(st->live_clients));
    bad |= json_object_set_new(o, "staleness_mean", json_real(st->staleness_mean));
    bad |= json_object_set_new(o, "staleness_max", s_u64(st->staleness_max));
    bad |= json_object_set_new(o, "bytes_received", s_u64(st->bytes_received));
    json_t *enc = json_object();
    bad |= !enc;
    for (int i = 0; enc && i < st->nencodings; i++) {
        json_t *x = json_object();
        bad |= !x;
        if (x) {
            bad |= json_object_set_new(x, "updates", s_u64(st->encodings[i].updates));
            bad |= json_object_set_new(x, "bytes", s_u64(st->encodings[i].bytes));
            bad |= json_object_set_new(enc, st->encodings[i].name, x);
        }
    }
    if (enc)
        bad |= json_object_set_new(o, "encodings", enc);
    bad |= json_object_set_new(o, "updates_pending", s_u64(st->updates_pending));
    bad |= json_object_set_new(o, "buffers_dropped", s_u64(st->buffers_dropped));
    bad |= json_object_set_new(o, "checkpoint_version", s_u64(st->checkpoint_version));
    bad |= json_object_set_new(o, "checkpoint_failures", s_u64(st->checkpoint_failures));
    bad |= json_object_set_new(o, "stats_write_failures", s_u64(st->stats_write_failures));
    bad |= json_object_set_new(o, "acked", s_u64(st->acked));
    bad |= json_object_set_new(o, "ack_refused", s_u64(st->ack_refused));
    bad |= json_object_set_new(o, "privacy", json_boolean(st->privacy));
    bad |= json_object_set_new(o, "privacy_epsilon", json_real(st->privacy_epsilon));
    bad |= json_object_set_new(o, "privacy_delta", json_real(st->privacy_delta));
    bad |= json_object_set_new(o, "privacy_target_epsilon",
                               json_real(st->privacy_target_epsilon));
    bad |= json_object_set_new(o, "privacy_steps", s_u64(st->privacy_steps));
    bad |= json_object_set_new(o, "privacy_exhausted", json_boolean(st->privacy_exhausted));
    bad |= json_object_set_new(o, "privacy_clip_norm", json_real(st->privacy_clip_norm));
    bad |= json_object_set_new(o, "secagg", json_boolean(st->secagg));
    bad |= json_object_set_new(o, "secagg_formed", s_u64(st->secagg_formed));
    bad |= json_object_set_new(o, "secagg_completed", s_u64(st->secagg_completed));
    bad |= json_object_set_new(o, "secagg_aborted", s_u64(st->secagg_aborted));
    bad |= json_object_set_new(o, "secagg_in_flight", s_u64(st->secagg_in_flight));
    bad |= json_object_set_new(o, "secagg_dropped_keys", s_u64(st->secagg_dropped_keys));
    bad |= json_object_set_new(o, "secagg_dropped_shares", s_u64(st->secagg_dropped_shares));
    bad |= json_object_set_new(o, "secagg_dropped_train", s_u64(st->secagg_dropped_train));
    bad |= json_object_set_new(o, "secagg_dropped_unmask", s_u64(st->secagg_dropped_unmask));
    bad |= json_object_set_new(o, "secagg_refused", s_u64(st->secagg_refused));
    bad |= json_object_set_new(o, "updates_per_s", json_real(st->updates_per_s));
    bad |= json_object_set_new(o, "rate_window_s", json_real(st->rate_window_s));
    json_t *t = json_object();
    if (!t)
        goto fail;
    bad |= json_object_set_new(t, "versions", s_u64(st->time.versions));
    bad |= json_object_set_new(t, "updates", s_u64(st->time.updates));
    bad |= json_object_set_new(t, "timed", s_u64(st->time.timed));
    bad |= json_object_set_new(t, "fold_s", json_real(st->time.fold_s));
    bad |= json_object_set_new(t, "version_s", json_real(st->time.version_s));
    bad |= json_object_set_new(t, "checkpoint_s", json_real(st->time.checkpoint_s));
    bad |= json_object_set_new(t, "train_s", json_real(st->time.train_s));
    bad |= json_object_set_new(t, "wait_s", json_real(st->time.wait_s));
    bad |= json_object_set_new(t, "transport_s", json_real(st->time.transport_s));
    bad |= json_object_set_new(o, "time", t);
    bad |= json_object_set_new(o, "model", json_string(st->model));
    bad |= json_object_set_new(o, "started", json_real(st->started));
    bad |= json_object_set_new(o, "updated", json_real(st->updated));
    json_decref(rej);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
fail:
    json_decref(rej);
    json_decref(o);
    return NULL;
}

/* FM_ENONFINITE naming the first real-valued field JSON cannot hold (NaN, infinity). */
static int s_check_finite(const fm_stats_t *st, const char *path, fm_errmsg_t *e)
{
    const struct {
        const char *key;
        double v;
    } reals[] = {{"staleness_mean", st->staleness_mean},
                 {"updates_per_s", st->updates_per_s},
                 {"rate_window_s", st->rate_window_s},
                 {"privacy_epsilon", st->privacy_epsilon},
                 {"privacy_delta", st->privacy_delta},
                 {"privacy_target_epsilon", st->privacy_target_epsilon},
                 {"privacy_clip_norm", st->privacy_clip_norm},
                 {"time.fold_s", st->time.fold_s},
                 {"time.version_s", st->time.version_s},
                 {"time.checkpoint_s", st->time.checkpoint_s},
                 {"time.train_s", st->time.train_s},
                 {"time.wait_s", st->time.wait_s},
                 {"time.transport_s", st->time.transport_s},
                 {"started", st->started},
                 {"updated", st->updated}};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        if (!isfinite(reals[i].v))
            return fm_errmsg_set(e, FM_ENONFINITE, "%s: \"%s\" is not finite", path,
                                 reals[i].key);
    return 0;
}

int fm_stats_write(const char *path, const fm_stats_t *st, fm_errmsg_t *e)
{
    int rc = s_check_finite(st, path, e);
    if (rc)
        return rc;
    json_t *o = s_to_json(st);
    if (!o)
        return fm_errmsg_set(e, -ENOMEM, "%s: cannot build stats: out of memory", path);
    char *text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    if (!text)
        return fm_errmsg_set(e, -ENOMEM, "%s: cannot encode stats: out of memory", path);
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return fm_errmsg_set(e, -ENOMEM, "%s: cannot encode stats: out of memory", path);
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    rc = fm_file_replace(path, line, n + 1, FM_FILE_SPARE, e);
    free(line);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Unsigned integer key into *out (absent: unchanged). FM_EFORMAT when not an integer >= 0
 * or above `max`. */
static int s_get_u64(json_t *o, const char *key, uint64_t max, uint64_t *out, const char *path,
                     fm_errmsg_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: \"%s\" is not an integer in [0, %llu]", path,
                             key, (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int s_get_u32(json_t *o, const char *key, uint32_t *out, const char *path, fm_errmsg_t *e)
{
    uint64_t v = *out;
    int rc = s_get_u64(o, key, UINT32_MAX, &v, path, e);
    *out = (uint32_t)v;
    return rc;
}

static int s_get_num(json_t *o, const char *key, double *out, const char *path, fm_errmsg_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: \"%s\" is not a number", path, key);
    *out = json_number_value(v);
    return 0;
}

static int s_get_bool(json_t *o, const char *key, bool *out, const char *path, fm_errmsg_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v) && !json_is_integer(v))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: \"%s\" is not a boolean", path, key);
    *out = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v) != 0;
    return 0;
}

static int s_get_str(json_t *o, const char *key, char out[FM_STATS_NAME_MAX], const char *path,
                     fm_errmsg_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) >= FM_STATS_NAME_MAX)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: \"%s\" is not a string of at most %d bytes",
                             path, key, FM_STATS_NAME_MAX - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

int fm_stats_read(const char *path, fm_stats_t *st, fm_errmsg_t *e)
{
    memset(st, 0, sizeof *st);
    json_error_t jerr;
    FILE *f = fopen(path, "r");
    if (!f)
        return fm_errmsg_set(e, -errno, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(S_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, S_MAX_BYTES + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    json_t *o = NULL;
    int rc = 0;
    if (rerr) {
        rc = fm_errmsg_set(e, -rerr, "%s: cannot read: %s", path, strerror(rerr));
        goto cleanup;
    }
    if (n > S_MAX_BYTES) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: larger than %d bytes", path, S_MAX_BYTES);
        goto cleanup;
    }
    o = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
        goto cleanup;
    }
    if (!json_is_object(o)) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: not a JSON object", path);
        goto cleanup;
    }
    uint64_t count;
    if ((rc = s_get_str(o, "model", st->model, path, e)) ||
        (rc = s_get_str(o, "mode", st->mode, path, e)) ||
        (rc = s_get_u64(o, "version", UINT64_MAX, &st->version, path, e)) ||
        (rc = s_get_u64(o, "updates_applied", UINT64_MAX, &st->updates_applied, path, e)) ||
        (rc = s_get_u64(o, "updates_rejected", UINT64_MAX, &st->updates_rejected, path, e)) ||
        (rc = s_get_u64(o, "updates_clipped", UINT64_MAX, &st->updates_clipped, path, e)) ||
        (rc = s_get_u64(o, "round", UINT64_MAX, &st->round, path, e)) ||
        (rc = s_get_bool(o, "round_open", &st->round_open, path, e)) ||
        (rc = s_get_u32(o, "cohort_size", &st->cohort_size, path, e)) ||
        (rc = s_get_u32(o, "round_reported", &st->round_reported, path, e)) ||
        (rc = s_get_u64(o, "rounds_completed", UINT64_MAX, &st->rounds_completed, path, e)) ||
        (rc = s_get_u64(o, "rounds_failed", UINT64_MAX, &st->rounds_failed, path, e)) ||
        (rc = s_get_u32(o, "round_declined", &st->round_declined, path, e)) ||
        (rc = s_get_u64(o, "declines", UINT64_MAX, &st->declines, path, e)) ||
        (rc = s_get_u64(o, "declines_ignored", UINT64_MAX, &st->declines_ignored, path, e)) ||
        (rc = s_get_bool(o, "finished", &st->finished, path, e)) ||
        (rc = s_get_u32(o, "live_clients", &st->live_clients, path, e)) ||
        (rc = s_get_num(o, "staleness_mean", &st->staleness_mean, path, e)) ||
        (rc = s_get_u64(o, "staleness_max", UINT64_MAX, &st->staleness_max, path, e)) ||
        (rc = s_get_u64(o, "bytes_received", UINT64_MAX, &st->bytes_received, path, e)) ||
        (rc = s_get_u32(o, "updates_pending", &st->updates_pending, path, e)) ||
        (rc = s_get_u64(o, "buffers_dropped", UINT64_MAX, &st->buffers_dropped, path, e)) ||
        (rc = s_get_u64(o, "checkpoint_version", UINT64_MAX, &st->checkpoint_version, path, e)) ||
        (rc = s_get_u64(o, "checkpoint_failures", UINT64_MAX, &st->checkpoint_failures, path,
                        e)) ||
        (rc = s_get_u64(o, "stats_write_failures", UINT64_MAX, &st->stats_write_failures, path,
                        e)) ||
        (rc = s_get_u64(o, "acked", UINT64_MAX, &st->acked, path, e)) ||
        (rc = s_get_u64(o, "ack_refused", UINT64_MAX, &st->ack_refused, path, e)) ||
        (rc = s_get_bool(o, "privacy", &st->privacy, path, e)) ||
        (rc = s_get_num(o, "privacy_epsilon", &st->privacy_epsilon, path, e)) ||
        (rc = s_get_num(o, "privacy_delta", &st->privacy_delta, path, e)) ||
        (rc = s_get_num(o, "privacy_target_epsilon", &st->privacy_target_epsilon, path, e)) ||
        (rc = s_get_u64(o, "privacy_steps", UINT64_MAX, &st->privacy_steps, path, e)) ||
        (rc = s_get_bool(o, "privacy_exhausted", &st->privacy_exhausted, path, e)) ||
        (rc = s_get_num(o, "privacy_clip_norm", &st->privacy_clip_norm, path, e)) ||
        (rc = s_get_bool(o, "secagg", &st->secagg, path, e)) ||
        (rc = s_get_u64(o, "secagg_formed", UINT64_MAX, &st->secagg_formed, path, e)) ||
        (rc = s_get_u64(o, "secagg_completed", UINT64_MAX, &st->secagg_completed, path, e)) ||
        (rc = s_get_u64(o, "secagg_aborted", UINT64_MAX, &st->secagg_aborted, path, e)) ||
        (rc = s_get_u32(o, "secagg_in_flight", &st->secagg_in_flight, path, e)) ||
        (rc = s_get_u64(o, "secagg_dropped_keys", UINT64_MAX, &st->secagg_dropped_keys, path,
                        e)) ||
        (rc = s_get_u64(o, "secagg_dropped_shares", UINT64_MAX, &st->secagg_dropped_shares, path,
                        e)) ||
        (rc = s_get_u64(o, "secagg_dropped_train", UINT64_MAX, &st->secagg_dropped_train, path,
                        e)) ||
        (rc = s_get_u64(o, "secagg_dropped_unmask", UINT64_MAX, &st->secagg_dropped_unmask, path,
                        e)) ||
        (rc = s_get_u64(o, "secagg_refused", UINT64_MAX, &st->secagg_refused, path, e)) ||
        (rc = s_get_num(o, "updates_per_s", &st->updates_per_s, path, e)) ||
        (rc = s_get_num(o, "rate_window_s", &st->rate_window_s, path, e)) ||
        (rc = s_get_num(o, "started", &st->started, path, e)) ||
        (rc = s_get_num(o, "updated", &st->updated, path, e)))
        goto cleanup;
    json_t *rej = json_object_get(o, "rejected");
    if (rej) {
        if (!json_is_object(rej)) {
            rc = fm_errmsg_set(e, FM_EFORMAT, "%s: \"rejected\" is not an object", path);
            goto cleanup;
        }
        const char *k;
        json_t *v;
        json_object_foreach(rej, k, v)
        {
            count = 0;
            if ((rc = s_get_u64(rej, k, UINT64_MAX, &count, path, e)))
                goto cleanup;
            if (fm_stats_set_rejected(st, k, count) != 0) {
                rc = fm_errmsg_set(e, FM_EFORMAT,
                                   "%s: \"rejected\": too many reasons or "
                                   "reason \"%.40s\" too long",
                                   path, k);
                goto cleanup;
            }
        }
    }
    json_t *t = json_object_get(o, "time");
    if (t) {
        if (!json_is_object(t)) {
            rc = fm_errmsg_set(e, FM_EFORMAT, "%s: \"time\" is not an object", path);
            goto cleanup;
        }
        if ((rc = s_get_u64(t, "versions", UINT64_MAX, &st->time.versions, path, e)) ||
            (rc = s_get_u64(t, "updates", UINT64_MAX, &st->time.updates, path, e)) ||
            (rc = s_get_u64(t, "timed", UINT64_MAX, &st->time.timed, path, e)) ||
            (rc = s_get_num(t, "fold_s", &st->time.fold_s, path, e)) ||
            (rc = s_get_num(t, "version_s", &st->time.version_s, path, e)) ||
            (rc = s_get_num(t, "checkpoint_s", &st->time.checkpoint_s, path, e)) ||
            (rc = s_get_num(t, "train_s", &st->time.train_s, path, e)) ||
            (rc = s_get_num(t, "wait_s", &st->time.wait_s, path, e)) ||
            (rc = s_get_num(t, "transport_s", &st->time.transport_s, path, e)))
            goto cleanup;
    }
    json_t *enc = json_object_get(o, "encodings");
    if (enc) {
        const char *k;
        json_t *v;
        if (!json_is_object(enc)) {
            rc = fm_errmsg_set(e, FM_EFORMAT, "%s: \"encodings\" is not an object", path);
            goto cleanup;
        }
        json_object_foreach(enc, k, v)
        {
            uint64_t nu = 0, b = 0;
            if (!json_is_object(v)) {
                rc = fm_errmsg_set(e, FM_EFORMAT, "%s: \"encodings\".\"%.40s\" is not an object",
                                   path, k);
                goto cleanup;
            }
            if ((rc = s_get_u64(v, "updates", UINT64_MAX, &nu, path, e)) ||
                (rc = s_get_u64(v, "bytes", UINT64_MAX, &b, path, e)))
                goto cleanup;
            if (fm_stats_add_encoding(st, k, nu, b) != 0) {
                rc = fm_errmsg_set(e, FM_EFORMAT,
                                   "%s: \"encodings\": too many or \"%.40s\" too long", path, k);
                goto cleanup;
            }
        }
    }
cleanup:
    json_decref(o);
    free(buf);
    if (rc)
        memset(st, 0, sizeof *st);
    return rc;
}
