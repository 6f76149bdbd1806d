/* agg_state: what the aggregator keeps across restarts, in the LMDB environment of
 * [aggregator] checkpoint_dir (fm_ckpt).
 *
 * One checkpoint = one fm_ckpt_save transaction holding the record (params, server
 * optimiser state, version, counters, config digest) and eight blobs kept WITH that record
 * (fm_ckpt record blobs, pruned with it):
 *   "agg.ids"     the ids of the updates applied to the model (the id window, oldest first,
 *                 without the open buffer's ids: those are not in the model)
 *   "agg.round"   the last sync round opened, u64 little-endian
 *   "agg.config"  the canonical config text (fm_cfg_text), so a resume can name the keys
 *                 that differ (fm_cfg_parse + fm_cfg_diff)
 *   "agg.lost"    the version numbers lost in the last fallback or reset (two u64 LE: first,
 *                 last; 0 0 = none), carried from record to record
 *   "agg.reasons" the rejected counters of the reasons past the header's FM_CKPT_NREASONS
 *                 (u64 LE each, in reason order; an older store's fewer or none: 0)
 *   "agg.clipped" updates clipped to the norm bound (u64 LE; absent in an older store: 0)
 *   "agg.privacy" [privacy] mode = client: the privacy budget spent (agg_privacy_save); absent
 *                 when privacy is off
 *   "agg.clip"    [privacy] adaptive_clip: the current clip C (agg_privacy_save_clip); absent
 *                 without adaptive clipping (a resume then starts from clip_norm)
 * The id window (agg_idset) lives here: the ingest step borrows it to drop duplicates.
 *
 * A resume takes ONE record: its version, params, optimiser state, counters, ids and round
 * belong together. When that is not the newest version ever used (the newer records are
 * unreadable, or an operator reset the store: fm_ckpt_high_water H above the record's
 * version V), versions V+1..H are "lost": one WARNING says so, updates based on them are
 * rejected as future (agg_state_lost), and the next version is H+1 (agg_state_next_version),
 * so no two different models ever carry the same version number. Before an older fedmq's
 * store (blobs in meta keys) is resumed from its newest record, the meta keys are used.
 *
 * Not thread-safe; one agg_state_t per checkpoint directory and process. */
#ifndef AGG_STATE_H
#define AGG_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "aggregator_idset.h"
#include "aggregator_privacy.h"
#include "aggregator_stats.h"
#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_server_opt.h"
#include "fm_stats.h"

/* The scalars of one checkpoint besides params and optimiser state. */
typedef struct {
    uint64_t version;        /* model version */
    uint64_t round;          /* last sync round opened (0: none, or async) */
    agg_counters_t counters; /* applied and rejected counts */
    /* [privacy] mode = client: the spent budget (agg_privacy_save), privacy_len bytes;
     * 0 = none (privacy off, or an older record without it) */
    uint8_t privacy[AGG_PRIVACY_BLOB_LEN];
    size_t privacy_len;
    /* [privacy] adaptive_clip: the current C (agg_privacy_save_clip), clip_len bytes; 0 = none */
    uint8_t clip[AGG_PRIVACY_CLIP_LEN];
    size_t clip_len;
} agg_record_t;

typedef struct agg_state agg_state_t;

#define AGG_STATE_SHUTDOWN "shutdown" /* agg_state_save's `why` for the final checkpoint */

/* Open (creating) the checkpoint environment in cfg->aggregator.checkpoint_dir with an id
 * window of `id_cap` ids, for config *cfg (copied; see agg_state_set_config). NULL with
 * *err set (-errno, FM_EFORMAT / FM_ETRUNC / FM_ERANGE from fm_ckpt_open: a truncated
 * data.mdb, a store below its high-water mark, ...; FM_EARG for id_cap, -ENOMEM) and one
 * line in `e` saying what to do. Caller owns it: agg_state_destroy. */
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
 * (reset with a warning when its length differs), *rec from the record and its blobs, the
 * id window reloaded from the same record, the config compared with the stored one (one
 * LOG_NOTICE per differing key; an older checkpoint without "agg.config": one line if the
 * digest differs). Newer records skipped as unreadable, or versions lost to a reset: one
 * LOG_WARNING line naming them (see above).
 * 0 (resumed), -ENOENT (no checkpoint: nothing changed; after a reset of an empty store,
 * versions 1..H are lost and said so), or an error with one line in `e`: FM_EARG (another
 * model or size: use another checkpoint_dir), FM_ENONFINITE, FM_E* and -errno of fm_ckpt /
 * fm_server_opt_state_check. */
int agg_state_resume(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt, agg_record_t *rec,
                     fm_errmsg_t *e);

/* Save *rec with the model's params, the optimiser state, the config and the id window
 * without its newest `pending` ids (those of the open buffer) in one transaction, then prune
 * to checkpoint_keep records. `why` names the occasion in the log; AGG_STATE_SHUTDOWN marks
 * the final checkpoint of a clean stop. A version at or below the lost range (the resumed
 * record, no new version since) is not saved again: 0 with a NOTICE. 0, or the error of
 * fm_ckpt_save (-ENOSPC for a full disk, -EIO, ...), counted (agg_state_checkpoint_failures)
 * and logged at LOG_ERR: rate-limited (fm_ratelog), except the final one, always one line
 * "final checkpoint of version N failed: ...". A failed prune is logged only (rate-limited). */
int agg_state_save(agg_state_t *s, fm_model_t *model, fm_server_opt_t *opt,
                   const agg_record_t *rec, size_t pending, const char *why);

/* The durability mark of the id window: ids with sequence number (agg_idset_find) below it
 * are in a checkpoint that was saved (or resumed from), so the updates they name survive a
 * crash; the ids at or above it do not yet. Only grows, except that a resume sets it to the
 * reloaded window's end. */
uint64_t agg_state_durable_seq(const agg_state_t *s);

/* The version after `version`: version + 1, or above every number ever used in the
 * checkpoint directory (fm_ckpt_high_water) when that is higher (after a fallback or a
 * reset). */
uint64_t agg_state_next_version(const agg_state_t *s, uint64_t version);

/* The version numbers lost in the last fallback or reset: 1 with [*first, *last], or 0 (none;
 * both set to 0). Updates based on them must be rejected as future. */
int agg_state_lost(const agg_state_t *s, uint64_t *first, uint64_t *last);

/* Checkpoints that failed since the start (for stats.json and /metrics). */
uint64_t agg_state_checkpoint_failures(const agg_state_t *s);

/* The newest version saved by this process or resumed from (0: none). */
uint64_t agg_state_checkpoint_version(const agg_state_t *s);

/* Fill stats.json's checkpoint_version and checkpoint_failures. */
void agg_state_stats(const agg_state_t *s, fm_stats_t *st);

#endif
