/* SPDX-License-Identifier: MIT */
/* ivf_probe.c: query-adaptive probing (fgmm_ivf_search_ex) and its calibration (fgmm_ivf_calibrate).
 *
 * A batch of queries is assigned to its nprobe nearest lists once (FAISS's quantizer). EPS keeps the
 * lists within (1 + eps) of the nearest centroid's distance and scans them in one pass of the
 * list-major engine (ivf_search.c, given the lists). KTH scans in passes: the first min_probe lists
 * of every query, which gives each query's k-th distance so far, D_k; then rounds of ranks
 * [lo, 2 lo), each keeping the lists where an entry plausibly beats the D_k of the passes before (a
 * query whose whole round is rejected stops). For an entry x of list j, with r = x - c_j,
 *     ||x - q||^2 = ||q - c_j||^2 + ||r||^2 - 2 r.(q - c_j),
 * whose mean over the list is about d(q,c_j)^2 + m_j (m_j: the mean ||r||^2) and whose spread, were
 * r isotropic, is 2 sqrt(m_j d(q,c_j)^2 / d). The list is scanned while the mean is at most
 * `threshold` spreads above D_k. m_j comes from up to SPREAD_SAMPLE entries of the list at even
 * positions, computed on first use in a call (nothing is cached in the handle). Each pass's k
 * results per query are merged into the row (first copy of each id). Every step is deterministic,
 * so results do not depend on the thread count. Measured: neither rule beats fixed nprobe at
 * equal recall on sift100K or Fashion-MNIST (docs/results/probe.md).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_bridge.h"
#include "ivf_impl.h"

#define SPREAD_SAMPLE 32               /* entries per list behind m_j: its relative error ~ 1/sqrt(32) x CV */
#define CHUNK_MAX 4096                 /* queries per pass at most */
#define CHUNK_BYTES ((size_t)64 << 20) /* per-chunk result buffers at most (at least one query) */
#define CAL_ITERS 8                    /* bisection steps of a threshold: 1/256 of the bracket */

void fgmm_ivf_search_params_init(FgmmIvfSearchParams* p) {
    if (!p) return;
    p->nprobe = 1;
    p->min_probe = 2;
    p->rule = FGMM_PROBE_FIXED;
    p->threshold = 0;
}

static int check_params(const FgmmIvfSearchParams* p, const char* who) {
    if (!p) return fgmm_set_last_error(FGMM_ERR_NULL, "%s: params is NULL", who);
    if (p->rule != FGMM_PROBE_FIXED && p->rule != FGMM_PROBE_KTH && p->rule != FGMM_PROBE_EPS)
        return fgmm_set_last_error(FGMM_ERR_ARG, "%s: unknown rule %d", who, (int)p->rule);
    if (p->nprobe < 1 || p->min_probe < 1)
        return fgmm_set_last_error(FGMM_ERR_ARG, "%s: need nprobe >= 1 and min_probe >= 1 (got %d, %d)", who, p->nprobe,
                                   p->min_probe);
    if (isnan(p->threshold) || (p->rule == FGMM_PROBE_EPS && !(p->threshold >= 0)))
        return fgmm_set_last_error(FGMM_ERR_ARG, "%s: threshold = %g; must be a number (EPS: >= 0)", who, p->threshold);
    return FGMM_OK;
}

/* The index's lists (borrowed pointers) and per-list mean squared residuals, computed on demand. */
typedef struct lists {
    const float** codes;
    const idx_t** ids;
    int64_t* sizes;
    float* spread; /* m_j; NaN until computed */
} lists;

static void lists_free(lists* L) { free(L->codes), free(L->ids), free(L->sizes), free(L->spread); }

static int lists_get(const FgmmIvf* h, lists* L) {
    L->codes = malloc((size_t)h->nlist * sizeof *L->codes);
    L->ids = malloc((size_t)h->nlist * sizeof *L->ids);
    L->sizes = malloc((size_t)h->nlist * sizeof *L->sizes);
    L->spread = malloc((size_t)h->nlist * sizeof *L->spread);
    if (!L->codes || !L->ids || !L->sizes || !L->spread) {
        lists_free(L);
        return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search_ex: out of host memory");
    }
    if (!fgmm_faiss_flat_lists(h->index, L->codes, L->ids, L->sizes)) {
        lists_free(L);
        return fgmm_set_last_error(FGMM_ERR_STATE,
                                   "fgmm_ivf_search_ex: adaptive probing needs an IndexIVFFlat on "
                                   "in-memory inverted lists");
    }
    for (int l = 0; l < h->nlist; l++) L->spread[l] = NAN;
    return FGMM_OK;
}

static float list_spread(const FgmmIvf* h, lists* L, int l) {
    if (!isnan(L->spread[l])) return L->spread[l];
    int64_t n = L->sizes[l], s = n < SPREAD_SAMPLE ? n : SPREAD_SAMPLE;
    const float* c = h->cent + (size_t)l * h->d;
    double acc = 0;
    for (int64_t i = 0; i < s; i++) {
        const float* x = L->codes[l] + (size_t)(i * n / s) * h->d;
        for (int j = 0; j < h->d; j++) acc += (double)(x[j] - c[j]) * (x[j] - c[j]);
    }
    return L->spread[l] = s ? (float)(acc / s) : 0.0f;
}

/* KTH's score of a list at squared centroid distance cq, spread m, for a k-th distance kth: spreads
 * by which the list's mean distance exceeds kth (-inf where a query has fewer than k results). */
static double kth_score(double cq, double m, double kth, int d) {
    double num = cq + m - kth, den = 2.0 * sqrt(m * cq / d);
    if (den > 0) return num / den;
    return num > 0 ? INFINITY : -INFINITY;
}

/* Row-wise union of two sorted (distance, id) result rows, first copy of each id, k kept. */
static void merge_rows(FgmmIvfDedup* set, const float* d1, const idx_t* i1, const float* d2, const idx_t* i2, idx_t k,
                       float* td, idx_t* ti, float* dout, idx_t* lout) {
    idx_t a = 0, b = 0, n = 0;
    while ((a < k && i1[a] >= 0) || (b < k && i2[b] >= 0)) {
        int take1 =
            !(b < k && i2[b] >= 0) || (a < k && i1[a] >= 0 && (d1[a] < d2[b] || (d1[a] == d2[b] && i1[a] <= i2[b])));
        if (take1) td[n] = d1[a], ti[n++] = i1[a++];
        else td[n] = d2[b], ti[n++] = i2[b++];
    }
    fgmm_ivf_dedup_sorted(set, n, td, ti, k, dout, lout);
}

/* The list-major engine on the given lists (np per query). */
static int scan(const FgmmIvf* h, idx_t b, const float* qb, idx_t k, int np, const idx_t* as, float* D, idx_t* I) {
    int rc = fgmm_ivf_search_flat(h, b, qb, k, np, D, I, NULL, 0, as);
    return rc == 1 ? fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_search_ex: the index is not IVF-Flat") : rc;
}

/* A chunk's buffers (bmax queries). */
typedef struct bufs {
    float *cd, *D2, *td; /* bmax x np centroid distances, bmax x k second results, 2k merge */
    idx_t *as, *a1, *I2, *ti;
    unsigned char* done; /* bmax: the rule rejected a whole round */
    FgmmIvfDedup set;
} bufs;

/* One chunk of b queries at qb, the rule applied; results into D/I rows, dco (may be NULL). */
static int search_chunk(const FgmmIvf* h, lists* L, idx_t b, const float* qb, idx_t k, const FgmmIvfSearchParams* p,
                        int np, int p0, bufs* w, float* D, idx_t* I, int64_t* dco) {
    const int d = h->d;
    int rc;
    float* cd = w->cd;
    idx_t *as = w->as, *a1 = w->a1;
    if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, qb, np, cd, as))
        return fgmm_ivf_faiss_failed("fgmm_ivf_search_ex: quantizer");
    if (p->rule == FGMM_PROBE_EPS) {
        double f = (1.0 + p->threshold) * (1.0 + p->threshold);
        for (idx_t i = 0; i < b; i++)
            for (int r = p0; r < np; r++)
                if (as[(size_t)i * np + r] >= 0 && !(cd[(size_t)i * np + r] <= f * cd[(size_t)i * np]))
                    as[(size_t)i * np + r] = -1;
        if ((rc = scan(h, b, qb, k, np, as, D, I))) return rc;
    } else { /* KTH: the first p0 lists, then rounds of ranks [lo, 2 lo), each kept list chosen by the k-th
              * distance after the rounds before; a query stops once the rule rejects a whole round */
        for (idx_t i = 0; i < b; i++) memcpy(a1 + (size_t)i * p0, as + (size_t)i * np, (size_t)p0 * sizeof(idx_t));
        if ((rc = scan(h, b, qb, k, p0, a1, D, I))) return rc;
        memset(w->done, 0, (size_t)b);
        for (int lo = p0, hi; lo < np; lo = hi) {
            hi = 2 * lo < np ? 2 * lo : np;
            int n2 = hi - lo, any = 0;
            for (idx_t i = 0; i < b; i++) {
                double kth = D[(size_t)i * k + k - 1];
                int kept = 0;
                for (int r = lo; r < hi; r++) {
                    idx_t l = as[(size_t)i * np + r], *o = &a1[(size_t)i * n2 + r - lo];
                    *o = !w->done[i] && l >= 0 &&
                                 kth_score(cd[(size_t)i * np + r], list_spread(h, L, (int)l), kth, d) <= p->threshold
                             ? l
                             : -1;
                    kept |= *o >= 0;
                    as[(size_t)i * np + r] = *o;
                }
                w->done[i] |= !kept;
                any |= kept;
            }
            if (!any) { /* every query is done: the ranks after this round are not scanned either */
                for (idx_t i = 0; i < b; i++)
                    for (int r = hi; r < np; r++) as[(size_t)i * np + r] = -1;
                break;
            }
            if ((rc = scan(h, b, qb, k, n2, a1, w->D2, w->I2))) return rc;
            for (idx_t i = 0; i < b; i++) {
                float* dr = D + (size_t)i * k;
                idx_t* lr = I + (size_t)i * k;
                if (w->I2[(size_t)i * k] < 0) continue; /* no list kept, or nothing in them */
                merge_rows(&w->set, dr, lr, w->D2 + (size_t)i * k, w->I2 + (size_t)i * k, k, w->td, w->ti, dr, lr);
            }
        }
    }
    if (dco) fgmm_ivf_dco(h->nlist, L->sizes, as, b, np, dco);
    return FGMM_OK;
}

int fgmm_ivf_search_ex(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, const FgmmIvfSearchParams* p,
                       float* distances, idx_t* labels, int64_t* dco) {
    int rc = check_params(p, "fgmm_ivf_search_ex");
    if (rc) return rc;
    if (p->rule == FGMM_PROBE_FIXED) return fgmm_ivf_search(h, nq, q, k, p->nprobe, distances, labels, dco);
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(q);
    IVF_CHECK_NULL(distances);
    IVF_CHECK_NULL(labels);
    if (nq < 0 || k < 1)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_search_ex: need nq >= 0, k >= 1 (got %lld, %lld)",
                                   (long long)nq, (long long)k);
    if (nq > 0 && (uint64_t)k > (uint64_t)PTRDIFF_MAX / sizeof(idx_t) / (uint64_t)nq)
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "fgmm_ivf_search_ex: nq x k = %lld x %lld results do not fit in memory",
                                   (long long)nq, (long long)k);
    if (!faiss_Index_is_trained(h->index) || !h->cent)
        return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_search_ex: the index is not trained");
    if (nq == 0) return FGMM_OK;
    if ((rc = fgmm_check_data(nq, h->d, FGMM_F32, q, "fgmm_ivf_search_ex: queries"))) return rc;
    lists L;
    if ((rc = lists_get(h, &L))) return rc;
    const int np = p->nprobe < h->nlist ? p->nprobe : h->nlist, p0 = p->min_probe < np ? p->min_probe : np;
    /* per query: np x (list, distance) + 4k results (second pass, merge) */
    size_t per_q = (size_t)np * (2 * sizeof(idx_t) + sizeof(float)) + (size_t)k * 4 * (sizeof(float) + sizeof(idx_t));
    idx_t bmax = (idx_t)(CHUNK_BYTES / per_q);
    bmax = bmax < 1 ? 1 : bmax > CHUNK_MAX ? CHUNK_MAX : bmax > nq ? nq : bmax;
    bufs w = {malloc((size_t)bmax * np * sizeof(float)),
              malloc((size_t)bmax * k * sizeof(float)),
              malloc((size_t)2 * k * sizeof(float)),
              malloc((size_t)bmax * np * sizeof(idx_t)),
              malloc((size_t)bmax * np * sizeof(idx_t)),
              malloc((size_t)bmax * k * sizeof(idx_t)),
              malloc((size_t)2 * k * sizeof(idx_t)),
              malloc((size_t)bmax),
              {NULL, 0}};
    if (!w.cd || !w.D2 || !w.td || !w.as || !w.a1 || !w.I2 || !w.ti || !w.done || fgmm_ivf_dedup_init(&w.set, k)) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search_ex: out of host memory for %lld queries",
                                 (long long)bmax);
        goto done;
    }
    for (idx_t i0 = 0; i0 < nq && !rc; i0 += bmax) {
        idx_t b = nq - i0 < bmax ? nq - i0 : bmax;
        rc = search_chunk(h, &L, b, q + (size_t)i0 * h->d, k, p, np, p0, &w, distances + (size_t)i0 * k,
                          labels + (size_t)i0 * k, dco ? dco + i0 : NULL);
    }
done:
    free(w.cd), free(w.D2), free(w.td), free(w.as), free(w.a1), free(w.I2), free(w.ti), free(w.done);
    fgmm_ivf_dedup_free(&w.set);
    lists_free(&L);
    return rc;
}

/* ---- calibration --------------------------------------------------------------------------- */

static int cmp_idx(const void* a, const void* b) {
    idx_t x = *(const idx_t*)a, y = *(const idx_t*)b;
    return (x > y) - (x < y);
}

/* Mean over n rows of |row ∩ truth row| / k (ids sorted per row in place; -1 never matches). */
static double recall_rows(idx_t n, idx_t k, idx_t* lab, const idx_t* gt_sorted) {
    double hit = 0;
    for (idx_t i = 0; i < n; i++) {
        idx_t *a = lab + (size_t)i * k, ia = 0, ib = 0;
        const idx_t* g = gt_sorted + (size_t)i * k;
        qsort(a, (size_t)k, sizeof *a, cmp_idx);
        while (ia < k && ib < k) {
            if (a[ia] < 0 || a[ia] < g[ib]) ia++;
            else if (g[ib] < a[ia]) ib++;
            else hit++, ia++, ib++;
        }
    }
    return hit / ((double)n * k);
}

typedef struct cal {
    const FgmmIvf* h;
    idx_t n, k;
    const float* x;
    const idx_t* gt;
    float* D;
    idx_t* I;
} cal;

static int cal_recall(cal* c, const FgmmIvfSearchParams* p, double* r) {
    int rc = fgmm_ivf_search_ex(c->h, c->n, c->x, c->k, p, c->D, c->I, NULL);
    if (!rc) *r = recall_rows(c->n, c->k, c->I, c->gt);
    return rc;
}

int fgmm_ivf_calibrate(const FgmmIvf* h, idx_t n, const float* x, idx_t k, double target, FgmmIvfSearchParams* p,
                       double* recall) {
    int rc = check_params(p, "fgmm_ivf_calibrate");
    if (rc) return rc;
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(x);
    if (n < 1 || k < 1 || !(target > 0 && target <= 1))
        return fgmm_set_last_error(FGMM_ERR_ARG,
                                   "fgmm_ivf_calibrate: need n >= 1, k >= 1, target in (0, 1] "
                                   "(got %lld, %lld, %g)",
                                   (long long)n, (long long)k, target);
    if ((uint64_t)k > (uint64_t)PTRDIFF_MAX / 2 / sizeof(idx_t) / (uint64_t)n)
        return fgmm_set_last_error(FGMM_ERR_ARG, "fgmm_ivf_calibrate: n x k = %lld x %lld do not fit in memory",
                                   (long long)n, (long long)k);
    cal c = {h, n, k, x, NULL, malloc((size_t)n * k * sizeof(float)), malloc((size_t)n * k * sizeof(idx_t))};
    idx_t* gt = malloc((size_t)n * k * sizeof(idx_t));
    FgmmIvfSearchParams t = *p;
    double r = 0;
    if (!c.D || !c.I || !gt) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_calibrate: out of host memory");
        goto done;
    }
    /* the truth: every list scanned */
    if ((rc = fgmm_ivf_search(h, n, x, k, h->nlist, c.D, gt, NULL))) goto done;
    for (idx_t i = 0; i < n; i++) qsort(gt + (size_t)i * k, (size_t)k, sizeof *gt, cmp_idx);
    c.gt = gt;
    if (p->rule == FGMM_PROBE_FIXED) { /* the smallest nprobe in [1, nlist] reaching the target */
        int lo = 0, hi = h->nlist;     /* recall(lo) < target (lo = 0: none), recall(hi) >= target */
        while (hi - lo > 1) {
            t.nprobe = lo + (hi - lo) / 2;
            if ((rc = cal_recall(&c, &t, &r))) goto done;
            if (r >= target) hi = t.nprobe;
            else lo = t.nprobe;
        }
        t.nprobe = hi;
    } else { /* the smallest threshold reaching the target, nprobe lists at most */
        t.threshold = INFINITY;
        if ((rc = cal_recall(&c, &t, &r))) goto done;
        if (r < target) {
            rc = fgmm_set_last_error(FGMM_ERR_ARG,
                                     "fgmm_ivf_calibrate: recall@%lld = %.4f with all nprobe = %d "
                                     "lists, below the target %.4f: raise nprobe",
                                     (long long)k, r, p->nprobe, target);
            goto done;
        }
        /* bracket: recall(lo) < target <= recall(hi); KTH scores are in spreads, EPS's a distance ratio */
        double hi = 1, lo = p->rule == FGMM_PROBE_EPS ? 0 : -1;
        for (;;) {
            t.threshold = hi;
            if ((rc = cal_recall(&c, &t, &r))) goto done;
            if (r >= target) break;
            if (hi > 1e6) {
                hi = INFINITY;
                break;
            } /* only +inf (all nprobe lists) reaches it */
            hi *= 2;
        }
        if (hi > 1) lo = hi / 2;
        for (int lo_ok = hi <= 1 && isfinite(hi); lo_ok;) { /* lower lo until it misses the target */
            t.threshold = lo;
            if ((rc = cal_recall(&c, &t, &r))) goto done;
            if (r < target) break;
            hi = lo;
            if (lo == 0 || lo < -1e6) { /* eps = 0, or KTH's first min_probe lists alone, suffice */
                hi = lo == 0 ? 0 : -INFINITY;
                lo_ok = 0;
            } else {
                lo *= 2;
            }
        }
        for (int it = 0; it < CAL_ITERS && isfinite(hi) && hi > lo; it++) {
            t.threshold = lo + (hi - lo) / 2;
            if ((rc = cal_recall(&c, &t, &r))) goto done;
            if (r >= target) hi = t.threshold;
            else lo = t.threshold;
        }
        t.threshold = hi;
    }
    if ((rc = cal_recall(&c, &t, &r))) goto done;
    *p = t;
    if (recall) *recall = r;
done:
    free(c.D), free(c.I), free(gt);
    return rc;
}
