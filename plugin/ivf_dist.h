/* SPDX-License-Identifier: MIT */
/* ivf_dist.h: ||x - y||^2 as the IVF-Flat search engines (ivf_search.c, ivf_search_one.c) compute it,
 * one expression for both so that their distances are equal bit for bit. */
#ifndef FGMM_IVF_DIST_H
#define FGMM_IVF_DIST_H

/* The distance loops are compiled twice, AVX2+FMA and baseline x86-64, picked at load time (an
 * ifunc), as in the engine (src/cpu_engine.c). Not under ThreadSanitizer, clang, or elsewhere.
 * (-std=c11 keeps GCC from contracting a * b + c into an FMA: both clones round alike.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define HOT_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define HOT_CLONES
#endif

#if defined(__GNUC__)
#define IVF_INLINE static inline __attribute__((always_inline))
#else
#define IVF_INLINE static inline
#endif

/* ||x - y||^2 in float; 16 independent partial sums (vector lanes), added in a fixed order. Inlined
 * into the callers' HOT_CLONES loops. */
IVF_INLINE float ivf_l2sq(const float* restrict x, const float* restrict y, int d) {
    float acc[16] = {0};
    int j = 0;
    for (; j + 16 <= d; j += 16)
        for (int t = 0; t < 16; t++) {
            float e = x[j + t] - y[j + t];
            acc[t] += e * e;
        }
    for (int t = 0; j < d; j++, t++) {
        float e = x[j] - y[j];
        acc[t] += e * e;
    }
    float s = 0;
    for (int t = 0; t < 16; t++) s += acc[t];
    return s;
}

#endif
