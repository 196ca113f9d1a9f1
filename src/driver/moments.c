/* SPDX-License-Identifier: MIT */
/* moments.c: the data's mean per-dimension variance (the scale of the variance floor and of the
 * data checks), in one parallel pass over this rank's rows, merged over the ranks. */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

/* Chan et al.: a block of nb rows with mean mb and squared deviations qb merged into (cnt, mean, m2). */
static void moments_merge(double* cnt, double* mean, double* m2, double nb, double mb, double qb) {
    if (nb == 0) return;
    const double tot = *cnt + nb, delta = mb - *mean;
    *mean += delta * nb / tot;
    *m2 += qb + delta * delta * *cnt * nb / tot;
    *cnt = tot;
}

/* Per-dimension mean and sum of squared deviations of the rows, in double: Welford per dimension
 * over a contiguous block of rows per thread (stable for data far from the origin), blocks merged
 * in order. One pass over data the size of the whole training set: it was single-threaded, with a
 * division per value. mom = [count, mean d, m2 d]. Returns -1 when out of memory. */
static int data_moments(const fgmm_data* x, double* mom) {
    const int d = x->d;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    if ((fgmm_idx_t)nt > x->n) nt = (int)x->n;
    double* st = calloc((size_t)nt * 2 * d, sizeof(double)); /* per block: mean[d], m2[d] */
    int bad = !st;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        int b = 0;
#ifdef _OPENMP
        b = omp_get_thread_num();
#endif
        float* row = malloc((size_t)d * sizeof(float));
        if (!row || !st) {
            bad = 1;
        } else {
            double *mean = st + (size_t)b * 2 * d, *m2 = mean + d;
            const fgmm_idx_t lo = x->n * b / nt, hi = x->n * (b + 1) / nt;
            for (fgmm_idx_t i = lo; i < hi; i++) {
                fgmm_data_row(x, i, row);
                const double inv = 1.0 / (double)(i - lo + 1);
                for (int t = 0; t < d; t++) {
                    double delta = row[t] - mean[t];
                    mean[t] += delta * inv;
                    m2[t] += delta * (row[t] - mean[t]);
                }
            }
        }
        free(row);
    }
    if (!bad)
        for (int t = 0; t < d; t++) {
            double cnt = 0, mean = 0, m2 = 0;
            for (int b = 0; b < nt; b++)
                moments_merge(&cnt, &mean, &m2, (double)(x->n * (b + 1) / nt - x->n * b / nt),
                              st[(size_t)b * 2 * d + t], st[(size_t)b * 2 * d + d + t]);
            mom[1 + t] = mean;
            mom[1 + d + t] = m2;
        }
    mom[0] = (double)x->n;
    free(st);
    return bad ? -1 : 0;
}

/* The mean per-dimension variance of the rows of all ranks (their moments merged in rank order), into
 * t->mean_var. status: this rank's outcome so far (its rows are not read unless it is 0). The same
 * pass checks the values: a double sum of float terms is finite unless a term is not (|x| <= 3.4e38,
 * so x^2 and n of them stay far below the double range); then fgmm_data_check finds and names it. */
int fgmm_tr_mean_var(trainer* t, int status) {
    const int d = t->d, np = t->comm ? t->comm->size : 1, me = t->comm ? t->comm->rank : 0;
    const size_t len = 1 + 2 * (size_t)d;
    /* nothing sized by n or d before they are checked (status) */
    double* mom = status ? NULL : calloc((size_t)np * len, sizeof(double));
    t->col_mean = status ? NULL : malloc((size_t)d * sizeof(double));
    if (!status && (!mom || !t->col_mean || data_moments(&t->x, mom + (size_t)me * len)))
        status = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (!status) memcpy(t->col_mean, mom + (size_t)me * len + 1, (size_t)d * sizeof(double));
    for (size_t j = 0; !status && j < len; j++)
        if (!isfinite(mom[(size_t)me * len + j]) && !(status = fgmm_data_check(&t->x, "fgmm_train")))
            status = fgmm_fail(FGMM_ERR_DATA, "fgmm_train: the data's moments are not finite");
    int rc = fgmm_tr_gather_rows(t, mom, NULL, len * sizeof(double), status);
    if (!rc) {
        double v = 0;
        for (int j = 0; j < d; j++) {
            double cnt = 0, mean = 0, m2 = 0;
            for (int r = 0; r < np; r++) {
                const double* m = mom + (size_t)r * len;
                moments_merge(&cnt, &mean, &m2, m[0], m[1 + j], m[1 + d + j]);
            }
            v += m2 / (double)t->n_all;
        }
        t->mean_var = v / d;
    }
    free(mom);
    return rc;
}
