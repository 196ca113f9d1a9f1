/* SPDX-License-Identifier: MIT */
/* multi_gpu_engine.c: data-parallel EM over several GPUs driven by one process.
 *
 * Rank r holds rows [n*r/R, n*(r+1)/R) (copied to, or streamed through, its own GPU) and
 * computes the E-step (or k-means) statistics there with the single-GPU engine. The
 * statistics (N_k, sum r x, sum r ||x - mu||^2: O(k d) doubles) are then summed in place on
 * every GPU with one NCCL all-reduce per buffer, rank 0's copy is downloaded, and the
 * log-likelihood parts are added in rank order. The M-step is the host's, as for one GPU.
 * NCCL is loaded at run time (nccl_api.c), so builds and machines without it still work.
 * Several processes (tools/flashgmm_mpi.c, one per GPU): comm_gpu_engine.c runs the same all-reduce
 * over an NCCL communicator across the processes (ncclCommInitRank after rank 0's ncclUniqueId is
 * broadcast through the fgmm_comm).
 */
#include <stdlib.h>

#include "nccl_api.h"

#define MAX_RANKS 64

typedef struct multi_impl {
    int nr;
    const void* scan_x; /* the whole data every rank's centring and prescale come from */
    fgmm_idx_t scan_n;
    int scan_d;
    fgmm_engine* rank[MAX_RANKS];
    ncclComm_t comm[MAX_RANKS];
    fgmm_nccl nccl;
} multi_impl;

static fgmm_data shard(const fgmm_data* x, int r, int nr) {
    fgmm_idx_t a = x->n * r / nr, b = x->n * (r + 1) / nr;
    size_t row = (size_t)x->d * fgmm_dtype_size(x->dtype);
    return (fgmm_data){(const char*)x->x + (size_t)a * row, b - a, x->d, x->dtype};
}

static int check_rows(const multi_impl* mi, const fgmm_data* x) {
    if (x->n < mi->nr) return fgmm_fail(FGMM_ERR_ARG, "n_gpus = %d but only %lld rows", mi->nr, (long long)x->n);
    return FGMM_OK;
}

/* After every rank's begin: all-reduce the statistics, download rank 0's copy into out, add the
 * other ranks' log-likelihood parts. Pending state is cleared on every rank, also on failure. */
static int reduce_and_finish(multi_impl* mi, int began, fgmm_stats* out) {
    int rc = FGMM_OK;
    if (began == mi->nr) { /* also with one rank: the same code path, NCCL's all-reduce is then a copy */
        fgmm_gpu_pending_view v[MAX_RANKS];
        for (int r = 0; r < mi->nr && !rc; r++) rc = fgmm_gpu_pending(mi->rank[r], &v[r]);
        if (!rc) rc = fgmm_nccl_sum_pending(&mi->nccl, v, mi->comm, mi->nr);
    }
    double others = 0;
    for (int r = 1; r < began && !rc; r++) {
        double part = 0;
        rc = fgmm_gpu_pending_loglik(mi->rank[r], &part);
        others += part;
    }
    if (!rc && began == mi->nr) {
        rc = fgmm_gpu_finish(mi->rank[0], out);
        out->obj += others;
    }
    for (int r = 0; r < mi->nr; r++) fgmm_gpu_discard(mi->rank[r]);
    if (!rc && began < mi->nr) rc = FGMM_ERR_CUDA; /* a begin failed; its message stands */
    return rc;
}

/* One scan of the whole data (rank 0's engine), adopted by every rank for its shard. */
static int share_scan(multi_impl* mi, const fgmm_data* x) {
    if (mi->scan_x == x->x && mi->scan_n == x->n && mi->scan_d == x->d) return FGMM_OK;
    mi->scan_x = NULL;
    int rc = fgmm_gpu_scan(mi->rank[0], x);
    for (int r = mi->nr - 1; r >= 0 && !rc; r--) { /* rank 0 last: it is the source */
        fgmm_data s = shard(x, r, mi->nr);
        rc = fgmm_gpu_adopt_scan(mi->rank[r], &s, mi->rank[0]);
    }
    if (rc) return rc;
    mi->scan_x = x->x;
    mi->scan_n = x->n;
    mi->scan_d = x->d;
    return FGMM_OK;
}

static int multi_estep(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, fgmm_stats* out) {
    multi_impl* mi = e->impl;
    int rc = check_rows(mi, x), began = 0;
    if (!rc) rc = share_scan(mi, x);
    if (rc) return rc;
    for (; began < mi->nr; began++) {
        fgmm_data s = shard(x, began, mi->nr);
        if ((rc = fgmm_gpu_estep_begin(mi->rank[began], &s, m))) break;
    }
    int rr = reduce_and_finish(mi, began, out);
    return rc ? rc : rr;
}

static int multi_kmeans(fgmm_engine* e, const fgmm_data* x, const float* cent, int k, fgmm_stats* out) {
    multi_impl* mi = e->impl;
    int rc = check_rows(mi, x), began = 0;
    if (rc) return rc;
    for (; began < mi->nr; began++) {
        fgmm_data s = shard(x, began, mi->nr);
        if ((rc = fgmm_gpu_kmeans_begin(mi->rank[began], &s, cent, k))) break;
    }
    int rr = reduce_and_finish(mi, began, out);
    return rc ? rc : rr;
}

/* Rows are independent: each rank writes its own slice of the outputs (ranks in turn). */
static int multi_assign(fgmm_engine* e, const fgmm_data* x, const FgmmModel* m, int topm, fgmm_idx_t* labels,
                        float* resp, float* loglik) {
    multi_impl* mi = e->impl;
    int rc = check_rows(mi, x);
    for (int r = 0; r < mi->nr && !rc; r++) {
        fgmm_data s = shard(x, r, mi->nr);
        size_t a = (size_t)(x->n * r / mi->nr);
        rc = mi->rank[r]->ops->assign(mi->rank[r], &s, m, topm, labels ? labels + a * (topm > 0 ? topm : 0) : NULL,
                                      resp ? resp + a * (topm > 0 ? topm : 0) : NULL, loglik ? loglik + a : NULL);
    }
    return rc;
}

static void multi_destroy(fgmm_engine* e) {
    if (!e) return;
    multi_impl* mi = e->impl;
    if (mi) {
        for (int r = 0; r < mi->nr; r++) {
            if (mi->comm[r] && mi->nccl.comm_destroy) mi->nccl.comm_destroy(mi->comm[r]);
            fgmm_engine_destroy(mi->rank[r]);
        }
        fgmm_nccl_unload(&mi->nccl);
        free(mi);
    }
    free(e);
}

/* the M-step and k-means++ seeding stay on the host */
static const fgmm_engine_ops multi_ops = {"gpu-nccl", multi_estep, multi_kmeans, multi_assign, multi_destroy,
                                          NULL,       NULL,        NULL,         NULL,         NULL};

int fgmm_engine_multi_create(fgmm_engine** out, int n_ranks, int first_device, size_t mem_limit, FgmmPrecision prec) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    if (n_ranks < 1 || n_ranks > MAX_RANKS)
        return fgmm_fail(FGMM_ERR_ARG, "n_gpus = %d out of range [1, %d]", n_ranks, MAX_RANKS);
    int have = 0;
    if (cudaGetDeviceCount(&have) != cudaSuccess || have == 0) {
        cudaGetLastError();
        return fgmm_fail(FGMM_ERR_NO_GPU, "no CUDA device available");
    }
    if (first_device < 0 || first_device + n_ranks > have)
        return fgmm_fail(FGMM_ERR_ARG, "n_gpus = %d from gpu_device %d, but %d CUDA device(s) present", n_ranks,
                         first_device, have);
    fgmm_engine* e = calloc(1, sizeof *e);
    multi_impl* mi = calloc(1, sizeof *mi);
    if (!e || !mi) {
        free(e);
        free(mi);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    e->ops = &multi_ops;
    e->impl = mi;
    e->precision = prec;
    mi->nr = n_ranks;
    int rc = fgmm_nccl_load(&mi->nccl, "n_gpus");
    for (int r = 0; r < n_ranks && !rc; r++)
        rc = fgmm_engine_gpu_create(&mi->rank[r], first_device + r, mem_limit, prec);
    if (!rc) {
        int devs[MAX_RANKS];
        for (int r = 0; r < n_ranks; r++) devs[r] = first_device + r;
        ncclResult_t nr = mi->nccl.comm_init_all(mi->comm, n_ranks, devs);
        if (nr != ncclSuccess) rc = fgmm_nccl_fail(&mi->nccl, nr, "ncclCommInitAll");
    }
    if (rc) {
        multi_destroy(e);
        return rc;
    }
    *out = e;
    return FGMM_OK;
}
