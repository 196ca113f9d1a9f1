/* SPDX-License-Identifier: MIT */
/* fuzz_vecs.c: the .fvecs / .bvecs / .ivecs reader. The first byte picks the extension. */
#include "flashgmm_io.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const char* ext[3] = {"fvecs", "bvecs", "ivecs"};
    if (size < 1) return 0;
    const char* p = fuzz_file(data + 1, size - 1, ext[data[0] % 3]);
    if (!p) return 0;
    FgmmVecs v;
    if (fgmm_vecs_read(p, NULL, 0, &v) == 0) fgmm_vecs_free(&v);
    if (fgmm_vecs_read(p, NULL, 1, &v) == 0) fgmm_vecs_free(&v);         /* max_rows */
    if (fgmm_vecs_read_rows(p, NULL, 1, 2, &v) == 0) fgmm_vecs_free(&v); /* a shard */
    fgmm_idx_t n;
    int d;
    FgmmDtype t;
    fgmm_vecs_shape(p, NULL, &n, &d, &t);
    unlink(p);
    return 0;
}
