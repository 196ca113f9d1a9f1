/* SPDX-License-Identifier: MIT */
/* data_max.cu: max |x| over rows already on the device (the fp16 prescale's bound). */
#include "kernels.h"
#include "reduce.cuh"

#define NTHREADS 256

__global__ void abs_max(const float4* __restrict__ x4, const float* __restrict__ x, long long count, float* out) {
    __shared__ float red[NTHREADS];
    float m = 0.f;
    const long long n4 = count / 4, stride = (long long)gridDim.x * NTHREADS;
    for (long long i = blockIdx.x * (long long)NTHREADS + threadIdx.x; i < n4; i += stride) {
        float4 v = x4[i];
        m = fmaxf(m, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    }
    if (blockIdx.x == 0 && threadIdx.x < count - 4 * n4) m = fmaxf(m, fabsf(x[4 * n4 + threadIdx.x]));
    block_max_to(m, red, out);
}

extern "C" int fgmm_abs_max(const float* x, long long count, float* out, cudaStream_t stream) {
    long long blocks = (count / 4 + NTHREADS - 1) / NTHREADS;
    blocks = blocks < 1 ? 1 : blocks > 4096 ? 4096 : blocks;
    abs_max<<<(int)blocks, NTHREADS, 0, stream>>>((const float4*)x, x, count, out);
    return (int)cudaGetLastError();
}
