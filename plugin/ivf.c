/* SPDX-License-Identifier: MIT */
/* ivf.c: the FgmmIvf handle over a FAISS IVF index: its parameters, wrap, free and getters. Training
 * is in ivf_train.c, adding in ivf_add.c, searching in ivf_search_faiss.c (and the engines it picks). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>

#include "faiss_bridge.h"
#include "flashgmm_ivf.h"
#include "ivf_impl.h"

void fgmm_ivf_params_init(FgmmIvfParams* p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    fgmm_params_init(&p->gmm);
    p->gmm.niter = 90; /* the paper's warm start (10 k-means + 90 EM): better or equal on every measured set */
    p->quantizer = FGMM_QUANT_AUTO;
    p->rule = FGMM_ASSIGN_SOAR;
    p->primary = FGMM_PRIMARY_NEAREST;
    p->tau = 0;
    p->max_assign = 4;
    p->soar_lambda = 1.0f;
    p->spill_target = 1.5;
    p->select = FGMM_SELECT_RESP2;
    p->max_points_per_list = FGMM_IVF_POINTS_AUTO;
}

int fgmm_ivf_faiss_failed(const char* what) {
    const char* m = faiss_get_last_error();
    return fgmm_set_last_error(FGMM_ERR_FAISS, "%s: %s", what, m ? m : "unknown FAISS error");
}

int fgmm_ivf_check_params(const FgmmIvfParams* p) {
    if (p->quantizer != FGMM_QUANT_GMM && p->quantizer != FGMM_QUANT_KMEANS && p->quantizer != FGMM_QUANT_AUTO)
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: unknown quantizer %d", (int)p->quantizer);
    if (p->rule < FGMM_ASSIGN_TAU || p->rule > FGMM_ASSIGN_RESP)
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: unknown rule %d", (int)p->rule);
    if (p->primary != FGMM_PRIMARY_NEAREST && p->primary != FGMM_PRIMARY_RESPONSIBILITY)
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: unknown primary %d", (int)p->primary);
    if (p->primary == FGMM_PRIMARY_RESPONSIBILITY && p->rule != FGMM_ASSIGN_TAU && p->rule != FGMM_ASSIGN_HARD)
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "ivf params: primary = responsibility goes with the TAU and HARD rules only");
    if (p->max_assign < 1 || p->max_assign > 64)
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: max_assign = %d out of range [1, 64]", p->max_assign);
    if (!(p->tau <= 1.0)) return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: tau = %g; must be <= 1", p->tau);
    if (!(p->soar_lambda >= 0) || !isfinite(p->soar_lambda))
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: soar_lambda = %g; must be finite and >= 0",
                                   p->soar_lambda);
    if (!(p->spill_target == 0 || (p->spill_target >= 1 && p->spill_target <= 2)))
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: spill_target = %g; must be 0 or in [1, 2]",
                                   p->spill_target);
    if (p->select != FGMM_SELECT_RESP2 && p->select != FGMM_SELECT_DIST_RATIO)
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: unknown select %d", (int)p->select);
    if (p->max_points_per_list < FGMM_IVF_POINTS_AUTO)
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "ivf params: max_points_per_list = %d; must be >= 0 or "
                                   "FGMM_IVF_POINTS_AUTO (-1)",
                                   p->max_points_per_list);
    return FGMM_OK;
}

/* The width of a plan row; also the copies per id a search must allow for. */
int fgmm_ivf_lists_per_vector(const FgmmIvf* h) {
    int ma = h->p.rule == FGMM_ASSIGN_HARD ? 1 : fgmm_ivf_one_extra(h->p.rule) ? 2 : h->p.max_assign;
    return ma < h->nlist ? ma : h->nlist;
}

int fgmm_ivf_load_centroids(FgmmIvf* h) {
    float* c = malloc((size_t)h->nlist * h->d * sizeof(float));
    if (!c) return fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory for %d centroids", h->nlist);
    FaissIndex* q = faiss_IndexIVF_quantizer(h->ivf);
    if (faiss_Index_ntotal(q) != h->nlist) {
        free(c);
        return fgmm_set_last_error(FGMM_ERR_STATE, "the quantizer holds %lld centroids, nlist = %d",
                                   (long long)faiss_Index_ntotal(q), h->nlist);
    }
    if (faiss_Index_reconstruct_n(q, 0, h->nlist, c)) {
        free(c);
        return fgmm_ivf_faiss_failed("reading the quantizer's centroids");
    }
    free(h->cent);
    h->cent = c;
    return FGMM_OK;
}

int fgmm_ivf_wrap(FaissIndex* index, const FgmmIvfParams* params, FgmmIvf** out) {
    IVF_CHECK_NULL(out);
    *out = NULL;
    IVF_CHECK_NULL(index);
    FgmmIvfParams def;
    if (!params) {
        fgmm_ivf_params_init(&def);
        params = &def;
    }
    int rc = fgmm_ivf_check_params(params);
    if (rc) return rc;
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(index);
    if (!ivf) return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_wrap: the index is not an IVF index (IndexIVF*)");
    if (faiss_Index_metric_type(index) != METRIC_L2)
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_wrap: the index must use METRIC_L2 (a GMM is Euclidean)");
    char why[512];
    if (!fgmm_faiss_tested_type(index, why, sizeof why))
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_wrap: %s", why);
    FgmmIvf* h = calloc(1, sizeof *h);
    if (!h) return fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory");
    h->index = index;
    h->ivf = ivf;
    h->p = *params;
    h->d = faiss_Index_d(index);
    h->nlist = (int)faiss_IndexIVF_nlist(ivf);
    h->n_entries = faiss_Index_ntotal(index);
    if (faiss_Index_is_trained(index) && (rc = fgmm_ivf_load_centroids(h))) {
        free(h);
        return rc;
    }
    if (h->n_entries > 0) {
        char err[256];
        int64_t mx;
        if (fgmm_faiss_max_id(index, &mx, err, sizeof err)) {
            fgmm_ivf_free(h);
            return fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_wrap: %s", err);
        }
        h->next_id = mx < 0 ? 0 : mx == INT64_MAX ? INT64_MAX : mx + 1;
        /* assumes ids 0..max, as FAISS's own add gives; never more vectors than entries */
        h->n_vectors = h->next_id < h->n_entries ? h->next_id : h->n_entries;
    }
    *out = h;
    return FGMM_OK;
}

void fgmm_ivf_free(FgmmIvf* h) {
    if (!h) return;
    fgmm_model_free(h->model);
    free(h->cent);
    free(h->refine);
    if (h->owns_index) faiss_Index_free(h->index);
    free(h);
}

FaissIndex* fgmm_ivf_index(const FgmmIvf* h) { return h ? h->index : NULL; }
const FgmmModel* fgmm_ivf_model(const FgmmIvf* h) { return h ? h->model : NULL; }
double fgmm_ivf_inflation(const FgmmIvf* h) {
    return h && h->n_vectors ? (double)h->n_entries / (double)h->n_vectors : 1.0;
}

double fgmm_recall(idx_t nq, int k, const idx_t* labels, int gt_k, const int32_t* gt) {
    if (nq < 1 || k < 1 || gt_k < k || !labels || !gt) return -1;
    double hit = 0;
    for (idx_t i = 0; i < nq; i++)
        for (int a = 0; a < k; a++) {
            idx_t l = labels[(size_t)i * k + a];
            for (int b = 0; b < k && l >= 0; b++) hit += l == gt[(size_t)i * gt_k + b];
        }
    return hit / ((double)nq * k);
}
