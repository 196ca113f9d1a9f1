/* SPDX-License-Identifier: MIT */
/* trace.c: FGMM_TRACE=1 prints the seconds of each step of a training (and of the engine's parts
 * of a step) to stderr. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    if (trace_on()) fprintf(stderr, "fgmm trace: %-34s %8.4f s\n", what, t - *mark);
    *mark = t;
}
