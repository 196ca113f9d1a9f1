#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sets up, checks commit subjects and formatting, builds (CUDA compiled when nvcc exists; GPU tests skip without a device), runs every
# test (the Python package's and the MPI launcher's too), compiles the plugin against FAISS 1.11's
# headers, builds and runs programs against an installed copy (CMake and pkg-config, static and
# shared), runs the tests again in a CPU-only AddressSanitizer + UBSan build, runs the concurrency
# tests under ThreadSanitizer, then fuzzes the readers, the model loader and the index sidecars for
# 60 s each (scripts/fuzz.sh).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/setup.sh"
# Commit subjects after the rule's start (CONTRIBUTING.md) and the sources against .clang-format.
"$top/scripts/commits.sh"
"$top/scripts/format.sh" --check
"$top/scripts/build.sh" "$top/build"
# The plugin against FAISS 1.11.0's headers (compile only; scripts/faiss_modern.sh links and tests).
"$top/scripts/faiss_headers.sh"
(cd "$top/build" && ctest --output-on-failure -j 2)
# The MPI launcher: 2 and 3 CPU processes against the one-process model, and failing ranks.
"$top/tests/mpi/run.sh" "$top/build"
# Debian's python3: the one that sees python3-numpy and python3-faiss.
PYTHONPATH="$top/python" FLASHGMM_LIB="$top/build/libflashgmm_ivf.so" \
    /usr/bin/python3 -m unittest discover -s "$top/python/tests" -v
prefix="$(mktemp -d)"
cmake --install "$top/build" --prefix "$prefix" >/dev/null
"$top/tests/consumer/run.sh" "$prefix"
rm -rf "$prefix"
"$top/scripts/build.sh" "$top/build-asan" -DFGMM_SANITIZE=ON -DFGMM_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
(cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j 2)
# ThreadSanitizer over the concurrency tests (one OpenMP thread: libgomp and FAISS are not instrumented)
"$top/scripts/build.sh" "$top/build-tsan" -DFGMM_TSAN=ON -DFGMM_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 "$top/build-tsan/flashgmm_tests" --gtest_filter='*Concurrent*'
"$top/scripts/fuzz.sh" 60
