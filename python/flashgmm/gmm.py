"""Gaussian mixtures (capi/flashgmm.h) and the vector-file reader (capi/flashgmm_io.h)."""
import ctypes

import numpy as np

from . import _lib
from ._lib import lib

COVARIANCE = {"isotropic": 0, "diagonal": 1}
BACKEND = {"auto": 0, "cpu": 1, "gpu": 2}
PRECISION = {"fast": 0, "exact": 1}
# FgmmParams fields a caller may set by keyword; None: a plain number.
GMM_FIELDS = {"covariance": COVARIANCE, "niter": None, "kmeans_iter": None, "tol": None, "var_floor": None,
              "min_count": None, "max_init_points": None, "seed": None, "backend": BACKEND,
              "precision": PRECISION, "gpu_device": None, "gpu_mem_limit": None, "n_gpus": None}
PHASES = ("kmeans", "em")


def fill_gmm_params(p, params):
    """Sets the FgmmParams p from keywords (GMM_FIELDS, plus progress = a callable
    (phase, iteration, mean_objective, reseeded)); returns the ctypes callback to keep alive."""
    callback = None
    for key, value in params.items():
        if key == "progress":
            if value is not None:
                callback = _lib.ProgressFn(lambda user, phase, it, obj, re, fn=value: fn(PHASES[phase], it, obj, re))
                p.progress = callback
        elif key in GMM_FIELDS:
            _lib.set_enum_or_value(p, key, value, GMM_FIELDS[key])
        else:
            raise TypeError("unknown GMM parameter %r (known: %s, progress)" % (key, ", ".join(GMM_FIELDS)))
    return callback


def gmm_params(**params):
    p = _lib.FgmmParams()
    lib.fgmm_params_init(ctypes.byref(p))
    p._keep = fill_gmm_params(p, params)
    return p


class Gmm:
    """A trained Gaussian mixture: means (k, d), variances (k,) isotropic or (k, d) diagonal,
    weights (k,), all float32 copies. info: the training summary (train_gmm only)."""

    def __init__(self, handle, params=None, info=None):
        self._h = ctypes.c_void_p(handle)
        self._params = params if params is not None else gmm_params()
        self.info = info
        self.k = lib.fgmm_model_k(self._h)
        self.d = lib.fgmm_model_d(self._h)
        self.covariance = [n for n, v in COVARIANCE.items() if v == lib.fgmm_model_covariance(self._h)][0]
        self.means = np.ctypeslib.as_array(lib.fgmm_model_means(self._h), (self.k, self.d)).copy()
        shape = (self.k,) if self.covariance == "isotropic" else (self.k, self.d)
        self.variances = np.ctypeslib.as_array(lib.fgmm_model_variances(self._h), shape).copy()
        self.weights = np.ctypeslib.as_array(lib.fgmm_model_weights(self._h), (self.k,)).copy()

    def __del__(self):
        if getattr(self, "_h", None):
            lib.fgmm_model_free(self._h)
            self._h = None

    def __repr__(self):
        return "Gmm(k=%d, d=%d, covariance=%r)" % (self.k, self.d, self.covariance)

    @classmethod
    def from_handle_copy(cls, handle):
        """An owned copy of a model the caller does not own (e.g. an index's)."""
        out = ctypes.c_void_p()
        cov = lib.fgmm_model_covariance(handle)
        lib.fgmm_model_new(ctypes.byref(out), lib.fgmm_model_k(handle), lib.fgmm_model_d(handle), cov,
                           lib.fgmm_model_means(handle), lib.fgmm_model_variances(handle),
                           lib.fgmm_model_weights(handle))
        return cls(out.value)

    def assign_topm(self, x, m=1):
        """The m most responsible components per row, highest first: (labels int64 (n, m),
        responsibilities float32 (n, m))."""
        x, dtype = _lib.rows(x, "x", self.d, allow_u8=True)
        labels = np.empty((x.shape[0], m), np.int64)
        resp = np.empty((x.shape[0], m), np.float32)
        lib.fgmm_assign_topm(self._h, ctypes.byref(self._params), x.shape[0], dtype, _lib.ptr(x), m,
                             _lib.ptr(labels), _lib.ptr(resp))
        return labels, resp

    def loglik(self, x):
        """log p(x_i) per row, float32 (n,)."""
        x, dtype = _lib.rows(x, "x", self.d, allow_u8=True)
        out = np.empty(x.shape[0], np.float32)
        lib.fgmm_loglik(self._h, ctypes.byref(self._params), x.shape[0], dtype, _lib.ptr(x), _lib.ptr(out))
        return out

    def save(self, path):
        """Writes the binary model file (fgmm_model_write: a temporary file, then renamed)."""
        lib.fgmm_model_write(self._h, _lib.path_arg(path))

    @classmethod
    def load(cls, path, **params):
        """Reads a model file; params (backend, ...) are used by assign_topm and loglik."""
        out = ctypes.c_void_p()
        lib.fgmm_model_read(_lib.path_arg(path), ctypes.byref(out))
        return cls(out.value, gmm_params(**params))


def train_gmm(x, k, **params):
    """Trains a k-component GMM on the rows of x ((n, d) float32, or uint8 read as is):
    k-means++ seeding, kmeans_iter Lloyd iterations, then EM. Keywords set FgmmParams fields:
    covariance ("isotropic" | "diagonal"), niter, kmeans_iter, tol, var_floor, min_count,
    max_init_points, seed, backend ("auto" | "cpu" | "gpu"), precision ("fast" | "exact"),
    gpu_device, gpu_mem_limit, n_gpus, progress (a callable (phase, iteration, objective, reseeded))."""
    x, dtype = _lib.rows(x, "x", allow_u8=True)
    p = gmm_params(**params)
    p.k = k
    out = ctypes.c_void_p()
    info = _lib.FgmmTrainInfo()
    lib.fgmm_train(ctypes.byref(p), x.shape[0], x.shape[1], dtype, _lib.ptr(x), ctypes.byref(out), ctypes.byref(info))
    return Gmm(out.value, p, info.as_dict())


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
