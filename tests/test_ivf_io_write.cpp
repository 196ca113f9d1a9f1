/* SPDX-License-Identifier: MIT */
// How index files are written (plugin/ivf_io.c on the atomic outputs of src/core/file.c): crashes
// and concurrent readers and writers, modes, symbolic links, stale temporary files, long names.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ivf_io_common.h"

// H2: a writer killed (SIGKILL) at a random moment of rewriting the index, round after round,
// leaves the complete old or the complete new index; the temporary files of the killed writers go
// with the next write.
TEST(IvfIo, KilledWriterLeavesTheOldOrTheNewIndex) {
    Tiny a, b({1000, 1001, 1002, 1003});
    std::string dir = fresh_dir("killed"), path = dir + "/k.fgmmivf";
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; i++) ASSERT_EQ(fgmm_ivf_write(i % 2 ? b.h : a.h, path.c_str()), 0) << fgmm_get_last_error();
    double write_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 5;
    std::mt19937 g(7);
    // at least 60 rounds, more (up to 400) until both outcomes were seen: on a loaded machine the child
    // may not finish a write within the first delays, so the range doubles every 20 rounds
    int seen[2] = {0, 0}, rounds = 0;
    double hi = 3 * write_us;
    for (int round = 0; round < 400 && (round < 60 || !seen[0] || !seen[1]); round++, rounds++) {
        if (round && round % 20 == 0 && (!seen[0] || !seen[1])) hi *= 2;
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {  // the writer: alternates the two indexes until killed
            for (int i = round;; i++) fgmm_ivf_write(i % 2 ? b.h : a.h, path.c_str());
        }
        usleep((useconds_t)std::uniform_real_distribution<double>(0, hi)(g));
        kill(pid, SIGKILL);
        int st;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        std::string why;
        int64_t n = entries_at(path, &why);
        ASSERT_TRUE(n == 128 || n == 136) << "round " << round << ": " << n << " " << why;
        seen[n == 136]++;
    }
    EXPECT_GT(seen[0], 0);
    EXPECT_GT(seen[1], 0);
    std::vector<std::string> left = others(dir, {"k.fgmmivf"});
    ASSERT_EQ(fgmm_ivf_write(a.h, path.c_str()), 0) << fgmm_get_last_error();
    EXPECT_EQ(others(dir, {"k.fgmmivf"}), std::vector<std::string>()) << left.size() << " were left by killed writers";
    EXPECT_EQ(entries_at(path), 128);
    std::printf("[          ] write %.0f us; %d kills: %d old/new 128, %d 136; %zu temporary files left, removed\n",
                write_us, rounds, seen[0], seen[1], left.size());
}

// H2: a reader re-opening the index while another thread rewrites it always reads a whole index.
TEST(IvfIo, ReaderDuringRewritesAlwaysReadsAWholeIndex) {
    Tiny a, b({1000, 1001, 1002, 1003});
    std::string dir = fresh_dir("reader"), path = dir + "/r.fgmmivf";
    ASSERT_EQ(fgmm_ivf_write(a.h, path.c_str()), 0);
    std::atomic<bool> done{false};
    std::atomic<int> reads{0}, bad{0};
    std::string last_bad;
    std::thread reader([&] {
        while (!done) {
            std::string why;
            int64_t n = entries_at(path, &why);
            if (n != 128 && n != 136) bad++, last_bad = why;
            reads++;
        }
    });
    for (int i = 0; i < 60; i++) EXPECT_EQ(fgmm_ivf_write(i % 2 ? a.h : b.h, path.c_str()), 0) << fgmm_get_last_error();
    done = true;
    reader.join();
    EXPECT_EQ(bad.load(), 0) << last_bad;
    EXPECT_GT(reads.load(), 10);
    EXPECT_EQ(others(dir, {"r.fgmmivf"}), std::vector<std::string>());
}

// H2: two processes writing one path at once (and a reader meanwhile) leave a readable index, and
// neither removes the other's temporary file (its writer is alive).
TEST(IvfIo, TwoWritersOfOnePathLeaveAReadableIndex) {
    Tiny a, b({1000, 1001, 1002, 1003});
    std::string dir = fresh_dir("writers"), path = dir + "/w.fgmmivf";
    ASSERT_EQ(fgmm_ivf_write(a.h, path.c_str()), 0);
    pid_t pid[2];
    for (int w = 0; w < 2; w++) {
        pid[w] = fork();
        ASSERT_GE(pid[w], 0);
        if (pid[w] == 0) {
            int failed = 0;
            for (int i = 0; i < 40; i++) failed += fgmm_ivf_write(w ? b.h : a.h, path.c_str()) != 0;
            _exit(failed ? 1 : 0);
        }
    }
    int reads = 0, bad = 0;
    for (int w = 0; w < 2; w++) {
        int st = 0;
        while (waitpid(pid[w], &st, WNOHANG) == 0) {
            int64_t n = entries_at(path);
            bad += n != 128 && n != 136;
            reads++;
        }
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "writer " << w << " had failed writes";
    }
    EXPECT_EQ(bad, 0) << reads << " reads";
    int64_t n = entries_at(path);
    EXPECT_TRUE(n == 128 || n == 136) << n;
    EXPECT_EQ(others(dir, {"w.fgmmivf"}), std::vector<std::string>());
}
// M3: a replaced file keeps its mode; a new one gets 0666 less the umask (fgmm_output_begin: also
// the model and vector files).
TEST(IvfIo, ReplacedFileKeepsItsMode) {
    Tiny t;
    std::string dir = fresh_dir("mode"), path = dir + "/m.fgmmivf", gmm = dir + "/m.gmm";
    mode_t um = umask(0);
    umask(um);
    struct stat sb;
    ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0);
    ASSERT_EQ(stat(path.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0666 & ~um);
    for (mode_t mode : {0600, 0640, 0444}) {
        ASSERT_EQ(chmod(path.c_str(), mode), 0);
        ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0) << fgmm_get_last_error();
        ASSERT_EQ(stat(path.c_str(), &sb), 0);
        EXPECT_EQ(sb.st_mode & 07777, mode);
        EXPECT_EQ(sb.st_uid, getuid());
    }
    ASSERT_EQ(fgmm_model_write(t.h->model, gmm.c_str()), 0);
    ASSERT_EQ(chmod(gmm.c_str(), 0600), 0);
    ASSERT_EQ(fgmm_model_write(t.h->model, gmm.c_str()), 0);
    ASSERT_EQ(stat(gmm.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0600u);
}

// M3: a path that is a symbolic link (absolute, relative, a chain, dangling) is followed: the target
// is replaced or created, the link stays.
TEST(IvfIo, SymbolicLinksAreFollowed) {
    Tiny a, b({1000, 1001, 1002, 1003});
    std::string dir = fresh_dir("symlink");
    fs::create_directories(dir + "/data");
    std::string target = dir + "/data/real.fgmmivf", link = dir + "/link", chain = dir + "/chain";
    ASSERT_EQ(fgmm_ivf_write(a.h, target.c_str()), 0);
    fs::create_symlink("data/real.fgmmivf", link);  // relative to the link's folder
    fs::create_symlink(link, chain);                // absolute, to a link
    ASSERT_EQ(chmod(target.c_str(), 0600), 0);
    for (const std::string& via : {link, chain}) {
        ASSERT_EQ(fgmm_ivf_write(b.h, via.c_str()), 0) << fgmm_get_last_error();
        EXPECT_TRUE(fs::is_symlink(link));
        EXPECT_TRUE(fs::is_symlink(chain));
        EXPECT_EQ(entries_at(target), 136);
        EXPECT_EQ(entries_at(via), 136);
        struct stat sb;
        ASSERT_EQ(stat(target.c_str(), &sb), 0);
        EXPECT_EQ(sb.st_mode & 07777, 0600u);
        ASSERT_EQ(fgmm_ivf_write(a.h, target.c_str()), 0);
    }
    EXPECT_EQ(others(dir + "/data", {"real.fgmmivf"}), std::vector<std::string>());
    std::string dangling = dir + "/dangling";
    fs::create_symlink("data/new.fgmmivf", dangling);
    ASSERT_EQ(fgmm_ivf_write(a.h, dangling.c_str()), 0) << fgmm_get_last_error();
    EXPECT_TRUE(fs::is_symlink(dangling));
    EXPECT_EQ(entries_at(dir + "/data/new.fgmmivf"), 128);
    std::string loop = dir + "/loop";
    fs::create_symlink(loop, loop);
    EXPECT_EQ(fgmm_ivf_write(a.h, loop.c_str()), FGMM_ERR_IO);
    EXPECT_NE(std::string(fgmm_get_last_error()).find("symbolic links"), std::string::npos) << fgmm_get_last_error();
}

// Low: temporary files of writers that died (this version's names and the earlier
// NAME.tmpPID.N) are removed by the next write of that path; a live writer's, another path's and
// a name that only looks alike stay.
TEST(IvfIo, StaleTemporaryFilesOfDeadWritersAreRemoved) {
    Tiny t;
    std::string dir = fresh_dir("stale"), path = dir + "/s.fgmmivf";
    FgmmOutput live;  // this process's, alive
    ASSERT_EQ(fgmm_output_begin(path.c_str(), &live), 0);
    pid_t dead = fork();
    ASSERT_GE(dead, 0);
    if (dead == 0) {  // begins two outputs and dies without ending them
        FgmmOutput o1, o2;
        _exit(fgmm_output_begin(path.c_str(), &o1) || fgmm_output_begin((dir + "/other").c_str(), &o2));
    }
    int st;
    ASSERT_EQ(waitpid(dead, &st, 0), dead);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    std::string old_style = "s.fgmmivf.tmp" + std::to_string(dead) + ".3";
    spit(dir + "/" + old_style, "partial");
    spit(dir + "/s.fgmmivf.tmp" + std::to_string(dead) + ".3x", "not a temporary name");
    std::vector<std::string> before = others(dir, {});
    EXPECT_EQ(before.size(), 5u);
    ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0) << fgmm_get_last_error();
    std::vector<std::string> after = others(dir, {"s.fgmmivf"});
    std::sort(after.begin(), after.end());
    ASSERT_EQ(after.size(), 3u);  // the live one, the other path's and the look-alike
    std::string live_name = fs::path(live.tmp).filename().string();
    EXPECT_TRUE(std::count(after.begin(), after.end(), live_name));
    EXPECT_TRUE(std::count(after.begin(), after.end(), "s.fgmmivf.tmp" + std::to_string(dead) + ".3x"));
    EXPECT_FALSE(std::count(after.begin(), after.end(), old_style));
    EXPECT_EQ(fgmm_output_end(&live, path.c_str(), 0), FGMM_ERR_IO);  // abandoned: removed
    EXPECT_EQ(others(dir, {"s.fgmmivf"}).size(), 2u);
}

// Low: names up to NAME_MAX (255 bytes) write and read (the temporary name fits).
TEST(IvfIo, LongNamesWork) {
    Tiny t;
    std::string dir = fresh_dir("long");
    for (size_t len : {250, 255}) {
        std::string path = dir + "/" + std::string(len - 8, 'n') + ".fgmmivf";
        ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0) << len << ": " << fgmm_get_last_error();
        ASSERT_EQ(fgmm_ivf_write(t.h, path.c_str()), 0) << len << ": " << fgmm_get_last_error();
        EXPECT_EQ(entries_at(path), 128);
        ASSERT_EQ(fgmm_ivf_write_faiss(t.h, path.c_str()), 0) << len << ": " << fgmm_get_last_error();
    }
    EXPECT_EQ(others(dir, {}).size(), 2u);
}
