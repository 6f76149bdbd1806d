/* fm_layers: pure forward/backward kernels over flat float arrays (llm.c style).
 *
 * Conventions: the output comes first; shapes are in the comment; nothing allocates;
 * scratch buffers are passed in. Backward functions ACCUMULATE into parameter gradients
 * (dw, db: +=) and OVERWRITE input gradients (dinp: =); dinp may be NULL when the input
 * needs no gradient (first layer). Every BLAS kernel has a `_naive` twin (plain loops,
 * double accumulation) used by the tests to check the fast path. */
#ifndef FM_LAYERS_H
#define FM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_rng.h"

/* dense: inp (B,IN), w (OUT,IN), b (OUT) -> out (B,OUT) */
void fm_dense_forward(float *out, const float *inp, const float *w, const float *b, int B, int IN,
                      int OUT);
void fm_dense_forward_naive(float *out, const float *inp, const float *w, const float *b, int B,
                            int IN, int OUT);
/* dout (B,OUT) -> dinp (B,IN) =, dw (OUT,IN) +=, db (OUT) += (each of the three may be NULL) */
void fm_dense_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                       const float *w, int B, int IN, int OUT);
void fm_dense_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int B, int IN, int OUT);

/* Scratch floats conv2d needs: C*KH*KW * (OH*OW + OC) (an im2col buffer, and the
 * transposed weight gradient that backward accumulates over the batch). */
size_t fm_conv2d_scratch(int C, int H, int W, int OC, int KH, int KW);

/* conv2d, stride 1, no padding: inp (B,C,H,W), w (OC,C,KH,KW), b (OC)
 * -> out (B,OC,OH,OW) with OH = H-KH+1, OW = W-KW+1. im2col + sgemm per sample. */
void fm_conv2d_forward(float *out, const float *inp, const float *w, const float *b,
                       float *scratch, int B, int C, int H, int W, int OC, int KH, int KW);
void fm_conv2d_forward_naive(float *out, const float *inp, const float *w, const float *b, int B,
                             int C, int H, int W, int OC, int KH, int KW);
/* dout (B,OC,OH,OW) -> dinp (B,C,H,W) = (or NULL), dw +=, db += */
void fm_conv2d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, float *scratch, int B, int C, int H, int W, int OC,
                        int KH, int KW);
void fm_conv2d_backward_naive(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int B, int C, int H, int W,
                              int OC, int KH, int KW);

/* Fused variants used by the cnn (each equals a composition of the plain kernels; the
 * tests check that):
 * conv2d forward with optional bias (b may be NULL) and optional relu on the output. */
void fm_conv2d_forward_act(float *out, const float *inp, const float *w, const float *b,
                           float *scratch, int B, int C, int H, int W, int OC, int KH, int KW,
                           int relu);
/* conv2d backward where db may be NULL (no bias gradient) and, with relu_inp != 0, dinp is
 * also multiplied by (inp > 0): the backward of the relu that produced inp, done while the
 * sample is in cache. */
void fm_conv2d_backward_act(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, float *scratch, int B, int C, int H,
                            int W, int OC, int KH, int KW, int relu_inp);
/* out = relu(maxpool2(inp) + bias[c]): inp (B,C,H,W) -> out (B,C,H/2,W/2), argmax as in
 * fm_maxpool2_forward. Since max(x + b) = max(x) + b and relu is monotonic, this equals
 * maxpool2(relu(inp + bias)) at a quarter of the elementwise work. */
void fm_relu_maxpool2_forward(float *out, uint8_t *argmax, const float *inp, const float *bias,
                              int B, int C, int H, int W);
/* Backward of the above: dinp (B,C,H,W) = dout at the argmax where out > 0, else 0;
 * dbias (C) += sum of those gradients. */
void fm_relu_maxpool2_backward(float *dinp, float *dbias, const float *dout, const float *out,
                               const uint8_t *argmax, int B, int C, int H, int W);

/* relu: out = max(inp, 0), n elements; out may alias inp. */
void fm_relu_forward(float *out, const float *inp, size_t n);
/* dinp = dout * (out > 0); dinp may alias dout. */
void fm_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* max-pool 2x2, stride 2: inp (N,H,W) -> out (N,H/2,W/2), argmax (N,H/2,W/2) in 0..3
 * (first maximum in row-major window order wins, as in PyTorch). H, W even. */
void fm_maxpool2_forward(float *out, uint8_t *argmax, const float *inp, int N, int H, int W);
/* dout (N,H/2,W/2) -> dinp (N,H,W) = */
void fm_maxpool2_backward(float *dinp, const float *dout, const uint8_t *argmax, int N, int H,
                          int W);

/* dropout (inverted): mask[i] = 0 with probability p else 1/(1-p); out = inp * mask.
 * out may alias inp. 0 <= p < 1, resolved to 1/65536. */
void fm_dropout_forward(float *out, float *mask, const float *inp, size_t n, float p,
                        fm_rng_t *rng);
/* dinp = dout * mask; dinp may alias dout. */
void fm_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n);

/* log-softmax + NLL: logits (B,C) -> logp (B,C); returns the SUM over the batch of
 * -logp[b][y[b]] (callers divide by the batch size they normalise by); y may be NULL
 * (prediction only: returns 0). */
double fm_logsoftmax_nll_forward(float *logp, const float *logits, const uint8_t *y, int B,
                                 int C);
/* dlogits = (softmax - onehot(y)) * scale, where scale = 1/total batch size. */
void fm_logsoftmax_nll_backward(float *dlogits, const float *logp, const uint8_t *y, int B, int C,
                                float scale);

#endif
