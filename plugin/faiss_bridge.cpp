/* SPDX-License-Identifier: MIT */
// faiss_bridge.cpp: IVF operations behind a C header. FAISS's C API where it has the entry point
// (add_core of IVF-Flat and IVF-SQ, list sizes and ids); C++ only for add_core of the other IVF
// kinds (IVF-PQ), for appending codes encoded elsewhere (IVF-PQ on the GPU: the fields its encoder
// needs, then IndexIVF::add_core's append loop), for search_preassigned with per-call parameters
// and for IVF-Flat's list storage (read by plugin/ivf_search.c). Builds against FAISS 1.7.3 and 1.8+ (whose add_core has a defaulted fifth
// parameter, so the C++ call below reads the same).
#include "faiss_bridge.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQR.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>

#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include <omp.h>

namespace {
int fail(char* err, size_t errlen, const char* what) {
    if (err && errlen) std::snprintf(err, errlen, "%s", what);
    return -1;
}
int c_api(int rc, char* err, size_t errlen) { return rc ? fail(err, errlen, faiss_get_last_error()) : 0; }
}  // namespace

namespace {
std::string class_name(const std::type_info& t) {
    int status = 0;
    char* s = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
    std::string r = status == 0 && s ? s : t.name();
    std::free(s);
    return r;
}
}  // namespace

extern "C" int fgmm_faiss_tested_type(const FaissIndex* index, char* err, size_t errlen) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!handle) return fail(err, errlen, "not an IndexIVF"), 0;
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(handle);
    const std::type_info& t = typeid(*ivf);
    // IndexIVFPQR is not taken: FAISS 1.7.3 finds its refinement codes by id (refine_codes[id]), which
    // holds only for ids 0 .. ntotal-1 added once each; a spilled add or chosen ids would be refined
    // with another vector's code (silently wrong distances).
    if (t != typeid(faiss::IndexIVFFlat) && t != typeid(faiss::IndexIVFPQ)) {
        std::string m = "the index is a " + class_name(t) +
                        "; this plugin is tested on IndexIVFFlat and IndexIVFPQ only" +
                        (t == typeid(faiss::IndexIVFPQR) ? " (IndexIVFPQR finds its refinement codes by id, which a "
                                                           "spilled add breaks)"
                                                         : "");
        return fail(err, errlen, m.c_str()), 0;
    }
    const faiss::Index* q = ivf->quantizer;
    if (!q || (typeid(*q) != typeid(faiss::IndexFlatL2) && typeid(*q) != typeid(faiss::IndexFlat)) ||
        q->metric_type != faiss::METRIC_L2) {
        std::string m = "the quantizer is a " + (q ? class_name(typeid(*q)) : std::string("null pointer")) +
                        "; this plugin is tested on a flat L2 quantizer (IndexFlatL2) only";
        return fail(err, errlen, m.c_str()), 0;
    }
    return 1;
}

extern "C" int fgmm_faiss_add_preassigned(FaissIndex* index, int64_t n, const float* x, const int64_t* ids,
                                          const int64_t* lists, char* err, size_t errlen) {
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(index);  // the C API's handle is the IndexIVF pointer
    if (!ivf) return fail(err, errlen, "not an IndexIVF");
    if (FaissIndexIVFFlat* flat = faiss_IndexIVFFlat_cast(index))
        return c_api(faiss_IndexIVFFlat_add_core(flat, n, x, ids, lists), err, errlen);
    if (FaissIndexIVFScalarQuantizer* sq = faiss_IndexIVFScalarQuantizer_cast(index))
        return c_api(faiss_IndexIVFScalarQuantizer_add_core(sq, n, x, ids, lists), err, errlen);
    try {
        reinterpret_cast<faiss::IndexIVF*>(ivf)->add_core(n, x, ids, lists);
    } catch (const std::exception& e) { return fail(err, errlen, e.what()); }
    return 0;
}

extern "C" int fgmm_faiss_pq_codebook(const FaissIndex* index, int* M, const float** codebook) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!handle) return 0;
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(handle);
    // exactly IndexIVFPQ: its subclasses (IndexIVFPQR: a refinement code) add more than the PQ code
    if (typeid(*ivf) != typeid(faiss::IndexIVFPQ)) return 0;
    const faiss::IndexIVFPQ* pq = static_cast<const faiss::IndexIVFPQ*>(ivf);
    const faiss::ProductQuantizer& q = pq->pq;
    if (!pq->is_trained || !pq->by_residual || pq->metric_type != faiss::METRIC_L2 || q.nbits != 8 || q.ksub != 256 ||
        q.M * q.dsub != (size_t)pq->d || pq->code_size != q.M || !pq->invlists ||
        pq->invlists->code_size != pq->code_size || q.centroids.size() != (size_t)256 * pq->d)
        return 0;
    *M = (int)q.M;
    *codebook = q.centroids.data();
    return 1;
}

extern "C" int fgmm_faiss_add_codes(FaissIndex* index, int64_t n, const uint8_t* codes, const int64_t* ids,
                                    const int64_t* lists, char* err, size_t errlen) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(index);
    if (!handle) return fail(err, errlen, "not an IndexIVF");
    faiss::IndexIVF* ivf = reinterpret_cast<faiss::IndexIVF*>(handle);
    const size_t cs = ivf->code_size;
    std::string error;
    try {
        ivf->direct_map.check_can_add(ids);
        faiss::DirectMapAdd dm(ivf->direct_map, (size_t)n, ids);
#pragma omp parallel
        {  // as IndexIVF::add_core: each thread appends to the lists l with l % threads == its rank, in order
            int nt = omp_get_num_threads(), rank = omp_get_thread_num();
            try {
                for (int64_t i = 0; i < n; i++) {
                    int64_t l = lists[i];
                    if (l >= 0 && l % nt == rank) {
                        size_t ofs = ivf->invlists->add_entry((size_t)l, ids[i], codes + (size_t)i * cs);
                        dm.add((size_t)i, l, ofs);
                    } else if (rank == 0 && l == -1) {
                        dm.add((size_t)i, -1, 0);
                    }
                }
            } catch (const std::exception& e) {
#pragma omp critical(fgmm_bridge_error)
                error = e.what();
            }
        }
    } catch (const std::exception& e) { error = e.what(); }
    if (!error.empty()) return fail(err, errlen, error.c_str());
    ivf->ntotal += n;
    return 0;
}

extern "C" int fgmm_faiss_search_preassigned(const FaissIndex* index, int64_t n, const float* x, int64_t k, int nprobe,
                                             const int64_t* assign, const float* centroid_dis, float* distances,
                                             int64_t* labels, char* err, size_t errlen) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!handle) return fail(err, errlen, "not an IndexIVF");
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(handle);
    faiss::SearchParametersIVF params;
    params.nprobe = (size_t)nprobe;
    // IndexIVF::search's own threading: search_preassigned is serial in FAISS's default parallel
    // mode, so each thread takes a slice of the queries.
    int nt = (int)std::min<int64_t>(omp_get_max_threads(), std::max<int64_t>(n, 1));
    std::string error;
#pragma omp parallel for if (nt > 1)
    for (int s = 0; s < nt; s++) {
        int64_t i0 = n * s / nt, i1 = n * (s + 1) / nt;
        try {
            ivf->search_preassigned(i1 - i0, x + i0 * ivf->d, k, assign + i0 * nprobe, centroid_dis + i0 * nprobe,
                                    distances + i0 * k, labels + i0 * k, false, &params);
        } catch (const std::exception& e) {
#pragma omp critical(fgmm_bridge_error)
            error = e.what();
        }
    }
    return error.empty() ? 0 : fail(err, errlen, error.c_str());
}

namespace {
// The lists of an index that is exactly an IndexIVFFlat on in-memory ArrayInvertedLists; else null.
const faiss::ArrayInvertedLists* flat_lists(const FaissIndex* index) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!handle) return nullptr;
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(handle);
    // exactly IndexIVFFlat: its subclasses (IndexIVFFlatDedup) store or search differently
    if (typeid(*ivf) != typeid(faiss::IndexIVFFlat) || ivf->code_size != sizeof(float) * ivf->d) return nullptr;
    const auto* al = dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists);
    if (!al || al->code_size != ivf->code_size || al->nlist != ivf->nlist) return nullptr;
    return al;
}
}  // namespace

extern "C" int fgmm_faiss_flat_lists(const FaissIndex* index, const float** codes, const int64_t** ids,
                                     int64_t* sizes) {
    const faiss::ArrayInvertedLists* al = flat_lists(index);
    if (!al) return 0;
    for (size_t l = 0; l < al->nlist; l++) {
        codes[l] = reinterpret_cast<const float*>(al->codes[l].data());
        ids[l] = al->ids[l].data();
        sizes[l] = (int64_t)al->ids[l].size();
    }
    return 1;
}

extern "C" int fgmm_faiss_flat_lists_of(const FaissIndex* index, int64_t n, const int64_t* lists, const float** codes,
                                        const int64_t** ids, int64_t* sizes) {
    const faiss::ArrayInvertedLists* al = flat_lists(index);
    if (!al) return 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t l = lists[i];
        bool ok = l >= 0 && (size_t)l < al->nlist;
        codes[i] = ok ? reinterpret_cast<const float*>(al->codes[l].data()) : nullptr;
        ids[i] = ok ? al->ids[l].data() : nullptr;
        sizes[i] = ok ? (int64_t)al->ids[l].size() : 0;
    }
    return 1;
}

extern "C" int fgmm_faiss_max_id(const FaissIndex* index, int64_t* out, char* err, size_t errlen) {
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!ivf) return fail(err, errlen, "not an IndexIVF");
    try {  // faiss_IndexIVF_invlists_get_ids does not catch
        int64_t mx = -1;
        std::vector<idx_t> ids;
        for (size_t l = 0; l < faiss_IndexIVF_nlist(ivf); l++) {
            ids.resize(faiss_IndexIVF_get_list_size(ivf, l));
            if (ids.empty()) continue;
            faiss_IndexIVF_invlists_get_ids(ivf, l, ids.data());
            mx = std::max(mx, *std::max_element(ids.begin(), ids.end()));
        }
        *out = mx;
    } catch (const std::exception& e) { return fail(err, errlen, e.what()); }
    return 0;
}

extern "C" int fgmm_faiss_write_one_per_id(const FaissIndex* index, FILE* f,
                                           double (*score)(void* ctx, int64_t list, const float* x), void* ctx,
                                           char* err, size_t errlen) {
    FaissIndexIVF* handle = faiss_IndexIVF_cast(const_cast<FaissIndex*>(index));
    if (!handle) return fail(err, errlen, "not an IndexIVF");
    const faiss::IndexIVF* ivf = reinterpret_cast<const faiss::IndexIVF*>(handle);
    const std::type_info& t = typeid(*ivf);
    if (t == typeid(faiss::IndexIVFPQR))
        return fail(err, errlen,
                    "an IndexIVFPQR is not exported: FAISS finds its refinement codes by id (0 to ntotal - 1), "
                    "which a copy without the spilled entries does not keep");
    if (t != typeid(faiss::IndexIVFFlat) && t != typeid(faiss::IndexIVFPQ))
        return fail(err, errlen,
                    ("an " + class_name(t) + " is not exported (IndexIVFFlat and IndexIVFPQ are)").c_str());
    const faiss::InvertedLists* il = ivf->invlists;
    if (!il) return fail(err, errlen, "the index has no inverted lists");
    struct Entry {
        int64_t id, list, offset;
    };
    std::string error;
    try {
        std::vector<Entry> all;
        all.reserve(ivf->ntotal);
        for (size_t l = 0; l < il->nlist; l++) {
            size_t n = il->list_size(l);
            if (!n) continue;
            faiss::InvertedLists::ScopedIds ids(il, l);
            for (size_t o = 0; o < n; o++) all.push_back({ids.get()[o], (int64_t)l, (int64_t)o});
        }
        std::sort(all.begin(), all.end(),
                  [](const Entry& a, const Entry& b) { return a.id != b.id ? a.id < b.id : a.list < b.list; });
        std::vector<size_t> group;  // where each id's entries start
        for (size_t i = 0; i < all.size(); i++)
            if (!i || all[i].id != all[i - 1].id) group.push_back(i);
        group.push_back(all.size());
        // per id: its copies' reconstructions averaged (one estimate of the vector for all its
        // lists: PQ errors then move every list's score alike), the best-scoring list kept, ties
        // to the lower list; the others marked with list -1
#pragma omp parallel
        {
            std::vector<float> x(ivf->d), mean(ivf->d);
#pragma omp for schedule(dynamic, 256)
            for (int64_t g = 0; g < (int64_t)group.size() - 1; g++) {
                size_t a = group[g], b = group[g + 1];
                if (b - a == 1) continue;
                try {
                    std::fill(mean.begin(), mean.end(), 0.0f);
                    for (size_t i = a; i < b; i++) {
                        ivf->reconstruct_from_offset(all[i].list, all[i].offset, x.data());
                        for (int j = 0; j < ivf->d; j++) mean[j] += x[j] / (float)(b - a);
                    }
                    size_t best = a;
                    double best_score = score(ctx, all[a].list, mean.data());
                    for (size_t i = a + 1; i < b; i++) {
                        double s = score(ctx, all[i].list, mean.data());
                        if (s > best_score) best = i, best_score = s;
                    }
                    for (size_t i = a; i < b; i++)
                        if (i != best) all[i].list = -1;
                } catch (const std::exception& e) {
#pragma omp critical(fgmm_bridge_error)
                    error = e.what();
                }
            }
        }
        if (!error.empty()) return fail(err, errlen, error.c_str());
        all.erase(std::remove_if(all.begin(), all.end(), [](const Entry& e) { return e.list < 0; }), all.end());
        std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
            return a.list != b.list ? a.list < b.list : a.offset < b.offset;
        });
        auto kept = std::make_unique<faiss::ArrayInvertedLists>(il->nlist, il->code_size);
        for (size_t i = 0; i < all.size();) {
            size_t l = (size_t)all[i].list;
            faiss::InvertedLists::ScopedCodes codes(il, l);  // not get_single_code: 1.7.3 leaks its copy
            for (; i < all.size() && (size_t)all[i].list == l; i++)
                kept->add_entry(l, all[i].id, codes.get() + (size_t)all[i].offset * il->code_size);
        }
        // a copy holding the kept lists, sharing the quantizer (copied fields, nothing owned)
        std::unique_ptr<faiss::IndexIVF> copy;
        if (typeid(*ivf) == typeid(faiss::IndexIVFFlat))
            copy.reset(new faiss::IndexIVFFlat(*static_cast<const faiss::IndexIVFFlat*>(ivf)));
        else copy.reset(new faiss::IndexIVFPQ(*static_cast<const faiss::IndexIVFPQ*>(ivf)));
        copy->own_fields = false;
        copy->own_invlists = false;
        copy->replace_invlists(kept.release(), true);
        copy->ntotal = (int64_t)all.size();
        copy->direct_map = faiss::DirectMap();
        if (ivf->direct_map.type != faiss::DirectMap::NoMap) copy->set_direct_map_type(ivf->direct_map.type);
        faiss::FileIOWriter w(f);
        faiss::write_index(copy.get(), &w);
    } catch (const std::exception& e) { return fail(err, errlen, e.what()); }
    return 0;
}
