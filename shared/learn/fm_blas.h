/* fm_blas: which OpenBLAS kernels fedmq runs on, and a check that they compute correctly.
 *
 * Debian 12's OpenBLAS 0.3.21 falls back to generic SSE3 kernels ("Prescott") on CPUs it
 * does not recognise, 3-4x slower for our shapes. OpenBLAS reads OPENBLAS_CORETYPE once,
 * when the library loads, so the only way to change the core is before load: fm_blas_setup()
 * re-executes the program once with OPENBLAS_CORETYPE set when (a) the user did not set it,
 * (b) FEDMQ_BLAS_AUTOCORE is not "0", (c) the loaded core has no AVX2 kernels and (d) the
 * CPU supports AVX-512 (-> SkylakeX) or AVX2+FMA (-> Haswell). fm_blas_selfcheck() then
 * compares sgemm against a naive loop on fedmq's shapes; callers refuse to run on mismatch.
 * FEDMQ_BLAS_AUTOCORE=force takes the re-exec path whatever core loaded (for tests). */
#ifndef FM_BLAS_H
#define FM_BLAS_H

#include <stddef.h>

#include "fm_err.h"

/* Call first in main(), before any thread or BLAS call. May not return (re-exec). Holds
 * OpenBLAS to one thread: fedmq parallelises over samples itself. */
void fm_blas_setup(char **argv);

/* One line for the start-up log, e.g. "OpenBLAS 0.3.21 core SkylakeX (auto-selected:
 * the library detected Prescott on a CPU with AVX-512)". Written into buf. */
const char *fm_blas_describe(char *buf, size_t len);

/* The core OpenBLAS runs on (static string). */
const char *fm_blas_core(void);

/* Compare cblas_sgemm with a naive double-accumulating product over the transposes and
 * shapes fedmq uses. 0, or FM_EBLAS with the worst relative error in `e`. */
int fm_blas_selfcheck(fm_errmsg_t *e);

/* Naive C = alpha*op(A)*op(B) + beta*C, row-major (the twin used by the self-check). */
void fm_sgemm_naive(int transa, int transb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Peak sgemm GFLOP/s on one thread for an M=N=K=n product (for benchmark reports). */
double fm_blas_peak_gflops(int n, double seconds);

#endif
