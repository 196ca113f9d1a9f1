#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Are two builds' kernels the same machine code? For hosts without cuobjdump (no GPU toolkit beyond nvcc).

usage: scripts/cubin_diff.py REF.o[,REF2.o...] NEW.o[,NEW2.o...]
  e.g. scripts/cubin_diff.py $(ls old/CMakeFiles/flashgmm_objs.dir/kernels/*.cu.o | paste -sd,) \
                             $(ls new/CMakeFiles/flashgmm_objs.dir/kernels/*.cu.o | paste -sd,)

Reads the cubins (one per real architecture) inside each nvcc object's .nv_fatbin section (uncompressed,
as this project builds them) and compares, per (architecture, kernel), as the union over each side's
objects (a kernel may move between objects):
  .text.<kernel>     the machine code (SASS) as bytes: line info lives elsewhere, so it is ignored;
  .nv.info.<kernel>  the kernel's attributes, with the symbol index of EIATTR_PARAM_CBANK masked (it
                     depends on the object's symbol table, not on the kernel);
  .nv.info           the module's per-kernel records (register count, frame and stack sizes) by name;
  .nv.shared.<k>, .nv.constant0.<k>, .nv.local.<k>, .rel(a).text.<k>: as bytes (sizes for NOBITS).
Exit status 0 when all match, 1 otherwise."""
import os
import struct
import subprocess
import sys
import tempfile

PER_KERNEL = (".text.", ".nv.info.", ".nv.shared.", ".nv.constant0.", ".nv.local.", ".rel.text.", ".rela.text.")


def fatbin_elfs(obj):
    """(arch, ELF bytes) of every cubin in obj's .nv_fatbin."""
    fd, tmp = tempfile.mkstemp()
    os.close(fd)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", obj, tmp], check=True)
    b = open(tmp, "rb").read()
    os.unlink(tmp)
    out, p = [], 0
    while p + 16 <= len(b):
        magic, _, hs, fsz = struct.unpack_from("<IHHQ", b, p)
        if magic != 0xBA55ED50:
            p += 8
            continue
        e, end = p + hs, p + hs + fsz
        while e < end:
            kind, _, ehs, size = struct.unpack_from("<HHIQ", b, e)
            csize, arch = struct.unpack_from("<I", b, e + 16)[0], struct.unpack_from("<I", b, e + 28)[0]
            if kind == 2:  # a cubin (1: PTX)
                if csize:
                    sys.exit("cubin_diff: %s: compressed fatbin entry; not supported" % obj)
                out.append((arch, b[e + ehs : e + ehs + size]))
            e += ehs + size
        p = end
    return out


def elf_sections(elf):
    """{name: bytes (b'NOBITS<size>' for NOBITS)} and the symbol names by index."""
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    sh = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]

    def cstr(off):
        return elf[off : elf.index(b"\0", off)].decode()

    secs = {}
    for s in sh:
        name = cstr(sh[shstrndx][4] + s[0])
        secs[name] = b"NOBITS%d" % s[5] if s[1] == 8 else elf[s[4] : s[4] + s[5]]
    syms = []
    for st in (s for s in sh if s[1] == 2):  # SHT_SYMTAB
        strtab = sh[st[6]][4]
        syms = [cstr(strtab + struct.unpack_from("<I", elf, st[4] + i * 24)[0]) for i in range(st[5] // 24)]
    return secs, syms


def mask_cbank(b):
    b, i = bytearray(b), 0
    while (i := b.find(b"\x04\x0a\x08\x00", i)) >= 0:  # EIFMT_SVAL, EIATTR_PARAM_CBANK, 8 bytes: sym, off, size
        b[i + 4 : i + 8] = b"\0\0\0\0"
        i += 8
    return bytes(b)


def collect(objs):
    per, module = {}, set()
    for o in objs:
        for arch, elf in fatbin_elfs(o):
            secs, syms = elf_sections(elf)
            for name, data in secs.items():
                if name.startswith(PER_KERNEL):
                    if name.startswith(".nv.info."):
                        data = mask_cbank(data)
                    key = (arch, name)
                    if key in per and per[key] != data:
                        key = (arch, name + " (" + o + ")")
                    per[key] = data
            g, p = secs.get(".nv.info", b""), 0
            while p + 4 <= len(g):
                fmt, attr, size = g[p], g[p + 1], struct.unpack_from("<H", g, p + 2)[0]
                if fmt == 4:  # EIFMT_SVAL
                    if size == 8:
                        sym, val = struct.unpack_from("<II", g, p + 4)
                        module.add((arch, hex(attr), syms[sym] if sym < len(syms) else sym, val))
                    else:
                        module.add((arch, hex(attr), g[p + 4 : p + 4 + size].hex()))
                    p += 4 + size
                else:
                    module.add((arch, hex(attr), fmt, size))
                    p += 4
    return per, module


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    (rp, rm), (np_, nm) = (collect(a.split(",")) for a in sys.argv[1:])
    text = [k for k in rp if k[1].startswith(".text.")]
    print("kernels and device functions (.text.*, per architecture): ref %d, new %d; %d bytes of code" %
          (len(text), sum(1 for k in np_ if k[1].startswith(".text.")), sum(len(rp[k]) for k in text)))
    bad = 0
    for title, keys in (("only in ref", sorted(set(rp) - set(np_))), ("only in new", sorted(set(np_) - set(rp))),
                        ("differ", sorted(k for k in rp if k in np_ and rp[k] != np_[k]))):
        for k in keys:
            print("  %s: sm_%d %s%s" % (title, k[0], k[1], "" if title != "differ" else
                                         " (%d vs %d bytes)" % (len(rp[k]), len(np_[k]))))
        bad += len(keys)
    for title, recs in (("module record only in ref", rm - nm), ("module record only in new", nm - rm)):
        for r in sorted(recs, key=str):
            print("  %s: %s" % (title, r))
        bad += len(recs)
    print("per-kernel sections: %d compared, %d mismatches; module records (.nv.info): %d" % (len(rp), bad, len(rm)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
