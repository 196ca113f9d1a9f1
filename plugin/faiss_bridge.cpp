// faiss_bridge.cpp: thin C++ calls behind a C header, for what FAISS's C API cannot do.
#include "faiss_bridge.h"

#include <faiss/IndexIVF.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>

#include <omp.h>

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
