/* SPDX-License-Identifier: MIT */
// GPU SOAR spill lists and PQ codes of spilled entries (capi/flashgmm_spill.h) against the CPU.
#include "gpu_common.h"

using namespace fgt;

namespace {
// Rows ~ N(offset, 1), centroids ~ N(offset, 0.8^2): as Soar.ChoiceMinimisesItsLossByBruteForce draws them.
void soar_data(int64_t n, int d, int k, float offset, uint64_t seed, std::vector<float>* x, std::vector<float>* c) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> nd;
    x->resize((size_t)n * d);
    c->resize((size_t)k * d);
    for (auto& v : *x) v = nd(g) + offset;
    for (auto& v : *c) v = nd(g) * 0.8f + offset;
}

struct SoarOut {
    std::vector<fgmm_idx_t> prim, spill;
    std::vector<float> d1, d2;
    explicit SoarOut(int64_t n) : prim(n), spill(n), d1(n), d2(n) {}
};

// Where the GPU and the CPU choose differently, the choice must be a near-tie: primary where the CPU's
// d1 and d2 are within a relative kTie, spill where the two choices' SOAR losses (in double) are within
// a relative kLossTol. Returns the number of rows that differ.
constexpr double kTie = 1e-5, kLossTol = 1e-4;
int64_t expect_soar_agrees(const SoarOut& gpu, const SoarOut& cpu, int64_t n, int d, const float* x, const float* c,
                           float lambda, const char* what) {
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) {
        const float* xi = x + (size_t)i * d;
        EXPECT_NEAR(gpu.d1[i], cpu.d1[i], 1e-4 * cpu.d1[i] + 1e-3) << what << " row " << i;
        EXPECT_NEAR(gpu.d2[i], cpu.d2[i], 1e-4 * cpu.d2[i] + 1e-3) << what << " row " << i;
        if (gpu.prim[i] != cpu.prim[i]) {
            differ++;
            EXPECT_LE(cpu.d2[i] - cpu.d1[i], kTie * cpu.d2[i]) << what << " row " << i << ": primary differs, no tie";
            continue;  // another primary: another SOAR problem
        }
        EXPECT_NE(gpu.spill[i], gpu.prim[i]) << what << " row " << i;
        if (gpu.spill[i] == cpu.spill[i]) continue;
        differ++;
        const float* cp = c + (size_t)cpu.prim[i] * d;
        double lg = fgmm_soar_loss(d, xi, cp, c + (size_t)gpu.spill[i] * d, lambda);
        double lc = fgmm_soar_loss(d, xi, cp, c + (size_t)cpu.spill[i] * d, lambda);
        EXPECT_LE(std::fabs(lg - lc), kLossTol * lc)
            << what << " row " << i << ": spill differs, losses " << lg << " vs " << lc;
    }
    return differ;
}
}  // namespace

// fgmm_soar_assign_gpu against fgmm_soar_assign: identical choices but for near-ties, also far from the
// origin (both shift by the centroids' mean), for several lambdas; n not a multiple of anything, and one
// case of several row tiles (k = 1024: 256 MB tiles hold about 32k rows).
TEST(GpuSoar, MatchesCpuUpToNearTies) {
    REQUIRE_GPU();
    struct Case {
        int64_t n;
        int d, k;
        float offset;
    } cases[] = {{20011, 100, 300, 0.0f}, {20011, 100, 300, 1000.0f}, {20011, 37, 2, 0.0f}, {100003, 24, 1024, 0.0f}};
    for (const Case& cs : cases) {
        std::vector<float> x, c;
        soar_data(cs.n, cs.d, cs.k, cs.offset, 31 + cs.k, &x, &c);
        for (float lambda : {0.0f, 1.0f, 4.0f}) {
            if (cs.n > 50000 && lambda != 1.0f) continue;
            SoarOut g(cs.n), h(cs.n);
            ASSERT_EQ(fgmm_soar_assign(cs.n, cs.d, x.data(), cs.k, c.data(), lambda, h.prim.data(), h.spill.data(),
                                       h.d1.data(), h.d2.data()),
                      0)
                << fgmm_get_last_error();
            ASSERT_EQ(fgmm_soar_assign_gpu(0, cs.n, cs.d, x.data(), cs.k, c.data(), lambda, g.prim.data(),
                                           g.spill.data(), g.d1.data(), g.d2.data()),
                      0)
                << fgmm_get_last_error();
            std::string what = "n " + std::to_string(cs.n) + " d " + std::to_string(cs.d) + " k " +
                               std::to_string(cs.k) + " offset " + std::to_string(cs.offset) + " lambda " +
                               std::to_string(lambda);
            int64_t differ = expect_soar_agrees(g, h, cs.n, cs.d, x.data(), c.data(), lambda, what.c_str());
            EXPECT_LE(differ, cs.n / 1000) << what;  // near-ties are rare in random data
            // without the optional outputs (other tile sizes, so other GEMM shapes): the same primaries but for ties
            std::vector<fgmm_idx_t> p2(cs.n);
            ASSERT_EQ(fgmm_soar_assign_gpu(0, cs.n, cs.d, x.data(), cs.k, c.data(), lambda, p2.data(), nullptr, nullptr,
                                           nullptr),
                      0)
                << fgmm_get_last_error();
            for (int64_t i = 0; i < cs.n; i++)
                if (p2[i] != g.prim[i]) EXPECT_LE(h.d2[i] - h.d1[i], kTie * h.d2[i]) << what << " row " << i;
        }
    }
    // one centroid, no spill: everything in list 0, no second distance
    std::vector<float> x, c;
    soar_data(1000, 8, 1, 0.0f, 5, &x, &c);
    SoarOut g(1000);
    ASSERT_EQ(
        fgmm_soar_assign_gpu(0, 1000, 8, x.data(), 1, c.data(), 1.0f, g.prim.data(), nullptr, g.d1.data(), g.d2.data()),
        0)
        << fgmm_get_last_error();
    for (int i = 0; i < 1000; i++) {
        EXPECT_EQ(g.prim[i], 0);
        EXPECT_TRUE(std::isinf(g.d2[i]));
    }
}

// Several host threads at once (each call has its own stream, handle and buffers): the lone call's results.
TEST(GpuSoar, ConcurrentCallsAgree) {
    REQUIRE_GPU();
    const int64_t n = 30000;
    const int d = 48, k = 512;
    std::vector<float> x, c;
    soar_data(n, d, k, 0.0f, 77, &x, &c);
    SoarOut alone(n);
    ASSERT_EQ(fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, alone.prim.data(), alone.spill.data(),
                                   alone.d1.data(), alone.d2.data()),
              0)
        << fgmm_get_last_error();
    std::vector<SoarOut> got(4, SoarOut(n));
    int rc[4];
    std::vector<std::thread> th;
    for (int t = 0; t < 4; t++)
        th.emplace_back([&, t] {
            rc[t] = fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, got[t].prim.data(), got[t].spill.data(),
                                         got[t].d1.data(), got[t].d2.data());
        });
    for (auto& t : th) t.join();
    for (int t = 0; t < 4; t++) {
        ASSERT_EQ(rc[t], 0) << t;
        EXPECT_EQ(got[t].prim, alone.prim) << t;
        EXPECT_EQ(got[t].spill, alone.spill) << t;
        EXPECT_EQ(got[t].d1, alone.d1) << t;
    }
}

// Bad arguments are codes with messages before any device is touched, so this runs without one too;
// a valid call without a device (or without CUDA in the build) is FGMM_ERR_NO_GPU.
TEST(GpuSoar, BadInputIsACodeNotACrash) {
    float x[4] = {0, 1, 2, 3}, c[4] = {0, 0, 1, 1};
    fgmm_idx_t p[2], s[2];
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, nullptr, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("fgmm_soar_assign_gpu: x is NULL"), std::string::npos);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, nullptr, 1, p, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, nullptr, s, nullptr, nullptr), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, -1, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 1, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);  // spill needs k >= 2
    EXPECT_NE(std::string(fgmm_get_last_error()).find("k >= 2"), std::string::npos);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 0, c, 1, p, nullptr, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 0, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);  // d < 1
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, NAN, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, -1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 0, 2, x, 2, c, 1, p, s, nullptr, nullptr), 0);  // nothing to do
    x[1] = INFINITY;
    EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_DATA);
    x[1] = 1;
    if (fgmm_gpu_available()) {
        EXPECT_EQ(fgmm_soar_assign_gpu(99, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
        EXPECT_NE(std::string(fgmm_get_last_error()).find("device = 99"), std::string::npos);
        EXPECT_EQ(fgmm_soar_assign_gpu(-1, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_ARG);
    } else {
        EXPECT_EQ(fgmm_soar_assign_gpu(0, 2, 2, x, 2, c, 1, p, s, nullptr, nullptr), FGMM_ERR_NO_GPU);
        EXPECT_GT(std::strlen(fgmm_get_last_error()), 0u);
    }
}

namespace {
// The nearest codeword (ties to the lower) of sub-vector m of x - c computed as FAISS does (the residual in
// float), its distance in double; dist_to gives the double distance to a given codeword.
struct PqRef {
    int d, M, dsub;
    const float* cb;
    void residual(const float* x, const float* c, float* r) const {
        for (int j = 0; j < d; j++) r[j] = x[j] - c[j];
    }
    double dist_to(const float* r, int m, int code) const {
        double s = 0;
        for (int k = 0; k < dsub; k++) {
            double e = (double)r[m * dsub + k] - cb[((size_t)m * 256 + code) * dsub + k];
            s += e * e;
        }
        return s;
    }
    int nearest(const float* r, int m) const {
        int a = 0;
        double best = dist_to(r, m, 0);
        for (int j = 1; j < 256; j++) {
            double v = dist_to(r, m, j);
            if (v < best) best = v, a = j;
        }
        return a;
    }
};
}  // namespace

// fgmm_pq_encode_gpu against a double-precision reference: every code the nearest codeword of its entry's
// residual but for float near-ties (1e-4 relative), rarely; entries without a list all zeros; every
// kernel width (dsub 1 .. 32) and n not a multiple of the block.
TEST(GpuPq, MatchesReferenceUpToNearTies) {
    REQUIRE_GPU();
    struct Case {
        int64_t n;
        int d, M, ma, nlist;
    } cases[] = {{20011, 32, 8, 2, 64}, {20011, 96, 16, 2, 300}, {7001, 128, 16, 3, 64},
                 {5003, 48, 4, 1, 7},   {3001, 64, 2, 2, 5},     {3001, 20, 20, 2, 9}};
    for (const Case& cs : cases) {
        std::vector<float> x, c, cb;
        soar_data(cs.n, cs.d, cs.nlist, 0.0f, 11 + cs.d, &x, &c);
        std::mt19937_64 g(cs.M);
        std::normal_distribution<float> nd;
        cb.resize((size_t)256 * cs.d);
        for (auto& v : cb) v = nd(g) * 1.2f;
        std::vector<fgmm_idx_t> lists((size_t)cs.n * cs.ma);
        for (size_t i = 0; i < lists.size(); i++)
            lists[i] = i % cs.ma && g() % 3 == 0 ? -1 : (fgmm_idx_t)(g() % cs.nlist);  // some spilled copies absent
        std::vector<uint8_t> codes(lists.size() * cs.M, 0xAB);
        ASSERT_EQ(fgmm_pq_encode_gpu(0, cs.n, cs.d, x.data(), cs.ma, lists.data(), cs.nlist, c.data(), cs.M, cb.data(),
                                     codes.data()),
                  0)
            << fgmm_get_last_error();
        PqRef ref{cs.d, cs.M, cs.d / cs.M, cb.data()};
        std::vector<float> r(cs.d);
        int64_t differ = 0, zeros = 0;
        std::string what = "d " + std::to_string(cs.d) + " M " + std::to_string(cs.M);
        for (size_t e = 0; e < lists.size(); e++) {
            const uint8_t* code = codes.data() + e * cs.M;
            if (lists[e] < 0) {
                for (int m = 0; m < cs.M; m++) zeros += code[m] == 0;
                continue;
            }
            ref.residual(x.data() + e / cs.ma * cs.d, c.data() + lists[e] * cs.d, r.data());
            for (int m = 0; m < cs.M; m++) {
                int want = ref.nearest(r.data(), m);
                if (code[m] == want) continue;
                differ++;
                double dg = ref.dist_to(r.data(), m, code[m]), dc = ref.dist_to(r.data(), m, want);
                EXPECT_LE(dg - dc, 1e-4 * dc + 1e-6) << what << " entry " << e << " m " << m;
            }
        }
        int64_t absent = std::count(lists.begin(), lists.end(), (fgmm_idx_t)-1);
        EXPECT_EQ(zeros, absent * cs.M) << what;
        EXPECT_LE(differ, (int64_t)lists.size() * cs.M / 1000) << what;
    }
}

// Bad arguments are codes with messages (no device needed); a valid call without a device is FGMM_ERR_NO_GPU.
TEST(GpuPq, BadInputIsACodeNotACrash) {
    std::vector<float> x(2 * 8, 0.5f), c(2 * 8, 0.0f), cb(256 * 8, 1.0f);
    std::vector<fgmm_idx_t> lists = {0, 1};
    std::vector<uint8_t> codes(2 * 4);
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, nullptr, 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
              FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 3, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // d not a multiple of M
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 66, x.data(), 1, lists.data(), 2, c.data(), 1, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // dsub > 32
    lists[1] = 2;
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
              FGMM_ERR_ARG);  // list out of range
    EXPECT_NE(std::string(fgmm_get_last_error()).find("nlist = 2"), std::string::npos);
    lists[1] = 1;
    EXPECT_EQ(
        fgmm_pq_encode_gpu(0, INT64_MAX / 2 + 1, 8, x.data(), 2, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
        FGMM_ERR_ARG);  // n x ma overflows: refused before any list is read
    EXPECT_EQ(fgmm_pq_encode_gpu(0, 0, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()), 0);
    if (fgmm_gpu_available()) {
        EXPECT_EQ(fgmm_pq_encode_gpu(99, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
                  FGMM_ERR_ARG);
        ASSERT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()), 0);
        EXPECT_EQ(codes, std::vector<uint8_t>(8, 0));  // every codeword equally near: the first
    } else {
        EXPECT_EQ(fgmm_pq_encode_gpu(0, 2, 8, x.data(), 1, lists.data(), 2, c.data(), 4, cb.data(), codes.data()),
                  FGMM_ERR_NO_GPU);
    }
}
