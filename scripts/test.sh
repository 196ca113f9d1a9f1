#!/usr/bin/env bash
# Sets up, builds (CUDA compiled when nvcc exists; GPU tests skip without a device), runs every
# test, then runs them again in a CPU-only AddressSanitizer + UBSan build, then fuzzes the readers
# and the model loader for 60 s each (scripts/fuzz.sh).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build"
(cd "$top/build" && ctest --output-on-failure -j 2)
"$top/scripts/build.sh" "$top/build-asan" -DFGMM_SANITIZE=ON -DFGMM_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
(cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j 2)
"$top/scripts/fuzz.sh" 60
