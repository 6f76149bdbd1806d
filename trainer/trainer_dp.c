#include "trainer_dp.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "fm_dp.h"
#include "fm_log.h"
#include "fm_random.h"
#include "fm_rdp.h"

#define S_CONV FM_RDP_IMPROVED
#define S_STEPS_CAP 1000000000000ull /* fm_rdp_steps_for's search bound (plan line only) */

struct trainer_dp {
    fm_dpsgd_config_t base; /* clip, sigma, q, epochs (seed per training) */
    double delta, target;   /* target 0 = none */
    uint64_t per_training;  /* steps of one local training */
    uint32_t first, count;
    pthread_mutex_t mu;
    uint64_t *steps; /* count accounts (under mu) */
};

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
    if (!dp || !(dp->steps = calloc(count ? count : 1, sizeof(uint64_t)))) {
        free(dp);
        *err = fm_errmsg_set(e, -ENOMEM, "DP-SGD accounts: out of memory");
        return NULL;
    }
    if ((rc = pthread_mutex_init(&dp->mu, NULL)) != 0) {
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

int trainer_dp_admit(trainer_dp_t *dp, uint32_t client)
{
    if (dp->target <= 0)
        return 1;
    uint64_t done;
    double now = trainer_dp_epsilon(dp, client, &done);
    double next = trainer_dp_epsilon_of(dp, done + dp->per_training);
    if (next <= dp->target)
        return 1;
    FM_LOG(LOG_NOTICE,
           "client %u: DP-SGD budget: its next training (%llu steps) would take epsilon from "
           "%.4g to %.4g > dp_target_epsilon %g (delta %g): the client stops training and "
           "sends no further updates",
           client, (unsigned long long)dp->per_training, now, next, dp->target, dp->delta);
    return 0;
}

double trainer_dp_spend(trainer_dp_t *dp, uint32_t client, uint64_t steps)
{
    pthread_mutex_lock(&dp->mu);
    uint64_t *a = s_account(dp, client), total = 0;
    if (a)
        total = *a += steps;
    pthread_mutex_unlock(&dp->mu);
    double eps = trainer_dp_epsilon_of(dp, total);
    FM_LOG(LOG_INFO,
           "client %u: DP-SGD training of %llu steps (%llu in all), sigma %g, q %g: epsilon "
           "%.4g at delta %g",
           client, (unsigned long long)steps, (unsigned long long)total, dp->base.sigma,
           dp->base.q, eps, dp->delta);
    return eps;
}
