/* SPDX-License-Identifier: MIT */
// FAISS plugin: GMM-trained IVF-Flat / IVF-PQ on real SIFT (the embedded FLANN sift10K set):
// train, add, search, round trips, concurrent searches and errors.
#include "ivf_common.h"

using namespace fgt;

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
    EXPECT_EQ(out[2], 3);  // 10.4 -> 10 (0.16), 11 (0.36)
    ASSERT_EQ(fgmm_ivf_search(ivf, 2, q, 2, 2, dist, out, dco), 0);
    EXPECT_EQ(dco[0], 2 + 5);  // both lists scanned
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
    fgmm_model_free(m);
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
    for (auto [spec, cls] : {std::pair{"IVF8,PQ4x4fs", "IndexIVFPQFastScan"},
                             {"IVF8,SQ8", "IndexIVFScalarQuantizer"},
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
