"""GMM/k-means-trained, spilled FAISS IVF indexes (capi/flashgmm_ivf.h) for faiss-python users.

faiss-python's objects live in its own FAISS (Debian's python3-faiss links FAISS statically into
_swigfaiss.so; pip wheels bundle theirs), and libflashgmm_ivf.so holds another copy. A SWIG
pointer handed across two copies would be used with the other copy's class layouts, RTTI and
globals, so an index crosses over only as FAISS's serialized bytes: faiss.serialize_index ->
faiss_read_index (through fmemopen) in, faiss_write_index (through open_memstream) ->
faiss.deserialize_index out. Both sides read and write the same stable file format.
"""
import ctypes

import numpy as np

from . import _lib
from .gmm import Gmm, fill_gmm_params
from ._lib import lib

QUANTIZER = {"gmm": 0, "kmeans": 1, "auto": 2}
RULE = {"tau": 0, "hard": 1, "topm": 2, "soar": 3, "resp": 4}
PRIMARY = {"nearest": 0, "responsibility": 1}
SELECT = {"resp2": 0, "dist_ratio": 1}


def ivf_params(quantizer="auto", rule="soar", spill_target=1.5, select="resp2", tau=0.0, max_assign=4,
               soar_lambda=1.0, primary="nearest", **gmm):
    p = _lib.FgmmIvfParams()
    lib.fgmm_ivf_params_init(ctypes.byref(p))
    for field, value, names in (("quantizer", quantizer, QUANTIZER), ("rule", rule, RULE),
                                ("primary", primary, PRIMARY), ("select", select, SELECT),
                                ("spill_target", spill_target, None), ("tau", tau, None),
                                ("max_assign", max_assign, None), ("soar_lambda", soar_lambda, None)):
        _lib.set_enum_or_value(p, field, value, names)
    p._keep = fill_gmm_params(p.gmm, gmm)
    return p


def _index_in(faiss_index):
    """A copy of a faiss-python index in the library's FAISS (a FaissIndex* we own)."""
    import faiss
    buf = faiss.serialize_index(faiss_index)
    f = _lib.libc.fmemopen(_lib.ptr(buf), buf.size, b"rb")
    if not f:
        raise MemoryError("fmemopen failed for a %d-byte index" % buf.size)
    out = ctypes.c_void_p()
    try:
        lib.faiss_read_index(f, 0, ctypes.byref(out))
    finally:
        _lib.libc.fclose(f)
    return out


def _index_out(handle):
    """A faiss-python copy of a FaissIndex* of the library's FAISS."""
    import faiss
    data, size = ctypes.c_void_p(), ctypes.c_size_t()
    f = _lib.libc.open_memstream(ctypes.byref(data), ctypes.byref(size))
    if not f:
        raise MemoryError("open_memstream failed")
    try:
        lib.faiss_write_index(handle, f)
    finally:
        _lib.libc.fclose(f)  # sets data and size
        buf = ctypes.string_at(data, size.value) if data else b""
        _lib.libc.free(data)
    return faiss.deserialize_index(np.frombuffer(buf, np.uint8))


class IvfIndex:
    """A FAISS IVF index (IVF-Flat, IVF-PQ; L2) whose coarse quantizer flashgmm trains (a GMM or
    k-means on all points) and whose vectors are added with spill: each vector goes to its nearest
    list and, by the rule, to extra lists (SOAR by default, for a spill_target share: 1.5 lists per
    vector on average). search returns k distinct ids per query and the distance computations.

        index = flashgmm.IvfIndex(faiss.index_factory(d, "IVF1024,Flat"))

    The faiss-python index is copied in (as FAISS's serialized bytes: the library holds its own
    FAISS, and objects of one FAISS copy are not safe to use from another); the one passed is not
    changed. to_faiss() gives a faiss-python copy back.

    Plain FAISS and spilled indexes: FAISS's own search (to_faiss().search, or faiss.read_index
    on a file written here) returns a spilled vector once per list it sits in (duplicate ids,
    so fewer than k distinct results), and its ntotal counts (vector, list) entries, not vectors.
    Search with IvfIndex.search, or after reading: IvfIndex.read(path).search(q, k, nprobe).

    Keywords: quantizer "auto" (k-means on L2-normalised data, else the GMM) | "gmm" | "kmeans"; rule "soar" | "resp" | "tau" | "topm" | "hard";
    spill_target (average lists per vector in [1, 2], 0 = spill all; soar and resp);
    select "resp2" | "dist_ratio"; tau; max_assign; soar_lambda; primary "nearest" |
    "responsibility"; and any train_gmm keyword (backend, niter, kmeans_iter, seed, ...).
    """

    def __init__(self, faiss_index, **params):
        p = ivf_params(**params)
        index = _index_in(faiss_index)
        h = ctypes.c_void_p()
        try:
            lib.fgmm_ivf_wrap(index, ctypes.byref(p), ctypes.byref(h))
        except Exception:
            lib.faiss_Index_free(index)
            raise
        self._setup(h, index, p)

    def _setup(self, h, index, p):
        """h: the C handle; index: the FaissIndex* to free after it (None: h owns its index)."""
        self._h, self._index, self._params = h, index, p
        ivf = lib.faiss_IndexIVF_cast(lib.fgmm_ivf_index(h))
        self.d = lib.faiss_Index_d(ivf)
        self.nlist = lib.faiss_IndexIVF_nlist(ivf)
        self.train_info = None

    def __del__(self):
        if getattr(self, "_h", None):
            lib.fgmm_ivf_free(self._h)
            self._h = None
        if getattr(self, "_index", None):
            lib.faiss_Index_free(self._index)
            self._index = None

    def __repr__(self):
        return "IvfIndex(d=%d, nlist=%d, entries=%d, inflation=%.3f)" % (self.d, self.nlist, self.nentries,
                                                                         self.inflation)

    def train(self, x, gmm=None):
        """Trains the quantizer on x (n, d) (n >= nlist), then the rest of the index (IVF-PQ: the PQ
        on residuals). gmm: a trained Gmm with k = nlist to install instead of training one."""
        x, _ = _lib.rows(x, "x", self.d)
        if gmm is not None:
            lib.fgmm_ivf_set_gmm(self._h, gmm._h, x.shape[0], _lib.ptr(x))
            return
        info = _lib.FgmmTrainInfo()
        lib.fgmm_ivf_train(self._h, x.shape[0], _lib.ptr(x), ctypes.byref(info))
        self.train_info = info.as_dict()

    def add(self, x, ids=None):
        """Adds the rows of x with spill; ids (n,) int64, or None to continue from the last id.
        Returns the number of (vector, list) entries added."""
        x, _ = _lib.rows(x, "x", self.d)
        if ids is not None:
            ids = np.asarray(ids)
            if ids.shape != (x.shape[0],) or ids.dtype.kind not in "iu":
                raise ValueError("ids: expected %d integers, got %s %s" % (x.shape[0], ids.dtype, ids.shape))
            ids = np.ascontiguousarray(ids, np.int64)
        added = _lib.idx_t()
        lib.fgmm_ivf_add(self._h, x.shape[0], _lib.ptr(x), _lib.ptr(ids), ctypes.byref(added))
        return added.value

    def search(self, q, k, nprobe=1):
        """k nearest distinct ids per query, scanning nprobe lists: (D float32 (nq, k), I int64
        (nq, k), dco int64 (nq,)); missing results are id -1, distance inf. dco = nlist + the
        sizes of the lists scanned (spilled copies counted)."""
        q, _ = _lib.rows(q, "q", self.d)
        D = np.empty((q.shape[0], k), np.float32)
        I = np.empty((q.shape[0], k), np.int64)
        dco = np.empty(q.shape[0], np.int64)
        lib.fgmm_ivf_search(self._h, q.shape[0], _lib.ptr(q), k, nprobe, _lib.ptr(D), _lib.ptr(I), _lib.ptr(dco))
        return D, I, dco

    @property
    def inflation(self):
        """Average lists per vector over everything added (1.0 without spill)."""
        return lib.fgmm_ivf_inflation(self._h)

    @property
    def nentries(self):
        """(vector, list) entries: what FAISS's ntotal counts."""
        return lib.faiss_Index_ntotal(lib.fgmm_ivf_index(self._h))

    @property
    def gmm(self):
        """A copy of the quantizer's model (None before training)."""
        m = lib.fgmm_ivf_model(self._h)
        return Gmm.from_handle_copy(m) if m else None

    def to_faiss(self):
        """A faiss-python copy of the index. Its own search returns duplicate ids for spilled
        vectors and its ntotal counts entries; search with IvfIndex.search instead."""
        return _index_out(lib.fgmm_ivf_index(self._h))

    def write(self, path):
        """Writes the index, its spill settings and the GMM to one file at path, atomically
        (docs/FORMAT.md); faiss.read_index refuses that file."""
        lib.fgmm_ivf_write(self._h, _lib.path_arg(path))

    @classmethod
    def read(cls, path, **params):
        """Reads an index written by write (also the three-file sets of earlier versions, or a
        plain FAISS IVF file). Spill settings come from the file where it has them; params (as
        for IvfIndex) apply otherwise, and GMM keywords (backend, ...) always."""
        p = ivf_params(**params)
        h = ctypes.c_void_p()
        lib.fgmm_ivf_read(_lib.path_arg(path), ctypes.byref(p), ctypes.byref(h))
        self = cls.__new__(cls)
        self._setup(h, None, p)
        return self
