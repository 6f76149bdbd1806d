/* agg_state: what the aggregator keeps across restarts, in the LMDB environment of
 * [aggregator] checkpoint_dir (fm_ckpt).
 *
 * One checkpoint = one fm_ckpt_save transaction holding the record (params, server
 * optimiser state, version, counters, config digest) and three meta keys:
 *   "agg.ids"     the ids of the updates applied to the model (the id window, oldest first,
 *                 without the open buffer's ids: those are not in the model)
 *   "agg.round"   the last sync round opened, u64 little-endian
 *   "agg.config"  the canonical config text (fm_cfg_text), so a resume can name the keys
 *                 that differ (fm_cfg_parse + fm_cfg_diff)
 * The id window (agg_idset) lives here: the ingest step borrows it to drop duplicates.
 * A resume never goes below the newest version ever saved (if that record is unreadable,
 * the newest readable params continue under the newest version number).
 *
 * Not thread-safe; one agg_state_t per checkpoint directory and process. */
#ifndef AGG_STATE_H
#define AGG_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "aggregator_idset.h"
#include "aggregator_stats.h"
#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_server_opt.h"

/* The scalars of one checkpoint besides params and optimiser state. */
typedef struct {
    uint64_t version;        /* model version */
    uint64_t round;          /* last sync round opened (0: none, or async) */
    agg_counters_t counters; /* applied and rejected counts */
} agg_record_t;

typedef struct agg_state agg_state_t;

/* Open (creating) the checkpoint environment in cfg->aggregator.checkpoint_dir with an id
 * window of `id_cap` ids, for config *cfg (copied; see agg_state_set_config). NULL with
 * *err set (-errno, FM_EFORMAT from fm_ckpt_open, FM_EARG for id_cap, -ENOMEM) and one line
 * in `e`. Caller owns it: agg_state_destroy. */
agg_state_t *agg_state_new(const fm_config_t *cfg, size_t id_cap, int *err, fm_errmsg_t *e);

/* Close the environment, free everything, *p = NULL; idempotent. */
void agg_state_destroy(agg_state_t **p);

/* The window of applied update ids (borrowed: lives as long as `s`). */
agg_idset_t *agg_state_ids(agg_state_t *s);

/* Take *cfg (copied) for the next checkpoints: its digest, canonical text and
 * checkpoint_keep. With `what` non-NULL, log (LOG_NOTICE) each key whose value differs from
 * the previous config's, prefixed by `what`. 0, or -errno (open_memstream/fm_cfg_dump; the
 * previous config stays). */
int agg_state_set_config(agg_state_t *s, const fm_config_t *cfg, const char *what);

/* The current canonical config text (borrowed, valid until the next agg_state_set_config). */
const char *agg_state_config_text(const agg_state_t *s);

/* Compare a stored canonical config text (fm_cfg_text of an earlier config) with `now`: one
 * LOG_NOTICE line "<what>: [section] key: old -> new; ..." when keys differ (fm_cfg_diff).
 * Returns the number of differing keys; or, when `was_text` is not a valid config (e.g.
 * written by a version with other keys), the fm_cfg_parse error (< 0) after one NOTICE
 * line saying so. */
int agg_state_config_diff(const char *was_text, const fm_config_t *now, const char *what);

/* Resume from the newest valid checkpoint: params into `model`, optimiser state into `opt`
 * (reset with a warning when its length differs), *rec from the record and meta keys, the
 * id window reloaded, the config compared with the stored one (one LOG_NOTICE per differing
 * key; an older checkpoint without "agg.config": one line if the digest differs).
 * 0 (resumed), -ENOENT (no checkpoint: nothing changed), or an error with one line in `e`:
 * FM_EARG (another model or size: use another checkpoint_dir), FM_ENONFINITE, FM_E* and
 * -errno of fm_ckpt / fm_server_opt_state_check. */
int agg_state_resume(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt, agg_record_t *rec,
                     fm_errmsg_t *e);

/* Save *rec with the model's params, the optimiser state, the config and the id window
 * without its newest `pending` ids (those of the open buffer) in one transaction, then prune
 * to checkpoint_keep records. `why` names the occasion in the log. 0, or the error of
 * fm_ckpt_save (logged at LOG_ERR); a failed prune is logged only. */
int agg_state_save(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt,
                   const agg_record_t *rec, size_t pending, const char *why);

#endif
