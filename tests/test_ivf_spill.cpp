/* SPDX-License-Identifier: MIT */
// FAISS plugin: SOAR spill choices, spill budgets and the spill settings in index files.
#include "ivf_common.h"

using namespace fgt;

TEST(Soar, ChoiceMinimisesItsLossByBruteForce) {
    std::mt19937 g(7);
    std::normal_distribution<float> nd;
    for (float offset : {0.0f, 1000.0f}) {  // far from the origin: same choices up to rounding
        int n = 400, d = 24, k = 37;
        std::vector<float> x((size_t)n * d), c((size_t)k * d);
        for (auto& v : x) v = nd(g) + offset;
        for (auto& v : c) v = nd(g) * 0.8f + offset;
        for (float lambda : {0.0f, 1.0f, 4.0f}) {
            std::vector<idx_t> prim(n), sp(n);
            std::vector<float> d1(n), d2(n);
            ASSERT_EQ(
                fgmm_soar_assign(n, d, x.data(), k, c.data(), lambda, prim.data(), sp.data(), d1.data(), d2.data()), 0)
                << fgmm_get_last_error();
            for (int i = 0; i < n; i++) {
                const float* xi = &x[(size_t)i * d];
                std::vector<double> dist(k);
                for (int j = 0; j < k; j++) dist[j] = fgmm_soar_loss(d, xi, &c[(size_t)j * d], &c[(size_t)j * d], 0);
                std::vector<double> sorted = dist;
                std::sort(sorted.begin(), sorted.end());
                double tol = 1e-4 * sorted[0] + 1e-3;
                EXPECT_LE(dist[prim[i]], sorted[0] + tol) << "row " << i;
                EXPECT_NEAR(d1[i], sorted[0], tol);
                EXPECT_NEAR(d2[i], sorted[1], 1e-4 * sorted[1] + 1e-3);
                const float* cp = &c[(size_t)prim[i] * d];
                double best = INFINITY;
                for (int j = 0; j < k; j++)
                    if (j != prim[i]) best = std::min(best, fgmm_soar_loss(d, xi, cp, &c[(size_t)j * d], lambda));
                ASSERT_NE(sp[i], prim[i]);
                EXPECT_LE(fgmm_soar_loss(d, xi, cp, &c[(size_t)sp[i] * d], lambda), best + 1e-4 * best + 1e-3)
                    << "row " << i << " lambda " << lambda << " offset " << offset;
            }
        }
    }
}

TEST(Soar, BadArgumentsAreErrors) {
    float x[4] = {0, 1, 2, 3}, c[4] = {0, 0, 1, 1};
    idx_t p[2], s[2];
    EXPECT_EQ(fgmm_soar_assign(2, 2, nullptr, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, 1, nullptr, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 1, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);  // spill needs k >= 2
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, -1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, NAN, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign(-1, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    x[1] = INFINITY;
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_DATA);
    EXPECT_EQ(fgmm_soar_assign(0, 2, x, 2, c, 1, p, s, nullptr, nullptr), 0);
    EXPECT_TRUE(std::isnan(fgmm_soar_loss(2, nullptr, c, c, 1)));
    EXPECT_TRUE(std::isnan(fgmm_soar_loss(0, x, c, c, 1)));
}

TEST(Ivf, BudgetedSpillHitsItsTarget) {
    const Sift& s = sift();
    Built base;  // one GMM for every target
    build(base, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    auto spilled = [&](FgmmAssignRule rule, FgmmSpillSelect sel, double target, Built& b) {
        FgmmIvfParams p = params(rule);
        p.spill_target = target;
        p.select = sel;
        ASSERT_EQ(faiss_index_factory(&b.index, s.d, "IVF64,Flat", METRIC_L2), 0);
        ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0);
        ASSERT_EQ(fgmm_ivf_set_gmm(b.ivf, fgmm_ivf_model(base.ivf), s.nb, s.base.data()), 0);
        ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0);
    };
    for (FgmmSpillSelect sel : {FGMM_SELECT_RESP2, FGMM_SELECT_DIST_RATIO})
        for (double target : {1.25, 1.5, 1.8}) {
            Built b;
            spilled(FGMM_ASSIGN_SOAR, sel, target, b);
            EXPECT_NEAR(fgmm_ivf_inflation(b.ivf), target, 0.01 * target) << "select " << sel;
            EXPECT_EQ(faiss_Index_ntotal(b.index), (idx_t)std::llround(fgmm_ivf_inflation(b.ivf) * s.nb));
        }
    Built r;  // RESP rule: same budget
    spilled(FGMM_ASSIGN_RESP, FGMM_SELECT_RESP2, 1.3, r);
    EXPECT_NEAR(fgmm_ivf_inflation(r.ivf), 1.3, 0.013);
    // every vector still finds itself through its primary list
    std::vector<idx_t> lab(300);
    std::vector<float> dist(300);
    ASSERT_EQ(fgmm_ivf_search(r.ivf, 300, s.base.data(), 1, 1, dist.data(), lab.data(), nullptr), 0);
    for (int i = 0; i < 300; i++) EXPECT_EQ(dist[i], 0.0f) << i;
}

TEST(Ivf, SoarSpillBeatsHardAtTheSameDco) {
    Built hard, soar;
    build(hard, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    p.spill_target = 0;  // every vector in 2 lists
    build(soar, "IVF64,Flat", p);
    EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(soar.ivf), 2.0);
    // at nprobe 2 hard spends ~2/64 of the base; SOAR at nprobe 1 spends about the same
    double dh, ds;
    double rh = recall_at(hard.ivf, 10, 2, &dh), rs = recall_at(soar.ivf, 10, 1, &ds);
    EXPECT_NEAR(ds / dh, 1.0, 0.2);
    EXPECT_GT(rs, rh - 0.02);
}

TEST(Ivf, RoundTripKeepsTheSpillSettings) {
    const Sift& s = sift();
    int n1 = 6000;
    for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_TAU}) {
        FaissIndex* index = nullptr;
        ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF64,Flat", METRIC_L2), 0);
        FgmmIvfParams p = params(rule);
        p.max_assign = 8;
        p.tau = 1e-4;
        p.spill_target = 1.4;
        p.soar_lambda = 1.5f;
        FgmmIvf* a = nullptr;
        ASSERT_EQ(fgmm_ivf_wrap(index, &p, &a), 0);
        ASSERT_EQ(fgmm_ivf_train(a, s.nb, s.base.data(), nullptr), 0);
        ASSERT_EQ(fgmm_ivf_add(a, n1, s.base.data(), nullptr, nullptr), 0);
        std::string f = testing::TempDir() + "roundtrip.faiss";
        ASSERT_EQ(fgmm_ivf_write(a, f.c_str()), 0) << fgmm_get_last_error();
        FgmmIvf* r = nullptr;
        ASSERT_EQ(fgmm_ivf_read(f.c_str(), nullptr, &r), 0) << fgmm_get_last_error();  // defaults differ
        EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(r), fgmm_ivf_inflation(a));
        // the rest of the base added to both: same lists (same threshold, same rule)
        idx_t la = 0, lr = 0;
        const float* rest = s.base.data() + (size_t)n1 * s.d;
        ASSERT_EQ(fgmm_ivf_add(a, s.nb - n1, rest, nullptr, &la), 0);
        ASSERT_EQ(fgmm_ivf_add(r, s.nb - n1, rest, nullptr, &lr), 0);
        EXPECT_EQ(la, lr);
        int k = 10, nq = 200;
        std::vector<idx_t> ia(nq * k), ir(nq * k);
        std::vector<float> da(nq * k), dr(nq * k);
        ASSERT_EQ(fgmm_ivf_search(a, nq, s.query.data(), k, 8, da.data(), ia.data(), nullptr), 0);
        ASSERT_EQ(fgmm_ivf_search(r, nq, s.query.data(), k, 8, dr.data(), ir.data(), nullptr), 0);
        EXPECT_EQ(ia, ir);
        for (idx_t v : ir) EXPECT_GE(v, 0);  // copies per vector read back: k distinct ids survive
        fgmm_ivf_free(r);
        fgmm_ivf_free(a);
        faiss_Index_free(index);
    }
}
