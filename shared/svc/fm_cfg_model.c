/* fm_cfg_model: the model of a config (see fm_cfg_model.h). */
#include "fm_cfg_model.h"

#include <stdio.h>
#include <string.h>

#include "fm_safetensors.h"

const char *fm_cfg_model_spec_path(const fm_config_t *c)
{
    return strncmp(c->federation.model, "file:", 5) == 0 ? c->federation.model + 5 : NULL;
}

fm_model_t *fm_cfg_model_new(const fm_config_t *c, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    const char *path = fm_cfg_model_spec_path(c);
    fm_model_t *m = path ? fm_safetensors_load_spec(path, &rc, e)
                         : fm_model_new(c->federation.model, &rc);
    if (!m && !path)
        fm_errmsg_set(e, rc, "federation.model = %s: %s", c->federation.model, fm_strerror(rc));
    if (!m && err)
        *err = rc;
    return m;
}

const char *fm_cfg_model_grouped(size_t n, char *buf, size_t cap)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%zu", n);
    size_t k = 0;
    for (int i = 0; i < len && k + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[k++] = ',';
        buf[k++] = digits[i];
    }
    if (cap)
        buf[k < cap ? k : cap - 1] = '\0';
    return buf;
}

int fm_cfg_model_builtin_only(const fm_config_t *c, const char *why, fm_errmsg_t *e)
{
    if (!fm_cfg_model_spec_path(c))
        return 0;
    int rc = 0;
    fm_model_t *m = fm_cfg_model_new(c, &rc, e);
    if (!m)
        return rc;
    char n[32];
    rc = fm_errmsg_set(e, FM_EMODEL,
                       "federation.model = %s is a custom model spec (%s, %d tensors, %s "
                       "parameters): %s",
                       c->federation.model, fm_model_name(m), fm_model_nviews(m),
                       fm_cfg_model_grouped(fm_model_nparams(m), n, sizeof n), why);
    fm_model_destroy(&m);
    return rc;
}
