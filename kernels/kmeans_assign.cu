/* kmeans_assign.cu: Lloyd's assignment step after a cuBLAS G = x.c^T: nearest centroid
 * per row (a warp per row), then counts, sums, squared distances into double accumulators.
 * Sums cost t*d double atomics per tile: fine for the few warm-start iterations. */
#include <math.h>

#include "kernels.h"
#include "reduce.cuh"

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

/* ---- k-means++ seeding (D^2 sampling) on sample rows, the host loop's arithmetic ---- */

/* d2[i] = min(d2[i], ||x_i - x_p||^2) with p = picks[c] (c = 0: =), the squared distance as train.c
 * computes it: 8 float partial sums (no FMA contraction), added in double; part[b] = block b's sum
 * of the new d2, in a fixed order. Does nothing once *found is set. */
__global__ void pp_update(const float* __restrict__ x, long long ns, int d, const long long* __restrict__ picks, int c,
                          double* __restrict__ d2, double* __restrict__ part, const int* __restrict__ found) {
    __shared__ double red[NTHREADS];
    if (*found) return;
    const long long i = blockIdx.x * (long long)NTHREADS + threadIdx.x;
    double v = 0;
    if (i < ns) {
        const float *xi = x + i * d, *cc = x + picks[c] * d;
        float p[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        int j = 0;
        for (; j + 8 <= d; j += 8)
#pragma unroll
            for (int u = 0; u < 8; u++) {
                float df = __fsub_rn(xi[j + u], cc[j + u]);
                p[u] = __fadd_rn(p[u], __fmul_rn(df, df));
            }
        for (; j < d; j++) {
            float df = __fsub_rn(xi[j], cc[j]);
            p[0] = __fadd_rn(p[0], __fmul_rn(df, df));
        }
        double s = 0;
        for (int u = 0; u < 8; u++) s += p[u];
        if (c == 0 || s < d2[i]) d2[i] = s;
        v = d2[i];
    }
    v = block_sum(v, red);
    if (threadIdx.x == 0) part[blockIdx.x] = v;
}

/* One thread: picks[c + 1] = the first row where the running sum of d2 passes u[c] * total (and
 * d2 > 0), else the last row with d2 > 0; *found = c + 1 when total is 0 (fewer distinct points). */
__global__ void pp_pick(const double* __restrict__ d2, long long ns, const double* __restrict__ part, int nb, int c,
                        const double* __restrict__ u, long long* __restrict__ picks, int* __restrict__ found) {
    if (*found) return;
    double total = 0;
    for (int b = 0; b < nb; b++) total += part[b];
    if (!(total > 0)) {
        *found = c + 1;
        return;
    }
    const double target = u[c] * total;
    double acc = 0;
    int b = 0;
    for (; b < nb - 1 && acc + part[b] <= target; b++) acc += part[b];
    long long pick = -1;
    for (long long i = (long long)b * NTHREADS; i < ns; i++) {
        acc += d2[i];
        if (acc > target && d2[i] > 0) {
            pick = i;
            break;
        }
    }
    if (pick < 0) /* rounding at the end of the sum */
        for (pick = ns - 1; pick > 0 && !(d2[pick] > 0); pick--) {}
    picks[c + 1] = pick;
}

extern "C" int fgmm_kmeanspp(const float* x, long long ns, int d, int k, const double* u, long long* picks, double* d2,
                             double* part, int* found, cudaStream_t stream) {
    const int nb = (int)((ns + NTHREADS - 1) / NTHREADS);
    for (int c = 0; c < k; c++) {
        pp_update<<<nb, NTHREADS, 0, stream>>>(x, ns, d, picks, c, d2, part, found);
        if (c + 1 < k) pp_pick<<<1, 1, 0, stream>>>(d2, ns, part, nb, c, u, picks, found);
    }
    return (int)cudaGetLastError();
}
