// FAISS plugin: GMM-trained IVF-Flat / IVF-PQ on real SIFT (the embedded FLANN sift10K set).
#include <gtest/gtest.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "flashgmm_io.h"
#include "flashgmm_ivf.h"

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
        std::string f = std::string(FGMM_SOURCE_DIR) + "/datasets/embedded/sift10K_byte.h5";
        FgmmVecs b, q, m;
        EXPECT_EQ(fgmm_vecs_read(f.c_str(), "dataset", 0, &b), 0);
        EXPECT_EQ(fgmm_vecs_read(f.c_str(), "query", 0, &q), 0);
        EXPECT_EQ(fgmm_vecs_read(f.c_str(), "match", 0, &m), 0);
        r.nb = b.n, r.nq = q.n, r.d = b.d;
        for (size_t i = 0; i < (size_t)b.n * b.d; i++) r.base.push_back(((uint8_t*)b.data)[i]);
        for (size_t i = 0; i < (size_t)q.n * q.d; i++) r.query.push_back(((uint8_t*)q.data)[i]);
        EXPECT_EQ(m.dtype, FGMM_I32);
        for (int64_t i = 0; i < m.n; i++) r.gt.push_back(((int32_t*)m.data)[i * m.d]);  // 1-NN
        fgmm_vecs_free(&b), fgmm_vecs_free(&q), fgmm_vecs_free(&m);
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
    // A sidecar GMM of another dimension is refused on read.
    std::string f = testing::TempDir() + "mismatch.faiss";
    ASSERT_EQ(fgmm_ivf_write(ivf, f.c_str()), 0);
    float mu[16 * 4] = {0}, var[16], w[16];
    for (int i = 0; i < 16; i++) var[i] = 1, w[i] = 1, mu[i * 4] = (float)i;
    FgmmModel* other = nullptr;
    ASSERT_EQ(fgmm_model_new(&other, 16, 4, FGMM_COV_ISOTROPIC, mu, var, w), 0);
    ASSERT_EQ(fgmm_model_write(other, (f + ".gmm").c_str()), 0);
    FgmmIvf* r = nullptr;
    EXPECT_EQ(fgmm_ivf_read(f.c_str(), &p, &r), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("16 x 4 GMM"), std::string::npos);
    EXPECT_EQ(r, nullptr);
    EXPECT_EQ(fgmm_ivf_read("/nonexistent.faiss", &p, &r), FGMM_ERR_FAISS);
    EXPECT_EQ(fgmm_ivf_read(nullptr, &p, &r), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(nullptr, f.c_str()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(ivf, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_write(ivf, "/nonexistent/dir/x.faiss"), FGMM_ERR_FAISS);
    EXPECT_EQ(fgmm_ivf_set_gmm(nullptr, other, 10, s.base.data()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_set_gmm(ivf, nullptr, 10, s.base.data()), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_add(nullptr, 1, s.base.data(), nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_train(nullptr, 10, s.base.data(), nullptr), FGMM_ERR_NULL);
    fgmm_model_free(other);
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
    p.tau = 1.0;
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
