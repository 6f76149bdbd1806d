#include "fm_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fm_parse_int(const char *what, const char *text, long lo, long hi, long *out, fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || !*text || *end || errno == ERANGE)
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not an integer", what, text ? text : "");
    if (v < lo || v > hi)
        return fm_errmsg_set(e, FM_EARG, "%s: %ld is out of range [%ld, %ld]", what, v, lo, hi);
    *out = v;
    return 0;
}

int fm_parse_u64(const char *what, const char *text, uint64_t *out, fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    /* strtoull skips white space and then accepts a '-' (" -1" is 2^64 - 1): no '-' at all */
    if (!text || !*text || strchr(text, '-'))
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a non-negative integer", what,
                             text ? text : "");
    unsigned long long v = strtoull(text, &end, 10);
    if (*end || errno == ERANGE)
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a non-negative integer", what, text);
    *out = (uint64_t)v;
    return 0;
}

int fm_parse_float(const char *what, const char *text, double lo, double hi, double *out,
                   fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : 0;
    if (!text || !*text || *end || errno == ERANGE || !isfinite(v))
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a finite number", what,
                             text ? text : "");
    if (v < lo || v > hi)
        return fm_errmsg_set(e, FM_EARG, "%s: %g is out of range [%g, %g]", what, v, lo, hi);
    *out = v;
    return 0;
}

int fm_parse_range(const char *what, const char *text, long lo, long hi, long *first,
                   long *last, fm_errmsg_t *e)
{
    char *end = NULL;
    long a = 0, b = 0;
    errno = 0;
    if (text && isdigit((unsigned char)*text)) {
        a = b = strtol(text, &end, 10);
        if (*end == '-' && isdigit((unsigned char)end[1]))
            b = strtol(end + 1, &end, 10);
    }
    if (!end || *end || errno == ERANGE || a > b || a < lo || b > hi)
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a range A-B or A with %ld <= A <= B "
                             "<= %ld", what, text ? text : "", lo, hi);
    *first = a;
    *last = b;
    return 0;
}
