/* SPDX-License-Identifier: MIT */
/* estep_ws.cu: pass 2 of the fused E-step (fused_acc in estep_fused.cu: N_k, sum r x', sum r ||x' - mu'||^2
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

#include "tma.cuh"

#define WS_BM 64                       /* rows per tile */
#define WS_DP 128                      /* prepared row width */
#define WS_NST 8                       /* row-tile stages (a power of two) */
#define WS_TILE_B (WS_BM * WS_DP * 2)  /* bytes of a row tile: two 8 KB panels */
#define WS_AUX (2 * WS_BM)             /* floats per stage: norms, then logz2 */

template <int NCW>
static constexpr int ws_threads() { return NCW * 128 + 32; }
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
    unsigned char* ms = smem_base(smem_raw, true); /* BK components: NCW panelled 64-row tiles of 16 KB */
    unsigned char* xs = ms + MU_B;                 /* WS_NST row tiles */
    float* aux = (float*)(xs + WS_NST * WS_TILE_B); /* per stage: WS_BM norms, WS_BM logz2 */

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int k0 = blockIdx.x * BK;
    const long long t_begin = (long long)blockIdx.y * tiles_per_split;
    const long long ntiles = (n + WS_BM - 1) / WS_BM;
    const int cnt = (int)max(0LL, min(ntiles, t_begin + tiles_per_split) - t_begin); /* this block's tiles */
    if (threadIdx.x == 0) {
        for (int s = 0; s < WS_NST; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], NCW * 4);
        }
        mbar_init(&mu_bar, 1);
        mbar_init_fence();
    }
    __syncthreads(); /* the only block barrier */
    if (cnt == 0) return;

    if (warp == NCW * 4) { /* ---- producer */
        if (lane != 0) return;
        mbar_expect_tx(&mu_bar, MU_B);
        for (int w = 0; w < NCW; w++)
            for (int p = 0; p < 2; p++) tma_load_2d(ms + w * WS_TILE_B + p * (WS_TILE_B / 2), &tmu, 64 * p, k0 + 64 * w, &mu_bar);
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
    auto release = [&](int i) { /* this warp's MMAs on tile i are complete */
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[i % WS_NST]);
    };
    /* S^T of tile i into st: issued and committed, not waited for */
    auto gemm1 = [&](float (&st)[WS_BM / 8][4], int i) {
        /* no wg_fence_acc(st) here: an asm that "defines" st while an earlier group is in flight makes
         * ptxas serialise every wgmma (C7515); the MMAs' own operands order them after st's last use */
        wg_fence();
        wg_gemm_mmas<64>(st, a_mu, xs0 + (i % WS_NST) * WS_TILE_B, WS_DP / 64);
        wg_commit();
    };
    /* tile i's responsibilities from st (complete) into rt; N_k and s2 sums */
    auto resp = [&](const float (&st)[WS_BM / 8][4], float (&rt)[WS_BM / 8][4], int i) {
        const float* xnt = aux + (i % WS_NST) * WS_AUX;
        tile_responsibilities<WS_BM / 8>(st, rt, xnt, xnt + WS_BM, m2, cb, ch, cm, nk, s2);
    };
    /* acc += R^T x' of tile i (R packed in ra), issued; the caller fences before and commits after */
    auto gemm2 = [&](const uint32_t (&ra)[WS_BM / 16][4], int i) {
        const uint64_t dx = wg_desc_mn(xs0 + (i % WS_NST) * WS_TILE_B);
#pragma unroll
        for (int q = 0; q < WS_BM / 16; q++) wg_mma_rs(acc[0], ra[q], dx + q * 16 * 128 / 16, 1);
    };
    auto pack = [&](uint32_t (&ra)[WS_BM / 16][4], const float (&rt)[WS_BM / 8][4]) {
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
            wg_gemm_mmas<64>(st, a_mu, xs0 + (i % WS_NST) * WS_TILE_B, WS_DP / 64);
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

/* ------------------------------------------------------------------ host side */

/* cuTensorMapEncodeTiled from the driver, looked up once (no libcuda link); NULL if the driver lacks it. */
static PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void* p = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess)
            p = NULL;
        cudaGetLastError();
        return (PFN_cuTensorMapEncodeTiled_v12000)p;
    }();
    return fn;
}

/* rows x WS_DP fp16 at base (16-byte aligned) read in 64 x 64 boxes with the 128-byte swizzle. */
static int tile_map(CUtensorMap* map, const void* base, long long rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = encode_fn();
    if (!enc || ((uintptr_t)base & 15) || rows < 1 || rows > INT32_MAX) return (int)cudaErrorNotSupported;
    const cuuint64_t dims[2] = {WS_DP, (cuuint64_t)rows}, strides[1] = {WS_DP * 2};
    const cuuint32_t box[2] = {64, WS_BM}, estr[2] = {1, 1};
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
    if (splits <= 0) { /* one block per SM */
        int dev, sms;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        splits = sms / ktiles > 0 ? sms / ktiles : 1;
    }
    if (splits > ntiles) splits = (int)ntiles;
    const int per = (int)((ntiles + splits - 1) / splits);
    splits = (int)((ntiles + per - 1) / per);
    const size_t sm = ws_smem<NCW>();
    cudaFuncSetAttribute(fused_acc_ws<NCW, PIPE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    fused_acc_ws<NCW, PIPE><<<dim3(ktiles, splits), ws_threads<NCW>(), sm, stream>>>(tx, tmu, n, *m, logz2, per, nk,
                                                                                      s1, s2);
    return (int)cudaGetLastError();
}

extern "C" int fgmm_fused_accumulate_ws(const void* x, long long n, const fgmm_fused_model* m, const float* logz2,
                                        double* nk, double* s1, double* s2, int variant, int splits,
                                        cudaStream_t stream) {
    if (!fgmm_fused_ws_ok(m) || ((uintptr_t)logz2 & 15) || ((uintptr_t)m->xnorm & 15)) return (int)cudaErrorInvalidValue;
    if (n <= 0) return 0;
    switch (variant) {
    case FGMM_WS_PIPE2: return launch_ws<2, true>(x, n, m, logz2, nk, s1, s2, splits, stream);
    case FGMM_WS_PLAIN2: return launch_ws<2, false>(x, n, m, logz2, nk, s1, s2, splits, stream);
    default: return (int)cudaErrorInvalidValue;
    }
}
