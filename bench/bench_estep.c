/* SPDX-License-Identifier: MIT */
/* bench_estep.c: ms per isotropic E-step, fused kernel vs baselines, one process, one device.
 *
 *   bench_estep [NxKxD ...] [--reps R] [--cpu-max-n N]
 *
 * For each shape (default: the list) it makes clustered fp32 data, a model from
 * random rows, and times one full E-step through the engine (model upload, kernels,
 * statistics download; data already on the device), median of R runs after a warm-up:
 *   fused-fp16   fused kernel, fp16 tensor cores with a power-of-two prescale (the default "fast" mode),
 *                on the engine's prepared resident copy (fp16 rows centred on the data mean: made once,
 *                in the first call, whose time is printed too)
 *                (on an sm_90 GPU with d % 64 == 0 the distance GEMMs run on wgmma)
 *                (the default takes one pass for k <= 128 on sm_90 with dp = 128, two passes elsewhere)
 *   one-pass     the same rows in the one-pass kernel wherever it applies (kernels/estep_onepass.cu:
 *                sm_90, dp = 128, k <= 1024; elsewhere the two passes). FGMM_BENCH_QUICK=1: only these two.
 *   mma.sync     the same prepared rows with the mma.sync distance GEMMs (the portable code)
 *   fp16 raw     the same kernel reading the fp32 rows as given, converting each tile in the kernel
 *   fused-bf16   fused kernel, plain bf16 operands (what the public fused kernels use)
 *   fused-exact  fused kernel, 3x bf16 split (about fp32)
 *   blas-tiled   cuBLAS fp32 SGEMM in 256 MB row tiles (no N x K matrix)
 *   naive-NxK    cuBLAS fp32 with one tile of all N rows: materialises N x K ("oom" if it cannot)
 *   cpu          OpenBLAS engine (only for N <= --cpu-max-n)
 * "extra MB" is device memory the engine holds besides the data (fp32 rows, or the prepared copy). The relative error of
 * each GPU path's N_k and sum r x against the exact path is printed too.
 *
 *   bench_estep --ws [NxKxD ...] [--reps R]   the warp-specialised sm_90a kernels (kernels/estep_ws.cu) against
 *       the default two passes, same engine and rows, interleaved: two passes, pass 2 pipelined, plain, pipelined
 *       with pass 1 warp-specialised, two passes again; ms, kernel times, chunks that ran them, and each one's
 *       N_k / sum r x error against fused-exact.
 *   bench_estep --stream NxKxD [--mem-limit-mb M]   uint8 data streamed from host memory through a
 *       device budget of M MB (default 2048): ms per E-step and rows/s, vs the same kernel on a
 *       resident 10M-row slice.
 *   bench_estep --train NxKxD [--prestart]   full fgmm_train (10 k-means + 30 EM) on the GPU (M-step on the
 *       device, then on the host (fgmm_gpu_options.host_mstep), then on the device again in the now warm process)
 *       and on the CPU (N <= 200k); also the median ms per EM iteration. The first training is the process's
 *       cold one: a "process:" line gives, from main's start, when the data were ready (their generation
 *       stands in for reading a file), the first training's seconds and the total. --prestart calls
 *       fgmm_gpu_prestart(0) before generating the data (docs/results/coldstart.md).
 *   bench_estep --assign NxKxD  top-4 responsibilities per row (fgmm_ivf_add's work): GPU vs CPU.
 *   bench_estep --train-diag NxKxD   the same with diagonal covariance.
 *   bench_estep --train-gpus NxKxD G   fgmm_train on 1 GPU, then on G GPUs of this process (n_gpus, NCCL).
 *   bench_estep --diag NxKxD    diagonal covariance E-step: GPU default (fused where 2d <= 128) and cuBLAS, vs CPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "gpu_engine.h"

static int cmp_f(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x > y) - (x < y);
}

typedef struct result {
    double ms;
    size_t extra;
    int ok;
    float lse_ms, acc_ms; /* median-run kernel times of the fused passes */
    double first_ms;      /* the warm-up call: data upload (and preparation), scratch allocation */
} result;

static result time_engine(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* st, int reps) {
    result r = {0};
    double t_first = now_ms();
    if (e->ops->estep(e, x, m, st)) { /* warm-up: copies the data, allocates scratch */
        fprintf(stderr, "  (%s)\n", fgmm_get_last_error());
        return r;
    }
    r.first_ms = now_ms() - t_first;
    double* t = malloc(sizeof(double) * reps);
    float *tl = malloc(sizeof(float) * reps), *ta = malloc(sizeof(float) * reps);
    int gpu = strcmp(e->ops->name, "gpu") == 0;
    for (int i = 0; i < reps; i++) {
        double t0 = now_ms();
        if (e->ops->estep(e, x, m, st)) {
            free(t);
            free(tl);
            free(ta);
            return r;
        }
        t[i] = now_ms() - t0;
        tl[i] = ta[i] = 0;
        if (gpu) fgmm_engine_gpu_pass_ms(e, &tl[i], &ta[i]);
    }
    qsort(t, reps, sizeof(double), cmp_d);
    qsort(tl, reps, sizeof(float), cmp_f);
    qsort(ta, reps, sizeof(float), cmp_f);
    r.ms = t[reps / 2];
    r.lse_ms = tl[reps / 2];
    r.acc_ms = ta[reps / 2];
    r.ok = 1;
    if (gpu) fgmm_engine_gpu_sync(e, &r.extra);
    free(tl);
    free(ta);
    free(t);
    return r;
}

static double rel(const double* a, const double* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return sqrt(num / (den > 0 ? den : 1));
}

/* uint8 clustered data, filled in parallel */
static uint8_t* make_u8(long long n, int d) {
    uint8_t* x = malloc((size_t)n * d);
    if (!x) return NULL;
#pragma omp parallel
    {
        uint64_t ls;
#pragma omp for
        for (long long i = 0; i < n; i++) {
            ls = 0x9E3779B97F4A7C15ull ^ ((uint64_t)i * 0x2545F4914F6CDD1Dull + 1); /* per row: same data every run */
            int c = (int)(rng(&ls) % 64);
            for (int j = 0; j < d; j++) {
                float v = 40.0f * ((c * 7 + j * 13) % 11) / 11.0f + 25.0f * gauss(&ls) + 60.0f;
                x[(size_t)i * d + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    return x;
}

/* make_u8's data as float */
static float* make_f32(long long n, int d) {
    uint8_t* x8 = make_u8(n, d);
    float* x = x8 ? malloc((size_t)n * d * sizeof(float)) : NULL;
    for (size_t i = 0; x && i < (size_t)n * d; i++) x[i] = x8[i];
    free(x8);
    return x;
}

static FgmmModel* model_from(const void* x, FgmmDtype t, long long n, int k, int d, float var) {
    FgmmModel* m;
    uint64_t seed = 12345;
    fgmm_model_alloc(&m, k, d, FGMM_COV_ISOTROPIC);
    for (int q = 0; q < k; q++) {
        long long r = (long long)(rng(&seed) % (uint64_t)n);
        for (int j = 0; j < d; j++)
            m->mu[(size_t)q * d + j] =
                t == FGMM_U8 ? ((const uint8_t*)x)[(size_t)r * d + j] : ((const float*)x)[(size_t)r * d + j];
        m->var[q] = var;
        m->w[q] = 1.0f / k;
    }
    return m;
}

static int stream_mode(const char* shape, size_t mem_mb) {
    long long n;
    int k, d;
    if (sscanf(shape, "%lldx%dx%d", &n, &k, &d) != 3) return 2;
    double t0 = now_ms();
    uint8_t* x = make_u8(n, d);
    if (!x) {
        fprintf(stderr, "no host memory for %lld x %d\n", n, d);
        return 1;
    }
    printf("generated %lld x %d uint8 (%.1f GB) in %.1f s\n", n, d, n * (double)d / 1e9, (now_ms() - t0) / 1e3);
    FgmmModel* m = model_from(x, FGMM_U8, n, k, d, 600.0f);
    fgmm_stats st;
    fgmm_stats_alloc(&st, k, d, 0);
    fgmm_engine* e;
    if (fgmm_engine_gpu_create(&e, 0, mem_mb << 20, FGMM_PREC_FAST)) {
        fprintf(stderr, "%s\n", fgmm_get_last_error());
        return 1;
    }
    fgmm_data xd = {x, n, d, FGMM_U8};
    result s = time_engine(e, &xd, m, &st, 3);
    size_t extra = 0;
    fgmm_engine_gpu_sync(e, &extra);
    double ll_stream = st.obj;
    fgmm_engine_destroy(e);
    long long nr = n < 10000000 ? n : 10000000;
    fgmm_engine_gpu_create(&e, 0, 0, FGMM_PREC_FAST);
    fgmm_data xr = {x, nr, d, FGMM_U8};
    result r = time_engine(e, &xr, m, &st, 5);
    fgmm_engine_destroy(e);
    printf("| mode | N x K x D | ms per E-step | rows/s | device MB held |\n|---|---|---:|---:|---:|\n");
    printf("| streamed, %zu MB budget | %lld x %d x %d | %.0f | %.3g | %.0f |\n", mem_mb, n, k, d, s.ms,
           n / (s.ms / 1e3), extra / 1048576.0);
    printf("| resident | %lld x %d x %d | %.1f | %.3g | - |\n", nr, k, d, r.ms, nr / (r.ms / 1e3));
    printf("streamed mean log-likelihood %.6f\n", ll_stream / n);
    fgmm_stats_free(&st);
    fgmm_model_free(m);
    free(x);
    return s.ok && r.ok ? 0 : 1;
}

/* EM callback times (ms): the median gap is the time of one EM iteration (E-step + M-step). */
typedef struct em_clock {
    double t[1024];
    int n;
    double start, km_first, km_last; /* train start, first / last k-means callback */
} em_clock;

static void train_progress(void* u, FgmmPhase ph, int it, double obj, int re) {
    (void)re;
    em_clock* c = u;
    if (ph == FGMM_PHASE_KMEANS) {
        c->km_last = now_ms();
        if (!c->km_first) c->km_first = c->km_last;
    }
    if (ph != FGMM_PHASE_EM) return;
    if (c->n < 1024) c->t[c->n++] = now_ms();
    if (it < 3 || it % 10 == 9) printf("    em %2d  mean log-likelihood %.5f\n", it + 1, obj);
}

static double em_iter_ms(em_clock* c) {
    if (c->n < 2) return 0;
    for (int i = 0; i + 1 < c->n; i++) c->t[i] = c->t[i + 1] - c->t[i];
    qsort(c->t, c->n - 1, sizeof(double), cmp_d);
    return c->t[(c->n - 1) / 2];
}

static double main_start_ms; /* now_ms() at main's start */

static int train_mode(const char* shape, FgmmCovariance cov, int prestart) {
    long long n;
    int k, d;
    if (sscanf(shape, "%lldx%dx%d", &n, &k, &d) != 3) return 2;
    if (prestart && fgmm_gpu_prestart(0)) fprintf(stderr, "prestart: %s\n", fgmm_get_last_error());
    float* x = make_f32(n, d);
    double ready_ms = now_ms();
    printf(
        "| backend | N x K x D | k-means + EM iterations | seconds | ms per EM iteration | final mean log-likelihood |\n"
        "|---|---|---|---:|---:|---:|\n");
    /* 0: GPU, M-step on the device (the process's first training: CUDA start-up included); 1: GPU, M-step
     * on the host (fgmm_gpu_options.host_mstep); 3: GPU, device M-step again (a warm process's default training); 2: CPU */
    static const int order[4] = {0, 1, 3, 2};
    for (int o = 0; o < 4; o++) {
        const int b = order[o];
        if (b == 2 && n > 200000) break;
        FgmmParams p;
        fgmm_params_init(&p);
        p.k = k;
        p.covariance = cov;
        p.backend = b == 2 ? FGMM_BACKEND_CPU : FGMM_BACKEND_GPU;
        p.progress = train_progress;
        em_clock clk = {.n = 0};
        p.progress_user = &clk;
        clk.start = now_ms();
        fgmm_gpu_options go;
        fgmm_gpu_options_init(&go);
        go.host_mstep = b == 1;
        fgmm_gpu_set_options(&go);
        FgmmModel* m = NULL;
        FgmmTrainInfo info;
        int rc = fgmm_train(&p, n, d, FGMM_F32, x, &m, &info);
        fgmm_gpu_set_options(NULL);
        if (rc) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        double end = now_ms(), em0 = clk.n ? clk.t[0] : end, emn = clk.n ? clk.t[clk.n - 1] : end;
        printf("| %s%s%s | %lld x %d x %d | %d + %d | %.3f | %.2f | %.5f |\n", info.backend,
               b == 0   ? ", device M-step"
               : b == 1 ? ", host M-step"
               : b == 3 ? ", device M-step, warm"
                        : "",
               cov == FGMM_COV_DIAGONAL ? ", diagonal" : "", n, k, d, info.kmeans_iterations, info.em_iterations,
               info.seconds, em_iter_ms(&clk), info.mean_loglik);
        printf(
            "    phases (s): to first k-means callback %.3f (seeding + 1 pass), k-means %.3f, to first EM %.3f, "
            "EM %.3f, final E-step %.3f\n",
            (clk.km_first - clk.start) / 1e3, (clk.km_last - clk.km_first) / 1e3, (em0 - clk.km_last) / 1e3,
            (emn - em0) / 1e3, (end - emn) / 1e3);
        if (o == 0)
            printf("    process: data ready %.3f s, first training %.3f s, total %.3f s (from main's start; %s)\n",
                   (ready_ms - main_start_ms) / 1e3, info.seconds, (end - main_start_ms) / 1e3,
                   prestart ? "fgmm_gpu_prestart before the data" : "no prestart");
        fflush(stdout);
        fgmm_model_free(m);
    }
    free(x);
    return 0;
}

/* fgmm_train on 1 GPU and on G GPUs of this process (FgmmParams.n_gpus, NCCL), the same data and
 * seed: seconds, EM iteration time, log-likelihood and the largest difference of the means. */
static int gpus_mode(const char* shape, int gpus) {
    long long n;
    int k, d;
    if (sscanf(shape, "%lldx%dx%d", &n, &k, &d) != 3 || gpus < 1) return 2;
    float* x = make_f32(n, d);
    FgmmModel* one = NULL;
    printf(
        "| GPUs | N x K x D | seconds | ms per EM iteration | final mean log-likelihood | max |mean - 1 GPU's| |\n"
        "|---:|---|---:|---:|---:|---:|\n");
    const int runs[2] = {1, gpus}; /* one GPU, then G (once when G = 1) */
    for (int r = 0; r < (gpus > 1 ? 2 : 1); r++) {
        const int g = runs[r];
        FgmmParams p;
        fgmm_params_init(&p);
        p.k = k;
        p.backend = FGMM_BACKEND_GPU;
        p.n_gpus = g;
        p.progress = train_progress;
        em_clock clk = {.n = 0};
        p.progress_user = &clk;
        FgmmModel* m = NULL;
        FgmmTrainInfo info;
        if (fgmm_train(&p, n, d, FGMM_F32, x, &m, &info)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        double dmax = 0;
        for (size_t i = 0; one && i < (size_t)k * d; i++) {
            double v = fabs((double)fgmm_model_means(m)[i] - fgmm_model_means(one)[i]);
            dmax = v > dmax ? v : dmax;
        }
        printf("| %d | %lld x %d x %d | %.2f | %.2f | %.5f | %.2e |\n", g, n, k, d, info.seconds, em_iter_ms(&clk),
               info.mean_loglik, dmax);
        fflush(stdout);
        if (!one) one = m;
        else fgmm_model_free(m);
    }
    fgmm_model_free(one);
    free(x);
    return 0;
}

/* top-4 assignment (what fgmm_ivf_add needs), GPU on all rows vs CPU on a 100k-row slice */
static int assign_mode(const char* shape) {
    long long n;
    int k, d, m = 4;
    if (sscanf(shape, "%lldx%dx%d", &n, &k, &d) != 3) return 2;
    float* x = make_f32(n, d);
    FgmmModel* mod = model_from(x, FGMM_F32, n, k, d, 600.0f);
    fgmm_idx_t* lab = malloc((size_t)n * m * sizeof(fgmm_idx_t));
    float* resp = malloc((size_t)n * m * sizeof(float));
    printf("| backend | rows | K x D | top-%d assign ms | rows/s |\n|---|---:|---|---:|---:|\n", m);
    for (int b = 0; b < 2; b++) {
        fgmm_engine* e;
        if (b == 0 ? fgmm_engine_gpu_create(&e, 0, 0, FGMM_PREC_FAST) : fgmm_engine_cpu_create(&e)) return 1;
        long long rows = b == 0 ? n : (n < 100000 ? n : 100000);
        fgmm_data xd = {x, rows, d, FGMM_F32};
        e->ops->assign(e, &xd, mod, m, lab, resp, NULL); /* warm-up: data to the device */
        double t0 = now_ms();
        if (e->ops->assign(e, &xd, mod, m, lab, resp, NULL)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        double ms = now_ms() - t0;
        printf("| %s | %lld | %d x %d | %.1f | %.3g |\n", e->ops->name, rows, k, d, ms, rows / (ms / 1e3));
        fgmm_engine_destroy(e);
    }
    free(lab);
    free(resp);
    free(x);
    fgmm_model_free(mod);
    return 0;
}

/* Diagonal covariance: ms per E-step on all rows on the GPU's default path (the fused kernels on rows
 * [x, x^2] where 2d <= FGMM_FUSED_MAX_D, else cuBLAS) and on its cuBLAS fp32 path, and the CPU on a
 * 100k-row slice, with each GPU path's error against the CPU on that slice. */
static int diag_mode(const char* shape) {
    long long n;
    int k, d;
    if (sscanf(shape, "%lldx%dx%d", &n, &k, &d) != 3) return 2;
    float* x = make_f32(n, d);
    FgmmModel* iso = model_from(x, FGMM_F32, n, k, d, 600.0f);
    FgmmModel* m;
    fgmm_model_alloc(&m, k, d, FGMM_COV_DIAGONAL);
    memcpy(m->mu, iso->mu, (size_t)k * d * sizeof(float));
    memcpy(m->w, iso->w, (size_t)k * sizeof(float));
    for (size_t i = 0; i < (size_t)k * d; i++) m->var[i] = 300.0f + 60.0f * (float)(i % 11); /* 300..900 */
    fgmm_model_free(iso);
    long long ns = n < 100000 ? n : 100000;
    fgmm_stats st[3];
    for (int i = 0; i < 3; i++) fgmm_stats_alloc(&st[i], k, d, 1);
    fgmm_engine* c;
    if (fgmm_engine_cpu_create(&c)) return 1;
    fgmm_data all = {x, n, d, FGMM_F32}, slice = {x, ns, d, FGMM_F32};
    double t0 = now_ms();
    int rc = c->ops->estep(c, &slice, m, &st[1]);
    double cpu_ms = now_ms() - t0;
    fgmm_engine_destroy(c);
    if (rc) {
        fprintf(stderr, "%s\n", fgmm_get_last_error());
        return 1;
    }
    printf(
        "| N x K x D | GPU path | ms | (pass 1 + pass 2 kernels) | extra MB | err vs cpu on %lld rows (Nk, s1, s2) | cpu ms (%lld rows) |\n"
        "|---|---|---:|---|---:|---|---:|\n",
        ns, ns);
    for (int b = 0; b < 2; b++) {
        fgmm_engine* g;
        if (fgmm_engine_gpu_create(&g, 0, 0, FGMM_PREC_FAST)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        if (b == 1) fgmm_engine_gpu_set_path(g, FGMM_GPU_PATH_BLAS, 0);
        result r = time_engine(g, &all, m, &st[0], 5);
        if (!r.ok || g->ops->estep(g, &slice, m, &st[2])) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        char kern[32] = "-"; /* the fused passes' kernel times (none on cuBLAS) */
        if (r.lse_ms > 0) snprintf(kern, sizeof kern, "%.2f + %.2f", r.lse_ms, r.acc_ms);
        printf("| %lld x %d x %d | %s | %.2f | %s | %.0f | %.1e, %.1e, %.1e | %.0f |\n", n, k, d,
               b == 0 ? "default" : "cuBLAS fp32", r.ms, kern, r.extra / 1048576.0, rel(st[2].nk, st[1].nk, (size_t)k),
               rel(st[2].s1, st[1].s1, (size_t)k * d), rel(st[2].s2, st[1].s2, (size_t)k * d), cpu_ms);
        fgmm_engine_destroy(g);
    }
    for (int i = 0; i < 3; i++) fgmm_stats_free(&st[i]);
    fgmm_model_free(m);
    free(x);
    return 0;
}

/* The main table's per-shape allocations: 6 statistics, the model, the rows and the cluster centres. */
static void free_shape(fgmm_stats* st, FgmmModel* m, float* x, float* c) {
    for (int i = 0; i < 6; i++) fgmm_stats_free(&st[i]);
    fgmm_model_free(m);
    free(x);
    free(c);
}

/* --ws: one table row per shape (see the header); st: 6 statistics of k x d. */
static void ws_row(fgmm_engine* e, const fgmm_data* xd, const FgmmModel* m, fgmm_stats* st, int reps) {
    const int k = m->k, d = m->d;
    fgmm_engine_gpu_set_onepass(e, 0);
    static const int variant[5] = {FGMM_GPU_WS_OFF, FGMM_GPU_WS_PIPE, FGMM_GPU_WS_PLAIN,
                                   FGMM_GPU_WS_PIPE | FGMM_GPU_WS_LSE, FGMM_GPU_WS_OFF};
    result r[5];
    long long launches[5];
    for (int v = 0; v < 5; v++) {
        long long before = fgmm_engine_gpu_ws_launches(e);
        fgmm_engine_gpu_set_ws(e, variant[v]);
        r[v] = time_engine(e, xd, m, &st[v], reps);
        launches[v] = fgmm_engine_gpu_ws_launches(e) - before;
    }
    fgmm_engine_gpu_set_ws(e, FGMM_GPU_WS_OFF);
    fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED_EXACT, 0);
    time_engine(e, xd, m, &st[5], 1);
    fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED, 0);
    fgmm_engine_gpu_set_onepass(e, -1);
    printf("| %lld x %d x %d |", (long long)xd->n, k, d);
    for (int v = 0; v < 5; v++) printf(" %.3f (%.2f + %.2f) |", r[v].ms, r[v].lse_ms, r[v].acc_ms);
    printf(" %lld, %lld, %lld |", launches[1], launches[2], launches[3]);
    for (int v = 0; v < 4; v++)
        printf(" %.1e, %.1e |", rel(st[v].nk, st[5].nk, (size_t)k), rel(st[v].s1, st[5].s1, (size_t)k * d));
    printf("\n");
    fflush(stdout);
}

int main(int argc, char** argv) {
    main_start_ms = now_ms();
    size_t mem_mb = 2048;
    int prestart = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--mem-limit-mb")) mem_mb = (size_t)atoll(argv[i + 1]);
        prestart |= !strcmp(argv[i], "--prestart");
    }
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--stream")) return stream_mode(argv[i + 1], mem_mb);
        if (!strcmp(argv[i], "--train")) return train_mode(argv[i + 1], FGMM_COV_ISOTROPIC, prestart);
        if (!strcmp(argv[i], "--train-diag")) return train_mode(argv[i + 1], FGMM_COV_DIAGONAL, prestart);
        if (!strcmp(argv[i], "--train-gpus") && i + 2 < argc) return gpus_mode(argv[i + 1], atoi(argv[i + 2]));
        if (!strcmp(argv[i], "--assign")) return assign_mode(argv[i + 1]);
        if (!strcmp(argv[i], "--diag")) return diag_mode(argv[i + 1]);
    }
    const char* defaults[] = {"100000x1024x128",  "1000000x1024x128", "1183514x1024x100", "1000000x1024x96",
                              "10000000x1024x96", "1000000x4096x128", "1000000x256x128"};
    const char* shapes[32];
    int ns = 0, reps = 10, ws = 0;
    long long cpu_max = 100000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ws")) ws = 1;
        else if (!strcmp(argv[i], "--cpu-max-n") && i + 1 < argc) cpu_max = atoll(argv[++i]);
        else if (strcmp(argv[i], "--prestart") && ns < 32) shapes[ns++] = argv[i]; /* --prestart: --train's */
    }
    if (!ns) {
        ns = sizeof defaults / sizeof defaults[0];
        memcpy(shapes, defaults, sizeof defaults);
    }
    if (!fgmm_gpu_available()) {
        fprintf(stderr, "bench_estep: no CUDA device\n");
        return 1;
    }
    if (ws)
        printf(
            "| N x K x D | two passes ms (pass 1 + pass 2) | pass 2 warp-specialised, pipelined | plain | pipelined "
            "+ pass 1 warp-specialised | two passes again | launches (the three) | err vs exact (Nk, s1): two passes "
            "| pipelined | plain | both passes |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    else
        printf(
            "| N x K x D | fused-fp16 ms | (pass 1 + pass 2 kernels) | one-pass ms | (kernel + 0) | first call ms | "
            "extra MB | mma.sync ms | "
            "(pass 1 + pass 2) | fp16 raw rows ms | (pass 1 + pass 2) | fused-bf16 ms | fused-exact ms | blas-tiled ms | "
            "naive-NxK ms | cpu ms | err fp16 (Nk, mu_acc) | err fp16 raw | err bf16 | err naive |\n"
            "|---|---:|---|---:|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|---|---|---|\n");
    fflush(stdout);
    for (int s = 0; s < ns; s++) {
        long long n;
        int k, d;
        if (sscanf(shapes[s], "%lldx%dx%d", &n, &k, &d) != 3) {
            fprintf(stderr, "bad shape %s\n", shapes[s]);
            return 2;
        }
        /* data: 4096 clusters, spread 1.0, unit noise: responsibilities spread over a few components */
        float* x = malloc((size_t)n * d * sizeof(float));
        int nc = 4096;
        float* c = malloc((size_t)nc * d * sizeof(float));
        uint64_t seed = 88172645463325252ull;
        for (size_t i = 0; i < (size_t)nc * d; i++) c[i] = 3.0f * gauss(&seed);
#pragma omp parallel
        {
            uint64_t ls;
#pragma omp for
            for (long long i = 0; i < n; i++) {
                ls = 0x9E3779B97F4A7C15ull ^ ((uint64_t)i * 0x2545F4914F6CDD1Dull + 1);
                const float* ci = c + (size_t)(rng(&ls) % nc) * d;
                for (int j = 0; j < d; j++) x[(size_t)i * d + j] = ci[j] + gauss(&ls);
            }
        }
        FgmmModel* m;
        fgmm_model_alloc(&m, k, d, FGMM_COV_ISOTROPIC);
        for (int q = 0; q < k; q++) {
            memcpy(m->mu + (size_t)q * d, x + (size_t)(rng(&seed) % n) * d, d * sizeof(float));
            m->var[q] = 2.0f + (rng(&seed) % 1000) * 1e-3f;
            m->w[q] = 1.0f / k;
        }
        fgmm_data xd = {x, n, d, FGMM_F32};
        fgmm_stats st[6];
        for (int i = 0; i < 6; i++) fgmm_stats_alloc(&st[i], k, d, 0);
        fgmm_engine* e;
        if (fgmm_engine_gpu_create(&e, 0, 0, FGMM_PREC_FAST)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
        if (ws) {
            ws_row(e, &xd, m, st, reps);
            fgmm_engine_destroy(e);
            free_shape(st, m, x, c);
            continue;
        }
        result fast = time_engine(e, &xd, m, &st[0], reps); /* prepared fp16 rows (wgmma on sm_90) */
        fgmm_engine_gpu_set_onepass(e, 1);
        result one = time_engine(e, &xd, m, &st[2], reps); /* the same rows, one pass wherever it applies */
        fgmm_engine_gpu_set_onepass(e, -1);
        if (getenv("FGMM_BENCH_QUICK")) { /* these two columns only */
            printf("| %lld x %d x %d | %.3f | %.2f + %.2f | %.3f | %.2f + %.2f |\n", n, k, d, fast.ms, fast.lse_ms,
                   fast.acc_ms, one.ms, one.lse_ms, one.acc_ms);
            fflush(stdout);
            fgmm_engine_destroy(e);
            free_shape(st, m, x, c);
            continue;
        }
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED_MMA, 0);
        result mma = time_engine(e, &xd, m, &st[2], reps); /* the same rows, mma.sync */
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED_RAW, 0);
        result raw = time_engine(e, &xd, m, &st[5], reps); /* fp32 rows converted in the kernel */
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED_BF16, 0);
        result bf = time_engine(e, &xd, m, &st[4], reps);
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_FUSED_EXACT, 0);
        result exact = time_engine(e, &xd, m, &st[1], reps);
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_BLAS, 0);
        result tiled = time_engine(e, &xd, m, &st[2], reps);
        fgmm_engine_destroy(e); /* frees the tiles before the naive run */
        fgmm_engine_gpu_create(&e, 0, 0, FGMM_PREC_FAST);
        fgmm_engine_gpu_set_path(e, FGMM_GPU_PATH_BLAS, n);
        result naive = time_engine(e, &xd, m, &st[3], reps);
        fgmm_engine_destroy(e);
        result cpu = {0};
        if (n <= cpu_max) {
            fgmm_engine* ce;
            fgmm_engine_cpu_create(&ce);
            fgmm_stats cs;
            fgmm_stats_alloc(&cs, k, d, 0);
            cpu = time_engine(ce, &xd, m, &cs, reps < 3 ? reps : 3);
            fgmm_stats_free(&cs);
            fgmm_engine_destroy(ce);
        }
        char naive_s[32], cpu_s[32], nerr[64];
        snprintf(naive_s, sizeof naive_s, naive.ok ? "%.2f" : "oom", naive.ms);
        snprintf(cpu_s, sizeof cpu_s, cpu.ok ? "%.0f" : "-", cpu.ms);
        snprintf(nerr, sizeof nerr, naive.ok ? "%.1e" : "-", rel(st[3].nk, st[1].nk, k));
        printf(
            "| %lld x %d x %d | %.3f | %.2f + %.2f | %.3f | %.2f + %.2f | %.0f | %.0f | %.3f | %.2f + %.2f | %.3f | "
            "%.2f + %.2f | %.3f | %.3f | %.2f | %s | %s | %.1e, %.1e | %.1e, %.1e | %.1e, %.1e | %s |\n",
            n, k, d, fast.ms, fast.lse_ms, fast.acc_ms, one.ms, one.lse_ms, one.acc_ms, fast.first_ms,
            fast.extra / 1048576.0, mma.ms, mma.lse_ms, mma.acc_ms, raw.ms, raw.lse_ms, raw.acc_ms, bf.ms, exact.ms,
            tiled.ms, naive_s, cpu_s, rel(st[0].nk, st[1].nk, k), rel(st[0].s1, st[1].s1, (size_t)k * d),
            rel(st[5].nk, st[1].nk, k), rel(st[5].s1, st[1].s1, (size_t)k * d), rel(st[4].nk, st[1].nk, k),
            rel(st[4].s1, st[1].s1, (size_t)k * d), nerr);
        fflush(stdout);
        free_shape(st, m, x, c);
    }
    return 0;
}
