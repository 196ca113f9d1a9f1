/* SPDX-License-Identifier: MIT */
/* bench_search.c: search speed (QPS) at equal recall@10, FAISS's default IVF against the project's.
 *
 *   bench_search --data FILE [options]
 *     --base-name NAME --query-name NAME   HDF5 datasets (default: train/test, then dataset/query)
 *     --queries FILE      queries from another file (fvecs/bvecs/h5)
 *     --gt FILE           ground truth (ivecs, >= 10 ids per query); default: exact, by brute force
 *     --nlist N           lists (default 1024)
 *     --nprobes a,b,...   (default 1,2,4,6,8,12,16,24,32,48,64,96,128)
 *     --seeds s1,s2,...   one build of every index per seed (default 1,2,3)
 *     --threads a,b       thread counts timed (default 1 and omp_get_max_threads())
 *     --batch B           queries per search call (default: all; 1 times single-query latency)
 *     --reps R            timed runs per point, interleaved over indexes and thread counts; the best
 *                         is kept (default 3)
 *
 * Rows (every index IVF<nlist>,Flat, searched with k = 10, all queries per call unless --batch):
 *   faiss          FAISS's default: IndexIVF::train's k-means (10 iterations, 256 points per list),
 *                  FAISS's add, faiss_Index_search (FAISS's C API only)
 *   faiss+search   the same index searched by fgmm_ivf_search: the gain of the search engine alone
 *   gmm-hard       the default's quantizer (the same GMM), no spill, fgmm_ivf_search
 *   default        fgmm_ivf_params_init's defaults (quantizer and SOAR spill), fgmm_ivf_search
 *   default/faiss  the default index searched by the FAISS engine (search_preassigned + de-duplication:
 *                  fgmm_ivf_search before the list-major engine)
 * QPS ratios at recall r: per seed, each curve's nprobe at r is interpolated log-linearly (log nprobe
 * linear in recall between swept points) and its QPS log-log in nprobe; the table gives the mean over
 * seeds of QPS(row) / QPS(faiss) and, with several seeds, its [min, max].
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "bench_util.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_impl.h"
#include "ivf_util.h"

#define K 10
#define MAX_PROBES 24
#define MAX_SEEDS 8
#define MAX_THREADS 4
#define NM 5

static const char* names[NM] = {"faiss", "faiss+search", "gmm-hard", "default", "default/faiss"};

static void die(const char* what) {
    fprintf(stderr, "bench_search: %s: %s\n", what, fgmm_get_last_error());
    exit(1);
}

typedef struct point {
    double recall, dco, qps[MAX_THREADS];
} point;

typedef struct row {
    double train_s, add_s, bytes;
    point p[MAX_PROBES];
} row;

static idx_t batch = 0; /* queries per search call (0: all) */

/* A search of all queries, `batch` per call: method m at nprobe np; seconds. */
static double search(int m, FaissIndex* fi, FgmmIvf* h, idx_t nq, const float* xq, int np, float* dist, idx_t* lab,
                     int64_t* dco) {
    idx_t bs = batch > 0 && batch < nq ? batch : nq;
    int d = faiss_Index_d(fi);
    if (m == 0) faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(fi), (size_t)np);
    double t0 = now_s();
    for (idx_t i0 = 0; i0 < nq; i0 += bs) {
        idx_t b = nq - i0 < bs ? nq - i0 : bs;
        const float* q = xq + (size_t)i0 * d;
        if (m == 0) {
            if (faiss_Index_search(fi, b, q, K, dist + i0 * K, lab + i0 * K)) die("faiss search");
        } else if (fgmm_ivf_search_with(h, b, q, K, np, dist + i0 * K, lab + i0 * K, dco + i0,
                                        m == 4 ? FGMM_SEARCH_FAISS : FGMM_SEARCH_AUTO, 0)) {
            die("fgmm_ivf_search");
        }
    }
    return now_s() - t0;
}

/* QPS of row r at recall level lv, thread index t: -1 if the sweep does not reach it. */
static double qps_at(const row* r, int np, const int* probes, double lv, int t) {
    for (int p = 0; p < np; p++) {
        if (r->p[p].recall < lv) continue;
        if (p == 0) return r->p[0].qps[t];
        const point *a = &r->p[p - 1], *b = &r->p[p];
        double f = (lv - a->recall) / (b->recall - a->recall);
        double lp = log(probes[p - 1]) + f * (log(probes[p]) - log(probes[p - 1]));
        double g = (lp - log(probes[p - 1])) / (log(probes[p]) - log(probes[p - 1]));
        return exp(log(a->qps[t]) + g * (log(b->qps[t]) - log(a->qps[t])));
    }
    return -1;
}

int main(int argc, char** argv) {
    const char *data = NULL, *bname = NULL, *qname = NULL, *qfile = NULL, *gt_file = NULL;
    const char *probe_s = "1,2,4,6,8,12,16,24,32,48,64,96,128", *seeds_s = "1,2,3", *threads_s = NULL;
    int nlist = 1024, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--data")) data = v;
        else if (!strcmp(o, "--base-name")) bname = v;
        else if (!strcmp(o, "--query-name")) qname = v;
        else if (!strcmp(o, "--queries")) qfile = v;
        else if (!strcmp(o, "--gt")) gt_file = v;
        else if (!strcmp(o, "--nlist")) nlist = atoi(v);
        else if (!strcmp(o, "--nprobes")) probe_s = v;
        else if (!strcmp(o, "--seeds")) seeds_s = v;
        else if (!strcmp(o, "--threads")) threads_s = v;
        else if (!strcmp(o, "--reps")) reps = atoi(v);
        else if (!strcmp(o, "--batch")) batch = atoll(v);
        else { fprintf(stderr, "bench_search: unknown option %s (see bench/bench_search.c)\n", o); return 2; }
    }
    if (!data || nlist < 1 || reps < 1) { fprintf(stderr, "usage: bench_search --data FILE [--nlist N] ...\n"); return 2; }
    int probes[MAX_PROBES], np = 0, seeds[MAX_SEEDS], ns = 0, threads[MAX_THREADS], nt = 0;
    for (const char* s = probe_s; *s && np < MAX_PROBES; s += strcspn(s, ","), s += *s == ',')
        if (atoi(s) > 0 && atoi(s) <= nlist) probes[np++] = atoi(s);
    for (const char* s = seeds_s; *s && ns < MAX_SEEDS; s += strcspn(s, ","), s += *s == ',') seeds[ns++] = atoi(s);
    int maxt = omp_get_max_threads();
    if (threads_s) {
        for (const char* s = threads_s; *s && nt < MAX_THREADS; s += strcspn(s, ","), s += *s == ',')
            if (atoi(s) > 0) threads[nt++] = atoi(s);
    } else {
        threads[nt++] = 1;
        if (maxt > 1) threads[nt++] = maxt;
    }

    FgmmVecs vb, vq;
    if (fgmm_vecs_read(data, bname, 0, &vb)) die(data);
    const char* qn = qname;
    if (!qfile && !qn) {
        qn = "test";
        if (fgmm_vecs_read(data, qn, 1, &vq)) qn = "query";
        else fgmm_vecs_free(&vq);
    }
    if (fgmm_vecs_read(qfile ? qfile : data, qn, 0, &vq)) die("queries");
    float *xb = vecs_to_float(&vb), *xq = vecs_to_float(&vq);
    if (!xb || !xq) die("out of memory");
    idx_t nb = vb.n, nq = vq.n;
    int d = vb.d;
    if (vq.d != d) { fprintf(stderr, "bench_search: queries have d = %d, base d = %d\n", vq.d, d); return 1; }
    int32_t* gt;
    int gt_k = GT_K;
    if (gt_file) {
        FgmmVecs gv;
        if (fgmm_vecs_read(gt_file, NULL, 0, &gv) || gv.n != nq || gv.d < K || gv.dtype != FGMM_I32) die("--gt");
        gt = gv.data, gt_k = gv.d;
    } else {
        gt = ground_truth(xb, nb, xq, nq, d);
    }
    printf("%s: base %lld x %d, %lld queries, IVF%d,Flat, k = %d, seeds %s, threads", data, (long long)nb, d,
           (long long)nq, nlist, K, seeds_s);
    for (int t = 0; t < nt; t++) printf(" %d", threads[t]);
    printf(", best of %d interleaved runs, %lld queries per call\n", reps, (long long)(batch > 0 && batch < nq ? batch : nq));

    static row rows[MAX_SEEDS][NM];
    char spec[64];
    snprintf(spec, sizeof spec, "IVF%d,Flat", nlist);
    float* dist = malloc((size_t)nq * K * sizeof(float));
    idx_t* lab = malloc((size_t)nq * K * sizeof(idx_t));
    int64_t* dco = malloc((size_t)nq * sizeof(int64_t));
    for (int si = 0; si < ns; si++) {
        FaissIndex* fi[3] = {NULL, NULL, NULL}; /* faiss, gmm-hard, default */
        FgmmIvf* h[3] = {NULL, NULL, NULL};
        for (int b = 0; b < 3; b++) { /* gmm-hard (b = 1) reuses the default's GMM: built after it */
            int bb = b == 0 ? 0 : 3 - b;
            if (faiss_index_factory(&fi[bb], d, spec, METRIC_L2)) die("faiss_index_factory");
            FgmmIvfParams p;
            fgmm_ivf_params_init(&p);
            p.gmm.seed = (uint64_t)seeds[si];
            if (bb < 2) p.rule = FGMM_ASSIGN_HARD;
            row* r = &rows[si][bb == 0 ? 0 : bb + 1];
            double t0 = now_s();
            if (bb == 0) {
                FaissClusteringParameters cp; /* IndexIVF::train's: Clustering's defaults, niter 10; the seed */
                faiss_ClusteringParameters_init(&cp);
                cp.niter = 10;
                cp.seed = seeds[si];
                FaissIndex* q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(fi[0]));
                FaissClustering* cl = NULL;
                if (faiss_Clustering_new_with_params(&cl, d, nlist, &cp) || faiss_Clustering_train(cl, nb, xb, q) ||
                    faiss_Index_train(fi[0], nb, xb))
                    die("faiss train");
                faiss_Clustering_free(cl);
                r->train_s = now_s() - t0;
                t0 = now_s();
                if (faiss_Index_add(fi[0], nb, xb)) die("faiss add");
                r->add_s = now_s() - t0;
                if (fgmm_ivf_wrap(fi[0], &p, &h[0])) die("wrap");
            } else {
                if (fgmm_ivf_wrap(fi[bb], &p, &h[bb])) die("wrap");
                if (bb == 2 && fgmm_ivf_train(h[bb], nb, xb, NULL)) die("train");
                if (bb == 1 && fgmm_ivf_set_gmm(h[bb], fgmm_ivf_model(h[2]), nb, xb)) die("set gmm");
                r->train_s = bb == 2 ? now_s() - t0 : rows[si][3].train_s;
                t0 = now_s();
                if (fgmm_ivf_add(h[bb], nb, xb, NULL, NULL)) die("add");
                r->add_s = now_s() - t0;
            }
            r->bytes = index_bytes(fi[bb], "Flat", nlist, d);
        }
        rows[si][1].train_s = rows[si][0].train_s, rows[si][1].add_s = rows[si][0].add_s;
        rows[si][1].bytes = rows[si][0].bytes;
        rows[si][4].train_s = rows[si][3].train_s, rows[si][4].add_s = rows[si][3].add_s;
        rows[si][4].bytes = rows[si][3].bytes;
        for (int p = 0; p < np; p++) {
            for (int m = 0; m < NM; m++) { /* recall and DCO */
                int b = m == 0 || m == 1 ? 0 : m == 2 ? 1 : 2;
                search(m, fi[b], h[b], nq, xq, probes[p], dist, lab, dco);
                point* pt = &rows[si][m].p[p];
                pt->recall = fgmm_recall(nq, K, lab, gt_k, gt);
                double s = 0;
                for (idx_t i = 0; i < nq; i++) s += m == 0 ? 0 : dco[i];
                pt->dco = m == 0 ? 0 : s / nq;
                for (int t = 0; t < nt; t++) pt->qps[t] = 0;
            }
            rows[si][0].p[p].dco = rows[si][1].p[p].dco; /* the same lists scanned */
            for (int rep = 0; rep < reps; rep++)
                for (int m = 0; m < NM; m++)
                    for (int t = 0; t < nt; t++) {
                        int b = m == 0 || m == 1 ? 0 : m == 2 ? 1 : 2;
                        omp_set_num_threads(threads[t]);
                        double q = nq / search(m, fi[b], h[b], nq, xq, probes[p], dist, lab, dco);
                        point* pt = &rows[si][m].p[p];
                        if (q > pt->qps[t]) pt->qps[t] = q;
                    }
            omp_set_num_threads(maxt);
        }
        for (int b = 0; b < 3; b++) fgmm_ivf_free(h[b]), faiss_Index_free(fi[b]);
        printf("seed %d: nprobe, then per row recall@10 / DCO / QPS at each thread count\n", seeds[si]);
        printf("| nprobe |");
        for (int m = 0; m < NM; m++) printf(" %s |", names[m]);
        printf("\n|---:|");
        for (int m = 0; m < NM; m++) printf("---|");
        printf("\n");
        for (int p = 0; p < np; p++) {
            printf("| %d |", probes[p]);
            for (int m = 0; m < NM; m++) {
                const point* pt = &rows[si][m].p[p];
                printf(" %.4f / %.0f /", pt->recall, pt->dco);
                for (int t = 0; t < nt; t++) printf(" %.0f", pt->qps[t]);
                printf(" |");
            }
            printf("\n");
        }
        fflush(stdout);
    }
    const double levels[] = {0.80, 0.85, 0.90, 0.95, 0.99};
    const int nl = sizeof levels / sizeof levels[0];
    printf("\nmean over %d seeds: train s, add s, MB; QPS ratio to faiss at recall@10 level, mean [min, max] over seeds (threads:", ns);
    for (int t = 0; t < nt; t++) printf(" %d", threads[t]);
    printf("; '-' where a curve does not reach the level)\n\n| row | train s | add s | MB |");
    for (int l = 0; l < nl; l++) printf(" @%.2f |", levels[l]);
    printf("\n|---|---:|---:|---:|");
    for (int l = 0; l < nl; l++) printf("---|");
    printf("\n");
    for (int m = 0; m < NM; m++) {
        double tr = 0, ad = 0, mb = 0;
        for (int si = 0; si < ns; si++)
            tr += rows[si][m].train_s / ns, ad += rows[si][m].add_s / ns, mb += rows[si][m].bytes / 1e6 / ns;
        printf("| %s | %.2f | %.2f | %.1f |", names[m], tr, ad, mb);
        for (int l = 0; l < nl; l++) {
            printf(" ");
            for (int t = 0; t < nt; t++) {
                double s = 0, lo = INFINITY, hi = 0;
                int ok = 1;
                for (int si = 0; si < ns && ok; si++) {
                    double a = qps_at(&rows[si][m], np, probes, levels[l], t);
                    double f = qps_at(&rows[si][0], np, probes, levels[l], t);
                    ok = a > 0 && f > 0;
                    double r = ok ? a / f : 0;
                    s += r / ns, lo = r < lo ? r : lo, hi = r > hi ? r : hi;
                }
                if (!ok) printf("%s-", t ? " / " : "");
                else if (ns > 1 && m > 0) printf("%s%.2f [%.2f, %.2f]", t ? " / " : "", s, lo, hi);
                else printf("%s%.2f", t ? " / " : "", s);
            }
            printf(" |");
        }
        printf("\n");
    }
    free(dist), free(lab), free(dco), free(xb), free(xq);
    fgmm_vecs_free(&vb), fgmm_vecs_free(&vq);
    return 0;
}
