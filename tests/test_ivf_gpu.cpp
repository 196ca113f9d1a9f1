/* SPDX-License-Identifier: MIT */
// FAISS plugin on the GPU: spill lists and IVF-PQ codes made on the device against FAISS's add.
#include "ivf_common.h"

using namespace fgt;

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
    for (auto [spec, metric] : {std::pair{"IVF16,Flat", METRIC_L2},
                                {"IVF16,PQ8x4", METRIC_L2},
                                {"IVF16,PQ8+8", METRIC_L2},
                                {"IVF16,PQ8", METRIC_INNER_PRODUCT}}) {
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
    else ASSERT_EQ(fgmm_ivf_train(b.ivf, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
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
                                             sizeof err),
                  0)
            << err;
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
                    double eg = (double)r - pq->pq.get_centroids(m, cg)[k],
                           ec = (double)r - pq->pq.get_centroids(m, cc)[k];
                    dg += eg * eg, dc += ec * ec;
                }
                EXPECT_LE(std::fabs(dg - dc), 1e-4 * std::max(dg, dc) + 1e-6)
                    << "list " << l << " entry " << e << " m " << m;
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
