# SPDX-License-Identifier: MIT
"""Per-iteration progress of a training call: the user's callable, and/or a printed line with the
time left (verbose)."""
import sys
import time

from . import _lib

PHASES = ("kmeans", "em")


class Progress:
    """An FgmmProgressFn (install puts it in an FgmmParams) reporting the training call that begin
    announced: `total` iterations (kmeans_iter + niter: EM may stop earlier on tol), fn(phase,
    iteration, mean_objective, reseeded) called after each (phase "kmeans" or "em", iteration from
    0 in its phase), a line printed per iteration if verbose. The C library cannot stop training:
    the first exception of a call (KeyboardInterrupt included) stops the reports and is raised by
    check() once the C call has returned."""

    def __init__(self):
        self._c = _lib.ProgressFn(self._called)  # lives as long as self
        self.begin(0)

    def begin(self, total, fn=None, verbose=False, stream=None):
        self.total, self.fn, self.verbose = total, fn, verbose
        self.stream = stream if stream is not None else sys.stderr
        self.error = None
        self.done = 0
        self.start = self.phase_start = time.perf_counter()
        self.phase, self.phase_done = None, 0

    def install(self, params):
        params.progress = self._c

    def seconds_left(self, now):
        """Iterations left times the mean time of the current phase's iterations (of the whole run
        while the phase has had one: its first also holds k-means++ seeding, or the phase change)."""
        if self.phase_done >= 2:
            rate = (now - self.phase_start) / (self.phase_done - 1)
        else:
            rate = (now - self.start) / self.done
        return max(self.total - self.done, 0) * rate

    def _called(self, user, phase, it, objective, reseeded):
        if self.error is not None or (self.fn is None and not self.verbose):
            return
        try:
            now = time.perf_counter()
            self.done += 1
            if phase != self.phase:
                self.phase, self.phase_done = phase, 0
            self.phase_done += 1
            if self.phase_done == 1:
                self.phase_start = now
            if self.verbose:
                what = "mean sq. distance %.6g" % -objective if phase == 0 else "mean log-likelihood %.6f" % objective
                print("flashgmm: %-6s %3d  iteration %d/%d  %s%s  %.1f s, ~%.0f s left"
                      % (PHASES[phase], it + 1, self.done, self.total, what, "  (re-seeded %d)" % reseeded
                         if reseeded else "", now - self.start, self.seconds_left(now)),
                      file=self.stream, flush=True)
            if self.fn is not None:
                self.fn(PHASES[phase], it, objective, reseeded)
        except BaseException as e:  # an exception must not unwind through C; check() raises it
            self.error = e

    def check(self):
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def summary(self, info):
        """Prints the outcome of the call (an FgmmTrainInfo) if verbose."""
        if self.verbose:
            em = ", mean log-likelihood %.6f" % info.mean_loglik if info.em_iterations else ""
            print("flashgmm: trained in %.1f s (%s, %d k-means + %d EM iterations%s)"
                  % (info.seconds, info.backend.decode() if info.backend else "?", info.kmeans_iterations,
                     info.em_iterations, em), file=self.stream, flush=True)
