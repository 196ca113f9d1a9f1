/* SPDX-License-Identifier: MIT */
/* model_calls.c: the entry points that apply a trained model (fgmm_estep, fgmm_loglik,
 * fgmm_assign_topm) on an engine of their own. */
#include <string.h>

#include "trainer.h"

/* Shared checks of the model-based entry points; makes the engine. */
static int begin_model_call(const char* who, const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype,
                            const void* x, fgmm_data* view, fgmm_engine** eng) {
    if (!m) return fgmm_fail(FGMM_ERR_NULL, "%s: model is NULL", who);
    *view = (fgmm_data){x, n, m->d, dtype};
    int rc = fgmm_data_check(view, who);
    if (rc) return rc;
    if (p && (rc = fgmm_check_params(p))) return rc;
    FgmmParams def;
    if (!p) fgmm_params_init(&def);
    return fgmm_engine_create(eng, p ? p : &def);
}

int fgmm_estep(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype, const void* x, double* nk,
               double* mu_acc, double* sig_acc, double* loglik) {
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

int fgmm_loglik(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype, const void* x, float* out) {
    FGMM_CHECK_NULL(out);
    fgmm_data v;
    fgmm_engine* e = NULL;
    int rc = begin_model_call("fgmm_loglik", m, p, n, dtype, x, &v, &e);
    if (rc) return rc;
    rc = e->ops->assign(e, &v, m, 0, NULL, NULL, out);
    fgmm_engine_destroy(e);
    return rc;
}

int fgmm_assign_topm(const FgmmModel* m, const FgmmParams* p, fgmm_idx_t n, FgmmDtype dtype, const void* x, int topm,
                     fgmm_idx_t* labels, float* resp) {
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
