/* SPDX-License-Identifier: MIT */
/* train.c: the training driver (fgmm_train, fgmm_train_comm): k-means, EM and the host M-step.
 * Backend-neutral: the heavy passes go through the engine; seeding (seed.c), M-step and re-seeding
 * are O(k*d) or O(sample*k*d) host work, done in double. Where the engine has its own EM iteration
 * (GPU, fused fast path) the M-step runs there and the model stays on the device between
 * iterations, and where it has its own k-means++ (GPU) seeding runs there with the same draws;
 * re-seeding stays here. The data's variance: moments.c; collectives over ranks: train_comm.c. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

/* Range of the data's mean per-dimension variance that fgmm_train accepts. */
#define FGMM_MIN_DATA_VAR 1e-24
#define FGMM_MAX_DATA_VAR 1e24

/* Lloyd iterations; leaves the GMM initialised from the final assignment. */
static int run_kmeans(trainer* t, FgmmModel* g, FgmmTrainInfo* info) {
    int k = t->k, d = t->d, rc;
    float* cent = g->mu;
    int* empty = calloc((size_t)k, sizeof(int));
    fgmm_stats st;
    if (!empty) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    if ((rc = fgmm_stats_alloc(&st, k, d, 0))) {
        free(empty);
        return rc;
    }
    /* Every rank seeds on the same sample, and whether it holds k distinct rows (FGMM_ERR_DATA) does
     * not depend on rounding: all ranks widen it or none. */
    rc = fgmm_tr_kmeanspp(t, cent);
    if (rc == FGMM_ERR_DATA && t->ns < t->n_all && !(rc = fgmm_tr_widen_sample(t))) rc = fgmm_tr_kmeanspp(t, cent);
    fgmm_trace(t->mark, "k-means++ seeding");
    /* The draws' sums are in an order that depends on the thread count: rank 0's seeds for all. */
    if ((rc = fgmm_tr_bcast(t, cent, (size_t)k * d * sizeof(float), rc))) goto done;
    /* One pass more than kmeans_iter: the last one only sets the GMM's start. */
    for (int it = 0; it <= t->p->kmeans_iter; it++) {
        rc = t->eng->ops->kmeans(t->eng, &t->x, cent, k, &st);
        if ((rc = fgmm_tr_sum_stats(t, &st, rc))) goto done;
        if (it == 0) fgmm_trace(t->mark, "first k-means pass (scan, upload)");
        int ne = 0;
        for (int j = 0; j < k; j++) {
            double nj = st.nk[j];
            empty[j] = nj < (t->p->min_count > 1 ? t->p->min_count : 1);
            ne += empty[j];
            double sh = 0; /* ||new - old||^2: turns s2 around the old centroid into the new one's */
            for (int c = 0; c < d && !empty[j]; c++) {
                double nu = st.s1[(size_t)j * d + c] / nj;
                sh += (nu - cent[(size_t)j * d + c]) * (nu - cent[(size_t)j * d + c]);
                cent[(size_t)j * d + c] = (float)nu;
            }
            double v = empty[j] ? t->mean_var : (st.s2[j] - nj * sh) / (nj * d);
            g->var[j] = (float)fmax(v, t->p->var_floor * t->mean_var);
            g->w[j] = (float)((empty[j] ? 1.0 : nj) / (double)t->n_all);
        }
        int nre = 0;
        if (ne) {
            /* Worst fit = farthest from its centroid: an isotropic unit-variance model ranks the same. */
            FgmmModel tmp = {k, d, FGMM_COV_ISOTROPIC, cent, NULL, NULL};
            float* ones = malloc((size_t)k * 2 * sizeof(float));
            if (!ones) {
                rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
                goto done;
            }
            for (int j = 0; j < 2 * k; j++) ones[j] = j < k ? 1.0f : 1.0f / k;
            tmp.var = ones;
            tmp.w = ones + k;
            rc = fgmm_tr_reseed_worst(t, &tmp, empty, cent, &nre);
            free(ones);
            if ((rc = fgmm_tr_bcast(t, cent, (size_t)k * d * sizeof(float), rc))) goto done; /* rank 0's picks */
            info->reseeded += nre;
        }
        if (it < t->p->kmeans_iter) {
            info->kmeans_iterations = it + 1;
            if (t->p->progress) t->p->progress(t->p->progress_user, FGMM_PHASE_KMEANS, it, st.obj / t->n_all, nre);
        }
    }
    if (g->cov == FGMM_COV_DIAGONAL) /* isotropic start (the last pass's), broadcast per dimension */
        for (int j = k - 1; j >= 0; j--)
            for (int c = d - 1; c >= 0; c--) g->var[(size_t)j * d + c] = g->var[j];
    double ws = 0;
    for (int j = 0; j < k; j++) ws += g->w[j];
    for (int j = 0; j < k; j++) g->w[j] = (float)(g->w[j] / ws);
done:
    free(empty);
    fgmm_stats_free(&st);
    return rc;
}

/* M-step settings shared by the host M-step and the engine's em_step. */
static fgmm_mstep_cfg mstep_cfg(const trainer* t) {
    return (fgmm_mstep_cfg){t->p->var_floor * t->mean_var, t->p->min_count, t->mean_var};
}

/* Exact M-step: variances around the new means. Returns components re-seeded. */
static int mstep(trainer* t, FgmmModel* g, const fgmm_stats* st, int* nreseeded) {
    int k = t->k, d = t->d, diag = g->cov == FGMM_COV_DIAGONAL;
    const fgmm_mstep_cfg cfg = mstep_cfg(t);
    double floor = cfg.var_floor, wsum = 0, vsum = 0;
    int* empty = calloc((size_t)k, sizeof(int));
    if (!empty) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    int nfull = 0;
    for (int j = 0; j < k; j++) {
        double nj = st->nk[j];
        empty[j] = !(nj >= cfg.min_count) || !(nj > 0);
        if (empty[j]) continue;
        float* mu = g->mu + (size_t)j * d;
        double sh = 0;
        for (int c = 0; c < d; c++) {
            double nu = st->s1[(size_t)j * d + c] / nj;
            if (diag) {
                double v = fmax(st->s2[(size_t)j * d + c] / nj - nu * nu, floor);
                g->var[(size_t)j * d + c] = (float)v;
                vsum += v / d;
            }
            sh += (nu - mu[c]) * (nu - mu[c]);
            mu[c] = (float)nu;
        }
        if (!diag) {
            /* sum r||x - mu_new||^2 = sum r||x - mu_old||^2 - N_k ||mu_new - mu_old||^2 */
            double v = fmax((st->s2[j] - nj * sh) / (nj * d), floor);
            g->var[j] = (float)v;
            vsum += v;
        }
        g->w[j] = (float)nj;
        nfull++;
    }
    double vfill = nfull ? vsum / nfull : cfg.fill_var;
    for (int j = 0; j < k; j++) {
        if (!empty[j]) continue;
        g->w[j] = 1.0f;
        for (int c = 0; c < (diag ? d : 1); c++) g->var[(size_t)j * (diag ? d : 1) + c] = (float)vfill;
    }
    for (int j = 0; j < k; j++) wsum += g->w[j];
    for (int j = 0; j < k; j++) g->w[j] = (float)(g->w[j] / wsum);
    int rc = fgmm_tr_reseed_worst(t, g, empty, g->mu, nreseeded);
    free(empty);
    if (*nreseeded) rc = fgmm_tr_bcast(t, g->mu, (size_t)k * d * sizeof(float), rc); /* rank 0's picks */
    return rc;
}

int fgmm_train(const FgmmParams* p, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, FgmmModel** out,
               FgmmTrainInfo* info) {
    return fgmm_train_comm(p, n, d, dtype, x, NULL, out, info);
}

static int check_comm(const fgmm_comm* c, fgmm_idx_t n, const FgmmParams* p) {
    if (!c->sum || !c->gather || !c->bcast || !c->row0 || c->size < 1 || c->rank < 0 || c->rank >= c->size)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: incomplete communicator (rank %d of %d)", c->rank, c->size);
    if (c->row0[0] != 0 || c->row0[c->size] != c->n_total || c->row0[c->rank + 1] - c->row0[c->rank] != n)
        return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: rank %d has %lld rows, its range says %lld", c->rank,
                         (long long)n, (long long)(c->row0[c->rank + 1] - c->row0[c->rank]));
    if (p->n_gpus) return fgmm_fail(FGMM_ERR_ARG, "fgmm_train_comm: n_gpus = %d; one engine per rank", p->n_gpus);
    return FGMM_OK;
}

/* The engine made on a second thread while this one reads the data (variance pass, seeding sample):
 * a GPU engine's first creation in a process includes the CUDA context, about 0.2 s. */
typedef struct engine_start {
    const FgmmParams* p;
    fgmm_engine* eng;
    int rc, started;
    char msg[512]; /* the error message: fgmm_fail's is per thread */
    pthread_t th;
} engine_start;

static void* engine_start_run(void* arg) {
    engine_start* s = arg;
    s->rc = fgmm_engine_create(&s->eng, s->p);
    if (s->rc) snprintf(s->msg, sizeof s->msg, "%s", fgmm_get_last_error());
    return NULL;
}

/* Starts the creation (GPU-capable backends only; else, or if no thread starts, engine_finish
 * creates it). */
static void engine_begin(engine_start* s, const FgmmParams* p) {
    memset(s, 0, sizeof *s);
    s->p = p;
    s->started = p->backend != FGMM_BACKEND_CPU && !pthread_create(&s->th, NULL, engine_start_run, s);
}

/* The engine (*eng) or the creation's error. */
static int engine_finish(engine_start* s, fgmm_engine** eng) {
    if (!s->started) return fgmm_engine_create(eng, s->p);
    pthread_join(s->th, NULL);
    s->started = 0;
    *eng = s->eng;
    s->eng = NULL;
    return s->rc ? fgmm_fail(s->rc, "%s", s->msg) : FGMM_OK;
}

int fgmm_train_comm(const FgmmParams* p, fgmm_idx_t n, int d, FgmmDtype dtype, const void* x, fgmm_comm* comm,
                    FgmmModel** out, FgmmTrainInfo* info) {
    double t0 = fgmm_now();
    FGMM_CHECK_NULL(out);
    *out = NULL;
    FGMM_CHECK_NULL(p);
    FGMM_CHECK_NULL(x);
    int rc;
    if (comm && (rc = check_comm(comm, n, p))) return rc;
    if (comm) comm->agreed = comm->device_sums = 0;
    trainer t = {0};
    FgmmModel* g = NULL;
    fgmm_stats st = {0};
    t.p = p;
    t.x = (fgmm_data){x, n, d, dtype};
    t.comm = comm;
    t.n_all = comm ? comm->n_total : n;
    t.k = p->k;
    t.d = d;
    t.rng = p->seed;
    engine_start es = {0};
    /* Every failure goes to done, which tells the other ranks (these first checks fail alike on all). */
    if ((rc = fgmm_check_params(p))) goto done;
    if (p->k < 1 || p->k > t.n_all) {
        rc = p->k < 1 ? fgmm_fail(FGMM_ERR_ARG, "fgmm_train: k = %d; must be >= 1", p->k)
                      : fgmm_fail(FGMM_ERR_ARG, "fgmm_train: k = %d > n = %lld rows", p->k, (long long)t.n_all);
        goto done;
    }
    double mark = t0;
    fgmm_trace(&mark, "start");
    engine_begin(&es, p);
    rc = fgmm_data_check_shape(&t.x, "fgmm_train");
    if ((rc = fgmm_tr_mean_var(&t, rc))) goto done;
    fgmm_trace(&mark, "data variance (and finite values)");
    rc = FGMM_ERR_DATA; /* the checks below are alike on every rank */
    if (!(t.mean_var > 0)) {
        fgmm_fail(rc, "fgmm_train: data has zero variance (all rows identical)");
        goto done;
    }
    /* The model's float32 variances (down to var_floor times this) and squared distances must be
     * normal floats: refuse rather than return NaN or merge distinct points. */
    if (t.mean_var < FGMM_MIN_DATA_VAR || t.mean_var > FGMM_MAX_DATA_VAR) {
        fgmm_fail(rc,
                  "fgmm_train: the data's mean per-dimension variance is %g, outside [%g, %g] that float32 "
                  "models hold; rescale the data",
                  t.mean_var, FGMM_MIN_DATA_VAR, FGMM_MAX_DATA_VAR);
        goto done;
    }
    if (p->var_floor * t.mean_var < FGMM_MIN_DATA_VAR * 1e-6) {
        fgmm_fail(rc,
                  "fgmm_train: var_floor = %g times the data's variance %g is below %g; raise var_floor or "
                  "rescale the data",
                  p->var_floor, t.mean_var, FGMM_MIN_DATA_VAR * 1e-6);
        goto done;
    }
    FgmmTrainInfo local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if ((rc = fgmm_model_alloc(&g, p->k, d, p->covariance))) goto done;
    if ((rc = fgmm_tr_draw_sample(&t))) goto done;
    fgmm_trace(&mark, "seeding sample");
    rc = engine_finish(&es, &t.eng);
    /* GPU ranks sum their statistics with NCCL where they all can; every rank (the same backend on all)
     * agrees there on the others' engines */
    const int ranks = comm ? comm->size : 1;
    if (ranks > 1 && p->backend != FGMM_BACKEND_CPU) rc = fgmm_engine_comm_wrap(&t.eng, comm, rc);
    if (rc) goto done;
    if (t.eng->ops->set_scan && (rc = t.eng->ops->set_scan(t.eng, &t.x, t.col_mean))) goto done;
    fgmm_trace(&mark, ranks == 1          ? "engine (the rest of its start)"
                      : t.eng->sums_ranks ? "engine, ranks sum with NCCL"
                                          : "engine, ranks sum on the host");
    info->backend = t.eng->ops->name;
    t.mark = &mark;
    if ((rc = run_kmeans(&t, g, info))) goto done;
    fgmm_trace(&mark, "other k-means iterations");
    if ((rc = fgmm_stats_alloc(&st, p->k, d, p->covariance == FGMM_COV_DIAGONAL))) goto done;
    double prev = -INFINITY;
    /* The engine's own EM iteration keeps the model on the device where the GPU backend's plan says
     * so (src/gpu/gpu_plan.c); else it is not handled and the M-step runs here.
     * Several ranks: each iteration's statistics are summed over them before the host's M-step. */
    int on_device = !comm && t.eng->ops->em_step, changed = 1;
    int stale = 0; /* the engine's device model is newer than g */
    for (int it = 0; it < p->niter; it++) {
        int handled = 0, nre = 0, nempty = 0;
        double obj = 0;
        if (on_device) {
            const fgmm_mstep_cfg cfg = mstep_cfg(&t);
            if ((rc = t.eng->ops->em_step(t.eng, &t.x, g, changed, &cfg, &handled, &obj, &nempty))) goto done;
            on_device = handled;
        }
        if (!handled) {
            if (stale && (rc = t.eng->ops->em_fetch(t.eng, g, NULL))) goto done;
            stale = 0;
            rc = t.eng->ops->estep(t.eng, &t.x, g, &st);
            if ((rc = fgmm_tr_sum_stats(&t, &st, rc))) goto done;
            obj = st.obj;
        }
        double ll = obj / t.n_all;
        if (!isfinite(ll)) {
            rc = fgmm_fail(FGMM_ERR_DATA, "fgmm_train: log-likelihood became %g at EM iteration %d", ll, it);
            goto done;
        }
        if (!handled) {
            if ((rc = mstep(&t, g, &st, &nre))) goto done;
        } else if (nempty) { /* re-seeding is host work: bring the model back, then send it again */
            int* empty = malloc((size_t)p->k * sizeof(int));
            if (!empty) {
                rc = fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
                goto done;
            }
            if (!(rc = t.eng->ops->em_fetch(t.eng, g, empty))) rc = fgmm_tr_reseed_worst(&t, g, empty, g->mu, &nre);
            free(empty);
            if (rc) goto done;
        } else {
            stale = 1;
        }
        changed = nre > 0;
        info->reseeded += nre;
        info->em_iterations = it + 1;
        if (p->progress) p->progress(p->progress_user, FGMM_PHASE_EM, it, ll, nre);
        if (p->tol > 0 && it > 0 && ll - prev < p->tol * fabs(ll)) {
            info->converged = 1;
            break;
        }
        prev = ll;
    }
    fgmm_trace(&mark, "EM iterations");
    if (stale && (rc = t.eng->ops->em_fetch(t.eng, g, NULL))) goto done;
    rc = t.eng->ops->loglik_sum ? t.eng->ops->loglik_sum(t.eng, &t.x, g, &st.obj)
                                : t.eng->ops->estep(t.eng, &t.x, g, &st);
    if ((rc = fgmm_tr_sum(&t, &st.obj, 1, rc))) goto done;
    info->mean_loglik = st.obj / t.n_all;
    fgmm_trace(&mark, "final E-step");
done:
    /* A failure on this rank alone: the others learn of it at their next collective. */
    if (rc && comm && !comm->agreed) comm->sum(comm, NULL, 0, rc);
    if (es.started) { /* failed before the engine was needed */
        pthread_join(es.th, NULL);
        fgmm_engine_destroy(es.eng);
    }
    fgmm_stats_free(&st);
    fgmm_engine_destroy(t.eng);
    free(t.sample);
    free(t.tmp_ll);
    free(t.col_mean);
    if (rc) {
        fgmm_model_free(g);
        return rc;
    }
    info->seconds = fgmm_now() - t0;
    *out = g;
    fgmm_clear_error();
    return FGMM_OK;
}
