# SPDX-License-Identifier: MIT
"""flashgmm: GMM/k-means training of FAISS IVF coarse quantizers, spill (multi-assignment) and
deduplicating search, over libflashgmm_ivf.so (found through $FLASHGMM_LIB, the installed
package's copy, the repository's build*/ folders, or the system loader). docs/python.md.

    import faiss, flashgmm
    index = flashgmm.IvfIndex(faiss.index_factory(d, "IVF1024,Flat"), nprobe=16)  # rule="soar", spill_target=1.5
    index.train(x); index.add(x)
    D, I = index.search(q, 10)             # 10 distinct ids per query; index.stats.ndis: codes compared
    index.write("index.faiss")             # one file: read with flashgmm.IvfIndex.read

Plain FAISS (faiss.read_index + search) on a spilled index returns duplicate ids and counts
(vector, list) entries in ntotal: export with index.write_faiss(path) or index.to_faiss() instead.
"""
from ._lib import FlashgmmError
from .gmm import Gmm, gpu_available, gpu_prestart, read_vecs, train_gmm
from .ivf import IvfIndex, SearchParametersIVF

__all__ = ["FlashgmmError", "Gmm", "IvfIndex", "SearchParametersIVF", "gpu_available", "gpu_prestart", "read_vecs", "train_gmm"]
