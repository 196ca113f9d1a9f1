/* SPDX-License-Identifier: MIT */
/* flashgmm_mpi.c: `flashgmm-mpi train FILE [options]`, GMM training over several MPI processes.
 *
 * One process per CPU engine or per GPU. With N rows to train on (the file's, or --max-rows) and P
 * processes, rank r reads rows [floor(r N / P), floor((r + 1) N / P)) of the file itself
 * (fgmm_vecs_read_rows: no rank holds the whole data) and runs the library's EM driver
 * (fgmm_train_comm) on them. The driver sums each pass's statistics (N_k, sum r x, the second
 * moments, the log-likelihood: O(k d) doubles) over the ranks through the fgmm_comm below, so every
 * rank takes the same M-step; rank 0's k-means++ seeds and re-seeding picks are broadcast. The
 * result equals the one-process model up to the order of those sums. Only rank 0 prints progress
 * and writes the model.
 *
 * GPU ranks (--backend gpu, or auto where a GPU exists): a rank uses the device numbered by its rank
 * among the processes of its host. Where every rank loads libnccl.so.2, the driver's engine sums N_k,
 * sum r x and the second moments on the GPUs with NCCL (rank 0's ncclUniqueId broadcast over MPI
 * through the fgmm_comm below; src/gpu/comm_gpu_engine.c) and only the log-likelihood goes over MPI;
 * otherwise, or with FGMM_COMM_SUM=host, the statistics are downloaded and summed over MPI like the
 * CPU ranks' (a few MB per pass).
 *
 * Errors: every collective first agrees on the ranks' outcomes (one MPI_Allreduce of a flag), so a
 * failure on one rank (an unreadable shard, NaN rows) makes every rank exit 1 with a message; a
 * failure that no collective saw ends the job with MPI_Abort rather than leave the others waiting.
 * MPI's own errors are fatal (MPI_ERRORS_ARE_FATAL, the default).
 *
 * Agreement before any exchange of data: each rank parses its own command line (mpirun may give
 * ranks different ones), then the ranks exchange their parse outcomes (a failure on any rank ends
 * every rank, the failing one saying why), a digest of the parsed options (a different --k, --cov
 * or --seed would make the collectives' sizes differ: truncated messages or a corrupted heap), and
 * the file's shape and identity (size and a hash of its first and last 64 KiB: a different file
 * of the same shape on one host).
 */
#define _POSIX_C_SOURCE 200809L /* fseeko */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "flashgmm.h"
#include "flashgmm_io.h"
#include "internal.h"

/* MPI counts are ints: larger buffers move in pieces of this many bytes. */
#define PIECE_BYTES ((size_t)1 << 30)

static MPI_Comm world(const fgmm_comm* c) { return *(const MPI_Comm*)c->impl; }

/* The agreement every collective begins with (the same call in each, so a rank that failed may
 * report through any of them). */
static int agree(fgmm_comm* c, int status) {
    int bad = status != 0, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, world(c));
    if (!any) return FGMM_OK;
    c->agreed = 1;
    return status ? status : fgmm_fail(FGMM_ERR_STATE, "another process failed (see its message)");
}

static void bcast_bytes(MPI_Comm w, void* buf, size_t bytes, int root) {
    for (size_t off = 0; off < bytes; off += PIECE_BYTES) {
        size_t b = bytes - off < PIECE_BYTES ? bytes - off : PIECE_BYTES;
        MPI_Bcast((char*)buf + off, (int)b, MPI_BYTE, root, w);
    }
}

/* A reduction to rank 0 and a broadcast, not MPI_Allreduce: MPI does not promise every rank the
 * same bits from an all-reduce, and the ranks' decisions (empty components, convergence) must
 * agree. */
static int mpi_sum(fgmm_comm* c, double* v, size_t n, int status) {
    int rc = agree(c, status);
    if (rc) return rc;
    const size_t piece = PIECE_BYTES / sizeof(double);
    for (size_t off = 0; off < n; off += piece) {
        int cnt = (int)(n - off < piece ? n - off : piece);
        MPI_Reduce(c->rank == 0 ? MPI_IN_PLACE : v + off, v + off, cnt, MPI_DOUBLE, MPI_SUM, 0, world(c));
    }
    bcast_bytes(world(c), v, n * sizeof(double), 0);
    return FGMM_OK;
}

static int mpi_gather(fgmm_comm* c, const void* mine, void* all, const size_t* bytes, int status) {
    int rc = agree(c, status);
    if (rc) return rc;
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        char* at = (char*)all + off;
        if (r == c->rank && at != (const char*)mine) memmove(at, mine, bytes[r]);
        bcast_bytes(world(c), at, bytes[r], r);
        off += bytes[r];
    }
    return FGMM_OK;
}

static int mpi_bcast(fgmm_comm* c, void* buf, size_t bytes, int status) {
    int rc = agree(c, status);
    if (rc) return rc;
    bcast_bytes(world(c), buf, bytes, 0);
    return FGMM_OK;
}

static void usage(FILE* f) {
    fprintf(f,
            "usage: mpirun -np P flashgmm-mpi train FILE [options]\n"
            "  one process per CPU engine or GPU; rank r trains on rows [r N / P, (r + 1) N / P)\n"
            "%s"
            "FILE: .fvecs, .bvecs, .ivecs, .h5/.hdf5, readable by every rank at the same path\n",
            fgmm_cli_train_usage);
}

/* FNV-1a over n bytes, continuing from h. */
static uint64_t fnv(uint64_t h, const void* p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char*)p)[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_START 0xcbf29ce484222325ull
static uint64_t fnv_str(uint64_t h, const char* s) { return s ? fnv(h, s, strlen(s) + 1) : fnv(h, "", 1) ^ 1; }

/* A digest of every parsed option that the training depends on (not --out: rank 0 writes; not the
 * path: the file's identity is compared on its own). */
static uint64_t options_digest(const fgmm_cli_args* a) {
    const FgmmParams* p = &a->p;
    long long iv[] = {p->k,
                      p->covariance,
                      p->niter,
                      p->kmeans_iter,
                      (long long)p->max_init_points,
                      (long long)p->seed,
                      p->backend,
                      p->precision,
                      (long long)p->gpu_mem_limit,
                      p->n_gpus,
                      (long long)a->max_rows};
    double dv[] = {p->tol, p->var_floor, p->min_count};
    uint64_t h = fnv(FNV_START, iv, sizeof iv);
    h = fnv(h, dv, sizeof dv);
    return fnv_str(h, a->dataset);
}

/* Bytes hashed at each end of the file. */
#define ID_BYTES ((int64_t)64 << 10)

/* The file's size and a hash of its first and last ID_BYTES (a bounded read). */
static int file_identity(const char* path, int64_t* size, uint64_t* digest) {
    FILE* f;
    int rc = fgmm_open_input(path, &f, size);
    if (rc) return rc;
    unsigned char* buf = malloc((size_t)ID_BYTES);
    uint64_t h = fnv(FNV_START, size, sizeof *size);
    for (int end = 0; buf && !rc && end < 2; end++) {
        int64_t at = end ? *size - ID_BYTES : 0;
        if (end && *size <= ID_BYTES) break; /* the first read covered it all */
        size_t want = (size_t)(*size < ID_BYTES ? *size : ID_BYTES);
        if (fseeko(f, (off_t)(at > 0 ? at : 0), SEEK_SET) || fread(buf, 1, want, f) != want)
            rc = fgmm_fail(FGMM_ERR_IO, "'%s': cannot read it to identify it", path);
        else h = fnv(h, buf, want);
    }
    if (!buf) rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    free(buf);
    fclose(f);
    *digest = h;
    return rc;
}

/* Every rank's status agreed on (outside training); the failing rank prints its message. */
static int all_ok(fgmm_comm* c, int status, const char* what) {
    if (status) fprintf(stderr, "%s: rank %d: %s: %s\n", fgmm_cli_prog, c->rank, what, fgmm_get_last_error());
    return agree(c, status) == FGMM_OK;
}

/* This rank's shard of the file: the same shape on every rank, then rows [row0[rank], row0[rank + 1]). */
static int read_shard(fgmm_comm* c, const char* in, const fgmm_cli_args* a, fgmm_idx_t* row0, FgmmVecs* x) {
    FgmmVecs s;
    int rc = fgmm_cli_read(a, in, 0, 0, 1, &s);
    fgmm_idx_t n = s.n;
    int d = s.d;
    FgmmDtype t = s.dtype;
    int64_t size = 0;
    uint64_t digest = 0;
    if (!rc) rc = file_identity(in, &size, &digest);
    if (!all_ok(c, rc, in)) return 1;
    long long mine[5] = {n, d, t, size, (long long)digest}, *all = malloc((size_t)c->size * sizeof mine);
    if (!all) MPI_Abort(MPI_COMM_WORLD, 1); /* P x 40 bytes */
    MPI_Allgather(mine, 5, MPI_LONG_LONG, all, 5, MPI_LONG_LONG, world(c));
    int differ = 0;
    for (int r = 1; r < c->size; r++)
        if (memcmp(all + 5 * r, all, sizeof mine)) {
            if (c->rank == 0)
                fprintf(stderr,
                        "%s: the processes see different files at '%s': rank %d's has %lld x %lld values of "
                        "type %lld, %lld bytes, digest %016llx; rank 0's %lld x %lld, type %lld, %lld bytes, digest "
                        "%016llx\n",
                        fgmm_cli_prog, in, r, all[5 * r], all[5 * r + 1], all[5 * r + 2], all[5 * r + 3],
                        (unsigned long long)all[5 * r + 4], all[0], all[1], all[2], all[3], (unsigned long long)all[4]);
            differ = 1;
        }
    free(all);
    if (differ) return 1;
    if (a->max_rows && a->max_rows < n) n = a->max_rows;
    if (n < c->size) {
        if (c->rank == 0)
            fprintf(stderr, "%s: %lld rows for %d processes; each needs at least one\n", fgmm_cli_prog, (long long)n,
                    c->size);
        return 1;
    }
    for (int r = 0; r <= c->size; r++) /* floor(n r / P) without overflow: n = q P + m */
        row0[r] = (n / c->size) * r + (n % c->size) * r / c->size;
    c->n_total = n;
    c->row0 = row0;
    rc = fgmm_cli_read(a, in, row0[c->rank], row0[c->rank + 1] - row0[c->rank], 0, x);
    if (!rc && x->n != row0[c->rank + 1] - row0[c->rank])
        rc = fgmm_fail(FGMM_ERR_IO, "'%s': read %lld rows from row %lld, want %lld (the file changed?)", in,
                       (long long)x->n, (long long)row0[c->rank], (long long)(row0[c->rank + 1] - row0[c->rank]));
    if (!all_ok(c, rc, in)) return 1;
    if (c->rank == 0) {
        fgmm_cli_print_data(in, n, d, t, &a->p);
        printf("%d processes, rows split as rank r: [r N / P, (r + 1) N / P)\n", c->size);
    }
    return 0;
}

/* Its rank among the processes of its host: the GPU it uses. */
static int local_rank(void) {
    MPI_Comm node;
    int r = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &r);
    MPI_Comm_free(&node);
    return r;
}

/* Each rank parses its own words; the outcomes and a digest of the options are compared on every rank
 * before anything else is exchanged. Returns 1 where every rank stops (*status: the exit status). */
static int parse_all(fgmm_comm* c, int argc, char** argv, fgmm_cli_args* a, int* status) {
    enum { OK = 0, BAD = 2, HELP = 3 };
    int help = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
    int cmd_ok = argc >= 3 && !strcmp(argv[1], "train");
    fgmm_cli_quiet = c->rank != 0; /* mostly every rank has the same words: rank 0 says what is wrong */
    int st = help ? HELP : !cmd_ok ? BAD : fgmm_cli_parse(argc, argv, 3, "train", a) ? BAD : OK;
    fgmm_cli_quiet = 0;
    long long mine[2] = {st, st ? 0 : (long long)options_digest(a)}, *all = malloc((size_t)c->size * sizeof mine);
    if (!all) MPI_Abort(MPI_COMM_WORLD, 1); /* P x 16 bytes */
    MPI_Allgather(mine, 2, MPI_LONG_LONG, all, 2, MPI_LONG_LONG, world(c));
    int helps = 0, bad = 0, differ = 0;
    for (int r = 0; r < c->size; r++) {
        helps += all[2 * r] == HELP;
        bad += all[2 * r] == BAD;
        differ += all[2 * r] == OK && all[0] == OK && all[2 * r + 1] != all[1];
    }
    const int rank0_ok = all[0] == OK, mine_differs = st == OK && rank0_ok && mine[1] != all[1];
    free(all);
    *status = 2;
    if (helps == c->size) {
        if (c->rank == 0) usage(stdout);
        return *status = 0, 1;
    }
    if (!bad && !helps && !differ) return 0;
    if (c->rank == 0 && (bad || helps)) usage(stderr);
    if (st == BAD && c->rank != 0 && rank0_ok) { /* rank 0 printed nothing: this rank says what is wrong */
        fprintf(stderr, "%s: rank %d: its command line is refused%s\n", fgmm_cli_prog, c->rank,
                cmd_ok ? ":" : " (want 'train FILE [options]')");
        if (cmd_ok) fgmm_cli_parse(argc, argv, 3, "train", a); /* again, aloud */
    }
    if (st == HELP && helps < c->size)
        fprintf(stderr, "%s: rank %d: --help on some ranks only\n", fgmm_cli_prog, c->rank);
    if (differ && c->rank == 0)
        fprintf(stderr,
                "%s: the processes parsed different options (%d of %d ranks differ from rank 0); give every "
                "rank the same options\n",
                fgmm_cli_prog, differ, c->size);
    if (mine_differs) fprintf(stderr, "%s: rank %d: its options differ from rank 0's\n", fgmm_cli_prog, c->rank);
    return 1;
}

static int run(int argc, char** argv, fgmm_comm* c) {
    fgmm_cli_args a;
    int rc;
    if (parse_all(c, argc, argv, &a, &rc)) return rc;
    const char* in = argv[2];
    int out_rc = c->rank == 0 && a.out ? fgmm_cli_check_out(in, a.out) : 0;
    MPI_Bcast(&out_rc, 1, MPI_INT, 0, world(c));
    if (out_rc) return out_rc;
    fgmm_idx_t* row0 = malloc(((size_t)c->size + 1) * sizeof *row0);
    FgmmVecs x = {0};
    rc = row0 ? FGMM_OK : fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    a.p.gpu_device = local_rank();
    fgmm_cli_prestart(&a.p);
    if (!all_ok(c, rc, "start") || read_shard(c, in, &a, row0, &x)) {
        free(row0);
        return 1;
    }
    if (c->rank == 0) fgmm_cli_progress_begin(&a, 1);
    FgmmModel* m = NULL;
    FgmmTrainInfo info;
    rc = fgmm_train_comm(&a.p, x.n, x.d, x.dtype, x.data, c, &m, &info);
    if (c->rank == 0) fgmm_cli_progress_end();
    fgmm_vecs_free(&x);
    free(row0);
    if (rc) {
        fprintf(stderr, "%s: rank %d: train: %s\n", fgmm_cli_prog, c->rank, fgmm_get_last_error());
        if (!c->agreed) MPI_Abort(MPI_COMM_WORLD, 1); /* the others may wait in a collective */
        return 1;
    }
    if (c->rank == 0) {
        fgmm_cli_print_done(&info);
        if (a.out && fgmm_model_write(m, a.out)) rc = fgmm_cli_fail(a.out);
        else if (a.out) printf("model written to %s\n", a.out);
    }
    fgmm_model_free(m);
    return rc;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm w = MPI_COMM_WORLD;
    fgmm_comm c = {0};
    MPI_Comm_rank(w, &c.rank);
    MPI_Comm_size(w, &c.size);
    c.sum = mpi_sum;
    c.gather = mpi_gather;
    c.bcast = mpi_bcast;
    c.impl = &w;
    const char* cs = getenv("FGMM_COMM_SUM"); /* "host": no NCCL (e.g. two ranks on one GPU) */
    c.host_sum = cs && !strcmp(cs, "host");
    fgmm_cli_prog = "flashgmm-mpi";
    int rc = run(argc, argv, &c);
    fflush(stdout);
    MPI_Finalize();
    return rc;
}
