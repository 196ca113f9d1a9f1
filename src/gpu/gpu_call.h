/* SPDX-License-Identifier: MIT */
/* gpu_call.h: what the self-contained GPU helpers (gpu_spill.c, gpu_pq.c) share. Each call sets up its
 * own device, stream and (optionally) cuBLAS handle and releases them before it returns, so calls share
 * nothing and several host threads may make them at once; errors are FGMM_ERR_* codes with a message
 * that names the public entry point (who). */
#ifndef FGMM_GPU_CALL_H
#define FGMM_GPU_CALL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "internal.h"

/* Tile buffers take at most this many bytes, and at most a quarter of the device's free memory
 * (other work may share the device). */
#define FGMM_GPU_TILE_BYTES ((size_t)256 << 20)

typedef struct fgmm_gpu_call {
    const char* who;
    int prev; /* the device current before the call (-1: none), restored at the end */
    cudaStream_t st;
    cublasHandle_t blas; /* NULL unless asked for */
    void* mem;           /* fgmm_gpu_call_alloc's one allocation */
    size_t free_b;       /* free device memory when the call began */
} fgmm_gpu_call;

/* Checks the device number, makes it current, creates the stream (and a cuBLAS handle on it when
 * want_blas) and reads the free memory. Call fgmm_gpu_call_end whatever it returns. */
int fgmm_gpu_call_begin(fgmm_gpu_call* c, const char* who, int device, int want_blas);
/* Waits for the stream, frees the allocation, destroys the handle and stream, restores the device. */
void fgmm_gpu_call_end(fgmm_gpu_call* c);
/* c->mem = bytes of device memory; FGMM_ERR_GPU_NOMEM with `detail` in the message on failure. */
int fgmm_gpu_call_alloc(fgmm_gpu_call* c, size_t bytes, const char* detail);
/* The tile budget: FGMM_GPU_TILE_BYTES, or a quarter of the free memory if less. */
size_t fgmm_gpu_call_budget(const fgmm_gpu_call* c);
/* A failed CUDA call or launch (the sticky launch error cleared) / cuBLAS call, as a recorded error. */
int fgmm_gpu_call_cuda_fail(const fgmm_gpu_call* c, cudaError_t e, const char* what);
int fgmm_gpu_call_blas_fail(const fgmm_gpu_call* c, cublasStatus_t s, const char* what);

/* Carves consecutive 256-byte aligned pieces out of one allocation (base NULL: only counts). */
static inline void* fgmm_carve(char* base, size_t* off, size_t bytes) {
    void* p = base ? base + *off : NULL;
    *off += (bytes + 255) / 256 * 256;
    return p;
}

#endif
