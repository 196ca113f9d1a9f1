/* SPDX-License-Identifier: MIT */
/* estep_blas.cu: the E-step around cuBLAS SGEMMs, for what the fused kernel does not
 * cover (diagonal covariance, d > FGMM_FUSED_MAX_D) and as the naive baseline when the
 * tile is all n rows. Per row tile of t rows: G = x.B^T (t x k floats, cuBLAS), then
 * resp_kernel turns G into responsibilities in place, and R^T x is another SGEMM.
 * Memory: t x k floats; column sums use one double atomic per column per 64 rows. */
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "reduce.cuh"

#define RESP_ROWS 64 /* rows per block in resp_kernel: amortises the column atomics */
#define NTHREADS 256

template <typename T>
__global__ void load_tile(const T* __restrict__ x, int t, int d, float* xf, float* x2, float* xn) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= t) return;
    const T* row = x + (long long)warp * d;
    float ss = 0;
    for (int j = lane; j < d; j += 32) {
        float v = (float)row[j];
        xf[(long long)warp * d + j] = v;
        if (x2) x2[(long long)warp * d + j] = v * v;
        ss += v * v;
    }
    ss = warp_sum(ss);
    if (lane == 0) xn[warp] = ss;
}

extern "C" int fgmm_blas_load_tile(const void* x, int dtype, int t, int d, float* xf, float* x2, float* xn,
                                   cudaStream_t stream) {
    int blocks = (t * 32 + NTHREADS - 1) / NTHREADS;
    if (dtype == 1) load_tile<uint8_t><<<blocks, NTHREADS, 0, stream>>>((const uint8_t*)x, t, d, xf, x2, xn);
    else load_tile<float><<<blocks, NTHREADS, 0, stream>>>((const float*)x, t, d, xf, x2, xn);
    return (int)cudaGetLastError();
}

__device__ __forceinline__ float logdens(float g, float xn, float kn, float hp, double c, int diag, float* dist) {
    float q = diag ? fmaxf(g + kn, 0.f) : fmaxf(xn + kn - 2.f * g, 0.f);
    *dist = q;
    return (float)c - hp * q;
}

/* log sum_j exp(logp_j) over one row of G, a warp per row; every lane gets the value. */
__device__ __forceinline__ float warp_row_lse(const float* gr, float x2, int k, const float* kn, const float* hp,
                                              const double* c, int diag, int lane) {
    float mx = -INFINITY, s = 0, dist;
    for (int j = lane; j < k; j += 32) mx = fmaxf(mx, logdens(gr[j], x2, kn[j], hp[j], c[j], diag, &dist));
    mx = warp_max(mx);
    for (int j = lane; j < k; j += 32) s += expf(logdens(gr[j], x2, kn[j], hp[j], c[j], diag, &dist) - mx);
    s = warp_sum(s);
    return mx + logf(s);
}

__global__ void resp_kernel(float* __restrict__ g, int t, int k, const float* __restrict__ xn,
                            const float* __restrict__ kn, const float* __restrict__ hp, const double* __restrict__ c,
                            int diag, double* nk, double* s2, double* ll) {
    __shared__ float lz[RESP_ROWS];
    __shared__ double wsum[NTHREADS / 32];
    int r0 = blockIdx.x * RESP_ROWS, rows = min(RESP_ROWS, t - r0);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    double part = 0;
    for (int r = warp; r < rows; r += NTHREADS / 32) { /* row log-sum-exp, a warp per row */
        float z = warp_row_lse(g + (long long)(r0 + r) * k, xn[r0 + r], k, kn, hp, c, diag, lane);
        if (lane == 0) {
            lz[r] = z;
            part += z;
        }
    }
    if (lane == 0) wsum[warp] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int w = 0; w < NTHREADS / 32; w++) s += wsum[w];
        atomicAdd(ll, s);
    }
    for (int j = threadIdx.x; j < k; j += NTHREADS) { /* a thread per column: coalesced over j */
        double sn = 0, sd = 0;
        for (int r = 0; r < rows; r++) {
            float *p = g + (long long)(r0 + r) * k + j, dist;
            float rr = expf(logdens(*p, xn[r0 + r], kn[j], hp[j], c[j], diag, &dist) - lz[r]);
            *p = rr;
            sn += rr;
            sd += (double)rr * dist;
        }
        atomicAdd(nk + j, sn);
        if (!diag) atomicAdd(s2 + j, sd);
    }
}

extern "C" int fgmm_blas_resp(float* g, int t, int k, const float* xn, const float* kn, const float* hp,
                              const double* c, int diag, double* nk, double* s2, double* ll, cudaStream_t stream) {
    resp_kernel<<<(t + RESP_ROWS - 1) / RESP_ROWS, NTHREADS, 0, stream>>>(g, t, k, xn, kn, hp, c, diag, nk, s2, ll);
    return (int)cudaGetLastError();
}

/* A warp per row: log-sum-exp, then m selection passes over the row, each taking the largest
 * log-density strictly after the previous pick in (value desc, index asc) order. */
__global__ void topm_kernel(const float* __restrict__ g, int t, int k, const float* __restrict__ xn,
                            const float* __restrict__ kn, const float* __restrict__ hp, const double* __restrict__ c,
                            int diag, int m, long long* labels, float* resp, float* loglik) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= t) return;
    const float* gr = g + (long long)row * k;
    float x2 = xn[row], dist;
    float lz = warp_row_lse(gr, x2, k, kn, hp, c, diag, lane);
    if (loglik && lane == 0) loglik[row] = lz;
    float pv = INFINITY;
    int pj = -1;
    for (int sel = 0; sel < m; sel++) {
        float bv = -INFINITY;
        int bj = k;
        for (int j = lane; j < k; j += 32) {
            float v = logdens(gr[j], x2, kn[j], hp[j], c[j], diag, &dist);
            bool after = v < pv || (v == pv && j > pj);
            if (after && (v > bv || (v == bv && j < bj))) bv = v, bj = j;
        }
        WARP_ARG_BEST(bv, bj, >);
        if (lane == 0) {
            labels[(long long)row * m + sel] = bj < k ? bj : -1;
            if (resp) resp[(long long)row * m + sel] = bj < k ? expf(bv - lz) : 0.f;
        }
        pv = bv, pj = bj;
    }
}

extern "C" int fgmm_blas_topm(const float* g, int t, int k, const float* xn, const float* kn, const float* hp,
                              const double* c, int diag, int m, long long* labels, float* resp, float* loglik,
                              cudaStream_t stream) {
    if (m < 0 || m > FGMM_TOPM_MAX) return (int)cudaErrorInvalidValue;
    topm_kernel<<<(t * 32 + NTHREADS - 1) / NTHREADS, NTHREADS, 0, stream>>>(g, t, k, xn, kn, hp, c, diag, m, labels,
                                                                             resp, loglik);
    return (int)cudaGetLastError();
}

template <typename T>
__global__ void accumulate(const T* in, double* out, long long count) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x)
        out[i] += in[i];
}

extern "C" int fgmm_blas_accumulate(const float* in, double* out, long long count, cudaStream_t stream) {
    accumulate<float><<<512, NTHREADS, 0, stream>>>(in, out, count);
    return (int)cudaGetLastError();
}

extern "C" int fgmm_accumulate_d(const double* in, double* out, long long count, cudaStream_t stream) {
    accumulate<double><<<64, NTHREADS, 0, stream>>>(in, out, count);
    return (int)cudaGetLastError();
}
