#include "fm_err.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

const char *fm_strerror(int err)
{
    switch (err) {
    case FM_OK: return "success";
    case FM_EFORMAT: return "malformed input";
    case FM_EMAGIC: return "wrong magic number";
    case FM_ETRUNC: return "truncated input";
    case FM_ESHAPE: return "shape mismatch";
    case FM_EDTYPE: return "unsupported dtype";
    case FM_ENAME: return "unknown or missing tensor name";
    case FM_EMODEL: return "unknown model name";
    case FM_EARG: return "invalid argument";
    case FM_ENONFINITE: return "non-finite value";
    case FM_EBLAS: return "BLAS self-check failed";
    case FM_ERANGE: return "value out of range";
    case FM_EVERSION: return "unsupported version";
    case FM_ECRYPTO: return "authentication failed or invalid key";
    case FM_ESTATE: return "not possible in the current state";
    default: break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

int fm_errmsg_set(fm_errmsg_t *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void fm_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "fedmq: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

int fm_err_file_exit_code(int err)
{
    return err >= FM_EFIRST && err <= FM_ELAST ? FM_EXIT_INPUT : FM_EXIT_RUNTIME;
}
