/* cli.c: the `flashgmm` command line. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flashgmm.h"
#include "flashgmm_io.h"
#include "internal.h"

static void usage(FILE* f) {
    fprintf(f,
            "usage:\n"
            "  flashgmm train FILE [options]   train a GMM, print per-iteration log-likelihood\n"
            "      --k K              components (default 1024, at most rows)\n"
            "      --iter N           EM iterations (default 30)\n"
            "      --kmeans-iter N    k-means warm-start iterations (default 10)\n"
            "      --cov iso|diag     covariance (default iso)\n"
            "      --backend auto|cpu|gpu   (default auto)\n"
            "      --precision fast|exact   GPU arithmetic (default fast: bf16 tensor cores)\n"
            "      --tol T            stop when the mean log-likelihood gains < T*|value| (default 0)\n"
            "      --seed S           (default 1234)\n"
            "      --max-rows N       read only the first N rows\n"
            "      --dataset NAME     HDF5 dataset (default: train, then dataset)\n"
            "      --out MODEL        write the trained model\n"
            "  flashgmm convert IN OUT [--dataset NAME] [--max-rows N]   e.g. .h5 -> .bvecs\n"
            "  flashgmm shape FILE [--dataset NAME]   prints: rows dims dtype\n"
            "FILE: .fvecs, .bvecs, .ivecs, .h5/.hdf5\n");
}

static void on_progress(void* user, FgmmPhase phase, int iter, double obj, int reseeded) {
    (void)user;
    if (phase == FGMM_PHASE_KMEANS)
        printf("kmeans %3d  mean sq. distance %.6g%s\n", iter + 1, -obj, reseeded ? "  (re-seeded)" : "");
    else
        printf("em     %3d  mean log-likelihood %.6f%s\n", iter + 1, obj, reseeded ? "  (re-seeded)" : "");
    fflush(stdout);
}

static int fail(const char* what) {
    fprintf(stderr, "flashgmm: %s: %s\n", what, fgmm_get_last_error());
    return 1;
}

/* A whole-string integer in [lo, hi]; else a message and 0. */
static int parse_int(const char* opt, const char* v, long long lo, long long hi, long long* out) {
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno == ERANGE || x < lo || x > hi) {
        fprintf(stderr, "flashgmm: %s '%s': want an integer in [%lld, %lld]\n", opt, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* 1 if a and b name the same existing file (or the same string). */
static int same_file(const char* a, const char* b) {
    struct stat sa, sb;
    if (!strcmp(a, b)) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int main(int argc, char** argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    const char* cmd = argv[1];
    if (strcmp(cmd, "train") && strcmp(cmd, "convert") && strcmp(cmd, "shape"))
        return fprintf(stderr, "flashgmm: unknown command '%s'\n", cmd), usage(stderr), 2;
    const char *in = argv[2], *out = NULL, *dataset = NULL;
    fgmm_idx_t max_rows = 0;
    FgmmParams p;
    fgmm_params_init(&p);
    int a = 3;
    if (!strcmp(cmd, "convert")) {
        if (argc < 4) return usage(stderr), 2;
        out = argv[3];
        a = 4;
    }
    for (; a < argc; a++) {
        const char* o = argv[a];
        const char* v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!v) return fprintf(stderr, "flashgmm: %s needs a value\n", o), 2;
        a++;
        long long iv;
        if (!strcmp(o, "--k")) {
            if (!parse_int(o, v, 1, FGMM_MAX_K, &iv)) return 2;
            p.k = (int)iv;
        } else if (!strcmp(o, "--iter") || !strcmp(o, "--kmeans-iter")) {
            if (!parse_int(o, v, 0, 1000000, &iv)) return 2;
            *(o[2] == 'i' ? &p.niter : &p.kmeans_iter) = (int)iv;
        } else if (!strcmp(o, "--seed")) {
            if (!parse_int(o, v, 0, INT64_MAX, &iv)) return 2;
            p.seed = (uint64_t)iv;
        } else if (!strcmp(o, "--max-rows")) {
            if (!parse_int(o, v, 0, INT64_MAX, &iv)) return 2;
            max_rows = iv;
        } else if (!strcmp(o, "--tol")) {
            char* end;
            p.tol = strtod(v, &end);
            if (end == v || *end || !isfinite(p.tol) || p.tol < 0)
                return fprintf(stderr, "flashgmm: --tol '%s': want a finite number >= 0\n", v), 2;
        } else if (!strcmp(o, "--dataset")) dataset = v;
        else if (!strcmp(o, "--out") && strcmp(cmd, "train"))
            return fprintf(stderr, "flashgmm: %s takes no --out%s\n", cmd, strcmp(cmd, "convert") ? "" : " (the output is OUT)"), 2;
        else if (!strcmp(o, "--out") && out)
            return fprintf(stderr, "flashgmm: --out given twice ('%s', '%s')\n", out, v), 2;
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--cov") && (!strcmp(v, "iso") || !strcmp(v, "diag")))
            p.covariance = !strcmp(v, "iso") ? FGMM_COV_ISOTROPIC : FGMM_COV_DIAGONAL;
        else if (!strcmp(o, "--backend") && (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "gpu")))
            p.backend = !strcmp(v, "cpu") ? FGMM_BACKEND_CPU : !strcmp(v, "gpu") ? FGMM_BACKEND_GPU : FGMM_BACKEND_AUTO;
        else if (!strcmp(o, "--precision") && (!strcmp(v, "fast") || !strcmp(v, "exact")))
            p.precision = !strcmp(v, "fast") ? FGMM_PREC_FAST : FGMM_PREC_EXACT;
        else return fprintf(stderr, "flashgmm: bad option %s %s\n", o, v), usage(stderr), 2;
    }
    if (out && same_file(in, out))
        return fprintf(stderr, "flashgmm: output '%s' is the input; not overwriting it\n", out), 2;
    if (out) { /* can the output be written? (a file is created next to it and removed) */
        fgmm_output probe;
        if (fgmm_output_begin(out, &probe)) return fail(out);
        fgmm_output_end(&probe, out, 0);
    }
    FgmmVecs x;
    if (fgmm_vecs_read(in, dataset, max_rows, &x)) return fail(in);
    if (!strcmp(cmd, "shape")) {
        printf("%lld %d %s\n", (long long)x.n, x.d, x.dtype == FGMM_U8 ? "uint8" : x.dtype == FGMM_F32 ? "float32" : "int32");
        fgmm_vecs_free(&x);
        return 0;
    }
    if (!strcmp(cmd, "convert")) {
        int rc = fgmm_vecs_write(out, &x);
        if (!rc) printf("wrote %lld x %d to %s\n", (long long)x.n, x.d, out);
        fgmm_vecs_free(&x);
        return rc ? fail(out) : 0;
    }
    printf("data: %s, %lld x %d %s; k = %d, %s covariance\n", in, (long long)x.n, x.d,
           x.dtype == FGMM_U8 ? "uint8" : x.dtype == FGMM_F32 ? "float32" : "int32", p.k,
           p.covariance == FGMM_COV_ISOTROPIC ? "isotropic" : "diagonal");
    p.progress = on_progress;
    FgmmModel* m = NULL;
    FgmmTrainInfo info;
    int rc = fgmm_train(&p, x.n, x.d, x.dtype, x.data, &m, &info);
    fgmm_vecs_free(&x);
    if (rc) return fail("train");
    printf("done: backend %s, %d k-means + %d EM iterations%s, %d re-seeded, final mean log-likelihood %.6f, %.3f s\n",
           info.backend, info.kmeans_iterations, info.em_iterations, info.converged ? " (converged)" : "",
           info.reseeded, info.mean_loglik, info.seconds);
    if (out && fgmm_model_write(m, out)) {
        fgmm_model_free(m);
        return fail(out);
    }
    if (out) printf("model written to %s\n", out);
    fgmm_model_free(m);
    return 0;
}
