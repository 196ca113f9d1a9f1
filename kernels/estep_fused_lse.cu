/* SPDX-License-Identifier: MIT */
/* estep_fused_lse.cu: pass 1 of the fused E-step (fused_lse: logz2 per row and the log-likelihood's
 * partial sums) and its launch; the design is in estep_fused.cuh. */
#include "estep_fused.cuh"

/* WG: the Hopper variant (prepared fp16 rows, dp a multiple of 64, sm_90a): the distance GEMM runs on
 * wgmma (m64n128, 128 components per tile) from panelled smem tiles instead of ldmatrix + mma.sync;
 * the rest is the same code. */
template <typename T, int MODE, int WDP, int KS = WDP / 16>
__global__ void __launch_bounds__(NTHREADS, MODE == FGMM_FUSED_EXACT ? 1 : 2)
    fused_lse(const T* __restrict__ x, long long n, fgmm_fused_model m, float* __restrict__ logz2,
              double* __restrict__ ll_part) {
    constexpr bool EXACT = MODE == FGMM_FUSED_EXACT, F16 = MODE == FGMM_FUSED_FP16, PREP = sizeof(T) == 2;
    constexpr bool WG = WDP != 0;    /* wgmma, rows WDP wide (a compile-time dp) */
    constexpr int BN = P1_BN_OF(WG); /* components per tile */
    WGMMA_ONLY(WG);
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

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
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
            wg_gemm<BN>(acc, smem_u32(xs) + (warp / 4) * (dp / 64) * WG_PANEL_BYTES, smem_u32(mh), KS);
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
    const double part = lse_finish(mx, sm, c, row0 + wr + g, n, logz2);
    if (lane == 0) warp_ll[warp] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int w = 0; w < NTHREADS / 32; w++) s += warp_ll[w];
        ll_part[blockIdx.x] = s;
    }
}

extern "C" int fgmm_fused_lse_blocks(long long n) { return (int)((n + P1_BM - 1) / P1_BM); }

/* Dynamic smem of the kernel (mirrors its carve-up; wgmma tiles add 1024 B for alignment). */
static size_t lse_smem(int exact, int wdp) {
    int f = exact ? 2 : 1, wg = wdp != 0;
    return (size_t)(f * TILE_ELEMS(P1_BM, wdp) + 2 * f * TILE_ELEMS(P1_BN_OF(wg), wdp)) * sizeof(bf16) +
           (P1_BM + 4 * P1_BN_OF(wg) + DP_MAX) * sizeof(float) + (wg ? 1024 : 0);
}

template <typename T, int MODE, int WDP, int KS = WDP / 16>
static int launch_lse_k(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                        cudaStream_t stream) {
    size_t sm = lse_smem(MODE == FGMM_FUSED_EXACT, WDP);
    cudaFuncSetAttribute(fused_lse<T, MODE, WDP, KS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    fused_lse<T, MODE, WDP, KS><<<fgmm_fused_lse_blocks(n), NTHREADS, sm, stream>>>((const T*)x, n, *m, logz2, ll_part);
    return (int)cudaGetLastError();
}
template <typename T, int MODE>
static int launch_lse(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                      cudaStream_t stream) {
    if constexpr (sizeof(T) == 2)
        if (wgmma_ok(m)) WG_DISPATCH(launch_lse_k, m, x, n, m, logz2, ll_part, stream);
    return launch_lse_k<T, MODE, 0>(x, n, m, logz2, ll_part, stream);
}

extern "C" int fgmm_fused_lse(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode, float* logz2,
                              double* ll_part, cudaStream_t stream) {
    if ((m->dp > DP_MAX && !(dtype == FGMM_FUSED_PREPARED && wgmma_ok(m))) || m->dp % 16 || m->kp % P2_BN)
        return (int)cudaErrorInvalidValue;
    DISPATCH(launch_lse, x, n, m, logz2, ll_part, stream)
}
