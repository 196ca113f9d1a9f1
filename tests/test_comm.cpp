// Training over several ranks (fgmm_train_comm, what flashgmm-mpi runs) with an in-process
// communicator: one thread per rank, each with its own rows. The model must equal the one-process
// model up to the order of the sums, and a failure on one rank must stop them all.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "internal.h"

using namespace fgt;

namespace {
// Every collective is one exchange: each rank posts its status and buffer, all wait, each reads
// what it needs from the others' buffers, all wait again (the buffers may then change).
struct ThreadComm {
    explicit ThreadComm(int n) : size(n), status(n), buf(n) {}
    void barrier() {
        std::unique_lock<std::mutex> l(m);
        unsigned long g = gen;
        if (++arrived == size) {
            arrived = 0;
            gen++;
            cv.notify_all();
        } else {
            cv.wait(l, [&] { return gen != g; });
        }
    }
    int size;
    std::vector<int> status;
    std::vector<const void*> buf;
    std::mutex m;
    std::condition_variable cv;
    int arrived = 0;
    unsigned long gen = 0;
};

ThreadComm& tc(fgmm_comm* c) { return *static_cast<ThreadComm*>(c->impl); }

// Posts; false (after the second wait, the agreement recorded) when any rank failed.
bool post(fgmm_comm* c, int status, const void* p) {
    ThreadComm& t = tc(c);
    t.status[c->rank] = status;
    t.buf[c->rank] = p;
    t.barrier();
    bool ok = std::all_of(t.status.begin(), t.status.end(), [](int s) { return s == 0; });
    if (!ok) {
        t.barrier();
        c->agreed = 1;
    }
    return ok;
}
int failed(int status) { return status ? status : fgmm_fail(FGMM_ERR_STATE, "another rank failed"); }

int sum(fgmm_comm* c, double* v, size_t n, int status) {
    if (!post(c, status, v)) return failed(status);
    std::vector<double> acc(n, 0.0);
    for (int r = 0; r < c->size; r++)  // rank order on every rank: the same bits everywhere
        for (size_t i = 0; i < n; i++) acc[i] += static_cast<const double*>(tc(c).buf[r])[i];
    tc(c).barrier();
    std::copy(acc.begin(), acc.end(), v);
    return 0;
}

int gather(fgmm_comm* c, const void* mine, void* all, const size_t* bytes, int status) {
    if (!post(c, status, mine)) return failed(status);
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        char* at = static_cast<char*>(all) + off;
        if (at != tc(c).buf[r]) memmove(at, tc(c).buf[r], bytes[r]);
        off += bytes[r];
    }
    tc(c).barrier();
    return 0;
}

int bcast(fgmm_comm* c, void* buf, size_t bytes, int status) {
    if (!post(c, status, buf)) return failed(status);
    if (c->rank) memcpy(buf, tc(c).buf[0], bytes);
    tc(c).barrier();
    return 0;
}

struct RankResult {
    int rc = 0;
    std::string err;
    int agreed = 0;
    FgmmModel* m = nullptr;
    FgmmTrainInfo info{};
};

// fgmm_train_comm on `ranks` threads, rank r on rows [floor(r n / P), floor((r + 1) n / P)).
std::vector<RankResult> train_ranks(const FgmmParams& p, int64_t n, int d, const std::vector<float>& x, int ranks) {
    ThreadComm t(ranks);
    std::vector<fgmm_idx_t> row0(ranks + 1);
    for (int r = 0; r <= ranks; r++) row0[r] = n * r / ranks;
    std::vector<RankResult> out(ranks);
    std::vector<std::thread> th;
    for (int r = 0; r < ranks; r++)
        th.emplace_back([&, r] {
            fgmm_comm c{};
            c.rank = r;
            c.size = ranks;
            c.n_total = n;
            c.row0 = row0.data();
            c.sum = sum;
            c.gather = gather;
            c.bcast = bcast;
            c.impl = &t;
            RankResult& o = out[r];
            o.rc = fgmm_train_comm(&p, row0[r + 1] - row0[r], d, FGMM_F32, x.data() + (size_t)row0[r] * d, &c, &o.m,
                                   &o.info);
            o.err = fgmm_get_last_error();
            o.agreed = c.agreed;
        });
    for (auto& h : th) h.join();
    return out;
}

void free_all(std::vector<RankResult>& v) {
    for (auto& o : v) fgmm_model_free(o.m);
}

// Largest difference of means (to the largest |mean|), variances and weights (relative).
double model_diff(const FgmmModel* a, const FgmmModel* b) {
    int k = fgmm_model_k(a), d = fgmm_model_d(a);
    size_t nv = fgmm_model_covariance(a) == FGMM_COV_DIAGONAL ? (size_t)k * d : k;
    double scale = 0, worst = 0;
    for (size_t i = 0; i < (size_t)k * d; i++) scale = std::max(scale, (double)std::fabs(fgmm_model_means(a)[i]));
    for (size_t i = 0; i < (size_t)k * d; i++)
        worst = std::max(worst, std::fabs((double)fgmm_model_means(a)[i] - fgmm_model_means(b)[i]) / scale);
    for (size_t i = 0; i < nv; i++)
        worst = std::max(worst, std::fabs((double)fgmm_model_variances(a)[i] / fgmm_model_variances(b)[i] - 1));
    for (int j = 0; j < k; j++)
        worst = std::max(worst, std::fabs((double)fgmm_model_weights(a)[j] / fgmm_model_weights(b)[j] - 1));
    return worst;
}
}  // namespace

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
                EXPECT_NE(res[r].err.find("fewer than k = 8 distinct points (found 6)"), std::string::npos) << res[r].err;
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
