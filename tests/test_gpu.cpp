/* SPDX-License-Identifier: MIT */
// GPU backend: agreement with the float64 reference, streaming = in-memory, EM on the GPU.
// Every test skips where no CUDA device exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "common.h"
#include "flashgmm_io.h"
#include "flashgmm_spill.h"
#include "internal.h"
#include "thread_comm.h"
#ifdef FGMM_WITH_CUDA
#include <dlfcn.h>

#include "gpu_engine.h"
#endif

using namespace fgt;

namespace {

// Bounds on ||gpu - ref|| / ||ref|| (Frobenius) for N_k, sum r x and sum r ||x - mu||^2.
constexpr double kFastTol = 2e-3;   // bf16 operands, fp32 accumulation
constexpr double kExactTol = 1e-5;  // 3x bf16 split: about fp32
constexpr double kBlasTol = 1e-4;   // fp32 SGEMM with the distance expansion

FgmmParams gpu_params(int k, FgmmPrecision prec) {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = k;
    p.backend = FGMM_BACKEND_GPU;
    p.precision = prec;
    return p;
}

struct Got {
    std::vector<double> nk, mu, sig;
    double ll = 0;
};
// ||a - b|| / ||b|| of two models' means, variances and weights (same k, d and covariance).
struct ModelErr {
    double mu, var, w;
};
ModelErr model_rel_err(const FgmmModel* a, const FgmmModel* b) {
    size_t k = fgmm_model_k(b), kd = k * fgmm_model_d(b);
    size_t nv = fgmm_model_covariance(b) == FGMM_COV_DIAGONAL ? kd : k;
    auto err = [](const float* x, const float* y, size_t n) {
        std::vector<double> xd(x, x + n), yd(y, y + n);
        return rel_err(xd.data(), yd.data(), n);
    };
    return {err(fgmm_model_means(a), fgmm_model_means(b), kd),
            err(fgmm_model_variances(a), fgmm_model_variances(b), nv),
            err(fgmm_model_weights(a), fgmm_model_weights(b), k)};
}

Got run_estep(const FgmmModel* m, const FgmmParams& p, int64_t n, FgmmDtype dt, const void* x) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    Got g;
    g.nk.resize(k);
    g.mu.resize((size_t)k * d);
    g.sig.resize(diag ? (size_t)k * d : k);
    EXPECT_EQ(fgmm_estep(m, &p, n, dt, x, g.nk.data(), g.mu.data(), g.sig.data(), &g.ll), 0) << fgmm_get_last_error();
    return g;
}
void expect_close(const Got& g, const RefStats& r, double tol, const char* what) {
    EXPECT_LT(rel_err(g.nk.data(), r.nk.data(), g.nk.size()), tol) << what << " N_k";
    EXPECT_LT(rel_err(g.mu.data(), r.mu_acc.data(), g.mu.size()), tol) << what << " mu_acc";
    EXPECT_LT(rel_err(g.sig.data(), r.sig_acc.data(), g.sig.size()), tol) << what << " sig_acc";
    EXPECT_NEAR(g.ll, r.loglik, std::max(tol, 1e-6) * std::fabs(r.loglik)) << what << " loglik";
}

#ifdef FGMM_WITH_CUDA
// One E-step through a GPU engine forced onto a path (FGMM_GPU_PATH_*); mem_limit 0: free memory;
// onepass: 1 the one-pass kernel wherever it applies, 0 never, -1 the engine's default.
Got engine_estep(const FgmmModel* m, int path, size_t mem_limit, int64_t n, FgmmDtype dt, const void* x,
                 int onepass = -1) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    Got g;
    fgmm_engine* e = nullptr;
    EXPECT_EQ(fgmm_engine_gpu_create(&e, 0, mem_limit, FGMM_PREC_FAST), 0) << fgmm_get_last_error();
    if (!e) return g;
    fgmm_engine_gpu_set_path(e, path, 0);
    fgmm_engine_gpu_set_onepass(e, onepass);
    fgmm_stats st;
    fgmm_stats_alloc(&st, k, d, diag);
    fgmm_data v = {x, n, d, dt};
    EXPECT_EQ(e->ops->estep(e, &v, m, &st), 0) << fgmm_get_last_error();
    g.nk.assign(st.nk, st.nk + k);
    g.mu.assign(st.s1, st.s1 + (size_t)k * d);
    g.sig.assign(st.s2, st.s2 + (diag ? (size_t)k * d : k));
    if (diag) {  // the engine's diagonal s2 is sum r x^2; the reference's is sum r (x - mu)^2
        const float* mu = fgmm_model_means(m);
        for (size_t i = 0; i < g.sig.size(); i++)
            g.sig[i] += (double)mu[i] * ((double)mu[i] * g.nk[i / d] - 2.0 * g.mu[i]);
    }
    g.ll = st.obj;
    fgmm_stats_free(&st);
    fgmm_engine_destroy(e);
    return g;
}
#endif

}  // namespace

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
        for (int j = 0; j < d; j++) xf[(size_t)i * d + j] = xb[(size_t)i * d + j] = ((uint8_t*)v.data)[(size_t)i * v.d + j];
    FgmmModel* m = model_from_rows(xf.data(), v.n, d, 128, FGMM_COV_DIAGONAL, 300.0, 302);
    auto ref = ref_estep(m, v.n, xb.data());
    expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, v.n, FGMM_U8, xb.data()), ref, kFastTol, "fused diagonal, SIFT u8");
    expect_close(engine_estep(m, FGMM_GPU_PATH_FUSED, 0, v.n, FGMM_F32, xf.data()), ref, kFastTol, "fused diagonal, SIFT f32");
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
            std::string what = (path == FGMM_GPU_PATH_FUSED ? "prepared" : path == FGMM_GPU_PATH_FUSED_MMA ? "mma" : "raw") + at;
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

TEST(GpuTrain, MonotoneAndAgreesWithCpu) {
    REQUIRE_GPU();
    // Isotropic in exact mode (host M-step: no device EM for exact), and diagonal in fast mode (the
    // fused kernels on rows [x, x^2], 2d = 64; the EM loop on the device).
    int64_t n = 30000;
    int d = 32, k = 64;
    auto x = planted(n, d, k, 1.0, 101);
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        const bool diag = cov == FGMM_COV_DIAGONAL;
        FgmmParams p = gpu_params(k, diag ? FGMM_PREC_FAST : FGMM_PREC_EXACT);
        p.covariance = cov;
        p.niter = 15;
        struct Trace { std::vector<double> ll; int re = 0; } tr;
        p.progress_user = &tr;
        p.progress = [](void* u, FgmmPhase ph, int, double obj, int re) {
            if (ph == FGMM_PHASE_EM) ((Trace*)u)->ll.push_back(obj), ((Trace*)u)->re += re;
        };
        FgmmModel *g = nullptr, *c = nullptr;
        FgmmTrainInfo gi, ci;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &g, &gi), 0) << fgmm_get_last_error();
        EXPECT_STREQ(gi.backend, "gpu");
        ASSERT_EQ(tr.re, 0);
        // monotone up to rounding: fp32 in exact mode, fp16 operands' ~1e-6 relative noise in fast mode
        const double slack = diag ? 1e-5 : 1e-6;
        for (size_t i = 1; i < tr.ll.size(); i++)
            EXPECT_GE(tr.ll[i], tr.ll[i - 1] - slack * std::fabs(tr.ll[i - 1])) << cov << " " << i;
        p.backend = FGMM_BACKEND_CPU;
        p.progress = nullptr;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &c, &ci), 0);
        // Same seeding; k-means/EM paths differ only in rounding, so the fits agree closely.
        EXPECT_NEAR(gi.mean_loglik, ci.mean_loglik, 2e-3 * std::fabs(ci.mean_loglik)) << cov;
        fgmm_model_free(g);
        fgmm_model_free(c);
    }
}

TEST(GpuTrain, SeedingMatchesHost) {
    REQUIRE_GPU();
    // k-means++ runs on the GPU for the GPU backend with the host loop's draws and arithmetic, so
    // both backends start from the same seeds: after one assignment pass on well-separated clusters
    // the means agree to rounding. Different seeds would land elsewhere entirely.
    int64_t n = 40000;
    int d = 48, k = 200;
    auto x = planted(n, d, k, 0.3, 191);
    FgmmParams p = gpu_params(k, FGMM_PREC_EXACT);
    p.kmeans_iter = 0;
    p.niter = 0;
    FgmmModel *g = nullptr, *c = nullptr;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &g, nullptr), 0) << fgmm_get_last_error();
    p.backend = FGMM_BACKEND_CPU;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &c, nullptr), 0) << fgmm_get_last_error();
    EXPECT_LT(model_rel_err(g, c).mu, 1e-5);
    fgmm_model_free(g);
    fgmm_model_free(c);
    // fewer distinct rows than k: the same error as on the host
    std::vector<float> few((size_t)1000 * 4);
    for (size_t i = 0; i < few.size(); i++) few[i] = (float)((i / 4) % 3);
    FgmmParams q = gpu_params(5, FGMM_PREC_FAST);
    FgmmModel* m = nullptr;
    EXPECT_EQ(fgmm_train(&q, 1000, 4, FGMM_F32, few.data(), &m, nullptr), FGMM_ERR_DATA);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("fewer than k = 5 distinct points (found 3"), std::string::npos)
        << fgmm_get_last_error();
    EXPECT_EQ(m, nullptr);
}

namespace {
// fgmm_train with the M-step on the device (default) or on the host (fgmm_gpu_options.host_mstep).
FgmmModel* train_with_mstep(const char* where, FgmmParams p, int64_t n, int d, const float* x, FgmmTrainInfo* info,
                            std::vector<double>* ll) {
#ifdef FGMM_WITH_CUDA
    fgmm_gpu_options o;
    fgmm_gpu_options_init(&o);
    o.host_mstep = !strcmp(where, "host");
    fgmm_gpu_set_options(&o);
#endif
    p.progress_user = ll;
    p.progress = [](void* u, FgmmPhase ph, int, double obj, int) {
        if (ph == FGMM_PHASE_EM) ((std::vector<double>*)u)->push_back(obj);
    };
    FgmmModel* m = nullptr;
    EXPECT_EQ(fgmm_train(&p, n, d, FGMM_F32, x, &m, info), 0) << fgmm_get_last_error();
#ifdef FGMM_WITH_CUDA
    fgmm_gpu_set_options(nullptr);
#endif
    return m;
}
}  // namespace

TEST(GpuTrain, DeviceMstepMatchesHostMstep) {
    REQUIRE_GPU();
    // The default fast training keeps the model on the device (M-step and E-step constants there),
    // isotropic and diagonal; the host M-step is the same double arithmetic, summed in another order.
    int64_t n = 60013;
    int d = 40, k = 90;
    auto x = planted(n, d, k, 0.9, 161);
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        const char* what = cov == FGMM_COV_DIAGONAL ? "diagonal" : "isotropic";
        FgmmParams p = gpu_params(k, FGMM_PREC_FAST);
        p.covariance = cov;
        p.niter = 8;
        FgmmTrainInfo di, hi;
        std::vector<double> dll, hll;
        FgmmModel* dm = train_with_mstep("device", p, n, d, x.data(), &di, &dll);
        FgmmModel* hm = train_with_mstep("host", p, n, d, x.data(), &hi, &hll);
        ASSERT_TRUE(dm && hm);
        ASSERT_EQ(dll.size(), hll.size());
        for (size_t i = 0; i < dll.size(); i++) {
            EXPECT_NEAR(dll[i], hll[i], 1e-6 * std::fabs(hll[i])) << what << " " << i;
            // EM is monotone up to the fast mode's rounding: fp16 operands put ~1e-6 relative noise on
            // the log-likelihood, more than a converged iteration gains.
            if (i) EXPECT_GE(dll[i], dll[i - 1] - 1e-5 * std::fabs(dll[i - 1])) << what << " " << i;
        }
        const ModelErr e = model_rel_err(dm, hm);
        EXPECT_LT(e.mu, 1e-5) << what;
        EXPECT_LT(e.var, 1e-5) << what;
        EXPECT_LT(e.w, 1e-5) << what;
        EXPECT_NEAR(di.mean_loglik, hi.mean_loglik, 1e-6 * std::fabs(hi.mean_loglik)) << what;
        fgmm_model_free(dm);
        fgmm_model_free(hm);
    }
}

TEST(GpuTrain, DeviceMstepReseedsLikeHost) {
    REQUIRE_GPU();
    // min_count above n empties every component every iteration: the device M-step flags them all,
    // the host re-seeds them at the worst-fit sample rows and sends the model back. With nothing
    // left to average, both paths must produce the same model (isotropic and diagonal).
    int64_t n = 20000;
    int d = 24, k = 32;
    auto x = planted(n, d, k, 0.8, 171);
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        FgmmParams p = gpu_params(k, FGMM_PREC_FAST);
        p.covariance = cov;
        p.niter = 3;
        p.kmeans_iter = 2;
        p.min_count = 1e12;
        FgmmTrainInfo di, hi;
        std::vector<double> dll, hll;
        FgmmModel* dm = train_with_mstep("device", p, n, d, x.data(), &di, &dll);
        FgmmModel* hm = train_with_mstep("host", p, n, d, x.data(), &hi, &hll);
        ASSERT_TRUE(dm && hm);
        EXPECT_EQ(di.reseeded, hi.reseeded);
        EXPECT_GE(di.reseeded, p.niter * k);
        const ModelErr e = model_rel_err(dm, hm);
        EXPECT_LT(e.mu, 1e-6) << cov;
        EXPECT_LT(e.var, 1e-6) << cov;
        for (int j = 0; j < k; j++) EXPECT_FLOAT_EQ(fgmm_model_weights(dm)[j], 1.0f / k);
        EXPECT_NEAR(di.mean_loglik, hi.mean_loglik, 1e-6 * std::fabs(hi.mean_loglik)) << cov;
        fgmm_model_free(dm);
        fgmm_model_free(hm);
    }
}

TEST(GpuErrors, BadDeviceAndOutOfMemory) {
    REQUIRE_GPU();
    auto x = planted(1000, 8, 4, 3.0, 1);
    FgmmParams p = gpu_params(4, FGMM_PREC_FAST);
    p.gpu_device = 99;
    FgmmModel* m = nullptr;
    EXPECT_EQ(fgmm_train(&p, 1000, 8, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("gpu_device = 99"), std::string::npos);
    p.gpu_device = 0;
    p.gpu_mem_limit = 1000;  // too small even to stream
    EXPECT_EQ(fgmm_train(&p, 1000, 8, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_GPU_NOMEM) << fgmm_get_last_error();
    EXPECT_EQ(m, nullptr);
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
        ASSERT_EQ(fgmm_assign_topm(mod, &pg, n, FGMM_F32, x.data(), m, lg.data(), rg.data()), 0) << fgmm_get_last_error();
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
                differ += lg[i * m + t] != lc[i * m + t] && std::fabs(rc[i * m + t] - rc[i * m + std::min(t + 1, m - 1)]) > 1e-4 &&
                          (t == 0 || std::fabs(rc[i * m + t] - rc[i * m + t - 1]) > 1e-4);
            }
        }
        EXPECT_EQ(differ, 0);
        fgmm_model_free(mod);
    }
}

namespace {
// 1 if this machine can run the NCCL engine with n ranks; otherwise GTEST_SKIP's reason in why.
bool nccl_ranks_available(int n, std::string* why) {
    std::vector<float> x(64 * 4);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)(i % 17);
    FgmmModel* m = model_from_rows(x.data(), 64, 4, 2, FGMM_COV_ISOTROPIC, 1.0, 1);
    FgmmParams p = gpu_params(2, FGMM_PREC_FAST);
    p.n_gpus = n;
    std::vector<double> nk(2);
    int rc = fgmm_estep(m, &p, 64, FGMM_F32, x.data(), nk.data(), nullptr, nullptr, nullptr);
    fgmm_model_free(m);
    if (rc) *why = fgmm_get_last_error();
    return rc == 0;
}
}  // namespace

// GPU sums combine per-block partials with double atomics, so two runs agree to ~1e-16, not bitwise.
TEST(GpuNccl, OneRankEqualsSingleGpu) {
    REQUIRE_GPU();
    std::string why;
    if (!nccl_ranks_available(1, &why)) GTEST_SKIP() << why;
    int64_t n = 40000;
    int d = 64, k = 128;
    auto x = planted(n, d, k, 0.8, 131);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 132);
    // Both precisions: the fast one runs on prepared rows, centred and prescaled from the rank's
    // adopted scan of the whole data (the same as the single engine's).
    for (FgmmPrecision prec : {FGMM_PREC_FAST, FGMM_PREC_EXACT}) {
        FgmmParams one = gpu_params(k, prec), nccl = one;
        nccl.n_gpus = 1;
        Got a = run_estep(m, one, n, FGMM_F32, x.data()), b = run_estep(m, nccl, n, FGMM_F32, x.data());
        EXPECT_LT(rel_err(b.nk.data(), a.nk.data(), k), 1e-12) << prec;
        EXPECT_LT(rel_err(b.mu.data(), a.mu.data(), a.mu.size()), 1e-12) << prec;
        EXPECT_LT(rel_err(b.sig.data(), a.sig.data(), k), 1e-12) << prec;
        EXPECT_NEAR(b.ll, a.ll, 1e-12 * std::fabs(a.ll)) << prec;
    }
    FgmmParams one = gpu_params(k, FGMM_PREC_EXACT), nccl = one;
    nccl.n_gpus = 1;
    one.niter = nccl.niter = 5;
    FgmmModel *ta = nullptr, *tb = nullptr;
    FgmmTrainInfo ia, ib;
    ASSERT_EQ(fgmm_train(&one, n, d, FGMM_F32, x.data(), &ta, &ia), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_train(&nccl, n, d, FGMM_F32, x.data(), &tb, &ib), 0) << fgmm_get_last_error();
    EXPECT_STREQ(ib.backend, "gpu-nccl");
    std::vector<double> ma(fgmm_model_means(ta), fgmm_model_means(ta) + k * d), mb(fgmm_model_means(tb), fgmm_model_means(tb) + k * d);
    EXPECT_LT(rel_err(mb.data(), ma.data(), ma.size()), 1e-6);
    EXPECT_NEAR(ib.mean_loglik, ia.mean_loglik, 1e-9 * std::fabs(ia.mean_loglik));
    fgmm_model_free(ta);
    fgmm_model_free(tb);
    fgmm_model_free(m);
}

TEST(GpuNccl, SeveralRanksMatchOneUpToReductionOrder) {
    REQUIRE_GPU();
    std::string why;
    for (int ranks : {2, 4}) {
        if (!nccl_ranks_available(ranks, &why)) {
            if (ranks == 2) GTEST_SKIP() << why;  // e.g. "n_gpus = 2 from gpu_device 0, but 1 CUDA device(s) present"
            break;
        }
        int64_t n = 50003;
        int d = 48, k = 100;
        auto x = planted(n, d, k, 0.8, 141);
        FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 142);
        FgmmParams one = gpu_params(k, FGMM_PREC_EXACT), many = one;
        many.n_gpus = ranks;
        Got a = run_estep(m, one, n, FGMM_F32, x.data()), b = run_estep(m, many, n, FGMM_F32, x.data());
        // Each GPU's shard starts a new row tile, and the kernels sum a tile's rows in float before the
        // double accumulators: sharding regroups those float sums (measured on 2 H200s: nk 1.0e-8, mu
        // 1.8e-7, sig 9.1e-9 relative; the 1e-9 written before a 2-GPU machine existed was too tight).
        EXPECT_LT(rel_err(b.nk.data(), a.nk.data(), k), 1e-6) << ranks;
        EXPECT_LT(rel_err(b.mu.data(), a.mu.data(), a.mu.size()), 1e-6) << ranks;
        EXPECT_LT(rel_err(b.sig.data(), a.sig.data(), k), 1e-6) << ranks;
        EXPECT_NEAR(b.ll, a.ll, 1e-12 * std::fabs(a.ll)) << ranks;
        fgmm_model_free(m);
    }
}

TEST(GpuNccl, MoreRanksThanDevicesIsAClearError) {
    REQUIRE_GPU();
    std::string why;
    EXPECT_FALSE(nccl_ranks_available(64, &why));
    EXPECT_TRUE(why.find("CUDA device(s) present") != std::string::npos || why.find("NCCL") != std::string::npos) << why;
}

namespace {
// Why ranks of fgmm_train_comm on GPUs 0 .. devices - 1 cannot set up NCCL here; empty where they can.
std::string comm_nccl_missing(int devices) {
#ifdef FGMM_WITH_CUDA
    fgmm_engine* e = nullptr;
    if (fgmm_engine_gpu_create(&e, devices - 1, 0, FGMM_PREC_FAST)) return fgmm_get_last_error();  // e.g. "gpu_device = 1; 1 device(s) present"
    fgmm_engine_destroy(e);
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return std::string("libnccl.so.2: ") + dlerror();
    dlclose(lib);
    return "";
#else
    (void)devices;
    return "no CUDA in this build";
#endif
}
// p on every rank, rank r on GPU device(r).
std::function<FgmmParams(int)> on_devices(const FgmmParams& p, std::function<int(int)> device) {
    return [p, device](int r) {
        FgmmParams q = p;
        q.gpu_device = device(r);
        return q;
    };
}
}  // namespace

// fgmm_train_comm with 2 GPU ranks as threads (flashgmm-mpi's ranks on one host): the ranks all-reduce
// N_k, sum r x and the second moments of every pass with NCCL (rank 0's ncclUniqueId broadcast through
// the comm) and sum only the log-likelihood through the comm.
TEST(GpuNccl, CommRanksSumStatisticsOnTheDevice) {
    REQUIRE_GPU();
    std::string why = comm_nccl_missing(2);
    if (!why.empty()) GTEST_SKIP() << why;
    const int64_t n = 50003;
    const int d = 48, k = 100;
    auto x = planted(n, d, k, 2.0, 143);
    for (FgmmPrecision prec : {FGMM_PREC_EXACT, FGMM_PREC_FAST}) {
        FgmmParams p = gpu_params(k, prec);
        p.niter = 8;
        FgmmModel* one = nullptr;
        FgmmTrainInfo info1;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &one, &info1), 0) << fgmm_get_last_error();
        auto res = train_ranks(p, n, d, x, 2, on_devices(p, [](int r) { return r; }));
        for (int r = 0; r < 2; r++) {
            ASSERT_EQ(res[r].rc, 0) << "rank " << r << ": " << res[r].err;
            EXPECT_STREQ(res[r].info.backend, "gpu-nccl-comm");
            // every k-means pass (kmeans_iter + 1), EM iteration and the final E-step
            EXPECT_EQ(res[r].device_sums, p.kmeans_iter + 1 + res[r].info.em_iterations + 1) << "rank " << r;
            EXPECT_EQ(model_diff(res[0].m, res[r].m), 0.0) << "rank " << r << " differs from rank 0";
            EXPECT_EQ(res[r].info.mean_loglik, res[0].info.mean_loglik);
        }
        if (prec == FGMM_PREC_EXACT) {
            // As GpuNccl.SeveralRanksMatchOneUpToReductionOrder: each shard regroups the kernels' float
            // tile sums (and here centres on its own mean); one GPU's M-step is the host's in exact mode.
            ModelErr e = model_rel_err(res[0].m, one);
            EXPECT_LT(e.mu, 1e-6);
            EXPECT_LT(e.var, 1e-6);
            EXPECT_LT(e.w, 1e-6);
            EXPECT_NEAR(res[0].info.mean_loglik, info1.mean_loglik, 1e-6 * std::fabs(info1.mean_loglik));
        } else {  // each rank prescales by its own shard, and one GPU takes the device M-step
            EXPECT_NEAR(res[0].info.mean_loglik, info1.mean_loglik, kFastTol * std::fabs(info1.mean_loglik));
        }
        free_all(res);
        fgmm_model_free(one);
    }
}

// A rank whose GPU engine cannot be made stops every rank at the agreement before NCCL is set up.
TEST(GpuNccl, CommRankWithoutItsGpuStopsEveryRank) {
    REQUIRE_GPU();
    auto x = planted(4000, 8, 4, 3.0, 145);
    FgmmParams p = gpu_params(4, FGMM_PREC_FAST);
    auto res = train_ranks(p, 4000, 8, x, 2, on_devices(p, [](int r) { return r ? 99 : 0; }));
    EXPECT_EQ(res[0].rc, FGMM_ERR_STATE) << res[0].err;
    EXPECT_EQ(res[1].rc, FGMM_ERR_ARG) << res[1].err;
    EXPECT_NE(res[1].err.find("gpu_device = 99"), std::string::npos) << res[1].err;
    for (auto& o : res) {
        EXPECT_EQ(o.m, nullptr);
        EXPECT_EQ(o.agreed, 1);
    }
    free_all(res);
}

// NCCL refuses two ranks on one GPU (duplicate GPU): ncclCommInitRank fails on both ranks, which both
// return its error; host_sum (the launcher's FGMM_COMM_SUM=host) then trains them, summing through the comm.
TEST(GpuNccl, CommInitFailureStopsEveryRank) {
    REQUIRE_GPU();
    std::string why = comm_nccl_missing(1);
    if (!why.empty()) GTEST_SKIP() << why;
    const int64_t n = 4000;
    const int d = 8, k = 4;
    auto x = planted(n, d, k, 3.0, 147);
    FgmmParams p = gpu_params(k, FGMM_PREC_EXACT);
    auto res = train_ranks(p, n, d, x, 2);
    for (auto& o : res) {
        EXPECT_EQ(o.rc, FGMM_ERR_CUDA) << o.err;
        EXPECT_NE(o.err.find("ncclCommInitRank"), std::string::npos) << o.err;
        EXPECT_EQ(o.m, nullptr);
        EXPECT_EQ(o.agreed, 1);
    }
    free_all(res);
    res = train_ranks(p, n, d, x, 2, nullptr, true);
    for (auto& o : res) {
        ASSERT_EQ(o.rc, 0) << o.err;
        EXPECT_STREQ(o.info.backend, "gpu");
        EXPECT_EQ(o.device_sums, 0);
        EXPECT_EQ(model_diff(res[0].m, o.m), 0.0);
    }
    free_all(res);
}

// k-means assignment passes on the GPU against float64. Exact precision (fp32 GEMM) gives the same
// assignment. Fast precision with the rows resident (two passes: the first uploads them): the fused
// fp16 E-step at a tiny shared variance (the GMM's zero-variance limit); streamed rows (mem_limit
// 1 MB): TF32 GEMMs pick the centroid, counts, sums and distances from the fp32 rows. In both only
// near-ties may move (counts within twice the rows whose two best distances are within 1%); the fp16
// path's sums and distances carry fp16 rounding.
static void kmeans_pass_vs_float64(FgmmPrecision prec, size_t mem_limit) {
    int64_t n = 20011;
    int d = 24, k = 50;
    auto x = planted(n, d, k, 3.0, 151);
    std::vector<float> c(x.begin(), x.begin() + (size_t)k * d);  // the first k rows as centroids
    fgmm_engine* e = nullptr;
    ASSERT_EQ(fgmm_engine_gpu_create(&e, 0, mem_limit, prec), 0) << fgmm_get_last_error();
    const bool fp16 = prec == FGMM_PREC_FAST && !mem_limit;
    // float64 reference: nearest centroid, counts, sums, squared distances
    std::vector<double> cnt(k), sums((size_t)k * d), sq(k);
    double total = 0;
    int64_t ambiguous = 0, close = 0;
    for (int64_t i = 0; i < n; i++) {
        double best = 1e300, second = 1e300;
        int bj = 0;
        for (int j = 0; j < k; j++) {
            double s2 = 0;
            for (int t = 0; t < d; t++) s2 += std::pow((double)x[i * d + t] - c[(size_t)j * d + t], 2);
            if (s2 < best) second = best, best = s2, bj = j;
            else if (s2 < second) second = s2;
        }
        ambiguous += second - best < 1e-3 * best;
        close += second - best < 1e-2 * best;
        cnt[bj] += 1;
        sq[bj] += best;
        total += best;
        for (int t = 0; t < d; t++) sums[(size_t)bj * d + t] += x[i * d + t];
    }
    ASSERT_EQ(ambiguous, 0) << "test data should have no near-ties";
    fgmm_data xd = {x.data(), n, d, FGMM_F32};
    for (int pass = 0; pass < (prec == FGMM_PREC_EXACT ? 1 : 2); pass++) {
        SCOPED_TRACE(pass);
        fgmm_stats st;
        ASSERT_EQ(fgmm_stats_alloc(&st, k, d, 0), 0);
        ASSERT_EQ(e->ops->kmeans(e, &xd, c.data(), k, &st), 0) << fgmm_get_last_error();
        if (prec == FGMM_PREC_EXACT) {
            EXPECT_EQ(std::vector<double>(st.nk, st.nk + k), cnt);
            EXPECT_LT(rel_err(st.s1, sums.data(), sums.size()), 1e-9);
            EXPECT_LT(rel_err(st.s2, sq.data(), k), 1e-4);  // fp32 distances
            EXPECT_NEAR(-st.obj, total, 1e-4 * total);
        } else {
            double moved = 0;
            for (int j = 0; j < k; j++) moved += std::fabs(st.nk[j] - cnt[j]);
            EXPECT_LE(moved, 2.0 * close);
            if (moved == 0) EXPECT_LT(rel_err(st.s1, sums.data(), sums.size()), fp16 ? 1e-3 : 1e-9);
            EXPECT_NEAR(-st.obj, total, (fp16 ? 1e-3 : 1e-4) * total);
            EXPECT_LT(rel_err(st.s2, sq.data(), k), fp16 ? 1e-3 : 1e-4);
        }
        fgmm_stats_free(&st);
    }
    fgmm_engine_destroy(e);
}

TEST(GpuKmeans, StatisticsMatchFloat64) {
    REQUIRE_GPU();
    kmeans_pass_vs_float64(FGMM_PREC_EXACT, 0);
}

TEST(GpuKmeans, FastPrecisionMovesOnlyNearTiesOnBothPaths) {
    REQUIRE_GPU();
    kmeans_pass_vs_float64(FGMM_PREC_FAST, 0);        // resident rows: the fp16 E-step
    kmeans_pass_vs_float64(FGMM_PREC_FAST, 1u << 20);  // streamed rows: TF32 GEMMs
}

// Bad input reaches the GPU backend's callers as codes, as on the CPU (written 2026-11-29; not yet
// run on a device when committed: the session's device time was spent on the IVF measurements).
TEST(GpuErrors, BadInputIsACodeNotACrash) {
    REQUIRE_GPU();
    auto x = planted(2000, 16, 8, 3.0, 5);
    FgmmParams p = gpu_params(8, FGMM_PREC_FAST);
    FgmmModel* m = nullptr;
    auto nan = x;
    nan[77] = NAN;
    EXPECT_EQ(fgmm_train(&p, 2000, 16, FGMM_F32, nan.data(), &m, nullptr), FGMM_ERR_DATA);
    auto inf = x;
    inf[5] = INFINITY;
    EXPECT_EQ(fgmm_train(&p, 2000, 16, FGMM_F32, inf.data(), &m, nullptr), FGMM_ERR_DATA);
    EXPECT_EQ(fgmm_train(&p, 4, 16, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG);  // k > n
    auto huge = x;
    for (auto& v : huge) v *= 1e30f;  // finite, beyond what float32 variances hold
    EXPECT_EQ(fgmm_train(&p, 2000, 16, FGMM_F32, huge.data(), &m, nullptr), FGMM_ERR_DATA);
    EXPECT_EQ(m, nullptr);
}

// Several host threads training on one device at once: each gets the model a lone training gives.
TEST(GpuTrain, ConcurrentTrainingsOnOneDevice) {
    REQUIRE_GPU();
    auto x = planted(20000, 32, 64, 3.0, 9);
    FgmmParams p = gpu_params(64, FGMM_PREC_FAST);
    p.niter = 10;
    FgmmModel* alone = nullptr;
    ASSERT_EQ(fgmm_train(&p, 20000, 32, FGMM_F32, x.data(), &alone, nullptr), 0) << fgmm_get_last_error();
    FgmmModel* got[4] = {nullptr, nullptr, nullptr, nullptr};
    int rc[4];
    std::vector<std::thread> th;
    for (int t = 0; t < 4; t++)
        th.emplace_back([&, t] { rc[t] = fgmm_train(&p, 20000, 32, FGMM_F32, x.data(), &got[t], nullptr); });
    for (auto& t : th) t.join();
    for (int t = 0; t < 4; t++) {
        ASSERT_EQ(rc[t], 0) << t;
        EXPECT_LT(model_rel_err(got[t], alone).mu, 1e-4) << t;  // atomics: summation order only
        fgmm_model_free(got[t]);
    }
    fgmm_model_free(alone);
}

namespace {
// Rows ~ N(offset, 1), centroids ~ N(offset, 0.8^2): as Soar.ChoiceMinimisesItsLossByBruteForce draws them.
void soar_data(int64_t n, int d, int k, float offset, uint64_t seed, std::vector<float>* x, std::vector<float>* c) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> nd;
    x->resize((size_t)n * d);
    c->resize((size_t)k * d);
    for (auto& v : *x) v = nd(g) + offset;
    for (auto& v : *c) v = nd(g) * 0.8f + offset;
}

struct SoarOut {
    std::vector<fgmm_idx_t> prim, spill;
    std::vector<float> d1, d2;
    explicit SoarOut(int64_t n) : prim(n), spill(n), d1(n), d2(n) {}
};

// Where the GPU and the CPU choose differently, the choice must be a near-tie: primary where the CPU's
// d1 and d2 are within a relative kTie, spill where the two choices' SOAR losses (in double) are within
// a relative kLossTol. Returns the number of rows that differ.
constexpr double kTie = 1e-5, kLossTol = 1e-4;
int64_t expect_soar_agrees(const SoarOut& gpu, const SoarOut& cpu, int64_t n, int d, const float* x, const float* c,
                           float lambda, const char* what) {
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) {
        const float* xi = x + (size_t)i * d;
        EXPECT_NEAR(gpu.d1[i], cpu.d1[i], 1e-4 * cpu.d1[i] + 1e-3) << what << " row " << i;
        EXPECT_NEAR(gpu.d2[i], cpu.d2[i], 1e-4 * cpu.d2[i] + 1e-3) << what << " row " << i;
        if (gpu.prim[i] != cpu.prim[i]) {
            differ++;
            EXPECT_LE(cpu.d2[i] - cpu.d1[i], kTie * cpu.d2[i]) << what << " row " << i << ": primary differs, no tie";
            continue;  // another primary: another SOAR problem
        }
        EXPECT_NE(gpu.spill[i], gpu.prim[i]) << what << " row " << i;
        if (gpu.spill[i] == cpu.spill[i]) continue;
        differ++;
        const float* cp = c + (size_t)cpu.prim[i] * d;
        double lg = fgmm_soar_loss(d, xi, cp, c + (size_t)gpu.spill[i] * d, lambda);
        double lc = fgmm_soar_loss(d, xi, cp, c + (size_t)cpu.spill[i] * d, lambda);
        EXPECT_LE(std::fabs(lg - lc), kLossTol * lc) << what << " row " << i << ": spill differs, losses " << lg << " vs " << lc;
    }
    return differ;
}
}  // namespace

// fgmm_soar_assign_gpu against fgmm_soar_assign: identical choices but for near-ties, also far from the
// origin (both shift by the centroids' mean), for several lambdas; n not a multiple of anything, and one
// case of several row tiles (k = 1024: 256 MB tiles hold about 32k rows).
TEST(GpuSoar, MatchesCpuUpToNearTies) {
    REQUIRE_GPU();
    struct Case {
        int64_t n;
        int d, k;
        float offset;
    } cases[] = {{20011, 100, 300, 0.0f}, {20011, 100, 300, 1000.0f}, {20011, 37, 2, 0.0f}, {100003, 24, 1024, 0.0f}};
    for (const Case& cs : cases) {
        std::vector<float> x, c;
        soar_data(cs.n, cs.d, cs.k, cs.offset, 31 + cs.k, &x, &c);
        for (float lambda : {0.0f, 1.0f, 4.0f}) {
            if (cs.n > 50000 && lambda != 1.0f) continue;
            SoarOut g(cs.n), h(cs.n);
            ASSERT_EQ(fgmm_soar_assign(cs.n, cs.d, x.data(), cs.k, c.data(), lambda, h.prim.data(), h.spill.data(),
                                       h.d1.data(), h.d2.data()), 0) << fgmm_get_last_error();
            ASSERT_EQ(fgmm_soar_assign_gpu(0, cs.n, cs.d, x.data(), cs.k, c.data(), lambda, g.prim.data(), g.spill.data(),
                                           g.d1.data(), g.d2.data()), 0) << fgmm_get_last_error();
            std::string what = "n " + std::to_string(cs.n) + " d " + std::to_string(cs.d) + " k " + std::to_string(cs.k) +
                               " offset " + std::to_string(cs.offset) + " lambda " + std::to_string(lambda);
            int64_t differ = expect_soar_agrees(g, h, cs.n, cs.d, x.data(), c.data(), lambda, what.c_str());
            EXPECT_LE(differ, cs.n / 1000) << what;  // near-ties are rare in random data
            // without the optional outputs (other tile sizes, so other GEMM shapes): the same primaries but for ties
            std::vector<fgmm_idx_t> p2(cs.n);
            ASSERT_EQ(fgmm_soar_assign_gpu(0, cs.n, cs.d, x.data(), cs.k, c.data(), lambda, p2.data(), nullptr, nullptr,
                                           nullptr), 0) << fgmm_get_last_error();
            for (int64_t i = 0; i < cs.n; i++)
                if (p2[i] != g.prim[i]) EXPECT_LE(h.d2[i] - h.d1[i], kTie * h.d2[i]) << what << " row " << i;
        }
    }
    // one centroid, no spill: everything in list 0, no second distance
    std::vector<float> x, c;
    soar_data(1000, 8, 1, 0.0f, 5, &x, &c);
    SoarOut g(1000);
    ASSERT_EQ(fgmm_soar_assign_gpu(0, 1000, 8, x.data(), 1, c.data(), 1.0f, g.prim.data(), nullptr, g.d1.data(),
                                   g.d2.data()), 0) << fgmm_get_last_error();
    for (int i = 0; i < 1000; i++) {
        EXPECT_EQ(g.prim[i], 0);
        EXPECT_TRUE(std::isinf(g.d2[i]));
    }
}

// Several host threads at once (each call has its own stream, handle and buffers): the lone call's results.
TEST(GpuSoar, ConcurrentCallsAgree) {
    REQUIRE_GPU();
    const int64_t n = 30000;
    const int d = 48, k = 512;
    std::vector<float> x, c;
    soar_data(n, d, k, 0.0f, 77, &x, &c);
    SoarOut alone(n);
    ASSERT_EQ(fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, alone.prim.data(), alone.spill.data(),
                                   alone.d1.data(), alone.d2.data()), 0) << fgmm_get_last_error();
    std::vector<SoarOut> got(4, SoarOut(n));
    int rc[4];
    std::vector<std::thread> th;
    for (int t = 0; t < 4; t++)
        th.emplace_back([&, t] {
            rc[t] = fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, got[t].prim.data(), got[t].spill.data(),
                                         got[t].d1.data(), got[t].d2.data());
        });
    for (auto& t : th) t.join();
    for (int t = 0; t < 4; t++) {
        ASSERT_EQ(rc[t], 0) << t;
        EXPECT_EQ(got[t].prim, alone.prim) << t;
        EXPECT_EQ(got[t].spill, alone.spill) << t;
        EXPECT_EQ(got[t].d1, alone.d1) << t;
    }
}

// Bad arguments are codes with messages before any device is touched, so this runs without one too;
// a valid call without a device (or without CUDA in the build) is FGMM_ERR_NO_GPU.
TEST(GpuSoar, BadInputIsACodeNotACrash) {
    float x[4] = {0, 1, 2, 3}, c[4] = {0, 0, 1, 1};
    fgmm_idx_t p[2], s[2];
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, nullptr, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("fgmm_soar_assign_gpu: x is NULL"), std::string::npos);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, nullptr, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, nullptr, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, -1, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 1, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);  // spill needs k >= 2
    EXPECT_NE(std::string(fgmm_get_last_error()).find("k >= 2"), std::string::npos);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 0, c, 1, p, nullptr, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 0, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);   // d < 1
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, NAN, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, -1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 0, 2, x, 2, c, 1, p, s, nullptr, nullptr), 0);  // nothing to do
    x[1] = INFINITY;
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_DATA);
    x[1] = 1;
    if (fgmm_gpu_available()) {
        EXPECT_EQ(fgmm_soar_assign_gpu(99, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
        EXPECT_NE(std::string(fgmm_get_last_error()).find("device = 99"), std::string::npos);
        EXPECT_EQ(fgmm_soar_assign_gpu(-1, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    } else {
        EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NO_GPU);
        EXPECT_GT(std::strlen(fgmm_get_last_error()), 0u);
    }
}

namespace {
// The nearest codeword (ties to the lower) of sub-vector m of x - c computed as FAISS does (the residual in
// float), its distance in double; dist_to gives the double distance to a given codeword.
struct PqRef {
    int d, M, dsub;
    const float* cb;
    void residual(const float* x, const float* c, float* r) const {
        for (int j = 0; j < d; j++) r[j] = x[j] - c[j];
    }
    double dist_to(const float* r, int m, int code) const {
        double s = 0;
        for (int k = 0; k < dsub; k++) {
            double e = (double)r[m * dsub + k] - cb[((size_t)m * 256 + code) * dsub + k];
            s += e * e;
        }
        return s;
    }
    int nearest(const float* r, int m) const {
        int a = 0;
        double best = dist_to(r, m, 0);
        for (int j = 1; j < 256; j++) {
            double v = dist_to(r, m, j);
            if (v < best) best = v, a = j;
        }
        return a;
    }
};
}  // namespace

// fgmm_pq_encode_gpu against a double-precision reference: every code the nearest codeword of its entry's
// residual but for float near-ties (1e-4 relative), rarely; entries without a list all zeros; every
// kernel width (dsub 1 .. 32) and n not a multiple of the block.
TEST(GpuPq, MatchesReferenceUpToNearTies) {
    REQUIRE_GPU();
    struct Case {
        int64_t n;
        int d, M, ma, nlist;
    } cases[] = {{20011, 32, 8, 2, 64}, {20011, 96, 16, 2, 300}, {7001, 128, 16, 3, 64}, {5003, 48, 4, 1, 7},
                 {3001, 64, 2, 2, 5}, {3001, 20, 20, 2, 9}};
    for (const Case& cs : cases) {
        std::vector<float> x, c, cb;
        soar_data(cs.n, cs.d, cs.nlist, 0.0f, 11 + cs.d, &x, &c);
        std::mt19937_64 g(cs.M);
        std::normal_distribution<float> nd;
        cb.resize((size_t)256 * cs.d);
        for (auto& v : cb) v = nd(g) * 1.2f;
        std::vector<fgmm_idx_t> lists((size_t)cs.n * cs.ma);
        for (size_t i = 0; i < lists.size(); i++)
            lists[i] = i % cs.ma && g() % 3 == 0 ? -1 : (fgmm_idx_t)(g() % cs.nlist);  // some spilled copies absent
        std::vector<uint8_t> codes(lists.size() * cs.M, 0xAB);
        ASSERT_EQ(fgmm_pq_encode_gpu(0, cs.n, cs.d, x.data(), cs.ma, lists.data(), cs.nlist, c.data(), cs.M, cb.data(),
                                     codes.data()), 0) << fgmm_get_last_error();
        PqRef ref{cs.d, cs.M, cs.d / cs.M, cb.data()};
        std::vector<float> r(cs.d);
        int64_t differ = 0, zeros = 0;
        std::string what = "d " + std::to_string(cs.d) + " M " + std::to_string(cs.M);
        for (size_t e = 0; e < lists.size(); e++) {
            const uint8_t* code = codes.data() + e * cs.M;
            if (lists[e] < 0) {
                for (int m = 0; m < cs.M; m++) zeros += code[m] == 0;
                continue;
            }
            ref.residual(x.data() + e / cs.ma * cs.d, c.data() + lists[e] * cs.d, r.data());
            for (int m = 0; m < cs.M; m++) {
                int want = ref.nearest(r.data(), m);
                if (code[m] == want) continue;
                differ++;
                double dg = ref.dist_to(r.data(), m, code[m]), dc = ref.dist_to(r.data(), m, want);
                EXPECT_LE(dg - dc, 1e-4 * dc + 1e-6) << what << " entry " << e << " m " << m;
            }
        }
        int64_t absent = std::count(lists.begin(), lists.end(), (fgmm_idx_t)-1);
        EXPECT_EQ(zeros, absent * cs.M) << what;
        EXPECT_LE(differ, (int64_t)lists.size() * cs.M / 1000) << what;
    }
}

// Bad arguments are codes with messages (no device needed); a valid call without a device is FGMM_ERR_NO_GPU.
TEST(GpuPq, BadInputIsACodeNotACrash) {
    std::vector<float> x(2 * 8, 0.5f), c(2 * 8, 0.0f), cb(256 * 8, 1.0f);
    std::vector<fgmm_idx_t> lists = {0, 1};
    std::vector<uint8_t> codes(2 * 4);
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, nullptr, 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
              FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 3, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // d not a multiple of M
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 66, x.data(), 1, lists.data(), 2, c.data(), 1, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // dsub > 32
    lists[1] = 2;
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // list out of range
    EXPECT_NE(std::string(fgmm_get_last_error()).find("nlist = 2"), std::string::npos);
    lists[1] = 1;
    EXPECT_EQ(fgmm_pq_encode_gpu(0, INT64_MAX / 2 + 1, 8, x.data(), 2, lists.data(), 2, c.data(), 4, cb.data(),
                                 codes.data()),
              FGMM_ERR_ARG);  // n x ma overflows: refused before any list is read
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 0, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()), 0);
    if (fgmm_gpu_available()) {
        EXPECT_EQ(fgmm_pq_encode_gpu(99, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
                  FGMM_ERR_ARG);
        ASSERT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()), 0);
        EXPECT_EQ(codes, std::vector<uint8_t>(8, 0));  // every codeword equally near: the first
    } else {
        EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
                  FGMM_ERR_NO_GPU);
    }
}
