/* SPDX-License-Identifier: MIT */
/* tma.cuh: Hopper (sm_90) asynchronous copies that complete on shared-memory mbarriers: the tensor
 * copy engine (TMA, a 2-D box of a tensor map) and plain bulk copies. Used by the warp-specialised
 * E-step (estep_ws.cu). Defined only where FGMM_WGMMA is 1 (wgmma.cuh). */
#ifndef FGMM_TMA_CUH
#define FGMM_TMA_CUH
#include <cuda.h> /* CUtensorMap (a 128-byte value type; no driver library is linked) */
#include <stdint.h>

#include "fused_tiles.cuh"

#if FGMM_WGMMA
/* An mbarrier at shared address a expecting `count` arrivals per phase. */
__device__ __forceinline__ void mbar_init(uint64_t* b, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
/* Makes initialised mbarriers visible to the async proxy (the copy engine) and the other threads
 * (with the __syncthreads that follows). */
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* (thread 0) A pipeline's mbarriers: per stage a "full" one (the producer's arrival with the copies'
 * bytes) and an "empty" one (`consumers` arrivals), and `once` (one arrival: a load done once); the
 * caller's block barrier follows. */
template <int NST>
__device__ __forceinline__ void mbar_init_stages(uint64_t (&full)[NST], uint64_t (&empty)[NST], unsigned consumers,
                                                 uint64_t* once) {
    if (threadIdx.x != 0) return;
    for (int s = 0; s < NST; s++) {
        mbar_init(&full[s], 1);
        mbar_init(&empty[s], consumers);
    }
    mbar_init(once, 1);
    mbar_init_fence();
}
/* One arrival that also announces `bytes` of asynchronous copies completing on this phase. */
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
/* One arrival (release: this thread's earlier shared-memory accesses happen before the phase ends). */
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
}
/* Waits until the phase of the given parity has completed (acquire). A fresh barrier counts the
 * phase of parity 1 as completed: producers wait on parity 1 first. A phase that never completes
 * (a broken protocol, a copy that faults) traps after about 4 s instead of hanging the device: the
 * launch then fails with an error the host reports. */
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
    const uint32_t a = smem_u32(b);
    uint32_t ok, tries = 0;
    uint64_t t0 = 0;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(ok)
            : "r"(a), "r"(parity)
            : "memory");
        if (!ok && (++tries & 1023u) == 0) { /* the clock read only now and then */
            uint64_t t;
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
            if (!t0) t0 = t;
            else if (t - t0 > 4000000000ull) __trap();
        }
    } while (!ok);
}
/* The copy engine: box (c0, c1) of the 2-D tensor map (a __grid_constant__ kernel parameter) into
 * shared memory at dst (the map's swizzle applied), completing on bar. */
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(smem_u32(dst)),
        "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(smem_u32(bar))
        : "memory");
}
/* bytes (a multiple of 16; both addresses 16-byte aligned) from global src to shared dst, completing on bar. */
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
#endif
#endif
