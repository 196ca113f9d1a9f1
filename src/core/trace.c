/* SPDX-License-Identifier: MIT */
/* trace.c: FGMM_TRACE=1 prints the seconds of each step of a training (and of the engine's parts
 * of a step) to stderr, with the process's CPU seconds so far. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "internal.h"

double fgmm_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int trace_on(void) {
    static atomic_int on = -1; /* FGMM_TRACE read once */
    int v = atomic_load(&on);
    if (v < 0) {
        const char* e = getenv("FGMM_TRACE");
        v = e && *e && strcmp(e, "0");
        atomic_store(&on, v);
    }
    return v;
}

/* CPU seconds of the process so far (all threads): differences between steps are the steps' CPU
 * seconds, the measure on a machine shared with other work. */
static double cpu_now(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int fgmm_trace_on(void) { return trace_on(); }

void fgmm_trace_note(const char* fmt, ...) {
    if (!trace_on()) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fgmm trace: %s\n", line);
}

void fgmm_trace(double* mark, const char* what) {
    double t = fgmm_now();
    if (trace_on()) fprintf(stderr, "fgmm trace: %-34s %8.4f s  (process: %.3f CPU-s)\n", what, t - *mark, cpu_now());
    *mark = t;
}
