/* SPDX-License-Identifier: MIT */
/* bench_util.h: timing helpers shared by the benchmark programs. */
#ifndef FGMM_BENCH_UTIL_H
#define FGMM_BENCH_UTIL_H
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

static inline double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static inline double now_s(void) { return now_ms() * 1e-3; }

/* CPU seconds of the process so far: beside wall seconds on a machine shared with other work. */
static inline double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static inline int cmp_d(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}
/* xorshift64: the benchmarks' data generator (state != 0); one state per row gives the same data at any
 * thread count. */
static inline uint64_t rng(uint64_t* s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
static inline float gauss(uint64_t* s) { /* sum of 4 uniforms: cheap, roughly normal, unit variance */
    float u = 0;
    for (int i = 0; i < 4; i++) u += (rng(s) >> 40) * (1.0f / 16777216.0f);
    return (u - 2.0f) * 1.7320508f;
}
#endif
