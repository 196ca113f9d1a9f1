/* SPDX-License-Identifier: MIT */
/* reduce.cuh: warp and block reductions shared by the kernels. Fixed order (a butterfly over the 32
 * lanes; a tree over blockDim.x, a power of two): results do not depend on scheduling. Every lane of
 * the warp (every thread of the block) must call them; every lane gets the result. */
#ifndef FGMM_REDUCE_CUH
#define FGMM_REDUCE_CUH

/* Sum over the warp (float or double). */
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Maximum over the warp. */
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The warp's smallest (MAX: largest) value v and its index j; ties to the lower index (as the CPU
 * code's scans in index order). */
template <bool MAX>
__device__ __forceinline__ void warp_arg_best(float& v, int& j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oj = __shfl_xor_sync(0xffffffffu, j, o);
        if ((MAX ? ov > v : ov < v) || (ov == v && oj < j)) v = ov, j = oj;
    }
}

/* Sum of one double per thread, returned to every thread; red: blockDim.x doubles of shared memory. */
__device__ __forceinline__ double block_sum(double v, double* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    double r = red[0];
    __syncthreads();
    return r;
}

/* Maximum of one non-negative float per thread into *out across blocks (as ints: non-negative floats
 * order alike); red: blockDim.x floats of shared memory. */
__device__ __forceinline__ void block_max_to(float v, float* red, float* out) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicMax((int*)out, __float_as_int(red[0]));
}
#endif
