/* SPDX-License-Identifier: MIT */
/* gpu_plan.c: which path a GPU pass runs, decided here only. Inputs: the engine's options (the
 * precision's path unless a test or benchmark forced another, gpu_engine.h), the device (sm_90:
 * wgmma), the covariance and the dimension; the callers add what depends on the data (whether the
 * prepared rows fit resident, whether the model's prescaled values stay in fp16 range). FGMM_TRACE=1
 * prints each plan that differs from the engine's last one. */
#include <pthread.h>
#include <string.h>

#include "gpu_impl.h"

static pthread_mutex_t options_lock = PTHREAD_MUTEX_INITIALIZER;
static fgmm_gpu_options options = {-1, -1, 0, 0, FGMM_GPU_WS_OFF};

void fgmm_gpu_options_init(fgmm_gpu_options* o) {
    if (o) *o = (fgmm_gpu_options){-1, -1, 0, 0, FGMM_GPU_WS_OFF};
}

void fgmm_gpu_set_options(const fgmm_gpu_options* o) {
    pthread_mutex_lock(&options_lock);
    if (o) options = *o;
    else fgmm_gpu_options_init(&options);
    pthread_mutex_unlock(&options_lock);
}

/* The options of an engine being created for precision prec. */
void fgmm_gpu_engine_options(fgmm_gpu_options* o, FgmmPrecision prec) {
    pthread_mutex_lock(&options_lock);
    *o = options;
    pthread_mutex_unlock(&options_lock);
    if (o->path < 0) o->path = prec == FGMM_PREC_EXACT ? FGMM_GPU_PATH_FUSED_EXACT : FGMM_GPU_PATH_FUSED;
    o->onepass = o->onepass < 0 ? -1 : o->onepass != 0;
}

/* The prepared format of the fused kernels' rows, FMT_RAW where the rows would not fit their width:
 * isotropic d <= FGMM_FUSED_MAX_D; diagonal rows [x', x'^2] are 2d wide, up to 256 with wgmma (sm_90,
 * not the mma.sync path), else FGMM_FUSED_MAX_D. */
static int prepared_fmt(const gpu_impl* g, FgmmCovariance cov, int d) {
    if (cov != FGMM_COV_DIAGONAL) return d <= FGMM_FUSED_MAX_D ? FMT_F16 : FMT_RAW;
    int width = g->wg && g->opt.path == FGMM_GPU_PATH_FUSED ? 2 * FGMM_FUSED_MAX_D : FGMM_FUSED_MAX_D;
    return 2 * d <= width ? FMT_F16_DIAG : FMT_RAW;
}

static void trace_plan(gpu_impl* g, gpu_pass pass, FgmmCovariance cov, int d, const gpu_plan* p) {
    static const char* pass_name[] = {"e-step", "em", "k-means", "assign"};
    static const char* mode_name[] = {"bf16", "exact (3x bf16)", "fp16 prescaled"};
    static const char* onepass_name[] = {"at kp = 128", "off", "on"}; /* onepass + 1 */
    /* what runs where the prepared rows do not fit resident */
    const char* fallback = "rows as given, mma.sync";
    if (pass == GPU_PASS_EM) fallback = "the e-step and host M-step";
    else if (pass == GPU_PASS_KMEANS || p->fmt == FMT_F16_DIAG) fallback = "cuBLAS fp32 row tiles";
    char rows[120], line[200], wsd[64] = "";
    if (p->ws) snprintf(wsd, sizeof wsd, ", warp-specialised");
    if (p->fmt == FMT_RAW) snprintf(rows, sizeof rows, "rows as given, mma.sync");
    else
        snprintf(rows, sizeof rows, "prepared %s rows, %s, where they fit resident; else %s",
                 p->fmt == FMT_F16 ? "fp16" : "fp16 [x, x^2]", p->wgmma ? "wgmma" : "mma.sync", fallback);
    if (pass == GPU_PASS_EM && !p->device_em)
        snprintf(line, sizeof line, "no device EM iteration: the e-step and host M-step");
    else if (!p->fused)
        snprintf(line, sizeof line, "cuBLAS fp32 row tiles%s", pass == GPU_PASS_KMEANS && p->tf32 ? ", TF32" : "");
    else
        snprintf(line, sizeof line, "fused %s, one-pass %s%s; %s", mode_name[p->mode], onepass_name[p->onepass + 1],
                 wsd, rows);
    char full[sizeof g->plan_traced];
    snprintf(full, sizeof full, "  gpu plan: %s, %s d = %d: %s", pass_name[pass],
             cov == FGMM_COV_DIAGONAL ? "diagonal" : "isotropic", d, line);
    if (!strcmp(full, g->plan_traced)) return;
    memcpy(g->plan_traced, full, sizeof full);
    fgmm_trace_note("%s", full);
}

void fgmm_gpu_plan(gpu_impl* g, gpu_pass pass, FgmmCovariance cov, int d, gpu_plan* p) {
    const int path = g->opt.path;
    const int prepared = path == FGMM_GPU_PATH_FUSED || path == FGMM_GPU_PATH_FUSED_MMA;
    memset(p, 0, sizeof *p);
    p->mode = FGMM_FUSED_FP16;
    if (path == FGMM_GPU_PATH_FUSED_EXACT) p->mode = FGMM_FUSED_EXACT;
    else if (path == FGMM_GPU_PATH_FUSED_BF16) p->mode = FGMM_FUSED_BF16;
    p->wgmma = g->wg && path != FGMM_GPU_PATH_FUSED_MMA;
    p->onepass = g->opt.onepass;
    p->ws = p->wgmma && path == FGMM_GPU_PATH_FUSED ? g->opt.ws : 0;
    p->fmt = prepared ? prepared_fmt(g, cov, d) : FMT_RAW;
    switch (pass) {
    case GPU_PASS_ESTEP:
        p->fused = path != FGMM_GPU_PATH_BLAS && (cov == FGMM_COV_DIAGONAL ? p->fmt != FMT_RAW : d <= FGMM_FUSED_MAX_D);
        break;
    case GPU_PASS_EM:
        p->device_em = path == FGMM_GPU_PATH_FUSED && p->fmt != FMT_RAW && !g->opt.host_mstep;
        p->fused = p->device_em;
        break;
    case GPU_PASS_KMEANS: /* the fused kernels at a vanishing variance (fast precision, resident rows) */
        p->fused = prepared && d <= FGMM_FUSED_MAX_D;
        p->tf32 = path != FGMM_GPU_PATH_FUSED_EXACT && path != FGMM_GPU_PATH_BLAS;
        break;
    case GPU_PASS_ASSIGN: /* top-m selection on cuBLAS tiles */ break;
    }
    if (fgmm_trace_on()) trace_plan(g, pass, cov, d, p);
}
