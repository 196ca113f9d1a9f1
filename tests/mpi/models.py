# SPDX-License-Identifier: MIT
"""Helpers of tests/mpi/run.sh (standard library only).

compare A.gmm B.gmm LOG_A LOG_B: prints the largest differences between two models and between
the mean log-likelihoods their runs printed (every EM line and the final one); exits 1 if any is
above its tolerance (TOLERANCE: what sums in another order moved on this machine, times 5 to 15;
a single row left out moves the weights by about 1e-3).
dups OUT.fvecs: 15,980 copies of one point and 20 distinct points (d = 4), the copies first: a
512-row k-means++ sample sees fewer than k = 8 distinct points, so the driver widens it over the
whole data (over every rank's rows under MPI).
"""
import array
import re
import struct
import sys

# Relative differences allowed. Means: to the largest |mean|; variances: to the mean variance of
# their component (diagonal variances are E[x^2] - mean^2 of float32 partial sums, which cancel:
# measured 3.2e-5); weights and log-likelihoods: to themselves.
TOLERANCE = {"means": 2e-5, "variances": 2e-4, "weights": 4e-5, "log-likelihood": 1e-6}


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:8] != b"FGMMv001":
        sys.exit(f"{path}: not a flashgmm model")
    k, d, cov = struct.unpack("<3i", b[8:20])
    v = array.array("f")
    v.frombytes(b[20:])
    kd, nv = k * d, (k * d if cov == 1 else k)
    return (k, d, cov), v[:kd], v[kd:kd + nv], v[kd + nv:]


def logliks(path):
    """Mean log-likelihoods of a run's EM lines and its final one."""
    with open(path) as f:
        text = f.read()
    em = [float(x) for x in re.findall(r"^em\s+\d+\s+mean log-likelihood (\S+)", text, re.M)]
    final = re.findall(r"final mean log-likelihood (\S+),", text)
    if not final:
        sys.exit(f"{path}: no 'done:' line")
    return em + [float(final[-1])]


def rel(a, b):
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


def compare(a_path, b_path, log_a, log_b):
    (sa, mu_a, var_a, w_a), (sb, mu_b, var_b, w_b) = load(a_path), load(b_path)
    if sa != sb:
        print(f"shapes differ: {sa} vs {sb}")
        return 1
    scale = max(abs(x) for x in mu_a)
    per = len(var_a) // sa[0]  # variances per component
    comp_var = [sum(var_a[j * per:(j + 1) * per]) / per for j in range(sa[0])]
    la, lb = logliks(log_a), logliks(log_b)
    if len(la) != len(lb):
        print(f"EM iterations differ: {len(la) - 1} vs {len(lb) - 1}")
        return 1
    diffs = {
        "means": max(abs(x - y) for x, y in zip(mu_a, mu_b)) / scale,
        "variances": max(abs(x - y) / comp_var[i // per] for i, (x, y) in enumerate(zip(var_a, var_b))),
        "weights": rel(w_a, w_b),
        "log-likelihood": rel(la, lb),
    }
    over = [k for k, v in diffs.items() if v > TOLERANCE[k]]
    print("max relative difference: " + ", ".join(f"{k} {v:.2e} (<= {TOLERANCE[k]:g})" for k, v in diffs.items()) +
          (": TOO LARGE: " + ", ".join(over) if over else ": ok"))
    return 1 if over else 0


def dups(out):
    d, rows = 4, []
    rows += [[1.0, 2.0, 3.0, 4.0]] * 15980
    rows += [[10.0 + i, -3.0 * i, 0.5 * i * i, 7.0 - i] for i in range(20)]
    with open(out, "wb") as f:
        for r in rows:
            f.write(struct.pack("<i", d) + struct.pack(f"<{d}f", *r))


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"] and len(sys.argv) == 6:
        sys.exit(compare(*sys.argv[2:]))
    if sys.argv[1:2] == ["dups"] and len(sys.argv) == 3:
        sys.exit(dups(sys.argv[2]))
    sys.exit(__doc__)
