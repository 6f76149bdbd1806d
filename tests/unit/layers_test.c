/* Unit tests of fm_layers (and, at the end, of whole-model gradients through fm_work):
 *   - every BLAS kernel against its naive double-accumulating twin, on random data and on
 *     odd as well as the real shapes, forward and backward, including the ACCUMULATE (dw,
 *     db) / OVERWRITE (dinp) / dinp == NULL conventions;
 *   - the fused cnn kernels (conv2d *_act, relu_maxpool2) against the compositions of the
 *     plain kernels they replace;
 *   - central finite differences for every layer (dense, conv2d, relu, maxpool2, fused
 *     relu+maxpool2 with bias, dropout with a fixed mask, log-softmax + NLL) and for the
 *     logreg, mlp and cnn as a whole (cnn also with dropout on);
 *   - maxpool tie-breaking (first maximum, as PyTorch) and dropout statistics.
 *
 * Error measure: max|a - b| / max|b| with b the reference (fm_tu_rel_err). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../support/fm_testutil.h"
#include "fm_blas.h"
#include "fm_layers.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_work.h"

/* Fast (float sgemm) vs naive (double accumulation, rounded once): a dot product of K float
 * terms summed in float has a typical (random-walk) error of about sqrt(K) * 2^-24 * the
 * size of the partial sums, i.e. ~1e-6 of max|out| for K = 9216 (measured worst over these
 * shapes: 7.4e-7). The worst-case bound K * 2^-24 would be useless (5e-4), so take 1e-5:
 * more than 10x the typical error and far below any real indexing or transpose mistake,
 * which gives O(1) errors. */
#define TOL_TWIN 1e-5

static double s_twin_worst; /* worst fast-vs-naive error seen, for the log */

/* Assert a fast-vs-naive error and remember the worst. */
#define TWIN_OK(err, ...)                                                                        \
    do {                                                                                         \
        double twin_e_ = (err);                                                                  \
        s_twin_worst = twin_e_ > s_twin_worst ? twin_e_ : s_twin_worst;                          \
        FM_TU_ASSERT_LE(twin_e_, TOL_TWIN, __VA_ARGS__);                                         \
    } while (0)

/* Finite differences of L = sum(out * R) with float forwards. The layers are linear (dense,
 * conv) or piecewise linear away from kinks (relu, maxpool, dropout) in each variable, so
 * central differences have no truncation error; what remains is float rounding of the
 * outputs that change, ~sqrt(#changed) * 6e-8 * |out| / (2h) ~ 1e-5 with h = 1e-2. Tolerance
 * 1e-3 of the largest gradient: 100x that, while a wrong index, sign or missing factor
 * gives O(1). */
#define FD_H 1e-2
#define TOL_FD_LINEAR 1e-3
/* log-softmax + NLL is smooth, truncation error h^2/6 * f''' ~ 1e-5 for h = 1e-2, plus the
 * float rounding of logp (~2e-7 / 2h = 1e-5): tolerance 1e-3 of the largest gradient. */
#define TOL_FD_NLL 1e-3

/* ---- finite-difference driver ------------------------------------------------------------- */

typedef double (*objective_fn)(void *ctx);

/* Central difference of f with respect to p[i]; the step actually taken (float rounding of
 * p[i] +- h) is used as the denominator. p[i] is restored. */
static double s_fd(objective_fn f, void *ctx, float *p, size_t i, double h)
{
    float v = p[i];
    float vp = (float)(v + h), vm = (float)(v - h);
    p[i] = vp;
    double lp = f(ctx);
    p[i] = vm;
    double lm = f(ctx);
    p[i] = v;
    return (lp - lm) / ((double)vp - (double)vm);
}

/* Check grad[idx[k]] against finite differences for k < nidx (idx NULL: all n elements);
 * returns max|fd - grad| / max|grad| over the checked elements. */
static double s_fd_check(objective_fn f, void *ctx, float *p, const float *grad, size_t n,
                         const size_t *idx, size_t nidx, double h)
{
    size_t cnt = idx ? nidx : n;
    double maxd = 0.0, maxg = 0.0;
    for (size_t k = 0; k < cnt; k++) {
        size_t i = idx ? idx[k] : k;
        assert_true(i < n);
        double fd = s_fd(f, ctx, p, i, h);
        double d = fabs(fd - grad[i]);
        if (!(d == d))
            return INFINITY;
        maxd = d > maxd ? d : maxd;
        maxg = fabs(grad[i]) > maxg ? fabs(grad[i]) : maxg;
    }
    assert_true(maxg > 0.0); /* a check on all-zero gradients would prove nothing */
    return maxd / maxg;
}

/* sum(a * r) in double */
static double s_dot(const float *a, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * r[i];
    return s;
}

/* ---- dense: fast vs naive ------------------------------------------------------------------ */

static void s_dense_twins(int B, int IN, int OUT, uint64_t seed)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 1);
    size_t ni = (size_t)B * IN, nw = (size_t)OUT * IN, no = (size_t)B * OUT;
    float *inp = fm_tu_floats(ni), *w = fm_tu_floats(nw), *b = fm_tu_floats(OUT);
    float *dout = fm_tu_floats(no);
    double bound = 1.0 / sqrt((double)IN);
    fm_tu_uniform(&rng, inp, ni, -1.0, 1.0);
    fm_tu_uniform(&rng, w, nw, -bound, bound);
    fm_tu_uniform(&rng, b, OUT, -bound, bound);
    fm_tu_uniform(&rng, dout, no, -1.0, 1.0);

    /* forward: both overwrite out (pre-filled with NaN) */
    float *of = fm_tu_floats(no), *on = fm_tu_floats(no);
    fm_tu_fill(of, no, NAN);
    fm_tu_fill(on, no, NAN);
    fm_dense_forward(of, inp, w, b, B, IN, OUT);
    fm_dense_forward_naive(on, inp, w, b, B, IN, OUT);
    assert_true(fm_tu_all_finite(of, no) && fm_tu_all_finite(on, no));
    assert_true(fm_tu_max_abs(on, no) > 0.0);
    double e = fm_tu_rel_err(of, on, no);
    TWIN_OK(e, "dense forward B=%d IN=%d OUT=%d\n", B, IN, OUT);

    /* backward: dw, db pre-filled with a known pattern (accumulated into), dinp with NaN
     * (overwritten) */
    float *dw0 = fm_tu_floats(nw), *db0 = fm_tu_floats(OUT);
    fm_tu_uniform(&rng, dw0, nw, -1.0, 1.0);
    fm_tu_uniform(&rng, db0, OUT, -1.0, 1.0);
    float *dwf = fm_tu_floats(nw), *dbf = fm_tu_floats(OUT), *dinf = fm_tu_floats(ni);
    float *dwn = fm_tu_floats(nw), *dbn = fm_tu_floats(OUT), *dinn = fm_tu_floats(ni);
    float *dwz = fm_tu_floats(nw), *dbz = fm_tu_floats(OUT); /* naive from zero: the gradient */
    memcpy(dwf, dw0, nw * sizeof(float));
    memcpy(dwn, dw0, nw * sizeof(float));
    memcpy(dbf, db0, OUT * sizeof(float));
    memcpy(dbn, db0, OUT * sizeof(float));
    fm_tu_fill(dinf, ni, NAN);
    fm_tu_fill(dinn, ni, NAN);
    fm_dense_backward(dinf, dwf, dbf, dout, inp, w, B, IN, OUT);
    fm_dense_backward_naive(dinn, dwn, dbn, dout, inp, w, B, IN, OUT);
    fm_dense_backward_naive(NULL, dwz, dbz, dout, inp, w, B, IN, OUT);
    assert_true(fm_tu_all_finite(dinf, ni) && fm_tu_all_finite(dinn, ni));
    TWIN_OK(fm_tu_rel_err(dinf, dinn, ni), "dense dinp %d/%d/%d\n", B, IN, OUT);
    TWIN_OK(fm_tu_rel_err(dwf, dwn, nw), "dense dw %d/%d/%d\n", B, IN, OUT);
    TWIN_OK(fm_tu_rel_err(dbf, dbn, OUT), "dense db %d/%d/%d\n", B, IN, OUT);

    /* accumulation: (dw - dw0) is the gradient alone, for both twins. The subtraction costs
     * ~6e-8 * max|dw0| = 6e-8 absolute, tiny next to max|gradient| >= ~0.1 here. */
    float *acc = fm_tu_floats(nw);
    for (size_t i = 0; i < nw; i++)
        acc[i] = dwf[i] - dw0[i];
    TWIN_OK(fm_tu_rel_err(acc, dwz, nw), "dense dw accumulates\n");
    for (size_t i = 0; i < nw; i++)
        acc[i] = dwn[i] - dw0[i];
    TWIN_OK(fm_tu_rel_err(acc, dwz, nw), "dense naive dw accumulates\n");
    for (int o = 0; o < OUT; o++)
        acc[o] = dbf[o] - db0[o];
    TWIN_OK(fm_tu_rel_err(acc, dbz, OUT), "dense db accumulates\n");
    for (int o = 0; o < OUT; o++)
        acc[o] = dbn[o] - db0[o];
    TWIN_OK(fm_tu_rel_err(acc, dbz, OUT), "dense naive db accumulates\n");

    /* dinp == NULL: same dw, db as with dinp (same sgemm call, so the same values) */
    float *dw2 = fm_tu_floats(nw), *db2 = fm_tu_floats(OUT);
    memcpy(dw2, dw0, nw * sizeof(float));
    memcpy(db2, db0, OUT * sizeof(float));
    fm_dense_backward(NULL, dw2, db2, dout, inp, w, B, IN, OUT);
    FM_TU_ASSERT_LE(fm_tu_rel_err(dw2, dwf, nw), 1e-6, "dense dw with dinp NULL\n");
    FM_TU_ASSERT_LE(fm_tu_rel_err(db2, dbf, OUT), 1e-6, "dense db with dinp NULL\n");

    /* a second backward into the same dw accumulates again: dw = dw0 + 2 G */
    fm_dense_backward(NULL, dw2, db2, dout, inp, w, B, IN, OUT);
    for (size_t i = 0; i < nw; i++)
        acc[i] = (dw2[i] - dw0[i]) * 0.5f;
    TWIN_OK(fm_tu_rel_err(acc, dwz, nw), "dense dw accumulates twice\n");

    free(inp), free(w), free(b), free(dout), free(of), free(on), free(dw0), free(db0);
    free(dwf), free(dbf), free(dinf), free(dwn), free(dbn), free(dinn), free(dwz), free(dbz);
    free(acc), free(dw2), free(db2);
}

static void test_dense_twins(void **state)
{
    s_twin_worst = 0.0;
    s_dense_twins(3, 7, 5, 11);      /* odd */
    s_dense_twins(1, 1, 1, 12);      /* degenerate */
    s_dense_twins(16, 784, 200, 13); /* mlp fc1 / logreg-like */
    s_dense_twins(7, 200, 200, 14);  /* mlp fc2, odd batch */
    s_dense_twins(4, 200, 10, 15);   /* mlp fc3 */
    s_dense_twins(5, 9216, 128, 16); /* cnn fc1 */
    s_dense_twins(2, 128, 10, 17);   /* cnn fc2 */
    print_message("dense fast vs naive: worst relative error %.2e\n", s_twin_worst);
}

/* ---- conv2d: fast vs naive ------------------------------------------------------------------
 */

static void s_conv_twins(int B, int C, int H, int W, int OC, int KH, int KW, uint64_t seed)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 2);
    int OH = H - KH + 1, OW = W - KW + 1;
    size_t ni = (size_t)B * C * H * W, nw = (size_t)OC * C * KH * KW;
    size_t no = (size_t)B * OC * OH * OW;
    float *inp = fm_tu_floats(ni), *w = fm_tu_floats(nw), *b = fm_tu_floats(OC);
    float *dout = fm_tu_floats(no);
    float *scratch = fm_tu_floats(fm_conv2d_scratch(C, H, W, OC, KH, KW));
    assert_int_equal(fm_conv2d_scratch(C, H, W, OC, KH, KW),
                     (size_t)C * KH * KW * OH * OW + (size_t)C * KH * KW * OC);
    double bound = 1.0 / sqrt((double)C * KH * KW);
    fm_tu_uniform(&rng, inp, ni, -1.0, 1.0);
    fm_tu_uniform(&rng, w, nw, -bound, bound);
    fm_tu_uniform(&rng, b, OC, -bound, bound);
    fm_tu_uniform(&rng, dout, no, -1.0, 1.0);

    float *of = fm_tu_floats(no), *on = fm_tu_floats(no);
    fm_tu_fill(of, no, NAN);
    fm_tu_fill(on, no, NAN);
    fm_conv2d_forward(of, inp, w, b, scratch, B, C, H, W, OC, KH, KW);
    fm_conv2d_forward_naive(on, inp, w, b, B, C, H, W, OC, KH, KW);
    assert_true(fm_tu_all_finite(of, no) && fm_tu_all_finite(on, no));
    TWIN_OK(fm_tu_rel_err(of, on, no),
            "conv forward B=%d C=%d H=%d W=%d "
            "OC=%d KH=%d KW=%d\n",
            B, C, H, W, OC, KH, KW);

    float *dw0 = fm_tu_floats(nw), *db0 = fm_tu_floats(OC);
    fm_tu_uniform(&rng, dw0, nw, -1.0, 1.0);
    fm_tu_uniform(&rng, db0, OC, -1.0, 1.0);
    float *dwf = fm_tu_floats(nw), *dbf = fm_tu_floats(OC), *dinf = fm_tu_floats(ni);
    float *dwn = fm_tu_floats(nw), *dbn = fm_tu_floats(OC), *dinn = fm_tu_floats(ni);
    float *dwz = fm_tu_floats(nw), *dbz = fm_tu_floats(OC);
    memcpy(dwf, dw0, nw * sizeof(float));
    memcpy(dwn, dw0, nw * sizeof(float));
    memcpy(dbf, db0, OC * sizeof(float));
    memcpy(dbn, db0, OC * sizeof(float));
    fm_tu_fill(dinf, ni, NAN);
    fm_tu_fill(dinn, ni, NAN);
    fm_conv2d_backward(dinf, dwf, dbf, dout, inp, w, scratch, B, C, H, W, OC, KH, KW);
    fm_conv2d_backward_naive(dinn, dwn, dbn, dout, inp, w, B, C, H, W, OC, KH, KW);
    fm_conv2d_backward_naive(NULL, dwz, dbz, dout, inp, w, B, C, H, W, OC, KH, KW);
    assert_true(fm_tu_all_finite(dinf, ni) && fm_tu_all_finite(dinn, ni));
    TWIN_OK(fm_tu_rel_err(dinf, dinn, ni), "conv dinp C=%d OC=%d\n", C, OC);
    TWIN_OK(fm_tu_rel_err(dwf, dwn, nw), "conv dw C=%d OC=%d\n", C, OC);
    TWIN_OK(fm_tu_rel_err(dbf, dbn, OC), "conv db C=%d OC=%d\n", C, OC);

    float *acc = fm_tu_floats(nw);
    for (size_t i = 0; i < nw; i++)
        acc[i] = dwf[i] - dw0[i];
    TWIN_OK(fm_tu_rel_err(acc, dwz, nw), "conv dw accumulates\n");
    for (size_t i = 0; i < nw; i++)
        acc[i] = dwn[i] - dw0[i];
    TWIN_OK(fm_tu_rel_err(acc, dwz, nw), "conv naive dw accumulates\n");
    for (int o = 0; o < OC; o++)
        acc[o] = dbf[o] - db0[o];
    TWIN_OK(fm_tu_rel_err(acc, dbz, OC), "conv db accumulates\n");
    for (int o = 0; o < OC; o++)
        acc[o] = dbn[o] - db0[o];
    TWIN_OK(fm_tu_rel_err(acc, dbz, OC), "conv naive db accumulates\n");

    float *dw2 = fm_tu_floats(nw), *db2 = fm_tu_floats(OC);
    memcpy(dw2, dw0, nw * sizeof(float));
    memcpy(db2, db0, OC * sizeof(float));
    fm_conv2d_backward(NULL, dw2, db2, dout, inp, w, scratch, B, C, H, W, OC, KH, KW);
    FM_TU_ASSERT_LE(fm_tu_rel_err(dw2, dwf, nw), 1e-6, "conv dw with dinp NULL\n");
    FM_TU_ASSERT_LE(fm_tu_rel_err(db2, dbf, OC), 1e-6, "conv db with dinp NULL\n");

    free(inp), free(w), free(b), free(dout), free(scratch), free(of), free(on), free(dw0);
    free(db0), free(dwf), free(dbf), free(dinf), free(dwn), free(dbn), free(dinn), free(dwz);
    free(dbz), free(acc), free(dw2), free(db2);
}

static void test_conv_twins(void **state)
{
    s_twin_worst = 0.0;
    s_conv_twins(3, 3, 7, 9, 4, 3, 2, 21);     /* odd: non-square image and kernel */
    s_conv_twins(2, 2, 4, 6, 3, 4, 1, 22);     /* OH = 1 */
    s_conv_twins(1, 2, 5, 5, 3, 1, 1, 23);     /* 1x1 kernel */
    s_conv_twins(2, 1, 28, 28, 32, 3, 3, 24);  /* cnn conv1 */
    s_conv_twins(2, 32, 26, 26, 64, 3, 3, 25); /* cnn conv2 */
    print_message("conv2d fast vs naive: worst relative error %.2e\n", s_twin_worst);
}

/* ---- fused kernels: each equals the composition of the plain kernels
 * ---------------------------- */

/* Rounding-level agreement of mathematically equal compositions (the same sgemm products; at
 * most the order of a bias add differs): 1e-6 of the largest value. */
#define TOL_FUSED 1e-6

static void s_conv_act(int B, int C, int H, int W, int OC, int KH, int KW, uint64_t seed)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 5);
    int OH = H - KH + 1, OW = W - KW + 1;
    size_t ni = (size_t)B * C * H * W, nw = (size_t)OC * C * KH * KW;
    size_t no = (size_t)B * OC * OH * OW;
    float *inp = fm_tu_floats(ni), *w = fm_tu_floats(nw), *b = fm_tu_floats(OC);
    float *zero = fm_tu_floats(OC), *dout = fm_tu_floats(no);
    float *scratch = fm_tu_floats(fm_conv2d_scratch(C, H, W, OC, KH, KW));
    fm_tu_uniform(&rng, inp, ni, -1.0, 1.0); /* both signs: relu_inp has work to do */
    fm_tu_uniform(&rng, w, nw, -0.5, 0.5);
    fm_tu_uniform(&rng, b, OC, -0.5, 0.5);
    fm_tu_uniform(&rng, dout, no, -1.0, 1.0);
    float *ref = fm_tu_floats(no), *out = fm_tu_floats(no), *nav = fm_tu_floats(no);

    /* forward: relu 0/1 x bias / NULL against fm_conv2d_forward (+ fm_relu_forward) */
    for (int relu = 0; relu <= 1; relu++)
        for (int hasb = 0; hasb <= 1; hasb++) {
            const float *bb = hasb ? b : zero;
            fm_conv2d_forward(ref, inp, w, bb, scratch, B, C, H, W, OC, KH, KW);
            if (relu)
                fm_relu_forward(ref, ref, no);
            fm_tu_fill(out, no, NAN);
            fm_conv2d_forward_act(out, inp, w, hasb ? b : NULL, scratch, B, C, H, W, OC, KH, KW,
                                  relu);
            FM_TU_ASSERT_LE(fm_tu_rel_err(out, ref, no), TOL_FUSED,
                            "conv2d_forward_act relu %d bias %d (C=%d OC=%d)\n", relu, hasb, C,
                            OC);
            if (relu) {
                size_t zeros = 0;
                for (size_t i = 0; i < no; i++) {
                    assert_true(out[i] >= 0.0f);
                    zeros += out[i] == 0.0f;
                }
                assert_true(zeros > 0 && zeros < no); /* the relu really cut something */
            }
            /* and against the naive twin */
            fm_conv2d_forward_naive(nav, inp, w, bb, B, C, H, W, OC, KH, KW);
            if (relu)
                fm_relu_forward(nav, nav, no);
            TWIN_OK(fm_tu_rel_err(out, nav, no), "conv2d_forward_act vs naive\n");
        }

    /* backward: db NULL leaves no bias gradient; relu_inp multiplies dinp by (inp > 0) */
    float *dw0 = fm_tu_floats(nw), *dwr = fm_tu_floats(nw), *dwa = fm_tu_floats(nw);
    float *dbr = fm_tu_floats(OC), *dinr = fm_tu_floats(ni), *dina = fm_tu_floats(ni);
    fm_tu_uniform(&rng, dw0, nw, -1.0, 1.0);
    memcpy(dwr, dw0, nw * sizeof(float));
    fm_conv2d_backward(dinr, dwr, dbr, dout, inp, w, scratch, B, C, H, W, OC, KH, KW);
    for (int relu_inp = 0; relu_inp <= 1; relu_inp++) {
        memcpy(dwa, dw0, nw * sizeof(float));
        fm_tu_fill(dina, ni, NAN);
        fm_conv2d_backward_act(dina, dwa, NULL, dout, inp, w, scratch, B, C, H, W, OC, KH, KW,
                               relu_inp);
        FM_TU_ASSERT_LE(fm_tu_rel_err(dwa, dwr, nw), TOL_FUSED,
                        "backward_act dw (accumulated)\n");
        float *want = fm_tu_floats(ni);
        for (size_t i = 0; i < ni; i++)
            want[i] = relu_inp && !(inp[i] > 0.0f) ? 0.0f : dinr[i];
        FM_TU_ASSERT_LE(fm_tu_rel_err(dina, want, ni), TOL_FUSED, "backward_act dinp relu %d\n",
                        relu_inp);
        if (relu_inp)
            for (size_t i = 0; i < ni; i++)
                if (!(inp[i] > 0.0f))
                    assert_true(dina[i] == 0.0f);
        free(want);
    }
    /* dinp NULL with db NULL: only dw */
    memcpy(dwa, dw0, nw * sizeof(float));
    fm_conv2d_backward_act(NULL, dwa, NULL, dout, inp, w, scratch, B, C, H, W, OC, KH, KW, 1);
    FM_TU_ASSERT_LE(fm_tu_rel_err(dwa, dwr, nw), TOL_FUSED, "backward_act dw, dinp NULL\n");

    free(inp), free(w), free(b), free(zero), free(dout), free(scratch), free(ref), free(out);
    free(nav), free(dw0), free(dwr), free(dwa), free(dbr), free(dinr), free(dina);
}

static void test_conv_act(void **state)
{
    s_twin_worst = 0.0;
    s_conv_act(3, 3, 7, 9, 4, 3, 2, 51);
    s_conv_act(2, 1, 28, 28, 32, 3, 3, 52);
    s_conv_act(2, 32, 26, 26, 64, 3, 3, 53);
    print_message("conv2d_forward_act vs naive: worst relative error %.2e\n", s_twin_worst);
}

/* fm_relu_maxpool2 against relu(inp + bias) -> maxpool2 -> and back. */
static void s_relu_pool(int B, int C, int H, int W, uint64_t seed)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 6);
    size_t ni = (size_t)B * C * H * W, no = ni / 4;
    float *inp = fm_tu_floats(ni), *bias = fm_tu_floats(C), *dout = fm_tu_floats(no);
    fm_tu_uniform(&rng, inp, ni, -1.0, 1.0);
    fm_tu_uniform(&rng, bias, C, -0.5, 0.5);
    fm_tu_uniform(&rng, dout, no, -1.0, 1.0);

    /* the composition */
    float *t = fm_tu_floats(ni), *ref = fm_tu_floats(no), *dref = fm_tu_floats(ni);
    uint8_t *amr = fm_tu_alloc(no, 1);
    for (size_t i = 0; i < ni; i++) {
        float v = inp[i] + bias[(i / ((size_t)H * W)) % C];
        t[i] = v > 0.0f ? v : 0.0f;
    }
    fm_maxpool2_forward(ref, amr, t, B * C, H, W);
    fm_maxpool2_backward(dref, dout, amr, B * C, H, W);
    fm_relu_backward(dref, dref, t, ni);
    double *dbref = fm_tu_alloc((size_t)C, sizeof(double));
    for (size_t i = 0; i < ni; i++)
        dbref[(i / ((size_t)H * W)) % C] += dref[i];

    /* fused */
    float *out = fm_tu_floats(no), *din = fm_tu_floats(ni), *db = fm_tu_floats(C);
    float *db0 = fm_tu_floats(C);
    uint8_t *am = fm_tu_alloc(no, 1);
    fm_tu_fill(out, no, NAN);
    fm_relu_maxpool2_forward(out, am, inp, bias, B, C, H, W);
    /* max(x + b) = max(x) + b exactly in float (rounding is monotonic), relu too */
    assert_memory_equal(out, ref, no * sizeof(float));
    size_t pos = 0;
    for (size_t i = 0; i < no; i++)
        if (ref[i] > 0.0f) { /* where the window is all <= 0 the argmax is irrelevant */
            assert_int_equal(am[i], amr[i]);
            pos++;
        }
    if (no >= 16)
        assert_true(pos > no / 4 && pos < no); /* both cases present */
    fm_tu_uniform(&rng, db0, C, -1.0, 1.0);
    memcpy(db, db0, C * sizeof(float));
    fm_tu_fill(din, ni, NAN); /* overwritten everywhere */
    fm_relu_maxpool2_backward(din, db, dout, out, am, B, C, H, W);
    assert_true(fm_tu_all_finite(din, ni));
    assert_memory_equal(din, dref, ni * sizeof(float));
    float *dbg = fm_tu_floats(C), *dbw = fm_tu_floats(C);
    for (int c = 0; c < C; c++) {
        dbg[c] = db[c] - db0[c]; /* accumulated: db0 + the bias gradient */
        dbw[c] = (float)dbref[c];
    }
    /* float sums of up to B*H*W/4 terms vs double: ~sqrt(n) ulps of the partial sums */
    FM_TU_ASSERT_LE(fm_tu_rel_err(dbg, dbw, C), 1e-5, "relu_maxpool2 dbias\n");
    /* dbias NULL is allowed */
    fm_relu_maxpool2_backward(din, NULL, dout, out, am, B, C, H, W);
    assert_memory_equal(din, dref, ni * sizeof(float));
    free(inp), free(bias), free(dout), free(t), free(ref), free(dref), free(amr), free(dbref);
    free(out), free(din), free(db), free(db0), free(am), free(dbg), free(dbw);
}

static void test_relu_maxpool(void **state)
{
    s_relu_pool(2, 3, 6, 8, 61);
    s_relu_pool(2, 64, 24, 24, 62); /* the cnn's shape */
    s_relu_pool(1, 1, 2, 2, 63);
    /* tie-breaking (first maximum) with a bias, and relu: windows
     * (1 1/1 1) (0 2/1 2) (0 1/2 2) and one all-negative window after the bias */
    const float img[2 * 8] = {1, 1, 0, 2, 0, 1, -3, -4, 1, 1, 1, 2, 2, 2, -5, -3};
    const float bias = 0.5f;
    float out[4], dout[4] = {10, 20, 30, 40}, din[16];
    uint8_t am[4];
    fm_relu_maxpool2_forward(out, am, img, &bias, 1, 1, 2, 8);
    assert_int_equal(am[0], 0);
    assert_int_equal(am[1], 1);
    assert_int_equal(am[2], 2);
    assert_true(out[0] == 1.5f && out[1] == 2.5f && out[2] == 2.5f && out[3] == 0.0f);
    float db = 0.0f;
    fm_relu_maxpool2_backward(din, &db, dout, out, am, 1, 1, 2, 8);
    const float want[16] = {10, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0};
    assert_memory_equal(din, want, sizeof want); /* the relu'd window gets nothing */
    assert_true(db == 60.0f);
}

/* Finite differences of L = sum(relu_maxpool2(inp, bias) * R) in inp and bias. Windows hold
 * {0, .1, .2, .3} shuffled + noise < .03 + an offset (no argmax change within 2h), and the
 * offset keeps max + bias at least 0.05 away from the relu kink. */
typedef struct {
    int B, C, H, W;
    float *inp, *bias, *out, *r;
    uint8_t *am;
} rpool_fd_t;

static double s_rpool_obj(void *p)
{
    rpool_fd_t *c = p;
    fm_relu_maxpool2_forward(c->out, c->am, c->inp, c->bias, c->B, c->C, c->H, c->W);
    return s_dot(c->out, c->r, (size_t)c->B * c->C * (c->H / 2) * (c->W / 2));
}

static void test_fd_relu_maxpool(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 37, 0);
    rpool_fd_t c = {.B = 2, .C = 3, .H = 4, .W = 6};
    size_t ni = (size_t)c.B * c.C * c.H * c.W, no = ni / 4;
    c.inp = fm_tu_floats(ni), c.bias = fm_tu_floats(c.C), c.out = fm_tu_floats(no);
    c.r = fm_tu_floats(no), c.am = fm_tu_alloc(no, 1);
    fm_tu_uniform(&rng, c.bias, c.C, -0.3, 0.3);
    int npos = 0;
    for (int n = 0; n < c.B * c.C; n++)
        for (int oh = 0; oh < c.H / 2; oh++)
            for (int ow = 0; ow < c.W / 2; ow++) {
                uint32_t perm[4] = {0, 1, 2, 3};
                fm_rng_shuffle_u32(&rng, perm, 4);
                double off = 2.0 * fm_rng_uniform(&rng) - 1.0, top = off + 0.33 + c.bias[n % c.C];
                if (fabs(top) < 0.05 || fabs(top - 0.03) < 0.05)
                    off += 0.2;
                npos += off + 0.3 + c.bias[n % c.C] > 0.0;
                for (int k = 0; k < 4; k++)
                    c.inp[((size_t)n * c.H + 2 * oh + k / 2) * c.W + 2 * ow + k % 2] =
                        (float)(off + 0.1 * perm[k] + 0.03 * fm_rng_uniform(&rng));
            }
    assert_true(npos > 0 && npos < (int)no); /* both relu branches */
    fm_tu_uniform(&rng, c.r, no, -1, 1);
    s_rpool_obj(&c);
    float *din = fm_tu_floats(ni), *db = fm_tu_floats(c.C);
    fm_relu_maxpool2_backward(din, db, c.r, c.out, c.am, c.B, c.C, c.H, c.W);
    double e1 = s_fd_check(s_rpool_obj, &c, c.inp, din, ni, NULL, 0, FD_H);
    double e2 = s_fd_check(s_rpool_obj, &c, c.bias, db, c.C, NULL, 0, FD_H);
    print_message("fd relu_maxpool2: inp %.2e  bias %.2e\n", e1, e2);
    FM_TU_ASSERT_LE(e1, TOL_FD_LINEAR, "fd relu_maxpool2 inp\n");
    FM_TU_ASSERT_LE(e2, TOL_FD_LINEAR, "fd relu_maxpool2 bias\n");
    free(c.inp), free(c.bias), free(c.out), free(c.r), free(c.am), free(din), free(db);
}

/* ---- finite differences: dense ----------------------------------------------------------------
 */

typedef struct {
    int B, IN, OUT;
    float *inp, *w, *b, *out, *r;
} dense_fd_t;

static double s_dense_obj(void *p)
{
    dense_fd_t *c = p;
    fm_dense_forward(c->out, c->inp, c->w, c->b, c->B, c->IN, c->OUT);
    return s_dot(c->out, c->r, (size_t)c->B * c->OUT);
}

static void test_fd_dense(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 31, 0);
    dense_fd_t c = {.B = 3, .IN = 7, .OUT = 5};
    size_t ni = 21, nw = 35, no = 15;
    c.inp = fm_tu_floats(ni), c.w = fm_tu_floats(nw), c.b = fm_tu_floats(5);
    c.out = fm_tu_floats(no), c.r = fm_tu_floats(no);
    fm_tu_uniform(&rng, c.inp, ni, -1, 1);
    fm_tu_uniform(&rng, c.w, nw, -0.4, 0.4);
    fm_tu_uniform(&rng, c.b, 5, -0.4, 0.4);
    fm_tu_uniform(&rng, c.r, no, -1, 1);
    float *dinp = fm_tu_floats(ni), *dw = fm_tu_floats(nw), *db = fm_tu_floats(5);
    fm_dense_backward(dinp, dw, db, c.r, c.inp, c.w, c.B, c.IN, c.OUT); /* dL/dout = R */
    double e1 = s_fd_check(s_dense_obj, &c, c.inp, dinp, ni, NULL, 0, FD_H);
    double e2 = s_fd_check(s_dense_obj, &c, c.w, dw, nw, NULL, 0, FD_H);
    double e3 = s_fd_check(s_dense_obj, &c, c.b, db, 5, NULL, 0, FD_H);
    print_message("fd dense: inp %.2e  w %.2e  b %.2e\n", e1, e2, e3);
    FM_TU_ASSERT_LE(e1, TOL_FD_LINEAR, "fd dense dinp\n");
    FM_TU_ASSERT_LE(e2, TOL_FD_LINEAR, "fd dense dw\n");
    FM_TU_ASSERT_LE(e3, TOL_FD_LINEAR, "fd dense db\n");
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.r), free(dinp), free(dw), free(db);
}

/* ---- finite differences: conv2d
 * ---------------------------------------------------------------- */

typedef struct {
    int B, C, H, W, OC, KH, KW;
    float *inp, *w, *b, *out, *r, *scratch;
} conv_fd_t;

static size_t s_conv_nout(const conv_fd_t *c)
{
    return (size_t)c->B * c->OC * (c->H - c->KH + 1) * (c->W - c->KW + 1);
}

static double s_conv_obj(void *p)
{
    conv_fd_t *c = p;
    fm_conv2d_forward(c->out, c->inp, c->w, c->b, c->scratch, c->B, c->C, c->H, c->W, c->OC,
                      c->KH, c->KW);
    return s_dot(c->out, c->r, s_conv_nout(c));
}

static void test_fd_conv(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 32, 0);
    conv_fd_t c = {.B = 2, .C = 3, .H = 7, .W = 9, .OC = 4, .KH = 3, .KW = 2};
    size_t ni = (size_t)c.B * c.C * c.H * c.W, nw = (size_t)c.OC * c.C * c.KH * c.KW;
    size_t no = s_conv_nout(&c);
    c.inp = fm_tu_floats(ni), c.w = fm_tu_floats(nw), c.b = fm_tu_floats(c.OC);
    c.out = fm_tu_floats(no), c.r = fm_tu_floats(no);
    c.scratch = fm_tu_floats(fm_conv2d_scratch(c.C, c.H, c.W, c.OC, c.KH, c.KW));
    fm_tu_uniform(&rng, c.inp, ni, -1, 1);
    fm_tu_uniform(&rng, c.w, nw, -0.4, 0.4);
    fm_tu_uniform(&rng, c.b, c.OC, -0.4, 0.4);
    fm_tu_uniform(&rng, c.r, no, -1, 1);
    float *dinp = fm_tu_floats(ni), *dw = fm_tu_floats(nw), *db = fm_tu_floats(c.OC);
    fm_conv2d_backward(dinp, dw, db, c.r, c.inp, c.w, c.scratch, c.B, c.C, c.H, c.W, c.OC, c.KH,
                       c.KW);
    double e1 = s_fd_check(s_conv_obj, &c, c.inp, dinp, ni, NULL, 0, FD_H);
    double e2 = s_fd_check(s_conv_obj, &c, c.w, dw, nw, NULL, 0, FD_H);
    double e3 = s_fd_check(s_conv_obj, &c, c.b, db, c.OC, NULL, 0, FD_H);
    print_message("fd conv2d: inp %.2e  w %.2e  b %.2e\n", e1, e2, e3);
    FM_TU_ASSERT_LE(e1, TOL_FD_LINEAR, "fd conv dinp\n");
    FM_TU_ASSERT_LE(e2, TOL_FD_LINEAR, "fd conv dw\n");
    FM_TU_ASSERT_LE(e3, TOL_FD_LINEAR, "fd conv db\n");
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.r), free(c.scratch);
    free(dinp), free(dw), free(db);
}

/* ---- finite differences: relu
 * ------------------------------------------------------------------ */

typedef struct {
    size_t n;
    float *inp, *out, *r;
    int aliased; /* run the forward in place on a copy */
} relu_fd_t;

static double s_relu_obj(void *p)
{
    relu_fd_t *c = p;
    if (c->aliased) {
        memcpy(c->out, c->inp, c->n * sizeof(float));
        fm_relu_forward(c->out, c->out, c->n);
    } else
        fm_relu_forward(c->out, c->inp, c->n);
    return s_dot(c->out, c->r, c->n);
}

static void test_fd_relu(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 33, 0);
    relu_fd_t c = {.n = 101};
    c.inp = fm_tu_floats(c.n), c.out = fm_tu_floats(c.n), c.r = fm_tu_floats(c.n);
    /* |inp| in [0.1, 1]: a step of 1e-2 never crosses the kink at 0 */
    for (size_t i = 0; i < c.n; i++) {
        double m = 0.1 + 0.9 * fm_rng_uniform(&rng);
        c.inp[i] = (float)(i % 3 == 0 ? -m : m);
    }
    fm_tu_uniform(&rng, c.r, c.n, -1, 1);
    s_relu_obj(&c);
    float *dinp = fm_tu_floats(c.n);
    fm_tu_fill(dinp, c.n, NAN);
    fm_relu_backward(dinp, c.r, c.out, c.n);
    for (size_t i = 0; i < c.n; i++) {
        assert_true(c.out[i] == (c.inp[i] > 0 ? c.inp[i] : 0.0f));
        assert_true(dinp[i] == (c.inp[i] > 0 ? c.r[i] : 0.0f));
    }
    double e = s_fd_check(s_relu_obj, &c, c.inp, dinp, c.n, NULL, 0, FD_H);
    c.aliased = 1;
    double ea = s_fd_check(s_relu_obj, &c, c.inp, dinp, c.n, NULL, 0, FD_H);
    print_message("fd relu: %.2e (in place %.2e)\n", e, ea);
    FM_TU_ASSERT_LE(e, TOL_FD_LINEAR, "fd relu\n");
    FM_TU_ASSERT_LE(ea, TOL_FD_LINEAR, "fd relu in place\n");

    /* backward in place (dinp aliases dout) gives the same */
    float *d2 = fm_tu_floats(c.n);
    memcpy(d2, c.r, c.n * sizeof(float));
    fm_relu_backward(d2, d2, c.out, c.n);
    assert_memory_equal(d2, dinp, c.n * sizeof(float));
    /* relu(0) = 0 and its gradient is 0 (as PyTorch: threshold at > 0) */
    float z = 0.0f, zo, one = 1.0f, dz;
    fm_relu_forward(&zo, &z, 1);
    fm_relu_backward(&dz, &one, &zo, 1);
    assert_true(zo == 0.0f && dz == 0.0f);
    free(c.inp), free(c.out), free(c.r), free(dinp), free(d2);
}

/* ---- finite differences: maxpool2
 * ---------------------------------------------------------------- */

typedef struct {
    int N, H, W;
    float *inp, *out, *r;
    uint8_t *am;
} pool_fd_t;

static double s_pool_obj(void *p)
{
    pool_fd_t *c = p;
    fm_maxpool2_forward(c->out, c->am, c->inp, c->N, c->H, c->W);
    return s_dot(c->out, c->r, (size_t)c->N * (c->H / 2) * (c->W / 2));
}

static void test_fd_maxpool(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 34, 0);
    pool_fd_t c = {.N = 3, .H = 6, .W = 8};
    size_t ni = (size_t)c.N * c.H * c.W, no = ni / 4;
    c.inp = fm_tu_floats(ni), c.out = fm_tu_floats(no), c.r = fm_tu_floats(no);
    c.am = fm_tu_alloc(no, 1);
    /* Each 2x2 window holds {0, 0.1, 0.2, 0.3} in a random order plus noise in [0, 0.03)
     * plus a per-window offset: values differ by >= 0.07 > 2h, so no step changes the
     * argmax. */
    for (int n = 0; n < c.N; n++)
        for (int oh = 0; oh < c.H / 2; oh++)
            for (int ow = 0; ow < c.W / 2; ow++) {
                uint32_t perm[4] = {0, 1, 2, 3};
                fm_rng_shuffle_u32(&rng, perm, 4);
                double off = 2.0 * fm_rng_uniform(&rng) - 1.0;
                for (int k = 0; k < 4; k++) {
                    int h = 2 * oh + k / 2, x = 2 * ow + k % 2;
                    c.inp[((size_t)n * c.H + h) * c.W + x] = (float)(off + 0.1 * perm[k] +
                                                                     0.03 * fm_rng_uniform(&rng));
                }
            }
    fm_tu_uniform(&rng, c.r, no, -1, 1);
    s_pool_obj(&c);
    float *dinp = fm_tu_floats(ni);
    fm_tu_fill(dinp, ni, NAN); /* overwritten, including the non-argmax positions */
    fm_maxpool2_backward(dinp, c.r, c.am, c.N, c.H, c.W);
    assert_true(fm_tu_all_finite(dinp, ni));
    double e = s_fd_check(s_pool_obj, &c, c.inp, dinp, ni, NULL, 0, FD_H);
    print_message("fd maxpool2: %.2e\n", e);
    FM_TU_ASSERT_LE(e, TOL_FD_LINEAR, "fd maxpool\n");
    /* exactly one non-zero per window, equal to R */
    for (size_t i = 0; i < no; i++) {
        int n = (int)(i / ((c.H / 2) * (c.W / 2))), rem = (int)(i % ((c.H / 2) * (c.W / 2)));
        int oh = rem / (c.W / 2), ow = rem % (c.W / 2), nz = 0;
        for (int k = 0; k < 4; k++) {
            float g = dinp[((size_t)n * c.H + 2 * oh + k / 2) * c.W + 2 * ow + k % 2];
            if (g != 0.0f) {
                nz++;
                assert_true(g == c.r[i]);
                assert_int_equal(k, c.am[i]);
            }
        }
        assert_int_equal(nz, 1);
    }
    free(c.inp), free(c.out), free(c.r), free(c.am), free(dinp);
}

/* ---- finite differences: dropout with a fixed mask
 * ------------------------------------------------ */

typedef struct {
    size_t n;
    float p;
    uint64_t seed;
    float *inp, *out, *mask, *r;
} drop_fd_t;

static double s_drop_obj(void *pv)
{
    drop_fd_t *c = pv;
    fm_rng_t rng;
    fm_rng_seed(&rng, c->seed, 7); /* same seed: the same mask on every evaluation */
    fm_dropout_forward(c->out, c->mask, c->inp, c->n, c->p, &rng);
    return s_dot(c->out, c->r, c->n);
}

static void test_fd_dropout(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 35, 0);
    drop_fd_t c = {.n = 63, .p = 0.5f, .seed = 99};
    c.inp = fm_tu_floats(c.n), c.out = fm_tu_floats(c.n), c.mask = fm_tu_floats(c.n);
    c.r = fm_tu_floats(c.n);
    fm_tu_uniform(&rng, c.inp, c.n, -1, 1);
    fm_tu_uniform(&rng, c.r, c.n, -1, 1);
    s_drop_obj(&c);
    float *mask = fm_tu_floats(c.n);
    memcpy(mask, c.mask, c.n * sizeof(float));
    float *dinp = fm_tu_floats(c.n);
    fm_tu_fill(dinp, c.n, NAN);
    fm_dropout_backward(dinp, c.r, mask, c.n);
    int zeros = 0;
    for (size_t i = 0; i < c.n; i++) {
        assert_true(mask[i] == 0.0f || mask[i] == 2.0f);
        zeros += mask[i] == 0.0f;
        assert_true(dinp[i] == c.r[i] * mask[i]); /* backward multiplies by the same mask */
    }
    assert_true(zeros > 0 && zeros < (int)c.n); /* the check must see both kinds */
    double e = s_fd_check(s_drop_obj, &c, c.inp, dinp, c.n, NULL, 0, FD_H);
    print_message("fd dropout: %.2e (%d of %zu dropped)\n", e, zeros, c.n);
    FM_TU_ASSERT_LE(e, TOL_FD_LINEAR, "fd dropout\n");
    /* the FD evaluations redrew the mask from the same seed: unchanged */
    assert_memory_equal(mask, c.mask, c.n * sizeof(float));
    /* in place backward */
    float *d2 = fm_tu_floats(c.n);
    memcpy(d2, c.r, c.n * sizeof(float));
    fm_dropout_backward(d2, d2, mask, c.n);
    assert_memory_equal(d2, dinp, c.n * sizeof(float));
    free(c.inp), free(c.out), free(c.mask), free(c.r), free(mask), free(dinp), free(d2);
}

/* ---- finite differences: log-softmax + NLL
 * ---------------------------------------------------------- */

typedef struct {
    int B, C;
    float scale;
    float *logits, *logp;
    uint8_t *y;
} nll_fd_t;

static double s_nll_obj(void *p)
{
    nll_fd_t *c = p;
    return c->scale * fm_logsoftmax_nll_forward(c->logp, c->logits, c->y, c->B, c->C);
}

static void test_fd_logsoftmax_nll(void **state)
{
    fm_rng_t rng;
    fm_rng_seed(&rng, 36, 0);
    nll_fd_t c = {.B = 5, .C = 10, .scale = 1.0f / 7.0f}; /* scale != 1/B on purpose */
    size_t n = (size_t)c.B * c.C;
    c.logits = fm_tu_floats(n), c.logp = fm_tu_floats(n);
    c.y = fm_tu_alloc((size_t)c.B, 1);
    fm_tu_uniform(&rng, c.logits, n, -3, 3);
    for (int i = 0; i < c.B; i++)
        c.y[i] = (uint8_t)fm_rng_below(&rng, (uint64_t)c.C);
    double loss = fm_logsoftmax_nll_forward(c.logp, c.logits, c.y, c.B, c.C);
    /* reference in double: sum_b logsumexp(z_b) - z_b[y_b] */
    double ref = 0.0;
    for (int i = 0; i < c.B; i++) {
        double s = 0.0;
        for (int k = 0; k < c.C; k++)
            s += exp((double)c.logits[i * c.C + k]);
        for (int k = 0; k < c.C; k++) {
            double lp = c.logits[i * c.C + k] - log(s);
            assert_true(fabs(c.logp[i * c.C + k] - lp) <= 1e-6 * (1.0 + fabs(lp)));
        }
        ref += log(s) - c.logits[i * c.C + c.y[i]];
    }
    assert_true(fabs(loss - ref) <= 1e-6 * ref);
    assert_true(fm_logsoftmax_nll_forward(c.logp, c.logits, NULL, c.B, c.C) == 0.0);

    float *dl = fm_tu_floats(n);
    fm_tu_fill(dl, n, NAN);
    fm_logsoftmax_nll_backward(dl, c.logp, c.y, c.B, c.C, c.scale);
    /* each row of softmax - onehot sums to 0 */
    for (int i = 0; i < c.B; i++) {
        double s = 0.0;
        for (int k = 0; k < c.C; k++)
            s += dl[i * c.C + k];
        assert_true(fabs(s) <= 1e-6);
    }
    double e = s_fd_check(s_nll_obj, &c, c.logits, dl, n, NULL, 0, FD_H);
    print_message("fd logsoftmax+nll: %.2e\n", e);
    FM_TU_ASSERT_LE(e, TOL_FD_NLL, "fd logsoftmax nll\n");

    /* numerically stable for large logits: finite, and the right answer. The log-sum-exp
     * is formed in float as max + log(sum) = 1000.31..., where one float ulp is 2^-14 =
     * 6.1e-5, so the result carries up to half of that (3.05e-5): tolerance 4e-5. */
    float big[3] = {1000.0f, 999.0f, -1000.0f}, lpb[3];
    uint8_t yb = 1;
    double lb = fm_logsoftmax_nll_forward(lpb, big, &yb, 1, 3);
    assert_true(isfinite(lb));
    FM_TU_ASSERT_LE(fabs(lb - (1.0 + log1p(exp(-1.0)))), 4e-5, "nll of large logits\n");
    assert_true(lpb[2] < -1999.0f && isfinite(lpb[2]));
    free(c.logits), free(c.logp), free(c.y), free(dl);
}

/* ---- maxpool tie-breaking, dropout statistics
 * --------------------------------------------------------- */

static void test_maxpool_ties(void **state)
{
    /* one (2, 8) image = four 2x2 windows; the window (a b / c d) is row-major k = 0..3 */
    const float img[2 * 8] = {
        1, 1, 0, 2, 0, 1, -1, -1, /* windows: (1 1/1 1) (0 2/1 2) (0 1/2 2) (-1 -1/-1 -1) */
        1, 1, 1, 2, 2, 2, -1, -1,
    };
    const uint8_t want[4] = {0, 1, 2, 0}; /* first maximum in row-major window order */
    const float wantv[4] = {1, 2, 2, -1};
    float out[4], dout[4] = {10, 20, 30, 40}, dinp[16];
    uint8_t am[4];
    fm_maxpool2_forward(out, am, img, 1, 2, 8);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(am[i], want[i]);
        assert_true(out[i] == wantv[i]);
    }
    fm_tu_fill(dinp, 16, NAN);
    fm_maxpool2_backward(dinp, dout, am, 1, 2, 8);
    const float wantd[16] = {10, 0, 0, 20, 0, 0, 40, 0, 0, 0, 0, 0, 30, 0, 0, 0};
    assert_memory_equal(dinp, wantd, sizeof wantd);
    /* the last position wins when it is the unique maximum; N > 1 indexes images */
    const float img2[2 * 4] = {0, 0, 0, 1, 5, 4, 3, 6}; /* N=2 images of (2,2) */
    fm_maxpool2_forward(out, am, img2, 2, 2, 2);
    assert_int_equal(am[0], 3);
    assert_int_equal(am[1], 3);
    assert_true(out[0] == 1.0f && out[1] == 6.0f);
}

static void s_dropout_stats(float p, size_t n, uint64_t seed)
{
    float *inp = fm_tu_floats(n), *out = fm_tu_floats(n), *mask = fm_tu_floats(n);
    for (size_t i = 0; i < n; i++)
        inp[i] = 1.0f + (float)(i % 17) * 0.25f;
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 3);
    fm_dropout_forward(out, mask, inp, n, p, &rng);
    const float keep = 1.0f / (1.0f - p);
    size_t zeros = 0, zeros_lane[4] = {0};
    for (size_t i = 0; i < n; i++) {
        if (mask[i] == 0.0f) {
            assert_true(out[i] == 0.0f);
            zeros++;
            zeros_lane[i % 4]++;
        } else {
            assert_true(mask[i] == keep);
            /* kept values scaled by 1/(1-p): within one float rounding */
            assert_true(fabs(out[i] - inp[i] / (1.0 - p)) <= 2e-7 * fabs(out[i]));
        }
    }
    /* Binomial(n, p): sd of the fraction sqrt(p(1-p)/n) (<= 1.6e-3 for n = 1e5); allow 6 sd
     * (p is resolved to 1/65536: a bias of < 1e-5, negligible). Each position mod 4 is its
     * own lane of the generator (16-bit slices of one 64-bit value): check every lane, at
     * 6 sd of a quarter of the samples. */
    double sd = sqrt(p * (1.0 - p) / n);
    double frac = (double)zeros / n;
    print_message("dropout p=%.2f: zero fraction %.4f (lanes %.4f %.4f %.4f %.4f), n=%zu\n", p,
                  frac, 4.0 * zeros_lane[0] / n, 4.0 * zeros_lane[1] / n, 4.0 * zeros_lane[2] / n,
                  4.0 * zeros_lane[3] / n, n);
    assert_true(fabs(frac - p) <= 6.0 * sd);
    for (int l = 0; l < 4; l++) {
        size_t cnt = (n - (size_t)l + 3) / 4;
        assert_true(fabs((double)zeros_lane[l] / cnt - p) <= 6.0 * sd * 2.0);
    }
    /* independence of neighbours (lanes sharing bits would keep each lane's rate at p):
     * P(both of i, i+1 dropped) = p^2; the n-1 overlapping pairs are 1-dependent, so allow
     * 6 sd of n/2 independent Bernoulli(p^2) */
    size_t both = 0;
    for (size_t i = 0; i + 1 < n; i++)
        both += mask[i] == 0.0f && mask[i + 1] == 0.0f;
    double p2 = (double)p * p, fboth = (double)both / (n - 1);
    assert_true(fabs(fboth - p2) <= 6.0 * sqrt(p2 * (1.0 - p2) / (n / 2.0)) + 1e-12);
    /* same seed -> same mask; another seed -> another mask */
    float *mask2 = fm_tu_floats(n), *out2 = fm_tu_floats(n);
    fm_rng_seed(&rng, seed, 3);
    fm_dropout_forward(out2, mask2, inp, n, p, &rng);
    assert_memory_equal(mask2, mask, n * sizeof(float));
    assert_memory_equal(out2, out, n * sizeof(float));
    if (p > 0.0f) {
        fm_rng_seed(&rng, seed + 1, 3);
        fm_dropout_forward(out2, mask2, inp, n, p, &rng);
        assert_memory_not_equal(mask2, mask, n * sizeof(float));
    }
    /* in place (out aliases inp) gives the same output */
    memcpy(out2, inp, n * sizeof(float));
    fm_rng_seed(&rng, seed, 3);
    fm_dropout_forward(out2, mask2, out2, n, p, &rng);
    assert_memory_equal(out2, out, n * sizeof(float));
    free(inp), free(out), free(mask), free(mask2), free(out2);
}

static void test_dropout_stats(void **state)
{
    s_dropout_stats(0.25f, 100001, 1); /* odd n: the last element uses half a draw */
    s_dropout_stats(0.5f, 100000, 2);
    s_dropout_stats(0.0f, 1001, 3); /* nothing dropped, mask 1 */
    s_dropout_stats(0.9f, 100000, 4);
}

/* ---- whole-model finite differences via fm_work
 * -------------------------------------------------------- */

/* The library's forward is float: its summed loss carries rounding noise of ~1e-7 and, for
 * the mlp and cnn, a step h big enough to beat that noise (1e-2) moves some of the hundreds
 * of ReLU/max-pool decisions downstream across their kinks (measured: up to 12% error on a
 * small mlp gradient). So the model-level check differentiates a double-precision reference
 * forward written here (r_*), with h = 1e-5: truncation ~h^2 and rounding ~1e-16/h are both
 * negligible. A kink can still lie within h of the point (seen once: a cnn conv1 bias moving
 * one of the 1352 units of its channel across 0 gave a 1.5% error at h = 1e-5, none at
 * 1e-6), so each difference is confirmed at h/2: if the two disagree by more than 1e-4
 * relative the function is not smooth on that interval and h shrinks 10x (down to 1e-8,
 * where double rounding noise is still ~1e-8 relative). A wrong analytic gradient is
 * consistent across h and is still caught.
 * The reference is tied to the library by requiring that its loss and log-probabilities
 * match fm_work_forward's: float accumulation over up to 9216 terms, measured <= 6e-8
 * relative on the loss and <= 3e-7 absolute on logp (|logp| <~ 3, whose float ulp is
 * 2.4e-7); tolerances 1e-5 for both. The gradient compared is fm_work_backward's (float),
 * measured within 1e-6 of the view's largest gradient; tolerance 1e-4 of that maximum (the
 * view's largest gradient is always among the checked elements), which still leaves 100x
 * headroom while any wiring mistake (missing mask, wrong scale, swapped views) is O(1). */
#define FD_H_REF 1e-5
#define TOL_FD_MODEL 1e-4
#define TOL_REF_LOSS 1e-5
#define TOL_REF_LOGP 1e-5
#define FD_MODEL_PER_VIEW 6

typedef struct {
    fm_arch_t arch;
    int B, nviews;
    double *p;                /* parameters (double copy), the model's flat layout */
    size_t off[FM_MAX_VIEWS]; /* view offsets */
    double *x;                /* (B,784) */
    const uint8_t *y;
    const float *mask1, *mask2; /* cnn dropout masks (B*9216, B*128) or NULL (eval) */
    double *a1, *a2, *f, *h, *logits;
} ref_t;

static double *r_alloc(size_t n) { return fm_tu_alloc(n, sizeof(double)); }

static void r_new(ref_t *r, const fm_model_t *m, const float *x, const uint8_t *y, int B)
{
    memset(r, 0, sizeof *r);
    r->arch = fm_model_arch(m);
    r->B = B;
    r->nviews = fm_model_nviews(m);
    size_t np = fm_model_nparams(m);
    r->p = r_alloc(np);
    for (size_t i = 0; i < np; i++)
        r->p[i] = fm_model_params_const(m)[i];
    for (int v = 0; v < r->nviews; v++)
        r->off[v] = fm_model_view(m, v)->offset;
    r->x = r_alloc((size_t)B * 784);
    for (size_t i = 0; i < (size_t)B * 784; i++)
        r->x[i] = x[i];
    r->y = y;
    r->a1 = r_alloc((size_t)B * 32 * 26 * 26);
    r->a2 = r_alloc((size_t)B * 64 * 24 * 24);
    r->f = r_alloc((size_t)B * 9216);
    r->h = r_alloc((size_t)B * 200);
    r->logits = r_alloc((size_t)B * 10);
}

static void r_free(ref_t *r)
{
    free(r->p), free(r->x), free(r->a1), free(r->a2), free(r->f), free(r->h), free(r->logits);
}

/* out (B,OUT) = [relu](W in + b), all double */
static void r_dense(double *out, const double *in, const double *W, const double *b, int B,
                    int IN, int OUT, int relu)
{
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            const double *wr = W + (size_t)o * IN, *xr = in + (size_t)i * IN;
            for (int k = 0; k < IN; k++)
                s += wr[k] * xr[k];
            out[(size_t)i * OUT + o] = relu && s < 0.0 ? 0.0 : s;
        }
}

/* relu(conv) of one output channel o: out (OH,OW) from img (C,H,W), 3x3 kernels */
static void r_conv_channel(double *out, const double *img, const double *w, double bias, int C,
                           int H, int W)
{
    int OH = H - 2, OW = W - 2;
    for (int q = 0; q < OH * OW; q++)
        out[q] = bias;
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                double wv = w[(c * 3 + kh) * 3 + kw];
                for (int oh = 0; oh < OH; oh++) {
                    const double *src = img + ((size_t)c * H + oh + kh) * W + kw;
                    double *dst = out + (size_t)oh * OW;
                    for (int ow = 0; ow < OW; ow++)
                        dst[ow] += wv * src[ow];
                }
            }
    for (int q = 0; q < OH * OW; q++)
        out[q] = out[q] > 0.0 ? out[q] : 0.0;
}

/* Mean NLL of the reference, recomputing from `stage` on (earlier stages' caches must hold
 * the current parameters). cnn stages: 0 conv1, 1 conv2 (output channels [olo, ohi) only),
 * 2 pool/dropout1/fc1/dropout2, 3 fc2; mlp and logreg always recompute everything. */
static double r_loss(ref_t *r, int stage, int olo, int ohi)
{
    int B = r->B;
    const double *P = r->p;
    switch (r->arch) {
    case FM_ARCH_SPEC: break; /* not a network: never a reference */
    case FM_ARCH_LOGREG:
        r_dense(r->logits, r->x, P + r->off[0], P + r->off[1], B, 784, 10, 0);
        break;
    case FM_ARCH_MLP:
        r_dense(r->a1, r->x, P + r->off[0], P + r->off[1], B, 784, 200, 1);
        r_dense(r->a2, r->a1, P + r->off[2], P + r->off[3], B, 200, 200, 1);
        r_dense(r->logits, r->a2, P + r->off[4], P + r->off[5], B, 200, 10, 0);
        break;
    case FM_ARCH_CNN:
        if (stage <= 0)
            for (int b = 0; b < B; b++)
                for (int o = 0; o < 32; o++)
                    r_conv_channel(r->a1 + ((size_t)b * 32 + o) * 676, r->x + (size_t)b * 784,
                                   P + r->off[0] + o * 9, P[r->off[1] + o], 1, 28, 28);
        if (stage <= 1) {
            if (stage < 1)
                olo = 0, ohi = 64;
            for (int b = 0; b < B; b++)
                for (int o = olo; o < ohi; o++)
                    r_conv_channel(r->a2 + ((size_t)b * 64 + o) * 576,
                                   r->a1 + (size_t)b * 32 * 676, P + r->off[2] + (size_t)o * 288,
                                   P[r->off[3] + o], 32, 26, 26);
        }
        if (stage <= 2) {
            for (int b = 0; b < B; b++)
                for (int o = 0; o < 64; o++)
                    for (int ph = 0; ph < 12; ph++)
                        for (int pw = 0; pw < 12; pw++) {
                            const double *a = r->a2 + ((size_t)b * 64 + o) * 576;
                            double v = a[(2 * ph) * 24 + 2 * pw];
                            v = a[(2 * ph) * 24 + 2 * pw + 1] > v ? a[(2 * ph) * 24 + 2 * pw + 1]
                                                                  : v;
                            v = a[(2 * ph + 1) * 24 + 2 * pw] > v ? a[(2 * ph + 1) * 24 + 2 * pw]
                                                                  : v;
                            v = a[(2 * ph + 1) * 24 + 2 * pw + 1] > v
                                    ? a[(2 * ph + 1) * 24 + 2 * pw + 1]
                                    : v;
                            size_t k = (size_t)b * 9216 + (size_t)o * 144 + ph * 12 + pw;
                            r->f[k] = r->mask1 ? v * r->mask1[k] : v;
                        }
            r_dense(r->h, r->f, P + r->off[4], P + r->off[5], B, 9216, 128, 1);
            if (r->mask2)
                for (size_t k = 0; k < (size_t)B * 128; k++)
                    r->h[k] *= r->mask2[k];
        }
        r_dense(r->logits, r->h, P + r->off[6], P + r->off[7], B, 128, 10, 0);
        break;
    }
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        const double *z = r->logits + (size_t)b * 10;
        double mx = z[0], s = 0.0;
        for (int c = 1; c < 10; c++)
            mx = z[c] > mx ? z[c] : mx;
        for (int c = 0; c < 10; c++)
            s += exp(z[c] - mx);
        loss += mx + log(s) - z[r->y[b]];
    }
    return loss / B;
}

/* The stage and channel range that parameter i of view v influences first. */
static int r_stage(const ref_t *r, int v, size_t i, int *olo, int *ohi)
{
    *olo = 0, *ohi = 64;
    if (r->arch != FM_ARCH_CNN)
        return 0;
    if (v == 2 || v == 3) { /* conv2 weight (64,288) or bias (64): output channel */
        *olo = (int)(v == 2 ? i / 288 : i);
        *ohi = *olo + 1;
    }
    return v / 2;
}

/* Compare fm_work_forward's loss and logp (last forward of w) with the reference's. */
static void r_check_forward(ref_t *r, double lib_mean_loss, const float *lib_logp,
                            const char *what)
{
    double ref = r_loss(r, 0, 0, 64);
    double e = fabs(lib_mean_loss - ref) / ref, elp = 0.0;
    for (int b = 0; b < r->B; b++) {
        const double *z = r->logits + (size_t)b * 10;
        double mx = z[0], s = 0.0;
        for (int c = 1; c < 10; c++)
            mx = z[c] > mx ? z[c] : mx;
        for (int c = 0; c < 10; c++)
            s += exp(z[c] - mx);
        for (int c = 0; c < 10; c++) {
            double d = fabs(lib_logp[b * 10 + c] - (z[c] - mx - log(s)));
            elp = d > elp ? d : elp;
        }
    }
    print_message("%s: forward vs double reference: loss rel %.2e, logp abs %.2e\n", what, e,
                  elp);
    FM_TU_ASSERT_LE(e, TOL_REF_LOSS, "%s forward loss vs reference\n", what);
    FM_TU_ASSERT_LE(elp, TOL_REF_LOGP, "%s forward logp vs reference\n", what);
}

/* Central difference of the reference's loss in parameter i of view v with step h. */
static double r_fd(ref_t *r, int v, size_t i, double h)
{
    int olo, ohi, st = r_stage(r, v, i, &olo, &ohi);
    double *p = r->p + r->off[v] + i, v0 = *p;
    *p = v0 + h;
    double lp = r_loss(r, st, olo, ohi);
    *p = v0 - h;
    double lm = r_loss(r, st, olo, ohi);
    *p = v0;
    r_loss(r, st, olo, ohi); /* restore the caches */
    return (lp - lm) / (2.0 * h);
}

/* FD of the reference against grad (the library's) on the view's largest gradient and
 * FD_MODEL_PER_VIEW random elements; returns the worst relative error over the views. */
static double r_fd_views(ref_t *r, const fm_model_t *m, const float *grad, fm_rng_t *rng,
                         const char *what)
{
    double worst = 0.0;
    for (int v = 0; v < r->nviews; v++) {
        const fm_view_t *vw = fm_model_view(m, v);
        const float *g = grad + vw->offset;
        size_t idx[FD_MODEL_PER_VIEW + 1], k = 0, imax = 0;
        for (size_t i = 1; i < vw->numel; i++)
            if (fabsf(g[i]) > fabsf(g[imax]))
                imax = i;
        idx[k++] = imax;
        while (k < FD_MODEL_PER_VIEW + 1)
            idx[k++] = (size_t)fm_rng_below(rng, vw->numel);
        double maxd = 0.0, maxg = 0.0;
        for (size_t j = 0; j < k; j++) {
            size_t i = idx[j];
            double fd = 0.0;
            for (double h = FD_H_REF; h >= 0.99e-8; h *= 0.1) {
                double f1 = r_fd(r, v, i, h), f2 = r_fd(r, v, i, h / 2);
                fd = f2;
                if (fabs(f1 - f2) <= 1e-4 * fabs(f2) + 1e-9)
                    break;
                print_message("  %s %s[%zu]: kink within h = %.0e (fd %.6e vs %.6e at h/2): "
                              "shrinking h\n",
                              what, vw->name, i, h, f1, f2);
            }
            double d = fabs(fd - g[i]);
            maxd = d > maxd || d != d ? d : maxd;
            maxg = fabs(g[i]) > maxg ? fabs(g[i]) : maxg;
        }
        assert_true(maxg > 0.0);
        double e = maxd / maxg;
        print_message("fd %s %-13s rel err %.2e (max |g| %.2e)\n", what, vw->name, e, maxg);
        FM_TU_ASSERT_LE(e, TOL_FD_MODEL, "fd %s %s\n", what, vw->name);
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void s_model_fd(const char *name, int B, uint64_t seed)
{
    int err = 0;
    fm_model_t *m = fm_model_new(name, &err);
    assert_non_null(m);
    fm_model_init(m, seed);
    fm_work_t *w = fm_work_new(m, B, &err);
    assert_non_null(w);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, 4);
    size_t nx = (size_t)B * 784, np = fm_model_nparams(m);
    float *x = fm_tu_floats(nx);
    fm_tu_normal(&rng, x, nx, 1.0);
    uint8_t *y = fm_tu_alloc((size_t)B, 1);
    for (int i = 0; i < B; i++)
        y[i] = (uint8_t)fm_rng_below(&rng, 10);
    float *g = fm_tu_floats(np);
    double loss = fm_work_forward(w, m, x, y, B, 0, NULL);
    assert_true(isfinite(loss) && loss > 0.0);
    fm_work_backward(w, m, g, 1.0f / (float)B);
    assert_true(fm_tu_all_finite(g, np));

    ref_t r;
    r_new(&r, m, x, y, B);
    r_check_forward(&r, loss / B, fm_work_logp(w), name);
    double worst = r_fd_views(&r, m, g, &rng, name);
    print_message("fd %s: worst %.2e\n", name, worst);

    /* backward accumulates into grads: a second call on the same forward doubles them */
    float *g2 = fm_tu_floats(np);
    memcpy(g2, g, np * sizeof(float));
    fm_work_backward(w, m, g2, 1.0f / (float)B);
    for (size_t i = 0; i < np; i++)
        g2[i] *= 0.5f;
    FM_TU_ASSERT_LE(fm_tu_rel_err(g2, g, np), 1e-6, "%s: fm_work_backward accumulates\n", name);

    r_free(&r);
    fm_work_destroy(&w);
    fm_work_destroy(&w); /* idempotent */
    assert_null(w);
    fm_model_destroy(&m);
    free(x), free(y), free(g), free(g2);
}

static void test_fd_model_logreg(void **state) { s_model_fd("logreg", 3, 41); }
static void test_fd_model_mlp(void **state) { s_model_fd("mlp", 3, 42); }
static void test_fd_model_cnn(void **state) { s_model_fd("cnn", 2, 43); }

/* With train = 1 the cnn's backward must multiply by the forward's dropout masks. The
 * reference gets the same masks by replaying the draws fm_work makes from the rng (dropout1
 * over B*9216, then dropout2 over B*128); the forward comparison confirms the replay. */
static void test_fd_model_cnn_dropout(void **state)
{
    int err = 0, B = 2;
    fm_model_t *m = fm_model_new("cnn", &err);
    assert_non_null(m);
    fm_model_init(m, 44);
    fm_work_t *w = fm_work_new(m, B, &err);
    assert_non_null(w);
    fm_rng_t rng;
    fm_rng_seed(&rng, 44, 4);
    float *x = fm_tu_floats((size_t)B * 784);
    fm_tu_normal(&rng, x, (size_t)B * 784, 1.0);
    uint8_t y[2] = {3, 7};
    size_t np = fm_model_nparams(m);
    float *g = fm_tu_floats(np), *g0 = fm_tu_floats(np);

    fm_rng_t drng;
    fm_rng_seed(&drng, 5, 0);
    double l1 = fm_work_forward(w, m, x, y, B, 1, &drng) / B;
    fm_work_backward(w, m, g, 1.0f / (float)B);
    /* dropout is really on: the loss and gradient differ from train = 0 */
    double l0 = fm_work_forward(w, m, x, y, B, 0, NULL) / B;
    fm_work_backward(w, m, g0, 1.0f / (float)B);
    assert_true(l0 != l1);
    assert_true(fm_tu_rel_err(g, g0, np) > 1e-2);

    float *ones = fm_tu_floats((size_t)B * 9216), *tmp = fm_tu_floats((size_t)B * 9216);
    float *mask1 = fm_tu_floats((size_t)B * 9216), *mask2 = fm_tu_floats((size_t)B * 128);
    fm_tu_fill(ones, (size_t)B * 9216, 1.0f);
    fm_rng_seed(&drng, 5, 0);
    fm_dropout_forward(tmp, mask1, ones, (size_t)B * 9216, 0.25f, &drng);
    fm_dropout_forward(tmp, mask2, ones, (size_t)B * 128, 0.5f, &drng);

    fm_rng_seed(&drng, 5, 0); /* forward again in train mode so logp is the train one */
    fm_work_forward(w, m, x, y, B, 1, &drng);
    ref_t r;
    r_new(&r, m, x, y, B);
    r.mask1 = mask1, r.mask2 = mask2;
    r_check_forward(&r, l1, fm_work_logp(w), "cnn+dropout");
    double worst = r_fd_views(&r, m, g, &rng, "cnn+dropout");
    print_message("fd cnn+dropout: worst %.2e\n", worst);
    r_free(&r);
    fm_work_destroy(&w);
    fm_model_destroy(&m);
    free(x), free(g), free(g0), free(ones), free(tmp), free(mask1), free(mask2);
}
static void test_work_args(void **state)
{
    int err = 0;
    fm_model_t *m = fm_model_new("mlp", &err);
    assert_non_null(m);
    assert_null(fm_work_new(m, 0, &err));
    assert_int_equal(err, FM_EARG);
    fm_work_t *w = fm_work_new(m, 5, &err);
    assert_non_null(w);
    assert_int_equal(fm_work_max_batch(w), 5);
    /* no labels: loss 0, logp rows are log-probabilities */
    float x[2 * 784];
    for (int i = 0; i < 2 * 784; i++)
        x[i] = (float)((i % 13) - 6) * 0.1f;
    fm_model_init(m, 1);
    assert_true(fm_work_forward(w, m, x, NULL, 2, 0, NULL) == 0.0);
    const float *lp = fm_work_logp(w);
    for (int b = 0; b < 2; b++) {
        double s = 0.0;
        for (int c = 0; c < 10; c++)
            s += exp(lp[b * 10 + c]);
        assert_true(fabs(s - 1.0) <= 1e-5);
    }
    fm_work_destroy(&w);
    assert_null(w);
    fm_work_destroy(NULL);
    fm_model_destroy(&m);
}

int main(void)
{
    fm_blas_setup(NULL); /* OpenBLAS on one thread (no re-exec without argv) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_twins),
        cmocka_unit_test(test_conv_twins),
        cmocka_unit_test(test_conv_act),
        cmocka_unit_test(test_relu_maxpool),
        cmocka_unit_test(test_fd_relu_maxpool),
        cmocka_unit_test(test_fd_dense),
        cmocka_unit_test(test_fd_conv),
        cmocka_unit_test(test_fd_relu),
        cmocka_unit_test(test_fd_maxpool),
        cmocka_unit_test(test_fd_dropout),
        cmocka_unit_test(test_fd_logsoftmax_nll),
        cmocka_unit_test(test_maxpool_ties),
        cmocka_unit_test(test_dropout_stats),
        cmocka_unit_test(test_fd_model_logreg),
        cmocka_unit_test(test_fd_model_mlp),
        cmocka_unit_test(test_fd_model_cnn),
        cmocka_unit_test(test_fd_model_cnn_dropout),
        cmocka_unit_test(test_work_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
