#include "trainer_dp.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fm_daemon.h"
#include "fm_dp.h"
#include "fm_file.h"
#include "fm_le.h"
#include "fm_log.h"
#include "fm_random.h"
#include "fm_rdp.h"

#define S_CONV FM_RDP_IMPROVED
#define S_STEPS_CAP 1000000000000ull /* fm_rdp_steps_for's search bound (plan line only) */
#define S_MAGIC "FMDPACC1"           /* the accounts file (trainer_dp.h) */
#define S_VERSION 1u
#define S_HEAD 40u              /* magic, version, first, count, zero, sigma, q */
#define S_SUM 32u               /* crypto_generichash (BLAKE2b-256) */
#define S_SAVE_ERR_EVERY_S 10.0 /* at most one save ERROR per this many seconds */

struct trainer_dp {
    fm_dpsgd_config_t base; /* clip, sigma, q, epochs (seed per training) */
    double delta, target;   /* target 0 = none */
    uint64_t per_training;  /* steps of one local training */
    uint32_t first, count;
    pthread_mutex_t mu;
    uint64_t *steps;           /* count accounts (under mu) */
    char path[FM_CFG_STR_MAX]; /* dp_accounts_file, "" = in memory only */
    uint8_t *file;             /* the file's bytes, rebuilt by each save (under mu) */
    size_t file_len;
    double last_err;     /* when the last save ERROR was logged, 0 = never (under mu) */
    uint64_t suppressed; /* save ERRORs not logged since (under mu) */
};

static size_t s_file_len(uint64_t count) { return S_HEAD + 8 * count + S_SUM; }

static uint64_t s_bits(double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    return v;
}

/* Encode the accounts into dp->file (under mu). */
static void s_encode(trainer_dp_t *dp)
{
    uint8_t *p = dp->file;
    memcpy(p, S_MAGIC, 8);
    fm_le_put32(p + 8, S_VERSION);
    fm_le_put32(p + 12, dp->first);
    fm_le_put32(p + 16, dp->count);
    fm_le_put32(p + 20, 0);
    fm_le_put_f64(p + 24, dp->base.sigma);
    fm_le_put_f64(p + 32, dp->base.q);
    for (uint32_t i = 0; i < dp->count; i++)
        fm_le_put64(p + S_HEAD + 8 * (size_t)i, dp->steps[i]);
    size_t body = dp->file_len - S_SUM;
    crypto_generichash(p + body, S_SUM, p, body, NULL, 0);
}

/* Save every account to dp->path (under mu). 0 or an error with `e`. */
static int s_save(trainer_dp_t *dp, fm_errmsg_t *e)
{
    s_encode(dp);
    return fm_file_replace(dp->path, dp->file, dp->file_len, FM_FILE_DURABLE | FM_FILE_SPARE, e);
}

/* v as %g when that reads back exactly, else with all 17 digits (a mismatch may be in the
 * last bits). */
static const char *s_num(char buf[32], double v)
{
    snprintf(buf, 32, "%g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, 32, "%.17g", v);
    return buf;
}

/* What to do about a file that cannot be used (the end of every refusal below). */
#define S_FIX                                                                                    \
    "restore it, or remove it and accept that the clients' earlier spending is forgotten"

/* Load dp->path into dp->steps (called by trainer_dp_new, before any worker). 0 (a missing
 * file: all zero) or an error with `e` (trainer_dp.h). */
static int s_load(trainer_dp_t *dp, fm_errmsg_t *e)
{
    const char *path = dp->path;
    fm_file_clean(path); /* a temp file a killed save left */
    char *data = NULL;
    size_t len = 0;
    fm_errmsg_t why;
    /* any count's size (so another range is told as such, not as "too large") */
    int rc = fm_file_read(path, s_file_len(UINT32_MAX), &data, &len, &why);
    if (rc == -ENOENT) {
        FM_LOG(LOG_INFO,
               "DP-SGD accounts file %s does not exist: every client starts at 0 steps (first "
               "start); it is written after each training",
               path);
        return 0;
    }
    if (rc != 0)
        return fm_errmsg_set(e, rc, "DP-SGD accounts: %s", why.msg);
    const uint8_t *p = (const uint8_t *)data;
    if (len < 12 || memcmp(p, S_MAGIC, 8) != 0) {
        rc = fm_errmsg_set(e, len < 12 ? FM_ETRUNC : FM_EMAGIC,
                           "%s: not a DP-SGD accounts file (%zu bytes, %s): %s", path, len,
                           len < 12 ? "truncated" : "bad magic", S_FIX);
        goto cleanup;
    }
    if (fm_le_get32(p + 8) != S_VERSION) {
        rc = fm_errmsg_set(e, FM_EVERSION,
                           "%s: DP-SGD accounts file version %u, this trainer reads %u: %s", path,
                           fm_le_get32(p + 8), S_VERSION, S_FIX);
        goto cleanup;
    }
    uint32_t ffirst = len >= S_HEAD ? fm_le_get32(p + 12) : 0,
             fcount = len >= S_HEAD ? fm_le_get32(p + 16) : 0;
    size_t want = s_file_len(fcount);
    if (len < S_HEAD || len != want) {
        rc = fm_errmsg_set(e, FM_ETRUNC,
                           "%s: DP-SGD accounts file truncated or torn (%zu bytes, %zu "
                           "expected): %s",
                           path, len, len < S_HEAD ? s_file_len(0) : want, S_FIX);
        goto cleanup;
    }
    uint8_t sum[S_SUM];
    crypto_generichash(sum, S_SUM, p, len - S_SUM, NULL, 0);
    if (sodium_memcmp(sum, p + len - S_SUM, S_SUM) != 0 || fm_le_get32(p + 20) != 0) {
        rc = fm_errmsg_set(e, FM_EFORMAT,
                           "%s: DP-SGD accounts file corrupt (checksum mismatch): %s", path,
                           S_FIX);
        goto cleanup;
    }
    double sigma = fm_le_get_f64(p + 24), q = fm_le_get_f64(p + 32);
    if (s_bits(sigma) != s_bits(dp->base.sigma) || s_bits(q) != s_bits(dp->base.q) ||
        ffirst != dp->first || fcount != dp->count) {
        char n1[32], n2[32], n3[32], n4[32];
        rc = fm_errmsg_set(e, FM_EARG,
                           "%s: DP-SGD steps taken under sigma %s, q %s for clients %u-%u; the "
                           "config says sigma %s, q %s, clients %u-%u: they cannot be "
                           "reinterpreted: restore those [trainer] keys, or remove the file "
                           "and accept that their earlier spending is forgotten",
                           path, s_num(n1, sigma), s_num(n2, q), ffirst,
                           (uint32_t)(ffirst + fcount - 1), s_num(n3, dp->base.sigma),
                           s_num(n4, dp->base.q), dp->first, dp->first + dp->count - 1);
        goto cleanup;
    }
    uint64_t total = 0, most = 0;
    uint32_t used = 0;
    for (uint32_t i = 0; i < dp->count; i++) {
        uint64_t n = fm_le_get64(p + S_HEAD + 8 * (size_t)i);
        dp->steps[i] = n;
        total += n;
        used += n > 0;
        most = n > most ? n : most;
    }
    FM_LOG(LOG_INFO,
           "DP-SGD accounts loaded from %s: %u of %u clients have run steps (%llu in all, at "
           "most %llu: epsilon %.4g at delta %g)",
           path, used, dp->count, (unsigned long long)total, (unsigned long long)most,
           trainer_dp_epsilon_of(dp, most), dp->delta);
    rc = 0;
cleanup:
    free(data);
    return rc;
}

static void s_normals(void *ctx, double *out, size_t n)
{
    fm_dp_normals(out, n, fm_random_stream_bytes, ctx);
}

fm_dpsgd_rand_t trainer_dp_rand(fm_random_stream_t *stream)
{
    return (fm_dpsgd_rand_t){
        .bytes = fm_random_stream_bytes, .normals = s_normals, .ctx = stream};
}

trainer_dp_t *trainer_dp_new(const fm_config_t *cfg, uint32_t first, uint32_t count, int *err,
                             fm_errmsg_t *e)
{
    const fm_cfg_trainer_t *t = &cfg->trainer;
    fm_dpsgd_config_t base = {.clip = t->dp_clip,
                              .sigma = t->dp_noise_multiplier,
                              .q = t->dp_sample_rate,
                              .epochs = cfg->federation.local_epochs,
                              .mode = FM_CLIP_FAST};
    fm_errmsg_t why;
    int rc = fm_dpsgd_check(&base, &why);
    if (rc != 0 || !(t->dp_delta > 0.0 && t->dp_delta < 1.0) || !(t->dp_target_epsilon >= 0.0)) {
        *err = fm_errmsg_set(e, FM_EARG, "[trainer] dp_*: %s",
                             rc ? why.msg : "dp_delta or dp_target_epsilon out of range");
        return NULL;
    }
    if (fm_random_init() != 0) {
        *err = fm_errmsg_set(e, -EIO,
                             "DP-SGD: libsodium cannot start (no secure random "
                             "source): no private noise can be drawn");
        return NULL;
    }
    trainer_dp_t *dp = calloc(1, sizeof *dp);
    if (!dp || !(dp->steps = calloc(count ? count : 1, sizeof(uint64_t))) ||
        !(dp->file = malloc(s_file_len(count)))) {
        if (dp)
            free(dp->steps);
        free(dp);
        *err = fm_errmsg_set(e, -ENOMEM, "DP-SGD accounts: out of memory");
        return NULL;
    }
    if ((rc = pthread_mutex_init(&dp->mu, NULL)) != 0) {
        free(dp->file);
        free(dp->steps);
        free(dp);
        *err = fm_errmsg_set(e, -rc, "DP-SGD accounts: mutex: %s", fm_strerror(-rc));
        return NULL;
    }
    dp->base = base;
    dp->delta = t->dp_delta;
    dp->target = t->dp_target_epsilon;
    dp->per_training = (uint64_t)base.epochs * fm_dpsgd_steps_per_epoch(base.q);
    dp->first = first;
    dp->count = count;
    dp->file_len = s_file_len(count);
    snprintf(dp->path, sizeof dp->path, "%s", t->dp_accounts_file);
    if (dp->path[0] && (rc = s_load(dp, e)) != 0) {
        *err = rc;
        trainer_dp_destroy(&dp);
        return NULL;
    }
    if (!dp->path[0])
        FM_LOG(LOG_WARNING,
               "DP-SGD without [trainer] dp_accounts_file: the clients' privacy accounts are "
               "in memory only, so a restart forgets the budget they spent (each restarted "
               "client starts again at epsilon 0)");
    double one = trainer_dp_epsilon_of(dp, dp->per_training);
    char budget[160] = "no budget (dp_target_epsilon = 0)";
    uint64_t fit = 0;
    if (dp->target > 0 && fm_rdp_steps_for(base.q, base.sigma, dp->delta, dp->target, S_CONV,
                                           S_STEPS_CAP, &fit) == 0)
        snprintf(budget, sizeof budget,
                 "budget epsilon %g: at most %llu trainings per client (%llu steps)", dp->target,
                 (unsigned long long)(fit / dp->per_training), (unsigned long long)fit);
    FM_LOG(LOG_INFO,
           "DP-SGD on clients %u-%u: clip %g, noise multiplier %g, sample rate %g, %llu steps "
           "per training (%d epochs x %llu); epsilon after one training %.4g at delta %g; %s; "
           "%zu bytes of account per client",
           first, first + count - 1, base.clip, base.sigma, base.q,
           (unsigned long long)dp->per_training, base.epochs,
           (unsigned long long)fm_dpsgd_steps_per_epoch(base.q), one, dp->delta, budget,
           sizeof(uint64_t));
    return dp;
}

void trainer_dp_destroy(trainer_dp_t **p)
{
    if (!p || !*p)
        return;
    trainer_dp_t *dp = *p;
    pthread_mutex_destroy(&dp->mu);
    free(dp->file);
    free(dp->steps);
    free(dp);
    *p = NULL;
}

void trainer_dp_config(const trainer_dp_t *dp, uint64_t seed, fm_dpsgd_config_t *out)
{
    *out = dp->base;
    out->seed = seed;
}

uint64_t trainer_dp_steps_per_training(const trainer_dp_t *dp) { return dp->per_training; }

double trainer_dp_epsilon_of(const trainer_dp_t *dp, uint64_t steps)
{
    if (steps == 0)
        return 0.0;
    return fm_rdp_epsilon_of(dp->base.q, dp->base.sigma, steps, dp->delta, S_CONV, NULL);
}

/* The account of `client`, or NULL outside the range. */
static uint64_t *s_account(trainer_dp_t *dp, uint32_t client)
{
    if (client < dp->first || client - dp->first >= dp->count)
        return NULL;
    return &dp->steps[client - dp->first];
}

double trainer_dp_epsilon(trainer_dp_t *dp, uint32_t client, uint64_t *steps)
{
    pthread_mutex_lock(&dp->mu);
    uint64_t *a = s_account(dp, client), n = a ? *a : 0;
    pthread_mutex_unlock(&dp->mu);
    if (steps)
        *steps = n;
    return trainer_dp_epsilon_of(dp, n);
}

/* Would `done` steps plus one more training exceed the target? */
static int s_over(const trainer_dp_t *dp, uint64_t done, double *next)
{
    *next = trainer_dp_epsilon_of(dp, done + dp->per_training);
    return dp->target > 0 && *next > dp->target;
}

int trainer_dp_spent(trainer_dp_t *dp, uint32_t client)
{
    if (dp->target <= 0)
        return 0;
    uint64_t done;
    double next;
    trainer_dp_epsilon(dp, client, &done);
    return s_over(dp, done, &next);
}

int trainer_dp_admit(trainer_dp_t *dp, uint32_t client)
{
    if (dp->target <= 0)
        return 1;
    uint64_t done;
    double now = trainer_dp_epsilon(dp, client, &done), next;
    if (!s_over(dp, done, &next))
        return 1;
    FM_LOG(LOG_NOTICE,
           "client %u: DP-SGD budget: its next training (%llu steps) would take epsilon from "
           "%.4g to %.4g > dp_target_epsilon %g (delta %g): the client stops training and "
           "sends no further updates",
           client, (unsigned long long)dp->per_training, now, next, dp->target, dp->delta);
    return 0;
}

int trainer_dp_spend(trainer_dp_t *dp, uint32_t client, uint64_t steps, double *eps)
{
    int rc = 0;
    fm_errmsg_t e = {{0}};
    pthread_mutex_lock(&dp->mu);
    uint64_t *a = s_account(dp, client), total = 0;
    if (a)
        total = *a += steps;
    if (dp->path[0] && (rc = s_save(dp, &e)) != 0) {
        double now = fm_daemon_now();
        if (dp->last_err > 0 && now - dp->last_err < S_SAVE_ERR_EVERY_S) {
            dp->suppressed++;
        } else {
            FM_LOG(LOG_ERR,
                   "client %u: DP-SGD accounts not saved, so its update is not sent (the "
                   "steps stay counted in memory): %s (%llu similar errors suppressed)",
                   client, e.msg, (unsigned long long)dp->suppressed);
            dp->last_err = now;
            dp->suppressed = 0;
        }
    }
    pthread_mutex_unlock(&dp->mu);
    double now_eps = trainer_dp_epsilon_of(dp, total);
    FM_LOG(LOG_INFO,
           "client %u: DP-SGD training of %llu steps (%llu in all), sigma %g, q %g: epsilon "
           "%.4g at delta %g",
           client, (unsigned long long)steps, (unsigned long long)total, dp->base.sigma,
           dp->base.q, now_eps, dp->delta);
    if (eps)
        *eps = now_eps;
    return rc;
}
