#!/usr/bin/env bash
# plot_curves.sh DIR [TITLE]: DIR/curves.csv -> DIR/curves.png (recall@10 vs DCO, log x), with gnuplot.
set -euo pipefail
dir="$1"; title="${2:-$(basename "$dir")}"
command -v gnuplot >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq gnuplot-nox >/dev/null; }
cd "$dir"
for m in kmeans gmm-hard gmm-tau kmeans-top2; do grep "^$m," curves.csv | tr , ' ' > "curve-$m.dat"; done
gnuplot <<GP
set terminal pngcairo noenhanced size 900,600 font ",11"
set output "curves.png"
set title "$title: recall@10 vs distance computations"
set xlabel "DCO per query (nlist + scanned entries)"; set ylabel "recall@10"
set logscale x; set grid; set key bottom right
plot "curve-kmeans.dat" u 4:3 w lp t "k-means (FAISS)", "curve-gmm-hard.dat" u 4:3 w lp t "GMM, hard", \
     "curve-gmm-tau.dat" u 4:3 w lp t "GMM, tau = 1/K spill", "curve-kmeans-top2.dat" u 4:3 w lp t "k-means, top-2 spill"
GP
rm -f curve-*.dat
echo "wrote $dir/curves.png"
