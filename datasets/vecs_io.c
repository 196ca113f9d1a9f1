/* vecs_io.c: readers and writers for TEXMEX-style .fvecs/.bvecs/.ivecs and HDF5 matrices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flashgmm_io.h"
#include "internal.h"

#ifdef FGMM_WITH_HDF5
#include <hdf5.h>
#endif

static const char* ext_of(const char* path) {
    const char* dot = strrchr(path, '.');
    return dot ? dot + 1 : "";
}

static int dtype_of_ext(const char* e, FgmmDtype* t) {
    if (!strcmp(e, "fvecs")) *t = FGMM_F32;
    else if (!strcmp(e, "bvecs")) *t = FGMM_U8;
    else if (!strcmp(e, "ivecs")) *t = FGMM_I32;
    else return 0;
    return 1;
}

void fgmm_vecs_free(FgmmVecs* v) {
    if (!v) return;
    free(v->data);
    memset(v, 0, sizeof *v);
}

static int read_texmex(const char* path, FgmmDtype t, fgmm_idx_t max_rows, FgmmVecs* out) {
    FILE* f = fopen(path, "rb");
    if (!f) return fgmm_fail(FGMM_ERR_IO, "cannot open '%s'", path);
    struct stat sb;
    int32_t d;
    if (fstat(fileno(f), &sb) != 0 || fread(&d, 4, 1, f) != 1) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': empty or unreadable", path);
    }
    if (d < 1 || d > (1 << 20)) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': first row has dimension %d; not a .%s file?", path, d, ext_of(path));
    }
    size_t es = fgmm_dtype_size(t), row = 4 + es * (size_t)d;
    if ((size_t)sb.st_size % row != 0) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': size %lld is not a multiple of the row size %zu (d = %d): truncated?",
                         path, (long long)sb.st_size, row, d);
    }
    fgmm_idx_t n = (fgmm_idx_t)((size_t)sb.st_size / row);
    if (max_rows > 0 && max_rows < n) n = max_rows;
    char* data = malloc((size_t)n * d * es);
    if (!data) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_NOMEM, "'%s': out of host memory for %lld x %d", path, (long long)n, d);
    }
    rewind(f);
    for (fgmm_idx_t i = 0; i < n; i++) {
        int32_t di;
        if (fread(&di, 4, 1, f) != 1 || fread(data + (size_t)i * d * es, es, (size_t)d, f) != (size_t)d) {
            free(data);
            fclose(f);
            return fgmm_fail(FGMM_ERR_IO, "'%s': truncated at row %lld", path, (long long)i);
        }
        if (di != d) {
            free(data);
            fclose(f);
            return fgmm_fail(FGMM_ERR_IO, "'%s': row %lld has dimension %d, row 0 has %d", path, (long long)i, di, d);
        }
    }
    fclose(f);
    *out = (FgmmVecs){data, n, d, t};
    return FGMM_OK;
}

int fgmm_vecs_hdf5_available(void) {
#ifdef FGMM_WITH_HDF5
    return 1;
#else
    return 0;
#endif
}

#ifdef FGMM_WITH_HDF5
static int read_hdf5(const char* path, const char* name, fgmm_idx_t max_rows, FgmmVecs* out) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors come back as codes, not stderr dumps */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return fgmm_fail(FGMM_ERR_IO, "'%s': not a readable HDF5 file", path);
    const char* tries[2] = {name ? name : "train", name ? NULL : "dataset"};
    hid_t ds = -1;
    for (int i = 0; i < 2 && ds < 0 && tries[i]; i++)
        if (H5Lexists(f, tries[i], H5P_DEFAULT) > 0) ds = H5Dopen2(f, tries[i], H5P_DEFAULT), name = tries[i];
    if (ds < 0) {
        H5Fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': no dataset '%s'", path, name ? name : "train' or 'dataset");
    }
    int rc = FGMM_OK;
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds), ms = -1;
    hsize_t dims[2] = {0, 0};
    FgmmDtype t = FGMM_F32;
    hid_t mt = H5T_NATIVE_FLOAT;
    if (H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) != 2 || dims[1] < 1) {
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' is not a 2-D matrix", path, name);
    } else {
        H5T_class_t c = H5Tget_class(ty);
        if (c == H5T_FLOAT) t = FGMM_F32, mt = H5T_NATIVE_FLOAT;
        else if (c == H5T_INTEGER && H5Tget_size(ty) == 1 && H5Tget_sign(ty) == H5T_SGN_NONE) t = FGMM_U8, mt = H5T_NATIVE_UCHAR;
        else if (c == H5T_INTEGER) t = FGMM_I32, mt = H5T_NATIVE_INT32;
        else rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' has an unsupported element type", path, name);
    }
    if (!rc) {
        hsize_t n = dims[0];
        if (max_rows > 0 && (hsize_t)max_rows < n) n = (hsize_t)max_rows;
        hsize_t start[2] = {0, 0}, cnt[2] = {n, dims[1]};
        void* data = malloc((size_t)n * dims[1] * fgmm_dtype_size(t));
        ms = H5Screate_simple(2, cnt, NULL);
        if (!data) {
            rc = fgmm_fail(FGMM_ERR_NOMEM, "'%s': out of host memory", path);
        } else if (H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0 ||
                   H5Dread(ds, mt, ms, sp, H5P_DEFAULT, data) < 0) {
            free(data);
            rc = fgmm_fail(FGMM_ERR_IO, "'%s': reading dataset '%s' failed (truncated file?)", path, name);
        } else {
            *out = (FgmmVecs){data, (fgmm_idx_t)n, (int)dims[1], t};
        }
    }
    if (ms >= 0) H5Sclose(ms);
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
    return rc;
}
#endif

int fgmm_vecs_read(const char* path, const char* dataset, fgmm_idx_t max_rows, FgmmVecs* out) {
    FGMM_CHECK_NULL(out);
    memset(out, 0, sizeof *out);
    FGMM_CHECK_NULL(path);
    if (max_rows < 0) return fgmm_fail(FGMM_ERR_ARG, "max_rows < 0");
    const char* e = ext_of(path);
    FgmmDtype t;
    if (dtype_of_ext(e, &t)) return read_texmex(path, t, max_rows, out);
    if (!strcmp(e, "h5") || !strcmp(e, "hdf5")) {
#ifdef FGMM_WITH_HDF5
        return read_hdf5(path, dataset, max_rows, out);
#else
        (void)dataset;
        return fgmm_fail(FGMM_ERR_IO, "'%s': this build has no HDF5 support", path);
#endif
    }
    return fgmm_fail(FGMM_ERR_IO, "'%s': unknown extension '.%s' (want fvecs, bvecs, ivecs, h5, hdf5)", path, e);
}

int fgmm_vecs_write(const char* path, const FgmmVecs* v) {
    FGMM_CHECK_NULL(path);
    FGMM_CHECK_NULL(v);
    FGMM_CHECK_NULL(v->data);
    FgmmDtype t;
    if (!dtype_of_ext(ext_of(path), &t) || t != v->dtype)
        return fgmm_fail(FGMM_ERR_ARG, "'%s': extension does not match the data type", path);
    if (v->d < 1 || v->n < 0) return fgmm_fail(FGMM_ERR_ARG, "bad shape %lld x %d", (long long)v->n, v->d);
    FILE* f = fopen(path, "wb");
    if (!f) return fgmm_fail(FGMM_ERR_IO, "cannot open '%s' for writing", path);
    size_t es = fgmm_dtype_size(t);
    int32_t d = v->d, ok = 1;
    for (fgmm_idx_t i = 0; i < v->n && ok; i++)
        ok = fwrite(&d, 4, 1, f) == 1 && fwrite((const char*)v->data + (size_t)i * d * es, es, (size_t)d, f) == (size_t)d;
    if (fclose(f) != 0) ok = 0;
    return ok ? FGMM_OK : fgmm_fail(FGMM_ERR_IO, "write to '%s' failed", path);
}
