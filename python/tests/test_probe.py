# SPDX-License-Identifier: MIT
"""IvfIndex.search(params=flashgmm.SearchParametersIVF(...)) and IvfIndex.calibrate (fgmm_ivf_search_ex,
fgmm_ivf_calibrate)."""
import unittest

import faiss
import numpy as np

import flashgmm

FAST = dict(backend="cpu", kmeans_iter=2, niter=3, max_points_per_list=0)
rng = np.random.default_rng(5)
CENTERS = rng.random((40, 16), dtype=np.float32) * 4
X = (CENTERS[rng.integers(0, 40, 6000)] + rng.normal(0, 0.5, (6000, 16))).astype(np.float32)
BASE, CAL, CHECK = X[:4000], X[4000:5000], X[5000:]


def exact(index, q, k):
    return index.search(q, k, index.nlist)[1]


def recall(I, T):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, T)])


class Probe(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF32,Flat"), **FAST)
        cls.index.train(X)
        cls.index.add(BASE)

    def test_fixed_is_search_with_nprobe(self):
        D, I = self.index.search(CAL, 10, 5)
        D2, I2, dco = self.index.search(CAL, 10, params=flashgmm.SearchParametersIVF(5), return_dco=True)
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
        self.assertTrue((dco > self.index.nlist).all())

    def test_kth_at_inf_is_fixed(self):
        _, I = self.index.search(CAL, 10, 6)
        _, I2 = self.index.search(CAL, 10, params=flashgmm.SearchParametersIVF(6, rule="kth", threshold=float("inf")))
        np.testing.assert_array_equal(I, I2)

    def test_bad_params(self):
        for kw, err in ((dict(rule="nope"), ValueError), (dict(min_probe=0), ValueError),
                        (dict(threshold="x"), TypeError), (dict(rule="eps", threshold=-1.0), flashgmm.FlashgmmError)):
            with self.assertRaises(err, msg=str(kw)):
                self.index.search(CAL[:2], 10, params=flashgmm.SearchParametersIVF(4, **kw))
        with self.assertRaises(ValueError):
            self.index.search(CAL[:2], 10, 4, params=flashgmm.SearchParametersIVF(4))
        with self.assertRaises(flashgmm.FlashgmmError):
            self.index.calibrate(CAL, 10, 1.5)

    def test_calibrate_reaches_target_on_held_out_rows(self):
        T = exact(self.index, CHECK, 10)
        for rule in ("fixed", "kth", "eps"):
            p = self.index.calibrate(CAL, 10, 0.9, flashgmm.SearchParametersIVF(16, rule=rule))
            self.assertIsInstance(p, flashgmm.SearchParametersIVF)
            self.assertEqual(p.rule, rule)
            self.assertGreaterEqual(p.recall, 0.9)
            _, I = self.index.search(CHECK, 10, params=p)
            self.assertGreaterEqual(recall(I, T), 0.9 - 0.02, repr(p))
            self.assertIn("recall=", repr(p))


if __name__ == "__main__":
    unittest.main()
