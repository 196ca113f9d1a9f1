/* SPDX-License-Identifier: MIT */
// What the index-file tests (tests/test_ivf_io*.cpp) share: file helpers, the small spilled index
// of fuzz/index_setup.h, and how many entries a written index reads back with.
#ifndef FGMM_TESTS_IVF_IO_COMMON_H
#define FGMM_TESTS_IVF_IO_COMMON_H
#include <gtest/gtest.h>

#include <faiss/c_api/index_io_c.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "../fuzz/index_setup.h"
#include "common.h"

namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const std::string& f, const std::string& data) { std::ofstream(f, std::ios::binary) << data; }

// A fresh, empty directory.
std::string fresh_dir(const std::string& name) {
    std::string d = testing::TempDir() + "ivf_io_" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// Names in a directory other than keep.
std::vector<std::string> others(const std::string& dir, const std::set<std::string>& keep) {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(dir))
        if (!keep.count(e.path().filename().string())) out.push_back(e.path().filename().string());
    return out;
}

// fuzz/index_setup.h's index: 64 vectors in 128 entries; more = 4 rows added (ids given), 136.
struct Tiny {
    FgmmIvf* h = nullptr;
    FaissIndex* index = nullptr;
    explicit Tiny(std::vector<idx_t> more = {}) {
        EXPECT_EQ(fuzz_ivf_build(&h, &index), 0) << fgmm_get_last_error();
        if (more.empty() || !h) return;
        std::vector<float> x(more.size() * FUZZ_IVF_D);
        fuzz_ivf_rows(x.data(), (int)more.size());
        for (float& v : x) v += 0.25f;  // not the base rows: no distance ties
        EXPECT_EQ(fgmm_ivf_add(h, (idx_t)more.size(), x.data(), more.data(), nullptr), 0) << fgmm_get_last_error();
    }
    ~Tiny() {
        fgmm_ivf_free(h);
        if (index) faiss_Index_free(index);
    }
};

// Entries of the index at path as fgmm_ivf_read gives it; -1 (and the message) if it does not read.
int64_t entries_at(const std::string& path, std::string* why = nullptr) {
    FgmmIvf* r = nullptr;
    if (fgmm_ivf_read(path.c_str(), nullptr, &r)) {
        if (why) *why = fgmm_get_last_error();
        return -1;
    }
    int64_t n = r->n_entries == faiss_Index_ntotal(r->index) ? r->n_entries : -2;
    fgmm_ivf_free(r);
    return n;
}

}  // namespace

#endif  // FGMM_TESTS_IVF_IO_COMMON_H
