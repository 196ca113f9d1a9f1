#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds FAISS 1.11.0 (Debian trixie's source package; CPU only, C API on, static) into the cached
# prefix .deps/faiss-1.11, then builds this project against it (-DFAISS_ROOT) in build-faiss-1.11/
# and runs the plugin tests. Idempotent: a built prefix is reused. Needs root (or sudo) for apt-get.
# The source: FAISS_SRC=<dir> (an unpacked FAISS 1.11.0 tree), else trixie's source package, else
# FAISS's release tarball from GitHub. The FAISS build takes about 70 minutes on 2 cores.
# (Trixie's libfaiss-dev ships libfaiss.a, but built by GCC 14: bookworm's GCC 12 cannot link it,
# `undefined reference to __cxa_call_terminate`. Its headers serve scripts/faiss_headers.sh.)
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
deps="$top/.deps"
prefix="$deps/faiss-1.11"
build="${1:-$top/build-faiss-1.11}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

release="https://github.com/facebookresearch/faiss/archive/refs/tags/v1.11.0.tar.gz"

# Debian trixie's faiss 1.11.0 source package (the archive has listed it while answering 404 for its
# files), else FAISS's own release tarball. Prints the unpacked source directory.
fetch_source() {
    local list=/etc/apt/sources.list.d/flashgmm-trixie-src.sources ver="" tarball=""
    if [ ! -f "$list" ]; then
        echo "faiss_modern: adding a deb-src entry for trixie main" >&2
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee "$list" >/dev/null
        $SUDO apt-get update -qq || true
    fi
    mkdir -p "$deps/src-faiss-1.11" && cd "$deps/src-faiss-1.11"
    ver="$(apt-cache showsrc faiss 2>/dev/null | awk '/^Version: 1\.11\.0/ {print $2; exit}')"
    if ls faiss_1.11.0.orig.tar.* >/dev/null 2>&1; then tarball="$(ls faiss_1.11.0.orig.tar.* | head -1)"
    elif ls faiss-1.11.0.tar.gz >/dev/null 2>&1; then tarball=faiss-1.11.0.tar.gz
    elif [ -n "$ver" ] && apt-get source --download-only "faiss=$ver" >&2; then tarball="$(ls faiss_1.11.0.orig.tar.* | head -1)"
    else
        echo "faiss_modern: no faiss 1.11.0 source from the Debian archive${ver:+ (apt-get source faiss=$ver failed)}; trying $release" >&2
        if { command -v curl >/dev/null && curl -fsSL -o faiss-1.11.0.tar.gz.part "$release"; } ||
           { command -v wget >/dev/null && wget -q -O faiss-1.11.0.tar.gz.part "$release"; }; then
            mv faiss-1.11.0.tar.gz.part faiss-1.11.0.tar.gz
            tarball=faiss-1.11.0.tar.gz
            echo "faiss_modern: downloaded $release, sha256 $(sha256sum "$tarball" | cut -d' ' -f1) (FAISS publishes none to check)" >&2
        else
            rm -f faiss-1.11.0.tar.gz.part
            echo "faiss_modern: cannot download $release either. Fetch FAISS 1.11.0's source elsewhere and run" >&2
            echo "  FAISS_SRC=<unpacked source tree> scripts/faiss_modern.sh" >&2
            exit 1
        fi
    fi
    rm -rf src && mkdir src && tar xf "$tarball" -C src --strip-components=1
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
