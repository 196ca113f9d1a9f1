/* SPDX-License-Identifier: MIT */
// GPU k-means passes against float64 (fused at a vanishing variance and cuBLAS tiles).
#include "gpu_common.h"

using namespace fgt;

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
    kmeans_pass_vs_float64(FGMM_PREC_FAST, 0);         // resident rows: the fp16 E-step
    kmeans_pass_vs_float64(FGMM_PREC_FAST, 1u << 20);  // streamed rows: TF32 GEMMs
}
