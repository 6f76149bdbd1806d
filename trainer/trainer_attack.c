#include "trainer_attack.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_rng.h"

#define S_NCLASSES 10
#define S_RUN_MIX 0x9E3779B97F4A7C15ULL /* golden-ratio odd constant: one seed per run */

static const char *const s_names[] = {"none", "signflip", "noise", "backdoor"};

void trainer_attack_defaults(trainer_attack_t *a)
{
    *a = (trainer_attack_t){.kind = TRAINER_ATTACK_NONE,
                            .scale = 10.0,
                            .noise_norm = 100.0,
                            .target = 0,
                            .poison_fraction = 0.5,
                            .boost = 1.0,
                            .seed = 1};
}

int trainer_attack_kind_parse(const char *s, trainer_attack_kind_t *out)
{
    for (int k = 0; k < (int)(sizeof s_names / sizeof s_names[0]); k++)
        if (strcmp(s, s_names[k]) == 0) {
            *out = (trainer_attack_kind_t)k;
            return 0;
        }
    return FM_EARG;
}

const char *trainer_attack_kind_name(trainer_attack_kind_t kind)
{
    if ((int)kind < 0 || (int)kind >= (int)(sizeof s_names / sizeof s_names[0]))
        return "?";
    return s_names[kind];
}

int trainer_attack_check(const trainer_attack_t *a, fm_errmsg_t *e)
{
    if ((int)a->kind < TRAINER_ATTACK_NONE || a->kind > TRAINER_ATTACK_BACKDOOR)
        return fm_errmsg_set(e, FM_EARG, "attack: unknown kind %d", (int)a->kind);
    if (!(isfinite(a->scale) && a->scale > 0))
        return fm_errmsg_set(e, FM_EARG, "scale %g: must be finite and > 0", a->scale);
    if (!(isfinite(a->noise_norm) && a->noise_norm > 0))
        return fm_errmsg_set(e, FM_EARG, "noise norm %g: must be finite and > 0", a->noise_norm);
    if (a->target < 0 || a->target >= S_NCLASSES)
        return fm_errmsg_set(e, FM_EARG, "target %d: must be a class 0..%d", a->target,
                             S_NCLASSES - 1);
    if (!(a->poison_fraction > 0 && a->poison_fraction <= 1))
        return fm_errmsg_set(e, FM_EARG, "poison fraction %g: must be in (0, 1]",
                             a->poison_fraction);
    if (!(isfinite(a->boost) && a->boost > 0))
        return fm_errmsg_set(e, FM_EARG, "boost %g: must be finite and > 0", a->boost);
    return 0;
}

void trainer_attack_describe(const trainer_attack_t *a, char *buf, size_t size)
{
    switch (a->kind) {
    case TRAINER_ATTACK_SIGNFLIP:
        snprintf(buf, size, "signflip: delta = -%g x the honest delta", a->scale);
        break;
    case TRAINER_ATTACK_NOISE:
        snprintf(buf, size, "noise: delta = Gaussian noise of L2 norm %g (seed %llu)",
                 a->noise_norm, (unsigned long long)a->seed);
        break;
    case TRAINER_ATTACK_BACKDOOR:
        snprintf(buf, size,
                 "backdoor: %d x %d white trigger bottom-right, %g of each client's samples "
                 "relabelled to class %d, delta x %g (seed %llu)",
                 TRAINER_ATTACK_PATCH, TRAINER_ATTACK_PATCH, a->poison_fraction, a->target,
                 a->boost, (unsigned long long)a->seed);
        break;
    default: snprintf(buf, size, "none (honest)"); break;
    }
}

/* delta = Gaussian noise of L2 norm exactly `norm` (up to float rounding). */
static void s_noise(const trainer_attack_t *a, float *delta, size_t n, uint32_t client,
                    uint64_t run)
{
    fm_rng_t r;
    fm_rng_seed(&r, a->seed + S_RUN_MIX * (run + 1), client);
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        delta[i] = (float)fm_rng_normal(&r);
        ss += (double)delta[i] * delta[i];
    }
    if (ss <= 0) /* n == 0, or a draw of all zeros: nothing to scale */
        return;
    double f = a->noise_norm / sqrt(ss);
    for (size_t i = 0; i < n; i++)
        delta[i] = (float)(delta[i] * f);
}

void trainer_attack_apply(const trainer_attack_t *a, float *delta, size_t n, uint32_t client,
                          uint64_t run)
{
    float f;
    switch (a->kind) {
    case TRAINER_ATTACK_SIGNFLIP: f = (float)-a->scale; break;
    case TRAINER_ATTACK_NOISE: s_noise(a, delta, n, client, run); return;
    case TRAINER_ATTACK_BACKDOOR: f = (float)a->boost; break;
    default: return;
    }
    if (f == 1.0f)
        return;
    for (size_t i = 0; i < n; i++)
        delta[i] *= f;
}

float trainer_attack_white(void) { return (1.0f - FM_FASHION_MEAN) / FM_FASHION_STD; }

void trainer_attack_stamp(float *img, uint32_t rows, uint32_t cols)
{
    uint32_t r0 = rows > TRAINER_ATTACK_PATCH ? rows - TRAINER_ATTACK_PATCH : 0;
    uint32_t c0 = cols > TRAINER_ATTACK_PATCH ? cols - TRAINER_ATTACK_PATCH : 0;
    float white = trainer_attack_white();
    for (uint32_t r = r0; r < rows; r++)
        for (uint32_t c = c0; c < cols; c++)
            img[(size_t)r * cols + c] = white;
}

int trainer_attack_poison_client(const trainer_attack_t *a, fm_dataset_t *ds, const uint32_t *idx,
                                 uint32_t n, uint32_t client, uint32_t *poisoned)
{
    *poisoned = 0;
    if (n == 0)
        return 0;
    uint32_t *pick = malloc((size_t)n * sizeof *pick);
    if (!pick)
        return -ENOMEM;
    memcpy(pick, idx, (size_t)n * sizeof *pick);
    fm_rng_t r;
    fm_rng_seed(&r, a->seed, client);
    fm_rng_shuffle_u32(&r, pick, n);
    uint32_t m = (uint32_t)lround(a->poison_fraction * n);
    size_t pixels = (size_t)ds->rows * ds->cols;
    for (uint32_t i = 0; i < m; i++) {
        trainer_attack_stamp(ds->x + (size_t)pick[i] * pixels, ds->rows, ds->cols);
        ds->y[pick[i]] = (uint8_t)a->target;
    }
    free(pick);
    *poisoned = m;
    return 0;
}
