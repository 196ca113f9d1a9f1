/* SPDX-License-Identifier: MIT */
/* gpu_engine.c: the GPU backend of the engine (host side; kernels in kernels/): creation and
 * destruction, the operations table, the benchmarks' controls. The rest: gpu_buf.c (errors, device
 * and pinned buffers), gpu_data.c (residency, streaming, the data scan), gpu_model.c (model upload and constants),
 * gpu_estep.c, gpu_stats.c (statistics pending on the device), gpu_kmeans_assign.c (k-means,
 * k-means++ seeding, assignment), gpu_em.c (EM iterations on the device); gpu_impl.h declares what
 * they share.
 *
 * Data: copied to the device once and cached while the same host array is
 * used (an EM run); if it does not fit in the memory budget it is streamed in
 * row chunks through two pinned buffers, copies overlapping compute on a second
 * stream. For the fused fp16 E-step the resident copy is kept "prepared":
 * centred on the data mean, prescaled, fp16, with fp32 row norms (fewer bytes
 * than fp32 rows; the kernels copy tiles without converting them; on sm_90 the
 * rows are padded to a multiple of 64 columns for the wgmma kernels).
 * Statistics are summed across chunks in double on the device. The M-step:
 * em_step runs it on the device with the model kept there (prepared resident
 * rows, isotropic or diagonal); otherwise the host's, shared with the CPU backend.
 * E-step: the fused kernel for isotropic d <= FGMM_FUSED_MAX_D, and for
 * diagonal covariance in fast mode on resident rows [x', x'^2] where 2d fits
 * (same kernels: the log-density is linear in those features); otherwise row
 * tiles around cuBLAS SGEMMs (memory O(tile k)), which also serve k-means and
 * top-m assignment.
 */
#include <stdlib.h>
#include <string.h>

#include "gpu_impl.h"
#include "gpu_prestart.h"

int fgmm_gpu_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0;
}

static void gpu_destroy(fgmm_engine* e) {
    if (!e) return;
    gpu_impl* g = e->impl;
    if (g) {
        cudaSetDevice(g->dev);
        /* clang-format off */
#define FREE_BUF(b) if (g->b.p) cudaFree(g->b.p);
        FREE_BUF(data) FREE_BUF(xnorm) FREE_BUF(chunk[0]) FREE_BUF(chunk[1]) GPU_SCRATCH_BUFS(FREE_BUF)
#undef FREE_BUF
        if (g->host_stats) cudaFreeHost(g->host_stats);
        /* clang-format on */
        if (g->host_up) cudaFreeHost(g->host_up);
        free(g->data_mean);
        fgmm_gpu_pinned_pair_release(g);
        for (int i = 0; i < 2; i++) {
            if (g->copied[i]) cudaEventDestroy(g->copied[i]);
            if (g->consumed[i]) cudaEventDestroy(g->consumed[i]);
        }
        for (int i = 0; i < 3; i++)
            if (g->tev[i]) cudaEventDestroy(g->tev[i]);
        if (g->blas) cublasDestroy(g->blas);
        if (g->st) cudaStreamDestroy(g->st);
        if (g->copy_st) cudaStreamDestroy(g->copy_st);
        fgmm_engine_destroy(g->cpu);
        free(g);
    }
    free(e);
}

static const fgmm_engine_ops gpu_ops = {"gpu",
                                        fgmm_gpu_estep,
                                        fgmm_gpu_kmeans,
                                        fgmm_gpu_assign,
                                        gpu_destroy,
                                        fgmm_gpu_em_step,
                                        fgmm_gpu_em_fetch,
                                        fgmm_gpu_seed_pp,
                                        fgmm_gpu_set_scan,
                                        NULL};

int fgmm_engine_gpu_create(fgmm_engine** out, int device, size_t mem_limit, FgmmPrecision prec) {
    FGMM_CHECK_NULL(out);
    *out = NULL;
    int n = 0;
    fgmm_gpu_prestart_wait(device); /* a start begun by fgmm_gpu_prestart ends first */
    double mark = fgmm_now();
    cudaError_t ce = cudaGetDeviceCount(&n); /* the driver starts here, unless fgmm_gpu_prestart started it */
    if (ce != cudaSuccess || n == 0) {
        cudaGetLastError();
        return fgmm_fail(FGMM_ERR_NO_GPU, "no CUDA device available (%s)", ce ? cudaGetErrorString(ce) : "0 devices");
    }
    if (device < 0 || device >= n) return fgmm_fail(FGMM_ERR_ARG, "gpu_device = %d; %d device(s) present", device, n);
    fgmm_trace(&mark, "  gpu: CUDA driver (device count)");
    fgmm_engine* e = calloc(1, sizeof *e);
    gpu_impl* g = calloc(1, sizeof *g);
    if (!e || !g) {
        free(e);
        free(g);
        return fgmm_fail(FGMM_ERR_NOMEM, "out of host memory");
    }
    e->ops = &gpu_ops;
    e->impl = g;
    e->precision = prec;
    g->dev = device;
    g->mem_limit = mem_limit;
    {
        int major = 0, minor = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device))
            cudaGetLastError();
        g->wg = major == 9 && minor == 0;
    }
    fgmm_gpu_engine_options(&g->opt, prec);
    int rc = FGMM_OK;
    cudaStream_t st = NULL, copy_st = NULL; /* kept only once made (a failed create may leave a stale handle) */
    ce = cudaSetDevice(device);             /* makes the primary context */
    fgmm_trace(&mark, "  gpu: context (cudaSetDevice)");
    if (ce || (ce = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) ||
        ((g->st = st), (ce = cudaStreamCreateWithFlags(&copy_st, cudaStreamNonBlocking))))
        rc = fgmm_gpu_cuda_fail(ce, "device setup");
    else g->copy_st = copy_st;
    for (int i = 0; i < 2 && !rc; i++)
        if ((ce = cudaEventCreateWithFlags(&g->copied[i], cudaEventDisableTiming)) ||
            (ce = cudaEventCreateWithFlags(&g->consumed[i], cudaEventDisableTiming)))
            rc = fgmm_gpu_cuda_fail(ce, "event setup");
    for (int i = 0; i < 3 && !rc; i++)
        if ((ce = cudaEventCreate(&g->tev[i]))) rc = fgmm_gpu_cuda_fail(ce, "event setup");
    fgmm_trace(&mark, "  gpu: streams, events"); /* cuBLAS: at its first use (fgmm_gpu_blas_tile) */
    if (!rc) rc = fgmm_engine_cpu_create(&g->cpu);
    if (rc) {
        gpu_destroy(e);
        return rc;
    }
    *out = e;
    return FGMM_OK;
}

int fgmm_engine_gpu_set_path(fgmm_engine* e, int path, long long tile_rows) {
    FGMM_CHECK_NULL(e);
    if (e->ops != &gpu_ops) return fgmm_fail(FGMM_ERR_STATE, "not a GPU engine");
    gpu_impl* g = e->impl;
    g->opt.path = path;
    g->opt.tile_rows = tile_rows;
    return FGMM_OK;
}

int fgmm_engine_gpu_set_onepass(fgmm_engine* e, int on) {
    FGMM_CHECK_NULL(e);
    if (e->ops != &gpu_ops) return fgmm_fail(FGMM_ERR_STATE, "not a GPU engine");
    ((gpu_impl*)e->impl)->opt.onepass = on < 0 ? -1 : on != 0;
    return FGMM_OK;
}

int fgmm_engine_gpu_set_ws(fgmm_engine* e, int variant) {
    FGMM_CHECK_NULL(e);
    if (e->ops != &gpu_ops) return fgmm_fail(FGMM_ERR_STATE, "not a GPU engine");
    _Static_assert(FGMM_GPU_WS_PIPE == FGMM_WS_PIPE2 && FGMM_GPU_WS_PLAIN == FGMM_WS_PLAIN2, "variant codes");
    if (variant < 0 || variant > (FGMM_GPU_WS_LSE | FGMM_GPU_WS_ACC) ||
        (variant > 0 && (variant & FGMM_GPU_WS_ACC) == FGMM_GPU_WS_ACC))
        return fgmm_fail(FGMM_ERR_ARG, "unknown warp-specialised E-step variant %d", variant);
    ((gpu_impl*)e->impl)->opt.ws = variant;
    return FGMM_OK;
}

long long fgmm_engine_gpu_ws_launches(const fgmm_engine* e) {
    return e && e->ops == &gpu_ops ? ((const gpu_impl*)e->impl)->ws_launches : -1;
}

int fgmm_engine_gpu_device(const fgmm_engine* e) {
    return e && e->ops == &gpu_ops ? ((const gpu_impl*)e->impl)->dev : -1;
}

int fgmm_engine_gpu_sync(fgmm_engine* e, size_t* scratch_bytes) {
    FGMM_CHECK_NULL(e);
    if (e->ops != &gpu_ops) return fgmm_fail(FGMM_ERR_STATE, "not a GPU engine");
    gpu_impl* g = e->impl;
    CU(cudaStreamSynchronize(g->st));
    if (scratch_bytes) {
        size_t s = g->chunk[0].cap + g->chunk[1].cap;
#define ADD_CAP(b) s += g->b.cap;
        GPU_SCRATCH_BUFS(ADD_CAP)
#undef ADD_CAP
        *scratch_bytes = s;
    }
    return FGMM_OK;
}

int fgmm_engine_gpu_pass_ms(fgmm_engine* e, float* lse_ms, float* acc_ms) {
    FGMM_CHECK_NULL(e);
    if (e->ops != &gpu_ops) return fgmm_fail(FGMM_ERR_STATE, "not a GPU engine");
    gpu_impl* g = e->impl;
    *lse_ms = *acc_ms = 0.f;
    if (!g->timed) return FGMM_OK;
    CU(cudaEventSynchronize(g->tev[2]));
    CU(cudaEventElapsedTime(lse_ms, g->tev[0], g->tev[1]));
    CU(cudaEventElapsedTime(acc_ms, g->tev[1], g->tev[2]));
    return FGMM_OK;
}
