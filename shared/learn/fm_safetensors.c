/* fm_safetensors: reader and writer of the safetensors format (see fm_safetensors.h).
 *
 * The reader loads the whole file into one buffer, parses the JSON header with a small
 * strict parser for exactly the subset the format uses (objects, arrays, strings,
 * non-negative integers), then validates every entry. Tensor data pointers point into
 * the buffer and are not necessarily aligned: callers memcpy. */
#include "fm_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_safetensors assumes a little-endian host (tensor bytes are used as stored)"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");

#define S_MAX_HEADER ((uint64_t)100000000) /* the reference implementation's limit */
#define S_NAME_SHOWN 64                    /* bytes of a name quoted in a message */

/* ---- dtypes ----------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    size_t size;
} s_dtype_t;

/* F16/BF16 are accepted in files (so they open) but nothing in fedmq computes with them. */
static const s_dtype_t s_dtypes[] = {
    {"F32", 4}, {"F64", 8}, {"I64", 8}, {"I32", 4}, {"U8", 1}, {"F16", 2}, {"BF16", 2},
};

static const s_dtype_t *s_dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof s_dtypes / sizeof s_dtypes[0]; i++)
        if (name && strcmp(name, s_dtypes[i].name) == 0)
            return &s_dtypes[i];
    return NULL;
}

/* ---- the open file ---------------------------------------------------------------------- */

struct fm_safetensors {
    unsigned char *buf;          /* the whole file */
    size_t size;                 /* bytes in buf */
    char *arena;                 /* decoded header strings (names, keys, values) */
    fm_tensor_t *tensors;        /* header order */
    const fm_tensor_t **sorted;  /* by name, for fm_safetensors_get */
    int n;
    const char **meta;           /* key0, value0, key1, value1, ... */
    int nmeta;
};

/* One raw header entry before validation; ndim/noff count what the file has, which may
 * exceed the stored capacity (that is reported after the whole header parsed). */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
    int noff;
    int64_t off[2];
} s_entry_t;

/* JSON parser state over the header text. */
typedef struct {
    const char *path;
    const char *text;
    size_t len;
    size_t pos;
    char *arena;                 /* len + 1 bytes: decoded strings never outgrow their text */
    size_t arena_used;
    fm_errmsg_t *e;
} s_json_t;

/* Copy at most S_NAME_SHOWN bytes of `s` into `dst` with control characters replaced by
 * '?', so that messages stay on one line. */
static const char *s_printable(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s), k = 0;
    bool cut = n > S_NAME_SHOWN;
    if (cut) {
        n = S_NAME_SHOWN;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) /* not inside a UTF-8 char */
            n--;
    }
    for (size_t i = 0; i < n && k + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[k++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    if (cut && k + 4 < cap) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
    return dst;
}

/* "[a,b,c]" for a shape (at most FM_MAX_DIMS dims). */
static const char *s_fmt_shape(char *dst, size_t cap, int ndim, const int64_t *shape)
{
    size_t k = 0;
    k += (size_t)snprintf(dst, cap, "[");
    for (int i = 0; i < ndim && i < FM_MAX_DIMS && k < cap; i++)
        k += (size_t)snprintf(dst + k, cap - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < cap)
        snprintf(dst + k, cap - k, "]");
    return dst;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). */
static size_t s_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* 1 if the NUL-terminated `s` is valid UTF-8. */
static int s_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n > 0) {
        size_t k = s_utf8_len(p, n);
        if (k == 0)
            return 0;
        p += k;
        n -= k;
    }
    return 1;
}

/* Record a JSON syntax error at the current position; returns FM_EFORMAT. */
static int s_fail(s_json_t *js, const char *what)
{
    return fm_errmsg_set(js->e, FM_EFORMAT, "%s: malformed header JSON at header byte %zu: %s",
                         js->path, js->pos, what);
}

static void s_ws(s_json_t *js)
{
    while (js->pos < js->len && (js->text[js->pos] == ' ' || js->text[js->pos] == '\t' ||
                                 js->text[js->pos] == '\n' || js->text[js->pos] == '\r'))
        js->pos++;
}

static int s_peek(const s_json_t *js)
{
    return js->pos < js->len ? (unsigned char)js->text[js->pos] : -1;
}

/* Skip whitespace, then consume `c` or fail. */
static int s_expect(s_json_t *js, char c)
{
    s_ws(js);
    if (s_peek(js) != (unsigned char)c) {
        char what[48];
        snprintf(what, sizeof what, "expected '%c'", c);
        return s_fail(js, what);
    }
    js->pos++;
    return 0;
}

/* Parse a JSON string into the arena. Escapes: \" \\ \/ \b \f \n \r \t and \uXXXX for
 * ASCII other than NUL; raw bytes must be valid UTF-8 and not control characters. */
static int s_string(s_json_t *js, const char **out)
{
    s_ws(js);
    if (s_peek(js) != '"')
        return s_fail(js, "expected a string");
    js->pos++;
    /* Each decoded string plus its NUL is shorter than its quoted text, so the arena of
     * len + 1 bytes cannot overflow. */
    char *dst = js->arena + js->arena_used;
    size_t k = 0;
    for (;;) {
        if (js->pos >= js->len)
            return s_fail(js, "unterminated string");
        unsigned char c = (unsigned char)js->text[js->pos];
        if (c == '"') {
            js->pos++;
            break;
        }
        if (c < 0x20)
            return s_fail(js, "control character in string");
        if (c >= 0x80) {
            size_t ulen = s_utf8_len((const unsigned char *)js->text + js->pos, js->len - js->pos);
            if (ulen == 0)
                return s_fail(js, "invalid UTF-8 in string");
            memcpy(dst + k, js->text + js->pos, ulen);
            k += ulen;
            js->pos += ulen;
            continue;
        }
        if (c != '\\') {
            dst[k++] = (char)c;
            js->pos++;
            continue;
        }
        if (++js->pos >= js->len)
            return s_fail(js, "unterminated string");
        switch (js->text[js->pos]) {
        case '"': dst[k++] = '"'; break;
        case '\\': dst[k++] = '\\'; break;
        case '/': dst[k++] = '/'; break;
        case 'b': dst[k++] = '\b'; break;
        case 'f': dst[k++] = '\f'; break;
        case 'n': dst[k++] = '\n'; break;
        case 'r': dst[k++] = '\r'; break;
        case 't': dst[k++] = '\t'; break;
        case 'u': {
            unsigned v = 0;
            for (int i = 1; i <= 4; i++) {
                size_t at = js->pos + (size_t)i;
                int h = at < js->len ? (unsigned char)js->text[at] : -1;
                int d = h >= '0' && h <= '9' ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0)
                    return s_fail(js, "bad \\u escape (need 4 hex digits)");
                v = v * 16 + (unsigned)d;
            }
            if (v == 0)
                return s_fail(js, "\\u0000 in string is not supported");
            if (v >= 0x80)
                return s_fail(js, "non-ASCII \\u escape is not supported (write the UTF-8 bytes)");
            dst[k++] = (char)v;
            js->pos += 4;
            break;
        }
        default: return s_fail(js, "bad escape in string");
        }
        js->pos++;
    }
    dst[k] = '\0';
    js->arena_used += k + 1;
    *out = dst;
    return 0;
}

/* Parse a non-negative integer that fits in int64 (no sign, fraction, exponent or
 * leading zeros). */
static int s_uint(s_json_t *js, int64_t *out)
{
    s_ws(js);
    int c = s_peek(js);
    if (c == '-')
        return s_fail(js, "negative number");
    if (c < '0' || c > '9')
        return s_fail(js, "expected a non-negative integer");
    int64_t v = 0;
    size_t start = js->pos;
    while ((c = s_peek(js)) >= '0' && c <= '9') {
        if (v > (INT64_MAX - (c - '0')) / 10)
            return s_fail(js, "integer does not fit in int64");
        v = v * 10 + (c - '0');
        js->pos++;
    }
    if (js->text[start] == '0' && js->pos - start > 1) {
        js->pos = start;
        return s_fail(js, "integer with a leading zero");
    }
    if (c == '.' || c == 'e' || c == 'E')
        return s_fail(js, "expected an integer, found a fraction or exponent");
    *out = v;
    return 0;
}

/* Parse [int, ...]; stores at most `cap` values but counts all in *count. */
static int s_uint_array(s_json_t *js, int64_t *vals, int cap, int *count)
{
    int rc, n = 0;
    if ((rc = s_expect(js, '[')) != 0)
        return rc;
    s_ws(js);
    if (s_peek(js) == ']') {
        js->pos++;
        *count = 0;
        return 0;
    }
    for (;;) {
        int64_t v = 0;
        if ((rc = s_uint(js, &v)) != 0)
            return rc;
        if (n < cap)
            vals[n] = v;
        if (n == INT_MAX)
            return s_fail(js, "array too long");
        n++;
        s_ws(js);
        int c = s_peek(js);
        js->pos++;
        if (c == ']')
            break;
        if (c != ',') {
            js->pos--;
            return s_fail(js, "expected ',' or ']' in array");
        }
    }
    *count = n;
    return 0;
}

/* After a member: consume ',' (returns 1: more members) or '}' (returns 0), else fail. */
static int s_next_member(s_json_t *js)
{
    s_ws(js);
    int c = s_peek(js);
    if (c == ',' || c == '}') {
        js->pos++;
        return c == ',';
    }
    return s_fail(js, "expected ',' or '}' in object");
}

/* Parse {"dtype": str, "shape": [..], "data_offsets": [b, e]} (each exactly once). */
static int s_entry(s_json_t *js, s_entry_t *ent)
{
    char nm[S_NAME_SHOWN + 8], what[160];
    bool has_dtype = false, has_shape = false, has_off = false;
    int rc;
    if ((rc = s_expect(js, '{')) != 0)
        return rc;
    s_ws(js);
    if (s_peek(js) == '}')
        js->pos++;
    else
        for (;;) {
            const char *key;
            if ((rc = s_string(js, &key)) != 0 || (rc = s_expect(js, ':')) != 0)
                return rc;
            bool dup;
            if (strcmp(key, "dtype") == 0) {
                dup = has_dtype;
                has_dtype = true;
                rc = dup ? 0 : s_string(js, &ent->dtype);
            } else if (strcmp(key, "shape") == 0) {
                dup = has_shape;
                has_shape = true;
                rc = dup ? 0 : s_uint_array(js, ent->shape, FM_MAX_DIMS, &ent->ndim);
            } else if (strcmp(key, "data_offsets") == 0) {
                dup = has_off;
                has_off = true;
                rc = dup ? 0 : s_uint_array(js, ent->off, 2, &ent->noff);
            } else {
                char k2[S_NAME_SHOWN + 8];
                snprintf(what, sizeof what, "unknown field '%s' in tensor '%s'",
                         s_printable(k2, sizeof k2, key), s_printable(nm, sizeof nm, ent->name));
                return s_fail(js, what);
            }
            if (dup) {
                snprintf(what, sizeof what, "duplicate field '%s' in tensor '%s'", key,
                         s_printable(nm, sizeof nm, ent->name));
                return s_fail(js, what);
            }
            if (rc != 0)
                return rc;
            if ((rc = s_next_member(js)) < 0)
                return rc;
            if (rc == 0)
                break;
        }
    const char *missing = !has_dtype   ? "dtype"
                          : !has_shape ? "shape"
                          : !has_off   ? "data_offsets"
                                       : NULL;
    if (missing) {
        snprintf(what, sizeof what, "tensor '%s' has no \"%s\"",
                 s_printable(nm, sizeof nm, ent->name), missing);
        return s_fail(js, what);
    }
    if (ent->noff != 2) {
        snprintf(what, sizeof what, "tensor '%s': data_offsets must have 2 entries, not %d",
                 s_printable(nm, sizeof nm, ent->name), ent->noff);
        return s_fail(js, what);
    }
    return 0;
}

/* Grow *arr (of `size`-byte elements) so that it holds at least need elements. */
static int s_grow(void **arr, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return 0;
    int ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > INT_MAX / 2)
            return -ENOMEM;
        ncap *= 2;
    }
    void *p = realloc(*arr, (size_t)ncap * size);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Parse the "__metadata__" object of string values into f->meta. */
static int s_metadata(s_json_t *js, fm_safetensors_t *f)
{
    int rc, cap = 0;
    if ((rc = s_expect(js, '{')) != 0)
        return rc;
    s_ws(js);
    if (s_peek(js) == '}') {
        js->pos++;
        return 0;
    }
    for (;;) {
        const char *key, *val;
        if ((rc = s_string(js, &key)) != 0 || (rc = s_expect(js, ':')) != 0)
            return rc;
        s_ws(js);
        if (s_peek(js) != '"')
            return s_fail(js, "__metadata__ values must be strings");
        if ((rc = s_string(js, &val)) != 0)
            return rc;
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta[2 * i], key) == 0) {
                char k2[S_NAME_SHOWN + 8], what[128];
                snprintf(what, sizeof what, "duplicate __metadata__ key '%s'",
                         s_printable(k2, sizeof k2, key));
                return s_fail(js, what);
            }
        if (s_grow((void **)&f->meta, &cap, 2 * f->nmeta + 2, sizeof *f->meta) != 0)
            return fm_errmsg_set(js->e, -ENOMEM, "%s: out of memory", js->path);
        f->meta[2 * f->nmeta] = key;
        f->meta[2 * f->nmeta + 1] = val;
        f->nmeta++;
        if ((rc = s_next_member(js)) < 0)
            return rc;
        if (rc == 0)
            return 0;
    }
}

/* Parse the whole header: {"name": entry, ..., "__metadata__": {...}} then only
 * whitespace (the format pads with spaces). Entries go to *ents (caller frees). */
static int s_header(s_json_t *js, fm_safetensors_t *f, s_entry_t **ents, int *nents)
{
    int rc, cap = 0;
    bool has_meta = false;
    if ((rc = s_expect(js, '{')) != 0)
        return rc;
    s_ws(js);
    if (s_peek(js) == '}')
        js->pos++;
    else
        for (;;) {
            const char *key;
            if ((rc = s_string(js, &key)) != 0 || (rc = s_expect(js, ':')) != 0)
                return rc;
            if (strcmp(key, "__metadata__") == 0) {
                if (has_meta)
                    return s_fail(js, "duplicate __metadata__");
                has_meta = true;
                if ((rc = s_metadata(js, f)) != 0)
                    return rc;
            } else {
                if (s_grow((void **)ents, &cap, *nents + 1, sizeof **ents) != 0)
                    return fm_errmsg_set(js->e, -ENOMEM, "%s: out of memory", js->path);
                s_entry_t *ent = &(*ents)[*nents];
                memset(ent, 0, sizeof *ent);
                ent->name = key;
                (*nents)++;
                if ((rc = s_entry(js, ent)) != 0)
                    return rc;
            }
            if ((rc = s_next_member(js)) < 0)
                return rc;
            if (rc == 0)
                break;
        }
    s_ws(js);
    if (js->pos != js->len)
        return s_fail(js, "trailing characters after the header object");
    return 0;
}

/* qsort/bsearch order of tensor pointers by name. */
static int s_cmp_name(const void *a, const void *b)
{
    const fm_tensor_t *ta = *(const fm_tensor_t *const *)a, *tb = *(const fm_tensor_t *const *)b;
    return strcmp(ta->name, tb->name);
}

/* Read a regular file into a malloc'd buffer. */
static int s_read_file(const char *path, unsigned char **buf, size_t *size, fm_errmsg_t *e)
{
    int rc = 0;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        fm_errmsg_set(e, rc, "%s: cannot open: %s", path, strerror(-rc));
        goto cleanup;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        fm_errmsg_set(e, rc, "%s: cannot stat: %s", path, strerror(-rc));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        fm_errmsg_set(e, rc, "%s: not a regular file", path);
        goto cleanup;
    }
    if ((uint64_t)st.st_size >= (uint64_t)SIZE_MAX) {
        rc = fm_errmsg_set(e, -EFBIG, "%s: file too large", path);
        goto cleanup;
    }
    size_t want = (size_t)st.st_size, got = 0;
    *buf = malloc(want ? want : 1);
    if (!*buf) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory reading %zu bytes", path, want);
        goto cleanup;
    }
    while (got < want) {
        ssize_t r = read(fd, *buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            fm_errmsg_set(e, rc, "%s: read failed: %s", path, strerror(-rc));
            goto cleanup;
        }
        if (r == 0)
            break; /* the file shrank meanwhile: use what is there */
        got += (size_t)r;
    }
    *size = got;
cleanup:
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

/* Check one parsed entry (dtype, rank, shape vs data_offsets, bounds) and fill `t`. */
static int s_validate(const char *path, const s_entry_t *ent, const unsigned char *data,
                      uint64_t data_size, fm_tensor_t *t, fm_errmsg_t *e)
{
    char nm[S_NAME_SHOWN + 8], dt[S_NAME_SHOWN + 8], sh[128];
    const s_dtype_t *dtype = s_dtype_find(ent->dtype);
    if (!dtype)
        return fm_errmsg_set(e, FM_EDTYPE, "%s: tensor '%s' has unknown dtype '%s'", path,
                             s_printable(nm, sizeof nm, ent->name),
                             s_printable(dt, sizeof dt, ent->dtype));
    if (ent->ndim > FM_MAX_DIMS)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: tensor '%s' has %d dimensions, at most %d supported", path,
                             s_printable(nm, sizeof nm, ent->name), ent->ndim, FM_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ent->ndim; i++) {
        if (ent->shape[i] != 0 && numel > INT64_MAX / ent->shape[i])
            return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' shape %s overflows", path,
                                 s_printable(nm, sizeof nm, ent->name),
                                 s_fmt_shape(sh, sizeof sh, ent->ndim, ent->shape));
        numel *= ent->shape[i];
    }
    if (numel > INT64_MAX / (int64_t)dtype->size)
        return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' shape %s overflows", path,
                             s_printable(nm, sizeof nm, ent->name),
                             s_fmt_shape(sh, sizeof sh, ent->ndim, ent->shape));
    int64_t nbytes = numel * (int64_t)dtype->size;
    if (ent->off[1] < ent->off[0] || ent->off[1] - ent->off[0] != nbytes)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: tensor '%s' data_offsets [%lld,%lld] do not match "
                             "%s x %s = %lld bytes",
                             path, s_printable(nm, sizeof nm, ent->name), (long long)ent->off[0],
                             (long long)ent->off[1], dtype->name,
                             s_fmt_shape(sh, sizeof sh, ent->ndim, ent->shape), (long long)nbytes);
    if ((uint64_t)ent->off[1] > data_size)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s: truncated: tensor '%s' data_offsets [%lld,%lld] go past "
                             "the end of the %llu-byte data section",
                             path, s_printable(nm, sizeof nm, ent->name), (long long)ent->off[0],
                             (long long)ent->off[1], (unsigned long long)data_size);
    t->name = ent->name;
    t->dtype = dtype->name;
    t->ndim = ent->ndim;
    memcpy(t->shape, ent->shape, sizeof t->shape);
    t->data = data + ent->off[0];
    t->nbytes = (size_t)nbytes;
    return 0;
}

/* Read the file, check the header length, parse the JSON, reject duplicates, then check
 * every entry in header order. */
fm_safetensors_t *fm_safetensors_open(const char *path, int *err, fm_errmsg_t *e)
{
    int rc = 0, nents = 0;
    s_entry_t *ents = NULL;
    fm_safetensors_t *f = NULL;
    if (!path) {
        rc = fm_errmsg_set(e, FM_EARG, "fm_safetensors_open: no path");
        goto cleanup;
    }
    if (!(f = calloc(1, sizeof *f))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    if ((rc = s_read_file(path, &f->buf, &f->size, e)) != 0)
        goto cleanup;
    if (f->size < 8) {
        rc = fm_errmsg_set(e, FM_ETRUNC, "%s: truncated: %zu bytes, a safetensors file has at "
                           "least the 8-byte header length", path, f->size);
        goto cleanup;
    }
    uint64_t hlen;
    memcpy(&hlen, f->buf, 8);
    if (hlen > S_MAX_HEADER) {
        rc = fm_errmsg_set(e, FM_EFORMAT, "%s: header length %llu exceeds the limit of %llu bytes "
                           "(not a safetensors file?)", path, (unsigned long long)hlen,
                           (unsigned long long)S_MAX_HEADER);
        goto cleanup;
    }
    if (hlen > f->size - 8) {
        rc = fm_errmsg_set(e, FM_ETRUNC, "%s: truncated: header length %llu but only %zu bytes "
                           "follow it", path, (unsigned long long)hlen, f->size - 8);
        goto cleanup;
    }
    if (!(f->arena = malloc((size_t)hlen + 1))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    s_json_t js = {.path = path, .text = (const char *)f->buf + 8, .len = (size_t)hlen,
                   .arena = f->arena, .e = e};
    if ((rc = s_header(&js, f, &ents, &nents)) != 0)
        goto cleanup;

    f->n = nents;
    f->tensors = calloc((size_t)nents + 1, sizeof *f->tensors);
    f->sorted = calloc((size_t)nents + 1, sizeof *f->sorted);
    if (!f->tensors || !f->sorted) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    /* Duplicate names are a header (JSON) defect: report them before any entry's content. */
    for (int i = 0; i < nents; i++) {
        f->tensors[i].name = ents[i].name;
        f->sorted[i] = &f->tensors[i];
    }
    qsort(f->sorted, (size_t)nents, sizeof *f->sorted, s_cmp_name);
    for (int i = 1; i < nents; i++)
        if (strcmp(f->sorted[i - 1]->name, f->sorted[i]->name) == 0) {
            char nm[S_NAME_SHOWN + 8];
            rc = fm_errmsg_set(e, FM_EFORMAT, "%s: duplicate tensor name '%s' in header", path,
                               s_printable(nm, sizeof nm, f->sorted[i]->name));
            goto cleanup;
        }
    const unsigned char *data = f->buf + 8 + hlen;
    uint64_t data_size = f->size - 8 - hlen;
    for (int i = 0; i < nents; i++)
        if ((rc = s_validate(path, &ents[i], data, data_size, &f->tensors[i], e)) != 0)
            goto cleanup;
cleanup:
    free(ents);
    if (rc != 0)
        fm_safetensors_close(&f);
    if (err)
        *err = rc;
    return f;
}

void fm_safetensors_close(fm_safetensors_t **p)
{
    if (!p || !*p)
        return;
    fm_safetensors_t *f = *p;
    free(f->buf);
    free(f->arena);
    free(f->tensors);
    free(f->sorted);
    free(f->meta);
    free(f);
    *p = NULL;
}

int fm_safetensors_count(const fm_safetensors_t *f) { return f ? f->n : 0; }

const fm_tensor_t *fm_safetensors_at(const fm_safetensors_t *f, int i)
{
    return f && i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const fm_tensor_t *fm_safetensors_get(const fm_safetensors_t *f, const char *name)
{
    if (!f || !name || f->n == 0)
        return NULL;
    fm_tensor_t key = {.name = name};
    const fm_tensor_t *kp = &key;
    const fm_tensor_t *const *hit =
        bsearch(&kp, f->sorted, (size_t)f->n, sizeof *f->sorted, s_cmp_name);
    return hit ? *hit : NULL;
}

const char *fm_safetensors_meta(const fm_safetensors_t *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* A growable byte buffer; `oom` latches an allocation failure. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} s_sbuf_t;

static void s_put(s_sbuf_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t ncap = sb->cap ? sb->cap : 1024;
        while (ncap < sb->len + n + 1)
            ncap *= 2;
        char *np = realloc(sb->p, ncap);
        if (!np) {
            sb->oom = true;
            return;
        }
        sb->p = np;
        sb->cap = ncap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void s_puts(s_sbuf_t *sb, const char *s) { s_put(sb, s, strlen(s)); }

static void s_put_int(s_sbuf_t *sb, uint64_t v)
{
    char tmp[32];
    s_put(sb, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

/* Append `s` as a JSON string (quotes, escapes; UTF-8 bytes pass through). */
static void s_put_json_str(s_sbuf_t *sb, const char *s)
{
    s_put(sb, "\"", 1);
    for (const char *c = s; *c; c++) {
        unsigned char u = (unsigned char)*c;
        char tmp[8];
        switch (u) {
        case '"': s_put(sb, "\\\"", 2); break;
        case '\\': s_put(sb, "\\\\", 2); break;
        case '\b': s_put(sb, "\\b", 2); break;
        case '\f': s_put(sb, "\\f", 2); break;
        case '\n': s_put(sb, "\\n", 2); break;
        case '\r': s_put(sb, "\\r", 2); break;
        case '\t': s_put(sb, "\\t", 2); break;
        default:
            if (u < 0x20)
                s_put(sb, tmp, (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", u));
            else
                s_put(sb, c, 1);
        }
    }
    s_put(sb, "\"", 1);
}

/* Check the arguments of fm_safetensors_write; FM_EARG with a message if bad. */
static int s_check_write_args(const char *path, const fm_tensor_t *t, int n,
                              const char *const *meta, int nmeta, fm_errmsg_t *e)
{
    char nm[S_NAME_SHOWN + 8];
    if (n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && !meta))
        return fm_errmsg_set(e, FM_EARG, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !s_utf8_valid(t[i].name) || strcmp(t[i].name, "__metadata__") == 0)
            return fm_errmsg_set(e, FM_EARG,
                                 "%s: tensor %d: missing, invalid UTF-8 or reserved name", path, i);
        s_printable(nm, sizeof nm, t[i].name);
        const s_dtype_t *dt = s_dtype_find(t[i].dtype);
        if (!dt)
            return fm_errmsg_set(e, FM_EARG, "%s: tensor '%s': unknown dtype", path, nm);
        if (t[i].ndim < 0 || t[i].ndim > FM_MAX_DIMS)
            return fm_errmsg_set(e, FM_EARG, "%s: tensor '%s': ndim %d not in 0..%d", path, nm,
                                 t[i].ndim, FM_MAX_DIMS);
        uint64_t bytes = dt->size;
        for (int d = 0; d < t[i].ndim; d++) {
            uint64_t dim = (uint64_t)t[i].shape[d];
            if (t[i].shape[d] < 0 || (dim > 0 && bytes > (uint64_t)INT64_MAX / dim))
                return fm_errmsg_set(e, FM_EARG, "%s: tensor '%s': bad shape", path, nm);
            bytes *= dim;
        }
        if (bytes != (uint64_t)t[i].nbytes || (t[i].nbytes > 0 && !t[i].data))
            return fm_errmsg_set(e, FM_EARG,
                                 "%s: tensor '%s': %zu bytes of data, %s x shape needs %llu",
                                 path, nm, t[i].nbytes, dt->name, (unsigned long long)bytes);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return fm_errmsg_set(e, FM_EARG, "%s: duplicate tensor name '%s'", path, nm);
    }
    for (int i = 0; i < 2 * nmeta; i++)
        if (!meta[i] || !s_utf8_valid(meta[i]))
            return fm_errmsg_set(e, FM_EARG, "%s: metadata entry %d is missing or invalid UTF-8",
                                 path, i);
    for (int i = 0; i < nmeta; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(meta[2 * i], meta[2 * j]) == 0)
                return fm_errmsg_set(e, FM_EARG, "%s: duplicate metadata key '%s'", path,
                                     s_printable(nm, sizeof nm, meta[2 * i]));
    return 0;
}

/* Write all `n` bytes, retrying on EINTR and short writes; -errno on failure. */
static int s_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding `path` so the rename is durable (best effort). */
static void s_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Check the arguments, build the space-padded header, write "<path>.tmp.<pid>", fsync,
 * rename into place; the temp file is removed on any failure. */
int fm_safetensors_write(const char *path, const fm_tensor_t *tensors, int n,
                         const char *const *meta, int nmeta, fm_errmsg_t *e)
{
    int rc, fd = -1;
    char *tmp = NULL;
    s_sbuf_t sb = {0};
    if (!path)
        return fm_errmsg_set(e, FM_EARG, "fm_safetensors_write: no path");
    if ((rc = s_check_write_args(path, tensors, n, meta, nmeta, e)) != 0)
        return rc;

    /* header: metadata first (as the reference implementation), then tensors in order */
    s_puts(&sb, "{");
    if (nmeta > 0) {
        s_puts(&sb, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                s_puts(&sb, ",");
            s_put_json_str(&sb, meta[2 * i]);
            s_puts(&sb, ":");
            s_put_json_str(&sb, meta[2 * i + 1]);
        }
        s_puts(&sb, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || nmeta > 0)
            s_puts(&sb, ",");
        s_put_json_str(&sb, tensors[i].name);
        s_puts(&sb, ":{\"dtype\":");
        s_put_json_str(&sb, s_dtype_find(tensors[i].dtype)->name);
        s_puts(&sb, ",\"shape\":[");
        for (int d = 0; d < tensors[i].ndim; d++) {
            if (d)
                s_puts(&sb, ",");
            s_put_int(&sb, (uint64_t)tensors[i].shape[d]);
        }
        s_puts(&sb, "],\"data_offsets\":[");
        s_put_int(&sb, off);
        s_puts(&sb, ",");
        off += tensors[i].nbytes;
        s_put_int(&sb, off);
        s_puts(&sb, "]}");
    }
    s_puts(&sb, "}");
    while (sb.len % 8 != 0) /* data section starts at a multiple of 8 */
        s_puts(&sb, " ");
    if (sb.oom) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory building the header", path);
        goto cleanup;
    }
    if (sb.len > S_MAX_HEADER) {
        rc = fm_errmsg_set(e, FM_EARG, "%s: header of %zu bytes exceeds the format's limit", path,
                           sb.len);
        goto cleanup;
    }

    size_t tmplen = strlen(path) + 32;
    if (!(tmp = malloc(tmplen))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        fm_errmsg_set(e, rc, "%s: cannot create %s: %s", path, tmp, strerror(-rc));
        free(tmp); /* nothing was created: nothing to remove */
        tmp = NULL;
        goto cleanup;
    }
    uint64_t hlen = sb.len;
    if ((rc = s_write_all(fd, &hlen, 8)) != 0 || (rc = s_write_all(fd, sb.p, sb.len)) != 0)
        goto io_error;
    for (int i = 0; i < n; i++)
        if ((rc = s_write_all(fd, tensors[i].data, tensors[i].nbytes)) != 0)
            goto io_error;
    if (fsync(fd) != 0) {
        rc = -errno;
        goto io_error;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = -errno;
        goto io_error;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        fm_errmsg_set(e, rc, "%s: cannot rename %s into place: %s", path, tmp, strerror(-rc));
        goto cleanup;
    }
    free(tmp);
    tmp = NULL;
    s_sync_dir(path);
    rc = 0;
    goto cleanup;
io_error:
    fm_errmsg_set(e, rc, "%s: write failed: %s", path, strerror(-rc));
cleanup:
    if (fd >= 0)
        close(fd);
    if (tmp) { /* still set only on failure after the temp file was created */
        unlink(tmp);
        free(tmp);
    }
    free(sb.p);
    return rc;
}

/* ---- models ----------------------------------------------------------------------------- */

/* One F32 tensor per view, pointing into the flat parameter buffer. */
int fm_safetensors_save_model(const fm_model_t *m, const char *path, fm_errmsg_t *e)
{
    fm_tensor_t t[FM_MAX_VIEWS];
    if (!m || !path)
        return fm_errmsg_set(e, FM_EARG, "fm_safetensors_save_model: no model or path");
    int n = fm_model_nviews(m);
    if (n < 0 || n > FM_MAX_VIEWS)
        return fm_errmsg_set(e, FM_EARG, "%s: model %s has %d views", path, fm_model_name(m), n);
    const float *params = fm_model_params_const(m);
    for (int i = 0; i < n; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        t[i] = (fm_tensor_t){.name = v->name, .dtype = "F32", .ndim = v->ndim,
                             .data = params + v->offset, .nbytes = v->numel * sizeof(float)};
        memcpy(t[i].shape, v->shape, sizeof t[i].shape);
    }
    const char *meta[] = {"fedmq_model", fm_model_name(m), "format", "pt"};
    return fm_safetensors_write(path, t, n, meta, 2, e);
}

/* Check that tensor `t` can fill view `v`: dtype F32, same shape, finite values. */
static int s_check_view(const char *path, const char *model, const fm_view_t *v,
                        const fm_tensor_t *t, fm_errmsg_t *e)
{
    char sh[128], want[128];
    if (strcmp(t->dtype, "F32") != 0)
        return fm_errmsg_set(e, FM_EDTYPE, "%s: tensor '%s' has dtype %s, expected F32", path,
                             v->name, t->dtype);
    bool same = t->ndim == v->ndim;
    for (int d = 0; same && d < v->ndim; d++)
        same = t->shape[d] == v->shape[d];
    if (!same)
        return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", path,
                             v->name, s_fmt_shape(sh, sizeof sh, t->ndim, t->shape),
                             s_fmt_shape(want, sizeof want, v->ndim, v->shape));
    if (t->nbytes != v->numel * sizeof(float)) /* cannot happen after the shape check */
        return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' has %zu bytes, expected %zu", path,
                             v->name, t->nbytes, v->numel * sizeof(float));
    const unsigned char *p = t->data;
    for (size_t k = 0; k < v->numel; k++) {
        float x;
        memcpy(&x, p + k * sizeof x, sizeof x); /* data may be unaligned */
        if (!isfinite(x))
            return fm_errmsg_set(e, FM_ENONFINITE, "%s: tensor '%s' of model %s has a non-finite "
                                 "value (%g) at index %zu", path, v->name, model, (double)x, k);
    }
    return 0;
}

/* Validate names (unknown, then missing), then dtype, shape and finiteness per view, and
 * only then copy view by view: the model is untouched on any error. */
int fm_safetensors_load_model(fm_model_t *m, const char *path, fm_errmsg_t *e)
{
    int rc = 0;
    char nm[S_NAME_SHOWN + 8];
    if (!m || !path)
        return fm_errmsg_set(e, FM_EARG, "fm_safetensors_load_model: no model or path");
    const char *model = fm_model_name(m);
    fm_safetensors_t *f = fm_safetensors_open(path, &rc, e);
    if (!f)
        return rc;
    /* validate everything first so that `m` is unchanged on any error */
    for (int i = 0; i < f->n; i++)
        if (!fm_model_find(m, f->tensors[i].name)) {
            rc = fm_errmsg_set(e, FM_ENAME, "%s: unknown tensor '%s' for model %s", path,
                               s_printable(nm, sizeof nm, f->tensors[i].name), model);
            goto cleanup;
        }
    int nv = fm_model_nviews(m);
    for (int i = 0; i < nv; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        if (!fm_safetensors_get(f, v->name)) {
            rc = fm_errmsg_set(e, FM_ENAME, "%s: missing tensor '%s' for model %s", path, v->name,
                               model);
            goto cleanup;
        }
    }
    for (int i = 0; i < nv; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        if ((rc = s_check_view(path, model, v, fm_safetensors_get(f, v->name), e)) != 0)
            goto cleanup;
    }
    float *params = fm_model_params(m);
    for (int i = 0; i < nv; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        const fm_tensor_t *t = fm_safetensors_get(f, v->name);
        memcpy(params + v->offset, t->data, t->nbytes);
    }
cleanup:
    fm_safetensors_close(&f);
    return rc;
}
