#!/usr/bin/env bash
# The main job, on the embedded FLANN sift10K set (9,000 real SIFT vectors, 1,000 queries with their
# true neighbours): sets up (idempotent) and builds, then builds a FAISS IVF64,Flat the usual way
# (FAISS's k-means, one list per vector) and one with the project's defaults (GMM quantizer, SOAR
# spill for the half of the vectors with the largest second responsibility: 1.5 lists per vector)
# at the same nlist, searches both over a few nprobe values and prints recall@10, distance
# computations (DCO) per query and build times. Extra arguments go to build/ivf_curves.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build" >/dev/null
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$top/build/ivf_curves" --data "$top/datasets/embedded/sift10K_byte.h5" --base-name dataset --query-name query \
    --nlist 64 --methods faiss-hard,default --seeds 1 --nprobes 1,2,3,4,6,8,12,16 --out "$out" "$@" | grep -v '^wrote'
