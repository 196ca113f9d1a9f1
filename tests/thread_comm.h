/* SPDX-License-Identifier: MIT */
// thread_comm.h: fgmm_train_comm's ranks as threads of this process (ThreadComm: an in-process
// fgmm_comm), for tests/test_comm.cpp and the GPU tests of several ranks.
#pragma once
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "internal.h"

namespace fgt {
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

inline ThreadComm& tc(fgmm_comm* c) { return *static_cast<ThreadComm*>(c->impl); }

// Posts; false (after the second wait, the agreement recorded) when any rank failed.
inline bool post(fgmm_comm* c, int status, const void* p) {
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
inline int failed(int status) { return status ? status : fgmm_fail(FGMM_ERR_STATE, "another rank failed"); }

inline int tc_sum(fgmm_comm* c, double* v, size_t n, int status) {
    if (!post(c, status, v)) return failed(status);
    std::vector<double> acc(n, 0.0);
    for (int r = 0; r < c->size; r++)  // rank order on every rank: the same bits everywhere
        for (size_t i = 0; i < n; i++) acc[i] += static_cast<const double*>(tc(c).buf[r])[i];
    tc(c).barrier();
    std::copy(acc.begin(), acc.end(), v);
    return 0;
}

inline int tc_gather(fgmm_comm* c, const void* mine, void* all, const size_t* bytes, int status) {
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

inline int tc_bcast(fgmm_comm* c, void* buf, size_t bytes, int status) {
    if (!post(c, status, buf)) return failed(status);
    if (c->rank) memcpy(buf, tc(c).buf[0], bytes);
    tc(c).barrier();
    return 0;
}

struct RankResult {
    int rc = 0;
    std::string err;
    int agreed = 0;
    int device_sums = 0;
    FgmmModel* m = nullptr;
    FgmmTrainInfo info{};
};

// fgmm_train_comm on `ranks` threads, rank r on rows [floor(r n / P), floor((r + 1) n / P)) with
// params rank_params(r) (default: p on every rank).
inline std::vector<RankResult> train_ranks(const FgmmParams& p, int64_t n, int d, const std::vector<float>& x,
                                           int ranks, const std::function<FgmmParams(int)>& rank_params = nullptr,
                                           bool host_sum = false) {
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
            c.sum = tc_sum;
            c.gather = tc_gather;
            c.bcast = tc_bcast;
            c.impl = &t;
            c.host_sum = host_sum;
            const FgmmParams pr = rank_params ? rank_params(r) : p;
            RankResult& o = out[r];
            o.rc = fgmm_train_comm(&pr, row0[r + 1] - row0[r], d, FGMM_F32, x.data() + (size_t)row0[r] * d, &c, &o.m,
                                   &o.info);
            o.err = fgmm_get_last_error();
            o.agreed = c.agreed;
            o.device_sums = c.device_sums;
        });
    for (auto& h : th) h.join();
    return out;
}

inline void free_all(std::vector<RankResult>& v) {
    for (auto& o : v) fgmm_model_free(o.m);
}

// Largest difference of means (to the largest |mean|), variances and weights (relative).
inline double model_diff(const FgmmModel* a, const FgmmModel* b) {
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
}  // namespace fgt
