/* SPDX-License-Identifier: MIT */
/* ivf_add.c: adding vectors (fgmm_ivf_add): each vector's lists under the handle's rule (multi-assignment,
 * the spill), the spill budget, then FAISS's pre-assigned add (IVF-PQ codes made on the GPU where one is). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_bridge.h"
#include "flashgmm_ivf.h"
#include "flashgmm_spill.h"
#include "ivf_impl.h"

/* Vectors per planning batch (about 50 bytes each): one responsibility pass (an engine, on the GPU
 * one upload of the model) per batch. */
#define IVF_PLAN_BATCH ((idx_t)1 << 20)
/* Bytes of GPU-made PQ codes held at a time: one encoding call's share of the add. */
#define IVF_GPU_CODE_BYTES ((size_t)64 << 20)

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
    free(s->prim);
    free(s->soar);
    free(s->rl);
    free(s->qi);
    free(s->d1);
    free(s->d2);
    free(s->rr);
    free(s->qd);
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
    if (p->rule == FGMM_ASSIGN_TOPM && faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, x, ma, s.qd, s.qi)) {
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
            score[i] =
                p->select == FGMM_SELECT_RESP2 ? (t2 < m ? rr[t2] : 0.0f) : (s.d2[i] > 0 ? s.d1[i] / s.d2[i] : 1.0f);
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
    int budget = fgmm_ivf_one_extra(h->p.rule) && h->p.spill_target > 0 && ma == 2;
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
                    if (gpu_pq) memcpy(cr + (size_t)m * M, codes + ((size_t)(i - c0) * ma + t) * M, (size_t)M);
                    else memcpy(xr + (size_t)m * d, x + (size_t)i * d, (size_t)d * sizeof(float));
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
    free(lists);
    free(score);
    free(xr);
    free(codes);
    free(cr);
    free(ir);
    free(lr);
    return rc;
}
