/* SPDX-License-Identifier: MIT */
/* flashgmm_ivf.h: better-trained FAISS IVF indexes (IVF-Flat, IVF-PQ) with multi-assignment.
 *
 * Works on an index made with FAISS's C API, e.g.
 *     faiss_index_factory(&index, d, "IVF1024,Flat", METRIC_L2);   // or "IVF1024,PQ16"
 * Training fits the coarse quantizer on all training points (a GMM, or the project's k-means)
 * and puts its means in the quantizer; FAISS then trains the rest (for IVF-PQ: the product
 * quantizer on residuals to the nearest mean, exactly as IndexIVF::train would). Adding puts
 * each vector in its nearest list and, by the spill rule, in extra lists: SOAR or the next
 * most responsible component for a chosen share of the vectors (a budget of lists per
 * vector), or every list with responsibility r_ik > tau (the paper's rule), or the m nearest.
 * Searching returns k distinct ids and the distance computations (DCO) per query:
 *     DCO = nlist (query-to-centroid distances) + sum of the sizes of the nprobe lists scanned,
 * where list sizes count spilled copies.
 *
 * Plain FAISS and spilled indexes: FAISS's own search of a spilled index returns an id once per
 * list it sits in (duplicates), and ntotal counts (vector, list) entries, not vectors. Search it
 * with fgmm_ivf_search (after fgmm_ivf_read), which removes the copies. fgmm_ivf_write keeps the
 * index, its spill settings and the GMM in one file that FAISS's readers refuse (so that they never
 * search it silently wrong); fgmm_ivf_write_faiss exports a plain FAISS file with each vector once.
 * The file format: docs/FORMAT.md.
 */
#ifndef FLASHGMM_IVF_H
#define FLASHGMM_IVF_H

#include <faiss/c_api/Index_c.h>

#include "flashgmm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum FgmmQuantizer {
    FGMM_QUANT_GMM = 0,     ///< GMM means: gmm.kmeans_iter k-means then gmm.niter EM iterations, all points
    FGMM_QUANT_KMEANS = 1,  ///< the project's k-means on all points, gmm.kmeans_iter + gmm.niter Lloyd
                            ///< iterations (the GMM's budget); the model keeps k-means variances/weights
    FGMM_QUANT_AUTO = 2,    ///< KMEANS when every training vector has the same norm to within 0.2%
                            ///< (L2-normalised, angular data), else GMM; training records the choice
} FgmmQuantizer;

typedef enum FgmmAssignRule {
    FGMM_ASSIGN_TAU = 0,   ///< every list with r_ik > tau (the paper's GMM spill), at most max_assign
    FGMM_ASSIGN_HARD = 1,  ///< the primary list only (no spill)
    FGMM_ASSIGN_TOPM = 2,  ///< the max_assign nearest centroids
    FGMM_ASSIGN_SOAR = 3,  ///< one extra list chosen by SOAR's loss (flashgmm_spill.h), lambda = soar_lambda
    FGMM_ASSIGN_RESP = 4,  ///< one extra list: the most responsible component other than the primary
} FgmmAssignRule;

typedef enum FgmmPrimary {
    FGMM_PRIMARY_NEAREST = 0,         ///< primary list = nearest centroid (what a plain IVF uses)
    FGMM_PRIMARY_RESPONSIBILITY = 1,  ///< primary list = highest responsibility (TAU and HARD only)
} FgmmPrimary;

typedef enum FgmmSpillSelect {
    FGMM_SELECT_RESP2 = 0,       ///< the vectors with the largest responsibility outside their primary list
    FGMM_SELECT_DIST_RATIO = 1,  ///< the vectors with the largest d1/d2 (nearest / second-nearest squared distance)
} FgmmSpillSelect;

typedef struct FgmmIvfParams {
    FgmmParams gmm;           ///< quantizer training (gmm.k is replaced by the index's nlist); default
                              ///< fgmm_params_init's but niter = 90 (10 k-means + 90 EM; k-means: 100 Lloyd)
    FgmmQuantizer quantizer;  ///< default FGMM_QUANT_AUTO: the GMM (best measured on SIFT), k-means on
                              ///< L2-normalised data (the GMM loses on GloVe: BENCHMARKS.md section 6)
    FgmmAssignRule rule;      ///< default FGMM_ASSIGN_SOAR
    FgmmPrimary primary;      ///< default FGMM_PRIMARY_NEAREST
    double tau;               ///< TAU: spill threshold on r_ik; <= 0 means 1/nlist (default 0)
    int max_assign;           ///< TAU, TOPM: lists per vector at most (default 4)
    float soar_lambda;        ///< SOAR: lambda >= 0 (default 1)
    double spill_target;      ///< SOAR, RESP: average lists per vector in [1, 2]: the first add sets a score
                              ///< threshold that spills that share of its vectors, later adds reuse it;
                              ///< 0 = spill every vector (default 1.5)
    FgmmSpillSelect select;   ///< SOAR, RESP with a spill_target: which vectors spill (default FGMM_SELECT_RESP2)
    int max_points_per_list;  ///< the quantizer trains on at most this many points per list, a seeded
                              ///< sample (gmm.seed), as FAISS's k-means does (256 there); 0 = all points;
                              ///< default FGMM_IVF_POINTS_AUTO: the schedule by backend (below)
} FgmmIvfParams;

/// max_points_per_list's default, a schedule by the backend the training will use (fgmm_ivf_schedule):
/// on the GPU (gmm.backend GPU, or AUTO with a device present) all points and gmm as given; on the CPU
/// a sample of at most FGMM_IVF_CPU_POINTS points per list, and gmm.kmeans_iter + gmm.niter iterations,
/// at most FGMM_IVF_CPU_ITER, all of them k-means (Lloyd): the GMM is the one its last k-means pass
/// sets (means, per-component variances and weights), without EM. On 2 CPU cores a Lloyd iteration
/// bought as much recall per distance computation as an EM iteration for 2.6x less time (BENCHMARKS.md
/// "CPU training vs FAISS": 1.4-1.6x FAISS's own IVF training time on sift100K nlist 256, 2 cores).
/// max_points_per_list = 0 trains on all points with gmm as given on every backend (10 k-means + 90
/// EM iterations by default: 24x FAISS's time there); > 0: that sample, gmm as given.
#define FGMM_IVF_POINTS_AUTO (-1)
#define FGMM_IVF_CPU_POINTS 256
#define FGMM_IVF_CPU_ITER 16

/// Fills every field with its default.
void fgmm_ivf_params_init(FgmmIvfParams* params);

/// The quantizer's training schedule of params for this process (FGMM_IVF_POINTS_AUTO resolved by
/// fgmm_gpu_available() and gmm.backend): returns the points per list it trains on (0 = all; or
/// FGMM_ERR_NULL) and puts in *gmm params->gmm with the iterations that fgmm_ivf_train will run
/// (gmm->k as given). For a caller's progress estimate: kmeans_iter + niter iterations at most.
int fgmm_ivf_schedule(const FgmmIvfParams* params, FgmmParams* gmm);

/// Opaque: a FAISS IVF index plus its GMM.
typedef struct FgmmIvf FgmmIvf;

/// Wraps an IVF index (borrowed: the caller frees it after fgmm_ivf_free). The index must use the
/// L2 metric and be exactly one of the classes the tests cover: IndexIVFFlat ("IVFn,Flat"),
/// IndexIVFPQ ("IVFn,PQm", "IVFn,PQmxb"), with a flat L2 quantizer (IndexFlatL2, or IndexFlat with
/// METRIC_L2); any other (fast-scan PQ, scalar quantizers, IndexIVFPQR, whose refinement codes FAISS
/// finds by id, HNSW quantizers, subclasses) is FGMM_ERR_STATE naming its class. params are copied.
int fgmm_ivf_wrap(FaissIndex* index, const FgmmIvfParams* params, FgmmIvf** out);

/// Trains the quantizer (GMM or k-means, per params) on n vectors (d = the index's d) and then the
/// index. info may be NULL. On failure the index is left untrained with an empty quantizer. With
/// FGMM_QUANT_AUTO the handle's settings (and so its index files) then hold the quantizer used.
int fgmm_ivf_train(FgmmIvf* ivf, idx_t n, const float* x, FgmmTrainInfo* info);

/// Installs a trained GMM (copied; k must equal nlist, d the index's d) instead of training one,
/// then trains the rest of the index on x as fgmm_ivf_train does: one GMM, several indexes.
int fgmm_ivf_set_gmm(FgmmIvf* ivf, const FgmmModel* gmm, idx_t n, const float* x);

/// Adds n vectors with multi-assignment. ids may be NULL (then ids continue from the largest id
/// added so far + 1); ids must be >= 0 (FGMM_ERR_ARG: FAISS's -1 means "none"), and an add without
/// ids that would number a vector past INT64_MAX - 1 is FGMM_ERR_ARG. Arguments are checked before
/// anything is added. lists_added (may be NULL) receives the number of (vector, list) entries.
/// Modifies the handle and the index: not beside any other call on them.
/// Where the lists are chosen: on CUDA device gmm.gpu_device when gmm.backend is GPU, or AUTO and a
/// device is present (the nearest and SOAR lists by fgmm_soar_assign_gpu, responsibilities by the GPU
/// engine), else on the CPU. On that same device an IVF-PQ index (exactly IndexIVFPQ: by residual, 8-bit
/// codes, sub-vectors of at most 32 dimensions) has its entries encoded too, as FAISS encodes them (up to
/// float near-ties), and the codes appended to its lists; other indexes get FAISS's add_core on the CPU.
/// Memory beside FAISS's own: the call's list choices (16-20 bytes per vector; 8 x max_assign for
/// TAU and TOPM) and about 50 bytes per vector for up to 2^20 vectors at a time.
int fgmm_ivf_add(FgmmIvf* ivf, idx_t n, const float* x, const idx_t* ids, idx_t* lists_added);

/// Average lists per vector over everything added so far (1.0 without spill).
double fgmm_ivf_inflation(const FgmmIvf* ivf);

/// k nearest distinct ids for nq queries, scanning nprobe lists; distances/labels nq x k
/// (missing results: label -1, distance +inf); dco (nq values) may be NULL. Leaves the index
/// as it is (nprobe is passed per call), so several threads may search one handle at once.
/// Searches k * (copies per vector) candidates so that k distinct ids survive deduplication; a
/// query whose candidates an id added more than once crowds out is searched again with more.
int fgmm_ivf_search(const FgmmIvf* ivf, idx_t nq, const float* q, idx_t k, int nprobe, float* distances, idx_t* labels,
                    int64_t* dco);

/// Exact re-ranking, as FAISS's IndexRefineFlat: from now on the handle keeps a float copy of every
/// vector added (d x 4 bytes each, owned by the handle and saved by fgmm_ivf_write as a section of
/// its own), and fgmm_ivf_search takes the k x k_factor nearest distinct ids by the index's own
/// distances (PQ's for IVF-PQ), computes their exact squared L2 distances to the stored vectors and
/// returns the k best, sorted by (distance, id). k_factor: finite, >= 1 (FGMM_ERR_ARG otherwise);
/// k x k_factor is rounded down as FAISS does. The index must hold no vectors yet (FGMM_ERR_STATE;
/// IndexRefineFlat's rule too) and its ids are then 0, 1, ... in add order: an fgmm_ivf_add with ids
/// other than the next ones in order is FGMM_ERR_ARG. Calling it again changes k_factor only (not
/// beside searches of the handle). DCO of a re-ranked search: the index's (nlist + the probed lists'
/// sizes) + the exact distances computed (<= k x k_factor per query).
int fgmm_ivf_refine_flat(FgmmIvf* ivf, float k_factor);

/// fgmm_ivf_search of a handle with a refine copy (fgmm_ivf_refine_flat), with k_factor for this
/// call instead of the handle's (several threads may search with different k_factors at once).
/// FGMM_ERR_STATE where the handle has no refine copy.
int fgmm_ivf_search_refine(const FgmmIvf* ivf, idx_t nq, const float* q, idx_t k, int nprobe, float k_factor,
                           float* distances, idx_t* labels, int64_t* dco);

/// Bytes of the refine copy (0 without one).
int64_t fgmm_ivf_refine_bytes(const FgmmIvf* ivf);

/// Which lists a search scans beyond the first min_probe (fgmm_ivf_search_ex). docs/search.md,
/// "Query-adaptive probing", has the measurements.
typedef enum FgmmProbeRule {
    FGMM_PROBE_FIXED = 0,  ///< the nprobe nearest lists (what fgmm_ivf_search does)
    FGMM_PROBE_KTH = 1,    ///< after the first min_probe lists, rounds of ranks [lo, 2 lo) of the nprobe
                           ///< nearest: list j while (d(q,c_j)^2 + m_j - D_k) / (2 sqrt(m_j d(q,c_j)^2 / d))
                           ///< <= threshold, D_k the query's k-th distance after the rounds before, m_j
                           ///< list j's mean squared distance to c_j; a query whose round is all rejected stops
    FGMM_PROBE_EPS = 2,    ///< SPANN's rule: list j only if d(q,c_j) <= (1 + threshold) d(q,c_1)
} FgmmProbeRule;

/// Search parameters, as FAISS's SearchParametersIVF (which has nprobe and max_codes).
typedef struct FgmmIvfSearchParams {
    int nprobe;          ///< lists scanned at most (default 1, as FAISS's); > nlist is taken as nlist
    int min_probe;       ///< KTH, EPS: lists every query scans before the rule is asked (default 2;
                         ///< taken as nprobe where larger)
    FgmmProbeRule rule;  ///< default FGMM_PROBE_FIXED
    double threshold;    ///< KTH: any value (+inf: all nprobe lists); EPS: >= 0 (default 0); FIXED: unused
} FgmmIvfSearchParams;

/// Fills every field with its default.
void fgmm_ivf_search_params_init(FgmmIvfSearchParams* params);

/// fgmm_ivf_search with params: FIXED is fgmm_ivf_search(..., params->nprobe, ...) exactly; KTH and
/// EPS scan a subset of the nprobe nearest lists per query (the first min_probe always), chosen by
/// the rule, and need an IVF-Flat index on in-memory lists (else FGMM_ERR_STATE). dco counts nlist +
/// the sizes of the lists scanned. Results do not depend on the thread count.
int fgmm_ivf_search_ex(const FgmmIvf* ivf, idx_t nq, const float* q, idx_t k, const FgmmIvfSearchParams* params,
                       float* distances, idx_t* labels, int64_t* dco);

/// Picks the cheapest setting of params' rule with recall@k >= target on n calibration vectors x,
/// which should be held out of the index (e.g. training vectors not added; never the test queries):
/// FIXED: the smallest nprobe (params->nprobe is replaced); KTH, EPS: the smallest threshold, by
/// bisection, with params->nprobe as the most lists (FGMM_ERR_ARG where even all nprobe lists
/// miss the target). The truth is the exact k nearest in the index (a search of every list).
/// recall (may be NULL) receives the recall@k reached on x. target in (0, 1].
int fgmm_ivf_calibrate(const FgmmIvf* ivf, idx_t n, const float* x, idx_t k, double target, FgmmIvfSearchParams* params,
                       double* recall);

/// recall@k as ann-benchmarks counts it: mean over nq queries of |labels[i][0..k) ∩ gt[i][0..k)| / k,
/// with gt rows of gt_k >= k true neighbour ids (nearest first). Returns -1 on bad arguments.
double fgmm_recall(idx_t nq, int k, const idx_t* labels, int gt_k, const int32_t* gt);

/// Writes the index, its spill settings, counts and ids (every int64 exactly) and the GMM (if any)
/// to one file at path (docs/FORMAT.md: a versioned header, then the three as sections with CRC-32s).
/// Atomic and durable: written to a temporary file in path's directory, synced, renamed over path
/// once, the directory synced; readers, a crash at any moment and concurrent writers of one path
/// leave path the complete old or the complete new file (fgmm_output_begin's rules: symbolic links
/// followed, mode kept). Plain FAISS readers (faiss_read_index, faiss.read_index) refuse the file:
/// 'Index type 0x4d4d4746 ("FGMM") not recognized'. A three-file set written before at path
/// (path.fgmm, path.gmm) is removed after the rename. The handle is not modified: several threads
/// may write it, or write it while others search it. FGMM_ERR_STATE before training.
int fgmm_ivf_write(const FgmmIvf* ivf, const char* path);

/// Reads an index written by fgmm_ivf_write (the returned handle owns the index); the spill settings
/// saved there replace those of params (params->gmm and max_points_per_list are used as given;
/// params may be NULL). Every section's length is checked against the file's size and its CRC-32
/// before it is parsed; a damaged, truncated or foreign file, or a newer format version, is
/// FGMM_ERR_IO with the reason (FGMM_ERR_FAISS where FAISS refuses the index section). The FAISS
/// section is parsed by FAISS's reader, which is not hardened against crafted files whose
/// checksums match (docs/FORMAT.md). Also reads a plain FAISS index file (params as given) and the
/// three-file sets of earlier versions (a FAISS file with path.fgmm and path.gmm beside it).
int fgmm_ivf_read(const char* path, const FgmmIvfParams* params, FgmmIvf** out);

/// Exports a plain FAISS index file (faiss_read_index / faiss.read_index read it) in which every id
/// sits in one list only: ntotal = distinct ids, FAISS's own search returns no duplicates. Each id
/// keeps the entry of its primary list, judged from the average x of its copies' reconstructions
/// (the vector itself for IVF-Flat; list centroid plus decoded residual for IVF-PQ): with
/// FGMM_PRIMARY_NEAREST the list whose centroid is nearest to x, with FGMM_PRIMARY_RESPONSIBILITY
/// (and a model) the most responsible component (ties: the lower list). For IVF-Flat that is the
/// list a hard assignment gives, so the lists equal those of an index built without spill; for
/// IVF-PQ a near tie may keep the second-nearest list's entry (PQ's coding error; docs/FORMAT.md
/// has measurements). One entry per id: vectors added under one id count as one. The handle's
/// index is not modified. Atomic as fgmm_ivf_write. Memory: 24 bytes per entry and the kept
/// lists. IVF-Flat and IVF-PQ only (the classes fgmm_ivf_wrap takes). Calls beside other threads'
/// calls on the same handle are not tested.
int fgmm_ivf_write_faiss(const FgmmIvf* ivf, const char* path);

FaissIndex* fgmm_ivf_index(const FgmmIvf* ivf);
const FgmmModel* fgmm_ivf_model(const FgmmIvf* ivf);  ///< NULL before training
void fgmm_ivf_free(FgmmIvf* ivf);

#ifdef __cplusplus
}
#endif
#endif
