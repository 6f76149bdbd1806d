/* trainer_attack: what a poisoning client does, for the poisoning benchmark (issue 11).
 *
 * Only bench/fedmq_attacker sets an attack; the production fedmq-trainer never does
 * (trainer_worker_env_t.attack = NULL: honest). Every client of an attacker pool attacks.
 *   signflip  after honest local training, delta = -scale * delta (default scale 10);
 *   noise     after honest local training, the delta is replaced by Gaussian noise scaled to
 *             exactly noise_norm in L2 (default 100), drawn from (seed, client, run): the same
 *             update gets the same noise in every process;
 *   backdoor  the client trains on its samples with poison_fraction of them (default 0.5,
 *             chosen per client from seed) stamped with the trigger and relabelled to
 *             `target`; the delta is then multiplied by `boost` (default 1: unboosted).
 * The trigger: a TRAINER_ATTACK_PATCH x TRAINER_ATTACK_PATCH (4 x 4) white square in the
 * bottom-right corner of the image (rows and columns rows-4 .. rows-1, cols-4 .. cols-1 of a
 * 28 x 28 Fashion-MNIST image), white being pixel 255 normalised as fm_data does:
 * (1 - FM_FASHION_MEAN) / FM_FASHION_STD. */
#ifndef TRAINER_ATTACK_H
#define TRAINER_ATTACK_H

#include <stddef.h>
#include <stdint.h>

#include "fm_data.h"
#include "fm_err.h"

#define TRAINER_ATTACK_PATCH 4 /* side of the square trigger, pixels */

typedef enum {
    TRAINER_ATTACK_NONE,
    TRAINER_ATTACK_SIGNFLIP,
    TRAINER_ATTACK_NOISE,
    TRAINER_ATTACK_BACKDOOR
} trainer_attack_kind_t;

typedef struct {
    trainer_attack_kind_t kind;
    double scale;           /* signflip: delta = -scale * delta; > 0 (default 10) */
    double noise_norm;      /* noise: L2 norm of the replacement delta; > 0 (default 100) */
    int target;             /* backdoor: the class poisoned samples are relabelled to (0) */
    double poison_fraction; /* backdoor: fraction of each client's samples poisoned (0.5) */
    double boost;           /* backdoor: the delta is multiplied by this; > 0 (default 1) */
    uint64_t seed;          /* noise draws, choice of poisoned samples (default 1) */
} trainer_attack_t;

/* The defaults above, kind none. */
void trainer_attack_defaults(trainer_attack_t *a);

/* "none", "signflip", "noise", "backdoor" into *out: 0, or FM_EARG (unknown name). */
int trainer_attack_kind_parse(const char *s, trainer_attack_kind_t *out);

/* The name of a kind (static string). */
const char *trainer_attack_kind_name(trainer_attack_kind_t kind);

/* 0 if every field is in range, else FM_EARG with one line in `e` naming the field. */
int trainer_attack_check(const trainer_attack_t *a, fm_errmsg_t *e);

/* One line describing the attack into buf (always terminated). */
void trainer_attack_describe(const trainer_attack_t *a, char *buf, size_t size);

/* Turn the honest delta[0..n) of `client`'s run number `run` into the attacker's: signflip,
 * noise (deterministic per seed, client and run), backdoor (boost). Nothing for none. */
void trainer_attack_apply(const trainer_attack_t *a, float *delta, size_t n, uint32_t client,
                          uint64_t run);

/* The white pixel value of the trigger, normalised as fm_data normalises Fashion-MNIST. */
float trainer_attack_white(void);

/* Stamp the trigger onto one image img[rows * cols] (normalised pixels, row-major); images
 * smaller than the patch are stamped whole. */
void trainer_attack_stamp(float *img, uint32_t rows, uint32_t cols);

/* Poison in place the samples of `client` (indices idx[0..n) into ds, e.g. its partition):
 * round(poison_fraction * n) of them, chosen by a shuffle seeded with (seed, client), get the
 * trigger and label `target`. Call it on a copy of the data the caller owns (a trainer pool's
 * loaded training set). *poisoned = how many. 0, or -ENOMEM (ds unchanged). */
int trainer_attack_poison_client(const trainer_attack_t *a, fm_dataset_t *ds, const uint32_t *idx,
                                 uint32_t n, uint32_t client, uint32_t *poisoned);

#endif
