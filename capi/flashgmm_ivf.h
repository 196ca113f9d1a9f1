/* flashgmm_ivf.h: GMM-trained FAISS IVF indexes (IVF-Flat, IVF-PQ) with multi-assignment.
 *
 * Works on an index made with FAISS's C API, e.g.
 *     faiss_index_factory(&index, d, "IVF1024,Flat", METRIC_L2);   // or "IVF1024,PQ16"
 * Training fits a GMM with k = nlist, puts its means in the quantizer and lets FAISS train
 * the rest (for IVF-PQ: the product quantizer on residuals to the nearest mean, exactly as
 * IndexIVF::train would). Adding puts every vector in each list k whose responsibility
 * r_ik > tau (default tau = 1/nlist: posterior above prior), at most max_assign lists,
 * always including its primary list. Searching returns k distinct ids and the distance
 * computations (DCO) per query:
 *     DCO = nlist (query-to-centroid distances) + sum of the sizes of the nprobe lists scanned,
 * where list sizes count spilled copies. The GMM (means, variances, weights) is kept with
 * the handle and written next to the index as PATH.gmm.
 */
#ifndef FLASHGMM_IVF_H
#define FLASHGMM_IVF_H

#include <faiss/c_api/Index_c.h>

#include "flashgmm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum FgmmAssignRule {
    FGMM_ASSIGN_TAU = 0,  ///< lists with r_ik > tau (GMM spill), at most max_assign
    FGMM_ASSIGN_HARD = 1, ///< the primary list only (no spill)
    FGMM_ASSIGN_TOPM = 2, ///< the max_assign nearest centroids (hard spill, for comparison)
} FgmmAssignRule;

typedef enum FgmmPrimary {
    FGMM_PRIMARY_NEAREST = 0,        ///< primary list = nearest centroid (what a plain IVF uses)
    FGMM_PRIMARY_RESPONSIBILITY = 1, ///< primary list = highest responsibility
} FgmmPrimary;

typedef struct FgmmIvfParams {
    FgmmParams gmm;       ///< GMM training (gmm.k is replaced by the index's nlist)
    FgmmAssignRule rule;  ///< default FGMM_ASSIGN_TAU
    FgmmPrimary primary;  ///< default FGMM_PRIMARY_NEAREST
    double tau;           ///< spill threshold on r_ik; <= 0 means 1/nlist (default 0)
    int max_assign;       ///< lists per vector at most (default 4)
} FgmmIvfParams;

/// Fills every field with its default.
void fgmm_ivf_params_init(FgmmIvfParams* params);

/// Opaque: a FAISS IVF index plus its GMM.
typedef struct FgmmIvf FgmmIvf;

/// Wraps an IVF index (borrowed: the caller frees it after fgmm_ivf_free). The index must be an
/// IndexIVF with the L2 metric; params are copied.
int fgmm_ivf_wrap(FaissIndex* index, const FgmmIvfParams* params, FgmmIvf** out);

/// Trains the GMM on n vectors (d = the index's d) and then the index. info may be NULL.
int fgmm_ivf_train(FgmmIvf* ivf, idx_t n, const float* x, FgmmTrainInfo* info);

/// Installs a trained GMM (copied; k must equal nlist, d the index's d) instead of training one,
/// then trains the rest of the index on x as fgmm_ivf_train does: one GMM, several indexes.
int fgmm_ivf_set_gmm(FgmmIvf* ivf, const FgmmModel* gmm, idx_t n, const float* x);

/// Adds n vectors with multi-assignment. ids may be NULL (then ids continue from the last
/// added one). lists_added (may be NULL) receives the number of (vector, list) entries.
int fgmm_ivf_add(FgmmIvf* ivf, idx_t n, const float* x, const idx_t* ids, idx_t* lists_added);

/// Average lists per vector over everything added so far (1.0 without spill).
double fgmm_ivf_inflation(const FgmmIvf* ivf);

/// k nearest distinct ids for nq queries, scanning nprobe lists; distances/labels nq x k
/// (missing results: label -1, distance +inf); dco (nq values) may be NULL. Sets the index's
/// nprobe. Searches k * max_assign candidates so that k distinct ids survive deduplication.
int fgmm_ivf_search(const FgmmIvf* ivf, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                    idx_t* labels, int64_t* dco);

/// recall@k as ann-benchmarks counts it: mean over nq queries of |labels[i][0..k) ∩ gt[i][0..k)| / k,
/// with gt rows of gt_k >= k true neighbour ids (nearest first). Returns -1 on bad arguments.
double fgmm_recall(idx_t nq, int k, const idx_t* labels, int gt_k, const int32_t* gt);

/// Writes the index with faiss_write_index_fname to path and the GMM to path.gmm.
int fgmm_ivf_write(const FgmmIvf* ivf, const char* path);

/// Reads both files; the returned handle owns the index.
int fgmm_ivf_read(const char* path, const FgmmIvfParams* params, FgmmIvf** out);

FaissIndex* fgmm_ivf_index(const FgmmIvf* ivf);
const FgmmModel* fgmm_ivf_model(const FgmmIvf* ivf); ///< NULL before training
void fgmm_ivf_free(FgmmIvf* ivf);

#ifdef __cplusplus
}
#endif
#endif
