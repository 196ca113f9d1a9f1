/* SPDX-License-Identifier: MIT */
/* estep_fused.cuh: the fused GMM E-step (isotropic; diagonal on rows [x', x'^2], see fgmm_fused_model).
 * No N x K buffer exists. What its two passes (estep_fused_lse.cu, estep_fused_acc.cu) share: tile
 * sizes, the mma.sync fragments, row conversion, the wgmma choice and the dtype/mode dispatch. The
 * data around them (components split, rows prepared, sums shifted back): estep_fused.cu.
 *
 * Two launches (bf16 mma.sync m16n8k16, fp32 accumulation; sm_80 and later):
 *  Pass 1 (fused_lse): a block takes P1_BM = 128 rows (8 warps x 16), keeps
 *    their A fragments in registers, and streams all components in tiles of
 *    P1_BN = 64 through shared memory (cp.async, two stages). Log-densities
 *    are b2 - h2 (||x||^2 - 2 x.mu), two FMAs; an online log-sum-exp (log2
 *    domain) gives logz2 per row. Traffic: x once, mu once per block (from L2).
 *  Pass 2 (fused_acc): a block owns FGMM_FUSED_KTILE = 128 components (8 warps
 *    x 16, their A fragments in registers) and a contiguous range of row tiles
 *    of P2_BM = 64. Per tile it computes S^T = mu x^T, turns it into
 *    responsibilities in registers (exp2(logp - logz2)), and feeds them
 *    straight back as the A operand of acc += R^T x (the C->A fragment layouts
 *    coincide). The 128 x d accumulator stays in registers over all row tiles
 *    and is written once per block with double atomics: k*d*splits atomics per
 *    E-step instead of one per row tile.
 * Flops: 6 n k d (2 in pass 1, 4 in pass 2); exact mode triples the bf16 mma
 * work (hi*hi + hi*lo + lo*hi). Extra memory: logz2 (n floats) + O(k d).
 * On sm_90a, prepared fp16 rows of width WDP = 64, 128 or 256 (a template argument) run the same
 * passes on wgmma (wgmma.cuh); 256 serves diagonal covariance's rows [x', x'^2], with two 128-column
 * pass-2 accumulators per thread and one block per SM.
 */
#ifndef FGMM_ESTEP_FUSED_CUH
#define FGMM_ESTEP_FUSED_CUH
#include "fused_tiles.cuh"
#include "reduce.cuh"

#define P1_BM 128
#define P1_BN 64
/* pass-1 components per tile: wgmma takes 128 (m64n128: half the barriers and row reductions) */
#define P1_BN_OF(WG) ((WG) ? 128 : P1_BN)
/* pass-2 rows per tile: 64 keeps the S^T tile at 32 registers so two blocks fit on an SM */
#define P2_BM_OF(MODE) 64
/* pass-2 row-tile stages: prepared rows are plain copies, NST - 1 tiles in flight; raw rows
 * go through one staging buffer and a conversion */
#define P2_STAGES(PREP) ((PREP) ? 3 : 1)
#define P2_BN FGMM_FUSED_KTILE

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
template <bool F16>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if (F16)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* c0, c1 (two n8 tiles) += A B for one 16x16 A fragment and one pair of B fragments; EXACT adds
 * hi*lo + lo*hi (3 products per term). bl / al are read only when EXACT. */
template <bool F16, bool EXACT>
__device__ __forceinline__ void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&ah)[4],
                                         const uint32_t (&al)[4], const uint32_t (&bh)[4], const uint32_t (&bl)[4]) {
    mma<F16>(c0, ah, bh[0], bh[1]);
    mma<F16>(c1, ah, bh[2], bh[3]);
    if (EXACT) {
        mma<F16>(c0, ah, bl[0], bl[1]);
        mma<F16>(c1, ah, bl[2], bl[3]);
        mma<F16>(c0, al, bh[0], bh[1]);
        mma<F16>(c1, al, bh[2], bh[3]);
    }
}

/* One k-step (16 of the dp columns) of acc[2*NP] += A B^T for one warp: A = 16 rows, fragments
 * ah (al = low parts); B = 16*NP rows stored row-major in smem ([n][k], row stride SROW), bh (bl =
 * low parts). EXACT adds hi*lo + lo*hi (3 products per term). */
template <bool F16, bool EXACT, int NP>
__device__ __forceinline__ void mma_abt(float (&acc)[2 * NP][4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                        const bf16* bh, const bf16* bl, int ks, int lane) {
#pragma unroll
    for (int np = 0; np < NP; np++) {
        uint32_t b[4], blo[4];
        const int boff = (np * 16 + lane % 8 + (lane / 16) * 8) * SROW + ks * 16 + ((lane / 8) % 2) * 8;
        ldsm_x4(b, bh + boff);
        if (EXACT) ldsm_x4(blo, bl + boff);
        mma_pair<F16, EXACT>(acc[2 * np], acc[2 * np + 1], ah, al, b, blo);
    }
}

/* Converts `rows` rows of src (row stride d; global or shared memory) into smem bf16 (hi, and
 * lo = x - hi when EXACT), centred by shift, zero-padded to dp columns and past `valid` rows;
 * xn[r] = ||x'||^2 in fp32. ROWS*TPR = NTHREADS: TPR threads per row, each a contiguous run
 * of dp/TPR columns loaded 4 at a time where aligned (independent loads, one latency). */
template <typename T, int MODE, int ROWS>
__device__ __forceinline__ void convert_rows(const T* src, int valid, int d, int dp, const float* shift, float scale,
                                             bf16* hi, bf16* lo, float* xn) {
    constexpr bool EXACT = MODE == FGMM_FUSED_EXACT, F16 = MODE == FGMM_FUSED_FP16;
    constexpr int TPR = NTHREADS / ROWS;
    const int r = threadIdx.x / TPR, part = threadIdx.x % TPR, seg = dp / TPR, c0 = part * seg;
    const T* row = src + (long long)r * d;
    const bool vec = (d % 4) == 0;
    float ss = 0;
#pragma unroll 4
    for (int c = c0; c < c0 + seg; c += 4) {
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        if (r < valid) {
            if (vec && c + 4 <= d) {
                if (sizeof(T) == 4) {
                    float4 q = *(const float4*)(row + c);
                    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
                } else {
                    uchar4 q = *(const uchar4*)(row + c);
                    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
                }
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (c + e < d) v[e] = (float)row[c + e];
            }
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float xv = (r < valid && c + e < d) ? v[e] - shift[c + e] : 0.f;
            ss = fmaf(xv, xv, ss);
            v[e] = xv * scale;
        }
        uint32_t h01 = Elt<F16>::pack(v[0], v[1]), h23 = Elt<F16>::pack(v[2], v[3]);
        *(uint32_t*)(hi + r * SROW + c) = h01;
        *(uint32_t*)(hi + r * SROW + c + 2) = h23;
        if (EXACT) {
            float2 f01 = Elt<F16>::unpack(h01), f23 = Elt<F16>::unpack(h23);
            *(uint32_t*)(lo + r * SROW + c) = Elt<F16>::pack(v[0] - f01.x, v[1] - f01.y);
            *(uint32_t*)(lo + r * SROW + c + 2) = Elt<F16>::pack(v[2] - f23.x, v[3] - f23.y);
        }
    }
#pragma unroll
    for (int o = 1; o < TPR; o <<= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (part == 0) xn[r] = ss;
}

/* The wgmma variant: prepared rows with dp 64, 128 or 256 (a template argument; 256 only there), where
 * the caller allows it (sm_90). */
static inline int wgmma_ok(const fgmm_fused_model* m) {
    return m->wgmma && (m->dp == 64 || m->dp == 128 || m->dp == 256);
}

/* The k16 steps of the prepared rows that hold data: the columns past d are zeros in both operands. */
static inline int wg_ksteps(const fgmm_fused_model* m) { return (m->d + 15) / 16; }

/* return F<T, MODE, WDP, KS>(...) for the prepared rows' width m->dp (64, 128, 256: wgmma_ok) with the
 * fewest instantiated k-steps KS >= wg_ksteps(m) (KS left out: all of WDP's): at dp = 64 d <= 32 (GloVe's
 * 25) runs 2 of the 4 and d <= 48 3; at dp = 128 d <= 96 (Deep1B's 96; the diagonal rows of d = 48) 6 of 8
 * and d <= 112 (GloVe's 100) 7; at dp = 256 d <= 192 (the diagonal rows of d = 96) 12 of 16. The sums are
 * the same bits. */
#define WG_DISPATCH(F, m, ...)                                                              \
    do {                                                                                    \
        const int ks_ = wg_ksteps(m);                                                       \
        if ((m)->dp == 64)                                                                  \
            return ks_ <= 2   ? F<T, MODE, 64, 2>(__VA_ARGS__)                              \
                   : ks_ <= 3 ? F<T, MODE, 64, 3>(__VA_ARGS__)                              \
                              : F<T, MODE, 64>(__VA_ARGS__);                                \
        if ((m)->dp == 128)                                                                 \
            return ks_ <= 6   ? F<T, MODE, 128, 6>(__VA_ARGS__)                             \
                   : ks_ <= 7 ? F<T, MODE, 128, 7>(__VA_ARGS__)                             \
                              : F<T, MODE, 128>(__VA_ARGS__);                               \
        return ks_ <= 12 ? F<T, MODE, 256, 12>(__VA_ARGS__) : F<T, MODE, 256>(__VA_ARGS__); \
    } while (0)

/* The passes' wgmma instantiations (WG) are compiled for every architecture but launched only on sm_90a
 * (wgmma_ok); elsewhere their body is a trap. */
#if FGMM_WGMMA
#define WGMMA_ONLY(WG) (void)0
#else
#define WGMMA_ONLY(WG)  \
    if constexpr (WG) { \
        __trap();       \
        return;         \
    }
#endif

/* dtype 0 float, 1 uint8, FGMM_FUSED_PREPARED fp16 rows (fp16 mode only) */
#define DISPATCH(F, ...)                                                                            \
    switch (mode * 3 + dtype) {                                                                     \
    case 3 * FGMM_FUSED_BF16: return F<float, FGMM_FUSED_BF16>(__VA_ARGS__);                        \
    case 3 * FGMM_FUSED_BF16 + 1: return F<uint8_t, FGMM_FUSED_BF16>(__VA_ARGS__);                  \
    case 3 * FGMM_FUSED_EXACT: return F<float, FGMM_FUSED_EXACT>(__VA_ARGS__);                      \
    case 3 * FGMM_FUSED_EXACT + 1: return F<uint8_t, FGMM_FUSED_EXACT>(__VA_ARGS__);                \
    case 3 * FGMM_FUSED_FP16: return F<float, FGMM_FUSED_FP16>(__VA_ARGS__);                        \
    case 3 * FGMM_FUSED_FP16 + 1: return F<uint8_t, FGMM_FUSED_FP16>(__VA_ARGS__);                  \
    case 3 * FGMM_FUSED_FP16 + FGMM_FUSED_PREPARED: return F<__half, FGMM_FUSED_FP16>(__VA_ARGS__); \
    default: return (int)cudaErrorInvalidValue;                                                     \
    }

#endif
