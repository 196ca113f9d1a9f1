#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fashion-MNIST (ann-benchmarks' fashion-mnist-784-euclidean source data) from Debian's
# dataset-fashion-mnist. Writes data/fashion-mnist/{base,query}.bvecs: 60,000 and 10,000 x 784.
source "$(dirname "$0")/common.sh"
out="${1:-$top/data/fashion-mnist}"; mkdir -p "$out"; cd "$out"
[ -f base.bvecs ] && [ -f query.bvecs ] && { echo "have $out"; exit 0; }
apt-get download dataset-fashion-mnist=0.0~git20200523.55506a9-1 >/dev/null 2>&1 || { $SUDO apt-get update -qq; apt-get download dataset-fashion-mnist >/dev/null; }
check_sha256 dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb 39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
dpkg -x dataset-fashion-mnist_*.deb x
python3 "$top/datasets/idx_to_bvecs.py" x/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz base.bvecs
python3 "$top/datasets/idx_to_bvecs.py" x/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz query.bvecs
rm -rf x dataset-fashion-mnist_*.deb
check_shape base.bvecs "" 60000 784
check_shape query.bvecs "" 10000 784
