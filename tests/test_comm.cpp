/* SPDX-License-Identifier: MIT */
// Training over several ranks (fgmm_train_comm, what flashgmm-mpi runs) with an in-process
// communicator: one thread per rank, each with its own rows. The model must equal the one-process
// model up to the order of the sums, and a failure on one rank must stop them all.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common.h"
#include "thread_comm.h"

using namespace fgt;

TEST(Comm, ConcurrentRanksGiveTheOneProcessModel) {
    const int64_t n = 6001;  // shards of unequal size
    const int d = 8, k = 10;
    auto x = planted(n, d, k, 2.0, 41);
    for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL}) {
        FgmmParams p;
        fgmm_params_init(&p);
        p.k = k;
        p.covariance = cov;
        p.backend = FGMM_BACKEND_CPU;
        p.niter = 12;
        p.max_init_points = 700;  // a sample of some rows of every shard
        FgmmModel* one = nullptr;
        FgmmTrainInfo info1;
        ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &one, &info1), 0) << fgmm_get_last_error();
        for (int ranks : {1, 2, 3}) {
            auto res = train_ranks(p, n, d, x, ranks);
            for (int r = 0; r < ranks; r++) {
                ASSERT_EQ(res[r].rc, 0) << "rank " << r << ": " << res[r].err;
                EXPECT_EQ(res[r].info.em_iterations, info1.em_iterations);
                // float32 partial sums over other row blocks: measured <= 7.4e-6 here; one rank is fgmm_train
                if (ranks == 1) EXPECT_EQ(model_diff(one, res[r].m), 0.0);
                EXPECT_LT(model_diff(one, res[r].m), 1e-4) << ranks << " ranks, cov " << cov << ", rank " << r;
                EXPECT_NEAR(res[r].info.mean_loglik, info1.mean_loglik, 1e-6 * std::fabs(info1.mean_loglik));
                EXPECT_EQ(model_diff(res[0].m, res[r].m), 0.0) << "rank " << r << " differs from rank 0";
            }
            free_all(res);
        }
        fgmm_model_free(one);
    }
}

TEST(Comm, ConcurrentAutoRanksWithoutGpusSumOnTheHost) {
    // The AUTO backend: where no rank has a GPU engine the ranks agree (fgmm_engine_comm_wrap) to sum
    // through the comm, as CPU ranks do. GPU ranks: GpuNccl.Comm* in test_gpu_nccl.cpp.
    if (fgmm_gpu_available()) GTEST_SKIP() << "a CUDA device: AUTO ranks are GPU ranks";
    const int64_t n = 3001;
    const int d = 8, k = 6;
    auto x = planted(n, d, k, 2.0, 43);
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = k;
    p.niter = 6;
    FgmmModel* one = nullptr;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &one, nullptr), 0) << fgmm_get_last_error();
    auto res = train_ranks(p, n, d, x, 2);
    for (auto& o : res) {
        ASSERT_EQ(o.rc, 0) << o.err;
        EXPECT_STREQ(o.info.backend, "cpu");
        EXPECT_EQ(o.device_sums, 0);
        EXPECT_LT(model_diff(one, o.m), 1e-4);
        EXPECT_EQ(model_diff(res[0].m, o.m), 0.0);
    }
    free_all(res);
    fgmm_model_free(one);
}

TEST(Comm, ConcurrentRanksWidenTheSampleAcrossShards) {
    // As Errors.DistinctPointsJudgedOnTheWholeDataWhenTheSampleIsNot, the distinct rows spread over
    // the shards: with 20 the ranks find k = 8 seeds together; with 5 every rank fails alike.
    for (int distinct : {20, 5}) {
        int d = 4, n = 16000;
        std::vector<float> x = mostly_copies(n, d, distinct, 737);
        FgmmParams p = few_distinct_params();
        FgmmModel* one = nullptr;
        int rc1 = fgmm_train(&p, n, d, FGMM_F32, x.data(), &one, nullptr);
        auto res = train_ranks(p, n, d, x, 3);
        for (int r = 0; r < 3; r++) {
            EXPECT_EQ(res[r].rc, rc1) << "rank " << r << ": " << res[r].err;
            if (distinct == 20 && res[r].m && one) EXPECT_LT(model_diff(one, res[r].m), 1e-4);
            if (distinct == 5)
                EXPECT_NE(res[r].err.find("fewer than k = 8 distinct points (found 6)"), std::string::npos)
                    << res[r].err;
        }
        free_all(res);
        fgmm_model_free(one);
    }
}

TEST(Comm, ConcurrentRanksAllStopWhenOneFails) {
    const int64_t n = 900;
    const int d = 4;
    auto x = planted(n, d, 3, 3.0, 5);
    x[(size_t)700 * d + 2] = NAN;  // in rank 2's rows of 3
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = 3;
    p.backend = FGMM_BACKEND_CPU;
    auto res = train_ranks(p, n, d, x, 3);
    for (int r = 0; r < 3; r++) {
        EXPECT_EQ(res[r].rc, r == 2 ? FGMM_ERR_DATA : FGMM_ERR_STATE) << "rank " << r << ": " << res[r].err;
        EXPECT_EQ(res[r].m, nullptr);
        EXPECT_EQ(res[r].agreed, 1) << "rank " << r;
    }
    EXPECT_NE(res[2].err.find("row 100 has a non-finite value"), std::string::npos) << res[2].err;
    free_all(res);
    p.k = 901;  // a check every rank makes alike
    res = train_ranks(p, n, d, x, 2);
    for (auto& o : res) EXPECT_EQ(o.rc, FGMM_ERR_ARG) << o.err;
    free_all(res);
}
