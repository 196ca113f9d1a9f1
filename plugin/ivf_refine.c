/* SPDX-License-Identifier: MIT */
/* ivf_refine.c: exact re-ranking (fgmm_ivf_refine_flat), FAISS's IndexRefineFlat for a spilled
 * index. The handle keeps every vector added as d floats, row = id (ids are 0, 1, ... in add order,
 * as IndexRefineFlat's). A search asks fgmm_ivf_search_with for k x k_factor distinct ids (the
 * engines' de-duplication: each id once), computes their exact ||x - q||^2 against the rows and keeps
 * the k best, sorted by (distance, id). Every result is independent of the thread count: each query
 * is refined by one thread, from candidates that are themselves thread-count independent.
 *
 * Where the vectors live: owned by the handle, as IndexRefineFlat owns its IndexFlat, so that the
 * index file holds everything a search needs (fgmm_ivf_write saves the rows as a CRC'd section,
 * docs/FORMAT.md version 2) and a row can never belong to another array than the ids it answers for.
 * A caller's array would save the copy only where the caller keeps the vectors anyway, and would
 * put the id -> row binding and the array's lifetime on the caller, unchecked. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "ivf_impl.h"

/* k x k_factor candidates per query at most, and per batch of queries. */
#define REFINE_MAX_CANDIDATES ((idx_t)1 << 24)

int fgmm_ivf_check_k_factor(float k_factor, const char* who) {
    if (!isfinite(k_factor) || !(k_factor >= 1.0f))
        return fgmm_set_last_error(FGMM_ERR_ARG, "%s: k_factor = %g; must be finite and >= 1", who, (double)k_factor);
    return FGMM_OK;
}

int fgmm_ivf_refine_flat(FgmmIvf* h, float k_factor) {
    IVF_CHECK_NULL(h);
    int rc = fgmm_ivf_check_k_factor(k_factor, __func__);
    if (rc) return rc;
    if (!h->refine_on && (h->n_entries > 0 || h->next_id > 0))
        return fgmm_set_last_error(FGMM_ERR_STATE,
                                   "fgmm_ivf_refine_flat: the index holds %lld entries (next id %lld); a refine copy "
                                   "starts with an empty index, as FAISS's IndexRefineFlat",
                                   (long long)h->n_entries, (long long)h->next_id);
    h->refine_on = 1;
    h->k_factor = k_factor;
    return FGMM_OK;
}

int64_t fgmm_ivf_refine_bytes(const FgmmIvf* h) {
    return h && h->refine_on ? h->refine_n * h->d * (int64_t)sizeof(float) : 0;
}

int fgmm_ivf_refine_reserve(FgmmIvf* h, idx_t n, const idx_t* ids) {
    if (h->next_id != h->refine_n) /* never: rows and ids advance together */
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_add: the refine copy holds %lld rows, next id %lld",
                                   (long long)h->refine_n, (long long)h->next_id);
    for (idx_t i = 0; ids && i < n; i++)
        if (ids[i] != h->refine_n + i)
            return fgmm_set_last_error(
                FGMM_ERR_ARG,
                "fgmm_ivf_add: ids[%lld] = %lld; an index with a refine copy numbers its vectors "
                "0, 1, ... in add order (pass ids = NULL or %lld)",
                (long long)i, (long long)ids[i], (long long)(h->refine_n + i));
    const size_t row = (size_t)h->d * sizeof(float);
    if (n > INT64_MAX - h->refine_n || (uint64_t)(h->refine_n + n) > SIZE_MAX / row)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_add: %lld more rows do not fit in the refine copy",
                                   (long long)n);
    int64_t need = h->refine_n + n;
    if (need <= h->refine_cap) return FGMM_OK;
    int64_t cap = h->refine_cap > (int64_t)(SIZE_MAX / row / 2) ? need : 2 * h->refine_cap;
    if (cap < need) cap = need;
    float* r = realloc(h->refine, (size_t)cap * row);
    if (!r)
        return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_add: out of host memory for a refine copy of %lld rows",
                                   (long long)cap);
    h->refine = r;
    h->refine_cap = cap;
    return FGMM_OK;
}

void fgmm_ivf_refine_append(FgmmIvf* h, idx_t n, const float* x) {
    memcpy(h->refine + (size_t)h->refine_n * h->d, x, (size_t)n * h->d * sizeof(float));
    h->refine_n += n;
}

typedef struct cand {
    float d;
    idx_t id;
} cand;

static int cmp_cand(const void* a, const void* b) {
    const cand *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* One query: its kb candidate ids (-1 ends them) re-ranked into the k-row dout / lout; c holds kb.
 * Returns the exact distances computed. Ids without a row (entries of an add that failed part-way)
 * are dropped. */
static int64_t refine_query(const FgmmIvf* h, const float* q, idx_t kb, const idx_t* ids, idx_t k, cand* c, float* dout,
                            idx_t* lout) {
    idx_t m = 0;
    for (idx_t j = 0; j < kb && ids[j] >= 0; j++)
        if (ids[j] < h->refine_n) {
            c[m].id = ids[j];
            c[m++].d = fgmm_ivf_l2sq(h->refine + (size_t)ids[j] * h->d, q, h->d);
        }
    qsort(c, (size_t)m, sizeof *c, cmp_cand);
    for (idx_t i = 0; i < k; i++) {
        lout[i] = i < m ? c[i].id : -1;
        dout[i] = i < m ? c[i].d : INFINITY;
    }
    return m;
}

int fgmm_ivf_search_refine(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float k_factor,
                           float* distances, idx_t* labels, int64_t* dco) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(q);
    IVF_CHECK_NULL(distances);
    IVF_CHECK_NULL(labels);
    if (!h->refine_on)
        return fgmm_set_last_error(FGMM_ERR_STATE,
                                   "fgmm_ivf_search_refine: the handle has no refine copy "
                                   "(fgmm_ivf_refine_flat before the first add)");
    int rc = fgmm_ivf_check_k_factor(k_factor, "fgmm_ivf_search");
    if (rc) return rc;
    if (nq < 0 || k < 1 || nprobe < 1)
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "fgmm_ivf_search: need nq >= 0, k >= 1, nprobe >= 1 (got %lld, %lld, %d)",
                                   (long long)nq, (long long)k, nprobe);
    double kbd = floor((double)k * k_factor); /* FAISS: idx_t(k * k_factor) */
    if (kbd > (double)REFINE_MAX_CANDIDATES)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: k x k_factor = %.0f candidates; at most %lld", kbd,
                                   (long long)REFINE_MAX_CANDIDATES);
    if (nq > 0 && (uint64_t)k > (uint64_t)PTRDIFF_MAX / sizeof(idx_t) / (uint64_t)nq)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search: nq x k = %lld x %lld results do not fit in memory",
                                   (long long)nq, (long long)k);
    if (nq == 0) return fgmm_ivf_search_with(h, 0, q, k, nprobe, distances, labels, dco, FGMM_SEARCH_AUTO, 0);
    idx_t kb = (idx_t)kbd;
    idx_t bmax = REFINE_MAX_CANDIDATES / kb;
    if (bmax > nq) bmax = nq;
    float* bd = malloc((size_t)bmax * kb * sizeof(float));
    idx_t* bl = malloc((size_t)bmax * kb * sizeof(idx_t));
    if (!bd || !bl) {
        free(bd), free(bl);
        return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory for %lld candidates",
                                   (long long)(bmax * kb));
    }
    for (idx_t i0 = 0; i0 < nq && !rc; i0 += bmax) {
        idx_t b = nq - i0 < bmax ? nq - i0 : bmax;
        const float* qb = q + (size_t)i0 * h->d;
        rc = fgmm_ivf_search_with(h, b, qb, kb, nprobe, bd, bl, dco ? dco + i0 : NULL, FGMM_SEARCH_AUTO, 0);
        if (rc) break;
        int fail = 0;
#pragma omp parallel
        {
            cand* c = malloc((size_t)kb * sizeof *c);
            if (!c) {
#pragma omp atomic write
                fail = 1;
            }
#pragma omp for schedule(static)
            for (idx_t i = 0; i < b; i++) {
                if (!c) continue;
                int64_t m = refine_query(h, qb + (size_t)i * h->d, kb, bl + (size_t)i * kb, k, c,
                                         distances + (size_t)(i0 + i) * k, labels + (size_t)(i0 + i) * k);
                if (dco) dco[i0 + i] += m;
            }
            free(c);
        }
        if (fail)
            rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory for a thread's buffers");
    }
    free(bd), free(bl);
    return rc;
}
