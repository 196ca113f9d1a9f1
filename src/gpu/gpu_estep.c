/* SPDX-License-Identifier: MIT */
/* gpu_estep.c: the GPU backend's E-step: per row range, the fused kernels' two passes or row tiles
 * around cuBLAS SGEMMs (the tiles also serve k-means and assignment); fgmm_gpu_estep_begin leaves the
 * statistics pending on the device (gpu_stats.c). */
#include "gpu_impl.h"

/* Row tile of the cuBLAS path: t x k floats of G at most this many bytes. */
#define BLAS_TILE_BYTES ((size_t)256 << 20)

/* Row tile of the cuBLAS path for k components (at most rows) and its scratch: xf, xn, the
 * distance tile G, and x2 when the squares are needed (diagonal covariance); the cuBLAS handle on
 * the first call. Every cuBLAS user starts here. */
int fgmm_gpu_blas_tile(gpu_impl* g, long long rows, int k, int d, int squares, long long* tile) {
    if (!g->blas) { /* made at the first use: a training on the fused kernels never starts cuBLAS */
        double mark = fgmm_now();
        if (cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
            g->blas = NULL;
            return fgmm_fail(FGMM_ERR_CUDA, "GPU: cublasCreate failed");
        }
        if (cublasSetStream(g->blas, g->st) != CUBLAS_STATUS_SUCCESS)
            return fgmm_fail(FGMM_ERR_CUDA, "GPU: cublasSetStream failed");
        fgmm_trace(&mark, "  gpu: cuBLAS handle");
    }
    long long t = g->opt.tile_rows ? g->opt.tile_rows : (long long)(BLAS_TILE_BYTES / ((size_t)k * sizeof(float)));
    if (t > rows) t = rows;
    if (t < 1) t = 1;
    int rc;
    if ((rc = fgmm_gpu_dgrow(&g->xf, (size_t)t * d * sizeof(float), "row tile")) ||
        (squares && (rc = fgmm_gpu_dgrow(&g->x2, (size_t)t * d * sizeof(float), "row tile squares"))) ||
        (rc = fgmm_gpu_dgrow(&g->xn, (size_t)t * sizeof(float), "row norms")) ||
        (rc = fgmm_gpu_dgrow(&g->g, (size_t)t * k * sizeof(float), "distance tile")))
        return rc;
    *tile = t;
    return FGMM_OK;
}

/* Loads t rows at dx into xf (and x2), xn, then G = x B^T with B = g->mu: isotropic and k-means
 * B = means; diagonal G = x^2 P^T + x Q^T with P = 1/var, Q = -2 mu/var stacked in g->mu. */
int fgmm_gpu_blas_distances(gpu_impl* g, const void* dx, FgmmDtype dt, int t, int k, int d, int diag) {
    const float* mu = g->mu.p;
    float one = 1.f, zero = 0.f;
    KL(fgmm_blas_load_tile(dx, dt == FGMM_U8, t, d, g->xf.p, diag ? g->x2.p : NULL, g->xn.p, g->st));
    if (diag) {
        CB(cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, t, d, &one, mu, d, g->x2.p, d, &zero, g->g.p, k));
        CB(cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, t, d, &one, mu + (size_t)k * d, d, g->xf.p, d, &one,
                       g->g.p, k));
    } else {
        CB(cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, t, d, &one, mu, d, g->xf.p, d, &zero, g->g.p, k));
    }
    return FGMM_OK;
}

int fgmm_gpu_estep_chunk(gpu_impl* g, const void* dx, long long row0, long long rows, void* vrun) {
    estep_run* run = vrun;
    estep_ctx* c = run->c;
    int rc, k = c->m->k, d = run->d, dtype = c->prep ? FGMM_FUSED_PREPARED : run->dtype == FGMM_U8;
    if (c->fused) {
        if (c->prep) c->fm.xnorm = (const float*)g->xnorm.p + row0;
        int nb = fgmm_fused_lse_blocks(rows);
        if ((rc = fgmm_gpu_dgrow(&g->llp, (size_t)nb * sizeof(double), "logZ partials"))) return rc;
        const int one = c->plan.onepass > 0 || (c->plan.onepass < 0 && c->fm.kp == FGMM_FUSED_KTILE);
        if (c->prep && one && fgmm_fused_onepass_ok(&c->fm)) { /* timed as pass 1, pass 2 empty */
            CU(cudaEventRecord(g->tev[0], g->st));
            int parts, e = fgmm_fused_onepass(dx, rows, &c->fm, g->llp.p, g->nk.p, g->s1.p, g->s2.p, &parts, g->st);
            if (e == (int)cudaErrorInvalidConfiguration) { /* no cluster fits this device: two passes */
                cudaGetLastError();
            } else {
                KL(e);
                CU(cudaEventRecord(g->tev[1], g->st));
                CU(cudaEventRecord(g->tev[2], g->st));
                KL(fgmm_accumulate_d(g->llp.p, g->ll.p, parts, g->st));
                g->timed = 1;
                return FGMM_OK;
            }
        }
        if ((rc = fgmm_gpu_dgrow(&g->logz, (size_t)rows * sizeof(float), "logZ"))) return rc;
        CU(cudaEventRecord(g->tev[0], g->st));
        int ws = c->plan.ws && c->prep && fgmm_fused_ws_ok(&c->fm) ? c->plan.ws : 0; /* warp-specialised */
        if (ws & FGMM_GPU_WS_LSE) KL(fgmm_fused_lse_ws(dx, rows, &c->fm, g->logz.p, g->llp.p, g->st));
        else KL(fgmm_fused_lse(dx, dtype, rows, &c->fm, c->mode, g->logz.p, g->llp.p, g->st));
        CU(cudaEventRecord(g->tev[1], g->st));
        KL(fgmm_accumulate_d(g->llp.p, g->ll.p, nb, g->st)); /* ll: per-block sums, in a fixed order */
        if (ws & FGMM_GPU_WS_ACC)
            KL(fgmm_fused_accumulate_ws(dx, rows, &c->fm, g->logz.p, g->nk.p, g->s1.p, g->s2.p, ws & FGMM_GPU_WS_ACC, 0,
                                        g->st));
        else
            KL(fgmm_fused_accumulate(dx, dtype, rows, &c->fm, c->mode, g->logz.p, g->nk.p, g->s1.p, g->s2.p, 0, g->st));
        CU(cudaEventRecord(g->tev[2], g->st));
        g->timed = 1;
        g->ws_launches += ws != 0;
        return FGMM_OK;
    }
    /* cuBLAS path */
    long long tile;
    if ((rc = fgmm_gpu_blas_tile(g, rows, k, d, c->diag, &tile)) ||
        (rc = fgmm_gpu_dgrow(&g->f, (size_t)k * d * sizeof(float), "R^T x")))
        return rc;
    const float *kn = (const float*)g->cst.p, *hp = kn + k;
    const double* cc = g->cd.p;
    float one = 1.f, zero = 0.f;
    for (long long r0 = 0; r0 < rows; r0 += tile) {
        int t = (int)(rows - r0 < tile ? rows - r0 : tile);
        if ((rc = fgmm_gpu_blas_distances(g, (const char*)dx + (size_t)r0 * d * fgmm_dtype_size(run->dtype), run->dtype,
                                          t, k, d, c->diag)))
            return rc;
        KL(fgmm_blas_resp(g->g.p, t, k, g->xn.p, kn, hp, cc, c->diag, g->nk.p, g->s2.p, g->ll.p, g->st));
        CB(cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, d, k, t, &one, g->xf.p, d, g->g.p, k, &zero, g->f.p, d));
        KL(fgmm_blas_accumulate(g->f.p, g->s1.p, (long long)k * d, g->st));
        if (c->diag) {
            CB(cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, d, k, t, &one, g->x2.p, d, g->g.p, k, &zero, g->f.p, d));
            KL(fgmm_blas_accumulate(g->f.p, g->s2.p, (long long)k * d, g->st));
        }
    }
    return FGMM_OK;
}

/* The fused kernels summed rows centred on the data mean (and, diagonal, prescaled [x', x'^2]):
 * the statistics back to data coordinates, on the device so that all-reduced ranks agree. */
int fgmm_gpu_unshift_stats(gpu_impl* g, const estep_ctx* c, int k, int d) {
    if (c->diag)
        KL(fgmm_fused_unshift_diag(g->nk.p, g->s1.p, g->s2.p, g->shift.p, k, d, c->dp, g->prep_scale, diag_scale2(g),
                                   g->st));
    else KL(fgmm_fused_unshift(g->nk.p, g->s1.p, g->shift.p, k, c->dp, g->st));
    return FGMM_OK;
}

int fgmm_gpu_estep_begin(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m) {
    gpu_impl* g = e->impl;
    fgmm_gpu_discard(e);
    CU(cudaSetDevice(g->dev)); /* several engines may share this thread (one per GPU) */
    estep_ctx c = {0};
    double mark = fgmm_now();
    int rc = fgmm_gpu_data_scan(g, x);
    if (rc) return rc;
    /* prepared rows: the default fused fp16 path on data that fits resident as fp16 */
    fgmm_gpu_plan(g, GPU_PASS_ESTEP, m->cov, m->d, &c.plan);
    const int fmt = c.plan.fmt;
    c.prep = fmt != FMT_RAW && fgmm_gpu_resident_fits(g, x, fmt, NULL);
    if ((rc = fgmm_gpu_prepare_model(g, m, &c))) return rc;
    fgmm_trace(&mark, "  gpu e-step: model up, constants");
    long long ll_len = c.fused ? fgmm_fused_lse_blocks(x->n < RESIDENT_RANGE_ROWS ? x->n : RESIDENT_RANGE_ROWS) : 1;
    if ((rc = fgmm_gpu_zero_stats(g, c.kp, c.dp, c.diag, ll_len))) return rc;
    estep_run run = {&c, x->dtype, x->d};
    if ((rc = fgmm_gpu_for_each_chunk(g, x, c.prep ? fmt : FMT_RAW, fgmm_gpu_estep_chunk, &run))) return rc;
    if (c.fused && (rc = fgmm_gpu_unshift_stats(g, &c, m->k, m->d))) return rc;
    g->pend.active = 1;
    g->pend.k = m->k;
    g->pend.d = m->d;
    g->pend.dp = c.dp;
    g->pend.per_dim = c.diag;
    g->pend.ll_len = ll_len;
    g->pend.scale = c.fused ? LN2 : 1.0;
    fgmm_trace(&mark, "  gpu e-step: kernels enqueued");
    g->pend.mark = mark;
    return FGMM_OK;
}

int fgmm_gpu_estep(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out) {
    int rc = fgmm_gpu_estep_begin(e, x, m);
    if (rc) {
        fgmm_gpu_discard(e);
        return rc;
    }
    return fgmm_gpu_finish(e, out);
}
