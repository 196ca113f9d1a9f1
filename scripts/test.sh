#!/usr/bin/env bash
# Sets up, builds (CUDA compiled when nvcc exists; GPU tests skip without a device), runs every
# test, builds and runs a program against an installed copy, runs the tests again in a CPU-only
# AddressSanitizer + UBSan build, then fuzzes the readers, the model loader and the index sidecars
# for 60 s each (scripts/fuzz.sh).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build"
(cd "$top/build" && ctest --output-on-failure -j 2)
prefix="$(mktemp -d)"
cmake --install "$top/build" --prefix "$prefix" >/dev/null
"$top/tests/consumer/run.sh" "$prefix"
rm -rf "$prefix"
"$top/scripts/build.sh" "$top/build-asan" -DFGMM_SANITIZE=ON -DFGMM_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
(cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j 2)
"$top/scripts/fuzz.sh" 60
