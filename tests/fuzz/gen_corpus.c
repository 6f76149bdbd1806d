/* gen_corpus: writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/),
 * every seed a VALID input made by fedmq's own writers, deterministically (fixed ids,
 * times and values), so the committed corpus can be checked against a fresh run (ctest
 * fuzz_corpus) and regenerated after a format change:
 *   build-fuzz/fuzz_gen_corpus . tests/fuzz/corpus      (from the top of the tree)
 * usage: fuzz_gen_corpus SOURCE_DIR OUT_DIR   (OUT_DIR/<target>/ are created; files in
 * them are overwritten, others left alone)
 *
 *   wire/         every message type from fm_wire's encoders (MODEL and UPDATE with the
 *                 logreg layout: 31 KB; sync, boot and progress keys; a HEARTBEAT, a
 *                 METRICS with population keys, an ACK, a DECLINE, one of each secure-
 *                 aggregation message; encoded UPDATEs of every value type, top-k and zstd
 *                 and an F16 MODEL, protocol version 2, for the small layout of
 *                 fuzz_layout.h) and two small hand-packed
 * frames (other key order, widths and an unknown nested key) cfg/          configs/<name>.conf
 * (all three), the dump of the defaults (every key) and a short file with a BOM, CRLF line ends
 * and inline comments idx/          u32 LE length of the images file, the images file, the labels
 * file: raw and gzipped, 28x28 and other sizes safetensors/  a logreg model
 * (fm_safetensors_save_model), every dtype with scalar and empty shapes and metadata
 * (fm_safetensors_write), an empty header ckpt/         a flags byte (fuzz_ckpt.c), the 8-byte
 * big-endian key and the record, read raw from an LMDB store that fm_ckpt_save wrote (with and
 * without optimizer state) */
#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_cfg.h"
#include "fm_ckpt.h"
#include "fm_codec.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_safetensors.h"
#include "fm_wire.h"
#include "fuzz_layout.h"

static const char *s_out;

/* Print why and exit 1. */
static void s_die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_gen_corpus: %s: %s\n", what, why);
    exit(1);
}

static void s_mkdir(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        s_die(dir, strerror(errno));
}

/* OUT/<target>/<name> into path[cap]. */
static void s_path(char *path, size_t cap, const char *target, const char *name)
{
    snprintf(path, cap, "%s/%s", s_out, target);
    s_mkdir(path);
    snprintf(path, cap, "%s/%s/%s", s_out, target, name);
}

/* Write the n bytes at p, after the `pn` bytes at prefix (may be 0), as OUT/target/name. */
static void s_write2(const char *target, const char *name, const void *prefix, size_t pn,
                     const void *p, size_t n)
{
    char path[4096];
    s_path(path, sizeof path, target, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        s_die(path, strerror(errno));
    if ((pn && fwrite(prefix, 1, pn, f) != pn) || (n && fwrite(p, 1, n, f) != n) ||
        fclose(f) != 0)
        s_die(path, "write failed");
}

static void s_write(const char *target, const char *name, const void *p, size_t n)
{
    s_write2(target, name, NULL, 0, p, n);
}

/* ---- wire ------------------------------------------------------------------------------ */

static void s_wire_put(const char *name, int rc, const fm_wire_buf_t *b)
{
    if (rc != 0)
        s_die(name, fm_strerror(rc));
    s_write("wire", name, b->data, b->len);
}

/* A msgpack-c packer into a wire buffer (for the hand-packed frames). */
static int s_pk_write(void *data, const char *src, size_t n)
{
    fm_wire_buf_t *b = data;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        unsigned char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static void s_pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* One message of each secure-aggregation type (docs/PROTOCOL.md §3.8) for a cohort of 4
 * members with t = 3 and m = 6: member 4 dropped after the shares, so UNMASK_REQ has a
 * non-empty D and UNMASK_SHARES both kinds. Fixed bytes stand in for keys, boxes and shares
 * (the wire does not look inside them). */
static void s_gen_wire_secagg(fm_wire_buf_t *b)
{
    const uint64_t cohort = 0x0123456789abcdefull;
    fm_wire_sa_invite_t inv = {.p = {cohort, 4, 3, 6, 1.0, 26},
                               .index = 2,
                               .version = 42,
                               .round = 9,
                               .client = 17,
                               .deadlines = {5, 5, 60, 5}};
    snprintf(inv.trainer, sizeof inv.trainer, "host-a/trainer-1");
    s_wire_put("sa_invite", fm_wire_encode_sa_invite(&inv, b), b);
    fm_sa_advertise_t adv = {.cohort = cohort, .from = 2};
    for (int j = 0; j < FM_SA_KEY_BYTES; j++) {
        adv.c_pk[j] = (uint8_t)(j + 1);
        adv.s_pk[j] = (uint8_t)(0x80 + j);
    }
    s_wire_put("sa_keys", fm_wire_encode_sa_keys(&adv, b), b);
    fm_sa_key_entry_t keys[4];
    fm_sa_box_entry_t boxes[3];
    fm_sa_share_entry_t shares[4];
    static const uint32_t u2[] = {1, 2, 3, 4}, u3[] = {1, 2, 3}, d[] = {4};
    for (uint32_t j = 0; j < 4; j++) {
        keys[j].index = j + 1;
        memset(keys[j].c_pk, (int)(0x10 + j), FM_SA_KEY_BYTES);
        memset(keys[j].s_pk, (int)(0x20 + j), FM_SA_KEY_BYTES);
        shares[j].of = j + 1;
        shares[j].kind = j == 3 ? FM_SA_SHARE_RS : FM_SA_SHARE_B;
        memset(shares[j].share, (int)(0x30 + j), FM_SA_KEY_BYTES);
        if (j < 3) {
            boxes[j].peer = j == 0 ? 1 : j + 2; /* the peers of member 2 */
            memset(boxes[j].box, (int)(0x40 + j), FM_SA_BOX_BYTES);
        }
    }
    s_wire_put("sa_key_list",
               fm_wire_encode_sa_key_list(&(fm_sa_key_list_t){cohort, 4, keys}, 2, b), b);
    s_wire_put("sa_shares", fm_wire_encode_sa_shares(&(fm_sa_shares_t){cohort, 2, 3, boxes}, b),
               b);
    s_wire_put("sa_shares_fwd",
               fm_wire_encode_sa_shares_fwd(&(fm_sa_shares_fwd_t){cohort, 2, 4, u2, 3, boxes}, b),
               b);
    static const uint32_t y[6] = {0xdeadbeef, 1, 0x80000000u, 0xffffffffu, 12345, 0x01000000};
    s_wire_put("sa_masked", fm_wire_encode_sa_masked(&(fm_sa_masked_t){cohort, 2, 6, y}, b), b);
    s_wire_put("sa_unmask_req",
               fm_wire_encode_sa_unmask_req(&(fm_sa_unmask_req_t){cohort, 3, u3, 1, d}, 2, b), b);
    s_wire_put("sa_unmask_shares",
               fm_wire_encode_sa_unmask_shares(&(fm_sa_unmask_shares_t){cohort, 2, 4, shares}, b),
               b);
    s_wire_put("sa_done",
               fm_wire_encode_sa_end(FM_WIRE_SA_DONE, &(fm_wire_sa_end_t){cohort, 2}, b), b);
    s_wire_put("sa_abort",
               fm_wire_encode_sa_end(FM_WIRE_SA_ABORT, &(fm_wire_sa_end_t){cohort, 4}, b), b);
}

/* Encoded UPDATEs (protocol version 2) of the small layout of fuzz_layout.h, one per value
 * type, top-k with error feedback, and zstd on top; one encoded MODEL. Values and the I8
 * rounding come from fixed seeds. */
static void s_gen_wire_coded(fm_wire_buf_t *b, const fm_wire_update_t *up)
{
    static const struct {
        const char *name;
        fm_codec_config_t c;
    } seeds[] = {
        {"update_small_fp16", {.dtype = FM_DT_F16}},
        {"update_small_bf16", {.dtype = FM_DT_BF16}},
        {"update_small_int8", {.dtype = FM_DT_I8}},
        {"update_small_fp16_zstd", {.dtype = FM_DT_F16, .zstd_level = 3}},
        {"update_small_int8_zstd", {.dtype = FM_DT_I8, .zstd_level = 1}},
        {"update_small_topk_fp32", {.dtype = FM_DT_F32, .topk = 0.05, .error_feedback = 1}},
        {"update_small_topk_bf16", {.dtype = FM_DT_BF16, .topk = 0.3}},
        {"update_small_topk_int8_zstd", {.dtype = FM_DT_I8, .topk = 0.1, .zstd_level = 3}},
        {"update_small_topk_fp16_zstd",
         {.dtype = FM_DT_F16, .topk = 0.9, .error_feedback = 1, .zstd_level = 1}},
    };
    int err = 0;
    fm_model_t *m = fuzz_small_layout(&err);
    if (!m)
        s_die("small layout", fm_strerror(err));
    size_t np = fm_model_nparams(m);
    float *x = malloc(np * sizeof *x), *res = calloc(np, sizeof *res);
    fm_codec_tensor_t coded[2];
    if (!x || !res)
        s_die("small layout", "out of memory");
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) {
        fm_rng_t rng;
        fm_rng_seed(&rng, 15, i);
        for (size_t j = 0; j < np; j++)
            x[j] = (float)(0.01 * fm_rng_normal(&rng));
        memset(res, 0, np * sizeof *res);
        fm_codec_enc_t *enc = fm_codec_enc_new(m, &seeds[i].c, &err);
        if (!enc)
            s_die(seeds[i].name, fm_strerror(err));
        int rc = fm_codec_enc_run(enc, x, seeds[i].c.error_feedback ? res : NULL, &rng, coded);
        if (rc == 0)
            rc = fm_wire_encode_update_coded(up, m, NULL, coded, b);
        s_wire_put(seeds[i].name, rc, b);
        if (i == 0) {
            fm_wire_model_t mod = {.version = 43, .created = 1700000002.5};
            s_wire_put("model_small_fp16", fm_wire_encode_model_coded(&mod, m, NULL, coded, b),
                       b);
        }
        fm_codec_enc_destroy(&enc);
    }
    free(x);
    free(res);
    fm_model_destroy(&m);
}

static void s_gen_wire(void)
{
    fm_wire_buf_t b = FM_WIRE_BUF_INIT;
    int err = 0;
    fm_model_t *m = fm_model_new("logreg", &err);
    if (!m)
        s_die("logreg", fm_strerror(err));
    fm_model_init(m, 7);
    const float *p = fm_model_params_const(m);

    fm_wire_member_t mem = {.pid = 4242, .client_first = 10, .client_count = 20, .workers = 2};
    snprintf(mem.trainer, sizeof mem.trainer, "pool-1");
    mem.seq = 1;
    s_wire_put("hello", fm_wire_encode_member(FM_WIRE_HELLO, &mem, &b), &b);
    mem.seq = 7;
    mem.updates_sent = 123;
    mem.busy = 2;
    s_wire_put("heartbeat", fm_wire_encode_member(FM_WIRE_HEARTBEAT, &mem, &b), &b);
    mem.seq = 8;
    s_wire_put("bye", fm_wire_encode_member(FM_WIRE_BYE, &mem, &b), &b);

    fm_wire_snapshot_req_t req = {.have = 41};
    snprintf(req.from, sizeof req.from, "evaluator-1");
    s_wire_put("snapshot_req", fm_wire_encode_snapshot_req(&req, &b), &b);

    fm_wire_model_t mod = {.version = 42, .created = 1700000000.25};
    s_wire_put("model_logreg", fm_wire_encode_model(&mod, m, p, &b), &b);
    mod.boot = 0x1122334455667788ull;
    mod.applied = 840;
    mod.updates_per_s = 55.5;
    s_wire_put("model_logreg_boot", fm_wire_encode_model(&mod, m, p, &b), &b);
    uint8_t cohort[4 * 5];
    for (uint32_t i = 0; i < 5; i++) {
        uint32_t id = 3 * i + 1;
        for (int k = 0; k < 4; k++)
            cohort[4 * i + (uint32_t)k] = (uint8_t)(id >> (8 * k));
    }
    mod.boot = 0;
    mod.round = 9;
    mod.cohort = (fm_wire_cohort_t){.present = 1, .ids = cohort, .count = 5};
    mod.mu = 0.01;
    s_wire_put("model_logreg_sync", fm_wire_encode_model(&mod, m, p, &b), &b);
    mod.sample_rate = 0.1;
    s_wire_put("model_logreg_poisson", fm_wire_encode_model(&mod, m, p, &b), &b);
    mod.sample_rate = 0;

    fm_wire_update_t up = {.client = 17,
                           .base = 41,
                           .num_samples = 600,
                           .local_steps = 19,
                           .train_loss = 0.75,
                           .train_seconds = 1.5};
    for (int i = 0; i < FM_WIRE_ID_LEN; i++)
        up.id[i] = (uint8_t)(0xa0 + i);
    snprintf(up.trainer, sizeof up.trainer, "pool-1");
    s_wire_put("update_logreg", fm_wire_encode_update(&up, m, p, &b), &b);
    up.round = 9;
    s_wire_put("update_logreg_round", fm_wire_encode_update(&up, m, p, &b), &b);

    fm_wire_metrics_t met = {.version = 42,
                             .accuracy = 0.8125,
                             .loss = 0.5,
                             .num_samples = 10000,
                             .eval_seconds = 0.25,
                             .timestamp = 1700000001.5};
    snprintf(met.model, sizeof met.model, "logreg");
    for (int i = 0; i < FM_NCLASSES; i++)
        met.class_acc[i] = 0.7 + 0.02 * i;
    s_wire_put("metrics", fm_wire_encode_metrics(&met, &b), &b);
    met.applied = 840;
    met.updates_per_s = 55.5;
    met.pop_clients = 100;
    met.pop_mean = 0.8;
    met.pop_min = 0.5;
    met.pop_worst = 13;
    met.pop_p10 = 0.65;
    met.pop_threshold = 0.6;
    met.pop_below = 0.04;
    s_wire_put("metrics_population", fm_wire_encode_metrics(&met, &b), &b);

    uint8_t ids[3 * FM_WIRE_ID_LEN];
    for (size_t i = 0; i < sizeof ids; i++)
        ids[i] = (uint8_t)(i * 7 + 1);
    fm_wire_ack_t ack = {.boot = 0x1122334455667788ull, .version = 43, .ids = ids, .count = 3};
    snprintf(ack.status, sizeof ack.status, "applied");
    s_wire_put("ack", fm_wire_encode_ack(&ack, &b), &b);

    static const uint8_t declined[] = {3, 0, 0, 0, 9, 0, 0, 0, 0x10, 0x27, 0, 0};
    fm_wire_decline_t dec = {
        .clients = {.present = 1, .ids = declined, .count = 3}, .base = 41, .round = 42};
    snprintf(dec.trainer, sizeof dec.trainer, "host-a/trainer-1");
    s_wire_put("decline", fm_wire_encode_decline(&dec, &b), &b);

    s_gen_wire_secagg(&b);
    s_gen_wire_coded(&b, &up);

    /* hand-packed: keys in another order, wide integer and string forms, an unknown key
     * holding nested values, and a small tensor set (the decoder takes any; the layout
     * check then refuses it) */
    msgpack_packer pk;
    b.len = 0;
    msgpack_packer_init(&pk, &b, s_pk_write);
    msgpack_pack_map(&pk, 7);
    s_pk_str(&pk, "tensors");
    msgpack_pack_array(&pk, 2);
    static const float w[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.125f, 3.0f}, bias[2] = {1.0f, -1.0f};
    for (int t = 0; t < 2; t++) {
        msgpack_pack_map(&pk, 4);
        s_pk_str(&pk, "data");
        msgpack_pack_bin(&pk, t ? sizeof bias : sizeof w);
        msgpack_pack_bin_body(&pk, t ? (const void *)bias : (const void *)w,
                              t ? sizeof bias : sizeof w);
        s_pk_str(&pk, "shape");
        msgpack_pack_array(&pk, t ? 1 : 2);
        msgpack_pack_uint16(&pk, t ? 2 : 2);
        if (!t)
            msgpack_pack_uint32(&pk, 3);
        s_pk_str(&pk, "dtype");
        s_pk_str(&pk, "F32");
        s_pk_str(&pk, "name");
        s_pk_str(&pk, t ? "fc.bias" : "fc.weight");
    }
    s_pk_str(&pk, "x-note");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_map(&pk, 1);
    s_pk_str(&pk, "k");
    msgpack_pack_ext(&pk, 2, 7);
    msgpack_pack_ext_body(&pk, "ab", 2);
    msgpack_pack_int64(&pk, -5);
    s_pk_str(&pk, "ts");
    msgpack_pack_float(&pk, 1.5f);
    s_pk_str(&pk, "model");
    s_pk_str(&pk, "logreg");
    s_pk_str(&pk, "t");
    s_pk_str(&pk, "MODEL");
    s_pk_str(&pk, "mv");
    msgpack_pack_uint64(&pk, 3);
    s_pk_str(&pk, "v");
    msgpack_pack_int8(&pk, 1);
    s_write("wire", "model_small_foreign", b.data, b.len);

    b.len = 0;
    msgpack_packer_init(&pk, &b, s_pk_write);
    msgpack_pack_map(&pk, 5);
    s_pk_str(&pk, "t");
    s_pk_str(&pk, "SNAPSHOT_REQ");
    s_pk_str(&pk, "x-future");
    msgpack_pack_true(&pk);
    s_pk_str(&pk, "from");
    s_pk_str(&pk, "late-joiner");
    s_pk_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    s_pk_str(&pk, "have");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    s_write("wire", "snapshot_req_foreign", b.data, b.len);

    fm_wire_buf_free(&b);
    fm_model_destroy(&m);
}

/* ---- cfg ------------------------------------------------------------------------------- */

static void s_copy_conf(const char *src_dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/%s", src_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        s_die(path, strerror(errno));
    char *buf = malloc(FM_CFG_FILE_MAX);
    if (!buf)
        s_die(path, "out of memory");
    size_t n = fread(buf, 1, FM_CFG_FILE_MAX, f);
    fclose(f);
    s_write("cfg", name, buf, n);
    free(buf);
}

static void s_gen_cfg(const char *src_dir)
{
    s_copy_conf(src_dir, "fedmq.conf");
    s_copy_conf(src_dir, "fashion-sync.conf");
    s_copy_conf(src_dir, "fashion-async.conf");
    fm_config_t c;
    fm_cfg_defaults(&c);
    char *text = NULL;
    size_t len = 0;
    if (fm_cfg_text(&c, &text, &len) != 0)
        s_die("defaults.conf", "out of memory");
    s_write("cfg", "defaults.conf", text, len);
    free(text);
    static const char compact[] = "\xEF\xBB\xBF; a BOM, CRLF line ends, inline comments\r\n"
                                  "[federation]\r\n"
                                  "model = mlp ; the small one\r\n"
                                  "num_clients = 8\r\n"
                                  "clients_per_round = 4\r\n"
                                  "partition = shards:2\r\n"
                                  "seed = 18446744073709551615\r\n"
                                  "aggregation_strategy = fedprox\r\n"
                                  "mu = 0.01\r\n"
                                  "[endpoints]   # trailing comment\r\n"
                                  "updates = ipc:///tmp/fedmq-fuzz-updates\r\n"
                                  "snapshot = tcp://127.0.0.1:*\r\n"
                                  "[trainer]\r\n"
                                  "clients = 2-7\r\n"
                                  "[aggregator]\r\n"
                                  "weight_by_samples = off\r\n"
                                  "staleness = hinge\r\n"
                                  "server_optimizer = fedadam\r\n"
                                  "metrics_addr = 127.0.0.1:9105\r\n"
                                  "[evaluator]\r\n"
                                  "population = yes\r\n"
                                  "log_level = debug\r\n";
    s_write("cfg", "compact.conf", compact, sizeof compact - 1);
}

/* ---- idx ------------------------------------------------------------------------------- */

static void s_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* An IDX3 file of n images rows x cols, or an IDX1 file of n labels (rows == 0), in a
 * malloc'd buffer of *len bytes. */
static uint8_t *s_idx(uint32_t n, uint32_t rows, uint32_t cols, size_t *len)
{
    size_t hdr = rows ? 16 : 8, body = rows ? (size_t)n * rows * cols : n;
    uint8_t *p = malloc(hdr + body);
    if (!p)
        s_die("idx", "out of memory");
    s_be32(p, rows ? 0x00000803u : 0x00000801u);
    s_be32(p + 4, n);
    if (rows) {
        s_be32(p + 8, rows);
        s_be32(p + 12, cols);
    }
    for (size_t i = 0; i < body; i++) /* pixels 0..255; labels 0..9 */
        p[hdr + i] = rows ? (uint8_t)((i * 37 + i / 28) & 0xff) : (uint8_t)(i % 10);
    *len = hdr + body;
    return p;
}

/* gzip of p[0..n) (no name, mtime 0: deterministic) in a malloc'd buffer of *len bytes. */
static uint8_t *s_gzip(const uint8_t *p, size_t n, size_t *len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        s_die("gzip", "deflateInit2 failed");
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (!out)
        s_die("gzip", "out of memory");
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        s_die("gzip", "deflate did not finish");
    *len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* One idx seed: u32 LE length of the images file, images, labels. */
static void s_idx_seed(const char *name, uint32_t n, uint32_t rows, uint32_t cols, int gz_img,
                       int gz_lab)
{
    size_t ni, nl;
    uint8_t *img = s_idx(n, rows, cols, &ni), *lab = s_idx(n, 0, 0, &nl);
    if (gz_img) {
        uint8_t *z = s_gzip(img, ni, &ni);
        free(img);
        img = z;
    }
    if (gz_lab) {
        uint8_t *z = s_gzip(lab, nl, &nl);
        free(lab);
        lab = z;
    }
    uint8_t *all = malloc(4 + ni + nl);
    if (!all)
        s_die(name, "out of memory");
    for (int i = 0; i < 4; i++)
        all[i] = (uint8_t)(ni >> (8 * i));
    memcpy(all + 4, img, ni);
    memcpy(all + 4 + ni, lab, nl);
    s_write("idx", name, all, 4 + ni + nl);
    free(all);
    free(img);
    free(lab);
}

static void s_gen_idx(void)
{
    s_idx_seed("raw_3x28x28", 3, 28, 28, 0, 0);
    s_idx_seed("gz_3x28x28", 3, 28, 28, 1, 1);
    s_idx_seed("gz_images_raw_labels_12x5x7", 12, 5, 7, 1, 0);
    s_idx_seed("raw_1x1x1", 1, 1, 1, 0, 0);
}

/* ---- safetensors ------------------------------------------------------------------------- */

static void s_st_check(const char *name, int rc, const fm_errmsg_t *e)
{
    if (rc != 0)
        s_die(name, e->msg);
}

static void s_gen_safetensors(void)
{
    char path[4096];
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_model_t *m = fm_model_new("logreg", &err);
    if (!m)
        s_die("logreg", fm_strerror(err));
    fm_model_init(m, 7);
    s_path(path, sizeof path, "safetensors", "model_logreg.safetensors");
    s_st_check(path, fm_safetensors_save_model(m, path, &e), &e);
    fm_model_destroy(&m);

    static const double f64[4] = {1.0, -2.5, 1e300, 0.0};
    static const int64_t i64[3] = {-1, 0, INT64_MAX};
    static const int32_t i32 = 7;
    static const uint8_t u8[5] = {0, 1, 2, 254, 255};
    static const uint16_t f16[2] = {0x3c00, 0xc000}, bf16 = 0x3f80;
    fm_tensor_t t[] = {
        {.name = "f64", .dtype = "F64", .ndim = 2, .shape = {2, 2}, .data = f64, .nbytes = 32},
        {.name = "i64", .dtype = "I64", .ndim = 1, .shape = {3}, .data = i64, .nbytes = 24},
        {.name = "scalar", .dtype = "I32", .ndim = 0, .data = &i32, .nbytes = 4},
        {.name = "u8", .dtype = "U8", .ndim = 1, .shape = {5}, .data = u8, .nbytes = 5},
        {.name = "empty", .dtype = "F32", .ndim = 2, .shape = {4, 0}, .nbytes = 0},
        {.name = "f16", .dtype = "F16", .ndim = 1, .shape = {2}, .data = f16, .nbytes = 4},
        {.name = "bf16 \xC3\xA9",
         .dtype = "BF16",
         .ndim = 4,
         .shape = {1, 1, 1, 1},
         .data = &bf16,
         .nbytes = 2},
    };
    const char *meta[] = {"format", "pt", "note", "caf\xC3\xA9 \\\"quoted\\\""};
    s_path(path, sizeof path, "safetensors", "dtypes.safetensors");
    s_st_check(path, fm_safetensors_write(path, t, 7, meta, 2, &e), &e);
    s_path(path, sizeof path, "safetensors", "empty.safetensors");
    s_st_check(path, fm_safetensors_write(path, NULL, 0, NULL, 0, &e), &e);
}

/* ---- ckpt ------------------------------------------------------------------------------ */

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void s_gen_ckpt(void)
{
    char tmpl[] = "/tmp/fuzz-gen-ckpt-XXXXXX";
    if (!mkdtemp(tmpl))
        s_die("mkdtemp", strerror(errno));
    char dir[sizeof tmpl + 8];
    snprintf(dir, sizeof dir, "%s/store", tmpl);
    fm_errmsg_t e = {{0}};
    int err = 0;
    fm_ckpt_t *c = fm_ckpt_open(dir, 0, &err, &e);
    if (!c)
        s_die(dir, e.msg);

    enum { NP = 7850, TINY = 3 }; /* logreg's parameters; a tiny record */
    float *params = malloc(2 * NP * sizeof *params);
    if (!params)
        s_die("ckpt", "out of memory");
    for (size_t i = 0; i < 2 * NP; i++)
        params[i] = (float)((double)((i * 2654435761u) % 2001) / 1000.0 - 1.0);
    fm_ckpt_info_t info = {.nparams = NP, .version = 1, .created = 1700000000.5, .score = NAN};
    snprintf(info.model, sizeof info.model, "logreg");
    info.updates_applied = 20;
    info.updates_rejected = 3;
    info.rejected_by_reason[1] = 2;
    info.rejected_by_reason[4] = 1;
    for (int i = 0; i < FM_CKPT_DIGEST_BYTES; i++)
        info.config_digest[i] = (uint8_t)(i * 11);
    if (fm_ckpt_save(c, &info, params, NULL, NULL, 0, &e) != 0)
        s_die(dir, e.msg);
    info.version = 2;
    info.nopt = NP; /* server momentum */
    info.score = 0.8125;
    info.updates_applied = 40;
    if (fm_ckpt_save(c, &info, params, params + NP, NULL, 0, &e) != 0)
        s_die(dir, e.msg);
    info.version = 0x0102030405060708ull;
    info.nparams = TINY;
    info.nopt = 2;
    snprintf(info.model, sizeof info.model, "mlp");
    if (fm_ckpt_save(c, &info, params, params + TINY, NULL, 0, &e) != 0)
        s_die(dir, e.msg);
    fm_ckpt_close(&c);
    free(params);

    /* the stored key/value pairs, raw */
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi;
    MDB_val k, v;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) ||
        mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, "ckpt", 0, &dbi) ||
        mdb_cursor_open(txn, dbi, &cur))
        s_die(dir, "cannot read the store back with LMDB");
    static const char *const names[3] = {"logreg_v1", "logreg_v2_momentum", "tiny_mlp"};
    int i = 0;
    for (int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && i < 3;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
        uint8_t head[9] = {1}; /* flags (fuzz_ckpt.c): bit 0, keep the CRC right */
        if (k.mv_size != 8)
            s_die(dir, "a key is not 8 bytes");
        memcpy(head + 1, k.mv_data, 8);
        s_write2("ckpt", names[i], head, sizeof head, v.mv_data, v.mv_size);
    }
    if (i != 3)
        s_die(dir, "expected 3 records");
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    nftw(tmpl, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_gen_corpus SOURCE_DIR OUT_DIR\n");
        return 2;
    }
    s_out = argv[2];
    s_mkdir(s_out);
    s_gen_wire();
    s_gen_cfg(argv[1]);
    s_gen_idx();
    s_gen_safetensors();
    s_gen_ckpt();
    return 0;
}
