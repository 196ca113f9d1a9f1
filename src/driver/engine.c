/* SPDX-License-Identifier: MIT */
/* engine.c: picks the backend. The GPU backend exists only in CUDA builds. */
#include <stdlib.h>

#include "internal.h"

#ifndef FGMM_WITH_CUDA
int fgmm_engine_gpu_create(fgmm_engine** out, int device, size_t mem_limit, FgmmPrecision prec) {
    (void)device;
    (void)mem_limit;
    (void)prec;
    if (out) *out = NULL;
    return fgmm_fail(FGMM_ERR_NO_GPU, "this build of flashgmm has no CUDA support");
}
int fgmm_engine_multi_create(fgmm_engine** out, int n_ranks, int first_device, size_t mem_limit, FgmmPrecision prec) {
    (void)n_ranks;
    return fgmm_engine_gpu_create(out, first_device, mem_limit, prec);
}
int fgmm_gpu_available(void) { return 0; }
int fgmm_gpu_prestart(int device) {
    int rc = fgmm_prestart_device_check(device);
    if (rc) return rc;
    return fgmm_fail(FGMM_ERR_NO_GPU, "fgmm_gpu_prestart: this build of flashgmm has no CUDA support");
}
int fgmm_engine_comm_wrap(fgmm_engine** e, fgmm_comm* c, int status) {
    (void)e;
    double ready = 0; /* the CUDA build's agreement, where no rank has a GPU engine */
    return c->sum(c, &ready, 1, status);
}
#endif

int fgmm_engine_create(fgmm_engine** out, const FgmmParams* p) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(p);
    if (p->backend == FGMM_BACKEND_CPU || (p->backend == FGMM_BACKEND_AUTO && !fgmm_gpu_available()))
        return fgmm_engine_cpu_create(out);
    if (p->n_gpus >= 1) return fgmm_engine_multi_create(out, p->n_gpus, p->gpu_device, p->gpu_mem_limit, p->precision);
    return fgmm_engine_gpu_create(out, p->gpu_device, p->gpu_mem_limit, p->precision);
}
