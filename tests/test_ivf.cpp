/* SPDX-License-Identifier: MIT */
// FAISS plugin: GMM-trained IVF-Flat / IVF-PQ on real SIFT (the embedded FLANN sift10K set).
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
#include <thread>
#include <set>
#include <string>
#include <vector>

#include "common.h"
#include "faiss_bridge.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "flashgmm_spill.h"
#include "ivf_impl.h"

namespace {

struct Sift {
    std::vector<float> base, query;
    std::vector<int32_t> gt;  // 10 nearest base ids per query
    int64_t nb = 0, nq = 0;
    int d = 0;
};

const Sift& sift() {
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

FgmmIvfParams params(FgmmAssignRule rule) {
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = rule;
    p.gmm.niter = 8;
    p.gmm.kmeans_iter = 5;
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

void build(Built& b, const char* spec, const FgmmIvfParams& p) {
    const Sift& s = sift();
    ASSERT_EQ(faiss_index_factory(&b.index, s.d, spec, METRIC_L2), 0);
    ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_train(b.ivf, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
}

double recall_at(const FgmmIvf* ivf, int k, int nprobe, double* mean_dco) {
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

faiss::IndexIVF* cxx(FaissIndex* index) { return reinterpret_cast<faiss::IndexIVF*>(faiss_IndexIVF_cast(index)); }

// 8-bit IVF-PQ trains polysemous codes by default (simulated annealing: most of the training time in
// these tests); the adds do not depend on it.
void no_polysemous(FaissIndex* index) {
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(cxx(index))) pq->do_polysemous_training = false;
}

// One inverted list's ids and codes, in stored order.
struct ListView {
    std::vector<int64_t> ids;
    std::vector<uint8_t> codes;
    bool operator==(const ListView& o) const { return ids == o.ids && codes == o.codes; }
};
std::vector<ListView> lists_of(FaissIndex* index) {
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

std::vector<float> gaussian_rows(int64_t n, int d, uint64_t seed) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> nd;
    std::vector<float> x((size_t)n * d);
    for (auto& v : x) v = nd(g);
    return x;
}

}  // namespace

TEST(Ivf, FlatTrainsAddsAndSearchesWithSpill) {
    Built b;
    build(b, "IVF64,Flat", params(FGMM_ASSIGN_TAU));
    const Sift& s = sift();
    EXPECT_TRUE(faiss_Index_is_trained(b.index));
    double infl = fgmm_ivf_inflation(b.ivf);
    EXPECT_GT(infl, 1.01);  // tau = 1/64 spills real SIFT
    EXPECT_LE(infl, 4.0);
    EXPECT_EQ(faiss_Index_ntotal(b.index), (idx_t)std::llround(infl * s.nb));
    double dco;
    double r = recall_at(b.ivf, 10, 8, &dco);
    EXPECT_GT(r, 0.9) << "1-NN in top 10 at nprobe 8";
    // DCO = nlist + scanned list sizes: between nlist + 8 smallest and nlist + 8 * max list size
    EXPECT_GT(dco, 64 + 8 * 10);
    EXPECT_LT(dco, 64 + infl * s.nb);
}

TEST(Ivf, SearchResultsAreDistinctIdsInDistanceOrder) {
    Built b;
    FgmmIvfParams p = params(FGMM_ASSIGN_TAU);
    p.tau = 1e-6;  // heavy spill: many duplicates to remove
    build(b, "IVF64,Flat", p);
    const Sift& s = sift();
    int k = 20;
    std::vector<idx_t> lab(200 * k);
    std::vector<float> dist(200 * k);
    ASSERT_EQ(fgmm_ivf_search(b.ivf, 200, s.query.data(), k, 16, dist.data(), lab.data(), nullptr), 0);
    for (int i = 0; i < 200; i++) {
        std::set<idx_t> seen;
        for (int t = 0; t < k; t++) {
            ASSERT_GE(lab[i * k + t], 0);
            EXPECT_TRUE(seen.insert(lab[i * k + t]).second) << "duplicate id in query " << i;
            if (t) EXPECT_LE(dist[i * k + t - 1], dist[i * k + t]);
        }
    }
}

TEST(Ivf, NoSpillEqualsPlainIvfWithSameCentroids) {
    Built b;
    FgmmIvfParams p = params(FGMM_ASSIGN_TAU);
    p.tau = 1.0;  // r > 1 never holds: primary list only
    build(b, "IVF64,Flat", p);
    EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(b.ivf), 1.0);
    const Sift& s = sift();
    // A plain FAISS IVF whose quantizer holds the same means, filled by FAISS's own add.
    FaissIndex* plain = nullptr;
    ASSERT_EQ(faiss_index_factory(&plain, s.d, "IVF64,Flat", METRIC_L2), 0);
    FaissIndex* q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(plain));
    ASSERT_EQ(faiss_Index_add(q, 64, fgmm_model_means(fgmm_ivf_model(b.ivf))), 0);
    ASSERT_EQ(faiss_Index_train(plain, s.nb, s.base.data()), 0);
    ASSERT_EQ(faiss_Index_add(plain, s.nb, s.base.data()), 0);
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(plain), 4);
    int k = 10, nq = 300;
    std::vector<idx_t> a(nq * k), e(nq * k);
    std::vector<float> da(nq * k), de(nq * k);
    ASSERT_EQ(fgmm_ivf_search(b.ivf, nq, s.query.data(), k, 4, da.data(), a.data(), nullptr), 0);
    ASSERT_EQ(faiss_Index_search(plain, nq, s.query.data(), k, de.data(), e.data()), 0);
    EXPECT_EQ(a, e);
    faiss_Index_free(plain);
}

TEST(Ivf, SpillNeverLosesAVector) {
    Built b;
    build(b, "IVF64,Flat", params(FGMM_ASSIGN_TAU));
    const Sift& s = sift();
    // Every base vector, queried over all lists, finds itself at distance 0.
    int nq = 500;
    std::vector<idx_t> lab(nq);
    std::vector<float> dist(nq);
    std::vector<float> qs(s.base.begin(), s.base.begin() + (size_t)nq * s.d);
    ASSERT_EQ(fgmm_ivf_search(b.ivf, nq, qs.data(), 1, 64, dist.data(), lab.data(), nullptr), 0);
    for (int i = 0; i < nq; i++) EXPECT_EQ(dist[i], 0.0f) << i;
}

TEST(Ivf, SpillImprovesRecallOverHardAssignment) {
    Built hard, spill;
    build(hard, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    build(spill, "IVF64,Flat", params(FGMM_ASSIGN_TAU));
    double dh, ds;
    double rh = recall_at(hard.ivf, 10, 2, &dh), rs = recall_at(spill.ivf, 10, 2, &ds);
    EXPECT_GT(rs, rh);  // same nprobe: more copies scanned, more found
    EXPECT_GT(ds, dh);
}

TEST(Ivf, PqPathAndRoundTrip) {
    Built b;
    build(b, "IVF32,PQ16x4", params(FGMM_ASSIGN_TAU));  // 4-bit codes: PQ training stays fast in CI
    const Sift& s = sift();
    double dco;
    EXPECT_GT(recall_at(b.ivf, 10, 8, &dco), 0.5);  // 64-bit codes: approximate distances
    std::string f = testing::TempDir() + "ivfpq.faiss";
    ASSERT_EQ(fgmm_ivf_write(b.ivf, f.c_str()), 0) << fgmm_get_last_error();
    FgmmIvf* r = nullptr;
    FgmmIvfParams p = params(FGMM_ASSIGN_TAU);
    ASSERT_EQ(fgmm_ivf_read(f.c_str(), &p, &r), 0) << fgmm_get_last_error();
    ASSERT_NE(fgmm_ivf_model(r), nullptr);
    int k = 10, nq = 200;
    std::vector<idx_t> a(nq * k), c(nq * k);
    std::vector<float> da(nq * k), dc(nq * k);
    ASSERT_EQ(fgmm_ivf_search(b.ivf, nq, s.query.data(), k, 8, da.data(), a.data(), nullptr), 0);
    ASSERT_EQ(fgmm_ivf_search(r, nq, s.query.data(), k, 8, dc.data(), c.data(), nullptr), 0);
    EXPECT_EQ(a, c);
    EXPECT_EQ(da, dc);
    // Adding after the round trip continues the ids.
    ASSERT_EQ(fgmm_ivf_add(r, 10, s.base.data(), nullptr, nullptr), 0);
    fgmm_ivf_free(r);
}

TEST(Ivf, TopmHardSpillOnAFaissKmeansIndex) {
    const Sift& s = sift();
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF64,Flat", METRIC_L2), 0);
    ASSERT_EQ(faiss_Index_train(index, s.nb, s.base.data()), 0);  // FAISS's own k-means
    FgmmIvfParams p = params(FGMM_ASSIGN_TOPM);
    p.max_assign = 2;
    FgmmIvf* ivf = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    ASSERT_EQ(fgmm_ivf_add(ivf, s.nb, s.base.data(), nullptr, nullptr), 0);
    EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(ivf), 2.0);
    EXPECT_GT(recall_at(ivf, 10, 8, nullptr), 0.9);
    p.rule = FGMM_ASSIGN_TAU;  // the GMM rule needs a GMM
    FgmmIvf* tau = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &tau), 0);
    EXPECT_EQ(fgmm_ivf_add(tau, 5, s.base.data(), nullptr, nullptr), FGMM_ERR_STATE);
    fgmm_ivf_free(tau);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

TEST(Ivf, BadInputsGiveClearErrors) {
    const Sift& s = sift();
    FgmmIvf* ivf = nullptr;
    FgmmIvfParams p = params(FGMM_ASSIGN_TAU);
    EXPECT_EQ(fgmm_ivf_wrap(nullptr, &p, &ivf), FGMM_ERR_NULL);
    FaissIndex* flat = nullptr;
    ASSERT_EQ(faiss_index_factory(&flat, s.d, "Flat", METRIC_L2), 0);
    EXPECT_EQ(fgmm_ivf_wrap(flat, &p, &ivf), FGMM_ERR_STATE);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("not an IVF"), std::string::npos);
    faiss_Index_free(flat);
    FaissIndex* ip = nullptr;
    ASSERT_EQ(faiss_index_factory(&ip, s.d, "IVF16,Flat", METRIC_INNER_PRODUCT), 0);
    EXPECT_EQ(fgmm_ivf_wrap(ip, &p, &ivf), FGMM_ERR_STATE);
    faiss_Index_free(ip);
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF16,Flat", METRIC_L2), 0);
    p.max_assign = 0;
    EXPECT_EQ(fgmm_ivf_wrap(index, &p, &ivf), FGMM_ERR_ARG);
    p.max_assign = 4;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    std::vector<idx_t> lab(10);
    std::vector<float> dist(10);
    EXPECT_EQ(fgmm_ivf_search(ivf, 1, s.query.data(), 10, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_add(ivf, 10, s.base.data(), nullptr, nullptr), FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_train(ivf, 10, s.base.data(), nullptr), FGMM_ERR_ARG);  // n < nlist
    ASSERT_EQ(fgmm_ivf_train(ivf, 2000, s.base.data(), nullptr), 0);
    EXPECT_EQ(fgmm_ivf_train(ivf, 2000, s.base.data(), nullptr), FGMM_ERR_STATE);  // already trained
    EXPECT_EQ(fgmm_ivf_search(ivf, 1, s.query.data(), 0, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search(ivf, 1, nullptr, 10, 4, dist.data(), lab.data(), nullptr), FGMM_ERR_NULL);
    std::vector<float> bad(s.base.begin(), s.base.begin() + 128);
    bad[3] = NAN;
    EXPECT_EQ(fgmm_ivf_add(ivf, 1, bad.data(), nullptr, nullptr), FGMM_ERR_DATA);
    std::string f = testing::TempDir() + "bad_inputs.faiss";
    FgmmIvf* r = nullptr;
    EXPECT_EQ(fgmm_ivf_read("/nonexistent.faiss", &p, &r), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_ivf_read(nullptr, &p, &r), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(nullptr, f.c_str()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(ivf, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(ivf, "/nonexistent/dir/x.faiss"), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_ivf_set_gmm(nullptr, fgmm_ivf_model(ivf), 10, s.base.data()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_set_gmm(ivf, nullptr, 10, s.base.data()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_add(nullptr, 1, s.base.data(), nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_train(nullptr, 10, s.base.data(), nullptr), FGMM_ERR_NULL);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

TEST(Ivf, SetGmmReusesOneTrainedModel) {
    Built a;
    build(a, "IVF64,Flat", params(FGMM_ASSIGN_TAU));
    const Sift& s = sift();
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF64,Flat", METRIC_L2), 0);
    FgmmIvfParams p = params(FGMM_ASSIGN_TAU);
    FgmmIvf* b = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &b), 0);
    ASSERT_EQ(fgmm_ivf_set_gmm(b, fgmm_ivf_model(a.ivf), s.nb, s.base.data()), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_ivf_set_gmm(b, fgmm_ivf_model(a.ivf), s.nb, s.base.data()), FGMM_ERR_STATE);  // trained now
    ASSERT_EQ(fgmm_ivf_add(b, s.nb, s.base.data(), nullptr, nullptr), 0);
    EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(b), fgmm_ivf_inflation(a.ivf));
    int k = 10, nq = 100;
    std::vector<idx_t> la(nq * k), lb(nq * k);
    std::vector<float> da(nq * k), db(nq * k);
    ASSERT_EQ(fgmm_ivf_search(a.ivf, nq, s.query.data(), k, 4, da.data(), la.data(), nullptr), 0);
    ASSERT_EQ(fgmm_ivf_search(b, nq, s.query.data(), k, 4, db.data(), lb.data(), nullptr), 0);
    EXPECT_EQ(la, lb);
    fgmm_ivf_free(b);
    faiss_Index_free(index);
    // A GMM of the wrong shape is refused.
    FaissIndex* other = nullptr;
    ASSERT_EQ(faiss_index_factory(&other, s.d, "IVF32,Flat", METRIC_L2), 0);
    ASSERT_EQ(fgmm_ivf_wrap(other, &p, &b), 0);
    EXPECT_EQ(fgmm_ivf_set_gmm(b, fgmm_ivf_model(a.ivf), s.nb, s.base.data()), FGMM_ERR_ARG);
    fgmm_ivf_free(b);
    faiss_Index_free(other);
}

TEST(Ivf, RecallAndDcoOnAHandCheckedCase) {
    // recall@2: query 0 finds {5, 9} of true {9, 4} -> 1/2; query 1 finds {1, -1} of {1, 2} -> 1/2.
    idx_t lab[4] = {5, 9, 1, -1};
    int32_t gt[6] = {9, 4, 7, 1, 2, 3};  // gt_k = 3
    EXPECT_DOUBLE_EQ(fgmm_recall(2, 2, lab, 3, gt), 0.5);
    EXPECT_EQ(fgmm_recall(2, 4, lab, 3, gt), -1);  // k > gt_k
    // 1-D points 0,1,2 near mean 0 and 10,11 near mean 10, nlist = 2, no spill (tau = 1).
    float x[5] = {0, 1, 2, 10, 11}, mu[2] = {0, 10}, var[2] = {1, 1}, w[2] = {1, 1};
    FgmmModel* m = nullptr;
    ASSERT_EQ(fgmm_model_new(&m, 2, 1, FGMM_COV_ISOTROPIC, mu, var, w), 0);
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, 1, "IVF2,Flat", METRIC_L2), 0);
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = FGMM_ASSIGN_HARD;
    FgmmIvf* ivf = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    ASSERT_EQ(fgmm_ivf_set_gmm(ivf, m, 5, x), 0);
    ASSERT_EQ(fgmm_ivf_add(ivf, 5, x, nullptr, nullptr), 0);
    float q[2] = {1.2f, 10.4f}, dist[4];
    idx_t out[4];
    int64_t dco[2];
    ASSERT_EQ(fgmm_ivf_search(ivf, 2, q, 2, 1, dist, out, dco), 0);
    EXPECT_EQ(dco[0], 2 + 3);  // 2 centroids + the 3 entries of list 0
    EXPECT_EQ(dco[1], 2 + 2);  // 2 centroids + list 1
    EXPECT_EQ(out[0], 1);      // 1.2 -> point 1 (0.04), then point 2 (0.64)
    EXPECT_EQ(out[1], 2);
    EXPECT_NEAR(dist[0], 0.04f, 1e-6);
    EXPECT_EQ(out[2], 3);      // 10.4 -> 10 (0.16), 11 (0.36)
    ASSERT_EQ(fgmm_ivf_search(ivf, 2, q, 2, 2, dist, out, dco), 0);
    EXPECT_EQ(dco[0], 2 + 5);  // both lists scanned
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
    fgmm_model_free(m);
}

TEST(Soar, ChoiceMinimisesItsLossByBruteForce) {
    std::mt19937 g(7);
    std::normal_distribution<float> nd;
    for (float offset : {0.0f, 1000.0f}) {  // far from the origin: same choices up to rounding
        int n = 400, d = 24, k = 37;
        std::vector<float> x((size_t)n * d), c((size_t)k * d);
        for (auto& v : x) v = nd(g) + offset;
        for (auto& v : c) v = nd(g) * 0.8f + offset;
        for (float lambda : {0.0f, 1.0f, 4.0f}) {
            std::vector<idx_t> prim(n), sp(n);
            std::vector<float> d1(n), d2(n);
            ASSERT_EQ(fgmm_soar_assign(n, d, x.data(), k, c.data(), lambda, prim.data(), sp.data(), d1.data(), d2.data()),
                      0) << fgmm_get_last_error();
            for (int i = 0; i < n; i++) {
                const float* xi = &x[(size_t)i * d];
                std::vector<double> dist(k);
                for (int j = 0; j < k; j++) dist[j] = fgmm_soar_loss(d, xi, &c[(size_t)j * d], &c[(size_t)j * d], 0);
                std::vector<double> sorted = dist;
                std::sort(sorted.begin(), sorted.end());
                double tol = 1e-4 * sorted[0] + 1e-3;
                EXPECT_LE(dist[prim[i]], sorted[0] + tol) << "row " << i;
                EXPECT_NEAR(d1[i], sorted[0], tol);
                EXPECT_NEAR(d2[i], sorted[1], 1e-4 * sorted[1] + 1e-3);
                const float* cp = &c[(size_t)prim[i] * d];
                double best = INFINITY;
                for (int j = 0; j < k; j++)
                    if (j != prim[i]) best = std::min(best, fgmm_soar_loss(d, xi, cp, &c[(size_t)j * d], lambda));
                ASSERT_NE(sp[i], prim[i]);
                EXPECT_LE(fgmm_soar_loss(d, xi, cp, &c[(size_t)sp[i] * d], lambda), best + 1e-4 * best + 1e-3)
                    << "row " << i << " lambda " << lambda << " offset " << offset;
            }
        }
    }
}

TEST(Soar, BadArgumentsAreErrors) {
    float x[4] = {0, 1, 2, 3}, c[4] = {0, 0, 1, 1};
    idx_t p[2], s[2];
    EXPECT_EQ(fgmm_soar_assign(2, 2, nullptr, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, 1, nullptr, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 1, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);  // spill needs k >= 2
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, -1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, NAN, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign(-1, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    x[1] = INFINITY;
    EXPECT_EQ(fgmm_soar_assign(2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_DATA);
    EXPECT_EQ(fgmm_soar_assign(0, 2, x, 2, c, 1, p, s, nullptr, nullptr), 0);
    EXPECT_TRUE(std::isnan(fgmm_soar_loss(2, nullptr, c, c, 1)));
    EXPECT_TRUE(std::isnan(fgmm_soar_loss(0, x, c, c, 1)));
}

TEST(Ivf, ParamsOutOfRangeAreErrors) {
    const Sift& s = sift();
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF16,Flat", METRIC_L2), 0);
    auto rejects = [&](void (*edit)(FgmmIvfParams&), const char* what) {
        FgmmIvfParams p;
        fgmm_ivf_params_init(&p);
        edit(p);
        FgmmIvf* h = nullptr;
        EXPECT_EQ(fgmm_ivf_wrap(index, &p, &h), FGMM_ERR_ARG) << what;
        EXPECT_EQ(h, nullptr);
        EXPECT_NE(std::string(fgmm_get_last_error()).find("ivf params"), std::string::npos) << what;
    };
    rejects([](FgmmIvfParams& p) { p.soar_lambda = -1; }, "negative lambda");
    rejects([](FgmmIvfParams& p) { p.soar_lambda = NAN; }, "NaN lambda");
    rejects([](FgmmIvfParams& p) { p.spill_target = 0.5; }, "target below 1");
    rejects([](FgmmIvfParams& p) { p.spill_target = 3; }, "target above 2");
    rejects([](FgmmIvfParams& p) { p.spill_target = NAN; }, "NaN target");
    rejects([](FgmmIvfParams& p) { p.select = (FgmmSpillSelect)9; }, "select");
    rejects([](FgmmIvfParams& p) { p.rule = (FgmmAssignRule)9; }, "rule");
    rejects([](FgmmIvfParams& p) { p.primary = FGMM_PRIMARY_RESPONSIBILITY; }, "responsibility primary with SOAR");
    rejects([](FgmmIvfParams& p) { p.tau = 2; }, "tau");
    faiss_Index_free(index);
}

TEST(Ivf, BudgetedSpillHitsItsTarget) {
    const Sift& s = sift();
    Built base;  // one GMM for every target
    build(base, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    auto spilled = [&](FgmmAssignRule rule, FgmmSpillSelect sel, double target, Built& b) {
        FgmmIvfParams p = params(rule);
        p.spill_target = target;
        p.select = sel;
        ASSERT_EQ(faiss_index_factory(&b.index, s.d, "IVF64,Flat", METRIC_L2), 0);
        ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0);
        ASSERT_EQ(fgmm_ivf_set_gmm(b.ivf, fgmm_ivf_model(base.ivf), s.nb, s.base.data()), 0);
        ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0);
    };
    for (FgmmSpillSelect sel : {FGMM_SELECT_RESP2, FGMM_SELECT_DIST_RATIO})
        for (double target : {1.25, 1.5, 1.8}) {
            Built b;
            spilled(FGMM_ASSIGN_SOAR, sel, target, b);
            EXPECT_NEAR(fgmm_ivf_inflation(b.ivf), target, 0.01 * target) << "select " << sel;
            EXPECT_EQ(faiss_Index_ntotal(b.index), (idx_t)std::llround(fgmm_ivf_inflation(b.ivf) * s.nb));
        }
    Built r;  // RESP rule: same budget
    spilled(FGMM_ASSIGN_RESP, FGMM_SELECT_RESP2, 1.3, r);
    EXPECT_NEAR(fgmm_ivf_inflation(r.ivf), 1.3, 0.013);
    // every vector still finds itself through its primary list
    std::vector<idx_t> lab(300);
    std::vector<float> dist(300);
    ASSERT_EQ(fgmm_ivf_search(r.ivf, 300, s.base.data(), 1, 1, dist.data(), lab.data(), nullptr), 0);
    for (int i = 0; i < 300; i++) EXPECT_EQ(dist[i], 0.0f) << i;
}

TEST(Ivf, SoarSpillBeatsHardAtTheSameDco) {
    Built hard, soar;
    build(hard, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    p.spill_target = 0;  // every vector in 2 lists
    build(soar, "IVF64,Flat", p);
    EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(soar.ivf), 2.0);
    // at nprobe 2 hard spends ~2/64 of the base; SOAR at nprobe 1 spends about the same
    double dh, ds;
    double rh = recall_at(hard.ivf, 10, 2, &dh), rs = recall_at(soar.ivf, 10, 1, &ds);
    EXPECT_NEAR(ds / dh, 1.0, 0.2);
    EXPECT_GT(rs, rh - 0.02);
}

// The default quantizer (AUTO): the GMM on SIFT; k-means on the same rows L2-normalised (angular data,
// where the GMM loses); a row whose norm is off by 1% keeps the GMM.
TEST(Ivf, AutoQuantizerPicksKmeansOnNormalisedData) {
    const Sift& s = sift();
    std::vector<float> unit(s.base);
    for (idx_t i = 0; i < s.nb; i++) {
        double n2 = 0;
        for (int j = 0; j < s.d; j++) n2 += (double)unit[i * s.d + j] * unit[i * s.d + j];
        for (int j = 0; j < s.d; j++) unit[i * s.d + j] = (float)(unit[i * s.d + j] / std::sqrt(n2));
    }
    std::vector<float> almost(unit);
    for (int j = 0; j < s.d; j++) almost[(size_t)(s.nb / 2) * s.d + j] *= 1.01f;
    const std::vector<float>* data[3] = {&s.base, &unit, &almost};
    const int em_expected[3] = {8, 0, 8};
    for (int c = 0; c < 3; c++) {
        FaissIndex* index = nullptr;
        ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF32,Flat", METRIC_L2), 0);
        FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
        ASSERT_EQ(p.quantizer, FGMM_QUANT_AUTO);
        p.gmm.tol = 0;  // all 8 EM iterations
        FgmmIvf* ivf = nullptr;
        ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
        FgmmTrainInfo info;
        ASSERT_EQ(fgmm_ivf_train(ivf, s.nb, data[c]->data(), &info), 0) << fgmm_get_last_error();
        EXPECT_EQ(info.em_iterations, em_expected[c]) << "case " << c;
        EXPECT_EQ(info.kmeans_iterations, em_expected[c] ? 5 : 5 + 8) << "case " << c;
        fgmm_ivf_free(ivf);
        faiss_Index_free(index);
    }
}

TEST(Ivf, KmeansQuantizerRunsLloydOnly) {
    const Sift& s = sift();
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF32,Flat", METRIC_L2), 0);
    FgmmIvfParams p = params(FGMM_ASSIGN_HARD);
    p.quantizer = FGMM_QUANT_KMEANS;
    FgmmIvf* ivf = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_ivf_train(ivf, s.nb, s.base.data(), &info), 0) << fgmm_get_last_error();
    EXPECT_EQ(info.em_iterations, 0);
    EXPECT_EQ(info.kmeans_iterations, 5 + 8);  // the GMM's budget, all Lloyd
    ASSERT_EQ(fgmm_ivf_add(ivf, s.nb, s.base.data(), nullptr, nullptr), 0);
    EXPECT_GT(recall_at(ivf, 10, 8, nullptr), 0.9);
    p.quantizer = (FgmmQuantizer)7;
    FgmmIvf* bad = nullptr;
    EXPECT_EQ(fgmm_ivf_wrap(index, &p, &bad), FGMM_ERR_ARG);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

TEST(Ivf, RoundTripKeepsTheSpillSettings) {
    const Sift& s = sift();
    int n1 = 6000;
    for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_TAU}) {
        FaissIndex* index = nullptr;
        ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF64,Flat", METRIC_L2), 0);
        FgmmIvfParams p = params(rule);
        p.max_assign = 8;
        p.tau = 1e-4;
        p.spill_target = 1.4;
        p.soar_lambda = 1.5f;
        FgmmIvf* a = nullptr;
        ASSERT_EQ(fgmm_ivf_wrap(index, &p, &a), 0);
        ASSERT_EQ(fgmm_ivf_train(a, s.nb, s.base.data(), nullptr), 0);
        ASSERT_EQ(fgmm_ivf_add(a, n1, s.base.data(), nullptr, nullptr), 0);
        std::string f = testing::TempDir() + "roundtrip.faiss";
        ASSERT_EQ(fgmm_ivf_write(a, f.c_str()), 0) << fgmm_get_last_error();
        FgmmIvf* r = nullptr;
        ASSERT_EQ(fgmm_ivf_read(f.c_str(), nullptr, &r), 0) << fgmm_get_last_error();  // defaults differ
        EXPECT_DOUBLE_EQ(fgmm_ivf_inflation(r), fgmm_ivf_inflation(a));
        // the rest of the base added to both: same lists (same threshold, same rule)
        idx_t la = 0, lr = 0;
        const float* rest = s.base.data() + (size_t)n1 * s.d;
        ASSERT_EQ(fgmm_ivf_add(a, s.nb - n1, rest, nullptr, &la), 0);
        ASSERT_EQ(fgmm_ivf_add(r, s.nb - n1, rest, nullptr, &lr), 0);
        EXPECT_EQ(la, lr);
        int k = 10, nq = 200;
        std::vector<idx_t> ia(nq * k), ir(nq * k);
        std::vector<float> da(nq * k), dr(nq * k);
        ASSERT_EQ(fgmm_ivf_search(a, nq, s.query.data(), k, 8, da.data(), ia.data(), nullptr), 0);
        ASSERT_EQ(fgmm_ivf_search(r, nq, s.query.data(), k, 8, dr.data(), ir.data(), nullptr), 0);
        EXPECT_EQ(ia, ir);
        for (idx_t v : ir) EXPECT_GE(v, 0);  // copies per vector read back: k distinct ids survive
        fgmm_ivf_free(r);
        fgmm_ivf_free(a);
        faiss_Index_free(index);
    }
}

TEST(Ivf, ConcurrentSearchesWithDifferentNprobe) {
    Built b;
    build(b, "IVF64,Flat", params(FGMM_ASSIGN_SOAR));
    const Sift& s = sift();
    int k = 10, nq = 200;
    const int probes[4] = {1, 3, 8, 64};
    std::vector<std::vector<idx_t>> want(4, std::vector<idx_t>(nq * k)), got = want;
    std::vector<float> dist(nq * k);
    for (int t = 0; t < 4; t++)
        ASSERT_EQ(fgmm_ivf_search(b.ivf, nq, s.query.data(), k, probes[t], dist.data(), want[t].data(), nullptr), 0);
    std::vector<std::thread> th;
    std::vector<int> rc(4 * 2);
    for (int t = 0; t < 4 * 2; t++)
        th.emplace_back([&, t] {
            std::vector<float> dd(nq * k);
            std::vector<idx_t> ll(nq * k);
            for (int rep = 0; rep < 2; rep++)
                rc[t] |= fgmm_ivf_search(b.ivf, nq, s.query.data(), k, probes[t % 4], dd.data(), ll.data(), nullptr);
            if (t < 4) got[t] = ll;
        });
    for (auto& x : th) x.join();
    for (int t = 0; t < 4 * 2; t++) EXPECT_EQ(rc[t], 0);
    for (int t = 0; t < 4; t++) EXPECT_EQ(got[t], want[t]) << "nprobe " << probes[t];
}

TEST(Ivf, HugeKAndFailedTrainingAreClean) {
    Built b;
    build(b, "IVF64,Flat", params(FGMM_ASSIGN_SOAR));
    const Sift& s = sift();
    float dist[1];
    idx_t lab[1];
    EXPECT_EQ(fgmm_ivf_search(b.ivf, 1, s.query.data(), (idx_t)1 << 62, 4, dist, lab, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search(b.ivf, 1, s.query.data(), INT64_MAX, 4, dist, lab, nullptr), FGMM_ERR_ARG);
    // IVF16,PQ8 on 100 vectors: the GMM trains, FAISS's PQ training fails; the quantizer is left empty
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF16,PQ8", METRIC_L2), 0);
    FgmmIvf* ivf = nullptr;
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    EXPECT_EQ(fgmm_ivf_train(ivf, 100, s.base.data(), nullptr), FGMM_ERR_FAISS);
    EXPECT_EQ(faiss_Index_ntotal(faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(index))), 0);
    EXPECT_FALSE(faiss_Index_is_trained(index));
    EXPECT_EQ(fgmm_ivf_model(ivf), nullptr);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

TEST(IvfGpu, SpillChoicesMatchTheCpu) {
    if (!fgmm_gpu_available()) GTEST_SKIP() << "no CUDA device";
    const Sift& s = sift();
    Built base;
    build(base, "IVF64,Flat", params(FGMM_ASSIGN_HARD));
    std::vector<std::vector<size_t>> sizes;
    for (FgmmBackend be : {FGMM_BACKEND_CPU, FGMM_BACKEND_GPU}) {
        for (FgmmAssignRule rule : {FGMM_ASSIGN_SOAR, FGMM_ASSIGN_TAU}) {
            Built b;
            FgmmIvfParams p = params(rule);
            p.gmm.backend = be;  // responsibilities (resp2 selector, tau rule) on this backend
            ASSERT_EQ(faiss_index_factory(&b.index, s.d, "IVF64,Flat", METRIC_L2), 0);
            ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0);
            ASSERT_EQ(fgmm_ivf_set_gmm(b.ivf, fgmm_ivf_model(base.ivf), s.nb, s.base.data()), 0);
            ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
            std::vector<size_t> sz(64);
            for (int l = 0; l < 64; l++) sz[l] = faiss_IndexIVF_get_list_size(faiss_IndexIVF_cast(b.index), l);
            sizes.push_back(sz);
        }
    }
    for (int r = 0; r < 2; r++) {  // GPU fast-mode responsibilities move only near-ties
        size_t diff = 0, total = 0;
        for (int l = 0; l < 64; l++) {
            diff += (size_t)std::llabs((long long)sizes[r][l] - (long long)sizes[2 + r][l]);
            total += sizes[r][l];
        }
        EXPECT_LT(diff, total / 200) << "rule " << r;
    }
}

TEST(Ivf, TrainingSampleCapsPointsPerList) {
    const Sift& s = sift();
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    p.max_points_per_list = 40;  // 32 lists x 40 = 1,280 of the 9,000 rows
    FaissIndex* index = nullptr;
    ASSERT_EQ(faiss_index_factory(&index, s.d, "IVF32,Flat", METRIC_L2), 0);
    FgmmIvf* ivf = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(index, &p, &ivf), 0);
    ASSERT_EQ(fgmm_ivf_train(ivf, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_add(ivf, s.nb, s.base.data(), nullptr, nullptr), 0);
    EXPECT_GT(recall_at(ivf, 10, 8, nullptr), 0.9);
    // the same seed gives the same sample, hence the same quantizer; the model saw 1,280 rows
    FaissIndex* again = nullptr;
    ASSERT_EQ(faiss_index_factory(&again, s.d, "IVF32,Flat", METRIC_L2), 0);
    FgmmIvf* ivf2 = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(again, &p, &ivf2), 0);
    ASSERT_EQ(fgmm_ivf_train(ivf2, s.nb, s.base.data(), nullptr), 0);
    const FgmmModel* a = fgmm_ivf_model(ivf);
    const FgmmModel* b = fgmm_ivf_model(ivf2);
    EXPECT_EQ(0, memcmp(fgmm_model_means(a), fgmm_model_means(b), 32 * s.d * sizeof(float)));
    // one point per list: k-means on exactly nlist rows puts each mean on one sampled row
    FaissIndex* one = nullptr;
    ASSERT_EQ(faiss_index_factory(&one, s.d, "IVF32,Flat", METRIC_L2), 0);
    FgmmIvfParams p1 = p;
    p1.max_points_per_list = 1;
    p1.quantizer = FGMM_QUANT_KMEANS;
    FgmmIvf* ivf1 = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(one, &p1, &ivf1), 0);
    ASSERT_EQ(fgmm_ivf_train(ivf1, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
    const float* mu = fgmm_model_means(fgmm_ivf_model(ivf1));
    for (int j = 0; j < 32; j++) {
        bool found = false;
        for (int64_t i = 0; i < s.nb && !found; i++)
            found = !memcmp(mu + (size_t)j * s.d, &s.base[(size_t)i * s.d], s.d * sizeof(float));
        EXPECT_TRUE(found) << "mean " << j;
    }
    fgmm_ivf_free(ivf1);
    faiss_Index_free(one);
    p.max_points_per_list = -2;  // -1 is FGMM_IVF_POINTS_AUTO
    FgmmIvf* bad = nullptr;
    EXPECT_EQ(fgmm_ivf_wrap(index, &p, &bad), FGMM_ERR_ARG);
    fgmm_ivf_free(ivf2);
    faiss_Index_free(again);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

// The GPU encoder's routing (fgmm_faiss_pq_codebook): exactly IndexIVFPQ, trained, by residual, 8-bit,
// L2; its codebook is pq.centroids. And its append (fgmm_faiss_add_codes) of FAISS's own codes gives
// the index that add_core gives: the same lists in the same order, ntotal, direct map. No device needed.
TEST(Ivf, PqCodesAppendedEqualFaissAddCore) {
    const int d = 16, n = 10000;
    std::vector<float> x = gaussian_rows(n, d, 3);
    auto trained = [&](const char* spec, FaissMetricType metric) {
        FaissIndex* index = nullptr;
        EXPECT_EQ(faiss_index_factory(&index, d, spec, metric), 0);
        no_polysemous(index);
        EXPECT_EQ(faiss_Index_train(index, n, x.data()), 0) << spec;
        return index;
    };
    int M = 0;
    const float* cb = nullptr;
    FaissIndex* a = trained("IVF16,PQ8", METRIC_L2);
    ASSERT_EQ(fgmm_faiss_pq_codebook(a, &M, &cb), 1);
    EXPECT_EQ(M, 8);
    EXPECT_EQ(cb, dynamic_cast<faiss::IndexIVFPQ*>(cxx(a))->pq.centroids.data());
    for (auto [spec, metric] : {std::pair{"IVF16,Flat", METRIC_L2}, {"IVF16,PQ8x4", METRIC_L2},
                                {"IVF16,PQ8+8", METRIC_L2}, {"IVF16,PQ8", METRIC_INNER_PRODUCT}}) {
        FaissIndex* o = trained(spec, metric);
        EXPECT_EQ(fgmm_faiss_pq_codebook(o, &M, &cb), 0) << spec;
        faiss_Index_free(o);
    }
    FaissIndex *untrained = nullptr, *raw = nullptr;
    ASSERT_EQ(faiss_index_factory(&untrained, d, "IVF16,PQ8", METRIC_L2), 0);
    EXPECT_EQ(fgmm_faiss_pq_codebook(untrained, &M, &cb), 0);
    ASSERT_EQ(faiss_clone_index(a, &raw), 0);
    dynamic_cast<faiss::IndexIVFPQ*>(cxx(raw))->by_residual = false;
    EXPECT_EQ(fgmm_faiss_pq_codebook(raw, &M, &cb), 0);
    faiss_Index_free(untrained), faiss_Index_free(raw);

    // entries as a spilled add makes them: each row in a list, a third also in a second one
    FaissIndex* b = nullptr;
    ASSERT_EQ(faiss_clone_index(a, &b), 0);
    for (FaissIndex* i : {a, b}) cxx(i)->set_direct_map_type(faiss::DirectMap::Hashtable);
    std::mt19937_64 g(9);
    std::vector<float> xe;
    std::vector<int64_t> ids, lists;
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < (i % 3 ? 1 : 2); c++) {
            xe.insert(xe.end(), x.begin() + i * d, x.begin() + (i + 1) * d);
            ids.push_back(100 + i);
            lists.push_back((int64_t)(g() % 16));
        }
    int64_t m = (int64_t)ids.size();
    char err[256];
    ASSERT_EQ(fgmm_faiss_add_preassigned(a, m, xe.data(), ids.data(), lists.data(), err, sizeof err), 0) << err;
    std::vector<uint8_t> codes((size_t)m * M);
    cxx(b)->encode_vectors(m, xe.data(), lists.data(), codes.data());
    ASSERT_EQ(fgmm_faiss_add_codes(b, m, codes.data(), ids.data(), lists.data(), err, sizeof err), 0) << err;
    EXPECT_EQ(faiss_Index_ntotal(b), m);
    EXPECT_TRUE(lists_of(a) == lists_of(b));
    for (int64_t id : {100, 101, 3099}) EXPECT_EQ(cxx(a)->direct_map.get(id), cxx(b)->direct_map.get(id)) << id;
    // an add FAISS refuses (explicit ids with a sequential direct map) is an error, not a crash
    cxx(b)->set_direct_map_type(faiss::DirectMap::NoMap);
    cxx(b)->reset();
    cxx(b)->set_direct_map_type(faiss::DirectMap::Array);
    EXPECT_NE(fgmm_faiss_add_codes(b, m, codes.data(), ids.data(), lists.data(), err, sizeof err), 0);
    EXPECT_GT(std::strlen(err), 0u);
    faiss_Index_free(a), faiss_Index_free(b);
}

// Without a GPU asked for, an 8-bit IVF-PQ add stays FAISS's add_core (no device needed).
TEST(Ivf, PqAddWithoutGpuIsFaissAddCore) {
    const int d = 16, n = 10000;
    std::vector<float> x = gaussian_rows(n, d, 5);
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    p.gmm.backend = FGMM_BACKEND_CPU;
    Built b;
    ASSERT_EQ(faiss_index_factory(&b.index, d, "IVF16,PQ8", METRIC_L2), 0);
    no_polysemous(b.index);
    ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0);
    ASSERT_EQ(fgmm_ivf_train(b.ivf, n, x.data(), nullptr), 0) << fgmm_get_last_error();
    idx_t added = 0;
    ASSERT_EQ(fgmm_ivf_add(b.ivf, n, x.data(), nullptr, &added), 0) << fgmm_get_last_error();
    EXPECT_EQ(b.ivf->add_pq_gpu_s, 0.0);
    EXPECT_EQ(faiss_Index_ntotal(b.index), added);
    EXPECT_NEAR((double)added / n, 1.5, 0.01);
}

namespace {
// Builds spec on sift with the GPU asked for (default spill: SOAR, 1.5 lists per vector) from the GMM of
// `from` (NULL: trains one); `twin` (may be NULL) gets a copy of the trained, still empty index.
void build_gpu(Built& b, const char* spec, const Built* from, FaissIndex** twin) {
    const Sift& s = sift();
    FgmmIvfParams p = params(FGMM_ASSIGN_SOAR);
    p.gmm.backend = FGMM_BACKEND_GPU;
    ASSERT_EQ(faiss_index_factory(&b.index, s.d, spec, METRIC_L2), 0);
    no_polysemous(b.index);
    ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0);
    if (from)
        ASSERT_EQ(fgmm_ivf_set_gmm(b.ivf, fgmm_ivf_model(from->ivf), s.nb, s.base.data()), 0) << fgmm_get_last_error();
    else
        ASSERT_EQ(fgmm_ivf_train(b.ivf, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
    if (twin) ASSERT_EQ(faiss_clone_index(b.index, twin), 0);
    ASSERT_EQ(fgmm_ivf_add(b.ivf, s.nb, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
}
}  // namespace

// IVF64,PQ16 (sift: 8-dimensional sub-vectors, 8-bit codes) with the GPU asked for: the codes are made on
// the GPU. Against the same trained index filled by FAISS's add_core with the same entries in the same
// order: the same ids per list, codes equal but for float near-ties (<= 0.1%; each one within 1e-4 of the
// nearest codeword's distance, in double), the same recall. And the lists hold what the CPU add path
// (an IVF64,Flat index with the same GMM) puts there, in its order.
TEST(IvfGpu, PqEncodingOnTheGpuMatchesFaiss) {
    if (!fgmm_gpu_available()) GTEST_SKIP() << "no CUDA device";
    const Sift& s = sift();
    Built g, cpu, flat;
    FaissIndex* twin = nullptr;
    build_gpu(g, "IVF64,PQ16", nullptr, &twin);
    cpu.index = twin;
    EXPECT_GT(g.ivf->add_pq_gpu_s, 0.0);
    std::vector<ListView> gl = lists_of(g.index);
    for (size_t l = 0; l < gl.size(); l++) {  // the same entries through add_core, list by list
        std::vector<float> xl;
        for (int64_t id : gl[l].ids) xl.insert(xl.end(), s.base.begin() + id * s.d, s.base.begin() + (id + 1) * s.d);
        std::vector<int64_t> ll(gl[l].ids.size(), (int64_t)l);
        char err[256];
        ASSERT_EQ(fgmm_faiss_add_preassigned(cpu.index, (int64_t)ll.size(), xl.data(), gl[l].ids.data(), ll.data(), err,
                                             sizeof err), 0) << err;
    }
    std::vector<ListView> cl = lists_of(cpu.index);
    const faiss::IndexIVFPQ* pq = dynamic_cast<const faiss::IndexIVFPQ*>(cxx(g.index));
    ASSERT_NE(pq, nullptr);
    const int M = 16, dsub = s.d / M;
    int64_t entries = 0, differ = 0;
    std::vector<float> c(s.d);
    for (size_t l = 0; l < gl.size(); l++) {
        ASSERT_EQ(gl[l].ids, cl[l].ids) << l;
        pq->quantizer->reconstruct((int64_t)l, c.data());
        for (size_t e = 0; e < gl[l].ids.size(); e++, entries++) {
            const float* xi = s.base.data() + gl[l].ids[e] * s.d;
            for (int m = 0; m < M; m++) {
                int cg = gl[l].codes[e * M + m], cc = cl[l].codes[e * M + m];
                if (cg == cc) continue;
                differ++;
                double dg = 0, dc = 0;
                for (int k = 0; k < dsub; k++) {
                    float r = xi[m * dsub + k] - c[m * dsub + k];
                    double eg = (double)r - pq->pq.get_centroids(m, cg)[k], ec = (double)r - pq->pq.get_centroids(m, cc)[k];
                    dg += eg * eg, dc += ec * ec;
                }
                EXPECT_LE(std::fabs(dg - dc), 1e-4 * std::max(dg, dc) + 1e-6) << "list " << l << " entry " << e << " m " << m;
            }
        }
    }
    EXPECT_EQ(entries, faiss_Index_ntotal(g.index));
    EXPECT_LE(differ, entries * M / 1000);
    ASSERT_EQ(fgmm_ivf_wrap(cpu.index, &g.ivf->p, &cpu.ivf), 0);
    double dg, dc;
    EXPECT_NEAR(recall_at(g.ivf, 10, 8, &dg), recall_at(cpu.ivf, 10, 8, &dc), 0.002);
    EXPECT_EQ(dg, dc);
    build_gpu(flat, "IVF64,Flat", &g, nullptr);  // the CPU add path with the same lists
    EXPECT_EQ(flat.ivf->add_pq_gpu_s, 0.0);
    std::vector<ListView> fl = lists_of(flat.index);
    int64_t other = 0;
    for (size_t l = 0; l < gl.size(); l++) other += fl[l].ids != gl[l].ids;
    EXPECT_EQ(other, 0) << "lists whose ids differ from the CPU add path's";
}

// With the GPU asked for, what it does not encode as FAISS does keeps FAISS's add_core: IVF-Flat, 4-bit PQ,
// (IVF-PQR is refused by wrap: Ivf.WrapTakesTestedIndexClassesOnly).
TEST(IvfGpu, OtherIndexesKeepFaissEncoding) {
    if (!fgmm_gpu_available()) GTEST_SKIP() << "no CUDA device";
    Built base;
    build_gpu(base, "IVF32,Flat", nullptr, nullptr);
    EXPECT_EQ(base.ivf->add_pq_gpu_s, 0.0);
    for (const char* spec : {"IVF32,PQ16x4"}) {
        Built b;
        build_gpu(b, spec, &base, nullptr);
        EXPECT_EQ(b.ivf->add_pq_gpu_s, 0.0) << spec;
        EXPECT_EQ(faiss_Index_ntotal(b.index), faiss_Index_ntotal(base.index)) << spec;
        EXPECT_GT(recall_at(b.ivf, 10, 8, nullptr), 0.5) << spec;
    }
}

namespace {
// A trained IVF<nlist> index of `spec` on n gaussian rows of d dims (CPU, one list per vector).
void build_small(Built& b, const char* spec, const std::vector<float>& x, int d) {
    FgmmIvfParams p = params(FGMM_ASSIGN_HARD);
    p.gmm.backend = FGMM_BACKEND_CPU;
    ASSERT_EQ(faiss_index_factory(&b.index, d, spec, METRIC_L2), 0) << spec;
    no_polysemous(b.index);
    ASSERT_EQ(fgmm_ivf_wrap(b.index, &p, &b.ivf), 0) << spec << ": " << fgmm_get_last_error();
    ASSERT_EQ(fgmm_ivf_train(b.ivf, (idx_t)(x.size() / d), x.data(), nullptr), 0) << spec << fgmm_get_last_error();
}
// The id fgmm_ivf_search finds nearest to row i of x (scanning every list).
idx_t nearest_id(const Built& b, const std::vector<float>& x, int d, int64_t i) {
    float dist = -1;
    idx_t lab = -2;
    EXPECT_EQ(fgmm_ivf_search(b.ivf, 1, x.data() + i * d, 1, 1 << 20, &dist, &lab, nullptr), 0);
    return lab;
}
}  // namespace

// ids < 0 (FAISS's "none") are refused before anything is added; INT64_MAX is an id, after which an add
// without ids is refused instead of numbering from INT64_MIN; automatic ids continue from the largest + 1.
TEST(Ivf, IdsOutOfRangeAreRefusedBeforeAdding) {
    const int d = 16;
    std::vector<float> x = gaussian_rows(2000, d, 11);
    Built b;
    build_small(b, "IVF16,Flat", x, d);
    std::vector<idx_t> ids = {5, 6, 7, -1};
    idx_t added = 99;
    EXPECT_EQ(fgmm_ivf_add(b.ivf, 4, x.data(), ids.data(), &added), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("ids[3] = -1"), std::string::npos) << fgmm_get_last_error();
    EXPECT_EQ(added, 0);
    EXPECT_EQ(faiss_Index_ntotal(b.index), 0);  // nothing added, not even the valid ids before it
    ids = {INT64_MIN};
    EXPECT_EQ(fgmm_ivf_add(b.ivf, 1, x.data(), ids.data(), nullptr), FGMM_ERR_ARG);

    ASSERT_EQ(fgmm_ivf_add(b.ivf, 3, x.data(), nullptr, nullptr), 0);  // ids 0, 1, 2
    ids = {100};
    ASSERT_EQ(fgmm_ivf_add(b.ivf, 1, x.data() + 3 * d, ids.data(), nullptr), 0);
    ASSERT_EQ(fgmm_ivf_add(b.ivf, 1, x.data() + 4 * d, nullptr, nullptr), 0);  // id 101
    EXPECT_EQ(nearest_id(b, x, d, 2), 2);
    EXPECT_EQ(nearest_id(b, x, d, 3), 100);
    EXPECT_EQ(nearest_id(b, x, d, 4), 101);

    ids = {INT64_MAX};
    ASSERT_EQ(fgmm_ivf_add(b.ivf, 1, x.data() + 5 * d, ids.data(), nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(nearest_id(b, x, d, 5), INT64_MAX);
    EXPECT_EQ(b.ivf->next_id, INT64_MAX);  // saturated, not wrapped
    EXPECT_EQ(fgmm_ivf_add(b.ivf, 1, x.data() + 6 * d, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("pass ids"), std::string::npos) << fgmm_get_last_error();
    EXPECT_EQ(faiss_Index_ntotal(b.index), 6);
    ids = {7};  // explicit ids still work, and do not lower next_id
    ASSERT_EQ(fgmm_ivf_add(b.ivf, 1, x.data() + 6 * d, ids.data(), nullptr), 0);
    EXPECT_EQ(nearest_id(b, x, d, 6), 7);
    EXPECT_EQ(b.ivf->next_id, INT64_MAX);

    // the largest automatic id is INT64_MAX - 1
    Built c;
    build_small(c, "IVF16,Flat", x, d);
    ids = {INT64_MAX - 3};
    ASSERT_EQ(fgmm_ivf_add(c.ivf, 1, x.data(), ids.data(), nullptr), 0);
    EXPECT_EQ(fgmm_ivf_add(c.ivf, 3, x.data() + d, nullptr, nullptr), FGMM_ERR_ARG);
    ASSERT_EQ(fgmm_ivf_add(c.ivf, 2, x.data() + d, nullptr, nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(nearest_id(c, x, d, 2), INT64_MAX - 1);
    EXPECT_EQ(fgmm_ivf_add(c.ivf, 1, x.data() + 3 * d, nullptr, nullptr), FGMM_ERR_ARG);
    // re-wrapping an index whose largest id is INT64_MAX does not overflow either
    ids = {INT64_MAX};
    ASSERT_EQ(fgmm_ivf_add(c.ivf, 1, x.data() + 3 * d, ids.data(), nullptr), 0);
    FgmmIvf* again = nullptr;
    FgmmIvfParams p = params(FGMM_ASSIGN_HARD);
    ASSERT_EQ(fgmm_ivf_wrap(c.index, &p, &again), 0) << fgmm_get_last_error();
    EXPECT_EQ(again->next_id, INT64_MAX);
    EXPECT_EQ(again->n_vectors, 4);  // never more vectors than entries
    EXPECT_EQ(fgmm_ivf_add(again, 1, x.data(), nullptr, nullptr), FGMM_ERR_ARG);
    fgmm_ivf_free(again);
}

// Only the index classes the tests cover are wrapped (fast-scan PQ aborted the process in FAISS's add);
// each of them trains, adds and finds a vector.
TEST(Ivf, WrapTakesTestedIndexClassesOnly) {
    const int d = 16;
    std::vector<float> x = gaussian_rows(1000, d, 12);
    for (const char* spec : {"IVF8,Flat", "IVF8,PQ2", "IVF8,PQ4x4"}) {
        Built b;
        build_small(b, spec, x, d);
        ASSERT_EQ(fgmm_ivf_add(b.ivf, 1000, x.data(), nullptr, nullptr), 0) << spec << fgmm_get_last_error();
        EXPECT_EQ(faiss_Index_ntotal(b.index), 1000) << spec;
        int found = 0;
        for (int64_t i = 0; i < 20; i++) found += nearest_id(b, x, d, i) == i;
        EXPECT_GE(found, 15) << spec;
    }
    for (auto [spec, cls] : {std::pair{"IVF8,PQ4x4fs", "IndexIVFPQFastScan"}, {"IVF8,SQ8", "IndexIVFScalarQuantizer"},
                             {"IVF8_HNSW4,Flat", "IndexHNSW"},
                             {"IVF8,PQ2+2", "IndexIVFPQR finds its refinement codes by id"}}) {
        FaissIndex* index = nullptr;
        ASSERT_EQ(faiss_index_factory(&index, d, spec, METRIC_L2), 0) << spec;
        FgmmIvf* ivf = reinterpret_cast<FgmmIvf*>(1);
        FgmmIvfParams p = params(FGMM_ASSIGN_HARD);
        EXPECT_EQ(fgmm_ivf_wrap(index, &p, &ivf), FGMM_ERR_STATE) << spec;
        EXPECT_EQ(ivf, nullptr);
        EXPECT_NE(std::string(fgmm_get_last_error()).find(cls), std::string::npos) << fgmm_get_last_error();
        faiss_Index_free(index);
    }
}

// The default schedule by backend (issue 23): on the CPU a sample of FGMM_IVF_CPU_POINTS per list and at
// most FGMM_IVF_CPU_ITER iterations, all k-means; on the GPU, or with max_points_per_list = 0, all points
// and gmm as given.
TEST(Ivf, DefaultScheduleOnTheCpuTrainsOnASample) {
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    EXPECT_EQ(p.max_points_per_list, FGMM_IVF_POINTS_AUTO);
    EXPECT_EQ(p.gmm.kmeans_iter, 10);
    EXPECT_EQ(p.gmm.niter, 90);
    FgmmParams g;
    p.gmm.backend = FGMM_BACKEND_CPU;
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), FGMM_IVF_CPU_POINTS);
    EXPECT_EQ(g.kmeans_iter, FGMM_IVF_CPU_ITER);
    EXPECT_EQ(g.niter, 0);
    EXPECT_EQ(g.seed, p.gmm.seed);
    p.gmm.kmeans_iter = 2, p.gmm.niter = 3;  // a smaller budget stays: 5 Lloyd iterations
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), FGMM_IVF_CPU_POINTS);
    EXPECT_EQ(g.kmeans_iter, 5);
    EXPECT_EQ(g.niter, 0);
    p.gmm.kmeans_iter = 10, p.gmm.niter = INT32_MAX;  // no overflow
    fgmm_ivf_schedule(&p, &g);
    EXPECT_EQ(g.kmeans_iter, FGMM_IVF_CPU_ITER);
    p.gmm.niter = -1;  // left for fgmm_train to refuse
    fgmm_ivf_schedule(&p, &g);
    EXPECT_EQ(g.niter, -1);
    p.gmm.niter = 90;
    p.gmm.backend = FGMM_BACKEND_GPU;  // the GPU keeps all points and 10 + 90 iterations
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), 0);
    EXPECT_EQ(g.kmeans_iter, 10);
    EXPECT_EQ(g.niter, 90);
    p.gmm.backend = FGMM_BACKEND_AUTO;
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), fgmm_gpu_available() ? 0 : FGMM_IVF_CPU_POINTS);
    p.gmm.backend = FGMM_BACKEND_CPU;
    p.max_points_per_list = 0;  // all points, one parameter away
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), 0);
    EXPECT_EQ(g.niter, 90);
    p.max_points_per_list = 100;
    EXPECT_EQ(fgmm_ivf_schedule(&p, &g), 100);
    EXPECT_EQ(g.niter, 90);
    EXPECT_EQ(fgmm_ivf_schedule(nullptr, &g), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_schedule(&p, nullptr), FGMM_ERR_NULL);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("fgmm_ivf_schedule: gmm is NULL"), std::string::npos);

    // Training: the default on the CPU gives exactly the model of the explicit schedule, which saw the
    // sample (IVF32 x 256 = 8,192 of the 9,000 rows), not all points.
    const Sift& s = sift();
    auto train = [&](const FgmmIvfParams& q, FgmmTrainInfo* info) {
        FaissIndex* index = nullptr;
        EXPECT_EQ(faiss_index_factory(&index, s.d, "IVF32,Flat", METRIC_L2), 0);
        FgmmIvf* ivf = nullptr;
        EXPECT_EQ(fgmm_ivf_wrap(index, &q, &ivf), 0);
        EXPECT_EQ(fgmm_ivf_train(ivf, s.nb, s.base.data(), info), 0) << fgmm_get_last_error();
        const FgmmModel* m = fgmm_ivf_model(ivf);
        std::vector<float> mu(fgmm_model_means(m), fgmm_model_means(m) + 32 * (size_t)s.d);
        fgmm_ivf_free(ivf);
        faiss_Index_free(index);
        return mu;
    };
    FgmmIvfParams def;
    fgmm_ivf_params_init(&def);
    def.gmm.backend = FGMM_BACKEND_CPU;
    def.quantizer = FGMM_QUANT_GMM;
    FgmmIvfParams expl = def, all = def;
    expl.max_points_per_list = FGMM_IVF_CPU_POINTS;
    expl.gmm.kmeans_iter = FGMM_IVF_CPU_ITER;
    expl.gmm.niter = 0;
    all.max_points_per_list = 0;
    all.gmm.kmeans_iter = FGMM_IVF_CPU_ITER;
    all.gmm.niter = 0;
    FgmmTrainInfo id, ie, ia;
    std::vector<float> md = train(def, &id), me = train(expl, &ie), ma = train(all, &ia);
    EXPECT_EQ(md, me);
    EXPECT_NE(md, ma);  // the same iterations on all 9,000 rows: other means
    EXPECT_EQ(id.kmeans_iterations, FGMM_IVF_CPU_ITER);
    EXPECT_EQ(id.em_iterations, 0);
    // the k-means quantizer on the CPU: the same iterations
    FgmmIvfParams km = def;
    km.quantizer = FGMM_QUANT_KMEANS;
    FgmmTrainInfo ik;
    EXPECT_EQ(train(km, &ik), md);
    EXPECT_EQ(ik.kmeans_iterations, FGMM_IVF_CPU_ITER);
    EXPECT_EQ(ik.em_iterations, 0);
}
