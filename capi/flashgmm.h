/* SPDX-License-Identifier: MIT */
/* flashgmm.h: Gaussian-mixture (EM) training of IVF coarse quantizers.
 *
 * Conventions follow FAISS's c_api: opaque handles, a params struct with an
 * explicit init function, every call returns an int (0 = ok, < 0 = an
 * FgmmError code) and the message of the last failure on the calling thread is
 * read with fgmm_get_last_error(). Nothing the caller passes in is modified
 * unless a parameter is documented as an output.
 */
#ifndef FLASHGMM_H
#define FLASHGMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t fgmm_idx_t;  ///< row counts and ids (FAISS's idx_t)

typedef enum FgmmError {
    FGMM_OK = 0,
    FGMM_ERR_NULL = -1,       ///< a required pointer was NULL
    FGMM_ERR_ARG = -2,        ///< invalid argument (k, d, n, tolerances, enum values)
    FGMM_ERR_DATA = -3,       ///< NaN/Inf, zero variance, fewer distinct points than k
    FGMM_ERR_NOMEM = -4,      ///< host allocation failed
    FGMM_ERR_GPU_NOMEM = -5,  ///< GPU allocation failed
    FGMM_ERR_CUDA = -6,       ///< any other CUDA / cuBLAS failure
    FGMM_ERR_IO = -7,         ///< file unreadable, truncated or malformed
    FGMM_ERR_NO_GPU = -8,     ///< GPU backend asked for, but no CUDA device / not compiled in
    FGMM_ERR_FAISS = -9,      ///< FAISS reported an error
    FGMM_ERR_STATE = -10,     ///< object in the wrong state (e.g. index not an IVF)
} FgmmError;

typedef enum FgmmCovariance {
    FGMM_COV_ISOTROPIC = 0,  ///< one variance per component: sigma_k^2 I
    FGMM_COV_DIAGONAL = 1,   ///< one variance per component and dimension
} FgmmCovariance;

typedef enum FgmmBackend {
    FGMM_BACKEND_AUTO = 0,  ///< GPU if a CUDA device is present, else CPU
    FGMM_BACKEND_CPU = 1,   ///< OpenBLAS + OpenMP
    FGMM_BACKEND_GPU = 2,   ///< fused CUDA kernels; fails with FGMM_ERR_NO_GPU if unavailable
} FgmmBackend;

typedef enum FgmmPrecision {
    FGMM_PREC_FAST = 0,   ///< GPU: fp16 tensor cores on prescaled rows, fp32 accumulation (rel. error ~3e-4);
                          ///< k-means: the fp16 E-step at a vanishing variance, or TF32 GEMMs where rows
                          ///< are streamed or d > 128 (near-ties may go either way)
    FGMM_PREC_EXACT = 1,  ///< GPU: error-compensated 3x bf16 (~fp32), k-means on fp32 GEMMs; CPU is always
                          ///< fp32 GEMM + fp64 sums
} FgmmPrecision;

typedef enum FgmmDtype {
    FGMM_F32 = 0,  ///< float32 rows (fvecs)
    FGMM_U8 = 1,   ///< uint8 rows (bvecs), converted on the fly
    FGMM_I32 = 2,  ///< int32 rows (ivecs: ids, ground truth); readers only, not for training
} FgmmDtype;

/// Phases reported to the progress callback.
typedef enum FgmmPhase { FGMM_PHASE_KMEANS = 0, FGMM_PHASE_EM = 1 } FgmmPhase;

/// Called after every iteration. mean_objective is the mean log-likelihood per
/// point (EM, evaluated at the parameters before this iteration's M-step) or
/// minus the mean squared distance (k-means). reseeded counts components
/// re-seeded after this iteration (re-seeding may lower the next value).
typedef void (*FgmmProgressFn)(void* user, FgmmPhase phase, int iter, double mean_objective, int reseeded);

typedef struct FgmmParams {
    int k;                      ///< number of components (default 1024)
    FgmmCovariance covariance;  ///< default FGMM_COV_ISOTROPIC
    int niter;                  ///< EM iterations at most (default 30)
    int kmeans_iter;            ///< k-means warm-start iterations before EM (default 10; 0 = k-means++ only)
    double tol;                 ///< stop EM when the mean log-likelihood gains < tol*|value| (default 0: run niter)
    double var_floor;           ///< variance floor, a fraction of the data's mean per-dimension variance (default 1e-4)
    double min_count;           ///< a component with N_k below this is empty and re-seeded (default 1.0)
    fgmm_idx_t max_init_points;  ///< k-means++ runs on at most this many sampled rows (default 0 = 64*k)
    uint64_t seed;               ///< all sampling is deterministic for a seed (default 1234)
    FgmmBackend backend;         ///< default FGMM_BACKEND_AUTO
    FgmmPrecision precision;     ///< default FGMM_PREC_FAST
    int gpu_device;              ///< CUDA device ordinal (default 0)
    size_t gpu_mem_limit;        ///< bytes of device memory for data; larger inputs stream (default 0 = 80% of free)
    int n_gpus;                  ///< data-parallel EM on GPUs gpu_device .. gpu_device+n_gpus-1, reduced with NCCL
                                 ///< (loaded at run time); 0 = one GPU without NCCL (default)
    FgmmProgressFn progress;     ///< optional per-iteration callback (default NULL)
    void* progress_user;         ///< passed to progress
} FgmmParams;

/// Fills every field with its default.
void fgmm_params_init(FgmmParams* params);

/// Outcome of fgmm_train.
typedef struct FgmmTrainInfo {
    int kmeans_iterations;  ///< k-means iterations run
    int em_iterations;      ///< EM iterations run
    int converged;          ///< 1 if tol stopped EM before niter
    int reseeded;           ///< empty components re-seeded over the whole run
    double mean_loglik;     ///< final mean log-likelihood per point (after the last M-step)
    double seconds;         ///< wall time of fgmm_train
    const char* backend;    ///< "cpu" or "gpu" (static string)
} FgmmTrainInfo;

/// Opaque trained mixture: means (k x d), variances (k or k x d) and weights (k).
typedef struct FgmmModel FgmmModel;

/// Creates a model from explicit parameters (copied). variances: k values
/// (isotropic) or k*d (diagonal), all finite normal floats (>= FLT_MIN: the reciprocal of a
/// subnormal is inf); weights: k finite values > 0, normalised here, each still a normal float
/// once normalised (FGMM_ERR_DATA otherwise: a weight that rounds to 0 would make log(w) -inf).
int fgmm_model_new(FgmmModel** out, int k, int d, FgmmCovariance cov, const float* means, const float* variances,
                   const float* weights);
void fgmm_model_free(FgmmModel* model);

int fgmm_model_k(const FgmmModel* model);
int fgmm_model_d(const FgmmModel* model);
FgmmCovariance fgmm_model_covariance(const FgmmModel* model);
/// Read-only views, valid until the model is freed.
const float* fgmm_model_means(const FgmmModel* model);      ///< k x d
const float* fgmm_model_variances(const FgmmModel* model);  ///< k or k x d
const float* fgmm_model_weights(const FgmmModel* model);    ///< k, sums to 1

/// Trains a GMM on n rows of dimension d (row-major; x is uint8 if dtype is FGMM_U8).
/// k-means++ seeding, params->kmeans_iter Lloyd iterations, then EM.
int fgmm_train(const FgmmParams* params, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, FgmmModel** out,
               FgmmTrainInfo* info /* may be NULL */);

/// One E-step over n rows: sufficient statistics under the model, accumulated in double.
/// nk: k; mu_acc: k x d (sum_i r_ik x_i); sig_acc: isotropic k values
/// (sum_i r_ik ||x_i - mu_k||^2), diagonal k x d (sum_i r_ik (x_id - mu_kd)^2);
/// loglik: sum_i log p(x_i). Any output pointer may be NULL except nk.
int fgmm_estep(const FgmmModel* model, const FgmmParams* params, fgmm_idx_t n, FgmmDtype dtype, const void* x,
               double* nk, double* mu_acc, double* sig_acc, double* loglik);

/// Per-row log-likelihood log p(x_i) (n values).
int fgmm_loglik(const FgmmModel* model, const FgmmParams* params, fgmm_idx_t n, FgmmDtype dtype, const void* x,
                float* out);

/// The m components of highest responsibility for each row, in decreasing
/// order: labels n x m, resp n x m (r_ik in [0,1]; resp may be NULL).
int fgmm_assign_topm(const FgmmModel* model, const FgmmParams* params, fgmm_idx_t n, FgmmDtype dtype, const void* x,
                     int m, fgmm_idx_t* labels, float* resp);

/// Binary model file (little-endian, versioned). Write: a temporary file in the same directory,
/// renamed over path when complete (an existing non-regular path is refused). Read: the header
/// (k, d, covariance) is checked against the file's size before anything is allocated, then every
/// value is checked as fgmm_model_new checks it.
int fgmm_model_write(const FgmmModel* model, const char* path);
int fgmm_model_read(const char* path, FgmmModel** out);

/// 1 if a CUDA device is usable by this build, else 0.
int fgmm_gpu_available(void);

/// Starts the CUDA driver and the device's primary context on a background thread and returns at once,
/// so that a process's first GPU training does not pay for them (about 0.2-0.3 s): call it before
/// reading the data. The first GPU engine of the device (fgmm_train, fgmm_estep, ... with a GPU
/// backend) waits for the start to end, then reports its outcome as it would without this call
/// (e.g. FGMM_ERR_NO_GPU); a process that exits first waits for it in an exit handler. Several
/// threads may call it; later calls for the same device do nothing. The calling thread's current
/// device is not changed. Returns FGMM_OK (started, or started before), FGMM_ERR_ARG (device not
/// in 0 .. 63), FGMM_ERR_NO_GPU (a build without CUDA: nothing to start), FGMM_ERR_NOMEM (no
/// thread could be started; the engine then starts CUDA itself), FGMM_ERR_STATE (called from an
/// exit handler after the library's own). docs/gpu.md, "Cold start".
int fgmm_gpu_prestart(int device);

/// Message of the last failed call on this thread ("" if none).
const char* fgmm_get_last_error(void);

/// Records a printf-style message for fgmm_get_last_error on this thread and returns code: for
/// code built on this library (the IVF plugin, a user's own) that reports through the same
/// channel. The arguments may include fgmm_get_last_error() itself; a NULL fmt records
/// "(no message)". Each thread has its own message.
int fgmm_set_last_error(int code, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/// FGMM_OK if x (n rows x d values of dtype, row-major) is data the library takes: x not NULL,
/// n >= 1, 1 <= d <= 2^20, n x d values addressable (n x d x the value's size <= PTRDIFF_MAX),
/// dtype FGMM_F32 or FGMM_U8, every float finite; else FGMM_ERR_NULL,
/// FGMM_ERR_ARG or FGMM_ERR_DATA (naming the first non-finite value's row and dimension), with a
/// message that starts with `caller` (NULL: "fgmm_check_data"). Reads x with OpenMP threads; keeps
/// no state, so several threads may call it at once.
int fgmm_check_data(fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, const char* caller);

#ifdef __cplusplus
}
#endif
#endif
