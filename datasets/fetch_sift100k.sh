#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# FLANN's sift100K (99,000 real SIFT-128 + 1,000 queries + 1-NN ids) from Debian's flann source
# package. Writes data/sift100k/sift100K_byte.h5 (datasets: dataset, query, match).
source "$(dirname "$0")/common.sh"
out="${1:-$top/data/sift100k}"; mkdir -p "$out"; cd "$out"
[ -f sift100K_byte.h5 ] && { echo "have $out/sift100K_byte.h5"; exit 0; }
ensure_debsrc
apt-get source --download-only flann=1.9.2+dfsg-1+deb12u1 >/dev/null 2>&1 || apt-get source --download-only flann >/dev/null
check_sha256 flann_1.9.2+dfsg.orig.tar.xz 9ef9e74820c0eb7136200fb7e2e9ac5caff1defe339351b4e8e7aec19bb35de8
tar xJf flann_1.9.2+dfsg.orig.tar.xz --strip-components=2 flann-1.9.2/datasets/sift100K_byte.h5
rm -f flann_*
check_shape sift100K_byte.h5 dataset 99000 128
check_shape sift100K_byte.h5 query 1000 128
