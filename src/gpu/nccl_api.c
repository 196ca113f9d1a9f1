/* SPDX-License-Identifier: MIT */
/* nccl_api.c: NCCL loaded at run time, and the all-reduce of pending statistics (nccl_api.h). */
#include "nccl_api.h"

#include <dlfcn.h>
#include <string.h>

int fgmm_nccl_load(fgmm_nccl* a, const char* who) {
    memset(a, 0, sizeof *a);
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return fgmm_fail(FGMM_ERR_NO_GPU, "%s: NCCL is not available (%s)", who, dlerror());
    struct {
        void** fn;
        const char* name;
    } sym[] = {{(void**)&a->get_unique_id, "ncclGetUniqueId"},  {(void**)&a->comm_init_rank, "ncclCommInitRank"},
               {(void**)&a->comm_init_all, "ncclCommInitAll"},  {(void**)&a->all_reduce, "ncclAllReduce"},
               {(void**)&a->group_start, "ncclGroupStart"},     {(void**)&a->group_end, "ncclGroupEnd"},
               {(void**)&a->comm_destroy, "ncclCommDestroy"},   {(void**)&a->comm_abort, "ncclCommAbort"},
               {(void**)&a->error_string, "ncclGetErrorString"}};
    for (size_t i = 0; i < sizeof sym / sizeof sym[0]; i++)
        if (!(*sym[i].fn = dlsym(lib, sym[i].name))) {
            dlclose(lib);
            memset(a, 0, sizeof *a);
            return fgmm_fail(FGMM_ERR_NO_GPU, "%s: libnccl.so.2 lacks the NCCL 2 API (%s)", who, sym[i].name);
        }
    a->lib = lib;
    return FGMM_OK;
}

void fgmm_nccl_unload(fgmm_nccl* a) {
    if (a->lib) dlclose(a->lib);
    memset(a, 0, sizeof *a);
}

int fgmm_nccl_fail(const fgmm_nccl* a, ncclResult_t r, const char* what) {
    return fgmm_fail(FGMM_ERR_CUDA, "%s: %s", what, a->error_string(r));
}

int fgmm_nccl_sum_pending(const fgmm_nccl* a, const fgmm_gpu_pending_view* v, const ncclComm_t* comm, int n) {
    ncclResult_t r = a->group_start();
    for (int i = 0; i < n && r == ncclSuccess; i++) {
        cudaStream_t st = (cudaStream_t)v[i].stream;
        r = a->all_reduce(v[i].nk, v[i].nk, v[i].n_nk, ncclDouble, ncclSum, comm[i], st);
        if (r == ncclSuccess) r = a->all_reduce(v[i].s1, v[i].s1, v[i].n_s1, ncclDouble, ncclSum, comm[i], st);
        if (r == ncclSuccess) r = a->all_reduce(v[i].s2, v[i].s2, v[i].n_s2, ncclDouble, ncclSum, comm[i], st);
    }
    ncclResult_t end = a->group_end();
    if (r == ncclSuccess) r = end;
    return r == ncclSuccess ? FGMM_OK : fgmm_nccl_fail(a, r, "NCCL all-reduce");
}
