# SPDX-License-Identifier: MIT
"""Keyword parameters of the C params structs: one table, the defaults read from the C library's
init functions (fgmm_params_init, fgmm_ivf_params_init), shown by help() through the signatures
that `keywords` gives the public functions."""
import difflib
import functools
import inspect

from . import _lib

COVARIANCE = {"isotropic": 0, "diagonal": 1}
BACKEND = {"auto": 0, "cpu": 1, "gpu": 2}
PRECISION = {"fast": 0, "exact": 1}
QUANTIZER = {"gmm": 0, "kmeans": 1, "auto": 2}
RULE = {"tau": 0, "hard": 1, "topm": 2, "soar": 3, "resp": 4}
PRIMARY = {"nearest": 0, "responsibility": 1}
SELECT = {"resp2": 0, "dist_ratio": 1}


class Param:
    """A keyword setting the params struct field of the same name: a name of `names` (an enum) or
    a number checked against the field's C type."""

    def __init__(self, name, names, doc):
        self.name, self.names, self.doc = name, names, doc

    def default(self, struct):
        value = getattr(struct, self.name)
        return value if self.names is None else next(n for n, v in self.names.items() if v == value)

    def set(self, struct, value):
        _lib.set_field(struct, self.name, value, self.names)


GMM = [  # FgmmParams (capi/flashgmm.h) less k, progress, progress_user
    Param("covariance", COVARIANCE, "'isotropic' (one variance per component) | 'diagonal'"),
    Param("niter", None, "EM iterations at most"),
    Param("kmeans_iter", None, "k-means (Lloyd) iterations before EM; 0 = k-means++ only"),
    Param("tol", None, "stop EM when the mean log-likelihood gains < tol * |value|; 0 = run niter"),
    Param("var_floor", None, "variance floor, a fraction of the data's mean per-dimension variance"),
    Param("min_count", None, "a component with N_k below this is empty and re-seeded"),
    Param("max_init_points", None, "k-means++ runs on at most this many sampled rows; 0 = 64 * k"),
    Param("seed", None, "all sampling is deterministic for a seed (0 <= seed < 2**64)"),
    Param("backend", BACKEND, "'auto' (GPU if a CUDA device is present) | 'cpu' | 'gpu'"),
    Param("precision", PRECISION, "'fast' | 'exact' (GPU; the CPU is always fp32 GEMM + fp64 sums)"),
    Param("gpu_device", None, "CUDA device ordinal"),
    Param("gpu_mem_limit", None, "bytes of device memory for data, larger inputs stream; 0 = 80% of free"),
    Param("n_gpus", None, "data-parallel EM on GPUs gpu_device .. gpu_device + n_gpus - 1; 0 = one GPU"),
]
IVF = [  # FgmmIvfParams (capi/flashgmm_ivf.h) less gmm
    Param("quantizer", QUANTIZER, "'auto' (k-means on L2-normalised data, else the GMM) | 'gmm' | "
                                  "'kmeans' (kmeans_iter + niter Lloyd iterations)"),
    Param("rule", RULE, "extra lists per vector: 'soar' | 'resp' (one extra list each) | 'tau' | 'topm' | "
                        "'hard' (none)"),
    Param("spill_target", None, "soar, resp: average lists per vector in [1, 2]; 0 = spill every vector"),
    Param("select", SELECT, "soar, resp with a spill_target: which vectors spill, 'resp2' | 'dist_ratio'"),
    Param("tau", None, "tau: every list with responsibility > tau; <= 0 = 1 / nlist"),
    Param("max_assign", None, "tau, topm: lists per vector at most"),
    Param("soar_lambda", None, "soar: lambda >= 0"),
    Param("primary", PRIMARY, "a vector's first list: 'nearest' | 'responsibility' (tau and hard only)"),
    Param("max_points_per_list", None, "the quantizer trains on a seeded sample of at most this many "
                                       "points per list (FAISS's k-means: 256); 0 = all; -1 = by backend: "
                                       "GPU all points, CPU 256 per list and at most 16 iterations, all "
                                       "k-means (docs/cpu.md)"),
]


def gmm_defaults():
    p = _lib.FgmmParams()
    _lib.lib.fgmm_params_init(p)
    return p


def ivf_defaults():
    p = _lib.FgmmIvfParams()
    _lib.lib.fgmm_ivf_params_init(p)
    return p


def fill(struct, params, kw):
    """Sets struct's fields from the keywords kw of the Params params."""
    for p in params:
        if p.name in kw:
            p.set(struct, kw[p.name])


def keywords(*groups):
    """Decorator: adds the keywords of groups ((Params, struct holding their defaults), ...) to the
    function's signature (keyword-only, after its own; its **kwargs receives them) and docstring.
    An unknown keyword is a TypeError that lists the known ones."""
    def wrap(fn):
        sig = inspect.signature(fn)
        own = [q for q in sig.parameters.values() if q.kind != q.VAR_KEYWORD]
        extra = [(p, p.default(s)) for params, s in groups for p in params]
        full = sig.replace(parameters=own + [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=v)
                                             for p, v in extra])
        name = fn.__qualname__.replace(".__init__", "")
        known = [q.name for q in full.parameters.values()
                 if q.kind in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD) and q.name != "self"]

        @functools.wraps(fn)
        def checked(*args, **kw):
            for key in kw:
                if key not in full.parameters:
                    close = difflib.get_close_matches(key, known, 1)
                    raise TypeError("%s() got an unexpected keyword argument %r%s; its keywords: %s"
                                    % (name, key, " (did you mean %r?)" % close[0] if close else "", ", ".join(known)))
            return fn(*args, **kw)

        checked.__signature__ = full
        lines = ["  %s=%r: %s" % (p.name, v, p.doc) for p, v in extra]
        checked.__doc__ = "%s\n\nKeywords (defaults: the C library's):\n%s" % (inspect.cleandoc(fn.__doc__ or ""),
                                                                              "\n".join(lines))
        return checked
    return wrap
