#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Recall@10 vs DCO on the data sets reachable from Debian/npm, one command per set:
#   scripts/reproduce.sh sift100k | debian-sift1m | fashion-mnist | glove341k | all   [ivf_curves options]
# Every method of build/ivf_curves (FAISS's own IVF, the project's k-means and GMM, hard / tau / SOAR
# spill, budgets), 3 seeds each. debian-sift1m builds its data first (about 5 minutes, 5 GB of
# memory) and trains 1M x 1024 on the GPU where one exists (hours on 2 CPU cores otherwise).
# Fetches (checksummed), builds, runs build/ivf_curves, and plots results/NAME/curves.png (gnuplot).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
set_name="${1:?usage: $0 sift100k|debian-sift1m|fashion-mnist|glove341k|all [ivf_curves options]}"; shift
"$top/scripts/setup.sh" >/dev/null
"$top/scripts/build.sh" "$top/build" >/dev/null
run() {
    local name=$1; shift
    "$top/datasets/fetch_$(echo "$name" | tr - _).sh" >/dev/null
    "$top/build/ivf_curves" "$@" --out "$top/results/$name" | tee "$top/results/$name.log"
    "$top/scripts/plot_curves.sh" "$top/results/$name" "$name"
}
sets="$set_name"; [ "$set_name" = all ] && sets="sift100k fashion-mnist glove341k debian-sift1m"
for s in $sets; do
    mkdir -p "$top/results"
    case "$s" in
    sift100k) run sift100k --data "$top/data/sift100k/sift100K_byte.h5" --base-name dataset --query-name query --nlist 256 "$@" ;;
    debian-sift1m) d="$top/data/debian-sift1m"
        run debian-sift1m --data "$d/base.bvecs" --queries "$d/query.bvecs" --gt "$d/groundtruth.ivecs" --nlist 1024 "$@" ;;
    fashion-mnist) run fashion-mnist --data "$top/data/fashion-mnist/base.bvecs" --queries "$top/data/fashion-mnist/query.bvecs" --nlist 256 "$@" ;;
    glove341k) run glove341k --data "$top/data/glove341k/glove6b100d_wink341k.fvecs" --holdout 10000 --normalize --nlist 1024 "$@" ;;
    *) echo "unknown set $s" >&2; exit 2 ;;
    esac
done
