/* file.c: opening inputs (regular files only) and writing outputs atomically (temp + rename). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int fgmm_open_input(const char* path, FILE** out, int64_t* size) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(path);
    FGMM_CHECK_NULL(size);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fgmm_fail(FGMM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fgmm_fail(FGMM_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fgmm_fail(FGMM_ERR_IO, "'%s' is not a regular file", path);
    }
    int fl = fcntl(fd, F_GETFL);
    FILE* f = fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return fgmm_fail(FGMM_ERR_IO, "cannot open '%s': %s", path, strerror(e));
    }
    *out = f;
    *size = (int64_t)sb.st_size;
    return FGMM_OK;
}

int fgmm_check_input(const char* path, int64_t* size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return fgmm_fail(FGMM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return fgmm_fail(FGMM_ERR_IO, "'%s' is not a regular file", path);
    *size = (int64_t)sb.st_size;
    return FGMM_OK;
}

int fgmm_output_begin(const char* path, FgmmOutput* o) {
    FGMM_CHECK_NULL(o);
    memset(o, 0, sizeof *o);
    FGMM_CHECK_NULL(path);
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return fgmm_fail(FGMM_ERR_IO, "'%s' exists and is not a regular file; not replacing it", path);
    static atomic_uint counter;
    size_t len = strlen(path) + 48;
    o->tmp = malloc(len);
    if (!o->tmp) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(o->tmp, len, "%s.tmp%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0 || !(o->f = fdopen(fd, "wb"))) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        free(o->tmp);
        o->tmp = NULL;
        return fgmm_fail(FGMM_ERR_IO, "cannot create a file next to '%s': %s", path, strerror(e));
    }
    return FGMM_OK;
}

int fgmm_output_end(FgmmOutput* o, const char* path, int ok) {
    FGMM_CHECK_NULL(o);
    if (!o->f) return fgmm_fail(FGMM_ERR_STATE, "%s: no output begun, or it has ended", __func__);
    if (!path) ok = 0; /* the temporary file is removed */
    int e = ok ? 0 : errno; /* the failed write's reason */
    if (ok && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)) ok = 0, e = errno;
    if (fclose(o->f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(o->tmp, path) != 0) ok = 0, e = errno;
    if (!ok) unlink(o->tmp);
    free(o->tmp);
    memset(o, 0, sizeof *o);
    if (ok) return FGMM_OK;
    if (!path) return fgmm_fail(FGMM_ERR_NULL, "%s: path is NULL; the output is removed", __func__);
    return fgmm_fail(FGMM_ERR_IO, "write to '%s' failed%s%s", path, e ? ": " : "", e ? strerror(e) : "");
}
