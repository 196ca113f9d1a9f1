/* SPDX-License-Identifier: MIT */
// fgmm_ivf_search's engines (plugin/ivf_search.c, the FAISS path) against a float64 brute force over
// the probed lists, on the embedded sift10K set.
#include <gtest/gtest.h>
#include <omp.h>

#include <faiss/IndexIVF.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <algorithm>
#include <chrono>
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

// nlist lists, the rule given, trained on the whole base; n vectors added (ids: first_id + i).
void build(fgt::Built& x, const char* spec, FgmmAssignRule rule, int64_t n, int64_t first_id = -1) {
    const fgt::Sift& s = fgt::sift();
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(x, s.d, spec, fgt::params(rule, 5, 5), s.nb, s.base.data()));
    std::vector<idx_t> ids(n);
    for (int64_t i = 0; i < n; i++) ids[i] = first_id + i;
    ASSERT_EQ(fgmm_ivf_add(x.ivf, n, s.base.data(), first_id >= 0 ? ids.data() : nullptr, nullptr), 0)
        << fgmm_get_last_error();
}

// IVF32,Flat on the whole set, built once per rule (SOAR: spilled; HARD) and only searched after.
const fgt::Built& shared(FgmmAssignRule rule) {
    static fgt::Built soar, hard;
    fgt::Built& x = rule == FGMM_ASSIGN_SOAR ? soar : hard;
    if (!x.ivf) build(x, "IVF32,Flat", rule, fgt::sift().nb);
    return x;
}

struct Result {
    std::vector<float> d;
    std::vector<idx_t> l;
    std::vector<int64_t> dco;
};

Result run(const fgt::Built& x, int64_t nq, const float* q, idx_t k, int nprobe, int engine = FGMM_SEARCH_AUTO,
           size_t slot_bytes = 0) {
    Result r{std::vector<float>(nq * k), std::vector<idx_t>(nq * k), std::vector<int64_t>(nq)};
    EXPECT_EQ(fgmm_ivf_search_with(x.ivf, nq, q, k, nprobe, r.d.data(), r.l.data(), r.dco.data(), engine, slot_bytes),
              0)
        << fgmm_get_last_error();
    return r;
}

// The float64 truth over the lists FAISS's quantizer probes (queried with the same batch): each id's
// nearest copy, sorted by (distance, id); the DCO of each query.
struct Truth {
    std::vector<std::map<idx_t, double>> dist;  // per query: every probed id's distance
    std::vector<std::vector<std::pair<double, idx_t>>> order;
    std::vector<int64_t> dco;
};

Truth truth(const fgt::Built& x, int64_t nq, const float* q, int nprobe) {
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(faiss_IndexIVF_cast(x.index));
    const int d = (int)ivf->d, nlist = (int)ivf->nlist;
    nprobe = std::min(nprobe, nlist);
    std::vector<float> cd(nq * nprobe);
    std::vector<idx_t> as(nq * nprobe);
    ivf->quantizer->search(nq, q, nprobe, cd.data(), as.data());
    Truth t{std::vector<std::map<idx_t, double>>(nq), {}, std::vector<int64_t>(nq, nlist)};
    for (int64_t i = 0; i < nq; i++) {
        for (int r = 0; r < nprobe; r++) {
            idx_t l = as[i * nprobe + r];
            size_t n = ivf->invlists->list_size(l);
            t.dco[i] += n;
            const float* codes = reinterpret_cast<const float*>(ivf->invlists->get_codes(l));
            const idx_t* ids = ivf->invlists->get_ids(l);
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (int c = 0; c < d; c++) {
                    double e = (double)codes[j * d + c] - q[i * d + c];
                    s += e * e;
                }
                auto it = t.dist[i].find(ids[j]);
                if (it == t.dist[i].end() || s < it->second) t.dist[i][ids[j]] = s;
            }
        }
        std::vector<std::pair<double, idx_t>> o;
        for (auto& e : t.dist[i]) o.emplace_back(e.second, e.first);
        std::sort(o.begin(), o.end());
        t.order.push_back(o);
    }
    return t;
}

bool close(double a, double b) { return std::fabs(a - b) <= 1e-4 * std::max(std::fabs(b), 1.0); }

// Row by row: rank t holds an id at the truth's rank-t distance (the same id, or one tied with it),
// distances within 1e-4 relative, ids distinct, then -1 / +inf where fewer than k exist.
void expect_matches(const Result& r, const Truth& t, int64_t nq, idx_t k, const std::string& what) {
    for (int64_t i = 0; i < nq; i++) {
        std::vector<idx_t> seen;
        for (idx_t a = 0; a < k; a++) {
            idx_t id = r.l[i * k + a];
            float dd = r.d[i * k + a];
            if (a >= (idx_t)t.order[i].size()) {
                ASSERT_EQ(id, -1) << what << " query " << i << " rank " << a;
                ASSERT_TRUE(std::isinf(dd)) << what;
                continue;
            }
            ASSERT_NE(id, -1) << what << " query " << i << " rank " << a;
            auto it = t.dist[i].find(id);
            ASSERT_NE(it, t.dist[i].end()) << what << ": id " << id << " is not in the probed lists";
            double want = t.order[i][a].first;
            ASSERT_TRUE(id == t.order[i][a].second || close(it->second, want))
                << what << " query " << i << " rank " << a << ": id " << id << " at " << it->second << ", truth "
                << t.order[i][a].second << " at " << want;
            ASSERT_TRUE(close(dd, it->second))
                << what << " query " << i << " rank " << a << ": " << dd << " vs " << it->second;
            seen.push_back(id);
        }
        std::sort(seen.begin(), seen.end());
        ASSERT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << what << ": a repeated id";
        ASSERT_EQ(r.dco[i], t.dco[i]) << what << " query " << i;
    }
}

}  // namespace

TEST(IvfSearch, EqualsBruteForceOverTheProbedLists) {
    const fgt::Sift& s = fgt::sift();
    const int64_t nq = 40;
    for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_HARD}) {
        const fgt::Built& x = shared(rule);
        for (int nprobe : {1, 3, 32})
            for (idx_t k : {1, 10, 100, 1000}) {  // 1000 > every list's size (about 300-500 entries)
                Truth t = truth(x, nq, s.query.data(), nprobe);
                std::string what = std::string(rule == FGMM_ASSIGN_SOAR ? "soar" : "hard") + " nprobe " +
                                   std::to_string(nprobe) + " k " + std::to_string(k);
                expect_matches(run(x, nq, s.query.data(), k, nprobe), t, nq, k, what);
                expect_matches(run(x, nq, s.query.data(), k, nprobe, FGMM_SEARCH_FAISS), t, nq, k, what + " (faiss)");
            }
    }
}

TEST(IvfSearch, SameResultsAtAnyThreadCountAndBatchSize) {
    const fgt::Sift& s = fgt::sift();
    const fgt::Built& x = shared(FGMM_ASSIGN_SOAR);
    const int64_t nq = s.nq;
    int threads = omp_get_max_threads();
    for (int nprobe : {4, 32}) {
        omp_set_num_threads(1);
        Result one = run(x, nq, s.query.data(), 10, nprobe);
        omp_set_num_threads(2);
        Result two = run(x, nq, s.query.data(), 10, nprobe);
        omp_set_num_threads(threads);
        EXPECT_EQ(one.l, two.l) << "nprobe " << nprobe;
        EXPECT_EQ(one.d, two.d) << "nprobe " << nprobe;  // bit for bit
        EXPECT_EQ(one.dco, two.dco);
    }
    // one query per internal batch (all lists probed, so the quantizer's batch does not matter)
    Result all = run(x, nq, s.query.data(), 10, 32);
    Result small = run(x, nq, s.query.data(), 10, 32, FGMM_SEARCH_FLAT, 1);
    EXPECT_EQ(all.l, small.l);
    EXPECT_EQ(all.d, small.d);
    EXPECT_EQ(all.dco, small.dco);
    // several queries per batch, several batches: against the truth of the whole set
    Result mid = run(x, nq, s.query.data(), 10, 32, FGMM_SEARCH_FLAT, 150000);
    expect_matches(mid, truth(x, nq, s.query.data(), 32), nq, 10, "batches of 29 queries");
}

TEST(IvfSearch, EmptyListsAndIdsNearInt64Max) {
    const fgt::Sift& s = fgt::sift();
    fgt::Built x;
    const int64_t first = INT64_MAX - 100;
    build(x, "IVF64,Flat", FGMM_ASSIGN_SOAR, 60, first);  // 60 vectors: most of the 64 lists are empty
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(faiss_IndexIVF_cast(x.index));
    int empty = 0;
    for (int l = 0; l < 64; l++) empty += ivf->invlists->list_size(l) == 0;
    EXPECT_GE(empty, 10);
    const int64_t nq = 30;
    for (int nprobe : {1, 8, 64})
        for (idx_t k : {5, 70}) {  // 70 > the 60 vectors: padded
            Result r = run(x, nq, s.query.data(), k, nprobe);
            expect_matches(r, truth(x, nq, s.query.data(), nprobe), nq, k,
                           "nprobe " + std::to_string(nprobe) + " k " + std::to_string(k));
            for (idx_t id : r.l) EXPECT_TRUE(id == -1 || (id >= first && id < first + 60)) << id;
        }
}

TEST(IvfSearch, HugeKIsFastAndPadded) {
    const fgt::Sift& s = fgt::sift();
    const fgt::Built& x = shared(FGMM_ASSIGN_SOAR);
    const int64_t nq = 10;
    const idx_t k = 160000;
    for (int engine : {FGMM_SEARCH_AUTO, FGMM_SEARCH_FAISS}) {
        auto t0 = std::chrono::steady_clock::now();
        Result r = run(x, nq, s.query.data(), k, 32, engine);
        double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        EXPECT_LT(sec, 1.0) << "engine " << engine;
        for (int64_t i = 0; i < nq; i++) {  // every vector once (all lists probed), then padding
            std::vector<idx_t> row(r.l.begin() + i * k, r.l.begin() + i * k + s.nb);
            std::sort(row.begin(), row.end());
            for (int64_t j = 0; j < s.nb; j++) ASSERT_EQ(row[j], j) << "engine " << engine;
            for (idx_t a = s.nb; a < k; a++) ASSERT_EQ(r.l[i * k + a], -1);
            for (idx_t a = 1; a < s.nb; a++) ASSERT_LE(r.d[i * k + a - 1], r.d[i * k + a]);
        }
    }
}

TEST(IvfSearch, BadQueriesAndEngines) {
    const fgt::Sift& s = fgt::sift();
    fgt::Built x;
    build(x, "IVF16,Flat", FGMM_ASSIGN_SOAR, 2000);
    std::vector<float> q(s.query.begin(), s.query.begin() + 3 * s.d);
    std::vector<float> dist(3 * 10);
    std::vector<idx_t> lab(3 * 10, 7);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
        q[s.d + 5] = bad;
        EXPECT_EQ(fgmm_ivf_search(x.ivf, 3, q.data(), 10, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_DATA);
        EXPECT_NE(std::string(fgmm_get_last_error()).find("fgmm_ivf_search"), std::string::npos);
    }
    q[s.d + 5] = 1;
    EXPECT_EQ(fgmm_ivf_search_with(x.ivf, 3, q.data(), 10, 4, dist.data(), lab.data(), nullptr, 7, 0), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search(x.ivf, 3, q.data(), INT64_MAX / 4, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_ARG);
    // the list-major engine takes IVF-Flat only; IVF-PQ keeps FAISS's search
    fgt::Built pq;
    build(pq, "IVF16,PQ8np", FGMM_ASSIGN_SOAR, 2000);
    EXPECT_EQ(fgmm_ivf_search_with(pq.ivf, 3, q.data(), 10, 4, dist.data(), lab.data(), nullptr, FGMM_SEARCH_FLAT, 0),
              FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_search(pq.ivf, 3, q.data(), 10, 4, dist.data(), lab.data(), nullptr), 0);
    for (idx_t id : lab) EXPECT_TRUE(id >= 0 && id < 2000);
}

namespace {
// IVF{nlist},Flat with d dimensions (any d), trained on n uniform random vectors and holding them
// under the ids given.
void build_random(fgt::Built& x, int d, int nlist, int64_t n, const std::vector<idx_t>& ids, FgmmAssignRule rule,
                  std::vector<float>* base) {
    std::mt19937 g(7);
    std::uniform_real_distribution<float> u(0, 1);
    base->resize((size_t)n * d);
    for (float& v : *base) v = u(g);
    FgmmIvfParams p = fgt::params(rule, 3, 3);
    p.max_points_per_list = 0;
    std::string spec = "IVF" + std::to_string(nlist) + ",Flat";
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(x, d, spec.c_str(), p, n, base->data()));
    ASSERT_EQ(fgmm_ivf_add(x.ivf, n, base->data(), ids.data(), nullptr), 0) << fgmm_get_last_error();
}
}  // namespace

// Ids added many times (each 10 times: more copies than the spill's 2 per id) and d not a multiple
// of the 16 lanes: both engines still give the truth, an id once at its nearest copy's distance.
TEST(IvfSearch, IdsAddedManyTimesAndAnyD) {
    for (int d : {1, 13, 100}) {
        fgt::Built x;
        std::vector<float> base;
        const int64_t n = 600;
        std::vector<idx_t> ids(n);
        for (int64_t i = 0; i < n; i++) ids[i] = i % 60;
        build_random(x, d, 8, n, ids, FGMM_ASSIGN_SOAR, &base);
        const int64_t nq = 20;
        std::vector<float> q(base.begin(), base.begin() + nq * d);
        for (int nprobe : {1, 3, 8, 100})
            for (idx_t k : {1, 5, 20, 70}) {
                Truth t = truth(x, nq, q.data(), nprobe);
                std::string what =
                    "d " + std::to_string(d) + " nprobe " + std::to_string(nprobe) + " k " + std::to_string(k);
                expect_matches(run(x, nq, q.data(), k, nprobe), t, nq, k, what);
                expect_matches(run(x, nq, q.data(), k, nprobe, FGMM_SEARCH_FAISS), t, nq, k, what + " (faiss)");
            }
        // one query per batch: the second pass at every batch
        Truth t = truth(x, nq, q.data(), 3);
        expect_matches(run(x, nq, q.data(), 20, 3, FGMM_SEARCH_FLAT, 1), t, nq, 20, "d " + std::to_string(d) + " b 1");
    }
}

// Threads at once on one handle: both engines (the list-major one on ids added many times, so its
// second pass too) and writers of the index, each search equal to the same search alone.
TEST(IvfSearch, ConcurrentEnginesAndWritersAgreeWithOneThread) {
    fgt::Built x;
    std::vector<float> base;
    const int d = 24;
    const int64_t n = 1200, nq = 40;
    const idx_t k = 15;
    std::vector<idx_t> ids(n);
    for (int64_t i = 0; i < n; i++) ids[i] = i % 200;  // 6 copies per id
    build_random(x, d, 16, n, ids, FGMM_ASSIGN_SOAR, &base);
    const int engines[2] = {FGMM_SEARCH_FLAT, FGMM_SEARCH_FAISS}, probes[2] = {3, 16};
    Result want[2][2];
    for (int e = 0; e < 2; e++)
        for (int p = 0; p < 2; p++) {
            want[e][p] = run(x, nq, base.data(), k, probes[p], engines[e]);
            expect_matches(want[e][p], truth(x, nq, base.data(), probes[p]), nq, k, "alone");
        }
    const int T = 6;
    std::vector<int> bad(T, 0);
    std::vector<std::thread> th;
    for (int t = 0; t < T; t++)
        th.emplace_back([&, t] {
            std::string path = testing::TempDir() + "concurrent_search_" + std::to_string(t) + ".fgmmivf";
            for (int rep = 0; rep < 3; rep++) {
                if (t >= 4) {  // writers
                    bad[t] += fgmm_ivf_write(x.ivf, path.c_str()) != 0;
                    continue;
                }
                int e = t % 2, p = (t / 2 + rep) % 2;
                Result r{std::vector<float>(nq * k), std::vector<idx_t>(nq * k), std::vector<int64_t>(nq)};
                bad[t] += fgmm_ivf_search_with(x.ivf, nq, base.data(), k, probes[p], r.d.data(), r.l.data(),
                                               r.dco.data(), engines[e], 0) != 0;
                bad[t] += r.l != want[e][p].l || r.d != want[e][p].d || r.dco != want[e][p].dco;
            }
        });
    for (auto& h : th) h.join();
    for (int t = 0; t < T; t++) EXPECT_EQ(bad[t], 0) << "thread " << t;
}
