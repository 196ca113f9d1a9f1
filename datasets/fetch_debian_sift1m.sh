#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Debian-SIFT1M: real OpenCV SIFT-128 from 37 photographs in four Debian bookworm wallpaper
# packages, texmex-shaped (recipe: DATASETS.md, "Debian-SIFT1M"). Not texmex SIFT1M: DoG SIFT,
# 37 photos, queries from the same photos as the base. Writes data/debian-sift1m/:
#   query.bvecs        10,000 x 128 uint8  =   1,320,000 B
#   base.bvecs      1,000,000 x 128 uint8  = 132,000,000 B
#   learn.bvecs       100,000 x 128 uint8  =  13,200,000 B
#   groundtruth.ivecs  10,000 x 100 int32  =   4,040,000 B (exact squared L2; ties: debian_sift1m.py)
#   ATTRIBUTION.md     licences and authors of the photos (CC-BY/CC-BY-SA/CC0/GPL-2+): ship it.
# Needs Debian's python3-opencv 4.6.0 and python3-numpy (installed here if missing) and an x86-64
# CPU with AVX2: debian_sift1m.py keeps OpenCV off its AVX-512 kernels, which change 22 descriptors.
# Takes about 4-7 minutes on 2 cores (SIFT ~1.5 min, the rest ground truth), peak memory ~5 GB.
source "$(dirname "$0")/common.sh"
out="${1:-$top/data/debian-sift1m}"; mkdir -p "$out"; cd "$out"

# package=version and sha256 of its .deb (DATASETS.md)
debs=(
    "lomiri-wallpapers-16.04=20.04.0-2 a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"
    "lomiri-wallpapers-20.04=20.04.0-2 d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"
    "mate-backgrounds=1.26.0-1 7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"
    "plasma-workspace-wallpapers=4:5.27.5-2 32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"
)
# output sha256 (base, query, groundtruth: DATASETS.md; learn: this script's build, which matched those three)
sums=(
    "base.bvecs 3c050e8e9d2f6c4378e7e5ce1a7b9b4e603c5e21f44664cc5b253163891dfb67"
    "query.bvecs d191a7de3e0661135026089ca4192c9084c1753b7a887af4589d0a4d650c57db"
    "groundtruth.ivecs bbd61f393094e871d4e57a5c82c4ad7d1c4a3804bbeaeee455de3044595bb916"
    "learn.bvecs 5adae83fd8dfd2d3d0efa2b7c51503e319220ef07496d200647ef813960943a5"
)
check_all() { for s in "${sums[@]}"; do check_sha256 "${s% *}" "${s#* }"; done; }
copy_attribution() { cmp -s "$top/datasets/debian_sift1m_ATTRIBUTION.md" ATTRIBUTION.md || cp "$top/datasets/debian_sift1m_ATTRIBUTION.md" ATTRIBUTION.md; }

if [ -f base.bvecs ] && [ -f query.bvecs ] && [ -f learn.bvecs ] && [ -f groundtruth.ivecs ]; then
    echo "have $out"; check_all; copy_attribution; exit 0
fi

# Debian's python3 with its OpenCV and numpy (a pyenv/venv python3 on PATH would lack them)
py=/usr/bin/python3
if ! "$py" -c "import cv2, numpy" 2>/dev/null; then
    $SUDO apt-get install -y -qq python3-opencv python3-numpy >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq python3-opencv python3-numpy >/dev/null; }
fi

tmp=$(mktemp -d "$out/.build.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
updated=0
for entry in "${debs[@]}"; do
    spec=${entry% *}; want=${entry#* }; pkg=${spec%%=*}; ver=${spec#*=}
    if ! (cd "$tmp" && apt-get download "$spec" >/dev/null 2>&1); then
        [ $updated = 1 ] || { $SUDO apt-get update -qq; updated=1; }
        (cd "$tmp" && apt-get download "$spec" >/dev/null 2>&1) || {
            echo "$pkg version $ver is not in the Debian archive any more (apt-get download $spec failed);" \
                 "Debian-SIFT1M needs exactly this version (DATASETS.md)" >&2; exit 1; }
    fi
    deb=$(ls "$tmp/${pkg}"_*.deb)
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "$pkg $ver: .deb sha256 $got, expected $want (package changed)" >&2; exit 1; }
    echo "sha256 ok: $(basename "$deb")"
    dpkg-deb -x "$deb" "$tmp/$pkg"; rm -f "$deb"
done

nice -n 10 "$py" "$top/datasets/debian_sift1m.py" "$tmp" "$tmp/out"
(cd "$tmp/out" && check_all)   # a build that differs is not kept
mv "$tmp"/out/{base,query,learn}.bvecs "$tmp/out/groundtruth.ivecs" .
copy_attribution
ls -l "$out"
