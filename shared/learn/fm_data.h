/* fm_data: MNIST-format (IDX) datasets and deterministic client partitions.
 *
 * Images are read from IDX3 files (magic 0x00000803, uint8 pixels), labels from IDX1
 * files (magic 0x00000801, uint8), gzipped or not (zlib detects either). Pixels become
 * float32 (p/255 - mean) / std. */
#ifndef FM_DATA_H
#define FM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define FM_FASHION_MEAN 0.2860f
#define FM_FASHION_STD 0.3530f

typedef struct {
    uint32_t n;    /* number of samples */
    uint32_t rows; /* image height (28 for MNIST formats) */
    uint32_t cols; /* image width */
    float *x;      /* n * rows * cols normalised pixels, sample-major (owned) */
    uint8_t *y;    /* n labels (owned) */
} fm_dataset_t;

/* Load an images file and a labels file. Fails with FM_EMAGIC (wrong magic), FM_ETRUNC
 * (fewer bytes than the header promises), FM_ESHAPE (image/label counts differ, or a
 * label >= 10), FM_EFORMAT (corrupt gzip), -errno (cannot open). `e` gets one line naming
 * the file. NULL on failure with *err (may be NULL) set to that code; the caller owns the
 * result (fm_dataset_destroy). */
fm_dataset_t *fm_dataset_load(const char *images_path, const char *labels_path, float mean,
                              float std, int *err, fm_errmsg_t *e);

/* Load split "train" or "t10k" from a directory holding the usual four files
 * ("<split>-images-idx3-ubyte[.gz]", "<split>-labels-idx1-ubyte[.gz]"; the .gz name is
 * tried first). Same errors and ownership as fm_dataset_load. */
fm_dataset_t *fm_dataset_load_dir(const char *dir, const char *split, float mean, float std,
                                  int *err, fm_errmsg_t *e);

/* Free and NULL *p; idempotent. */
void fm_dataset_destroy(fm_dataset_t **p);

/* A partition of sample indices over clients: client k owns
 * indices[offsets[k] .. offsets[k+1]). */
typedef struct {
    uint32_t nclients;
    uint32_t *offsets; /* nclients + 1 entries (owned) */
    uint32_t *indices; /* offsets[nclients] entries (owned) */
} fm_partition_t;

/* A parsed partition spec (the grammar below, owned here; fm_cfg validates with it). */
typedef enum {
    FM_PARTITION_IID,
    FM_PARTITION_DIRICHLET,
    FM_PARTITION_SHARDS
} fm_partition_kind_t;
typedef struct {
    fm_partition_kind_t kind;
    double alpha;    /* dirichlet: finite, > 0 */
    uint32_t shards; /* shards: K >= 1 */
} fm_partition_spec_t;

/* Parse "iid", "dirichlet:A" (A finite, > 0) or "shards:K" (K decimal, 1..2^32-1) into *out
 * (written only on success). 0, or FM_EARG with the reason alone in `e` (may be NULL),
 * e.g. "ALPHA must be a positive finite number"; callers add the spec. */
int fm_partition_spec_parse(const char *spec, fm_partition_spec_t *out, fm_errmsg_t *e);

/* Partition `ds` over `nclients` clients by `spec` (fm_partition_spec_parse):
 *   "iid"            shuffle, then equal contiguous slices (sizes differ by at most 1);
 *   "dirichlet:A"    per class, proportions over clients drawn from Dirichlet(A), A > 0;
 *   "shards:K"       sort by label, cut into nclients*K equal shards, deal K to each client
 *                    at random (McMahan et al. 2017).
 * Deterministic: the same ds labels, spec, nclients and seed give the same partition in
 * every process. NULL on failure with *err (may be NULL): FM_EARG for a bad spec or
 * nclients == 0 or more shards than samples, -ENOMEM. The caller owns the result
 * (fm_partition_destroy). */
fm_partition_t *fm_partition_new(const fm_dataset_t *ds, const char *spec, uint32_t nclients,
                                 uint64_t seed, int *err, fm_errmsg_t *e);

void fm_partition_destroy(fm_partition_t **p);

/* Split every client's samples of `p` into a training part and a held-out part (for
 * population-level validation: the held-out slice is never trained on). Client k holds
 * out h_k = round(frac * n_k) samples, at most n_k - 1 (a client keeps at least one
 * training sample; one with a single sample holds none out), chosen by a seeded shuffle
 * of its indices (stream: seed, k); the training part keeps p's order. Deterministic: every
 * process computes the same split. frac in [0, 0.9]; frac == 0 gives empty held-out parts.
 * Both outputs have p->nclients clients and are owned by the caller (fm_partition_destroy).
 * Errors: FM_EARG (frac out of range), -ENOMEM. On error both outputs are NULL. */
int fm_partition_holdout(const fm_partition_t *p, double frac, uint64_t seed,
                         fm_partition_t **train, fm_partition_t **held, fm_errmsg_t *e);

/* The federation's client data as every process must compute it (trainers train on
 * *train, the evaluator scores *held, `fedmq partition` exports both):
 * fm_partition_new(ds, spec, nclients, seed), then fm_partition_holdout(holdout, seed).
 * Errors: those two's (FM_EARG, -ENOMEM); `e` names the step ("partition dirichlet:-1:
 * ..." or "holdout 0.95: ..."). Outputs as fm_partition_holdout's (NULL on error). */
int fm_partition_clients(const fm_dataset_t *ds, const char *spec, uint32_t nclients,
                         uint64_t seed, double holdout, fm_partition_t **train,
                         fm_partition_t **held, fm_errmsg_t *e);

#endif
