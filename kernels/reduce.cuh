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

/* The warp's best value v and its index j (lvalues: a float and an int), BETTER: < for the smallest,
 * > for the largest; ties to the lower index (as the CPU code's scans in index order). A macro: as an
 * inline function (template or not, unrolled or not) nvcc 13.0 emitted other code for the kernels
 * (soar_pick: 24 more instructions on sm_80); the macro's expansion is the loop they had. */
#define WARP_ARG_BEST(v, j, BETTER)                                  \
    for (int o_ = 16; o_ > 0; o_ >>= 1) {                            \
        float ov_ = __shfl_xor_sync(0xffffffffu, v, o_);             \
        int oj_ = __shfl_xor_sync(0xffffffffu, j, o_);               \
        if (ov_ BETTER v || (ov_ == v && oj_ < j)) v = ov_, j = oj_; \
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
