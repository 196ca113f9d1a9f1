/* SPDX-License-Identifier: MIT */
// Every bad input gets an error code and a message, and nothing leaks (the ASan build checks that).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "flashgmm_io.h"

using namespace fgt;

namespace {
void expect_error(int rc, int code, const char* needle) {
    EXPECT_EQ(rc, code);
    EXPECT_NE(std::string(fgmm_get_last_error()).find(needle), std::string::npos)
        << "message: '" << fgmm_get_last_error() << "' lacks '" << needle << "'";
}
std::string tmp(const char* name) { return testing::TempDir() + name; }
}  // namespace

TEST(Errors, TrainRejectsBadArguments) {
    auto x = planted(100, 4, 2, 3.0, 1);
    FgmmParams p = cpu_params(4);
    FgmmModel* m = (FgmmModel*)0x1;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, nullptr, &m, nullptr), FGMM_ERR_NULL, "x is NULL");
    EXPECT_EQ(m, nullptr);  // outputs are cleared on failure
    expect_error(fgmm_train(nullptr, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_NULL, "p is NULL");
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), nullptr, nullptr), FGMM_ERR_NULL, "out is NULL");
    p.k = 101;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "k = 101 > n = 100");
    p.k = 0;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "k = 0");
    p.k = 4;
    expect_error(fgmm_train(&p, 0, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "n = 0");
    expect_error(fgmm_train(&p, 100, 0, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "d = 0");
    expect_error(fgmm_train(&p, 100, 4, (FgmmDtype)7, x.data(), &m, nullptr), FGMM_ERR_ARG, "dtype");
    p.niter = -1;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "niter");
    p.niter = 3;
    p.var_floor = 0;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "var_floor");
    p.var_floor = 1e-4;
    p.covariance = (FgmmCovariance)5;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "covariance");
    p.covariance = FGMM_COV_ISOTROPIC;
    for (int g : {-1, 65}) {  // checked before any device is looked for
        p.n_gpus = g;
        expect_error(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "n_gpus");
    }
}

TEST(Errors, TrainRejectsNonFiniteData) {
    auto x = planted(100, 4, 2, 3.0, 1);
    FgmmParams p = cpu_params(4);
    FgmmModel* m = nullptr;
    std::vector<float> y = x;
    y[37 * 4 + 2] = NAN;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, y.data(), &m, nullptr), FGMM_ERR_DATA, "row 37");
    y = x;
    y[5] = -INFINITY;
    expect_error(fgmm_train(&p, 100, 4, FGMM_F32, y.data(), &m, nullptr), FGMM_ERR_DATA, "row 1 ");
    EXPECT_EQ(x, planted(100, 4, 2, 3.0, 1));  // input untouched
}

TEST(Errors, TrainRejectsDegenerateData) {
    std::vector<float> same(50 * 3, 2.5f);
    FgmmParams p = cpu_params(2);
    FgmmModel* m = nullptr;
    expect_error(fgmm_train(&p, 50, 3, FGMM_F32, same.data(), &m, nullptr), FGMM_ERR_DATA, "zero variance");
    std::vector<float> two(50 * 3, 0.0f);  // 2 distinct points, k = 3
    for (int i = 0; i < 25; i++) two[i * 3] = 1.0f;
    p.k = 3;
    expect_error(fgmm_train(&p, 50, 3, FGMM_F32, two.data(), &m, nullptr), FGMM_ERR_DATA, "distinct");
}

TEST(Errors, GpuBackendWithoutGpuIsAClearError) {
    if (fgmm_gpu_available()) GTEST_SKIP() << "a GPU is present";
    auto x = planted(100, 4, 2, 3.0, 1);
    FgmmParams p = cpu_params(2);
    p.backend = FGMM_BACKEND_GPU;
    FgmmModel* m = nullptr;
    int rc = fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, nullptr);
    EXPECT_EQ(rc, FGMM_ERR_NO_GPU) << fgmm_get_last_error();
    p.backend = FGMM_BACKEND_AUTO;  // AUTO falls back to the CPU
    FgmmTrainInfo info;
    ASSERT_EQ(fgmm_train(&p, 100, 4, FGMM_F32, x.data(), &m, &info), 0);
    EXPECT_STREQ(info.backend, "cpu");
    fgmm_model_free(m);
}

TEST(Errors, ModelCallsRejectBadInput) {
    auto x = planted(100, 4, 2, 3.0, 1);
    FgmmModel* m = model_from_rows(x.data(), 100, 4, 2, FGMM_COV_ISOTROPIC, 1.0, 2);
    std::vector<double> nk(2);
    std::vector<float> ll(100);
    std::vector<fgmm_idx_t> lab(100);
    expect_error(fgmm_estep(nullptr, nullptr, 100, FGMM_F32, x.data(), nk.data(), 0, 0, 0), FGMM_ERR_NULL, "model");
    expect_error(fgmm_estep(m, nullptr, 100, FGMM_F32, x.data(), nullptr, 0, 0, 0), FGMM_ERR_NULL, "nk");
    expect_error(fgmm_estep(m, nullptr, 100, FGMM_F32, nullptr, nk.data(), 0, 0, 0), FGMM_ERR_NULL, "x is NULL");
    expect_error(fgmm_loglik(m, nullptr, -1, FGMM_F32, x.data(), ll.data()), FGMM_ERR_ARG, "n = -1");
    expect_error(fgmm_assign_topm(m, nullptr, 100, FGMM_F32, x.data(), 3, lab.data(), nullptr), FGMM_ERR_ARG, "m = 3");
    std::vector<float> y = x;
    y[0] = NAN;
    expect_error(fgmm_loglik(m, nullptr, 100, FGMM_F32, y.data(), ll.data()), FGMM_ERR_DATA, "non-finite");
    fgmm_model_free(m);
}

TEST(Errors, ModelNewRejectsBadParameters) {
    float mu[4] = {0, 0, 1, 1}, var[2] = {1, 1}, w[2] = {1, 1};
    FgmmModel* m = nullptr;
    expect_error(fgmm_model_new(&m, 2, 2, FGMM_COV_ISOTROPIC, nullptr, var, w), FGMM_ERR_NULL, "means");
    float badv[2] = {1, 0};
    expect_error(fgmm_model_new(&m, 2, 2, FGMM_COV_ISOTROPIC, mu, badv, w), FGMM_ERR_DATA, "variance 1");
    float badw[2] = {1, NAN};
    expect_error(fgmm_model_new(&m, 2, 2, FGMM_COV_ISOTROPIC, mu, var, badw), FGMM_ERR_DATA, "weight 1");
    // each weight finite and > 0, but normalised the second is 1e-60: 0 as a float (fuzz_index found a
    // model sidecar so: it read, and the file written from it did not read back)
    float tiny[2] = {1e30f, 1e-30f};
    expect_error(fgmm_model_new(&m, 2, 2, FGMM_COV_ISOTROPIC, mu, var, tiny), FGMM_ERR_DATA,
                 "weight 1 is 1e-30 of their sum 1e+30: below the smallest normal float");
    float fine[2] = {1e30f, 1e-6f};  // 1e-36 once normalised: a normal float, kept
    ASSERT_EQ(fgmm_model_new(&m, 2, 2, FGMM_COV_ISOTROPIC, mu, var, fine), FGMM_OK) << fgmm_get_last_error();
    EXPECT_GE(fgmm_model_weights(m)[1], FLT_MIN);
    EXPECT_FLOAT_EQ(fgmm_model_weights(m)[0], 1.0f);
    fgmm_model_free(m);
    m = nullptr;
    expect_error(fgmm_model_new(&m, 0, 2, FGMM_COV_ISOTROPIC, mu, var, w), FGMM_ERR_ARG, "k = 0");
    EXPECT_EQ(m, nullptr);
}

TEST(Errors, ModelFileRoundTripAndCorruption) {
    auto x = planted(200, 5, 3, 3.0, 1);
    FgmmModel* m = model_from_rows(x.data(), 200, 5, 3, FGMM_COV_DIAGONAL, 1.0, 2);
    std::string f = tmp("model.fgmm");
    ASSERT_EQ(fgmm_model_write(m, f.c_str()), 0);
    FgmmModel* r = nullptr;
    ASSERT_EQ(fgmm_model_read(f.c_str(), &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_model_covariance(r), FGMM_COV_DIAGONAL);
    EXPECT_EQ(0, memcmp(fgmm_model_means(m), fgmm_model_means(r), 15 * sizeof(float)));
    EXPECT_EQ(0, memcmp(fgmm_model_variances(m), fgmm_model_variances(r), 15 * sizeof(float)));
    fgmm_model_free(r);
    r = nullptr;
    // truncated
    FILE* fp = fopen(f.c_str(), "rb");
    std::vector<char> bytes(4096);
    size_t sz = fread(bytes.data(), 1, bytes.size(), fp);
    fclose(fp);
    std::string g = tmp("trunc.fgmm");
    fp = fopen(g.c_str(), "wb");
    fwrite(bytes.data(), 1, sz - 3, fp);
    fclose(fp);
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO, "truncated");
    bytes[0] = 'X';  // wrong magic
    fp = fopen(g.c_str(), "wb");
    fwrite(bytes.data(), 1, sz, fp);
    fclose(fp);
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO, "not a flashgmm model");
    expect_error(fgmm_model_read("/nonexistent/dir/x.fgmm", &r), FGMM_ERR_IO, "cannot open");
    EXPECT_EQ(r, nullptr);
    fgmm_model_free(m);
}

namespace {
void write_file(const std::string& f, const void* p, size_t n) {
    FILE* fp = fopen(f.c_str(), "wb");
    fwrite(p, 1, n, fp);
    fclose(fp);
}
// A model file header: magic, k, d, covariance.
std::vector<char> model_header(int32_t k, int32_t d, int32_t cov) {
    std::vector<char> b(20);
    memcpy(b.data(), "FGMMv001", 8);
    int32_t h[3] = {k, d, cov};
    memcpy(b.data() + 8, h, 12);
    return b;
}
}  // namespace

TEST(Errors, ModelFileHeaderCheckedAgainstFileSizeFirst) {
    std::string g = tmp("hostile.fgmm");
    FgmmModel* r = nullptr;
    auto b = model_header(1 << 24, 1 << 20, FGMM_COV_DIAGONAL);  // 20 bytes; k*d overflows int
    write_file(g, b.data(), b.size());
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO, "truncated");
    EXPECT_NE(std::string(fgmm_get_last_error()).find("has 140737555464212"), std::string::npos)
        << fgmm_get_last_error();
    b = model_header(1 << 24, 80, FGMM_COV_ISOTROPIC);  // 42 bytes claiming a 5 GB model
    b.resize(42);
    write_file(g, b.data(), b.size());
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO,
                 "42 bytes; a 16777216 x 80 isotropic model has 5502926868");
    b = model_header(2, 3, 7);
    write_file(g, b.data(), b.size());
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO, "bad header (k = 2, d = 3, covariance 7)");
    b = model_header(1, 1, FGMM_COV_ISOTROPIC);
    float vals[4] = {0, 1, 1, 0};
    b.insert(b.end(), (char*)vals, (char*)(vals + 4));
    write_file(g, b.data(), b.size());
    expect_error(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO, "trailing bytes");
    EXPECT_EQ(r, nullptr);
}

TEST(Errors, ModelFileMessagesAreNotGarbled) {
    std::string g = tmp("nan.fgmm");
    auto b = model_header(1, 2, FGMM_COV_ISOTROPIC);
    float vals[4] = {NAN, 1, 1, 1};  // mu, var, w
    b.insert(b.end(), (char*)vals, (char*)(vals + 4));
    write_file(g, b.data(), b.size());
    FgmmModel* r = nullptr;
    EXPECT_EQ(fgmm_model_read(g.c_str(), &r), FGMM_ERR_IO);
    EXPECT_EQ(std::string(fgmm_get_last_error()), "'" + g + "': mean 0 is not finite");
}

TEST(Errors, ModelWriteIsAtomicAndRefusesNonRegularTargets) {
    auto x = planted(200, 5, 3, 3.0, 1);
    FgmmModel* m = model_from_rows(x.data(), 200, 5, 3, FGMM_COV_ISOTROPIC, 1.0, 2);
    expect_error(fgmm_model_write(m, "/dev/null"), FGMM_ERR_IO, "not a regular file");
    std::string dir = tmp("atomic_dir");
    std::string cmd = "rm -rf '" + dir + "' && mkdir '" + dir + "'";
    ASSERT_EQ(system(cmd.c_str()), 0);
    std::string f = dir + "/m.fgmm";
    write_file(f, "old", 3);
    ASSERT_EQ(fgmm_model_write(m, f.c_str()), 0) << fgmm_get_last_error();
    FgmmModel* r = nullptr;
    ASSERT_EQ(fgmm_model_read(f.c_str(), &r), 0) << fgmm_get_last_error();
    fgmm_model_free(r);
    cmd = "test $(ls -A '" + dir + "' | wc -l) -eq 1";  // no temporary file left behind
    EXPECT_EQ(system(cmd.c_str()), 0);
    expect_error(fgmm_model_write(m, (dir + "/no/such/dir.fgmm").c_str()), FGMM_ERR_IO, "No such file");
    fgmm_model_free(m);
}

// What a plugin built on the public headers uses (plugin/ is built with capi/ only): the error
// channel, the data check, safe input and atomic output.
TEST(Errors, PublicBuildingBlocksForPlugins) {
    EXPECT_EQ(fgmm_set_last_error(FGMM_ERR_STATE, "my_plugin: step %d of %s", 2, "3"), FGMM_ERR_STATE);
    EXPECT_STREQ(fgmm_get_last_error(), "my_plugin: step 2 of 3");
    EXPECT_EQ(fgmm_set_last_error(FGMM_ERR_IO, "wrapped: %s", fgmm_get_last_error()), FGMM_ERR_IO);
    EXPECT_STREQ(fgmm_get_last_error(), "wrapped: my_plugin: step 2 of 3");  // its own message as an argument

    std::vector<float> x = {1, 2, 3, 4, 5, 6};
    EXPECT_EQ(fgmm_check_data(2, 3, FGMM_F32, x.data(), "my_add"), FGMM_OK);
    expect_error(fgmm_check_data(2, 3, FGMM_F32, nullptr, "my_add"), FGMM_ERR_NULL, "my_add: x is NULL");
    expect_error(fgmm_check_data(0, 3, FGMM_F32, x.data(), nullptr), FGMM_ERR_ARG, "fgmm_check_data: n = 0");
    expect_error(fgmm_check_data(2, 0, FGMM_F32, x.data(), "my_add"), FGMM_ERR_ARG, "d = 0");
    expect_error(fgmm_check_data(2, 3, (FgmmDtype)7, x.data(), "my_add"), FGMM_ERR_ARG, "dtype 7");
    x[4] = NAN;
    expect_error(fgmm_check_data(2, 3, FGMM_F32, x.data(), "my_add"), FGMM_ERR_DATA,
                 "my_add: row 1 has a non-finite value (nan) at dimension 1");
    EXPECT_TRUE(std::isnan(x[4]));

    std::string dir = tmp("plugin_files");
    ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir '" + dir + "'").c_str()), 0);
    std::string f = dir + "/side.txt";
    write_file(f, "old", 3);
    FgmmOutput o;
    ASSERT_EQ(fgmm_output_begin(f.c_str(), &o), 0) << fgmm_get_last_error();
    fputs("new", o.f);
    ASSERT_EQ(fgmm_output_end(&o, f.c_str(), 0), FGMM_ERR_IO);  // abandoned: the old file stays
    FILE* in = nullptr;
    int64_t size = -1;
    ASSERT_EQ(fgmm_open_input(f.c_str(), &in, &size), 0) << fgmm_get_last_error();
    char buf[8] = {0};
    EXPECT_EQ(fread(buf, 1, sizeof buf, in), 3u);
    EXPECT_STREQ(buf, "old");
    EXPECT_EQ(size, 3);
    fclose(in);
    ASSERT_EQ(fgmm_output_begin(f.c_str(), &o), 0) << fgmm_get_last_error();
    fputs("newer", o.f);
    ASSERT_EQ(fgmm_output_end(&o, f.c_str(), 1), 0) << fgmm_get_last_error();
    ASSERT_EQ(fgmm_open_input(f.c_str(), &in, &size), 0) << fgmm_get_last_error();
    EXPECT_EQ(size, 5);
    fclose(in);
    EXPECT_EQ(system(("test $(ls -A '" + dir + "' | wc -l) -eq 1").c_str()), 0);  // no temporary left
    expect_error(fgmm_open_input(dir.c_str(), &in, &size), FGMM_ERR_IO, "not a regular file");
    EXPECT_EQ(in, nullptr);
    expect_error(fgmm_output_begin(dir.c_str(), &o), FGMM_ERR_IO, "not a regular file");

    // NULL arguments and misuse: codes, not crashes
    const char* no_fmt = nullptr;
    EXPECT_EQ(fgmm_set_last_error(FGMM_ERR_ARG, no_fmt), FGMM_ERR_ARG);
    EXPECT_STREQ(fgmm_get_last_error(), "(no message)");
    in = (FILE*)0x1;
    expect_error(fgmm_open_input(nullptr, &in, &size), FGMM_ERR_NULL, "path is NULL");
    EXPECT_EQ(in, nullptr);
    expect_error(fgmm_open_input(f.c_str(), nullptr, &size), FGMM_ERR_NULL, "is NULL");
    expect_error(fgmm_open_input(f.c_str(), &in, nullptr), FGMM_ERR_NULL, "size is NULL");
    expect_error(fgmm_output_begin(nullptr, &o), FGMM_ERR_NULL, "path is NULL");
    EXPECT_EQ(o.f, nullptr);
    expect_error(fgmm_output_begin(f.c_str(), nullptr), FGMM_ERR_NULL, "is NULL");
    expect_error(fgmm_output_end(nullptr, f.c_str(), 1), FGMM_ERR_NULL, "is NULL");
    expect_error(fgmm_output_end(&o, f.c_str(), 1), FGMM_ERR_STATE, "no output begun");  // after a failed begin
    ASSERT_EQ(fgmm_output_begin(f.c_str(), &o), 0) << fgmm_get_last_error();
    expect_error(fgmm_output_end(&o, nullptr, 1), FGMM_ERR_NULL, "path is NULL; the output is removed");
    expect_error(fgmm_output_end(&o, f.c_str(), 1), FGMM_ERR_STATE, "no output begun");  // ended twice
    EXPECT_EQ(system(("test $(ls -A '" + dir + "' | wc -l) -eq 1").c_str()), 0);         // its temporary removed
}

// Several threads at once: each its own message and data check; outputs to their own paths and to
// one shared path (the last rename wins, whole), no temporary file left.
TEST(Errors, ConcurrentPluginBuildingBlocks) {
    std::string dir = tmp("plugin_threads");
    ASSERT_EQ(system(("rm -rf '" + dir + "' && mkdir '" + dir + "'").c_str()), 0);
    const int T = 4, R = 20;
    std::vector<int> bad(T, 0);
    std::vector<std::thread> th;
    for (int t = 0; t < T; t++)
        th.emplace_back([&, t] {
            std::vector<float> x(8 * 4, 1.0f);
            x[(size_t)t * 4 + 1] = INFINITY;
            std::string own = dir + "/own" + std::to_string(t), shared = dir + "/shared";
            std::string line = "thread " + std::to_string(t) + "\n";
            for (int r = 0; r < R; r++) {
                std::string want = "thread " + std::to_string(t) + " round " + std::to_string(r);
                fgmm_set_last_error(FGMM_ERR_STATE, "%s", want.c_str());
                if (want != fgmm_get_last_error()) bad[t]++;
                std::string row = "row " + std::to_string(t) + " has";
                if (fgmm_check_data(8, 4, FGMM_F32, x.data(), "t") != FGMM_ERR_DATA ||
                    !strstr(fgmm_get_last_error(), row.c_str()))
                    bad[t]++;
                for (const std::string& p : {own, shared}) {
                    FgmmOutput o;
                    if (fgmm_output_begin(p.c_str(), &o)) {
                        bad[t]++;
                        continue;
                    }
                    fputs(line.c_str(), o.f);
                    if (fgmm_output_end(&o, p.c_str(), 1)) bad[t]++;
                }
            }
        });
    for (auto& h : th) h.join();
    for (int t = 0; t < T; t++) EXPECT_EQ(bad[t], 0) << "thread " << t << ": " << fgmm_get_last_error();
    FILE* in = nullptr;
    int64_t size = 0;
    ASSERT_EQ(fgmm_open_input((dir + "/shared").c_str(), &in, &size), 0) << fgmm_get_last_error();
    char buf[32] = {0};
    EXPECT_EQ(fread(buf, 1, sizeof buf - 1, in), 9u);  // one thread's line, whole
    fclose(in);
    EXPECT_EQ(std::string(buf).rfind("thread ", 0), 0u) << buf;
    EXPECT_EQ(system(("test $(ls -A '" + dir + "' | wc -l) -eq " + std::to_string(T + 1)).c_str()), 0);
}

namespace {
// Runs the command-line tool; returns its exit status and combined output.
int cli(const std::string& args, std::string* output) { return run_cli(args, output); }
std::string file_bytes(const std::string& f) {
    FILE* fp = fopen(f.c_str(), "rb");
    std::string s;
    char buf[4096];
    size_t got;
    while (fp && (got = fread(buf, 1, sizeof buf, fp)) > 0) s.append(buf, got);
    if (fp) fclose(fp);
    return s;
}
void expect_cli_error(const std::string& args, const char* needle) {
    std::string out;
    EXPECT_NE(cli(args, &out), 0) << args;
    EXPECT_NE(out.find(needle), std::string::npos) << args << ": '" << out << "' lacks '" << needle << "'";
}
}  // namespace

TEST(Cli, NeverOverwritesTheInput) {
    auto x = planted(200, 4, 2, 3.0, 1);
    FgmmVecs v = {x.data(), 200, 4, FGMM_F32};
    std::string in = tmp("cli_in.fvecs"), link = tmp("cli_link.fvecs");
    ASSERT_EQ(fgmm_vecs_write(in.c_str(), &v), 0);
    std::string before = file_bytes(in);
    unlink(link.c_str());
    ASSERT_EQ(symlink(in.c_str(), link.c_str()), 0);
    expect_cli_error("train " + in + " --k 2 --out " + in, "is the input");
    expect_cli_error("train " + in + " --k 2 --out " + link, "is the input");  // same file, other name
    expect_cli_error("convert " + in + " " + link, "is the input");
    EXPECT_EQ(file_bytes(in), before);
    expect_cli_error("convert " + in + " " + tmp("o.bvecs") + " --out " + tmp("x.fvecs"), "no --out");
    expect_cli_error("train " + in + " --out " + tmp("a.gmm") + " --out " + tmp("b.gmm"), "twice");
    // unwritable output: refused before training (no "em" lines printed)
    std::string out;
    EXPECT_NE(cli("train " + in + " --k 2 --out /nonexistent/dir/m.gmm", &out), 0);
    EXPECT_NE(out.find("No such file or directory"), std::string::npos) << out;
    EXPECT_EQ(out.find("em "), std::string::npos) << out;
    std::string m = tmp("cli.gmm");
    EXPECT_EQ(cli("train " + in + " --k 2 --iter 2 --backend cpu --out " + m, &out), 0) << out;
    FgmmModel* r = nullptr;
    EXPECT_EQ(fgmm_model_read(m.c_str(), &r), 0) << fgmm_get_last_error();
    fgmm_model_free(r);
    unlink(link.c_str());
}

TEST(Cli, RejectsBadNumbersAndUnknownCommands) {
    std::string in = tmp("cli_num.fvecs");
    auto x = planted(50, 4, 2, 3.0, 1);
    FgmmVecs v = {x.data(), 50, 4, FGMM_F32};
    ASSERT_EQ(fgmm_vecs_write(in.c_str(), &v), 0);
    expect_cli_error("train " + in + " --k abc", "--k 'abc': want an integer");
    expect_cli_error("train " + in + " --k 99999999999", "--k '99999999999': want an integer");
    expect_cli_error("train " + in + " --k 12x", "want an integer");
    expect_cli_error("train " + in + " --iter -1", "--iter '-1'");
    expect_cli_error("train " + in + " --max-rows 99999999999999999999", "--max-rows");
    expect_cli_error("train " + in + " --tol nan", "--tol 'nan'");
    // unknown command: rejected before the file is read (it does not exist)
    expect_cli_error("frobnicate /nonexistent.fvecs", "unknown command 'frobnicate'");
    expect_cli_error("shape /nonexistent.fvecs", "No such file or directory");
}

TEST(Errors, DistinctPointsJudgedOnTheWholeDataWhenTheSampleIsNot) {
    // 15,980 copies of one point + 20 distinct points: a 512-row sample sees about one distinct
    // point, the whole data has 21; k = 8 trains. With 5 distinct points beside the copies it fails.
    for (int distinct : {20, 5}) {
        int d = 4, n = 16000;
        std::vector<float> x = mostly_copies(n, d, distinct, 37);
        FgmmParams p = few_distinct_params();
        FgmmModel* m = nullptr;
        int rc = fgmm_train(&p, n, d, FGMM_F32, x.data(), &m, nullptr);
        if (distinct == 20) {
            EXPECT_EQ(rc, 0) << fgmm_get_last_error();
        } else {
            EXPECT_EQ(rc, FGMM_ERR_DATA);
            EXPECT_NE(std::string(fgmm_get_last_error()).find("fewer than k = 8 distinct points (found 6)"),
                      std::string::npos)
                << fgmm_get_last_error();
        }
        fgmm_model_free(m);
    }
}

// Sizes whose products overflow, negative dimensions and variances whose reciprocal is not a float are
// codes, never a wrapped allocation, a read of n x d wrapped to 0 values, or a float-to-int overflow.
TEST(Errors, OverflowingSizesAndTinyVariances) {
    float one = 1;
    // n x d wraps to 0 in size_t: the values were never read and the call said OK
    expect_error(fgmm_check_data((fgmm_idx_t)1 << 62, 4, FGMM_F32, &one, "caller"), FGMM_ERR_ARG, "caller: n = ");
    expect_error(fgmm_check_data((fgmm_idx_t)1 << 62, 4, FGMM_U8, &one, nullptr), FGMM_ERR_ARG, "overflow");
    expect_error(fgmm_check_data(INT64_MAX, 1 << 20, FGMM_F32, &one, nullptr), FGMM_ERR_ARG, "overflow");
    FgmmParams p = cpu_params(2);
    FgmmModel* m = nullptr;
    expect_error(fgmm_train(&p, (fgmm_idx_t)1 << 62, 4, FGMM_F32, &one, &m, nullptr), FGMM_ERR_ARG, "overflow");
    // a write of 2^62 rows read far past the one value (row i at i x d x 4 bytes, wrapped)
    FgmmVecs big = {&one, (fgmm_idx_t)1 << 62, 4, FGMM_F32};
    std::string f = tmp("overflow.fvecs");
    unlink(f.c_str());
    expect_error(fgmm_vecs_write(f.c_str(), &big), FGMM_ERR_ARG, "addressable");
    EXPECT_NE(access(f.c_str(), F_OK), 0);
    // d < 0 was a calloc of a wrapped size before the shape check (ASan: allocation-size-too-big)
    auto x = planted(100, 4, 2, 3.0, 1);
    for (int d : {-1, -4, INT32_MIN})
        expect_error(fgmm_train(&p, 100, d, FGMM_F32, x.data(), &m, nullptr), FGMM_ERR_ARG, "d = ");
    EXPECT_EQ(m, nullptr);

    float mu[2] = {0, 1}, w[2] = {1, 1};
    float sub[2] = {1e-40f, 1};  // subnormal: 0.5 / var is inf
    expect_error(fgmm_model_new(&m, 2, 1, FGMM_COV_ISOTROPIC, mu, sub, w), FGMM_ERR_DATA, "normal float");
    // a tiny normal variance: log-density terms of -5e29 (beyond int after the exp's scaling) give 0, exactly
    float tiny[2] = {1e-30f, 1};
    ASSERT_EQ(fgmm_model_new(&m, 2, 1, FGMM_COV_ISOTROPIC, mu, tiny, w), 0) << fgmm_get_last_error();
    float xs[3] = {0, 1, 0.5f}, ll[3];
    fgmm_idx_t lab[3];
    float resp[3];
    ASSERT_EQ(fgmm_loglik(m, &p, 3, FGMM_F32, xs, ll), 0) << fgmm_get_last_error();
    const double c = std::log(0.5) - 0.5 * std::log(2 * M_PI);
    EXPECT_NEAR(ll[0], c - 0.5 * std::log(1e-30), 1e-3);  // component 0 alone
    EXPECT_NEAR(ll[1], c - 0.0, 1e-4);                    // component 1 alone
    EXPECT_NEAR(ll[2], c - 0.125, 1e-4);
    ASSERT_EQ(fgmm_assign_topm(m, &p, 3, FGMM_F32, xs, 1, lab, resp), 0) << fgmm_get_last_error();
    EXPECT_EQ(lab[0], 0);
    EXPECT_EQ(lab[1], 1);
    EXPECT_EQ(lab[2], 1);
    for (float r : resp) EXPECT_EQ(r, 1.0f);
    fgmm_model_free(m);
}

// The CLI parses HDF5 inputs in a child process by default: a file that crashes libhdf5 is a message
// naming it (the signal; under ASan the child's handler exits instead), and the CLI exits 1.
TEST(Cli, Hdf5CrashIsAMessageNotTheEnd) {
    if (!fgmm_vecs_hdf5_available()) GTEST_SKIP() << "built without HDF5";
    std::string crash = test_data("hdf5_crashes_libhdf5.h5"), out;
    for (const char* cmd : {"shape ", "train ", "convert "}) {
        std::string args = cmd + crash + (cmd[0] == 'c' ? " " + tmp("crash.fvecs") : "");
        EXPECT_EQ(cli(args, &out), 1) << args << ": " << out;
        EXPECT_NE(out.find("the HDF5 reader (child process"), std::string::npos) << out;
#ifndef __SANITIZE_ADDRESS__
        EXPECT_NE(out.find("died of signal"), std::string::npos) << out;
#endif
    }
    expect_cli_error("shape " + crash + " --hdf5 sideways", "--hdf5 'sideways': want one of child, in-process");
    EXPECT_EQ(cli("shape " + embedded("sift10K_byte.h5") + " --hdf5 in-process", &out), 0) << out;
    EXPECT_EQ(out, "9000 128 uint8\n");
    EXPECT_EQ(cli("shape " + embedded("sift10K_byte.h5") + " --dataset query", &out), 0) << out;
    EXPECT_EQ(out, "1000 128 uint8\n");
}
