/* SPDX-License-Identifier: MIT */
/* estep_fused.cu: the fused E-step's data around its two passes (estep_fused_lse.cu,
 * estep_fused_acc.cu; design in estep_fused.cuh): the components split into bf16 hi/lo (or fp16),
 * rows prepared as fp16, and s1/s2 shifted back. */
#include "estep_fused.cuh"

__global__ void split_mu(const float* mu, bf16* hi, bf16* lo, long long count, float scale, int f16) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float v = mu[i] * scale;
        if (f16) {
            ((__half*)hi)[i] = __float2half_rn(v);
            lo[i] = __float2bfloat16_rn(0.f);
        } else {
            bf16 h = __float2bfloat16_rn(v);
            hi[i] = h;
            lo[i] = __float2bfloat16_rn(v - __bfloat162float(h));
        }
    }
}

extern "C" int fgmm_fused_split(const float* mu, void* hi, void* lo, long long count, float scale, int mode,
                                cudaStream_t stream) {
    split_mu<<<256, 256, 0, stream>>>(mu, (bf16*)hi, (bf16*)lo, count, scale, mode == FGMM_FUSED_FP16);
    return (int)cudaGetLastError();
}

/* One warp per row: out = fp16((x - shift) * scale), dp wide (zero padding); xn = ||x - shift||^2 in fp32.
 * scale2 > 0 (diagonal covariance): out = fp16([(x - shift) * scale, (x - shift)^2 * scale2]) (2d <= dp)
 * and xn = 0 (the kernels' log-density is then b2 + h2 * x_aug.mu_aug; see fgmm_fused_model). */
template <typename T>
__global__ void prepare_rows(const T* __restrict__ x, long long n, int d, int dp, const float* __restrict__ shift,
                             float scale, float scale2, __half* __restrict__ out, float* __restrict__ xn) {
    const int lane = threadIdx.x % 32;
    const long long nw = (long long)gridDim.x * blockDim.x / 32;
    for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; i < n; i += nw) {
        float ss = 0.f;
        for (int c = lane; c < dp; c += 32) {
            const int j = c < d ? c : c - d; /* source column (the squares' half: c - d) */
            float v = c < d || (scale2 > 0.f && c < 2 * d) ? (float)x[i * d + j] - shift[j] : 0.f;
            ss = fmaf(v, v, ss);
            out[i * dp + c] = __float2half_rn(scale2 > 0.f && c >= d ? v * v * scale2 : v * scale);
        }
        ss = warp_sum(ss);
        if (lane == 0) xn[i] = scale2 > 0.f ? 0.f : ss;
    }
}

extern "C" int fgmm_fused_prepare(const void* x, int dtype, long long n, int d, int dp, const float* shift, float scale,
                                  float scale2, void* out, float* xn, cudaStream_t stream) {
    if (n <= 0) return 0;
    long long blocks = (n + 7) / 8;
    int grid = (int)(blocks < 4096 ? blocks : 4096);
    if (dtype == 1)
        prepare_rows<<<grid, 256, 0, stream>>>((const uint8_t*)x, n, d, dp, shift, scale, scale2, (__half*)out, xn);
    else prepare_rows<<<grid, 256, 0, stream>>>((const float*)x, n, d, dp, shift, scale, scale2, (__half*)out, xn);
    return (int)cudaGetLastError();
}

__global__ void unshift_s1(const double* __restrict__ nk, double* __restrict__ s1, const float* __restrict__ shift,
                           int k, int dp) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)k * dp;
         i += (long long)gridDim.x * blockDim.x)
        s1[i] += nk[i / dp] * (double)shift[i % dp];
}

extern "C" int fgmm_fused_unshift(const double* nk, double* s1, const float* shift, int k, int dp,
                                  cudaStream_t stream) {
    unshift_s1<<<256, 256, 0, stream>>>(nk, s1, shift, k, dp);
    return (int)cudaGetLastError();
}

/* Diagonal: s1 row q holds [sum r x' scale, sum r x'^2 scale2] (x' = x - shift); in place, s1[q][j] =
 * sum r x_j and s2[q][j] (k x d, overwritten) = sum r x_j^2. */
__global__ void unshift_diag(const double* __restrict__ nk, double* __restrict__ s1, double* __restrict__ s2,
                             const float* __restrict__ shift, int k, int d, int dp, double inv_scale,
                             double inv_scale2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)k * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long q = i / d;
        const int j = (int)(i - q * d);
        const double sx = s1[q * dp + j] * inv_scale, sxx = s1[q * dp + d + j] * inv_scale2, m = shift[j];
        s1[q * dp + j] = sx + nk[q] * m;
        s2[i] = sxx + 2.0 * m * sx + nk[q] * m * m;
    }
}

extern "C" int fgmm_fused_unshift_diag(const double* nk, double* s1, double* s2, const float* shift, int k, int d,
                                       int dp, double scale, double scale2, cudaStream_t stream) {
    unshift_diag<<<256, 256, 0, stream>>>(nk, s1, s2, shift, k, d, dp, 1.0 / scale, 1.0 / scale2);
    return (int)cudaGetLastError();
}
