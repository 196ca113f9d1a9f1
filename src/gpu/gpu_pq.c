/* SPDX-License-Identifier: MIT */
/* gpu_pq.c: IVF-PQ codes on a CUDA device, the host side of fgmm_pq_encode_gpu (flashgmm_spill.h; spill.c
 * checks the arguments; kernel in kernels/pq_encode.cu). The coarse centroids and the PQ codebook go up
 * once, then the rows in tiles of t rows with their lists: copy up, encode every (row, list) entry,
 * codes down. Each call owns its stream and one device allocation (gpu_call.h): several threads may
 * call at once. */
#include <stdint.h>
#include <stdio.h>

#include "flashgmm_spill.h"
#include "gpu_call.h"
#include "kernels.h"

/* Rows per tile at most (the kernel's grid counts entries in int blocks). */
#define PQ_TILE_MAX_ROWS (1 << 22)

typedef struct pq_bufs {
    float *cent, *cb, *x;
    long long* lists;
    unsigned char* codes;
} pq_bufs;

static size_t layout(pq_bufs* b, char* base, int nlist, int d, int M, int ma, long long t) {
    size_t off = 0;
    b->cent = fgmm_carve(base, &off, (size_t)nlist * d * sizeof(float));
    b->cb = fgmm_carve(base, &off, (size_t)256 * d * sizeof(float)); /* M x 256 x dsub */
    b->x = fgmm_carve(base, &off, (size_t)t * d * sizeof(float));
    b->lists = fgmm_carve(base, &off, (size_t)t * ma * sizeof(long long));
    b->codes = fgmm_carve(base, &off, (size_t)t * ma * M);
    return off;
}

int fgmm_pq_gpu(int device, fgmm_idx_t n, int d, const float* x, int ma, const fgmm_idx_t* lists, int nlist,
                const float* cent, int M, const float* codebook, uint8_t* codes) {
    _Static_assert(sizeof(fgmm_idx_t) == sizeof(long long), "the kernel reads 64-bit list numbers");
    _Static_assert(FGMM_PQ_MAX_DSUB == FGMM_PQ_GPU_MAX_DSUB, "one limit");
    fgmm_gpu_call c;
    int rc = fgmm_gpu_call_begin(&c, "fgmm_pq_encode_gpu", device, 0);
    if (rc) goto done;
    pq_bufs b;
    size_t fixed = layout(&b, NULL, nlist, d, M, ma, 0), per_row = (size_t)d * 4 + (size_t)ma * (8 + M) + 1;
    size_t budget = fgmm_gpu_call_budget(&c);
    long long t = budget > fixed ? (long long)((budget - fixed) / per_row) : 1;
    t = t > PQ_TILE_MAX_ROWS ? PQ_TILE_MAX_ROWS : t < 1 ? 1 : t;
    if (t > n) t = n;
    char detail[96];
    snprintf(detail, sizeof detail, "nlist = %d, d = %d, M = %d, %lld-row tiles", nlist, d, M, t);
    if ((rc = fgmm_gpu_call_alloc(&c, layout(&b, NULL, nlist, d, M, ma, t), detail))) goto done;
    layout(&b, c.mem, nlist, d, M, ma, t);
    cudaError_t ce;
    if ((ce = cudaMemcpyAsync(b.cent, cent, (size_t)nlist * d * sizeof(float), cudaMemcpyHostToDevice, c.st)) ||
        (ce = cudaMemcpyAsync(b.cb, codebook, (size_t)256 * d * sizeof(float), cudaMemcpyHostToDevice, c.st))) {
        rc = fgmm_gpu_call_cuda_fail(&c, ce, "uploading the centroids");
        goto done;
    }
    for (fgmm_idx_t i0 = 0; i0 < n; i0 += t) {
        int m = (int)(n - i0 < t ? n - i0 : t);
        const char* what = "uploading rows";
        if ((ce = cudaMemcpyAsync(b.x, x + (size_t)i0 * d, (size_t)m * d * sizeof(float), cudaMemcpyHostToDevice,
                                  c.st)) ||
            (ce = cudaMemcpyAsync(b.lists, lists + (size_t)i0 * ma, (size_t)m * ma * sizeof(long long),
                                  cudaMemcpyHostToDevice, c.st)) ||
            (what = "clearing codes", ce = cudaMemsetAsync(b.codes, 0, (size_t)m * ma * M, c.st)) ||
            (what = "pq_encode",
             ce = (cudaError_t)fgmm_pq_encode(b.x, b.lists, m, ma, d, d / M, b.cent, b.cb, M, b.codes, c.st)) ||
            (what = "downloading codes", ce = cudaMemcpyAsync(codes + (size_t)i0 * ma * M, b.codes, (size_t)m * ma * M,
                                                              cudaMemcpyDeviceToHost, c.st)) ||
            (what = "a row tile", ce = cudaStreamSynchronize(c.st))) {
            rc = fgmm_gpu_call_cuda_fail(&c, ce, what);
            goto done;
        }
    }
done:
    fgmm_gpu_call_end(&c);
    return rc;
}
