/* SPDX-License-Identifier: MIT */
/* fuzz_hdf5.c: the HDF5 reader (datasets "train", then "dataset"). */
#include "flashgmm_io.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* p = fuzz_file(data, size, "h5");
    if (!p) return 0;
    FgmmVecs v;
    if (fgmm_vecs_read(p, NULL, 0, &v) == 0) fgmm_vecs_free(&v);
    if (fgmm_vecs_read_rows(p, NULL, 1, 2, &v) == 0) fgmm_vecs_free(&v); /* a shard */
    unlink(p);
    return 0;
}
