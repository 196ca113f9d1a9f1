/* SPDX-License-Identifier: MIT */
/* nccl_api.h: NCCL loaded at run time (libnccl.so.2), so that builds and machines without it still
 * work; what the engines that sum statistics over GPUs share (multi_gpu_engine.c, comm_gpu_engine.c). */
#ifndef FGMM_NCCL_API_H
#define FGMM_NCCL_API_H

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "gpu_engine.h"

typedef struct fgmm_nccl {
    void* lib; /* NULL: not loaded */
    ncclResult_t (*get_unique_id)(ncclUniqueId*);
    ncclResult_t (*comm_init_rank)(ncclComm_t*, int, ncclUniqueId, int);
    ncclResult_t (*comm_init_all)(ncclComm_t*, int, const int*);
    ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*group_start)(void);
    ncclResult_t (*group_end)(void);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    ncclResult_t (*comm_abort)(ncclComm_t);
    const char* (*error_string)(ncclResult_t);
} fgmm_nccl;

#pragma GCC visibility push(hidden)

/* Loads libnccl.so.2 into a; FGMM_ERR_NO_GPU ("who: NCCL is not available ...") when it is missing or
 * lacks the NCCL 2 API (a then stays unloaded). */
int fgmm_nccl_load(fgmm_nccl* a, const char* who);
void fgmm_nccl_unload(fgmm_nccl* a);
/* FGMM_ERR_CUDA with "what: " and NCCL's message for r. */
int fgmm_nccl_fail(const fgmm_nccl* a, ncclResult_t r, const char* what);
/* Sums n engines' pending statistics in place, v[i] over comm[i] on v[i]'s stream, as one NCCL group;
 * returns once the all-reduces are enqueued (fgmm_gpu_finish waits for them). */
int fgmm_nccl_sum_pending(const fgmm_nccl* a, const fgmm_gpu_pending_view* v, const ncclComm_t* comm, int n);

#pragma GCC visibility pop
#endif
