/* SPDX-License-Identifier: MIT */
// Exact re-ranking (fgmm_ivf_refine_flat, plugin/ivf_refine.c) of a spilled IVF-PQ index: results
// against a float64 brute force, distinct ids, DCO, bad k_factors, the refine copy in the index file
// (version 2) and thread independence, on the embedded sift10K set.
#include <gtest/gtest.h>
#include <omp.h>

#include <faiss/c_api/index_factory_c.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "common.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_common.h"
#include "ivf_impl.h"

namespace fs = std::filesystem;

namespace {

// sift10K, its first 100 queries.
const fgt::Sift& data() {
    static const fgt::Sift s = fgt::sift_head(100);
    return s;
}

constexpr int NLIST = 16;
constexpr idx_t K = 10;

// IVF16,PQ8np (no polysemous training: slow, and unused by search; PQ8 alone ranks badly), SOAR
// spill, trained on the first ntrain vectors (0: all); a refine copy (k_factor kf) where kf > 0; n
// vectors added without ids.
void build(fgt::Built& x, float kf, int64_t n, int64_t ntrain = 0) {
    const fgt::Sift& s = data();
    FgmmIvfParams p = fgt::params(FGMM_ASSIGN_SOAR, 5, 5);
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(x, s.d, "IVF16,PQ8np", p, ntrain ? ntrain : s.nb, s.base.data()));
    if (kf > 0) ASSERT_EQ(fgmm_ivf_refine_flat(x.ivf, kf), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_add(x.ivf, n, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
}

const fgt::Built& shared() {
    static fgt::Built x;
    if (!x.ivf) build(x, 4.0f, data().nb);
    return x;
}

struct Result {
    std::vector<float> d;
    std::vector<idx_t> l;
    std::vector<int64_t> dco;
};

Result refine(const FgmmIvf* h, idx_t k, int nprobe, float kf) {
    const fgt::Sift& s = data();
    Result r{std::vector<float>(s.nq * k), std::vector<idx_t>(s.nq * k), std::vector<int64_t>(s.nq)};
    EXPECT_EQ(fgmm_ivf_search_refine(h, s.nq, s.query.data(), k, nprobe, kf, r.d.data(), r.l.data(), r.dco.data()), 0)
        << fgmm_get_last_error();
    return r;
}

double exact(int64_t id, int64_t qi) {
    const fgt::Sift& s = data();
    double t = 0;
    for (int c = 0; c < s.d; c++) {
        double e = (double)s.base[id * s.d + c] - s.query[qi * s.d + c];
        t += e * e;
    }
    return t;
}

bool close(double a, double b) { return std::fabs(a - b) <= 1e-4 * std::max(std::fabs(b), 1.0); }

// Every row: k distinct ids whose distances are their exact distances, ascending.
void expect_exact_rows(const Result& r, idx_t k) {
    const fgt::Sift& s = data();
    for (int64_t i = 0; i < s.nq; i++) {
        std::set<idx_t> seen;
        for (idx_t t = 0; t < k; t++) {
            idx_t id = r.l[i * k + t];
            ASSERT_GE(id, 0) << i;
            EXPECT_TRUE(seen.insert(id).second) << "query " << i << ": id " << id << " twice";
            EXPECT_TRUE(close(r.d[i * k + t], exact(id, i))) << i << " " << t;
            if (t) EXPECT_LE(r.d[i * k + t - 1], r.d[i * k + t]) << i << " " << t;
        }
    }
}

TEST(IvfRefine, AllCandidatesEqualsBruteForce) {
    const fgt::Sift& s = data();
    const fgt::Built& x = shared();
    // every list probed and k x k_factor >= all vectors: the exact top k of the whole base
    float kf = (float)s.nb / K + 1;
    Result r = refine(x.ivf, K, NLIST, kf);
    expect_exact_rows(r, K);
    int64_t entries = faiss_Index_ntotal(x.index);
    for (int64_t i = 0; i < s.nq; i++) {
        std::vector<std::pair<double, idx_t>> all;
        for (int64_t j = 0; j < s.nb; j++) all.emplace_back(exact(j, i), j);
        std::partial_sort(all.begin(), all.begin() + K, all.end());
        for (idx_t t = 0; t < K; t++)
            EXPECT_TRUE(close(r.d[i * K + t], all[t].first)) << "query " << i << " rank " << t;
        // DCO: the index's (nlist + every entry) + one exact distance per vector
        EXPECT_EQ(r.dco[i], NLIST + entries + s.nb) << i;
    }
}

TEST(IvfRefine, KeepsTheBestOfTheIndexCandidates) {
    const fgt::Sift& s = data();
    const fgt::Built& x = shared();
    const int nprobe = 2;
    const float kf = 3.5f;  // 35 candidates
    const idx_t kb = 35;
    Result r = refine(x.ivf, K, nprobe, kf);
    expect_exact_rows(r, K);
    std::vector<float> cd(s.nq * kb);
    std::vector<idx_t> cl(s.nq * kb);
    std::vector<int64_t> cdco(s.nq);
    ASSERT_EQ(fgmm_ivf_search_with(x.ivf, s.nq, s.query.data(), kb, nprobe, cd.data(), cl.data(), cdco.data(),
                                   FGMM_SEARCH_AUTO, 0),
              0);
    for (int64_t i = 0; i < s.nq; i++) {
        std::vector<std::pair<double, idx_t>> c;
        for (idx_t j = 0; j < kb && cl[i * kb + j] >= 0; j++) c.emplace_back(exact(cl[i * kb + j], i), cl[i * kb + j]);
        std::sort(c.begin(), c.end());
        ASSERT_GE(c.size(), (size_t)K);
        for (idx_t t = 0; t < K; t++) EXPECT_TRUE(close(r.d[i * K + t], c[t].first)) << i << " " << t;
        EXPECT_EQ(r.dco[i], cdco[i] + (int64_t)c.size()) << i;
    }
}

TEST(IvfRefine, RaisesRecallOverPqAlone) {
    const fgt::Sift& s = data();
    const fgt::Built& x = shared();
    std::vector<int32_t> gt(s.nq * K);
    for (int64_t i = 0; i < s.nq; i++) {
        std::vector<std::pair<double, idx_t>> all;
        for (int64_t j = 0; j < s.nb; j++) all.emplace_back(exact(j, i), j);
        std::partial_sort(all.begin(), all.begin() + K, all.end());
        for (idx_t t = 0; t < K; t++) gt[i * K + t] = (int32_t)all[t].second;
    }
    std::vector<float> d(s.nq * K);
    std::vector<idx_t> l(s.nq * K);
    ASSERT_EQ(fgmm_ivf_search_with(x.ivf, s.nq, s.query.data(), K, 8, d.data(), l.data(), nullptr, FGMM_SEARCH_AUTO, 0),
              0);
    double pq = fgmm_recall(s.nq, K, l.data(), K, gt.data());
    Result r = refine(x.ivf, K, 8, 8.0f);
    double rf = fgmm_recall(s.nq, K, r.l.data(), K, gt.data());
    // fgmm_ivf_search of the handle uses its own k_factor (4): between the two
    ASSERT_EQ(fgmm_ivf_search(x.ivf, s.nq, s.query.data(), K, 8, d.data(), l.data(), nullptr), 0);
    double r4 = fgmm_recall(s.nq, K, l.data(), K, gt.data());
    EXPECT_GT(rf, pq + 0.2) << "PQ8 alone " << pq << ", refined x8 " << rf;
    EXPECT_GT(r4, pq + 0.1);
    EXPECT_LE(r4, rf + 1e-9);
    std::printf("recall@10 at nprobe 8: PQ8 %.3f, refine k_factor 4 %.3f, 8 %.3f\n", pq, r4, rf);
}

TEST(IvfRefine, ThreadCountDoesNotChangeResults) {
    const fgt::Built& x = shared();
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    Result a = refine(x.ivf, K, 4, 3.0f);
    omp_set_num_threads(3);
    Result b = refine(x.ivf, K, 4, 3.0f);
    omp_set_num_threads(nt);
    EXPECT_EQ(a.l, b.l);
    EXPECT_EQ(0, std::memcmp(a.d.data(), b.d.data(), a.d.size() * sizeof(float)));
    EXPECT_EQ(a.dco, b.dco);
}

TEST(IvfRefine, BadArgumentsAreRefused) {
    const fgt::Sift& s = data();
    const fgt::Built& x = shared();
    float d[K];
    idx_t l[K];
    for (float kf : {0.0f, 0.5f, -1.0f, NAN, INFINITY}) {
        EXPECT_EQ(fgmm_ivf_search_refine(x.ivf, 1, s.query.data(), K, 2, kf, d, l, nullptr), FGMM_ERR_ARG) << kf;
        EXPECT_NE(std::string(fgmm_get_last_error()).find("k_factor"), std::string::npos);
    }
    // k x k_factor beyond 2^24 candidates
    EXPECT_EQ(fgmm_ivf_search_refine(x.ivf, 1, s.query.data(), K, 2, 2e6f, d, l, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search_refine(x.ivf, 1, s.query.data(), 0, 2, 2.0f, d, l, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search_refine(nullptr, 1, s.query.data(), K, 2, 2.0f, d, l, nullptr), FGMM_ERR_NULL);

    fgt::Built plain;
    build(plain, 0, 500, 3000);
    EXPECT_EQ(fgmm_ivf_search_refine(plain.ivf, 1, s.query.data(), K, 2, 2.0f, d, l, nullptr), FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_refine_bytes(plain.ivf), 0);
    // a refine copy starts with an empty index; a bad k_factor is refused before that
    EXPECT_EQ(fgmm_ivf_refine_flat(plain.ivf, 2.0f), FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_refine_flat(plain.ivf, 0.5f), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_refine_flat(nullptr, 2.0f), FGMM_ERR_NULL);

    // ids other than the next ones in order: refused, nothing added
    fgt::Built r;
    build(r, 2.0f, 100, 3000);
    int64_t entries = faiss_Index_ntotal(r.index);
    std::vector<idx_t> ids = {100, 101, 103};
    EXPECT_EQ(fgmm_ivf_add(r.ivf, 3, s.base.data() + 100 * s.d, ids.data(), nullptr), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("ids[2] = 103"), std::string::npos) << fgmm_get_last_error();
    EXPECT_EQ(faiss_Index_ntotal(r.index), entries);
    EXPECT_EQ(fgmm_ivf_refine_bytes(r.ivf), 100 * s.d * 4);
    ids[2] = 102;  // the next ones: taken
    EXPECT_EQ(fgmm_ivf_add(r.ivf, 3, s.base.data() + 100 * s.d, ids.data(), nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_ivf_refine_bytes(r.ivf), 103 * s.d * 4);
    // k_factor may change after adds
    EXPECT_EQ(fgmm_ivf_refine_flat(r.ivf, 3.0f), 0);
}

std::string slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

uint32_t le32(const std::string& b, size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | (uint8_t)b[at + i];
    return v;
}

TEST(IvfRefine, RoundTripsThroughTheIndexFile) {
    const fgt::Sift& s = data();
    const fgt::Built& x = shared();
    fs::path dir = fs::temp_directory_path() / ("fgmm_refine_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::string path = (dir / "r.fgmmivf").string(), plain_path = (dir / "p.fgmmivf").string();
    ASSERT_EQ(fgmm_ivf_write(x.ivf, path.c_str()), 0) << fgmm_get_last_error();
    std::string good = slurp(path);
    EXPECT_EQ(le32(good, 8), 2u);   // version 2: readers of version 1 refuse it ("format version 2")
    EXPECT_EQ(le32(good, 12), 4u);  // 4 sections
    EXPECT_EQ(good.substr(16 + 3 * 24, 4), "RFLT");
    FgmmIvf* r = nullptr;
    ASSERT_EQ(fgmm_ivf_read(path.c_str(), nullptr, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_ivf_refine_bytes(r), fgmm_ivf_refine_bytes(x.ivf));
    EXPECT_EQ(fgmm_ivf_refine_bytes(r), s.nb * s.d * 4);
    Result a = refine(x.ivf, K, 4, 2.5f), b = refine(r, K, 4, 2.5f);
    EXPECT_EQ(a.l, b.l);
    EXPECT_EQ(0, std::memcmp(a.d.data(), b.d.data(), a.d.size() * sizeof(float)));
    EXPECT_EQ(a.dco, b.dco);
    // the handle's k_factor (4) is saved: fgmm_ivf_search of the copy equals the original's
    std::vector<float> d1(s.nq * K), d2(s.nq * K);
    std::vector<idx_t> l1(s.nq * K), l2(s.nq * K);
    ASSERT_EQ(fgmm_ivf_search(x.ivf, s.nq, s.query.data(), K, 4, d1.data(), l1.data(), nullptr), 0);
    ASSERT_EQ(fgmm_ivf_search(r, s.nq, s.query.data(), K, 4, d2.data(), l2.data(), nullptr), 0);
    EXPECT_EQ(l1, l2);
    Result r4 = refine(x.ivf, K, 4, 4.0f);
    EXPECT_EQ(l1, r4.l);
    // the copy adds on: rows continue from the saved ones
    ASSERT_EQ(fgmm_ivf_add(r, 2, s.query.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_ivf_refine_bytes(r), (s.nb + 2) * s.d * 4);
    float d[K];
    idx_t l[K];
    ASSERT_EQ(fgmm_ivf_search_refine(r, 1, s.query.data(), K, NLIST, 2.0f, d, l, nullptr), 0);
    EXPECT_EQ(l[0], s.nb);  // the query itself, added as id nb
    EXPECT_EQ(d[0], 0.0f);
    fgmm_ivf_free(r);

    // an index without a refine copy stays version 1 (3 sections): readers of version 1 read it
    fgt::Built plain;
    build(plain, 0, 300, 3000);
    ASSERT_EQ(fgmm_ivf_write(plain.ivf, plain_path.c_str()), 0);
    std::string p = slurp(plain_path);
    EXPECT_EQ(le32(p, 8), 1u);
    EXPECT_EQ(le32(p, 12), 3u);

    // damage: a flipped byte in the rows, the section cut, every length short of the whole
    std::string bad = (dir / "bad.fgmmivf").string();
    std::string b1 = good;
    b1[b1.size() - 5] ^= 0x10;
    spit(bad, b1);
    EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("'RFLT' checksum mismatch"), std::string::npos)
        << fgmm_get_last_error();
    EXPECT_EQ(r, nullptr);
    for (size_t cut : {good.size() - 1, good.size() - 4 * (size_t)s.d, good.size() / 2, (size_t)100}) {
        spit(bad, good.substr(0, cut));
        EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO) << cut;
        EXPECT_EQ(r, nullptr);
    }
    fs::remove_all(dir);
}

}  // namespace
