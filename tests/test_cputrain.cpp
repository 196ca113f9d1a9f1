// SPDX-License-Identifier: MIT
// The CPU add's fused list choice (fgmm_soar_assign_top2) against the two calls it replaces.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "flashgmm.h"
#include "flashgmm_spill.h"

namespace {

struct Mixture {
    int n = 3000, d = 16, k = 40;
    std::vector<float> x, mu, var, w;
};

Mixture make_mixture(float offset) {
    Mixture m;
    std::mt19937 g(11);
    std::normal_distribution<float> nd;
    std::uniform_real_distribution<float> ud(0.3f, 1.5f);
    m.mu.resize((size_t)m.k * m.d);
    for (auto& v : m.mu) v = nd(g) * 2.0f + offset;
    for (int j = 0; j < m.k; j++) m.var.push_back(ud(g)), m.w.push_back(ud(g));
    double ws = 0;
    for (float v : m.w) ws += v;
    for (float& v : m.w) v = (float)(v / ws);
    m.x.resize((size_t)m.n * m.d);
    for (int i = 0; i < m.n; i++) {
        int j = (int)(g() % (unsigned)m.k);
        for (int t = 0; t < m.d; t++) m.x[(size_t)i * m.d + t] = m.mu[(size_t)j * m.d + t] + nd(g);
    }
    return m;
}

}  // namespace

TEST(CpuAdd, SoarTop2EqualsSoarAssignAndAssignTopm) {
    for (float offset : {0.0f, 500.0f}) {  // far from the origin: the same up to rounding
        Mixture mx = make_mixture(offset);
        const int n = mx.n, d = mx.d, k = mx.k;
        FgmmModel* m = nullptr;
        ASSERT_EQ(fgmm_model_new(&m, k, d, FGMM_COV_ISOTROPIC, mx.mu.data(), mx.var.data(), mx.w.data()), 0);
        FgmmParams p;
        fgmm_params_init(&p);
        p.backend = FGMM_BACKEND_CPU;
        for (float lambda : {0.0f, 1.0f}) {
            std::vector<fgmm_idx_t> prim(n), sp(n), fprim(n), fsp(n), lab(2 * n), flab(2 * n);
            std::vector<float> d1(n), d2(n), fd1(n), fd2(n), resp(2 * n), fresp(2 * n);
            ASSERT_EQ(fgmm_soar_assign(n, d, mx.x.data(), k, mx.mu.data(), lambda, prim.data(), sp.data(), d1.data(),
                                       d2.data()),
                      0)
                << fgmm_get_last_error();
            ASSERT_EQ(fgmm_assign_topm(m, &p, n, FGMM_F32, mx.x.data(), 2, lab.data(), resp.data()), 0);
            ASSERT_EQ(fgmm_soar_assign_top2(m, n, mx.x.data(), lambda, fprim.data(), fsp.data(), fd1.data(), fd2.data(),
                                            flab.data(), fresp.data()),
                      0)
                << fgmm_get_last_error();
            int same_lab = 0;
            for (int i = 0; i < n; i++) {
                EXPECT_EQ(fprim[i], prim[i]) << "row " << i;
                EXPECT_EQ(fsp[i], sp[i]) << "row " << i;
                EXPECT_EQ(fd1[i], d1[i]);
                EXPECT_EQ(fd2[i], d2[i]);
                same_lab += flab[2 * i] == lab[2 * i] && flab[2 * i + 1] == lab[2 * i + 1];
                for (int t = 0; t < 2; t++) {
                    EXPECT_GE(fresp[2 * i + t], 0.0f);
                    EXPECT_LE(fresp[2 * i + t], 1.0f);
                    // the same component: the same responsibility up to float rounding of distances
                    if (flab[2 * i + t] == lab[2 * i + t])
                        EXPECT_NEAR(fresp[2 * i + t], resp[2 * i + t], 2e-3 + 1e-3 * resp[2 * i + t]) << "row " << i;
                }
                EXPECT_GE(fresp[2 * i], fresp[2 * i + 1]);
                EXPECT_NE(flab[2 * i], flab[2 * i + 1]);
            }
            EXPECT_GE(same_lab, n - n / 100);  // labels differ only at near-ties
        }
        fgmm_model_free(m);
    }
}

TEST(CpuAdd, SoarTop2RefusesWhatItCannotDo) {
    Mixture mx = make_mixture(0);
    const int d = mx.d, k = mx.k;
    std::vector<float> dvar((size_t)k * d, 1.0f);
    FgmmModel *iso = nullptr, *diag = nullptr;
    ASSERT_EQ(fgmm_model_new(&iso, k, d, FGMM_COV_ISOTROPIC, mx.mu.data(), mx.var.data(), mx.w.data()), 0);
    ASSERT_EQ(fgmm_model_new(&diag, k, d, FGMM_COV_DIAGONAL, mx.mu.data(), dvar.data(), mx.w.data()), 0);
    fgmm_idx_t p[2], s[2], l[4];
    float r[4];
    EXPECT_EQ(fgmm_soar_assign_top2(nullptr, 2, mx.x.data(), 1, p, s, nullptr, nullptr, l, r), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_top2(iso, 2, mx.x.data(), 1, p, s, nullptr, nullptr, nullptr, r), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_top2(iso, 2, mx.x.data(), 1, p, s, nullptr, nullptr, l, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_top2(diag, 2, mx.x.data(), 1, p, s, nullptr, nullptr, l, r), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_top2(iso, 2, mx.x.data(), -1, p, s, nullptr, nullptr, l, r), FGMM_ERR_ARG);
    FgmmModel* one = nullptr;
    ASSERT_EQ(fgmm_model_new(&one, 1, d, FGMM_COV_ISOTROPIC, mx.mu.data(), mx.var.data(), mx.w.data()), 0);
    EXPECT_EQ(fgmm_soar_assign_top2(one, 2, mx.x.data(), 1, p, nullptr, nullptr, nullptr, l, r), FGMM_ERR_ARG);
    fgmm_model_free(one);
    std::vector<float> bad(mx.x.begin(), mx.x.begin() + 2 * d);
    bad[3] = NAN;
    EXPECT_EQ(fgmm_soar_assign_top2(iso, 2, bad.data(), 1, p, s, nullptr, nullptr, l, r), FGMM_ERR_DATA);
    fgmm_model_free(iso);
    fgmm_model_free(diag);
}
