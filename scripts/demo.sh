#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What the project buys, on the embedded FLANN sift10K set (9,000 real SIFT vectors, 1,000 queries
# with their true 10 nearest neighbours), measured in this run:
#   1. installs what the demo needs (scripts/setup.sh --demo; scripts/test.sh installs the rest)
#   2. builds the `flashgmm` command into build-demo/ (CPU only unless `nvidia-smi -L` finds a GPU)
#   3. builds two IVF64,Flat indexes of the same vectors: "faiss" (FAISS's own training) and
#      "default" (the project's default build)
#   4. searches both at nprobe 1..32 with the same queries and threads: recall@10, DCO, QPS
#   5. prints one sentence comparing them at recall 0.90 and writes a plot (gnuplot)
# Results go to results/demo/ (or $1): the indexes, the two search tables, demo.png, summary.txt.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$top/results/demo}"
data="$top/datasets/embedded/sift10K_byte.h5"
t0=$SECONDS
step() { printf '\n[%3ds] %s\n' $((SECONDS - t0)) "$*"; }

step "1/5 setup: Debian packages and FAISS's C API (skipped where present)"
"$top/scripts/setup.sh" --demo

cuda=OFF
if nvidia-smi -L >/dev/null 2>&1; then cuda=AUTO; fi  # AUTO: the CUDA backend where nvcc exists
step "2/5 build: the flashgmm command, CUDA $cuda (a GPU: $([ $cuda = AUTO ] && echo yes || echo no))"
cmake -S "$top" -B "$top/build-demo" -G Ninja -DFGMM_TESTS=OFF -DFGMM_CUDA=$cuda >/dev/null
cmake --build "$top/build-demo" --target flashgmm_cli -j "$(nproc)"
fg="$top/build-demo/flashgmm"
"$fg" ivf --help >/dev/null 2>&1 || { echo "demo: the FAISS plugin was not built (see scripts/setup.sh)" >&2; exit 1; }

mkdir -p "$out"
step "3/5 two IVF64,Flat indexes of the 9,000 vectors"
echo "faiss:   FAISS's own IndexIVF training (k-means, 10 iterations, at most 256 points per list), each vector in 1 list"
"$fg" ivf build "$data" --dataset dataset --nlist 64 --quantizer faiss --out "$out/faiss.index" | tee "$out/build-faiss.txt"
echo
echo "default: fgmm_ivf_params_init's build: GMM quantizer (10 k-means + 90 EM iterations on all points),"
echo "         SOAR spill of the half of the vectors with the largest second responsibility: 1.5 lists per vector"
"$fg" ivf build "$data" --dataset dataset --nlist 64 --out "$out/default.index" | tee "$out/build-default.txt"

step "4/5 search both: 1,000 queries, k = 10, nprobe 1..32"
cat <<'EOF'
  recall  recall@10: the share of each query's true 10 nearest neighbours among the 10 returned
  DCO     distance computations per query: 64 (query to each list centroid) + the entries of the
          nprobe lists scanned (a spilled vector is scanned once per list it sits in)
  QPS     queries per second: all 1,000 queries in one call, the fastest of 5 runs, the same threads;
          "faiss" is searched by FAISS itself, "default" by fgmm_ivf_search (which drops duplicate ids)
EOF
for m in faiss default; do
    echo "$m:"
    "$fg" ivf search "$out/$m.index" "$data" --dataset query --gt "$data" --gt-dataset match \
        --nprobe 1,2,3,4,6,8,12,16,32 --repeat 5 | tee "$out/search-$m.txt"
done

step "5/5 result"
# Each search table row: nprobe recall DCO QPS. At recall 0.90 DCO and QPS are interpolated
# log-linearly between the two nprobe values around it.
at90() {  # FILE COLUMN
    awk -v c="$2" '$1 ~ /^[0-9]+$/ {
        if ($2 >= 0.90) { v = pr == "" ? $c : exp(log(pv) + (0.90 - pr) / ($2 - pr) * (log($c) - log(pv))); print v; exit }
        pr = $2; pv = $c }' "$1"
}
total() { awk '/^build:/ { for (i = 1; i <= NF; i++) if ($i == "total") print $(i + 1) }' "$1"; }
mb() { awk '/^index:/ { for (i = 1; i <= NF; i++) if ($i == "MB;") print $(i - 1) }' "$1"; }
f_dco=$(at90 "$out/search-faiss.txt" 3); d_dco=$(at90 "$out/search-default.txt" 3)
f_qps=$(at90 "$out/search-faiss.txt" 4); d_qps=$(at90 "$out/search-default.txt" 4)
threads=$(awk '/^queries:/ { for (i = 1; i <= NF; i++) if ($i ~ /^threads;?$/) print $(i - 1) }' "$out/search-faiss.txt")
if [ -z "$f_dco" ] || [ -z "$d_dco" ]; then
    echo "demo: a build never reached recall 0.90; the tables are in $out" >&2; exit 1
fi
awk -v fd="$f_dco" -v dd="$d_dco" -v fq="$f_qps" -v dq="$d_qps" -v fm="$(mb "$out/search-faiss.txt")" \
    -v dm="$(mb "$out/search-default.txt")" -v fb="$(total "$out/build-faiss.txt")" -v db="$(total "$out/build-default.txt")" \
    -v th="$threads" 'function r(a, b) { return sprintf("%.2fx", a / b) } BEGIN {
    printf "At recall@10 = 0.90 on this set, the default build needs %s %s distance computations than FAISS'\''s IVF " \
           "(%.0f against %.0f per query), gives %s the queries per second (%.0f against %.0f, %s threads), " \
           "for %s the memory (index %.2f MB against %.2f MB) and %s the build time (%.2f s against %.2f s).\n",
           dd <= fd ? r(fd, dd) : r(dd, fd), dd <= fd ? "fewer" : "more", dd, fd, r(dq, fq), dq, fq, th,
           r(dm, fm), dm, fm, r(db, fb), db, fb }' | tee "$out/summary.txt"

if command -v gnuplot >/dev/null; then
    for m in faiss default; do awk '$1 ~ /^[0-9]+$/ && $2 != "-" { print $2, $3, $4 }' "$out/search-$m.txt" > "$out/$m.dat"; done
    gnuplot <<GP
set terminal pngcairo noenhanced size 1200,500 font ",11"
set output "$out/demo.png"
set multiplot layout 1,2 title "FLANN sift10K, IVF64,Flat: faiss (FAISS's own IVF) vs default (GMM + SOAR, 1.5 lists per vector)"
set xlabel "recall@10"; set grid; set key top left; set logscale y; set xrange [0.4:1.0]
set arrow from 0.9, graph 0 to 0.9, graph 1 nohead dt 2
set ylabel "distance computations per query (lower is better)"; set yrange [100:8000]
plot "$out/faiss.dat" u 1:2 w lp t "faiss", "$out/default.dat" u 1:2 w lp t "default"
set ylabel "queries per second, $threads threads (higher is better)"; set key top right; set yrange [*:*]
plot "$out/faiss.dat" u 1:3 w lp t "faiss", "$out/default.dat" u 1:3 w lp t "default"
unset multiplot
GP
    rm -f "$out/faiss.dat" "$out/default.dat"
    echo "plot: $out/demo.png (left: recall vs DCO; right: recall vs QPS)"
fi
echo "files: $out (indexes, build-*.txt, search-*.txt, summary.txt); $((SECONDS - t0)) s in all"
