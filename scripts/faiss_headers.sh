#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Compiles the FAISS plugin (plugin/faiss_bridge.cpp, plugin/ivf*.c) and the CLI's
# FAISS part (tools/cli_ivf.c) against FAISS 1.11.0's headers, compile only (-fsyntax-only): the
# headers come from Debian trixie's libfaiss-dev 1.11.0-3 package (sha256-pinned, from the
# Debian archive's pool), unpacked once into .deps/faiss-1.11-headers. Catches API drift between
# Debian bookworm's FAISS 1.7.3 (what the project builds with) and 1.11 in seconds, where
# scripts/faiss_modern.sh builds and tests against 1.11 in over an hour.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
deb=libfaiss-dev_1.11.0-3_amd64.deb
sha=fe49d58e8449eedb4d33d42bf0235f6d2944ac5bd606efb3a70861685eee1839
url="http://deb.debian.org/debian/pool/main/f/faiss/$deb"
dir="$top/.deps/faiss-1.11-headers"
inc="$dir/usr/include"

if [ ! -f "$inc/faiss/IndexIVF.h" ]; then
    mkdir -p "$dir"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "faiss_headers: downloading $url"
    if command -v curl >/dev/null; then curl -fsS -o "$tmp/$deb" "$url"
    elif command -v wget >/dev/null; then wget -q -O "$tmp/$deb" "$url"
    else echo "faiss_headers: needs curl or wget (scripts/setup.sh installs curl)" >&2; exit 1
    fi
    echo "$sha  $tmp/$deb" | sha256sum -c --quiet - || { echo "faiss_headers: $deb: sha256 mismatch" >&2; exit 1; }
    dpkg-deb -x "$tmp/$deb" "$tmp/x"
    rm -rf "$dir/usr" && mkdir -p "$dir/usr" && mv "$tmp/x/usr/include" "$dir/usr/"
fi
grep -q 'define FAISS_VERSION_MINOR 11' "$inc/faiss/Index.h" ||
    { echo "faiss_headers: $inc is not FAISS 1.11" >&2; exit 1; }

cd "$top"
# -I order: these headers before /usr/include's FAISS 1.7.3 (bookworm's libfaiss-dev).
g++ -std=c++17 -fsyntax-only -fopenmp -Wall -Werror -Icapi -Iplugin -I"$inc" plugin/faiss_bridge.cpp
for f in plugin/ivf.c plugin/ivf_train.c plugin/ivf_add.c plugin/ivf_search_faiss.c plugin/ivf_io.c tools/cli_ivf.c; do
    gcc -std=c11 -fsyntax-only -fopenmp -Wall -Wextra -Werror -Wno-unknown-pragmas -Icapi -Iplugin -Isrc/core -I"$inc" "$f"
done
echo "faiss_headers: the plugin compiles against FAISS 1.11.0's headers (plugin/faiss_bridge.cpp, plugin/ivf{,_train,_add,_search_faiss,_io}.c, tools/cli_ivf.c)"
