/* SPDX-License-Identifier: MIT */
/* estep_ws.cu: pass 2 of the fused E-step (fused_acc in estep_fused_acc.cu: N_k, sum r x', sum r ||x' - mu'||^2
 * from logz2) as a warp-specialised sm_90a kernel, for prepared fp16 rows 128 wide (dp = 128).
 *
 * A block = NCW consumer warpgroups (warps 0 .. 4 NCW - 1) and one producer warp (the last).
 *  - The producer's lane 0 loads the block's BK = 64 NCW components once, then the block's row tiles
 *    (64 rows: two 64 x 64 boxes of a tensor map with the 128-byte swizzle, i.e. the panelled layout
 *    of wgmma.cuh) into WS_NST stages with the copy engine (TMA), and their norms and logz2 with bulk
 *    copies. Each stage has a "full" mbarrier (the copies' bytes) and an "empty" one (one arrival per
 *    consumer warp when its warpgroup's MMAs have read the stage). No block barrier after the start:
 *    the warpgroups drift apart, up to WS_NST tiles, so one's GEMMs overlap another's exponentials.
 *  - Consumer warpgroup w owns components k0 + 64 w .. + 64 and does per tile what fused_acc's wgmma
 *    path does: S^T = mu' x'^T (m64n64, both operands in shared memory), the responsibilities in
 *    registers, acc (64 x 128) += R^T x' (m64n128, R from registers).
 *  - PIPE: each warpgroup also overlaps its own work (FlashAttention-3's intra-warpgroup pipeline):
 *    tile i - 1's R^T x GEMM is in flight while tile i's exponentials run (R kept in fp32 until the
 *    next tile packs it).
 * Rows past n are zeros from the copy engine with logz2 = +inf (responsibility 0); components past
 * kp have b2 = -1e30 (as padding). Extra memory: none beyond the two passes' (O(KD)).
 * Launched only where the device is sm_90 (m->wgmma) and dp = 128; elsewhere the caller runs fused_acc. */
#include <cudaTypedefs.h> /* PFN_cuTensorMapEncodeTiled */

#include "reduce.cuh"
#include "tma.cuh"

#define WS_BM 64                      /* rows per tile */
#define WS_DP 128                     /* prepared row width */
#define WS_NST 8                      /* row-tile stages (a power of two) */
#define WS_TILE_B (WS_BM * WS_DP * 2) /* bytes of a row tile: two 8 KB panels */
#define WS_AUX (2 * WS_BM)            /* floats per stage: norms, then logz2 */

template <int NCW>
static constexpr int ws_threads() {
    return NCW * 128 + 32;
}
/* dynamic shared memory of a block (+1024 for the alignment of the panelled tiles) */
template <int NCW>
static constexpr size_t ws_smem() {
    return 1024 + (size_t)NCW * 64 * WS_DP * 2 + (size_t)WS_NST * WS_TILE_B + (size_t)WS_NST * WS_AUX * sizeof(float);
}

/* One block per SM: 2 consumer warpgroups and the producer warp get up to 224 registers. (4 consumer
 * warpgroups, 544 threads at 120 registers, spilled 256 bytes and serialised their MMAs: not kept.) */
template <int NCW, bool PIPE>
__global__ void __launch_bounds__(NCW * 128 + 32, 1)
    fused_acc_ws(const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tmu, long long n,
                 fgmm_fused_model m, const float* __restrict__ logz2, int tiles_per_split, double* __restrict__ nk_out,
                 double* __restrict__ s1_out, double* __restrict__ s2_out) {
#if !FGMM_WGMMA
    __trap(); /* launched only on sm_90a (fgmm_fused_ws_ok) */
#else
    constexpr int BK = NCW * 64, MU_B = BK * WS_DP * 2;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t full[WS_NST], empty[WS_NST], mu_bar;
    unsigned char* ms = smem_base(smem_raw, true);  /* BK components: NCW panelled 64-row tiles of 16 KB */
    unsigned char* xs = ms + MU_B;                  /* WS_NST row tiles */
    float* aux = (float*)(xs + WS_NST * WS_TILE_B); /* per stage: WS_BM norms, WS_BM logz2 */

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int k0 = blockIdx.x * BK;
    const long long t_begin = (long long)blockIdx.y * tiles_per_split;
    const long long ntiles = (n + WS_BM - 1) / WS_BM;
    const int cnt = (int)max(0LL, min(ntiles, t_begin + tiles_per_split) - t_begin); /* this block's tiles */
    mbar_init_stages(full, empty, NCW * 4, &mu_bar);
    __syncthreads(); /* the only block barrier */
    if (cnt == 0) return;

    if (warp == NCW * 4) { /* ---- producer */
        if (lane != 0) return;
        mbar_expect_tx(&mu_bar, MU_B);
        for (int w = 0; w < NCW; w++)
            for (int p = 0; p < 2; p++)
                tma_load_2d(ms + w * WS_TILE_B + p * (WS_TILE_B / 2), &tmu, 64 * p, k0 + 64 * w, &mu_bar);
        for (int i = 0; i < cnt; i++) {
            const int s = i % WS_NST;
            mbar_wait(&empty[s], ((i / WS_NST) & 1) ^ 1); /* the consumers are done with tile i - WS_NST */
            const long long r0 = (t_begin + i) * WS_BM;
            const int valid = (int)min((long long)WS_BM, n - r0), v4 = valid & ~3;
            float *xn = aux + s * WS_AUX, *lz = xn + WS_BM;
            for (int r = v4; r < WS_BM; r++) { /* the last tile's tail: plain stores, before the arrival */
                xn[r] = r < valid ? m.xnorm[r0 + r] : 0.f;
                lz[r] = r < valid ? logz2[r0 + r] : INFINITY;
            }
            mbar_expect_tx(&full[s], WS_TILE_B + 2u * v4 * (uint32_t)sizeof(float));
            unsigned char* dst = xs + s * WS_TILE_B;
            tma_load_2d(dst, &tx, 0, (int)r0, &full[s]); /* rows past n arrive as zeros */
            tma_load_2d(dst + WS_TILE_B / 2, &tx, 64, (int)r0, &full[s]);
            if (v4) {
                bulk_load(xn, m.xnorm + r0, v4 * sizeof(float), &full[s]);
                bulk_load(lz, logz2 + r0, v4 * sizeof(float), &full[s]);
            }
        }
        return;
    }

    /* ---- consumers: warp w of warpgroup w / 4 holds components k0 + 16 w + g (+ 8) */
    const int g = lane / 4, wk = warp * 16;
    float cb[2], ch[2], cm[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int kk = k0 + wk + g + 8 * h;
        const bool in = kk < m.kp;
        cb[h] = in ? m.b2[kk] : -1e30f;
        ch[h] = in ? m.h2[kk] : 0.f;
        cm[h] = in ? m.mn[kk] : 0.f;
    }
    float acc[1][DP_MAX / 8][4];
#pragma unroll
    for (int j = 0; j < DP_MAX / 8; j++) acc[0][j][0] = acc[0][j][1] = acc[0][j][2] = acc[0][j][3] = 0.f;
    wg_fence_acc(acc[0]); /* the zeros before any MMA is issued (sunk later, they serialise them: C7515) */
    float nk[2] = {0.f, 0.f}, s2[2] = {0.f, 0.f};
    const float m2 = -2.f * m.inv_scale2;
    const uint32_t a_mu = smem_u32(ms) + (warp / 4) * WS_TILE_B, xs0 = smem_u32(xs);
    mbar_wait(&mu_bar, 0);

    auto wait_full = [&](int i) { mbar_wait(&full[i % WS_NST], (i / WS_NST) & 1); };
    /* this warp's MMAs on tile i are complete */
    auto release = [&](int i) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[i % WS_NST]);
    };
    /* S^T of tile i into st: issued and committed, not waited for */
    auto gemm1 = [&](float(&st)[WS_BM / 8][4], int i) {
        /* no wg_fence_acc(st) here: an asm that "defines" st while an earlier group is in flight makes
         * ptxas serialise every wgmma (C7515); the MMAs' own operands order them after st's last use */
        wg_fence();
        wg_gemm_mmas<64>(st, a_mu, xs0 + (i % WS_NST) * WS_TILE_B, WS_DP / 16);
        wg_commit();
    };
    /* tile i's responsibilities from st (complete) into rt; N_k and s2 sums */
    auto resp = [&](const float(&st)[WS_BM / 8][4], float(&rt)[WS_BM / 8][4], int i) {
        const float* xnt = aux + (i % WS_NST) * WS_AUX;
        tile_responsibilities<WS_BM / 8>(st, rt, xnt, xnt + WS_BM, m2, cb, ch, cm, nk, s2);
    };
    /* acc += R^T x' of tile i (R packed in ra), issued; the caller fences before and commits after */
    auto gemm2 = [&](const uint32_t(&ra)[WS_BM / 16][4], int i) {
        const uint64_t dx = wg_desc_mn(xs0 + (i % WS_NST) * WS_TILE_B);
#pragma unroll
        for (int q = 0; q < WS_BM / 16; q++) wg_mma_rs<128>(acc[0], ra[q], dx + q * 16 * 128 / 16);
    };
    auto pack = [&](uint32_t(&ra)[WS_BM / 16][4], const float(&rt)[WS_BM / 8][4]) {
#pragma unroll
        for (int q = 0; q < WS_BM / 16; q++) pack_a<true>(ra[q], rt[2 * q], rt[2 * q + 1]);
    };

    float st[WS_BM / 8][4], rt[WS_BM / 8][4];
    uint32_t ra[WS_BM / 16][4];
    if constexpr (!PIPE) {
        for (int i = 0; i < cnt; i++) {
            wait_full(i);
            gemm1(st, i);
            wg_wait0(); /* S^T, and the previous tile's R^T x */
            wg_fence_acc(st);
            if (i > 0) release(i - 1);
            resp(st, st, i); /* in place: nothing is in flight */
            pack(ra, st);
            wg_fence();
            gemm2(ra, i);
            wg_commit();
        }
    } else {
        /* FlashAttention-3's order: tile i's S^T and tile i - 1's R^T x are issued together, then the
         * wait for the older (S^T): tile i's exponentials run under tile i - 1's R^T x. Only completed
         * accumulators are read while a group is in flight (else ptxas serialises the MMAs: C7514). */
        wait_full(0);
        gemm1(st, 0);
        wg_wait0();
        wg_fence_acc(st);
        resp(st, rt, 0);
        for (int i = 1; i < cnt; i++) {
            pack(ra, rt);
            wait_full(i);
            wg_fence();
            wg_gemm_mmas<64>(st, a_mu, xs0 + (i % WS_NST) * WS_TILE_B, WS_DP / 16);
            wg_commit();
            gemm2(ra, i - 1);
            wg_commit();
            wg_wait<1>(); /* tile i's S^T; tile i - 1's R^T x in flight */
            wg_fence_acc(st);
            resp(st, rt, i);
            wg_wait0();
            release(i - 1);
        }
        pack(ra, rt);
        wg_fence();
        gemm2(ra, cnt - 1);
        wg_commit();
    }
    wg_wait0();
    wg_fence_acc(acc[0]);
    /* (the last tile's stage is not released: nothing waits for it) */
    flush_stats<1>(nk, s2, acc, k0 + wk, m.k, m.d, WS_DP, m.inv_scale, nk_out, s1_out, s2_out);
#endif
}

/* ------------------------------------------------------------------ pass 1 */

#define L1_NW 4                       /* consumer warpgroups: 64 rows each, 256 rows per block */
#define L1_BN 128                     /* components per tile */
#define L1_NST 4                      /* component-tile stages */
#define L1_TILE_B (L1_BN * WS_DP * 2) /* bytes of a component tile: two 16 KB panels of 128 rows */
#define L1_ROWS (64 * L1_NW)
/* dynamic shared memory: the block's rows, the stages' component tiles and [b2, h2], the rows' norms */
static constexpr size_t l1_smem() {
    return 1024 + (size_t)L1_NW * WS_TILE_B + (size_t)L1_NST * L1_TILE_B + (size_t)L1_NST * 2 * L1_BN * sizeof(float) +
           L1_ROWS * sizeof(float);
}

/* Pass 1 (fused_lse's wgmma path: logz2 per row, log-likelihood partials) warp-specialised: a block = 4 consumer
 * warpgroups of 64 rows (256 rows, loaded once) and a producer warp streaming the components in tiles of 128
 * (copy engine, L1_NST stages, full / empty mbarriers); per tile each warpgroup runs its m64n128 GEMM, releases
 * the stage once the log-densities have read b2 and h2, and updates its rows' online log-sum-exp. The same
 * arithmetic in the same order as fused_lse, so logz2 and the partials (one per 128 rows: warpgroups 0-1 and
 * 2-3, warps summed in order) are the same bits. */
__global__ void __launch_bounds__(L1_NW * 128 + 32, 1)
    fused_lse_ws(const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tmu, long long n,
                 fgmm_fused_model m, float* __restrict__ logz2, double* __restrict__ ll_part) {
#if !FGMM_WGMMA
    __trap(); /* launched only on sm_90a (fgmm_fused_ws_ok) */
#else
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t full[L1_NST], empty[L1_NST], x_bar;
    __shared__ double warp_ll[L1_NW * 4];
    unsigned char* xs = smem_base(smem_raw, true);  /* L1_NW panelled 64-row tiles */
    unsigned char* ms = xs + L1_NW * WS_TILE_B;     /* L1_NST component tiles */
    float* cst = (float*)(ms + L1_NST * L1_TILE_B); /* per stage: b2[L1_BN], h2[L1_BN] */
    float* xn = cst + L1_NST * 2 * L1_BN;           /* L1_ROWS norms */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nkt = m.kp / L1_BN;
    const long long row0 = (long long)blockIdx.x * L1_ROWS;
    mbar_init_stages(full, empty, L1_NW * 4, &x_bar);
    __syncthreads(); /* the only block barrier */

    if (warp == L1_NW * 4) { /* ---- producer */
        if (lane != 0) return;
        const int valid = (int)min((long long)L1_ROWS, n - row0), v4 = valid & ~3;
        for (int r = v4; r < L1_ROWS; r++) xn[r] = r < valid ? m.xnorm[row0 + r] : 0.f;
        mbar_expect_tx(&x_bar, L1_NW * WS_TILE_B + v4 * (uint32_t)sizeof(float));
        for (int w = 0; w < L1_NW; w++) /* boxes wholly past n arrive as zeros too */
            for (int p = 0; p < 2; p++)
                tma_load_2d(xs + w * WS_TILE_B + p * (WS_TILE_B / 2), &tx, 64 * p, (int)(row0 + 64 * w), &x_bar);
        if (v4) bulk_load(xn, m.xnorm + row0, v4 * sizeof(float), &x_bar);
        for (int kt = 0; kt < nkt; kt++) {
            const int s = kt % L1_NST;
            mbar_wait(&empty[s], ((kt / L1_NST) & 1) ^ 1);
            mbar_expect_tx(&full[s], L1_TILE_B + 2 * L1_BN * sizeof(float));
            for (int p = 0; p < 2; p++)
                tma_load_2d(ms + s * L1_TILE_B + p * (L1_TILE_B / 2), &tmu, 64 * p, kt * L1_BN, &full[s]);
            bulk_load(cst + s * 2 * L1_BN, m.b2 + kt * L1_BN, L1_BN * sizeof(float), &full[s]);
            bulk_load(cst + s * 2 * L1_BN + L1_BN, m.h2 + kt * L1_BN, L1_BN * sizeof(float), &full[s]);
        }
        return;
    }

    /* ---- consumers: warp w holds rows 16 w + g (+ 8) of the block */
    const int g = lane / 4, wr = warp * 16;
    mbar_wait(&x_bar, 0);
    const float xn0 = xn[wr + g], xn1 = xn[wr + g + 8];
    const float m2 = -2.f * m.inv_scale2;
    const uint32_t a_x = smem_u32(xs) + (warp / 4) * WS_TILE_B, ms0 = smem_u32(ms);
    float mx[2] = {-INFINITY, -INFINITY}, sm[2] = {0.f, 0.f};
    float acc[L1_BN / 8][4];
#pragma unroll
    for (int j = 0; j < L1_BN / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    for (int kt = 0; kt < nkt; kt++) {
        const int s = kt % L1_NST;
        mbar_wait(&full[s], (kt / L1_NST) & 1);
        wg_gemm<L1_BN>(acc, a_x, ms0 + s * L1_TILE_B, WS_DP / 16);
        float tmax[2];
        log_densities<L1_BN / 8>(acc, cst + s * 2 * L1_BN, m2, xn0, xn1, tmax);
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]); /* the MMAs and the constants' reads are done */
        lse_add_tile<L1_BN / 8>(acc, tmax, mx, sm);
    }
    const double part = lse_finish(mx, sm, lane % 4, row0 + wr + g, n, logz2);
    if (lane == 0) warp_ll[warp] = part;
    asm volatile("bar.sync 1, %0;\n" ::"n"(L1_NW * 128) : "memory"); /* the consumers only */
    if (threadIdx.x % 256 == 0) { /* one partial per 128 rows (fgmm_fused_lse_blocks), as fused_lse sums them */
        const int b = 2 * blockIdx.x + threadIdx.x / 256;
        double sum = 0;
        for (int w = 0; w < 8; w++) sum += warp_ll[(threadIdx.x / 256) * 8 + w];
        if ((long long)b * 128 < n) ll_part[b] = sum;
    }
#endif
}

/* ------------------------------------------------------------------ host side */

/* cuTensorMapEncodeTiled from the driver, looked up once (no libcuda link); NULL if the driver lacks it. */
static PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void* p = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess)
            p = NULL;
        cudaGetLastError();
        return (PFN_cuTensorMapEncodeTiled_v12000)p;
    }();
    return fn;
}

/* rows x WS_DP fp16 at base (16-byte aligned) read in boxes of 64 columns x box_rows with the 128-byte swizzle. */
static int tile_map(CUtensorMap* map, const void* base, long long rows, int box_rows = WS_BM) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = encode_fn();
    if (!enc || ((uintptr_t)base & 15) || rows < 1 || rows > INT32_MAX) return (int)cudaErrorNotSupported;
    const cuuint64_t dims[2] = {WS_DP, (cuuint64_t)rows}, strides[1] = {WS_DP * 2};
    const cuuint32_t box[2] = {64, (cuuint32_t)box_rows}, estr[2] = {1, 1};
    CUresult r = enc(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, (void*)base, dims, strides, box, estr,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

extern "C" int fgmm_fused_ws_ok(const fgmm_fused_model* m) {
    return m->wgmma && m->dp == WS_DP && m->kp % FGMM_FUSED_KTILE == 0 && m->xnorm && encode_fn() != NULL;
}

template <int NCW, bool PIPE>
static int launch_ws(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk, double* s1,
                     double* s2, int splits, cudaStream_t stream) {
    CUtensorMap tx, tmu;
    int rc;
    if ((rc = tile_map(&tx, x, n)) || (rc = tile_map(&tmu, m->mu_hi, m->kp))) return rc;
    constexpr int BK = NCW * 64;
    const int ktiles = (m->kp + BK - 1) / BK;
    const long long ntiles = (n + WS_BM - 1) / WS_BM;
    const int per = row_ranges(&splits, ktiles, ntiles, 1); /* one block per SM */
    const size_t sm = ws_smem<NCW>();
    cudaFuncSetAttribute(fused_acc_ws<NCW, PIPE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    fused_acc_ws<NCW, PIPE>
        <<<dim3(ktiles, splits), ws_threads<NCW>(), sm, stream>>>(tx, tmu, n, *m, logz2, per, nk, s1, s2);
    return (int)cudaGetLastError();
}

extern "C" int fgmm_fused_accumulate_ws(const void* x, long long n, const fgmm_fused_model* m, const float* logz2,
                                        double* nk, double* s1, double* s2, int variant, int splits,
                                        cudaStream_t stream) {
    if (!fgmm_fused_ws_ok(m) || ((uintptr_t)logz2 & 15) || ((uintptr_t)m->xnorm & 15))
        return (int)cudaErrorInvalidValue;
    if (n <= 0) return 0;
    switch (variant) {
    case FGMM_WS_PIPE2: return launch_ws<2, true>(x, n, m, logz2, nk, s1, s2, splits, stream);
    case FGMM_WS_PLAIN2: return launch_ws<2, false>(x, n, m, logz2, nk, s1, s2, splits, stream);
    default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int fgmm_fused_lse_ws(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                                 cudaStream_t stream) {
    if (!fgmm_fused_ws_ok(m) || ((uintptr_t)m->xnorm & 15)) return (int)cudaErrorInvalidValue;
    if (n <= 0) return 0;
    CUtensorMap tx, tmu;
    int rc;
    if ((rc = tile_map(&tx, x, n)) || (rc = tile_map(&tmu, m->mu_hi, m->kp, L1_BN))) return rc;
    const size_t sm = l1_smem();
    cudaFuncSetAttribute(fused_lse_ws, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    fused_lse_ws<<<(unsigned)((n + L1_ROWS - 1) / L1_ROWS), L1_NW * 128 + 32, sm, stream>>>(tx, tmu, n, *m, logz2,
                                                                                            ll_part);
    return (int)cudaGetLastError();
}
