/* SPDX-License-Identifier: MIT */
/* gpu_em.c: the GPU backend's em_step / em_fetch: whole EM iterations with the model kept on the
 * device (fused E-step on prepared resident rows, then the device M-step). */
#include <string.h>

#include "gpu_impl.h"

int fgmm_gpu_em_step(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int model_changed,
                     const fgmm_mstep_cfg* cfg, int* handled, double* obj, int* nempty) {
    gpu_impl* g = e->impl;
    *handled = 0;
    CU(cudaSetDevice(g->dev));
    int rc, k = m->k, d = m->d;
    const int diag = m->cov == FGMM_COV_DIAGONAL;
    estep_ctx c = {0};
    fgmm_gpu_plan(g, GPU_PASS_EM, m->cov, d, &c.plan);
    const int fmt = c.plan.fmt;
    if (!c.plan.device_em) return FGMM_OK;
    if ((rc = fgmm_gpu_data_scan(g, x))) return rc;
    if (!fgmm_gpu_resident_fits(g, x, fmt, NULL)) return FGMM_OK;
    size_t kd = (size_t)k * d, nv = diag ? kd : (size_t)k;
    int upload = model_changed || !g->dm_valid || g->dm_k != k || g->dm_d != d || g->dm_cov != (int)m->cov;
    if (upload) {
        g->dm_valid = 0;
        if ((rc = fgmm_gpu_dgrow(&g->emo, sizeof(double) + ((size_t)k + 1) * sizeof(int) + (size_t)k * sizeof(float),
                                 "M-step output")) ||
            (rc = fgmm_gpu_upload_model(g, m, &g->dm)))
            return rc;
        g->dm_valid = 1;
        g->dm_k = k;
        g->dm_d = d;
        g->dm_cov = (int)m->cov;
    }
    float *mu = g->dm.p, *var = mu + kd, *w = var + nv;
    c.m = m;
    c.diag = diag;
    int ok = 1; /* E-steps in between share the constants' buffers: made every time */
    if ((rc = fgmm_gpu_prep_constants(g, &c, mu, var, w, k, d, diag, upload, &ok))) return rc;
    if (!ok) { /* such means stay with the host path */
        g->dm_valid = 0;
        return FGMM_OK;
    }
    const int kp = c.kp, dp = c.dp;
    long long ll_len = fgmm_fused_lse_blocks(x->n < RESIDENT_RANGE_ROWS ? x->n : RESIDENT_RANGE_ROWS);
    if ((rc = fgmm_gpu_zero_stats(g, kp, dp, diag, ll_len))) return rc;
    estep_run run = {&c, x->dtype, d};
    if ((rc = fgmm_gpu_for_each_chunk(g, x, fmt, fgmm_gpu_estep_chunk, &run))) return rc;
    double* sum = g->emo.p;
    int* flags = (int*)(sum + 1); /* k + 1 ints, then k floats of scratch */
    if ((rc = fgmm_gpu_unshift_stats(g, &c, k, d))) return rc;
    if (diag)
        KL(fgmm_mstep_diag(g->nk.p, g->s1.p, g->s2.p, k, d, dp, cfg->var_floor, cfg->min_count, cfg->fill_var, mu, var,
                           w, (float*)(flags + k + 1), flags, g->st));
    else
        KL(fgmm_mstep_iso(g->nk.p, g->s1.p, g->s2.p, k, d, dp, cfg->var_floor, cfg->min_count, cfg->fill_var, mu, var,
                          w, flags, g->st));
    KL(fgmm_sum_d(g->ll.p, ll_len, sum, g->st));
    if (!fgmm_gpu_pinned_stats(g, 2)) return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
    CU(cudaMemcpyAsync(g->host_stats, sum, sizeof(double), cudaMemcpyDeviceToHost, g->st));
    CU(cudaMemcpyAsync(g->host_stats + 1, flags + k, sizeof(int), cudaMemcpyDeviceToHost, g->st));
    CU(cudaStreamSynchronize(g->st));
    *obj = LN2 * g->host_stats[0];
    memcpy(nempty, g->host_stats + 1, sizeof(int));
    *handled = 1;
    return FGMM_OK;
}

int fgmm_gpu_em_fetch(fgmm_engine* e, FgmmModel* m, int* empty) {
    gpu_impl* g = e->impl;
    if (!g->dm_valid || g->dm_k != m->k || g->dm_d != m->d || g->dm_cov != (int)m->cov)
        return fgmm_fail(FGMM_ERR_STATE, "GPU: no device model to fetch");
    CU(cudaSetDevice(g->dev));
    size_t kd = (size_t)m->k * m->d, nv = m->cov == FGMM_COV_DIAGONAL ? kd : (size_t)m->k;
    const float* mu = g->dm.p;
    CU(cudaMemcpy(m->mu, mu, kd * sizeof(float), cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(m->var, mu + kd, nv * sizeof(float), cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(m->w, mu + kd + nv, (size_t)m->k * sizeof(float), cudaMemcpyDeviceToHost));
    if (empty) CU(cudaMemcpy(empty, (const double*)g->emo.p + 1, (size_t)m->k * sizeof(int), cudaMemcpyDeviceToHost));
    return FGMM_OK;
}
