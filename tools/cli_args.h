/* SPDX-License-Identifier: MIT */
/* cli_args.h: what the command-line programs (flashgmm, flashgmm-mpi) share: train's options,
 * the output checks, progress and result lines. */
#ifndef FGMM_CLI_ARGS_H
#define FGMM_CLI_ARGS_H

#include <stdio.h>

#include "flashgmm.h"
#include "flashgmm_io.h"

extern const char* fgmm_cli_prog;         /* the program's name in messages (default "flashgmm") */
extern int fgmm_cli_quiet;                /* 1: the parser's messages are not printed (MPI ranks but one) */
extern const char fgmm_cli_train_usage[]; /* train's option lines */

typedef struct fgmm_cli_args {
    const char* out;     /* --out, or NULL */
    const char* dataset; /* --dataset, or NULL */
    fgmm_idx_t max_rows; /* --max-rows, 0 = all */
    int hdf5_in_process; /* --hdf5 in-process: parse HDF5 inputs here, not in a child process */
    FgmmParams p;        /* fgmm_params_init then the options */
    int progress;        /* --progress 1, --quiet 0; -1 (default): when stderr is a terminal */
    int quiet;           /* --quiet: no per-iteration lines either */
} fgmm_cli_args;

/* Parses argv[a..argc) (pairs OPTION VALUE) into args, for command cmd ("train" takes --out, the
 * others refuse it). Returns 0, or 2 after a message. */
int fgmm_cli_parse(int argc, char** argv, int a, const char* cmd, fgmm_cli_args* args);
/* A whole-string integer in [lo, hi] into *out: 1; else a message naming opt and the range, and 0. */
int fgmm_cli_int(const char* opt, const char* v, long long lo, long long hi, long long* out);
/* Rows [first, first + max_rows) of in (shape_only: its shape in out->n, d, dtype), an HDF5 file parsed
 * in a child process unless --hdf5 in-process. */
int fgmm_cli_read(const fgmm_cli_args* args, const char* in, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                  FgmmVecs* out);
/* Starts CUDA on the devices p trains on (fgmm_gpu_prestart), unless p's backend is the CPU: call it
 * before reading the data, which then hides the start. Its failures are the training's to report. */
void fgmm_cli_prestart(const FgmmParams* p);
/* The output is not the input and its directory is writable (a file is made there and removed).
 * Returns 0, 1 (cannot write, message printed) or 2 (it is the input). */
int fgmm_cli_check_out(const char* in, const char* out);
/* The per-iteration line of train on stdout (an FgmmProgressFn; user: NULL, or the state that
 * fgmm_cli_progress_begin sets). */
void fgmm_cli_progress(void* user, FgmmPhase phase, int iter, double obj, int reseeded);
/* Points a->p.progress at train's reports (one training per process, of a->p's kmeans_iter + niter
 * iterations at most): nothing with --quiet, else the per-iteration lines on stdout (if log_lines) and,
 * with --progress or stderr a terminal, a progress line on stderr with the time left (src/core/progress.h).
 * Call just before training; fgmm_cli_progress_end after it. */
void fgmm_cli_progress_begin(fgmm_cli_args* a, int log_lines);
void fgmm_cli_progress_end(void);
/* "PROG: what: last error" on stderr; returns 1. */
int fgmm_cli_fail(const char* what);
const char* fgmm_cli_dtype_name(FgmmDtype t);
void fgmm_cli_print_data(const char* in, fgmm_idx_t n, int d, FgmmDtype t, const FgmmParams* p);
void fgmm_cli_print_done(const FgmmTrainInfo* info);

#endif
