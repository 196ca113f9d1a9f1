/* SPDX-License-Identifier: MIT */
/* ivf_impl.h: the FgmmIvf handle, shared by ivf.c (lifetime), ivf_train.c, ivf_add.c, the search
 * engines and ivf_io.c (files). The plugin is built on the public headers (capi/) only, as a user's
 * own would be. */
#ifndef FGMM_IVF_IMPL_H
#define FGMM_IVF_IMPL_H

#include <stdio.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "flashgmm_ivf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FGMM_ERR_NULL from the calling function when p is NULL. */
#define IVF_CHECK_NULL(p)                                                                    \
    do {                                                                                     \
        if (!(p)) return fgmm_set_last_error(FGMM_ERR_NULL, "%s: %s is NULL", __func__, #p); \
    } while (0)

struct FgmmIvf {
    FaissIndex* index;
    FaissIndexIVF* ivf;
    int owns_index;
    FgmmIvfParams p;
    FgmmModel* model;
    float* cent; /* nlist x d: the quantizer's centroids, once trained */
    int d;
    int nlist;
    int64_t n_vectors; /* distinct vectors added */
    int64_t n_entries; /* (vector, list) entries added */
    int64_t next_id;
    int has_threshold; /* spill_target: the score threshold, set by the first add */
    double threshold;
    double add_pq_gpu_s; /* the last fgmm_ivf_add's seconds in IVF-PQ encoding on the GPU and appending the
                          * codes (0: FAISS's add_core encoded; read by bench/bench_build.c) */
    int refine_on;       /* fgmm_ivf_refine_flat: exact re-ranking from the rows below (ivf_refine.c) */
    float k_factor;      /* fgmm_ivf_search's k_factor where refine_on */
    float* refine;       /* refine_n x d floats, row = id; capacity refine_cap rows */
    int64_t refine_n, refine_cap;
};

/* Vectors per add/search batch: bounds the temporary copies (batch x lists x d floats). */
#define IVF_BATCH 16384

/* SOAR and RESP add at most one list per vector, chosen by a selector under a budget. */
static inline int fgmm_ivf_one_extra(FgmmAssignRule r) { return r == FGMM_ASSIGN_SOAR || r == FGMM_ASSIGN_RESP; }

/* Caches the trained quantizer's centroids (nlist x d) in h->cent. */
int fgmm_ivf_load_centroids(FgmmIvf* h);
/* FGMM_ERR_FAISS with FAISS's last message, prefixed by what. */
int fgmm_ivf_faiss_failed(const char* what);
/* Lists a vector sits in at most under the handle's rule (capped at nlist). */
int fgmm_ivf_lists_per_vector(const FgmmIvf* h);
/* FGMM_ERR_ARG with a message if a field of p is out of range. */
int fgmm_ivf_check_params(const FgmmIvfParams* p);

/* crc continues a CRC-32 (0 to start), as zlib's crc32(crc, p, n) (ivf_crc.c). */
uint32_t fgmm_ivf_crc32(uint32_t crc, const void* p, size_t n);
/* CRC-32 of bytes [off, off + len) of the file fd; -1 if they cannot all be read. */
int64_t fgmm_ivf_crc32_range(int fd, int64_t off, int64_t len);

/* An index file's sections (docs/FORMAT.md): the FAISS index, the settings, the model (version 1);
 * version 2 adds the refine copy. */
enum { FGMM_IVF_SECTIONS = 3, FGMM_IVF_SECTIONS_MAX = 4 };
typedef struct FgmmIvfLayout {
    int nsec; /* 3 (version 1) or 4 (version 2) */
    int64_t off[FGMM_IVF_SECTIONS_MAX], len[FGMM_IVF_SECTIONS_MAX];
    uint32_t crc[FGMM_IVF_SECTIONS_MAX];
} FgmmIvfLayout;
/* The header of the index file f (size bytes, named name in messages): its sections, checked to be
 * back to back, within the file, of sane lengths, and to match their CRC-32s (FGMM_ERR_IO with
 * the reason otherwise). Also for fuzz/fuzz_index.c, which keeps the FAISS section FAISS's own. */
int fgmm_ivf_layout(FILE* f, int64_t size, const char* name, FgmmIvfLayout* out);

/* Search engines of fgmm_ivf_search: AUTO takes ONE where the index allows it (which hands large or
 * list-sharing batches to FLAT), else FAISS. */
enum { FGMM_SEARCH_AUTO = 0, FGMM_SEARCH_FAISS = 1, FGMM_SEARCH_FLAT = 2, FGMM_SEARCH_ONE = 3 };
/* FAISS: IndexIVF::search_preassigned for k x copies candidates, then de-duplication.
 * FLAT: the list-major engine of ivf_search.c, for an IndexIVFFlat on in-memory lists (else
 * FGMM_ERR_STATE). slot_bytes bounds a batch's candidate buffers (0: the default; tests make
 * batches small with it). ONE: the per-query engine of ivf_search_one.c for every batch, on the same
 * indexes. fgmm_ivf_search is engine AUTO, slot_bytes 0. */
int fgmm_ivf_search_with(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                         idx_t* labels, int64_t* dco, int engine, size_t slot_bytes);
/* The FLAT engine on validated arguments (nprobe <= nlist); returns 1, doing nothing, where the
 * index is not an IndexIVFFlat on in-memory lists. pre: the quantizer's nq x nprobe lists when the
 * caller has them (NULL: the engine asks the quantizer). */
int fgmm_ivf_search_flat(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                         idx_t* labels, int64_t* dco, size_t slot_bytes, const idx_t* pre);
/* The ONE engine on validated arguments: each query's k best ids in one heap over its lists, one
 * query's lists split over threads where queries are fewer than threads. With force 0 (engine AUTO)
 * it hands batches whose lists are shared by many queries, and large ones, to the FLAT engine.
 * Returns 1, doing nothing, where the index is not an IndexIVFFlat on in-memory lists. */
int fgmm_ivf_search_one(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                        idx_t* labels, int64_t* dco, int force);

/* First copy of each id in a candidate row (sorted, nearest first; -1 ends it): a hash set of the
 * ids output, O(n) per row. */
typedef struct FgmmIvfDedup {
    idx_t* tab;
    uint64_t mask;
} FgmmIvfDedup;
/* A set for rows of up to n distinct ids. */
int fgmm_ivf_dedup_init(FgmmIvfDedup* s, idx_t n);
void fgmm_ivf_dedup_free(FgmmIvfDedup* s);
/* The first k distinct ids of ids[0..n) with their distances into lout / dout, the rest of the
 * k-row padded with -1 / +inf; returns how many were found. The set is left empty. */
idx_t fgmm_ivf_dedup_sorted(FgmmIvfDedup* s, idx_t n, const float* dist, const idx_t* ids, idx_t k, float* dout,
                            idx_t* lout);
/* A result: its distance and id; fgmm_ivf_cmp_res orders them by (distance, id) for qsort. */
typedef struct FgmmIvfRes {
    float d;
    idx_t id;
} FgmmIvfRes;
int fgmm_ivf_cmp_res(const void* a, const void* b);
/* Distance computations of b queries (both engines count them so): nlist + the sizes of the lists in
 * their rows of assign (b x nprobe; entries < 0 are no list). */
void fgmm_ivf_dco(int nlist, const int64_t* sizes, const idx_t* assign, idx_t b, int nprobe, int64_t* dco);

/* ||x - y||^2 in float, as the FLAT engine computes its exact distances. */
float fgmm_ivf_l2sq(const float* x, const float* y, int d);

/* The refine copy (ivf_refine.c). Before an add of n vectors (ids may be NULL) to a handle with
 * refine_on: the ids must continue the rows (next_id, next_id + 1, ...; FGMM_ERR_ARG otherwise) and
 * room for n more rows is reserved. After the add succeeded, append stores the rows. */
int fgmm_ivf_refine_reserve(FgmmIvf* h, idx_t n, const idx_t* ids);
void fgmm_ivf_refine_append(FgmmIvf* h, idx_t n, const float* x);
/* FGMM_ERR_ARG where k_factor is not finite or < 1 (who names the caller). */
int fgmm_ivf_check_k_factor(float k_factor, const char* who);

#ifdef __cplusplus
}
#endif
#endif
