/* SPDX-License-Identifier: MIT */
/* estep_fused.cu: the fused GMM E-step (isotropic; diagonal on rows [x', x'^2], see
 * fgmm_fused_model). No N x K buffer exists.
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

/* ------------------------------------------------------------------ pass 1 */

/* WG: the Hopper variant (prepared fp16 rows, dp a multiple of 64, sm_90a): the distance GEMM runs on
 * wgmma (m64n128, 128 components per tile) from panelled smem tiles instead of ldmatrix + mma.sync;
 * the rest is the same code. */
template <typename T, int MODE, int WDP>
__global__ void __launch_bounds__(NTHREADS, MODE == FGMM_FUSED_EXACT ? 1 : 2)
    fused_lse(const T* __restrict__ x, long long n, fgmm_fused_model m, float* __restrict__ logz2,
              double* __restrict__ ll_part) {
    constexpr bool EXACT = MODE == FGMM_FUSED_EXACT, F16 = MODE == FGMM_FUSED_FP16, PREP = sizeof(T) == 2;
    constexpr bool WG = WDP != 0;    /* wgmma, rows WDP wide (a compile-time dp) */
    constexpr int BN = P1_BN_OF(WG); /* components per tile */
#if !FGMM_WGMMA
    if constexpr (WG) {
        __trap();
        return;
    } /* launched only on sm_90a (see wgmma_ok) */
#endif
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int XROWS = TILE_ELEMS(P1_BM, WDP);           /* 16-bit elements of the row tile */
    constexpr int MROWS = TILE_ELEMS(BN, WDP);              /* of one component tile */
    bf16* xs = (bf16*)smem_base(smem_raw, WG);              /* P1_BM x SROW, or panelled */
    bf16* xl = xs + XROWS;                                  /* EXACT only */
    bf16* ms = xs + (EXACT ? 2 : 1) * XROWS;                /* [2 stages][hi, lo] component tiles */
    float* xn = (float*)(ms + 2 * (EXACT ? 2 : 1) * MROWS); /* P1_BM */
    float* cst = xn + P1_BM;                                /* [2 stages][b2, h2] x BN */
    float* shs = cst + 4 * BN;                              /* DP_MAX: shift */
    __shared__ double warp_ll[NTHREADS / 32];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const int dp = WG ? WDP : m.dp, nks = dp / 16, nkt = m.kp / BN;
    const long long row0 = (long long)blockIdx.x * P1_BM;
    const int mstage = (EXACT ? 2 : 1) * MROWS;

    auto issue_tile = [&](int kt) {
        bf16* dst = ms + (kt & 1) * mstage;
        stage_mu_async<BN, WDP, BN>((const bf16*)m.mu_hi, dp, kt * BN, dst); /* one BN-row operand */
        if (EXACT) stage_mu_async<BN>((const bf16*)m.mu_lo, dp, kt * BN, dst + MROWS);
        /* the tile's b2, h2: async too (plain loads stalled the loading warps for an L2 round trip
         * while the others waited at the next barrier) */
        float* cs = cst + (kt & 1) * 2 * BN;
        constexpr int CH = BN / 4; /* 16-byte chunks per array */
        if (threadIdx.x < 2 * CH) {
            const int i = threadIdx.x;
            cp_async16(cs + i * 4, i < CH ? m.b2 + kt * BN + i * 4 : m.h2 + kt * BN + (i - CH) * 4);
        }
    };
    issue_tile(0);
    const int valid = (int)min((long long)P1_BM, n - row0);
    if constexpr (PREP) {
        load_prepared<P1_BM, WDP>((const __half*)x + row0 * dp, valid, dp, m.xnorm + row0, NULL, xs, xn, NULL);
        cp_async_wait_all();
#if FGMM_WGMMA
        if (WG) wg_proxy_fence(); /* the tiles are read by wgmma (async proxy) */
#endif
    } else {
        for (int i = threadIdx.x; i < dp; i += NTHREADS) shs[i] = m.shift[i];
        __syncthreads();
        convert_rows<T, MODE, P1_BM>(x + row0 * m.d, valid, m.d, dp, shs, m.scale, xs, xl, xn);
    }
    __syncthreads();

    /* This warp's 16 rows as A fragments, all k-steps, kept in registers (wgmma reads them from smem). */
    uint32_t ah[KS_MAX][4], al[KS_MAX][4];
    const int wr = warp * 16;
#pragma unroll
    for (int ks = 0; ks < KS_MAX; ks++)
        if (ks < nks && !WG) {
            ldsm_x4(ah[ks], xs + (wr + lane % 16) * SROW + ks * 16 + (lane / 16) * 8);
            if (EXACT) ldsm_x4(al[ks], xl + (wr + lane % 16) * SROW + ks * 16 + (lane / 16) * 8);
        }
    const float xn0 = xn[wr + g], xn1 = xn[wr + g + 8];
    const float m2 = -2.f * m.inv_scale2; /* products of prescaled operands */
    float mx[2] = {-INFINITY, -INFINITY}, sm[2] = {0.f, 0.f};
    float acc[BN / 8][4]; /* wgmma overwrites it (its first k-step ignores the old value: no zeroing per tile) */
#pragma unroll
    for (int j = 0; j < BN / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

    for (int kt = 0; kt < nkt; kt++) {
        cp_async_wait_all();
#if FGMM_WGMMA
        if (WG) wg_proxy_fence();
#endif
        __syncthreads(); /* tile kt landed; everyone is done with tile kt-1's buffer */
        if (kt + 1 < nkt) issue_tile(kt + 1);
        asm volatile("cp.async.commit_group;\n" ::);
        const bf16* mh = ms + (kt & 1) * mstage;
        const float* cs = cst + (kt & 1) * 2 * BN;
        if (!WG)
#pragma unroll
            for (int j = 0; j < BN / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
        if constexpr (WG) { /* this warpgroup's 64 rows x the tile's 128 components */
#if FGMM_WGMMA
            wg_gemm<BN>(acc, smem_u32(xs) + (warp / 4) * (dp / 64) * WG_PANEL_BYTES, smem_u32(mh), dp / 64);
#endif
        } else {
#pragma unroll
            for (int ks = 0; ks < KS_MAX; ks++) {
                if (ks >= nks) break;
                mma_abt<F16, EXACT, BN / 16>(acc, ah[ks], al[ks], mh, mh + MROWS, ks, lane);
            }
        }
        /* log2 densities b2 - h2 (||x'||^2 - 2 x'.mu'), then the online log-sum-exp of rows g and g+8. */
        float tmax[2];
        log_densities<BN / 8>(acc, cs, m2, xn0, xn1, tmax);
        lse_add_tile<BN / 8>(acc, tmax, mx, sm);
    }
    const double part = lse_finish(mx, sm, row0 + wr + g, n, logz2);
    if (lane == 0) warp_ll[warp] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int w = 0; w < NTHREADS / 32; w++) s += warp_ll[w];
        ll_part[blockIdx.x] = s;
    }
}

/* ------------------------------------------------------------------ pass 2 */

template <typename T, int MODE, int WDP>
__global__ void __launch_bounds__(NTHREADS, MODE == FGMM_FUSED_EXACT || WDP > DP_MAX ? 1 : 2)
    fused_acc(const T* __restrict__ x, long long n, fgmm_fused_model m, const float* __restrict__ logz2,
              int tiles_per_split, double* __restrict__ nk_out, double* __restrict__ s1_out,
              double* __restrict__ s2_out) {
    constexpr bool EXACT = MODE == FGMM_FUSED_EXACT, F16 = MODE == FGMM_FUSED_FP16, PREP = sizeof(T) == 2;
    constexpr int P2_BM = P2_BM_OF(MODE), NST = P2_STAGES(PREP);
    constexpr bool WG = WDP != 0; /* wgmma, rows WDP wide (a compile-time dp) */
#if !FGMM_WGMMA
    if constexpr (WG) {
        __trap();
        return;
    } /* launched only on sm_90a (see wgmma_ok) */
#endif
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int XROWS = TILE_ELEMS(P2_BM, WDP);       /* 16-bit elements of a row tile */
    constexpr int MROWS = TILE_ELEMS(P2_BN, WDP);       /* of the component tile */
    bf16* xs = (bf16*)smem_base(smem_raw, WG);          /* NST row tiles (panelled if WG) */
    bf16* xl = xs + NST * XROWS;                        /* EXACT only */
    bf16* ms = xl + (EXACT ? XROWS : 0);                /* [hi, lo] component tiles, used once */
    float* xn = (float*)(ms + (EXACT ? 2 : 1) * MROWS); /* NST x P2_BM */
    float* lz = xn + NST * P2_BM;                       /* NST x P2_BM */
    float* shs = lz + NST * P2_BM;                      /* DP_MAX */
    T* raw = (T*)(shs + DP_MAX);                        /* raw input: P2_BM x d, the next tile as stored */

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const int dp = WG ? WDP : m.dp, nks = dp / 16;
    /* WDP = 256 (diagonal covariance's rows [x', x'^2]): two accumulators of 128 columns (shared
     * memory holds one block per SM there, so registers are not the limit) */
    constexpr int NH = WDP > DP_MAX ? 2 : 1;
    const int k0 = blockIdx.x * P2_BN, wk = warp * 16; /* this warp's components: k0+wk .. +16 */
    const long long t_begin = (long long)blockIdx.y * tiles_per_split;
    const long long ntiles = (n + P2_BM - 1) / P2_BM;
    const long long t_end = min(ntiles, t_begin + tiles_per_split);
    if (t_begin >= t_end) return;

    const int tile_elems = P2_BM * m.d, tile_bytes = tile_elems * (int)sizeof(T);
    /* full tiles go through cp.async (P2_BM * d * sizeof(T) is a multiple of 64 B); the last, partial one is read directly */
    auto prefetch = [&](long long t) {
        if ((t + 1) * P2_BM <= n) copy_async(raw, x + t * P2_BM * m.d, tile_bytes);
        asm volatile("cp.async.commit_group;\n" ::);
    };
    /* prepared rows: tile t goes to stage (t - t_begin) % NST, NST - 1 tiles ahead of the math */
    auto issue = [&](long long t, int s) {
        if (t < t_end) {
            const long long r0 = t * P2_BM;
            load_prepared<P2_BM, WDP>((const __half*)x + r0 * dp, (int)min((long long)P2_BM, n - r0), dp, m.xnorm + r0,
                                      logz2 + r0, xs + s * XROWS, xn + s * P2_BM, lz + s * P2_BM);
        }
        asm volatile("cp.async.commit_group;\n" ::);
    };
    stage_mu_async<P2_BN, WDP>((const bf16*)m.mu_hi, dp, k0, ms);
    if (EXACT) stage_mu_async<P2_BN>((const bf16*)m.mu_lo, dp, k0, ms + MROWS);
    if constexpr (PREP) {
#pragma unroll
        for (int i = 0; i < NST - 1; i++) issue(t_begin + i, i); /* the first group also holds the means */
    } else {
        prefetch(t_begin);
        for (int i = threadIdx.x; i < dp; i += NTHREADS) shs[i] = m.shift[i];
        cp_async_wait_all();
        __syncthreads();
    }
    /* this warp's 16 components stay in smem (ms); their A fragments are re-read per k-step,
     * which frees 32 registers for a second block per SM */
    const bf16* am = ms + (wk + lane % 16) * SROW + (lane / 16) * 8;
    float cb[2], ch[2], cm[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int kk = k0 + wk + g + 8 * h;
        cb[h] = m.b2[kk];
        ch[h] = m.h2[kk];
        cm[h] = m.mn[kk];
    }
    float acc[NH][DP_MAX / 8][4];
#pragma unroll
    for (int h = 0; h < NH; h++)
#pragma unroll
        for (int j = 0; j < DP_MAX / 8; j++) acc[h][j][0] = acc[h][j][1] = acc[h][j][2] = acc[h][j][3] = 0.f;
    const float m2 = -2.f * m.inv_scale2;
    float nk[2] = {0.f, 0.f}, s2[2] = {0.f, 0.f};
    float st[P2_BM / 8][4]; /* S^T, then R^T: wgmma overwrites it (no zeroing per tile), mma.sync adds */
#pragma unroll
    for (int j = 0; j < P2_BM / 8; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;

    int stage = 0; /* (t - t_begin) % NST */
    for (long long t = t_begin; t < t_end; t++, stage = stage + 1 == NST ? 0 : stage + 1) {
        const long long row0 = t * P2_BM;
        const bf16* xt = xs; /* this tile's operands, norms and logz2 */
        const float *xnt = xn, *lzt = lz;
        if constexpr (PREP) {
            asm volatile("cp.async.wait_group %0;\n" ::"n"(NST - 2));
#if FGMM_WGMMA
            if (WG) wg_proxy_fence(); /* the tiles are read by wgmma (async proxy) */
#endif
            __syncthreads(); /* tile t landed; the stage written next was last read for tile t - 1 */
            issue(t + NST - 1, stage == 0 ? NST - 1 : stage - 1);
            xt = xs + stage * XROWS;
            xnt = xn + stage * P2_BM;
            lzt = lz + stage * P2_BM;
        } else {
            cp_async_wait_all();
            __syncthreads(); /* tile t landed; the previous tile's smem reads are done */
            if (row0 + P2_BM <= n) convert_rows<T, MODE, P2_BM>(raw, P2_BM, m.d, dp, shs, m.scale, xs, xl, xn);
            else convert_rows<T, MODE, P2_BM>(x + row0 * m.d, (int)(n - row0), m.d, dp, shs, m.scale, xs, xl, xn);
            for (int i = threadIdx.x; i < P2_BM; i += NTHREADS)
                lz[i] = row0 + i < n ? logz2[row0 + i] : INFINITY; /* r = exp2(-inf) = 0 past n */
            __syncthreads();
            if (t + 1 < t_end) prefetch(t + 1); /* raw is free again; the copy overlaps this tile's math */
        }

        /* S^T (16 components x 64 rows per warp) = mu x^T */
        if (!WG)
#pragma unroll
            for (int j = 0; j < P2_BM / 8; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;
        if constexpr (WG) { /* this warpgroup's 64 components x the tile's 64 rows */
#if FGMM_WGMMA
            wg_gemm<64>(st, smem_u32(ms) + (warp / 4) * (dp / 64) * WG_PANEL_BYTES, smem_u32(xt), dp / 64);
#endif
        } else {
#pragma unroll
            for (int ks = 0; ks < KS_MAX; ks++) {
                if (ks >= nks) break;
                uint32_t ah[4], al[4];
                ldsm_x4(ah, am + ks * 16);
                if (EXACT) ldsm_x4(al, am + MROWS + ks * 16);
                mma_abt<F16, EXACT, P2_BM / 16>(st, ah, al, xt, xl, ks, lane);
            }
        }
        /* responsibilities, N_k and sum r ||x - mu||^2, in place */
        tile_responsibilities<P2_BM / 8>(st, st, xnt, lzt, m2, cb, ch, cm, nk, s2);
        /* acc += R^T x: the C fragments of S^T are the A fragments of R^T (for mma.sync and for wgmma
         * with A in registers, whose B is then the row tile read N-major). */
        if constexpr (WG) {
#if FGMM_WGMMA
            /* all A fragments first, one fence, then the MMAs back to back (packing between them made
             * ptxas insert a warpgroup.arrive before each) */
            uint32_t ra[P2_BM / 16][4];
#pragma unroll
            for (int s = 0; s < P2_BM / 16; s++) pack_a<F16>(ra[s], st[2 * s], st[2 * s + 1]);
#pragma unroll
            for (int h = 0; h < NH; h++) wg_fence_acc(acc[h]);
            wg_fence();
#pragma unroll
            for (int h = 0; h < NH; h++) {
                /* + 16 rows (2 KB) per k-step, as in wg_gemm; accumulator h from panel 2 h */
                const uint64_t dx = wg_desc_mn(smem_u32(xt) + h * 2 * WG_PANEL_BYTES);
#pragma unroll
                for (int s = 0; s < P2_BM / 16; s++) wg_mma_rs(acc[h], ra[s], dx + s * 16 * 128 / 16, WDP >= 128);
            }
            wg_commit();
            wg_wait0(); /* done before the next barrier: the stage is then refilled */
#pragma unroll
            for (int h = 0; h < NH; h++) wg_fence_acc(acc[h]);
#endif
        } else {
#pragma unroll
            for (int s = 0; s < P2_BM / 16; s++) {
                uint32_t ra[4], rl[4];
                pack_a<F16>(ra, st[2 * s], st[2 * s + 1]);
                if (EXACT) {
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        float2 f = Elt<F16>::unpack(ra[q]);
                        int jj = 2 * s + (q >> 1), e0 = (q & 1) * 2;
                        rl[q] = Elt<F16>::pack(st[jj][e0] - f.x, st[jj][e0 + 1] - f.y);
                    }
                }
#pragma unroll
                for (int np = 0; np < DP_MAX / 16; np++) {
                    if (np * 16 >= dp) break;
                    uint32_t b[4], bl[4];
                    const int boff = (s * 16 + lane % 8 + ((lane / 8) % 2) * 8) * SROW + np * 16 + (lane / 16) * 8;
                    ldsm_x4_t(b, xt + boff);
                    if (EXACT) ldsm_x4_t(bl, xl + boff);
                    mma_pair<F16, EXACT>(acc[0][2 * np], acc[0][2 * np + 1], ra, rl, b, bl);
                }
            }
        }
    }
    /* One write per block: quad-reduce the per-component sums, then double atomics. */
    flush_stats<NH>(nk, s2, acc, k0 + wk, m.k, m.d, dp, m.inv_scale, nk_out, s1_out, s2_out);
}

/* ------------------------------------------------------------------ wrappers */

__global__ void split_mu(const float* mu, bf16* hi, bf16* lo, long long count, float scale, int f16) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float v = mu[i] * scale;
        if (f16) {
            ((__half*)hi)[i] = __float2half_rn(v);
            lo[i] = __float2bfloat16_rn(0.f);
        } else {
            bf16 h = __float2bfloat16_rn(v);
            hi[i] = h;
            lo[i] = __float2bfloat16_rn(v - __bfloat162float(h));
        }
    }
}

extern "C" int fgmm_fused_split(const float* mu, void* hi, void* lo, long long count, float scale, int mode,
                                cudaStream_t stream) {
    split_mu<<<256, 256, 0, stream>>>(mu, (bf16*)hi, (bf16*)lo, count, scale, mode == FGMM_FUSED_FP16);
    return (int)cudaGetLastError();
}

extern "C" int fgmm_fused_lse_blocks(long long n) { return (int)((n + P1_BM - 1) / P1_BM); }

/* Dynamic smem of the kernels (mirrors their carve-up; wgmma tiles add 1024 B for alignment). */
static size_t lse_smem(int exact, int wdp) {
    int f = exact ? 2 : 1, wg = wdp != 0;
    return (size_t)(f * TILE_ELEMS(P1_BM, wdp) + 2 * f * TILE_ELEMS(P1_BN_OF(wg), wdp)) * sizeof(bf16) +
           (P1_BM + 4 * P1_BN_OF(wg) + DP_MAX) * sizeof(float) + (wg ? 1024 : 0);
}
static size_t acc_smem(int mode, int d, int esz, int wdp) {
    int exact = mode == FGMM_FUSED_EXACT, f = exact ? 2 : 1, P2_BM = P2_BM_OF(mode), prep = esz == 2,
        nst = P2_STAGES(prep);
    return (size_t)((nst + f - 1) * TILE_ELEMS(P2_BM, wdp) + f * TILE_ELEMS(P2_BN, wdp)) * sizeof(bf16) +
           (2 * nst * P2_BM + DP_MAX) * sizeof(float) + (prep ? 0 : (size_t)P2_BM * d * esz) + (wdp ? 1024 : 0);
}

/* The wgmma variant: prepared rows with dp 64, 128 or 256 (a template argument; 256 only there), where
 * the caller allows it (sm_90). */
static int wgmma_ok(const fgmm_fused_model* m) { return m->wgmma && (m->dp == 64 || m->dp == 128 || m->dp == 256); }

template <typename T, int MODE, int WDP>
static int launch_lse_k(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                        cudaStream_t stream) {
    size_t sm = lse_smem(MODE == FGMM_FUSED_EXACT, WDP);
    cudaFuncSetAttribute(fused_lse<T, MODE, WDP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    fused_lse<T, MODE, WDP><<<fgmm_fused_lse_blocks(n), NTHREADS, sm, stream>>>((const T*)x, n, *m, logz2, ll_part);
    return (int)cudaGetLastError();
}
template <typename T, int MODE>
static int launch_lse(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                      cudaStream_t stream) {
    if constexpr (sizeof(T) == 2)
        if (wgmma_ok(m))
            return m->dp == 64    ? launch_lse_k<T, MODE, 64>(x, n, m, logz2, ll_part, stream)
                   : m->dp == 128 ? launch_lse_k<T, MODE, 128>(x, n, m, logz2, ll_part, stream)
                                  : launch_lse_k<T, MODE, 256>(x, n, m, logz2, ll_part, stream);
    return launch_lse_k<T, MODE, 0>(x, n, m, logz2, ll_part, stream);
}

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

extern "C" int fgmm_fused_lse(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode, float* logz2,
                              double* ll_part, cudaStream_t stream) {
    if ((m->dp > DP_MAX && !(dtype == FGMM_FUSED_PREPARED && wgmma_ok(m))) || m->dp % 16 || m->kp % P2_BN)
        return (int)cudaErrorInvalidValue;
    DISPATCH(launch_lse, x, n, m, logz2, ll_part, stream)
}

template <typename T, int MODE, int WDP>
static int launch_acc_k(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk,
                        double* s1, double* s2, int splits, cudaStream_t stream) {
    constexpr int P2_BM = P2_BM_OF(MODE);
    size_t sm = acc_smem(MODE, m->d, (int)sizeof(T), WDP);
    cudaFuncSetAttribute(fused_acc<T, MODE, WDP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    long long ntiles = (n + P2_BM - 1) / P2_BM;
    int ktiles = m->kp / P2_BN;
    if (splits <= 0) {
        int dev, sms;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        /* about two waves of blocks; each block then runs many row tiles */
        splits = (2 * sms + ktiles - 1) / ktiles;
    }
    if (splits > ntiles) splits = (int)ntiles;
    int per = (int)((ntiles + splits - 1) / splits);
    splits = (int)((ntiles + per - 1) / per);
    dim3 grid(ktiles, splits); /* component tiles vary fastest: blocks sharing rows run together (L2 reuse) */
    fused_acc<T, MODE, WDP><<<grid, NTHREADS, sm, stream>>>((const T*)x, n, *m, logz2, per, nk, s1, s2);
    return (int)cudaGetLastError();
}
template <typename T, int MODE>
static int launch_acc(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk, double* s1,
                      double* s2, int splits, cudaStream_t stream) {
    if constexpr (sizeof(T) == 2)
        if (wgmma_ok(m))
            return m->dp == 64    ? launch_acc_k<T, MODE, 64>(x, n, m, logz2, nk, s1, s2, splits, stream)
                   : m->dp == 128 ? launch_acc_k<T, MODE, 128>(x, n, m, logz2, nk, s1, s2, splits, stream)
                                  : launch_acc_k<T, MODE, 256>(x, n, m, logz2, nk, s1, s2, splits, stream);
    return launch_acc_k<T, MODE, 0>(x, n, m, logz2, nk, s1, s2, splits, stream);
}

extern "C" int fgmm_fused_accumulate(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode,
                                     const float* logz2, double* nk, double* s1, double* s2, int splits,
                                     cudaStream_t stream) {
    if ((m->dp > DP_MAX && !(dtype == FGMM_FUSED_PREPARED && wgmma_ok(m))) || m->dp % 16 || m->kp % P2_BN)
        return (int)cudaErrorInvalidValue;
    DISPATCH(launch_acc, x, n, m, logz2, nk, s1, s2, splits, stream)
}

/* One warp per row: out = fp16((x - shift) * scale), dp wide (zero padding); xn = ||x - shift||^2 in fp32.
 * scale2 > 0 (diagonal covariance): out = fp16([(x - shift) * scale, (x - shift)^2 * scale2]) (2d <= dp)
 * and xn = 0 (the kernels' log-density is then b2 + h2 * x_aug.mu_aug; see fgmm_fused_model). */
template <typename T>
__global__ void prepare_rows(const T* __restrict__ x, long long n, int d, int dp, const float* __restrict__ shift,
                             float scale, float scale2, __half* __restrict__ out, float* __restrict__ xn) {
    const int lane = threadIdx.x % 32;
    const long long nw = (long long)gridDim.x * blockDim.x / 32;
    for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; i < n; i += nw) {
        float ss = 0.f;
        for (int c = lane; c < dp; c += 32) {
            const int j = c < d ? c : c - d; /* source column (the squares' half: c - d) */
            float v = c < d || (scale2 > 0.f && c < 2 * d) ? (float)x[i * d + j] - shift[j] : 0.f;
            ss = fmaf(v, v, ss);
            out[i * dp + c] = __float2half_rn(scale2 > 0.f && c >= d ? v * v * scale2 : v * scale);
        }
        ss = warp_sum(ss);
        if (lane == 0) xn[i] = scale2 > 0.f ? 0.f : ss;
    }
}

extern "C" int fgmm_fused_prepare(const void* x, int dtype, long long n, int d, int dp, const float* shift, float scale,
                                  float scale2, void* out, float* xn, cudaStream_t stream) {
    if (n <= 0) return 0;
    long long blocks = (n + 7) / 8;
    int grid = (int)(blocks < 4096 ? blocks : 4096);
    if (dtype == 1)
        prepare_rows<<<grid, 256, 0, stream>>>((const uint8_t*)x, n, d, dp, shift, scale, scale2, (__half*)out, xn);
    else prepare_rows<<<grid, 256, 0, stream>>>((const float*)x, n, d, dp, shift, scale, scale2, (__half*)out, xn);
    return (int)cudaGetLastError();
}

__global__ void unshift_s1(const double* __restrict__ nk, double* __restrict__ s1, const float* __restrict__ shift,
                           int k, int dp) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)k * dp;
         i += (long long)gridDim.x * blockDim.x)
        s1[i] += nk[i / dp] * (double)shift[i % dp];
}

extern "C" int fgmm_fused_unshift(const double* nk, double* s1, const float* shift, int k, int dp,
                                  cudaStream_t stream) {
    unshift_s1<<<256, 256, 0, stream>>>(nk, s1, shift, k, dp);
    return (int)cudaGetLastError();
}

/* Diagonal: s1 row q holds [sum r x' scale, sum r x'^2 scale2] (x' = x - shift); in place, s1[q][j] =
 * sum r x_j and s2[q][j] (k x d, overwritten) = sum r x_j^2. */
__global__ void unshift_diag(const double* __restrict__ nk, double* __restrict__ s1, double* __restrict__ s2,
                             const float* __restrict__ shift, int k, int d, int dp, double inv_scale,
                             double inv_scale2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)k * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long q = i / d;
        const int j = (int)(i - q * d);
        const double sx = s1[q * dp + j] * inv_scale, sxx = s1[q * dp + d + j] * inv_scale2, m = shift[j];
        s1[q * dp + j] = sx + nk[q] * m;
        s2[i] = sxx + 2.0 * m * sx + nk[q] * m * m;
    }
}

extern "C" int fgmm_fused_unshift_diag(const double* nk, double* s1, double* s2, const float* shift, int k, int d,
                                       int dp, double scale, double scale2, cudaStream_t stream) {
    unshift_diag<<<256, 256, 0, stream>>>(nk, s1, s2, shift, k, d, dp, 1.0 / scale, 1.0 / scale2);
    return (int)cudaGetLastError();
}
