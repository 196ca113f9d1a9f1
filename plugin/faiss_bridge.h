/* SPDX-License-Identifier: MIT */
/* faiss_bridge.h: IVF operations beyond FAISS's generic C API calls (faiss_bridge.cpp says which use
 * the C API and which need C++). */
#ifndef FGMM_FAISS_BRIDGE_H
#define FGMM_FAISS_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <faiss/c_api/Index_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 where the index's exact class is one the plugin's tests cover (IndexIVFFlat, IndexIVFPQ, IndexIVFPQR)
 * and its quantizer is a flat L2 index (IndexFlatL2, or IndexFlat with METRIC_L2); else 0 with the class
 * names in err (other IVF kinds, e.g. fast-scan PQ, fail inside FAISS's add or abort the process). */
int fgmm_faiss_tested_type(const FaissIndex* index, char* err, size_t errlen);

/* IndexIVF::add_core: vector i goes to list lists[i] with id ids[i] (IVF-PQ encodes the residual
 * to that list's centroid). On failure returns -1 with FAISS's message in err. */
int fgmm_faiss_add_preassigned(FaissIndex* index, int64_t n, const float* x, const int64_t* ids, const int64_t* lists,
                               char* err, size_t errlen);

/* 1 where the index is exactly an IndexIVFPQ whose adds encode what fgmm_pq_encode_gpu computes
 * (trained, by_residual, L2, 8-bit codes: code_size = M bytes), with *M and *codebook = its
 * pq.centroids (M x 256 x d / M floats, owned by the index); else 0 (nothing set). */
int fgmm_faiss_pq_codebook(const FaissIndex* index, int* M, const float** codebook);

/* Appends n precomputed codes (code_size bytes each) to the inverted lists as IndexIVF::add_core does
 * after encoding: entry i to list lists[i] (-1: none) with id ids[i], the direct map updated, ntotal
 * += n; each list gets its entries in the order given. On failure returns -1 with FAISS's message. */
int fgmm_faiss_add_codes(FaissIndex* index, int64_t n, const uint8_t* codes, const int64_t* ids, const int64_t* lists,
                         char* err, size_t errlen);

/* IndexIVF::search_preassigned with nprobe passed per call (SearchParametersIVF), so that the
 * index is not modified and several threads may search it at once. assign / centroid_dis are
 * n x nprobe (the quantizer's answer), distances / labels n x k. */
int fgmm_faiss_search_preassigned(const FaissIndex* index, int64_t n, const float* x, int64_t k, int nprobe,
                                  const int64_t* assign, const float* centroid_dis, float* distances, int64_t* labels,
                                  char* err, size_t errlen);

/* 1 where the index is exactly an IndexIVFFlat whose lists are FAISS's in-memory ArrayInvertedLists:
 * then for every list l, codes[l] (sizes[l] rows of d floats) and ids[l] (sizes[l]) point into the
 * index (valid until it is modified); else 0 (nothing set). Arrays of nlist entries. */
int fgmm_faiss_flat_lists(const FaissIndex* index, const float** codes, const int64_t** ids, int64_t* sizes);

/* The same for the n lists lists[0..n) only (an entry < 0 or >= nlist: NULL, NULL, size 0), into arrays
 * of n entries: what one search call reads, without a pass over every list. */
int fgmm_faiss_flat_lists_of(const FaissIndex* index, int64_t n, const int64_t* lists, const float** codes,
                             const int64_t** ids, int64_t* sizes);

/* Largest id stored in any inverted list (-1 if empty). */
int fgmm_faiss_max_id(const FaissIndex* index, int64_t* out, char* err, size_t errlen);

/* Writes to f (faiss::write_index) a copy of the IVF index that holds each id once: of the entries
 * with one id, the one whose list l scores highest by score(ctx, l, x), x the average of their
 * reconstructions (IndexIVF::reconstruct_from_offset: the vector for IVF-Flat, centroid + decoded
 * residual for IVF-PQ); ties go to the lower list. Lists keep their order; ntotal = distinct ids; a direct map
 * is rebuilt as the index had it. The index is not modified; the copy shares its quantizer and
 * holds only the kept lists. Exactly IndexIVFFlat or IndexIVFPQ (an IndexIVFPQR's refinement codes
 * are found by id: refused). score is called from several threads. On failure returns -1 with the
 * reason in err. */
int fgmm_faiss_write_one_per_id(const FaissIndex* index, FILE* f,
                                double (*score)(void* ctx, int64_t list, const float* x), void* ctx, char* err,
                                size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
