#include "fm_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The text as it goes into a one-line message: at most 48 bytes, control bytes as '?'. */
typedef struct {
    char s[52];
} s_shown_t;

static s_shown_t s_show(const char *text)
{
    s_shown_t out = {{0}};
    size_t n = 0;
    for (const char *c = text ? text : ""; *c && n < 48; c++)
        out.s[n++] = (unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c;
    if (text && strlen(text) > 48)
        memcpy(out.s + n, "...", 4);
    return out;
}

/* A number starts with a digit, or a sign and a digit (`sign` allows '-' too): no white
 * space, no hex, no words such as "inf" (strto* would take them). */
static int s_starts_number(const char *text, int minus)
{
    if (!text)
        return 0;
    if (*text == '+' || (minus && *text == '-'))
        text++;
    if (!isdigit((unsigned char)text[0]) && !(text[0] == '.' && isdigit((unsigned char)text[1])))
        return 0;
    return !(text[0] == '0' && (text[1] == 'x' || text[1] == 'X'));
}

int fm_parse_int(const char *what, const char *text, long lo, long hi, long *out, fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    long v = s_starts_number(text, 1) && strchr(text, '.') == NULL ? strtol(text, &end, 10) : 0;
    if (!end || *end || errno == ERANGE)
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not an integer", what, s_show(text).s);
    if (v < lo || v > hi)
        return fm_errmsg_set(e, FM_EARG, "%s: %ld is out of range [%ld, %ld]", what, v, lo, hi);
    *out = v;
    return 0;
}

int fm_parse_u64(const char *what, const char *text, uint64_t *out, fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    /* no '-' at all: strtoull would accept "-1" as 2^64 - 1 */
    unsigned long long v = s_starts_number(text, 0) && strchr(text, '.') == NULL
                               ? strtoull(text, &end, 10)
                               : 0;
    if (!end || *end || errno == ERANGE)
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a non-negative integer", what,
                             s_show(text).s);
    *out = (uint64_t)v;
    return 0;
}

int fm_parse_float(const char *what, const char *text, double lo, double hi, double *out,
                   fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    double v = s_starts_number(text, 1) ? strtod(text, &end) : 0;
    /* ERANGE on underflow (1e-310) is a number close to 0, not an error; overflow is */
    if (!end || *end || (errno == ERANGE && fabs(v) >= 1.0) || !isfinite(v))
        return fm_errmsg_set(e, FM_EARG, "%s: '%s' is not a finite number", what, s_show(text).s);
    if (v < lo || v > hi)
        return fm_errmsg_set(e, FM_EARG, "%s: %g is out of range [%g, %g]", what, v, lo, hi);
    *out = v;
    return 0;
}

int fm_parse_range(const char *what, const char *text, long lo, long hi, long *first, long *last,
                   fm_errmsg_t *e)
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
        return fm_errmsg_set(e, FM_EARG,
                             "%s: '%s' is not a range A-B or A with %ld <= A <= B "
                             "<= %ld",
                             what, s_show(text).s, lo, hi);
    *first = a;
    *last = b;
    return 0;
}
