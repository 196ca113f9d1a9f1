/* ivf.c: GMM training, multi-assignment and deduplicating search for FAISS IVF indexes,
 * over FAISS's C API (plus faiss_bridge for pre-assigned adds). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faiss_bridge.h"
#include "flashgmm_ivf.h"
#include "internal.h"

/* Vectors per add/search batch: bounds the temporary copies (batch x max_assign x d floats). */
#define IVF_BATCH 16384

struct FgmmIvf {
    FaissIndex* index;
    FaissIndexIVF* ivf;
    int owns_index;
    FgmmIvfParams p;
    FgmmModel* model;
    int d;
    int nlist;
    int64_t n_vectors; /* distinct vectors added */
    int64_t n_entries; /* (vector, list) entries added */
    int64_t next_id;
};

void fgmm_ivf_params_init(FgmmIvfParams* p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    fgmm_params_init(&p->gmm);
    p->rule = FGMM_ASSIGN_TAU;
    p->primary = FGMM_PRIMARY_NEAREST;
    p->tau = 0;
    p->max_assign = 4;
}

static int faiss_failed(const char* what) {
    const char* m = faiss_get_last_error();
    return fgmm_fail(FGMM_ERR_FAISS, "%s: %s", what, m ? m : "unknown FAISS error");
}

static int check_params(const FgmmIvfParams* p) {
    if (p->rule < FGMM_ASSIGN_TAU || p->rule > FGMM_ASSIGN_TOPM)
        return fgmm_fail(FGMM_ERR_ARG, "ivf params: unknown rule %d", (int)p->rule);
    if (p->primary != FGMM_PRIMARY_NEAREST && p->primary != FGMM_PRIMARY_RESPONSIBILITY)
        return fgmm_fail(FGMM_ERR_ARG, "ivf params: unknown primary %d", (int)p->primary);
    if (p->max_assign < 1 || p->max_assign > 64)
        return fgmm_fail(FGMM_ERR_ARG, "ivf params: max_assign = %d out of range [1, 64]", p->max_assign);
    if (!(p->tau <= 1.0) || isnan(p->tau)) return fgmm_fail(FGMM_ERR_ARG, "ivf params: tau = %g > 1", p->tau);
    return FGMM_OK;
}

int fgmm_ivf_wrap(FaissIndex* index, const FgmmIvfParams* params, FgmmIvf** out) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(index);
    FgmmIvfParams def;
    if (!params) {
        fgmm_ivf_params_init(&def);
        params = &def;
    }
    int rc = check_params(params);
    if (rc) return rc;
    FaissIndexIVF* ivf = faiss_IndexIVF_cast(index);
    if (!ivf) return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_wrap: the index is not an IVF index (IndexIVF*)");
    if (faiss_Index_metric_type(index) != METRIC_L2)
        return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_wrap: the index must use METRIC_L2 (a GMM is Euclidean)");
    FgmmIvf* h = calloc(1, sizeof *h);
    if (!h) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    h->index = index;
    h->ivf = ivf;
    h->p = *params;
    h->d = faiss_Index_d(index);
    h->nlist = (int)faiss_IndexIVF_nlist(ivf);
    h->n_entries = faiss_Index_ntotal(index);
    if (h->n_entries > 0) {
        char err[256];
        int64_t mx;
        if (fgmm_faiss_max_id(index, &mx, err, sizeof err)) {
            free(h);
            return fgmm_fail(FGMM_ERR_FAISS, "fgmm_ivf_wrap: %s", err);
        }
        h->next_id = mx + 1;
        h->n_vectors = h->next_id; /* assumes ids 0..max, as FAISS's own add gives */
    }
    *out = h;
    return FGMM_OK;
}

void fgmm_ivf_free(FgmmIvf* h) {
    if (!h) return;
    fgmm_model_free(h->model);
    if (h->owns_index) faiss_Index_free(h->index);
    free(h);
}

FaissIndex* fgmm_ivf_index(const FgmmIvf* h) { return h ? h->index : NULL; }
const FgmmModel* fgmm_ivf_model(const FgmmIvf* h) { return h ? h->model : NULL; }
double fgmm_ivf_inflation(const FgmmIvf* h) {
    return h && h->n_vectors ? (double)h->n_entries / (double)h->n_vectors : 1.0;
}

static int install(FgmmIvf* h, FgmmModel* m, idx_t n, const float* x);

int fgmm_ivf_train(FgmmIvf* h, idx_t n, const float* x, FgmmTrainInfo* info) {
    FGMM_CHECK_NULL(h);
    FGMM_CHECK_NULL(x);
    if (faiss_Index_is_trained(h->index))
        return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_train: the index is already trained");
    if (n < h->nlist)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_train: n = %lld < nlist = %d", (long long)n, h->nlist);
    FgmmParams gp = h->p.gmm;
    gp.k = h->nlist;
    FgmmModel* m = NULL;
    int rc = fgmm_train(&gp, n, h->d, FGMM_F32, x, &m, info);
    if (rc) return rc;
    rc = install(h, m, n, x);
    if (rc) fgmm_model_free(m);
    return rc;
}

/* Takes ownership of m on success. The quantizer gets the means; IndexIVF::train then sees a
 * trained quantizer with nlist entries, skips k-means, and trains what follows it (IVF-PQ:
 * the PQ on residuals to the nearest mean). */
static int install(FgmmIvf* h, FgmmModel* m, idx_t n, const float* x) {
    FaissIndex* q = faiss_IndexIVF_quantizer(h->ivf);
    if (faiss_Index_reset(q) || faiss_Index_add(q, h->nlist, fgmm_model_means(m)) ||
        faiss_Index_train(h->index, n, x))
        return faiss_failed("fgmm_ivf_train");
    fgmm_model_free(h->model);
    h->model = m;
    return FGMM_OK;
}

int fgmm_ivf_set_gmm(FgmmIvf* h, const FgmmModel* gmm, idx_t n, const float* x) {
    FGMM_CHECK_NULL(h);
    FGMM_CHECK_NULL(gmm);
    FGMM_CHECK_NULL(x);
    if (faiss_Index_is_trained(h->index))
        return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_set_gmm: the index is already trained");
    if (gmm->k != h->nlist || gmm->d != h->d)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_set_gmm: a %d x %d GMM for an index with nlist = %d, d = %d", gmm->k,
                         gmm->d, h->nlist, h->d);
    if (n < 1) return fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_set_gmm: n = %lld", (long long)n);
    FgmmModel* m = NULL;
    int rc = fgmm_model_new(&m, gmm->k, gmm->d, gmm->cov, gmm->mu, gmm->var, gmm->w);
    if (!rc && (rc = install(h, m, n, x))) fgmm_model_free(m);
    return rc;
}

/* Lists for a batch of b vectors: up to max_assign per vector in lists[i*ma..], -1 padded. */
static int choose_lists(FgmmIvf* h, idx_t b, const float* x, idx_t* lists) {
    int ma = h->p.rule == FGMM_ASSIGN_HARD ? 1 : h->p.max_assign;
    int need_model = h->p.rule == FGMM_ASSIGN_TAU || h->p.primary == FGMM_PRIMARY_RESPONSIBILITY;
    if (need_model && !h->model)
        return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_add: this rule needs the GMM, and the index has none "
                                         "(train with fgmm_ivf_train, or read with its .gmm file)");
    if (ma > h->nlist) ma = h->nlist;
    int rc = FGMM_OK;
    int nq = h->p.rule == FGMM_ASSIGN_TOPM ? ma : 1;
    float* qd = malloc((size_t)b * nq * sizeof(float));
    idx_t* qi = malloc((size_t)b * nq * sizeof(idx_t));
    idx_t* rl = NULL;
    float* rr = NULL;
    if (need_model) {
        rl = malloc((size_t)b * ma * sizeof(idx_t));
        rr = malloc((size_t)b * ma * sizeof(float));
    }
    if (!qd || !qi || (need_model && (!rl || !rr))) {
        rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, x, nq, qd, qi)) {
        rc = faiss_failed("fgmm_ivf_add: quantizer search");
        goto done;
    }
    if (need_model && (rc = fgmm_assign_topm(h->model, &h->p.gmm, b, FGMM_F32, x, ma, rl, rr))) goto done;
    double tau = h->p.tau > 0 ? h->p.tau : 1.0 / h->nlist;
    for (idx_t i = 0; i < b; i++) {
        idx_t* out = lists + (size_t)i * h->p.max_assign;
        for (int t = 0; t < h->p.max_assign; t++) out[t] = -1;
        if (h->p.rule == FGMM_ASSIGN_TOPM) {
            for (int t = 0; t < ma; t++) out[t] = qi[(size_t)i * nq + t];
            continue;
        }
        out[0] = h->p.primary == FGMM_PRIMARY_NEAREST ? qi[i] : rl[(size_t)i * ma];
        if (h->p.rule == FGMM_ASSIGN_HARD) continue;
        int cnt = 1;
        for (int t = 0; t < ma && cnt < ma; t++) { /* rl is sorted by responsibility */
            idx_t l = rl[(size_t)i * ma + t];
            if (l >= 0 && l != out[0] && rr[(size_t)i * ma + t] > tau) out[cnt++] = l;
        }
    }
done:
    free(qd); free(qi); free(rl); free(rr);
    return rc;
}

int fgmm_ivf_add(FgmmIvf* h, idx_t n, const float* x, const idx_t* ids, idx_t* lists_added) {
    FGMM_CHECK_NULL(h);
    if (lists_added) *lists_added = 0;
    if (n == 0) return FGMM_OK;
    FGMM_CHECK_NULL(x);
    if (n < 0) return fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_add: n = %lld", (long long)n);
    if (!faiss_Index_is_trained(h->index)) return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_add: the index is not trained");
    fgmm_data v = {x, n, h->d, FGMM_F32};
    int rc = fgmm_data_check(&v, "fgmm_ivf_add");
    if (rc) return rc;
    int ma = h->p.max_assign, d = h->d;
    idx_t bmax = n < IVF_BATCH ? n : IVF_BATCH;
    idx_t* lists = malloc((size_t)bmax * ma * sizeof(idx_t));
    float* xr = malloc((size_t)bmax * ma * d * sizeof(float));
    idx_t* ir = malloc((size_t)bmax * ma * sizeof(idx_t));
    idx_t* lr = malloc((size_t)bmax * ma * sizeof(idx_t));
    if (!lists || !xr || !ir || !lr) {
        rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
        goto done;
    }
    idx_t total = 0;
    for (idx_t i0 = 0; i0 < n; i0 += bmax) {
        idx_t b = n - i0 < bmax ? n - i0 : bmax;
        if ((rc = choose_lists(h, b, x + (size_t)i0 * d, lists))) goto done;
        idx_t m = 0; /* entries in this batch, grouped by rank so each vector's primary list comes first */
        for (int t = 0; t < ma; t++)
            for (idx_t i = 0; i < b; i++) {
                idx_t l = lists[(size_t)i * ma + t];
                if (l < 0) continue;
                memcpy(xr + (size_t)m * d, x + (size_t)(i0 + i) * d, (size_t)d * sizeof(float));
                ir[m] = ids ? ids[i0 + i] : h->next_id + i0 + i;
                lr[m] = l;
                m++;
            }
        char err[512];
        if (fgmm_faiss_add_preassigned(h->index, m, xr, ir, lr, err, sizeof err)) {
            rc = fgmm_fail(FGMM_ERR_FAISS, "fgmm_ivf_add: %s", err);
            goto done;
        }
        total += m;
    }
    h->n_entries += total;
    h->n_vectors += n;
    if (ids) {
        for (idx_t i = 0; i < n; i++)
            if (ids[i] + 1 > h->next_id) h->next_id = ids[i] + 1;
    } else {
        h->next_id += n;
    }
    if (lists_added) *lists_added = total;
done:
    free(lists); free(xr); free(ir); free(lr);
    return rc;
}

int fgmm_ivf_search(const FgmmIvf* h, idx_t nq, const float* q, idx_t k, int nprobe, float* distances,
                    idx_t* labels, int64_t* dco) {
    FGMM_CHECK_NULL(h);
    FGMM_CHECK_NULL(q);
    FGMM_CHECK_NULL(distances);
    FGMM_CHECK_NULL(labels);
    if (nq < 0 || k < 1 || nprobe < 1)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_search: need nq >= 0, k >= 1, nprobe >= 1 (got %lld, %lld, %d)",
                         (long long)nq, (long long)k, nprobe);
    if (!faiss_Index_is_trained(h->index)) return fgmm_fail(FGMM_ERR_STATE, "fgmm_ivf_search: the index is not trained");
    if (nprobe > h->nlist) nprobe = h->nlist;
    /* each id is stored in at most `spill` lists, so the first k*spill hits hold k distinct ids */
    int spill = h->p.rule == FGMM_ASSIGN_HARD ? 1 : h->p.max_assign;
    idx_t ki = k * spill;
    idx_t bmax = nq < IVF_BATCH / 4 ? nq : IVF_BATCH / 4;
    float* dd = malloc((size_t)(bmax ? bmax : 1) * ki * sizeof(float));
    idx_t* ii = malloc((size_t)(bmax ? bmax : 1) * ki * sizeof(idx_t));
    float* pd = dco ? malloc((size_t)(bmax ? bmax : 1) * nprobe * sizeof(float)) : NULL;
    idx_t* pi = dco ? malloc((size_t)(bmax ? bmax : 1) * nprobe * sizeof(idx_t)) : NULL;
    int64_t* sizes = dco ? malloc((size_t)h->nlist * sizeof(int64_t)) : NULL;
    int rc = FGMM_OK;
    if (!dd || !ii || (dco && (!pd || !pi || !sizes))) {
        rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
        goto done;
    }
    for (int l = 0; dco && l < h->nlist; l++) sizes[l] = (int64_t)faiss_IndexIVF_get_list_size(h->ivf, (size_t)l);
    faiss_IndexIVF_set_nprobe(h->ivf, (size_t)nprobe);
    for (idx_t i0 = 0; i0 < nq; i0 += bmax) {
        idx_t b = nq - i0 < bmax ? nq - i0 : bmax;
        const float* qb = q + (size_t)i0 * h->d;
        if (faiss_Index_search(h->index, b, qb, ki, dd, ii)) {
            rc = faiss_failed("fgmm_ivf_search");
            goto done;
        }
        for (idx_t i = 0; i < b; i++) { /* keep the nearest copy of each id, in FAISS's order */
            const idx_t* in = ii + (size_t)i * ki;
            idx_t* lo = labels + (size_t)(i0 + i) * k;
            float* dout = distances + (size_t)(i0 + i) * k;
            idx_t got = 0;
            for (idx_t t = 0; t < ki && got < k; t++) {
                if (in[t] < 0) break;
                int dup = 0;
                for (idx_t s = 0; s < got && !dup; s++) dup = lo[s] == in[t];
                if (dup) continue;
                lo[got] = in[t];
                dout[got] = dd[(size_t)i * ki + t];
                got++;
            }
            for (; got < k; got++) lo[got] = -1, dout[got] = INFINITY;
        }
        if (dco) {
            if (faiss_Index_search(faiss_IndexIVF_quantizer(h->ivf), b, qb, nprobe, pd, pi)) {
                rc = faiss_failed("fgmm_ivf_search: quantizer");
                goto done;
            }
            for (idx_t i = 0; i < b; i++) {
                int64_t c = h->nlist;
                for (int t = 0; t < nprobe; t++)
                    if (pi[(size_t)i * nprobe + t] >= 0) c += sizes[pi[(size_t)i * nprobe + t]];
                dco[i0 + i] = c;
            }
        }
    }
done:
    free(dd); free(ii); free(pd); free(pi); free(sizes);
    return rc;
}

double fgmm_recall(idx_t nq, int k, const idx_t* labels, int gt_k, const int32_t* gt) {
    if (nq < 1 || k < 1 || gt_k < k || !labels || !gt) return -1;
    double hit = 0;
    for (idx_t i = 0; i < nq; i++)
        for (int a = 0; a < k; a++) {
            idx_t l = labels[(size_t)i * k + a];
            for (int b = 0; b < k && l >= 0; b++) hit += l == gt[(size_t)i * gt_k + b];
        }
    return hit / ((double)nq * k);
}

static char* sidecar(const char* path) {
    size_t n = strlen(path);
    char* s = malloc(n + 5);
    if (s) memcpy(s, path, n), memcpy(s + n, ".gmm", 5);
    return s;
}

int fgmm_ivf_write(const FgmmIvf* h, const char* path) {
    FGMM_CHECK_NULL(h);
    FGMM_CHECK_NULL(path);
    if (faiss_write_index_fname(h->index, path)) return faiss_failed("fgmm_ivf_write");
    if (!h->model) return FGMM_OK;
    char* s = sidecar(path);
    if (!s) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    int rc = fgmm_model_write(h->model, s);
    free(s);
    return rc;
}

int fgmm_ivf_read(const char* path, const FgmmIvfParams* params, FgmmIvf** out) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(path);
    FaissIndex* index = NULL;
    if (faiss_read_index_fname(path, 0, &index)) return faiss_failed("fgmm_ivf_read");
    FgmmIvf* h = NULL;
    int rc = fgmm_ivf_wrap(index, params, &h);
    if (rc) {
        faiss_Index_free(index);
        return rc;
    }
    h->owns_index = 1;
    char* s = sidecar(path);
    if (!s) {
        fgmm_ivf_free(h);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    FILE* f = fopen(s, "rb");
    if (f) {
        fclose(f);
        if ((rc = fgmm_model_read(s, &h->model)) == 0 &&
            (fgmm_model_k(h->model) != h->nlist || fgmm_model_d(h->model) != h->d))
            rc = fgmm_fail(FGMM_ERR_ARG, "fgmm_ivf_read: '%s' holds a %d x %d GMM, the index has nlist = %d, d = %d", s,
                           fgmm_model_k(h->model), fgmm_model_d(h->model), h->nlist, h->d);
    }
    free(s);
    if (rc) {
        fgmm_ivf_free(h);
        return rc;
    }
    *out = h;
    return FGMM_OK;
}
