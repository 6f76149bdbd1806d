/* fm_hot: function multi-versioning for fedmq's own hot loops.
 *
 * The Debian package is built without -march=native (it must run on any x86-64 CPU), so
 * fedmq's own loops (OpenBLAS dispatches at run time by itself) would be compiled for SSE2
 * only. A function marked FM_HOT is compiled three times when the build defines FM_CLONES
 * (CMake -DFM_CLONES=ON with -DFM_NATIVE=OFF): for x86-64-v4 (AVX-512), x86-64-v3 (AVX2,
 * FMA) and the baseline; the dynamic loader picks one for the CPU (GCC target_clones, an
 * ifunc). Marked: the element-wise layers, col2im, pooling, dropout, the optimiser and the
 * gradient reduction. Results are the same in every clone: fedmq compiles as ISO C11, which
 * implies -ffp-contract=off (no FMA contraction), and no loop is reassociated.
 * Without FM_CLONES (and with -march=native) FM_HOT is empty. */
#ifndef FM_HOT_H
#define FM_HOT_H

#if defined(FM_CLONES) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FM_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FM_HOT
#endif

#endif
