/* SPDX-License-Identifier: MIT */
/* trainer.h: the state of one training (fgmm_train_comm) and the driver's functions that share it
 * across src/driver/: params.c, train_comm.c, moments.c, seed.c, train.c, model_calls.c. */
#ifndef FGMM_TRAINER_H
#define FGMM_TRAINER_H

#include "internal.h"

typedef struct trainer {
    const FgmmParams* p;
    fgmm_data x;      /* this rank's rows */
    fgmm_comm* comm;  /* NULL: one process */
    fgmm_idx_t n_all; /* rows over all ranks */
    fgmm_engine* eng;
    int k, d;
    float* sample; /* ns x d rows, sorted sampled ids: seeding and re-seeding pool */
    fgmm_idx_t ns;
    double mean_var;  /* data's mean per-dimension variance */
    double* col_mean; /* this rank's rows' column means (d), for the engine's set_scan */
    double* mark;     /* FGMM_TRACE: the time of the last traced step */
    float* tmp_ll;    /* ns */
    uint64_t rng;
} trainer;

/* params.c */
int fgmm_check_params(const FgmmParams* p);

/* train_comm.c: fgmm_comm's collectives; in one process they return status and move nothing. */
int fgmm_tr_sum(trainer* t, double* v, size_t n, int status);
int fgmm_tr_bcast(trainer* t, void* buf, size_t bytes, int status);
int fgmm_tr_gather_rows(trainer* t, void* all, const fgmm_idx_t* part, size_t row_bytes, int status);
int fgmm_tr_sum_stats(trainer* t, fgmm_stats* st, int status);

/* moments.c */
int fgmm_tr_mean_var(trainer* t, int status);

/* seed.c */
int fgmm_tr_draw_sample(trainer* t);
int fgmm_tr_widen_sample(trainer* t);
int fgmm_tr_kmeanspp(trainer* t, float* cent);
int fgmm_tr_reseed_worst(trainer* t, const FgmmModel* m, const int* empty, float* means, int* nreseeded);

#endif
