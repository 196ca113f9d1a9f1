/* SPDX-License-Identifier: MIT */
/* ivf_search_faiss.c: fgmm_ivf_search, the engine choice (fgmm_ivf_search_with) and the FAISS engine:
 * search_preassigned for k x copies candidates, then the first copy of each id. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_bridge.h"
#include "flashgmm_ivf.h"
#include "ivf_impl.h"

/* Candidates per query at most (k x copies): bounds a search batch's buffers. */
#define IVF_MAX_CANDIDATES ((idx_t)1 << 24)

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
                if (fgmm_faiss_search_preassigned(h->index, 1, qb + (size_t)i * h->d, kr, nprobe,
                                                  pi + (size_t)i * nprobe, pd + (size_t)i * nprobe, rd, ri, err,
                                                  sizeof err)) {
                    free(rd), free(ri);
                    rc = fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_search: %s", err);
                    goto done;
                }
                got = fgmm_ivf_dedup_sorted(&set, kr, rd, ri, kf, dout, lout);
                int full = ri[kr - 1] >= 0;
                free(rd), free(ri);
                if (!full) break;
            }
            for (idx_t t = kf; t < k; t++)
                labels[(size_t)(i0 + i) * k + t] = -1, distances[(size_t)(i0 + i) * k + t] = INFINITY;
        }
        if (dco) fgmm_ivf_dco(h->nlist, sizes, pi, b, nprobe, dco + i0);
    }
done:
    free(dd);
    free(ii);
    free(pd);
    free(pi);
    free(sizes);
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
    if (engine < FGMM_SEARCH_AUTO || engine > FGMM_SEARCH_ONE)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: unknown engine %d", engine);
    if (!faiss_Index_is_trained(h->index))
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_search: the index is not trained");
    if (nq == 0) return FGMM_OK;
    int rc = fgmm_check_data(nq, h->d, FGMM_F32, q, "fgmm_ivf_search: queries");
    if (rc) return rc;
    if (nprobe > h->nlist) nprobe = h->nlist;
    if (engine != FGMM_SEARCH_FAISS) {
        rc = engine == FGMM_SEARCH_FLAT
                 ? fgmm_ivf_search_flat(h, nq, q, k, nprobe, distances, labels, dco, slot_bytes, NULL)
                 : fgmm_ivf_search_one(h, nq, q, k, nprobe, distances, labels, dco, engine == FGMM_SEARCH_ONE);
        if (rc != 1) return rc;
        if (engine != FGMM_SEARCH_AUTO)
            return fgmm_set_last_error(FGMM_ERR_STATE,
                                       "fgmm_ivf_search: the IVF-Flat engines need an IndexIVFFlat "
                                       "on in-memory inverted lists");
    }
    return search_faiss(h, nq, q, k, nprobe, distances, labels, dco);
}

int fgmm_ivf_search(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances, idx_t* labels,
                    int64_t* dco) {
    if (h && h->refine_on) return fgmm_ivf_search_refine(h, nq, q, k, nprobe, h->k_factor, distances, labels, dco);
    return fgmm_ivf_search_with(h, nq, q, k, nprobe, distances, labels, dco, FGMM_SEARCH_AUTO, 0);
}
