# SPDX-License-Identifier: MIT
"""The Python surface: closed objects, integer checks, progress, FAISS's attributes and search,
keywords, the plain-FAISS export and the docs' examples (small random data: fast)."""
import contextlib
import copy
import inspect
import io
import os
import pydoc
import re
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock

import faiss
import numpy as np

import flashgmm
from flashgmm import _lib, _progress

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = dict(backend="cpu", kmeans_iter=2, niter=3)
IVF_FAST = dict(FAST, max_points_per_list=0)  # all points, the GMM's iterations as given (not the CPU schedule)
X = np.random.default_rng(3).random((2000, 16), dtype=np.float32)


def small(spec="IVF8,Flat", add=True, **kw):
    index = flashgmm.IvfIndex(faiss.index_factory(16, spec), **dict(IVF_FAST, **kw))
    index.train(X)
    if add:
        index.add(X)
    return index


class Closed(unittest.TestCase):
    """After close(), __del__() or a with block: every member raises ValueError or still works."""

    def test_ivf_index(self):
        tmp = tempfile.mkdtemp()
        for how in ("close", "__del__", "with"):
            index = small()
            if how == "with":
                with index as same:
                    self.assertIs(same, index)
            else:
                getattr(index, how)()
            calls = {"train": lambda: index.train(X), "add": lambda: index.add(X[:10]),
                     "add_with_ids": lambda: index.add_with_ids(X[:10], np.arange(10)),
                     "search": lambda: index.search(X[:3], 2), "write": lambda: index.write(tmp + "/a"),
                     "write_faiss": lambda: index.write_faiss(tmp + "/b"), "to_faiss": index.to_faiss,
                     "ntotal": lambda: index.ntotal, "nentries": lambda: index.nentries,
                     "inflation": lambda: index.inflation, "is_trained": lambda: index.is_trained,
                     "nprobe": lambda: index.nprobe, "gmm": lambda: index.gmm,
                     "calibrate": lambda: index.calibrate(X[:10], 2, 0.9)}
            for name, call in calls.items():
                with self.assertRaisesRegex(ValueError, "closed", msg="%s after %s" % (name, how)):
                    call()
            with self.assertRaisesRegex(ValueError, "closed"):
                index.nprobe = 2
            self.assertEqual(repr(index), "IvfIndex(closed)")
            self.assertRaisesRegex(TypeError, "cannot be copied", copy.copy, index)
            self.assertTrue(index.closed)
            index.close()  # again: nothing
            plain = {"d": 16, "nlist": 8, "metric_type": 1, "verbose": False, "progress": None}
            self.assertEqual({k: getattr(index, k) for k in plain}, plain)
            self.assertEqual(index.stats.nq, 0)
            self.assertEqual(index.train_info["em_iterations"], 3)
            members = {n for n in dir(index) if not n.startswith("_")}
            self.assertEqual(members - set(calls) - set(plain), {"stats", "train_info", "close", "closed", "read"})
        self.assertEqual(os.listdir(tmp), [])
        os.rmdir(tmp)

    def test_gmm(self):
        g = flashgmm.train_gmm(X, 4, **FAST)
        means = g.means.copy()
        g.close()
        for call in (lambda: g.assign_topm(X), lambda: g.loglik(X), lambda: g.save("/tmp/never.gmm")):
            self.assertRaisesRegex(ValueError, "closed", call)
        self.assertEqual(repr(g), "Gmm(k=4, d=16, covariance='isotropic', closed)")
        self.assertRaisesRegex(TypeError, "cannot be copied", copy.deepcopy, g)
        np.testing.assert_array_equal(g.means, means)  # the numpy copies stay
        index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF4,Flat"))
        self.assertRaisesRegex(ValueError, "closed", index.train, X, gmm=g)
        self.assertFalse(index.is_trained)

    def test_model_copy_outlives_its_index(self):
        index = small(add=False)
        g = index.gmm
        del index
        self.assertEqual(g.assign_topm(X[:5], 2)[0].shape, (5, 2))


class Integers(unittest.TestCase):
    """Every integer reaching the C library is checked: ctypes would wrap it silently."""

    def test_train_gmm(self):
        self.assertRaisesRegex(OverflowError, "k = 4294967298 does not fit a 32-bit signed", flashgmm.train_gmm, X, 2**32 + 2)
        self.assertRaisesRegex(ValueError, "k = 0; must be >= 1", flashgmm.train_gmm, X, 0)
        self.assertRaises(TypeError, flashgmm.train_gmm, X, 4.0)
        self.assertRaises(TypeError, flashgmm.train_gmm, X, True)
        self.assertEqual(flashgmm.train_gmm(X, np.int64(4), **FAST).k, 4)
        for kw, error in ((dict(niter=2**31), OverflowError), (dict(kmeans_iter=-2**31 - 1), OverflowError),
                          (dict(seed=2**64), OverflowError), (dict(seed=-1), OverflowError),
                          (dict(gpu_mem_limit=-1), OverflowError), (dict(max_init_points=2**63), OverflowError),
                          (dict(gpu_device=2**32), OverflowError), (dict(n_gpus=2**32 + 1), OverflowError),
                          (dict(tol="0.1"), TypeError), (dict(covariance=1), ValueError), (dict(niter=1.5), TypeError)):
            self.assertRaises(error, flashgmm.train_gmm, X, 4, **kw)
        self.assertEqual(flashgmm.gmm.gmm_params(dict(seed=2**64 - 1, gpu_mem_limit=2**64 - 1)).seed, 2**64 - 1)
        self.assertRaises(flashgmm.FlashgmmError, flashgmm.train_gmm, X, 4, niter=-1)  # in range: C checks

    def test_ivf_keywords(self):
        fi = faiss.index_factory(16, "IVF8,Flat")
        for kw in (dict(max_assign=2**32 + 1), dict(max_points_per_list=2**31), dict(nprobe=2**32 + 1)):
            self.assertRaises(OverflowError, flashgmm.IvfIndex, fi, **kw)
        self.assertRaises(ValueError, flashgmm.IvfIndex, fi, nprobe=0)
        with self.assertRaises(flashgmm.FlashgmmError) as cm:
            flashgmm.IvfIndex(fi, max_points_per_list=-2)  # -1 is FGMM_IVF_POINTS_AUTO
        self.assertIn("max_points_per_list = -2", str(cm.exception))

    def test_search_and_topm(self):
        index = small(rule="hard")
        self.assertRaises(OverflowError, index.search, X[:2], 2**63)
        self.assertRaises(ValueError, index.search, X[:2], 0)
        self.assertRaises(OverflowError, index.search, X[:2], 1, nprobe=2**32 + 1)
        self.assertRaises(ValueError, index.search, X[:2], 1, nprobe=0)
        with self.assertRaises(OverflowError):
            index.nprobe = 2**32
        self.assertEqual(index.nprobe, 1)
        g = index.gmm
        self.assertRaises(OverflowError, g.assign_topm, X, 2**32 + 1)
        self.assertRaisesRegex(ValueError, r"m = 9; must be in \[1, 8\]", g.assign_topm, X, 9)

    def test_ids(self):
        index = small(add=False, rule="hard")
        self.assertRaisesRegex(OverflowError, r"ids\[1\] = 9223372036854775808", index.add, X[:2],
                               np.array([0, 2**63], np.uint64))
        self.assertRaisesRegex(ValueError, r"ids\[2\] = -5", index.add, X[:3], np.array([0, 1, -5]))
        self.assertRaises(TypeError, index.add, X[:2], np.array([0.0, 1.0]))
        self.assertRaises(TypeError, index.add, X[:2], [2**64, 0])  # numpy: an object array
        self.assertRaises(ValueError, index.add, X[:2], np.arange(3))
        self.assertEqual(index.ntotal, 0)
        ids = np.array([2**63 - 1, 7], np.uint64)
        index.add_with_ids(X[:2], ids)
        _, I = index.search(X[:2], 1, nprobe=8)
        np.testing.assert_array_equal(I[:, 0], [2**63 - 1, 7])


class Progress(unittest.TestCase):
    def test_exception_reaches_the_caller(self):
        for error in (RuntimeError("stop"), KeyboardInterrupt()):
            calls = []

            def fn(*a):
                calls.append(a)
                if len(calls) == 2:
                    raise error
            with self.assertRaises(type(error)):
                flashgmm.train_gmm(X, 4, progress=fn, **FAST)
            self.assertEqual(len(calls), 2)  # none after the exception

    def test_ivf_progress_attribute(self):
        index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF8,Flat"), **IVF_FAST)
        seen = []
        index.progress = lambda *a: seen.append(a[:2])
        index.train(X)
        self.assertEqual(seen, [("kmeans", 0), ("kmeans", 1), ("em", 0), ("em", 1), ("em", 2)])
        index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF8,Flat"), progress=lambda *a: 1 / 0, **IVF_FAST)
        self.assertRaises(ZeroDivisionError, index.train, X)
        self.assertTrue(index.is_trained)  # documented: the C call ran to its end

    def test_verbose(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF8,Flat"), verbose=True, **IVF_FAST)
            index.train(X)
            flashgmm.train_gmm(X, 4, **FAST)  # not verbose: prints nothing
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 6, lines)
        for i, line in enumerate(lines[:5]):
            self.assertRegex(line, r"^flashgmm: (kmeans|em) +\d+  iteration %d/5 .* s, ~\d+ s left$" % (i + 1))
        self.assertTrue(lines[4].endswith("~0 s left"))
        self.assertRegex(lines[5], r"^flashgmm: trained in [0-9.]+ s \(cpu, 2 k-means \+ 3 EM iterations")

    def test_time_left(self):
        p = _progress.Progress()
        p.begin(10)
        p.start, p.done = 0.0, 1
        self.assertEqual(p.seconds_left(3.0), 27.0)  # one iteration: the whole run's mean
        p.phase_start, p.phase_done, p.done = 2.0, 3, 4
        self.assertEqual(p.seconds_left(6.0), 12.0)  # (6 - 2) / 2 per iteration, 6 left


class FaissSurface(unittest.TestCase):
    def test_attributes(self):
        fi = faiss.index_factory(16, "IVF8,Flat")
        fi.nprobe = 3
        index = flashgmm.IvfIndex(fi, **FAST)
        self.assertEqual((index.d, index.nlist, index.nprobe, index.metric_type), (16, 8, 3, faiss.METRIC_L2))
        self.assertEqual((index.is_trained, index.ntotal, index.nentries), (False, 0, 0))
        self.assertEqual(flashgmm.IvfIndex(fi, nprobe=5).nprobe, 5)
        self.assertEqual(fi.nprobe, 3)  # the index passed is not changed
        index.train(X)
        self.assertTrue(index.is_trained)
        self.assertEqual(index.add(X), index.nentries)
        self.assertEqual(index.ntotal, 2000)
        self.assertAlmostEqual(index.nentries / index.ntotal, 1.5, delta=0.01)
        self.assertEqual(repr(index), "IvfIndex(d=16, nlist=8, is_trained=True, ntotal=2000, nentries=%d, "
                                      "inflation=%.3f, nprobe=3)" % (index.nentries, index.inflation))

    def test_search_nprobe_params_stats(self):
        index = small()
        ref = index.search(X[:50], 5, nprobe=4, return_dco=True)
        index.nprobe = 4
        for D, I in (index.search(X[:50], 5), index.search(X[:50], 5, params=faiss.SearchParametersIVF(nprobe=4))):
            np.testing.assert_array_equal(I, ref[1])
            np.testing.assert_array_equal(D, ref[0])
        self.assertFalse(np.array_equal(index.search(X[:50], 5, nprobe=1)[1], ref[1]))
        sel = faiss.SearchParametersIVF(nprobe=4)
        sel.sel = faiss.IDSelectorRange(0, 10)
        self.assertRaises(ValueError, index.search, X[:2], 1, params=sel)
        self.assertRaises(ValueError, index.search, X[:2], 1, 2, params=faiss.SearchParametersIVF(nprobe=4))
        index.stats.reset()
        threads = [threading.Thread(target=index.search, args=(X[:50], 5)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = index.stats
        self.assertEqual((s.nq, s.dco, s.ndis), (200, 4 * ref[2].sum(), 4 * (ref[2].sum() - 50 * 8)))

    def test_nprobe_is_saved(self):
        index = small()
        index.nprobe = 5
        with tempfile.TemporaryDirectory() as tmp:
            index.write(tmp + "/i.faiss")
            self.assertEqual(flashgmm.IvfIndex.read(tmp + "/i.faiss").nprobe, 5)
            self.assertEqual(flashgmm.IvfIndex.read(tmp + "/i.faiss", nprobe=2).nprobe, 2)
            index.write_faiss(tmp + "/plain.faiss")  # the one-file index is not FAISS's: its export is
            self.assertEqual(faiss.read_index(tmp + "/plain.faiss").nprobe, 5)

    def test_keywords_and_defaults(self):
        ivf = _lib.FgmmIvfParams()
        _lib.lib.fgmm_ivf_params_init(ivf)
        gmm = _lib.FgmmParams()
        _lib.lib.fgmm_params_init(gmm)
        sig = inspect.signature(flashgmm.IvfIndex).parameters
        self.assertEqual((sig["niter"].default, sig["max_points_per_list"].default, sig["spill_target"].default,
                          sig["rule"].default, sig["nprobe"].default), (ivf.gmm.niter, -1, ivf.spill_target, "soar", None))
        self.assertEqual(inspect.signature(flashgmm.train_gmm).parameters["niter"].default, gmm.niter)
        self.assertEqual(list(inspect.signature(flashgmm.IvfIndex.read).parameters)[1:],
                         list(inspect.signature(flashgmm.IvfIndex).parameters)[1:])
        text = pydoc.render_doc(flashgmm.IvfIndex, renderer=pydoc.plaintext)
        for name in ("max_points_per_list=-1", "spill_target=1.5", "niter=%d" % ivf.gmm.niter, "nprobe=None", "verbose"):
            self.assertIn(name, text)
        fi = faiss.index_factory(16, "IVF8,Flat")
        with self.assertRaises(TypeError) as cm:
            flashgmm.IvfIndex(fi, nprob=4)
        for word in ("did you mean 'nprobe'", "max_points_per_list", "spill_target", "quantizer", "niter"):
            self.assertIn(word, str(cm.exception))
        self.assertRaisesRegex(TypeError, "did you mean 'spill_target'", flashgmm.IvfIndex.read, "x", spill_targte=1)
        self.assertRaisesRegex(TypeError, "did you mean 'niter'", flashgmm.train_gmm, X, 4, nitre=1)

    def test_max_points_per_list(self):
        """One point per list: the k-means quantizer's 8 centroids are 8 of the training rows."""
        for cap, on_rows in ((1, 8), (0, 0)):
            index = small(add=False, quantizer="kmeans", max_points_per_list=cap)
            d2 = ((index.gmm.means[:, None, :] - X[None, :, :]) ** 2).sum(-1).min(1)
            self.assertEqual(int((d2 < 1e-10).sum()), on_rows, d2)

    def test_plain_faiss_export(self):
        spilled, hard = small(), small(rule="hard")
        with tempfile.TemporaryDirectory() as tmp:
            if _lib.HAS_WRITE_FAISS:
                spilled.write_faiss(tmp + "/p.faiss")
                for plain in (faiss.read_index(tmp + "/p.faiss"), spilled.to_faiss()):
                    self.assertEqual(plain.ntotal, 2000)
                    plain.nprobe = 8
                    _, I = plain.search(X[:100], 10)
                    self.assertTrue(all(len(set(row)) == 10 for row in I))
                    np.testing.assert_array_equal(I[:, 0], np.arange(100))
            else:
                self.assertRaisesRegex(NotImplementedError, "fgmm_ivf_write_faiss", spilled.write_faiss, tmp + "/p")
                self.assertRaisesRegex(NotImplementedError, "spilled", spilled.to_faiss)
        with mock.patch.object(_lib, "HAS_WRITE_FAISS", False):  # a library without the export
            self.assertRaisesRegex(NotImplementedError, "3000 entries for 2000 vectors", spilled.to_faiss)
            plain = hard.to_faiss()  # nothing spilled: the bytes bridge is exact
            self.assertEqual((type(plain), plain.ntotal), (faiss.IndexIVFFlat, 2000))


class Bridge(unittest.TestCase):
    def test_no_faiss_needed(self):
        """faiss is imported inside the calls that take or give a FAISS index: whichever faiss the
        interpreter finds (Debian's, pip's faiss-cpu) is the one used, and the GMM needs none."""
        code = ("import sys; sys.modules['faiss'] = None; import numpy as np, flashgmm;"
                "g = flashgmm.train_gmm(np.random.default_rng(0).random((500, 4), dtype='float32'), 3, backend='cpu');"
                "print(g.k)\n"
                "try: flashgmm.IvfIndex(None)\nexcept ImportError: print('ImportError')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual((out.returncode, out.stdout.split()), (0, ["3", "ImportError"]), out.stderr)


class Docs(unittest.TestCase):
    def test_python_md_blocks(self):
        """docs/python.md's Python blocks run in order, in one namespace."""
        with open(os.path.join(TOP, "docs", "python.md")) as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        self.assertGreaterEqual(len(blocks), 2)
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            os.chdir(tmp)
            try:
                env = {}
                for block in blocks:
                    exec(block, env)
            finally:
                os.chdir(cwd)
        self.assertEqual(env["I"].shape[1], 10)
        for row in env["I"]:
            self.assertEqual(len(set(row)), 10)


if __name__ == "__main__":
    unittest.main()
