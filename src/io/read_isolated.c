/* SPDX-License-Identifier: MIT */
/* read_isolated.c: fgmm_vecs_read_isolated, HDF5 files parsed in a child process. libhdf5 parses a
 * file's metadata itself and crashes on some crafted files (README, "What is promised"); in a child
 * such a crash becomes an error naming the file and the signal, and the caller lives. The child
 * sends its outcome and the rows' shape, then the rows, through a pipe; the parent checks the shape
 * (against max_rows and the file's size) before it allocates or reads the rows. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

void (*fgmm_isolated_child_hook)(void);

/* HDF5 values come from at most 1032x their stored bytes (deflate's largest ratio; vecs_io.c's
 * check_storage refuses more): the rows a file of `size` bytes can give. */
#define HDF5_MAX_EXPANSION 1032

/* The child's first message: its outcome and the shape of the rows that follow, or its error. */
typedef struct child_head {
    int32_t rc, d, dtype, pad;
    int64_t n;
    char msg[1024];
} child_head;

static int write_all(int fd, const void* buf, size_t len) {
    for (const char* p = buf; len;) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, len -= (size_t)w;
    }
    return 0;
}

/* Bytes read before EOF or an error (len when complete). */
static size_t read_all(int fd, void* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, (char*)buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

static void child(int fd, const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows,
                  int shape_only) {
    if (fgmm_isolated_child_hook) fgmm_isolated_child_hook();
    child_head h;
    memset(&h, 0, sizeof h);
    FgmmVecs v = {0};
    if (shape_only) {
        FgmmDtype t = FGMM_F32;
        h.rc = fgmm_vecs_shape(path, dataset, &v.n, &v.d, &t);
        v.dtype = t;
    } else {
        h.rc = fgmm_vecs_read_rows(path, dataset, first, max_rows, &v);
    }
    if (h.rc) snprintf(h.msg, sizeof h.msg, "%s", fgmm_get_last_error());
    h.n = v.n, h.d = v.d, h.dtype = (int32_t)v.dtype;
    size_t bytes = shape_only || h.rc ? 0 : (size_t)v.n * v.d * fgmm_dtype_size(v.dtype);
    int ok = !write_all(fd, &h, sizeof h) && !write_all(fd, v.data, bytes);
    _exit(ok ? 0 : 1); /* no atexit handlers, no flush of the parent's stdio buffers */
}

/* The message for a child that sent no complete answer. */
static int child_failed(const char* path, pid_t pid, int waited, int st) {
    if (waited && WIFSIGNALED(st))
        return fgmm_fail(FGMM_ERR_IO,
                         "'%s': the HDF5 reader (child process %ld) died of signal %d (%s): libhdf5 "
                         "could not parse the file; it is malformed",
                         path, (long)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
    if (waited && WIFEXITED(st))
        return fgmm_fail(FGMM_ERR_IO,
                         "'%s': the HDF5 reader (child process %ld) exited with status %d without an "
                         "answer",
                         path, (long)pid, WEXITSTATUS(st));
    return fgmm_fail(FGMM_ERR_IO,
                     "'%s': the HDF5 reader (child process %ld) gave no answer and its status is "
                     "unknown (%s)",
                     path, (long)pid, strerror(errno));
}

/* The shape the child reports, checked before anything is allocated for it. */
static int check_head(const child_head* h, const char* path, int64_t fsize, fgmm_idx_t max_rows, int shape_only,
                      size_t* bytes) {
    *bytes = 0;
    if (h->rc)
        return h->rc >= FGMM_ERR_STATE && h->rc < 0
                   ? fgmm_fail(h->rc, "%s", h->msg)
                   : fgmm_fail(FGMM_ERR_IO, "'%s': the HDF5 reader answered code %d", path, (int)h->rc);
    if (h->n < 0 || h->d < 1 || h->d > FGMM_MAX_DIM ||
        (h->dtype != FGMM_F32 && h->dtype != FGMM_U8 && h->dtype != FGMM_I32) ||
        (!shape_only && max_rows > 0 && h->n > max_rows))
        return fgmm_fail(FGMM_ERR_IO, "'%s': the HDF5 reader answered an impossible shape (%lld x %d, type %d)", path,
                         (long long)h->n, (int)h->d, (int)h->dtype);
    if (shape_only) return FGMM_OK;
    const uint64_t row = (uint64_t)h->d * fgmm_dtype_size((FgmmDtype)h->dtype);
    const uint64_t cap = (uint64_t)fsize * HDF5_MAX_EXPANSION; /* fsize < 2^63, and 1032 < 2^11: no wrap */
    if ((uint64_t)h->n > cap / row)
        return fgmm_fail(FGMM_ERR_IO,
                         "'%s': the HDF5 reader answered %lld x %d values, more than the file's %lld "
                         "bytes can hold",
                         path, (long long)h->n, (int)h->d, (long long)fsize);
    *bytes = (size_t)((uint64_t)h->n * row);
    return FGMM_OK;
}

static int read_child(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                      FgmmVecs* out) {
    FGMM_CHECK_NULL(out);
    memset(out, 0, sizeof *out);
    FGMM_CHECK_NULL(path);
    if (max_rows < 0 || first < 0)
        return fgmm_fail(FGMM_ERR_ARG, "first = %lld, max_rows = %lld; must be >= 0", (long long)first,
                         (long long)max_rows);
    int64_t fsize;
    int rc = fgmm_check_input(path, &fsize);
    if (rc) return rc;
    int fd[2];
    if (pipe(fd))
        return fgmm_fail(FGMM_ERR_IO, "'%s': cannot make a pipe for the HDF5 reader: %s", path, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fd[0]), close(fd[1]);
        return fgmm_fail(FGMM_ERR_IO, "'%s': cannot start the HDF5 reader process: %s", path, strerror(e));
    }
    if (pid == 0) {
        close(fd[0]);
        child(fd[1], path, dataset, first, max_rows, shape_only);
    }
    close(fd[1]);
    child_head h;
    size_t bytes = 0;
    void* data = NULL;
    int complete = read_all(fd[0], &h, sizeof h) == sizeof h;
    if (complete) {
        h.msg[sizeof h.msg - 1] = 0;
        rc = check_head(&h, path, fsize, max_rows, shape_only, &bytes);
        if (!rc && bytes && !(data = malloc(bytes)))
            rc = fgmm_fail(FGMM_ERR_NOMEM, "'%s': out of host memory for %lld x %d", path, (long long)h.n, (int)h.d);
        if (!rc && bytes) complete = read_all(fd[0], data, bytes) == bytes;
    }
    close(fd[0]); /* a child still writing (rows refused above) gets EPIPE and ends */
    int st = 0, waited;
    while (!(waited = waitpid(pid, &st, 0) == pid) && errno == EINTR) {}
    if (!complete) {
        free(data);
        return child_failed(path, pid, waited, st);
    }
    if (rc) {
        free(data);
        return rc;
    }
    *out = (FgmmVecs){data, h.n, h.d, (FgmmDtype)h.dtype};
    return FGMM_OK;
}

static int is_hdf5(const char* path) {
    const char* dot = strrchr(path, '.');
    return dot && (!strcmp(dot, ".h5") || !strcmp(dot, ".hdf5"));
}

int fgmm_vecs_read_any(const char* path, const char* dataset, fgmm_idx_t first, fgmm_idx_t max_rows, int shape_only,
                       int isolated, FgmmVecs* out) {
    if (isolated && path && is_hdf5(path) && fgmm_vecs_hdf5_available())
        return read_child(path, dataset, first, max_rows, shape_only, out);
    if (!shape_only) return fgmm_vecs_read_rows(path, dataset, first, max_rows, out);
    FGMM_CHECK_NULL(out);
    memset(out, 0, sizeof *out);
    FgmmDtype t = FGMM_F32;
    int rc = fgmm_vecs_shape(path, dataset, &out->n, &out->d, &t);
    out->dtype = t;
    return rc;
}

int fgmm_vecs_read_isolated(const char* path, const char* dataset, fgmm_idx_t max_rows, FgmmVecs* out) {
    return fgmm_vecs_read_any(path, dataset, 0, max_rows, 0, 1, out);
}
