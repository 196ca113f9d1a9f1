/* SPDX-License-Identifier: MIT */
// The per-query engine of fgmm_ivf_search (plugin/ivf_search_one.c) against the list-major engine
// and an exact truth: on integer-valued data every float distance here is exact, so the engines
// must agree bit for bit with each other and with the truth, ties ordered by (distance, id).
#include <gtest/gtest.h>
#include <omp.h>

#include <faiss/IndexIVF.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_common.h"
#include "ivf_impl.h"

namespace {

// An index with its own base vectors (n x d).
struct Index : fgt::Built {
    std::vector<float> base;
    int d = 0;
};

// IVF{nlist},Flat over base (n x d), the rule given, the vectors added under ids (empty: 0..n-1).
void build(Index& x, int nlist, FgmmAssignRule rule, const std::vector<idx_t>& ids) {
    int64_t n = (int64_t)x.base.size() / x.d;
    FgmmIvfParams p = fgt::params(rule, 4, 4);
    p.max_points_per_list = 0;
    std::string spec = "IVF" + std::to_string(nlist) + ",Flat";
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(x, x.d, spec.c_str(), p, n, x.base.data()));
    ASSERT_EQ(fgmm_ivf_add(x.ivf, n, x.base.data(), ids.empty() ? nullptr : ids.data(), nullptr), 0)
        << fgmm_get_last_error();
}

// sift10K (integer values 0..255, d 128: exact float distances), IVF32, built once per rule.
const Index& sift(FgmmAssignRule rule) {
    static Index soar, hard;
    Index& x = rule == FGMM_ASSIGN_SOAR ? soar : hard;
    if (!x.ivf) {
        x.base = fgt::sift().base;
        x.d = fgt::sift().d;
        EXPECT_GT(fgt::sift().nb, 0);
        build(x, 32, rule, {});
    }
    return x;
}

// n vectors of d values in {0, 1, 2}: many equal vectors and equal distances.
std::vector<float> ties(int64_t n, int d, unsigned seed) {
    std::mt19937 g(seed);
    std::vector<float> v((size_t)n * d);
    for (float& e : v) e = (float)(g() % 3);
    return v;
}

struct Result {
    std::vector<float> d;
    std::vector<idx_t> l;
    std::vector<int64_t> dco;
    bool operator==(const Result& o) const { return d == o.d && l == o.l && dco == o.dco; }
};

// nq queries, `per` per call (0: all in one call).
Result run(const Index& x, int64_t nq, const float* q, idx_t k, int nprobe, int engine, int64_t per = 0,
           size_t slot_bytes = 0) {
    Result r{std::vector<float>(nq * k), std::vector<idx_t>(nq * k), std::vector<int64_t>(nq)};
    if (per <= 0) per = nq;
    for (int64_t i = 0; i < nq; i += per) {
        int64_t b = std::min(per, nq - i);
        EXPECT_EQ(fgmm_ivf_search_with(x.ivf, b, q + i * x.d, k, nprobe, r.d.data() + i * k, r.l.data() + i * k,
                                       r.dco.data() + i, engine, slot_bytes),
                  0)
            << fgmm_get_last_error();
    }
    return r;
}

// The exact answer: over the lists FAISS's quantizer gives each query alone, every id at its nearest
// copy (float64), the k smallest (distance, id), padded with -1 / +inf; DCO = nlist + probed entries.
Result truth(const Index& x, int64_t nq, const float* q, idx_t k, int nprobe) {
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(faiss_IndexIVF_cast(x.index));
    const int d = x.d;
    nprobe = std::min<int>(nprobe, (int)ivf->nlist);
    Result r{std::vector<float>(nq * k, INFINITY), std::vector<idx_t>(nq * k, -1), std::vector<int64_t>(nq)};
    std::vector<float> cd(nprobe);
    std::vector<idx_t> as(nprobe);
    for (int64_t i = 0; i < nq; i++) {
        ivf->quantizer->search(1, q + i * d, nprobe, cd.data(), as.data());
        std::map<idx_t, double> best;
        r.dco[i] = (int64_t)ivf->nlist;
        for (int a = 0; a < nprobe; a++) {
            size_t n = ivf->invlists->list_size(as[a]);
            r.dco[i] += (int64_t)n;
            const float* codes = reinterpret_cast<const float*>(ivf->invlists->get_codes(as[a]));
            const idx_t* ids = ivf->invlists->get_ids(as[a]);
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (int c = 0; c < d; c++) {
                    double e = (double)codes[j * d + c] - q[i * d + c];
                    s += e * e;
                }
                auto it = best.find(ids[j]);
                if (it == best.end() || s < it->second) best[ids[j]] = s;
            }
        }
        std::vector<std::pair<double, idx_t>> o;
        for (auto& e : best) o.emplace_back(e.second, e.first);
        std::sort(o.begin(), o.end());
        for (idx_t a = 0; a < k && a < (idx_t)o.size(); a++)
            r.d[i * k + a] = (float)o[a].first, r.l[i * k + a] = o[a].second;
    }
    return r;
}

// Every engine and batching agrees with the truth, bit for bit. nq < 20 keeps FAISS's quantizer on
// its per-query path at any batch size, so every run probes the same lists.
void expect_all_exact(const Index& x, int64_t nq, const float* q, idx_t k, int nprobe, const std::string& what) {
    ASSERT_LT(nq, 20);
    Result t = truth(x, nq, q, k, nprobe);
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_ONE, 1) == t) << what << ": per-query engine, 1 query per call";
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_ONE) == t) << what << ": per-query engine, one call";
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_AUTO, 1) == t) << what << ": default, 1 query per call";
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_AUTO) == t) << what << ": default, one call";
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_FLAT) == t) << what << ": list-major engine, one call";
    EXPECT_TRUE(run(x, nq, q, k, nprobe, FGMM_SEARCH_FLAT, 0, 1) == t) << what << ": list-major, 1 query per batch";
}

}  // namespace

TEST(IvfSingle, EnginesEqualTheExactTruthOnSift) {
    const std::vector<float>& q = fgt::sift().query;
    for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_HARD}) {
        const Index& x = sift(rule);
        for (int nprobe : {1, 3, 8, 32})
            for (idx_t k : {1, 10, 64, 100, 1000})  // 100, 1000 > ONE_MAX_K: the default hands them on
                expect_all_exact(x, 19, q.data(), k, nprobe,
                                 std::string(rule == FGMM_ASSIGN_SOAR ? "soar" : "hard") + " nprobe " +
                                     std::to_string(nprobe) + " k " + std::to_string(k));
    }
}

// One call with every query against one query per call, 200 queries and every list probed (so
// the quantizer's batch size, GEMM or not, cannot change the lists): the list-major engine's sgemm
// ranking on shared lists, the per-query engine's direct distances, the same answer.
TEST(IvfSingle, OneQueryPerCallEqualsOneCallOfAll) {
    const std::vector<float>& q = fgt::sift().query;
    const Index& x = sift(FGMM_ASSIGN_SOAR);
    const int64_t nq = 200;
    ASSERT_GE((int64_t)q.size(), nq * x.d);
    for (idx_t k : {1, 10, 50}) {
        Result all = run(x, nq, q.data(), k, 32, FGMM_SEARCH_AUTO);
        EXPECT_TRUE(run(x, nq, q.data(), k, 32, FGMM_SEARCH_AUTO, 1) == all) << "k " << k;
        EXPECT_TRUE(run(x, nq, q.data(), k, 32, FGMM_SEARCH_AUTO, 16) == all) << "k " << k;
        EXPECT_TRUE(run(x, nq, q.data(), k, 32, FGMM_SEARCH_ONE) == all) << "k " << k;
        EXPECT_TRUE(truth(x, nq, q.data(), k, 32) == all) << "k " << k;
    }
}

// Exact ties everywhere (values in {0, 1, 2}, d 6) and each id added 10 times (more copies than the
// spill's 2, several in one list): ids ordered by (distance, id), each once at its nearest copy.
TEST(IvfSingle, TiesAndIdsAddedManyTimes) {
    for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_HARD}) {
        Index x;
        x.d = 6;
        x.base = ties(3000, x.d, 3);
        std::vector<idx_t> ids(3000);
        for (int64_t i = 0; i < 3000; i++) ids[i] = (i * 7919) % 300;
        build(x, 8, rule, ids);
        std::vector<float> q = ties(19, x.d, 4);
        for (int nprobe : {1, 2, 8})
            for (idx_t k : {1, 5, 20, 64, 200, 400})  // 400 > the 300 distinct ids: padded
                expect_all_exact(x, 19, q.data(), k, nprobe,
                                 std::string(rule == FGMM_ASSIGN_SOAR ? "soar" : "hard") + " nprobe " +
                                     std::to_string(nprobe) + " k " + std::to_string(k));
        // d not a multiple of the 16 lanes, float values: the engines still agree bit for bit
        std::mt19937 g(5);
        std::uniform_real_distribution<float> u(-1, 1);
        std::vector<float> fq(19 * x.d);
        for (float& e : fq) e = u(g);
        for (int nprobe : {2, 8}) {
            Result one = run(x, 19, fq.data(), 10, nprobe, FGMM_SEARCH_ONE, 1);
            EXPECT_TRUE(run(x, 19, fq.data(), 10, nprobe, FGMM_SEARCH_FLAT, 0, 1) == one) << "float queries";
        }
    }
}

// Fewer queries than threads: a query's lists split over threads (chunks of >= 65536 entries, so
// 2 lists of about 75,000 here), merged after; the answer of one thread, bit for bit, also with
// duplicates.
TEST(IvfSingle, SplitOverThreadsEqualsOneThread) {
    Index x;
    x.d = 8;
    const int64_t n = 100000;
    x.base = ties(n, x.d, 6);
    std::mt19937 g(8);
    std::uniform_real_distribution<float> u(0, 0.01f);
    for (float& e : x.base) e += u(g);  // few exact ties: the split's merge on distances
    std::vector<idx_t> ids(n);
    for (int64_t i = 0; i < n; i++) ids[i] = i % 12500;  // 8 copies per id, across chunks
    build(x, 2, FGMM_ASSIGN_SOAR, ids);
    std::vector<float> q(x.base.begin(), x.base.begin() + 6 * x.d);
    int threads = omp_get_max_threads();
    for (int nprobe : {1, 2})
        for (idx_t k : {1, 10, 64}) {
            omp_set_num_threads(1);
            Result one = run(x, 6, q.data(), k, nprobe, FGMM_SEARCH_ONE, 1);
            Result t = truth(x, 6, q.data(), k, nprobe);
            for (int nt : {2, 3, 8}) {
                omp_set_num_threads(nt);
                for (int64_t per : {1, 2, 6}) {  // 6 queries share every list: the default hands them on
                    Result r = run(x, 6, q.data(), k, nprobe, per < 6 ? FGMM_SEARCH_AUTO : FGMM_SEARCH_ONE, per);
                    EXPECT_TRUE(r == one) << "nprobe " << nprobe << " k " << k << " threads " << nt << " per " << per;
                }
            }
            omp_set_num_threads(threads);
            EXPECT_EQ(one.l, t.l) << "nprobe " << nprobe << " k " << k;  // float data: ids only
            for (size_t i = 0; i < t.d.size(); i++) EXPECT_NEAR(one.d[i], t.d[i], 1e-4 * std::max(1.0f, t.d[i]));
            EXPECT_EQ(one.dco, t.dco);
        }
}

TEST(IvfSingle, EdgesAndErrors) {
    const std::vector<float>& q = fgt::sift().query;
    const Index& x = sift(FGMM_ASSIGN_SOAR);
    std::vector<float> dist(5000);
    std::vector<idx_t> lab(5000);
    // nprobe above nlist, k above the entries: clamped, padded
    Result big = run(x, 2, q.data(), 2500, 1000, FGMM_SEARCH_ONE);
    EXPECT_TRUE(big == truth(x, 2, q.data(), 2500, 32));
    // nothing added: every row padded
    Index empty;
    empty.d = 6;
    empty.base = ties(500, 6, 9);
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.gmm.niter = 2;
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(empty, 6, "IVF4,Flat", p, 500, empty.base.data()));
    Result none = run(empty, 1, empty.base.data(), 7, 4, FGMM_SEARCH_AUTO);
    for (idx_t l : none.l) EXPECT_EQ(l, -1);
    for (float v : none.d) EXPECT_TRUE(std::isinf(v));
    EXPECT_EQ(none.dco[0], 4);
    // a non-finite query, an unknown engine, nq = 0
    std::vector<float> bad(q.begin(), q.begin() + x.d);
    bad[3] = NAN;
    EXPECT_EQ(fgmm_ivf_search(x.ivf, 1, bad.data(), 10, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_DATA);
    EXPECT_EQ(fgmm_ivf_search_with(x.ivf, 1, q.data(), 10, 4, dist.data(), lab.data(), nullptr, 4, 0), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search_with(x.ivf, 0, q.data(), 10, 4, dist.data(), lab.data(), nullptr, FGMM_SEARCH_ONE, 0), 0);
    // the per-query engine takes IVF-Flat only; the default searches IVF-PQ with FAISS's engine
    Index pq;
    pq.d = x.d;
    pq.base.assign(x.base.begin(), x.base.begin() + 2000 * x.d);
    FgmmIvfParams pp;
    fgmm_ivf_params_init(&pp);
    pp.gmm.niter = 3;
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(pq, x.d, "IVF16,PQ8np", pp, 2000, pq.base.data()));
    ASSERT_EQ(fgmm_ivf_add(pq.ivf, 2000, pq.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_ivf_search_with(pq.ivf, 1, q.data(), 10, 4, dist.data(), lab.data(), nullptr, FGMM_SEARCH_ONE, 0),
              FGMM_ERR_STATE);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("IndexIVFFlat"), std::string::npos);
    ASSERT_EQ(fgmm_ivf_search(pq.ivf, 1, q.data(), 10, 4, dist.data(), lab.data(), nullptr), 0);
    for (int a = 0; a < 10; a++) EXPECT_TRUE(lab[a] >= 0 && lab[a] < 2000);
}

// Threads of the caller's own searching one handle one query at a time: each equals the search alone.
TEST(IvfSingle, ConcurrentCallersAgree) {
    const std::vector<float>& q = fgt::sift().query;
    const Index& x = sift(FGMM_ASSIGN_SOAR);
    const Result want = run(x, 19, q.data(), 10, 8, FGMM_SEARCH_ONE);
    std::vector<int> bad(4, 0);
    std::vector<std::thread> th;
    for (int t = 0; t < 4; t++)
        th.emplace_back([&, t] {
            for (int rep = 0; rep < 3; rep++) bad[t] += !(run(x, 19, q.data(), 10, 8, FGMM_SEARCH_AUTO, 1) == want);
        });
    for (auto& h : th) h.join();
    for (int t = 0; t < 4; t++) EXPECT_EQ(bad[t], 0) << "thread " << t;
}
