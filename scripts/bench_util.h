/* bench_util.h: timing helpers shared by the benchmark programs. */
#ifndef FGMM_BENCH_UTIL_H
#define FGMM_BENCH_UTIL_H
#include <time.h>

static inline double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static inline double now_s(void) { return now_ms() * 1e-3; }

static inline int cmp_d(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}
#endif
