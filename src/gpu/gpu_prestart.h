/* SPDX-License-Identifier: MIT */
/* gpu_prestart.h: what the GPU backend's device setup calls of fgmm_gpu_prestart (gpu_prestart.c). */
#ifndef FGMM_GPU_PRESTART_H
#define FGMM_GPU_PRESTART_H

/* Waits until a prestart of device, begun in this process, has ended; returns at once if none was
 * begun. Its outcome is not returned: the caller's own CUDA calls find the same state (a failed
 * start fails them again) and report it. */
void fgmm_gpu_prestart_wait(int device);

#endif
