/* SPDX-License-Identifier: MIT */
/* ivf.c: quantizer training, multi-assignment (spill) and deduplicating search for FAISS IVF
 * indexes, over FAISS's C API (plus faiss_bridge for pre-assigned adds and searches). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faiss_bridge.h"
#include "flashgmm_ivf.h"
#include "flashgmm_spill.h"
#include "ivf_impl.h"

/* Vectors per add/search batch: bounds the temporary copies (batch x lists x d floats). */
#define IVF_BATCH 16384
/* Vectors per planning batch (about 50 bytes each): one responsibility pass (an engine, on the GPU
 * one upload of the model) per batch. */
#define IVF_PLAN_BATCH ((idx_t)1 << 20)
/* Bytes of GPU-made PQ codes held at a time: one encoding call's share of the add. */
#define IVF_GPU_CODE_BYTES ((size_t)64 << 20)
/* Candidates per query at most (k x copies): bounds a search batch's buffers. */
#define IVF_MAX_CANDIDATES ((idx_t)1 << 24)

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

/* SOAR and RESP add at most one list per vector, chosen by a selector under a budget. */
static int one_extra(FgmmAssignRule r) { return r == FGMM_ASSIGN_SOAR || r == FGMM_ASSIGN_RESP; }

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
        return fgmm_set_last_error(FGMM_ERR_ARG, "ivf params: max_points_per_list = %d; must be >= 0 or "
                                   "FGMM_IVF_POINTS_AUTO (-1)",
                                   p->max_points_per_list);
    return FGMM_OK;
}

/* The width of a plan row; also the copies per id a search must allow for. */
int fgmm_ivf_lists_per_vector(const FgmmIvf* h) {
    int ma = h->p.rule == FGMM_ASSIGN_HARD ? 1 : one_extra(h->p.rule) ? 2 : h->p.max_assign;
    return ma < h->nlist ? ma : h->nlist;
}

/* Caches the trained quantizer's centroids (nlist x d). */
static int load_centroids(FgmmIvf* h) {
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
    if (faiss_Index_is_trained(index) && (rc = load_centroids(h))) {
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
    for (idx_t i = 0; i < cap; i++) memcpy(s + (size_t)i * h->d, x + (size_t)ids[i] * h->d, (size_t)h->d * sizeof(float));
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
    int rc = load_centroids(h);
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

/* Nearest list, SOAR list, d1, d2 for a batch: on the GPU where the GMM's params ask for one (backend
 * GPU, or AUTO) and one is present (the cost of an add at scale: two GEMMs of the rows against the
 * centroids), else on the CPU. */
static int on_gpu(const FgmmIvf* h) { return h->p.gmm.backend != FGMM_BACKEND_CPU && fgmm_gpu_available(); }

static int soar_lists(const FgmmIvf* h, idx_t b, const float* x, idx_t* prim, idx_t* soar, float* d1, float* d2) {
    const FgmmParams* g = &h->p.gmm;
    if (on_gpu(h))
        return fgmm_soar_assign_gpu(g->gpu_device, b, h->d, x, h->nlist, h->cent, h->p.soar_lambda, prim, soar, d1, d2);
    return fgmm_soar_assign(b, h->d, x, h->nlist, h->cent, h->p.soar_lambda, prim, soar, d1, d2);
}

/* On the CPU, the SOAR lists and the top-2 responsibilities from one pass (fgmm_soar_assign_top2):
 * where both are needed, the model is isotropic and the centroids are its means. */
static int fused_top2(const FgmmIvf* h, int need_resp, int m) {
    const FgmmModel* g = h->model;
    return !on_gpu(h) && need_resp && m == 2 && h->p.rule == FGMM_ASSIGN_SOAR && h->nlist > 1 &&
           fgmm_model_covariance(g) == FGMM_COV_ISOTROPIC && fgmm_model_k(g) == h->nlist &&
           !memcmp(fgmm_model_means(g), h->cent, (size_t)h->nlist * h->d * sizeof(float));
}

/* Buffers of one batch plan. */
typedef struct plan_buf {
    idx_t *prim, *soar, *rl, *qi;
    float *d1, *d2, *rr, *qd;
} plan_buf;

static void plan_free(plan_buf* s) {
    free(s->prim); free(s->soar); free(s->rl); free(s->qi);
    free(s->d1); free(s->d2); free(s->rr); free(s->qd);
}

/* Lists for a batch of b vectors: ma per vector in lists[i*ma..] (primary first, -1 padded)
 * and, where the caller spills under a budget (score not NULL), the selector's score (higher =
 * spill first). */
static int plan_batch(const FgmmIvf* h, idx_t b, const float* x, int ma, idx_t* lists, float* score) {
    const FgmmIvfParams* p = &h->p;
    int budget = score != NULL;
    int m = p->rule == FGMM_ASSIGN_TAU ? ma : 2; /* responsibilities needed per vector */
    int need_resp = p->rule == FGMM_ASSIGN_TAU || p->rule == FGMM_ASSIGN_RESP ||
                    p->primary == FGMM_PRIMARY_RESPONSIBILITY || (budget && p->select == FGMM_SELECT_RESP2);
    if (need_resp && !h->model)
        return fgmm_set_last_error(FGMM_ERR_STATE,
                                   "fgmm_ivf_add: this rule or selector needs the GMM, and the index has none "
                                   "(train with fgmm_ivf_train, or read with its sidecars)");
    if (m > h->nlist) m = h->nlist;
    plan_buf s = {0};
    int rc = FGMM_OK, soar = p->rule == FGMM_ASSIGN_SOAR && h->nlist > 1;
    s.prim = malloc((size_t)b * sizeof(idx_t));
    s.soar = soar ? malloc((size_t)b * sizeof(idx_t)) : NULL;
    s.d1 = malloc((size_t)b * sizeof(float));
    s.d2 = malloc((size_t)b * sizeof(float));
    if (need_resp) {
        s.rl = malloc((size_t)b * m * sizeof(idx_t));
        s.rr = malloc((size_t)b * m * sizeof(float));
    }
    if (p->rule == FGMM_ASSIGN_TOPM) {
        s.qi = malloc((size_t)b * ma * sizeof(idx_t));
        s.qd = malloc((size_t)b * ma * sizeof(float));
    }
    if (!s.prim || !s.d1 || !s.d2 || (soar && !s.soar) || (need_resp && (!s.rl || !s.rr)) ||
        (p->rule == FGMM_ASSIGN_TOPM && (!s.qi || !s.qd))) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if (fused_top2(h, need_resp, m)) {
        if ((rc = fgmm_soar_assign_top2(h->model, b, x, p->soar_lambda, s.prim, s.soar, s.d1, s.d2, s.rl, s.rr)))
            goto done;
    } else {
        if ((rc = soar_lists(h, b, x, s.prim, s.soar, s.d1, s.d2))) goto done;
        if (need_resp && (rc = fgmm_assign_topm(h->model, &p->gmm, b, FGMM_F32, x, m, s.rl, s.rr))) goto done;
    }
    if (p->rule == FGMM_ASSIGN_TOPM &&
        faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, x, ma, s.qd, s.qi)) {
        rc = fgmm_ivf_faiss_failed("fgmm_ivf_add: quantizer search");
        goto done;
    }
    double tau = p->tau > 0 ? p->tau : 1.0 / h->nlist;
    for (idx_t i = 0; i < b; i++) {
        idx_t* out = lists + (size_t)i * ma;
        const idx_t* rl = need_resp ? s.rl + (size_t)i * m : NULL;
        const float* rr = need_resp ? s.rr + (size_t)i * m : NULL;
        for (int t = 0; t < ma; t++) out[t] = -1;
        if (p->rule == FGMM_ASSIGN_TOPM) {
            for (int t = 0; t < ma; t++) out[t] = s.qi[(size_t)i * ma + t];
            continue;
        }
        out[0] = p->primary == FGMM_PRIMARY_NEAREST ? s.prim[i] : rl[0];
        if (p->rule == FGMM_ASSIGN_HARD || ma < 2) continue;
        if (p->rule == FGMM_ASSIGN_TAU) {
            int cnt = 1;
            for (int t = 0; t < m && cnt < ma; t++) /* rl is sorted by responsibility */
                if (rl[t] >= 0 && rl[t] != out[0] && rr[t] > tau) out[cnt++] = rl[t];
            continue;
        }
        int t2 = 0; /* the most responsible component other than the primary */
        while (need_resp && t2 < m && rl[t2] == out[0]) t2++;
        out[1] = p->rule == FGMM_ASSIGN_SOAR ? s.soar[i] : t2 < m ? rl[t2] : -1;
        if (score)
            score[i] = p->select == FGMM_SELECT_RESP2 ? (t2 < m ? rr[t2] : 0.0f)
                                                      : (s.d2[i] > 0 ? s.d1[i] / s.d2[i] : 1.0f);
    }
done:
    plan_free(&s);
    return rc;
}

static int cmp_desc(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x < y) - (x > y);
}

/* Keeps the spill list of the vectors whose score exceeds the threshold; the first call sets
 * the threshold so that a share spill_target - 1 of its n vectors spill. */
static int apply_budget(FgmmIvf* h, idx_t n, idx_t* lists, const float* score) {
    if (!h->has_threshold) {
        idx_t s = (idx_t)llround((h->p.spill_target - 1.0) * (double)n);
        if (s <= 0) {
            h->threshold = INFINITY;
        } else if (s >= n) {
            h->threshold = -INFINITY;
        } else {
            float* sorted = malloc((size_t)n * sizeof(float));
            if (!sorted) return fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory");
            memcpy(sorted, score, (size_t)n * sizeof(float));
            qsort(sorted, (size_t)n, sizeof(float), cmp_desc);
            h->threshold = sorted[s]; /* the s vectors above it spill (fewer where scores tie) */
            free(sorted);
        }
        h->has_threshold = 1;
    }
    for (idx_t i = 0; i < n; i++)
        if (!(score[i] > h->threshold)) lists[(size_t)i * 2 + 1] = -1;
    return FGMM_OK;
}

/* IVF-PQ codes made on the GPU (fgmm_pq_encode_gpu) where the lists are chosen on one and the index is an
 * IVF-PQ that it encodes as FAISS does (fgmm_faiss_pq_codebook: by residual, 8-bit, L2; sub-vectors of at
 * most FGMM_PQ_GPU_MAX_DSUB): then *M and *codebook are set; else FAISS's add_core encodes on the CPU. */
static int pq_on_gpu(const FgmmIvf* h, int* M, const float** codebook) {
    return on_gpu(h) && fgmm_faiss_pq_codebook(h->index, M, codebook) && h->d / *M <= FGMM_PQ_GPU_MAX_DSUB;
}

int fgmm_ivf_add(FgmmIvf* h, idx_t n, const float* x, const idx_t* ids, idx_t* lists_added) {
    IVF_CHECK_NULL(h);
    if (lists_added) *lists_added = 0;
    if (n == 0) return FGMM_OK;
    IVF_CHECK_NULL(x);
    if (n < 0) return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_add: n = %lld", (long long)n);
    if (!faiss_Index_is_trained(h->index) || !h->cent)
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_add: the index is not trained");
    int rc = fgmm_check_data(n, h->d, FGMM_F32, x, "fgmm_ivf_add");
    if (rc) return rc;
    /* ids are >= 0 (-1 is FAISS's "none"); automatic ids continue from next_id, which saturates at INT64_MAX */
    idx_t next_id = h->next_id;
    if (ids) {
        for (idx_t i = 0; i < n; i++) {
            if (ids[i] < 0)
                return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_add: ids[%lld] = %lld; ids must be >= 0",
                                           (long long)i, (long long)ids[i]);
            if (ids[i] >= next_id) next_id = ids[i] == INT64_MAX ? INT64_MAX : ids[i] + 1;
        }
    } else if (h->next_id > INT64_MAX - n) {
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "fgmm_ivf_add: %lld vectors without ids would be numbered from %lld, past the "
                                   "largest id %lld; pass ids",
                                   (long long)n, (long long)h->next_id, (long long)INT64_MAX - 1);
    } else {
        next_id = h->next_id + n;
    }
    if (h->refine_on && (rc = fgmm_ivf_refine_reserve(h, n, ids))) return rc;
    int ma = fgmm_ivf_lists_per_vector(h), d = h->d;
    int budget = one_extra(h->p.rule) && h->p.spill_target > 0 && ma == 2;
    if ((uint64_t)n > SIZE_MAX / (sizeof(idx_t) * ma))
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_add: n = %lld is too large for one call", (long long)n);
    idx_t bmax = n < IVF_BATCH ? n : IVF_BATCH;
    int M = 0;
    const float* codebook = NULL;
    int gpu_pq = pq_on_gpu(h, &M, &codebook);
    /* GPU codes: encoded `chunk` vectors at a time (a multiple of bmax), then appended by batch */
    idx_t chunk = gpu_pq ? (idx_t)(IVF_GPU_CODE_BYTES / ((size_t)ma * M)) / bmax * bmax : n;
    if (chunk < bmax) chunk = bmax;
    idx_t* lists = malloc((size_t)n * ma * sizeof(idx_t));
    float* score = budget ? malloc((size_t)n * sizeof(float)) : NULL;
    float* xr = gpu_pq ? NULL : malloc((size_t)bmax * ma * d * sizeof(float));
    uint8_t* codes = gpu_pq ? malloc((size_t)(chunk < n ? chunk : n) * ma * M) : NULL;
    uint8_t* cr = gpu_pq ? malloc((size_t)bmax * ma * M) : NULL;
    idx_t* ir = malloc((size_t)bmax * ma * sizeof(idx_t));
    idx_t* lr = malloc((size_t)bmax * ma * sizeof(idx_t));
    h->add_pq_gpu_s = 0;
    if (!lists || (budget && !score) || (!gpu_pq && !xr) || (gpu_pq && (!codes || !cr)) || !ir || !lr) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_add: out of host memory for %lld vectors", (long long)n);
        goto done;
    }
    for (idx_t i0 = 0; i0 < n; i0 += IVF_PLAN_BATCH) {
        idx_t b = n - i0 < IVF_PLAN_BATCH ? n - i0 : IVF_PLAN_BATCH;
        if ((rc = plan_batch(h, b, x + (size_t)i0 * d, ma, lists + (size_t)i0 * ma, score ? score + i0 : NULL)))
            goto done;
    }
    if (budget && (rc = apply_budget(h, n, lists, score))) goto done;
    idx_t total = 0;
    for (idx_t c0 = 0; c0 < n; c0 += chunk) {
        idx_t cn = n - c0 < chunk ? n - c0 : chunk;
        double t0 = omp_get_wtime();
        if (gpu_pq && (rc = fgmm_pq_encode_gpu(h->p.gmm.gpu_device, cn, d, x + (size_t)c0 * d, ma,
                                               lists + (size_t)c0 * ma, h->nlist, h->cent, M, codebook, codes)))
            goto done;
        for (idx_t i0 = c0; i0 < c0 + cn; i0 += bmax) {
            idx_t b = c0 + cn - i0 < bmax ? c0 + cn - i0 : bmax;
            idx_t m = 0; /* entries in this batch, grouped by rank so each vector's primary list comes first */
            for (int t = 0; t < ma; t++)
                for (idx_t i = i0; i < i0 + b; i++) {
                    idx_t l = lists[(size_t)i * ma + t];
                    if (l < 0) continue;
                    if (gpu_pq)
                        memcpy(cr + (size_t)m * M, codes + ((size_t)(i - c0) * ma + t) * M, (size_t)M);
                    else
                        memcpy(xr + (size_t)m * d, x + (size_t)i * d, (size_t)d * sizeof(float));
                    ir[m] = ids ? ids[i] : h->next_id + i;
                    lr[m] = l;
                    m++;
                }
            char err[512];
            if (gpu_pq ? fgmm_faiss_add_codes(h->index, m, cr, ir, lr, err, sizeof err)
                       : fgmm_faiss_add_preassigned(h->index, m, xr, ir, lr, err, sizeof err)) {
                rc = fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_add: %s", err);
                goto done;
            }
            total += m;
            h->n_entries += m; /* counted as they land: a failure part-way leaves the counts true */
        }
        if (gpu_pq) h->add_pq_gpu_s += omp_get_wtime() - t0;
    }
    if (h->refine_on) fgmm_ivf_refine_append(h, n, x);
    h->n_vectors += n;
    h->next_id = next_id;
    if (lists_added) *lists_added = total;
done:
    free(lists); free(score); free(xr); free(codes); free(cr); free(ir); free(lr);
    return rc;
}

/* The FAISS engine: search_preassigned for k x copies candidates (each id sits in at most `copies`
 * lists, so they hold k distinct ids), then the first copy of each id. */
static int search_faiss(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                        idx_t* labels, int64_t* dco) {
    idx_t copies = fgmm_ivf_lists_per_vector(h), ntotal = faiss_Index_ntotal(h->index);
    idx_t kf = k < ntotal ? k : ntotal > 0 ? ntotal : 1; /* more than ntotal would be padding */
    if (kf > IVF_MAX_CANDIDATES / copies)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: k = %lld is too large (k x %lld copies > %lld)",
                                   (long long)kf, (long long)copies, (long long)IVF_MAX_CANDIDATES);
    idx_t ki = kf * copies;
    idx_t bmax = IVF_MAX_CANDIDATES / ki < IVF_BATCH / 4 ? IVF_MAX_CANDIDATES / ki : IVF_BATCH / 4;
    if (bmax > nq) bmax = nq;
    float* dd = malloc((size_t)bmax * ki * sizeof(float));
    idx_t* ii = malloc((size_t)bmax * ki * sizeof(idx_t));
    float* pd = malloc((size_t)bmax * nprobe * sizeof(float));
    idx_t* pi = malloc((size_t)bmax * nprobe * sizeof(idx_t));
    int64_t* sizes = dco ? malloc((size_t)h->nlist * sizeof(int64_t)) : NULL;
    FgmmIvfDedup set = {NULL, 0};
    int rc = FGMM_OK;
    if (!dd || !ii || !pd || !pi || (dco && !sizes) || fgmm_ivf_dedup_init(&set, kf)) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory");
        goto done;
    }
    for (int l = 0; dco && l < h->nlist; l++) sizes[l] = (int64_t)faiss_IndexIVF_get_list_size(h->ivf, (size_t)l);
    for (idx_t i0 = 0; i0 < nq; i0 += bmax) {
        idx_t b = nq - i0 < bmax ? nq - i0 : bmax;
        const float* qb = q + (size_t)i0 * h->d;
        char err[512];
        if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, qb, nprobe, pd, pi)) {
            rc = fgmm_ivf_faiss_failed("fgmm_ivf_search: quantizer");
            goto done;
        }
        if (fgmm_faiss_search_preassigned(h->index, b, qb, ki, nprobe, pi, pd, dd, ii, err, sizeof err)) {
            rc = fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_search: %s", err);
            goto done;
        }
        for (idx_t i = 0; i < b; i++) {
            float* dout = distances + (size_t)(i0 + i) * k;
            idx_t* lout = labels + (size_t)(i0 + i) * k;
            idx_t got = fgmm_ivf_dedup_sorted(&set, ki, dd + (size_t)i * ki, ii + (size_t)i * ki, kf, dout, lout);
            /* a full row with fewer than kf distinct ids: ids repeated beyond the spill's copies (added
             * more than once) hid others; this query again with twice the candidates, until done */
            for (idx_t kr = ki; got < kf && kr < ntotal && ii[(size_t)i * ki + ki - 1] >= 0;) {
                kr = kr < ntotal / 2 ? 2 * kr : ntotal;
                float* rd = malloc((size_t)kr * sizeof(float));
                idx_t* ri = malloc((size_t)kr * sizeof(idx_t));
                if (!rd || !ri) {
                    free(rd), free(ri);
                    rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory");
                    goto done;
                }
                if (fgmm_faiss_search_preassigned(h->index, 1, qb + (size_t)i * h->d, kr, nprobe, pi + (size_t)i * nprobe,
                                                  pd + (size_t)i * nprobe, rd, ri, err, sizeof err)) {
                    free(rd), free(ri);
                    rc = fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_search: %s", err);
                    goto done;
                }
                got = fgmm_ivf_dedup_sorted(&set, kr, rd, ri, kf, dout, lout);
                int full = ri[kr - 1] >= 0;
                free(rd), free(ri);
                if (!full) break;
            }
            for (idx_t t = kf; t < k; t++) labels[(size_t)(i0 + i) * k + t] = -1, distances[(size_t)(i0 + i) * k + t] = INFINITY;
        }
        if (dco) fgmm_ivf_dco(h->nlist, sizes, pi, b, nprobe, dco + i0);
    }
done:
    free(dd); free(ii); free(pd); free(pi); free(sizes);
    fgmm_ivf_dedup_free(&set);
    return rc;
}

int fgmm_ivf_search_with(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                         idx_t* labels, int64_t* dco, int engine, size_t slot_bytes) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(q);
    IVF_CHECK_NULL(distances);
    IVF_CHECK_NULL(labels);
    if (nq < 0 || k < 1 || nprobe < 1)
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "fgmm_ivf_search: need nq >= 0, k >= 1, nprobe >= 1 (got %lld, %lld, %d)",
                                   (long long)nq, (long long)k, nprobe);
    /* FAISS takes any k and pads; so do both engines, whose own buffers grow with min(k, entries) only */
    if (nq > 0 && (uint64_t)k > (uint64_t)PTRDIFF_MAX / sizeof(idx_t) / (uint64_t)nq)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: nq x k = %lld x %lld results do not fit in memory",
                                   (long long)nq, (long long)k);
    if (engine < FGMM_SEARCH_AUTO || engine > FGMM_SEARCH_FLAT)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: unknown engine %d", engine);
    if (!faiss_Index_is_trained(h->index))
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_search: the index is not trained");
    if (nq == 0) return FGMM_OK;
    int rc = fgmm_check_data(nq, h->d, FGMM_F32, q, "fgmm_ivf_search: queries");
    if (rc) return rc;
    if (nprobe > h->nlist) nprobe = h->nlist;
    if (engine != FGMM_SEARCH_FAISS) {
        rc = fgmm_ivf_search_flat(h, nq, q, k, nprobe, distances, labels, dco, slot_bytes);
        if (rc != 1) return rc;
        if (engine == FGMM_SEARCH_FLAT)
            return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_search: the list-major engine needs an IndexIVFFlat "
                                                       "on in-memory inverted lists");
    }
    return search_faiss(h, nq, q, k, nprobe, distances, labels, dco);
}

int fgmm_ivf_search(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                    idx_t* labels, int64_t* dco) {
    if (h && h->refine_on) return fgmm_ivf_search_refine(h, nq, q, k, nprobe, h->k_factor, distances, labels, dco);
    return fgmm_ivf_search_with(h, nq, q, k, nprobe, distances, labels, dco, FGMM_SEARCH_AUTO, 0);
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
