#!/usr/bin/env bash
# Sets up (idempotent), builds, and trains a 64-component GMM on the embedded FLANN sift10K set
# (9,000 real SIFT vectors), printing the log-likelihood of every iteration. Extra args go to `train`.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build" >/dev/null
exec "$top/build/flashgmm" train "$top/datasets/embedded/sift10K_byte.h5" --dataset dataset --k 64 --iter 20 "$@"
