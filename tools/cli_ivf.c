/* SPDX-License-Identifier: MIT */
/* cli_ivf.c: `flashgmm ivf build | search | export`: an IVF index from a vector file, its recall,
 * distance computations and queries per second, and a plain FAISS copy, through capi/flashgmm_ivf.h.
 * Train's options (--iter, --backend, ...) are parsed by cli_args.c. */
#define _POSIX_C_SOURCE 200809L
#include "cli_ivf.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "cli_args.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"

const char fgmm_cli_ivf_usage[] =
    "  flashgmm ivf build DATA --out INDEX [options]   train and fill an IVF index (FAISS file + sidecars)\n"
    "  flashgmm ivf search INDEX QUERIES [options]     recall@k, distance computations and QPS per nprobe\n"
#ifdef FGMM_IVF_EXPORT
    "  flashgmm ivf export INDEX OUT                   a plain FAISS file that any FAISS searches correctly\n"
#endif
    "  (flashgmm ivf COMMAND --help: its options)\n";

static const char build_usage[] =
    "usage: flashgmm ivf build DATA --out INDEX [options]\n"
    "Trains an IVF index on the rows of DATA, adds them, writes INDEX: a FAISS file with --quantizer\n"
    "faiss, else one flashgmm index file (the FAISS index, spill settings and model; docs/FORMAT.md).\n"
    "  --nlist N            lists (default 1024, fewer where DATA has < 39 rows per list: a power of 2)\n"
    "  --factory SPEC       FAISS index_factory string instead of --nlist (e.g. IVF1024,PQ16; default\n"
    "                       IVF<nlist>,Flat)\n"
    "  --quantizer Q        auto | gmm | kmeans | faiss (default auto: gmm, or kmeans for L2-normalised\n"
    "                       data; faiss: FAISS's own training and add, one list per vector: the baseline)\n"
    "  --rule R             soar | resp | tau | topm | hard: extra lists per vector (default soar)\n"
    "  --spill-target T     soar, resp: average lists per vector in [1, 2]; 0 = every vector (default 1.5)\n"
    "  --select S           resp2 | ratio: which vectors spill under a target (default resp2)\n"
    "  --lambda L           soar's lambda >= 0 (default 1)\n"
    "  --tau T              tau: every list with responsibility > T; 0 = 1/nlist (default 0)\n"
    "  --max-assign M       tau, topm: lists per vector at most (default 4)\n"
    "  --points-per-list P  train the quantizer on at most P sampled rows per list; 0 = all (default: by\n"
    "                       backend: CPU 256 and at most 16 k-means iterations, GPU all; docs/cpu.md)\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --dataset NAME       HDF5 dataset of DATA (default: train, then dataset)\n"
    "  --max-rows N         only the first N rows\n"
    "  --iter N             EM iterations (default 90 here; kmeans quantizer: --kmeans-iter + --iter Lloyd)\n"
    "  --kmeans-iter N --cov iso|diag --backend auto|cpu|gpu --precision fast|exact --tol T --seed S\n"
    "                       as in flashgmm train\n";

static const char search_usage[] =
    "usage: flashgmm ivf search INDEX QUERIES [options]\n"
    "Searches INDEX (from ivf build, or any FAISS IVF-Flat/PQ L2 file) for the rows of QUERIES and prints,\n"
    "per nprobe: recall@k (with --gt), DCO (distance computations per query: nlist + list entries\n"
    "scanned) and QPS (queries per second: all queries in one call, the fastest of --repeat runs).\n"
    "An index with spill sidecars is searched by fgmm_ivf_search (distinct ids), a plain one by\n"
    "FAISS's own search.\n"
    "  --k K                neighbours per query (default 10)\n"
    "  --nprobe A,B,...     lists scanned per query (default 1,2,4,8,16,32,64; capped at nlist)\n"
    "  --gt FILE            true neighbour ids per query, nearest first (ivecs or HDF5, >= k columns)\n"
    "  --gt-dataset NAME    HDF5 dataset of --gt (default: neighbors, then match)\n"
    "  --dataset NAME       HDF5 dataset of QUERIES (default: test, then query)\n"
    "  --max-queries N      only the first N queries\n"
    "  --repeat R           timed runs per nprobe (default 3)\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --engine E           auto | fgmm | faiss: who searches (default auto: as above; faiss only for a\n"
    "                       plain index, whose FAISS search would return a spilled index's copies)\n";

#ifdef FGMM_IVF_EXPORT
static const char export_usage[] =
    "usage: flashgmm ivf export INDEX OUT\n"
    "Writes INDEX (from ivf build) to OUT as a plain FAISS index without spilled copies, which FAISS\n"
    "alone searches correctly (distinct ids); see docs/FORMAT.md.\n";
#endif

enum { QUANT_FAISS = -1 };

typedef struct choice {
    const char* name;
    int value;
} choice;

static const choice quantizers[] = {{"auto", FGMM_QUANT_AUTO},
                                    {"gmm", FGMM_QUANT_GMM},
                                    {"kmeans", FGMM_QUANT_KMEANS},
                                    {"faiss", QUANT_FAISS},
                                    {NULL, 0}};
static const choice rules[] = {{"soar", FGMM_ASSIGN_SOAR}, {"resp", FGMM_ASSIGN_RESP}, {"tau", FGMM_ASSIGN_TAU},
                               {"topm", FGMM_ASSIGN_TOPM}, {"hard", FGMM_ASSIGN_HARD}, {NULL, 0}};
static const choice selects[] = {{"resp2", FGMM_SELECT_RESP2}, {"ratio", FGMM_SELECT_DIST_RATIO}, {NULL, 0}};

/* v among c's names, else a message listing them and 0. */
static int pick(const char* opt, const char* v, const choice* c, int* out) {
    for (const choice* t = c; t->name; t++)
        if (!strcmp(v, t->name)) return *out = t->value, 1;
    fprintf(stderr, "flashgmm: %s '%s': want one of", opt, v);
    for (const choice* t = c; t->name; t++) fprintf(stderr, "%s %s", t == c ? "" : ",", t->name);
    fprintf(stderr, "\n");
    return 0;
}

static int num(const char* opt, const char* v, double lo, double hi, double* out) {
    char* end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !(x >= lo && x <= hi)) {
        fprintf(stderr, "flashgmm: %s '%s': want a number in [%g, %g]\n", opt, v, lo, hi);
        return 0;
    }
    return *out = x, 1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int has_help(int argc, char** argv) {
    for (int i = 3; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

static double file_mb(const char* path) {
    struct stat s;
    return stat(path, &s) == 0 ? s.st_size / 1e6 : 0;
}

/* path + suffix in buf (n bytes); 0 if it does not fit. */
static int suffixed(char* buf, size_t n, const char* path, const char* suffix) {
    return snprintf(buf, n, "%s%s", path, suffix) < (int)n;
}

/* The rows as floats (uint8 widened); NULL after a message for int32 data or no memory. */
static float* as_float(const FgmmVecs* v, const char* what) {
    if (v->dtype == FGMM_I32) {
        fprintf(stderr, "flashgmm: %s: int32 rows are ids, not vectors\n", what);
        return NULL;
    }
    size_t m = (size_t)v->n * (size_t)v->d;
    float* f = malloc(m * sizeof(float));
    if (!f) {
        fprintf(stderr, "flashgmm: %s: out of memory for %zu floats\n", what, m);
        return NULL;
    }
    for (size_t i = 0; i < m; i++)
        f[i] = v->dtype == FGMM_U8 ? ((const uint8_t*)v->data)[i] : ((const float*)v->data)[i];
    return f;
}

static int faiss_fail(const char* what) {
    const char* e = faiss_get_last_error();
    fprintf(stderr, "flashgmm: %s: %s\n", what, e ? e : "FAISS failed");
    return 1;
}

/* ---- build ---------------------------------------------------------------------------- */

/* FAISS's own IVF training and add; the index written to a temporary name, then renamed, and
 * sidecars of an earlier build at this path removed (they would not match the new centroids). */
static int build_faiss(FaissIndex* index, fgmm_idx_t n, const float* x, const char* out, double* train_s,
                       double* add_s) {
    double t0 = now_s();
    if (faiss_Index_train(index, n, x)) return faiss_fail("faiss train");
    *train_s = now_s() - t0;
    t0 = now_s();
    if (faiss_Index_add(index, n, x)) return faiss_fail("faiss add");
    *add_s = now_s() - t0;
    char tmp[4096], side[4096];
    if (!suffixed(tmp, sizeof tmp, out, ".tmp")) return fprintf(stderr, "flashgmm: '%s': path too long\n", out), 1;
    if (faiss_write_index_fname(index, tmp)) return unlink(tmp), faiss_fail(out);
    if (rename(tmp, out)) return unlink(tmp), fprintf(stderr, "flashgmm: %s: %s\n", out, strerror(errno)), 1;
    const char* sfx[2] = {".fgmm", ".gmm"};
    for (int i = 0; i < 2; i++) {
        struct stat s;
        if (suffixed(side, sizeof side, out, sfx[i]) && lstat(side, &s) == 0 && S_ISREG(s.st_mode)) unlink(side);
    }
    return 0;
}

static int ivf_build(int argc, char** argv) {
    if (has_help(argc, argv)) return fputs(build_usage, stdout), 0;
    if (argc < 4 || argv[3][0] == '-') return fputs(build_usage, stderr), 2;
    const char *data = argv[3], *out = NULL, *factory = NULL;
    long long nlist = 0, threads = 0, iv;
    int quant = FGMM_QUANT_AUTO, iter_given = 0, spill_given = 0;
    FgmmIvfParams ip;
    fgmm_ivf_params_init(&ip);
    char** rest = malloc((size_t)argc * sizeof(char*)); /* train's options, for fgmm_cli_parse */
    if (!rest) return fprintf(stderr, "flashgmm: out of memory\n"), 1;
    int nrest = 0, rc = 2;
    rest[nrest++] = argv[0];
    for (int a = 4; a < argc; a += 2) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        double dv;
        int e;
        if (!v && strcmp(o, "--progress") && strcmp(o, "--quiet")) {
            fprintf(stderr, "flashgmm: %s needs a value\n", o);
            goto done;
        }
        if (!strcmp(o, "--out")) {
            if (out) {
                fprintf(stderr, "flashgmm: --out given twice\n");
                goto done;
            }
            out = v;
        } else if (!strcmp(o, "--factory")) factory = v;
        else if (!strcmp(o, "--nlist")) {
            if (!fgmm_cli_int(o, v, 1, 1 << 24, &nlist)) goto done;
        } else if (!strcmp(o, "--threads")) {
            if (!fgmm_cli_int(o, v, 1, 4096, &threads)) goto done;
        } else if (!strcmp(o, "--quantizer")) {
            if (!pick(o, v, quantizers, &quant)) goto done;
        } else if (!strcmp(o, "--rule")) {
            if (!pick(o, v, rules, &e)) goto done;
            ip.rule = (FgmmAssignRule)e;
            spill_given = 1;
        } else if (!strcmp(o, "--select")) {
            if (!pick(o, v, selects, &e)) goto done;
            ip.select = (FgmmSpillSelect)e;
            spill_given = 1;
        } else if (!strcmp(o, "--spill-target")) {
            if (!num(o, v, 0, 2, &dv)) goto done;
            if (dv > 0 && dv < 1) {
                fprintf(stderr, "flashgmm: --spill-target '%s': want 0 or a number in [1, 2]\n", v);
                goto done;
            }
            ip.spill_target = dv, spill_given = 1;
        } else if (!strcmp(o, "--lambda")) {
            if (!num(o, v, 0, 1e6, &dv)) goto done;
            ip.soar_lambda = (float)dv, spill_given = 1;
        } else if (!strcmp(o, "--tau")) {
            if (!num(o, v, 0, 1, &dv)) goto done;
            ip.tau = dv, spill_given = 1;
        } else if (!strcmp(o, "--max-assign")) {
            if (!fgmm_cli_int(o, v, 1, 64, &iv)) goto done;
            ip.max_assign = (int)iv, spill_given = 1;
        } else if (!strcmp(o, "--points-per-list")) {
            if (!fgmm_cli_int(o, v, 0, 1 << 30, &iv)) goto done;
            ip.max_points_per_list = (int)iv;
        } else if (!strcmp(o, "--k")) {
            fprintf(stderr, "flashgmm: ivf build takes --nlist, not --k\n");
            goto done;
        } else if (!strcmp(o, "--progress") || !strcmp(o, "--quiet")) rest[nrest++] = argv[a--]; /* flags: no value */
        else {
            iter_given |= !strcmp(o, "--iter");
            rest[nrest++] = argv[a], rest[nrest++] = argv[a + 1];
        }
    }
    if (!out) {
        fprintf(stderr, "flashgmm: ivf build needs --out INDEX\n");
        goto done;
    }
    if (factory && nlist) {
        fprintf(stderr, "flashgmm: give --nlist or --factory, not both\n");
        goto done;
    }
    if (quant == QUANT_FAISS && (spill_given || ip.max_points_per_list > 0)) {
        fprintf(stderr,
                "flashgmm: --quantizer faiss builds a plain FAISS index: no spill or --points-per-list options\n");
        goto done;
    }
    fgmm_cli_args args;
    if (fgmm_cli_parse(nrest, rest, 1, "ivf build", &args)) goto done;
    if (fgmm_cli_check_out(data, out)) goto done;
    rc = 1;
    if (threads) omp_set_num_threads((int)threads);
    if (quant != QUANT_FAISS) fgmm_cli_prestart(&args.p);
    FgmmVecs v;
    if (fgmm_cli_read(&args, data, 0, args.max_rows, 0, &v)) {
        rc = fgmm_cli_fail(data);
        goto done;
    }
    float* x = as_float(&v, data);
    fgmm_idx_t n = v.n;
    int d = v.d;
    printf("data: %s, %lld x %d %s\n", data, (long long)n, d, fgmm_cli_dtype_name(v.dtype));
    fgmm_vecs_free(&v);
    if (!x) goto done;
    char spec[256];
    if (!factory) {
        if (!nlist) /* FAISS warns below 39 training points per centroid */
            for (nlist = 1024; nlist > 1 && nlist * 39 > n; nlist /= 2) {}
        snprintf(spec, sizeof spec, "IVF%lld,Flat", nlist);
        factory = spec;
    }
    FaissIndex* index = NULL;
    if (faiss_index_factory(&index, d, factory, METRIC_L2)) {
        rc = faiss_fail(factory);
        free(x);
        goto done;
    }
    double train_s = 0, add_s = 0;
    if (quant == QUANT_FAISS) {
        printf("training the quantizer: %s, FAISS's k-means...\n", factory);
        fflush(stdout);
        rc = build_faiss(index, n, x, out, &train_s, &add_s);
    } else {
        ip.gmm = args.p;
        if (!iter_given) { /* ivf's default iterations, not train's */
            FgmmIvfParams def;
            fgmm_ivf_params_init(&def);
            ip.gmm.niter = def.gmm.niter;
        }
        ip.quantizer = (FgmmQuantizer)quant;
        fgmm_cli_args plan =
            args; /* the progress line (--progress, or stderr a terminal) plans the schedule's iterations */
        fgmm_ivf_schedule(&ip, &plan.p);
        fgmm_cli_progress_begin(&plan, 0);
        ip.gmm.progress = plan.p.progress, ip.gmm.progress_user = plan.p.progress_user;
        FgmmIvf* ivf = NULL;
        FgmmTrainInfo info;
        if (fgmm_ivf_wrap(index, &ip, &ivf)) {
            rc = fgmm_cli_fail(factory);
            faiss_Index_free(index);
            free(x);
            goto done;
        }
        printf("training the quantizer: %s, %s, on %lld rows...\n", factory,
               quant == FGMM_QUANT_GMM      ? "GMM"
               : quant == FGMM_QUANT_KMEANS ? "k-means"
                                            : "auto (GMM, or k-means on normalised data)",
               (long long)n);
        fflush(stdout);
        double t0 = now_s();
        int trc = fgmm_ivf_train(ivf, n, x, &info);
        fgmm_cli_progress_end();
        if (trc) rc = fgmm_cli_fail("train");
        else {
            train_s = now_s() - t0;
            printf("quantizer: %s, %d k-means + %d EM iterations on the %s backend, %.2f s\n",
                   info.em_iterations ? "GMM means" : "k-means", info.kmeans_iterations, info.em_iterations,
                   info.backend, info.seconds);
            t0 = now_s();
            if (fgmm_ivf_add(ivf, n, x, NULL, NULL)) rc = fgmm_cli_fail("add");
            else if (add_s = now_s() - t0, fgmm_ivf_write(ivf, out)) rc = fgmm_cli_fail(out);
            else {
                rc = 0;
                printf("spill: %.3f lists per vector\n", fgmm_ivf_inflation(ivf));
            }
        }
        fgmm_ivf_free(ivf);
    }
    if (!rc)
        printf("build: %s, train %.2f s, add %.2f s, total %.2f s; %lld list entries; wrote %s (%.2f MB)%s\n", factory,
               train_s, add_s, train_s + add_s, (long long)faiss_Index_ntotal(index), out, file_mb(out),
               quant == QUANT_FAISS ? "" : " (flashgmm index file)");
    faiss_Index_free(index);
    free(x);
done:
    free(rest);
    return rc;
}

/* ---- search --------------------------------------------------------------------------- */

/* Read in a child process (a crafted HDF5 file cannot end the CLI). Queries: --dataset, else HDF5's test then query, else the file's default. */
static int read_queries(const char* path, const char* name, fgmm_idx_t max, FgmmVecs* q) {
    if (name) return fgmm_vecs_read_isolated(path, name, max, q);
    if (!fgmm_vecs_read_isolated(path, "test", max, q) || !fgmm_vecs_read_isolated(path, "query", max, q)) return 0;
    return fgmm_vecs_read_isolated(path, NULL, max, q);
}

static int read_gt(const char* path, const char* name, FgmmVecs* g) {
    if (name) return fgmm_vecs_read_isolated(path, name, 0, g);
    const char* ext = strrchr(path, '.');
    if (ext && (!strcmp(ext, ".h5") || !strcmp(ext, ".hdf5")))
        if (!fgmm_vecs_read_isolated(path, "neighbors", 0, g) || !fgmm_vecs_read_isolated(path, "match", 0, g))
            return 0;
    return fgmm_vecs_read_isolated(path, name, 0, g);
}

typedef struct search_opts {
    long long k, repeat, threads, max_queries;
    int probes[64], np, engine;
    const char *gt, *gt_dataset, *dataset;
} search_opts;

enum { ENGINE_AUTO, ENGINE_FGMM, ENGINE_FAISS };
static const choice engines[] = {{"auto", ENGINE_AUTO}, {"fgmm", ENGINE_FGMM}, {"faiss", ENGINE_FAISS}, {NULL, 0}};

static int parse_search(int argc, char** argv, search_opts* s) {
    memset(s, 0, sizeof *s);
    s->k = 10, s->repeat = 3;
    const char* probes = "1,2,4,8,16,32,64";
    for (int a = 5; a < argc; a += 2) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!v) return fprintf(stderr, "flashgmm: %s needs a value\n", o), 2;
        if (!strcmp(o, "--k")) {
            if (!fgmm_cli_int(o, v, 1, 1024, &s->k)) return 2;
        } else if (!strcmp(o, "--repeat")) {
            if (!fgmm_cli_int(o, v, 1, 1000, &s->repeat)) return 2;
        } else if (!strcmp(o, "--threads")) {
            if (!fgmm_cli_int(o, v, 1, 4096, &s->threads)) return 2;
        } else if (!strcmp(o, "--max-queries")) {
            if (!fgmm_cli_int(o, v, 1, INT64_MAX / 2, &s->max_queries)) return 2;
        } else if (!strcmp(o, "--nprobe")) probes = v;
        else if (!strcmp(o, "--gt")) s->gt = v;
        else if (!strcmp(o, "--gt-dataset")) s->gt_dataset = v;
        else if (!strcmp(o, "--dataset")) s->dataset = v;
        else if (!strcmp(o, "--engine")) {
            if (!pick(o, v, engines, &s->engine)) return 2;
        } else
            return fprintf(stderr,
                           "flashgmm: ivf search: unknown option %s (want --k, --nprobe, --gt, --gt-dataset, "
                           "--dataset, --max-queries, --repeat, --threads, --engine)\n",
                           o),
                   2;
    }
    for (const char* t = probes; *t;) {
        char one[32];
        size_t len = strcspn(t, ",");
        long long p;
        snprintf(one, sizeof one, "%.*s", (int)(len < 31 ? len : 31), t);
        if (s->np == 64) return fprintf(stderr, "flashgmm: --nprobe: at most 64 values\n"), 2;
        if (!fgmm_cli_int("--nprobe", one, 1, 1 << 24, &p)) return 2;
        s->probes[s->np++] = (int)p;
        t += len + (t[len] == ',');
    }
    if (!s->np) return fprintf(stderr, "flashgmm: --nprobe: want a list of integers >= 1, e.g. 1,2,4,8\n"), 2;
    return 0;
}

static int ivf_search(int argc, char** argv) {
    if (has_help(argc, argv)) return fputs(search_usage, stdout), 0;
    if (argc < 5 || argv[3][0] == '-' || argv[4][0] == '-') return fputs(search_usage, stderr), 2;
    const char *path = argv[3], *qpath = argv[4];
    search_opts s;
    if (parse_search(argc, argv, &s)) return 2;
    if (s.threads) omp_set_num_threads((int)s.threads);
    FgmmIvfParams ip; /* a plain FAISS index: one list per vector; sidecars replace these */
    fgmm_ivf_params_init(&ip);
    ip.rule = FGMM_ASSIGN_HARD;
    FgmmIvf* ivf = NULL;
    if (fgmm_ivf_read(path, &ip, &ivf)) return fgmm_cli_fail(path);
    int spilled = fgmm_ivf_inflation(ivf) > 1.0; /* vectors in several lists */
    if (spilled && s.engine == ENGINE_FAISS) {
        fgmm_ivf_free(ivf);
        return fprintf(stderr,
                       "flashgmm: %s has spilled copies: FAISS's search would return them (--engine auto or fgmm)\n",
                       path),
               2;
    }
    int by_fgmm = spilled || s.engine == ENGINE_FGMM;
    FaissIndex* index = fgmm_ivf_index(ivf);
    FaissIndexIVF* iv = faiss_IndexIVF_cast(index);
    int rc = 1, d = faiss_Index_d(index), nlist = (int)faiss_IndexIVF_nlist(iv);
    FgmmVecs qv = {0}, gv = {0};
    float *q = NULL, *dist = NULL;
    idx_t* lab = NULL;
    int64_t* dco = NULL;
    if (read_queries(qpath, s.dataset, s.max_queries, &qv)) {
        rc = fgmm_cli_fail(qpath);
        goto done;
    }
    if (qv.d != d) {
        fprintf(stderr, "flashgmm: %s: queries have d = %d, the index %d\n", qpath, qv.d, d);
        goto done;
    }
    if (!(q = as_float(&qv, qpath))) goto done;
    idx_t nq = qv.n;
    if (s.gt) {
        if (read_gt(s.gt, s.gt_dataset, &gv)) {
            rc = fgmm_cli_fail(s.gt);
            goto done;
        }
        if (gv.dtype != FGMM_I32 || gv.n < nq || gv.d < s.k) {
            fprintf(stderr, "flashgmm: %s: want int32 ids, >= %lld rows of >= %lld (got %lld x %d %s)\n", s.gt,
                    (long long)nq, s.k, (long long)gv.n, gv.d, fgmm_cli_dtype_name(gv.dtype));
            goto done;
        }
    }
    dist = malloc((size_t)nq * s.k * sizeof(float));
    lab = malloc((size_t)nq * s.k * sizeof(idx_t));
    dco = malloc((size_t)nq * sizeof(int64_t));
    if (!dist || !lab || !dco) {
        fprintf(stderr, "flashgmm: out of memory\n");
        goto done;
    }
    idx_t entries = faiss_Index_ntotal(index);
    double infl = fgmm_ivf_inflation(ivf);
    printf("index: %s, nlist %d, %lld list entries (%.3f lists per vector), %.2f MB; %s: searched by %s\n", path, nlist,
           (long long)entries, infl, file_mb(path), spilled ? "spilled" : "plain FAISS",
           by_fgmm ? "fgmm_ivf_search" : "FAISS (faiss_Index_search)");
    printf("queries: %s, %lld; k %lld; %d threads; QPS from the fastest of %lld runs\n", qpath, (long long)nq, s.k,
           omp_get_max_threads(), s.repeat);
    printf("%8s %10s %10s %10s\n", "nprobe", "recall", "DCO", "QPS");
    for (int p = 0; p < s.np; p++) {
        int np = s.probes[p] < nlist ? s.probes[p] : nlist;
        if (p && np == (s.probes[p - 1] < nlist ? s.probes[p - 1] : nlist)) continue;
        /* DCO from one untimed search; then the timed runs, by the engine a user of this file would use */
        if (fgmm_ivf_search(ivf, nq, q, s.k, np, dist, lab, dco)) {
            rc = fgmm_cli_fail("search");
            goto done;
        }
        if (!by_fgmm) faiss_IndexIVF_set_nprobe(iv, (size_t)np);
        double best = INFINITY;
        for (long long r = 0; r < s.repeat; r++) {
            double t0 = now_s();
            int e = by_fgmm ? fgmm_ivf_search(ivf, nq, q, s.k, np, dist, lab, NULL)
                            : faiss_Index_search(index, nq, q, s.k, dist, lab);
            double t = now_s() - t0;
            if (e) {
                rc = by_fgmm ? fgmm_cli_fail("search") : faiss_fail("faiss search");
                goto done;
            }
            if (t < best) best = t;
        }
        double sd = 0;
        for (idx_t i = 0; i < nq; i++) sd += (double)dco[i];
        char rec[32] = "-";
        if (s.gt) snprintf(rec, sizeof rec, "%.4f", fgmm_recall(nq, (int)s.k, lab, gv.d, gv.data));
        printf("%8d %10s %10.1f %10.0f\n", np, rec, sd / nq, nq / best);
        fflush(stdout);
    }
    rc = 0;
done:
    free(q), free(dist), free(lab), free(dco);
    if (qv.data) fgmm_vecs_free(&qv);
    if (gv.data) fgmm_vecs_free(&gv);
    fgmm_ivf_free(ivf);
    return rc;
}

/* ---- export --------------------------------------------------------------------------- */

#ifdef FGMM_IVF_EXPORT
static int ivf_export(int argc, char** argv) {
    if (has_help(argc, argv)) return fputs(export_usage, stdout), 0;
    if (argc != 5) return fputs(export_usage, stderr), 2;
    int rc = fgmm_cli_check_out(argv[3], argv[4]);
    if (rc) return rc;
    FgmmIvf* ivf = NULL;
    if (fgmm_ivf_read(argv[3], NULL, &ivf)) return fgmm_cli_fail(argv[3]);
    rc = fgmm_ivf_write_faiss(ivf, argv[4]) ? fgmm_cli_fail(argv[4]) : 0;
    if (!rc) printf("wrote %s (%.2f MB): a plain FAISS index\n", argv[4], file_mb(argv[4]));
    fgmm_ivf_free(ivf);
    return rc;
}
#endif

int fgmm_cli_ivf(int argc, char** argv) {
    const char* sub = argc > 2 ? argv[2] : "";
    if (!strcmp(sub, "build")) return ivf_build(argc, argv);
    if (!strcmp(sub, "search")) return ivf_search(argc, argv);
#ifdef FGMM_IVF_EXPORT
    if (!strcmp(sub, "export")) return ivf_export(argc, argv);
#endif
    int help = !strcmp(sub, "-h") || !strcmp(sub, "--help");
    if (!help)
        fprintf(stderr, "flashgmm: ivf: %s%s%s\n", *sub ? "unknown command '" : "a command is needed", sub,
                *sub ? "'" : "");
    fputs("usage:\n", help ? stdout : stderr);
    fputs(fgmm_cli_ivf_usage, help ? stdout : stderr);
    return help ? 0 : 2;
}
