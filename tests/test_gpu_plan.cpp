/* SPDX-License-Identifier: MIT */
// src/gpu/gpu_plan.c: the one function that decides which GPU path a pass runs, against the
// expressions it replaced (spread over gpu_model.c, gpu_estep.c, gpu_em.c, gpu_kmeans_assign.c and
// gpu_impl.h before issue 24), for every forced path, device kind, covariance and a range of d.
// Needs no device: the plan reads the engine's options and device kind only.
#include <gtest/gtest.h>

#ifdef FGMM_WITH_CUDA
#include <cstring>

#include "gpu_impl.h"

namespace {

// The decisions as the files made them before fgmm_gpu_plan (g->path was the forced path).
struct OldPlan {
    int estep_fused, mode, fmt, prep_allowed, wgmma, device_em, kmeans_fused, tf32;
};

OldPlan old_plan(int path, int wg, FgmmCovariance cov, int d, int host_mstep) {
    OldPlan o{};
    // gpu_impl.h prepared_fmt
    int pfmt;
    if (cov != FGMM_COV_DIAGONAL) {
        pfmt = d <= FGMM_FUSED_MAX_D ? FMT_F16 : FMT_RAW;
    } else {
        int width = wg && path == FGMM_GPU_PATH_FUSED ? 2 * FGMM_FUSED_MAX_D : FGMM_FUSED_MAX_D;
        pfmt = 2 * d <= width ? FMT_F16_DIAG : FMT_RAW;
    }
    // gpu_estep.c: c.prep = (FUSED || FUSED_MMA) && fmt != FMT_RAW && fits
    o.prep_allowed = (path == FGMM_GPU_PATH_FUSED || path == FGMM_GPU_PATH_FUSED_MMA) && pfmt != FMT_RAW;
    o.fmt = pfmt;
    // gpu_model.c: fused = (diag ? prep : d <= MAX_D) && path != BLAS (prep: where it is allowed)
    o.estep_fused = (cov == FGMM_COV_DIAGONAL ? o.prep_allowed : d <= FGMM_FUSED_MAX_D) && path != FGMM_GPU_PATH_BLAS;
    o.mode = path == FGMM_GPU_PATH_FUSED_EXACT  ? FGMM_FUSED_EXACT
             : path == FGMM_GPU_PATH_FUSED_BF16 ? FGMM_FUSED_BF16
                                                : FGMM_FUSED_FP16;
    o.wgmma = wg && path != FGMM_GPU_PATH_FUSED_MMA;
    // gpu_em.c (and the host_mstep option, which never calls em_step)
    o.device_em = path == FGMM_GPU_PATH_FUSED && pfmt != FMT_RAW && !host_mstep;
    // gpu_kmeans_assign.c
    o.kmeans_fused = (path == FGMM_GPU_PATH_FUSED || path == FGMM_GPU_PATH_FUSED_MMA) && d <= FGMM_FUSED_MAX_D;
    o.tf32 = path != FGMM_GPU_PATH_FUSED_EXACT && path != FGMM_GPU_PATH_BLAS;
    return o;
}

}  // namespace

TEST(GpuPlan, DecidesAsTheSixSitesDidBefore) {
    gpu_impl g;
    int checked = 0;
    for (int path = FGMM_GPU_PATH_FUSED; path <= FGMM_GPU_PATH_FUSED_MMA; path++)
        for (int wg = 0; wg <= 1; wg++)
            for (int host_mstep = 0; host_mstep <= 1; host_mstep++)
                for (FgmmCovariance cov : {FGMM_COV_ISOTROPIC, FGMM_COV_DIAGONAL})
                    for (int d = 1; d <= 300; d++) {
                        memset(&g, 0, sizeof g);
                        g.wg = wg;
                        fgmm_gpu_options_init(&g.opt);
                        g.opt.path = path;
                        g.opt.onepass = (d % 3) - 1;
                        g.opt.host_mstep = host_mstep;
                        const OldPlan o = old_plan(path, wg, cov, d, host_mstep);
                        SCOPED_TRACE(testing::Message() << "path " << path << " wg " << wg << " cov " << cov << " d "
                                                        << d << " host_mstep " << host_mstep);
                        gpu_plan p;
                        fgmm_gpu_plan(&g, GPU_PASS_ESTEP, cov, d, &p);
                        EXPECT_EQ(p.fused, o.estep_fused);
                        EXPECT_EQ(p.mode, o.mode);
                        EXPECT_EQ(p.fmt != FMT_RAW, o.prep_allowed);
                        if (o.prep_allowed) EXPECT_EQ(p.fmt, o.fmt);
                        EXPECT_EQ(p.wgmma, o.wgmma);
                        EXPECT_EQ(p.onepass, (d % 3) - 1);
                        fgmm_gpu_plan(&g, GPU_PASS_EM, cov, d, &p);
                        EXPECT_EQ(p.device_em, o.device_em);
                        if (p.device_em) EXPECT_EQ(p.fmt, o.fmt);
                        EXPECT_EQ(p.wgmma, o.wgmma);
                        fgmm_gpu_plan(&g, GPU_PASS_KMEANS, FGMM_COV_ISOTROPIC, d, &p);
                        EXPECT_EQ(p.fused, o.kmeans_fused);
                        EXPECT_EQ(p.tf32, o.tf32);
                        fgmm_gpu_plan(&g, GPU_PASS_ASSIGN, cov, d, &p);
                        EXPECT_EQ(p.fused, 0);
                        checked++;
                    }
    EXPECT_EQ(checked, 6 * 2 * 2 * 2 * 300);
}

TEST(GpuPlan, EngineOptionsComeFromTheSetterNotTheEnvironment) {
    fgmm_gpu_options o;
    fgmm_gpu_options_init(&o);
    EXPECT_EQ(o.path, -1);
    EXPECT_EQ(o.onepass, -1);
    EXPECT_EQ(o.host_mstep, 0);
    EXPECT_EQ(o.tile_rows, 0);
    EXPECT_EQ(o.ws, FGMM_GPU_WS_OFF);
    fgmm_gpu_options got;
    fgmm_gpu_engine_options(&got, FGMM_PREC_FAST);
    EXPECT_EQ(got.path, FGMM_GPU_PATH_FUSED);
    fgmm_gpu_engine_options(&got, FGMM_PREC_EXACT);
    EXPECT_EQ(got.path, FGMM_GPU_PATH_FUSED_EXACT);
    o.path = FGMM_GPU_PATH_BLAS;
    o.onepass = 7;  // any non-zero: on
    o.host_mstep = 1;
    fgmm_gpu_set_options(&o);
    fgmm_gpu_engine_options(&got, FGMM_PREC_EXACT);
    fgmm_gpu_set_options(nullptr);
    EXPECT_EQ(got.path, FGMM_GPU_PATH_BLAS);
    EXPECT_EQ(got.onepass, 1);
    EXPECT_EQ(got.host_mstep, 1);
    fgmm_gpu_engine_options(&got, FGMM_PREC_FAST);  // reset by NULL
    EXPECT_EQ(got.path, FGMM_GPU_PATH_FUSED);
    EXPECT_EQ(got.onepass, -1);
    EXPECT_EQ(got.host_mstep, 0);
}
#endif
