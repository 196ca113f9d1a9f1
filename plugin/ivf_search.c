/* SPDX-License-Identifier: MIT */
/* ivf_search.c: the search engine of fgmm_ivf_search for IVF-Flat indexes, and the de-duplication
 * and distance-computation count both engines share.
 *
 * List-major: a batch of queries is assigned to its nprobe lists (FAISS's quantizer: one BLAS GEMM
 * for 20 queries or more), the (query, probe rank) pairs are grouped by list, and each list is read
 * once for all the queries that probe it. A list scanned for m >= GEMM_MIN queries gets its dot
 * products from one sgemm per tile of entries (||x||^2 - 2 x.q + ||q||^2, the entries' norms taken
 * tile by tile: nothing is cached, so the index may change between searches); fewer queries get
 * direct ||x - q||^2. Each pair keeps its list's best min(k, list size) entries in a slot of its
 * own (one writer, no locks), sorted by (distance, id, position in the list). Then each query merges
 * its nprobe sorted slots, keeps the first copy of every id (a vector sits in up to 2 lists) until
 * k distinct ids are found, computes their distances exactly (||x - q||^2 in float, as FAISS's
 * scan does; the sgemm form only ranks the candidates) and sorts them by (distance, id). Where a
 * slot holding part of its list runs out first (an id added more than once to one list), that
 * query's lists are scanned again into larger slots.
 *
 * Work is split into tasks of (list, up to MT queries), the costliest first (OpenMP dynamic
 * schedule); sgemm runs inside the parallel region (OpenBLAS's OpenMP build then runs it on the
 * calling thread). Every slot's content, and so every result, is independent of the thread count.
 * Memory: a batch of b queries holds b x nprobe x min(k, largest list) candidates (12 bytes each),
 * b chosen so that this stays under the slot budget (at least one query per batch), plus per
 * thread MT x NT floats of dot products and a hash set of 2k ids.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/IndexIVF_c.h>

#include "faiss_bridge.h"
#include "ivf_dist.h"
#include "ivf_impl.h"

#define MT 128                         /* queries per task (rows of one sgemm) */
#define NT 512                         /* list entries per sgemm tile */
#define GEMM_MIN 4                     /* queries of one list from which sgemm beats direct distances */
#define MAX_BATCH 16384                /* queries per batch at most */
#define SLOT_BYTES ((size_t)128 << 20) /* default budget of a batch's candidates */

/* ---- de-duplication: a hash set of the ids already output --------------------------------- */

/* Open addressing over positions in the output (pos + 1; 0 = empty), so any id value is a key. */
typedef FgmmIvfDedup idset;

static int idset_init(idset* s, idx_t n) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n) cap <<= 1;
    s->tab = calloc(cap, sizeof(idx_t));
    s->mask = cap - 1;
    return s->tab ? FGMM_OK : FGMM_ERR_NOMEM;
}

static uint64_t idset_hash(idx_t id) { return ((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 17; }

/* 1 (and records pos) where id is not among out[] yet; 0 where it is. */
static int idset_add(idset* s, const idx_t* out, idx_t id, idx_t pos) {
    for (uint64_t h = idset_hash(id) & s->mask;; h = (h + 1) & s->mask) {
        if (!s->tab[h]) {
            s->tab[h] = pos + 1;
            return 1;
        }
        if (out[s->tab[h] - 1] == id) return 0;
    }
}

/* Empties the set of out[0..n), the ids it holds (O(n), not O(capacity)). */
static void idset_clear(idset* s, const idx_t* out, idx_t n) {
    for (idx_t i = 0; i < n; i++)
        for (uint64_t h = idset_hash(out[i]) & s->mask; s->tab[h]; h = (h + 1) & s->mask) s->tab[h] = 0;
}

int fgmm_ivf_dedup_init(FgmmIvfDedup* s, idx_t n) {
    return idset_init(s, n) ? fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory") : FGMM_OK;
}

void fgmm_ivf_dedup_free(FgmmIvfDedup* s) { free(s->tab); }

idx_t fgmm_ivf_dedup_sorted(FgmmIvfDedup* s, idx_t n, const float* dist, const idx_t* ids, idx_t k, float* dout,
                            idx_t* lout) {
    idx_t got = 0;
    for (idx_t i = 0; i < n && got < k && ids[i] >= 0; i++)
        if (idset_add(s, lout, ids[i], got)) lout[got] = ids[i], dout[got++] = dist[i];
    idset_clear(s, lout, got);
    for (idx_t i = got; i < k; i++) lout[i] = -1, dout[i] = INFINITY;
    return got;
}

void fgmm_ivf_dco(int nlist, const int64_t* sizes, const idx_t* assign, idx_t b, int nprobe, int64_t* dco) {
    for (idx_t i = 0; i < b; i++) {
        int64_t c = nlist;
        for (int r = 0; r < nprobe; r++)
            if (assign[(size_t)i * nprobe + r] >= 0) c += sizes[assign[(size_t)i * nprobe + r]];
        dco[i] = c;
    }
}

/* ---- distances and per-slot heaps ---------------------------------------------------------- */

HOT_CLONES static float l2sq(const float* restrict x, const float* restrict y, int d) { return ivf_l2sq(x, y, d); }

float fgmm_ivf_l2sq(const float* x, const float* y, int d) { return l2sq(x, y, d); }

HOT_CLONES static void sq_norms(const float* restrict x, idx_t n, int d, float* restrict out) {
    for (idx_t i = 0; i < n; i++) {
        const float* r = x + (size_t)i * d;
        float acc[16] = {0};
        int j = 0;
        for (; j + 16 <= d; j += 16)
            for (int t = 0; t < 16; t++) acc[t] += r[j + t] * r[j + t];
        for (int t = 0; j < d; j++, t++) acc[t] += r[j] * r[j];
        float s = 0;
        for (int t = 0; t < 16; t++) s += acc[t];
        out[i] = s;
    }
}

/* A slot: the best entries of one list for one query, a max-heap on (distance, id, offset) while the
 * list is scanned, sorted ascending after; lid is the list's ids. */
typedef struct slot {
    float* d;
    idx_t* off;
    idx_t n, cap;
} slot;

static int worse(const idx_t* lid, float da, idx_t oa, float db, idx_t ob) {
    return da > db || (da == db && (lid[oa] > lid[ob] || (lid[oa] == lid[ob] && oa > ob)));
}

static void sift_down(const idx_t* lid, float* d, idx_t* o, idx_t i, idx_t n) {
    for (;;) {
        idx_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && worse(lid, d[c + 1], o[c + 1], d[c], o[c])) c++;
        if (!worse(lid, d[c], o[c], d[i], o[i])) return;
        float td = d[i];
        d[i] = d[c];
        d[c] = td;
        idx_t to = o[i];
        o[i] = o[c];
        o[c] = to;
        i = c;
    }
}

static void slot_push(slot* s, const idx_t* lid, float v, idx_t off) {
    if (s->n < s->cap) { /* sift up */
        idx_t i = s->n++;
        while (i > 0) {
            idx_t p = (i - 1) / 2;
            if (!worse(lid, v, off, s->d[p], s->off[p])) break;
            s->d[i] = s->d[p], s->off[i] = s->off[p];
            i = p;
        }
        s->d[i] = v, s->off[i] = off;
    } else {
        s->d[0] = v, s->off[0] = off;
        sift_down(lid, s->d, s->off, 0, s->n);
    }
}

/* The bar an entry must reach (NaN distances never do). */
static float slot_bar(const slot* s) { return s->n < s->cap ? INFINITY : s->cap ? s->d[0] : -INFINITY; }

/* Whether entry off at distance v <= slot_bar(s) enters: entries come in increasing offset, so one
 * at the bar enters by a smaller id only. */
static int slot_takes(const slot* s, const idx_t* lid, float v, idx_t off) {
    return s->n < s->cap ? v < INFINITY : s->cap && (v < s->d[0] || lid[off] < lid[s->off[0]]);
}

static void slot_sort(slot* s, const idx_t* lid) {
    for (idx_t e = s->n - 1; e > 0; e--) {
        float td = s->d[0];
        s->d[0] = s->d[e];
        s->d[e] = td;
        idx_t to = s->off[0];
        s->off[0] = s->off[e];
        s->off[e] = to;
        sift_down(lid, s->d, s->off, 0, e);
    }
}

/* ---- the list-major scan ------------------------------------------------------------------- */

typedef struct task {
    int list;
    idx_t p0, p1; /* its pairs: pairs[p0..p1) */
    double cost;
} task;

static int cmp_task(const void* a, const void* b) {
    const task *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? 1 : -1;
    return x->list != y->list ? (x->list > y->list) - (x->list < y->list) : (x->p0 > y->p0) - (x->p0 < y->p0);
}

typedef struct flat {
    int d, nlist, nprobe;
    const float** codes;
    const idx_t** ids;
    const int64_t* sizes;
} flat;

typedef struct scratch {
    float *qb, *c, *xn;
} scratch;

/* One task: list t->list for the pairs (query i, rank r) = pairs[p0..p1) as i * nprobe + r. */
static void scan_task(const flat* f, const task* t, const idx_t* pairs, const float* q, const float* qn, slot* slots,
                      scratch* w) {
    const int d = f->d;
    const idx_t n = f->sizes[t->list], m = t->p1 - t->p0;
    const float* x = f->codes[t->list];
    const idx_t* lid = f->ids[t->list];
    const idx_t* pr = pairs + t->p0;
    if (m < GEMM_MIN) {
        for (idx_t j = 0; j < n; j++)
            for (idx_t a = 0; a < m; a++) {
                slot* s = &slots[pr[a]];
                float v = l2sq(x + (size_t)j * d, q + (size_t)(pr[a] / f->nprobe) * d, d);
                if (v <= slot_bar(s) && slot_takes(s, lid, v, j)) slot_push(s, lid, v, j);
            }
    } else {
        for (idx_t a = 0; a < m; a++)
            memcpy(w->qb + (size_t)a * d, q + (size_t)(pr[a] / f->nprobe) * d, (size_t)d * sizeof(float));
        for (idx_t j0 = 0; j0 < n; j0 += NT) {
            int nt = (int)(n - j0 < NT ? n - j0 : NT);
            const float* xt = x + (size_t)j0 * d;
            sq_norms(xt, nt, d, w->xn);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, nt, d, -2.0f, w->qb, d, xt, d, 0.0f, w->c, nt);
            for (idx_t a = 0; a < m; a++) {
                slot* s = &slots[pr[a]];
                const float* row = w->c + (size_t)a * nt;
                float qa = qn[pr[a] / f->nprobe], bar = slot_bar(s);
                for (int j = 0; j < nt; j++) {
                    float v = row[j] + w->xn[j] + qa;
                    if (v <= bar && slot_takes(s, lid, v, j0 + j)) {
                        slot_push(s, lid, v, j0 + j);
                        bar = slot_bar(s);
                    }
                }
            }
        }
    }
    for (idx_t a = 0; a < m; a++) slot_sort(&slots[pr[a]], lid);
}

/* Query i's merge: its nprobe sorted slots, first copy of each id, k at most, exact distances, sorted
 * by (distance, id); the rest of the row padded with -1 / +inf. */
typedef struct head {
    float d;
    idx_t id;
    int r;
} head;

static int head_less(const head* a, const head* b) {
    return a->d < b->d || (a->d == b->d && (a->id < b->id || (a->id == b->id && a->r < b->r)));
}

static void head_down(head* h, int i, int n) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && head_less(&h[c + 1], &h[c])) c++;
        if (!head_less(&h[c], &h[i])) return;
        head t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

typedef struct merge_buf {
    head* heap; /* nprobe: the next entry of each slot */
    idx_t* pos; /* nprobe: that entry's index in its slot */
    idx_t* wl;  /* 2k: each result's list in [0, k), its offset in [k, 2k); then (distance, id) pairs to sort */
    idset set;
} merge_buf;

typedef FgmmIvfRes res;

int fgmm_ivf_cmp_res(const void* a, const void* b) {
    const res *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Returns 1, the row unfinished, where a slot that holds part of its list ran out before k ids were
 * found: its list may hold more of the nearest ids (an id repeated within a list, beyond the spill's
 * copies, pushes them out of the slot). 0 once the row is done. */
static int merge_query(const flat* f, const idx_t* assign, const slot* row, const float* qi, idx_t k, merge_buf* b,
                       float* dout, idx_t* lout) {
    int nh = 0;
    for (int r = 0; r < f->nprobe; r++) {
        b->pos[r] = 0;
        if (assign[r] < 0 || row[r].n == 0) continue;
        head h = {row[r].d[0], f->ids[assign[r]][row[r].off[0]], r};
        b->heap[nh++] = h;
    }
    for (int i = nh / 2 - 1; i >= 0; i--) head_down(b->heap, i, nh);
    idx_t got = 0;
    while (nh > 0 && got < k) {
        head h = b->heap[0];
        const slot* s = &row[h.r];
        idx_t off = s->off[b->pos[h.r]];
        if (idset_add(&b->set, lout, h.id, got)) {
            lout[got] = h.id;
            b->wl[got] = assign[h.r];
            b->wl[k + got] = off;
            got++;
        }
        idx_t p = ++b->pos[h.r];
        if (p < s->n) {
            b->heap[0].d = s->d[p];
            b->heap[0].id = f->ids[assign[h.r]][s->off[p]];
        } else {
            if (s->n < f->sizes[assign[h.r]] && got < k) {
                idset_clear(&b->set, lout, got);
                return 1;
            }
            b->heap[0] = b->heap[--nh];
        }
        head_down(b->heap, 0, nh);
    }
    idset_clear(&b->set, lout, got);
    for (idx_t i = 0; i < got; i++) dout[i] = l2sq(f->codes[b->wl[i]] + (size_t)b->wl[k + i] * f->d, qi, f->d);
    /* sort (distance, id) pairs: exact distances may reorder near-ties of the sgemm form */
    int sorted = 1;
    for (idx_t i = 1; i < got && sorted; i++)
        sorted = dout[i - 1] < dout[i] || (dout[i - 1] == dout[i] && lout[i - 1] < lout[i]);
    if (!sorted) {
        res* t = (res*)b->wl; /* the lists and offsets are used: 2k idx_t hold k pairs */
        for (idx_t i = 0; i < got; i++) t[i].d = dout[i], t[i].id = lout[i];
        qsort(t, (size_t)got, sizeof *t, fgmm_ivf_cmp_res);
        for (idx_t i = 0; i < got; i++) dout[i] = t[i].d, lout[i] = t[i].id;
    }
    for (idx_t i = got; i < k; i++) lout[i] = -1, dout[i] = INFINITY;
    return 0;
}

/* A row merge_query left unfinished: its lists scanned again for the query alone into slots of
 * twice the capacity, until no partial slot runs out (at worst each slot holds its whole list).
 * Nonzero where memory runs out. */
static int redo_query(const flat* f, const idx_t* assign, const float* qi, idx_t cap, idx_t k, merge_buf* b,
                      float* dout, idx_t* lout) {
    slot* row = malloc((size_t)f->nprobe * sizeof(slot));
    if (!row) return 1;
    for (int more = 1; more;) {
        cap = cap > ((idx_t)1 << 61) ? cap : 2 * cap;
        size_t tot = 0;
        for (int r = 0; r < f->nprobe; r++)
            if (assign[r] >= 0) tot += (size_t)(cap < f->sizes[assign[r]] ? cap : f->sizes[assign[r]]);
        float* sd = malloc((tot + 1) * sizeof(float));
        idx_t* so = malloc((tot + 1) * sizeof(idx_t));
        if (!sd || !so) {
            free(sd), free(so), free(row);
            return 1;
        }
        size_t used = 0;
        for (int r = 0; r < f->nprobe; r++) {
            idx_t n = assign[r] >= 0 ? f->sizes[assign[r]] : 0;
            slot* s = &row[r];
            s->d = sd + used, s->off = so + used, s->n = 0, s->cap = cap < n ? cap : n;
            used += (size_t)s->cap;
            /* one pair (this query, rank r): pair r / nprobe = row 0 of qi, slots[r] = row[r]; one query
             * takes scan_task's direct path, which needs no norms or scratch */
            idx_t pair = r;
            task t = {(int)assign[r], 0, 1, 0};
            if (n) scan_task(f, &t, &pair, qi, NULL, row, NULL);
        }
        more = merge_query(f, assign, row, qi, k, b, dout, lout);
        free(sd), free(so);
    }
    free(row);
    return 0;
}

int fgmm_ivf_search_flat(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                         idx_t* labels, int64_t* dco, size_t slot_bytes, const idx_t* pre) {
    const int d = h->d, nlist = h->nlist;
    flat f = {d, nlist, nprobe, NULL, NULL, NULL};
    const float** codes = malloc((size_t)nlist * sizeof *codes);
    const idx_t** ids = malloc((size_t)nlist * sizeof *ids);
    int64_t* sizes = malloc((size_t)nlist * sizeof *sizes);
    if (!codes || !ids || !sizes) {
        free(codes), free(ids), free(sizes);
        return fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory");
    }
    if (!fgmm_faiss_flat_lists(h->index, codes, ids, sizes)) {
        free(codes), free(ids), free(sizes);
        return 1;
    }
    f.codes = codes, f.ids = ids, f.sizes = sizes;
    idx_t maxn = 0, tot = 0;
    for (int l = 0; l < nlist; l++) maxn = sizes[l] > maxn ? sizes[l] : maxn, tot += sizes[l];
    idx_t kk = k < maxn ? k : maxn; /* a slot's capacity at most: min(k, its list's size) */
    /* candidates per query: min(k, size) over its distinct lists <= min(nprobe x kk, all entries) */
    idx_t per_q = (double)kk * nprobe < (double)tot ? kk * nprobe : tot;
    idx_t kout = k < per_q ? k : per_q; /* results a query can have */
    if (!slot_bytes) slot_bytes = SLOT_BYTES;
    size_t q_bytes = (size_t)per_q * (sizeof(float) + sizeof(idx_t)) +
                     (size_t)nprobe * (sizeof(slot) + 2 * sizeof(idx_t) + sizeof(float));
    idx_t bmax = (idx_t)(slot_bytes / q_bytes);
    bmax = bmax < 1 ? 1 : bmax > MAX_BATCH ? MAX_BATCH : bmax;
    if (bmax > nq) bmax = nq;
    size_t np = (size_t)bmax * nprobe, ncand = (size_t)bmax * per_q + 1;
    float* sd = malloc(ncand * sizeof(float));
    idx_t* so = malloc(ncand * sizeof(idx_t));
    slot* slots = malloc(np * sizeof(slot));
    idx_t* assign = malloc(np * sizeof(idx_t));
    float* cd = malloc(np * sizeof(float));
    idx_t* pairs = malloc(np * sizeof(idx_t));
    idx_t* start = malloc(((size_t)nlist + 1) * sizeof(idx_t));
    float* qn = malloc((size_t)bmax * sizeof(float));
    size_t ntask_max = np + (size_t)nlist;
    task* tasks = malloc(ntask_max * sizeof(task));
    int rc = FGMM_OK;
    if (!sd || !so || !slots || !assign || !cd || !pairs || !start || !qn || !tasks) {
        rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory for a batch of %lld queries",
                                 (long long)bmax);
        goto done;
    }
    for (idx_t i0 = 0; i0 < nq; i0 += bmax) {
        idx_t b = nq - i0 < bmax ? nq - i0 : bmax;
        const float* qb = q + (size_t)i0 * d;
        if (pre) {
            memcpy(assign, pre + (size_t)i0 * nprobe, (size_t)b * nprobe * sizeof(idx_t));
        } else if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, qb, nprobe, cd, assign)) {
            rc = fgmm_ivf_faiss_failed("fgmm_ivf_search: quantizer");
            goto done;
        }
        /* pairs grouped by list (counting sort, pair order kept within a list) */
        memset(start, 0, ((size_t)nlist + 1) * sizeof(idx_t));
        for (size_t p = 0; p < (size_t)b * nprobe; p++)
            if (assign[p] >= 0 && assign[p] < nlist) start[assign[p] + 1]++;
        for (int l = 0; l < nlist; l++) start[l + 1] += start[l];
        int ntask = 0;
        for (int l = 0; l < nlist; l++)
            for (idx_t p0 = start[l]; p0 < start[l + 1]; p0 += MT) {
                task t = {l, p0, start[l + 1] - p0 < MT ? start[l + 1] : p0 + MT, 0};
                t.cost = (double)sizes[l] * (double)(t.p1 - t.p0 + GEMM_MIN);
                tasks[ntask++] = t;
            }
        size_t used = 0;
        for (size_t p = 0; p < (size_t)b * nprobe; p++) {
            int ok = assign[p] >= 0 && assign[p] < nlist;
            idx_t cap = ok ? (kk < sizes[assign[p]] ? kk : sizes[assign[p]]) : 0;
            if ((size_t)cap > ncand - used) cap = (idx_t)(ncand - used); /* lists repeated in a row: never */
            slots[p].d = sd + used, slots[p].off = so + used, slots[p].n = 0, slots[p].cap = cap;
            used += (size_t)cap;
            if (ok) pairs[start[assign[p]]++] = (idx_t)p;
            else assign[p] = -1;
        }
        for (int l = nlist; l > 0; l--) start[l] = start[l - 1]; /* the fill moved each start to its end */
        start[0] = 0;
        qsort(tasks, (size_t)ntask, sizeof *tasks, cmp_task);
        sq_norms(qb, b, d, qn);
        int fail = 0;
#pragma omp parallel
        {
            scratch w = {malloc((size_t)MT * d * sizeof(float)), malloc((size_t)MT * NT * sizeof(float)),
                         malloc((size_t)NT * sizeof(float))};
            merge_buf mb = {malloc((size_t)nprobe * sizeof(head)),
                            malloc((size_t)nprobe * sizeof(idx_t)),
                            malloc((size_t)(2 * kout + 1) * sizeof(idx_t)),
                            {NULL, 0}};
            int ok = w.qb && w.c && w.xn && mb.heap && mb.pos && mb.wl && !idset_init(&mb.set, kout);
            if (!ok) {
#pragma omp atomic write
                fail = 1;
            }
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < ntask; t++)
                if (ok) scan_task(&f, &tasks[t], pairs, qb, qn, slots, &w);
#pragma omp for schedule(static)
            for (idx_t i = 0; i < b; i++) {
                if (!ok) continue;
                float* dout = distances + (size_t)(i0 + i) * k;
                idx_t* lout = labels + (size_t)(i0 + i) * k;
                const idx_t* as = assign + (size_t)i * nprobe;
                if (merge_query(&f, as, slots + (size_t)i * nprobe, qb + (size_t)i * d, kout, &mb, dout, lout) &&
                    redo_query(&f, as, qb + (size_t)i * d, kk, kout, &mb, dout, lout)) {
#pragma omp atomic write
                    fail = 1;
                }
                for (idx_t t = kout; t < k; t++) lout[t] = -1, dout[t] = INFINITY;
            }
            free(w.qb), free(w.c), free(w.xn);
            free(mb.heap), free(mb.pos), free(mb.wl), free(mb.set.tab);
        }
        if (fail) {
            rc = fgmm_set_last_error(FGMM_ERR_NOMEM, "fgmm_ivf_search: out of host memory for a thread's buffers");
            goto done;
        }
        if (dco) fgmm_ivf_dco(nlist, sizes, assign, b, nprobe, dco + i0);
    }
done:
    free(sd), free(so), free(slots), free(assign), free(cd), free(pairs), free(start), free(qn), free(tasks);
    free(codes), free(ids), free(sizes);
    return rc;
}
