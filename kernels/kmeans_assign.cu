/* kmeans_assign.cu: Lloyd's assignment step after a cuBLAS G = x.c^T: nearest centroid
 * per row (a warp per row), then counts, sums, squared distances into double accumulators.
 * Sums cost t*d double atomics per tile: fine for the few warm-start iterations. */
#include <math.h>

#include "kernels.h"

#define NTHREADS 256

__global__ void kmeans_acc(const float* __restrict__ g, const float* __restrict__ xf, const float* __restrict__ xn,
                           const float* __restrict__ cn, int t, int k, int d, double* counts, double* sums,
                           double* sq, double* total) {
    __shared__ double wsum[NTHREADS / 32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int row = blockIdx.x * (NTHREADS / 32) + warp;
    double part = 0;
    if (row < t) {
        const float* gr = g + (long long)row * k;
        float best = INFINITY;
        int bj = 0;
        for (int j = lane; j < k; j += 32) {
            float v = cn[j] - 2.f * gr[j];
            if (v < best) best = v, bj = j;
        }
        for (int o = 16; o > 0; o >>= 1) { /* ties: lowest index, as on the CPU */
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oj = __shfl_xor_sync(0xffffffffu, bj, o);
            if (ov < best || (ov == best && oj < bj)) best = ov, bj = oj;
        }
        float dist = fmaxf(best + xn[row], 0.f);
        for (int j = lane; j < d; j += 32) atomicAdd(sums + (long long)bj * d + j, (double)xf[(long long)row * d + j]);
        if (lane == 0) {
            atomicAdd(counts + bj, 1.0);
            atomicAdd(sq + bj, (double)dist);
            part = dist;
        }
    }
    if (lane == 0) wsum[warp] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int w = 0; w < NTHREADS / 32; w++) s += wsum[w];
        atomicAdd(total, s);
    }
}

extern "C" int fgmm_kmeans_accumulate(const float* g, const float* xf, const float* xn, const float* cn, int t,
                                      int k, int d, double* counts, double* sums, double* sq, double* total,
                                      cudaStream_t stream) {
    kmeans_acc<<<(t + NTHREADS / 32 - 1) / (NTHREADS / 32), NTHREADS, 0, stream>>>(g, xf, xn, cn, t, k, d, counts,
                                                                                   sums, sq, total);
    return (int)cudaGetLastError();
}
