#!/usr/bin/env bash
# Builds and runs consumer.c against the flashgmm installed in $1: through find_package (the static
# and the shared library) and through pkg-config (the shared library); then the Python package (python.sh).
set -euo pipefail
prefix="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cmake -S "$here" -B "$out/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$out/cmake" >/dev/null
"$out/cmake/consumer_static" "$out"
"$out/cmake/consumer_shared" "$out"
export PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name flashgmm_ivf.pc | head -1)")"
cc -std=c11 "$here/consumer.c" -o "$out/consumer_pc" $(pkg-config --cflags --libs flashgmm_ivf) \
    -Wl,-rpath,"$(pkg-config --variable=libdir flashgmm_ivf)"
"$out/consumer_pc" "$out"
"$here/python.sh" "$prefix"
