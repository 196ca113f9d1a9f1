# SPDX-License-Identifier: MIT
"""GMM/k-means-trained, spilled FAISS IVF indexes (capi/flashgmm_ivf.h) for faiss-python users.

faiss-python's objects live in its own FAISS (Debian's python3-faiss links FAISS statically into
_swigfaiss.so; pip wheels bundle theirs), and libflashgmm_ivf.so holds another copy. A SWIG
pointer handed across two copies would be used with the other copy's class layouts, RTTI and
globals, so an index crosses over only as FAISS's serialized bytes: faiss.serialize_index ->
faiss_read_index (through fmemopen) in, faiss_write_index (through open_memstream) ->
faiss.deserialize_index out. Both sides read and write the same stable file format.
"""
import ctypes
import os
import tempfile
import threading

import numpy as np

from . import _lib, _params
from ._lib import lib
from ._progress import Progress
from .gmm import Gmm

_DEFAULTS = _params.ivf_defaults()
IVF_KEYWORDS = ((_params.IVF, _DEFAULTS), (_params.GMM, _DEFAULTS.gmm))
INT64_MAX = 2**63 - 1


def ivf_params(kw):
    """An FgmmIvfParams with fgmm_ivf_params_init's defaults and the keywords of kw."""
    p = _params.ivf_defaults()
    _params.fill(p, _params.IVF, kw)
    _params.fill(p.gmm, _params.GMM, kw)
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


class SearchStats:
    """Totals over an IvfIndex's searches since reset(), like FAISS's faiss.cvar.indexIVF_stats:
    nq queries; ndis codes compared in the lists scanned (spilled copies counted: a list's size is
    its entries); dco = ndis + nlist per query, the distance computations that fgmm_ivf_search
    reports (the query-to-centroid ones included). Several threads may search at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        self.nq = self.ndis = self.dco = 0

    def _add(self, dco, nlist):
        with self._lock:
            self.nq += len(dco)
            self.dco += int(dco.sum())
            self.ndis += int(dco.sum()) - len(dco) * nlist

    def __repr__(self):
        return "SearchStats(nq=%d, ndis=%d, dco=%d)" % (self.nq, self.ndis, self.dco)


def _check_ids(ids, n):
    """ids as n int64 values >= 0 (-1 is FAISS's "no result"; values >= 2**63 do not fit idx_t)."""
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise ValueError("ids: expected shape (%d,), got %s" % (n, ids.shape))
    if ids.dtype.kind not in "iu":
        raise TypeError("ids: expected integers (int64), got %s" % ids.dtype)
    if n and ids.dtype.kind == "u" and ids.max() > np.uint64(INT64_MAX):  # uint64 vs int: compared as float64
        i = int(np.argmax(ids > np.uint64(INT64_MAX)))
        raise OverflowError("ids[%d] = %d does not fit FAISS's idx_t (int64): ids must be in [0, 2**63)" % (i, ids[i]))
    if n and ids.dtype.kind == "i" and ids.min() < 0:
        i = int(np.argmax(ids < 0))
        raise ValueError("ids[%d] = %d: ids must be >= 0 (-1 is FAISS's 'no result')" % (i, ids[i]))
    return np.ascontiguousarray(ids, np.int64)


def _check_nprobe(nprobe):
    return _lib.check_int(nprobe, "nprobe", ctypes.c_int, 1)


PROBE_RULES = {"fixed": 0, "kth": 1, "eps": 2}


class SearchParametersIVF:
    """Search parameters of IvfIndex.search, as faiss.SearchParametersIVF (FgmmIvfSearchParams,
    capi/flashgmm_ivf.h; docs/search.md, "Query-adaptive probing"): nprobe (lists at most),
    min_probe (lists every query scans before the rule), rule ('fixed': the nprobe nearest lists;
    'kth': further lists while they may beat the query's k-th distance so far; 'eps': SPANN's
    d(q, c_j) <= (1 + threshold) d(q, c_1)) and threshold. IvfIndex.calibrate returns one whose
    setting reaches a target recall; its `recall` is the recall reached on the calibration vectors."""

    def __init__(self, nprobe=1, *, min_probe=2, rule="fixed", threshold=0.0):
        self.nprobe, self.min_probe, self.rule, self.threshold = nprobe, min_probe, rule, threshold
        self.recall = None

    def _struct(self):
        if not _lib.HAS_PROBE:
            raise NotImplementedError("this libflashgmm_ivf.so has no fgmm_ivf_search_ex: rebuild it")
        p = _lib.FgmmIvfSearchParams()
        lib.fgmm_ivf_search_params_init(ctypes.byref(p))
        p.nprobe = _check_nprobe(self.nprobe)
        p.min_probe = _lib.check_int(self.min_probe, "min_probe", ctypes.c_int, 1)
        _lib.set_field(p, "rule", self.rule, PROBE_RULES)
        _lib.set_field(p, "threshold", self.threshold)
        return p

    @classmethod
    def _from(cls, p, recall=None):
        rule = next(n for n, v in PROBE_RULES.items() if v == p.rule)
        out = cls(p.nprobe, min_probe=p.min_probe, rule=rule, threshold=p.threshold)
        out.recall = recall
        return out

    def __repr__(self):
        return "SearchParametersIVF(nprobe=%d, min_probe=%d, rule=%r, threshold=%r%s)" % (
            self.nprobe, self.min_probe, self.rule, self.threshold,
            "" if self.recall is None else ", recall=%.4f" % self.recall)


class IvfIndex(_lib.Owned):
    """A FAISS IVF index (IVF-Flat, IVF-PQ; L2) whose coarse quantizer flashgmm trains (a GMM or
    k-means on all points) and whose vectors are added with spill: each vector goes to its nearest
    list and, by the rule, to extra lists (SOAR by default, for a spill_target share: 1.5 lists per
    vector on average). Used as a FAISS index: train, add (add_with_ids), search(q, k) -> (D, I)
    with k distinct ids per query, ntotal, is_trained, d, nlist, nprobe; stats counts the distance
    computations of the searches.

        index = flashgmm.IvfIndex(faiss.index_factory(d, "IVF1024,Flat"), nprobe=16)

    The faiss-python index is copied in (as FAISS's serialized bytes: the library holds its own
    FAISS, and objects of one FAISS copy are not safe to use from another); the one passed is not
    changed. to_faiss() gives a plain faiss-python index back: each vector in one list, so that
    FAISS's own search is right (write_faiss: the same as a file).

    nprobe: lists scanned per query (None: the FAISS index's). verbose: training prints every
    iteration and the time left to stderr (an attribute too, as FAISS's index.verbose). progress: a
    callable (phase "kmeans" | "em", iteration, mean_objective, reseeded) called after every
    training iteration (an attribute too); an exception it raises is raised by train once the C
    call has returned (the C library cannot stop training; the index is then trained all the same).
    The other keywords set FgmmIvfParams and its gmm (FgmmParams; gmm.k is the index's nlist).
    close() (or del, or a with block) frees the index."""

    metric_type = 1  # faiss.METRIC_L2, the only metric fgmm_ivf_wrap takes

    @_params.keywords(*IVF_KEYWORDS)
    def __init__(self, faiss_index, *, nprobe=None, verbose=False, progress=None, **params):
        p = ivf_params(params)
        nprobe = None if nprobe is None else _check_nprobe(nprobe)
        report = Progress()
        report.install(p.gmm)
        index = _index_in(faiss_index)
        h = ctypes.c_void_p()
        try:
            lib.fgmm_ivf_wrap(index, ctypes.byref(p), ctypes.byref(h))
        except Exception:
            lib.faiss_Index_free(index)
            raise
        self._setup(h.value, index, p, report, nprobe, verbose, progress)

    def _setup(self, h, index, p, report, nprobe, verbose, progress):
        """h: the C handle; index: the FaissIndex* to free after it (None: h owns its index); p and
        report: the params h was made with and the progress callback in them (both kept alive)."""
        self._h, self._index, self._params, self._report = h, index, p, report
        ivf = self._faiss_ivf()
        self.d = lib.faiss_Index_d(ivf)
        self.nlist = lib.faiss_IndexIVF_nlist(ivf)
        self.train_info = None
        self.verbose, self.progress = verbose, progress
        self.stats = SearchStats()
        if nprobe is not None:
            self.nprobe = nprobe

    def _free(self, h):
        lib.fgmm_ivf_free(h)
        if self._index is not None:
            lib.faiss_Index_free(self._index)
            self._index = None

    def _faiss_ivf(self):
        return lib.faiss_IndexIVF_cast(lib.fgmm_ivf_index(self._handle()))

    def __repr__(self):
        if self.closed:
            return "IvfIndex(closed)"
        return ("IvfIndex(d=%d, nlist=%d, is_trained=%s, ntotal=%d, nentries=%d, inflation=%.3f, nprobe=%d)"
                % (self.d, self.nlist, self.is_trained, self.ntotal, self.nentries, self.inflation, self.nprobe))

    def train(self, x, gmm=None):
        """Trains the quantizer on x (n, d) (n >= nlist), then the rest of the index (IVF-PQ: the PQ
        on residuals). gmm: a trained Gmm with k = nlist to install instead of training one."""
        h = self._handle()
        x, _ = _lib.rows(x, "x", self.d)
        if gmm is not None:
            if not isinstance(gmm, Gmm):
                raise TypeError("gmm: expected a flashgmm.Gmm, got %s" % type(gmm).__name__)
            lib.fgmm_ivf_set_gmm(h, gmm._handle(), x.shape[0], _lib.ptr(x))
            return
        g = _lib.FgmmParams()  # the iterations the training will run (the CPU schedule by default)
        lib.fgmm_ivf_schedule(ctypes.byref(self._params), ctypes.byref(g))
        self._report.begin(g.kmeans_iter + g.niter, self.progress, self.verbose)
        info = _lib.FgmmTrainInfo()
        try:
            lib.fgmm_ivf_train(h, x.shape[0], _lib.ptr(x), ctypes.byref(info))
            self.train_info = info.as_dict()
        finally:
            self._report.check()
        self._report.summary(info)

    def add(self, x, ids=None):
        """Adds the rows of x with spill; ids: (n,) integers in [0, 2**63), or None to continue
        from the last id. Returns the number of (vector, list) entries added."""
        h = self._handle()
        x, _ = _lib.rows(x, "x", self.d)
        ids = None if ids is None else _check_ids(ids, x.shape[0])
        added = _lib.idx_t()
        lib.fgmm_ivf_add(h, x.shape[0], _lib.ptr(x), _lib.ptr(ids), ctypes.byref(added))
        return added.value

    def add_with_ids(self, x, ids):
        """FAISS's name for add(x, ids)."""
        return self.add(x, ids)

    def search(self, q, k, nprobe=None, *, params=None, return_dco=False):
        """The k nearest distinct ids per query, nearest first: (D float32 (nq, k), I int64 (nq, k));
        missing results are id -1, distance inf. nprobe: lists scanned (default: the nprobe
        attribute), or params: a flashgmm.SearchParametersIVF (adaptive probing, IVF-Flat) or a
        faiss.SearchParametersIVF (its nprobe; nothing else is supported). return_dco: also return
        dco, int64 (nq,): nlist + the sizes of the lists scanned (spilled copies counted). Adds to
        stats."""
        h = self._handle()
        k = _lib.check_int(k, "k", _lib.idx_t, 1)
        if params is not None and nprobe is not None:
            raise ValueError("search: give nprobe or params, not both")
        if isinstance(params, SearchParametersIVF):
            p = params._struct()
            q, _ = _lib.rows(q, "q", self.d)
            D = np.empty((q.shape[0], k), np.float32)
            I = np.empty((q.shape[0], k), np.int64)
            dco = np.empty(q.shape[0], np.int64)
            lib.fgmm_ivf_search_ex(h, q.shape[0], _lib.ptr(q), k, ctypes.byref(p), _lib.ptr(D), _lib.ptr(I),
                                   _lib.ptr(dco))
            self.stats._add(dco, self.nlist)
            return (D, I, dco) if return_dco else (D, I)
        if params is not None:
            if getattr(params, "sel", None) is not None or getattr(params, "max_codes", 0):
                raise ValueError("search: params supports nprobe only (not sel, max_codes)")
            nprobe = params.nprobe
        nprobe = min(self.nprobe, self.nlist) if nprobe is None else _check_nprobe(nprobe)
        q, _ = _lib.rows(q, "q", self.d)
        D = np.empty((q.shape[0], k), np.float32)
        I = np.empty((q.shape[0], k), np.int64)
        dco = np.empty(q.shape[0], np.int64)
        lib.fgmm_ivf_search(h, q.shape[0], _lib.ptr(q), k, nprobe, _lib.ptr(D), _lib.ptr(I), _lib.ptr(dco))
        self.stats._add(dco, self.nlist)
        return (D, I, dco) if return_dco else (D, I)

    def calibrate(self, x, k, target, params=None):
        """A SearchParametersIVF whose setting reaches recall@k >= target on the rows of x (vectors
        held out of the index, e.g. training vectors not added; never the test queries): params'
        rule (default: SearchParametersIVF(rule='fixed')) with the smallest nprobe ('fixed') or
        threshold ('kth', 'eps': params.nprobe lists at most). Its .recall is the recall on x."""
        h = self._handle()
        p = (params if params is not None else SearchParametersIVF())._struct()
        x, _ = _lib.rows(x, "x", self.d)
        k = _lib.check_int(k, "k", _lib.idx_t, 1)
        r = ctypes.c_double()
        lib.fgmm_ivf_calibrate(h, x.shape[0], _lib.ptr(x), k, _lib.check_real(target, "target"), ctypes.byref(p),
                               ctypes.byref(r))
        return SearchParametersIVF._from(p, r.value)

    @property
    def nprobe(self):
        """Lists scanned per query by search unless the call says otherwise; a new index has the
        FAISS index's (faiss: 1); write and to_faiss keep it."""
        return lib.faiss_IndexIVF_nprobe(self._faiss_ivf())

    @nprobe.setter
    def nprobe(self, value):
        lib.faiss_IndexIVF_set_nprobe(self._faiss_ivf(), _check_nprobe(value))

    @property
    def is_trained(self):
        return bool(lib.faiss_Index_is_trained(lib.fgmm_ivf_index(self._handle())))

    @property
    def nentries(self):
        """(vector, list) entries: what FAISS's ntotal of the spilled index counts."""
        return lib.faiss_Index_ntotal(lib.fgmm_ivf_index(self._handle()))

    @property
    def ntotal(self):
        """Vectors added (each once, however many lists it is in)."""
        entries = self.nentries
        # inflation = entries / vectors in double: the division back is exact below 2**51 vectors
        return round(entries / self.inflation) if entries else 0

    @property
    def inflation(self):
        """Average lists per vector over everything added (1.0 without spill)."""
        return lib.fgmm_ivf_inflation(self._handle())

    @property
    def gmm(self):
        """A copy of the quantizer's model (None before training)."""
        m = lib.fgmm_ivf_model(self._handle())
        return Gmm.from_handle_copy(m) if m else None

    def write_faiss(self, path):
        """Writes a plain FAISS index file that FAISS alone searches right: each vector in one list
        (its primary: the nearest by default), no spilled copies, ntotal = vectors (fgmm_ivf_write_faiss). Plain FAISS then
        scans an unspilled index: the recall of spill needs IvfIndex.search."""
        h = self._handle()
        if not _lib.HAS_WRITE_FAISS:
            raise NotImplementedError("write_faiss: this %s has no fgmm_ivf_write_faiss (an older build): "
                                      "rebuild the library" % _lib.LIB_NAME)
        lib.fgmm_ivf_write_faiss(h, _lib.path_arg(path))

    def to_faiss(self):
        """A plain faiss-python copy that FAISS's own search answers right (write_faiss, read back):
        each vector once. Without fgmm_ivf_write_faiss in the library, an index without spilled
        copies is copied as it is and a spilled one is refused (FAISS would return duplicate ids
        and count entries in ntotal)."""
        import faiss
        h = self._handle()
        if _lib.HAS_WRITE_FAISS:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "index.faiss")
                self.write_faiss(path)
                return faiss.read_index(path)
        if self.nentries != self.ntotal:
            raise NotImplementedError("to_faiss: the index holds spilled copies (%d entries for %d vectors) "
                                      "and this %s has no fgmm_ivf_write_faiss to leave them out: rebuild the "
                                      "library, or search with IvfIndex.search" % (self.nentries, self.ntotal,
                                                                                     _lib.LIB_NAME))
        return _index_out(lib.fgmm_ivf_index(h))

    def write(self, path):
        """Writes the index, its spill settings and the GMM to one file at path, atomically
        (docs/FORMAT.md). Plain FAISS refuses that file: read it with IvfIndex.read, or export a
        plain FAISS file with write_faiss."""
        lib.fgmm_ivf_write(self._handle(), _lib.path_arg(path))

    @classmethod
    @_params.keywords(*IVF_KEYWORDS)
    def read(cls, path, *, nprobe=None, verbose=False, progress=None, **params):
        """Reads an index written by write (also the three-file sets of earlier versions, or a
        plain FAISS IVF file). Spill settings come from the file where it has them; the keywords
        (as for IvfIndex) apply otherwise, and the GMM keywords (backend, ...) always."""
        p = ivf_params(params)
        nprobe = None if nprobe is None else _check_nprobe(nprobe)
        report = Progress()
        report.install(p.gmm)
        h = ctypes.c_void_p()
        lib.fgmm_ivf_read(_lib.path_arg(path), ctypes.byref(p), ctypes.byref(h))
        self = cls.__new__(cls)
        self._setup(h.value, None, p, report, nprobe, verbose, progress)
        return self
