/* SPDX-License-Identifier: MIT */
/* ivf_search_one.c: the per-query engine of fgmm_ivf_search for IVF-Flat indexes, and the choice
 * between it and the list-major engine (ivf_search.c).
 *
 * A query keeps its k best distinct ids in one max-heap on (distance, id) across its nprobe lists.
 * Every entry's distance is exact (ivf_l2sq, the list-major engine's direct form) and is compared
 * with the heap's top; only an entry that reaches it goes further: if its id is in the heap already
 * (a spilled vector sits in two lists; an id may be added many times) that copy keeps the smaller
 * distance, else the entry replaces the top. The result is the k smallest (distance of an id's
 * nearest copy, id), sorted: the list-major engine's result, bit for bit, wherever that engine's
 * distances are exact (always for a list scanned for fewer than 4 queries of its batch).
 *
 * A batch with fewer queries than threads splits each query's lists into chunks of about equal
 * entries (ONE_MIN_CHUNK at least: large queries only), one heap per chunk, merged by (distance,
 * id) after; otherwise each query is one task. Per call: one quantizer search, the probed lists'
 * pointers only (no pass over all nlist lists), two allocations, and no OpenMP region where one
 * task is all the work.
 *
 * Engine AUTO (force 0) hands a batch to the list-major engine where that engine reads a list once
 * for enough queries to be faster: where, after the quantizer, a distance computation of the batch
 * is on average in a list that ONE_SHARED or more of its queries probe (measured on sift100K: the
 * list-major engine 0.92x at 7, 1.09x at 9; docs/results/single.md); also where k > ONE_MAX_K
 * (the heap's id check is a linear search: O(k) per entering entry).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_bridge.h"
#include "ivf_dist.h"
#include "ivf_impl.h"

#define ONE_MAX_K 64    /* AUTO: larger k goes to the list-major engine */
#define ONE_PAIRS 65536 /* (query, list) pairs per batch at most */
/* Entries per chunk at least where a query's lists are split over threads (about 1 ms of scan at d
 * 128): an OpenMP region waits for its slowest thread, and on a loaded machine a descheduled one
 * costs milliseconds (docs/results/single.md: at 4096, one query per call on 2 threads fell to 116
 * QPS against 3410 on 1). FAISS never splits a query. */
#define ONE_MIN_CHUNK 65536
#define ONE_AHEAD 8192 /* bytes of a list prefetched ahead of the scan */
#define ONE_SHARED 8   /* AUTO: batches whose queries share lists more go to the list-major engine */

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define NOINLINE
#define PREFETCH(p) ((void)(p))
#endif

/* ---- one heap of the k best (distance, id), each id once ------------------------------------ */

typedef struct topk {
    float* d;
    idx_t* id;
    idx_t n, cap;
} topk;

static int tk_worse(float da, idx_t ia, float db, idx_t ib) { return da > db || (da == db && ia > ib); }

static void tk_down(topk* t, idx_t i, idx_t n) {
    for (;;) {
        idx_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && tk_worse(t->d[c + 1], t->id[c + 1], t->d[c], t->id[c])) c++;
        if (!tk_worse(t->d[c], t->id[c], t->d[i], t->id[i])) return;
        float td = t->d[i];
        t->d[i] = t->d[c];
        t->d[c] = td;
        idx_t ti = t->id[i];
        t->id[i] = t->id[c];
        t->id[c] = ti;
        i = c;
    }
}

/* What an entry's distance must not exceed to be offered (NaN never passes v <= bar). */
static float tk_bar(const topk* t) { return t->n < t->cap ? INFINITY : t->d[0]; }

/* Entry (v, id) with v <= tk_bar(t): it enters where it beats the top by (distance, id), or the heap
 * is not full and v is finite; a copy of an id already held keeps the smaller distance. Returns
 * the new bar. */
static NOINLINE float tk_offer(topk* t, float v, idx_t id) {
    if (t->n < t->cap) {
        if (!(v < INFINITY)) return INFINITY;
    } else if (!(v < t->d[0] || id < t->id[0])) {
        return t->d[0];
    }
    for (idx_t p = 0; p < t->n; p++)
        if (t->id[p] == id) {
            if (v < t->d[p]) t->d[p] = v, tk_down(t, p, t->n); /* smaller in a max-heap: down */
            return tk_bar(t);
        }
    if (t->n < t->cap) { /* sift up */
        idx_t i = t->n++;
        while (i > 0) {
            idx_t p = (i - 1) / 2;
            if (!tk_worse(v, id, t->d[p], t->id[p])) break;
            t->d[i] = t->d[p], t->id[i] = t->id[p];
            i = p;
        }
        t->d[i] = v, t->id[i] = id;
    } else {
        t->d[0] = v, t->id[0] = id;
        tk_down(t, 0, t->n);
    }
    return tk_bar(t);
}

/* Ascending by (distance, id), in place. */
static void tk_sort(topk* t) {
    for (idx_t e = t->n - 1; e > 0; e--) {
        float td = t->d[0];
        t->d[0] = t->d[e];
        t->d[e] = td;
        idx_t ti = t->id[0];
        t->id[0] = t->id[e];
        t->id[e] = ti;
        tk_down(t, 0, e);
    }
}

/* Distances of a list's n entries to q into the heap. The rows ONE_AHEAD bytes ahead are prefetched
 * (past the list's end: the next list's first rows, nx at most), which keeps more rows in flight
 * than the hardware prefetcher alone: 10-15% more QPS on sift100K (docs/results/single.md). */
HOT_CLONES static void scan_list(const float* restrict x, const idx_t* restrict ids, idx_t n, const float* restrict q,
                                 int d, topk* t, const float* next, idx_t nx) {
    float bar = tk_bar(t);
    const size_t row = (size_t)d * sizeof(float), end = (size_t)n * row, nend = (size_t)nx * row;
    for (idx_t j = 0; j < n; j++) {
        for (size_t c = (size_t)j * row + ONE_AHEAD, c1 = c + row; c < c1; c += 64) {
            if (c < end) PREFETCH((const char*)x + c);
            else if (c - end < nend) PREFETCH((const char*)next + (c - end));
        }
        float v = ivf_l2sq(x + (size_t)j * d, q, d);
        if (v <= bar) bar = tk_offer(t, v, ids[j]);
    }
}

/* ---- a batch ------------------------------------------------------------------------------- */

typedef struct unit {
    idx_t q;    /* query in the batch */
    int r0, r1; /* its ranks ord[q * nprobe + r0 .. r1) */
    int last;   /* 1 for a query's only chunk: the unit writes the output row */
    topk t;
} unit;

typedef struct batch {
    int d, nprobe;
    idx_t k;
    const float* q;      /* the batch's queries */
    const float** codes; /* per pair (query, rank): its list */
    const idx_t** ids;
    const int64_t* sizes;
    const int* ord; /* per query: its ranks, grouped by chunk */
    float* dist;    /* the batch's output rows */
    idx_t* lab;
} batch;

static void write_row(const topk* t, idx_t k, float* dout, idx_t* lout) {
    for (idx_t i = 0; i < t->n; i++) dout[i] = t->d[i], lout[i] = t->id[i];
    for (idx_t i = t->n; i < k; i++) dout[i] = INFINITY, lout[i] = -1;
}

static void run_unit(const batch* b, unit* u) {
    const size_t row = (size_t)u->q * b->nprobe;
    const float* qi = b->q + (size_t)u->q * b->d;
    if (u->t.cap > 0)
        for (int a = u->r0; a < u->r1; a++) {
            size_t p = row + b->ord[row + a], pn = a + 1 < u->r1 ? row + b->ord[row + a + 1] : p;
            scan_list(b->codes[p], b->ids[p], b->sizes[p], qi, b->d, &u->t, b->codes[pn], pn != p ? b->sizes[pn] : 0);
        }
    tk_sort(&u->t);
    if (u->last) write_row(&u->t, b->k, b->dist + (size_t)u->q * b->k, b->lab + (size_t)u->q * b->k);
}

typedef FgmmIvfRes res;

/* The batch's sharing: the mean, over its distance computations, of the number of its queries that
 * probe the same list. cnt: 2 x cap scratch, cap a power of 2 >= 2 np. */
static double sharing(const idx_t* assign, const int64_t* sizes, size_t np, idx_t* cnt, size_t cap) {
    idx_t* key = cnt + cap;
    for (size_t h = 0; h < cap; h++) key[h] = -1, cnt[h] = 0;
    double all = 0, shared = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t p = 0; p < np; p++) {
            if (assign[p] < 0) continue;
            size_t h = ((uint64_t)assign[p] * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
            while (key[h] >= 0 && key[h] != assign[p]) h = (h + 1) & (cap - 1);
            if (pass == 0) {
                key[h] = assign[p], cnt[h]++;
            } else {
                all += (double)sizes[p];
                shared += (double)sizes[p] * (double)cnt[h];
            }
        }
    return all > 0 ? shared / all : 0;
}

int fgmm_ivf_search_one(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                        idx_t* labels, int64_t* dco, int force) {
    if (!fgmm_faiss_flat_lists_of(h->index, 0, NULL, NULL, NULL, NULL)) return 1;
    if (!force && k > ONE_MAX_K) return fgmm_ivf_search_flat(h, nq, q, k, nprobe, distances, labels, dco, 0, NULL);
    const int d = h->d;
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    idx_t bmax = ONE_PAIRS / nprobe;
    bmax = bmax < 1 ? 1 : bmax > nq ? nq : bmax;
    size_t np = (size_t)bmax * nprobe, hcap = 16;
    while (hcap < 2 * np) hcap <<= 1;
    /* per pair: assign, centroid distance, codes, ids, size, rank order; units; per chunk a load and a
     * fill position; hash counts; a query's ranks */
    size_t bytes =
        np * (sizeof(idx_t) + sizeof(float) + sizeof(float*) + sizeof(idx_t*) + sizeof(int64_t) + sizeof(int)) +
        (np + (size_t)bmax) * sizeof(unit) + (size_t)nt * (sizeof(double) + sizeof(int)) + 2 * hcap * sizeof(idx_t) +
        (size_t)nprobe * sizeof(int);
    char* mem = malloc(bytes + 64);
    if (!mem) return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory");
    idx_t* assign = (idx_t*)mem;
    int64_t* sizes = (int64_t*)(assign + np);
    const float** codes = (const float**)(sizes + np);
    const idx_t** ids = (const idx_t**)(codes + np);
    unit* units = (unit*)(ids + np);
    double* load = (double*)(units + np + bmax);
    idx_t* cnt = (idx_t*)(load + nt);
    float* cd = (float*)(cnt + 2 * hcap);
    int* ord = (int*)(cd + np);
    int* fill = ord + np;
    int* tmp = fill + nt;
    float* hd = NULL; /* the units' heaps: grown as needed */
    idx_t* hi = NULL;
    size_t hsize = 0;
    res* mbuf = NULL; /* merge of a split query's chunks */
    size_t msize = 0;
    FgmmIvfDedup set = {NULL, 0};
    idx_t set_n = 0; /* ids the set is sized for */
    int rc = FGMM_OK;
    for (idx_t i0 = 0; i0 < nq && !rc; i0 += bmax) {
        idx_t bq = nq - i0 < bmax ? nq - i0 : bmax;
        size_t npb = (size_t)bq * nprobe;
        const float* qb = q + (size_t)i0 * d;
        if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), bq, qb, nprobe, cd, assign)) {
            rc = fgmm_ivf_faiss_failed("fgmm_ivf_search: quantizer");
            break;
        }
        for (size_t p = 0; p < npb; p++)
            if (assign[p] >= h->nlist) assign[p] = -1;
        fgmm_faiss_flat_lists_of(h->index, (int64_t)npb, assign, codes, ids, sizes);
        if (!force && bq > 1 && sharing(assign, sizes, npb, cnt, hcap) >= ONE_SHARED) {
            /* this batch and the rest to the list-major engine (the quantizer's answer where it is all) */
            rc = fgmm_ivf_search_flat(h, nq - i0, qb, k, nprobe, distances + (size_t)i0 * k, labels + (size_t)i0 * k,
                                      dco ? dco + i0 : NULL, 0, nq - i0 == bq ? assign : NULL);
            break;
        }
        /* units: each query's ranks in chunks of about equal entries (rank order kept in a chunk) */
        int nu = 0, split = 0;
        size_t heap_tot = 0;
        for (idx_t i = 0; i < bq; i++) {
            const size_t row = (size_t)i * nprobe;
            double tot = 0;
            for (int r = 0; r < nprobe; r++) tot += (double)sizes[row + r];
            if (dco) dco[i0 + i] = h->nlist + (int64_t)tot;
            int c = bq >= nt ? 1 : (int)((nt + bq - 1) / bq);
            if (c > nprobe) c = nprobe;
            if (c > tot / ONE_MIN_CHUNK) c = (int)(tot / ONE_MIN_CHUNK);
            if (c < 1) c = 1;
            int* chunk = ord + row; /* first the chunk of each rank, then the ranks by chunk */
            for (int a = 0; a < c; a++) load[a] = 0;
            for (int r = 0; r < nprobe; r++) {
                int best = 0;
                for (int a = 1; a < c; a++) best = load[a] < load[best] ? a : best;
                chunk[r] = best, load[best] += (double)sizes[row + r] + 1;
            }
            int first = nu;
            for (int a = 0; a < c; a++) {
                unit* u = &units[nu++];
                u->q = i, u->last = c == 1, u->t.n = 0;
                double e = 0;
                for (int r = 0; r < nprobe; r++) e += chunk[r] == a ? (double)sizes[row + r] : 0;
                u->t.cap = e < (double)k ? (idx_t)e : k;
                heap_tot += (size_t)u->t.cap;
            }
            /* ranks by chunk: chunk a's ranks at [r0, r1), in rank order */
            int pos = 0;
            for (int a = 0; a < c; a++) {
                units[first + a].r0 = pos;
                for (int r = 0; r < nprobe; r++) pos += chunk[r] == a;
                units[first + a].r1 = pos;
            }
            for (int a = 0; a < c; a++) fill[a] = units[first + a].r0;
            for (int r = 0; r < nprobe; r++) tmp[fill[chunk[r]]++] = r;
            memcpy(chunk, tmp, (size_t)nprobe * sizeof(int));
            split |= c > 1;
        }
        if (heap_tot > hsize) {
            free(hd), free(hi);
            hd = malloc((heap_tot + 1) * sizeof(float)), hi = malloc((heap_tot + 1) * sizeof(idx_t));
            hsize = heap_tot;
            if (!hd || !hi) {
                rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory for k = %lld",
                                         (long long)k);
                break;
            }
        }
        size_t used = 0;
        for (int u = 0; u < nu; u++)
            units[u].t.d = hd + used, units[u].t.id = hi + used, used += (size_t)units[u].t.cap;
        batch b = {d, nprobe, k, qb, codes, ids, sizes, ord, distances + (size_t)i0 * k, labels + (size_t)i0 * k};
        if (nu == 1 || nt == 1) {
            for (int u = 0; u < nu; u++) run_unit(&b, &units[u]);
        } else {
#pragma omp parallel for schedule(dynamic, 1)
            for (int u = 0; u < nu; u++) run_unit(&b, &units[u]);
        }
        if (!split) continue;
        /* split queries: their chunks' heaps by (distance, id), the first copy of each id */
        for (int u0 = 0; u0 < nu;) {
            int u1 = u0 + 1;
            while (u1 < nu && units[u1].q == units[u0].q) u1++;
            if (!units[u0].last) {
                size_t m = 0;
                for (int u = u0; u < u1; u++) m += (size_t)units[u].t.n;
                if (m > msize) { /* m pairs, then their distances and ids apart */
                    free(mbuf);
                    mbuf = malloc((m + 1) * (sizeof(res) + sizeof(float) + sizeof(idx_t)));
                    msize = mbuf ? m : 0;
                }
                idx_t want = k < (idx_t)m ? k : (idx_t)m;
                if (mbuf && want > set_n) {
                    fgmm_ivf_dedup_free(&set);
                    set_n = fgmm_ivf_dedup_init(&set, want) ? 0 : want;
                }
                if (!mbuf || want > set_n) {
                    rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory");
                    break;
                }
                m = 0;
                for (int u = u0; u < u1; u++)
                    for (idx_t e = 0; e < units[u].t.n; e++)
                        mbuf[m].d = units[u].t.d[e], mbuf[m++].id = units[u].t.id[e];
                qsort(mbuf, m, sizeof *mbuf, fgmm_ivf_cmp_res);
                idx_t* mi = (idx_t*)(mbuf + m);
                float* md = (float*)(mi + m);
                for (size_t e = 0; e < m; e++) md[e] = mbuf[e].d, mi[e] = mbuf[e].id;
                idx_t qi = i0 + units[u0].q;
                fgmm_ivf_dedup_sorted(&set, (idx_t)m, md, mi, k, distances + (size_t)qi * k, labels + (size_t)qi * k);
            }
            u0 = u1;
        }
    }
    free(mem), free(hd), free(hi), free(mbuf);
    fgmm_ivf_dedup_free(&set);
    return rc;
}
