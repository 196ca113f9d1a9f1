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
 * through the fgmm_comm below; src/comm_gpu_engine.c) and only the log-likelihood goes over MPI;
 * otherwise, or with FGMM_COMM_SUM=host, the statistics are downloaded and summed over MPI like the
 * CPU ranks' (a few MB per pass).
 *
 * Errors: every collective first agrees on the ranks' outcomes (one MPI_Allreduce of a flag), so a
 * failure on one rank (an unreadable shard, NaN rows) makes every rank exit 1 with a message; a
 * failure that no collective saw ends the job with MPI_Abort rather than leave the others waiting.
 * MPI's own errors are fatal (MPI_ERRORS_ARE_FATAL, the default).
 */
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
    if (!all_ok(c, rc, in)) return 1;
    long long mine[3] = {n, d, t}, lo[3], hi[3];
    MPI_Allreduce(mine, lo, 3, MPI_LONG_LONG, MPI_MIN, world(c));
    MPI_Allreduce(mine, hi, 3, MPI_LONG_LONG, MPI_MAX, world(c));
    if (memcmp(lo, hi, sizeof lo)) {
        if (c->rank == 0)
            fprintf(stderr, "%s: the processes see different files at '%s' (rows %lld to %lld, dims %lld to %lld)\n",
                    fgmm_cli_prog, in, lo[0], hi[0], lo[1], hi[1]);
        return 1;
    }
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

static int run(int argc, char** argv, fgmm_comm* c) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        if (c->rank == 0) usage(stdout);
        return 0;
    }
    fgmm_cli_quiet = c->rank != 0; /* every rank parses the same words: one rank says what is wrong */
    fgmm_cli_args a;
    if (argc < 3 || strcmp(argv[1], "train")) {
        if (c->rank == 0) usage(stderr);
        return 2;
    }
    const char* in = argv[2];
    int rc = fgmm_cli_parse(argc, argv, 3, "train", &a);
    if (rc) {
        if (c->rank == 0) usage(stderr);
        return rc;
    }
    fgmm_cli_quiet = 0;
    int out_rc = c->rank == 0 && a.out ? fgmm_cli_check_out(in, a.out) : 0;
    MPI_Bcast(&out_rc, 1, MPI_INT, 0, world(c));
    if (out_rc) return out_rc;
    fgmm_idx_t* row0 = malloc(((size_t)c->size + 1) * sizeof *row0);
    FgmmVecs x = {0};
    rc = row0 ? FGMM_OK : fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (!all_ok(c, rc, "start") || read_shard(c, in, &a, row0, &x)) {
        free(row0);
        return 1;
    }
    a.p.gpu_device = local_rank();
    if (c->rank == 0) a.p.progress = fgmm_cli_progress;
    FgmmModel* m = NULL;
    FgmmTrainInfo info;
    rc = fgmm_train_comm(&a.p, x.n, x.d, x.dtype, x.data, c, &m, &info);
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
    fgmm_cli_prog = "flashgmm-mpi";
    int rc = run(argc, argv, &c);
    fflush(stdout);
    MPI_Finalize();
    return rc;
}
