/* SPDX-License-Identifier: MIT */
/* ivf_curves.c: recall@10 vs distance computations (DCO) for IVF quantizers and spill rules.
 *
 *   ivf_curves --data FILE [options]
 *     --base-name NAME     HDF5 dataset of the base vectors (default: train, then dataset)
 *     --query-name NAME    HDF5 dataset of the queries in the same file (default: test, then query)
 *     --queries FILE       queries from another file (fvecs/bvecs/h5)
 *     --gt FILE            ground truth (ivecs, >= 10 ids per query) instead of brute force
 *     --holdout Q          no query set: hold out Q random base rows as queries
 *     --normalize          L2-normalise base and queries (angular data sets)
 *     --nlist N            lists (default 1024)
 *     --codes Flat|PQm     IVF-Flat or IVF-PQ with m bytes (default Flat)
 *     --nprobes a,b,...    (default 1,2,3,4,6,8,12,16,24,32,48,64,96,128,192,256)
 *     --stop-recall R      stop a sweep at the first nprobe reaching recall@10 R (default 0.975)
 *     --methods m1,m2,...  (default: all below)
 *     --seeds s1,s2,...    one build of every quantizer per seed (default 1,2,3)
 *     --gmm-iter N --kmeans-iter N   (default 30 and 10 for the km and gmm methods; "default" takes
 *                          fgmm_ivf_params_init's unless given)
 *     --lambda L --cov iso|diag --backend auto|cpu|gpu --max-rows N
 *     --points-per-list P  the project's quantizers train on a sample of at most P points per list
 *                          (default: "default" takes fgmm_ivf_params_init's schedule by backend, the
 *                          other methods all points; 0 = all points for every method)
 *     --tol T              EM tolerance stop (FgmmParams.tol; default: the method's, 0 or the schedule's)
 *     --init-points N      k-means++ seeds on N sampled rows (FgmmParams.max_init_points; default 64 x nlist)
 *     --progress / --quiet a progress line per training with the time left on stderr (default: when
 *                          stderr is a terminal)
 *     --out DIR            writes DIR/curves.csv, DIR/summary.md, caches DIR/gt100.ivecs
 *     --from-csv FILE      no build: the summary of curves saved in FILE (curves.csv rows, any mix of
 *                          runs, e.g. a reference re-run appended), written to DIR/summary.md
 *
 * A method is QUANTIZER-RULE[TARGET][-SELECT]:
 *   QUANTIZER  faiss  FAISS's own IVF training: k-means, 10 iterations on at most 256 points per list
 *              km     the project's k-means on all points (kmeans-iter + gmm-iter Lloyd iterations)
 *              gmm    the project's GMM (kmeans-iter k-means + gmm-iter EM iterations)
 *   RULE       hard (nearest list), tau (r_ik > 1/nlist, the paper's), top2, soar, resp (flashgmm_ivf.h)
 *   TARGET     lists per vector for soar/resp (default 2: every vector), e.g. soar1.5
 *   SELECT     which vectors spill under a target: resp2 (GMM 2nd responsibility) or ratio (d1/d2)
 * or "default": what fgmm_ivf_params_init gives.
 * recall@10 = |top-10 returned ∩ true top-10| / 10; DCO = nlist + sizes of the probed lists.
 * The ratio columns are DCO of faiss-hard (mean over seeds) / DCO of the method, per seed: mean
 * and [min, max] over seeds; > 1 means fewer distance computations.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <unistd.h>

#include "bench_util.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_util.h"
#include "progress.h"

#define K 10
#define MAX_PROBES 32

static void die(const char* what) {
    fprintf(stderr, "ivf_curves: %s: %s\n", what, fgmm_get_last_error());
    exit(1);
}

static void normalize(float* x, idx_t n, int d) {
    for (idx_t i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
        for (int j = 0; j < d; j++) x[i * d + j] *= inv;
    }
}

#define MAX_METHODS 24
#define MAX_SEEDS 8

/* A method: quantizer source, spill rule and budget (see the header). */
typedef struct method {
    char name[48];
    int quant; /* 0 faiss, 1 km, 2 gmm, 3 the default's (FGMM_QUANT_AUTO: km or gmm by the data) */
    FgmmAssignRule rule;
    double target;
    FgmmSpillSelect select;
    int is_default;
} method;

typedef struct curve {
    int np;
    double recall[MAX_PROBES], dco[MAX_PROBES];
    double train_s, add_s, search_s, inflation, bytes;
    double train_cpu_s; /* the quantizer's training in CPU seconds of the process (all threads) */
} curve;

/* The progress line of one training (an FgmmProgressFn's user data). */
typedef struct progress {
    fgmm_eta eta;
    char prefix[96];
} progress;

static void on_progress(void* user, FgmmPhase phase, int iter, double obj, int reseeded) {
    (void)reseeded;
    progress* p = user;
    fgmm_eta_print(&p->eta, stderr, isatty(2), p->prefix, phase, iter, obj);
}

static int parse_method(const char* s, method* m) {
    char q[16] = "", r[16] = "", sel[16] = "";
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", s);
    if (!strcmp(s, "default")) { /* fgmm_ivf_params_init's quantizer and spill */
        FgmmIvfParams p;
        fgmm_ivf_params_init(&p);
        m->quant = p.quantizer == FGMM_QUANT_KMEANS ? 1 : p.quantizer == FGMM_QUANT_GMM ? 2 : 3;
        m->rule = p.rule;
        m->target = p.spill_target > 0 ? p.spill_target : 2;
        m->select = p.select;
        m->is_default = 1;
        return 0;
    }
    if (sscanf(s, "%15[a-z]-%15[a-z0-9.]-%15s", q, r, sel) < 2) return -1;
    m->quant = !strcmp(q, "faiss") ? 0 : !strcmp(q, "km") ? 1 : !strcmp(q, "gmm") ? 2 : -1;
    if (m->quant < 0) return -1;
    char* num = r + strcspn(r, "0123456789");
    m->target = *num ? atof(num) : 0;
    *num = 0;
    if (!strcmp(r, "hard")) m->rule = FGMM_ASSIGN_HARD;
    else if (!strcmp(r, "tau")) m->rule = FGMM_ASSIGN_TAU;
    else if (!strcmp(r, "top")) m->rule = FGMM_ASSIGN_TOPM;
    else if (!strcmp(r, "soar")) m->rule = FGMM_ASSIGN_SOAR;
    else if (!strcmp(r, "resp")) m->rule = FGMM_ASSIGN_RESP;
    else return -1;
    if (m->rule == FGMM_ASSIGN_TOPM && m->target < 1) m->target = 2;
    m->select = !strcmp(sel, "ratio") ? FGMM_SELECT_DIST_RATIO : FGMM_SELECT_RESP2;
    if (*sel && strcmp(sel, "ratio") && strcmp(sel, "resp2")) return -1;
    return 0;
}

/* Recall at growing nprobe, up to the first that reaches stop (the curve above it is not used). */
static void sweep(curve* c, const FgmmIvf* ivf, const float* xq, idx_t nq, const int32_t* gt, int gt_k,
                  const int* probes, int np, double stop) {
    idx_t* lab = malloc((size_t)nq * K * sizeof(idx_t));
    float* dist = malloc((size_t)nq * K * sizeof(float));
    int64_t* dco = malloc(nq * sizeof(int64_t));
    c->np = 0;
    c->inflation = fgmm_ivf_inflation(ivf);
    for (int p = 0; p < np && (p == 0 || c->recall[p - 1] < stop); p++) {
        if (fgmm_ivf_search(ivf, nq, xq, K, probes[p], dist, lab, dco)) die("search");
        double sd = 0;
        for (idx_t i = 0; i < nq; i++) sd += dco[i];
        c->recall[p] = fgmm_recall(nq, K, lab, gt_k, gt);
        c->dco[p] = sd / nq;
        c->np = p + 1;
    }
    free(lab);
    free(dist);
    free(dco);
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

/* Curves saved by an earlier run (curves.csv rows; methods and seeds in order of appearance; the
 * nprobe list of the longest curve). */
static int load_csv(const char* path, method* ms, int* nm, int* seeds, int* ns, curve cv[][MAX_SEEDS], int* probes,
                    int* np) {
    FILE* f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ivf_curves: cannot read %s\n", path);
        return -1;
    }
    char line[512], name[48];
    int seed, nprobe, rows = 0;
    double rec, dco, infl, bytes, tr, ad;
    *nm = *ns = *np = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%47[^,],%d,%d,%lf,%lf,%lf,%lf,%lf,%lf", name, &seed, &nprobe, &rec, &dco, &infl, &bytes, &tr,
                   &ad) != 9)
            continue; /* the header */
        int mi = 0, si = 0;
        while (mi < *nm && strcmp(ms[mi].name, name)) mi++;
        while (si < *ns && seeds[si] != seed) si++;
        if (mi == MAX_METHODS || si == MAX_SEEDS) continue;
        if (mi == *nm)
            memset(&ms[mi], 0, sizeof ms[mi]), snprintf(ms[mi].name, sizeof ms[mi].name, "%s", name), (*nm)++;
        if (si == *ns) seeds[(*ns)++] = seed;
        curve* c = &cv[mi][si];
        if (c->np == MAX_PROBES) continue;
        c->recall[c->np] = rec, c->dco[c->np] = dco;
        c->inflation = infl, c->bytes = bytes, c->train_s = tr, c->add_s = ad;
        if (++c->np > *np) probes[(*np)++] = nprobe;
        rows++;
    }
    fclose(f);
    if (!rows) {
        fprintf(stderr, "ivf_curves: no curve rows in %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char** argv) {
    const char *data = NULL, *bname = NULL, *qname = NULL, *qfile = NULL, *out = "results", *codes = "Flat";
    int nlist = 1024, norm = 0, gmm_iter = -1, km_iter = -1, probes[MAX_PROBES], np = 0; /* -1: not given */
    idx_t holdout = 0, max_rows = 0;
    FgmmBackend backend = FGMM_BACKEND_AUTO;
    const char* probe_s = "1,2,3,4,6,8,12,16,24,32,48,64,96,128,192,256";
    const char *methods_s =
                   "faiss-hard,km-hard,gmm-hard,gmm-tau,km-soar,gmm-soar,km-soar1.5-ratio,km-soar1.5-resp2,"
                   "gmm-soar1.5-ratio,gmm-soar1.5-resp2,gmm-resp1.5-resp2",
               *seeds_s = "1,2,3", *gt_file = NULL;
    float lambda = 1.0f;
    double stop_recall = 0.975;
    FgmmCovariance cov = FGMM_COV_ISOTROPIC;
    const char* from_csv = NULL;
    int points_per_list = -2, show = isatty(2); /* -2: not given */
    double tol = -1;
    long long init_points = -1;
    for (int i = 1; i < argc; i++) {
        const char* o = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(o, "--normalize")) {
            norm = 1;
            continue;
        }
        if (!strcmp(o, "--progress") || !strcmp(o, "--quiet")) {
            show = o[2] == 'p';
            continue;
        }
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
        else if (!strcmp(o, "--methods")) methods_s = v;
        else if (!strcmp(o, "--seeds")) seeds_s = v;
        else if (!strcmp(o, "--lambda")) lambda = (float)atof(v);
        else if (!strcmp(o, "--gt")) gt_file = v;
        else if (!strcmp(o, "--stop-recall")) stop_recall = atof(v);
        else if (!strcmp(o, "--from-csv")) from_csv = v;
        else if (!strcmp(o, "--points-per-list")) points_per_list = atoi(v);
        else if (!strcmp(o, "--tol")) tol = atof(v);
        else if (!strcmp(o, "--init-points")) init_points = atoll(v);
        else if (!strcmp(o, "--cov")) cov = !strcmp(v, "diag") ? FGMM_COV_DIAGONAL : FGMM_COV_ISOTROPIC;
        else if (!strcmp(o, "--backend"))
            backend = !strcmp(v, "cpu") ? FGMM_BACKEND_CPU : !strcmp(v, "gpu") ? FGMM_BACKEND_GPU : FGMM_BACKEND_AUTO;
        else {
            fprintf(stderr, "ivf_curves: unknown option %s (see the header of bench/ivf_curves.c)\n", o);
            return 2;
        }
    }
    static curve cv[MAX_METHODS][MAX_SEEDS];
    method ms[MAX_METHODS];
    int nm = 0, seeds[MAX_SEEDS], ns = 0;
    char path[4096], spec[64] = "", backend_used[8] = "-";
    idx_t nb = 0, nq = 0;
    int d = 0;
    if (from_csv) {
        if (load_csv(from_csv, ms, &nm, seeds, &ns, cv, probes, &np)) return 1;
        data = from_csv;
        mkdir(out, 0755);
        goto summary;
    }
    if (!data) {
        fprintf(stderr, "usage: ivf_curves --data FILE [--nlist N] [--out DIR] ...\n");
        return 2;
    }
    for (const char* s = probe_s; *s && np < MAX_PROBES; s = strchr(s, ',') ? strchr(s, ',') + 1 : s + strlen(s))
        if (atoi(s) > 0) probes[np++] = atoi(s);

    FgmmVecs vb, vq;
    if (fgmm_vecs_read(data, bname, max_rows, &vb)) die(data);
    float* xb = vecs_to_float(&vb);
    if (!xb) die("out of memory");
    nb = vb.n, d = vb.d;
    float* xq;
    if (holdout > 0) { /* the last `holdout` rows of a seeded shuffle become the queries */
        uint64_t s = 42;
        for (idx_t i = nb - 1; i > 0; i--) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            idx_t j = (idx_t)((s >> 33) % (uint64_t)(i + 1));
            for (int t = 0; t < d; t++) {
                float tmp = xb[i * d + t];
                xb[i * d + t] = xb[j * d + t];
                xb[j * d + t] = tmp;
            }
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
        if (vq.d != d) {
            fprintf(stderr, "ivf_curves: queries have d = %d, base d = %d\n", vq.d, d);
            return 1;
        }
        xq = vecs_to_float(&vq);
        if (!xq) die("out of memory");
        nq = vq.n;
        fgmm_vecs_free(&vq);
    }
    if (norm) normalize(xb, nb, d), normalize(xq, nq, d);
    mkdir(out, 0755);
    snprintf(path, sizeof path, "%s/gt100.ivecs", out);
    int32_t* gt = NULL;
    int gt_k = GT_K;
    FgmmVecs gv;
    if (gt_file) {
        if (fgmm_vecs_read(gt_file, NULL, 0, &gv) || gv.n != nq || gv.d < K || gv.dtype != FGMM_I32) die("--gt");
        gt = gv.data, gt_k = gv.d;
        printf("ground truth: %s (%d per query)\n", gt_file, gt_k);
    } else if (fgmm_vecs_read(path, NULL, 0, &gv) == 0 && gv.n == nq && gv.d == GT_K && gv.dtype == FGMM_I32) {
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

    snprintf(spec, sizeof spec, "IVF%d,%s", nlist, codes);
    for (const char* t = methods_s; *t && nm < MAX_METHODS; t += strcspn(t, ","), t += *t == ',') {
        char one[48];
        snprintf(one, sizeof one, "%.*s", (int)strcspn(t, ","), t);
        if (parse_method(one, &ms[nm])) {
            fprintf(stderr, "ivf_curves: bad method '%s'\n", one);
            return 2;
        }
        if (ms[nm].quant == 0 && ms[nm].target > 0 && ms[nm].select == FGMM_SELECT_RESP2 &&
            ms[nm].rule != FGMM_ASSIGN_TOPM) {
            fprintf(stderr, "ivf_curves: %s: FAISS centroids have no GMM: use -ratio\n", one);
            return 2;
        }
        nm++;
    }
    for (const char* t = seeds_s; *t && ns < MAX_SEEDS; t += strcspn(t, ","), t += *t == ',') seeds[ns++] = atoi(t);
    FaissClusteringParameters cp; /* what IndexIVF::train uses: Clustering's defaults with niter = 10 */
    faiss_ClusteringParameters_init(&cp);
    cp.niter = 10;
    for (int si = 0; si < ns; si++) {
        float* faiss_cent = NULL; /* per seed: FAISS centroids and the project's two models, shared by methods */
        FgmmModel* models[4] = {NULL, NULL, NULL, NULL};
        double qtrain_s[4] = {0, 0, 0, 0}, qtrain_cpu[4] = {0, 0, 0, 0};
        for (int mi = 0; mi < nm; mi++) {
            const method* m = &ms[mi];
            curve* c = &cv[mi][si];
            FaissIndex* index = NULL;
            if (faiss_index_factory(&index, d, spec, METRIC_L2)) die("faiss_index_factory");
            FgmmIvfParams p;
            fgmm_ivf_params_init(&p);
            if (gmm_iter >= 0 || !m->is_default) p.gmm.niter = gmm_iter >= 0 ? gmm_iter : 30;
            if (km_iter >= 0 || !m->is_default) p.gmm.kmeans_iter = km_iter >= 0 ? km_iter : 10;
            p.gmm.backend = backend;
            p.gmm.seed = (uint64_t)seeds[si];
            p.gmm.covariance = cov;
            if (points_per_list >= 0) p.max_points_per_list = points_per_list;
            else if (!m->is_default) p.max_points_per_list = 0;
            if (tol >= 0) p.gmm.tol = tol;
            if (init_points >= 0) p.gmm.max_init_points = init_points;
            progress pr;
            if (show) {
                FgmmParams g;
                fgmm_ivf_schedule(&p, &g);
                snprintf(pr.prefix, sizeof pr.prefix, "ivf_curves: seed %d %.47s", seeds[si], m->name);
                fgmm_eta_start(&pr.eta, g.kmeans_iter, g.niter, fgmm_eta_clock());
                p.gmm.progress = on_progress;
                p.gmm.progress_user = &pr;
            }
            if (!m->is_default) {
                p.quantizer = m->quant == 1 ? FGMM_QUANT_KMEANS : FGMM_QUANT_GMM;
                p.rule = m->rule;
                p.max_assign = m->rule == FGMM_ASSIGN_TOPM ? (int)m->target : p.max_assign;
                p.spill_target = m->rule == FGMM_ASSIGN_TOPM || m->target >= 2 ? 0 : m->target;
                p.select = m->select;
                p.soar_lambda = lambda;
            }
            double t0 = now_s(), c0 = cpu_s();
            if (m->quant == 0) { /* IndexIVF::train's own k-means (its parameters), with this seed */
                FaissIndex* q = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(index));
                if (!faiss_cent) {
                    FaissClustering* cl = NULL;
                    cp.seed = seeds[si];
                    if (faiss_Clustering_new_with_params(&cl, d, nlist, &cp) || faiss_Clustering_train(cl, nb, xb, q))
                        die("faiss k-means");
                    faiss_Clustering_free(cl);
                    qtrain_s[0] = now_s() - t0;
                    qtrain_cpu[0] = cpu_s() - c0;
                    faiss_cent = malloc((size_t)nlist * d * sizeof(float));
                    if (faiss_Index_reconstruct_n(q, 0, nlist, faiss_cent)) die("centroids");
                } else if (faiss_Index_add(q, nlist, faiss_cent)) {
                    die("centroids");
                }
                t0 = now_s();
                if (faiss_Index_train(index, nb, xb)) die("faiss train");
            }
            FgmmIvf* ivf = NULL;
            if (fgmm_ivf_wrap(index, &p, &ivf)) die("wrap");
            if (m->quant > 0 && !models[m->quant]) {
                FgmmTrainInfo info;
                int rc = fgmm_ivf_train(ivf, nb, xb, &info);
                if (show) fgmm_eta_end(&pr.eta, stderr, isatty(2));
                if (rc) die("train");
                qtrain_s[m->quant] = info.seconds;
                qtrain_cpu[m->quant] = cpu_s() - c0;
                snprintf(backend_used, sizeof backend_used, "%s", info.backend);
                printf("seed %d %s: %s backend, %d k-means + %d EM iterations, mean log-likelihood %.4f, %.1f s\n",
                       seeds[si], info.em_iterations ? "gmm" : "k-means", info.backend, info.kmeans_iterations,
                       info.em_iterations, info.mean_loglik, info.seconds);
                const FgmmModel* mm = fgmm_ivf_model(ivf);
                fgmm_model_new(&models[m->quant], fgmm_model_k(mm), d, fgmm_model_covariance(mm), fgmm_model_means(mm),
                               fgmm_model_variances(mm), fgmm_model_weights(mm));
                t0 += info.seconds; /* below: only the rest of the index's training (IVF-PQ: the PQ) */
            } else if (m->quant > 0) {
                if (fgmm_ivf_set_gmm(ivf, models[m->quant], nb, xb)) die("set gmm");
            }
            c->train_s = qtrain_s[m->quant] + (now_s() - t0);
            c->train_cpu_s = qtrain_cpu[m->quant];
            t0 = now_s();
            if (fgmm_ivf_add(ivf, nb, xb, NULL, NULL)) die("add");
            c->add_s = now_s() - t0;
            c->bytes = index_bytes(index, codes, nlist, d);
            t0 = now_s();
            sweep(c, ivf, xq, nq, gt, gt_k, probes, np, stop_recall);
            c->search_s = now_s() - t0;
            printf(
                "seed %d %-22s train %.2f s (quantizer %.2f cpu-s), add %.2f s, %.3f lists/vector, %.1f MB, "
                "searches %.2f s\n",
                seeds[si], m->name, c->train_s, c->train_cpu_s, c->add_s, c->inflation, c->bytes / 1e6, c->search_s);
            fflush(stdout);
            fgmm_ivf_free(ivf);
            faiss_Index_free(index);
        }
        free(faiss_cent);
        for (int q = 0; q < 4; q++) fgmm_model_free(models[q]);
    }

    snprintf(path, sizeof path, "%s/curves.csv", out);
    FILE* f = fopen(path, "w");
    if (!f) die(path);
    fprintf(f, "method,seed,nprobe,recall10,dco,lists_per_vector,bytes,train_s,add_s\n");
    for (int mi = 0; mi < nm; mi++)
        for (int si = 0; si < ns; si++)
            for (int q = 0; q < cv[mi][si].np; q++)
                fprintf(f, "%s,%d,%d,%.5f,%.1f,%.4f,%.0f,%.3f,%.3f\n", ms[mi].name, seeds[si], probes[q],
                        cv[mi][si].recall[q], cv[mi][si].dco[q], cv[mi][si].inflation, cv[mi][si].bytes,
                        cv[mi][si].train_s, cv[mi][si].add_s);
    fclose(f);

summary:; /* the reference: faiss-hard's DCO at each recall, mean over seeds (or the first method's) */
    int ref = 0;
    for (int mi = 0; mi < nm; mi++)
        if (!strcmp(ms[mi].name, "faiss-hard")) {
            ref = mi;
            break;
        }
    const double levels[3] = {0.80, 0.90, 0.95};
    double ref_dco[3];
    for (int l = 0; l < 3; l++) {
        double sum = 0;
        int cnt = 0;
        for (int si = 0; si < ns; si++) {
            double v = dco_at(&cv[ref][si], levels[l]);
            if (v > 0) sum += v, cnt++;
        }
        ref_dco[l] = cnt == ns ? sum / cnt : -1;
    }
    snprintf(path, sizeof path, "%s/summary.md", out);
    f = fopen(path, "w");
    if (!f) die(path);
    FILE* outs[2] = {stdout, f};
    for (int o = 0; o < 2; o++) {
        FILE* w = outs[o];
        if (from_csv) fprintf(w, "\n%s: %d seeds; recall@10 vs DCO (DCO = nlist + scanned list entries)\n", data, ns);
        else
            fprintf(
                w,
                "\n%s: %lld x %d, %lld queries, %s, %d seeds; recall@10 vs DCO (DCO = nlist + scanned list entries)\n",
                data, (long long)nb, d, (long long)nq, spec, ns);
        fprintf(
            w,
            "reference %s: DCO@0.90 %.0f, DCO@0.95 %.0f (mean over seeds); the project's quantizers trained on: %s\n\n",
            ms[ref].name, ref_dco[1], ref_dco[2], backend_used);
        fprintf(
            w,
            "| method | lists/vector | MB | train s | add s | DCO@0.90 | ratio @0.90 mean [min, max] | ratio @0.95 mean [min, max] | recall at ref DCO@0.90 |\n");
        fprintf(w, "|---|---:|---:|---:|---:|---:|---|---|---:|\n");
        for (int mi = 0; mi < nm; mi++) {
            double infl = 0, mb = 0, tr = 0, ad = 0, d9 = 0, rat = 0;
            double rs[2] = {0, 0}, lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
            int ok[2] = {0, 0}, okr = 0;
            for (int si = 0; si < ns; si++) {
                const curve* c = &cv[mi][si];
                infl += c->inflation / ns, mb += c->bytes / 1e6 / ns, tr += c->train_s / ns, ad += c->add_s / ns;
                d9 += dco_at(c, 0.90) / ns;
                for (int l = 1; l < 3; l++) {
                    double v = dco_at(c, levels[l]);
                    if (v <= 0 || ref_dco[l] <= 0) continue;
                    double r = ref_dco[l] / v;
                    rs[l - 1] += r, ok[l - 1]++;
                    if (r < lo[l - 1]) lo[l - 1] = r;
                    if (r > hi[l - 1]) hi[l - 1] = r;
                }
                double rr = recall_at(c, ref_dco[1]);
                if (rr >= 0) rat += rr, okr++;
            }
            char cell[2][64], rc[32];
            for (int l = 0; l < 2; l++)
                snprintf(cell[l], sizeof cell[l], ok[l] == ns ? "%.3f [%.3f, %.3f]" : "-", rs[l] / ns, lo[l], hi[l]);
            snprintf(rc, sizeof rc, okr == ns ? "%.4f" : "-", rat / ns);
            fprintf(w, "| %s | %.3f | %.1f | %.2f | %.2f | %.0f | %s | %s | %s |\n", ms[mi].name, infl, mb, tr, ad, d9,
                    cell[0], cell[1], rc);
        }
        fprintf(w, "\nseed %d, recall@10 / mean DCO per query:\n\n| nprobe |", seeds[0]);
        for (int mi = 0; mi < nm; mi++) fprintf(w, " %s |", ms[mi].name);
        fprintf(w, "\n|---:|");
        for (int mi = 0; mi < nm; mi++) fprintf(w, "---|");
        fprintf(w, "\n");
        int rows = 0;
        for (int mi = 0; mi < nm; mi++) rows = cv[mi][0].np > rows ? cv[mi][0].np : rows;
        for (int q = 0; q < rows; q++) {
            fprintf(w, "| %d |", probes[q]);
            for (int mi = 0; mi < nm; mi++)
                if (q < cv[mi][0].np) fprintf(w, " %.4f / %.0f |", cv[mi][0].recall[q], cv[mi][0].dco[q]);
                else fprintf(w, " - |");
            fprintf(w, "\n");
        }
    }
    fclose(f);
    if (from_csv) printf("\nwrote %s/summary.md\n", out);
    else printf("\nwrote %s/curves.csv and %s/summary.md\n", out, out);
    return 0;
}
