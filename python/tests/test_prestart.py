# SPDX-License-Identifier: MIT
"""flashgmm.gpu_prestart: returns at once, says whether the build can start CUDA, checks its device,
and leaves training's result alone."""
import time
import unittest

import numpy as np

import flashgmm
from flashgmm import _lib

PROMPT_S = 0.05  # it starts a thread and never waits for CUDA


class GpuPrestart(unittest.TestCase):
    def test_returns_at_once(self):
        t0 = time.perf_counter()
        started = flashgmm.gpu_prestart()
        self.assertLess(time.perf_counter() - t0, PROMPT_S)
        self.assertIsInstance(started, bool)
        if flashgmm.gpu_available():  # else: False without CUDA, True with it (training reports the outcome)
            self.assertTrue(started)
        self.assertEqual(flashgmm.gpu_prestart(0), started)  # again: nothing new

    def test_device_is_checked(self):
        with self.assertRaises(ValueError):
            flashgmm.gpu_prestart(-1)
        with self.assertRaises(TypeError):
            flashgmm.gpu_prestart(0.5)
        with self.assertRaises(OverflowError):
            flashgmm.gpu_prestart(2**40)
        if _lib.HAS_PRESTART:
            with self.assertRaises(flashgmm.FlashgmmError) as e:
                flashgmm.gpu_prestart(64)
            self.assertEqual(e.exception.name, "FGMM_ERR_ARG")
            self.assertIn("want 0 .. 63", str(e.exception))

    def test_cpu_training_is_unchanged(self):
        x = np.random.default_rng(4).random((1500, 8), dtype=np.float32)
        a = flashgmm.train_gmm(x, 16, backend="cpu", kmeans_iter=2, niter=3)
        flashgmm.gpu_prestart()
        b = flashgmm.train_gmm(x, 16, backend="cpu", kmeans_iter=2, niter=3)
        np.testing.assert_array_equal(a.means, b.means)
        np.testing.assert_array_equal(a.variances, b.variances)
        np.testing.assert_array_equal(a.weights, b.weights)


if __name__ == "__main__":
    unittest.main()
