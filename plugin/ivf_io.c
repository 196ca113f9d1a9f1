/* SPDX-License-Identifier: MIT */
/* ivf_io.c: index files (docs/FORMAT.md). One file: a header, then the FAISS index, the spill
 * settings and the model as sections, each with its CRC-32, written to a temporary file and
 * renamed once. Also reads the three-file sets written before (the FAISS file, PATH.fgmm: text
 * settings bound to the centroids by a checksum, PATH.gmm) and exports a plain FAISS file that
 * holds each vector once. */
#define _POSIX_C_SOURCE 200809L /* pread, fseeko, unlink */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/c_api/index_io_c.h>

#include "faiss_bridge.h"
#include "flashgmm_io.h"
#include "ivf_impl.h"

/* ---- little-endian fields -------------------------------------------------------------------- */

static void put_u32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static void put_u64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static uint32_t get_u32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void put_f64(uint8_t* p, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(p, u);
}
static double get_f64(const uint8_t* p) {
    uint64_t u = get_u64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* ---- the index file: header and settings (docs/FORMAT.md) ----------------------------------- */

#define FILE_MAGIC "FGMM-IVF" /* FAISS reads the first 4 bytes as an index type: 'Index type 0x4d4d4746 ("FGMM")' */
#define FILE_VERSION 2        /* the newest read; written only with a refine copy, else version 1 */
#define TABLE_AT 16           /* the section table: tag, CRC-32, offset, length per section */
#define SECTION_ENTRY 24
#define HEADER_BYTES(nsec) (TABLE_AT + (nsec)*SECTION_ENTRY + 4) /* + the header's own CRC-32 */
#define HEADER_MAX HEADER_BYTES(FGMM_IVF_SECTIONS_MAX)
#define SETTINGS_BYTES 88 /* version 1's fields; later writers may append fields a reader ignores */
#define SETTINGS_MAX 4096
#define REFINE_HEAD 16 /* the refine section: u64 rows, u32 d, f32 k_factor, then rows x d f32 */
static const char section_tag[FGMM_IVF_SECTIONS_MAX][5] = {"FAIS", "SETS", "GMM ", "RFLT"};

static void encode_settings(const FgmmIvf* h, uint8_t* s) {
    const FgmmIvfParams* p = &h->p;
    memset(s, 0, SETTINGS_BYTES);
    int32_t ints[8] = {h->nlist,           h->d,          (int32_t)p->quantizer, (int32_t)p->rule, (int32_t)p->primary,
                       (int32_t)p->select, p->max_assign, h->has_threshold};
    for (int i = 0; i < 8; i++) put_u32(s + 4 * i, (uint32_t)ints[i]);
    uint32_t lambda;
    memcpy(&lambda, &p->soar_lambda, 4);
    put_u32(s + 32, lambda);
    put_f64(s + 40, p->tau);
    put_f64(s + 48, p->spill_target);
    put_f64(s + 56, h->has_threshold ? h->threshold : 0.0);
    put_u64(s + 64, (uint64_t)h->n_vectors);
    put_u64(s + 72, (uint64_t)h->n_entries);
    put_u64(s + 80, (uint64_t)h->next_id);
}

typedef struct settings {
    FgmmIvfParams p;
    int64_t nlist, d, vectors, entries, next_id;
    int has_threshold;
    double threshold;
} settings;

static void decode_settings(const uint8_t* s, settings* out) {
    int32_t v[8];
    for (int i = 0; i < 8; i++) v[i] = (int32_t)get_u32(s + 4 * i);
    out->nlist = v[0], out->d = v[1];
    out->p.quantizer = (FgmmQuantizer)v[2], out->p.rule = (FgmmAssignRule)v[3], out->p.primary = (FgmmPrimary)v[4];
    out->p.select = (FgmmSpillSelect)v[5], out->p.max_assign = v[6], out->has_threshold = v[7];
    uint32_t lambda = get_u32(s + 32);
    memcpy(&out->p.soar_lambda, &lambda, 4);
    out->p.tau = get_f64(s + 40);
    out->p.spill_target = get_f64(s + 48);
    out->threshold = get_f64(s + 56);
    out->vectors = (int64_t)get_u64(s + 64);
    out->entries = (int64_t)get_u64(s + 72);
    out->next_id = (int64_t)get_u64(s + 80);
}

/* Checks s against the index h (read from the same file) and installs it. */
static int apply_settings(FgmmIvf* h, const settings* s, const char* name) {
    if (!h->cent || s->nlist != h->nlist || s->d != h->d || s->entries != faiss_Index_ntotal(h->index))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': the settings do not belong to the index (nlist, d or entries)",
                                   name);
    if (s->vectors < 0 || s->entries < s->vectors || s->next_id < 0 ||
        (s->has_threshold != 0 && s->has_threshold != 1) || isnan(s->threshold))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': inconsistent counts", name);
    if (fgmm_ivf_check_params(&s->p)) {
        char why[256]; /* copied: the message buffer cannot be formatted into itself */
        snprintf(why, sizeof why, "%s", fgmm_get_last_error());
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %s", name, why);
    }
    h->p = s->p;
    h->has_threshold = s->has_threshold;
    h->threshold = s->threshold;
    h->n_vectors = s->vectors;
    h->n_entries = s->entries;
    h->next_id = s->next_id;
    return FGMM_OK;
}

/* The model m (owned by h afterwards, or freed) must be the one whose means the quantizer holds. */
static int install_model(FgmmIvf* h, FgmmModel* m, const char* name) {
    if (fgmm_model_k(m) != h->nlist || fgmm_model_d(m) != h->d ||
        memcmp(fgmm_model_means(m), h->cent, (size_t)h->nlist * h->d * sizeof(float))) {
        fgmm_model_free(m);
        return fgmm_set_last_error(
            FGMM_ERR_IO, "'%s' does not belong to this index: its means are not the quantizer's centroids", name);
    }
    h->model = m;
    return FGMM_OK;
}

static int io_failed(const char* what, const char* path) {
    return fgmm_set_last_error(FGMM_ERR_IO, "%s '%s': %s", what, path, errno ? strerror(errno) : "short read or write");
}

/* The refine section (version 2): its head, then the rows. */
static int write_refine(const FgmmIvf* h, FILE* f) {
    uint8_t head[REFINE_HEAD];
    uint32_t kf;
    memcpy(&kf, &h->k_factor, 4);
    put_u64(head, (uint64_t)h->refine_n);
    put_u32(head + 8, (uint32_t)h->d);
    put_u32(head + 12, kf);
    size_t n = (size_t)h->refine_n * h->d;
    return fwrite(head, sizeof head, 1, f) != 1 || (n && fwrite(h->refine, sizeof(float), n, f) != n);
}

/* The sections after a zeroed header, then the header with their CRCs. Version 1 (3 sections)
 * without a refine copy, so that readers of version 1 read the file; version 2 (4) with one. */
static int write_sections(const FgmmIvf* h, FILE* f, const char* path) {
    const int nsec = h->refine_on ? FGMM_IVF_SECTIONS_MAX : FGMM_IVF_SECTIONS, hbytes = HEADER_BYTES(nsec);
    uint8_t hdr[HEADER_MAX] = {0}, set[SETTINGS_BYTES];
    int64_t off[FGMM_IVF_SECTIONS_MAX + 1];
    uint32_t crc[FGMM_IVF_SECTIONS_MAX];
    errno = 0;
    if (fwrite(hdr, (size_t)hbytes, 1, f) != 1) return io_failed("fgmm_ivf_write: cannot write", path);
    off[0] = hbytes;
    if (faiss_write_index(h->index, f)) return fgmm_ivf_faiss_failed("fgmm_ivf_write");
    encode_settings(h, set);
    crc[1] = fgmm_ivf_crc32(0, set, sizeof set);
    errno = 0;
    if ((off[1] = ftello(f)) < 0 || fwrite(set, sizeof set, 1, f) != 1 || (off[2] = ftello(f)) < 0)
        return io_failed("fgmm_ivf_write: cannot write", path);
    if (h->model && fgmm_model_fwrite(h->model, f)) return io_failed("fgmm_ivf_write: cannot write", path);
    errno = 0;
    if ((off[3] = ftello(f)) < 0) return io_failed("fgmm_ivf_write: cannot write", path);
    errno = 0;
    if (nsec > 3 && (write_refine(h, f) || (off[4] = ftello(f)) < 0))
        return io_failed("fgmm_ivf_write: cannot write", path);
    if (fflush(f)) return io_failed("fgmm_ivf_write: cannot write", path);
    for (int s = 0; s < nsec; s += 1 + (s == 0)) { /* all but the settings, read back */
        int64_t c = fgmm_ivf_crc32_range(fileno(f), off[s], off[s + 1] - off[s]);
        if (c < 0) return io_failed("fgmm_ivf_write: cannot read back", path);
        crc[s] = (uint32_t)c;
    }
    memcpy(hdr, FILE_MAGIC, 8);
    put_u32(hdr + 8, nsec > 3 ? 2 : 1);
    put_u32(hdr + 12, (uint32_t)nsec);
    for (int s = 0; s < nsec; s++) {
        uint8_t* e = hdr + TABLE_AT + s * SECTION_ENTRY;
        memcpy(e, section_tag[s], 4);
        put_u32(e + 4, crc[s]);
        put_u64(e + 8, (uint64_t)off[s]);
        put_u64(e + 16, (uint64_t)(off[s + 1] - off[s]));
    }
    put_u32(hdr + hbytes - 4, fgmm_ivf_crc32(0, hdr, (size_t)hbytes - 4));
    errno = 0;
    if (fseeko(f, 0, SEEK_SET) || fwrite(hdr, (size_t)hbytes, 1, f) != 1)
        return io_failed("fgmm_ivf_write: cannot write", path);
    return FGMM_OK;
}

#define SIDECAR_MAGIC "flashgmm-ivf sidecar 1"

static char* with_suffix(const char* path, const char* suffix) {
    size_t n = strlen(path), m = strlen(suffix);
    char* s = malloc(n + m + 1);
    if (s) memcpy(s, path, n), memcpy(s + n, suffix, m + 1);
    return s;
}

/* After a write in this format: a three-file set's sidecars at path (PATH.fgmm, if it starts with
 * the sidecar's first line, and then PATH.gmm) are removed; readers ignore them anyway. */
static void remove_old_sidecars(const char* path) {
    char* side = with_suffix(path, ".fgmm");
    char* gmm = with_suffix(path, ".gmm");
    FILE* f = NULL;
    int64_t size;
    char line[sizeof SIDECAR_MAGIC + 1];
    if (side && gmm && !fgmm_open_input(side, &f, &size) && fgets(line, sizeof line, f) &&
        !strcmp(line, SIDECAR_MAGIC "\n") && !unlink(side))
        unlink(gmm);
    if (f) fclose(f);
    free(side);
    free(gmm);
}

/* Writes path atomically (fgmm_output_begin / _end), body filling the temporary file; a failure's
 * message is kept over the clean-up's. */
static int write_atomically(const FgmmIvf* h, const char* path, const char* who,
                            int (*body)(const FgmmIvf* h, FILE* f, const char* path)) {
    if (!h->cent) return fgmm_set_last_error(FGMM_ERR_STATE, "%s: the index is not trained", who);
    FgmmOutput o;
    int rc = fgmm_output_begin(path, &o);
    if (rc) return rc;
    rc = body(h, o.f, path);
    char why[600];
    snprintf(why, sizeof why, "%s", rc ? fgmm_get_last_error() : "");
    int end = fgmm_output_end(&o, path, !rc);
    return rc ? fgmm_set_last_error(rc, "%s", why) : end;
}

int fgmm_ivf_write(const FgmmIvf* h, const char* path) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(path);
    int rc = write_atomically(h, path, __func__, write_sections);
    if (!rc) remove_old_sidecars(path);
    return rc;
}

int fgmm_ivf_layout(FILE* f, int64_t size, const char* name, FgmmIvfLayout* out) {
    uint8_t hdr[HEADER_MAX];
    ssize_t got = pread(fileno(f), hdr, sizeof hdr, 0);
    if (got < 8 || memcmp(hdr, FILE_MAGIC, 8))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is not a flashgmm-ivf index file (magic)", name);
    uint32_t version = got >= 12 ? get_u32(hdr + 8) : 0;
    if (got >= 12 && (version < 1 || version > FILE_VERSION))
        return fgmm_set_last_error(
            FGMM_ERR_IO, "'%s': format version %u; this build reads versions 1 to %d (a newer flashgmm wrote it?)",
            name, version, FILE_VERSION);
    const int nsec = version == 1 ? FGMM_IVF_SECTIONS : FGMM_IVF_SECTIONS_MAX, hbytes = HEADER_BYTES(nsec);
    if (got < hbytes || size < hbytes)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': truncated header (%lld bytes)", name, (long long)size);
    if (get_u32(hdr + hbytes - 4) != fgmm_ivf_crc32(0, hdr, (size_t)hbytes - 4))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': header checksum mismatch (damaged file)", name);
    if (get_u32(hdr + 12) != (uint32_t)nsec)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %u sections; version %u has %d", name, get_u32(hdr + 12),
                                   version, nsec);
    out->nsec = nsec;
    int64_t at = hbytes;
    for (int s = 0; s < nsec; s++) {
        const uint8_t* e = hdr + TABLE_AT + s * SECTION_ENTRY;
        uint64_t off = get_u64(e + 8), len = get_u64(e + 16);
        if (memcmp(e, section_tag[s], 4))
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': section %d is not '%s'", name, s, section_tag[s]);
        /* in order, back to back, within the file: every length is bounded by the file's size */
        if (off != (uint64_t)at || len > (uint64_t)(size - at))
            return fgmm_set_last_error(FGMM_ERR_IO,
                                       "'%s': section '%s' (%" PRIu64 " bytes at %" PRIu64
                                       ") lies outside the file's %lld bytes: truncated or damaged",
                                       name, section_tag[s], len, off, (long long)size);
        out->off[s] = at;
        out->len[s] = (int64_t)len;
        out->crc[s] = get_u32(e + 4);
        at += (int64_t)len;
    }
    if (at != size)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %lld bytes after the last section", name,
                                   (long long)(size - at));
    if (out->len[0] == 0 || out->len[1] < SETTINGS_BYTES || out->len[1] > SETTINGS_MAX)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': bad section lengths (index %lld, settings %lld bytes)", name,
                                   (long long)out->len[0], (long long)out->len[1]);
    for (int s = 0; s < nsec; s++) {
        int64_t c = fgmm_ivf_crc32_range(fileno(f), out->off[s], out->len[s]);
        if (c < 0) return io_failed("cannot read", name);
        if ((uint32_t)c != out->crc[s])
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': section '%s' checksum mismatch (damaged file)", name,
                                       section_tag[s]);
    }
    return FGMM_OK;
}

/* The refine section (len bytes at off) into h, whose settings are installed: one row per vector,
 * ids 0 .. vectors - 1 (the settings' next_id), h's d, a valid k_factor; the length exact. */
static int read_refine(FgmmIvf* h, FILE* f, int64_t off, int64_t len, const char* path) {
    uint8_t head[REFINE_HEAD];
    errno = 0;
    if (len < REFINE_HEAD)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': refine section of %lld bytes", path, (long long)len);
    if (pread(fileno(f), head, sizeof head, off) != (ssize_t)sizeof head) return io_failed("cannot read", path);
    uint64_t rows = get_u64(head);
    uint32_t d = get_u32(head + 8), kfu = get_u32(head + 12);
    float kf;
    memcpy(&kf, &kfu, 4);
    /* rows x d x 4 must be the section's length, itself bounded by the file's size */
    if (d != (uint32_t)h->d || rows != (uint64_t)h->n_vectors || rows != (uint64_t)h->next_id ||
        rows > (uint64_t)(len - REFINE_HEAD) / (4ull * d) || (uint64_t)(len - REFINE_HEAD) != rows * 4ull * d)
        return fgmm_set_last_error(FGMM_ERR_IO,
                                   "'%s': the refine copy (%llu rows of d = %u, %lld bytes) does not belong to the "
                                   "index (%lld vectors, next id %lld, d = %d)",
                                   path, (unsigned long long)rows, d, (long long)len, (long long)h->n_vectors,
                                   (long long)h->next_id, h->d);
    if (fgmm_ivf_check_k_factor(kf, "refine section")) {
        char why[256];
        snprintf(why, sizeof why, "%s", fgmm_get_last_error());
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %s", path, why);
    }
    size_t bytes = (size_t)(len - REFINE_HEAD);
    float* r = malloc(bytes ? bytes : 1);
    if (!r) return fgmm_set_last_error(FGMM_ERR_NOMEM, "'%s': out of host memory for the refine copy", path);
    for (size_t at = 0; at < bytes;) {
        ssize_t got = pread(fileno(f), (char*)r + at, bytes - at, (off_t)(off + REFINE_HEAD + (int64_t)at));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            free(r);
            return io_failed("cannot read", path);
        }
        at += (size_t)got;
    }
    h->refine_on = 1;
    h->k_factor = kf;
    h->refine = r;
    h->refine_n = h->refine_cap = (int64_t)rows;
    return FGMM_OK;
}

/* The index file open as f (size bytes) into a new handle *out. */
static int read_index_file(FILE* f, int64_t size, const char* path, const FgmmIvfParams* params, FgmmIvf** out) {
    FgmmIvfLayout L;
    int rc = fgmm_ivf_layout(f, size, path, &L);
    if (rc) return rc;
    uint8_t set[SETTINGS_BYTES];
    errno = 0;
    if (pread(fileno(f), set, sizeof set, L.off[1]) != (ssize_t)sizeof set) return io_failed("cannot read", path);
    FaissIndex* index = NULL;
    if (fseeko(f, L.off[0], SEEK_SET)) return io_failed("cannot read", path);
    if (faiss_read_index(f, 0, &index)) return fgmm_ivf_faiss_failed("fgmm_ivf_read");
    FgmmIvf* h = NULL;
    if (ftello(f) != L.off[1]) /* FAISS read less or more than its section */
        rc =
            fgmm_set_last_error(FGMM_ERR_IO, "'%s': the FAISS index is not %lld bytes long", path, (long long)L.len[0]);
    if (!rc) rc = fgmm_ivf_wrap(index, params, &h);
    if (rc) {
        faiss_Index_free(index);
        return rc;
    }
    h->owns_index = 1;
    settings s = {.p = h->p}; /* gmm and max_points_per_list (training only) stay as params gave them */
    decode_settings(set, &s);
    rc = apply_settings(h, &s, path);
    FgmmModel* m = NULL;
    if (!rc && L.len[2] > 0) {
        if (fseeko(f, L.off[2], SEEK_SET)) rc = io_failed("cannot read", path);
        if (!rc && fgmm_model_fread(f, L.len[2], &m)) {
            char why[256];
            snprintf(why, sizeof why, "%s", fgmm_get_last_error());
            rc = fgmm_set_last_error(FGMM_ERR_IO, "'%s': %s", path, why);
        }
        if (!rc) rc = install_model(h, m, path);
    }
    if (!rc && L.nsec > 3) rc = read_refine(h, f, L.off[3], L.len[3], path);
    if (rc) {
        fgmm_ivf_free(h);
        return rc;
    }
    *out = h;
    return FGMM_OK;
}

/* ---- the three-file sets written before this format ----------------------------------------- */

/* FNV-1a over the centroids' bytes: binds the sidecars to one quantizer. */
static uint64_t centroid_sum(const FgmmIvf* h) {
    uint64_t s = 1469598103934665603ull;
    const unsigned char* b = (const unsigned char*)h->cent;
    for (size_t i = 0; i < (size_t)h->nlist * h->d * sizeof(float); i++) s = (s ^ b[i]) * 1099511628211ull;
    return s;
}

#define SIDECAR_MAX_BYTES 65536 /* far above what the writer wrote: a larger file is not ours */

static int clamp_int(long long v) { return v < -1000 ? -1000 : v > 1000 ? 1000 : (int)v; } /* refused later */

/* Parses PATH.fgmm into s (p's gmm field untouched). */
static int parse_settings(FILE* f, const char* name, settings* s, uint64_t* centroids, int* model) {
    char line[512];
    if (!fgets(line, sizeof line, f) || strncmp(line, SIDECAR_MAGIC "\n", sizeof SIDECAR_MAGIC))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is not a flashgmm-ivf sidecar (first line)", name);
    unsigned seen = 0;
    static const char* keys[] = {"centroids", "nlist",      "d",           "quantizer",    "rule",   "primary",
                                 "tau",       "max_assign", "soar_lambda", "spill_target", "select", "has_threshold",
                                 "threshold", "vectors",    "entries",     "next_id",      "model"};
    const unsigned all = (1u << (sizeof keys / sizeof *keys)) - 1;
    int ended = 0;
    long bytes = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        /* a line cut by the buffer would be read as two, its tail as a setting (even inside a
         * comment); one with a NUL byte would be cut short: neither is what we write */
        if (!len || line[len - 1] != '\n')
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': a line is too long, unterminated or holds a NUL byte", name);
        bytes += (long)len;
        if (bytes > SIDECAR_MAX_BYTES) return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is too large for a sidecar", name);
        if (line[0] == '#') continue;
        if (!strcmp(line, "end\n")) {
            ended = 1;
            break;
        }
        char key[32], val[64], extra;
        if (sscanf(line, "%31s = %63s %c", key, val, &extra) != 2)
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': malformed line '%.60s'", name, line);
        unsigned i = 0;
        while (i < sizeof keys / sizeof *keys && strcmp(key, keys[i])) i++;
        if (i == sizeof keys / sizeof *keys) continue; /* a later version's key */
        /* integers are parsed as integers: every int64 (ids, counts) exactly */
        int real = i == 6 || i == 8 || i == 9 || i == 12;
        char* end;
        errno = 0;
        unsigned long long u = i == 0 ? strtoull(val, &end, 16) : 0;
        long long n = i != 0 && !real ? strtoll(val, &end, 10) : 0;
        double v = real ? strtod(val, &end) : 0;
        if (end == val || *end || errno == ERANGE || (real && i != 12 && isnan(v)))
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': bad value for %s: '%s'", name, key, val);
        switch (i) {
        case 0: *centroids = u; break;
        case 1: s->nlist = n; break;
        case 2: s->d = n; break;
        case 3: s->p.quantizer = (FgmmQuantizer)clamp_int(n); break;
        case 4: s->p.rule = (FgmmAssignRule)clamp_int(n); break;
        case 5: s->p.primary = (FgmmPrimary)clamp_int(n); break;
        case 6: s->p.tau = v; break;
        case 7: s->p.max_assign = clamp_int(n); break;
        case 8: s->p.soar_lambda = fabs(v) <= FLT_MAX ? (float)v : (float)INFINITY; break; /* refused later */
        case 9: s->p.spill_target = v; break;
        case 10: s->p.select = (FgmmSpillSelect)clamp_int(n); break;
        case 11: s->has_threshold = n != 0; break;
        case 12: s->threshold = v; break;
        case 13: s->vectors = n; break;
        case 14: s->entries = n; break;
        case 15: s->next_id = n; break;
        case 16: *model = n != 0; break;
        }
        seen |= 1u << i;
    }
    if (!ended || seen != all) return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is truncated or lacks a setting", name);
    return FGMM_OK;
}

static int read_model_file(FgmmIvf* h, const char* gmm) {
    FgmmModel* m = NULL;
    int rc = fgmm_model_read(gmm, &m);
    return rc ? rc : install_model(h, m, gmm);
}

static int read_sidecars(FgmmIvf* h, const char* side, const char* gmm) {
    if (access(side, F_OK) != 0 && errno == ENOENT)
        /* no settings: a plain FAISS index, or one written before the settings file existed */
        return access(gmm, F_OK) == 0 ? read_model_file(h, gmm) : FGMM_OK;
    FILE* f;
    int64_t size;
    int rc = fgmm_open_input(side, &f, &size); /* a regular file: a FIFO is refused, not waited on */
    if (rc) return rc;
    settings s = {.p = h->p};
    uint64_t centroids = 0;
    int model = 0;
    rc = parse_settings(f, side, &s, &centroids, &model);
    fclose(f);
    if (rc) return rc;
    if (h->cent && centroids != centroid_sum(h))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' does not belong to this index (other centroids)", side);
    if ((rc = apply_settings(h, &s, side))) return rc;
    if (model && (rc = read_model_file(h, gmm))) return rc;
    if (!model && access(gmm, F_OK) == 0)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is stale: '%s' says the index has no model", gmm, side);
    return FGMM_OK;
}

/* A FAISS index file open as f (at its start), with sidecars beside path where they exist. */
static int read_three_files(FILE* f, const char* path, const FgmmIvfParams* params, FgmmIvf** out) {
    FaissIndex* index = NULL;
    if (faiss_read_index(f, 0, &index)) return fgmm_ivf_faiss_failed("fgmm_ivf_read");
    FgmmIvf* h = NULL;
    int rc = fgmm_ivf_wrap(index, params, &h);
    if (rc) {
        faiss_Index_free(index);
        return rc;
    }
    h->owns_index = 1;
    char* side = with_suffix(path, ".fgmm");
    char* gmm = with_suffix(path, ".gmm");
    rc = side && gmm ? read_sidecars(h, side, gmm) : fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory");
    free(side);
    free(gmm);
    if (rc) {
        fgmm_ivf_free(h);
        return rc;
    }
    *out = h;
    return FGMM_OK;
}

int fgmm_ivf_read(const char* path, const FgmmIvfParams* params, FgmmIvf** out) {
    IVF_CHECK_NULL(out);
    *out = NULL;
    IVF_CHECK_NULL(path);
    FILE* f;
    int64_t size;
    int rc = fgmm_open_input(path, &f, &size); /* one open file: one version of path, however it is replaced */
    if (rc) return rc;
    char magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    if (got < 4)
        rc = fgmm_set_last_error(FGMM_ERR_IO, "'%s': %lld bytes is too short for an index file", path, (long long)size);
    else if (!memcmp(magic, FILE_MAGIC, 4))
        rc = read_index_file(f, size, path, params, out); /* "FGMM": ours, never FAISS's */
    else rc = fseeko(f, 0, SEEK_SET) ? io_failed("cannot read", path) : read_three_files(f, path, params, out);
    fclose(f);
    return rc;
}

/* ---- export ---------------------------------------------------------------------------------- */

/* How primary a copy in list l is, from its reconstruction x (higher: more): minus the squared
 * distance to the list's centroid (the nearest list), or with FGMM_PRIMARY_RESPONSIBILITY and a
 * model the log of w_l N(x | mu_l, var_l) up to a constant (the most responsible component). */
static double primary_score(void* ctx, int64_t l, const float* x) {
    const FgmmIvf* h = ctx;
    int d = h->d;
    const float* c = h->cent + (size_t)l * d;
    if (h->p.primary != FGMM_PRIMARY_RESPONSIBILITY || !h->model) {
        double s = 0;
        for (int j = 0; j < d; j++) s += ((double)x[j] - c[j]) * ((double)x[j] - c[j]);
        return -s;
    }
    const FgmmModel* m = h->model;
    int diag = fgmm_model_covariance(m) == FGMM_COV_DIAGONAL;
    const float* var = fgmm_model_variances(m) + (diag ? (size_t)l * d : (size_t)l);
    double s = 0, logdet = 0;
    for (int j = 0; j < d; j++) {
        double v = var[diag ? j : 0], e = (double)x[j] - c[j];
        s += e * e / v;
        logdet += log(v);
    }
    return log((double)fgmm_model_weights(m)[l]) - 0.5 * (logdet + s);
}

static int write_one_per_id(const FgmmIvf* h, FILE* f, const char* path) {
    (void)path;
    char err[512];
    if (fgmm_faiss_write_one_per_id(h->index, f, primary_score, (void*)h, err, sizeof err))
        return fgmm_set_last_error(FGMM_ERR_FAISS, "fgmm_ivf_write_faiss: %s", err);
    return FGMM_OK;
}

int fgmm_ivf_write_faiss(const FgmmIvf* h, const char* path) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(path);
    return write_atomically(h, path, __func__, write_one_per_id);
}
