/* SPDX-License-Identifier: MIT */
/* params.c: FgmmParams' defaults and the check that every entry point taking them runs. */
#include <math.h>
#include <string.h>

#include "trainer.h"

void fgmm_params_init(FgmmParams* p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->k = 1024;
    p->covariance = FGMM_COV_ISOTROPIC;
    p->niter = 30;
    p->kmeans_iter = 10;
    p->tol = 0.0;
    p->var_floor = 1e-4;
    p->min_count = 1.0;
    p->max_init_points = 0;
    p->seed = 1234;
    p->backend = FGMM_BACKEND_AUTO;
    p->precision = FGMM_PREC_FAST;
    p->gpu_device = 0;
}

int fgmm_check_params(const FgmmParams* p) {
    if (p->covariance != FGMM_COV_ISOTROPIC && p->covariance != FGMM_COV_DIAGONAL)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown covariance %d", (int)p->covariance);
    if (p->backend < FGMM_BACKEND_AUTO || p->backend > FGMM_BACKEND_GPU)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown backend %d", (int)p->backend);
    if (p->precision != FGMM_PREC_FAST && p->precision != FGMM_PREC_EXACT)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown precision %d", (int)p->precision);
    if (p->niter < 0 || p->kmeans_iter < 0)
        return fgmm_fail(FGMM_ERR_ARG, "params: niter = %d, kmeans_iter = %d; must be >= 0", p->niter, p->kmeans_iter);
    if (!(p->tol >= 0) || !(p->var_floor > 0) || !(p->min_count >= 0) || !isfinite(p->tol) || !isfinite(p->var_floor))
        return fgmm_fail(FGMM_ERR_ARG, "params: need tol >= 0, var_floor > 0, min_count >= 0");
    if (p->max_init_points < 0) return fgmm_fail(FGMM_ERR_ARG, "params: max_init_points < 0");
    if (p->n_gpus < 0 || p->n_gpus > 64)
        return fgmm_fail(FGMM_ERR_ARG, "params: n_gpus = %d out of range [0, 64]", p->n_gpus);
    return FGMM_OK;
}
