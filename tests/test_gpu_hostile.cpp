/* SPDX-License-Identifier: MIT */
// GPU entry points under hostile input: sizes of 0, negative, past the limits or whose products overflow,
// NaN/Inf values, and device memory that runs out. Arguments are checked before a device is looked for,
// so those checks run everywhere; what needs a device skips without one. Run under compute-sanitizer
// (memcheck, initcheck) on a GPU: no out-of-bounds access, no uninitialised read, no leak.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "flashgmm_spill.h"
#include "internal.h"
#ifdef FGMM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

using namespace fgt;

namespace {

void expect_code(int rc, int code, const char* needle, const std::string& what = "") {
    EXPECT_EQ(rc, code) << what << ": " << fgmm_get_last_error();
    EXPECT_NE(std::string(fgmm_get_last_error()).find(needle), std::string::npos)
        << what << ": '" << fgmm_get_last_error() << "' lacks '" << needle << "'";
}

// Valid arguments' outcome without a device, or with one.
int ok_or_no_gpu() { return fgmm_gpu_available() ? FGMM_OK : FGMM_ERR_NO_GPU; }

// Takes all but `leave` bytes of device 0's free memory while alive (an out-of-memory device).
// Takes the device's memory in halving chunks (1 GB down to `leave` bytes) until none of them fits: at
// most about 2 x leave stays free. (One allocation of free - leave, shrunk by 1/64 per failure, left
// over a GB free on an 80 GB H100, and the calls under test then succeeded.)
struct DeviceHog {
    void* p = nullptr;  // the first chunk (non-NULL: something was taken)
    std::vector<void*> chunks;
    explicit DeviceHog(size_t leave) {
#ifdef FGMM_WITH_CUDA
        if (cudaSetDevice(0) != cudaSuccess) return;
        for (size_t chunk = (size_t)1 << 30; chunk >= leave && chunk > 0; chunk /= 2) {
            void* q = nullptr;
            while (cudaMalloc(&q, chunk) == cudaSuccess) chunks.push_back(q);
            cudaGetLastError();
        }
        if (!chunks.empty()) p = chunks[0];
#else
        (void)leave;
#endif
    }
    ~DeviceHog() {
#ifdef FGMM_WITH_CUDA
        for (void* q : chunks) cudaFree(q);
#endif
    }
};

struct SoarCase {
    int n = 64, d = 8, k = 4;
    std::vector<float> x, c;
    std::vector<fgmm_idx_t> prim, spill;
    std::vector<float> d1, d2;
    SoarCase() {
        x = planted(n, d, k, 3.0, 21);
        c.assign(x.begin(), x.begin() + (size_t)k * d);
        prim.resize(n), spill.resize(n), d1.resize(n), d2.resize(n);
    }
    int run(int device, fgmm_idx_t nn, int dd, int kk, float lambda = 1.0f) {
        return fgmm_soar_assign_gpu(device, nn, dd, x.data(), kk, c.data(), lambda, prim.data(), spill.data(),
                                    d1.data(), d2.data());
    }
};

}  // namespace

TEST(GpuHostile, SoarAssignSizesAndValues) {
    SoarCase s;
    for (fgmm_idx_t n : {(fgmm_idx_t)-1, (fgmm_idx_t)INT64_MIN})
        expect_code(s.run(0, n, s.d, s.k), FGMM_ERR_ARG, "n = ");
    EXPECT_EQ(s.run(0, 0, s.d, s.k), FGMM_OK);  // nothing to do, no device needed
    for (int d : {0, -1, INT_MIN, FGMM_MAX_DIM + 1, INT_MAX})
        expect_code(s.run(0, s.n, d, s.k), FGMM_ERR_ARG, "out of range", "d = " + std::to_string(d));
    for (int k : {1, 0, -1, INT_MIN})
        expect_code(s.run(0, s.n, s.d, k), FGMM_ERR_ARG, "k = ", "k = " + std::to_string(k));
    // n x d past the address space: refused before a value is read (n x d wrapped to a few values)
    for (fgmm_idx_t n : {(fgmm_idx_t)1 << 62, (fgmm_idx_t)INT64_MAX / 4 + 1, (fgmm_idx_t)INT64_MAX})
        expect_code(s.run(0, n, s.d, s.k), FGMM_ERR_ARG, "overflow", "n = " + std::to_string(n));
    for (float lam : {NAN, INFINITY, -1.0f}) expect_code(s.run(0, s.n, s.d, s.k, lam), FGMM_ERR_ARG, "lambda");
    for (float bad : {NAN, INFINITY, -INFINITY}) {
        SoarCase t;
        t.x[(size_t)(t.n - 1) * t.d + 3] = bad;  // the last row: the whole input is checked
        expect_code(t.run(0, t.n, t.d, t.k), FGMM_ERR_DATA, "row 63", "x");
        SoarCase u;
        u.c[5] = bad;
        expect_code(u.run(0, u.n, u.d, u.k), FGMM_ERR_DATA, "centroids", "centroids");
    }
    EXPECT_EQ(s.run(0, s.n, s.d, s.k), ok_or_no_gpu()) << fgmm_get_last_error();
    if (!fgmm_gpu_available()) return;
    for (int dev : {-1, 99, INT_MAX, INT_MIN}) expect_code(s.run(dev, s.n, s.d, s.k), FGMM_ERR_ARG, "device");
    // the device's answer is the CPU's (no near-ties among 4 well-separated planted clusters)
    SoarCase cpu;
    ASSERT_EQ(fgmm_soar_assign(cpu.n, cpu.d, cpu.x.data(), cpu.k, cpu.c.data(), 1.0f, cpu.prim.data(), cpu.spill.data(),
                               cpu.d1.data(), cpu.d2.data()),
              0);
    EXPECT_EQ(s.prim, cpu.prim);
    EXPECT_EQ(s.spill, cpu.spill);
}

// Device memory that runs out mid-call is FGMM_ERR_GPU_NOMEM (or FGMM_ERR_CUDA where cuBLAS or the stream
// cannot be made), nothing leaks, and the same call succeeds once memory is free again.
TEST(GpuHostile, SoarAssignOutOfDeviceMemory) {
    REQUIRE_GPU();
    const int n = 2000, d = 128, k = 4096;  // 2 MB of centroids
    auto x = planted(n, d, 8, 3.0, 22);
    std::vector<float> c(x.begin(), x.begin() + (size_t)k * d / 4);
    c.resize((size_t)k * d);
    for (size_t i = c.size() / 4; i < c.size(); i++) c[i] = x[i % x.size()] + 0.25f * (float)(i % 7);
    std::vector<fgmm_idx_t> p(n), s(n);
    {
        DeviceHog hog((size_t)1 << 20);
        ASSERT_NE(hog.p, nullptr) << "could not take the device's memory";
        int rc = fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, p.data(), s.data(), nullptr, nullptr);
        EXPECT_TRUE(rc == FGMM_ERR_GPU_NOMEM || rc == FGMM_ERR_CUDA) << rc << ": " << fgmm_get_last_error();
        EXPECT_GT(std::string(fgmm_get_last_error()).size(), 0u);
    }
    EXPECT_EQ(fgmm_soar_assign_gpu(0, n, d, x.data(), k, c.data(), 1.0f, p.data(), s.data(), nullptr, nullptr), 0)
        << fgmm_get_last_error();
}

namespace {
struct PqCase {
    int n = 50, d = 16, ma = 2, nlist = 4, M = 4;
    std::vector<float> x, cent, cb;
    std::vector<fgmm_idx_t> lists;
    std::vector<uint8_t> codes;
    PqCase() {
        x = planted(n, d, nlist, 3.0, 23);
        cent.assign(x.begin(), x.begin() + (size_t)nlist * d);
        cb.resize((size_t)M * 256 * (d / M));
        for (size_t i = 0; i < cb.size(); i++) cb[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        for (int i = 0; i < n * ma; i++) lists.push_back(i % 5 == 4 ? -1 : i % nlist);
        codes.assign((size_t)n * ma * M, 0xAB);
    }
    int run(int device, fgmm_idx_t nn, int dd, int mma, int nl, int mm) {
        return fgmm_pq_encode_gpu(device, nn, dd, x.data(), mma, lists.data(), nl, cent.data(), mm, cb.data(),
                                  codes.data());
    }
};
}  // namespace

TEST(GpuHostile, PqEncodeSizesAndValues) {
    PqCase s;
    const int d = s.d, ma = s.ma, nl = s.nlist, M = s.M;
    for (fgmm_idx_t n : {(fgmm_idx_t)-1, (fgmm_idx_t)INT64_MIN})
        expect_code(s.run(0, n, d, ma, nl, M), FGMM_ERR_ARG, "n = ");
    EXPECT_EQ(s.run(0, 0, d, ma, nl, M), FGMM_OK);
    for (int dd : {0, -16, INT_MIN}) expect_code(s.run(0, s.n, dd, ma, nl, M), FGMM_ERR_ARG, "d = ");
    expect_code(s.run(0, s.n, 33 * 4, ma, nl, 4), FGMM_ERR_ARG, "dsub <= 32");  // d / M = 33
    expect_code(s.run(0, s.n, d, ma, nl, 5), FGMM_ERR_ARG, "M = 5");            // d not a multiple of M
    for (int mm : {0, -4, INT_MIN}) expect_code(s.run(0, s.n, d, ma, nl, mm), FGMM_ERR_ARG, "M = ");
    for (int mma : {0, -1, INT_MIN}) expect_code(s.run(0, s.n, d, mma, nl, M), FGMM_ERR_ARG, "ma = ");
    for (int n2 : {0, -1}) expect_code(s.run(0, s.n, d, ma, n2, M), FGMM_ERR_ARG, "nlist = ");
    // n x ma, n x ma x M and n x d past the address space: refused before any list or value is read
    expect_code(s.run(0, INT64_MAX / 2 + 1, d, ma, nl, M), FGMM_ERR_ARG, "n = ");
    expect_code(s.run(0, (fgmm_idx_t)1 << 60, d, ma, nl, M), FGMM_ERR_ARG, "overflow");
    expect_code(s.run(0, (fgmm_idx_t)1 << 61, d, 1, nl, 1), FGMM_ERR_ARG, "overflow");
    // a list past nlist
    s.lists[7] = nl;
    expect_code(s.run(0, s.n, d, ma, nl, M), FGMM_ERR_ARG, "entry 7");
    s.lists[7] = 1;
    for (float bad : {NAN, INFINITY, -INFINITY}) {
        PqCase a, b, c;
        a.x[(size_t)(a.n - 1) * a.d + 2] = bad;
        expect_code(a.run(0, a.n, d, ma, nl, M), FGMM_ERR_DATA, "fgmm_pq_encode_gpu: row 49");
        b.cent[3] = bad;
        expect_code(b.run(0, b.n, d, ma, nl, M), FGMM_ERR_DATA, "(centroids)");
        c.cb[c.cb.size() - 1] = bad;
        expect_code(c.run(0, c.n, d, ma, nl, M), FGMM_ERR_DATA, "(codebook)");
        EXPECT_EQ(a.codes, std::vector<uint8_t>(a.codes.size(), 0xAB));  // outputs untouched on failure
    }
    EXPECT_EQ(s.run(0, s.n, d, ma, nl, M), ok_or_no_gpu()) << fgmm_get_last_error();
    if (!fgmm_gpu_available()) return;
    for (int dev : {-1, 99, INT_MAX}) expect_code(s.run(dev, s.n, d, ma, nl, M), FGMM_ERR_ARG, "device");
    // entries without a list (-1, or any negative list) get zeros
    PqCase z;
    z.lists[0] = -7;
    ASSERT_EQ(z.run(0, z.n, d, ma, nl, M), 0) << fgmm_get_last_error();
    for (size_t e = 0; e < z.lists.size(); e++)
        for (int m = 0; z.lists[e] < 0 && m < M; m++) EXPECT_EQ(z.codes[e * M + m], 0) << e;
}

TEST(GpuHostile, PqEncodeOutOfDeviceMemory) {
    REQUIRE_GPU();
    PqCase s;
    s.nlist = 8192;  // 512 KB of centroids, 64 KB of codebook, the rows: more than the 256 KB left
    s.cent.resize((size_t)s.nlist * s.d);
    for (size_t i = 0; i < s.cent.size(); i++) s.cent[i] = (float)(i % 13);
    {
        DeviceHog hog((size_t)256 << 10);
        ASSERT_NE(hog.p, nullptr) << "could not take the device's memory";
        int rc = s.run(0, s.n, s.d, s.ma, s.nlist, s.M);
        EXPECT_TRUE(rc == FGMM_ERR_GPU_NOMEM || rc == FGMM_ERR_CUDA) << rc << ": " << fgmm_get_last_error();
    }
    EXPECT_EQ(s.run(0, s.n, s.d, s.ma, s.nlist, s.M), 0) << fgmm_get_last_error();
}

namespace {
FgmmParams gpu(int k) {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = k;
    p.backend = FGMM_BACKEND_GPU;
    p.niter = 3;
    p.kmeans_iter = 2;
    return p;
}
}  // namespace

// Training with the GPU backend: the same checks, before any device work.
TEST(GpuHostile, TrainSizesAndValues) {
    const int d = 16;
    auto x = planted(2000, d, 8, 3.0, 24);
    FgmmParams p = gpu(8);
    FgmmModel* m = reinterpret_cast<FgmmModel*>(1);
    for (fgmm_idx_t n : {(fgmm_idx_t)0, (fgmm_idx_t)-1, (fgmm_idx_t)INT64_MIN})
        expect_code(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "n = ");
    EXPECT_EQ(m, nullptr);
    for (int dd : {0, -1, INT_MIN, FGMM_MAX_DIM + 1})
        expect_code(fgmm_train(&p, 2000, dd, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "d = ");
    for (fgmm_idx_t n : {(fgmm_idx_t)1 << 62, (fgmm_idx_t)INT64_MAX})
        expect_code(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "overflow");
    for (int k : {0, -1, INT_MIN, 2001, INT_MAX}) {
        p.k = k;
        expect_code(fgmm_train(&p, 2000, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "k = ");
    }
    p.k = 8;
    for (float bad : {NAN, INFINITY, -INFINITY}) {
        auto y = x;
        y[y.size() - 1] = bad;
        expect_code(fgmm_train(&p, 2000, d, FGMM_F32, y.data(), &m, nullptr), FGMM_ERR_DATA, "row 1999");
    }
    EXPECT_EQ(m, nullptr);
    // model calls on the GPU backend
    float mu[2 * d] = {0}, var[2] = {1, 1}, w[2] = {1, 1};
    mu[d] = 1;
    ASSERT_EQ(fgmm_model_new(&m, 2, d, FGMM_COV_ISOTROPIC, mu, var, w), 0);
    std::vector<float> ll(2000);
    auto y = x;
    y[100] = NAN;
    expect_code(fgmm_loglik(m, &p, 2000, FGMM_F32, y.data(), ll.data()), FGMM_ERR_DATA, "row 6");
    expect_code(fgmm_loglik(m, &p, (fgmm_idx_t)1 << 62, FGMM_F32, x.data(), ll.data()), FGMM_ERR_ARG, "overflow");
    expect_code(fgmm_loglik(m, &p, -5, FGMM_F32, x.data(), ll.data()), FGMM_ERR_ARG, "n = -5");
    fgmm_model_free(m);
    m = nullptr;
    int rc = fgmm_train(&p, 2000, d, FGMM_F32, x.data(), &m, nullptr);
    EXPECT_EQ(rc, ok_or_no_gpu()) << fgmm_get_last_error();
    fgmm_model_free(m);
    if (!fgmm_gpu_available()) return;
    for (int dev : {-1, 99, INT_MAX}) {
        p.gpu_device = dev;
        expect_code(fgmm_train(&p, 2000, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "gpu_device");
    }
}

// Out of device memory in training: a limit too small to stream a row tile, and a device whose memory
// another holder took. Both are FGMM_ERR_GPU_NOMEM (or FGMM_ERR_CUDA where cuBLAS cannot start), and a
// later training on the freed device succeeds.
TEST(GpuHostile, TrainOutOfDeviceMemory) {
    REQUIRE_GPU();
    const int n = 20000, d = 128, k = 1024;  // model and statistics: about 1.5 MB
    auto x = planted(n, d, 64, 3.0, 25);
    FgmmParams p = gpu(k);
    FgmmModel* m = nullptr;
    for (size_t limit : {(size_t)1, (size_t)4096}) {
        p.gpu_mem_limit = limit;
        expect_code(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_GPU_NOMEM, "",
                    "gpu_mem_limit = " + std::to_string(limit));
        EXPECT_EQ(m, nullptr);
    }
    p.gpu_mem_limit = 0;
    {
        DeviceHog hog((size_t)1 << 20);
        ASSERT_NE(hog.p, nullptr) << "could not take the device's memory";
        int rc = fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr);
        EXPECT_TRUE(rc == FGMM_ERR_GPU_NOMEM || rc == FGMM_ERR_CUDA) << rc << ": " << fgmm_get_last_error();
        EXPECT_EQ(m, nullptr);
    }
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_model_k(m), k);
    fgmm_model_free(m);
}
