/* fm_safetensors: reader and writer of the safetensors format (see fm_safetensors.h).
 *
 * The reader loads the whole file into one buffer, checks the header length against the
 * format's limit, parses the JSON header with jansson (duplicate keys refused), then checks
 * the structure of every entry and validates it (dtype, shape, data_offsets vs dtype x
 * shape and the data section). Tensor data pointers point into the buffer and are not
 * necessarily aligned: callers memcpy. The writer builds the header with jansson. */
#include "fm_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_safetensors assumes a little-endian host (tensor bytes are used as stored)"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");
_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "jansson integers must be 64-bit");

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
    unsigned char *buf;         /* the whole file */
    size_t size;                /* bytes in buf */
    json_t *header;             /* the parsed header: owns names, dtypes, metadata */
    fm_tensor_t *tensors;       /* header order */
    const fm_tensor_t **sorted; /* by name, for fm_safetensors_get */
    int n;
    const char **meta; /* key0, value0, key1, value1, ... */
    int nmeta;
};

/* One header entry after its structure was checked, before validation; ndim counts what
 * the file has, which may exceed the stored capacity (s_validate reports that). Strings are
 * borrowed from the parsed header. */
typedef struct {
    const char *name;
    const char *dtype;
    size_t ndim;
    int64_t shape[FM_MAX_DIMS];
    int64_t off[2];
} s_entry_t;

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

/* 1 if the NUL-terminated `s` is valid UTF-8 (checked before jansson sees a string, so
 * that a failure to build the header can only mean out of memory). */
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

/* A non-negative JSON integer (json_int_t is 64-bit: jansson itself refuses numbers past
 * INT64_MAX). False for anything else, fractions and exponents included. */
static bool s_uint(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* An array of non-negative integers: stores at most `cap` values, counts all in *count.
 * False if `a` is not such an array. */
static bool s_uint_array(const json_t *a, int64_t *vals, size_t cap, size_t *count)
{
    if (!json_is_array(a))
        return false;
    for (size_t i = 0; i < json_array_size(a); i++) {
        int64_t v;
        if (!s_uint(json_array_get(a, i), &v))
            return false;
        if (i < cap)
            vals[i] = v;
    }
    *count = json_array_size(a);
    return true;
}

/* Check the structure of tensor `name`'s entry: an object with exactly "dtype" (a string),
 * "shape" (non-negative integers) and "data_offsets" (two of them); fill `ent`. Errors:
 * FM_EFORMAT. */
static int s_entry(const char *path, const char *name, json_t *obj, s_entry_t *ent,
                   fm_errmsg_t *e)
{
    char nm[S_NAME_SHOWN + 8];
    s_printable(nm, sizeof nm, name);
    if (!json_is_object(obj))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: bad header: tensor '%s' is not an object", path,
                             nm);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0) {
            char k2[S_NAME_SHOWN + 8];
            return fm_errmsg_set(e, FM_EFORMAT,
                                 "%s: bad header: unknown field '%s' in tensor "
                                 "'%s'",
                                 path, s_printable(k2, sizeof k2, key), nm);
        }
    }
    const json_t *dtype = json_object_get(obj, "dtype"), *shape = json_object_get(obj, "shape"),
                 *off = json_object_get(obj, "data_offsets");
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !off ? "data_offsets" : NULL;
    if (missing)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: bad header: tensor '%s' has no \"%s\"", path, nm,
                             missing);
    if (!json_is_string(dtype))
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: bad header: tensor '%s': dtype is not a "
                             "string",
                             path, nm);
    if (!s_uint_array(shape, ent->shape, FM_MAX_DIMS, &ent->ndim))
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: bad header: tensor '%s': shape is not an "
                             "array of non-negative integers",
                             path, nm);
    size_t noff = 0;
    if (!s_uint_array(off, ent->off, 2, &noff))
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: bad header: tensor '%s': data_offsets is not "
                             "an array of non-negative integers",
                             path, nm);
    if (noff != 2)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: bad header: tensor '%s': data_offsets must "
                             "have 2 entries, not %zu",
                             path, nm, noff);
    ent->name = name;
    ent->dtype = json_string_value(dtype);
    return 0;
}

/* The "__metadata__" object, all values strings, into f->meta (borrowed from the header).
 * Errors: FM_EFORMAT, -ENOMEM. */
static int s_metadata(const char *path, json_t *obj, fm_safetensors_t *f, fm_errmsg_t *e)
{
    if (!json_is_object(obj))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: bad header: __metadata__ is not an object",
                             path);
    if (!(f->meta = calloc(2 * json_object_size(obj) + 1, sizeof *f->meta)))
        return fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (!json_is_string(v)) {
            char k2[S_NAME_SHOWN + 8];
            return fm_errmsg_set(e, FM_EFORMAT,
                                 "%s: bad header: __metadata__ value of '%s' is "
                                 "not a string",
                                 path, s_printable(k2, sizeof k2, key));
        }
        f->meta[2 * f->nmeta] = key;
        f->meta[2 * f->nmeta + 1] = json_string_value(v);
        f->nmeta++;
    }
    return 0;
}

/* Parse the header text (jansson: strict JSON, UTF-8, no NUL, duplicate keys and nesting
 * past JSON_PARSER_MAX_DEPTH refused; only whitespace may follow the object, the format
 * pads with spaces) into f->header. Errors: FM_EFORMAT, -ENOMEM. */
static int s_parse(const char *path, const char *text, size_t len, fm_safetensors_t *f,
                   fm_errmsg_t *e)
{
    json_error_t je;
    f->header = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!f->header) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return fm_errmsg_set(e, -ENOMEM, "%s: out of memory parsing the header", path);
        char why[sizeof je.text];
        size_t k = 0;
        for (; je.text[k] && k + 1 < sizeof why; k++) /* jansson quotes the input: one line */
            why[k] = (unsigned char)je.text[k] < 0x20 || je.text[k] == 0x7F ? '?' : je.text[k];
        why[k] = '\0';
        return fm_errmsg_set(e, FM_EFORMAT, "%s: malformed header JSON at header byte %d: %s",
                             path, je.position, why);
    }
    if (!json_is_object(f->header))
        return fm_errmsg_set(e, FM_EFORMAT, "%s: malformed header JSON: an array, not an object",
                             path);
    return 0;
}

/* Check the structure of every member of the parsed header: tensor entries go to ents[]
 * (room for json_object_size(header) entries), "__metadata__" to f->meta. */
static int s_header(const char *path, fm_safetensors_t *f, s_entry_t *ents, int *nents,
                    fm_errmsg_t *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(f->header, key, v)
    {
        int rc = strcmp(key, "__metadata__") == 0 ? s_metadata(path, v, f, e)
                                                  : s_entry(path, key, v, &ents[(*nents)++], e);
        if (rc != 0)
            return rc;
    }
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
                             "%s: tensor '%s' has %zu dimensions, at most %d supported", path,
                             s_printable(nm, sizeof nm, ent->name), ent->ndim, FM_MAX_DIMS);
    int64_t numel = 1;
    int ndim = (int)ent->ndim;
    for (int i = 0; i < ndim; i++) {
        if (ent->shape[i] != 0 && numel > INT64_MAX / ent->shape[i])
            return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' shape %s overflows", path,
                                 s_printable(nm, sizeof nm, ent->name),
                                 s_fmt_shape(sh, sizeof sh, ndim, ent->shape));
        numel *= ent->shape[i];
    }
    if (numel > INT64_MAX / (int64_t)dtype->size)
        return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' shape %s overflows", path,
                             s_printable(nm, sizeof nm, ent->name),
                             s_fmt_shape(sh, sizeof sh, ndim, ent->shape));
    int64_t nbytes = numel * (int64_t)dtype->size;
    if (ent->off[1] < ent->off[0] || ent->off[1] - ent->off[0] != nbytes)
        return fm_errmsg_set(e, FM_ESHAPE,
                             "%s: tensor '%s' data_offsets [%lld,%lld] do not match "
                             "%s x %s = %lld bytes",
                             path, s_printable(nm, sizeof nm, ent->name), (long long)ent->off[0],
                             (long long)ent->off[1], dtype->name,
                             s_fmt_shape(sh, sizeof sh, ndim, ent->shape), (long long)nbytes);
    if ((uint64_t)ent->off[1] > data_size)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s: truncated: tensor '%s' data_offsets [%lld,%lld] go past "
                             "the end of the %llu-byte data section",
                             path, s_printable(nm, sizeof nm, ent->name), (long long)ent->off[0],
                             (long long)ent->off[1], (unsigned long long)data_size);
    t->name = ent->name;
    t->dtype = dtype->name;
    t->ndim = ndim;
    memcpy(t->shape, ent->shape, sizeof t->shape);
    t->data = data + ent->off[0];
    t->nbytes = (size_t)nbytes;
    return 0;
}

/* Read the file, check the header length, parse the JSON (duplicates refused there), check
 * the structure of every member, then validate every entry in header order. */
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
        rc = fm_errmsg_set(e, FM_ETRUNC,
                           "%s: truncated: %zu bytes, a safetensors file has at "
                           "least the 8-byte header length",
                           path, f->size);
        goto cleanup;
    }
    uint64_t hlen;
    memcpy(&hlen, f->buf, 8);
    if (hlen > S_MAX_HEADER) {
        rc = fm_errmsg_set(e, FM_EFORMAT,
                           "%s: header length %llu exceeds the limit of %llu bytes "
                           "(not a safetensors file?)",
                           path, (unsigned long long)hlen, (unsigned long long)S_MAX_HEADER);
        goto cleanup;
    }
    if (hlen > f->size - 8) {
        rc = fm_errmsg_set(e, FM_ETRUNC,
                           "%s: truncated: header length %llu but only %zu bytes "
                           "follow it",
                           path, (unsigned long long)hlen, f->size - 8);
        goto cleanup;
    }
    if ((rc = s_parse(path, (const char *)f->buf + 8, (size_t)hlen, f, e)) != 0)
        goto cleanup;
    /* at most one member per 6 header bytes ("a":{},): nents stays far below INT_MAX */
    size_t nmembers = json_object_size(f->header);
    ents = calloc(nmembers + 1, sizeof *ents);
    f->tensors = calloc(nmembers + 1, sizeof *f->tensors);
    f->sorted = calloc(nmembers + 1, sizeof *f->sorted);
    if (!ents || !f->tensors || !f->sorted) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    /* Structure first (a header defect), then each entry's content in header order. */
    if ((rc = s_header(path, f, ents, &nents, e)) != 0)
        goto cleanup;
    const unsigned char *data = f->buf + 8 + hlen;
    uint64_t data_size = f->size - 8 - hlen;
    for (int i = 0; i < nents; i++)
        if ((rc = s_validate(path, &ents[i], data, data_size, &f->tensors[i], e)) != 0)
            goto cleanup;
    f->n = nents;
    for (int i = 0; i < nents; i++) /* names are unique: jansson refused duplicate keys */
        f->sorted[i] = &f->tensors[i];
    qsort(f->sorted, (size_t)nents, sizeof *f->sorted, s_cmp_name);
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
    json_decref(f->header);
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
    const fm_tensor_t *const *hit = bsearch(&kp, f->sorted, (size_t)f->n, sizeof *f->sorted,
                                            s_cmp_name);
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

/* The header object of checked arguments: "__metadata__" first (as the reference
 * implementation writes it), then the tensors in order, their data back to back. jansson
 * (2.8 and later) keeps keys in insertion order, in memory and when dumping. NULL when out
 * of memory (set_new/append_new take ownership of their value, NULL included, even when
 * they fail). */
static json_t *s_header_new(const fm_tensor_t *t, int n, const char *const *meta, int nmeta)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    if (nmeta > 0) {
        json_t *m = json_object();
        if (json_object_set_new(root, "__metadata__", m) != 0)
            goto fail;
        for (int i = 0; i < nmeta; i++)
            if (json_object_set_new(m, meta[2 * i], json_string(meta[2 * i + 1])) != 0)
                goto fail;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *ent = json_object(), *shape = NULL, *offs = NULL;
        if (json_object_set_new(root, t[i].name, ent) != 0 ||
            json_object_set_new(ent, "dtype", json_string(s_dtype_find(t[i].dtype)->name)) != 0 ||
            json_object_set_new(ent, "shape", shape = json_array()) != 0)
            goto fail;
        for (int d = 0; d < t[i].ndim; d++)
            if (json_array_append_new(shape, json_integer(t[i].shape[d])) != 0)
                goto fail;
        if (json_object_set_new(ent, "data_offsets", offs = json_array()) != 0 ||
            json_array_append_new(offs, json_integer(off)) != 0 ||
            json_array_append_new(offs, json_integer(off + (int64_t)t[i].nbytes)) != 0)
            goto fail;
        off += (int64_t)t[i].nbytes;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

/* The header text: compact JSON padded with spaces to a multiple of 8 bytes (the data
 * section starts 8-aligned); *len is its length. NULL when out of memory. */
static char *s_header_text(const json_t *root, size_t *len)
{
    char *text = json_dumps(root, JSON_COMPACT);
    if (!text)
        return NULL;
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *p = realloc(text, padded + 1);
    if (!p) {
        free(text);
        return NULL;
    }
    memset(p + n, ' ', padded - n);
    p[padded] = '\0';
    *len = padded;
    return p;
}

/* Check the arguments of fm_safetensors_write; FM_EARG with a message if bad. */
static int s_check_write_args(const char *path, const fm_tensor_t *t, int n,
                              const char *const *meta, int nmeta, fm_errmsg_t *e)
{
    char nm[S_NAME_SHOWN + 8];
    uint64_t total = 0; /* data_offsets are JSON integers: int64 */
    if (n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && !meta))
        return fm_errmsg_set(e, FM_EARG, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !s_utf8_valid(t[i].name) || strcmp(t[i].name, "__metadata__") == 0)
            return fm_errmsg_set(
                e, FM_EARG, "%s: tensor %d: missing, invalid UTF-8 or reserved name", path, i);
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
        if (bytes > (uint64_t)INT64_MAX - total)
            return fm_errmsg_set(e, FM_EARG, "%s: tensor '%s': the data ends past byte 2^63-1",
                                 path, nm);
        total += bytes;
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
    char *tmp = NULL, *hdr = NULL;
    if (!path)
        return fm_errmsg_set(e, FM_EARG, "fm_safetensors_write: no path");
    if ((rc = s_check_write_args(path, tensors, n, meta, nmeta, e)) != 0)
        return rc;

    json_t *root = s_header_new(tensors, n, meta, nmeta);
    size_t hlen = 0;
    hdr = root ? s_header_text(root, &hlen) : NULL;
    json_decref(root);
    if (!hdr) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory building the header", path);
        goto cleanup;
    }
    if (hlen > S_MAX_HEADER) {
        rc = fm_errmsg_set(e, FM_EARG, "%s: header of %zu bytes exceeds the format's limit", path,
                           hlen);
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
    uint64_t hlen64 = hlen;
    if ((rc = s_write_all(fd, &hlen64, 8)) != 0 || (rc = s_write_all(fd, hdr, hlen)) != 0)
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
    free(hdr);
    return rc;
}

/* ---- models ----------------------------------------------------------------------------- */

/* One F32 tensor per view, pointing into the flat parameter buffer. */
int fm_safetensors_save_model(const fm_model_t *m, const char *path, fm_errmsg_t *e)
{
    fm_tensor_t t[FM_SPEC_MAX_VIEWS]; /* a spec has the most views */
    if (!m || !path)
        return fm_errmsg_set(e, FM_EARG, "fm_safetensors_save_model: no model or path");
    int n = fm_model_nviews(m);
    if (n < 0 || n > FM_SPEC_MAX_VIEWS)
        return fm_errmsg_set(e, FM_EARG, "%s: model %s has %d views", path, fm_model_name(m), n);
    const float *params = fm_model_params_const(m);
    for (int i = 0; i < n; i++) {
        const fm_view_t *v = fm_model_view(m, i);
        t[i] = (fm_tensor_t){.name = v->name,
                             .dtype = "F32",
                             .ndim = v->ndim,
                             .data = params + v->offset,
                             .nbytes = v->numel * sizeof(float)};
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
            return fm_errmsg_set(e, FM_ENONFINITE,
                                 "%s: tensor '%s' of model %s has a non-finite "
                                 "value (%g) at index %zu",
                                 path, v->name, model, (double)x, k);
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

/* ---- model specs -------------------------------------------------------------------------- */

/* Check tensor `t` (index i) of a spec file; *numel gets its floats. */
static int s_check_spec_tensor(const char *path, const fm_tensor_t *t, size_t *numel,
                               fm_errmsg_t *e)
{
    char nm[S_NAME_SHOWN + 8], sh[128];
    s_printable(nm, sizeof nm, t->name);
    if (fm_spec_name_check(t->name) != 0)
        return fm_errmsg_set(e, FM_ENAME,
                             "%s: tensor '%s': a name must be 1..%d bytes of printable ASCII "
                             "without space (0x21-0x7e)",
                             path, nm, FM_SPEC_NAME_MAX);
    if (strcmp(t->dtype, "F32") != 0)
        return fm_errmsg_set(e, FM_EDTYPE, "%s: tensor '%s' has dtype %s, a model spec takes F32",
                             path, nm, t->dtype);
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0)
            return fm_errmsg_set(e, FM_ESHAPE, "%s: tensor '%s' has shape %s: zero-size tensor",
                                 path, nm, s_fmt_shape(sh, sizeof sh, t->ndim, t->shape));
        n = (uint64_t)t->shape[d] > FM_SPEC_MAX_PARAMS ? FM_SPEC_MAX_PARAMS + 1
                                                       : n * (size_t)t->shape[d];
        if (n > FM_SPEC_MAX_PARAMS)
            return fm_errmsg_set(
                e, FM_ESHAPE, "%s: tensor '%s' has shape %s: more than %zu floats", path, nm,
                s_fmt_shape(sh, sizeof sh, t->ndim, t->shape), (size_t)FM_SPEC_MAX_PARAMS);
    }
    const unsigned char *p = t->data;
    for (size_t k = 0; k < n; k++) {
        float x;
        memcpy(&x, p + k * sizeof x, sizeof x); /* data may be unaligned */
        if (!isfinite(x))
            return fm_errmsg_set(e, FM_ENONFINITE,
                                 "%s: tensor '%s' has a non-finite value (%g) at index %zu", path,
                                 nm, (double)x, k);
    }
    *numel = n;
    return 0;
}

fm_model_t *fm_safetensors_load_spec(const char *path, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    fm_model_t *m = NULL;
    fm_spec_tensor_t spec[FM_SPEC_MAX_VIEWS];
    fm_safetensors_t *f = NULL;
    if (!path) {
        rc = fm_errmsg_set(e, FM_EARG, "fm_safetensors_load_spec: no path");
        goto cleanup;
    }
    if (!(f = fm_safetensors_open(path, &rc, e)))
        goto cleanup;
    if (f->n < 1 || f->n > FM_SPEC_MAX_VIEWS) {
        rc = fm_errmsg_set(e, FM_EARG, "%s: %d tensors: a model spec has 1..%d", path, f->n,
                           FM_SPEC_MAX_VIEWS);
        goto cleanup;
    }
    size_t total = 0;
    for (int i = 0; i < f->n; i++) {
        const fm_tensor_t *t = &f->tensors[i];
        size_t numel = 0;
        if ((rc = s_check_spec_tensor(path, t, &numel, e)) != 0)
            goto cleanup;
        total += numel;
        if (total > FM_SPEC_MAX_PARAMS) {
            char nm[S_NAME_SHOWN + 8];
            rc = fm_errmsg_set(e, FM_ESHAPE,
                               "%s: tensor '%s' brings the model past %zu floats in all", path,
                               s_printable(nm, sizeof nm, t->name), (size_t)FM_SPEC_MAX_PARAMS);
            goto cleanup;
        }
        spec[i] = (fm_spec_tensor_t){.name = t->name, .ndim = t->ndim};
        memcpy(spec[i].shape, t->shape, sizeof spec[i].shape);
    }
    if (!(m = fm_model_new_spec(spec, f->n, &rc))) {
        fm_errmsg_set(e, rc, "%s: model spec: %s", path, fm_strerror(rc));
        goto cleanup;
    }
    float *params = fm_model_params(m);
    for (int i = 0; i < f->n; i++)
        memcpy(params + fm_model_view(m, i)->offset, f->tensors[i].data, f->tensors[i].nbytes);
cleanup:
    fm_safetensors_close(&f);
    if (!m && err)
        *err = rc;
    return m;
}
