# SPDX-License-Identifier: MIT
"""ctypes bindings for libflashgmm_ivf.so: finding it, the C structs, prototypes and errors."""
import ctypes
import ctypes.util
import glob
import numbers
import operator
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int64,
                    c_size_t, c_uint64, c_void_p)

import numpy as np

LIB_NAME = "libflashgmm_ivf.so"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ERROR_NAMES = {-1: "FGMM_ERR_NULL", -2: "FGMM_ERR_ARG", -3: "FGMM_ERR_DATA", -4: "FGMM_ERR_NOMEM",
               -5: "FGMM_ERR_GPU_NOMEM", -6: "FGMM_ERR_CUDA", -7: "FGMM_ERR_IO", -8: "FGMM_ERR_NO_GPU",
               -9: "FGMM_ERR_FAISS", -10: "FGMM_ERR_STATE"}
ERR_FAISS = -9
ERR_NO_GPU = -8


class FlashgmmError(RuntimeError):
    """A call into the C library failed: .code is the FgmmError value, the message is
    fgmm_get_last_error()'s (or FAISS's, for FAISS's own C API)."""

    def __init__(self, code, message):
        self.code = code
        self.name = ERROR_NAMES.get(code, "FGMM_ERR_%d" % code)
        super().__init__("%s (%s)" % (message, self.name))


class Owned:
    """A Python object owning a C object: close() (or del, or leaving a with block) frees it once;
    a call that needs it after that is a ValueError, never a use of freed memory."""
    _h = None  # the C handle; None once closed (or if __init__ failed)

    def _free(self, h):
        raise NotImplementedError

    def _handle(self):
        if self._h is None:
            raise ValueError("flashgmm.%s: the object is closed (close() or __del__ was called)" % type(self).__name__)
        return self._h

    @property
    def closed(self):
        return self._h is None

    def close(self):
        """Frees the C object; later calls that need it raise ValueError. Not beside another call
        on this object."""
        h, self._h = self._h, None
        if h is not None:
            self._free(h)

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):  # copy.copy would share the C object and free it twice
        raise TypeError("flashgmm.%s owns a C object and cannot be copied or pickled (save it to a file)"
                        % type(self).__name__)


def _sanitized(build_dir):
    """A sanitizer build cannot be dlopen'ed into python (ASan must be the first library loaded)."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            return "FGMM_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def _installed():
    """The library beside an installed package: a copy inside it (pip install), or the path that
    cmake --install wrote into _config.py, relative to the package."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = [os.path.join(here, LIB_NAME)] if os.path.isfile(os.path.join(here, LIB_NAME)) else []
    try:
        from . import _config
        found.append(os.path.normpath(os.path.join(here, _config.LIB_RELPATH)))
    except ImportError:
        pass
    return found


def candidates():
    """Where the library is looked for, in order: $FLASHGMM_LIB, the installed package's own
    (_installed), the repository's build*/ folders (build/ first), the system loader."""
    env = os.environ.get("FLASHGMM_LIB")
    if env:
        return [env]
    in_repo = os.path.isfile(os.path.join(_REPO, "capi", "flashgmm.h"))
    dirs = sorted(glob.glob(os.path.join(_REPO, "build*")) if in_repo else [],
                  key=lambda p: (os.path.basename(p) != "build", p))
    found = [os.path.join(d, LIB_NAME) for d in dirs
             if os.path.isfile(os.path.join(d, LIB_NAME)) and not _sanitized(d)]
    return _installed() + found + [ctypes.util.find_library("flashgmm_ivf") or LIB_NAME]


def _load():
    tried = []
    for path in candidates():
        try:
            return ctypes.CDLL(path)  # RTLD_LOCAL: our FAISS copy stays apart from python-faiss's
        except OSError as e:
            tried.append(str(e))
    raise ImportError("flashgmm: cannot load %s (set FLASHGMM_LIB to its path): %s" % (LIB_NAME, "; ".join(tried)))


lib = _load()
libc = ctypes.CDLL(None)

idx_t = c_int64
ProgressFn = CFUNCTYPE(None, c_void_p, c_int, c_int, c_double, c_int)


class FgmmParams(Structure):
    _fields_ = [("k", c_int), ("covariance", c_int), ("niter", c_int), ("kmeans_iter", c_int),
                ("tol", c_double), ("var_floor", c_double), ("min_count", c_double),
                ("max_init_points", idx_t), ("seed", c_uint64), ("backend", c_int), ("precision", c_int),
                ("gpu_device", c_int), ("gpu_mem_limit", c_size_t), ("n_gpus", c_int),
                ("progress", ProgressFn), ("progress_user", c_void_p)]


class FgmmTrainInfo(Structure):
    _fields_ = [("kmeans_iterations", c_int), ("em_iterations", c_int), ("converged", c_int),
                ("reseeded", c_int), ("mean_loglik", c_double), ("seconds", c_double), ("backend", c_char_p)]

    def as_dict(self):
        d = {name: getattr(self, name) for name, _ in self._fields_}
        d["backend"] = d["backend"].decode() if d["backend"] else None
        return d


class FgmmIvfParams(Structure):
    _fields_ = [("gmm", FgmmParams), ("quantizer", c_int), ("rule", c_int), ("primary", c_int),
                ("tau", c_double), ("max_assign", c_int), ("soar_lambda", c_float),
                ("spill_target", c_double), ("select", c_int), ("max_points_per_list", c_int)]


class FgmmIvfSearchParams(Structure):
    _fields_ = [("nprobe", c_int), ("min_probe", c_int), ("rule", c_int), ("threshold", c_double)]


class FgmmVecs(Structure):
    _fields_ = [("data", c_void_p), ("n", idx_t), ("d", c_int), ("dtype", c_int)]


F32, U8, I32 = 0, 1, 2  # FgmmDtype


def _check(rc, func, args):
    if rc != 0:
        raise FlashgmmError(rc, lib.fgmm_get_last_error().decode(errors="replace"))
    return rc


def _check_faiss(rc, func, args):
    if rc != 0:
        raise FlashgmmError(ERR_FAISS, "%s: %s" % (func.__name__, lib.faiss_get_last_error().decode(errors="replace")))
    return rc


def _proto(name, restype, argtypes, errcheck=None):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, argtypes
    if errcheck:
        f.errcheck = errcheck


P = c_void_p  # opaque handles and raw array pointers
_proto("fgmm_get_last_error", c_char_p, [])
_proto("faiss_get_last_error", c_char_p, [])
_proto("fgmm_params_init", None, [POINTER(FgmmParams)])
_proto("fgmm_model_new", c_int, [POINTER(P), c_int, c_int, c_int, P, P, P], _check)
_proto("fgmm_model_free", None, [P])
for _n in ("fgmm_model_k", "fgmm_model_d", "fgmm_model_covariance"):
    _proto(_n, c_int, [P])
for _n in ("fgmm_model_means", "fgmm_model_variances", "fgmm_model_weights"):
    _proto(_n, POINTER(c_float), [P])
_proto("fgmm_train", c_int, [POINTER(FgmmParams), idx_t, c_int, c_int, P, POINTER(P), POINTER(FgmmTrainInfo)], _check)
_proto("fgmm_loglik", c_int, [P, POINTER(FgmmParams), idx_t, c_int, P, P], _check)
_proto("fgmm_assign_topm", c_int, [P, POINTER(FgmmParams), idx_t, c_int, P, c_int, P, P], _check)
_proto("fgmm_model_write", c_int, [P, c_char_p], _check)
_proto("fgmm_model_read", c_int, [c_char_p, POINTER(P)], _check)
_proto("fgmm_gpu_available", c_int, [])
try:  # newer libraries only: gpu_prestart does nothing without it
    _proto("fgmm_gpu_prestart", c_int, [c_int])
    HAS_PRESTART = True
except AttributeError:
    HAS_PRESTART = False
_proto("fgmm_vecs_read", c_int, [c_char_p, c_char_p, idx_t, POINTER(FgmmVecs)], _check)
_proto("fgmm_vecs_read_isolated", c_int, [c_char_p, c_char_p, idx_t, POINTER(FgmmVecs)], _check)
_proto("fgmm_vecs_free", None, [POINTER(FgmmVecs)])
_proto("fgmm_ivf_params_init", None, [POINTER(FgmmIvfParams)])
_proto("fgmm_ivf_schedule", c_int, [POINTER(FgmmIvfParams), POINTER(FgmmParams)])
_proto("fgmm_ivf_wrap", c_int, [P, POINTER(FgmmIvfParams), POINTER(P)], _check)
_proto("fgmm_ivf_train", c_int, [P, idx_t, P, POINTER(FgmmTrainInfo)], _check)
_proto("fgmm_ivf_set_gmm", c_int, [P, P, idx_t, P], _check)
_proto("fgmm_ivf_add", c_int, [P, idx_t, P, P, POINTER(idx_t)], _check)
_proto("fgmm_ivf_inflation", c_double, [P])
_proto("fgmm_ivf_search", c_int, [P, idx_t, P, idx_t, c_int, P, P, P], _check)
_proto("fgmm_ivf_write", c_int, [P, c_char_p], _check)
_proto("fgmm_ivf_read", c_int, [c_char_p, POINTER(FgmmIvfParams), POINTER(P)], _check)
_proto("fgmm_ivf_index", P, [P])
_proto("fgmm_ivf_model", P, [P])
_proto("fgmm_ivf_free", None, [P])
try:  # newer libraries only: IvfIndex.search(params=SearchParametersIVF) and calibrate say so when missing
    _proto("fgmm_ivf_search_params_init", None, [POINTER(FgmmIvfSearchParams)])
    _proto("fgmm_ivf_search_ex", c_int, [P, idx_t, P, idx_t, POINTER(FgmmIvfSearchParams), P, P, P], _check)
    _proto("fgmm_ivf_calibrate", c_int, [P, idx_t, P, idx_t, c_double, POINTER(FgmmIvfSearchParams),
                                         POINTER(c_double)], _check)
    HAS_PROBE = True
except AttributeError:
    HAS_PROBE = False
try:  # newer libraries only: IvfIndex.write_faiss says so when it is missing
    _proto("fgmm_ivf_write_faiss", c_int, [P, c_char_p], _check)
    HAS_WRITE_FAISS = True
except AttributeError:
    HAS_WRITE_FAISS = False
# FAISS's C API, from the FAISS copy inside libflashgmm_ivf.so
_proto("faiss_read_index", c_int, [P, c_int, POINTER(P)], _check_faiss)
_proto("faiss_write_index", c_int, [P, P], _check_faiss)
_proto("faiss_Index_free", None, [P])
_proto("faiss_Index_d", c_int, [P])
_proto("faiss_Index_ntotal", idx_t, [P])
_proto("faiss_Index_is_trained", c_int, [P])
_proto("faiss_IndexIVF_nprobe", c_size_t, [P])
_proto("faiss_IndexIVF_set_nprobe", None, [P, c_size_t])
_proto("faiss_IndexIVF_cast", P, [P])
_proto("faiss_IndexIVF_nlist", c_size_t, [P])
libc.fmemopen.restype, libc.fmemopen.argtypes = P, [P, c_size_t, c_char_p]
libc.open_memstream.restype, libc.open_memstream.argtypes = P, [POINTER(P), POINTER(c_size_t)]
libc.fclose.restype, libc.fclose.argtypes = c_int, [P]
libc.free.restype, libc.free.argtypes = None, [P]


def ptr(a):
    """The data pointer of a numpy array (None for None)."""
    return None if a is None else a.ctypes.data_as(c_void_p)


def path_arg(path):
    return os.fsencode(path)


def rows(x, name, d=None, allow_u8=False):
    """x as a C-contiguous (n, d) array and its FgmmDtype: uint8 kept if allow_u8, any float
    dtype converted to float32 (as faiss-python does); anything else is a TypeError."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError("%s: expected a 2-D array (n, d), got shape %s" % (name, x.shape))
    if d is not None and x.shape[1] != d:
        raise ValueError("%s: expected %d columns, got %d" % (name, d, x.shape[1]))
    if x.dtype == np.uint8:
        return (np.ascontiguousarray(x), U8) if allow_u8 else (np.ascontiguousarray(x, np.float32), F32)
    if x.dtype.kind != "f":
        raise TypeError("%s: expected float32 (or another float dtype%s), got %s"
                        % (name, ", or uint8" if allow_u8 else "", x.dtype))
    return np.ascontiguousarray(x, np.float32), F32


def _int_range(ctype):
    """(lowest, highest, description) of a ctypes integer type."""
    bits, signed = 8 * ctypes.sizeof(ctype), ctype(-1).value < 0
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return lo, hi, "a %d-bit %s C integer" % (bits, "signed" if signed else "unsigned")


def check_int(value, name, ctype=idx_t, lo=None, hi=None):
    """value as a Python int for a C argument of type ctype (ctypes would silently wrap it):
    TypeError if not an integer (bool included), OverflowError outside ctype's range, ValueError
    outside [lo, hi]."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    v = operator.index(value)
    tlo, thi, what = _int_range(ctype)
    if not tlo <= v <= thi:
        raise OverflowError("%s = %d does not fit %s [%d, %d]" % (name, v, what, tlo, thi))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        want = ">= %d" % lo if hi is None else "<= %d" % hi if lo is None else "in [%d, %d]" % (lo, hi)
        raise ValueError("%s = %d; must be %s" % (name, v, want))
    return v


def check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a real number, got %r" % (name, value))
    return float(value)


def set_field(struct, field, value, names=None):
    """Sets struct.field (a C number) from a name in names (a dict name -> C value) or a checked
    number of the field's C type."""
    if names is not None:
        if not isinstance(value, str) or value not in names:
            raise ValueError("%s must be one of %s, got %r" % (field, ", ".join(map(repr, names)), value))
        value = names[value]
    else:
        ctype = dict(struct._fields_)[field]
        value = check_real(value, field) if ctype in (c_float, c_double) else check_int(value, field, ctype)
    setattr(struct, field, value)
