/* SPDX-License-Identifier: MIT */
/* gpu_data.c: the GPU backend's data: rows resident on the device (as given, or prepared for the
 * fused fp16 E-step) or streamed in chunks, visited range by range; the host scan behind the
 * prepared rows' centring and prescale. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_impl.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int call_ranges(gpu_impl* g, const void* dx, long long base, long long rows, size_t row_bytes, chunk_fn fn,
                       void* ctx) {
    for (long long r0 = 0; r0 < rows; r0 += RESIDENT_RANGE_ROWS) {
        long long nr = rows - r0 < RESIDENT_RANGE_ROWS ? rows - r0 : RESIDENT_RANGE_ROWS;
        int rc = fn(g, (const char*)dx + (size_t)r0 * row_bytes, base + r0, nr, ctx);
        if (rc) return rc;
    }
    return FGMM_OK;
}

/* Bytes per resident row in a format. */
static size_t fmt_row_bytes(const gpu_impl* g, const fgmm_data* x, int fmt) {
    return fmt != FMT_RAW ? (size_t)fmt_dp(g, fmt, x->d) * 2 + sizeof(float) : (size_t)x->d * fgmm_dtype_size(x->dtype);
}

static int is_resident(const gpu_impl* g, const fgmm_data* x, int fmt) {
    return g->host_x == x->x && g->host_n == x->n && g->host_d == x->d && g->host_dtype == x->dtype &&
           g->host_fmt == fmt;
}

/* Records x as resident in fmt (what is_resident checks). */
static void set_resident(gpu_impl* g, const fgmm_data* x, int fmt) {
    g->host_x = x->x;
    g->host_n = x->n;
    g->host_d = x->d;
    g->host_dtype = x->dtype;
    g->host_fmt = fmt;
}

int fgmm_gpu_on_device(const gpu_impl* g, const fgmm_data* x) {
    return is_resident(g, x, FMT_RAW) || is_resident(g, x, FMT_F16) || is_resident(g, x, FMT_F16_DIAG);
}

/* Whether x fits on the device in a format, next to 64 MB of scratch (a resident copy in the
 * other format would be replaced, so it counts as free). */
int fgmm_gpu_resident_fits(gpu_impl* g, const fgmm_data* x, int fmt, size_t* budget_out) {
    if (!budget_out && is_resident(g, x, fmt)) return 1; /* cudaMemGetInfo is not free: skip it per E-step */
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        cudaGetLastError();
        free_b = 0;
    }
    size_t budget = g->mem_limit ? g->mem_limit : (size_t)(0.8 * (double)(free_b + g->data.cap + g->xnorm.cap));
    if (budget_out) *budget_out = budget;
    return is_resident(g, x, fmt) || (size_t)x->n * fmt_row_bytes(g, x, fmt) + ((size_t)64 << 20) <= budget;
}

static int resident_ranges(gpu_impl* g, const fgmm_data* x, chunk_fn fn, void* ctx) {
    size_t rb =
        g->host_fmt != FMT_RAW ? (size_t)fmt_dp(g, g->host_fmt, x->d) * 2 : (size_t)x->d * fgmm_dtype_size(x->dtype);
    return call_ranges(g, g->data.p, 0, x->n, rb, fn, ctx);
}

/* g->shift holding the data mean (all MEAN_DP(d) floats: at least every prepared width but the
 * diagonal one, whose kernels read the first d), uploaded once per data scan: a pageable copy waits
 * for the stream. */
int fgmm_gpu_device_shift(gpu_impl* g) {
    void* shift0 = g->shift.p;
    size_t bytes = (size_t)MEAN_DP(g->scan_d) * sizeof(float);
    int rc = fgmm_gpu_dgrow(&g->shift, bytes, "shift");
    if (rc) return rc;
    if (g->shift.p != shift0) g->shift_ok = 0; /* reallocated */
    if (!g->shift_ok) {
        CU(cudaMemcpyAsync(g->shift.p, g->data_mean, bytes, cudaMemcpyHostToDevice, g->st));
        g->shift_ok = 1;
    }
    return FGMM_OK;
}

/* n rows of x's dtype at src (device) -> prepared rows of format fmt (dp wide) at out, norms at xn. */
static int prepare_into(gpu_impl* g, const void* src, const fgmm_data* x, long long n, int fmt, void* out, float* xn) {
    return fgmm_fused_prepare(src, x->dtype == FGMM_U8, n, x->d, fmt_dp(g, fmt, x->d), g->shift.p, (float)g->prep_scale,
                              fmt == FMT_F16_DIAG ? (float)diag_scale2(g) : 0.f, out, xn, g->st);
}

/* Uploads x as prepared rows of format fmt (fp16, centred on g->data_mean, prescaled by
 * g->prep_scale; FMT_F16_DIAG appends the squares), through a device staging buffer of at most 64 MB
 * that is freed afterwards. */
static int upload_prepared(gpu_impl* g, const fgmm_data* x, int fmt) {
    int d = x->d, dp = fmt_dp(g, fmt, d), rc;
    /* The rows as given already on the device (k-means ran on them): prepare there, if both copies
     * fit the budget for a moment; no second host transfer. */
    size_t budget = 0;
    fgmm_gpu_resident_fits(g, x, fmt, &budget);
    if (is_resident(g, x, FMT_RAW) && g->data.cap + (size_t)x->n * fmt_row_bytes(g, x, fmt) <= budget) {
        void* prep = NULL;
        if (cudaMalloc(&prep, (size_t)x->n * dp * 2) != cudaSuccess) {
            cudaGetLastError(); /* no room for both: the host copy below */
        } else {
            if ((rc = fgmm_gpu_dgrow(&g->xnorm, (size_t)x->n * sizeof(float), "row norms")) ||
                (rc = fgmm_gpu_device_shift(g))) {
                cudaFree(prep);
                return rc;
            }
            cudaError_t ce = (cudaError_t)prepare_into(g, g->data.p, x, x->n, fmt, prep, g->xnorm.p);
            if (!ce) ce = cudaStreamSynchronize(g->st); /* the rows as given are freed next */
            if (ce) {
                cudaFree(prep);
                return fgmm_gpu_cuda_fail(ce, "data preparation");
            }
            cudaFree(g->data.p);
            g->data.p = prep;
            g->data.cap = (size_t)x->n * dp * 2;
            g->host_fmt = fmt; /* host_x, host_n, ... stay: the same rows */
            return FGMM_OK;
        }
    }
    size_t rb = (size_t)d * fgmm_dtype_size(x->dtype);
    long long piece = (long long)(((size_t)64 << 20) / rb);
    if (piece > x->n) piece = x->n;
    g->host_x = NULL; /* invalid until complete */
    dbuf stage = {0};
    if ((rc = fgmm_gpu_dgrow(&g->data, (size_t)x->n * dp * 2, "the prepared data")) ||
        (rc = fgmm_gpu_dgrow(&g->xnorm, (size_t)x->n * sizeof(float), "row norms")) ||
        (rc = fgmm_gpu_device_shift(g)) || (rc = fgmm_gpu_dgrow(&stage, (size_t)piece * rb, "upload staging")))
        return rc;
    /* Every host-to-device copy goes on g->st: a plain cudaMemcpy from pageable memory may return
     * before its DMA lands, and g->st (non-blocking) does not wait for the legacy stream. */
    cudaError_t ce = cudaSuccess;
    for (long long r0 = 0; r0 < x->n && !ce; r0 += piece) {
        long long nr = x->n - r0 < piece ? x->n - r0 : piece;
        ce = cudaMemcpyAsync(stage.p, (const char*)x->x + (size_t)r0 * rb, (size_t)nr * rb, cudaMemcpyHostToDevice,
                             g->st);
        if (!ce)
            ce = (cudaError_t)prepare_into(g, stage.p, x, nr, fmt, (char*)g->data.p + (size_t)r0 * dp * 2,
                                           (float*)g->xnorm.p + r0);
        if (!ce) ce = cudaStreamSynchronize(g->st); /* stage is reused */
    }
    cudaFree(stage.p);
    if (ce) return fgmm_gpu_cuda_fail(ce, "data preparation");
    set_resident(g, x, fmt);
    return FGMM_OK;
}

/* One spare pinned pair per process: pinning costs ~0.5 ms per MB, and every training makes a new
 * engine. An engine takes it when it needs a pair it fits, and leaves its own there when it ends
 * (pairs of at most 64 MB each). */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static void* spare[2];
static size_t spare_cap;

static void free_pair(void* p[2]) {
    for (int i = 0; i < 2; i++)
        if (p[i]) cudaFreeHost(p[i]);
}

/* at exit, before the CUDA runtime's own teardown (registered earlier, so run later) */
static void free_spare(void) { free_pair(spare); }
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static void spare_at_exit(void) { atexit(free_spare); }

/* The two pinned staging buffers, at least bytes each (contents are not kept). */
static int pinned_pair(gpu_impl* g, size_t bytes) {
    if (g->pinned_cap >= bytes) return FGMM_OK;
    free_pair(g->pinned);
    g->pinned[0] = g->pinned[1] = NULL;
    g->pinned_cap = 0;
    pthread_mutex_lock(&spare_lock);
    if (spare_cap >= bytes) {
        g->pinned[0] = spare[0], g->pinned[1] = spare[1], g->pinned_cap = spare_cap;
        spare[0] = spare[1] = NULL, spare_cap = 0;
    }
    pthread_mutex_unlock(&spare_lock);
    if (g->pinned_cap) return FGMM_OK;
    CU(cudaMallocHost(&g->pinned[0], bytes));
    CU(cudaMallocHost(&g->pinned[1], bytes));
    g->pinned_cap = bytes;
    return FGMM_OK;
}

void fgmm_gpu_pinned_pair_release(gpu_impl* g) {
    void* drop[2] = {g->pinned[0], g->pinned[1]};
    if (g->pinned[0] && g->pinned[1] && g->pinned_cap <= ((size_t)64 << 20)) { /* streaming's big pairs go */
        pthread_mutex_lock(&spare_lock);
        pthread_once(&spare_once, spare_at_exit);
        if (g->pinned_cap > spare_cap) { /* keep the larger pair */
            drop[0] = spare[0], drop[1] = spare[1];
            spare[0] = g->pinned[0], spare[1] = g->pinned[1], spare_cap = g->pinned_cap;
        }
        pthread_mutex_unlock(&spare_lock);
    }
    free_pair(drop);
    g->pinned[0] = g->pinned[1] = NULL;
    g->pinned_cap = 0;
}

/* Host -> pinned staging in parallel: one core's memcpy is the bottleneck of an upload. */
static void stage_copy(char* dst, const char* src, size_t bytes) {
    const size_t piece = (size_t)512 << 10;
    long long pieces = (long long)((bytes + piece - 1) / piece);
#pragma omp parallel for
    for (long long q = 0; q < pieces; q++) {
        size_t off = (size_t)q * piece;
        memcpy(dst + off, src + off, bytes - off < piece ? bytes - off : piece);
    }
}

/* bytes from host src to device dst through the pinned pair, 8 MB at a time on g->st (a piece's
 * staging overlaps the previous piece's DMA): a pageable copy of the same size runs at a fraction
 * of the link's speed. Returns when the last DMA has landed (the pinned pair is free again). */
int fgmm_gpu_upload_staged(gpu_impl* g, void* dst, const void* src, size_t bytes) {
    const size_t piece = (size_t)8 << 20; /* pinning costs ~0.5 ms per MB, once per engine */
    double mark = fgmm_now();
    int rc = pinned_pair(g, piece < bytes ? piece : bytes);
    if (rc) return rc;
    fgmm_trace(&mark, "  gpu: pinned staging pair");
    for (size_t off = 0, q = 0; off < bytes; off += piece, q++) {
        int b = (int)(q & 1);
        size_t nb = bytes - off < piece ? bytes - off : piece;
        CU(cudaEventSynchronize(g->copied[b])); /* the DMA out of this buffer (piece q - 2) has landed */
        stage_copy(g->pinned[b], (const char*)src + off, nb);
        CU(cudaMemcpyAsync((char*)dst + off, g->pinned[b], nb, cudaMemcpyHostToDevice, g->st));
        CU(cudaEventRecord(g->copied[b], g->st));
    }
    CU(cudaStreamSynchronize(g->st));
    fgmm_trace(&mark, "  gpu: upload through it");
    return FGMM_OK;
}

int fgmm_gpu_upload_raw(gpu_impl* g, const fgmm_data* x) {
    size_t total = (size_t)x->n * x->d * fgmm_dtype_size(x->dtype);
    g->host_x = NULL;
    double mark = fgmm_now();
    int rc = fgmm_gpu_dgrow(&g->data, total, "the data");
    if (rc) return rc;
    fgmm_trace(&mark, "  gpu: device memory for the rows");
    if ((rc = fgmm_gpu_upload_staged(g, g->data.p, x->x, total))) return rc;
    set_resident(g, x, FMT_RAW);
    return FGMM_OK;
}

/* Calls fn on device-resident row ranges covering all of x; prepared formats require fgmm_gpu_resident_fits. */
int fgmm_gpu_for_each_chunk(gpu_impl* g, const fgmm_data* x, int fmt, chunk_fn fn, void* ctx) {
    size_t row_bytes = (size_t)x->d * fgmm_dtype_size(x->dtype);
    if (is_resident(g, x, fmt)) return resident_ranges(g, x, fn, ctx);
    if (fmt != FMT_RAW) {
        int rc = upload_prepared(g, x, fmt);
        return rc ? rc : resident_ranges(g, x, fn, ctx);
    }
    size_t budget;
    if (fgmm_gpu_resident_fits(g, x, FMT_RAW, &budget)) { /* resident: copy once, reuse for every pass */
        int rc = fgmm_gpu_upload_raw(g, x);
        return rc ? rc : resident_ranges(g, x, fn, ctx);
    }
    /* streaming: two chunks of a quarter of the budget each */
    long long rows = (long long)(budget / 4 / row_bytes);
    if (rows < 1024)
        return fgmm_fail(FGMM_ERR_GPU_NOMEM, "GPU: memory budget %zu B too small to stream rows of %zu B", budget,
                         row_bytes);
    if (rows > x->n) rows = x->n;
    size_t cb = (size_t)rows * row_bytes;
    int rc;
    if ((rc = fgmm_gpu_dgrow(&g->chunk[0], cb, "stream chunk")) ||
        (rc = fgmm_gpu_dgrow(&g->chunk[1], cb, "stream chunk")))
        return rc;
    if ((rc = pinned_pair(g, cb))) return rc;
    long long nchunks = (x->n + rows - 1) / rows;
    for (long long c = 0; c < nchunks; c++) {
        int b = (int)(c & 1);
        long long r0 = c * rows, nr = x->n - r0 < rows ? x->n - r0 : rows;
        CU(cudaEventSynchronize(g->consumed[b])); /* compute on this buffer (chunk c-2) finished */
        stage_copy(g->pinned[b], (const char*)x->x + (size_t)r0 * row_bytes, (size_t)nr * row_bytes);
        CU(cudaMemcpyAsync(g->chunk[b].p, g->pinned[b], (size_t)nr * row_bytes, cudaMemcpyHostToDevice, g->copy_st));
        CU(cudaEventRecord(g->copied[b], g->copy_st));
        CU(cudaStreamWaitEvent(g->st, g->copied[b], 0));
        if ((rc = call_ranges(g, g->chunk[b].p, r0, nr, row_bytes, fn, ctx))) return rc;
        CU(cudaEventRecord(g->consumed[b], g->st));
    }
    return FGMM_OK;
}

/* Takes sh (MEAN_DP(d) floats, zero padded: the column means) as x's scan, with max |x| = amax
 * (uint8 rows: 255): the prepared rows' shift and prescale (every |x - mean| * scale <= 2^12). */
static void adopt_scan(gpu_impl* g, const fgmm_data* x, float* sh, double amax) {
    double ash = 0;
    for (int j = 0; j < x->d; j++) ash = fabs(sh[j]) > ash ? fabs(sh[j]) : ash;
    if (sh != g->data_mean) free(g->data_mean);
    g->data_mean = sh;
    g->amax_pending = 0;
    g->amax = x->dtype == FGMM_U8 ? 255.0 : amax;
    g->prep_scale = pow2_prescale(g->amax + ash);
    g->scan_x = x->x;
    g->scan_n = x->n;
    g->scan_d = x->d;
    g->shift_ok = 0;
}

/* One host pass over the data, cached per array (once per training): max |x| and the column means
 * (adopt_scan). */
int fgmm_gpu_data_scan(gpu_impl* g, const fgmm_data* x) {
    const int same = g->scan_x == x->x && g->scan_n == x->n && g->scan_d == x->d;
    if (same && !g->amax_pending) return FGMM_OK;
    double mark = fgmm_now();
    if (same && x->dtype == FGMM_F32 && is_resident(g, x, FMT_RAW)) { /* set_scan's means, max |x| here */
        float amax;
        int rc = fgmm_gpu_dgrow(&g->chk, sizeof(float), "constants scratch");
        if (rc) return rc;
        CU(cudaMemsetAsync(g->chk.p, 0, sizeof(float), g->st));
        KL(fgmm_abs_max(g->data.p, (long long)x->n * x->d, g->chk.p, g->st));
        if ((rc = fgmm_gpu_read_chk(g, &amax))) return rc;
        adopt_scan(g, x, g->data_mean, amax);
        fgmm_trace(&mark, "  gpu: max |x| of the resident rows");
        return FGMM_OK;
    }
    int d = x->d, dp = MEAN_DP(d), nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    double* part = calloc((size_t)nt * d, sizeof(double));
    float* sh = calloc((size_t)dp, sizeof(float));
    if (!part || !sh) {
        free(part);
        free(sh);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    float mx = 0;
#pragma omp parallel num_threads(nt) reduction(max : mx)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        double* acc = part + (size_t)t * d;
#pragma omp for schedule(static)
        for (long long i = 0; i < x->n; i++) {
            if (x->dtype == FGMM_U8) {
                const uint8_t* r = (const uint8_t*)x->x + (size_t)i * d;
                for (int j = 0; j < d; j++) acc[j] += r[j];
            } else {
                const float* r = (const float*)x->x + (size_t)i * d;
                for (int j = 0; j < d; j++) {
                    acc[j] += r[j];
                    float a = r[j] < 0 ? -r[j] : r[j];
                    mx = a > mx ? a : mx;
                }
            }
        }
    }
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += part[(size_t)t * d + j]; /* fixed order */
        sh[j] = (float)(s / (double)x->n);
    }
    free(part);
    adopt_scan(g, x, sh, mx);
    fgmm_trace(&mark, "  gpu: data scan (host: mean, max |x|)");
    return FGMM_OK;
}

/* The means now; max |x| (hence the prescale) when data_scan first needs it: from the rows on the
 * device if they are resident by then (k-means put them there), else a host scan after all. */
int fgmm_gpu_set_scan(fgmm_engine* e, const fgmm_data* x, const double* mean) {
    gpu_impl* g = e->impl;
    float* sh = calloc((size_t)MEAN_DP(x->d), sizeof(float));
    if (!sh) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    for (int j = 0; j < x->d; j++) sh[j] = (float)mean[j];
    adopt_scan(g, x, sh, 0);
    g->amax_pending = x->dtype != FGMM_U8; /* uint8 rows: 255 */
    return FGMM_OK;
}

int fgmm_gpu_scan(fgmm_engine* e, const fgmm_data* x) { return fgmm_gpu_data_scan(e->impl, x); }

int fgmm_gpu_adopt_scan(fgmm_engine* e, const fgmm_data* part, const fgmm_engine* from) {
    gpu_impl* g = e->impl;
    const gpu_impl* f = from->impl;
    if (g != f) {
        size_t bytes = (size_t)MEAN_DP(f->scan_d) * sizeof(float);
        float* mean = malloc(bytes);
        if (!mean) return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
        memcpy(mean, f->data_mean, bytes);
        free(g->data_mean);
        g->data_mean = mean;
        g->amax = f->amax;
        g->prep_scale = f->prep_scale;
    }
    g->scan_x = part->x;
    g->scan_n = part->n;
    g->scan_d = part->d;
    g->shift_ok = 0;
    return FGMM_OK;
}
