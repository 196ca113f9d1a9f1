/* SPDX-License-Identifier: MIT */
/* flashgmm_io.h: reading and writing vector files (fvecs, bvecs, ivecs, HDF5), and the safe file
 * opening the library's readers and writers use, for code built on it (sidecar files). */
#ifndef FLASHGMM_IO_H
#define FLASHGMM_IO_H

#include <stdio.h>

#include "flashgmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/// A matrix of n rows x d columns, row-major, owned by the struct.
typedef struct FgmmVecs {
    void* data;       ///< n*d elements of dtype
    fgmm_idx_t n;     ///< rows
    int d;            ///< columns
    FgmmDtype dtype;  ///< FGMM_F32 (fvecs, HDF5 float), FGMM_U8 (bvecs, HDF5 uint8), FGMM_I32 (ivecs, HDF5 ints)
} FgmmVecs;

/// Reads a file chosen by its extension: .fvecs, .bvecs, .ivecs (TEXMEX layout: each row an
/// int32 d then d values) or .h5/.hdf5 (a 2-D dataset named `dataset`; NULL tries "train",
/// then "dataset"; float64 is converted to float32, other integer types to int32).
/// Reads the first max_rows rows (0 = all). Truncated or malformed files give FGMM_ERR_IO, as do
/// paths that are not regular files (FIFOs, devices), widths above 2^20, TEXMEX rows whose header
/// differs from the first, HDF5 values outside the int32 (integers) or float32 range (never
/// clipped), and HDF5 shapes larger than the file's stored bytes can hold (contiguous data: the
/// file must contain every byte; chunked data: at most 1032x its stored chunk bytes, deflate's
/// largest ratio, stored bytes at most the file's, chunks at most the dataset's size or 64 MB,
/// at most one chunk per byte of the file). libhdf5 itself parses the file's metadata, in this
/// process, and can crash on a crafted file: fgmm_vecs_read_isolated for files you do not trust
/// (docs/reliability.md).
int fgmm_vecs_read(const char* path, const char* dataset, fgmm_idx_t max_rows, FgmmVecs* out);

/// fgmm_vecs_read, but an HDF5 file (.h5/.hdf5) is parsed in a child process (fork): a crash of
/// libhdf5 on a malformed or hostile file is FGMM_ERR_IO naming the file and the signal, and the
/// caller lives. The child sends the rows through a pipe; their shape is checked (max_rows, at most
/// 1032x the file's bytes) before the parent allocates them. Costs a fork and a copy of the rows
/// (the child holds them too while sending). TEXMEX files are read in this process, as by
/// fgmm_vecs_read. A hang inside libhdf5 is not bounded. The caller must not reap children it did
/// not start (a SIGCHLD handler calling wait, or SIGCHLD ignored: the signal is then not reported).
/// Concurrent calls from several threads are not tested (a fork while another thread is inside
/// libhdf5 in this process may leave the child waiting on libhdf5's lock).
int fgmm_vecs_read_isolated(const char* path, const char* dataset, fgmm_idx_t max_rows, FgmmVecs* out);

/// Reads rows [first, first + max_rows) (max_rows 0 = to the last row; fewer where the file ends
/// sooner) with fgmm_vecs_read's checks: a process's shard of a file. TEXMEX files are read from
/// the first of those rows on (their size is still checked whole); first past the last row (or < 0)
/// is FGMM_ERR_ARG.
int fgmm_vecs_read_rows(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, FgmmVecs* out);

/// Rows, columns and element type of a file, as fgmm_vecs_read would give them, without reading
/// the rows (the same checks of the header and size).
int fgmm_vecs_shape(const char* path, const char* dataset, fgmm_idx_t* n, int* d, FgmmDtype* dtype);

/// Writes .fvecs / .bvecs / .ivecs; the extension must match vecs->dtype. Written to a temporary
/// file in the same directory, then renamed over path (an existing non-regular path is refused).
int fgmm_vecs_write(const char* path, const FgmmVecs* vecs);

/// Frees the data and zeroes the struct (NULL is ignored).
void fgmm_vecs_free(FgmmVecs* vecs);

/// 1 if this build reads HDF5, else 0.
int fgmm_vecs_hdf5_available(void);

/// Opens path for reading if it is a regular file (a FIFO or device is refused, never waited on):
/// *f and its size in bytes *size; FGMM_ERR_IO with the reason otherwise (*f = NULL), FGMM_ERR_NULL
/// for a NULL argument.
int fgmm_open_input(const char* path, FILE** f, int64_t* size);

/// A file being written: fgmm_output_begin creates a new temporary file beside path (refused where
/// path exists and is not a regular file); write to f; fgmm_output_end(o, path, 1) flushes, syncs
/// and renames it over path, then syncs the directory; fgmm_output_end(o, path, 0) removes it.
/// Readers of path see the old file or the whole new one, never a part; after a crash at any point
/// path is the old file or the whole new one. A path that is a symbolic link is followed: its
/// target is replaced (created where the link dangles), the link stays. A replaced file keeps its
/// mode and, where the writer may set them (root, or a group it is in), its owner and group; a new
/// file gets 0666 less the umask. Temporary names are hidden (".NAME...tmp"), at most 244 bytes,
/// so any name up to NAME_MAX bytes can be written; begin removes the temporary files of path's
/// target left by writers that died (their process id is not alive on this host). end must follow
/// every successful begin, with the same path; on an output not begun or already ended it is
/// FGMM_ERR_STATE, with a NULL path FGMM_ERR_NULL (the temporary file removed). Several threads
/// and processes may write at once, also to one path (the last rename wins; each temporary file
/// has its own name).
typedef struct FgmmOutput {
    FILE* f;       ///< the temporary file, open for writing (its descriptor is also readable: pread)
    char* tmp;     ///< its name
    char* target;  ///< the file renamed over: path with symbolic links followed
} FgmmOutput;
int fgmm_output_begin(const char* path, FgmmOutput* out);
/// ok = 0 also keeps errno's reason (a failed write's) for the message; FGMM_ERR_IO if any step
/// fails (if only the directory's sync fails, the message says the file was replaced).
int fgmm_output_end(FgmmOutput* o, const char* path, int ok);

/// A model in the .gmm layout (fgmm_model_write's file) at f's position, for files holding a model
/// among other data. Write: FGMM_ERR_IO if a write fails. Read: exactly bytes bytes, which must be
/// the whole model (its size is checked against the header before anything is allocated);
/// FGMM_ERR_IO with the reason otherwise, NULL arguments FGMM_ERR_NULL.
int fgmm_model_fwrite(const FgmmModel* model, FILE* f);
int fgmm_model_fread(FILE* f, int64_t bytes, FgmmModel** out);

#ifdef __cplusplus
}
#endif
#endif
