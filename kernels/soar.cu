/* SPDX-License-Identifier: MIT */
/* soar.cu: SOAR spill lists (src/driver/spill.c's algorithm, capi/flashgmm_spill.h) around two cuBLAS SGEMMs
 * per row tile, with the CPU path's float arithmetic element by element (explicit round-to-nearest
 * operations: no FMA contraction), so that only the GEMMs' summation order differs:
 *   soar_rows   rows shifted in place by the centroids' mean (in double, then rounded), ||xs||^2;
 *   [G = xs cs^T, cuBLAS]
 *   soar_top2   a warp per row: G -> squared distances in place, the nearest and second-nearest
 *               (ties to the lower index), and for SOAR the unit residual u = (xs - cs_p) / ||xs - cs_p||
 *               written over the row with <u, xs>;
 *   [H = U cs^T, cuBLAS]
 *   soar_pick   a warp per row: argmin over j != p of dist_j + lambda (<u, xs> - H_j)^2, ties to the
 *               lower index.
 * Traffic per tile of t rows: besides the GEMMs, G is read and written once by soar_top2 and read
 * with H once by soar_pick (about 4 t k floats); the rows are touched three times (t d floats each). */
#include <limits.h>
#include <math.h>

#include "kernels.h"
#include "reduce.cuh"

#define NTHREADS 256 /* 8 rows (warps) per block */

__global__ void soar_rows(float* __restrict__ xs, int t, int d, const double* __restrict__ mean,
                          float* __restrict__ xn) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= t) return;
    float* r = xs + (long long)row * d;
    double s = 0;
    for (int j = lane; j < d; j += 32) {
        float v = (float)((double)r[j] - mean[j]);
        r[j] = v;
        s += (double)v * v;
    }
    s = warp_sum(s);
    if (lane == 0) xn[row] = (float)s;
}

extern "C" int fgmm_soar_rows(float* xs, int t, int d, const double* mean, float* xn, cudaStream_t stream) {
    soar_rows<<<(t * 32 + NTHREADS - 1) / NTHREADS, NTHREADS, 0, stream>>>(xs, t, d, mean, xn);
    return (int)cudaGetLastError();
}

__global__ void soar_top2(float* __restrict__ g, int t, int k, int d, const float* __restrict__ xn,
                          const float* __restrict__ cn, const float* __restrict__ cs, float* __restrict__ xs,
                          long long* __restrict__ prim, float* __restrict__ d1, float* __restrict__ d2,
                          float* __restrict__ rx) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= t) return;
    float* gr = g + (long long)row * k;
    const float x2 = xn[row];
    float b1 = INFINITY, b2 = INFINITY; /* b2: the second smallest value, which may equal b1 */
    int a1 = INT_MAX;
    for (int j = lane; j < k; j += 32) {
        float v = fmaxf(__fsub_rn(__fadd_rn(x2, cn[j]), __fmul_rn(2.0f, gr[j])), 0.0f);
        gr[j] = v;
        if (v < b1) b2 = b1, b1 = v, a1 = j;
        else if (v < b2) b2 = v;
    }
    for (int o = 16; o > 0; o >>= 1) { /* merge two lanes' (smallest, index, second smallest) */
        float ob1 = __shfl_xor_sync(0xffffffffu, b1, o), ob2 = __shfl_xor_sync(0xffffffffu, b2, o);
        int oa = __shfl_xor_sync(0xffffffffu, a1, o);
        bool other = ob1 < b1 || (ob1 == b1 && oa < a1);
        float loser = other ? b1 : ob1;
        if (other) b1 = ob1, a1 = oa;
        b2 = fminf(loser, fminf(b2, ob2));
    }
    if (a1 == INT_MAX) a1 = 0; /* every distance infinite: the CPU keeps list 0 */
    if (lane == 0) {
        prim[row] = a1;
        d1[row] = b1;
        d2[row] = b2;
    }
    if (!rx) return;
    float* xr = xs + (long long)row * d;
    const float* cp = cs + (long long)a1 * d;
    double rr = 0, px = 0;
    for (int j = lane; j < d; j += 32) {
        double r = (double)xr[j] - cp[j];
        rr += r * r;
    }
    rr = warp_sum(rr);
    double inv = rr > 0 ? 1.0 / sqrt(rr) : 0.0;
    for (int j = lane; j < d; j += 32) {
        float u = (float)(((double)xr[j] - cp[j]) * inv);
        px += (double)u * xr[j];
        xr[j] = u;
    }
    px = warp_sum(px);
    if (lane == 0) rx[row] = (float)px;
}

extern "C" int fgmm_soar_top2(float* g, int t, int k, int d, const float* xn, const float* cn, const float* cs,
                              float* xs, long long* primary, float* d1, float* d2, float* rx, cudaStream_t stream) {
    soar_top2<<<(t * 32 + NTHREADS - 1) / NTHREADS, NTHREADS, 0, stream>>>(g, t, k, d, xn, cn, cs, xs, primary, d1, d2,
                                                                           rx);
    return (int)cudaGetLastError();
}

__global__ void soar_pick(const float* __restrict__ g, const float* __restrict__ h, const float* __restrict__ rx,
                          const long long* __restrict__ prim, int t, int k, float lambda,
                          long long* __restrict__ spill) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= t) return;
    const float* gr = g + (long long)row * k;
    const float* hr = h + (long long)row * k;
    const long long p = prim[row];
    const float r = rx[row];
    float best = INFINITY;
    int arg = INT_MAX;
    for (int j = lane; j < k; j += 32) {
        if (j == p) continue;
        float e = __fsub_rn(r, hr[j]); /* <u, xs - cs_j> */
        float v = __fadd_rn(gr[j], __fmul_rn(__fmul_rn(lambda, e), e));
        if (v < best) best = v, arg = j;
    }
    WARP_ARG_BEST(best, arg, <);
    if (lane == 0) spill[row] = arg != INT_MAX ? arg : p == 0 ? 1 : 0; /* no finite loss: the CPU's default */
}

extern "C" int fgmm_soar_pick(const float* g, const float* h, const float* rx, const long long* primary, int t, int k,
                              float lambda, long long* spill, cudaStream_t stream) {
    soar_pick<<<(t * 32 + NTHREADS - 1) / NTHREADS, NTHREADS, 0, stream>>>(g, h, rx, primary, t, k, lambda, spill);
    return (int)cudaGetLastError();
}
