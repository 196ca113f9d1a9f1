/* SPDX-License-Identifier: MIT */
/* gpu_stats.c: the GPU backend's statistics on the device: zeroed before a pass, left pending after
 * fgmm_gpu_estep_begin / fgmm_gpu_kmeans_begin (for an all-reduce), downloaded by fgmm_gpu_finish. */
#include <stdlib.h>
#include <string.h>

#include "gpu_impl.h"

/* Zeroed device statistics for kp x dp (s2: kp, or kp x dp when per_dim). */
int fgmm_gpu_zero_stats(gpu_impl* g, int kp, int dp, int per_dim, long long ll_len) {
    int rc;
    size_t s2n = per_dim ? (size_t)kp * dp : (size_t)kp;
    if ((rc = fgmm_gpu_dgrow(&g->nk, (size_t)kp * sizeof(double), "statistics")) ||
        (rc = fgmm_gpu_dgrow(&g->s1, (size_t)kp * dp * sizeof(double), "statistics")) ||
        (rc = fgmm_gpu_dgrow(&g->s2, s2n * sizeof(double), "statistics")) ||
        (rc = fgmm_gpu_dgrow(&g->ll, (size_t)ll_len * sizeof(double), "log-likelihood")))
        return rc;
    CU(cudaMemsetAsync(g->nk.p, 0, (size_t)kp * sizeof(double), g->st));
    CU(cudaMemsetAsync(g->s1.p, 0, (size_t)kp * dp * sizeof(double), g->st));
    CU(cudaMemsetAsync(g->s2.p, 0, s2n * sizeof(double), g->st));
    CU(cudaMemsetAsync(g->ll.p, 0, (size_t)ll_len * sizeof(double), g->st));
    return FGMM_OK;
}

/* Copies device statistics (row pitch dp) into out (row pitch d) through one pinned buffer and
 * one synchronisation; obj = scale * sum(ll[0..ll_len)) in a fixed order. */
static int download_stats(gpu_impl* g, int k, int d, int dp, int s2_per_dim, long long ll_len, double scale,
                          fgmm_stats* out) {
    size_t s2n = s2_per_dim ? (size_t)k * d : (size_t)k, need = (size_t)k + (size_t)k * dp + s2n + (size_t)ll_len;
    if (!fgmm_gpu_pinned_stats(g, need)) return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
    double *nk = g->host_stats, *s1 = nk + k, *s2 = s1 + (size_t)k * dp, *ll = s2 + s2n;
    CU(cudaMemcpyAsync(nk, g->nk.p, (size_t)k * sizeof(double), cudaMemcpyDeviceToHost, g->st));
    CU(cudaMemcpyAsync(s1, g->s1.p, (size_t)k * dp * sizeof(double), cudaMemcpyDeviceToHost, g->st));
    CU(cudaMemcpyAsync(s2, g->s2.p, s2n * sizeof(double), cudaMemcpyDeviceToHost, g->st));
    CU(cudaMemcpyAsync(ll, g->ll.p, (size_t)ll_len * sizeof(double), cudaMemcpyDeviceToHost, g->st));
    CU(cudaStreamSynchronize(g->st));
    fgmm_trace(&g->pend.mark, "  gpu pass: kernels done, downloaded");
    memcpy(out->nk, nk, (size_t)k * sizeof(double));
    memcpy(out->s2, s2, s2n * sizeof(double));
    for (int q = 0; q < k; q++) memcpy(out->s1 + (size_t)q * d, s1 + (size_t)q * dp, (size_t)d * sizeof(double));
    double s = 0;
    for (long long i = 0; i < ll_len; i++) s += ll[i];
    out->obj = scale * s;
    fgmm_trace(&g->pend.mark, "  gpu pass: statistics copied out");
    return FGMM_OK;
}

static void pend_clear(gpu_impl* g) { memset(&g->pend, 0, sizeof g->pend); }

int fgmm_gpu_finish(fgmm_engine* e, fgmm_stats* out) {
    gpu_impl* g = e->impl;
    if (!g->pend.active) return fgmm_fail(FGMM_ERR_STATE, "GPU: no statistics pending");
    CU(cudaSetDevice(g->dev));
    int rc = download_stats(g, g->pend.k, g->pend.d, g->pend.dp, g->pend.per_dim, g->pend.ll_len, g->pend.scale, out);
    pend_clear(g);
    return rc;
}

int fgmm_gpu_pending(fgmm_engine* e, fgmm_gpu_pending_view* v) {
    gpu_impl* g = e->impl;
    if (!g->pend.active) return fgmm_fail(FGMM_ERR_STATE, "GPU: no statistics pending");
    v->nk = g->nk.p;
    v->s1 = g->s1.p;
    v->s2 = g->s2.p;
    v->n_nk = (size_t)g->pend.k;
    v->n_s1 = (size_t)g->pend.k * g->pend.dp; /* rows past k stay zero */
    v->n_s2 = g->pend.per_dim ? (size_t)g->pend.k * g->pend.d : (size_t)g->pend.k;
    v->stream = g->st;
    v->device = g->dev;
    return FGMM_OK;
}

void fgmm_gpu_discard(fgmm_engine* e) { pend_clear(e->impl); }

int fgmm_gpu_pending_loglik(fgmm_engine* e, double* scaled_sum) {
    gpu_impl* g = e->impl;
    if (!g->pend.active) return fgmm_fail(FGMM_ERR_STATE, "GPU: no statistics pending");
    CU(cudaSetDevice(g->dev));
    double* ll = malloc((size_t)g->pend.ll_len * sizeof(double));
    if (!ll) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    cudaError_t ce = cudaStreamSynchronize(g->st);
    if (!ce) ce = cudaMemcpy(ll, g->ll.p, (size_t)g->pend.ll_len * sizeof(double), cudaMemcpyDeviceToHost);
    double sum = 0;
    for (long long i = 0; i < g->pend.ll_len && !ce; i++) sum += ll[i];
    free(ll);
    if (ce) return fgmm_gpu_cuda_fail(ce, "log-likelihood download");
    *scaled_sum = g->pend.scale * sum;
    return FGMM_OK;
}
