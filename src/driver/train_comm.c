/* SPDX-License-Identifier: MIT */
/* train_comm.c: the training's collectives over the ranks of an fgmm_comm (one process: none). */
#include <stdlib.h>

#include "trainer.h"

/* fgmm_comm's collectives; in one process they return status and move nothing. Once the ranks
 * have agreed on a failure they all stop: none calls a collective again. */
static int comm_off(const trainer* t, int* status) {
    if (t->comm && t->comm->agreed && !*status) *status = FGMM_ERR_STATE;
    return !t->comm || t->comm->agreed;
}
int fgmm_tr_sum(trainer* t, double* v, size_t n, int status) {
    return comm_off(t, &status) ? status : t->comm->sum(t->comm, v, n, status);
}
int fgmm_tr_bcast(trainer* t, void* buf, size_t bytes, int status) {
    return comm_off(t, &status) ? status : t->comm->bcast(t->comm, buf, bytes, status);
}
/* Every rank's part, in rank order: rows [part[r], part[r + 1]) of `all` (rows of row_bytes; part
 * NULL: one row each), this rank's already in place. */
int fgmm_tr_gather_rows(trainer* t, void* all, const fgmm_idx_t* part, size_t row_bytes, int status) {
    if (comm_off(t, &status)) return status;
    const int np = t->comm->size, me = t->comm->rank;
    size_t* bytes = status ? NULL : malloc((size_t)np * sizeof *bytes);
    if (!bytes && !status) status = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if (status) return t->comm->gather(t->comm, NULL, NULL, NULL, status);
    for (int r = 0; r < np; r++) bytes[r] = part ? (size_t)(part[r + 1] - part[r]) * row_bytes : row_bytes;
    int rc = t->comm->gather(t->comm, (char*)all + (size_t)(part ? part[me] : me) * row_bytes, all, bytes, status);
    free(bytes);
    return rc;
}
/* Sums a pass's statistics (obj included, in the spare slot) over the ranks; only obj where the engine
 * has summed the rest. */
int fgmm_tr_sum_stats(trainer* t, fgmm_stats* st, int status) {
    if (comm_off(t, &status)) return status;
    if (t->eng && t->eng->sums_ranks) return fgmm_tr_sum(t, &st->obj, 1, status);
    const size_t len = fgmm_stats_len(st);
    st->nk[len] = st->obj;
    int rc = fgmm_tr_sum(t, st->nk, len + 1, status);
    st->obj = st->nk[len];
    return rc;
}
