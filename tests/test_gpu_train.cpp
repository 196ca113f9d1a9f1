/* SPDX-License-Identifier: MIT */
// GPU training: EM on the GPU against the CPU, seeding, the device M-step against the host's,
// concurrent trainings, and errors (bad device, out of memory, bad input).
#include "gpu_common.h"

using namespace fgt;

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
        struct Trace {
            std::vector<double> ll;
            int re = 0;
        } tr;
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
