/* SPDX-License-Identifier: MIT */
/* spill.c: SOAR spill lists (capi/flashgmm_spill.h): the CPU path (fgmm_soar_assign), and the
 * argument checks and centroid shift that the GPU path (gpu_spill.c) shares with it.
 *
 * Rows go in blocks: one sgemm gives the block's inner products with the (shifted) centroids,
 * distances and the nearest two come from them row by row; a second sgemm of the unit
 * residuals r/||r|| against the centroids gives the SOAR projection term. Memory is
 * O(block rows * k + k * d). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flashgmm_spill.h"
#include "internal.h"

/* Rows per block: the two rows x k float buffers take about this many bytes. */
#define SPILL_BLOCK_BYTES ((size_t)32 << 20)

double fgmm_soar_loss(int d, const float* x, const float* cp, const float* c, float lambda) {
    if (!x || !cp || !c || d < 1) return NAN;
    double rr = 0, dist = 0, proj = 0;
    for (int j = 0; j < d; j++) {
        double r = (double)x[j] - cp[j], e = (double)x[j] - c[j];
        rr += r * r;
        dist += e * e;
        proj += r * e;
    }
    return rr > 0 ? dist + lambda * proj * proj / rr : dist;
}

static void cents_free(fgmm_soar_cents* sc) {
    free(sc->mean); free(sc->cs); free(sc->cn);
    memset(sc, 0, sizeof *sc);
}

static int cents_make(fgmm_soar_cents* sc, int k, int d, const float* c, const char* who) {
    sc->k = k;
    sc->d = d;
    sc->mean = calloc((size_t)d, sizeof(double));
    sc->cs = malloc((size_t)k * d * sizeof(float));
    sc->cn = malloc((size_t)k * sizeof(float));
    if (!sc->mean || !sc->cs || !sc->cn) {
        cents_free(sc);
        return fgmm_fail(FGMM_ERR_NOMEM, "%s: out of host memory (k = %d, d = %d)", who, k, d);
    }
    double* mean = sc->mean;
    for (int j = 0; j < k; j++)
        for (int t = 0; t < d; t++) mean[t] += c[(size_t)j * d + t];
    for (int t = 0; t < d; t++) mean[t] /= k;
#pragma omp parallel for
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int t = 0; t < d; t++) {
            float v = (float)(c[(size_t)j * d + t] - mean[t]);
            sc->cs[(size_t)j * d + t] = v;
            s += (double)v * v;
        }
        sc->cn[j] = (float)s;
    }
    return FGMM_OK;
}

/* The checks both paths make, then the shifted centroids (sc->mean == NULL when n == 0). */
static int soar_begin(const char* who, fgmm_idx_t n, int d, const float* x, int k, const float* c, float lambda,
                      const fgmm_idx_t* primary, int want_spill, fgmm_soar_cents* sc) {
    memset(sc, 0, sizeof *sc);
    if (!x) return fgmm_fail(FGMM_ERR_NULL, "%s: x is NULL", who);
    if (!c) return fgmm_fail(FGMM_ERR_NULL, "%s: centroids is NULL", who);
    if (!primary) return fgmm_fail(FGMM_ERR_NULL, "%s: primary is NULL", who);
    if (n < 0) return fgmm_fail(FGMM_ERR_ARG, "%s: n = %lld", who, (long long)n);
    if (k < (want_spill ? 2 : 1))
        return fgmm_fail(FGMM_ERR_ARG, "%s: k = %d; a spill list needs k >= 2", who, k);
    if (!(lambda >= 0) || !isfinite(lambda))
        return fgmm_fail(FGMM_ERR_ARG, "%s: lambda = %g; must be finite and >= 0", who, lambda);
    char what[96];
    snprintf(what, sizeof what, "%s (centroids)", who);
    fgmm_data cv = {c, k, d, FGMM_F32};
    int rc = fgmm_data_check(&cv, what);
    if (rc || n == 0) return rc;
    fgmm_data xv = {x, n, d, FGMM_F32};
    if ((rc = fgmm_data_check(&xv, who))) return rc;
    return cents_make(sc, k, d, c, who);
}

int fgmm_soar_assign(fgmm_idx_t n, int d, const float* x, int k, const float* c, float lambda, fgmm_idx_t* primary,
                     fgmm_idx_t* spill, float* d1, float* d2) {
    fgmm_soar_cents sc;
    int rc = soar_begin("fgmm_soar_assign", n, d, x, k, c, lambda, primary, spill != NULL, &sc);
    if (rc || n == 0) return rc;
    size_t rows = SPILL_BLOCK_BYTES / (2 * sizeof(float) * (size_t)k);
    rows = rows < 16 ? 16 : rows > 8192 ? 8192 : rows;
    if ((fgmm_idx_t)rows > n) rows = (size_t)n;
    const double* mean = sc.mean;
    const float *cs = sc.cs, *cn = sc.cn;                /* centroids - mean, ||cs||^2 */
    float* xs = malloc(rows * d * sizeof(float));        /* block rows - mean, then unit residuals */
    float* xn = malloc(rows * sizeof(float));
    float* g = malloc(rows * (size_t)k * sizeof(float)); /* <xs, cs>, then distances */
    float* h = spill ? malloc(rows * (size_t)k * sizeof(float)) : NULL; /* <r/||r||, cs> */
    float* rx = spill ? malloc(rows * sizeof(float)) : NULL;            /* <r/||r||, xs> */
    if (!xs || !xn || !g || (spill && (!h || !rx))) {
        rc = fgmm_fail(FGMM_ERR_NOMEM, "fgmm_soar_assign: out of host memory (k = %d, d = %d)", k, d);
        goto done;
    }
    for (fgmm_idx_t i0 = 0; i0 < n; i0 += (fgmm_idx_t)rows) {
        int b = (int)(n - i0 < (fgmm_idx_t)rows ? n - i0 : (fgmm_idx_t)rows);
#pragma omp parallel for
        for (int i = 0; i < b; i++) {
            double s = 0;
            for (int t = 0; t < d; t++) {
                float v = (float)(x[(size_t)(i0 + i) * d + t] - mean[t]);
                xs[(size_t)i * d + t] = v;
                s += (double)v * v;
            }
            xn[i] = (float)s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, 1.0f, xs, d, cs, d, 0.0f, g, k);
#pragma omp parallel for
        for (int i = 0; i < b; i++) {
            float* gi = g + (size_t)i * k;
            float b1 = INFINITY, b2 = INFINITY;
            int a1 = 0;
            for (int j = 0; j < k; j++) {
                float v = fmaxf(xn[i] + cn[j] - 2.0f * gi[j], 0.0f);
                gi[j] = v;
                if (v < b1) b2 = b1, b1 = v, a1 = j;
                else if (v < b2) b2 = v;
            }
            primary[i0 + i] = a1;
            if (d1) d1[i0 + i] = b1;
            if (d2) d2[i0 + i] = k > 1 ? b2 : INFINITY;
            if (!spill) continue;
            /* unit residual r/||r|| in place of the row; <r/||r||, xs> kept */
            float* xi = xs + (size_t)i * d;
            const float* cp = cs + (size_t)a1 * d;
            double rr = 0, px = 0;
            for (int t = 0; t < d; t++) rr += ((double)xi[t] - cp[t]) * ((double)xi[t] - cp[t]);
            double inv = rr > 0 ? 1.0 / sqrt(rr) : 0.0;
            for (int t = 0; t < d; t++) {
                float u = (float)(((double)xi[t] - cp[t]) * inv);
                px += (double)u * xi[t];
                xi[t] = u;
            }
            rx[i] = (float)px;
        }
        if (!spill) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, 1.0f, xs, d, cs, d, 0.0f, h, k);
#pragma omp parallel for
        for (int i = 0; i < b; i++) {
            const float* gi = g + (size_t)i * k;
            const float* hi = h + (size_t)i * k;
            fgmm_idx_t p = primary[i0 + i];
            float best = INFINITY;
            int arg = p == 0 ? 1 : 0;
            for (int j = 0; j < k; j++) {
                if (j == p) continue;
                float e = rx[i] - hi[j]; /* <r/||r||, x - c_j> */
                float v = gi[j] + lambda * e * e;
                if (v < best) best = v, arg = j;
            }
            spill[i0 + i] = arg;
        }
    }
done:
    cents_free(&sc);
    free(xs); free(xn); free(g); free(h); free(rx);
    return rc;
}

int fgmm_soar_assign_gpu(int device, fgmm_idx_t n, int d, const float* x, int k, const float* c, float lambda,
                         fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2) {
    fgmm_soar_cents sc;
    int rc = soar_begin("fgmm_soar_assign_gpu", n, d, x, k, c, lambda, primary, spill != NULL, &sc);
    if (rc || n == 0) return rc;
    rc = fgmm_soar_gpu(device, n, x, &sc, lambda, primary, spill, d1, d2);
    cents_free(&sc);
    return rc;
}

int fgmm_pq_encode_gpu(int device, fgmm_idx_t n, int d, const float* x, int ma, const fgmm_idx_t* lists, int nlist,
                       const float* cent, int M, const float* codebook, uint8_t* codes) {
    static const char* who = "fgmm_pq_encode_gpu";
    if (!x || !lists || !cent || !codebook || !codes) return fgmm_fail(FGMM_ERR_NULL, "%s: a NULL argument", who);
    if (n < 0 || d < 1 || ma < 1 || nlist < 1 || M < 1 || d % M || d / M > FGMM_PQ_GPU_MAX_DSUB || n > INT64_MAX / ma)
        return fgmm_fail(FGMM_ERR_ARG, "%s: n = %lld, d = %d, ma = %d, nlist = %d, M = %d (need d = M x dsub, "
                         "dsub <= %d)", who, (long long)n, d, ma, nlist, M, FGMM_PQ_GPU_MAX_DSUB);
    if ((uint64_t)(n * ma) > (uint64_t)PTRDIFF_MAX / (uint64_t)M)
        return fgmm_fail(FGMM_ERR_ARG, "%s: n x ma = %lld entries of %d bytes overflow the address space", who,
                         (long long)(n * ma), M);
    /* finite values (NaN residuals would pick arbitrary codewords), n x d addressable */
    fgmm_data cv = {cent, nlist, d, FGMM_F32}, bv = {codebook, (fgmm_idx_t)M * 256, d / M, FGMM_F32},
              xv = {x, n, d, FGMM_F32};
    int rc;
    if ((rc = fgmm_data_check(&cv, "fgmm_pq_encode_gpu (centroids)")) ||
        (rc = fgmm_data_check(&bv, "fgmm_pq_encode_gpu (codebook)")) || (n && (rc = fgmm_data_check(&xv, who))))
        return rc;
    for (fgmm_idx_t i = 0; i < n * ma; i++)
        if (lists[i] >= nlist)
            return fgmm_fail(FGMM_ERR_ARG, "%s: entry %lld has list %lld; nlist = %d", who, (long long)i,
                             (long long)lists[i], nlist);
    return n ? fgmm_pq_gpu(device, n, d, x, ma, lists, nlist, cent, M, codebook, codes) : FGMM_OK;
}

#ifndef FGMM_WITH_CUDA
int fgmm_pq_gpu(int device, fgmm_idx_t n, int d, const float* x, int ma, const fgmm_idx_t* lists, int nlist,
                const float* cent, int M, const float* codebook, uint8_t* codes) {
    (void)device; (void)n; (void)d; (void)x; (void)ma; (void)lists; (void)nlist; (void)cent; (void)M; (void)codebook;
    (void)codes;
    return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_pq_encode_gpu: this build of flashgmm has no CUDA support");
}

int fgmm_soar_gpu(int device, fgmm_idx_t n, const float* x, const fgmm_soar_cents* sc, float lambda,
                  fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2) {
    (void)device; (void)n; (void)x; (void)sc; (void)lambda; (void)primary; (void)spill; (void)d1; (void)d2;
    return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_soar_assign_gpu: this build of flashgmm has no CUDA support");
}
#endif
