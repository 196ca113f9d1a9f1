/* SPDX-License-Identifier: MIT */
/* flashgmm_spill.h: choosing extra ("spill") lists for IVF vectors, independent of FAISS.
 *
 * SOAR (Sun et al., "SOAR: improved indexing for approximate nearest neighbor search",
 * NeurIPS 2023), for L2: with c_p the nearest centroid of x and r = x - c_p, the spill list is
 *     argmin over c != c_p of  ||x - c||^2 + lambda * <r / ||r||, x - c>^2
 * which prefers a second centroid whose residual is orthogonal to the first one's, so that a
 * query missed through one list is likely found through the other.
 */
#ifndef FLASHGMM_SPILL_H
#define FLASHGMM_SPILL_H

#include "flashgmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/// For each of n rows x (n x d floats) against k centroids (k x d): primary[i] = the nearest
/// centroid, d1[i] / d2[i] = squared distances to the nearest and the second-nearest, and
/// spill[i] = the SOAR list with parameter lambda (>= 0; 0 = the second-nearest centroid).
/// Any output but primary may be NULL; spill needs k >= 2. Ties go to the lower index.
/// Distances are computed on rows and centroids shifted by the centroids' mean (no
/// cancellation far from the origin). CPU (OpenBLAS + OpenMP); safe to call from several
/// threads (it keeps no state).
int fgmm_soar_assign(fgmm_idx_t n, int d, const float* x, int k, const float* centroids, float lambda,
                     fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2);

/// fgmm_soar_assign with the means of the isotropic GMM m as the centroids, and from the same
/// distances the two components most responsible for each row, in top2[2i], top2[2i + 1] (the more
/// responsible first; ties to the lower index), with their responsibilities in resp2 (n x 2): what
/// fgmm_assign_topm(m, ..., 2, ...) gives up to float rounding, in one pass over the rows instead of
/// two (the CPU add's list choice). FGMM_ERR_ARG for a diagonal model or k < 2; CPU only.
int fgmm_soar_assign_top2(const FgmmModel* m, fgmm_idx_t n, const float* x, float lambda, fgmm_idx_t* primary,
                          fgmm_idx_t* spill, float* d1, float* d2, fgmm_idx_t* top2, float* resp2);

/// fgmm_soar_assign on CUDA device `device`: the same outputs, ties and shift, with the products in
/// fp32 cuBLAS GEMMs over row tiles (device memory: the centroids plus at most 256 MB of tiles, less
/// where the device has less free). Choices differ from the CPU's only where two distances or two
/// SOAR losses are within float rounding. FGMM_ERR_NO_GPU without a device (or CUDA in this build),
/// FGMM_ERR_ARG for a device ordinal out of range, FGMM_ERR_GPU_NOMEM / FGMM_ERR_CUDA from the device;
/// arguments are checked first, as fgmm_soar_assign checks them. Each call has its own stream, cuBLAS
/// handle and buffers: safe to call from several threads; the calling thread's current device is restored.
int fgmm_soar_assign_gpu(int device, fgmm_idx_t n, int d, const float* x, int k, const float* centroids, float lambda,
                         fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2);

/// IVF-PQ codes of spilled entries on CUDA device `device`: for n rows x (n x d floats) with ma lists
/// each (lists: n x ma, -1 = none), the 8-bit code of each entry's residual x_i - cent[list] (cent:
/// nlist x d) into codes[(i ma + r) M .. + M) (entries without a list: zeros), as FAISS's IndexIVFPQ
/// encodes it (by residual, in float, nearest codeword, ties to the lower). codebook: M x 256 x (d / M),
/// FAISS's pq.centroids; d / M at most FGMM_PQ_GPU_MAX_DSUB. FGMM_ERR_NO_GPU without a device (or CUDA
/// in this build); arguments are checked first (FGMM_ERR_ARG for sizes, lists >= nlist or sizes whose
/// products overflow, FGMM_ERR_DATA for a non-finite value in x, cent or codebook). Each call owns its stream and device buffers;
/// concurrent calls are not tested.
#define FGMM_PQ_GPU_MAX_DSUB 32
int fgmm_pq_encode_gpu(int device, fgmm_idx_t n, int d, const float* x, int ma, const fgmm_idx_t* lists, int nlist,
                       const float* cent, int M, const float* codebook, uint8_t* codes);

/// The SOAR loss of putting row x (d floats) in list c as its spill list, given its primary
/// centroid cp: ||x - c||^2 + lambda <r/||r||, x - c>^2 with r = x - cp (r = 0: plain distance).
/// In double; the reference the tests check fgmm_soar_assign against. NaN for a NULL row or d < 1.
double fgmm_soar_loss(int d, const float* x, const float* cp, const float* c, float lambda);

#ifdef __cplusplus
}
#endif
#endif
