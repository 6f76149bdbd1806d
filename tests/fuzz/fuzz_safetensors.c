/* fuzz_safetensors: libFuzzer target of the safetensors reader
 * (shared/learn/fm_safetensors.c): one input = one file, kept in a memfd and opened by its
 * /proc/self/fd path as any file is.
 *
 * fm_safetensors_open, then everything a caller may do with an open file (every tensor by
 * index and by name, every data byte read, metadata lookups), then
 * fm_safetensors_load_model into the model the file's "fedmq_model" metadata names (logreg
 * when none): what `fedmq eval`, `aggregator.init` and the tests load.
 * Properties checked (FUZZ_ASSERT):
 *   - every error is the contract's one printable line (fuzz_msg_ok), and *err agrees;
 *   - an open file: count >= 0, each tensor's name finds that same tensor, its dtype is a
 *     known one, ndim within FM_MAX_DIMS, nbytes = dtype size x product of the shape;
 *   - a loaded model is finite, and a failed load leaves the model unchanged.
 * With FM_FUZZ_SEEDS=1 every input must open. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_err.h"
#include "fm_model.h"
#include "fm_safetensors.h"
#include "fuzz_util.h"

static fuzz_memfd_t s_file;
static fm_model_t *s_models[3]; /* logreg, mlp, cnn */
static float *s_saved;          /* a copy of the model's parameters before a load */
static bool s_seeds;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const names[3] = {"logreg", "mlp", "cnn"};
    size_t most = 0;
    fuzz_memfd_init(&s_file, "fuzz-safetensors");
    for (int i = 0; i < 3; i++) {
        int err = 0;
        s_models[i] = fm_model_new(names[i], &err);
        FUZZ_ASSERT(s_models[i]);
        fm_model_init(s_models[i], 1);
        if (fm_model_nparams(s_models[i]) > most)
            most = fm_model_nparams(s_models[i]);
    }
    s_saved = malloc(most * sizeof *s_saved);
    FUZZ_ASSERT(s_saved);
    s_seeds = fuzz_seeds_mode();
    return 0;
}

/* Bytes per element of a dtype the reader accepts, 0 for any other. */
static size_t s_dtype_size(const char *dtype)
{
    static const struct {
        const char *name;
        size_t size;
    } known[] = {{"F32", 4}, {"F64", 8}, {"I64", 8}, {"I32", 4},
                 {"U8", 1},  {"F16", 2}, {"BF16", 2}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(dtype, known[i].name) == 0)
            return known[i].size;
    return 0;
}

static void s_check_open(const fm_safetensors_t *f)
{
    int n = fm_safetensors_count(f);
    FUZZ_ASSERT(n >= 0);
    unsigned x = 0;
    for (int i = 0; i < n; i++) {
        const fm_tensor_t *t = fm_safetensors_at(f, i);
        FUZZ_ASSERT(t && t->name && t->dtype);
        FUZZ_ASSERT(fm_safetensors_get(f, t->name) == t);
        size_t size = s_dtype_size(t->dtype);
        FUZZ_ASSERT(size > 0);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= FM_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_ASSERT(t->shape[d] >= 0);
            numel *= (uint64_t)t->shape[d]; /* the reader refused overflowing shapes */
        }
        FUZZ_ASSERT(numel * size == t->nbytes);
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) /* ASan: inside the file's buffer */
            x += p[k];
    }
    (void)x;
    FUZZ_ASSERT(fm_safetensors_at(f, n) == NULL && fm_safetensors_at(f, -1) == NULL);
    (void)fm_safetensors_meta(f, "format");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_memfd_set(&s_file, data, size);
    fm_errmsg_t e = {{0}};
    int err = 1;
    fm_safetensors_t *f = fm_safetensors_open(s_file.path, &err, &e);
    fm_model_t *m = s_models[0];
    if (!f) {
        FUZZ_ASSERT(err != 0);
        fuzz_msg_ok(err, &e);
        fuzz_seed_valid(s_seeds, err, &e, "safetensors file");
        return 0;
    }
    FUZZ_ASSERT(err == 0);
    s_check_open(f);
    const char *want = fm_safetensors_meta(f, "fedmq_model");
    for (int i = 0; want && i < 3; i++)
        if (strcmp(want, fm_model_name(s_models[i])) == 0)
            m = s_models[i];
    fm_safetensors_close(&f);
    FUZZ_ASSERT(f == NULL);

    size_t np = fm_model_nparams(m);
    memcpy(s_saved, fm_model_params(m), np * sizeof *s_saved);
    fm_errmsg_t e2 = {{0}};
    int rc = fm_safetensors_load_model(m, s_file.path, &e2);
    fuzz_msg_ok(rc, &e2);
    if (rc == 0)
        FUZZ_ASSERT(fm_model_all_finite(m));
    else
        FUZZ_ASSERT(memcmp(s_saved, fm_model_params(m), np * sizeof *s_saved) == 0);
    return 0;
}
