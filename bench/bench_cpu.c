/* SPDX-License-Identifier: MIT */
/* bench_cpu.c: the CPU E-step against OpenBLAS sgemm doing the same matrix products, one run.
 *
 *   bench_cpu [NxKxD ...] [--reps R]      (default 100000x256x128 100000x1024x128)
 *
 * An isotropic E-step is two products of 2NKD flops each (distances x.mu^T, then R^T x) plus
 * N*K exps; "2x sgemm" times exactly those two products on full N x K buffers, so the ratio
 * is the price of the log-sum-exp, the responsibilities and the tiling. Threads: OpenBLAS's
 * and OpenMP's defaults (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "internal.h"

int main(int argc, char** argv) {
    const char* shapes[16] = {"100000x256x128", "100000x1024x128"};
    int ns = 0, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (ns < 16) shapes[ns++] = argv[i];
    }
    if (!ns) ns = 2;
    printf(
        "| N x K x D | cpu E-step ms | 2x sgemm ms (same products) | E-step / sgemm | E-step GFLOP/s |\n|---|---:|---:|---:|---:|\n");
    for (int s = 0; s < ns; s++) {
        long long n;
        int k, d;
        if (sscanf(shapes[s], "%lldx%dx%d", &n, &k, &d) != 3) return 2;
        float* x = malloc((size_t)n * d * sizeof(float));
        float* g = malloc((size_t)n * k * sizeof(float));
        float* f = malloc((size_t)k * d * sizeof(float));
        uint64_t r = 1;
        for (size_t i = 0; i < (size_t)n * d; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((r >> 40) % 1000) * 0.01f;
        }
        FgmmModel* m;
        fgmm_model_alloc(&m, k, d, FGMM_COV_ISOTROPIC);
        for (int q = 0; q < k; q++) {
            memcpy(m->mu + (size_t)q * d, x + (size_t)((q * 7919LL) % n) * d, d * sizeof(float));
            m->var[q] = 8.0f;
            m->w[q] = 1.0f / k;
        }
        fgmm_engine* e;
        fgmm_engine_cpu_create(&e);
        fgmm_stats st;
        fgmm_stats_alloc(&st, k, d, 0);
        fgmm_data xd = {x, n, d, FGMM_F32};
        double* te = malloc(sizeof(double) * reps);
        double* tg = malloc(sizeof(double) * reps);
        e->ops->estep(e, &xd, m, &st); /* warm-up */
        for (int i = 0; i < reps; i++) {
            double t0 = now_ms();
            e->ops->estep(e, &xd, m, &st);
            te[i] = now_ms() - t0;
            t0 = now_ms();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, k, d, -2.0f, x, d, m->mu, d, 0.0f, g, k);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, d, n, 1.0f, g, k, x, d, 0.0f, f, d);
            tg[i] = now_ms() - t0;
        }
        qsort(te, reps, sizeof(double), cmp_d);
        qsort(tg, reps, sizeof(double), cmp_d);
        double me = te[reps / 2], mg = tg[reps / 2];
        printf("| %lld x %d x %d | %.1f | %.1f | %.2f | %.1f |\n", n, k, d, me, mg, me / mg,
               4.0 * n * k * d / me / 1e6);
        fflush(stdout);
        fgmm_stats_free(&st);
        fgmm_engine_destroy(e);
        fgmm_model_free(m);
        free(x);
        free(g);
        free(f);
        free(te);
        free(tg);
    }
    return 0;
}
