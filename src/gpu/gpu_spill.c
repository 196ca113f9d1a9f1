/* SPDX-License-Identifier: MIT */
/* gpu_spill.c: SOAR spill lists on a CUDA device, the host side of fgmm_soar_assign_gpu
 * (capi/flashgmm_spill.h; kernels in kernels/soar.cu). spill.c checks the arguments and shifts the
 * centroids by their mean (the code the CPU path runs); here they go up once, then the rows in tiles
 * of t rows: copy up, shift (soar_rows), G = xs cs^T (cuBLAS fp32), nearest two and unit residuals
 * (soar_top2), H = U cs^T, the SOAR list (soar_pick), results down. Each call owns its stream, cuBLAS
 * handle and one device allocation, all released before it returns: calls share nothing, so several
 * threads may run them at once (on one device they take turns on its engines; gpu_call.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_call.h"
#include "kernels.h"

/* Rows per tile at most: keeps t x 32 threads (a warp per row) in int range at any k. Tiles take at
 * most fgmm_gpu_call_budget's bytes: larger ones gain nothing once a tile's GEMMs fill the device
 * (32k rows at k = 1024). */
#define SOAR_TILE_MAX_ROWS (1 << 20)

/* The device buffers of one call: fixed (centroids) and per tile of t rows. */
typedef struct soar_bufs {
    float *cs, *cn, *xs, *xn, *g, *h, *rx, *d1, *d2;
    double* mean;
    long long *prim, *spill;
} soar_bufs;

static size_t layout(soar_bufs* b, char* base, int k, int d, long long t, int want_spill) {
    size_t off = 0, tk = (size_t)t * k;
    b->cs = fgmm_carve(base, &off, (size_t)k * d * sizeof(float));
    b->cn = fgmm_carve(base, &off, (size_t)k * sizeof(float));
    b->mean = fgmm_carve(base, &off, (size_t)d * sizeof(double));
    b->xs = fgmm_carve(base, &off, (size_t)t * d * sizeof(float));
    b->xn = fgmm_carve(base, &off, (size_t)t * sizeof(float));
    b->g = fgmm_carve(base, &off, tk * sizeof(float));
    b->d1 = fgmm_carve(base, &off, (size_t)t * sizeof(float));
    b->d2 = fgmm_carve(base, &off, (size_t)t * sizeof(float));
    b->prim = fgmm_carve(base, &off, (size_t)t * sizeof(long long));
    b->h = want_spill ? fgmm_carve(base, &off, tk * sizeof(float)) : NULL;
    b->rx = want_spill ? fgmm_carve(base, &off, (size_t)t * sizeof(float)) : NULL;
    b->spill = want_spill ? fgmm_carve(base, &off, (size_t)t * sizeof(long long)) : NULL;
    return off;
}

/* Rows per tile: the largest t whose buffers fit the budget (at least 1, at most n). */
static long long tile_rows(fgmm_idx_t n, int k, int d, int want_spill, size_t budget) {
    soar_bufs b;
    const long long many = 1 << 16; /* per-row bytes from a large tile: alignment padding averaged out */
    size_t fixed = layout(&b, NULL, k, d, 0, want_spill);
    size_t row = (layout(&b, NULL, k, d, many, want_spill) - fixed + many - 1) / many;
    long long t = budget > fixed ? (long long)((budget - fixed) / row) : 1;
    if (t > SOAR_TILE_MAX_ROWS) t = SOAR_TILE_MAX_ROWS;
    if (t > n) t = n;
    return t < 1 ? 1 : t;
}

/* The tiles, on a device that is current, with st / blas / mem set up by the caller. */
static int run_tiles(const fgmm_gpu_call* c, const soar_bufs* b, fgmm_idx_t n, const float* x,
                     const fgmm_soar_cents* sc, long long t, float lambda, fgmm_idx_t* primary, fgmm_idx_t* spill,
                     float* d1, float* d2) {
    const int k = sc->k, d = sc->d;
    cudaStream_t st = c->st;
    cublasHandle_t blas = c->blas;
    const float one = 1.0f, zero = 0.0f;
    cudaError_t ce;
    cublasStatus_t bs;
    if ((ce = cudaMemcpyAsync(b->cs, sc->cs, (size_t)k * d * sizeof(float), cudaMemcpyHostToDevice, st)) ||
        (ce = cudaMemcpyAsync(b->cn, sc->cn, (size_t)k * sizeof(float), cudaMemcpyHostToDevice, st)) ||
        (ce = cudaMemcpyAsync(b->mean, sc->mean, (size_t)d * sizeof(double), cudaMemcpyHostToDevice, st)))
        return fgmm_gpu_call_cuda_fail(c, ce, "uploading the centroids");
    for (fgmm_idx_t i0 = 0; i0 < n; i0 += t) {
        int m = (int)(n - i0 < t ? n - i0 : t);
        if ((ce =
                 cudaMemcpyAsync(b->xs, x + (size_t)i0 * d, (size_t)m * d * sizeof(float), cudaMemcpyHostToDevice, st)))
            return fgmm_gpu_call_cuda_fail(c, ce, "uploading rows");
        if ((ce = (cudaError_t)fgmm_soar_rows(b->xs, m, d, b->mean, b->xn, st)))
            return fgmm_gpu_call_cuda_fail(c, ce, "soar_rows");
        /* column-major view: G^T (k x m) = cs (d x k)^T xs (d x m) */
        if ((bs = cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, k, m, d, &one, b->cs, d, b->xs, d, &zero, b->g, k)))
            return fgmm_gpu_call_blas_fail(c, bs, "G = xs cs^T");
        if ((ce = (cudaError_t)fgmm_soar_top2(b->g, m, k, d, b->xn, b->cn, b->cs, b->xs, b->prim, b->d1, b->d2,
                                              spill ? b->rx : NULL, st)))
            return fgmm_gpu_call_cuda_fail(c, ce, "soar_top2");
        if (spill) {
            if ((bs = cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, k, m, d, &one, b->cs, d, b->xs, d, &zero, b->h, k)))
                return fgmm_gpu_call_blas_fail(c, bs, "H = U cs^T");
            if ((ce = (cudaError_t)fgmm_soar_pick(b->g, b->h, b->rx, b->prim, m, k, lambda, b->spill, st)))
                return fgmm_gpu_call_cuda_fail(c, ce, "soar_pick");
        }
        /* fgmm_idx_t and long long are both 64-bit */
        if ((ce = cudaMemcpyAsync(primary + i0, b->prim, (size_t)m * sizeof(long long), cudaMemcpyDeviceToHost, st)) ||
            (spill &&
             (ce = cudaMemcpyAsync(spill + i0, b->spill, (size_t)m * sizeof(long long), cudaMemcpyDeviceToHost, st))) ||
            (d1 && (ce = cudaMemcpyAsync(d1 + i0, b->d1, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, st))) ||
            (d2 && (ce = cudaMemcpyAsync(d2 + i0, b->d2, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, st))))
            return fgmm_gpu_call_cuda_fail(c, ce, "downloading results");
        if ((ce = cudaStreamSynchronize(st))) return fgmm_gpu_call_cuda_fail(c, ce, "a row tile");
    }
    return FGMM_OK;
}

int fgmm_soar_gpu(int device, fgmm_idx_t n, const float* x, const fgmm_soar_cents* sc, float lambda,
                  fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2) {
    _Static_assert(sizeof(fgmm_idx_t) == sizeof(long long), "the kernels write 64-bit list numbers");
    fgmm_gpu_call c;
    int rc = fgmm_gpu_call_begin(&c, "fgmm_soar_assign_gpu", device, 1);
    if (!rc) {
        soar_bufs b;
        long long t = tile_rows(n, sc->k, sc->d, spill != NULL, fgmm_gpu_call_budget(&c));
        char detail[96];
        snprintf(detail, sizeof detail, "k = %d, d = %d, %lld-row tiles", sc->k, sc->d, t);
        rc = fgmm_gpu_call_alloc(&c, layout(&b, NULL, sc->k, sc->d, t, spill != NULL), detail);
        if (!rc) {
            layout(&b, c.mem, sc->k, sc->d, t, spill != NULL);
            rc = run_tiles(&c, &b, n, x, sc, t, lambda, primary, spill, d1, d2);
        }
    }
    fgmm_gpu_call_end(&c);
    return rc;
}
