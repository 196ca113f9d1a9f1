/* SPDX-License-Identifier: MIT */
/* cpu_engine.c: the CPU backend of the engine (OpenBLAS sgemm + OpenMP).
 *
 * Rows are processed in blocks of about 64 MB of k-wide scratch: one sgemm gives
 * the block's distances (rows x k floats), OpenMP turns them into responsibilities
 * row by row, sgemms give R^T X. Memory is O(block rows * k + k*d),
 * never n x k. BLAS is called outside OpenMP regions (Debian's default
 * OpenBLAS is the pthread build and threads itself). The engine's own sums over rows are
 * taken in a fixed order (OpenBLAS's and the seeding's may depend on the thread count).
 *
 * Rows are centred on the model's centre (the weighted mean of its means; for k-means the mean
 * of the centroids) before the float32 expansion ||x||^2 + ||mu||^2 - 2 x.mu, which cancels
 * for data far from the origin; the statistics are moved back in double.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Rows per block: the two rows x k float buffers take about BLOCK_BYTES. Large blocks mean few
 * sgemm calls and OpenMP regions per E-step (each costs a thread hand-off; on a 16-vCPU VM small
 * 2048-row blocks made 16 threads slower than one). */
#define BLOCK_BYTES ((size_t)64 << 20)
#define BLOCK_MIN_ROWS 1024
#define BLOCK_MAX_ROWS 65536
/* Columns per OpenMP task in the column reductions (one cache line of doubles x 8). */
#define COL_CHUNK 64

typedef struct cpu_scratch {
    int rows;
    float* xb;    /* rows x d: the block as float (u8 input, or diagonal x) */
    float* x2b;   /* rows x d: squares (diagonal only) */
    float* xn;    /* rows: ||x||^2 */
    float* g;     /* rows x k: distances / q */
    float* r;     /* rows x k: log-densities, then responsibilities */
    float* acc;   /* k x d: one sgemm result */
    double* logz; /* rows */
} cpu_scratch;

/* Per-model constants: log w_k + log p(x|k) = c_k - q_k(x). */
typedef struct cpu_model {
    int k, d, diag;
    float* ctr;       /* d: the centre subtracted from rows and means */
    float* b1;        /* isotropic: mu (k x d); diagonal: 1/var (k x d) */
    float* b2;        /* diagonal: -2 mu / var (k x d) */
    float* kn;        /* isotropic: ||mu||^2; diagonal: sum mu^2/var */
    float* half_prec; /* isotropic: 1/(2 var_k) */
    float* c;         /* log w_k + the log-density's constant, in float (what the row pass reads) */
} cpu_model;

static void scratch_free(cpu_scratch* s) {
    free(s->xb);
    free(s->x2b);
    free(s->xn);
    free(s->g);
    free(s->r);
    free(s->acc);
    free(s->logz);
    memset(s, 0, sizeof *s);
}

static int scratch_alloc(cpu_scratch* s, int k, int d, int diag) {
    memset(s, 0, sizeof *s);
    size_t rows = BLOCK_BYTES / (2 * sizeof(float) * (size_t)k);
    rows = rows < BLOCK_MIN_ROWS ? BLOCK_MIN_ROWS : rows > BLOCK_MAX_ROWS ? BLOCK_MAX_ROWS : rows;
    s->rows = (int)rows;
    size_t rk = rows * k, rd = rows * d;
    s->xb = malloc(rd * sizeof(float));
    s->x2b = diag ? malloc(rd * sizeof(float)) : NULL;
    s->xn = malloc(rows * sizeof(float));
    s->g = malloc(rk * sizeof(float));
    s->r = malloc(rk * sizeof(float));
    s->acc = malloc((size_t)k * d * sizeof(float));
    s->logz = malloc(rows * sizeof(double));
    if (!s->xb || (diag && !s->x2b) || !s->xn || !s->g || !s->r || !s->acc || !s->logz) {
        scratch_free(s);
        return fgmm_fail(FGMM_ERR_NOMEM, "cpu engine: out of host memory for %zu x %d scratch", rows, k);
    }
    return FGMM_OK;
}

/* The engine's state: its scratch, kept between passes of one shape (a training's passes would
 * otherwise each fault in ~128 MB of fresh pages). An engine serves one thread at a time. */
typedef struct cpu_impl {
    cpu_scratch s;
    int k, d, diag;
} cpu_impl;

static int scratch_get(fgmm_engine* e, int k, int d, int diag, cpu_scratch** out) {
    cpu_impl* ci = e->impl;
    if (!ci->s.xb || ci->k != k || ci->d != d || ci->diag != diag) {
        scratch_free(&ci->s);
        int rc = scratch_alloc(&ci->s, k, d, diag);
        if (rc) return rc;
        ci->k = k, ci->d = d, ci->diag = diag;
    }
    *out = &ci->s;
    return FGMM_OK;
}

static void model_free(cpu_model* m) {
    free(m->ctr);
    free(m->b1);
    free(m->b2);
    free(m->kn);
    free(m->half_prec);
    free(m->c);
    memset(m, 0, sizeof *m);
}

/* ctr = sum_j w_j mu_j (w = NULL: equal weights), accumulated in double. */
static void centre_of(const float* mu, const float* w, int k, int d, float* ctr) {
    for (int t = 0; t < d; t++) {
        double c = 0;
        for (int j = 0; j < k; j++) c += (w ? (double)w[j] : 1.0 / k) * mu[(size_t)j * d + t];
        ctr[t] = (float)c;
    }
}

static int model_prepare(cpu_model* cm, const FgmmModel* m) {
    memset(cm, 0, sizeof *cm);
    int k = m->k, d = m->d;
    size_t kd = (size_t)k * d;
    cm->k = k;
    cm->d = d;
    cm->diag = m->cov == FGMM_COV_DIAGONAL;
    cm->ctr = malloc((size_t)d * sizeof(float));
    cm->b1 = malloc(kd * sizeof(float));
    cm->b2 = cm->diag ? malloc(kd * sizeof(float)) : NULL;
    cm->kn = malloc((size_t)k * sizeof(float));
    cm->half_prec = malloc((size_t)k * sizeof(float));
    cm->c = malloc((size_t)k * sizeof(float));
    double* c = malloc((size_t)k * sizeof(double));
    if (!cm->ctr || !cm->b1 || (cm->diag && !cm->b2) || !cm->kn || !cm->half_prec || !cm->c || !c) {
        free(c);
        model_free(cm);
        return fgmm_fail(FGMM_ERR_NOMEM, "cpu engine: out of host memory");
    }
    fgmm_model_logconst(m, c);
    for (int j = 0; j < k; j++) cm->c[j] = (float)c[j];
    free(c);
    centre_of(m->mu, m->w, k, d, cm->ctr);
    for (int j = 0; j < k; j++) {
        const float* mu = m->mu + (size_t)j * d;
        double kn = 0;
        for (int t = 0; t < d; t++) {
            float mc = mu[t] - cm->ctr[t];
            if (cm->diag) {
                double p = 1.0 / m->var[(size_t)j * d + t];
                cm->b1[(size_t)j * d + t] = (float)p;
                cm->b2[(size_t)j * d + t] = (float)(-2.0 * mc * p);
                kn += (double)mc * mc * p;
            } else {
                cm->b1[(size_t)j * d + t] = mc;
                kn += (double)mc * mc;
            }
        }
        cm->half_prec[j] = cm->diag ? 0.5f : (float)(0.5 / m->var[j]);
        cm->kn[j] = (float)kn;
    }
    return FGMM_OK;
}

/* Statistics of centred rows back to the caller's coordinates: s1 += N c; diagonal
 * s2 = sum r x^2 = s2c + 2 c s1c + N c^2. */
static void unshift_stats(fgmm_stats* st, const float* ctr, int diag) {
    const int k = st->k, d = st->d;
    for (int j = 0; j < k; j++)
        for (int t = 0; t < d; t++) {
            const double c = ctr[t], s1c = st->s1[(size_t)j * d + t];
            if (diag) st->s2[(size_t)j * d + t] += (2.0 * s1c + st->nk[j] * c) * c;
            st->s1[(size_t)j * d + t] = s1c + st->nk[j] * c;
        }
}

/* Loads rows [i0, i0+b) as float minus ctr into s->xb, their squared norms (and squares for the
 * diagonal model). */
static const float* load_block(cpu_scratch* s, const fgmm_data* x, fgmm_idx_t i0, int b, int squares,
                               const float* ctr) {
    int d = x->d;
#pragma omp parallel for
    for (int i = 0; i < b; i++) {
        float* xr = s->xb + (size_t)i * d;
        fgmm_data_row(x, i0 + i, xr);
        double nrm = 0;
        for (int t = 0; t < d; t++) {
            float v = xr[t] - ctr[t];
            xr[t] = v;
            nrm += (double)v * v;
            if (squares) s->x2b[(size_t)i * d + t] = v * v;
        }
        s->xn[i] = (float)nrm;
    }
    return s->xb;
}

/* One row of distance terms g (k wide, the sgemm's -2 x.mu or the diagonal's q*2 terms): g <- q >= 0,
 * r <- log-density c_k - q_k * half_prec_k, and returns log sum_k exp(r_k); to_resp: r <- exp(r - that).
 * Isotropic q = ||x||^2 + ||mu||^2 - 2 x.mu, diagonal sum x^2/v - 2 x mu/v + mu^2/v: both >= 0 exactly,
 * the clamp takes the expansion's rounding. Compiled for AVX2 + FMA too (picked at run time). */
HOT_CLONES
static double row_lse(float* restrict g, float* restrict r, const float* restrict kn, const float* restrict hp,
                      const float* restrict c, float xn, int k, int to_resp) {
    float mx = -FLT_MAX;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < k; j++) {
        float q = g[j] + xn + kn[j];
        q = q > 0.0f ? q : 0.0f;
        g[j] = q;
        r[j] = c[j] - q * hp[j];
        mx = r[j] > mx ? r[j] : mx;
    }
    /* terms in float (each <= 1), summed in float over chunks of 64, the chunks in double: a float
     * reduction, which GCC 12 vectorises in the AVX2 clone (a double one it did not: scalar exps) */
    double sum = 0;
    for (int j0 = 0; j0 < k; j0 += 64) {
        const int j1 = j0 + 64 < k ? j0 + 64 : k;
        float part = 0;
        if (to_resp) {
#pragma omp simd reduction(+ : part)
            for (int j = j0; j < j1; j++) {
                r[j] = fgmm_exp_nonpos(r[j] - mx);
                part += r[j];
            }
        } else {
#pragma omp simd reduction(+ : part)
            for (int j = j0; j < j1; j++) part += fgmm_exp_nonpos(r[j] - mx);
        }
        sum += part;
    }
    if (to_resp) {
        float inv = (float)(1.0 / sum);
#pragma omp simd
        for (int j = 0; j < k; j++) r[j] *= inv;
    }
    return mx + log(sum);
}

/* For a loaded block: g = distance terms (isotropic ||x-mu||^2, diagonal q*2), r = log-densities
 * c_k - q_k(x) with q_k = g * half_prec_k (to_resp: responsibilities), logz = log p(x) per row. */
static void block_rows(cpu_scratch* s, const cpu_model* cm, const float* xb, int b, int to_resp) {
    int k = cm->k, d = cm->d;
    if (cm->diag) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, 1.0f, s->x2b, d, cm->b1, d, 0.0f, s->g, k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, 1.0f, xb, d, cm->b2, d, 1.0f, s->g, k);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, -2.0f, xb, d, cm->b1, d, 0.0f, s->g, k);
    }
#pragma omp parallel for
    for (int i = 0; i < b; i++)
        s->logz[i] = row_lse(s->g + (size_t)i * k, s->r + (size_t)i * k, cm->kn, cm->half_prec, cm->c,
                             cm->diag ? 0.0f : s->xn[i], k, to_resp);
}

/* Rows per R^T X product: OpenBLAS's summation order over a long inner dimension depends on its
 * thread count; fixed 2048-row slices keep results identical for any number of threads. */
#define RTX_ROWS 2048

/* acc_double[k x d] += R^T X over the block. */
static void add_rtx(cpu_scratch* s, int k, int d, int b, const float* x, double* out) {
    for (int r0 = 0; r0 < b; r0 += RTX_ROWS)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, d, b - r0 < RTX_ROWS ? b - r0 : RTX_ROWS, 1.0f,
                    s->r + (size_t)r0 * k, k, x + (size_t)r0 * d, d, r0 ? 1.0f : 0.0f, s->acc, d);
#pragma omp parallel for
    for (size_t t = 0; t < (size_t)k * d; t++) out[t] += s->acc[t];
}

/* For w <= COL_CHUNK columns of b rows (pitch k): nk[j] += sum_i r_ij and, if s2, s2[j] += sum_i r_ij g_ij,
 * summed in double in row order (the same for any thread count). */
HOT_CLONES
static void col_sums(const float* r, const float* g, int k, int b, int w, double* nk, double* s2) {
    double an[COL_CHUNK] = {0}, as[COL_CHUNK] = {0};
    for (int i = 0; i < b; i++) {
        const float* ri = r + (size_t)i * k;
        const float* gi = g + (size_t)i * k;
#pragma omp simd
        for (int j = 0; j < w; j++) {
            an[j] += ri[j];
            as[j] += (double)ri[j] * gi[j];
        }
    }
    for (int j = 0; j < w; j++) {
        nk[j] += an[j];
        if (s2) s2[j] += as[j];
    }
}

/* Model constants (freed by the caller on success) and the engine's scratch for one pass. */
static int begin_pass(fgmm_engine* e, cpu_model* cm, cpu_scratch** s, const FgmmModel* m) {
    int rc = model_prepare(cm, m);
    if (rc) return rc;
    if ((rc = scratch_get(e, m->k, m->d, cm->diag, s))) model_free(cm);
    return rc;
}

static int cpu_estep(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out) {
    cpu_model cm;
    cpu_scratch* s;
    int rc = begin_pass(e, &cm, &s, m);
    if (rc) return rc;
    int k = m->k, d = m->d;
    fgmm_stats_zero(out);
    for (fgmm_idx_t i0 = 0; i0 < x->n; i0 += s->rows) {
        int b = (int)(x->n - i0 < s->rows ? x->n - i0 : s->rows);
        const float* xb = load_block(s, x, i0, b, cm.diag, cm.ctr);
        block_rows(s, &cm, xb, b, 1);
        for (int i = 0; i < b; i++) out->obj += s->logz[i];
            /* nk and (isotropic) sum r ||x - mu||^2: column chunks, rows in order. */
#pragma omp parallel for schedule(static)
        for (int j0 = 0; j0 < k; j0 += COL_CHUNK)
            col_sums(s->r + j0, s->g + j0, k, b, j0 + COL_CHUNK < k ? COL_CHUNK : k - j0, out->nk + j0,
                     cm.diag ? NULL : out->s2 + j0);
        add_rtx(s, k, d, b, xb, out->s1);
        if (cm.diag) add_rtx(s, k, d, b, s->x2b, out->s2);
    }
    unshift_stats(out, cm.ctr, cm.diag);
    model_free(&cm);
    return FGMM_OK;
}

/* The E-step's obj alone: per block one sgemm and the row pass, without the responsibilities' column
 * sums and R^T X (about half of an E-step); rows summed in the same order. */
static int cpu_loglik_sum(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, double* obj) {
    cpu_model cm;
    cpu_scratch* s;
    int rc = begin_pass(e, &cm, &s, m);
    if (rc) return rc;
    *obj = 0;
    for (fgmm_idx_t i0 = 0; i0 < x->n; i0 += s->rows) {
        int b = (int)(x->n - i0 < s->rows ? x->n - i0 : s->rows);
        block_rows(s, &cm, load_block(s, x, i0, b, cm.diag, cm.ctr), b, 0);
        for (int i = 0; i < b; i++) *obj += s->logz[i];
    }
    model_free(&cm);
    return FGMM_OK;
}

/* Dimensions per thread task in k-means' per-centroid sums. */
#define KM_DIM_CHUNK 64

/* The nearest centroid of one row (the first at ties): g = -2 x.c (k wide), cn = ||c||^2; *dist =
 * ||x - c||^2 (clamped at 0). The minimum first, vectorised, then its first index. */
HOT_CLONES
static int row_argmin(const float* restrict g, const float* restrict cn, int k, float xn, float* dist) {
    float bv = FLT_MAX;
#pragma omp simd reduction(min : bv)
    for (int j = 0; j < k; j++) {
        const float v = g[j] + cn[j];
        bv = v < bv ? v : bv;
    }
    *dist = fmaxf(bv + xn, 0.0f);
    for (int j = 0; j < k; j++)
        if (g[j] + cn[j] == bv) return j;
    return 0; /* no finite distance (the data are checked finite before) */
}

static int cpu_kmeans(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, fgmm_stats* out) {
    int d = x->d;
    cpu_scratch* s;
    int rc = scratch_get(e, k, d, 0, &s);
    if (rc) return rc;
    float* cn = malloc((size_t)k * sizeof(float));
    int* lab = malloc((size_t)s->rows * sizeof(int));
    float* dist = malloc((size_t)s->rows * sizeof(float));
    float* ctr = malloc((size_t)d * sizeof(float));
    float* cc = malloc((size_t)k * d * sizeof(float)); /* centred centroids */
    if (!cn || !lab || !dist || !ctr || !cc) {
        free(cn);
        free(lab);
        free(dist);
        free(ctr);
        free(cc);
        return fgmm_fail(FGMM_ERR_NOMEM, "cpu engine: out of host memory");
    }
    centre_of(cent, NULL, k, d, ctr);
    for (int j = 0; j < k; j++) {
        double v = 0;
        for (int t = 0; t < d; t++) {
            float c = cent[(size_t)j * d + t] - ctr[t];
            cc[(size_t)j * d + t] = c;
            v += (double)c * c;
        }
        cn[j] = (float)v;
    }
    fgmm_stats_zero(out);
    for (fgmm_idx_t i0 = 0; i0 < x->n; i0 += s->rows) {
        int b = (int)(x->n - i0 < s->rows ? x->n - i0 : s->rows);
        const float* xb = load_block(s, x, i0, b, 0, ctr);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, k, d, -2.0f, xb, d, cc, d, 0.0f, s->g, k);
#pragma omp parallel for
        for (int i = 0; i < b; i++) lab[i] = row_argmin(s->g + (size_t)i * k, cn, k, s->xn[i], dist + i);
        for (int i = 0; i < b; i++) {
            int j = lab[i];
            out->nk[j] += 1;
            out->s2[j] += dist[i];
            out->obj -= dist[i];
        }
        /* sum x per centroid: the threads take dimensions, each sums its own in row order */
#pragma omp parallel for schedule(static)
        for (int t0 = 0; t0 < d; t0 += KM_DIM_CHUNK) {
            const int t1 = t0 + KM_DIM_CHUNK < d ? t0 + KM_DIM_CHUNK : d;
            for (int i = 0; i < b; i++) {
                const float* xi = xb + (size_t)i * d;
                double* sj = out->s1 + (size_t)lab[i] * d;
                for (int t = t0; t < t1; t++) sj[t] += xi[t];
            }
        }
    }
    unshift_stats(out, ctr, 0);
    free(cn);
    free(lab);
    free(dist);
    free(ctr);
    free(cc);
    return FGMM_OK;
}

static int cpu_assign(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels, float* resp,
                      float* loglik) {
    cpu_model cm;
    cpu_scratch* s;
    int rc = begin_pass(e, &cm, &s, m);
    if (rc) return rc;
    int k = m->k;
    for (fgmm_idx_t i0 = 0; i0 < x->n; i0 += s->rows) {
        int b = (int)(x->n - i0 < s->rows ? x->n - i0 : s->rows);
        const float* xb = load_block(s, x, i0, b, cm.diag, cm.ctr);
        block_rows(s, &cm, xb, b, 0);
#pragma omp parallel for
        for (int i = 0; i < b; i++) {
            fgmm_idx_t row = i0 + i;
            if (loglik) loglik[row] = (float)s->logz[i];
            if (topm <= 0) continue;
            /* Insertion into a sorted top-m list: m is small (lists per vector). */
            const float* r = s->r + (size_t)i * k;
            fgmm_idx_t* lb = labels + (size_t)row * topm;
            float best[topm];
            int cnt = 0;
            for (int j = 0; j < k; j++) {
                if (cnt == topm && r[j] <= best[topm - 1]) continue;
                int p = cnt < topm ? cnt++ : topm - 1;
                while (p > 0 && best[p - 1] < r[j]) {
                    best[p] = best[p - 1];
                    lb[p] = lb[p - 1];
                    p--;
                }
                best[p] = r[j];
                lb[p] = j;
            }
            for (int t = 0; t < topm; t++) {
                if (t >= cnt) lb[t] = -1;
                if (resp) resp[(size_t)row * topm + t] = t < cnt ? (float)exp(best[t] - s->logz[i]) : 0.0f;
            }
        }
    }
    model_free(&cm);
    return FGMM_OK;
}

static void cpu_destroy(fgmm_engine* e) {
    if (!e) return;
    cpu_impl* ci = e->impl;
    if (ci) scratch_free(&ci->s);
    free(ci);
    free(e);
}

static const fgmm_engine_ops cpu_ops = {"cpu", cpu_estep, cpu_kmeans, cpu_assign, cpu_destroy,
                                        NULL,  NULL,      NULL,       NULL,       cpu_loglik_sum};

int fgmm_engine_cpu_create(fgmm_engine** out) {
    FGMM_CHECK_NULL(out);
    fgmm_engine* e = calloc(1, sizeof *e);
    cpu_impl* ci = calloc(1, sizeof *ci);
    if (!e || !ci) {
        free(e);
        free(ci);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    e->ops = &cpu_ops;
    e->impl = ci;
    e->precision = FGMM_PREC_EXACT;
    *out = e;
    return FGMM_OK;
}
