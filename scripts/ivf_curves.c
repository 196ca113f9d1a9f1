/* ivf_curves.c: recall@10 vs distance computations (DCO) for IVF coarse quantizers.
 *
 *   ivf_curves --data FILE [options]
 *     --base-name NAME     HDF5 dataset of the base vectors (default: train, then dataset)
 *     --query-name NAME    HDF5 dataset of the queries in the same file (default: test, then query)
 *     --queries FILE       queries from another file (fvecs/bvecs/h5)
 *     --holdout Q          no query set: hold out Q random base rows as queries
 *     --normalize          L2-normalise base and queries (angular data sets)
 *     --nlist N            lists (default 1024)
 *     --codes Flat|PQm     IVF-Flat or IVF-PQ with m bytes (default Flat)
 *     --nprobes a,b,...    (default 1,2,4,8,16,32,64,128)
 *     --gmm-iter N --kmeans-iter N --backend auto|cpu|gpu --max-rows N
 *     --out DIR            writes DIR/curves.csv, DIR/summary.md, caches DIR/gt100.ivecs
 *
 * Methods, all at the same nlist:
 *   kmeans      FAISS's own IVF training (k-means) and add
 *   gmm-hard    GMM means, each vector in its nearest list
 *   gmm-tau     GMM means, vector in every list with r_ik > 1/nlist (at most 4)
 *   kmeans-top2 FAISS k-means centroids, each vector in its 2 nearest lists (hard spill)
 * recall@10 = |top-10 returned ∩ true top-10| / 10; DCO = nlist + sizes of the probed lists.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <faiss/c_api/index_factory_c.h>

#include "flashgmm_io.h"
#include "flashgmm_ivf.h"

#define GT_K 100
#define K 10
#define MAX_PROBES 32

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void die(const char* what) {
    fprintf(stderr, "ivf_curves: %s: %s\n", what, fgmm_get_last_error());
    exit(1);
}

static float* to_float(FgmmVecs* v) {
    float* f = malloc((size_t)v->n * v->d * sizeof(float));
    if (!f) die("out of memory");
    for (size_t i = 0; i < (size_t)v->n * v->d; i++)
        f[i] = v->dtype == FGMM_U8 ? ((uint8_t*)v->data)[i] : ((float*)v->data)[i];
    return f;
}

static void normalize(float* x, idx_t n, int d) {
    for (idx_t i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
        for (int j = 0; j < d; j++) x[i * d + j] *= inv;
    }
}

/* Exact top-GT_K by brute force: BLAS blocks of queries x base, partial insertion sort. */
static int32_t* ground_truth(const float* xb, idx_t nb, const float* xq, idx_t nq, int d) {
    int32_t* gt = malloc((size_t)nq * GT_K * sizeof(int32_t));
    float* bn = malloc(nb * sizeof(float));
    const idx_t QB = 256, BB = 16384;
    float* g = malloc((size_t)QB * BB * sizeof(float));
    float* bd = malloc((size_t)nq * GT_K * sizeof(float));
    for (idx_t i = 0; i < nb; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)xb[i * d + j] * xb[i * d + j];
        bn[i] = (float)s;
    }
    for (size_t i = 0; i < (size_t)nq * GT_K; i++) bd[i] = INFINITY, gt[i] = -1;
    for (idx_t q0 = 0; q0 < nq; q0 += QB) {
        idx_t qb = nq - q0 < QB ? nq - q0 : QB;
        for (idx_t b0 = 0; b0 < nb; b0 += BB) {
            idx_t bb = nb - b0 < BB ? nb - b0 : BB;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, bb, d, -2.0f, xq + q0 * d, d, xb + b0 * d, d, 0.0f, g, bb);
#pragma omp parallel for
            for (idx_t i = 0; i < qb; i++) {
                float* dl = bd + (q0 + i) * GT_K; /* (cblas.h brings complex.h's I) */
                int32_t* il = gt + (q0 + i) * GT_K;
                for (idx_t j = 0; j < bb; j++) {
                    float v = g[i * bb + j] + bn[b0 + j]; /* ||q||^2 omitted: same for the row */
                    if (v >= dl[GT_K - 1]) continue;
                    int p = GT_K - 1;
                    while (p > 0 && dl[p - 1] > v) dl[p] = dl[p - 1], il[p] = il[p - 1], p--;
                    dl[p] = v, il[p] = (int32_t)(b0 + j);
                }
            }
        }
    }
    free(bn); free(g); free(bd);
    return gt;
}

typedef struct curve {
    const char* name;
    int np;
    double recall[MAX_PROBES], dco[MAX_PROBES];
    double train_s, add_s, inflation;
} curve;

static void sweep(curve* c, const FgmmIvf* ivf, const float* xq, idx_t nq, const int32_t* gt, const int* probes, int np) {
    idx_t* lab = malloc((size_t)nq * K * sizeof(idx_t));
    float* dist = malloc((size_t)nq * K * sizeof(float));
    int64_t* dco = malloc(nq * sizeof(int64_t));
    c->np = np;
    c->inflation = fgmm_ivf_inflation(ivf);
    for (int p = 0; p < np; p++) {
        if (fgmm_ivf_search(ivf, nq, xq, K, probes[p], dist, lab, dco)) die("search");
        double sd = 0;
        for (idx_t i = 0; i < nq; i++) sd += dco[i];
        c->recall[p] = fgmm_recall(nq, K, lab, GT_K, gt);
        c->dco[p] = sd / nq;
    }
    free(lab); free(dist); free(dco);
}

/* DCO at which the curve reaches recall r (log-linear interpolation); -1 if never. */
static double dco_at(const curve* c, double r) {
    for (int p = 0; p < c->np; p++) {
        if (c->recall[p] < r) continue;
        if (p == 0) return c->dco[0];
        double t = (r - c->recall[p - 1]) / (c->recall[p] - c->recall[p - 1]);
        return exp(log(c->dco[p - 1]) + t * (log(c->dco[p]) - log(c->dco[p - 1])));
    }
    return -1;
}

/* recall at DCO budget b (log-linear interpolation; -1 outside the swept range). */
static double recall_at(const curve* c, double b) {
    for (int p = 1; p < c->np; p++)
        if (c->dco[p] >= b && c->dco[p - 1] <= b) {
            double t = (log(b) - log(c->dco[p - 1])) / (log(c->dco[p]) - log(c->dco[p - 1]));
            return c->recall[p - 1] + t * (c->recall[p] - c->recall[p - 1]);
        }
    return -1;
}

int main(int argc, char** argv) {
    const char *data = NULL, *bname = NULL, *qname = NULL, *qfile = NULL, *out = "results", *codes = "Flat";
    int nlist = 1024, norm = 0, gmm_iter = 30, km_iter = 10, probes[MAX_PROBES], np = 0;
    idx_t holdout = 0, max_rows = 0;
    FgmmBackend backend = FGMM_BACKEND_AUTO;
    const char* probe_s = "1,2,4,8,16,32,64,128";
    for (int i = 1; i < argc; i++) {
        const char* o = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(o, "--normalize")) { norm = 1; continue; }
        i++;
        if (!strcmp(o, "--data")) data = v;
        else if (!strcmp(o, "--base-name")) bname = v;
        else if (!strcmp(o, "--query-name")) qname = v;
        else if (!strcmp(o, "--queries")) qfile = v;
        else if (!strcmp(o, "--holdout")) holdout = atoll(v);
        else if (!strcmp(o, "--nlist")) nlist = atoi(v);
        else if (!strcmp(o, "--codes")) codes = v;
        else if (!strcmp(o, "--nprobes")) probe_s = v;
        else if (!strcmp(o, "--gmm-iter")) gmm_iter = atoi(v);
        else if (!strcmp(o, "--kmeans-iter")) km_iter = atoi(v);
        else if (!strcmp(o, "--max-rows")) max_rows = atoll(v);
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--backend")) backend = !strcmp(v, "cpu") ? FGMM_BACKEND_CPU : !strcmp(v, "gpu") ? FGMM_BACKEND_GPU : FGMM_BACKEND_AUTO;
        else { fprintf(stderr, "ivf_curves: unknown option %s (see the header of scripts/ivf_curves.c)\n", o); return 2; }
    }
    if (!data) { fprintf(stderr, "usage: ivf_curves --data FILE [--nlist N] [--out DIR] ...\n"); return 2; }
    for (const char* s = probe_s; *s && np < MAX_PROBES; s = strchr(s, ',') ? strchr(s, ',') + 1 : s + strlen(s))
        if (atoi(s) > 0) probes[np++] = atoi(s);

    FgmmVecs vb, vq;
    if (fgmm_vecs_read(data, bname, max_rows, &vb)) die(data);
    float* xb = to_float(&vb);
    idx_t nb = vb.n, nq;
    int d = vb.d;
    float* xq;
    if (holdout > 0) { /* the last `holdout` rows of a seeded shuffle become the queries */
        uint64_t s = 42;
        for (idx_t i = nb - 1; i > 0; i--) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            idx_t j = (idx_t)((s >> 33) % (uint64_t)(i + 1));
            for (int t = 0; t < d; t++) { float tmp = xb[i * d + t]; xb[i * d + t] = xb[j * d + t]; xb[j * d + t] = tmp; }
        }
        nq = holdout;
        nb -= holdout;
        xq = malloc((size_t)nq * d * sizeof(float));
        memcpy(xq, xb + (size_t)nb * d, (size_t)nq * d * sizeof(float));
    } else {
        const char* qn = qname;
        if (!qfile && !qn) { /* ann-benchmarks: test; FLANN: query */
            qn = "test";
            if (fgmm_vecs_read(data, qn, 1, &vq)) qn = "query";
            else fgmm_vecs_free(&vq);
        }
        if (fgmm_vecs_read(qfile ? qfile : data, qn, 0, &vq)) die("queries");
        if (vq.d != d) { fprintf(stderr, "ivf_curves: queries have d = %d, base d = %d\n", vq.d, d); return 1; }
        xq = to_float(&vq);
        nq = vq.n;
        fgmm_vecs_free(&vq);
    }
    if (norm) normalize(xb, nb, d), normalize(xq, nq, d);
    mkdir(out, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/gt100.ivecs", out);
    int32_t* gt = NULL;
    FgmmVecs gv;
    if (fgmm_vecs_read(path, NULL, 0, &gv) == 0 && gv.n == nq && gv.d == GT_K && gv.dtype == FGMM_I32) {
        gt = gv.data;
        printf("ground truth: cached %s\n", path);
    } else {
        double t0 = now_s();
        gt = ground_truth(xb, nb, xq, nq, d);
        FgmmVecs w = {gt, nq, GT_K, FGMM_I32};
        fgmm_vecs_write(path, &w);
        printf("ground truth: top-%d of %lld queries by brute force, %.1f s\n", GT_K, (long long)nq, now_s() - t0);
    }
    printf("base %lld x %d, %lld queries, nlist %d, IVF%d,%s%s\n", (long long)nb, d, (long long)nq, nlist, nlist, codes,
           norm ? ", L2-normalised" : "");

    char spec[64];
    snprintf(spec, sizeof spec, "IVF%d,%s", nlist, codes);
    curve cv[4] = {{.name = "kmeans"}, {.name = "gmm-hard"}, {.name = "gmm-tau"}, {.name = "kmeans-top2"}};
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.gmm.niter = gmm_iter;
    p.gmm.kmeans_iter = km_iter;
    p.gmm.backend = backend;
    FgmmTrainInfo info;
    for (int m = 0; m < 4; m++) {
        FaissIndex* index = NULL;
        if (faiss_index_factory(&index, d, spec, METRIC_L2)) die("faiss_index_factory");
        p.rule = m == 1 ? FGMM_ASSIGN_HARD : m == 2 ? FGMM_ASSIGN_TAU : m == 3 ? FGMM_ASSIGN_TOPM : FGMM_ASSIGN_HARD;
        p.max_assign = m == 3 ? 2 : 4;
        FgmmIvf* ivf = NULL;
        if (fgmm_ivf_wrap(index, &p, &ivf)) die("wrap");
        static FgmmModel* gmm = NULL; /* trained once, shared by gmm-hard and gmm-tau */
        static double kmeans_train_s, gmm_train_s;
        double t0 = now_s();
        if (m == 0 || m == 3) {
            if (faiss_Index_train(index, nb, xb)) die("faiss train");
            if (m == 0) kmeans_train_s = now_s() - t0;
            cv[m].train_s = kmeans_train_s;
        } else if (!gmm) {
            if (fgmm_ivf_train(ivf, nb, xb, &info)) die("gmm train");
            gmm_train_s = now_s() - t0;
            printf("gmm: %s backend, %d k-means + %d EM iterations, mean log-likelihood %.4f, %.1f s\n", info.backend,
                   info.kmeans_iterations, info.em_iterations, info.mean_loglik, gmm_train_s);
            FgmmModel* copy = NULL;
            const FgmmModel* mm = fgmm_ivf_model(ivf);
            fgmm_model_new(&copy, fgmm_model_k(mm), d, fgmm_model_covariance(mm), fgmm_model_means(mm),
                           fgmm_model_variances(mm), fgmm_model_weights(mm));
            gmm = copy;
            cv[m].train_s = gmm_train_s;
        } else {
            if (fgmm_ivf_set_gmm(ivf, gmm, nb, xb)) die("set gmm");
            cv[m].train_s = gmm_train_s;
        }
        t0 = now_s();
        if (fgmm_ivf_add(ivf, nb, xb, NULL, NULL)) die("add");
        cv[m].add_s = now_s() - t0;
        sweep(&cv[m], ivf, xq, nq, gt, probes, np);
        printf("%-12s train %.1f s, add %.1f s, %.3f lists/vector\n", cv[m].name, cv[m].train_s, cv[m].add_s, cv[m].inflation);
        fflush(stdout);
        fgmm_ivf_free(ivf);
        faiss_Index_free(index);
    }

    snprintf(path, sizeof path, "%s/curves.csv", out);
    FILE* f = fopen(path, "w");
    fprintf(f, "method,nprobe,recall10,dco\n");
    for (int m = 0; m < 4; m++)
        for (int q = 0; q < np; q++) fprintf(f, "%s,%d,%.5f,%.1f\n", cv[m].name, probes[q], cv[m].recall[q], cv[m].dco[q]);
    fclose(f);

    snprintf(path, sizeof path, "%s/summary.md", out);
    f = fopen(path, "w");
    FILE* outs[2] = {stdout, f};
    for (int o = 0; o < 2; o++) {
        FILE* w = outs[o];
        fprintf(w, "\n%s: %lld x %d, %lld queries, %s, recall@10 vs DCO (DCO = nlist + scanned list entries)\n\n", data,
                (long long)nb, d, (long long)nq, spec);
        fprintf(w, "| method | lists/vector | train s | DCO@0.80 | DCO@0.90 | DCO@0.95 | vs kmeans @0.90 | recall gain @ kmeans DCO (mean, max) |\n");
        fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---|\n");
        for (int m = 0; m < 4; m++) {
            double r8 = dco_at(&cv[m], 0.80), r9 = dco_at(&cv[m], 0.90), r95 = dco_at(&cv[m], 0.95), k9 = dco_at(&cv[0], 0.90);
            double gsum = 0, gmax = -1;
            int gn = 0;
            for (int q = 0; q < np; q++) {
                double r = recall_at(&cv[m], cv[0].dco[q]);
                if (r < 0) continue;
                double gain = r - cv[0].recall[q];
                gsum += gain, gn++;
                if (gain > gmax) gmax = gain;
            }
            char a[32], b[32], c[32], rr[32], gg[64];
            snprintf(a, sizeof a, r8 > 0 ? "%.0f" : "-", r8);
            snprintf(b, sizeof b, r9 > 0 ? "%.0f" : "-", r9);
            snprintf(c, sizeof c, r95 > 0 ? "%.0f" : "-", r95);
            snprintf(rr, sizeof rr, r9 > 0 && k9 > 0 ? "%.2fx fewer" : "-", k9 / r9);
            snprintf(gg, sizeof gg, gn ? "%+.1f, %+.1f points" : "-", 100 * gsum / (gn ? gn : 1), 100 * gmax);
            fprintf(w, "| %s | %.3f | %.1f | %s | %s | %s | %s | %s |\n", cv[m].name, cv[m].inflation, cv[m].train_s, a, b, c, rr, gg);
        }
        fprintf(w, "\n| nprobe |");
        for (int m = 0; m < 4; m++) fprintf(w, " %s recall / DCO |", cv[m].name);
        fprintf(w, "\n|---:|---|---|---|---|\n");
        for (int q = 0; q < np; q++) {
            fprintf(w, "| %d |", probes[q]);
            for (int m = 0; m < 4; m++) fprintf(w, " %.4f / %.0f |", cv[m].recall[q], cv[m].dco[q]);
            fprintf(w, "\n");
        }
    }
    fclose(f);
    printf("\nwrote %s/curves.csv and %s/summary.md\n", out, out);
    return 0;
}
