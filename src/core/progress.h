/* SPDX-License-Identifier: MIT */
/* progress.h: a training's progress line with an estimate of the time left, for the programs that
 * call fgmm_train / fgmm_ivf_train (flashgmm train, ivf_curves). Header-only: the estimate is the
 * caller's (FgmmProgressFn gives the phase and the iteration; the caller knows the plan and the
 * clock).
 *
 * The estimate: iterations left in each phase times that phase's seconds per iteration (its mean
 * after the first, which also holds the data pass and the seeding); EM iterations not begun are
 * priced at FGMM_ETA_EM_PER_KM k-means iterations (an E-step is two GEMMs and exps, a k-means pass
 * one GEMM). With a tolerance stop EM may end sooner: the estimate is then an upper bound. */
#ifndef FGMM_PROGRESS_H
#define FGMM_PROGRESS_H

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "flashgmm.h"

#define FGMM_ETA_EM_PER_KM 2.0

typedef struct fgmm_eta {
    int planned_km, planned_em; /* iterations planned (k-means quantizer: all of them k-means) */
    int done[2];                /* iterations reported, per phase (FGMM_PHASE_KMEANS, FGMM_PHASE_EM) */
    double first[2], sum[2];    /* seconds of each phase's first iteration and of all of them */
    double start, last;         /* clock at the start of the training and at the last report */
} fgmm_eta;

static inline double fgmm_eta_clock(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Starts the clock of a training of kmeans_iter k-means and niter EM iterations at most. */
static inline void fgmm_eta_start(fgmm_eta* e, int kmeans_iter, int niter, double now) {
    memset(e, 0, sizeof *e);
    e->planned_km = kmeans_iter;
    e->planned_em = niter;
    e->start = e->last = now;
}

/* Seconds per iteration of phase ph so far (0 if none reported). */
static inline double fgmm_eta_rate(const fgmm_eta* e, int ph) {
    if (e->done[ph] == 0) return 0;
    return e->done[ph] == 1 ? e->sum[ph] : (e->sum[ph] - e->first[ph]) / (e->done[ph] - 1);
}

/* Records an iteration of phase ph ended at `now`; returns the estimated seconds left. */
static inline double fgmm_eta_update(fgmm_eta* e, FgmmPhase phase, double now) {
    const int ph = phase == FGMM_PHASE_EM;
    const double dt = now > e->last ? now - e->last : 0;
    e->last = now;
    if (e->done[ph]++ == 0) e->first[ph] = dt;
    e->sum[ph] += dt;
    const int total = e->planned_km + e->planned_em, done = e->done[0] + e->done[1];
    int left_km = e->planned_km - e->done[0];
    if (left_km < 0) left_km = 0;
    int left_em = total - done - left_km; /* k-means iterations beyond planned_km take EM's place */
    if (left_em < 0) left_em = 0;
    double km = fgmm_eta_rate(e, 0), em = fgmm_eta_rate(e, 1);
    if (e->done[1] == 0) em = e->done[0] > e->planned_km ? km : km * FGMM_ETA_EM_PER_KM;
    if (e->done[0] == 0) km = em / FGMM_ETA_EM_PER_KM;
    return left_km * km + left_em * em;
}

/* "1h02m", "3m05s", "12s", "0.4s" */
static inline void fgmm_eta_format(double s, char* buf, size_t len) {
    if (s < 0) s = 0;
    if (s < 10) snprintf(buf, len, "%.1fs", s);
    else if (s < 60) snprintf(buf, len, "%.0fs", s);
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

/* Records an iteration and prints "PREFIX: k-means 3/10 (mean sq. distance 1.2e+05) ... 4.1s elapsed,
 * ~12s left" on f: on a terminal one line rewritten in place (end it with fgmm_eta_end), else one line
 * per iteration. */
static inline void fgmm_eta_print(fgmm_eta* e, FILE* f, int tty, const char* prefix, FgmmPhase phase, int iter,
                                  double obj) {
    const double now = fgmm_eta_clock(), left = fgmm_eta_update(e, phase, now);
    char el[16], lf[16];
    fgmm_eta_format(now - e->start, el, sizeof el);
    fgmm_eta_format(left, lf, sizeof lf);
    const int em = phase == FGMM_PHASE_EM;
    const int of = em ? e->planned_em : e->planned_km > iter ? e->planned_km : e->planned_km + e->planned_em;
    fprintf(f, "%s%s: %s %d/%d (%s %.6g), %s elapsed, ~%s left%s", tty ? "\r" : "", prefix, em ? "EM" : "k-means",
            iter + 1, of, em ? "log-likelihood" : "mean sq. distance", em ? obj : -obj, el, lf, tty ? "\033[K" : "\n");
    fflush(f);
}

/* Ends a terminal's rewritten line. */
static inline void fgmm_eta_end(const fgmm_eta* e, FILE* f, int tty) {
    if (tty && e->done[0] + e->done[1] > 0) fputc('\n', f), fflush(f);
}

#endif
