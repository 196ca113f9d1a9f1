/* SPDX-License-Identifier: MIT */
// What the GPU tests share (tests/test_gpu_*.cpp): their params, float64 reference checks and
// the device probe. Every GPU test skips where no CUDA device exists.
#ifndef FGMM_TESTS_GPU_COMMON_H
#define FGMM_TESTS_GPU_COMMON_H
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "common.h"
#include "flashgmm_io.h"
#include "flashgmm_spill.h"
#include "internal.h"
#include "thread_comm.h"
#ifdef FGMM_WITH_CUDA
#include <dlfcn.h>

#include "gpu_engine.h"
#endif

namespace fgt {

// Bounds on ||gpu - ref|| / ||ref|| (Frobenius) for N_k, sum r x and sum r ||x - mu||^2.
constexpr double kFastTol = 2e-3;   // bf16 operands, fp32 accumulation
constexpr double kExactTol = 1e-5;  // 3x bf16 split: about fp32
constexpr double kBlasTol = 1e-4;   // fp32 SGEMM with the distance expansion

inline FgmmParams gpu_params(int k, FgmmPrecision prec) {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = k;
    p.backend = FGMM_BACKEND_GPU;
    p.precision = prec;
    return p;
}

struct Got {
    std::vector<double> nk, mu, sig;
    double ll = 0;
};
// ||a - b|| / ||b|| of two models' means, variances and weights (same k, d and covariance).
struct ModelErr {
    double mu, var, w;
};
inline ModelErr model_rel_err(const FgmmModel* a, const FgmmModel* b) {
    size_t k = fgmm_model_k(b), kd = k * fgmm_model_d(b);
    size_t nv = fgmm_model_covariance(b) == FGMM_COV_DIAGONAL ? kd : k;
    auto err = [](const float* x, const float* y, size_t n) {
        std::vector<double> xd(x, x + n), yd(y, y + n);
        return rel_err(xd.data(), yd.data(), n);
    };
    return {err(fgmm_model_means(a), fgmm_model_means(b), kd),
            err(fgmm_model_variances(a), fgmm_model_variances(b), nv),
            err(fgmm_model_weights(a), fgmm_model_weights(b), k)};
}

inline Got run_estep(const FgmmModel* m, const FgmmParams& p, int64_t n, FgmmDtype dt, const void* x) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    Got g;
    g.nk.resize(k);
    g.mu.resize((size_t)k * d);
    g.sig.resize(diag ? (size_t)k * d : k);
    EXPECT_EQ(fgmm_estep(m, &p, n, dt, x, g.nk.data(), g.mu.data(), g.sig.data(), &g.ll), 0) << fgmm_get_last_error();
    return g;
}
inline void expect_close(const Got& g, const RefStats& r, double tol, const char* what) {
    EXPECT_LT(rel_err(g.nk.data(), r.nk.data(), g.nk.size()), tol) << what << " N_k";
    EXPECT_LT(rel_err(g.mu.data(), r.mu_acc.data(), g.mu.size()), tol) << what << " mu_acc";
    EXPECT_LT(rel_err(g.sig.data(), r.sig_acc.data(), g.sig.size()), tol) << what << " sig_acc";
    EXPECT_NEAR(g.ll, r.loglik, std::max(tol, 1e-6) * std::fabs(r.loglik)) << what << " loglik";
}

#ifdef FGMM_WITH_CUDA
constexpr int kEngineWs = INT_MIN;  // engine_estep_raw: keep the engine's own ws option

// One E-step through a GPU engine forced onto a path (FGMM_GPU_PATH_*); mem_limit 0: free memory;
// onepass: 1 the one-pass kernel wherever it applies, 0 never, -1 the engine's default; ws: the
// warp-specialised passes (FGMM_GPU_WS_*); *ws_launches (if given): the chunks that ran one. sig is
// the engine's own s2 (diagonal: sum r x^2).
inline Got engine_estep_raw(const FgmmModel* m, int path, size_t mem_limit, int64_t n, FgmmDtype dt, const void* x,
                            int onepass = -1, int ws = kEngineWs, long long* ws_launches = nullptr) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    Got g;
    fgmm_engine* e = nullptr;
    EXPECT_EQ(fgmm_engine_gpu_create(&e, 0, mem_limit, FGMM_PREC_FAST), 0) << fgmm_get_last_error();
    if (!e) return g;
    fgmm_engine_gpu_set_path(e, path, 0);
    fgmm_engine_gpu_set_onepass(e, onepass);
    if (ws != kEngineWs) EXPECT_EQ(fgmm_engine_gpu_set_ws(e, ws), 0) << fgmm_get_last_error();
    fgmm_stats st;
    fgmm_stats_alloc(&st, k, d, diag);
    fgmm_data v = {x, n, d, dt};
    EXPECT_EQ(e->ops->estep(e, &v, m, &st), 0) << fgmm_get_last_error();
    g.nk.assign(st.nk, st.nk + k);
    g.mu.assign(st.s1, st.s1 + (size_t)k * d);
    g.sig.assign(st.s2, st.s2 + (diag ? (size_t)k * d : k));
    g.ll = st.obj;
    if (ws_launches) *ws_launches = fgmm_engine_gpu_ws_launches(e);
    fgmm_stats_free(&st);
    fgmm_engine_destroy(e);
    return g;
}

// engine_estep_raw with the reference's s2: diagonal sig is sum r (x - mu)^2.
inline Got engine_estep(const FgmmModel* m, int path, size_t mem_limit, int64_t n, FgmmDtype dt, const void* x,
                        int onepass = -1) {
    Got g = engine_estep_raw(m, path, mem_limit, n, dt, x, onepass);
    if (fgmm_model_covariance(m) == FGMM_COV_DIAGONAL) {  // the engine's diagonal s2 is sum r x^2
        const int d = fgmm_model_d(m);
        const float* mu = fgmm_model_means(m);
        for (size_t i = 0; i < g.sig.size(); i++)
            g.sig[i] += (double)mu[i] * ((double)mu[i] * g.nk[i / d] - 2.0 * g.mu[i]);
    }
    return g;
}
#endif

}  // namespace fgt

#endif  // FGMM_TESTS_GPU_COMMON_H
