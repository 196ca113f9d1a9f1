#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds and runs consumer.c and examples/example_ivf.c against the flashgmm installed in $1: through
# find_package (the static and the shared library) and through pkg-config (--libs: the shared
# library; --static --libs: the static archives, no libflashgmm*.so needed at run time); then the
# Python package (python.sh).
set -euo pipefail
prefix="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
example="$here/../../examples/example_ivf.c"
data="$here/../../datasets/embedded/sift10K_byte.h5"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Which libflashgmm*.so a program needs at run time (none: prints "-").
needs() { readelf -d "$1" | awk '/NEEDED/ && /libflashgmm/ { gsub(/[][]/, "", $NF); printf "%s ", $NF; n++ } END { if (!n) print "-"; else print "" }'; }
expect() {  # PROGRAM WANT: fails unless the program's libflashgmm*.so needs are WANT
    local got; got="$(needs "$1" | sed 's/ $//')"
    [ "$got" = "$2" ] || { echo "consumer: $(basename "$1") needs '$got', want '$2'" >&2; exit 1; }
}

cmake -S "$here" -B "$out/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$out/cmake" >/dev/null
for p in consumer example_ivf; do
    expect "$out/cmake/${p}_static" -
    expect "$out/cmake/${p}_shared" libflashgmm_ivf.so.0
done
"$out/cmake/consumer_static" "$out"
"$out/cmake/consumer_shared" "$out"
"$out/cmake/example_ivf_static" "$data"
"$out/cmake/example_ivf_shared" "$data"

export PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name flashgmm_ivf.pc | head -1)")"
libdir="$(pkg-config --variable=libdir flashgmm_ivf)"
for p in consumer example_ivf; do
    src="$here/consumer.c"; [ $p = consumer ] || src="$example"
    cc -std=c11 "$src" -o "$out/${p}_pc" $(pkg-config --cflags --libs flashgmm_ivf) -Wl,-rpath,"$libdir"
    cc -std=c11 "$src" -o "$out/${p}_pc_static" $(pkg-config --static --cflags --libs flashgmm_ivf)
    expect "$out/${p}_pc" libflashgmm_ivf.so.0
    expect "$out/${p}_pc_static" -
done
"$out/consumer_pc" "$out"
"$out/consumer_pc_static" "$out"
"$out/example_ivf_pc" "$data"
"$out/example_ivf_pc_static" "$data"
"$here/python.sh" "$prefix"
echo "consumer: ok (find_package and pkg-config, static and shared)"
