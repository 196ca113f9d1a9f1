/* SPDX-License-Identifier: MIT */
/* fuzz_model.c: the .gmm model loader. */
#include "flashgmm.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* p = fuzz_file(data, size, "gmm");
    if (!p) return 0;
    FgmmModel* m = NULL;
    if (fgmm_model_read(p, &m) == 0) fgmm_model_free(m);
    unlink(p);
    return 0;
}
