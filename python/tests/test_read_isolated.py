# SPDX-License-Identifier: MIT
"""read_vecs parses HDF5 in a child process: a file that crashes libhdf5 raises, Python lives."""
import os
import subprocess
import sys
import unittest

import numpy as np

import flashgmm

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(TOP, "datasets", "embedded", "sift10K_byte.h5")
CRASH = os.path.join(TOP, "tests", "data", "hdf5_crashes_libhdf5.h5")


class ReadIsolated(unittest.TestCase):
    def test_same_rows_as_in_process(self):
        a = flashgmm.read_vecs(DATA, "query", max_rows=50)
        b = flashgmm.read_vecs(DATA, "query", max_rows=50, in_process=True)
        self.assertEqual(a.shape, (50, 128))
        self.assertEqual(a.dtype, np.uint8)
        self.assertTrue(np.array_equal(a, b))

    def test_crashing_file_raises(self):
        with self.assertRaises(flashgmm.FlashgmmError) as cm:
            flashgmm.read_vecs(CRASH)
        self.assertEqual(cm.exception.name, "FGMM_ERR_IO")
        self.assertIn(CRASH, str(cm.exception))
        # in-process, the same file ends the interpreter where this libhdf5 crashes on it
        code = "import flashgmm\ntry:\n    flashgmm.read_vecs(%r, in_process=True)\nexcept flashgmm.FlashgmmError:\n    pass\n"
        r = subprocess.run([sys.executable, "-c", code % CRASH], env=os.environ, capture_output=True)
        if r.returncode < 0:
            self.assertIn("signal %d" % -r.returncode, str(cm.exception))
        else:
            self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
