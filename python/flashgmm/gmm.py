# SPDX-License-Identifier: MIT
"""Gaussian mixtures (capi/flashgmm.h) and the vector-file reader (capi/flashgmm_io.h)."""
import ctypes

import numpy as np

from . import _lib, _params
from ._lib import lib
from ._progress import Progress


class Gmm(_lib.Owned):
    """A trained Gaussian mixture: means (k, d), variances (k,) isotropic or (k, d) diagonal,
    weights (k,), all float32 copies (they stay usable after close()). info: the training summary
    (train_gmm only)."""

    def __init__(self, handle, params=None, info=None):
        self._h = handle
        self._params = params if params is not None else gmm_params({})
        self.info = info
        self.k = lib.fgmm_model_k(handle)
        self.d = lib.fgmm_model_d(handle)
        self.covariance = {v: n for n, v in _params.COVARIANCE.items()}[lib.fgmm_model_covariance(handle)]
        self.means = np.ctypeslib.as_array(lib.fgmm_model_means(handle), (self.k, self.d)).copy()
        shape = (self.k,) if self.covariance == "isotropic" else (self.k, self.d)
        self.variances = np.ctypeslib.as_array(lib.fgmm_model_variances(handle), shape).copy()
        self.weights = np.ctypeslib.as_array(lib.fgmm_model_weights(handle), (self.k,)).copy()

    def _free(self, h):
        lib.fgmm_model_free(h)

    def __repr__(self):
        return "Gmm(k=%d, d=%d, covariance=%r%s)" % (self.k, self.d, self.covariance, ", closed" if self.closed else "")

    @classmethod
    def from_handle_copy(cls, handle):
        """An owned copy of a model the caller does not own (e.g. an index's)."""
        out = ctypes.c_void_p()
        lib.fgmm_model_new(ctypes.byref(out), lib.fgmm_model_k(handle), lib.fgmm_model_d(handle),
                           lib.fgmm_model_covariance(handle), lib.fgmm_model_means(handle),
                           lib.fgmm_model_variances(handle), lib.fgmm_model_weights(handle))
        return cls(out.value)

    def assign_topm(self, x, m=1):
        """The m most responsible components per row (1 <= m <= k), highest first: (labels int64
        (n, m), responsibilities float32 (n, m))."""
        h = self._handle()
        m = _lib.check_int(m, "m", ctypes.c_int, 1, self.k)
        x, dtype = _lib.rows(x, "x", self.d, allow_u8=True)
        labels = np.empty((x.shape[0], m), np.int64)
        resp = np.empty((x.shape[0], m), np.float32)
        lib.fgmm_assign_topm(h, ctypes.byref(self._params), x.shape[0], dtype, _lib.ptr(x), m,
                             _lib.ptr(labels), _lib.ptr(resp))
        return labels, resp

    def loglik(self, x):
        """log p(x_i) per row, float32 (n,)."""
        h = self._handle()
        x, dtype = _lib.rows(x, "x", self.d, allow_u8=True)
        out = np.empty(x.shape[0], np.float32)
        lib.fgmm_loglik(h, ctypes.byref(self._params), x.shape[0], dtype, _lib.ptr(x), _lib.ptr(out))
        return out

    def save(self, path):
        """Writes the binary model file (fgmm_model_write: a temporary file, then renamed)."""
        lib.fgmm_model_write(self._handle(), _lib.path_arg(path))

    @classmethod
    @_params.keywords((_params.GMM, _params.gmm_defaults()))
    def load(cls, path, **params):
        """Reads a model file; the keywords (backend, precision, gpu_device, ...) are used by
        assign_topm and loglik."""
        p = gmm_params(params)
        out = ctypes.c_void_p()
        lib.fgmm_model_read(_lib.path_arg(path), ctypes.byref(out))
        return cls(out.value, p)


def gmm_params(kw):
    """An FgmmParams with fgmm_params_init's defaults and the GMM keywords of kw."""
    p = _params.gmm_defaults()
    _params.fill(p, _params.GMM, kw)
    return p


@_params.keywords((_params.GMM, _params.gmm_defaults()))
def train_gmm(x, k, *, progress=None, verbose=False, **params):
    """Trains a k-component GMM (1 <= k < 2**31) on the rows of x ((n, d) float32, or uint8 read
    as is): k-means++ seeding, kmeans_iter Lloyd iterations, then EM.

    progress: a callable (phase "kmeans" | "em", iteration, mean_objective, reseeded) called after
    every iteration (an exception it raises is raised here once training has returned: the C
    library cannot stop it). verbose: print every iteration and the time left to stderr."""
    k = _lib.check_int(k, "k", ctypes.c_int, 1)
    x, dtype = _lib.rows(x, "x", allow_u8=True)
    p = gmm_params(params)
    p.k = k
    report = Progress()
    report.begin(p.kmeans_iter + p.niter, progress, verbose)
    if progress is not None or verbose:
        report.install(p)
    out = ctypes.c_void_p()
    info = _lib.FgmmTrainInfo()
    try:
        lib.fgmm_train(ctypes.byref(p), x.shape[0], x.shape[1], dtype, _lib.ptr(x), ctypes.byref(out),
                       ctypes.byref(info))
        p.progress = _lib.ProgressFn()  # NULL: the model's later calls (assign_topm, loglik) report nothing
        model = Gmm(out.value, p, info.as_dict())
    finally:
        report.check()
    report.summary(info)
    return model


def read_vecs(path, dataset=None, max_rows=0, in_process=False):
    """Reads .fvecs / .bvecs / .ivecs or an HDF5 dataset (default "train", then "dataset") into a
    numpy array: float32, uint8 or int32 as stored. HDF5 files are parsed in a child process
    (fgmm_vecs_read_isolated: a libhdf5 crash on a malformed file raises FlashgmmError instead of
    ending Python); in_process=True parses them here (fgmm_vecs_read: trusted files only)."""
    v = _lib.FgmmVecs()
    read = lib.fgmm_vecs_read if in_process else lib.fgmm_vecs_read_isolated
    read(_lib.path_arg(path), dataset.encode() if dataset else None, max_rows, ctypes.byref(v))
    try:
        ctype = {_lib.F32: ctypes.c_float, _lib.U8: ctypes.c_uint8, _lib.I32: ctypes.c_int32}[v.dtype]
        if v.n == 0:
            return np.empty((0, v.d), np.dtype(ctype))
        return np.ctypeslib.as_array(ctypes.cast(v.data, ctypes.POINTER(ctype)), (v.n, v.d)).copy()
    finally:
        lib.fgmm_vecs_free(ctypes.byref(v))


def gpu_available():
    """True if this build of the library can use a CUDA device."""
    return bool(lib.fgmm_gpu_available())


def gpu_prestart(device=0):
    """Starts CUDA (its driver and the device's context: a process's first GPU training would spend
    about 0.2-0.3 s on them) on a background thread and returns at once. Call it before reading the
    data (read_vecs, np.load, ...) so that the start overlaps the reading; training then finds it
    done. True if started (or started before), False if this build of the library has no CUDA (or
    predates the call). A failed start is reported by the GPU training, as without this call.
    docs/gpu.md, "Cold start"."""
    device = _lib.check_int(device, "device", ctypes.c_int, 0)
    if not _lib.HAS_PRESTART:
        return False
    rc = lib.fgmm_gpu_prestart(device)
    if rc == _lib.ERR_NO_GPU:
        return False
    if rc:
        raise _lib.FlashgmmError(rc, lib.fgmm_get_last_error().decode(errors="replace"))
    return True
