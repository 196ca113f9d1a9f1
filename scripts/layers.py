#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""layers.py: checks the library's layering from its object files (docs/internals.md, "Layers").

usage: scripts/layers.py BUILD_DIR   (a CUDA build checks src/gpu/ too)

Every object of flashgmm_objs is an arrow source: it calls the functions that other objects
define (nm). Fails on a circle between two or more files, and on an arrow from a folder to a
higher floor or to another folder of its own floor:
  floor 0  src/core    errors, trace, files, model, the engine interface
  floor 1  src/cpu  src/gpu  src/io   the backends and the readers (src/gpu may call src/cpu:
           a GPU engine keeps a CPU engine for what it does not run)
  floor 2  src/driver  training, the backend choice, SOAR lists and GPU PQ codes
"""
import collections
import os
import subprocess
import sys

FLOOR = {"src/core": 0, "src/cpu": 1, "src/gpu": 1, "src/io": 1, "src/driver": 2}
SIDEWAYS = {("src/gpu", "src/cpu")}


def objects(build):
    root = os.path.join(build, "CMakeFiles", "flashgmm_objs.dir")
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".o"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)[: -len(".o")]
                yield rel, path


def symbols(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "TDBRC":
            defined.add(p[2])
        elif len(p) == 2 and p[0] == "U":
            used.add(p[1])
    return defined, used


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    objs = dict(objects(sys.argv[1]))
    if not objs:
        sys.exit("layers: no objects under %s/CMakeFiles/flashgmm_objs.dir (build first)" % sys.argv[1])
    syms = {o: symbols(p) for o, p in objs.items()}
    owner = {s: o for o, (d, _) in syms.items() for s in d}
    arrows = collections.defaultdict(set)
    for o, (_, used) in syms.items():
        for s in used:
            if s in owner and owner[s] != o:
                arrows[o].add(owner[s])
    bad = []
    for a in sorted(arrows):
        for b in sorted(arrows[a]):
            fa, fb = os.path.dirname(a), os.path.dirname(b)
            if fa == fb or fa not in FLOOR or fb not in FLOOR:
                continue
            if FLOOR[fb] > FLOOR[fa] or (FLOOR[fb] == FLOOR[fa] and (fa, fb) not in SIDEWAYS):
                bad.append("arrow up or sideways: %s -> %s" % (a, b))
    # circles: strongly connected components of more than one file (Tarjan)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in arrows.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(objs):
        if v not in index:
            visit(v)
    bad += ["circle: " + " <-> ".join(c) for c in comps]
    for b in bad:
        print("layers:", b)
    n = sum(len(v) for v in arrows.values())
    print("layers: %d files, %d arrows, %s" % (len(objs), n, "FAILED" if bad else "no circle, no arrow up"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
