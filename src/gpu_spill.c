/* gpu_spill.c: SOAR spill lists on a CUDA device, the host side of fgmm_soar_assign_gpu
 * (capi/flashgmm_spill.h; kernels in kernels/soar.cu). spill.c checks the arguments and shifts the
 * centroids by their mean (the code the CPU path runs); here they go up once, then the rows in tiles
 * of t rows: copy up, shift (soar_rows), G = xs cs^T (cuBLAS fp32), nearest two and unit residuals
 * (soar_top2), H = U cs^T, the SOAR list (soar_pick), results down. Each call owns its stream, cuBLAS
 * handle and one device allocation, all released before it returns: calls share nothing, so several
 * threads may run them at once (on one device they take turns on its engines). */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"
#include "kernels.h"

/* The tile buffers (G and H: t x k floats each, the rows, per-row results) take at most this many
 * bytes, and at most a quarter of the device's free memory: other work may share the device, and
 * larger tiles gain nothing once a tile's GEMMs fill it (32k rows at k = 1024). */
#define SOAR_TILE_BYTES ((size_t)256 << 20)
/* Rows per tile at most: keeps t x 32 threads (a warp per row) in int range at any k. */
#define SOAR_TILE_MAX_ROWS (1 << 20)

static int cuda_fail(cudaError_t e, const char* what) {
    cudaGetLastError(); /* clears a launch error so that it does not surface in a later call */
    return fgmm_fail(e == cudaErrorMemoryAllocation ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA,
                     "fgmm_soar_assign_gpu: %s: %s", what, cudaGetErrorString(e));
}

static int blas_fail(cublasStatus_t s, const char* what) {
    return fgmm_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA,
                     "fgmm_soar_assign_gpu: %s: cuBLAS status %d", what, (int)s);
}

/* Carves consecutive 256-byte aligned pieces out of one allocation (base NULL: only counts). */
static void* carve(char* base, size_t* off, size_t bytes) {
    void* p = base ? base + *off : NULL;
    *off += (bytes + 255) / 256 * 256;
    return p;
}

/* The device buffers of one call: fixed (centroids) and per tile of t rows. */
typedef struct soar_bufs {
    float *cs, *cn, *xs, *xn, *g, *h, *rx, *d1, *d2;
    double* mean;
    long long *prim, *spill;
} soar_bufs;

static size_t layout(soar_bufs* b, char* base, int k, int d, long long t, int want_spill) {
    size_t off = 0, tk = (size_t)t * k;
    b->cs = carve(base, &off, (size_t)k * d * sizeof(float));
    b->cn = carve(base, &off, (size_t)k * sizeof(float));
    b->mean = carve(base, &off, (size_t)d * sizeof(double));
    b->xs = carve(base, &off, (size_t)t * d * sizeof(float));
    b->xn = carve(base, &off, (size_t)t * sizeof(float));
    b->g = carve(base, &off, tk * sizeof(float));
    b->d1 = carve(base, &off, (size_t)t * sizeof(float));
    b->d2 = carve(base, &off, (size_t)t * sizeof(float));
    b->prim = carve(base, &off, (size_t)t * sizeof(long long));
    b->h = want_spill ? carve(base, &off, tk * sizeof(float)) : NULL;
    b->rx = want_spill ? carve(base, &off, (size_t)t * sizeof(float)) : NULL;
    b->spill = want_spill ? carve(base, &off, (size_t)t * sizeof(long long)) : NULL;
    return off;
}

/* Rows per tile: the largest t whose buffers fit the budget (at least 1, at most n). */
static long long tile_rows(fgmm_idx_t n, int k, int d, int want_spill, size_t free_bytes) {
    soar_bufs b;
    size_t budget = free_bytes / 4 < SOAR_TILE_BYTES ? free_bytes / 4 : SOAR_TILE_BYTES;
    const long long many = 1 << 16; /* per-row bytes from a large tile: alignment padding averaged out */
    size_t fixed = layout(&b, NULL, k, d, 0, want_spill);
    size_t row = (layout(&b, NULL, k, d, many, want_spill) - fixed + many - 1) / many;
    long long t = budget > fixed ? (long long)((budget - fixed) / row) : 1;
    if (t > SOAR_TILE_MAX_ROWS) t = SOAR_TILE_MAX_ROWS;
    if (t > n) t = n;
    return t < 1 ? 1 : t;
}

/* The tiles, on a device that is current, with st / blas / mem set up by the caller. */
static int run_tiles(cudaStream_t st, cublasHandle_t blas, const soar_bufs* b, fgmm_idx_t n, const float* x,
                     const fgmm_soar_cents* sc, long long t, float lambda, fgmm_idx_t* primary, fgmm_idx_t* spill,
                     float* d1, float* d2) {
    const int k = sc->k, d = sc->d;
    const float one = 1.0f, zero = 0.0f;
    cudaError_t ce;
    cublasStatus_t bs;
    if ((ce = cudaMemcpyAsync(b->cs, sc->cs, (size_t)k * d * sizeof(float), cudaMemcpyHostToDevice, st)) ||
        (ce = cudaMemcpyAsync(b->cn, sc->cn, (size_t)k * sizeof(float), cudaMemcpyHostToDevice, st)) ||
        (ce = cudaMemcpyAsync(b->mean, sc->mean, (size_t)d * sizeof(double), cudaMemcpyHostToDevice, st)))
        return cuda_fail(ce, "uploading the centroids");
    for (fgmm_idx_t i0 = 0; i0 < n; i0 += t) {
        int m = (int)(n - i0 < t ? n - i0 : t);
        if ((ce = cudaMemcpyAsync(b->xs, x + (size_t)i0 * d, (size_t)m * d * sizeof(float), cudaMemcpyHostToDevice, st)))
            return cuda_fail(ce, "uploading rows");
        if ((ce = (cudaError_t)fgmm_soar_rows(b->xs, m, d, b->mean, b->xn, st))) return cuda_fail(ce, "soar_rows");
        /* column-major view: G^T (k x m) = cs (d x k)^T xs (d x m) */
        if ((bs = cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, k, m, d, &one, b->cs, d, b->xs, d, &zero, b->g, k)))
            return blas_fail(bs, "G = xs cs^T");
        if ((ce = (cudaError_t)fgmm_soar_top2(b->g, m, k, d, b->xn, b->cn, b->cs, b->xs, b->prim, b->d1, b->d2,
                                              spill ? b->rx : NULL, st)))
            return cuda_fail(ce, "soar_top2");
        if (spill) {
            if ((bs = cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, k, m, d, &one, b->cs, d, b->xs, d, &zero, b->h, k)))
                return blas_fail(bs, "H = U cs^T");
            if ((ce = (cudaError_t)fgmm_soar_pick(b->g, b->h, b->rx, b->prim, m, k, lambda, b->spill, st)))
                return cuda_fail(ce, "soar_pick");
        }
        /* fgmm_idx_t and long long are both 64-bit */
        if ((ce = cudaMemcpyAsync(primary + i0, b->prim, (size_t)m * sizeof(long long), cudaMemcpyDeviceToHost, st)) ||
            (spill && (ce = cudaMemcpyAsync(spill + i0, b->spill, (size_t)m * sizeof(long long), cudaMemcpyDeviceToHost, st))) ||
            (d1 && (ce = cudaMemcpyAsync(d1 + i0, b->d1, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, st))) ||
            (d2 && (ce = cudaMemcpyAsync(d2 + i0, b->d2, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, st))))
            return cuda_fail(ce, "downloading results");
        if ((ce = cudaStreamSynchronize(st))) return cuda_fail(ce, "a row tile");
    }
    return FGMM_OK;
}

int fgmm_soar_gpu(int device, fgmm_idx_t n, const float* x, const fgmm_soar_cents* sc, float lambda,
                  fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2) {
    _Static_assert(sizeof(fgmm_idx_t) == sizeof(long long), "the kernels write 64-bit list numbers");
    int ndev = 0, prev = -1;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_soar_assign_gpu: no CUDA device available (%s)",
                         ce ? cudaGetErrorString(ce) : "0 devices");
    }
    if (device < 0 || device >= ndev)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_soar_assign_gpu: device = %d; %d device(s) present", device, ndev);
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1, cudaGetLastError();
    if ((ce = cudaSetDevice(device))) return cuda_fail(ce, "cudaSetDevice");
    cudaStream_t st = NULL;
    cublasHandle_t blas = NULL;
    char* mem = NULL;
    size_t free_b = 0, total_b = 0, bytes = 0;
    long long t = 0;
    soar_bufs b;
    int rc = FGMM_OK;
    cublasStatus_t bs;
    if ((ce = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) || (ce = cudaMemGetInfo(&free_b, &total_b))) {
        rc = cuda_fail(ce, "device setup");
        goto done;
    }
    if ((bs = cublasCreate(&blas)) || (bs = cublasSetStream(blas, st))) {
        rc = blas_fail(bs, "cuBLAS setup");
        goto done;
    }
    t = tile_rows(n, sc->k, sc->d, spill != NULL, free_b);
    bytes = layout(&b, NULL, sc->k, sc->d, t, spill != NULL);
    if (cudaMalloc((void**)&mem, bytes) != cudaSuccess) {
        cudaGetLastError();
        mem = NULL;
        rc = fgmm_fail(FGMM_ERR_GPU_NOMEM, "fgmm_soar_assign_gpu: out of device memory allocating %zu bytes "
                       "(k = %d, d = %d, %lld-row tiles; %zu bytes free)", bytes, sc->k, sc->d, t, free_b);
        goto done;
    }
    layout(&b, mem, sc->k, sc->d, t, spill != NULL);
    rc = run_tiles(st, blas, &b, n, x, sc, t, lambda, primary, spill, d1, d2);
done:
    if (st) cudaStreamSynchronize(st); /* nothing in flight on the buffers freed below */
    if (mem) cudaFree(mem);
    if (blas) cublasDestroy(blas);
    if (st) cudaStreamDestroy(st);
    cudaGetLastError();
    if (prev >= 0) cudaSetDevice(prev);
    return rc;
}
