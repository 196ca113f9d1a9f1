/* SPDX-License-Identifier: MIT */
// FAISS plugin: the quantizer's training: AUTO choice, k-means only, points per list, the
// default schedule by backend.
#include "ivf_common.h"

using namespace fgt;

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
