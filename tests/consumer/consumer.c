/* SPDX-License-Identifier: MIT */
/* consumer.c: a program outside the source tree, built against an installed flashgmm
 * (tests/consumer/run.sh): trains a GMM, then a GMM-trained IVF-Flat index through FAISS's C API,
 * then writes a sidecar of its own as a user's plugin would (data check, error channel, atomic
 * output) into the directory argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "flashgmm.h"
#include "flashgmm_io.h"
#include "flashgmm_ivf.h"

enum { N = 2000, D = 8, K = 4 };

static int fail(const char* what) {
    fprintf(stderr, "consumer: %s failed: %s\n", what, fgmm_get_last_error());
    return 1;
}

int main(int argc, char** argv) {
    static float x[N * D]; /* K clusters 10 apart, uniform noise in [0, 1) */
    unsigned s = 1;
    for (int i = 0; i < N * D; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)(i / D % K) * 10 + (float)(s >> 8) / (1 << 24);
    }
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = K;
    p.niter = 5;
    FgmmModel* gmm = NULL;
    if (fgmm_train(&p, N, D, FGMM_F32, x, &gmm, NULL)) return fail("fgmm_train");
    fgmm_model_free(gmm);

    FaissIndex* index = NULL;
    if (faiss_index_factory(&index, D, "IVF4,Flat", METRIC_L2)) return fail("faiss_index_factory");
    FgmmIvfParams ip;
    fgmm_ivf_params_init(&ip);
    ip.gmm.niter = 5;
    FgmmIvf* ivf = NULL;
    if (fgmm_ivf_wrap(index, &ip, &ivf)) return fail("fgmm_ivf_wrap");
    if (fgmm_ivf_train(ivf, N, x, NULL)) return fail("fgmm_ivf_train");
    if (fgmm_ivf_add(ivf, N, x, NULL, NULL)) return fail("fgmm_ivf_add");
    idx_t entries = faiss_Index_ntotal(index);
    fgmm_ivf_free(ivf);
    faiss_Index_free(index);

    if (fgmm_check_data(N, D, FGMM_F32, x, "consumer")) return fail("fgmm_check_data");
    if (fgmm_set_last_error(FGMM_ERR_ARG, "consumer: %d", 7) != FGMM_ERR_ARG ||
        strcmp(fgmm_get_last_error(), "consumer: 7"))
        return fail("fgmm_set_last_error");
    char path[4096];
    snprintf(path, sizeof path, "%s/consumer.sidecar", argc > 1 ? argv[1] : ".");
    FgmmOutput o;
    if (fgmm_output_begin(path, &o)) return fail("fgmm_output_begin");
    int ok = fprintf(o.f, "entries = %lld\n", (long long)entries) > 0;
    if (fgmm_output_end(&o, path, ok) || !ok) return fail("fgmm_output_end");
    printf("consumer: ok (%lld list entries for %d vectors)\n", (long long)entries, N);
    return entries >= N ? 0 : 1;
}
