#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SIFT1M (TEXMEX ANN_SIFT1M). NOT reachable from this project's machines (only Debian and npm are):
# run where you have internet access. The archive's checksum is not published; the script checks
# the exact byte sizes the fvecs/ivecs format implies and prints sha256 for your records.
#   sift_base.fvecs        1,000,000 x 128 float  = 516,000,000 B
#   sift_query.fvecs          10,000 x 128 float  =   5,160,000 B
#   sift_learn.fvecs         100,000 x 128 float  =  51,600,000 B
#   sift_groundtruth.ivecs    10,000 x 100 int    =   4,040,000 B
source "$(dirname "$0")/common.sh"
out="${1:-$top/data/sift1m}"; mkdir -p "$out"; cd "$out"
[ -f sift.tar.gz ] || fetch ftp://ftp.irisa.fr/local/texmex/corpus/sift.tar.gz sift.tar.gz
tar xzf sift.tar.gz --strip-components=1
for pair in sift_base.fvecs:516000000 sift_query.fvecs:5160000 sift_learn.fvecs:51600000 sift_groundtruth.ivecs:4040000; do
    f=${pair%%:*}; want=${pair##*:}; got=$(stat -c %s "$f")
    [ "$got" = "$want" ] || { echo "$f: $got bytes, expected $want" >&2; exit 1; }
done
sha256sum sift.tar.gz sift_*.fvecs sift_*.ivecs
echo "run: build/ivf_curves --data $out/sift_base.fvecs --queries $out/sift_query.fvecs --nlist 1024 --out results/sift1m"
