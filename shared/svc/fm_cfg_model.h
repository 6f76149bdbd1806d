/* fm_cfg_model: the model of a config ([federation] model).
 *
 * The key holds a built-in model name (logreg, mlp, cnn) or "file:/ABS/PATH.safetensors", a
 * custom model spec (fm_safetensors_load_spec): any set of named float32 tensors, the file
 * holding their initial values. fm_cfg checks the syntax only; the file is read here, by
 * the daemons at start. Only the aggregator and the broker take a spec (they need a layout
 * and values, no forward pass); the C trainer, the evaluator and `fedmq run` refuse it with
 * fm_cfg_model_builtin_only. */
#ifndef FM_CFG_MODEL_H
#define FM_CFG_MODEL_H

#include "fm_cfg.h"
#include "fm_err.h"
#include "fm_model.h"

/* The path of the spec file of federation.model ("file:PATH" -> PATH, borrowed from `c`), or
 * NULL for a built-in model. */
const char *fm_cfg_model_spec_path(const fm_config_t *c);

/* The configured model: a built-in -> fm_model_new (parameters zeroed); a spec -> the file's
 * layout with its parameters set to the file's values. NULL with *err and a one-line `e` on
 * error (FM_EMODEL, the loader's codes, -errno, -ENOMEM). Caller owns the result. */
fm_model_t *fm_cfg_model_new(const fm_config_t *c, int *err, fm_errmsg_t *e);

/* For programs that run only the built-in models: 0 for a built-in; for a spec, FM_EMODEL with
 * `e` = "federation.model = file:P is a custom model spec (spec-..., N tensors, 159,010
 * parameters): <why>" (the file is loaded to name it; its own error if it does not load). */
int fm_cfg_model_builtin_only(const fm_config_t *c, const char *why, fm_errmsg_t *e);

/* "1,234,567" for n into buf[0..cap) (the refusal's parameter count); returns buf. */
const char *fm_cfg_model_grouped(size_t n, char *buf, size_t cap);

#endif
