// faiss_bridge.cpp: thin C++ calls behind a C header, for what FAISS's C API cannot do.
#include "faiss_bridge.h"

#include <faiss/IndexIVF.h>

#include <algorithm>
#include <cstdio>
#include <exception>

namespace {
faiss::IndexIVF* as_ivf(const FaissIndex* index) {
    return dynamic_cast<faiss::IndexIVF*>(reinterpret_cast<faiss::Index*>(const_cast<FaissIndex*>(index)));
}
int fail(char* err, size_t errlen, const char* what) {
    if (err && errlen) std::snprintf(err, errlen, "%s", what);
    return -1;
}
}  // namespace

extern "C" int fgmm_faiss_add_preassigned(FaissIndex* index, int64_t n, const float* x, const int64_t* ids,
                                          const int64_t* lists, char* err, size_t errlen) {
    faiss::IndexIVF* ivf = as_ivf(index);
    if (!ivf) return fail(err, errlen, "not an IndexIVF");
    try {
        ivf->add_core(n, x, ids, lists);
    } catch (const std::exception& e) {
        return fail(err, errlen, e.what());
    }
    return 0;
}

extern "C" int fgmm_faiss_search_preassigned(const FaissIndex* index, int64_t n, const float* x, int64_t k,
                                             int nprobe, const int64_t* assign, const float* centroid_dis,
                                             float* distances, int64_t* labels, char* err, size_t errlen) {
    const faiss::IndexIVF* ivf = as_ivf(index);
    if (!ivf) return fail(err, errlen, "not an IndexIVF");
    try {
        faiss::SearchParametersIVF params;
        params.nprobe = (size_t)nprobe;
        ivf->search_preassigned(n, x, k, assign, centroid_dis, distances, labels, false, &params);
    } catch (const std::exception& e) {
        return fail(err, errlen, e.what());
    }
    return 0;
}

extern "C" int fgmm_faiss_max_id(const FaissIndex* index, int64_t* out, char* err, size_t errlen) {
    faiss::IndexIVF* ivf = as_ivf(index);
    if (!ivf) return fail(err, errlen, "not an IndexIVF");
    try {
        int64_t mx = -1;
        for (size_t l = 0; l < ivf->nlist; l++) {
            size_t sz = ivf->invlists->list_size(l);
            if (!sz) continue;
            faiss::InvertedLists::ScopedIds sid(ivf->invlists, l);
            mx = std::max(mx, *std::max_element(sid.get(), sid.get() + sz));
        }
        *out = mx;
    } catch (const std::exception& e) {
        return fail(err, errlen, e.what());
    }
    return 0;
}
