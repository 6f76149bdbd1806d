/* fm_safetensors: the safetensors file format (https://github.com/huggingface/safetensors):
 * 8-byte little-endian header length N, N bytes of JSON header
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"k": "v"}}
 * then the raw little-endian tensor bytes. */
#ifndef FM_SAFETENSORS_H
#define FM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_model.h"

/* One tensor to write, or one tensor found in a file (then all pointers are borrowed
 * from the fm_safetensors_t and live as long as it). */
typedef struct {
    const char *name;
    const char *dtype; /* "F32", "F64", "I64", "I32", "U8" */
    int ndim;          /* 0..FM_MAX_DIMS */
    int64_t shape[FM_MAX_DIMS];
    const void *data;
    size_t nbytes;
} fm_tensor_t;

typedef struct fm_safetensors fm_safetensors_t;

/* Read and validate a whole file: header length within the file and the format's 100 MB
 * limit; the header strict JSON (jansson: UTF-8, no NUL, no duplicate key at any level,
 * nesting bounded) and an object of entries {"dtype","shape","data_offsets"} (exactly
 * these, integers non-negative int64) plus an optional "__metadata__" of strings; every
 * entry has a known dtype, at most FM_MAX_DIMS dims, data_offsets consistent with
 * dtype*shape and within the data section. Errors: -errno, FM_ETRUNC, FM_EFORMAT,
 * FM_EDTYPE, FM_ESHAPE; `e` names the file. Caller owns the result. */
fm_safetensors_t *fm_safetensors_open(const char *path, int *err, fm_errmsg_t *e);
void fm_safetensors_close(fm_safetensors_t **p);

int fm_safetensors_count(const fm_safetensors_t *f);
/* i-th tensor in header order (borrowed). */
const fm_tensor_t *fm_safetensors_at(const fm_safetensors_t *f, int i);
/* Tensor called `name`, or NULL (borrowed). */
const fm_tensor_t *fm_safetensors_get(const fm_safetensors_t *f, const char *name);
/* Value of a "__metadata__" key, or NULL (borrowed). */
const char *fm_safetensors_meta(const fm_safetensors_t *f, const char *key);

/* Write `n` tensors (and optional metadata pairs meta[0..2*nmeta)) to `path`, atomically
 * (temp file + rename). The header is compact JSON: "__metadata__" first, then the tensors
 * in the order given, data back to back, padded with spaces to a multiple of 8 bytes.
 * Errors: -errno, FM_EARG (bad names, dtypes, shapes or sizes, data past 2^63-1 bytes). */
int fm_safetensors_write(const char *path, const fm_tensor_t *tensors, int n,
                         const char *const *meta, int nmeta, fm_errmsg_t *e);

/* Save a model's parameters under their PyTorch names as F32 (metadata: "fedmq_model"). */
int fm_safetensors_save_model(const fm_model_t *m, const char *path, fm_errmsg_t *e);

/* Load a model file into `m`. Every view must be present as F32 with the exact shape;
 * unknown names, missing names, a wrong dtype or shape are errors (FM_ENAME, FM_EDTYPE,
 * FM_ESHAPE), as are non-finite values (FM_ENONFINITE). On error `m` is unchanged. */
int fm_safetensors_load_model(fm_model_t *m, const char *path, fm_errmsg_t *e);

/* Load a model spec: the file's tensors, in file order, become the views of a spec model
 * (fm_model_new_spec, named by its fingerprint) whose parameters are the file's values.
 * Refused, with one line naming the file and the tensor: 0 or more than FM_SPEC_MAX_VIEWS
 * tensors (FM_EARG), a name outside the wire's name class (FM_ENAME), a dtype other than F32
 * (FM_EDTYPE), more than FM_MAX_DIMS dims, a zero-size tensor or more than
 * FM_SPEC_MAX_PARAMS floats in all (FM_ESHAPE), a non-finite value (FM_ENONFINITE); and
 * what fm_safetensors_open refuses. Returns NULL with *err set on error.
 * Caller owns the result: fm_model_destroy(). */
fm_model_t *fm_safetensors_load_spec(const char *path, int *err, fm_errmsg_t *e);

#endif
