/* error.c: the thread-local last-error message (FAISS c_api style). */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char last_error[512];

int fgmm_fail(int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

void fgmm_clear_error(void) { last_error[0] = '\0'; }

const char* fgmm_get_last_error(void) { return last_error; }
