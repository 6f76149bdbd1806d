#include "fm_blas.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm_rng.h"

char *openblas_get_corename(void);
char *openblas_get_config(void);
void openblas_set_num_threads(int n);

#define REEXEC_VAR "FEDMQ_BLAS_REEXEC"

/* Cores whose sgemm uses AVX2 or AVX-512 kernels. */
static int s_core_is_fast(const char *core)
{
    static const char *fast[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        if (core && strcasecmp(core, fast[i]) == 0)
            return 1;
    return 0;
}

static const char *s_best_core(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    return NULL;
}

void fm_blas_setup(char **argv)
{
    const char *core = openblas_get_corename();
    const char *auto_var = getenv("FEDMQ_BLAS_AUTOCORE");
    /* FEDMQ_BLAS_AUTOCORE=force treats any loaded core as misdetected: it exercises the
     * re-exec path on machines whose core OpenBLAS recognises (tests, diagnostics) */
    int force = auto_var && strcmp(auto_var, "force") == 0;
    if (!getenv("OPENBLAS_CORETYPE") && !getenv(REEXEC_VAR) &&
        !(auto_var && strcmp(auto_var, "0") == 0) && (force || !s_core_is_fast(core))) {
        const char *best = s_best_core();
        if (best && argv && argv[0]) {
            setenv("OPENBLAS_CORETYPE", best, 1);
            setenv(REEXEC_VAR, core ? core : "unknown", 1);
            execv("/proc/self/exe", argv);
            /* exec failed: carry on with the slow core; fm_blas_describe says so */
            unsetenv("OPENBLAS_CORETYPE");
        }
    }
    openblas_set_num_threads(1);
}

const char *fm_blas_core(void) { return openblas_get_corename(); }

const char *fm_blas_describe(char *buf, size_t len)
{
    const char *core = openblas_get_corename();
    const char *from = getenv(REEXEC_VAR);
    const char *cfg = openblas_get_config();
    char version[32] = "OpenBLAS";
    if (cfg && strncmp(cfg, "OpenBLAS ", 9) == 0)
        snprintf(version, sizeof version, "OpenBLAS %.*s", (int)strcspn(cfg + 9, " "), cfg + 9);
    if (from)
        snprintf(buf, len, "%s core %s (auto-selected: the library detected %s on a CPU with %s)",
                 version, core, from, strcmp(core, "SkylakeX") == 0 ? "AVX-512" : "AVX2");
    else if (getenv("OPENBLAS_CORETYPE"))
        snprintf(buf, len, "%s core %s (from OPENBLAS_CORETYPE)", version, core);
    else if (!s_core_is_fast(core) && s_best_core())
        snprintf(buf, len,
                 "%s core %s (generic kernels on a CPU with %s: slow: drop "
                 "FEDMQ_BLAS_AUTOCORE=0 or set OPENBLAS_CORETYPE)",
                 version, core, s_best_core());
    else
        snprintf(buf, len, "%s core %s", version, core);
    return buf;
}

void fm_sgemm_naive(int transa, int transb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                float a = transa ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = transb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}

int fm_blas_selfcheck(fm_errmsg_t *e)
{
    /* M, N, K of the products in fm_layers (dense and im2col conv), shrunk where large */
    static const int shapes[][3] = {{64, 576, 288},  {288, 576, 64}, {64, 288, 576},
                                    {32, 128, 2304}, {17, 200, 784}, {13, 10, 200},
                                    {32, 676, 9},    {32, 9, 676},   {1, 1, 1}};
    int rc = 0;
    fm_rng_t rng;
    fm_rng_seed(&rng, 12345, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && rc == 0; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
        float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
        if (!A || !B || !C || !R) {
            rc = fm_errmsg_set(e, -12, "BLAS self-check: out of memory");
            goto next;
        }
        for (int i = 0; i < M * K; i++)
            A[i] = (float)fm_rng_normal(&rng);
        for (int i = 0; i < K * N; i++)
            B[i] = (float)fm_rng_normal(&rng);
        for (int t = 0; t < 4 && rc == 0; t++) {
            int ta = t & 1, tb = t >> 1;
            for (int i = 0; i < M * N; i++)
                C[i] = R[i] = (float)fm_rng_normal(&rng);
            float beta = (t == 3) ? 1.0f : 0.0f;
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, M, N, K, 0.5f, A, ta ? M : K, B,
                        tb ? K : N, beta, C, N);
            fm_sgemm_naive(ta, tb, M, N, K, 0.5f, A, ta ? M : K, B, tb ? K : N, beta, R, N);
            double maxdiff = 0.0, maxref = 0.0;
            for (int i = 0; i < M * N; i++) {
                maxdiff = fmax(maxdiff, fabs((double)C[i] - R[i]));
                maxref = fmax(maxref, fabs((double)R[i]));
            }
            double rel = maxdiff / (maxref > 0 ? maxref : 1.0);
            if (!(rel < 1e-4))
                rc = fm_errmsg_set(e, FM_EBLAS,
                                   "BLAS self-check failed on core %s: sgemm %dx%dx%d trans %d%d "
                                   "differs from the naive product by %.3g (relative)",
                                   openblas_get_corename(), M, N, K, ta, tb, rel);
        }
    next:
        free(A);
        free(B);
        free(C);
        free(R);
    }
    return rc;
}

double fm_blas_peak_gflops(int n, double seconds)
{
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n);
    float *C = malloc(sizeof(float) * n * n);
    double gf = 0.0;
    if (!A || !B || !C)
        goto cleanup;
    for (int i = 0; i < n * n; i++)
        A[i] = B[i] = 1.0f / (1 + i % 7);
    struct timespec t0, t1;
    long iters = 0;
    double el = 0.0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C,
                    n);
        iters++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    } while (el < seconds);
    gf = 2.0 * n * n * (double)n * iters / el / 1e9;
cleanup:
    free(A);
    free(B);
    free(C);
    return gf;
}
