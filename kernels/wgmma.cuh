/* SPDX-License-Identifier: MIT */
/* wgmma.cuh: the Hopper warpgroup MMA (sm_90a) pieces of the fused E-step.
 *
 * Operands are tiles of 64 (or 128) rows of fp16, K-major (dp contiguous), in shared memory as
 * 128-byte-swizzled panels: panel p holds columns [64 p, 64 p + 64) of all the tile's rows, row r at
 * byte 128 r, its 16-byte chunk c at chunk position c ^ (r % 8) (CUTLASS's Swizzle<3,4,3>); panels
 * are 8 (or 16) KB, 1024-aligned.
 * FGMM_WGMMA is 1 only where the code is compiled for sm_90a; elsewhere callers keep mma.sync. */
#ifndef FGMM_WGMMA_CUH
#define FGMM_WGMMA_CUH
#include <stdint.h>

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FGMM_WGMMA 1
#else
#define FGMM_WGMMA 0
#endif

#define WG_PANEL_BYTES 8192 /* 64 rows x 128 B */

/* Byte offset of 16-byte chunk c (8 fp16 columns) of row r in panelled tiles of TR rows (64 or 128;
 * panels of TR * 128 B), tiles one after another, dp columns. */
template <int TR>
__device__ __forceinline__ uint32_t wg_off(int r, int c, int dp) {
    const int t = r / TR, rr = r % TR;
    return (uint32_t)(t * (dp / 64) * TR * 128 + (c >> 3) * TR * 128 + rr * 128 + (((c & 7) ^ (rr & 7)) << 4));
}

/* Shared-memory matrix descriptor: 128B swizzle (mode 1, bits 62-63), stride 1024 B between 8-row
 * groups (SBO, bits 32-45, in 16 B units), LBO unused for swizzled K-major (1). */
__device__ __forceinline__ uint64_t wg_desc(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

#if FGMM_WGMMA
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
/* Generic-proxy smem writes (st.shared, cp.async) become visible to wgmma's async proxy. */
__device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* The accumulator operands of n8 block j of d, and of blocks 0 .. J - 1 (WG_ACC_J) */
#define WG_ACC8(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define WG_ACC_4(d) WG_ACC8(d, 0), WG_ACC8(d, 1), WG_ACC8(d, 2), WG_ACC8(d, 3)
#define WG_ACC_6(d) WG_ACC_4(d), WG_ACC8(d, 4), WG_ACC8(d, 5)
#define WG_ACC_8(d) WG_ACC_6(d), WG_ACC8(d, 6), WG_ACC8(d, 7)
#define WG_ACC_12(d) WG_ACC_8(d), WG_ACC8(d, 8), WG_ACC8(d, 9), WG_ACC8(d, 10), WG_ACC8(d, 11)
#define WG_ACC_14(d) WG_ACC_12(d), WG_ACC8(d, 12), WG_ACC8(d, 13)
#define WG_ACC_16(d) WG_ACC_14(d), WG_ACC8(d, 14), WG_ACC8(d, 15)

/* d (64 x 64 per warpgroup, fp32; the mma.sync C layout per warp and n8 block: d[j][e]) =
 * (acc ? d : 0) + A B^T for one k16 step, A and B given by descriptors. */
__device__ __forceinline__ void wg_mma_64x64(float (&d)[8][4], uint64_t da, uint64_t db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC_8(d)
        : "l"(da), "l"(db), "r"(acc));
}

/* Descriptor of a K x N operand stored N-major (the panelled row tile read as B = x with K = rows):
 * LBO (bits 16-29) = 8 KB between 64-column panels, SBO = 1024 B between 8-row groups. */
__device__ __forceinline__ uint64_t wg_desc_mn(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)(WG_PANEL_BYTES >> 4) << 16) |
           ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

/* The %-lists of an m64nN accumulator's N / 2 registers (WG_R16 .. WG_R64: N = 32 .. 128) */
#define WG_R16 "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
#define WG_R24 WG_R16 ",%16,%17,%18,%19,%20,%21,%22,%23"
#define WG_R32 WG_R24 ",%24,%25,%26,%27,%28,%29,%30,%31"
#define WG_R48 WG_R32 ",%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47"
#define WG_R56 WG_R48 ",%48,%49,%50,%51,%52,%53,%54,%55"
#define WG_R64 WG_R56 ",%56,%57,%58,%59,%60,%61,%62,%63"
/* One m64nNk16 wgmma with A from registers (a[4], numbered A4 after the N / 2 accumulators REGS) and B by
 * the descriptor db (numbered DB); the accumulator operands follow. */
#define WG_RS(N, REGS, A4, DB, ...)                                                                             \
    asm volatile(                                                                                               \
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                                              \
        "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.f16.f16 {" REGS "}, {" A4 "}, " DB ", p, 1, 1, 1;\n}\n" \
        : __VA_ARGS__                                                                                           \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db))
/* d (64 x N per warpgroup, N = 32, 48, 64, 96, 112 or 128 columns of d; d[j][e] as above) += A B for one k16
 * step: A from registers (the mma.sync m16n8k16 A fragment of this warp's 16 rows), B (16 x N) N-major in
 * smem (N short of the panelled rows' width: the first N columns, the rest being zero padding). */
template <int N>
__device__ __forceinline__ void wg_mma_rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t db) {
    static_assert(N == 32 || N == 48 || N == 64 || N == 96 || N == 112 || N == 128, "the widths written below");
    if constexpr (N == 128) WG_RS(128, WG_R64, "%64,%65,%66,%67", "%68", WG_ACC_16(d));
    else if constexpr (N == 112) WG_RS(112, WG_R56, "%56,%57,%58,%59", "%60", WG_ACC_14(d));
    else if constexpr (N == 96) WG_RS(96, WG_R48, "%48,%49,%50,%51", "%52", WG_ACC_12(d));
    else if constexpr (N == 64) WG_RS(64, WG_R32, "%32,%33,%34,%35", "%36", WG_ACC_8(d));
    else if constexpr (N == 48) WG_RS(48, WG_R24, "%24,%25,%26,%27", "%28", WG_ACC_6(d));
    else WG_RS(32, WG_R16, "%16,%17,%18,%19", "%20", WG_ACC_4(d));
}

/* d (64 x 8) = (acc ? d : 0) + A B for one k16 step: A read transposed (M-major, wg_desc_mn), B an
 * 8-row K-major operand (wg_desc: one 8-row swizzle atom per 64 k). */
__device__ __forceinline__ void wg_mma_t_64x8(float (&d)[4], uint64_t da, uint64_t db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(acc));
}

/* Pins the accumulators in program order around the async MMA (reads after the wait stay after). */
template <int J>
__device__ __forceinline__ void wg_fence_acc(float (&d)[J][4]) {
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[j][e])::"memory");
}

/* As wg_fence_acc for one m64n8 accumulator (4 floats per thread). */
__device__ __forceinline__ void wg_fence_acc1(float (&d)[4]) {
#pragma unroll
    for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[e])::"memory");
}

/* As wg_mma_64x64 with N = 128: B is a 128-row operand whose panels hold all 128 rows (16 KB).
 * TRANS = 1 reads both operands transposed instead: A (64 x 16) M-major and B (16 x 128) N-major, each
 * by a wg_desc_mn descriptor (the one-pass E-step's R^T x, R stored row by row). */
template <int TRANS = 0>
__device__ __forceinline__ void wg_mma_64x128(float (&d)[16][4], uint64_t da, uint64_t db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"
        "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,"
        "%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, %67, %67;\n}\n"
        : WG_ACC_16(d)
        : "l"(da), "l"(db), "r"(acc), "n"(TRANS));
}

/* d = A B^T over the first ksteps k16 steps (4 per 64-column panel; callers leave out the steps over the
 * padding past the data's d, zeros in both operands): A = a 64-row, B = an N-row panelled tile (N = 64 or
 * 128) at smem addresses a, b: the MMAs only (the caller fences before and commits after). */
template <int N>
__device__ __forceinline__ void wg_gemm_mmas(float (&d)[N / 8][4], uint32_t a, uint32_t b, int ksteps) {
    /* one descriptor per operand; a k-step adds its byte offset / 16 to the address field (smem
     * addresses stay under 256 KB, so the 14-bit field never carries) */
    const uint64_t da = wg_desc(a), db = wg_desc(b);
#pragma unroll
    for (int ks = 0; ks < 16; ks++) { /* up to 4 panels: dp 256 */
        if (ks >= ksteps) break;
        const uint32_t ka = (uint32_t)((ks >> 2) * WG_PANEL_BYTES + (ks & 3) * 32) >> 4,
                       kb = (uint32_t)((ks >> 2) * N * 128 + (ks & 3) * 32) >> 4;
        if constexpr (N == 128) wg_mma_64x128(d, da + ka, db + kb, ks > 0);
        else wg_mma_64x64(d, da + ka, db + kb, ks > 0);
    }
}

/* wg_gemm_mmas as one committed group; d is final after a wait and wg_fence_acc. */
template <int N>
__device__ __forceinline__ void wg_gemm_issue(float (&d)[N / 8][4], uint32_t a, uint32_t b, int ksteps) {
    wg_fence_acc(d);
    wg_fence();
    wg_gemm_mmas<N>(d, a, b, ksteps);
    wg_commit();
}

/* wg_gemm_issue, then waits (the warpgroup's d is final on return). */
template <int N>
__device__ __forceinline__ void wg_gemm(float (&d)[N / 8][4], uint32_t a, uint32_t b, int ksteps) {
    wg_gemm_issue<N>(d, a, b, ksteps);
    wg_wait0();
    wg_fence_acc(d);
}
/* Waits until at most N committed groups are pending. */
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
#endif
#endif
