/* fuzz_index.c: the sidecars of a spilled index, as fgmm_ivf_read parses and binds them. The
 * FAISS index file itself stays valid (FAISS's reader is FAISS's, not hardened, README). The
 * first byte picks the file the rest of the input becomes: even: PATH.fgmm (the settings) beside
 * a valid index and model; odd: PATH.gmm (the model) beside a valid index and settings. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index_setup.h"

static char dir[400], idx[2][480];

static void cleanup(void) {
    char f[512];
    for (int i = 0; i < 2; i++) {
        for (int e = 0; e < 3; e++) {
            snprintf(f, sizeof f, "%s%s", idx[i], e == 0 ? "" : e == 1 ? ".fgmm" : ".gmm");
            unlink(f);
        }
    }
    rmdir(dir);
}

/* Two copies of the index: one whose .fgmm is replaced by inputs, one whose .gmm is. */
static void setup(void) {
    const char* tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fgmm_fuzz_index_XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz_index: mkdtemp");
        abort();
    }
    atexit(cleanup);
    for (int i = 0; i < 2; i++) {
        snprintf(idx[i], sizeof idx[i], "%s/%s.faiss", dir, i ? "model" : "settings");
        if (fuzz_ivf_write(idx[i])) {
            fprintf(stderr, "fuzz_index: cannot build the index: %s\n", fgmm_get_last_error());
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static int ready;
    if (!ready) setup(), ready = 1;
    if (size < 1) return 0;
    int mode = data[0] & 1;
    char f[512];
    snprintf(f, sizeof f, "%s%s", idx[mode], mode ? ".gmm" : ".fgmm");
    FILE* out = fopen(f, "wb");
    if (!out) abort();
    if (fwrite(data + 1, 1, size - 1, out) != size - 1 || fclose(out)) abort();
    FgmmIvf* h = NULL;
    int rc = fgmm_ivf_read(idx[mode], NULL, &h);
    if (rc == FGMM_OK) {
        if (!h) abort();
        fgmm_ivf_free(h);
    } else if (rc > 0 || h || !fgmm_get_last_error()[0]) {
        abort(); /* errors are negative codes with a message and no handle */
    }
    return 0;
}
