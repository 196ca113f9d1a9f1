/* SPDX-License-Identifier: MIT */
/* kmeans_assign.cu: Lloyd's assignment step after a cuBLAS G = x.c^T (the cuBLAS path: exact
 * precision, streamed rows, d > 128): nearest centroid per row (a warp per row), then counts, sums,
 * squared distances into double accumulators (t*d double atomics per tile); and k-means++ seeding
 * on the device. */
#include <math.h>

#include "kernels.h"
#include "reduce.cuh"

#define NTHREADS 256

__global__ void kmeans_acc(const float* __restrict__ g, const float* __restrict__ xf, const float* __restrict__ cent,
                           const float* __restrict__ cn, int t, int k, int d, double* counts, double* sums, double* sq,
                           double* total) {
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
        WARP_ARG_BEST(best, bj, <); /* ties: lowest index, as on the CPU */
        /* the chosen centroid's distance from the rows themselves: G (TF32 in fast mode) only picks it */
        const float *xr = xf + (long long)row * d, *cr = cent + (long long)bj * d;
        float dist = 0.f;
        for (int j = lane; j < d; j += 32) {
            float df = xr[j] - cr[j];
            dist = fmaf(df, df, dist);
            atomicAdd(sums + (long long)bj * d + j, (double)xr[j]);
        }
        dist = warp_sum(dist);
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

extern "C" int fgmm_kmeans_accumulate(const float* g, const float* xf, const float* cent, const float* cn, int t, int k,
                                      int d, double* counts, double* sums, double* sq, double* total,
                                      cudaStream_t stream) {
    kmeans_acc<<<(t + NTHREADS / 32 - 1) / (NTHREADS / 32), NTHREADS, 0, stream>>>(g, xf, cent, cn, t, k, d, counts,
                                                                                   sums, sq, total);
    return (int)cudaGetLastError();
}

/* ---- k-means++ seeding (D^2 sampling) on sample rows, the host loop's arithmetic ---- */

/* One warp (all lanes): the first i in [i0, n) where *acc + a[i0] + ... + a[i] > target (and a[i] > 0
 * if pos), with *acc advanced to the sum before i; -1 (*acc advanced by the whole range) if none.
 * Running sums per 32 values by shuffles, eight loads in flight per lane. */
__device__ long long warp_cross(const double* __restrict__ a, long long i0, long long n, double target, double* acc,
                                bool pos) {
    const int lane = threadIdx.x & 31;
    for (long long g = i0; g < n; g += 256) {
        double v[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
            long long i = g + q * 32 + lane;
            v[q] = i < n ? a[i] : 0.0;
        }
#pragma unroll
        for (int q = 0; q < 8; q++) {
            double incl = v[q];
            for (int o = 1; o < 32; o <<= 1) {
                double t = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += t;
            }
            long long i = g + q * 32 + lane;
            unsigned hit = __ballot_sync(0xffffffffu, i<n&& * acc + incl> target && (!pos || v[q] > 0));
            if (hit) {
                int l = __ffs(hit) - 1;
                *acc += __shfl_sync(0xffffffffu, incl - v[q], l);
                return g + q * 32 + l;
            }
            *acc += __shfl_sync(0xffffffffu, incl, 31);
        }
    }
    return -1;
}

/* One warp: the D^2 draw from d2 (ns rows) and its per-block sums part (nb): the first row where the
 * running sum passes u * total (and d2 > 0), else the last row > 0 with d2 > 0 (rounding at the end),
 * else 0; -1 when the total is 0 (fewer distinct points than picks). Every block computes it alike. */
__device__ long long pp_choose(const double* __restrict__ d2, long long ns, const double* __restrict__ part, int nb,
                               double u) {
    const int lane = threadIdx.x & 31;
    double total = 0;
    for (int b0 = 0; b0 < nb; b0 += 256) { /* eight loads in flight per lane: one L2 round trip per 256 */
        double v[8];
#pragma unroll
        for (int q = 0; q < 8; q++) v[q] = b0 + q * 32 + lane < nb ? part[b0 + q * 32 + lane] : 0.0;
#pragma unroll
        for (int q = 0; q < 8; q++) total += v[q];
    }
    for (int o = 16; o > 0; o >>= 1) total += __shfl_down_sync(0xffffffffu, total, o);
    total = __shfl_sync(0xffffffffu, total, 0);
    if (!(total > 0)) return -1;
    const double target = u * total;
    double acc = 0;
    long long b = warp_cross(part, 0, nb - 1, target, &acc, false);
    if (b < 0) b = nb - 1;
    long long pick = warp_cross(d2, b * NTHREADS, ns, target, &acc, true);
    if (pick >= 0) return pick;
    for (long long g = (ns - 1) / 32 * 32; g >= 0; g -= 32) {
        long long i = g + lane;
        unsigned hit = __ballot_sync(0xffffffffu, i > 0 && i < ns && d2[i] > 0);
        if (hit) return g + 31 - __clz(hit);
    }
    return 0;
}

/* Pick c, then (update) d2_out[i] = min(d2_in[i], ||x_i - x_pick||^2) (c = 0: the distance) and
 * part_out[b] = block b's sum of d2_out. Pick 0 is picks[0]; pick c > 0 is drawn with u[c - 1] from the
 * previous step's d2_in / part_in (double-buffered, so no block overwrites what another still
 * reads), and block 0 stores it. The squared distance as src/driver/seed.c computes it: 8 float partial sums
 * (no FMA contraction), added in double. A failed draw sets *found = c (picks made) and every
 * later step does nothing. */
__global__ void pp_step(const float* __restrict__ x, long long ns, int d, int c, int nb, const double* __restrict__ u,
                        const double* __restrict__ d2_in, const double* __restrict__ part_in,
                        double* __restrict__ d2_out, double* __restrict__ part_out, long long* __restrict__ picks,
                        int* __restrict__ found, int update) {
    __shared__ double red[NTHREADS];
    __shared__ long long sp;
    if (*found) return;
    if (threadIdx.x < 32) {
        long long p = c == 0 ? picks[0] : pp_choose(d2_in, ns, part_in, nb, u[c - 1]);
        if (threadIdx.x == 0) {
            sp = p;
            if (blockIdx.x == 0) {
                if (p < 0) *found = c;
                else picks[c] = p;
            }
        }
    }
    __syncthreads();
    const long long pk = sp;
    if (pk < 0 || !update) return;
    /* 8 lanes per row (coalesced loads): lane u keeps the partial sum of dimensions u, u + 8, ... in
     * the host loop's order (the tail after the last 8 on lane 0); the 8 are added in double, in order. */
    const int u8 = threadIdx.x & 7, base = threadIdx.x & 24, d8 = d / 8 * 8;
    const float* cc = x + pk * d;
    double v = 0;
    for (int r = 0; r < 8; r++) {
        const long long i = blockIdx.x * (long long)NTHREADS + threadIdx.x / 8 + 32 * r;
        float p = 0.f;
        if (i < ns) {
            const float* xi = x + i * d;
            for (int j = u8; j < d8; j += 8) {
                float df = __fsub_rn(xi[j], cc[j]);
                p = __fadd_rn(p, __fmul_rn(df, df));
            }
            if (u8 == 0)
                for (int j = d8; j < d; j++) {
                    float df = __fsub_rn(xi[j], cc[j]);
                    p = __fadd_rn(p, __fmul_rn(df, df));
                }
        }
        double s = 0;
        for (int w = 0; w < 8; w++) s += (double)__shfl_sync(0xffffffffu, p, base + w);
        if (i < ns && u8 == 0) {
            double o = c == 0 || s < d2_in[i] ? s : d2_in[i];
            d2_out[i] = o;
            v += o;
        }
    }
    v = block_sum(v, red);
    if (threadIdx.x == 0) part_out[blockIdx.x] = v;
}

/* One launch per pick (the draw and the distance update fused); d2: 2 ns, part: 2 nb doubles. */
extern "C" int fgmm_kmeanspp(const float* x, long long ns, int d, int k, const double* u, long long* picks, double* d2,
                             double* part, int* found, cudaStream_t stream) {
    const int nb = (int)((ns + NTHREADS - 1) / NTHREADS);
    for (int c = 0; c < k; c++) {
        const int in = (c + 1) & 1, out = c & 1; /* c = 0 reads nothing */
        pp_step<<<c + 1 < k ? nb : 1, NTHREADS, 0, stream>>>(x, ns, d, c, nb, u, d2 + in * ns, part + in * nb,
                                                             d2 + out * ns, part + out * nb, picks, found, c + 1 < k);
    }
    return (int)cudaGetLastError();
}
