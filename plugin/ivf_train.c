/* SPDX-License-Identifier: MIT */
/* ivf_train.c: the quantizer's training (fgmm_ivf_train: a GMM or k-means on a sample, its means into
 * FAISS's quantizer) and installing a given GMM (fgmm_ivf_set_gmm). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "flashgmm_ivf.h"
#include "ivf_impl.h"

static int install(FgmmIvf* h, FgmmModel* m, idx_t n, const float* x);

/* Training on the CPU: backend CPU, or AUTO without a device. */
static int on_cpu(const FgmmParams* g) {
    return g->backend == FGMM_BACKEND_CPU || (g->backend == FGMM_BACKEND_AUTO && !fgmm_gpu_available());
}

int fgmm_ivf_schedule(const FgmmIvfParams* p, FgmmParams* gp) {
    if (!p || !gp) return fgmm_set_last_error(FGMM_ERR_NULL, "fgmm_ivf_schedule: %s is NULL", p ? "gmm" : "params");
    *gp = p->gmm;
    if (p->max_points_per_list != FGMM_IVF_POINTS_AUTO) return p->max_points_per_list;
    if (!on_cpu(&p->gmm)) return 0;
    if (gp->kmeans_iter >= 0 && gp->niter >= 0) { /* else fgmm_train refuses them */
        long long it = (long long)gp->kmeans_iter + gp->niter;
        gp->kmeans_iter = it < FGMM_IVF_CPU_ITER ? (int)it : FGMM_IVF_CPU_ITER;
        gp->niter = 0;
    }
    return FGMM_IVF_CPU_POINTS;
}

static int cmp_idx(const void* a, const void* b) {
    idx_t x = *(const idx_t*)a, y = *(const idx_t*)b;
    return (x > y) - (x < y);
}

/* With ppl points per list at most (0: all), more rows are sampled down to ppl x nlist without
 * replacement (a partial Fisher-Yates shuffle seeded by gmm.seed, rows kept in their order);
 * *out stays NULL when all n rows are used. */
static int training_sample(const FgmmIvf* h, int ppl, idx_t n, const float* x, float** out, idx_t* ns) {
    *out = NULL;
    *ns = n;
    idx_t cap = (idx_t)ppl * h->nlist;
    if (!ppl || n <= cap) return FGMM_OK;
    idx_t* ids = malloc((size_t)n * sizeof *ids);
    float* s = malloc((size_t)cap * h->d * sizeof(float));
    if (!ids || !s) {
        free(ids), free(s);
        return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_train: out of host memory for a %lld-row sample",
                                   (long long)cap);
    }
    uint64_t r = h->p.gmm.seed * 6364136223846793005ull + 1442695040888963407ull;
    for (idx_t i = 0; i < n; i++) ids[i] = i;
    for (idx_t i = 0; i < cap; i++) {
        r ^= r >> 33, r *= 0xff51afd7ed558ccdull, r ^= r >> 33; /* splitmix-style scramble of an LCG */
        idx_t j = i + (idx_t)(r % (uint64_t)(n - i));
        idx_t t = ids[i];
        ids[i] = ids[j], ids[j] = t;
        r = r * 6364136223846793005ull + 1442695040888963407ull;
    }
    qsort(ids, (size_t)cap, sizeof *ids, cmp_idx);
    for (idx_t i = 0; i < cap; i++)
        memcpy(s + (size_t)i * h->d, x + (size_t)ids[i] * h->d, (size_t)h->d * sizeof(float));
    free(ids);
    *out = s;
    *ns = cap;
    return FGMM_OK;
}

/* FGMM_QUANT_AUTO's test: every row's norm within 0.2% of the others' (a sphere around the origin:
 * L2-normalised data, where an isotropic GMM is the wrong model and k-means wins). */
static int same_norms(idx_t n, int d, const float* x) {
    double lo = INFINITY, hi = 0;
    for (idx_t i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[(size_t)i * d + j] * x[(size_t)i * d + j];
        if (!isfinite(s)) return 0;
        lo = s < lo ? s : lo, hi = s > hi ? s : hi;
        if (hi > lo * 1.004) return 0; /* squared norms: 0.2% on the norm */
    }
    return lo > 0;
}

int fgmm_ivf_train(FgmmIvf* h, idx_t n, const float* x, FgmmTrainInfo* info) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(x);
    if (faiss_Index_is_trained(h->index))
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_train: the index is already trained");
    if (n < h->nlist)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_train: n = %lld < nlist = %d", (long long)n, h->nlist);
    FgmmParams gp;
    int ppl = fgmm_ivf_schedule(&h->p, &gp);
    gp.k = h->nlist;
    FgmmQuantizer quant = h->p.quantizer;
    if (quant == FGMM_QUANT_AUTO) quant = same_norms(n, h->d, x) ? FGMM_QUANT_KMEANS : FGMM_QUANT_GMM;
    if (quant == FGMM_QUANT_KMEANS) { /* Lloyd only: the GMM's iteration budget, no EM */
        if (gp.kmeans_iter > INT32_MAX - gp.niter)
            return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_train: kmeans_iter + niter overflows");
        gp.kmeans_iter += gp.niter;
        gp.niter = 0;
    }
    float* sample = NULL;
    idx_t ns = n;
    int rc = training_sample(h, ppl, n, x, &sample, &ns);
    if (rc) return rc;
    FgmmModel* m = NULL;
    rc = fgmm_train(&gp, ns, h->d, FGMM_F32, sample ? sample : x, &m, info);
    free(sample);
    if (rc) return rc;
    rc = install(h, m, n, x);
    if (rc) fgmm_model_free(m);
    else h->p.quantizer = quant;
    return rc;
}

/* Takes ownership of m on success. The quantizer gets the means; IndexIVF::train then sees a
 * trained quantizer with nlist entries, skips k-means, and trains what follows it (IVF-PQ:
 * the PQ on residuals to the nearest mean). On failure the quantizer is emptied again. */
static int install(FgmmIvf* h, FgmmModel* m, idx_t n, const float* x) {
    FaissIndex* q = faiss_IndexIVF_quantizer(h->ivf);
    if (faiss_Index_reset(q) || faiss_Index_add(q, h->nlist, fgmm_model_means(m)) ||
        faiss_Index_train(h->index, n, x)) {
        int rc = fgmm_ivf_faiss_failed("fgmm_ivf_train");
        faiss_Index_reset(q);
        return rc;
    }
    int rc = fgmm_ivf_load_centroids(h);
    if (rc) return rc;
    fgmm_model_free(h->model);
    h->model = m;
    return FGMM_OK;
}

int fgmm_ivf_set_gmm(FgmmIvf* h, const FgmmModel* gmm, idx_t n, const float* x) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(gmm);
    IVF_CHECK_NULL(x);
    if (faiss_Index_is_trained(h->index))
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_set_gmm: the index is already trained");
    const int k = fgmm_model_k(gmm), d = fgmm_model_d(gmm);
    if (k != h->nlist || d != h->d)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_set_gmm: a %d x %d GMM for an index with nlist = %d, d = %d",
                                   k, d, h->nlist, h->d);
    if (n < 1) return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_set_gmm: n = %lld", (long long)n);
    FgmmModel* m = NULL;
    int rc = fgmm_model_new(&m, k, d, fgmm_model_covariance(gmm), fgmm_model_means(gmm), fgmm_model_variances(gmm),
                            fgmm_model_weights(gmm));
    if (!rc && (rc = install(h, m, n, x))) fgmm_model_free(m);
    return rc;
}
