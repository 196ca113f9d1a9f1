/* SPDX-License-Identifier: MIT */
/* train.c: the EM driver and the public entry points. Backend-neutral: the
 * heavy passes go through the engine; seeding, M-step and re-seeding are
 * O(k*d) or O(sample*k*d) host work, done in double. Where the engine has
 * its own EM iteration (GPU, fused fast path) the M-step runs there and the
 * model stays on the device between iterations, and where it has its own
 * k-means++ (GPU) seeding runs there with the same draws; re-seeding stays
 * here. */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Range of the data's mean per-dimension variance that fgmm_train accepts. */
#define FGMM_MIN_DATA_VAR 1e-24
#define FGMM_MAX_DATA_VAR 1e24

void fgmm_params_init(FgmmParams* p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->k = 1024;
    p->covariance = FGMM_COV_ISOTROPIC;
    p->niter = 30;
    p->kmeans_iter = 10;
    p->tol = 0.0;
    p->var_floor = 1e-4;
    p->min_count = 1.0;
    p->max_init_points = 0;
    p->seed = 1234;
    p->backend = FGMM_BACKEND_AUTO;
    p->precision = FGMM_PREC_FAST;
    p->gpu_device = 0;
}

static int check_params(const FgmmParams* p) {
    if (p->covariance != FGMM_COV_ISOTROPIC && p->covariance != FGMM_COV_DIAGONAL)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown covariance %d", (int)p->covariance);
    if (p->backend < FGMM_BACKEND_AUTO || p->backend > FGMM_BACKEND_GPU)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown backend %d", (int)p->backend);
    if (p->precision != FGMM_PREC_FAST && p->precision != FGMM_PREC_EXACT)
        return fgmm_fail(FGMM_ERR_ARG, "params: unknown precision %d", (int)p->precision);
    if (p->niter < 0 || p->kmeans_iter < 0)
        return fgmm_fail(FGMM_ERR_ARG, "params: niter = %d, kmeans_iter = %d; must be >= 0", p->niter, p->kmeans_iter);
    if (!(p->tol >= 0) || !(p->var_floor > 0) || !(p->min_count >= 0) || !isfinite(p->tol) || !isfinite(p->var_floor))
        return fgmm_fail(FGMM_ERR_ARG, "params: need tol >= 0, var_floor > 0, min_count >= 0");
    if (p->max_init_points < 0) return fgmm_fail(FGMM_ERR_ARG, "params: max_init_points < 0");
    if (p->n_gpus < 0 || p->n_gpus > 64) return fgmm_fail(FGMM_ERR_ARG, "params: n_gpus = %d out of range [0, 64]", p->n_gpus);
    return FGMM_OK;
}

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

typedef struct trainer {
    const FgmmParams* p;
    fgmm_data x;      /* this rank's rows */
    fgmm_comm* comm;  /* NULL: one process */
    fgmm_idx_t n_all; /* rows over all ranks */
    fgmm_engine* eng;
    int k, d;
    float* sample; /* ns x d rows, sorted sampled ids: seeding and re-seeding pool */
    fgmm_idx_t ns;
    double mean_var; /* data's mean per-dimension variance */
    double* col_mean; /* this rank's rows' column means (d), for the engine's set_scan */
    double* mark;    /* FGMM_TRACE: the time of the last traced step */
    float* tmp_ll;   /* ns */
    uint64_t rng;
} trainer;

/* fgmm_comm's collectives; in one process they return status and move nothing. Once the ranks
 * have agreed on a failure they all stop: none calls a collective again. */
static int comm_off(const trainer* t, int* status) {
    if (t->comm && t->comm->agreed && !*status) *status = FGMM_ERR_STATE;
    return !t->comm || t->comm->agreed;
}
static int comm_sum(trainer* t, double* v, size_t n, int status) {
    return comm_off(t, &status) ? status : t->comm->sum(t->comm, v, n, status);
}
static int comm_bcast(trainer* t, void* buf, size_t bytes, int status) {
    return comm_off(t, &status) ? status : t->comm->bcast(t->comm, buf, bytes, status);
}
/* Every rank's part, in rank order: rows [part[r], part[r + 1]) of `all` (rows of row_bytes; part
 * NULL: one row each), this rank's already in place. */
static int comm_gather_rows(trainer* t, void* all, const fgmm_idx_t* part, size_t row_bytes, int status) {
    if (comm_off(t, &status)) return status;
    const int np = t->comm->size, me = t->comm->rank;
    size_t* bytes = status ? NULL : malloc((size_t)np * sizeof *bytes);
    if (!bytes && !status) status = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (status) return t->comm->gather(t->comm, NULL, NULL, NULL, status);
    for (int r = 0; r < np; r++) bytes[r] = part ? (size_t)(part[r + 1] - part[r]) * row_bytes : row_bytes;
    int rc = t->comm->gather(t->comm, (char*)all + (size_t)(part ? part[me] : me) * row_bytes, all, bytes, status);
    free(bytes);
    return rc;
}
/* Sums a pass's statistics (obj included, in the spare slot) over the ranks; only obj where the engine
 * has summed the rest. */
static int comm_sum_stats(trainer* t, fgmm_stats* st, int status) {
    if (comm_off(t, &status)) return status;
    if (t->eng && t->eng->sums_ranks) return comm_sum(t, &st->obj, 1, status);
    const size_t len = fgmm_stats_len(st);
    st->nk[len] = st->obj;
    int rc = comm_sum(t, st->nk, len + 1, status);
    st->obj = st->nk[len];
    return rc;
}

/* Chan et al.: a block of nb rows with mean mb and squared deviations qb merged into (cnt, mean, m2). */
static void moments_merge(double* cnt, double* mean, double* m2, double nb, double mb, double qb) {
    if (nb == 0) return;
    const double tot = *cnt + nb, delta = mb - *mean;
    *mean += delta * nb / tot;
    *m2 += qb + delta * delta * *cnt * nb / tot;
    *cnt = tot;
}

/* Per-dimension mean and sum of squared deviations of the rows, in double: Welford per dimension
 * over a contiguous block of rows per thread (stable for data far from the origin), blocks merged
 * in order. One pass over data the size of the whole training set: it was single-threaded, with a
 * division per value. mom = [count, mean d, m2 d]. Returns -1 when out of memory. */
static int data_moments(const fgmm_data* x, double* mom) {
    const int d = x->d;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    if ((fgmm_idx_t)nt > x->n) nt = (int)x->n;
    double* st = calloc((size_t)nt * 2 * d, sizeof(double)); /* per block: mean[d], m2[d] */
    int bad = !st;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        int b = 0;
#ifdef _OPENMP
        b = omp_get_thread_num();
#endif
        float* row = malloc((size_t)d * sizeof(float));
        if (!row || !st) {
            bad = 1;
        } else {
            double *mean = st + (size_t)b * 2 * d, *m2 = mean + d;
            const fgmm_idx_t lo = x->n * b / nt, hi = x->n * (b + 1) / nt;
            for (fgmm_idx_t i = lo; i < hi; i++) {
                fgmm_data_row(x, i, row);
                const double inv = 1.0 / (double)(i - lo + 1);
                for (int t = 0; t < d; t++) {
                    double delta = row[t] - mean[t];
                    mean[t] += delta * inv;
                    m2[t] += delta * (row[t] - mean[t]);
                }
            }
        }
        free(row);
    }
    if (!bad)
        for (int t = 0; t < d; t++) {
            double cnt = 0, mean = 0, m2 = 0;
            for (int b = 0; b < nt; b++)
                moments_merge(&cnt, &mean, &m2, (double)(x->n * (b + 1) / nt - x->n * b / nt),
                              st[(size_t)b * 2 * d + t], st[(size_t)b * 2 * d + d + t]);
            mom[1 + t] = mean;
            mom[1 + d + t] = m2;
        }
    mom[0] = (double)x->n;
    free(st);
    return bad ? -1 : 0;
}

/* The mean per-dimension variance of the rows of all ranks (their moments merged in rank order), into
 * t->mean_var. status: this rank's outcome so far (its rows are not read unless it is 0). The same
 * pass checks the values: a double sum of float terms is finite unless a term is not (|x| <= 3.4e38,
 * so x^2 and n of them stay far below the double range); then fgmm_data_check finds and names it. */
static int data_mean_var(trainer* t, int status) {
    const int d = t->d, np = t->comm ? t->comm->size : 1, me = t->comm ? t->comm->rank : 0;
    const size_t len = 1 + 2 * (size_t)d;
    /* nothing sized by n or d before they are checked (status) */
    double* mom = status ? NULL : calloc((size_t)np * len, sizeof(double));
    t->col_mean = status ? NULL : malloc((size_t)d * sizeof(double));
    if (!status && (!mom || !t->col_mean || data_moments(&t->x, mom + (size_t)me * len)))
        status = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (!status) memcpy(t->col_mean, mom + (size_t)me * len + 1, (size_t)d * sizeof(double));
    for (size_t j = 0; !status && j < len; j++)
        if (!isfinite(mom[(size_t)me * len + j]) && !(status = fgmm_data_check(&t->x, "fgmm_train")))
            status = fgmm_fail(FGMM_ERR_DATA, "fgmm_train: the data's moments are not finite");
    int rc = comm_gather_rows(t, mom, NULL, len * sizeof(double), status);
    if (!rc) {
        double v = 0;
        for (int j = 0; j < d; j++) {
            double cnt = 0, mean = 0, m2 = 0;
            for (int r = 0; r < np; r++) {
                const double* m = mom + (size_t)r * len;
                moments_merge(&cnt, &mean, &m2, m[0], m[1 + j], m[1 + d + j]);
            }
            v += m2 / (double)t->n_all;
        }
        t->mean_var = v / d;
    }
    free(mom);
    return rc;
}

/* First row of each rank, n_all at [size] ({0, n} in one process). */
static const fgmm_idx_t* rank_rows(const trainer* t, fgmm_idx_t one[2]) {
    if (t->comm) return t->comm->row0;
    one[0] = 0, one[1] = t->n_all;
    return one;
}

/* The seeding sample: sorted ids of the whole data (every rank draws the same), each rank reads
 * those among its own rows, and all ranks get every sampled row. */
static int draw_sample(trainer* t) {
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
        rc = comm_gather_rows(t, t->sample, part, (size_t)t->d * sizeof(float), FGMM_OK);
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
static int widen_sample(trainer* t) {
    if (!t->comm) return widen_from(t, &t->x);
    const int np = t->comm->size, me = t->comm->rank, d = t->d;
    const fgmm_idx_t ns0 = t->ns;
    int rc = widen_from(t, &t->x);
    fgmm_idx_t* part = calloc((size_t)np + 1, sizeof *part); /* new rows per rank, then their prefix sums */
    if (!rc && !part) rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (!rc) part[me] = t->ns - ns0;
    if ((rc = comm_gather_rows(t, part, NULL, sizeof *part, rc))) {
        free(part);
        return rc;
    }
    for (int r = np; r > 0; r--) part[r] = part[r - 1];
    part[0] = 0;
    for (int r = 0; r < np; r++) part[r + 1] += part[r];
    float* cand = malloc(((size_t)part[np] + 1) * d * sizeof(float));
    if (!cand) rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    else memcpy(cand + (size_t)part[me] * d, t->sample + (size_t)ns0 * d, (size_t)(t->ns - ns0) * d * sizeof(float));
    rc = comm_gather_rows(t, cand, part, (size_t)d * sizeof(float), rc);
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
        free(picks); free(u);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    fgmm_idx_t first = (fgmm_idx_t)(rng_next(&t->rng) % (uint64_t)t->ns);
    for (int c = 0; c + 1 < k; c++) u[c] = rng_unit(&t->rng);
    int rc = t->eng->ops->seed_pp(t->eng, t->sample, t->ns, d, k, first, u, picks, &found);
    if (rc == FGMM_ERR_DATA && found) rc = too_few_points(k, found);
    for (int c = 0; c < k && !rc; c++) memcpy(cent + (size_t)c * d, t->sample + (size_t)picks[c] * d, (size_t)d * sizeof(float));
    free(picks); free(u);
    return rc;
}

/* k-means++ seeding on the sample (Arthur & Vassilvitskii 2007). */
static int kmeanspp(trainer* t, float* cent) {
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
            if (acc > u && d2[i] > 0) { pick = i; break; }
        }
        while (d2[pick] <= 0) pick--; /* rounding at the end of the prefix sum */
    }
    free(d2);
    return FGMM_OK;
}

typedef struct ll_row { float ll; fgmm_idx_t row; } ll_row;
static int cmp_ll_row(const void* a, const void* b) {
    const ll_row *x = a, *y = b;
    if (x->ll != y->ll) return (x->ll > y->ll) - (x->ll < y->ll);
    return (x->row > y->row) - (x->row < y->row);
}

/* Re-seeds components flagged empty[] at the worst-fit sample rows under m. */
static int reseed_worst(trainer* t, const FgmmModel* m, const int* empty, float* means, int* nreseeded) {
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

/* Lloyd iterations; leaves the GMM initialised from the final assignment. */
static int run_kmeans(trainer* t, FgmmModel* g, FgmmTrainInfo* info) {
    int k = t->k, d = t->d, rc;
    float* cent = g->mu;
    int* empty = calloc((size_t)k, sizeof(int));
    fgmm_stats st;
    if (!empty) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if ((rc = fgmm_stats_alloc(&st, k, d, 0))) { free(empty); return rc; }
    /* Every rank seeds on the same sample, and whether it holds k distinct rows (FGMM_ERR_DATA) does
     * not depend on rounding: all ranks widen it or none. */
    rc = kmeanspp(t, cent);
    if (rc == FGMM_ERR_DATA && t->ns < t->n_all && !(rc = widen_sample(t))) rc = kmeanspp(t, cent);
    fgmm_trace(t->mark, "k-means++ seeding");
    /* The draws' sums are in an order that depends on the thread count: rank 0's seeds for all. */
    if ((rc = comm_bcast(t, cent, (size_t)k * d * sizeof(float), rc))) goto done;
    /* One pass more than kmeans_iter: the last one only sets the GMM's start. */
    for (int it = 0; it <= t->p->kmeans_iter; it++) {
        rc = t->eng->ops->kmeans(t->eng, &t->x, cent, k, &st);
        if ((rc = comm_sum_stats(t, &st, rc))) goto done;
        if (it == 0) fgmm_trace(t->mark, "first k-means pass (scan, upload)");
        int ne = 0;
        for (int j = 0; j < k; j++) {
            double nj = st.nk[j];
            empty[j] = nj < (t->p->min_count > 1 ? t->p->min_count : 1);
            ne += empty[j];
            double sh = 0; /* ||new - old||^2: turns s2 around the old centroid into the new one's */
            for (int c = 0; c < d && !empty[j]; c++) {
                double nu = st.s1[(size_t)j * d + c] / nj;
                sh += (nu - cent[(size_t)j * d + c]) * (nu - cent[(size_t)j * d + c]);
                cent[(size_t)j * d + c] = (float)nu;
            }
            double v = empty[j] ? t->mean_var : (st.s2[j] - nj * sh) / (nj * d);
            g->var[j] = (float)fmax(v, t->p->var_floor * t->mean_var);
            g->w[j] = (float)((empty[j] ? 1.0 : nj) / (double)t->n_all);
        }
        int nre = 0;
        if (ne) {
            /* Worst fit = farthest from its centroid: an isotropic unit-variance model ranks the same. */
            FgmmModel tmp = {k, d, FGMM_COV_ISOTROPIC, cent, NULL, NULL};
            float* ones = malloc((size_t)k * 2 * sizeof(float));
            if (!ones) { rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory"); goto done; }
            for (int j = 0; j < 2 * k; j++) ones[j] = j < k ? 1.0f : 1.0f / k;
            tmp.var = ones;
            tmp.w = ones + k;
            rc = reseed_worst(t, &tmp, empty, cent, &nre);
            free(ones);
            if ((rc = comm_bcast(t, cent, (size_t)k * d * sizeof(float), rc))) goto done; /* rank 0's picks */
            info->reseeded += nre;
        }
        if (it < t->p->kmeans_iter) {
            info->kmeans_iterations = it + 1;
            if (t->p->progress) t->p->progress(t->p->progress_user, FGMM_PHASE_KMEANS, it, st.obj / t->n_all, nre);
        }
    }
    if (g->cov == FGMM_COV_DIAGONAL) /* isotropic start (the last pass's), broadcast per dimension */
        for (int j = k - 1; j >= 0; j--)
            for (int c = d - 1; c >= 0; c--) g->var[(size_t)j * d + c] = g->var[j];
    double ws = 0;
    for (int j = 0; j < k; j++) ws += g->w[j];
    for (int j = 0; j < k; j++) g->w[j] = (float)(g->w[j] / ws);
done:
    free(empty);
    fgmm_stats_free(&st);
    return rc;
}

/* M-step settings shared by the host M-step and the engine's em_step. */
static fgmm_mstep_cfg mstep_cfg(const trainer* t) {
    return (fgmm_mstep_cfg){t->p->var_floor * t->mean_var, t->p->min_count, t->mean_var};
}

/* Exact M-step: variances around the new means. Returns components re-seeded. */
static int mstep(trainer* t, FgmmModel* g, const fgmm_stats* st, int* nreseeded) {
    int k = t->k, d = t->d, diag = g->cov == FGMM_COV_DIAGONAL;
    const fgmm_mstep_cfg cfg = mstep_cfg(t);
    double floor = cfg.var_floor, wsum = 0, vsum = 0;
    int* empty = calloc((size_t)k, sizeof(int));
    if (!empty) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    int nfull = 0;
    for (int j = 0; j < k; j++) {
        double nj = st->nk[j];
        empty[j] = !(nj >= cfg.min_count) || !(nj > 0);
        if (empty[j]) continue;
        float* mu = g->mu + (size_t)j * d;
        double sh = 0;
        for (int c = 0; c < d; c++) {
            double nu = st->s1[(size_t)j * d + c] / nj;
            if (diag) {
                double v = fmax(st->s2[(size_t)j * d + c] / nj - nu * nu, floor);
                g->var[(size_t)j * d + c] = (float)v;
                vsum += v / d;
            }
            sh += (nu - mu[c]) * (nu - mu[c]);
            mu[c] = (float)nu;
        }
        if (!diag) {
            /* sum r||x - mu_new||^2 = sum r||x - mu_old||^2 - N_k ||mu_new - mu_old||^2 */
            double v = fmax((st->s2[j] - nj * sh) / (nj * d), floor);
            g->var[j] = (float)v;
            vsum += v;
        }
        g->w[j] = (float)nj;
        nfull++;
    }
    double vfill = nfull ? vsum / nfull : cfg.fill_var;
    for (int j = 0; j < k; j++) {
        if (!empty[j]) continue;
        g->w[j] = 1.0f;
        for (int c = 0; c < (diag ? d : 1); c++) g->var[(size_t)j * (diag ? d : 1) + c] = (float)vfill;
    }
    for (int j = 0; j < k; j++) wsum += g->w[j];
    for (int j = 0; j < k; j++) g->w[j] = (float)(g->w[j] / wsum);
    int rc = reseed_worst(t, g, empty, g->mu, nreseeded);
    free(empty);
    if (*nreseeded) rc = comm_bcast(t, g->mu, (size_t)k * d * sizeof(float), rc); /* rank 0's picks */
    return rc;
}

int fgmm_train(const FgmmParams* p, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x,
               FgmmModel** out, FgmmTrainInfo* info) {
    return fgmm_train_comm(p, n, d, dtype, x, NULL, out, info);
}

static int check_comm(const fgmm_comm* c, fgmm_idx_t n, const FgmmParams* p) {
    if (!c->sum || !c->gather || !c->bcast || !c->row0 || c->size < 1 || c->rank < 0 || c->rank >= c->size)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: incomplete communicator (rank %d of %d)", c->rank, c->size);
    if (c->row0[0] != 0 || c->row0[c->size] != c->n_total || c->row0[c->rank + 1] - c->row0[c->rank] != n)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: rank %d has %lld rows, its range says %lld", c->rank,
                         (long long)n, (long long)(c->row0[c->rank + 1] - c->row0[c->rank]));
    if (p->n_gpus) return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: n_gpus = %d; one engine per rank", p->n_gpus);
    return FGMM_OK;
}

/* The engine made on a second thread while this one reads the data (variance pass, seeding sample):
 * a GPU engine's first creation in a process includes the CUDA context, about 0.2 s. */
typedef struct engine_start {
    const FgmmParams* p;
    fgmm_engine* eng;
    int rc, started;
    char msg[512]; /* the error message: fgmm_fail's is per thread */
    pthread_t th;
} engine_start;

static void* engine_start_run(void* arg) {
    engine_start* s = arg;
    s->rc = fgmm_engine_create(&s->eng, s->p);
    if (s->rc) snprintf(s->msg, sizeof s->msg, "%s", fgmm_get_last_error());
    return NULL;
}

/* Starts the creation (GPU-capable backends only; else, or if no thread starts, engine_finish
 * creates it). */
static void engine_begin(engine_start* s, const FgmmParams* p) {
    memset(s, 0, sizeof *s);
    s->p = p;
    s->started = p->backend != FGMM_BACKEND_CPU && !pthread_create(&s->th, NULL, engine_start_run, s);
}

/* The engine (*eng) or the creation's error. */
static int engine_finish(engine_start* s, fgmm_engine** eng) {
    if (!s->started) return fgmm_engine_create(eng, s->p);
    pthread_join(s->th, NULL);
    s->started = 0;
    *eng = s->eng;
    s->eng = NULL;
    return s->rc ? fgmm_fail(s->rc, "%s", s->msg) : FGMM_OK;
}

int fgmm_train_comm(const FgmmParams* p, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, fgmm_comm* comm,
                    FgmmModel** out, FgmmTrainInfo* info) {
    double t0 = fgmm_now();
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(p);
    FGMM_CHECK_NULL(x);
    int rc;
    if (comm && (rc = check_comm(comm, n, p))) return rc;
    if (comm) comm->agreed = comm->device_sums = 0;
    trainer t = {0};
    FgmmModel* g = NULL;
    fgmm_stats st = {0};
    t.p = p;
    t.x = (fgmm_data){x, n, d, dtype};
    t.comm = comm;
    t.n_all = comm ? comm->n_total : n;
    t.k = p->k;
    t.d = d;
    t.rng = p->seed;
    engine_start es = {0};
    /* Every failure goes to done, which tells the other ranks (these first checks fail alike on all). */
    if ((rc = check_params(p))) goto done;
    if (p->k < 1 || p->k > t.n_all) {
        rc = p->k < 1 ? fgmm_fail(FGMM_ERR_ARG, "fgmm_train: k = %d; must be >= 1", p->k)
                      : fgmm_fail(FGMM_ERR_ARG, "fgmm_train: k = %d > n = %lld rows", p->k, (long long)t.n_all);
        goto done;
    }
    engine_begin(&es, p);
    double mark = t0;
    rc = fgmm_data_check_shape(&t.x, "fgmm_train");
    if ((rc = data_mean_var(&t, rc))) goto done;
    fgmm_trace(&mark, "data variance (and finite values)");
    rc = FGMM_ERR_DATA; /* the checks below are alike on every rank */
    if (!(t.mean_var > 0)) {
        fgmm_fail(rc, "fgmm_train: data has zero variance (all rows identical)");
        goto done;
    }
    /* The model's float32 variances (down to var_floor times this) and squared distances must be
     * normal floats: refuse rather than return NaN or merge distinct points. */
    if (t.mean_var < FGMM_MIN_DATA_VAR || t.mean_var > FGMM_MAX_DATA_VAR) {
        fgmm_fail(rc, "fgmm_train: the data's mean per-dimension variance is %g, outside [%g, %g] that float32 "
                  "models hold; rescale the data", t.mean_var, FGMM_MIN_DATA_VAR, FGMM_MAX_DATA_VAR);
        goto done;
    }
    if (p->var_floor * t.mean_var < FGMM_MIN_DATA_VAR * 1e-6) {
        fgmm_fail(rc, "fgmm_train: var_floor = %g times the data's variance %g is below %g; raise var_floor or "
                  "rescale the data", p->var_floor, t.mean_var, FGMM_MIN_DATA_VAR * 1e-6);
        goto done;
    }
    FgmmTrainInfo local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if ((rc = fgmm_model_alloc(&g, p->k, d, p->covariance))) goto done;
    if ((rc = draw_sample(&t))) goto done;
    fgmm_trace(&mark, "seeding sample");
    rc = engine_finish(&es, &t.eng);
    /* GPU ranks sum their statistics with NCCL where they all can; every rank (the same backend on all)
     * agrees there on the others' engines */
    const int ranks = comm ? comm->size : 1;
    if (ranks > 1 && p->backend != FGMM_BACKEND_CPU) rc = fgmm_engine_comm_wrap(&t.eng, comm, rc);
    if (rc) goto done;
    if (t.eng->ops->set_scan && (rc = t.eng->ops->set_scan(t.eng, &t.x, t.col_mean))) goto done;
    fgmm_trace(&mark, ranks == 1 ? "engine (the rest of its start)" : t.eng->sums_ranks ? "engine, ranks sum with NCCL" : "engine, ranks sum on the host");
    info->backend = t.eng->ops->name;
    t.mark = &mark;
    if ((rc = run_kmeans(&t, g, info))) goto done;
    fgmm_trace(&mark, "other k-means iterations");
    if ((rc = fgmm_stats_alloc(&st, p->k, d, p->covariance == FGMM_COV_DIAGONAL))) goto done;
    double prev = -INFINITY;
    /* The engine's own EM iteration keeps the model on the device where the GPU backend's plan says
     * so (src/gpu/gpu_plan.c); else it is not handled and the M-step runs here.
     * Several ranks: each iteration's statistics are summed over them before the host's M-step. */
    int on_device = !comm && t.eng->ops->em_step, changed = 1;
    int stale = 0; /* the engine's device model is newer than g */
    for (int it = 0; it < p->niter; it++) {
        int handled = 0, nre = 0, nempty = 0;
        double obj = 0;
        if (on_device) {
            const fgmm_mstep_cfg cfg = mstep_cfg(&t);
            if ((rc = t.eng->ops->em_step(t.eng, &t.x, g, changed, &cfg, &handled, &obj, &nempty))) goto done;
            on_device = handled;
        }
        if (!handled) {
            if (stale && (rc = t.eng->ops->em_fetch(t.eng, g, NULL))) goto done;
            stale = 0;
            rc = t.eng->ops->estep(t.eng, &t.x, g, &st);
            if ((rc = comm_sum_stats(&t, &st, rc))) goto done;
            obj = st.obj;
        }
        double ll = obj / t.n_all;
        if (!isfinite(ll)) {
            rc = fgmm_fail(FGMM_ERR_DATA, "fgmm_train: log-likelihood became %g at EM iteration %d", ll, it);
            goto done;
        }
        if (!handled) {
            if ((rc = mstep(&t, g, &st, &nre))) goto done;
        } else if (nempty) { /* re-seeding is host work: bring the model back, then send it again */
            int* empty = malloc((size_t)p->k * sizeof(int));
            if (!empty) { rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory"); goto done; }
            if (!(rc = t.eng->ops->em_fetch(t.eng, g, empty))) rc = reseed_worst(&t, g, empty, g->mu, &nre);
            free(empty);
            if (rc) goto done;
        } else {
            stale = 1;
        }
        changed = nre > 0;
        info->reseeded += nre;
        info->em_iterations = it + 1;
        if (p->progress) p->progress(p->progress_user, FGMM_PHASE_EM, it, ll, nre);
        if (p->tol > 0 && it > 0 && ll - prev < p->tol * fabs(ll)) {
            info->converged = 1;
            break;
        }
        prev = ll;
    }
    fgmm_trace(&mark, "EM iterations");
    if (stale && (rc = t.eng->ops->em_fetch(t.eng, g, NULL))) goto done;
    rc = t.eng->ops->loglik_sum ? t.eng->ops->loglik_sum(t.eng, &t.x, g, &st.obj) : t.eng->ops->estep(t.eng, &t.x, g, &st);
    if ((rc = comm_sum(&t, &st.obj, 1, rc))) goto done;
    info->mean_loglik = st.obj / t.n_all;
    fgmm_trace(&mark, "final E-step");
done:
    /* A failure on this rank alone: the others learn of it at their next collective. */
    if (rc && comm && !comm->agreed) comm->sum(comm, NULL, 0, rc);
    if (es.started) { /* failed before the engine was needed */
        pthread_join(es.th, NULL);
        fgmm_engine_destroy(es.eng);
    }
    fgmm_stats_free(&st);
    fgmm_engine_destroy(t.eng);
    free(t.sample);
    free(t.tmp_ll);
    free(t.col_mean);
    if (rc) {
        fgmm_model_free(g);
        return rc;
    }
    info->seconds = fgmm_now() - t0;
    *out = g;
    fgmm_clear_error();
    return FGMM_OK;
}

/* Shared checks of the model-based entry points; makes the engine. */
static int begin_model_call(const char* who, const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n,
                            FgmmDtype dtype, const void* x, fgmm_data* view, fgmm_engine** eng) {
    if (!m) return fgmm_fail(FGMM_ERR_NULL, "%s: model is NULL", who);
    *view = (fgmm_data){x, n, m->d, dtype};
    int rc = fgmm_data_check(view, who);
    if (rc) return rc;
    if (p && (rc = check_params(p))) return rc;
    FgmmParams def;
    if (!p) fgmm_params_init(&def);
    return fgmm_engine_create(eng, p ? p : &def);
}

int fgmm_estep(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype, const void* x,
               double* nk, double* mu_acc, double* sig_acc, double* loglik) {
    FGMM_CHECK_NULL(nk);
    fgmm_data v;
    fgmm_engine* e = NULL;
    int rc = begin_model_call("fgmm_estep", m, p, n, dtype, x, &v, &e);
    if (rc) return rc;
    int k = m->k, d = m->d, diag = m->cov == FGMM_COV_DIAGONAL;
    fgmm_stats st;
    if ((rc = fgmm_stats_alloc(&st, k, d, diag)) == 0 && (rc = e->ops->estep(e, &v, m, &st)) == 0) {
        memcpy(nk, st.nk, (size_t)k * sizeof(double));
        if (mu_acc) memcpy(mu_acc, st.s1, (size_t)k * d * sizeof(double));
        if (sig_acc && !diag) memcpy(sig_acc, st.s2, (size_t)k * sizeof(double));
        if (sig_acc && diag) /* sum r (x - mu)^2 = S2 - 2 mu S1 + N mu^2 */
            for (size_t t = 0; t < (size_t)k * d; t++) {
                double mu = m->mu[t];
                sig_acc[t] = st.s2[t] - 2 * mu * st.s1[t] + st.nk[t / d] * mu * mu;
            }
        if (loglik) *loglik = st.obj;
    }
    fgmm_stats_free(&st);
    fgmm_engine_destroy(e);
    return rc;
}

int fgmm_loglik(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype, const void* x,
                float* out) {
    FGMM_CHECK_NULL(out);
    fgmm_data v;
    fgmm_engine* e = NULL;
    int rc = begin_model_call("fgmm_loglik", m, p, n, dtype, x, &v, &e);
    if (rc) return rc;
    rc = e->ops->assign(e, &v, m, 0, NULL, NULL, out);
    fgmm_engine_destroy(e);
    return rc;
}

int fgmm_assign_topm(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype,
                     const void* x, int topm, fgmm_idx_t* labels, float* resp) {
    FGMM_CHECK_NULL(labels);
    if (m && (topm < 1 || topm > m->k))
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_assign_topm: m = %d out of range [1, k = %d]", topm, m->k);
    fgmm_data v;
    fgmm_engine* e = NULL;
    int rc = begin_model_call("fgmm_assign_topm", m, p, n, dtype, x, &v, &e);
    if (rc) return rc;
    rc = e->ops->assign(e, &v, m, topm, labels, resp, NULL);
    fgmm_engine_destroy(e);
    return rc;
}
