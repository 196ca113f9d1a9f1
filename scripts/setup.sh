#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs every build dependency from Debian and builds FAISS's C API (libfaiss_c.a), which Debian
# does not ship. Idempotent: a second run only checks. Needs root (or sudo) for apt-get.
#   setup.sh          everything scripts/test.sh needs (tests, sanitizers, fuzzing, Python, MPI)
#   setup.sh --demo   only what scripts/demo.sh needs: compiler, CMake, FAISS, OpenBLAS, HDF5, gnuplot
set -euo pipefail
case "${1:-}" in
    "") demo=0 ;;
    --demo) demo=1 ;;
    *) echo "usage: setup.sh [--demo]" >&2; exit 2 ;;
esac
top="$(cd "$(dirname "$0")/.." && pwd)"
deps="$top/.deps"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# clang + libclang-rt-dev: libFuzzer and the sanitizers for scripts/fuzz.sh.
# OpenBLAS's OpenMP build: one thread pool shared with the engine's and FAISS's OpenMP loops
# (the default pthread build's spinning workers starve OpenMP regions between sgemm calls).
# python3-numpy + python3-faiss: the Python package (python/) and its tests; python3-pip, -setuptools,
# -wheel and -venv: pip install ./python offline (docs/python.md; tests/consumer/python.sh).
# openmpi-bin + libopenmpi-dev: the MPI launcher (flashgmm-mpi) and its test (tests/mpi/run.sh).
# curl: scripts/faiss_headers.sh fetches FAISS 1.11's headers. gnuplot-nox: the demo's plot.
pkgs="build-essential cmake ninja-build pkg-config dpkg-dev libfaiss-dev libopenblas-openmp-dev liblapack-dev
      libhdf5-dev"
if [ "$demo" = 1 ]; then
    pkgs="$pkgs gnuplot-nox"
else
    pkgs="$pkgs googletest libgtest-dev clang clang-format libclang-rt-dev python3-numpy python3-faiss
          python3-pip python3-setuptools python3-wheel python3-venv openmpi-bin libopenmpi-dev curl"
fi
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "setup: installing$missing (apt-get; a minute or a few)"
    $SUDO apt-get update -qq
    # One line per package unpacked, so that a slow mirror is not mistaken for a hang.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing \
        | grep --line-buffered -E '^(Unpacking|Need to get)' | sed -u 's/^/setup:   /' || true
    for p in $missing; do dpkg -s "$p" >/dev/null 2>&1 || { echo "setup: $p did not install" >&2; exit 1; }; done
fi

# FAISS C API: compiled from the faiss source package that matches the installed libfaiss-dev.
libc="$deps/faiss_c/lib/libfaiss_c.a"
if [ ! -f "$libc" ]; then
    if ! apt-get source --help >/dev/null 2>&1 || ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding a deb-src entry for bookworm main"
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee /etc/apt/sources.list.d/flashgmm-deb-src.sources >/dev/null
        $SUDO apt-get update -qq
    fi
    mkdir -p "$deps/src" && cd "$deps/src"
    # Pinned: a newer faiss in another deb-src suite (scripts/faiss_modern.sh adds trixie) must not win.
    ver="$(dpkg-query -W -f='${source:Version}' libfaiss-dev)"
    ls faiss_*.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only "faiss=$ver" >/dev/null
    rm -rf faiss-src && mkdir faiss-src && tar xf faiss_*.orig.tar.* -C faiss-src --strip-components=1
    src="$deps/src/faiss-src"
    obj="$deps/faiss_c/obj"; mkdir -p "$obj" "$deps/faiss_c/lib" "$deps/faiss_c/include/faiss/c_api"
    files=$(ls "$src"/c_api/*.cpp "$src"/c_api/impl/*.cpp "$src"/c_api/utils/*.cpp 2>/dev/null || true)
    echo "setup: compiling FAISS's C API, $(printf '%s\n' $files | wc -l) files (about a minute on 2 cores)"
    printf '%s\n' $files | xargs -P "$(nproc)" -I{} sh -c \
        'g++ -O2 -fPIC -fopenmp -w -I"$1" -c "$2" -o "$3/$(echo "$2" | tr / _).o" && echo "setup:   ${2##*/}"' _ "$src" {} "$obj"
    ar rcs "$libc.tmp" "$obj"/*.o && mv "$libc.tmp" "$libc"
    # Public C API headers keep their relative layout (faiss/c_api/...).
    (cd "$src/c_api" && find . -name '*.h' -exec cp --parents {} "$deps/faiss_c/include/faiss/c_api/" \;)
    rm -rf "$obj"
fi
echo "setup: ok (libfaiss_c: $libc)"
