/* SPDX-License-Identifier: MIT */
/* internal.h: what the library's translation units share; not installed. */
#ifndef FGMM_INTERNAL_H
#define FGMM_INTERNAL_H

#include <stdio.h>

#include "flashgmm.h"
#include "flashgmm_io.h"

#ifdef __cplusplus
extern "C" { /* the C++ tests use the engine directly */
#endif

/* Records a formatted message for fgmm_get_last_error and returns code (the public
 * fgmm_set_last_error under a short name). */
#define fgmm_fail fgmm_set_last_error
void fgmm_clear_error(void);

/* Hot row loops are compiled twice, AVX2+FMA and baseline x86-64, picked at load time (an ifunc).
 * Not under ThreadSanitizer (its runtime is not up when ifunc resolvers run), clang, or elsewhere. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define HOT_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define HOT_CLONES
#endif

/* exp(x) for x <= 0 in float, written so that the compiler vectorises it (Cephes' expf: x = n ln2 + r,
 * |r| <= ln2/2, a degree-6 polynomial, 2^n put in the exponent bits); relative error about 2e-7,
 * and 0 below -87 (where expf gives at most 2^-126: nothing next to the row maximum's term 1). */
static inline float fgmm_exp_nonpos(float x) {
    const int under = !(x >= -87.0f); /* -inf, NaN and terms far below the int range (a tiny variance) */
    x = under ? -87.0f : x;           /* never converted to int: that would be undefined */
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int e = (int)n + 127;
    union {
        int i;
        float f;
    } u = {.i = (e > 0 ? e : 0) << 23};
    return under ? 0.0f : p * u.f;
}

/* Limits that keep size arithmetic in range (also for hostile files). */
#define FGMM_MAX_DIM (1 << 20)
#define FGMM_MAX_K (1 << 24)
/* fgmm_gpu_prestart takes devices 0 .. FGMM_PRESTART_DEVICES - 1 (gpu_prestart.c: a slot each). */
#define FGMM_PRESTART_DEVICES 64
/* fgmm_gpu_prestart's device check, the same in both builds: FGMM_OK, or FGMM_ERR_ARG with its message. */
static inline int fgmm_prestart_device_check(int device) {
    if (device >= 0 && device < FGMM_PRESTART_DEVICES) return FGMM_OK;
    return fgmm_fail(FGMM_ERR_ARG, "fgmm_gpu_prestart: device = %d; want 0 .. %d", device, FGMM_PRESTART_DEVICES - 1);
}

/* Files (file.c; fgmm_open_input and fgmm_output_begin / _end are public, flashgmm_io.h): the
 * fgmm_open_input check for readers that open by path. */
int fgmm_check_input(const char* path, int64_t* size);

/* Vector files as the command-line programs read them (read_isolated.c): rows [first, first +
 * max_rows) as fgmm_vecs_read_rows reads them, or (shape_only) the shape as fgmm_vecs_shape gives it
 * in out->n, d, dtype; isolated: an HDF5 file is parsed in a child process, as
 * fgmm_vecs_read_isolated does. */
int fgmm_vecs_read_any(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                       int isolated, FgmmVecs* out);
/* Tests only: when set, the child process of an isolated read calls it first (to die by a signal). */
extern void (*fgmm_isolated_child_hook)(void);

#define FGMM_CHECK_NULL(p)                                                         \
    do {                                                                           \
        if (!(p)) return fgmm_fail(FGMM_ERR_NULL, "%s: %s is NULL", __func__, #p); \
    } while (0)

struct FgmmModel {
    int k, d;
    FgmmCovariance cov;
    float* mu;  /* k x d */
    float* var; /* k (isotropic) or k x d (diagonal) */
    float* w;   /* k, sums to 1 */
};
int fgmm_model_alloc(FgmmModel** out, int k, int d, FgmmCovariance cov);
size_t fgmm_model_nvar(const FgmmModel* m); /* k or k*d */

/* A borrowed view of n rows. */
typedef struct fgmm_data {
    const void* x;
    fgmm_idx_t n;
    int d;
    FgmmDtype dtype;
} fgmm_data;

/* Sums over rows, in double. For EM: nk = sum r, s1 = sum r x (k x d),
 * s2 = sum r ||x - mu||^2 (k, isotropic) or sum r x^2 (k x d, diagonal),
 * obj = sum log p(x). For k-means: nk = counts, s1 = sums, s2 = per-cluster
 * sum of squared distances (k), obj = -sum of squared distances. */
typedef struct fgmm_stats {
    int k, d, s2_per_dim;
    double* nk;
    double* s1;
    double* s2;
    double obj;
} fgmm_stats;
/* One allocation: nk, s1, s2 follow each other, then one spare double (room for obj when the whole
 * block is all-reduced at once); fgmm_stats_len counts nk, s1 and s2. */
int fgmm_stats_alloc(fgmm_stats* s, int k, int d, int s2_per_dim);
size_t fgmm_stats_len(const fgmm_stats* s);
void fgmm_stats_zero(fgmm_stats* s);
void fgmm_stats_free(fgmm_stats* s);

/* FGMM_TRACE=1: fgmm_trace prints "what", the seconds since *mark and the process's CPU seconds so
 * far to stderr, then sets *mark to now (steps of a training, and of the engine's parts of a step). */
double fgmm_now(void);
void fgmm_trace(double* mark, const char* what);
/* FGMM_TRACE=1: whether tracing is on; fgmm_trace_note prints a line (printf format) to stderr. */
int fgmm_trace_on(void);
void fgmm_trace_note(const char* fmt, ...);

/* Training over several processes (fgmm_train_comm): every rank holds rows [row0[rank],
 * row0[rank + 1]) of n_total and runs the same EM driver on them; the driver calls these
 * collectives at the same points on every rank. A rank passes its outcome so far as status: when
 * any rank's is non-zero no data moves, every rank returns an error (the failing rank its own
 * status and message, the others FGMM_ERR_STATE) and sets agreed, so all stop together. A failure
 * that reaches no collective leaves agreed at 0: the launcher must then abort the other ranks.
 * The library has no MPI dependency: the launcher (tools/flashgmm_mpi.c) implements these with MPI. */
typedef struct fgmm_comm fgmm_comm;
struct fgmm_comm {
    int rank, size;
    fgmm_idx_t n_total;
    const fgmm_idx_t* row0; /* size + 1 entries, row0[0] = 0, row0[size] = n_total */
    int agreed;             /* set by a collective that saw a failure */
    int device_sums;        /* passes whose statistics the ranks summed on their GPUs with NCCL (gpu-nccl-comm
                               engine); set to 0 by fgmm_train_comm, counted by the engine */
    int host_sum;           /* 1: statistics always through sum, never NCCL (the launcher: FGMM_COMM_SUM=host) */
    /* v (n doubles) summed over the ranks, in place; every rank gets bitwise the same values. */
    int (*sum)(fgmm_comm* c, double* v, size_t n, int status);
    /* Rank r's bytes[r] bytes, r in order, into all (mine is this rank's part; it may already
     * stand at its place in all). */
    int (*gather)(fgmm_comm* c, const void* mine, void* all, const size_t* bytes, int status);
    /* Rank 0's bytes to every rank. */
    int (*bcast)(fgmm_comm* c, void* buf, size_t bytes, int status);
    void* impl;
};
/* fgmm_train on this rank's rows x (n = row0[rank + 1] - row0[rank]); comm NULL is fgmm_train.
 * Needs p->n_gpus = 0 (one engine per rank); the engine's own device EM iteration is not used. With
 * several ranks and a GPU backend, each pass's statistics are summed with NCCL where every rank has a
 * single-GPU engine and libnccl.so.2 (fgmm_engine_comm_wrap), else through sum (comm->host_sum:
 * always through sum). */
int fgmm_train_comm(const FgmmParams* p, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, fgmm_comm* comm,
                    FgmmModel** out, FgmmTrainInfo* info);

/* The engine: one interface, a CPU and a GPU backend chosen at run time.
 * estep / kmeans compute fgmm_stats over all rows; assign gives per-row
 * top-m components by responsibility and log p(x) (either output may be NULL). */
typedef struct fgmm_engine fgmm_engine;
/* M-step settings (train.c's mstep() and the device M-step): variance floor, smallest N_k of a
 * non-empty component, the variance given to empty components when none is left non-empty. */
typedef struct fgmm_mstep_cfg {
    double var_floor, min_count, fill_var;
} fgmm_mstep_cfg;
typedef struct fgmm_engine_ops {
    const char* name;
    int (*estep)(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out);
    int (*kmeans)(fgmm_engine* e, const fgmm_data* x, const float* centroids, int k, fgmm_stats* out);
    int (*assign)(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels, float* resp,
                  float* loglik);
    void (*destroy)(fgmm_engine* e);
    /* Optional (NULL where a backend has none): a whole EM iteration with the model kept on the
     * device. em_step uploads m if model_changed (else continues from its own copy), runs the
     * E-step and the M-step there; obj = sum log p(x) under the model it started from,
     * nempty = components left empty (flags and the model: em_fetch). *handled = 0 when it does
     * not apply (covariance, d, precision, data not resident), and nothing was done. */
    int (*em_step)(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int model_changed, const fgmm_mstep_cfg* cfg,
                   int* handled, double* obj, int* nempty);
    int (*em_fetch)(fgmm_engine* e, FgmmModel* m, int* empty /* k flags, or NULL */);
    /* Optional: k-means++ on ns host rows (ns x d floats) with seed.c's arithmetic: picks[0] =
     * first, then picks[c] (c = 1..k-1) by D^2 sampling at u[c - 1] * total. Fewer than k distinct
     * rows: FGMM_ERR_DATA, *found = how many. */
    int (*seed_pp)(fgmm_engine* e, const float* rows, fgmm_idx_t ns, int d, int k, fgmm_idx_t first, const double* u,
                   fgmm_idx_t* picks, int* found);
    /* Optional: x's column means (d) from the caller's own pass over x, so that the backend need
     * not read x on the host again for them (the GPU's centring shift). */
    int (*set_scan)(fgmm_engine* e, const fgmm_data* x, const double* mean);
    /* Optional: obj = sum log p(x) under m alone, cheaper than estep's statistics (training's final
     * mean log-likelihood). */
    int (*loglik_sum)(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, double* obj);
} fgmm_engine_ops;
struct fgmm_engine {
    const fgmm_engine_ops* ops;
    FgmmPrecision precision;
    int sums_ranks; /* estep / kmeans give N_k, s1, s2 summed over fgmm_train_comm's ranks (obj: this rank's) */
    void* impl;
};

int fgmm_engine_cpu_create(fgmm_engine** out);
/* Fails with FGMM_ERR_NO_GPU when the build has no CUDA or no device exists. */
int fgmm_engine_gpu_create(fgmm_engine** out, int device, size_t mem_limit, FgmmPrecision prec);
/* n_ranks GPUs from first_device on, statistics all-reduced with NCCL (libnccl.so.2, dlopen). */
int fgmm_engine_multi_create(fgmm_engine** out, int n_ranks, int first_device, size_t mem_limit, FgmmPrecision prec);
/* fgmm_train_comm's engines on several ranks: every rank calls this at the same point with its engine *e
 * (status: its outcome; the ranks agree on it here). Where every rank has a single-GPU engine and loads
 * libnccl.so.2 (and c->host_sum is 0), *e becomes "gpu-nccl-comm", which holds it and sums the
 * statistics over the ranks on the devices (sums_ranks); otherwise *e is left as it is. */
int fgmm_engine_comm_wrap(fgmm_engine** e, fgmm_comm* c, int status);
/* Picks the backend per params (src/driver/engine.c). */
int fgmm_engine_create(fgmm_engine** out, const FgmmParams* params);
/* Here, not in engine.c: the backends destroy the engines they hold, and stay below the driver. */
static inline void fgmm_engine_destroy(fgmm_engine* e) {
    if (e) e->ops->destroy(e);
}

/* Bytes per value of a dtype (FGMM_I32 included). */
static inline size_t fgmm_dtype_size(FgmmDtype t) { return t == FGMM_U8 ? 1 : 4; }

/* Checks a data view (NULL, d, n, dtype) and that every value is finite. */
int fgmm_data_check(const fgmm_data* x, const char* who);
/* The same without reading the values. */
int fgmm_data_check_shape(const fgmm_data* x, const char* who);
/* Row i converted to float. */
void fgmm_data_row(const fgmm_data* x, fgmm_idx_t i, float* out);

/* Per-component constants of the log density, shared by both backends:
 * log p(x|k) + log w_k = c_k - q_k(x), isotropic q_k = ||x-mu_k||^2 / (2 var_k),
 * c_k = log w_k - d/2 log(2 pi var_k). */
void fgmm_model_logconst(const FgmmModel* m, double* c /* k */);

/* SOAR (spill.c): the centroids shifted by their mean, as both paths compute distances (no
 * cancellation far from the origin): mean (d doubles), cs = c - mean (k x d), cn = ||cs||^2 (k). */
typedef struct fgmm_soar_cents {
    int k, d;
    double* mean;
    float *cs, *cn;
} fgmm_soar_cents;
/* The device part of fgmm_soar_assign_gpu on checked arguments (n >= 1): gpu_spill.c, or FGMM_ERR_NO_GPU
 * in a build without CUDA. */
int fgmm_soar_gpu(int device, fgmm_idx_t n, const float* x, const fgmm_soar_cents* sc, float lambda,
                  fgmm_idx_t* primary, fgmm_idx_t* spill, float* d1, float* d2);

/* The device part of fgmm_pq_encode_gpu (flashgmm_spill.h) on checked arguments (n >= 1): gpu_pq.c,
 * or FGMM_ERR_NO_GPU in a build without CUDA. */
int fgmm_pq_gpu(int device, fgmm_idx_t n, int d, const float* x, int ma, const fgmm_idx_t* lists, int nlist,
                const float* cent, int M, const float* codebook, uint8_t* codes);

#ifdef __cplusplus
}
#endif
#endif
