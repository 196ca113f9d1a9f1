/* SPDX-License-Identifier: MIT */
/* ivf_util.h: helpers shared by the IVF benchmark programs (ivf_curves.c, bench_build.c). */
#ifndef FGMM_IVF_UTIL_H
#define FGMM_IVF_UTIL_H
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>

#include "flashgmm_io.h"

#define GT_K 100 /* true neighbours kept per query */

/* The rows of v as floats (uint8 converted); NULL if out of memory. */
static inline float* vecs_to_float(const FgmmVecs* v) {
    float* f = malloc((size_t)v->n * v->d * sizeof(float));
    if (!f) return NULL;
    for (size_t i = 0; i < (size_t)v->n * v->d; i++)
        f[i] = v->dtype == FGMM_U8 ? ((uint8_t*)v->data)[i] : ((float*)v->data)[i];
    return f;
}

/* Exact top-GT_K by brute force: BLAS blocks of queries x base, partial insertion sort. */
static inline int32_t* ground_truth(const float* xb, idx_t nb, const float* xq, idx_t nq, int d) {
    int32_t* gt = malloc((size_t)nq * GT_K * sizeof(int32_t));
    float* bn = malloc(nb * sizeof(float));
    const idx_t QB = 256, BB = 16384;
    float* g = malloc((size_t)QB * BB * sizeof(float));
    float* bd = malloc((size_t)nq * GT_K * sizeof(float));
    for (idx_t i = 0; i < nb; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)xb[i * d + j] * xb[i * d + j];
        bn[i] = (float)s;
    }
    for (size_t i = 0; i < (size_t)nq * GT_K; i++) bd[i] = INFINITY, gt[i] = -1;
    for (idx_t q0 = 0; q0 < nq; q0 += QB) {
        idx_t qb = nq - q0 < QB ? nq - q0 : QB;
        for (idx_t b0 = 0; b0 < nb; b0 += BB) {
            idx_t bb = nb - b0 < BB ? nb - b0 : BB;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, bb, d, -2.0f, xq + q0 * d, d, xb + b0 * d, d, 0.0f,
                        g, bb);
#pragma omp parallel for
            for (idx_t i = 0; i < qb; i++) {
                float* dl = bd + (q0 + i) * GT_K; /* (cblas.h brings complex.h's I) */
                int32_t* il = gt + (q0 + i) * GT_K;
                for (idx_t j = 0; j < bb; j++) {
                    float v = g[i * bb + j] + bn[b0 + j]; /* ||q||^2 omitted: same for the row */
                    if (v >= dl[GT_K - 1]) continue;
                    int p = GT_K - 1;
                    while (p > 0 && dl[p - 1] > v) dl[p] = dl[p - 1], il[p] = il[p - 1], p--;
                    dl[p] = v, il[p] = (int32_t)(b0 + j);
                }
            }
        }
    }
    free(bn);
    free(g);
    free(bd);
    return gt;
}

/* Bytes of the index's lists and centroids: entries x (code + id) + nlist x d floats, with the
 * code size from the factory string's codes part (Flat: d floats; PQm or PQmxb: m b-bit codes);
 * -1 for other codes. */
static inline double index_bytes(const FaissIndex* index, const char* codes, int nlist, int d) {
    int m = 0, b = 8;
    double code = !strcmp(codes, "Flat") ? 4.0 * d : sscanf(codes, "PQ%dx%d", &m, &b) >= 1 ? ceil(m * b / 8.0) : -1;
    if (code < 0) return -1;
    return (double)faiss_Index_ntotal(index) * (code + sizeof(idx_t)) + (double)nlist * d * sizeof(float);
}
#endif
