/* SPDX-License-Identifier: MIT */
/* gpu_call.c: one self-contained GPU call's device, stream, handle and memory (gpu_call.h). */
#include "gpu_call.h"

#include "gpu_prestart.h"

int fgmm_gpu_call_cuda_fail(const fgmm_gpu_call* c, cudaError_t e, const char* what) {
    cudaGetLastError(); /* clears a launch error so that it does not surface in a later call */
    return fgmm_fail(e == cudaErrorMemoryAllocation ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA, "%s: %s: %s", c->who, what,
                     cudaGetErrorString(e));
}

int fgmm_gpu_call_blas_fail(const fgmm_gpu_call* c, cublasStatus_t s, const char* what) {
    return fgmm_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA, "%s: %s: cuBLAS status %d",
                     c->who, what, (int)s);
}

int fgmm_gpu_call_begin(fgmm_gpu_call* c, const char* who, int device, int want_blas) {
    c->who = who;
    c->prev = -1;
    c->st = NULL;
    c->blas = NULL;
    c->mem = NULL;
    c->free_b = 0;
    int ndev = 0;
    fgmm_gpu_prestart_wait(device);
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        return fgmm_fail(FGMM_ERR_NO_GPU, "%s: no CUDA device available (%s)", who,
                         ce ? cudaGetErrorString(ce) : "0 devices");
    }
    if (device < 0 || device >= ndev)
        return fgmm_fail(FGMM_ERR_ARG, "%s: device = %d; %d device(s) present", who, device, ndev);
    if (cudaGetDevice(&c->prev) != cudaSuccess) c->prev = -1, cudaGetLastError();
    size_t total = 0;
    cudaStream_t st = NULL; /* kept only once made: a failed create may leave a stale handle (compute-sanitizer
                             * saw cudaStreamDestroy/Synchronize on one after an out-of-memory create) */
    if ((ce = cudaSetDevice(device)) || (ce = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)))
        return fgmm_gpu_call_cuda_fail(c, ce, "device setup");
    c->st = st;
    if ((ce = cudaMemGetInfo(&c->free_b, &total))) return fgmm_gpu_call_cuda_fail(c, ce, "device setup");
    cublasStatus_t bs;
    if (want_blas && ((bs = cublasCreate(&c->blas)) || (bs = cublasSetStream(c->blas, c->st))))
        return fgmm_gpu_call_blas_fail(c, bs, "cuBLAS setup");
    return FGMM_OK;
}

int fgmm_gpu_call_alloc(fgmm_gpu_call* c, size_t bytes, const char* detail) {
    if (cudaMalloc(&c->mem, bytes) != cudaSuccess) {
        cudaGetLastError();
        c->mem = NULL;
        return fgmm_fail(FGMM_ERR_GPU_NOMEM, "%s: out of device memory allocating %zu bytes (%s; %zu bytes free)",
                         c->who, bytes, detail, c->free_b);
    }
    return FGMM_OK;
}

size_t fgmm_gpu_call_budget(const fgmm_gpu_call* c) {
    return c->free_b / 4 < FGMM_GPU_TILE_BYTES ? c->free_b / 4 : FGMM_GPU_TILE_BYTES;
}

void fgmm_gpu_call_end(fgmm_gpu_call* c) {
    if (c->st) cudaStreamSynchronize(c->st); /* nothing in flight on the memory freed below */
    if (c->mem) cudaFree(c->mem);
    if (c->blas) cublasDestroy(c->blas);
    if (c->st) cudaStreamDestroy(c->st);
    cudaGetLastError();
    if (c->prev >= 0) cudaSetDevice(c->prev);
    c->st = NULL, c->blas = NULL, c->mem = NULL, c->prev = -1;
}
