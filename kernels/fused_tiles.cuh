/* SPDX-License-Identifier: MIT */
/* fused_tiles.cuh: shared-memory tiles of the fused E-step kernels (estep_fused*.cu, estep_onepass.cu):
 * operand types, async copies of prepared rows and component tiles into plain or wgmma-panelled
 * tiles. */
#ifndef FGMM_FUSED_TILES_CUH
#define FGMM_FUSED_TILES_CUH
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "reduce.cuh"
#include "wgmma.cuh"

#define DP_MAX FGMM_FUSED_MAX_D
#define KS_MAX (DP_MAX / 16) /* k-steps over the dimension */
#define SROW (DP_MAX + 8)    /* smem row stride (bf16): +16 B makes ldmatrix rows hit distinct banks */
/* 16-bit elements of a smem tile of R rows: stride SROW, or (WDP != 0) WDP wide panelled for wgmma
 * (128 B per 64 columns) */
#define TILE_ELEMS(R, WDP) ((WDP) ? (R) * (WDP) : (R)*SROW)
#define NTHREADS 256
#define LOG2E 1.4426950408889634f

typedef __nv_bfloat16 bf16;

/* Operand type per mode: FGMM_FUSED_BF16 and _EXACT use bf16 (fp32's range), FGMM_FUSED_FP16 uses
 * fp16 (8x finer mantissa; the host prescales by a power of two so operands stay < 2^12). Both are
 * 16 bits, so tiles are stored as bf16 and only reinterpreted. */
template <bool F16>
struct Elt;
template <>
struct Elt<false> {
    static __device__ __forceinline__ uint32_t pack(float a, float b) {
        __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
        return *(uint32_t*)&v;
    }
    static __device__ __forceinline__ float2 unpack(uint32_t u) { return __bfloat1622float2(*(__nv_bfloat162*)&u); }
};
template <>
struct Elt<true> {
    static __device__ __forceinline__ uint32_t pack(float a, float b) {
        __half2 v = __floats2half2_rn(a, b);
        return *(uint32_t*)&v;
    }
    static __device__ __forceinline__ float2 unpack(uint32_t u) { return __half22float2(*(__half2*)&u); }
};

/* The m16n8k16 A fragment (16 x 16, 16-bit) from two n8 C fragments of fp32 (16 x 8 each). */
template <bool F16>
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = Elt<F16>::pack(c0[0], c0[1]);
    a[1] = Elt<F16>::pack(c0[2], c0[3]);
    a[2] = Elt<F16>::pack(c1[0], c1[1]);
    a[3] = Elt<F16>::pack(c1[2], c1[3]);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }

/* This thread's share of an async copy of ROWS rows (fp16, DP = 64, 128 or 256 wide, contiguous) into
 * panelled smem tiles of TR rows (wg_off's layout) at dst; rows at or past `valid` are zero-filled.
 * A thread keeps one chunk column and one swizzle phase, so every offset but the first is a
 * constant (address arithmetic per chunk had been 30% of both kernels' instructions). */
template <int TR, int DP, int ROWS, bool FULL>
__device__ __forceinline__ void wg_copy_rows(const __half* src, int valid, unsigned char* dst) {
    constexpr int LG = DP == 256 ? 5 : DP == 128 ? 4 : 3, STEP = NTHREADS >> LG; /* rows per sweep (8..32) divide TR */
    constexpr uint32_t JUMP = (DP / 64 - 1) * TR * 128;                          /* into the next TR-row tile */
    const int c = threadIdx.x & ((1 << LG) - 1), r0 = threadIdx.x >> LG;
    unsigned char* d = dst + wg_off<TR>(r0, c, DP);
    src += r0 * DP + c * 8;
#pragma unroll
    for (int j = 0; j < ROWS / STEP; j++) {
        const uint32_t off = j * STEP * 128 + (j * STEP / TR) * JUMP;
        if (FULL || r0 + j * STEP < valid) cp_async16(d + off, src + j * STEP * DP);
        else *(uint4*)(d + off) = make_uint4(0u, 0u, 0u, 0u);
    }
}

/* Prepared rows (fp16, dp wide, already centred and prescaled; see fgmm_fused_prepare): async
 * copies of `valid` rows straight into the smem tile, their norms into xn and, if lzg is given,
 * their logz2 into lz. Rows past `valid` are zeros with lz = +inf (responsibility 0). */
template <int ROWS, int WDP>
__device__ __forceinline__ void load_prepared(const __half* src, int valid, int dp, const float* xng, const float* lzg,
                                              bf16* xs, float* xn, float* lz) {
    if constexpr (WDP != 0) { /* WDP wide, 64-row panelled tiles (wgmma.cuh), one after the other */
        if (valid == ROWS) {  /* all but the last tile: no per-row checks, norms and logz2 in 16-byte copies */
            wg_copy_rows<64, WDP, ROWS, true>(src, valid, (unsigned char*)xs);
            constexpr int CH = ROWS / 4; /* 16-byte chunks per array */
            if (threadIdx.x < CH) cp_async16(xn + threadIdx.x * 4, xng + threadIdx.x * 4);
            else if (lzg && threadIdx.x < 2 * CH) cp_async16(lz + (threadIdx.x - CH) * 4, lzg + (threadIdx.x - CH) * 4);
            return;
        }
        wg_copy_rows<64, WDP, ROWS, false>(src, valid, (unsigned char*)xs);
    } else {
        const int chunks = dp / 8; /* 16-byte chunks per row */
        for (int i = threadIdx.x; i < ROWS * chunks; i += NTHREADS) {
            int r = i / chunks, c = i - r * chunks;
            bf16* dst = xs + r * SROW + c * 8;
            if (r < valid) cp_async16(dst, src + (long long)r * dp + c * 8);
            else *(uint4*)dst = make_uint4(0u, 0u, 0u, 0u);
        }
    }
    for (int i = threadIdx.x; i < ROWS; i += NTHREADS) {
        if (i < valid) {
            cp_async4(xn + i, xng + i);
            if (lzg) cp_async4(lz + i, lzg + i);
        } else {
            xn[i] = 0.f;
            if (lzg) lz[i] = INFINITY;
        }
    }
}

/* Async copy of `bytes` (a multiple of 16, 16-byte aligned) from global to smem. */
__device__ __forceinline__ void copy_async(void* dst, const void* src, int bytes) {
    for (int i = threadIdx.x * 16; i < bytes; i += NTHREADS * 16) cp_async16((char*)dst + i, (const char*)src + i);
}

/* Async copy of component rows [k0, k0 + ROWS) (16-bit, dp wide) into smem: rows of stride SROW,
 * or (WDP = dp != 0) panelled tiles of TR rows. */
template <int ROWS, int WDP = 0, int TR = 64>
__device__ __forceinline__ void stage_mu_async(const bf16* mu, int dp, int k0, bf16* dst) {
    if constexpr (WDP != 0) {
        wg_copy_rows<TR, WDP, ROWS, true>((const __half*)mu + (long long)k0 * WDP, ROWS, (unsigned char*)dst);
        return;
    }
    const int rows = ROWS, chunks = dp / 8; /* 16-byte chunks per row */
    for (int i = threadIdx.x; i < rows * chunks; i += NTHREADS) {
        int r = i / chunks, c = i % chunks;
        cp_async16(dst + r * SROW + c * 8, mu + (long long)(k0 + r) * dp + c * 8);
    }
}

/* In place of the GEMM's dot products x'.mu' of rows g, g + 8 (an m64nN C fragment, NJ = N / 8), their
 * log2 densities b2 - h2 (||x'||^2 + m2 x'.mu') (cs: b2, then h2, of the tile's N components; xn0, xn1
 * the rows' ||x'||^2); mx = the rows' maxima over the tile, quad-reduced. */
template <int NJ>
__device__ __forceinline__ void log_densities(float (&a)[NJ][4], const float* cs, float m2, float xn0, float xn1,
                                              float (&mx)[2]) {
    const int c = threadIdx.x % 4;
    mx[0] = mx[1] = -INFINITY;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const float2 b = *(const float2*)(cs + j * 8 + 2 * c), h = *(const float2*)(cs + NJ * 8 + j * 8 + 2 * c);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float l = fmaf(-(e & 1 ? h.y : h.x), fmaf(m2, a[j][e], e < 2 ? xn0 : xn1), e & 1 ? b.y : b.x);
            a[j][e] = l;
            mx[e >> 1] = fmaxf(mx[e >> 1], l);
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
}

/* Pass 1's online log-sum-exp (log2 domain) of this thread's rows g and g + 8: adds a tile's log2 densities
 * a (an m16 C fragment, NJ n8 blocks; tmax: their row maxima, quad-reduced) to the running maxima mx and
 * sums sm (start: -inf, 0). */
template <int NJ>
__device__ __forceinline__ void lse_add_tile(const float (&a)[NJ][4], const float (&tmax)[2], float (&mx)[2],
                                             float (&sm)[2]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float nm = fmaxf(mx[h], tmax[h]);
        sm[h] *= exp2f(mx[h] - nm); /* exp2(-inf) = 0 on the first tile */
        mx[h] = nm;
    }
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) sm[e >> 1] += exp2f(a[j][e] - mx[e >> 1]);
}

/* The end of pass 1 for one warp: logz2 of rows row_g and row_g + 8 (those below n) from lse_add_tile's mx and
 * sm; returns the warp's sum of its rows' logz2 (every lane). c: lane % 4 (the caller's: threadIdx.x % 4 here
 * gives fused_lse other code). */
__device__ __forceinline__ double lse_finish(const float (&mx)[2], float (&sm)[2], int c, long long row_g, long long n,
                                             float* __restrict__ logz2) {
    double part = 0;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        sm[h] += __shfl_xor_sync(0xffffffffu, sm[h], 1);
        sm[h] += __shfl_xor_sync(0xffffffffu, sm[h], 2);
        const long long row = row_g + 8 * h;
        const float lz = mx[h] + log2f(sm[h]);
        if (c == 0 && row < n) {
            logz2[row] = lz;
            part += lz;
        }
    }
    return warp_sum(part);
}

/* Pass 2's tile math for one warp: st holds S^T (this warp's components g and g + 8 of an m16 C fragment
 * against 8 NJ rows: x'.mu', prescaled); into rt (st itself, or another array), the responsibilities
 * r = exp2(b2 - h2 t - logz2) with t = ||x'||^2 - 2 x'.mu' (xnt, lzt: the rows' norms and logz2);
 * nk += r, s2 += r (t + ||mu'||^2) (no clamp of the distance at 0: pass 1 has none either, and the M-step
 * floors the variance). cb, ch, cm: the two components' b2, h2, ||mu'||^2; c: lane % 4. A macro for
 * fused_acc: as an inline function (c a parameter or not) nvcc 13.0 emitted other code for
 * fused_acc<__half, FP16, 64> on sm_90; the expansion is the loop it had. */
#define TILE_RESPONSIBILITIES(NJ, st, rt, xnt, lzt, m2, cb, ch, cm, nk, s2, c)                     \
    _Pragma("unroll") for (int j_ = 0; j_ < (NJ); j_++) {                                          \
        const float2 xv_ = *(const float2*)((xnt) + j_ * 8 + 2 * (c));                             \
        const float2 lv_ = *(const float2*)((lzt) + j_ * 8 + 2 * (c));                             \
        _Pragma("unroll") for (int e_ = 0; e_ < 4; e_++) {                                         \
            const int h_ = e_ >> 1;                                                                \
            float t_ = fmaf((m2), (st)[j_][e_], e_ & 1 ? xv_.y : xv_.x); /* ||x'||^2 - 2 x'.mu' */ \
            float r_ = exp2f(fmaf(-(ch)[h_], t_, (cb)[h_]) - (e_ & 1 ? lv_.y : lv_.x));            \
            (nk)[h_] += r_;                                                                        \
            (s2)[h_] = fmaf(r_, t_ + (cm)[h_], (s2)[h_]);                                          \
            (rt)[j_][e_] = r_;                                                                     \
        }                                                                                          \
    }

/* TILE_RESPONSIBILITIES as a function, c from threadIdx.x: the warp-specialised pass 2's form (the macro
 * in its place gives fused_acc_ws<2, true> other code). */
template <int NJ>
__device__ __forceinline__ void tile_responsibilities(const float (&st)[NJ][4], float (&rt)[NJ][4], const float* xnt,
                                                      const float* lzt, float m2, const float (&cb)[2],
                                                      const float (&ch)[2], const float (&cm)[2], float (&nk)[2],
                                                      float (&s2)[2]) {
    const int c = threadIdx.x % 4;
    TILE_RESPONSIBILITIES(NJ, st, rt, xnt, lzt, m2, cb, ch, cm, nk, s2, c);
}

/* Pass 2's one write per block: quad-reduces this warp's per-component sums nk, s2 (components kw + g and
 * kw + g + 8) and adds them, and the R^T x accumulators acc (NH x 128 columns, scaled by inv_scale; s1 rows dp
 * wide), to the double outputs with atomics; components >= k and columns >= d are skipped. */
template <int NH>
__device__ __forceinline__ void flush_stats(float (&nk)[2], float (&s2)[2], const float (&acc)[NH][DP_MAX / 8][4],
                                            int kw, int k, int d, int dp, float inv_scale, double* __restrict__ nk_out,
                                            double* __restrict__ s1_out, double* __restrict__ s2_out) {
    const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        nk[h] += __shfl_xor_sync(0xffffffffu, nk[h], 1);
        nk[h] += __shfl_xor_sync(0xffffffffu, nk[h], 2);
        s2[h] += __shfl_xor_sync(0xffffffffu, s2[h], 1);
        s2[h] += __shfl_xor_sync(0xffffffffu, s2[h], 2);
        int kk = kw + g + 8 * h;
        if (c == 0 && kk < k) {
            atomicAdd(nk_out + kk, (double)nk[h]);
            atomicAdd(s2_out + kk, (double)s2[h]);
        }
    }
#pragma unroll
    for (int h = 0; h < NH; h++)
#pragma unroll
        for (int j = 0; j < DP_MAX / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int kk = kw + g + 8 * (e >> 1), col = h * DP_MAX + j * 8 + 2 * c + (e & 1);
                if (kk < k && col < d) atomicAdd(s1_out + (long long)kk * dp + col, (double)(acc[h][j][e] * inv_scale));
            }
}

/* Pass 2's row ranges per component tile (host side): *splits <= 0 asks for one wave of blocks, per_sm
 * on each SM, rounded down (a block more makes a second wave as long as the first: k = 4096 had 288
 * blocks for 264 places); at most one range per row tile. Returns the row tiles per range and sets
 * *splits to the ranges that hold them. */
static inline int row_ranges(int* splits, int ktiles, long long ntiles, int per_sm) {
    if (*splits <= 0) {
        int dev, sms;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        const int slots = sms * per_sm;
        *splits = slots >= ktiles ? slots / ktiles : 1;
    }
    if (*splits > ntiles) *splits = (int)ntiles;
    const int per = (int)((ntiles + *splits - 1) / *splits);
    *splits = (int)((ntiles + per - 1) / per);
    return per;
}

/* The dynamic smem base rounded up to 1024 B (panelled wgmma tiles need it; +1024 B is allocated). */
__device__ __forceinline__ unsigned char* smem_base(unsigned char* raw, bool wg) {
    if (!wg) return raw;
    uint32_t a = smem_u32(raw);
    return raw + (((a + 1023u) & ~1023u) - a);
}
#endif
