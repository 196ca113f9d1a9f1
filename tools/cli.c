/* SPDX-License-Identifier: MIT */
/* cli.c: the `flashgmm` command line. */
#include <stdio.h>
#include <string.h>

#include "cli_args.h"
#include "flashgmm.h"
#include "flashgmm_io.h"
#ifdef FGMM_WITH_IVF
#include "cli_ivf.h"
#endif

static void usage(FILE* f) {
    fprintf(f,
            "usage:\n"
            "  flashgmm train FILE [options]   train a GMM, print per-iteration log-likelihood (stdout)\n"
            "%s"
            "  flashgmm convert IN OUT [--dataset NAME] [--max-rows N]   e.g. .h5 -> .bvecs\n"
            "  flashgmm shape FILE [--dataset NAME]   prints: rows dims dtype\n"
            "FILE: .fvecs, .bvecs, .ivecs, .h5/.hdf5\n",
            fgmm_cli_train_usage);
#ifdef FGMM_WITH_IVF
    fputs(fgmm_cli_ivf_usage, f);
#endif
}

int main(int argc, char** argv) {
#ifdef FGMM_WITH_IVF
    if (argc >= 2 && !strcmp(argv[1], "ivf")) return fgmm_cli_ivf(argc, argv);
#endif
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
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
    const char *in = argv[2], *out = NULL;
    int a = 3;
    if (!strcmp(cmd, "convert")) {
        if (argc < 4) return usage(stderr), 2;
        out = argv[3];
        a = 4;
    }
    fgmm_cli_args args;
    int rc = fgmm_cli_parse(argc, argv, a, cmd, &args);
    if (rc) return usage(stderr), rc;
    if (args.out) out = args.out;
    if (out && (rc = fgmm_cli_check_out(in, out))) return rc;
    if (!strcmp(cmd, "shape")) { /* the header only */
        FgmmVecs s;
        if (fgmm_cli_read(&args, in, 0, 0, 1, &s)) return fgmm_cli_fail(in);
        if (args.max_rows && args.max_rows < s.n) s.n = args.max_rows;
        printf("%lld %d %s\n", (long long)s.n, s.d, fgmm_cli_dtype_name(s.dtype));
        return 0;
    }
    if (!strcmp(cmd, "train")) fgmm_cli_prestart(&args.p);
    FgmmVecs x;
    if (fgmm_cli_read(&args, in, 0, args.max_rows, 0, &x)) return fgmm_cli_fail(in);
    if (!strcmp(cmd, "convert")) {
        rc = fgmm_vecs_write(out, &x);
        if (!rc) printf("wrote %lld x %d to %s\n", (long long)x.n, x.d, out);
        fgmm_vecs_free(&x);
        return rc ? fgmm_cli_fail(out) : 0;
    }
    fgmm_cli_print_data(in, x.n, x.d, x.dtype, &args.p);
    FgmmModel* m = NULL;
    FgmmTrainInfo info;
    fgmm_cli_progress_begin(&args, 1);
    rc = fgmm_train(&args.p, x.n, x.d, x.dtype, x.data, &m, &info);
    fgmm_cli_progress_end();
    fgmm_vecs_free(&x);
    if (rc) return fgmm_cli_fail("train");
    fgmm_cli_print_done(&info);
    if (out && fgmm_model_write(m, out)) {
        fgmm_model_free(m);
        return fgmm_cli_fail(out);
    }
    if (out) printf("model written to %s\n", out);
    fgmm_model_free(m);
    return 0;
}
