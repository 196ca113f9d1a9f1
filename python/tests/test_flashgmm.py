# SPDX-License-Identifier: MIT
"""flashgmm's Python package against python3-faiss objects, on the embedded sift10K set."""
import ctypes
import os
import subprocess
import sys
import tempfile
import unittest

import faiss
import numpy as np

import flashgmm
from flashgmm import _lib

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(TOP, "datasets", "embedded", "sift10K_byte.h5")
NLIST = 64
FAST = dict(backend="cpu", kmeans_iter=5, niter=10)  # small budgets: the suite runs in CI on 2 cores


def recall_at(I, gt, k):
    return np.mean([len(set(I[i, :k]) & set(gt[i, :k])) / k for i in range(len(I))])


class Sift(unittest.TestCase):
    """One GMM/SOAR index over the embedded set, shared by the tests that only read it."""

    @classmethod
    def setUpClass(cls):
        cls.xb = flashgmm.read_vecs(DATA, "dataset")
        cls.x = cls.xb.astype(np.float32)
        cls.q = flashgmm.read_vecs(DATA, "query").astype(np.float32)
        cls.gt = flashgmm.read_vecs(DATA, "match")
        cls.index = flashgmm.IvfIndex(faiss.index_factory(128, "IVF%d,Flat" % NLIST), **FAST)
        cls.index.train(cls.x)
        cls.added = cls.index.add(cls.x)

    def test_data(self):
        self.assertEqual((self.xb.shape, self.xb.dtype), ((9000, 128), np.uint8))
        self.assertEqual((self.q.shape, self.gt.shape, self.gt.dtype), ((1000, 128), (1000, 10), np.int32))

    def test_search_distinct_recall_dco(self):
        self.index.stats.reset()
        D, I, dco = self.index.search(self.q, 10, nprobe=8, return_dco=True)
        self.assertEqual((D.shape, I.shape, dco.shape), ((1000, 10), (1000, 10), (1000,)))
        self.assertEqual((D.dtype, I.dtype, dco.dtype), (np.float32, np.int64, np.int64))
        for row in I:
            self.assertEqual(len(set(row)), 10)
        self.assertTrue(np.all(np.diff(D, axis=1) >= 0))
        self.assertGreater(recall_at(I, self.gt, 10), 0.9)
        self.assertTrue(np.all(dco > NLIST))
        self.assertTrue(np.all(dco <= NLIST + self.index.nentries))
        s = self.index.stats
        self.assertEqual((s.nq, s.dco, s.ndis), (1000, dco.sum(), dco.sum() - 1000 * NLIST))
        D2, I2 = self.index.search(self.q, 10, 8)  # FAISS's two results; nprobe positional as before
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_array_equal(D2, D)
        self.assertEqual(s.nq, 2000)

    def test_spill_counts(self):
        self.assertAlmostEqual(self.index.inflation, 1.5, delta=0.01)
        self.assertEqual(self.added, self.index.nentries)
        self.assertEqual(self.index.nentries, round(self.index.inflation * len(self.x)))

    def test_plain_faiss_sees_duplicates(self):
        """Why to_faiss does not hand FAISS the index as it is: the raw copy's own search."""
        raw = flashgmm.ivf._index_out(_lib.lib.fgmm_ivf_index(self.index._handle()))
        self.assertIsInstance(raw, faiss.IndexIVFFlat)
        self.assertEqual(raw.ntotal, self.index.nentries)  # entries, not vectors
        raw.nprobe = 8
        _, I = raw.search(self.q, 10)
        self.assertGreater(sum(len(set(row)) < 10 for row in I), 100)

    def test_write_read(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sift.ivf")
            self.index.write(path)
            self.assertEqual(os.listdir(tmp), ["sift.ivf"])  # one file (docs/FORMAT.md)
            back = flashgmm.IvfIndex.read(path)
            with self.assertRaisesRegex(RuntimeError, r'Index type 0x4d4d4746 \("FGMM"\) not recognized'):
                faiss.read_index(path)  # plain FAISS refuses it rather than search it wrongly
        a, b = self.index.search(self.q, 10, 8, return_dco=True), back.search(self.q, 10, 8, return_dco=True)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
        self.assertEqual(back.inflation, self.index.inflation)
        np.testing.assert_array_equal(back.gmm.means, self.index.gmm.means)

    def test_one_gmm_two_indexes_and_ids(self):
        g = self.index.gmm
        other = flashgmm.IvfIndex(faiss.index_factory(128, "IVF%d,Flat" % NLIST), rule="hard")
        other.train(self.x, gmm=g)
        np.testing.assert_array_equal(other.gmm.means, g.means)
        other.add(self.x[:1000], ids=np.arange(1000) + 50000)
        self.assertEqual(other.inflation, 1.0)
        _, I = other.search(self.x[:5], 1, nprobe=1)
        np.testing.assert_array_equal(I[:, 0], np.arange(5) + 50000)

    def test_ivfpq_and_kmeans(self):
        index = flashgmm.IvfIndex(faiss.index_factory(128, "IVF16,PQ16x4"), quantizer="kmeans", **FAST)
        index.train(self.x)
        index.add(self.x)
        D, I = index.search(self.q[:100], 10, nprobe=4)
        for row in I:
            self.assertEqual(len(set(row)), 10)
        self.assertGreater(recall_at(I, self.gt[:100], 10), 0.3)
        if _lib.HAS_WRITE_FAISS:
            self.assertIsInstance(index.to_faiss(), faiss.IndexIVFPQ)
        else:
            self.assertRaises(NotImplementedError, index.to_faiss)

    def test_gmm(self):
        g = flashgmm.train_gmm(self.xb[:3000], 16, seed=7, **FAST)
        self.assertEqual((g.k, g.d, g.covariance), (16, 128, "isotropic"))
        self.assertEqual((g.means.shape, g.variances.shape, g.weights.shape), ((16, 128), (16,), (16,)))
        self.assertAlmostEqual(float(g.weights.sum()), 1.0, places=5)
        self.assertEqual((g.info["backend"], g.info["em_iterations"]), ("cpu", 10))
        labels, resp = g.assign_topm(self.xb[:500], 3)
        self.assertEqual((labels.shape, resp.shape), ((500, 3), (500, 3)))
        self.assertTrue(np.all((labels >= 0) & (labels < 16)) and np.all(np.diff(resp, axis=1) <= 0))
        np.testing.assert_array_equal(labels, g.assign_topm(self.x[:500], 3)[0])  # uint8 == float32 rows
        self.assertEqual(g.loglik(self.x[:10]).shape, (10,))
        with tempfile.TemporaryDirectory() as tmp:
            g.save(os.path.join(tmp, "m.gmm"))
            h = flashgmm.Gmm.load(os.path.join(tmp, "m.gmm"), backend="cpu")
        for a in ("means", "variances", "weights"):
            np.testing.assert_array_equal(getattr(g, a), getattr(h, a))
        np.testing.assert_array_equal(labels, h.assign_topm(self.xb[:500], 3)[0])
        diag = flashgmm.train_gmm(self.x[:2000], 4, covariance="diagonal", **FAST)
        self.assertEqual(diag.variances.shape, (4, 128))

    def test_progress(self):
        seen = []
        flashgmm.train_gmm(self.x[:1000], 4, progress=lambda *a: seen.append(a), **FAST)
        self.assertEqual([s[0] for s in seen], ["kmeans"] * 5 + ["em"] * 10)


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.x = np.random.default_rng(1).random((500, 8), dtype=np.float32)

    def ivf(self, spec="IVF4,Flat", **kw):
        return flashgmm.IvfIndex(faiss.index_factory(8, spec), **FAST, **kw)

    def assertCode(self, code, fn, *args, **kw):
        with self.assertRaises(flashgmm.FlashgmmError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.name, code)
        self.assertTrue(str(cm.exception))
        return cm.exception

    def test_shapes_and_dtypes(self):
        index = self.ivf()
        self.assertRaises(ValueError, index.train, self.x[0])
        self.assertRaises(ValueError, index.train, self.x[:, :7])
        self.assertRaises(TypeError, index.train, self.x.astype(np.int64))
        self.assertRaises(TypeError, flashgmm.train_gmm, self.x.astype(np.int32), 4)
        index.train(self.x.astype(np.float64))  # converted, as faiss-python does
        self.assertRaises(ValueError, index.add, self.x, ids=np.arange(3))
        self.assertRaises(ValueError, index.search, self.x[:, :4], 1)

    def test_nan(self):
        x = self.x.copy()
        x[3, 2] = np.nan
        e = self.assertCode("FGMM_ERR_DATA", flashgmm.train_gmm, x, 4)
        self.assertIn("non-finite", str(e))
        self.assertCode("FGMM_ERR_DATA", self.ivf().train, x)

    def test_c_errors(self):
        self.assertCode("FGMM_ERR_ARG", self.ivf, spill_target=3)
        self.assertCode("FGMM_ERR_STATE", flashgmm.IvfIndex, faiss.IndexFlatL2(8))
        self.assertCode("FGMM_ERR_STATE", self.ivf().search, self.x, 1)
        self.assertCode("FGMM_ERR_ARG", flashgmm.train_gmm, self.x[:3], 4)
        self.assertCode("FGMM_ERR_IO", flashgmm.IvfIndex.read, "/nonexistent/index.faiss")
        self.assertCode("FGMM_ERR_IO", flashgmm.Gmm.load, "/nonexistent/m.gmm")
        index = self.ivf()
        index.train(self.x)
        self.assertCode("FGMM_ERR_STATE", index.train, self.x)
        self.assertCode("FGMM_ERR_ARG", self.ivf, max_points_per_list=-2)  # -1: FGMM_IVF_POINTS_AUTO

    def test_bad_keywords(self):
        self.assertRaises(ValueError, self.ivf, rule="nearest")
        self.assertRaises(ValueError, flashgmm.train_gmm, self.x, 4, backend="tpu")
        self.assertRaises(TypeError, flashgmm.train_gmm, self.x, 4, iterations=3)
        self.assertRaises(TypeError, flashgmm.IvfIndex, "IVF4,Flat")


class Binding(unittest.TestCase):
    def test_struct_layouts_match_the_headers(self):
        """The ctypes structs read the C defaults where the headers document them."""
        p = _lib.FgmmIvfParams()
        _lib.lib.fgmm_ivf_params_init(ctypes.byref(p))
        g = p.gmm
        self.assertEqual((g.k, g.covariance, g.niter, g.kmeans_iter, g.tol, g.var_floor, g.min_count),
                         (1024, 0, 90, 10, 0.0, 1e-4, 1.0))
        self.assertEqual((g.max_init_points, g.seed, g.backend, g.precision, g.gpu_device, g.gpu_mem_limit,
                          g.n_gpus, bool(g.progress), g.progress_user), (0, 1234, 0, 0, 0, 0, 0, False, None))
        self.assertEqual((p.quantizer, p.rule, p.primary, p.tau, p.max_assign, p.soar_lambda, p.spill_target,
                          p.select), (2, 3, 0, 0.0, 4, 1.0, 1.5, 0))

    def test_other_faiss_loaded_globally(self):
        """faiss-python's FAISS loaded RTLD_GLOBAL does not take over the library's copy."""
        code = ("import os, sys; sys.setdlopenflags(os.RTLD_GLOBAL | os.RTLD_NOW); import faiss, flashgmm, numpy as np;"
                "x = np.random.default_rng(2).random((2000, 16), dtype='float32');"
                "i = flashgmm.IvfIndex(faiss.index_factory(16, 'IVF8,PQ4'), rule='hard', backend='cpu', niter=3); i.train(x);"
                "i.add(x); print(i.search(x[:3], 2, 8)[1][:, 0]); print(i.to_faiss().ntotal)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)


if __name__ == "__main__":
    unittest.main()
