/* SPDX-License-Identifier: MIT */
/* gpu_buf.c: the ground of the GPU backend's host files: CUDA errors as library errors, device
 * buffers that grow, the engine's pinned upload and download buffers. */
#include <string.h>

#include "gpu_impl.h"

int fgmm_gpu_cuda_fail(cudaError_t e, const char* what) {
    return fgmm_fail(e == cudaErrorMemoryAllocation ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA, "GPU: %s: %s", what,
                     cudaGetErrorString(e));
}

/* Grows a device buffer to at least bytes (contents are not kept). */
int fgmm_gpu_dgrow(dbuf* b, size_t bytes, const char* what) {
    if (b->cap >= bytes) return FGMM_OK;
    if (b->p) cudaFree(b->p);
    b->p = NULL;
    b->cap = 0;
    cudaError_t e = cudaMalloc(&b->p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fgmm_fail(FGMM_ERR_GPU_NOMEM, "GPU: out of device memory allocating %zu bytes for %s", bytes, what);
    }
    b->cap = bytes;
    return FGMM_OK;
}

/* Grows a pinned host buffer to at least bytes (contents are not kept); NULL if that fails. */
static void* pinned_grow(void** buf, size_t* cap, size_t bytes) {
    if (*cap < bytes) {
        if (*buf) cudaFreeHost(*buf);
        *buf = NULL;
        *cap = 0;
        if (cudaMallocHost(buf, bytes) != cudaSuccess) {
            cudaGetLastError();
            *buf = NULL;
            return NULL;
        }
        *cap = bytes;
    }
    return *buf;
}

/* A pinned upload buffer of count floats (zeroed if zero); the previous upload from it has completed
 * (each E-step ends with a stream synchronisation). */
float* fgmm_gpu_upload_buffer(gpu_impl* g, size_t count, int zero) {
    float* h = pinned_grow((void**)&g->host_up, &g->host_up_cap, count * sizeof(float));
    if (h && zero) memset(h, 0, count * sizeof(float));
    return h;
}

/* The pinned host buffer for downloads, at least count doubles. */
double* fgmm_gpu_pinned_stats(gpu_impl* g, size_t count) {
    return pinned_grow((void**)&g->host_stats, &g->host_stats_cap, count * sizeof(double));
}

/* The float in g->chk once the stream's work so far is done (the device maxima: range check, max |x|). */
int fgmm_gpu_read_chk(gpu_impl* g, float* out) {
    double* h = fgmm_gpu_pinned_stats(g, 1);
    if (!h) return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
    CU(cudaMemcpyAsync(h, g->chk.p, sizeof(float), cudaMemcpyDeviceToHost, g->st));
    CU(cudaStreamSynchronize(g->st));
    memcpy(out, h, sizeof *out);
    return FGMM_OK;
}
