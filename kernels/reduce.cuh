/* SPDX-License-Identifier: MIT */
/* reduce.cuh: block reductions shared by the kernels. Fixed order (a tree over blockDim.x, a power
 * of two): results do not depend on scheduling. Every thread of the block must call them. */
#ifndef FGMM_REDUCE_CUH
#define FGMM_REDUCE_CUH

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
