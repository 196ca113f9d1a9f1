/* SPDX-License-Identifier: MIT */
/* spill.c: SOAR spill lists (capi/flashgmm_spill.h): the CPU path (fgmm_soar_assign), and the
 * argument checks and centroid shift that the GPU path (gpu_spill.c) shares with it.
 *
 * Rows go in blocks: one sgemm gives the block's inner products with the (shifted) centroids,
 * distances and the nearest two come from them row by row, and the SOAR list from the lists
 * nearer than its best loss (soar_choice). Memory is O(block rows * k + k * d). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flashgmm_spill.h"
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows per block: the rows x k float buffer takes about this many bytes. */
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
    free(sc->mean);
    free(sc->cs);
    free(sc->cn);
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
    if (k < (want_spill ? 2 : 1)) return fgmm_fail(FGMM_ERR_ARG, "%s: k = %d; a spill list needs k >= 2", who, k);
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

/* The SOAR list of one row: argmin over j != p of g[j] + lambda <r/||r||, x - c_j>^2, r = x - c_p, where
 * g holds the row's squared distances (k) and xs the (shifted) row. The loss is at least g[j], so only
 * lists nearer than the best loss so far are scored, starting from the second nearest (j2): a dot
 * product each instead of a second sgemm over all k lists. Overwrites xs with the unit residual. */
HOT_CLONES
static int soar_choice(const float* restrict g, float* restrict xs, const float* restrict cs, int k, int d, int p,
                       int j2, float lambda) {
    const float* cp = cs + (size_t)p * d;
    double rr = 0, px = 0;
    for (int t = 0; t < d; t++) rr += ((double)xs[t] - cp[t]) * ((double)xs[t] - cp[t]);
    double inv = rr > 0 ? 1.0 / sqrt(rr) : 0.0;
    for (int t = 0; t < d; t++) {
        float u = (float)(((double)xs[t] - cp[t]) * inv);
        px += (double)u * xs[t];
        xs[t] = u;
    }
    const float rx = (float)px; /* <r/||r||, xs> */
    float best = INFINITY;
    int arg = j2;
    for (int q = -1; q < k; q++) {
        int j = q < 0 ? j2 : q;
        if (j == p || (q >= 0 && (j == j2 || !(g[j] < best)))) continue;
        const float* cj = cs + (size_t)j * d;
        float h = 0;
#pragma omp simd reduction(+ : h)
        for (int t = 0; t < d; t++) h += xs[t] * cj[t];
        float e = rx - h; /* <r/||r||, x - c_j> */
        float v = g[j] + lambda * e * e;
        if (v < best) best = v, arg = j;
    }
    return arg;
}

/* The first index of the smallest of v[0..k) other than v[skip] (skip < 0: none); *min its value. */
HOT_CLONES
static int first_min(const float* restrict v, int k, int skip, float* min) {
    float m = INFINITY;
#pragma omp simd reduction(min : m)
    for (int j = 0; j < k; j++) {
        float x = j == skip ? INFINITY : v[j];
        m = x < m ? x : m;
    }
    *min = m;
    for (int j = 0; j < k; j++)
        if (j != skip && v[j] == m) return j;
    return skip == 0 ? 1 : 0; /* no finite value (overflowed distances) */
}

/* The first index of the largest of v[0..k) other than v[skip] (skip < 0: none); *max its value. */
HOT_CLONES
static int first_max(const float* restrict v, int k, int skip, float* max) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int j = 0; j < k; j++) {
        float x = j == skip ? -INFINITY : v[j];
        m = x > m ? x : m;
    }
    *max = m;
    for (int j = 0; j < k; j++)
        if (j != skip && v[j] == m) return j;
    return skip == 0 ? 1 : 0; /* every other value -inf */
}

/* A row's squared distances from its inner products g with the shifted centroids: ||xs||^2 + ||cs||^2
 * - 2 <xs, cs>, clamped at 0 (the expansion's rounding); returns the smallest. (A store loop with a
 * select is vectorised by GCC 12 only beside a reduction.) */
HOT_CLONES
static float soar_dist(const float* restrict g, const float* restrict cn, float xn, int k, float* restrict dist) {
    float m = INFINITY;
#pragma omp simd reduction(min : m)
    for (int j = 0; j < k; j++) {
        float v = xn + cn[j] - 2.0f * g[j];
        v = v > 0.0f ? v : 0.0f;
        dist[j] = v;
        m = v < m ? v : m;
    }
    return m;
}

/* The model's constants for the top-2 responsibilities: log-density = lc_j - dist_j hp_j. */
typedef struct resp_consts {
    const float *lc, *hp;
} resp_consts;

/* Top-2 responsibilities of a row from its squared distances g (scratch: k floats): the two largest
 * log-densities (first index at ties) and exp(each - log sum exp). */
HOT_CLONES
static void row_top2(const float* restrict g, const resp_consts* rc, int k, float* restrict lr, fgmm_idx_t* top,
                     float* resp) {
    const float *lc = rc->lc, *hp = rc->hp;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < k; j++) {
        lr[j] = lc[j] - g[j] * hp[j];
        mx = lr[j] > mx ? lr[j] : mx;
    }
    double sum = 0; /* terms in float (each <= 1), summed in float over chunks of 64, then in double */
    for (int j0 = 0; j0 < k; j0 += 64) {
        const int j1 = j0 + 64 < k ? j0 + 64 : k;
        float part = 0; /* a float reduction: GCC 12 vectorises the AVX2 clone (a double one it does not) */
#pragma omp simd reduction(+ : part)
        for (int j = j0; j < j1; j++) part += fgmm_exp_nonpos(lr[j] - mx);
        sum += part;
    }
    const double logz = mx + log(sum);
    for (int t = 0; t < 2; t++) {
        float m;
        int j = first_max(lr, k, t ? (int)top[0] : -1, &m);
        top[t] = j;
        resp[t] = (float)exp((double)m - logz);
    }
}

/* fgmm_soar_assign's rows, with rc (NULL: none) the model's top-2 responsibilities from the same
 * distances into top2 / resp2 (n x 2). */
static int soar_rows(const char* who, fgmm_idx_t n, int d, const float* x, int k, const float* c, float lambda,
                     fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2, const resp_consts* rc,
                     fgmm_idx_t* top2, float* resp2) {
    fgmm_soar_cents sc;
    int rc0 = soar_begin(who, n, d, x, k, c, lambda, primary, spill != NULL, &sc);
    if (rc0 || n == 0) return rc0;
    size_t rows = SPILL_BLOCK_BYTES / (sizeof(float) * (size_t)k);
    rows = rows < 16 ? 16 : rows > 8192 ? 8192 : rows;
    if ((fgmm_idx_t)rows > n) rows = (size_t)n;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    const double* mean = sc.mean;
    const float *cs = sc.cs, *cn = sc.cn;         /* centroids - mean, ||cs||^2 */
    float* xs = malloc(rows * d * sizeof(float)); /* block rows - mean, then unit residuals */
    float* xn = malloc(rows * sizeof(float));
    float* g = malloc(rows * (size_t)k * sizeof(float));    /* <xs, cs> */
    float* tb = malloc((size_t)nt * 2 * k * sizeof(float)); /* per thread: a row's distances, log-densities */
    if (!xs || !xn || !g || !tb) {
        rc0 = fgmm_fail(FGMM_ERR_NOMEM, "%s: out of host memory (k = %d, d = %d)", who, k, d);
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
#pragma omp parallel
        {
            int th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            float* dist = tb + (size_t)th * 2 * k; /* the row's distances stay in this thread's cache */
#pragma omp for
            for (int i = 0; i < b; i++) {
                fgmm_idx_t row = i0 + i;
                float b1 = soar_dist(g + (size_t)i * k, cn, xn[i], k, dist), b2;
                int a1 = first_min(dist, k, -1, &b1);
                int a2 = k > 1 ? first_min(dist, k, a1, &b2) : a1;
                primary[row] = a1;
                if (d1) d1[row] = b1;
                if (d2) d2[row] = k > 1 ? b2 : INFINITY;
                if (spill) spill[row] = soar_choice(dist, xs + (size_t)i * d, cs, k, d, a1, a2, lambda);
                if (rc) row_top2(dist, rc, k, dist + k, top2 + 2 * row, resp2 + 2 * row);
            }
        }
    }
done:
    cents_free(&sc);
    free(xs);
    free(xn);
    free(g);
    free(tb);
    return rc0;
}

int fgmm_soar_assign(fgmm_idx_t n, int d, const float* x, int k, const float* c, float lambda, fgmm_idx_t* primary,
                     fgmm_idx_t* spill, float* d1, float* d2) {
    return soar_rows("fgmm_soar_assign", n, d, x, k, c, lambda, primary, spill, d1, d2, NULL, NULL, NULL);
}

int fgmm_soar_assign_top2(const FgmmModel* m, fgmm_idx_t n, const float* x, float lambda, fgmm_idx_t* primary,
                          fgmm_idx_t* spill, float* d1, float* d2, fgmm_idx_t* top2, float* resp2) {
    static const char* who = "fgmm_soar_assign_top2";
    if (!m) return fgmm_fail(FGMM_ERR_NULL, "%s: model is NULL", who);
    if (!top2 || !resp2) return fgmm_fail(FGMM_ERR_NULL, "%s: %s is NULL", who, top2 ? "resp2" : "top2");
    if (m->cov != FGMM_COV_ISOTROPIC)
        return fgmm_fail(FGMM_ERR_ARG, "%s: the model must be isotropic (use fgmm_assign_topm)", who);
    if (m->k < 2) return fgmm_fail(FGMM_ERR_ARG, "%s: k = %d; two components need k >= 2", who, m->k);
    const int k = m->k;
    double* lc = malloc((size_t)k * sizeof(double));
    float* f = malloc((size_t)k * 2 * sizeof(float));
    if (!lc || !f) {
        free(lc), free(f);
        return fgmm_fail(FGMM_ERR_NOMEM, "%s: out of host memory", who);
    }
    fgmm_model_logconst(m, lc);
    for (int j = 0; j < k; j++) f[j] = (float)lc[j], f[k + j] = (float)(0.5 / m->var[j]);
    resp_consts rc = {f, f + k};
    int r = soar_rows(who, n, m->d, x, k, m->mu, lambda, primary, spill, d1, d2, &rc, top2, resp2);
    free(lc), free(f);
    return r;
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
        return fgmm_fail(FGMM_ERR_ARG,
                         "%s: n = %lld, d = %d, ma = %d, nlist = %d, M = %d (need d = M x dsub, "
                         "dsub <= %d)",
                         who, (long long)n, d, ma, nlist, M, FGMM_PQ_GPU_MAX_DSUB);
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
    (void)device;
    (void)n;
    (void)d;
    (void)x;
    (void)ma;
    (void)lists;
    (void)nlist;
    (void)cent;
    (void)M;
    (void)codebook;
    (void)codes;
    return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_pq_encode_gpu: this build of flashgmm has no CUDA support");
}

int fgmm_soar_gpu(int device, fgmm_idx_t n, const float* x, const fgmm_soar_cents* sc, float lambda,
                  fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2) {
    (void)device;
    (void)n;
    (void)x;
    (void)sc;
    (void)lambda;
    (void)primary;
    (void)spill;
    (void)d1;
    (void)d2;
    return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_soar_assign_gpu: this build of flashgmm has no CUDA support");
}
#endif
