#include "aggregator_state.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_ckpt.h"
#include "fm_daemon.h"
#include "fm_le.h"
#include "fm_log.h"
#include "fm_ratelog.h"
#include "fm_wire.h"

/* record blobs (fm_ckpt_extra_t.record) */
#define S_IDS_KEY FM_CKPT_IDS_KEY /* ids applied to the model */
#define S_ROUND_KEY "agg.round"   /* last sync round opened (u64 LE) */
#define S_CONFIG_KEY "agg.config" /* canonical config text */
#define S_LOST_KEY "agg.lost"     /* lost version numbers: first, last (u64 LE each) */
#define S_REASONS_KEY                                                                            \
    "agg.reasons" /* rejected counters of the reasons past the header's                          \
                     FM_CKPT_NREASONS (u64 LE each, in reason order) */
#define S_MORE_REASONS (AGG_REJ_COUNT > FM_CKPT_NREASONS ? AGG_REJ_COUNT - FM_CKPT_NREASONS : 0)
#define S_CLIPPED_KEY "agg.clipped" /* updates clipped to the norm bound (u64 LE) */
#define S_PRIVACY_KEY "agg.privacy" /* the privacy budget spent (agg_privacy_save) */
#define S_CLIP_KEY "agg.clip"       /* adaptive clipping: the current C (agg_privacy_save_clip) */

_Static_assert(FM_CFG_DIGEST_BYTES == FM_CKPT_DIGEST_BYTES, "digest sizes");
_Static_assert(FM_WIRE_ID_LEN == FM_CKPT_ID_BYTES, "id sizes");

struct agg_state {
    fm_ckpt_t *ckpt;
    agg_idset_t *ids;
    uint8_t *ids_blob; /* cap * FM_WIRE_ID_LEN: checkpoint scratch */
    fm_config_t cfg;
    char *cfg_text; /* canonical text of cfg */

    uint64_t lost_first, lost_last; /* version numbers lost (0 0: none; agg_state_lost) */
    uint64_t saved_version;         /* newest version saved or resumed from */
    uint64_t durable_seq;           /* ids of seq below this are in a saved checkpoint */
    uint64_t failures;              /* checkpoints that failed */
    fm_ratelog_t log;               /* failed checkpoints and prunes */
};

/* ---- config text ------------------------------------------------------------------------- */

int agg_state_config_diff(const char *was_text, const fm_config_t *now, const char *what)
{
    fm_config_t was;
    fm_errmsg_t e = {{0}};
    int rc = fm_cfg_parse(&was, "checkpoint", was_text, strlen(was_text), &e);
    if (rc) {
        FM_LOG(LOG_NOTICE, "%s: the stored config cannot be read (%s)", what, e.msg);
        return rc;
    }
    char *line = NULL;
    int n = fm_cfg_diff(&was, now, &line);
    if (n > 0)
        FM_LOG(LOG_NOTICE, "%s: %s", what, line);
    free(line);
    return n;
}

int agg_state_set_config(agg_state_t *s, const fm_config_t *cfg, const char *what)
{
    char *text = NULL;
    int rc = fm_cfg_text(cfg, &text, NULL);
    if (rc)
        return rc;
    if (what && s->cfg_text) {
        char *line = NULL;
        if (fm_cfg_diff(&s->cfg, cfg, &line) > 0)
            FM_LOG(LOG_NOTICE, "%s: %s", what, line);
        free(line);
    }
    free(s->cfg_text);
    s->cfg_text = text;
    s->cfg = *cfg;
    return 0;
}

const char *agg_state_config_text(const agg_state_t *s) { return s->cfg_text; }

/* ---- lifecycle ---------------------------------------------------------------------------- */

agg_state_t *agg_state_new(const fm_config_t *cfg, size_t id_cap, int *err, fm_errmsg_t *e)
{
    int rc = -ENOMEM;
    agg_state_t *s = calloc(1, sizeof *s);
    if (!s)
        goto cleanup;
    if (!(s->ids = agg_idset_new(id_cap, &rc)))
        goto cleanup;
    rc = -ENOMEM;
    if (!(s->ids_blob = malloc(id_cap * FM_WIRE_ID_LEN)))
        goto cleanup;
    if ((rc = agg_state_set_config(s, cfg, NULL)) != 0) {
        fm_errmsg_set(e, rc, "canonical config text: %s", fm_strerror(rc));
        goto cleanup;
    }
    s->ckpt = fm_ckpt_open(cfg->aggregator.checkpoint_dir, 0, &rc, e);
cleanup:
    if (!s || !s->ckpt) {
        if (e && !e->msg[0])
            fm_errmsg_set(e, rc, "aggregator state: %s", fm_strerror(rc));
        agg_state_destroy(&s);
        if (err)
            *err = rc;
    }
    return s;
}

void agg_state_destroy(agg_state_t **p)
{
    if (!p || !*p)
        return;
    agg_state_t *s = *p;
    fm_ckpt_close(&s->ckpt);
    agg_idset_destroy(&s->ids);
    free(s->ids_blob);
    free(s->cfg_text);
    free(s);
    *p = NULL;
}

agg_idset_t *agg_state_ids(agg_state_t *s) { return s->ids; }

/* ---- save -----------------------------------------------------------------------------------
 */

int agg_state_save(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt,
                   const agg_record_t *rec, size_t pending, const char *why)
{
    int final = strcmp(why, AGG_STATE_SHUTDOWN) == 0;
    unsigned long long ver = (unsigned long long)rec->version;
    if (s->lost_last && rec->version <= s->lost_last) {
        /* no new version since the start: the resumed record (or the initial model) */
        if (s->saved_version == rec->version && rec->version > 0)
            FM_LOG(LOG_NOTICE,
                   "checkpoint version %llu (%s) not written again: it is the one resumed "
                   "from (numbers up to %llu belong to lost checkpoints)",
                   ver, why, (unsigned long long)s->lost_last);
        else
            FM_LOG(LOG_NOTICE,
                   "checkpoint version %llu (%s) not written: the initial model needs none "
                   "(numbers up to %llu belong to lost checkpoints)",
                   ver, why, (unsigned long long)s->lost_last);
        return 0;
    }
    uint64_t next = agg_idset_next_seq(s->ids);
    uint64_t durable = next > pending ? next - pending : 0;
    fm_ckpt_info_t info;
    memset(&info, 0, sizeof info);
    snprintf(info.model, sizeof info.model, "%s", fm_model_name(model));
    info.nparams = fm_model_nparams(model);
    info.version = rec->version;
    info.updates_applied = rec->counters.applied;
    info.updates_rejected = rec->counters.rejected_total;
    for (int r = 0; r < AGG_REJ_COUNT && r < FM_CKPT_NREASONS; r++)
        info.rejected_by_reason[r] = rec->counters.rejected[r];
    unsigned char more_le[8 * (S_MORE_REASONS + 1)];
    for (int r = 0; r < S_MORE_REASONS; r++)
        fm_le_put64(more_le + 8 * r, rec->counters.rejected[FM_CKPT_NREASONS + r]);
    unsigned char clipped_le[8];
    fm_le_put64(clipped_le, rec->counters.clipped);
    fm_cfg_digest(&s->cfg, info.config_digest);
    info.nopt = fm_server_opt_state_len(fm_server_opt_kind(opt), info.nparams);
    info.score = NAN;
    size_t nids = agg_idset_dump(s->ids, pending, s->ids_blob);
    unsigned char round_le[8], lost_le[16];
    fm_le_put64(round_le, rec->round);
    fm_le_put64(lost_le, s->lost_first);
    fm_le_put64(lost_le + 8, s->lost_last);
    fm_ckpt_extra_t extra[8] = {{S_IDS_KEY, s->ids_blob, nids * FM_WIRE_ID_LEN, 1},
                                {S_ROUND_KEY, round_le, sizeof round_le, 1},
                                {S_CONFIG_KEY, s->cfg_text, strlen(s->cfg_text), 1},
                                {S_LOST_KEY, lost_le, sizeof lost_le, 1},
                                {S_CLIPPED_KEY, clipped_le, sizeof clipped_le, 1}};
    size_t nextra = 5;
    if (rec->privacy_len)
        extra[nextra++] = (fm_ckpt_extra_t){S_PRIVACY_KEY, rec->privacy, rec->privacy_len, 1};
    if (rec->clip_len)
        extra[nextra++] = (fm_ckpt_extra_t){S_CLIP_KEY, rec->clip, rec->clip_len, 1};
    if (S_MORE_REASONS)
        extra[nextra++] = (fm_ckpt_extra_t){S_REASONS_KEY, more_le, 8 * (size_t)S_MORE_REASONS,
                                            1};
    fm_errmsg_t e = {{0}};
    double t0 = fm_daemon_now();
    int rc = fm_ckpt_save(s->ckpt, &info, fm_model_params(model),
                          info.nopt ? fm_server_opt_state(opt) : NULL, extra, nextra, &e);
    if (rc) {
        s->failures++;
        /* the number is published: a restart from an older record must not reuse it */
        fm_ckpt_reserve(s->ckpt, rec->version, NULL);
        const char *msg = e.msg[0] ? e.msg : fm_strerror(rc);
        if (final && s->saved_version)
            FM_LOG(LOG_ERR,
                   "final checkpoint of version %llu failed: %s; the state since checkpoint "
                   "version %llu is lost",
                   ver, msg, (unsigned long long)s->saved_version);
        else if (final)
            FM_LOG(LOG_ERR,
                   "final checkpoint of version %llu failed: %s; no checkpoint holds "
                   "this run's state",
                   ver, msg);
        else
            fm_ratelog(&s->log, LOG_ERR,
                       "checkpoint version %llu (%s) failed: %s (%llu failed so far; serving "
                       "on)",
                       ver, why, msg, (unsigned long long)s->failures);
        return rc;
    }
    s->saved_version = rec->version;
    if (durable > s->durable_seq)
        s->durable_seq = durable;
    FM_LOG(LOG_INFO, "checkpoint version %llu saved (%s, %zu ids, %.0f ms)", ver, why, nids,
           (fm_daemon_now() - t0) * 1e3);
    if ((rc = fm_ckpt_prune(s->ckpt, (size_t)s->cfg.aggregator.checkpoint_keep, &e)) != 0)
        fm_ratelog(&s->log, LOG_ERR, "prune checkpoints: %s", e.msg[0] ? e.msg : fm_strerror(rc));
    return 0;
}

uint64_t agg_state_durable_seq(const agg_state_t *s) { return s->durable_seq; }

uint64_t agg_state_next_version(const agg_state_t *s, uint64_t version)
{
    uint64_t hw = fm_ckpt_high_water(s->ckpt);
    return (version > hw ? version : hw) + 1;
}

int agg_state_lost(const agg_state_t *s, uint64_t *first, uint64_t *last)
{
    *first = s->lost_first;
    *last = s->lost_last;
    return s->lost_last != 0;
}

uint64_t agg_state_checkpoint_failures(const agg_state_t *s) { return s->failures; }

uint64_t agg_state_checkpoint_version(const agg_state_t *s) { return s->saved_version; }

void agg_state_stats(const agg_state_t *s, fm_stats_t *st)
{
    st->checkpoint_version = s->saved_version;
    st->checkpoint_failures = s->failures;
}

/* ---- resume ---------------------------------------------------------------------------------
 */

/* Load the newest valid record into model/opt and *info; `note` gets fm_ckpt's line about
 * the newer records it skipped. 0, -ENOENT or an error. */
static int s_load_record(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt,
                         fm_ckpt_info_t *info, fm_errmsg_t *note, fm_errmsg_t *e)
{
    const char *dir = fm_ckpt_dir(s->ckpt), *name = fm_model_name(model);
    size_t nparams = fm_model_nparams(model);
    size_t nopt = fm_server_opt_state_len(fm_server_opt_kind(opt), nparams);
    int rc = fm_ckpt_load_latest(s->ckpt, info, NULL, 0, NULL, 0, note);
    if (rc == -ENOENT)
        return rc;
    if (rc)
        return fm_errmsg_set(e, rc, "%s", note->msg[0] ? note->msg : fm_strerror(rc));
    if (strcmp(info->model, name) != 0 || info->nparams != nparams)
        return fm_errmsg_set(e, FM_EARG,
                             "%s: checkpoint version %llu is model '%s' (%llu params); the "
                             "config says '%s': use another checkpoint_dir",
                             dir, (unsigned long long)info->version, info->model,
                             (unsigned long long)info->nparams, name);
    int with_opt = info->nopt == nopt && nopt > 0;
    if (info->nopt != nopt)
        FM_LOG(LOG_WARNING,
               "checkpoint version %llu has %llu optimizer floats, %s needs %zu: "
               "server optimizer state reset",
               (unsigned long long)info->version, (unsigned long long)info->nopt,
               fm_server_opt_kind_name(fm_server_opt_kind(opt)), nopt);
    rc = fm_ckpt_load(s->ckpt, info->version, info, fm_model_params(model), nparams,
                      with_opt ? fm_server_opt_state(opt) : NULL, with_opt ? nopt : 0, e);
    if (rc)
        return rc;
    if (!fm_model_all_finite(model))
        return fm_errmsg_set(e, FM_ENONFINITE, "%s: checkpoint version %llu: non-finite params",
                             dir, (unsigned long long)info->version);
    if (with_opt && (rc = fm_server_opt_state_check(opt, e)) != 0)
        return rc;
    return 0;
}

/* The blob `key` of record `version` into buf (cap bytes; NULL: length only); for the
 * newest record of an older fedmq's store, the meta key of the same name (written in the
 * same transaction as that record). 0, -ENOENT, -ENOBUFS or another fm_ckpt error. */
static int s_blob(agg_state_t *s, uint64_t version, int newest, const char *key, void *buf,
                  size_t cap, size_t *len)
{
    int rc = fm_ckpt_record_get(s->ckpt, version, key, buf, cap, len, NULL);
    if (rc == -ENOENT && newest)
        rc = fm_ckpt_meta_get(s->ckpt, key, buf, cap, len, NULL);
    return rc;
}

/* Reload the id window, the round number and the stored lost range from record `version`'s
 * blobs. */
static void s_load_blobs(agg_state_t *s, uint64_t version, int newest, agg_record_t *rec)
{
    size_t len = 0;
    size_t cap = agg_idset_cap(s->ids) * FM_WIRE_ID_LEN;
    int rc = s_blob(s, version, newest, S_IDS_KEY, s->ids_blob, cap, &len);
    if (rc == 0)
        rc = agg_idset_load(s->ids, s->ids_blob, len);
    s->durable_seq = agg_idset_next_seq(s->ids); /* all read back from the store */
    if (rc)
        FM_LOG(LOG_WARNING,
               "checkpoint version %llu: its ids not reloaded (%s): duplicates of updates "
               "folded before the restart will not be recognised",
               (unsigned long long)version, fm_strerror(rc));
    unsigned char le[16];
    if (s_blob(s, version, newest, S_ROUND_KEY, le, 8, &len) == 0 && len == 8)
        rec->round = fm_le_get64(le);
    if (fm_ckpt_record_get(s->ckpt, version, S_CLIPPED_KEY, le, 8, &len, NULL) == 0 && len == 8)
        rec->counters.clipped = fm_le_get64(le); /* an older store has none: 0 */
    if (fm_ckpt_record_get(s->ckpt, version, S_PRIVACY_KEY, rec->privacy, sizeof rec->privacy,
                           &len, NULL) == 0)
        rec->privacy_len = len;
    if (fm_ckpt_record_get(s->ckpt, version, S_CLIP_KEY, rec->clip, sizeof rec->clip, &len,
                           NULL) == 0) /* absent before adaptive clipping: C = clip_norm */
        rec->clip_len = len;
    if (fm_ckpt_record_get(s->ckpt, version, S_LOST_KEY, le, sizeof le, &len, NULL) == 0 &&
        len == sizeof le && fm_le_get64(le + 8) >= fm_le_get64(le) && fm_le_get64(le) > 0) {
        s->lost_first = fm_le_get64(le);
        s->lost_last = fm_le_get64(le + 8);
    }
    unsigned char more_le[8 * (S_MORE_REASONS + 1)];
    if (S_MORE_REASONS &&
        fm_ckpt_record_get(s->ckpt, version, S_REASONS_KEY, more_le, sizeof more_le, &len,
                           NULL) == 0) /* an older store has fewer (or none): those stay 0 */
        for (int r = 0; r < S_MORE_REASONS; r++)
            if ((size_t)r < len / 8)
                rec->counters.rejected[FM_CKPT_NREASONS + r] = fm_le_get64(more_le + 8 * r);
}

/* Say which keys of the running config differ from the checkpoint's (by digest only when
 * the checkpoint has no config text). */
static void s_compare_config(agg_state_t *s, const fm_ckpt_info_t *info, int newest)
{
    char what[96];
    snprintf(what, sizeof what, "config differs from checkpoint version %llu",
             (unsigned long long)info->version);
    size_t len = 0;
    char *stored = NULL;
    int rc;
    if (s_blob(s, info->version, newest, S_CONFIG_KEY, NULL, 0, &len) == 0 &&
        (stored = malloc(len + 1)) != NULL &&
        s_blob(s, info->version, newest, S_CONFIG_KEY, stored, len, &len) == 0) {
        stored[len] = '\0';
        rc = agg_state_config_diff(stored, &s->cfg, what);
        free(stored);
        if (rc >= 0)
            return;
    } else {
        free(stored);
    }
    uint8_t digest[FM_CFG_DIGEST_BYTES];
    fm_cfg_digest(&s->cfg, digest);
    if (memcmp(digest, info->config_digest, sizeof digest) != 0)
        FM_LOG(LOG_NOTICE,
               "the config differs from the one checkpoint version %llu was "
               "written with",
               (unsigned long long)info->version);
}

/* "versions A-B" or "version A". */
static void s_range(char *out, size_t cap, uint64_t a, uint64_t b)
{
    if (a == b)
        snprintf(out, cap, "version %llu", (unsigned long long)a);
    else
        snprintf(out, cap, "versions %llu-%llu", (unsigned long long)a, (unsigned long long)b);
}

/* The numbers above `version` up to the high-water mark are lost: remember them and say so
 * in one WARNING line (`skipped`: fm_ckpt's line about unreadable newer records, or ""). */
static void s_note_lost(agg_state_t *s, uint64_t version, const agg_record_t *rec,
                        const char *skipped)
{
    uint64_t hw = fm_ckpt_high_water(s->ckpt);
    if (hw <= version)
        return;
    s->lost_first = version + 1;
    s->lost_last = hw;
    char lost[64], why[160] = "";
    s_range(lost, sizeof lost, s->lost_first, s->lost_last);
    fm_ckpt_mark_t m;
    if (!skipped[0] && fm_ckpt_mark(s->ckpt, &m, NULL) == 0 && m.reset_at > 0) {
        time_t t = (time_t)m.reset_at;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(why, sizeof why, "the store was reset by an operator at %Y-%m-%dT%H:%M:%SZ",
                 &tm);
    } else if (!skipped[0]) {
        snprintf(why, sizeof why,
                 "%s: versions up to %llu were published but not checkpointed (high_water.json)",
                 fm_ckpt_dir(s->ckpt), (unsigned long long)hw);
    }
    const char *them = s->lost_first == s->lost_last ? "it" : "them";
    if (rec)
        FM_LOG(LOG_WARNING,
               "%s%s%s: resumed from checkpoint version %llu with its own params, counters "
               "(%llu applied) and %zu ids; %s lost (updates based on %s are rejected as "
               "future); the next version is %llu",
               skipped, skipped[0] && why[0] ? "; " : "", why, (unsigned long long)version,
               (unsigned long long)rec->counters.applied, agg_idset_count(s->ids), lost, them,
               (unsigned long long)hw + 1);
    else
        FM_LOG(LOG_WARNING,
               "%s: the checkpoint store is empty: starting from version 0; %s lost (updates "
               "based on %s are rejected as future); the next version is %llu",
               why[0] ? why : fm_ckpt_dir(s->ckpt), lost, them, (unsigned long long)hw + 1);
}

int agg_state_resume(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt, agg_record_t *rec,
                     fm_errmsg_t *e)
{
    fm_ckpt_info_t info;
    fm_errmsg_t note = {{0}};
    int rc = s_load_record(s, model, opt, &info, &note, e);
    if (rc == -ENOENT)
        s_note_lost(s, 0, NULL, "");
    if (rc)
        return rc;
    memset(rec, 0, sizeof *rec);
    rec->version = info.version;
    rec->counters.applied = info.updates_applied;
    rec->counters.rejected_total = info.updates_rejected;
    for (int r = 0; r < AGG_REJ_COUNT && r < FM_CKPT_NREASONS; r++)
        rec->counters.rejected[r] = info.rejected_by_reason[r];
    uint64_t latest = 0;
    int newest = fm_ckpt_latest_version(s->ckpt, &latest, NULL) == 0 && latest == info.version;
    s_load_blobs(s, info.version, newest, rec);
    s_compare_config(s, &info, newest);
    s->saved_version = info.version;
    s_note_lost(s, info.version, rec, note.msg);
    FM_LOG(LOG_NOTICE,
           "resumed from checkpoint version %llu, round %llu (%llu updates applied, "
           "%zu ids remembered)",
           (unsigned long long)rec->version, (unsigned long long)rec->round,
           (unsigned long long)rec->counters.applied, agg_idset_count(s->ids));
    return 0;
}
