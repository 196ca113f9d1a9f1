/* SPDX-License-Identifier: MIT */
/* cli_args.c: the command-line programs' shared parts (cli_args.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <unistd.h>

#include "cli_args.h"
#include "internal.h"
#include "progress.h"

const char* fgmm_cli_prog = "flashgmm";
int fgmm_cli_quiet = 0;

const char fgmm_cli_train_usage[] =
    "      --k K              components (default 1024, at most rows)\n"
    "      --iter N           EM iterations (default 30)\n"
    "      --kmeans-iter N    k-means warm-start iterations (default 10)\n"
    "      --cov iso|diag     covariance (default iso)\n"
    "      --backend auto|cpu|gpu   (default auto)\n"
    "      --precision fast|exact   GPU arithmetic (default fast: fp16 tensor cores)\n"
    "      --tol T            stop when the mean log-likelihood gains < T*|value| (default 0)\n"
    "      --seed S           (default 1234)\n"
    "      --max-rows N       read only the first N rows\n"
    "      --dataset NAME     HDF5 dataset (default: train, then dataset)\n"
    "      --hdf5 child|in-process   where libhdf5 parses HDF5 inputs (default child: a crash on a\n"
    "                         malformed file is an error message, not the end of this process)\n"
    "      --out MODEL        write the trained model\n"
    "      --progress         a progress line with the time left on stderr (default: when it is a terminal)\n"
    "      --quiet            no progress line, no per-iteration lines\n";

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void
say(const char* fmt, ...) {
    if (fgmm_cli_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", fgmm_cli_prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

int fgmm_cli_int(const char* opt, const char* v, long long lo, long long hi, long long* out) {
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno == ERANGE || x < lo || x > hi) {
        say("%s '%s': want an integer in [%lld, %lld]\n", opt, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

int fgmm_cli_parse(int argc, char** argv, int a, const char* cmd, fgmm_cli_args* args) {
    memset(args, 0, sizeof *args);
    FgmmParams* p = &args->p;
    fgmm_params_init(p);
    args->progress = -1;
    for (; a < argc; a++) {
        const char* o = argv[a];
        if (!strcmp(o, "--progress") || !strcmp(o, "--quiet")) { /* flags: no value */
            args->progress = o[2] == 'p';
            args->quiet = !args->progress;
            continue;
        }
        const char* v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!v) return say("%s needs a value\n", o), 2;
        a++;
        long long iv;
        if (!strcmp(o, "--k")) {
            if (!fgmm_cli_int(o, v, 1, FGMM_MAX_K, &iv)) return 2;
            p->k = (int)iv;
        } else if (!strcmp(o, "--iter") || !strcmp(o, "--kmeans-iter")) {
            if (!fgmm_cli_int(o, v, 0, 1000000, &iv)) return 2;
            *(o[2] == 'i' ? &p->niter : &p->kmeans_iter) = (int)iv;
        } else if (!strcmp(o, "--seed")) {
            if (!fgmm_cli_int(o, v, 0, INT64_MAX, &iv)) return 2;
            p->seed = (uint64_t)iv;
        } else if (!strcmp(o, "--max-rows")) {
            if (!fgmm_cli_int(o, v, 0, INT64_MAX, &iv)) return 2;
            args->max_rows = iv;
        } else if (!strcmp(o, "--tol")) {
            char* end;
            p->tol = strtod(v, &end);
            if (end == v || *end || !isfinite(p->tol) || p->tol < 0)
                return say("--tol '%s': want a finite number >= 0\n", v), 2;
        } else if (!strcmp(o, "--dataset")) args->dataset = v;
        else if (!strcmp(o, "--hdf5") && (!strcmp(v, "child") || !strcmp(v, "in-process")))
            args->hdf5_in_process = !strcmp(v, "in-process");
        else if (!strcmp(o, "--out") && strcmp(cmd, "train"))
            return say("%s takes no --out%s\n", cmd, strcmp(cmd, "convert") ? "" : " (the output is OUT)"), 2;
        else if (!strcmp(o, "--out") && args->out) return say("--out given twice ('%s', '%s')\n", args->out, v), 2;
        else if (!strcmp(o, "--out")) args->out = v;
        else if (!strcmp(o, "--cov") && (!strcmp(v, "iso") || !strcmp(v, "diag")))
            p->covariance = !strcmp(v, "iso") ? FGMM_COV_ISOTROPIC : FGMM_COV_DIAGONAL;
        else if (!strcmp(o, "--backend") && (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "gpu")))
            p->backend = !strcmp(v, "cpu")   ? FGMM_BACKEND_CPU
                         : !strcmp(v, "gpu") ? FGMM_BACKEND_GPU
                                             : FGMM_BACKEND_AUTO;
        else if (!strcmp(o, "--precision") && (!strcmp(v, "fast") || !strcmp(v, "exact")))
            p->precision = !strcmp(v, "fast") ? FGMM_PREC_FAST : FGMM_PREC_EXACT;
        else if (!strcmp(o, "--cov") || !strcmp(o, "--backend") || !strcmp(o, "--precision") || !strcmp(o, "--hdf5"))
            return say("%s '%s': want one of %s\n", o, v,
                       o[2] == 'c'   ? "iso, diag"
                       : o[2] == 'b' ? "auto, cpu, gpu"
                       : o[2] == 'h' ? "child, in-process"
                                     : "fast, exact"),
                   2;
        else return say("unknown option %s (%s's options: flashgmm %s --help)\n", o, cmd, cmd), 2;
    }
    return 0;
}

int fgmm_cli_read(const fgmm_cli_args* args, const char* in, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                  FgmmVecs* out) {
    return fgmm_vecs_read_any(in, args->dataset, first, max_rows, shape_only, !args->hdf5_in_process, out);
}

void fgmm_cli_prestart(const FgmmParams* p) {
    if (p->backend == FGMM_BACKEND_CPU) return;
    for (int g = 0; g < (p->n_gpus > 1 ? p->n_gpus : 1); g++) fgmm_gpu_prestart(p->gpu_device + g);
}

/* 1 if a and b name the same existing file (or the same string). */
static int same_file(const char* a, const char* b) {
    struct stat sa, sb;
    if (!strcmp(a, b)) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int fgmm_cli_check_out(const char* in, const char* out) {
    if (same_file(in, out)) return say("output '%s' is the input; not overwriting it\n", out), 2;
    FgmmOutput probe; /* can the output be written? (a file is created next to it and removed) */
    if (fgmm_output_begin(out, &probe)) return fgmm_cli_fail(out);
    fgmm_output_end(&probe, out, 0);
    return 0;
}

typedef struct cli_progress {
    fgmm_eta eta;
    int line, tty, log; /* a line on stderr, rewritten in place (a terminal); stdout's lines */
} cli_progress;
static cli_progress progress_state;

void fgmm_cli_progress(void* user, FgmmPhase phase, int iter, double obj, int reseeded) {
    cli_progress* s = user;
    if (s && s->line && s->tty) fputs("\r\033[K", stderr); /* stdout's line goes where the progress line was */
    if (!s || s->log) {
        if (phase == FGMM_PHASE_KMEANS)
            printf("kmeans %3d  mean sq. distance %.6g%s\n", iter + 1, -obj, reseeded ? "  (re-seeded)" : "");
        else printf("em     %3d  mean log-likelihood %.6f%s\n", iter + 1, obj, reseeded ? "  (re-seeded)" : "");
        fflush(stdout);
    }
    if (s && s->line) fgmm_eta_print(&s->eta, stderr, s->tty, fgmm_cli_prog, phase, iter, obj);
}

void fgmm_cli_progress_begin(fgmm_cli_args* a, int log_lines) {
    cli_progress* s = &progress_state;
    memset(s, 0, sizeof *s);
    s->tty = isatty(STDERR_FILENO);
    s->line = a->progress < 0 ? s->tty : a->progress;
    s->log = log_lines && !a->quiet;
    fgmm_eta_start(&s->eta, a->p.kmeans_iter, a->p.niter, fgmm_eta_clock());
    a->p.progress = s->line || s->log ? fgmm_cli_progress : NULL;
    a->p.progress_user = s;
}

void fgmm_cli_progress_end(void) {
    if (progress_state.line) fgmm_eta_end(&progress_state.eta, stderr, progress_state.tty);
}

int fgmm_cli_fail(const char* what) {
    fprintf(stderr, "%s: %s: %s\n", fgmm_cli_prog, what, fgmm_get_last_error());
    return 1;
}

const char* fgmm_cli_dtype_name(FgmmDtype t) { return t == FGMM_U8 ? "uint8" : t == FGMM_F32 ? "float32" : "int32"; }

void fgmm_cli_print_data(const char* in, fgmm_idx_t n, int d, FgmmDtype t, const FgmmParams* p) {
    printf("data: %s, %lld x %d %s; k = %d, %s covariance\n", in, (long long)n, d, fgmm_cli_dtype_name(t), p->k,
           p->covariance == FGMM_COV_ISOTROPIC ? "isotropic" : "diagonal");
}

void fgmm_cli_print_done(const FgmmTrainInfo* info) {
    printf("done: backend %s, %d k-means + %d EM iterations%s, %d re-seeded, final mean log-likelihood %.6f, %.3f s\n",
           info->backend, info->kmeans_iterations, info->em_iterations, info->converged ? " (converged)" : "",
           info->reseeded, info->mean_loglik, info->seconds);
}
