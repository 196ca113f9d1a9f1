"""flashgmm: GMM/k-means training of FAISS IVF coarse quantizers, spill (multi-assignment) and
deduplicating search, over libflashgmm_ivf.so (found through $FLASHGMM_LIB, the repository's
build*/ folders, or the system loader).

    import faiss, flashgmm
    index = flashgmm.IvfIndex(faiss.index_factory(d, "IVF1024,Flat"))  # rule="soar", spill_target=1.5
    index.train(x); index.add(x)
    D, I, dco = index.search(q, 10, nprobe=16)                          # distinct ids, DCO per query
    index.write("index.faiss")                                          # + index.faiss.fgmm, .gmm

Plain FAISS (faiss.read_index + search) on a spilled index returns duplicate ids and counts
(vector, list) entries in ntotal; search with flashgmm.IvfIndex.read(path).search(q, k, nprobe).
"""
from ._lib import FlashgmmError
from .gmm import Gmm, gpu_available, read_vecs, train_gmm
from .ivf import IvfIndex

__all__ = ["FlashgmmError", "Gmm", "IvfIndex", "gpu_available", "read_vecs", "train_gmm"]
