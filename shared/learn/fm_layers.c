#include "fm_layers.h"

#include "fm_hot.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- dense ------------------------------------------------------------------------------ */

void fm_dense_forward(float *out, const float *inp, const float *w, const float *b, int B, int IN,
                      int OUT)
{
    for (int i = 0; i < B; i++)
        memcpy(out + (size_t)i * OUT, b, sizeof(float) * OUT);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, IN, 1.0f, inp, IN, w, IN, 1.0f,
                out, OUT);
}

void fm_dense_forward_naive(float *out, const float *inp, const float *w, const float *b, int B,
                            int IN, int OUT)
{
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OUT; o++) {
            double acc = b[o];
            for (int k = 0; k < IN; k++)
                acc += (double)inp[(size_t)i * IN + k] * w[(size_t)o * IN + k];
            out[(size_t)i * OUT + o] = (float)acc;
        }
}

FM_HOT void fm_dense_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int B, int IN, int OUT)
{
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, IN, OUT, 1.0f, dout, OUT, w, IN,
                    0.0f, dinp, IN);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, B, 1.0f, dout, OUT, inp, IN,
                    1.0f, dw, IN);
    if (db)
        for (int i = 0; i < B; i++)
            for (int o = 0; o < OUT; o++)
                db[o] += dout[(size_t)i * OUT + o];
}

void fm_dense_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int B, int IN, int OUT)
{
    if (dinp)
        for (int i = 0; i < B; i++)
            for (int k = 0; k < IN; k++) {
                double acc = 0;
                for (int o = 0; o < OUT; o++)
                    acc += (double)dout[(size_t)i * OUT + o] * w[(size_t)o * IN + k];
                dinp[(size_t)i * IN + k] = (float)acc;
            }
    for (int o = 0; o < OUT; o++) {
        double accb = 0;
        for (int i = 0; i < B; i++)
            accb += dout[(size_t)i * OUT + o];
        if (db)
            db[o] += (float)accb;
        for (int k = 0; dw && k < IN; k++) {
            double acc = 0;
            for (int i = 0; i < B; i++)
                acc += (double)dout[(size_t)i * OUT + o] * inp[(size_t)i * IN + k];
            dw[(size_t)o * IN + k] += (float)acc;
        }
    }
}

/* ---- conv2d ----------------------------------------------------------------------------- */

size_t fm_conv2d_scratch(int C, int H, int W, int OC, int KH, int KW)
{
    return (size_t)C * KH * KW * ((size_t)(H - KH + 1) * (W - KW + 1) + (size_t)OC);
}

/* One image (C,H,W) -> col (C*KH*KW, OH*OW), stride 1, no padding. */
static void s_im2col(float *col, const float *img, int C, int H, int W, int KH, int KW)
{
    int OH = H - KH + 1, OW = W - KW + 1;
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) {
                float *row = col + ((size_t)(c * KH + kh) * KW + kw) * OH * OW;
                const float *src = img + ((size_t)c * H + kh) * W + kw;
                for (int oh = 0; oh < OH; oh++)
                    memcpy(row + (size_t)oh * OW, src + (size_t)oh * W, sizeof(float) * OW);
            }
}

/* col (C*KH*KW, OH*OW) -> image (C,H,W), overwriting the image (sums overlapping taps). */
FM_HOT static void s_col2im(float *img, const float *col, int C, int H, int W, int KH, int KW)
{
    int OH = H - KH + 1, OW = W - KW + 1;
    memset(img, 0, sizeof(float) * (size_t)C * H * W);
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) {
                const float *row = col + ((size_t)(c * KH + kh) * KW + kw) * OH * OW;
                float *dst = img + ((size_t)c * H + kh) * W + kw;
                for (int oh = 0; oh < OH; oh++) {
                    float *d = dst + (size_t)oh * W;
                    const float *s = row + (size_t)oh * OW;
                    for (int ow = 0; ow < OW; ow++)
                        d[ow] += s[ow];
                }
            }
}

FM_HOT void fm_conv2d_forward_act(float *out, const float *inp, const float *w, const float *b,
                                  float *scratch, int B, int C, int H, int W, int OC, int KH,
                                  int KW, int relu)
{
    int P = (H - KH + 1) * (W - KW + 1), CK = C * KH * KW;
    for (int n = 0; n < B; n++) {
        const float *x = inp + (size_t)n * C * H * W;
        float *y = out + (size_t)n * OC * P;
        s_im2col(scratch, x, C, H, W, KH, KW);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, P, CK, 1.0f, w, CK, scratch, P,
                    0.0f, y, P);
        if (!b && !relu)
            continue;
        for (int o = 0; o < OC; o++) {
            float bias = b ? b[o] : 0.0f, *yo = y + (size_t)o * P;
            if (relu)
                for (int p = 0; p < P; p++) {
                    float v = yo[p] + bias;
                    yo[p] = v > 0.0f ? v : 0.0f;
                }
            else
                for (int p = 0; p < P; p++)
                    yo[p] += bias;
        }
    }
}

void fm_conv2d_forward(float *out, const float *inp, const float *w, const float *b,
                       float *scratch, int B, int C, int H, int W, int OC, int KH, int KW)
{
    fm_conv2d_forward_act(out, inp, w, b, scratch, B, C, H, W, OC, KH, KW, 0);
}

void fm_conv2d_forward_naive(float *out, const float *inp, const float *w, const float *b, int B,
                             int C, int H, int W, int OC, int KH, int KW)
{
    int OH = H - KH + 1, OW = W - KW + 1;
    for (int n = 0; n < B; n++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b[o];
                    for (int c = 0; c < C; c++)
                        for (int kh = 0; kh < KH; kh++)
                            for (int kw = 0; kw < KW; kw++)
                                acc += (double)inp[(((size_t)n * C + c) * H + oh + kh) * W + ow +
                                                   kw] *
                                       w[(((size_t)o * C + c) * KH + kh) * KW + kw];
                    out[(((size_t)n * OC + o) * OH + oh) * OW + ow] = (float)acc;
                }
}

FM_HOT void fm_conv2d_backward_act(float *dinp, float *dw, float *db, const float *dout,
                                   const float *inp, const float *w, float *scratch, int B, int C,
                                   int H, int W, int OC, int KH, int KW, int relu_inp)
{
    int P = (H - KH + 1) * (W - KW + 1), CK = C * KH * KW;
    size_t img = (size_t)C * H * W;
    /* dw^T (CK,OC) is accumulated over the batch as col (CK,P) x dy^T (P,OC): for fedmq's
     * shapes this product runs ~20% faster than dy x col^T; added into dw once at the end */
    float *dwt = scratch + (size_t)CK * P;
    memset(dwt, 0, sizeof(float) * (size_t)CK * OC);
    for (int n = 0; n < B; n++) {
        const float *dy = dout + (size_t)n * OC * P;
        const float *x = inp + (size_t)n * img;
        if (db)
            for (int o = 0; o < OC; o++) {
                const float *d = dy + (size_t)o * P;
                float acc = 0.0f;
                for (int p = 0; p < P; p++)
                    acc += d[p];
                db[o] += acc;
            }
        s_im2col(scratch, x, C, H, W, KH, KW);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, CK, OC, P, 1.0f, scratch, P, dy, P,
                    1.0f, dwt, OC);
        if (dinp) {
            /* dcol (CK,P) = w^T (CK,OC) x dy (OC,P), then scatter back to the image */
            float *dx = dinp + (size_t)n * img;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CK, P, OC, 1.0f, w, CK, dy, P,
                        0.0f, scratch, P);
            s_col2im(dx, scratch, C, H, W, KH, KW);
            if (relu_inp)
                for (size_t i = 0; i < img; i++)
                    dx[i] = x[i] > 0.0f ? dx[i] : 0.0f;
        }
    }
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < CK; k++)
            dw[(size_t)o * CK + k] += dwt[(size_t)k * OC + o];
}

void fm_conv2d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, float *scratch, int B, int C, int H, int W, int OC,
                        int KH, int KW)
{
    fm_conv2d_backward_act(dinp, dw, db, dout, inp, w, scratch, B, C, H, W, OC, KH, KW, 0);
}

void fm_conv2d_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int B, int C, int H, int W,
                              int OC, int KH, int KW)
{
    int OH = H - KH + 1, OW = W - KW + 1;
    if (dinp)
        memset(dinp, 0, sizeof(float) * (size_t)B * C * H * W);
    for (int o = 0; o < OC; o++) {
        double accb = 0;
        for (int n = 0; n < B; n++)
            for (int p = 0; p < OH * OW; p++)
                accb += dout[((size_t)n * OC + o) * OH * OW + p];
        db[o] += (float)accb;
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < KH; kh++)
                for (int kw = 0; kw < KW; kw++) {
                    double acc = 0;
                    for (int n = 0; n < B; n++)
                        for (int oh = 0; oh < OH; oh++)
                            for (int ow = 0; ow < OW; ow++)
                                acc += (double)dout[(((size_t)n * OC + o) * OH + oh) * OW + ow] *
                                       inp[(((size_t)n * C + c) * H + oh + kh) * W + ow + kw];
                    dw[(((size_t)o * C + c) * KH + kh) * KW + kw] += (float)acc;
                }
    }
    if (dinp)
        for (int n = 0; n < B; n++)
            for (int c = 0; c < C; c++)
                for (int h = 0; h < H; h++)
                    for (int x = 0; x < W; x++) {
                        double acc = 0;
                        for (int o = 0; o < OC; o++)
                            for (int kh = 0; kh < KH; kh++)
                                for (int kw = 0; kw < KW; kw++) {
                                    int oh = h - kh, ow = x - kw;
                                    if (oh < 0 || oh >= OH || ow < 0 || ow >= OW)
                                        continue;
                                    acc += (double)
                                               dout[(((size_t)n * OC + o) * OH + oh) * OW + ow] *
                                           w[(((size_t)o * C + c) * KH + kh) * KW + kw];
                                }
                        dinp[(((size_t)n * C + c) * H + h) * W + x] = (float)acc;
                    }
}

/* ---- elementwise -------------------------------------------------------------------------- */

FM_HOT void fm_relu_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

FM_HOT void fm_relu_backward(float *dinp, const float *dout, const float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

/* One output row of 2x2 max-pooling from input rows r0, r1, plus bias and optional relu;
 * am gets the position 0..3 of the first maximum (PyTorch's tie rule). Written with
 * comparisons as integers and selects so that the compiler vectorises it (branches here
 * mispredict on every other window). */
static inline void s_pool_row(float *restrict y, uint8_t *restrict am, const float *restrict r0,
                              const float *restrict r1, float bias, int relu, int OW)
{
    for (int ow = 0; ow < OW; ow++) {
        float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
        int g01 = b > a, g23 = d > c;
        float m01 = g01 ? b : a;
        float m23 = g23 ? d : c;
        int second = m23 > m01;
        float v = (second ? m23 : m01) + bias;
        y[ow] = relu ? (v > 0.0f ? v : 0.0f) : v;
        am[ow] = (uint8_t)(g01 + second * (2 + g23 - g01));
    }
}

/* Backward of one output row: d0, d1 (the two input rows, W = 2*OW apart) are cleared, then
 * g (masked by y > 0 when relu) goes to the argmax of each window. Returns the sum of g. */
static inline float s_unpool_row(float *restrict d0, const float *restrict dy,
                                 const float *restrict y, const uint8_t *restrict am, int relu,
                                 int OW)
{
    int W = 2 * OW;
    memset(d0, 0, sizeof(float) * 2 * (size_t)W);
    float acc = 0.0f;
    for (int ow = 0; ow < OW; ow++) {
        float g = relu ? (y[ow] > 0.0f ? dy[ow] : 0.0f) : dy[ow];
        int k = am[ow];
        acc += g;
        d0[(k >> 1) * W + 2 * ow + (k & 1)] = g;
    }
    return acc;
}

/* Shared body of the pooling kernels: N planes of (H,W), plane n has bias[n % C]. */
FM_HOT static void s_pool(float *out, uint8_t *argmax, const float *inp, const float *bias, int N,
                          int C, int H, int W, int relu)
{
    int OH = H / 2, OW = W / 2;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H * W;
        float b = bias ? bias[n % C] : 0.0f;
        for (int oh = 0; oh < OH; oh++) {
            size_t o = (size_t)n * OH * OW + (size_t)oh * OW;
            const float *r0 = x + (size_t)(2 * oh) * W;
            s_pool_row(out + o, argmax + o, r0, r0 + W, b, relu, OW);
        }
    }
}

FM_HOT static void s_unpool(float *dinp, float *dbias, const float *dout, const float *out,
                            const uint8_t *argmax, int N, int C, int H, int W, int relu)
{
    int OH = H / 2, OW = W / 2;
    for (int n = 0; n < N; n++) {
        float *dx = dinp + (size_t)n * H * W;
        float acc = 0.0f;
        for (int oh = 0; oh < OH; oh++) {
            size_t o = (size_t)n * OH * OW + (size_t)oh * OW;
            acc += s_unpool_row(dx + (size_t)(2 * oh) * W, dout + o, out + o, argmax + o, relu,
                                OW);
        }
        if (dbias)
            dbias[n % C] += acc;
    }
}

void fm_maxpool2_forward(float *out, uint8_t *argmax, const float *inp, int N, int H, int W)
{
    s_pool(out, argmax, inp, NULL, N, 1, H, W, 0);
}

void fm_maxpool2_backward(float *dinp, const float *dout, const uint8_t *argmax, int N, int H,
                          int W)
{
    s_unpool(dinp, NULL, dout, NULL, argmax, N, 1, H, W, 0);
}

void fm_relu_maxpool2_forward(float *out, uint8_t *argmax, const float *inp, const float *bias,
                              int B, int C, int H, int W)
{
    s_pool(out, argmax, inp, bias, B * C, C, H, W, 1);
}

void fm_relu_maxpool2_backward(float *dinp, float *dbias, const float *dout, const float *out,
                               const uint8_t *argmax, int B, int C, int H, int W)
{
    s_unpool(dinp, dbias, dout, out, argmax, B * C, C, H, W, 1);
}

/* splitmix64's output function: a strong 64-bit mix, independent per counter value, so
 * the mask loop below has no serial dependency and vectorises. */
static inline uint64_t s_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

FM_HOT void fm_dropout_forward(float *out, float *mask, const float *inp, size_t n, float p,
                               fm_rng_t *rng)
{
    float keep = 1.0f / (1.0f - p);
    /* one draw from rng keys a counter-based stream: four 16-bit uniforms per counter,
     * compared against p * 2^16 (p resolved to 1/65536: exact for 0.25 and 0.5) */
    uint32_t threshold = (uint32_t)((double)p * 65536.0 + 0.5);
    uint64_t key = fm_rng_u64(rng);
    size_t quads = n / 4;
    for (size_t j = 0; j < quads; j++) {
        uint64_t bits = s_mix64(key + (j + 1) * 0x9E3779B97F4A7C15ull);
        for (int k = 0; k < 4; k++)
            mask[4 * j + k] = (uint32_t)((bits >> (16 * k)) & 0xffff) < threshold ? 0.0f : keep;
    }
    uint64_t bits = s_mix64(key + (quads + 1) * 0x9E3779B97F4A7C15ull);
    for (size_t i = 4 * quads, k = 0; i < n; i++, k++)
        mask[i] = (uint32_t)((bits >> (16 * k)) & 0xffff) < threshold ? 0.0f : keep;
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] * mask[i];
}

FM_HOT void fm_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] = dout[i] * mask[i];
}

double fm_logsoftmax_nll_forward(float *logp, const float *logits, const uint8_t *y, int B, int C)
{
    double loss = 0.0;
    for (int i = 0; i < B; i++) {
        const float *z = logits + (size_t)i * C;
        float *lp = logp + (size_t)i * C;
        float mx = z[0];
        for (int c = 1; c < C; c++)
            mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++)
            sum += exp((double)z[c] - mx);
        float lsum = (float)log(sum);
        for (int c = 0; c < C; c++)
            lp[c] = (z[c] - mx) - lsum;
        if (y)
            loss -= lp[y[i]];
    }
    return loss;
}

void fm_logsoftmax_nll_backward(float *dlogits, const float *logp, const uint8_t *y, int B, int C,
                                float scale)
{
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++) {
            float p = expf(logp[(size_t)i * C + c]);
            dlogits[(size_t)i * C + c] = (p - (c == y[i] ? 1.0f : 0.0f)) * scale;
        }
}
