/* SPDX-License-Identifier: MIT */
/* single_ab.c: the A/B driver of docs/results/single.md (not built by CMake; build line there). */
/* A/B driver: thread-CPU-time QPS of one query per call (or batch B), interleaved in blocks. */
#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_impl.h"
#include "ivf_util.h"
static double cpu_s(int wall) {
    struct timespec t;
    clock_gettime(wall ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
int main(int argc, char** argv) {
    int seed = argc > 1 ? atoi(argv[1]) : 1, B = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 5;
    const char* probes_s = argc > 4 ? argv[4] : "4,8,16,32";
    int wall = argc > 5 ? atoi(argv[5]) : 0;
    int nlist = 256, K = 10;
    FgmmVecs vb, vq;
    if (fgmm_vecs_read("/work/data/sift100k/sift100K_byte.h5", "dataset", 0, &vb) ||
        fgmm_vecs_read("/work/data/sift100k/sift100K_byte.h5", "query", 0, &vq))
        return 1;
    float *xb = vecs_to_float(&vb), *xq = vecs_to_float(&vq);
    int d = vb.d;
    idx_t nb = vb.n, nq = vq.n;
    char pf[256], pd[256];
    snprintf(pf, sizeof pf, "/tmp/single/faiss_s%d.index", seed);
    snprintf(pd, sizeof pd, "/tmp/single/default_s%d.fgmmivf", seed);
    FaissIndex* fi = NULL;
    FgmmIvf *hf = NULL, *hd = NULL;
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.gmm.seed = seed;
    if (access(pf, 0)) {
        faiss_index_factory(&fi, d, "IVF256,Flat", METRIC_L2);
        FaissClusteringParameters cp;
        faiss_ClusteringParameters_init(&cp);
        cp.niter = 10;
        cp.seed = seed;
        FaissClustering* cl = NULL;
        faiss_Clustering_new_with_params(&cl, d, nlist, &cp);
        faiss_Clustering_train(cl, nb, xb, faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(fi)));
        faiss_Index_train(fi, nb, xb);
        faiss_Index_add(fi, nb, xb);
        faiss_write_index_fname(fi, pf);
        FaissIndex* f2;
        faiss_index_factory(&f2, d, "IVF256,Flat", METRIC_L2);
        fgmm_ivf_wrap(f2, &p, &hd);
        fgmm_ivf_train(hd, nb, xb, NULL);
        fgmm_ivf_add(hd, nb, xb, NULL, NULL);
        if (fgmm_ivf_write(hd, pd)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
    } else {
        faiss_read_index_fname(pf, 0, &fi);
        if (fgmm_ivf_read(pd, NULL, &hd)) {
            fprintf(stderr, "%s\n", fgmm_get_last_error());
            return 1;
        }
    }
    fgmm_ivf_wrap(fi, &p, &hf);
    int32_t* gt = ground_truth(xb, nb, xq, nq, d);
    float* dist = malloc(nq * K * 4);
    idx_t* lab = malloc(nq * K * 8);
    int64_t* dco = malloc(nq * 8);
    const char* names[] = {"faiss", "faiss+auto", "default/one", "default", "default/list"};
    static double R[5][32], Q[5][32];
    int P[32], npr = 0;
    printf("seed %d batch %d threads %d %s time\n", seed, B, omp_get_max_threads(), wall ? "wall" : "thread-CPU");
    for (const char* s = probes_s; *s; s += strcspn(s, ","), s += *s == ',') {
        int np = atoi(s);
        double best[5] = {0}, rec[5];
        faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(fi), np);
        for (int m = 0; m < 5; m++) {
            for (idx_t i0 = 0; i0 < nq; i0 += B) {
                idx_t b = nq - i0 < B ? nq - i0 : B;
                if (m == 0) faiss_Index_search(fi, b, xq + i0 * d, K, dist + i0 * K, lab + i0 * K);
                else
                    fgmm_ivf_search_with(m < 2 ? hf : hd, b, xq + i0 * d, K, np, dist + i0 * K, lab + i0 * K, dco + i0,
                                         m == 4   ? FGMM_SEARCH_FLAT
                                         : m == 2 ? FGMM_SEARCH_ONE
                                                  : FGMM_SEARCH_AUTO,
                                         0);
            }
            rec[m] = fgmm_recall(nq, K, lab, GT_K, gt);
        }
        for (int rep = 0; rep < reps; rep++)
            for (int blk = 0, BL = B > 100 ? B : 100; blk < nq;
                 blk += BL) /* interleave in blocks of 100 queries (or B) */
                for (int m = 0; m < 5; m++) {
                    double t0 = cpu_s(wall);
                    for (idx_t i0 = blk; i0 < blk + BL; i0 += B) {
                        idx_t b = blk + BL - i0 < B ? blk + BL - i0 : B;
                        const float* q = xq + i0 * d;
                        if (m == 0) faiss_Index_search(fi, b, q, K, dist + i0 * K, lab + i0 * K);
                        else if (fgmm_ivf_search_with(m < 2 ? hf : hd, b, q, K, np, dist + i0 * K, lab + i0 * K,
                                                      dco + i0,
                                                      m == 4   ? FGMM_SEARCH_FLAT
                                                      : m == 2 ? FGMM_SEARCH_ONE
                                                               : FGMM_SEARCH_AUTO,
                                                      0)) {
                            fprintf(stderr, "%s\n", fgmm_get_last_error());
                            return 1;
                        }
                    }
                    double t = cpu_s(wall) - t0;
                    static double acc[5];
                    acc[m] += t;
                    if (blk + BL >= nq) {
                        double q = nq / acc[m];
                        if (q > best[m]) best[m] = q;
                        acc[m] = 0;
                    }
                }
        for (int m = 0; m < 5; m++) R[m][npr] = rec[m], Q[m][npr] = best[m];
        P[npr++] = np;
        printf("nprobe %3d:", np);
        for (int m = 0; m < 5; m++) printf("  %s %.4f %6.0f", names[m], rec[m], best[m]);
        printf("  | one/list %.3f auto/list %.3f | faiss+auto/faiss %.3f\n", best[2] / best[4], best[3] / best[4],
               best[1] / best[0]);
        fflush(stdout);
    }
    const double lv[5] = {0.80, 0.85, 0.90, 0.95, 0.99};
    for (int m = 1; m < 5; m++) {
        printf("ratio %-12s", names[m]);
        for (int l = 0; l < 5; l++) {
            double at[2];
            for (int w = 0; w < 2; w++) {
                int mm = w ? m : 0;
                at[w] = -1;
                for (int p = 0; p < npr; p++) {
                    if (R[mm][p] < lv[l]) continue;
                    if (p == 0) {
                        at[w] = Q[mm][0];
                        break;
                    }
                    double f = (lv[l] - R[mm][p - 1]) / (R[mm][p] - R[mm][p - 1]);
                    at[w] = exp(log(Q[mm][p - 1]) + f * (log(Q[mm][p]) - log(Q[mm][p - 1])));
                    break;
                }
            }
            if (at[0] > 0 && at[1] > 0) printf("  @%.2f %.3f", lv[l], at[1] / at[0]);
            else printf("  @%.2f -", lv[l]);
        }
        printf("\n");
    }
    return 0;
}
