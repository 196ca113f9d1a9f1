/* SPDX-License-Identifier: MIT */
/* gpu_kmeans_assign.c: the GPU backend's k-means statistics, pending like the E-step's (fast
 * precision on resident rows: the fused E-step at a vanishing variance; else the cuBLAS row tiles),
 * k-means++ seeding, and top-m assignment with log p(x). */
#include <stdlib.h>

#include "gpu_impl.h"

/* ---- k-means ---- */

typedef struct kmeans_run {
    int k, d;
    FgmmDtype dtype;
    int tf32; /* fast precision: the distance GEMM on TF32 tensor cores (gpu_plan.c) */
} kmeans_run;

static int kmeans_chunk(gpu_impl* g, const void* dx, long long row0, long long rows, void* vrun) {
    (void)row0;
    kmeans_run* run = vrun;
    int k = run->k, d = run->d, rc;
    long long tile;
    if ((rc = fgmm_gpu_blas_tile(g, rows, k, d, 0, &tile))) return rc;
    /* Fast precision: the distance GEMM on TF32 tensor cores (it only picks the centroid; counts,
     * sums and distances come from the fp32 rows); exact: fp32. */
    const int tf32 = run->tf32;
    if (tf32) CB(cublasSetMathMode(g->blas, CUBLAS_TF32_TENSOR_OP_MATH));
    for (long long r0 = 0; r0 < rows && !rc; r0 += tile) {
        int t = (int)(rows - r0 < tile ? rows - r0 : tile);
        rc = fgmm_gpu_blas_distances(g, (const char*)dx + (size_t)r0 * d * fgmm_dtype_size(run->dtype), run->dtype, t,
                                     k, d, 0);
        cudaError_t ce = rc ? cudaSuccess
                            : (cudaError_t)fgmm_kmeans_accumulate(g->g.p, g->xf.p, g->mu.p, g->cst.p, t, k, d, g->nk.p,
                                                                  g->s1.p, g->s2.p, g->ll.p, g->st);
        if (ce) rc = fgmm_gpu_cuda_fail(ce, "k-means kernel");
    }
    if (tf32) CB(cublasSetMathMode(g->blas, CUBLAS_DEFAULT_MATH));
    return rc;
}

/* Fast precision with the rows resident on the device (put there first if they fit): k-means as the
 * E-step of a mixture with equal weights and one tiny variance, the GMM's zero-variance limit, on the
 * fused fp16 kernels. Log-density gaps are then 2^63 times the squared-distance gap over the largest
 * squared distance the data allows (d (2 max|x|)^2): every responsibility is 0 or 1 but at near-ties
 * (shared there), and the statistics are the counts, sums and squared distances of the assignment.
 * obj = sum log p(x) * 2 var ln 2 = -(sum of squared distances) + n * O(1e3 var). *done = 0 where it
 * does not apply. */
static int kmeans_zero_variance(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, const gpu_plan* plan,
                                int* done) {
    gpu_impl* g = e->impl;
    *done = 0;
    if (!plan->fused) return FGMM_OK;
    int rc;
    /* the rows go up as given first (max |x| and the fp16 copy are then made on the device) */
    if (!fgmm_gpu_on_device(g, x) && fgmm_gpu_resident_fits(g, x, FMT_RAW, NULL) && (rc = fgmm_gpu_upload_raw(g, x)))
        return rc;
    if (!fgmm_gpu_on_device(g, x)) return FGMM_OK; /* streamed: the cuBLAS path */
    rc = fgmm_gpu_data_scan(g, x);
    if (rc) return rc;
    const double var = (double)x->d * 4.0 * g->amax * g->amax * 0x1p-64;
    if (!(var >= 1e-30 && var <= 1e30)) return FGMM_OK;
    float* buf = malloc(2 * (size_t)k * sizeof(float));
    if (!buf) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    for (int q = 0; q < k; q++) buf[q] = (float)var, buf[k + q] = 1.0f / (float)k;
    FgmmModel hm = {k, x->d, FGMM_COV_ISOTROPIC, (float*)cent, buf, buf + k};
    rc = fgmm_gpu_estep_begin(e, x, &hm);
    free(buf);
    if (rc) return rc;
    g->pend.scale = 2.0 * (double)(float)var * LN2;
    *done = 1;
    return FGMM_OK;
}

int fgmm_gpu_kmeans_begin(fgmm_engine* e, const fgmm_data* x, const float* cent, int k) {
    gpu_impl* g = e->impl;
    fgmm_gpu_discard(e);
    CU(cudaSetDevice(g->dev));
    int d = x->d, rc, done;
    gpu_plan plan;
    fgmm_gpu_plan(g, GPU_PASS_KMEANS, FGMM_COV_ISOTROPIC, d, &plan);
    if ((rc = kmeans_zero_variance(e, x, cent, k, &plan, &done)) || done) return rc;
    float* cn = malloc((size_t)k * sizeof(float));
    if (!cn) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    for (int q = 0; q < k; q++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)cent[(size_t)q * d + j] * cent[(size_t)q * d + j];
        cn[q] = (float)s;
    }
    if ((rc = fgmm_gpu_dgrow(&g->mu, (size_t)k * d * sizeof(float), "centroids")) ||
        (rc = fgmm_gpu_dgrow(&g->cst, (size_t)k * sizeof(float), "norms")) ||
        (rc = fgmm_gpu_zero_stats(g, k, d, 0, 1))) {
        free(cn);
        return rc;
    }
    cudaError_t ce = cudaMemcpyAsync(g->mu.p, cent, (size_t)k * d * sizeof(float), cudaMemcpyHostToDevice, g->st);
    if (!ce) ce = cudaMemcpyAsync(g->cst.p, cn, (size_t)k * sizeof(float), cudaMemcpyHostToDevice, g->st);
    free(cn);
    if (ce) return fgmm_gpu_cuda_fail(ce, "centroid upload");
    kmeans_run run = {k, d, x->dtype, plan.tf32};
    if ((rc = fgmm_gpu_for_each_chunk(g, x, FMT_RAW, kmeans_chunk, &run))) return rc;
    g->pend.active = 1;
    g->pend.k = k;
    g->pend.d = g->pend.dp = d;
    g->pend.ll_len = 1;
    g->pend.scale = -1.0; /* obj = -sum of squared distances */
    g->pend.mark = fgmm_now();
    return FGMM_OK;
}

int fgmm_gpu_kmeans(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, fgmm_stats* out) {
    int rc = fgmm_gpu_kmeans_begin(e, x, cent, k);
    if (rc) {
        fgmm_gpu_discard(e);
        return rc;
    }
    return fgmm_gpu_finish(e, out);
}

/* k-means++ seeding (the sample is small: its own scratch, freed afterwards). */
int fgmm_gpu_seed_pp(fgmm_engine* e, const float* rows, fgmm_idx_t ns, int d, int k, fgmm_idx_t first, const double* u,
                     fgmm_idx_t* picks, int* found) {
    gpu_impl* g = e->impl;
    CU(cudaSetDevice(g->dev));
    const long long nb = (ns + 255) / 256;
    size_t xb = (size_t)ns * d * sizeof(float), ub = (size_t)(k > 1 ? k - 1 : 1) * sizeof(double),
           pb = (size_t)k * sizeof(long long), sb = 2 * ((size_t)ns + nb) * sizeof(double);
    dbuf buf = {0};
    int rc = fgmm_gpu_dgrow(&buf, xb + ub + pb + sb + sizeof(int) + 64, "k-means++ scratch");
    if (rc) return rc;
    /* [rows | d2, part (8-aligned) | u | picks | found] */
    char* base = buf.p;
    float* dx = (float*)base;
    double* d2 = (double*)(base + (xb + 7) / 8 * 8);
    double *part = d2 + 2 * ns, *du = part + 2 * nb;
    long long* dpk = (long long*)(du + (k > 1 ? k - 1 : 1));
    int* dfound = (int*)(dpk + k);
    long long* hp = malloc(pb);
    long long f0 = (long long)first;
    if (hp && (rc = fgmm_gpu_upload_staged(g, dx, rows, xb))) {
        cudaFree(buf.p);
        free(hp);
        return rc;
    }
    double mark = fgmm_now();
    cudaError_t ce = hp ? cudaSuccess : cudaErrorMemoryAllocation;
    if (!ce && k > 1) ce = cudaMemcpyAsync(du, u, (size_t)(k - 1) * sizeof(double), cudaMemcpyHostToDevice, g->st);
    if (!ce) ce = cudaMemcpyAsync(dpk, &f0, sizeof f0, cudaMemcpyHostToDevice, g->st);
    if (!ce) ce = cudaMemsetAsync(dfound, 0, sizeof(int), g->st);
    if (!ce) ce = (cudaError_t)fgmm_kmeanspp(dx, ns, d, k, du, dpk, d2, part, dfound, g->st);
    if (!ce) ce = cudaMemcpyAsync(hp, dpk, pb, cudaMemcpyDeviceToHost, g->st);
    if (!ce) ce = cudaMemcpyAsync(found, dfound, sizeof(int), cudaMemcpyDeviceToHost, g->st);
    if (!ce) ce = cudaStreamSynchronize(g->st); /* pageable copies above are staged; this waits for all */
    fgmm_trace(&mark, "  gpu: k-means++ draws (a launch each)");
    cudaFree(buf.p);
    if (ce) {
        free(hp);
        return fgmm_gpu_cuda_fail(ce, "k-means++ seeding");
    }
    for (int c = 0; c < k; c++) picks[c] = (fgmm_idx_t)hp[c];
    free(hp);
    return *found ? FGMM_ERR_DATA : FGMM_OK;
}

/* ---- assignment: top-m responsibilities and log p(x) ---- */

typedef struct assign_run {
    estep_ctx* c;
    FgmmDtype dtype;
    int topm;
    fgmm_idx_t* labels;
    float *resp, *loglik;
} assign_run;

static int assign_chunk(gpu_impl* g, const void* dx, long long row0, long long rows, void* vrun) {
    assign_run* run = vrun;
    estep_ctx* c = run->c;
    int k = c->m->k, d = c->m->d, rc, m = run->topm > 0 ? run->topm : 0;
    long long tile;
    if ((rc = fgmm_gpu_blas_tile(g, rows, k, d, c->diag, &tile)) ||
        (rc = fgmm_gpu_dgrow(
             &g->f, (size_t)tile * (m ? m : 1) * (sizeof(long long) + sizeof(float)) + tile * sizeof(float), "top-m")))
        return rc;
    long long* dl = g->f.p;
    float* dr = (float*)(dl + (size_t)tile * (m ? m : 1));
    float* dll = dr + (size_t)tile * (m ? m : 1);
    const float *kn = (const float*)g->cst.p, *hp = kn + k;
    for (long long r0 = 0; r0 < rows; r0 += tile) {
        int t = (int)(rows - r0 < tile ? rows - r0 : tile);
        long long at = row0 + r0;
        if ((rc = fgmm_gpu_blas_distances(g, (const char*)dx + (size_t)r0 * d * fgmm_dtype_size(run->dtype), run->dtype,
                                          t, k, d, c->diag)))
            return rc;
        KL(fgmm_blas_topm(g->g.p, t, k, g->xn.p, kn, hp, g->cd.p, c->diag, m, dl, dr, dll, g->st));
        if (m) {
            CU(cudaMemcpyAsync(run->labels + (size_t)at * m, dl, (size_t)t * m * sizeof(long long),
                               cudaMemcpyDeviceToHost, g->st));
            if (run->resp)
                CU(cudaMemcpyAsync(run->resp + (size_t)at * m, dr, (size_t)t * m * sizeof(float),
                                   cudaMemcpyDeviceToHost, g->st));
        }
        if (run->loglik)
            CU(cudaMemcpyAsync(run->loglik + at, dll, (size_t)t * sizeof(float), cudaMemcpyDeviceToHost, g->st));
        CU(cudaStreamSynchronize(g->st)); /* the tile buffers are reused next */
    }
    return FGMM_OK;
}

int fgmm_gpu_assign(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels, float* resp,
                    float* loglik) {
    gpu_impl* g = e->impl;
    CU(cudaSetDevice(g->dev));
    if (topm > FGMM_TOPM_MAX) /* the warp selection is for lists-per-vector sizes */
        return g->cpu->ops->assign(g->cpu, x, m, topm, labels, resp, loglik);
    estep_ctx c = {0};
    fgmm_gpu_plan(g, GPU_PASS_ASSIGN, m->cov, m->d, &c.plan);
    c.blas_only = 1;
    int rc = fgmm_gpu_prepare_model(g, m, &c);
    if (rc) return rc;
    assign_run run = {&c, x->dtype, topm, labels, resp, loglik};
    return fgmm_gpu_for_each_chunk(g, x, FMT_RAW, assign_chunk, &run);
}
