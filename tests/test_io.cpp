/* SPDX-License-Identifier: MIT */
// Vector-file readers: round trips, and truncated / malformed files.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common.h"
#include "flashgmm_io.h"
#include "internal.h"
#ifdef FGMM_WITH_HDF5
#include <hdf5.h>
#endif

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
    struct {
        const char* name;
        void* p;
        FgmmDtype t;
    } cases[] = {{"a.fvecs", f.data(), FGMM_F32}, {"a.bvecs", b.data(), FGMM_U8}, {"a.ivecs", iv.data(), FGMM_I32}};
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

// Shards (the MPI launcher's reads): rows [first, first + count) equal that slice of the whole read,
// for TEXMEX and HDF5; the shape comes without the rows; a first row past the end is refused.
TEST(Io, ReadsRowRangesAndShapes) {
    std::vector<float> f(7 * 3);
    for (size_t i = 0; i < f.size(); i++) f[i] = 0.5f * i;
    FgmmVecs v = {f.data(), 7, 3, FGMM_F32}, r;
    std::vector<std::string> files = {tmp("rows.fvecs")};
    ASSERT_EQ(fgmm_vecs_write(files[0].c_str(), &v), 0) << fgmm_get_last_error();
#ifdef FGMM_WITH_HDF5
    files.push_back(tmp("rows.h5"));
    hid_t h = H5Fcreate(files[1].c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {7, 3};
    hid_t sp = H5Screate_simple(2, dims, nullptr);
    hid_t ds = H5Dcreate2(h, "train", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, f.data()), 0);
    H5Dclose(ds), H5Sclose(sp), H5Fclose(h);
#endif
    for (const std::string& file : files) {
        const char* p = file.c_str();
        fgmm_idx_t n = 0;
        int d = 0;
        FgmmDtype t = FGMM_I32;
        ASSERT_EQ(fgmm_vecs_shape(p, nullptr, &n, &d, &t), 0) << fgmm_get_last_error();
        EXPECT_EQ(n, 7);
        EXPECT_EQ(d, 3);
        EXPECT_EQ(t, FGMM_F32);
        struct {
            fgmm_idx_t first, count, want;
        } cases[] = {{0, 3, 3}, {3, 2, 2}, {5, 0, 2}, {6, 9, 1}};
        for (auto& c : cases) {
            ASSERT_EQ(fgmm_vecs_read_rows(p, nullptr, c.first, c.count, &r), 0)
                << file << ": " << fgmm_get_last_error();
            ASSERT_EQ(r.n, c.want) << file << " from " << c.first;
            EXPECT_EQ(0, memcmp(r.data, f.data() + c.first * 3, c.want * 3 * sizeof(float)))
                << file << " from " << c.first;
            fgmm_vecs_free(&r);
        }
        EXPECT_EQ(fgmm_vecs_read_rows(p, nullptr, 7, 1, &r), FGMM_ERR_ARG) << file;
        EXPECT_NE(std::string(fgmm_get_last_error()).find("past its 7 rows"), std::string::npos);
        EXPECT_EQ(fgmm_vecs_read_rows(p, nullptr, -1, 1, &r), FGMM_ERR_ARG) << file;
        EXPECT_EQ(r.data, nullptr);
    }
    std::vector<char> bytes(7 * 16);  // a row header that differs inside the shard is still found
    FILE* fp = fopen(files[0].c_str(), "rb");
    ASSERT_EQ(fread(bytes.data(), 1, bytes.size(), fp), bytes.size());
    fclose(fp);
    int32_t bad_d = 2;
    memcpy(bytes.data() + 5 * 16, &bad_d, 4);
    write_bytes(files[0], bytes.data(), bytes.size());
    EXPECT_EQ(fgmm_vecs_read_rows(files[0].c_str(), nullptr, 0, 5, &r), 0);  // rows 0-4 are whole
    fgmm_vecs_free(&r);
    EXPECT_EQ(fgmm_vecs_read_rows(files[0].c_str(), nullptr, 4, 2, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("row 5 has dimension 2"), std::string::npos);
    write_bytes(files[0], bytes.data(), bytes.size() - 1);  // size checked whole, also for a shard of whole rows
    EXPECT_EQ(fgmm_vecs_read_rows(files[0].c_str(), nullptr, 0, 1, &r), FGMM_ERR_IO);
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
    std::string src = fgt::embedded("sift10K_byte.h5");
    ASSERT_EQ(fgmm_vecs_read(src.c_str(), "query", 0, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r.n, 1000);
    EXPECT_EQ(r.d, 128);
    EXPECT_EQ(r.dtype, FGMM_U8);
    fgmm_vecs_free(&r);
    EXPECT_EQ(fgmm_vecs_read(src.c_str(), "nosuch", 0, &r), FGMM_ERR_IO);
}

TEST(Io, RefusesNonRegularFiles) {
    FgmmVecs r;
    for (const char* name : {"fifo.fvecs", "fifo.bvecs", "fifo.ivecs", "fifo.h5"}) {
        std::string p = tmp(name);
        unlink(p.c_str());
        ASSERT_EQ(mkfifo(p.c_str(), 0600), 0);
        int rc = fgmm_vecs_read(p.c_str(), nullptr, 0, &r);  // must not block waiting for a writer
        if (rc == FGMM_ERR_IO && !fgmm_vecs_hdf5_available() && !strcmp(name, "fifo.h5")) continue;
        EXPECT_EQ(rc, FGMM_ERR_IO) << name;
        EXPECT_NE(std::string(fgmm_get_last_error()).find("not a regular file"), std::string::npos)
            << fgmm_get_last_error();
        unlink(p.c_str());
    }
    EXPECT_EQ(fgmm_vecs_read("/dev/null.fvecs", nullptr, 0, &r), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("No such file"), std::string::npos) << fgmm_get_last_error();
}

TEST(Io, WriteReplacesAtomicallyAndRefusesNonRegularTargets) {
    std::vector<float> f = {1, 2, 3};
    FgmmVecs v = {f.data(), 1, 3, FGMM_F32};
    std::string dir = tmp("wdir.fvecs");
    rmdir(dir.c_str());
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
    EXPECT_EQ(fgmm_vecs_write(dir.c_str(), &v), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("not a regular file"), std::string::npos);
    rmdir(dir.c_str());
    EXPECT_EQ(fgmm_vecs_write("/nonexistent/dir/x.fvecs", &v), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("No such file"), std::string::npos) << fgmm_get_last_error();
}

#ifdef FGMM_WITH_HDF5
namespace {
// Writes one dataset of file type ftype and shape dims (chunked with chunk if given; data written
// from `data` in memory type mtype over the first rows_written rows, if data != nullptr;
// extendible: unlimited maximum dimensions, so chunks may be larger than the dataset).
void h5_write(const std::string& path, hid_t ftype, const hsize_t dims[2], const hsize_t* chunk, bool deflate,
              hid_t mtype = -1, const void* data = nullptr, hsize_t rows_written = 0, bool extendible = false) {
    hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hsize_t unlimited[2] = {H5S_UNLIMITED, H5S_UNLIMITED};
    hid_t sp = H5Screate_simple(2, dims, extendible ? unlimited : nullptr), pl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) H5Pset_chunk(pl, 2, chunk);
    if (deflate) H5Pset_deflate(pl, 9);
    hid_t ds = H5Dcreate2(f, "train", ftype, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    if (data) {
        hsize_t start[2] = {0, 0}, cnt[2] = {rows_written, dims[1]};
        hid_t ms = H5Screate_simple(2, cnt, nullptr);
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, nullptr, cnt, nullptr);
        ASSERT_GE(H5Dwrite(ds, mtype, ms, sp, H5P_DEFAULT, data), 0);
        H5Sclose(ms);
    }
    H5Dclose(ds);
    H5Pclose(pl);
    H5Sclose(sp);
    H5Fclose(f);
}
void expect_io_error(const std::string& path, const char* needle) {
    FgmmVecs r;
    EXPECT_EQ(fgmm_vecs_read(path.c_str(), nullptr, 0, &r), FGMM_ERR_IO) << path;
    EXPECT_NE(std::string(fgmm_get_last_error()).find(needle), std::string::npos)
        << path << ": '" << fgmm_get_last_error() << "' lacks '" << needle << "'";
    EXPECT_EQ(r.data, nullptr);
}
}  // namespace

TEST(Io, Hdf5RejectsShapesTheFileCannotHold) {
    std::string p = tmp("huge.h5");
    hsize_t huge[2] = {(hsize_t)1 << 62, 4}, chunk[2] = {1, 4};
    h5_write(p, H5T_IEEE_F32LE, huge, chunk, false);  // 2^62 x 4 float32: the size product wraps
    expect_io_error(p, "overflow");
    hsize_t big[2] = {(hsize_t)1 << 40, 4};  // contiguous, nothing stored: 16 TB declared
    h5_write(p, H5T_IEEE_F32LE, big, nullptr, false);
    expect_io_error(p, "truncated or malformed");
    hsize_t wide[2] = {1, (hsize_t)1 << 31}, wchunk[2] = {1, 1024};
    h5_write(p, H5T_IEEE_F32LE, wide, wchunk, false);
    expect_io_error(p, "columns");
    // 64 MB declared, one compressed chunk of zeros stored: refused, not read for minutes
    std::vector<float> zeros(1024 * 16, 0.0f);
    hsize_t sparse[2] = {(hsize_t)1 << 20, 16}, schunk[2] = {1024, 16};
    h5_write(p, H5T_IEEE_F32LE, sparse, schunk, true, H5T_NATIVE_FLOAT, zeros.data(), 1024);
    expect_io_error(p, "expansion");
    // 4 x 3 values in one compressed 1 GB chunk (a 1 MB file): libhdf5 would allocate the whole
    // chunk (1.2 GB resident); refused. The same data in a 256 x 1024 chunk (1 MB) reads.
    float twelve[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    hsize_t small[2] = {4, 3}, gchunk[2] = {(hsize_t)1 << 15, (hsize_t)1 << 13}, mchunk[2] = {256, 1024};
    h5_write(p, H5T_IEEE_F32LE, small, gchunk, true, H5T_NATIVE_FLOAT, twelve, 4, true);
    expect_io_error(p, "chunks of 32768 x 8192");
    // a fuzzer's file whose chunk index claims 4 GB stored in 4 KB: refused before libhdf5 allocates it
    std::ifstream in(fgt::corpus("hdf5") + "/chunk_claims_4gb_stored", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(bytes.size(), 1000u);
    write_bytes(p, bytes.data(), bytes.size());
    expect_io_error(p, "claims 4294967344 stored bytes");
    h5_write(p, H5T_IEEE_F32LE, small, mchunk, true, H5T_NATIVE_FLOAT, twelve, 4, true);
    FgmmVecs t;
    ASSERT_EQ(fgmm_vecs_read(p.c_str(), nullptr, 0, &t), 0) << fgmm_get_last_error();
    EXPECT_EQ(0, memcmp(t.data, twelve, sizeof twelve));
    fgmm_vecs_free(&t);
    // a real compressed dataset of the same chunking still reads
    std::vector<float> vals(4096 * 16);
    for (size_t i = 0; i < vals.size(); i++) vals[i] = (float)(i % 97);
    hsize_t ok[2] = {4096, 16};
    h5_write(p, H5T_IEEE_F32LE, ok, schunk, true, H5T_NATIVE_FLOAT, vals.data(), 4096);
    FgmmVecs r;
    ASSERT_EQ(fgmm_vecs_read(p.c_str(), nullptr, 0, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r.n, 4096);
    EXPECT_EQ(0, memcmp(r.data, vals.data(), vals.size() * 4));
    fgmm_vecs_free(&r);
}

TEST(Io, Hdf5ReadsManySmallChunksInBoundedBlocks) {
    // libhdf5 keeps ~6 KB per chunk one read touches (400k one-value chunks: 2.8 GB); the reader
    // splits such reads into blocks of rows (many rows of few chunks) or of columns (wide rows).
    std::string p = tmp("chunks.h5");
    struct Case {
        hsize_t n, d, c0, c1, first, rows;
    } cases[] = {
        {10000, 3, 1, 1, 4321, 3000},  // 3 chunks per row: blocks of 1365 rows
        {5, 9000, 2, 2, 1, 3},         // 4500 chunks per row band: blocks of 2 rows x 8192 columns
        {7, 5, 3, 2, 2, 5},            // one block, starting inside a chunk
    };
    for (const Case& c : cases) {
        std::vector<float> v(c.n * c.d);
        for (size_t i = 0; i < v.size(); i++) v[i] = (float)i;
        hsize_t dims[2] = {c.n, c.d}, chunk[2] = {c.c0, c.c1};
        h5_write(p, H5T_IEEE_F32LE, dims, chunk, false, H5T_NATIVE_FLOAT, v.data(), c.n);
        FgmmVecs r;
        ASSERT_EQ(fgmm_vecs_read(p.c_str(), nullptr, 0, &r), 0) << fgmm_get_last_error();
        ASSERT_EQ(r.n, (fgmm_idx_t)c.n);
        EXPECT_EQ(0, memcmp(r.data, v.data(), v.size() * 4)) << c.n << " x " << c.d;
        fgmm_vecs_free(&r);
        ASSERT_EQ(fgmm_vecs_read_rows(p.c_str(), nullptr, c.first, c.rows, &r), 0) << fgmm_get_last_error();
        ASSERT_EQ(r.n, (fgmm_idx_t)c.rows);
        EXPECT_EQ(0, memcmp(r.data, v.data() + c.first * c.d, c.rows * c.d * 4)) << c.n << " x " << c.d;
        fgmm_vecs_free(&r);
    }
    // 400k one-value chunks declared, 1,000 written (a 55 KB file): mostly unwritten, refused
    hsize_t sparse[2] = {400000, 1}, one[2] = {1, 1};
    std::vector<float> w(1000, 1.0f);
    h5_write(p, H5T_IEEE_F32LE, sparse, one, false, H5T_NATIVE_FLOAT, w.data(), 1000);
    expect_io_error(p, "declares 400000 chunks");
}

TEST(Io, Hdf5RefusesValuesOutOfRangeInsteadOfClipping) {
    std::string p = tmp("range.h5");
    hsize_t dims[2] = {2, 2};
    uint32_t u[4] = {1, 2, 3000000000u, 4};
    h5_write(p, H5T_STD_U32LE, dims, nullptr, false, H5T_NATIVE_UINT32, u, 2);
    expect_io_error(p, "outside the int32 range");
    double big[4] = {1, 2, 1e300, 4};
    h5_write(p, H5T_IEEE_F64LE, dims, nullptr, false, H5T_NATIVE_DOUBLE, big, 2);
    expect_io_error(p, "outside the float32 range");
    int64_t small[4] = {-5, 2, 2147483647, -2147483648LL};  // int64 values that fit are read
    h5_write(p, H5T_STD_I64LE, dims, nullptr, false, H5T_NATIVE_INT64, small, 2);
    FgmmVecs r;
    ASSERT_EQ(fgmm_vecs_read(p.c_str(), nullptr, 0, &r), 0) << fgmm_get_last_error();
    EXPECT_EQ(r.dtype, FGMM_I32);
    EXPECT_EQ(((int32_t*)r.data)[2], 2147483647);
    EXPECT_EQ(((int32_t*)r.data)[3], INT32_MIN);
    fgmm_vecs_free(&r);
}
#endif

// Every file of the fuzzers' seed corpora (valid files, malformed ones and past crashes) reads or
// fails with a code; the ASan build checks that nothing crashes or leaks.
TEST(Io, FuzzCorpusFilesReadOrFailCleanly) {
    namespace fs = std::filesystem;

    int files = 0;
    for (const char* kind : {"vecs", "hdf5", "model"}) {
        if (!strcmp(kind, "hdf5") && !fgmm_vecs_hdf5_available()) continue;
        for (auto& e : fs::directory_iterator(fgt::corpus(kind))) {
            std::ifstream in(e.path(), std::ios::binary);
            std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            static const char* vext[3] = {"fvecs", "bvecs", "ivecs"};
            std::string ext = !strcmp(kind, "vecs")   ? vext[(uint8_t)bytes[0] % 3]
                              : !strcmp(kind, "hdf5") ? "h5"
                                                      : "gmm";
            if (!strcmp(kind, "vecs")) bytes.erase(0, 1);  // the target's extension byte
            std::string f = tmp(("corpus." + ext).c_str());
            write_bytes(f, bytes.data(), bytes.size());
            int rc;
            if (ext == "gmm") {
                FgmmModel* m = nullptr;
                rc = fgmm_model_read(f.c_str(), &m);
                fgmm_model_free(m);
            } else {
                FgmmVecs v;
                rc = fgmm_vecs_read(f.c_str(), nullptr, 0, &v);
                fgmm_vecs_free(&v);
            }
            EXPECT_LE(rc, 0) << e.path();
            if (rc) EXPECT_STRNE(fgmm_get_last_error(), "") << e.path();
            files++;
        }
    }
    EXPECT_GE(files, 10);
}

namespace {
// The child of an isolated read dies by a signal, as libhdf5 does on a crafted file (SIGABRT: the
// sanitizers leave it alone; their SIGSEGV handler would turn a segfault into an exit status).
void die_by_abort() { raise(SIGABRT); }
}  // namespace

// fgmm_vecs_read_isolated gives what fgmm_vecs_read gives; a reader that dies by a signal (libhdf5 on
// a file fuzz_hdf5 found: a segfault in H5F__accum_read) is an error naming the file and the signal,
// and this process goes on.
TEST(Io, IsolatedReadSurvivesACrashingHdf5Parser) {
    if (!fgmm_vecs_hdf5_available()) GTEST_SKIP() << "built without HDF5";
    std::string src = fgt::embedded("sift10K_byte.h5");
    for (fgmm_idx_t max_rows : {0, 7}) {
        FgmmVecs a, b;
        ASSERT_EQ(fgmm_vecs_read(src.c_str(), "dataset", max_rows, &a), 0) << fgmm_get_last_error();
        ASSERT_EQ(fgmm_vecs_read_isolated(src.c_str(), "dataset", max_rows, &b), 0) << fgmm_get_last_error();
        EXPECT_EQ(b.n, max_rows ? 7 : a.n);
        EXPECT_EQ(b.d, 128);
        EXPECT_EQ(b.dtype, FGMM_U8);
        ASSERT_EQ(a.n, b.n);
        EXPECT_EQ(std::memcmp(a.data, b.data, (size_t)a.n * a.d), 0);
        fgmm_vecs_free(&a), fgmm_vecs_free(&b);
    }
    FgmmVecs v;
    // the child's own errors come back with its code and message
    EXPECT_EQ(fgmm_vecs_read_isolated(src.c_str(), "nosuch", 0, &v), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("no dataset 'nosuch'"), std::string::npos)
        << fgmm_get_last_error();
    EXPECT_EQ(fgmm_vecs_read_isolated("/nonexistent.h5", nullptr, 0, &v), FGMM_ERR_IO);
    EXPECT_EQ(fgmm_vecs_read_isolated(src.c_str(), nullptr, -1, &v), FGMM_ERR_ARG);
    EXPECT_EQ(fgmm_vecs_read_isolated(nullptr, nullptr, 0, &v), FGMM_ERR_NULL);
    EXPECT_EQ(fgmm_vecs_read_isolated(src.c_str(), nullptr, 0, nullptr), FGMM_ERR_NULL);
    // TEXMEX files are read in this process, as fgmm_vecs_read reads them
    std::vector<float> x = {1, 2, 3, 4, 5, 6};
    FgmmVecs w = {x.data(), 3, 2, FGMM_F32};
    std::string fv = tmp("isolated.fvecs");
    ASSERT_EQ(fgmm_vecs_write(fv.c_str(), &w), 0);
    ASSERT_EQ(fgmm_vecs_read_isolated(fv.c_str(), nullptr, 2, &v), 0);
    EXPECT_EQ(v.n, 2);
    EXPECT_EQ(((float*)v.data)[3], 4.0f);
    fgmm_vecs_free(&v);

    // a child that dies by a signal (test hook), for the shape and the rows as the CLI reads them
    fgmm_isolated_child_hook = die_by_abort;
    EXPECT_EQ(fgmm_vecs_read_isolated(src.c_str(), nullptr, 0, &v), FGMM_ERR_IO);
    std::string m = fgmm_get_last_error();
    EXPECT_NE(m.find(src), std::string::npos) << m;
    EXPECT_NE(m.find("signal 6"), std::string::npos) << m;
    EXPECT_EQ(v.data, nullptr);
    EXPECT_EQ(fgmm_vecs_read_any(src.c_str(), nullptr, 0, 0, 1, 1, &v), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("signal 6"), std::string::npos) << fgmm_get_last_error();
    EXPECT_EQ(fgmm_vecs_read_any(src.c_str(), "query", 10, 5, 0, 1, &v), FGMM_ERR_IO);
    fgmm_isolated_child_hook = nullptr;
    ASSERT_EQ(fgmm_vecs_read_any(src.c_str(), "query", 10, 5, 0, 1, &v), 0) << fgmm_get_last_error();
    EXPECT_EQ(v.n, 5);
    fgmm_vecs_free(&v);
    ASSERT_EQ(fgmm_vecs_read_any(src.c_str(), "query", 0, 0, 1, 1, &v), 0) << fgmm_get_last_error();
    EXPECT_EQ(v.n, 1000);
    EXPECT_EQ(v.data, nullptr);

    // a real file that crashes libhdf5 1.10.8 (Debian bookworm) in-process; other versions may refuse it
    std::string crash = fgt::test_data("hdf5_crashes_libhdf5.h5");
    int rc = fgmm_vecs_read_isolated(crash.c_str(), nullptr, 0, &v);
    m = fgmm_get_last_error();
    EXPECT_EQ(rc, FGMM_ERR_IO) << m;
    EXPECT_NE(m.find(crash), std::string::npos) << m;
#ifndef __SANITIZE_ADDRESS__  // ASan's SIGSEGV handler exits instead: no signal to compare
    // in-process it ends a process: a child here stands in for the caller that fgmm_vecs_read would kill
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        FgmmVecs u;
        _exit(fgmm_vecs_read(crash.c_str(), nullptr, 0, &u) == FGMM_ERR_IO ? 0 : 3);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) {  // the libhdf5 that crashes: the isolated read named the signal
        EXPECT_NE(m.find("signal " + std::to_string(WTERMSIG(st))), std::string::npos) << m;
    } else {
        EXPECT_EQ(WEXITSTATUS(st), 0) << "a libhdf5 that refuses the file must refuse it with FGMM_ERR_IO";
    }
#endif
}
