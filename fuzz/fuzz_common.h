/* SPDX-License-Identifier: MIT */
/* fuzz_common.h: libFuzzer targets write each input to a per-process file, then read it back
 * through the library (the readers take paths). */
#ifndef FGMM_FUZZ_COMMON_H
#define FGMM_FUZZ_COMMON_H
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Writes data to $TMPDIR/fgmm_fuzz_<pid>.<ext>; returns the path (static buffer) or NULL. */
static const char* fuzz_file(const uint8_t* data, size_t size, const char* ext) {
    static char path[512];
    const char* dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fgmm_fuzz_%ld.%s", dir ? dir : "/tmp", (long)getpid(), ext);
    FILE* f = fopen(path, "wb");
    if (!f) return NULL;
    int ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0 || !ok) return NULL;
    return path;
}
#endif
