/* SPDX-License-Identifier: MIT */
/* comm_gpu_engine.c: the engine of a GPU rank of fgmm_train_comm ("gpu-nccl-comm"): this rank's
 * single-GPU engine, whose statistics are summed over the comm's ranks on the device with NCCL.
 *
 * The communicator: rank 0's ncclGetUniqueId goes to every rank through the comm's bcast (the library
 * never links MPI), then each rank calls ncclCommInitRank on its engine's device. A pass (E-step or
 * k-means): the engine's begin leaves N_k, sum r x and the second moments on the device; the ranks
 * gather their outcomes and the statistics' layout; where all succeeded with one layout the statistics
 * are all-reduced in place on the engine's stream and every rank downloads its copy (NCCL sends each
 * sum to every rank unchanged: the ranks get the same bits). Where the layouts differ (ranks on
 * different E-step paths: resident or streamed rows, sm_90 or not) the downloaded statistics are
 * summed through the comm's sum instead. Either way estep and kmeans return the statistics of all
 * ranks, and obj of this rank alone (the driver sums it: sums_ranks).
 *
 * Failures: before each NCCL call that waits for the other ranks (ncclCommInitRank, the all-reduce)
 * the ranks agree on their outcomes through the comm, so a rank that failed before it does not leave
 * the others waiting in NCCL; after an agreed failure the communicator is aborted, not destroyed.
 * Not covered: a failure inside ncclCommInitRank that NCCL reports on some ranks only (the others may
 * wait in it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_api.h"

typedef struct comm_impl {
    fgmm_engine* gpu; /* this rank's single-GPU engine */
    fgmm_comm* comm;
    fgmm_nccl nccl;
    ncclComm_t nc;
    uint64_t* layouts; /* size x 3: each rank's pending n_nk, n_s1, n_s2 */
    size_t* bytes;     /* size entries: one rank's layout */
} comm_impl;

/* Frees what the engine adds to the GPU engine (ci->gpu is the caller's). */
static void release(comm_impl* ci) {
    if (!ci) return;
    /* after a success every rank destroys its communicator; after an agreed failure none waits */
    if (ci->nc) (ci->comm->agreed ? ci->nccl.comm_abort : ci->nccl.comm_destroy)(ci->nc);
    fgmm_nccl_unload(&ci->nccl);
    free(ci->layouts);
    free(ci->bytes);
    free(ci);
}

/* After this rank's begin (status its outcome): the pass's statistics summed over the ranks into out,
 * obj this rank's. The pending state is cleared, also on failure. */
static int sum_pass(comm_impl* ci, int status, fgmm_stats* out) {
    fgmm_comm* c = ci->comm;
    fgmm_gpu_pending_view v = {0};
    if (!status) status = fgmm_gpu_pending(ci->gpu, &v);
    uint64_t* mine = ci->layouts + (size_t)3 * c->rank;
    mine[0] = v.n_nk, mine[1] = v.n_s1, mine[2] = v.n_s2;
    int rc = c->gather(c, mine, ci->layouts, ci->bytes, status), same = 1;
    for (int r = 0; r < c->size && !rc; r++) same &= !memcmp(ci->layouts + (size_t)3 * r, mine, 3 * sizeof *mine);
    if (!rc && same) {
        /* every rank enqueued its all-reduces, or none waits for them */
        if ((rc = c->sum(c, NULL, 0, fgmm_nccl_sum_pending(&ci->nccl, &v, &ci->nc, 1)))) {
            ci->nccl.comm_abort(ci->nc);
            ci->nc = NULL;
        }
        if (!rc && !(rc = fgmm_gpu_finish(ci->gpu, out))) c->device_sums++;
    } else if (!rc) {
        rc = fgmm_gpu_finish(ci->gpu, out);
        rc = c->sum(c, out->nk, fgmm_stats_len(out), rc);
    }
    fgmm_gpu_discard(ci->gpu);
    return rc;
}

static int cg_estep(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out) {
    comm_impl* ci = e->impl;
    return sum_pass(ci, fgmm_gpu_estep_begin(ci->gpu, x, m), out);
}

static int cg_kmeans(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, fgmm_stats* out) {
    comm_impl* ci = e->impl;
    return sum_pass(ci, fgmm_gpu_kmeans_begin(ci->gpu, x, cent, k), out);
}

static int cg_assign(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels, float* resp,
                     float* loglik) {
    fgmm_engine* g = ((comm_impl*)e->impl)->gpu;
    return g->ops->assign(g, x, m, topm, labels, resp, loglik);
}

static int cg_seed_pp(fgmm_engine* e, const float* rows, fgmm_idx_t ns, int d, int k, fgmm_idx_t first, const double* u,
                      fgmm_idx_t* picks, int* found) {
    fgmm_engine* g = ((comm_impl*)e->impl)->gpu;
    return g->ops->seed_pp(g, rows, ns, d, k, first, u, picks, found);
}

static int cg_set_scan(fgmm_engine* e, const fgmm_data* x, const double* mean) {
    fgmm_engine* g = ((comm_impl*)e->impl)->gpu;
    return g->ops->set_scan(g, x, mean);
}

static void cg_destroy(fgmm_engine* e) {
    if (!e) return;
    comm_impl* ci = e->impl;
    fgmm_engine* gpu = ci->gpu;
    release(ci); /* the communicator first: its operations use the engine's buffers */
    fgmm_engine_destroy(gpu);
    free(e);
}

/* no device EM iteration: the statistics of every pass are summed over the ranks first */
static const fgmm_engine_ops comm_ops = {"gpu-nccl-comm", cg_estep,    cg_kmeans, cg_assign, cg_destroy, NULL, NULL,
                                         cg_seed_pp,      cg_set_scan, NULL};

int fgmm_engine_comm_wrap(fgmm_engine** e, fgmm_comm* c, int status) {
    const int dev = status ? -1 : fgmm_engine_gpu_device(*e);
    int can = dev >= 0 && !c->host_sum;
    fgmm_engine* w = NULL;
    comm_impl* ci = NULL;
    if (can) {
        w = calloc(1, sizeof *w);
        ci = calloc(1, sizeof *ci);
        if (ci) {
            ci->comm = c;
            ci->layouts = calloc((size_t)3 * c->size, sizeof *ci->layouts);
            ci->bytes = malloc((size_t)c->size * sizeof *ci->bytes);
        }
        if (!w || !ci || !ci->layouts || !ci->bytes) status = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
        else can = fgmm_nccl_load(&ci->nccl, "fgmm_train_comm") == FGMM_OK; /* else: summed on the host */
    }
    /* every rank's engine, and whether all can sum with NCCL */
    double ready = can && !status;
    int rc = c->sum(c, &ready, 1, status);
    if (!rc && ready == c->size) {
        /* every rank on its device with rank 0's id; then every rank's communicator */
        ncclUniqueId id;
        memset(&id, 0, sizeof id);
        cudaError_t ce = cudaSetDevice(dev);
        int st = ce ? fgmm_fail(FGMM_ERR_CUDA, "GPU: cudaSetDevice(%d): %s", dev, cudaGetErrorString(ce)) : FGMM_OK;
        ncclResult_t nr = st || c->rank ? ncclSuccess : ci->nccl.get_unique_id(&id);
        if (nr != ncclSuccess) st = fgmm_nccl_fail(&ci->nccl, nr, "ncclGetUniqueId");
        if (!(rc = c->bcast(c, &id, sizeof id, st))) {
            nr = ci->nccl.comm_init_rank(&ci->nc, c->size, id, c->rank);
            if (nr != ncclSuccess)
                st = fgmm_fail(FGMM_ERR_CUDA, "ncclCommInitRank: %s (FGMM_COMM_SUM=host: the ranks sum on the host)",
                               ci->nccl.error_string(nr));
            rc = c->sum(c, NULL, 0, st);
        }
    }
    if (rc || ready < c->size) {
        release(ci);
        free(w);
        return rc;
    }
    for (int r = 0; r < c->size; r++) ci->bytes[r] = 3 * sizeof *ci->layouts;
    ci->gpu = *e;
    w->ops = &comm_ops;
    w->precision = ci->gpu->precision;
    w->sums_ranks = 1;
    w->impl = ci;
    *e = w;
    return FGMM_OK;
}
