/* SPDX-License-Identifier: MIT */
/* file.c: opening inputs (regular files only) and writing outputs atomically (temp + rename). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
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

/* The file a write to path replaces: path with symbolic links followed (at most 40), so that the
 * target is replaced and the link stays; a dangling link names the file to create. NULL with errno
 * on failure. */
static char* follow_links(const char* path) {
    char* cur = strdup(path);
    for (int hops = 0; cur; hops++) {
        struct stat sb;
        if (lstat(cur, &sb) != 0 || !S_ISLNK(sb.st_mode)) return cur; /* a missing file is created */
        char link[PATH_MAX];
        ssize_t n = hops < 40 ? readlink(cur, link, sizeof link - 1) : (errno = ELOOP, -1);
        if (n < 0) {
            free(cur);
            return NULL;
        }
        link[n] = 0;
        const char* slash = strrchr(cur, '/');
        size_t keep = link[0] == '/' || !slash ? 0 : (size_t)(slash - cur) + 1; /* relative: beside the link */
        char* next = malloc(keep + (size_t)n + 1);
        if (next) memcpy(next, cur, keep), memcpy(next + keep, link, (size_t)n + 1);
        free(cur);
        cur = next;
    }
    return NULL;
}

/* Temporary names: "." + the first TMP_STEM bytes of the target's name + "." + 16 hex digits of a
 * hash of the whole name + "." + pid + "." + counter + ".tmp": at most 244 bytes, so a name of
 * NAME_MAX (255) bytes gets one. */
#define TMP_STEM 200

static uint64_t name_hash(const char* s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* "." stem "." hash "." into out (at least TMP_STEM + 20 bytes): what every temporary name of base
 * starts with. */
static void tmp_prefix(const char* base, char* out) {
    size_t n = strlen(base);
    if (n > TMP_STEM) n = TMP_STEM;
    out[0] = '.';
    memcpy(out + 1, base, n);
    snprintf(out + 1 + n, 19, ".%016" PRIx64 ".", name_hash(base));
}

/* pid if s is "PID.N" + end exactly (decimal digits), else 0. */
static long parse_pid(const char* s, const char* end) {
    char* e;
    errno = 0;
    long pid = strtol(s, &e, 10);
    if (e == s || *e != '.' || errno || pid <= 0 || !(e[1] >= '0' && e[1] <= '9')) return 0;
    strtoul(e + 1, &e, 10);
    return strcmp(e, end) == 0 ? pid : 0;
}

/* Removes the temporary files of base in dir (fd) left by writers that died (their pid is not a
 * live process: ESRCH): this library's names and those before version 0.2 (base.tmpPID.N). */
static void remove_stale(int dirfd, const char* base) {
    int fd = dup(dirfd);
    DIR* d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    char prefix[TMP_STEM + 20];
    tmp_prefix(base, prefix);
    size_t np = strlen(prefix), nb = strlen(base);
    struct dirent* e;
    while ((e = readdir(d))) {
        long pid = 0;
        if (!strncmp(e->d_name, prefix, np)) pid = parse_pid(e->d_name + np, ".tmp");
        else if (!strncmp(e->d_name, base, nb) && !strncmp(e->d_name + nb, ".tmp", 4))
            pid = parse_pid(e->d_name + nb + 4, "");
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) unlinkat(dirfd, e->d_name, 0);
    }
    closedir(d);
}

/* Opens the directory holding file (its path up to the last '/'; "." without one). */
static int open_dir_of(const char* file) {
    const char* slash = strrchr(file, '/');
    if (!slash) return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    size_t n = slash == file ? 1 : (size_t)(slash - file);
    char* dir = strndup(file, n);
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : (errno = ENOMEM, -1);
    free(dir);
    return fd;
}

int fgmm_output_begin(const char* path, FgmmOutput* o) {
    FGMM_CHECK_NULL(o);
    memset(o, 0, sizeof *o);
    FGMM_CHECK_NULL(path);
    char* target = follow_links(path);
    if (!target) return fgmm_fail(FGMM_ERR_IO, "cannot resolve '%s': %s", path, strerror(errno));
    struct stat sb;
    int exists = stat(target, &sb) == 0;
    if (exists && !S_ISREG(sb.st_mode)) {
        free(target);
        return fgmm_fail(FGMM_ERR_IO, "'%s' exists and is not a regular file; not replacing it", path);
    }
    const char* slash = strrchr(target, '/');
    const char* base = slash ? slash + 1 : target;
    size_t dirlen = (size_t)(base - target);
    char* tmp = malloc(dirlen + TMP_STEM + 64);
    int dirfd = open_dir_of(target), fd = -1, e = errno;
    if (tmp && dirfd >= 0) {
        remove_stale(dirfd, base);
        static atomic_uint counter;
        memcpy(tmp, target, dirlen);
        tmp_prefix(base, tmp + dirlen);
        char* end = tmp + strlen(tmp);
        for (int tries = 0; fd < 0 && tries < 100; tries++) {
            sprintf(end, "%ld.%u.tmp", (long)getpid(), atomic_fetch_add(&counter, 1));
            /* private until it has the replaced file's mode: 0600, then fchmod below */
            fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, exists ? 0600 : 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
        e = errno;
    }
    if (dirfd >= 0) close(dirfd);
    if (fd >= 0 && exists) {
        /* the owner where permitted (root; a group the writer is in), then the mode */
        if (fchown(fd, sb.st_uid, sb.st_gid) != 0 && fchown(fd, (uid_t)-1, sb.st_gid) != 0) {
            /* not permitted: the file is the writer's */
        }
        if (fchmod(fd, sb.st_mode & 07777) != 0) e = errno, close(fd), unlink(tmp), fd = -1;
    }
    if (fd >= 0 && !(o->f = fdopen(fd, "wb"))) e = errno, close(fd), unlink(tmp), fd = -1;
    if (fd < 0) {
        free(tmp);
        free(target);
        return fgmm_fail(FGMM_ERR_IO, "cannot create a file next to '%s': %s", path, strerror(tmp ? e : ENOMEM));
    }
    o->tmp = tmp;
    o->target = target;
    return FGMM_OK;
}

int fgmm_output_end(FgmmOutput* o, const char* path, int ok) {
    FGMM_CHECK_NULL(o);
    if (!o->f) return fgmm_fail(FGMM_ERR_STATE, "%s: no output begun, or it has ended", __func__);
    if (!path) ok = 0;      /* the temporary file is removed */
    int e = ok ? 0 : errno; /* the failed write's reason */
    if (ok && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)) ok = 0, e = errno;
    if (fclose(o->f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(o->tmp, o->target) != 0) ok = 0, e = errno;
    if (!ok) unlink(o->tmp);
    const char* step = "";
    if (ok) { /* the rename itself made durable */
        int dirfd = open_dir_of(o->target);
        if (dirfd < 0 || fsync(dirfd) != 0) ok = 0, e = errno, step = " (replaced; syncing its directory)";
        if (dirfd >= 0) close(dirfd);
    }
    free(o->tmp);
    free(o->target);
    memset(o, 0, sizeof *o);
    if (ok) return FGMM_OK;
    if (!path) return fgmm_fail(FGMM_ERR_NULL, "%s: path is NULL; the output is removed", __func__);
    return fgmm_fail(FGMM_ERR_IO, "write to '%s' failed%s%s%s", path, step, e ? ": " : "", e ? strerror(e) : "");
}
