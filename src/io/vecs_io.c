/* SPDX-License-Identifier: MIT */
/* vecs_io.c: readers and writers for TEXMEX-style .fvecs/.bvecs/.ivecs and HDF5 matrices. */
#define _POSIX_C_SOURCE 200809L /* fseeko */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Rows [first, first + max_rows) of a file of n rows (max_rows 0: to the end); the count read. */
static int rows_to_read(const char* path, fgmm_idx_t n, fgmm_idx_t first, fgmm_idx_t max_rows, fgmm_idx_t* count) {
    if (first > 0 && first >= n) /* first 0 of an empty HDF5 dataset reads nothing, as before */
        return fgmm_fail(FGMM_ERR_ARG, "'%s': first row %lld is past its %lld rows", path, (long long)first,
                         (long long)n);
    *count = max_rows > 0 && max_rows < n - first ? max_rows : n - first;
    return FGMM_OK;
}

/* shape_only: out gets the file's n, d and type, and no data. */
static int read_texmex(const char* path, FgmmDtype t, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                       FgmmVecs* out) {
    FILE* f;
    int64_t size;
    int rc = fgmm_open_input(path, &f, &size);
    if (rc) return rc;
    int32_t d;
    if (fread(&d, 4, 1, f) != 1) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': empty or unreadable", path);
    }
    if (d < 1 || d > FGMM_MAX_DIM) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': first row has dimension %d (want 1 to %d); not a .%s file?", path, d,
                         FGMM_MAX_DIM, ext_of(path));
    }
    const size_t es = fgmm_dtype_size(t), row = 4 + es * (size_t)d; /* d <= 2^20: no overflow */
    if ((uint64_t)size % row != 0) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_IO, "'%s': size %lld is not a multiple of the row size %zu (d = %d): truncated?",
                         path, (long long)size, row, d);
    }
    fgmm_idx_t n = (fgmm_idx_t)((uint64_t)size / row);
    if (shape_only) {
        fclose(f);
        *out = (FgmmVecs){NULL, n, d, t};
        return FGMM_OK;
    }
    if ((rc = rows_to_read(path, n, first, max_rows, &n))) {
        fclose(f);
        return rc;
    }
    char* data = malloc((size_t)n * d * es); /* at most the file's size */
    if (!data) {
        fclose(f);
        return fgmm_fail(FGMM_ERR_NOMEM, "'%s': out of host memory for %lld x %d", path, (long long)n, d);
    }
    if (fseeko(f, (off_t)first * (off_t)row, SEEK_SET) != 0) /* inside the file: first < its rows */
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': cannot seek to row %lld", path, (long long)first);
    for (fgmm_idx_t i = 0; i < n && !rc; i++) {
        int32_t di;
        if (fread(&di, 4, 1, f) != 1 || fread(data + (size_t)i * d * es, es, (size_t)d, f) != (size_t)d)
            rc = fgmm_fail(FGMM_ERR_IO, "'%s': truncated at row %lld", path, (long long)(first + i));
        else if (di != d)
            rc = fgmm_fail(FGMM_ERR_IO, "'%s': row %lld has dimension %d, row 0 has %d", path, (long long)(first + i),
                           di, d);
    }
    fclose(f);
    if (rc) {
        free(data);
        return rc;
    }
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
/* Chunked (possibly compressed) data may declare at most this many bytes per stored byte:
 * deflate's largest ratio is about 1032:1. */
#define FGMM_HDF5_MAX_EXPANSION 1032
/* libhdf5 allocates a whole chunk to read any part of it: a chunk may be as large as the
 * dataset, or this many bytes where the dataset is smaller. */
#define FGMM_HDF5_MIN_CHUNK_CAP ((hsize_t)64 << 20)
/* libhdf5 keeps about 6 KB of state per chunk a read touches: one H5Dread covers at most about
 * this many chunks (twice that where a block starts inside a chunk). */
#define FGMM_HDF5_CHUNKS_PER_READ 4096

/* Element conversions that overflow the memory type abort the read (HDF5 would clip them). */
static H5T_conv_ret_t conv_range(H5T_conv_except_t e, hid_t s, hid_t d, void* sb, void* db, void* user) {
    (void)s;
    (void)d;
    (void)sb;
    (void)db;
    if (e != H5T_CONV_EXCEPT_RANGE_HI && e != H5T_CONV_EXCEPT_RANGE_LOW) return H5T_CONV_UNHANDLED;
    *(int*)user = 1;
    return H5T_CONV_ABORT;
}

/* The declared shape dims against the storage the file really has. fsize: the file's size;
 * fes: the file's element size. chunk: the chunk shape, or {0, 0} where not chunked. */
static int check_storage(hid_t ds, const char* path, const char* name, int64_t fsize, const hsize_t dims[2], size_t fes,
                         hsize_t chunk[2]) {
    hsize_t bytes = dims[0] * dims[1] * fes; /* bounded by the caller */
    hid_t pl = H5Dget_create_plist(ds);
    if (pl < 0) return fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s': unreadable layout", path, name);
    H5D_layout_t lay = H5Pget_layout(pl);
    int ext = H5Pget_external_count(pl);
    chunk[0] = chunk[1] = 0;
    int chunk_dims = lay == H5D_CHUNKED ? H5Pget_chunk(pl, 2, chunk) : 0;
    H5Pclose(pl);
    hsize_t stored = H5Dget_storage_size(ds);
    if (ext != 0 || (lay != H5D_CONTIGUOUS && lay != H5D_COMPACT && lay != H5D_CHUNKED))
        return fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' is stored in other files or in an unsupported layout", path,
                         name);
    if (lay == H5D_CHUNKED) {
        hsize_t most = bytes > FGMM_HDF5_MIN_CHUNK_CAP ? bytes : FGMM_HDF5_MIN_CHUNK_CAP;
        if (chunk_dims != 2 || chunk[0] < 1 || chunk[1] < 1 || chunk[0] > most / chunk[1] / fes)
            return fgmm_fail(FGMM_ERR_IO,
                             "'%s': dataset '%s' has chunks of %llu x %llu elements of %zu bytes, more than "
                             "the dataset or %llu MB; malformed?",
                             path, name, (unsigned long long)chunk[0], (unsigned long long)chunk[1], fes,
                             (unsigned long long)(FGMM_HDF5_MIN_CHUNK_CAP >> 20));
        if (stored > (hsize_t)fsize) /* libhdf5 would allocate a stored chunk's claimed size */
            return fgmm_fail(FGMM_ERR_IO,
                             "'%s': dataset '%s' claims %llu stored bytes in a file of %lld bytes; "
                             "malformed?",
                             path, name, (unsigned long long)stored, (long long)fsize);
        /* every chunk takes at least a byte of the file (its data or its index entry); a file
         * that declares more is mostly unwritten and would take minutes to read */
        hsize_t nchunks = (dims[0] + chunk[0] - 1) / chunk[0] * ((dims[1] + chunk[1] - 1) / chunk[1]);
        if (nchunks > (hsize_t)fsize)
            return fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' declares %llu chunks in a file of %lld bytes; malformed?",
                             path, name, (unsigned long long)nchunks, (long long)fsize);
        if (bytes / FGMM_HDF5_MAX_EXPANSION > stored)
            return fgmm_fail(FGMM_ERR_IO,
                             "'%s': dataset '%s' declares %llu bytes but its chunks hold %llu: more than %dx "
                             "expansion; malformed?",
                             path, name, (unsigned long long)bytes, (unsigned long long)stored,
                             FGMM_HDF5_MAX_EXPANSION);
        return FGMM_OK;
    }
    haddr_t off = lay == H5D_CONTIGUOUS ? H5Dget_offset(ds) : 0;
    if (stored < bytes || off == HADDR_UNDEF ||
        (lay == H5D_CONTIGUOUS && (off > (haddr_t)fsize || bytes > (hsize_t)fsize - off)))
        return fgmm_fail(FGMM_ERR_IO,
                         "'%s': dataset '%s' declares %llu bytes but the file (%lld bytes) holds %llu: "
                         "truncated or malformed",
                         path, name, (unsigned long long)bytes, (long long)fsize,
                         (unsigned long long)(off == HADDR_UNDEF ? 0 : stored));
    return FGMM_OK;
}

/* Reads rows [first, first + n) of the d columns into data (n x d of memory type mt) with as many
 * H5Dread calls as keep each one within FGMM_HDF5_CHUNKS_PER_READ chunks (one call where the
 * dataset is not chunked: chunk {0, 0}). Returns H5Dread's negative status on failure. */
static herr_t read_blocks(hid_t ds, hid_t sp, hid_t mt, hid_t xfer, hsize_t first, hsize_t n, hsize_t d,
                          const hsize_t chunk[2], void* data) {
    hsize_t rb = n, cb = d; /* block rows and columns */
    if (chunk[0] > 0) {
        hsize_t col_chunks = (d + chunk[1] - 1) / chunk[1];
        if (col_chunks <= FGMM_HDF5_CHUNKS_PER_READ) {
            hsize_t bands = FGMM_HDF5_CHUNKS_PER_READ / col_chunks;
            if (chunk[0] < n && bands < n / chunk[0]) rb = bands * chunk[0];
        } else {
            rb = chunk[0] < n ? chunk[0] : n;
            cb = FGMM_HDF5_CHUNKS_PER_READ * chunk[1];
        }
    }
    const hsize_t whole[2] = {n, d};
    hid_t ms = H5Screate_simple(2, whole, NULL);
    herr_t st = ms < 0 ? -1 : 0;
    for (hsize_t r = 0; r < n && st >= 0; r += rb)
        for (hsize_t c = 0; c < d && st >= 0; c += cb) {
            hsize_t mstart[2] = {r, c}, fstart[2] = {first + r, c};
            hsize_t cnt[2] = {rb < n - r ? rb : n - r, cb < d - c ? cb : d - c};
            if (H5Sselect_hyperslab(ms, H5S_SELECT_SET, mstart, NULL, cnt, NULL) < 0 ||
                H5Sselect_hyperslab(sp, H5S_SELECT_SET, fstart, NULL, cnt, NULL) < 0)
                st = -1;
            else st = H5Dread(ds, mt, ms, sp, xfer, data);
        }
    if (ms >= 0) H5Sclose(ms);
    return st;
}

static int read_hdf5(const char* path, const char* name, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                     FgmmVecs* out) {
    int64_t fsize;
    int rc = fgmm_check_input(path, &fsize);
    if (rc) return rc;
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
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds), xfer = -1;
    hsize_t dims[2] = {0, 0}, chunk[2] = {0, 0};
    FgmmDtype t = FGMM_F32;
    hid_t mt = H5T_NATIVE_FLOAT;
    size_t fes = ty < 0 ? 0 : H5Tget_size(ty); /* element size in the file */
    if (sp < 0 || ty < 0 || H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) != 2 ||
        dims[1] < 1) {
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' is not a 2-D matrix", path, name);
    } else if (dims[1] > FGMM_MAX_DIM) {
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' has %llu columns; at most %d are supported", path, name,
                       (unsigned long long)dims[1], FGMM_MAX_DIM);
    } else if (fes < 1 || dims[0] > (hsize_t)INT64_MAX / dims[1] / (fes > 4 ? fes : 4)) {
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s': %llu x %llu elements of %zu bytes overflow", path, name,
                       (unsigned long long)dims[0], (unsigned long long)dims[1], fes);
    } else {
        H5T_class_t c = H5Tget_class(ty);
        if (c == H5T_FLOAT) t = FGMM_F32, mt = H5T_NATIVE_FLOAT;
        else if (c == H5T_INTEGER && fes == 1 && H5Tget_sign(ty) == H5T_SGN_NONE) t = FGMM_U8, mt = H5T_NATIVE_UCHAR;
        else if (c == H5T_INTEGER) t = FGMM_I32, mt = H5T_NATIVE_INT32;
        else rc = fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' has an unsupported element type", path, name);
    }
    if (!rc) rc = check_storage(ds, path, name, fsize, dims, fes, chunk);
    fgmm_idx_t rows = 0;
    if (!rc && shape_only) *out = (FgmmVecs){NULL, (fgmm_idx_t)dims[0], (int)dims[1], t};
    else if (!rc) rc = rows_to_read(path, (fgmm_idx_t)dims[0], first, max_rows, &rows);
    if (!rc && !shape_only) {
        hsize_t n = (hsize_t)rows;
        int range = 0;
        void* data = malloc((size_t)(n * dims[1] * fgmm_dtype_size(t))); /* bounded by check_storage */
        xfer = H5Pcreate(H5P_DATASET_XFER);
        if (!data) {
            rc = fgmm_fail(FGMM_ERR_NOMEM, "'%s': out of host memory for %llu x %llu", path, (unsigned long long)n,
                           (unsigned long long)dims[1]);
        } else if (xfer < 0 || H5Pset_type_conv_cb(xfer, conv_range, &range) < 0 ||
                   read_blocks(ds, sp, mt, xfer, (hsize_t)first, n, dims[1], chunk, data) < 0) {
            free(data);
            rc = range ? fgmm_fail(FGMM_ERR_IO, "'%s': dataset '%s' has values outside the %s range; not read", path,
                                   name, t == FGMM_I32 ? "int32" : "float32")
                       : fgmm_fail(FGMM_ERR_IO, "'%s': reading dataset '%s' failed (truncated file?)", path, name);
        } else {
            *out = (FgmmVecs){data, (fgmm_idx_t)n, (int)dims[1], t};
        }
    }
    if (xfer >= 0) H5Pclose(xfer);
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
    return rc;
}
#endif

/* The reader of path's type; first < 0: the shape only. */
static int read_any(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, FgmmVecs* out) {
    FGMM_CHECK_NULL(out);
    memset(out, 0, sizeof *out);
    FGMM_CHECK_NULL(path);
    if (max_rows < 0) return fgmm_fail(FGMM_ERR_ARG, "max_rows < 0");
    const char* e = ext_of(path);
    FgmmDtype t;
    if (dtype_of_ext(e, &t)) return read_texmex(path, t, first, max_rows, first < 0, out);
    if (!strcmp(e, "h5") || !strcmp(e, "hdf5")) {
#ifdef FGMM_WITH_HDF5
        return read_hdf5(path, dataset, first, max_rows, first < 0, out);
#else
        (void)dataset;
        return fgmm_fail(FGMM_ERR_IO, "'%s': this build has no HDF5 support", path);
#endif
    }
    return fgmm_fail(FGMM_ERR_IO, "'%s': unknown extension '.%s' (want fvecs, bvecs, ivecs, h5, hdf5)", path, e);
}

int fgmm_vecs_read(const char* path, const char* dataset, fgmm_idx_t max_rows, FgmmVecs* out) {
    return read_any(path, dataset, 0, max_rows, out);
}

int fgmm_vecs_read_rows(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, FgmmVecs* out) {
    if (first < 0) {
        if (out) memset(out, 0, sizeof *out);
        return fgmm_fail(FGMM_ERR_ARG, "first row %lld < 0", (long long)first);
    }
    return read_any(path, dataset, first, max_rows, out);
}

int fgmm_vecs_shape(const char* path, const char* dataset, fgmm_idx_t* n, int* d, FgmmDtype* dtype) {
    FGMM_CHECK_NULL(n);
    FGMM_CHECK_NULL(d);
    FGMM_CHECK_NULL(dtype);
    *n = 0, *d = 0, *dtype = FGMM_F32;
    FgmmVecs v;
    int rc = read_any(path, dataset, -1, 0, &v);
    if (!rc) *n = v.n, *d = v.d, *dtype = v.dtype;
    return rc;
}

int fgmm_vecs_write(const char* path, const FgmmVecs* v) {
    FGMM_CHECK_NULL(path);
    FGMM_CHECK_NULL(v);
    FGMM_CHECK_NULL(v->data);
    FgmmDtype t;
    if (!dtype_of_ext(ext_of(path), &t) || t != v->dtype)
        return fgmm_fail(FGMM_ERR_ARG, "'%s': extension does not match the data type", path);
    if (v->d < 1 || v->d > FGMM_MAX_DIM || v->n < 0 ||
        (uint64_t)v->n > (uint64_t)PTRDIFF_MAX / fgmm_dtype_size(t) / v->d)
        return fgmm_fail(FGMM_ERR_ARG, "bad shape %lld x %d (n x d values must be addressable)", (long long)v->n, v->d);
    FgmmOutput o;
    int rc = fgmm_output_begin(path, &o);
    if (rc) return rc;
    size_t es = fgmm_dtype_size(t);
    int32_t d = v->d, ok = 1;
    for (fgmm_idx_t i = 0; i < v->n && ok; i++)
        ok = fwrite(&d, 4, 1, o.f) == 1 &&
             fwrite((const char*)v->data + (size_t)i * d * es, es, (size_t)d, o.f) == (size_t)d;
    return fgmm_output_end(&o, path, ok);
}
