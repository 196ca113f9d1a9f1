#!/usr/bin/env bash
# Builds FAISS 1.11.0 (Debian trixie's source package; CPU only, C API on, static) into the cached
# prefix .deps/faiss-1.11, then builds this project against it (-DFAISS_ROOT) in build-faiss-1.11/
# and runs the plugin tests. Idempotent: a built prefix is reused. Needs root (or sudo) for apt-get.
# FAISS_SRC=<dir> builds an unpacked FAISS 1.11.0 source tree instead of downloading the package.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
deps="$top/.deps"
prefix="$deps/faiss-1.11"
build="${1:-$top/build-faiss-1.11}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

fetch_source() {  # prints the unpacked source directory
    local list=/etc/apt/sources.list.d/flashgmm-trixie-src.sources
    if [ ! -f "$list" ]; then
        echo "faiss_modern: adding a deb-src entry for trixie main" >&2
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee "$list" >/dev/null
        $SUDO apt-get update -qq
    fi
    local ver
    ver="$(apt-cache showsrc faiss | awk '/^Version: 1\.11\.0/ {print $2; exit}')"
    [ -n "$ver" ] || { echo "faiss_modern: no faiss 1.11.0 source package listed by apt" >&2; exit 1; }
    mkdir -p "$deps/src-faiss-1.11" && cd "$deps/src-faiss-1.11"
    ls faiss_1.11.0.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only "faiss=$ver" >&2 || {
        echo "faiss_modern: apt-get source faiss=$ver failed; set FAISS_SRC to a FAISS 1.11.0 source tree" >&2
        exit 1
    }
    rm -rf src && mkdir src && tar xf faiss_1.11.0.orig.tar.* -C src --strip-components=1
    echo "$deps/src-faiss-1.11/src"
}

"$top/scripts/setup.sh"  # the Debian packages both builds need
if [ -f "$prefix/lib/libfaiss.a" ] && [ -f "$prefix/lib/libfaiss_c.a" ]; then
    echo "faiss_modern: reusing $prefix"
else
    src="${FAISS_SRC:-$(fetch_source)}"
    grep -q 'VERSION 1\.11\.0' "$src/CMakeLists.txt" || { echo "faiss_modern: $src is not FAISS 1.11.0" >&2; exit 1; }
    echo "faiss_modern: building FAISS 1.11.0 from $src (minutes)"
    # PIC: libflashgmm_ivf.so links these static archives in.
    cmake -S "$src" -B "$deps/faiss-1.11-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
        -DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF -DFAISS_ENABLE_C_API=ON -DFAISS_ENABLE_MKL=OFF \
        -DFAISS_ENABLE_EXTRAS=OFF -DBUILD_TESTING=OFF -DFAISS_OPT_LEVEL=generic -DBLA_VENDOR=OpenBLAS >/dev/null
    nice -n 10 cmake --build "$deps/faiss-1.11-build" -j "$(nproc)" --target faiss faiss_c
    cmake --install "$deps/faiss-1.11-build" >/dev/null
    rm -rf "$deps/faiss-1.11-build"
fi

"$top/scripts/build.sh" "$build" -DFGMM_CUDA=OFF -DFAISS_ROOT="$prefix"
FGMM_SOURCE_DIR="$top" "$build/flashgmm_tests" --gtest_filter='Ivf*' --gtest_brief=1
