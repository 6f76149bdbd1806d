#include "aggregator_state.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_ckpt.h"
#include "fm_daemon.h"
#include "fm_log.h"
#include "fm_wire.h"

#define S_IDS_KEY "agg.ids"       /* ids applied to the model */
#define S_ROUND_KEY "agg.round"   /* last sync round opened (u64 LE) */
#define S_CONFIG_KEY "agg.config" /* canonical config text */

_Static_assert(FM_CFG_DIGEST_BYTES == FM_CKPT_DIGEST_BYTES, "digest sizes");

struct agg_state {
    fm_ckpt_t *ckpt;
    agg_idset_t *ids;
    uint8_t *ids_blob; /* cap * FM_WIRE_ID_LEN: checkpoint scratch */
    fm_config_t cfg;
    char *cfg_text; /* canonical text of cfg */
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
    fm_ckpt_info_t info;
    memset(&info, 0, sizeof info);
    snprintf(info.model, sizeof info.model, "%s", fm_model_name(model));
    info.nparams = fm_model_nparams(model);
    info.version = rec->version;
    info.updates_applied = rec->counters.applied;
    info.updates_rejected = rec->counters.rejected_total;
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        info.rejected_by_reason[r] = rec->counters.rejected[r];
    fm_cfg_digest(&s->cfg, info.config_digest);
    info.nopt = fm_server_opt_state_len(fm_server_opt_kind(opt), info.nparams);
    info.score = NAN;
    size_t nids = agg_idset_dump(s->ids, pending, s->ids_blob);
    unsigned char round_le[8];
    for (int i = 0; i < 8; i++)
        round_le[i] = (unsigned char)(rec->round >> (8 * i));
    fm_ckpt_extra_t extra[3] = {{S_IDS_KEY, s->ids_blob, nids * FM_WIRE_ID_LEN},
                                {S_ROUND_KEY, round_le, sizeof round_le},
                                {S_CONFIG_KEY, s->cfg_text, strlen(s->cfg_text)}};
    fm_errmsg_t e = {{0}};
    double t0 = fm_daemon_now();
    int rc = fm_ckpt_save(s->ckpt, &info, fm_model_params(model),
                          info.nopt ? fm_server_opt_state(opt) : NULL, extra, 3, &e);
    if (rc) {
        FM_LOG(LOG_ERR, "checkpoint version %llu (%s): %s", (unsigned long long)rec->version, why,
               e.msg[0] ? e.msg : fm_strerror(rc));
        return rc;
    }
    FM_LOG(LOG_INFO, "checkpoint version %llu saved (%s, %zu ids, %.0f ms)",
           (unsigned long long)rec->version, why, nids, (fm_daemon_now() - t0) * 1e3);
    if ((rc = fm_ckpt_prune(s->ckpt, (size_t)s->cfg.aggregator.checkpoint_keep, &e)) != 0)
        FM_LOG(LOG_ERR, "prune checkpoints: %s", e.msg[0] ? e.msg : fm_strerror(rc));
    return 0;
}

/* ---- resume ---------------------------------------------------------------------------------
 */

/* Load the newest valid record into model/opt and *info. 0, -ENOENT or an error. */
static int s_load_record(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt,
                         fm_ckpt_info_t *info, fm_errmsg_t *e)
{
    const char *dir = fm_ckpt_dir(s->ckpt), *name = fm_model_name(model);
    size_t nparams = fm_model_nparams(model);
    size_t nopt = fm_server_opt_state_len(fm_server_opt_kind(opt), nparams);
    fm_errmsg_t note = {{0}};
    int rc = fm_ckpt_load_latest(s->ckpt, info, NULL, 0, NULL, 0, &note);
    if (rc == -ENOENT)
        return rc;
    if (rc)
        return fm_errmsg_set(e, rc, "%s", note.msg[0] ? note.msg : fm_strerror(rc));
    if (note.msg[0])
        FM_LOG(LOG_WARNING, "%s", note.msg);
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

/* Reload the id window and the round number from the meta keys. */
static void s_load_meta(agg_state_t *s, agg_record_t *rec)
{
    size_t len = 0;
    size_t cap = agg_idset_cap(s->ids) * FM_WIRE_ID_LEN;
    int rc = fm_ckpt_meta_get(s->ckpt, S_IDS_KEY, s->ids_blob, cap, &len, NULL);
    if (rc == 0)
        rc = agg_idset_load(s->ids, s->ids_blob, len);
    if (rc && rc != -ENOENT)
        FM_LOG(LOG_WARNING,
               "checkpoint ids not reloaded (%s): duplicates of updates folded "
               "before the restart will not be recognised",
               fm_strerror(rc));
    unsigned char round_le[8];
    rc = fm_ckpt_meta_get(s->ckpt, S_ROUND_KEY, round_le, sizeof round_le, &len, NULL);
    if (rc == 0 && len == sizeof round_le) {
        rec->round = 0;
        for (int i = 7; i >= 0; i--)
            rec->round = rec->round << 8 | round_le[i];
    }
}

/* Say which keys of the running config differ from the checkpoint's (by digest only when
 * the checkpoint has no config text). */
static void s_compare_config(agg_state_t *s, const fm_ckpt_info_t *info)
{
    char what[96];
    snprintf(what, sizeof what, "config differs from checkpoint version %llu",
             (unsigned long long)info->version);
    size_t len = 0;
    char *stored = NULL;
    int rc;
    if (fm_ckpt_meta_get(s->ckpt, S_CONFIG_KEY, NULL, 0, &len, NULL) == 0 &&
        (stored = malloc(len + 1)) != NULL &&
        fm_ckpt_meta_get(s->ckpt, S_CONFIG_KEY, stored, len, &len, NULL) == 0) {
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

int agg_state_resume(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt, agg_record_t *rec,
                     fm_errmsg_t *e)
{
    fm_ckpt_info_t info;
    int rc = s_load_record(s, model, opt, &info, e);
    if (rc)
        return rc;
    memset(rec, 0, sizeof *rec);
    rec->version = info.version;
    rec->counters.applied = info.updates_applied;
    rec->counters.rejected_total = info.updates_rejected;
    for (int r = 0; r < AGG_REJ_COUNT; r++)
        rec->counters.rejected[r] = info.rejected_by_reason[r];
    s_compare_config(s, &info);
    /* never go below the newest version ever saved (its record may be the invalid one) */
    uint64_t latest = 0;
    if (fm_ckpt_latest_version(s->ckpt, &latest, NULL) == 0 && latest > rec->version) {
        FM_LOG(LOG_WARNING,
               "newest checkpoint version %llu is unreadable: continuing from "
               "the params of version %llu as version %llu",
               (unsigned long long)latest, (unsigned long long)rec->version,
               (unsigned long long)latest);
        rec->version = latest;
    }
    s_load_meta(s, rec);
    FM_LOG(LOG_NOTICE,
           "resumed from checkpoint version %llu, round %llu (%llu updates applied, "
           "%zu ids remembered)",
           (unsigned long long)rec->version, (unsigned long long)rec->round,
           (unsigned long long)rec->counters.applied, agg_idset_count(s->ids));
    return 0;
}
