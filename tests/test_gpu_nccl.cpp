/* SPDX-License-Identifier: MIT */
// Several GPUs: NCCL ranks in one process (gpu-nccl) and fgmm_train_comm ranks summing on their
// devices (gpu-nccl-comm); failures on one rank stop every rank.
#include "gpu_common.h"

using namespace fgt;

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
    std::vector<double> ma(fgmm_model_means(ta), fgmm_model_means(ta) + k * d),
        mb(fgmm_model_means(tb), fgmm_model_means(tb) + k * d);
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
    EXPECT_TRUE(why.find("CUDA device(s) present") != std::string::npos || why.find("NCCL") != std::string::npos)
        << why;
}

namespace {
// Why ranks of fgmm_train_comm on GPUs 0 .. devices - 1 cannot set up NCCL here; empty where they can.
std::string comm_nccl_missing(int devices) {
#ifdef FGMM_WITH_CUDA
    fgmm_engine* e = nullptr;
    if (fgmm_engine_gpu_create(&e, devices - 1, 0, FGMM_PREC_FAST))
        return fgmm_get_last_error();  // e.g. "gpu_device = 1; 1 device(s) present"
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
