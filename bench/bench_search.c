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
 *                         is kept (default 3; 0: recall and DCO only)
 *     --pq M              IVF<nlist>,PQ<M>np rows instead (8-bit codes, no polysemous training: it
 *                         takes minutes and search does not use it), below
 *     --kfactors a,b,...  --pq: the re-ranking k_factors (default 2,4,8)
 *     --wide a,b,...      IVF-Flat: FAISS's default at nlist x a, x b (default 2,4; 0: none)
 *     --list-major 1      IVF-Flat: adds the row default/list
 *     --probe r1,r2       IVF-Flat: adaptive-probing rows (fgmm_ivf_search_ex): fixed, kth, eps (default: none)
 *     --targets a,b,...   recall@10 targets the probe rows are calibrated for (default
 *                         0.80,0.85,0.90,0.93,0.95,0.97,0.99)
 *     --probe-on b1,b2    the indexes probe rows search: faiss, gmm-hard, default (default: all three)
 *     --min-probe N       lists every query scans before the rule (default 2)
 *     --max-probe N       lists at most for kth/eps (default: the largest of --nprobes)
 *     --holdout N         calibration vectors: the last N base vectors, not added to any index (default
 *                         1000 with --probe, else 0; the ground truth is then over the others)
 *     --calib FILE        calibration vectors from FILE instead (its first --holdout rows; all base added)
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
 *   default/list   (--list-major 1) the default index searched by the list-major engine alone, whatever
 *                  the batch (fgmm_ivf_search before the per-query engine of plugin/ivf_search_one.c)
 *   BASE+RULE      (--probe) for BASE in faiss+search, gmm-hard, default: fgmm_ivf_calibrate picks the
 *                  rule's setting (nprobe for fixed, the threshold for kth/eps) for each target on the
 *                  calibration vectors; recall, DCO and QPS are then measured on the queries (one point
 *                  per target reached, instead of one per nprobe)
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
 * linear in recall between swept points) and its QPS log-log in nprobe (probe rows: log QPS linear in
 * recall between the targets reached, read only from the lowest to the highest); the table gives the
 * mean over seeds of QPS(row) / QPS(faiss) (with --pq: FAISS's row of the same k_factor) and, with
 * several seeds, its [min, max]. A second table divides each of the project's rows by FAISS's best row
 * (highest QPS at that recall, per seed and thread count) among those of at most its bytes: what the
 * memory buys. A third divides DCO as the first does QPS (FAISS's row scans the same lists as
 * faiss+search). With --probe, a last table gives how far the queries' recall lands from each
 * calibrated target. --reps 0 prints only the DCO tables.
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
#include "search_report.h"

rowspec rs[MAX_ROWS];
int nrows = 0;

static void add_row(const char* name, int build, int api, int engine, float kf, int rule) {
    rowspec* r = &rs[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->build = build, r->api = api, r->engine = engine, r->kf = kf, r->rule = rule;
}

static void die(const char* what) {
    fprintf(stderr, "bench_search: %s: %s\n", what, fgmm_get_last_error());
    exit(1);
}

static idx_t batch = 0;                  /* queries per search call (0: all) */
static int min_probe = 2, max_probe = 0; /* probe rows' FgmmIvfSearchParams */
static const char* const rule_names[NR] = {"fixed", "kth", "eps"};

/* The search params of probe row r at setting s (nprobe for FIXED, else the threshold). */
static FgmmIvfSearchParams probe_params(const rowspec* r, double s) {
    FgmmIvfSearchParams sp;
    fgmm_ivf_search_params_init(&sp);
    sp.rule = (FgmmProbeRule)r->rule, sp.nprobe = max_probe, sp.min_probe = min_probe;
    if (r->rule == FGMM_PROBE_FIXED) sp.nprobe = (int)s;
    else sp.threshold = s;
    return sp;
}

/* A search of all queries, `batch` per call, by row r at setting s (nprobe, or a probe row's
 * setting); seconds. fi: the FAISS index the row searches (IndexRefineFlat for FAISS's re-ranking
 * rows), base: its IVF. */
static double search(const rowspec* r, FaissIndex* fi, FaissIndex* base, FgmmIvf* h, idx_t nq, const float* xq,
                     double s, float* dist, idx_t* lab, int64_t* dco) {
    idx_t bs = batch > 0 && batch < nq ? batch : nq;
    int d = faiss_Index_d(base), np = (int)s;
    FgmmIvfSearchParams sp = probe_params(r, s);
    if (r->api) {
        faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(base), (size_t)np);
        if (r->kf > 0) faiss_IndexRefineFlat_set_k_factor(faiss_IndexRefineFlat_cast(fi), r->kf);
    }
    double t0 = now_s();
    for (idx_t i0 = 0; i0 < nq; i0 += bs) {
        idx_t b = nq - i0 < bs ? nq - i0 : bs;
        const float* q = xq + (size_t)i0 * d;
        int rc = r->api         ? faiss_Index_search(fi, b, q, K, dist + i0 * K, lab + i0 * K)
                 : r->rule >= 0 ? fgmm_ivf_search_ex(h, b, q, K, &sp, dist + i0 * K, lab + i0 * K, dco + i0)
                 : r->kf        ? fgmm_ivf_search_refine(h, b, q, K, np, r->kf, dist + i0 * K, lab + i0 * K, dco + i0)
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
            if (as[(size_t)i * np + r] >= 0)
                e += (double)faiss_IndexIVF_get_list_size(ivf, (size_t)as[(size_t)i * np + r]);
        s += (double)nlist + e + (kf > 0 ? (e < kb ? e : kb) : 0);
    }
    free(cd), free(as);
    return s / nq;
}

/* The index of the comma-separated token at s among names[0..n), or -1. */
static int token(const char* s, const char* const* names, int n) {
    size_t len = strcspn(s, ",");
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && !strncmp(s, names[i], len)) return i;
    return -1;
}

static int parse_list(const char* s, double* out, int max) {
    int n = 0;
    for (; *s && n < max; s += strcspn(s, ","), s += *s == ',') out[n++] = atof(s);
    return n;
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
    const char *kf_s = "2,4,8", *wide_s = "2,4", *rules_s = "", *on_s = "faiss,gmm-hard,default";
    const char *targets_s = "0.80,0.85,0.90,0.93,0.95,0.97,0.99", *calib = NULL;
    int nlist = 1024, reps = 3, pq = 0, list_major = 0;
    idx_t holdout = -1;
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
        else if (!strcmp(o, "--list-major")) list_major = atoi(v);
        else if (!strcmp(o, "--probe")) rules_s = v;
        else if (!strcmp(o, "--targets")) targets_s = v;
        else if (!strcmp(o, "--probe-on")) on_s = v;
        else if (!strcmp(o, "--min-probe")) min_probe = atoi(v);
        else if (!strcmp(o, "--max-probe")) max_probe = atoi(v);
        else if (!strcmp(o, "--holdout")) holdout = atoll(v);
        else if (!strcmp(o, "--calib")) calib = v;
        else {
            fprintf(stderr, "bench_search: unknown option %s (see bench/bench_search.c)\n", o);
            return 2;
        }
    }
    if (!data || nlist < 1 || reps < 0 || pq < 0) {
        fprintf(stderr, "usage: bench_search --data FILE [--nlist N] ...\n");
        return 2;
    }
    double probes[MAX_PROBES], targets[MAX_TARGETS];
    int np = 0, seeds[MAX_SEEDS], ns = 0, threads[MAX_THREADS], nt = 0;
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
    /* probe rows: their rules and base indexes */
    const char* const on_names[3] = {"faiss", "gmm-hard", "default"};
    const char* const base_names[3] = {"faiss+search", "gmm-hard", "default"};
    const int on_builds[3] = {B_FAISS, B_HARD, B_DEFAULT};
    int rules[NR], nru = 0, on[3], non = 0, ntg = parse_list(targets_s, targets, MAX_TARGETS);
    for (const char* s = rules_s; *s && nru < NR; s += strcspn(s, ","), s += *s == ',')
        if ((rules[nru++] = token(s, rule_names, NR)) < 0) {
            fprintf(stderr, "bench_search: --probe %s: unknown rule\n", s);
            return 2;
        }
    for (const char* s = on_s; nru && *s && non < 3; s += strcspn(s, ","), s += *s == ',')
        if ((on[non++] = token(s, on_names, 3)) < 0) {
            fprintf(stderr, "bench_search: --probe-on %s: unknown index\n", s);
            return 2;
        }
    if (nru && (pq || !ntg || min_probe < 1)) {
        fprintf(stderr, "bench_search: --probe needs IVF-Flat (no --pq), --targets and --min-probe >= 1\n");
        return 2;
    }
    if (!max_probe)
        for (int p = 0; p < np; p++) max_probe = probes[p] > max_probe ? (int)probes[p] : max_probe;
    double kfs[MAX_KF], wide[MAX_BUILDS - B_WIDE];
    int nkf = pq ? parse_list(kf_s, kfs, MAX_KF) : 0, nw = pq ? 0 : parse_list(wide_s, wide, MAX_BUILDS - B_WIDE);
    for (int w = 0; w < nw; w++)
        if (wide[w] < 2) nw = w; /* 0 (or junk): no wider rows */
    char nm[32];
    if (!pq) {
        add_row("faiss", B_FAISS, 1, 0, 0, -1);
        add_row("faiss+search", B_FAISS, 0, FGMM_SEARCH_AUTO, 0, -1);
        add_row("gmm-hard", B_HARD, 0, FGMM_SEARCH_AUTO, 0, -1);
        add_row("default", B_DEFAULT, 0, FGMM_SEARCH_AUTO, 0, -1);
        add_row("default/faiss", B_DEFAULT, 0, FGMM_SEARCH_FAISS, 0, -1);
        if (list_major) add_row("default/list", B_DEFAULT, 0, FGMM_SEARCH_FLAT, 0, -1);
        for (int w = 0; w < nw; w++)
            snprintf(nm, sizeof nm, "faiss-%gx", wide[w]), add_row(nm, B_WIDE + w, 1, 0, 0, -1);
        for (int o = 0; o < non; o++)
            for (int r = 0; r < nru; r++) {
                snprintf(nm, sizeof nm, "%s+%s", base_names[on[o]], rule_names[rules[r]]);
                add_row(nm, on_builds[on[o]], 0, FGMM_SEARCH_AUTO, 0, rules[r]);
            }
    } else {
        add_row("faiss-pq", B_FAISS, 1, 0, 0, -1);
        for (int f = 0; f < nkf; f++)
            snprintf(nm, sizeof nm, "faiss-pq+R%g", kfs[f]), add_row(nm, B_FAISS, 1, 0, (float)kfs[f], -1);
        add_row("default-pq", B_DEFAULT, 0, FGMM_SEARCH_AUTO, 0, -1);
        for (int f = 0; f < nkf; f++)
            snprintf(nm, sizeof nm, "default-pq+R%g", kfs[f]),
                add_row(nm, B_DEFAULT, 0, FGMM_SEARCH_AUTO, (float)kfs[f], -1);
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
    idx_t nb = vb.n, nq = vq.n, nadd = nb, ncal = 0;
    int d = vb.d;
    if (vq.d != d) {
        fprintf(stderr, "bench_search: queries have d = %d, base d = %d\n", vq.d, d);
        return 1;
    }
    float* xcal = NULL; /* calibration vectors: never the queries */
    FgmmVecs vc;
    if (nru) {
        ncal = holdout < 0 ? 1000 : holdout;
        if (calib) {
            if (fgmm_vecs_read(calib, NULL, 0, &vc) || vc.d != d) die("--calib");
            ncal = ncal < vc.n ? ncal : vc.n;
            if (!(xcal = vecs_to_float(&vc))) die("out of memory");
        } else {
            if (gt_file && ncal) {
                fprintf(stderr, "bench_search: --gt needs --calib (the base is held out of)\n");
                return 2;
            }
            if (ncal >= nb) {
                fprintf(stderr, "bench_search: --holdout %lld >= base\n", (long long)ncal);
                return 2;
            }
            nadd = nb - ncal, xcal = xb + (size_t)nadd * d;
        }
        if (ncal < 1) {
            fprintf(stderr, "bench_search: --probe needs --holdout >= 1\n");
            return 2;
        }
    }
    int32_t* gt;
    int gt_k = GT_K;
    if (gt_file) {
        FgmmVecs gv;
        if (fgmm_vecs_read(gt_file, NULL, 0, &gv) || gv.n != nq || gv.d < K || gv.dtype != FGMM_I32) die("--gt");
        gt = gv.data, gt_k = gv.d;
    } else {
        gt = ground_truth(xb, nadd, xq, nq, d);
    }
    char codes[32];
    snprintf(codes, sizeof codes, pq ? "PQ%dnp" : "Flat", pq);
    printf("%s: base %lld x %d, %lld queries, IVF%d,%s, k = %d, seeds %s, threads", data, (long long)nb, d,
           (long long)nq, nlist, codes, K, seeds_s);
    for (int t = 0; t < nt; t++) printf(" %d", threads[t]);
    if (reps) printf(", best of %d interleaved runs", reps);
    else printf(", recall and DCO only (--reps 0)");
    printf(", %lld queries per call\n", (long long)(batch > 0 && batch < nq ? batch : nq));
    if (nru)
        printf("probe rows: %lld calibration vectors (%s), %lld base vectors added, min_probe %d, max nprobe %d\n",
               (long long)ncal, calib ? calib : "the base's last, not added", (long long)nadd, min_probe, max_probe);

    static row rows[MAX_SEEDS][MAX_ROWS];
    float* dist = malloc((size_t)nq * K * sizeof(float));
    idx_t* lab = malloc((size_t)nq * K * sizeof(idx_t));
    int64_t* dco = malloc((size_t)nq * sizeof(int64_t));
    const int npts = nru && ntg > np ? ntg : np; /* points of the longest row */
    for (int si = 0; si < ns; si++) {
        FaissIndex* fi[MAX_BUILDS] = {NULL};
        FaissIndexRefineFlat* refine = NULL; /* --pq: FAISS's re-ranking over fi[B_FAISS] */
        FgmmIvf* h[MAX_BUILDS] = {NULL};
        double train_s[MAX_BUILDS], add_s[MAX_BUILDS], bytes[MAX_BUILDS], copy_bytes = (double)nadd * d * sizeof(float);
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
            if (b == B_FAISS || b >= B_WIDE) { /* trained on the whole base, filled with the nadd first */
                faiss_train(fi[b], d, nl, seeds[si], nb, xb);
                train_s[b] = now_s() - t0;
                FaissIndex* into = fi[b];
                if (pq) { /* IndexRefineFlat: adds go to the IVF-PQ and the float copy */
                    if (faiss_IndexRefineFlat_new(&refine, fi[b])) die("IndexRefineFlat");
                    into = (FaissIndex*)refine;
                }
                t0 = now_s();
                if (faiss_Index_add(into, nadd, xb)) die("faiss add");
                add_s[b] = now_s() - t0;
                if (fgmm_ivf_wrap(fi[b], &p, &h[b])) die("wrap");
            } else {
                if (fgmm_ivf_wrap(fi[b], &p, &h[b])) die("wrap");
                if (b == B_DEFAULT && fgmm_ivf_train(h[b], nb, xb, NULL)) die("train");
                if (b == B_HARD && fgmm_ivf_set_gmm(h[b], fgmm_ivf_model(h[B_DEFAULT]), nb, xb)) die("set gmm");
                train_s[b] = b == B_DEFAULT ? now_s() - t0 : train_s[B_DEFAULT];
                if (pq && fgmm_ivf_refine_flat(h[b], 1.0f)) die("refine");
                t0 = now_s();
                if (fgmm_ivf_add(h[b], nadd, xb, NULL, NULL)) die("add");
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
#define NPTS(m) (rs[m].rule >= 0 ? ntg : np)
        for (int p = 0; p < npts; p++) {
            for (int m = 0; m < nrows; m++) { /* setting (probe rows: calibrated), recall and DCO */
                if (p >= NPTS(m)) continue;
                int b = rs[m].build;
                point* pt = &rows[si][m].p[p];
                memset(pt, 0, sizeof *pt);
                if (rs[m].rule < 0) pt->setting = probes[p];
                else {
                    FgmmIvfSearchParams sp = probe_params(&rs[m], max_probe);
                    double t0 = now_s();
                    int rc = fgmm_ivf_calibrate(h[b], ncal, xcal, K, targets[p], &sp, &pt->cal_recall);
                    rows[si][m].cal_s += now_s() - t0;
                    if (rc && rc != FGMM_ERR_ARG) die("fgmm_ivf_calibrate");
                    pt->recall = -1;
                    if (rc) continue; /* the target is beyond max nprobe */
                    pt->setting = sp.rule == FGMM_PROBE_FIXED ? sp.nprobe : sp.threshold;
                }
                search(&rs[m], FI(m), fi[b], h[b], nq, xq, pt->setting, dist, lab, dco);
                pt->recall = fgmm_recall(nq, K, lab, gt_k, gt);
                double s = 0;
                for (idx_t i = 0; i < nq && !rs[m].api; i++) s += dco[i];
                pt->dco = rs[m].api ? faiss_dco(fi[b], nq, xq, (int)probes[p], rs[m].kf) : s / nq;
            }
            for (int rep = 0; rep < reps; rep++)
                for (int m = 0; m < nrows; m++)
                    for (int t = 0; t < nt; t++) {
                        int b = rs[m].build;
                        point* pt = &rows[si][m].p[p];
                        if (p >= NPTS(m) || pt->recall < 0) continue;
                        omp_set_num_threads(threads[t]);
                        double q = nq / search(&rs[m], FI(m), fi[b], h[b], nq, xq, pt->setting, dist, lab, dco);
                        if (q > pt->qps[t]) pt->qps[t] = q;
                    }
            omp_set_num_threads(maxt);
        }
        if (refine) faiss_IndexRefineFlat_free(refine); /* own_fields 0: the IVF is freed below */
        for (int b = 0; b < MAX_BUILDS; b++) fgmm_ivf_free(h[b]), faiss_Index_free(fi[b]);
        print_seed(seeds[si], rows[si], 1, ntg, targets, nt);
        print_seed(seeds[si], rows[si], 0, np, probes, nt);
        fflush(stdout);
    }
    print_summary(rows, ns, threads, nt, pq, reps, np, ntg, targets, nru);
    free(dist), free(lab), free(dco), free(xb), free(xq);
    if (calib) free(xcal), fgmm_vecs_free(&vc);
    fgmm_vecs_free(&vb), fgmm_vecs_free(&vq);
    return 0;
}
