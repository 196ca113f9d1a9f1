// Vector-file readers: round trips, and truncated / malformed files.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "flashgmm_io.h"

namespace {
std::string tmp(const char* name) { return testing::TempDir() + name; }
void write_bytes(const std::string& f, const void* p, size_t n) {
    FILE* fp = fopen(f.c_str(), "wb");
    fwrite(p, 1, n, fp);
    fclose(fp);
}
}  // namespace

TEST(Io, RoundTripsAllTexmexTypes) {
    std::vector<float> f = {1.5f, -2, 3, 4, 5, 6};
    std::vector<uint8_t> b = {0, 255, 7, 8, 9, 10};
    std::vector<int32_t> iv = {1, 2, 3, -4, 5, 6};
    struct { const char* name; void* p; FgmmDtype t; } cases[] = {
        {"a.fvecs", f.data(), FGMM_F32}, {"a.bvecs", b.data(), FGMM_U8}, {"a.ivecs", iv.data(), FGMM_I32}};
    for (auto& c : cases) {
        FgmmVecs v = {c.p, 2, 3, c.t}, r;
        ASSERT_EQ(fgmm_vecs_write(tmp(c.name).c_str(), &v), 0) << fgmm_get_last_error();
        ASSERT_EQ(fgmm_vecs_read(tmp(c.name).c_str(), nullptr, 0, &r), 0) << fgmm_get_last_error();
        EXPECT_EQ(r.n, 2);
        EXPECT_EQ(r.d, 3);
        EXPECT_EQ(r.dtype, c.t);
        EXPECT_EQ(0, memcmp(r.data, c.p, 6 * (c.t == FGMM_U8 ? 1 : 4)));
        fgmm_vecs_free(&r);
        ASSERT_EQ(fgmm_vecs_read(tmp(c.name).c_str(), nullptr, 1, &r), 0);  // max_rows
        EXPECT_EQ(r.n, 1);
        fgmm_vecs_free(&r);
    }
}

TEST(Io, RejectsTruncatedAndMalformedFiles) {
    std::vector<float> f = {1, 2, 3, 4, 5, 6};
    FgmmVecs v = {f.data(), 2, 3, FGMM_F32}, r;
    std::string a = tmp("t.fvecs");
    ASSERT_EQ(fgmm_vecs_write(a.c_str(), &v), 0);
    std::vector<char> bytes(32);
    FILE* fp = fopen(a.c_str(), "rb");
    ASSERT_EQ(fread(bytes.data(), 1, 32, fp), 32u);
    fclose(fp);
    write_bytes(a, bytes.data(), 30);  // truncated
    EXPECT_EQ(fgmm_vecs_read(a.c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("truncated"), std::string::npos);
    int32_t bad_d = 4;  // second row claims d = 4
    memcpy(bytes.data() + 16, &bad_d, 4);
    write_bytes(a, bytes.data(), 32);
    EXPECT_EQ(fgmm_vecs_read(a.c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("row 1 has dimension 4"), std::string::npos);
    int32_t neg = -3;
    write_bytes(a, &neg, 4);
    EXPECT_EQ(fgmm_vecs_read(a.c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    write_bytes(a, "", 0);
    EXPECT_EQ(fgmm_vecs_read(a.c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_vecs_read("/nonexistent.fvecs", nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_vecs_read(tmp("x.txt").c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("unknown extension"), std::string::npos);
    EXPECT_EQ(fgmm_vecs_read(nullptr, nullptr, 0, &r), FGMM_ERR_NULL);
    EXPECT_EQ(r.data, nullptr);
    FgmmVecs wrong = {f.data(), 2, 3, FGMM_F32};  // extension / dtype mismatch
    EXPECT_EQ(fgmm_vecs_write(tmp("w.bvecs").c_str(), &wrong), FGMM_ERR_ARG);
}

TEST(Io, Hdf5ReadsFlannLayoutAndRejectsGarbage) {
    if (!fgmm_vecs_hdf5_available()) GTEST_SKIP() << "built without HDF5";
    std::string g = tmp("garbage.h5");
    write_bytes(g, "not hdf5 at all", 15);
    FgmmVecs r;
    EXPECT_EQ(fgmm_vecs_read(g.c_str(), nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("HDF5"), std::string::npos);
    std::string src = std::string(FGMM_SOURCE_DIR) + "/datasets/embedded/sift10K_byte.h5";
    ASSERT_EQ(fgmm_vecs_read(src.c_str(), "query", 0, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r.n, 1000);
    EXPECT_EQ(r.d, 128);
    EXPECT_EQ(r.dtype, FGMM_U8);
    fgmm_vecs_free(&r);
    EXPECT_EQ(fgmm_vecs_read(src.c_str(), "nosuch", 0, &r), FGMM_ERR_IO);
}
