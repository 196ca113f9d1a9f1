/* SPDX-License-Identifier: MIT */
/* error.c: the thread-local last-error message (FAISS c_api style). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[512];

/* Formats into a local buffer first: a message may include fgmm_get_last_error() itself. */
int fgmm_set_last_error(int code, const char* fmt, ...) {
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "(no message)", ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return code;
}

void fgmm_clear_error(void) { last_error[0] = '\0'; }

const char* fgmm_get_last_error(void) { return last_error; }
