/* SPDX-License-Identifier: MIT */
/* gpu_engine.h: GPU-backend controls used by the benchmarks (not public). */
#ifndef FGMM_GPU_ENGINE_H
#define FGMM_GPU_ENGINE_H
#include "internal.h"

#ifdef __cplusplus
extern "C" { /* the C++ tests force paths */
#endif

enum {
    FGMM_GPU_PATH_FUSED = 0,       /* fused fp16 prescaled (isotropic, d <= 128), on prepared resident rows where
                                      they fit; else the cuBLAS path */
    FGMM_GPU_PATH_FUSED_EXACT = 1, /* fused, 3x bf16 split */
    FGMM_GPU_PATH_BLAS = 2,        /* cuBLAS fp32 row tiles */
    FGMM_GPU_PATH_FUSED_BF16 = 3,  /* fused, plain bf16 (the public kernels' arithmetic), for comparison */
    FGMM_GPU_PATH_FUSED_RAW = 4,   /* fused fp16 converting the rows as given in the kernel (no prepared copy) */
    FGMM_GPU_PATH_FUSED_MMA = 5,   /* as FUSED, but mma.sync where the default uses wgmma (sm_90, d % 64 == 0) */
};
/* A GPU engine's internal options: what the tests and benchmarks force. An engine takes them at its
 * creation from fgmm_gpu_set_options's (the defaults below until then); src/gpu/gpu_plan.c turns
 * them, the precision and the device into the path each pass runs (FGMM_TRACE=1 prints it). */
typedef struct fgmm_gpu_options {
    int path;            /* FGMM_GPU_PATH_*; -1 (default): FUSED, or FUSED_EXACT for FGMM_PREC_EXACT */
    int onepass;         /* the fused E-step in one pass (kernels/estep_onepass.cu): 1 wherever that kernel
                            applies, 0 never, -1 (default) only for kp = 128 components, where it is faster
                            than the two passes (clusters of more blocks are slower) */
    int host_mstep;      /* 1: EM's M-step on the host where the device's would run (comparison); default 0 */
    long long tile_rows; /* the cuBLAS path's tile rows (n: the naive N x K baseline); 0 (default): from
                            BLAS_TILE_BYTES (gpu_estep.c) */
    int ws;              /* the two passes on the warp-specialised sm_90a kernels (FGMM_GPU_WS_* below);
                            default FGMM_GPU_WS_OFF */
} fgmm_gpu_options;
void fgmm_gpu_options_init(fgmm_gpu_options* o);
/* The options of the GPU engines created from now on, in this process (NULL: the defaults). Set
 * between trainings, not while another thread creates an engine. */
void fgmm_gpu_set_options(const fgmm_gpu_options* o);
/* Forces an E-step path; tile_rows > 0 sets the cuBLAS tile (n = the naive N x K baseline). */
int fgmm_engine_gpu_set_path(fgmm_engine* e, int path, long long tile_rows);
/* This engine's onepass option (fgmm_gpu_options). */
int fgmm_engine_gpu_set_onepass(fgmm_engine* e, int on);
/* The two-pass fused E-step on the warp-specialised sm_90a kernels (kernels/estep_ws.cu) wherever they
 * apply (prepared rows 128 wide on an sm_90 device; elsewhere the usual kernels run): variant = pass 2's
 * (PIPE or PLAIN, or none), optionally | FGMM_GPU_WS_LSE for pass 1. Off by default: slower than the
 * usual passes at every K measured, 1,024 to 4,096 (H100, BENCHMARKS 1d).
 * fgmm_engine_gpu_set_ws: this engine's ws option (fgmm_gpu_options); FGMM_ERR_ARG for another value. */
enum {
    FGMM_GPU_WS_OFF = 0,   /* never (the default) */
    FGMM_GPU_WS_PIPE = 1,  /* pass 2: kernels.h's FGMM_WS_PIPE2 */
    FGMM_GPU_WS_PLAIN = 2, /* pass 2: FGMM_WS_PLAIN2 */
    FGMM_GPU_WS_ACC = 3,   /* (the bits of pass 2's variant) */
    FGMM_GPU_WS_LSE = 4,   /* pass 1 */
};
int fgmm_engine_gpu_set_ws(fgmm_engine* e, int variant);
/* E-step chunks that ran a warp-specialised kernel so far (0 where they do not apply); -1 for another engine. */
long long fgmm_engine_gpu_ws_launches(const fgmm_engine* e);
/* The CUDA device of a single-GPU engine; -1 for another engine. */
int fgmm_engine_gpu_device(const fgmm_engine* e);
/* Waits for the device; reports the bytes the engine holds on it (data excluded). */
int fgmm_engine_gpu_sync(fgmm_engine* e, size_t* scratch_bytes);
/* Kernel time of the last fused E-step's two passes (CUDA events; resident data only), ms. */
int fgmm_engine_gpu_pass_ms(fgmm_engine* e, float* lse_ms, float* acc_ms);

/* Split E-step / k-means for data-parallel use: begin leaves the statistics on the device,
 * fgmm_gpu_pending exposes them (for an all-reduce), finish downloads them into out (adding
 * this engine's own log-likelihood part) and clears the pending state. */
typedef struct fgmm_gpu_pending_view {
    double *nk, *s1, *s2;    /* device buffers */
    size_t n_nk, n_s1, n_s2; /* elements to reduce; identical on every rank for one model */
    void* stream;            /* cudaStream_t the statistics were computed on */
    int device;
} fgmm_gpu_pending_view;
int fgmm_gpu_estep_begin(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m);
int fgmm_gpu_kmeans_begin(fgmm_engine* e, const fgmm_data* x, const float* cent, int k);
int fgmm_gpu_pending(fgmm_engine* e, fgmm_gpu_pending_view* v);
int fgmm_gpu_pending_loglik(fgmm_engine* e, double* scaled_sum); /* this engine's part of obj */
int fgmm_gpu_finish(fgmm_engine* e, fgmm_stats* out);
void fgmm_gpu_discard(fgmm_engine* e); /* drop pending statistics without downloading them */
/* The host scan behind the fused path's centring and fp16 prescale (column means, max |x|), cached
 * per array. Data-parallel ranks scan the whole data once and adopt it for their part, so that every
 * rank computes with the same shift and scale. */
int fgmm_gpu_scan(fgmm_engine* e, const fgmm_data* x);
int fgmm_gpu_adopt_scan(fgmm_engine* e, const fgmm_data* part, const fgmm_engine* from);

#ifdef __cplusplus
}
#endif
#endif
