/* SPDX-License-Identifier: MIT */
// test_ivf_cli.cpp: `flashgmm ivf build | search` on the embedded sift10K set, and the CLI's help and
// bad-value messages.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>

#include "common.h"

using namespace fgt;

namespace {
std::string tmp(const char* name) { return testing::TempDir() + name; }
bool exists(const std::string& f) {
    struct stat s;
    return stat(f.c_str(), &s) == 0;
}
struct Row {
    double recall, dco, qps;
};
// The search table: nprobe -> its row.
std::map<int, Row> rows(const std::string& out) {
    std::map<int, Row> r;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        int np;
        Row w;
        if (sscanf(line.c_str(), "%d %lf %lf %lf", &np, &w.recall, &w.dco, &w.qps) == 4) r[np] = w;
    }
    return r;
}
void expect_error(const std::string& args, const char* needle) {
    std::string out;
    EXPECT_EQ(run_cli(args, &out), 2) << args << ": " << out;
    EXPECT_NE(out.find(needle), std::string::npos) << args << ": '" << out << "' lacks '" << needle << "'";
}
}  // namespace

TEST(IvfCli, BuildsAndSearchesBothKinds) {
    const std::string data = embedded("sift10K_byte.h5"), faiss = tmp("cli_faiss.index"), def = tmp("cli_def.index");
    const std::string common = " --dataset dataset --nlist 32 --threads 2 --out ";
    std::string out;
    ASSERT_EQ(run_cli("ivf build " + data + common + faiss + " --quantizer faiss", &out), 0) << out;
    EXPECT_NE(out.find("9000 list entries"), std::string::npos) << out;
    EXPECT_FALSE(exists(faiss + ".fgmm"));
    ASSERT_EQ(run_cli("ivf build " + data + common + def + " --iter 5 --kmeans-iter 5 --backend cpu", &out), 0) << out;
    EXPECT_NE(out.find("spill: 1.500 lists per vector"), std::string::npos) << out;
    EXPECT_NE(out.find("13500 list entries"), std::string::npos) << out;
    EXPECT_TRUE(exists(def) && !exists(def + ".fgmm") && !exists(def + ".gmm"));  // one file

    const std::string q =
        " " + data + " --dataset query --gt " + data + " --gt-dataset match --nprobe 1,4,32,99 --repeat 1";
    ASSERT_EQ(run_cli("ivf search " + faiss + q, &out), 0) << out;
    EXPECT_NE(out.find("searched by FAISS"), std::string::npos) << out;
    auto f = rows(out);
    ASSERT_EQ(f.size(), 3u) << out;          // 99 is capped at nlist = 32, already listed
    EXPECT_DOUBLE_EQ(f[32].dco, 32 + 9000);  // every list: the exact search
    EXPECT_DOUBLE_EQ(f[32].recall, 1.0);
    EXPECT_LT(f[1].recall, f[4].recall);
    EXPECT_LT(f[1].dco, f[4].dco);
    EXPECT_GT(f[1].qps, 0);
    ASSERT_EQ(run_cli("ivf search " + def + q, &out), 0) << out;
    EXPECT_NE(out.find("searched by fgmm_ivf_search"), std::string::npos) << out;
    auto d = rows(out);
    ASSERT_EQ(d.size(), 3u) << out;
    EXPECT_DOUBLE_EQ(d[32].dco, 32 + 13500);  // spilled copies are scanned too
    EXPECT_DOUBLE_EQ(d[32].recall, 1.0);      // and their duplicate ids dropped
    EXPECT_GT(d[4].recall, f[4].recall);      // spill: more recall at the same nprobe
    ASSERT_EQ(run_cli("ivf search " + def + q + " --engine faiss", &out), 2) << out;  // would return the copies
    EXPECT_NE(out.find("has spilled copies"), std::string::npos) << out;
    ASSERT_EQ(run_cli("ivf search " + faiss + q + " --engine fgmm", &out), 0) << out;  // the same results
    EXPECT_NE(out.find("searched by fgmm_ivf_search"), std::string::npos) << out;
    auto g = rows(out);
    EXPECT_DOUBLE_EQ(g[4].recall, f[4].recall);
    EXPECT_DOUBLE_EQ(g[4].dco, f[4].dco);
    // without ground truth: no recall column values
    ASSERT_EQ(run_cli("ivf search " + faiss + " " + data + " --dataset query --nprobe 2 --repeat 1", &out), 0) << out;
    EXPECT_NE(out.find("       2          -"), std::string::npos) << out;
}

TEST(IvfCli, HelpAndBadValuesSayWhatIsValid) {
    std::string out;
    for (const char* c : {"--help", "ivf --help", "ivf build --help", "ivf search --help", "train --help",
                          "train FILE --help", "convert --help", "shape -h"}) {
        EXPECT_EQ(run_cli(c, &out), 0) << c << ": " << out;
        EXPECT_NE(out.find("usage"), std::string::npos) << c << ": " << out;
    }
    const std::string data = embedded("sift10K_byte.h5"), o = " --out " + tmp("cli_bad.index");
    expect_error("ivf build " + data + o + " --quantizer best",
                 "--quantizer 'best': want one of auto, gmm, kmeans, faiss");
    expect_error("ivf build " + data + o + " --rule spill", "--rule 'spill': want one of soar, resp, tau, topm, hard");
    expect_error("ivf build " + data + o + " --select x", "want one of resp2, ratio");
    expect_error("ivf build " + data + o + " --spill-target 0.5", "want 0 or a number in [1, 2]");
    expect_error("ivf build " + data + o + " --spill-target 3", "want a number in [0, 2]");
    expect_error("ivf build " + data + o + " --nlist 0", "--nlist '0': want an integer in [1, ");
    expect_error("ivf build " + data + o + " --cov full", "--cov 'full': want one of iso, diag");
    expect_error("ivf build " + data + o + " --backend tpu", "want one of auto, cpu, gpu");
    expect_error("ivf build " + data + o + " --frob 1", "unknown option --frob");
    expect_error("ivf build " + data + o + " --k 8", "--nlist, not --k");
    expect_error("ivf build " + data + o + " --quantizer faiss --rule soar", "plain FAISS index");
    expect_error("ivf build " + data + " --nlist 8", "needs --out");
    expect_error("ivf build " + data + " --out " + data, "is the input");
    expect_error("ivf search x.index " + data + " --nprobe 0", "--nprobe '0': want an integer");
    expect_error("ivf search x.index " + data + " --nprobe 1,,2", "--nprobe '': want an integer");
    expect_error("ivf search x.index " + data + " --k 8 --speed max", "unknown option --speed");
    expect_error("ivf search x.index " + data + " --engine gpu", "--engine 'gpu': want one of auto, fgmm, faiss");
    expect_error("ivf frob", "unknown command 'frob'");
    expect_error("train " + data + " --cov full", "--cov 'full': want one of iso, diag");
    expect_error("train " + data + " --precision half", "want one of fast, exact");
    EXPECT_EQ(run_cli("ivf search /nonexistent.index " + data, &out), 1) << out;
}

TEST(IvfCli, ExportsAPlainFaissFile) {
    std::string out;
    if (run_cli("ivf export --help", &out) != 0) GTEST_SKIP() << "this build has no fgmm_ivf_write_faiss";
    const std::string data = embedded("sift10K_byte.h5"), def = tmp("cli_exp.index"), plain = tmp("cli_exp.faiss");
    ASSERT_EQ(run_cli("ivf build " + data +
                          " --dataset dataset --nlist 32 --iter 5 --kmeans-iter 5 --backend cpu --out " + def,
                      &out),
              0)
        << out;
    ASSERT_EQ(run_cli("ivf export " + def + " " + plain, &out), 0) << out;
    EXPECT_FALSE(exists(plain + ".fgmm"));
    const std::string q = " " + data + " --dataset query --gt " + data + " --gt-dataset match --nprobe 32 --repeat 1";
    ASSERT_EQ(run_cli("ivf search " + plain + q, &out), 0) << out;
    EXPECT_NE(out.find("searched by FAISS"), std::string::npos) << out;
    auto r = rows(out);
    EXPECT_DOUBLE_EQ(r[32].dco, 32 + 9000);  // each vector once
    EXPECT_DOUBLE_EQ(r[32].recall, 1.0);     // FAISS alone finds 10 distinct ids
    expect_error("ivf export " + def, "usage");
    expect_error("ivf export " + def + " " + def, "is the input");
}
