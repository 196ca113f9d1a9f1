/* SPDX-License-Identifier: MIT */
// Query-adaptive probing (fgmm_ivf_search_ex, plugin/ivf_probe.c) and its calibration, on the embedded
// sift10K set: an IVF32,Flat index of the first 8,000 base vectors (trained on all 9,000); the last
// 1,000 are never added: half calibrate, half check the calibration.
#include <gtest/gtest.h>
#include <omp.h>

#include <faiss/c_api/index_factory_c.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "flashgmm_ivf.h"
#include "ivf_common.h"

namespace {

constexpr int64_t kAdded = 8000, kHalf = 500;
constexpr int kK = 10;

// sift10K's base: the first kAdded indexed, the next kHalf calibrate, the last kHalf check.
const fgt::Sift& data() {
    static const fgt::Sift& s = []() -> const fgt::Sift& {
        const fgt::Sift& r = fgt::sift();
        EXPECT_EQ(r.nb, kAdded + 2 * kHalf);
        return r;
    }();
    return s;
}
const float* cal_queries() { return data().base.data() + (size_t)kAdded * data().d; }
const float* check_queries() { return data().base.data() + (size_t)(kAdded + kHalf) * data().d; }

void build(fgt::Built& x, const char* spec) {
    const fgt::Sift& s = data();
    ASSERT_NO_FATAL_FAILURE(fgt::train_on(x, s.d, spec, fgt::params(FGMM_ASSIGN_SOAR, 5, 5), s.nb, s.base.data()));
    ASSERT_EQ(fgmm_ivf_add(x.ivf, kAdded, s.base.data(), nullptr, nullptr), 0) << fgmm_get_last_error();
}

// The default build (SOAR spill), built once.
const FgmmIvf* shared() {
    static fgt::Built x;
    if (!x.ivf) build(x, "IVF32,Flat");
    return x.ivf;
}

struct Result {
    std::vector<float> d;
    std::vector<idx_t> l;
    std::vector<int64_t> dco;
    int rc = 0;
};

Result run(const FgmmIvf* h, int64_t nq, const float* q, const FgmmIvfSearchParams& p, int64_t k = kK) {
    Result r;
    r.d.assign((size_t)nq * k, -7.0f);
    r.l.assign((size_t)nq * k, -7);
    r.dco.assign((size_t)nq, -7);
    r.rc = fgmm_ivf_search_ex(h, nq, q, k, &p, r.d.data(), r.l.data(), r.dco.data());
    return r;
}

Result plain(const FgmmIvf* h, int64_t nq, const float* q, int nprobe, int64_t k = kK) {
    Result r;
    r.d.assign((size_t)nq * k, -7.0f);
    r.l.assign((size_t)nq * k, -7);
    r.dco.assign((size_t)nq, -7);
    r.rc = fgmm_ivf_search(h, nq, q, k, nprobe, r.d.data(), r.l.data(), r.dco.data());
    return r;
}

FgmmIvfSearchParams params(FgmmProbeRule rule, int nprobe, double threshold, int min_probe = 2) {
    FgmmIvfSearchParams p;
    fgmm_ivf_search_params_init(&p);
    p.rule = rule, p.nprobe = nprobe, p.threshold = threshold, p.min_probe = min_probe;
    return p;
}

// recall@k of r against the exact k nearest (every list searched)
double recall(const FgmmIvf* h, int64_t nq, const float* q, const Result& r) {
    Result t = plain(h, nq, q, 32);
    EXPECT_EQ(t.rc, 0);
    double hit = 0;
    for (int64_t i = 0; i < nq; i++)
        for (int a = 0; a < kK; a++)
            for (int b = 0; b < kK; b++) hit += r.l[i * kK + a] >= 0 && r.l[i * kK + a] == t.l[i * kK + b];
    return hit / (nq * kK);
}

TEST(IvfProbe, DefaultsAndBadParamsRefused) {
    FgmmIvfSearchParams p;
    std::memset(&p, 0x5a, sizeof p);
    fgmm_ivf_search_params_init(&p);
    EXPECT_EQ(p.nprobe, 1);
    EXPECT_EQ(p.min_probe, 2);
    EXPECT_EQ(p.rule, FGMM_PROBE_FIXED);
    EXPECT_EQ(p.threshold, 0.0);
    const FgmmIvf* h = shared();
    const float* q = cal_queries();
    float d[kK];
    idx_t l[kK];
    EXPECT_EQ(fgmm_ivf_search_ex(h, 1, q, kK, nullptr, d, l, nullptr), FGMM_ERR_NULL);
    const FgmmIvfSearchParams bad[] = {
        params((FgmmProbeRule)3, 4, 0),  params((FgmmProbeRule)-1, 4, 0), params(FGMM_PROBE_KTH, 0, 0),
        params(FGMM_PROBE_KTH, 4, 0, 0), params(FGMM_PROBE_KTH, 4, NAN),  params(FGMM_PROBE_EPS, 4, -0.1),
        params(FGMM_PROBE_FIXED, -1, 0),
    };
    for (const auto& b : bad) {
        EXPECT_EQ(fgmm_ivf_search_ex(h, 1, q, kK, &b, d, l, nullptr), FGMM_ERR_ARG) << b.rule << " " << b.nprobe;
        FgmmIvfSearchParams c = b;
        EXPECT_EQ(fgmm_ivf_calibrate(h, 10, q, kK, 0.9, &c, nullptr), FGMM_ERR_ARG);
        EXPECT_EQ(std::memcmp(&c, &b, sizeof c), 0);  // refused: params untouched
    }
    FgmmIvfSearchParams k = params(FGMM_PROBE_KTH, 4, 0);
    EXPECT_EQ(fgmm_ivf_search_ex(h, 1, q, 0, &k, d, l, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search_ex(h, -1, q, kK, &k, d, l, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_search_ex(h, 1, nullptr, kK, &k, d, l, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_search_ex(nullptr, 1, q, kK, &k, d, l, nullptr), FGMM_ERR_NULL);
    std::vector<float> nan_q(q, q + data().d);
    nan_q[5] = NAN;
    EXPECT_EQ(fgmm_ivf_search_ex(h, 1, nan_q.data(), kK, &k, d, l, nullptr), FGMM_ERR_DATA);
    for (double t : {0.0, -0.5, 1.5, (double)NAN}) {
        FgmmIvfSearchParams c = k;
        EXPECT_EQ(fgmm_ivf_calibrate(h, 10, q, kK, t, &c, nullptr), FGMM_ERR_ARG) << t;
    }
    EXPECT_EQ(fgmm_ivf_calibrate(h, 0, q, kK, 0.9, &k, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_calibrate(h, 10, q, 0, 0.9, &k, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_ivf_calibrate(h, 10, nullptr, kK, 0.9, &k, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_ivf_calibrate(h, 10, q, kK, 0.9, nullptr, nullptr), FGMM_ERR_NULL);
    // a target the nprobe lists cannot reach
    FgmmIvfSearchParams one = params(FGMM_PROBE_KTH, 1, 0, 1);
    EXPECT_EQ(fgmm_ivf_calibrate(h, kHalf, q, kK, 1.0, &one, nullptr), FGMM_ERR_ARG);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("raise nprobe"), std::string::npos) << fgmm_get_last_error();
    EXPECT_EQ(one.threshold, 0.0);
}

TEST(IvfProbe, AdaptiveRulesNeedIvfFlat) {
    fgt::Built pq;
    build(pq, "IVF32,PQ16x4");
    FgmmIvfSearchParams p = params(FGMM_PROBE_KTH, 4, 1);
    float d[kK];
    idx_t l[kK];
    EXPECT_EQ(fgmm_ivf_search_ex(pq.ivf, 1, cal_queries(), kK, &p, d, l, nullptr), FGMM_ERR_STATE);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("IndexIVFFlat"), std::string::npos) << fgmm_get_last_error();
    p.rule = FGMM_PROBE_FIXED;  // FIXED is fgmm_ivf_search: any index
    EXPECT_EQ(fgmm_ivf_search_ex(pq.ivf, 1, cal_queries(), kK, &p, d, l, nullptr), 0) << fgmm_get_last_error();
}

TEST(IvfProbe, RuleOffIsFixedNprobe) {
    const FgmmIvf* h = shared();
    const float* q = cal_queries();
    for (int np : {1, 3, 8, 40}) {
        Result f = plain(h, kHalf, q, np);
        ASSERT_EQ(f.rc, 0);
        // FIXED: fgmm_ivf_search itself; KTH at +inf and EPS at a huge eps keep all nprobe lists
        for (const auto& p : {params(FGMM_PROBE_FIXED, np, 0), params(FGMM_PROBE_KTH, np, INFINITY),
                              params(FGMM_PROBE_EPS, np, 1e30)}) {
            Result a = run(h, kHalf, q, p);
            ASSERT_EQ(a.rc, 0) << fgmm_get_last_error();
            EXPECT_EQ(a.l, f.l) << p.rule << " nprobe " << np;
            EXPECT_EQ(a.d, f.d) << p.rule << " nprobe " << np;
            EXPECT_EQ(a.dco, f.dco) << p.rule << " nprobe " << np;
        }
        // KTH at -inf and EPS at 0 with min_probe m: the first m lists (EPS: and exact ties of the nearest)
        for (int m : {1, 2}) {
            Result g = plain(h, kHalf, q, std::min(m, np));
            Result a = run(h, kHalf, q, params(FGMM_PROBE_KTH, np, -INFINITY, m));
            ASSERT_EQ(a.rc, 0) << fgmm_get_last_error();
            EXPECT_EQ(a.l, g.l) << "nprobe " << np << " min_probe " << m;
            EXPECT_EQ(a.dco, g.dco);
        }
    }
}

TEST(IvfProbe, NeverMoreThanNprobe) {
    const FgmmIvf* h = shared();
    const float* q = cal_queries();
    const int np = 12;
    Result hi = plain(h, kHalf, q, np), lo = plain(h, kHalf, q, 2);
    ASSERT_EQ(hi.rc | lo.rc, 0);
    int64_t prev_tot = 0;
    for (double t : {-3.0, -1.0, 0.0, 1.0, 3.0, 10.0}) {  // KTH: more lists as the threshold grows
        Result a = run(h, kHalf, q, params(FGMM_PROBE_KTH, np, t));
        ASSERT_EQ(a.rc, 0) << fgmm_get_last_error();
        int64_t tot = 0;
        for (int64_t i = 0; i < kHalf; i++) {
            EXPECT_LE(a.dco[i], hi.dco[i]) << i;
            EXPECT_GE(a.dco[i], lo.dco[i]) << i;
            tot += a.dco[i];
        }
        EXPECT_GE(tot, prev_tot) << t;
        prev_tot = tot;
    }
    int64_t lo_tot = 0, hi_tot = 0;
    for (int64_t i = 0; i < kHalf; i++) lo_tot += lo.dco[i], hi_tot += hi.dco[i];
    EXPECT_LT(lo_tot, hi_tot);  // the sweep spans a real range
    for (double e : {0.0, 0.05, 0.2}) {
        Result a = run(h, kHalf, q, params(FGMM_PROBE_EPS, np, e));
        ASSERT_EQ(a.rc, 0);
        for (int64_t i = 0; i < kHalf; i++) EXPECT_LE(a.dco[i], hi.dco[i]) << i;
    }
    // nprobe above nlist is taken as nlist; min_probe above nprobe as nprobe
    Result all = plain(h, kHalf, q, 32), a = run(h, kHalf, q, params(FGMM_PROBE_KTH, 1000, INFINITY, 500));
    ASSERT_EQ(a.rc, 0);
    EXPECT_EQ(a.l, all.l);
}

TEST(IvfProbe, CalibrationReachesItsTargetOnHeldOutVectors) {
    const FgmmIvf* h = shared();
    for (FgmmProbeRule rule : {FGMM_PROBE_FIXED, FGMM_PROBE_KTH, FGMM_PROBE_EPS}) {
        for (double target : {0.85, 0.95}) {
            FgmmIvfSearchParams p = params(rule, 16, 0);
            double cal = -1;
            ASSERT_EQ(fgmm_ivf_calibrate(h, kHalf, cal_queries(), kK, target, &p, &cal), 0) << fgmm_get_last_error();
            EXPECT_GE(cal, target);
            Result c = run(h, kHalf, cal_queries(), p);
            EXPECT_NEAR(recall(h, kHalf, cal_queries(), c), cal, 1e-12);  // the recall it reports
            Result r = run(h, kHalf, check_queries(), p);
            ASSERT_EQ(r.rc, 0);
            double got = recall(h, kHalf, check_queries(), r);
            // the other half: within sampling error of the target (FIXED: nprobe's steps overshoot)
            EXPECT_GE(got, target - 0.015) << rule << " threshold " << p.threshold << " nprobe " << p.nprobe;
            if (rule != FGMM_PROBE_FIXED) EXPECT_LE(got, target + 0.02) << rule << " " << p.threshold;
            else {  // nprobe's steps overshoot (0.07 at nlist 32); the smallest nprobe: one less misses the target
                FgmmIvfSearchParams q = p;
                q.nprobe--;
                Result m = run(h, kHalf, cal_queries(), q);
                EXPECT_LT(recall(h, kHalf, cal_queries(), m), target) << q.nprobe;
            }
        }
    }
}

TEST(IvfProbe, ThreadCountIndependent) {
    const FgmmIvf* h = shared();
    const float* q = cal_queries();
    int saved = omp_get_max_threads();
    for (const auto& p : {params(FGMM_PROBE_KTH, 16, 0.5), params(FGMM_PROBE_EPS, 16, 0.1)}) {
        std::vector<Result> r;
        std::vector<double> thr;
        for (int t : {1, 2, 3}) {
            omp_set_num_threads(t);
            r.push_back(run(h, kHalf, q, p));
            FgmmIvfSearchParams c = p;
            ASSERT_EQ(fgmm_ivf_calibrate(h, kHalf, q, kK, 0.9, &c, nullptr), 0) << fgmm_get_last_error();
            thr.push_back(c.threshold);
        }
        omp_set_num_threads(saved);
        for (size_t i = 1; i < r.size(); i++) {
            EXPECT_EQ(r[i].rc, 0);
            EXPECT_EQ(r[i].l, r[0].l);
            EXPECT_EQ(r[i].d, r[0].d);
            EXPECT_EQ(r[i].dco, r[0].dco);
            EXPECT_EQ(thr[i], thr[0]);
        }
    }
}

TEST(IvfProbe, AnyKAndBatchMatchOneByOne) {
    const FgmmIvf* h = shared();
    const float* q = cal_queries();
    const int64_t n = 40;
    for (int64_t k : {1, 10, 200, 20000}) {  // 20,000 > entries: padded
        FgmmIvfSearchParams p = params(FGMM_PROBE_KTH, 8, 0.5);
        Result all = run(h, n, q, p, k);
        ASSERT_EQ(all.rc, 0) << fgmm_get_last_error();
        for (int64_t i = 0; i < n; i += 13) {
            Result one = run(h, 1, q + (size_t)i * data().d, p, k);
            ASSERT_EQ(one.rc, 0);
            EXPECT_TRUE(std::equal(one.l.begin(), one.l.end(), all.l.begin() + i * k)) << k << " " << i;
            EXPECT_EQ(one.dco[0], all.dco[i]);
        }
        for (int64_t i = 0; i < n; i++) {  // sorted, distinct, padded
            for (int64_t a = 1; a < k; a++) {
                if (all.l[i * k + a] < 0) {
                    EXPECT_EQ(all.d[i * k + a], INFINITY);
                    continue;
                }
                EXPECT_LE(all.d[i * k + a - 1], all.d[i * k + a]);
                EXPECT_NE(all.l[i * k + a - 1], all.l[i * k + a]);
            }
        }
    }
}

}  // namespace
