#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""debian_sift1m.py ROOT OUT: builds Debian-SIFT1M (docs: DATASETS.md, "Debian-SIFT1M").

ROOT holds the four wallpaper packages unpacked one per folder (ROOT/PACKAGE/usr/...,
`dpkg-deb -x PACKAGE_*.deb ROOT/PACKAGE`). Writes OUT/{query,base,learn}.bvecs (10,000 /
1,000,000 / 100,000 x 128 uint8) and OUT/groundtruth.ivecs (10,000 x 100 base ids, exact
squared L2, each list sorted by (distance, base id); ties at the 100th place: see ground_truth).
Needs Debian's python3-opencv (4.6.0) and python3-numpy (1.24), run by /usr/bin/python3.

Recipe: OpenCV SIFT (nfeatures=0, nOctaveLayers=3, contrastThreshold=0.01, edgeThreshold=10,
sigma=1.6) on each photo decoded as 8-bit grayscale; descriptors in photo-list order,
rint -> uint8, exact duplicate rows dropped (first kept), shuffled with
numpy.random.default_rng(20240601).permutation; first 10,000 = queries, next 1,000,000 = base,
next 100,000 = learn (the remaining rows are unused).
"""
import os, sys, time

# OpenCV picks SIFT kernels by CPU at run time, and its AVX-512 (SKX) kernels round a few
# descriptors differently: on an AVX-512 machine, 22 of the 1,117,542 rows differ from the AVX2
# build DATASETS.md's hashes come from (without AVX2 even the keypoint count differs). Pin the AVX2
# path. Must be set before cv2 is imported.
os.environ["OPENCV_CPU_DISABLE"] = ",".join(filter(None, [
    os.environ.get("OPENCV_CPU_DISABLE", ""),
    "AVX512F,AVX512-COMMON,AVX512-SKX,AVX512BW,AVX512DQ,AVX512VL,AVX512CD"]))
import numpy as np
import cv2

# (package, path inside it, descriptors DATASETS.md's build got): data/debian_sift1m_photos.tsv
PHOTOS = [
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg", 11451),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Dragonfly_by_Bolly.jpg", 43663),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Picture_0B_by_freespace.jpg", 79071),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Picture_1A_by_freespace.jpg", 12326),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg", 23740),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg", 113489),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/free_by_Peter_Nerlich.jpg", 3642),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg", 24390),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg", 4803),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg", 144901),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg", 113353),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg", 70653),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg", 63938),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg", 38925),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Aqua.jpg", 3622),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Blinds.jpg", 4600),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Dune.jpg", 15320),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/FreshFlower.jpg", 1939),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Garden.jpg", 2172),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/GreenMeadow.jpg", 2758),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/LadyBird.jpg", 1280),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/RainDrops.jpg", 7871),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Storm.jpg", 67),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/TwoWings.jpg", 5130),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/Wood.jpg", 14982),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/YellowFlower.jpg", 2191),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg", 5824),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Path/contents/images/2560x1600.jpg", 88537),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg", 308),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg", 2624),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg", 64852),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Grey/contents/images/2560x1600.jpg", 1192),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg", 4622),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg", 2851),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg", 73608),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg", 15418),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg", 47429),
]
SEED = 20240601
NQ, NB, NL, K, D = 10_000, 1_000_000, 100_000, 100, 128


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def extract(root):
    sift = cv2.SIFT_create(nfeatures=0, nOctaveLayers=3, contrastThreshold=0.01,
                           edgeThreshold=10, sigma=1.6)
    parts = []
    for i, (pkg, path, want) in enumerate(PHOTOS):
        f = os.path.join(root, pkg, path)
        img = cv2.imdecode(np.fromfile(f, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            sys.exit(f"{f}: cannot decode")
        _, desc = sift.detectAndCompute(img, None)
        desc = np.zeros((0, D), np.float32) if desc is None else desc
        r = np.rint(desc)
        if r.size and (r.min() < 0 or r.max() > 255):
            sys.exit(f"{f}: descriptor values outside 0..255")
        parts.append(r.astype(np.uint8))
        note = "" if len(desc) == want else f"  (DATASETS.md's build: {want})"
        log(f"{i:2d} {pkg} {path}: {img.shape[1]}x{img.shape[0]}, {len(desc)} descriptors{note}")
    return np.concatenate(parts)


def dedup(X):
    """Drops exact duplicate rows, keeping each first occurrence, order kept."""
    _, first = np.unique(X, axis=0, return_index=True)
    if len(first) == len(X):
        return X
    return X[np.sort(first)]


def write_bvecs(path, X):
    n, d = X.shape
    rows = np.empty((n, 4 + d), np.uint8)
    rows[:, :4] = np.array([d], "<i4").view(np.uint8)
    rows[:, 4:] = X
    rows.tofile(path)


def write_ivecs(path, I):
    n, k = I.shape
    rows = np.empty((n, 1 + k), "<i4")
    rows[:, 0] = k
    rows[:, 1:] = I
    rows.tofile(path)


def sqnorms(X, chunk=100_000):
    out = np.empty(len(X), np.int64)
    for s in range(0, len(X), chunk):
        x = X[s:s + chunk].astype(np.int64)
        out[s:s + chunk] = np.einsum("ij,ij->i", x, x)
    return out


def ground_truth(Q, B, k=K, qblock=256):
    """Exact k-NN by squared L2: returns (ids, queries with a tie across the k-th place).

    Each list is sorted by (distance, base id). When more base vectors lie at exactly the k-th
    distance than there are places left, the ones that get in are those numpy's
    argpartition(kth=k-1) picks (introselect on the row of distances, numpy 1.24 as in bookworm),
    not necessarily the lowest ids. The build behind DATASETS.md's groundtruth sha256 picked them
    this way: a lowest-id pick differs from it in 31 of the 10,000 queries (61 queries have such a
    tie). Either is an exact k-NN set.

    The vectors are integers with ||x||^2 < 2^22, so every value below (q.b, ||b||^2,
    ||b||^2 - 2 q.b, and all partial sums a float32 GEMM forms for q.b) is an integer of
    magnitude < 2^24: float32 is exact. ||q||^2 is the same for a whole row and left out (it
    changes no comparison, so not the argpartition result either)."""
    bn = sqnorms(B)
    qn = sqnorms(Q)
    if max(bn.max(), qn.max()) >= 2 ** 22:
        sys.exit("squared norms too large for exact float32 distances")
    Bf = B.astype(np.float32)
    bnf = bn.astype(np.float32)
    I = np.empty((len(Q), k), np.int32)
    boundary_ties = []
    t0 = time.time()
    for s in range(0, len(Q), qblock):
        Dm = Q[s:s + qblock].astype(np.float32) @ Bf.T
        Dm *= -2.0
        Dm += bnf
        for r in range(len(Dm)):
            row = Dm[r]
            a = np.argpartition(row, k - 1)[:k]
            a = a[np.lexsort((a, row[a]))]
            I[s + r] = a
            last = row[a[-1]]
            if np.count_nonzero(row == last) > np.count_nonzero(row[a] == last):
                boundary_ties.append(s + r)
        if (s // qblock) % 8 == 0:
            done = s + len(Dm)
            log(f"ground truth {done}/{len(Q)} ({time.time() - t0:.0f} s)")
    log(f"{len(boundary_ties)} queries have more base vectors at the {k}-th distance than places")
    return I, boundary_ties


def check_gt(Q, B, I, queries):
    """int64 brute force: same distances as the true k-NN, strictly closer ones all in,
    sorted by (distance, id), no repeats."""
    Bi = B.astype(np.int64)
    for qi in queries:
        diff = Bi - Q[qi].astype(np.int64)
        d = np.einsum("ij,ij->i", diff, diff)
        want = np.lexsort((np.arange(len(B)), d))[:K]
        got = I[qi].astype(np.int64)
        dk = d[want[-1]]
        ok = (np.array_equal(d[got], d[want])
              and np.array_equal(got[d[got] < dk], want[d[want] < dk])
              and np.all(np.diff(got[d[got] == dk]) > 0)
              and len(np.unique(got)) == K)
        if not ok:
            sys.exit(f"ground truth check failed for query {qi}")
    log(f"ground truth agrees with an int64 brute force on {len(queries)} queries")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    log(f"OpenCV {cv2.__version__}, numpy {np.__version__}")
    if cv2.__version__ != "4.6.0":
        log(f"warning: the recipe used OpenCV 4.6.0; {cv2.__version__} may give other descriptors")
    if not np.__version__.startswith("1.24."):
        log("warning: the recipe used numpy 1.24; ties at the 100th place may be picked otherwise")
    if not cv2.checkHardwareSupport(11) or cv2.checkHardwareSupport(256):  # CPU_AVX2, CPU_AVX512_SKX
        log("warning: OpenCV is not on its AVX2 (non-AVX-512) path; descriptors may differ")
    X = extract(root)
    log(f"{len(X)} descriptors from {len(PHOTOS)} photos (DATASETS.md's build: "
        f"{sum(p[2] for p in PHOTOS)})")
    X = dedup(X)
    log(f"{len(X)} after dropping exact duplicates")
    if len(X) < NQ + NB + NL:
        sys.exit(f"only {len(X)} descriptors, need {NQ + NB + NL}")
    X = X[np.random.default_rng(SEED).permutation(len(X))]
    Q, B, L = X[:NQ], X[NQ:NQ + NB], X[NQ + NB:NQ + NB + NL]
    write_bvecs(os.path.join(out, "query.bvecs"), Q)
    write_bvecs(os.path.join(out, "base.bvecs"), B)
    write_bvecs(os.path.join(out, "learn.bvecs"), L)
    log("wrote query/base/learn.bvecs; computing exact 100-NN ground truth")
    I, ties = ground_truth(Q, B)
    rng = np.random.default_rng(1)
    check_gt(Q, B, I, sorted(set(rng.choice(NQ, 20, replace=False).tolist()) | set(ties[:10])))
    write_ivecs(os.path.join(out, "groundtruth.ivecs"), I)
    log("wrote groundtruth.ivecs")


if __name__ == "__main__":
    main()
