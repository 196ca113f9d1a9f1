/* SPDX-License-Identifier: MIT */
/* gpu_model.c: the GPU backend's model on the device: uploads, and the constants of the E-step's
 * paths (fused on prepared rows, fused on rows as given, cuBLAS row tiles). */
#include <stdlib.h>
#include <string.h>

#include "gpu_impl.h"

/* Copies m's mu, var, w (k x d, k or k x d, k floats) into the device buffer dst, through the pinned buffer. */
int fgmm_gpu_upload_model(gpu_impl* g, const FgmmModel* m, dbuf* dst) {
    size_t kd = (size_t)m->k * m->d, nv = m->cov == FGMM_COV_DIAGONAL ? kd : (size_t)m->k, count = kd + nv + m->k;
    int rc = fgmm_gpu_dgrow(dst, count * sizeof(float), "model");
    if (rc) return rc;
    float* h = fgmm_gpu_upload_buffer(g, count, 0);
    if (!h) return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
    memcpy(h, m->mu, kd * sizeof(float));
    memcpy(h + kd, m->var, nv * sizeof(float));
    memcpy(h + kd + nv, m->w, (size_t)m->k * sizeof(float));
    CU(cudaMemcpyAsync(dst->p, h, count * sizeof(float), cudaMemcpyHostToDevice, g->st));
    return FGMM_OK;
}

/* The prepared path's model constants, computed on the device from a device model (mu k x d, var k
 * or k x d, w k) with the data mean as shift; fills c for fgmm_gpu_estep_chunk. Isotropic: with check,
 * *in_range says whether the rows' fixed fp16 prescale holds the means (|mu - mean| * scale <= 2^15:
 * means 8x beyond the data's range do not; EM's never are; a host loop for that cost ~1 ms per call
 * on the GPU machine). Diagonal (rows [x', x'^2], fgmm_fused_model's diagonal form): the constants
 * scale themselves, *in_range is left alone. */
int fgmm_gpu_prep_constants(gpu_impl* g, estep_ctx* c, const float* mu, const float* var, const float* w, int k, int d,
                            int diag, int check, int* in_range) {
    int kp = (k + FGMM_FUSED_KTILE - 1) / FGMM_FUSED_KTILE * FGMM_FUSED_KTILE,
        dp = fmt_dp(g, diag ? FMT_F16_DIAG : FMT_F16, d), rc;
    if ((rc = fgmm_gpu_device_shift(g)) || (rc = fgmm_gpu_dgrow(&g->mu_hi, (size_t)kp * dp * 2, "means")) ||
        (rc = fgmm_gpu_dgrow(&g->mu_lo, 2, "means")) ||
        (rc = fgmm_gpu_dgrow(&g->cst, 3 * (size_t)kp * sizeof(float), "constants")) ||
        (rc = fgmm_gpu_dgrow(&g->chk, sizeof(float), "constants scratch")))
        return rc;
    const double scale = g->prep_scale;
    if (diag) {
        KL(fgmm_fused_constants_diag(mu, var, w, k, kp, d, dp, g->shift.p, scale, diag_scale2(g), g->mu_hi.p, g->cst.p,
                                     g->chk.p, g->st));
    } else {
        if (check) CU(cudaMemsetAsync(g->chk.p, 0, sizeof(float), g->st));
        KL(fgmm_fused_constants(mu, var, w, k, kp, d, dp, g->shift.p, (float)scale, g->mu_hi.p, g->cst.p,
                                check ? (float*)g->chk.p : NULL, g->st));
        if (check) {
            float amax;
            if ((rc = fgmm_gpu_read_chk(g, &amax))) return rc;
            *in_range = amax <= 32768.0f;
        }
    }
    const float* cst = g->cst.p;
    c->fused = c->prep = 1;
    c->mode = FGMM_FUSED_FP16;
    c->kp = kp;
    c->dp = dp;
    /* diagonal: dot products of [x', x'^2] rows, already in log2 units once h2 applies (see kernels.h) */
    c->fm = (fgmm_fused_model){k,
                               kp,
                               diag ? 2 * d : d,
                               dp,
                               g->shift.p,
                               g->mu_hi.p,
                               g->mu_lo.p,
                               cst,
                               cst + kp,
                               cst + 2 * kp,
                               (float)scale,
                               diag ? 0.5f : (float)(1.0 / (scale * scale)),
                               diag ? 1.0f : (float)(1.0 / scale),
                               NULL,
                               c->plan.wgmma};
    return FGMM_OK;
}

/* Uploads the model's constants for the chosen path. */
int fgmm_gpu_prepare_model(gpu_impl* g, const FgmmModel* m, estep_ctx* c) {
    int k = m->k, d = m->d, rc;
    c->m = m;
    c->diag = m->cov == FGMM_COV_DIAGONAL;
    /* diagonal: fused only on prepared rows (the caller's choice, per the plan's fmt) */
    c->fused = c->plan.fused && (!c->diag || c->prep) && !c->blas_only;
    c->prep = c->prep && c->fused;
    if (c->prep) { /* the model goes up as it is; its constants are made on the device */
        size_t kd = (size_t)k * d, nv = c->diag ? kd : (size_t)k;
        int ok = 1;
        if ((rc = fgmm_gpu_upload_model(g, m, &g->mu))) return rc;
        const float* mu = g->mu.p;
        if ((rc = fgmm_gpu_prep_constants(g, c, mu, mu + kd, mu + kd + nv, k, d, c->diag, 1, &ok)) || ok) return rc;
        c->prep = 0; /* out of the prepared rows' range: the host path below, on rows as given */
    }
    double* lc = malloc((size_t)k * sizeof(double));
    if (!lc) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    fgmm_model_logconst(m, lc);
    if (c->fused) {
        int kp = (k + FGMM_FUSED_KTILE - 1) / FGMM_FUSED_KTILE * FGMM_FUSED_KTILE, dp = (d + 15) / 16 * 16;
        c->kp = kp;
        c->dp = dp;
        float* h = fgmm_gpu_upload_buffer(g, (size_t)kp * dp + 3 * (size_t)kp, 1);
        if (!h) {
            free(lc);
            return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
        }
        float *b2 = h + (size_t)kp * dp, *h2 = b2 + kp, *mn = h2 + kp;
        const float* sh = g->data_mean; /* on the device: fgmm_gpu_device_shift */
        /* Centre on the data mean: distances are unchanged, 16-bit rounding shrinks (the mixture's
         * mean would do as well, but one far-off component drags it away from the data). Row-major
         * loops and inline max/abs: this runs on every E-step (libm fmax/fabs calls cost ~0.5 ms
         * at k x d = 131k). */
        double amu = 0, ash = 0;
        for (int j = 0; j < d; j++) {
            double a = sh[j] < 0 ? -sh[j] : sh[j];
            ash = a > ash ? a : ash;
        }
        for (int q = 0; q < kp; q++) {
            if (q >= k) {
                b2[q] = -1e30f;
                continue;
            } /* padding: r = 0 (the buffer is zeroed) */
            double nn = 0;
            const float* mu = m->mu + (size_t)q * d;
            float* hq = h + (size_t)q * dp;
            for (int j = 0; j < d; j++) {
                double v = (double)mu[j] - sh[j], a = v < 0 ? -v : v;
                hq[j] = (float)v;
                nn += v * v;
                amu = a > amu ? a : amu;
            }
            double hq2 = LOG2E / (2.0 * m->var[q]);
            b2[q] = (float)(LOG2E * lc[q] - hq2 * nn);
            h2[q] = (float)hq2;
            mn[q] = (float)nn;
        }
        if ((rc = fgmm_gpu_dgrow(&g->mu, (size_t)kp * dp * sizeof(float), "means")) ||
            (rc = fgmm_gpu_dgrow(&g->mu_hi, (size_t)kp * dp * 2, "means")) ||
            (rc = fgmm_gpu_dgrow(&g->mu_lo, (size_t)kp * dp * 2, "means")) ||
            (rc = fgmm_gpu_dgrow(&g->cst, 3 * (size_t)kp * sizeof(float), "constants")) ||
            (rc = fgmm_gpu_device_shift(g))) {
            free(lc);
            return rc;
        }
        cudaError_t e = cudaMemcpyAsync(g->mu.p, h, (size_t)kp * dp * sizeof(float), cudaMemcpyHostToDevice, g->st);
        if (!e) e = cudaMemcpyAsync(g->cst.p, b2, 3 * (size_t)kp * sizeof(float), cudaMemcpyHostToDevice, g->st);
        free(lc);
        if (e) return fgmm_gpu_cuda_fail(e, "model upload");
        /* fp16 operands: prescale by 2^e so that every |x - shift| and |mu - shift| is <= 2^12 (fp16 max: 65504). */
        c->mode = c->plan.mode;
        double scale = c->mode == FGMM_FUSED_FP16 ? pow2_prescale(fmax(g->amax + ash, amu)) : 1.0;
        KL(fgmm_fused_split(g->mu.p, g->mu_hi.p, g->mu_lo.p, (long long)kp * dp, (float)scale, c->mode, g->st));
        const float* cst = g->cst.p;
        c->fm = (fgmm_fused_model){k,
                                   kp,
                                   d,
                                   dp,
                                   g->shift.p,
                                   g->mu_hi.p,
                                   g->mu_lo.p,
                                   cst,
                                   cst + kp,
                                   cst + 2 * kp,
                                   (float)scale,
                                   (float)(1.0 / (scale * scale)),
                                   (float)(1.0 / scale),
                                   NULL,
                                   0};
        return FGMM_OK;
    }
    /* cuBLAS path: isotropic B = mu, kn = ||mu||^2, hp = 1/(2 var);
     * diagonal B = [1/var ; -2 mu/var], kn = sum mu^2/var, hp = 1/2. */
    c->kp = k;
    c->dp = d;
    size_t kd = (size_t)k * d;
    float* h = fgmm_gpu_upload_buffer(g, 2 * kd + 2 * (size_t)k, 1);
    if (!h) {
        free(lc);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of pinned host memory");
    }
    float *kn = h + 2 * kd, *hp = kn + k;
    for (int q = 0; q < k; q++) {
        double nn = 0;
        for (int j = 0; j < d; j++) {
            double mu = m->mu[(size_t)q * d + j];
            if (c->diag) {
                double p = 1.0 / m->var[(size_t)q * d + j];
                h[(size_t)q * d + j] = (float)p;
                h[kd + (size_t)q * d + j] = (float)(-2.0 * mu * p);
                nn += mu * mu * p;
            } else {
                h[(size_t)q * d + j] = (float)mu;
                nn += mu * mu;
            }
        }
        kn[q] = (float)nn;
        hp[q] = c->diag ? 0.5f : (float)(0.5 / m->var[q]);
    }
    if ((rc = fgmm_gpu_dgrow(&g->mu, 2 * kd * sizeof(float), "means")) ||
        (rc = fgmm_gpu_dgrow(&g->cst, 2 * (size_t)k * sizeof(float), "constants")) ||
        (rc = fgmm_gpu_dgrow(&g->cd, (size_t)k * sizeof(double), "constants"))) {
        free(lc);
        return rc;
    }
    cudaError_t e = cudaMemcpyAsync(g->mu.p, h, 2 * kd * sizeof(float), cudaMemcpyHostToDevice, g->st);
    if (!e) e = cudaMemcpyAsync(g->cst.p, kn, 2 * (size_t)k * sizeof(float), cudaMemcpyHostToDevice, g->st);
    if (!e)
        e = cudaMemcpyAsync(g->cd.p, lc, (size_t)k * sizeof(double), cudaMemcpyHostToDevice,
                            g->st); /* pageable: staged before return */
    free(lc);
    return e ? fgmm_gpu_cuda_fail(e, "model upload") : FGMM_OK;
}
