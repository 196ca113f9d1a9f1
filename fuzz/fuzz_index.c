/* SPDX-License-Identifier: MIT */
/* fuzz_index.c: index files as fgmm_ivf_read takes them, then the round trip. The first byte picks
 * where the rest goes (fuzz/index_setup.h, fuzz_ivf_place): 'f' / 'g': the settings / model
 * sidecar of a three-file set (older versions' files) beside a valid FAISS file and the other
 * sidecar; 'I': a one-file index whose checksums the harness recomputes (to reach the checks behind
 * them); any other: a one-file index as given. Inputs FAISS's reader would parse (FAISS's, not
 * hardened: docs/FORMAT.md) are skipped: one-file inputs not starting with "FGMM" (read as plain
 * FAISS files) or whose FAISS section is not the setup index's. An index
 * that reads must search, write, read back equal and write the same bytes, also after an add
 * (fuzz_ivf_roundtrip); a refused one gives a negative code, a message and no handle. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index_setup.h"

static char dir[400];
static FuzzIvfFiles files;

static void cleanup(void) {
    fuzz_ivf_teardown(&files);
    rmdir(dir);
}

static void setup(void) {
    const char* tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fgmm_fuzz_index_XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz_index: mkdtemp");
        abort();
    }
    atexit(cleanup);
    if (fuzz_ivf_setup(dir, &files)) {
        fprintf(stderr, "fuzz_index: cannot build the index: %s\n", fgmm_get_last_error());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static int ready;
    if (!ready) setup(), ready = 1;
    const char* path = fuzz_ivf_place(&files, data, size);
    if (!path) return 0;
    FgmmIvf* h = NULL;
    int rc = fgmm_ivf_read(path, NULL, &h);
    if (rc == FGMM_OK) {
        if (!h) abort();
        const char* bad = fuzz_ivf_roundtrip(h, &files);
        if (bad) {
            fprintf(stderr, "fuzz_index: an index that read failed the round trip: %s: %s\n", bad,
                    fgmm_get_last_error());
            abort();
        }
        fgmm_ivf_free(h);
    } else if (rc > 0 || h || !fgmm_get_last_error()[0]) {
        abort(); /* errors are negative codes with a message and no handle */
    }
    return 0;
}
