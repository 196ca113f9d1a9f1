/* ivf_io.c: writing and reading a spilled index: the FAISS file, PATH.fgmm (spill settings, a
 * text file bound to the quantizer's centroids by a checksum) and PATH.gmm (the model). */
#define _POSIX_C_SOURCE 200809L /* unlink */
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

#include "flashgmm_io.h"
#include "ivf_impl.h"

#define SIDECAR_MAGIC "flashgmm-ivf sidecar 1"
#define SIDECAR_MAX_BYTES 65536 /* far above what fgmm_ivf_write writes: a larger file is not ours */

/* FNV-1a over the centroids' bytes: binds the sidecars to one quantizer. */
static uint64_t centroid_sum(const FgmmIvf* h) {
    uint64_t s = 1469598103934665603ull;
    const unsigned char* b = (const unsigned char*)h->cent;
    for (size_t i = 0; i < (size_t)h->nlist * h->d * sizeof(float); i++) s = (s ^ b[i]) * 1099511628211ull;
    return s;
}

static char* with_suffix(const char* path, const char* suffix) {
    size_t n = strlen(path), m = strlen(suffix);
    char* s = malloc(n + m + 1);
    if (s) memcpy(s, path, n), memcpy(s + n, suffix, m + 1);
    return s;
}

/* The settings sidecar's text; 0, or -1 if a write failed. */
static int write_settings(const FgmmIvf* h, FILE* f) {
    const FgmmIvfParams* p = &h->p;
    fprintf(f, "%s\n", SIDECAR_MAGIC);
    fprintf(f, "# Written by flashgmm-ivf beside a FAISS index file. A vector may sit in up to %d inverted\n"
               "# lists (spill). Plain FAISS search returns such a vector once per list it is in (duplicate\n"
               "# ids), and ntotal counts (vector, list) entries. Search with fgmm_ivf_read + fgmm_ivf_search\n"
               "# (C) or flashgmm's Python IvfIndex.read(...).search, which return distinct ids.\n",
            fgmm_ivf_lists_per_vector(h));
    fprintf(f, "centroids = %016" PRIx64 "\nnlist = %d\nd = %d\n", centroid_sum(h), h->nlist, h->d);
    fprintf(f, "quantizer = %d\nrule = %d\nprimary = %d\ntau = %.17g\nmax_assign = %d\n", (int)p->quantizer,
            (int)p->rule, (int)p->primary, p->tau, p->max_assign);
    fprintf(f, "soar_lambda = %.9g\nspill_target = %.17g\nselect = %d\n", p->soar_lambda, p->spill_target,
            (int)p->select);
    fprintf(f, "has_threshold = %d\nthreshold = %.17g\n", h->has_threshold, h->has_threshold ? h->threshold : 0.0);
    fprintf(f, "vectors = %" PRId64 "\nentries = %" PRId64 "\nnext_id = %" PRId64 "\nmodel = %d\nend\n", h->n_vectors,
            h->n_entries, h->next_id, h->model != NULL);
    return ferror(f) ? -1 : 0;
}

int fgmm_ivf_write(const FgmmIvf* h, const char* path) {
    IVF_CHECK_NULL(h);
    IVF_CHECK_NULL(path);
    if (!h->cent) return fgmm_set_last_error(FGMM_ERR_STATE, "fgmm_ivf_write: the index is not trained");
    char* side = with_suffix(path, ".fgmm");
    char* gmm = with_suffix(path, ".gmm");
    FgmmOutput oi = {0}, os = {0};
    int rc = side && gmm ? FGMM_OK : fgmm_set_last_error(FGMM_ERR_NOMEM, "out of host memory");
    /* the index and the settings go to temporary files, renamed only once everything is written;
     * the model file is replaced atomically by fgmm_model_write itself */
    if (!rc) rc = fgmm_output_begin(path, &oi);
    if (!rc) rc = fgmm_output_begin(side, &os);
    if (!rc && faiss_write_index(h->index, oi.f)) rc = fgmm_ivf_faiss_failed("fgmm_ivf_write");
    if (!rc && write_settings(h, os.f))
        rc = fgmm_set_last_error(FGMM_ERR_IO, "fgmm_ivf_write: cannot write '%s': %s", side, strerror(errno));
    if (!rc && h->model) rc = fgmm_model_write(h->model, gmm);
    if (!rc && !h->model && unlink(gmm) && errno != ENOENT) /* a stale model would be paired with this index */
        rc = fgmm_set_last_error(FGMM_ERR_IO, "fgmm_ivf_write: cannot remove the stale '%s': %s", gmm, strerror(errno));
    char why[512]; /* the first failure's message, kept over the clean-up's */
    snprintf(why, sizeof why, "%s", rc ? fgmm_get_last_error() : "");
    if (oi.f && fgmm_output_end(&oi, path, !rc) && !rc) rc = FGMM_ERR_IO, snprintf(why, sizeof why, "%s", fgmm_get_last_error());
    if (os.f && fgmm_output_end(&os, side, !rc) && !rc) rc = FGMM_ERR_IO, snprintf(why, sizeof why, "%s", fgmm_get_last_error());
    free(side);
    free(gmm);
    return rc ? fgmm_set_last_error(rc, "%s", why) : FGMM_OK;
}

typedef struct settings {
    FgmmIvfParams p;
    uint64_t centroids;
    long long nlist, d, vectors, entries, next_id;
    int has_threshold, model;
    double threshold;
} settings;

/* Parses PATH.fgmm into s (p's gmm field untouched). */
static int parse_settings(FILE* f, const char* name, settings* s) {
    char line[512];
    if (!fgets(line, sizeof line, f) || strncmp(line, SIDECAR_MAGIC "\n", sizeof SIDECAR_MAGIC))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is not a flashgmm-ivf sidecar (first line)", name);
    unsigned seen = 0;
    static const char* keys[] = {"centroids", "nlist", "d", "quantizer", "rule", "primary", "tau", "max_assign",
                                 "soar_lambda", "spill_target", "select", "has_threshold", "threshold",
                                 "vectors", "entries", "next_id", "model"};
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
        char* end;
        errno = 0;
        double v = i == 0 ? 0 : strtod(val, &end);
        unsigned long long u = i == 0 ? strtoull(val, &end, 16) : 0;
        if (*end || errno == ERANGE || (i != 0 && i != 12 && isnan(v)))
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': bad value for %s: '%s'", name, key, val);
        int integral = i != 0 && i != 6 && i != 8 && i != 9 && i != 12;
        if (integral && (v != floor(v) || fabs(v) > 9.0e15))
            return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %s = %s is not an integer", name, key, val);
        switch (i) {
        case 0: s->centroids = u; break;
        case 1: s->nlist = (long long)v; break;
        case 2: s->d = (long long)v; break;
        case 3: s->p.quantizer = (FgmmQuantizer)(int)fmax(fmin(v, 1000), -1000); break;
        case 4: s->p.rule = (FgmmAssignRule)(int)fmax(fmin(v, 1000), -1000); break;
        case 5: s->p.primary = (FgmmPrimary)(int)fmax(fmin(v, 1000), -1000); break;
        case 6: s->p.tau = v; break;
        case 7: s->p.max_assign = (int)fmax(fmin(v, 1000), -1000); break;
        case 8: s->p.soar_lambda = fabs(v) <= FLT_MAX ? (float)v : (float)INFINITY; break; /* refused below */
        case 9: s->p.spill_target = v; break;
        case 10: s->p.select = (FgmmSpillSelect)(int)fmax(fmin(v, 1000), -1000); break;
        case 11: s->has_threshold = v != 0; break;
        case 12: s->threshold = v; break;
        case 13: s->vectors = (long long)v; break;
        case 14: s->entries = (long long)v; break;
        case 15: s->next_id = (long long)v; break;
        case 16: s->model = v != 0; break;
        }
        seen |= 1u << i;
    }
    if (!ended || seen != all) return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is truncated or lacks a setting", name);
    if (s->vectors < 0 || s->entries < s->vectors || s->next_id < 0 || isnan(s->threshold))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': inconsistent counts", name);
    if (fgmm_ivf_check_params(&s->p)) {
        char why[256]; /* copied: the message buffer cannot be formatted into itself */
        snprintf(why, sizeof why, "%s", fgmm_get_last_error());
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s': %s", name, why);
    }
    return FGMM_OK;
}

/* The model in gmm must be the one whose means the quantizer holds. */
static int read_model(FgmmIvf* h, const char* gmm) {
    FgmmModel* m = NULL;
    int rc = fgmm_model_read(gmm, &m);
    if (rc) return rc;
    if (fgmm_model_k(m) != h->nlist || fgmm_model_d(m) != h->d ||
        memcmp(fgmm_model_means(m), h->cent, (size_t)h->nlist * h->d * sizeof(float))) {
        fgmm_model_free(m);
        return fgmm_set_last_error(
            FGMM_ERR_IO, "'%s' does not belong to this index: its means are not the quantizer's centroids", gmm);
    }
    h->model = m;
    return FGMM_OK;
}

static int read_sidecars(FgmmIvf* h, const char* side, const char* gmm) {
    if (access(side, F_OK) != 0 && errno == ENOENT)
        /* no settings: a plain FAISS index, or one written before the settings file existed */
        return access(gmm, F_OK) == 0 ? read_model(h, gmm) : FGMM_OK;
    FILE* f;
    int64_t size;
    int rc = fgmm_open_input(side, &f, &size); /* a regular file: a FIFO is refused, not waited on */
    if (rc) return rc;
    settings s;
    memset(&s, 0, sizeof s);
    s.p.gmm = h->p.gmm;
    rc = parse_settings(f, side, &s);
    fclose(f);
    if (rc) return rc;
    if (!h->cent || s.nlist != h->nlist || s.d != h->d || s.centroids != centroid_sum(h) ||
        s.entries != faiss_Index_ntotal(h->index))
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' does not belong to this index (other centroids or entry count)",
                                   side);
    if (s.model && (rc = read_model(h, gmm))) return rc;
    if (!s.model && access(gmm, F_OK) == 0)
        return fgmm_set_last_error(FGMM_ERR_IO, "'%s' is stale: '%s' says the index has no model", gmm, side);
    h->p = s.p;
    h->has_threshold = s.has_threshold;
    h->threshold = s.threshold;
    h->n_vectors = s.vectors;
    h->n_entries = s.entries;
    h->next_id = s.next_id;
    return FGMM_OK;
}

int fgmm_ivf_read(const char* path, const FgmmIvfParams* params, FgmmIvf** out) {
    IVF_CHECK_NULL(out);
    *out = NULL;
    IVF_CHECK_NULL(path);
    struct stat sb; /* FAISS would wait on a FIFO for a writer */
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return fgmm_set_last_error(FGMM_ERR_IO, "fgmm_ivf_read: '%s' is not a regular file", path);
    FaissIndex* index = NULL;
    if (faiss_read_index_fname(path, 0, &index)) return fgmm_ivf_faiss_failed("fgmm_ivf_read");
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
