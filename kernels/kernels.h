/* SPDX-License-Identifier: MIT */
/* kernels.h: C signatures of the CUDA launch wrappers. Every wrapper only
 * enqueues work on `stream` and returns the launch's cudaError_t as int. */
#ifndef FGMM_KERNELS_H
#define FGMM_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest padded dimension the fused E-step handles; larger d uses the cuBLAS path. */
#define FGMM_FUSED_MAX_D 128
/* Components per pass-2 block; k is padded to a multiple of this. */
#define FGMM_FUSED_KTILE 128

/* Operand modes of the fused kernel. */
#define FGMM_FUSED_BF16 0  /* bf16 operands, fp32 accumulation */
#define FGMM_FUSED_EXACT 1 /* bf16 hi/lo split of both operands: 3 mma per product, about fp32 */
#define FGMM_FUSED_FP16 2  /* fp16 operands, prescaled by `scale` (a power of two) to stay in range */

/* Input dtype code of prepared rows (besides 0 float, 1 uint8): fp16, dp wide, already centred by
 * shift and prescaled, with their fp32 norms in fgmm_fused_model.xnorm (fp16 mode only). */
#define FGMM_FUSED_PREPARED 2

/* Device-side model of the fused isotropic E-step, in the log2 domain:
 * log2(w_k p(x|k)) = b2[k] - h2[k] * (||x'||^2 - 2 x'.mu'_k) with x' = x - shift (b2 folds ||mu'_k||^2 in:
 * two FMAs per distance, no clamp; the fp16 GEMM's rounding dominates either way).
 * The kernels compute b2 - h2 (xnorm + m2 dot), m2 = -2 inv_scale2, so the same kernels run the
 * diagonal E-step on augmented rows (fgmm_fused_prepare with scale2): xnorm = 0, inv_scale2 = 1/2,
 * mu rows = c [mu'/(var scale), -1/(2 var scale2)], h2 = log2(e) / c, mn = 0, d = 2 x the data's d
 * (pass 2's s1 is then [sum r x', sum r x'^2] scaled; s2 is meaningless, see fgmm_fused_unshift_diag). */
typedef struct fgmm_fused_model {
    int k, kp, d, dp;   /* components (padded kp), dimension (padded dp, multiple of 16) */
    const float* shift; /* dp: subtracted from every row (the mixture's mean) */
    const void* mu_hi;  /* kp x dp bf16: mu' rounded */
    const void* mu_lo;  /* kp x dp bf16: mu' - mu_hi (exact mode) */
    const float* b2;    /* kp: log2(w_k) - d/2 log2(2 pi var_k) - h2_k ||mu'_k||^2; padding: -1e30 */
    const float* h2;    /* kp: log2(e) / (2 var_k) */
    const float* mn;    /* kp: ||mu'_k||^2 */
    float scale;        /* operands are (x - shift) * scale; 1 for the bf16 modes */
    float inv_scale2;   /* 1 / scale^2: turns operand dot products back into data units */
    float inv_scale;    /* 1 / scale */
    const float* xnorm; /* prepared input only: ||x'_i||^2 of the rows passed (16-byte aligned, as logz2) */
    int wgmma;          /* 1: prepared rows with dp % 64 == 0 run the sm_90a wgmma kernels (the caller
                            * sets it only for a compute capability 9.0 device) */
} fgmm_fused_model;

/* Prepared rows: out (n x dp fp16) = (x - shift) * scale, xn[i] = ||x_i - shift||^2 (fp32, unscaled).
 * scale2 > 0: diagonal covariance's augmented rows [(x - shift) * scale, (x - shift)^2 * scale2]
 * (2d <= dp), xn = 0. */
int fgmm_fused_prepare(const void* x, int dtype, long long n, int d, int dp, const float* shift, float scale,
                       float scale2, void* out, float* xn, cudaStream_t stream);
/* s1[q x dp] += nk[q] * shift: statistics of centred rows back to data coordinates. */
int fgmm_fused_unshift(const double* nk, double* s1, const float* shift, int k, int dp, cudaStream_t stream);
/* Diagonal, after the kernels on augmented rows: s1 (k x dp) rows [sum r x' scale, sum r x'^2 scale2]
 * become sum r x (first d columns, in place) and s2 (k x d) = sum r x^2. */
int fgmm_fused_unshift_diag(const double* nk, double* s1, double* s2, const float* shift, int k, int d, int dp,
                            double scale, double scale2, cudaStream_t stream);

/* Fills mu_hi/mu_lo (kp x dp, 16-bit) from mu' * scale (kp x dp float) for the mode. */
int fgmm_fused_split(const float* mu, void* hi, void* lo, long long count, float scale, int mode, cudaStream_t stream);

/* Pass 1: logz2[i] = log2 sum_k w_k p(x_i|k) for n rows of x (dtype 0 float, 1 uint8, FGMM_FUSED_PREPARED);
 * ll_part[b] = sum of logz2 over block b's rows (blocks: fgmm_fused_lse_blocks(n)). */
int fgmm_fused_lse_blocks(long long n);
int fgmm_fused_lse(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode, float* logz2,
                   double* ll_part, cudaStream_t stream);

/* Pass 2: nk[k] += sum_i r_ik, s1[k x dp] += sum_i r_ik x'_i, s2[k] += sum_i r_ik ||x'_i - mu'_k||^2.
 * splits: row-range blocks per component tile (0 = enough to fill the device). */
int fgmm_fused_accumulate(const void* x, int dtype, long long n, const fgmm_fused_model* m, int mode,
                          const float* logz2, double* nk, double* s1, double* s2, int splits, cudaStream_t stream);

/* Pass 2 as a warp-specialised kernel (estep_ws.cu, sm_90a): the copy engine (TMA) loads row tiles for
 * consumer warpgroups through mbarriers; prepared rows (m->wgmma), dp = 128. The same sums as
 * fgmm_fused_accumulate in fp16 mode. Variants: */
#define FGMM_WS_PIPE2 1  /* 2 consumer warpgroups, each running a tile's exponentials under the previous R^T x */
#define FGMM_WS_PLAIN2 2 /* 2 consumer warpgroups, one tile at a time each (R^T x waited for at the next tile) */
/* Pass 1 warp-specialised likewise (same conditions): the same logz2 and ll_part bits as fgmm_fused_lse. */
int fgmm_fused_lse_ws(const void* x, long long n, const fgmm_fused_model* m, float* logz2, double* ll_part,
                      cudaStream_t stream);
/* 1 where the kernel applies (sm_90 model, dp = 128, the driver's tensor-map encoder present). */
int fgmm_fused_ws_ok(const fgmm_fused_model* m);
/* splits: row-range blocks per component tile (0 = one block per SM). cudaErrorInvalidValue where
 * fgmm_fused_ws_ok is 0, the variant is unknown or logz2 / m->xnorm are not 16-byte aligned. */
int fgmm_fused_accumulate_ws(const void* x, long long n, const fgmm_fused_model* m, const float* logz2, double* nk,
                             double* s1, double* s2, int variant, int splits, cudaStream_t stream);

/* Both passes in one (estep_onepass.cu, sm_90a): prepared rows (m->wgmma), dp = 128, kp = 128, 256,
 * 512 or 1024. Adds to nk, s1, s2 as the two passes do; writes *parts log-likelihood partials
 * (log2 units, at most fgmm_fused_lse_blocks(n)) into ll_part. cudaErrorInvalidConfiguration: no
 * cluster of its blocks fits the device (nothing was launched). */
int fgmm_fused_onepass_ok(const fgmm_fused_model* m);
int fgmm_fused_onepass(const void* x, long long n, const fgmm_fused_model* m, double* ll_part, double* nk, double* s1,
                       double* s2, int* parts, cudaStream_t stream);

/* ---- cuBLAS path helpers (estep_blas.cu): row tiles of t rows, G = t x k from a GEMM ---- */

/* xf[t x d] = float(x rows [0, t)); if x2 != NULL also x2 = xf^2; xn[t] = ||x||^2. */
int fgmm_blas_load_tile(const void* x, int dtype, int t, int d, float* xf, float* x2, float* xn, cudaStream_t stream);
/* In place: G holds x.B (isotropic: B = mu, diag: q-terms) for t rows; turns it into
 * responsibilities and adds nk, s2 (isotropic: sum r ||x-mu||^2), sum log p into ll (double).
 * Isotropic: logp = c - (xn + kn - 2 g) * hp; diagonal: logp = c - hp * (g + kn), hp = 0.5. */
int fgmm_blas_resp(float* g, int t, int k, const float* xn, const float* kn, const float* hp, const double* c, int diag,
                   double* nk, double* s2, double* ll, cudaStream_t stream);
/* Largest m for fgmm_blas_topm (lists per vector); larger m is done on the CPU. */
#define FGMM_TOPM_MAX 32
/* With G as for fgmm_blas_resp: per row, the m components of highest responsibility (decreasing;
 * ties to the lower index) into labels/resp (t x m; resp may be NULL; m may be 0) and
 * log p(x) into loglik (t; may be NULL). */
int fgmm_blas_topm(const float* g, int t, int k, const float* xn, const float* kn, const float* hp, const double* c,
                   int diag, int m, long long* labels, float* resp, float* loglik, cudaStream_t stream);

/* out[i] += in[i] for count elements (float or double -> double accumulation). */
int fgmm_blas_accumulate(const float* in, double* out, long long count, cudaStream_t stream);
int fgmm_accumulate_d(const double* in, double* out, long long count, cudaStream_t stream);

/* ---- M-step and model constants on the device (mstep.cu) ---- */
/* Isotropic M-step in place: mu (k x d), var, w from nk, s1 (k x dp, data coordinates), s2 as the
 * E-step left them; variances floored at floor_v; components with N_k < min_count (or not > 0)
 * keep their mean, get w = 1 before normalisation and the others' mean variance (fill_v if
 * none); empty[j] flags them, empty[k] counts them. */
int fgmm_mstep_iso(const double* nk, const double* s1, const double* s2, int k, int d, int dp, double floor_v,
                   double min_count, double fill_v, float* mu, float* var, float* w, int* empty, cudaStream_t stream);
/* The same for diagonal covariance: var k x d from s2 = sum r x^2 (k x d); vmean: k floats of scratch. */
int fgmm_mstep_diag(const double* nk, const double* s1, const double* s2, int k, int d, int dp, double floor_v,
                    double min_count, double fill_v, float* mu, float* var, float* w, float* vmean, int* empty,
                    cudaStream_t stream);
/* The fused fp16 path's constants from a device model: mu_hi (kp x dp fp16) and cst = [b2, h2, mn]
 * (3 x kp), as fgmm_fused_model describes them, for rows centred by shift and prescaled by scale;
 * if amax != NULL (zeroed by the caller), *amax = max |mu_hi| before rounding (the range check). */
int fgmm_fused_constants(const float* mu, const float* var, const float* w, int k, int kp, int d, int dp,
                         const float* shift, float scale, void* mu_hi, float* cst, float* amax, cudaStream_t stream);
/* The same for diagonal covariance (mu, var k x d): mu_hi (kp x dp fp16) rows and cst as
 * fgmm_fused_model's diagonal form describes them, for rows [x', x'^2] prescaled by scale, scale2;
 * amax: one float of device scratch. */
int fgmm_fused_constants_diag(const float* mu, const float* var, const float* w, int k, int kp, int d, int dp,
                              const float* shift, double scale, double scale2, void* mu_hi, float* cst, float* amax,
                              cudaStream_t stream);
/* out[0] = sum of in[0..n), fixed order. */
int fgmm_sum_d(const double* in, long long n, double* out, cudaStream_t stream);

/* *out = max(*out, max |x_i|) over count floats (*out >= 0 on entry; data_max.cu). */
int fgmm_abs_max(const float* x, long long count, float* out, cudaStream_t stream);

/* ---- k-means (kmeans_assign.cu) ---- */
/* k-means++ seeding on ns device rows x (ns x d floats): picks[0] given (device), then picks[c] for
 * c = 1..k-1 by D^2 sampling at u[c - 1] (k - 1 device uniforms), with src/driver/seed.c's host arithmetic;
 * scratch d2 (2 ns doubles), part (2 ceil(ns / 256) doubles); *found (zeroed by the caller) = the
 * number of distinct points found when the rows have fewer than k. */
int fgmm_kmeanspp(const float* x, long long ns, int d, int k, const double* u, long long* picks, double* d2,
                  double* part, int* found, cudaStream_t stream);
/* With G = x.c^T (t x k) for t rows xf and cn = ||c||^2: the nearest centroid by cn - 2 G, then
 * counts, sums (k x d), squared distances (recomputed from xf and cent, k x d) per cluster and
 * their total into the double accumulators. */
int fgmm_kmeans_accumulate(const float* g, const float* xf, const float* cent, const float* cn, int t, int k, int d,
                           double* counts, double* sums, double* sq, double* total, cudaStream_t stream);

/* ---- SOAR spill lists (soar.cu), around G = xs cs^T and H = U cs^T (t x k, cuBLAS) ---- */
/* In place: xs (t x d, the rows as given) = float(x - mean); xn[t] = ||xs||^2. */
int fgmm_soar_rows(float* xs, int t, int d, const double* mean, float* xn, cudaStream_t stream);
/* In place: G -> squared distances; primary/d1/d2 (t) = nearest, its and the second-nearest distance;
 * with rx != NULL also xs -> unit residuals to the nearest centroid (cs: k x d) and rx[t] = <u, xs>. */
int fgmm_soar_top2(float* g, int t, int k, int d, const float* xn, const float* cn, const float* cs, float* xs,
                   long long* primary, float* d1, float* d2, float* rx, cudaStream_t stream);
/* spill[t] = argmin over j != primary of G_j + lambda (rx - H_j)^2 (ties: the lower index). */
int fgmm_soar_pick(const float* g, const float* h, const float* rx, const long long* primary, int t, int k,
                   float lambda, long long* spill, cudaStream_t stream);

/* ---- IVF-PQ encoding (pq_encode.cu) ---- */
/* Largest sub-vector the encoder takes (its codebook of 256 x 32 floats fits static shared memory). */
#define FGMM_PQ_MAX_DSUB 32 /* flashgmm_spill.h: FGMM_PQ_GPU_MAX_DSUB */
/* For t rows x (t x d) with ma lists each (lists: t x ma, -1 = none), the 8-bit PQ code of each entry's
 * residual x_i - cent[list] into codes[(i ma + r) M .. + M) (entries without a list: left as they are);
 * codebook: M x 256 x dsub (FAISS's pq.centroids), d = M dsub. */
int fgmm_pq_encode(const float* x, const long long* lists, int t, int ma, int d, int dsub, const float* cent,
                   const float* codebook, int M, unsigned char* codes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
