/* SPDX-License-Identifier: MIT */
/* search_report.c: bench_search's tables (what they mean: bench_search.c's header). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "search_report.h"

/* QPS (t >= 0: thread index t) or DCO (t = -1) of a sweep of n points at recall level lv: -1 if the
 * sweep does not reach it (bracket: nor starts at or below it; else the first point's value serves).
 * Log-linear in recall between the points that bracket lv (the same as log nprobe linear in recall,
 * log QPS linear in log nprobe). */
static double value_at(const point* pts, int n, double lv, int t, int bracket) {
    for (int p = 0; p < n; p++) {
        if (pts[p].recall < lv) continue;
        double vb = t < 0 ? pts[p].dco : pts[p].qps[t];
        if (p == 0) return bracket && pts[0].recall > lv ? -1 : vb;
        double va = t < 0 ? pts[p - 1].dco : pts[p - 1].qps[t];
        if (!(pts[p].recall > pts[p - 1].recall)) return vb;
        double f = (lv - pts[p - 1].recall) / (pts[p].recall - pts[p - 1].recall);
        return exp(log(va) + f * (log(vb) - log(va)));
    }
    return -1;
}

static int cmp_point(const void* a, const void* b) {
    const point *x = a, *y = b;
    return (x->recall > y->recall) - (x->recall < y->recall);
}

/* The row row m is divided by in the first summary: FAISS's row of the same k_factor (--pq), else row 0. */
static int base_row(int m) {
    for (int c = 0; c < nrows; c++)
        if (rs[c].api && rs[c].kf == rs[m].kf && (rs[c].build == B_FAISS)) return c;
    return 0;
}

void print_seed(int seed, const row* rw, int probe, int n, const double* xs, int nt) {
    int any = 0;
    for (int m = 0; m < nrows; m++) any |= (rs[m].rule >= 0) == probe;
    if (!any) return;
    printf("seed %d%s, then per row %srecall@10 / DCO / QPS at each thread count\n", seed,
           probe ? " probe rows: target" : ": nprobe", probe ? "setting / calibration recall / " : "");
    printf(probe ? "| target |" : "| nprobe |");
    for (int m = 0; m < nrows; m++)
        if ((rs[m].rule >= 0) == probe) printf(" %s |", rs[m].name);
    printf("\n|---:|");
    for (int m = 0; m < nrows; m++)
        if ((rs[m].rule >= 0) == probe) printf("---|");
    printf("\n");
    for (int p = 0; p < n; p++) {
        printf("| %g |", xs[p]);
        for (int m = 0; m < nrows; m++) {
            if ((rs[m].rule >= 0) != probe) continue;
            const point* pt = &rw[m].p[p];
            if (pt->recall < 0) {
                printf(" - |");
                continue;
            }
            if (probe) printf(" %.4g / %.4f /", pt->setting, pt->cal_recall);
            printf(" %.4f / %.0f /", pt->recall, pt->dco);
            for (int t = 0; t < nt; t++) printf(" %.0f", pt->qps[t]);
            printf(" |");
        }
        printf("\n");
    }
}

#define NPTS(m) (rs[m].rule >= 0 ? ntg : np)

void print_summary(row (*rows)[MAX_ROWS], int ns, const int* threads, int nt, int pq, int reps, int np, int ntg,
                   const double* targets, int nru) {
    /* every row's points per seed; a probe row's: the targets reached, sorted by recall */
    static point sw[MAX_SEEDS][MAX_ROWS][MAX_PROBES];
    static int nsw[MAX_SEEDS][MAX_ROWS];
    for (int si = 0; si < ns; si++)
        for (int m = 0; m < nrows; m++) {
            int n = 0;
            for (int p = 0; p < NPTS(m); p++)
                if (rows[si][m].p[p].recall >= 0) sw[si][m][n++] = rows[si][m].p[p];
            if (rs[m].rule >= 0) qsort(sw[si][m], (size_t)n, sizeof(point), cmp_point);
            nsw[si][m] = n;
        }
    const double levels[] = {0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.95, 0.99};
    const int nl = sizeof levels / sizeof levels[0], l0 = pq ? 0 : 3; /* PQ alone tops out low */
    double mb[MAX_ROWS] = {0};
    for (int m = 0; m < nrows; m++)
        for (int si = 0; si < ns; si++) mb[m] += rows[si][m].bytes / 1e6 / ns;
    for (int table = reps ? 0 : 2; table < 3; table++) { /* QPS to the base row, to FAISS's best; DCO */
        if (table == 0) {
            printf(
                "\nmean over %d seeds: train s, add s, MB; QPS ratio to %s at recall@10 level, mean [min, max] over seeds "
                "(threads:",
                ns, pq ? "FAISS's row of the same k_factor" : rs[0].name);
        } else if (table == 1) {
            printf(
                "\nQPS ratio to FAISS's best row of at most the row's MB (the highest QPS at the level among FAISS's "
                "rows, per seed and thread count), mean [min, max] over seeds (threads:");
        } else {
            printf("\nDCO ratio to %s at recall@10 level, mean [min, max] over seeds (< 1: fewer distance computations",
                   pq ? "FAISS's row of the same k_factor" : rs[0].name);
        }
        for (int t = 0; t < nt && table < 2; t++) printf(" %d", threads[t]);
        printf("; '-' where a curve does not reach the level)\n\n| row | train s | add s | MB |");
        for (int l = l0; l < nl; l++) printf(" @%.2f |", levels[l]);
        printf("\n|---|---:|---:|---:|");
        for (int l = l0; l < nl; l++) printf("---|");
        printf("\n");
        for (int m = 0; m < nrows; m++) {
            if (table == 1 && rs[m].api) continue;
            double tr = 0, ad = 0;
            for (int si = 0; si < ns; si++) tr += rows[si][m].train_s / ns, ad += rows[si][m].add_s / ns;
            printf("| %s | %.2f | %.2f | %.1f |", rs[m].name, tr, ad, mb[m]);
            for (int l = l0; l < nl; l++) {
                printf(" ");
                for (int t = 0; t < (table < 2 ? nt : 1); t++) {
                    int tt = table < 2 ? t : -1;
                    double s = 0, lo = INFINITY, hi = 0;
                    int ok = 1;
                    for (int si = 0; si < ns && ok; si++) {
                        double a = value_at(sw[si][m], nsw[si][m], levels[l], tt, rs[m].rule >= 0), f = -1;
                        for (int c = 0; c < nrows; c++) /* the baseline: faiss, or FAISS's best of <= MB */
                            if (table == 1 ? rs[c].api && mb[c] <= mb[m] * 1.0001 : c == base_row(m)) {
                                double v = value_at(sw[si][c], nsw[si][c], levels[l], tt, rs[c].rule >= 0);
                                f = v > f ? v : f;
                            }
                        ok = a > 0 && f > 0;
                        double r = ok ? a / f : 0;
                        s += r / ns, lo = r < lo ? r : lo, hi = r > hi ? r : hi;
                    }
                    if (!ok) printf("%s-", t ? " / " : "");
                    else if (ns > 1 && (m != base_row(m) || table == 1))
                        printf("%s%.2f [%.2f, %.2f]", t ? " / " : "", s, lo, hi);
                    else printf("%s%.2f", t ? " / " : "", s);
                }
                printf(" |");
            }
            printf("\n");
        }
    }
    if (nru) { /* how well the calibration transfers to the queries */
        printf(
            "\ncalibration: recall@10 on the queries minus the target, mean [min, max] over targets and seeds; "
            "seconds per calibration\n\n| row | recall - target | s |\n|---|---|---:|\n");
        for (int m = 0; m < nrows; m++) {
            if (rs[m].rule < 0) continue;
            double s = 0, lo = INFINITY, hi = -INFINITY, cs = 0;
            int n = 0;
            for (int si = 0; si < ns; si++) {
                cs += rows[si][m].cal_s / ntg / ns;
                for (int g = 0; g < ntg; g++) {
                    if (rows[si][m].p[g].recall < 0) continue;
                    double e = rows[si][m].p[g].recall - targets[g];
                    s += e, n++, lo = e < lo ? e : lo, hi = e > hi ? e : hi;
                }
            }
            printf("| %s | %+.4f [%+.4f, %+.4f] | %.2f |\n", rs[m].name, n ? s / n : 0, lo, hi, cs);
        }
    }
}
