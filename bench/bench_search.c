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
 *     --pq M              IVF<nlist>,PQ<M>np rows instead (8-bit codes, no polysemous training: it
 *                         takes minutes and search does not use it), below
 *     --kfactors a,b,...  --pq: the re-ranking k_factors (default 2,4,8)
 *     --wide a,b,...      IVF-Flat: FAISS's default at nlist x a, x b (default 2,4; 0: none)
 *
 * Rows (every index IVF<nlist>,Flat, searched with k = 10, all queries per call unless --batch):
 *   faiss          FAISS's default: IndexIVF::train's k-means (10 iterations, 256 points per list),
 *                  FAISS's add, faiss_Index_search (FAISS's C API only)
 *   faiss+search   the same index searched by fgmm_ivf_search: the gain of the search engine alone
 *   gmm-hard       the default's quantizer (the same GMM), no spill, fgmm_ivf_search
 *   default        fgmm_ivf_params_init's defaults (quantizer and SOAR spill), fgmm_ivf_search
 *   default/faiss  the default index searched by the FAISS engine (search_preassigned + de-duplication:
 *                  fgmm_ivf_search before the list-major engine)
 *   faiss-<a>x     FAISS's default at nlist x a (--wide): what a FAISS user gets for more training, the same bytes
 * IVF-PQ rows (--pq M; every index IVF<nlist>,PQ<M>np):
 *   faiss-pq       FAISS's default IVF-PQ, faiss_Index_search
 *   faiss-pq+R<f>  the same inside FAISS's IndexRefineFlat (C API), k_factor f: its exact re-ranking;
 *                  MB counts the float copy
 *   default-pq     the default build (GMM, SOAR spill) with fgmm_ivf_refine_flat, searched without
 *                  re-ranking (fgmm_ivf_search_with; MB without the copy)
 *   default-pq+R<f> the same, fgmm_ivf_search_refine with k_factor f
 * DCO: nlist + the probed lists' sizes (spilled copies counted; for FAISS's rows from its quantizer's
 * assignment and its list sizes), plus, with re-ranking, the exact distances computed (FAISS: min(k x f,
 * entries scanned); ours: the distinct candidates). A PQ code distance costs M table look-ups, an
 * exact one d multiply-adds: the sum is a count, not a cost.
 * QPS ratios at recall r: per seed, each curve's nprobe at r is interpolated log-linearly (log nprobe
 * linear in recall between swept points) and its QPS log-log in nprobe; the table gives the mean over
 * seeds of QPS(row) / QPS(faiss) (with --pq: FAISS's row of the same k_factor) and, with several
 * seeds, its [min, max]. A second table divides each of the project's rows by FAISS's best row (highest QPS at that recall, per
 * seed and thread count) among those of at most its bytes: what the memory buys.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexFlat_c.h>
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
#define MAX_ROWS 16
#define MAX_KF 6

enum { B_FAISS, B_HARD, B_DEFAULT, B_WIDE }; /* builds: FAISS's, gmm-hard, default, FAISS at wider nlists */
#define MAX_BUILDS (B_WIDE + 4)

typedef struct rowspec {
    char name[32];
    int build, api; /* api: searched by FAISS's C API (else fgmm_ivf_search*) */
    int engine;     /* ours: FGMM_SEARCH_* */
    float kf;       /* re-ranking k_factor (0: none) */
} rowspec;

static rowspec rs[MAX_ROWS];
static int nrows = 0;

static void add_row(const char* name, int build, int api, int engine, float kf) {
    rowspec* r = &rs[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->build = build, r->api = api, r->engine = engine, r->kf = kf;
}

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

/* A search of all queries, `batch` per call, by row r at nprobe np; seconds. fi: the FAISS index the
 * row searches (IndexRefineFlat for FAISS's re-ranking rows), base: its IVF. */
static double search(const rowspec* r, FaissIndex* fi, FaissIndex* base, FgmmIvf* h, idx_t nq, const float* xq,
                     int np, float* dist, idx_t* lab, int64_t* dco) {
    idx_t bs = batch > 0 && batch < nq ? batch : nq;
    int d = faiss_Index_d(base);
    if (r->api) {
        faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(base), (size_t)np);
        if (r->kf > 0) faiss_IndexRefineFlat_set_k_factor(faiss_IndexRefineFlat_cast(fi), r->kf);
    }
    double t0 = now_s();
    for (idx_t i0 = 0; i0 < nq; i0 += bs) {
        idx_t b = nq - i0 < bs ? nq - i0 : bs;
        const float* q = xq + (size_t)i0 * d;
        int rc = r->api  ? faiss_Index_search(fi, b, q, K, dist + i0 * K, lab + i0 * K)
                 : r->kf ? fgmm_ivf_search_refine(h, b, q, K, np, r->kf, dist + i0 * K, lab + i0 * K, dco + i0)
                         : fgmm_ivf_search_with(h, b, q, K, np, dist + i0 * K, lab + i0 * K, dco + i0, r->engine, 0);
        if (rc) die(r->name);
    }
    return now_s() - t0;
}

/* Mean DCO of a FAISS row: nlist + the sizes of the lists its quantizer assigns, + min(k x kf, those
 * entries) exact distances where it re-ranks. */
static double faiss_dco(FaissIndex* base, idx_t nq, const float* xq, int np, float kf) {
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(base);
    size_t nlist = faiss_IndexIVF_nlist(ivf);
    float* cd = malloc((size_t)nq * np * sizeof(float));
    idx_t* as = malloc((size_t)nq * np * sizeof(idx_t));
    if (!cd || !as || faiss_Index_search(faiss_IndexIVF_quantizer(ivf), nq, xq, np, cd, as)) die("faiss dco");
    double s = 0, kb = floor((double)K * kf);
    for (idx_t i = 0; i < nq; i++) {
        double e = 0;
        for (int r = 0; r < np; r++)
            if (as[(size_t)i * np + r] >= 0) e += (double)faiss_IndexIVF_get_list_size(ivf, (size_t)as[(size_t)i * np + r]);
        s += (double)nlist + e + (kf > 0 ? (e < kb ? e : kb) : 0);
    }
    free(cd), free(as);
    return s / nq;
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

static int parse_list(const char* s, double* out, int max) {
    int n = 0;
    for (; *s && n < max; s += strcspn(s, ","), s += *s == ',') out[n++] = atof(s);
    return n;
}

/* The row row m is divided by in the first summary: FAISS's row of the same k_factor (--pq), else row 0. */
static int base_row(int m) {
    for (int c = 0; c < nrows; c++)
        if (rs[c].api && rs[c].kf == rs[m].kf && (rs[c].build == B_FAISS)) return c;
    return 0;
}

/* FAISS's IndexIVF::train: its k-means (Clustering's defaults, niter 10; the seed), then the rest. */
static void faiss_train(FaissIndex* fi, int d, int nlist, int seed, idx_t nb, const float* xb) {
    FaissClusteringParameters cp;
    faiss_ClusteringParameters_init(&cp);
    cp.niter = 10;
    cp.seed = seed;
    FaissIndex* q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(fi));
    FaissClustering* cl = NULL;
    if (faiss_Clustering_new_with_params(&cl, d, nlist, &cp) || faiss_Clustering_train(cl, nb, xb, q) ||
        faiss_Index_train(fi, nb, xb))
        die("faiss train");
    faiss_Clustering_free(cl);
}

int main(int argc, char** argv) {
    const char *data = NULL, *bname = NULL, *qname = NULL, *qfile = NULL, *gt_file = NULL;
    const char *probe_s = "1,2,4,6,8,12,16,24,32,48,64,96,128", *seeds_s = "1,2,3", *threads_s = NULL;
    const char *kf_s = "2,4,8", *wide_s = "2,4";
    int nlist = 1024, reps = 3, pq = 0;
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
        else if (!strcmp(o, "--pq")) pq = atoi(v);
        else if (!strcmp(o, "--kfactors")) kf_s = v;
        else if (!strcmp(o, "--wide")) wide_s = v;
        else { fprintf(stderr, "bench_search: unknown option %s (see bench/bench_search.c)\n", o); return 2; }
    }
    if (!data || nlist < 1 || reps < 1 || pq < 0) { fprintf(stderr, "usage: bench_search --data FILE [--nlist N] ...\n"); return 2; }
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
    double kfs[MAX_KF], wide[MAX_BUILDS - B_WIDE];
    int nkf = pq ? parse_list(kf_s, kfs, MAX_KF) : 0, nw = pq ? 0 : parse_list(wide_s, wide, MAX_BUILDS - B_WIDE);
    for (int w = 0; w < nw; w++)
        if (wide[w] < 2) nw = w; /* 0 (or junk): no wider rows */
    char nm[32];
    if (!pq) {
        add_row("faiss", B_FAISS, 1, 0, 0);
        add_row("faiss+search", B_FAISS, 0, FGMM_SEARCH_AUTO, 0);
        add_row("gmm-hard", B_HARD, 0, FGMM_SEARCH_AUTO, 0);
        add_row("default", B_DEFAULT, 0, FGMM_SEARCH_AUTO, 0);
        add_row("default/faiss", B_DEFAULT, 0, FGMM_SEARCH_FAISS, 0);
        for (int w = 0; w < nw; w++) snprintf(nm, sizeof nm, "faiss-%gx", wide[w]), add_row(nm, B_WIDE + w, 1, 0, 0);
    } else {
        add_row("faiss-pq", B_FAISS, 1, 0, 0);
        for (int f = 0; f < nkf; f++) snprintf(nm, sizeof nm, "faiss-pq+R%g", kfs[f]), add_row(nm, B_FAISS, 1, 0, (float)kfs[f]);
        add_row("default-pq", B_DEFAULT, 0, FGMM_SEARCH_AUTO, 0);
        for (int f = 0; f < nkf; f++)
            snprintf(nm, sizeof nm, "default-pq+R%g", kfs[f]), add_row(nm, B_DEFAULT, 0, FGMM_SEARCH_AUTO, (float)kfs[f]);
    }
    int nbuild = pq ? 3 : B_WIDE + nw;

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
    char codes[32];
    snprintf(codes, sizeof codes, pq ? "PQ%dnp" : "Flat", pq);
    printf("%s: base %lld x %d, %lld queries, IVF%d,%s, k = %d, seeds %s, threads", data, (long long)nb, d,
           (long long)nq, nlist, codes, K, seeds_s);
    for (int t = 0; t < nt; t++) printf(" %d", threads[t]);
    printf(", best of %d interleaved runs, %lld queries per call\n", reps, (long long)(batch > 0 && batch < nq ? batch : nq));

    static row rows[MAX_SEEDS][MAX_ROWS];
    float* dist = malloc((size_t)nq * K * sizeof(float));
    idx_t* lab = malloc((size_t)nq * K * sizeof(idx_t));
    int64_t* dco = malloc((size_t)nq * sizeof(int64_t));
    for (int si = 0; si < ns; si++) {
        FaissIndex* fi[MAX_BUILDS] = {NULL};
        FaissIndexRefineFlat* refine = NULL; /* --pq: FAISS's re-ranking over fi[B_FAISS] */
        FgmmIvf* h[MAX_BUILDS] = {NULL};
        double train_s[MAX_BUILDS], add_s[MAX_BUILDS], bytes[MAX_BUILDS], copy_bytes = (double)nb * d * sizeof(float);
        const int order[MAX_BUILDS] = {B_FAISS, B_DEFAULT, B_HARD, B_WIDE, B_WIDE + 1, B_WIDE + 2, B_WIDE + 3};
        for (int o = 0; o < nbuild; o++) { /* gmm-hard reuses the default's GMM: built after it */
            int b = order[o];
            if (pq && b == B_HARD) continue;
            int nl = b >= B_WIDE ? (int)(nlist * wide[b - B_WIDE]) : nlist;
            char spec[64];
            snprintf(spec, sizeof spec, "IVF%d,%s", nl, codes);
            if (faiss_index_factory(&fi[b], d, spec, METRIC_L2)) die("faiss_index_factory");
            FgmmIvfParams p;
            fgmm_ivf_params_init(&p);
            p.gmm.seed = (uint64_t)seeds[si];
            if (b != B_DEFAULT) p.rule = FGMM_ASSIGN_HARD;
            double t0 = now_s();
            if (b == B_FAISS || b >= B_WIDE) {
                faiss_train(fi[b], d, nl, seeds[si], nb, xb);
                train_s[b] = now_s() - t0;
                FaissIndex* into = fi[b];
                if (pq) { /* IndexRefineFlat: adds go to the IVF-PQ and the float copy */
                    if (faiss_IndexRefineFlat_new(&refine, fi[b])) die("IndexRefineFlat");
                    into = (FaissIndex*)refine;
                }
                t0 = now_s();
                if (faiss_Index_add(into, nb, xb)) die("faiss add");
                add_s[b] = now_s() - t0;
                if (fgmm_ivf_wrap(fi[b], &p, &h[b])) die("wrap");
            } else {
                if (fgmm_ivf_wrap(fi[b], &p, &h[b])) die("wrap");
                if (b == B_DEFAULT && fgmm_ivf_train(h[b], nb, xb, NULL)) die("train");
                if (b == B_HARD && fgmm_ivf_set_gmm(h[b], fgmm_ivf_model(h[B_DEFAULT]), nb, xb)) die("set gmm");
                train_s[b] = b == B_DEFAULT ? now_s() - t0 : train_s[B_DEFAULT];
                if (pq && fgmm_ivf_refine_flat(h[b], 1.0f)) die("refine");
                t0 = now_s();
                if (fgmm_ivf_add(h[b], nb, xb, NULL, NULL)) die("add");
                add_s[b] = now_s() - t0;
            }
            bytes[b] = index_bytes(fi[b], pq ? codes : "Flat", nl, d);
        }
        for (int m = 0; m < nrows; m++) {
            int b = rs[m].build;
            rows[si][m].train_s = train_s[b], rows[si][m].add_s = add_s[b];
            rows[si][m].bytes = bytes[b] + (rs[m].kf > 0 ? copy_bytes : 0);
        }
#define FI(m) (rs[m].api && rs[m].kf > 0 ? (FaissIndex*)refine : fi[rs[m].build])
        for (int p = 0; p < np; p++) {
            for (int m = 0; m < nrows; m++) { /* recall and DCO */
                int b = rs[m].build;
                search(&rs[m], FI(m), fi[b], h[b], nq, xq, probes[p], dist, lab, dco);
                point* pt = &rows[si][m].p[p];
                pt->recall = fgmm_recall(nq, K, lab, gt_k, gt);
                double s = 0;
                for (idx_t i = 0; i < nq && !rs[m].api; i++) s += dco[i];
                pt->dco = rs[m].api ? faiss_dco(fi[b], nq, xq, probes[p], rs[m].kf) : s / nq;
                for (int t = 0; t < nt; t++) pt->qps[t] = 0;
            }
            for (int rep = 0; rep < reps; rep++)
                for (int m = 0; m < nrows; m++)
                    for (int t = 0; t < nt; t++) {
                        int b = rs[m].build;
                        omp_set_num_threads(threads[t]);
                        double q = nq / search(&rs[m], FI(m), fi[b], h[b], nq, xq, probes[p], dist, lab, dco);
                        point* pt = &rows[si][m].p[p];
                        if (q > pt->qps[t]) pt->qps[t] = q;
                    }
            omp_set_num_threads(maxt);
        }
        if (refine) faiss_IndexRefineFlat_free(refine); /* own_fields 0: the IVF is freed below */
        for (int b = 0; b < MAX_BUILDS; b++) fgmm_ivf_free(h[b]), faiss_Index_free(fi[b]);
        printf("seed %d: nprobe, then per row recall@10 / DCO / QPS at each thread count\n", seeds[si]);
        printf("| nprobe |");
        for (int m = 0; m < nrows; m++) printf(" %s |", rs[m].name);
        printf("\n|---:|");
        for (int m = 0; m < nrows; m++) printf("---|");
        printf("\n");
        for (int p = 0; p < np; p++) {
            printf("| %d |", probes[p]);
            for (int m = 0; m < nrows; m++) {
                const point* pt = &rows[si][m].p[p];
                printf(" %.4f / %.0f /", pt->recall, pt->dco);
                for (int t = 0; t < nt; t++) printf(" %.0f", pt->qps[t]);
                printf(" |");
            }
            printf("\n");
        }
        fflush(stdout);
    }
    const double levels[] = {0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.95, 0.99};
    const int nl = sizeof levels / sizeof levels[0], l0 = pq ? 0 : 3; /* PQ alone tops out low */
    double mb[MAX_ROWS] = {0};
    for (int m = 0; m < nrows; m++)
        for (int si = 0; si < ns; si++) mb[m] += rows[si][m].bytes / 1e6 / ns;
    for (int vs_best = 0; vs_best < 2; vs_best++) {
        if (!vs_best) {
            printf("\nmean over %d seeds: train s, add s, MB; QPS ratio to %s at recall@10 level, mean [min, max] over seeds "
                   "(threads:", ns, pq ? "FAISS's row of the same k_factor" : rs[0].name);
        } else {
            printf("\nQPS ratio to FAISS's best row of at most the row's MB (the highest QPS at the level among FAISS's "
                   "rows, per seed and thread count), mean [min, max] over seeds (threads:");
        }
        for (int t = 0; t < nt; t++) printf(" %d", threads[t]);
        printf("; '-' where a curve does not reach the level)\n\n| row | train s | add s | MB |");
        for (int l = l0; l < nl; l++) printf(" @%.2f |", levels[l]);
        printf("\n|---|---:|---:|---:|");
        for (int l = l0; l < nl; l++) printf("---|");
        printf("\n");
        for (int m = 0; m < nrows; m++) {
            if (vs_best && rs[m].api) continue;
            double tr = 0, ad = 0;
            for (int si = 0; si < ns; si++) tr += rows[si][m].train_s / ns, ad += rows[si][m].add_s / ns;
            printf("| %s | %.2f | %.2f | %.1f |", rs[m].name, tr, ad, mb[m]);
            for (int l = l0; l < nl; l++) {
                printf(" ");
                for (int t = 0; t < nt; t++) {
                    double s = 0, lo = INFINITY, hi = 0;
                    int ok = 1;
                    for (int si = 0; si < ns && ok; si++) {
                        double a = qps_at(&rows[si][m], np, probes, levels[l], t), f = -1;
                        for (int c = 0; c < nrows; c++) /* the baseline: faiss, or FAISS's best of <= MB */
                            if (vs_best ? rs[c].api && mb[c] <= mb[m] * 1.0001 : c == base_row(m)) {
                                double v = qps_at(&rows[si][c], np, probes, levels[l], t);
                                f = v > f ? v : f;
                            }
                        ok = a > 0 && f > 0;
                        double r = ok ? a / f : 0;
                        s += r / ns, lo = r < lo ? r : lo, hi = r > hi ? r : hi;
                    }
                    if (!ok) printf("%s-", t ? " / " : "");
                    else if (ns > 1 && (m != base_row(m) || vs_best)) printf("%s%.2f [%.2f, %.2f]", t ? " / " : "", s, lo, hi);
                    else printf("%s%.2f", t ? " / " : "", s);
                }
                printf(" |");
            }
            printf("\n");
        }
    }
    free(dist), free(lab), free(dco), free(xb), free(xq);
    fgmm_vecs_free(&vb), fgmm_vecs_free(&vq);
    return 0;
}
