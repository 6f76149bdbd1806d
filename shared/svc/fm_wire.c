/* fm_wire: encoders (msgpack-c packer) and a bounded decoder for the wire protocol
 * (see fm_wire.h and docs/PROTOCOL.md).
 *
 * The decoder is a cursor over the frame. s_next() reads one msgpack header and is the only
 * place that touches input bytes: it checks every length and count against the bytes left
 * before using it (a str/bin/ext payload must be present; an array of n entries needs at
 * least n bytes, a map 2n, since every value takes one byte or more). Decoding makes two
 * passes over the top-level map:
 *   1. s_frame: the whole frame is one well-formed map (nested values walked by s_skip up
 *      to FM_WIRE_MAX_DEPTH levels, no recursion beyond it), string keys, no trailing bytes;
 *      then "v" and "t" are checked;
 *   2. s_fields: the keys of the message type are decoded through a field table; unknown
 *      keys are skipped (the forward-compatibility rule: fields can be added in version 1).
 * Nothing is allocated and tensor data stays in the frame. */
#include "fm_wire.h"

#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_wire assumes a little-endian host (tensor bytes are sent and used as stored)"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");
_Static_assert(FM_WIRE_MAX_DIMS == FM_MAX_DIMS, "wire and model dims caps differ");
_Static_assert(FM_SPEC_MAX_VIEWS == FM_WIRE_MAX_TENSORS, "wire and spec tensor caps differ");
_Static_assert(FM_MAX_VIEWS <= FM_WIRE_MAX_TENSORS, "a built-in model exceeds the wire cap");
_Static_assert(FM_SPEC_NAME_MAX == FM_WIRE_STR_MAX, "wire and spec name caps differ");
_Static_assert(FM_WIRE_NTYPES <= 32, "type bitmasks are 32 bits (uint32_t)");

#define S_SHOWN 48 /* bytes of a name or key quoted in an error message */

static const char *const s_type_names[FM_WIRE_NTYPES] = {
    [FM_WIRE_NONE] = "?",
    [FM_WIRE_MODEL] = "MODEL",
    [FM_WIRE_UPDATE] = "UPDATE",
    [FM_WIRE_HELLO] = "HELLO",
    [FM_WIRE_HEARTBEAT] = "HEARTBEAT",
    [FM_WIRE_BYE] = "BYE",
    [FM_WIRE_SNAPSHOT_REQ] = "SNAPSHOT_REQ",
    [FM_WIRE_METRICS] = "METRICS",
    [FM_WIRE_ACK] = "ACK",
    [FM_WIRE_DECLINE] = "DECLINE",
    [FM_WIRE_SA_INVITE] = "COHORT_INVITE",
    [FM_WIRE_SA_KEYS] = "ADVERTISE_KEYS",
    [FM_WIRE_SA_KEY_LIST] = "KEY_LIST",
    [FM_WIRE_SA_SHARES] = "SHARES",
    [FM_WIRE_SA_SHARES_FWD] = "SHARES_FWD",
    [FM_WIRE_SA_MASKED] = "MASKED_UPDATE",
    [FM_WIRE_SA_UNMASK_REQ] = "UNMASK_REQ",
    [FM_WIRE_SA_UNMASK_SHARES] = "UNMASK_SHARES",
    [FM_WIRE_SA_DONE] = "COHORT_DONE",
    [FM_WIRE_SA_ABORT] = "COHORT_ABORT",
};

const char *fm_wire_type_name(fm_wire_type_t type)
{
    if (type > FM_WIRE_NONE && type < FM_WIRE_NTYPES)
        return s_type_names[type];
    return "?";
}

/* 1 if byte c is allowed in text class cls (fm_wire.h, "Text"). */
static bool s_text_byte(fm_wire_text_t cls, unsigned char c)
{
    if (cls == FM_WIRE_TEXT_NAME)
        return c >= 0x21 && c <= 0x7e;
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-' || c == ':' || c == '@' || c == '/';
}

/* How a text class is named in error messages. */
static const char *s_text_what(fm_wire_text_t cls)
{
    return cls == FM_WIRE_TEXT_NAME ? "a name (printable ASCII, no space)"
                                    : "an id (letters, digits, . _ - : @ /)";
}

size_t fm_wire_text_check(fm_wire_text_t cls, const char *s, size_t n)
{
    FM_ASSERT(s || n == 0);
    for (size_t i = 0; i < n; i++)
        if (!s_text_byte(cls, (unsigned char)s[i]))
            return i;
    return n;
}

/* Copy at most S_SHOWN bytes of s[0..n) into dst (cap > S_SHOWN + 4) with bytes outside
 * printable ASCII replaced by '?', so that error messages stay on one line. */
static const char *s_printable(char *dst, size_t cap, const void *s, size_t n)
{
    const unsigned char *p = s;
    size_t k = 0;
    for (size_t i = 0; i < n && i < S_SHOWN && k + 4 < cap; i++)
        dst[k++] = (p[i] < 0x20 || p[i] > 0x7e) ? '?' : (char)p[i];
    if (n > S_SHOWN && k + 4 < cap) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
    return dst;
}

/* "[a,b,c]" */
static const char *s_fmt_shape(char *dst, size_t cap, int ndim, const uint64_t *shape)
{
    size_t k = (size_t)snprintf(dst, cap, "[");
    for (int i = 0; i < ndim && i < FM_WIRE_MAX_DIMS && k < cap; i++)
        k += (size_t)snprintf(dst + k, cap - k, "%s%llu", i ? "," : "",
                              (unsigned long long)shape[i]);
    if (k < cap)
        snprintf(dst + k, cap - k, "]");
    return dst;
}

/* Index of the first non-finite float32 among the n (possibly unaligned) floats at p, or n.
 * Blocks of 256 are OR-reduced on the exponent bits so the common all-finite case is one
 * vectorisable pass. */
static size_t s_first_nonfinite(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i += 256) {
        size_t m = n - i < 256 ? n - i : 256;
        uint32_t bad = 0;
        for (size_t j = 0; j < m; j++) {
            uint32_t u;
            memcpy(&u, b + 4 * (i + j), 4);
            bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (size_t j = 0; j < m; j++) {
                uint32_t u;
                memcpy(&u, b + 4 * (i + j), 4);
                if ((u & 0x7f800000u) == 0x7f800000u)
                    return i + j;
            }
    }
    return n;
}

/* ==== encoding ===============================================================================
 */

void fm_wire_buf_free(fm_wire_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Make room for `extra` more bytes. Errors: -ENOMEM. */
static int s_buf_reserve(fm_wire_buf_t *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return -ENOMEM;
    size_t need = b->len + extra, cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* msgpack_packer write callback; a non-zero return is passed up by every msgpack_pack_*. */
static int s_buf_write(void *data, const char *src, size_t n)
{
    fm_wire_buf_t *b = data;
    if (n == 0)
        return 0;
    if (s_buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

/* 1 if the NUL-terminated s (within a char[FM_WIRE_STR_MAX + 1]) is a valid string field of
 * text class cls. */
static bool s_str_ok(const char *s, bool nonempty, fm_wire_text_t cls)
{
    size_t n = strnlen(s, FM_WIRE_STR_MAX + 1);
    return n <= FM_WIRE_STR_MAX && (n > 0 || !nonempty) && fm_wire_text_check(cls, s, n) == n;
}

static int s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    int rc = msgpack_pack_str(pk, n);
    return rc ? rc : msgpack_pack_str_body(pk, s, n);
}

/* The map header (nfields + 2 entries), "v" (= version) and "t". */
static int s_pack_head_v(msgpack_packer *pk, fm_wire_type_t type, size_t nfields,
                         unsigned version)
{
    int rc;
    if ((rc = msgpack_pack_map(pk, nfields + 2)) != 0 || (rc = s_pack_str(pk, "v")) != 0 ||
        (rc = msgpack_pack_uint8(pk, (uint8_t)version)) != 0 || (rc = s_pack_str(pk, "t")) != 0)
        return rc;
    return s_pack_str(pk, fm_wire_type_name(type));
}

/* The map header of a version-1 message. */
static int s_pack_head(msgpack_packer *pk, fm_wire_type_t type, size_t nfields)
{
    return s_pack_head_v(pk, type, nfields, FM_WIRE_VERSION);
}

static int s_pack_kstr(msgpack_packer *pk, const char *key, const char *s)
{
    int rc = s_pack_str(pk, key);
    return rc ? rc : s_pack_str(pk, s);
}

static int s_pack_ku64(msgpack_packer *pk, const char *key, uint64_t v)
{
    int rc = s_pack_str(pk, key);
    return rc ? rc : msgpack_pack_uint64(pk, v);
}

static int s_pack_kf64(msgpack_packer *pk, const char *key, double v)
{
    int rc = s_pack_str(pk, key);
    return rc ? rc : msgpack_pack_double(pk, v);
}

/* Upper bound of the encoded size of the tensors of `layout`. */
static size_t s_tensors_size(const fm_model_t *layout)
{
    size_t n = 16;
    for (int i = 0; i < fm_model_nviews(layout); i++) {
        const fm_view_t *v = fm_model_view(layout, i);
        n += 64 + strlen(v->name) + 9 * FM_MAX_DIMS + 4 * v->numel;
    }
    return n;
}

/* The protocol version tensors need: 2 if any is encoded (coded non-NULL, one per view),
 * else 1. */
static unsigned s_coded_version(const fm_model_t *layout, const fm_codec_tensor_t *coded)
{
    for (int i = 0; coded && i < fm_model_nviews(layout); i++)
        if (!fm_codec_is_raw(&coded[i]))
            return FM_WIRE_VERSION_MAX;
    return FM_WIRE_VERSION;
}

/* "tensors": [{"name", "dtype", "shape", "data"[, "scale"][, "idx"][, "comp"]}, ...] in
 * state_dict order: raw F32 from `flat`, or coded[i] for view i when coded is non-NULL. */
static int s_pack_tensors(msgpack_packer *pk, const fm_model_t *layout, const float *flat,
                          const fm_codec_tensor_t *coded)
{
    int rc, n = fm_model_nviews(layout);
    if ((rc = s_pack_str(pk, "tensors")) != 0 || (rc = msgpack_pack_array(pk, (size_t)n)) != 0)
        return rc;
    for (int i = 0; i < n; i++) {
        const fm_view_t *v = fm_model_view(layout, i);
        fm_codec_tensor_t raw = {
            .dtype = FM_DT_F32, .data = flat ? flat + v->offset : NULL, .nbytes = 4 * v->numel};
        const fm_codec_tensor_t *c = coded ? &coded[i] : &raw;
        size_t nkeys = 4 + (c->dtype == FM_DT_I8) + (size_t)(c->sparse != 0) + (c->zstd != 0);
        if ((rc = msgpack_pack_map(pk, nkeys)) != 0 ||
            (rc = s_pack_kstr(pk, "name", v->name)) != 0 ||
            (rc = s_pack_kstr(pk, "dtype", fm_dtype_name(c->dtype))) != 0 ||
            (rc = s_pack_str(pk, "shape")) != 0 ||
            (rc = msgpack_pack_array(pk, (size_t)v->ndim)) != 0)
            return rc;
        for (int d = 0; d < v->ndim; d++)
            if ((rc = msgpack_pack_uint64(pk, (uint64_t)v->shape[d])) != 0)
                return rc;
        if ((rc = s_pack_str(pk, "data")) != 0 || (rc = msgpack_pack_bin(pk, c->nbytes)) != 0 ||
            (rc = msgpack_pack_bin_body(pk, c->nbytes ? c->data : "", c->nbytes)) != 0)
            return rc;
        if (c->dtype == FM_DT_I8 && (rc = s_pack_kf64(pk, "scale", c->scale)) != 0)
            return rc;
        if (c->sparse &&
            ((rc = s_pack_str(pk, "idx")) != 0 ||
             (rc = msgpack_pack_bin(pk, c->idx_nbytes)) != 0 ||
             (rc = msgpack_pack_bin_body(pk, c->idx_nbytes ? c->idx : "", c->idx_nbytes)) != 0))
            return rc;
        if (c->zstd && (rc = s_pack_kstr(pk, "comp", "zstd")) != 0)
            return rc;
    }
    return 0;
}

/* Upper bound of the encoded size of coded tensors (NULL: raw F32) of `layout`. */
static size_t s_coded_size(const fm_model_t *layout, const fm_codec_tensor_t *coded)
{
    if (!coded)
        return s_tensors_size(layout);
    size_t n = 16;
    for (int i = 0; i < fm_model_nviews(layout); i++)
        n += 96 + strlen(fm_model_view(layout, i)->name) + 9 * FM_MAX_DIMS + coded[i].nbytes +
             coded[i].idx_nbytes;
    return n;
}

/* Pack call that fails with -ENOMEM (the only way the buffer callback fails). */
#define S_PACK(call)                                                                             \
    do {                                                                                         \
        if ((call) != 0) {                                                                       \
            rc = -ENOMEM;                                                                        \
            goto cleanup;                                                                        \
        }                                                                                        \
    } while (0)

int fm_wire_encode_model(const fm_wire_model_t *hdr, const fm_model_t *layout,
                         const float *params, fm_wire_buf_t *out)
{
    FM_ASSERT(params);
    return fm_wire_encode_model_coded(hdr, layout, params, NULL, out);
}

int fm_wire_encode_model_coded(const fm_wire_model_t *hdr, const fm_model_t *layout,
                               const float *params, const fm_codec_tensor_t *coded,
                               fm_wire_buf_t *out)
{
    FM_ASSERT(hdr && layout && (params || coded) && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (hdr->cohort.present &&
        (hdr->cohort.count > FM_WIRE_MAX_COHORT || (hdr->cohort.count && !hdr->cohort.ids)))
        return FM_EARG;
    if (s_buf_reserve(out, s_coded_size(layout, coded) + 128 + 4 * (size_t)hdr->cohort.count) !=
        0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    int progress = hdr->applied > 0 || hdr->updates_per_s != 0; /* optional keys */
    int boot = hdr->boot != 0;
    int dp = hdr->delta > 0;
    int poisson = hdr->cohort.present && hdr->sample_rate > 0;
    int sa = hdr->sa_completed > 0 || hdr->sa_aborted > 0;
    S_PACK(s_pack_head_v(&pk, FM_WIRE_MODEL,
                         (hdr->cohort.present ? 7 : 4) + 2 * progress + (size_t)boot +
                             2 * (size_t)dp + (size_t)poisson + 3 * (size_t)sa,
                         s_coded_version(layout, coded)));
    S_PACK(s_pack_ku64(&pk, "mv", hdr->version));
    S_PACK(s_pack_kstr(&pk, "model", fm_model_name(layout)));
    S_PACK(s_pack_kf64(&pk, "ts", hdr->created));
    if (boot)
        S_PACK(s_pack_ku64(&pk, "boot", hdr->boot));
    if (progress) {
        S_PACK(s_pack_ku64(&pk, "applied", hdr->applied));
        S_PACK(s_pack_kf64(&pk, "ups", hdr->updates_per_s));
    }
    if (dp) {
        S_PACK(s_pack_kf64(&pk, "eps", hdr->epsilon));
        S_PACK(s_pack_kf64(&pk, "delta", hdr->delta));
    }
    if (sa) {
        S_PACK(s_pack_ku64(&pk, "sadone", hdr->sa_completed));
        S_PACK(s_pack_ku64(&pk, "saabort", hdr->sa_aborted));
        S_PACK(s_pack_ku64(&pk, "sadrop", hdr->sa_dropped));
    }
    if (hdr->cohort.present) {
        S_PACK(s_pack_ku64(&pk, "round", hdr->round));
        S_PACK(s_pack_str(&pk, "cohort"));
        S_PACK(msgpack_pack_bin(&pk, 4 * (size_t)hdr->cohort.count));
        S_PACK(msgpack_pack_bin_body(&pk, hdr->cohort.count ? hdr->cohort.ids : "",
                                     4 * (size_t)hdr->cohort.count));
        S_PACK(s_pack_kf64(&pk, "mu", hdr->mu));
        if (poisson)
            S_PACK(s_pack_kf64(&pk, "q", hdr->sample_rate));
    }
    S_PACK(s_pack_tensors(&pk, layout, params, coded));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_update(const fm_wire_update_t *hdr, const fm_model_t *layout,
                          const float *delta, fm_wire_buf_t *out)
{
    FM_ASSERT(delta);
    return fm_wire_encode_update_coded(hdr, layout, delta, NULL, out);
}

int fm_wire_encode_update_coded(const fm_wire_update_t *hdr, const fm_model_t *layout,
                                const float *delta, const fm_codec_tensor_t *coded,
                                fm_wire_buf_t *out)
{
    FM_ASSERT(hdr && layout && (delta || coded) && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_str_ok(hdr->trainer, true, FM_WIRE_TEXT_ID))
        return FM_EARG;
    if (s_buf_reserve(out, s_coded_size(layout, coded) + 512) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    int timed = hdr->sent_at > 0; /* optional "ts" and "wait" */
    S_PACK(s_pack_head_v(&pk, FM_WIRE_UPDATE, (hdr->round ? 11 : 10) + 2 * (size_t)timed,
                         s_coded_version(layout, coded)));
    S_PACK(s_pack_str(&pk, "id"));
    S_PACK(msgpack_pack_bin(&pk, FM_WIRE_ID_LEN));
    S_PACK(msgpack_pack_bin_body(&pk, hdr->id, FM_WIRE_ID_LEN));
    S_PACK(s_pack_kstr(&pk, "trainer", hdr->trainer));
    S_PACK(s_pack_ku64(&pk, "client", hdr->client));
    S_PACK(s_pack_ku64(&pk, "base", hdr->base));
    S_PACK(s_pack_ku64(&pk, "n", hdr->num_samples));
    S_PACK(s_pack_ku64(&pk, "steps", hdr->local_steps));
    S_PACK(s_pack_kf64(&pk, "loss", hdr->train_loss));
    S_PACK(s_pack_kf64(&pk, "secs", hdr->train_seconds));
    S_PACK(s_pack_kstr(&pk, "model", fm_model_name(layout)));
    if (hdr->round)
        S_PACK(s_pack_ku64(&pk, "round", hdr->round));
    if (timed) {
        S_PACK(s_pack_kf64(&pk, "ts", hdr->sent_at));
        S_PACK(s_pack_kf64(&pk, "wait", hdr->idle_before));
    }
    S_PACK(s_pack_tensors(&pk, layout, delta, coded));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_member(fm_wire_type_t type, const fm_wire_member_t *m, fm_wire_buf_t *out)
{
    FM_ASSERT(m && out);
    msgpack_packer pk;
    int rc = 0;
    bool hb = type == FM_WIRE_HEARTBEAT;
    out->len = 0;
    if ((type != FM_WIRE_HELLO && !hb && type != FM_WIRE_BYE) ||
        !s_str_ok(m->trainer, true, FM_WIRE_TEXT_ID))
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_head(&pk, type, hb ? 8 : 6));
    S_PACK(s_pack_kstr(&pk, "trainer", m->trainer));
    S_PACK(s_pack_ku64(&pk, "pid", m->pid));
    S_PACK(s_pack_ku64(&pk, "cfirst", m->client_first));
    S_PACK(s_pack_ku64(&pk, "ccount", m->client_count));
    S_PACK(s_pack_ku64(&pk, "workers", m->workers));
    S_PACK(s_pack_ku64(&pk, "seq", m->seq));
    if (hb) {
        S_PACK(s_pack_ku64(&pk, "sent", m->updates_sent));
        S_PACK(s_pack_ku64(&pk, "busy", m->busy));
    }
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_snapshot_req(const fm_wire_snapshot_req_t *r, fm_wire_buf_t *out)
{
    FM_ASSERT(r && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_str_ok(r->from, true, FM_WIRE_TEXT_ID))
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_head(&pk, FM_WIRE_SNAPSHOT_REQ, 2));
    S_PACK(s_pack_kstr(&pk, "from", r->from));
    S_PACK(s_pack_ku64(&pk, "have", r->have));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_metrics(const fm_wire_metrics_t *m, fm_wire_buf_t *out)
{
    FM_ASSERT(m && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_str_ok(m->model, true, FM_WIRE_TEXT_NAME))
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    int progress = m->applied > 0 || m->updates_per_s != 0; /* optional keys */
    int dp = m->delta > 0;
    int sa = m->sa_completed > 0 || m->sa_aborted > 0;
    int psecs = m->pop_clients && m->pop_seconds > 0;
    S_PACK(s_pack_head(&pk, FM_WIRE_METRICS,
                       (m->pop_clients ? 15 : 8) + (size_t)psecs + 2 * progress + 2 * (size_t)dp +
                           3 * (size_t)sa));
    S_PACK(s_pack_ku64(&pk, "mv", m->version));
    S_PACK(s_pack_kstr(&pk, "model", m->model));
    S_PACK(s_pack_kf64(&pk, "acc", m->accuracy));
    S_PACK(s_pack_kf64(&pk, "loss", m->loss));
    S_PACK(s_pack_str(&pk, "cacc"));
    S_PACK(msgpack_pack_array(&pk, FM_NCLASSES));
    for (int i = 0; i < FM_NCLASSES; i++)
        S_PACK(msgpack_pack_double(&pk, m->class_acc[i]));
    S_PACK(s_pack_ku64(&pk, "n", m->num_samples));
    S_PACK(s_pack_kf64(&pk, "secs", m->eval_seconds));
    S_PACK(s_pack_kf64(&pk, "ts", m->timestamp));
    if (progress) {
        S_PACK(s_pack_ku64(&pk, "applied", m->applied));
        S_PACK(s_pack_kf64(&pk, "ups", m->updates_per_s));
    }
    if (dp) {
        S_PACK(s_pack_kf64(&pk, "eps", m->epsilon));
        S_PACK(s_pack_kf64(&pk, "delta", m->delta));
    }
    if (sa) {
        S_PACK(s_pack_ku64(&pk, "sadone", m->sa_completed));
        S_PACK(s_pack_ku64(&pk, "saabort", m->sa_aborted));
        S_PACK(s_pack_ku64(&pk, "sadrop", m->sa_dropped));
    }
    if (m->pop_clients) {
        S_PACK(s_pack_ku64(&pk, "pc", m->pop_clients));
        S_PACK(s_pack_kf64(&pk, "pmean", m->pop_mean));
        S_PACK(s_pack_kf64(&pk, "pmin", m->pop_min));
        S_PACK(s_pack_ku64(&pk, "pworst", m->pop_worst));
        S_PACK(s_pack_kf64(&pk, "pp10", m->pop_p10));
        S_PACK(s_pack_kf64(&pk, "pthr", m->pop_threshold));
        S_PACK(s_pack_kf64(&pk, "pbelow", m->pop_below));
        if (psecs)
            S_PACK(s_pack_kf64(&pk, "psecs", m->pop_seconds));
    }
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_ack(const fm_wire_ack_t *a, fm_wire_buf_t *out)
{
    FM_ASSERT(a && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_str_ok(a->status, true, FM_WIRE_TEXT_NAME) || strlen(a->status) > FM_WIRE_STATUS_MAX ||
        a->boot == 0 || a->count == 0 || a->count > FM_WIRE_MAX_ACK_IDS || !a->ids)
        return FM_EARG;
    size_t nb = (size_t)a->count * FM_WIRE_ID_LEN;
    if (s_buf_reserve(out, nb + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_head(&pk, FM_WIRE_ACK, 4));
    S_PACK(s_pack_ku64(&pk, "boot", a->boot));
    S_PACK(s_pack_ku64(&pk, "mv", a->version));
    S_PACK(s_pack_kstr(&pk, "status", a->status));
    S_PACK(s_pack_str(&pk, "ids"));
    S_PACK(msgpack_pack_bin(&pk, nb));
    S_PACK(msgpack_pack_bin_body(&pk, a->ids, nb));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_decline(const fm_wire_decline_t *d, fm_wire_buf_t *out)
{
    FM_ASSERT(d && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_str_ok(d->trainer, true, FM_WIRE_TEXT_ID) || d->round == 0 || d->clients.count == 0 ||
        d->clients.count > FM_WIRE_MAX_COHORT || !d->clients.ids)
        return FM_EARG;
    if (s_buf_reserve(out, 4 * (size_t)d->clients.count + 128) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_head(&pk, FM_WIRE_DECLINE, 4));
    S_PACK(s_pack_kstr(&pk, "trainer", d->trainer));
    S_PACK(s_pack_str(&pk, "clients"));
    S_PACK(msgpack_pack_bin(&pk, 4 * (size_t)d->clients.count));
    S_PACK(msgpack_pack_bin_body(&pk, d->clients.ids, 4 * (size_t)d->clients.count));
    S_PACK(s_pack_ku64(&pk, "base", d->base));
    S_PACK(s_pack_ku64(&pk, "round", d->round));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

/* ---- secure aggregation (docs/PROTOCOL.md §3.8) ------------------------------------------ */

/* 1 if x is a member index the wire allows (1..FM_SA_MAX_K). */
static bool s_sa_idx_ok(uint32_t x) { return x >= 1 && x <= FM_SA_MAX_K; }

/* 1 if l[0..n) is an index list the wire allows: at most cap entries, each an index. */
static bool s_sa_list_ok(const uint32_t *l, uint32_t n, uint32_t cap)
{
    if (n > cap || (n && !l))
        return false;
    for (uint32_t j = 0; j < n; j++)
        if (!s_sa_idx_ok(l[j]))
            return false;
    return true;
}

/* The map header (nfields + 4 entries), "v", "t", "cohort" and "i". */
static int s_pack_sa_head(msgpack_packer *pk, fm_wire_type_t type, size_t nfields,
                          uint64_t cohort, uint32_t index)
{
    int rc;
    if ((rc = s_pack_head(pk, type, nfields + 2)) != 0 ||
        (rc = s_pack_ku64(pk, "cohort", cohort)) != 0)
        return rc;
    return s_pack_ku64(pk, "i", index);
}

/* key, then a bin header of n bytes and (when p) its body. */
static int s_pack_kbin(msgpack_packer *pk, const char *key, const void *p, size_t n)
{
    int rc;
    if ((rc = s_pack_str(pk, key)) != 0 || (rc = msgpack_pack_bin(pk, n)) != 0)
        return rc;
    return p && n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

/* One little-endian uint32 of a bin body (the host is little-endian). */
static int s_pack_le32(msgpack_packer *pk, uint32_t v)
{
    return msgpack_pack_bin_body(pk, &v, 4);
}

int fm_wire_encode_sa_invite(const fm_wire_sa_invite_t *inv, fm_wire_buf_t *out)
{
    FM_ASSERT(inv && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    const double dls[4] = {inv->deadlines.keys, inv->deadlines.shares, inv->deadlines.train,
                           inv->deadlines.unmask};
    if (fm_sa_params_check(&inv->p, NULL) != 0 || inv->index < 1 || inv->index > inv->p.k ||
        !s_str_ok(inv->trainer, true, FM_WIRE_TEXT_ID))
        return FM_EARG;
    for (int j = 0; j < 4; j++)
        if (!isfinite(dls[j]) || dls[j] <= 0)
            return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(
        s_pack_sa_head(&pk, FM_WIRE_SA_INVITE, inv->round ? 10 : 9, inv->p.cohort, inv->index));
    S_PACK(s_pack_ku64(&pk, "k", inv->p.k));
    S_PACK(s_pack_ku64(&pk, "thr", inv->p.t));
    S_PACK(s_pack_ku64(&pk, "m", inv->p.m));
    S_PACK(s_pack_kf64(&pk, "clip", inv->p.clip));
    S_PACK(s_pack_ku64(&pk, "s", (uint64_t)inv->p.scale_bits));
    S_PACK(s_pack_ku64(&pk, "mv", inv->version));
    if (inv->round)
        S_PACK(s_pack_ku64(&pk, "round", inv->round));
    S_PACK(s_pack_kstr(&pk, "trainer", inv->trainer));
    S_PACK(s_pack_ku64(&pk, "client", inv->client));
    S_PACK(s_pack_str(&pk, "dl"));
    S_PACK(msgpack_pack_array(&pk, 4));
    for (int j = 0; j < 4; j++)
        S_PACK(msgpack_pack_double(&pk, dls[j]));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_keys(const fm_sa_advertise_t *a, fm_wire_buf_t *out)
{
    FM_ASSERT(a && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(a->from))
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_KEYS, 2, a->cohort, a->from));
    S_PACK(s_pack_kbin(&pk, "cpk", a->c_pk, FM_SA_KEY_BYTES));
    S_PACK(s_pack_kbin(&pk, "spk", a->s_pk, FM_SA_KEY_BYTES));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_key_list(const fm_sa_key_list_t *kl, uint32_t to, fm_wire_buf_t *out)
{
    FM_ASSERT(kl && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(to) || kl->n > FM_SA_MAX_K || (kl->n && !kl->keys))
        return FM_EARG;
    for (uint32_t j = 0; j < kl->n; j++)
        if (!s_sa_idx_ok(kl->keys[j].index))
            return FM_EARG;
    if (s_buf_reserve(out, (size_t)kl->n * (4 + 2 * FM_SA_KEY_BYTES) + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_KEY_LIST, 3, kl->cohort, to));
    S_PACK(s_pack_kbin(&pk, "u1", NULL, 4 * (size_t)kl->n));
    for (uint32_t j = 0; j < kl->n; j++)
        S_PACK(s_pack_le32(&pk, kl->keys[j].index));
    S_PACK(s_pack_kbin(&pk, "cpk", NULL, FM_SA_KEY_BYTES * (size_t)kl->n));
    for (uint32_t j = 0; j < kl->n; j++)
        S_PACK(msgpack_pack_bin_body(&pk, kl->keys[j].c_pk, FM_SA_KEY_BYTES));
    S_PACK(s_pack_kbin(&pk, "spk", NULL, FM_SA_KEY_BYTES * (size_t)kl->n));
    for (uint32_t j = 0; j < kl->n; j++)
        S_PACK(msgpack_pack_bin_body(&pk, kl->keys[j].s_pk, FM_SA_KEY_BYTES));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

/* A list of boxes: key_idx (their peers' indices, a bin of LE uint32) and "boxes". */
static int s_pack_boxes(msgpack_packer *pk, const char *key_idx, const fm_sa_box_entry_t *b,
                        uint32_t n)
{
    int rc;
    if ((rc = s_pack_kbin(pk, key_idx, NULL, 4 * (size_t)n)) != 0)
        return rc;
    for (uint32_t j = 0; j < n; j++)
        if ((rc = s_pack_le32(pk, b[j].peer)) != 0)
            return rc;
    if ((rc = s_pack_kbin(pk, "boxes", NULL, FM_SA_BOX_BYTES * (size_t)n)) != 0)
        return rc;
    for (uint32_t j = 0; j < n; j++)
        if ((rc = msgpack_pack_bin_body(pk, b[j].box, FM_SA_BOX_BYTES)) != 0)
            return rc;
    return 0;
}

/* 1 if b[0..n) is a box list the wire allows (at most FM_SA_MAX_K - 1, peers indices). */
static bool s_sa_boxes_ok(const fm_sa_box_entry_t *b, uint32_t n)
{
    if (n > FM_SA_MAX_K - 1 || (n && !b))
        return false;
    for (uint32_t j = 0; j < n; j++)
        if (!s_sa_idx_ok(b[j].peer))
            return false;
    return true;
}

int fm_wire_encode_sa_shares(const fm_sa_shares_t *s, fm_wire_buf_t *out)
{
    FM_ASSERT(s && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(s->from) || !s_sa_boxes_ok(s->boxes, s->n))
        return FM_EARG;
    if (s_buf_reserve(out, (size_t)s->n * (4 + FM_SA_BOX_BYTES) + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_SHARES, 2, s->cohort, s->from));
    S_PACK(s_pack_boxes(&pk, "to", s->boxes, s->n));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_shares_fwd(const fm_sa_shares_fwd_t *s, fm_wire_buf_t *out)
{
    FM_ASSERT(s && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(s->to) || !s_sa_list_ok(s->u2, s->n_u2, FM_SA_MAX_K) ||
        !s_sa_boxes_ok(s->boxes, s->n))
        return FM_EARG;
    if (s_buf_reserve(out, (size_t)s->n * (4 + FM_SA_BOX_BYTES) + 4 * (size_t)s->n_u2 + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_SHARES_FWD, 3, s->cohort, s->to));
    S_PACK(s_pack_kbin(&pk, "u2", s->u2, 4 * (size_t)s->n_u2));
    S_PACK(s_pack_boxes(&pk, "from", s->boxes, s->n));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_masked(const fm_sa_masked_t *mk, fm_wire_buf_t *out)
{
    FM_ASSERT(mk && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(mk->from) || mk->m < 1 || mk->m > FM_SA_MAX_M || !mk->y)
        return FM_EARG;
    if (s_buf_reserve(out, 4 * (size_t)mk->m + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_MASKED, 2, mk->cohort, mk->from));
    S_PACK(s_pack_ku64(&pk, "m", mk->m));
    S_PACK(s_pack_kbin(&pk, "y", mk->y, 4 * (size_t)mk->m));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_unmask_req(const fm_sa_unmask_req_t *r, uint32_t to, fm_wire_buf_t *out)
{
    FM_ASSERT(r && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(to) || !s_sa_list_ok(r->u3, r->n_u3, FM_SA_MAX_K) ||
        !s_sa_list_ok(r->d, r->n_d, FM_SA_MAX_K) || r->n_u3 + r->n_d > FM_SA_MAX_K)
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_UNMASK_REQ, 2, r->cohort, to));
    S_PACK(s_pack_kbin(&pk, "u3", r->u3, 4 * (size_t)r->n_u3));
    S_PACK(s_pack_kbin(&pk, "d", r->d, 4 * (size_t)r->n_d));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_unmask_shares(const fm_sa_unmask_shares_t *s, fm_wire_buf_t *out)
{
    FM_ASSERT(s && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if (!s_sa_idx_ok(s->from) || s->n > FM_SA_MAX_K || (s->n && !s->shares))
        return FM_EARG;
    for (uint32_t j = 0; j < s->n; j++)
        if (!s_sa_idx_ok(s->shares[j].of) ||
            (s->shares[j].kind != FM_SA_SHARE_B && s->shares[j].kind != FM_SA_SHARE_RS))
            return FM_EARG;
    if (s_buf_reserve(out, (size_t)s->n * (5 + FM_SA_KEY_BYTES) + 96) != 0)
        return -ENOMEM;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, FM_WIRE_SA_UNMASK_SHARES, 3, s->cohort, s->from));
    S_PACK(s_pack_kbin(&pk, "of", NULL, 4 * (size_t)s->n));
    for (uint32_t j = 0; j < s->n; j++)
        S_PACK(s_pack_le32(&pk, s->shares[j].of));
    S_PACK(s_pack_kbin(&pk, "kind", NULL, s->n));
    for (uint32_t j = 0; j < s->n; j++)
        S_PACK(msgpack_pack_bin_body(&pk, &s->shares[j].kind, 1));
    S_PACK(s_pack_kbin(&pk, "shares", NULL, FM_SA_KEY_BYTES * (size_t)s->n));
    for (uint32_t j = 0; j < s->n; j++)
        S_PACK(msgpack_pack_bin_body(&pk, s->shares[j].share, FM_SA_KEY_BYTES));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

int fm_wire_encode_sa_end(fm_wire_type_t type, const fm_wire_sa_end_t *end, fm_wire_buf_t *out)
{
    FM_ASSERT(end && out);
    msgpack_packer pk;
    int rc = 0;
    out->len = 0;
    if ((type != FM_WIRE_SA_DONE && type != FM_WIRE_SA_ABORT) || !s_sa_idx_ok(end->to))
        return FM_EARG;
    msgpack_packer_init(&pk, out, s_buf_write);
    S_PACK(s_pack_sa_head(&pk, type, 0, end->cohort, end->to));
cleanup:
    if (rc)
        out->len = 0;
    return rc;
}

uint32_t fm_wire_cohort_at(const fm_wire_cohort_t *c, uint32_t i)
{
    FM_ASSERT(c && i < c->count);
    const unsigned char *p = (const unsigned char *)c->ids + 4 * (size_t)i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int fm_wire_id_new(uint8_t id[FM_WIRE_ID_LEN])
{
    FM_ASSERT(id);
    size_t got = 0;
    while (got < FM_WIRE_ID_LEN) {
        ssize_t n = getrandom(id + got, FM_WIRE_ID_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

/* ==== decoding ===============================================================================
 */

/* The reader: a cursor over one frame. */
typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
    const char *what; /* message type for error messages */
    fm_errmsg_t *e;
    unsigned version; /* the frame's "v" (pass 1) */
} s_rd_t;

typedef enum {
    S_NIL,
    S_BOOL,
    S_UINT,
    S_NINT,
    S_F32,
    S_F64,
    S_STR,
    S_BIN,
    S_EXT,
    S_ARRAY,
    S_MAP
} s_kind_t;

static const char *const s_kind_names[] = {
    "nil", "bool",  "integer", "negative integer", "float32", "float64", "str", "bin",
    "ext", "array", "map",
};

/* One msgpack header. For S_STR/S_BIN/S_EXT the payload ptr[0..n) is inside the frame and
 * the cursor is past it; for S_ARRAY/S_MAP, n entries follow (checked to fit). */
typedef struct {
    s_kind_t kind;
    uint64_t u; /* S_UINT, S_BOOL */
    int64_t i;  /* S_NINT */
    double f;   /* S_F32, S_F64 */
    uint64_t n; /* S_STR/S_BIN/S_EXT: bytes; S_ARRAY/S_MAP: entries */
    const uint8_t *ptr;
    size_t at; /* offset of the header byte */
} s_tok_t;

/* Record an error about `field` (may be "") of the current message; returns code. */
__attribute__((format(printf, 4, 5))) static int s_err(const s_rd_t *r, int code,
                                                       const char *field, const char *fmt, ...)
{
    if (!r->e)
        return code;
    char detail[224];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (field[0])
        return fm_errmsg_set(r->e, code, "%s: %s: %s", r->what, field, detail);
    return fm_errmsg_set(r->e, code, "%s: %s", r->what, detail);
}

/* Bytes left after the cursor. */
static size_t s_left(const s_rd_t *r) { return r->len - r->pos; }

/* Read an n-byte (1, 2, 4, 8) big-endian unsigned value at the cursor. */
static int s_be(s_rd_t *r, const char *field, size_t at, int n, uint64_t *v)
{
    if ((size_t)n > s_left(r))
        return s_err(r, FM_ETRUNC, field, "value at byte %zu needs %d more bytes, %zu left", at,
                     n, s_left(r));
    uint64_t x = 0;
    for (int k = 0; k < n; k++)
        x = x << 8 | r->p[r->pos + (size_t)k];
    r->pos += (size_t)n;
    *v = x;
    return 0;
}

/* The payload of a str/bin/ext of t->n bytes (after `skip` type bytes for ext). */
static int s_payload(s_rd_t *r, const char *field, s_tok_t *t, size_t skip)
{
    if (t->n > (uint64_t)s_left(r) || skip > s_left(r) - (size_t)t->n)
        return s_err(r, FM_ETRUNC, field,
                     "%s of %llu bytes at byte %zu runs past the end (%zu bytes left)",
                     s_kind_names[t->kind], (unsigned long long)t->n, t->at, s_left(r));
    t->ptr = r->p + r->pos + skip;
    r->pos += skip + (size_t)t->n;
    return 0;
}

/* An array/map count must fit in what is left: every value takes at least one byte. */
static int s_count(s_rd_t *r, const char *field, const s_tok_t *t)
{
    uint64_t min = t->kind == S_MAP ? 2 * t->n : t->n; /* n < 2^32: no overflow */
    if (min > (uint64_t)s_left(r))
        return s_err(r, FM_ETRUNC, field,
                     "%s of %llu entries at byte %zu cannot fit in the %zu bytes left",
                     s_kind_names[t->kind], (unsigned long long)t->n, t->at, s_left(r));
    return 0;
}

/* Read one msgpack header at the cursor into *t (the only function that reads input). */
static int s_next(s_rd_t *r, const char *field, s_tok_t *t)
{
    uint64_t v = 0;
    int rc, nb;
    memset(t, 0, sizeof *t);
    t->at = r->pos;
    if (s_left(r) == 0)
        return s_err(r, FM_ETRUNC, field, "value expected at byte %zu, message ends", r->pos);
    uint8_t c = r->p[r->pos++];
    if (c <= 0x7f) {
        t->kind = S_UINT;
        t->u = c;
        return 0;
    }
    if (c >= 0xe0) {
        t->kind = S_NINT;
        t->i = (int64_t)c - 256;
        return 0;
    }
    if (c <= 0x9f) { /* fixmap 0x80-0x8f, fixarray 0x90-0x9f */
        t->kind = c <= 0x8f ? S_MAP : S_ARRAY;
        t->n = c & 0x0f;
        return s_count(r, field, t);
    }
    if (c <= 0xbf) { /* fixstr */
        t->kind = S_STR;
        t->n = c & 0x1f;
        return s_payload(r, field, t, 0);
    }
    switch (c) {
    case 0xc0: t->kind = S_NIL; return 0;
    case 0xc2:
    case 0xc3:
        t->kind = S_BOOL;
        t->u = c & 1;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        t->kind = c <= 0xc6 ? S_BIN : S_STR;
        nb = 1 << (c <= 0xc6 ? c - 0xc4 : c - 0xd9);
        if ((rc = s_be(r, field, t->at, nb, &t->n)) != 0)
            return rc;
        return s_payload(r, field, t, 0);
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32: length, type byte, data */
        t->kind = S_EXT;
        if ((rc = s_be(r, field, t->at, 1 << (c - 0xc7), &t->n)) != 0)
            return rc;
        return s_payload(r, field, t, 1);
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: /* fixext 1/2/4/8/16 */
        t->kind = S_EXT;
        t->n = 1u << (c - 0xd4);
        return s_payload(r, field, t, 1);
    case 0xca: {
        float f;
        uint32_t u;
        if ((rc = s_be(r, field, t->at, 4, &v)) != 0)
            return rc;
        u = (uint32_t)v;
        memcpy(&f, &u, 4);
        t->kind = S_F32;
        t->f = f;
        return 0;
    }
    case 0xcb:
        if ((rc = s_be(r, field, t->at, 8, &v)) != 0)
            return rc;
        memcpy(&t->f, &v, 8);
        t->kind = S_F64;
        return 0;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: /* uint 8/16/32/64 */
        if ((rc = s_be(r, field, t->at, 1 << (c - 0xcc), &t->u)) != 0)
            return rc;
        t->kind = S_UINT;
        return 0;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: { /* int 8/16/32/64: sign-extend */
        nb = 1 << (c - 0xd0);
        if ((rc = s_be(r, field, t->at, nb, &v)) != 0)
            return rc;
        uint64_t mask = nb == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * nb)) - 1;
        if (v >> (8 * nb - 1)) { /* negative: -(~v & mask) - 1 never overflows */
            t->kind = S_NINT;
            t->i = -(int64_t)(~v & mask) - 1;
        } else {
            t->kind = S_UINT;
            t->u = v;
        }
        return 0;
    }
    case 0xdc:
    case 0xdd: /* array 16/32 */
    case 0xde:
    case 0xdf: /* map 16/32 */
        t->kind = c <= 0xdd ? S_ARRAY : S_MAP;
        if ((rc = s_be(r, field, t->at, (c & 1) ? 4 : 2, &t->n)) != 0)
            return rc;
        return s_count(r, field, t);
    default: /* 0xc1 */
        return s_err(r, FM_EFORMAT, field, "invalid msgpack byte 0x%02x at byte %zu", c, t->at);
    }
}

/* Skip one value at nesting level `level` (the top map is level 1). Bounded recursion:
 * a value deeper than FM_WIRE_MAX_DEPTH is an error. */
static int s_skip(s_rd_t *r, const char *field, int level)
{
    s_tok_t t;
    int rc;
    if (level > FM_WIRE_MAX_DEPTH)
        return s_err(r, FM_ERANGE, field, "value at byte %zu nested deeper than %d levels",
                     r->pos, FM_WIRE_MAX_DEPTH);
    if ((rc = s_next(r, field, &t)) != 0)
        return rc;
    if (t.kind != S_ARRAY && t.kind != S_MAP)
        return 0;
    uint64_t n = t.kind == S_MAP ? 2 * t.n : t.n;
    for (uint64_t k = 0; k < n; k++)
        if ((rc = s_skip(r, field, level + 1)) != 0)
            return rc;
    return 0;
}

static int s_wrong_type(const s_rd_t *r, const char *field, const s_tok_t *t, const char *want)
{
    return s_err(r, FM_EFORMAT, field, "expected %s, got %s at byte %zu", want,
                 s_kind_names[t->kind], t->at);
}

/* A map key: must be a str. */
static int s_key(s_rd_t *r, const char *field, uint32_t k, s_tok_t *t)
{
    int rc = s_next(r, field, t);
    if (rc == 0 && t->kind != S_STR)
        return s_err(r, FM_EFORMAT, field, "key #%u at byte %zu is not a string (%s)", k, t->at,
                     s_kind_names[t->kind]);
    return rc;
}

static bool s_key_is(const s_tok_t *t, const char *name)
{
    size_t n = strlen(name);
    return t->n == n && memcmp(t->ptr, name, n) == 0;
}

/* Unsigned integer in [0, max]. */
static int s_read_uint(s_rd_t *r, const char *field, uint64_t max, uint64_t *out)
{
    s_tok_t t;
    int rc = s_next(r, field, &t);
    if (rc)
        return rc;
    if (t.kind == S_NINT)
        return s_err(r, FM_ERANGE, field, "negative value %lld", (long long)t.i);
    if (t.kind != S_UINT)
        return s_wrong_type(r, field, &t, "an unsigned integer");
    if (t.u > max)
        return s_err(r, FM_ERANGE, field, "value %llu exceeds %llu", (unsigned long long)t.u,
                     (unsigned long long)max);
    *out = t.u;
    return 0;
}

/* Any number (float32, float64 or integer) as a double. */
static int s_read_num(s_rd_t *r, const char *field, double *out)
{
    s_tok_t t;
    int rc = s_next(r, field, &t);
    if (rc)
        return rc;
    switch (t.kind) {
    case S_F32:
    case S_F64: *out = t.f; return 0;
    case S_UINT: *out = (double)t.u; return 0;
    case S_NINT: *out = (double)t.i; return 0;
    default: return s_wrong_type(r, field, &t, "a number");
    }
}

/* A str of at most `cap` bytes of text class `cls`, copied NUL-terminated into
 * dst[cap + 1]. */
static int s_read_str(s_rd_t *r, const char *field, char *dst, size_t cap, bool nonempty,
                      fm_wire_text_t cls)
{
    s_tok_t t;
    int rc = s_next(r, field, &t);
    if (rc)
        return rc;
    if (t.kind != S_STR)
        return s_wrong_type(r, field, &t, "a string");
    if (t.n > cap)
        return s_err(r, FM_ERANGE, field, "string of %llu bytes, at most %zu allowed",
                     (unsigned long long)t.n, cap);
    if (t.n == 0 && nonempty)
        return s_err(r, FM_EFORMAT, field, "empty string");
    if (memchr(t.ptr, 0, (size_t)t.n))
        return s_err(r, FM_EFORMAT, field, "string contains a NUL byte");
    size_t bad = fm_wire_text_check(cls, (const char *)t.ptr, (size_t)t.n);
    if (bad < t.n)
        return s_err(r, FM_EFORMAT, field, "byte 0x%02x at offset %zu is not allowed in %s",
                     t.ptr[bad], bad, s_text_what(cls));
    memcpy(dst, t.ptr, (size_t)t.n);
    dst[t.n] = '\0';
    return 0;
}

/* Pass 1: the whole frame is one well-formed map with string keys and nothing after it;
 * then "v" is FM_WIRE_VERSION and "t" a known type, returned in *type. */
static int s_frame(s_rd_t *r, fm_wire_type_t *type)
{
    s_tok_t t, k;
    size_t v_at = 0, t_at = 0;
    bool has_v = false, has_t = false;
    char shown[S_SHOWN + 8];
    int rc;
    r->pos = 0;
    if (r->len == 0)
        return s_err(r, FM_ETRUNC, "", "empty message");
    if ((rc = s_next(r, "", &t)) != 0)
        return rc;
    if (t.kind != S_MAP)
        return s_err(r, FM_EFORMAT, "", "not a msgpack map (first byte 0x%02x)", r->p[0]);
    for (uint32_t i = 0; i < t.n; i++) {
        if ((rc = s_key(r, "", i, &k)) != 0)
            return rc;
        s_printable(shown, sizeof shown, k.ptr, (size_t)k.n);
        bool is_v = s_key_is(&k, "v"), is_t = s_key_is(&k, "t");
        if ((is_v && has_v) || (is_t && has_t))
            return s_err(r, FM_EFORMAT, shown, "duplicate key");
        if (is_v) {
            has_v = true;
            v_at = r->pos;
        } else if (is_t) {
            has_t = true;
            t_at = r->pos;
        }
        if ((rc = s_skip(r, shown, 2)) != 0)
            return rc;
    }
    if (r->pos != r->len)
        return s_err(r, FM_EFORMAT, "", "%zu trailing bytes after the map (at byte %zu)",
                     r->len - r->pos, r->pos);
    if (!has_v)
        return s_err(r, FM_EFORMAT, "v", "missing key (protocol version)");
    r->pos = v_at;
    if ((rc = s_next(r, "v", &t)) != 0)
        return rc;
    if (t.kind != S_UINT && t.kind != S_NINT)
        return s_wrong_type(r, "v", &t, "an integer");
    if (t.kind == S_NINT || t.u < FM_WIRE_VERSION || t.u > FM_WIRE_VERSION_MAX)
        return s_err(r, FM_EVERSION, "v", "protocol version %lld, this build speaks %d and %d",
                     t.kind == S_NINT ? (long long)t.i : (long long)t.u, FM_WIRE_VERSION,
                     FM_WIRE_VERSION_MAX);
    r->version = (unsigned)t.u;
    if (!has_t)
        return s_err(r, FM_EFORMAT, "t", "missing key (message type)");
    r->pos = t_at;
    if ((rc = s_next(r, "t", &t)) != 0)
        return rc;
    if (t.kind != S_STR)
        return s_wrong_type(r, "t", &t, "a string");
    for (int ty = FM_WIRE_NONE + 1; ty < FM_WIRE_NTYPES; ty++)
        if (s_key_is(&t, s_type_names[ty])) {
            *type = (fm_wire_type_t)ty;
            return 0;
        }
    return s_err(r, FM_EFORMAT, "t", "unknown message type '%s'",
                 s_printable(shown, sizeof shown, t.ptr, (size_t)t.n));
}

/* ---- pass 2: fields --------------------------------------------------------------------- */

typedef enum {
    S_F_U32,
    S_F_U64,
    S_F_F64,
    S_F_STR,
    S_F_ID,
    S_F_CLASSES,
    S_F_TENSORS,
    S_F_COHORT,
    S_F_STATUS,
    S_F_IDS,
    S_F_NZ64,
    S_F_BIN, /* any bin, as an s_bin_t (its size is checked after all fields are read) */
    S_F_DL   /* an array of exactly 4 numbers, as double[4] */
} s_fkind_t;

/* A bin's payload, inside the frame. */
typedef struct {
    const uint8_t *p;
    uint64_t n;
} s_bin_t;

#define S_NONEMPTY 1u /* a string field that must not be empty */
#define S_ID 2u       /* a string field of text class FM_WIRE_TEXT_ID (else _NAME) */
#define S_BIT(type) ((uint32_t)1 << (type))
#define S_MEMBER_TYPES (S_BIT(FM_WIRE_HELLO) | S_BIT(FM_WIRE_HEARTBEAT) | S_BIT(FM_WIRE_BYE))

/* One known key of a message: where it goes in the output struct and in which message
 * types it is mandatory (bitmask of S_BIT(type)). */
typedef struct {
    const char *key;
    s_fkind_t kind;
    unsigned flags;
    uint32_t required;
    size_t off;
} s_field_t;

static const s_field_t s_model_fields[] = {
    {"mv", S_F_U64, 0, S_BIT(FM_WIRE_MODEL), offsetof(fm_wire_model_t, version)},
    {"model", S_F_STR, S_NONEMPTY, S_BIT(FM_WIRE_MODEL), offsetof(fm_wire_model_t, model)},
    {"ts", S_F_F64, 0, S_BIT(FM_WIRE_MODEL), offsetof(fm_wire_model_t, created)},
    {"tensors", S_F_TENSORS, 0, S_BIT(FM_WIRE_MODEL), 0},
    {"round", S_F_U64, 0, 0, offsetof(fm_wire_model_t, round)},
    {"cohort", S_F_COHORT, 0, 0, offsetof(fm_wire_model_t, cohort)},
    {"mu", S_F_F64, 0, 0, offsetof(fm_wire_model_t, mu)},
    {"q", S_F_F64, 0, 0, offsetof(fm_wire_model_t, sample_rate)},
    {"applied", S_F_U64, 0, 0, offsetof(fm_wire_model_t, applied)},
    {"ups", S_F_F64, 0, 0, offsetof(fm_wire_model_t, updates_per_s)},
    {"boot", S_F_U64, 0, 0, offsetof(fm_wire_model_t, boot)},
    {"eps", S_F_F64, 0, 0, offsetof(fm_wire_model_t, epsilon)},
    {"delta", S_F_F64, 0, 0, offsetof(fm_wire_model_t, delta)},
    {"sadone", S_F_U64, 0, 0, offsetof(fm_wire_model_t, sa_completed)},
    {"saabort", S_F_U64, 0, 0, offsetof(fm_wire_model_t, sa_aborted)},
    {"sadrop", S_F_U64, 0, 0, offsetof(fm_wire_model_t, sa_dropped)},
};

static const s_field_t s_update_fields[] = {
    {"id", S_F_ID, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, id)},
    {"trainer", S_F_STR, S_NONEMPTY | S_ID, S_BIT(FM_WIRE_UPDATE),
     offsetof(fm_wire_update_t, trainer)},
    {"client", S_F_U32, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, client)},
    {"base", S_F_U64, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, base)},
    {"n", S_F_U64, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, num_samples)},
    {"steps", S_F_U64, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, local_steps)},
    {"loss", S_F_F64, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, train_loss)},
    {"secs", S_F_F64, 0, S_BIT(FM_WIRE_UPDATE), offsetof(fm_wire_update_t, train_seconds)},
    {"model", S_F_STR, 0, 0, offsetof(fm_wire_update_t, model)}, /* optional: "" if absent */
    {"tensors", S_F_TENSORS, 0, S_BIT(FM_WIRE_UPDATE), 0},
    {"round", S_F_U64, 0, 0, offsetof(fm_wire_update_t, round)},
    {"ts", S_F_F64, 0, 0, offsetof(fm_wire_update_t, sent_at)},
    {"wait", S_F_F64, 0, 0, offsetof(fm_wire_update_t, idle_before)},
};

static const s_field_t s_member_fields[] = {
    {"trainer", S_F_STR, S_NONEMPTY | S_ID, S_MEMBER_TYPES, offsetof(fm_wire_member_t, trainer)},
    {"pid", S_F_U32, 0, S_MEMBER_TYPES, offsetof(fm_wire_member_t, pid)},
    {"cfirst", S_F_U32, 0, S_MEMBER_TYPES, offsetof(fm_wire_member_t, client_first)},
    {"ccount", S_F_U32, 0, S_MEMBER_TYPES, offsetof(fm_wire_member_t, client_count)},
    {"workers", S_F_U32, 0, S_MEMBER_TYPES, offsetof(fm_wire_member_t, workers)},
    {"seq", S_F_U64, 0, S_MEMBER_TYPES, offsetof(fm_wire_member_t, seq)},
    {"sent", S_F_U64, 0, S_BIT(FM_WIRE_HEARTBEAT), offsetof(fm_wire_member_t, updates_sent)},
    {"busy", S_F_U32, 0, S_BIT(FM_WIRE_HEARTBEAT), offsetof(fm_wire_member_t, busy)},
};

static const s_field_t s_snapshot_fields[] = {
    {"from", S_F_STR, S_NONEMPTY | S_ID, S_BIT(FM_WIRE_SNAPSHOT_REQ),
     offsetof(fm_wire_snapshot_req_t, from)},
    {"have", S_F_U64, 0, 0, offsetof(fm_wire_snapshot_req_t, have)},
};

static const s_field_t s_metrics_fields[] = {
    {"mv", S_F_U64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, version)},
    {"model", S_F_STR, S_NONEMPTY, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, model)},
    {"acc", S_F_F64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, accuracy)},
    {"loss", S_F_F64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, loss)},
    {"cacc", S_F_CLASSES, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, class_acc)},
    {"n", S_F_U64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, num_samples)},
    {"secs", S_F_F64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, eval_seconds)},
    {"ts", S_F_F64, 0, S_BIT(FM_WIRE_METRICS), offsetof(fm_wire_metrics_t, timestamp)},
    {"pc", S_F_U32, 0, 0, offsetof(fm_wire_metrics_t, pop_clients)},
    {"pmean", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_mean)},
    {"pmin", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_min)},
    {"pworst", S_F_U32, 0, 0, offsetof(fm_wire_metrics_t, pop_worst)},
    {"pp10", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_p10)},
    {"pthr", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_threshold)},
    {"pbelow", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_below)},
    {"psecs", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, pop_seconds)},
    {"applied", S_F_U64, 0, 0, offsetof(fm_wire_metrics_t, applied)},
    {"ups", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, updates_per_s)},
    {"eps", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, epsilon)},
    {"delta", S_F_F64, 0, 0, offsetof(fm_wire_metrics_t, delta)},
    {"sadone", S_F_U64, 0, 0, offsetof(fm_wire_metrics_t, sa_completed)},
    {"saabort", S_F_U64, 0, 0, offsetof(fm_wire_metrics_t, sa_aborted)},
    {"sadrop", S_F_U64, 0, 0, offsetof(fm_wire_metrics_t, sa_dropped)},
};

static const s_field_t s_ack_fields[] = {
    {"boot", S_F_NZ64, 0, S_BIT(FM_WIRE_ACK), offsetof(fm_wire_ack_t, boot)},
    {"mv", S_F_U64, 0, S_BIT(FM_WIRE_ACK), offsetof(fm_wire_ack_t, version)},
    {"status", S_F_STATUS, S_NONEMPTY, S_BIT(FM_WIRE_ACK), offsetof(fm_wire_ack_t, status)},
    {"ids", S_F_IDS, 0, S_BIT(FM_WIRE_ACK), offsetof(fm_wire_ack_t, ids)},
};

static const s_field_t s_decline_fields[] = {
    {"trainer", S_F_STR, S_NONEMPTY | S_ID, S_BIT(FM_WIRE_DECLINE),
     offsetof(fm_wire_decline_t, trainer)},
    {"clients", S_F_COHORT, 0, S_BIT(FM_WIRE_DECLINE), offsetof(fm_wire_decline_t, clients)},
    {"base", S_F_U64, 0, S_BIT(FM_WIRE_DECLINE), offsetof(fm_wire_decline_t, base)},
    {"round", S_F_NZ64, 0, S_BIT(FM_WIRE_DECLINE), offsetof(fm_wire_decline_t, round)},
};

/* The keys of the secure-aggregation messages, decoded into one raw struct whose sizes and
 * ranges are checked afterwards (s_sa_*) and copied into the caller's struct. */
typedef struct {
    uint64_t cohort, version, round;
    uint32_t i, k, thr, m, s, client;
    double clip;
    double dl[4];
    char trainer[FM_WIRE_STR_MAX + 1];
    s_bin_t cpk, spk, l1, l2, boxes, kind, shares, y;
} s_sa_raw_t;

#define S_SA_HEAD(type)                                                                          \
    {"cohort", S_F_U64, 0, S_BIT(type), offsetof(s_sa_raw_t, cohort)},                           \
    {                                                                                            \
        "i", S_F_U32, 0, S_BIT(type), offsetof(s_sa_raw_t, i)                                    \
    }
#define S_SA_BIN(key, type, member)                                                              \
    {                                                                                            \
        key, S_F_BIN, 0, S_BIT(type), offsetof(s_sa_raw_t, member)                               \
    }

static const s_field_t s_sa_invite_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_INVITE),
    {"k", S_F_U32, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, k)},
    {"thr", S_F_U32, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, thr)},
    {"m", S_F_U32, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, m)},
    {"clip", S_F_F64, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, clip)},
    {"s", S_F_U32, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, s)},
    {"mv", S_F_U64, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, version)},
    {"round", S_F_U64, 0, 0, offsetof(s_sa_raw_t, round)},
    {"trainer", S_F_STR, S_NONEMPTY | S_ID, S_BIT(FM_WIRE_SA_INVITE),
     offsetof(s_sa_raw_t, trainer)},
    {"client", S_F_U32, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, client)},
    {"dl", S_F_DL, 0, S_BIT(FM_WIRE_SA_INVITE), offsetof(s_sa_raw_t, dl)},
};
static const s_field_t s_sa_keys_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_KEYS),
    S_SA_BIN("cpk", FM_WIRE_SA_KEYS, cpk),
    S_SA_BIN("spk", FM_WIRE_SA_KEYS, spk),
};
static const s_field_t s_sa_key_list_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_KEY_LIST),
    S_SA_BIN("u1", FM_WIRE_SA_KEY_LIST, l1),
    S_SA_BIN("cpk", FM_WIRE_SA_KEY_LIST, cpk),
    S_SA_BIN("spk", FM_WIRE_SA_KEY_LIST, spk),
};
static const s_field_t s_sa_shares_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_SHARES),
    S_SA_BIN("to", FM_WIRE_SA_SHARES, l1),
    S_SA_BIN("boxes", FM_WIRE_SA_SHARES, boxes),
};
static const s_field_t s_sa_shares_fwd_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_SHARES_FWD),
    S_SA_BIN("u2", FM_WIRE_SA_SHARES_FWD, l1),
    S_SA_BIN("from", FM_WIRE_SA_SHARES_FWD, l2),
    S_SA_BIN("boxes", FM_WIRE_SA_SHARES_FWD, boxes),
};
static const s_field_t s_sa_masked_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_MASKED),
    {"m", S_F_U32, 0, S_BIT(FM_WIRE_SA_MASKED), offsetof(s_sa_raw_t, m)},
    S_SA_BIN("y", FM_WIRE_SA_MASKED, y),
};
static const s_field_t s_sa_unmask_req_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_UNMASK_REQ),
    S_SA_BIN("u3", FM_WIRE_SA_UNMASK_REQ, l1),
    S_SA_BIN("d", FM_WIRE_SA_UNMASK_REQ, l2),
};
static const s_field_t s_sa_unmask_shares_fields[] = {
    S_SA_HEAD(FM_WIRE_SA_UNMASK_SHARES),
    S_SA_BIN("of", FM_WIRE_SA_UNMASK_SHARES, l1),
    S_SA_BIN("kind", FM_WIRE_SA_UNMASK_SHARES, kind),
    S_SA_BIN("shares", FM_WIRE_SA_UNMASK_SHARES, shares),
};
#define S_SA_END_TYPES (S_BIT(FM_WIRE_SA_DONE) | S_BIT(FM_WIRE_SA_ABORT))
static const s_field_t s_sa_end_fields[] = {
    {"cohort", S_F_U64, 0, S_SA_END_TYPES, offsetof(s_sa_raw_t, cohort)},
    {"i", S_F_U32, 0, S_SA_END_TYPES, offsetof(s_sa_raw_t, i)},
};

#define S_NFIELDS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* One element of "tensors" (a map at level 3) into *x. */
static int s_read_tensor(s_rd_t *r, int i, fm_wire_tensor_t *x)
{
    /* the first 4 are mandatory; "scale", "idx", "comp": tensor encodings (§2.1.2) */
    static const char *const keys[7] = {"name", "dtype", "shape", "data", "scale", "idx", "comp"};
    char path[32], field[48], comp[FM_WIRE_DTYPE_MAX + 1] = "";
    s_tok_t t, k, v;
    bool seen[7] = {false};
    int rc;
    snprintf(path, sizeof path, "tensors[%d]", i);
    memset(x, 0, sizeof *x);
    if ((rc = s_next(r, path, &t)) != 0)
        return rc;
    if (t.kind != S_MAP)
        return s_wrong_type(r, path, &t, "a map");
    for (uint32_t j = 0; j < t.n; j++) {
        if ((rc = s_key(r, path, j, &k)) != 0)
            return rc;
        int w = 0;
        while (w < 7 && !s_key_is(&k, keys[w]))
            w++;
        if (w == 7) { /* unknown key: skip its value */
            if ((rc = s_skip(r, path, 4)) != 0)
                return rc;
            continue;
        }
        snprintf(field, sizeof field, "%s.%s", path, keys[w]);
        if (seen[w])
            return s_err(r, FM_EFORMAT, field, "duplicate key");
        seen[w] = true;
        if (w == 0)
            rc = s_read_str(r, field, x->name, FM_WIRE_STR_MAX, true, FM_WIRE_TEXT_NAME);
        else if (w == 1)
            rc = s_read_str(r, field, x->dtype, FM_WIRE_DTYPE_MAX, true, FM_WIRE_TEXT_NAME);
        else if (w == 2) {
            if ((rc = s_next(r, field, &v)) != 0)
                return rc;
            if (v.kind != S_ARRAY)
                return s_wrong_type(r, field, &v, "an array");
            if (v.n > FM_WIRE_MAX_DIMS)
                return s_err(r, FM_ERANGE, field, "%llu dims, at most %d allowed",
                             (unsigned long long)v.n, FM_WIRE_MAX_DIMS);
            x->ndim = (int)v.n;
            for (int d = 0; d < x->ndim && rc == 0; d++)
                rc = s_read_uint(r, field, UINT64_MAX, &x->shape[d]);
        } else if (w == 4)
            rc = s_read_num(r, field, &x->enc.scale);
        else if (w == 6) {
            if ((rc = s_read_str(r, field, comp, FM_WIRE_DTYPE_MAX, true, FM_WIRE_TEXT_NAME)) ==
                    0 &&
                strcmp(comp, "zstd") != 0)
                return s_err(r, FM_EFORMAT, field, "'%s': the only compression is zstd", comp);
        } else {
            if ((rc = s_next(r, field, &v)) != 0)
                return rc;
            if (v.kind != S_BIN)
                return s_wrong_type(r, field, &v, "a bin");
            if (w == 3) {
                x->data = v.ptr;
                x->nbytes = (size_t)v.n;
            } else {
                x->enc.idx = v.ptr;
                x->enc.idx_nbytes = (size_t)v.n;
            }
        }
        if (rc)
            return rc;
    }
    for (int w = 0; w < 4; w++)
        if (!seen[w])
            return s_err(r, FM_EFORMAT, path, "missing key '%s'", keys[w]);
    if (fm_dtype_parse(x->dtype, &x->enc.dtype) != 0)
        x->enc.dtype = FM_DT_COUNT; /* fm_wire_tensors_check names it */
    x->enc.data = x->data;
    x->enc.nbytes = x->nbytes;
    x->enc.sparse = seen[5];
    x->enc.zstd = seen[6];
    x->has_scale = seen[4];
    return 0;
}

/* "tensors": an array of at most FM_WIRE_MAX_TENSORS tensor maps. */
static int s_read_tensors(s_rd_t *r, fm_wire_tensors_t *ts)
{
    s_tok_t t;
    int rc = s_next(r, "tensors", &t);
    if (rc)
        return rc;
    if (t.kind != S_ARRAY)
        return s_wrong_type(r, "tensors", &t, "an array");
    if (t.n > FM_WIRE_MAX_TENSORS)
        return s_err(r, FM_ERANGE, "tensors", "%llu tensors, at most %d allowed",
                     (unsigned long long)t.n, FM_WIRE_MAX_TENSORS);
    for (int i = 0; i < (int)t.n; i++)
        if ((rc = s_read_tensor(r, i, &ts->t[i])) != 0)
            return rc;
    ts->count = (int)t.n;
    return 0;
}

/* The value of known field f into out (+ f->off) or ts. */
static int s_read_field(s_rd_t *r, const s_field_t *f, void *out, fm_wire_tensors_t *ts)
{
    char *dst = (char *)out + f->off;
    uint64_t u = 0;
    double x = 0.0;
    s_tok_t t;
    int rc = 0;
    switch (f->kind) {
    case S_F_U32:
        if ((rc = s_read_uint(r, f->key, UINT32_MAX, &u)) == 0) {
            uint32_t u32 = (uint32_t)u;
            memcpy(dst, &u32, sizeof u32);
        }
        return rc;
    case S_F_U64:
    case S_F_NZ64:
        if ((rc = s_read_uint(r, f->key, UINT64_MAX, &u)) != 0)
            return rc;
        if (f->kind == S_F_NZ64 && u == 0)
            return s_err(r, FM_ERANGE, f->key, "0, must be non-zero");
        memcpy(dst, &u, sizeof u);
        return 0;
    case S_F_STATUS:
        return s_read_str(r, f->key, dst, FM_WIRE_STATUS_MAX, true, FM_WIRE_TEXT_NAME);
    case S_F_IDS: {
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_BIN)
            return s_wrong_type(r, f->key, &t, "a bin");
        if (t.n == 0 || t.n % FM_WIRE_ID_LEN != 0)
            return s_err(r, FM_EFORMAT, f->key,
                         "bin of %llu bytes, not a positive multiple of %d",
                         (unsigned long long)t.n, FM_WIRE_ID_LEN);
        if (t.n / FM_WIRE_ID_LEN > FM_WIRE_MAX_ACK_IDS)
            return s_err(r, FM_ERANGE, f->key, "%llu ids, at most %u allowed",
                         (unsigned long long)(t.n / FM_WIRE_ID_LEN), FM_WIRE_MAX_ACK_IDS);
        fm_wire_ack_t *a = (fm_wire_ack_t *)out;
        a->ids = t.ptr;
        a->count = (uint32_t)(t.n / FM_WIRE_ID_LEN);
        return 0;
    }
    case S_F_F64:
        if ((rc = s_read_num(r, f->key, &x)) == 0)
            memcpy(dst, &x, sizeof x);
        return rc;
    case S_F_STR:
        return s_read_str(r, f->key, dst, FM_WIRE_STR_MAX, (f->flags & S_NONEMPTY) != 0,
                          (f->flags & S_ID) ? FM_WIRE_TEXT_ID : FM_WIRE_TEXT_NAME);
    case S_F_ID:
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_BIN)
            return s_wrong_type(r, f->key, &t, "a bin");
        if (t.n != FM_WIRE_ID_LEN)
            return s_err(r, FM_EFORMAT, f->key, "bin of %llu bytes, expected %d",
                         (unsigned long long)t.n, FM_WIRE_ID_LEN);
        memcpy(dst, t.ptr, FM_WIRE_ID_LEN);
        return 0;
    case S_F_CLASSES:
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_ARRAY)
            return s_wrong_type(r, f->key, &t, "an array");
        if (t.n != FM_NCLASSES)
            return s_err(r, FM_EFORMAT, f->key, "%llu entries, expected %d",
                         (unsigned long long)t.n, FM_NCLASSES);
        for (int i = 0; i < FM_NCLASSES; i++) {
            if ((rc = s_read_num(r, f->key, &x)) != 0)
                return rc;
            memcpy(dst + i * sizeof(double), &x, sizeof x);
        }
        return 0;
    case S_F_TENSORS: return s_read_tensors(r, ts);
    case S_F_BIN: {
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_BIN)
            return s_wrong_type(r, f->key, &t, "a bin");
        s_bin_t b = {.p = t.ptr, .n = t.n};
        memcpy(dst, &b, sizeof b);
        return 0;
    }
    case S_F_DL:
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_ARRAY)
            return s_wrong_type(r, f->key, &t, "an array");
        if (t.n != 4)
            return s_err(r, FM_EFORMAT, f->key, "%llu entries, expected 4",
                         (unsigned long long)t.n);
        for (int i = 0; i < 4; i++) {
            if ((rc = s_read_num(r, f->key, &x)) != 0)
                return rc;
            memcpy(dst + i * sizeof(double), &x, sizeof x);
        }
        return 0;
    case S_F_COHORT: {
        if ((rc = s_next(r, f->key, &t)) != 0)
            return rc;
        if (t.kind != S_BIN)
            return s_wrong_type(r, f->key, &t, "a bin");
        if (t.n % 4 != 0)
            return s_err(r, FM_EFORMAT, f->key, "bin of %llu bytes, not a multiple of 4",
                         (unsigned long long)t.n);
        if (t.n / 4 > FM_WIRE_MAX_COHORT)
            return s_err(r, FM_ERANGE, f->key, "%llu client ids, at most %u allowed",
                         (unsigned long long)(t.n / 4), FM_WIRE_MAX_COHORT);
        fm_wire_cohort_t c = {.present = 1, .ids = t.ptr, .count = (uint32_t)(t.n / 4)};
        memcpy(dst, &c, sizeof c);
        return 0;
    }
    }
    return FM_EFORMAT; /* not reached */
}

/* Pass 2: decode the fields of a message of type `type` (pass 1 succeeded). */
static int s_fields(s_rd_t *r, fm_wire_type_t type, const s_field_t *fields, int nfields,
                    void *out, fm_wire_tensors_t *ts)
{
    s_tok_t t, k;
    uint32_t seen = 0;
    int rc;
    FM_ASSERT(nfields <= 32);
    r->pos = 0;
    if ((rc = s_next(r, "", &t)) != 0)
        return rc;
    for (uint32_t i = 0; i < t.n; i++) {
        if ((rc = s_key(r, "", i, &k)) != 0)
            return rc;
        int w = 0;
        while (w < nfields && !s_key_is(&k, fields[w].key))
            w++;
        if (w == nfields) { /* "v", "t" (pass 1) or unknown: skip */
            if ((rc = s_skip(r, "", 2)) != 0)
                return rc;
            continue;
        }
        if (seen & (1u << w))
            return s_err(r, FM_EFORMAT, fields[w].key, "duplicate key");
        seen |= 1u << w;
        if ((rc = s_read_field(r, &fields[w], out, ts)) != 0)
            return rc;
    }
    for (int w = 0; w < nfields; w++)
        if ((fields[w].required & S_BIT(type)) && !(seen & (1u << w)))
            return s_err(r, FM_EFORMAT, fields[w].key, "missing key");
    return 0;
}

/* Decode a message whose type is in the `accept` bitmask: framing, version, type, fields.
 * `what` names the expected type(s) in errors found before "t" is known. */
static int s_decode(const void *buf, size_t len, uint32_t accept, const char *what,
                    const s_field_t *fields, int nfields, void *out, size_t outsize,
                    fm_wire_tensors_t *ts, fm_wire_type_t *type, fm_errmsg_t *e)
{
    s_rd_t r = {.p = buf, .len = len, .pos = 0, .what = what, .e = e};
    fm_wire_type_t ty = FM_WIRE_NONE;
    int rc;
    FM_ASSERT(buf || len == 0);
    if (out)
        memset(out, 0, outsize);
    if (ts)
        ts->count = 0;
    if ((rc = s_frame(&r, &ty)) != 0)
        return rc;
    if (ts)
        ts->version = r.version;
    if (!(accept & S_BIT(ty)))
        return s_err(&r, FM_EFORMAT, "t", "message type %s, expected %s", fm_wire_type_name(ty),
                     what);
    r.what = fm_wire_type_name(ty);
    if (nfields > 0 && (rc = s_fields(&r, ty, fields, nfields, out, ts)) != 0)
        return rc;
    if (type)
        *type = ty;
    return 0;
}

int fm_wire_peek(const void *buf, size_t len, fm_wire_type_t *type, fm_errmsg_t *e)
{
    FM_ASSERT(type);
    *type = FM_WIRE_NONE;
    return s_decode(buf, len, UINT32_MAX, "message", NULL, 0, NULL, 0, NULL, type, e);
}

int fm_wire_decode_model(const void *buf, size_t len, fm_wire_model_t *hdr,
                         fm_wire_tensors_t *tensors, fm_errmsg_t *e)
{
    FM_ASSERT(hdr && tensors);
    return s_decode(buf, len, S_BIT(FM_WIRE_MODEL), "MODEL", s_model_fields,
                    S_NFIELDS(s_model_fields), hdr, sizeof *hdr, tensors, NULL, e);
}

int fm_wire_decode_update(const void *buf, size_t len, fm_wire_update_t *hdr,
                          fm_wire_tensors_t *tensors, fm_errmsg_t *e)
{
    FM_ASSERT(hdr && tensors);
    return s_decode(buf, len, S_BIT(FM_WIRE_UPDATE), "UPDATE", s_update_fields,
                    S_NFIELDS(s_update_fields), hdr, sizeof *hdr, tensors, NULL, e);
}

int fm_wire_decode_member(const void *buf, size_t len, fm_wire_type_t *type, fm_wire_member_t *m,
                          fm_errmsg_t *e)
{
    FM_ASSERT(type && m);
    *type = FM_WIRE_NONE;
    return s_decode(buf, len, S_MEMBER_TYPES, "HELLO/HEARTBEAT/BYE", s_member_fields,
                    S_NFIELDS(s_member_fields), m, sizeof *m, NULL, type, e);
}

int fm_wire_decode_snapshot_req(const void *buf, size_t len, fm_wire_snapshot_req_t *r,
                                fm_errmsg_t *e)
{
    FM_ASSERT(r);
    return s_decode(buf, len, S_BIT(FM_WIRE_SNAPSHOT_REQ), "SNAPSHOT_REQ", s_snapshot_fields,
                    S_NFIELDS(s_snapshot_fields), r, sizeof *r, NULL, NULL, e);
}

int fm_wire_decode_ack(const void *buf, size_t len, fm_wire_ack_t *a, fm_errmsg_t *e)
{
    FM_ASSERT(a);
    return s_decode(buf, len, S_BIT(FM_WIRE_ACK), "ACK", s_ack_fields, S_NFIELDS(s_ack_fields), a,
                    sizeof *a, NULL, NULL, e);
}

int fm_wire_decode_decline(const void *buf, size_t len, fm_wire_decline_t *d, fm_errmsg_t *e)
{
    FM_ASSERT(d);
    int rc = s_decode(buf, len, S_BIT(FM_WIRE_DECLINE), "DECLINE", s_decline_fields,
                      S_NFIELDS(s_decline_fields), d, sizeof *d, NULL, NULL, e);
    if (rc == 0 && d->clients.count == 0)
        return fm_errmsg_set(e, FM_EFORMAT, "DECLINE: clients: empty, at least one id needed");
    return rc;
}

int fm_wire_decode_metrics(const void *buf, size_t len, fm_wire_metrics_t *m, fm_errmsg_t *e)
{
    FM_ASSERT(m);
    return s_decode(buf, len, S_BIT(FM_WIRE_METRICS), "METRICS", s_metrics_fields,
                    S_NFIELDS(s_metrics_fields), m, sizeof *m, NULL, NULL, e);
}

/* ---- secure aggregation: sizes and ranges after the fields are read --------------------- */

/* "i": a member index. */
static int s_sa_index(const char *ty, uint32_t i, fm_errmsg_t *e)
{
    if (!s_sa_idx_ok(i))
        return fm_errmsg_set(e, FM_ERANGE, "%s: i: index %u outside 1..%d", ty, i, FM_SA_MAX_K);
    return 0;
}

/* An index list: a bin of LE uint32, at most cap entries, each in 1..FM_SA_MAX_K, copied
 * into out[cap]; the count in *n. */
static int s_sa_list(const char *ty, const char *field, const s_bin_t *b, uint32_t cap,
                     uint32_t *out, uint32_t *n, fm_errmsg_t *e)
{
    if (b->n % 4 != 0)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: %s: bin of %llu bytes, not a multiple of 4", ty,
                             field, (unsigned long long)b->n);
    if (b->n / 4 > cap)
        return fm_errmsg_set(e, FM_ERANGE, "%s: %s: %llu entries, at most %u allowed", ty, field,
                             (unsigned long long)(b->n / 4), cap);
    *n = (uint32_t)(b->n / 4);
    for (uint32_t j = 0; j < *n; j++) {
        const uint8_t *q = b->p + 4 * (size_t)j;
        uint32_t x = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                     (uint32_t)q[3] << 24;
        if (!s_sa_idx_ok(x))
            return fm_errmsg_set(e, FM_ERANGE, "%s: %s[%u]: index %u outside 1..%d", ty, field, j,
                                 x, FM_SA_MAX_K);
        out[j] = x;
    }
    return 0;
}

/* A bin of exactly `count` entries of `size` bytes (count from the list `of`). */
static int s_sa_sized(const char *ty, const char *field, const s_bin_t *b, size_t size,
                      uint32_t count, const char *of, fm_errmsg_t *e)
{
    if (b->n != (uint64_t)size * count)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s: %s: bin of %llu bytes, expected %zu x %u entries of %s = %llu",
                             ty, field, (unsigned long long)b->n, size, count, of,
                             (unsigned long long)size * count);
    return 0;
}

/* Boxes: the peers' list (at most FM_SA_MAX_K - 1) and "boxes", into out[]. */
static int s_sa_boxes(const char *ty, const char *key_idx, const s_sa_raw_t *w,
                      const s_bin_t *idx, fm_sa_box_entry_t *out, uint32_t *n, fm_errmsg_t *e)
{
    uint32_t peers[FM_SA_MAX_K];
    int rc = s_sa_list(ty, key_idx, idx, FM_SA_MAX_K - 1, peers, n, e);
    if (rc == 0)
        rc = s_sa_sized(ty, "boxes", &w->boxes, FM_SA_BOX_BYTES, *n, key_idx, e);
    for (uint32_t j = 0; rc == 0 && j < *n; j++) {
        out[j].peer = peers[j];
        memcpy(out[j].box, w->boxes.p + FM_SA_BOX_BYTES * (size_t)j, FM_SA_BOX_BYTES);
    }
    return rc;
}

/* The framing, "v", "t" and fields of a secure-aggregation message into *w, then "i". */
static int s_sa_decode(const void *buf, size_t len, uint32_t accept, const char *what,
                       const s_field_t *fields, int nfields, s_sa_raw_t *w, fm_wire_type_t *type,
                       fm_errmsg_t *e)
{
    fm_wire_type_t ty = FM_WIRE_NONE;
    int rc = s_decode(buf, len, accept, what, fields, nfields, w, sizeof *w, NULL, &ty, e);
    if (rc == 0)
        rc = s_sa_index(fm_wire_type_name(ty), w->i, e);
    if (type)
        *type = ty;
    return rc;
}

int fm_wire_decode_sa_invite(const void *buf, size_t len, fm_wire_sa_invite_t *inv,
                             fm_errmsg_t *e)
{
    FM_ASSERT(inv);
    static const char ty[] = "COHORT_INVITE";
    s_sa_raw_t w;
    memset(inv, 0, sizeof *inv);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_INVITE), ty, s_sa_invite_fields,
                         S_NFIELDS(s_sa_invite_fields), &w, NULL, e);
    if (rc)
        return rc;
    if (w.k < 2 || w.k > FM_SA_MAX_K)
        return fm_errmsg_set(e, FM_ERANGE, "%s: k: %u members, expected 2..%d", ty, w.k,
                             FM_SA_MAX_K);
    if (w.i > w.k)
        return fm_errmsg_set(e, FM_ERANGE, "%s: i: index %u above k = %u", ty, w.i, w.k);
    if (w.m < 1 || w.m > FM_SA_MAX_M)
        return fm_errmsg_set(e, FM_ERANGE, "%s: m: %u coordinates, expected 1..%u", ty, w.m,
                             FM_SA_MAX_M);
    if (w.s > 30)
        return fm_errmsg_set(e, FM_ERANGE, "%s: s: scale exponent %u, at most 30", ty, w.s);
    if (!isfinite(w.clip) || w.clip <= 0)
        return fm_errmsg_set(e, FM_ERANGE, "%s: clip: %g, must be finite and > 0", ty, w.clip);
    for (int j = 0; j < 4; j++)
        if (!isfinite(w.dl[j]) || w.dl[j] <= 0)
            return fm_errmsg_set(e, FM_ERANGE, "%s: dl[%d]: %g s, must be finite and > 0", ty, j,
                                 w.dl[j]);
    inv->p = (fm_sa_params_t){.cohort = w.cohort,
                              .k = w.k,
                              .t = w.thr,
                              .m = w.m,
                              .clip = w.clip,
                              .scale_bits = (int)w.s};
    fm_errmsg_t pe = {{0}};
    if (fm_sa_params_check(&inv->p, &pe) != 0)
        return fm_errmsg_set(e, FM_ERANGE, "%s: thr, clip, s: %s", ty, pe.msg);
    inv->index = w.i;
    inv->version = w.version;
    inv->round = w.round;
    memcpy(inv->trainer, w.trainer, sizeof inv->trainer);
    inv->client = w.client;
    inv->deadlines = (fm_sa_deadlines_t){w.dl[0], w.dl[1], w.dl[2], w.dl[3]};
    return 0;
}

int fm_wire_decode_sa_keys(const void *buf, size_t len, fm_sa_advertise_t *a, fm_errmsg_t *e)
{
    FM_ASSERT(a);
    static const char ty[] = "ADVERTISE_KEYS";
    s_sa_raw_t w;
    memset(a, 0, sizeof *a);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_KEYS), ty, s_sa_keys_fields,
                         S_NFIELDS(s_sa_keys_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_sized(ty, "cpk", &w.cpk, FM_SA_KEY_BYTES, 1, "one key", e);
    if (rc == 0)
        rc = s_sa_sized(ty, "spk", &w.spk, FM_SA_KEY_BYTES, 1, "one key", e);
    if (rc)
        return rc;
    a->cohort = w.cohort;
    a->from = w.i;
    memcpy(a->c_pk, w.cpk.p, FM_SA_KEY_BYTES);
    memcpy(a->s_pk, w.spk.p, FM_SA_KEY_BYTES);
    return 0;
}

int fm_wire_decode_sa_key_list(const void *buf, size_t len, fm_wire_sa_key_list_t *kl,
                               fm_errmsg_t *e)
{
    FM_ASSERT(kl);
    static const char ty[] = "KEY_LIST";
    s_sa_raw_t w;
    uint32_t idx[FM_SA_MAX_K], n = 0;
    memset(&kl->msg, 0, sizeof kl->msg);
    kl->to = 0;
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_KEY_LIST), ty, s_sa_key_list_fields,
                         S_NFIELDS(s_sa_key_list_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_list(ty, "u1", &w.l1, FM_SA_MAX_K, idx, &n, e);
    if (rc == 0)
        rc = s_sa_sized(ty, "cpk", &w.cpk, FM_SA_KEY_BYTES, n, "u1", e);
    if (rc == 0)
        rc = s_sa_sized(ty, "spk", &w.spk, FM_SA_KEY_BYTES, n, "u1", e);
    if (rc)
        return rc;
    for (uint32_t j = 0; j < n; j++) {
        kl->keys[j].index = idx[j];
        memcpy(kl->keys[j].c_pk, w.cpk.p + FM_SA_KEY_BYTES * (size_t)j, FM_SA_KEY_BYTES);
        memcpy(kl->keys[j].s_pk, w.spk.p + FM_SA_KEY_BYTES * (size_t)j, FM_SA_KEY_BYTES);
    }
    kl->to = w.i;
    kl->msg = (fm_sa_key_list_t){.cohort = w.cohort, .n = n, .keys = kl->keys};
    return 0;
}

int fm_wire_decode_sa_shares(const void *buf, size_t len, fm_wire_sa_shares_t *s, fm_errmsg_t *e)
{
    FM_ASSERT(s);
    static const char ty[] = "SHARES";
    s_sa_raw_t w;
    uint32_t n = 0;
    memset(&s->msg, 0, sizeof s->msg);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_SHARES), ty, s_sa_shares_fields,
                         S_NFIELDS(s_sa_shares_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_boxes(ty, "to", &w, &w.l1, s->boxes, &n, e);
    if (rc)
        return rc;
    s->msg = (fm_sa_shares_t){.cohort = w.cohort, .from = w.i, .n = n, .boxes = s->boxes};
    return 0;
}

int fm_wire_decode_sa_shares_fwd(const void *buf, size_t len, fm_wire_sa_shares_fwd_t *s,
                                 fm_errmsg_t *e)
{
    FM_ASSERT(s);
    static const char ty[] = "SHARES_FWD";
    s_sa_raw_t w;
    uint32_t n = 0, n_u2 = 0;
    memset(&s->msg, 0, sizeof s->msg);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_SHARES_FWD), ty, s_sa_shares_fwd_fields,
                         S_NFIELDS(s_sa_shares_fwd_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_list(ty, "u2", &w.l1, FM_SA_MAX_K, s->u2, &n_u2, e);
    if (rc == 0)
        rc = s_sa_boxes(ty, "from", &w, &w.l2, s->boxes, &n, e);
    if (rc)
        return rc;
    s->msg = (fm_sa_shares_fwd_t){
        .cohort = w.cohort, .to = w.i, .n_u2 = n_u2, .u2 = s->u2, .n = n, .boxes = s->boxes};
    return 0;
}

int fm_wire_decode_sa_masked(const void *buf, size_t len, fm_wire_sa_masked_t *mk, fm_errmsg_t *e)
{
    FM_ASSERT(mk);
    static const char ty[] = "MASKED_UPDATE";
    s_sa_raw_t w;
    memset(mk, 0, sizeof *mk);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_MASKED), ty, s_sa_masked_fields,
                         S_NFIELDS(s_sa_masked_fields), &w, NULL, e);
    if (rc)
        return rc;
    if (w.m < 1 || w.m > FM_SA_MAX_M)
        return fm_errmsg_set(e, FM_ERANGE, "%s: m: %u coordinates, expected 1..%u", ty, w.m,
                             FM_SA_MAX_M);
    if ((rc = s_sa_sized(ty, "y", &w.y, 4, w.m, "m (uint32)", e)) != 0)
        return rc;
    *mk = (fm_wire_sa_masked_t){.cohort = w.cohort, .from = w.i, .m = w.m, .y = w.y.p};
    return 0;
}

int fm_wire_decode_sa_unmask_req(const void *buf, size_t len, fm_wire_sa_unmask_req_t *r,
                                 fm_errmsg_t *e)
{
    FM_ASSERT(r);
    static const char ty[] = "UNMASK_REQ";
    s_sa_raw_t w;
    uint32_t n3 = 0, nd = 0;
    memset(&r->msg, 0, sizeof r->msg);
    r->to = 0;
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_UNMASK_REQ), ty, s_sa_unmask_req_fields,
                         S_NFIELDS(s_sa_unmask_req_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_list(ty, "u3", &w.l1, FM_SA_MAX_K, r->u3, &n3, e);
    if (rc == 0)
        rc = s_sa_list(ty, "d", &w.l2, FM_SA_MAX_K, r->d, &nd, e);
    if (rc)
        return rc;
    if (n3 + nd > FM_SA_MAX_K)
        return fm_errmsg_set(e, FM_ERANGE, "%s: u3, d: %u + %u entries, at most %d together", ty,
                             n3, nd, FM_SA_MAX_K);
    r->to = w.i;
    r->msg = (fm_sa_unmask_req_t){
        .cohort = w.cohort, .n_u3 = n3, .u3 = r->u3, .n_d = nd, .d = r->d};
    return 0;
}

int fm_wire_decode_sa_unmask_shares(const void *buf, size_t len, fm_wire_sa_unmask_shares_t *s,
                                    fm_errmsg_t *e)
{
    FM_ASSERT(s);
    static const char ty[] = "UNMASK_SHARES";
    s_sa_raw_t w;
    uint32_t of[FM_SA_MAX_K], n = 0;
    memset(&s->msg, 0, sizeof s->msg);
    int rc = s_sa_decode(buf, len, S_BIT(FM_WIRE_SA_UNMASK_SHARES), ty, s_sa_unmask_shares_fields,
                         S_NFIELDS(s_sa_unmask_shares_fields), &w, NULL, e);
    if (rc == 0)
        rc = s_sa_list(ty, "of", &w.l1, FM_SA_MAX_K, of, &n, e);
    if (rc == 0)
        rc = s_sa_sized(ty, "kind", &w.kind, 1, n, "of", e);
    if (rc == 0)
        rc = s_sa_sized(ty, "shares", &w.shares, FM_SA_KEY_BYTES, n, "of", e);
    if (rc)
        return rc;
    for (uint32_t j = 0; j < n; j++) {
        uint8_t k = w.kind.p[j];
        if (k != FM_SA_SHARE_B && k != FM_SA_SHARE_RS)
            return fm_errmsg_set(e, FM_ERANGE, "%s: kind[%u]: %u, expected %d (b) or %d (r_s)",
                                 ty, j, k, FM_SA_SHARE_B, FM_SA_SHARE_RS);
        s->shares[j].of = of[j];
        s->shares[j].kind = k;
        memcpy(s->shares[j].share, w.shares.p + FM_SA_KEY_BYTES * (size_t)j, FM_SA_KEY_BYTES);
    }
    s->msg = (fm_sa_unmask_shares_t){
        .cohort = w.cohort, .from = w.i, .n = n, .shares = s->shares};
    return 0;
}

int fm_wire_decode_sa_end(const void *buf, size_t len, fm_wire_type_t *type,
                          fm_wire_sa_end_t *end, fm_errmsg_t *e)
{
    FM_ASSERT(type && end);
    s_sa_raw_t w;
    *type = FM_WIRE_NONE;
    memset(end, 0, sizeof *end);
    int rc = s_sa_decode(buf, len, S_SA_END_TYPES, "COHORT_DONE/COHORT_ABORT", s_sa_end_fields,
                         S_NFIELDS(s_sa_end_fields), &w, type, e);
    if (rc) {
        *type = FM_WIRE_NONE;
        return rc;
    }
    *end = (fm_wire_sa_end_t){.cohort = w.cohort, .to = w.i};
    return 0;
}

void fm_wire_sa_masked_view(const fm_wire_sa_masked_t *w, uint32_t *scratch, fm_sa_masked_t *out)
{
    FM_ASSERT(w && scratch && out && w->y);
    memcpy(scratch, w->y, 4 * (size_t)w->m); /* little-endian host: the words as sent */
    *out = (fm_sa_masked_t){.cohort = w->cohort, .from = w->from, .m = w->m, .y = scratch};
}

/* ==== tensors against a layout
 * =================================================================== */

/* Index of the view called `name`, or -1. */
static int s_view_index(const fm_model_t *layout, const char *name)
{
    for (int i = 0; i < fm_model_nviews(layout); i++)
        if (strcmp(fm_model_view(layout, i)->name, name) == 0)
            return i;
    return -1;
}

int fm_wire_tensors_check(const fm_wire_tensors_t *t, const fm_model_t *layout, fm_errmsg_t *e)
{
    FM_ASSERT(t && layout);
    FM_ASSERT(t->count >= 0 && t->count <= FM_WIRE_MAX_TENSORS);
    int nv = fm_model_nviews(layout);
    bool seen[FM_WIRE_MAX_TENSORS] = {false}; /* a layout has at most as many views */
    char nm[S_SHOWN + 8], got[128], want[128], what[S_SHOWN + 32];
    const char *model = fm_model_name(layout);
    FM_ASSERT(nv >= 0 && nv <= FM_WIRE_MAX_TENSORS);
    for (int i = 0; i < t->count; i++) {
        const fm_wire_tensor_t *x = &t->t[i];
        s_printable(nm, sizeof nm, x->name, strlen(x->name));
        int vi = s_view_index(layout, x->name);
        if (vi < 0)
            return fm_errmsg_set(e, FM_ENAME, "tensor '%s': unknown in model '%s'", nm, model);
        if (seen[vi])
            return fm_errmsg_set(e, FM_ENAME, "tensor '%s': duplicate", nm);
        seen[vi] = true;
        const fm_view_t *v = fm_model_view(layout, vi);
        bool v1 = t->version < 2;
        if (x->enc.dtype >= FM_DT_COUNT || (v1 && x->enc.dtype != FM_DT_F32))
            return fm_errmsg_set(e, FM_EDTYPE, "tensor '%s': dtype '%s', expected %s", nm,
                                 s_printable(got, sizeof got, x->dtype, strlen(x->dtype)),
                                 v1 ? "F32 (protocol version 1)" : "F32, F16, BF16 or I8");
        if (v1 && (x->enc.sparse || x->enc.zstd || x->has_scale))
            return fm_errmsg_set(e, FM_EFORMAT,
                                 "tensor '%s': \"%s\" is an encoding of protocol version 2, "
                                 "the frame says 1",
                                 nm,
                                 x->enc.sparse ? "idx"
                                 : x->enc.zstd ? "comp"
                                               : "scale");
        if (x->enc.dtype == FM_DT_I8 && !x->has_scale)
            return fm_errmsg_set(e, FM_EFORMAT, "tensor '%s': dtype I8 without \"scale\"", nm);
        bool same = x->ndim == v->ndim;
        for (int d = 0; same && d < v->ndim; d++)
            same = x->shape[d] == (uint64_t)v->shape[d];
        if (!same) {
            uint64_t vs[FM_MAX_DIMS];
            for (int d = 0; d < v->ndim; d++)
                vs[d] = (uint64_t)v->shape[d];
            return fm_errmsg_set(e, FM_ESHAPE, "tensor '%s': shape %s, expected %s", nm,
                                 s_fmt_shape(got, sizeof got, x->ndim, x->shape),
                                 s_fmt_shape(want, sizeof want, v->ndim, vs));
        }
        if (fm_codec_is_raw(&x->enc)) {
            if (x->nbytes != 4 * v->numel)
                return fm_errmsg_set(e, FM_ESHAPE,
                                     "tensor '%s': %zu data bytes, expected %zu (%zu float32)",
                                     nm, x->nbytes, 4 * v->numel, v->numel);
            continue;
        }
        snprintf(what, sizeof what, "tensor '%s'", nm);
        int rc = fm_codec_check(&x->enc, v->numel, what, e);
        if (rc)
            return rc;
    }
    for (int vi = 0; vi < nv; vi++)
        if (!seen[vi])
            return fm_errmsg_set(e, FM_ENAME, "tensor '%s': missing (model '%s')",
                                 fm_model_view(layout, vi)->name, model);
    return 0;
}

int fm_wire_tensors_finite(const fm_wire_tensors_t *t, const fm_model_t *layout, fm_errmsg_t *e)
{
    FM_ASSERT(t && t->count >= 0 && t->count <= FM_WIRE_MAX_TENSORS);
    char nm[S_SHOWN + 8], what[S_SHOWN + 32];
    fm_codec_rd_t *rd = NULL;
    int rc = 0;
    for (int i = 0; i < t->count && rc == 0; i++) {
        const fm_wire_tensor_t *x = &t->t[i];
        s_printable(nm, sizeof nm, x->name, strlen(x->name));
        if (fm_codec_is_raw(&x->enc)) {
            size_t n = x->nbytes / 4, bad = s_first_nonfinite(x->data, n);
            if (bad < n)
                rc = fm_errmsg_set(e, FM_ENONFINITE,
                                   "tensor '%s': non-finite value at element %zu", nm, bad);
            continue;
        }
        FM_ASSERT(layout); /* encoded tensors need their view's size */
        int vi = s_view_index(layout, x->name);
        FM_ASSERT(vi >= 0); /* fm_wire_tensors_check first */
        if (!rd && !(rd = calloc(1, sizeof *rd))) {
            rc = fm_errmsg_set(e, -ENOMEM, "tensor '%s': out of memory", nm);
            break;
        }
        snprintf(what, sizeof what, "tensor '%s'", nm);
        /* the whole tensor is read first, as fm_wire_tensors_copy decodes it: a tensor
         * that does not decode is that error, even after a non-finite value */
        fm_codec_block_t b;
        size_t first_bad = SIZE_MAX;
        rc = fm_codec_rd_open(rd, &x->enc, fm_model_view(layout, vi)->numel, what, e);
        while (rc == 0 && (rc = fm_codec_rd_next(rd, &b, e)) == 1) {
            size_t bad = s_first_nonfinite(b.vals, b.n);
            rc = 0;
            if (bad < b.n && first_bad == SIZE_MAX)
                first_bad = b.idx ? (size_t)b.idx[bad] : b.first + bad;
        }
        if (rc == 0 && first_bad != SIZE_MAX)
            rc = fm_errmsg_set(e, FM_ENONFINITE, "tensor '%s': non-finite value at element %zu",
                               nm, first_bad);
    }
    if (rd) {
        fm_codec_rd_free(rd);
        free(rd);
    }
    return rc;
}

int fm_wire_tensors_copy(const fm_wire_tensors_t *t, const fm_model_t *layout, float *dst,
                         fm_errmsg_t *e)
{
    FM_ASSERT(t && layout && dst);
    FM_ASSERT(t->count == fm_model_nviews(layout));
    int rc = 0;
    fm_codec_rd_t *rd = NULL;
    char what[FM_WIRE_STR_MAX + 16];
    for (int i = 0; i < t->count; i++) {
        const fm_wire_tensor_t *x = &t->t[i];
        int vi = s_view_index(layout, x->name);
        FM_ASSERT(vi >= 0); /* fm_wire_tensors_check first */
        const fm_view_t *v = fm_model_view(layout, vi);
        snprintf(what, sizeof what, "tensor '%s'", v->name);
        if (fm_codec_is_raw(&x->enc)) {
            FM_ASSERT(x->nbytes == 4 * v->numel);
            memcpy(dst + v->offset, x->data, x->nbytes);
        } else {
            int drc;
            if (!rd && !(rd = calloc(1, sizeof *rd))) {
                rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", what);
                break;
            }
            if ((drc = fm_codec_decode(rd, &x->enc, v->numel, what, dst + v->offset, e)) != 0) {
                rc = drc;
                break;
            }
        }
        size_t bad = s_first_nonfinite(dst + v->offset, v->numel);
        if (bad < v->numel) { /* the first problem, as fm_wire_tensors_finite finds it */
            rc = fm_errmsg_set(e, FM_ENONFINITE, "tensor '%s': non-finite value at element %zu",
                               v->name, bad);
            break;
        }
    }
    if (rd) {
        fm_codec_rd_free(rd);
        free(rd);
    }
    return rc;
}
