#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# plot_curves.sh DIR [TITLE]: DIR/curves.csv (from build/ivf_curves) -> DIR/curves.png: recall@10 vs
# DCO (log x), one line per method, seed 1 (the first seed in the file), with gnuplot.
set -euo pipefail
dir="$1"; title="${2:-$(basename "$dir")}"
command -v gnuplot >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq gnuplot-nox >/dev/null; }
cd "$dir"
seed=$(awk -F, 'NR == 2 {print $2}' curves.csv)
methods=$(awk -F, 'NR > 1 {print $1}' curves.csv | awk '!seen[$0]++')
plot=""
for m in $methods; do
    awk -F, -v m="$m" -v s="$seed" '$1 == m && $2 == s {print $5, $4}' curves.csv > "curve-$m.dat"
    plot="$plot${plot:+, }\"curve-$m.dat\" u 1:2 w lp t \"$m\""
done
gnuplot <<GP
set terminal pngcairo noenhanced size 900,600 font ",11"
set output "curves.png"
set title "$title: recall@10 vs distance computations (seed $seed)"
set xlabel "DCO per query (nlist + scanned entries)"; set ylabel "recall@10"
set logscale x; set grid; set key bottom right
plot $plot
GP
rm -f curve-*.dat
echo "wrote $dir/curves.png"
