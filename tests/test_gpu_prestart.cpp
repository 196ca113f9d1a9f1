/* SPDX-License-Identifier: MIT */
// fgmm_gpu_prestart: returns at once with its code, is idempotent and thread-safe, leaves CPU training
// alone, and a GPU training after it gives the model one without it gives.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "gpu_common.h"

namespace {
using namespace fgt;

// What a valid call returns: a CUDA build starts a thread (the start's outcome comes at the engine's
// creation); a build without CUDA has nothing to start.
#ifdef FGMM_WITH_CUDA
constexpr int kStartRc = FGMM_OK;
#else
constexpr int kStartRc = FGMM_ERR_NO_GPU;
#endif
// A call returns within this: it starts a thread (tens of microseconds) and never waits for CUDA.
constexpr double kPromptMs = 50;

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool same_model(const FgmmModel* a, const FgmmModel* b) {
    int k = fgmm_model_k(a), d = fgmm_model_d(a);
    if (k != fgmm_model_k(b) || d != fgmm_model_d(b) || fgmm_model_covariance(a) != fgmm_model_covariance(b))
        return false;
    size_t nv = fgmm_model_covariance(a) == FGMM_COV_DIAGONAL ? (size_t)k * d : k;
    return !memcmp(fgmm_model_means(a), fgmm_model_means(b), sizeof(float) * k * d) &&
           !memcmp(fgmm_model_variances(a), fgmm_model_variances(b), sizeof(float) * nv) &&
           !memcmp(fgmm_model_weights(a), fgmm_model_weights(b), sizeof(float) * k);
}

FgmmParams cpu_params() {
    FgmmParams p;
    fgmm_params_init(&p);
    p.k = 32;
    p.niter = 5;
    p.backend = FGMM_BACKEND_CPU;
    return p;
}

// First in this file, so that (run alone or in order) the first training has no prestart before it:
// the model trained after a prestart, and by a fresh process that prestarts (the CLI), is the one
// trained before it.
TEST(GpuPrestart, GpuTrainingGivesTheModelItGivesWithout) {
    REQUIRE_GPU();
    const int64_t n = 20000;
    const int d = 32, k = 64;
    auto x = planted(n, d, k, 3.0, 9);
    FgmmParams p = gpu_params(k, FGMM_PREC_FAST);
    p.niter = 10;
    FgmmModel *before = nullptr, *after = nullptr, *cli = nullptr;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &before, nullptr), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_gpu_prestart(0), FGMM_OK) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &after, nullptr), 0) << fgmm_get_last_error();
    std::string dir = testing::TempDir(), data = dir + "prestart_data.fvecs", model = dir + "prestart_model.bin";
    FgmmVecs v = {x.data(), n, d, FGMM_F32};
    ASSERT_EQ(fgmm_vecs_write(data.c_str(), &v), 0) << fgmm_get_last_error();
    std::string out;
    if (access(FGMM_CLI, X_OK) == 0) {  // (the GPU machine's bundle carries no command-line tool)
        ASSERT_EQ(run_cli("train " + data + " --k 64 --iter 10 --backend gpu --quiet --out " + model, &out), 0) << out;
        ASSERT_EQ(fgmm_model_read(model.c_str(), &cli), 0) << fgmm_get_last_error();
    }
    for (const FgmmModel* m : {(const FgmmModel*)after, (const FgmmModel*)cli}) {
        if (!m) continue;
        ModelErr e = model_rel_err(m, before);  // atomics: summation order only
        EXPECT_LT(e.mu, 1e-4);
        EXPECT_LT(e.var, 1e-4);
        EXPECT_LT(e.w, 1e-4);
    }
    fgmm_model_free(before);
    fgmm_model_free(after);
    fgmm_model_free(cli);
    remove(data.c_str());
    remove(model.c_str());
}

TEST(GpuPrestart, ReturnsAtOnceWithItsCode) {
    auto t0 = std::chrono::steady_clock::now();
    int rc = fgmm_gpu_prestart(0);
    double ms = ms_since(t0);
    EXPECT_EQ(rc, kStartRc) << fgmm_get_last_error();
    EXPECT_LT(ms, kPromptMs);
    if (rc == FGMM_ERR_NO_GPU)
        EXPECT_STREQ(fgmm_get_last_error(), "fgmm_gpu_prestart: this build of flashgmm has no CUDA support");
}

TEST(GpuPrestart, RefusesDevicesOutOfRange) {
    for (int dev : {-1, 64, INT_MIN, INT_MAX}) {
        EXPECT_EQ(fgmm_gpu_prestart(dev), FGMM_ERR_ARG) << dev;
        EXPECT_EQ(std::string(fgmm_get_last_error()),
                  "fgmm_gpu_prestart: device = " + std::to_string(dev) + "; want 0 .. 63");
    }
}

// Later calls do nothing: a thousand return the first call's code, together well within one call's bound.
TEST(GpuPrestart, IsIdempotent) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; i++) ASSERT_EQ(fgmm_gpu_prestart(i % 4), kStartRc) << i;
    EXPECT_LT(ms_since(t0), kPromptMs);
}

// Threads calling it (new devices and again) while this one trains on the CPU: the model is the
// byte-identical one of a training without them. Also under ThreadSanitizer (scripts/test.sh).
TEST(GpuPrestart, ConcurrentCallsLeaveCpuTrainingAlone) {
    const int64_t n = 4000;
    const int d = 16;
    auto x = planted(n, d, 32, 4.0, 5);
    FgmmParams p = cpu_params();
    FgmmModel *alone = nullptr, *beside = nullptr;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &alone, nullptr), 0) << fgmm_get_last_error();
    const int nth = 8;
    std::vector<int> bad(nth, 0);
    std::vector<std::thread> th;
    for (int t = 0; t < nth; t++)
        th.emplace_back([&, t] {
            for (int i = 0; i < 200; i++) bad[t] += fgmm_gpu_prestart((t + i) % 8) != kStartRc;
        });
    int rc = fgmm_train(&p, n, d, FGMM_F32, x.data(), &beside, nullptr);
    for (auto& t : th) t.join();
    ASSERT_EQ(rc, 0) << fgmm_get_last_error();
    EXPECT_TRUE(same_model(alone, beside));
    for (int t = 0; t < nth; t++) EXPECT_EQ(bad[t], 0) << t;
    fgmm_model_free(alone);
    fgmm_model_free(beside);
}

// Without a device the outcome comes where it came without the call: a GPU training fails with
// FGMM_ERR_NO_GPU, an automatic one trains on the CPU (the model of the CPU backend).
TEST(GpuPrestart, WithoutADeviceTrainingSaysSoOrUsesTheCpu) {
    if (fgmm_gpu_available()) GTEST_SKIP() << "a CUDA device is present";
    ASSERT_EQ(fgmm_gpu_prestart(0), kStartRc);
    const int64_t n = 2000;
    const int d = 8;
    auto x = planted(n, d, 32, 4.0, 6);
    FgmmParams p = cpu_params();
    p.backend = FGMM_BACKEND_GPU;
    FgmmModel* m = nullptr;
    EXPECT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_NO_GPU);
    EXPECT_EQ(m, nullptr);
    std::string msg = fgmm_get_last_error();
    EXPECT_TRUE(msg.find("no CUDA device available") != std::string::npos ||
                msg.find("no CUDA support") != std::string::npos)
        << msg;
    FgmmModel *cpu = nullptr, *autom = nullptr;
    p.backend = FGMM_BACKEND_CPU;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &cpu, nullptr), 0) << fgmm_get_last_error();
    p.backend = FGMM_BACKEND_AUTO;
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_train(&p, n, d, FGMM_F32, x.data(), &autom, &info), 0) << fgmm_get_last_error();
    EXPECT_STREQ(info.backend, "cpu");
    EXPECT_TRUE(same_model(cpu, autom));
    fgmm_model_free(cpu);
    fgmm_model_free(autom);
}

// A child forked after a prestart has no copy of its thread: its calls and its exit (whose handler
// joins prestart threads) neither wait for the parent's thread nor hang (SIGALRM ends a hang). Without
// a device only: CUDA's own exit in such a child is not this test's.
TEST(GpuPrestart, ForkedChildExitsCleanly) {
    if (fgmm_gpu_available()) GTEST_SKIP() << "CUDA in a child of a process that started it is unsupported";
    ASSERT_EQ(fgmm_gpu_prestart(0), kStartRc);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(10);
        exit(fgmm_gpu_prestart(0) == kStartRc ? 0 : 3);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st)) << "status " << st;
    EXPECT_EQ(WEXITSTATUS(st), 0);
}

}  // namespace
