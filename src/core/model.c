/* SPDX-License-Identifier: MIT */
/* model.c: the mixture object, its file format, data views and statistics buffers. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FGMM_FILE_MAGIC "FGMMv001"

size_t fgmm_model_nvar(const FgmmModel* m) { return m->cov == FGMM_COV_DIAGONAL ? (size_t)m->k * m->d : (size_t)m->k; }

int fgmm_model_alloc(FgmmModel** out, int k, int d, FgmmCovariance cov) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    if (k < 1 || k > FGMM_MAX_K) return fgmm_fail(FGMM_ERR_ARG, "k = %d out of range [1, %d]", k, FGMM_MAX_K);
    if (d < 1 || d > FGMM_MAX_DIM) return fgmm_fail(FGMM_ERR_ARG, "d = %d out of range [1, %d]", d, FGMM_MAX_DIM);
    if (cov != FGMM_COV_ISOTROPIC && cov != FGMM_COV_DIAGONAL)
        return fgmm_fail(FGMM_ERR_ARG, "unknown covariance type %d", (int)cov);
    FgmmModel* m = calloc(1, sizeof *m);
    if (!m) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    m->k = k;
    m->d = d;
    m->cov = cov;
    size_t kd = (size_t)k * d;
    m->mu = malloc(kd * sizeof(float));
    m->var = malloc(fgmm_model_nvar(m) * sizeof(float));
    m->w = malloc((size_t)k * sizeof(float));
    if (!m->mu || !m->var || !m->w) {
        fgmm_model_free(m);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory for a %d x %d model", k, d);
    }
    *out = m;
    return FGMM_OK;
}

static int check_params(const FgmmModel* m) {
    size_t kd = (size_t)m->k * m->d;
    for (size_t i = 0; i < kd; i++)
        if (!isfinite(m->mu[i])) return fgmm_fail(FGMM_ERR_DATA, "mean %zu is not finite", i);
    for (size_t i = 0; i < fgmm_model_nvar(m); i++)
        if (!(m->var[i] >= FLT_MIN) || !isfinite(m->var[i])) /* 1 / a subnormal is inf */
            return fgmm_fail(FGMM_ERR_DATA, "variance %zu is %g; must be finite and >= %g (a normal float)", i,
                             m->var[i], FLT_MIN);
    double sum = 0;
    int low = 0; /* the smallest weight's index */
    for (int i = 0; i < m->k; i++) {
        if (!(m->w[i] > 0.0f) || !isfinite(m->w[i]))
            return fgmm_fail(FGMM_ERR_DATA, "weight %d is %g; must be finite and > 0", i, m->w[i]);
        sum += m->w[i];
        if (m->w[i] < m->w[low]) low = i;
    }
    /* normalised, every weight must stay a normal float: one that rounds to 0 (or a subnormal) would be
     * refused when the model is read back, and log(0) is -inf in the E-step */
    if (!((float)(m->w[low] / sum) >= FLT_MIN))
        return fgmm_fail(FGMM_ERR_DATA,
                         "weight %d is %g of their sum %g: below the smallest normal float (%g) once normalised", low,
                         m->w[low], sum, FLT_MIN);
    for (int i = 0; i < m->k; i++) m->w[i] = (float)(m->w[i] / sum);
    return FGMM_OK;
}

int fgmm_model_new(FgmmModel** out, int k, int d, FgmmCovariance cov, const float* means, const float* variances,
                   const float* weights) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(means);
    FGMM_CHECK_NULL(variances);
    FGMM_CHECK_NULL(weights);
    FgmmModel* m;
    int rc = fgmm_model_alloc(&m, k, d, cov);
    if (rc) return rc;
    memcpy(m->mu, means, (size_t)k * d * sizeof(float));
    memcpy(m->var, variances, fgmm_model_nvar(m) * sizeof(float));
    memcpy(m->w, weights, (size_t)k * sizeof(float));
    if ((rc = check_params(m))) {
        fgmm_model_free(m);
        return rc;
    }
    *out = m;
    return FGMM_OK;
}

void fgmm_model_free(FgmmModel* m) {
    if (!m) return;
    free(m->mu);
    free(m->var);
    free(m->w);
    free(m);
}

int fgmm_model_k(const FgmmModel* m) { return m ? m->k : 0; }
int fgmm_model_d(const FgmmModel* m) { return m ? m->d : 0; }
FgmmCovariance fgmm_model_covariance(const FgmmModel* m) { return m ? m->cov : FGMM_COV_ISOTROPIC; }
const float* fgmm_model_means(const FgmmModel* m) { return m ? m->mu : NULL; }
const float* fgmm_model_variances(const FgmmModel* m) { return m ? m->var : NULL; }
const float* fgmm_model_weights(const FgmmModel* m) { return m ? m->w : NULL; }

void fgmm_model_logconst(const FgmmModel* m, double* c) {
    const double log2pi = 1.8378770664093454836; /* log(2 pi) */
    for (int k = 0; k < m->k; k++) {
        double lv;
        if (m->cov == FGMM_COV_ISOTROPIC) {
            lv = m->d * log((double)m->var[k]);
        } else {
            lv = 0;
            for (int j = 0; j < m->d; j++) lv += log((double)m->var[(size_t)k * m->d + j]);
        }
        c[k] = log((double)m->w[k]) - 0.5 * (m->d * log2pi + lv);
    }
}

/* File: magic[8], int32 k, d, cov, then mu, var, w as float32 (little-endian hosts). */
#define FGMM_FILE_HEADER 20

int fgmm_model_fwrite(const FgmmModel* m, FILE* f) {
    FGMM_CHECK_NULL(m);
    FGMM_CHECK_NULL(f);
    int32_t hdr[3] = {m->k, m->d, (int32_t)m->cov};
    size_t kd = (size_t)m->k * m->d, nv = fgmm_model_nvar(m);
    int ok = fwrite(FGMM_FILE_MAGIC, 1, 8, f) == 8 && fwrite(hdr, sizeof hdr, 1, f) == 1 &&
             fwrite(m->mu, sizeof(float), kd, f) == kd && fwrite(m->var, sizeof(float), nv, f) == nv &&
             fwrite(m->w, sizeof(float), (size_t)m->k, f) == (size_t)m->k;
    return ok ? FGMM_OK : fgmm_fail(FGMM_ERR_IO, "writing a model failed: %s", strerror(errno));
}

int fgmm_model_write(const FgmmModel* m, const char* path) {
    FGMM_CHECK_NULL(m);
    FGMM_CHECK_NULL(path);
    FgmmOutput o;
    int rc = fgmm_output_begin(path, &o);
    if (rc) return rc;
    int ok = fgmm_model_fwrite(m, o.f) == FGMM_OK;
    return fgmm_output_end(&o, path, ok);
}

/* The header is checked against the file size before anything is allocated. */
static int read_model(FILE* f, int64_t size, const char* path, FgmmModel** out) {
    char magic[8];
    int32_t hdr[3];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, FGMM_FILE_MAGIC, 8) != 0)
        return fgmm_fail(FGMM_ERR_IO, "%s is not a flashgmm model file", path);
    if (fread(hdr, sizeof hdr, 1, f) != 1) return fgmm_fail(FGMM_ERR_IO, "%s: truncated header", path);
    int k = hdr[0], d = hdr[1];
    if (k < 1 || k > FGMM_MAX_K || d < 1 || d > FGMM_MAX_DIM ||
        (hdr[2] != FGMM_COV_ISOTROPIC && hdr[2] != FGMM_COV_DIAGONAL))
        return fgmm_fail(FGMM_ERR_IO, "%s: bad header (k = %d, d = %d, covariance %d)", path, k, d, hdr[2]);
    /* k <= 2^24, d <= 2^20: every count below fits in int64 */
    int64_t kd = (int64_t)k * d, nv = hdr[2] == FGMM_COV_DIAGONAL ? kd : k;
    int64_t want = FGMM_FILE_HEADER + 4 * (kd + nv + k);
    if (size != want)
        return fgmm_fail(FGMM_ERR_IO, "%s: %lld bytes; a %d x %d %s model has %lld: %s", path, (long long)size, k, d,
                         hdr[2] == FGMM_COV_DIAGONAL ? "diagonal" : "isotropic", (long long)want,
                         size < want ? "truncated" : "trailing bytes");
    FgmmModel* m;
    int rc = fgmm_model_alloc(&m, k, d, (FgmmCovariance)hdr[2]);
    if (rc) return rc;
    if (fread(m->mu, sizeof(float), (size_t)kd, f) != (size_t)kd ||
        fread(m->var, sizeof(float), (size_t)nv, f) != (size_t)nv ||
        fread(m->w, sizeof(float), (size_t)k, f) != (size_t)k)
        rc = fgmm_fail(FGMM_ERR_IO, "%s: read failed (truncated while reading?)", path);
    else if ((rc = check_params(m)) != 0) rc = fgmm_fail(FGMM_ERR_IO, "%s: %s", path, fgmm_get_last_error());
    if (rc) {
        fgmm_model_free(m);
        return rc;
    }
    *out = m;
    return FGMM_OK;
}

int fgmm_model_read(const char* path, FgmmModel** out) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(path);
    FILE* f;
    int64_t size;
    int rc = fgmm_open_input(path, &f, &size);
    if (rc) return rc;
    char what[4200]; /* a longer path is cut in messages */
    snprintf(what, sizeof what, "'%s'", path);
    rc = read_model(f, size, what, out);
    fclose(f);
    return rc;
}

int fgmm_model_fread(FILE* f, int64_t bytes, FgmmModel** out) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(f);
    return read_model(f, bytes, "the model", out);
}

int fgmm_stats_alloc(fgmm_stats* s, int k, int d, int s2_per_dim) {
    s->k = k;
    s->d = d;
    s->s2_per_dim = s2_per_dim;
    s->obj = 0;
    s->nk = calloc(fgmm_stats_len(s) + 1, sizeof(double));
    if (!s->nk) {
        s->s1 = s->s2 = NULL;
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory for %d x %d statistics", k, d);
    }
    s->s1 = s->nk + k;
    s->s2 = s->s1 + (size_t)k * d;
    return FGMM_OK;
}

size_t fgmm_stats_len(const fgmm_stats* s) {
    return (size_t)s->k + (size_t)s->k * s->d + (s->s2_per_dim ? (size_t)s->k * s->d : (size_t)s->k);
}

void fgmm_stats_zero(fgmm_stats* s) {
    memset(s->nk, 0, fgmm_stats_len(s) * sizeof(double));
    s->obj = 0;
}

void fgmm_stats_free(fgmm_stats* s) {
    free(s->nk);
    s->nk = s->s1 = s->s2 = NULL;
}

int fgmm_data_check_shape(const fgmm_data* x, const char* who) {
    if (!x->x) return fgmm_fail(FGMM_ERR_NULL, "%s: x is NULL", who);
    if (x->n < 1) return fgmm_fail(FGMM_ERR_ARG, "%s: n = %lld; need at least one row", who, (long long)x->n);
    if (x->d < 1 || x->d > FGMM_MAX_DIM) return fgmm_fail(FGMM_ERR_ARG, "%s: d = %d out of range", who, x->d);
    if (x->dtype != FGMM_U8 && x->dtype != FGMM_F32)
        return fgmm_fail(FGMM_ERR_ARG, "%s: unknown dtype %d", who, (int)x->dtype);
    const size_t elem = x->dtype == FGMM_U8 ? 1 : sizeof(float);
    if ((uint64_t)x->n > (uint64_t)PTRDIFF_MAX / elem / (uint64_t)x->d) /* n x d indexes every row */
        return fgmm_fail(FGMM_ERR_ARG, "%s: n = %lld rows of d = %d values overflow the address space", who,
                         (long long)x->n, x->d);
    return FGMM_OK;
}

int fgmm_check_data(fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, const char* caller) {
    fgmm_data v = {x, n, d, dtype};
    return fgmm_data_check(&v, caller ? caller : "fgmm_check_data");
}

int fgmm_data_check(const fgmm_data* x, const char* who) {
    int rc = fgmm_data_check_shape(x, who);
    if (rc || x->dtype == FGMM_U8) return rc;
    const float* v = x->x;
    size_t total = (size_t)x->n * x->d;
    size_t bad = (size_t)-1;
#pragma omp parallel for reduction(min : bad) if (total >= 65536) /* a search of one query: no thread start */
    for (size_t i = 0; i < total; i++)
        if (!isfinite(v[i]) && i < bad) bad = i;
    if (bad != (size_t)-1)
        return fgmm_fail(FGMM_ERR_DATA, "%s: row %zu has a non-finite value (%g) at dimension %zu", who, bad / x->d,
                         v[bad], bad % x->d);
    return FGMM_OK;
}

void fgmm_data_row(const fgmm_data* x, fgmm_idx_t i, float* out) {
    if (x->dtype == FGMM_F32) {
        memcpy(out, (const float*)x->x + (size_t)i * x->d, (size_t)x->d * sizeof(float));
    } else {
        const uint8_t* r = (const uint8_t*)x->x + (size_t)i * x->d;
        for (int j = 0; j < x->d; j++) out[j] = r[j];
    }
}
