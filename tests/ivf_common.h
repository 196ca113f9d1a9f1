/* SPDX-License-Identifier: MIT */
// What the FAISS plugin tests share (tests/test_ivf_*.cpp): the embedded FLANN sift10K set,
// default params, building and measuring an index, a view of its inverted lists.
#ifndef FGMM_TESTS_IVF_COMMON_H
#define FGMM_TESTS_IVF_COMMON_H
#include <gtest/gtest.h>

#include <faiss/IndexIVFPQ.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "faiss_bridge.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "flashgmm_spill.h"
#include "ivf_impl.h"

namespace fgt {

struct Sift {
    std::vector<float> base, query;
    std::vector<int32_t> gt;  // 10 nearest base ids per query
    int64_t nb = 0, nq = 0;
    int d = 0;
};

inline const Sift& sift() {
    static Sift s = [] {
        Sift r;
        r.base = fgt::embedded_u8("sift10K_byte.h5", "dataset", &r.nb, &r.d);
        r.query = fgt::embedded_u8("sift10K_byte.h5", "query", &r.nq, &r.d);
        EXPECT_FALSE(r.base.empty() || r.query.empty());
        FgmmVecs m;
        EXPECT_EQ(fgmm_vecs_read(fgt::embedded("sift10K_byte.h5").c_str(), "match", 0, &m), 0);
        EXPECT_EQ(m.dtype, FGMM_I32);
        for (int64_t i = 0; i < m.n; i++) r.gt.push_back(((int32_t*)m.data)[i * m.d]);  // 1-NN
        fgmm_vecs_free(&m);
        return r;
    }();
    return s;
}

// sift() with its first max_nq queries only (query rows and gt cut to match).
inline Sift sift_head(int64_t max_nq) {
    Sift r = sift();
    r.nq = std::min(r.nq, max_nq);
    r.query.resize((size_t)r.nq * r.d);
    r.gt.resize((size_t)r.nq);
    return r;
}

// The defaults but the rule and a short GMM: niter EM iterations after kmeans_iter k-means ones.
inline FgmmIvfParams params(FgmmAssignRule rule, int niter, int kmeans_iter) {
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = rule;
    p.gmm.niter = niter;
    p.gmm.kmeans_iter = kmeans_iter;
    return p;
}

inline FgmmIvfParams params(FgmmAssignRule rule) {
    FgmmIvfParams p = params(rule, 8, 5);
    p.max_points_per_list = 0;  // all points, gmm as given on every backend (not the CPU schedule)
    return p;
}

struct Built {
    FaissIndex* index = nullptr;
    FgmmIvf* ivf = nullptr;
    ~Built() {
        fgmm_ivf_free(ivf);
        faiss_Index_free(index);
    }
};

// b: the index spec makes (d dimensions, L2), wrapped with p, trained on the n rows of x; nothing added.
inline void train_on(Built& b, int d, const char* spec, const FgmmIvfParams& p, int64_t n, const float* x) {
    ASSERT_EQ(faiss_index_factory(&b.index, d, spec, METRIC_L2), 0);
    ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_train(b.ivf, n, x, nullptr), 0) << fgmm_get_last_error();
}

inline void build(Built& b, const char* spec, const FgmmIvfParams& p) {
    const Sift& s = sift();
    ASSERT_NO_FATAL_FAILURE(train_on(b, s.d, spec, p, s.nb, s.base.data()));
    ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
}

inline double recall_at(const FgmmIvf* ivf, int k, int nprobe, double* mean_dco) {
    const Sift& s = sift();
    std::vector<idx_t> lab(s.nq * k);
    std::vector<float> dist(s.nq * k);
    std::vector<int64_t> dco(s.nq);
    EXPECT_EQ(fgmm_ivf_search(ivf, s.nq, s.query.data(), k, nprobe, dist.data(), lab.data(), dco.data()), 0);
    int hit = 0;
    double sd = 0;
    for (int64_t i = 0; i < s.nq; i++) {
        for (int t = 0; t < k; t++) hit += lab[i * k + t] == s.gt[i];
        sd += dco[i];
    }
    if (mean_dco) *mean_dco = sd / s.nq;
    return (double)hit / s.nq;
}

inline faiss::IndexIVF* cxx(FaissIndex* index) {
    return reinterpret_cast<faiss::IndexIVF*>(faiss_IndexIVF_cast(index));
}

// 8-bit IVF-PQ trains polysemous codes by default (simulated annealing: most of the training time in
// these tests); the adds do not depend on it.
inline void no_polysemous(FaissIndex* index) {
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(cxx(index))) pq->do_polysemous_training = false;
}

// One inverted list's ids and codes, in stored order.
struct ListView {
    std::vector<int64_t> ids;
    std::vector<uint8_t> codes;
    bool operator==(const ListView& o) const { return ids == o.ids && codes == o.codes; }
};
inline std::vector<ListView> lists_of(FaissIndex* index) {
    const faiss::InvertedLists* il = cxx(index)->invlists;
    std::vector<ListView> out(il->nlist);
    for (size_t l = 0; l < il->nlist; l++) {
        size_t n = il->list_size(l);
        faiss::InvertedLists::ScopedIds ids(il, l);
        faiss::InvertedLists::ScopedCodes codes(il, l);
        out[l].ids.assign(ids.get(), ids.get() + n);
        out[l].codes.assign(codes.get(), codes.get() + n * il->code_size);
    }
    return out;
}

inline std::vector<float> gaussian_rows(int64_t n, int d, uint64_t seed) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> nd;
    std::vector<float> x((size_t)n * d);
    for (auto& v : x) v = nd(g);
    return x;
}

}  // namespace fgt

#endif  // FGMM_TESTS_IVF_COMMON_H
