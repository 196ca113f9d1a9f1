#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# ann-benchmarks HDF5 sets (train / test / neighbors / distances). NOT reachable from this project's
# machines: run where you have internet access. No checksums are published; shapes are checked.
#   glove-100-angular      train 1,183,514 x 100, test 10,000 (angular: use --normalize)
#   deep-image-96-angular  train 9,990,000 x 96,  test 10,000 (the Deep10M used in IVF papers; --normalize)
#   sift-128-euclidean     train 1,000,000 x 128, test 10,000
# usage: fetch_ann_benchmarks.sh NAME [OUTDIR]
source "$(dirname "$0")/common.sh"
name="${1:?usage: $0 glove-100-angular|deep-image-96-angular|sift-128-euclidean [OUTDIR]}"
out="${2:-$top/data/$name}"; mkdir -p "$out"; cd "$out"
case "$name" in
glove-100-angular) rows=1183514; dims=100 ;;
deep-image-96-angular) rows=9990000; dims=96 ;;
sift-128-euclidean) rows=1000000; dims=128 ;;
*) echo "unknown set $name" >&2; exit 2 ;;
esac
[ -f "$name.hdf5" ] || fetch "http://ann-benchmarks.com/$name.hdf5" "$name.hdf5"
check_shape "$name.hdf5" train "$rows" "$dims"
check_shape "$name.hdf5" test 10000 "$dims"
sha256sum "$name.hdf5"
norm=""; case "$name" in *angular) norm="--normalize" ;; esac
echo "run: build/ivf_curves --data $out/$name.hdf5 $norm --nlist 1024 --out results/$name"
