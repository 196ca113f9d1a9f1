/* SPDX-License-Identifier: MIT */
/* search_report.h: bench_search's rows, their measured points and its tables (search_report.c). */
#ifndef FGMM_SEARCH_REPORT_H
#define FGMM_SEARCH_REPORT_H

#define K 10
#define MAX_PROBES 24
#define MAX_SEEDS 8
#define MAX_THREADS 4
#define MAX_ROWS 24
#define MAX_KF 6
#define MAX_TARGETS 12
#define NR 3 /* probe rules: FgmmProbeRule's values */

enum { B_FAISS, B_HARD, B_DEFAULT, B_WIDE }; /* builds: FAISS's, gmm-hard, default, FAISS at wider nlists */
#define MAX_BUILDS (B_WIDE + 4)

typedef struct rowspec {
    char name[32];
    int build, api; /* api: searched by FAISS's C API (else fgmm_ivf_search*) */
    int engine;     /* ours: FGMM_SEARCH_* */
    float kf;       /* re-ranking k_factor (0: none) */
    int rule;       /* -1: swept over --nprobes; else the FgmmProbeRule calibrated for each --targets */
} rowspec;

typedef struct point {
    double recall, dco, qps[MAX_THREADS];
    double setting, cal_recall; /* nprobe, or a probe row's calibrated setting and its calibration recall */
} point;

typedef struct row {
    double train_s, add_s, bytes, cal_s; /* cal_s: seconds of a probe row's calibrations */
    point p[MAX_PROBES];                 /* per nprobe, or per target (probe rows; recall -1: not reached) */
} row;

extern rowspec rs[MAX_ROWS]; /* the rows, in table order */
extern int nrows;

/* Seed table of the swept rows (probe 0: per nprobe) or of the probe rows (probe 1: per target, each
 * point with its setting and calibration recall first); xs: the n nprobes or targets. */
void print_seed(int seed, const row* rw, int probe, int n, const double* xs, int nt);

/* The summary tables over the ns seeds: QPS ratios (reps > 0), DCO ratios, and with nru probe rules
 * the calibration's transfer to the queries; np nprobes swept, ntg targets. */
void print_summary(row (*rows)[MAX_ROWS], int ns, const int* threads, int nt, int pq, int reps, int np, int ntg,
                   const double* targets, int nru);

#endif
