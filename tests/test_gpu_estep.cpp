/* SPDX-License-Identifier: MIT */
// GPU E-step: agreement with the float64 reference on every path (fused, prepared, one-pass,
// cuBLAS), streaming = in-memory, any data scale; top-m assignment against the CPU.
#include "gpu_common.h"

using namespace fgt;

TEST(GpuEstep, FusedMatchesFloat64Random) {
    REQUIRE_GPU();
    // k not a multiple of 128, d not a multiple of 16, n not a multiple of any tile
    int64_t n = 20011;
    int d = 100, k = 200;
    auto x = planted(n, d, k, 0.6, 71);  // overlapping clusters: many responsibilities matter
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.2, 72);
    auto ref = ref_estep(m, n, x.data());
    expect_close(run_estep(m, gpu_params(k, FGMM_PREC_FAST), n, FGMM_F32, x.data()), ref, kFastTol, "fast");
    expect_close(run_estep(m, gpu_params(k, FGMM_PREC_EXACT), n, FGMM_F32, x.data()), ref, kExactTol, "exact");
    fgmm_model_free(m);
}

TEST(GpuEstep, FusedMatchesFloat64OnRealSift) {
    REQUIRE_GPU();
    FgmmVecs v;
    std::string f = embedded("sift10K_byte.h5");
    ASSERT_EQ(fgmm_vecs_read(f.c_str(), "dataset", 0, &v), 0) << fgmm_get_last_error();
    std::vector<float> xf((size_t)v.n * v.d);
    for (size_t i = 0; i < xf.size(); i++) xf[i] = ((uint8_t*)v.data)[i];
    int k = 256;
    FgmmModel* m = model_from_rows(xf.data(), v.n, v.d, k, FGMM_COV_ISOTROPIC, 450.0, 73);
    auto ref = ref_estep(m, v.n, (const uint8_t*)v.data);
    expect_close(run_estep(m, gpu_params(k, FGMM_PREC_FAST), v.n, FGMM_U8, v.data), ref, kFastTol, "fast u8");
    expect_close(run_estep(m, gpu_params(k, FGMM_PREC_EXACT), v.n, FGMM_U8, v.data), ref, kExactTol, "exact u8");
    expect_close(run_estep(m, gpu_params(k, FGMM_PREC_EXACT), v.n, FGMM_F32, xf.data()), ref, kExactTol, "exact f32");
    fgmm_model_free(m);
    // diagonal covariance on the same real data: fast (the fused kernels on rows [x, x^2] where the GPU
    // has wgmma, 2d = 256; else cuBLAS), exact (cuBLAS fp32)
    FgmmModel* md = model_from_rows(xf.data(), v.n, v.d, 64, FGMM_COV_DIAGONAL, 450.0, 74);
    auto refd = ref_estep(md, v.n, (const uint8_t*)v.data);
    expect_close(run_estep(md, gpu_params(64, FGMM_PREC_FAST), v.n, FGMM_U8, v.data), refd, kFastTol, "diag u8");
    expect_close(run_estep(md, gpu_params(64, FGMM_PREC_EXACT), v.n, FGMM_U8, v.data), refd, kBlasTol, "diag u8 exact");
    fgmm_model_free(md);
    fgmm_vecs_free(&v);
}

TEST(GpuEstep, BlasPathDiagonalAndLargeD) {
    REQUIRE_GPU();
    int64_t n = 5003;
    for (int d : {20, 300}) {  // 300 > FGMM_FUSED_MAX_D: the cuBLAS path for isotropic too
        for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
            int k = 37;
            auto x = planted(n, d, k, 0.5, 80 + d);
            FgmmModel* m = model_from_rows(x.data(), n, d, k, cov, 1.0, 81);
            auto ref = ref_estep(m, n, x.data());
            // fast: fused (diagonal too, on rows [x, x^2], where 2d <= FGMM_FUSED_MAX_D); exact: cuBLAS
            // fp32 for diagonal covariance and for d > FGMM_FUSED_MAX_D
            expect_close(run_estep(m, gpu_params(k, FGMM_PREC_FAST), n, FGMM_F32, x.data()), ref,
                         d > 128 ? kBlasTol : kFastTol, "fast");
            if (cov == FGMM_COV_DIAGONAL || d > 128)
                expect_close(run_estep(m, gpu_params(k, FGMM_PREC_EXACT), n, FGMM_F32, x.data()), ref, kBlasTol,
                             "exact (blas)");
            fgmm_model_free(m);
        }
    }
}

#ifdef FGMM_WITH_CUDA
TEST(GpuEstep, FusedDiagonalMatchesFloat64) {
    REQUIRE_GPU();
    // Diagonal covariance on the fused kernels: prepared rows [x - mean, (x - mean)^2], 2d wide
    // (d = 64: 128 columns; d = 20: padded; d = 128 and 96: 256 columns, wgmma only, the pass-2
    // accumulator in two column halves), k and n off every tile, wgmma and mma.sync; against float64
    // with the fast bound, and the cuBLAS path with its own.
    int64_t n = 20011;
    int k = 150;
    for (int d : {64, 20, 128, 96}) {
        auto x = planted(n, d, k, 0.6, 300 + d);
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_DIAGONAL, 1.2, 301);
        auto ref = ref_estep(m, n, x.data());
        std::string dd = " d " + std::to_string(d);
        expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data()), ref, kFastTol,
                     ("fused diagonal" + dd).c_str());
        if (d <= 64) {
            expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED_MMA, 0, n, FGMM_F32, x.data()), ref, kFastTol,
                         ("fused diagonal, mma.sync" + dd).c_str());
            expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data(), 1), ref, kFastTol,
                         ("fused diagonal, one pass (at d 64)" + dd).c_str());
        }
        expect_close(engine_estep(m, FGMM_GPU_PATH_BLAS, 0, n, FGMM_F32, x.data()), ref, kBlasTol,
                     ("blas diagonal" + dd).c_str());
        fgmm_model_free(m);
    }
    // real data, uint8 and float: the first 64 dimensions of FLANN's SIFT rows (all 128: the test above);
    // k = 128 and 2d = 128 take the one-pass kernel by default on sm_90
    FgmmVecs v;
    std::string f = embedded("sift10K_byte.h5");
    ASSERT_EQ(fgmm_vecs_read(f.c_str(), "dataset", 0, &v), 0) << fgmm_get_last_error();
    const int d = 64;
    std::vector<uint8_t> xb((size_t)v.n * d);
    std::vector<float> xf(xb.size());
    for (int64_t i = 0; i < v.n; i++)
        for (int j = 0; j < d; j++)
            xf[(size_t)i * d + j] = xb[(size_t)i * d + j] = ((uint8_t*)v.data)[(size_t)i * v.d + j];
    FgmmModel* m = model_from_rows(xf.data(), v.n, d, 128, FGMM_COV_DIAGONAL, 300.0, 302);
    auto ref = ref_estep(m, v.n, xb.data());
    expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, v.n, FGMM_U8, xb.data()), ref, kFastTol,
                 "fused diagonal, SIFT u8");
    expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, v.n, FGMM_F32, xf.data()), ref, kFastTol,
                 "fused diagonal, SIFT f32");
    fgmm_model_free(m);
    fgmm_vecs_free(&v);
}
#endif

#ifdef FGMM_WITH_CUDA
TEST(GpuEstep, PreparedAndRawRowsAgree) {
    REQUIRE_GPU();
    // The default fast path keeps resident rows as centred fp16 ("prepared") and, on sm_90 with
    // d % 64 == 0, runs the distance GEMMs on wgmma; FUSED_MMA keeps mma.sync on the same rows; the
    // raw path converts the rows as given inside the kernel. All against float64, float and uint8
    // input; n and k off every tile size.
    for (int d : {72, 64, 128}) {
        int64_t n = 30011;
        int k = 140;
        auto x = planted(n, d, k, 0.6, 151 + d);
        std::vector<uint8_t> xb(x.size());
        for (size_t i = 0; i < x.size(); i++) xb[i] = (uint8_t)std::min(255.0f, std::max(0.0f, 20.0f * x[i] + 128.0f));
        std::vector<float> xbf(xb.begin(), xb.end());
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.1, 152);
        FgmmModel* mb = model_from_rows(xbf.data(), n, d, k, FGMM_COV_ISOTROPIC, 400.0, 153);
        auto ref = ref_estep(m, n, x.data());
        auto refb = ref_estep(mb, n, xb.data());
        std::string at = " d=" + std::to_string(d);
        for (int path : {FGMM_GPU_PATH_FUSED, FGMM_GPU_PATH_FUSED_MMA, FGMM_GPU_PATH_FUSED_RAW}) {
            std::string what = (path == FGMM_GPU_PATH_FUSED       ? "prepared"
                                : path == FGMM_GPU_PATH_FUSED_MMA ? "mma"
                                                                  : "raw") +
                               at;
            expect_close(engine_estep(m, path, 0, n, FGMM_F32, x.data()), ref, kFastTol, (what + " f32").c_str());
            expect_close(engine_estep(mb, path, 0, n, FGMM_U8, xb.data()), refb, kFastTol, (what + " u8").c_str());
        }
        // Means far outside the data (a warm start from elsewhere) would overflow the prepared rows'
        // fixed fp16 prescale: the engine falls back to the raw rows and stays accurate.
        for (int j = 0; j < d; j++) m->mu[3 * d + j] += 5e4f;
        auto ref_far = ref_estep(m, n, x.data());
        expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data()), ref_far, kFastTol,
                     ("far means" + at).c_str());
        fgmm_model_free(m);
        fgmm_model_free(mb);
    }
}
#endif

#ifdef FGMM_WITH_CUDA
TEST(GpuEstep, OnePassMatchesTwoPassAndFloat64) {
    REQUIRE_GPU();
    // The one-pass kernel (sm_90: clusters of kp / 128 blocks, dp 128) against float64 and the two
    // passes: every cluster size (k 100, 256, 500, 1000: 1, 2, 4, 8 blocks), d = 96 padded to 128,
    // a partial last tile; elsewhere both runs take the two passes.
    int64_t n = 20011;
    for (auto kd : {std::pair<int, int>{100, 128}, {256, 128}, {500, 96}, {1000, 128}}) {
        int k = kd.first, d = kd.second;
        auto x = planted(n, d, k, 0.6, 191 + k);
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.2, 192);
        auto ref = ref_estep(m, n, x.data());
        std::string at = " k=" + std::to_string(k) + " d=" + std::to_string(d);
        Got one = engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data(), 1);
        Got two = engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data(), 0);
        expect_close(one, ref, kFastTol, ("one pass" + at).c_str());
        expect_close(two, ref, kFastTol, ("two passes" + at).c_str());
        fgmm_model_free(m);
    }
}

TEST(GpuEstep, SmallPreparedTiles) {
    REQUIRE_GPU();
    // Small enough for compute-sanitizer (memcheck, racecheck): one block per pass-2 split, a partial
    // last row tile, k not a multiple of the 128-component tiles; the wgmma kernels on sm_90, both
    // of their widths (dp 128, and d = 40 padded to dp 64); the one-pass kernel at dp 128.
    int64_t n = 3001;
    int k = 200;
    for (int d : {128, 40}) {
        auto x = planted(n, d, k, 0.7, 181 + d);
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 182);
        auto ref = ref_estep(m, n, x.data());
        expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data()), ref, kFastTol,
                     d == 128 ? "small prepared, d 128" : "small prepared, d 40");
        expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data(), 1), ref, kFastTol,
                     d == 128 ? "small one pass, d 128" : "small one pass (two passes at dp 64), d 40");
        fgmm_model_free(m);
    }
}
#endif

TEST(GpuEstep, StreamingEqualsInMemory) {
    REQUIRE_GPU();
    int64_t n = 300000;
    int d = 64, k = 128;
    auto x = planted(n, d, k, 0.8, 91);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 92);
    for (FgmmPrecision prec : {FGMM_PREC_FAST, FGMM_PREC_EXACT}) {
        FgmmParams p = gpu_params(k, prec);
        // In memory the fast path would use prepared rows, centred elsewhere than streamed chunks;
        // compare the same kernel on the same rows.
        Got whole = prec == FGMM_PREC_FAST
#ifdef FGMM_WITH_CUDA
                        ? engine_estep(m, FGMM_GPU_PATH_FUSED_RAW, 0, n, FGMM_F32, x.data())
#else
                        ? Got()
#endif
                        : run_estep(m, p, n, FGMM_F32, x.data());
        p.gpu_mem_limit = 16 << 20;  // 16 MB: 4 MB chunks, 19 of them
        Got streamed = run_estep(m, p, n, FGMM_F32, x.data());
        // Same kernels, other chunk boundaries: per-block fp32 partial sums are cut differently.
        EXPECT_LT(rel_err(streamed.nk.data(), whole.nk.data(), k), 1e-5);
        EXPECT_LT(rel_err(streamed.mu.data(), whole.mu.data(), whole.mu.size()), 1e-5);
        EXPECT_LT(rel_err(streamed.sig.data(), whole.sig.data(), k), 1e-5);
        EXPECT_NEAR(streamed.ll, whole.ll, 1e-9 * std::fabs(whole.ll));
    }
    fgmm_model_free(m);
}

TEST(GpuEstep, FastModeHandlesAnyDataScale) {
    REQUIRE_GPU();
    // fp16 operands are prescaled by a power of two: huge and tiny data must both stay accurate.
    int64_t n = 8000;
    int d = 48, k = 96;
    for (double s : {3e5, 1e-4}) {
        auto x = planted(n, d, k, 0.7, 111);
        for (auto& v : x) v = (float)(v * s + 7.0 * s);  // also off-centre
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0 * s * s, 112);
        auto ref = ref_estep(m, n, x.data());
        expect_close(run_estep(m, gpu_params(k, FGMM_PREC_FAST), n, FGMM_F32, x.data()), ref, kFastTol, "scaled");
        fgmm_model_free(m);
    }
}

TEST(GpuAssign, TopmAndLoglikMatchCpu) {
    REQUIRE_GPU();
    int64_t n = 12007;
    int d = 40, k = 300, m = 4;
    auto x = planted(n, d, k, 0.8, 121);
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        FgmmModel* mod = model_from_rows(x.data(), n, d, k, cov, 1.0, 122);
        FgmmParams pc = fgt::cpu_params(k), pg = gpu_params(k, FGMM_PREC_FAST);
        std::vector<fgmm_idx_t> lc(n * m), lg(n * m), ls(n * m);
        std::vector<float> rc(n * m), rg(n * m), rs(n * m), llc(n), llg(n);
        ASSERT_EQ(fgmm_assign_topm(mod, &pc, n, FGMM_F32, x.data(), m, lc.data(), rc.data()), 0);
        ASSERT_EQ(fgmm_assign_topm(mod, &pg, n, FGMM_F32, x.data(), m, lg.data(), rg.data()), 0)
            << fgmm_get_last_error();
        ASSERT_EQ(fgmm_loglik(mod, &pc, n, FGMM_F32, x.data(), llc.data()), 0);
        ASSERT_EQ(fgmm_loglik(mod, &pg, n, FGMM_F32, x.data(), llg.data()), 0);
        pg.gpu_mem_limit = 4 << 20;  // streamed in chunks: same results
        ASSERT_EQ(fgmm_assign_topm(mod, &pg, n, FGMM_F32, x.data(), m, ls.data(), rs.data()), 0);
        EXPECT_EQ(ls, lg);
        EXPECT_EQ(rs, rg);
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++) {
            EXPECT_NEAR(llg[i], llc[i], 1e-4 * std::max(1.0f, std::fabs(llc[i])));
            for (int t = 0; t < m; t++) {
                EXPECT_NEAR(rg[i * m + t], rc[i * m + t], 1e-4);
                // labels agree unless two responsibilities are within rounding of each other
                differ += lg[i * m + t] != lc[i * m + t] &&
                          std::fabs(rc[i * m + t] - rc[i * m + std::min(t + 1, m - 1)]) > 1e-4 &&
                          (t == 0 || std::fabs(rc[i * m + t] - rc[i * m + t - 1]) > 1e-4);
            }
        }
        EXPECT_EQ(differ, 0);
        fgmm_model_free(mod);
    }
}
