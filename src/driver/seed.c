/* SPDX-License-Identifier: MIT */
/* seed.c: the seeding sample (drawn alike on every rank, widened where it holds fewer than k
 * distinct rows), k-means++ on it (on the engine where it has its own), and the re-seeding of empty
 * components at the sample's worst-fit rows. */
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

/* splitmix64: small, seedable, good enough for sampling. */
static uint64_t rng_next(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t* s) { return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static int cmp_idx(const void* a, const void* b) {
    fgmm_idx_t x = *(const fgmm_idx_t*)a, y = *(const fgmm_idx_t*)b;
    return (x > y) - (x < y);
}

/* First row of each rank, n_all at [size] ({0, n} in one process). */
static const fgmm_idx_t* rank_rows(const trainer* t, fgmm_idx_t one[2]) {
    if (t->comm) return t->comm->row0;
    one[0] = 0, one[1] = t->n_all;
    return one;
}

/* The seeding sample: sorted ids of the whole data (every rank draws the same), each rank reads
 * those among its own rows, and all ranks get every sampled row. */
int fgmm_tr_draw_sample(trainer* t) {
    fgmm_idx_t n = t->n_all, want = t->p->max_init_points ? t->p->max_init_points : (fgmm_idx_t)64 * t->k;
    if (want < t->k) want = t->k;
    if (want > n) want = n;
    const int np = t->comm ? t->comm->size : 1, me = t->comm ? t->comm->rank : 0;
    fgmm_idx_t* ids = malloc((size_t)want * sizeof *ids);
    fgmm_idx_t* part = malloc(((size_t)np + 1) * sizeof *part); /* sample rows of each rank */
    if (!ids || !part) {
        free(ids), free(part);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    fgmm_idx_t ns;
    if (want == n) {
        for (fgmm_idx_t i = 0; i < n; i++) ids[i] = i;
        ns = n;
    } else { /* with replacement, then de-duplicated: a few fewer than asked at most */
        for (fgmm_idx_t i = 0; i < want; i++) ids[i] = (fgmm_idx_t)(rng_next(&t->rng) % (uint64_t)n);
        qsort(ids, (size_t)want, sizeof *ids, cmp_idx);
        ns = 0;
        for (fgmm_idx_t i = 0; i < want; i++)
            if (ns == 0 || ids[i] != ids[ns - 1]) ids[ns++] = ids[i];
    }
    fgmm_idx_t one[2];
    const fgmm_idx_t* row0 = rank_rows(t, one);
    fgmm_idx_t i = 0;
    for (int r = 0; r <= np; r++) {
        while (i < ns && (r == np || ids[i] < row0[r])) i++;
        part[r] = i;
    }
    t->sample = malloc((size_t)ns * t->d * sizeof(float));
    t->tmp_ll = malloc((size_t)ns * sizeof(float));
    int rc = FGMM_OK;
    if (!t->sample || !t->tmp_ll) {
        rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory for %lld sampled rows", (long long)ns);
    } else {
#pragma omp parallel for schedule(static)
        for (fgmm_idx_t j = part[me]; j < part[me + 1]; j++) /* scattered rows: in parallel */
            fgmm_data_row(&t->x, ids[j] - row0[me], t->sample + (size_t)j * t->d);
        t->ns = ns;
        rc = fgmm_tr_gather_rows(t, t->sample, part, (size_t)t->d * sizeof(float), FGMM_OK);
    }
    free(ids), free(part);
    return rc;
}

static int too_few_points(int k, int found) {
    return fgmm_fail(FGMM_ERR_DATA, "data has fewer than k = %d distinct points (found %d)", k, found);
}

/* FNV-1a over a row's floats, -0 taken as +0 (k-means++ sees them as one point). */
static uint64_t row_hash(const float* r, int d) {
    uint64_t h = 1469598103934665603ull;
    for (int j = 0; j < d; j++) {
        float v = r[j] + 0.0f;
        uint32_t b;
        memcpy(&b, &v, sizeof b);
        for (int s = 0; s < 32; s += 8) h = (h ^ ((b >> s) & 0xff)) * 1099511628211ull;
    }
    return h;
}

/* The sample held fewer than k distinct rows, which says nothing of the whole data (many copies of
 * a few points can hide the rest): adds up to k rows of src that differ from every sampled row,
 * found through an open-addressing set of row hashes with exact comparison. */
static int widen_from(trainer* t, const fgmm_data* src) {
    int d = t->d;
    size_t cap = 1;
    while (cap < 2 * ((size_t)t->ns + t->k)) cap <<= 1;
    fgmm_idx_t* slot = malloc(cap * sizeof *slot); /* sample row, or -1 */
    float* grown = realloc(t->sample, ((size_t)t->ns + t->k) * d * sizeof(float));
    float* row = malloc((size_t)d * sizeof(float));
    if (grown) t->sample = grown;
    if (!slot || !grown || !row) {
        free(slot), free(row);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    for (size_t i = 0; i < cap; i++) slot[i] = -1;
    fgmm_idx_t ns = t->ns, added = 0;
    for (fgmm_idx_t i = 0; i < t->ns + src->n && added < t->k; i++) {
        const float* r = t->sample + (size_t)i * d; /* first the sample, then src */
        if (i >= t->ns) fgmm_data_row(src, i - t->ns, row), r = row;
        size_t h = (size_t)row_hash(r, d) & (cap - 1);
        int dup = 0;
        for (; slot[h] >= 0 && !dup; h = (h + 1) & (cap - 1)) {
            const float* o = t->sample + (size_t)slot[h] * d;
            dup = 1;
            for (int j = 0; j < d && dup; j++) dup = o[j] == r[j];
        }
        if (dup) continue;
        if (i >= t->ns) {
            memcpy(t->sample + (size_t)ns * d, r, (size_t)d * sizeof(float));
            slot[h] = ns++;
            added++;
        } else {
            slot[h] = i;
        }
    }
    free(slot), free(row);
    float* ll = realloc(t->tmp_ll, (size_t)ns * sizeof(float));
    if (!ll) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    t->tmp_ll = ll;
    t->ns = ns;
    return FGMM_OK;
}

/* widen_from over the whole data. Several ranks: each finds its own first k new rows (the whole
 * data's first k new rows are among them), all ranks get every rank's, and widen over those in rank
 * order, which picks what one process would. */
int fgmm_tr_widen_sample(trainer* t) {
    if (!t->comm) return widen_from(t, &t->x);
    const int np = t->comm->size, me = t->comm->rank, d = t->d;
    const fgmm_idx_t ns0 = t->ns;
    int rc = widen_from(t, &t->x);
    fgmm_idx_t* part = calloc((size_t)np + 1, sizeof *part); /* new rows per rank, then their prefix sums */
    if (!rc && !part) rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (!rc) part[me] = t->ns - ns0;
    if ((rc = fgmm_tr_gather_rows(t, part, NULL, sizeof *part, rc))) {
        free(part);
        return rc;
    }
    for (int r = np; r > 0; r--) part[r] = part[r - 1];
    part[0] = 0;
    for (int r = 0; r < np; r++) part[r + 1] += part[r];
    float* cand = malloc(((size_t)part[np] + 1) * d * sizeof(float));
    if (!cand) rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    else memcpy(cand + (size_t)part[me] * d, t->sample + (size_t)ns0 * d, (size_t)(t->ns - ns0) * d * sizeof(float));
    rc = fgmm_tr_gather_rows(t, cand, part, (size_t)d * sizeof(float), rc);
    t->ns = ns0;
    fgmm_data all = {cand, part[np], d, FGMM_F32};
    if (!rc) rc = widen_from(t, &all);
    free(cand), free(part);
    return rc;
}

/* k-means++ on the engine where it has it: the same random draws and arithmetic as the host loop
 * below, so the same seeds (up to the order of one double sum per draw). */
static int kmeanspp_engine(trainer* t, float* cent) {
    int k = t->k, d = t->d, found = 0;
    fgmm_idx_t* picks = malloc((size_t)k * sizeof *picks);
    double* u = malloc((size_t)k * sizeof *u);
    if (!picks || !u) {
        free(picks);
        free(u);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    fgmm_idx_t first = (fgmm_idx_t)(rng_next(&t->rng) % (uint64_t)t->ns);
    for (int c = 0; c + 1 < k; c++) u[c] = rng_unit(&t->rng);
    int rc = t->eng->ops->seed_pp(t->eng, t->sample, t->ns, d, k, first, u, picks, &found);
    if (rc == FGMM_ERR_DATA && found) rc = too_few_points(k, found);
    for (int c = 0; c < k && !rc; c++)
        memcpy(cent + (size_t)c * d, t->sample + (size_t)picks[c] * d, (size_t)d * sizeof(float));
    free(picks);
    free(u);
    return rc;
}

/* k-means++ seeding on the sample (Arthur & Vassilvitskii 2007). */
int fgmm_tr_kmeanspp(trainer* t, float* cent) {
    if (t->eng->ops->seed_pp) return kmeanspp_engine(t, cent);
    int k = t->k, d = t->d;
    fgmm_idx_t ns = t->ns;
    double* d2 = malloc((size_t)ns * sizeof(double));
    if (!d2) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    fgmm_idx_t pick = (fgmm_idx_t)(rng_next(&t->rng) % (uint64_t)ns);
    for (int c = 0; c < k; c++) {
        float* cc = cent + (size_t)c * d;
        memcpy(cc, t->sample + (size_t)pick * d, (size_t)d * sizeof(float));
        double total = 0;
#pragma omp parallel for reduction(+ : total)
        for (fgmm_idx_t i = 0; i < ns; i++) {
            const float* xi = t->sample + (size_t)i * d;
            /* 8 independent float partial sums in a fixed order: vectorises (one serial double sum
             * made seeding 85% of a 1M x 1024 GPU training); seeding weights need no more */
            float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            double s = 0;
            int j = 0;
            for (; j + 8 <= d; j += 8)
                for (int u = 0; u < 8; u++) {
                    float df = xi[j + u] - cc[j + u];
                    part[u] += df * df;
                }
            for (; j < d; j++) {
                float df = xi[j] - cc[j];
                part[0] += df * df;
            }
            for (int u = 0; u < 8; u++) s += part[u];
            if (c == 0 || s < d2[i]) d2[i] = s;
            total += d2[i];
        }
        if (c + 1 == k) break;
        if (!(total > 0)) {
            free(d2);
            return too_few_points(k, c + 1);
        }
        double u = rng_unit(&t->rng) * total, acc = 0;
        pick = ns - 1;
        for (fgmm_idx_t i = 0; i < ns; i++) {
            acc += d2[i];
            if (acc > u && d2[i] > 0) {
                pick = i;
                break;
            }
        }
        while (d2[pick] <= 0) pick--; /* rounding at the end of the prefix sum */
    }
    free(d2);
    return FGMM_OK;
}

typedef struct ll_row {
    float ll;
    fgmm_idx_t row;
} ll_row;
static int cmp_ll_row(const void* a, const void* b) {
    const ll_row *x = a, *y = b;
    if (x->ll != y->ll) return (x->ll > y->ll) - (x->ll < y->ll);
    return (x->row > y->row) - (x->row < y->row);
}

/* Re-seeds components flagged empty[] at the worst-fit sample rows under m. */
int fgmm_tr_reseed_worst(trainer* t, const FgmmModel* m, const int* empty, float* means, int* nreseeded) {
    int k = t->k, d = t->d, ne = 0;
    for (int j = 0; j < k; j++) ne += empty[j];
    *nreseeded = ne;
    if (!ne) return FGMM_OK;
    fgmm_data sx = {t->sample, t->ns, d, FGMM_F32};
    int rc = t->eng->ops->assign(t->eng, &sx, m, 0, NULL, NULL, t->tmp_ll);
    if (rc) return rc;
    /* Worst fit first; ties by row, so the order is deterministic. */
    ll_row* order = malloc((size_t)t->ns * sizeof *order);
    if (!order) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    for (fgmm_idx_t i = 0; i < t->ns; i++) order[i] = (ll_row){t->tmp_ll[i], i};
    qsort(order, (size_t)t->ns, sizeof *order, cmp_ll_row);
    fgmm_idx_t next = 0;
    for (int j = 0; j < k; j++)
        if (empty[j]) {
            fgmm_idx_t row = order[next < t->ns ? next++ : 0].row;
            memcpy(means + (size_t)j * d, t->sample + (size_t)row * d, (size_t)d * sizeof(float));
        }
    free(order);
    return FGMM_OK;
}
