/* SPDX-License-Identifier: MIT */
/* estep_fused_acc.cu: pass 2 of the fused E-step (fused_acc: nk, s1 and s2 from the responsibilities)
 * and its launch; the design is in estep_fused.cuh. */
#include "estep_fused.cuh"

template <typename T, int MODE, int WDP, int KS = WDP / 16>
__global__ void __launch_bounds__(NTHREADS, MODE == FGMM_FUSED_EXACT || WDP > DP_MAX ? 1 : 2)
    fused_acc(const T* __restrict__ x, long long n, fgmm_fused_model m, const float* __restrict__ logz2,
              int tiles_per_split, double* __restrict__ nk_out, double* __restrict__ s1_out,
              double* __restrict__ s2_out) {
    constexpr bool EXACT = MODE == FGMM_FUSED_EXACT, F16 = MODE == FGMM_FUSED_FP16, PREP = sizeof(T) == 2;
    constexpr int P2_BM = P2_BM_OF(MODE), NST = P2_STAGES(PREP);
    constexpr bool WG = WDP != 0; /* wgmma, rows WDP wide (a compile-time dp) */
    WGMMA_ONLY(WG);
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

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
    const int dp = WG ? WDP : m.dp, nks = dp / 16;
    /* WDP = 256 (diagonal covariance's rows [x', x'^2]): two accumulators of 128 columns (shared
     * memory holds one block per SM there, so registers are not the limit) */
    constexpr int NH = WDP > DP_MAX ? 2 : 1;
    /* R^T x's widths (accumulators 0 and 1): the columns up to 16 KS (the k-steps' data), 128 at most each */
    constexpr int RSN0 = 16 * KS < 128 ? 16 * KS : 128, RSN1 = 16 * KS - 128;
    static_assert(NH == 1 || RSN1 >= 32, "the second accumulator's width");
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
            wg_gemm<64>(st, smem_u32(ms) + (warp / 4) * (dp / 64) * WG_PANEL_BYTES, smem_u32(xt), KS);
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
        TILE_RESPONSIBILITIES(P2_BM / 8, st, st, xnt, lzt, m2, cb, ch, cm, nk, s2, c);
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
            /* + 16 rows (2 KB) per k-step, as in wg_gemm; accumulator h from panel 2 h */
            const uint64_t dx = wg_desc_mn(smem_u32(xt));
#pragma unroll
            for (int s = 0; s < P2_BM / 16; s++) wg_mma_rs<RSN0>(acc[0], ra[s], dx + s * 16 * 128 / 16);
            if constexpr (NH == 2) {
                const uint64_t dx1 = wg_desc_mn(smem_u32(xt) + 2 * WG_PANEL_BYTES);
#pragma unroll
                for (int s = 0; s < P2_BM / 16; s++) wg_mma_rs<RSN1>(acc[1], ra[s], dx1 + s * 16 * 128 / 16);
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

/* Dynamic smem of the kernel (mirrors its carve-up; wgmma tiles add 1024 B for alignment). */
static size_t acc_smem(int mode, int d, int esz, int wdp) {
    int exact = mode == FGMM_FUSED_EXACT, f = exact ? 2 : 1, P2_BM = P2_BM_OF(mode), prep = esz == 2,
        nst = P2_STAGES(prep);
    return (size_t)((nst + f - 1) * TILE_ELEMS(P2_BM, wdp) + f * TILE_ELEMS(P2_BN, wdp)) * sizeof(bf16) +
           (2 * nst * P2_BM + DP_MAX) * sizeof(float) + (prep ? 0 : (size_t)P2_BM * d * esz) + (wdp ? 1024 : 0);
}

template <typename T, int MODE, int WDP, int KS = WDP / 16>
static int launch_acc_k(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk,
                        double* s1, double* s2, int splits, cudaStream_t stream) {
    constexpr int P2_BM = P2_BM_OF(MODE);
    size_t sm = acc_smem(MODE, m->d, (int)sizeof(T), WDP);
    cudaFuncSetAttribute(fused_acc<T, MODE, WDP, KS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    long long ntiles = (n + P2_BM - 1) / P2_BM;
    int ktiles = m->kp / P2_BN;
    int per_sm = 1; /* blocks that run at once on an SM, each over many row tiles */
    if (splits <= 0 &&
        (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fused_acc<T, MODE, WDP, KS>, NTHREADS, sm) ||
         per_sm < 1)) {
        cudaGetLastError();
        per_sm = 1;
    }
    const int per = row_ranges(&splits, ktiles, ntiles, per_sm);
    dim3 grid(ktiles, splits); /* component tiles vary fastest: blocks sharing rows run together (L2 reuse) */
    fused_acc<T, MODE, WDP, KS><<<grid, NTHREADS, sm, stream>>>((const T*)x, n, *m, logz2, per, nk, s1, s2);
    return (int)cudaGetLastError();
}
template <typename T, int MODE>
static int launch_acc(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk, double* s1,
                      double* s2, int splits, cudaStream_t stream) {
    if constexpr (sizeof(T) == 2)
        if (wgmma_ok(m)) WG_DISPATCH(launch_acc_k, m, x, n, m, logz2, nk, s1, s2, splits, stream);
    return launch_acc_k<T, MODE, 0>(x, n, m, logz2, nk, s1, s2, splits, stream);
}

extern "C" int fgmm_fused_accumulate(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode,
                                     const float* logz2, double* nk, double* s1, double* s2, int splits,
                                     cudaStream_t stream) {
    if ((m->dp > DP_MAX && !(dtype == FGMM_FUSED_PREPARED && wgmma_ok(m))) || m->dp % 16 || m->kp % P2_BN)
        return (int)cudaErrorInvalidValue;
    DISPATCH(launch_acc, x, n, m, logz2, nk, s1, s2, splits, stream)
}
