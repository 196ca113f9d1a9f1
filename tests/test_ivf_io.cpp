/* SPDX-License-Identifier: MIT */
// Index files (plugin/ivf_io.c, docs/FORMAT.md): round trips of every int64, FAISS's refusal, the
// plain FAISS export, the three-file sets of earlier versions, damaged files and the fuzz corpus,
// misuse of the write calls. How files are written (crashes, concurrency, modes, links):
// test_ivf_io_write.cpp.
#include <gtest/gtest.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "ivf_io_common.h"

// H1: ids, next_id and counts are stored as int64: 2^53 + 1 and INT64_MAX - 1 come back exactly
// (the text settings of earlier versions capped them at 9e15); also from a three-file set.
TEST(IvfIo, IdsNearInt64MaxRoundTripExactly) {
    std::vector<idx_t> ids = {INT64_MAX - 1, INT64_MAX - 2, (idx_t(1) << 53) + 1, 9000000000000001};
    Tiny t(ids);
    ASSERT_EQ(t.h->next_id, INT64_MAX);
    std::string dir = fresh_dir("ids"), one = dir + "/one.fgmmivf", three = dir + "/three.faiss";
    ASSERT_EQ(fgmm_ivf_write(t.h, one.c_str()), 0) << fgmm_get_last_error();
    ASSERT_EQ(fuzz_ivf_write_three_files(t.h, three.c_str()), 0);
    std::vector<float> q(ids.size() * FUZZ_IVF_D);
    fuzz_ivf_rows(q.data(), (int)ids.size());
    for (float& v : q) v += 0.25f;
    for (const std::string& f : {one, three}) {
        FgmmIvf* r = nullptr;
        ASSERT_EQ(fgmm_ivf_read(f.c_str(), nullptr, &r), 0) << f << ": " << fgmm_get_last_error();
        EXPECT_EQ(r->next_id, INT64_MAX) << f;
        EXPECT_EQ(r->n_vectors, 68) << f;
        EXPECT_EQ(r->n_entries, 136) << f;
        std::vector<idx_t> lab(ids.size());
        std::vector<float> dist(ids.size());
        ASSERT_EQ(fgmm_ivf_search(r, (idx_t)ids.size(), q.data(), 1, 4, dist.data(), lab.data(), nullptr), 0);
        EXPECT_EQ(lab, ids) << f;
        fgmm_ivf_free(r);
    }
}
// FAISS's reader refuses the file, naming its first 4 bytes (docs/FORMAT.md quotes the message).
TEST(IvfIo, PlainFaissRefusesTheIndexFile) {
    Tiny t;
    std::string path = fresh_dir("refused") + "/x.faiss";
    ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0);
    FaissIndex* index = nullptr;
    EXPECT_NE(faiss_read_index_fname(path.c_str(), 0, &index), 0);
    EXPECT_EQ(index, nullptr);
    EXPECT_NE(std::string(faiss_get_last_error()).find("Index type 0x4d4d4746 (\"FGMM\") not recognized"),
              std::string::npos)
        << faiss_get_last_error();
}

namespace {

struct SiftSmall {
    std::vector<float> base, query;
    std::vector<int64_t> gt;  // the 10 nearest base rows per query, exact
    int64_t nb = 0, nq = 0;
    int d = 0;
};

const SiftSmall& sift_small() {
    static SiftSmall s = [] {
        SiftSmall r;
        r.base = fgt::embedded_u8("sift10K_byte.h5", "dataset", &r.nb, &r.d);
        r.query = fgt::embedded_u8("sift10K_byte.h5", "query", &r.nq, &r.d);
        EXPECT_FALSE(r.base.empty() || r.query.empty()) << fgmm_get_last_error();
        r.nq = std::min<int64_t>(r.nq, 200);
        for (int64_t i = 0; i < r.nq; i++) {
            std::vector<std::pair<float, int64_t>> dist(r.nb);
            for (int64_t j = 0; j < r.nb; j++) {
                float s2 = 0;
                for (int t = 0; t < r.d; t++) {
                    float e = r.query[i * r.d + t] - r.base[j * r.d + t];
                    s2 += e * e;
                }
                dist[j] = {s2, j};
            }
            std::partial_sort(dist.begin(), dist.begin() + 10, dist.end());
            for (int t = 0; t < 10; t++) r.gt.push_back(dist[t].second);
        }
        return r;
    }();
    return s;
}

// Each list's ids, in order.
std::vector<std::vector<int64_t>> list_ids(FaissIndex* index) {
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(index);
    std::vector<std::vector<int64_t>> out(faiss_IndexIVF_nlist(ivf));
    for (size_t l = 0; l < out.size(); l++) {
        out[l].resize(faiss_IndexIVF_get_list_size(ivf, l));
        if (!out[l].empty()) faiss_IndexIVF_invlists_get_ids(ivf, l, out[l].data());
    }
    return out;
}

// The list of each id 0..nb-1 of an index that holds each once (-1: none, -2: several).
std::vector<int64_t> list_of_id(FaissIndex* index) {
    std::vector<int64_t> out(sift_small().nb, -1);
    std::vector<std::vector<int64_t>> ids = list_ids(index);
    for (size_t l = 0; l < ids.size(); l++)
        for (int64_t id : ids[l]) out.at(id) = out.at(id) == -1 ? (int64_t)l : -2;
    return out;
}

// Plain FAISS search at nprobe 8: recall@10 against the exact neighbours; dup = rows with an id twice.
double faiss_recall(FaissIndex* index, int* dup) {
    const SiftSmall& s = sift_small();
    const int k = 10;
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(index), 8);
    std::vector<idx_t> lab(s.nq * k);
    std::vector<float> dist(s.nq * k);
    EXPECT_EQ(faiss_Index_search(index, s.nq, s.query.data(), k, dist.data(), lab.data()), 0);
    int hit = 0;
    *dup = 0;
    for (int64_t i = 0; i < s.nq; i++) {
        std::set<int64_t> row(lab.begin() + i * k, lab.begin() + (i + 1) * k),
            truth(s.gt.begin() + i * k, s.gt.begin() + (i + 1) * k);
        *dup += row.size() != (size_t)k;
        for (int64_t id : row) hit += truth.count(id);
    }
    return (double)hit / (s.nq * k);
}

}  // namespace

// The export: a plain FAISS file with every vector once (ntotal = vectors, no duplicate ids in
// FAISS's search), its entries those of a hard-assigned index with the same centroids (IVF-Flat:
// the same lists; IVF-PQ: almost, PQ near-ties), recall as that index's; the handle is untouched.
TEST(IvfIo, ExportIsAPlainFaissIndexWithEachVectorOnce) {
    const SiftSmall& s = sift_small();
    std::string dir = fresh_dir("export");
    struct Case {
        const char* spec;
        FgmmAssignRule rule;
        FgmmPrimary primary;
        double same_list;   // the least share of vectors in the hard index's list
        double recall_tol;  // |recall@10 - the hard index's| at most
    } cases[] = {{"IVF64,Flat", FGMM_ASSIGN_SOAR, FGMM_PRIMARY_NEAREST, 1.0, 0.0},
                 {"IVF64,Flat", FGMM_ASSIGN_TAU, FGMM_PRIMARY_RESPONSIBILITY, 1.0, 0.0},
                 // 64-bit codes: the vectors are estimated coarsely (measured: 87% of the hard lists)
                 {"IVF32,PQ16x4", FGMM_ASSIGN_SOAR, FGMM_PRIMARY_NEAREST, 0.8, 0.025}};  // the cloning path
    for (const Case& c : cases) {
        SCOPED_TRACE(std::string(c.spec) + " rule " + std::to_string(c.rule));
        FgmmIvfParams p;
        fgmm_ivf_params_init(&p);
        p.rule = c.rule, p.primary = c.primary, p.gmm.niter = 8, p.gmm.kmeans_iter = 5;
        FaissIndex *spilled = nullptr, *hard = nullptr, *plain = nullptr, *plain_hard = nullptr;
        FgmmIvf *hs = nullptr, *hh = nullptr;
        ASSERT_EQ(faiss_index_factory(&spilled, s.d, c.spec, METRIC_L2), 0);
        ASSERT_EQ(faiss_index_factory(&hard, s.d, c.spec, METRIC_L2), 0);
        ASSERT_EQ(fgmm_ivf_wrap(spilled, &p, &hs), 0);
        ASSERT_EQ(fgmm_ivf_train(hs, s.nb, s.base.data(), nullptr), 0) << fgmm_get_last_error();
        ASSERT_EQ(fgmm_ivf_add(hs, s.nb, s.base.data(), nullptr, nullptr), 0);
        ASSERT_GT(faiss_Index_ntotal(spilled), s.nb * 21 / 20);  // spilled
        FgmmIvfParams ph = p;
        ph.rule = FGMM_ASSIGN_HARD;
        ASSERT_EQ(fgmm_ivf_wrap(hard, &ph, &hh), 0);
        ASSERT_EQ(fgmm_ivf_set_gmm(hh, fgmm_ivf_model(hs), s.nb, s.base.data()), 0) << fgmm_get_last_error();
        ASSERT_EQ(fgmm_ivf_add(hh, s.nb, s.base.data(), nullptr, nullptr), 0);
        std::string before = dir + "/before", after = dir + "/after", out = dir + "/plain.faiss",
                    out_hard = dir + "/hard.faiss";
        ASSERT_EQ(fgmm_ivf_write(hs, before.c_str()), 0);
        ASSERT_EQ(fgmm_ivf_write_faiss(hs, out.c_str()), 0) << fgmm_get_last_error();
        ASSERT_EQ(fgmm_ivf_write(hs, after.c_str()), 0);
        EXPECT_TRUE(slurp(before) == slurp(after));  // the handle's index is not modified
        ASSERT_EQ(fgmm_ivf_write_faiss(hh, out_hard.c_str()), 0) << fgmm_get_last_error();  // no spill: a copy
        ASSERT_EQ(faiss_read_index_fname(out.c_str(), 0, &plain), 0) << faiss_get_last_error();
        ASSERT_EQ(faiss_read_index_fname(out_hard.c_str(), 0, &plain_hard), 0) << faiss_get_last_error();
        EXPECT_EQ(faiss_Index_ntotal(plain), s.nb);
        EXPECT_EQ(list_ids(plain_hard), list_ids(hard));
        std::vector<int64_t> le = list_of_id(plain), lh = list_of_id(hard);
        int64_t same = 0;
        for (int64_t i = 0; i < s.nb; i++) same += le[i] == lh[i] && le[i] >= 0;
        EXPECT_GE(same, c.same_list * s.nb) << same << " of " << s.nb << " vectors in the hard index's list";
        int dup_e, dup_h, dup_s;
        double re = faiss_recall(plain, &dup_e), rh = faiss_recall(plain_hard, &dup_h),
               rs = faiss_recall(spilled, &dup_s);
        EXPECT_EQ(dup_e, 0);
        EXPECT_GT(dup_s, 0);  // what the export avoids: FAISS's search of the spilled index itself
        EXPECT_NEAR(re, rh, c.recall_tol + 1e-9) << "recall@10: export " << re << ", hard " << rh;
        std::printf(
            "[          ] %s: recall@10 at nprobe 8: export %.4f, hard %.4f; %lld of %lld vectors in the hard "
            "index's list; the spilled index through FAISS: %d of %lld rows with duplicates\n",
            c.spec, re, rh, (long long)same, (long long)s.nb, dup_s, (long long)s.nq);
        fgmm_ivf_free(hs), fgmm_ivf_free(hh);
        for (FaissIndex* i : {spilled, hard, plain, plain_hard}) faiss_Index_free(i);
    }
}

// Three-file sets written before the one-file format read as they did: bound to their centroids,
// checked, a plain FAISS file alone reads with the params given; a one-file write over a set
// removes its sidecars.
TEST(IvfIo, ThreeFileSetsOfEarlierVersionsRead) {
    Tiny a;
    std::string dir = fresh_dir("three"), fa = dir + "/a.faiss", fb = dir + "/b.faiss";
    ASSERT_EQ(fuzz_ivf_write_three_files(a.h, fa.c_str()), 0);
    FgmmIvf* r = nullptr;
    ASSERT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r->p.rule, FGMM_ASSIGN_TOPM);  // the file's, not the defaults
    EXPECT_EQ(fgmm_ivf_inflation(r), 2.0);
    EXPECT_EQ(r->next_id, 64);
    ASSERT_NE(fgmm_ivf_model(r), nullptr);
    fgmm_ivf_free(r);
    // the corpus's valid_settings: written by the three-file writer itself (59899d9)
    std::string own = slurp(fa + ".fgmm"), old = slurp(fgt::corpus("index") + "/valid_settings").substr(1);
    spit(fa + ".fgmm", old);
    ASSERT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), 0) << fgmm_get_last_error();
    fgmm_ivf_free(r);
    // another index's model and settings (other centroids), truncated settings, a bad rule
    Tiny b({1000});
    FaissIndexIVF* bi = faiss_IndexIVF_cast(b.index);
    std::vector<float> c((size_t)FUZZ_IVF_NLIST * FUZZ_IVF_D);
    for (size_t i = 0; i < c.size(); i++) c[i] = b.h->cent[i] + 1.0f;  // move b's centroids
    ASSERT_EQ(faiss_Index_reset(faiss_IndexIVF_quantizer(bi)), 0);
    ASSERT_EQ(faiss_Index_add(faiss_IndexIVF_quantizer(bi), FUZZ_IVF_NLIST, c.data()), 0);
    memcpy(b.h->cent, c.data(), c.size() * sizeof(float));
    FgmmModel* m = nullptr;
    float var[FUZZ_IVF_NLIST] = {1, 1, 1, 1}, w[FUZZ_IVF_NLIST] = {1, 1, 1, 1};
    ASSERT_EQ(fgmm_model_new(&m, FUZZ_IVF_NLIST, FUZZ_IVF_D, FGMM_COV_ISOTROPIC, c.data(), var, w), 0);
    fgmm_model_free(b.h->model);
    b.h->model = m;
    ASSERT_EQ(fuzz_ivf_write_three_files(b.h, fb.c_str()), 0);
    std::string own_gmm = slurp(fa + ".gmm");
    spit(fa + ".gmm", slurp(fb + ".gmm"));
    EXPECT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("does not belong"), std::string::npos) << fgmm_get_last_error();
    spit(fa + ".gmm", own_gmm);
    spit(fa + ".fgmm", slurp(fb + ".fgmm"));
    EXPECT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), FGMM_ERR_IO);
    for (size_t cut : {(size_t)0, (size_t)10, own.size() / 2, own.size() - 4}) {
        spit(fa + ".fgmm", own.substr(0, cut));
        EXPECT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), FGMM_ERR_IO) << cut;
    }
    std::string bad = own;
    bad.replace(bad.find("rule = "), 8, "rule = 9");
    spit(fa + ".fgmm", bad);
    EXPECT_EQ(fgmm_ivf_read(fa.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_EQ(r, nullptr);
    // the FAISS file alone: params as given
    fs::remove(fa + ".fgmm"), fs::remove(fa + ".gmm");
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = FGMM_ASSIGN_HARD;
    ASSERT_EQ(fgmm_ivf_read(fa.c_str(), &p, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r->p.rule, FGMM_ASSIGN_HARD);
    EXPECT_EQ(fgmm_ivf_model(r), nullptr);
    fgmm_ivf_free(r);
    // a one-file write over a set: the sidecars go (a foreign PATH.gmm beside no PATH.fgmm stays)
    ASSERT_EQ(fuzz_ivf_write_three_files(a.h, fa.c_str()), 0);
    ASSERT_EQ(fgmm_ivf_write(a.h, fa.c_str()), 0);
    EXPECT_EQ(others(dir, {"a.faiss", "b.faiss", "b.faiss.fgmm", "b.faiss.gmm"}), std::vector<std::string>());
    spit(fb + ".gmm", "mine");
    fs::remove(fb + ".fgmm");
    ASSERT_EQ(fgmm_ivf_write(a.h, fb.c_str()), 0);
    EXPECT_EQ(slurp(fb + ".gmm"), "mine");
    EXPECT_EQ(entries_at(fa), 128);
}
// Damaged files: any changed byte (header, FAISS section, settings, model), any truncation,
// trailing bytes, another version and other flashgmm files are refused with a reason.
TEST(IvfIo, DamagedFilesAreRefused) {
    Tiny t;
    std::string dir = fresh_dir("damaged"), path = dir + "/d.fgmmivf", bad = dir + "/bad.fgmmivf";
    ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0);
    std::string good = slurp(path);
    ASSERT_GT(good.size(), 92u);
    FgmmIvf* r = nullptr;
    int refused = 0, tries = 0;
    for (size_t at = 0; at < good.size(); at++, tries++) {  // every byte
        std::string b = good;
        b[at] ^= 0x20;
        spit(bad, b);
        int rc = fgmm_ivf_read(bad.c_str(), nullptr, &r);
        refused += rc == FGMM_ERR_IO || (at < 4 && rc == FGMM_ERR_FAISS);  // not "FGMM": FAISS's to judge
        EXPECT_EQ(r, nullptr) << at;
    }
    EXPECT_EQ(refused, tries);
    for (size_t cut = 0; cut < good.size(); cut++) {  // every length short of the whole
        spit(bad, good.substr(0, cut));
        EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO) << cut;
    }
    spit(bad, good + "x");
    EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("after the last section"), std::string::npos)
        << fgmm_get_last_error();
    std::string v2 = good;
    v2[8] = 3;  // version 2 is a file with a refine copy (tests/test_ivf_refine.cpp)
    spit(bad, v2);
    EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("format version 3"), std::string::npos) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_model_write(t.h->model, bad.c_str()), 0);
    EXPECT_EQ(fgmm_ivf_read(bad.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("not a flashgmm-ivf index file"), std::string::npos);
    // the model in a stream: exactly its bytes
    FILE* f = fopen(bad.c_str(), "rb");
    ASSERT_NE(f, nullptr);
    FgmmModel* m = nullptr;
    int64_t size = (int64_t)fs::file_size(bad);
    EXPECT_EQ(fgmm_model_fread(f, size - 1, &m), FGMM_ERR_IO);
    rewind(f);
    ASSERT_EQ(fgmm_model_fread(f, size, &m), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_model_k(m), FUZZ_IVF_NLIST);
    fgmm_model_free(m);
    fclose(f);
    EXPECT_EQ(fgmm_model_fread(nullptr, size, &m), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_model_fwrite(nullptr, stdout), FGMM_ERR_NULL);
}

// The seed corpus and the crashes of fuzz/fuzz_index.c (scripts/fuzz.sh), placed as the target
// places them (fuzz_ivf_place): files named valid* read and pass the target's round trip; every
// other one fails with a code and a message (and nothing leaks: the ASan build).
TEST(IvfIo, FuzzRegressions) {
    std::string dir = fresh_dir("fuzz");
    FuzzIvfFiles F;
    ASSERT_EQ(fuzz_ivf_setup(dir.c_str(), &F), 0) << fgmm_get_last_error();
    int files = 0, one_file = 0;
    for (auto& e : fs::directory_iterator(fgt::corpus("index"))) {
        std::string name = e.path().filename().string(), bytes = slurp(e.path().string());
        ASSERT_FALSE(bytes.empty()) << name;
        const char* path = fuzz_ivf_place(&F, (const uint8_t*)bytes.data(), bytes.size());
        ASSERT_NE(path, nullptr) << name;
        one_file += path == std::string(F.index);
        FgmmIvf* r = nullptr;
        int rc = fgmm_ivf_read(path, nullptr, &r);
        if (name.rfind("valid", 0) == 0) {
            ASSERT_EQ(rc, 0) << name << ": " << fgmm_get_last_error();
            EXPECT_EQ(fgmm_ivf_inflation(r), 2.0) << name;  // TOPM, 2 lists per vector
            const char* bad = fuzz_ivf_roundtrip(r, &F);
            EXPECT_EQ(bad, nullptr) << name << ": " << bad << ": " << fgmm_get_last_error();
        } else {
            EXPECT_LT(rc, 0) << name;
            EXPECT_EQ(r, nullptr) << name;
            if (rc) EXPECT_STRNE(fgmm_get_last_error(), "") << name;
        }
        fgmm_ivf_free(r);
        files++;
    }
    EXPECT_GE(files, 16);
    EXPECT_GE(one_file, 8);
    // a FIFO in place of a sidecar or of the index is refused, not waited on
    FgmmIvf* r = nullptr;
    std::string fifo = std::string(F.settings) + ".fgmm";
    std::remove(fifo.c_str());
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_EQ(fgmm_ivf_read(F.settings, nullptr, &r), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_ivf_read(fifo.c_str(), nullptr, &r), FGMM_ERR_IO);
    EXPECT_EQ(r, nullptr);
    std::remove(fifo.c_str());
    fuzz_ivf_teardown(&F);
}

// Misuse of the write calls: codes and messages naming the call, no file left.
TEST(IvfIo, BadArgumentsAreErrors) {
    Tiny t;
    std::string dir = fresh_dir("args"), path = dir + "/a.faiss";
    for (auto* write : {fgmm_ivf_write, fgmm_ivf_write_faiss}) {
        EXPECT_EQ(write(nullptr, path.c_str()), FGMM_ERR_NULL);
        EXPECT_NE(std::string(fgmm_get_last_error()).find("fgmm_ivf_write"), std::string::npos)
            << fgmm_get_last_error();
        EXPECT_EQ(write(t.h, nullptr), FGMM_ERR_NULL);
        EXPECT_EQ(write(t.h, (dir + "/no/such/dir/x").c_str()), FGMM_ERR_IO);
        EXPECT_EQ(write(t.h, dir.c_str()), FGMM_ERR_IO);  // a directory is not replaced
        EXPECT_NE(std::string(fgmm_get_last_error()).find("not a regular file"), std::string::npos);
    }
    FaissIndex* untrained = nullptr;
    ASSERT_EQ(faiss_index_factory(&untrained, FUZZ_IVF_D, "IVF4,Flat", METRIC_L2), 0);
    FgmmIvf* h = nullptr;
    ASSERT_EQ(fgmm_ivf_wrap(untrained, nullptr, &h), 0);
    EXPECT_EQ(fgmm_ivf_write(h, path.c_str()), FGMM_ERR_STATE);
    EXPECT_EQ(fgmm_ivf_write_faiss(h, path.c_str()), FGMM_ERR_STATE);
    EXPECT_STREQ(fgmm_get_last_error(), "fgmm_ivf_write_faiss: the index is not trained");
    fgmm_ivf_free(h);
    faiss_Index_free(untrained);
    // IVF-PQR: refused (its refinement codes are found by id); the export's own check stays as a guard
    FaissIndex* pqr = nullptr;
    ASSERT_EQ(faiss_index_factory(&pqr, FUZZ_IVF_D, "IVF4,PQ2+2", METRIC_L2), 0);
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = FGMM_ASSIGN_HARD, p.gmm.backend = FGMM_BACKEND_CPU, p.gmm.niter = 2;
    EXPECT_EQ(fgmm_ivf_wrap(pqr, &p, &h), FGMM_ERR_STATE);  // wrap takes no IndexIVFPQR either
    EXPECT_EQ(h, nullptr);
    faiss_Index_free(pqr);
    EXPECT_EQ(others(dir, {}), std::vector<std::string>());
}
