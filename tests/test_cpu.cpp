/* SPDX-License-Identifier: MIT */
// CPU engine and training: agreement with float64, EM properties, determinism.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common.h"
#include "flashgmm_io.h"
#include "internal.h"
#include "progress.h"

using namespace fgt;

namespace {

// CPU E-step: fp32 sgemm tiles with the distance expansion, sums in double.
// Expansion error is ~1e-7 * ||x||^2 per distance; 2e-4 relative leaves a wide margin.
constexpr double kCpuRelTol = 2e-4;

void check_estep(const FgmmModel* m, int64_t n, FgmmDtype dt, const void* x, const RefStats& ref, double tol) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    std::vector<double> nk(k), mu((size_t)k * d), sig(diag ? (size_t)k * d : k);
    double ll = 0;
    FgmmParams p = cpu_params(k);
    ASSERT_EQ(fgmm_estep(m, &p, n, dt, x, nk.data(), mu.data(), sig.data(), &ll), 0) << fgmm_get_last_error();
    EXPECT_LT(rel_err(nk.data(), ref.nk.data(), nk.size()), tol);
    EXPECT_LT(rel_err(mu.data(), ref.mu_acc.data(), mu.size()), tol);
    EXPECT_LT(rel_err(sig.data(), ref.sig_acc.data(), sig.size()), tol);
    EXPECT_NEAR(ll, ref.loglik, tol * std::fabs(ref.loglik));
    double total = 0;
    for (double v : nk) total += v;
    EXPECT_NEAR(total, (double)n, 1e-6 * n);
}

}  // namespace

TEST(CpuEstep, MatchesFloat64IsotropicRandom) {
    int64_t n = 3000;
    int d = 24, k = 20;
    auto x = planted(n, d, k, 3.0, 7);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 2.0, 11);
    ASSERT_NE(m, nullptr);
    check_estep(m, n, FGMM_F32, x.data(), ref_estep(m, n, x.data()), kCpuRelTol);
    fgmm_model_free(m);
}

TEST(CpuEstep, MatchesFloat64DiagonalRandom) {
    int64_t n = 2500;
    int d = 16, k = 12;
    auto x = planted(n, d, k, 4.0, 8);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_DIAGONAL, 1.5, 12);
    check_estep(m, n, FGMM_F32, x.data(), ref_estep(m, n, x.data()), kCpuRelTol);
    fgmm_model_free(m);
}

TEST(CpuEstep, MatchesFloat64OnRealSiftUint8) {
    FgmmVecs v;
    ASSERT_EQ(fgmm_vecs_read(embedded("sift10K_byte.h5").c_str(), "dataset", 2000, &v), 0) << fgmm_get_last_error();
    ASSERT_EQ(v.dtype, FGMM_U8);
    std::vector<float> xf((size_t)v.n * v.d);
    for (size_t i = 0; i < xf.size(); i++) xf[i] = ((uint8_t*)v.data)[i];
    // SIFT: per-dimension variance ~ 400-600; use variances of that order.
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        FgmmModel* m = model_from_rows(xf.data(), v.n, v.d, 32, cov, 500.0, 3);
        check_estep(m, v.n, FGMM_U8, v.data, ref_estep(m, v.n, (const uint8_t*)v.data), kCpuRelTol);
        fgmm_model_free(m);
    }
    fgmm_vecs_free(&v);
}

TEST(CpuEstep, LoglikAndTopmMatchReference) {
    int64_t n = 500;
    int d = 8, k = 10, mm = 3;
    auto x = planted(n, d, k, 2.0, 5);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 6);
    auto ref = ref_estep(m, n, x.data());
    FgmmParams p = cpu_params(k);
    std::vector<float> ll(n), resp((size_t)n * mm);
    std::vector<fgmm_idx_t> lab((size_t)n * mm);
    ASSERT_EQ(fgmm_loglik(m, &p, n, FGMM_F32, x.data(), ll.data()), 0);
    ASSERT_EQ(fgmm_assign_topm(m, &p, n, FGMM_F32, x.data(), mm, lab.data(), resp.data()), 0);
    const float *mu = fgmm_model_means(m), *var = fgmm_model_variances(m), *w = fgmm_model_weights(m);
    for (int64_t i = 0; i < n; i++) {
        EXPECT_NEAR(ll[i], ref.logz[i], 1e-4 * std::max(1.0, std::fabs(ref.logz[i])));
        // responsibilities of all components in double, sorted
        std::vector<std::pair<double, int>> r(k);
        for (int j = 0; j < k; j++) {
            double q = 0;
            for (int t = 0; t < d; t++) {
                double df = (double)x[(size_t)i * d + t] - mu[(size_t)j * d + t];
                q += df * df;
            }
            r[j] = {std::exp(std::log((double)w[j]) - 0.5 * d * std::log(2 * M_PI * var[j]) - 0.5 * q / var[j] -
                             ref.logz[i]),
                    j};
        }
        std::sort(r.begin(), r.end(), [](auto a, auto b) { return a.first > b.first; });
        for (int t = 0; t < mm; t++) {
            EXPECT_NEAR(resp[(size_t)i * mm + t], r[t].first, 1e-4);
            if (r[t].first - (t + 1 < k ? r[t + 1].first : 0) > 1e-3) EXPECT_EQ(lab[(size_t)i * mm + t], r[t].second);
        }
    }
    fgmm_model_free(m);
}

TEST(CpuTrain, LogLikelihoodIsMonotone) {
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        int64_t n = 4000;
        int d = 12, k = 16;
        auto x = planted(n, d, k, 1.5, 21);  // overlapping clusters: EM moves for many iterations
        FgmmParams p = cpu_params(k);
        p.covariance = cov;
        p.niter = 25;
        p.kmeans_iter = 2;
        struct Trace {
            std::vector<double> ll;
            int reseeded = 0;
        } tr;
        p.progress_user = &tr;
        p.progress = [](void* u, FgmmPhase ph, int, double obj, int re) {
            auto* t = (Trace*)u;
            if (ph == FGMM_PHASE_EM) t->ll.push_back(obj), t->reseeded += re;
        };
        FgmmModel* m = nullptr;
        FgmmTrainInfo info;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, &info), 0) << fgmm_get_last_error();
        ASSERT_EQ(tr.ll.size(), 25u);
        ASSERT_EQ(tr.reseeded, 0);
        for (size_t i = 1; i < tr.ll.size(); i++)
            EXPECT_GE(tr.ll[i], tr.ll[i - 1] - 1e-6 * std::fabs(tr.ll[i - 1])) << "iteration " << i;
        EXPECT_GT(tr.ll.back(), tr.ll.front());  // it did move
        EXPECT_GE(info.mean_loglik, tr.ll.back() - 1e-6 * std::fabs(tr.ll.back()));
        fgmm_model_free(m);
    }
}

TEST(CpuTrain, RecoversPlantedMixture) {
    int64_t n = 8000;
    int d = 16, k = 8;
    std::vector<float> c;
    auto x = planted(n, d, k, 6.0, 31, &c);  // centers ~ 6*sqrt(2d) = 34 apart, sigma = 1
    FgmmParams p = cpu_params(k);
    p.niter = 20;
    FgmmModel* m = nullptr;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), 0) << fgmm_get_last_error();
    const float *mu = fgmm_model_means(m), *var = fgmm_model_variances(m), *w = fgmm_model_weights(m);
    for (int j = 0; j < k;
         j++) {  // each true center has a learned mean within 0.15 (sd of the mean: 1/sqrt(1000)*sqrt(d)=0.13)
        double best = 1e30;
        int bj = -1;
        for (int i = 0; i < k; i++) {
            double s = 0;
            for (int t = 0; t < d; t++) s += std::pow(mu[(size_t)i * d + t] - c[(size_t)j * d + t], 2);
            if (s < best) best = s, bj = i;
        }
        EXPECT_LT(std::sqrt(best), 0.3) << "center " << j;
        EXPECT_NEAR(var[bj], 1.0, 0.08);
        EXPECT_NEAR(w[bj], 1.0 / k, 0.01);
    }
    fgmm_model_free(m);
}

TEST(CpuTrain, DiagonalFitsAnisotropicDataBetter) {
    int64_t n = 6000;
    int d = 6, k = 3;
    // k clusters, dimension t with standard deviation 1 + t.
    std::mt19937_64 g(41);
    std::normal_distribution<double> z(0, 1);
    std::vector<float> c((size_t)k * d), x((size_t)n * d);
    for (auto& e : c) e = (float)(30 * z(g));
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < d; t++) x[(size_t)i * d + t] = c[(size_t)(i % k) * d + t] + (float)((1 + t) * z(g));
    FgmmTrainInfo iso_info, diag_info;
    FgmmModel *mi = nullptr, *md = nullptr;
    FgmmParams p = cpu_params(k);
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &mi, &iso_info), 0);
    p.covariance = FGMM_COV_DIAGONAL;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &md, &diag_info), 0);
    EXPECT_GT(diag_info.mean_loglik, iso_info.mean_loglik + 0.1);
    // Per-dimension variances of the diagonal model grow with the dimension index.
    const float* v = fgmm_model_variances(md);
    for (int j = 0; j < k; j++) EXPECT_GT(v[(size_t)j * d + d - 1], 4 * v[(size_t)j * d]);
    fgmm_model_free(mi);
    fgmm_model_free(md);
}

TEST(CpuTrain, DeterministicForSeedAndThreadCount) {
    int64_t n = 5000;
    int d = 10, k = 12;
    auto x = planted(n, d, k, 2.0, 51);
    FgmmParams p = cpu_params(k);
    p.niter = 8;
    FgmmModel *a = nullptr, *b = nullptr, *c = nullptr;
    int threads = omp_get_max_threads();
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &a, nullptr), 0);
    omp_set_num_threads(1);
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &b, nullptr), 0);
    omp_set_num_threads(threads);
    p.seed = 99;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &c, nullptr), 0);
    EXPECT_EQ(0, std::memcmp(fgmm_model_means(a), fgmm_model_means(b), sizeof(float) * k * d));
    EXPECT_EQ(0, std::memcmp(fgmm_model_variances(a), fgmm_model_variances(b), sizeof(float) * k));
    EXPECT_NE(0, std::memcmp(fgmm_model_means(a), fgmm_model_means(c), sizeof(float) * k * d));
    fgmm_model_free(a);
    fgmm_model_free(b);
    fgmm_model_free(c);
}

TEST(CpuTrain, CollapsedComponentsHitTheVarianceFloor) {
    // 12 distinct points, each repeated 20 times, k = 12: every component collapses onto one point.
    int d = 4, k = 12;
    std::vector<float> x;
    for (int r = 0; r < 20; r++)
        for (int j = 0; j < k; j++)
            for (int t = 0; t < d; t++) x.push_back((float)(j * 10 + t));
    FgmmParams p = cpu_params(k);
    p.niter = 5;
    FgmmModel* m = nullptr;
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_train(&p, (int64_t)x.size() / d, d, FGMM_F32, x.data(), &m, &info), 0) << fgmm_get_last_error();
    EXPECT_TRUE(std::isfinite(info.mean_loglik));
    // floor = var_floor * mean per-dim variance of the data
    double mean_var = 0;
    {
        for (int t = 0; t < d; t++) {
            double s = 0, s2 = 0;
            for (int j = 0; j < k; j++) s += j * 10 + t, s2 += std::pow(j * 10 + t, 2);
            mean_var += s2 / k - std::pow(s / k, 2);
        }
        mean_var /= d;
    }
    for (int j = 0; j < k; j++)
        EXPECT_NEAR(fgmm_model_variances(m)[j], p.var_floor * mean_var, 1e-3 * p.var_floor * mean_var);
    fgmm_model_free(m);
}

TEST(CpuTrain, EmptyComponentIsReseeded) {
    // A model with one component far away: its N_k is 0, the M-step must re-seed it inside the data.
    int64_t n = 3000;
    int d = 5, k = 4;
    auto x = planted(n, d, k, 5.0, 61);
    FgmmModel* m = model_from_rows(x.data(), n, d, k, FGMM_COV_ISOTROPIC, 1.0, 62);
    std::vector<double> nk(k);
    std::vector<float> mu(fgmm_model_means(m), fgmm_model_means(m) + k * d);
    for (int t = 0; t < d; t++) mu[t] = 1e4f;
    std::vector<float> var(fgmm_model_variances(m), fgmm_model_variances(m) + k), w(k, 1.0f);
    FgmmModel* far = nullptr;
    ASSERT_EQ(fgmm_model_new(&far, k, d, FGMM_COV_ISOTROPIC, mu.data(), var.data(), w.data()), 0);
    FgmmParams p = cpu_params(k);
    ASSERT_EQ(fgmm_estep(far, &p, n, FGMM_F32, x.data(), nk.data(), nullptr, nullptr, nullptr), 0);
    EXPECT_LT(nk[0], 1e-10);
    // Training from data always ends with every component populated.
    p.niter = 10;
    FgmmModel* t = nullptr;
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &t, &info), 0);
    ASSERT_EQ(fgmm_estep(t, &p, n, FGMM_F32, x.data(), nk.data(), nullptr, nullptr, nullptr), 0);
    for (int j = 0; j < k; j++) EXPECT_GT(nk[j], 1.0);
    fgmm_model_free(m);
    fgmm_model_free(far);
    fgmm_model_free(t);
}

TEST(CpuTrain, EmbeddedSiftTrains) {
    FgmmVecs v;
    ASSERT_EQ(fgmm_vecs_read(embedded("sift10K_byte.h5").c_str(), "dataset", 0, &v), 0) << fgmm_get_last_error();
    EXPECT_EQ(v.n, 9000);
    EXPECT_EQ(v.d, 128);
    FgmmParams p = cpu_params(64);
    p.niter = 5;
    FgmmModel* m = nullptr;
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_train(&p, v.n, v.d, FGMM_U8, v.data, &m, &info), 0) << fgmm_get_last_error();
    EXPECT_EQ(info.em_iterations, 5);
    EXPECT_STREQ(info.backend, "cpu");
    EXPECT_TRUE(std::isfinite(info.mean_loglik));
    fgmm_model_free(m);
    fgmm_vecs_free(&v);
}

namespace {
struct EmTrace {
    std::vector<double> ll;
    int reseeded = 0;
};
void trace_em(void* u, FgmmPhase ph, int, double obj, int re) {
    auto* t = (EmTrace*)u;
    if (ph == FGMM_PHASE_EM) t->ll.push_back(obj), t->reseeded += re;
}
}  // namespace

TEST(CpuTrain, ShiftedDataGivesTheSameModel) {
    // 20,000 x 32 rows with spread 0.01, trained at offsets 0, 10, 100, 1e4. y = x + offset in
    // float; y - offset is exact (Sterbenz), so both trainings see the same points.
    int64_t n = 20000;
    int d = 32, k = 16;
    auto base = planted(n, d, k, 3.0, 7);
    for (auto& v : base) v *= 0.01f;
    for (int cov = 0; cov < 2; cov++)
        for (double off : {0.0, 10.0, 100.0, 1e4}) {
            std::vector<float> y(base.size()), x(base.size());
            for (size_t i = 0; i < y.size(); i++) y[i] = (float)(base[i] + off), x[i] = (float)(y[i] - off);
            FgmmParams p = cpu_params(k);
            p.covariance = (FgmmCovariance)cov;
            p.niter = 6;
            p.kmeans_iter = 4;
            EmTrace tx, ty;
            p.progress = trace_em;
            FgmmModel *mx = nullptr, *my = nullptr;
            FgmmTrainInfo ix, iy;
            p.progress_user = &tx;
            ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &mx, &ix), 0) << fgmm_get_last_error();
            p.progress_user = &ty;
            ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, y.data(), &my, &iy), 0) << fgmm_get_last_error();
            SCOPED_TRACE("offset " + std::to_string(off) + (cov ? " diagonal" : " isotropic"));
            EXPECT_EQ(iy.reseeded, ix.reseeded);
            // float32 means at the offset are spaced ulp(off) (1e-3 = 0.1 sigma at 1e4): a loss of
            // about d * ulp^2 / (24 var) = 0.013 per point there
            EXPECT_NEAR(iy.mean_loglik, ix.mean_loglik, 3e-4 * std::fabs(ix.mean_loglik));
            for (size_t i = 1; i < ty.ll.size(); i++)
                EXPECT_GE(ty.ll[i], ty.ll[i - 1] - 1e-6 * std::fabs(ty.ll[i - 1])) << "iteration " << i;
            // means equal up to the offset: within a few float spacings at the offset plus 2% of sigma
            // (rounded means make the two EM runs drift apart a little)
            double tol = 4 * ((double)std::nextafter((float)off, INFINITY) - off) + 2e-4;
            const float *a = fgmm_model_means(mx), *b = fgmm_model_means(my);
            double worst = 0;
            for (size_t i = 0; i < (size_t)k * d; i++) worst = std::max(worst, std::fabs((double)b[i] - off - a[i]));
            EXPECT_LE(worst, tol);
            const float *va = fgmm_model_variances(mx), *vb = fgmm_model_variances(my);
            double vdiff = 0, vsum = 0;
            for (size_t i = 0; i < (size_t)(cov ? k * d : k); i++) vdiff += std::fabs(vb[i] - va[i]), vsum += va[i];
            EXPECT_LE(vdiff, 0.02 * vsum);
            fgmm_model_free(mx);
            fgmm_model_free(my);
        }
}

TEST(CpuTrain, DataScalesOutsideFloat32AreRefusedOrTrainFinite) {
    int64_t n = 2000;
    int d = 8, k = 4;
    auto base = planted(n, d, k, 3.0, 9);
    FgmmParams p = cpu_params(k);
    p.niter = 5;
    for (double scale : {1e18, 1e30, 1e-30}) {
        std::vector<float> x(base.size());
        for (size_t i = 0; i < x.size(); i++) x[i] = (float)(base[i] * scale);
        FgmmModel* m = nullptr;
        EXPECT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_DATA) << scale;
        EXPECT_NE(std::string(fgmm_get_last_error()).find("rescale the data"), std::string::npos)
            << fgmm_get_last_error();
    }
    for (double scale : {1e10, 1e-10}) {  // in range: finite log-likelihood, same clusters as at scale 1
        std::vector<float> x(base.size()), x1(base.size());
        for (size_t i = 0; i < x.size(); i++) x[i] = (float)(base[i] * scale + 1e3 * scale);
        FgmmModel* m = nullptr;
        FgmmTrainInfo info;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, &info), 0) << scale << ": " << fgmm_get_last_error();
        EXPECT_TRUE(std::isfinite(info.mean_loglik));
        EXPECT_EQ(info.reseeded, 0);
        fgmm_model_free(m);
    }
}

// The CPU engine keeps its scratch between passes (sized by k, d and the covariance): one engine
// running E-steps and k-means passes of changing shapes gives, bit for bit, what a fresh engine
// gives for each.
TEST(CpuEngine, OneEngineServesPassesOfChangingShape) {
    const int64_t n = 3000;
    const int d = 16;
    auto x = planted(n, d, 8, 4.0, 71);
    FgmmModel* m1 = model_from_rows(x.data(), n, d, 8, FGMM_COV_ISOTROPIC, 1.0, 72);
    FgmmModel* m2 = model_from_rows(x.data(), n, d, 5, FGMM_COV_DIAGONAL, 1.0, 73);
    FgmmModel* m3 = model_from_rows(x.data(), n, d, 300, FGMM_COV_ISOTROPIC, 1.0, 74);  // other block rows
    const fgmm_data xd = {x.data(), n, d, FGMM_F32};
    // pass: 0 E-step of m, 1 k-means with m's means as centroids
    auto run = [&](fgmm_engine* e, const FgmmModel* m, int kmeans) {
        const int k = fgmm_model_k(m);
        const bool diag = !kmeans && fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
        fgmm_stats st;
        EXPECT_EQ(fgmm_stats_alloc(&st, k, d, diag), 0);
        int rc = kmeans ? e->ops->kmeans(e, &xd, fgmm_model_means(m), k, &st) : e->ops->estep(e, &xd, m, &st);
        EXPECT_EQ(rc, 0) << fgmm_get_last_error();
        std::vector<double> v(st.nk, st.nk + fgmm_stats_len(&st));
        v.push_back(st.obj);
        fgmm_stats_free(&st);
        return v;
    };
    fgmm_engine* kept = nullptr;
    ASSERT_EQ(fgmm_engine_cpu_create(&kept), 0);
    const std::pair<const FgmmModel*, int> passes[] = {{m1, 0}, {m2, 0}, {m1, 1}, {m3, 0}, {m3, 1}, {m1, 0}};
    for (const auto& ps : passes) {
        fgmm_engine* fresh = nullptr;
        ASSERT_EQ(fgmm_engine_cpu_create(&fresh), 0);
        EXPECT_EQ(run(kept, ps.first, ps.second), run(fresh, ps.first, ps.second))
            << "k " << fgmm_model_k(ps.first) << (ps.second ? " k-means" : " E-step");
        fgmm_engine_destroy(fresh);
    }
    fgmm_engine_destroy(kept);
    fgmm_model_free(m1);
    fgmm_model_free(m2);
    fgmm_model_free(m3);
}

// The tolerance stop (FgmmParams.tol, the CPU schedule's EM stop): EM ends at the first iteration whose
// gain is below tol * |mean log-likelihood|, says so (converged), and not before; tol = 0 runs niter.
TEST(CpuTrain, ToleranceStopsEmWhereTheGainFallsBelowIt) {
    int64_t n = 4000;
    int d = 12, k = 16;
    auto x = planted(n, d, k, 1.5, 21);
    for (double tol : {1e-3, 1e-4, 0.0}) {
        FgmmParams p = cpu_params(k);
        p.niter = 60;
        p.kmeans_iter = 2;
        p.tol = tol;
        std::vector<double> ll;
        p.progress_user = &ll;
        p.progress = [](void* u, FgmmPhase ph, int, double obj, int) {
            if (ph == FGMM_PHASE_EM) ((std::vector<double>*)u)->push_back(obj);
        };
        FgmmModel* m = nullptr;
        FgmmTrainInfo info;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, &info), 0) << fgmm_get_last_error();
        ASSERT_EQ((int)ll.size(), info.em_iterations);
        if (tol == 0) {
            EXPECT_EQ(info.em_iterations, 60);
            EXPECT_EQ(info.converged, 0);
        } else {
            EXPECT_EQ(info.converged, 1) << "tol " << tol;
            EXPECT_LT(info.em_iterations, 60) << "tol " << tol;
            const size_t e = ll.size() - 1;  // the stop: its gain below tol, every earlier one not
            EXPECT_LT(ll[e] - ll[e - 1], tol * std::fabs(ll[e]));
            for (size_t i = 1; i < e; i++) EXPECT_GE(ll[i] - ll[i - 1], tol * std::fabs(ll[i])) << i;
        }
        fgmm_model_free(m);
    }
}

// The progress estimate of src/core/progress.h (flashgmm train, ivf_curves): exact for steady iteration
// times (the first iteration's set-up left out), never negative, ending at 0, falling as iterations end.
TEST(Progress, TimeLeftEstimate) {
    fgmm_eta e;
    fgmm_eta_start(&e, 10, 20, 100.0);
    double t = 100.0 + 5.0 + 1.0;  // 5 s of data pass and seeding, then k-means iterations of 1 s
    double left = fgmm_eta_update(&e, FGMM_PHASE_KMEANS, t);
    EXPECT_NEAR(left, 9 * 6.0 + 20 * 6.0 * FGMM_ETA_EM_PER_KM, 1e-9);  // one sample: the set-up is in it
    double prev = left;
    for (int i = 1; i < 10; i++) {
        left = fgmm_eta_update(&e, FGMM_PHASE_KMEANS, t += 1.0);
        EXPECT_NEAR(left, (9 - i) * 1.0 + 20 * 1.0 * FGMM_ETA_EM_PER_KM, 1e-9) << i;
        EXPECT_LE(left, prev);
        prev = left;
    }
    for (int i = 0; i < 20; i++) {  // EM iterations of 3 s
        left = fgmm_eta_update(&e, FGMM_PHASE_EM, t += 3.0);
        EXPECT_NEAR(left, (19 - i) * 3.0, 1e-9) << i;
    }
    EXPECT_EQ(left, 0.0);
    // a k-means quantizer reports all its iterations as k-means: beyond planned_km they take EM's place
    fgmm_eta_start(&e, 2, 3, 0.0);
    for (int i = 0; i < 5; i++) left = fgmm_eta_update(&e, FGMM_PHASE_KMEANS, i + 1.0);
    EXPECT_EQ(left, 0.0);
    fgmm_eta_start(&e, 2, 3, 0.0);
    for (int i = 0; i < 3; i++) left = fgmm_eta_update(&e, FGMM_PHASE_KMEANS, i + 1.0);
    EXPECT_NEAR(left, 2.0, 1e-9);
    char buf[16];
    fgmm_eta_format(3725, buf, sizeof buf);
    EXPECT_STREQ(buf, "1h02m");
    fgmm_eta_format(185, buf, sizeof buf);
    EXPECT_STREQ(buf, "3m05s");
    fgmm_eta_format(0.42, buf, sizeof buf);
    EXPECT_STREQ(buf, "0.4s");

    // a real training: an estimate at every report, finite, >= 0, 0 at the last, and the one before it
    // (1 EM iteration left) below the one after EM's second (18 left; iteration times on a shared
    // machine vary)
    FgmmParams p = cpu_params(16);
    p.niter = 20;
    p.kmeans_iter = 4;
    struct Run {
        fgmm_eta eta;
        std::vector<double> left;
    } run;
    fgmm_eta_start(&run.eta, p.kmeans_iter, p.niter, fgmm_eta_clock());
    p.progress_user = &run;
    p.progress = [](void* u, FgmmPhase ph, int, double, int) {
        auto* r = (Run*)u;
        r->left.push_back(fgmm_eta_update(&r->eta, ph, fgmm_eta_clock()));
    };
    auto x = planted(20000, 32, 16, 1.5, 5);
    FgmmModel* m = nullptr;
    ASSERT_EQ(fgmm_train(&p, 20000, 32, FGMM_F32, x.data(), &m, nullptr), 0) << fgmm_get_last_error();
    ASSERT_EQ(run.left.size(), 24u);
    for (double l : run.left) EXPECT_TRUE(std::isfinite(l) && l >= 0) << l;
    EXPECT_EQ(run.left.back(), 0.0);
    EXPECT_LT(run.left[22], run.left[5]);
    fgmm_model_free(m);
}
