#!/usr/bin/env python3
"""Rewrite R_X86_64_PLT32 relocations to R_X86_64_PC32 in an x86-64 ELF relocatable object.

Why: NetBSD's kernel module linker (sys/arch/amd64/amd64/kobj_machdep.c, checked at the
2014-08 revision and at rev 1.6 of 2017-11) implements R_X86_64_NONE, 64, PC32, 32, 32S,
GLOB_DAT, JUMP_SLOT and RELATIVE only, and refuses to load a module with any other type
("kobj_reloc: unexpected relocation type 4"). Current compilers (clang since LLVM 8, GNU as since
binutils 2.31) emit R_X86_64_PLT32 for every `call`/`jmp` to a function, even with -fno-pic.

Why it is correct: PLT32 computes L + A - P and PC32 computes S + A - P, where L is the address of
the symbol's PLT entry. A kernel module has no PLT: the kernel linker resolves every call directly
to the function, i.e. L = S, and DragonFly's linker already treats PLT32 exactly as PC32. Both are
32-bit signed PC-relative fields, so the rewrite changes nothing but the type number.

The script also refuses GOT-relative types (GOTPCREL, GOTPCRELX, REX_GOTPCRELX, GOTPC32, ...):
they cannot be turned into something the kernel accepts after the fact; build with
`-C relocation-model=static` / `-fno-pic` so they are never emitted.

usage: elf-plt32-to-pc32.py OBJECT   (rewritten in place; prints what it did; exit 1 on error)
"""
import struct
import sys

SHT_RELA = 4
SHT_REL = 9
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
GOT_TYPES = {3: "GOT32", 9: "GOTPCREL", 41: "GOTPCRELX", 42: "REX_GOTPCRELX",
             26: "GOTPC32", 25: "GOTOFF64", 27: "GOT64", 28: "GOTPCREL64", 29: "GOTPC64",
             31: "PLTOFF64"}


def main(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a 64-bit little-endian ELF file")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_type != 1 or e_machine != 62:
        sys.exit(f"{path}: not an x86-64 relocatable object (type {e_type}, machine {e_machine})")
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    rewritten = 0
    bad = {}
    for i in range(e_shnum):
        sh = e_shoff + i * e_shentsize
        sh_type = struct.unpack_from("<I", data, sh + 4)[0]
        sh_offset, sh_size = struct.unpack_from("<QQ", data, sh + 0x18)
        sh_entsize = struct.unpack_from("<Q", data, sh + 0x38)[0]
        if sh_type not in (SHT_RELA, SHT_REL):
            continue
        entsize = sh_entsize or (24 if sh_type == SHT_RELA else 16)
        for off in range(sh_offset, sh_offset + sh_size, entsize):
            info = struct.unpack_from("<Q", data, off + 8)[0]
            rtype = info & 0xFFFFFFFF
            if rtype == R_X86_64_PLT32:
                struct.pack_into("<Q", data, off + 8, (info & ~0xFFFFFFFF) | R_X86_64_PC32)
                rewritten += 1
            elif rtype in GOT_TYPES:
                bad[GOT_TYPES[rtype]] = bad.get(GOT_TYPES[rtype], 0) + 1
    if bad:
        sys.exit(f"{path}: GOT-relative relocations no kernel linker accepts: {bad}; "
                 "rebuild with a static relocation model")
    with open(path, "wb") as f:
        f.write(data)
    print(f"   {path}: {rewritten} R_X86_64_PLT32 relocation(s) rewritten to R_X86_64_PC32")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: elf-plt32-to-pc32.py OBJECT")
    main(sys.argv[1])
