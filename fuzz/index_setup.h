/* SPDX-License-Identifier: MIT */
/* index_setup.h: what fuzz/fuzz_index.c and tests/test_ivf_io*.cpp (through tests/ivf_io_common.h:
 * IvfIo.FuzzRegressions, the three-file tests) share. The small spilled index: IVF4,Flat, d = 8, 64
 * vectors around 4 given means (installed with fgmm_ivf_set_gmm, not trained: the centroids, hence
 * the files in fuzz/corpus/index, are the same bytes on every build and thread count), the TOPM rule
 * with 2 lists per vector (128 entries), the CPU backend. How an input becomes files (fuzz_ivf_place)
 * and the oracle for an index read from one (fuzz_ivf_roundtrip). C and C++; its functions are
 * static: each translation unit that includes it gets its own copy. */
#ifndef FGMM_FUZZ_INDEX_SETUP_H
#define FGMM_FUZZ_INDEX_SETUP_H
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "flashgmm_io.h"
#include "flashgmm_ivf.h"
#include "ivf_impl.h"

enum { FUZZ_IVF_D = 8, FUZZ_IVF_NLIST = 4, FUZZ_IVF_N = 64 };

/* The rows the index holds (n x d, n <= FUZZ_IVF_N; also queries and rows to add). */
static void fuzz_ivf_rows(float* x, int n) {
    uint32_t s = 12345u;
    for (int i = 0; i < n * FUZZ_IVF_D; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f * 8.0f + (float)(i / FUZZ_IVF_D % FUZZ_IVF_NLIST) * 10.0f;
    }
}

/* Builds the index: *h owns *index's data only by pointer; free h, then index. 0 or an FgmmError. */
static int fuzz_ivf_build(FgmmIvf** h, FaissIndex** index) {
    float x[FUZZ_IVF_N * FUZZ_IVF_D], mu[FUZZ_IVF_NLIST * FUZZ_IVF_D], var[FUZZ_IVF_NLIST], w[FUZZ_IVF_NLIST];
    fuzz_ivf_rows(x, FUZZ_IVF_N);
    for (int j = 0; j < FUZZ_IVF_NLIST; j++) {
        for (int t = 0; t < FUZZ_IVF_D; t++) mu[j * FUZZ_IVF_D + t] = (float)j * 10.0f + 4.0f;
        var[j] = 1.0f, w[j] = 1.0f;
    }
    FgmmIvfParams p;
    fgmm_ivf_params_init(&p);
    p.rule = FGMM_ASSIGN_TOPM;
    p.max_assign = 2;
    p.gmm.backend = FGMM_BACKEND_CPU;
    FgmmModel* m = NULL;
    *h = NULL;
    *index = NULL;
    int rc = faiss_index_factory(index, FUZZ_IVF_D, "IVF4,Flat", METRIC_L2) ? FGMM_ERR_FAISS : FGMM_OK;
    if (!rc) rc = fgmm_model_new(&m, FUZZ_IVF_NLIST, FUZZ_IVF_D, FGMM_COV_ISOTROPIC, mu, var, w);
    if (!rc) rc = fgmm_ivf_wrap(*index, &p, h);
    if (!rc) rc = fgmm_ivf_set_gmm(*h, m, FUZZ_IVF_N, x);
    if (!rc) rc = fgmm_ivf_add(*h, FUZZ_IVF_N, x, NULL, NULL);
    fgmm_model_free(m);
    return rc;
}

/* The three-file set the versions before the one-file format wrote: the FAISS index at path,
 * path.gmm (if the handle has a model) and path.fgmm, whose text is the old writer's (an id or
 * count of 2^53 or more written exactly, as it was). 0 or -1. */
static int fuzz_ivf_write_three_files(const FgmmIvf* h, const char* path) {
    char f[4200];
    if (faiss_write_index_fname(h->index, path)) return -1;
    snprintf(f, sizeof f, "%s.gmm", path);
    remove(f);
    if (h->model && fgmm_model_write(h->model, f)) return -1;
    snprintf(f, sizeof f, "%s.fgmm", path);
    FILE* o = fopen(f, "w");
    if (!o) return -1;
    uint64_t sum = 1469598103934665603ull; /* FNV-1a over the centroids' bytes */
    const unsigned char* b = (const unsigned char*)h->cent;
    for (size_t i = 0; i < (size_t)h->nlist * h->d * sizeof(float); i++) sum = (sum ^ b[i]) * 1099511628211ull;
    const FgmmIvfParams* p = &h->p;
    fprintf(o, "flashgmm-ivf sidecar 1\n# Written by flashgmm-ivf beside a FAISS index file.\n");
    fprintf(o, "centroids = %016" PRIx64 "\nnlist = %d\nd = %d\n", sum, h->nlist, h->d);
    fprintf(o, "quantizer = %d\nrule = %d\nprimary = %d\ntau = %.17g\nmax_assign = %d\n", (int)p->quantizer,
            (int)p->rule, (int)p->primary, p->tau, p->max_assign);
    fprintf(o, "soar_lambda = %.9g\nspill_target = %.17g\nselect = %d\n", p->soar_lambda, p->spill_target,
            (int)p->select);
    fprintf(o, "has_threshold = %d\nthreshold = %.17g\n", h->has_threshold, h->has_threshold ? h->threshold : 0.0);
    fprintf(o, "vectors = %" PRId64 "\nentries = %" PRId64 "\nnext_id = %" PRId64 "\nmodel = %d\nend\n", h->n_vectors,
            h->n_entries, h->next_id, h->model != NULL);
    return fclose(o) ? -1 : 0;
}

/* Where inputs go: a one-file index and two three-file sets, in one directory. */
typedef struct FuzzIvfFiles {
    char index[480];    /* the one-file index (inputs 'i', 'I') */
    char settings[480]; /* a FAISS file + .gmm; inputs 'f' become its .fgmm */
    char model[480];    /* a FAISS file + .fgmm; inputs 'g' become its .gmm */
    char out[2][480];   /* fuzz_ivf_roundtrip's files */
    uint8_t* faiss;     /* the FAISS section of the index as written (FAISS's reader is not hardened) */
    int64_t faiss_len;
} FuzzIvfFiles;

static int fuzz_ivf_setup(const char* dir, FuzzIvfFiles* F) {
    memset(F, 0, sizeof *F);
    snprintf(F->index, sizeof F->index, "%s/index.fgmmivf", dir);
    snprintf(F->settings, sizeof F->settings, "%s/settings.faiss", dir);
    snprintf(F->model, sizeof F->model, "%s/model.faiss", dir);
    for (int i = 0; i < 2; i++) snprintf(F->out[i], sizeof F->out[i], "%s/out%d.fgmmivf", dir, i);
    FgmmIvf* h;
    FaissIndex* index;
    int rc = fuzz_ivf_build(&h, &index);
    if (!rc) rc = fgmm_ivf_write(h, F->index);
    if (!rc && (fuzz_ivf_write_three_files(h, F->settings) || fuzz_ivf_write_three_files(h, F->model)))
        rc = FGMM_ERR_IO;
    fgmm_ivf_free(h);
    if (index) faiss_Index_free(index);
    FILE* f = NULL;
    int64_t size;
    FgmmIvfLayout L;
    if (!rc) rc = fgmm_open_input(F->index, &f, &size);
    if (!rc) rc = fgmm_ivf_layout(f, size, F->index, &L);
    if (!rc) {
        F->faiss_len = L.len[0];
        F->faiss = (uint8_t*)malloc((size_t)L.len[0]);
        if (!F->faiss || fseek(f, (long)L.off[0], SEEK_SET) ||
            fread(F->faiss, 1, (size_t)L.len[0], f) != (size_t)L.len[0])
            rc = FGMM_ERR_IO;
    }
    if (f) fclose(f);
    return rc;
}

static void fuzz_ivf_teardown(FuzzIvfFiles* F) {
    const char* base[] = {F->index, F->settings, F->model, F->out[0], F->out[1]};
    char f[600];
    for (int i = 0; i < 5; i++) {
        remove(base[i]);
        snprintf(f, sizeof f, "%s.fgmm", base[i]), remove(f);
        snprintf(f, sizeof f, "%s.gmm", base[i]), remove(f);
    }
    free(F->faiss);
    F->faiss = NULL;
}

/* CRC-32 (zlib's), bitwise: the harness's own, to recompute checksums. */
static uint32_t fuzz_crc32(const uint8_t* p, size_t n) {
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static uint64_t fuzz_le64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void fuzz_put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}

/* Recomputes the checksums of an index file's bytes (docs/FORMAT.md: the section table at 16, 24
 * bytes per section: tag, CRC-32, offset, length; 3 sections in version 1, 4 in version 2; the
 * header's CRC-32 after the table) where the table's sections lie within b: the fuzzer then reaches
 * the checks behind the checksums. */
static void fuzz_ivf_fix_checksums(uint8_t* b, size_t n) {
    int nsec = n >= 12 && b[8] == 2 ? 4 : 3;
    size_t crc_at = 16 + 24 * (size_t)nsec;
    if (n < crc_at + 4) return;
    for (int s = 0; s < nsec; s++) {
        uint8_t* e = b + 16 + 24 * s;
        uint64_t off = fuzz_le64(e + 8), len = fuzz_le64(e + 16);
        if (off <= n && len <= n - off) fuzz_put_le32(e + 4, fuzz_crc32(b + off, (size_t)len));
    }
    fuzz_put_le32(b + crc_at, fuzz_crc32(b, crc_at));
}

static int fuzz_spit(const char* path, const uint8_t* data, size_t size) {
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Writes an input where its first byte says: 'f': the .fgmm of F->settings, 'g': the .gmm of
 * F->model (three-file sets), 'I': the one-file index with its checksums recomputed, anything else:
 * the one-file index as given. Returns the path to read, or NULL to skip the input: empty, or one
 * that FAISS's reader (FAISS's, not hardened) would parse: a file that does not start with "FGMM"
 * (read as a plain FAISS file) or a one-file index whose FAISS section is not the one written. */
static const char* fuzz_ivf_place(FuzzIvfFiles* F, const uint8_t* data, size_t size) {
    if (size < 1) return NULL;
    char side[600];
    if (data[0] == 'f' || data[0] == 'g') {
        const char* base = data[0] == 'f' ? F->settings : F->model;
        snprintf(side, sizeof side, "%s%s", base, data[0] == 'f' ? ".fgmm" : ".gmm");
        return fuzz_spit(side, data + 1, size - 1) ? NULL : base;
    }
    if (size - 1 >= 4 && memcmp(data + 1, "FGMM", 4)) return NULL;
    uint8_t* b = (uint8_t*)malloc(size);
    if (!b) return NULL;
    memcpy(b, data + 1, size - 1);
    if (data[0] == 'I') fuzz_ivf_fix_checksums(b, size - 1);
    int rc = fuzz_spit(F->index, b, size - 1);
    free(b);
    FILE* f = NULL;
    int64_t fsize;
    FgmmIvfLayout L;
    if (rc || fgmm_open_input(F->index, &f, &fsize)) return NULL;
    int skip = 0;
    if (fgmm_ivf_layout(f, fsize, F->index, &L) == 0) { /* FAISS would parse this section */
        skip = L.len[0] != F->faiss_len;
        uint8_t buf[4096];
        for (int64_t at = 0; !skip && at < L.len[0]; at += (int64_t)sizeof buf) {
            size_t n = L.len[0] - at < (int64_t)sizeof buf ? (size_t)(L.len[0] - at) : sizeof buf;
            skip =
                fseek(f, (long)(L.off[0] + at), SEEK_SET) || fread(buf, 1, n, f) != n || memcmp(buf, F->faiss + at, n);
        }
    }
    fclose(f);
    return skip ? NULL : F->index;
}

/* The oracle for an index h read from any file: it searches; written, it reads back, and the copy
 * searches alike and writes the same bytes; the same after adding rows. NULL, or what failed. */
static const char* fuzz_ivf_roundtrip(FgmmIvf* h, FuzzIvfFiles* F) {
    enum { NQ = 4, K = 3 };
    float q[NQ * FUZZ_IVF_D], d1[NQ * K], d2[NQ * K];
    idx_t l1[NQ * K], l2[NQ * K], ids[NQ] = {1000, 1001, 1002, 1003};
    fuzz_ivf_rows(q, NQ);
    for (int round = 0; round < 2; round++) {
        if (fgmm_ivf_search(h, NQ, q, K, 2, d1, l1, NULL)) return "search";
        FgmmIvf* r = NULL;
        if (fgmm_ivf_write(h, F->out[0])) return "write";
        if (fgmm_ivf_read(F->out[0], NULL, &r)) return "read back";
        const char* bad = NULL;
        if (fgmm_ivf_search(r, NQ, q, K, 2, d2, l2, NULL)) bad = "search the copy";
        else if (memcmp(l1, l2, sizeof l1) || memcmp(d1, d2, sizeof d1)) bad = "the copy searches differently";
        else if (fgmm_ivf_write(r, F->out[1])) bad = "write the copy";
        fgmm_ivf_free(r);
        if (bad) return bad;
        FILE* a = fopen(F->out[0], "rb");
        FILE* b = fopen(F->out[1], "rb");
        int same = a && b;
        while (same) {
            int ca = fgetc(a), cb = fgetc(b);
            same = ca == cb;
            if (ca == EOF) break;
        }
        if (a) fclose(a);
        if (b) fclose(b);
        if (!same) return "the copy writes other bytes";
        /* a refine copy numbers its vectors in add order: no ids of the caller's */
        if (round == 0 && fgmm_ivf_add(h, NQ, q, h->refine_on ? NULL : ids, NULL)) return "add";
    }
    return NULL;
}
#endif
