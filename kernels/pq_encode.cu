/* SPDX-License-Identifier: MIT */
/* pq_encode.cu: IVF-PQ codes of (row, list) entries, as FAISS's IndexIVFPQ encodes them with 8-bit
 * sub-quantizers: the residual r = x - c_list in float, then per sub-quantizer m the nearest of its 256
 * codewords by squared L2 distance in float (ties to the lower codeword, as FAISS's strict `<`).
 * Grid: (entry blocks of NTHREADS, M); a block loads sub-quantizer m's codebook into shared memory,
 * zero-padded from dsub to DSP dimensions (the padding adds exact zeros to every distance), and each
 * thread holds one entry's residual sub-vector in registers and scans the 256 codewords. */
#include <math.h>

#include "kernels.h"

#define NTHREADS 256

template <int DSP>
__global__ void __launch_bounds__(NTHREADS)
    pq_encode(const float* __restrict__ x, const long long* __restrict__ lists, int t, int ma, int d, int dsub,
              const float* __restrict__ cent, const float* __restrict__ cb, unsigned char* __restrict__ codes, int M) {
    __shared__ float4 s4[256 * DSP / 4];
    float* s = reinterpret_cast<float*>(s4);
    const int m = blockIdx.y;
    const float* cbm = cb + (long long)m * 256 * dsub;
    for (int i = threadIdx.x; i < 256 * DSP; i += NTHREADS) {
        int j = i / DSP, k = i % DSP;
        s[i] = k < dsub ? cbm[j * dsub + k] : 0.0f;
    }
    __syncthreads();
    long long e = (long long)blockIdx.x * NTHREADS + threadIdx.x; /* entry: row e / ma, rank e % ma */
    if (e >= (long long)t * ma) return;
    long long l = lists[e];
    if (l < 0) return;
    const float* xr = x + (e / ma) * d + m * dsub;
    const float* cr = cent + l * d + m * dsub;
    float r[DSP];
#pragma unroll
    for (int k = 0; k < DSP; k++) r[k] = k < dsub ? __fsub_rn(xr[k], cr[k]) : 0.0f;
    float best = INFINITY;
    int arg = 0;
    for (int j = 0; j < 256; j++) {
        const float4* c4 = s4 + j * (DSP / 4);
        float acc = 0.0f;
#pragma unroll
        for (int q = 0; q < DSP / 4; q++) {
            float4 c = c4[q];
            float a0 = r[4 * q] - c.x, a1 = r[4 * q + 1] - c.y, a2 = r[4 * q + 2] - c.z, a3 = r[4 * q + 3] - c.w;
            acc += a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3;
        }
        if (acc < best) best = acc, arg = j;
    }
    codes[e * M + m] = (unsigned char)arg;
}

extern "C" int fgmm_pq_encode(const float* x, const long long* lists, int t, int ma, int d, int dsub, const float* cent,
                              const float* codebook, int M, unsigned char* codes, cudaStream_t stream) {
    long long entries = (long long)t * ma;
    if (entries < 1) return 0;
    if (dsub < 1 || dsub > FGMM_PQ_MAX_DSUB || entries > (long long)INT32_MAX * NTHREADS / 2)
        return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((entries + NTHREADS - 1) / NTHREADS), (unsigned)M);
    if (dsub <= 4) pq_encode<4><<<grid, NTHREADS, 0, stream>>>(x, lists, t, ma, d, dsub, cent, codebook, codes, M);
    else if (dsub <= 8) pq_encode<8><<<grid, NTHREADS, 0, stream>>>(x, lists, t, ma, d, dsub, cent, codebook, codes, M);
    else if (dsub <= 16)
        pq_encode<16><<<grid, NTHREADS, 0, stream>>>(x, lists, t, ma, d, dsub, cent, codebook, codes, M);
    else pq_encode<32><<<grid, NTHREADS, 0, stream>>>(x, lists, t, ma, d, dsub, cent, codebook, codes, M);
    return (int)cudaGetLastError();
}
