/* SPDX-License-Identifier: MIT */
/* gpu_impl.h: what the GPU backend's files share (host side; not installed; the tests use
 * gpu_engine.h, but for tests/test_gpu_plan.cpp). */
#ifndef FGMM_GPU_IMPL_H
#define FGMM_GPU_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>

#include "gpu_engine.h"
#include "internal.h"
#include "kernels.h"

#define LOG2E 1.4426950408889634
#define LN2 0.69314718055994531

/* Return from the calling function with a recorded error when a CUDA call (CU), a kernel launch
 * wrapper (KL) or a cuBLAS call (CB) fails. */
#define CU(call)                                                     \
    do {                                                             \
        cudaError_t e_ = (call);                                     \
        if (e_ != cudaSuccess) return fgmm_gpu_cuda_fail(e_, #call); \
    } while (0)
#define KL(call)                                                        \
    do {                                                                \
        int e_ = (call);                                                \
        if (e_ != 0) return fgmm_gpu_cuda_fail((cudaError_t)e_, #call); \
    } while (0)
#define CB(call)                                                                                    \
    do {                                                                                            \
        cublasStatus_t s_ = (call);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                            \
            return fgmm_fail(s_ == CUBLAS_STATUS_ALLOC_FAILED ? FGMM_ERR_GPU_NOMEM : FGMM_ERR_CUDA, \
                             "GPU: %s: cuBLAS status %d", #call, (int)s_);                          \
    } while (0)

/* A device buffer: fgmm_gpu_dgrow grows it. */
typedef struct dbuf {
    void* p;
    size_t cap;
} dbuf;

/* The engine's scratch device buffers beside the streaming chunks, listed once: declared in
 * gpu_impl, freed by the engine's destruction, counted by fgmm_engine_gpu_sync (gpu_engine.c).
 * mu .. shift: the model and its constants; cd: k-means++ distances; nk .. logz: statistics and
 * log-likelihood parts; xf .. f: the cuBLAS path's row tiles; dm: em_step's model (mu k x d, var k,
 * w k); emo: its output, [double obj][int empty k + 1]; chk: device maxima (gpu_buf.c). */
/* clang-format off */
#define GPU_SCRATCH_BUFS(X) \
    X(mu) X(mu_hi) X(mu_lo) X(cst) X(shift) X(cd) X(nk) X(s1) X(s2) X(ll) X(llp) X(logz) X(xf) X(x2) X(xn) X(g) X(f) \
    X(dm) X(emo) X(chk)
/* clang-format on */
#define GPU_DECLARE_BUF(b) dbuf b;

/* The engine's state (fgmm_engine.impl). */
typedef struct gpu_impl {
    int dev;
    int wg; /* an sm_90 device: prepared rows padded for the wgmma kernels */
    size_t mem_limit;
    fgmm_gpu_options opt;  /* path (never -1 here), one-pass, host M-step, cuBLAS tile (gpu_engine.h) */
    char plan_traced[256]; /* FGMM_TRACE: the last plan printed (gpu_plan.c) */
    long long ws_launches; /* E-step chunks that ran a warp-specialised kernel (tests and benchmarks check it) */
    cudaStream_t st, copy_st;
    cudaEvent_t copied[2], consumed[2];
    cudaEvent_t tev[3];    /* around the fused passes of the last chunk */
    int timed;             /* tev holds a fused E-step */
    double* host_stats;    /* pinned: nk, s1, s2, ll downloads */
    size_t host_stats_cap; /* bytes */
    float* host_up;        /* pinned: model uploads (pageable copies cost ~0.5 ms each on some hosts) */
    size_t host_up_cap;    /* bytes */
    cublasHandle_t blas;   /* NULL until the first cuBLAS call (fgmm_gpu_blas_tile makes it) */
    fgmm_engine* cpu;
    /* resident data: rows as given (FMT_RAW) or prepared for the fused fp16 E-step (FMT_F16: data
     * holds n x dp fp16, xnorm n floats; FMT_F16_DIAG: the same for rows [x', x'^2], dp >= 2d) */
    const void* host_x;
    fgmm_idx_t host_n;
    int host_d;
    FgmmDtype host_dtype;
    int host_fmt;
    dbuf data, xnorm;
    /* streaming */
    dbuf chunk[2];
    void* pinned[2];
    size_t pinned_cap;
    /* model, statistics, scratch (GPU_SCRATCH_BUFS) */
    GPU_SCRATCH_BUFS(GPU_DECLARE_BUF)
    int dm_valid, dm_k, dm_d, dm_cov; /* what dm holds */
    /* statistics computed on the device and not yet downloaded (begin / finish) */
    struct {
        int active, k, d, dp, per_dim;
        long long ll_len;
        double scale; /* obj = scale * sum(ll) */
        double mark;  /* FGMM_TRACE: the time of the pass's last traced step */
    } pend;
    /* host scan of the last data seen: max |x| (bounds the fp16 prescale), the column means (the
     * fused path's centring shift; dp floats, zero padding) and the prepared rows' prescale */
    const void* scan_x;
    fgmm_idx_t scan_n;
    int scan_d;
    double amax, prep_scale;
    float* data_mean;
    int amax_pending; /* set_scan gave the means: max |x| comes from the rows on the device (data_scan) */
    int shift_ok;     /* the device shift buffer holds data_mean (cleared by a new scan or another upload) */
} gpu_impl;

enum { FMT_RAW = 0, FMT_F16 = 1, FMT_F16_DIAG = 2 };

/* Padded width of prepared rows: a multiple of 64 on sm_90 (the wgmma kernels take whole 64-column
 * panels: d = 96 or 100 runs there padded to 128, faster than mma.sync unpadded; the passes skip the
 * padding's k-steps, WG_DISPATCH in kernels/estep_fused.cuh), else of 16. The data mean is kept at the
 * larger padding. */
static inline int prep_dp(const gpu_impl* g, int d) { return g->wg ? (d + 63) / 64 * 64 : (d + 15) / 16 * 16; }
#define MEAN_DP(d) (((d) + 63) / 64 * 64)
/* Prepared row width of a format (FMT_F16 or FMT_F16_DIAG) for data of dimension d: on sm_90 the
 * diagonal rows [x', x'^2] take the wgmma kernels' widths 64, 128 or 256. */
static inline int fmt_dp(const gpu_impl* g, int fmt, int d) {
    if (fmt != FMT_F16_DIAG) return prep_dp(g, d);
    int dp = prep_dp(g, 2 * d);
    return g->wg && dp == 192 ? 256 : dp;
}
/* What one pass runs (fgmm_gpu_plan, gpu_plan.c: the one place that decides). */
typedef enum { GPU_PASS_ESTEP, GPU_PASS_EM, GPU_PASS_KMEANS, GPU_PASS_ASSIGN } gpu_pass;
typedef struct gpu_plan {
    int fused;     /* the fused kernels (E-step; k-means: at a vanishing variance), else cuBLAS fp32 row tiles;
                      diagonal covariance: on prepared rows only, where they fit resident (the caller's check) */
    int mode;      /* the fused kernels' arithmetic: FGMM_FUSED_FP16, _BF16 or _EXACT (kernels.h) */
    int fmt;       /* the prepared rows' format where they fit resident (FMT_F16, FMT_F16_DIAG); FMT_RAW: rows
                      as given */
    int wgmma;     /* the sm_90a wgmma kernels on prepared rows, else mma.sync */
    int onepass;   /* the one-pass fused kernel: 1 wherever it applies, 0 never, -1 where kp = 128 */
    int ws;        /* the two passes' warp-specialised kernels (FGMM_GPU_WS_*) where they apply; 0: never */
    int device_em; /* whole EM iterations on the device (prepared resident rows, device M-step) */
    int tf32;      /* the cuBLAS k-means distances on TF32 tensor cores */
} gpu_plan;

/* The power of two that brings bound to about 2^12 (fp16 operands keep 11 bits above it and
 * headroom to 65504); 1 for bound 0. */
static inline double pow2_prescale(double bound) {
    int e = bound > 0 ? (int)floor(log2(4096.0 / bound)) : 0;
    return ldexp(1.0, e < -60 ? -60 : e > 60 ? 60 : e);
}

/* Prescale of the squares in FMT_F16_DIAG rows: |x' prep_scale| <= 2^12, so x'^2 scale2 <= 2^12. */
static inline double diag_scale2(const gpu_impl* g) { return g->prep_scale * g->prep_scale / 4096.0; }

/* Called on device rows [row0, row0 + rows) of the data, at dx. */
typedef int (*chunk_fn)(gpu_impl* g, const void* dx, long long row0, long long rows, void* ctx);

/* Rows per call on resident data: per-row scratch (logZ, 4 B a row) stays <= 32 MB at any n. */
#define RESIDENT_RANGE_ROWS (8LL << 20)

/* An E-step's model on the device: which path, and the fused kernels' view of it. */
typedef struct estep_ctx {
    const FgmmModel* m;
    gpu_plan plan; /* in: what runs (fgmm_gpu_plan) */
    int fused, mode, kp, dp, diag;
    int prep;      /* in: use prepared rows if the model allows; out: whether it does */
    int blas_only; /* prepare the cuBLAS-path constants even where the fused kernel applies */
    fgmm_fused_model fm;
} estep_ctx;

/* The pieces of one E-step shared by resident and streamed data. */
typedef struct estep_run {
    estep_ctx* c;
    FgmmDtype dtype;
    int d;
} estep_run;

/* Functions shared by the backend's files (each described where it is defined): hidden, so that the
 * shared libraries do not export them (cmake/flashgmm_ivf.map exports fgmm_*). */
#pragma GCC visibility push(hidden)
#ifdef __cplusplus
extern "C" {
#endif

/* ---- which path runs (gpu_plan.c) ---- */
void fgmm_gpu_plan(gpu_impl* g, gpu_pass pass, FgmmCovariance cov, int d, gpu_plan* p);
void fgmm_gpu_engine_options(fgmm_gpu_options* o, FgmmPrecision prec);

/* ---- errors, device and pinned buffers (gpu_buf.c) ---- */
int fgmm_gpu_cuda_fail(cudaError_t e, const char* what);
int fgmm_gpu_dgrow(dbuf* b, size_t bytes, const char* what);
float* fgmm_gpu_upload_buffer(gpu_impl* g, size_t count, int zero);
double* fgmm_gpu_pinned_stats(gpu_impl* g, size_t count);
int fgmm_gpu_read_chk(gpu_impl* g, float* out);

/* ---- data: the host scan, residency, streaming (gpu_data.c) ---- */
int fgmm_gpu_data_scan(gpu_impl* g, const fgmm_data* x);
/* engine op set_scan (internal.h) */
int fgmm_gpu_set_scan(fgmm_engine* e, const fgmm_data* x, const double* mean);
int fgmm_gpu_resident_fits(gpu_impl* g, const fgmm_data* x, int fmt, size_t* budget_out);
/* x's rows as given made resident on the device (the caller checked that they fit). */
int fgmm_gpu_upload_raw(gpu_impl* g, const fgmm_data* x);
/* Whether x's rows are resident on the device (as given or prepared). */
int fgmm_gpu_on_device(const gpu_impl* g, const fgmm_data* x);
int fgmm_gpu_device_shift(gpu_impl* g);
int fgmm_gpu_for_each_chunk(gpu_impl* g, const fgmm_data* x, int fmt, chunk_fn fn, void* ctx);

/* ---- model: upload and constants (gpu_model.c) ---- */
int fgmm_gpu_upload_model(gpu_impl* g, const FgmmModel* m, dbuf* dst);
int fgmm_gpu_prep_constants(gpu_impl* g, estep_ctx* c, const float* mu, const float* var, const float* w, int k, int d,
                            int diag, int check, int* in_range);
int fgmm_gpu_prepare_model(gpu_impl* g, const FgmmModel* m, estep_ctx* c);

/* At the engine's end: its pinned pair becomes the process's spare (the larger of two, at most 64 MB
 * each), or is freed. */
void fgmm_gpu_pinned_pair_release(gpu_impl* g);
/* bytes from host src to device dst through the pinned pair, 8 MB pieces staged while the previous
 * piece's DMA runs; returns when the copy has landed (gpu_data.c). */
int fgmm_gpu_upload_staged(gpu_impl* g, void* dst, const void* src, size_t bytes);

/* ---- E-step: row chunks, the cuBLAS path's row tiles (gpu_estep.c) ---- */
int fgmm_gpu_blas_tile(gpu_impl* g, long long rows, int k, int d, int squares, long long* tile);
int fgmm_gpu_blas_distances(gpu_impl* g, const void* dx, FgmmDtype dt, int t, int k, int d, int diag);
int fgmm_gpu_estep_chunk(gpu_impl* g, const void* dx, long long row0, long long rows, void* vrun);
int fgmm_gpu_unshift_stats(gpu_impl* g, const estep_ctx* c, int k, int d);
int fgmm_gpu_estep(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out);

/* ---- statistics on the device (gpu_stats.c) ---- */
int fgmm_gpu_zero_stats(gpu_impl* g, int kp, int dp, int per_dim, long long ll_len);

/* ---- k-means, k-means++ seeding, assignment (gpu_kmeans_assign.c) ---- */
int fgmm_gpu_kmeans(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, fgmm_stats* out);
int fgmm_gpu_seed_pp(fgmm_engine* e, const float* rows, fgmm_idx_t ns, int d, int k, fgmm_idx_t first, const double* u,
                     fgmm_idx_t* picks, int* found);
int fgmm_gpu_assign(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels, float* resp,
                    float* loglik);

/* ---- a whole EM iteration on the device (gpu_em.c) ---- */
int fgmm_gpu_em_step(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int model_changed,
                     const fgmm_mstep_cfg* cfg, int* handled, double* obj, int* nempty);
int fgmm_gpu_em_fetch(fgmm_engine* e, FgmmModel* m, int* empty);

#ifdef __cplusplus
}
#endif
#pragma GCC visibility pop
#endif
