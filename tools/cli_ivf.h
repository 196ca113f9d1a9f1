/* SPDX-License-Identifier: MIT */
/* cli_ivf.h: `flashgmm ivf build | search | export` (built where the FAISS plugin is). */
#ifndef FGMM_CLI_IVF_H
#define FGMM_CLI_IVF_H

#include <stdio.h>

extern const char fgmm_cli_ivf_usage[]; /* the ivf commands' one-line summaries */

/* argv[1] is "ivf". Returns the process's exit status (0, 1 failure, 2 bad usage). */
int fgmm_cli_ivf(int argc, char** argv);

#endif
