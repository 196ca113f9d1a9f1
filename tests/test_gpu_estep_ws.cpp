/* SPDX-License-Identifier: MIT */
// The warp-specialised passes (kernels/estep_ws.cu: copy-engine loads, mbarriers, consumer warpgroups)
// against the float64 reference and against the default passes on the same prepared rows. Skips
// without a CUDA device, and after its checks where the kernel does not apply (not sm_90).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#ifdef FGMM_WITH_CUDA
#include "gpu_common.h"

using namespace fgt;

namespace {

// kFastTol (gpu_common.h, 2e-3): fp16 operands against float64, as the other fused paths
constexpr double kSameTol = 1e-4;  // against the default pass 2: the same arithmetic, other sum orders

// One E-step of the engine's fast fused path (two passes) on variant ws (FGMM_GPU_WS_*); *launches: the
// chunks that ran a warp-specialised kernel. sig: the engine's own s2.
Got ws_estep(const FgmmModel* m, int64_t n, const float* x, int ws, long long* launches) {
    return engine_estep_raw(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x, 0, ws, launches);
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
    long long launches = -1;
    Got def = ws_estep(m, n, x.data(), FGMM_GPU_WS_OFF, &launches);
    EXPECT_EQ(launches, 0) << at;
    RefStats ref;
    if (cov == FGMM_COV_ISOTROPIC) ref = ref_estep(m, n, x.data());
    bool ran = true;
    for (int ws :
         std::vector<int>{FGMM_GPU_WS_PIPE, FGMM_GPU_WS_PLAIN, FGMM_GPU_WS_LSE, FGMM_GPU_WS_LSE | FGMM_GPU_WS_PIPE}) {
        const std::string w = " variant " + std::to_string(ws) + at;
        Got got = ws_estep(m, n, x.data(), ws, &launches);
        ran = ran && launches > 0;
        EXPECT_LT(rel(got.nk, def.nk), kSameTol) << "N_k vs default" << w;
        EXPECT_LT(rel(got.mu, def.mu), kSameTol) << "sum r x vs default" << w;
        EXPECT_LT(rel(got.sig, def.sig), kSameTol) << "s2 vs default" << w;
        EXPECT_EQ(got.ll, def.ll) << "log-likelihood (pass 1: the same bits either way)" << w;
        if (cov == FGMM_COV_ISOTROPIC) {
            EXPECT_LT(rel(got.nk, ref.nk), kFastTol) << "N_k vs float64" << w;
            EXPECT_LT(rel(got.mu, ref.mu_acc), kFastTol) << "sum r x vs float64" << w;
            EXPECT_LT(rel(got.sig, ref.sig_acc), kFastTol) << "sum r ||x - mu||^2 vs float64" << w;
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
TEST(GpuEstepWs, DefaultRunsTheUsualPasses) {
    REQUIRE_GPU();
    // the engine's own option (FGMM_GPU_WS_OFF): no warp-specialised kernel, at k = 4096 too (it had
    // been the default from there until the usual pass 2 filled one wave of blocks: BENCHMARKS 1d)
    const int64_t n = 4096 + 3001;
    const int d = 128, k = 4096;
    auto x = planted(n, d, k, 0.6, 601);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.2, 603);
    long long launches = -1;
    engine_estep_raw(m, FGMM_GPU_PATH_FUSED, 0, n, FGMM_F32, x.data(), 0, kEngineWs, &launches);
    EXPECT_EQ(launches, 0);
    fgmm_model_free(m);
}
#endif
