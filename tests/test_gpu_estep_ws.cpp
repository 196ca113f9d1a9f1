/* SPDX-License-Identifier: MIT */
// The warp-specialised passes (kernels/estep_ws.cu: copy-engine loads, mbarriers, consumer warpgroups)
// against the float64 reference and against the default passes on the same prepared rows. Skips
// without a CUDA device, and after its checks where the kernel does not apply (not sm_90).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.h"
#include "internal.h"
#ifdef FGMM_WITH_CUDA
#include "gpu_engine.h"
#endif

using namespace fgt;

#ifdef FGMM_WITH_CUDA
namespace {

constexpr double kFastTol = 2e-3;  // fp16 operands against float64 (as the other fused paths)
constexpr double kSameTol = 1e-4;  // against the default pass 2: the same arithmetic, other sum orders

struct Stats {
    std::vector<double> nk, s1, s2;
    double obj = 0;
    long long ws_launches = 0;
};

// One E-step of the engine's fast fused path (two passes) on variant ws (FGMM_GPU_WS_*).
Stats engine_stats(const FgmmModel* m, int64_t n, const float* x, int ws) {
    const int k = fgmm_model_k(m), d = fgmm_model_d(m);
    const bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    Stats r;
    fgmm_engine* e = nullptr;
    EXPECT_EQ(fgmm_engine_gpu_create(&e, 0, 0, FGMM_PREC_FAST), 0) << fgmm_get_last_error();
    if (!e) return r;
    fgmm_engine_gpu_set_onepass(e, 0);
    EXPECT_EQ(fgmm_engine_gpu_set_ws(e, ws), 0);
    fgmm_stats st;
    fgmm_stats_alloc(&st, k, d, diag);
    fgmm_data v = {x, n, d, FGMM_F32};
    EXPECT_EQ(e->ops->estep(e, &v, m, &st), 0) << fgmm_get_last_error();
    r.nk.assign(st.nk, st.nk + k);
    r.s1.assign(st.s1, st.s1 + (size_t)k * d);
    r.s2.assign(st.s2, st.s2 + (diag ? (size_t)k * d : k));
    r.obj = st.obj;
    r.ws_launches = fgmm_engine_gpu_ws_launches(e);
    fgmm_stats_free(&st);
    fgmm_engine_destroy(e);
    return r;
}

double rel(const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && !a.empty() ? rel_err(a.data(), b.data(), a.size()) : INFINITY;
}

// The variants against the default passes (tight) and, for isotropic models, against float64; returns
// whether the kernels ran.
bool check_shape(int64_t n, int k, int d, FgmmCovariance cov, uint64_t seed) {
    auto x = planted(n, d, k, 0.6, seed);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, cov, 1.2, seed + 1);
    const std::string at = " n=" + std::to_string(n) + " k=" + std::to_string(k) + " d=" + std::to_string(d) +
                           (cov == FGMM_COV_DIAGONAL ? " diagonal" : "");
    Stats def = engine_stats(m, n, x.data(), FGMM_GPU_WS_OFF);
    EXPECT_EQ(def.ws_launches, 0) << at;
    RefStats ref;
    if (cov == FGMM_COV_ISOTROPIC) ref = ref_estep(m, n, x.data());
    bool ran = true;
    for (int ws :
         std::vector<int>{FGMM_GPU_WS_PIPE, FGMM_GPU_WS_PLAIN, FGMM_GPU_WS_LSE, FGMM_GPU_WS_LSE | FGMM_GPU_WS_PIPE}) {
        const std::string w = " variant " + std::to_string(ws) + at;
        Stats got = engine_stats(m, n, x.data(), ws);
        ran = ran && got.ws_launches > 0;
        EXPECT_LT(rel(got.nk, def.nk), kSameTol) << "N_k vs default" << w;
        EXPECT_LT(rel(got.s1, def.s1), kSameTol) << "sum r x vs default" << w;
        EXPECT_LT(rel(got.s2, def.s2), kSameTol) << "s2 vs default" << w;
        EXPECT_EQ(got.obj, def.obj) << "log-likelihood (pass 1: the same bits either way)" << w;
        if (cov == FGMM_COV_ISOTROPIC) {
            EXPECT_LT(rel(got.nk, ref.nk), kFastTol) << "N_k vs float64" << w;
            EXPECT_LT(rel(got.s1, ref.mu_acc), kFastTol) << "sum r x vs float64" << w;
            EXPECT_LT(rel(got.s2, ref.sig_acc), kFastTol) << "sum r ||x - mu||^2 vs float64" << w;
        }
    }
    fgmm_model_free(m);
    return ran;
}

}  // namespace

TEST(GpuEstepWs, MatchesFloat64AndDefault) {
    REQUIRE_GPU();
    // k not a multiple of 128; d = 96 and 100 padded to 128; a partial last row tile
    bool ran = true;
    for (auto kd : {std::pair<int, int>{200, 128}, {1000, 96}, {64, 100}})
        ran &= check_shape(20011, kd.first, kd.second, FGMM_COV_ISOTROPIC, 301 + kd.first);
    if (!ran) GTEST_SKIP() << "the warp-specialised kernel does not apply on this device (sm_90 only)";
}

TEST(GpuEstepWs, SmallAndPartialTiles) {
    REQUIRE_GPU();
    // Small enough for compute-sanitizer: fewer rows than a tile (2: no bulk copy, 37: a 1-row tail
    // after 36 bulk-copied norms), 3001 rows (a 57-row last tile); diagonal rows [x', x'^2] (d 48 -> 96
    // padded to 128) take the same kernel.
    bool ran = true;
    for (int64_t n : {2, 37, 3001}) ran &= check_shape(n, 200, 128, FGMM_COV_ISOTROPIC, 401 + n);
    ran &= check_shape(3001, 150, 48, FGMM_COV_DIAGONAL, 409);
    if (!ran) GTEST_SKIP() << "the warp-specialised kernel does not apply on this device (sm_90 only)";
}

TEST(GpuEstepWs, StagesWrapAround) {
    REQUIRE_GPU();
    // pass 2: 1,563 row tiles over at most 66 blocks per component tile (132 SMs): 24 or more tiles per
    // block, round the 8 stages three times (each mbarrier's phase flips); pass 1 has 2 component tiles
    // (4 stages), so k = 1000 (8 tiles) wraps its stages in the first case of MatchesFloat64AndDefault
    if (!check_shape(100003, 130, 128, FGMM_COV_ISOTROPIC, 501))
        GTEST_SKIP() << "the warp-specialised kernel does not apply on this device (sm_90 only)";
}
TEST(GpuEstepWs, AutoTakesPassTwoFromItsComponentCount) {
    REQUIRE_GPU();
    // FGMM_GPU_WS_AUTO (the default): the usual kernels below FGMM_GPU_WS_AUTO_KP padded components,
    // pass 2 warp-specialised from there, with the same statistics as the usual passes
    const int64_t n = FGMM_GPU_WS_AUTO_KP + 3001;
    const int d = 128, below = FGMM_GPU_WS_AUTO_KP - 128, at = FGMM_GPU_WS_AUTO_KP;
    auto x = planted(n, d, at, 0.6, 601);
    FgmmModel* small = model_from_rows(x.data(), n, d, below, FGMM_COV_ISOTROPIC, 1.2, 602);
    FgmmModel* large = model_from_rows(x.data(), n, d, at, FGMM_COV_ISOTROPIC, 1.2, 603);
    EXPECT_EQ(engine_stats(small, n, x.data(), FGMM_GPU_WS_AUTO).ws_launches, 0);
    Stats got = engine_stats(large, n, x.data(), FGMM_GPU_WS_AUTO);
    Stats def = engine_stats(large, n, x.data(), FGMM_GPU_WS_OFF);
    EXPECT_LT(rel(got.nk, def.nk), kSameTol);
    EXPECT_LT(rel(got.s1, def.s1), kSameTol);
    EXPECT_EQ(got.obj, def.obj);
    const bool ran = got.ws_launches > 0;
    fgmm_model_free(small);
    fgmm_model_free(large);
    if (!ran) GTEST_SKIP() << "the warp-specialised kernel does not apply on this device (sm_90 only)";
}
#endif
