/* SPDX-License-Identifier: MIT */
// common.h: float64 reference E-step, data generators and test data location shared by the tests.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "flashgmm.h"
#include "flashgmm_io.h"

namespace fgt {

// The folder holding datasets/embedded/, found at run time: $FGMM_SOURCE_DIR (ctest sets it), else
// the nearest ancestor of the test binary's folder that has one (the build folder gets a copy).
inline const std::string& source_dir() {
    static const std::string dir = [] {
        const char* env = std::getenv("FGMM_SOURCE_DIR");
        if (env && *env) return std::string(env);
        char exe[4096];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        std::string d = len > 0 ? std::string(exe, (size_t)len) : std::string();
        for (size_t cut; (cut = d.rfind('/')) != std::string::npos && cut > 0;) {
            d.resize(cut);
            if (access((d + "/datasets/embedded").c_str(), R_OK) == 0) return d;
        }
        return std::string(".");
    }();
    return dir;
}

// Files only the source tree holds (fuzz/corpus/, tests/data/): $FGMM_SOURCE_DIR's, else the tree
// this binary was built from (FGMM_SOURCE_TREE), so that a copied or moved binary finds them.
inline std::string source_tree() {
    const char* env = std::getenv("FGMM_SOURCE_DIR");
    return env && *env ? env : FGMM_SOURCE_TREE;
}
// A folder of the fuzzers' corpora: fuzz/corpus/KIND.
inline std::string corpus(const char* kind) { return source_tree() + "/fuzz/corpus/" + kind; }
// A file of tests/data/.
inline std::string test_data(const char* name) { return source_tree() + "/tests/data/" + name; }

// Path of a file of datasets/embedded/.
inline std::string embedded(const char* name) { return source_dir() + "/datasets/embedded/" + name; }

// The uint8 dataset `name` of datasets/embedded/FILE as floats (*n rows of *d); empty if unreadable.
inline std::vector<float> embedded_u8(const char* file, const char* name, int64_t* n, int* d) {
    FgmmVecs v;
    *n = 0, *d = 0;
    if (fgmm_vecs_read(embedded(file).c_str(), name, 0, &v)) return {};
    std::vector<float> out;
    if (v.dtype == FGMM_U8) out.assign((const uint8_t*)v.data, (const uint8_t*)v.data + (size_t)v.n * v.d);
    if (!out.empty()) *n = v.n, *d = v.d;
    fgmm_vecs_free(&v);
    return out;
}

#define REQUIRE_GPU() \
    if (!fgmm_gpu_available()) GTEST_SKIP() << "no CUDA device"

#ifdef FGMM_CLI
// Runs the command-line tool (FGMM_CLI) with args; returns its exit status, output and errors in *output.
inline int run_cli(const std::string& args, std::string* output) {
    std::string cmd = std::string(FGMM_CLI) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    output->clear();
    size_t got;
    while (p && (got = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, got);
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
#endif

struct RefStats {
    std::vector<double> nk, mu_acc, sig_acc, logz;
    double loglik = 0;
};

// Direct float64 evaluation, no expansion of ||x - mu||^2: the ground truth.
template <class T>
inline RefStats ref_estep(const FgmmModel* m, int64_t n, const T* x) {
    int k = fgmm_model_k(m), d = fgmm_model_d(m);
    bool diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    const float *mu = fgmm_model_means(m), *var = fgmm_model_variances(m), *w = fgmm_model_weights(m);
    RefStats s;
    s.nk.assign(k, 0);
    s.mu_acc.assign((size_t)k * d, 0);
    s.sig_acc.assign(diag ? (size_t)k * d : k, 0);
    s.logz.assign(n, 0);
    std::vector<double> lp(k), q((size_t)k * (diag ? d : 1));
    const double l2pi = std::log(2 * M_PI);
    for (int64_t i = 0; i < n; i++) {
        const T* xi = x + (size_t)i * d;
        double mx = -INFINITY;
        for (int j = 0; j < k; j++) {
            double acc = std::log((double)w[j]) - 0.5 * d * l2pi;
            for (int t = 0; t < d; t++) {
                double df = (double)xi[t] - mu[(size_t)j * d + t];
                double v = diag ? var[(size_t)j * d + t] : var[j];
                acc -= 0.5 * df * df / v + (diag ? 0.5 * std::log(v) : 0);
                if (diag) q[(size_t)j * d + t] = df * df;
            }
            if (!diag) {
                double dd = 0;
                for (int t = 0; t < d; t++) {
                    double df = (double)xi[t] - mu[(size_t)j * d + t];
                    dd += df * df;
                }
                q[j] = dd;
                acc -= 0.5 * d * std::log((double)var[j]);
            }
            lp[j] = acc;
            mx = std::max(mx, acc);
        }
        double se = 0;
        for (int j = 0; j < k; j++) se += std::exp(lp[j] - mx);
        double lz = mx + std::log(se);
        s.logz[i] = lz;
        s.loglik += lz;
        for (int j = 0; j < k; j++) {
            double r = std::exp(lp[j] - lz);
            s.nk[j] += r;
            for (int t = 0; t < d; t++) s.mu_acc[(size_t)j * d + t] += r * xi[t];
            if (diag)
                for (int t = 0; t < d; t++) s.sig_acc[(size_t)j * d + t] += r * q[(size_t)j * d + t];
            else s.sig_acc[j] += r * q[j];
        }
    }
    return s;
}

// ||a - b|| / ||b||
inline double rel_err(const double* a, const double* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

// n points from k planted isotropic clusters in d dims: centers ~ N(0, spread^2), points sigma=1.
inline std::vector<float> planted(int64_t n, int d, int k, double spread, uint64_t seed,
                                  std::vector<float>* centers = nullptr, std::vector<int>* label = nullptr) {
    std::mt19937_64 g(seed);
    std::normal_distribution<double> z(0, 1);
    std::vector<float> c((size_t)k * d), x((size_t)n * d);
    for (auto& v : c) v = (float)(spread * z(g));
    if (label) label->resize(n);
    for (int64_t i = 0; i < n; i++) {
        int j = (int)(i % k);
        if (label) (*label)[i] = j;
        for (int t = 0; t < d; t++) x[(size_t)i * d + t] = c[(size_t)j * d + t] + (float)z(g);
    }
    if (centers) *centers = c;
    return x;
}

// n rows of d ones but `distinct` of them (every stride-th from the last), each its own point: a small
// k-means++ sample sees about one distinct point. few_distinct_params: k = 8 on a 512-row sample.
inline std::vector<float> mostly_copies(int64_t n, int d, int distinct, int64_t stride) {
    std::vector<float> x((size_t)n * d, 1.0f);
    for (int i = 0; i < distinct; i++)
        for (int j = 0; j < d; j++) x[(size_t)(n - 1 - i * stride) * d + j] = (float)(i + 2) * (j + 1);
    return x;
}
inline FgmmParams few_distinct_params() {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = 8;
    p.max_init_points = 512;
    p.backend = FGMM_BACKEND_CPU;
    p.niter = 3;
    p.kmeans_iter = 2;
    return p;
}

// A random model with means drawn from the data's rows (plus noise) and variances near the data's.
inline FgmmModel* model_from_rows(const float* x, int64_t n, int d, int k, FgmmCovariance cov, double var,
                                  uint64_t seed) {
    std::mt19937_64 g(seed);
    std::uniform_real_distribution<double> u(0.5, 1.5);
    std::vector<float> mu((size_t)k * d), v(cov == FGMM_COV_DIAGONAL ? (size_t)k * d : k), w(k);
    for (int j = 0; j < k; j++) {  // a random row plus noise of the variance's scale
        int64_t row = (int64_t)(g() % n);
        for (int t = 0; t < d; t++)
            mu[(size_t)j * d + t] = x[(size_t)row * d + t] + (float)((u(g) - 1.0) * std::sqrt(var));
    }
    for (auto& e : v) e = (float)(var * u(g));
    for (auto& e : w) e = (float)u(g);
    FgmmModel* m = nullptr;
    fgmm_model_new(&m, k, d, cov, mu.data(), v.data(), w.data());
    return m;
}

inline FgmmParams cpu_params(int k) {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = k;
    p.backend = FGMM_BACKEND_CPU;
    return p;
}

}  // namespace fgt
