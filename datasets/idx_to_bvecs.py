#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""idx_to_bvecs.py IN.idx[.gz] OUT.bvecs: an IDX uint8 image file (magic 0x803) as bvecs rows (stdlib only)."""
import gzip, struct, sys

src, dst = sys.argv[1], sys.argv[2]
with (gzip.open if src.endswith(".gz") else open)(src, "rb") as f:
    magic, n = struct.unpack(">II", f.read(8))
    if magic != 0x803:
        sys.exit(f"{src}: magic {magic:#x}, not an IDX uint8 image file")
    rows, cols = struct.unpack(">II", f.read(8))
    d = rows * cols
    body = f.read()
if len(body) != n * d:
    sys.exit(f"{src}: {len(body)} bytes of pixels, expected {n * d} (truncated?)")
head = struct.pack("<i", d)
with open(dst, "wb") as o:
    for i in range(n):
        o.write(head)
        o.write(body[i * d:(i + 1) * d])
print(f"{dst}: {n} x {d}")
