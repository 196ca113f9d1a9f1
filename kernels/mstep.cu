/* SPDX-License-Identifier: MIT */
/* mstep.cu: the M-step and the fused E-step's model constants on the device, so that an
 * EM iteration needs no model upload and no statistics download (train.c's mstep() is the host
 * version of the same update; both run in double). */
#include <cuda_fp16.h>
#include <math.h>

#include "kernels.h"
#include "reduce.cuh"

#define MS_THREADS 128
#define LOG2E 1.4426950408889634
#define LOG2PI 1.8378770664093454836 /* log(2 pi) */

/* One block per component: new mean and variances from the statistics (s1 row pitch dp, already in
 * data coordinates); w = N_k unnormalised. Isotropic: var[j] from s2[j] = sum r ||x - mu_old||^2.
 * Diagonal: var[j][c] = max(s2[j][c] / N_k - mu_new^2, floor_v) (s2 = sum r x^2, k x d) and vmean[j]
 * their mean over c. Empty (N_k < min_count or not > 0): mean kept, w = 1, flag set; its variances
 * are filled in by mstep_finish. */
__global__ void mstep_component(const double* __restrict__ nk, const double* __restrict__ s1,
                                const double* __restrict__ s2, int d, int dp, int diag, double floor_v,
                                double min_count, float* __restrict__ mu, float* var, float* __restrict__ w,
                                float* vmean /* may alias var (isotropic) */, int* __restrict__ empty) {
    __shared__ double red[MS_THREADS];
    const int j = blockIdx.x;
    const double nj = nk[j];
    if (!(nj >= min_count) || !(nj > 0)) {
        if (threadIdx.x == 0) {
            w[j] = 1.0f;
            empty[j] = 1;
        }
        return;
    }
    double acc = 0; /* isotropic: ||mu_new - mu_old||^2; diagonal: sum of the new variances */
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        double nu = s1[(size_t)j * dp + c] / nj;
        if (diag) {
            double v = fmax(s2[(size_t)j * d + c] / nj - nu * nu, floor_v);
            var[(size_t)j * d + c] = (float)v;
            acc += v;
        } else {
            double old = mu[(size_t)j * d + c];
            acc += (nu - old) * (nu - old);
        }
        mu[(size_t)j * d + c] = (float)nu;
    }
    acc = block_sum(acc, red);
    if (threadIdx.x == 0) {
        if (diag) vmean[j] = (float)(acc / d);
        else /* sum r||x - mu_new||^2 = sum r||x - mu_old||^2 - N_k ||mu_new - mu_old||^2 */
            var[j] = (float)fmax((s2[j] - nj * acc) / (nj * d), floor_v);
        w[j] = (float)nj;
        empty[j] = 0;
    }
}

/* One block: weights normalised, empty components get the mean variance of the others (vmean: one
 * per component; or fill_v if none is left) in all vd of their variances; empty[k] = number of empty
 * components. */
__global__ void mstep_finish(int k, int vd, double fill_v, const float* vmean, float* var, /* may alias */
                             float* __restrict__ w, int* __restrict__ empty) {
    __shared__ double red[MS_THREADS];
    double vs = 0, ws = 0, nf = 0;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        ws += w[j];
        if (!empty[j]) vs += vmean[j], nf += 1;
    }
    vs = block_sum(vs, red);
    ws = block_sum(ws, red);
    nf = block_sum(nf, red);
    const float vfill = (float)(nf > 0 ? vs / nf : fill_v);
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        if (empty[j])
            for (int c = 0; c < vd; c++) var[(size_t)j * vd + c] = vfill;
        w[j] = (float)(w[j] / ws);
    }
    if (threadIdx.x == 0) empty[k] = k - (int)nf;
}

extern "C" int fgmm_mstep_iso(const double* nk, const double* s1, const double* s2, int k, int d, int dp,
                              double floor_v, double min_count, double fill_v, float* mu, float* var, float* w,
                              int* empty, cudaStream_t stream) {
    mstep_component<<<k, MS_THREADS, 0, stream>>>(nk, s1, s2, d, dp, 0, floor_v, min_count, mu, var, w, var, empty);
    mstep_finish<<<1, MS_THREADS, 0, stream>>>(k, 1, fill_v, var, var, w, empty);
    return (int)cudaGetLastError();
}

extern "C" int fgmm_mstep_diag(const double* nk, const double* s1, const double* s2, int k, int d, int dp,
                               double floor_v, double min_count, double fill_v, float* mu, float* var, float* w,
                               float* vmean, int* empty, cudaStream_t stream) {
    mstep_component<<<k, MS_THREADS, 0, stream>>>(nk, s1, s2, d, dp, 1, floor_v, min_count, mu, var, w, vmean, empty);
    mstep_finish<<<1, MS_THREADS, 0, stream>>>(k, d, fill_v, vmean, var, w, empty);
    return (int)cudaGetLastError();
}

/* One block per padded component: the fused kernel's constants (see fgmm_fused_model) from mu, var,
 * w (k x d, k, k): mu_hi = fp16((mu - shift) * scale), h2 = log2(e) / (2 var), mn = ||mu - shift||^2,
 * b2 = log2(w) - d/2 log2(2 pi var) - h2 mn (in double); padding rows: zeros, b2 = -1e30. */
__global__ void fused_constants(const float* __restrict__ mu, const float* __restrict__ var,
                                const float* __restrict__ w, int k, int d, int dp, const float* __restrict__ shift,
                                float scale, __half* __restrict__ mu_hi, float* __restrict__ b2, float* __restrict__ h2,
                                float* __restrict__ mn, float* __restrict__ amax) {
    __shared__ double red[MS_THREADS];
    __shared__ float redf[MS_THREADS];
    const int q = blockIdx.x;
    double nn = 0;
    float am = 0.f;
    for (int c = threadIdx.x; c < dp; c += blockDim.x) {
        double v = q < k && c < d ? (double)mu[(size_t)q * d + c] - shift[c] : 0.0;
        nn += v * v;
        float o = (float)v * scale;
        am = fmaxf(am, fabsf(o));
        mu_hi[(size_t)q * dp + c] = __float2half_rn(o);
    }
    if (amax) block_max_to(am, redf, amax);
    nn = block_sum(nn, red);
    if (threadIdx.x == 0) {
        if (q < k) {
            double lc = log((double)w[q]) - 0.5 * (d * LOG2PI + d * log((double)var[q]));
            double h = LOG2E / (2.0 * var[q]);
            b2[q] = (float)(LOG2E * lc - h * nn);
            h2[q] = (float)h;
            mn[q] = (float)nn;
        } else {
            b2[q] = -1e30f;
            h2[q] = mn[q] = 0.f;
        }
    }
}

extern "C" int fgmm_fused_constants(const float* mu, const float* var, const float* w, int k, int kp, int d, int dp,
                                    const float* shift, float scale, void* mu_hi, float* cst, float* amax,
                                    cudaStream_t stream) {
    fused_constants<<<kp, MS_THREADS, 0, stream>>>(mu, var, w, k, d, dp, shift, scale, (__half*)mu_hi, cst, cst + kp,
                                                   cst + 2 * kp, amax);
    return (int)cudaGetLastError();
}

/* Diagonal covariance's constants (see fgmm_fused_model): first the largest entry of the unscaled
 * mean rows [|mu'|/(var s), 1/(2 var s2)] over all components (one block each, into *amax) ... */
__global__ void diag_amax(const float* __restrict__ mu, const float* __restrict__ var, int k, int d,
                          const float* __restrict__ shift, double s, double s2, float* __restrict__ amax) {
    __shared__ float red[MS_THREADS];
    const int q = blockIdx.x;
    float am = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        double v = var[(size_t)q * d + j], u = (double)mu[(size_t)q * d + j] - shift[j];
        am = fmaxf(am, (float)fmax(fabs(u) / (v * s), 0.5 / (v * s2)));
    }
    block_max_to(am, red, amax);
}

/* ... then, one block per padded component, mu_hi row q = fp16(c [mu'/(var s), -1/(2 var s2)]) with c
 * the power of two that brings *amax near 2^12, b2 = log2(w) - 1/2 sum log2(2 pi var) - 1/2 log2(e)
 * sum mu'^2/var, h2 = log2(e)/c, mn = 0; padding rows: zeros, b2 = -1e30. */
__global__ void diag_constants(const float* __restrict__ mu, const float* __restrict__ var, const float* __restrict__ w,
                               int k, int d, int dp, const float* __restrict__ shift, double s, double s2,
                               const float* __restrict__ amax, __half* __restrict__ mu_hi, float* __restrict__ b2,
                               float* __restrict__ h2, float* __restrict__ mn) {
    __shared__ double red[MS_THREADS];
    const int q = blockIdx.x;
    const double am = *amax;
    const int e = am > 0 ? (int)floor(log2(4096.0 / am)) : 0;
    const double c = ldexp(1.0, e < -60 ? -60 : e > 60 ? 60 : e);
    double lv = 0, mm = 0;
    for (int j = threadIdx.x; j < dp; j += blockDim.x) {
        float o = 0.f;
        if (q < k && j < 2 * d) {
            const int t = j < d ? j : j - d;
            double v = var[(size_t)q * d + t], u = (double)mu[(size_t)q * d + t] - shift[t];
            if (j < d) {
                o = (float)(c * u / (v * s));
                lv += log(v);
                mm += u * u / v;
            } else {
                o = (float)(-c * 0.5 / (v * s2));
            }
        }
        mu_hi[(size_t)q * dp + j] = __float2half_rn(o);
    }
    lv = block_sum(lv, red);
    mm = block_sum(mm, red);
    if (threadIdx.x == 0) {
        if (q < k) {
            b2[q] = (float)(LOG2E * (log((double)w[q]) - 0.5 * (d * LOG2PI + lv) - 0.5 * mm));
            h2[q] = (float)(LOG2E / c);
        } else {
            b2[q] = -1e30f;
            h2[q] = 0.f;
        }
        mn[q] = 0.f;
    }
}

extern "C" int fgmm_fused_constants_diag(const float* mu, const float* var, const float* w, int k, int kp, int d,
                                         int dp, const float* shift, double scale, double scale2, void* mu_hi,
                                         float* cst, float* amax, cudaStream_t stream) {
    cudaError_t e = cudaMemsetAsync(amax, 0, sizeof(float), stream);
    if (e) return (int)e;
    diag_amax<<<k, MS_THREADS, 0, stream>>>(mu, var, k, d, shift, scale, scale2, amax);
    diag_constants<<<kp, MS_THREADS, 0, stream>>>(mu, var, w, k, d, dp, shift, scale, scale2, amax, (__half*)mu_hi, cst,
                                                  cst + kp, cst + 2 * kp);
    return (int)cudaGetLastError();
}

/* out[0] = sum of in[0..n) in a fixed order (one block). */
__global__ void sum_d(const double* __restrict__ in, long long n, double* __restrict__ out) {
    __shared__ double red[MS_THREADS];
    double s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += in[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) out[0] = s;
}

extern "C" int fgmm_sum_d(const double* in, long long n, double* out, cudaStream_t stream) {
    sum_d<<<1, MS_THREADS, 0, stream>>>(in, n, out);
    return (int)cudaGetLastError();
}
