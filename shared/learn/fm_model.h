/* fm_model: a model is one flat float32 parameter buffer with named views.
 *
 * Views are in PyTorch state_dict order with PyTorch names and shapes, so the flat buffer
 * is exactly the concatenation of the state_dict tensors. Gradients, momentum and (later)
 * aggregation buffers use the same layout: fm_model_nparams() floats.
 *
 * Models (selected by name):
 *   logreg  fc.weight [10,784], fc.bias [10]
 *   mlp     fc1 784->200, relu, fc2 200->200, relu, fc3 200->10
 *   cnn     the seed's FederatedNet: conv1 Conv2d(1,32,3,1), relu, conv2 Conv2d(32,64,3,1),
 *           relu, max_pool 2, dropout 0.25, flatten, fc1 Linear(9216,128), relu,
 *           dropout 0.5, fc2 Linear(128,10), log_softmax
 *   spec    a custom model spec: any set of named float32 tensors (fm_model_new_spec, e.g.
 *           from a safetensors file: fm_safetensors_load_spec). It has a layout and values
 *           only: no forward pass (fm_engine_new refuses it), fm_model_init leaves it as it
 *           is. Its name is its fingerprint (fm_model_spec_fingerprint).
 * Inputs are (B, 1, 28, 28) float32 images, labels uint8 in [0, 10). */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"

#define FM_MAX_DIMS 4
#define FM_MAX_VIEWS 8       /* views of a built-in model */
#define FM_SPEC_MAX_VIEWS 64 /* tensors of a spec model (= the wire's FM_WIRE_MAX_TENSORS) */
#define FM_SPEC_MAX_PARAMS ((size_t)1 << 28) /* floats of a spec model (1 GiB) */
#define FM_SPEC_NAME_MAX 255 /* bytes of a spec tensor name (the wire's FM_WIRE_STR_MAX) */
#define FM_SPEC_FP_LEN 15    /* "spec-" + 10 hex digits: fits a checkpoint's model name */
#define FM_IMAGE_H 28
#define FM_IMAGE_W 28
#define FM_NCLASSES 10

/* A named view into the flat parameter buffer. */
typedef struct {
    const char *name;           /* PyTorch name, e.g. "conv1.weight" (lives as the model) */
    int ndim;                   /* 1..FM_MAX_DIMS (spec: 0..FM_MAX_DIMS, 0 = a scalar) */
    int64_t shape[FM_MAX_DIMS]; /* PyTorch shape */
    size_t offset;              /* in floats from the start of the flat buffer */
    size_t numel;               /* product of shape */
} fm_view_t;

typedef enum { FM_ARCH_LOGREG, FM_ARCH_MLP, FM_ARCH_CNN, FM_ARCH_SPEC } fm_arch_t;

typedef struct fm_model fm_model_t;

/* One tensor of a model spec (fm_model_new_spec); `name` is borrowed. */
typedef struct {
    const char *name;
    int ndim; /* 0..FM_MAX_DIMS */
    int64_t shape[FM_MAX_DIMS];
} fm_spec_tensor_t;

/* The name of an architecture ("logreg", "mlp", "cnn", "spec"; static string), or NULL for a
 * value that is not an fm_arch_t. fm_model_new takes the names of the built-in ones. */
const char *fm_arch_name(fm_arch_t arch);

/* 1 if `name` is a built-in model ("logreg", "mlp", "cnn"), else 0. */
int fm_arch_builtin(const char *name);

/* A spec tensor name is 1..FM_SPEC_NAME_MAX bytes of printable ASCII 0x21-0x7e (the wire's
 * "name" class). Returns 0 if `name` is one, else nonzero. */
int fm_spec_name_check(const char *name);

/* The fingerprint of a spec, "spec-" + the first 10 lowercase hex digits of BLAKE2b-256 (no
 * key) over, for each tensor sorted by name (strcmp ascending), the line
 * name "\t" "F32" "\t" d0 "," d1 ... "\n" (decimal dims, empty for a scalar), into
 * out[FM_SPEC_FP_LEN + 1]. Returns 0, or FM_EARG (n out of 1..FM_SPEC_MAX_VIEWS, a bad name
 * or rank), -ENOMEM. */
int fm_model_spec_fingerprint(const fm_spec_tensor_t *t, int n, char out[FM_SPEC_FP_LEN + 1]);

/* New spec model (arch FM_ARCH_SPEC) of `n` tensors in the order given, parameters zeroed,
 * named by its fingerprint; names are copied. Returns NULL and sets *err: FM_EARG (n out of
 * 1..FM_SPEC_MAX_VIEWS, a name that fails fm_spec_name_check or appears twice, a rank out of
 * 0..FM_MAX_DIMS), FM_ESHAPE (a dim < 1, more than FM_SPEC_MAX_PARAMS floats), -ENOMEM.
 * Caller owns the result: fm_model_destroy(). */
fm_model_t *fm_model_new_spec(const fm_spec_tensor_t *t, int n, int *err);

/* New model by name ("logreg", "mlp", "cnn") with parameters zeroed.
 * Returns NULL and sets *err (FM_EMODEL for an unknown name, -ENOMEM) on failure.
 * Caller owns the result: fm_model_destroy(). */
fm_model_t *fm_model_new(const char *name, int *err);

/* Free the model and set *p to NULL; idempotent. */
void fm_model_destroy(fm_model_t **p);

/* PyTorch default initialisation from a seeded RNG: every weight and bias
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform with a = sqrt(5) for weights).
 * A spec model is left unchanged (its values come with the spec). */
void fm_model_init(fm_model_t *m, uint64_t seed);

/* "logreg", "mlp", "cnn", or a spec's fingerprint "spec-..." (lives as the model). */
const char *fm_model_name(const fm_model_t *m);
fm_arch_t fm_model_arch(const fm_model_t *m);

/* The flat parameter buffer (borrowed; lives as long as the model). */
float *fm_model_params(fm_model_t *m);
const float *fm_model_params_const(const fm_model_t *m);
size_t fm_model_nparams(const fm_model_t *m);

/* Views, in state_dict order (borrowed; live as long as the model). */
int fm_model_nviews(const fm_model_t *m);
const fm_view_t *fm_model_view(const fm_model_t *m, int i);
/* The view called `name`, or NULL. */
const fm_view_t *fm_model_find(const fm_model_t *m, const char *name);

/* Forward FLOPs per sample (multiply-add = 2), for throughput reports; 0 for a spec. */
double fm_model_flops_forward(const fm_model_t *m);

/* 1 if every parameter is finite, else 0. */
int fm_model_all_finite(const fm_model_t *m);

#endif
