/* index_setup.h: the small spilled index whose sidecars fuzz_index.c fuzzes and
 * tests/test_ivf.cpp (Ivf.SidecarFuzzRegressions) reads the corpus against. IVF4,Flat, d = 8,
 * 64 vectors around 4 given means (installed with fgmm_ivf_set_gmm, not trained: the centroids,
 * hence the checksum in fuzz/corpus/index/valid_*, are the same bytes on every build and thread
 * count), the TOPM rule with 2 lists per vector (128 entries), the CPU backend. C and C++. */
#ifndef FGMM_FUZZ_INDEX_SETUP_H
#define FGMM_FUZZ_INDEX_SETUP_H
#include <stdint.h>

#include <faiss/c_api/index_factory_c.h>

#include "flashgmm_ivf.h"

enum { FUZZ_IVF_D = 8, FUZZ_IVF_NLIST = 4, FUZZ_IVF_N = 64 };

/* Builds the index and writes it to path (plus path.fgmm and path.gmm); 0 or an FgmmError. */
static int fuzz_ivf_write(const char* path) {
    float x[FUZZ_IVF_N * FUZZ_IVF_D], mu[FUZZ_IVF_NLIST * FUZZ_IVF_D], var[FUZZ_IVF_NLIST], w[FUZZ_IVF_NLIST];
    uint32_t s = 12345u;
    for (int i = 0; i < FUZZ_IVF_N * FUZZ_IVF_D; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f * 8.0f + (float)(i / FUZZ_IVF_D % FUZZ_IVF_NLIST) * 10.0f;
    }
    for (int j = 0; j < FUZZ_IVF_NLIST; j++) {
        for (int t = 0; t < FUZZ_IVF_D; t++) mu[j * FUZZ_IVF_D + t] = (float)j * 10.0f + 4.0f;
        var[j] = 1.0f, w[j] = 1.0f;
    }
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = FGMM_ASSIGN_TOPM;
    p.max_assign = 2;
    p.gmm.backend = FGMM_BACKEND_CPU;
    FaissIndex* index = NULL;
    FgmmModel* m = NULL;
    FgmmIvf* h = NULL;
    int rc = faiss_index_factory(&index, FUZZ_IVF_D, "IVF4,Flat", METRIC_L2) ? FGMM_ERR_FAISS : FGMM_OK;
    if (!rc) rc = fgmm_model_new(&m, FUZZ_IVF_NLIST, FUZZ_IVF_D, FGMM_COV_ISOTROPIC, mu, var, w);
    if (!rc) rc = fgmm_ivf_wrap(index, &p, &h);
    if (!rc) rc = fgmm_ivf_set_gmm(h, m, FUZZ_IVF_N, x);
    if (!rc) rc = fgmm_ivf_add(h, FUZZ_IVF_N, x, NULL, NULL);
    if (!rc) rc = fgmm_ivf_write(h, path);
    fgmm_ivf_free(h);
    fgmm_model_free(m);
    if (index) faiss_Index_free(index);
    return rc;
}
#endif
