/* SPDX-License-Identifier: MIT */
/* bench_build.c: end-to-end IVF build time, FAISS's own CPU build next to the project's, in one
 * process on one machine (issue 15).
 *
 *   bench_build (--data FILE [--base-name NAME] [--max-rows N] | --synthetic N D) [options]
 *     --factory SPEC     an index_factory string; repeatable (default IVF<nlist>,Flat and IVF<nlist>,PQ16)
 *     --nlist N          lists of the default factories (default 1024)
 *     --methods LIST     comma-separated, of faiss, default, hard (default: all three)
 *     --seed S           the synthetic data and the project's GMM (default 1; FAISS's k-means keeps its seed)
 *     --blobs B          synthetic: Gaussian blobs in the mixture (default 4096)
 *     --backend auto|cpu|gpu   where the project trains its GMM and chooses lists (default auto: GPU if present)
 *     --gmm-iter N --kmeans-iter N   the GMM's EM and k-means iterations (default fgmm_params_init's 30, 10)
 *     --threads T        OpenMP threads for all CPU work, FAISS's included (default: all cores)
 *     --queries FILE [--gt FILE] | --nq Q   adds recall@10 and DCO at --nprobe P (default 16): queries from
 *                        a file (ground truth from --gt, else brute force), or Q more draws of the synthetic
 *                        mixture (brute-force ground truth)
 *     --cpu-slice R      the breakdown times the CPU's SOAR on the first R rows, scaled (default 1000000; 0: not)
 *
 * Builds, per factory:
 *   faiss    index_factory, faiss_Index_train (FAISS's k-means: 10 iterations on at most 256 points per list;
 *            IVF-PQ: then the product quantizer), faiss_Index_add; all on the CPU's threads
 *   default  fgmm_ivf_params_init's build: a GMM quantizer trained on all rows (10 k-means + 90 EM), SOAR
 *            spill for 1.5 lists per vector chosen by the GMM's second responsibility (fgmm_ivf_train,
 *            fgmm_ivf_add); on the GPU where present: the GMM, the nearest and SOAR lists, the
 *            responsibilities, and an 8-bit IVF-PQ's encoding; FAISS's side (PQ training, adding to the
 *            lists; other indexes' encoding) on the CPU
 *   hard     no spill: each vector in its nearest list, with the default build's GMM (fgmm_ivf_set_gmm; its
 *            train s = that GMM's training seconds + its own FAISS-side training), else a GMM of its own
 * Progress goes to stderr; stdout gets markdown tables: seconds per phase (wall, and CPU seconds of the process,
 * all threads: the measure on a machine shared with other work), entries per vector, index MB
 * (entries x (code + id) + centroids), and "vs FAISS" = FAISS's total / the build's total (> 1: faster),
 * then the pieces of the default build's add: its list choice timed alone on the GPU and on the CPU (without
 * a GPU: the SOAR lists and top-2 responsibilities in the add's one pass, fgmm_soar_assign_top2), and
 * the IVF-PQ encoding on the GPU as the add timed it.
 * Synthetic data: B blob centres ~ N(0, I), blob b's rows ~ N(centre_b, s_b^2 I) with s_b uniform in
 * [0.5, 1.5], each row's blob uniform; every row drawn from its own seeded stream (any thread count
 * gives the same data); "normal" is bench_util.h's sum of 4 uniforms.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "bench_util.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "flashgmm_spill.h"
#include "ivf_impl.h" /* the handle's add_pq_gpu_s: the add's GPU encoding time */
#include "ivf_util.h"

#define MAX_FACTORIES 8
#define K 10                        /* recall@10 */
#define PLAN_BATCH ((idx_t)1 << 20) /* fgmm_ivf_add's planning batch: the breakdown calls the same sizes */

static double t_start;

static void progress(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%7.1f s] ", now_s() - t_start);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char* what) {
    fprintf(stderr, "bench_build: %s: %s\n", what, fgmm_get_last_error());
    exit(1);
}

static void* xmalloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_build: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* ---- synthetic data: a seeded Gaussian mixture ---- */

/* The stream of item i of a kind (0 blob centres, 1 rows): bench_estep's per-row seeding. */
static uint64_t stream(uint64_t seed, int kind, idx_t i) {
    uint64_t s = (seed * 2 + (uint64_t)kind + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)i * 0x2545F4914F6CDD1Dull + 1);
    if (!s) s = 1;
    rng(&s), rng(&s); /* neighbouring items' first draws apart */
    return s;
}

/* Rows [row0, row0 + n) of the mixture into x (n x d). */
static void mixture_rows(float* x, idx_t row0, idx_t n, int d, int blobs, uint64_t seed, const float* centres,
                         const float* sigma) {
#pragma omp parallel for schedule(static)
    for (idx_t i = 0; i < n; i++) {
        uint64_t s = stream(seed, 1, row0 + i);
        int b = (int)(rng(&s) % (uint64_t)blobs);
        for (int t = 0; t < d; t++) x[(size_t)i * d + t] = centres[(size_t)b * d + t] + sigma[b] * gauss(&s);
    }
}

/* ---- one build ---- */

typedef struct build_row {
    char method[24], factory[64], where[48];
    double train_s, add_s, entries, bytes, recall, dco;
    double train_cpu, add_cpu; /* the same in CPU seconds of the process (all threads) */
    double pq_gpu_s;           /* the add's IVF-PQ encoding on the GPU and appending (0: FAISS's add_core encoded) */
} build_row;

typedef struct bench {
    idx_t n, nq;
    int d, nprobe, gt_k;
    const float *x, *xq;
    const int32_t* gt;
    uint64_t seed;
    FgmmBackend backend;
    int gmm_iter, kmeans_iter;
} bench;

static void project_params(const bench* b, FgmmAssignRule rule, FgmmIvfParams* p) {
    fgmm_ivf_params_init(p);
    p->gmm.seed = b->seed;
    p->gmm.backend = b->backend;
    if (b->gmm_iter >= 0) p->gmm.niter = b->gmm_iter;
    if (b->kmeans_iter >= 0) p->gmm.kmeans_iter = b->kmeans_iter;
    if (rule == FGMM_ASSIGN_HARD) p->rule = FGMM_ASSIGN_HARD; /* else the default's SOAR */
}

/* Lists are chosen on the GPU under fgmm_ivf_add's rule (flashgmm_ivf.h). */
static int lists_on_gpu(const bench* b) { return b->backend != FGMM_BACKEND_CPU && fgmm_gpu_available(); }

/* recall@10 and mean DCO at nprobe through fgmm_ivf_search (which removes spilled copies). */
static void search(const bench* b, const FgmmIvf* ivf, build_row* r) {
    if (!b->nq) return;
    idx_t* lab = xmalloc((size_t)b->nq * K * sizeof(idx_t));
    float* dist = xmalloc((size_t)b->nq * K * sizeof(float));
    int64_t* dco = xmalloc((size_t)b->nq * sizeof(int64_t));
    if (fgmm_ivf_search(ivf, b->nq, b->xq, K, b->nprobe, dist, lab, dco)) die("search");
    double s = 0;
    for (idx_t i = 0; i < b->nq; i++) s += (double)dco[i];
    r->recall = fgmm_recall(b->nq, K, lab, b->gt_k, b->gt);
    r->dco = s / b->nq;
    free(lab);
    free(dist);
    free(dco);
}

static void finish(const bench* b, FaissIndex* index, build_row* r) {
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(index);
    const char* codes = strchr(r->factory, ',');
    r->entries = (double)faiss_Index_ntotal(index) / (double)b->n;
    r->bytes = codes ? index_bytes(index, codes + 1, (int)faiss_IndexIVF_nlist(ivf), b->d) : -1;
    progress("%s %s: train %.2f s (%.2f CPU-s), add %.2f s (%.2f CPU-s), %.3f entries/vector", r->method, r->factory,
             r->train_s, r->train_cpu, r->add_s, r->add_cpu, r->entries);
}

static FaissIndex* new_index(const bench* b, const char* spec) {
    FaissIndex* index = NULL;
    if (faiss_index_factory(&index, b->d, spec, METRIC_L2)) die(spec);
    if (!faiss_IndexIVF_cast(index)) {
        fprintf(stderr, "bench_build: %s is not an IVF index\n", spec);
        exit(2);
    }
    return index;
}

static void build_faiss(const bench* b, const char* spec, build_row* r) {
    snprintf(r->method, sizeof r->method, "faiss");
    snprintf(r->factory, sizeof r->factory, "%s", spec);
    snprintf(r->where, sizeof r->where, "cpu (%d threads)", omp_get_max_threads());
    FaissIndex* index = new_index(b, spec);
    progress("faiss %s: training (FAISS k-means on its sample)", spec);
    double t0 = now_s(), c0 = cpu_s();
    if (faiss_Index_train(index, b->n, b->x)) die("faiss train");
    r->train_s = now_s() - t0, r->train_cpu = cpu_s() - c0;
    progress("faiss %s: adding %lld vectors", spec, (long long)b->n);
    t0 = now_s(), c0 = cpu_s();
    if (faiss_Index_add(index, b->n, b->x)) die("faiss add");
    r->add_s = now_s() - t0, r->add_cpu = cpu_s() - c0;
    finish(b, index, r);
    if (b->nq) { /* searched through the same code as the project's builds */
        FgmmIvfParams p;
        project_params(b, FGMM_ASSIGN_HARD, &p);
        FgmmIvf* ivf = NULL;
        if (fgmm_ivf_wrap(index, &p, &ivf)) die("wrap");
        search(b, ivf, r);
        fgmm_ivf_free(ivf);
    }
    faiss_Index_free(index);
}

/* The project's build with rule (SOAR by default, or HARD); *gmm: the GMM to reuse (NULL: train one, and
 * keep a copy there), *gmm_s its training seconds, *gmm_where its backend. */
static void build_project(const bench* b, const char* spec, FgmmAssignRule rule, FgmmModel** gmm, double* gmm_s,
                          const char** gmm_where, build_row* r) {
    FgmmIvfParams p;
    project_params(b, rule, &p);
    snprintf(r->method, sizeof r->method, rule == FGMM_ASSIGN_HARD ? "hard" : "default");
    snprintf(r->factory, sizeof r->factory, "%s", spec);
    FaissIndex* index = new_index(b, spec);
    FgmmIvf* ivf = NULL;
    if (fgmm_ivf_wrap(index, &p, &ivf)) die("wrap");
    double t0 = now_s(), c0 = cpu_s();
    if (!*gmm) {
        progress("%s %s: training the GMM on %lld rows", r->method, spec, (long long)b->n);
        FgmmTrainInfo info;
        if (fgmm_ivf_train(ivf, b->n, b->x, &info)) die("fgmm_ivf_train");
        r->train_s = now_s() - t0, r->train_cpu = cpu_s() - c0;
        *gmm_s = info.seconds;
        *gmm_where = info.backend;
        progress("%s %s: GMM on the %s, %d k-means + %d EM iterations, %.2f s (FAISS side: %.2f s)", r->method, spec,
                 info.backend, info.kmeans_iterations, info.em_iterations, info.seconds, r->train_s - info.seconds);
        const FgmmModel* m = fgmm_ivf_model(ivf);
        if (fgmm_model_new(gmm, fgmm_model_k(m), b->d, fgmm_model_covariance(m), fgmm_model_means(m),
                           fgmm_model_variances(m), fgmm_model_weights(m)))
            die("model copy");
    } else {
        progress("%s %s: installing the default build's GMM", r->method, spec);
        if (fgmm_ivf_set_gmm(ivf, *gmm, b->n, b->x)) die("fgmm_ivf_set_gmm");
        r->train_s = *gmm_s + (now_s() - t0), r->train_cpu = -1; /* the GMM's CPU seconds are the default's */
    }
    snprintf(r->where, sizeof r->where, "GMM %s, lists %s", *gmm_where, lists_on_gpu(b) ? "gpu" : "cpu");
    progress("%s %s: adding %lld vectors", r->method, spec, (long long)b->n);
    t0 = now_s(), c0 = cpu_s();
    if (fgmm_ivf_add(ivf, b->n, b->x, NULL, NULL)) die("fgmm_ivf_add");
    r->add_s = now_s() - t0, r->add_cpu = cpu_s() - c0;
    r->pq_gpu_s = ivf->add_pq_gpu_s;
    finish(b, index, r);
    search(b, ivf, r);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
}

/* ---- the default add's list choice, timed alone ---- */

typedef struct breakdown {
    double soar_gpu, soar_cpu, resp;
    idx_t cpu_rows;
    int fused; /* soar_cpu includes the top-2 responsibilities (resp not timed) */
    const char* resp_where;
} breakdown;

/* What fgmm_ivf_add chooses lists with, in its batch sizes, over all rows: SOAR on the GPU (where one is
 * used), on the CPU (the first cpu_rows rows, scaled to all), and the top-2 responsibilities. */
static void time_list_choice(const bench* b, const FgmmModel* gmm, idx_t cpu_rows, breakdown* out) {
    FgmmIvfParams p;
    project_params(b, FGMM_ASSIGN_SOAR, &p);
    int k = fgmm_model_k(gmm), d = b->d;
    const float* c = fgmm_model_means(gmm);
    idx_t nb = b->n < PLAN_BATCH ? b->n : PLAN_BATCH;
    idx_t *prim = xmalloc((size_t)nb * sizeof(idx_t)), *sp = xmalloc((size_t)nb * sizeof(idx_t));
    idx_t* lab = xmalloc((size_t)nb * 2 * sizeof(idx_t));
    float *d1 = xmalloc((size_t)nb * sizeof(float)), *d2 = xmalloc((size_t)nb * sizeof(float));
    float* resp = xmalloc((size_t)nb * 2 * sizeof(float));
    memset(out, 0, sizeof *out);
    out->soar_gpu = -1;
    double t0;
    if (lists_on_gpu(b)) {
        progress("breakdown: SOAR lists on the GPU, %lld rows", (long long)b->n);
        t0 = now_s();
        for (idx_t i0 = 0; i0 < b->n; i0 += nb) {
            idx_t m = b->n - i0 < nb ? b->n - i0 : nb;
            if (fgmm_soar_assign_gpu(p.gmm.gpu_device, m, d, b->x + (size_t)i0 * d, k, c, p.soar_lambda, prim, sp, d1,
                                     d2))
                die("fgmm_soar_assign_gpu");
        }
        out->soar_gpu = now_s() - t0;
    }
    out->cpu_rows = cpu_rows < b->n ? cpu_rows : b->n;
    /* the CPU add's one pass (fgmm_soar_assign_top2) where the lists are chosen on the CPU */
    out->fused = !lists_on_gpu(b) && fgmm_model_covariance(gmm) == FGMM_COV_ISOTROPIC;
    if (out->cpu_rows > 0) {
        progress("breakdown: SOAR lists%s on the CPU, %lld rows", out->fused ? " and top-2 responsibilities" : "",
                 (long long)out->cpu_rows);
        t0 = now_s();
        for (idx_t i0 = 0; i0 < out->cpu_rows; i0 += nb) {
            idx_t m = out->cpu_rows - i0 < nb ? out->cpu_rows - i0 : nb;
            const float* xb = b->x + (size_t)i0 * d;
            if (out->fused ? fgmm_soar_assign_top2(gmm, m, xb, p.soar_lambda, prim, sp, d1, d2, lab, resp)
                           : fgmm_soar_assign(m, d, xb, k, c, p.soar_lambda, prim, sp, d1, d2))
                die("fgmm_soar_assign");
        }
        out->soar_cpu = (now_s() - t0) * (double)b->n / (double)out->cpu_rows;
    }
    if (out->fused) goto done;
    progress("breakdown: top-2 responsibilities, %lld rows", (long long)b->n);
    t0 = now_s();
    for (idx_t i0 = 0; i0 < b->n; i0 += nb) {
        idx_t m = b->n - i0 < nb ? b->n - i0 : nb;
        if (fgmm_assign_topm(gmm, &p.gmm, m, FGMM_F32, b->x + (size_t)i0 * d, 2, lab, resp)) die("fgmm_assign_topm");
    }
    out->resp = now_s() - t0;
    out->resp_where = p.gmm.backend == FGMM_BACKEND_CPU || !fgmm_gpu_available() ? "cpu" : "gpu";
done:
    free(prim);
    free(sp);
    free(lab);
    free(d1);
    free(d2);
    free(resp);
}

/* ---- main ---- */

static void print_tables(const bench* b, const build_row* rows, int nr, const breakdown* bd, int have_bd) {
    printf(
        "\n| method | factory | where | train s | add s | total s | train CPU-s | add CPU-s | entries/vector | index MB "
        "| vs FAISS |%s\n",
        b->nq ? " recall@10 | DCO |" : "");
    printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|%s\n", b->nq ? "---:|---:|" : "");
    for (int i = 0; i < nr; i++) {
        const build_row* r = &rows[i];
        double ref = -1;
        for (int j = 0; j < nr; j++)
            if (!strcmp(rows[j].method, "faiss") && !strcmp(rows[j].factory, r->factory))
                ref = rows[j].train_s + rows[j].add_s;
        double total = r->train_s + r->add_s;
        char vs[16] = "-", mb[16] = "-", tc[16] = "-";
        if (ref > 0) snprintf(vs, sizeof vs, "%.2f", ref / total);
        if (r->bytes > 0) snprintf(mb, sizeof mb, "%.0f", r->bytes / 1e6);
        if (r->train_cpu >= 0) snprintf(tc, sizeof tc, "%.2f", r->train_cpu);
        printf("| %s | %s | %s | %.2f | %.2f | %.2f | %s | %.2f | %.3f | %s | %s |", r->method, r->factory, r->where,
               r->train_s, r->add_s, total, tc, r->add_cpu, r->entries, mb, vs);
        if (b->nq) printf(" %.4f | %.0f |", r->recall, r->dco);
        printf("\n");
    }
    if (!have_bd) return;
    printf(
        "\nThe default build's add, %lld rows: its list choice timed alone (batches of 2^20 rows, as the add "
        "runs it)\n\n| piece | where | s |\n|---|---|---:|\n",
        (long long)b->n);
    if (bd->soar_gpu >= 0) printf("| nearest + SOAR lists (fgmm_soar_assign_gpu) | gpu | %.2f |\n", bd->soar_gpu);
    if (bd->cpu_rows > 0)
        printf("| nearest + SOAR lists%s | cpu (%d threads; %lld rows timed, scaled) | %.2f |\n",
               bd->fused ? " + top-2 responsibilities (fgmm_soar_assign_top2)" : " (fgmm_soar_assign)",
               omp_get_max_threads(), (long long)bd->cpu_rows, bd->soar_cpu);
    if (!bd->fused) printf("| top-2 responsibilities (the spill selector) | %s | %.2f |\n", bd->resp_where, bd->resp);
    for (int i = 0; i < nr; i++) {
        const build_row* r = &rows[i];
        if (strcmp(r->method, "default")) continue;
        if (r->pq_gpu_s > 0) /* timed inside the add: encoding chunks on the GPU, appending the codes */
            printf("| PQ encode + append (GPU) (%s) | gpu | %.2f |\n", r->factory, r->pq_gpu_s);
        printf("| rest of the add: threshold, %s (%s) | cpu | %.2f |\n",
               r->pq_gpu_s > 0 ? "entry bookkeeping" : "copies, FAISS's add_core", r->factory,
               r->add_s - (bd->soar_gpu >= 0 ? bd->soar_gpu : bd->soar_cpu) - bd->resp - r->pq_gpu_s);
    }
}

int main(int argc, char** argv) {
    const char *data = NULL, *bname = NULL, *qfile = NULL, *gtfile = NULL, *methods = "faiss,default,hard";
    const char* factories[MAX_FACTORIES];
    char def_f[2][32];
    int nf = 0, nlist = 1024, blobs = 4096, threads = 0, synth_d = 0;
    idx_t max_rows = 0, synth_n = 0, nq_synth = 0, cpu_slice = 1000000;
    bench b = {0};
    b.seed = 1, b.nprobe = 16, b.gmm_iter = -1, b.kmeans_iter = -1, b.backend = FGMM_BACKEND_AUTO;
    for (int i = 1; i < argc; i++) {
        const char* o = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(o, "--synthetic") && i + 2 < argc) {
            synth_n = atoll(argv[i + 1]), synth_d = atoi(argv[i + 2]), i += 2;
            continue;
        }
        i++;
        if (!strcmp(o, "--data")) data = v;
        else if (!strcmp(o, "--base-name")) bname = v;
        else if (!strcmp(o, "--max-rows")) max_rows = atoll(v);
        else if (!strcmp(o, "--factory") && nf < MAX_FACTORIES) factories[nf++] = v;
        else if (!strcmp(o, "--nlist")) nlist = atoi(v);
        else if (!strcmp(o, "--methods")) methods = v;
        else if (!strcmp(o, "--seed")) b.seed = (uint64_t)atoll(v);
        else if (!strcmp(o, "--blobs")) blobs = atoi(v);
        else if (!strcmp(o, "--backend"))
            b.backend = !strcmp(v, "cpu") ? FGMM_BACKEND_CPU : !strcmp(v, "gpu") ? FGMM_BACKEND_GPU : FGMM_BACKEND_AUTO;
        else if (!strcmp(o, "--gmm-iter")) b.gmm_iter = atoi(v);
        else if (!strcmp(o, "--kmeans-iter")) b.kmeans_iter = atoi(v);
        else if (!strcmp(o, "--threads")) threads = atoi(v);
        else if (!strcmp(o, "--queries")) qfile = v;
        else if (!strcmp(o, "--gt")) gtfile = v;
        else if (!strcmp(o, "--nq")) nq_synth = atoll(v);
        else if (!strcmp(o, "--nprobe")) b.nprobe = atoi(v);
        else if (!strcmp(o, "--cpu-slice")) cpu_slice = atoll(v);
        else {
            fprintf(stderr, "bench_build: unknown option %s (see the header of bench/bench_build.c)\n", o);
            return 2;
        }
    }
    if (!data == !synth_n || (synth_n && (synth_n < 1 || synth_d < 1 || blobs < 1)) || nlist < 1 || b.nprobe < 1) {
        fprintf(stderr, "usage: bench_build (--data FILE | --synthetic N D) [--factory SPEC]... [--nlist N] ...\n");
        return 2;
    }
    int want_faiss = strstr(methods, "faiss") != NULL, want_default = strstr(methods, "default") != NULL,
        want_hard = strstr(methods, "hard") != NULL;
    if (!nf) {
        snprintf(def_f[0], sizeof def_f[0], "IVF%d,Flat", nlist);
        snprintf(def_f[1], sizeof def_f[1], "IVF%d,PQ16", nlist);
        factories[0] = def_f[0], factories[1] = def_f[1], nf = 2;
    }
    if (threads > 0) omp_set_num_threads(threads);
    t_start = now_s();

    float *x = NULL, *xq = NULL;
    int32_t* gt = NULL;
    FgmmVecs vb, vq, vg;
    if (synth_n) {
        b.n = synth_n, b.d = synth_d;
        progress("synthetic: %lld x %d rows from %d blobs (seed %llu)", (long long)b.n, b.d, blobs,
                 (unsigned long long)b.seed);
        float* centres = xmalloc((size_t)blobs * b.d * sizeof(float));
        float* sigma = xmalloc((size_t)blobs * sizeof(float));
        for (int j = 0; j < blobs; j++) {
            uint64_t s = stream(b.seed, 0, j);
            for (int t = 0; t < b.d; t++) centres[(size_t)j * b.d + t] = gauss(&s);
            sigma[j] = 0.5f + (rng(&s) >> 40) * (1.0f / 16777216.0f);
        }
        x = xmalloc((size_t)b.n * b.d * sizeof(float));
        mixture_rows(x, 0, b.n, b.d, blobs, b.seed, centres, sigma);
        if (nq_synth > 0) {
            b.nq = nq_synth;
            xq = xmalloc((size_t)b.nq * b.d * sizeof(float));
            mixture_rows(xq, b.n, b.nq, b.d, blobs, b.seed, centres, sigma); /* rows past the base's */
        }
        free(centres);
        free(sigma);
    } else {
        progress("reading %s", data);
        if (fgmm_vecs_read(data, bname, max_rows, &vb)) die(data);
        if (!(x = vecs_to_float(&vb))) die("out of memory");
        b.n = vb.n, b.d = vb.d;
        fgmm_vecs_free(&vb);
        if (qfile) {
            if (fgmm_vecs_read(qfile, NULL, 0, &vq)) die(qfile);
            if (vq.d != b.d) {
                fprintf(stderr, "bench_build: queries have d = %d, base d = %d\n", vq.d, b.d);
                return 1;
            }
            if (!(xq = vecs_to_float(&vq))) die("out of memory");
            b.nq = vq.n;
            fgmm_vecs_free(&vq);
        }
    }
    b.x = x, b.xq = xq;
    if (b.nq && gtfile) {
        if (fgmm_vecs_read(gtfile, NULL, 0, &vg) || vg.dtype != FGMM_I32 || vg.n < b.nq || vg.d < K) die("--gt");
        gt = vg.data, b.gt_k = vg.d;
    } else if (b.nq) {
        progress("ground truth: %lld queries by brute force", (long long)b.nq);
        gt = ground_truth(b.x, b.n, b.xq, b.nq, b.d);
        b.gt_k = GT_K;
    }
    b.gt = gt;
    double cuda_start = -1;
    if (lists_on_gpu(&b)) { /* the process's CUDA start-up (context, cuBLAS), paid once, outside the tables */
        float one[2] = {0.0f, 1.0f};
        idx_t lab[2];
        double t0 = now_s();
        if (fgmm_soar_assign_gpu(0, 2, 1, one, 2, one, 1.0f, lab, NULL, NULL, NULL)) die("CUDA start-up");
        cuda_start = now_s() - t0;
    }
    printf(
        "bench_build: %s, %lld x %d, %d CPU threads, GPU %s; FAISS k-means with its defaults; project: "
        "fgmm_ivf_params_init (GMM backend %s)\n",
        synth_n ? "synthetic mixture" : data, (long long)b.n, b.d, omp_get_max_threads(),
        fgmm_gpu_available() ? "present" : "absent (the project's build runs on the CPU)",
        b.backend == FGMM_BACKEND_CPU   ? "cpu"
        : b.backend == FGMM_BACKEND_GPU ? "gpu"
                                        : "auto");
    if (cuda_start >= 0) printf("CUDA start-up before the builds (not in the tables): %.2f s\n", cuda_start);
    fflush(stdout);

    build_row rows[3 * MAX_FACTORIES];
    int nr = 0, have_bd = 0;
    breakdown bd;
    for (int f = 0; f < nf; f++) {
        FgmmModel* gmm = NULL;
        double gmm_s = 0;
        const char* gmm_where = "-";
        if (want_faiss) build_faiss(&b, factories[f], &rows[nr++]);
        if (want_default) build_project(&b, factories[f], FGMM_ASSIGN_SOAR, &gmm, &gmm_s, &gmm_where, &rows[nr++]);
        if (want_default && !have_bd) {
            time_list_choice(&b, gmm, cpu_slice, &bd);
            have_bd = 1;
        }
        if (want_hard) build_project(&b, factories[f], FGMM_ASSIGN_HARD, &gmm, &gmm_s, &gmm_where, &rows[nr++]);
        fgmm_model_free(gmm);
    }
    print_tables(&b, rows, nr, &bd, have_bd);
    progress("done");
    free(x);
    free(xq);
    free(gt);
    return 0;
}
