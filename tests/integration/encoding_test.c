/* encoding_test: tensor encodings on the wire (protocol version 2) through the real daemons on
 * loopback.
 *
 *   1. one real fedmq-aggregator (tests/support/fm_aggtest.h: logreg, fedavg with server_lr
 *      1, no momentum, unweighted, buffer_k = 1, so version v+1 = v + the decoded delta). The
 *      test encodes a float delta x with fm_codec_enc_run (fp16, bf16, int8, top-k 10% fp32,
 *      int8+zstd, top-k 10% fp32+zstd), PUSHes it (fm_wire_encode_update_coded) and checks
 *      every entry of the next MODEL against w + x within the bound fm_codec.h states for
 *      that encoding, computed here from x alone (int8: max|x| / 127 per tensor; top-k: the
 *      k = ceil(0.1 n) largest |x| per tensor, ties to the lower index, selected here by a
 *      sort, land exactly, every other entry is bit for bit unchanged);
 *   2. malformed encoded UPDATEs (an index out of range, a duplicate index, an int8 scale
 *      NaN, values fewer than the tensor needs, a zstd frame truncated, a zstd frame with a
 *      bad magic) are each rejected and counted as "encoding" in stats.json and /metrics, the
 *      daemon keeps running, and a valid update sent after them is applied exactly;
 *      stats.json "encodings" then holds, per label, exactly the updates folded and the sum
 *      of the frame lengths sent (rejected frames are not counted), and /metrics agrees;
 *   3. median (buffer_k = 3) over an fp16, an int8+zstd and a top-k fp32 update: the version
 *      is the coordinate-wise median of (x1, x2, topk(x3)) within the larger of the fp16 and
 *      int8 bounds (the median moves by at most the largest perturbation of its inputs);
 *   4. a real broker, aggregator and fedmq-trainer (logreg) with trainer.encoding = int8,
 *      then with topk_fraction = 0.05 and zstd_level = 3: versions advance, stats.json
 *      "encodings" holds only that label ("int8", "topk-fp32+zstd"), nothing is rejected,
 *      and the trainer's /metrics fedmq_update_bytes_sent_total{encoding} is counted.
 * Every wait is bounded; children are reaped and temp dirs removed in the teardowns. */
#include <czmq.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_aggtest.h"
#include "fm_codec.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define TOPK 0.1

/* What the test sends: the encoder's config and the label the aggregator must count. */
typedef struct {
    const char *label;
    fm_codec_config_t cfg;
} enc_case_t;

static const enc_case_t s_cases[] = {
    {"fp16", {.dtype = FM_DT_F16}},
    {"bf16", {.dtype = FM_DT_BF16}},
    {"int8", {.dtype = FM_DT_I8}},
    {"topk-fp32", {.dtype = FM_DT_F32, .topk = TOPK}},
    {"int8+zstd", {.dtype = FM_DT_I8, .zstd_level = 3}},
    {"topk-fp32+zstd", {.dtype = FM_DT_F32, .topk = TOPK, .zstd_level = 3}},
};
#define NCASES (sizeof s_cases / sizeof s_cases[0])

/* A delta of n floats: 0.01 x normal (distinct magnitudes), a few entries below fp16's
 * normal range. */
static void s_delta(float *x, size_t n, uint64_t seed)
{
    fm_rng_t r;
    fm_rng_seed(&r, seed, 7);
    for (size_t j = 0; j < n; j++)
        x[j] = (float)(0.01 * fm_rng_normal(&r));
    for (size_t j = 0; j < n; j += 97)
        x[j] *= 1e-4f;
}

/* ---- the bounds, from x alone (fm_codec.h) --------------------------------------------- */

static const float *s_absx; /* for s_cmp_mag */

/* |x| descending, then the lower index. */
static int s_cmp_mag(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float u = fabsf(s_absx[i]), v = fabsf(s_absx[j]);
    if (u != v)
        return u > v ? -1 : 1;
    return (i > j) - (i < j);
}

/* kept[j] = 1 for the entries top-k(frac) keeps in each view of `layout`, else 0. */
static void s_topk_kept(const fm_model_t *layout, const float *x, double frac, uint8_t *kept)
{
    size_t np = fm_model_nparams(layout);
    memset(kept, 0, np);
    for (int v = 0; v < fm_model_nviews(layout); v++) {
        const fm_view_t *w = fm_model_view(layout, v);
        uint32_t *ord = malloc(w->numel * sizeof *ord);
        assert_non_null(ord);
        for (size_t i = 0; i < w->numel; i++)
            ord[i] = (uint32_t)i;
        s_absx = x + w->offset;
        qsort(ord, w->numel, sizeof *ord, s_cmp_mag);
        size_t k = (size_t)ceil(frac * (double)w->numel);
        if (k < 1)
            k = 1;
        for (size_t i = 0; i < k && i < w->numel; i++)
            kept[w->offset + ord[i]] = 1;
        free(ord);
    }
}

/* bound[j]: how far the decoded value of x[j] may be from x[j] under config c (0: exactly;
 * top-k: dropped entries decode to 0, so their "expected" is 0 with bound 0 too: see
 * s_expect). */
static void s_bounds(const fm_model_t *layout, const fm_codec_config_t *c, const float *x,
                     double *bound)
{
    for (int v = 0; v < fm_model_nviews(layout); v++) {
        const fm_view_t *w = fm_model_view(layout, v);
        double m = 0;
        for (size_t i = 0; i < w->numel; i++)
            m = fmax(m, fabs((double)x[w->offset + i]));
        double scale = m / 127.0;
        for (size_t i = 0; i < w->numel; i++) {
            double a = fabs((double)x[w->offset + i]);
            double *b = &bound[w->offset + i];
            switch (c->dtype) {
            case FM_DT_F16: *b = a >= ldexp(1, -14) ? ldexp(a, -11) : ldexp(1, -25); break;
            case FM_DT_BF16: *b = ldexp(a, -8); break;
            case FM_DT_I8: *b = scale * (1 + ldexp(1, -22)) + ldexp(a, -23); break;
            default: *b = 0; break;
            }
        }
    }
}

/* want[j]: the value x[j] decodes to ideally (top-k: 0 where dropped). */
static void s_expect(const fm_model_t *layout, const fm_codec_config_t *c, const float *x,
                     double *want, uint8_t *kept)
{
    size_t np = fm_model_nparams(layout);
    if (c->topk > 0)
        s_topk_kept(layout, x, c->topk, kept);
    else
        memset(kept, 1, np);
    for (size_t j = 0; j < np; j++)
        want[j] = kept[j] ? (double)x[j] : 0.0;
}

/* Check w1 against w0 + want within bound (plus the float32 rounding of the sum); entries
 * with kept[j] = 0 bit for bit unchanged. Returns the largest error over its bound. */
static double s_check(const char *label, const float *w0, const float *w1, const double *want,
                      const double *bound, const uint8_t *kept, size_t n)
{
    double worst = 0;
    size_t changed = 0, nkept = 0;
    for (size_t j = 0; j < n; j++) {
        if (!kept[j]) {
            if (memcmp(&w0[j], &w1[j], sizeof(float)) != 0)
                fail_msg("%s: entry %zu not sent, changed %.9g -> %.9g", label, j, w0[j], w1[j]);
            continue;
        }
        nkept++;
        changed += w0[j] != w1[j];
        double exact = (double)w0[j] + want[j];
        double tol = bound[j] + ldexp(fabs(exact), -23) + 1e-30;
        double err = fabs((double)w1[j] - exact);
        if (err > tol)
            fail_msg("%s: entry %zu: %.9g, want %.9g +- %.3g (w0 %.9g, x %.9g)", label, j, w1[j],
                     exact, tol, w0[j], want[j]);
        worst = fmax(worst, err / tol);
    }
    /* the delta did move the model (not a silently skipped fold that happens to fit) */
    if (changed < nkept / 2)
        fail_msg("%s: only %zu of %zu sent entries changed", label, changed, nkept);
    return worst;
}

/* ---- sending --------------------------------------------------------------------------- */

/* Encode x with config c (residual: none; int8's rounding seeded by `seed`) into c->buf as
 * an UPDATE from `base` for `client`. The frame length. */
static size_t s_encode(fm_at_t *c, const fm_codec_config_t *cfg, const float *x, uint64_t base,
                       uint32_t client, uint64_t seed)
{
    int err = 0;
    fm_codec_enc_t *enc = fm_codec_enc_new(c->layout, cfg, &err);
    assert_non_null(enc);
    fm_codec_tensor_t coded[8];
    assert_true(fm_model_nviews(c->layout) <= 8);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 1);
    assert_int_equal(fm_codec_enc_run(enc, x, NULL, &rng, coded), 0);
    fm_wire_update_t h;
    memset(&h, 0, sizeof h);
    assert_int_equal(fm_wire_id_new(h.id), 0);
    snprintf(h.trainer, sizeof h.trainer, "agg-test");
    h.client = client;
    h.base = base;
    h.num_samples = 10;
    h.local_steps = 1;
    assert_int_equal(fm_wire_encode_update_coded(&h, c->layout, NULL, coded, &c->buf), 0);
    fm_codec_enc_destroy(&enc);
    return c->buf.len;
}

static void s_push(fm_at_t *c)
{
    assert_int_equal(zmq_send(zsock_resolve(c->push), c->buf.data, c->buf.len, 0),
                     (int)c->buf.len);
}

/* The encoded tensors of c->buf (just encoded) decoded back, for tampering: the frame is
 * decoded in place and re-encoded by s_resend from t (pointers into a copy of the frame). */
typedef struct {
    unsigned char *frame;
    fm_wire_update_t h;
    fm_codec_tensor_t coded[8];
    int weight; /* index of the large view ("weight") */
} tamper_t;

static void s_tamper_open(fm_at_t *c, tamper_t *t)
{
    fm_errmsg_t e = {{0}};
    t->frame = malloc(c->buf.len);
    assert_non_null(t->frame);
    memcpy(t->frame, c->buf.data, c->buf.len);
    assert_int_equal(fm_wire_decode_update(t->frame, c->buf.len, &t->h, c->ts, &e), 0);
    assert_int_equal(c->ts->count, fm_model_nviews(c->layout));
    t->weight = 0;
    for (int i = 0; i < c->ts->count; i++) {
        assert_string_equal(c->ts->t[i].name, fm_model_view(c->layout, i)->name);
        t->coded[i] = c->ts->t[i].enc;
        if (fm_model_view(c->layout, i)->numel > fm_model_view(c->layout, t->weight)->numel)
            t->weight = i;
    }
    assert_int_equal(fm_wire_id_new(t->h.id), 0); /* a fresh id: not a duplicate */
}

/* Re-encode the tampered tensors and send; frees the copy. */
static void s_tamper_send(fm_at_t *c, tamper_t *t)
{
    assert_int_equal(fm_wire_encode_update_coded(&t->h, c->layout, NULL, t->coded, &c->buf), 0);
    s_push(c);
    free(t->frame);
    t->frame = NULL;
}

/* stats.json once rejected "encoding" >= want; fails on timeout. */
static fm_stats_t s_wait_rejected(fm_at_t *c, const char *reason, uint64_t want)
{
    char path[400];
    snprintf(path, sizeof path, "%s/stats.json", c->ckpt);
    double end = fm_proc_now() + FM_AT_WAIT_S;
    fm_stats_t st;
    for (;;) {
        if (fm_stats_read(path, &st, NULL) == 0 && st.updates_rejected >= want)
            break;
        if (fm_proc_now() > end)
            fail_msg("%s: %llu rejected, want %llu", path,
                     (unsigned long long)fm_stats_rejected(&st, reason),
                     (unsigned long long)want);
        fm_proc_sleep(0.02);
    }
    assert_int_equal(fm_stats_rejected(&st, reason), want); /* all of them for that reason */
    return st;
}

static const fm_stats_encoding_t *s_find_enc(const fm_stats_t *st, const char *name)
{
    for (int i = 0; i < st->nencodings; i++)
        if (strcmp(st->encodings[i].name, name) == 0)
            return &st->encodings[i];
    return NULL;
}

/* ---- 1 + 2: each encoding applied exactly, the malformed ones rejected ---------------- */

static void test_encodings_applied(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *x = fm_at_floats(c);
    double *want = calloc(n, sizeof *want), *bound = calloc(n, sizeof *bound);
    uint8_t *kept = malloc(n);
    assert_non_null(want);
    assert_non_null(bound);
    assert_non_null(kept);
    uint64_t sent_updates[NCASES] = {0}, sent_bytes[NCASES] = {0};

    fm_at_start(c, 1, NULL);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    uint64_t v = 0;
    for (size_t i = 0; i < NCASES; i++) {
        const enc_case_t *k = &s_cases[i];
        s_delta(x, n, 100 + i);
        sent_bytes[i] += s_encode(c, &k->cfg, x, v, (uint32_t)i, 1000 + i);
        sent_updates[i]++;
        s_push(c);
        assert_int_equal(fm_at_wait_model(c, v + 1, w1), (int64_t)(v + 1));
        s_expect(c->layout, &k->cfg, x, want, kept);
        s_bounds(c->layout, &k->cfg, x, bound);
        double worst = s_check(k->label, w0, w1, want, bound, kept, n);
        print_message("%-15s %6zu bytes: worst error %.2f of its bound\n", k->label,
                      (size_t)sent_bytes[i], worst);
        memcpy(w0, w1, n * sizeof *w0);
        v++;
    }

    /* 2. malformed encodings, each rejected as "encoding" */
    static const char *const bad[] = {"index out of range", "duplicate index", "scale NaN",
                                      "values short",       "zstd truncated",  "zstd bad magic"};
    size_t nbad = sizeof bad / sizeof bad[0];
    uint32_t *idx = NULL;
    for (size_t b = 0; b < nbad; b++) {
        tamper_t t;
        s_delta(x, n, 500 + b);
        const fm_codec_config_t *cfg = b < 2   ? &s_cases[3].cfg  /* topk-fp32 */
                                       : b < 3 ? &s_cases[2].cfg  /* int8 */
                                       : b < 4 ? &s_cases[0].cfg  /* fp16 */
                                               : &s_cases[4].cfg; /* int8+zstd */
        s_encode(c, cfg, x, v, 50, 2000 + b);
        s_tamper_open(c, &t);
        fm_codec_tensor_t *w = &t.coded[t.weight];
        size_t numel = fm_model_view(c->layout, t.weight)->numel;
        if (b < 2) {
            size_t ni = w->idx_nbytes / 4;
            assert_true(ni >= 3);
            idx = malloc(w->idx_nbytes);
            assert_non_null(idx);
            memcpy(idx, w->idx, w->idx_nbytes);
            if (b == 0)
                idx[ni - 1] = (uint32_t)numel; /* increasing, one past the end */
            else
                idx[2] = idx[1]; /* a repeat, in the first block */
            w->idx = idx;
        } else if (b == 2) {
            w->scale = NAN;
        } else if (b == 3) {
            w->nbytes -= 2; /* one fp16 value short */
        } else if (b == 4) {
            assert_true(w->zstd && w->nbytes > 16);
            w->nbytes -= 5; /* the frame's end (and its last block) cut */
        } else {
            assert_true(w->zstd);
            unsigned char *p = malloc(w->nbytes);
            assert_non_null(p);
            memcpy(p, w->data, w->nbytes);
            p[0] ^= 0xff; /* not a zstd frame */
            w->data = p;
            idx = (uint32_t *)p;
        }
        s_tamper_send(c, &t);
        free(idx);
        idx = NULL;
        fm_stats_t st = s_wait_rejected(c, "encoding", b + 1);
        assert_int_equal(st.updates_applied, NCASES);
        assert_int_equal(st.version, v);
        assert_int_equal(kill(c->pid, 0), 0); /* still running */
        print_message("rejected as encoding: %s\n", bad[b]);
    }
    assert_true(fm_proc_file_contains(c->log, "rejected frame (encoding): UPDATE from agg-test"));

    /* a valid update after them: applied exactly (nothing accepted lost) */
    s_delta(x, n, 900);
    sent_bytes[2] += s_encode(c, &s_cases[2].cfg, x, v, 60, 3000);
    sent_updates[2]++;
    s_push(c);
    assert_int_equal(fm_at_wait_model(c, v + 1, w1), (int64_t)(v + 1));
    s_expect(c->layout, &s_cases[2].cfg, x, want, kept);
    s_bounds(c->layout, &s_cases[2].cfg, x, bound);
    s_check("int8 after the rejections", w0, w1, want, bound, kept, n);
    v++;

    /* stats.json "encodings": exactly what was folded, frame bytes as sent */
    fm_stats_t st = fm_at_stats(c, NCASES + 1);
    assert_int_equal(st.updates_applied, NCASES + 1);
    assert_int_equal(fm_stats_rejected(&st, "encoding"), nbad);
    assert_int_equal(st.updates_rejected, nbad);
    assert_int_equal(st.nencodings, (int)NCASES);
    for (size_t i = 0; i < NCASES; i++) {
        const fm_stats_encoding_t *e = s_find_enc(&st, s_cases[i].label);
        if (!e)
            fail_msg("stats.json: no encoding '%s'", s_cases[i].label);
        assert_int_equal(e->updates, sent_updates[i]);
        assert_int_equal(e->bytes, sent_bytes[i]);
        char series[128];
        snprintf(series, sizeof series, "fedmq_update_bytes_total{encoding=\"%s\"}",
                 s_cases[i].label);
        fm_at_expect_metric(c, series, (double)sent_bytes[i]);
        snprintf(series, sizeof series, "fedmq_updates_by_encoding_total{encoding=\"%s\"}",
                 s_cases[i].label);
        fm_at_expect_metric(c, series, (double)sent_updates[i]);
    }
    fm_at_expect_metric(c, "fedmq_updates_rejected_total{reason=\"encoding\"}", (double)nbad);
    fm_at_stop(c);
    free(want);
    free(bound);
    free(kept);
}

/* ---- 3. median over encoded updates ---------------------------------------------------- */

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_median_encoded(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w0 = fm_at_floats(c), *w1 = fm_at_floats(c), *x[3];
    double *want[3], *bound[3], *med = calloc(n, sizeof *med), *tol = calloc(n, sizeof *tol);
    uint8_t *kept = malloc(n), *all = malloc(n);
    assert_non_null(med);
    assert_non_null(tol);
    assert_non_null(kept);
    assert_non_null(all);
    const enc_case_t *k[3] = {&s_cases[0], &s_cases[4], &s_cases[3]}; /* fp16, int8+zstd, topk */
    for (int i = 0; i < 3; i++) {
        x[i] = fm_at_floats(c);
        want[i] = calloc(n, sizeof(double));
        bound[i] = calloc(n, sizeof(double));
        assert_non_null(want[i]);
        assert_non_null(bound[i]);
        s_delta(x[i], n, 700 + (uint64_t)i);
        s_expect(c->layout, &k[i]->cfg, x[i], want[i], kept);
        s_bounds(c->layout, &k[i]->cfg, x[i], bound[i]);
    }
    for (size_t j = 0; j < n; j++) {
        double v[3] = {want[0][j], want[1][j], want[2][j]};
        qsort(v, 3, sizeof v[0], s_cmp_double);
        med[j] = v[1];
        tol[j] = fmax(bound[0][j], fmax(bound[1][j], bound[2][j]));
    }
    memset(all, 1, n);
    const char *const extra[] = {"aggregator.aggregation=median", NULL};
    fm_at_start(c, 3, extra);
    assert_int_equal(fm_at_wait_model(c, 0, w0), 0);
    for (int i = 0; i < 3; i++) {
        s_encode(c, &k[i]->cfg, x[i], 0, (uint32_t)i, 4000 + (uint64_t)i);
        s_push(c);
    }
    assert_int_equal(fm_at_wait_model(c, 1, w1), 1);
    double worst = s_check("median", w0, w1, med, tol, all, n);
    print_message("median of fp16, int8+zstd, topk-fp32: worst error %.2f of its bound\n", worst);
    assert_true(fm_proc_file_contains(c->log, "aggregation median over 3 stored updates"));
    fm_stats_t st = fm_at_stats(c, 3);
    assert_int_equal(st.updates_rejected, 0);
    for (int i = 0; i < 3; i++) {
        const fm_stats_encoding_t *e = s_find_enc(&st, k[i]->label);
        assert_non_null(e);
        assert_int_equal(e->updates, 1);
    }
    fm_at_stop(c);
    for (int i = 0; i < 3; i++) {
        free(want[i]);
        free(bound[i]);
    }
    free(med);
    free(tol);
    free(kept);
    free(all);
}

/* ---- 4. a real trainer that encodes ---------------------------------------------------- */

#define E2E_WAIT_S 90.0

typedef struct {
    char dir[256];
    fm_proc_set_t procs;
} fed_t;

static fed_t s_fed; /* for the teardown: children reaped even when an assert fails */

static int s_fed_teardown(void **state)
{
    (void)state;
    fm_proc_reap_all(&s_fed.procs);
    if (s_fed.dir[0])
        fm_proc_rmtree(s_fed.dir);
    memset(&s_fed, 0, sizeof s_fed);
    return 0;
}

static pid_t s_fed_start(fed_t *f, const char *daemon, char sets[][600], int nsets,
                         const char *const *extra, int *metrics_port)
{
    char bin[300], log[400], met[64];
    char *av[2 * 32 + 4];
    int ac = 0;
    snprintf(bin, sizeof bin, "%s/fedmq-%s", FM_BIN_DIR, daemon);
    snprintf(log, sizeof log, "%s/%s.log", f->dir, daemon);
    av[ac++] = bin;
    av[ac++] = "--set";
    av[ac++] = fm_proc_metrics_set(met, sizeof met, daemon, metrics_port);
    for (int i = 0; i < nsets; i++) {
        av[ac++] = "--set";
        av[ac++] = sets[i];
    }
    for (int i = 0; extra && extra[i]; i++) {
        av[ac++] = "--set";
        av[ac++] = (char *)extra[i];
    }
    av[ac++] = "--log-level";
    av[ac++] = "info";
    av[ac] = NULL;
    return fm_proc_spawn(&f->procs, av, log);
}

/* A federation of broker, aggregator and one trainer with `extra` trainer keys; waits for
 * `want` updates folded under `label`, nothing rejected. */
static void s_federation(const char *label, const char *const *extra)
{
    fed_t *f = &s_fed;
    memset(f, 0, sizeof *f);
    assert_int_equal(fm_proc_tmpdir(f->dir, sizeof f->dir), 0);
    char sets[16][600];
    int ns = 0;
    static const char *const eps[] = {"model_pub",         "snapshot",    "updates",
                                      "aggregator_models", "metrics_pub", "acks"};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++)
        snprintf(sets[ns++], 600, "endpoints.%s=tcp://127.0.0.1:%d", eps[i], fm_proc_free_port());
    snprintf(sets[ns++], 600, "federation.model=logreg");
    snprintf(sets[ns++], 600, "federation.num_clients=20");
    snprintf(sets[ns++], 600, "federation.partition=iid");
    snprintf(sets[ns++], 600, "trainer.clients=0-3");
    snprintf(sets[ns++], 600, "trainer.workers=1");
    snprintf(sets[ns++], 600, "aggregator.buffer_k=2");
    snprintf(sets[ns++], 600, "aggregator.checkpoint_dir=%s/ckpt", f->dir);
    char stats[700], tlog[700];
    snprintf(stats, sizeof stats, "%s/ckpt/stats.json", f->dir);
    snprintf(tlog, sizeof tlog, "%s/trainer.log", f->dir);
    int tport = 0;
    pid_t agg = s_fed_start(f, "aggregator", sets, ns, NULL, NULL);
    pid_t broker = s_fed_start(f, "broker", sets, ns, NULL, NULL);
    pid_t tr = s_fed_start(f, "trainer", sets, ns, extra, &tport);
    assert_true(agg > 0 && broker > 0 && tr > 0);
    double end = fm_proc_now() + E2E_WAIT_S;
    fm_stats_t st;
    const fm_stats_encoding_t *e = NULL;
    for (;;) {
        memset(&st, 0, sizeof st);
        if (fm_stats_read(stats, &st, NULL) == 0 && (e = s_find_enc(&st, label)) != NULL &&
            e->updates >= 6 && st.version >= 3)
            break;
        if (fm_proc_now() > end || kill(tr, 0) != 0 || kill(agg, 0) != 0) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "tail -n 5 '%s'/*.log >&2", f->dir);
            if (system(cmd) != 0)
                fprintf(stderr, "no logs\n");
            fail_msg("%s: no 6 updates '%s' in stats.json (version %llu, %d encodings)", label,
                     label, (unsigned long long)st.version, st.nencodings);
        }
        fm_proc_sleep(0.1);
    }
    assert_int_equal(st.updates_rejected, 0);
    assert_int_equal(st.nencodings, 1); /* that label only */
    assert_true(e->bytes > 0);
    assert_true(fm_proc_file_contains(tlog, "updates encoded as "));
    char series[160];
    fm_http_resp_t r;
    double sent = 0;
    snprintf(series, sizeof series, "fedmq_update_bytes_sent_total{encoding=\"%s\"}",
             strcmp(label, "int8") == 0 ? "int8" : "topk-0.05-fp32-ef+zstd3");
    assert_int_equal(fm_http_request(tport, "GET", "/metrics", &r), 0);
    int found = r.body && fm_http_sample(r.body, series, &sent);
    fm_http_free(&r);
    if (!found)
        fail_msg("trainer /metrics: no %s", series);
    assert_true(sent > 0);
    print_message("%s: %llu updates, %llu bytes folded (%.0f bytes/update); trainer sent %.0f "
                  "bytes\n",
                  label, (unsigned long long)e->updates, (unsigned long long)e->bytes,
                  (double)e->bytes / (double)e->updates, sent);
    int stt = fm_proc_stop(tr, SIGTERM, 20.0);
    assert_true(WIFEXITED(stt) && WEXITSTATUS(stt) == 0);
}

static void test_trainer_int8(void **state)
{
    (void)state;
    const char *const extra[] = {"trainer.encoding=int8", NULL};
    s_federation("int8", extra);
}

static void test_trainer_topk_zstd(void **state)
{
    (void)state;
    const char *const extra[] = {"trainer.topk_fraction=0.05", "trainer.zstd_level=3", NULL};
    s_federation("topk-fp32+zstd", extra);
}

/* ---- 5. the broker takes a version-2 MODEL --------------------------------------------- */

/* Publish MODEL `version` (params w, tensors coded: NULL = raw) on pub until the broker
 * serves that version to a SNAPSHOT_REQ on the DEALER `snap`; 1 if it did within 10 s. */
static int s_broker_forwards(zsock_t *pub, zsock_t *snap, fm_at_t *c, uint64_t version,
                             const float *w, const fm_codec_tensor_t *coded)
{
    fm_wire_model_t h;
    memset(&h, 0, sizeof h);
    h.version = version;
    h.created = 1.0;
    fm_wire_buf_t model = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_model_coded(&h, c->layout, w, coded, &model), 0);
    fm_wire_snapshot_req_t r = {.from = "enc-test"};
    assert_int_equal(fm_wire_encode_snapshot_req(&r, &c->buf), 0);
    double end = fm_proc_now() + 10.0;
    int ok = 0;
    while (!ok && fm_proc_now() < end) {
        zmq_send(zsock_resolve(pub), model.data, model.len, 0);
        zmq_send(zsock_resolve(snap), c->buf.data, c->buf.len, 0);
        zframe_t *f;
        while (!ok && (f = zframe_recv(snap)) != NULL) {
            fm_wire_model_t got;
            fm_errmsg_t e = {{0}};
            ok = fm_wire_decode_model(zframe_data(f), zframe_size(f), &got, c->ts, &e) == 0 &&
                 got.version == version && fm_wire_tensors_check(c->ts, c->layout, &e) == 0;
            zframe_destroy(&f);
        }
    }
    fm_wire_buf_free(&model);
    return ok;
}

/* A MODEL whose tensors are encoded (protocol version 2: what an aggregator may publish) is
 * checked by the broker, not an assertion: after a raw version 1, a valid fp16 version 2 is
 * forwarded, a corrupt int8+zstd version 3 rejected (the broker keeps running), and a raw
 * version 4 forwarded. */
static void test_broker_encoded_model(void **state)
{
    fm_at_t *c = *state;
    size_t n = c->np;
    float *w = fm_at_floats(c);
    s_delta(w, n, 42);
    char ep_pub[64], ep_snap[64], log[400], set_agg[128], set_pub[128], set_snap[128],
        set_met[64];
    snprintf(ep_pub, sizeof ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(ep_snap, sizeof ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(log, sizeof log, "%s/broker.log", c->dir);
    snprintf(set_agg, sizeof set_agg, "endpoints.aggregator_models=%s", c->ep_models);
    snprintf(set_pub, sizeof set_pub, "endpoints.model_pub=%s", ep_pub);
    snprintf(set_snap, sizeof set_snap, "endpoints.snapshot=%s", ep_snap);
    zsock_t *pub = zsock_new(ZMQ_PUB), *sub = zsock_new(ZMQ_DEALER);
    assert_non_null(pub);
    assert_non_null(sub);
    zsock_set_linger(pub, 0);
    zsock_set_linger(sub, 0);
    assert_true(zsock_bind(pub, "%s", c->ep_models) > 0);
    zsock_set_rcvtimeo(sub, 100);
    assert_int_equal(zsock_connect(sub, "%s", ep_snap), 0);
    char *argv[] = {FM_BIN_DIR "/fedmq-broker",
                    "--set",
                    fm_proc_metrics_set(set_met, sizeof set_met, "broker", NULL),
                    "--set",
                    "federation.model=logreg",
                    "--set",
                    set_agg,
                    "--set",
                    set_pub,
                    "--set",
                    set_snap,
                    NULL};
    pid_t broker = fm_proc_spawn(&c->procs, argv, log);
    assert_true(broker > 0);

    assert_true(s_broker_forwards(pub, sub, c, 1, w, NULL)); /* connected end to end */
    int err = 0;
    fm_codec_config_t f16 = {.dtype = FM_DT_F16}, z = {.dtype = FM_DT_I8, .zstd_level = 3};
    fm_codec_enc_t *enc = fm_codec_enc_new(c->layout, &f16, &err);
    assert_non_null(enc);
    fm_codec_tensor_t coded[8];
    fm_rng_t rng;
    fm_rng_seed(&rng, 1, 1);
    assert_int_equal(fm_codec_enc_run(enc, w, NULL, &rng, coded), 0);
    if (!s_broker_forwards(pub, sub, c, 2, NULL, coded)) {
        char cmd[500];
        snprintf(cmd, sizeof cmd, "tail -n 3 '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "no broker log\n");
        fail_msg("the broker did not forward an fp16 MODEL (alive: %d)", kill(broker, 0) == 0);
    }
    fm_codec_enc_destroy(&enc);
    assert_int_equal(kill(broker, 0), 0);

    enc = fm_codec_enc_new(c->layout, &z, &err);
    assert_non_null(enc);
    assert_int_equal(fm_codec_enc_run(enc, w, NULL, &rng, coded), 0);
    int big = fm_model_view(c->layout, 0)->numel > fm_model_view(c->layout, 1)->numel ? 0 : 1;
    coded[big].nbytes -= 5; /* a truncated zstd frame */
    fm_wire_model_t h;
    memset(&h, 0, sizeof h);
    h.version = 3;
    h.created = 1.0;
    assert_int_equal(fm_wire_encode_model_coded(&h, c->layout, NULL, coded, &c->buf), 0);
    fm_codec_enc_destroy(&enc);
    assert_int_equal(zmq_send(zsock_resolve(pub), c->buf.data, c->buf.len, 0), (int)c->buf.len);
    assert_true(fm_proc_wait_file_contains(log, "aggregator_models: frame rejected", 10.0));
    assert_int_equal(kill(broker, 0), 0);

    assert_true(s_broker_forwards(pub, sub, c, 4, w, NULL));
    int st = fm_proc_stop(broker, SIGTERM, 10.0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zsock_destroy(&sub);
    zsock_destroy(&pub);
}

int main(void)
{
    if (!getenv("TMPDIR"))
        setenv("TMPDIR", FM_BIN_DIR, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_encodings_applied, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_median_encoded, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_setup_teardown(test_broker_encoded_model, fm_at_setup, fm_at_teardown),
        cmocka_unit_test_teardown(test_trainer_int8, s_fed_teardown),
        cmocka_unit_test_teardown(test_trainer_topk_zstd, s_fed_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
