# SPDX-License-Identifier: MIT
"""Run by python.sh with an installed flashgmm (no FLASHGMM_LIB, no repository on the path): the
package and its library come from under argv[1], and a small index trains, fills and searches."""
import os
import sys

import faiss
import numpy as np

import flashgmm

root = os.path.realpath(sys.argv[1])
for what, path in (("package", flashgmm.__file__), ("library", flashgmm._lib.lib._name)):
    if not os.path.realpath(path).startswith(root + os.sep):
        sys.exit("check_python: the %s is %s, not under %s" % (what, path, root))
x = np.random.default_rng(0).random((2000, 16), dtype=np.float32)
index = flashgmm.IvfIndex(faiss.index_factory(16, "IVF8,Flat"), backend="cpu", niter=3, nprobe=8)
index.train(x)
index.add(x)
D, I = index.search(x[:5], 1)
if index.ntotal != 2000 or list(I[:, 0]) != [0, 1, 2, 3, 4]:
    sys.exit("check_python: ntotal %d, nearest ids %s" % (index.ntotal, I[:, 0]))
print("check_python: ok (%s)" % os.path.realpath(flashgmm._lib.lib._name))
