/* SPDX-License-Identifier: MIT */
/* example_ivf.c: build a GMM-trained IVF-Flat index through FAISS's C API, add with
 * multi-assignment, search, save, load. A complete program: it builds against an installed copy
 * (tests/consumer/run.sh does, with CMake and with pkg-config), e.g.
 *     cc example_ivf.c $(pkg-config --cflags --libs flashgmm_ivf)
 *
 *   example_ivf FILE.h5|.fvecs|.bvecs [index-factory-string]     (default "IVF64,Flat")
 * An HDF5 FILE gives its `dataset` and `query` datasets (FLANN's layout, as the embedded
 * datasets/embedded/sift10K_byte.h5, the default of the in-tree build); another file gives its
 * rows, and its first 100 rows are the queries.
 */
#include <stdio.h>
#include <stdlib.h>

#include <faiss/c_api/index_factory_c.h>

#include "flashgmm_io.h"
#include "flashgmm_ivf.h"

#define CHECK(call)                                                           \
    do {                                                                      \
        if (call) {                                                           \
            fprintf(stderr, "%s failed: %s\n", #call, fgmm_get_last_error()); \
            return 1;                                                         \
        }                                                                     \
    } while (0)

static float* as_float(FgmmVecs* v) {
    float* f = malloc((size_t)v->n * v->d * sizeof(float));
    if (!f) return NULL;
    for (size_t i = 0; i < (size_t)v->n * v->d; i++)
        f[i] = v->dtype == FGMM_U8 ? ((unsigned char*)v->data)[i] : ((float*)v->data)[i];
    return f;
}

int main(int argc, char** argv) {
#ifdef FGMM_EMBEDDED /* the in-tree build (CMakeLists.txt) */
    const char* file = argc > 1 ? argv[1] : FGMM_EMBEDDED;
#else
    if (argc < 2) return fprintf(stderr, "usage: example_ivf FILE.h5|.fvecs|.bvecs [index-factory-string]\n"), 2;
    const char* file = argv[1];
#endif
    const char* spec = argc > 2 ? argv[2] : "IVF64,Flat";
    FgmmVecs base, query;
    CHECK(fgmm_vecs_read(file, "dataset", 0, &base));
    CHECK(fgmm_vecs_read(file, "query", 100, &query));
    float *xb = as_float(&base), *xq = as_float(&query);
    if (!xb || !xq) return fprintf(stderr, "out of memory\n"), 1;

    FaissIndex* index = NULL;
    if (faiss_index_factory(&index, base.d, spec, METRIC_L2)) return fprintf(stderr, "index_factory failed\n"), 1;
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p); /* GMM quantizer (k-means for L2-normalised data), SOAR spill: 1.5 lists per vector */
    p.gmm.niter = 20;         /* EM iterations: quicker than the default 90, for an example */
    FgmmIvf* ivf = NULL;
    FgmmTrainInfo info;
    CHECK(fgmm_ivf_wrap(index, &p, &ivf));
    CHECK(fgmm_ivf_train(ivf, base.n, xb, &info));
    CHECK(fgmm_ivf_add(ivf, base.n, xb, NULL, NULL));
    printf("%s on %lld x %d: GMM trained on %s in %.2f s, %.3f lists per vector\n", spec, (long long)base.n, base.d,
           info.backend, info.seconds, fgmm_ivf_inflation(ivf));

    enum { K = 10, NPROBE = 8 };
    idx_t* labels = malloc(sizeof(idx_t) * query.n * K);
    float* dist = malloc(sizeof(float) * query.n * K);
    int64_t* dco = malloc(sizeof(int64_t) * query.n);
    CHECK(fgmm_ivf_search(ivf, query.n, xq, K, NPROBE, dist, labels, dco));
    double mean_dco = 0;
    for (idx_t i = 0; i < query.n; i++) mean_dco += dco[i];
    printf("query 0: ids %lld %lld %lld ...; mean DCO %.0f at nprobe %d\n", (long long)labels[0], (long long)labels[1],
           (long long)labels[2], mean_dco / query.n, NPROBE);

    CHECK(fgmm_ivf_write(ivf, "/tmp/example_ivf.faiss")); /* + /tmp/example_ivf.faiss.fgmm (spill settings), .gmm */
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);
    CHECK(fgmm_ivf_read("/tmp/example_ivf.faiss", &p, &ivf));
    idx_t* again = malloc(sizeof(idx_t) * query.n * K);
    CHECK(fgmm_ivf_search(ivf, query.n, xq, K, NPROBE, dist, again, NULL));
    int same = 1;
    for (idx_t i = 0; i < query.n * K; i++) same &= labels[i] == again[i];
    printf("reloaded index: %s results\n", same ? "identical" : "DIFFERENT");
    fgmm_ivf_free(ivf);
    free(labels);
    free(again);
    free(dist);
    free(dco);
    free(xb);
    free(xq);
    fgmm_vecs_free(&base);
    fgmm_vecs_free(&query);
    return same ? 0 : 1;
}
