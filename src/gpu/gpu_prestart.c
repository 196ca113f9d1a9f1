/* SPDX-License-Identifier: MIT */
/* gpu_prestart.c: fgmm_gpu_prestart, the CUDA driver and a device's primary context started on a
 * background thread while the caller reads its data (the start is a process's first GPU cost).
 *
 * One slot per device: IDLE -> RUNNING (a thread started) -> JOINING (one waiter joins it) -> DONE.
 * The mutex is held only to read or change a state and to start a thread, never while a thread is
 * joined, so fgmm_gpu_prestart never waits for a start in progress.
 * Every started thread is joined: by the device's first engine creation (fgmm_gpu_prestart_wait)
 * or by an exit handler, so that no thread is inside CUDA while exit tears the runtime down or
 * dlclose unmaps this code. Exit handlers run in reverse order of registration and CUDA registers
 * its own while it starts, so the handler is registered twice: before the thread starts (it then
 * runs after CUDA's) and again by the thread once the driver is up (it then runs before CUDA's,
 * covering the context's creation). A forked child has none of the parent's threads: at fork its
 * slots in progress become DONE (CUDA does not work in a child of a process that started it). */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_prestart.h"
#include "internal.h"

enum { IDLE, RUNNING, JOINING, DONE };

typedef struct slot {
    int state;
    pthread_t th;
} slot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t joined = PTHREAD_COND_INITIALIZER;
static slot slots[FGMM_PRESTART_DEVICES];
static int handlers, exiting; /* exit and fork handlers registered; the exit handler has run */

/* Joins slot s's thread if this caller is the first to ask, else waits for the one who joins it;
 * 1 if a start was under way. */
static int wait_slot(slot* s) {
    pthread_mutex_lock(&mu);
    const int begun = s->state == RUNNING || s->state == JOINING;
    while (s->state == JOINING) pthread_cond_wait(&joined, &mu);
    if (s->state == RUNNING) {
        s->state = JOINING;
        pthread_t th = s->th;
        pthread_mutex_unlock(&mu);
        pthread_join(th, NULL);
        pthread_mutex_lock(&mu);
        s->state = DONE;
        pthread_cond_broadcast(&joined);
    }
    pthread_mutex_unlock(&mu);
    return begun;
}

static void join_all_at_exit(void) {
    pthread_mutex_lock(&mu);
    exiting = 1;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < FGMM_PRESTART_DEVICES; i++) wait_slot(&slots[i]);
}

static void fork_prepare(void) { pthread_mutex_lock(&mu); }
static void fork_parent(void) { pthread_mutex_unlock(&mu); }
static void fork_child(void) {
    for (int i = 0; i < FGMM_PRESTART_DEVICES; i++)
        if (slots[i].state == RUNNING || slots[i].state == JOINING) slots[i].state = DONE;
    pthread_cond_init(&joined, NULL); /* no waiter of the parent's exists here */
    pthread_mutex_unlock(&mu);        /* locked by this thread in fork_prepare */
}

static void* prestart_run(void* arg) {
    int device = (int)(intptr_t)arg, n = 0;
    double mark = fgmm_now();
    cudaError_t ce = cudaGetDeviceCount(&n); /* the driver starts here; CUDA registers its exit handler */
    atexit(join_all_at_exit);                /* ahead of CUDA's (if this fails, the first one still joins) */
    if (ce == cudaSuccess && device < n) {
        ce = cudaSetDevice(device); /* the device's primary context */
        if (ce == cudaSuccess) ce = cudaFree(NULL);
    }
    if (fgmm_trace_on()) {
        char what[160];
        snprintf(what, sizeof what, "gpu prestart, device %d: %s", device,
                 ce           ? cudaGetErrorString(ce)
                 : device < n ? "driver and context"
                              : "no such device");
        fgmm_trace(&mark, what);
    }
    return NULL;
}

int fgmm_gpu_prestart(int device) {
    int rc = fgmm_prestart_device_check(device);
    if (rc) return rc;
    pthread_mutex_lock(&mu);
    slot* s = &slots[device];
    if (exiting) rc = fgmm_fail(FGMM_ERR_STATE, "fgmm_gpu_prestart: the process is exiting (its exit handler has run)");
    else if (s->state == IDLE) {
        if (!handlers && (atexit(join_all_at_exit) || pthread_atfork(fork_prepare, fork_parent, fork_child)))
            rc = fgmm_fail(FGMM_ERR_NOMEM, "fgmm_gpu_prestart: cannot register its exit and fork handlers");
        else {
            handlers = 1;
            int e = pthread_create(&s->th, NULL, prestart_run, (void*)(intptr_t)device);
            if (e) rc = fgmm_fail(FGMM_ERR_NOMEM, "fgmm_gpu_prestart: cannot start a thread (%s)", strerror(e));
            else s->state = RUNNING;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

void fgmm_gpu_prestart_wait(int device) {
    if (device < 0 || device >= FGMM_PRESTART_DEVICES) return;
    double mark = fgmm_now();
    if (wait_slot(&slots[device])) fgmm_trace(&mark, "gpu: wait for fgmm_gpu_prestart");
}
